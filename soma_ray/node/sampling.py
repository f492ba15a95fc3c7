"""Sampling audits (issue 20), pure: no Ray, no I/O, no clock.

Every filled target is re-scored within its challenge window by a validator chosen from the
target and its fill epoch, so that fraud does not pay even when no challenger looks:

    order = audit_order(target_id, fill_epoch, committee)       # every member, in audit order
    auditors = sampling_auditors(target_id, fill_epoch, committee)  # the first `replicas` of it

The draw is stake-weighted without replacement, in integers only (BLAKE2b of a domain tag, the
target id, the fill epoch and the round, reduced modulo the voting power still undrawn), so
every validator computes the same order and the audit work follows the voting power (what a
validator earns). The first member audits; the next one is its fallback (`FALLBACK_RANK`).

`SamplingBook` is one validator's bookkeeping over the checkpoints it followed: which fills were
assigned to it, which are settled (audited, moot, missed), the durable low-water mark below
which everything is settled (a restarted worker resumes the feed after it, so a fill whose
audit was cut short is seen again), and the counters and latencies folded at that mark
(`SamplingLedger`, what the worker persists). Coverage and latency are read from ledgers by
`coverage` and `percentile`.
"""
from __future__ import annotations

from typing import Iterable, Literal, NamedTuple, Sequence

from soma_ray.protocol.checkpoint import executed_transactions
from soma_ray.protocol.crypto import Committee
from soma_ray.protocol.encoding import Struct, blake2b256
from soma_ray.protocol.targets import challenge_allowed
from soma_ray.protocol.types import Checkpoint, RevealSubmission, TransactionEffects

DOMAIN_SAMPLING = b"soma-ray/sampling-audit/v1"
# The member after the assignee in `audit_order` audits what the assignee has not settled by the
# fallback deadline (actors/audit.py).
FALLBACK_RANK = 1
# Settled records and latencies a ledger keeps (the most recent).
MAX_RECENT = 256
MAX_LATENCIES = 1_024

# holds / ScoreFraud / DataFraud: re-scored within the window; moot: undone or challenged before,
# or not auditable (no model of the target has weights on chain: a test network); missed: the
# window closed first.
Outcome = Literal["holds", "ScoreFraud", "DataFraud", "moot", "missed"]
Role = Literal["assignee", "fallback"]


def _draw(target_id: bytes, fill_epoch: int, round_: int) -> int:
    seed = DOMAIN_SAMPLING + bytes(target_id) + fill_epoch.to_bytes(8, "little") + round_.to_bytes(4, "little")
    return int.from_bytes(blake2b256(seed), "little")


def audit_order(target_id: bytes, fill_epoch: int, committee: Committee) -> list[int]:
    """Every committee member's index, in the order they audit this fill: a stake-weighted draw
    without replacement (members without voting power last, by index)."""
    weights = {i: m.voting_power for i, m in enumerate(committee.members) if m.voting_power > 0}
    order: list[int] = []
    round_ = 0
    while weights:
        point = _draw(target_id, fill_epoch, round_) % sum(weights.values())
        round_ += 1
        for index, weight in sorted(weights.items()):
            if point < weight:
                order.append(index)
                del weights[index]
                break
            point -= weight
    return order + [i for i, m in enumerate(committee.members) if m.voting_power <= 0]


def sampling_auditors(target_id: bytes, fill_epoch: int, committee: Committee, replicas: int = 1) -> list[int]:
    """The committee indices that re-score this fill (the first `replicas` of `audit_order`)."""
    return audit_order(target_id, fill_epoch, committee)[:replicas]


def member_index(committee: Committee, address: bytes) -> int | None:
    return next((i for i, m in enumerate(committee.members) if m.address == address), None)


# ------------------------------------------------------------------------------ fills


class Fill(NamedTuple):
    """A RevealSubmission that executed: the target it filled is read from the submission."""
    submission_id: bytes
    sequence: int  # the checkpoint's
    epoch: int  # the fill epoch (the checkpoint's)
    timestamp_ms: int  # the checkpoint's consensus time


def fills_in(checkpoint: Checkpoint, effects: list[TransactionEffects]) -> list[Fill]:
    """The reveals a certified checkpoint executed, in order."""
    return [Fill(tx.kind.submission_id, checkpoint.sequence, checkpoint.epoch, checkpoint.timestamp_ms)
            for tx, _ in executed_transactions(checkpoint, effects) if isinstance(tx.kind, RevealSubmission)]


def in_window(fill_epoch: int, epoch: int) -> bool:
    """Whether a verdict reached in `epoch` is within the fill's challenge window."""
    return challenge_allowed(fill_epoch, epoch)


# ------------------------------------------------------------------------------ bookkeeping


class SampledRecord(Struct):
    """One settled sampling audit."""
    target_id: bytes
    submission_id: bytes
    fill_sequence: int
    fill_epoch: int
    outcome: Outcome
    role: Role = "assignee"
    latency_ms: int | None = None  # fill → verdict (None: no verdict)
    verdict_epoch: int | None = None
    challenge_id: bytes | None = None  # the challenge it opened (a fraud found)


class SamplingLedger(Struct):
    """What one validator's sampling audits did, folded up to `mark` (persisted by its worker)."""
    mark: int = -1  # every fill at or before this checkpoint sequence is settled
    fills: int = 0  # fills seen (everyone's)
    assigned: int = 0  # fills this validator audits (as assignee, or as a fallback that stepped in)
    audited: int = 0  # of those, re-scored with a verdict within the window
    frauds: int = 0  # of those, found fraudulent
    moot: int = 0  # gone before the verdict (challenged or undone by someone else)
    missed: int = 0  # the window closed before a verdict
    latencies_ms: list[int] = []
    recent: list[SampledRecord] = []


class SamplingBook:
    """One validator's bookkeeping between its feed and its durable ledger.

    `followed(sequence, fills, assigned)` for every checkpoint, in order (assigned: keys of the
    fills it must settle); `settle(sequence, key, record)` once each is settled; `advance()`
    folds every leading checkpoint whose fills are all settled into the ledger and moves the
    mark (True when the ledger changed: persist it, then acknowledge the feed up to `mark`)."""

    def __init__(self, ledger: SamplingLedger | None = None) -> None:
        self.ledger = ledger or SamplingLedger()
        self._open: dict[int, tuple[int, set, list[SampledRecord]]] = {}  # sequence → fills, pending, settled

    def followed(self, sequence: int, fills: int, assigned: Iterable = ()) -> None:
        if sequence <= self.ledger.mark or sequence in self._open:
            return
        self._open[sequence] = (fills, set(assigned), [])

    def add(self, sequence: int, key) -> None:
        """A fill of an open checkpoint that this validator now must settle too (a fallback)."""
        if sequence in self._open:
            self._open[sequence][1].add(key)

    def pending(self, sequence: int, key) -> bool:
        entry = self._open.get(sequence)
        return entry is not None and key in entry[1]

    def settle(self, sequence: int, key, record: SampledRecord) -> None:
        entry = self._open.get(sequence)
        if entry is None or key not in entry[1]:
            return
        entry[1].discard(key)
        entry[2].append(record)

    def is_settled(self, sequence: int, key) -> bool:
        """Whether the fill `key` of checkpoint `sequence` is settled here (False: pending, or
        not followed yet)."""
        if sequence <= self.ledger.mark:
            return True
        entry = self._open.get(sequence)
        return entry is not None and key not in entry[1] and any(r.target_id == key for r in entry[2])

    def settled(self, sequence: int) -> bool:
        """Whether every fill of checkpoint `sequence` assigned here is settled."""
        entry = self._open.get(sequence)
        return sequence <= self.ledger.mark if entry is None else not entry[1]

    def advance(self) -> bool:
        changed = False
        ledger = self.ledger
        while (entry := self._open.get(ledger.mark + 1)) is not None and not entry[1]:
            fills, _, records = self._open.pop(ledger.mark + 1)
            ledger.mark += 1
            ledger.fills += fills
            for record in records:
                fold(ledger, record)
            changed = True
        return changed

    def fold_now(self, record: SampledRecord) -> None:
        """Count a record that is no checkpoint's duty here (a fallback that stepped in)."""
        fold(self.ledger, record)

    def skip_to(self, sequence: int) -> None:
        """Nothing is open below `sequence` (a fresh book starting mid-chain)."""
        if not self._open and self.ledger.mark < sequence - 1:
            self.ledger.mark = sequence - 1

    def open_count(self) -> int:
        return sum(len(pending) for _, pending, _ in self._open.values())


def fold(ledger: SamplingLedger, record: SampledRecord) -> None:
    """Count one settled record into `ledger`."""
    ledger.assigned += 1
    if record.outcome == "moot":
        ledger.moot += 1
    elif record.outcome == "missed":
        ledger.missed += 1
    else:
        ledger.audited += 1
        ledger.frauds += record.outcome != "holds"
        if record.latency_ms is not None:
            ledger.latencies_ms = (ledger.latencies_ms + [record.latency_ms])[-MAX_LATENCIES:]
    ledger.recent = (ledger.recent + [record])[-MAX_RECENT:]


class Coverage(NamedTuple):
    fills: int  # fills seen (the most any ledger saw)
    assigned: int  # settled assignments, summed
    audited: int  # verdicts within the window, summed
    frauds: int
    moot: int
    missed: int
    latency_p50_s: float | None
    latency_p99_s: float | None

    @property
    def ratio(self) -> float | None:
        """Fills audited within their window over the fills that needed it (moot ones did not:
        someone else's challenge already took them)."""
        needed = self.assigned - self.moot
        return None if needed <= 0 else self.audited / needed


def coverage(ledgers: Sequence[SamplingLedger]) -> Coverage:
    latencies = [ms for ledger in ledgers for ms in ledger.latencies_ms]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return Coverage(max((l.fills for l in ledgers), default=0), sum(l.assigned for l in ledgers),
                    sum(l.audited for l in ledgers), sum(l.frauds for l in ledgers),
                    sum(l.moot for l in ledgers), sum(l.missed for l in ledgers),
                    None if p50 is None else p50 / 1000, None if p99 is None else p99 / 1000)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(min(rank, len(ordered))) - 1]
