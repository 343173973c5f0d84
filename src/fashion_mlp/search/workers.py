"""Several worker processes of one search on this machine, and the data a worker trains on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from ..data import Dataset, Split

ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def without_test(dataset: Dataset, limit_train: int | None = None) -> Dataset:
    """The data a search may see: the training images (the first ``limit_train``), validation, no test."""
    train = dataset.train
    if limit_train:
        train = Split(train.x[:limit_train], train.y[:limit_train])
    empty = Split(dataset.test.x[:0], dataset.test.y[:0])
    return Dataset(train, dataset.val, empty, dataset.source)


def run_workers(python_args: list[str], n: int, on_tick: Callable[[], None], tick: float = 2.0) -> None:
    """Start ``n`` processes of ``python python_args``, each with one BLAS thread, and wait for them.

    ``on_tick`` runs every ``tick`` seconds meanwhile. If this process is interrupted, the workers
    are stopped too; a worker that fails is an OSError.
    """
    env = {**os.environ, **ONE_THREAD}
    children = [subprocess.Popen([sys.executable, *python_args], env=env) for _ in range(n)]
    try:
        while any(child.poll() is None for child in children):
            on_tick()
            time.sleep(tick)
        on_tick()
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            child.wait()
    failed = [child.returncode for child in children if child.returncode]
    if failed:
        raise OSError(f"{len(failed)} of {n} workers failed (exit codes {failed})")
