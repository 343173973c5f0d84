"""`make bench` for this tree and another commit, in turns: whether a change that should cost nothing
costs nothing. Run by hand, never by the tests.

    python benchmarks/against.py --against REV [--pairs 2] [run.py's options, e.g. --epochs 4]

REV is checked out in a temporary git worktree. Then, ``--pairs`` times, benchmarks/run.py runs once
for REV's tree and once for this one, each in a fresh process that imports its own tree's package
(PYTHONPATH), so that a shared machine's drift reaches both alike. It prints, for every figure of
ours (training throughput, the step against its roofline, the CNN's step against its products,
inference at each batch, the default preset's wall time and memory), the median of each tree's runs
and their ratio, and the machine's matmul rate measured in turn with them; the peers' own figures do
not depend on our code and are left out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """REV's files in a temporary git worktree, removed afterwards."""
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


def figures(results: dict) -> dict[str, float]:
    """Our figures of one run of run.py, by name (higher is better for samples/s, lower for the rest)."""
    out = {}
    for name, row in results["networks"].items():
        out[f"{name} matmul GFLOP/s (in turn)"] = row["matmul_gflops"]
        out[f"{name} training samples/s"] = row["ours_samples_per_s"]
        out[f"{name} step ms"] = row["step_ms"]
        out[f"{name} step / roofline"] = row["step_over_roofline"]
    if "cnn" in results:
        cnn = results["cnn"]
        out["cnn matmul GFLOP/s (in turn)"] = cnn["matmul_gflops"]
        out["cnn training samples/s"] = cnn["ours_samples_per_s"]
        out["cnn step ms"] = cnn["profile_ms"]["step"]
        out["cnn step / products"] = cnn["step_over_products"]
        for batch, row in cnn.get("inference_s", {}).items():
            for door in ("inference", "model"):
                if door in row:
                    out[f"cnn {door} batch {batch} ms"] = 1e3 * row[door]
    for name, rows in results["inference"].items():
        for batch, row in rows.items():
            for door in ("ours", "model"):
                out[f"{name} {door} batch {batch} ms"] = 1e3 * row[f"{door}_s"]
    out["train (default preset) wall s"] = results["train_wall_s"]
    out["train (default preset) peak MB"] = results["train_peak_rss_mb"]
    return out


def run(tree: Path, options: list[str], out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run([sys.executable, str(tree / "benchmarks" / "run.py"), *options, "--out", str(out)],
                   cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return figures(json.loads(out.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", required=True, help="the commit to compare with, e.g. HEAD~1")
    parser.add_argument("--pairs", type=int, default=2, help="runs of each tree, in turns (default 2)")
    parser.add_argument("--json", type=Path, help="also write every run's figures to this file")
    args, options = parser.parse_known_args()
    revision = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    runs: dict[str, list[dict[str, float]]] = {revision: [], "this tree": []}
    with worktree(args.against) as other, tempfile.TemporaryDirectory() as scratch:
        for i in range(args.pairs):
            for label, tree in ((revision, other), ("this tree", ROOT)):
                print(f"pair {i + 1}: {label}", file=sys.stderr)
                runs[label].append(run(tree, options, Path(scratch) / f"{label}-{i}.json"))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"| figure | {revision} | this tree | this / {revision} |")
    print("|---|---|---|---|")
    for key in runs["this tree"][0]:
        theirs = statistics.median(r[key] for r in runs[revision] if key in r)
        ours = statistics.median(r[key] for r in runs["this tree"])
        print(f"| {key} | {theirs:,.4g} | {ours:,.4g} | {ours / theirs:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
