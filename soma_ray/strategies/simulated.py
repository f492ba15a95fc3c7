"""The game in one process: the scripted participants (this package) played against the pure
state machine (`protocol.sim.Simulator`), with no Ray, no consensus and no HTTP.

    game = SimulatedGame(roster(crowd_mix(8, 0.25, LAZY_RATE), 2), seed=0, files=corpus_files())
    await game.setup()                 # genesis weights published, participants funded
    for _ in range(4):
        epoch = await game.play_epoch()  # mining rounds, quiet rounds until audits are done

`SimulatedClient` is the SDK (`SomaClient`, unchanged) over `SimTransport`, a third
implementation of `soma_ray.transport.Transport` beside HTTP and Ray: the participant calls of
`soma_ray.participant` (submit_data, initiate_challenge, verify, claim_rewards) run on it as on a
network, over in-process stand-ins for what the other transports reach:

- the chain: each signed transaction is admitted into the Simulator's mempool (admission errors
  refused as the network's are); a checkpoint of everything pending is sealed once every caller
  waits on one (the event loop's next turn), and the reply carries its effects, as a validator's
  does once a checkpoint is certified. So a reveal is sent only after its commit is in a
  checkpoint, as on a network;
- the target index: `node.target_index.TargetIndex` follows every checkpoint (re-executing it);
- the blob store: a dict, content-addressed as serve/blobs names blobs (BLAKE2b-256);
- the scoring service: the genesis models' weights downloaded from that store, checked,
  decrypted and loaded as the service does, scored with `soma_ray.model`'s scoring function.
  Scores are memoised per (weights, data, seed): the function is deterministic, so a validator
  re-scoring what a miner scored gets the same numbers without a second forward pass;
- the audits (`Audits`): every open challenge is audited by each validator key with the SDK's
  `verify` (the pure decision of `node.audit`), the votes signed and tallied by `VoteCollector`,
  and `ResolveChallenge` sent with the certificate once a verdict has the quorum, as the audit
  workers and the aggregator (actors/) do.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterable, NamedTuple

import msgspec
import numpy as np

from soma_ray.client import DOWNLOAD_TIMEOUT_S, SomaClient
from soma_ray.node.audit import VoteCollector, challenge_changes, sign_vote
from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.node.target_index import TargetIndex
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import blake2b256, encode
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.genesis import GenesisConfig, genesis, localnet_genesis_config, preset_keypair
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import CHALLENGE
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.targets import as_embedding
from soma_ray.protocol.types import (
    Challenge, Checkpoint, Faucet, ResolveChallenge, Transaction, TransactionEffects, WeightsManifest,
)
from soma_ray.strategies.decide import FUND_AMOUNT
from soma_ray.strategies.participants import Participant, Stats, World
from soma_ray.strategies.roster import Spec, build
from soma_ray.wire import (
    DEFAULT_LEADERBOARD, DEFAULT_PAGE, CheckpointReply, EpochInfo, EpochReply, Health, IndexStatus, Leaderboard, ModelManifest, ModelView,
    NearbyTarget, ScoreRequest, ScoreResponse, TargetPage, TargetView, Uploaded, epoch_info,
)

# Where the in-process blob store's blobs are named: BLOBS_URL/<checksum hex>.
BLOBS_URL = "sim://blobs"
VALIDATORS = 4
# Quiet rounds after an epoch's mining at most, while challenges resolve.
MAX_QUIET_ROUNDS = 50


class SimTransport:
    """The `Transport` over the pure state machine, in process (see the module docstring)."""

    def __init__(self, genesis_config: GenesisConfig, blobs: dict[str, bytes] | None = None) -> None:
        self.sim = Simulator(genesis_config)
        self.index = TargetIndex(genesis(genesis_config))
        self.blobs: dict[str, bytes] = dict(blobs or {})
        self.scorer = Scorer(self)
        self.feed: list[tuple[Checkpoint, list[TransactionEffects]]] = []  # every sealed checkpoint
        self.supplies: list[int] = []  # the total supply after each
        self._waiting: dict[bytes, asyncio.Future] = {}  # signed bytes in the mempool → their reply
        self._sealing: asyncio.Handle | None = None

    async def close(self) -> None:
        pass

    # ------------------------------------------------------------------ transactions

    async def submit(self, tx: bytes) -> SubmitReply:
        [reply] = await self.submit_batch([tx])
        return reply

    async def submit_batch(self, batch: list[bytes]) -> list[SubmitReply]:
        """Admit each (a refusal is its reply), then wait for the checkpoint that executes them:
        sealed once every caller waits on one (the event loop's next turn)."""
        replies = [self._admit(bytes(tx)) for tx in batch]
        return [await reply if isinstance(reply, asyncio.Future) else reply for reply in replies]

    def _admit(self, tx: bytes) -> SubmitReply | asyncio.Future:
        try:
            self.sim.submit(tx)
        except errors.ProtocolError as refused:
            return SubmitReply.refused(refused)
        loop = asyncio.get_running_loop()
        self._waiting[tx] = future = loop.create_future()
        if self._sealing is None:
            self._sealing = loop.call_soon(self._seal_pending)
        return future

    async def request_faucet(self, recipient: bytes, amount: int) -> SubmitReply:
        """Coins from the emission pool, signed by validator 0's key (the localnet faucet's way)."""
        faucet = preset_keypair("validator", 0)
        tx = Transaction(sender=faucet.address, nonce=self.sim.next_nonce(faucet.address),
                         kind=Faucet(bytes(recipient), amount), max_fee=self.sim.params.base_fee)
        return await self.submit(encode(sign_transaction(faucet, tx)))

    def _seal_pending(self) -> None:
        self._sealing = None
        if not self.sim.mempool:
            return
        try:
            self._seal(*self.sim.make_checkpoint())
        except Exception as error:  # noqa: BLE001 - every waiting caller sees the failure
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(error)
            self._waiting.clear()

    def _seal(self, checkpoint: Checkpoint, effects: list[TransactionEffects]) -> None:
        """What a certified checkpoint does off chain: the index follows it, the supply is
        checked, and the transactions' callers get their effects."""
        self.index.follow(checkpoint, effects)
        self.feed.append((checkpoint, effects))
        self.supplies.append(total_supply(self.sim.state))
        for raw, effect in zip(checkpoint.transactions, effects):
            future = self._waiting.pop(bytes(raw), None)
            if future is not None and not future.done():
                future.set_result(SubmitReply(sequence=checkpoint.sequence, effects=effect))

    # ------------------------------------------------------------------ chain state (the latest)

    async def get_account(self, address: bytes) -> bytes:
        return encode(self.sim.state.account(bytes(address)))

    async def get_object(self, key: bytes) -> bytes | None:
        return self.sim.state.get_raw(bytes(key))

    async def object_ids(self, tag: bytes) -> list[bytes]:
        return list(self.sim.state.ids(tag))

    async def system_state(self) -> bytes:
        return encode(self.sim.state.system())

    async def epoch_info(self) -> EpochInfo:
        return epoch_info(self.sim.state.system())

    async def wait_for_epoch(self, epoch: int, timeout_s: float) -> EpochReply:
        """No clock runs here: an epoch not reached yet is reached only by advance_epoch."""
        current = self.sim.state.system().epoch
        if current < epoch:
            raise errors.EpochNotReached(epoch=epoch, current=current, timeout_s=timeout_s)
        return EpochReply(current)

    async def advance_epoch(self) -> EpochReply:
        """End the epoch now (with whatever is pending)."""
        self._seal(*self.sim.advance_epoch())
        return EpochReply(self.sim.state.system().epoch)

    async def get_checkpoint(self, sequence: int | None) -> CheckpointReply | None:
        """A sealed checkpoint (no certificate: nothing votes here)."""
        checkpoints = self.sim.checkpoints
        if not checkpoints or (sequence is not None and not 0 <= sequence < len(checkpoints)):
            return None
        return CheckpointReply(encode(checkpoints[-1 if sequence is None else sequence]), b"")

    async def status(self) -> list[ValidatorStatus | None]:
        return []

    async def health(self) -> Health:
        return Health(ok=True, validators=0, validators_up=0, localnet=True)

    # ------------------------------------------------------------------ the target index

    async def list_targets(self, status, limit, page_token, submitter, model_id, min_sequence) -> TargetPage:
        return self.index.list_targets(status, limit or DEFAULT_PAGE, page_token, submitter, model_id)

    async def get_target(self, target_id, min_sequence) -> TargetView:
        return self.index.get_target(target_id)

    async def nearest_targets(self, embedding, k) -> list[NearbyTarget]:
        return self.index.nearest_open_targets(embedding, k)

    async def model_manifests(self, model_ids, min_sequence) -> list[ModelManifest]:
        return self.index.model_manifests(model_ids)

    async def active_models(self, min_sequence) -> list[ModelView]:
        return self.index.active_models()

    async def get_model(self, model_id) -> ModelView:
        return self.index.get_model(model_id)

    async def leaderboard(self, limit) -> Leaderboard:
        return self.index.leaderboard(limit or DEFAULT_LEADERBOARD)

    async def index_status(self) -> IndexStatus:
        return self.index.status()

    # ------------------------------------------------------------------ blobs and scoring

    async def upload(self, kind: str, data: bytes) -> Uploaded:
        data = bytes(data)
        checksum = blake2b256(data)
        self.blobs[blob_url(checksum)] = data
        return Uploaded(url=blob_url(checksum), checksum=checksum, size=len(data))

    async def get_blob(self, checksum: bytes) -> bytes:
        found = self.blobs.get(blob_url(bytes(checksum)))
        if found is None:
            raise errors.BlobNotFound(checksum=bytes(checksum).hex())
        return found

    async def fetch(self, url: str, max_bytes: int, timeout_s: float) -> bytes:
        data = self.blobs.get(url)
        if data is None:
            raise errors.FetchError(url=url, reason="no such blob")
        if len(data) > max_bytes:
            raise errors.FetchTooLarge(url=url, size=len(data), max=max_bytes)
        return data

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        data = request.data if request.data is not None else self.blobs.get(request.data_url)
        if data is None:
            raise errors.DataUnavailable(url=str(request.data_url), reason="no such blob")
        target = as_embedding(request.target_embedding, self.sim.params.embedding_dim)
        return await self.scorer.score(request.manifests, data, target, request.seed)

    async def scoring_health(self) -> dict:
        return {"device": "cpu", "forward_passes": self.scorer.forward_passes}


class SimulatedClient(SomaClient):
    """The SDK over a `SimTransport`: what the scripted participants and their `World` call."""

    def __init__(self, genesis_config: GenesisConfig, blobs: dict[str, bytes] | None = None) -> None:
        self.chain = SimTransport(genesis_config, blobs)
        super().__init__(transport=self.chain)

    @property
    def sim(self) -> Simulator:
        return self.chain.sim

    @property
    def feed(self) -> list[tuple[Checkpoint, list[TransactionEffects]]]:
        return self.chain.feed

    @property
    def supplies(self) -> list[int]:
        return self.chain.supplies


def blob_url(checksum: bytes) -> str:
    return f"{BLOBS_URL}/{checksum.hex()}"


class Scorer:
    """The scoring service in process: weights from the transport's blob store, opened as the
    service opens them (soma_ray.model.pipeline: `ModelUnavailable` names the failing stage),
    loaded once per checksum; each (weights, data, seed) scored once."""

    def __init__(self, transport: SimTransport) -> None:
        self._transport = transport
        self._models: dict[bytes, object] = {}  # weights checksum → V1Model
        self._scores: dict[tuple[bytes, bytes, int], object] = {}  # (checksum, data hash, seed) → ModelScore
        self.forward_passes = 0

    async def model(self, manifest: ModelManifest):
        checksum = bytes(manifest.checksum)
        if checksum not in self._models:
            from soma_ray.model import V1Config
            from soma_ray.model.pipeline import download_weights, open_weights

            encrypted = await download_weights(manifest, self._transport.fetch, DOWNLOAD_TIMEOUT_S)
            self._models[checksum] = open_weights(manifest, encrypted, V1Config.small())
        return self._models[checksum]

    async def score(self, manifests: list[ModelManifest], data: bytes, target: np.ndarray, seed: int
                    ) -> ScoreResponse:
        from soma_ray.model.scoring import best_of, score_model

        if not manifests:
            raise errors.MalformedInput(reason="no manifests to score with")
        scores = []
        for manifest in manifests:
            key = (bytes(manifest.checksum), blake2b256(data), seed)
            if key not in self._scores:
                self._scores[key] = score_model(await self.model(manifest), data, seed)
                self.forward_passes += 1
            scores.append(self._scores[key])
        return ScoreResponse.of(best_of(scores, target))


# ---------------------------------------------------------------------------- genesis


def simulated_genesis(validators: int = VALIDATORS, epoch_duration_ms: int = 60_000
                      ) -> tuple[GenesisConfig, dict[str, bytes]]:
    """The localnet genesis (preset validator keys, early epoch changes allowed) with real
    weights for its models, as `soma start localnet` publishes them: each a seeded small V1
    model, encrypted under a fresh key; (the genesis, the blobs holding the weights)."""
    from soma_ray.model import genesis_model_weights
    from soma_ray.model.encryption import encrypt_bytes

    config = localnet_genesis_config([preset_keypair("validator", i).public_key for i in range(validators)],
                                     epoch_duration_ms, True, 0)
    blobs, models = {}, []
    for i, spec in enumerate(config.models):
        encrypted, key = encrypt_bytes(genesis_model_weights(i))
        checksum = blake2b256(encrypted)
        blobs[blob_url(checksum)] = encrypted
        manifest = WeightsManifest(url=blob_url(checksum), checksum=checksum, size=len(encrypted))
        models.append(msgspec.structs.replace(spec, weights_manifest=manifest, decryption_key=key))
    return msgspec.structs.replace(config, models=models), blobs


# ---------------------------------------------------------------------------- audits


class Audits:
    """Every validator's audit duty and the aggregator, in process: follows the client's sealed
    checkpoints (`challenge_changes`); each open challenge is audited once per validator key
    (`verify`), the signed votes tallied, and ResolveChallenge sent by validator 0's key once a
    verdict has the quorum. An epoch change re-tallies under the new committee."""

    def __init__(self, client: SimulatedClient, keypairs: list[Keypair]) -> None:
        self.client = client
        self.keypairs = keypairs
        system = client.sim.state.system()
        self.collector = VoteCollector(system.committee, system.parameters.quorum)
        self.audited: set[bytes] = set()
        self.resolved: dict[str, int] = {"ChallengerWins": 0, "MinerWins": 0}
        self.resolve_failures = 0
        self._cursor = 0

    async def run(self) -> None:
        """Follow the checkpoints sealed since the last run, then audit every open challenge
        not audited yet and resolve those whose votes reach the quorum."""
        self.follow()
        for challenge_id in await self.client.get_object_ids(CHALLENGE):
            if challenge_id not in self.audited:
                await self.vote(challenge_id)
        self.follow()

    def follow(self) -> None:
        while self._cursor < len(self.client.feed):
            changes = challenge_changes(*self.client.feed[self._cursor])
            self._cursor += 1
            for challenge_id in changes.resolved:
                self.collector.forget(challenge_id)
            if changes.epoch_changed:
                self.collector = self.collector.under(self.client.sim.state.system().committee)

    async def vote(self, challenge_id: bytes) -> None:
        """Each validator's audit and signed vote; ResolveChallenge once a verdict has the quorum."""
        client = self.client
        self.audited.add(challenge_id)
        challenge = await client.get_object(CHALLENGE, challenge_id, Challenge)
        for keypair in self.keypairs:
            finding = await client.verify(challenge.target_id)
            for model_id in finding.report:
                try:
                    await client.report_model(keypair, model_id)
                except (errors.AlreadyReported, errors.InvalidModelStatus, errors.ObjectNotFound):
                    pass
            self.collector.add(encode(sign_vote(keypair, challenge_id, finding.verdict)))
        certified = self.collector.certificate(challenge_id)
        if certified is None:
            return
        verdict, certificate = certified
        try:
            await client.execute(self.keypairs[0], ResolveChallenge(challenge_id, verdict, certificate))
            self.resolved[verdict] += 1
        except errors.ProtocolError:
            self.resolve_failures += 1


# ---------------------------------------------------------------------------- the game


class EpochFigures(NamedTuple):
    """What one epoch of the game did (counts within the epoch; threshold as the epoch ended)."""
    epoch: int
    hits: int  # revealed submissions (frauds included)
    honest_hits: int
    challenges_opened: int
    challenger_wins: int
    miner_wins: int
    slashes: int
    claims: int
    threshold: float
    checkpoints: int
    supply_ok: bool


class SimulatedGame:
    """A crowd (`roster` specs, built as `actors/crowd.py` builds them) playing on a
    `SimulatedClient`, one round at a time: the world read once, every participant steps, then
    the audits run."""

    def __init__(self, specs: list[Spec], seed: int, files: list[Path], false_alarm_every: int = 0,
                 rounds_per_epoch: int = 1, validators: int = VALIDATORS) -> None:
        config, blobs = simulated_genesis(validators)
        self.client = SimulatedClient(config, blobs)
        challengers = sum(s.role == "challenger" for s in specs)
        self.participants: list[Participant] = [
            build(spec, seed, files, challengers, false_alarm_every) for spec in specs]
        self.audits = Audits(self.client, [preset_keypair("validator", i) for i in range(validators)])
        self.world = World(self.client)
        self.rounds_per_epoch = rounds_per_epoch

    async def setup(self) -> None:
        """Fund every participant from the faucet."""
        await asyncio.gather(*(self.client.request_faucet(p.address, FUND_AMOUNT) for p in self.participants))

    async def round(self, mine: bool = True) -> None:
        world = self.world
        await world.refresh()
        world.mining = mine
        await asyncio.gather(*(p.step(world) for p in self.participants))
        await self.audits.run()

    async def play_epoch(self) -> EpochFigures:
        """The epoch's mining rounds, then quiet rounds until no challenge is open and the
        challengers found nothing more to check; then the epoch change."""
        before = self.stats()
        resolved_before = dict(self.audits.resolved)
        epoch, sealed = self.client.sim.state.system().epoch, len(self.client.feed)
        for _ in range(self.rounds_per_epoch):
            await self.round(mine=True)
        checked = None
        for _ in range(MAX_QUIET_ROUNDS):
            await self.round(mine=False)
            now = self.by_role("challenger").scores
            if now == checked and not self.client.sim.state.ids(CHALLENGE):
                break
            checked = now
        await self.client.advance_epoch()
        await self.round(mine=False)  # the claims and slashes the epoch change made possible
        after = self.stats()
        resolved = {v: n - resolved_before[v] for v, n in self.audits.resolved.items()}
        threshold = self.client.sim.state.system().target_state.distance_threshold / 1e9
        return EpochFigures(
            epoch, after.submissions - before.submissions, after.hits - before.hits,
            after.challenges_opened - before.challenges_opened, resolved["ChallengerWins"],
            resolved["MinerWins"], after.slashes - before.slashes, after.claims - before.claims,
            threshold, len(self.client.feed) - sealed,
            all(s == self.client.sim.params.genesis_supply for s in self.client.supplies[sealed:]))

    def by_role(self, role: str) -> Stats:
        return sum_stats(p for p in self.participants if p.role == role)

    def stats(self) -> Stats:
        return sum_stats(self.participants)


def sum_stats(participants: Iterable[Participant]) -> Stats:
    total = Stats()
    for participant in participants:
        total.add(participant.stats)
    return total
