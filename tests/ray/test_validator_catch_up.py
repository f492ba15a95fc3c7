"""Catch-up trusts certificates, never a peer: a forged checkpoint or certificate changes nothing."""
import time
import uuid
from dataclasses import replace

import msgspec
import pytest
import ray

from actors import network as net
from soma_ray.node.executor import Executor, InvalidCheckpoint
from soma_ray.protocol.genesis import genesis, preset_keypair
from soma_ray.consensus.errors import CheckpointChainBroken
from soma_ray.consensus.messages import CommitCertificate
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.types import Account, Checkpoint

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def certified(ray_session, tmp_path_factory):
    """Three certified checkpoints from a running one-validator network, and its config."""
    config = net.NetworkConfig(data_dir=str(tmp_path_factory.mktemp("source")), validators=1,
                               namespace="soma-test", prefix=f"catchup-{uuid.uuid4().hex[:6]}-")
    network = net.start(config)
    try:
        source = network.validators[0]
        while (ray.get(source.status.remote()).sequence or 0) < 2:
            time.sleep(0.2)
        chain = ray.get(source.checkpoints.remote(0, 2))
    finally:
        network.stop()
    return network.config, chain


def replica(config):
    """A fresh replica's executor (what a validator on an empty disk catches up with)."""
    return Executor(genesis(config.genesis_config()), None)


def catch_up(executor, sequence, value, certificate):
    executor.apply(executor.certified(sequence, value, certificate))


def test_genuine_certified_checkpoints_are_applied(certified):
    config, chain = certified
    executor = replica(config)
    for sequence, value, certificate in chain:
        catch_up(executor, sequence, value, certificate)
    assert executor.latest.sequence == 2
    assert executor.state.state_root() == decode(chain[-1][1], Checkpoint).state_root


def test_forged_certificate_or_value_is_refused_and_changes_nothing(certified):
    config, chain = certified
    executor = replica(config)
    sequence, value, certificate = chain[0]
    root = executor.state.state_root()
    cert = decode(certificate, CommitCertificate)
    unsigned = encode(msgspec.structs.replace(cert, signer_indices=[], signatures=[]))
    with pytest.raises(CheckpointChainBroken):
        catch_up(executor, sequence, value, unsigned)
    forged_value = encode(msgspec.structs.replace(decode(value, Checkpoint), state_root=bytes(32)))
    with pytest.raises(CheckpointChainBroken):  # the certificate names another value
        catch_up(executor, sequence, forged_value, certificate)
    assert (executor.latest, executor.state.state_root()) == (None, root)


def test_certified_checkpoint_that_does_not_reexecute_is_refused(certified):
    """Even a correctly certified value is re-executed: a replica whose state differs refuses it."""
    config, chain = certified
    executor = replica(config)
    user = preset_keypair("user", 0).address
    executor.state.put_account(user, Account(balance=1, nonce=0))  # not the network's state
    root = executor.state.state_root()
    sequence, value, certificate = chain[0]
    with pytest.raises(InvalidCheckpoint):
        catch_up(executor, sequence, value, certificate)
    assert (executor.latest, executor.state.state_root()) == (None, root)


def test_a_checkpoint_certified_on_another_network_is_refused(certified):
    """Another genesis (here another genesis time) is another chain id: its certificates were
    signed under another domain and do not verify here (issue 18)."""
    config, chain = certified
    executor = replica(replace(config, genesis_timestamp_ms=config.genesis_timestamp_ms + 1))
    root = executor.state.state_root()
    sequence, value, certificate = chain[0]
    with pytest.raises(CheckpointChainBroken) as broken:
        catch_up(executor, sequence, value, certificate)
    assert "bad signature" in broken.value.reason
    assert (executor.latest, executor.state.state_root()) == (None, root)
