"""fetch_bytes against local servers on 127.0.0.1: size bounds whatever Content-Length says,
total time, redirects, schemes; only FetchError / FetchTooLarge ever come out, and every
FetchError gives the same reason (the real cause is in the debug log).

The servers listen on loopback, which the fetcher refuses unless the origin is allowed: each
test allows its own server's origin, as the services allow the network's blob store
(tests/unit/serve/test_fetch_ssrf.py covers the refusals)."""
import asyncio
import contextlib
import logging
import time

import pytest
from aiohttp import web

from soma_ray.fetch import FETCH_FAILED, FetchError, FetchTooLarge, fetch_bytes


def fetch(base: str, path: str, max_bytes: int, timeout_s: float):
    """fetch_bytes of `base + path` with `base` (the test server's origin) allowed."""
    return fetch_bytes(f"{base}{path}", max_bytes, timeout_s, allowed_origins=[base])

BODY = bytes(range(256)) * 40  # 10,240 bytes


async def ok(request):
    return web.Response(body=BODY)


async def chunked(request):
    # No Content-Length at all: chunked transfer encoding, 20 x 1 KiB.
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(20):
        await response.write(b"c" * 1024)
    await response.write_eof()
    return response


async def declares_huge(request):
    # Declares 1 GB, sends a few bytes and then stalls: refused on the header, not after a wait.
    response = web.StreamResponse(headers={"Content-Length": str(10**9)})
    await response.prepare(request)
    await response.write(b"x" * 10)
    await asyncio.sleep(30)
    return response


async def slow_headers(request):
    await asyncio.sleep(30)
    return web.Response(body=b"late")


async def trickle(request):
    # Headers at once, then one byte every 50 ms for ever: only the total timeout stops it.
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(100_000):
        await response.write(b".")
        await asyncio.sleep(0.05)
    return response


async def redirect_once(request):
    raise web.HTTPFound("/ok")


async def redirect_loop(request):
    raise web.HTTPFound("/loop")


async def redirect_to_file(request):
    raise web.HTTPFound("file:///etc/passwd")


async def missing(request):
    raise web.HTTPNotFound()


@contextlib.asynccontextmanager
async def http_server():
    app = web.Application()
    for path, handler in [("/ok", ok), ("/chunked", chunked), ("/huge", declares_huge),
                          ("/slow", slow_headers), ("/trickle", trickle),
                          ("/redirect", redirect_once), ("/loop", redirect_loop),
                          ("/tofile", redirect_to_file), ("/missing", missing)]:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(payload: bytes):
    """Answers every connection with `payload` verbatim and closes: for responses aiohttp's server
    would not produce (a body delimited only by closing the connection)."""
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def run(coro):
    return asyncio.run(coro)


def test_fetches_a_body_within_the_limit_exactly_at_it():
    async def go():
        async with http_server() as base:
            assert await fetch(base, "/ok", len(BODY), 10) == BODY
            assert await fetch(base, "/chunked", 20 * 1024, 10) == b"c" * 20 * 1024
    run(go())


def test_over_the_limit_with_content_length():
    async def go():
        async with http_server() as base:
            with pytest.raises(FetchTooLarge) as refused:
                await fetch(base, "/ok", len(BODY) - 1, 10)
            # size is max + 1: it names only the caller's limit, not what the server declared.
            assert refused.value.values() == {"url": f"{base}/ok", "size": len(BODY), "max": len(BODY) - 1}
    run(go())


def test_over_the_limit_without_content_length_is_counted_while_streaming():
    async def go():
        async with http_server() as base:
            with pytest.raises(FetchTooLarge) as refused:
                await fetch(base, "/chunked", 5000, 10)
            assert refused.value.size == 5001 and refused.value.max == 5000
        # Body delimited by closing the connection, no length header.
        async with raw_server(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 50_000) as base:
            with pytest.raises(FetchTooLarge):
                await fetch(base, "/", 10_000, 10)
    run(go())


def test_a_declared_length_over_the_limit_refuses_at_once():
    async def go():
        async with http_server() as base:
            started = time.monotonic()
            with pytest.raises(FetchTooLarge) as refused:
                await fetch(base, "/huge", 1000, 20)
            assert refused.value.size == 1001  # not the 10**9 the server declared
            assert time.monotonic() - started < 10  # not after waiting for a body that never comes
    run(go())


def test_a_content_length_smaller_than_the_body_does_not_smuggle_more_bytes():
    async def go():
        async with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
                              + b"y" * 50_000) as base:
            # Either the declared 5 bytes or a refused (malformed) response: never more.
            try:
                body = await fetch(base, "/", 100, 10)
            except FetchError as refused:
                assert refused.reason == FETCH_FAILED
                body = None
            assert body in (None, b"yyyyy")
    run(go())


def test_total_timeout_slow_headers_and_trickling_body():
    async def go():
        async with http_server() as base:
            for path in ("/slow", "/trickle"):
                started = time.monotonic()
                with pytest.raises(FetchError) as failed:
                    await fetch(base, path, 10**6, 0.5)
                assert failed.value.reason == FETCH_FAILED
                assert time.monotonic() - started < 10
    run(go())


def test_redirects_followed_but_bounded():
    async def go():
        async with http_server() as base:
            assert await fetch(base, "/redirect", len(BODY), 10) == BODY
            with pytest.raises(FetchError) as looped:
                await fetch(base, "/loop", 1000, 10)
            assert looped.value.reason == FETCH_FAILED
            with pytest.raises(FetchError) as refused:
                await fetch(base, "/tofile", 1000, 10)
            assert refused.value.reason == FETCH_FAILED
    run(go())


def test_other_schemes_and_malformed_urls_are_refused():
    for url in ["ftp://example.com/x", "file:///etc/passwd", "data:,hello", "no-scheme", "",
                "http://[broken", "http://"]:
        with pytest.raises(FetchError) as refused:
            run(fetch_bytes(url, 1000, 5))
        assert refused.value.url == url and refused.value.reason == FETCH_FAILED


def test_http_errors_and_connection_refused_are_fetch_errors():
    async def go():
        async with http_server() as base:
            with pytest.raises(FetchError) as failed:
                await fetch(base, "/missing", 1000, 10)
            assert failed.value.reason == FETCH_FAILED
        # The server is gone: nothing listens on that port any more.
        with pytest.raises(FetchError) as failed:
            await fetch(base, "/ok", 1000, 10)
        assert failed.value.reason == FETCH_FAILED
    run(go())


def test_the_real_cause_is_logged_at_debug_level(caplog):
    async def go():
        async with http_server() as base:
            with caplog.at_level(logging.DEBUG, logger="soma_ray.fetch"):
                with pytest.raises(FetchError):
                    await fetch(base, "/missing", 1000, 10)
        assert "404" in caplog.text
    run(go())


def test_an_allowed_origin_may_leave_out_its_default_port_or_carry_a_path():
    async def go():
        async with http_server() as base:
            assert await fetch_bytes(f"{base}/ok", len(BODY), 10,
                                     allowed_origins=[f"{base}/blobs/"]) == BODY
    run(go())
    from soma_ray.fetch import origin_of
    assert origin_of("HTTP://Example.COM/x?y") == "http://example.com:80"
    assert origin_of("https://example.com") == "https://example.com:443"
    assert origin_of("http://[::1]:8000/") == "http://[::1]:8000"
    for bad in ("ftp://example.com", "no-scheme", "http://"):
        with pytest.raises(ValueError):
            origin_of(bad)
