"""One LMDB environment per validator: state, checkpoints, certificates, consensus metadata and
the equivocation evidence the validator saw.

Everything is bytes; the protocol layer owns the encodings. A checkpoint, its certificate and
the state changes it caused are written in ONE write transaction, so a crash leaves either all
of them or none. The environment is opened with LMDB's defaults `sync=True, metasync=True`:
a commit returns only after the data pages and then the meta page reached the disk, which is
what lets a validator vote past a checkpoint (or send a vote after `put_safety_state`) and
still have it after a power loss. `writemap=False` keeps stray writes through the map from
reaching the file. `durable=False` (benchmarks, throwaway tests) turns both syncs off: a
process crash still loses nothing, an OS crash may drop the last commits.
"""

from __future__ import annotations

import os
import struct
import weakref
from collections.abc import Callable, Iterable
from typing import TypeVar

import lmdb

from soma_ray.storage.errors import (
    CheckpointNotFound,
    ConflictingCheckpoint,
    GenesisMismatch,
    InvalidEvidence,
    InvalidStateKey,
    NotInitialized,
    SequenceGap,
    StoreFull,
    StoreInUse,
)

T = TypeVar("T")

DEFAULT_MAP_SIZE = 64 << 20
DEFAULT_MAX_MAP_SIZE = 1 << 40
# Evidence records kept; past it the oldest go. A record holds two signed votes or two signed
# proposals (each with its checkpoint), so the evidence stays below 2,000 proposals' worth.
DEFAULT_MAX_EVIDENCE = 1_000
EVIDENCE_ID_LEN = 32

_GENESIS = b"genesis"
_LATEST = b"latest_sequence"
_SAFETY = b"safety_state"
_EPOCH = b"epoch"

# LMDB forbids two environments on one file in a process (locks are per process). Weak values:
# a store dropped without close() frees its path when collected (its environment closes then).
_open_stores: weakref.WeakValueDictionary[str, ValidatorStore] = weakref.WeakValueDictionary()


def _u64(n: int) -> bytes:
    """Big-endian so LMDB's byte order is numeric order and range scans follow sequences."""
    return struct.pack(">Q", n)


def _from_u64(b: bytes) -> int:
    return struct.unpack(">Q", b)[0]


class ValidatorStore:
    """A validator's durable replica. Use from one thread; close it (or use `with`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        map_size: int = DEFAULT_MAP_SIZE,
        *,
        genesis_digest: bytes | None = None,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        durable: bool = True,
        max_evidence: int = DEFAULT_MAX_EVIDENCE,
    ):
        self.path = os.path.realpath(path)
        if self.path in _open_stores:
            raise StoreInUse(self.path)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self.max_map_size = max_map_size
        self.max_evidence = max(1, max_evidence)
        self._env = lmdb.open(
            self.path,
            map_size=map_size,
            # Seven named databases. max_dbs is a limit of this open, not stored in the file: a
            # store created before the evidence (max_dbs=4) or effects ones opens and gains them.
            max_dbs=7,
            sync=durable,
            metasync=durable,
            writemap=False,
            mode=0o600,
        )
        _open_stores[self.path] = self
        try:
            self._state = self._env.open_db(b"state")
            self._checkpoints = self._env.open_db(b"checkpoints")
            self._certificates = self._env.open_db(b"certificates")
            self._meta = self._env.open_db(b"meta")
            self._evidence = self._env.open_db(b"evidence")  # index -> evidence id + record
            self._evidence_ids = self._env.open_db(b"evidence_ids")  # evidence id -> index
            self._effects = self._env.open_db(b"effects")  # sequence -> the checkpoint's effects
            if genesis_digest is not None:
                found = self.genesis_digest()
                if found is not None and found != genesis_digest:
                    raise GenesisMismatch(expected=genesis_digest, found=found)
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        if _open_stores.get(self.path) is self:
            self._env.close()
            del _open_stores[self.path]

    def __enter__(self) -> ValidatorStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map_size(self) -> int:
        return self._env.info()["map_size"]

    # -- genesis ---------------------------------------------------------------------------

    def genesis_digest(self) -> bytes | None:
        """The digest of the stored genesis; None for an empty store (a new or wiped disk)."""
        return self._get(self._meta, _GENESIS)

    def write_genesis(self, digest: bytes, state_items: Iterable[tuple[bytes, bytes]]) -> bool:
        """Write the genesis state once. Returns False (and writes nothing) when this genesis
        is already there, so a restarting validator may call it unconditionally."""
        items = list(state_items)
        self._check_keys(key for key, _ in items)

        def put_genesis(txn: lmdb.Transaction) -> bool:
            found = txn.get(_GENESIS, db=self._meta)
            if found is not None:
                if found != digest:
                    raise GenesisMismatch(expected=digest, found=found)
                return False
            for key, value in items:
                txn.put(key, value, db=self._state)
            txn.put(_GENESIS, digest, db=self._meta)
            return True

        return self._write(put_genesis)

    # -- checkpoints -----------------------------------------------------------------------

    def latest_sequence(self) -> int | None:
        raw = self._get(self._meta, _LATEST)
        return None if raw is None else _from_u64(raw)

    def next_sequence(self) -> int:
        """Sequences start at 0 and are contiguous."""
        latest = self.latest_sequence()
        return 0 if latest is None else latest + 1

    def commit_checkpoint(
        self,
        sequence: int,
        checkpoint: bytes,
        certificate: bytes,
        state_changes: Iterable[tuple[bytes, bytes | None]] = (),
        *,
        epoch: int | None = None,
        effects: bytes | None = None,
    ) -> bool:
        """Atomically and durably store a certified checkpoint, its encoded effects (what the
        checkpoint feed serves) and apply its state changes (value None deletes the key). Returns False, writing nothing, when the same checkpoint
        is already stored: catch-up may offer it twice, and a second certificate (another 2f+1
        subset of signers) for the same checkpoint is equally valid, so the first one is kept.
        """
        changes = list(state_changes)
        self._check_keys(key for key, _ in changes)

        # Checked inside the write transaction: LMDB's writer lock makes check and write one
        # step even if another process opened the same directory.
        def put_checkpoint(txn: lmdb.Transaction) -> bool:
            if txn.get(_GENESIS, db=self._meta) is None:
                raise NotInitialized(self.path)
            latest = txn.get(_LATEST, db=self._meta)
            expected = 0 if latest is None else _from_u64(latest) + 1
            if 0 <= sequence < expected:
                stored = txn.get(_u64(sequence), db=self._checkpoints)
                if stored != checkpoint:
                    raise ConflictingCheckpoint(sequence, len(stored), len(checkpoint))
                return False
            if sequence != expected:
                raise SequenceGap(expected=expected, got=sequence)
            for key, value in changes:
                if value is None:
                    txn.delete(key, db=self._state)
                else:
                    txn.put(key, value, db=self._state)
            txn.put(_u64(sequence), checkpoint, db=self._checkpoints)
            txn.put(_u64(sequence), certificate, db=self._certificates)
            if effects is not None:
                txn.put(_u64(sequence), effects, db=self._effects)
            txn.put(_LATEST, _u64(sequence), db=self._meta)
            if epoch is not None:
                txn.put(_EPOCH, _u64(epoch), db=self._meta)
            return True

        return self._write(put_checkpoint)

    def get_checkpoint(self, sequence: int) -> tuple[bytes, bytes]:
        """(checkpoint bytes, certificate bytes) at `sequence`."""
        if sequence >= 0:
            with self._env.begin(buffers=False) as txn:
                checkpoint = txn.get(_u64(sequence), db=self._checkpoints)
                certificate = txn.get(_u64(sequence), db=self._certificates)
            if checkpoint is not None:
                return checkpoint, certificate
        raise CheckpointNotFound(sequence, self.latest_sequence())

    def checkpoints(self, from_seq: int, to_seq: int) -> list[tuple[int, bytes, bytes]]:
        """(sequence, checkpoint, certificate) for every stored sequence in [from_seq, to_seq],
        in order; what a peer serves to one that is catching up."""
        out: list[tuple[int, bytes, bytes]] = []
        if to_seq < from_seq or to_seq < 0:
            return out
        with self._env.begin(buffers=False) as txn:
            cursor = txn.cursor(db=self._checkpoints)
            if not cursor.set_range(_u64(max(from_seq, 0))):
                return out
            for key, checkpoint in cursor:
                sequence = _from_u64(key)
                if sequence > to_seq:
                    break
                out.append((sequence, checkpoint, txn.get(key, db=self._certificates)))
        return out

    def effects(self, sequence: int) -> bytes | None:
        """The encoded effects stored with checkpoint `sequence` (None when absent: a
        checkpoint committed by a version that did not keep them)."""
        return self._get(self._effects, _u64(sequence)) if sequence >= 0 else None

    # -- state -----------------------------------------------------------------------------

    def state_items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of the committed state, in key order. A list, not a generator,
        so no read transaction outlives the call (it would block growing the map)."""
        with self._env.begin(db=self._state, buffers=False) as txn:
            return list(txn.cursor())

    # -- consensus metadata ----------------------------------------------------------------

    def put_safety_state(self, safety_state: bytes) -> None:
        """Durably store the consensus safety state; call before the vote it allows is sent."""
        self._write(lambda txn: txn.put(_SAFETY, safety_state, db=self._meta))

    def safety_state(self) -> bytes | None:
        return self._get(self._meta, _SAFETY)

    def epoch(self) -> int | None:
        raw = self._get(self._meta, _EPOCH)
        return None if raw is None else _from_u64(raw)

    # -- evidence --------------------------------------------------------------------------

    def add_evidence(self, evidence_id: bytes, record: bytes) -> int | None:
        """Durably keep `record` (encoded evidence) under `evidence_id` (its 32-byte digest).

        Returns its index (0, 1, ... in arrival order), or None, writing nothing, when that
        evidence is kept already. Beyond `max_evidence` records the oldest are dropped."""
        if len(evidence_id) != EVIDENCE_ID_LEN or not record:
            raise InvalidEvidence(len(evidence_id), len(record))

        def put_evidence(txn: lmdb.Transaction) -> int | None:
            if txn.get(evidence_id, db=self._evidence_ids) is not None:
                return None
            cursor = txn.cursor(db=self._evidence)
            index = _from_u64(cursor.key()) + 1 if cursor.last() else 0
            txn.put(_u64(index), evidence_id + record, db=self._evidence)
            txn.put(evidence_id, _u64(index), db=self._evidence_ids)
            self._drop_oldest_evidence(txn)
            return index

        return self._write(put_evidence)

    def evidence(self, from_index: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """(index, record) of up to `limit` kept records from `from_index` on, in order."""
        out: list[tuple[int, bytes]] = []
        if limit <= 0:
            return out
        with self._env.begin(db=self._evidence, buffers=False) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_u64(max(from_index, 0))):
                return out
            for key, value in cursor:
                out.append((_from_u64(key), value[EVIDENCE_ID_LEN:]))
                if len(out) == limit:
                    break
        return out

    def evidence_count(self) -> int:
        with self._env.begin() as txn:
            return txn.stat(self._evidence)["entries"]

    def _drop_oldest_evidence(self, txn: lmdb.Transaction) -> None:
        excess = txn.stat(self._evidence)["entries"] - self.max_evidence
        cursor = txn.cursor(db=self._evidence)
        cursor.first()
        for _ in range(excess):
            txn.delete(cursor.value()[:EVIDENCE_ID_LEN], db=self._evidence_ids)
            cursor.delete()

    # -- internals -------------------------------------------------------------------------

    def _get(self, db, key: bytes) -> bytes | None:
        with self._env.begin(db=db, buffers=False) as txn:
            return txn.get(key)

    def _check_keys(self, keys: Iterable[bytes]) -> None:
        max_len = self._env.max_key_size()
        for key in keys:
            if not 0 < len(key) <= max_len:
                raise InvalidStateKey(len(key), max_len)

    def _write(self, fill: Callable[[lmdb.Transaction], T]) -> T:
        """Run `fill` in one write transaction; when the map fills, the transaction is
        aborted (nothing kept), the map doubled, and `fill` run again."""
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return fill(txn)
            except lmdb.MapFullError:
                self._grow_map()

    def _grow_map(self) -> None:
        current = self.map_size()
        if current >= self.max_map_size:
            raise StoreFull(current, self.max_map_size) from None
        self._env.set_mapsize(min(current * 2, self.max_map_size))

