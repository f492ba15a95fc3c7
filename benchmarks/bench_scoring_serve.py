"""The scoring service against in-process scoring, and cold against warm request latency.

Throughput: the same items under the same 3 models, scored (a) in this process by
`score_many([m1, m2, m3], items)` and (b) through Serve as one request per item, all in flight
at once (each request fans out to 3 sub-calls, which replicas batch); the best round of each
side counts and the ratio in-process time / Serve time is printed (target >= 0.85). Scores
through Serve are checked to equal the in-process ones bit for bit.
Latency: one request alone for 3 models the service has never seen (download, checksum,
decrypt, load, score) against the same request once they are cached.

Runs its own local Ray (2 CPUs) and Serve on a free loopback port; weights are served by a
small HTTP server in this process. The small (localnet) config unless --tiny.

    .venv/bin/python benchmarks/bench_scoring_serve.py [--items 64 --max-bytes 1024 --rounds 3]
        [--via handle|http] [--cpus-per-replica 1] [--replicas 1] [--max-batch-size 16]
"""
from __future__ import annotations

import argparse
import asyncio
import http.server
import os
import socket
import statistics
import tempfile
import threading
import time

import msgspec
import numpy as np
import ray
import torch
from ray import serve

from serve.scoring import ModelManifest, ScoreRequest, ScoreResponse, scoring_app
from soma_ray.model import (
    V1Config,
    V1Model,
    encrypt_weights,
    load_weights,
    save_weights,
    score_many,
    weights_manifest,
)

APP, PREFIX = "bench-scoring", "/bench-scoring"


class Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args) -> None:
        pass


def publish(base: str, tmp: str, name: str, config: V1Config, seed: int):
    torch.manual_seed(seed)
    plain, sealed = os.path.join(tmp, name), os.path.join(tmp, name + ".enc")
    save_weights(V1Model(config), plain)
    key = encrypt_weights(plain, sealed)
    with open(sealed, "rb") as f:
        Files.files["/" + name] = f.read()
    manifest = ModelManifest.of(name.encode(), weights_manifest(sealed, f"{base}/{name}"), key)
    return manifest, load_weights(plain, config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def through_serve(via: str, handle, url: str, requests: list[ScoreRequest]):
    if via == "handle":
        return await asyncio.gather(*(handle.score.remote(r) for r in requests))
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async def post(r: ScoreRequest) -> ScoreResponse:
            async with session.post(url + "/score", data=msgspec.msgpack.encode(r),
                                    headers={"Content-Type": "application/msgpack"}) as reply:
                body = await reply.read()
                assert reply.status == 200, body[:200]
                return msgspec.msgpack.decode(body, type=ScoreResponse)

        return await asyncio.gather(*(post(r) for r in requests))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--max-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--via", choices=("handle", "http"), default="handle")
    parser.add_argument("--cpus-per-replica", type=float, default=1)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--cold-sets", type=int, default=3, help="fresh model sets for cold")
    parser.add_argument("--tiny", action="store_true", help="D=32, L=1, S=64 instead of small")
    args = parser.parse_args()
    # The same CPU budget on both sides: replicas x cpus_per_replica torch threads in all.
    torch.set_num_threads(max(1, int(args.cpus_per_replica * args.replicas)))
    config = (V1Config(embedding_dim=32, num_layers=1, num_heads=2, pwff_hidden_dim=64,
                       max_seq_len=64) if args.tiny else V1Config.small())

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    tmp = tempfile.mkdtemp(prefix="bench-scoring-")
    warm = [publish(base, tmp, f"m{i}", config, i) for i in range(3)]
    cold = [[publish(base, tmp, f"c{s}_{i}", config, 100 + 3 * s + i)[0] for i in range(3)]
            for s in range(args.cold_sets)]
    manifests, models = [m for m, _ in warm], [m for _, m in warm]
    rng = np.random.default_rng(0)
    items = [bytes(rng.integers(0, 256, int(n), dtype=np.uint8))
             for n in rng.integers(1, args.max_bytes + 1, args.items)]
    target = rng.normal(size=config.embedding_dim).astype(np.float32).tobytes()
    requests = [ScoreRequest(manifests=manifests, target_embedding=target, data=item)
                for item in items]

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        started = time.perf_counter()
        handle = serve.run(
            scoring_app(config, device="auto", cpus_per_replica=args.cpus_per_replica,
                        min_replicas=args.replicas, max_replicas=args.replicas,
                        max_batch_size=args.max_batch_size),
            name=APP, route_prefix=PREFIX)
        print(f"config {config}; {args.items} items of 1..{args.max_bytes} bytes, 3 models; "
              f"deployed in {time.perf_counter() - started:.1f} s; via {args.via}; "
              f"{args.replicas} replica(s) x {args.cpus_per_replica} CPU; "
              f"in-process torch threads={torch.get_num_threads()}")
        url = f"http://127.0.0.1:{port}{PREFIX}"
        loop = asyncio.new_event_loop()

        def serve_round():
            return loop.run_until_complete(through_serve(args.via, handle, url, requests))

        # Latency first, while nothing is cached: cold (3 new models) then warm (same ones).
        lat_cold, lat_warm = [], []
        for s, fresh in enumerate(cold):
            one = [ScoreRequest(manifests=fresh, target_embedding=target, data=items[s])]
            seconds, _ = timed(lambda: loop.run_until_complete(
                through_serve(args.via, handle, url, one)))
            lat_cold.append(seconds)
            for _ in range(3):
                seconds, _ = timed(lambda: loop.run_until_complete(
                    through_serve(args.via, handle, url, one)))
                lat_warm.append(seconds)

        score_many(models[0], items[:2])  # warm-up in process
        serve_round()  # loads the 3 models, warms the replicas
        local_s = serve_s = float("inf")
        for _ in range(args.rounds):
            seconds, per_model = timed(lambda: score_many(models, items))
            local_s = min(local_s, seconds)
            busy = handle.scoring_health.remote().result()["compute_s"]
            seconds, replies = timed(serve_round)
            if seconds < serve_s:
                serve_s = seconds
                serve_compute_s = handle.scoring_health.remote().result()["compute_s"] - busy
        exact = all(r.losses == [per_model[k][i].loss for k in range(3)]
                    for i, r in enumerate(replies))
        health = handle.scoring_health.remote().result()
        print(f"best of {args.rounds}: in-process score_many {local_s:.2f} s "
              f"({3 * args.items / local_s:.1f} item-models/s); through Serve {serve_s:.2f} s "
              f"({3 * args.items / serve_s:.1f} item-models/s); losses bit-identical: {exact}")
        print(f"inside score_many on the replicas: {serve_compute_s:.2f} s of the Serve round")
        print(f"throughput ratio Serve / in-process: {local_s / serve_s:.2f} (target >= 0.85); "
              f"mean batch size {health['mean_batch_size']:.1f} over {health['batches']} batches")
        print(f"one request, 3 models: cold (download + verify + decrypt + load) median "
              f"{statistics.median(lat_cold) * 1000:.0f} ms, warm median "
              f"{statistics.median(lat_warm) * 1000:.0f} ms; cold/warm "
              f"{statistics.median(lat_cold) / statistics.median(lat_warm):.1f}x")
        serve.delete(APP)
    finally:
        serve.shutdown()
        ray.shutdown()
        httpd.shutdown()


if __name__ == "__main__":
    main()
