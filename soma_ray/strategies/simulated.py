"""The game in one process: the scripted participants (this package) played against the pure
state machine (`protocol.sim.Simulator`), with no Ray, no consensus and no HTTP.

    game = SimulatedGame(roster(crowd_mix(8, 0.25, LAZY_RATE), 2), seed=0, files=corpus_files())
    await game.setup()                 # genesis weights published, participants funded
    for _ in range(4):
        epoch = await game.play_epoch()  # mining rounds, quiet rounds until audits are done

`SimulatedClient` is a second client of the SDK's surface: the participant calls of
`soma_ray.participant` (submit_data, initiate_challenge, verify, claim_rewards) run unchanged on
it, over in-process stand-ins for what `SomaClient` reaches over the network:

- the chain: each transaction is signed with the key's next nonce and admitted into the
  Simulator's mempool (admission errors raised as the network's are); a checkpoint of everything
  pending is sealed once every caller waits on one (the event loop's next turn), and `execute`
  returns the effects or raises the typed error, as `SomaClient.execute` does once a checkpoint
  certified them. So a reveal is sent only after its commit is in a checkpoint, as on a network;
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

from soma_ray.node.audit import VoteCollector, challenge_changes, sign_vote
from soma_ray.node.target_index import MAX_PAGE, ManifestView, TargetIndex, TargetPage, TargetView
from soma_ray.client import SomaClient
from soma_ray.participant import ParticipantCalls, as_id
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import blake2b256, encode
from soma_ray.protocol.genesis import GenesisConfig, genesis, localnet_genesis_config, preset_keypair
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import CHALLENGE, SUBMISSION, TARGET
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.targets import as_embedding
from soma_ray.protocol.types import (
    Account, Challenge, Checkpoint, Faucet, ResolveChallenge, Submission, SystemState, Target,
    TransactionEffects, TransactionKind, WeightsManifest,
)
from soma_ray.strategies.decide import FUND_AMOUNT
from soma_ray.strategies.participants import Participant, Stats, World
from soma_ray.strategies.roster import Spec, build
from soma_ray.wire import EpochInfo, ScoreResponse, epoch_info

# Where the in-process blob store's blobs are named: BLOBS_URL/<checksum hex>.
BLOBS_URL = "sim://blobs"
VALIDATORS = 4
# Quiet rounds after an epoch's mining at most, while challenges resolve.
MAX_QUIET_ROUNDS = 50


class SimulatedClient(ParticipantCalls):
    """The SDK calls the scripted participants and their `World` make, answered in process."""

    def __init__(self, genesis_config: GenesisConfig, blobs: dict[str, bytes] | None = None) -> None:
        self.sim = Simulator(genesis_config)
        self.index = TargetIndex(genesis(genesis_config))
        self.blobs: dict[str, bytes] = dict(blobs or {})
        self.scorer = Scorer(self)
        self.feed: list[tuple[Checkpoint, list[TransactionEffects]]] = []  # every sealed checkpoint
        self.supplies: list[int] = []  # the total supply after each
        self._waiting: dict[bytes, asyncio.Future] = {}  # signed bytes in the mempool → their effects
        self._sealing: asyncio.Handle | None = None

    # ------------------------------------------------------------------ reads (the chain's latest)

    async def get_account(self, address: bytes) -> Account:
        return self.sim.state.account(bytes(address))

    async def get_balance(self, address: bytes) -> int:
        return (await self.get_account(address)).balance

    async def get_system_state(self) -> SystemState:
        return self.sim.state.system()

    async def get_epoch(self) -> EpochInfo:
        return epoch_info(self.sim.state.system())

    async def get_object(self, tag: bytes, ident: bytes, type_):
        return self.sim.state.get(tag, bytes(ident), type_)

    async def get_object_ids(self, tag: bytes) -> list[bytes]:
        return list(self.sim.state.ids(tag))

    # ------------------------------------------------------------------ the target index

    async def list_targets(self, status: str | None = "open", limit: int | None = None,
                           submitter: str | bytes | None = None, model_id: str | bytes | None = None,
                           page_token: str | None = None) -> TargetPage:
        return self.index.list_targets(
            status, MAX_PAGE if limit is None else limit, page_token,
            None if submitter is None else as_id(submitter, "an address"),
            None if model_id is None else as_id(model_id, "a model id"))

    # Every target matching, page after page of `list_targets`: the SDK's own loop.
    get_targets = SomaClient.get_targets

    async def get_target(self, target_id: str | bytes) -> TargetView:
        return self.index.get_target(as_id(target_id, "a target id"))

    async def get_model_manifests(self, target_or_model_ids) -> list[ManifestView]:
        ids = getattr(target_or_model_ids, "model_ids", target_or_model_ids)
        return self.index.model_manifests([as_id(i, "a model id") for i in ids])

    # ------------------------------------------------------------------ blobs and scoring

    async def upload(self, data: bytes, kind: str = "data") -> str:
        data = bytes(data)
        url = blob_url(blake2b256(data))
        self.blobs[url] = data
        return url

    def download(self, url: str, size: int, checksum: bytes) -> bytes:
        """The blob at `url`, which must be `size` bytes with BLAKE2b-256 `checksum` (FetchError)."""
        data = self.blobs.get(url)
        if data is None:
            raise errors.FetchError(url=url, reason="no such blob")
        if len(data) != size or blake2b256(data) != bytes(checksum):
            raise errors.FetchError(url=url, reason=f"not the {size} bytes the chain names (size or checksum differs)")
        return data

    async def fetch_submission_data(self, target_id: bytes, timeout_s: float | None = None) -> bytes:
        target = self.sim.state.get(TARGET, bytes(target_id), Target)
        if target is None:
            raise errors.ObjectNotFound(kind="target", id=bytes(target_id))
        submission = None if target.submission_id is None else (
            self.sim.state.get(SUBMISSION, target.submission_id, Submission))
        if submission is None or submission.revealed is None:
            raise errors.NoRevealedSubmission(target_id=bytes(target_id))
        revealed = submission.revealed
        return self.download(revealed.data_url, revealed.data_size, revealed.data_hash)

    async def score(self, data_url: str | None, manifests, target_embedding, data: bytes | None = None,
                    seed: int = 0) -> ScoreResponse:
        if data is None:
            data = self.blobs.get(data_url)
            if data is None:
                from serve.errors import DataUnavailable  # pure: the scoring service's errors

                raise DataUnavailable(url=str(data_url), reason="no such blob")
        dim = self.sim.params.embedding_dim
        return self.scorer.score(list(manifests), bytes(data), as_embedding(target_embedding, dim), seed)

    # ------------------------------------------------------------------ transactions

    async def execute(self, keypair: Keypair, kind: TransactionKind,
                      max_fee: int | None = None) -> TransactionEffects:
        """Sign and admit `kind` (the admission's typed error is raised), wait for the checkpoint
        that executes it, and return its effects (or raise its typed error: the fee is charged)."""
        data = self.sim.submit_kind(keypair, kind, max_fee)
        future = asyncio.get_running_loop().create_future()
        self._waiting[data] = future
        if self._sealing is None:
            self._sealing = asyncio.get_running_loop().call_soon(self._seal_pending)
        effects = await future
        if effects.error is not None:
            raise errors.error_from_struct(effects.error)
        return effects

    async def request_faucet(self, recipient: bytes, amount: int, timeout_s: float | None = None
                             ) -> TransactionEffects:
        """Coins from the emission pool, signed by validator 0's key (the localnet faucet's way)."""
        return await self.execute(preset_keypair("validator", 0), Faucet(bytes(recipient), amount))

    async def advance_epoch(self) -> int:
        """End the epoch now (with whatever is pending); returns the new epoch."""
        self._seal(*self.sim.advance_epoch())
        return self.sim.state.system().epoch

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
                future.set_result(effect)


def blob_url(checksum: bytes) -> str:
    return f"{BLOBS_URL}/{checksum.hex()}"


class Scorer:
    """The scoring service in process: weights from the client's blob store, checked and
    decrypted as the service does (`ModelUnavailable` naming the failing stage), loaded once per
    checksum; each (weights, data, seed) scored once."""

    def __init__(self, client: SimulatedClient) -> None:
        self._client = client
        self._models: dict[bytes, object] = {}  # weights checksum → V1Model
        self._scores: dict[tuple[bytes, bytes, int], object] = {}  # (checksum, data hash, seed) → ModelScore
        self.forward_passes = 0

    def model(self, manifest: ManifestView):
        checksum = bytes(manifest.checksum)
        if checksum not in self._models:
            from serve.errors import ModelUnavailable  # pure: the scoring service's errors
            from soma_ray.model import V1Config, load_weights
            from soma_ray.model.encryption import decrypt_bytes
            from soma_ray.model.errors import ModelError

            try:
                encrypted = self._client.download(manifest.url, manifest.size, checksum)
                self._models[checksum] = load_weights(decrypt_bytes(encrypted, manifest.decryption_key),
                                                      V1Config.small())
            except errors.FetchError as error:
                raise ModelUnavailable(model_id=manifest.model_id, stage="download", reason=error.reason) from None
            except ModelError as error:
                raise ModelUnavailable(model_id=manifest.model_id, stage="load", reason=str(error)) from None
        return self._models[checksum]

    def score(self, manifests: list[ManifestView], data: bytes, target: np.ndarray, seed: int) -> ScoreResponse:
        from soma_ray.model.scoring import best_of, score_model

        if not manifests:
            raise errors.MalformedInput(reason="no manifests to score with")
        scores = []
        for manifest in manifests:
            key = (bytes(manifest.checksum), blake2b256(data), seed)
            if key not in self._scores:
                self._scores[key] = score_model(self.model(manifest), data, seed)
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
