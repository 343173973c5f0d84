"""benchmarks/kernel.py: the benchmarks run on the kernel a user's machine picks, after a check that it
computes right, and keep this machine's OpenBLAS variables when the check fails."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("threadpoolctl", reason="in the test extra")
sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import kernel

HELD = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512", "PATH": "/bin"}


def test_with_nothing_held_back_the_benchmark_goes_on_as_it_is():
    env, decided = kernel.decide({"PATH": "/bin"}, lambda env: pytest.fail("no check is needed"))
    assert env is None and "neither OPENBLAS_CORETYPE nor OPENBLAS_L2_SIZE" in decided


def test_when_the_check_passes_the_benchmark_starts_again_without_the_variables():
    seen = []
    env, _ = kernel.decide(HELD, lambda env: (seen.append(env), (True, ""))[1])
    assert seen == [{"PATH": "/bin"}]  # the check itself ran with both unset
    assert {k: v for k, v in env.items() if k != kernel.DECIDED} == {"PATH": "/bin"}
    assert "OPENBLAS_CORETYPE=Haswell, OPENBLAS_L2_SIZE=512 unset" in env[kernel.DECIDED]


def test_when_the_check_fails_the_benchmark_keeps_the_variables_and_says_so():
    env, decided = kernel.decide(HELD, lambda env: (False, "a@b 128x784x1024: error 3.1e-01\n"))
    assert env is None
    assert decided == (
        "KEPT OPENBLAS_CORETYPE=Haswell, OPENBLAS_L2_SIZE=512: with them unset, the kernel check failed "
        "(a@b 128x784x1024: error 3.1e-01)"
    )


def test_a_decision_once_made_is_not_made_again():
    env, decided = kernel.decide({**HELD, kernel.DECIDED: "the user's"}, lambda env: pytest.fail("again"))
    assert env is None and decided == "the user's"


def test_the_product_check_passes_this_kernel_and_fails_a_wrong_one():
    shapes = [(128, 784, 128), (37, 13, 77)]
    assert max(kernel.product_errors(shapes=shapes).values()) <= kernel.TOLERANCE
    off_by_a_little = kernel.product_errors(lambda x, y: np.matmul(x, y) * np.float32(1.001), shapes)
    assert min(off_by_a_little.values()) > kernel.TOLERANCE
    half_precision = kernel.product_errors(lambda x, y: x.astype(np.float16) @ y.astype(np.float16), shapes)
    assert max(half_precision.values()) > kernel.TOLERANCE


def test_the_whole_check_passes_in_this_environment_and_names_its_kernel():
    assert kernel.check() == []
    described = kernel.describe(matmul=123.0)
    assert described["library"] == "openblas" and described["architecture"] and described["threads"] >= 1
    assert " family " in described["processor"] and " model " in described["processor"]
    assert kernel.line(described).startswith(f"kernel: openblas {described['version']} ")


def test_the_kernel_named_is_numpys_even_where_scipys_is_listed_first():
    scipys = {
        "user_api": "blas",
        "filepath": "/venv/site-packages/scipy.libs/libscipy_openblas-6c.so",
        "version": "0.3.30",
    }
    numpys = {
        "user_api": "blas",
        "filepath": "/venv/site-packages/numpy.libs/libscipy_openblas64_-32.so",
        "version": "0.3.31",
    }
    openmp = {"user_api": "openmp", "filepath": "/usr/lib/libgomp.so.1", "version": None}
    assert kernel.numpys_blas([openmp, scipys, numpys]) is numpys
    assert kernel.numpys_blas([scipys]) is scipys  # no NumPy's among them: the first BLAS, not nothing
    assert kernel.numpys_blas([openmp]) == {}


def test_in_this_process_the_kernel_named_is_the_one_numpy_loaded():
    pytest.importorskip("scipy.linalg")  # loads SciPy's own OpenBLAS beside NumPy's
    from threadpoolctl import threadpool_info

    libraries = threadpool_info()
    if not any(Path(lib["filepath"]).parent.name == "numpy.libs" for lib in libraries):
        pytest.skip("this NumPy is not a wheel with its own OpenBLAS")
    named = kernel.numpys_blas(libraries)
    assert Path(named["filepath"]).parent.name.startswith("numpy"), named
