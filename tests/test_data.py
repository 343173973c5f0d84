import gzip
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from fashion_mlp import data
from tests.conftest import idx_bytes, write_idx_set


def test_image_and_label_counts_must_agree(tmp_path):
    write_idx_set(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(19, dtype=np.uint8))))
    paths = {k: data.find_file(tmp_path, k) for k in data.FILES}
    with pytest.raises(ValueError, match="holds 20 images but .*t10k-labels.* holds 19 labels"):
        data.read_arrays(paths, verify=False)


def test_unofficial_files_fail_verification(tmp_path):
    write_idx_set(tmp_path)
    with pytest.raises(ValueError, match="train-images.*checksum mismatch"):
        data.load(tmp_path)


def test_real_files_verify_and_split_reproducibly(real_data):
    assert (len(real_data.train), len(real_data.val), len(real_data.test)) == (45_000, 15_000, 10_000)
    assert real_data.train.x.dtype == np.float32 and real_data.train.x.shape[1] == 784
    assert real_data.train.x.min() == -1.0 and real_data.train.x.max() == 1.0
    assert np.bincount(real_data.test.y).tolist() == [1000] * 10
    again = data.load(allow_download=False)
    np.testing.assert_array_equal(again.val.y, real_data.val.y)
    other = data.load(allow_download=False, split_seed=1, val_size=10_000)
    assert len(other.val) == 10_000 and not np.array_equal(other.val.y[:100], real_data.val.y[:100])


def test_a_validation_size_of_0_keeps_every_training_image():
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    train, val = data.split_train_val(images, np.arange(5), 0, seed=3)
    assert train.x.shape == (5, 784) and train.y.tolist() == [0, 1, 2, 3, 4]
    assert val.x.shape == (0, 784) and val.x.dtype == np.float32 and len(val) == 0


def test_search_order_is_flag_env_cache_debian(tmp_path, monkeypatch):
    flag, env = tmp_path / "flag", tmp_path / "env"
    write_idx_set(flag)
    write_idx_set(env)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(env))
    assert data.locate(flag).source.startswith("--data-dir")
    assert data.locate().source.startswith("FASHION_MNIST_DIR")
    monkeypatch.delenv("FASHION_MNIST_DIR")
    write_idx_set(data.cache_dir())
    assert data.locate().source.startswith("cache")
    with pytest.raises(FileNotFoundError, match="missing train-images-idx3-ubyte"):
        data.locate(tmp_path / "empty")


class _Server:
    """Serves a folder on 127.0.0.1 and counts the requests."""

    def __init__(self, folder: Path) -> None:
        counter = self
        self.requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, *args):
                counter.requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path, monkeypatch, real_data):
    """A local mirror holding copies of the real files (so their checksums are the official ones)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    source = data.locate(allow_download=False)
    for path in source.paths.values():
        shutil.copy(path, folder / (path.name if path.suffix == ".gz" else path.name + ".gz"))
    server = _Server(folder)
    monkeypatch.setenv("FASHION_MNIST_MIRROR", server.url)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    yield folder, server
    server.close()


def test_downloads_verifies_then_uses_the_cache(mirror):
    folder, server = mirror
    located = data.locate(log=lambda m: None)
    assert located.source.startswith("downloaded")
    assert sorted(p.name for p in data.cache_dir().iterdir()) == sorted(p.name for p in folder.iterdir())
    assert len(server.requests) == 4
    data.verify(located)
    again = data.locate()
    assert again.source.startswith("cache") and len(server.requests) == 4  # no new request


def test_a_corrupt_download_is_rejected_and_leaves_nothing(mirror):
    folder, _server = mirror
    name = "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress((folder / name).read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # a valid file with one changed label
    (folder / name).write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(OSError, match="checksum mismatch"):
        data.download("train-labels", data.cache_dir())
    assert list(data.cache_dir().iterdir()) == []


def test_a_dead_mirror_falls_through_to_the_next(mirror, monkeypatch):
    _, server = mirror
    monkeypatch.setenv("FASHION_MNIST_MIRROR", f"http://127.0.0.1:9/, {server.url}")
    path = data.download("test-labels", data.cache_dir())
    assert path.name == "t10k-labels-idx1-ubyte.gz"


def test_without_data_or_download_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.locate(allow_download=False)


def test_augment_flips_and_shifts_in_place():
    rng = np.random.default_rng(0)
    batch = np.full((64, 784), -1.0, dtype=np.float32)
    batch.reshape(64, 28, 28)[:, 10:18, 4:8] = 1.0  # a bar left of centre
    before = batch.copy()
    data.augment_batch(batch, rng)
    assert batch.shape == before.shape and not np.array_equal(batch, before)
    assert (batch.sum(axis=1) <= before.sum(axis=1) + 1e-3).all()  # shifting never adds foreground
    centres = (batch.reshape(64, 28, 28) > 0).nonzero()[2].mean()
    assert 8 < centres < 20  # about half flipped to the right
