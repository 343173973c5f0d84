"""The Open Inference Protocol's tensors (KServe v2 REST, as Triton and MLServer speak it), as plain
functions with no server: a request's body in, arrays out; arrays in, a response's body out.

Both encodings of the protocol are here: JSON tensors ("data": [...]) and the binary tensor data
extension, where the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by
the tensors' raw little-endian bytes, each input declaring its length in ``binary_data_size``.
tritonclient uses the binary form by default. Every fault is a ProtocolError with the HTTP status to
answer and a one-line message, which the server sends as {"error": "..."}.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

INPUT = "pixels"
N_PIXELS, SIDE = 784, 28
OUTPUTS = ("probabilities", "label", "class_name")
DEFAULT_OUTPUTS = ("probabilities", "label")
DATATYPES = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
EXTENSIONS = ["binary_tensor_data"]


class ProtocolError(ValueError):
    """A request the protocol (or this model) cannot take: ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_count(text: str, what: str) -> int:
    """A whole number from a header or a query: ASCII digits only, at most 18 of them. (``str.isdigit``
    also takes "²", which ``int`` refuses, and ``int`` takes "+1", " 1", "1_0" and "١".) Every number a
    client sends us in a header or query goes through here."""
    if not (0 < len(text) <= 18 and text.isascii() and text.isdigit()):
        raise ProtocolError(f"{what} must be a whole number in ASCII digits, got {text[:40]!r}")
    return int(text)


@dataclass
class InferRequest:
    pixels: np.ndarray  # float32 (N, 784), raw values 0-255
    id: str | None = None
    outputs: list[tuple[str, bool]] = field(default_factory=list)  # (name, as binary) in the asked order


def _json(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ProtocolError(f"{what} is not valid JSON ({err})") from None


def _binary_flag(parameters: Any, default: bool) -> bool:
    if parameters is None:
        return default
    if not isinstance(parameters, dict):
        raise ProtocolError("parameters must be a JSON object")
    flag = parameters.get("binary_data", default)
    if not isinstance(flag, bool):
        raise ProtocolError("parameters.binary_data must be true or false")
    return flag


def parse_infer_request(body: bytes, header_length: str | None, max_rows: int) -> InferRequest:
    """Decode an inference request for input ``pixels``; ``header_length`` is the value of the
    Inference-Header-Content-Length header (binary tensor data), or None for a JSON-only body."""
    if not body:
        raise ProtocolError("the request body is empty; send an inference request as JSON")
    if header_length is None:
        header, binary = body, b""
    else:
        n = parse_count(header_length, "Inference-Header-Content-Length")
        if not 0 < n <= len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes"
            )
        header, binary = body[:n], body[n:]
    request = _json(header, "the request")
    if not isinstance(request, dict):
        raise ProtocolError("the request must be a JSON object with an 'inputs' list")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"the request must have exactly one input, '{INPUT}'")
    tensor = inputs[0]
    if tensor.get("name") != INPUT:
        raise ProtocolError(f"unknown input {tensor.get('name')!r}; this model's input is '{INPUT}'")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(f"input '{INPUT}' must be FP32 or UINT8, got {datatype!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise ProtocolError(f"input '{INPUT}' needs a shape, a list of integers")
    if not (len(shape) == 2 and shape[1] == N_PIXELS) and not (len(shape) == 3 and shape[1:] == [SIDE, SIDE]):
        raise ProtocolError(f"input '{INPUT}' must have shape [N, 784] or [N, 28, 28], got {shape}")
    rows = shape[0]
    if rows < 1:
        raise ProtocolError(f"input '{INPUT}' has {rows} rows; it needs at least 1")
    if rows > max_rows:
        raise ProtocolError(
            f"input '{INPUT}' has {rows} rows; this server takes at most {max_rows} a request", 413
        )
    dtype, count = DATATYPES[datatype], rows * N_PIXELS
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("parameters must be a JSON object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if type(size) is not int or size != count * dtype.itemsize:
            raise ProtocolError(
                f"binary_data_size of '{INPUT}' must be {count * dtype.itemsize} for {datatype} {shape}"
            )
        if len(binary) != size:
            raise ProtocolError(f"the request declares {size} bytes of binary data but carries {len(binary)}")
        values = np.frombuffer(binary, dtype=dtype)
    else:
        if binary:
            raise ProtocolError("the body carries binary data that no input declares (binary_data_size)")
        values = _json_values(tensor.get("data"), dtype, count)
    pixels = values.astype(np.float32).reshape(rows, N_PIXELS)
    if datatype == "FP32":
        if not np.isfinite(pixels).all():
            raise ProtocolError(f"input '{INPUT}' holds NaN or infinity; pixels are 0-255")
        if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
            raise ProtocolError(f"input '{INPUT}' holds values outside 0-255 (raw pixels, not normalised)")
    return InferRequest(pixels, _request_id(request.get("id")), _requested_outputs(request))


def _json_values(data: Any, dtype: np.dtype, count: int) -> np.ndarray:
    if not isinstance(data, list):
        raise ProtocolError(f"input '{INPUT}' needs 'data', a list of {count} numbers (or binary data)")
    try:
        values = np.array(data, dtype=np.float64).reshape(-1)  # nested lists are allowed too
    except (ValueError, TypeError):
        raise ProtocolError(f"input '{INPUT}' data must be numbers") from None
    if values.size != count:
        raise ProtocolError(f"input '{INPUT}' has {values.size} values; its shape needs {count}")
    exact = np.isfinite(values).all() and (values == np.round(values)).all()
    if dtype == np.uint8 and (not exact or values.min() < 0 or values.max() > 255):
        raise ProtocolError(f"UINT8 input '{INPUT}' must hold integers 0-255")
    return values


def _request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise ProtocolError("id must be a string of at most 256 characters")
    return value


def _requested_outputs(request: dict[str, Any]) -> list[tuple[str, bool]]:
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("parameters must be a JSON object")
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise ProtocolError("parameters.binary_data_output must be true or false")
    asked = request.get("outputs")
    if asked is None:
        return [(name, binary_default) for name in DEFAULT_OUTPUTS]
    if not isinstance(asked, list) or not asked or not all(isinstance(o, dict) for o in asked):
        raise ProtocolError("outputs must be a list of objects with a 'name'")
    chosen = []
    for output in asked:
        name = output.get("name")
        if name not in OUTPUTS:
            raise ProtocolError(f"unknown output {name!r}; this model's outputs are {', '.join(OUTPUTS)}")
        chosen.append((name, _binary_flag(output.get("parameters"), binary_default)))
    return chosen


# ---------------------------------------------------------------- responses


def output_tensors(
    probabilities: np.ndarray, class_names: Sequence[str]
) -> dict[str, tuple[str, np.ndarray]]:
    """Every output the model has, by name: (datatype, array)."""
    labels = probabilities.argmax(axis=1).astype(np.int64)
    names = np.array([class_names[i].encode() for i in labels], dtype=object)
    return {
        "probabilities": ("FP32", probabilities.astype(np.float32, copy=False)),
        "label": ("INT64", labels),
        "class_name": ("BYTES", names),
    }


def _bytes_tensor(values: np.ndarray) -> bytes:
    """BYTES elements as the protocol sends them: each a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def encode_infer_response(
    model: str, version: str, request: InferRequest, tensors: dict[str, tuple[str, np.ndarray]]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON alone, or a JSON header and binary outputs."""
    outputs, blobs = [], []
    for name, binary in request.outputs:
        datatype, array = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            little = (
                array if datatype == "BYTES" else np.ascontiguousarray(array, array.dtype.newbyteorder("<"))
            )
            blob = _bytes_tensor(array) if datatype == "BYTES" else little.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [v.decode() for v in array]
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response)
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def model_metadata(name: str, n_classes: int, versions: Sequence[str] = ("1",)) -> dict[str, Any]:
    return {
        "name": name,
        "versions": list(versions),
        "platform": "fashion-mlp",
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, N_PIXELS]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "class_name", "datatype": "BYTES", "shape": [-1]},
        ],
    }
