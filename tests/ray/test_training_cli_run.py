"""`soma model train`'s success path: the weights file it writes and the summary it prints."""

import re

import pytest
from typer.testing import CliRunner

from soma_ray.cli.model import app
from soma_ray.model import V1Config, load_weights, score_model
from soma_ray.training import TrainConfig, prepare_corpus
from soma_ray.training.corpus import scoring_bytes
from soma_ray.training.loop import initial_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

# The CLI's defaults for what the test does not pass (seed 0, held-out fraction, eval bytes).
DEFAULTS = TrainConfig(model=V1Config.small())
ROUNDING = 5e-5  # the summary prints 4 decimals


@pytest.fixture
def corpus(tmp_path):
    directory = tmp_path / "corpus"
    directory.mkdir()
    for i in range(20):
        (directory / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 40)
    return directory


def _summary(output: str) -> dict:
    losses = re.search(r"held-out loss (\d+\.\d{4}) -> (\d+\.\d{4})", output)
    return {"steps": int(re.search(r"trained (\d+) steps", output).group(1)),
            "before": float(losses.group(1)), "after": float(losses.group(2)),
            "weights": re.search(r"^weights: (.+)$", output, re.MULTILINE).group(1)}


def test_train_writes_the_weights_whose_held_out_loss_it_reports(ray_session, tmp_path,
                                                                  corpus):
    out = tmp_path / "trained.safetensors"
    # Runs in this process: the command keeps the session's Ray connection open.
    result = CliRunner().invoke(app, [
        "train", "--corpus", str(corpus), "--out", str(out), "--steps", "3",
        "--micro-batch", "2", "--grad-accum", "1", "--lr", "3e-3", "--warmup", "1",
        "--name", "cli", "--storage", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert ray_session.is_initialized()
    summary = _summary(result.output)
    assert summary["steps"] == 3 and summary["weights"] == str(out)

    held_out = scoring_bytes(prepare_corpus(corpus, DEFAULTS.held_out_fraction).held_out,
                             DEFAULTS.eval_bytes)
    fresh = initial_model(DEFAULTS)
    trained = load_weights(out, DEFAULTS.model)
    assert score_model(fresh, held_out, seed=0).loss == pytest.approx(summary["before"],
                                                                      abs=ROUNDING)
    assert score_model(trained, held_out, seed=0).loss == pytest.approx(summary["after"],
                                                                        abs=ROUNDING)
    assert summary["after"] < summary["before"]
