"""What a search runs: the report's one-factor sweep, a full grid, or a space for TPE to sample."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainConfig, field_names, read_toml
from ..errors import InvalidValue

NOT_SEARCHABLE = ("val_size", "split_seed")  # they change the data, not the model

REPORT_SWEEP: list[tuple[str, list[Any]]] = [
    ("hidden_sizes", [(32, 32), (64, 64), (128, 128), (256, 256)]),
    ("batch_size", [32, 64, 128, 256]),
    ("lr", [1.0, 0.1, 0.01]),
    ("decay", [1.0, 0.1, 0.01, 0.001]),
    ("momentum", [0.0, 0.7, 0.8, 0.9]),
    ("l2", [0.0, 0.1, 0.01, 0.001, 0.0001]),
]
# The report's Table 1, row by row: training acc, training loss, validation acc, validation loss.
REPORT_TABLE_1 = [
    (0.8433, 0.3620, 0.8359, 0.4574), (0.8638, 0.2639, 0.8531, 0.3947), (0.8613, 0.2914, 0.8543, 0.3983),
    (0.8711, 0.2524, 0.8633, 0.3763), (0.8392, 0.1392, 0.8298, 0.4757), (0.8594, 0.1481, 0.8476, 0.4185),
    (0.8728, 0.3470, 0.8605, 0.3945), (0.8604, 0.4013, 0.8511, 0.4206), (0.8669, 0.3720, 0.8550, 0.4037),
    (0.7382, 0.7104, 0.7297, 0.7365), (0.3973, 2.2986, 0.3947, 2.2982), (0.7659, 0.6317, 0.7580, 0.6637),
    (0.8682, 0.3474, 0.8561, 0.4074), (0.7846, 0.6432, 0.7640, 0.6848), (0.1105, 2.3131, 0.0987, 2.3042),
    (0.8159, 0.4779, 0.8039, 0.5426), (0.8652, 0.3521, 0.8569, 0.4027), (0.8709, 0.3646, 0.8609, 0.3933),
    (0.8449, 0.4187, 0.8381, 0.4620), (0.8689, 0.3388, 0.8539, 0.4009), (0.0982, 2.3028, 0.0969, 2.3028),
    (0.8364, 0.7465, 0.8305, 0.4957), (0.8703, 0.4287, 0.8579, 0.3966), (0.8654, 0.3941, 0.8551, 0.4080),
]  # fmt: skip


@dataclass(frozen=True)
class Point:
    label: str  # e.g. "lr=0.1"
    params: dict[str, Any]


@dataclass
class Plan:
    """What to search: fixed points (sweep, grid) or a space sampled n_trials times (TPE)."""

    mode: str  # "sweep", "grid" or "tpe"
    base: TrainConfig
    points: list[Point] | None = None
    space: dict[str, dict[str, Any]] | None = None
    n_trials: int = 0

    def __post_init__(self) -> None:
        if self.base.val_size == 0:
            raise InvalidValue(
                "search: trials are scored on validation accuracy, but the base config has val_size 0; "
                "use --preset validation or set val_size"
            )

    @property
    def total(self) -> int:
        return len(self.points) if self.points is not None else self.n_trials


def _label(name: str, value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = "x".join(map(str, value))
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


def _check_names(names: Any, source: str) -> None:
    unknown = sorted(set(names) - set(field_names()) | (set(names) & set(NOT_SEARCHABLE)))
    if unknown:
        valid = [n for n in field_names() if n not in NOT_SEARCHABLE]
        raise InvalidValue(
            f"{source}: unknown hyperparameter {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}"
        )


def _checked(base: TrainConfig, params: dict[str, Any], source: str) -> dict[str, Any]:
    """Params that make a valid config with ``base`` (lists become tuples); ValueError otherwise."""
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    TrainConfig.from_dict({**base.to_dict(), **params}, source)
    return params


def sweep_plan(name: str, base: TrainConfig) -> Plan:
    if name != "report":
        raise InvalidValue(f"unknown sweep {name!r}; the one sweep is 'report' (the report's Table 1)")
    points = [Point(_label(k, v), {k: v}) for k, values in REPORT_SWEEP for v in values]
    return Plan("sweep", base, points=[Point(p.label, _checked(base, p.params, "sweep")) for p in points])


def grid_plan(path: Path, base: TrainConfig) -> Plan:
    """The cartesian product of the lists in FILE.toml (a [grid] table, or top-level keys)."""
    raw = read_toml(path)
    values = raw.get("grid", raw)
    _check_names(values, str(path))
    if not values or any(not isinstance(v, list) or not v for v in values.values()):
        raise InvalidValue(f"{path}: the grid is empty; give each hyperparameter a non-empty list of values")
    names = list(values)
    points = []
    for combo in itertools.product(*(values[n] for n in names)):
        params = _checked(base, dict(zip(names, combo)), str(path))
        points.append(Point(", ".join(_label(n, params[n]) for n in names), params))
    return Plan("grid", base, points=points)


def tpe_plan(path: Path, n_trials: int, base: TrainConfig) -> Plan:
    """Ranges in FILE.toml: name = {low = 0.01, high = 1.0, log = true} or name = {choices = [...]}."""
    raw = read_toml(path)
    space = raw.get("space", raw)
    _check_names(space, str(path))
    if not space:
        raise InvalidValue(f"{path}: the search space is empty")
    for name, spec in space.items():
        if not isinstance(spec, dict) or not ({"low", "high"} <= set(spec) or "choices" in spec):
            raise InvalidValue(f"{path}: {name} needs {{low = ..., high = ...}} or {{choices = [...]}}")
    if n_trials < 1:
        raise InvalidValue("--trials must be at least 1")
    return Plan("tpe", base, space=space, n_trials=n_trials)
