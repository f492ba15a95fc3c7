"""The client turns a validator's (code, fields) into the typed error a user can catch."""
import pytest

from soma_ray.client import SomaClient, raise_error
from soma_ray.protocol import errors
from soma_ray.protocol.targets import ZeroEmbedding


def test_known_codes_raise_their_typed_error_with_fields():
    with pytest.raises(errors.BadNonce) as caught:
        raise_error("BadNonce", [("expected", 4), ("got", 2)])
    assert (caught.value.expected, caught.value.got) == (4, 2)
    with pytest.raises(ZeroEmbedding):  # re-exported by protocol/targets.py
        raise_error("ZeroEmbedding", [])
    with pytest.raises(errors.MempoolFull) as full:  # a validator's dict of fields
        raise_error("MempoolFull", {"capacity": 5})
    assert full.value.capacity == 5 and "resubmit later" in str(full.value)


def test_per_sender_mempool_refusals_raise_their_typed_errors():
    """A validator's refusals for one sender's share of its mempool (`mempool_per_sender`)."""
    with pytest.raises(errors.SenderPoolFull) as full:
        raise_error("SenderPoolFull", {"sender_pending": 3, "limit": 3})
    assert (full.value.sender_pending, full.value.limit) == (3, 3)
    assert "limit per sender is 3" in str(full.value) and "resubmit" in str(full.value)
    with pytest.raises(errors.NonceTooFarAhead) as ahead:
        raise_error("NonceTooFarAhead", {"account_nonce": 7, "max": 9, "got": 10})
    assert (ahead.value.account_nonce, ahead.value.max, ahead.value.got) == (7, 9, 10)
    assert "nonce 10 is too far ahead" in str(ahead.value) and "up to 9" in str(ahead.value)


def test_an_expired_transaction_raises_its_typed_error():
    """A transaction a validator dropped after `mempool_ttl_s` in its mempool."""
    with pytest.raises(errors.TransactionExpired) as expired:
        raise_error("TransactionExpired", {"ttl_s": 600})
    assert expired.value.ttl_s == 600
    assert "waited 600 s" in str(expired.value) and "resubmit" in str(expired.value)


def test_unknown_code_or_fields_still_raise_a_protocol_error_with_the_details():
    with pytest.raises(errors.UnknownProtocolError, match=r"FutureError: \[\('x', 1\)\]"):
        raise_error("FutureError", [("x", 1)])
    with pytest.raises(errors.UnknownProtocolError):
        raise_error("BadNonce", [("expected", 1)])  # a field missing


def test_unknown_chain_is_refused():
    with pytest.raises(ValueError, match="unknown chain 'mainnet'"):
        SomaClient(chain="mainnet")
