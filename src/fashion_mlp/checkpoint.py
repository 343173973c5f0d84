"""Checkpoints: one .npz of named float32 arrays plus a JSON metadata member. No pickle, ever.

Loading reads the metadata first, checks every member's size against the recorded architecture
before reading it, reads arrays with allow_pickle=False, and checks a SHA-256 over all arrays.

A checkpoint records its network as layer records (``Network.records``). Files written before
networks had records describe a fully connected network by its sizes; ``load`` turns those into
records (``mlp_records``), the one encoding from then on, and the arrays' names are the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import InvalidValue
from .files import atomic_write_bytes
from .nn import MAX_WIDTH, Inference, Network, mlp_records

FORMAT = "fashion-mlp-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"
MAX_META_BYTES = 1 << 20
MAX_ARRAY_ITEMS = 1 << 26


class CheckpointError(InvalidValue):
    """A file that is not a usable checkpoint: truncated, foreign, tampered or incompatible."""


@dataclass
class Checkpoint:
    model: Network
    meta: dict[str, Any]  # format, version, architecture, normalisation, classes, config, metrics, ...
    optimizer_state: dict[str, np.ndarray]
    training_arrays: dict[str, np.ndarray] = field(default_factory=dict)  # the rest of a run's state

    def inference(self) -> Inference:
        """The model ready to answer raw inputs (pixels 0-255), its normalisation folded in: what
        predict, serve and the ONNX export all compute."""
        norm = self.meta["normalisation"]  # present and valid: load() refuses a file without it
        return self.model.answering(float(norm["offset"]), float(norm["scale"]))


def normalisation_fault(meta: dict[str, Any]) -> str | None:
    """Why ``meta`` has no usable input normalisation ``{"offset": o, "scale": s}`` (inputs are
    ``(x - o) / s`` before the first layer), or None if it has. Every checkpoint must say what it
    applies: a loader that guessed would answer differently from one that guessed otherwise."""
    norm = meta.get("normalisation")
    if not isinstance(norm, dict) or not {"offset", "scale"} <= set(norm):
        return "records no input normalisation {offset, scale}"
    values = [norm["offset"], norm["scale"]]
    if not all(type(v) in (int, float) and math.isfinite(v) for v in values) or values[1] == 0:
        return f"has an invalid input normalisation {norm!r} (two finite numbers, scale not 0)"
    return None


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def architecture(model: Network) -> dict[str, Any]:
    """What a checkpoint records of the model: its layer records, which rebuild it."""
    return {"layers": model.records, "inputs": model.n_inputs, "classes": model.n_classes}


def _from_sizes(architecture: dict[str, Any]) -> dict[str, Any] | None:
    """The layer records of a fully connected network that a file from before records described by
    its sizes and settings; None if they are not valid."""
    sizes = architecture.get("sizes")
    valid = isinstance(sizes, list) and len(sizes) >= 2
    valid = valid and all(type(s) is int and 0 < s <= MAX_WIDTH for s in sizes)
    centred = architecture.get("centred", False)  # files from before centring lack the key
    rates = [architecture.get("dropout", 0.0), architecture.get("input_dropout", 0.0)]
    valid = valid and isinstance(centred, bool) and all(type(r) in (int, float) for r in rates)
    if not valid:
        return None
    layers = mlp_records(sizes, float(rates[0]), float(rates[1]), centred)
    return {"layers": layers, "inputs": sizes[0], "classes": sizes[-1]}


def save(
    path: str | Path,
    model: Network,
    meta: dict[str, Any],
    optimizer_state: dict[str, np.ndarray] | None = None,
    training_arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """Write model weights (and optionally optimiser state and the rest of a training state's
    arrays) with ``meta`` atomically to ``path``. ``meta`` must record the input normalisation
    (``normalisation_fault``)."""
    fault = normalisation_fault(meta)
    if fault is not None:
        raise InvalidValue(f"the checkpoint's metadata {fault}")
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in (optimizer_state or {}).items()})
    arrays.update({f"train/{k}": np.asarray(v) for k, v in (training_arrays or {}).items()})
    full_meta = {
        **meta,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "architecture": architecture(model),
        "arrays": {k: [v.dtype.str, list(v.shape)] for k, v in arrays.items()},
        "sha256": _digest(arrays),
    }
    meta_bytes = np.frombuffer(json.dumps(full_meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **{META_KEY: meta_bytes}, **arrays)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; raise CheckpointError with the reason if anything is off."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with zipfile.ZipFile(path) as archive:
            meta = _read_meta(archive, path)
            network = _network(meta, path)
            arrays = _read_arrays(archive, meta, path, network.state_shapes())
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError, zlib.error,
            struct.error, NotImplementedError, RuntimeError) as err:  # fmt: skip
        # zlib.error: a deflated member that does not inflate; NotImplementedError: a compression
        # method zipfile lacks; RuntimeError: an encrypted member.
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({err})") from None
    if _digest(arrays) != meta.get("sha256"):
        raise CheckpointError(f"{path}: arrays do not match their recorded checksum (file altered?)")
    network.load_state_dict({k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")})
    optim = {k[len("optim/") :]: v for k, v in arrays.items() if k.startswith("optim/")}
    training = {k[len("train/") :]: v for k, v in arrays.items() if k.startswith("train/")}
    return Checkpoint(network, meta, optim, training)


def _read_npy(archive: zipfile.ZipFile, member: str, dtype: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """Read one .npy member, refusing it unless its header states exactly ``dtype`` and ``shape``
    (``shape=None``: any 1-D length up to MAX_META_BYTES).

    The header is checked before any data is read, so a lying header allocates nothing.
    """
    with archive.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else None
            read_header = read_header or np.lib.format.read_array_header_2_0
            found_shape, fortran, found_dtype = read_header(f)
        except (ValueError, SyntaxError, tokenize.TokenError, TypeError, MemoryError, RecursionError) as err:
            # NumPy parses the header's text with tokenize and ast before the member's CRC is checked,
            # so damaged bytes there raise whatever those raise.
            raise CheckpointError(f"{member} has a damaged header ({type(err).__name__}: {err})") from None
        if shape is None and len(found_shape) == 1 and found_shape[0] <= MAX_META_BYTES:
            shape = found_shape
        if found_dtype.str != dtype or tuple(found_shape) != tuple(shape or ()) or fortran:
            raise CheckpointError(f"{member} holds {found_dtype.str}{found_shape}, expected {dtype}{shape}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * found_dtype.itemsize
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):
            raise CheckpointError(f"{member} is truncated or has trailing data")
    return np.frombuffer(data, dtype=found_dtype).reshape(shape).copy()


def _read_meta(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    name = META_KEY + ".npy"
    if name not in archive.namelist():
        raise CheckpointError(f"{path}: not a fashion-mlp checkpoint (no metadata)")
    try:
        raw = _read_npy(archive, name, "|u1", None)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: metadata is damaged ({err})") from None
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fashion-mlp checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format_version')} is not supported "
            f"(this version reads format {FORMAT_VERSION}); upgrade fashion-mlp"
        )
    architecture = meta.get("architecture")
    if not isinstance(architecture, dict):
        raise CheckpointError(f"{path}: metadata has no valid architecture")
    if "layers" not in architecture:  # a file from before layer records: its sizes, made records
        architecture = meta["architecture"] = _from_sizes(architecture) or {}
    inputs = architecture.get("inputs")  # the records are checked as they are built (_network)
    valid = isinstance(architecture.get("layers"), list) and type(inputs) is int and 0 < inputs <= 1 << 20
    if not valid or not isinstance(meta.get("arrays"), dict):
        raise CheckpointError(f"{path}: metadata has no valid architecture")
    fault = normalisation_fault(meta)
    if fault is not None:
        raise CheckpointError(f"{path}: its metadata {fault}; its inputs cannot be prepared as in training")
    return meta


def _network(meta: dict[str, Any], path: Path) -> Network:
    """The network a checkpoint's layer records describe, built before its arrays are read (so that
    their shapes can be checked against it), within a parameter budget."""
    architecture = meta["architecture"]
    try:
        network = Network(architecture["layers"], architecture["inputs"], budget=MAX_ARRAY_ITEMS)
    except (TypeError, ValueError, KeyError) as err:  # the metadata is not covered by the arrays' checksum
        raise CheckpointError(f"{path}: metadata has no valid architecture ({err})") from None
    if network.n_classes != architecture.get("classes"):
        raise CheckpointError(f"{path}: metadata has no valid architecture (its classes disagree)")
    return network


def _array_entry(entry: Any) -> bool:
    """A declared array: [dtype as text, [each dimension, a count]]."""
    return (
        isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], list)
        and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in entry[1])
    )


def _read_arrays(
    archive: zipfile.ZipFile, meta: dict[str, Any], path: Path, shapes: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    model_shapes = {f"model/{k}": v for k, v in shapes.items()}
    declared = meta["arrays"]
    if not isinstance(declared, dict):
        raise CheckpointError(f"{path}: its metadata does not list its arrays")
    members = {m.removesuffix(".npy") for m in archive.namelist()} - {META_KEY}
    model_members = {m for m in members if m.startswith("model/")}
    if members != set(declared) or model_members != set(model_shapes):
        raise CheckpointError(f"{path}: its arrays do not match its metadata")
    arrays = {}
    for name, entry in declared.items():
        if not _array_entry(entry):
            raise CheckpointError(f"{path}: the metadata of array {name!r} is not [dtype, [dims...]]")
        dtype, shape = entry[0], tuple(entry[1])
        if name in model_shapes and (shape != model_shapes[name] or dtype != "<f4"):
            raise CheckpointError(f"{path}: {name} is {dtype}{shape}, not the architecture's")
        if name not in model_shapes and (np.prod(shape, dtype=np.int64) > MAX_ARRAY_ITEMS):
            raise CheckpointError(f"{path}: {name} is implausibly large")
        try:
            arrays[name] = _read_npy(archive, name + ".npy", dtype, shape)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
    return arrays
