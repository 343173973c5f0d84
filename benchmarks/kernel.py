"""The BLAS kernel the benchmarks measure: the one a user's machine would pick, checked first.

This project's build machines set ``OPENBLAS_CORETYPE=Haswell`` and ``OPENBLAS_L2_SIZE=512``, a
workaround for old OpenBLAS builds. With them, OpenBLAS runs its AVX2 (Haswell) kernels; a user's
machine sets neither, and OpenBLAS then picks what its processor supports (SkylakeX, with AVX-512, on
these AMD EPYCs): twice as fast on a Zen 5 host, no faster on a Zen 4 (docs/speed.md). PyTorch and
ONNX Runtime choose their own kernels and read neither.
So every benchmark first calls ``use_the_users_kernel()``:

1. where neither variable is set, there is nothing to do: the kernel is already the user's;
2. otherwise a child process, with both unset, checks that the kernel OpenBLAS then picks computes
   right: float32 products at the benchmarks' shapes against float64 ones, and back-propagation of a
   fully connected and a convolutional network against finite differences;
3. if it passes, the benchmark starts again with both unset (``os.execve``), so that it and every
   process it starts, ours and the peers', run on that kernel; if it fails, the benchmark keeps the
   variables and says so, in its output and its results.

Tests and ``.ci/run`` keep the environment as it is. ``describe()`` names the kernel a benchmark ran
on, from threadpoolctl: its architecture, OpenBLAS's version and threads, and the matmul rate.

    python benchmarks/kernel.py           # the check, in this environment, and the kernel's name
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

HELD_BACK = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DECIDED = "FASHION_MLP_BENCH_KERNEL"  # set once decided: how the benchmark's environment was chosen
# (m, k, n) of the products the benchmarks time: the MLPs' at batch 128 and 10,000, the cnn preset's
# second convolution at batch 128, a batch of one, and odd sizes that take the kernels' edge paths
SHAPES = [
    (2048, 2048, 2048),
    (128, 784, 1024),
    (128, 1024, 1024),
    (10_000, 784, 1024),
    (25_088, 288, 64),
    (128, 784, 128),
    (1, 784, 1024),
    (37, 13, 77),
]
TOLERANCE = 1e-4  # float32's error bound is about sqrt(k) * 6e-8 of |a| @ |b|; a wrong kernel gives ~1


def product_errors(
    matmul: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.matmul, shapes: list | None = None
) -> dict[str, float]:
    """For each shape, and for both transposes the backward pass uses: the largest error of the float32
    product ``matmul`` gives against float64, relative to |a| @ |b| (the sum's size before cancelling)."""
    rng = np.random.default_rng(0)
    errors = {}
    for m, k, n in shapes or SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        g = rng.standard_normal((m, n), dtype=np.float32)
        # forward (a @ b), the weights' gradient (a.T @ g) and the input's (g @ b.T)
        for name, x, y in (("a@b", a, b), ("aT@g", a.T, g), ("g@bT", g, b.T)):
            got = matmul(x, y)
            want = x.astype(np.float64) @ y.astype(np.float64)
            scale = np.abs(x).astype(np.float64) @ np.abs(y).astype(np.float64)
            errors[f"{name} {m}x{k}x{n}"] = float(np.max(np.abs(got - want) / np.maximum(scale, 1e-30)))
    return errors


def gradient_checks() -> dict[str, float]:
    """The largest relative error of back-propagation against finite differences, per network."""
    from fashion_mlp.nn import MLP, Network, check_gradients, cnn_records

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (8, 784))
    y = rng.integers(0, 10, 8)
    networks = {
        "784-64-32-10": MLP([784, 64, 32, 10], rng, dtype=np.float64),
        "conv4-pool-conv8-pool-fc16": Network(
            cnn_records((28, 28, 1), (4, 8), (16,), 10, 0.0), 784, rng, dtype=np.float64
        ),
    }
    return {
        name: max(c.max_relative_error for c in check_gradients(net, x, y, entries=10, rng=rng))
        for name, net in networks.items()
    }


def check() -> list[str]:
    """What the kernel in this process gets wrong; empty where it computes right."""
    from fashion_mlp.nn import TOLERANCE as GRADIENT_TOLERANCE

    problems = [f"{k}: error {e:.1e}" for k, e in product_errors().items() if not e <= TOLERANCE]
    problems += [
        f"gradients of {k}: error {e:.1e}"
        for k, e in gradient_checks().items()
        if not e <= GRADIENT_TOLERANCE
    ]
    return problems


def decide(
    environ: Mapping[str, str], run_check: Callable[[dict[str, str]], tuple[bool, str]]
) -> tuple[dict[str, str] | None, str]:
    """The environment the benchmark should run in, or None to go on as it is, and what was decided.

    ``run_check(env)`` runs the check in a child process with ``env`` and says whether it passed."""
    if DECIDED in environ:
        return None, environ[DECIDED]
    held = {k: environ[k] for k in HELD_BACK if k in environ}
    if not held:
        return None, "as the machine picks it (neither OPENBLAS_CORETYPE nor OPENBLAS_L2_SIZE set)"
    unset = {k: v for k, v in environ.items() if k not in HELD_BACK}
    named = ", ".join(f"{k}={v}" for k, v in held.items())
    passed, report = run_check(unset)
    if passed:
        return {**unset, DECIDED: f"the user's: {named} unset, after the kernel check passed"}, ""
    return None, f"KEPT {named}: with them unset, the kernel check failed ({report.strip()})"


def _run_check(env: dict[str, str]) -> tuple[bool, str]:
    child = subprocess.run(
        [sys.executable, __file__, "--check-only"], env=env, capture_output=True, text=True, timeout=1200
    )
    return child.returncode == 0, (child.stdout + child.stderr)[-2000:]


def use_the_users_kernel() -> str:
    """Call first in a benchmark's main(): re-executes it with the user's kernel where the check allows
    (this call then does not return), or goes on; returns how the kernel was chosen."""
    env, decided = decide(os.environ, _run_check)
    if env is not None:
        print(f"kernel: {env[DECIDED]}; starting again with them unset", file=sys.stderr, flush=True)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    os.environ[DECIDED] = decided  # the processes it starts inherit the decision
    if decided.startswith("KEPT"):
        print(f"kernel: {decided}", file=sys.stderr, flush=True)
    return decided


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """NumPy's own float32 n x n x n product, the best of a few, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def processor() -> str:
    """The processor's name, family and model from /proc/cpuinfo: one name covers hosts whose vector
    units differ (this project's "AMD EPYC" has been family 25, Zen 4, whose AVX-512 runs in two
    256-bit halves, and family 26, Zen 5, whose does not)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as info:
            for entry in info:
                key, _, value = entry.partition(":")
                if key.strip() in ("model name", "cpu family", "model") and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
                if not entry.strip() and fields:
                    break
    except OSError:
        return "unknown processor"
    name, family, model = (fields.get(k, "?") for k in ("model name", "cpu family", "model"))
    return f"{name}, family {family} model {model}"


def numpys_blas(libraries: list[dict]) -> dict:
    """NumPy's BLAS among threadpoolctl's libraries: the one our maths runs on. SciPy, which
    scikit-learn and dask import, brings its own OpenBLAS (another version, in ``scipy.libs``), and
    threadpoolctl may list it first."""
    blas = [lib for lib in libraries if lib.get("user_api") == "blas"]
    for lib in blas:
        if Path(lib.get("filepath", "")).parent.name.startswith("numpy"):
            return lib
    return blas[0] if blas else {}


def describe(matmul: float | None = None) -> dict:
    """The kernel this process runs on, for a benchmark's results and the head of its tables."""
    from threadpoolctl import threadpool_info

    lib = numpys_blas(threadpool_info())
    return {
        "library": lib.get("internal_api", "unknown"),
        "version": lib.get("version"),
        "architecture": lib.get("architecture"),
        "threads": lib.get("num_threads"),
        "processor": processor(),
        "chosen": os.environ.get(DECIDED, "as the machine picks it (not decided by kernel.py)"),
        "matmul_gflops": matmul if matmul is not None else matmul_gflops(),
    }


def line(kernel: dict) -> str:
    """One line naming the kernel, for the head of a table."""
    return (
        f"kernel: {kernel['library']} {kernel['version']} {kernel['architecture']}, "
        f"{kernel['threads']} threads, on {kernel.get('processor', 'an unrecorded processor')}; matmul "
        f"{kernel['matmul_gflops']:.0f} GFLOP/s (2048^3 float32); {kernel['chosen']}"
    )


def main() -> None:
    problems = check()
    if "--check-only" in sys.argv:
        print("\n".join(problems) or "the kernel computes right")
        raise SystemExit(1 if problems else 0)
    print(json.dumps({"problems": problems, "kernel": describe()}, indent=2))
    print(line(describe()))
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
