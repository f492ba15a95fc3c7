"""Canonical bytes of TransactionEffects decode back to the same effects, error fields included.

A client can be sent `encode(effects)` and rebuild the struct with
`soma_ray.protocol.encoding.decode(data, TransactionEffects)`: ExecutionError's field values
(ints, str, bytes, bool, None) come back with their exact types, and re-encode to the same bytes.
"""
import msgspec
import pytest

from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.errors import ExecutionError, error_from_struct, registry
from soma_ray.protocol.types import TransactionEffects

EVERY_KIND = [
    ("a_int", -(2**63)), ("b_big", 2**64 - 1), ("c_str", "né"), ("d_bytes", b"\x00\xff"),
    ("e_true", True), ("f_false", False), ("g_none", None), ("h_empty", b""),
]
# encode() of EVERY_KIND_EFFECTS, computed before ExecutionError's decoding was tested: the
# bytes stay as they were.
EVERY_KIND_HEX = (
    "96c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc4200707070707070707070707"
    "07070707070707070707070707070707070707070705cd03e892ad46726f6d5468654675747572659892a5615f696e74"
    "d3800000000000000092a5625f626967cfffffffffffffffff92a5635f737472a36ec3a992a7645f6279746573c40200"
    "ff92a6655f74727565c392a7665f66616c7365c292a6675f6e6f6e65c092a7685f656d707479c40091c4200909090909"
    "090909090909090909090909090909090909090909090909090909"
)
EVERY_KIND_EFFECTS = TransactionEffects(
    bytes(range(32)), b"\x07" * 32, 5, 1_000, ExecutionError("FromTheFuture", EVERY_KIND), [b"\x09" * 32]
)
REGISTRY = registry()
SAMPLES = [0, 1, -1, 2**64 - 1, "", "text", b"", b"\x01" * 32, True, False, None]


def effects_with(error: ExecutionError | None) -> TransactionEffects:
    return TransactionEffects(b"\x01" * 32, b"\x02" * 32, nonce=3, fee_charged=1_000, error=error,
                              created=[b"\x03" * 32])


def typed(effects: TransactionEffects) -> list:
    fields = effects.error.fields if effects.error else []
    return [(name, type(value), value) for name, value in fields]


def assert_round_trips(effects: TransactionEffects) -> None:
    data = encode(effects)
    for decoded in (decode(data, TransactionEffects), msgspec.msgpack.Decoder(TransactionEffects).decode(data)):
        assert decoded == effects
        assert typed(decoded) == typed(effects)  # True stays True, not 1; b"" stays bytes
        assert encode(decoded) == data


def test_effects_bytes_are_unchanged_and_decode():
    assert encode(EVERY_KIND_EFFECTS).hex() == EVERY_KIND_HEX
    assert_round_trips(EVERY_KIND_EFFECTS)
    decoded = decode(bytes.fromhex(EVERY_KIND_HEX), TransactionEffects)
    assert decoded.error.fields == EVERY_KIND and typed(decoded) == typed(EVERY_KIND_EFFECTS)


def test_effects_without_an_error_round_trip():
    assert_round_trips(effects_with(None))
    assert_round_trips(TransactionEffects(b"\x01" * 32, b"\x02" * 32, 0, 0))


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_each_field_value_kind_round_trips(value):
    assert_round_trips(effects_with(ExecutionError("X", [("v", value)])))


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_effects_of_every_error_kind_round_trip_to_the_typed_error(code):
    cls = REGISTRY[code]
    offset = len(code)
    error = cls(**{name: SAMPLES[(offset + i) % len(SAMPLES)] for i, name in enumerate(cls.fields)})
    effects = effects_with(error.to_struct())
    assert_round_trips(effects)
    assert error_from_struct(decode(encode(effects), TransactionEffects).error) == error


def test_a_list_of_effects_round_trips():
    effects = [effects_with(None), EVERY_KIND_EFFECTS, effects_with(REGISTRY["BadNonce"](4, 2).to_struct())]
    assert decode(encode(effects), list[TransactionEffects]) == effects
