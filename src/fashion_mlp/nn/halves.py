"""The second core for the copies and elementwise passes: a batch in two halves, at once.

OpenBLAS runs a matrix product on both cores; NumPy runs every ufunc and copy on one. In a
convolutional network's step those copies (im2col, padding) and passes (pooling, batch norm, ReLU)
take about half the time, with the second core idle. ``halves(fn, n, size)`` calls ``fn(lo, hi)`` for the
two halves of a batch of ``n`` at once, one in a helper thread: NumPy lets go of Python's lock inside
each large call, so the halves run on two cores. Only elementwise work and copies are split, each
half writing its own rows, so the result is bit for bit the one call's.

One catch: after a product, OpenBLAS's idle threads spin, waiting for the next one, for 2^28 cycles
(about a tenth of a second), and hold the second core meanwhile; a split copy then runs slower than
a whole one. ``OPENBLAS_THREAD_TIMEOUT=16`` cuts the spin to 2^16 cycles (about 25 µs), enough to
bridge the gaps between one answer's products, and costs products nothing we could measure
(docs/speed.md). OpenBLAS reads it once, when NumPy is first imported: the package sets it if it is
imported before NumPy (the command line always is), and the halves run only if it is set. Otherwise,
or for small batches, ``halves`` makes the one call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def _spin_cut() -> bool:
    """Whether OPENBLAS_THREAD_TIMEOUT asks for a spin of 2^20 cycles or less (OpenBLAS takes 4 to 30)."""
    try:
        return 4 <= int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "")) <= 20
    except ValueError:  # unset, empty or not a number: OpenBLAS keeps its own 2^28
        return False


# Whether to split: OpenBLAS's spin was cut (see above). Tests switch it on and off.
ENABLED = _spin_cut()
SMALLEST = 1 << 20  # values the call touches: below this, one call (a hand-off costs 50-80 µs)

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_helper = threading.local()  # set in the helper thread: a split inside a split runs whole


def _start() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                1, "fashion-mlp-half", initializer=setattr, initargs=(_helper, "on", True)
            )
        return _pool


def halves(fn: Callable[[int, int], object], n: int, size: int) -> None:
    """fn(0, n // 2) and fn(n // 2, n), at once on two cores where that pays; else fn(0, n).
    ``size``: how many values the whole call reads or writes, to judge whether splitting pays."""
    if not ENABLED or size < SMALLEST or n < 2 or getattr(_helper, "on", False):
        fn(0, n)
        return
    middle = n // 2
    other = _start().submit(fn, 0, middle)
    try:
        fn(middle, n)
    finally:
        other.result()  # waits, and raises what the helper raised


def batch_rows(array, axis: int, lo: int, hi: int):  # type: ignore[no-untyped-def]
    """array[lo:hi] along ``axis``: a view."""
    return array[(slice(None),) * axis + (slice(lo, hi),)]
