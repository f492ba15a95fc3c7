"""The whole game on a localnet with its services and audits: a crowd of scripted miners (honest,
lazy, fraudulent) and challengers in two crowd actors plays four epochs, advanced by hand once
every challenge of the epoch is resolved. Honest data from the stdlib's sources hits targets and
is claimed; challenges end both ways; the threshold moves; every injected fraud is slashed and
no truthful miner is; the supply is conserved exactly at every checkpoint."""
import time

import pytest
import ray

from actors.crowd import crowd_stats, launch_crowd, stop_crowd
from game_helpers import supply_at_each_checkpoint
from localnet_helpers import client_of, run, start_served
from soma_ray.protocol.state import CHALLENGE, SUBMISSION, TARGET
from soma_ray.protocol.types import Submission, Target
from soma_ray.strategies import Mix, roster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
EPOCHS = 4  # epochs played and then advanced: the game ends in epoch EPOCHS
ROUNDS_PER_EPOCH = 1
DRAIN_DEADLINE_S = 300.0


@pytest.fixture(scope="module")
def game(ray_session, serve_url, tmp_path_factory):
    network = start_served(tmp_path_factory, serve_url, "game", genesis_weights=True)
    crowd = launch_crowd(network.config, roster(Mix(honest=6, lazy=2, fraudulent=2), challengers=2),
                         actors=2, seed=12, false_alarm_every=6)
    try:
        thresholds, addresses = play(network, crowd)
        yield network, crowd_stats(crowd), thresholds, addresses
    finally:
        stop_crowd(network.config.namespace, network.config.prefix)
        network.stop()


def play(network, crowd):
    """EPOCHS epochs of ROUNDS_PER_EPOCH rounds, each followed by quiet rounds until no challenge
    is open and the challengers found nothing more to check; then the epoch is advanced. Returns
    the threshold of each epoch and the participants' addresses by role."""
    async def scenario():
        client = await client_of(network)
        thresholds = []
        for _ in range(EPOCHS):
            thresholds.append((await client.get_system_state()).target_state.distance_threshold)
            for _ in range(ROUNDS_PER_EPOCH):
                rounds(crowd, mine=True)
            await drain(client, crowd)
            await client.advance_epoch()
        rounds(crowd, mine=False)  # the last slashes and claims are seen
        thresholds.append((await client.get_system_state()).target_state.distance_threshold)
        return thresholds

    addresses: dict = {}
    for found in ray.get([h.addresses.remote() for h in crowd]):
        for role, some in found.items():
            addresses.setdefault(role, []).extend(some)
    return run(scenario()), addresses


def rounds(crowd, mine):
    ray.get([h.step.remote(mine) for h in crowd], timeout=600)


async def drain(client, crowd):
    """Quiet rounds until a round where no challenge is open and no challenger checked anything."""
    deadline = time.monotonic() + DRAIN_DEADLINE_S
    checked = None
    while time.monotonic() < deadline:
        rounds(crowd, mine=False)
        now = crowd_stats(crowd)["challenger"].scores
        if now == checked and not await client.get_object_ids(CHALLENGE):
            return
        checked = now
    raise AssertionError("challenges still open or targets still being checked at the deadline")


def test_honest_data_hits_and_is_claimed(game):
    network, stats, _, addresses = game
    assert stats["honest"].hits >= 3 and stats["honest"].claims >= 1

    async def settled_by_honest():
        client = await client_of(network)
        return [t for a in addresses["honest"] for t in await client.get_targets("settled", submitter=a)]

    assert len(run(settled_by_honest())) == stats["honest"].claims  # each claim paid and settled it


def test_challenges_end_both_ways(game):
    _, stats, _, _ = game
    challengers = stats["challenger"]
    assert challengers.challenges_won >= 1  # frauds caught
    assert challengers.challenges_lost >= 1  # false alarms: the miner won the bond
    assert challengers.challenges_won + challengers.challenges_lost == challengers.challenges_opened
    assert len(challengers.resolution_s) == challengers.challenges_opened


def test_every_fraud_is_slashed_and_no_truthful_miner_is(game):
    network, stats, _, _ = game
    frauds = stats["fraudulent"].frauds
    assert len(frauds) >= EPOCHS and {f.kind for f in frauds} == {"fake-score", "wrong-hash", "withheld"}

    async def leftovers():
        client = await client_of(network)
        left = []
        for fraud in frauds:
            submission = await client.get_object(SUBMISSION, fraud.submission_id, Submission)
            target = await client.get_object(TARGET, fraud.target_id, Target)
            if submission is not None or target.submission_id == fraud.submission_id:
                left.append(fraud)
        return left

    assert run(leftovers()) == []  # every fraudulent submission undone on chain
    assert stats["fraudulent"].slashes == len(frauds) and stats["fraudulent"].claims == 0
    assert stats["honest"].slashes == 0 and stats["lazy"].slashes == 0


def test_the_threshold_moves_with_the_hits(game):
    _, _, thresholds, _ = game
    assert len(set(thresholds)) > 1, thresholds


def test_supply_is_conserved_at_every_checkpoint(game):
    network, _, _, _ = game
    supplies = supply_at_each_checkpoint(network)
    genesis_supply = network.config.genesis_config().parameters.genesis_supply
    assert len(supplies) > 20
    assert {s for s in supplies.values()} == {genesis_supply}
