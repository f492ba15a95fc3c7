import os

import pytest
from hypothesis import settings


# Ray reads these at start; set them before any test starts Ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

# Property tests explore fixed example sequences, so a run is repeatable and a CI failure
# reproduces locally; no per-example deadline, since the 2-core machines are often loaded.
settings.register_profile("soma", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("soma")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session: starting Ray costs seconds on 2 cores.

    `address="local"` so a test never joins a cluster that happens to run on the machine.
    Tests must not call `ray.init`/`ray.shutdown` themselves.
    """
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100_000_000,
        log_to_driver=False,
        namespace="soma-test",
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_session):
    """Ray Serve on the shared Ray instance, its HTTP proxy on a free loopback port (never 8000,
    which a localnet may hold); yields the base URL. Each test module deploys its own
    applications under its own names and route prefixes and deletes them when done."""
    import socket

    from ray import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
