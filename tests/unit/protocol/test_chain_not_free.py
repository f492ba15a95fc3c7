"""Issue 18, "The chain cannot be used for free": each bullet of its "Why", tried on the pure
state machine as an attacker would. Each of these passed the attack through before protocol
version 4 and fails it now."""
import pytest

from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.errors import (
    FeeBelowBaseFee, FieldLengthMismatch, InsufficientBalanceForFees, InvalidSignature, InvalidUrl,
    NotFaucetAuthority, ProtocolError, ValueOutOfRange,
)
from soma_ray.protocol.genesis import genesis_chain_id, localnet_config, preset_keypair
from soma_ray.protocol.models import model_commitment
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import MODEL
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.types import CommitModel, CreateModel, Faucet, Model, Transfer, WeightsManifest

SOMA = 10**9


def test_a_keyless_zero_fee_transaction_cannot_fill_checkpoints_for_free():
    """Before: admitted, included with InsufficientFee, fee_charged 0, nonce unchanged, and the
    same bytes admitted and included again at every checkpoint."""
    sim = Simulator(localnet_config())
    fresh = Keypair.from_secret(b"\x5a" * 32)
    spam = sim.sign(fresh, Transfer(fresh.address, 1), max_fee=0)
    for _ in range(3):
        with pytest.raises(FeeBelowBaseFee):
            sim.submit(spam)
        checkpoint, effects = sim.make_checkpoint(extra=[spam])  # even a proposer's doing
        assert checkpoint.transactions == [] and effects == []
    paying_but_broke = sim.sign(fresh, Transfer(fresh.address, 1))
    with pytest.raises(InsufficientBalanceForFees):
        sim.submit(paying_but_broke)
    assert sim.make_checkpoint(extra=[paying_but_broke])[0].transactions == []
    assert sim.state.account(fresh.address).nonce == 0


def test_a_funded_account_cannot_drain_the_emission_pool_with_its_own_faucet():
    """Before: `Faucet(recipient=itself, 1,000 SOMA)` from any funded account executed, so a
    thousand of them per checkpoint drained the emission pool of a faucet-enabled genesis."""
    sim = Simulator(localnet_config())
    alice = preset_keypair("user", 0)
    pool, balance = sim.state.system().emission_pool.balance, sim.state.account(alice.address).balance
    for _ in range(3):
        with pytest.raises(NotFaucetAuthority):
            sim.submit_kind(alice, Faucet(alice.address, sim.params.faucet_max_amount))
    _, effects = sim.make_checkpoint(extra=[sim.sign(alice, Faucet(alice.address, sim.params.faucet_max_amount))])
    assert effects[0].error == NotFaucetAuthority(sender=alice.address).to_struct()  # it paid, it failed
    assert sim.state.system().emission_pool.balance == pool
    assert sim.state.account(alice.address).balance == balance - sim.params.base_fee
    # The faucet's own authority (a localnet's validator key, as the gateway's faucet signs) pays.
    sim.submit_kind(preset_keypair("validator", 0), Faucet(alice.address, SOMA))
    assert sim.make_checkpoint()[1][0].error is None
    assert total_supply(sim.state) == sim.params.genesis_supply


def test_a_transfer_signed_on_one_network_does_not_execute_on_another():
    """Before: signatures carried no chain identity, so a transfer signed on one localnet (whose
    preset keys are public) executed on every other one with the same balances."""
    here, there = localnet_config(), localnet_config()
    there.timestamp_ms = here.timestamp_ms + 1  # another localnet: a different genesis time
    assert genesis_chain_id(here) != genesis_chain_id(there)
    ours, theirs = Simulator(here), Simulator(there)
    alice, bob = preset_keypair("user", 0), preset_keypair("user", 1)
    signed_there = theirs.sign(alice, Transfer(bob.address, 10 * SOMA))
    theirs.submit(signed_there)
    assert theirs.make_checkpoint()[1][0].error is None
    before = ours.state.state_root()
    with pytest.raises(InvalidSignature):
        ours.submit(signed_there)
    assert ours.make_checkpoint(extra=[signed_there])[0].transactions == []
    assert ours.state.state_root() == before


@pytest.mark.parametrize("field", ["size -1", "size 0", "31-byte checksum", "31-byte key commitment",
                                   "31-byte weights commitment", "URL too long", "not http"])
def test_a_malformed_manifest_is_refused_and_cannot_be_committed(field):
    """Before: CommitModel took a manifest with size -1, a 31-byte checksum or key, or a URL of
    any length; every scoring request naming the model was then refused and audits of targets it
    served never voted, so a colluding owner and miner escaped fraud detection."""
    sim = Simulator(localnet_config())
    owner = preset_keypair("user", 2)
    sim.submit_kind(owner, CreateModel(stake=SOMA, commission_bps=0, architecture_version=1))
    model_id = sim.make_checkpoint()[1][0].created[0]
    long_url = "https://blobs.example/" + "w" * sim.params.max_url_bytes
    manifest = WeightsManifest("https://blobs.example/w", b"c" * 32, 1_000)
    commitments = [b"w" * 32, model_commitment(b"e"), model_commitment(b"k" * 32)]
    manifest, commitments, error = {
        "size -1": (WeightsManifest(manifest.url, manifest.checksum, -1), commitments,
                    ValueOutOfRange(field="weights_manifest.size", value=-1, min=1, max=sim.params.model_max_weight_size)),
        "size 0": (WeightsManifest(manifest.url, manifest.checksum, 0), commitments,
                   ValueOutOfRange(field="weights_manifest.size", value=0, min=1, max=sim.params.model_max_weight_size)),
        "31-byte checksum": (WeightsManifest(manifest.url, b"c" * 31, 1_000), commitments,
                             FieldLengthMismatch(field="weights_manifest.checksum", length=31, expected=32)),
        "31-byte key commitment": (manifest, commitments[:2] + [b"k" * 31],
                                   FieldLengthMismatch(field="key_commitment", length=31, expected=32)),
        "31-byte weights commitment": (manifest, [b"w" * 31] + commitments[1:],
                                       FieldLengthMismatch(field="weights_commitment", length=31, expected=32)),
        "URL too long": (WeightsManifest(long_url, manifest.checksum, 1_000), commitments, None),
        "not http": (WeightsManifest("ftp://blobs.example/w", manifest.checksum, 1_000), commitments,
                     InvalidUrl(field="weights_manifest.url", reason="it must start with http:// or https://")),
    }[field]
    commit = CommitModel(model_id, manifest, *commitments)
    with pytest.raises(ProtocolError) as refused:
        sim.submit_kind(owner, commit)
    if error is not None:
        assert refused.value == error
    else:
        assert refused.value.code == "FieldTooLong" and refused.value.max == 2_048
    # Included anyway (a proposer may include anything): the owner pays the fee, the model stays
    # Created, without a manifest.
    _, effects = sim.make_checkpoint(extra=[sim.sign(owner, commit)])
    assert effects[0].error == refused.value.to_struct() and effects[0].fee_charged == sim.params.base_fee
    model = sim.state.require(MODEL, model_id, Model)
    assert model.status == "Created" and model.weights_manifest is None
