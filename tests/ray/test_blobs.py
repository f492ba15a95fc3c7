"""The BlobService Serve app over real HTTP on the shared Ray: uploads, downloads, limits,
error bodies and corrupted files, as a miner or model owner sees them."""
import asyncio
import hashlib
import os

import pytest
import requests

from soma_ray.protocol.encoding import decode
from soma_ray.wire import Uploaded

pytestmark = pytest.mark.ray

APP = "soma-test-blobs"
MAX_DATA = 64 * 1024
MAX_WEIGHTS = 3 * 1024 * 1024


def b2b(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def in_pieces(data: bytes, size: int = 16 * 1024):
    """A generator body: requests sends it chunked, with no Content-Length."""
    for i in range(0, len(data), size):
        yield data[i:i + size]


def uploaded(response: requests.Response) -> Uploaded:
    """An upload's reply (msgpack, as every reply unless the client asks for JSON)."""
    return decode(response.content, Uploaded)


def stored(root) -> list[str]:
    return sorted(name for name in os.listdir(root) if name != ".quarantine")


@pytest.fixture(scope="module")
def blobs(serve_url, tmp_path_factory):
    from ray import serve

    from serve.blobs import blob_app

    root = tmp_path_factory.mktemp("blobs")
    serve.run(
        blob_app(str(root), MAX_DATA, MAX_WEIGHTS, public_url=serve_url),
        name=APP,
        route_prefix="/blobs",
    )
    yield serve_url, root
    serve.delete(APP)


def test_put_get_round_trip_addressed_by_blake2b(blobs):
    base, root = blobs
    data = os.urandom(MAX_DATA)  # exactly at the limit
    put = requests.put(f"{base}/blobs/data", data=data, timeout=60)
    assert put.status_code == 200, put.text
    body = uploaded(put)
    assert body == Uploaded(checksum=bytes.fromhex(b2b(data)), size=len(data), url=f"{base}/blobs/{b2b(data)}")
    got = requests.get(body.url, timeout=60)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["etag"] == f'"{b2b(data)}"'
    # The url is what the network's fetcher downloads.
    from soma_ray.fetch import fetch_bytes
    assert asyncio.run(fetch_bytes(body.url, MAX_DATA, 30, allowed_origins=(base,))) == data


def test_weights_streamed_in_and_out_across_chunks(blobs):
    base, _root = blobs
    weights = os.urandom(2 * 1024 * 1024 + 12345)
    put = requests.put(f"{base}/blobs/weights", data=in_pieces(weights), timeout=60)
    assert put.status_code == 200, put.text
    assert uploaded(put).checksum.hex() == b2b(weights)
    with requests.get(uploaded(put).url, stream=True, timeout=60) as got:
        assert got.status_code == 200
        received = b"".join(got.iter_content(256 * 1024))
    assert received == weights
    # The data route keeps its own, smaller limit.
    too_big = requests.put(f"{base}/blobs/data", data=in_pieces(weights[:MAX_DATA + 1]), timeout=60)
    assert too_big.status_code == 413


def test_chunked_upload_over_the_limit_is_413_and_nothing_is_stored(blobs):
    base, root = blobs
    before = stored(root)
    data = os.urandom(MAX_DATA + 1)
    put = requests.put(f"{base}/blobs/data", data=in_pieces(data, 4096), timeout=60)
    assert put.status_code == 413
    assert put.json() == {"error": "BlobTooLarge", "fields": {"size_at_least": MAX_DATA + 1, "max": MAX_DATA}}
    assert stored(root) == before  # no blob, no temp file left behind
    assert requests.get(f"{base}/blobs/{b2b(data)}", timeout=60).status_code == 404


def test_declared_length_over_the_limit_is_refused(blobs):
    base, root = blobs
    before = stored(root)
    put = requests.put(f"{base}/blobs/data", data=b"x" * (2 * MAX_DATA), timeout=60)
    assert put.status_code == 413
    assert put.json()["error"] == "BlobTooLarge"
    assert put.json()["fields"]["max"] == MAX_DATA
    assert stored(root) == before


def test_bad_checksum_400_unknown_404(blobs):
    base, _root = blobs
    for bad in ["abc", "g" * 64, "0" * 65]:
        got = requests.get(f"{base}/blobs/{bad}", timeout=60)
        assert got.status_code == 400, bad
        assert got.json()["error"] == "InvalidChecksum"
        assert got.json()["fields"]["checksum"] == bad
    unknown = b2b(b"nobody uploaded this")
    got = requests.get(f"{base}/blobs/{unknown}", timeout=60)
    assert got.status_code == 404
    assert got.json() == {"error": "BlobNotFound", "fields": {"checksum": unknown}}


def test_head_gives_the_size(blobs):
    base, _root = blobs
    data = os.urandom(1000)
    url = uploaded(requests.put(f"{base}/blobs/data", data=data, timeout=60)).url
    head = requests.head(url, timeout=60)
    assert head.status_code == 200
    assert head.headers["content-length"] == "1000"
    assert head.content == b""
    assert requests.head(f"{base}/blobs/{b2b(b'absent')}", timeout=60).status_code == 404
    assert requests.head(f"{base}/blobs/nothex", timeout=60).status_code == 400


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_blob_is_never_served_and_a_reupload_repairs_it(blobs):
    base, root = blobs
    data = os.urandom(5000)
    url = uploaded(requests.put(f"{base}/blobs/data", data=data, timeout=60)).url
    flip_byte(root / b2b(data), 4000)
    for _ in range(2):  # the first read finds it, later ones see the quarantine
        got = requests.get(url, timeout=60)
        assert got.status_code == 500
        assert got.json() == {"error": "BlobCorrupted", "fields": {"checksum": b2b(data)}}
    assert requests.put(f"{base}/blobs/data", data=data, timeout=60).status_code == 200
    got = requests.get(url, timeout=60)
    assert got.status_code == 200 and got.content == data


def test_corruption_deep_in_a_large_blob_cuts_the_download_short(blobs):
    base, root = blobs
    weights = os.urandom(3 * 1024 * 1024)
    url = uploaded(requests.put(f"{base}/blobs/weights", data=in_pieces(weights), timeout=60)).url
    flip_byte(root / b2b(weights), 2 * 1024 * 1024 + 10)  # in the third 1 MiB chunk
    received = bytearray()
    with pytest.raises(requests.exceptions.RequestException):
        with requests.get(url, stream=True, timeout=60) as got:
            assert got.status_code == 200  # the first chunk was sound when the headers went out
            for piece in got.iter_content(64 * 1024):
                received += piece
    assert len(received) < len(weights)
    assert bytes(received) == weights[:len(received)]  # not one corrupted byte arrived
    assert requests.get(url, timeout=60).status_code == 500


def test_an_upload_cut_off_by_the_client_leaves_nothing(blobs):
    import socket
    import time
    from urllib.parse import urlsplit

    base, root = blobs
    before = stored(root)
    host, port = urlsplit(base).hostname, urlsplit(base).port
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(b"PUT /blobs/weights HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = os.urandom(256 * 1024)
        for _ in range(4):  # 1 MiB of a body that never ends
            conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        deadline = time.monotonic() + 60
        while stored(root) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored(root) != before  # the upload is in progress on the server
    # The client is gone mid-body: the temp file goes, nothing is stored.
    deadline = time.monotonic() + 60
    while stored(root) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored(root) == before
