"""The fashion-mlp command: parses arguments, builds a config, calls the API, prints for a person."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from . import __version__, checkpoint, data, figures, report, runs
from .config import OPTIMIZERS, PRESETS, make_config
from .evaluation import evaluate
from .nn import INITS, SCHEDULES
from .train import Callback, EpochRecord, TrainingDiverged, TrainState, steps_per_epoch


class UsageError(Exception):
    """A bad flag, value or path: one line on stderr, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.handler(args) or 0)
    except UsageError as err:
        return _fail(str(err), 2)
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError) as err:
        return _fail(str(err), 2)
    except TrainingDiverged as err:
        return _fail(str(err), 1)
    except OSError as err:
        return _fail(str(err), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _fail(message: str, code: int) -> int:
    print(f"fashion-mlp: error: {message}", file=sys.stderr)
    return code


def build_parser() -> Parser:
    parser = Parser(prog="fashion-mlp", description="A from-scratch NumPy MLP for Fashion-MNIST.")
    parser.add_argument("--version", action="version", version=f"fashion-mlp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = commands.add_parser("data", help="find, download and verify Fashion-MNIST")
    _add_data_options(p)
    p.set_defaults(handler=cmd_data)

    p = commands.add_parser("train", help="train a network, evaluate it on the test set, write a run")
    _add_train_options(p)
    _add_data_options(p)
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("search", help="tune hyperparameters on validation accuracy (Optuna)")
    _add_search_options(p)
    _add_data_options(p)
    p.set_defaults(handler=cmd_search)

    p = commands.add_parser("plot", help="draw a run's figures into RUN_DIR/figures/")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by train")
    _add_data_options(p)
    p.set_defaults(handler=cmd_plot)

    p = commands.add_parser("report", help="write RUN_DIR/report.md and a self-contained report.html")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by train")
    p.add_argument(
        "--search",
        type=Path,
        metavar="SEARCH_DIR",
        help="also include the results table of this hyperparameter search",
    )
    _add_data_options(p)
    p.set_defaults(handler=cmd_report)

    p = commands.add_parser("evaluate", help="score a checkpoint on a split")
    p.add_argument("checkpoint", type=Path, help="a .npz checkpoint written by train")
    p.add_argument(
        "--split",
        choices=("test", "val", "train"),
        default="test",
        help="which split to score (default: test); val and train are the run's own split",
    )
    _add_data_options(p)
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("predict", help="classify PNG or JPEG images")
    p.add_argument("checkpoint", type=Path, help="a .npz checkpoint written by train")
    p.add_argument("images", type=Path, nargs="+", help="PNG or JPEG files of any size and colour")
    p.add_argument(
        "--top-k",
        type=_int_in(1, 10),
        default=1,
        metavar="K",
        help="print the K most likely classes of each image (1-10, default 1)",
    )
    p.set_defaults(handler=cmd_predict)
    return parser


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="folder with the four Fashion-MNIST files (default: $FASHION_MNIST_DIR, "
        "the user cache, then /usr/share/datasets/fashion-mnist)",
    )
    p.add_argument(
        "--no-download", action="store_true", help="fail rather than download when the data is not found"
    )


def _add_train_options(p: argparse.ArgumentParser) -> None:
    run = p.add_argument_group("run")
    run.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="starting settings: 'default' is our best recipe, 'report' the report's "
        "Table 2 (default: default)",
    )
    run.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="a TOML file of settings (names as below, with underscores); flags override it",
    )
    run.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        metavar="DIR",
        help="where run folders go (default: runs)",
    )
    run.add_argument("--name", help="the run folder's name (default: a timestamp)")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last.npz; other settings are ignored",
    )
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    run.add_argument(
        "--no-plots",
        action="store_true",
        help="skip the figures and report.html that train otherwise writes at its end",
    )

    net = p.add_argument_group("network and training (each overrides the preset)")
    net.add_argument(
        "--hidden",
        type=_int_in(1, 16384),
        nargs="+",
        dest="hidden_sizes",
        metavar="N",
        help="hidden layer widths, e.g. --hidden 128 128 (two ReLU layers)",
    )
    net.add_argument(
        "--init", choices=list(INITS), help="weight initialisation: he, or small = N(0, 0.01^2) as the report"
    )
    net.add_argument("--epochs", type=int, help="passes over the training set")
    net.add_argument("--batch-size", type=int, help="images per mini-batch step")
    net.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (with momentum) or adam")
    net.add_argument("--lr", type=float, help="initial learning rate")
    net.add_argument("--momentum", type=float, help="SGD momentum mu in v = mu*v + lr*g")
    net.add_argument(
        "--nesterov", action=argparse.BooleanOptionalAction, default=None, help="Nesterov momentum"
    )
    net.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="learning-rate schedule: inverse_time lr/(1+decay*step), constant, "
        "step (x gamma every --step-epochs) or cosine",
    )
    net.add_argument("--decay", type=float, help="inverse_time decay per mini-batch step")
    net.add_argument("--warmup-epochs", type=float, help="epochs of linear warm-up before the schedule")
    net.add_argument("--step-epochs", type=int, help="step schedule: epochs between drops")
    net.add_argument("--gamma", type=float, help="step schedule: factor at each drop")
    net.add_argument("--l2", type=float, help="L2 strength on weights (not biases)")
    net.add_argument("--dropout", type=float, help="dropout rate after each hidden layer, in [0, 1)")
    net.add_argument("--input-dropout", type=float, help="dropout rate of the input pixels, in [0, 1)")
    net.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips and shifts of up to --max-shift pixels",
    )
    net.add_argument("--max-shift", type=int, help="augmentation shift in pixels, 0-8 (0: flips only)")
    net.add_argument(
        "--label-smoothing",
        type=float,
        help="train towards (1 - e) * onehot + e / 10 instead of onehot, e in [0, 1)",
    )
    net.add_argument(
        "--patience",
        type=int,
        help="stop after this many epochs without a better validation accuracy (0: never)",
    )
    net.add_argument("--val-size", type=int, help="images held out of the 60,000 for validation")
    net.add_argument("--split-seed", type=int, help="seed of the train/validation split")
    net.add_argument("--seed", type=int, help="seed of initialisation, shuffling and dropout")


def _add_search_options(p: argparse.ArgumentParser) -> None:
    what = p.add_argument_group("what to search (choose one)").add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--sweep",
        metavar="NAME",
        help="one factor at a time around the base; 'report' is the report's Table 1 (24 runs)",
    )
    what.add_argument(
        "--grid",
        type=Path,
        metavar="FILE.toml",
        help="every combination of the values listed, e.g. lr = [0.1, 1.0] under [grid]",
    )
    what.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="N trials sampled by TPE from the ranges in --space, pruning laggards early",
    )
    p.add_argument(
        "--space",
        type=Path,
        metavar="FILE.toml",
        help="with --trials: ranges, e.g. lr = {low = 0.01, high = 1.0, log = true}",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="the base config each trial starts from (default: report for --sweep report, else default)",
    )
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="base settings from a TOML file")
    p.add_argument("--epochs", type=int, help="override the base config's epochs")
    p.add_argument(
        "--study",
        help="the study's name; machines sharing a --storage and a name split the work "
        "(default: from the search, e.g. sweep-report)",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="a shared database, e.g. postgresql://user@host/db (default: a journal file in "
        "the search directory, safe for several processes on one machine)",
    )
    p.add_argument(
        "--dir",
        type=Path,
        metavar="SEARCH_DIR",
        help="where results.csv, results.md and best.toml go (default: searches/<study>)",
    )
    p.add_argument(
        "--workers",
        type=_int_in(1, 64),
        default=1,
        help="worker processes on this machine, each with one BLAS thread (default 1)",
    )
    p.add_argument(
        "--limit-train",
        type=int,
        metavar="N",
        help="train each trial on only the first N training images (quick searches)",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="a running trial silent this long (or whose process is gone, on this machine) "
        "is run again (default 120)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


CONFIG_FLAGS = (
    "hidden_sizes", "init", "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov",
    "schedule", "decay", "warmup_epochs", "step_epochs", "gamma", "l2", "dropout", "input_dropout", "augment",
    "max_shift", "label_smoothing", "patience", "val_size", "split_seed", "seed",
)  # fmt: skip


def _int_in(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _load_data(args: argparse.Namespace, val_size: int = 15_000, split_seed: int = 0) -> data.Dataset:
    def log(message: str) -> None:
        print(message, file=sys.stderr)

    return data.load(args.data_dir, val_size, split_seed, not args.no_download, log)


def cmd_data(args: argparse.Namespace) -> int:
    located = data.locate(args.data_dir, not args.no_download, lambda m: print(m, file=sys.stderr))
    data.verify(located)
    print(f"Fashion-MNIST found: {located.source}")
    for key, path in located.paths.items():
        print(f"  {key:<13} {path}  verified (SHA-256 of decompressed data)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    state: TrainState | None = None
    if args.resume is not None:
        run_dir = args.resume
        if not (run_dir / "last.npz").is_file():
            raise UsageError(f"{run_dir}: no last.npz to resume from")
        state = runs.load_state(run_dir)
        config = state.config
    else:
        overrides = {name: getattr(args, name) for name in CONFIG_FLAGS}
        if overrides["hidden_sizes"] is not None:
            overrides["hidden_sizes"] = tuple(overrides["hidden_sizes"])
        config = make_config(args.preset, args.config, **overrides)
        run_dir = runs.new_run_dir(args.runs_dir, args.name)
    dataset = _load_data(args, config.val_size, config.split_seed)
    progress: list[Callback] = [] if args.quiet else [Progress(config, len(dataset.train))]
    print(f"run folder: {run_dir}")
    summary = runs.run(config, dataset, run_dir, progress, state)
    print(
        f"best epoch {summary['best_epoch']}: val accuracy {summary['val_accuracy']:.4f}; "
        f"test accuracy {summary['test_accuracy']:.4f}, test loss {summary['test_loss']:.4f}; "
        f"{summary['train_samples_per_second']:,.0f} training samples/s, "
        f"{summary['wall_seconds']:.1f} s in all"
    )
    if not args.no_plots:
        figures.draw(run_dir, dataset.test)
        _, page = report.write(run_dir)
        print(f"figures in {run_dir / 'figures'}; report: {page}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from . import search

    if args.trials is not None and args.space is None:
        raise UsageError("search: --trials needs --space FILE.toml")
    preset = args.preset or ("report" if args.sweep == "report" else "default")
    base = make_config(preset, args.config, epochs=args.epochs)
    if args.sweep is not None:
        plan, study_name = search.sweep_plan(args.sweep, base), f"sweep-{args.sweep}"
    elif args.grid is not None:
        plan, study_name = search.grid_plan(args.grid, base), f"grid-{args.grid.stem}"
    else:
        plan, study_name = search.tpe_plan(args.space, args.trials, base), f"tpe-{args.space.stem}"
    study_name = args.study or study_name
    search_dir = args.dir or Path("searches") / study_name
    study = search.open_study(plan, search.open_storage(args.storage, search_dir), study_name)
    started = time.time()
    search.reconcile(study, plan, args.stale_after)  # enqueue the work before any worker starts

    def report_progress() -> None:
        if not args.worker:
            print(search.progress_line(study, plan, started), flush=True)

    if args.workers > 1:
        args.study, args.dir = study_name, search_dir  # every worker joins this study
        _run_workers(args, study, plan, started)
    else:
        dataset = _load_data(args, base.val_size, base.split_seed)
        if args.limit_train:
            dataset.train = data.Split(
                dataset.train.x[: args.limit_train], dataset.train.y[: args.limit_train]
            )
        dataset.test = data.Split(dataset.test.x[:0], dataset.test.y[:0])  # a search never sees the test set
        search.work(study, plan, dataset, args.stale_after, on_trial_end=report_progress)
    if not args.worker:
        paths = search.write_results(study, plan, search_dir, time.time() - started)
        print(search.progress_line(study, plan, started))
        print("results: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_workers(args: argparse.Namespace, study: Any, plan: Any, started: float) -> None:
    """Start --workers processes of this same command, one BLAS thread each; show progress until done."""
    import os
    import subprocess

    from . import search

    argv = [sys.executable, "-m", "fashion_mlp", *_search_argv(args), "--worker", "--workers", "1"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    children = [subprocess.Popen(argv, env=env) for _ in range(args.workers)]
    try:
        last = ""
        while any(child.poll() is None for child in children):
            line = search.progress_line(study, plan, started)
            if line.split(";")[0] != last:
                print(line, flush=True)
                last = line.split(";")[0]
            time.sleep(2)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            child.wait()
    failed = [child.returncode for child in children if child.returncode]
    if failed:
        raise OSError(f"{len(failed)} of {args.workers} workers failed (exit codes {failed})")


def _search_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker of this search."""
    argv = ["search", "--study", args.study, "--stale-after", str(args.stale_after)]
    for flag, value in (("--sweep", args.sweep), ("--grid", args.grid), ("--trials", args.trials),
                        ("--space", args.space), ("--preset", args.preset), ("--config", args.config),
                        ("--epochs", args.epochs), ("--storage", args.storage), ("--dir", args.dir),
                        ("--limit-train", args.limit_train), ("--data-dir", args.data_dir)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--no-download"] if args.no_download else [])


def cmd_plot(args: argparse.Namespace) -> int:
    _check_run_dir(args.run_dir)
    paths = figures.draw(args.run_dir, _load_run_data(args).test)
    for path in paths.values():
        print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _check_run_dir(args.run_dir)
    if not all(path.is_file() for path in figures.figure_paths(args.run_dir).values()):
        figures.draw(args.run_dir, _load_run_data(args).test)
    for path in report.write(args.run_dir, args.search):
        print(path)
    return 0


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")


def _load_run_data(args: argparse.Namespace) -> data.Dataset:
    config = runs.read_json(args.run_dir / "config.json")
    return _load_data(args, config.get("val_size", 15_000), config.get("split_seed", 0))


class Progress(Callback):
    """A tqdm bar per epoch on a terminal; one plain line per epoch otherwise."""

    def __init__(self, config: Any, n_train: int) -> None:
        self.config = config
        self.steps = steps_per_epoch(config, n_train)
        self.bar: Any = None
        self.interactive = sys.stderr.isatty()

    def on_step(self, state: TrainState, loss: float) -> None:
        if not self.interactive:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.steps,
                desc=f"epoch {state.epoch + 1}/{self.config.epochs}",
                leave=False,
                unit="step",
            )
        self.bar.update(1)
        if state.step % 20 == 0:
            self.bar.set_postfix(loss=f"{loss:.4f}")

    def on_epoch_end(self, state: TrainState, record: EpochRecord, improved: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        print(
            f"epoch {record.epoch:>3}/{self.config.epochs}  train loss {record.train_loss:.4f} "
            f"acc {record.train_accuracy:.4f}  val loss {record.val_loss:.4f} "
            f"acc {record.val_accuracy:.4f}  lr {record.lr:.4g}  {record.seconds:.2f} s"
            + ("  *best" if improved else ""),
            flush=True,
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    loaded = checkpoint.load(args.checkpoint)
    config = loaded.meta.get("config", {})
    dataset = _load_data(args, config.get("val_size", 15_000), config.get("split_seed", 0))
    split = getattr(dataset, args.split)
    result = evaluate(loaded.model, split.x, split.y)
    print(f"{args.split}: accuracy {result.accuracy:.4f}, loss {result.loss:.4f} ({len(split):,} images)")
    print("per-class accuracy:")
    for name, acc in zip(data.CLASS_NAMES, result.per_class_accuracy):
        print(f"  {name:<12} {acc:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    print("  " + " ".join(f"{i:>5}" for i in range(len(data.CLASS_NAMES))))
    for i, row in enumerate(result.confusion):
        print(f"{i:>2}" + " ".join(f"{n:>5}" for n in row) + f"  {data.CLASS_NAMES[i]}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .images import load_image

    loaded = checkpoint.load(args.checkpoint)
    norm = loaded.meta.get("normalisation", runs.NORMALISATION)
    names = loaded.meta.get("class_names", data.CLASS_NAMES)
    images = np.stack([load_image(path) for path in args.images])
    x = (images.reshape(len(images), -1).astype(np.float32) - norm["offset"]) / norm["scale"]
    probabilities = loaded.model.predict_proba(x)
    for path, probs in zip(args.images, probabilities):
        top = np.argsort(probs)[::-1][: args.top_k]
        ranked = ", ".join(f"{names[i]} {probs[i]:.3f}" for i in top)
        print(f"{path}: {ranked}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
