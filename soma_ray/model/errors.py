"""Typed errors of the model package; each carries the fields that explain it.

They stay in the process that reads the weights or holds the key (a miner, the CLI, a trainer)
and are not `ProtocolError`s: nothing sends them to another participant, and their fields
(tensor shapes, key lists) are not what `ExecutionError` carries. See `soma_ray.protocol.errors`.
"""

from __future__ import annotations

from soma_ray.picklable import PicklesWithFields


class ModelError(PicklesWithFields, Exception):
    """Base of every error raised by soma_ray.model."""


class EmptyDataError(ModelError):
    def __init__(self, item: int | None = None) -> None:
        self.item = item
        which = "data" if item is None else f"data item {item}"
        super().__init__(f"{which} is empty: scoring and tokenizing need at least 1 byte")


class WeightsFormatError(ModelError):
    """The weights file is not a readable safetensors file (truncated, corrupt header...)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"weights file is not valid safetensors: {reason}")


class MissingTensorError(ModelError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"weights file lacks tensor {key!r}")


class UnexpectedTensorError(ModelError):
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        super().__init__(f"weights file has unknown tensors: {', '.join(keys)}")


class TensorShapeError(ModelError):
    def __init__(self, key: str, expected: tuple[int, ...], got: tuple[int, ...]) -> None:
        self.key, self.expected, self.got = key, expected, got
        super().__init__(f"tensor {key!r} has shape {list(got)}, expected {list(expected)}")


class TensorDtypeError(ModelError):
    def __init__(self, key: str, expected: str, got: str) -> None:
        self.key, self.expected, self.got = key, expected, got
        super().__init__(f"tensor {key!r} has dtype {got}, expected {expected}")


class ConfigMismatchError(ModelError):
    def __init__(self, field: str, config_value: object, file_value: object) -> None:
        self.field, self.config_value, self.file_value = field, config_value, file_value
        super().__init__(
            f"config says {field}={config_value} but the weights file has {file_value}")


class DecryptionError(ModelError):
    """Wrong key, tampered or truncated ciphertext; `offset` is where reading failed."""

    def __init__(self, reason: str, offset: int) -> None:
        self.reason, self.offset = reason, offset
        super().__init__(f"cannot decrypt weights at byte {offset}: {reason}")
