"""A residual network through every door the cnn preset has: train, checkpoint, evaluate, predict,
plot, report, gradcheck, export (Add and GlobalAveragePool, against onnxruntime), serve, and a run
killed with SIGKILL and resumed bit for bit; and random erasing. Like the preset, it answers from ten
views of each image (nn/views.py), and draws its weights as PyTorch does (init "uniform")."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_mlp import checkpoint, data, runs
from fashion_mlp.cli import main
from fashion_mlp.config import PRESETS, TrainConfig
from fashion_mlp.nn import Network

RESNET = TrainConfig(
    conv=(8, 16), blocks=(1, 1), hidden_sizes=(32,), epochs=2, batch_size=32, lr=0.05,
    augment=True, erase=0.5, hardest_of=2, dropout=0.1, val_size=1000, views=10, init="uniform",
)  # fmt: skip
ARCHITECTURE = "views10-conv3x3(8)-pool-res(8)-conv3x3(16)-pool-res(16)-fc32-fc10"


@pytest.fixture(scope="module")
def resnet_run(small_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("resnet") / "resnet"
    runs.run(RESNET, small_data, run_dir)
    return run_dir


def test_a_small_resnet_learns_and_its_checkpoint_records_its_blocks(resnet_run, small_data):
    loaded = checkpoint.load(resnet_run / "best.npz")
    assert isinstance(loaded.model, Network) and loaded.model.describe() == ARCHITECTURE
    kinds = [r["kind"] for r in loaded.meta["architecture"]["layers"]]
    assert kinds.count("residual") == 2
    assert {r.get("init") for r in loaded.meta["architecture"]["layers"] if "init" in r} == {"uniform"}
    names = set(loaded.model.state_dict())  # each block at its convolution's width: identity skips
    assert "conv6.weight" in names and "bn6.running_var" in names and not any("skip" in n for n in names)
    summary = json.loads((resnet_run / "summary.json").read_text())
    # two epochs on 3,000 images, half of them partly erased: about 0.71 (chance is 0.1)
    assert summary["test_accuracy"] > 0.6
    raw = data.pixels(small_data.test.x[:50])
    np.testing.assert_allclose(
        loaded.inference().predict_proba(raw),
        loaded.model.predict_proba(small_data.test.x[:50]),
        rtol=1e-4,
        atol=1e-6,
    )
    # the fast path against the layers' own forward, at inference
    logits = loaded.model.forward(small_data.test.x[:50], training=False)
    np.testing.assert_allclose(loaded.model.logits(small_data.test.x[:50]), logits, rtol=1e-4, atol=1e-4)


def test_evaluate_predict_plot_and_report_take_a_resnet(resnet_run, capsys, tmp_path, small_data):
    assert main(["evaluate", str(resnet_run / "best.npz"), "--split", "test", "--no-download"]) == 0
    assert "test: accuracy 0." in capsys.readouterr().out
    path = tmp_path / "boot.png"
    image = Image.fromarray(data.pixels(small_data.test.x[0]).reshape(28, 28).astype(np.uint8))
    image.resize((90, 90)).save(path)
    assert main(["predict", str(resnet_run / "best.npz"), str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    from fashion_mlp.figures import CNN_FIGURES

    assert main(["plot", str(resnet_run), "--no-download"]) == 0
    for name in CNN_FIGURES.values():
        assert Image.open(resnet_run / "figures" / name).size[0] > 300, name
    assert main(["report", str(resnet_run)]) == 0
    assert "first_conv_filters.png" in (resnet_run / "report.md").read_text()


def test_the_onnx_export_of_a_resnet_adds_its_branches_and_agrees_with_onnxruntime(
    resnet_run, small_data, tmp_path
):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from fashion_mlp.export import export_checkpoint

    graph = onnx.load(export_checkpoint(resnet_run / "best.npz", tmp_path / "resnet.onnx"))
    ops = [node.op_type for node in graph.graph.node]
    # two convolutions and two per block, batch norm folded into every one
    assert ops.count("Conv") == 2 + 4 and ops.count("BatchNormalization") == 0
    assert ops.count("Add") == 2 + 2  # the blocks' sums, the fully connected layers' biases
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = data.pixels(small_data.test.x).astype(np.float32)
    probabilities, labels = session.run(None, {"pixels": pixels})
    expected = checkpoint.load(resnet_run / "best.npz").inference().predict_proba(pixels)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))


def test_a_projection_and_global_average_pooling_export_as_conv_add_and_globalaveragepool():
    """The kinds the preset does not use: a block that widens (a 1x1 projection on its skip) and
    global average pooling, with weights and batch norms away from their initial values."""
    pytest.importorskip("onnxruntime")
    from fashion_mlp.export import to_onnx

    records = [
        {"kind": "image", "height": 28, "width": 28, "channels": 1},
        {"kind": "conv", "out": 6, "kernel": 3, "bias": False},
        {"kind": "maxpool"},
        {"kind": "batchnorm"},
        {"kind": "relu"},
        {"kind": "residual", "out": 6},
        {"kind": "relu"},
        {"kind": "residual", "out": 10},
        {"kind": "relu"},
        {"kind": "avgpool"},
        {"kind": "linear", "out": 10},
    ]
    rng = np.random.default_rng(2)
    network = Network(records, 784, rng)
    for _ in range(3):  # running averages of real batch statistics
        network.forward(rng.uniform(-1, 1, (64, 784)).astype(np.float32))
    for p in network.parameters():
        p.value += (0.2 * rng.standard_normal(p.value.shape)).astype(np.float32)
    graph = to_onnx(network, [str(i) for i in range(10)], data.NORMALISATION)
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("Conv") == 1 + 4 + 1 and ops.count("GlobalAveragePool") == 1 and ops.count("Add") == 3
    assert_onnxruntime_agrees(graph, network, rng.uniform(0, 255, (300, 784)).astype(np.float32))


def assert_onnxruntime_agrees(graph, network: Network, pixels: np.ndarray) -> None:
    """onnxruntime on ``graph`` gives ``network``'s probabilities and labels for raw ``pixels``."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities, labels = session.run(None, {"pixels": pixels})
    expected = network.answering(**data.NORMALISATION).predict_proba(pixels)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))


def test_serve_answers_tritonclient_with_a_resnet(resnet_run, small_data):
    pytest.importorskip("starlette", reason="the serve extra")
    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is in the test extra")
    from tests.test_serve import MODEL, Server

    server = Server(resnet_run / "best.npz")
    try:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        images = data.pixels(small_data.test.x[:5]).reshape(5, 28, 28).round().astype(np.uint8)
        tensor = httpclient.InferInput("pixels", [5, 28, 28], "UINT8")
        tensor.set_data_from_numpy(images)
        result = client.infer(MODEL, [tensor])
        expected = checkpoint.load(resnet_run / "best.npz").inference().predict_proba(images.reshape(5, 784))
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
    finally:
        server.stop()


def test_gradcheck_checks_the_resnet_preset(capsys):
    argv = ["gradcheck", "--preset", "resnet", "--conv", "2", "3", "--blocks", "1", "1", "--hidden", "4"]
    assert main([*argv, "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "conv3x3(2)-pool-res(2)-conv3x3(3)-pool-res(3)-fc4-fc10" in out and "conv6.weight" in out
    assert main(["gradcheck", "--preset", "resnet", "--conv", "2", "3", "--hidden", "4", "--batch", "3"]) == 0
    assert "conv3x3(2)-pool-conv3x3(3)-pool-res(3)-fc4-fc10" in capsys.readouterr().out  # the preset's blocks
    assert main(["gradcheck", "--preset", "resnet", "--conv", "2", "--batch", "3"]) == 2
    assert "gradcheck: --blocks needs one count per convolution, 1 here" in capsys.readouterr().err


def test_the_resnet_preset_is_the_cnn_preset_with_a_block_after_its_second_convolution():
    preset = PRESETS["resnet"]
    assert preset.blocks == (0, 1) and preset.conv == (32, 64) and preset.val_size == 0
    assert preset.views == 10  # the image, its shifts by a pixel, and the same of its mirror
    assert preset.init == "uniform"  # PyTorch's draw, uniform in +-1/sqrt(fan_in)
    assert preset.hardest_of == 3 and preset.hardest_by == "memory"  # the hardest third, by remembered loss
    cnn = preset.replace(blocks=(), epochs=PRESETS["cnn"].epochs, views=1, init="he", hardest_by="scoring")
    assert cnn == PRESETS["cnn"]
    assert PRESETS["default"].blocks == () and not PRESETS["default"].conv  # the default stays the MLP


def test_blocks_and_erasing_flags_are_checked(capsys):
    for argv, message in (
        (["train", "--conv", "8", "--blocks", "1", "1"], "blocks needs one count per convolution"),
        (["train", "--blocks", "9"], "9 is not between 0 and 8"),
        (["train", "--global-pool"], "global_pool needs convolutions"),
        (["train", "--erase", "0.5", "--no-augment"], "erase is an augmentation: it needs augment"),
        (["train", "--augment", "--erase", "1.5"], "erase must be a probability"),
    ):
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err


def test_random_erasing_fills_one_rectangle_of_some_images_with_one_shade():
    base = np.linspace(-1, 1, 784, dtype=np.float32).reshape(28, 28)  # every pixel its own value
    images = np.repeat(base[None], 400, axis=0)
    data.erase_(images, np.random.default_rng(0), 0.5)
    changed = images != base
    erased = changed.any(axis=(1, 2))
    assert 0.4 < erased.mean() < 0.6
    for image, where in zip(images[erased], changed[erased]):
        ys, xs = np.nonzero(where)
        top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        rectangle = image[top:bottom, left:right]
        assert (rectangle == rectangle[0, 0]).all()  # one rectangle, one shade
        assert 0.015 < rectangle.size / 784 < 0.45
    again = np.repeat(base[None], 400, axis=0)
    data.erase_(again, np.random.default_rng(0), 0.5)
    np.testing.assert_array_equal(images, again)  # seeded: a resumed run erases the same rectangles


def run_cli(run_dir: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "fashion_mlp", "train", "--runs-dir", str(run_dir.parent), "--no-plots"]
    argv += ["--quiet", *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


SMALL_RESNET = [
    "--preset", "resnet", "--conv", "4", "--blocks", "1", "--global-pool", "--hidden", "8", "--epochs", "3",
    "--batch-size", "256", "--erase", "0.5", "--val-size", "5000",
]  # fmt: skip


def test_a_resnet_run_killed_with_sigkill_resumes_bit_for_bit(tmp_path):
    """kill -9 early in the second epoch: --resume continues from the first epoch's saved
    state, and ends with the weights and optimiser of a run that was never stopped."""
    whole = run_cli(tmp_path / "whole", "--name", "whole", *SMALL_RESNET)
    assert whole.wait(timeout=600) == 0, whole.stderr.read()
    cut_dir = tmp_path / "cut"
    cut = run_cli(cut_dir, "--name", "cut", *SMALL_RESNET)
    deadline = time.monotonic() + 600
    while not (cut_dir / "last.npz").exists() and cut.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # last.npz appears when the first epoch ends: kill in the second
    os.kill(cut.pid, signal.SIGKILL)
    cut.wait(timeout=60)
    assert cut.returncode == -signal.SIGKILL
    resumed = subprocess.run(
        [sys.executable, "-m", "fashion_mlp", "train", "--resume", str(cut_dir), "--quiet", "--no-plots"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    a = checkpoint.load(tmp_path / "whole" / "last.npz").model.state_dict()
    b = checkpoint.load(cut_dir / "last.npz").model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
