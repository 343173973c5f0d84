"""The IDX file format of (Fashion-)MNIST, parsed strictly: every fault is a ValueError naming the file."""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import InvalidValue

IMAGE_SIDE = 28
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
MAX_ITEMS = 100_000  # above Fashion-MNIST's 60,000; a header claiming more is refused unread


def read_idx(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Parse an IDX file (gzip or raw): uint8 images (N, 28, 28) or labels (N,), strictly checked.

    Raises ValueError naming the file and the fault: bad magic, bad dimensions, a header that
    claims an absurd size, a length that does not match the header, a truncated gzip, labels
    outside 0-9, or (if ``expected_sha256`` is given) a checksum mismatch.
    """
    path = Path(path)
    with path.open("rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    digest = hashlib.sha256()
    try:
        with opener(path, "rb") as f:
            header = _read_exact(f, 8, path, "header")
            magic, count = struct.unpack(">II", header)
            if magic == IMAGE_MAGIC:
                dims = _read_exact(f, 8, path, "header")
                rows, cols = struct.unpack(">II", dims)
                if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
                    raise InvalidValue(f"{path}: images are {rows}x{cols}, expected 28x28")
                header += dims
                item_size = IMAGE_SIDE * IMAGE_SIDE
            elif magic == LABEL_MAGIC:
                item_size = 1
            else:
                raise InvalidValue(
                    f"{path}: not an IDX image or label file (magic number {magic}, "
                    f"expected {IMAGE_MAGIC} or {LABEL_MAGIC})"
                )
            if count > MAX_ITEMS:
                raise InvalidValue(f"{path}: header claims {count:,} items, more than {MAX_ITEMS:,}")
            body = _read_exact(f, count * item_size, path, "data")
            if f.read(1):
                raise InvalidValue(f"{path}: longer than its header says ({count:,} items)")
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InvalidValue(f"{path}: damaged or truncated gzip ({err})") from None
    digest.update(header)
    digest.update(body)
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
        raise InvalidValue(
            f"{path}: checksum mismatch (SHA-256 of the decompressed data is "
            f"{digest.hexdigest()[:16]}..., expected {expected_sha256[:16]}...); "
            "delete the file and run `fashion-mlp data` to fetch it again"
        )
    array = np.frombuffer(body, dtype=np.uint8)
    if magic == IMAGE_MAGIC:
        return array.reshape(count, IMAGE_SIDE, IMAGE_SIDE)
    if count and array.max() > 9:
        raise InvalidValue(f"{path}: label {int(array.max())} is outside 0-9")
    return array


def _read_exact(f, size: int, path: Path, what: str) -> bytes:  # type: ignore[no-untyped-def]
    data = f.read(size)
    if len(data) != size:
        raise InvalidValue(f"{path}: truncated {what} ({len(data):,} of {size:,} bytes)")
    return data
