"""A replica's committed state and the checkpoints built and re-executed on it.

Every trial (a proposal this node leads, a peer's proposal to validate, a certified checkpoint
fetched in catch-up) executes on the committed state inside a savepoint that is rolled back:
only a decided or certified checkpoint is applied (`apply`). What a trial computed is kept by
value digest, so a checkpoint this node built or validated is not executed again at commit.
A proposal leaves out every entry that cannot execute (`propose_checkpoint`); a peer's proposal
with one is refused, as is a certified checkpoint (`build_checkpoint`'s rule).
Pure: no Ray, no I/O; the caller passes the time.
"""
from __future__ import annotations

from collections.abc import Container
from typing import NamedTuple

from soma_ray.consensus.chain import verify_checkpoint_chain
from soma_ray.consensus.messages import CommitCertificate, value_digest
from soma_ray.protocol.checkpoint import LeftOut, build_checkpoint, propose_checkpoint
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.state import State
from soma_ray.protocol.types import Checkpoint, TransactionEffects

# A proposal stamped further ahead of this replica's clock is refused.
MAX_CLOCK_AHEAD_MS = 10_000


class InvalidCheckpoint(Exception):
    """A proposed checkpoint is not the one this replica builds from the same inputs."""


class Executed(NamedTuple):
    """A checkpoint with what executing it on the committed state gives."""

    checkpoint: Checkpoint
    changes: list  # (state key, value or None)
    effects: list[TransactionEffects]


class Executor:
    def __init__(self, state: State, latest: Checkpoint | None, verified: Container[bytes] = ()):
        self.state = state
        self.latest = latest
        # Transaction bytes whose signatures admission checked: not verified a second time.
        self._verified = verified
        self._executed: dict[bytes, Executed] = {}  # by value digest, for the current height

    @property
    def latest_timestamp_ms(self) -> int:
        return 0 if self.latest is None else self.latest.timestamp_ms

    @property
    def next_sequence(self) -> int:
        return 0 if self.latest is None else self.latest.sequence + 1

    def build(self, entries: list[bytes], timestamp_ms: int) -> Executed:
        """`entries` executed on the committed state, which is rolled back afterwards; raises
        the ProtocolError of an entry that cannot execute (`build_checkpoint`)."""
        self.state.begin()
        self.state.mark()
        try:
            checkpoint, effects = build_checkpoint(self.state, self.latest, entries, timestamp_ms,
                                                   self._verified)
            return Executed(checkpoint, self.state.changes(), effects)
        finally:
            self.state.rollback()

    def propose(self, entries: list[bytes], now_ms: int) -> tuple[bytes, list[LeftOut]]:
        """The encoded checkpoint this node leads with (never stamped before the latest
        checkpoint): `entries` in order, less those that cannot execute there, which come back
        with their errors (the caller tells their submitters, or keeps those that may `retry`)."""
        self.state.begin()
        self.state.mark()
        try:
            proposed = propose_checkpoint(self.state, self.latest, entries,
                                          max(now_ms, self.latest_timestamp_ms), self._verified)
            executed = Executed(proposed.checkpoint, self.state.changes(), proposed.effects)
        finally:
            self.state.rollback()
        value = encode(executed.checkpoint)
        self._executed[value_digest(value)] = executed
        return value, proposed.left_out

    def validate(self, height: int, value: bytes, now_ms: int) -> bool:
        """Whether a peer's proposal rebuilds identically here, every entry executing (a
        consensus rule: no unpaid entry, nothing over the byte cap), and is not stamped too far
        ahead of this replica's clock (a leader must not pull consensus time forward)."""
        key = value_digest(value)
        if key in self._executed:  # this replica built or checked exactly these bytes already
            return True
        try:
            checkpoint = decode(value, Checkpoint)
            if checkpoint.timestamp_ms > now_ms + MAX_CLOCK_AHEAD_MS:
                return False
            self._executed[key] = self.execute(height, checkpoint)
        except (ProtocolError, InvalidCheckpoint):
            return False
        return True

    def execute(self, height: int, checkpoint: Checkpoint) -> Executed:
        """Re-execute `checkpoint`; raises InvalidCheckpoint unless it rebuilds identically."""
        if checkpoint.sequence != height or checkpoint.timestamp_ms < self.latest_timestamp_ms:
            raise InvalidCheckpoint(f"sequence/timestamp out of order at height {height}")
        executed = self.build(checkpoint.transactions, checkpoint.timestamp_ms)
        if executed.checkpoint != checkpoint:
            raise InvalidCheckpoint(f"checkpoint {height} does not re-execute to the same state")
        return executed

    def decided(self, height: int, value: bytes) -> Executed:
        """What the decided `value` gives (from its trial when there was one); the trials of
        this height are forgotten."""
        executed = self._executed.pop(value_digest(value), None)
        self._executed.clear()
        return executed or self.execute(height, decode(value, Checkpoint))

    def certified(self, sequence: int, value: bytes, certificate: bytes) -> Executed:
        """A peer's certified checkpoint, verified against this replica's committee and
        re-executed (raises ProtocolError or InvalidCheckpoint when it does not verify)."""
        cert = decode(certificate, CommitCertificate)
        system = self.state.system()
        verify_checkpoint_chain(system.committee, [(value, cert)], sequence, chain_id=system.chain_id)
        return self.execute(sequence, decode(value, Checkpoint))

    def forget_trials(self) -> None:
        self._executed.clear()

    def apply(self, executed: Executed) -> None:
        """Make a decided or certified checkpoint the committed state (after it is durable)."""
        for key, item in executed.changes:
            self.state.put_raw(key, item)
        self.latest = executed.checkpoint
