"""Inference throughput: our NumPy engine against ONNX Runtime and PyTorch, at batch 1, 64 and 10,000.

Every peer answers the same pixels with class probabilities for the same trained weights. Ours twice,
through both doors of the API: ``Checkpoint.inference()`` on raw pixels (float32 0-255), and the model's
own ``predict_proba`` on normalised pixels (normalised before the clock starts), as
``checkpoint.load(path).model.predict_proba`` is called. ONNX Runtime answers raw pixels through the graph
``fashion-mlp export`` writes (CPU provider, 2 intra-op threads), PyTorch the same folded layers in
``inference_mode`` with 2 threads. Peers take turns, round after round, so that the machine's drift
reaches them alike; each round times a burst of calls, and the table gives the median round.

Run alone: ``python benchmarks/inference.py`` (``make bench`` runs it too).
"""

from __future__ import annotations

# isort: off
import fashion_mlp  # noqa: F401  (first: it shortens OpenBLAS's idle spin before NumPy loads, nn/halves.py)

# isort: on
import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fashion_mlp import data
from fashion_mlp.export import to_onnx
from fashion_mlp.nn import MLP, Inference, Network, fold

NETWORKS = {"784-1024-1024-10": (1024, 1024), "784-128-128-10": (128, 128)}
BATCHES = (1, 64, 10_000)
ROUND_S = 0.25  # seconds of calls per peer per round
SETTLE_S = 0.3  # seconds of quiet before each peer's burst


def trained_like_model(hidden: tuple[int, ...]) -> Network:
    """A centred MLP with random weights: speed does not depend on the values, only the shapes."""
    rng = np.random.default_rng(0)
    model = MLP([784, *hidden, 10], rng, input_mean=rng.uniform(-1, 0, 784).astype(np.float32))
    for p in model.parameters():
        p.value += rng.normal(0, 0.01, p.value.shape).astype(np.float32)
    return model


def ours(model: Network) -> Callable[[np.ndarray], np.ndarray]:
    """Checkpoint.inference(): the checkpoint's normalisation folded into the first layer."""
    return Inference(model, data.NORMALISATION["offset"], data.NORMALISATION["scale"]).predict_proba


def ours_model(model: Network) -> Callable[[np.ndarray], np.ndarray]:
    """model.predict_proba, given normalised pixels (see NORMALISED)."""
    return model.predict_proba


NORMALISED = {"model": data.normalise}  # peers that take normalised pixels, and how they are made


def onnxruntime_peer(model: Network) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    graph = to_onnx(model, data.CLASS_NAMES, data.NORMALISATION).SerializeToString()
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["probabilities"], {"pixels": x})[0]


def pytorch_peer(model: Network) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    torch.set_num_threads(2)
    layers: list = []
    params = fold(model.layers, **data.NORMALISATION).params  # the fully connected layers, folded
    for i, index in enumerate(sorted(params)):
        weight, bias = (a.astype(np.float32) for a in params[index])
        linear = torch.nn.Linear(*weight.shape)
        linear.weight.data = torch.from_numpy(np.ascontiguousarray(weight.T))
        linear.bias.data = torch.from_numpy(bias)
        layers += [linear, torch.nn.ReLU()] if i < len(params) - 1 else [linear, torch.nn.Softmax(1)]
    net = torch.nn.Sequential(*layers).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return run


def floor_peer(model: Network) -> Callable[[np.ndarray], np.ndarray]:
    """Our own limit: the network's matrix products alone, with the same shapes, into preallocated
    outputs, on raw pixels. No bias, no ReLU, no softmax: what NumPy's BLAS takes for the arithmetic."""
    params = fold(model.layers, **data.NORMALISATION).params
    weights = [np.ascontiguousarray(params[i][0], dtype=np.float32) for i in sorted(params)]
    outputs: dict[tuple[int, int], np.ndarray] = {}

    def run(x: np.ndarray) -> np.ndarray:
        h = x
        for j, w in enumerate(weights):
            out = outputs.get((len(x), j))
            if out is None:
                out = outputs[(len(x), j)] = np.empty((len(x), w.shape[1]), np.float32)
            np.matmul(h, w, out=out)
            h = out
        return h

    return run


def seconds_per_call(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, budget: float) -> float:
    """The mean time of one call over a burst of calls lasting about ``budget`` seconds."""
    calls, start = 0, time.perf_counter()
    while True:
        run(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return elapsed / calls


def in_turns(runners: dict[str, Callable], x: dict[str, np.ndarray], rounds: int) -> dict[str, float]:
    """{peer: median seconds a call}: each peer's burst in turn, ``rounds`` times. Before each burst,
    the previous peer's idle threads (OpenBLAS's spin of 2^28 cycles, ONNX Runtime's and PyTorch's
    pools) are let stop, or they take a core from it; then one untimed call wakes this peer's own."""
    times: dict[str, list[float]] = {peer: [] for peer in runners}
    for _ in range(rounds):
        for peer, run in runners.items():
            time.sleep(SETTLE_S)
            run(x[peer])
            times[peer].append(seconds_per_call(run, x[peer], ROUND_S))
    return {peer: statistics.median(t) for peer, t in times.items()}


def measure(
    rounds: int = 7, peers: tuple[str, ...] = ("ours", "model", "floor", "onnxruntime", "pytorch")
) -> dict:
    """{network: {batch: {peer: median seconds per call, ...}}} with agreement checks. The "floor" is
    no peer but our own limit, in turn with the others: ``ours_over_floor`` is the target's ratio."""
    makers = {
        "ours": ours,
        "model": ours_model,
        "floor": floor_peer,
        "onnxruntime": onnxruntime_peer,
        "pytorch": pytorch_peer,
    }
    pixels = np.random.default_rng(1).uniform(0, 255, (max(BATCHES), 784)).astype(np.float32)
    results: dict = {}
    for name, hidden in NETWORKS.items():
        model = trained_like_model(hidden)
        runners = {peer: makers[peer](model) for peer in peers}
        given = {peer: NORMALISED.get(peer, lambda x: x) for peer in peers}
        reference = runners["ours"](pixels[:777])
        results[name] = {}
        for batch in BATCHES:
            x = {peer: np.ascontiguousarray(given[peer](pixels[:batch])) for peer in peers}
            for peer, run in runners.items():  # warm-up, and a check that every peer answers alike
                if peer != "floor":  # products alone: no probabilities to compare
                    answer = run(given[peer](pixels[:777]))[:batch]
                    np.testing.assert_allclose(answer, reference[:batch], rtol=1e-4, atol=1e-6)
                run(x[peer])
            row = {f"{peer}_s": seconds for peer, seconds in in_turns(runners, x, rounds).items()}
            for peer in runners:
                row[f"{peer}_samples_per_s"] = batch / row[f"{peer}_s"]
            for peer in runners:
                if peer not in ("ours", "floor"):
                    row[f"ours_vs_{peer}"] = row[f"{peer}_s"] / row["ours_s"]
            if "floor" in runners:
                row["ours_over_floor"] = row["ours_s"] / row["floor_s"]
                row["model_over_floor"] = row["model_s"] / row["floor_s"]
            if "model" in runners and "onnxruntime" in runners:
                row["model_vs_onnxruntime"] = row["onnxruntime_s"] / row["model_s"]
            results[name][str(batch)] = row
            print(f"measured inference {name} batch {batch}", file=sys.stderr)
    return results


def format_table(results: dict) -> str:
    lines = [
        "| network | batch | `Checkpoint.inference()` | `model.predict_proba` | products alone "
        "| ONNX Runtime | PyTorch | predict_proba / products | inference() vs ONNX Runtime "
        "| predict_proba vs ONNX Runtime | inference() vs PyTorch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def per_call(row: dict, peer: str) -> str:
        if f"{peer}_s" not in row:
            return "-"
        seconds = row[f"{peer}_s"]
        return f"{seconds * 1e6:,.0f} µs" if seconds < 0.01 else f"{seconds * 1e3:,.1f} ms"

    for name, batches in results.items():
        for batch, row in batches.items():
            keys = ("model_over_floor", "ours_vs_onnxruntime", "model_vs_onnxruntime", "ours_vs_pytorch")
            ratios = [f"{row[k]:.2f}x" if k in row else "-" for k in keys]
            lines.append(
                f"| {name} | {int(batch):,} | {per_call(row, 'ours')} | {per_call(row, 'model')} "
                f"| {per_call(row, 'floor')} | {per_call(row, 'onnxruntime')} | {per_call(row, 'pytorch')} "
                f"| {' | '.join(ratios)} |"
            )
    lines.append("")
    lines.append(
        "Time per call (median of the rounds). predict_proba / products: the README's call against its own "
        "matrix products alone (same shapes, preallocated), the floor; below 1.2x is the target. Against "
        "a peer, a ratio above 1 means ours is faster."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds of turns (median taken; default 7)")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    results = measure(args.rounds)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))


if __name__ == "__main__":
    main()
