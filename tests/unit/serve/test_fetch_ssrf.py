"""Red team: the fetcher cannot be pointed inward (issue 19, SSRF).

A "trap" — a plain asyncio server on 127.0.0.1 (and ::1 where the machine has IPv6) on a port no
allow-list names — stands for the Ray dashboard or anything else on the host. Every way to name
it (IP literal, decimal/octal/hex IPv4, IPv6 loopback and IPv4-mapped forms, 0.0.0.0, localhost,
a DNS name resolving to loopback, a redirect from an allowed origin) must be refused before any
connection: the trap sees no connection, no socket connects to anything, and every answer is the
same FetchError reason. Private, link-local/metadata, CGNAT, multicast and reserved addresses are
refused the same way, and instantly (no connect attempt that could time out). An allowed origin
still works, redirects within it too, and each hop is resolved exactly once.
"""
import asyncio
import contextlib
import socket
import time

import pytest
from aiohttp import web

from soma_ray.fetch import FETCH_FAILED, MAX_REDIRECTS, FetchError, fetch_bytes, is_public_address

BODY = b"the blob store's bytes"


def run(coro):
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def trap():
    """A listener on 127.0.0.1 (and ::1 when possible) on one port; yields (port, accepted),
    `accepted` counting every connection it ever accepted."""
    accepted = []

    async def handle(reader, writer):
        accepted.append(writer.get_extra_info("peername"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    servers = [server]
    with contextlib.suppress(OSError):
        servers.append(await asyncio.start_server(handle, "::1", port))
    try:
        yield port, accepted
    finally:
        for each in servers:
            each.close()
            await each.wait_closed()


@contextlib.asynccontextmanager
async def blob_store(trap_port: int | None = None):
    """The network's own blob store on 127.0.0.1 (an allowed origin): /ok, a redirect chain
    /hop/{n} -> ... -> /ok, and /to?u=URL redirecting wherever it is told."""
    async def ok(request):
        return web.Response(body=BODY)

    async def hop(request):
        n = int(request.match_info["n"])
        raise web.HTTPFound("/ok" if n == 0 else f"/hop/{n - 1}")

    async def to(request):
        raise web.HTTPFound(request.query["u"])

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/hop/{n}", hop)
    app.router.add_get("/to", to)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def connects(monkeypatch):
    """Every address any socket in this process tries to connect to during the test."""
    attempts = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        attempts.append(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        attempts.append(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


@pytest.fixture
def dns(monkeypatch):
    """Fake DNS names (name -> list of addresses) on top of the real resolver; `dns.calls` counts
    lookups of fake names."""
    real = socket.getaddrinfo
    names: dict[str, list[str]] = {}
    calls: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if isinstance(host, str) and host in names:
            calls.append(host)
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (a, int(port), 0, 0) if ":" in a else (a, int(port))) for a in names[host]]
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    names_calls = type("Dns", (), {"names": names, "calls": calls})
    return names_calls


async def refused(url: str, **kwargs) -> FetchError:
    started = time.monotonic()
    with pytest.raises(FetchError) as failed:
        await fetch_bytes(url, 1000, 5, **kwargs)
    assert failed.value.reason == FETCH_FAILED and failed.value.url == url
    assert time.monotonic() - started < 2, url  # refused before any connect that could hang
    return failed.value


LOOPBACK_FORMS = [
    "http://127.0.0.1:{port}/", "http://127.1.2.3:{port}/", "http://127.0.0.1.:{port}/",
    "http://[::1]:{port}/", "http://[::ffff:127.0.0.1]:{port}/", "http://[::ffff:7f00:1]:{port}/",
    "http://[0:0:0:0:0:ffff:7f00:0001]:{port}/", "http://[::127.0.0.1]:{port}/",
    "http://[2002:7f00:1::]:{port}/", "http://[64:ff9b::7f00:1]:{port}/",
    "http://2130706433:{port}/", "http://0x7f000001:{port}/", "http://0177.0.0.1:{port}/",
    "http://127.1:{port}/", "http://0:{port}/", "http://0.0.0.0:{port}/", "http://[::]:{port}/",
    "http://localhost:{port}/", "http://LOCALHOST:{port}/", "http://localhost.:{port}/",
    "http://blobs.localhost:{port}/", "https://127.0.0.1:{port}/", "https://localhost:{port}/",
    # Forms URL parsing or IDNA turns into the same host: fullwidth digits, ideographic dots,
    # circled letters, a zone on ::1, hex with a short form (none needs a DNS server).
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{port}/", "http://127\u30020\u30020\u30021:{port}/",
    "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3:{port}/",
    "http://[::1%25lo]:{port}/", "http://0x7f.1:{port}/", "HTTP://127.0.0.1:{port}/",
]


def test_every_name_for_the_host_itself_is_refused_without_a_connection(connects):
    async def go():
        async with trap() as (port, accepted):
            for form in LOOPBACK_FORMS:
                await refused(form.format(port=port))
            await asyncio.sleep(0.1)
            assert accepted == []
        assert connects == []
    run(go())


def test_a_dns_name_that_resolves_inward_is_refused(connects, dns):
    async def go():
        async with trap() as (port, accepted):
            dns.names["inward.example"] = ["127.0.0.1"]
            dns.names["mapped.example"] = ["::ffff:127.0.0.1"]
            dns.names["metadata.example"] = ["169.254.169.254"]
            # Every address is checked: one public answer does not let a private one through.
            dns.names["mixed.example"] = ["8.8.8.8", "127.0.0.1"]
            dns.names["nothing.example"] = []
            for name in dns.names:
                await refused(f"http://{name}:{port}/")
            await asyncio.sleep(0.1)
            assert accepted == []
        assert connects == []
    run(go())


PRIVATE_AND_SPECIAL = [
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254", "192.168.1.1",  # RFC 1918
    "169.254.169.254", "169.254.0.1", "[fe80::1]", "[fe80::a9fe:a9fe]",  # link-local, metadata
    "100.64.0.1", "100.127.255.254",  # CGNAT
    "[fc00::1]", "[fd12:3456::1]",  # unique local
    "224.0.0.1", "239.255.255.250", "[ff02::1]", "[ff0e::1]",  # multicast
    "255.255.255.255", "240.0.0.1", "0.1.2.3", "192.0.2.1", "198.18.0.1",  # reserved, broadcast
    "[::ffff:10.0.0.1]", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]",  # mapped private
    "[2002:a9fe:a9fe::]", "[64:ff9b::a9fe:a9fe]", "[::169.254.169.254]",  # 6to4, NAT64, compat
    "[fec0::1]", "[2001:db8::1]", "[100::1]",  # site-local, documentation, discard
    "2852039166", "0xa9fea9fe", "0251.0376.0251.0376",  # 169.254.169.254 in legacy forms
    "metadata.google.internal.localhost",
]


def test_private_link_local_metadata_cgnat_multicast_and_reserved_are_refused(connects):
    async def go():
        for host in PRIVATE_AND_SPECIAL:
            await refused(f"http://{host}/latest/meta-data/")
        assert connects == []
    run(go())


def test_a_redirect_from_an_allowed_origin_inward_is_refused(connects):
    async def go():
        async with trap() as (port, accepted), blob_store() as store:
            inward = [form.format(port=port) for form in LOOPBACK_FORMS] + [
                "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "file:///etc/passwd",
                f"//127.0.0.1:{port}/", f"http://user:pw@127.0.0.1:{port}/"]
            for target in inward:
                url = f"{store}/to?u={target}"
                await refused(url, allowed_origins=[store])
            await asyncio.sleep(0.1)
            assert accepted == []
        # Connections went to the blob store only.
        assert {address[1] for address in connects} == {int(store.rsplit(":", 1)[1])}
    run(go())


def test_every_failure_gives_the_same_answer():
    async def go():
        answers = set()
        async with trap() as (port, accepted), blob_store() as store:
            for url, allowed in [
                (f"http://127.0.0.1:{port}/", []),  # something listens, refused
                (f"{store}/missing", [store]),  # 404 from an allowed origin
                (f"{store}/to?u=http://127.0.0.1:{port}/", [store]),  # redirect inward
                (f"{store}/hop/{MAX_REDIRECTS + 1}", [store]),  # too many redirects
                ("http://169.254.169.254/", []),  # metadata
                ("ftp://example.com/", []),  # scheme
                ("http://user:pw@example.com/", []),  # credentials
            ]:
                with pytest.raises(FetchError) as failed:
                    await fetch_bytes(url, 1000, 5, allowed_origins=allowed)
                answers.add(failed.value.reason)
        # Nothing listens on the trap's port any more: connection refused, same answer.
        with pytest.raises(FetchError) as failed:
            await fetch_bytes(f"http://127.0.0.1:{port}/", 1000, 5,
                              allowed_origins=[f"http://127.0.0.1:{port}"])
        answers.add(failed.value.reason)
        assert answers == {FETCH_FAILED}
        assert str(port) not in FETCH_FAILED and "refused" not in FETCH_FAILED
    run(go())


def test_an_allowed_origin_works_and_so_do_redirects_within_it():
    async def go():
        async with blob_store() as store:
            assert await fetch_bytes(f"{store}/ok", 100, 5, allowed_origins=[store]) == BODY
            assert await fetch_bytes(f"{store}/hop/{MAX_REDIRECTS - 1}", 100, 5,
                                     allowed_origins=[store]) == BODY
            assert await fetch_bytes(f"{store}/to?u={store}/ok", 100, 5,
                                     allowed_origins=[store]) == BODY
            # The same server by another name for the same address is another origin.
            other = store.replace("127.0.0.1", "localhost")
            await refused(f"{other}/ok", allowed_origins=[store])
            # An allowed origin is scheme, host and port: https on that port is not it.
            await refused(f"{store.replace('http', 'https')}/ok", allowed_origins=[store])
    run(go())


def test_each_hop_is_resolved_once_and_connected_to_what_was_checked(dns, connects):
    """A DNS name for the allowed blob store: one lookup per hop (aiohttp does not look it up
    again), and the connections go to the address that lookup gave."""
    async def go():
        async with blob_store() as store:
            port = int(store.rsplit(":", 1)[1])
            dns.names["blobs.example"] = ["127.0.0.1"]
            origin = f"http://blobs.example:{port}"
            assert await fetch_bytes(f"{origin}/hop/2", 100, 5, allowed_origins=[origin]) == BODY
            assert dns.calls == ["blobs.example"] * 4  # /hop/2, /hop/1, /hop/0, /ok
            assert connects and all(address == ("127.0.0.1", port) for address in connects)
    run(go())


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("1.1.1.1", True), ("2606:4700:4700::1111", True),
    ("::ffff:8.8.8.8", True), ("2002:808:808::", True), ("64:ff9b::808:808", True),
    ("127.0.0.1", False), ("::1", False), ("::", False), ("0.0.0.0", False),
    ("::ffff:127.0.0.1", False), ("::ffff:0.0.0.0", False), ("::7f00:1", False),
    ("169.254.169.254", False), ("fd00:ec2::254", False), ("100.100.100.200", False),
    ("224.0.0.251", False), ("ff02::fb", False), ("2001::1", False), ("64:ff9b:1::1", False),
    ("not an address", False), ("", False),
])
def test_is_public_address(address, public):
    assert is_public_address(address) is public
