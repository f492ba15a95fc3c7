"""The guide's flow through the SDK over HTTP alone, on a real localnet with its services: a model
is created, its encrypted weights uploaded, committed and revealed; a miner submits data to an
open target (commit, then reveal); two epochs later a claimer settles it and the miner, the
model's pool and the claimer get exactly the protocol's split. Bad input fails with its typed
error before anything is sent, and costs nothing."""
import numpy as np
import pytest

from localnet_helpers import funded, with_client
from soma_ray.client import SomaClient
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.submissions import required_bond
from soma_ray.protocol.state import STAKING_POOL, SUBMISSION, TARGET
from soma_ray.protocol.types import Model, StakingPool, Submission, Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
SOMA = 10**9
BPS = 10_000


@pytest.fixture(scope="module")
def gateway_url(participants_network):
    """One validator with its services (shared: tests/e2e/conftest.py); its gateway's URL."""
    return participants_network.config.public_url


async def open_target(client):
    epoch = (await client.get_epoch()).epoch
    for target_id in await client.get_object_ids(TARGET):
        target = await client.get_object(TARGET, target_id, Target)
        if target.status == "Open" and target.generation_epoch == epoch:
            return target
    raise AssertionError("no open target")


def test_publish_a_model_commit_then_reveal_in_the_next_epoch(gateway_url):
    async def scenario(client):
        owner = await funded(client, "flow-owner")
        model_id = await client.create_model(owner, commission_rate=1_000)
        encrypted, key = SomaClient.encrypt_weights(b"weights of a small model" * 100)
        url = await client.upload(encrypted, kind="weights", signer=owner)
        dim = await client.get_embedding_dim()
        embedding = np.linspace(-1, 1, dim, dtype=np.float32)
        await client.commit_model(owner, model_id, url, encrypted, key, embedding)
        with pytest.raises(errors.ModelRevealEpochMismatch):  # the reveal is due next epoch
            await client.reveal_model(owner, model_id, key, embedding)
        await client.advance_epoch()
        await client.reveal_model(owner, model_id, key, embedding)
        active = {m.model_id: m for m in await client.get_active_models()}
        fetched = await client.fetch_model(model_id)
        [manifest] = await client.get_model_manifests([model_id])  # from the target index
        assert (manifest.url, manifest.decryption_key, manifest.size) == (url, key, len(encrypted))
        return model_id, active, embedding, fetched

    model_id, active, embedding, fetched = with_client(gateway_url, scenario)
    assert model_id in active and active[model_id].commission_bps == 1_000
    assert active[model_id].embedding == embedding.astype("<f4").tobytes()
    assert fetched == b"weights of a small model" * 100  # downloaded, checked, decrypted


def test_submit_data_then_claim_pays_the_protocols_split(gateway_url):
    async def scenario(client):
        miner, claimer = await funded(client, "flow-miner"), await funded(client, "flow-claimer")
        target = await open_target(client)
        params = (await client.get_system_state()).parameters
        data = b"data whose embedding lands on the target"
        data_url = await client.upload(data, signer=miner)
        submission_id = await client.submit_data(
            miner, target.id, data, data_url, target.model_ids[0], np.frombuffer(target.embedding, "<f4"),
            distance_score=0.0, loss_score=2.5)
        filled = await client.get_object(TARGET, target.id, Target)
        submission = await client.get_object(SUBMISSION, submission_id, Submission)
        assert (filled.status, submission.revealed.data_hash) == ("Filled", blake2b256(data))
        assert await client.fetch_submission_data(target.id) == data
        mine = await client.get_targets("filled", submitter=miner.address)
        assert [(t.id, t.submission_id) for t in mine] == [(target.id, submission_id)]
        with pytest.raises(errors.AuditWindowOpen):  # claimable two epochs after the fill
            await client.claim_rewards(claimer, target.id)
        await client.advance_epoch()
        await client.advance_epoch()
        assert (await client.get_target(target.id)).status == "claimable"
        model = await client.get_object(b"m", submission.revealed.model_id, Model)
        before = (await client.get_balance(miner.address), await client.get_balance(claimer.address),
                  await pool_value(client, model.staking_pool_id))
        await client.claim_rewards(claimer, target.id)
        after = (await client.get_balance(miner.address), await client.get_balance(claimer.address),
                 await pool_value(client, model.staking_pool_id))
        assert (await client.get_target(target.id)).status == "settled"
        board = await client.get_leaderboard()
        assert any(m.address == miner.address and m.hits == 1 for m in board.miners)
        return params, filled.reward_pool, submission.bond, before, after

    params, reward, bond, before, after = with_client(gateway_url, scenario)
    fee = reward * params.claimer_fee_bps // BPS
    miner_share = (reward - fee) * params.submitter_share_bps // BPS
    assert after[0] - before[0] == miner_share + bond  # the miner's share and its bond back
    assert after[1] - before[1] == fee - params.base_fee  # the finder's fee, less its own fee
    assert after[2] - before[2] == reward - fee - miner_share  # the model's pool, commission included


async def pool_value(client, pool_id):
    pool = await client.get_object(STAKING_POOL, pool_id, StakingPool)
    return pool.soma_balance + pool.pending_stake


def test_bad_submissions_fail_before_anything_is_sent_and_cost_nothing(gateway_url):
    async def scenario(client):
        miner = await funded(client, "flow-careful")
        broke = preset_keypair("flow-broke", 0)
        target = await open_target(client)
        params = (await client.get_system_state()).parameters
        embedding = np.frombuffer(target.embedding, "<f4")
        start = await client.get_account(miner.address)
        with pytest.raises(errors.ModelHasNoWeights):  # the genesis models publish no weights
            await client.get_model_manifests(await client.get_target(target.id))
        far = target.distance_threshold / 10**9 + 0.01
        with pytest.raises(errors.DistanceExceedsThreshold):
            await client.submit_data(miner, target.id, b"x", "http://x", target.model_ids[0], embedding, far, 1.0)
        with pytest.raises(errors.InsufficientBalance) as poor:
            await client.submit_data(broke, target.id, b"x", "http://x", target.model_ids[0], embedding, 0.0, 1.0)
        assert poor.value.required >= required_bond(params, 1)
        with pytest.raises(errors.ObjectNotFound):
            await client.submit_data(miner, bytes(32), b"x", "http://x", target.model_ids[0], embedding, 0.0, 1.0)
        with pytest.raises(errors.MalformedInput):
            await client.submit_data(miner, "0x1234", b"x", "http://x", target.model_ids[0], embedding, 0.0, 1.0)
        if await expired_target(client) is None:
            await client.advance_epoch()  # this epoch's targets are open, last epoch's expired
        old = await expired_target(client)
        with pytest.raises(errors.TargetExpired):
            await client.submit_data(miner, old.id, b"x", "http://x", old.model_ids[0], embedding, 0.0, 1.0)
        return start, await client.get_account(miner.address)

    start, end = with_client(gateway_url, scenario)
    assert end == start  # no transaction was sent: same balance, same nonce


async def expired_target(client):
    epoch = (await client.get_epoch()).epoch
    for target_id in await client.get_object_ids(TARGET):
        target = await client.get_object(TARGET, target_id, Target)
        if target.status == "Open" and target.generation_epoch < epoch:
            return target
    return None


def test_a_filled_target_refuses_another_submission(gateway_url):
    async def scenario(client):
        first, second = await funded(client, "flow-first"), await funded(client, "flow-second")
        target = await open_target(client)
        embedding = np.frombuffer(target.embedding, "<f4")
        url = await client.upload(b"first", signer=first)
        await client.submit_data(first, target.id, b"first", url, target.model_ids[0], embedding, 0.0, 1.0)
        before = await client.get_account(second.address)
        with pytest.raises(errors.TargetNotOpen):
            await client.submit_data(second, target.id, b"second", url, target.model_ids[0], embedding, 0.0, 1.0)
        return before, await client.get_account(second.address)

    before, after = with_client(gateway_url, scenario)
    assert after == before
