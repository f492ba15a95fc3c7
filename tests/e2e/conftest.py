"""A localnet per test module, inside the shared Ray session under its own name prefix."""
import uuid

import pytest

from actors import network as net
from localnet_helpers import statuses, wait_until


@pytest.fixture(scope="module")
def localnet(ray_session, tmp_path_factory):
    config = net.NetworkConfig(
        data_dir=str(tmp_path_factory.mktemp("localnet")), validators=4,
        namespace="soma-test", prefix=f"e2e-{uuid.uuid4().hex[:6]}-",
    )
    network = net.start(config)
    wait_until(lambda: all(s["sequence"] is not None for s in statuses(network)))
    yield network
    network.stop()
