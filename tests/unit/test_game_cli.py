"""`soma start localnet --miners/--challengers`: the crowd the options ask for, and the game's part
of the live status line (no Ray started)."""
import pytest

from soma_ray.cli.common import BadArgument
from soma_ray.cli.start import Game, crowd_plan, game_line
from soma_ray.node.sampling import Coverage
from soma_ray.strategies import Stats


def test_the_options_give_the_crowd_mix_and_refuse_a_crowd_that_cannot_play(tmp_path):
    plan = crowd_plan(10, 2, 0.2, None, actors=4, seed=3, services=True)
    roles = [s.role for s in plan.specs]
    assert [roles.count(r) for r in ("honest", "lazy", "fraudulent", "challenger")] == [6, 2, 2, 2]
    assert plan.describe() == "crowd: 6 honest, 2 lazy, 2 fraudulent, 2 challenger in 4 actor(s), seed 3"
    assert crowd_plan(0, 0, 0.1, None, 2, 0, services=True) is None
    assert crowd_plan(1, 0, 0.0, None, actors=8, seed=0, services=True).actors == 1  # no idle actor
    with pytest.raises(BadArgument, match="services"):
        crowd_plan(4, 1, 0.1, None, 2, 0, services=False)
    with pytest.raises(BadArgument, match="not a directory"):
        crowd_plan(4, 1, 0.1, tmp_path / "missing", 2, 0, services=True)


def test_the_status_line_sums_the_crowds_miners_and_shows_the_chain():
    crowd = {"rounds": 9, "honest": Stats(submissions=5, claims=2), "fraudulent": Stats(submissions=2, slashes=2),
             "challenger": Stats(challenges_won=2, challenges_lost=1)}
    line = game_line(Game(open_targets=10, threshold=1_029_000_000, challenges_open=1, crowd=crowd))
    assert line == ("hits 7 | open 10 | threshold 1.0290 | challenges open 1 resolved 3 | slashes 2 | claims 2"
                    " | frauds 0 caught 0 escaped 0 | honest slashed 0 | sampled: no answer")


def test_the_status_line_shows_frauds_by_kind_honest_slashes_and_sampling():
    outcomes = {"fake-score|injected": 2, "fake-score|caught": 2, "shave ≤5x|injected": 1, "shave ≤5x|escaped": 1,
                "shave within tolerance (not fraud)|injected": 1, "shave within tolerance (not fraud)|held": 1}
    crowd = {"rounds": 3, "honest": Stats(submissions=4, slashes=1), "lazy": Stats(submissions=1),
             "fraudulent": Stats(submissions=4, slashes=2, fraud_outcomes=outcomes)}
    sampled = Coverage(fills=9, assigned=9, audited=8, frauds=3, moot=1, missed=0, latency_p50_s=2.5,
                       latency_p99_s=9.0)
    line = game_line(Game(10, 1_000_000_000, 0, crowd, sampled))
    assert line.endswith(
        " | frauds 3 caught 2 escaped 1 (fake-score 2/2/0, shave within tolerance (not fraud) 1/0/0,"
        " shave ≤5x 1/0/1) | honest slashed 1 | sampled 8/8 (100%) p50 2.5 s"), line
