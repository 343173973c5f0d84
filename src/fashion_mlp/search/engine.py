"""Running a search on Optuna: the storage, claiming work, and surviving crashes.

Sweep and grid points are enqueued as WAITING trials, which workers claim atomically through the
storage, so each point finishes exactly once however many workers or machines share the study.
A trial cut off mid-way (Ctrl-C, kill -9, a lost machine) is found stale (its process is gone, or
its heartbeat is older than ``stale_after`` seconds), marked failed, and its point enqueued again.
The test set is never loaded.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import TrainConfig
from ..data import Dataset
from ..errors import InvalidValue
from ..train import Callback, EpochRecord, TrainingDiverged, TrainState, train
from .plan import Plan, _checked, _label

optuna.logging.set_verbosity(optuna.logging.WARNING)

METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "best_epoch", "seconds")
MAX_ATTEMPTS = 3  # a TPE trial's parameters are tried at most this often


def open_storage(url: str | None, search_dir: Path) -> optuna.storages.BaseStorage:
    """The embedded journal file in ``search_dir`` (safe for processes on one machine), or a database URL."""
    if url is None:
        from optuna.storages.journal import JournalFileBackend

        search_dir.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(search_dir / "journal.log")))
    if not url.startswith(("postgresql://", "postgresql+", "sqlite:///", "mysql")):
        raise InvalidValue(f"--storage {url!r}: expected a postgresql://, mysql:// or sqlite:/// URL")
    given = url  # what the user typed, for messages
    if url.startswith("postgresql://"):
        # The driver we install (psycopg 3); SQLAlchemy's default for plain postgresql:// varies by version.
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except ModuleNotFoundError as err:
            raise InvalidValue(
                f"--storage needs a database driver ({err}); pip install 'fashion-mlp[postgres]'"
            ) from None
        except Exception as err:  # SQLAlchemy's errors: unreachable, refused, or a schema race
            # Two machines creating the schema at the same moment collide (a duplicate table, type
            # or row); the loser retries. An unreachable server fails at once.
            if _schema_race(err) and attempt < 4:
                time.sleep(random.uniform(0.2, 1.0))
                continue
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InvalidValue(f"cannot use storage {_hide_password(given)}: {first}") from None
    raise AssertionError("unreachable")


def _schema_race(err: Exception) -> bool:
    text = f"{type(err).__name__} {err}"[:500].lower()
    races = ("integrityerror", "already exists", "duplicate")
    return "operationalerror" not in text and any(word in text for word in races)


def _hide_password(url: str) -> str:
    if "@" in url and ":" in url.split("@")[0].split("//")[-1]:
        scheme, rest = url.split("//", 1)
        user = rest.split("@")[0].split(":")[0]
        return f"{scheme}//{user}:***@{rest.split('@', 1)[1]}"
    return url


def open_study(plan: Plan, storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    tpe = plan.mode == "tpe"
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=plan.base.seed) if tpe else None,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
        if tpe
        else optuna.pruners.NopPruner(),
    )
    recorded = study.user_attrs.get("plan")
    if recorded is None:
        study.set_user_attr("plan", {"mode": plan.mode, "total": plan.total, "base": plan.base.to_dict()})
    elif (recorded["mode"], recorded["total"]) != (plan.mode, plan.total) or _base_of(recorded) != plan.base:
        raise InvalidValue(
            f"study {name!r} was started with a different search "
            f"({recorded['mode']}, {recorded['total']} trials); use another --study name"
        )
    return study


def _base_of(recorded: dict[str, Any]) -> TrainConfig | None:
    """The base config a study was started with (settings added since then as that version ran)."""
    try:
        return TrainConfig.from_record(recorded["base"], "the study's base config")
    except ValueError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(trial: optuna.trial.FrozenTrial, stale_after: float) -> bool:
    attrs = trial.user_attrs
    if attrs.get("host") == socket.gethostname() and not _pid_alive(int(attrs.get("pid", -1))):
        return True
    start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    return time.time() - float(attrs.get("heartbeat", start)) > stale_after


def _point_of(trial: optuna.trial.FrozenTrial) -> int | None:
    point = trial.params.get("point", trial.system_attrs.get("fixed_params", {}).get("point"))
    return None if point is None else int(point)


def reconcile(study: optuna.Study, plan: Plan, stale_after: float) -> None:
    """Fail stale running trials; enqueue every point (or cut-off TPE trial) that is neither done nor live."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _is_stale(trial, stale_after):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker did it
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    if plan.points is None:
        # TPE: run a cut-off trial's parameters again, at most MAX_ATTEMPTS times in all. A finished
        # trial can't be marked, so each retry names the trial it retries.
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        for trial in trials:
            attempt = int(trial.user_attrs.get("attempt", 1))
            wanted = trial.state == TrialState.FAIL and trial.params and trial.number not in retried
            if wanted and attempt < MAX_ATTEMPTS and not trial.user_attrs.get("superseded"):
                retry = {"retry_of": trial.number, "attempt": attempt + 1}
                study.enqueue_trial(trial.params, user_attrs=retry)
        return
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    covered = {_point_of(t) for t in study.get_trials(deepcopy=False, states=live)}
    for i, point in enumerate(plan.points):
        if i not in covered:
            study.enqueue_trial({"point": i}, user_attrs={"label": point.label})
    _drop_duplicate_waiting(study)


def _drop_duplicate_waiting(study: optuna.Study) -> None:
    """Workers that enqueue at the same moment leave a point waiting twice: keep one, deterministically."""
    taken = {
        _point_of(t)
        for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        )
    }
    seen: set[int | None] = set()
    for trial in sorted(
        study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number
    ):
        point = _point_of(trial)
        if point in taken or point in seen:
            _supersede(study, trial._trial_id)
        seen.add(point)


def _supersede(study: optuna.Study, trial_id: int) -> None:
    try:
        study._storage.set_trial_user_attr(trial_id, "superseded", True)
        study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # another worker superseded it, or claimed it, first


def _taken_elsewhere(study: optuna.Study, trial: optuna.Trial, point: int) -> bool:
    """Whether ``point`` is done, or being run by a lower-numbered trial, so this claim should yield."""
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or _point_of(other) != point:
            continue
        if other.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return True
        if other.state == TrialState.RUNNING and other.number < trial.number:
            return True
    return False


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def _done(study: optuna.Study, plan: Plan) -> bool:
    counts = _counts(study)
    if plan.points is not None:
        return counts[TrialState.WAITING] == 0 and counts[TrialState.RUNNING] == 0
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] >= plan.n_trials


class _Reporter(Callback):
    """Reports validation accuracy to Optuna each epoch, keeps the best epoch's metrics, and beats."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_epoch_end(self, state: TrainState, record: EpochRecord, improved: bool) -> None:
        self.trial.set_user_attr("heartbeat", time.time())
        if improved:
            for key in METRICS[:4]:
                self.trial.set_user_attr(key, getattr(record, key))
            self.trial.set_user_attr("best_epoch", record.epoch)
        self.trial.report(record.val_accuracy, record.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")


def _params(trial: optuna.Trial, plan: Plan) -> dict[str, Any]:
    if plan.points is not None:
        return plan.points[trial.suggest_categorical("point", list(range(len(plan.points))))].params
    params: dict[str, Any] = {}
    for name, spec in (plan.space or {}).items():
        if "choices" in spec:
            encoded = {_label(name, c): c for c in spec["choices"]}
            params[name] = encoded[trial.suggest_categorical(name, list(encoded))]
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log_float"):
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False))
        else:
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
    return _checked(plan.base, params, "search space")


def run_trial(trial: optuna.Trial, plan: Plan, data: Dataset) -> float:
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("heartbeat", time.time())
    config = plan.base.replace(**_params(trial, plan))
    trial.set_user_attr("config", config.to_dict())
    started = time.perf_counter()
    try:
        state = train(config, data, [_Reporter(trial)])
    except TrainingDiverged as err:
        # A config that diverges is a finding, not a crash: keep the best epoch before it, if any.
        trial.set_user_attr("diverged", str(err))
        return float(trial.user_attrs.get("val_accuracy", 0.0))
    finally:
        trial.set_user_attr("seconds", time.perf_counter() - started)
    return state.best_val_accuracy


def work(
    study: optuna.Study,
    plan: Plan,
    data: Dataset,
    stale_after: float = 120.0,
    poll: float = 2.0,
    on_trial_end: Callable[[], None] = lambda: None,
) -> None:
    """Claim and run trials until the study is done; wait for others' trials, recovering stale ones."""
    while True:
        reconcile(study, plan, stale_after)
        if _done(study, plan):
            return
        if plan.points is not None and not _counts(study)[TrialState.WAITING]:
            time.sleep(poll)  # the rest is running elsewhere; wait, and take over any that go stale
            continue
        trial = study.ask()
        claimed = study._storage.get_trial(trial._trial_id).system_attrs.get("fixed_params", {})
        if plan.points is not None and (
            "point" not in claimed or _taken_elsewhere(study, trial, int(claimed["point"]))
        ):
            # another worker claimed the last waiting point first, or is running this one already
            trial.set_user_attr("superseded", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        try:
            value = run_trial(trial, plan, data)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            study.tell(trial, value)
        on_trial_end()
