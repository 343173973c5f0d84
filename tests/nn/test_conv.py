"""The image layers' gradients against central finite differences (float64), their forward passes
against direct definitions written with loops, and keep_rows against a batch of just those rows."""

import numpy as np
import pytest

from fashion_mlp.nn import BatchNorm, Conv2d, Flatten, Image, MaxPool2d

from .test_layers import numeric_grad, weighted_sum


def assert_gradients_match(layer, x, upstream, input_rtol):
    """The layer's parameter and input gradients for the loss sum(output * upstream) against central
    differences."""
    layer.forward(x.copy())
    grad_in = layer.backward(upstream.copy())
    for param in layer.parameters():
        expected = numeric_grad(lambda: weighted_sum(layer, x, upstream), param.value)
        np.testing.assert_allclose(param.grad, expected, rtol=1e-6, atol=1e-8, err_msg=param.name)
    expected_in = numeric_grad(lambda: weighted_sum(layer, x, upstream), x)
    np.testing.assert_allclose(grad_in, expected_in, rtol=input_rtol, atol=1e-8)


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def direct_convolution(x, weight, bias):
    """The definition, one output pixel at a time: a same-size, stride-1 cross-correlation."""
    n, h, w, _ = x.shape
    k = weight.shape[0]
    p = k // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((n, h, w, weight.shape[3]))
    for i in range(h):
        for j in range(w):
            patch = padded[:, i : i + k, j : j + k, :]  # (n, k, k, c)
            out[:, i, j, :] = np.einsum("nabc,abcf->nf", patch, weight)
    return out + (0 if bias is None else bias)


def quartered(maps):
    """(N, H, W, C) maps as the quarters a convolution writes for pooling: (4, N, H/2, W/2, C),
    quarter 2·dy + dx holding pixels (2y+dy, 2x+dx)."""
    return np.stack([maps[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)])


def unquartered(quarters):
    n, h2, w2, c = quarters.shape[1:]
    maps = np.empty((n, 2 * h2, 2 * w2, c), quarters.dtype)
    for q, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        maps[:, dy::2, dx::2] = quarters[q]
    return maps


# One input channel stores the columns transposed (offsets first); quarters reorder the pixels.
LAYOUTS = [(1, False), (3, False), (1, True), (3, True)]


@pytest.mark.parametrize("channels, quarters", LAYOUTS)
@pytest.mark.parametrize("kernel, bias", [(3, True), (5, False), (1, True)])
def test_conv2d_forward_is_the_definition(rng, kernel, bias, channels, quarters):
    layer = Conv2d(channels, 4, kernel, rng, dtype=np.float64, bias=bias)
    layer.quarters = quarters
    if bias:
        layer.bias.value[:] = rng.standard_normal(4)
    x = rng.standard_normal((2, 6, 4, channels))
    expected = direct_convolution(x, layer.weight.value, layer.bias.value if bias else None)
    for training in (True, False):
        out = layer.forward(x, training)
        np.testing.assert_allclose(unquartered(out) if quarters else out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels, quarters", LAYOUTS)
@pytest.mark.parametrize("keep", [False, True])
def test_a_large_training_batch_is_convolved_in_chunks_as_a_whole_one_is(
    rng, monkeypatch, channels, quarters, keep
):
    """Above WHOLE images, the forward runs CHUNK images at a time (here 3, 3, 3 and a last 1) and
    keeps no columns: keep_rows or backward make them. The output is the definition's, and the
    gradients are bit for bit those of the batch convolved whole, with the same rows kept."""
    from fashion_mlp.nn import conv

    x = rng.standard_normal((10, 6, 4, channels))
    upstream = rng.standard_normal((10, 6, 4, 2))
    rows = np.array([1, 4, 5, 9])
    got = {}
    for whole, chunk in ((100, 100), (4, 3)):
        monkeypatch.setattr(conv, "WHOLE", whole)
        monkeypatch.setattr(conv, "CHUNK", chunk)
        layer = Conv2d(channels, 2, 3, np.random.default_rng(1), dtype=np.float64)
        layer.quarters = quarters
        out = layer.forward(x)
        expected = direct_convolution(x, layer.weight.value, layer.bias.value)
        np.testing.assert_allclose(unquartered(out) if quarters else out, expected, rtol=1e-12, atol=1e-12)
        grad = upstream[rows] if keep else upstream
        if keep:
            layer.keep_rows(rows)
        grad_in = layer.backward(quartered(grad) if quarters else grad)
        got[chunk] = [grad_in.copy(), layer.weight.grad.copy(), layer.bias.grad.copy()]
    for chunked, whole in zip(got[3], got[100]):
        np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 4, 5])
def test_im2cols_windows_are_numpys_sliding_windows_for_any_array(rng, kernel, stride):
    from numpy.lib.stride_tricks import sliding_window_view

    from fashion_mlp.nn.conv import _windows

    whole = rng.standard_normal((5, 9, 8, 3))
    for padded in (whole, whole[1:4], whole[:, 1:], whole[::2], whole.astype(np.float32)):
        expected = sliding_window_view(padded, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
        got = _windows(padded, kernel, stride)
        assert got.shape == expected.shape and np.shares_memory(got, padded)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("channels, quarters", LAYOUTS)
@pytest.mark.parametrize("kernel, bias", [(3, True), (5, False), (1, False)])
def test_conv2d_gradients_match_finite_differences(rng, kernel, bias, channels, quarters):
    layer = Conv2d(channels, 3, kernel, rng, dtype=np.float64, bias=bias)
    layer.quarters = quarters
    x, upstream = rng.standard_normal((2, 6, 4, channels)), rng.standard_normal((2, 6, 4, 3))
    assert_gradients_match(layer, x, quartered(upstream) if quarters else upstream, input_rtol=1e-6)


def test_the_first_conv2d_skips_its_input_gradient(rng):
    layer = Conv2d(1, 2, 3, rng, needs_input_grad=False)
    layer.forward(rng.standard_normal((2, 4, 4, 1)).astype(np.float32))
    assert layer.backward(np.ones((2, 4, 4, 2), np.float32)) is None
    assert np.abs(layer.weight.grad).sum() > 0


def test_conv2d_refuses_an_even_kernel_and_the_wrong_channels(rng):
    with pytest.raises(ValueError, match="must be odd"):
        Conv2d(1, 2, 4, rng)
    with pytest.raises(ValueError, match="expected 3 channels, got 1"):
        Conv2d(3, 2, 3, rng).forward(np.zeros((1, 4, 4, 1), np.float32))


def test_maxpool_takes_each_windows_maximum_and_routes_its_gradient_there(rng):
    layer = MaxPool2d()
    x = rng.standard_normal((2, 4, 6, 3))
    out = layer.forward(x.copy())
    expected = x.reshape(2, 2, 2, 3, 2, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(layer.forward(x.copy(), training=False), expected)
    layer.forward(x.copy())
    upstream = rng.standard_normal(out.shape)
    grad_in = layer.backward(upstream)
    expected_in = numeric_grad(lambda: weighted_sum(layer, x, upstream), x)  # no ties: differentiable
    np.testing.assert_allclose(grad_in, expected_in, rtol=1e-6, atol=1e-8)


def test_maxpool_gives_a_tied_windows_gradient_to_one_input_only():
    layer = MaxPool2d()
    x = np.zeros((1, 2, 2, 1))  # all four tie
    layer.forward(x)
    grad_in = layer.backward(np.full((1, 1, 1, 1), 5.0))
    assert grad_in.sum() == 5.0 and grad_in[0, 0, 0, 0] == 5.0


def test_maxpool_on_quarters_is_maxpool_on_the_maps_they_came_from(rng):
    """The same maxima, and the same gradients, ties included: rows of zeros tie in every window."""
    x = rng.standard_normal((3, 4, 6, 2))
    x[1] = 0.0
    x[2, :, :, 0] = 1.0
    upstream = rng.standard_normal((3, 2, 3, 2))
    plain, quarters = MaxPool2d(), MaxPool2d()
    np.testing.assert_array_equal(quarters.forward(quartered(x)), plain.forward(x))
    np.testing.assert_array_equal(quarters.forward(quartered(x), training=False), plain.forward(x, False))
    plain.forward(x), quarters.forward(quartered(x))
    rows = np.array([2, 1])
    plain.keep_rows(rows), quarters.keep_rows(rows)
    grad_in = quarters.backward(upstream[rows])
    assert grad_in.shape == (4, 2, 2, 3, 2)
    np.testing.assert_array_equal(unquartered(grad_in), plain.backward(upstream[rows]))
    # Image 1 is all ties: each window's gradient goes to its top-left pixel, quarter 0, alone.
    np.testing.assert_array_equal(grad_in[0, 1], upstream[1])
    assert not grad_in[1:, 1].any()


def test_a_network_writes_quarters_where_pooling_follows_a_convolution():
    from fashion_mlp.nn import Network, cnn_records

    network = Network(cnn_records((8, 8, 1), (2, 3), (4,), 10), 64)
    convs = [layer for layer in network.layers if isinstance(layer, Conv2d)]
    assert [c.quarters for c in convs] == [True, True]
    lone = Network(
        [
            {"kind": "image", "height": 4, "width": 4, "channels": 1},
            {"kind": "conv", "out": 2, "kernel": 3},
            {"kind": "flatten"},
            {"kind": "linear", "out": 3},
        ],
        16,
    )
    assert not lone.layers[1].quarters


def test_maxpool_refuses_an_odd_size():
    with pytest.raises(ValueError, match="even height and width, got 7x7"):
        MaxPool2d().forward(np.zeros((1, 7, 7, 2)))


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 4)], ids=["features", "channels"])
def test_batchnorm_gradients_match_finite_differences(rng, shape):
    layer = BatchNorm(4, dtype=np.float64)
    layer.gamma.value[:] = rng.uniform(0.5, 2, 4)
    layer.beta.value[:] = rng.standard_normal(4)
    x, upstream = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape)
    assert_gradients_match(layer, x, upstream, input_rtol=1e-5)


def test_batchnorm_normalises_in_training_and_uses_its_running_averages_at_inference(rng):
    layer = BatchNorm(3, dtype=np.float64, momentum=0.1)
    x = rng.standard_normal((50, 2, 2, 3)) * np.array([1.0, 2.0, 3.0]) + np.array([5.0, -1.0, 0.0])
    out = layer.forward(x.copy()).reshape(-1, 3)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), 1, rtol=1e-4)  # eps 1e-5 in the denominator
    flat = x.reshape(-1, 3)
    np.testing.assert_allclose(layer.running_mean, 0.1 * flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * flat.var(axis=0, ddof=1), rtol=1e-12)
    expected = (flat - layer.running_mean) / np.sqrt(layer.running_var + 1e-5)
    np.testing.assert_allclose(layer.forward(x, training=False).reshape(-1, 3), expected, rtol=1e-12)


def stack(rng, dtype=np.float64):
    """A small network of every image layer: what a CNN is made of."""
    return [
        Image(4, 4, 2),
        Conv2d(2, 3, 3, rng, name="conv1", dtype=dtype, bias=False, needs_input_grad=False),
        BatchNorm(3, name="bn1", dtype=dtype),
        MaxPool2d(),
        Conv2d(3, 2, 3, rng, name="conv2", dtype=dtype),
        Flatten(),
        BatchNorm(8, name="bn2", dtype=dtype),
    ]


def run(layers, x, upstream, rows=None):
    for layer in layers:
        x = layer.forward(x)
    if rows is not None:
        for layer in layers:
            layer.keep_rows(rows)
    grad = upstream
    for layer in reversed(layers):
        grad = layer.backward(grad)
        if grad is None:
            break
    return {p.name: p.grad.copy() for layer in layers for p in layer.parameters()}


def quarters_stack(rng, dtype=np.float64):
    """The cnn preset's shape in small: each convolution writes quarters for the pooling after it,
    the first from one channel (its columns offsets first)."""
    layers = [
        Image(4, 4, 1),
        Conv2d(1, 3, 3, rng, name="conv1", dtype=dtype, bias=False, needs_input_grad=False),
        MaxPool2d(),
        BatchNorm(3, name="bn1", dtype=dtype),
        Conv2d(3, 2, 3, rng, name="conv2", dtype=dtype),
        MaxPool2d(),
        Flatten(),
        BatchNorm(2, name="bn2", dtype=dtype),
    ]
    layers[1].quarters = layers[4].quarters = True
    return layers


@pytest.mark.parametrize("make, inputs, outputs", [(stack, 32, 8), (quarters_stack, 16, 2)])
def test_keep_rows_gives_the_gradients_of_a_batch_of_those_rows_through_every_layer(make, inputs, outputs):
    """Learning from the hardest rows of a batch works through every image layer. The batch is the
    kept images twice over, so that batch norm's statistics over it are those of the kept images
    alone: the gradients must then equal those of a batch of just the kept images."""
    kept_images = np.random.default_rng(3).standard_normal((3, inputs))
    x = np.concatenate([kept_images, kept_images])
    rows = np.array([5, 0, 4])  # images 2, 0 and 1
    upstream = np.random.default_rng(4).standard_normal((3, outputs))
    from_rows = run(make(np.random.default_rng(5)), x, upstream, rows)
    alone = run(make(np.random.default_rng(5)), kept_images[[2, 0, 1]], upstream)
    assert from_rows.keys() == alone.keys() and len(alone) == 7
    for name in alone:
        np.testing.assert_allclose(from_rows[name], alone[name], rtol=1e-10, atol=1e-12, err_msg=name)
