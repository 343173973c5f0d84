"""A search's results: results.csv, results.md (laid out like the report's Table 1) and best.toml."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import TrainConfig
from ..files import atomic_write_bytes
from .engine import METRICS, _counts, _point_of
from .plan import REPORT_TABLE_1, Plan, _label


def rows(study: optuna.Study, plan: Plan) -> list[dict[str, Any]]:
    """One row per finished or running trial (not superseded ones), in point order."""
    result = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (TrialState.WAITING,) or trial.user_attrs.get("superseded"):
            continue
        point = _point_of(trial)
        if plan.points is not None and point is None:
            continue
        params = plan.points[point].params if plan.points is not None and point is not None else trial.params
        state = "diverged" if trial.user_attrs.get("diverged") else trial.state.name.lower()
        row: dict[str, Any] = {"trial": trial.number, "state": state}
        if plan.points is not None:
            row["point"] = point
            row["label"] = plan.points[point].label  # type: ignore[index]
        row.update({k: _label(k, v).split("=", 1)[1] for k, v in params.items()})
        row.update({k: trial.user_attrs.get(k, "") for k in METRICS})
        result.append(row)
    if plan.points is not None:
        # a point re-run after a crash has a failed attempt too: keep only its finished one where there is one
        done = ("complete", "pruned", "diverged")
        finished = {r["point"] for r in result if r["state"] in done}
        result = [r for r in result if r["state"] in done or r["point"] not in finished]
        result.sort(key=lambda r: (r["point"], r["trial"]))
    return result


def best_config(study: optuna.Study) -> TrainConfig | None:
    completed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not completed:
        return None
    best = max(completed, key=lambda t: (t.value, -t.number))
    return TrainConfig.from_record(best.user_attrs["config"], "the best trial")


def progress_line(study: optuna.Study, plan: Plan, started: float) -> str:
    counts = _counts(study)
    done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    best = max(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
        key=lambda t: t.value or 0,
        default=None,
    )
    best_text = f"best val {best.value:.4f} (trial {best.number})" if best else "no trial finished yet"
    elapsed = time.time() - started
    return (
        f"{done}/{plan.total} done, {counts[TrialState.RUNNING]} running, "
        f"{max(0, plan.total - done - counts[TrialState.RUNNING])} to go; {best_text}; "
        f"{int(elapsed // 60)}m{math.floor(elapsed % 60):02d}s elapsed"
    )


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(table_rows: list[dict[str, Any]], plan: Plan) -> str:
    """Like the report's Table 1: one line per trial; for the report's sweep, its numbers beside ours."""
    sweep = plan.mode == "sweep"
    headers = ["Config", "Training Acc", "Training Loss", "Validation Acc", "Validation Loss", "Best epoch"]
    if sweep:
        headers += ["Report: Train Acc", "Train Loss", "Val Acc", "Val Loss"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in table_rows:
        config = row.get("label") or ", ".join(
            f"{k}={row[k]}" for k in row if k not in (*METRICS, "trial", "state")
        )
        if row["state"] != "complete":
            config += f" ({row['state']})"
        cells = [
            config,
            *(_fmt(row[k]) for k in ("train_accuracy", "train_loss", "val_accuracy", "val_loss")),
        ]
        cells.append(str(row["best_epoch"]))
        if sweep:
            cells += [f"{v:.4f}" for v in REPORT_TABLE_1[row["point"]]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(study: optuna.Study, plan: Plan, search_dir: Path, elapsed: float) -> dict[str, Path]:
    """Write results.csv, results.md and best.toml atomically; return their paths."""
    search_dir.mkdir(parents=True, exist_ok=True)
    table_rows = rows(study, plan)
    out = io.StringIO()
    fields = list(dict.fromkeys(k for row in table_rows for k in row))
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table_rows)
    paths = {"csv": search_dir / "results.csv", "md": search_dir / "results.md"}
    atomic_write_bytes(paths["csv"], out.getvalue().encode())
    counts = _counts(study)
    summary = (
        f"# Search `{study.study_name}` ({plan.mode})\n\n"
        f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned of {plan.total}; "
        f"wall time {elapsed / 60:.1f} min on this machine. Metrics are those of each trial's best epoch by "
        "validation accuracy; training figures are means over that epoch. The test set was not used.\n\n"
    )
    atomic_write_bytes(paths["md"], (summary + markdown_table(table_rows, plan)).encode())
    best = best_config(study)
    if best is not None:
        paths["toml"] = search_dir / "best.toml"
        header = f"# The best trial of search {study.study_name!r}: fashion-mlp train --config best.toml\n"
        atomic_write_bytes(paths["toml"], (header + best.to_toml()).encode())
    return paths
