"""Optimiser steps against their closed forms, computed independently in float64."""

import numpy as np
import pytest

from fashion_mlp.nn import MLP, SGD, Adam, Parameter, Schedule, softmax_cross_entropy


def make_params(rng):
    weight = Parameter("w", rng.standard_normal((3, 2)), decay=True)
    bias = Parameter("b", rng.standard_normal(2), decay=False)
    return weight, bias


def run_steps(optimizer, params, grads, schedule):
    for t, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads):
            p.grad[...] = g
        optimizer.step(schedule.lr_at(t))  # the rate is the schedule's alone


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_l2_and_decay_match_the_closed_form(nesterov):
    rng = np.random.default_rng(0)
    weight, bias = make_params(rng)
    w0, b0 = weight.value.copy(), bias.value.copy()
    grads = [[rng.standard_normal((3, 2)), rng.standard_normal(2)] for _ in range(5)]
    lr, mu, l2, decay = 0.5, 0.8, 0.01, 0.1
    schedule = Schedule("inverse_time", lr=lr, decay=decay)
    run_steps(SGD([weight, bias], mu, l2, nesterov), [weight, bias], grads, schedule)

    w, b, vw, vb = w0.copy(), b0.copy(), np.zeros_like(w0), np.zeros_like(b0)
    for t, (gw, gb) in enumerate(grads):
        rate = lr / (1 + decay * t)
        gw = gw + l2 * w  # L2 on the weight only, never the bias
        vw, vb = mu * vw + rate * gw, mu * vb + rate * gb
        if nesterov:
            w, b = w - (mu * vw + rate * gw), b - (mu * vb + rate * gb)
        else:
            w, b = w - vw, b - vb
    np.testing.assert_allclose(weight.value, w, rtol=1e-12)
    np.testing.assert_allclose(bias.value, b, rtol=1e-12)


def test_optimizer_packs_parameters_into_one_buffer_the_layers_keep_using():
    rng = np.random.default_rng(5)
    model = MLP([4, 3, 2], rng)
    before = model.state_dict()
    optimizer = SGD(model.parameters(), momentum=0.9, l2=0.1)
    for p in model.parameters():
        assert np.shares_memory(p.value, optimizer.value) and np.shares_memory(p.grad, optimizer.grad)
        np.testing.assert_array_equal(p.value, before[p.name])
    assert optimizer.n_decayed == 4 * 3 + 3 * 2  # weights first: L2 covers exactly them
    x, y = rng.standard_normal((5, 4)).astype(np.float32), np.array([0, 1, 1, 0, 1])
    model.backward(softmax_cross_entropy(model.forward(x), y)[1])
    grads = {p.name: p.grad.copy() for p in model.parameters()}
    optimizer.step(0.1)  # the first step of momentum SGD is w -= lr * (g + l2 * w)
    for p in model.parameters():
        decay = 0.1 * before[p.name] if p.decay else 0.0
        np.testing.assert_allclose(p.value, before[p.name] - 0.1 * (grads[p.name] + decay), rtol=1e-6)
    optimizer.zero_grad()
    assert not any(p.grad.any() for p in model.parameters())
    with pytest.raises(ValueError, match="at least one parameter"):
        SGD([])


def test_sgd_leaves_gradients_as_backward_wrote_them():
    rng = np.random.default_rng(1)
    weight, bias = make_params(rng)
    weight.grad[...] = 1.0
    SGD([weight, bias], momentum=0.9, l2=0.5).step(0.1)
    assert (weight.grad == 1.0).all()


def test_adam_matches_the_closed_form():
    rng = np.random.default_rng(2)
    weight, bias = make_params(rng)
    w0 = weight.value.copy()
    grads = [[rng.standard_normal((3, 2)), rng.standard_normal(2)] for _ in range(6)]
    lr, b1, b2, eps, l2 = 0.01, 0.9, 0.999, 1e-8, 0.1
    run_steps(
        Adam([weight, bias], beta1=b1, beta2=b2, eps=eps, l2=l2),
        [weight, bias],
        grads,
        Schedule("constant", lr),
    )

    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, (gw, _) in enumerate(grads, start=1):
        g = gw + l2 * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(weight.value, w, rtol=1e-10)


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal((3, 2)), rng.standard_normal(2)] for _ in range(4)]
    for make, lr in ((lambda ps: SGD(ps, 0.9), 0.1), (lambda ps: Adam(ps), 0.01)):
        schedule = Schedule("constant", lr)
        a = make_params(np.random.default_rng(4))
        b = make_params(np.random.default_rng(4))
        opt_a, opt_b = make(a), make(b)
        run_steps(opt_a, a, grads[:2], schedule)
        run_steps(opt_b, b, grads[:2], schedule)
        fresh = make(b)
        fresh.load_state_dict(opt_b.state_dict())
        run_steps(opt_a, a, grads[2:], schedule)
        run_steps(fresh, b, grads[2:], schedule)
        np.testing.assert_array_equal(a[0].value, b[0].value)
        assert fresh.steps == 4


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda ps: SGD(ps, momentum=1.0), "momentum"),
        (lambda ps: SGD(ps, l2=-1.0), "L2"),
        (lambda ps: SGD(ps, nesterov=True), "Nesterov"),
        (lambda ps: Adam(ps, beta1=1.0), "beta1"),
        (lambda ps: Adam(ps, eps=0.0), "eps"),
    ],
)
def test_bad_hyperparameters_raise_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_params(np.random.default_rng(0)))


@pytest.mark.parametrize("lr", [-0.1, float("nan")])
def test_a_step_at_a_negative_rate_raises_and_moves_nothing(lr):
    weight, bias = make_params(np.random.default_rng(0))
    before = weight.value.copy()
    with pytest.raises(ValueError, match=f"learning rate must be zero or positive, got {lr}"):
        SGD([weight, bias], momentum=0.9).step(lr)
    np.testing.assert_array_equal(weight.value, before)
