"""Scripted participants: honest, lazy and fraudulent miners and challengers, plain classes
driven through the SDK one `step` at a time, so that one driver (a crowd actor, a script, a
benchmark) can interleave hundreds of them on one `SomaClient`.

Each step reads the shared `World` (one snapshot of the targets per round, not one per
participant) and takes at most one action that costs a scoring call or a submission. Everything
random comes from the participant's seed, so a crowd replays the same choices on the same chain.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from soma_ray.wire import ModelManifest, ScoreResponse, TargetView
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.state import CHALLENGE
from soma_ray.protocol.types import Challenge
from soma_ray.strategies.corpus import CHUNK_BYTES, Corpus
from soma_ray.strategies.decide import (
    FRAUD_CHALLENGE, FRAUD_KINDS, assigned_to, challenge_to_open, challengeable, hits_within,
    largest_model_group, minable,
)

# What a fraudulent miner claims as its loss: a number no model computed.
FAKE_LOSS = 1.0


class Fraud(NamedTuple):
    """One fraud a fraudulent miner injected: its kind (decide.FRAUD_KINDS), where, and the
    challenge that catches it."""
    kind: str
    target_id: bytes
    submission_id: bytes
    epoch: int
    caught_by: str


@dataclass
class Stats:
    """What participants did, summed over any number of them (`add`)."""
    submissions: int = 0  # revealed submissions (each a hit while it stands)
    hits: int = 0  # honest revealed submissions
    misses: int = 0  # scored items that landed within no target's threshold
    claims: int = 0
    slashes: int = 0  # own submissions undone by a challenge the challenger won
    scores: int = 0  # scoring-service calls (a miner's items, a challenger's verifications)
    score_s: float = 0.0  # time spent in them
    step_s: float = 0.0  # time spent in steps, all of it
    challenges_opened: int = 0
    challenges_won: int = 0
    challenges_lost: int = 0  # the miner won, or the window closed unresolved
    resolution_s: list[float] = field(default_factory=list)  # opened → seen resolved
    frauds: list[Fraud] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # typed error code (or class) → count

    def add(self, other: Stats) -> Stats:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(value, dict):
                for key, count in value.items():
                    mine[key] = mine.get(key, 0) + count
            else:
                setattr(self, name, mine + value)
        return self

    def count_error(self, error: Exception) -> None:
        code = error.code if isinstance(error, ProtocolError) else type(error).__name__
        self.errors[code] = self.errors.get(code, 0) + 1


class World:
    """What every participant of one driver reads in a round: the epoch and the targets by
    status (refreshed once per round), the models' manifests (cached), and the scoring service
    (timed). `taken` holds the targets this round's miners already went for, so that two of them
    do not race each other for one. With `mining` off, miners only claim and count their slashes
    (a driver's quiet rounds, while challenges resolve)."""

    def __init__(self, client) -> None:
        self.client = client
        self.mining = True
        self.epoch = 0
        self.open: list[TargetView] = []
        self.filled: list[TargetView] = []
        self.claimable: list[TargetView] = []
        self.taken: set[bytes] = set()
        self._manifests: dict[tuple[bytes, ...], list[ModelManifest]] = {}

    async def refresh(self) -> None:
        self.epoch = (await self.client.get_epoch()).epoch
        self.open = await self.client.get_targets("open")
        self.filled = await self.client.get_targets("filled")
        self.claimable = await self.client.get_targets("claimable")
        self.taken = set()

    def find(self, target_id: bytes) -> TargetView | None:
        """A filled or claimable target by id (None: neither)."""
        return next((t for t in self.filled + self.claimable if t.id == target_id), None)

    async def manifests(self, model_ids: list[bytes]) -> list[ModelManifest]:
        key = tuple(model_ids)
        if key not in self._manifests:
            self._manifests[key] = await self.client.get_model_manifests(model_ids)
        return self._manifests[key]

    async def score(self, stats: Stats, data: bytes, target: TargetView) -> ScoreResponse:
        """`data` scored under `target`'s models, as the chain's scoring function does."""
        manifests = await self.manifests(target.model_ids)
        return await scoring(stats, self.client.score(None, manifests, target.embedding, data=data))

    async def verify(self, stats: Stats, target_id: bytes):
        """The SDK's audit of a filled target (it re-scores the data through the scoring service)."""
        return await scoring(stats, self.client.verify(target_id))


async def scoring(stats: Stats, call):
    """Await a call that scores through the service, counted and timed in `stats`."""
    started = time.perf_counter()
    try:
        return await call
    finally:
        stats.scores += 1
        stats.score_s += time.perf_counter() - started


class Participant:
    role = "participant"

    def __init__(self, keypair: Keypair, seed: int) -> None:
        self.keypair = keypair
        self.rng = random.Random(seed)
        self.stats = Stats()

    @property
    def address(self) -> bytes:
        return self.keypair.address

    async def step(self, world: World) -> None:
        """One turn; a typed error (a race lost, a window closed) is counted, never raised."""
        started = time.perf_counter()
        try:
            await self.act(world)
        except (ProtocolError, OSError, TimeoutError) as error:
            self.stats.count_error(error)
        finally:
            self.stats.step_s += time.perf_counter() - started

    async def act(self, world: World) -> None:
        raise NotImplementedError


class Miner(Participant):
    """Keeps the targets its revealed submissions stand on: claims each once claimable, and
    counts a slash for each one a challenge took away."""

    def __init__(self, keypair: Keypair, seed: int) -> None:
        super().__init__(keypair, seed)
        self.standing: dict[bytes, bytes] = {}  # target id → own submission id

    async def act(self, world: World) -> None:
        await self.settle(world)
        if world.mining:
            await self.mine(world)

    async def settle(self, world: World) -> None:
        for target_id, submission_id in list(self.standing.items()):
            target = world.find(target_id)
            if target is None or target.submission_id != submission_id:
                del self.standing[target_id]  # a challenger won: the submission is gone
                self.stats.slashes += 1
            elif target.status == "claimable":
                await world.client.claim_rewards(self.keypair, target_id)
                del self.standing[target_id]
                self.stats.claims += 1

    async def mine(self, world: World) -> None:
        raise NotImplementedError

    def candidates(self, world: World) -> list[TargetView]:
        return [t for t in minable(world.open, world.epoch) if t.id not in world.taken]

    def record(self, target: TargetView, submission_id: bytes) -> None:
        self.standing[target.id] = submission_id
        self.stats.submissions += 1


class HonestMiner(Miner):
    """Scores the next item of its corpus under the models most open targets share, and
    submits it, with the scores the scoring service gave, to one of those whose threshold it
    lands within, drawn from its seed (every hit pays alike; a draw rather than the nearest
    keeps miners from racing each other for one target)."""
    role = "honest"

    def __init__(self, keypair: Keypair, seed: int, corpus: Corpus) -> None:
        super().__init__(keypair, seed)
        self.corpus = corpus

    def next_data(self) -> bytes:
        return self.corpus.next_chunk()

    async def mine(self, world: World) -> None:
        targets = largest_model_group(self.candidates(world))
        if not targets:
            return
        data = self.next_data()
        scored = await world.score(self.stats, data, targets[0])
        hits = hits_within(scored.embedding, [t for t in targets if t.id not in world.taken])
        if not hits:
            self.stats.misses += 1
            return
        hit = self.rng.choice(hits)
        world.taken.add(hit.target.id)
        client = world.client
        model_id = (await world.manifests(targets[0].model_ids))[scored.winner].model_id
        submission_id = await client.submit_data(
            self.keypair, hit.target.id, data, await client.upload(data), model_id,
            scored.embedding_array(), hit.distance_score, scored.loss_score)
        self.record(hit.target, submission_id)
        self.stats.hits += 1


class LazyMiner(HonestMiner):
    """An honest miner whose data is random bytes: scored and submitted truthfully, so it is
    never slashed, though its data teaches the models nothing."""
    role = "lazy"

    def next_data(self) -> bytes:
        return self.rng.randbytes(CHUNK_BYTES)


class FraudulentMiner(Miner):
    """Submits, at most `per_epoch` times an epoch, a submission that cheats in one of
    decide.FRAUD_KINDS (in turn), without scoring anything; records each in `stats.frauds`."""
    role = "fraudulent"

    def __init__(self, keypair: Keypair, seed: int, corpus: Corpus, per_epoch: int = 1) -> None:
        super().__init__(keypair, seed)
        self.corpus = corpus
        self.per_epoch = per_epoch
        self._decoy_url: str | None = None

    async def mine(self, world: World) -> None:
        targets = self.candidates(world)
        if not targets or sum(f.epoch == world.epoch for f in self.stats.frauds) >= self.per_epoch:
            return
        target = self.rng.choice(targets)
        world.taken.add(target.id)
        kind = FRAUD_KINDS[len(self.stats.frauds) % len(FRAUD_KINDS)]
        data = self.corpus.next_chunk()
        revealed, url = await self.forge(world.client, kind, data)
        # The target's own embedding: distance 0, whatever the data really gives.
        submission_id = await world.client.submit_data(
            self.keypair, target.id, revealed, url, target.model_ids[0],
            np.frombuffer(target.embedding, "<f4"), 0.0, FAKE_LOSS)
        self.record(target, submission_id)
        self.stats.frauds.append(Fraud(kind, target.id, submission_id, world.epoch, FRAUD_CHALLENGE[kind]))

    async def forge(self, client, kind: str, data: bytes) -> tuple[bytes, str]:
        """(the bytes whose hash and size the reveal names, the data URL) for a fraud of `kind`."""
        if kind == "wrong-hash":  # the store holds `data`; the reveal names other bytes
            return data + b"#", await client.upload(data)
        if kind == "withheld":  # a name in the store's scheme for bytes never uploaded
            if self._decoy_url is None:
                self._decoy_url = await client.upload(b"decoy of " + self.address)
            return data, f"{self._decoy_url.rsplit('/', 1)[0]}/{blake2b256(data).hex()}"
        return data, await client.upload(data)


class Challenger(Participant):
    """Re-scores the filled targets assigned to it (`verify`, through the scoring service) and
    challenges those whose claims do not hold, posting the minimum bond; every
    `false_alarm_every`-th target whose claims hold it challenges anyway (it loses that bond to
    the miner). Follows its challenges until the chain resolves them."""
    role = "challenger"

    def __init__(self, keypair: Keypair, seed: int, index: int, count: int,
                 false_alarm_every: int = 0) -> None:
        super().__init__(keypair, seed)
        self.index, self.count = index, count
        self.false_alarm_every = false_alarm_every
        self.checked: set[bytes] = set()
        self.open: dict[bytes, tuple[bytes, bytes, float]] = {}  # challenge → target, submission, opened at

    async def act(self, world: World) -> None:
        await self.follow_challenges(world)
        target = next((t for t in world.filled if challengeable(t, world.epoch) and t.id not in self.checked
                       and assigned_to(t.id, self.index, self.count)), None)
        if target is None:
            return
        self.checked.add(target.id)
        finding = await world.verify(self.stats, target.id)
        kind = challenge_to_open(finding.fraud, len(self.checked), self.false_alarm_every)
        if kind is None:
            return
        challenge_id = await world.client.initiate_challenge(self.keypair, target.id, kind)
        self.open[challenge_id] = (target.id, target.submission_id, time.monotonic())
        self.stats.challenges_opened += 1

    async def follow_challenges(self, world: World) -> None:
        for challenge_id, (target_id, submission_id, opened) in list(self.open.items()):
            if await world.client.get_object(CHALLENGE, challenge_id, Challenge) is not None:
                continue
            del self.open[challenge_id]
            self.stats.resolution_s.append(time.monotonic() - opened)
            target = world.find(target_id)
            if target is not None and target.submission_id == submission_id:
                self.stats.challenges_lost += 1
            else:
                self.stats.challenges_won += 1
