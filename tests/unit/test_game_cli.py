"""`soma start localnet --miners/--challengers`: the crowd the options ask for, and the game's part
of the live status line (no Ray started)."""
import pytest

from soma_ray.cli.common import BadArgument
from soma_ray.cli.start import Game, crowd_plan, game_line
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
    assert line == ("hits 7 | open 10 | threshold 1.0290 | challenges open 1 resolved 3 | slashes 2 | claims 2")
