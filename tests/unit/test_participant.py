"""The SDK's pure pieces: keys as the guide names them, ids from text, bonds, fixed point."""
import numpy as np
import pytest

from soma_ray import Keypair
from soma_ray.participant import ParticipantCalls, as_id
from soma_ray.protocol.submissions import required_bond
from soma_ray.protocol import errors
from soma_ray.protocol.params import localnet
from soma_ray.protocol.targets import embedding_bytes


def test_a_secret_key_round_trips_in_every_form_the_sdk_accepts():
    key = Keypair.generate()
    text = key.to_secret_key()
    assert text.startswith("0x") and len(text) == 66
    for form in (text, text[2:], key.secret, key.to_text()):
        assert Keypair.from_secret_key(form).address == key.address
    with pytest.raises(errors.MalformedInput):
        Keypair.from_secret_key("0xnot-hex")
    with pytest.raises(errors.MalformedInput):
        Keypair.from_secret_key(b"short")


def test_ids_come_as_hex_text_or_bytes_and_anything_else_is_refused():
    raw = bytes(range(32))
    assert as_id("0x" + raw.hex()) == as_id(raw.hex()) == as_id(raw) == raw
    with pytest.raises(errors.MalformedInput, match="a target id is 32 bytes"):
        as_id("0x00", "a target id")
    with pytest.raises(errors.MalformedInput, match="not hex"):
        as_id("zz" * 32)


def test_the_bond_is_the_minimum_or_the_per_byte_price_whichever_is_more():
    params = localnet()
    assert required_bond(params, 0) == params.submission_min_bond
    big = params.submission_min_bond // params.bond_per_byte + 10
    assert required_bond(params, big) == big * params.bond_per_byte


def test_amounts_convert_exactly_between_soma_and_shannons():
    assert ParticipantCalls.to_shannons("1.5") == 1_500_000_000
    assert ParticipantCalls.to_shannons(2) == 2_000_000_000
    assert str(ParticipantCalls.to_soma(1_500_000_001)) == "1.500000001"


def test_embeddings_travel_as_little_endian_float32():
    vector = np.array([1.0, -2.5, 3.25], dtype=">f4")  # any byte order in, one encoding out
    assert embedding_bytes(vector) == np.array([1.0, -2.5, 3.25], dtype="<f4").tobytes()
    with pytest.raises(errors.NonFiniteEmbedding):
        embedding_bytes(np.array([1.0, np.nan], dtype=np.float32))
