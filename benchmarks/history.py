"""The run history of `make bench`: one JSON record per run, appended to benchmarks/history.jsonl.

docs/speed.md keeps the latest run's tables; the history keeps every run's headline figures, as data:
its date, the kernel it ran on (with the matmul rate), and the ratios each target is judged by.

    python benchmarks/history.py          # the history as a table, one row per run
"""

from __future__ import annotations

import json
from pathlib import Path

HISTORY = Path(__file__).parent / "history.jsonl"
MLP_FIGURES = ("speedup_vs_pytorch", "speedup_vs_sklearn", "step_over_roofline", "step_over_floor")
CNN_FIGURES = ("ratio_vs_pytorch", "step_over_products")


def record(results: dict) -> dict:
    """A run's headline figures, out of `make bench`'s results.json."""
    figures: dict = {}
    for name, row in results.get("networks", {}).items():
        figures[name] = {k: row[k] for k in (*MLP_FIGURES, "matmul_gflops") if k in row}
    for preset in ("cnn", "resnet"):
        if preset not in results:
            continue
        figures[preset] = {k: results[preset][k] for k in CNN_FIGURES if k in results[preset]}
        for batch, row in results[preset].get("inference_s", {}).items():
            if "onnxruntime" in row:
                figures[preset][f"inference batch {batch} model_vs_onnxruntime"] = (
                    row["onnxruntime"] / row["model"]
                )
            if "model_over_products" in row:
                figures[preset][f"inference batch {batch} model_over_products"] = row["model_over_products"]
    for name, batches in results.get("inference", {}).items():
        figures.setdefault(f"inference {name}", {}).update(
            {
                f"batch {batch} {key}": value
                for batch, row in batches.items()
                if isinstance(row, dict)
                for key, value in row.items()
                if key.startswith("ours_vs_") or key.endswith("_over_floor")
            }
        )
    for key in ("train_peak_rss_mb", "train_wall_s"):
        if key in results:
            figures[key] = results[key]
    return {
        "date": results.get("date"),
        "kernel": results.get("kernel"),
        "package_version": results.get("package_version"),
        "figures": figures,
    }


def append(results: dict, path: Path = HISTORY) -> dict:
    """Append the run's record as one line; return it."""
    line = record(results)
    with path.open("a") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")
    return line


def read(path: Path = HISTORY) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    runs = read()
    print("| date | kernel | matmul GFLOP/s | vs PyTorch: 784-128-128-10 | 784-512-512-10 | cnn | resnet |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        kernel = run.get("kernel") or {}
        f = run["figures"]

        def ratio(name: str, key: str, f: dict = f) -> str:
            value = f.get(name, {}).get(key)
            return f"{value:.2f}x" if value is not None else "-"

        print(
            f"| {run['date']} | {kernel.get('architecture', '?')} | {kernel.get('matmul_gflops', 0):.0f} "
            f"| {ratio('784-128-128-10', 'speedup_vs_pytorch')} "
            f"| {ratio('784-512-512-10', 'speedup_vs_pytorch')} | {ratio('cnn', 'ratio_vs_pytorch')} "
            f"| {ratio('resnet', 'ratio_vs_pytorch')} |"
        )


if __name__ == "__main__":
    main()
