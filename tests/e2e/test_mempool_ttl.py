"""A transaction stays in a validator's mempool for `NetworkConfig.mempool_ttl_s` at most: one
whose earlier nonce never comes (or that nothing commits) is dropped then, its submitter gets
the typed `TransactionExpired`, and its sender's slot is free again."""
import asyncio

import pytest
import ray

from localnet_helpers import STOPPED, client_of, pooled_counts, run, start_network, transfers, wait_until
from soma_ray.protocol import errors
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TTL_S = 2
PER_SENDER = 2


@pytest.fixture(scope="module")
def halted_net(ray_session, tmp_path_factory):
    """A network that cannot commit: 2 of its 4 validators are stopped."""
    network = start_network(tmp_path_factory, "ttl", mempool_ttl_s=TTL_S,
                            mempool_per_sender=PER_SENDER)
    try:
        for index in STOPPED:
            network.stop_validator(index)
        yield network
    finally:
        network.stop()


def test_gapped_transactions_expire_with_a_typed_error_and_free_their_senders_slots(halted_net):
    alice, bob = preset_keypair("user", 0), preset_keypair("ttl-bob", 0)

    async def scenario():
        client = await client_of(halted_net)
        client.network.validators[1] = None  # every submission goes to validator 0's pool
        start = (await client.get_account(alice.address)).nonce
        # Nothing commits on the halted network: these two wait, taking alice's two slots (the
        # first for a nonce whose predecessor never comes); a third is refused.
        gapped = [transfers(halted_net, alice, bob.address, [nonce], amount=a * SHANNONS_PER_SOMA)[0]
                  for nonce, a in ((start + 1, 1), (start, 2), (start + 1, 3))]
        waiting = [asyncio.create_task(client.submit(data, timeout_s=60)) for data in gapped[:2]]
        await asyncio.to_thread(wait_until, lambda: pooled_counts(halted_net) == [PER_SENDER] * 2)
        with pytest.raises(errors.SenderPoolFull):
            await client.submit(gapped[2])

        for outcome in await asyncio.gather(*waiting, return_exceptions=True):
            assert isinstance(outcome, errors.TransactionExpired) and outcome.ttl_s == TTL_S
        # Dropped from both pools (the peer's gossiped copies expire there too): the slots are
        # free, so the refused one is admitted now, and expires in its turn.
        await asyncio.to_thread(wait_until, lambda: pooled_counts(halted_net) == [0, 0])
        with pytest.raises(errors.TransactionExpired):
            await client.submit(gapped[2], timeout_s=60)

    run(scenario())


def test_an_expired_faucet_transaction_leaves_no_nonce_gap_behind(halted_net):
    carol = preset_keypair("ttl-carol", 0)
    faucet_key = halted_net.config.validator_keypair(0).address

    def pooled_faucet_nonces():
        return ray.get(halted_net.validators[0].pooled_nonces.remote(faucet_key), timeout=30)

    async def scenario():
        client = await client_of(halted_net)
        client.network.validators[1] = None  # validator 0 signs the faucet transactions
        account_nonce = (await client.get_account(faucet_key)).nonce
        with pytest.raises(errors.TransactionExpired):
            await client.request_faucet(carol.address, SHANNONS_PER_SOMA)
        # The next request takes the expired one's nonce again: with the one after it, it
        # would wait for a nonce nobody sends.
        second = asyncio.create_task(client.request_faucet(carol.address, SHANNONS_PER_SOMA))
        await asyncio.to_thread(wait_until, lambda: pooled_faucet_nonces() == [account_nonce])
        with pytest.raises(errors.TransactionExpired):
            await second

    run(scenario())
