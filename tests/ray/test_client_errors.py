"""The client turns a validator's (code, fields) into the typed error a user can catch."""
import pytest

from soma_ray.client import SomaClient, raise_error
from soma_ray.protocol import errors
from soma_ray.protocol.targets import ZeroEmbedding


def test_known_codes_raise_their_typed_error_with_fields():
    with pytest.raises(errors.BadNonce) as caught:
        raise_error("BadNonce", [("expected", 4), ("got", 2)])
    assert (caught.value.expected, caught.value.got) == (4, 2)
    with pytest.raises(ZeroEmbedding):  # defined outside protocol/errors.py
        raise_error("ZeroEmbedding", [])
    with pytest.raises(errors.MempoolFull) as full:  # a validator's dict of fields
        raise_error("MempoolFull", {"capacity": 5})
    assert full.value.capacity == 5 and "resubmit later" in str(full.value)


def test_unknown_code_or_fields_still_raise_a_protocol_error_with_the_details():
    with pytest.raises(errors.UnknownProtocolError, match=r"FutureError: \[\('x', 1\)\]"):
        raise_error("FutureError", [("x", 1)])
    with pytest.raises(errors.UnknownProtocolError):
        raise_error("BadNonce", [("expected", 1)])  # a field missing


def test_unknown_chain_is_refused():
    with pytest.raises(ValueError, match="unknown chain 'mainnet'"):
        SomaClient(chain="mainnet")
