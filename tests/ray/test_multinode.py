"""A testnet spread over several Ray nodes of this machine (tests/ray/multinode_scenario.py, in
its own process: the session's shared Ray cannot host a second cluster): validators pinned one
per node, keys made on their nodes, a node lost and replaced."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(420)

SCENARIO = Path(__file__).with_name("multinode_scenario.py")
ROOT = SCENARIO.parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("multinode")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(SCENARIO), str(data_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_validator_runs_on_the_node_offering_its_resource_and_the_clock_on_the_head(report):
    resource_of = report["node_resources"]
    assert [resource_of[node] for node in report["validator_nodes"]] == [
        f"validator{i}" for i in range(4)]
    assert len(set(report["validator_nodes"])) == 4
    assert report["clock_node"] == report["head_node"]


def test_the_genesis_committee_is_the_keys_made_on_the_nodes(report):
    assert report["committee"] == report["public_keys"]
    assert len(set(report["public_keys"])) == 4
    assert report["key_modes"] == ["0o600"] * 4


def test_a_testnet_genesis_has_no_faucet_or_early_epoch_change_unless_asked(report):
    assert report["faucet_enabled"] is False
    assert report["early_epoch_change"] is False


def test_the_others_commit_while_a_validator_node_is_gone(report):
    assert min(report["sequences_without_victim"]) >= report["sequence_at_removal"] + 3


def test_a_node_added_back_with_the_resource_runs_the_validator_which_catches_up(report):
    victim = report["victim"]
    moved_to = report["victim_node_after"]
    assert moved_to != report["validator_nodes"][victim]
    assert report["node_resources_after"][moved_to] == f"validator{victim}"
    assert report["victim_sequence"] >= report["target_sequence"]


def test_a_validator_restarted_in_place_comes_back_on_its_node_and_catches_up(report):
    old_pid, new_pid = report["restart_pids"]
    assert new_pid != old_pid
    assert report["restarted_node"] == report["head_node"]  # validator 0's node
    assert report["restarted_sequence"] >= report["restart_target"]
