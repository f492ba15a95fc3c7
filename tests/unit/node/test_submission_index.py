"""The submissions and challenges index of the target index (node/target_index.py): a game played
in process (SimulatedGame), then every submission and challenge it made read back, the resolved
and closed ones too, by miner, target, submission and challenger, page by page."""
import asyncio
from collections import Counter

import pytest

from soma_ray.protocol import errors
from soma_ray.protocol.state import SUBMISSION
from soma_ray.strategies import Mix, corpus_files, roster
from soma_ray.strategies.simulated import SimulatedGame
from soma_ray.wire import CHALLENGE_STATUSES, SUBMISSION_STATUSES



@pytest.fixture(scope="module")
def game(small_corpus):
    game = SimulatedGame(roster(Mix(honest=1, lazy=0, fraudulent=2), challengers=1), seed=5,
                         files=corpus_files(small_corpus(3)), false_alarm_every=2)

    async def play():
        await game.setup()
        for _ in range(3):
            await game.play_epoch()

    asyncio.run(play())
    return game


def every(page_of):
    found, token = [], None
    while True:
        page = page_of(token)
        items = getattr(page, "submissions", None) or getattr(page, "challenges", None) or []
        found += items
        token = page.next_page_token
        if token is None:
            return found


def test_every_challenge_is_kept_with_how_it_ended(game):
    index = game.client.chain.index
    challenges = every(lambda token: index.list_challenges(limit=1, page_token=token))
    assert challenges, "the game opened no challenge"
    assert {c.status for c in challenges} <= set(CHALLENGE_STATUSES)
    counts = Counter(c.status for c in challenges)
    assert counts["challenger_wins"] == game.audits.resolved["ChallengerWins"]
    assert counts["miner_wins"] == game.audits.resolved["MinerWins"]
    assert counts["open"] == 0  # the game ends with none open
    for c in challenges:
        assert index.get_challenge(c.id) == c
        assert c.closed_epoch is not None and c.closed_epoch >= c.opened_epoch
        assert c in index.list_challenges(submission_id=c.submission_id).challenges
        assert c in index.list_challenges(challenger=c.challenger, status=c.status).challenges


def test_every_submission_is_kept_by_miner_and_target(game):
    index = game.client.chain.index
    submissions = every(lambda token: index.list_submissions(limit=2, page_token=token))
    assert {s.status for s in submissions} <= set(SUBMISSION_STATUSES)
    assert len({s.id for s in submissions}) == len(submissions)
    challenges = index.list_challenges(status="challenger_wins").challenges
    slashed = {s.id for s in submissions if s.status == "slashed"}
    assert slashed == {c.submission_id for c in challenges}
    on_chain = set(game.client.sim.state.ids(SUBMISSION))
    for s in submissions:
        if s.status in ("slashed", "dropped"):
            assert s.id not in on_chain
        if s.status != "committed" and s.status != "dropped":
            assert s.model_id is not None and s.data_url is not None
    for miner in {s.miner for s in submissions}:
        mine = index.list_submissions(miner=miner, limit=1000).submissions
        assert mine == [s for s in submissions if s.miner == miner]
    first = submissions[0]
    assert index.list_submissions(target_id=first.target_id).submissions[0].target_id == first.target_id
    assert index.get_submission(first.id) == first
    with pytest.raises(errors.ObjectNotFound):
        index.get_submission(b"\x00" * 32)
    with pytest.raises(errors.MalformedInput):
        index.list_submissions(status="whatever")

