import gzip
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fashion_mlp import data
from fashion_mlp.cli import main
from fashion_mlp.idx import read_idx


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fashion-mlp")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["train", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["train", "--lr", "fast"], ["--lr", "invalid float value: 'fast'"]),
        (["train", "--lr", "-1"], ["learning rate must be positive"]),
        (["train", "--lr", "inf"], ["lr must be a finite number, got inf"]),
        (["train", "--momentum", "nan"], ["momentum must be a finite number, got nan"]),
        (["train", "--hidden", "0"], ["0 is not between 1 and 16384"]),
        (["train", "--preset", "best"], ["invalid choice: 'best'"]),
        (["train", "--config", "missing.toml"], ["missing.toml: no such file"]),
        (["train", "--resume", "nowhere"], ["nowhere: no last.npz to resume from"]),
        (["train", "--patience", "3"], ["early stopping (patience) needs a validation set"]),
        (
            ["search", "--sweep", "report", "--preset", "default", "--epochs", "1", "--limit-train", "100"],
            ["base config has val_size 0"],
        ),
        (["evaluate", "missing.npz"], ["missing.npz: no such checkpoint file"]),
        (["evaluate", "x.npz", "--split", "dev"], ["invalid choice: 'dev'"]),
        (["predict", "x.npz"], ["the following arguments are required: images"]),
        ([], ["the following arguments are required: command"]),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(capsys, tmp_path, monkeypatch, argv, fragments):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, *fragments)


def test_a_corrupt_idx_file_is_named(capsys, tmp_path):
    for path in data.locate(allow_download=False).paths.values():
        (tmp_path / path.name).symlink_to(path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.unlink()
    path.write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x05abc"))
    code, _, err = run_cli(capsys, "data", "--data-dir", tmp_path)
    assert code == 2
    assert_one_line_error(err, "train-labels-idx1-ubyte.gz", "truncated data")


def test_a_corrupt_checkpoint_is_refused(capsys, tmp_path, small_run):
    bad = tmp_path / "bad.npz"
    bad.write_bytes((small_run / "best.npz").read_bytes()[:5000])
    for command in (["evaluate", bad], ["predict", bad, bad]):
        code, _, err = run_cli(capsys, *command)
        assert code == 2
        assert_one_line_error(err, "bad.npz", "damaged or not a checkpoint")


def test_an_unreadable_image_is_named(capsys, tmp_path, small_run):
    text = tmp_path / "photo.jpg"
    text.write_text("not a jpeg")
    code, _, err = run_cli(capsys, "predict", small_run / "best.npz", text)
    assert code == 2
    assert_one_line_error(err, "photo.jpg: not a readable PNG or JPEG image")


def test_data_reports_where_it_found_the_files(capsys):
    code, out, _ = run_cli(capsys, "data", "--no-download")
    assert code == 0
    assert "Fashion-MNIST found" in out and out.count("verified") == 4


def test_train_writes_a_run_and_evaluate_reports_it(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "train", "--preset", "validation", "--epochs", "1", "--hidden", "64",
        "--runs-dir", tmp_path, "--name", "one", "--no-download",
    )  # fmt: skip
    assert code == 0, out
    assert "epoch   1/1" in out and "val loss" in out and "best epoch 1: val accuracy 0.8" in out
    assert "test accuracy 0.8" in out
    code, out, _ = run_cli(capsys, "evaluate", tmp_path / "one" / "best.npz", "--split", "val")
    assert code == 0
    assert "val: accuracy 0.8" in out and "(5,000 images)" in out
    assert "Ankle boot" in out and "confusion matrix" in out
    code, _, err = run_cli(capsys, "train", "--runs-dir", tmp_path, "--name", "one")
    assert code == 2
    assert_one_line_error(err, "a run already exists there")


def test_the_default_trains_on_all_60000_and_has_no_validation_split(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "train", "--epochs", "1", "--hidden", "64", "--runs-dir", tmp_path, "--name", "all",
        "--no-download", "--no-plots",
    )  # fmt: skip
    assert code == 0, out
    epochs = [line for line in out.splitlines() if line.startswith("epoch")]
    assert epochs and not any("val" in line for line in epochs)  # no validation columns
    assert "last epoch 1 (no validation set); test accuracy 0.8" in out
    best = tmp_path / "all" / "best.npz"
    code, _, err = run_cli(capsys, "evaluate", best, "--split", "val")
    assert code == 2
    assert_one_line_error(err, "best.npz: its model was trained with no validation set (val_size 0)")
    code, out, _ = run_cli(capsys, "evaluate", best, "--split", "train")
    assert code == 0 and "(60,000 images)" in out


def test_predict_agrees_with_the_model_on_real_test_images(capsys, tmp_path, small_run, real_data):
    """Test images saved as large, inverted PNGs go through the image pipeline and keep their class."""
    raw = read_idx(data.locate(allow_download=False).paths["test-images"])[:30]
    paths = []
    for i, image in enumerate(raw):
        path = tmp_path / f"{i}.png"
        Image.fromarray(255 - image).resize((112, 112), Image.Resampling.NEAREST).save(path)
        paths.append(path)
    code, out, _ = run_cli(capsys, "predict", small_run / "best.npz", *paths, "--top-k", "3")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 30 and lines[0].count(",") == 2
    from fashion_mlp import checkpoint

    model = checkpoint.load(small_run / "best.npz").model
    direct = model.predict(real_data.test.x[:30])
    names = [line.split(": ")[1].rsplit(" ", 1)[0].split(" 0.")[0] for line in lines]
    agree = np.mean([name == data.CLASS_NAMES[k] for name, k in zip(names, direct)])
    assert agree >= 0.8


def test_help_explains_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "fashion_mlp", "train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--preset", "--config", "--hidden", "--lr", "--momentum", "--decay", "--l2", "--resume"):
        assert flag in out


def test_divergence_is_one_line_with_advice(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--lr", "1000", "--hidden", "32", "--epochs", "1",
                           "--runs-dir", tmp_path, "--no-download")  # fmt: skip
    assert code == 1
    assert_one_line_error(err, "training diverged", "lower the learning rate (--lr, now 1000)")


def test_every_setting_has_a_train_flag():
    from fashion_mlp.cli import CONFIG_FLAGS, build_parser
    from fashion_mlp.config import field_names

    assert set(CONFIG_FLAGS) == set(field_names())
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    destinations = {action.dest for action in train_parser._actions}
    assert set(field_names()) <= destinations


def test_no_traceback_from_the_real_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fashion_mlp", "evaluate", str(tmp_path / "x.npz")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_the_parser_imports_nothing_heavy():
    """`fashion-mlp --help` stays instant: the grammar needs none of matplotlib, Optuna, Pillow or
    SQLAlchemy, and a fresh interpreter that imports it must not load them."""
    script = (
        "import sys; import fashion_mlp.cli; from fashion_mlp.cli import build_parser; build_parser(); "
        "print(','.join(m for m in ('matplotlib', 'optuna', 'PIL', 'sqlalchemy') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"the CLI's parser imported {loaded.stdout.strip()}"


@pytest.mark.parametrize(
    "error",
    [ValueError("operands could not be broadcast together"), KeyError("fc1.weight"), ZeroDivisionError("x")],
    ids=["numpy's ValueError", "KeyError", "ZeroDivisionError"],
)
def test_an_unexpected_exception_is_called_a_bug_with_exit_1(capsys, monkeypatch, error):
    """Regression: every ValueError, NumPy's included, came out as exit 2, a usage error."""
    from fashion_mlp.cli import commands

    def crash(args):
        raise error

    monkeypatch.setattr(commands, "cmd_data", crash)
    monkeypatch.delenv("FASHION_MLP_DEBUG", raising=False)
    code, _, err = run_cli(capsys, "data")
    assert code == 1
    assert_one_line_error(err, "internal error, a bug in fashion-mlp", type(error).__name__, "--debug")


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_of_an_unexpected_exception(capsys, monkeypatch, how):
    from fashion_mlp.cli import commands

    def crash(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(commands, "cmd_data", crash)
    monkeypatch.setenv("FASHION_MLP_DEBUG", "1" if how == "environment" else "0")
    code, _, err = run_cli(capsys, *(["--debug"] if how == "flag" else []), "data")
    assert code == 1
    assert "Traceback (most recent call last)" in err and "in crash" in err
    assert (
        err.strip().splitlines()[-1]
        == "fashion-mlp: error: internal error, a bug in fashion-mlp: ZeroDivisionError: a bug"
    )


def test_our_own_errors_stay_one_line_with_exit_2_and_the_machines_exit_1(capsys, monkeypatch):
    from fashion_mlp.cli import commands
    from fashion_mlp.errors import InvalidValue

    for error, code in (
        (InvalidValue("a value we cannot use"), 2),
        (PermissionError(13, "Permission denied"), 1),
    ):

        def fail(args, error=error):
            raise error

        monkeypatch.setattr(commands, "cmd_data", fail)
        returned, _, err = run_cli(capsys, "data")
        assert returned == code
        assert_one_line_error(err)
        assert "bug" not in err
