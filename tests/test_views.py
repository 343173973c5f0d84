"""Test-time augmentation (nn/views.py): a network with 'views' and 'mean_of_views' answers each
image with the mean of the logits the same network without them gives its views, through every way
it answers (its layers, Inference, ONNX); in training both are the identity; bad records and flags
are one clear line."""

import numpy as np
import pytest

from fashion_mlp import data
from fashion_mlp.cli import main
from fashion_mlp.config import PRESETS, TrainConfig
from fashion_mlp.nn import Network, check_gradients, cnn_records
from fashion_mlp.train import build_model
from tests.test_resnet import assert_onnxruntime_agrees

IMAGE = (12, 12, 1)


def plain_and_viewed(views: int, seed: int = 0) -> tuple[Network, Network]:
    """The same small network without views and with them, sharing weights moved away from their
    initial values and batch norms that have seen batches."""
    rng = np.random.default_rng(seed)
    plain = Network(cnn_records(IMAGE, (4,), (6,), 3, dropout=0.2, blocks=(1,)), 144, rng)
    for _ in range(3):
        plain.forward(rng.uniform(-1, 1, (32, 144)).astype(np.float32))
    for p in plain.parameters():
        p.value += (0.2 * rng.standard_normal(p.value.shape)).astype(np.float32)
    viewed = Network(cnn_records(IMAGE, (4,), (6,), 3, dropout=0.2, blocks=(1,), views=views), 144)
    viewed.load_state_dict(plain.state_dict())
    return plain, viewed


def views_by_hand(images: np.ndarray, flip: bool, shift: bool) -> list[np.ndarray]:
    """(N, H, W) images: the image, its shifts by a pixel (view[y, x] = image[y + dy, x + dx], the
    border repeated), then the same of its mirror."""
    out = []
    for image in [images, images[:, :, ::-1]] if flip else [images]:
        out.append(image)
        if shift:
            padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="edge")
            h, w = image.shape[1:]
            for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                out.append(padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w])
    return [np.ascontiguousarray(v).reshape(len(v), -1) for v in out]


@pytest.mark.parametrize("views, flip, shift", [(2, True, False), (5, False, True), (10, True, True)])
def test_the_answer_is_the_mean_of_the_views_logits(views, flip, shift):
    plain, viewed = plain_and_viewed(views)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (300, 144)).astype(np.float32)
    expected = np.mean(
        [plain.forward(v, training=False) for v in views_by_hand(x.reshape(-1, 12, 12), flip, shift)], 0
    )
    np.testing.assert_allclose(viewed.forward(x, training=False), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(viewed.logits(x), expected, rtol=1e-4, atol=1e-5)  # Inference, in chunks
    assert viewed.chunk == 128 // views and viewed.describe().startswith(f"views{views}-conv3x3(4)")
    # not the plain answer: the views change it
    assert np.abs(viewed.logits(x) - plain.logits(x)).max() > 1e-3


def test_in_training_views_are_the_identity_and_gradients_pass_through():
    plain, viewed = plain_and_viewed(10)
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (16, 144)).astype(np.float32)
    plain.draw_from(np.random.default_rng(3))  # the same dropout masks
    viewed.draw_from(np.random.default_rng(3))
    np.testing.assert_array_equal(viewed.forward(x), plain.forward(x))
    rng = np.random.default_rng(4)
    records = cnn_records(IMAGE, (2,), (4,), 3, blocks=(1,), views=10)
    model = Network(records, 144, rng, dtype=np.float64)
    for p in model.parameters():
        p.value += 0.01 * rng.standard_normal(p.value.shape)
    results = check_gradients(model, rng.uniform(-1, 1, (3, 144)), np.array([0, 1, 2]))
    assert all(r.passed for r in results), [r for r in results if not r.passed]


@pytest.mark.parametrize("views", [2, 5, 10])
def test_the_onnx_export_computes_the_views_as_our_engine_does(views):
    pytest.importorskip("onnxruntime")
    from fashion_mlp.export import to_onnx

    rng = np.random.default_rng(5)
    config = PRESETS["resnet"].replace(conv=(4, 8), hidden_sizes=(8,), views=views)
    network = build_model(config, rng)
    for _ in range(2):
        network.forward(rng.uniform(-1, 1, (64, 784)).astype(np.float32))
    for p in network.parameters():
        p.value += (0.2 * rng.standard_normal(p.value.shape)).astype(np.float32)
    graph = to_onnx(network, [str(i) for i in range(10)], data.NORMALISATION)
    ops = [node.op_type for node in graph.graph.node]
    flips, shifts = views in (2, 10), views in (5, 10)
    assert ops.count("Pad") == shifts * (1 + flips) and ops.count("Slice") == flips + 4 * ops.count("Pad")
    assert ops.count("Concat") == 1 and ops.count("ReduceMean") == 1
    assert_onnxruntime_agrees(graph, network, rng.uniform(0, 255, (100, 784)).astype(np.float32))


IMAGE_RECORD = {"kind": "image", "height": 12, "width": 12, "channels": 1}
CONV = {"kind": "conv", "out": 2, "kernel": 3}
LOGITS = {"kind": "linear", "out": 3}
TAIL = [{"kind": "flatten"}, {"kind": "mean_of_views"}, LOGITS]


@pytest.mark.parametrize(
    "records, message",
    [
        ([IMAGE_RECORD, {"kind": "views", "flip": True}, CONV, {"kind": "flatten"}, LOGITS],
         "a 'views' record needs a 'mean_of_views' after it"),
        ([IMAGE_RECORD, CONV, *TAIL], "'mean_of_views' averages the views of a 'views' record"),
        ([{"kind": "views"}, IMAGE_RECORD, CONV, *TAIL], "views need images"),
        ([IMAGE_RECORD, {"kind": "views", "flip": False}, CONV, *TAIL], "needs 'flip' or a 'shift'"),
        ([IMAGE_RECORD, {"kind": "views", "shift": 6}, CONV, *TAIL], "a shift of 6 pixels leaves nothing"),
        ([IMAGE_RECORD, {"kind": "views", "shift": 9}, CONV, *TAIL], "'shift' must be 0 to 8 pixels"),
        ([IMAGE_RECORD, {"kind": "views", "shift": 1.5}, CONV, *TAIL], "'shift' must be an integer"),
        ([IMAGE_RECORD, {"kind": "views", "flip": "yes"}, CONV, *TAIL], "'flip' must be true or false"),
        ([IMAGE_RECORD, {"kind": "views"}, {"kind": "views"}, CONV, *TAIL], "views of views"),
        ([IMAGE_RECORD, {"kind": "views"}, CONV, {"kind": "mean_of_views"}, {"kind": "flatten"}, LOGITS],
         "'mean_of_views' averages features"),
    ],
)  # fmt: skip
def test_records_that_make_no_sense_are_refused_with_the_reason(records, message):
    with pytest.raises(ValueError, match=message):
        Network(records, 144)


def test_the_views_flag_is_checked(capsys):
    for argv, message in (
        (["train", "--preset", "resnet", "--views", "3"], "invalid choice: 3 (choose from 1, 2, 5, 10)"),
        (["train", "--views", "2"], "views need convolutions"),
    ):
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert TrainConfig.from_record({}).views == 1  # a config from before views: the image alone
    with pytest.raises(ValueError, match="views must be one of 1, 2, 5, 10"):
        TrainConfig(conv=(4,), views=4)
