"""A validator's mempool is capped (`NetworkConfig.mempool_capacity`): beyond it, a submission is
refused with the typed `MempoolFull` at once, nothing of it is kept, and the same bytes go
through once the pool has drained. A transaction already in the pool can still be resubmitted.

One sender's share is capped too (`NetworkConfig.mempool_per_sender`): at most that many pooled
transactions, with nonces below its account nonce + that many; beyond it `SenderPoolFull` or
`NonceTooFarAhead`, while other senders are still admitted."""
import asyncio

import pytest

from localnet_helpers import (FEE, STOPPED, client_of, eventually, pooled_counts, run, start_network, statuses,
                              transfers, wait_until)
from soma_ray.client import FinalityTimeout
from soma_ray.protocol import errors
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CAPACITY = 4
PER_SENDER = 3


@pytest.fixture(scope="module")
def small_pool_net(ray_session, tmp_path_factory):
    network = start_network(tmp_path_factory, "pool", mempool_capacity=CAPACITY)
    yield network
    network.stop()


@pytest.fixture(scope="module")
def per_sender_net(ray_session, tmp_path_factory):
    network = start_network(tmp_path_factory, "sender", mempool_per_sender=PER_SENDER)
    yield network
    network.stop()


def test_full_mempool_refuses_with_a_typed_error_and_the_refused_transaction_goes_through_later(small_pool_net):
    network = small_pool_net
    alice, bob = preset_keypair("user", 0), preset_keypair("pool-bob", 0)
    for index in STOPPED:
        network.stop_validator(index)

    async def scenario():
        client = await client_of(network)
        client.network.validators[1] = None  # every submission goes to validator 0's pool
        start = (await client.get_account(alice.address)).nonce
        balance = await client.get_balance(alice.address)
        pooled, refused = transfers(network, alice, bob.address, range(start, start + CAPACITY)), \
            transfers(network, alice, bob.address, [start + CAPACITY])[0]
        waiting = [asyncio.create_task(client.submit(data, timeout_s=240)) for data in pooled]
        await asyncio.to_thread(wait_until, lambda: statuses(network, [0])[0].mempool == CAPACITY)

        with pytest.raises(errors.MempoolFull) as full:
            await client.submit(refused)
        assert full.value.capacity == CAPACITY
        with pytest.raises(errors.MempoolFull):  # the faucet's own transactions too
            await client.request_faucet(bob.address, SHANNONS_PER_SOMA)
        # Resubmitting a pooled transaction does not grow the pool: it is not refused, and gets
        # the same certified effects as the first submission.
        waiting.append(asyncio.create_task(client.submit(pooled[0], timeout_s=240)))

        for index in STOPPED:  # quorum again: the pool drains
            await asyncio.to_thread(network.relaunch_validator, index)
        effects = await asyncio.gather(*waiting)
        assert [e.nonce for e in effects] == [*range(start, start + CAPACITY), start]
        # The refused transaction was not kept anywhere: the same bytes are admitted now.
        last = await client.submit(refused)
        assert last.nonce == start + CAPACITY
        faucet = await client.request_faucet(bob.address, SHANNONS_PER_SOMA)
        assert faucet.error is None
        return balance, await client.get_balance(alice.address), await client.get_balance(bob.address)

    before, alice_after, bob_after = run(scenario())
    paid = CAPACITY + 1
    assert alice_after == before - paid * (SHANNONS_PER_SOMA + FEE)
    assert bob_after == (paid + 1) * SHANNONS_PER_SOMA


def test_a_faucet_request_that_cannot_commit_times_out_and_its_coins_arrive_later(small_pool_net):
    network = small_pool_net
    carol = preset_keypair("pool-carol", 0)
    for index in STOPPED:
        network.stop_validator(index)

    async def scenario():
        client = await client_of(network)
        # Without a quorum it cannot commit, however long it waits: a short wait times out.
        with pytest.raises(FinalityTimeout):
            await client.request_faucet(carol.address, SHANNONS_PER_SOMA, timeout_s=1.0)
        for index in STOPPED:
            await asyncio.to_thread(network.relaunch_validator, index)

        async def arrived():  # the admitted request commits once the quorum is back
            return await client.get_balance(carol.address) == SHANNONS_PER_SOMA

        return await eventually(arrived)

    assert run(scenario())


def test_one_sender_holds_at_most_its_share_of_the_mempool_and_others_are_still_admitted(per_sender_net):
    network = per_sender_net
    alice, bob = preset_keypair("user", 1), preset_keypair("user", 2)
    recipient = preset_keypair("pool-dave", 0).address
    for index in STOPPED:
        network.stop_validator(index)

    async def scenario():
        client = await client_of(network)
        client.network.validators[1] = None  # every submission goes to validator 0's pool
        start = (await client.get_account(alice.address)).nonce
        bob_start = (await client.get_account(bob.address)).nonce
        pooled = transfers(network, alice, recipient, range(start, start + PER_SENDER))
        beyond = transfers(network, alice, recipient, [start + PER_SENDER])[0]
        same_nonce = transfers(network, alice, recipient, [start], amount=2 * SHANNONS_PER_SOMA)[0]

        # Far ahead of the account: refused even while alice has nothing pooled.
        with pytest.raises(errors.NonceTooFarAhead) as ahead:
            await client.submit(beyond)
        assert (ahead.value.account_nonce, ahead.value.max, ahead.value.got) == \
            (start, start + PER_SENDER - 1, start + PER_SENDER)

        waiting = [asyncio.create_task(client.submit(data, timeout_s=240)) for data in pooled]
        await asyncio.to_thread(wait_until, lambda: pooled_counts(network) == [PER_SENDER] * 2)
        with pytest.raises(errors.SenderPoolFull) as full:
            await client.submit(beyond)
        assert (full.value.sender_pending, full.value.limit) == (PER_SENDER, PER_SENDER)
        with pytest.raises(errors.SenderPoolFull):  # another transaction for a pooled nonce: no second slot
            await client.submit(same_nonce)
        # Resubmitting a pooled one is not refused, and another sender is still admitted.
        waiting.append(asyncio.create_task(client.submit(pooled[0], timeout_s=240)))
        bob_waiting = asyncio.create_task(client.submit(transfers(network, bob, recipient, [bob_start])[0], timeout_s=240))
        await asyncio.to_thread(wait_until, lambda: pooled_counts(network) == [PER_SENDER + 1] * 2)
        # Gossip follows the same rule: the peer drops alice's extra transactions without a word.
        await network.validator(1).add_transactions.remote([beyond, same_nonce])
        assert await asyncio.to_thread(pooled_counts, network) == [PER_SENDER + 1] * 2

        for index in STOPPED:  # quorum again: everything admitted commits
            await asyncio.to_thread(network.relaunch_validator, index)
        effects = await asyncio.gather(*waiting)
        assert [e.nonce for e in effects] == [*range(start, start + PER_SENDER), start]
        assert (await bob_waiting).nonce == bob_start
        # The refused transaction was kept nowhere: the same bytes are admitted and commit now.
        assert (await client.submit(beyond)).nonce == start + PER_SENDER
        with pytest.raises(errors.BadNonce):  # the other one for nonce `start` lost: that nonce is used
            await client.submit(same_nonce)
        return await client.get_balance(recipient)

    assert run(scenario()) == (PER_SENDER + 2) * SHANNONS_PER_SOMA
