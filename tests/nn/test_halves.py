"""Two halves of a batch at once (nn/halves.py): the same bits as one call, errors surfaced, no
deadlock inside a split, and the OpenBLAS setting the package makes when it is imported first."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from fashion_mlp.nn import SGD, Adam, Network, Parameter, cnn_records, halves, softmax_cross_entropy


def one_step(enabled: bool, monkeypatch) -> dict[str, np.ndarray]:
    """A training step of a small CNN on 40 images (the hardest 20 kept), and an inference pass."""
    monkeypatch.setattr(halves, "ENABLED", enabled)
    monkeypatch.setattr(halves, "SMALLEST", 1)  # split everything, however small
    rng = np.random.default_rng(0)
    network = Network(cnn_records((8, 8, 1), (3, 4), (6,), 10, dropout=0.2), 64, np.random.default_rng(1))
    x = rng.standard_normal((40, 64)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    logits = network.forward(x).copy()
    rows = np.arange(0, 40, 2)
    network.keep_rows(rows)
    _, grad = softmax_cross_entropy(logits[rows], y[rows], 0.0)
    network.backward(grad)
    result = {p.name: p.grad.copy() for p in network.parameters()}
    result["logits"] = logits
    result["inference"] = network.forward(x, training=False).copy()
    return result


def test_halves_give_the_bits_of_one_call(monkeypatch):
    whole, split = one_step(False, monkeypatch), one_step(True, monkeypatch)
    assert whole.keys() == split.keys() and len(whole) > 8
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name], err_msg=name)


def test_the_halves_are_the_batchs_two_halves(monkeypatch):
    monkeypatch.setattr(halves, "ENABLED", True)
    seen: list[tuple[int, int, str]] = []
    halves.halves(lambda lo, hi: seen.append((lo, hi, threading.current_thread().name)), 9, 1 << 20)
    assert sorted((lo, hi) for lo, hi, _ in seen) == [(0, 4), (4, 9)]
    assert len({name for *_, name in seen}) == 2  # two threads
    seen.clear()
    halves.halves(lambda lo, hi: seen.append((lo, hi, "")), 9, 100)  # too small to pay: one call
    assert seen == [(0, 9, "")]


def test_an_error_in_the_helpers_half_is_raised_in_the_caller(monkeypatch):
    monkeypatch.setattr(halves, "ENABLED", True)

    def fail_first_half(lo: int, hi: int) -> None:
        if lo == 0:
            raise ValueError("first half failed")

    with pytest.raises(ValueError, match="first half failed"):
        halves.halves(fail_first_half, 10, 1 << 20)


def test_a_split_inside_a_split_runs_whole_instead_of_waiting_on_itself(monkeypatch):
    monkeypatch.setattr(halves, "ENABLED", True)
    calls: list[tuple[int, int]] = []

    def outer(lo: int, hi: int) -> None:
        halves.halves(lambda a, b: calls.append((lo + a, lo + b)), hi - lo, 1 << 20)

    done = threading.Event()
    thread = threading.Thread(target=lambda: (halves.halves(outer, 8, 1 << 20), done.set()), daemon=True)
    thread.start()
    assert done.wait(60), "a nested split deadlocked"
    assert sorted(calls) == [(0, 4), (4, 6), (6, 8)]  # the helper's half ran whole; the caller's split again


CHECK = (
    "import os; {first}; from fashion_mlp.nn import halves; "
    "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), halves.ENABLED)"
)


@pytest.mark.parametrize(
    "first, env, expected",
    [
        ("import fashion_mlp", {}, "16 True"),  # imported before NumPy: the package cuts the spin
        ("import numpy", {}, "None False"),  # too late to change OpenBLAS: one call each
        ("import fashion_mlp", {"OPENBLAS_THREAD_TIMEOUT": "30"}, "30 False"),  # the user's own value stands
        ("import numpy", {"OPENBLAS_THREAD_TIMEOUT": "8"}, "8 True"),
        ("import fashion_mlp", {"OPENBLAS_THREAD_TIMEOUT": "soon"}, "soon False"),  # not a number: no split
    ],
)
def test_the_package_cuts_openblass_spin_only_when_imported_before_numpy(first, env, expected):
    import os

    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(first=first)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.split() == expected.split()


@pytest.mark.parametrize("weights, biases", [(12, 20), (30, 4)], ids=["split-in-biases", "split-in-weights"])
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: SGD(ps, momentum=0.9, l2=0.01, nesterov=True),
        lambda ps: SGD(ps, l2=0.01),
        lambda ps: Adam(ps, l2=0.01),
    ],
    ids=["sgd-nesterov", "sgd", "adam"],
)
def test_an_optimisers_update_in_halves_is_the_update_whole(monkeypatch, make, weights, biases):
    """The split falls among the weights, which L2 covers, or among the biases, which it does not."""

    def three_steps(enabled: bool) -> np.ndarray:
        monkeypatch.setattr(halves, "ENABLED", enabled)
        monkeypatch.setattr(halves, "SMALLEST", 1)
        rng = np.random.default_rng(2)
        params = [
            Parameter("w", rng.standard_normal(weights), decay=True),
            Parameter("b", rng.standard_normal(biases), decay=False),
        ]
        optimizer = make(params)
        for _ in range(3):
            for p in params:
                p.grad[...] = rng.standard_normal(p.grad.shape)
            optimizer.step(0.05)
        return optimizer.value.copy()

    np.testing.assert_array_equal(three_steps(True), three_steps(False))


def test_a_cnn_answers_several_threads_at_once_as_it_answers_one(monkeypatch):
    """As a threaded server calls it: every thread's answers split in halves over the one helper."""
    from concurrent.futures import ThreadPoolExecutor

    from fashion_mlp.nn import Inference

    monkeypatch.setattr(halves, "ENABLED", True)
    monkeypatch.setattr(halves, "SMALLEST", 1)
    network = Network(cnn_records((8, 8, 1), (3, 4), (6,), 10), 64, np.random.default_rng(1))
    answer = Inference(network, offset=127.5, scale=127.5).predict_proba
    batches = [np.random.default_rng(i).uniform(0, 255, (20 + i, 64)).astype(np.float32) for i in range(8)]
    expected = [answer(x) for x in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(answer, batches))
            for g, e in zip(got, expected):
                np.testing.assert_array_equal(g, e)
