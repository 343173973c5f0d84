"""Searches on small data: results, retraining the best, crash recovery, parallel workers, PostgreSQL."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from fashion_mlp import data, search
from fashion_mlp.cli import main
from fashion_mlp.config import PRESETS, make_config
from fashion_mlp.train import train

GRID = "[grid]\nlr = [0.02, 0.05]\nhidden_sizes = [[32], [48, 16]]\n"
FAST = ["--epochs", "2", "--limit-train", "3000", "--no-download"]
# Trials of about a second, so that a worker starting a moment late still finds work to share.
SHARED = ["--epochs", "8", "--limit-train", "12000", "--no-download"]


def write_grid(folder: Path, text: str = GRID) -> Path:
    path = folder / "grid.toml"
    path.write_text(text)
    return path


def load_study(search_dir: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(search_dir / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def completed_points(study: optuna.Study) -> list[int]:
    return sorted(t.params["point"] for t in study.get_trials(states=(TrialState.COMPLETE,)))


def cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fashion_mlp", *map(str, argv)], capture_output=True, text=True
    )


def test_a_small_grid_completes_and_its_best_retrains_to_the_same_score(tmp_path, capsys):
    grid = write_grid(tmp_path)
    assert main(["search", "--grid", str(grid), "--dir", str(tmp_path / "s"), *FAST]) == 0
    out = capsys.readouterr().out
    assert "4/4 done" in out and "best val" in out
    study = load_study(tmp_path / "s", "grid-grid")
    assert completed_points(study) == [0, 1, 2, 3]
    rows = (tmp_path / "s" / "results.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("trial,state,point,label,lr,hidden_sizes,val_accuracy")
    assert (
        "| Config | Training Acc | Training Loss | Validation Acc | Validation Loss |"
        in (tmp_path / "s" / "results.md").read_text()
    )
    # best.toml is taken by train as it is, and retrains to the recorded score
    config = make_config("default", tmp_path / "s" / "best.toml")
    searched = data.load(None, config.val_size, config.split_seed, allow_download=False)  # its split
    subset = data.Dataset(
        data.Split(searched.train.x[:3000], searched.train.y[:3000]), searched.val, searched.test
    )
    assert train(config, subset).best_val_accuracy == pytest.approx(study.best_value, abs=1e-9)


def test_the_report_sweep_is_table_1(tmp_path, capsys):
    plan = search.sweep_plan("report", PRESETS["report"])
    labels = [p.label for p in plan.points]
    assert len(labels) == 24 == len(search.REPORT_TABLE_1)
    assert labels[:4] == [
        "hidden_sizes=32x32",
        "hidden_sizes=64x64",
        "hidden_sizes=128x128",
        "hidden_sizes=256x256",
    ]
    assert labels[8:11] == ["lr=1", "lr=0.1", "lr=0.01"] and labels[-1] == "l2=0.0001"
    assert main(["search", "--sweep", "report", "--dir", str(tmp_path), "--epochs", "1",
                 "--limit-train", "500", "--no-download"]) == 0  # fmt: skip
    table = (tmp_path / "results.md").read_text()
    assert "Report: Train Acc" in table and "| lr=0.01 |" in table
    assert "| 0.3973 | 2.2986 | 0.3947 | 2.2982 |" in table  # the report's own row beside ours
    assert table.count("\n| ") == 25


def test_tpe_runs_its_trials_with_pruning(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text(
        "[space]\nlr = {low = 0.01, high = 0.2, log = true}\nhidden_sizes = {choices = [[32], [64]]}\n"
    )
    assert main(["search", "--trials", "6", "--space", str(space), "--dir", str(tmp_path / "t"), *FAST]) == 0
    study = load_study(tmp_path / "t", "tpe-space")
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) >= 6
    assert (tmp_path / "t" / "best.toml").is_file()


def test_kill_9_then_rerun_loses_nothing_and_runs_each_point_once(tmp_path):
    grid = write_grid(tmp_path, "[grid]\nlr = [0.02, 0.05, 0.1]\nhidden_sizes = [[32], [64]]\n")
    argv = [sys.executable, "-m", "fashion_mlp", "search", "--grid", str(grid), "--dir", str(tmp_path / "s"),
            "--epochs", "4", "--limit-train", "8000", "--no-download"]  # fmt: skip
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.3)
        if (tmp_path / "s" / "journal.log").exists():
            trials = load_study(tmp_path / "s", "grid-grid").get_trials()
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            if len(done) >= 2 and any(t.state == TrialState.RUNNING for t in trials):
                break
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = {t.number: t.value for t in load_study(tmp_path / "s", "grid-grid").get_trials()
              if t.state == TrialState.COMPLETE}  # fmt: skip
    assert 2 <= len(before) < 6
    assert subprocess.run(argv, capture_output=True).returncode == 0
    study = load_study(tmp_path / "s", "grid-grid")
    assert completed_points(study) == [0, 1, 2, 3, 4, 5]  # each point finished exactly once
    after = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert all(after[n] == v for n, v in before.items())  # finished trials kept as they were
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 1  # the one cut off, run again


def test_two_workers_cover_the_grid_with_nothing_lost(tmp_path):
    grid = write_grid(tmp_path, "[grid]\nlr = [0.02, 0.05, 0.1]\nhidden_sizes = [[32], [64]]\n")
    result = cli("search", "--grid", grid, "--dir", tmp_path / "s", "--workers", "2", *SHARED)
    assert result.returncode == 0, result.stderr
    study = load_study(tmp_path / "s", "grid-grid")
    assert completed_points(study) == [0, 1, 2, 3, 4, 5]
    assert len({t.user_attrs["pid"] for t in study.get_trials(states=(TrialState.COMPLETE,))}) == 2


@pytest.mark.parametrize(
    "extra, text, message",
    [
        (["--grid"], "[grid]\nlearning_rate = [0.1]\n", "unknown hyperparameter 'learning_rate'"),
        (["--grid"], "[grid]\n", "the grid is empty"),
        (["--grid"], "[grid]\nlr = []\n", "the grid is empty"),
        (["--grid"], "[grid]\nlr = [-1.0]\n", "learning rate must be positive"),
        (["--sweep", "table9"], None, "unknown sweep 'table9'"),
        (["--trials", "3"], None, "--trials needs --space"),
    ],
)
def test_bad_searches_are_one_line_errors(tmp_path, capsys, extra, text, message):
    argv = ["search", *extra] + ([str(write_grid(tmp_path, text))] if text is not None else [])
    assert main([*argv, "--dir", str(tmp_path / "s"), "--no-download"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_an_unreachable_storage_is_a_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    result = cli("search", "--grid", write_grid(tmp_path), "--storage",
                 f"postgresql://fm:secret@127.0.0.1:{port}/none", *FAST)  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert (
        "cannot use storage postgresql://fm:***@127.0.0.1" in result.stderr and "secret" not in result.stderr
    )


# ---------------------------------------------------------------- PostgreSQL, on a throwaway cluster


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or (
        [shutil.which(name)] if shutil.which(name) else []
    )
    return found[-1] if found else None


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    """A PostgreSQL cluster on 127.0.0.1 for this module only; `make test` installs Debian's postgresql."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL server here (initdb not found); `make test` installs Debian's postgresql")
    root = Path(tempfile.mkdtemp(prefix="fashion-mlp-pg-"))  # not under pytest's root-only folder
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use Debian's postgres user
        shutil.chown(root, "postgres")
        os.chmod(root, 0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = root / "data"
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    for command in (
        [initdb, "-D", str(data_dir), "-A", "trust", "-U", "postgres"],
        [pg_ctl, "-D", str(data_dir), "-o", options, "-l", str(root / "log"), "-w", "start"],
    ):
        result = subprocess.run([*as_user, *command], capture_output=True, text=True)
        assert result.returncode == 0, f"{command[0]} failed: {result.stdout}{result.stderr}"
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data_dir), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def test_two_machines_share_one_study_through_postgresql(tmp_path, postgres_url):
    grid = write_grid(tmp_path, "[grid]\nlr = [0.02, 0.05, 0.1]\nhidden_sizes = [[32], [64]]\n")
    machines = [
        subprocess.Popen(
            [sys.executable, "-m", "fashion_mlp", "search", "--grid", str(grid), "--storage", postgres_url,
             "--study", "shared", "--dir", str(tmp_path / f"machine{i}"), *SHARED],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    for machine in machines:
        _, err = machine.communicate(timeout=300)
        assert machine.returncode == 0, err
    study = optuna.load_study(
        study_name="shared", storage=postgres_url.replace("postgresql:", "postgresql+psycopg:")
    )
    assert completed_points(study) == [0, 1, 2, 3, 4, 5]
    assert len({t.user_attrs["pid"] for t in study.get_trials(states=(TrialState.COMPLETE,))}) == 2
    assert (tmp_path / "machine0" / "results.csv").read_text().count("\n") == 7


def test_a_diverging_config_is_recorded_not_fatal(tmp_path, capsys):
    grid = write_grid(tmp_path, "[grid]\nlr = [0.05, 50.0]\nmomentum = [0.9]\n")
    assert main(["search", "--grid", str(grid), "--dir", str(tmp_path / "s"), *FAST]) == 0
    rows = (tmp_path / "s" / "results.csv").read_text().splitlines()
    assert rows[1].split(",")[1] == "complete" and rows[2].split(",")[1] == "diverged"
    assert "lr=50, momentum=0.9 (diverged)" in (tmp_path / "s" / "results.md").read_text()
    study = load_study(tmp_path / "s", "grid-grid")
    assert "lower the learning rate" in study.trials[1].user_attrs["diverged"]


def test_a_cut_off_tpe_trial_is_retried_once_per_attempt(tmp_path):
    storage = search.open_storage(None, tmp_path)
    plan = search.tpe_plan(_space(tmp_path), 4, PRESETS["validation"])
    study = search.open_study(plan, storage, "retry")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.01, 0.2, log=True)})
    study._storage.set_trial_user_attr(trial._trial_id, "pid", 2**22 + 12345)  # a process that is gone
    study._storage.set_trial_user_attr(trial._trial_id, "host", socket.gethostname())
    for _ in range(2):  # reconciling twice enqueues one retry, not two
        search.reconcile(study, plan, stale_after=3600)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["attempt"] == 2
    assert study.get_trials(states=(TrialState.FAIL,))[0].number == trial.number


def _space(folder: Path) -> Path:
    path = folder / "space.toml"
    path.write_text("[space]\nlr = {low = 0.01, high = 0.2, log = true}\n")
    return path


def test_only_a_schema_race_is_retried():
    from fashion_mlp.search.engine import _schema_race

    class ProgrammingError(Exception):
        pass

    class OperationalError(Exception):
        pass

    assert _schema_race(
        ProgrammingError('(psycopg.errors.DuplicateObject) type "studydirection" already exists')
    )
    assert _schema_race(ProgrammingError("duplicate key value violates unique constraint"))
    assert not _schema_race(OperationalError("connection failed: Connection refused"))


def test_a_grid_over_convolution_widths_trains_a_cnn_and_an_mlp(tmp_path):
    grid = write_grid(tmp_path, "[grid]\nconv = [[], [4, 8]]\nhidden_sizes = [[16]]\n")
    argv = ["search", "--grid", str(grid), "--dir", str(tmp_path / "s"), "--epochs", "1"]
    assert main([*argv, "--limit-train", "1000", "--no-download"]) == 0
    study = load_study(tmp_path / "s", "grid-grid")
    configs = [t.user_attrs["config"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert sorted(c["conv"] for c in configs) == [[], [4, 8]]
    assert "conv=4x8" in (tmp_path / "s" / "results.md").read_text()
