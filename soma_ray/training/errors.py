"""Typed errors of the training job: each carries the fields that explain it."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class of every error `soma_ray.training` raises on bad input."""


class EmptyCorpusError(TrainingError):
    """The corpus holds no non-empty document to train on."""

    def __init__(self, source: str, files_seen: int):
        self.source = source
        self.files_seen = files_seen
        super().__init__(
            f"corpus {source} has no non-empty file to train on ({files_seen} files seen)")


class CorpusReadError(TrainingError):
    """A corpus file is missing or cannot be read."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read corpus file {path}: {reason}")


class CorpusTooSmallError(TrainingError):
    """The corpus cannot be split into a non-empty training part and a held-out part."""

    def __init__(self, documents: int, total_bytes: int):
        self.documents = documents
        self.total_bytes = total_bytes
        super().__init__(
            f"corpus of {documents} document(s), {total_bytes} bytes, is too small to hold "
            "out a scoring split: give at least 2 bytes")


class InitWeightsError(TrainingError):
    """The `init` weights file does not fit the configured model."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot start from weights {path}: {reason}")


class TrainConfigError(TrainingError):
    """A training setting is out of range."""

    def __init__(self, field: str, value: object, expected: str):
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"TrainConfig.{field} = {value!r}: expected {expected}")
