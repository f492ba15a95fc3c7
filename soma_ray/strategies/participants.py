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

from soma_ray.node.audit import DEFAULT_AUDIT_TOLERANCE, within_tolerance
from soma_ray.wire import ModelManifest, ScoreResponse, TargetView
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.state import CHALLENGE
from soma_ray.protocol.targets import DISTANCE_SCALE, cosine_distance_fixed
from soma_ray.protocol.types import Challenge
from soma_ray.strategies.corpus import CHUNK_BYTES, Corpus
from soma_ray.strategies.decide import (
    FRAUD_CHALLENGE, SHAVE_MARGINS, PoolScores, assigned_to, challenge_to_open, challengeable,
    fraud_label, fraud_plans, hits_within, is_shave_fraud, largest_model_group, margin_band, minable,
    model_groups, nudge, plan_shaves, second_best,
)

# What a fraudulent miner claims as its loss: a number no model computed.
FAKE_LOSS = 1.0
# The pool a shaving or wrong-winner miner scores once under each model of a model set: full
# chunks of its corpus and as many of random bytes (their mixtures spread the embeddings between
# text's and noise's, so some item lands just outside any threshold), drawn from one seed so that
# every fraudulent miner of a crowd holds the same pool (`soma simulate` scores it once).
POOL_TEXT_CHUNKS = 5
POOL_RANDOM_CHUNKS = 5
POOL_SEED = 20
# Item shapes a shaving miner tries (scored once each) before it gives the plan up.
SHAVE_TRIES = 3


class Fraud(NamedTuple):
    """One fraud a fraudulent miner injected: its kind (decide.FRAUD_KINDS), where, the
    challenge that catches it, and for a shave its true margin (in audit tolerances; for a wrong
    winner the loss gap in tolerances). `is_fraud` is False for claims within the tolerance
    (a shave or a wrong winner the audit accepts by definition)."""
    kind: str
    target_id: bytes
    submission_id: bytes
    epoch: int
    caught_by: str
    margin: float | None = None
    is_fraud: bool = True

    @property
    def label(self) -> str:
        return fraud_label(self.kind, self.margin, self.is_fraud)


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
    challenges_preempted: int = 0  # found fraud, but the target was challenged already
    resolution_s: list[float] = field(default_factory=list)  # opened → seen resolved
    frauds: list[Fraud] = field(default_factory=list)
    # "<fraud label>|injected", "|caught" (slashed), "|escaped" (claimed: paid although fraud),
    # "|held" (claimed, within the tolerance: not fraud)
    fraud_outcomes: dict[str, int] = field(default_factory=dict)
    unusable_models: dict[str, int] = field(default_factory=dict)  # model hex → times met
    errors: dict[str, int] = field(default_factory=dict)  # typed error code (or class) → count
    # trainers (soma_ray/strategies/trainer.py)
    trainings: int = 0  # epochs fine-tuned and committed
    train_steps: int = 0
    train_s: float = 0.0  # time in the fine-tuning
    publish_s: float = 0.0  # embedding, encryption, upload and commit
    hit_items: int = 0  # data of hits its model won, trained on
    niche_items: int = 0  # chunks of its own corpus trained on
    reveals: int = 0

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

    def count_outcome(self, fraud: Fraud, outcome: str) -> None:
        key = f"{fraud.label}|{outcome}"
        self.fraud_outcomes[key] = self.fraud_outcomes.get(key, 0) + 1


class World:
    """What every participant of one driver reads in a round: the epoch and the targets by
    status (refreshed once per round), the models' manifests (cached), and the scoring service
    (timed). `taken` holds the targets this round's miners already went for, so that two of them
    do not race each other for one. With `mining` off, miners only claim and count their slashes
    (a driver's quiet rounds, while challenges resolve). `unusable` holds the models whose weights
    the scoring service could not use: miners leave their targets alone."""

    def __init__(self, client) -> None:
        self.client = client
        self.mining = True
        self.epoch = 0
        self.tolerance = DEFAULT_AUDIT_TOLERANCE  # the network's audit_tolerance, read at the first refresh
        self.open: list[TargetView] = []
        self.filled: list[TargetView] = []
        self.claimable: list[TargetView] = []
        self.taken: set[bytes] = set()
        self.unusable: set[bytes] = set()
        self._manifests: dict[tuple[bytes, ...], list[ModelManifest]] = {}
        self._read_parameters = False

    async def refresh(self) -> None:
        if not self._read_parameters:
            self.tolerance = (await self.client.get_system_state()).parameters.audit_tolerance
            self._read_parameters = True
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

    def usable(self, target: TargetView) -> bool:
        return not self.unusable.intersection(target.model_ids)

    def note_unusable(self, stats: Stats, error: Exception) -> bool:
        """Remember the model a scoring failure names (True), so that miners leave it alone."""
        if not isinstance(error, (errors.ModelUnavailable, errors.ModelHasNoWeights)):
            return False
        model_id = error.model_id
        model_id = bytes.fromhex(model_id.removeprefix("0x")) if isinstance(model_id, str) else bytes(model_id)
        self.unusable.add(model_id)
        stats.unusable_models[model_id.hex()] = stats.unusable_models.get(model_id.hex(), 0) + 1
        return True


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
        self.injected: dict[bytes, Fraud] = {}  # own fraudulent submission id → its fraud

    async def act(self, world: World) -> None:
        await self.settle(world)
        if world.mining:
            await self.mine(world)

    async def settle(self, world: World) -> None:
        for target_id, submission_id in list(self.standing.items()):
            target = world.find(target_id)
            fraud = self.injected.get(submission_id)
            if target is None or target.submission_id != submission_id:
                del self.standing[target_id]  # a challenger won: the submission is gone
                self.stats.slashes += 1
                if fraud is not None:
                    self.stats.count_outcome(fraud, "caught")
            elif target.status == "claimable":
                await world.client.claim_rewards(self.keypair, target_id)
                del self.standing[target_id]
                self.stats.claims += 1
                if fraud is not None:
                    self.stats.count_outcome(fraud, "escaped" if fraud.is_fraud else "held")

    async def mine(self, world: World) -> None:
        raise NotImplementedError

    def candidates(self, world: World) -> list[TargetView]:
        return [t for t in minable(world.open, world.epoch) if t.id not in world.taken and world.usable(t)]

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
        try:
            scored = await world.score(self.stats, data, targets[0])
        except (errors.ModelUnavailable, errors.ModelHasNoWeights) as error:
            world.note_unusable(self.stats, error)  # its targets are left alone from now on
            return
        hits = hits_within(scored.embedding, [t for t in targets if t.id not in world.taken])
        if not hits:
            self.stats.misses += 1
            return
        hit = self.rng.choice(hits)
        world.taken.add(hit.target.id)
        client = world.client
        model_id = (await world.manifests(targets[0].model_ids))[scored.winner].model_id
        submission_id = await client.submit_data(
            self.keypair, hit.target.id, data, await client.upload(data, signer=self.keypair), model_id,
            scored.embedding_array(), hit.distance_score, scored.loss_score)
        self.record(hit.target, submission_id)
        self.stats.hits += 1


class LazyMiner(HonestMiner):
    """An honest miner whose data is random bytes: scored and submitted truthfully, so it is
    never slashed, though its data teaches the models nothing."""
    role = "lazy"

    def next_data(self) -> bytes:
        return self.rng.randbytes(CHUNK_BYTES)


class PairModel:
    """The model of an owner–miner pair: the miner may claim it, and the owner can make its
    weights unloadable after the fill (`break_weights`, supplied by the driver: in
    `soma simulate` the blob is removed from the in-process store)."""

    def __init__(self, model_id: bytes, break_weights) -> None:
        self.model_id = model_id
        self._break = break_weights
        self.broken = False

    async def break_weights(self) -> None:
        self.broken = True
        await self._break()


class FraudulentMiner(Miner):
    """Submits, at most `per_epoch` times an epoch, a submission that cheats in one of
    decide.FRAUD_KINDS (the plans of `decide.fraud_plans`, in turn; one it cannot play now is
    skipped for the next), and records each in `stats.frauds`. Fake scores, wrong hashes and
    withheld data need no scoring; shaves and wrong winners score a pool of chunks once per model
    version (`pool`) and reuse it in every model set; the owner–miner pair needs `pair`."""
    role = "fraudulent"

    def __init__(self, keypair: Keypair, seed: int, corpus: Corpus, per_epoch: int = 1, index: int = 0,
                 pair: PairModel | None = None) -> None:
        super().__init__(keypair, seed)
        self.corpus = corpus
        self.per_epoch = per_epoch
        self.index = index
        self.pair = pair
        self.np_rng = np.random.default_rng(seed)
        self._decoy_url: str | None = None
        self._pool_chunks: list[bytes] | None = None
        self._scored: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # weights checksum → the pool's scores

    async def mine(self, world: World) -> None:
        targets = self.candidates(world)
        if not targets or sum(f.epoch == world.epoch for f in self.stats.frauds) >= self.per_epoch:
            return
        for kind, margin in fraud_plans(self.index, len(self.stats.frauds)):
            targets = self.candidates(world)  # again: other miners took some while this one scored
            if not targets:
                return
            try:
                fraud = await self.play(world, targets, kind, margin)
            except (errors.ModelUnavailable, errors.ModelHasNoWeights) as error:
                if not world.note_unusable(self.stats, error):
                    raise
                return  # the pool's model set is broken: the next step plays another
            if fraud is not None:
                self.record_fraud(world, fraud)
                return

    def record_fraud(self, world: World, fraud: Fraud) -> None:
        self.standing[fraud.target_id] = fraud.submission_id
        self.stats.submissions += 1
        self.stats.frauds.append(fraud)
        self.injected[fraud.submission_id] = fraud
        self.stats.count_outcome(fraud, "injected")

    async def play(self, world: World, targets: list[TargetView], kind: str, margin: float | None) -> Fraud | None:
        if kind == "shave":
            return await self.shave(world, targets, margin)
        if kind == "wrong-winner":
            return await self.wrong_winner(world, targets)
        if kind == "broken-weights":
            return await self.broken_weights(world, targets)
        target = self.rng.choice(targets)
        world.taken.add(target.id)
        data = self.corpus.next_chunk()
        revealed, url = await self.forge(world.client, kind, data)
        # The target's own embedding: distance 0, whatever the data really gives.
        submission_id = await world.client.submit_data(
            self.keypair, target.id, revealed, url, target.model_ids[0],
            np.frombuffer(target.embedding, "<f4"), 0.0, FAKE_LOSS)
        return Fraud(kind, target.id, submission_id, world.epoch, FRAUD_CHALLENGE[kind])

    async def forge(self, client, kind: str, data: bytes) -> tuple[bytes, str]:
        """(the bytes whose hash and size the reveal names, the data URL) for a fraud of `kind`."""
        if kind == "wrong-hash":  # the store holds `data`; the reveal names other bytes
            return data + b"#", await client.upload(data, signer=self.keypair)
        if kind == "withheld":  # a name in the store's scheme for bytes never uploaded
            if self._decoy_url is None:
                self._decoy_url = await client.upload(b"decoy of " + self.address, signer=self.keypair)
            return data, f"{self._decoy_url.rsplit('/', 1)[0]}/{blake2b256(data).hex()}"
        return data, await client.upload(data, signer=self.keypair)

    async def pool(self, world: World, targets: list[TargetView]) -> PoolScores:
        """The pool's chunks scored under each model of the targets' set, each model alone (its
        loss and its embedding). Each model version (its weights' checksum) scores the pool once,
        whatever sets it appears in: the next epoch's shaves and wrong winners start at once,
        rather than after the other miners of the round took every target."""
        chunks = self.pool_chunks()
        manifests = await world.manifests(list(targets[0].model_ids))
        for manifest in manifests:
            if manifest.checksum not in self._scored:
                losses, embeddings = [], []
                for chunk in chunks:
                    scored = await scoring(self.stats, world.client.score(
                        None, [manifest], targets[0].embedding, data=chunk))
                    losses.append(scored.loss_score)
                    embeddings.append(scored.embedding_array())
                self._scored[manifest.checksum] = (np.array(losses), np.array(embeddings, dtype=np.float64))
        losses, embeddings = zip(*(self._scored[m.checksum] for m in manifests))
        return PoolScores(chunks, [m.model_id for m in manifests], np.stack(losses, axis=1),
                          np.stack(embeddings, axis=1))

    def pool_chunks(self) -> list[bytes]:
        """POOL_TEXT_CHUNKS full, distinct chunks of its corpus (random bytes where it has too few)
        and POOL_RANDOM_CHUNKS of random bytes, the same every time."""
        if self._pool_chunks is None:
            chunks: list[bytes] = []
            source = self.corpus.reseeded(POOL_SEED)
            for _ in range(16 * POOL_TEXT_CHUNKS):
                chunk = source.next_chunk()
                if len(chunk) == CHUNK_BYTES and chunk not in chunks:
                    chunks.append(chunk)
                if len(chunks) == POOL_TEXT_CHUNKS:
                    break
            noise = random.Random(POOL_SEED)
            chunks += [noise.randbytes(CHUNK_BYTES) for _ in range(POOL_TEXT_CHUNKS + POOL_RANDOM_CHUNKS - len(chunks))]
            self._pool_chunks = chunks
        return self._pool_chunks

    async def shave(self, world: World, targets: list[TargetView], want: float) -> Fraud | None:
        """An item whose true distance to a target is outside its threshold by about `want`
        tolerances, claimed with its embedding nudged inside (decide.plan_shaves, nudge). When
        no item of the pool lands in that band for any target of the two largest model groups,
        the nearest other band of SHAVE_MARGINS is tried: a shave is played whenever one can be."""
        wants = sorted(SHAVE_MARGINS, key=lambda m: (abs(m - want), m))
        for group in model_groups(targets)[:2]:
            pool = await self.pool(world, group)
            for margin in wants:
                fraud = await self.shave_in(world, pool, [t for t in group if t.id not in world.taken], margin)
                if fraud is not None:
                    return fraud
        return None

    async def shave_in(self, world: World, pool: PoolScores, group: list[TargetView], want: float) -> Fraud | None:
        tolerance = world.tolerance
        low, high = margin_band(want)
        plans = plan_shaves(pool, group, want, tolerance, self.np_rng) or plan_shaves(
            pool, group, want, tolerance, self.np_rng, samples=160_000)
        for plan in plans[:SHAVE_TRIES]:
            if plan.target.id in world.taken:
                continue
            world.taken.add(plan.target.id)  # before scoring: another miner of the round keeps off it
            data = plan.data(pool)
            scored = await world.score(self.stats, data, plan.target)
            threshold = plan.target.threshold_fixed
            true_distance = cosine_distance_fixed(scored.embedding, plan.target.embedding)
            margin = (true_distance - threshold) / tolerance
            if not low < margin <= high:
                continue
            nudged = nudge(scored.embedding_array(), plan.target.embedding, threshold, tolerance)
            if nudged is None or (want <= 1 and nudged[1] > 0.95):
                continue  # within the tolerance means within the element-wise box too
            claimed, _ = nudged
            model_id = (await world.manifests(plan.target.model_ids))[scored.winner].model_id
            submission_id = await world.client.submit_data(
                self.keypair, plan.target.id, data, await world.client.upload(data, signer=self.keypair), model_id,
                claimed, cosine_distance_fixed(claimed, plan.target.embedding) / DISTANCE_SCALE, scored.loss_score)
            is_fraud = is_shave_fraud(claimed, scored.embedding_array(), true_distance, threshold, tolerance)
            return Fraud("shave", plan.target.id, submission_id, world.epoch, "ScoreFraud", margin, is_fraud)
        return None

    async def wrong_winner(self, world: World, targets: list[TargetView]) -> Fraud | None:
        """A pool chunk submitted with the true scores of its second-best model, to a target
        that model's embedding lands within."""
        for group in model_groups(targets)[:2]:
            fraud = await self.wrong_winner_in(world, await self.pool(world, group), group)
            if fraud is not None:
                return fraud
        return None

    async def wrong_winner_in(self, world: World, pool: PoolScores, group: list[TargetView]) -> Fraud | None:
        for c in self.rng.sample(range(len(pool.chunks)), len(pool.chunks)):
            losses = pool.losses[c]
            second = second_best(losses)
            if second is None:
                continue
            embedding = pool.embeddings[c, second].astype("<f4")
            hits = hits_within(embedding.tobytes(), [t for t in group if t.id not in world.taken])
            if not hits:
                continue
            hit = self.rng.choice(hits)
            best = float(np.min(losses))
            world.taken.add(hit.target.id)
            data = pool.chunks[c]
            submission_id = await world.client.submit_data(
                self.keypair, hit.target.id, data, await world.client.upload(data, signer=self.keypair),
                pool.model_ids[second], embedding, hit.distance_score, float(losses[second]))
            gap = (float(losses[second]) - best) / (world.tolerance / 1e9 * (1 + abs(best)))
            is_fraud = not within_tolerance(float(losses[second]), best, world.tolerance)
            return Fraud("wrong-winner", hit.target.id, submission_id, world.epoch, "ScoreFraud", gap, is_fraud)
        return None

    async def broken_weights(self, world: World, targets: list[TargetView]) -> Fraud | None:
        """The pair's play: the pair's model claimed on a target it belongs to (with the target's
        own embedding and a made-up loss: claims only the model could check), then the owner
        makes the weights unloadable."""
        if self.pair is None or self.pair.broken:
            return None
        own = [t for t in targets if self.pair.model_id in t.model_ids]
        if not own:
            return None
        target = self.rng.choice(own)
        world.taken.add(target.id)
        data = self.corpus.next_chunk()
        submission_id = await world.client.submit_data(
            self.keypair, target.id, data, await world.client.upload(data, signer=self.keypair), self.pair.model_id,
            np.frombuffer(target.embedding, "<f4"), 0.0, FAKE_LOSS)
        await self.pair.break_weights()
        return Fraud("broken-weights", target.id, submission_id, world.epoch, "ScoreFraud")


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
        try:
            challenge_id = await world.client.initiate_challenge(self.keypair, target.id, kind)
        except (errors.ChallengeAlreadyOpen, errors.TargetNotFilled):
            self.stats.challenges_preempted += 1  # a validator's sampling audit (or another) got there first
            return
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
