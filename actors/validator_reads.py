"""The read side of a validator: what its store and committed state answer, for clients, the
gateway, catch-up peers and feed subscribers. Mixed into ValidatorActor, whose `_store`,
`_state` and `_committed` (an event set at every commit) it reads."""
from __future__ import annotations

import asyncio

from actors.catch_up import CATCH_UP_BATCH
from soma_ray.node.replies import EvidenceRecord, FeedItem, StoredEvidence
from soma_ray.protocol.encoding import decode, encode


class ValidatorReads:
    async def checkpoints(self, from_seq: int, to_seq: int) -> list[tuple[int, bytes, bytes]]:
        """Certified checkpoints [from_seq, to_seq] for a peer that is catching up."""
        return self._store.checkpoints(from_seq, to_seq)

    async def feed(self, from_seq: int, limit: int = CATCH_UP_BATCH, wait_s: float = 0.0) -> list[FeedItem]:
        """Certified checkpoints from `from_seq` on with their effects, at most `limit`; when
        there is none yet, waits up to `wait_s` for one (the checkpoint feed's long poll)."""
        if self._store.next_sequence() <= from_seq and wait_s > 0:
            try:
                await asyncio.wait_for(self._committed.wait(), wait_s)
            except asyncio.TimeoutError:
                return []
        return [FeedItem(sequence, value, certificate, self._store.effects(sequence))
                for sequence, value, certificate in self._store.checkpoints(from_seq, from_seq + limit - 1)]

    def evidence(self, from_index: int = 0, limit: int = 100) -> list[EvidenceRecord]:
        """Kept equivocations from `from_index` on, oldest first (decode `record.evidence` as
        the type named by `record.kind`)."""
        return [EvidenceRecord(index, decode(record, StoredEvidence))
                for index, record in self._store.evidence(from_index, limit)]

    def get_account(self, address: bytes) -> bytes:
        return encode(self._state.account(address))

    def get_object(self, key: bytes) -> bytes | None:
        """Canonical bytes of the state entry `tag || id` (None when absent)."""
        return self._state.get_raw(key)

    def object_ids(self, tag: bytes) -> list[bytes]:
        """Ids of one state namespace (e.g. every target), ascending."""
        return self._state.ids(tag)

    def get_checkpoint(self, sequence: int | None = None) -> tuple[bytes, bytes] | None:
        """(checkpoint, certificate) at `sequence` (the latest when None); None when absent."""
        latest = self._store.latest_sequence()
        if sequence is None:
            sequence = latest
        if sequence is None or latest is None or sequence > latest:
            return None
        return self._store.get_checkpoint(sequence)

    def system_state(self) -> bytes:
        return encode(self._state.system())

