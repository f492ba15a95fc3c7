"""A localnet per test module, inside the shared Ray session under its own name prefix."""
import pytest

from localnet_helpers import start_network


@pytest.fixture(scope="module")
def localnet(ray_session, tmp_path_factory):
    network = start_network(tmp_path_factory, "localnet", epoch_duration_ms=60_000)
    yield network
    network.stop()
