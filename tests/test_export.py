"""ONNX export: the graph that onnxruntime runs gives our probabilities and labels on real test images."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fashion_mlp import checkpoint, data, runs
from fashion_mlp.cli import main
from fashion_mlp.config import TrainConfig
from fashion_mlp.export import default_output, export_checkpoint, to_onnx
from fashion_mlp.nn import MLP, Inference

onnx = pytest.importorskip("onnx", reason="the onnx extra: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra")

# The default architecture (centred, dropout, learning from the hardest third) and two others.
ARCHITECTURES = {
    "default": {"hidden_sizes": (1024, 1024), "centre_inputs": True, "dropout": 0.3, "hardest_of": 3},
    "one-hidden": {"hidden_sizes": (64,), "centre_inputs": True, "dropout": 0.0, "hardest_of": 1},
    "three-hidden-plain": {
        "hidden_sizes": (64, 48, 32),
        "centre_inputs": False,
        "dropout": 0.2,
        "hardest_of": 1,
    },
}


@pytest.fixture(scope="module")
def raw_test_pixels() -> np.ndarray:
    """The 10,000 official test images as the ONNX contract takes them: float32 0-255, (N, 784)."""
    images = data.read_arrays(data.locate(allow_download=False).paths)["test-images"]
    return images.reshape(len(images), -1).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def trained(request, small_data, tmp_path_factory):
    """A checkpoint of each architecture, trained for one epoch on 3,000 real images."""
    run_dir = tmp_path_factory.mktemp("export") / request.param
    run_dir.mkdir()
    runs.run(TrainConfig(epochs=1, **ARCHITECTURES[request.param]), small_data, run_dir)
    return run_dir / "last.npz"


def session(path_or_bytes):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])


def test_onnxruntime_matches_predict_proba_on_real_test_images(trained, raw_test_pixels, tmp_path):
    path = export_checkpoint(trained, tmp_path / "model.onnx")
    model = checkpoint.load(trained).model
    expected = model.predict_proba(data.normalise(raw_test_pixels))
    probabilities, labels = session(str(path)).run(None, {"pixels": raw_test_pixels})
    assert probabilities.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, model.predict(data.normalise(raw_test_pixels)))
    for batch in (raw_test_pixels[:1], raw_test_pixels[:777]):  # batch 1 and an odd batch
        probabilities, labels = session(str(path)).run(None, {"pixels": batch})
        assert probabilities.shape == (len(batch), 10) and labels.shape == (len(batch),)
        np.testing.assert_allclose(probabilities, expected[: len(batch)], rtol=1e-5, atol=1e-6)


def test_our_inference_engine_matches_predict_proba(trained, raw_test_pixels):
    model = checkpoint.load(trained).model
    expected = model.predict_proba(data.normalise(raw_test_pixels))
    fast = Inference(model, data.NORMALISATION["offset"], data.NORMALISATION["scale"], chunk=999)
    np.testing.assert_allclose(fast.predict_proba(raw_test_pixels), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fast.predict(raw_test_pixels), expected.argmax(axis=1))
    np.testing.assert_allclose(fast.predict_proba(raw_test_pixels[:1]), expected[:1], rtol=1e-5, atol=1e-6)


def test_the_graph_checks_and_carries_its_metadata(trained, tmp_path):
    path = export_checkpoint(trained, tmp_path / "model.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 10 and [(o.domain, o.version) for o in model.opset_import] == [("", 21)]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["class_names"]) == list(data.CLASS_NAMES)
    norm = json.loads(props["normalisation"])
    assert (norm["offset"], norm["scale"], norm["folded_into"]) == (127.5, 127.5, "fc1")
    assert norm["centred"] == (checkpoint.load(trained).model.centre is not None)
    assert props["source_sha256"] == __import__("hashlib").sha256(trained.read_bytes()).hexdigest()
    assert props["package_version"] and "0-255" in props["input"] and "28x28" in props["input"]
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "pixels" and dims[0].dim_param == "batch" and dims[1].dim_value == 784
    assert [o.name for o in model.graph.output] == ["probabilities", "label"]


def test_the_file_runs_without_fashion_mlp(small_run, raw_test_pixels, tmp_path):
    """A fresh process in which importing fashion_mlp fails scores the file: it is self-contained."""
    path = export_checkpoint(small_run / "best.npz", tmp_path / "model.onnx")
    np.save(tmp_path / "pixels.npy", raw_test_pixels[:500])
    script = (
        "import sys; sys.modules['fashion_mlp'] = None\n"
        "import numpy as np, onnxruntime as ort\n"
        f"s = ort.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider'])\n"
        f"p, l = s.run(None, {{'pixels': np.load({str(tmp_path / 'pixels.npy')!r})}})\n"
        f"np.save({str(tmp_path / 'labels.npy')!r}, l)\n"
        "assert 'fashion_mlp' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    model = checkpoint.load(small_run / "best.npz").model
    labels = np.load(tmp_path / "labels.npy")
    np.testing.assert_array_equal(labels, model.predict(data.normalise(raw_test_pixels[:500])))


@pytest.mark.parametrize("hidden", [(8,), (16, 8), (12, 10, 8), (9, 8, 7, 6)])
@pytest.mark.parametrize("centred", [True, False])
def test_every_architecture_exports(hidden, centred):
    rng = np.random.default_rng(len(hidden))
    mean = rng.uniform(-1, 0, 784).astype(np.float32) if centred else None
    model = MLP([784, *hidden, 10], rng, dropout=0.1, input_mean=mean)
    pixels = rng.uniform(0, 255, (33, 784)).astype(np.float32)
    probabilities, labels = session(
        to_onnx(model, data.CLASS_NAMES, data.NORMALISATION).SerializeToString()
    ).run(None, {"pixels": pixels})
    expected = model.predict_proba(data.normalise(pixels))
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))


def test_cli_writes_beside_the_checkpoint_by_default(capsys, small_run, tmp_path):
    source = tmp_path / "model.npz"
    source.write_bytes((small_run / "best.npz").read_bytes())
    assert main(["export", str(source)]) == 0
    assert default_output(source) == tmp_path / "model.onnx" and (tmp_path / "model.onnx").is_file()
    assert "model.onnx: ONNX model of" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def one_line_error(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return code, err[0]


def test_cli_errors_are_one_line(capsys, small_run, tmp_path):
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes((small_run / "best.npz").read_bytes()[:-100])
    code, line = one_line_error(capsys, ["export", damaged])
    assert code == 2 and "damaged.npz: damaged or not a checkpoint" in line
    assert not (tmp_path / "damaged.onnx").exists()
    code, line = one_line_error(capsys, ["export", tmp_path / "missing.npz"])
    assert code == 2 and "missing.npz: no such checkpoint file" in line
    code, line = one_line_error(capsys, ["export", small_run / "best.npz", "-o", "/proc/model.onnx"])
    assert code != 0 and "/proc/model.onnx: cannot write the ONNX file" in line
    code, line = one_line_error(capsys, ["export", small_run / "best.npz", "-o", tmp_path])
    assert code == 2 and "is a folder" in line


def test_a_missing_onnx_package_is_one_line_naming_the_extra(capsys, small_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    code, line = one_line_error(capsys, ["export", small_run / "best.npz", "-o", tmp_path / "m.onnx"])
    assert code == 2 and "pip install 'fashion-mlp[onnx]'" in line
    assert not (tmp_path / "m.onnx").exists()
