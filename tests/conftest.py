import os
import tempfile

import pytest
from hypothesis import settings


# Ray reads these at start; set them before any test starts Ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# No node of a test cluster is ever preempted: no watcher actor per training run.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# No test reads or writes a developer's ~/.soma (the cluster record, the localnet data dir).
os.environ["SOMA_HOME"] = tempfile.mkdtemp(prefix="soma-test-home-")

# Property tests explore fixed example sequences, so a run is repeatable and a CI failure
# reproduces locally; no per-example deadline, since the 2-core machines are often loaded.
settings.register_profile("soma", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("soma")


METRICS_REPORT_INTERVAL_MS = 2_000


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
        # Metrics reach the export endpoint within ~2 s rather than Ray's default ~10 s: the
        # metrics tests poll it until a value shows.
        _system_config={"metrics_report_interval_ms": METRICS_REPORT_INTERVAL_MS},
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


# ------------------------------------------------------------------ tiers
#
# The suite runs in three tiers, in this order: tests/unit (no Ray, no network), tests/ray (the
# shared `ray_session`), tests/e2e (whole localnets on it). The order and the `ray` / `e2e`
# markers come from the directory, here, so that no test module can forget them and
# `pytest -m "not e2e"` (or `-m "not ray and not e2e"`) selects what it says.
#
# A module of the Ray or e2e tier none of whose tests uses the shared Ray (it starts Ray clusters
# of its own, in subprocesses) is marked `own_ray` too: scripts/test.sh runs the e2e tier in one
# pytest process and, beside it, the unit and Ray tiers and the `own_ray` e2e modules in another.
# The e2e modules of BESIDE (each starts a network no other module shares) are marked `beside`
# and run in the second process too, on its shared Ray, so that both take about as long (the
# summary's "slowest modules" line says what each spent).

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

TIERS = ("unit", "ray", "e2e")
BESIDE = ("test_gateway.py", "test_byzantine.py")
_TESTS = Path(__file__).resolve().parent


def _directory_tier(item) -> str | None:
    """'unit', 'ray' or 'e2e' for an item under tests/<tier>/, else None."""
    try:
        parts = Path(item.path).resolve().relative_to(_TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def _uses_shared_ray(item) -> bool:
    return "ray_session" in getattr(item, "fixturenames", ())


def _tier_rank(item) -> int:
    tier = _directory_tier(item)
    rank = TIERS.index(tier) if tier is not None else len(TIERS)  # elsewhere: after e2e
    if rank < TIERS.index("ray") and _uses_shared_ray(item):
        rank = TIERS.index("ray")  # never start Ray in the middle of the unit tier
    return rank


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    # Before every other implementation: the markers must be on the items when `-m` deselects.
    modules_on_shared_ray = {item.path for item in items if _uses_shared_ray(item)}
    for item in items:
        tier = _directory_tier(item)
        if tier in ("ray", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))
            if item.path not in modules_on_shared_ray:
                item.add_marker(pytest.mark.own_ray)
            if tier == "e2e" and Path(item.path).name in BESIDE:
                item.add_marker(pytest.mark.beside)
        elif _uses_shared_ray(item):
            item.add_marker(pytest.mark.ray)
            item.warn(pytest.PytestWarning(
                f"{item.nodeid} uses the shared Ray (`ray_session`) outside tests/ray and "
                "tests/e2e: it runs with the Ray tier; move it to tests/ray"))
    result = yield
    # After every other implementation (deselection, pytest's grouping by fixture scope): a
    # stable sort, so the order within a tier, and each module's tests together, are kept.
    items.sort(key=_tier_rank)
    return result


@pytest.fixture(autouse=True)
def _unit_tests_do_not_start_ray(request):
    """A unit test that starts Ray (ray.init, or a remote call that starts it implicitly) fails:
    it belongs in tests/ray, and a Ray left running would break `ray_session` later."""
    ray = sys.modules.get("ray")
    before = ray is not None and getattr(ray, "is_initialized", lambda: False)()
    yield
    if _directory_tier(request.node) != "unit" or before:
        return
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        pytest.fail(f"{request.node.nodeid} started Ray: a test that needs Ray belongs in tests/ray")


_TIER_SECONDS: dict[str, float] = {}
_MODULE_SECONDS: dict[str, float] = {}
SLOWEST_MODULES = 12


def pytest_runtest_logreport(report):
    """Time per tier and per module (setup, call and teardown; a module's or the session's
    fixtures count where they are set up), for the summary below: what to balance between the
    two processes of scripts/test.sh."""
    tier = next((t for t in TIERS if report.nodeid.startswith(f"tests/{t}/")), "other")
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration
    module = report.nodeid.split("::", 1)[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _TIER_SECONDS:
        spent = ", ".join(f"{tier} {seconds:.1f} s" for tier, seconds in _TIER_SECONDS.items())
        terminalreporter.write_line(f"time per tier: {spent}")
        slowest = sorted(_MODULE_SECONDS.items(), key=lambda kv: -kv[1])[:SLOWEST_MODULES]
        terminalreporter.write_line("slowest modules: " + ", ".join(
            f"{module.removeprefix('tests/')} {seconds:.0f} s" for module, seconds in slowest))
