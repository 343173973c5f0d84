"""A convolutional network through the doors the MLP has: train (test_train resumes one),
checkpoint, evaluate, predict, Checkpoint.inference(); and files from before networks still load."""

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_mlp import checkpoint, data, runs
from fashion_mlp.cli import main
from fashion_mlp.config import TrainConfig, load_toml
from fashion_mlp.nn import Network

DATA = Path(__file__).parent / "data"
CNN = TrainConfig(
    conv=(8, 16), hidden_sizes=(32,), epochs=2, batch_size=32, lr=0.1, augment=True, hardest_of=2,
    dropout=0.1, val_size=1000,
)  # fmt: skip


@pytest.fixture(scope="module")
def cnn_run(small_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cnn") / "cnn"
    runs.run(CNN, small_data, run_dir)
    return run_dir


def test_a_small_cnn_learns_and_its_checkpoint_records_its_layers(cnn_run, small_data):
    loaded = checkpoint.load(cnn_run / "best.npz")
    assert isinstance(loaded.model, Network)
    assert loaded.meta["architecture"]["layers"] == loaded.model.records
    assert loaded.meta["config"]["conv"] == [8, 16]
    summary = json.loads((cnn_run / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.7  # two epochs on 3,000 images; chance is 0.1
    raw = data.pixels(small_data.test.x[:50])
    from_raw = loaded.inference().predict_proba(raw)
    np.testing.assert_allclose(
        from_raw, loaded.model.predict_proba(small_data.test.x[:50]), rtol=1e-4, atol=1e-6
    )


def test_evaluate_and_predict_take_a_cnn(cnn_run, capsys, tmp_path, small_data):
    assert main(["evaluate", str(cnn_run / "best.npz"), "--split", "test", "--no-download"]) == 0
    assert "test: accuracy 0." in capsys.readouterr().out
    path = tmp_path / "boot.png"
    Image.fromarray(data.pixels(small_data.test.x[0]).reshape(28, 28).astype(np.uint8)).resize((90, 90)).save(
        path
    )
    assert main(["predict", str(cnn_run / "best.npz"), str(path)]) == 0
    assert str(path) in capsys.readouterr().out


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a["layers"].append({"kind": "softmax"}), "unknown layer kind 'softmax'"),
        (
            lambda a: next(r for r in a["layers"] if r["kind"] == "conv").update(out=100_000),
            "'out' must be at most 16,384, got 100,000",
        ),
        (
            lambda a: next(r for r in a["layers"] if r["kind"] == "conv").update(out=0),
            "'out' must be a positive integer, got 0",
        ),
        (lambda a: a.update(classes=11), "its classes disagree"),
        (lambda a: a.update(layers="conv"), "metadata has no valid architecture"),
    ],
)
def test_a_checkpoint_with_bad_layer_records_is_refused(cnn_run, tmp_path, edit, message):
    from tests.test_checkpoint import edit_meta, rewrite

    path = tmp_path / "bad.npz"
    path.write_bytes((cnn_run / "best.npz").read_bytes())
    rewrite(path, edit_meta(lambda meta: edit(meta["architecture"])))
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(path)


def test_a_checkpoint_and_a_config_from_before_networks_load_and_behave_as_then():
    loaded = checkpoint.load(DATA / "mlp-2026-12-02.npz")
    assert loaded.model.describe() == "784-8-10" and loaded.model.centre is not None
    expected = np.load(DATA / "mlp-2026-12-02-expected.npy", allow_pickle=False)
    pixels, probabilities = expected[:, :784], expected[:, 784:]
    # equal to float32 rounding: OpenBLAS picks its kernel by CPU, and the sums' order with it
    answered = loaded.inference().predict_proba(pixels)
    np.testing.assert_allclose(answered, probabilities, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(answered.argmax(axis=1), probabilities.argmax(axis=1))
    config = TrainConfig.from_record(load_toml(DATA / "default-2026-12-02.toml"))
    assert config.conv == () and config.hidden_sizes == (1024, 1024)
    assert TrainConfig.from_record(loaded.meta["config"]).conv == ()


def test_a_cnn_checkpoint_from_before_one_network_loads_and_answers_as_then():
    """Written by the commit before every model became one Network (conv 8, 16, fc 32, trained 150
    steps): it loads, and answers as it did then. Its logits are the same bits on the machine that
    wrote it (benchmarks/same_bits.py); the probabilities differ by at most 1.2e-7, one softmax for
    every network now; elsewhere OpenBLAS's kernel decides the sums' order, hence the tolerance."""
    loaded = checkpoint.load(DATA / "cnn-2026-12-04.npz")
    assert loaded.model.describe() == "conv3x3(8)-pool-conv3x3(16)-pool-fc32-fc10"
    expected = np.load(DATA / "cnn-2026-12-04-expected.npy", allow_pickle=False)
    pixels, probabilities = expected[:, :784], expected[:, 784:]
    for batch in (1, len(pixels)):
        answered = loaded.inference().predict_proba(pixels[:batch])
        np.testing.assert_allclose(answered, probabilities[:batch], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(answered.argmax(axis=1), probabilities[:batch].argmax(axis=1))
    assert TrainConfig.from_record(loaded.meta["config"]).conv == (8, 16)


def test_conv_flags_and_settings_are_checked(capsys):
    for argv, message in (
        (["train", "--conv", "0"], "0 is not between 1 and 1024"),
        (["train", "--conv", "8", "8", "8"], "at most 2 convolutions"),
        (["train", "--conv", "8", "--input-dropout", "0.1"], "input dropout is for fully connected networks"),
    ):
        assert main(argv) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("negative_scale", [False, True], ids=["folded", "a negative gamma"])
def test_the_onnx_export_of_a_cnn_agrees_with_onnxruntime(cnn_run, small_data, tmp_path, negative_scale):
    """Conv, MaxPool, Relu, MatMul: batch norm folded into the layer before it where it may be (with
    a negative gamma after max pooling it may not, and becomes a BatchNormalization node)."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from fashion_mlp.export import export_checkpoint

    loaded = checkpoint.load(cnn_run / "best.npz")
    path = tmp_path / "cnn.npz"
    if negative_scale:
        loaded.model.layers[4].gamma.value[0] = -0.5  # bn1, after conv1 and the pooling
    checkpoint.save(path, loaded.model, loaded.meta)
    graph = onnx.load(export_checkpoint(path))
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("Conv") == 2 and ops.count("MaxPool") == 2 and ops.count("MatMul") == 2
    assert ops.count("BatchNormalization") == (1 if negative_scale else 0)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = data.pixels(small_data.test.x[:200]).astype(np.float32)
    probabilities, labels = session.run(None, {"pixels": pixels})
    expected = checkpoint.load(path).inference().predict_proba(pixels)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))


def test_plot_and_report_draw_a_cnns_filters_and_feature_maps(cnn_run, capsys):
    from fashion_mlp.figures import CNN_FIGURES

    assert main(["plot", str(cnn_run), "--no-download"]) == 0
    figures = cnn_run / "figures"
    for name in CNN_FIGURES.values():
        image = Image.open(figures / name)
        assert image.size[0] > 300 and image.size[1] > 150, name
    assert main(["report", str(cnn_run)]) == 0
    report = (cnn_run / "report.md").read_text()
    assert "first_conv_filters.png" in report and "feature_maps.png" in report
    assert "first_layer_weights.png" not in report


def test_serve_answers_tritonclient_with_a_cnn(cnn_run, small_data):
    pytest.importorskip("starlette", reason="the serve extra")
    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is in the test extra")
    from tests.test_serve import MODEL, Server

    server = Server(cnn_run / "best.npz")
    try:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        images = data.pixels(small_data.test.x[:5]).reshape(5, 28, 28).round().astype(np.uint8)
        tensor = httpclient.InferInput("pixels", [5, 28, 28], "UINT8")
        tensor.set_data_from_numpy(images)
        result = client.infer(MODEL, [tensor])
        expected = checkpoint.load(cnn_run / "best.npz").inference().predict_proba(images.reshape(5, 784))
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
        info = json.loads(urllib.request.urlopen(server.url + "/info", timeout=60).read())
        assert info["models"][0]["architecture"] == "conv3x3(8)-pool-conv3x3(16)-pool-fc32-fc10"
    finally:
        server.stop()
