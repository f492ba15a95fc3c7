"""The BlobService Serve app over real HTTP on the shared Ray: uploads, downloads, limits,
error bodies and corrupted files, as a miner or model owner sees them; uploads only with a
ticket of the store's, cut when too slow, and never able to take the reads' capacity."""
import asyncio
import hashlib
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from soma_ray import tickets
from soma_ray.protocol.encoding import decode
from soma_ray.wire import Uploaded
from tests.e2e.localnet_helpers import wait_until, whole_http_answer

pytestmark = pytest.mark.ray

APP = "soma-test-blobs"
MAX_DATA = 64 * 1024
MAX_WEIGHTS = 3 * 1024 * 1024
KEY = b"k" * 32  # the store's ticket key: this module makes its tickets (no chain funds them)
ACCOUNT = b"\x0a" * 32
SLOW_IDLE_S = 3.0


def ticket(kind: str = "data", size: int = MAX_WEIGHTS) -> dict[str, str]:
    """The header of a fresh ticket of the store's for one upload."""
    made = tickets.issue(KEY, ACCOUNT, kind, size, os.urandom(16), tickets.now_ms())
    return {tickets.TICKET_HEADER: tickets.show_ticket(made)}


def put(base: str, kind: str, data, **kwargs) -> requests.Response:
    return requests.put(f"{base}/blobs/{kind}", data=data, headers=ticket(kind), timeout=60, **kwargs)


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

    from serve.blobs import UploadPolicy, blob_app

    root = tmp_path_factory.mktemp("blobs")
    serve.run(
        blob_app(str(root), MAX_DATA, MAX_WEIGHTS, public_url=serve_url, ticket_key=KEY,
                 policy=UploadPolicy(idle_s=SLOW_IDLE_S, deadline_base_s=10.0),
                 trusted_proxies=("127.0.0.1",)),  # so a test can speak for many clients
        name=APP,
        route_prefix="/blobs",
    )
    yield serve_url, root
    serve.delete(APP, _blocking=False)  # its replica's graceful shutdown overlaps the next module


def test_put_get_round_trip_addressed_by_blake2b(blobs):
    base, root = blobs
    data = os.urandom(MAX_DATA)  # exactly at the limit
    reply = put(base, "data", data)
    assert reply.status_code == 200, reply.text
    body = uploaded(reply)
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
    reply = put(base, "weights", in_pieces(weights))
    assert reply.status_code == 200, reply.text
    assert uploaded(reply).checksum.hex() == b2b(weights)
    with requests.get(uploaded(reply).url, stream=True, timeout=60) as got:
        assert got.status_code == 200
        received = b"".join(got.iter_content(256 * 1024))
    assert received == weights
    # The data route keeps its own, smaller limit.
    too_big = put(base, "data", in_pieces(weights[:MAX_DATA + 1]))
    assert too_big.status_code == 413


def test_chunked_upload_over_the_limit_is_413_and_nothing_is_stored(blobs):
    base, root = blobs
    before = stored(root)
    data = os.urandom(MAX_DATA + 1)
    reply = put(base, "data", in_pieces(data, 4096))
    assert reply.status_code == 413
    assert reply.json() == {"error": "BlobTooLarge", "fields": {"size_at_least": MAX_DATA + 1, "max": MAX_DATA}}
    assert stored(root) == before  # no blob, no temp file left behind
    assert requests.get(f"{base}/blobs/{b2b(data)}", timeout=60).status_code == 404


def test_declared_length_over_the_limit_is_refused(blobs):
    base, root = blobs
    before = stored(root)
    reply = put(base, "data", b"x" * (2 * MAX_DATA))
    assert reply.status_code == 413
    assert reply.json()["error"] == "BlobTooLarge"
    assert reply.json()["fields"]["max"] == MAX_DATA
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
    url = uploaded(put(base, "data", data)).url
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
    url = uploaded(put(base, "data", data)).url
    flip_byte(root / b2b(data), 4000)
    for _ in range(2):  # the first read finds it, later ones see the quarantine
        got = requests.get(url, timeout=60)
        assert got.status_code == 500
        assert got.json() == {"error": "BlobCorrupted", "fields": {"checksum": b2b(data)}}
    assert put(base, "data", data).status_code == 200
    got = requests.get(url, timeout=60)
    assert got.status_code == 200 and got.content == data


def test_corruption_deep_in_a_large_blob_cuts_the_download_short(blobs):
    base, root = blobs
    weights = os.urandom(3 * 1024 * 1024)
    url = uploaded(put(base, "weights", in_pieces(weights))).url
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
        header = "".join(f"{k}: {v}\r\n" for k, v in ticket("weights").items()).encode()
        conn.sendall(b"PUT /blobs/weights HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + header + b"\r\n")
        piece = os.urandom(256 * 1024)
        for _ in range(4):  # 1 MiB of a body that never ends
            conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        wait_until(lambda: stored(root) != before, timeout_s=60, interval_s=0.05)  # the upload is in progress
    # The client is gone mid-body: the temp file goes, nothing is stored.
    wait_until(lambda: stored(root) == before, timeout_s=60, interval_s=0.05)


def test_uploads_without_a_ticket_of_the_stores_are_401_and_store_nothing(blobs):
    base, root = blobs
    before = stored(root)
    data = os.urandom(1000)
    forged = tickets.issue(b"x" * 32, ACCOUNT, "data", 1000, os.urandom(16), tickets.now_ms())
    for headers in ({}, {tickets.TICKET_HEADER: tickets.show_ticket(forged)}, {tickets.TICKET_HEADER: "00ff"}):
        reply = requests.put(f"{base}/blobs/data", data=data, headers=headers, timeout=60)
        assert (reply.status_code, reply.json()["error"]) == (401, "UploadUnauthorized"), headers
    once = ticket("data", 1000)
    assert requests.put(f"{base}/blobs/data", data=data, headers=once, timeout=60).status_code == 200
    again = requests.put(f"{base}/blobs/data", data=os.urandom(10), headers=once, timeout=60)
    assert again.status_code == 401 and "used already" in again.json()["fields"]["reason"]
    assert set(stored(root)) - set(before) == {b2b(data), b2b(data) + ".chunks"}


def _slow_upload(base: str, client: str, size: int, pause_s: float, stop: threading.Event) -> bytes:
    """A chunked PUT from `client` (forwarded by this trusted proxy) sending one byte each
    `pause_s` until `stop` or the server answers; returns what the server answered."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    with socket.create_connection((host, port), timeout=60) as conn:
        header = "".join(f"{k}: {v}\r\n" for k, v in ticket("data", size).items())
        conn.sendall(f"PUT /blobs/data HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     f"X-Forwarded-For: {client}\r\n{header}\r\n".encode())
        conn.settimeout(pause_s)
        while not stop.is_set():
            try:
                conn.sendall(b"1\r\nx\r\n")
                answer = conn.recv(4096)
                if answer:
                    conn.settimeout(30)
                    return whole_http_answer(conn, answer)
            except socket.timeout:
                continue
            except OSError:
                return b""
        return b""


def test_a_stalled_upload_is_cut_with_408_and_leaves_nothing(blobs):
    base, root = blobs
    before = stored(root)
    started = time.monotonic()
    answer = _slow_upload(base, "192.0.2.1", 100, pause_s=SLOW_IDLE_S + 2, stop=threading.Event())
    assert answer.startswith(b"HTTP/1.1 408") and b"UploadTooSlow" in answer
    assert time.monotonic() - started < 30
    wait_until(lambda: stored(root) == before, timeout_s=30, interval_s=0.1)


def test_uploads_cannot_take_the_capacity_reads_need(blobs):
    from soma_ray.routes import RATE_LIMITS

    base, _root = blobs
    data = os.urandom(2000)
    url = uploaded(put(base, "data", data)).url
    stop = threading.Event()
    answers: list[bytes] = []
    slots = RATE_LIMITS["upload"].concurrent  # 8 uploads in flight for all clients
    threads = [threading.Thread(target=lambda i=i: answers.append(
        _slow_upload(base, f"198.51.100.{i}", 100, 0.5, stop))) for i in range(slots)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)  # every slow upload holds its slot (one byte per 0.5 s: never idle)
        one_more = requests.put(f"{base}/blobs/data", data=b"y", timeout=60,
                                headers={**ticket("data", 1), "X-Forwarded-For": "203.0.113.99"})
        assert one_more.status_code == 429, one_more.text
        assert one_more.json()["fields"] == {"rate_class": "upload", "scope": "all", "retry_after_s": 1}
        assert one_more.headers["retry-after"] == "1"
        read_started = time.monotonic()
        got = requests.get(url, timeout=60)
        assert got.status_code == 200 and got.content == data
        assert time.monotonic() - read_started < 5.0  # the reads' capacity was there
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
