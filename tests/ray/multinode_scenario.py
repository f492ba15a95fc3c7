"""A testnet on several Ray nodes of one machine, run as its own process (the test session holds
its own Ray): `python tests/ray/multinode_scenario.py DATA_DIR` prints one JSON object.

The head offers validator0, three worker nodes validator1..3. The testnet starts (keys made on
the nodes, validators pinned, the clock on the head); a worker node is removed and the others
must keep committing; a new node with that validator's resource joins, Ray restarts the
validator there from its data dir and it must catch up with the others; validator 0 is then
restarted in place. `ray.cluster_utils.Cluster` starts and ends only its own raylets.
"""
from __future__ import annotations

import json
import os
import sys
import time

import ray
from ray.cluster_utils import Cluster

from actors.testnet import TestnetSettings, pid_and_sequence, restart_in_place, start_testnet
from tests.e2e.localnet_helpers import wait_until

VALIDATORS = 4
NODE_ATTEMPTS = 3
DEADLINE_S = 120.0
# A removed node is declared dead after about period x threshold: seconds, not Ray's default ~30.
FAST_NODE_DEATH = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}


def node_of(handle, timeout_s: float = 60.0) -> str:
    return ray.get(handle.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()),
                   timeout=timeout_s)


def sequences(network, indices) -> list[int | None]:
    """Each validator's checkpoint sequence; None for one that does not answer (its node is gone)."""
    return [pid_and_sequence(network.validators[i])[1] for i in indices]


def wait_for(predicate, what: str):
    try:
        return wait_until(predicate, timeout_s=DEADLINE_S)
    except AssertionError:
        raise AssertionError(f"{what}: not within {DEADLINE_S} s") from None


def add_validator_node(cluster: Cluster, index: int):
    """A node offering validator<index>. On a starved machine Ray stops waiting for a new
    raylet to register after a fixed 30 s (it may still join later, as one more node offering
    the resource): then try again."""
    for attempt in range(NODE_ATTEMPTS):
        try:
            return cluster.add_node(num_cpus=0, resources={f"validator{index}": 1})
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception for this
            if "timed out during startup" not in str(error) or attempt == NODE_ATTEMPTS - 1:
                raise


def validator_resource_of_nodes() -> dict[str, str]:
    """The live nodes and the validator resource each offers, as Ray reports them."""
    return {node["NodeID"]: name for node in ray.nodes() if node["Alive"]
            for name in node["Resources"] if name.startswith("validator")}


def scenario(cluster: Cluster, data_dir: str) -> dict:
    ray.init(address=cluster.address, namespace="soma-multinode", log_to_driver=False)
    workers = {i: add_validator_node(cluster, i) for i in range(1, VALIDATORS)}
    started = time.monotonic()
    network = start_testnet(TestnetSettings(data_dir=data_dir, validators=VALIDATORS,
                                            namespace="soma-multinode", services=False),
                            detached=False, timeout_s=DEADLINE_S)
    wait_for(lambda: all((s or 0) >= 2 for s in sequences(network, range(VALIDATORS))),
             "first checkpoints")
    validator_nodes = [node_of(v) for v in network.validators]
    resources = validator_resource_of_nodes()
    # The victim: a validator on a node this process holds, the only one offering its resource
    # (a retry's late joiner would take it over at once).
    victim = next(i for i, node in workers.items() if node.node_id == validator_nodes[i]
                  and list(resources.values()).count(f"validator{i}") == 1)
    others = [i for i in range(VALIDATORS) if i != victim]
    report = {
        "head_node": cluster.head_node.node_id,
        "node_resources": resources,
        "validator_nodes": validator_nodes,
        "victim": victim,
        "clock_node": node_of(network.clock),
        "key_modes": [oct(os.stat(network.config.validator_dir(i) / "validator.key").st_mode & 0o777)
                      for i in range(VALIDATORS)],
        "committee": [v.public_key.hex() for v in network.config.genesis_config().validators],
        "public_keys": [network.config.validator_keypair(i).public_key.hex() for i in range(VALIDATORS)],
        "faucet_enabled": network.config.genesis_config().parameters.faucet_enabled,
        "early_epoch_change": network.config.genesis_config().parameters.allow_early_epoch_change,
        "started_s": round(time.monotonic() - started, 1),
    }

    cluster.remove_node(workers.pop(victim))
    removed = time.monotonic()
    wait_for(lambda: sequences(network, [victim]) == [None], "the removed node's validator gone")
    before = max(sequences(network, others))
    report["sequence_at_removal"] = before
    report["sequences_without_victim"] = wait_for(
        lambda: (found := sequences(network, others)) and min(s or 0 for s in found) >= before + 3
        and found, "commits without the removed node")
    report["progress_without_s"] = round(time.monotonic() - removed, 1)

    add_validator_node(cluster, victim)
    added = time.monotonic()
    target = max(sequences(network, others))
    report["target_sequence"] = target
    report["victim_sequence"] = wait_for(
        lambda: (s := sequences(network, [victim])[0]) is not None and s >= target and s,
        "the relaunched validator caught up")
    report["caught_up_s"] = round(time.monotonic() - added, 1)
    report["victim_node_after"] = node_of(network.validators[victim])
    report["node_resources_after"] = validator_resource_of_nodes()

    # An upgrade restarts each validator in place: a new process, the same node and disk.
    before = pid_and_sequence(network.validators[0])
    report["restart_target"] = max(sequences(network, range(1, VALIDATORS)))
    report["restarted_sequence"] = restart_in_place(network, 0, timeout_s=DEADLINE_S)
    report["restart_pids"] = [before[0], pid_and_sequence(network.validators[0])[0]]
    report["restarted_node"] = node_of(network.validators[0])
    return report


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"validator0": 1}, "include_dashboard": False,
        "object_store_memory": 80 * 1024 * 1024, "_system_config": FAST_NODE_DEATH})
    try:
        report = scenario(cluster, sys.argv[1])
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
