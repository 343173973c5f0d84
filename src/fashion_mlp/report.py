"""The experiment report of a run: report.md, and report.html with its figures embedded.

The report is built once as a list of blocks (headings, paragraphs, tables, figures) and then
rendered twice, so the Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

import base64
import csv
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import runs
from .data import CLASS_NAMES
from .errors import InvalidValue, MissingFile
from .evaluation import per_class_scores
from .figures import figure_paths
from .files import atomic_write_bytes

CAPTIONS = {
    "curves": "Training curves: loss and accuracy per epoch (train averaged over the epoch; validation, if "
    "any, at its end), and the learning rate at every mini-batch step.",
    "weights": "Each first-hidden-layer neuron's input weights as a 28x28 image "
    "(red positive, blue negative).",
    "learned": "What training changed: final minus initial first-layer weights (the initial ones are "
    "recreated from the seed), which shows the garment shapes that random initial weights hide.",
    "biases": "Histogram of the first hidden layer's biases.",
    "filters": "Each filter of the first convolution as a 3x3 image (red positive, blue negative).",
    "learned_filters": "What training changed: final minus initial first-convolution filters (the initial "
    "ones are recreated from the seed).",
    "feature_maps": "Test image 0, and what the first block (convolution, max pooling, batch norm, ReLU) "
    "makes of it: one map per channel.",
    "confusion": "Test-set confusion matrix: counts, shaded by the fraction of each true class.",
    "per_class": "Test accuracy (recall) of each class.",
    "misclassified": "The test images the model got wrong with the most confidence.",
}


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    folded: str = ""  # if set, the HTML folds the table away behind this summary line


@dataclass
class Figure:
    path: Path
    caption: str


Block = str | Table | Figure  # a str starting with '#' is a heading, otherwise a paragraph


def build(run_dir: Path, search_dir: Path | None = None) -> list[Block]:
    run_dir = Path(run_dir)
    config = runs.read_config(run_dir / "config.json")
    summary = runs.read_summary(run_dir / "summary.json")
    confusion = np.array(summary["test_confusion"])
    machine = summary.get("machine", {})
    split = summary["split"]
    for path in figure_paths(run_dir).values():
        if not path.is_file():
            raise MissingFile(f"{path}: missing; run `fashion-mlp plot {run_dir}` first")
    figures = {key: Figure(path, CAPTIONS[key]) for key, path in figure_paths(run_dir).items()}
    # What a reader came for first: the test score, the curves and the per-class scores; the settings last.
    blocks: list[Block] = [
        f"# fashion-mlp run: {run_dir.name}",
        f"Test accuracy {summary['test_accuracy']:.4f} (loss {summary['test_loss']:.4f}) on "
        f"{split['test']:,} test images.",
        "## Results",
        _results_table(summary),
        _chosen(summary) + f" Training took {summary['train_seconds']:.1f} s "
        f"({summary['train_samples_per_second']:,.0f} samples/s), {summary['wall_seconds']:.1f} s in all.",
        figures.pop("curves"),
        "## Per-class scores on the test set",
        _per_class_table(confusion),
        "## Figures",
        *figures.values(),
    ]
    if search_dir is not None:
        blocks += ["## Hyperparameter search", _search_table(Path(search_dir))]
    blocks += [
        "## Configuration",
        f"Data: {split['train']:,} training, {split['val']:,} validation and {split['test']:,} test images "
        f"(split seed {config.get('split_seed', 0)}, training seed {config.get('seed', 0)}), "
        f"from {summary.get('data_source', 'unknown')}. "
        f"Trained with fashion-mlp {machine.get('fashion_mlp', '?')}, NumPy {machine.get('numpy', '?')}, "
        f"Python {machine.get('python', '?')} on {machine.get('cpus', '?')} CPU cores.",
        Table(["setting", "value"], [[k, _fmt(v)] for k, v in config.items()], folded="every setting"),
    ]
    return blocks


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return " x ".join(map(str, value)) if value else "(none)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _chosen(summary: dict[str, Any]) -> str:
    if summary["val_accuracy"] is None:
        return (
            f"No images were held out for validation, so training kept its last epoch, "
            f"{summary['best_epoch']}; the test set chose nothing."
        )
    return (
        f"Best epoch {summary['best_epoch']} of {summary['epochs_run']}, chosen by validation accuracy; "
        f"the test set chose nothing."
    )


def _results_table(summary: dict[str, Any]) -> Table:
    rows = [
        ("train (mean over the best epoch)", "train"),
        ("validation (end of the best epoch)", "val"),
        ("test (best epoch's weights)", "test"),
    ]
    if summary["val_accuracy"] is None:
        rows = [("train (mean over the last epoch)", "train"), ("test (last epoch's weights)", "test")]
    return Table(
        ["split", "accuracy", "loss"],
        [
            [label, f"{summary[f'{key}_accuracy']:.4f}", f"{summary[f'{key}_loss']:.4f}"]
            for label, key in rows
        ],
    )


def _per_class_table(confusion: np.ndarray) -> Table:
    precision, recall, f1 = per_class_scores(confusion)
    rows = [
        [name, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", str(int(n))]
        for name, p, r, f, n in zip(CLASS_NAMES, precision, recall, f1, confusion.sum(axis=1))
    ]
    rows.append(
        ["mean", f"{precision.mean():.3f}", f"{recall.mean():.3f}", f"{f1.mean():.3f}", str(confusion.sum())]
    )
    return Table(["class", "precision", "recall", "F1", "images"], rows)


def _search_table(search_dir: Path) -> Table:
    """results.csv of a search, with its best row (highest validation accuracy) marked."""
    path = search_dir / "results.csv"
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise MissingFile(f"{path}: missing; is {search_dir} a search directory?") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise InvalidValue(f"{path}: not a readable CSV file ({err})") from None
    if not rows or "val_accuracy" not in rows[0]:
        raise InvalidValue(f"{path}: not a search results file (no val_accuracy column)")
    scores = [float(r["val_accuracy"]) if r["val_accuracy"] else -1.0 for r in rows]
    best = int(np.argmax(scores))
    headers = ["best", *rows[0].keys()]
    return Table(headers, [["★" if i == best else "", *r.values()] for i, r in enumerate(rows)])


def to_markdown(blocks: list[Block], base: Path) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Table):
            out.append("| " + " | ".join(block.headers) + " |")
            out.append("|" + "---|" * len(block.headers))
            out.extend("| " + " | ".join(row) + " |" for row in block.rows)
        elif isinstance(block, Figure):
            out.append(f"![{block.caption}]({block.path.relative_to(base).as_posix()})\n\n*{block.caption}*")
        else:
            out.append(block)
        out.append("")
    return "\n".join(out)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-style:italic}"""


def to_html(blocks: list[Block]) -> str:
    """A self-contained page: inline style, figures as data: URIs, nothing fetched from anywhere."""
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>fashion-mlp report</title>"
           f"<style>{STYLE}</style></head><body>"]  # fmt: skip
    for block in blocks:
        if isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            if block.folded:
                table = f"<details><summary>{html.escape(block.folded)}</summary>{table}</details>"
            out.append(table)
        elif isinstance(block, Figure):
            data = base64.b64encode(block.path.read_bytes()).decode()
            alt = html.escape(block.caption)
            out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{alt}'>"
                       f"<figcaption>{alt}</figcaption></figure>")  # fmt: skip
        elif block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            out.append(f"<h{level}>{html.escape(block[level:].strip())}</h{level}>")
        else:
            out.append(f"<p>{html.escape(block)}</p>")
    out.append("</body></html>")
    return "\n".join(out)


def write(run_dir: Path, search_dir: Path | None = None) -> tuple[Path, Path]:
    """Write RUN_DIR/report.md and RUN_DIR/report.html; return their paths."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingFile(f"{run_dir}: no such run directory")
    blocks = build(run_dir, search_dir)
    md, page = run_dir / "report.md", run_dir / "report.html"
    atomic_write_bytes(md, to_markdown(blocks, run_dir).encode())
    atomic_write_bytes(page, to_html(blocks).encode())
    return md, page
