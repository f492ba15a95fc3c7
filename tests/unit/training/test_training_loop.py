import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from soma_ray.model import V1Config, V1Model, save_weights, tokenize
from soma_ray.training import InitWeightsError, TrainConfig
from soma_ray.training.corpus import Document, chunk_table, split_corpus
from soma_ray.training.loop import (StepRunner, TrainingLoss, check_init_weights, chunk_batch,
                                    initial_model, make_optimizer)

TINY = V1Config(embedding_dim=16, num_layers=1, num_heads=2, pwff_hidden_dim=32, max_seq_len=16)
CONFIG = TrainConfig(model=TINY, steps=6, micro_batch=2, grad_accum=1, lr=1e-2, warmup_steps=1)
SPLIT = split_corpus([Document(f"d{i}", b"import os\nprint(os.getcwd())\n" * (i + 1))
                      for i in range(12)])


def _runner(config=CONFIG, model=None):
    model = model or initial_model(config)
    return StepRunner(config, SPLIT, TrainingLoss(model), make_optimizer(model, config),
                      torch.device("cpu")), model


def test_chunk_batch_matches_the_tokenizer_on_the_whole_document():
    table = chunk_table(SPLIT.train, 16)
    rows = np.arange(len(table))
    tokens, positions, targets = chunk_batch(SPLIT, table, rows, 16, torch.device("cpu"))
    whole = [tokenize(d.data, 16) for d in SPLIT.train]
    assert np.array_equal(tokens.numpy(), np.concatenate([c.tokens for c in whole]))
    assert np.array_equal(positions.numpy(), np.concatenate([c.positions for c in whole]))
    assert np.array_equal(targets.numpy(), np.concatenate([c.targets for c in whole]))


def test_steps_lower_the_training_loss_and_follow_the_schedule():
    runner, _ = _runner()
    metrics = [runner.run(step) for step in range(CONFIG.steps)]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[0]["lr"] == pytest.approx(1e-2) and metrics[-1]["lr"] == pytest.approx(1e-3)
    assert all(m["loss"] == pytest.approx(m["ce"] + 0.02 * m["sigreg"]) for m in metrics)


def test_a_runner_restored_from_state_repeats_the_uninterrupted_trajectory():
    config = dataclasses.replace(CONFIG, model=dataclasses.replace(TINY, dropout_rate=0.1))
    whole, _ = _runner(config)
    expected = [whole.run(step)["loss"] for step in range(4)]

    first, model = _runner(config)
    losses = [first.run(step)["loss"] for step in range(2)]
    saved = {"model": model.state_dict(), "optimizer": first.optimizer.state_dict()}
    fresh = initial_model(dataclasses.replace(config, seed=99))  # different weights, overwritten
    fresh.load_state_dict(saved["model"])
    resumed, _ = _runner(config, fresh)
    resumed.optimizer.load_state_dict(saved["optimizer"])
    losses += [resumed.run(step)["loss"] for step in range(2, 4)]
    assert losses == pytest.approx(expected, rel=1e-6)


def test_a_resume_restores_the_checkpoint_without_reading_the_init_file(tmp_path):
    from ray.train import Checkpoint

    from soma_ray.training.job import STATE_FILE, _start_or_resume

    whole, _ = _runner()
    expected = [whole.run(step)["loss"] for step in range(4)]
    first, model = _runner()
    history = [first.run(step) for step in range(2)]
    torch.save({"step": 2, "loss_before": 5.0, "loss_after": None, "history": history,
                "model": model.state_dict(), "optimizer": first.optimizer.state_dict()},
               tmp_path / STATE_FILE)
    # The init file is gone: a resuming worker does not read it (the checkpoint holds every weight).
    config = dataclasses.replace(CONFIG, init=tmp_path / "moved.safetensors")
    restored, optimizer, state = _start_or_resume(
        config, Checkpoint.from_directory(tmp_path), torch.device("cpu"))
    assert restored.training and (state["step"], state["history"]) == (2, history)
    resumed = StepRunner(config, SPLIT, TrainingLoss(restored), optimizer, torch.device("cpu"))
    losses = [m["loss"] for m in history] + [resumed.run(step)["loss"] for step in (2, 3)]
    assert losses == pytest.approx(expected, rel=1e-6)


def test_a_fresh_start_reads_the_init_file(tmp_path):
    from soma_ray.training.job import _start_or_resume

    source = V1Model(TINY)
    save_weights(source, tmp_path / "w.safetensors")
    config = dataclasses.replace(CONFIG, init=tmp_path / "w.safetensors")
    model, _, state = _start_or_resume(config, None, torch.device("cpu"))
    assert torch.equal(model.predictor.weight, source.predictor.weight)
    assert model.training and state["step"] == 0


def test_gradient_accumulation_sees_the_same_chunks_as_one_large_batch():
    one = StepRunner(dataclasses.replace(CONFIG, micro_batch=4), SPLIT, None, None,
                     torch.device("cpu"))
    two = StepRunner(dataclasses.replace(CONFIG, micro_batch=2, grad_accum=2), SPLIT, None,
                     None, torch.device("cpu"))
    assert np.array_equal(one._rows(3, 0), np.concatenate([two._rows(3, 0), two._rows(3, 1)]))


def test_fresh_init_is_seeded():
    a, b = initial_model(CONFIG), initial_model(CONFIG)
    c = initial_model(dataclasses.replace(CONFIG, seed=1))
    assert torch.equal(a.embedding.weight, b.embedding.weight)
    assert not torch.equal(a.embedding.weight, c.embedding.weight)


def test_fine_tuning_starts_from_the_init_file(tmp_path):
    source = V1Model(TINY)
    save_weights(source, tmp_path / "w.safetensors")
    model = initial_model(dataclasses.replace(CONFIG, init=tmp_path / "w.safetensors"))
    assert torch.equal(model.predictor.weight, source.predictor.weight)


@pytest.mark.parametrize("check", [initial_model, check_init_weights])
def test_init_file_of_another_size_is_a_typed_error(tmp_path, check):
    save_weights(V1Model(dataclasses.replace(TINY, embedding_dim=32)), tmp_path / "big")
    with pytest.raises(InitWeightsError) as e:
        check(dataclasses.replace(CONFIG, init=tmp_path / "big"))
    assert e.value.path == str(tmp_path / "big") and "embedding_dim" in e.value.reason


@pytest.mark.parametrize("check", [initial_model, check_init_weights])
def test_missing_or_corrupt_init_file_is_a_typed_error(tmp_path, check):
    (tmp_path / "junk").write_bytes(b"not safetensors")
    for path in (tmp_path / "junk", tmp_path / "absent"):
        with pytest.raises(InitWeightsError):
            check(dataclasses.replace(CONFIG, init=path))


def test_the_header_check_accepts_what_loading_accepts(tmp_path):
    save_weights(V1Model(TINY), tmp_path / "w.safetensors")
    check_init_weights(dataclasses.replace(CONFIG, init=tmp_path / "w.safetensors"))


def test_the_header_check_rejects_truncated_half_precision_and_renamed_files(tmp_path):
    tensors = {k: v.contiguous() for k, v in V1Model(TINY).state_dict().items()}
    save_weights(V1Model(TINY), tmp_path / "whole")
    (tmp_path / "truncated").write_bytes((tmp_path / "whole").read_bytes()[:-4])
    save_file({k: v.half() for k, v in tensors.items()}, tmp_path / "half")
    save_file({**tensors, "extra.weight": torch.zeros(2)}, tmp_path / "extra")
    reasons = {}
    for name in ("truncated", "half", "extra"):
        with pytest.raises(InitWeightsError) as e:
            check_init_weights(dataclasses.replace(CONFIG, init=tmp_path / name))
        reasons[name] = e.value.reason
    assert "truncated" in reasons["truncated"]
    assert "F16" in reasons["half"] and "extra.weight" in reasons["extra"]


def test_scoring_the_held_out_split_before_training_leaves_the_model_trainable():
    from soma_ray.training.job import _held_out_loss

    runner, model = _runner()
    before = _held_out_loss(model, SPLIT.held_out[0].data)
    assert model.training and before > 0
    assert runner.run(0)["loss"] > 0
