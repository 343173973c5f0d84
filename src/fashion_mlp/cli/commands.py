"""What each subcommand does: build a config, call the API, print for a person."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import checkpoint, data, runs
from ..config import make_config
from ..evaluation import evaluate
from ..files import read_json
from ..train import Callback, EpochRecord, TrainState, steps_per_epoch
from .parser import CONFIG_FLAGS, UsageError


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
        for name in ("hidden_sizes", "conv", "blocks"):
            if overrides[name] is not None:
                overrides[name] = tuple(overrides[name])
        config = make_config(args.preset, args.config, **overrides)
        run_dir = runs.new_run_dir(args.runs_dir, args.name)
    dataset = _load_data(args, config.val_size, config.split_seed)
    progress: list[Callback] = [] if args.quiet else [Progress(config, len(dataset.train))]
    print(f"run folder: {run_dir}")
    test_logits: list[np.ndarray] = []
    summary = runs.run(config, dataset, run_dir, progress, state, test_logits)
    chosen = (
        f"best epoch {summary['best_epoch']}: val accuracy {summary['val_accuracy']:.4f}"
        if summary["val_accuracy"] is not None
        else f"last epoch {summary['best_epoch']} (no validation set)"
    )
    print(
        f"{chosen}; test accuracy {summary['test_accuracy']:.4f}, test loss {summary['test_loss']:.4f}; "
        f"{summary['train_samples_per_second']:,.0f} training samples/s, "
        f"{summary['wall_seconds']:.1f} s in all"
    )
    if not args.no_plots:
        from .. import figures, report

        figures.draw(run_dir, dataset.test, test_logits[0])
        _, page = report.write(run_dir)
        print(f"figures in {run_dir / 'figures'}; report: {page}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .. import search

    if args.trials is not None and args.space is None:
        raise UsageError("search: --trials needs --space FILE.toml")
    preset = args.preset or ("report" if args.sweep == "report" else "validation")
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
        dataset = search.without_test(_load_data(args, base.val_size, base.split_seed), args.limit_train)
        search.work(study, plan, dataset, args.stale_after, on_trial_end=report_progress)
    if not args.worker:
        paths = search.write_results(study, plan, search_dir, time.time() - started)
        print(search.progress_line(study, plan, started))
        print("results: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_workers(args: argparse.Namespace, study: Any, plan: Any, started: float) -> None:
    """Run --workers processes of this same search, printing progress whenever a trial finishes."""
    from .. import search

    last = ""

    def show() -> None:
        nonlocal last
        line = search.progress_line(study, plan, started)
        if line.split(";")[0] != last:
            print(line, flush=True)
            last = line.split(";")[0]

    search.run_workers(["-m", "fashion_mlp", *_search_argv(args), "--worker"], args.workers, show)


def _search_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker of this search."""
    argv = ["search", "--study", args.study, "--stale-after", str(args.stale_after)]
    for flag, value in (
        ("--sweep", args.sweep),
        ("--grid", args.grid),
        ("--trials", args.trials),
        ("--space", args.space),
        ("--preset", args.preset),
        ("--config", args.config),
        ("--epochs", args.epochs),
        ("--storage", args.storage),
        ("--dir", args.dir),
        ("--limit-train", args.limit_train),
        ("--data-dir", args.data_dir),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--no-download"] if args.no_download else [])


def cmd_plot(args: argparse.Namespace) -> int:
    from .. import figures

    _check_run_dir(args.run_dir)
    paths = figures.draw(args.run_dir, _load_run_data(args).test)
    for path in paths.values():
        print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .. import figures, report

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
    config = read_json(args.run_dir / "config.json")
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
        val = (
            f"  val loss {record.val_loss:.4f} acc {record.val_accuracy:.4f}"
            if record.val_accuracy is not None
            else ""
        )
        print(
            f"epoch {record.epoch:>3}/{self.config.epochs}  train loss {record.train_loss:.4f} "
            f"acc {record.train_accuracy:.4f}{val}  lr {record.lr:.4g}  {record.seconds:.2f} s"
            + ("  *best" if improved and val else ""),
            flush=True,
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    loaded = checkpoint.load(args.checkpoint)
    config = loaded.meta.get("config", {})
    dataset = _load_data(args, config.get("val_size", 15_000), config.get("split_seed", 0))
    split = getattr(dataset, args.split)
    if not len(split):
        raise UsageError(
            f"{args.checkpoint}: its model was trained with no validation set (val_size 0); "
            "evaluate it on --split test or train"
        )
    if loaded.model.n_inputs != split.x.shape[1]:
        raise UsageError(
            f"{args.checkpoint}: a model of {loaded.model.n_inputs} inputs; Fashion-MNIST has "
            f"{split.x.shape[1]} pixels"
        )
    x, norm = split.x, loaded.meta["normalisation"]
    if norm != data.NORMALISATION:  # the model was trained on inputs prepared otherwise: prepare them so
        x = ((data.pixels(x) - norm["offset"]) / norm["scale"]).astype(np.float32)
    result = evaluate(loaded.model, x, split.y)
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
    from ..images import load_image

    loaded = checkpoint.load(args.checkpoint)
    names = loaded.meta.get("class_names", data.CLASS_NAMES)
    images = np.stack([load_image(path) for path in args.images])
    probabilities = loaded.inference().predict_proba(images.reshape(len(images), -1).astype(np.float32))
    for path, probs in zip(args.images, probabilities):
        top = np.argsort(probs)[::-1][: args.top_k]
        ranked = ", ".join(f"{names[i]} {probs[i]:.3f}" for i in top)
        print(f"{path}: {ranked}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_checkpoint

    written = export_checkpoint(args.checkpoint, args.output)
    print(f"{written}: ONNX model of {args.checkpoint} ({written.stat().st_size:,} bytes)")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from ..config import PRESETS
    from ..nn import MLP, TOLERANCE, Network, check_gradients, cnn_records

    preset = PRESETS[args.preset]
    hidden = preset.hidden_sizes if args.hidden is None else tuple(args.hidden)
    conv = preset.conv if args.conv is None else tuple(args.conv)
    blocks = preset.blocks if args.blocks is None else tuple(args.blocks)
    if blocks and len(blocks) != len(conv):
        raise UsageError(f"gradcheck: --blocks needs one count per convolution, {len(conv)} here")
    dropout = preset.dropout if args.dropout is None else args.dropout
    centred = preset.centre_inputs if args.centre_inputs is None else args.centre_inputs
    rng = np.random.default_rng(args.seed)
    mean = rng.uniform(-1, 0, 784) if centred else None
    model: Network
    if conv:
        records = cnn_records(
            (28, 28, 1),
            conv,
            hidden,
            10,
            dropout,
            centred=centred,
            blocks=blocks,
            global_pool=preset.global_pool,
            views=preset.views,
        )
        model = Network(records, 784, rng, dtype=np.float64, input_mean=mean)
    else:
        model = MLP([784, *hidden, 10], rng, dropout=dropout, dtype=np.float64, input_mean=mean)
    shape = model.describe()
    for p in model.parameters():
        p.value += 0.01 * rng.standard_normal(p.value.shape)  # non-zero biases, as after training
    x = rng.uniform(-1, 1, (args.batch, 784))
    y = rng.integers(0, 10, args.batch)
    setup = f"dropout {dropout}" + (", centred inputs" if centred else "")
    if args.label_smoothing:
        setup += f", label smoothing {args.label_smoothing}"
    print(f"gradient check of {shape} ({setup}) on {args.batch} random images, float64")
    results = check_gradients(model, x, y, args.label_smoothing, args.entries, rng=rng)
    for r in results:
        what = "dLoss/dinput (whole network)" if r.name == "input" else r.name
        verdict = "PASS" if r.passed else "FAIL"
        verdict += f" ({r.kinks} at a kink, left out)" if r.kinks else ""
        print(
            f"  {what:<30} {r.entries:>6} entries  max relative error {r.max_relative_error:.2e}  {verdict}"
        )
    failed = [r.name for r in results if not r.passed]
    if failed:
        print(f"FAIL: {', '.join(failed)} disagree with finite differences (tolerance {TOLERANCE:g})")
        return 1
    print(f"PASS: every gradient agrees with central differences to within {TOLERANCE:g}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from ..extras import require

    for module in ("starlette", "uvicorn", "orjson", "python_multipart"):
        require(module, "serve")
    if args.metrics:
        require("prometheus_client", "serve")
    from ..serve.app import Limits
    from ..serve.server import serve

    port = args.port
    if port is None:
        text = os.environ.get("PORT", "").strip()
        if not text:
            port = 8000
        elif text.isdigit() and int(text) <= 65535:
            port = int(text)
        else:
            raise UsageError(f"serve: PORT={text!r} in the environment is not a port from 0 to 65535")
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_rows=args.max_rows,
        max_image_pixels=args.max_image_pixels,
        max_concurrency=args.max_concurrency,
        read_timeout_s=args.read_timeout,
        infer_timeout_s=args.infer_timeout,
        max_connections=args.max_connections,
        max_header_bytes=args.max_header_bytes,
        keep_alive_s=args.keep_alive,
        linger_s=args.linger_seconds,
        linger_idle_s=args.linger_idle_seconds,
    )
    serve(
        args.checkpoints,
        args.host,
        port,
        limits,
        lambda m: print(m, flush=True),
        grace_s=args.grace_seconds,
        metrics=args.metrics,
        access_log=args.access_log,
    )
    return 0
