"""Safetensors weight files in the reference exchange layout (spec/model.md).

Tensor names and shapes equal `V1Model.state_dict()`. Sizes the tensors do not fix
(heads, context, RoPE wavelength) travel in the file's `__metadata__`, which the reference
package ignores; a file without them (e.g. written by the reference) gets the V1 values.

Weights files come from strangers (a model owner publishes them; every scorer loads them), so
loading fails closed: whatever the bytes — any header length, nesting, JSON value, key, dtype,
shape or offset, truncated data — the only exceptions are the `ModelError` subclasses of
`soma_ray.model.errors` (an unreadable *path* is still the OSError of opening it).
`tests/unit/model/test_weights_fuzz.py` fuzzes this.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import re
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
from soma_ray.files import replacing
from soma_ray.model.network import V1Model

_HEADER_LENGTH_BYTES = 8
# The production V1 header (389 tensors) is about 40 KB; 4 MiB leaves room for any metadata a
# tool adds and bounds what parsing a hostile header costs (safetensors itself allows 100 MB).
_MAX_HEADER_BYTES = 4 * 2**20
_MAX_NESTING = 3  # {name: {"shape": [...]}}: a safetensors header never nests deeper
_MAX_NDIM = 8
_MAX_COUNT = 2**63 - 1  # offsets and sizes: safetensors' u64, within torch's int64
_MAX_NAME_LENGTH = 256
_MAX_NAMED = 8  # at most this many unexpected names in an error (its message stays short)
_INFO_FIELDS = {"dtype", "shape", "data_offsets"}
# Names and numbers are matched on ASCII only: [0-9] is not \d (which takes "٣" and "²").
_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
_LAYER = re.compile(r"encoder\.layers\.(0|[1-9][0-9]{0,5})\.")
_FFN_KEY = "encoder.layers.0.pwff.linear_inner.weight"
_DTYPE = re.compile(r"[A-Z0-9_]{1,16}")
_POSITIVE_INT = re.compile(r"[1-9][0-9]{0,8}")
_DECIMAL = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,3})?")
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

    A malformed file raises a `ModelError` subclass and nothing else: WeightsFormatError
    (length, JSON, nesting, names, types, spans, metadata), MissingTensorError,
    UnexpectedTensorError, TensorShapeError, TensorDtypeError, ConfigMismatchError.
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
    every check that needs no tensor bytes. The order bounds the work a hostile header can
    cause: bytes and nesting, then JSON types and spans, then the sizes (checked against
    `config` before anything is built), then the tensor names (before a model of the file's
    layer count is built), and only then the model."""
    header = _parse_header(_read_header_bytes(stream), size)
    config = _config_from_header(header, config)
    _check_names(header, config.num_layers)
    try:
        with torch.device("meta"):
            model = V1Model(config)
    except (RuntimeError, ValueError, OverflowError, MemoryError) as exc:  # absurd sizes
        raise WeightsFormatError(f"the file's sizes are not a V1 model ({_shown(str(exc))})") from None
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
    """The 8-byte length and at most `_MAX_HEADER_BYTES + 1` bytes after it, whatever the length
    claims (a declared length is never allocated)."""
    head = stream.read(_HEADER_LENGTH_BYTES)
    if len(head) < _HEADER_LENGTH_BYTES:
        return head
    (length,) = struct.unpack("<Q", head)
    return head + stream.read(min(length, _MAX_HEADER_BYTES + 1))


def _data_size(header: dict) -> int:
    return max((info["data_offsets"][1] for key, info in header.items()
                if key != "__metadata__"), default=0)


def _shown(text: str, limit: int = 60) -> str:
    """`text` for an error message: ASCII (no control or unpaired surrogate characters from a
    hostile header reaches a reply) and short."""
    shown = ascii(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _parse_header(prefix: bytes, total_size: int) -> dict:
    """The JSON header of a safetensors file, after checking its types and that its tensors'
    spans tile the data exactly (as the safetensors library requires)."""
    if len(prefix) < _HEADER_LENGTH_BYTES:
        raise WeightsFormatError(f"file has {total_size} bytes, shorter than the header length")
    (length,) = struct.unpack("<Q", prefix[:_HEADER_LENGTH_BYTES])
    if length > _MAX_HEADER_BYTES:
        raise WeightsFormatError(
            f"header claims {length} bytes, more than the {_MAX_HEADER_BYTES} a V1 file can need")
    if _HEADER_LENGTH_BYTES + length > total_size:
        raise WeightsFormatError(
            f"header claims {length} bytes but the file has {total_size}")
    header = _json_object(prefix[_HEADER_LENGTH_BYTES:_HEADER_LENGTH_BYTES + length])
    metadata = header.get("__metadata__", {})
    if not (isinstance(metadata, dict)
            and all(isinstance(v, str) for v in metadata.values())):
        raise WeightsFormatError("header __metadata__ is not a map of strings")
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if len(key) > _MAX_NAME_LENGTH or not _NAME.fullmatch(key):
            raise WeightsFormatError(f"tensor name {_shown(key)} is not a plain ASCII dotted name")
        if not _well_formed(info):
            raise WeightsFormatError(f"header entry for {key!r} is malformed")
        begin, end = info["data_offsets"]
        spans.append((begin, end, key))
    at, previous = 0, None
    for begin, end, key in sorted(spans):
        if begin != at:
            after = f"{previous!r} ends at {at}" if previous else "the data starts at 0"
            raise WeightsFormatError(
                f"tensor {key!r} starts at data byte {begin} but {after} (spans overlap or leave a gap)")
        at, previous = end, key
    data_size = total_size - _HEADER_LENGTH_BYTES - length
    if at != data_size:
        raise WeightsFormatError(
            f"tensors need {at} data bytes but the file holds {data_size} (truncated?)"
            + (f"; the last is {previous!r}" if previous else ""))
    return header


class _NotJson(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _NotJson("a key appears twice in one object")
    return value


def _no_constant(name: str):
    raise _NotJson(f"{name} is not a JSON number")


def _json_object(raw: bytes) -> dict:
    """`raw` parsed as a JSON object: strict UTF-8, nesting at most `_MAX_NESTING` deep
    (checked on the bytes before the parser sees them), no duplicate keys, no NaN/Infinity."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WeightsFormatError("header is not UTF-8 JSON") from None
    if _nesting_depth(raw) > _MAX_NESTING:
        raise WeightsFormatError(f"header JSON nests deeper than {_MAX_NESTING} levels "
                                 "(no safetensors header does)")
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, over-long integers, _NotJson
        raise WeightsFormatError(f"header is not JSON ({_shown(str(exc), 120)})") from None
    if not isinstance(header, dict):
        raise WeightsFormatError("header is not a JSON object")
    return header


# A JSON string as the parser reads it: a quote, then characters and backslash escapes, then a
# quote. The loops are possessive and the end of the text also ends a match, so every quote
# that starts a match consumes through its string: one linear pass, whatever the bytes.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def _nesting_depth(raw: bytes) -> int:
    """The deepest bracket nesting outside strings: an upper bound on the parser's recursion
    (UTF-8 never puts an ASCII byte inside a multi-byte character, so bytes are enough)."""
    skeleton = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    return int(np.cumsum(_BRACKET_STEP[skeleton], dtype=np.int64).max(initial=0))


def _well_formed(info) -> bool:
    """A safetensors tensor entry: exactly dtype (a short upper-case name), shape (at most
    `_MAX_NDIM` counts) and data_offsets (two counts, begin <= end)."""
    if not (isinstance(info, dict) and info.keys() == _INFO_FIELDS):
        return False
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    return (isinstance(dtype, str) and _DTYPE.fullmatch(dtype) is not None
            and isinstance(shape, list) and len(shape) <= _MAX_NDIM
            and all(_is_count(n) for n in shape)
            and isinstance(offsets, list) and len(offsets) == 2
            and all(_is_count(n) for n in offsets) and offsets[0] <= offsets[1])


def _is_count(value) -> bool:
    """A JSON integer in [0, 2**63): not a float such as 64.0, not a boolean."""
    return type(value) is int and 0 <= value <= _MAX_COUNT


def _config_from_header(header: dict, config: V1Config | None) -> V1Config:
    """The file's sizes, checked against `config` when one is given."""
    vocab_size, width = _shape_of(header, "embedding.weight", 2)
    _, ffn = _shape_of(header, _FFN_KEY, 2)
    layer_ids = {int(match.group(1)) for key in header if (match := _LAYER.match(key))}
    found = {"embedding_dim": width, "num_layers": max(layer_ids, default=-1) + 1,
             "pwff_hidden_dim": ffn, "vocab_size": vocab_size}
    metadata = header.get("__metadata__") or {}
    for field in _METADATA_FIELDS:
        if _METADATA_PREFIX + field in metadata:
            found[field] = _metadata_number(field, metadata[_METADATA_PREFIX + field])
    if config is None:
        try:
            return V1Config(**found)
        except ValueError as exc:
            raise WeightsFormatError(f"the file's sizes are not a V1 model: {exc}") from None
    for field, value in found.items():
        if getattr(config, field) != value:
            raise ConfigMismatchError(field, getattr(config, field), value)
    return config


def _metadata_number(field: str, value: str) -> int | float:
    """A size from `__metadata__`: ASCII digits only (no "٣", "1_000", " 4", "nan")."""
    if isinstance(getattr(V1Config, field), int):
        if _POSITIVE_INT.fullmatch(value):
            return int(value)
    elif _DECIMAL.fullmatch(value):
        number = float(value)
        if math.isfinite(number) and number > 0:
            return number
    raise WeightsFormatError(f"metadata {field} is {_shown(value)}")


def _shape_of(header: dict, key: str, ndim: int) -> tuple[int, ...]:
    if key not in header:
        raise MissingTensorError(key)
    shape = tuple(header[key]["shape"])
    if len(shape) != ndim:
        raise TensorShapeError(key, ("?",) * ndim, shape)
    return shape


@functools.cache
def _layout() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The V1 tensor names, from a tiny model: those before the layers, each layer's (after
    its `encoder.layers.{l}.` prefix) and those after. Names do not depend on sizes."""
    with torch.device("meta"):
        names = list(V1Model(V1Config(embedding_dim=16, num_layers=1, num_heads=8,
                                      pwff_hidden_dim=16, vocab_size=1, max_seq_len=1)).state_dict())
    prefix = "encoder.layers.0."
    inside = [i for i, name in enumerate(names) if name.startswith(prefix)]
    first, last = inside[0], inside[-1] + 1
    assert inside == list(range(first, last)), "a V1 layer's tensors are contiguous"
    return (tuple(names[:first]), tuple(n[len(prefix):] for n in names[first:last]),
            tuple(names[last:]))


def _expected_names(num_layers: int):
    """The tensor names of a V1 model with `num_layers` layers, in state_dict order (lazily:
    a hostile layer count costs only as many names as the check reads)."""
    before, per_layer, after = _layout()
    yield from before
    for layer in range(num_layers):
        for name in per_layer:
            yield f"encoder.layers.{layer}.{name}"
    yield from after


def _is_expected(name: str, num_layers: int) -> bool:
    before, per_layer, after = _layout()
    match = _LAYER.match(name)
    if match:
        return int(match.group(1)) < num_layers and name[match.end():] in per_layer
    return name in before or name in after


def _check_names(header: dict, num_layers: int) -> None:
    """Exactly the tensors of a V1 model with `num_layers` layers (extra names first, at most
    `_MAX_NAMED` of them, sorted; then the first missing name in state_dict order)."""
    extra = sorted(k for k in header if k != "__metadata__" and not _is_expected(k, num_layers))
    if extra:
        raise UnexpectedTensorError(extra[:_MAX_NAMED])
    for name in _expected_names(num_layers):  # stops at the first missing: bounded by the header
        if name not in header:
            raise MissingTensorError(name)


def _check_tensors(header: dict, expected: dict[str, torch.Tensor]) -> None:
    extra = sorted(set(header) - set(expected) - {"__metadata__"})
    if extra:
        raise UnexpectedTensorError(extra[:_MAX_NAMED])
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
