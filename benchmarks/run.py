"""Side-by-side benchmarks on the real data: `make bench` (writes benchmarks/results.json).

Training throughput of our network, PyTorch's and scikit-learn's at two sizes, and of the cnn and
resnet presets' networks against PyTorch's with a profile by phase (benchmarks/cnn.py), (medians of several
epochs, validation excluded, the peers' epochs taken in turn), our FLOP rate against NumPy's own
matmul, inference time against ONNX Runtime and PyTorch at batch 1, 64 and 10,000
(benchmarks/inference.py), and the peak memory of a full `fashion-mlp train` run.
"""

from __future__ import annotations

# isort: off
import fashion_mlp  # noqa: F401  (first: it shortens OpenBLAS's idle spin before NumPy loads, nn/halves.py)

# isort: on
import argparse
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fashion_mlp import __version__, data
from fashion_mlp.config import TrainConfig
from fashion_mlp.train import train

sys.path.insert(0, str(Path(__file__).parent))
import cnn
import floor
import history
import inference
import kernel
import peers
from turns import MATMUL_N, interleaved_epoch_seconds, matmul_products

SIZES = [(128, 128), (512, 512)]
BATCH = 128


def n_params(hidden) -> int:
    sizes = [784, *hidden, 10]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def bench_config(hidden) -> TrainConfig:
    """The benchmark's training: the same network and loss as the peers, no dropout, no input centring,
    no label smoothing, and every image back-propagated (hardest_of 1)."""
    return TrainConfig(
        hidden_sizes=hidden,
        batch_size=BATCH,
        lr=0.05,
        momentum=0.9,
        nesterov=False,
        schedule="inverse_time",
        decay=1e-4,
        l2=1e-4,
        dropout=0.0,
        centre_inputs=False,
        label_smoothing=0.0,
        hardest_of=1,
    )


def ours_epochs(dataset, hidden):
    """Our full training loop, one epoch per next(): shuffling, gather, forward, backward, L2, decay,
    momentum, on bench_config."""
    config = bench_config(hidden)
    state = None
    # train() continues from ``state`` for one more epoch each time. Between calls it restores the best
    # weights so far, which changes the trajectory but nothing that is timed.
    while True:
        state = train(config.replace(epochs=state.epoch + 1 if state else 1), dataset, state=state)
        yield state.history[-1].seconds


def peak_train_memory_mb() -> tuple[float, float]:
    """Peak resident memory (MB) and wall time of `fashion-mlp train` (default preset, full data).

    The child reports VmHWM, its own address space's high-water mark. ru_maxrss would not do: Linux
    folds the pre-exec image's peak into it, and that image is a fork of this torch-laden process.
    """
    report = (
        "import sys; from fashion_mlp.cli import main; code = main(sys.argv[1:]); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
        "print(int(hwm) / 1024, file=sys.stderr); sys.exit(code)"
    )
    with tempfile.TemporaryDirectory() as runs_dir:
        start = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-c", report, "train", "--runs-dir", runs_dir, "--quiet", "--no-download"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wall = time.perf_counter() - start
    return float(child.stderr.strip().splitlines()[-1]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8, help="timed epochs per network (median taken)")
    parser.add_argument("--skip-peers", action="store_true", help="measure only our network")
    parser.add_argument("--skip-cnn", action="store_true", help="leave out the cnn preset's network")
    parser.add_argument("--skip-resnet", action="store_true", help="leave out the resnet preset's network")
    parser.add_argument(
        "--cnn-epochs", type=int, default=3, help="timed epochs of each convolutional network (median taken)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    parser.add_argument(
        "--no-history", action="store_true", help="do not append this run to benchmarks/history.jsonl"
    )
    args = parser.parse_args()
    kernel.use_the_users_kernel()

    dataset = data.load(allow_download=False)
    x, y = dataset.train.x, dataset.train.y
    n = len(y)
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
        "package_version": __version__,
        "kernel": kernel.describe(),
        "batch_size": BATCH,
        "train_samples": n,
        "networks": {},
    }
    for hidden in SIZES:
        name = "784-" + "-".join(map(str, hidden)) + "-10"
        row: dict = {"params": n_params(hidden)}
        # The matmul takes its turn in the same rounds, so the FLOP fraction compares like with like.
        profile = floor.Profile(bench_config(hidden), dataset)
        runners = {
            "ours": ours_epochs(dataset, hidden),
            "matmul": matmul_products(),
            "floor": floor.floor_epochs(n, [784, *hidden, 10], BATCH),
            "update": floor.update_epochs(n, [784, *hidden, 10], BATCH, bench_config(hidden).l2),
            "profile": profile.epochs(),
        }
        if not args.skip_peers:
            runners["pytorch"] = peers.torch_epochs(x, y, hidden, BATCH)
            runners["sklearn"] = peers.sklearn_epochs(x, y, hidden, BATCH)
        timings = interleaved_epoch_seconds(runners, args.epochs)
        row["matmul_gflops"] = 2 * MATMUL_N**3 / statistics.median(timings.pop("matmul")) / 1e9
        for peer, seconds in timings.items():
            row[f"{peer}_epoch_s"] = statistics.median(seconds)
            row[f"{peer}_samples_per_s"] = n / statistics.median(seconds)
        for peer in ("pytorch", "sklearn"):
            if f"{peer}_samples_per_s" in row:
                row[f"speedup_vs_{peer}"] = row["ours_samples_per_s"] / row[f"{peer}_samples_per_s"]
        row["ours_gflops"] = 6 * row["params"] * row["ours_samples_per_s"] / 1e9
        row["fraction_of_matmul"] = row["ours_gflops"] / row["matmul_gflops"]
        steps = math.ceil(n / BATCH)
        row["step_ms"] = 1000 * row["ours_epoch_s"] / steps
        row["floor_ms"] = 1000 * row.pop("floor_epoch_s") / steps
        row.pop("floor_samples_per_s")
        row["step_over_floor"] = row["step_ms"] / row["floor_ms"]
        row["update_ms"] = 1000 * row.pop("update_epoch_s") / steps
        row.pop("update_samples_per_s")
        row["roofline_ms"] = row["floor_ms"] + row["update_ms"]
        row["step_over_roofline"] = row["step_ms"] / row["roofline_ms"]
        row["profiled_step_ms"] = 1000 * row.pop("profile_epoch_s") / steps
        row.pop("profile_samples_per_s")
        row["profile_ms"] = {
            p: 1000 * statistics.median(e[p] for e in profile.phases[1:]) / steps for p in floor.PHASES
        }
        results["networks"][name] = row
        print(f"measured {name}", file=sys.stderr)
    for preset in [p for p in ("cnn", "resnet") if not getattr(args, f"skip_{p}")]:
        results[preset] = cnn.measure(
            data.load(allow_download=False, val_size=0), args.cnn_epochs, not args.skip_peers, preset
        )
        print(f"measured the {preset} preset's network", file=sys.stderr)
    peers_at_inference = ("ours", "model", "floor")
    if not args.skip_peers:
        peers_at_inference += ("onnxruntime", "pytorch")
    results["inference"] = inference.measure(peers=peers_at_inference)
    results["train_peak_rss_mb"], results["train_wall_s"] = peak_train_memory_mb()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_history:
        history.append(results)
    print(format_table(results))


def format_table(results: dict) -> str:
    lines = [
        kernel.line(results["kernel"]) if "kernel" in results else "kernel: not recorded",
        f"{results.get('date', 'undated')}; {results['machine']['cpus']} CPUs; "
        f"batch {results['batch_size']}; matmul: NumPy's own "
        f"{MATMUL_N}^3 float32 product, measured in turn with the training epochs",
        "",
        "| network | ours samples/s | PyTorch | scikit-learn | vs PyTorch | vs sklearn "
        "| our GFLOP/s | matmul GFLOP/s | of matmul |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["networks"].items():

        def get(key, fmt="{:,.0f}", row=row):
            return fmt.format(row[key]) if key in row else "-"

        lines.append(
            f"| {name} | {get('ours_samples_per_s')} | {get('pytorch_samples_per_s')} "
            f"| {get('sklearn_samples_per_s')} | {get('speedup_vs_pytorch', '{:.2f}x')} "
            f"| {get('speedup_vs_sklearn', '{:.2f}x')} | {get('ours_gflops', '{:.1f}')} "
            f"| {get('matmul_gflops', '{:.1f}')} | {get('fraction_of_matmul', '{:.0%}')} |"
        )
    lines += [
        "",
        "The BLAS floor: a step's matrix products alone, with its shapes; the roofline: the floor plus one "
        "SGD-momentum update over its parameters, alone; both in turn with the epochs "
        "(`benchmarks/floor.py`); and where the step's time goes, measured in a profiled copy of it:",
        "",
    ]
    phases = list(floor.PHASES)
    lines.append(
        "| network | step | floor | step / floor | update | roofline | step / roofline | profiled step | "
        + " | ".join(phases)
        + " |"
    )
    lines.append("|---|---|---|---|---|---|---|---|" + "---|" * len(phases))
    for name, row in results["networks"].items():
        if "floor_ms" in row:
            parts = " | ".join(f"{row['profile_ms'][p]:.3f}" for p in phases)
            roof = (
                f"{row['update_ms']:.3f} ms | {row['roofline_ms']:.3f} ms | {row['step_over_roofline']:.2f}x"
                if "roofline_ms" in row
                else "- | - | -"
            )
            lines.append(
                f"| {name} | {row['step_ms']:.3f} ms | {row['floor_ms']:.3f} ms | "
                f"{row['step_over_floor']:.2f}x | {roof} | {row['profiled_step_ms']:.3f} ms | {parts} |"
            )
    for preset in ("cnn", "resnet"):
        if preset in results:
            lines += [
                "",
                f"The {preset} preset's network (`benchmarks/cnn.py`):",
                "",
                cnn.format_result(results[preset]),
            ]
    lines += ["", "Inference to probabilities, through both doors (`benchmarks/inference.py`):", ""]
    lines.append(inference.format_table(results["inference"]))
    lines.append("")
    lines.append(
        f"Peak resident memory of `fashion-mlp train` (default preset, full data): "
        f"{results['train_peak_rss_mb']:.0f} MB ({results['train_wall_s']:.1f} s)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
