"""Bounded HTTP(S) downloads that cannot be pointed inward:
`fetch_bytes(url, max_bytes, timeout_s, *, allowed_origins=())`.

Used wherever the network pulls bytes named by a URL someone else chose (submission data,
encrypted weights): the URL is an attacker's, so the fetch must not reach the machine it runs on,
the cluster's private network or a cloud metadata service (SSRF), and its failures must not tell
the attacker anything about what it tried to reach.

Each hop (the URL, then every redirect target) is checked before anything is sent:

- the scheme is http or https, the URL names a host and carries no user:password;
- the host is resolved ONCE, here (an IP literal is its own address; any other name, including
  decimal, octal or hex forms such as `2130706433` that the system resolver turns into
  127.0.0.1, goes through `getaddrinfo`), and EVERY address it resolves to must be public
  (`is_public_address`): no loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 with
  the metadata address 169.254.169.254, fe80::/10), CGNAT (100.64/10), multicast, unspecified,
  reserved or broadcast address, and no IPv6 form that embeds one of those (IPv4-mapped
  `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, 6to4 `2002::/16`, NAT64 `64:ff9b::/96`: the
  embedded IPv4 address is checked); the names `localhost` and `*.localhost` are refused by name;
- the connection then goes to those checked addresses and no others (aiohttp is handed a resolver
  that answers exactly them: no second lookup that a short-TTL DNS name could rebind);
- redirects are followed by hand (301, 302, 303, 307, 308 with a Location), at most
  `MAX_REDIRECTS`, each target checked like the first URL.

`allowed_origins` lists the origins that skip the address check (scheme, host and port; a default
port may be left out; any URL on the origin will do, only its origin counts): the network's own
blob store is reached by its configured public URL even where that is a loopback or private
address (a localnet's is http://127.0.0.1:8000). Everything else about a hop to an allowed origin
is checked as usual, and a redirect from an allowed origin to one that is not is checked in full.
With no `allowed_origins` (the default) only public addresses are fetched.

Every failure is one of two typed errors, never an aiohttp or socket exception:

- `FetchTooLarge{url, size, max}`: the body is over `max_bytes` (a declared Content-Length over
  the limit refuses before the body is read; otherwise bytes are counted as they stream in and
  the download stops at the first chunk that crosses the limit). `size` is always `max_bytes + 1`:
  a lower bound that names only the caller's own limit, not what the server declared or sent.
- `FetchError{url, reason}` for anything else: a refused URL or address, a malformed URL, DNS
  failure, connection refused or reset, a non-2xx status, too many redirects, TLS failure, or the
  whole download (resolution, connect, headers, redirects and body together) taking longer than
  `timeout_s`. `url` is the URL the caller passed and `reason` is always `FETCH_FAILED`: the same
  answer whatever happened, so the replies are no oracle for what listens where. The real cause
  is logged at DEBUG level on this module's logger, for operators.

The request asks for `Accept-Encoding: identity`, so the bytes returned are the bytes the server
stores (what a checksum is computed over); a server that compresses anyway is decoded by aiohttp
and the decoded bytes are what is counted, so memory stays bounded by `max_bytes`.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from soma_ray.protocol.errors import FetchError, FetchTooLarge

MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024
FETCH_FAILED = "not a public http(s) URL that answered 2xx in time"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}

log = logging.getLogger(__name__)

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"),)  # the well-known prefix: last 32 bits are IPv4
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215): refused


class _Refused(Exception):
    """Why a hop was not fetched: logged, never shown."""


def is_public_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is a public unicast address this fetcher may connect to (module doc).
    IPv6 forms that embed an IPv4 address answer for the embedded address."""
    if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
        if address in _NAT64_LOCAL or address.teredo is not None or address.is_site_local:
            return False
    elif address in _CGNAT:
        return False
    return (address.is_global and not address.is_multicast and not address.is_private
            and not address.is_loopback and not address.is_link_local
            and not address.is_unspecified and not address.is_reserved)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d
        return address.ipv4_mapped
    if int(address) >> 32 == 0:  # IPv4-compatible ::a.b.c.d, and :: and ::1 (0.0.0.0, 0.0.0.1)
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:  # 2002:aabb:ccdd::/48
        return address.sixtofour
    if any(address in prefix for prefix in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def origin_of(url: str | URL) -> str:
    """`scheme://host:port` of an http(s) URL, lower-case, the port always written (80/443 when
    the URL leaves it out), an IPv6 host in brackets: what `allowed_origins` compares.
    ValueError for anything that is not an http(s) URL with a host."""
    parsed = url if isinstance(url, URL) else URL(url)
    scheme = (parsed.scheme or "").lower()
    if scheme not in DEFAULT_PORTS or not parsed.raw_host:
        raise ValueError(f"not an http(s) URL with a host: {str(url)[:200]!r}")
    host = parsed.raw_host.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{parsed.port or DEFAULT_PORTS[scheme]}"


async def fetch_bytes(url: str, max_bytes: int, timeout_s: float, *,
                      allowed_origins: Iterable[str] = ()) -> bytes:
    """The body of `url` (http or https, public or on one of `allowed_origins`), at most
    `max_bytes` long, within `timeout_s` in total. FetchTooLarge or FetchError otherwise (module
    doc). ValueError only for the caller's own arguments (limits, a malformed allowed origin)."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    allowed = frozenset(origin_of(origin) for origin in allowed_origins)
    try:
        async with asyncio.timeout(timeout_s):
            return await _follow(url, max_bytes, allowed)
    except FetchTooLarge:
        raise
    except Exception as exc:  # the boundary: whatever the cause, the one answer
        log.debug("fetch of %r failed: %s: %s", url, type(exc).__name__, exc)
        raise FetchError(url=str(url), reason=FETCH_FAILED) from None


async def _follow(url: str, max_bytes: int, allowed: frozenset[str]) -> bytes:
    if not isinstance(url, str):
        raise _Refused(f"the URL is a {type(url).__name__}, not a string")
    hop = URL(url)
    for redirects in range(MAX_REDIRECTS + 1):
        host, addresses = await _checked_hop(hop, allowed)
        status, location, body = await _get(hop, host, addresses, max_bytes, url)
        if status not in REDIRECT_STATUSES or location is None:
            if not 200 <= status < 300:
                raise _Refused(f"HTTP status {status} from {hop}")
            return body
        hop = hop.join(URL(location))
        log.debug("fetch of %r: redirect %d to %s", url, redirects + 1, hop)
    raise _Refused(f"more than {MAX_REDIRECTS} redirects")


async def _checked_hop(hop: URL, allowed: frozenset[str]) -> tuple[str, list[ResolveResult]]:
    """The host to connect to and its resolved addresses, each checked (module doc)."""
    if hop.scheme.lower() not in DEFAULT_PORTS:
        raise _Refused(f"scheme {hop.scheme!r} is not http or https")
    host = hop.raw_host
    if not host:
        raise _Refused("the URL names no host")
    if hop.raw_user is not None or hop.raw_password is not None:
        raise _Refused("the URL carries user information")
    port = hop.port or DEFAULT_PORTS[hop.scheme.lower()]
    is_allowed = origin_of(hop) in allowed
    name = host.lower().rstrip(".")
    if not is_allowed and (name == "localhost" or name.endswith(".localhost")):
        raise _Refused(f"host {host!r} is a local name")
    addresses = await _resolve(host, port)
    if not addresses:
        raise _Refused(f"host {host!r} resolves to no address")
    if not is_allowed:
        refused = [a["host"] for a in addresses if not is_public_address(a["host"].split("%")[0])]
        if refused:
            raise _Refused(f"host {host!r} resolves to non-public {refused}")
    return host, addresses


async def _resolve(host: str, port: int) -> list[ResolveResult]:
    """Every address `host` stands for, once: an IP literal is itself; any other name is what
    the system resolver makes of it (including legacy numeric forms)."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [ResolveResult(hostname=host, host=host, port=port, family=family, proto=0,
                              flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    results = []
    for family, _, proto, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = sockaddr[0]
        if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
            address = f"{address}%{sockaddr[3]}"  # a scope: link-local, refused unless allowed
        results.append(ResolveResult(hostname=host, host=address, port=port, family=family,
                                     proto=proto,
                                     flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV))
    return results


class _CheckedResolver(AbstractResolver):
    """Answers aiohttp with the addresses already checked for the one host of this hop, and
    refuses any other lookup: the connection goes where the check looked, nowhere else."""

    def __init__(self, host: str, addresses: list[ResolveResult]):
        self._host, self._addresses = host, addresses

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(f"lookup of {host!r}, not the checked host {self._host!r}")
        return [dict(address) for address in self._addresses]  # type: ignore[misc]

    async def close(self) -> None:
        pass


async def _get(hop: URL, host: str, addresses: list[ResolveResult], max_bytes: int,
               url: str) -> tuple[int, str | None, bytes]:
    """(status, Location, body) of one GET to `hop`, connecting only to `addresses`. The body is
    read only for a 2xx answer, counted against `max_bytes` (FetchTooLarge names `url`)."""
    connector = aiohttp.TCPConnector(resolver=_CheckedResolver(host, addresses),
                                     use_dns_cache=False, force_close=True)
    # No aiohttp timeout: the asyncio.timeout around the whole fetch bounds everything.
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                     trust_env=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.get(hop, allow_redirects=False,
                               headers={"Accept-Encoding": "identity"}) as response:
            if not 200 <= response.status < 300:
                return response.status, response.headers.get("Location"), b""
            declared = response.content_length
            if declared is not None and declared > max_bytes:
                log.debug("fetch of %r: %s declares %d bytes, over %d", url, hop, declared, max_bytes)
                raise FetchTooLarge(url=url, size=max_bytes + 1, max=max_bytes)
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                if len(body) + len(chunk) > max_bytes:
                    raise FetchTooLarge(url=url, size=max_bytes + 1, max=max_bytes)
                body += chunk
            return response.status, None, bytes(body)
