"""A training run on disk: runs/<name>/ with config.json, metrics.csv, best.npz, last.npz, summary.json.

Every file is written atomically, so a crash never leaves a half-written one. A run can be resumed
from last.npz, which holds the weights, optimiser state, generator state and history.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, checkpoint
from .config import TrainConfig
from .data import CLASS_NAMES, NORMALISATION, Dataset
from .errors import InvalidValue, MissingFile, PathTaken
from .evaluation import scores
from .files import atomic_write_bytes, read_json, write_json
from .train import Callback, EpochRecord, TrainState, train

METRIC_FIELDS = [f.name for f in dataclasses.fields(EpochRecord)]


def machine() -> dict[str, Any]:
    """What the run ran on: cores, Python, NumPy, fashion-mlp."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fashion_mlp": __version__,
    }


def checkpoint_meta(state: TrainState, data: Dataset) -> dict[str, Any]:
    return {
        "normalisation": NORMALISATION,
        "class_names": list(data.class_names),
        **state.record(),
        "split": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
    }


class RunWriter(Callback):
    """Writes metrics.csv, best.npz and last.npz after every epoch."""

    def __init__(self, run_dir: Path, data: Dataset) -> None:
        self.run_dir = run_dir
        self.data = data

    def on_epoch_end(self, state: TrainState, record: EpochRecord, improved: bool) -> None:
        rows = io.StringIO()
        writer = csv.DictWriter(rows, fieldnames=METRIC_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in state.history)
        atomic_write_bytes(self.run_dir / "metrics.csv", rows.getvalue().encode())
        meta = checkpoint_meta(state, self.data)
        if improved:
            checkpoint.save(self.run_dir / "best.npz", state.model, meta)
        checkpoint.save(
            self.run_dir / "last.npz", state.model, meta, state.optimizer.state_dict(), state.arrays()
        )


def new_run_dir(root: Path, name: str | None) -> Path:
    """runs/<name>, or runs/<timestamp>; refuses to reuse an existing run's folder."""
    run_dir = Path(root) / (name or time.strftime("%Y%m%d-%H%M%S"))
    if (run_dir / "config.json").exists():
        raise PathTaken(f"{run_dir}: a run already exists there; choose another --name or --resume it")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run(
    config: TrainConfig,
    data: Dataset,
    run_dir: Path,
    callbacks: Sequence[Callback] = (),
    state: TrainState | None = None,
    test_logits: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Train (or continue ``state``), evaluate the best weights on the test set, write summary.json.
    ``test_logits``, a list, is given the test set's logits, so that the figures need not answer
    the test set again (a network with ten views takes 15 s to)."""
    write_json(run_dir / "config.json", config.to_dict())
    started = time.perf_counter()
    state = train(config, data, [RunWriter(run_dir, data), *callbacks], state)
    wall = time.perf_counter() - started
    logits = state.model.logits(data.test.x)
    test = scores(logits, data.test.y)
    if test_logits is not None:
        test_logits.append(logits)
    best = state.history[state.best_epoch - 1]
    train_seconds = sum(r.seconds for r in state.history)
    summary = {
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "val_accuracy": best.val_accuracy,
        "val_loss": best.val_loss,
        "train_accuracy": best.train_accuracy,
        "train_loss": best.train_loss,
        "wall_seconds": wall,
        "train_seconds": train_seconds,
        "train_samples_per_second": len(data.train) * len(state.history) / train_seconds,
        "split": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "data_source": data.source,
        "test_confusion": test.confusion.tolist(),
        "machine": machine(),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv as one array per column; an empty cell (no validation set) reads as NaN."""
    try:
        with Path(path).open(newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise MissingFile(f"{path}: missing") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise InvalidValue(f"{path}: not a readable CSV file ({err})") from None
    if not rows or set(rows[0]) != set(METRIC_FIELDS):
        raise InvalidValue(f"{path}: not a metrics file of fashion-mlp (expected columns {METRIC_FIELDS})")
    try:
        return {name: np.array([float(row[name] or "nan") for row in rows]) for name in METRIC_FIELDS}
    except (TypeError, ValueError):
        raise InvalidValue(f"{path}: a value is not a number") from None


SUMMARY_NUMBERS = ("test_accuracy", "test_loss", "train_accuracy", "train_loss", "wall_seconds",
                   "train_seconds", "train_samples_per_second")  # fmt: skip


def read_summary(path: Path) -> dict[str, Any]:
    """summary.json, checked for every field that plot and report read; ValueError naming the file
    and the field otherwise (it is a file on disk, which anyone may have edited)."""
    summary = read_json(path)

    def number(value: Any, nullable: bool = False) -> bool:
        if value is None:
            return nullable
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(summary, dict):
        raise InvalidValue(f"{path}: not a run summary (a JSON object)")
    problems = [k for k in SUMMARY_NUMBERS if not number(summary.get(k))]
    validation = ("val_accuracy", "val_loss")  # both numbers, or both null (no validation set)
    problems += [k for k in validation if k not in summary or not number(summary[k], nullable=True)]
    if (summary.get("val_accuracy") is None) != (summary.get("val_loss") is None):
        problems.append("val_accuracy and val_loss (one is null)")
    problems += [k for k in ("best_epoch", "epochs_run") if not count(summary.get(k))]
    split = summary.get("split")
    if not isinstance(split, dict) or not all(count(split.get(k)) for k in ("train", "val", "test")):
        problems.append("split")
    confusion = summary.get("test_confusion")
    rows_ok = isinstance(confusion, list) and len(confusion) == len(CLASS_NAMES)
    cells_ok = rows_ok and all(isinstance(r, list) and len(r) == len(CLASS_NAMES) for r in confusion)
    if not cells_ok or not all(count(n) for r in confusion for n in r):
        problems.append("test_confusion")
    if not isinstance(summary.get("machine", {}), dict) or not isinstance(
        summary.get("data_source", ""), str
    ):
        problems.append("machine or data_source")
    if problems:
        raise InvalidValue(f"{path}: not a valid run summary (bad or missing: {', '.join(problems)})")
    return summary


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict, after checking that it is a valid TrainConfig (ValueError otherwise)."""
    values = read_json(path)
    if not isinstance(values, dict):
        raise InvalidValue(f"{path}: not a run config (a JSON object)")
    TrainConfig.from_record(values, str(path))
    return values


def load_state(run_dir: Path) -> TrainState:
    """Rebuild the training state saved in run_dir/last.npz (and the best weights from best.npz).

    The state's metadata is not covered by the arrays' checksum: anything in it that does not fit is
    a ValueError naming the file."""
    try:
        return _load_state(run_dir)
    except (KeyError, TypeError, IndexError, AttributeError, OverflowError) as err:
        raise InvalidValue(f"{run_dir / 'last.npz'}: its training state is damaged ({err!r})") from None
    except ValueError as err:
        if isinstance(err, checkpoint.CheckpointError) or str(run_dir) in str(err):
            raise
        raise InvalidValue(f"{run_dir / 'last.npz'}: its training state is damaged ({err})") from None


def _load_state(run_dir: Path) -> TrainState:
    """Rebuild the training state saved in run_dir/last.npz (and the best weights from best.npz)."""
    last = checkpoint.load(run_dir / "last.npz")
    meta = last.meta
    best = checkpoint.load(run_dir / "best.npz")
    return TrainState.restore(
        meta,
        last.model,
        last.optimizer_state,
        best.model.state_dict(),
        str(run_dir / "last.npz"),
        last.training_arrays,
    )
