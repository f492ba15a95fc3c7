"""Audit workers: one per validator, holding that validator's key, outside the validator actor.

    worker = launch_audit_worker(config, index)  # actors/network.py; named <prefix>audit-<index>
    raw = await worker.vote.remote(challenge_id)         # its encoded signed vote (audits first)

A worker follows the checkpoint feed (its own durable cursor, subscriber `audit-<index>`) and,
at its start, the open challenges on chain. For every open challenge it audits the challenged
submission as `SomaClient.verify` does (download bounded in size and time, hash and size check,
all of the target's models re-scored through the scoring service, the pure decision of
soma_ray/node/audit.py), reports (ReportModel) any model whose weights it cannot use, and signs
its vote. Aggregators ask for votes (`vote`): the call returns once the audit is done, so a vote
reaches every aggregator that asks, also one that restarted. A worker that restarts audits the
open challenges again (the decision and the Ed25519 signature are deterministic: the same vote).
"""
from __future__ import annotations

import asyncio
import logging
import time

from soma_ray import metrics
from actors.feed import CheckpointFeed
from soma_ray.client import SomaClient
from soma_ray.config import NetworkConfig
from soma_ray.node.audit import AuditFinding, challenge_changes, sign_vote
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.state import CHALLENGE
from soma_ray.protocol.types import Challenge

log = logging.getLogger(__name__)

# An audit that fails for a reason of this worker's own (the scoring service or the validators
# unreachable) is tried again after this pause, this many times.
RETRY_S = 2.0
ATTEMPTS = 5
# Reports that fail for these reasons are already done or moot.
REPORT_MOOT = (errors.AlreadyReported, errors.InvalidModelStatus, errors.ObjectNotFound)


def audit_worker_name(config: NetworkConfig, index: int) -> str:
    return f"{config.prefix}audit-{index}"


class AuditWorker:
    def __init__(self, config: dict, index: int):
        self._network = NetworkConfig(**config)
        self._index = index
        self._keypair = self._network.validator_keypair(index)
        self._feed = CheckpointFeed(self._network, f"audit-{index}")
        self._client: SomaClient | None = None
        self._audits: dict[bytes, asyncio.Task] = {}  # by challenge id: the encoded vote, or None
        self._findings: dict[bytes, AuditFinding] = {}
        self._counters = {"audits": 0, "votes_sent": 0, "reports": 0, "audit_failures": 0}
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
            self._feed.ack(followed.sequence)

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
        """Audit the challenge and sign the vote (None: the challenge is no longer open)."""
        started = time.monotonic()
        client = await self._connected()
        for attempt in range(ATTEMPTS):
            try:
                challenge = await client.get_object(CHALLENGE, challenge_id, Challenge)
                if challenge is None:
                    return None
                finding = await client.verify(challenge.target_id)
                break
            except errors.NoRevealedSubmission:
                return None  # resolved while this audit ran
            except Exception as error:  # noqa: BLE001 - this worker's own trouble: try again
                self._counters["audit_failures"] += 1
                log.warning("audit of 0x%s failed (%s), attempt %d", challenge_id.hex(), error, attempt + 1)
                await asyncio.sleep(RETRY_S)
        else:
            self._audits.pop(challenge_id, None)  # a later ask starts afresh
            return None
        self._counters["audits"] += 1
        metrics.record_audit(self._network, self._index, finding.verdict, time.monotonic() - started)
        self._findings[challenge_id] = finding
        for model_id in finding.report:
            await self._report(client, model_id)
        return encode(sign_vote(self._keypair, challenge_id, finding.verdict))

    async def _report(self, client: SomaClient, model_id: bytes) -> None:
        try:
            await client.report_model(self._keypair, model_id)
            self._counters["reports"] += 1
        except REPORT_MOOT:
            pass
        except Exception as error:  # noqa: BLE001 - a report is retried at the next audit
            log.warning("report of model 0x%s failed: %s", model_id.hex(), error)

    # -- what aggregators and operators call -----------------------------------------------------

    async def vote(self, challenge_id: bytes) -> bytes | None:
        """This validator's encoded signed ChallengeVote on the challenge, once audited (None:
        it is not open, or this worker could not audit it)."""
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

    async def stats(self) -> dict:
        """Counters: audits done, votes sent (answered asks), models reported, failed attempts;
        and the challenges open to it."""
        self._ensure_following()
        return {**self._counters, "open": len(self._audits), "validator": self._index}

