"""The Ray Train job end to end on a tiny model with 2 CPU workers."""

import dataclasses
import os
import signal

import pytest
from ray.train import TrainingFailedError

from soma_ray.model import V1Config, load_weights, score_model
from soma_ray.training import TrainConfig, prepare_corpus, train
from soma_ray.training.corpus import scoring_bytes

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

CONFIG = TrainConfig(
    model=V1Config(embedding_dim=32, num_layers=1, num_heads=2, pwff_hidden_dim=64,
                   max_seq_len=32),
    steps=8, micro_batch=2, grad_accum=1, lr=3e-3, warmup_steps=2, checkpoint_every=2, num_workers=2,
    eval_bytes=2048)
CORPUS = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n".encode() * 12 for i in range(40)]


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return tmp_path_factory.mktemp("train-runs")


@pytest.fixture(scope="module")
def uninterrupted(ray_session, storage):
    return train(CONFIG, CORPUS, out=storage / "trained.safetensors", name="whole",
                 storage_path=storage)


def test_two_workers_lower_the_held_out_loss_and_write_reference_weights(uninterrupted):
    result = uninterrupted
    assert result.steps == 8 and [m["step"] for m in result.history] == list(range(1, 9))
    assert result.loss_after < result.loss_before
    # The file written is the trained model, and the reported loss is the network's score on
    # held-out bytes that were never trained on.
    held_out = scoring_bytes(prepare_corpus(CORPUS).held_out, CONFIG.eval_bytes)
    model = load_weights(result.weights, CONFIG.model)
    assert score_model(model, held_out).loss == pytest.approx(result.loss_after, rel=1e-5)


def test_fine_tuning_starts_the_workers_from_the_init_weights(uninterrupted, storage):
    tuned = train(dataclasses.replace(CONFIG, init=uninterrupted.weights, steps=2), CORPUS,
                  name="tuned", storage_path=storage)
    assert tuned.loss_before == pytest.approx(uninterrupted.loss_after, rel=1e-5)


def test_a_killed_run_rerun_under_its_name_resumes_the_same_trajectory(uninterrupted,
                                                                        storage):
    # Ray Train registers a reported checkpoint a poll later; kill once one is on record.
    registry = storage / "cut" / "checkpoint_manager_snapshot.json"

    def kill_rank_0_after_a_checkpoint(metrics):
        if metrics["step"] >= 3 and registry.exists():
            os.kill(metrics["pid"], signal.SIGKILL)

    with pytest.raises(TrainingFailedError):
        train(CONFIG, CORPUS, name="cut", storage_path=storage,
              on_step=kill_rank_0_after_a_checkpoint)
    steps_after_restart = []
    resumed = train(CONFIG, CORPUS, name="cut", storage_path=storage,
                    on_step=lambda m: steps_after_restart.append(m["step"]))
    assert steps_after_restart[0] > 1 and steps_after_restart[-1] == 8  # not from zero
    assert resumed.steps == uninterrupted.steps
    assert ([m["loss"] for m in resumed.history]
            == pytest.approx([m["loss"] for m in uninterrupted.history], rel=1e-5))
    assert resumed.loss_after == pytest.approx(uninterrupted.loss_after, rel=1e-5)
