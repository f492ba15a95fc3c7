"""The Byzantine actor catches up through the validator's own rejoin, with its behaviour already
set: the consensus core that the rejoin restarts signs as told from its first message on. A
garbage signer leaks no valid signature of its own, not even in a certificate it serves."""
import asyncio
import uuid
from dataclasses import asdict

import msgspec
import pytest

from actors import network as net
from actors.byzantine import GARBAGE, ByzantineValidatorActor
from actors.validator import ValidatorActor
from soma_ray.consensus.messages import (
    CertifiedValue, CommitCertificate, Message, Proposal, Step, Vote, proposal_signature_valid,
    sign_vote, vote_signature_valid,
)
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.genesis import genesis

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def committee_of(config: net.NetworkConfig):
    return genesis(config.genesis_config()).system().committee


def chain_id_of(config: net.NetworkConfig) -> bytes:
    return genesis(config.genesis_config()).system().chain_id


def signatures_valid(config, replica, sent: list[Message]) -> list[bool]:
    """For each proposal or vote the replica signed itself: whether its signature verifies."""
    me, committee, chain_id = replica.status().committee_index, committee_of(config), chain_id_of(config)
    own = [m for m in sent if isinstance(m, (Proposal, Vote)) and m.signer == me]
    return [(proposal_signature_valid if isinstance(m, Proposal) else vote_signature_valid)(committee, m, chain_id=chain_id)
            for m in own]


async def leader_of_its_first_height(config: net.NetworkConfig, sent: list) -> ByzantineValidatorActor:
    """An in-process replica (no peer is running) that leads the first height, hence proposes
    whenever its core starts that height."""
    for index in range(config.validators):
        replica = ByzantineValidatorActor(asdict(config), index)
        sent.clear()
        await replica.start_consensus()
        if any(isinstance(m, Proposal) for m in sent):
            return replica
    raise AssertionError("no validator leads round 0 of the first height")


def config_of(tmp_path) -> net.NetworkConfig:
    return net.NetworkConfig(data_dir=str(tmp_path), validators=4, namespace="soma-test",
                             prefix=f"hardening-{uuid.uuid4().hex[:6]}-")


@pytest.fixture()
def sent(monkeypatch) -> list[Message]:
    """What replicas in this process send to their peers (none of which runs)."""
    messages: list[Message] = []
    monkeypatch.setattr(ValidatorActor, "_send", lambda self, member, message: messages.append(decode(message, Message)))
    return messages


def test_rejoin_restarts_the_core_under_the_new_behaviour(ray_session, tmp_path, sent):
    config = config_of(tmp_path)

    async def scenario():
        replica = await leader_of_its_first_height(config, sent)
        sent.clear()
        height = await replica.behave(GARBAGE)  # the restarted core re-sends its proposal
        garbled = signatures_valid(config, replica, sent)
        sent.clear()
        await replica.behave(None)
        return height, garbled, signatures_valid(config, replica, sent)

    height, garbled, honest = asyncio.run(scenario())
    assert height == 0
    assert garbled and not any(garbled)
    assert honest and all(honest)


def test_garbage_signer_garbles_its_precommit_in_a_certificate_it_serves(ray_session, tmp_path, sent):
    config = config_of(tmp_path)

    async def scenario():
        replica = await leader_of_its_first_height(config, sent)
        await replica.behave(GARBAGE)
        return replica

    replica = asyncio.run(scenario())
    status, digest, committee = replica.status(), bytes(32), committee_of(config)
    me = status.committee_index
    chain_id = chain_id_of(config)
    own = sign_vote(config.validator_keypair(status.index), me, Step.PRECOMMIT, 0, 0, digest, chain_id=chain_id)
    other, theirs = (me + 1) % 4, bytes(range(64))  # another member's, passed on as is
    certificate = CommitCertificate(0, 0, digest, [me, other], [own.signature, theirs])
    sent.clear()
    replica._send(other, encode(CertifiedValue(b"value", certificate)))
    [served] = sent
    served_own, served_theirs = served.certificate.signatures
    assert not vote_signature_valid(committee, msgspec.structs.replace(own, signature=served_own), chain_id=chain_id)
    assert served_theirs == theirs
