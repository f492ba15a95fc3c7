"""Error paths of `soma model train`: each fails before Ray starts, with exit code 2."""

import dataclasses

import pytest
from typer.testing import CliRunner

from soma_ray.cli.model import app
from soma_ray.model import V1Config, V1Model, save_weights
from soma_ray.training import TrainConfig, TrainConfigError

runner = CliRunner()


def _train(*args):
    return runner.invoke(app, ["train", *map(str, args)])


@pytest.fixture
def corpus(tmp_path):
    directory = tmp_path / "corpus"
    directory.mkdir()
    for i in range(3):
        (directory / f"f{i}.py").write_text(f"x = {i}\n")
    return directory


def test_empty_corpus_directory_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _train("--corpus", tmp_path / "empty", "--out", tmp_path / "w")
    assert result.exit_code == 2
    assert "no non-empty file" in result.output and not (tmp_path / "w").exists()


def test_missing_corpus_is_an_error_naming_the_path(tmp_path):
    result = _train("--corpus", tmp_path / "nowhere", "--out", tmp_path / "w")
    assert result.exit_code == 2 and "nowhere" in result.output


def test_init_of_the_wrong_size_is_an_error_naming_the_field(tmp_path, corpus):
    small = V1Config.small()
    save_weights(V1Model(dataclasses.replace(small, embedding_dim=2 * small.embedding_dim)),
                 tmp_path / "other.safetensors")
    result = _train("--corpus", corpus, "--init", tmp_path / "other.safetensors",
                    "--out", tmp_path / "w")
    assert result.exit_code == 2
    assert "other.safetensors" in result.output and "embedding_dim" in result.output


def test_unknown_config_and_bad_numbers_are_errors(tmp_path, corpus):
    result = _train("--config", "huge", "--corpus", corpus, "--out", tmp_path / "w")
    assert result.exit_code == 2 and "huge" in result.output
    result = _train("--steps", 0, "--corpus", corpus, "--out", tmp_path / "w")
    assert result.exit_code == 2 and "steps" in result.output


def test_config_errors_carry_the_field_and_value():
    with pytest.raises(TrainConfigError) as e:
        TrainConfig(lr=0.0)
    assert (e.value.field, e.value.value) == ("lr", 0.0)
    with pytest.raises(TrainConfigError) as e:
        TrainConfig(held_out_fraction=1.0)
    assert e.value.field == "held_out_fraction"


def test_a_cpu_worker_must_reserve_some_cpu():
    # Ray Train refuses a worker that reserves nothing; the config says so before any job starts.
    with pytest.raises(TrainConfigError) as e:
        TrainConfig(cpus_per_worker=0)
    assert (e.value.field, e.value.value) == ("cpus_per_worker", 0)
    assert TrainConfig(cpus_per_worker=0.01).cpus_per_worker == 0.01
    assert TrainConfig(cpus_per_worker=0, use_gpu=True).use_gpu
