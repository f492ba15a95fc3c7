"""Safetensors weight files in the reference exchange layout (spec/model.md).

Tensor names and shapes equal `V1Model.state_dict()`. Sizes the tensors do not fix
(heads, context, RoPE wavelength) travel in the file's `__metadata__`, which the reference
package ignores; a file without them (e.g. written by the reference) gets the V1 values.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import sys

import torch
import numpy as np
from safetensors.torch import save, save_file

from soma_ray.model.config import V1Config
from soma_ray.model.errors import (
    ConfigMismatchError,
    MissingTensorError,
    TensorDtypeError,
    TensorShapeError,
    UnexpectedTensorError,
    WeightsFormatError,
)
from soma_ray.model.files import replacing
from soma_ray.model.network import V1Model

_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
_METADATA_FIELDS = ("num_heads", "max_seq_len", "max_wavelength")
_METADATA_PREFIX = "soma.v1."


def seeded_model(config: V1Config, seed: int) -> V1Model:
    """A fresh model with spec/model.md's initialisation, the same for the same seed."""
    torch.manual_seed(seed)
    return V1Model(config)


# The localnet's genesis models are these seeds' fresh small V1 models (the live localnet and
# `soma simulate` publish them, each under its own fresh encryption key).
GENESIS_WEIGHTS_SEED = 7_000


def genesis_model_weights(index: int) -> bytes:
    """The weights file of the localnet's genesis model `index`."""
    return weights_bytes(seeded_model(V1Config.small(), GENESIS_WEIGHTS_SEED + index))


def _tensors_and_metadata(model: V1Model) -> tuple[dict, dict]:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous()
               for k, v in model.state_dict().items()}
    return tensors, {_METADATA_PREFIX + f: str(getattr(model.config, f)) for f in _METADATA_FIELDS}


def save_weights(model: V1Model, path: str | os.PathLike) -> None:
    """Write the model's float32 weights to `path`, atomically (a reader never sees half)."""
    tensors, metadata = _tensors_and_metadata(model)
    with replacing(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def weights_bytes(model: V1Model) -> bytes:
    """The bytes `save_weights` writes, in memory."""
    tensors, metadata = _tensors_and_metadata(model)
    return save(tensors, metadata=metadata)


def load_weights(source: str | os.PathLike | bytes, config: V1Config | None = None,
                 device: str | torch.device = "cpu") -> V1Model:
    """Load a weights file (path or bytes) into a new V1Model in eval mode.

    Width, layers, feed-forward size and vocabulary come from the tensors; a `config` that
    disagrees with them raises ConfigMismatchError. Every tensor is checked (name, shape,
    float32, byte span) before any is read, then read straight into its parameter: the only
    memory used is the parameters' own (no mapped file, no second copy).
    """
    with _open(source) as (stream, size):
        header, model = _checked_header(stream, size, config)
        data_start = size - _data_size(header)
        tensors = {key: _read_tensor(stream, data_start, header[key], key)
                   for key in model.state_dict()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.to(device).eval()


def read_weights_header(source: str | os.PathLike | bytes,
                        config: V1Config | None = None) -> V1Config:
    """The config of a weights file, from its header alone: every check `load_weights` makes
    before reading a tensor (and the same errors), without reading one."""
    with _open(source) as (stream, size):
        return _checked_header(stream, size, config)[1].config


@contextlib.contextmanager
def _open(source: str | os.PathLike | bytes):
    """(stream, size) of a path or of bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source), len(source)  # BytesIO shares the bytes, no copy
        return
    with open(source, "rb") as stream:
        yield stream, os.fstat(stream.fileno()).st_size


def _checked_header(stream, size: int, config: V1Config | None) -> tuple[dict, V1Model]:
    """The parsed header and a model of its config on the meta device (no memory), after
    every check that needs no tensor bytes."""
    header = _parse_header(_read_header_bytes(stream), size)
    with torch.device("meta"):
        model = V1Model(_config_from_header(header, config))
    _check_tensors(header, model.state_dict())
    return header, model


def _read_tensor(stream, data_start: int, info: dict, key: str) -> torch.Tensor:
    """Read one little-endian float32 tensor into fresh memory."""
    begin, end = info["data_offsets"]
    tensor = torch.empty(info["shape"], dtype=torch.float32)
    stream.seek(data_start + begin)
    if stream.readinto(tensor.numpy().view(np.uint8)) != end - begin:  # shrank since checked
        raise WeightsFormatError(f"file ends inside tensor {key!r}")
    if sys.byteorder != "little":
        tensor.numpy().byteswap(inplace=True)
    return tensor


def _read_header_bytes(stream) -> bytes:
    head = stream.read(_HEADER_LENGTH_BYTES)
    if len(head) < _HEADER_LENGTH_BYTES:
        return head
    (length,) = struct.unpack("<Q", head)
    return head + stream.read(min(length, _MAX_HEADER_BYTES + 1))


def _data_size(header: dict) -> int:
    return max((info["data_offsets"][1] for key, info in header.items()
                if key != "__metadata__"), default=0)


def _parse_header(prefix: bytes, total_size: int) -> dict:
    """The JSON header of a safetensors file, after checking it covers the file exactly."""
    if len(prefix) < _HEADER_LENGTH_BYTES:
        raise WeightsFormatError(f"file has {total_size} bytes, shorter than the header length")
    (length,) = struct.unpack("<Q", prefix[:_HEADER_LENGTH_BYTES])
    if length > _MAX_HEADER_BYTES or _HEADER_LENGTH_BYTES + length > total_size:
        raise WeightsFormatError(
            f"header claims {length} bytes but the file has {total_size}")
    try:
        header = json.loads(prefix[_HEADER_LENGTH_BYTES:_HEADER_LENGTH_BYTES + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFormatError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WeightsFormatError("header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not (isinstance(metadata, dict)
            and all(isinstance(v, str) for v in metadata.values())):
        raise WeightsFormatError("header __metadata__ is not a map of strings")
    for key, info in header.items():
        if key != "__metadata__" and not _well_formed(info):
            raise WeightsFormatError(f"header entry for {key!r} is malformed")
    data_size = total_size - _HEADER_LENGTH_BYTES - length
    end = _data_size(header)
    if end != data_size:
        raise WeightsFormatError(
            f"tensors need {end} data bytes but the file holds {data_size} (truncated?)")
    return header


def _well_formed(info) -> bool:
    try:
        begin, end = info["data_offsets"]
        return (isinstance(info["dtype"], str) and _is_count(begin) and _is_count(end)
                and begin <= end and all(_is_count(n) for n in info["shape"]))
    except (TypeError, KeyError, ValueError):
        return False


def _is_count(value) -> bool:
    """A JSON integer ≥ 0: not a float such as 64.0, not a boolean."""
    return type(value) is int and value >= 0


def _config_from_header(header: dict, config: V1Config | None) -> V1Config:
    """The file's sizes, checked against `config` when one is given."""
    vocab_size, width = _shape_of(header, "embedding.weight", 2)
    _, ffn = _shape_of(header, "encoder.layers.0.pwff.linear_inner.weight", 2)
    layer_ids = {int(k.split(".")[2]) for k in header
                 if k.startswith("encoder.layers.") and k.split(".")[2].isdigit()}
    found = {"embedding_dim": width, "num_layers": max(layer_ids) + 1,
             "pwff_hidden_dim": ffn, "vocab_size": vocab_size}
    metadata = header.get("__metadata__") or {}
    for field in _METADATA_FIELDS:
        if _METADATA_PREFIX + field in metadata:
            value = metadata[_METADATA_PREFIX + field]
            try:
                found[field] = type(getattr(V1Config, field))(value)
            except (TypeError, ValueError):
                raise WeightsFormatError(f"metadata {field} is {value!r}") from None
    if config is None:
        try:
            return V1Config(**found)
        except ValueError as exc:
            raise WeightsFormatError(f"the file's sizes are not a V1 model: {exc}") from None
    for field, value in found.items():
        if getattr(config, field) != value:
            raise ConfigMismatchError(field, getattr(config, field), value)
    return config


def _shape_of(header: dict, key: str, ndim: int) -> tuple[int, ...]:
    if key not in header:
        raise MissingTensorError(key)
    shape = tuple(header[key]["shape"])
    if len(shape) != ndim:
        raise TensorShapeError(key, ("?",) * ndim, shape)
    return shape


def _check_tensors(header: dict, expected: dict[str, torch.Tensor]) -> None:
    extra = sorted(set(header) - set(expected) - {"__metadata__"})
    if extra:
        raise UnexpectedTensorError(extra)
    for key, tensor in expected.items():
        if key not in header:
            raise MissingTensorError(key)
        if tuple(header[key]["shape"]) != tuple(tensor.shape):
            raise TensorShapeError(key, tuple(tensor.shape), tuple(header[key]["shape"]))
        if header[key]["dtype"] != "F32":
            raise TensorDtypeError(key, "F32", header[key]["dtype"])
        begin, end = header[key]["data_offsets"]
        if end - begin != tensor.numel() * 4:
            raise WeightsFormatError(
                f"tensor {key!r} spans {end - begin} bytes, its shape needs {tensor.numel() * 4}")
