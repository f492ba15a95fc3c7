"""Catch-up trusts certificates, never a peer: a forged checkpoint or certificate changes nothing."""
import time
import uuid
from dataclasses import asdict, replace

import msgspec
import pytest
import ray

from actors import network as net
from actors.validator import InvalidCheckpoint, ValidatorActor
from soma_ray.consensus.errors import CheckpointChainBroken
from soma_ray.consensus.messages import CommitCertificate
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.types import Checkpoint

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def certified(ray_session, tmp_path_factory):
    """Three certified checkpoints from a running one-validator network, and its config."""
    config = net.NetworkConfig(data_dir=str(tmp_path_factory.mktemp("source")), validators=1,
                               namespace="soma-test", prefix=f"catchup-{uuid.uuid4().hex[:6]}-")
    network = net.start(config)
    try:
        source = network.validators[0]
        while (ray.get(source.status.remote())["sequence"] or 0) < 2:
            time.sleep(0.2)
        chain = ray.get(source.checkpoints.remote(0, 2))
    finally:
        network.stop()
    return network.config, chain


def replica(config, tmp_path):
    """A validator replica in this process (no Ray) on an empty disk of the same network."""
    return ValidatorActor(asdict(replace(config, data_dir=str(tmp_path))), 0)


def test_genuine_certified_checkpoints_are_applied(certified, tmp_path):
    config, chain = certified
    validator = replica(config, tmp_path)
    for sequence, value, certificate in chain:
        validator._apply_certified(sequence, value, certificate)
    assert validator.status()["sequence"] == 2


def test_forged_certificate_or_value_is_refused_and_changes_nothing(certified, tmp_path):
    config, chain = certified
    validator = replica(config, tmp_path)
    sequence, value, certificate = chain[0]
    before = validator.status()
    cert = decode(certificate, CommitCertificate)
    unsigned = encode(msgspec.structs.replace(cert, signer_indices=[], signatures=[]))
    with pytest.raises(CheckpointChainBroken):
        validator._apply_certified(sequence, value, unsigned)
    forged_value = encode(msgspec.structs.replace(decode(value, Checkpoint), state_root=bytes(32)))
    with pytest.raises(CheckpointChainBroken):  # the certificate names another value
        validator._apply_certified(sequence, forged_value, certificate)
    assert validator.status() == before


def test_certified_checkpoint_that_does_not_reexecute_is_refused(certified, tmp_path):
    """Even a correctly certified value is re-executed: a replica of another genesis refuses it."""
    config, chain = certified
    other = replace(config, genesis_timestamp_ms=config.genesis_timestamp_ms + 1)
    validator = replica(other, tmp_path)
    sequence, value, certificate = chain[0]
    with pytest.raises(InvalidCheckpoint):
        validator._apply_certified(sequence, value, certificate)
    assert validator.status()["sequence"] is None
