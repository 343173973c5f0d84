"""A trained network and its preprocessing as an ONNX graph, built with the onnx package's helpers.

The graph mirrors ``nn.Inference`` layer for layer, then Softmax and ArgMax. Its interface:

- input ``pixels``: float32 [batch, n_inputs], for Fashion-MNIST raw grayscale 0-255, 28x28 row-major,
  a light garment on a dark background;
- outputs ``probabilities``: float32 [batch, classes], and ``label``: int64 [batch], the names
  skl2onnx gives a classifier with ZipMap off.

Every layer is emitted through ``NODES``, a table from layer kind to the nodes it becomes (as
torch.onnx's registry of symbolic functions is): MatMul and Add, Conv, MaxPool, Relu, with Transpose
and Reshape where our NHWC layout meets ONNX's NCHW. The parameters come folded by ``nn.fold``, as
``nn.Inference`` answers with them: batch norm adds no node where it folds into the layer before it
(otherwise it is a BatchNormalization node), and the input's normalisation and mean fold into the
first layer where that is fully connected; otherwise they are a Sub and a Mul on the input (and a
Sub for the mean). A test checks that every kind ``nn.KINDS`` builds has an entry here.

Opset 21 and IR version 10 are set explicitly: onnx 1.23 would otherwise write IR 14, which
onnxruntime 1.31 refuses. The file format is in docs/formats.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, checkpoint
from .errors import InvalidValue, NotAFile
from .extras import require
from .files import atomic_write_bytes
from .nn import Affine, Network, fold

OPSET = 21
IR_VERSION = 10
INPUT, PROBABILITIES, LABEL = "pixels", "probabilities", "label"
FASHION_MNIST_INPUT = (
    "pixels: float32 [batch, 784], raw grayscale 0-255 of a 28x28 image in row-major order, "
    "a light garment on a dark background, as in Fashion-MNIST"
)


def to_onnx(
    model: Network,
    class_names: Sequence[str],
    normalisation: dict[str, float] | None = None,
    input_description: str | None = None,
    source_sha256: str | None = None,
) -> Any:
    """The ONNX ModelProto of ``model`` taking inputs ``x`` as the model sees ``(x - offset) / scale``.

    ``normalisation`` is {"offset": ..., "scale": ...} (none: the model takes its inputs as they are).
    """
    require("onnx", "onnx")
    if len(class_names) != model.n_classes:
        raise InvalidValue(f"{len(class_names)} class names for a model with {model.n_classes} outputs")
    norm = {"offset": 0.0, "scale": 1.0, **(normalisation or {})}
    g = _Graph(fold(model.layers, float(norm["offset"]), float(norm["scale"])))
    if g.folding.input_into is None:
        g.node("Sub", [g.constant("offset", np.array(norm["offset"], model.dtype))], "normalise_sub")
        g.node(
            "Mul", [g.constant("inverse_scale", np.array(1.0 / norm["scale"], model.dtype))], "normalise_mul"
        )
    for i, layer in enumerate(model.layers):
        if i not in g.folding.folded:
            NODES[layer.kind](g, layer, i, i == len(model.layers) - 1)
    return _model(model, g, class_names, norm, input_description, source_sha256)


def _model(
    model: Network,
    g: _Graph,
    class_names: Sequence[str],
    norm: dict[str, float],
    input_description: str | None,
    source_sha256: str | None,
) -> Any:
    """The graph around the nodes that compute ``logits``: softmax, argmax, inputs, outputs, metadata."""
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper

    nodes = [*g.nodes]
    nodes.append(helper.make_node("Softmax", ["logits"], [PROBABILITIES], axis=1, name="softmax"))
    nodes.append(helper.make_node("ArgMax", ["logits"], [LABEL], axis=1, keepdims=0, name="argmax"))
    classes = model.n_classes
    graph = helper.make_graph(
        nodes,
        "fashion_mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", model.n_inputs])],
        [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info(LABEL, TensorProto.INT64, ["batch"]),
        ],
        g.initializers,
    )
    sizes = model.describe()
    into = g.folding.input_into
    folded_into = "input" if into is None else model.layers[into].name
    doc = (
        "normalisation as Sub and Mul"
        if into is None
        else f"normalisation and input mean folded into {folded_into}"
    )
    if g.folding.folded:
        doc += "; batch norm folded"
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="fashion-mlp",
        producer_version=__version__,
        doc_string=f"fashion-mlp {sizes} ReLU network; {doc}",
    )
    folding = {"offset": float(norm["offset"]), "scale": float(norm["scale"])}
    folding.update(centred=model.centre is not None, folded_into=folded_into)
    description = input_description or f"pixels: float32 [batch, {model.n_inputs}], raw input values"
    props = {
        "class_names": json.dumps(list(class_names)),
        "normalisation": json.dumps(folding),
        "architecture": sizes,
        "package_version": __version__,
        "input": description,
    }
    if source_sha256:
        props["source_sha256"] = source_sha256
    helper.set_model_props(onnx_model, props)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


class _Graph:
    """The nodes and initializers so far, the name of the tensor the next node reads, and the
    network's parameters as ``nn.fold`` folded them."""

    def __init__(self, folding: Any) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.folding = folding
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.x = INPUT
        self.prefix = ""  # before every node name taken from a layer's place (a block's own layers)

    def path(self, folding: Any, prefix: str) -> _Graph:
        """A graph that adds to this one's nodes and initializers from the tensor it is at, with a
        path's own folded parameters (a residual block's branch or shortcut)."""
        inner = _Graph(folding)
        inner.nodes, inner.initializers, inner.x, inner.prefix = self.nodes, self.initializers, self.x, prefix
        return inner

    def params(self, i: int) -> Affine:
        """Layer i's folded weight and bias, as float32."""
        weight, bias = self.folding.params[i]
        return Affine(weight.astype(np.float32), bias.astype(np.float32))

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, output: str | None = None, **attrs: Any) -> None:
        output = output or f"{name}.out"
        self.nodes.append(self.helper.make_node(op, [self.x, *inputs], [output], name=name, **attrs))
        self.x = output


def _centre_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    """A centring that did not fold into the first layer with the input's normalisation."""
    g.node("Sub", [g.constant(f"layer{i}.mean", layer.mean)], f"layer{i}_centre")


def _image_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    shape = g.constant(f"layer{i}.shape", np.array([-1, *layer.shape], np.int64))
    g.node("Reshape", [shape], f"layer{i}_reshape")
    g.node("Transpose", [], f"layer{i}_to_nchw", perm=[0, 3, 1, 2])  # ONNX convolves NCHW


def _views_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    """The views of each (N, C, H, W) image, concatenated view-major as nn/views.py orders them: a
    Slice with step -1 mirrors, a Pad in "edge" mode and a Slice shift, and a Concat."""
    ints = lambda name, *values: g.constant(f"layer{i}.{name}", np.array(values, np.int64))  # noqa: E731
    end, s = np.iinfo(np.int64).max, layer.shift
    bases = [g.x]
    if layer.flip:
        g.node(
            "Slice",
            [ints("from_last", -1), ints("past_first", -end - 1), ints("w", 3), ints("back", -1)],
            f"layer{i}_mirror",
        )
        bases.append(g.x)
    views = []
    if s:  # the constants every base's shifts share
        pads, hw = ints("pads", 0, 0, s, s, 0, 0, s, s), ints("hw", 2, 3)
        # Of the padded side, H + 2s, a view keeps [s + d, H + s + d): its end is s - d before the
        # padded one's (none: to the end).
        slices = [
            (
                ints(f"starts{v}", s + dy, s + dx),
                ints(f"ends{v}", *(d - s if s > d else end for d in (dy, dx))),
            )
            for v, (dy, dx) in enumerate(layer.offsets()[1:])
        ]
    for b, base in enumerate(bases):
        views.append(base)
        if not s:
            continue
        g.x = base
        g.node("Pad", [pads], f"layer{i}_pad{b}", mode="edge")
        padded = g.x
        for v, (starts, ends) in enumerate(slices):
            g.x = padded
            g.node("Slice", [starts, ends, hw], f"layer{i}_shift{b}_{v}")
            views.append(g.x)
    g.x = views[0]
    g.node("Concat", views[1:], f"layer{i}_views", axis=0)


def _mean_of_views_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    """(V·N, F) as (V, N, F), and its mean over the views."""
    shape = g.constant(f"layer{i}.shape", np.array([layer.n_views, -1, layer.features], np.int64))
    g.node("Reshape", [shape], f"layer{i}_by_view")
    g.node(
        "ReduceMean", [g.constant(f"layer{i}.axes", np.array([0], np.int64))], f"layer{i}_mean", keepdims=0
    )


def _conv_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    weight, bias = g.params(i)
    name, p = layer.name, layer.kernel // 2
    kernel = weight.transpose(3, 2, 0, 1)  # (k, k, C, F) -> (F, C, k, k)
    inputs = [g.constant(f"{name}.weight", kernel), g.constant(f"{name}.bias", bias)]
    g.node("Conv", inputs, name, kernel_shape=[layer.kernel] * 2, pads=[p] * 4)


def _pool_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    g.node("MaxPool", [], f"{g.prefix}pool{i}", kernel_shape=[2, 2], strides=[2, 2])


def _residual_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    """The branch's nodes and the shortcut's, each from the block's input, then their Add."""
    ends = []
    paths = zip((layer.branch, layer.shortcut), g.folding.inner[i], ("branch", "skip"))
    for path, folding, name in paths:
        inner = g.path(folding, f"block{i}_{name}_")
        for j, sublayer in enumerate(path):
            if j not in folding.folded:
                NODES[sublayer.kind](inner, sublayer, j, False)
        ends.append(inner.x)
    g.x = ends[0]
    g.node("Add", [ends[1]], f"block{i}_add")


def _avgpool_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    g.node("GlobalAveragePool", [], f"avgpool{i}")
    g.node("Flatten", [], f"avgpool{i}_flatten", axis=1)  # (N, C, 1, 1) to (N, C)


def _batchnorm_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    """A batch norm that did not fold (after pooling, with a negative scale)."""
    values = [layer.gamma.value, layer.beta.value, layer.running_mean, layer.running_var]
    names = [
        g.constant(f"{layer.name}.{part}", v) for part, v in zip(("scale", "bias", "mean", "var"), values)
    ]
    g.node("BatchNormalization", names, layer.name, epsilon=layer.eps)


def _relu_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    g.node("Relu", [], f"{g.prefix}relu{i}")


def _flatten_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    g.node("Transpose", [], f"layer{i}_to_nhwc", perm=[0, 2, 3, 1])  # our rows are NHWC, channels fastest
    g.node("Reshape", [g.constant(f"layer{i}.shape", np.array([0, -1], np.int64))], f"layer{i}_reshape")


def _linear_nodes(g: _Graph, layer: Any, i: int, last: bool) -> None:
    weight, bias = g.params(i)
    name = layer.name
    g.node("MatMul", [g.constant(f"{name}.weight", weight)], f"{name}_matmul")
    g.node("Add", [g.constant(f"{name}.bias", bias)], f"{name}_add", "logits" if last else None)


def _nothing(g: _Graph, layer: Any, i: int, last: bool) -> None:
    """Dropout is the identity at inference."""


# One entry per layer kind (nn.KINDS): the nodes it becomes. tests/test_export.py checks the two agree.
NODES: dict[str, Callable[[_Graph, Any, int, bool], None]] = {
    "centre": _centre_nodes,
    "image": _image_nodes,
    "views": _views_nodes,
    "mean_of_views": _mean_of_views_nodes,
    "conv": _conv_nodes,
    "maxpool": _pool_nodes,
    "residual": _residual_nodes,
    "avgpool": _avgpool_nodes,
    "batchnorm": _batchnorm_nodes,
    "relu": _relu_nodes,
    "flatten": _flatten_nodes,
    "linear": _linear_nodes,
    "dropout": _nothing,
}


def default_output(checkpoint_path: Path) -> Path:
    """Beside the checkpoint, same stem: runs/x/best.npz -> runs/x/best.onnx."""
    return Path(checkpoint_path).with_suffix(".onnx")


def export_checkpoint(checkpoint_path: str | Path, output: str | Path | None = None) -> Path:
    """Load and check a checkpoint, write its ONNX graph atomically, and return the path written."""
    require("onnx", "onnx")  # before any work: a missing extra is the first thing to say
    checkpoint_path = Path(checkpoint_path)
    loaded = checkpoint.load(checkpoint_path)
    output = Path(output) if output is not None else default_output(checkpoint_path)
    if output.is_dir():
        raise NotAFile(f"{output}: is a folder; give a file name, e.g. {output / 'model.onnx'}")
    names = loaded.meta.get("class_names") or [str(i) for i in range(loaded.model.n_classes)]
    fashion = loaded.model.n_inputs == 784 and "estimator" not in loaded.meta
    model = to_onnx(
        loaded.model,
        names,
        loaded.meta["normalisation"],  # load() refuses a checkpoint without one
        FASHION_MNIST_INPUT if fashion else None,
        hashlib.sha256(checkpoint_path.read_bytes()).hexdigest(),
    )
    try:
        atomic_write_bytes(output, model.SerializeToString())
    except OSError as err:
        raise type(err)(f"{output}: cannot write the ONNX file ({err.strerror or err})") from None
    return output
