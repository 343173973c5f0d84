"""A trained MLP and its preprocessing as an ONNX graph, built with the onnx package's helpers.

The graph mirrors ``nn.Inference`` node for node: MatMul, Add and Relu for each hidden layer, MatMul
and Add for the last, then Softmax and ArgMax. The input normalisation and the model's input mean are
folded into the first layer's weights and bias (``nn.folded_layers``), so the graph takes raw values:

- input ``pixels``: float32 [batch, n_inputs], for Fashion-MNIST raw grayscale 0-255, 28x28 row-major,
  a light garment on a dark background;
- outputs ``probabilities``: float32 [batch, classes], and ``label``: int64 [batch], the names
  skl2onnx gives a classifier with ZipMap off.

Opset 21 and IR version 10 are set explicitly: onnx 1.23 would otherwise write IR 14, which
onnxruntime 1.31 refuses. The file format is in docs/formats.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, checkpoint
from .errors import InvalidValue, NotAFile
from .extras import require
from .files import atomic_write_bytes
from .nn import MLP, folded_layers

OPSET = 21
IR_VERSION = 10
INPUT, PROBABILITIES, LABEL = "pixels", "probabilities", "label"
FASHION_MNIST_INPUT = (
    "pixels: float32 [batch, 784], raw grayscale 0-255 of a 28x28 image in row-major order, "
    "a light garment on a dark background, as in Fashion-MNIST"
)


def to_onnx(
    model: MLP,
    class_names: Sequence[str],
    normalisation: dict[str, float] | None = None,
    input_description: str | None = None,
    source_sha256: str | None = None,
) -> Any:
    """The ONNX ModelProto of ``model`` with ``(x - offset) / scale`` folded into its first layer.

    ``normalisation`` is {"offset": ..., "scale": ...} (none: the model takes its inputs as they are).
    """
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper, numpy_helper

    if len(class_names) != model.sizes[-1]:
        raise InvalidValue(f"{len(class_names)} class names for a model with {model.sizes[-1]} outputs")
    norm = {"offset": 0.0, "scale": 1.0, **(normalisation or {})}
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
    sizes = "-".join(map(str, model.sizes))
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="fashion-mlp",
        producer_version=__version__,
        doc_string=f"fashion-mlp {sizes} ReLU MLP; normalisation and input mean folded into fc1",
    )
    folding = {"offset": float(norm["offset"]), "scale": float(norm["scale"])}
    folding.update(centred=model.centre is not None, folded_into="fc1")
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
