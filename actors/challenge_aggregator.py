"""The challenge aggregator: collects the audit workers' votes on every open challenge, forms a
certificate of the current committee on one verdict and submits ResolveChallenge (spec §2, §5).

    aggregator = launch_aggregator(config, 0)    # actors/network.py; named <prefix>challenge-aggregator-0
    await aggregator.submit_vote.remote(raw)     # anyone may hand it a vote: it is checked, never trusted
    await aggregator.evidence.remote()           # the votes that did not count, and why

It keeps nothing on disk. At its start it reads the open challenges from the chain, then follows
the checkpoint feed from the checkpoint it read them at: challenges opened are collected,
challenges resolved are dropped, an epoch change re-reads the committee and the open set. For each
open challenge it asks every audit worker for its vote (`AuditWorker.vote` answers once audited),
so after a restart it simply asks again. The tally and the certificate are the pure
`VoteCollector`'s. ResolveChallenge is signed with the key of the validator this aggregator runs
beside (its fee balance pays) and submitted through the validators like any in-cluster call.
Several aggregators at once are harmless: the first ResolveChallenge resolves the challenge and
the chain refuses the others (ObjectNotFound: the challenge is gone), costing their base fee.
"""
from __future__ import annotations

import asyncio
import logging

import ray

from actors.audit import audit_worker_name
from actors.feed import CheckpointFeed
from soma_ray.handles import find_actor
from soma_ray.client import FinalityTimeout, SomaClient
from soma_ray.config import NetworkConfig
from soma_ray.node.audit import MAX_VOTE_BYTES, Evidence, VoteCollector, challenge_changes
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Certificate
from soma_ray.protocol.state import CHALLENGE
from soma_ray.protocol.types import ResolveChallenge, Verdict

log = logging.getLogger(__name__)

# Pause before asking a worker again (it is down, or could not audit yet).
ASK_AGAIN_S = 2.0
# ResolveChallenge is retried this many times when its outcome is unknown or its nonce was taken
# (the validator's key also signs its faucet transactions).
RESOLVE_ATTEMPTS = 5
RETRY_LATER = (errors.BadNonce, errors.NonceAlreadyPooled, errors.TransactionExpired, FinalityTimeout,
               RuntimeError, ray.exceptions.RayError)


def aggregator_name(config: NetworkConfig, index: int = 0) -> str:
    return f"{config.prefix}challenge-aggregator-{index}"


def as_vote_bytes(raw) -> bytes:
    """What arrived, as bytes to check (anything else is kept as its short description)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw)
    return repr(raw)[:MAX_VOTE_BYTES].encode(errors="replace")


class ChallengeAggregator:
    def __init__(self, config: dict, index: int = 0):
        self._network = NetworkConfig(**config)
        self._index = index
        self._keypair = self._network.validator_keypair(index)
        self._client: SomaClient | None = None
        self._collector: VoteCollector | None = None
        self._collecting: dict[bytes, list[asyncio.Task]] = {}  # open challenge → its asks
        self._resolving: set[bytes] = set()
        self._counters = {"votes_received": 0, "votes_counted": 0, "certificates": 0, "resolved": 0,
                          "already_resolved": 0, "resolve_failures": 0}
        self._started = asyncio.Event()
        self._task: asyncio.Task | None = None
        try:  # Ray runs an async actor's __init__ on its event loop
            self._ensure_running()
        except RuntimeError:
            pass

    def _ensure_running(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        self._client = client = await SomaClient(namespace=self._network.namespace, prefix=self._network.prefix)
        latest = await client.get_checkpoint()
        system = await client.get_system_state()
        self._collector = VoteCollector(system.committee, system.parameters.quorum, chain_id=system.chain_id)
        for challenge_id in await client.get_object_ids(CHALLENGE):
            self._collect(challenge_id)
        self._started.set()
        start = 0 if latest is None else latest.sequence + 1
        async for followed in CheckpointFeed(self._network, f"aggregator-{self._index}", start=start).items():
            changes = challenge_changes(followed.checkpoint, followed.effects)
            for challenge_id in changes.opened:
                self._collect(challenge_id)
            for challenge_id in changes.resolved:
                self._close(challenge_id)
            if changes.epoch_changed:
                await self._new_epoch(client)

    async def _new_epoch(self, client: SomaClient) -> None:
        """Tally under the new committee; drop the challenges the epoch change closed."""
        system = await client.get_system_state()
        self._collector = self._collector.under(system.committee)
        still_open = set(await client.get_object_ids(CHALLENGE))
        for challenge_id in list(self._collecting):
            if challenge_id not in still_open:
                self._close(challenge_id)
        for challenge_id in still_open:
            self._collect(challenge_id)
            self._resolve_if_certified(challenge_id)

    def _collect(self, challenge_id: bytes) -> None:
        if challenge_id in self._collecting:
            return
        loop = asyncio.get_running_loop()
        self._collecting[challenge_id] = [loop.create_task(self._ask(i, challenge_id))
                                          for i in range(self._network.validators)]

    def _close(self, challenge_id: bytes) -> None:
        for task in self._collecting.pop(challenge_id, []):
            task.cancel()
        self._collector.forget(challenge_id)
        self._resolving.discard(challenge_id)

    async def _ask(self, index: int, challenge_id: bytes) -> None:
        """Worker `index`'s vote on the challenge, asked until it answers one."""
        name = audit_worker_name(self._network, index)
        while True:
            worker = find_actor(name, self._network.namespace)
            try:
                raw = None if worker is None else await worker.vote.remote(challenge_id)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                raw = None
            if raw is not None:
                self._add(raw)
                return
            await asyncio.sleep(ASK_AGAIN_S)

    def _add(self, raw: bytes) -> bool:
        self._counters["votes_received"] += 1
        added = self._collector.add(raw)
        if added.counted:
            self._counters["votes_counted"] += 1
            self._resolve_if_certified(added.challenge_id)
        return added.counted

    def _resolve_if_certified(self, challenge_id: bytes) -> None:
        if challenge_id in self._resolving:
            return
        certified = self._collector.certificate(challenge_id)
        if certified is not None:
            self._counters["certificates"] += 1
            self._resolving.add(challenge_id)
            asyncio.get_running_loop().create_task(self._resolve(challenge_id, *certified))

    async def _resolve(self, challenge_id: bytes, verdict: Verdict, certificate: Certificate) -> None:
        tx = ResolveChallenge(challenge_id=challenge_id, verdict=verdict, certificate=certificate)
        for _ in range(RESOLVE_ATTEMPTS):
            try:
                await self._client.execute(self._keypair, tx)
                self._counters["resolved"] += 1
                return
            except errors.ObjectNotFound:  # resolved by another aggregator, or closed: harmless
                self._counters["already_resolved"] += 1
                return
            except RETRY_LATER as error:
                log.warning("ResolveChallenge 0x%s: %s; trying again", challenge_id.hex(), error)
                await asyncio.sleep(ASK_AGAIN_S)
            except errors.ProtocolError as error:  # e.g. the committee changed: tallied again then
                log.warning("ResolveChallenge 0x%s refused: %s", challenge_id.hex(), error)
                break
        self._counters["resolve_failures"] += 1
        self._resolving.discard(challenge_id)

    # -- what workers, people and operators call --------------------------------------------------

    async def submit_vote(self, raw) -> bool:
        """Check one encoded ChallengeVote and count it (True) or keep it as evidence (False)."""
        self._ensure_running()
        await self._started.wait()
        return self._add(as_vote_bytes(raw))

    async def evidence(self) -> list[Evidence]:
        """The votes that did not count (garbage, bad signatures, non-members, conflicting
        votes), newest last, at most MAX_EVIDENCE."""
        await self._started.wait()
        return list(self._collector.evidence)

    async def tally(self, challenge_id: bytes) -> dict:
        """Voting power counted per verdict on an open challenge, and who voted."""
        await self._started.wait()
        challenge_id = bytes(challenge_id)
        return {"ChallengerWins": self._collector.power(challenge_id, "ChallengerWins"),
                "MinerWins": self._collector.power(challenge_id, "MinerWins"),
                "voters": sorted(self._collector.voters(challenge_id))}

    async def stats(self) -> dict:
        """Counters: votes received and counted, certificates formed, challenges resolved by this
        aggregator, refused as already resolved, given up; and the challenges open to it."""
        self._ensure_running()
        return {**self._counters, "open": len(self._collecting), "aggregator": self._index}
