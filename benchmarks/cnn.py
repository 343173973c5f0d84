"""The cnn preset's network against PyTorch 2.13 CPU, training at batch 128 (`make bench` runs it;
alone: ``python benchmarks/cnn.py``).

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
a fully connected layer (no bias), batch norm, ReLU, dropout; the classes.
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
from fashion_mlp.config import TrainConfig
from fashion_mlp.nn import Conv2d, Inference, Linear, Network, cnn_records, softmax_cross_entropy
from fashion_mlp.train import build_optimizer, train

sys.path.insert(0, str(Path(__file__).parent))
from peers import torch_epoch_seconds
from turns import MATMUL_N, interleaved_epoch_seconds, matmul_products

BATCH = 128


def bench_config(conv: tuple[int, ...], hidden: tuple[int, ...]) -> TrainConfig:
    """The benchmark's training: the peers' network and loss; no augmentation, centring or smoothing,
    every image back-propagated."""
    return TrainConfig(
        conv=conv,
        hidden_sizes=hidden,
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


def ours_epochs(dataset: Any, conv: tuple[int, ...], hidden: tuple[int, ...]):
    config = bench_config(conv, hidden)
    state = None
    while True:
        state = train(config.replace(epochs=state.epoch + 1 if state else 1), dataset, state=state)
        yield state.history[-1].seconds


def _torch_cnn(conv: tuple[int, ...], hidden: tuple[int, ...], dropout: float) -> Any:
    import torch

    layers: list = []
    channels, side = 1, 28
    for out in conv:
        layers += [
            torch.nn.Conv2d(channels, out, 3, padding=1, bias=False),
            torch.nn.MaxPool2d(2),
            torch.nn.BatchNorm2d(out),
            torch.nn.ReLU(),
        ]
        channels, side = out, side // 2
    layers.append(torch.nn.Flatten())
    width = channels * side * side
    for out in hidden:
        layers += [torch.nn.Linear(width, out, bias=False), torch.nn.BatchNorm1d(out), torch.nn.ReLU()]
        layers.append(torch.nn.Dropout(dropout))
        width = out
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers)


def torch_epochs(x: np.ndarray, y: np.ndarray, conv: tuple[int, ...], hidden: tuple[int, ...]):
    """PyTorch CPU, 2 threads: the same network, SGD with momentum and L2, constant rate."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = _torch_cnn(conv, hidden, 0.3)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    xt, yt = torch.from_numpy(x.reshape(-1, 1, 28, 28)), torch.from_numpy(y)
    yield from torch_epoch_seconds(model, optimizer, xt, yt, BATCH)


def profile(conv: tuple[int, ...], hidden: tuple[int, ...], steps: int = 30) -> dict[str, float]:
    """Median milliseconds of each phase of one of our steps, and of the step's products alone."""
    rng = np.random.default_rng(0)
    config = bench_config(conv, hidden)
    network = Network(cnn_records((28, 28, 1), conv, hidden, 10, config.dropout), 784, rng)
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


def products_alone(network: Network, x: np.ndarray, rounds: int = 20) -> float:
    """Median milliseconds of the step's matrix products, each done alone: per convolution, its
    im2col product forward, the weight's gradient and the input's (but the first's; for a
    convolution that pooling follows, the input's gradient by 2x2 blocks, as the step does it); per
    fully connected layer, the same three (but the first's input gradient)."""
    shapes = []
    h = x
    for layer in network.layers:
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
        h = layer.forward(h, training=False)
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
            shapes, h = [], np.zeros((n, 784), np.float32)
            for layer in network.layers:
                if isinstance(layer, Conv2d):
                    rows, hh, ww, c = h.shape
                    shapes.append((rows * hh * ww, layer.kernel**2 * c, layer.out_channels))
                elif isinstance(layer, Linear):
                    shapes.append((h.shape[0], h.shape[1], layer.out_features))
                h = layer.forward(h, training=False)
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


def inference(conv: tuple[int, ...], hidden: tuple[int, ...], rounds: int = 5) -> dict[str, dict[str, float]]:
    """{batch: {peer: median seconds a call}} for the network (random weights: the speed depends on
    the shapes alone), through both doors and ONNX Runtime, after checking that they answer alike."""
    from inference import BATCHES, in_turns, onnxruntime_peer

    rng = np.random.default_rng(0)
    network = Network(cnn_records((28, 28, 1), conv, hidden, 10, 0.3), 784, rng)
    for layer in network.layers:  # running statistics as training leaves them, not the identity
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


def measure(dataset: Any, epochs: int = 3, peers: bool = True) -> dict[str, Any]:

    conv, hidden = (32, 64), (256,)
    runners = {"ours": ours_epochs(dataset, conv, hidden), "matmul": matmul_products()}
    if peers:
        runners["pytorch"] = torch_epochs(dataset.train.x, dataset.train.y, conv, hidden)
    seconds = interleaved_epoch_seconds(runners, epochs)
    n = len(dataset.train)
    result: dict[str, Any] = {"network": "conv3x3(32)-pool-conv3x3(64)-pool-fc256-fc10", "batch": BATCH}
    result["matmul_gflops"] = round(2 * MATMUL_N**3 / statistics.median(seconds.pop("matmul")) / 1e9, 1)
    for name, values in seconds.items():
        result[f"{name}_samples_per_s"] = round(n / statistics.median(values))
        result[f"{name}_epoch_seconds"] = [round(v, 2) for v in values]
    if "pytorch_samples_per_s" in result:
        result["ratio_vs_pytorch"] = round(result["ours_samples_per_s"] / result["pytorch_samples_per_s"], 3)
    result["profile_ms"] = {k: round(v, 3) for k, v in profile(conv, hidden).items()}
    step, floor = result["profile_ms"]["step"], result["profile_ms"]["products alone"]
    result["step_over_products"] = round(step / floor, 2)
    if peers:
        result["inference_s"] = inference(conv, hidden)
    return result


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"CNN {result['network']}, batch {result['batch']} (NumPy's matmul at {result['matmul_gflops']} "
        f"GFLOP/s): ours {result['ours_samples_per_s']:,} samples/s"
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
    args = parser.parse_args()
    dataset = data.load(allow_download=False, val_size=0)
    result = measure(dataset, args.epochs, not args.skip_peers)
    print(format_result(result))
    print(json.dumps(result, indent=1))
