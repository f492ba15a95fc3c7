"""Upload tickets: the blob store takes bytes only from funded accounts, pure (no Ray, no HTTP).

An upload is two requests, both made by `SomaClient.upload(data, kind, signer=keypair)`:

1. `POST /blobs/ticket` with a `TicketRequest`: the account's public key, the blob kind, the
   size it will upload, an expiry (unix ms, at most `REQUEST_AHEAD_S` ahead) and a random nonce,
   signed by the account's key over `REQUEST_DOMAIN || chain_id || encode([public_key, kind,
   size, expires_ms, nonce])` (the network's chain id, `SystemState.chain_id`, so a request
   signed for one network is refused by another). The blob store checks
   the signature, the expiry, that the nonce was not used before, that the account holds at
   least `min_balance(parameters, kind, size)` and that its quota and rate allow `size` more
   bytes (serve/blobs.py), and answers an `UploadTicket`.
2. `PUT /blobs/{kind}` carrying the ticket in the `X-Soma-Ticket` header (hex of its canonical
   msgpack). The ticket names the account, the kind, the most bytes it admits and when it
   expires (`TICKET_TTL_S` after issue), sealed by the blob store's MAC (keyed BLAKE2b-256 under
   a secret only the store holds, over `TICKET_DOMAIN || encode(fields)`). The store checks the
   MAC, the kind, the expiry and that the ticket was not used before (each admits one upload),
   then reads at most `max_size` bytes.

A ticket is a capability the store gives itself: nobody else can make one, and it is not
transferable in a useful way (it is spent by its first upload). Everything refused here is
`UploadUnauthorized{reason}` (401).
"""
from __future__ import annotations

import hashlib
import heapq
import hmac
import os
import time
from typing import Hashable

from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair, address_of, verify_signature
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.submissions import submission_cost
from soma_ray.wire import TicketRequest, UploadTicket

KINDS = ("data", "weights")
REQUEST_DOMAIN = b"soma-blob-ticket-request-v1"
TICKET_DOMAIN = b"soma-blob-ticket-v1"
TICKET_HEADER = "X-Soma-Ticket"
NONCE_BYTES = 16
KEY_BYTES = 32
MAC_BYTES = 32
# How long a ticket admits its upload, from issue.
TICKET_TTL_S = 300
# How far ahead a request's expiry may lie (its signature is good until then), and how long the
# SDK makes its requests good for.
REQUEST_AHEAD_S = 600
REQUEST_TTL_S = 120
# Nonces remembered (requests and tickets, until they expire): far more than the per-account
# ticket rate lets in within REQUEST_AHEAD_S.
MAX_REMEMBERED = 1_000_000


def now_ms() -> int:
    return int(time.time() * 1000)


def min_balance(parameters: Parameters, kind: str, size: int) -> int:
    """What an account must hold to get a ticket: for data, what submitting `size` bytes costs
    (the least bond and the commit and reveal fees: a miner who could not submit them has no use
    for storing them); for weights, the commit and reveal fees of a model (its stake is already
    locked in its pool)."""
    if kind == "data":
        return submission_cost(parameters, size)
    return 2 * parameters.base_fee


# ----------------------------------------------------------------------------- requests (the SDK)


def request_message(request: TicketRequest) -> bytes:
    return encode([bytes(request.public_key), request.kind, request.size, request.expires_ms,
                   bytes(request.nonce)])


def sign_request(keypair: Keypair, kind: str, size: int, chain_id: bytes = b"",
                 expires_ms: int | None = None, nonce: bytes | None = None) -> TicketRequest:
    """A signed request for a ticket to upload `size` bytes of `kind`."""
    unsigned = TicketRequest(
        public_key=keypair.public_key, kind=kind, size=size,
        expires_ms=now_ms() + 1000 * REQUEST_TTL_S if expires_ms is None else expires_ms,
        nonce=os.urandom(NONCE_BYTES) if nonce is None else nonce, signature=b"")
    signature = keypair.sign(REQUEST_DOMAIN + bytes(chain_id), request_message(unsigned))
    return TicketRequest(unsigned.public_key, kind, size, unsigned.expires_ms, unsigned.nonce, signature)


def check_request(request: TicketRequest, chain_id: bytes, max_size: int, at_ms: int) -> bytes:
    """The signer's address, once the request is well formed, in date and signed for this
    chain; UploadUnauthorized (or MalformedInput for a bad kind or size) otherwise."""
    if request.kind not in KINDS:
        raise errors.MalformedInput(reason=f"a blob kind is one of {', '.join(KINDS)}")
    if not 1 <= request.size <= max_size:
        raise errors.BlobTooLarge(size_at_least=request.size, max=max_size) if request.size > max_size \
            else errors.MalformedInput(reason="a ticket is for 1 byte or more")
    if len(request.public_key) != 32 or len(request.nonce) != NONCE_BYTES:
        raise errors.UploadUnauthorized(reason=f"a 32-byte public key and a {NONCE_BYTES}-byte nonce")
    if not at_ms < request.expires_ms <= at_ms + 1000 * REQUEST_AHEAD_S:
        raise errors.UploadUnauthorized(
            reason=f"the request expired or expires more than {REQUEST_AHEAD_S} s ahead (check the clock)")
    if not verify_signature(request.public_key, REQUEST_DOMAIN + bytes(chain_id), request_message(request),
                            request.signature):
        raise errors.UploadUnauthorized(reason="the request's signature does not verify for this network")
    return address_of(bytes(request.public_key))


# ----------------------------------------------------------------------------- tickets (the store)


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _mac(key: bytes, ticket: UploadTicket) -> bytes:
    fields = encode([bytes(ticket.address), ticket.kind, ticket.max_size, ticket.expires_ms,
                     bytes(ticket.nonce)])
    return hashlib.blake2b(TICKET_DOMAIN + fields, key=key, digest_size=MAC_BYTES).digest()


def issue(key: bytes, address: bytes, kind: str, max_size: int, nonce: bytes, at_ms: int,
          ttl_s: float = TICKET_TTL_S) -> UploadTicket:
    unsealed = UploadTicket(address=bytes(address), kind=kind, max_size=max_size,
                            expires_ms=at_ms + int(1000 * ttl_s), nonce=bytes(nonce), mac=b"")
    return UploadTicket(unsealed.address, kind, max_size, unsealed.expires_ms, unsealed.nonce,
                        _mac(key, unsealed))


def check_ticket(key: bytes, ticket: UploadTicket | None, kind: str, at_ms: int) -> None:
    """The ticket is the store's, for `kind`, and in date; UploadUnauthorized otherwise."""
    if ticket is None:
        raise errors.UploadUnauthorized(reason="no ticket")
    if not hmac.compare_digest(_mac(key, ticket), bytes(ticket.mac)):
        raise errors.UploadUnauthorized(reason="the ticket is not this blob store's")
    if ticket.kind != kind:
        raise errors.UploadUnauthorized(reason=f"the ticket is for {ticket.kind}, not {kind}")
    if at_ms >= ticket.expires_ms:
        raise errors.UploadUnauthorized(reason="the ticket expired")


def show_ticket(ticket: UploadTicket) -> str:
    """The header's text: hex of the ticket's canonical msgpack."""
    return encode(ticket).hex()


def parse_ticket(text: str) -> UploadTicket:
    """A ticket from its header's text; UploadUnauthorized when it is not one."""
    if len(text) > 1024:
        raise errors.UploadUnauthorized(reason="the ticket header is too long")
    try:
        return decode(bytes.fromhex(text.removeprefix("0x")), UploadTicket)
    except (ValueError, errors.MalformedInput):
        raise errors.UploadUnauthorized(reason="the ticket header does not decode") from None


class OnceOnly:
    """Keys remembered until their expiry (ms): `spend(key, expires_ms, at_ms)` is True the
    first time, False while the key is remembered. Bounded by `max_keys` (soonest to expire out
    first; with the per-account rates in front, far more than can be live at once)."""

    def __init__(self, max_keys: int = MAX_REMEMBERED) -> None:
        self._expiry: dict[Hashable, int] = {}
        self._by_expiry: list[tuple[int, int, Hashable]] = []  # a heap; the counter breaks ties
        self._count = 0
        self._max_keys = max_keys

    def spend(self, key: Hashable, expires_ms: int, at_ms: int) -> bool:
        while self._by_expiry and (self._by_expiry[0][0] <= at_ms or len(self._expiry) >= self._max_keys):
            _, _, old = heapq.heappop(self._by_expiry)
            self._expiry.pop(old, None)
        if key in self._expiry:
            return False
        self._expiry[key] = expires_ms
        self._count += 1
        heapq.heappush(self._by_expiry, (expires_ms, self._count, key))
        return True

    def __len__(self) -> int:
        return len(self._expiry)
