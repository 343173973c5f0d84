"""Networks built from layer records: the records, their validation, a whole CNN's gradients."""

import numpy as np
import pytest

from fashion_mlp.nn import BatchNorm, Inference, Network, check_gradients, cnn_records, softmax


def small_cnn(dtype=np.float64, dropout=0.3, centred=True, seed=0):
    records = cnn_records((28, 28, 1), (4, 6), (12,), 10, dropout, centred=centred)
    rng = np.random.default_rng(seed)
    mean = rng.uniform(-1, 0, 784) if centred else None
    return Network(records, 784, rng, dtype=dtype, input_mean=mean)


def test_the_records_describe_the_network_and_rebuild_it():
    network = small_cnn()
    assert network.describe() == "conv3x3(4)-pool-conv3x3(6)-pool-fc12-fc10"
    assert [r["kind"] for r in network.records][:6] == [
        "centre",
        "image",
        "conv",
        "maxpool",
        "batchnorm",
        "relu",
    ]
    assert network.n_inputs == 784 and network.n_classes == 10
    rebuilt = Network(network.records, 784, dtype=np.float64)
    rebuilt.load_state_dict(network.state_dict())
    x = np.random.default_rng(1).uniform(-1, 1, (5, 784))
    np.testing.assert_array_equal(rebuilt.logits(x), network.logits(x))
    assert set(network.state_dict()) >= {"conv1.weight", "bn1.running_mean", "bn1.running_var", "centre.mean"}
    assert "conv1.bias" not in network.state_dict()  # no bias where batch norm follows


@pytest.mark.parametrize("dropout, centred, smoothing", [(0.0, False, 0.0), (0.3, True, 0.1)])
def test_a_whole_cnns_gradients_match_finite_differences(dropout, centred, smoothing):
    network = small_cnn(dropout=dropout, centred=centred)
    rng = np.random.default_rng(2)
    for p in network.parameters():
        p.value += 0.01 * rng.standard_normal(p.value.shape)
    x, y = rng.uniform(-1, 1, (3, 784)), rng.integers(0, 10, 3)
    results = check_gradients(network, x, y, smoothing, entries=8, rng=rng)
    assert {r.name for r in results} >= {"conv1.weight", "bn1.gamma", "conv2.weight", "fc1.weight", "input"}
    assert all(r.passed for r in results), [(r.name, r.max_relative_error) for r in results]
    assert sum(r.entries for r in results) > 8 * len(results)  # almost nothing left out at a kink


def test_a_check_leaves_batch_norms_running_averages_as_they_were():
    network = small_cnn()
    before = network.state_dict()
    rng = np.random.default_rng(3)
    check_gradients(network, rng.uniform(-1, 1, (2, 784)), np.array([1, 2]), entries=2, rng=rng)
    after = network.state_dict()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_a_broken_backward_fails_the_check(monkeypatch):
    original = BatchNorm.backward

    def forgets_the_mean_term(self, grad):
        out = original(self, grad)
        return out + self.beta.grad * self.gamma.value * self._inv_std / len(grad.reshape(-1, self.features))

    monkeypatch.setattr(BatchNorm, "backward", forgets_the_mean_term)
    network = small_cnn(dropout=0.0)
    rng = np.random.default_rng(4)
    results = {
        r.name: r
        for r in check_gradients(network, rng.uniform(-1, 1, (3, 784)), np.array([0, 1, 2]), entries=5)
    }
    assert not results["conv1.weight"].passed and not results["input"].passed


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"kind": "softmax"}], "unknown layer kind 'softmax'"),
        ([{"kind": "conv", "out": 4, "kernel": 3}], "a convolution needs images"),
        (
            [
                {"kind": "image", "height": 28, "width": 28, "channels": 1},
                {"kind": "conv", "out": 4, "kernel": 2},
            ],
            "must be odd",
        ),
        ([{"kind": "image", "height": 27, "width": 29, "channels": 1}], "does not hold 784 inputs"),
        ([{"kind": "linear", "out": "ten"}], "'out' must be a positive integer"),
        (
            [{"kind": "flatten"}, {"kind": "dropout", "rate": 1.5}, {"kind": "linear", "out": 10}],
            "dropout rate",
        ),
        ([{"kind": "linear", "out": 10}, {"kind": "relu"}], "must end in a fully connected layer"),
        ([], "a list of 1 to 256 layer records"),
    ],
)
def test_bad_records_are_refused_with_their_reason(records, message):
    with pytest.raises(ValueError, match=message):
        Network(records, 784)


def test_a_parameter_budget_is_checked_before_anything_is_allocated():
    records = [{"kind": "linear", "out": 16_000}, {"kind": "linear", "out": 10}]
    with pytest.raises(ValueError, match="more parameters than the limit"):
        Network(records, 784, budget=1_000_000)


def test_inference_on_raw_pixels_normalises_as_training_did():
    network = small_cnn(dtype=np.float32)
    pixels = np.random.default_rng(5).uniform(0, 255, (7, 784)).astype(np.float32)
    expected = softmax(network.logits((pixels - 127.5) / 127.5))
    answered = Inference(network, 127.5, 127.5, chunk=3).predict_proba(pixels)
    np.testing.assert_allclose(answered, expected, rtol=1e-5, atol=1e-6)


def _scramble_batch_norms(network, rng, gamma_mean):
    """Running statistics and scales as training leaves them; a gamma_mean near 0 makes some negative."""
    for layer in network.layers:
        if isinstance(layer, BatchNorm):
            layer.gamma.value[...] = rng.normal(gamma_mean, 0.5, layer.features)
            layer.beta.value[...] = rng.normal(0, 1, layer.features)
            layer.running_mean[...] = rng.normal(0, 1, layer.features)
            layer.running_var[...] = rng.uniform(0.3, 2, layer.features)


IMAGE8 = {"kind": "image", "height": 8, "width": 8, "channels": 1}
ARCHITECTURES = {
    "the cnn preset's order": cnn_records((8, 8, 1), (3, 4), (6,), 5, dropout=0.3),
    "centred, kernel 5, two channels": cnn_records((8, 4, 2), (3,), (), 5, kernel=5, centred=True),
    "conv-BN-ReLU-pool, conv with a bias": [
        IMAGE8,
        {"kind": "conv", "out": 3, "kernel": 3},
        {"kind": "batchnorm"},
        {"kind": "relu"},
        {"kind": "maxpool"},
        {"kind": "flatten"},
        {"kind": "linear", "out": 5},
    ],
    "a bias before pooling, and no batch norm": [
        IMAGE8,
        {"kind": "conv", "out": 3, "kernel": 3},
        {"kind": "maxpool"},
        {"kind": "relu"},
        {"kind": "conv", "out": 2, "kernel": 1},
        {"kind": "relu"},
        {"kind": "flatten"},
        {"kind": "batchnorm"},
        {"kind": "linear", "out": 5},
    ],
}


@pytest.mark.parametrize("gamma_mean", [1.0, 0.1], ids=["positive scales", "some negative scales"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_fast_path_answers_as_the_layers_do(name, gamma_mean):
    """Batch norm folded (or not, where a negative scale meets pooling), biases moved past pooling,
    dropout gone: the same logits as the layers' own forward at inference, in chunks or not."""
    rng = np.random.default_rng(3)
    records = ARCHITECTURES[name]
    network = Network(records, 64, rng)
    if network.centre is not None:
        network.centre.mean[...] = rng.uniform(-1, 0, 64)
    for p in network.parameters():
        p.value[...] += rng.normal(0, 0.1, p.value.shape)  # non-zero biases, too
    _scramble_batch_norms(network, rng, gamma_mean)
    x = rng.uniform(-1, 1, (23, 64)).astype(np.float32)
    expected = network.forward(x, training=False).copy()
    assert np.ptp(expected, axis=0).max() > 1e-2  # the answers depend on the inputs
    for chunk in (1, 5, 128):
        got = Inference(network, chunk=chunk).logits(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(network.logits(x[:1]), expected[:1], rtol=1e-5, atol=1e-5)


def test_predict_proba_is_the_fast_path_and_follows_every_change_of_weights():
    from fashion_mlp.nn import SGD, softmax_cross_entropy

    rng = np.random.default_rng(4)
    network = Network(ARCHITECTURES["the cnn preset's order"], 64, rng)
    x = rng.uniform(-1, 1, (30, 64)).astype(np.float32)

    def through_layers():
        return softmax(network.forward(x, training=False))

    assert isinstance(network._fast_path(), Inference)
    optimizer = SGD(network.parameters(), momentum=0.9)
    before = network.predict_proba(x)
    for _ in range(2):  # training moves the running statistics and the weights ...
        _, dlogits = softmax_cross_entropy(network.forward(x), rng.integers(0, 5, 30))
        network.backward(dlogits)
        optimizer.step(0.5)
    after = network.predict_proba(x)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, through_layers(), rtol=1e-5, atol=1e-6)  # ... and the fast path saw it
    network.load_state_dict(Network(network.records, 64, np.random.default_rng(9)).state_dict())
    np.testing.assert_allclose(network.predict_proba(x), through_layers(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(network.predict(x), through_layers().argmax(axis=1))


def test_an_mlp_is_the_network_of_its_records():
    from fashion_mlp.nn import MLP, mlp_records

    mean = np.linspace(-1, 0, 64)
    mlp = MLP(
        [64, 16, 8, 5],
        np.random.default_rng(6),
        dropout=0.2,
        init="glorot",
        input_dropout=0.1,
        input_mean=mean,
    )
    records = mlp_records([64, 16, 8, 5], dropout=0.2, input_dropout=0.1, centred=True, init="glorot")
    network = Network(records, 64, np.random.default_rng(6), input_mean=mean)
    assert isinstance(mlp, Network) and [
        {**r, "bias": True, "init": "glorot"} for r in records if r["kind"] == "linear"
    ] == [r for r in mlp.records if r["kind"] == "linear"]
    assert [type(layer) for layer in mlp.layers] == [type(layer) for layer in network.layers]
    kinds = [r["kind"] for r in records]
    assert kinds == ["centre", "dropout", "linear", "relu", "dropout", "linear", "relu", "dropout", "linear"]
    state, expected = mlp.state_dict(), network.state_dict()
    assert state.keys() == expected.keys()
    for name in state:
        np.testing.assert_array_equal(state[name], expected[name])
    x = np.random.default_rng(7).uniform(-1, 1, (9, 64)).astype(np.float32)
    np.testing.assert_allclose(mlp.predict_proba(x), network.predict_proba(x), rtol=1e-5, atol=1e-7)
    assert mlp.describe() == network.describe() == "64-16-8-5"
    with pytest.raises(
        ValueError, match="a linear layer's init must be one of he, small, glorot, uniform, got 'zeros'"
    ):
        Network([{"kind": "linear", "out": 5, "init": "zeros"}], 64)
    deep = MLP([4] * 100 + [2])  # one limit for every network, however made
    assert len(deep.records) == 199
    with pytest.raises(ValueError, match="a network is a list of 1 to 256 layer records"):
        MLP([4] * 200 + [2])
    with pytest.raises(ValueError, match="'out' must be at most 16,384, got 70,000"):
        MLP([2, 70_000, 2])
