"""Blob store throughput on this machine: PUT and GET MB/s through Ray Serve (HTTP on loopback)
and through BlobStore in process, against shutil.copyfile of the same bytes in this process.

    .venv/bin/python benchmarks/bench_blobs.py [--mb 64] [--repeats 3]

Runs its own local Ray (2 CPUs) and Serve on a free loopback port, in a temporary directory, and
shuts both down. Each figure is the best of `--repeats` runs. The store fsyncs every blob (file and
directory), so the copy baseline is printed with and without an fsync of the copy; GETs are read
from the page cache (the blob was just written), as is the copy's source.
"""
import argparse
import asyncio
import os
import shutil
import socket
import tempfile
import time

MIB = 1024 * 1024


def best_rate(size: int, repeats: int, run) -> float:
    """MB/s (10^6 bytes) of the fastest of `repeats` calls of `run`."""
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        run(i)
        best = min(best, time.perf_counter() - start)
    return size / best / 1e6


def pieces(data: bytes, size: int = MIB):
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield view[i:i + size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64, help="blob size in MiB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray
    import requests
    from ray import serve

    from serve.blobs import BlobStore, blob_app

    size = args.mb * MIB
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "source")
        data = os.urandom(size)
        with open(src, "wb") as f:
            f.write(data)

        def copy(i: int, sync: bool) -> None:
            dst = os.path.join(tmp, f"copy{i}{'s' if sync else ''}")
            shutil.copyfile(src, dst)
            if sync:
                fd = os.open(dst, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            os.unlink(dst)

        copy_rate = best_rate(size, args.repeats, lambda i: copy(i, False))
        copy_sync_rate = best_rate(size, args.repeats, lambda i: copy(i, True))

        # BlobStore in process: each repeat stores a fresh blob (same size, other bytes).
        local = BlobStore(os.path.join(tmp, "local"))
        blobs = [data[i:] + data[:i] for i in range(args.repeats)]
        infos = []
        local_put = best_rate(size, args.repeats, lambda i: infos.append(
            asyncio.run(local.put(pieces(blobs[i]), size))))

        async def read_all(checksum: bytes) -> None:
            async for _chunk in await local.open(checksum):
                pass

        local_get = best_rate(size, args.repeats, lambda i: asyncio.run(read_all(infos[i].checksum)))

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            base = f"http://127.0.0.1:{port}"
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(blob_app(os.path.join(tmp, "served"), MIB, size, public_url=base),
                      name="bench-blobs", route_prefix="/blobs")
            http = requests.Session()
            urls = []

            def put(i: int) -> None:
                reply = http.put(f"{base}/blobs/weights", data=pieces(blobs[i]), timeout=600)
                reply.raise_for_status()
                urls.append(reply.json()["url"])

            def get(i: int) -> None:
                received = 0
                with http.get(urls[i], stream=True, timeout=600) as reply:
                    reply.raise_for_status()
                    for chunk in reply.iter_content(MIB):
                        received += len(chunk)
                assert received == size

            serve_put = best_rate(size, args.repeats, put)
            serve_get = best_rate(size, args.repeats, get)
        finally:
            serve.shutdown()
            ray.shutdown()

    print(f"blob of {args.mb} MiB, best of {args.repeats}")
    print(f"shutil.copyfile              {copy_rate:8.0f} MB/s")
    print(f"shutil.copyfile + fsync      {copy_sync_rate:8.0f} MB/s")
    print(f"BlobStore.put (in process)   {local_put:8.0f} MB/s   {local_put / copy_sync_rate:5.2f}x copy+fsync")
    print(f"BlobStore.open (in process)  {local_get:8.0f} MB/s   {local_get / copy_rate:5.2f}x copy")
    print(f"PUT /blobs/weights (Serve)   {serve_put:8.0f} MB/s   {serve_put / copy_sync_rate:5.2f}x copy+fsync"
          f"   {serve_put / local_put:5.2f}x in-process put")
    print(f"GET /blobs/{{checksum}} (Serve){serve_get:8.0f} MB/s   {serve_get / copy_rate:5.2f}x copy"
          f"   {serve_get / local_get:5.2f}x in-process read")


if __name__ == "__main__":
    main()
