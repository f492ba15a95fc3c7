"""The game in one process (soma_ray/strategies/simulated.py, `soma simulate --miners`): the
strategies `soma start localnet` runs play on the pure state machine with in-process scoring and
audits. Over four epochs truthful hits are claimed, every injected fraud is slashed and no
truthful miner is, challenges end both ways, and the supply is conserved at every checkpoint."""
import asyncio
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from soma_ray.cli import simulate
from soma_ray.protocol.state import SUBMISSION, TARGET
from soma_ray.protocol.types import Submission, Target
from soma_ray.strategies import Mix, corpus_files, roster
from soma_ray.strategies.simulated import SimulatedGame

EPOCHS = 4
TEXT = ("def chunk(data, size):\n    return [data[i:i + size] for i in range(0, len(data), size)]\n" * 40)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i in range(4):
        (root / f"part{i}.py").write_text(f"# part {i}\n" + TEXT[i * 100:])
    return root


@pytest.fixture(scope="module")
def game(corpus):
    game = SimulatedGame(roster(Mix(honest=2, lazy=1, fraudulent=2), challengers=2), seed=3,
                         files=corpus_files(corpus), false_alarm_every=2)

    async def play():
        await game.setup()
        return [await game.play_epoch() for _ in range(EPOCHS)]

    return game, asyncio.run(play())


def test_truthful_hits_are_claimed(game):
    game, figures = game
    truthful = [game.by_role("honest"), game.by_role("lazy")]
    assert truthful[0].hits >= EPOCHS and truthful[1].hits >= 1
    # Everything filled before the last epoch has become claimable and been claimed.
    assert sum(t.claims for t in truthful) == sum(f.honest_hits for f in figures[:-1]) > 0

    async def settled_by(role):
        return [t for p in game.participants if p.role == role
                for t in await game.client.get_targets("settled", submitter=p.address)]

    assert len(asyncio.run(settled_by("honest"))) == truthful[0].claims


def test_every_fraud_is_slashed_and_no_truthful_miner_is(game):
    game, figures = game
    cheats = game.by_role("fraudulent")
    assert len(cheats.frauds) == 2 * EPOCHS  # one each an epoch
    assert {f.kind for f in cheats.frauds} == {"fake-score", "wrong-hash", "withheld"}
    state = game.client.sim.state
    for fraud in cheats.frauds:
        assert state.get(SUBMISSION, fraud.submission_id, Submission) is None
        target = state.get(TARGET, fraud.target_id, Target)
        assert target is None or target.submission_id != fraud.submission_id
    assert cheats.slashes == len(cheats.frauds) == sum(f.slashes for f in figures)
    assert cheats.claims == 0
    assert game.by_role("honest").slashes == 0 and game.by_role("lazy").slashes == 0


def test_challenges_end_both_ways(game):
    game, figures = game
    challengers = game.by_role("challenger")
    assert challengers.challenges_won == len(game.by_role("fraudulent").frauds)
    assert challengers.challenges_lost >= 1  # false alarms: the miner keeps its submission
    assert challengers.challenges_won + challengers.challenges_lost == challengers.challenges_opened
    assert sum(f.challenger_wins for f in figures) == challengers.challenges_won
    assert sum(f.miner_wins for f in figures) == challengers.challenges_lost


def test_no_participant_met_an_error_and_the_threshold_moves(game):
    game, figures = game
    assert {p.role: p.stats.errors for p in game.participants if p.stats.errors} == {}
    assert len({f.threshold for f in figures}) == EPOCHS


def test_supply_is_conserved_at_every_checkpoint(game):
    game, figures = game
    sim = game.client.sim
    assert len(game.client.supplies) == len(sim.checkpoints) > 20
    assert set(game.client.supplies) == {sim.params.genesis_supply}
    assert all(f.supply_ok for f in figures)


def test_the_simulation_imports_no_ray():
    code = ("import sys, soma_ray.cli.simulate, soma_ray.strategies.simulated\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'actors'))\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def cli():
    app = typer.Typer()
    app.add_typer(simulate.app)
    app.command("noop")(lambda: None)  # a second command keeps `simulate` a named subcommand
    return app


def test_soma_simulate_plays_the_game(corpus):
    result = CliRunner().invoke(cli(), ["simulate", "--epochs", "2", "--miners", "3", "--challengers", "1",
                                        "--fraud-rate", "0.34", "--seed", "1", "--corpus", str(corpus),
                                        "--false-alarm-every", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "crowd: 1 honest, 1 lazy, 1 fraudulent, 1 challenger, seed 1"
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("supply OK" in line and "threshold" in line for line in epochs)
    assert "challenges opened" in epochs[0] and "slashes 1" in epochs[0]
    assert "frauds: 2 injected, 2 slashed" in lines
    assert lines[-1].startswith("final: epoch 2") and "supply OK" in lines[-1]


@pytest.mark.parametrize("options, message", [
    (["--miners", "4", "--fraud-rate", "1.5"], "--fraud-rate"),
    (["--miners", "-1"], "--miners -1"),
    (["--challengers", "-2"], "--challengers -2"),
    (["--epochs", "0"], "--epochs 0"),
    (["--seed", "4"], "--seed plays the game"),
    (["--miners", "2", "--checkpoints-per-epoch", "2"], "--checkpoints-per-epoch"),
    (["--miners", "2", "--corpus", "/nonexistent/corpus"], "--corpus"),
])
def test_bad_options_give_a_one_line_error(options, message):
    result = CliRunner().invoke(cli(), ["simulate", *options])
    assert result.exit_code == 1
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith("error: ") and message in result.output
