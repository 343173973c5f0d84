"""Hyperparameter search on Optuna: plans, the engine that runs them, and their results."""

from .engine import open_storage, open_study, reconcile, work
from .plan import REPORT_SWEEP, REPORT_TABLE_1, Plan, Point, grid_plan, sweep_plan, tpe_plan
from .results import best_config, progress_line, rows, write_results
from .workers import run_workers, without_test

__all__ = [
    "REPORT_SWEEP",
    "REPORT_TABLE_1",
    "Plan",
    "Point",
    "best_config",
    "grid_plan",
    "open_storage",
    "open_study",
    "progress_line",
    "reconcile",
    "rows",
    "run_workers",
    "sweep_plan",
    "tpe_plan",
    "without_test",
    "work",
    "write_results",
]
