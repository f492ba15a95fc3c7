"""What a process function may know besides the state: parameters, consensus time, ids.

One `ExecutionContext` per checkpoint; `for_transaction` derives the per-transaction context
whose `new_id()` yields object ids blake2b(tx_digest || u64_le(counter)) (spec §0).
"""
from __future__ import annotations

from soma_ray.protocol.encoding import blake2b256, u64_le
from soma_ray.protocol.params import Parameters


class ExecutionContext:
    def __init__(
        self,
        params: Parameters,
        epoch: int,
        timestamp_ms: int,
        checkpoint_seed: bytes = bytes(32),
        sender: bytes = bytes(32),
        tx_digest: bytes = bytes(32),
    ) -> None:
        self.params = params
        self.epoch = epoch
        self.timestamp_ms = timestamp_ms
        # Seed for targets generated in this checkpoint (see checkpoint.checkpoint_seed).
        self.checkpoint_seed = checkpoint_seed
        self.sender = sender
        self.tx_digest = tx_digest
        self.created: list[bytes] = []

    def for_transaction(self, tx_digest: bytes, sender: bytes) -> "ExecutionContext":
        return ExecutionContext(
            self.params, self.epoch, self.timestamp_ms, self.checkpoint_seed, sender, tx_digest
        )

    def new_id(self) -> bytes:
        ident = blake2b256(self.tx_digest + u64_le(len(self.created)))
        self.created.append(ident)
        return ident
