"""Shared fixtures: the real data (loaded once), small IDX files, and a small trained run."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fashion_mlp import data, idx


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode uint8 images (N, 28, 28) or labels (N,) as IDX."""
    if array.ndim == 3:
        header = struct.pack(">IIII", idx.IMAGE_MAGIC, *array.shape)
    else:
        header = struct.pack(">II", idx.LABEL_MAGIC, len(array))
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> None:
    """Four small, valid (but not official) IDX files, gzipped, under the official names."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        (folder / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{part}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


@pytest.fixture(scope="session")
def real_data() -> data.Dataset:
    """The real Fashion-MNIST; `make test` fetches it first, so its absence is a failure, not a skip."""
    return data.load(allow_download=False)


@pytest.fixture(scope="session")
def small_data(real_data) -> data.Dataset:
    """A 3,000 / 1,000 / 1,000 slice of the real data, for quick runs."""
    return data.Dataset(
        data.Split(real_data.train.x[:3000], real_data.train.y[:3000]),
        data.Split(real_data.val.x[:1000], real_data.val.y[:1000]),
        data.Split(real_data.test.x[:1000], real_data.test.y[:1000]),
        real_data.source,
    )


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache or environment from a test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.delenv("FASHION_MNIST_MIRROR", raising=False)


@pytest.fixture(scope="session")
def small_run(small_data, tmp_path_factory) -> Path:
    """A finished two-epoch run on the small slice: config, metrics, best/last checkpoints, summary."""
    from fashion_mlp import runs
    from fashion_mlp.config import TrainConfig

    run_dir = tmp_path_factory.mktemp("runs") / "small"
    run_dir.mkdir()
    # hardest_of 1: learning from every image, so that two epochs of 3,000 make 24 steps, not 8
    config = TrainConfig(hidden_sizes=(64, 32), epochs=2, lr=0.1, decay=0.001, momentum=0.9, hardest_of=1)
    runs.run(config, small_data, run_dir)
    return run_dir
