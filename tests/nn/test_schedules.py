import math

import pytest

from fashion_mlp.nn import Schedule


def test_inverse_time_is_the_reports_decay_per_step():
    s = Schedule("inverse_time", lr=1.0, decay=0.1)
    assert [s.lr_at(t) for t in (0, 1, 10, 352)] == pytest.approx([1.0, 1 / 1.1, 0.5, 1 / 36.2])


def test_constant_step_and_cosine():
    assert Schedule("constant", lr=0.3).lr_at(10_000) == 0.3
    step = Schedule("step", lr=1.0, step_size=100, gamma=0.5)
    assert [step.lr_at(t) for t in (0, 99, 100, 250)] == [1.0, 1.0, 0.5, 0.25]
    cos = Schedule("cosine", lr=2.0, total_steps=100)
    assert [cos.lr_at(t) for t in (0, 50, 100, 200)] == pytest.approx([2.0, 1.0, 0.0, 0.0], abs=1e-12)
    assert cos.lr_at(25) == pytest.approx(1.0 + math.cos(math.pi / 4))


def test_warmup_rises_linearly_then_hands_over():
    s = Schedule("cosine", lr=1.0, total_steps=110, warmup_steps=10)
    assert [s.lr_at(t) for t in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(10) == pytest.approx(1.0)  # the cosine starts at its peak after warm-up
    assert s.lr_at(60) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"kind": "linear"}, "unknown schedule"), ({"lr": 0.0}, "positive"), ({"decay": -1.0}, "decay")],
)
def test_bad_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)
