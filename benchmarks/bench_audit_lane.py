"""The audit lane of the scoring service: an audit's latency with and without a flood of public
score requests.

Audits reach the scoring service through its deployment handle (RayTransport.score: the
in-cluster lane, whose sub-calls go first on the model replicas' compute thread), while the public
reaches it over HTTP (model ids only, at most 8 requests in flight for all clients and 2 per
client: soma_ray/routes.py RATE_LIMITS["score"]). Measured, one audit-sized request at a time
(3 models, 1 KiB of data, as an audit re-scores a submission):

  1. the in-cluster lane, quiet;
  2. the in-cluster lane while `--flood-clients` clients (each its own address, through
     X-Forwarded-For from this trusted proxy; in a process of their own) post public requests of
     `--flood-bytes` as fast as they are answered, after a 429 waiting its Retry-After (or
     `--flood-retry-s`, an attacker that ignores it);
  3. for comparison, `--http-audits` of the same audit requests posted over the public route
     during the flood (what an audit would meet without a lane of its own: the public's queue
     and limits), each given up after `--give-up-s`.

Runs its own local Ray (2 CPUs) and Serve on a free loopback port; the small (localnet) config,
weights served by a small HTTP server in this process.

    .venv/bin/python benchmarks/bench_audit_lane.py [--audits 40 --flood-clients 24 --flood-bytes 32768 --flood-retry-s 0.25]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer

import aiohttp
import msgspec
import numpy as np
import ray
from ray import serve

from bench_scoring_serve import Files, free_port, publish
from serve.scoring import ScoreRequest, StaticManifests, scoring_app
from soma_ray import wire
from soma_ray.model import V1Config

APP, PREFIX = "bench-audit-lane", "/bench-audit-lane"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def figures(name: str, latencies: list[float], refused: int = 0) -> str:
    if not latencies:
        return f"{name:44s} no answer ({refused} refused)"
    return (f"{name:44s} p50 {1000 * percentile(latencies, 0.5):8.1f} ms   p99 {1000 * percentile(latencies, 0.99):8.1f} ms"
            f"   max {1000 * max(latencies):8.1f} ms   mean {1000 * statistics.mean(latencies):8.1f} ms"
            + (f"   ({refused} refused 429)" if refused else ""))


async def audits_by_handle(handle, requests: list[ScoreRequest]) -> list[float]:
    latencies = []
    for request in requests:
        started = time.perf_counter()
        await handle.score.remote(request)
        latencies.append(time.perf_counter() - started)
    return latencies


async def audits_over_http(url: str, requests: list[ScoreRequest], give_up_s: float) -> tuple[list[float], int]:
    """The audit requests posted over the public route (by model ids), one at a time; a 429 is
    retried after its Retry-After, and its wait counts; after `give_up_s` without an answer the
    request counts as `give_up_s` (a lower bound) and the next one goes."""
    latencies, refused = [], 0
    async with aiohttp.ClientSession() as session:
        for request in requests:
            body = msgspec.msgpack.encode(msgspec.structs.replace(
                request, model_ids=[m.model_id for m in request.manifests], manifests=[]))
            started = time.perf_counter()
            while time.perf_counter() - started < give_up_s:
                async with session.post(url + "/score", data=body, headers={
                        "Content-Type": wire.MSGPACK, "X-Forwarded-For": "192.0.2.1"}) as reply:
                    await reply.read()
                    if reply.status == 429:
                        refused += 1
                        await asyncio.sleep(int(reply.headers["Retry-After"]))
                        continue
                    assert reply.status == 200, reply.status
                    break
            latencies.append(min(give_up_s, time.perf_counter() - started))
    return latencies, refused


def flood(url: str, body: bytes, clients: int, retry_s: float | None, stop, ready, counts_out) -> None:
    """The flood, in a process of its own (so that it takes no time from the measuring driver):
    `clients` clients, each its own address, posting as fast as they are answered; after a 429
    each waits its Retry-After (`retry_s` None), or `retry_s` (an attacker ignoring it)."""
    counts: dict[int, int] = {}

    async def run() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(i: int) -> None:
                while not stop.is_set():
                    async with session.post(url + "/score", data=body, headers={
                            "Content-Type": wire.MSGPACK, "X-Forwarded-For": f"10.7.{i // 250}.{i % 250}"}) as reply:
                        await reply.read()
                        counts[reply.status] = counts.get(reply.status, 0) + 1
                        ready.set()
                        if reply.status == 429:
                            await asyncio.sleep(int(reply.headers["Retry-After"]) if retry_s is None else retry_s)
            await asyncio.gather(*(one(i) for i in range(clients)))

    asyncio.run(run())
    counts_out.put(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--audits", type=int, default=40)
    parser.add_argument("--flood-clients", type=int, default=24)
    parser.add_argument("--flood-bytes", type=int, default=32 * 1024)
    parser.add_argument("--flood-retry-s", type=float, default=None,
                        help="seconds a flooder waits after a 429 (default: its Retry-After)")
    parser.add_argument("--http-audits", type=int, default=10, help="audit requests over the public route")
    parser.add_argument("--give-up-s", type=float, default=30.0)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    files = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{files.server_address[1]}"
    config = V1Config.small()
    with tempfile.TemporaryDirectory() as tmp:
        published = [publish(base, tmp, f"model-{i}".ljust(32, "-"), config, seed=i) for i in range(3)]
    manifests = [manifest for manifest, _ in published]
    handle = serve.run(scoring_app(config, device="cpu", max_replicas=1, allowed_origins=(base,),
                                   chain=StaticManifests(manifests), trusted_proxies=("127.0.0.1",)),
                       name=APP, route_prefix=PREFIX)
    url = f"http://127.0.0.1:{port}{PREFIX}"
    rng = np.random.default_rng(0)
    target = rng.normal(size=config.embedding_dim).astype("<f4").tobytes()
    audits = [ScoreRequest(manifests=manifests, target_embedding=target, data=rng.bytes(1024), seed=0)
              for _ in range(args.audits)]
    asyncio.run(audits_by_handle(handle, audits[:3]))  # loads the models; warms both paths
    quiet = asyncio.run(audits_by_handle(handle, audits))

    print(f"{args.audits} audit requests of 3 models x 1 KiB; flood: {args.flood_clients} clients x "
          f"{args.flood_bytes // 1024} KiB requests, after a 429 waiting "
          + ("its Retry-After" if args.flood_retry_s is None else f"{args.flood_retry_s} s"), flush=True)
    print(figures("audit, in-cluster lane, quiet", quiet), flush=True)

    flood_body = msgspec.msgpack.encode(ScoreRequest(model_ids=[m.model_id for m in manifests],
                                                     target_embedding=target, data=rng.bytes(args.flood_bytes)))
    spawn = multiprocessing.get_context("spawn")
    stop, ready, counts = spawn.Event(), spawn.Event(), spawn.Queue()
    flooding = spawn.Process(target=flood, args=(url, flood_body, args.flood_clients, args.flood_retry_s,
                                                  stop, ready, counts), daemon=True)
    flooding.start()
    ready.wait(180)
    time.sleep(5)  # the flood in full swing
    flood_started = time.perf_counter()
    loaded = asyncio.run(audits_by_handle(handle, audits))
    print(figures("audit, in-cluster lane, under the flood", loaded), flush=True)
    over_http, refused = asyncio.run(audits_over_http(url, audits[:args.http_audits], args.give_up_s))
    print(figures("audit over the public route, under the flood", over_http, refused)
          + f"   (gave up after {args.give_up_s:.0f} s: {sum(x >= args.give_up_s for x in over_http)})", flush=True)
    flood_s = time.perf_counter() - flood_started
    stop.set()
    answered = counts.get(timeout=60)
    flooding.join(timeout=30)
    health = handle.scoring_health.remote().result()
    print(f"flood answers (whole flood, {flood_s + 5:.0f} s of it measured): " + ", ".join(
        f"{status}: {n}" for status, n in sorted(answered.items()))
        + f"; mean batch {health['mean_batch_size']:.1f} items", flush=True)
    serve.delete(APP)
    serve.shutdown()
    files.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
