"""The e2e tier's networks, inside the shared Ray session under their own name prefixes.

A network with its services takes seconds to start on a 2-core machine, so some modules share
one: a *group* below is a list of modules that run one after another on the same network, each
on the chain the previous one left (the order matters: the first ones need epoch 0, or a chain
where nobody has mined yet). The collection hook puts a group's modules together, in that
order; the network starts with the first test that asks for it and stops after the group's last
test, before any other module runs. A module run alone (or with `-k`) gets a network of its own.
"""
from pathlib import Path

import pytest

from localnet_helpers import start_network, start_served

# group -> its modules, in the order they run on the group's network.
GROUPS = {
    # 4 validators, 60 s epochs: consensus, persistence and faults (the faults tests heal the
    # network before they end).
    "localnet": ("test_localnet.py", "test_localnet_faults.py"),
    # One validator with its services and real genesis weights. test_services needs the genesis
    # targets open (epoch 0) and changes no epoch and fills nothing; test_cli_guide needs epoch 0
    # with every target open, then advances two epochs.
    "weights": ("test_services.py", "test_cli_guide.py"),
    # One validator with its services, no genesis weights. test_board_command needs a chain where
    # only its own hit was made and only the genesis models are active; test_model_owner_flow
    # deactivates the model it publishes; test_participant_flow needs the genesis models (no
    # weights) to be the ones without weights on the targets it picks.
    "participants": ("test_board_command.py", "test_model_owner_flow.py", "test_participant_flow.py"),
}
_GROUP_OF = {module: group for group, modules in GROUPS.items() for module in modules}
_RUNNING: dict[str, object] = {}  # group -> its network, while the group's modules run


def _group(item) -> str | None:
    return None if item is None else _GROUP_OF.get(Path(item.path).name)


def shared_network(group: str, start):
    """The group's network: started by `start()` for the group's first test, the same one after."""
    if group not in _RUNNING:
        _RUNNING[group] = start()
    return _RUNNING[group]


def pytest_collection_modifyitems(items):
    """Each group's modules together, in the group's order, where its first module was."""
    placed: dict[str, list] = {}
    ordered = []
    for item in items:
        group = _group(item)
        if group is None:
            ordered.append(item)
        elif group not in placed:
            placed[group] = []
            ordered.append(group)
        if group is not None:
            placed[group].append(item)
    result = []
    for entry in ordered:
        if isinstance(entry, str):
            modules = GROUPS[entry]
            # A stable sort: each module's tests keep their order.
            result += sorted(placed[entry], key=lambda item: modules.index(Path(item.path).name))
        else:
            result.append(entry)
    items[:] = result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After the group's last test (and its modules' own fixtures), its network stops."""
    result = yield
    group = _group(item)
    if group in _RUNNING and _group(nextitem) != group:
        _RUNNING.pop(group).stop()
    return result


@pytest.fixture(scope="module")
def localnet(ray_session, tmp_path_factory):
    """4 validators, 60 s epochs (the `localnet` group's, or this module's own)."""
    return shared_network("localnet", lambda: start_network(tmp_path_factory, "localnet", epoch_duration_ms=60_000))


@pytest.fixture(scope="module")
def weights_network(ray_session, serve_url, tmp_path_factory):
    """One validator with its services and real genesis weights (the `weights` group's)."""
    return shared_network("weights", lambda: start_served(tmp_path_factory, serve_url, "weights", validators=1,
                                                          genesis_weights=True))


@pytest.fixture(scope="module")
def participants_network(ray_session, serve_url, tmp_path_factory):
    """One validator with its services, no genesis weights (the `participants` group's)."""
    return shared_network("participants", lambda: start_served(tmp_path_factory, serve_url, "participants",
                                                               validators=1))
