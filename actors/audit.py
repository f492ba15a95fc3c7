"""Audit workers: one per validator, holding that validator's key, outside the validator actor.

    worker = launch_audit_worker(config, index)  # actors/network.py; named <prefix>audit-<index>
    raw = await worker.vote.remote(challenge_id)         # its encoded signed vote (audits first)
    await worker.sampling.remote()                       # its sampling audits: ledger, open ones

A worker follows the checkpoint feed and has two duties, both judged by `SomaClient.verify`
(download bounded in size and time, hash and size check, all of the target's models re-scored
through the scoring service, the pure decision of soma_ray/node/audit.py); any model whose
weights it cannot use it reports (ReportModel).

- Challenges: for every open challenge (read at its start, then opened in the feed) it signs its
  vote; aggregators ask for votes (`vote`), which return once the audit is done, so a vote reaches
  every aggregator that asks, also one that restarted.
- Sampling audits (issue 20): every fill (an executed RevealSubmission) is re-scored by the
  validator `soma_ray.node.sampling.audit_order` puts first; when the claims do not hold that
  validator opens the challenge itself (its own account, the least bond) and the challenge path
  resolves it. The next validator in the order is the fallback: past `fallback_after_s` it asks
  the assignee's worker whether the fill is settled and audits it itself when the assignee is
  down or still has not settled it after FALLBACK_PATIENCE more waits.

Durability: the worker's `SamplingBook` acknowledges the feed only up to the last checkpoint
whose fills it has all settled (and persists its `SamplingLedger` — coverage, latencies, recent
records — first, in DIR/feeds/audit-<index>.sampling), so a worker killed during a sampling
audit and restarted by Ray sees that fill again and audits it within its window. Audits are
never given up for trouble of the worker's own (the scoring service or the validators
unreachable): they are tried again every RETRY_S until the challenge or the window is gone. A
failure that keeps coming back and that no model can be blamed for is decided on at the
ATTEMPTS-th try (`verify(decide_unscorable=True)`: the claims cannot be established), so no
challenge lapses because its audit crashed. The decision and Ed25519 signing are
deterministic: a restarted worker produces the same vote.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time

import ray

from actors.feed import CheckpointFeed
from soma_ray import metrics
from soma_ray.client import FinalityTimeout, SomaClient
from soma_ray.config import NetworkConfig
from soma_ray.files import write_atomic
from soma_ray.handles import find_actor
from soma_ray.node.audit import AuditFinding, challenge_changes, sign_vote
from soma_ray.node.sampling import (
    FALLBACK_RANK, Fill, SampledRecord, SamplingBook, SamplingLedger, audit_order, coverage, fills_in,
    in_window, member_index,
)
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Committee
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.state import CHALLENGE, SUBMISSION, TARGET
from soma_ray.protocol.types import Challenge, Submission, Target

log = logging.getLogger(__name__)

# An audit that fails is tried again after this pause, for as long as its challenge (or its
# fill's window) is open; at the ATTEMPTS-th try a failure no model can be blamed for is decided.
RETRY_S = 2.0
ATTEMPTS = 5
# Reports that fail for these reasons are already done or moot.
REPORT_MOOT = (errors.AlreadyReported, errors.InvalidModelStatus, errors.ObjectNotFound)
# Opening a challenge: retried when its outcome is unknown or its nonce was taken (the validator's
# key also signs its faucet transactions and its aggregator's resolutions).
CHALLENGE_ATTEMPTS = 5
RETRY_LATER = (errors.BadNonce, errors.NonceAlreadyPooled, errors.TransactionExpired, FinalityTimeout,
               ConnectionError, ray.exceptions.RayError)
# Someone else's challenge (or resolution) got there first.
ALREADY_TAKEN = (errors.ChallengeAlreadyOpen, errors.TargetNotFilled, errors.NoRevealedSubmission,
                 errors.ObjectNotFound)
# The fallback waits this share of an epoch after a fill before it asks the assignee (clamped),
# and steps in after FALLBACK_PATIENCE more waits while the assignee still has not settled it.
FALLBACK_EPOCH_SHARE = 1 / 6
FALLBACK_MIN_S, FALLBACK_MAX_S = 10.0, 600.0
FALLBACK_PATIENCE = 2
# `SOMA_SAMPLING_AUDITS=0` in a worker's environment (its runtime_env, e.g. through
# `NetworkConfig.placement["audit"]`) turns its sampling audits off: it still votes on challenges
# and counts the fills it follows. For tests of the challenge path alone.
SAMPLING_SWITCH = "SOMA_SAMPLING_AUDITS"


def audit_worker_name(config: NetworkConfig, index: int) -> str:
    return f"{config.prefix}audit-{index}"


async def has_weights(client: SomaClient, target: Target) -> bool:
    """Whether any model of the target has weights on chain. A network whose models carry none
    (a test network started without genesis weights) cannot be audited at all: its fills are
    not sampled (counted moot), rather than every one of them challenged."""
    for model_id in target.model_ids:
        try:
            await client.get_model_manifests([model_id])
            return True
        except (errors.ModelHasNoWeights, errors.ObjectNotFound):
            continue
    return False


def fallback_after_s(epoch_duration_ms: int) -> float:
    return min(FALLBACK_MAX_S, max(FALLBACK_MIN_S, epoch_duration_ms / 1000 * FALLBACK_EPOCH_SHARE))


class AuditWorker:
    def __init__(self, config: dict, index: int):
        self._network = NetworkConfig(**config)
        self._index = index
        self._keypair = self._network.validator_keypair(index)
        self._ledger_path = self._network.feed_cursor_path(f"audit-{index}").with_name(f"audit-{index}.sampling")
        self._book = SamplingBook(self._load_ledger())
        # After the ledger's mark (written before each acknowledgement, so never behind it).
        self._feed = CheckpointFeed(self._network, f"audit-{index}", start=self._book.ledger.mark + 1)
        self._book.skip_to(self._feed.next_sequence)
        self._client: SomaClient | None = None
        self._audits: dict[bytes, asyncio.Task] = {}  # by challenge id: the encoded vote, or None
        self._findings: dict[bytes, AuditFinding] = {}
        self._sampling: dict[tuple[bytes, bytes], asyncio.Task] = {}  # (target, submission) → its audit or watch
        self._auditing: set[tuple[bytes, bytes]] = set()  # re-scoring now
        self._watching: set[tuple[bytes, bytes]] = set()  # waiting as a fallback
        self._committee: tuple[int, Committee] | None = None  # (epoch, committee) last read
        self._validators: dict[bytes, int] = {}  # validator address → its worker's index
        self._sampling_on = os.environ.get(SAMPLING_SWITCH, "1") != "0"
        self._counters = {"audits": 0, "votes_sent": 0, "reports": 0, "audit_failures": 0,
                          "sampled": 0, "fallback_audits": 0, "sampling_challenges": 0,
                          "sampling_failures": 0, "challenge_failures": 0}
        self._task: asyncio.Task | None = None
        try:  # Ray runs an async actor's __init__ on its event loop
            self._ensure_following()
        except RuntimeError:
            pass

    def _ensure_following(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _connected(self) -> SomaClient:
        if self._client is None:
            self._client = await SomaClient(namespace=self._network.namespace, prefix=self._network.prefix)
        return self._client

    async def _follow(self) -> None:
        client = await self._connected()
        for challenge_id in await client.get_object_ids(CHALLENGE):  # opened before a restart
            self._audit_soon(challenge_id)
        async for followed in self._feed.items():
            changes = challenge_changes(followed.checkpoint, followed.effects)
            for challenge_id in changes.opened:
                self._audit_soon(challenge_id)
            for challenge_id in changes.resolved:
                self._forget(challenge_id)
            fills = fills_in(followed.checkpoint, followed.effects)
            while True:  # the chain unreachable for a moment must not end the following
                try:
                    await self._note_fills(client, fills, followed.sequence)
                    break
                except Exception as error:  # noqa: BLE001 - this worker's own trouble: try again
                    log.warning("fills of checkpoint %d: %s; trying again", followed.sequence, error)
                    await asyncio.sleep(RETRY_S)
            self._advance()

    # -- sampling audits ---------------------------------------------------------------------------

    def _load_ledger(self) -> SamplingLedger | None:
        try:
            return decode(self._ledger_path.read_bytes(), SamplingLedger)
        except FileNotFoundError:
            return None
        except errors.ProtocolError:  # unreadable: start counting afresh (the feed cursor still holds)
            log.warning("sampling ledger %s unreadable: counting afresh", self._ledger_path)
            return None

    def _advance(self) -> None:
        """Fold what is settled; persist the ledger, then acknowledge the feed up to its mark."""
        if self._book.advance():
            self._write_ledger()
            self._feed.ack(self._book.ledger.mark)

    def _write_ledger(self) -> None:
        self._ledger_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self._ledger_path, encode(self._book.ledger), durable=True)

    async def _current(self, client: SomaClient) -> tuple[int, Committee]:
        system = await client.get_system_state()
        if self._committee is None or self._committee[0] != system.epoch:
            self._committee = (system.epoch, system.committee)
        return self._committee

    async def _note_fills(self, client: SomaClient, fills: list[Fill], sequence: int) -> None:
        """Which of a checkpoint's fills this validator audits (as their assignee) or watches
        (as their fallback); fills whose window had closed before this worker saw them (a fresh
        worker on an old chain) are nobody's. The book learns them before any audit starts."""
        assigned: list[tuple[Fill, bytes, bytes | None]] = []  # (fill, target, the assignee when a fallback)
        if sequence <= self._book.ledger.mark:
            return  # settled before a restart
        if fills and self._sampling_on:
            epoch, committee = await self._current(client)
            me = member_index(committee, self._keypair.address)
            for fill in fills:
                submission = await client.get_object(SUBMISSION, fill.submission_id, Submission)
                if submission is None or me is None or not in_window(fill.epoch, epoch):
                    continue  # undone already, or not ours to judge
                order = audit_order(submission.target_id, fill.epoch, committee)
                if order[0] == me:
                    assigned.append((fill, submission.target_id, None))
                elif len(order) > FALLBACK_RANK and order[FALLBACK_RANK] == me:
                    assigned.append((fill, submission.target_id, committee.members[order[0]].address))
        # The book holds this validator's own fills; a fallback's watch is in memory only (it
        # never holds the mark back; a watch lost with a restart of this worker is the price).
        self._book.followed(sequence, len(fills), [target for _, target, assignee in assigned if assignee is None])
        for fill, target_id, assignee in assigned:
            work = self._sample(fill, target_id) if assignee is None else self._watch(fill, target_id, assignee)
            self._sample_soon(fill, target_id, work)

    def _sample_soon(self, fill: Fill, target_id: bytes, work) -> None:
        key = (target_id, fill.submission_id)
        if key in self._sampling:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        self._sampling[key] = task
        task.add_done_callback(lambda _: self._sampling.pop(key, None))

    def _settle(self, fill: Fill, target_id: bytes, record: SampledRecord) -> None:
        if record.role == "fallback":  # not in the book: counted at once
            self._book.fold_now(record)
            self._write_ledger()
        else:
            self._book.settle(fill.sequence, target_id, record)
        self._counters["sampled"] += 1
        ratio = coverage([self._book.ledger]).ratio
        metrics.record_sampling(self._network, self._index, record.outcome, record.role,
                                None if record.latency_ms is None else record.latency_ms / 1000, ratio)
        self._advance()

    async def _sample(self, fill: Fill, target_id: bytes, role: str = "assignee") -> None:
        """Re-score the fill within its window; open the challenge when the claims do not hold."""
        key = (target_id, fill.submission_id)
        self._auditing.add(key)
        try:
            await self._sample_now(fill, target_id, role)
        finally:
            self._auditing.discard(key)

    async def _sample_now(self, fill: Fill, target_id: bytes, role: str) -> None:
        client = await self._connected()
        for attempt in itertools.count():
            try:
                target = await client.get_object(TARGET, target_id, Target)
                if target is None or target.submission_id != fill.submission_id or target.status != "Filled":
                    return self._settle(fill, target_id, self._record(fill, target_id, "moot", role))
                epoch = (await client.get_epoch()).epoch
                if not in_window(fill.epoch, epoch):
                    return self._settle(fill, target_id, self._record(fill, target_id, "missed", role))
                if not await has_weights(client, target):  # a test network's weightless genesis models
                    return self._settle(fill, target_id, self._record(fill, target_id, "moot", role))
                finding = await client.verify(target_id, decide_unscorable=attempt >= ATTEMPTS - 1)
                break
            except errors.NoRevealedSubmission:
                return self._settle(fill, target_id, self._record(fill, target_id, "moot", role))
            except Exception as error:  # noqa: BLE001 - this worker's own trouble: try again
                self._counters["sampling_failures"] += 1
                log.warning("sampling audit of 0x%s failed (%s), attempt %d", target_id.hex(), error, attempt + 1)
                await asyncio.sleep(RETRY_S)
        latency_ms = max(0, int(time.time() * 1000) - fill.timestamp_ms)
        for model_id in finding.report:
            await self._report(client, model_id)
        challenge_id = None
        if finding.fraud is not None:
            challenge_id = await self._challenge(client, target_id, finding)
        self._counters["fallback_audits"] += role == "fallback"
        self._settle(fill, target_id, self._record(fill, target_id, finding.fraud or "holds", role,
                                                   latency_ms, epoch, challenge_id))

    def _record(self, fill: Fill, target_id: bytes, outcome: str, role: str, latency_ms: int | None = None,
                epoch: int | None = None, challenge_id: bytes | None = None) -> SampledRecord:
        return SampledRecord(target_id, fill.submission_id, fill.sequence, fill.epoch, outcome, role,
                             latency_ms, epoch, challenge_id)

    async def _challenge(self, client: SomaClient, target_id: bytes, finding: AuditFinding) -> bytes | None:
        """Open the challenge the finding calls for, from this validator's account with the
        least bond (None: somebody else's is open already, or it could not be opened)."""
        for _ in range(CHALLENGE_ATTEMPTS):
            try:
                challenge_id = await client.initiate_challenge(self._keypair, target_id, finding.fraud)
                self._counters["sampling_challenges"] += 1
                log.info("sampling audit of 0x%s: %s (%s); challenge 0x%s opened", target_id.hex(),
                         finding.fraud, finding.reason, challenge_id.hex())
                return challenge_id
            except ALREADY_TAKEN:
                return None
            except RETRY_LATER as error:
                log.warning("challenge of 0x%s: %s; trying again", target_id.hex(), error)
                await asyncio.sleep(RETRY_S)
            except errors.ProtocolError as error:  # the window closed, the account cannot pay the bond
                log.warning("challenge of 0x%s refused: %s", target_id.hex(), error)
                break
        self._counters["challenge_failures"] += 1
        return None

    async def _watch(self, fill: Fill, target_id: bytes, assignee: bytes) -> None:
        """As the fill's fallback: past the deadline, ask the assignee's worker whether it has
        settled the fill; audit it here when the assignee is down, or has not settled it after
        FALLBACK_PATIENCE more waits (and the fill still stands within its window)."""
        key = (target_id, fill.submission_id)
        self._watching.add(key)
        try:
            stepped_in = await self._watch_until(fill, target_id, assignee)
        finally:
            self._watching.discard(key)
        if stepped_in:
            await self._sample(fill, target_id, "fallback")

    async def _watch_until(self, fill: Fill, target_id: bytes, assignee: bytes) -> bool:
        """True when this fallback must audit the fill itself."""
        client = await self._connected()
        wait_s = fallback_after_s((await client.get_system_state()).parameters.epoch_duration_ms)
        await asyncio.sleep(max(0.0, fill.timestamp_ms / 1000 + wait_s - time.time()))
        for waited in itertools.count():
            try:
                target = await client.get_object(TARGET, target_id, Target)
                if target is None or target.submission_id != fill.submission_id or target.status != "Filled":
                    return False  # settled by someone: challenged or undone
                answer = await self._ask_assignee(assignee, target_id, fill.sequence)
            except Exception as error:  # noqa: BLE001 - the chain unreachable: wait and ask again
                log.warning("fallback watch of 0x%s: %s", target_id.hex(), error)
                answer = "pending"
            if answer == "settled":
                return False
            if answer == "down" or waited >= FALLBACK_PATIENCE:
                log.warning("fill of 0x%s: the assignee is %s; auditing it as its fallback", target_id.hex(),
                            "down" if answer == "down" else "late")
                return True
            await asyncio.sleep(wait_s)
        return False

    async def _ask_assignee(self, assignee: bytes, target_id: bytes, sequence: int) -> str:
        """'settled', 'pending' or 'down' (no worker answers for that validator)."""
        index = self._worker_of(assignee)
        worker = None if index is None else find_actor(audit_worker_name(self._network, index), self._network.namespace)
        if worker is None:
            return "down"
        try:
            settled = await asyncio.wait_for(worker.settled.remote(target_id, sequence), timeout=30)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, asyncio.TimeoutError):
            return "down"
        return "settled" if settled else "pending"

    def _worker_of(self, address: bytes) -> int | None:
        if not self._validators:
            self._validators = {self._network.validator_keypair(i).address: i
                                for i in range(self._network.validators)}
        return self._validators.get(address)

    # -- challenges ----------------------------------------------------------------------------------

    def _audit_soon(self, challenge_id: bytes) -> asyncio.Task:
        task = self._audits.get(challenge_id)
        if task is None:
            task = self._audits[challenge_id] = asyncio.get_running_loop().create_task(self._vote_on(challenge_id))
        return task

    def _forget(self, challenge_id: bytes) -> None:
        task = self._audits.pop(challenge_id, None)
        if task is not None and not task.done():
            task.cancel()
        self._findings.pop(challenge_id, None)

    async def _vote_on(self, challenge_id: bytes) -> bytes | None:
        """Audit the challenge and sign the vote (None: the challenge is no longer open). Tried
        again until it is done or the challenge is gone: never given up while it is open."""
        started = time.monotonic()
        client = await self._connected()
        for attempt in itertools.count():
            try:
                challenge = await client.get_object(CHALLENGE, challenge_id, Challenge)
                if challenge is None:
                    self._audits.pop(challenge_id, None)
                    return None
                finding = await client.verify(challenge.target_id, decide_unscorable=attempt >= ATTEMPTS - 1)
                break
            except errors.NoRevealedSubmission:
                return None  # resolved while this audit ran
            except Exception as error:  # noqa: BLE001 - this worker's own trouble: try again
                self._counters["audit_failures"] += 1
                log.warning("audit of 0x%s failed (%s), attempt %d", challenge_id.hex(), error, attempt + 1)
                await asyncio.sleep(RETRY_S)
        self._counters["audits"] += 1
        metrics.record_audit(self._network, self._index, finding.verdict, time.monotonic() - started)
        self._findings[challenge_id] = finding
        for model_id in finding.report:
            await self._report(client, model_id)
        return encode(sign_vote(self._keypair, challenge_id, finding.verdict, await client.chain_id()))

    async def _report(self, client: SomaClient, model_id: bytes) -> None:
        try:
            await client.report_model(self._keypair, model_id)
            self._counters["reports"] += 1
        except REPORT_MOOT:
            pass
        except Exception as error:  # noqa: BLE001 - a report is retried at the next audit
            log.warning("report of model 0x%s failed: %s", model_id.hex(), error)

    # -- what aggregators, other workers and operators call ------------------------------------------

    async def vote(self, challenge_id: bytes) -> bytes | None:
        """This validator's encoded signed ChallengeVote on the challenge, once audited (None:
        it is not open)."""
        self._ensure_following()
        task = self._audit_soon(bytes(challenge_id))
        try:
            vote = await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            return None  # resolved meanwhile
        if vote is not None:
            self._counters["votes_sent"] += 1
        return vote

    async def finding(self, challenge_id: bytes) -> AuditFinding | None:
        """The audit behind this worker's vote, with its numbers (None: not audited yet)."""
        return self._findings.get(bytes(challenge_id))

    async def settled(self, target_id: bytes, sequence: int) -> bool:
        """Whether this worker has settled its sampling audit of the fill of `target_id` in
        checkpoint `sequence` (what a fallback asks)."""
        self._ensure_following()
        return self._book.is_settled(sequence, bytes(target_id))

    async def sampling(self) -> dict:
        """The sampling ledger (counters, latencies and recent records folded up to its mark),
        the fills being re-scored now (`open`: target ids), the fills still to settle as assignee
        or as a fallback that stepped in (`pending`), and the fills watched as a fallback."""
        self._ensure_following()
        return {"ledger": self._book.ledger, "open": [target for target, _ in self._auditing],
                "pending": self._book.open_count(), "watching": len(self._watching),
                "validator": self._index, "on": self._sampling_on}

    async def stats(self) -> dict:
        """Counters: audits done, votes sent (answered asks), models reported, failed attempts,
        sampling audits settled (as fallback too), challenges opened after one; and the
        challenges open to it."""
        self._ensure_following()
        return {**self._counters, "open": len(self._audits), "sampling_auditing": len(self._auditing),
                "sampling_watching": len(self._watching),
                "validator": self._index}


def sampling_coverage(workers: list, timeout_s: float = 5.0):
    """The sampling coverage and latency over the workers' ledgers (None when none answers)."""
    ledgers = []
    for worker in workers:
        try:
            ledgers.append(ray.get(worker.sampling.remote(), timeout=timeout_s)["ledger"])
        except (ray.exceptions.RayError, TimeoutError):
            continue
    return coverage(ledgers) if ledgers else None
