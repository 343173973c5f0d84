"""The command line's grammar: every subcommand, option and help text; no behaviour."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..config import HARDEST_BY, OPTIMIZERS, PRESETS
from ..errors import UserError
from ..nn import INITS, SCHEDULES, VIEWS

DEBUG_ENV = "FASHION_MLP_DEBUG"


class UsageError(UserError):
    """A bad flag, value or path: one line on stderr, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def build_parser() -> Parser:
    parser = Parser(prog="fashion-mlp", description="A from-scratch NumPy MLP for Fashion-MNIST.")
    parser.add_argument("--version", action="version", version=f"fashion-mlp {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"on an internal error, print the traceback (or set {DEBUG_ENV}=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = commands.add_parser("data", help="find, download and verify Fashion-MNIST")
    _add_data_options(p)
    p.set_defaults(handler="data")

    p = commands.add_parser("train", help="train a network, evaluate it on the test set, write a run")
    _add_train_options(p)
    _add_data_options(p)
    p.set_defaults(handler="train")

    p = commands.add_parser("search", help="tune hyperparameters on validation accuracy (Optuna)")
    _add_search_options(p)
    _add_data_options(p)
    p.set_defaults(handler="search")

    p = commands.add_parser("plot", help="draw a run's figures into RUN_DIR/figures/")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by train")
    _add_data_options(p)
    p.set_defaults(handler="plot")

    p = commands.add_parser("report", help="write RUN_DIR/report.md and a self-contained report.html")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by train")
    p.add_argument(
        "--search",
        type=Path,
        metavar="SEARCH_DIR",
        help="also include the results table of this hyperparameter search",
    )
    _add_data_options(p)
    p.set_defaults(handler="report")

    p = commands.add_parser("evaluate", help="score a checkpoint on a split")
    p.add_argument("checkpoint", type=Path, help="a .npz checkpoint written by train")
    p.add_argument(
        "--split",
        choices=("test", "val", "train"),
        default="test",
        help="which split to score (default: test); val and train are the run's own split",
    )
    _add_data_options(p)
    p.set_defaults(handler="evaluate")

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
    p.set_defaults(handler="predict")

    p = commands.add_parser(
        "export",
        help="write a checkpoint as an ONNX file that any ONNX runtime can run",
        description="Write CHECKPOINT as an ONNX graph (opset 21): input 'pixels' float32 [batch, 784] of "
        "raw values 0-255, outputs 'probabilities' float32 [batch, 10] and 'label' int64 [batch]; "
        "normalisation and input centring are folded into the first layer. Needs the onnx package: "
        "pip install 'fashion-mlp[onnx]'. The contract is in docs/formats.md.",
    )
    p.add_argument("checkpoint", type=Path, help="a .npz checkpoint written by train")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE.onnx",
        help="where to write (default: beside the checkpoint, same name, .onnx); written atomically",
    )
    p.set_defaults(handler="export")

    p = commands.add_parser(
        "gradcheck",
        help="check back-propagation against finite differences, as the tests do",
        description="Build a float64 network of the given shape, run one training forward and backward pass "
        "on a small random batch, and compare each gradient with central finite differences: a sample of "
        "entries of every parameter, and dLoss/dinput through the whole network. Prints each one's largest "
        "relative error and PASS or FAIL; exits 1 if any fails.",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="the architecture of this preset of train (default: default); the flags below override it",
    )
    p.add_argument(
        "--hidden",
        type=_int_in(1, 16384),
        nargs="+",
        metavar="N",
        help="hidden layer widths (default: the preset's)",
    )
    p.add_argument(
        "--conv",
        type=_int_in(1, 1024),
        nargs="*",
        metavar="N",
        help="convolution widths, as train's --conv (default: the preset's; --conv alone: none)",
    )
    p.add_argument(
        "--blocks",
        type=_int_in(0, 8),
        nargs="*",
        metavar="N",
        help="residual blocks after each convolution, as train's --blocks, one count per --conv width "
        "(default: the preset's; --blocks alone: none)",
    )
    p.add_argument(
        "--dropout",
        type=_float_in(0.0, 0.99),
        metavar="P",
        help="dropout rate after each hidden layer, masks held fixed (default: the preset's)",
    )
    p.add_argument(
        "--centre-inputs",
        action=argparse.BooleanOptionalAction,
        help="subtract an input mean first (default: as the preset does)",
    )
    p.add_argument(
        "--label-smoothing",
        type=_float_in(0.0, 0.99),
        default=0.0,
        metavar="E",
        help="check the smoothed loss's gradient (default 0)",
    )
    p.add_argument("--batch", type=_int_in(1, 64), default=4, help="random images in the batch (default 4)")
    p.add_argument(
        "--entries",
        type=_int_in(1, 10_000),
        default=20,
        help="entries of each parameter compared (default 20)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batch and entries (default 0)")
    p.set_defaults(handler="gradcheck")

    p = commands.add_parser(
        "serve",
        help="serve checkpoints over HTTP: the Open Inference Protocol (KServe v2) and a web page",
        description="Serve one or more checkpoints: the Open Inference Protocol's REST API under /v2 (as "
        "Triton, KServe and MLServer speak it; tritonclient works unchanged), POST /classify for a PNG or "
        "JPEG, and a page at / to drop a photo or draw one. Needs the serve extra: "
        "pip install 'fashion-mlp[serve]'. Binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument(
        "checkpoints",
        nargs="+",
        metavar="[NAME=]CHECKPOINT|DIR",
        help="a .npz checkpoint, served under NAME (default: its run folder's name); or a folder, whose "
        "every NAME.npz and NAME/best.npz is served under NAME (a runs/ folder, KServe's /mnt/models)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port",
        type=_int_in(0, 65535),
        default=None,
        help="port (default: $PORT where it is set, as Knative and Cloud Run set it, else 8000); 0 takes "
        "a free one, which the line 'serving ... on http://HOST:PORT/' names. Prometheus metrics are at "
        "/metrics on the same port",
    )
    p.add_argument(
        "--max-body-bytes",
        type=_int_in(1, 1 << 31),
        default=8 << 20,
        metavar="N",
        help="largest request body; past it 413 (default 8 MiB)",
    )
    p.add_argument(
        "--max-rows",
        type=_int_in(1, 1_000_000),
        default=4096,
        metavar="N",
        help="most images in one inference request (default 4096)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=_int_in(1, 1 << 31),
        default=50_000_000,
        metavar="N",
        help="largest image /classify decodes, width x height; a decompression bomb past it "
        "(default 50,000,000, as predict)",
    )
    p.add_argument(
        "--max-concurrency",
        type=_int_in(1, 100_000),
        default=256,
        metavar="N",
        help="requests in flight at once; past it 503 at once, never a growing queue (default 256)",
    )
    p.add_argument(
        "--max-connections",
        type=_int_in(1, 100_000),
        default=512,
        metavar="N",
        help="connections open at once, idle ones included; past it a new one gets 503 and is closed "
        "(default 512)",
    )
    p.add_argument(
        "--max-header-bytes",
        type=_int_in(256, 1 << 24),
        default=16 << 10,
        metavar="N",
        help="largest request line plus headers; past it 431 (default 16 KiB)",
    )
    p.add_argument(
        "--keep-alive",
        type=_float_in(0.1, 3600),
        default=5.0,
        metavar="SECONDS",
        help="how long an idle keep-alive connection stays open (default 5)",
    )
    p.add_argument(
        "--read-timeout",
        type=_float_in(0.1, 3600),
        default=30.0,
        metavar="SECONDS",
        help="longest a request's head may take to arrive, and again its body; past either 408 (default 30)",
    )
    p.add_argument(
        "--infer-timeout",
        type=_float_in(0.1, 3600),
        default=60.0,
        metavar="SECONDS",
        help="longest a request waits for the model; past it 503 (default 60)",
    )
    p.add_argument(
        "--linger-seconds",
        type=_float_in(0, 3600),
        default=30.0,
        metavar="SECONDS",
        help="after answering before a body has all arrived (413, 408, 503), the server reads and "
        "discards what the client still sends, so that the client gets to read the answer, for at most "
        "this long in all (default 30, as nginx's lingering_time) ...",
    )
    p.add_argument(
        "--linger-idle-seconds",
        type=_float_in(0.01, 3600),
        default=5.0,
        metavar="SECONDS",
        help="... and closes after this long without a byte (default 5, as nginx's lingering_timeout)",
    )
    p.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Prometheus metrics at GET /metrics on the server's port: requests by route, status and model, "
        "latency histograms, the batcher's batches, requests in flight, each model's info (default on)",
    )
    p.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log a line for each request (default on; --no-access-log, as MLServer's default, leaves "
        "the counts to /metrics and spends about a tenth less of the event loop's time a request)",
    )
    p.add_argument(
        "--grace-seconds",
        type=_float_in(0, 3600),
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM or Ctrl-C, the server stops accepting connections and lets the requests in "
        "flight finish for at most this long, then exits (default 30, Kubernetes' "
        "terminationGracePeriodSeconds)",
    )
    p.set_defaults(handler="serve")
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
        help="starting settings: 'default' is our best recipe, trained on all 60,000 training images; "
        "'validation' the same with 5,000 held out to score every epoch and keep the best; 'cnn' our "
        "convolutional network (8–9 minutes on two cores); 'report' the report's Table 2 "
        "(default: default)",
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
        "--conv",
        type=_int_in(1, 1024),
        nargs="*",
        metavar="N",
        help="convolutions before the hidden layers, one width each, e.g. --conv 32 64: each a 3x3 "
        "convolution, batch norm, ReLU and 2x2 max pooling; at most 2. With them, each hidden layer "
        "has batch norm too. --conv alone: none, a fully connected network",
    )
    net.add_argument(
        "--blocks",
        type=_int_in(0, 8),
        nargs="*",
        metavar="N",
        help="residual blocks after each convolution, one count per --conv width, e.g. --blocks 1 1: "
        "each two 3x3 convolutions with batch norm and the input added back, then ReLU. --blocks "
        "alone: none",
    )
    net.add_argument(
        "--global-pool",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each channel of the last map (global average pooling) instead of flattening it "
        "(needs --conv)",
    )
    net.add_argument(
        "--views",
        type=int,
        choices=list(VIEWS),
        help="test-time augmentation (needs --conv): answer each image as the mean of the logits of "
        "this many views of it: 1, the image alone; 2, and its mirror; 5, the image and its shifts by "
        "a pixel right, left, down and up; 10, those and the same of its mirror. It costs as many "
        "times the inference; training is unchanged",
    )
    net.add_argument(
        "--init",
        choices=list(INITS),
        help="how every weight (fully connected and convolutional) is drawn before training: he = "
        "N(0, 2/fan_in); small = N(0, 0.01^2) as the report; glorot, uniform in +-sqrt(6/(fan_in + "
        "fan_out)) as scikit-learn's MLPClassifier; uniform, in +-1/sqrt(fan_in) as PyTorch's layers "
        "draw by default",
    )
    net.add_argument("--epochs", type=int, help="passes over the training set")
    net.add_argument("--batch-size", type=int, help="images per mini-batch step")
    net.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (with momentum) or adam")
    net.add_argument("--lr", type=float, help="initial learning rate")
    net.add_argument("--momentum", type=float, help="SGD momentum mu in v = mu*v + lr*g")
    net.add_argument(
        "--nesterov", action=argparse.BooleanOptionalAction, default=None, help="Nesterov momentum"
    )
    net.add_argument("--beta1", type=float, help="Adam: decay rate of the mean gradient, in [0, 1)")
    net.add_argument("--beta2", type=float, help="Adam: decay rate of the mean squared gradient, in [0, 1)")
    net.add_argument("--eps", type=float, help="Adam: the epsilon added to the root mean square")
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
        "--centre-inputs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="subtract the training images' mean pixel from every input (default preset: on)",
    )
    net.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips and shifts of up to --max-shift pixels",
    )
    net.add_argument("--max-shift", type=int, help="augmentation shift in pixels, 0-8 (0: flips only)")
    net.add_argument(
        "--erase",
        type=float,
        metavar="P",
        help="with --augment, random erasing: the probability, in [0, 1], that an image has a random "
        "rectangle (2-40%% of its area) filled with one random shade (0: off)",
    )
    net.add_argument(
        "--label-smoothing",
        type=float,
        help="train towards (1 - e) * onehot + e / 10 instead of onehot, e in [0, 1)",
    )
    net.add_argument(
        "--hardest-of",
        type=int,
        metavar="N",
        help="each step scores N mini-batches of images and learns only from the batch-size of them "
        "with the highest loss (default preset: 3; 1: learn from every image)",
    )
    net.add_argument(
        "--hardest-by",
        choices=HARDEST_BY,
        help="how --hardest-of finds the hardest: scoring, a forward pass over all N batches; memory "
        "(the resnet preset's), each image's loss when a step last learned from it, so that only the "
        "batch it learns from goes forward, a quarter of it drawn at random from the rest",
    )
    net.add_argument(
        "--patience",
        type=int,
        help="stop after this many epochs without a better validation accuracy (0: never); "
        "needs --val-size above 0",
    )
    net.add_argument(
        "--val-size",
        type=int,
        help="images held out of the 60,000 to score each epoch and keep the best; 0: none, keep the last",
    )
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
        help="the base config each trial starts from; it needs a validation set (default: report for "
        "--sweep report, else validation)",
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
    "hidden_sizes",
    "conv",
    "blocks",
    "global_pool",
    "views",
    "init",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "beta1",
    "beta2",
    "eps",
    "schedule",
    "decay",
    "warmup_epochs",
    "step_epochs",
    "gamma",
    "l2",
    "dropout",
    "input_dropout",
    "centre_inputs",
    "augment",
    "max_shift",
    "erase",
    "label_smoothing",
    "hardest_of",
    "hardest_by",
    "patience",
    "val_size",
    "split_seed",
    "seed",
)


def _float_in(low: float, high: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


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
