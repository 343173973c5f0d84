"""Fuzz targets: each feeds bytes to one loader of untrusted input and checks the one property.

The property: an input is either accepted or refused with ValueError (CheckpointError is one), the
error type the CLI turns into a single line with exit code 2; for the server's request parsers, the
whole app answers with a 2xx or a 4xx, never a 5xx. Any other exception escapes, and the
fuzzer reports it. Each target has seeds, real files of its kind, for the fuzzers to mutate, and
``markers``: byte strings around which mutations are most telling (headers, keys, separators).

Two drivers use these: ``test_fuzz.py`` (hypothesis, bounded and seeded, in `make test`) and
``run.py`` (atheris, coverage-guided, as long as asked, in `make fuzz`).
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from fashion_mlp import checkpoint, config, data, figures, idx, images, report, runs
from fashion_mlp.nn import MLP, Network, cnn_records

REFUSED = (ValueError,)  # what the CLI prints as one line (exit code 2); for the server, a 4xx


@dataclass
class Target:
    name: str
    load: Callable[[bytes, Path], object]  # runs the loader on the bytes, in a scratch folder
    seeds: Callable[[], list[bytes]]
    markers: tuple[bytes, ...] = field(default=())

    def check(self, payload: bytes) -> None:
        """Run the loader; return if it accepted or refused the input properly, raise otherwise."""
        scratch = Path(tempfile.mkdtemp(prefix=f"fuzz-{self.name}-"))
        try:
            self.load(payload, scratch)
        except REFUSED:
            pass
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------- seeds: real files of each kind


def _real_test_images(n: int) -> np.ndarray:
    located = data.locate(allow_download=False)
    return idx.read_idx(located.paths["test-images"])[:n]


@cache
def _idx_seeds() -> list[bytes]:
    located = data.locate(allow_download=False)
    labels = idx.read_idx(located.paths["test-labels"])[:50]
    pictures = _real_test_images(3)
    raw_images = idx.IMAGE_MAGIC.to_bytes(4, "big") + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    raw_labels = idx.LABEL_MAGIC.to_bytes(4, "big") + (50).to_bytes(4, "big")
    return [raw_images + pictures.tobytes(), raw_labels + labels.astype(np.uint8).tobytes()]


@cache
def _checkpoint_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    seeds = []
    for mean in (rng.uniform(-1, 0, 784).astype(np.float32), None):
        model = MLP([784, 2, 10], rng, dropout=0.1, input_mean=mean)
        buffer = Path(tempfile.mkdtemp()) / "seed.npz"
        meta = {"normalisation": data.NORMALISATION, "class_names": list(data.CLASS_NAMES)}
        checkpoint.save(buffer, model, meta, {"steps": np.array(3), "fc1.weight.v": np.zeros((784, 2))})
        seeds.append(buffer.read_bytes())
        shutil.rmtree(buffer.parent)
    # a convolutional network: its layer records are JSON a mutation can turn into anything
    network = Network(cnn_records((28, 28, 1), (2,), (3,), 10, 0.1, centred=True), 784, rng)
    buffer = Path(tempfile.mkdtemp()) / "seed.npz"
    checkpoint.save(buffer, network, {"normalisation": data.NORMALISATION})
    seeds.append(buffer.read_bytes())
    shutil.rmtree(buffer.parent)
    return seeds


@cache
def _image_seeds() -> list[bytes]:
    seeds = []
    picture = 255 - _real_test_images(1)[0]  # a dark garment on white, as a photo would be
    for fmt, mode in (("PNG", "L"), ("JPEG", "L"), ("PNG", "RGBA"), ("PNG", "P")):
        out = io.BytesIO()
        Image.fromarray(picture).convert(mode).save(out, fmt)
        seeds.append(out.getvalue())
    return seeds


@cache
def _run_template() -> Path:
    """A real run folder, trained for one epoch on 64 real images, with stand-ins for its figures."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-run-"))
    raw = _real_test_images(96)
    labels = np.arange(96) % 10
    split = data.Split(data.normalise(raw[:64]), labels[:64])
    dataset = data.Dataset(
        split,
        data.Split(data.normalise(raw[64:80]), labels[64:80]),
        data.Split(data.normalise(raw[80:]), labels[80:]),
        "fuzz",
    )
    cfg = config.TrainConfig(hidden_sizes=(4,), epochs=1, batch_size=16, val_size=16, hardest_of=1)
    runs.run(cfg, dataset, root / "run")
    pixel = io.BytesIO()
    Image.new("L", (1, 1)).save(pixel, "PNG")
    for path in figures.figure_paths(root / "run").values():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(pixel.getvalue())
    (root / "search").mkdir()
    (root / "search" / "results.csv").write_text("trial,lr,val_accuracy\n0,0.1,0.8\n1,1.0,\n2,0.5,0.85\n")
    return root


def _copy_run(scratch: Path) -> Path:
    shutil.copytree(_run_template(), scratch, dirs_exist_ok=True)
    return scratch / "run"


def _run_file(name: str) -> Callable[[], list[bytes]]:
    return lambda: [(_run_template() / "run" / name).read_bytes()]


# ---------------------------------------------------------------- the loaders


def _load_idx(payload: bytes, scratch: Path) -> object:
    (scratch / "file").write_bytes(payload)
    return idx.read_idx(scratch / "file")


def _load_idx_gzip(payload: bytes, scratch: Path) -> object:
    (scratch / "file.gz").write_bytes(gzip.compress(payload, mtime=0))
    return idx.read_idx(scratch / "file.gz")


def _load_checkpoint(payload: bytes, scratch: Path) -> object:
    (scratch / "model.npz").write_bytes(payload)
    return checkpoint.load(scratch / "model.npz")


def _load_image(payload: bytes, scratch: Path) -> object:
    (scratch / "photo").write_bytes(payload)
    return images.load_image(scratch / "photo")


def _load_toml(payload: bytes, scratch: Path) -> object:
    (scratch / "settings.toml").write_bytes(payload)
    return config.make_config("default", scratch / "settings.toml")


def _load_run_config(payload: bytes, scratch: Path) -> object:
    run_dir = _copy_run(scratch)
    (run_dir / "config.json").write_bytes(payload)
    return report.write(run_dir)  # reads config.json (as plot does too, through read_config)


def _load_run_summary(payload: bytes, scratch: Path) -> object:
    run_dir = _copy_run(scratch)
    (run_dir / "summary.json").write_bytes(payload)
    return report.write(run_dir)


def _load_metrics(payload: bytes, scratch: Path) -> object:
    (scratch / "metrics.csv").write_bytes(payload)
    return runs.read_metrics(scratch / "metrics.csv")


def _replace_meta(path: Path, payload: bytes) -> None:
    """Put ``payload`` where the checkpoint's JSON metadata is (outside the arrays' checksum)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    meta = io.BytesIO()
    np.save(meta, np.frombuffer(payload, dtype=np.uint8))
    members[checkpoint.META_KEY + ".npy"] = meta.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)


def _meta_of(path: Path) -> bytes:
    """A checkpoint's JSON metadata, as the bytes a seed is made of."""
    with zipfile.ZipFile(path) as archive:
        raw = archive.read(checkpoint.META_KEY + ".npy")
    return np.load(io.BytesIO(raw)).tobytes()


def _load_resume_state(payload: bytes, scratch: Path) -> object:
    """The metadata of last.npz, which --resume reads and which no checksum covers."""
    run_dir = _copy_run(scratch)
    _replace_meta(run_dir / "last.npz", payload)
    return runs.load_state(run_dir)


@cache
def _estimator_template() -> Path:
    """A fitted scikit-learn estimator saved by MLPClassifier.save: weights, optimiser, training state."""
    from fashion_mlp.sklearn import MLPClassifier

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 5)).astype(np.float32), np.arange(60) % 3
    path = Path(tempfile.mkdtemp(prefix="fuzz-estimator-")) / "clf.npz"
    MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, dropout=0.1, random_state=0).fit(x, y).save(path)
    return path


def _load_estimator(payload: bytes, scratch: Path) -> object:
    """The metadata of an estimator's file, which MLPClassifier.load reads and no checksum covers."""
    from fashion_mlp.sklearn import MLPClassifier

    path = scratch / "clf.npz"
    shutil.copy(_estimator_template(), path)
    _replace_meta(path, payload)
    return MLPClassifier.load(path)


def _estimator_seed() -> list[bytes]:
    return [_meta_of(_estimator_template())]


def _resume_seed() -> list[bytes]:
    return [_meta_of(_run_template() / "run" / "last.npz")]


def _load_search_results(payload: bytes, scratch: Path) -> object:
    run_dir = _copy_run(scratch)
    (scratch / "search" / "results.csv").write_bytes(payload)
    return report.build(run_dir, scratch / "search")


# ---------------------------------------------------------------- the server's request parsers


class ServerRefused(ValueError):
    """A 4xx: the server refused the request properly (the property for the server's targets)."""


@cache
def _app():
    from fashion_mlp.serve.app import Limits, create_app, load_model

    path = _run_template() / "serve.npz"
    if not path.exists():
        meta = {"normalisation": data.NORMALISATION, "class_names": list(data.CLASS_NAMES)}
        checkpoint.save(path, MLP([784, 8, 10], np.random.default_rng(0)), meta)
    limits = Limits(max_body_bytes=1 << 20, max_rows=64, max_image_pixels=1 << 20, read_timeout_s=5)
    return create_app({"m": load_model("m", path)}, limits)


def _asgi(path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One request through the whole app, as uvicorn would hand it over; the response's status."""
    import asyncio

    route, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    status: list[int] = []
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    asyncio.run(_app()(scope, receive, send))
    return status[0]


def _serve_check(status: int) -> object:
    if status >= 500:
        raise AssertionError(f"the server answered {status}")
    if status >= 400:
        raise ServerRefused(status)
    return status


def _load_infer_json(payload: bytes, scratch: Path) -> object:
    return _serve_check(_asgi("/v2/models/m/infer", payload, [(b"content-type", b"application/json")]))


def _load_infer_binary(payload: bytes, scratch: Path) -> object:
    """The first 4 bytes choose the Inference-Header-Content-Length; the rest is the body."""
    length = int.from_bytes(payload[:4].ljust(4, b"\0"), "little") % (len(payload) + 8)
    headers = [(b"inference-header-content-length", str(length).encode())]
    return _serve_check(_asgi("/v2/models/m/infer", payload[4:], headers))


def _load_multipart(payload: bytes, scratch: Path) -> object:
    headers = [(b"content-type", b"multipart/form-data; boundary=XyZ")]
    return _serve_check(_asgi("/classify?top_k=3", payload, headers))


def _infer_seeds() -> list[bytes]:
    one = {
        "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0, 255] * 392}],
        "outputs": [{"name": "label"}, {"name": "class_name", "parameters": {"binary_data": True}}],
        "id": "a",
    }
    return [json.dumps(one).encode()]


def _binary_seeds() -> list[bytes]:
    tensor = {
        "name": "pixels",
        "datatype": "FP32",
        "shape": [1, 784],
        "parameters": {"binary_data_size": 3136},
    }
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    pixels = _real_test_images(1).astype(np.float32).tobytes()
    return [len(header).to_bytes(4, "little") + header + pixels]


def _multipart_seeds() -> list[bytes]:
    head = b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
    return [head + b"Content-Type: image/png\r\n\r\n" + _image_seeds()[0] + b"\r\n--XyZ--\r\n"]


TOML_SEED = (
    b'[train]\nhidden_sizes = [256, 128]\nlr = 0.05\nepochs = 3\nschedule = "cosine"\nnesterov = true\n'
)

TARGETS = {
    t.name: t
    for t in [
        Target("idx", _load_idx, _idx_seeds, (b"\x00\x00\x08\x03", b"\x00\x00\x08\x01")),
        Target("idx-gzip", _load_idx_gzip, _idx_seeds, (b"\x00\x00\x08\x03", b"\x00\x00\x08\x01")),
        Target(
            "checkpoint",
            _load_checkpoint,
            _checkpoint_seeds,
            (b"{'descr'", b"PK\x03\x04", b"PK\x01\x02", b"\x93NUMPY", b'"sizes"'),
        ),
        Target(
            "image", _load_image, _image_seeds, (b"IHDR", b"IDAT", b"PLTE", b"tRNS", b"\xff\xc0", b"\xff\xda")
        ),
        Target("toml", _load_toml, lambda: [TOML_SEED], (b"=", b"[", b'"')),
        Target("run-config", _load_run_config, _run_file("config.json"), (b":", b"[", b'"')),
        Target("run-summary", _load_run_summary, _run_file("summary.json"), (b":", b"[", b'"')),
        Target("metrics", _load_metrics, _run_file("metrics.csv"), (b",", b"\n")),
        Target("resume", _load_resume_state, _resume_seed, (b'"rng_state"', b'"history"', b'"config"', b":")),
        Target(
            "estimator",
            _load_estimator,
            _estimator_seed,
            (b'"train_state"', b'"params"', b'"fitted"', b'"classes"', b":"),
        ),
        Target(
            "serve-infer-json", _load_infer_json, _infer_seeds, (b'"shape"', b'"data"', b'"outputs"', b":")
        ),
        Target("serve-infer-binary", _load_infer_binary, _binary_seeds, (b'"binary_data_size"', b"}]")),
        Target("serve-multipart", _load_multipart, _multipart_seeds, (b"--XyZ", b"Content-", b"\r\n\r\n")),
        Target(
            "search-results",
            _load_search_results,
            lambda: [(_run_template() / "search" / "results.csv").read_bytes()],
            (b",", b"\n"),
        ),
    ]
}
