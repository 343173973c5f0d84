"""The residual block and global average pooling: gradients against central finite differences, with
the identity shortcut and with the projection; the skip's meaning; keep_rows through a block; and a
whole residual network checked as ``fashion-mlp gradcheck`` checks it."""

import numpy as np
import pytest

from fashion_mlp.nn import GlobalAvgPool, Network, Residual, check_gradients

from .test_conv import assert_gradients_match, run


@pytest.fixture
def rng():
    return np.random.default_rng(21)


def block(rng, channels, out, dtype=np.float64):
    """A Residual built from its record after a convolution, as a network builds it."""
    records = [
        {"kind": "image", "height": 4, "width": 6, "channels": channels},
        {"kind": "conv", "out": channels, "kernel": 1, "bias": False},
        {"kind": "residual", "out": out},
    ]
    network = Network(
        [*records, {"kind": "flatten"}, {"kind": "linear", "out": 2}], 24 * channels, rng, dtype
    )
    layer = network.layers[2]
    for p in layer.parameters():  # batch norms away from gamma 1, beta 0, as after training
        p.value += 0.3 * rng.standard_normal(p.value.shape)
    return layer


@pytest.mark.parametrize("channels, out", [(3, 3), (2, 3)], ids=["identity", "projection"])
def test_a_blocks_gradients_match_finite_differences(rng, channels, out):
    layer = block(rng, channels, out)
    assert isinstance(layer, Residual) and len(layer.shortcut) == (0 if channels == out else 2)
    x, upstream = rng.standard_normal((3, 4, 6, channels)), rng.standard_normal((3, 4, 6, out))
    assert_gradients_match(layer, x, upstream, input_rtol=1e-5)
    names = [p.name for p in layer.parameters()]
    assert len(names) == (6 if channels == out else 9) and len(set(names)) == len(names)


def test_with_its_branch_silenced_a_block_is_its_input_and_passes_the_gradient_straight_down(rng):
    """The skip: gamma and beta 0 in the branch's last batch norm make F(x) = 0, so y = x, and the
    gradient reaches the input whole."""
    layer = block(rng, 3, 3)
    last = layer.branch[-1]
    last.gamma.value[:] = last.beta.value[:] = 0
    x = rng.standard_normal((2, 4, 6, 3))
    np.testing.assert_array_equal(layer.forward(x.copy()), x)
    upstream = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(upstream.copy()), upstream, atol=1e-12)
    np.testing.assert_array_equal(layer.forward(x.copy(), training=False), x)


def test_global_average_pooling_is_each_channels_mean_and_spreads_its_gradient(rng):
    layer = GlobalAvgPool()
    x, upstream = rng.standard_normal((3, 4, 5, 2)), rng.standard_normal((3, 2))
    np.testing.assert_allclose(layer.forward(x.copy()), x.mean(axis=(1, 2)), rtol=1e-12)
    assert_gradients_match(layer, x, upstream, input_rtol=1e-6)


def residual_stack(rng, dtype=np.float64):
    """Convolution, an identity block, a projection block, global average pooling."""
    records = [
        {"kind": "image", "height": 4, "width": 4, "channels": 1},
        {"kind": "conv", "out": 2, "kernel": 3, "bias": False},
        {"kind": "batchnorm"},
        {"kind": "relu"},
        {"kind": "residual", "out": 2},
        {"kind": "relu"},
        {"kind": "residual", "out": 3},
        {"kind": "avgpool"},
        {"kind": "linear", "out": 2},
    ]
    return Network(records, 16, rng, dtype).layers


def test_keep_rows_through_blocks_gives_the_gradients_of_a_batch_of_those_rows():
    """As tests/nn/test_conv.py's check for every image layer: the batch is the kept images twice
    over, so batch norm's statistics are theirs, and the gradients must be those of the kept alone."""
    kept = np.random.default_rng(3).standard_normal((3, 16))
    rows = np.array([5, 0, 4])
    upstream = np.random.default_rng(4).standard_normal((3, 2))
    from_rows = run(residual_stack(np.random.default_rng(5)), np.concatenate([kept, kept]), upstream, rows)
    alone = run(residual_stack(np.random.default_rng(5)), kept[[2, 0, 1]], upstream)
    assert from_rows.keys() == alone.keys() and len(alone) == 20
    for name in alone:
        np.testing.assert_allclose(from_rows[name], alone[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_a_residual_networks_gradients_match_finite_differences(smoothing):
    """The whole network, as ``fashion-mlp gradcheck --preset resnet`` checks it, but small."""
    rng = np.random.default_rng(8)
    records = [
        {"kind": "image", "height": 6, "width": 6, "channels": 1},
        {"kind": "conv", "out": 3, "kernel": 3, "bias": False},
        {"kind": "maxpool"},
        {"kind": "batchnorm"},
        {"kind": "relu"},
        {"kind": "residual", "out": 3},
        {"kind": "relu"},
        {"kind": "residual", "out": 4},
        {"kind": "relu"},
        {"kind": "flatten"},
        {"kind": "linear", "out": 5, "bias": False},
        {"kind": "batchnorm"},
        {"kind": "relu"},
        {"kind": "dropout", "rate": 0.3},
        {"kind": "linear", "out": 4},
    ]
    network = Network(records, 36, rng, np.float64)
    for p in network.parameters():
        p.value += 0.05 * rng.standard_normal(p.value.shape)
    x, y = rng.standard_normal((6, 36)), rng.integers(0, 4, 6)
    results = check_gradients(network, x, y, smoothing, entries=8, rng=rng)
    assert {r.name for r in results} >= {"skip1.weight", "conv5.weight", "bn6.gamma", "input"}
    for r in results:
        assert r.passed and r.entries > 0, r


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"kind": "residual", "out": 2}], "needs images"),
        (
            [{"kind": "image", "height": 4, "width": 4, "channels": 1}, {"kind": "residual", "out": 2}],
            "cannot be the first weighted layer",
        ),
        (
            [
                {"kind": "image", "height": 4, "width": 4, "channels": 1},
                {"kind": "conv", "out": 2, "kernel": 3},
                {"kind": "residual", "out": 0},
            ],
            "'out' must be a positive integer",
        ),
        ([{"kind": "avgpool"}], "needs images"),
    ],
)
def test_bad_block_records_are_refused_with_their_reason(records, message):
    with pytest.raises(ValueError, match=message):
        Network([*records, {"kind": "flatten"}, {"kind": "linear", "out": 2}], 16)


def test_a_parameter_budget_counts_a_blocks_parameters_before_they_are_allocated():
    records = [
        {"kind": "image", "height": 4, "width": 4, "channels": 1},
        {"kind": "conv", "out": 2, "kernel": 3, "bias": False},
        {"kind": "residual", "out": 1000},
        {"kind": "avgpool"},
        {"kind": "linear", "out": 2},
    ]
    with pytest.raises(ValueError, match="more parameters than the limit"):
        Network(records, 16, budget=1_000_000)
