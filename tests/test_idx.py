"""The IDX parser: valid files, and each kind of corruption refused with its message."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fashion_mlp.idx import read_idx
from tests.conftest import idx_bytes

GOOD_IMAGES = np.zeros((3, 28, 28), dtype=np.uint8)
GOOD_LABELS = np.array([0, 5, 9], dtype=np.uint8)


def write(tmp_path, raw: bytes, name="x-idx.gz", compress=True) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_reads_valid_images_and_labels_gzipped_or_raw(tmp_path):
    images = read_idx(write(tmp_path, idx_bytes(GOOD_IMAGES)))
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    labels = read_idx(write(tmp_path, idx_bytes(GOOD_LABELS), "raw", compress=False))
    np.testing.assert_array_equal(labels, GOOD_LABELS)


@pytest.mark.parametrize(
    "raw, message",
    [
        (struct.pack(">II", 2052, 3) + bytes(3), "magic number 2052"),
        (struct.pack(">IIII", 2051, 3, 32, 32) + bytes(3 * 32 * 32), "32x32, expected 28x28"),
        (struct.pack(">IIII", 2051, 4_000_000_000, 28, 28), "claims 4,000,000,000 items"),
        (idx_bytes(GOOD_IMAGES)[:-10], "truncated data"),
        (idx_bytes(GOOD_IMAGES) + b"\0", "longer than its header"),
        (idx_bytes(GOOD_LABELS)[:5], "truncated header"),
        (idx_bytes(np.array([1, 10], dtype=np.uint8)), "label 10 is outside 0-9"),
    ],
)
def test_rejects_each_kind_of_corruption(tmp_path, raw, message):
    path = write(tmp_path, raw)
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_rejects_a_truncated_gzip(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(GOOD_IMAGES))[:-12])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_rejects_a_checksum_mismatch_and_says_what_to_do(tmp_path):
    path = write(tmp_path, idx_bytes(GOOD_LABELS))
    with pytest.raises(ValueError, match="checksum mismatch.*fashion-mlp data"):
        read_idx(path, expected_sha256="0" * 64)
