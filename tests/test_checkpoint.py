import io
import json
import zipfile

import numpy as np
import pytest

from fashion_mlp import checkpoint, data, files
from fashion_mlp.checkpoint import CheckpointError
from fashion_mlp.nn import MLP

META = {"normalisation": data.NORMALISATION}  # every checkpoint records what it applies to its inputs


@pytest.fixture(params=["centred", "plain"])
def saved(tmp_path, request):
    rng = np.random.default_rng(0)
    mean = rng.uniform(-1, 0, 784) if request.param == "centred" else None
    model = MLP([784, 16, 10], rng, input_mean=mean)
    path = tmp_path / "model.npz"
    checkpoint.save(path, model, {**META, "note": "test"}, {"steps": np.array(3)})
    return path, model


def test_round_trip_gives_identical_predictions(saved):
    path, model = saved
    loaded = checkpoint.load(path)
    x = np.random.default_rng(1).standard_normal((50, 784)).astype(np.float32)
    np.testing.assert_array_equal(loaded.model.logits(x), model.logits(x))
    assert loaded.meta["note"] == "test" and loaded.meta["architecture"]["layers"] == model.records
    assert loaded.model.describe() == "784-16-10" and (loaded.model.centre is None) == (model.centre is None)
    assert int(loaded.optimizer_state["steps"]) == 3


def as_before_records(meta):
    """The metadata as files recorded a fully connected network before layer records: its sizes."""
    layers = meta["architecture"]["layers"]
    sizes = [meta["architecture"]["inputs"], *(r["out"] for r in layers if r["kind"] == "linear")]
    rates = [r["rate"] for r in layers if r["kind"] == "dropout"]
    centred = layers[0]["kind"] == "centre"
    meta["architecture"] = {"sizes": sizes, "dropout": rates[0] if rates else 0.0, "input_dropout": 0.0,
                            "centred": centred, "activation": "relu"}  # fmt: skip


def test_a_file_that_records_sizes_loads_as_the_same_layer_records(saved):
    path, model = saved
    rewrite(path, edit_meta(as_before_records))
    loaded = checkpoint.load(path)
    assert loaded.model.records == model.records and "sizes" not in loaded.meta["architecture"]
    x = np.random.default_rng(1).standard_normal((50, 784)).astype(np.float32)
    np.testing.assert_array_equal(loaded.model.logits(x), model.logits(x))


def rewrite(path, change):
    """Rebuild the zip with ``change(name, bytes) -> bytes | None`` applied to each member."""
    with zipfile.ZipFile(path) as src:
        members = {name: src.read(name) for name in src.namelist()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for name, raw in members.items():
            new = change(name, raw)
            if new is not None:
                out.writestr(name, new)
    path.write_bytes(buffer.getvalue())


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def edit_meta(edit):
    def change(name, raw):
        if name != "__meta__.npy":
            return raw
        meta = json.loads(np.load(io.BytesIO(raw)).tobytes())
        edit(meta)
        return npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))

    return change


def flip_weight(name, raw):
    if name == "model/fc1.weight.npy":
        return raw[:-4] + bytes(4)
    return raw


def flip_centred(meta):
    layers = meta["architecture"]["layers"]
    if layers[0]["kind"] == "centre":
        layers.pop(0)
    else:
        layers.insert(0, {"kind": "centre"})


def before_records(edit):
    """A damage to a file in the format from before layer records (``as_before_records``)."""
    return edit_meta(lambda meta: (as_before_records(meta), edit(meta["architecture"])))


CASES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:1000]), "damaged or not a checkpoint"),
    "not a zip": (lambda p: p.write_bytes(b"hello world" * 100), "damaged or not a checkpoint"),
    "foreign npz": (lambda p: np.savez(p, weights=np.zeros(3)), "no metadata"),
    "tampered weight": (lambda p: rewrite(p, flip_weight), "recorded checksum"),
    "pickled member": (
        lambda p: rewrite(p, lambda n, r: npy(np.array([{"x": 1}], dtype=object)) if "fc1.bias" in n else r),
        "holds",
    ),
    "lying npy header": (
        lambda p: rewrite(
            p, lambda n, r: npy(np.zeros((10**4, 10**4), np.float32)[:1]) if "fc1.bias" in n else r
        ),
        "holds <f4",
    ),
    "bad architecture": (
        lambda p: rewrite(p, edit_meta(lambda m: m["architecture"]["layers"][-3].update(out=10**9))),
        "'out' must be at most 16,384, got 1,000,000,000",
    ),
    "bad sizes": (
        lambda p: rewrite(p, before_records(lambda a: a.update(sizes=[784, 10**9, 10]))),
        "no valid architecture",
    ),
    "sizes and layers": (
        lambda p: rewrite(p, before_records(lambda a: a.update(sizes=[784, 10]))),
        "do not match",
    ),
    "newer format": (
        lambda p: rewrite(p, edit_meta(lambda m: m.update(format_version=99))),
        "format 99 is not supported",
    ),
    "missing array": (lambda p: rewrite(p, lambda n, r: None if "fc1.bias" in n else r), "do not match"),
    "centred not a flag": (
        lambda p: rewrite(p, before_records(lambda a: a.update(centred="yes"))),
        "no valid architecture",
    ),
    "centring flipped": (
        lambda p: rewrite(p, edit_meta(flip_centred)),
        "do not match",
    ),
    "array entry not a list of dimensions": (  # found by fuzzing the estimator's file: a TypeError before
        lambda p: rewrite(p, edit_meta(lambda m: m["arrays"].update({"model/fc1.bias": ["<f4", 5]}))),
        r"metadata of array 'model/fc1.bias' is not \[dtype, \[dims...\]\]",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_checkpoint_is_refused_with_its_reason(saved, case):
    path, _ = saved
    damage, message = CASES[case]
    damage(path)
    with pytest.raises(CheckpointError, match=message) as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "none.npz")


def test_saving_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    model = MLP([784, 4, 10], np.random.default_rng(0))
    checkpoint.save(path, model, META)
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, MLP([784, 4, 10], np.random.default_rng(1)), META)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left behind


def test_damaged_npy_header_text_is_a_checkpoint_error_not_a_tokenizer_traceback(tmp_path, capsys):
    """Regression (fuzzing): a quote flipped inside one member's {'descr': ...} header made NumPy's
    header parser raise tokenize.TokenError before the member's CRC was checked."""
    from fashion_mlp.cli import main

    path = tmp_path / "model.npz"
    checkpoint.save(
        path,
        MLP([784, 8, 10], np.random.default_rng(0)),
        {**META, "class_names": [str(i) for i in range(10)]},
    )
    raw = bytearray(path.read_bytes())
    at = raw.index(b"{'descr'", raw.index(b"model/fc1.weight"))
    raw[at] = ord("'")  # {'descr' -> ''descr': an unterminated string in the header's text
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="model/fc1.weight.npy has a damaged header"):
        checkpoint.load(path)
    image = tmp_path / "shoe.png"
    from PIL import Image

    Image.fromarray(np.tri(28, dtype=np.uint8) * 255).save(image)
    for argv in (["evaluate", path], ["predict", path, image]):
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "damaged header" in err[0] and "Traceback" not in err[0], err


def test_metadata_that_does_not_fit_the_model_is_a_checkpoint_error(tmp_path):
    """Regression (fuzzing): the metadata is outside the arrays' checksum, so a dropout of the wrong
    type reached MLP() as a TypeError."""
    path = tmp_path / "model.npz"
    checkpoint.save(path, MLP([784, 8, 10], np.random.default_rng(0)), META)
    rewrite(path, before_records(lambda architecture: architecture.update(dropout=[0.5])))
    with pytest.raises(CheckpointError, match="metadata has no valid architecture"):
        checkpoint.load(path)
    checkpoint.save(path, MLP([784, 8, 10], np.random.default_rng(0)), META)
    rewrite(
        path, edit_meta(lambda meta: meta["architecture"].update(layers=[{"kind": "dropout", "rate": [0.5]}]))
    )
    with pytest.raises(CheckpointError, match="a dropout rate must be a number"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    "normalisation",
    [None, {"offset": 127.5}, {"offset": 127.5, "scale": 0}, {"offset": "127.5", "scale": 127.5}],
    ids=["missing", "no scale", "zero scale", "a string"],
)
def test_a_checkpoint_without_a_valid_input_normalisation_is_refused_by_every_loader(
    tmp_path, capsys, normalisation
):
    """Regression: Checkpoint.inference() assumed Fashion-MNIST's (x - 127.5) / 127.5 and export
    assumed none, so one file answered differently in serve and in its ONNX export."""
    from PIL import Image

    from fashion_mlp.cli import main

    path = tmp_path / "model.npz"
    checkpoint.save(path, MLP([784, 8, 10], np.random.default_rng(0)), META)

    def edit(meta):
        meta.pop("normalisation")
        if normalisation is not None:
            meta["normalisation"] = normalisation

    rewrite(path, edit_meta(edit))
    with pytest.raises(CheckpointError, match="input normalisation") as caught:
        checkpoint.load(path)
    message = str(caught.value)
    image = tmp_path / "shoe.png"
    Image.fromarray(np.tri(28, dtype=np.uint8) * 255).save(image)
    commands = [
        ["evaluate", path],
        ["predict", path, image],
        ["export", path],
        ["serve", path, "--port", "0"],
    ]
    for argv in commands:
        assert main([str(a) for a in argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"fashion-mlp: error: {message}"], (argv, err)


def test_saving_a_checkpoint_without_its_input_normalisation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="records no input normalisation"):
        checkpoint.save(tmp_path / "model.npz", MLP([784, 8, 10], np.random.default_rng(0)), {})
    assert not (tmp_path / "model.npz").exists()


def test_the_served_and_exported_models_apply_the_normalisation_the_file_records(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from fashion_mlp.export import export_checkpoint

    path = tmp_path / "model.npz"
    norm = {"offset": 10.0, "scale": 50.0}  # not Fashion-MNIST's: no loader may assume that
    checkpoint.save(path, MLP([784, 8, 10], np.random.default_rng(0)), {"normalisation": norm})
    loaded = checkpoint.load(path)
    pixels = np.random.default_rng(1).uniform(0, 255, (20, 784)).astype(np.float32)
    expected = loaded.model.predict_proba((pixels - 10.0) / 50.0)
    np.testing.assert_allclose(loaded.inference().predict_proba(pixels), expected, rtol=1e-5, atol=1e-6)
    session = ort.InferenceSession(str(export_checkpoint(path)), providers=["CPUExecutionProvider"])
    onnx_probabilities = session.run(None, {"pixels": pixels})[0]
    np.testing.assert_allclose(onnx_probabilities, expected, rtol=1e-4, atol=1e-6)
