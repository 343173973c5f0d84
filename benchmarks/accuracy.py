"""Test accuracy of each recipe, measured on one split and machine: `make bench-accuracy`.

Rows: the report's recipe (ours), scikit-learn's MLPClassifier, PyTorch trained with our best recipe,
our default preset, and the same recipe with a validation set (--preset validation); then our cnn preset
and PyTorch trained with its recipe on the same network (``--only cnn`` measures just those two), and the
same pair for the resnet preset (``--only resnet``). The test set
only scores; it chooses nothing. The report's recipe trains on its own 45,000 / 15,000 split and keeps
its best epoch by validation accuracy, as do scikit-learn and --preset validation on the 55,000 / 5,000
split. The default preset, and PyTorch with its recipe, train on all 60,000 and keep the last epoch.
Writes benchmarks/accuracy.json.
"""

from __future__ import annotations

# isort: off
import fashion_mlp  # noqa: F401  (first: it shortens OpenBLAS's idle spin before NumPy loads, nn/halves.py)

# isort: on
import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import kernel
from fashion_mlp import data
from fashion_mlp.config import PRESETS
from fashion_mlp.evaluation import evaluate
from fashion_mlp.nn import VIEWS, Views
from fashion_mlp.train import input_mean, train


def ours(dataset: data.Dataset, preset: str, seed: int) -> dict:
    started = time.perf_counter()
    state = train(PRESETS[preset].replace(seed=seed), dataset)
    result = evaluate(state.model, dataset.test.x, dataset.test.y)
    return {
        "test_accuracy": result.accuracy,
        "val_accuracy": state.best_val_accuracy if len(dataset.val) else None,
        "seconds": time.perf_counter() - started,
    }


def sklearn_mlp(dataset: data.Dataset, seed: int, epochs: int = 30) -> dict:
    """MLPClassifier (Adam, one hidden layer of 100, as in the Fashion-MNIST benchmark), best epoch by val."""
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=(100,), random_state=seed, batch_size=128)
    started, best, best_test = time.perf_counter(), -1.0, 0.0
    for _ in range(epochs):
        model.partial_fit(dataset.train.x, dataset.train.y, classes=np.arange(10))
        val = model.score(dataset.val.x, dataset.val.y)
        if val > best:
            best, best_test = val, model.score(dataset.test.x, dataset.test.y)
    return {"test_accuracy": best_test, "val_accuracy": best, "seconds": time.perf_counter() - started}


def _torch_training(params, dataset: data.Dataset):
    """What both PyTorch rows share: the recipe's SGD, its per-step cosine schedule, centred inputs as
    ours centres them, and the smoothed per-example loss."""
    import torch

    config = PRESETS["default"]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    scored = config.batch_size * config.hardest_of
    steps = config.epochs * math.ceil(len(dataset.train) / scored)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * min(1, t / steps)))
    )
    mean = input_mean(dataset) if config.centre_inputs else np.float32(0.0)
    tensors = [torch.from_numpy(split.x - mean) for split in (dataset.train, dataset.val, dataset.test)]
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing, reduction="none")
    return optimizer, schedule, scored, tensors, torch.from_numpy(dataset.train.y), loss_fn


def torch_best_recipe_fair(dataset: data.Dataset, seed: int) -> dict:
    """Our default recipe in PyTorch, learning from the hardest third the efficient way, as ours does: a
    forward pass without gradients over the 768 images scored, then a forward and backward pass over
    the 256 chosen, with the dropout masks the first pass drew for them. Same widths, centring,
    smoothing, SGD, cosine schedule, epochs, batch, seed handling and thread count as ours."""
    import torch

    config = PRESETS["default"]
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    sizes = [784, *config.hidden_sizes, 10]
    linears = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
    keep = 1.0 - config.dropout

    def forward(x, masks):
        for i, linear in enumerate(linears):
            x = linear(x)
            if i < len(linears) - 1:
                x = torch.relu(x)
                if masks is not None:
                    x = x * masks[i]
        return x

    optimizer, schedule, scored, (x, _, xt), y, loss_fn = _torch_training(linears.parameters(), dataset)
    started = time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), scored):
            idx = order[i : i + scored]
            xb, yb = x[idx], y[idx]
            with torch.no_grad():
                masks = [torch.empty(len(idx), w).bernoulli_(keep).div_(keep) for w in sizes[1:-1]]
                losses = loss_fn(forward(xb, masks), yb)
                rows = losses.topk(math.ceil(len(idx) / config.hardest_of)).indices
            optimizer.zero_grad(set_to_none=True)
            loss_fn(forward(xb[rows], [m[rows] for m in masks]), yb[rows]).mean().backward()
            optimizer.step()
            schedule.step()
    with torch.inference_mode():
        test = float((forward(xt, None).argmax(1).numpy() == dataset.test.y).mean())
    return {"test_accuracy": test, "val_accuracy": None, "seconds": time.perf_counter() - started}


def torch_best_recipe(dataset: data.Dataset, seed: int) -> dict:
    """Our default recipe in PyTorch: same widths, dropout, input centring, label smoothing, SGD,
    per-step cosine, epochs, batch, and learning from the hardest images of each step; the best epoch
    by validation accuracy, or the last without any.

    Learning from the hardest: each step scores hardest_of * batch_size images and averages the loss
    of the batch_size highest, as ours does, with the same dropout masks. Autograd then
    back-propagates every row (the rest with zero gradient), so PyTorch does not save the work ours
    saves; getting it to would take a second forward pass or hand-written backward code."""
    import torch

    config = PRESETS["default"]
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    sizes = [784, *config.hidden_sizes, 10]
    layers: list = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers += [torch.nn.ReLU(), torch.nn.Dropout(config.dropout)]
    model = torch.nn.Sequential(*layers)
    optimizer, schedule, scored, (x, xv, xt), y, loss_fn = _torch_training(model.parameters(), dataset)
    started, best, best_test = time.perf_counter(), -1.0, 0.0
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(y))
        for i in range(0, len(y), scored):
            idx = order[i : i + scored]
            optimizer.zero_grad(set_to_none=True)
            losses = loss_fn(model(x[idx]), y[idx])
            losses.topk(math.ceil(len(idx) / config.hardest_of)).values.mean().backward()
            optimizer.step()
            schedule.step()
        if len(xv):  # keep the best epoch's test score; without validation, the last epoch's
            val = accuracy(model, xv, dataset.val.y)
            if val > best:
                best, best_test = val, accuracy(model, xt, dataset.test.y)
    if not len(xv):
        best_test = accuracy(model, xt, dataset.test.y)
    seconds = time.perf_counter() - started
    return {"test_accuracy": best_test, "val_accuracy": best if len(xv) else None, "seconds": seconds}


def torch_cnn_recipe(dataset: data.Dataset, seed: int, preset: str = "cnn") -> dict:
    """The cnn (or resnet) preset's recipe in PyTorch, on the same network (benchmarks/cnn.py builds
    it in NCHW, residual blocks included):
    SGD with momentum, the per-step cosine schedule, L2 on weights only (as ours), label smoothing, the
    same flips, shifts and erasing (our augment_batch, on a copy), and learning from the hardest third of each
    step's images: autograd back-propagates all 384 rows, the rest with a zero gradient, and batch norm
    takes its statistics from all 384, as ours does; by memory (``hardest_by``), it picks the 128 by our
    ``remembered_rows`` and forwards only those, as ours does. The last epoch, on all 60,000. Its layers start
    as PyTorch draws them, uniform in +-1/sqrt(fan_in), which the resnet preset's ``init = "uniform"``
    draws too (the cnn preset's are He's); only the last layer's bias differs, 0 in ours."""
    import torch

    from cnn import torch_network
    from fashion_mlp.data import augment_batch
    from fashion_mlp.train import remembered_rows

    config = PRESETS[preset]
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = torch_network(config)
    decayed = [p for p in model.parameters() if p.dim() > 1]  # conv and linear weights
    others = [p for p in model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decayed, "weight_decay": config.l2}, {"params": others, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=config.momentum,
    )
    scored = config.batch_size * config.hardest_of
    steps = config.epochs * math.ceil(len(dataset.train) / scored)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * min(1, t / steps)))
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing, reduction="none")
    y = torch.from_numpy(dataset.train.y)
    memory = np.full(len(y), np.inf, dtype=np.float32) if config.hardest_by == "memory" else None
    started = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        order = rng.permutation(len(y))
        for i in range(0, len(y), scored):
            idx = order[i : i + scored]
            k = math.ceil(len(idx) / config.hardest_of)
            if memory is not None:
                idx = idx[remembered_rows(memory[idx], k, rng)]
            xb = dataset.train.x[idx]
            augment_batch(xb, rng, config.max_shift, config.erase)
            optimizer.zero_grad(set_to_none=True)
            losses = loss_fn(model(torch.from_numpy(xb).reshape(-1, 1, 28, 28)), y[idx])
            if memory is not None:
                memory[idx] = losses.detach().numpy()
                losses.mean().backward()
            else:
                losses.topk(k).values.mean().backward()
            optimizer.step()
            schedule.step()
    x_test = torch.from_numpy(dataset.test.x).reshape(-1, 1, 28, 28)
    test = accuracy(model, x_test, dataset.test.y, config.views)
    return {"test_accuracy": test, "val_accuracy": None, "seconds": time.perf_counter() - started}


def accuracy(model, x, y: np.ndarray, views: int = 1) -> float:
    """The share of ``x`` (N, 1, H, W) labelled ``y``; with ``views``, from the mean of the logits of
    that many views of each image, as ours answers (nn/views.py): the image and its shifts by a pixel
    (view[y, x] = image[y + dy, x + dx], the border repeated), then the same of its mirror."""
    import torch

    flip, s = VIEWS[views]
    offsets = Views(flip, s).offsets() if views > 1 else [(0, 0)]  # our views' shifts, (0, 0) first
    model.eval()
    with torch.inference_mode():
        logits = []
        h, w = x.shape[2:]
        for image in (x, torch.flip(x, dims=[3])) if flip else (x,):
            padded = torch.nn.functional.pad(image, (s, s, s, s), mode="replicate")
            for dy, dx in offsets:
                logits.append(model(padded[:, :, s + dy : s + dy + h, s + dx : s + dx + w].contiguous()))
        return float((torch.stack(logits).mean(0).argmax(1).numpy() == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per row (the median is reported)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "accuracy.json")
    parser.add_argument("--only", help="measure only the rows whose name contains this (e.g. cnn)")
    args = parser.parse_args()
    kernel.use_the_users_kernel()
    the_kernel = kernel.describe()
    print(kernel.line(the_kernel), flush=True)
    split = {name: (config.val_size, config.split_seed) for name, config in PRESETS.items()}
    report_split = data.load(None, *split["report"], allow_download=False)
    held_out = data.load(None, *split["validation"], allow_download=False)
    everything = data.load(None, *split["default"], allow_download=False)
    rows = {
        "report recipe (ours, --preset report)": lambda s: ours(report_split, "report", s),
        "scikit-learn MLPClassifier (100 hidden, Adam)": lambda s: sklearn_mlp(held_out, s),
        "PyTorch, our best recipe": lambda s: torch_best_recipe(everything, s),
        "PyTorch, our best recipe, hardest third the efficient way": lambda s: torch_best_recipe_fair(
            everything, s
        ),
        "ours, --preset default": lambda s: ours(everything, "default", s),
        "ours, --preset validation": lambda s: ours(held_out, "validation", s),
        "PyTorch, the cnn recipe": lambda s: torch_cnn_recipe(everything, s),
        "ours, --preset cnn": lambda s: ours(everything, "cnn", s),
        "PyTorch, the resnet recipe": lambda s: torch_cnn_recipe(everything, s, "resnet"),
        "ours, --preset resnet": lambda s: ours(everything, "resnet", s),
    }
    if args.only:
        rows = {name: run for name, run in rows.items() if args.only in name}
    results = {}
    for name, run in rows.items():
        runs = [run(seed) for seed in range(args.seeds)]
        results[name] = {
            "runs": runs,
            "median_test_accuracy": float(np.median([r["test_accuracy"] for r in runs])),
        }
        vals = [r["val_accuracy"] for r in runs if r["val_accuracy"] is not None]
        val = f"val {np.median(vals):.4f}" if vals else "no validation set"
        print(
            f"{name}: test {results[name]['median_test_accuracy']:.4f} "
            f"({val}, {np.median([r['seconds'] for r in runs]):.0f} s)",
            flush=True,
        )
    pairs = [
        ("ours, --preset default", "PyTorch, our best recipe"),
        ("ours, --preset default", "PyTorch, our best recipe, hardest third the efficient way"),
        ("ours, --preset cnn", "PyTorch, the cnn recipe"),
        ("ours, --preset resnet", "PyTorch, the resnet recipe"),
    ]
    measured = set(results)
    if args.out.exists() and args.only:  # a partial run updates its rows, keeping the others
        results = {**json.loads(args.out.read_text()), **results}
    for mine, theirs in pairs:
        if mine in measured and theirs in measured:
            compare(results, mine, theirs)
        elif theirs in results and {mine, theirs} & measured:  # one side is new: no ratio across runs
            results[theirs].pop("ours_faster_by", None)
            print(f"{mine} and {theirs} were not measured in one run: no ratio between them")
    for name in rows:
        results[name]["kernel"] = the_kernel
    args.out.write_text(json.dumps(results, indent=2) + "\n")


def compare(results: dict, mine: str, name: str) -> None:
    """Record and print how much faster our row ran than the peer's, and the accuracy between them."""
    ours_s = np.median([r["seconds"] for r in results[mine]["runs"]])
    theirs = np.median([r["seconds"] for r in results[name]["runs"]])
    gap = results[mine]["median_test_accuracy"] - results[name]["median_test_accuracy"]
    results[name]["ours_faster_by"] = float(theirs / ours_s)
    print(f"{mine} is {theirs / ours_s:.2f}x as fast as {name} ({ours_s:.0f} s against {theirs:.0f} s; "
          f"test accuracy {gap:+.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
