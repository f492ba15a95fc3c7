"""Concurrent `SomaClient.execute` calls for one key in one client take consecutive nonces and all
commit; a call that fails without using its nonce hands it back to the key's next call, so the
calls behind it are not blocked for ever."""
import asyncio

import pytest

from localnet_helpers import client_of, run
from soma_ray.protocol import errors
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.types import Transfer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SOMA = SHANNONS_PER_SOMA
FEE = 1_000
CONCURRENT = 20


def test_concurrent_transfers_from_one_key_all_commit_and_balances_add_up(localnet):
    alice = preset_keypair("concurrent-alice", 0)
    recipients = [preset_keypair("concurrent-to", i).address for i in range(CONCURRENT)]

    async def scenario():
        client = await client_of(localnet)
        await client.request_faucet(alice.address, 100 * SOMA)
        before = await client.get_account(alice.address)
        effects = await asyncio.gather(*[client.transfer(alice, to, (i + 1) * 1_000)
                                         for i, to in enumerate(recipients)])
        balances = [await client.get_balance(to) for to in recipients]
        return before, effects, balances, await client.get_account(alice.address)

    before, effects, balances, after = run(scenario())
    assert all(e.error is None for e in effects)
    assert sorted(e.nonce for e in effects) == list(range(before.nonce, before.nonce + CONCURRENT))
    assert balances == [(i + 1) * 1_000 for i in range(CONCURRENT)]
    assert after.nonce == before.nonce + CONCURRENT
    assert after.balance == before.balance - sum(balances) - CONCURRENT * FEE


def test_a_nonce_refused_at_admission_is_taken_by_the_next_call_and_unblocks_those_behind(localnet):
    bob, carol = preset_keypair("concurrent-bob", 0), preset_keypair("concurrent-carol", 0)
    too_large = Transfer(recipient=bytes(300 * 1024), amount=1)  # over max_tx_bytes: never admitted

    async def scenario():
        client = await client_of(localnet)
        await client.request_faucet(bob.address, 10 * SOMA)
        before = await client.get_account(bob.address)
        # With max_fee given, each call goes straight to the key's lock: nonces in call order.
        pay = Transfer(recipient=carol.address, amount=1_000)
        first = [asyncio.create_task(client.execute(bob, pay, max_fee=FEE)) for _ in range(3)]
        refused = asyncio.create_task(client.execute(bob, too_large, max_fee=FEE))
        behind = [asyncio.create_task(client.execute(bob, pay, max_fee=FEE)) for _ in range(3)]
        with pytest.raises(errors.TransactionTooLarge):
            await refused  # its nonce is free again; the three behind it wait for that nonce
        filler = await client.execute(bob, pay, max_fee=FEE)
        effects = await asyncio.gather(*first, *behind)
        return before, filler, effects, await client.get_account(bob.address), \
            await client.get_balance(carol.address)

    before, filler, effects, after, carol_balance = run(scenario())
    assert filler.nonce == before.nonce + 3  # the refused call's nonce
    assert all(e.error is None for e in [filler, *effects])
    assert sorted(e.nonce for e in [filler, *effects]) == list(range(before.nonce, before.nonce + 7))
    assert after.nonce == before.nonce + 7 and carol_balance == 7 * 1_000
    assert after.balance == before.balance - 7 * (1_000 + FEE)
