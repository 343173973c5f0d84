"""Every layer's and the whole network's gradients against central finite differences (float64)."""

import numpy as np
import pytest

from fashion_mlp.nn import MLP, Centre, Dropout, Linear, ReLU, relu_, softmax_cross_entropy


def numeric_grad(f, array, eps=1e-6):
    """Central differences of the scalar f() with respect to every entry of ``array``."""
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        saved = array[i]
        array[i] = saved + eps
        plus = f()
        array[i] = saved - eps
        minus = f()
        array[i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def weighted_sum(layer, x, weights, training=True):
    """A scalar of the layer's output, so its gradient is ``weights``."""
    return float((layer.forward(x.copy(), training) * weights).sum())


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_linear_gradients_match_finite_differences(rng):
    layer = Linear(5, 4, rng, dtype=np.float64)
    layer.bias.value[:] = rng.standard_normal(4)
    x, upstream = rng.standard_normal((3, 5)), rng.standard_normal((3, 4))
    layer.forward(x)
    grad_in = layer.backward(upstream)
    for param in layer.parameters():
        expected = numeric_grad(lambda: weighted_sum(layer, x, upstream), param.value)
        np.testing.assert_allclose(param.grad, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_in, numeric_grad(lambda: weighted_sum(layer, x, upstream), x), atol=1e-8)


def test_first_linear_layer_skips_the_input_gradient(rng):
    layer = Linear(5, 4, rng, needs_input_grad=False)
    layer.forward(rng.standard_normal((3, 5)).astype(np.float32))
    assert layer.backward(np.ones((3, 4), dtype=np.float32)) is None
    assert layer.weight.grad.any()


def test_relu_gradient_matches_finite_differences(rng):
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 0.01] = 0.5  # keep away from the kink
    upstream = rng.standard_normal((4, 6))
    layer = ReLU()
    layer.forward(x.copy())
    grad_in = layer.backward(upstream.copy())
    np.testing.assert_allclose(grad_in, numeric_grad(lambda: weighted_sum(layer, x, upstream), x), atol=1e-8)


def test_dropout_gradient_with_a_fixed_mask(rng):
    x, upstream = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    layer = Dropout(0.5, np.random.default_rng(3))

    def with_fixed_mask():
        layer.rng = np.random.default_rng(3)  # the same mask on every evaluation
        return weighted_sum(layer, x, upstream)

    with_fixed_mask()
    mask = layer.mask.copy()
    assert set(np.unique(mask)) == {0.0, 2.0}  # inverted dropout: kept units scaled by 1/(1-rate)
    grad_in = layer.backward(upstream)
    np.testing.assert_allclose(grad_in, upstream * mask)
    np.testing.assert_allclose(grad_in, numeric_grad(with_fixed_mask, x), atol=1e-8)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_dropout_keeps_units_with_probability_one_minus_rate(rate):
    layer = Dropout(rate, np.random.default_rng(0))
    out = layer.forward(np.ones((999, 1001), dtype=np.float32))  # a size that is not a multiple of 4
    kept = np.count_nonzero(out) / out.size
    assert kept == pytest.approx(1 - rate, abs=0.003)  # 5 standard deviations of a binomial mean
    assert out.mean() == pytest.approx(1.0, abs=0.005)  # inverted dropout preserves the expectation
    assert set(np.unique(out)) == {0.0, np.float32(1 / (layer.keep_below / 2**16))}
    # Four neighbouring units share one 64-bit draw, yet their fates are uncorrelated.
    kept_flat = (out.ravel()[: out.size // 4 * 4] != 0).reshape(-1, 4).astype(float)
    correlations = np.corrcoef(kept_flat.T)[np.triu_indices(4, 1)]
    assert np.abs(correlations).max() < 0.01


def test_dropout_is_identity_at_inference(rng):
    x = rng.standard_normal((4, 6))
    assert Dropout(0.5, rng).forward(x, training=False) is x
    with pytest.raises(ValueError, match="dropout rate"):
        Dropout(1.0, rng)


@pytest.mark.parametrize(
    "dropout, input_dropout, centred",
    [(0.0, 0.0, False), (0.3, 0.0, False), (0.3, 0.2, False), (0.3, 0.2, True)],
)
def test_network_gradients_match_finite_differences(rng, dropout, input_dropout, centred):
    mean = rng.standard_normal(6) if centred else None
    model = MLP([6, 5, 4, 3], rng, dropout, np.float64, input_dropout=input_dropout, input_mean=mean)
    assert isinstance(model.layers[0], Centre) == centred
    assert isinstance(model.layers[int(centred)], Dropout) == (input_dropout > 0)
    for p in model.parameters():
        p.value += 0.1 * rng.standard_normal(p.value.shape)  # non-zero biases too
    x, y = rng.standard_normal((7, 6)), rng.integers(0, 3, 7)

    def loss():
        return softmax_cross_entropy(_forward(model, x), y)[0]

    _, dlogits = softmax_cross_entropy(_forward(model, x), y)
    model.backward(dlogits)
    for param in model.parameters():
        np.testing.assert_allclose(param.grad, numeric_grad(loss, param.value), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("centred", [False, True])
def test_keep_rows_gives_the_gradient_of_the_loss_over_those_rows_alone(rng, centred):
    mean = rng.standard_normal(6) if centred else None
    model = MLP([6, 5, 4, 3], rng, 0.3, np.float64, input_dropout=0.2, input_mean=mean)
    for p in model.parameters():
        p.value += 0.1 * rng.standard_normal(p.value.shape)
    x, y, rows = rng.standard_normal((9, 6)), rng.integers(0, 3, 9), np.array([1, 4, 5, 8])

    def loss():  # the whole batch goes forward, with its dropout masks; only the rows are scored
        return softmax_cross_entropy(_forward(model, x)[rows], y[rows])[0]

    logits = _forward(model, x)
    model.keep_rows(rows)
    model.backward(softmax_cross_entropy(logits[rows], y[rows])[1])
    for param in model.parameters():
        np.testing.assert_allclose(param.grad, numeric_grad(loss, param.value), rtol=1e-5, atol=1e-8)
    # and every row of the batch would have given a different gradient
    _, dlogits = softmax_cross_entropy(_forward(model, x), y)
    model.backward(dlogits)
    assert not np.allclose(
        model.of_kind("linear")[0].weight.grad, numeric_grad(loss, model.of_kind("linear")[0].weight.value)
    )


def _forward(model, x):
    """Forward with every dropout layer's mask fixed, so the loss is a function of the weights."""
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(11)
    return model.forward(x.copy())


def test_model_parameters_state_dict_and_shapes(rng):
    model = MLP([784, 128, 128, 10], rng)
    names = [p.name for p in model.parameters()]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert all(p.value.dtype == np.float32 for p in model.parameters())
    # He initialisation: std sqrt(2 / fan_in)
    assert model.of_kind("linear")[0].weight.value.std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    other = MLP([784, 128, 128, 10], np.random.default_rng(99))
    other.load_state_dict(model.state_dict())
    x = rng.standard_normal((5, 784)).astype(np.float32)
    np.testing.assert_array_equal(other.logits(x), model.logits(x))
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"fc1.weight": model.state_dict()["fc1.weight"]})


def test_centre_subtracts_its_mean_and_passes_gradients_through(rng):
    mean = rng.standard_normal(4).astype(np.float32)
    layer = Centre(mean)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    out = layer.forward(x.copy())
    np.testing.assert_array_equal(out, x - mean)
    assert out.dtype == np.float32
    grad = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(grad.copy()), grad)
    with pytest.raises(ValueError, match="must be a vector"):
        Centre(np.zeros((2, 2)))


def test_a_centred_model_keeps_its_mean_in_its_state(rng):
    mean = rng.standard_normal(20)
    model = MLP([20, 8, 3], rng, input_mean=mean)
    state = model.state_dict()
    shapes = {
        "centre.mean": (20,),
        "fc1.weight": (20, 8),
        "fc1.bias": (8,),
        "fc2.weight": (8, 3),
        "fc2.bias": (3,),
    }
    assert {k: v.shape for k, v in state.items()} == shapes == model.state_shapes()
    np.testing.assert_allclose(state["centre.mean"], mean, rtol=1e-6)
    assert "centre.mean" not in [p.name for p in model.parameters()]  # the optimiser never moves it
    x = rng.standard_normal((5, 20)).astype(np.float32)
    # the same weights fed pre-centred inputs give the same logits
    plain = MLP([20, 8, 3], rng)
    plain.load_state_dict({k: v for k, v in state.items() if k != "centre.mean"})
    np.testing.assert_allclose(model.logits(x), plain.logits(x - state["centre.mean"]), rtol=1e-5, atol=1e-6)
    other = MLP([20, 8, 3], np.random.default_rng(1), input_mean=np.zeros(20))
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.logits(x), model.logits(x))
    with pytest.raises(ValueError, match=r"missing \['centre.mean'\]"):
        other.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match=r"input mean must have shape \(20,\)"):
        MLP([20, 8, 3], rng, input_mean=np.zeros(19))


def test_small_init_matches_the_report(rng):
    model = MLP([784, 128, 10], rng, init="small")
    assert model.of_kind("linear")[0].weight.value.std() == pytest.approx(0.01, rel=0.02)
    with pytest.raises(ValueError, match="unknown initialisation"):
        MLP([784, 10], rng, init="xavier")


def test_inference_in_chunks_equals_one_batch(rng):
    model = MLP([20, 8, 3], rng)
    x = rng.standard_normal((50, 20)).astype(np.float32)
    np.testing.assert_allclose(model.logits(x, batch_size=7), model.logits(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(x).sum(axis=1), 1.0, rtol=1e-5)
    assert model.predict(x).shape == (50,)


def test_glorot_draws_weights_and_biases_uniformly_as_scikit_learn(rng):
    layer = Linear(300, 100, rng, init="glorot")
    bound = np.sqrt(6.0 / 400)
    for values in (layer.weight.value, layer.bias.value):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.95 * bound
    assert layer.weight.value.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
    with pytest.raises(ValueError, match="unknown initialisation 'xavier'"):
        Linear(3, 2, rng, init="xavier")


def test_an_inference_forward_keeps_nothing_of_its_batch(rng):
    model = MLP([6, 5, 4, 3], rng, dropout=0.5)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    model.forward(x)  # training keeps what backward needs...
    assert model.layers[0]._input is not None and model.layers[1]._output is not None
    model.forward(x, training=False)  # ... and an answer lets go of it
    for layer in model.layers:
        assert getattr(layer, "_input", None) is None and getattr(layer, "_output", None) is None
        assert getattr(layer, "mask", None) is None


def test_predict_proba_is_the_fast_path_and_follows_every_change_of_weights(rng):
    from fashion_mlp.nn import SGD, Inference, softmax

    mean = rng.uniform(-1, 1, 6).astype(np.float32)
    model = MLP([6, 16, 16, 3], rng, input_mean=mean)
    x = rng.standard_normal((40, 6)).astype(np.float32)

    def through_layers():
        return softmax(model.forward(x, training=False))

    assert isinstance(model._fast_path(), Inference)
    np.testing.assert_allclose(model.predict_proba(x), through_layers(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.predict_proba(x[:1]), through_layers()[:1], rtol=1e-5, atol=1e-7)
    before = model.predict_proba(x)
    optimizer = SGD(model.parameters(), momentum=0.9)
    _, dlogits = softmax_cross_entropy(model.forward(x), np.zeros(40, dtype=np.int64))
    model.backward(dlogits)
    optimizer.step(0.5)
    after = model.predict_proba(x)
    assert np.abs(after - before).max() > 1e-3  # the step moved the answers ...
    np.testing.assert_allclose(after, through_layers(), rtol=1e-5, atol=1e-7)  # ... and the fast path saw it
    model.load_state_dict(MLP([6, 16, 16, 3], np.random.default_rng(9), input_mean=mean).state_dict())
    np.testing.assert_allclose(model.predict_proba(x), through_layers(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(model.predict(x), through_layers().argmax(axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (1, 3), (5, 4), (3, 4, 4, 2), (0, 4), (2, 3000)])
def test_relu_in_place_is_the_maximum_with_zero(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    if x.size:
        x.flat[0] = np.nan  # NaN passes through, as np.maximum has it
    expected = np.maximum(x, 0)
    out = relu_(x)
    assert out is x and out.dtype == dtype
    np.testing.assert_array_equal(out, expected)
    strided = rng.standard_normal((6, 8)).astype(dtype)[:, ::2]  # not contiguous: the scalar path
    np.testing.assert_array_equal(relu_(strided.copy()), np.maximum(strided, 0))
    wider = rng.standard_normal((2, 5000)).astype(dtype)  # the shared zeros grow, and stay zeros
    np.testing.assert_array_equal(relu_(wider.copy()), np.maximum(wider, 0))
    np.testing.assert_array_equal(relu_(-np.ones((3, 5000), dtype)), 0)


@pytest.mark.parametrize(
    "init, std",
    [
        ("he", lambda fan_in, fan_out: np.sqrt(2.0 / fan_in)),
        ("small", lambda fan_in, fan_out: 0.01),
        ("glorot", lambda fan_in, fan_out: np.sqrt(6.0 / (fan_in + fan_out)) / np.sqrt(3)),
        ("uniform", lambda fan_in, fan_out: 1.0 / np.sqrt(3 * fan_in)),
    ],
)
def test_every_initialisation_draws_the_spread_it_names_for_rows_and_maps(rng, init, std):
    """Each of INITS, for a fully connected layer (fan-in: its inputs) and a convolution (fan-in:
    k·k·C), the blocks' convolutions included: the standard deviation it names, and for the uniform
    ones the bound, which PyTorch's default (1/sqrt(fan_in)) and scikit-learn's (Glorot) draw."""
    from fashion_mlp.nn import INITS, Network, initial_weight

    assert INITS == ("he", "small", "glorot", "uniform")
    linear = Linear(300, 100, rng, init=init)
    network = Network(
        [
            {"kind": "image", "height": 6, "width": 6, "channels": 2},
            {"kind": "conv", "out": 40, "kernel": 3, "bias": False, "init": init},
            {"kind": "residual", "out": 48, "init": init},
            {"kind": "flatten"},
            {"kind": "linear", "out": 3, "init": init},
        ],
        72,
        rng,
    )
    conv, first, second, skip = network.of_kind("conv") + [
        layer for layer in network.layers[2].layers if layer.kind == "conv"
    ]
    drawn = [
        (linear.weight.value, 300, 100),
        (conv.weight.value, 18, 360),
        (first.weight.value, 360, 432),
        (second.weight.value, 432, 432),
        (skip.weight.value, 40, 48),
    ]
    for weight, fan_in, fan_out in drawn:
        assert weight.dtype == np.float32
        assert weight.std() == pytest.approx(std(fan_in, fan_out), rel=0.1), (init, weight.shape)
        if init in ("glorot", "uniform"):
            bound = np.sqrt(3) * std(fan_in, fan_out)
            assert 0.9 * bound < np.abs(weight).max() <= bound
    assert [r.get("init") for r in network.records if "init" in r] == [init] * 3
    again = Network(network.records, 72, np.random.default_rng(5))
    assert again.records == network.records
    with pytest.raises(
        ValueError, match="unknown initialisation 'lecun'; choose one of he, small, glorot, uniform"
    ):
        initial_weight("lecun", (2, 2), 2, 2, rng)


def test_a_record_without_init_is_he_as_before_and_a_bad_one_is_named():
    """Records written before convolutions took an init (checkpoints of 2026-12-04 to -06) draw
    He's weights, bit for bit as they did; a wrong init names the kind and the choices."""
    from fashion_mlp.nn import Network

    image = {"kind": "image", "height": 4, "width": 4, "channels": 1}
    old = Network(
        [image, {"kind": "conv", "out": 3, "kernel": 3}, {"kind": "flatten"}, {"kind": "linear", "out": 2}],
        16,
    )
    conv = old.of_kind("conv")[0]
    expected = np.random.default_rng(0).standard_normal((3, 3, 1, 3)) * np.sqrt(2.0 / 9)
    np.testing.assert_array_equal(conv.weight.value, expected.astype(np.float32))
    assert old.records[1]["init"] == "he"
    for kind, extra in (("conv", {"kernel": 3}), ("residual", {})):
        records = [
            image,
            {"kind": "conv", "out": 2, "kernel": 3},
            {"kind": kind, "out": 2, "init": "xavier", **extra},
        ]
        with pytest.raises(
            ValueError, match=f"a {kind} layer's init must be one of he, small, glorot, uniform, got 'xavier'"
        ):
            Network([*records, {"kind": "flatten"}, {"kind": "linear", "out": 2}], 16)
