"""Starting again on the same data dir resumes the chain; --force-regenesis starts a new one."""
import uuid

import pytest

from actors import network as net
from soma_ray.handles import find_actor
from soma_ray.config import save_config
from localnet_helpers import client_of, run, statuses
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.storage import ValidatorStore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_restart_resumes_from_the_data_dir_unless_regenesis_is_forced(ray_session, tmp_path):
    config = net.NetworkConfig(data_dir=str(tmp_path), validators=1, namespace="soma-test",
                               prefix=f"resume-{uuid.uuid4().hex[:6]}-")
    dave = preset_keypair("e2e-dave", 0).address

    async def fund_and_read():
        client = await client_of(network)
        await client.request_faucet(dave, 3)
        return (await client.get_checkpoint()).sequence

    async def read():
        client = await client_of(network)
        return await client.get_balance(dave), await client.get_checkpoint()

    network = net.start(config)
    sequence = run(fund_and_read())
    network.stop()

    network = net.start(config)
    try:
        balance, latest = run(read())
    finally:
        network.stop()
    assert balance == 3 and latest.sequence >= sequence

    network = net.start(config, force_regenesis=True)
    try:
        balance, _ = run(read())
    finally:
        network.stop()
    assert balance == 0


def test_a_disk_holding_another_genesis_is_refused_before_any_actor_starts(ray_session, tmp_path):
    # As a data dir from a soma-ray whose genesis encodes differently would be.
    config = net.NetworkConfig(data_dir=str(tmp_path), validators=2, namespace="soma-test",
                               prefix=f"foreign-{uuid.uuid4().hex[:6]}-")
    save_config(config)
    with ValidatorStore(config.validator_dir(1) / "db") as store:
        store.write_genesis(bytes(32), [])
    with pytest.raises(net.DataDirMismatch) as refused:
        net.start(config)
    assert refused.value.index == 1 and "--force-regenesis" in str(refused.value)
    assert find_actor(config.validator_name(0), config.namespace) is None
    with ValidatorStore(config.validator_dir(1) / "db") as store:
        assert store.genesis_digest() == bytes(32)  # nothing of the old disk was touched

    network = net.start(config, force_regenesis=True)  # a new chain there starts
    try:
        assert len(statuses(network)) == 2
    finally:
        network.stop()
