"""The target state actor on a 4-validator localnet: it follows the committed checkpoints, lists
the genesis targets as open with their models, follows a fill and an epoch change, and after
its process is killed Ray restarts it and it rebuilds from the validators' stored checkpoints
to the same answers."""
import os
import signal

import pytest
import ray

from actors.target_state import launch_target_state
from localnet_helpers import client_of, run, sequences, start_network, wait_until
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.errors import ModelHasNoWeights
from soma_ray.protocol.genesis import genesis, preset_keypair
from soma_ray.protocol.state import MODEL, TARGET
from soma_ray.protocol.submissions import submission_commitment
from soma_ray.protocol.types import CommitSubmission, Model, RevealSubmission, Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MINER = preset_keypair("user", 2)
DATA = b"data the miner found"


@pytest.fixture(scope="module")
def network(ray_session, tmp_path_factory):
    network = start_network(tmp_path_factory, "tstate")
    yield network
    network.stop()


def synced_to_validators(actor, network):
    """A predicate: the actor applied the validators' latest checkpoint (read before it)."""
    def check():
        height = max(sequences(network))
        synced = ray.get(actor.synced_sequence.remote(), timeout=30)
        return synced is not None and synced >= height
    return check


def all_pages(actor, **filters):
    found, token = [], None
    while True:
        page = ray.get(actor.list_targets.remote(limit=4, page_token=token, **filters), timeout=30)
        found += page.targets
        token = page.next_page_token
        if token is None:
            return found


def answers(actor):
    """Everything the index serves that does not change while the chain is idle."""
    status = ray.get(actor.status.remote(), timeout=30)
    return (all_pages(actor), ray.get(actor.active_models.remote(), timeout=30),
            ray.get(actor.leaderboard.remote(), timeout=30), status.epoch, status.counts, status.error)


def fill(network, target: Target):
    async def scenario():
        client = await client_of(network)
        nonce = b"e2e nonce"
        model_id = target.model_ids[0]
        commitment = submission_commitment(blake2b256(DATA), len(DATA), model_id, target.embedding, 3, nonce)
        committed = await client.execute(MINER, CommitSubmission(target.id, commitment, 10_000))
        assert committed.error is None, committed.error
        revealed = await client.execute(MINER, RevealSubmission(
            committed.created[0], blake2b256(DATA), len(DATA), "http://blobs/e2e", model_id,
            target.embedding, 3, nonce))
        assert revealed.error is None, revealed.error
        return await client.advance_epoch()
    return run(scenario())


def test_the_index_follows_serves_and_rebuilds_after_a_restart(network):
    initial = genesis(network.config.genesis_config())
    genesis_targets = {t.id: t for t in initial.values(TARGET, Target)}
    genesis_models = [m.id for m in initial.values(MODEL, Model) if m.status == "Active"]
    actor = launch_target_state(network.config)
    try:
        wait_until(synced_to_validators(actor, network))
        listed = all_pages(actor, status="open")
        assert {v.id: v.model_ids for v in listed} == {i: t.model_ids for i, t in genesis_targets.items()}
        assert all(v.reward_pool == genesis_targets[v.id].reward_pool for v in listed)
        assert [m.model_id for m in ray.get(actor.active_models.remote(), timeout=30)] == genesis_models
        with pytest.raises(ModelHasNoWeights) as no_weights:  # the localnet's models have none
            ray.get(actor.model_manifests.remote(genesis_models[:1]), timeout=30)
        assert no_weights.value.model_id == genesis_models[0]

        filled = listed[0]
        assert fill(network, genesis_targets[filled.id]) == 1  # filled, then the epoch changed
        wait_until(synced_to_validators(actor, network))
        view = ray.get(actor.get_target.remote(filled.id), timeout=30)
        assert (view.status, view.submitter, view.fill_epoch) == ("filled", MINER.address, 0)
        assert {v.status for v in listed[1:]} == {"open"}
        assert {ray.get(actor.get_target.remote(v.id), timeout=30).status for v in listed[1:]} == {"expired"}
        assert len(all_pages(actor, status="open")) == 10  # the new epoch's targets
        (miner,) = ray.get(actor.leaderboard.remote(), timeout=30).miners
        assert (miner.address, miner.hits) == (MINER.address, 1)
        before = answers(actor)
        assert before[-1] is None

        pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
        os.kill(pid, signal.SIGKILL)  # Ray restarts it; it rebuilds from checkpoint 0
        wait_until(lambda: _restarted(actor, pid))
        wait_until(synced_to_validators(actor, network))
        assert answers(actor) == before
    finally:
        ray.kill(actor, no_restart=True)


def _restarted(actor, old_pid):
    try:
        return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=10) != old_pid
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False
