"""The cnn and resnet presets' networks against PyTorch 2.13 CPU, training at batch 128 (`make bench`
runs both; alone: ``python benchmarks/cnn.py [--preset resnet]``).

- **Throughput:** our whole training loop and PyTorch's (2 threads each), the same network and loss,
  SGD with momentum, every image back-propagated; epochs taken in turn, first dropped, medians.
- **Profile by phase:** one of our steps split into each layer's forward and backward and the update,
  medians over steps.
- **Products alone:** the step's matrix products, each done alone as the im2col product it is (NumPy
  float32): the floor our step is compared with.
- **Inference:** the network answering raw pixels at batch 1, 64 and 10,000 through both doors
  (the model's own ``predict_proba`` on normalised pixels, and ``Inference``, which
  ``Checkpoint.inference()`` gives) against ONNX Runtime on its export, in turns as
  ``inference.py`` takes them.

PyTorch's network is ours in NCHW: conv3x3 (no bias), max pool 2x2, batch norm, ReLU, twice; flatten;
a fully connected layer (no bias), batch norm, ReLU, dropout; the classes. The resnet preset's adds,
after each convolution's ReLU, its residual blocks as ours builds them (nn/residual.py): conv3x3 (no
bias), batch norm, ReLU, conv3x3 (no bias), batch norm, plus the block's input (or its 1x1 projection
with batch norm where the width changes), then ReLU.
"""

from __future__ import annotations

# isort: off
import fashion_mlp  # noqa: F401  (first: it shortens OpenBLAS's idle spin before NumPy loads, nn/halves.py)

# isort: on
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fashion_mlp import data
from fashion_mlp.config import PRESETS, TrainConfig
from fashion_mlp.nn import (
    Conv2d,
    Inference,
    Layer,
    Linear,
    Network,
    Residual,
    softmax_cross_entropy,
)
from fashion_mlp.train import build_model, build_optimizer, train

sys.path.insert(0, str(Path(__file__).parent))
from peers import torch_epoch_seconds
from turns import MATMUL_N, interleaved_epoch_seconds, matmul_products

BATCH = 128


def bench_config(preset: str) -> TrainConfig:
    """The benchmark's training: the preset's network, the peers' loss; no augmentation, centring or
    smoothing, every image back-propagated."""
    network = PRESETS[preset]
    return TrainConfig(
        conv=network.conv,
        hidden_sizes=network.hidden_sizes,
        blocks=network.blocks,
        global_pool=network.global_pool,
        batch_size=BATCH,
        lr=0.05,
        momentum=0.9,
        schedule="constant",
        l2=5e-4,
        dropout=0.3,
        centre_inputs=False,
        label_smoothing=0.0,
        augment=False,
        hardest_of=1,
    )


def bench_network(preset: str, rng: np.random.Generator) -> Network:
    """The preset's network, as training builds it."""
    return build_model(bench_config(preset), rng)


def ours_epochs(dataset: Any, preset: str):
    config = bench_config(preset)
    state = None
    while True:
        state = train(config.replace(epochs=state.epoch + 1 if state else 1), dataset, state=state)
        yield state.history[-1].seconds


def _torch_block(channels: int, out: int) -> Any:
    """Our residual block (nn/residual.py) in PyTorch: the branch plus the input or its projection."""
    import torch

    def conv_bn(c_in: int, kernel: int) -> list:
        return [
            torch.nn.Conv2d(c_in, out, kernel, padding=kernel // 2, bias=False),
            torch.nn.BatchNorm2d(out),
        ]

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branch = torch.nn.Sequential(*conv_bn(channels, 3), torch.nn.ReLU(), *conv_bn(out, 3))
            self.shortcut = (
                torch.nn.Sequential(*conv_bn(channels, 1)) if channels != out else torch.nn.Identity()
            )

        def forward(self, x):
            return self.branch(x) + self.shortcut(x)

    return Block()


def _torch_cnn(
    conv: tuple[int, ...],
    hidden: tuple[int, ...],
    dropout: float,
    blocks: tuple[int, ...] = (),
    global_pool: bool = False,
) -> Any:
    import torch

    layers: list = []
    channels, side = 1, 28
    for out, n_blocks in zip(conv, blocks or (0,) * len(conv)):
        layers += [
            torch.nn.Conv2d(channels, out, 3, padding=1, bias=False),
            torch.nn.MaxPool2d(2),
            torch.nn.BatchNorm2d(out),
            torch.nn.ReLU(),
        ]
        for _ in range(n_blocks):
            layers += [_torch_block(out, out), torch.nn.ReLU()]
        channels, side = out, side // 2
    if global_pool:
        layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
        side = 1
    else:
        layers.append(torch.nn.Flatten())
    width = channels * side * side
    for out in hidden:
        layers += [torch.nn.Linear(width, out, bias=False), torch.nn.BatchNorm1d(out), torch.nn.ReLU()]
        layers.append(torch.nn.Dropout(dropout))
        width = out
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers)


def torch_network(config: TrainConfig) -> Any:
    """The preset's network in PyTorch (NCHW), as ours builds it."""
    return _torch_cnn(config.conv, config.hidden_sizes, config.dropout, config.blocks, config.global_pool)


def check_peer_network(preset: str) -> None:
    """PyTorch's network is ours: given our weights (batch norm's statistics and scales drawn at
    random, not the identity), it answers 16 images with our probabilities, or this raises."""
    import torch

    from fashion_mlp.nn import BatchNorm, Flatten

    rng = np.random.default_rng(3)
    network = bench_network(preset, rng)
    model = torch_network(bench_config(preset)).eval()
    ours = [layer for layer in every_layer(network.layers) if isinstance(layer, (Conv2d, BatchNorm, Linear))]
    theirs = [
        m
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.modules.batchnorm._BatchNorm, torch.nn.Linear))
    ]
    assert [type(m).__name__[:4] for m in theirs] == [type(layer).__name__[:4] for layer in ours], (
        "not the same layers"
    )
    shape = None  # the map a Flatten turned into rows: (H, W, C), ours channels last, PyTorch's first
    h = np.zeros((1, 784), np.float32)
    for layer in network.layers:
        if isinstance(layer, Flatten):
            shape = h.shape[1:]
        h = layer.forward(h, training=False)
    first_linear = True
    with torch.no_grad():
        for layer, module in zip(ours, theirs):
            if isinstance(layer, BatchNorm):
                for name, value in (
                    ("running_mean", rng.normal(0, 0.5, layer.features)),
                    ("running_var", rng.uniform(0.5, 2, layer.features)),
                ):
                    getattr(layer, name)[...] = value
                layer.gamma.value[...] = rng.uniform(0.5, 1.5, layer.features)
                layer.beta.value[...] = rng.normal(0, 0.2, layer.features)
                for name, value in (
                    ("weight", layer.gamma.value),
                    ("bias", layer.beta.value),
                    ("running_mean", layer.running_mean),
                    ("running_var", layer.running_var),
                ):
                    getattr(module, name).copy_(torch.from_numpy(np.array(value)))
                continue
            weight = layer.weight.value
            if isinstance(layer, Conv2d):
                weight = weight.transpose(3, 2, 0, 1)  # (k, k, C, F) to (F, C, k, k)
            else:
                if first_linear and shape is not None:  # rows (H, W, C) to PyTorch's (C, H, W)
                    weight = weight.reshape(*shape, -1).transpose(2, 0, 1, 3).reshape(weight.shape)
                first_linear = False
                weight = weight.T
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            if layer.bias is not None:
                module.bias.copy_(torch.from_numpy(layer.bias.value))
        x = data.normalise(rng.uniform(0, 255, (16, 784)).astype(np.float32))
        expected = torch.softmax(model(torch.from_numpy(x).reshape(-1, 1, 28, 28)), dim=1).numpy()
    # No plan was made before the weights were set: predict_proba folds these.
    np.testing.assert_allclose(network.predict_proba(x), expected, rtol=1e-4, atol=1e-5)


def torch_epochs(x: np.ndarray, y: np.ndarray, preset: str):
    """PyTorch CPU, 2 threads: the same network, SGD with momentum and L2, constant rate."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torch_network(bench_config(preset))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    xt, yt = torch.from_numpy(x.reshape(-1, 1, 28, 28)), torch.from_numpy(y)
    yield from torch_epoch_seconds(model, optimizer, xt, yt, BATCH)


def profile(preset: str, steps: int = 30) -> dict[str, float]:
    """Median milliseconds of each phase of one of our steps, and of the step's products alone."""
    rng = np.random.default_rng(0)
    config = bench_config(preset)
    network = bench_network(preset, rng)
    optimizer = build_optimizer(config, network)
    x = rng.uniform(-1, 1, (BATCH, 784)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)
    phases: dict[str, list[float]] = {}

    def timed(name: str, start: float) -> float:
        now = time.perf_counter()
        phases.setdefault(name, []).append((now - start) * 1e3)
        return now

    for _ in range(steps):
        begin = t = time.perf_counter()
        h = x.copy()
        for i, layer in enumerate(network.layers):
            h = layer.forward(h)
            t = timed(f"forward {i:02d} {type(layer).__name__}", t)
        _, grad = softmax_cross_entropy(h, y, 0.0)
        t = timed("loss", t)
        for i, layer in reversed(list(enumerate(network.layers))):
            grad = layer.backward(grad)
            t = timed(f"backward {i:02d} {type(layer).__name__}", t)
            if grad is None:
                break
        optimizer.step(config.lr)
        t = timed("update", t)
        timed("step", begin)
    result = {name: statistics.median(ms[5:]) for name, ms in phases.items()}
    result["products alone"] = products_alone(network, x)
    return result


def weighted_inputs(layers: list[Layer], h: np.ndarray) -> tuple[list[tuple[Layer, np.ndarray]], np.ndarray]:
    """(layer, its input) for each convolution and fully connected layer in order, those of residual
    blocks included (each block's branch, then its shortcut, both from the block's input), and the
    layers' output; at inference, which gives every layer's input the shape it has in training."""
    found: list[tuple[Layer, np.ndarray]] = []
    for layer in layers:
        if isinstance(layer, Residual):
            found += weighted_inputs(layer.branch, h)[0] + weighted_inputs(layer.shortcut, h)[0]
        elif isinstance(layer, (Conv2d, Linear)):
            found.append((layer, h))
        h = layer.forward(h, training=False)
    return found, h


def products_alone(network: Network, x: np.ndarray, rounds: int = 20) -> float:
    """Median milliseconds of the step's matrix products, each done alone: per convolution, its
    im2col product forward, the weight's gradient and the input's (but the first's; for a
    convolution that pooling follows, the input's gradient by 2x2 blocks, as the step does it); per
    fully connected layer, the same three (but the first's input gradient)."""
    shapes = []
    for layer, h in weighted_inputs(network.layers, x)[0]:
        if isinstance(layer, Conv2d):
            n, hh, ww, c = h.shape
            k, f = layer.kernel, layer.out_channels
            rows, depth = n * hh * ww, k * k * c
            # The weight's gradient as the step has it: the columns' transpose first where they
            # are stored offsets first, else the gradient's.
            shapes += [(rows, depth, f), (depth, rows, f) if layer._offsets_first else (f, rows, depth)]
            if layer.needs_input_grad and layer.quarters:
                shapes.append((rows // 4, (k + 1) ** 2 * f, 4 * c))
            elif layer.needs_input_grad:
                shapes.append((rows, k * k * f, c))
        elif isinstance(layer, Linear):
            rows, depth, f = h.shape[0], h.shape[1], layer.out_features
            shapes += [(rows, depth, f), (depth, rows, f)]
            if layer.needs_input_grad:
                shapes.append((rows, f, depth))
    rng = np.random.default_rng(1)
    operands = [
        (
            rng.standard_normal((m, k), dtype=np.float32),
            rng.standard_normal((k, n), dtype=np.float32),
            np.empty((m, n), np.float32),
        )
        for m, k, n in shapes
    ]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for a, b, out in operands:
            np.matmul(a, b, out=out)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[3:])


def inference_products(network: Network) -> Any:
    """The floor of an answer: the matrix products our inference does, alone, into preallocated
    outputs. Rows are answered ``network.chunk`` at a time, so a batch's products are each chunk's:
    per convolution its im2col product, per fully connected layer its product."""
    operands: dict[int, list] = {}  # rows of a chunk -> its products' operands
    rng = np.random.default_rng(2)

    def for_rows(n: int) -> list:
        if n not in operands:
            shapes = []
            for layer, h in weighted_inputs(network.layers, np.zeros((n, 784), np.float32))[0]:
                if isinstance(layer, Conv2d):
                    rows, hh, ww, c = h.shape
                    shapes.append((rows * hh * ww, layer.kernel**2 * c, layer.out_channels))
                elif isinstance(layer, Linear):
                    shapes.append((h.shape[0], h.shape[1], layer.out_features))
            operands[n] = [
                (
                    rng.standard_normal((m, k), dtype=np.float32),
                    rng.standard_normal((k, f), dtype=np.float32),
                    np.empty((m, f), np.float32),
                )
                for m, k, f in shapes
            ]
        return operands[n]

    def run(x: np.ndarray) -> None:
        chunk = network.chunk
        for start in range(0, len(x), chunk):
            for a, b, out in for_rows(min(chunk, len(x) - start)):
                np.matmul(a, b, out=out)

    return run


def inference(preset: str, rounds: int = 5) -> dict[str, dict[str, float]]:
    """{batch: {peer: median seconds a call}} for the network (random weights: the speed depends on
    the shapes alone), through both doors and ONNX Runtime, after checking that they answer alike.
    The network answers as the preset's checkpoint does: from as many views of each image as the
    preset takes (nn/views.py; the resnet preset's 10), which the export computes too."""
    from inference import BATCHES, in_turns, onnxruntime_peer

    rng = np.random.default_rng(0)
    network = build_model(bench_config(preset).replace(views=PRESETS[preset].views), rng)
    for layer in every_layer(network.layers):  # running statistics as training leaves them, not the identity
        if hasattr(layer, "running_var"):
            layer.running_mean[...] = rng.normal(0, 0.5, layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2, layer.running_var.shape)
    runners = {
        "inference": Inference(network, **data.NORMALISATION).predict_proba,
        "model": network.predict_proba,
        "onnxruntime": onnxruntime_peer(network),
        "products": inference_products(network),
    }
    given = {"model": data.normalise}
    pixels = np.random.default_rng(1).uniform(0, 255, (max(BATCHES), 784)).astype(np.float32)
    reference = runners["onnxruntime"](pixels[:300])
    results: dict[str, dict[str, float]] = {}
    for batch in BATCHES:
        x = {peer: np.ascontiguousarray(given.get(peer, lambda v: v)(pixels[:batch])) for peer in runners}
        for peer, run in runners.items():
            if peer != "products":  # the floor answers nothing
                answer = run(given.get(peer, lambda v: v)(pixels[:300]))
                np.testing.assert_allclose(answer, reference, rtol=1e-4, atol=1e-5)
        results[str(batch)] = in_turns(runners, x, rounds)
        results[str(batch)]["model_over_products"] = (
            results[str(batch)]["model"] / results[str(batch)]["products"]
        )
    return results


def every_layer(layers: list[Layer]) -> list[Layer]:
    """The layers, each residual block's own in its place."""
    return [
        inner
        for layer in layers
        for inner in ([layer, *every_layer(layer.layers)] if isinstance(layer, Residual) else [layer])
    ]


def measure(dataset: Any, epochs: int = 3, peers: bool = True, preset: str = "cnn") -> dict[str, Any]:
    runners = {"ours": ours_epochs(dataset, preset), "matmul": matmul_products()}
    if peers:
        check_peer_network(preset)
        runners["pytorch"] = torch_epochs(dataset.train.x, dataset.train.y, preset)
    seconds = interleaved_epoch_seconds(runners, epochs)
    n = len(dataset.train)
    network = bench_network(preset, np.random.default_rng(0)).describe()
    result: dict[str, Any] = {"preset": preset, "network": network, "batch": BATCH}
    result["matmul_gflops"] = round(2 * MATMUL_N**3 / statistics.median(seconds.pop("matmul")) / 1e9, 1)
    for name, values in seconds.items():
        result[f"{name}_samples_per_s"] = round(n / statistics.median(values))
        result[f"{name}_epoch_seconds"] = [round(v, 2) for v in values]
    if "pytorch_samples_per_s" in result:
        result["ratio_vs_pytorch"] = round(result["ours_samples_per_s"] / result["pytorch_samples_per_s"], 3)
    result["profile_ms"] = {k: round(v, 3) for k, v in profile(preset).items()}
    step, floor = result["profile_ms"]["step"], result["profile_ms"]["products alone"]
    result["step_over_products"] = round(step / floor, 2)
    if peers:
        result["inference_s"] = inference(preset)
    return result


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"{result.get('preset', 'cnn')} preset, {result['network']}, batch {result['batch']} "
        f"(NumPy's matmul at {result['matmul_gflops']} GFLOP/s): "
        f"ours {result['ours_samples_per_s']:,} samples/s"
        + (
            f", PyTorch {result['pytorch_samples_per_s']:,} ({result['ratio_vs_pytorch']:.2f}x PyTorch)"
            if "pytorch_samples_per_s" in result
            else ""
        ),
        f"  our step {result['profile_ms']['step']:.1f} ms; its products alone "
        f"{result['profile_ms']['products alone']:.1f} ms ({result['step_over_products']:.2f}x)",
    ]
    for name, ms in result["profile_ms"].items():
        if name.startswith(("forward", "backward")) and ms >= 0.5:
            lines.append(f"    {name:<28} {ms:6.2f} ms")
    lines.append(f"    {'update':<28} {result['profile_ms']['update']:6.2f} ms")
    for batch, row in result.get("inference_s", {}).items():
        ort = row["onnxruntime"]
        lines.append(
            f"  inference, batch {int(batch):,}: Checkpoint.inference() {row['inference'] * 1e3:.2f} ms "
            f"({ort / row['inference']:.2f}x ONNX Runtime), model.predict_proba {row['model'] * 1e3:.2f} ms "
            f"({ort / row['model']:.2f}x), ONNX Runtime {ort * 1e3:.2f} ms"
            + (
                f"; its products alone {row['products'] * 1e3:.2f} ms "
                f"(predict_proba {row['model_over_products']:.2f}x them)"
                if "products" in row
                else ""
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--preset", choices=("cnn", "resnet"), default="cnn", help="whose network")
    args = parser.parse_args()
    dataset = data.load(allow_download=False, val_size=0)
    result = measure(dataset, args.epochs, not args.skip_peers, args.preset)
    print(format_result(result))
    print(json.dumps(result, indent=1))
