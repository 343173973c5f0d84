"""Timing in turns, shared by the benchmarks: epochs of several runners taken one at a time, and the
machine's own matrix-product rate measured among them, so that a shared machine's drift reaches every
runner alike."""

from __future__ import annotations

import time

import numpy as np

SETTLE_S = 0.5  # seconds between runners: the previous one's idle threads stop spinning


def interleaved_epoch_seconds(runners: dict, epochs: int) -> dict[str, list[float]]:
    """Seconds per epoch of each runner, taking one epoch from each in turn, so that a shared machine's
    drift in speed reaches every peer alike. The first epoch of each, a warm-up, is dropped."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(epochs + 1):
        for name, runner in runners.items():
            time.sleep(SETTLE_S)  # let the previous peer's idle threads stop spinning
            times[name].append(next(runner))
    return {name: seconds[1:] for name, seconds in times.items()}


MATMUL_N = 2048


def matmul_products(n: int = MATMUL_N, per_round: int = 3):
    """NumPy's own float32 matmul on an n x n x n product; yields the fastest of a few per round."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    while True:
        times = []
        for _ in range(per_round):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            times.append(time.perf_counter() - start)
        yield min(times)
