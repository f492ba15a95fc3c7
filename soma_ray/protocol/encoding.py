"""Canonical encoding and domain-tagged digests (spec §0).

All hashed or signed data are `msgspec.Struct`s declared with `array_like=True` and
`forbid_unknown_fields=True` (see `Struct`), encoded as msgpack. Dicts never appear in hashed data.
"""
from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import msgspec

from soma_ray.protocol.errors import MalformedInput

DOMAIN_TX = b"soma/tx/v1"
DOMAIN_VOTE = b"soma/vote/v1"
DOMAIN_CHECKPOINT = b"soma/checkpoint/v1"
DOMAIN_CHALLENGE_VOTE = b"soma/challenge-vote/v1"
DOMAIN_EFFECTS = b"soma/effects/v1"
DOMAIN_STATE_ENTRY = b"soma/state-entry/v1"
DOMAIN_PROOF_OF_POSSESSION = b"soma/pop/v1"
DOMAIN_SUBMISSION_COMMITMENT = b"soma/submission-commitment/v1"
DOMAIN_MODEL_COMMITMENT = b"soma/model-commitment/v1"
DOMAIN_TARGET_SEED = b"soma/target-seed/v1"
DOMAIN_CHAIN_ID = b"soma/chain-id/v1"
# A network's identity (`SystemState.chain_id`): the digest of its genesis, this many bytes.
CHAIN_ID_BYTES = 32

T = TypeVar("T")

# The reason recorded for any undecodable bytes. Fixed: a decoder's own message varies between
# msgspec versions, and the reason ends up in hashed effects.
UNDECODABLE = "the bytes do not decode as the expected canonical type"


class Struct(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Base of every canonically encoded object: fields encode as a positional array."""


def enc_hook(value: Any) -> Any:
    """Subclasses of bytes (`crypto.Address`, the SDK's callable address) encode as the plain
    bytes they hold: msgspec encodes no subclass by itself. Anything else stays unsupported."""
    if isinstance(value, bytes):
        return bytes(value)
    raise TypeError(f"Encoding objects of type {type(value).__name__} is unsupported")


_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_decoders: dict[Any, msgspec.msgpack.Decoder] = {}


def encode(obj: Any) -> bytes:
    """Canonical msgpack bytes of a Struct (or of plain ints/bytes/lists/tuples)."""
    return _encoder.encode(obj)


def decode(data: bytes, type_: type[T]) -> T:
    """Decode canonical bytes into `type_`, raising `MalformedInput` on any bad input."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError):
        # ValueError covers invalid UTF-8 in str fields (UnicodeDecodeError).
        raise MalformedInput(reason=UNDECODABLE) from None


def blake2b256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def digest(domain: bytes, data: bytes | Any) -> bytes:
    """BLAKE2b-256 of the domain tag followed by the data (encoded first unless already bytes)."""
    payload = data if isinstance(data, (bytes, bytearray)) else encode(data)
    return blake2b256(domain + payload)


def signing_domain(domain: bytes, chain_id: bytes) -> bytes:
    """What a signature of one network is made over, before the message: the purpose's domain tag
    followed by the network's 32-byte chain id, so that nothing signed for one network (a
    transaction, a consensus vote, an audit vote) verifies on another."""
    chain_id = bytes(chain_id)
    if len(chain_id) != CHAIN_ID_BYTES:
        raise ValueError(f"a chain id is {CHAIN_ID_BYTES} bytes, got {len(chain_id)}")
    return domain + chain_id


def u64_le(value: int) -> bytes:
    return value.to_bytes(8, "little")
