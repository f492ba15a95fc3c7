"""Helpers to drive and watch a test localnet (imported by the e2e test modules)."""
import asyncio
import time
import uuid

import ray

from actors import network as net
from soma_ray.client import SomaClient


def run(coroutine):
    return asyncio.run(coroutine)


async def client_of(network):
    return await SomaClient(namespace=network.config.namespace, prefix=network.config.prefix)


def statuses(network, indices=None):
    """Status of the validators `indices` (all by default)."""
    chosen = range(len(network.validators)) if indices is None else indices
    return ray.get([network.validators[i].status.remote() for i in chosen], timeout=30)


def wait_until(predicate, timeout_s=60.0, interval_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError("condition not reached in time")


def same_root_at_same_height(network):
    """All validators at one sequence with one state root (or False while they differ)."""
    found = statuses(network)
    heights = {s["sequence"] for s in found}
    roots = {s["state_root"] for s in found}
    return found if len(heights) == 1 and len(roots) == 1 else False


def start_network(tmp_path_factory, name: str, epoch_duration_ms: int = 3_600_000, **settings):
    """A 4-validator network (epochs too long to end during a test unless told otherwise, and
    these other `NetworkConfig` settings), once every validator has opened its disk; stopped
    again if that does not happen in time."""
    config = net.NetworkConfig(
        data_dir=str(tmp_path_factory.mktemp(name)), validators=4, epoch_duration_ms=epoch_duration_ms,
        namespace="soma-test", prefix=f"{name}-{uuid.uuid4().hex[:6]}-", **settings)
    network = net.start(config)
    try:
        wait_until(lambda: all(s["sequence"] is not None for s in statuses(network)))
    except BaseException:
        network.stop()
        raise
    return network
