"""BlobStore on a temporary directory, no Ray: addressing, limits, atomic writes, durability
across a restart, and corrupted files never served."""
import asyncio
import hashlib
import os
import time

import pytest

from serve.blobs import (
    BlobCorrupted,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    InvalidChecksum,
)


def b2b(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def pieces(data: bytes, size: int):
    return [data[i:i + size] for i in range(0, len(data), size)]


async def agen(parts, fail_after=None):
    for i, part in enumerate(parts):
        if fail_after is not None and i == fail_after:
            raise ConnectionResetError("client went away")
        await asyncio.sleep(0)
        yield part


def stored_names(root) -> list[str]:
    """Everything under root except the (empty) quarantine folder."""
    names = []
    for dirpath, _dirs, files in os.walk(root):
        names += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return sorted(names)


async def read_all(store, checksum) -> bytes:
    return await store.get(checksum)


def test_round_trip_address_is_plain_blake2b(tmp_path):
    data = os.urandom(1000)
    store = BlobStore(tmp_path, chunk_bytes=64)

    async def run():
        info = await store.put(agen(pieces(data, 37)), max_bytes=10_000)
        assert info == BlobInfo(checksum=b2b(data), size=1000)
        assert await store.get(info.checksum) == data
        assert await store.get(info.hex) == data  # hex addresses work too
        assert (await store.stat(info.checksum)).size == 1000
        return info

    info = asyncio.run(run())
    # The file on disk is the content itself, named by its address.
    assert (tmp_path / info.hex).read_bytes() == data
    assert stored_names(tmp_path) == sorted([info.hex, info.hex + ".chunks"])


def test_empty_blob(tmp_path):
    store = BlobStore(tmp_path)

    async def run():
        info = await store.put(agen([]), max_bytes=0)
        assert info == BlobInfo(b2b(b""), 0)
        assert await store.get(info.checksum) == b""

    asyncio.run(run())


def test_exactly_at_limit_accepted_one_over_refused_and_nothing_kept(tmp_path):
    store = BlobStore(tmp_path, chunk_bytes=16)
    data = os.urandom(100)

    async def run():
        info = await store.put(agen(pieces(data, 7)), max_bytes=100)
        assert info.size == 100 and await store.get(info.checksum) == data

    asyncio.run(run())
    other = BlobStore(tmp_path / "other", chunk_bytes=16)
    too_big = os.urandom(101)
    with pytest.raises(BlobTooLarge) as refused:
        asyncio.run(other.put(agen(pieces(too_big, 7)), max_bytes=100))
    assert refused.value.max == 100
    assert refused.value.size_at_least > 100
    assert stored_names(tmp_path / "other") == []
    with pytest.raises(BlobNotFound):
        asyncio.run(other.get(b2b(too_big)))


def test_limit_counts_bytes_not_pieces(tmp_path):
    # One piece far over the limit is refused before it is written.
    store = BlobStore(tmp_path)
    with pytest.raises(BlobTooLarge) as refused:
        asyncio.run(store.put(agen([b"x" * 5000]), max_bytes=4096))
    assert refused.value.values() == {"size_at_least": 5000, "max": 4096}
    assert stored_names(tmp_path) == []


def test_upload_failing_mid_stream_leaves_nothing(tmp_path):
    store = BlobStore(tmp_path, chunk_bytes=16)
    data = os.urandom(200)
    with pytest.raises(ConnectionResetError):
        asyncio.run(store.put(agen(pieces(data, 10), fail_after=12), max_bytes=1000))
    assert stored_names(tmp_path) == []


def test_cancelled_upload_leaves_nothing(tmp_path):
    store = BlobStore(tmp_path, chunk_bytes=16)

    async def run():
        started = asyncio.Event()

        async def stalled():
            yield b"a" * 40
            started.set()
            await asyncio.Event().wait()  # the client stops sending
            yield b"never"

        task = asyncio.create_task(store.put(stalled(), max_bytes=1000))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The clean-up runs in a thread: wait (generously) for the temp files to go.
        deadline = time.monotonic() + 10
        while stored_names(tmp_path) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert stored_names(tmp_path) == []


def test_reput_is_idempotent(tmp_path):
    store = BlobStore(tmp_path, chunk_bytes=16)
    data = os.urandom(50)

    async def run():
        first = await store.put(agen(pieces(data, 9)), max_bytes=100)
        second = await store.put(agen(pieces(data, 50)), max_bytes=100)
        assert first == second
        assert await store.get(first.checksum) == data
        return first

    info = asyncio.run(run())
    assert stored_names(tmp_path) == sorted([info.hex, info.hex + ".chunks"])


def test_blobs_survive_a_restart(tmp_path):
    data = os.urandom(3000)
    info = asyncio.run(BlobStore(tmp_path, chunk_bytes=256).put(agen(pieces(data, 100)), 10_000))
    # A new store on the same root (a restarted service) serves what the old one stored, even
    # with another chunk size configured (the sidecar records the one it was written with).
    reopened = BlobStore(tmp_path)
    assert asyncio.run(reopened.get(info.checksum)) == data


def test_stale_temps_of_a_killed_process_are_removed_at_start(tmp_path):
    stale = tmp_path / ".tmp-stale"
    fresh = tmp_path / ".tmp-fresh"
    stale.write_bytes(b"half an upload")
    fresh.write_bytes(b"an upload in progress")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    BlobStore(tmp_path)
    assert not stale.exists()
    assert fresh.exists()


def test_missing_and_malformed_checksums(tmp_path):
    store = BlobStore(tmp_path)
    absent = b2b(b"never stored")
    with pytest.raises(BlobNotFound) as missing:
        asyncio.run(store.get(absent))
    assert missing.value.checksum == absent.hex()
    for bad in ["abc", "zz" * 32, b"short", "0" * 63]:
        with pytest.raises(InvalidChecksum):
            asyncio.run(store.get(bad))


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_corrupted_single_chunk_blob_is_refused_before_any_byte(tmp_path):
    store = BlobStore(tmp_path)
    data = os.urandom(4096)
    info = asyncio.run(store.put(agen([data]), 10_000))
    flip_byte(tmp_path / info.hex, 1234)
    with pytest.raises(BlobCorrupted) as corrupted:
        asyncio.run(store.open(info.checksum))
    assert corrupted.value.checksum == info.hex
    # Quarantined: it stays refused (not reported as missing), and nothing is served.
    with pytest.raises(BlobCorrupted):
        asyncio.run(store.get(info.checksum))
    assert not (tmp_path / info.hex).exists()
    # Uploading the same content again repairs it.
    assert asyncio.run(store.put(agen([data]), 10_000)) == info
    assert asyncio.run(store.get(info.checksum)) == data


def test_corruption_deep_in_a_large_blob_stops_before_the_bad_chunk(tmp_path):
    store = BlobStore(tmp_path, chunk_bytes=100)
    data = os.urandom(1000)
    info = asyncio.run(store.put(agen(pieces(data, 333)), 10_000))
    flip_byte(tmp_path / info.hex, 750)  # in chunk 7

    async def run():
        received = bytearray()
        reader = await store.open(info.checksum)  # chunk 0 is fine
        assert reader.size == 1000
        with pytest.raises(BlobCorrupted):
            async for chunk in reader:
                received += chunk
        return bytes(received)

    received = asyncio.run(run())
    assert received == data[:700]  # every byte handed out is the blob's
    with pytest.raises(BlobCorrupted):
        asyncio.run(store.get(info.checksum))


def test_a_file_swapped_in_from_another_blob_is_refused_before_any_byte(tmp_path):
    # Content and sidecar of blob B put in place of blob A: each chunk matches its sidecar hash,
    # but the sidecar is sealed to B's address.
    store = BlobStore(tmp_path, chunk_bytes=100)
    a, b = os.urandom(450), os.urandom(450)

    async def run():
        ia = await store.put(agen([a]), 10_000)
        ib = await store.put(agen([b]), 10_000)
        os.replace(tmp_path / ib.hex, tmp_path / ia.hex)
        os.replace(tmp_path / (ib.hex + ".chunks"), tmp_path / (ia.hex + ".chunks"))
        with pytest.raises(BlobCorrupted):
            await store.open(ia.checksum)

    asyncio.run(run())


def test_a_damaged_sidecar_is_corrupted(tmp_path):
    store = BlobStore(tmp_path, chunk_bytes=100)
    data = os.urandom(450)
    info = asyncio.run(store.put(agen([data]), 10_000))
    sidecar = tmp_path / (info.hex + ".chunks")
    flip_byte(sidecar, os.path.getsize(sidecar) - 5)  # in the last chunk's hash
    with pytest.raises(BlobCorrupted):
        asyncio.run(store.stat(info.checksum))


def test_truncated_file_or_lost_sidecar_is_corrupted(tmp_path):
    store = BlobStore(tmp_path, chunk_bytes=100)
    one, two = os.urandom(500), os.urandom(500)
    i1 = asyncio.run(store.put(agen([one]), 10_000))
    i2 = asyncio.run(store.put(agen([two]), 10_000))
    with open(tmp_path / i1.hex, "r+b") as f:
        f.truncate(250)
    os.unlink(tmp_path / (i2.hex + ".chunks"))
    for info in (i1, i2):
        with pytest.raises(BlobCorrupted):
            asyncio.run(store.stat(info.checksum))  # caught without reading the content
        with pytest.raises(BlobCorrupted):
            asyncio.run(store.get(info.checksum))
