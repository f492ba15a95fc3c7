"""verify_checkpoint_chain: certified decisions checked from genesis with the committee alone."""
from __future__ import annotations

import msgspec
import pytest
from consensus_sim import FIRST_HEIGHT, SIM_CHAIN_ID, Simulation, equal_powers, make_committee, make_keypairs

from soma_ray.consensus import CertifiedValue, CheckpointChainBroken, value_digest, verify_checkpoint_chain


@pytest.fixture(scope="module")
def network() -> Simulation:
    sim = Simulation(equal_powers(4), seed=21)
    assert sim.run_until_height(FIRST_HEIGHT + 4, limit_ms=20_000)
    return sim


@pytest.fixture
def chain(network):
    node = network.nodes[0]
    return [node.decided[h] for h in sorted(node.decided)][:5]


def broken(committee, chain, first_height=FIRST_HEIGHT) -> CheckpointChainBroken:
    with pytest.raises(CheckpointChainBroken) as caught:
        verify_checkpoint_chain(committee, chain, first_height, chain_id=SIM_CHAIN_ID)
    return caught.value


def test_a_decided_chain_verifies_as_pairs_and_returns_the_next_height(network, chain):
    pairs = [(c.value, c.certificate) for c in chain]
    assert verify_checkpoint_chain(network.committee, pairs, FIRST_HEIGHT, chain_id=SIM_CHAIN_ID) == FIRST_HEIGHT + 5


def test_a_chain_certified_on_another_network_does_not_verify(network, chain):
    with pytest.raises(CheckpointChainBroken) as caught:
        verify_checkpoint_chain(network.committee, chain, FIRST_HEIGHT, chain_id=b"\x05" * 32)
    assert caught.value.index == 0


def test_a_changed_value_is_refused_at_its_position(network, chain):
    chain[2] = msgspec.structs.replace(chain[2], value=chain[2].value + b"!")
    error = broken(network.committee, chain)
    assert (error.index, error.height) == (2, FIRST_HEIGHT + 2)
    assert "digest" in error.reason


def test_a_certificate_relabelled_for_another_value_is_refused(network, chain):
    other = chain[2].value + b"!"
    relabelled = msgspec.structs.replace(chain[2].certificate, value_digest=value_digest(other))
    chain[2] = CertifiedValue(other, relabelled)
    error = broken(network.committee, chain)
    assert (error.index, error.height) == (2, FIRST_HEIGHT + 2)
    assert "signature" in error.reason


def test_a_gap_or_a_wrong_start_is_refused(network, chain):
    error = broken(network.committee, chain[:2] + chain[3:])
    assert (error.index, error.height) == (2, FIRST_HEIGHT + 3)
    assert broken(network.committee, chain, first_height=0).index == 0


def test_a_certificate_without_a_quorum_is_refused(network, chain):
    certificate = chain[1].certificate
    short = msgspec.structs.replace(
        certificate, signer_indices=certificate.signer_indices[:2], signatures=certificate.signatures[:2]
    )
    chain[1] = msgspec.structs.replace(chain[1], certificate=short)
    error = broken(network.committee, chain)
    assert error.index == 1
    assert "quorum" in error.reason


def test_a_forged_signature_is_refused(network, chain):
    certificate = chain[3].certificate
    forged = msgspec.structs.replace(certificate, signatures=[bytes(64)] + certificate.signatures[1:])
    chain[3] = msgspec.structs.replace(chain[3], certificate=forged)
    assert broken(network.committee, chain).index == 3


def test_another_committee_cannot_vouch_for_the_chain(chain):
    strangers = make_committee(make_keypairs(4, "strangers"), equal_powers(4))
    assert broken(strangers, chain).index == 0


def test_a_committee_per_height_checks_each_epoch_with_its_own_members(network, chain):
    strangers = make_committee(make_keypairs(4, "strangers"), equal_powers(4))
    switch = FIRST_HEIGHT + 3

    def committee_at(height: int):
        return network.committee if height < switch else strangers

    error = broken(committee_at, chain)
    assert (error.index, error.height) == (3, switch)
    assert verify_checkpoint_chain(committee_at, chain[:3], FIRST_HEIGHT, chain_id=SIM_CHAIN_ID) == switch
