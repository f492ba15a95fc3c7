"""The soma_* metrics (soma_ray/metrics.py) as an operator sees them: scraped from each Ray node's
metrics export endpoint while a localnet with its gateway and target index runs, and while a
scoring service (tiny weights served from a local directory) answers.

Ray exports a recorded value about 10 s later, so every check polls the endpoint until the
series shows the value the network's own state says it must have."""
import functools
import http.server
import threading

import msgspec
import numpy as np
import pytest
import ray
import requests
import torch
from ray import serve

from soma_ray import metrics
from actors.target_state import launch_target_state
from localnet_helpers import run, start_network, statuses, wait_until
from soma_ray.protocol.errors import ModelUnavailable
from serve.gateway import gateway_app
from serve.scoring import ModelManifest, ScoreRequest, scoring_app
from soma_ray.client import SomaClient
from soma_ray.model import V1Config, V1Model, encrypt_weights, save_weights, weights_manifest
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.targets import DISTANCE_SCALE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

EXPORT_DEADLINE_S = 90.0  # Ray exports every ~10 s; generous for a loaded 2-core machine


@pytest.fixture(scope="module")
def served(ray_session, serve_url, tmp_path_factory):
    """A 4-validator localnet (hour-long epochs), its target index and its gateway."""
    network = start_network(tmp_path_factory, "metrics")
    config = network.config
    network.target_state = launch_target_state(config)  # network.stop() kills it
    route = config.route_prefix("gateway")
    serve.run(gateway_app(config.namespace, config.prefix, localnet=True),
              name=config.app_name("gateway"), route_prefix=route)
    yield network, serve_url + route
    network.stop()


def exported(check):
    """Poll the endpoint until `check(samples)` holds; the samples it held for."""
    found = []

    def holds():
        found[:] = [metrics.scrape()]
        return check(found[0])
    wait_until(holds, timeout_s=EXPORT_DEADLINE_S, interval_s=2.0)
    return found[0]


def label(network) -> str:
    return metrics.network_label(network.config.namespace, network.config.prefix)


def test_transactions_checkpoints_finality_mempool_and_gateway_requests(served):
    network, url = served
    alice, bob = preset_keypair("metrics-alice", 0), preset_keypair("metrics-bob", 0)

    async def pay() -> None:
        client = await SomaClient(rpc_url=url)
        try:
            await client.request_faucet(alice.address, 5 * 10**9)
            await client.transfer(alice, bob.address, 10**9)
        finally:
            await client.close()

    run(pay())
    bad = requests.get(f"{url}/accounts/0xnot-hex", timeout=30)
    assert 400 <= bad.status_code < 500
    # Every validator has committed both (no other traffic: the counts stay).
    committed = wait_until(lambda: (lambda found: found if len({s.committed_transactions for s in found}) == 1
                                    and found[0].committed_transactions >= 2 else None)(statuses(network)))
    net = label(network)

    def shows_the_state(samples) -> bool:
        return all(
            metrics.total(samples, metrics.FINALIZED_TRANSACTIONS.exported, network=net, validator=str(s.index))
            == s.committed_transactions
            and metrics.total(samples, metrics.CHECKPOINTS.exported, network=net, validator=str(s.index)) >= s.sequence + 1
            and metrics.total(samples, metrics.MEMPOOL_TRANSACTIONS.exported, network=net, validator=str(s.index)) == 0
            for s in committed) and (
            metrics.total(samples, metrics.FINALITY_SECONDS.exported + "_count", network=net) == 2
            and metrics.total(samples, metrics.GATEWAY_REQUESTS.exported, network=net, route="/accounts/{address}",
                      code=str(bad.status_code)) == 1)

    samples = exported(shows_the_state)
    # A counter never runs ahead of what the validator committed: one per checkpoint.
    for s in statuses(network):
        assert metrics.total(samples, metrics.CHECKPOINTS.exported, network=net, validator=str(s.index)) <= s.sequence + 1
    assert metrics.total(samples, metrics.FINALITY_SECONDS.exported + "_sum", network=net) > 0


def test_epoch_targets_and_distance_threshold_follow_the_chain(served):
    network, url = served
    epoch = requests.post(f"{url}/epoch/advance", timeout=120)
    assert epoch.ok
    latest = max(s.sequence for s in statuses(network))
    ray.get(network.target_state.wait_synced.remote(latest, 120.0), timeout=150)
    index = ray.get(network.target_state.status.remote(), timeout=30)
    assert index.epoch == 1
    net = label(network)

    async def threshold() -> float:
        client = await SomaClient(rpc_url=url)
        try:
            return (await client.get_system_state()).target_state.distance_threshold / DISTANCE_SCALE
        finally:
            await client.close()
    expected_threshold = run(threshold())

    def shows_the_index(samples) -> bool:
        return (metrics.total(samples, metrics.EPOCH.exported, network=net) == 1
                and all(metrics.total(samples, metrics.TARGETS.exported, network=net, status=status) == count
                        for status, count in index.counts)
                and metrics.total(samples, metrics.DISTANCE_THRESHOLD.exported, network=net) == pytest.approx(
                    expected_threshold))

    exported(shows_the_index)
    assert dict(index.counts)["expired"] > 0  # the genesis targets: the gauges saw a change


SCORING_APP = "metrics-scoring-test"
TINY = V1Config(embedding_dim=32, num_layers=1, num_heads=2, pwff_hidden_dim=64, max_seq_len=64)


@pytest.fixture(scope="module")
def scoring(serve_url, tmp_path_factory):
    """A scoring service and a manifest of tiny weights it downloads from a local HTTP server."""
    tmp = tmp_path_factory.mktemp("metrics-weights")
    files = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    torch.manual_seed(7)
    save_weights(V1Model(TINY), tmp / "plain.safetensors")
    key = encrypt_weights(tmp / "plain.safetensors", tmp / "weights.enc")
    url = f"http://127.0.0.1:{files.server_address[1]}/weights.enc"
    manifest = ModelManifest.of(b"m" * 32, weights_manifest(tmp / "weights.enc", url), key)
    handle = serve.run(scoring_app(TINY, device="cpu", max_replicas=1,
                                   allowed_origins=(f"http://127.0.0.1:{files.server_address[1]}",)),
                       name=SCORING_APP,
                       route_prefix=f"/{SCORING_APP}")
    yield handle, manifest
    serve.delete(SCORING_APP, _blocking=False)  # its replica's graceful shutdown overlaps the rest
    files.shutdown()


def test_scoring_cache_batches_latency_and_an_audit_recorded_with_one_call(scoring, served):
    handle, manifest = scoring
    network, _ = served

    @ray.remote(num_cpus=0)
    def audit() -> None:  # what the audit worker does after an audit
        metrics.record_audit(network.config, 2, "MinerWins", 1.5)

    ray.get(audit.remote(), timeout=60)

    def request(with_manifest) -> ScoreRequest:
        return ScoreRequest(manifests=[with_manifest], target_embedding=np.ones(TINY.embedding_dim, "<f4").tobytes(),
                            data=b"some bytes to score")

    for _ in range(2):  # a miss (the download), then a hit
        handle.score.remote(request(manifest)).result(timeout_s=120)
    # Weights the server does not have (another checksum, so not in the cache either).
    gone = msgspec.structs.replace(manifest, model_id=b"g" * 32, url=manifest.url + ".missing",
                                   checksum=bytes(32))
    with pytest.raises(ModelUnavailable):
        handle.score.remote(request(gone)).result(timeout_s=120)
    app = {"app": SCORING_APP}
    exported(lambda samples: metrics.total(samples, metrics.WEIGHTS_CACHE.exported, **app, result="hit") == 1
             and metrics.total(samples, metrics.WEIGHTS_CACHE.exported, **app, result="miss") == 2
             and metrics.total(samples, metrics.SCORING_SECONDS.exported + "_count", **app, outcome="ok") == 2
             and metrics.total(samples, metrics.SCORING_SECONDS.exported + "_count", **app, outcome="error") == 1
             # one item per score_many: the requests came one at a time; the failed one never ran
             and metrics.total(samples, metrics.SCORING_BATCH_SIZE.exported + "_bucket", **app, le="1.0") == 2
             and metrics.total(samples, metrics.SCORING_BATCH_SIZE.exported + "_count", **app) == 2
             and metrics.total(samples, metrics.AUDITS.exported, network=label(network), validator="2",
                               verdict="MinerWins") == 1
             and metrics.total(samples, metrics.AUDIT_SECONDS.exported + "_count", network=label(network),
                               validator="2") == 1)
