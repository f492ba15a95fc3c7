"""Typed errors of the validator store: each carries the fields that explain it.

They stay in the validator process that owns the disk (its operator sees them) and are not
`ProtocolError`s: no client or peer receives them. See `soma_ray.protocol.errors`.
"""
from soma_ray.picklable import PicklesWithFields


class StorageError(PicklesWithFields, Exception):
    """Base class of every error the validator store raises."""


class StoreInUse(StorageError):
    """The directory is already open in this process; LMDB forbids a second environment on it."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"store at {path!r} is already open in this process")


class NotInitialized(StorageError):
    """A checkpoint was committed before the genesis state was written."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"store at {path!r} has no genesis; call write_genesis first")


class GenesisMismatch(StorageError):
    """The directory holds the store of another network (another genesis digest)."""

    def __init__(self, expected: bytes, found: bytes):
        self.expected = expected
        self.found = found
        super().__init__(f"store holds genesis {found.hex()}, expected {expected.hex()}")


class SequenceGap(StorageError):
    """A checkpoint arrived ahead of the next expected sequence: checkpoints are contiguous."""

    def __init__(self, expected: int, got: int):
        self.expected = expected
        self.got = got
        super().__init__(f"checkpoint sequence {got} out of order: expected {expected}")


class ConflictingCheckpoint(StorageError):
    """A second, different checkpoint for a sequence that is already committed."""

    def __init__(self, sequence: int, stored_len: int, offered_len: int):
        self.sequence = sequence
        self.stored_len = stored_len
        self.offered_len = offered_len
        super().__init__(
            f"sequence {sequence} already holds a different checkpoint "
            f"({stored_len} bytes stored, {offered_len} bytes offered)"
        )


class CheckpointNotFound(StorageError, KeyError):
    """No checkpoint is stored at the requested sequence."""

    def __init__(self, sequence: int, latest: int | None):
        self.sequence = sequence
        self.latest = latest
        super().__init__(f"no checkpoint at sequence {sequence} (latest is {latest})")

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.args[0]


class InvalidStateKey(StorageError):
    """A state key LMDB cannot hold: empty, or longer than the environment's key limit."""

    def __init__(self, key_len: int, max_len: int):
        self.key_len = key_len
        self.max_len = max_len
        super().__init__(f"state key of {key_len} bytes: keys must be 1..{max_len} bytes")


class StoreFull(StorageError):
    """The map would have to grow beyond `max_map_size`; nothing of the write was kept."""

    def __init__(self, map_size: int, max_map_size: int):
        self.map_size = map_size
        self.max_map_size = max_map_size
        super().__init__(f"store is full at {map_size} bytes; max_map_size is {max_map_size}")


class InvalidEvidence(StorageError):
    """Evidence the store cannot keep: its id is not a 32-byte digest, or its record is empty."""

    def __init__(self, id_len: int, record_len: int):
        self.id_len = id_len
        self.record_len = record_len
        super().__init__(f"evidence with a {id_len}-byte id and a {record_len}-byte record: "
                         "the id must be a 32-byte digest and the record not empty")
