"""Content-addressed blob store for submission data and encrypted weights, and its Serve app.

`BlobStore(root)` keeps each blob as one file named by its address, the plain BLAKE2b-256 of its
bytes in hex: the chain's `data_hash` of a submission and `checksum` of a weights manifest.

    root/<hex>            the content, byte for byte
    root/<hex>.chunks     sidecar: a header and the BLAKE2b-256 of every CHUNK_BYTES chunk
    root/.tmp-*           uploads in progress (removed when they fail; stale ones at start)
    root/.quarantine/     files found corrupted on read, one per address, kept for inspection

Writes: `put` streams into temp files in `root`, counting bytes (one over the limit raises
`BlobTooLarge` and removes them), fsyncs both, renames the sidecar and then the content into
place under one lock and fsyncs the directory. A blob exists once its content file does; a put
that fails or is cancelled at any point leaves nothing behind. Re-putting the same content
replaces the pair atomically (same bytes, so readers cannot tell), which also repairs a damaged
copy.

Reads never serve a corrupted byte: each chunk is read, hashed and compared with the sidecar
before it is handed out. The sidecar is sealed to its blob: its header holds a BLAKE2b-256 of the
address, the sizes and every chunk hash, written at put time from the same bytes as the address,
so a damaged sidecar, or a content file and sidecar swapped in from another blob, fail at open
(this guards against corruption, not against someone who can write the disk). Reading costs one
hash of the bytes, as writing does (the address hash and the chunk hashes of a put run in two
threads). `open` checks the seal, the sizes and the first chunk before returning, so a blob of
one chunk (every submission: `max_submission_bytes` is 1 MiB) is fully verified before the first
byte is sent. A larger blob damaged further in fails mid-stream: the reader raises
`BlobCorrupted` before the bad chunk, and over HTTP the response is cut short (shorter than its
Content-Length). Either way the file is moved to the quarantine, and later reads answer
`BlobCorrupted` until the same content is uploaded again.

`blob_app(root, max_data_bytes, max_weights_bytes, public_url, network=...)` builds the
`BlobService` Serve application, to be run with `route_prefix="/blobs"`; its routes are the route
table's (soma_ray/routes.py), dispatched by serve/router.py:

    POST /blobs/ticket    TicketRequest (signed by a funded account) -> UploadTicket
    PUT  /blobs/data      body = the bytes, X-Soma-Ticket: the ticket  -> Uploaded{url, checksum, size}
    PUT  /blobs/weights   the same, within the weights limit
    GET  /blobs/{hex}     the bytes (streamed, Content-Length, ETag)
    HEAD /blobs/{hex}     Content-Length only (the sidecar header is checked, the content is not read)

Uploads (`BlobHandlers`): a ticket from a funded account for each (soma_ray/tickets.py), per
account a byte quota and a ticket rate per window, a body-read deadline (`UploadPolicy`), at most
`max_weights_bytes` of weights (what the scoring service will load). The router bounds uploads
and downloads per client and for all (soma_ray/routes.py RATE_LIMITS), so uploads never hold the
slots reads need. In-cluster callers (RayTransport) use the deployment's own methods instead of
HTTP: `upload_ticket`, `upload_bytes`, `read`. Retention (`RetentionPolicy`, serve/retention.py):
what the chain no longer names is removed after a grace period, by a sweep the replica runs.

Errors carry their typed error (soma_ray/wire.py's status table): 400 InvalidChecksum,
401 UploadUnauthorized, 403 AccountUnderfunded, 404 BlobNotFound, 408 UploadTooSlow,
413 BlobTooLarge, 429 RateLimited / UploadQuotaExceeded, 500 BlobCorrupted (the server's
fault, not the request's). docs/blobs.md has the rules and figures.
"""

import asyncio
import hashlib
import logging
import math
import os
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

from serve import retention
from soma_ray import tickets
from soma_ray.limits import Buckets
from soma_ray.protocol.encoding import decode
from soma_ray.protocol.errors import (
    AccountUnderfunded, BlobCorrupted, BlobNotFound, BlobTooLarge, InvalidChecksum, MalformedInput, RateLimited,
    UploadQuotaExceeded, UploadTooSlow, UploadUnauthorized,
)
from soma_ray.protocol.types import Account, SystemState
from soma_ray.routes import APP_PREFIX, BLOB_CHECKSUM
from soma_ray.tickets import TICKET_TTL_S, OnceOnly
from soma_ray.wire import TicketRequest, Uploaded, UploadTicket

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
# Requests one replica holds at once; the public routes' limits leave part of them to the
# in-cluster callers (soma_ray/routes.py RATE_LIMITS: uploads 8, downloads 32).
MAX_ONGOING_REQUESTS = 64
# How long the chain's parameters and chain id, read for tickets, are reused.
STATE_TTL_S = 10.0
STALE_TEMP_S = 600.0
_TEMP_PREFIX = ".tmp-"
_SIDECAR_SUFFIX = ".chunks"
_QUARANTINE = ".quarantine"
_MAGIC = b"SOMABLB1"
_HEADER = struct.Struct("<8sIQ32s")  # magic, chunk size, content size, seal
_SEAL_DOMAIN = b"soma-blob-sidecar"
_DIGEST = 32


@dataclass(frozen=True)
class BlobInfo:
    checksum: bytes
    size: int

    @property
    def hex(self) -> str:
        return self.checksum.hex()


def blob_checksum(data: bytes) -> bytes:
    """The address of `data`: plain BLAKE2b-256."""
    return hashlib.blake2b(data, digest_size=32).digest()


def parse_checksum(checksum: bytes | str) -> bytes:
    """32 bytes, or 64 hex digits (either case) -> the 32-byte checksum; anything else raises
    `InvalidChecksum`."""
    if isinstance(checksum, (bytes, bytearray)):
        if len(checksum) != _DIGEST:
            raise InvalidChecksum(checksum=bytes(checksum).hex(), reason=f"{len(checksum)} bytes, not 32")
        return bytes(checksum)
    if not isinstance(checksum, str):
        raise InvalidChecksum(checksum=repr(checksum)[:80], reason="not bytes or a hex string")
    return BLOB_CHECKSUM.parse(checksum)


class BlobReader:
    """The verified content of one blob, as an async iterator of chunks (`async for chunk in
    reader`). Opened by `BlobStore.open`; close it (`aclose`, or `async with`) if not read to the
    end. Raises `BlobCorrupted` before yielding a chunk that does not match."""

    def __init__(self, store: "BlobStore", checksum: bytes, fd: int, size: int,
                 chunk_bytes: int, digests: bytes, first: bytes | None) -> None:
        self._store = store
        self.checksum = checksum
        self.size = size
        self._fd: int | None = fd
        self._chunk_bytes = chunk_bytes
        self._digests = digests
        self._pending = first
        self._next = 0 if first is None else 1

    @property
    def info(self) -> BlobInfo:
        return BlobInfo(self.checksum, self.size)

    def __aiter__(self) -> "BlobReader":
        return self

    async def __anext__(self) -> bytes:
        if self._pending is not None:
            chunk, self._pending = self._pending, None
            return chunk
        if self._fd is None or self._next * self._chunk_bytes >= self.size:
            await self.aclose()
            raise StopAsyncIteration
        try:
            chunk = await asyncio.to_thread(self._read_verified, self._next)
        except BlobCorrupted:
            await self.aclose()
            raise
        self._next += 1
        return chunk

    def _read_verified(self, index: int) -> bytes:
        fd = self._fd
        if fd is None:
            raise BlobCorrupted(checksum=self.checksum.hex())
        return self._store._verify_chunk(fd, self.checksum, self.size, self._chunk_bytes,
                                         self._digests, index)

    async def aclose(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def __aenter__(self) -> "BlobReader":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class BlobStore:
    """Content-addressed files under `root` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.root = Path(root)
        self.chunk_bytes = chunk_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / _QUARANTINE).mkdir(exist_ok=True)
        # Serialises the renames of put and of quarantine, and the pairing of content with
        # sidecar in open, within this process (the service runs one replica).
        self._lock = threading.Lock()
        self._remove_stale_temps()

    # -- paths -----------------------------------------------------------------------------

    def path(self, checksum: bytes | str) -> Path:
        return self.root / parse_checksum(checksum).hex()

    def _sidecar(self, hexsum: str) -> Path:
        return self.root / (hexsum + _SIDECAR_SUFFIX)

    def _quarantined(self, hexsum: str) -> Path:
        return self.root / _QUARANTINE / hexsum

    def _remove_stale_temps(self) -> None:
        # An upload in progress writes its temp file continuously, so only temps untouched for
        # STALE_TEMP_S are leftovers of a killed process.
        now = time.time()
        for entry in self.root.glob(_TEMP_PREFIX + "*"):
            try:
                if now - entry.stat().st_mtime > STALE_TEMP_S:
                    entry.unlink()
            except FileNotFoundError:
                pass

    # -- writing ---------------------------------------------------------------------------

    async def put(self, chunks: AsyncIterator[bytes] | Iterable[bytes], max_bytes: int) -> BlobInfo:
        """Store the bytes `chunks` yields (at most `max_bytes`) and return their address.

        Over the limit: `BlobTooLarge` and nothing stored. Any exception from `chunks` or
        cancellation: re-raised, nothing stored."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        writer = await _create_writer(self.root, self.chunk_bytes)
        try:
            buffer = bytearray()
            total = 0
            async for piece in _aiter(chunks):
                if not piece:
                    continue
                total += len(piece)
                if total > max_bytes:
                    raise BlobTooLarge(size_at_least=total, max=max_bytes)
                buffer += piece
                if len(buffer) >= self.chunk_bytes:
                    cut = len(buffer) - len(buffer) % self.chunk_bytes
                    block, buffer = bytes(buffer[:cut]), buffer[cut:]
                    await _write(writer, block)
            if buffer:
                await _write(writer, bytes(buffer))
            return await asyncio.to_thread(self._commit, writer)
        finally:
            # After a successful commit the temps are renamed away and this removes nothing;
            # shielded so that a cancelled upload still cleans up.
            await asyncio.shield(asyncio.to_thread(writer.discard))

    async def put_bytes(self, data: bytes, max_bytes: int) -> BlobInfo:
        return await self.put([data], max_bytes)

    def _commit(self, writer: "_Writer") -> BlobInfo:
        checksum, size = writer.finish()
        hexsum = checksum.hex()
        with self._lock:
            os.replace(writer.sidecar_path, self._sidecar(hexsum))
            os.replace(writer.content_path, self.root / hexsum)
            writer.committed = True
        _fsync_dir(self.root)
        return BlobInfo(checksum, size)

    # -- reading ---------------------------------------------------------------------------

    async def stat(self, checksum: bytes | str) -> BlobInfo:
        """Size of a stored blob: checks that it exists and that its sidecar matches its size,
        without reading the content."""
        key = parse_checksum(checksum)
        reader = await asyncio.to_thread(self._open, key, False)
        await reader.aclose()
        return reader.info

    async def open(self, checksum: bytes | str) -> BlobReader:
        """A reader of the verified content; `BlobNotFound`, `BlobCorrupted` or `InvalidChecksum`
        otherwise. The first chunk is already verified when this returns."""
        key = parse_checksum(checksum)
        return await asyncio.to_thread(self._open, key, True)

    async def get(self, checksum: bytes | str) -> bytes:
        """The whole verified content in memory (for small blobs)."""
        reader = await self.open(checksum)
        parts = []
        async with reader:
            async for chunk in reader:
                parts.append(chunk)
        return b"".join(parts)

    async def exists(self, checksum: bytes | str) -> bool:
        return await asyncio.to_thread((self.root / parse_checksum(checksum).hex()).is_file)

    def _open(self, key: bytes, read_first: bool) -> BlobReader:
        hexsum = key.hex()
        with self._lock:
            try:
                fd = os.open(self.root / hexsum, os.O_RDONLY)
            except FileNotFoundError:
                if self._quarantined(hexsum).exists():
                    raise BlobCorrupted(checksum=hexsum) from None
                raise BlobNotFound(checksum=hexsum) from None
            try:
                with open(self._sidecar(hexsum), "rb") as f:
                    sidecar = f.read()
            except FileNotFoundError:
                sidecar = b""
        try:
            size = os.fstat(fd).st_size
            chunk_bytes, digests = _check_sidecar(sidecar, key, size)
            if chunk_bytes is None or (size == 0 and blob_checksum(b"") != key):
                self._quarantine(hexsum, fd)
                raise BlobCorrupted(checksum=hexsum)
            first = None
            if read_first and size > 0:
                first = self._verify_chunk(fd, key, size, chunk_bytes, digests, 0)
            return BlobReader(self, key, fd, size, chunk_bytes, digests, first)
        except BaseException:
            os.close(fd)
            raise

    # -- retention ---------------------------------------------------------------------------

    def stored(self, now: float | None = None) -> dict[bytes, float]:
        """Every stored blob: checksum -> seconds since it was stored (its content file's mtime:
        an upload of the same bytes again renews it)."""
        now = time.time() if now is None else now
        found = {}
        for entry in os.scandir(self.root):
            if len(entry.name) == 2 * _DIGEST and _is_hex(entry.name):
                try:
                    found[bytes.fromhex(entry.name)] = now - entry.stat().st_mtime
                except FileNotFoundError:
                    pass
        return found

    def remove(self, checksum: bytes, stored_before: float) -> bool:
        """Remove the blob if its content was stored before `stored_before` (unix s), checked
        under the lock that puts take, so a blob uploaded again meanwhile stays. Readers that
        opened it keep reading the removed file."""
        hexsum = bytes(checksum).hex()
        with self._lock:
            try:
                if os.stat(self.root / hexsum).st_mtime >= stored_before:
                    return False
                os.unlink(self.root / hexsum)
            except FileNotFoundError:
                return False
            try:
                os.unlink(self._sidecar(hexsum))
            except FileNotFoundError:
                pass
        _fsync_dir(self.root)
        return True

    def _verify_chunk(self, fd: int, key: bytes, size: int, chunk_bytes: int, digests: bytes,
                      index: int) -> bytes:
        """Chunk `index` of the open file, after checking it against the sidecar (and, for the
        last chunk, that the file has not changed size); quarantines the file otherwise."""
        offset = index * chunk_bytes
        want = min(chunk_bytes, size - offset)
        chunk = os.pread(fd, want, offset)
        ok = len(chunk) == want and (
            hashlib.blake2b(chunk, digest_size=32).digest()
            == digests[index * _DIGEST:(index + 1) * _DIGEST]
        )
        if ok and offset + want >= size:
            ok = os.fstat(fd).st_size == size
        if not ok:
            self._quarantine(key.hex(), fd)
            raise BlobCorrupted(checksum=key.hex())
        return chunk

    def _quarantine(self, hexsum: str, fd: int) -> None:
        """Move the corrupted file (the one open as `fd`, not a repaired copy that a concurrent
        put may have renamed into place since) out of the served set."""
        path = self.root / hexsum
        with self._lock:
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                return
            os.replace(path, self._quarantined(hexsum))
            try:
                os.unlink(self._sidecar(hexsum))
            except FileNotFoundError:
                pass
        _fsync_dir(self.root)


class _Writer:
    """The temp files of one upload: content and sidecar, hashed as they are written."""

    def __init__(self, root: Path, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.committed = False
        fd, name = tempfile.mkstemp(dir=root, prefix=_TEMP_PREFIX)
        self.content_path = Path(name)
        self._content = os.fdopen(fd, "wb", buffering=0)
        try:
            fd, name = tempfile.mkstemp(dir=root, prefix=_TEMP_PREFIX, suffix=_SIDECAR_SUFFIX)
        except BaseException:
            self.discard()
            raise
        self.sidecar_path = Path(name)
        self._sidecar = os.fdopen(fd, "wb")
        self._whole = hashlib.blake2b(digest_size=32)
        self._chunk = hashlib.blake2b(digest_size=32)
        self._in_chunk = 0
        self._digests = bytearray()
        self.size = 0

    def hash_chunks(self, data: bytes) -> None:
        """The sidecar's chunk hashes (runs beside `write`)."""
        view = memoryview(data)
        while view:
            room = self.chunk_bytes - self._in_chunk
            part, view = view[:room], view[room:]
            self._chunk.update(part)
            self._in_chunk += len(part)
            if self._in_chunk == self.chunk_bytes:
                self._digests += self._chunk.digest()
                self._chunk = hashlib.blake2b(digest_size=32)
                self._in_chunk = 0

    def write(self, data: bytes) -> None:
        """The address hash and the file."""
        self._whole.update(data)
        self._content.write(data)
        self.size += len(data)

    def finish(self) -> tuple[bytes, int]:
        if self._in_chunk:
            self._digests += self._chunk.digest()
        self._content.flush()
        os.fsync(self._content.fileno())
        self._content.close()
        checksum = self._whole.digest()
        digests = bytes(self._digests)
        seal = _seal(checksum, self.chunk_bytes, self.size, digests)
        self._sidecar.write(_HEADER.pack(_MAGIC, self.chunk_bytes, self.size, seal))
        self._sidecar.write(digests)
        self._sidecar.flush()
        os.fsync(self._sidecar.fileno())
        self._sidecar.close()
        return checksum, self.size

    def discard(self) -> None:
        for handle in (getattr(self, "_content", None), getattr(self, "_sidecar", None)):
            if handle is not None and not handle.closed:
                handle.close()
        if self.committed:
            return
        for path in (getattr(self, "content_path", None), getattr(self, "sidecar_path", None)):
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


def _seal(checksum: bytes, chunk_bytes: int, size: int, digests: bytes) -> bytes:
    h = hashlib.blake2b(_SEAL_DOMAIN, digest_size=32)
    h.update(checksum + struct.pack("<IQ", chunk_bytes, size) + digests)
    return h.digest()


def _check_sidecar(sidecar: bytes, key: bytes, size: int) -> tuple[int | None, bytes]:
    """(chunk size, chunk hashes) of a sidecar sealed to blob `key` of `size` bytes, or
    (None, b"") for one that is not."""
    if len(sidecar) < _HEADER.size:
        return None, b""
    magic, chunk_bytes, declared, seal = _HEADER.unpack_from(sidecar)
    digests = sidecar[_HEADER.size:]
    if magic != _MAGIC or chunk_bytes == 0 or declared != size:
        return None, b""
    if len(digests) != _DIGEST * -(-size // chunk_bytes):
        return None, b""
    if seal != _seal(key, chunk_bytes, size, digests):
        return None, b""
    return chunk_bytes, digests


async def _write(writer: "_Writer", block: bytes) -> None:
    # hashlib and file writes release the GIL: the chunk hashes run beside the address hash and
    # the write, on another core.
    await asyncio.gather(asyncio.to_thread(writer.write, block), asyncio.to_thread(writer.hash_chunks, block))


async def _create_writer(root: Path, chunk_bytes: int) -> "_Writer":
    # Created in a thread; if the upload is cancelled meanwhile, the temps are still removed.
    creating = asyncio.ensure_future(asyncio.to_thread(_Writer, root, chunk_bytes))
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        def discard(done: "asyncio.Future[_Writer]") -> None:
            if not done.cancelled() and done.exception() is None:
                done.result().discard()
        creating.add_done_callback(discard)
        raise


async def _aiter(chunks: AsyncIterator[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if hasattr(chunks, "__aiter__"):
        async for piece in chunks:  # type: ignore[union-attr]
            yield piece
    else:
        for piece in chunks:  # type: ignore[union-attr]
            yield piece


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the Serve application -----------------------------------------------------------------

def blob_url(public_url: str, checksum: bytes) -> str:
    return f"{public_url.rstrip('/')}{APP_PREFIX['blobs']}/{BLOB_CHECKSUM.show(checksum)}"


@dataclass(frozen=True)
class UploadPolicy:
    """What an account may upload and how fast the bytes must come (docs/blobs.md)."""

    # Bytes per account per window, by kind (weights: None means 4 files at the weights limit).
    data_quota_bytes: int = 256 * 1024 * 1024
    weights_quota_bytes: int | None = None
    quota_window_s: float = 3600.0
    tickets_per_window: int = 240  # tickets per account per window
    ticket_ttl_s: float = TICKET_TTL_S
    # The body-read deadline: `deadline_base_s + max_size / min_bytes_per_s` for the whole body
    # (the ticket's size), and no more than `idle_s` without a byte. A slower upload is cut
    # (408 UploadTooSlow) and frees its slot.
    min_bytes_per_s: int = 256 * 1024
    deadline_base_s: float = 10.0
    idle_s: float = 10.0

    def deadline_s(self, max_size: int) -> float:
        return self.deadline_base_s + max_size / self.min_bytes_per_s


@dataclass(frozen=True)
class RetentionPolicy:
    """When the store collects what the chain no longer names (serve/retention.py)."""

    grace_s: float = 3600.0  # an unnamed blob younger than this stays (uploads come first)
    interval_s: float = 600.0  # between sweeps


class BlobHandlers:
    """The blob store's routes (soma_ray/routes.py) over a BlobStore, and its in-cluster methods.

    `chain` is a Transport of the network (RayTransport in the service; anything with
    `system_state`, `get_account`, `object_ids` and `get_object` in tests), or an async callable
    returning one, or None: a store that follows no chain issues no tickets and collects
    nothing (tickets made with its `ticket_key` are still good)."""

    def __init__(self, store: "BlobStore", max_data_bytes: int, max_weights_bytes: int, public_url: str,
                 chain: Any = None, ticket_key: bytes | None = None, policy: UploadPolicy = UploadPolicy(),
                 retention: RetentionPolicy = RetentionPolicy(), clock=time.monotonic) -> None:
        self.store = store
        self.limits = {"upload_data": max_data_bytes, "upload_weights": max_weights_bytes}
        self.public_url = public_url
        self.policy = policy
        self.retention = retention
        self.ticket_key = ticket_key or tickets.new_key()
        self._chain = chain
        self._connecting: asyncio.Lock | None = None
        self._state: tuple[float, Any] | None = None  # (read at, SystemState)
        self._clock = clock
        weights_quota = policy.weights_quota_bytes or 4 * max_weights_bytes
        self._quota = {"data": Buckets(policy.data_quota_bytes, policy.quota_window_s, clock),
                       "weights": Buckets(weights_quota, policy.quota_window_s, clock)}
        self._ticket_rate = Buckets(policy.tickets_per_window, policy.quota_window_s, clock)
        self._requests_answered = OnceOnly()
        self._tickets_spent = OnceOnly()
        self.collected = 0  # blobs removed by retention since start

    async def body_limit(self, name: str) -> int:
        return self.limits[name]

    # -- tickets ------------------------------------------------------------------------------

    async def _network(self):
        """The chain's transport, connected on first use (once, however many ask at once)."""
        if callable(self._chain) and not hasattr(self._chain, "system_state"):
            self._connecting = self._connecting or asyncio.Lock()
            async with self._connecting:
                if callable(self._chain) and not hasattr(self._chain, "system_state"):
                    self._chain = await self._chain()
        return self._chain

    async def _system_state(self) -> SystemState:
        """The chain's state, read at most every STATE_TTL_S (parameters and chain id)."""
        if self._state is None or self._clock() - self._state[0] > STATE_TTL_S:
            chain = await self._network()
            self._state = (self._clock(), decode(await chain.system_state(), SystemState))
        return self._state[1]

    async def upload_ticket(self, request: TicketRequest) -> UploadTicket:
        """POST /blobs/ticket (and the in-cluster path): a ticket for one upload of the signing
        account, once it is funded and within its quota (soma_ray/tickets.py)."""
        if await self._network() is None:
            raise UploadUnauthorized(reason="this blob store follows no chain: it issues no tickets")
        if request.kind not in tickets.KINDS:
            raise MalformedInput(reason=f"a blob kind is one of {', '.join(tickets.KINDS)}")
        state = await self._system_state()
        at = tickets.now_ms()
        address = tickets.check_request(request, state.chain_id,
                                        self.limits["upload_" + request.kind], at)
        if not self._requests_answered.spend((address, bytes(request.nonce)), request.expires_ms, at):
            raise UploadUnauthorized(reason="this request was answered already (each takes a new nonce)")
        need = tickets.min_balance(state.parameters, request.kind, request.size)
        balance = decode(await (await self._network()).get_account(address), Account).balance
        if balance < need:
            raise AccountUnderfunded(address=address, balance=balance, required=need)
        wait = self._ticket_rate.take(address)
        if wait:
            raise RateLimited(rate_class="upload", scope="account", retry_after_s=max(1, math.ceil(wait)))
        quota = self._quota[request.kind]
        wait = quota.take(address, request.size)
        if wait:
            self._ticket_rate.give_back(address)
            raise UploadQuotaExceeded(address=address, size=request.size, quota=int(quota.capacity),
                                      window_s=int(self.policy.quota_window_s),
                                      retry_after_s=max(1, math.ceil(min(wait, self.policy.quota_window_s))))
        return tickets.issue(self.ticket_key, address, request.kind, request.size, request.nonce, at,
                             self.policy.ticket_ttl_s)

    def _spend(self, ticket: UploadTicket | None, kind: str) -> UploadTicket:
        at = tickets.now_ms()
        tickets.check_ticket(self.ticket_key, ticket, kind, at)
        if not self._tickets_spent.spend(bytes(ticket.nonce), ticket.expires_ms, at):
            raise UploadUnauthorized(reason="the ticket was used already (one upload each)")
        return ticket

    # -- uploads --------------------------------------------------------------------------------

    async def upload(self, kind: str, data, limit: int, ticket: UploadTicket | None = None) -> Uploaded:
        """Stream the request's body into the store (`data` is the request: the body can be as
        large as a weights file, so it is never held in memory), once its ticket is checked."""
        ticket = self._spend(ticket, kind)
        limit = min(limit, ticket.max_size)
        declared = data.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BlobTooLarge(size_at_least=int(declared), max=limit)
        return await self._put(data.stream(), limit)

    async def upload_bytes(self, kind: str, data: bytes, ticket: UploadTicket) -> Uploaded:
        """The in-cluster path of an upload (RayTransport): the same ticket, the same limits."""
        if kind not in tickets.KINDS:
            raise MalformedInput(reason=f"a blob kind is one of {', '.join(tickets.KINDS)}")
        ticket = self._spend(ticket, kind)
        return await self._put([bytes(data)], min(self.limits["upload_" + kind], ticket.max_size))

    async def _put(self, chunks, limit: int) -> Uploaded:
        """Store what `chunks` yields within `limit` bytes and the policy's body deadline."""
        deadline = self.policy.deadline_s(limit)
        received = 0

        async def timed():
            nonlocal received
            pieces = _aiter(chunks).__aiter__()
            while True:
                try:
                    piece = await asyncio.wait_for(pieces.__anext__(), self.policy.idle_s)
                except StopAsyncIteration:
                    return
                received += len(piece)
                yield piece

        try:
            async with asyncio.timeout(deadline):
                info = await self.store.put(timed(), limit)
        except TimeoutError:
            raise UploadTooSlow(received=received, deadline_s=round(deadline, 1)) from None
        return Uploaded(url=blob_url(self.public_url, info.checksum), checksum=info.checksum, size=info.size)

    # -- downloads ------------------------------------------------------------------------------

    async def get_blob(self, checksum: bytes):
        from starlette.responses import StreamingResponse

        reader = await self.store.open(checksum)
        return StreamingResponse(_stream(reader), media_type="application/octet-stream",
                                 headers=_blob_headers(reader.info))

    async def head_get_blob(self, checksum: bytes):
        from starlette.responses import Response

        return Response(headers=_blob_headers(await self.store.stat(checksum)),
                        media_type="application/octet-stream")

    async def read(self, checksum: bytes, max_bytes: int) -> bytes:
        """The in-cluster read (RayTransport.fetch: an audit's download): the verified bytes;
        BlobTooLarge when over `max_bytes`, BlobNotFound, BlobCorrupted."""
        info = await self.store.stat(checksum)
        if info.size > max_bytes:
            raise BlobTooLarge(size_at_least=info.size, max=max_bytes)
        return await self.store.get(checksum)

    # -- retention ------------------------------------------------------------------------------

    async def collect(self) -> list[str]:
        """Remove the blobs the chain no longer names (serve/retention.py), stored more than the
        grace period ago; returns their checksums (hex). Nothing without a chain."""
        chain = await self._network()
        if chain is None:
            return []
        started = time.time()
        keep = await retention.chain_references(chain)  # read first: a blob named since stays
        doomed = retention.collectable(await asyncio.to_thread(self.store.stored, started), keep,
                                       self.retention.grace_s)
        removed = [c.hex() for c in doomed
                   if await asyncio.to_thread(self.store.remove, c, started - self.retention.grace_s)]
        self.collected += len(removed)
        if removed:
            log.info("retention removed %d blobs the chain no longer names", len(removed))
        return removed

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.retention.interval_s)
            try:
                await self.collect()
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("retention sweep failed")


_service = None


def _build_service() -> Any:
    """The `BlobService` deployment, built on first use so that importing this module (the store
    alone, in unit tests and tools) does not import Ray Serve."""
    global _service
    if _service is not None:
        return _service

    from ray import serve

    from serve.router import Router
    from soma_ray.ray_transport import RayTransport

    @serve.deployment(
        name="BlobService",
        num_replicas=1,  # the files live on this one node's disk; the quotas are its memory
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
    )
    class BlobService:
        def __init__(self, root: str, max_data_bytes: int, max_weights_bytes: int, public_url: str,
                     network: tuple[str, str] | None = None, ticket_key: bytes | None = None,
                     policy: UploadPolicy = UploadPolicy(), retention_policy: RetentionPolicy = RetentionPolicy(),
                     limits: dict | None = None, trusted_proxies: tuple[str, ...] = ()) -> None:
            self.store = BlobStore(Path(root))

            async def chain():
                return await asyncio.to_thread(RayTransport.connect, *network)

            self.handlers = BlobHandlers(self.store, max_data_bytes, max_weights_bytes, public_url,
                                         chain if network is not None else None, ticket_key, policy,
                                         retention_policy)
            self._router = Router("blobs", self.handlers, limits=limits, trusted_proxies=trusted_proxies)
            self._sweeping: asyncio.Task | None = None

        def _sweep(self) -> None:
            if self._sweeping is None or self._sweeping.done():
                self._sweeping = asyncio.get_running_loop().create_task(self.handlers.sweep_forever())

        async def __call__(self, request):
            self._sweep()
            return await self._router.handle(request)

        async def check_health(self) -> None:  # Serve calls it every few seconds: starts the sweeps
            self._sweep()

        # The in-cluster path (RayTransport): not reachable over HTTP, not under its limits.
        async def upload_ticket(self, request: TicketRequest) -> UploadTicket:
            return await self.handlers.upload_ticket(request)

        async def upload_bytes(self, kind: str, data: bytes, ticket: UploadTicket) -> Uploaded:
            return await self.handlers.upload_bytes(kind, data, ticket)

        async def read(self, checksum: bytes, max_bytes: int) -> bytes:
            return await self.handlers.read(checksum, max_bytes)

        async def collect(self) -> list[str]:
            return await self.handlers.collect()

    _service = BlobService
    return _service


def _blob_headers(info: BlobInfo) -> dict[str, str]:
    return {
        "Content-Length": str(info.size),
        "ETag": f'"{info.hex}"',
        "Cache-Control": "public, max-age=31536000, immutable",
    }


async def _stream(reader: BlobReader) -> AsyncIterator[bytes]:
    # A BlobCorrupted raised here, after the status line went out, ends the response short of
    # its Content-Length: the client sees a broken transfer, never the corrupted chunk.
    try:
        async for chunk in reader:
            yield chunk
    finally:
        await reader.aclose()


def blob_app(root: str, max_data_bytes: int, max_weights_bytes: int, public_url: str, *,
             network: tuple[str, str] | None = None, ticket_key: bytes | None = None,
             policy: UploadPolicy = UploadPolicy(), retention_policy: RetentionPolicy = RetentionPolicy(),
             limits: dict | None = None, trusted_proxies: tuple[str, ...] = ()) -> Any:
    """The BlobService application: `serve.run(blob_app(...), name=..., route_prefix="/blobs")`.

    `max_data_bytes` is the chain's `max_submission_bytes`, `max_weights_bytes` what the scoring
    service will load (serve/scoring.py `weights_file_bound`, below the chain's
    `model_max_weight_size`); `public_url` is the base URL clients reach Serve at (urls returned
    are `{public_url}/blobs/{checksum}`). `network` (namespace, prefix): the chain that funds
    tickets and that retention follows (None: no tickets issued, nothing collected);
    `ticket_key`: the MAC key of its tickets (default a fresh one per replica); `policy`,
    `retention_policy`: quotas, deadlines and retention; `limits`, `trusted_proxies`: the
    router's (serve/router.py)."""
    return _build_service().bind(str(root), int(max_data_bytes), int(max_weights_bytes), public_url,
                                 network, ticket_key, policy, retention_policy, limits, tuple(trusted_proxies))


def __getattr__(name: str) -> Any:
    if name == "BlobService":
        return _build_service()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
