"""fetch_bytes against local servers on 127.0.0.1: size bounds whatever Content-Length says,
total time, redirects, schemes; only FetchError / FetchTooLarge ever come out."""
import asyncio
import contextlib
import time

import pytest
from aiohttp import web

from serve.fetch import FetchError, FetchTooLarge, fetch_bytes

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
            assert await fetch_bytes(f"{base}/ok", len(BODY), 10) == BODY
            assert await fetch_bytes(f"{base}/chunked", 20 * 1024, 10) == b"c" * 20 * 1024
    run(go())


def test_over_the_limit_with_content_length():
    async def go():
        async with http_server() as base:
            with pytest.raises(FetchTooLarge) as refused:
                await fetch_bytes(f"{base}/ok", len(BODY) - 1, 10)
            assert refused.value.values() == {"url": f"{base}/ok", "size": len(BODY), "max": len(BODY) - 1}
    run(go())


def test_over_the_limit_without_content_length_is_counted_while_streaming():
    async def go():
        async with http_server() as base:
            with pytest.raises(FetchTooLarge) as refused:
                await fetch_bytes(f"{base}/chunked", 5000, 10)
            assert refused.value.size > 5000 and refused.value.max == 5000
        # Body delimited by closing the connection, no length header.
        async with raw_server(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 50_000) as base:
            with pytest.raises(FetchTooLarge):
                await fetch_bytes(f"{base}/", 10_000, 10)
    run(go())


def test_a_declared_length_over_the_limit_refuses_at_once():
    async def go():
        async with http_server() as base:
            started = time.monotonic()
            with pytest.raises(FetchTooLarge) as refused:
                await fetch_bytes(f"{base}/huge", 1000, 20)
            assert refused.value.size == 10**9
            assert time.monotonic() - started < 10  # not after waiting for a body that never comes
    run(go())


def test_a_content_length_smaller_than_the_body_does_not_smuggle_more_bytes():
    async def go():
        async with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
                              + b"y" * 50_000) as base:
            # Either the declared 5 bytes or a refused (malformed) response: never more.
            try:
                body = await fetch_bytes(f"{base}/", 100, 10)
            except FetchError as refused:
                assert len(refused.reason) <= 303
                body = None
            assert body in (None, b"yyyyy")
    run(go())


def test_total_timeout_slow_headers_and_trickling_body():
    async def go():
        async with http_server() as base:
            for path in ("/slow", "/trickle"):
                started = time.monotonic()
                with pytest.raises(FetchError) as failed:
                    await fetch_bytes(f"{base}{path}", 10**6, 0.5)
                assert "timed out" in failed.value.reason
                assert time.monotonic() - started < 10
    run(go())


def test_redirects_followed_but_bounded():
    async def go():
        async with http_server() as base:
            assert await fetch_bytes(f"{base}/redirect", len(BODY), 10) == BODY
            with pytest.raises(FetchError) as looped:
                await fetch_bytes(f"{base}/loop", 1000, 10)
            assert "redirects" in looped.value.reason
            with pytest.raises(FetchError):
                await fetch_bytes(f"{base}/tofile", 1000, 10)
    run(go())


def test_other_schemes_and_malformed_urls_are_refused():
    for url in ["ftp://example.com/x", "file:///etc/passwd", "data:,hello", "no-scheme", "",
                "http://[broken", "http://"]:
        with pytest.raises(FetchError) as refused:
            run(fetch_bytes(url, 1000, 5))
        assert refused.value.url == url


def test_http_errors_and_connection_refused_are_fetch_errors():
    async def go():
        async with http_server() as base:
            with pytest.raises(FetchError) as failed:
                await fetch_bytes(f"{base}/missing", 1000, 10)
            assert "404" in failed.value.reason
        # The server is gone: nothing listens on that port any more.
        with pytest.raises(FetchError):
            await fetch_bytes(f"{base}/ok", 1000, 10)
    run(go())
