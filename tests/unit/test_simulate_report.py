"""`soma simulate --trainers T --report FILE` (soma_ray/cli/simulate.py): the report's JSON, one
object per epoch after the genesis state's, and the control — without trainers nothing trains,
so the network's held-out loss stays within 2 % of the genesis models' (here: exactly). A tiny
run: two epochs, a few miners on a small corpus, one step of fine-tuning, one held-out item of
each kind."""
import json

import pytest
import typer
from typer.testing import CliRunner

from soma_ray import heldout
from soma_ray.cli import simulate

FIELDS = {"epoch", "hits", "claims", "frauds_injected", "frauds_slashed", "honest_slashed", "network_loss_bpb",
          "network_routed_bpb", "loss_by_kind", "models", "revealed", "lazy_hits", "lazy_claims", "trainings",
          "train_steps", "hit_items", "truthful_hits"}


@pytest.fixture(scope="module")
def corpus(small_corpus):
    return small_corpus(3)


@pytest.fixture(autouse=True)
def one_item_of_each_kind(monkeypatch):
    monkeypatch.setattr(heldout, "ITEMS_PER_KIND", 1)


def cli():
    app = typer.Typer()
    app.add_typer(simulate.app)
    app.command("noop")(lambda: None)
    return app


def run(corpus, path, *options):
    result = CliRunner().invoke(cli(), ["simulate", "--epochs", "2", "--miners", "3", "--fraud-rate", "0",
                                        "--corpus", str(corpus), "--report", str(path), *options])
    assert result.exit_code == 0, result.output
    return result.output.splitlines(), json.loads(path.read_text())


def test_without_trainers_the_network_does_not_learn(corpus, tmp_path):
    lines, report = run(corpus, tmp_path / "control.json", "--trainers", "0")
    assert [entry["epoch"] for entry in report] == [0, 1, 2]
    first, last = report[0]["network_loss_bpb"], report[-1]["network_loss_bpb"]
    assert abs(last - first) <= 0.02 * first  # the control: within 2 % (nothing trains: equal)
    assert all(m["owner"] == "genesis" for e in report for m in e["models"]) and len(report[0]["models"]) == 3
    assert any(line.startswith("network held-out loss: ") and "(+0.0%)" in line for line in lines)


def test_the_report_holds_one_object_per_epoch_after_the_genesis_state(corpus, tmp_path):
    lines, report = run(corpus, tmp_path / "r.json", "--trainers", "1", "--train-steps", "1")
    assert lines[0] == "crowd: 2 honest, 1 lazy, 0 fraudulent, 0 challenger, 1 trainer, seed 0"
    assert [entry["epoch"] for entry in report] == [0, 1, 2]
    for entry in report:
        assert set(entry) == FIELDS
        assert all(isinstance(entry[f], int) for f in ("hits", "claims", "frauds_injected", "frauds_slashed",
                                                       "honest_slashed"))
        assert set(entry["loss_by_kind"]) == set(heldout.KINDS)
        for model in entry["models"]:
            assert set(model) == {"model", "owner", "stake", "bpb", "best_items", "routed_items"}
        assert sum(m["best_items"] for m in entry["models"]) == sum(m["routed_items"] for m in entry["models"]) == 4
        assert all(set(hit) == {"miner", "model", "loss"} for hit in entry["revealed"])
    genesis, *played = report
    assert genesis["hits"] == genesis["claims"] == genesis["trainings"] == 0 and not genesis["revealed"]
    assert sum(e["hits"] for e in played) == sum(len(e["revealed"]) for e in played) > 0
    assert [e["trainings"] for e in played] == [2, 1]  # its first weights and epoch 1's; then epoch 2's
    owners = [m["owner"] for m in report[-1]["models"]]
    assert owners.count("genesis") == 3 and "trainer-0 (tests)" in owners
    assert report[-1]["network_loss_bpb"] < genesis["network_loss_bpb"]
    assert report[-1]["network_loss_bpb"] <= min(m["bpb"] for m in report[-1]["models"])


def test_report_options_play_the_game(tmp_path):
    result = CliRunner().invoke(cli(), ["simulate", "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 1 and "--report plays the game" in result.output
    result = CliRunner().invoke(cli(), ["simulate", "--miners", "2", "--lazy-rate", "2"])
    assert result.exit_code == 1 and "--lazy-rate 2.0: a fraction in [0, 1]" in result.output
