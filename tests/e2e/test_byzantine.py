"""One Byzantine validator of four (f = 1 of equal power): the three honest ones keep certifying
checkpoints with client transactions in them, and hold the same checkpoint, hence the same state
root, at every height.

Validator 3 is replaced by `actors.byzantine.ByzantineValidatorActor`; each test switches it to
one behaviour and checks on the honest cores (`stats`, `evidence`) or chains that the behaviour
really reached them."""
import os
import signal

import pytest
import ray

from soma_ray.node.evidence import in_byte_order
from actors.byzantine import BAD_TRANSACTIONS, EQUIVOCATE, GARBAGE, replace_with_byzantine
from localnet_helpers import FEE, client_of, run, sequences, start_network, statuses, transfers, wait_until
from soma_ray.consensus import verify_checkpoint_chain
from soma_ray.consensus.messages import CommitCertificate, ProposalEquivocation, VoteEquivocation
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.types import Account, Checkpoint, SignedTransaction, SystemState, Transaction, Transfer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SOMA = SHANNONS_PER_SOMA
BYZANTINE = 3
HONEST = [0, 1, 2]


@pytest.fixture(scope="module")
def byzantine_net(ray_session, tmp_path_factory):
    # Not the shared `localnet` fixture: its 60 s epoch would end during the module, and a new
    # epoch gives every validator a fresh consensus core, resetting the counters checked here.
    network = start_network(tmp_path_factory, "byzantine")
    try:
        replace_with_byzantine(network, BYZANTINE)
        wait_until(lambda: all(s.sequence is not None for s in statuses(network)))
        yield network
    finally:
        network.stop()


@pytest.fixture()
def byzantine(byzantine_net):
    """The Byzantine actor, honest again after the test."""
    handle = byzantine_net.validators[BYZANTINE]
    yield handle
    ray.get(handle.behave.remote(None), timeout=30)


def behave(network, handle, behaviour, entries=()):
    """Switch the Byzantine actor to `behaviour`, retried until it works on the honest nodes'
    next height (each call also catches it up from their disks). Returns the height the first
    call left it on: it may have signed there before the switch, and only there or below."""
    switched_at = []

    def in_step():
        working = ray.get(handle.behave.remote(behaviour, entries), timeout=60)
        switched_at.append(working)
        return working > max(sequences(network, HONEST))
    wait_until(in_step, timeout_s=30, interval_s=0.5)
    return switched_at[0]


def until_it_leads(network, handle, behaviour, predicate, entries=(), timeout_s=30):
    """Wait for `predicate` (what its leading did), catching the Byzantine actor up at each
    look: it leads only heights it reaches before the honest nodes decide them, and a replica
    that fell two heights behind under load does not close the gap by itself."""
    def led():
        ray.get(handle.behave.remote(behaviour, entries), timeout=60)
        return predicate()
    try:
        return wait_until(led, timeout_s=timeout_s, interval_s=0.5)
    except AssertionError:
        raise AssertionError(f"{behaviour}: not seen; honest stats {core_stats(network)}, "
                             f"heights {[s.sequence for s in statuses(network)]}") from None


def committee_index(handle):
    """The Byzantine validator's index in the committee (signers are committee indices, which
    follow the members' order, not the validators' names)."""
    return ray.get(handle.status.remote(), timeout=30).committee_index


# ---------------------------------------------------------------------- helpers

def core_stats(network, indices=HONEST):
    return [status.consensus for status in statuses(network, indices)]


def accounts(network, address, indices=HONEST):
    return [decode(raw, Account) for raw in
            ray.get([network.validators[i].get_account.remote(address) for i in indices], timeout=30)]


def honest_client(network):
    async def connect():
        client = await client_of(network)
        client.network.validators[BYZANTINE] = None  # submit to and read from honest replicas
        return client
    return run(connect())


def pay(network, name):
    """A faucet then a transfer by a client; both must be final on every honest replica."""
    alice, bob = preset_keypair(f"byz-{name}-alice", 0), preset_keypair(f"byz-{name}-bob", 0)
    client = honest_client(network)

    async def scenario():
        await client.request_faucet(alice.address, 10 * SOMA)
        effects = await client.transfer(alice, bob.address, 3 * SOMA)
        assert effects.error is None
    run(scenario())
    wait_until(lambda: all(a.balance == 3 * SOMA for a in accounts(network, bob.address)))
    assert all(a.balance == 7 * SOMA - FEE for a in accounts(network, alice.address))


def assert_honest_chains_agree(network, first: int, at_least: int) -> list[Checkpoint]:
    """The honest replicas hold the same certified checkpoints (so the same state roots) at
    every height from `first`, at least `at_least` of them, each certificate valid."""
    wait_until(lambda: min(sequences(network, HONEST)) >= first + at_least - 1)
    last = min(sequences(network, HONEST))
    chains = ray.get([network.validators[i].checkpoints.remote(first, last) for i in HONEST], timeout=30)
    values = [[(sequence, value) for sequence, value, _ in chain] for chain in chains]
    assert [sequence for sequence, _ in values[0]] == list(range(first, last + 1))
    assert values[0] == values[1] == values[2]
    system = decode(ray.get(network.validators[0].system_state.remote()), SystemState)
    certified = [(value, decode(certificate, CommitCertificate)) for _, value, certificate in chains[0]]
    assert verify_checkpoint_chain(system.committee, certified, first, chain_id=system.chain_id) == last + 1
    return [decode(value, Checkpoint) for _, value in values[0]]


# ---------------------------------------------------------------------- the scenarios

def test_equivocating_leader(byzantine_net, byzantine):
    first = max(sequences(byzantine_net, HONEST)) + 1
    before = core_stats(byzantine_net)
    behave(byzantine_net, byzantine, EQUIVOCATE)
    pay(byzantine_net, "equivocation")
    # It leads every fourth height: wait until an honest node holds both of its proposals.
    until_it_leads(byzantine_net, byzantine, EQUIVOCATE,
                   lambda: sum(s.get("equivocation", 0) for s in core_stats(byzantine_net))
                   > sum(s.get("equivocation", 0) for s in before))
    leader = committee_index(byzantine)
    kept = persisted_evidence(byzantine_net)
    caught = [e for found in kept for e in found if isinstance(e, ProposalEquivocation)]
    assert caught and all(e.first.signer == e.second.signer == leader for e in caught)
    assert all(e.first.value != e.second.value for e in caught)
    assert_honest_chains_agree(byzantine_net, first, at_least=8)
    assert_evidence_persisted(byzantine_net, leader)


def assert_evidence_persisted(network, leader):
    """Each honest replica keeps on disk what its core caught, once each, in byte order; a
    replica SIGKILLed and restarted by Ray still reports the same evidence."""
    kept = persisted_evidence(network)
    for stored in kept:
        assert len(set(stored)) == len(stored)
        assert all(in_byte_order(e) == e for e in stored)
    assert all(e.first.signer == e.second.signer == leader for stored in kept for e in stored)
    victim = max(range(len(HONEST)), key=lambda i: len(kept[i]))
    status = statuses(network, [HONEST[victim]])[0]
    assert status.evidence >= len(kept[victim]) > 0
    os.kill(status.pid, signal.SIGKILL)
    wait_until(lambda: statuses(network, [HONEST[victim]])[0].pid != status.pid)
    # It may have caught more since (the leader still equivocates), never fewer.
    assert persisted_evidence(network, [HONEST[victim]])[0][:len(kept[victim])] == kept[victim]
    wait_until(lambda: sequences(network, HONEST)[victim] >= max(sequences(network, HONEST)) - 1)


def persisted_evidence(network, indices=HONEST):
    """The evidence each validator's `evidence()` reports, decoded."""
    found = ray.get([network.validators[i].evidence.remote(0, 1_000) for i in indices], timeout=30)
    types = {"ProposalEquivocation": ProposalEquivocation, "VoteEquivocation": VoteEquivocation}
    return [[decode(found.record.evidence, types[found.record.kind]) for found in records]
            for records in found]


def test_garbage_signer(byzantine_net, byzantine):
    first = max(sequences(byzantine_net, HONEST)) + 1
    before = core_stats(byzantine_net)
    garbled_from = behave(byzantine_net, byzantine, GARBAGE) + 1  # it signs nothing valid from here on
    pay(byzantine_net, "garbage")
    assert_honest_chains_agree(byzantine_net, first, at_least=8)
    after = core_stats(byzantine_net)
    # Every honest node dropped its votes and proposals for their signatures...
    assert all(a.get("invalid_signature", 0) >= b.get("invalid_signature", 0) + 5
               for a, b in zip(after, before)), (before, after)
    # ...and certified the heights without it: no certificate carries a signature of it.
    latest, signer = min(sequences(byzantine_net, HONEST)), committee_index(byzantine)
    for _, _, certificate in ray.get(byzantine_net.validators[0].checkpoints.remote(garbled_from, latest)):
        assert signer not in decode(certificate, CommitCertificate).signer_indices


def test_bad_transaction_proposer(byzantine_net, byzantine):
    """Issue 18: a leader that puts entries that cannot execute into its checkpoint (a forged
    signature, a replay, a transaction whose sender cannot pay the fee) never gets it certified:
    every honest replica refuses the proposal, the round passes to the next leader."""
    carol, dave, mallory = (preset_keypair(f"byz-{n}", 0) for n in ("carol", "dave", "mallory"))
    broke = preset_keypair("byz-broke", 0)  # no balance at all
    client = honest_client(byzantine_net)

    async def fund_and_pay():
        await client.request_faucet(carol.address, 10 * SOMA)
        nonce = (await client.get_account(carol.address)).nonce
        good = transfers(byzantine_net, carol, dave.address, [nonce])[0]
        await client.submit(good)
        chain_id = await client.chain_id()
        # Carol's next transaction, signed by mallory's key under carol's public key.
        stolen = Transaction(sender=carol.address, nonce=nonce + 1,
                             kind=Transfer(recipient=mallory.address, amount=5 * SOMA), max_fee=FEE)
        forged = encode(SignedTransaction(stolen, carol.public_key, sign_transaction(mallory, stolen, chain_id).signature))
        unpaid = encode(sign_transaction(broke, Transaction(sender=broke.address, nonce=0,
                                                            kind=Transfer(recipient=mallory.address, amount=1), max_fee=0),
                                         chain_id))
        return good, forged, unpaid, nonce + 1

    good, forged, unpaid, next_nonce = run(fund_and_pay())
    first = max(sequences(byzantine_net, HONEST)) + 1

    def carol_everywhere():
        found = accounts(byzantine_net, carol.address)
        return found[0] if found[0].nonce == next_nonce and all(a == found[0] for a in found) else None

    carol_before = wait_until(carol_everywhere)
    smuggled = [unpaid, forged, good]  # good: a replay
    before = core_stats(byzantine_net)
    behave(byzantine_net, byzantine, BAD_TRANSACTIONS, smuggled)

    def refused_by_all_honest():
        return all(a.get("invalid_value", 0) > b.get("invalid_value", 0)
                   for a, b in zip(core_stats(byzantine_net), before))

    until_it_leads(byzantine_net, byzantine, BAD_TRANSACTIONS, refused_by_all_honest, smuggled)
    ray.get(byzantine.behave.remote(None), timeout=30)
    last = min(sequences(byzantine_net, HONEST))
    checkpoints = assert_honest_chains_agree(byzantine_net, first, at_least=last - first + 2)
    # No certified checkpoint carries any of them: nothing moved, no fee, no nonce.
    assert not [c.sequence for c in checkpoints if set(smuggled) & set(c.transactions)]
    assert all(a.balance == 0 for a in accounts(byzantine_net, mallory.address))
    assert all(a.balance == SOMA for a in accounts(byzantine_net, dave.address))
    assert all(a == carol_before for a in accounts(byzantine_net, carol.address))
    assert all(a.nonce == 0 and a.balance == 0 for a in accounts(byzantine_net, broke.address))
    # Carol's next nonce is still free: her own next transfer goes through.
    effects = run(client.transfer(carol, dave.address, SOMA))
    assert effects.error is None and effects.nonce == carol_before.nonce
    pay(byzantine_net, "after-bad-transactions")
