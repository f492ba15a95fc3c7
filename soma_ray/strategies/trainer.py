"""Trainers: model owners who train (docs/game.md, "Trainers").

Each trainer owns a model, created at setup with its own stake and commission. Every epoch it
reveals the weights it committed the epoch before, then fine-tunes its current weights on the
data of the hits its model won (downloaded from the data URLs through the SDK, as anyone can)
plus chunks of its own niche corpus (`NICHES`: parts of the standard library, so that the models
drift apart in embedding space), computes the new weights' embedding on its niche sample,
uploads them encrypted and commits them — through the SDK like every other participant. Its
first weights are the network model that predicts its niche best, downloaded with the
`soma model train --from` function (`soma_ray.training.from_network.fetch_model_weights`).

The decisions are pure functions here (`trainer_moves`, `won_hits`, `start_choice`, `niche_of`);
the training is one call on a `Training` (soma_ray/training/fine_tune.py: in process for
`soma simulate`, a Ray Train job in a localnet's crowd).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple, Protocol, Sequence

import numpy as np

from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.models import awaited_commit, reveal_allowed, reveal_missed
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.state import MODEL
from soma_ray.protocol.types import Model
from soma_ray.strategies.corpus import CHUNK_BYTES, Corpus
from soma_ray.strategies.participants import Participant, World
from soma_ray.wire import TargetView

# The trainers' corpora, dealt in this order (soma_ray/heldout.py cuts the stdlib into these
# kinds; the held-out slice of each is left out). `library`, the miners' data, comes last.
NICHES = ("tests", "docs", "data", "library")
# A trainer's model: its stake (the genesis models hold 1,000 SOMA; target selection weighs
# distance² / stake) and commission; its faucet grant covers the stake and a year of fees.
TRAINER_STAKE = 900 * SHANNONS_PER_SOMA
TRAINER_FUNDING = 1_000 * SHANNONS_PER_SOMA  # the localnet faucet's most per request
TRAINER_COMMISSION_BPS = 1_000
# What one epoch trains on: every new hit its model won (at most MAX_HIT_ITEMS) and this many
# chunks (1 KiB) of its niche.
NICHE_CHUNKS = 16
MAX_HIT_ITEMS = 64
HIT_STATUSES = ("filled", "claimable", "settled")


class FineTuneFailed(RuntimeError):
    """A fine-tune that did not give weights (its job failed or ran out of time): the trainer
    counts it and tries again the next epoch."""


class Training(Protocol):
    """The thin call a trainer makes: fine-tune (FineTuneFailed when it gives no weights), and the
    embedding of the result."""

    async def fine_tune(self, weights: bytes, documents: list[bytes], steps: int, seed: int) -> bytes: ...

    async def embedding(self, weights: bytes, sample: list[bytes]) -> bytes: ...


class Published(NamedTuple):
    """A commit awaiting its reveal: what the reveal needs."""
    decryption_key: bytes
    embedding: bytes


# ---------------------------------------------------------------------------- decisions (pure)

def niche_of(index: int) -> str:
    return NICHES[index % len(NICHES)]


def trainer_moves(status: str, awaited_epoch: int | None, holds_secret: bool, epoch: int,
                  trained_epoch: int | None) -> tuple[str, ...]:
    """What a trainer does this step, in order, given its model's status, the epoch of the
    commit the chain awaits the reveal of (None: none; the chain's word, not the epoch the
    trainer began training in: a fine-tune may end, and its commit land, in the next epoch),
    whether it holds that commit's secret, the epoch and the epoch it last trained in:

    - "reveal": the commit is due (the epoch after it);
    - "forget": it holds a secret the chain no longer awaits (the reveal's epoch passed: the
      model was slashed or the update dropped);
    - "train": fine-tune and commit, once an epoch, when the chain takes a commit (a Created
      model, or an Active one without a pending update, counting this step's reveal)."""
    moves: list[str] = []
    if holds_secret:
        if awaited_epoch is not None and reveal_allowed(awaited_epoch, epoch):
            moves.append("reveal")
            status, awaited_epoch = "Active", None
        elif awaited_epoch is None or reveal_missed(awaited_epoch, epoch):
            moves.append("forget")
    if trained_epoch != epoch and awaited_epoch is None and status in ("Created", "Active"):
        moves.append("train")
    return tuple(moves)


def won_hits(targets: Sequence[TargetView], model_id: bytes, used: set[bytes]) -> list[TargetView]:
    """Hits its model won that it has not trained on: targets with a standing revealed
    submission naming `model_id`, not in `used`, in the given order, each once."""
    found: dict[bytes, TargetView] = {}
    for target in targets:
        if (target.status in HIT_STATUSES and target.winning_model_id == model_id
                and target.submission_id is not None and target.id not in used):
            found.setdefault(target.id, target)
    return list(found.values())


def start_choice(model_ids: Sequence[bytes], losses: Sequence[float]) -> bytes:
    """The model to start from: the lowest loss on the trainer's niche sample (ties: the lower
    id); a model the scoring could not use has loss inf or NaN and is never chosen."""
    usable = [(loss, model_id) for model_id, loss in zip(model_ids, losses) if np.isfinite(loss)]
    if not usable:
        raise ValueError("no usable model to start from")
    return min(usable)[1]


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**31)


# ---------------------------------------------------------------------------- the participant

class Trainer(Participant):
    """A model owner who trains its model every epoch (see the module docstring). `trained_on`
    keeps every document it trained on (the central model of the study trains on their union)."""
    role = "trainer"

    def __init__(self, keypair: Keypair, seed: int, index: int, files: list[Path], training: Training,
                 sample: list[bytes], steps: int, niche_chunks: int = NICHE_CHUNKS,
                 stake: int = TRAINER_STAKE, commission_bps: int = TRAINER_COMMISSION_BPS) -> None:
        super().__init__(keypair, seed)
        self.index = index
        self.niche = niche_of(index)
        self.corpus = Corpus(files, seed)
        self.training = training
        self.sample = sample  # its embedding's sample: windows of its niche
        self.steps = steps
        self.niche_chunks = niche_chunks
        self.stake = stake
        self.commission_bps = commission_bps
        self.funding = max(TRAINER_FUNDING, stake + SHANNONS_PER_SOMA)
        self.model_id: bytes | None = None
        self.base_model: bytes | None = None  # the network model its first weights came from
        self.weights: bytes | None = None  # the current weights: the last committed
        self.published: Published | None = None
        self.trained_epoch: int | None = None
        self.used: set[bytes] = set()  # targets whose data it trained on (or could not fetch)
        self.trained_on: list[bytes] = []

    async def setup(self, client) -> None:
        """Create the model (its stake and commission), once."""
        if self.model_id is None:
            self.model_id = await client.create_model(self.keypair, self.commission_bps, self.stake)

    async def act(self, world: World) -> None:
        client = world.client
        await self.setup(client)
        model = await client.get_object(MODEL, self.model_id, Model)
        if model is None:
            return
        awaited = awaited_commit(model)
        awaited_epoch = None if awaited is None else awaited.commit_epoch
        for move in trainer_moves(model.status, awaited_epoch, self.published is not None, world.epoch,
                                  self.trained_epoch):
            if move == "reveal":
                await self.reveal(client)
            elif move == "forget":
                self.published = None
            else:
                await self.train(world)

    async def reveal(self, client) -> None:
        # The secret is kept until the reveal is on chain: a failed reveal is tried again next turn.
        secret = self.published
        await client.reveal_model(self.keypair, self.model_id, secret.decryption_key, secret.embedding)
        self.published = None
        self.stats.reveals += 1

    async def start_weights(self, world: World) -> bytes:
        """The active model that predicts its niche sample best (scored through the scoring
        service), downloaded and decrypted as `soma model train --from` does."""
        from soma_ray.training.from_network import fetch_model_weights

        client = world.client
        candidates = sorted(bytes(m.model_id) for m in await client.get_active_models())
        losses = [np.inf] * len(candidates)
        data = b"".join(self.sample)
        dim = (await client.get_system_state()).parameters.embedding_dim
        left = list(range(len(candidates)))
        while left:  # a model the service cannot use is named by its error and left out
            try:
                scored = await client.score(None, [candidates[i] for i in left], np.ones(dim, np.float32), data=data)
            except (errors.ModelUnavailable, errors.ModelHasNoWeights) as error:
                named = error.model_id
                named = bytes.fromhex(named.removeprefix("0x")) if isinstance(named, str) else bytes(named)
                left = [i for i in left if candidates[i] != named] if named in candidates else []
                continue
            for i, loss in zip(left, scored.losses):
                losses[i] = loss
            break
        self.base_model = start_choice(candidates, losses)
        return await fetch_model_weights(client, self.base_model)

    async def hit_data(self, world: World) -> list[bytes]:
        """The data of the new hits its model won, downloaded and checked against the hashes the
        chain names (data that cannot be had is skipped, and not asked for again)."""
        found = []
        for target in won_hits(world.filled + world.claimable, self.model_id, self.used)[:MAX_HIT_ITEMS]:
            self.used.add(target.id)
            try:
                found.append(await world.client.fetch_submission_data(target.id))
            except (errors.ProtocolError, OSError, TimeoutError) as error:
                self.stats.count_error(error)
        return found

    async def train(self, world: World) -> None:
        """Fine-tune the current weights on the epoch's documents, then publish them: embedding,
        encrypt, upload, commit (revealed next epoch)."""
        client = world.client
        if self.weights is None:
            self.weights = await self.start_weights(world)
        hits = await self.hit_data(world)
        niche = [self.corpus.next_chunk() for _ in range(self.niche_chunks)]
        documents = [d for d in hits + niche if d]
        started = time.perf_counter()
        self.trained_epoch = world.epoch  # one try an epoch, whatever its outcome
        try:
            weights = await self.training.fine_tune(self.weights, documents, self.steps,
                                                    epoch_seed(self.rng.randrange(2**31), world.epoch))
        except FineTuneFailed as error:
            self.stats.count_error(error)
            return
        trained = time.perf_counter()
        embedding = await self.training.embedding(weights, self.sample)
        encrypted, key = client.encrypt_weights(weights)
        url = await client.upload(encrypted, kind="weights", signer=self.keypair)
        await client.commit_model(self.keypair, self.model_id, url, encrypted, key, embedding)
        self.published = Published(key, embedding)
        self.weights = weights
        self.trained_on += documents
        stats = self.stats
        stats.trainings += 1
        stats.train_steps += self.steps
        stats.train_s += trained - started
        stats.publish_s += time.perf_counter() - trained
        stats.hit_items += len(hits)
        stats.niche_items += len(niche)


def niche_sample(files: list[Path]) -> list[bytes]:
    """A trainer's embedding sample: the model owner's default (`soma_ray.corpus.sample_windows`)
    over its niche's files."""
    from soma_ray.corpus import sample_windows

    return sample_windows(files)


__all__ = ["CHUNK_BYTES", "FineTuneFailed", "HIT_STATUSES", "MAX_HIT_ITEMS", "NICHES", "NICHE_CHUNKS", "Published",
           "TRAINER_COMMISSION_BPS", "TRAINER_FUNDING", "TRAINER_STAKE", "Trainer", "Training", "niche_of",
           "niche_sample", "start_choice", "trainer_moves", "won_hits"]
