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
- the audits (`Audits`): every fill is re-scored by the validator `node.sampling.audit_order`
  assigns (the SDK's `verify`, the pure decision of `node.audit`), which opens the challenge
  itself when the claims do not hold; every open challenge is audited by each validator key, the
  votes signed and tallied by `VoteCollector`, and `ResolveChallenge` sent with the certificate
  once a verdict has the quorum, as the audit workers and the aggregator (actors/) do;
- the owner–miner pair (with fraudulent miners): a fourth genesis model owned by `PAIR_OWNER`,
  whose weights the pair removes from the store after its fill (`pair_model_of`).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterable, NamedTuple

import msgspec
import numpy as np

from soma_ray.client import DOWNLOAD_TIMEOUT_S, SomaClient
from soma_ray.node.audit import VoteCollector, challenge_changes, sign_vote
from soma_ray.node.sampling import (
    Coverage, Fill, SampledRecord, SamplingBook, audit_order, coverage, fills_in, in_window,
)
from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.node.target_index import TargetIndex
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import blake2b256, encode
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.genesis import GenesisConfig, genesis, localnet_genesis_config, preset_keypair
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import CHALLENGE, MODEL, SUBMISSION, TARGET
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.targets import as_embedding
from soma_ray.protocol.types import (
    Challenge, Checkpoint, Faucet, Model, ResolveChallenge, Submission, Target, Transaction, TransactionEffects,
    WeightsManifest,
)
from soma_ray.strategies.decide import FUND_AMOUNT
from soma_ray.strategies.participants import PairModel, Participant, Stats, World
from soma_ray.strategies.roster import Spec, build
from soma_ray.tickets import check_request, now_ms
from soma_ray.wire import (
    DEFAULT_LEADERBOARD, DEFAULT_PAGE, CheckpointReply, EpochInfo, EpochReply, Health, IndexStatus, Leaderboard, ModelManifest, ModelView,
    NearbyTarget, ScoreRequest, ScoreResponse, TargetPage, TargetView, TicketRequest, Uploaded, UploadTicket,
    epoch_info, MAX_PAGE,
)

# Where the in-process blob store's blobs are named: BLOBS_URL/<checksum hex>.
BLOBS_URL = "http://sim.invalid/blobs"  # http(s): the chain refuses other URLs (issue 18)
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
        return await self.submit(encode(sign_transaction(faucet, tx, self.sim.chain_id)))

    def _seal_pending(self) -> None:
        self._sealing = None
        if not self.sim.mempool:
            return
        try:
            self._seal(*self.sim.make_checkpoint())
            self._answer_left_out()
        except Exception as error:  # noqa: BLE001 - every waiting caller sees the failure
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(error)
            self._waiting.clear()

    def _answer_left_out(self) -> None:
        """As a validator's proposer: what the checkpoint left out and can never execute is
        refused to its caller; what still may (a later nonce) waits for the next checkpoint."""
        pooled = set(self.sim.mempool)
        for item in self.sim.left_out:
            future = None if item.entry in pooled else self._waiting.pop(item.entry, None)
            if future is not None and not future.done():
                future.set_result(SubmitReply.refused(item.error))
        if self.sim.mempool and self._sealing is None:
            self._sealing = asyncio.get_running_loop().call_soon(self._seal_pending)

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

    async def object_ids(self, tag: bytes, limit: int | None, after: bytes | None) -> list[bytes]:
        ids = [i for i in self.sim.state.ids(tag) if after is None or i > bytes(after)]
        return ids[:limit or MAX_PAGE]

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

    async def list_submissions(self, miner, target_id, status, limit, page_token, min_sequence):
        return self.index.list_submissions(miner, target_id, status, limit or DEFAULT_PAGE, page_token)

    async def get_submission(self, submission_id, min_sequence):
        return self.index.get_submission(submission_id)

    async def list_challenges(self, submission_id, challenger, target_id, status, limit, page_token, min_sequence):
        return self.index.list_challenges(submission_id, challenger, target_id, status, limit or DEFAULT_PAGE,
                                          page_token)

    async def get_challenge(self, challenge_id, min_sequence):
        return self.index.get_challenge(challenge_id)

    # ------------------------------------------------------------------ blobs and scoring

    async def upload_ticket(self, request: TicketRequest) -> UploadTicket:
        """Any signed request of a funded account gets a ticket (no quotas in process)."""
        address = check_request(request, self.sim.state.system().chain_id, self.sim.params.model_max_weight_size,
                                now_ms())
        return UploadTicket(address, request.kind, request.size, request.expires_ms, request.nonce, b"")

    async def upload(self, kind: str, data: bytes, ticket: UploadTicket) -> Uploaded:
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
        manifests = request.manifests or self.index.model_manifests(request.model_ids)
        return await self.scorer.score(manifests, data, target, request.seed)

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
    loaded once per checksum; each (weights, data, seed) scored once.

    The weights are looked up at their URL on every use and reloaded when the bytes there are
    not the ones loaded (removed or replaced, as an owner–miner pair does after its fill): each
    validator's audit then meets the weights as they are now, as a scoring replica that had not
    cached them would."""

    def __init__(self, transport: SimTransport) -> None:
        self._transport = transport
        self._models: dict[bytes, tuple[bytes, object]] = {}  # weights checksum → (bytes loaded, V1Model)
        self._scores: dict[tuple[bytes, bytes, int], object] = {}  # (checksum, data hash, seed) → ModelScore
        self.forward_passes = 0

    async def model(self, manifest: ModelManifest):
        checksum = bytes(manifest.checksum)
        held = self._models.get(checksum)
        if held is not None and self._transport.blobs.get(manifest.url) is held[0]:
            return held[1]
        from soma_ray.model import V1Config
        from soma_ray.model.pipeline import download_weights, open_weights

        self._models.pop(checksum, None)
        encrypted = await download_weights(manifest, self._transport.fetch, DOWNLOAD_TIMEOUT_S)
        self._models[checksum] = (encrypted, open_weights(manifest, encrypted, V1Config.small()))
        return self._models[checksum][1]

    async def score(self, manifests: list[ModelManifest], data: bytes, target: np.ndarray, seed: int
                    ) -> ScoreResponse:
        from soma_ray.model.scoring import best_of, score_model

        if not manifests:
            raise errors.MalformedInput(reason="no manifests to score with")
        scores = []
        for manifest in manifests:
            model = await self.model(manifest)  # the weights as they are now, first
            key = (bytes(manifest.checksum), blake2b256(data), seed)
            if key not in self._scores:
                # Let the loop seal what waits before each forward pass: the work is CPU-bound and
                # would otherwise hold every caller's checkpoint (and its finality clock) back.
                await asyncio.sleep(0)
                self._scores[key] = score_model(model, data, seed)
                self.forward_passes += 1
            scores.append(self._scores[key])
        return ScoreResponse.of(best_of(scores, target))


# ---------------------------------------------------------------------------- genesis


def simulated_genesis(validators: int = VALIDATORS, epoch_duration_ms: int = 60_000, pair: bool = False
                      ) -> tuple[GenesisConfig, dict[str, bytes]]:
    """The localnet genesis (preset validator keys, early epoch changes allowed) with real
    weights for its models, as `soma start localnet` publishes them: each a seeded small V1
    model, encrypted under a fresh key; (the genesis, the blobs holding the weights). With
    `pair`, one more model owned by PAIR_OWNER (the owner–miner pair's: `pair_model_weights`)."""
    from soma_ray.model import genesis_model_weights
    from soma_ray.model.encryption import encrypt_bytes

    config = localnet_genesis_config([preset_keypair("validator", i).public_key for i in range(validators)],
                                     epoch_duration_ms, True, 0)
    specs = list(config.models)
    weights = [genesis_model_weights(i) for i in range(len(specs))]
    if pair:
        embedding = np.random.default_rng(PAIR_SEED).standard_normal(config.parameters.embedding_dim)
        specs.append(msgspec.structs.replace(specs[0], owner=PAIR_OWNER.address,
                                             embedding=embedding.astype("<f4").tobytes()))
        weights.append(pair_model_weights())
    blobs, models = {}, []
    for spec, plain in zip(specs, weights):
        encrypted, key = encrypt_bytes(plain)
        checksum = blake2b256(encrypted)
        blobs[blob_url(checksum)] = encrypted
        manifest = WeightsManifest(url=blob_url(checksum), checksum=checksum, size=len(encrypted))
        models.append(msgspec.structs.replace(spec, weights_manifest=manifest, decryption_key=key))
    return msgspec.structs.replace(config, models=models), blobs


# The owner–miner pair's model: its owner, and a seeded small V1 model whose predictions are made
# over-confident (the output layer ×8), so that its loss (about 13 nats) never wins honest data:
# honest miners never claim it, and only the pair's own claims depend on its weights.
PAIR_OWNER = preset_keypair("pair-owner", 0)
PAIR_SEED = 7_100


def pair_model_weights() -> bytes:
    import torch

    from soma_ray.model import V1Config
    from soma_ray.model.weights import seeded_model, weights_bytes

    model = seeded_model(V1Config.small(), PAIR_SEED)
    with torch.no_grad():
        model.predictor.weight.mul_(8)
    return weights_bytes(model)


def pair_model_of(client: SimulatedClient) -> PairModel:
    """The pair's model in the client's chain, whose weights the owner removes from the store."""
    model = next(m for m in client.sim.state.values(MODEL, Model) if m.owner == PAIR_OWNER.address)

    async def remove() -> None:
        client.chain.blobs.pop(model.weights_manifest.url, None)

    return PairModel(model.id, remove)


# ---------------------------------------------------------------------------- audits


class Audits:
    """Every validator's audit duty and the aggregator, in process, as the audit workers and the
    aggregator (actors/) do it:

    - sampling: every fill of the checkpoints sealed since the last run is re-scored (`verify`)
      by the validator `node.sampling.audit_order` puts first (the next of the order that is not
      in `down` when it is: a fallback), which opens the challenge itself (its own key, the least bond) when the claims do
      not hold; each validator's `SamplingBook` keeps coverage and latency (simulated time);
    - challenges: each open challenge is audited once per validator key, the signed votes
      tallied, and ResolveChallenge sent by validator 0's key once a verdict has the quorum. An
      epoch change re-tallies under the new committee."""

    def __init__(self, client: SimulatedClient, keypairs: list[Keypair], down: Iterable[int] = ()) -> None:
        self.client = client
        self.keypairs = keypairs
        self.down = set(down)
        system = client.sim.state.system()
        self.collector = VoteCollector(system.committee, system.parameters.quorum, chain_id=system.chain_id)
        self.audited: set[bytes] = set()
        self.resolved: dict[str, int] = {"ChallengerWins": 0, "MinerWins": 0}
        self.resolve_failures = 0
        self.books = [SamplingBook() for _ in keypairs]
        self.sampling_challenges = 0  # challenges the validators opened after a sampling audit
        self.challenge_failures = 0
        self._validator = {k.address: i for i, k in enumerate(keypairs)}
        self._to_sample: list[tuple[int, Fill, bytes, str]] = []  # (validator, fill, target, role)
        self._cursor = 0

    async def run(self) -> None:
        """Follow the checkpoints sealed since the last run, sample their fills, then audit every
        open challenge not audited yet and resolve those whose votes reach the quorum."""
        self.follow()
        await self.sample()
        for challenge_id in await self.client.get_object_ids(CHALLENGE):
            if challenge_id not in self.audited:
                await self.vote(challenge_id)
        self.follow()

    def follow(self) -> None:
        state = self.client.sim.state
        while self._cursor < len(self.client.feed):
            checkpoint, effects = self.client.feed[self._cursor]
            self._cursor += 1
            changes = challenge_changes(checkpoint, effects)
            for challenge_id in changes.resolved:
                self.collector.forget(challenge_id)
            if changes.epoch_changed:
                self.collector = self.collector.under(state.system().committee)
            fills = fills_in(checkpoint, effects)
            assigned: dict[int, list[bytes]] = {}
            committee = state.system().committee
            for fill in fills:
                submission = state.get(SUBMISSION, fill.submission_id, Submission)
                if submission is None:  # undone already: nobody needs to audit it
                    continue
                order = [self._validator.get(committee.members[i].address)
                         for i in audit_order(submission.target_id, fill.epoch, committee)]
                up = [v for v in order if v is not None and v not in self.down]
                if not up:
                    continue
                auditor = up[0]
                role = "assignee" if auditor == order[0] else "fallback"
                assigned.setdefault(auditor, []).append(submission.target_id)
                self._to_sample.append((auditor, fill, submission.target_id, role))
            for index, book in enumerate(self.books):
                book.followed(checkpoint.sequence, len(fills), assigned.get(index, []))
                book.advance()

    async def sample(self) -> None:
        """Every pending fill re-scored by its auditor (a challenge opened where the claims do
        not hold)."""
        pending, self._to_sample = self._to_sample, []
        for index, fill, target_id, role in pending:
            record = await self._sample(index, fill, target_id, role)
            self.books[index].settle(fill.sequence, target_id, record)
            self.books[index].advance()

    async def _sample(self, index: int, fill: Fill, target_id: bytes, role: str) -> SampledRecord:
        client, sim = self.client, self.client.sim
        keypair = self.keypairs[index]
        target = sim.state.get(TARGET, target_id, Target)
        epoch = sim.state.system().epoch

        def record(outcome, finding_time: bool = False, challenge_id: bytes | None = None) -> SampledRecord:
            return SampledRecord(target_id, fill.submission_id, fill.sequence, fill.epoch, outcome, role,
                                 sim.timestamp_ms - fill.timestamp_ms if finding_time else None,
                                 epoch if finding_time else None, challenge_id)

        if target is None or target.submission_id != fill.submission_id or target.status != "Filled":
            return record("moot")
        if not in_window(fill.epoch, epoch):
            return record("missed")
        finding = await client.verify(target_id)
        await self._report(keypair, finding.report)
        challenge_id = None
        if finding.fraud is not None:
            try:
                challenge_id = await client.initiate_challenge(keypair, target_id, finding.fraud)
                self.sampling_challenges += 1
            except errors.ProtocolError:
                self.challenge_failures += 1
        return record(finding.fraud or "holds", True, challenge_id)

    async def _report(self, keypair: Keypair, models: list[bytes]) -> None:
        for model_id in models:
            try:
                await self.client.report_model(keypair, model_id)
            except (errors.AlreadyReported, errors.InvalidModelStatus, errors.ObjectNotFound):
                pass

    async def vote(self, challenge_id: bytes) -> None:
        """Each validator's audit and signed vote; ResolveChallenge once a verdict has the quorum."""
        client = self.client
        self.audited.add(challenge_id)
        challenge = await client.get_object(CHALLENGE, challenge_id, Challenge)
        for keypair in self.keypairs:
            finding = await client.verify(challenge.target_id)
            await self._report(keypair, finding.report)
            self.collector.add(encode(sign_vote(keypair, challenge_id, finding.verdict, self.client.sim.chain_id)))
        certified = self.collector.certificate(challenge_id)
        if certified is None:
            return
        verdict, certificate = certified
        try:
            await client.execute(self.keypairs[0], ResolveChallenge(challenge_id, verdict, certificate))
            self.resolved[verdict] += 1
        except errors.ProtocolError:
            self.resolve_failures += 1

    def coverage(self) -> Coverage:
        return coverage([book.ledger for book in self.books])


# ---------------------------------------------------------------------------- the game


class EpochFigures(NamedTuple):
    """What one epoch of the game did (counts within the epoch; threshold as the epoch ended)."""
    epoch: int
    hits: int  # revealed submissions (frauds included)
    honest_hits: int
    challenges_opened: int  # by the challengers
    challenger_wins: int
    miner_wins: int
    slashes: int
    claims: int
    threshold: float
    checkpoints: int
    supply_ok: bool
    sampled: int = 0  # fills the validators' sampling audits settled
    validator_challenges: int = 0  # challenges the validators opened after a sampling audit


class FraudRow(NamedTuple):
    injected: int
    caught: int  # slashed: the submission undone by a ChallengerWins
    standing: int  # neither (claimed, or still standing when the game ended)


class GameReport(NamedTuple):
    """The game's outcome: frauds by label (`decide.fraud_label`: kind, and a shave's margin),
    what escaped, truthful miners slashed, sampling coverage and latency."""
    frauds: dict[str, FraudRow]
    injected: int  # frauds (claims within the tolerance are not)
    slashed: int
    escaped: int  # frauds not slashed by the end
    within_tolerance_slashed: int  # claims within the tolerance slashed all the same (none expected)
    honest_slashed: int  # honest and lazy miners' submissions undone
    coverage: Coverage

    @property
    def ok(self) -> bool:
        return self.escaped == 0 and self.honest_slashed == 0


class SimulatedGame:
    """A crowd (`roster` specs, built as `actors/crowd.py` builds them) playing on a
    `SimulatedClient`, one round at a time: the world read once, every participant steps, then
    the audits run (sampling audits of every fill, and the challenges). With fraudulent miners,
    the genesis holds the owner–miner pair's model (`simulated_genesis(pair=True)`)."""

    def __init__(self, specs: list[Spec], seed: int, files: list[Path], false_alarm_every: int = 0,
                 rounds_per_epoch: int = 1, validators: int = VALIDATORS, down: Iterable[int] = (),
                 training=None, train_steps: int | None = None) -> None:
        pair = any(s.role == "fraudulent" for s in specs)
        config, blobs = simulated_genesis(validators, pair=pair)
        self.client = SimulatedClient(config, blobs)
        self.pair = pair_model_of(self.client) if pair else None
        challengers = sum(s.role == "challenger" for s in specs)
        if training is None and any(s.role == "trainer" for s in specs):
            from soma_ray.training.fine_tune import InProcessTraining  # trainers fine-tune in process

            training = InProcessTraining()
        self.participants: list[Participant] = [
            build(spec, seed, files, challengers, false_alarm_every, self.pair, training, train_steps)
            for spec in specs]
        self.audits = Audits(self.client, [preset_keypair("validator", i) for i in range(validators)], down)
        self.world = World(self.client)
        self.rounds_per_epoch = rounds_per_epoch

    async def setup(self) -> None:
        """Fund every participant from the faucet (a trainer: its model's stake too), then let
        those with a setup (trainers: their model) do it."""
        await asyncio.gather(*(self.client.request_faucet(p.address, getattr(p, "funding", FUND_AMOUNT))
                               for p in self.participants))
        await asyncio.gather(*(p.setup(self.client) for p in self.participants if hasattr(p, "setup")))

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
        sampled_before = self.audits.coverage().assigned
        opened_before = self.audits.sampling_challenges
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
            all(s == self.client.sim.params.genesis_supply for s in self.client.supplies[sealed:]),
            self.audits.coverage().assigned - sampled_before, self.audits.sampling_challenges - opened_before)

    def by_role(self, role: str) -> Stats:
        return sum_stats(p for p in self.participants if p.role == role)

    def stats(self) -> Stats:
        return sum_stats(self.participants)

    def report(self) -> GameReport:
        """Each injected fraud as the chain ends the game: slashed (its submission undone) or
        not; truthful miners' slashes; the sampling audits' coverage."""
        state = self.client.sim.state
        rows: dict[str, list[int]] = {}
        injected = slashed = within_slashed = 0
        for fraud in self.by_role("fraudulent").frauds:
            target = state.get(TARGET, fraud.target_id, Target)
            undone = (state.get(SUBMISSION, fraud.submission_id, Submission) is None
                      and (target is None or target.submission_id != fraud.submission_id))
            row = rows.setdefault(fraud.label, [0, 0, 0])
            row[0] += 1
            row[1 if undone else 2] += 1
            injected += fraud.is_fraud
            slashed += fraud.is_fraud and undone
            within_slashed += (not fraud.is_fraud) and undone
        honest = self.by_role("honest").slashes + self.by_role("lazy").slashes
        return GameReport({label: FraudRow(*row) for label, row in sorted(rows.items())}, injected, slashed,
                          injected - slashed, within_slashed, honest, self.audits.coverage())


def sum_stats(participants: Iterable[Participant]) -> Stats:
    total = Stats()
    for participant in participants:
        total.add(participant.stats)
    return total
