"""The epoch clock ends an epoch when consensus time passes its end, without advance_epoch."""
import uuid

import pytest

from actors import network as net
from localnet_helpers import client_of, run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_epoch_changes_when_consensus_time_passes_its_end(ray_session, tmp_path):
    config = net.NetworkConfig(data_dir=str(tmp_path), validators=1, epoch_duration_ms=2_000,
                               namespace="soma-test", prefix=f"clock-{uuid.uuid4().hex[:6]}-")
    network = net.start(config)
    try:
        async def scenario():
            client = await client_of(network)
            start = await client.get_system_state()
            reached = await client.wait_for_epoch(start.epoch + 2, timeout_s=90)
            now = await client.get_system_state()
            return start, reached, now

        start, reached, now = run(scenario())
        assert reached >= start.epoch + 2
        # Each epoch lasted at least its duration in consensus time.
        assert now.epoch_start_timestamp_ms - start.epoch_start_timestamp_ms >= 2 * 2_000
    finally:
        network.stop()
