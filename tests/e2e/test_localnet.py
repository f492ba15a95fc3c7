"""A 4-validator localnet inside the shared Ray session: consensus, persistence, client, faults."""
import asyncio

import pytest

from soma_ray.protocol import errors
from soma_ray.protocol.genesis import preset_keypair
from localnet_helpers import FEE, client_of, run, same_root_at_same_height, transfers, wait_until
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.types import Transfer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SOMA = SHANNONS_PER_SOMA
CONCURRENT = 20


def test_faucet_then_transfer_is_final_on_every_validator(localnet):
    alice, bob = preset_keypair("e2e-alice", 0), preset_keypair("e2e-bob", 0)

    async def scenario():
        client = await client_of(localnet)
        await client.request_faucet(alice.address, 50 * SOMA)
        effects = await client.transfer(alice, bob.address, 7 * SOMA)
        assert effects.error is None
        return client, await client.get_balance(alice.address), await client.get_balance(bob.address)

    client, alice_balance, bob_balance = run(scenario())
    fee = 1_000
    assert (alice_balance, bob_balance) == (50 * SOMA - 7 * SOMA - fee, 7 * SOMA)
    wait_until(lambda: same_root_at_same_height(localnet))


def test_bad_transactions_get_typed_errors_and_change_nothing(localnet):
    from soma_ray.protocol.encoding import encode
    from soma_ray.protocol.execution import sign_transaction
    from soma_ray.protocol.types import SignedTransaction, Transaction

    carol, mallory = preset_keypair("e2e-carol", 0), preset_keypair("e2e-mallory", 0)

    async def scenario():
        client = await client_of(localnet)
        await client.request_faucet(carol.address, 10 * SOMA)
        before = await client.get_account(carol.address)
        tx = Transaction(sender=carol.address, nonce=before.nonce,
                         kind=Transfer(recipient=mallory.address, amount=SOMA), max_fee=1_000)
        chain_id = await client.chain_id()
        good = sign_transaction(carol, tx, chain_id)
        forged = SignedTransaction(tx, carol.public_key, sign_transaction(mallory, tx, chain_id).signature)
        with pytest.raises(errors.InvalidSignature):
            await client.submit(encode(forged))
        with pytest.raises(errors.MalformedInput):
            await client.submit(b"\x92not a transaction")
        with pytest.raises(errors.TransactionTooLarge):
            await client.submit(b"\x00" * (256 * 1024 + 1))
        await client.submit(encode(good))
        with pytest.raises(errors.BadNonce):  # the same bytes again: a replay
            await client.submit(encode(good))
        with pytest.raises(errors.InsufficientBalance):  # fails after ordering: only the fee is paid
            await client.transfer(carol, mallory.address, 100 * SOMA)
        return before, await client.get_account(carol.address), await client.get_balance(mallory.address)

    before, after, mallory_balance = run(scenario())
    assert mallory_balance == SOMA
    assert after.nonce == before.nonce + 2
    assert after.balance == before.balance - SOMA - 2 * 1_000


def test_stake_model_lifecycle_and_epoch_change_generate_targets(localnet):
    from soma_ray.protocol.models import model_commitment
    from soma_ray.protocol.state import MODEL, STAKED_SOMA, TARGET
    from soma_ray.protocol.targets import target_embedding
    from soma_ray.protocol.types import (
        AddStake, CommitModel, CreateModel, Model, RevealModel, StakedSoma, Target, WeightsManifest,
    )

    owner = preset_keypair("e2e-owner", 0)
    validator_address = localnet.config.validator_keypair(0).address

    async def scenario():
        client = await client_of(localnet)
        await client.request_faucet(owner.address, 100 * SOMA)
        staked = await client.execute(owner, AddStake(pool_owner=validator_address, amount=5 * SOMA))
        receipt = await client.get_object(STAKED_SOMA, staked.created[-1], StakedSoma)
        created = await client.execute(owner, CreateModel(stake=2 * SOMA, commission_bps=100,
                                                          architecture_version=1))
        model_id = created.created[0]
        system = await client.get_system_state()
        embedding = target_embedding(b"e2e-model".ljust(32, b"\0"),
                                     system.parameters.embedding_dim).astype("<f4").tobytes()
        key = b"k" * 32
        await client.execute(owner, CommitModel(
            model_id=model_id, weights_manifest=WeightsManifest("http://blobs/w", b"\1" * 32, 1024),
            weights_commitment=b"\2" * 32, embedding_commitment=model_commitment(embedding),
            key_commitment=model_commitment(key)))
        epoch = await client.advance_epoch()
        await client.execute(owner, RevealModel(model_id=model_id, decryption_key=key, embedding=embedding))
        model = await client.get_object(MODEL, model_id, Model)
        next_epoch = await client.advance_epoch()
        targets = [await client.get_object(TARGET, t, Target) for t in await client.get_object_ids(TARGET)]
        return system.epoch, epoch, next_epoch, receipt, model, targets

    start_epoch, epoch, next_epoch, receipt, model, targets = run(scenario())
    assert (epoch, next_epoch) == (start_epoch + 1, start_epoch + 2)
    assert receipt.owner == owner.address and receipt.principal == 5 * SOMA
    assert model.status == "Active"
    assert any(t.generation_epoch == next_epoch for t in targets)
    wait_until(lambda: same_root_at_same_height(localnet))


def test_back_to_back_transfers_of_one_key_all_commit(localnet):
    """Reads rotate over replicas that may lag a checkpoint; the client still picks fresh nonces."""
    erin, frank = preset_keypair("e2e-erin", 0), preset_keypair("e2e-frank", 0)

    async def scenario():
        client = await client_of(localnet)
        await client.request_faucet(erin.address, 10 * SOMA)
        return [(await client.transfer(erin, frank.address, 1)).nonce for _ in range(12)]

    async def read():
        client = await client_of(localnet)
        return await client.get_account(erin.address), await client.get_balance(frank.address)

    assert run(scenario()) == list(range(12))
    wait_until(lambda: same_root_at_same_height(localnet))  # then any replica answers alike
    erin_account, frank_balance = run(read())
    assert frank_balance == 12 and erin_account.nonce == 12


def test_more_waiting_submissions_than_rays_default_actor_concurrency_all_become_final(localnet):
    """1,200 single-transaction `submit` calls to one validator, all waiting for finality at once:
    past Ray's default of 1,000 concurrent calls the peers' consensus messages could not reach it."""
    import ray

    sender, recipient = preset_keypair("e2e-crowd", 0), preset_keypair("e2e-crowd", 1).address
    count = 1_200

    async def fund():
        client = await client_of(localnet)
        await client.request_faucet(sender.address, 10 * SOMA)
        return (await client.get_account(sender.address)).nonce

    nonce = run(fund())
    calls = [localnet.validators[0].submit.remote(data)
             for data in transfers(localnet, sender, recipient, range(nonce, nonce + count), amount=1)]
    results = ray.get(calls, timeout=120)
    assert all(r.failure() is None for r in results)
    wait_until(lambda: same_root_at_same_height(localnet))


# Concurrent `SomaClient.execute` calls for one key in one client take consecutive nonces and all
# commit; a call that fails without using its nonce hands it back to the key's next call, so the
# calls behind it are not blocked for ever.

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
