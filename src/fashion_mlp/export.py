"""A trained network and its preprocessing as an ONNX graph, built with the onnx package's helpers.

The graph mirrors ``nn.Inference`` node for node: MatMul, Add and Relu for each hidden layer, MatMul
and Add for the last, then Softmax and ArgMax. The input normalisation and the model's input mean are
folded into the first layer's weights and bias (``nn.folded_layers``), so the graph takes raw values:

- input ``pixels``: float32 [batch, n_inputs], for Fashion-MNIST raw grayscale 0-255, 28x28 row-major,
  a light garment on a dark background;
- outputs ``probabilities``: float32 [batch, classes], and ``label``: int64 [batch], the names
  skl2onnx gives a classifier with ZipMap off.

A convolutional network (``nn.Network``) is emitted through ``NODES``, a table from layer kind to the
nodes it becomes: Conv, MaxPool, Relu, MatMul and Add, with Transpose and Reshape where our NHWC
layout meets ONNX's NCHW. Batch norm adds no node where it can be folded into the convolution or
fully connected layer before it: w' = w·s, b' = b·s + t, with s = gamma / sqrt(var + eps) and
t = beta - mean·s. Max pooling between the two does not stop this while every s is positive, since
a positive scale commutes with a maximum; otherwise the batch norm becomes a BatchNormalization node.
``nn.fold_batch_norms`` does this folding, for this graph and for ``nn.NetworkInference`` alike.
The normalisation is a Sub and a Mul on the input (it cannot be folded into a zero-padded
convolution: the padding would no longer be zero in pixel units).

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
from .nn import (
    MLP,
    BatchNorm,
    Centre,
    Conv2d,
    Dropout,
    Flatten,
    Image,
    Linear,
    MaxPool2d,
    Network,
    ReLU,
    fold_batch_norms,
    folded_layers,
)

OPSET = 21
IR_VERSION = 10
INPUT, PROBABILITIES, LABEL = "pixels", "probabilities", "label"
FASHION_MNIST_INPUT = (
    "pixels: float32 [batch, 784], raw grayscale 0-255 of a 28x28 image in row-major order, "
    "a light garment on a dark background, as in Fashion-MNIST"
)


def to_onnx(
    model: MLP | Network,
    class_names: Sequence[str],
    normalisation: dict[str, float] | None = None,
    input_description: str | None = None,
    source_sha256: str | None = None,
) -> Any:
    """The ONNX ModelProto of ``model`` with ``(x - offset) / scale`` folded into its first layer.

    ``normalisation`` is {"offset": ..., "scale": ...} (none: the model takes its inputs as they are).
    """
    require("onnx", "onnx")
    from onnx import helper, numpy_helper

    if len(class_names) != model.sizes[-1]:
        raise InvalidValue(f"{len(class_names)} class names for a model with {model.sizes[-1]} outputs")
    norm = {"offset": 0.0, "scale": 1.0, **(normalisation or {})}
    if not isinstance(model, MLP):
        nodes, initializers = _network_graph(model, float(norm["offset"]), float(norm["scale"]))
        return _model(model, nodes, initializers, class_names, norm, input_description, source_sha256)
    layers = folded_layers(model, float(norm["offset"]), float(norm["scale"]))
    nodes, initializers, x = [], [], INPUT
    for i, (weight, bias) in enumerate(layers):
        fc, last = f"fc{i + 1}", i == len(layers) - 1
        initializers.append(numpy_helper.from_array(weight, f"{fc}.weight"))
        initializers.append(numpy_helper.from_array(bias, f"{fc}.bias"))
        nodes.append(helper.make_node("MatMul", [x, f"{fc}.weight"], [f"{fc}.product"], name=f"{fc}_matmul"))
        x = "logits" if last else f"{fc}.out"
        nodes.append(helper.make_node("Add", [f"{fc}.product", f"{fc}.bias"], [x], name=f"{fc}_add"))
        if not last:
            nodes.append(helper.make_node("Relu", [x], [f"relu{i + 1}"], name=f"relu{i + 1}"))
            x = f"relu{i + 1}"
    return _model(model, nodes, initializers, class_names, norm, input_description, source_sha256)


def _model(
    model: MLP | Network,
    nodes: list[Any],
    initializers: list[Any],
    class_names: Sequence[str],
    norm: dict[str, float],
    input_description: str | None,
    source_sha256: str | None,
) -> Any:
    """The graph around the nodes that compute ``logits``: softmax, argmax, inputs, outputs, metadata."""
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper

    nodes.append(helper.make_node("Softmax", ["logits"], [PROBABILITIES], axis=1, name="softmax"))
    nodes.append(helper.make_node("ArgMax", ["logits"], [LABEL], axis=1, keepdims=0, name="argmax"))
    classes = model.sizes[-1]
    graph = helper.make_graph(
        nodes,
        "fashion_mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", model.sizes[0]])],
        [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info(LABEL, TensorProto.INT64, ["batch"]),
        ],
        initializers,
    )
    network = not isinstance(model, MLP)
    sizes = model.describe()
    doc = (
        "normalisation as Sub and Mul; batch norm folded"
        if network
        else "normalisation and input mean folded into fc1"
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="fashion-mlp",
        producer_version=__version__,
        doc_string=f"fashion-mlp {sizes} ReLU {'CNN' if network else 'MLP'}; {doc}",
    )
    folding = {"offset": float(norm["offset"]), "scale": float(norm["scale"])}
    folding.update(centred=model.centre is not None, folded_into="input" if network else "fc1")
    description = input_description or f"pixels: float32 [batch, {model.sizes[0]}], raw input values"
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
    """The nodes and initializers so far, and the name of the tensor the next node reads."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.x = INPUT

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, output: str | None = None, **attrs: Any) -> None:
        output = output or f"{name}.out"
        self.nodes.append(self.helper.make_node(op, [self.x, *inputs], [output], name=name, **attrs))
        self.x = output


def _network_graph(network: Network, offset: float, scale: float) -> tuple[list[Any], list[Any]]:
    """The nodes computing ``logits`` from raw ``pixels``, one table row per layer kind."""
    g = _Graph()
    dtype = network.dtype
    g.node("Sub", [g.constant("offset", np.array(offset, dtype))], "normalise_sub")
    g.node("Mul", [g.constant("inverse_scale", np.array(1.0 / scale, dtype))], "normalise_mul")
    params, folded = fold_batch_norms(network.layers)
    for i, layer in enumerate(network.layers):
        if i in folded:
            continue
        NODES[type(layer)](g, layer, f"layer{i}", params.get(i), i == len(network.layers) - 1)
    return g.nodes, g.initializers


def _centre_nodes(g: _Graph, layer: Any, name: str, params: Any, last: bool) -> None:
    g.node("Sub", [g.constant(f"{name}.mean", layer.mean)], name)


def _image_nodes(g: _Graph, layer: Any, name: str, params: Any, last: bool) -> None:
    g.node(
        "Reshape", [g.constant(f"{name}.shape", np.array([-1, *layer.shape], np.int64))], f"{name}_reshape"
    )
    g.node("Transpose", [], f"{name}_to_nchw", perm=[0, 3, 1, 2])  # ONNX convolves NCHW


def _conv_nodes(g: _Graph, layer: Any, name: str, params: Any, last: bool) -> None:
    weight, bias = params
    p = layer.kernel // 2
    kernel = weight.transpose(3, 2, 0, 1).astype(np.float32)  # (k, k, C, F) -> (F, C, k, k)
    inputs = [g.constant(f"{name}.weight", kernel), g.constant(f"{name}.bias", bias.astype(np.float32))]
    g.node("Conv", inputs, name, kernel_shape=[layer.kernel] * 2, pads=[p] * 4)


def _pool_nodes(g: _Graph, layer: Any, name: str, params: Any, last: bool) -> None:
    g.node("MaxPool", [], name, kernel_shape=[2, 2], strides=[2, 2])


def _batchnorm_nodes(g: _Graph, layer: Any, name: str, params: Any, last: bool) -> None:
    values = [layer.gamma.value, layer.beta.value, layer.running_mean, layer.running_var]
    names = [g.constant(f"{name}.{part}", v) for part, v in zip(("scale", "bias", "mean", "var"), values)]
    g.node("BatchNormalization", names, name, epsilon=layer.eps)


def _relu_nodes(g: _Graph, layer: Any, name: str, params: Any, last: bool) -> None:
    g.node("Relu", [], name)


def _flatten_nodes(g: _Graph, layer: Any, name: str, params: Any, last: bool) -> None:
    g.node("Transpose", [], f"{name}_to_nhwc", perm=[0, 2, 3, 1])  # our rows are NHWC, channels fastest
    g.node("Reshape", [g.constant(f"{name}.shape", np.array([0, -1], np.int64))], f"{name}_reshape")


def _linear_nodes(g: _Graph, layer: Any, name: str, params: Any, last: bool) -> None:
    weight, bias = params
    g.node("MatMul", [g.constant(f"{name}.weight", weight.astype(np.float32))], f"{name}_matmul")
    g.node(
        "Add",
        [g.constant(f"{name}.bias", bias.astype(np.float32))],
        f"{name}_add",
        "logits" if last else None,
    )


def _nothing(g: _Graph, layer: Any, name: str, params: Any, last: bool) -> None:
    """Dropout is the identity at inference."""


NODES: dict[type, Callable[[_Graph, Any, str, Any, bool], None]] = {
    Centre: _centre_nodes,
    Image: _image_nodes,
    Conv2d: _conv_nodes,
    MaxPool2d: _pool_nodes,
    BatchNorm: _batchnorm_nodes,
    ReLU: _relu_nodes,
    Flatten: _flatten_nodes,
    Linear: _linear_nodes,
    Dropout: _nothing,
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
    names = loaded.meta.get("class_names") or [str(i) for i in range(loaded.model.sizes[-1])]
    fashion = loaded.model.sizes[0] == 784 and "estimator" not in loaded.meta
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
