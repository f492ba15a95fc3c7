"""Trainers (soma_ray/strategies/trainer.py): the pure decisions — when to reveal, forget and
train, which hits' data to train on, which network model to start from, the niches — the
in-process fine-tune, and one trainer playing on the simulated network: its model created,
committed, revealed the next epoch and updated every epoch, through the SDK."""
import asyncio

import numpy as np
import pytest

from soma_ray import heldout
from soma_ray.model import load_weights, score_model
from soma_ray.protocol.state import MODEL
from soma_ray.protocol.types import Model
from soma_ray.strategies import Mix, corpus_files, roster
from soma_ray.strategies.simulated import SimulatedGame
from soma_ray.strategies.trainer import NICHES, FineTuneFailed, niche_of, start_choice, trainer_moves, won_hits
from soma_ray.training.fine_tune import InProcessTraining, fine_tune_in_process
from soma_ray.wire import TargetView

MINE, OTHER = bytes([7]) * 32, bytes([8]) * 32


def target(n, status="filled", winner=MINE, submission=True):
    return TargetView(
        id=bytes([n]) * 32, status=status, embedding=b"\0" * 8, model_ids=[MINE, OTHER], distance_threshold=1.0,
        threshold_fixed=10**9, reward_pool=1, generation_epoch=0, bond_amount=1,
        submission_id=bytes([n + 100]) * 32 if submission else None, submitter=None, winning_model_id=winner,
        fill_epoch=0, claimable_epoch=2, reveal_deadline_ms=None, settled_epoch=None)


@pytest.mark.parametrize("status, awaited, secret, epoch, trained, moves", [
    ("Created", None, False, 0, None, ("train",)),  # first weights
    ("Pending", 0, True, 0, 0, ()),  # committed this epoch: the reveal is next epoch's
    ("Pending", 0, True, 1, 0, ("reveal", "train")),  # reveal, then the next version at once
    ("Active", 3, True, 4, 3, ("reveal", "train")),  # an update revealed, the next committed
    ("Active", 3, True, 3, 3, ()),  # trained this epoch already
    # A fine-tune begun in epoch 3 whose commit landed in epoch 4: the chain's epoch counts.
    ("Active", 4, True, 4, 3, ()),
    ("Active", 4, True, 5, 3, ("reveal", "train")),
    ("Active", None, False, 4, 3, ("train",)),  # nothing to reveal (a reveal that failed)
    ("Active", 3, True, 5, 3, ("forget",)),  # the reveal's epoch passed: the update is dropped next
    ("Active", 3, False, 5, 3, ()),  # an awaited commit blocks the next one until it is dropped
    ("Inactive", None, True, 3, 2, ("forget",)),  # slashed for a missed reveal: nothing more
    ("Inactive", None, False, 3, 2, ()),
    ("Active", None, True, 4, 3, ("forget", "train")),  # the chain no longer awaits it
])
def test_a_trainer_reveals_when_the_chain_awaits_it_and_trains_once_an_epoch_when_the_chain_takes_a_commit(
        status, awaited, secret, epoch, trained, moves):
    assert trainer_moves(status, awaited, secret, epoch, trained) == moves


def test_it_trains_on_the_hits_its_model_won_each_once():
    targets = [target(1), target(2, winner=OTHER), target(3, status="claimable"), target(4, status="open", winner=None),
               target(5, status="settled"), target(6, submission=False), target(1)]
    assert [t.id[0] for t in won_hits(targets, MINE, set())] == [1, 3, 5]
    assert [t.id[0] for t in won_hits(targets, MINE, {bytes([1]) * 32})] == [3, 5]


def test_it_starts_from_the_model_that_predicts_its_niche_best():
    assert start_choice([A := bytes([3]) * 32, B := bytes([1]) * 32], [4.0, 5.0]) == A
    assert start_choice([A, B], [5.0, 5.0]) == B  # ties: the lower id
    assert start_choice([A, B], [float("nan"), 9.0]) == B  # a model the service could not use
    with pytest.raises(ValueError):
        start_choice([A], [float("inf")])


def test_niches_are_dealt_in_turn_and_leave_the_held_out_slice_out():
    assert [niche_of(i) for i in range(5)] == [*NICHES, NICHES[0]]
    assert set(NICHES) == set(heldout.KINDS)
    held = set(heldout.stdlib_files("docs", held_out=True))
    assert held and not held & set(heldout.stdlib_files(niche_of(1)))


def test_the_in_process_fine_tune_lowers_the_loss_on_what_it_trained_on():
    from soma_ray.model import genesis_model_weights

    documents = [f"def f{i}(x):\n    return x * {i}\n".encode() * 20 for i in range(6)]
    before = genesis_model_weights(0)
    after = fine_tune_in_process(before, documents, steps=2, seed=1)
    loss = [score_model(load_weights(w), documents[0]).loss for w in (before, after)]
    assert loss[1] < loss[0] - 0.5, loss
    again = fine_tune_in_process(before, documents, steps=2, seed=1)  # deterministic (the header's
    assert tensors(again) == tensors(after)  # metadata comes in any order)


def tensors(weights: bytes) -> bytes:
    return weights[8 + int.from_bytes(weights[:8], "little"):]


def test_a_trainer_publishes_a_new_version_every_epoch_through_the_sdk():
    game = SimulatedGame(roster(Mix(0, 0, 0), challengers=0, trainers=1), seed=2, files=corpus_files(),
                         train_steps=1)
    trainer = game.participants[0]
    trainer.sample, trainer.niche_chunks = trainer.sample[:2], 2  # a tiny epoch: 1 step, 2 chunks

    async def play():
        await game.setup()
        model = await game.client.get_object(MODEL, trainer.model_id, Model)
        assert model.status == "Created" and model.owner == trainer.address
        seen = []
        for _ in range(2):
            await game.play_epoch()
            seen.append(await game.client.get_object(MODEL, trainer.model_id, Model))
        return seen

    seen = asyncio.run(play())
    # Committed in epoch 0, Active from epoch 1; each epoch's reveal replaced the weights, and the
    # commit of the epoch's new version awaits its reveal.
    assert [m.status for m in seen] == ["Active"] * 2
    assert len({m.weights_manifest.checksum for m in seen}) == 2
    assert all(m.pending_update is not None and m.pending_update.commit_epoch == e + 1 for e, m in enumerate(seen))
    stats = trainer.stats
    assert stats.trainings == 3 and stats.reveals == 2 and stats.train_steps == 3 and not stats.errors
    assert stats.niche_items == 6 and stats.hit_items == 0  # no miners: its niche only
    assert trainer.base_model is not None and trainer.niche == NICHES[0]
    assert np.isclose(np.linalg.norm(np.frombuffer(seen[-1].embedding, "<f4")), 1.0, atol=1e-5)


class SlowThenFailing:
    """A `Training` whose first fine-tune runs past the epoch change (the game's epoch advances
    while it trains, as a Ray Train job on a loaded localnet can) and whose second fails."""

    def __init__(self, game):
        self.game, self.calls = game, 0
        self.inner = InProcessTraining()

    async def fine_tune(self, weights, documents, steps, seed):
        self.calls += 1
        if self.calls == 1:
            await self.game.client.advance_epoch()
        elif self.calls == 2:
            raise FineTuneFailed("the job's worker died")
        return await self.inner.fine_tune(weights, documents, steps, seed)

    async def embedding(self, weights, sample):
        return await self.inner.embedding(weights, sample)


def test_a_trainer_reveals_a_commit_that_landed_an_epoch_late_and_counts_a_failed_fine_tune():
    game = SimulatedGame(roster(Mix(0, 0, 0), challengers=0, trainers=1), seed=2, files=corpus_files(),
                         train_steps=1)
    trainer = game.participants[0]
    trainer.sample, trainer.niche_chunks = trainer.sample[:2], 2
    trainer.training = training = SlowThenFailing(game)

    async def play():
        await game.setup()
        await game.round()  # epoch 0: trains, and its commit lands in epoch 1
        committed = await game.client.get_object(MODEL, trainer.model_id, Model)
        await game.round()  # still epoch 1: the reveal is epoch 2's
        await game.client.advance_epoch()
        await game.round()  # epoch 2: revealed, then the next fine-tune fails
        failed = await game.client.get_object(MODEL, trainer.model_id, Model)
        await game.client.advance_epoch()
        await game.round()  # epoch 3: tried again
        return committed, failed, await game.client.get_object(MODEL, trainer.model_id, Model)

    committed, failed, again = asyncio.run(play())
    assert committed.status == "Pending" and committed.commit_epoch == 1
    assert failed.status == "Active" and failed.pending_update is None
    assert again.pending_update is not None and again.pending_update.commit_epoch == 3
    stats = trainer.stats
    assert stats.reveals == 1 and stats.trainings == 2 and training.calls == 3
    assert stats.errors == {"FineTuneFailed": 1}
