"""Bounded HTTP(S) downloads: `fetch_bytes(url, max_bytes, timeout_s)`.

Used wherever the network pulls bytes named by a URL someone else chose (submission data,
encrypted weights). Every failure is one of two typed errors, never an aiohttp exception:

- `FetchTooLarge{url, size, max}`: the body is over `max_bytes`. A declared Content-Length over the
  limit refuses before any body is read; otherwise bytes are counted as they stream in (the header
  is not trusted) and the download stops at the first chunk that crosses the limit, so `size` is
  then a lower bound on the real size.
- `FetchError{url, reason}`: any other failure: a scheme other than http/https, a malformed URL,
  connection refused or reset, a non-2xx status, more than `MAX_REDIRECTS` redirects, or the whole
  download (connect, headers and body together) taking longer than `timeout_s`.

The request asks for `Accept-Encoding: identity`, so the bytes returned are the bytes the server
stores (what a checksum is computed over); a server that compresses anyway is decoded by aiohttp
and the decoded bytes are what is counted, so memory stays bounded by `max_bytes`.
"""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp

from soma_ray.protocol.errors import FetchError, FetchTooLarge

MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024


async def fetch_bytes(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """The body of `url` (http or https), at most `max_bytes` long, within `timeout_s` in total."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    try:
        scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
    except ValueError as exc:
        raise FetchError(url=str(url), reason=f"malformed URL: {exc}") from None
    if scheme not in ("http", "https"):
        raise FetchError(url=str(url), reason=f"scheme {scheme or '(none)'!r} is not http or https")
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(url, max_bytes)
    except TimeoutError:
        raise FetchError(url=url, reason=f"timed out after {timeout_s} s") from None
    except aiohttp.TooManyRedirects:
        raise FetchError(url=url, reason=f"more than {MAX_REDIRECTS} redirects") from None
    except aiohttp.ClientResponseError as exc:
        raise FetchError(url=url, reason=_short(f"bad response: {exc.status} {exc.message}")) from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise FetchError(url=url, reason=_short(f"{type(exc).__name__}: {exc}")) from None


def _short(reason: str, limit: int = 300) -> str:
    # aiohttp's parser errors quote the offending bytes; keep the reason readable.
    return reason if len(reason) <= limit else reason[:limit] + "..."


async def _fetch(url: str, max_bytes: int) -> bytes:
    # No overall aiohttp timeout: the asyncio.timeout around this call bounds everything.
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        async with session.get(
            url,
            allow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            headers={"Accept-Encoding": "identity"},
        ) as response:
            if not 200 <= response.status < 300:
                raise FetchError(url=url, reason=f"HTTP status {response.status} {response.reason or ''}".rstrip())
            declared = response.content_length
            if declared is not None and declared > max_bytes:
                raise FetchTooLarge(url=url, size=declared, max=max_bytes)
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                if len(body) + len(chunk) > max_bytes:
                    raise FetchTooLarge(url=url, size=len(body) + len(chunk), max=max_bytes)
                body += chunk
            return bytes(body)
