"""Upload tickets (soma_ray/tickets.py): a signed request of an account, a ticket only the blob
store can make, each used once."""
import msgspec
import pytest

from soma_ray import tickets
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.errors import BlobTooLarge, MalformedInput, UploadUnauthorized
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.submissions import submission_cost

NOW = 1_700_000_000_000
CHAIN = b"\x07" * 32
ALICE = Keypair.from_secret(b"\x01" * 32)


def request(**changes):
    signed = tickets.sign_request(ALICE, "data", 1000, CHAIN, expires_ms=NOW + 60_000, nonce=b"\x09" * 16)
    return msgspec.structs.replace(signed, **changes) if changes else signed


def unauthorized(call) -> str:
    with pytest.raises(UploadUnauthorized) as caught:
        call()
    return caught.value.reason


def test_a_signed_request_names_its_signer_for_this_chain_only():
    assert tickets.check_request(request(), CHAIN, 1 << 20, NOW) == ALICE.address
    assert "signature" in unauthorized(lambda: tickets.check_request(request(), b"\x08" * 32, 1 << 20, NOW))
    assert "signature" in unauthorized(lambda: tickets.check_request(request(), b"", 1 << 20, NOW))
    for changed in ({"size": 999}, {"kind": "weights"}, {"nonce": b"\x0a" * 16},
                    {"expires_ms": NOW + 60_001}, {"public_key": Keypair.generate().public_key}):
        assert "signature" in unauthorized(lambda: tickets.check_request(request(**changed), CHAIN, 1 << 20, NOW))


def test_a_request_out_of_date_or_out_of_bounds_is_refused():
    assert "expired" in unauthorized(lambda: tickets.check_request(request(), CHAIN, 1 << 20, NOW + 60_000))
    far = tickets.sign_request(ALICE, "data", 10, CHAIN, expires_ms=NOW + 1000 * tickets.REQUEST_AHEAD_S + 1)
    unauthorized(lambda: tickets.check_request(far, CHAIN, 1 << 20, NOW))
    with pytest.raises(BlobTooLarge):
        tickets.check_request(request(), CHAIN, 999, NOW)
    with pytest.raises(MalformedInput):
        tickets.check_request(request(kind="code"), CHAIN, 1 << 20, NOW)
    with pytest.raises(MalformedInput):
        tickets.check_request(request(size=0), CHAIN, 1 << 20, NOW)
    unauthorized(lambda: tickets.check_request(request(nonce=b"short"), CHAIN, 1 << 20, NOW))


def test_a_ticket_is_the_stores_for_one_kind_until_it_expires():
    key = tickets.new_key()
    ticket = tickets.issue(key, ALICE.address, "data", 1000, b"\x09" * 16, NOW, ttl_s=300)
    assert ticket.expires_ms == NOW + 300_000 and ticket.max_size == 1000
    tickets.check_ticket(key, ticket, "data", NOW + 299_999)
    assert "not this blob store's" in unauthorized(lambda: tickets.check_ticket(tickets.new_key(), ticket, "data", NOW))
    for forged in ({"max_size": 10**9}, {"address": b"\x02" * 32}, {"expires_ms": NOW + 10**9},
                   {"kind": "weights"}, {"mac": bytes(32)}):
        unauthorized(lambda: tickets.check_ticket(key, msgspec.structs.replace(ticket, **forged),
                                                  forged.get("kind", "data"), NOW))
    assert "for data" in unauthorized(lambda: tickets.check_ticket(key, ticket, "weights", NOW))
    assert "expired" in unauthorized(lambda: tickets.check_ticket(key, ticket, "data", NOW + 300_000))
    assert "no ticket" in unauthorized(lambda: tickets.check_ticket(key, None, "data", NOW))


def test_a_ticket_travels_as_hex_in_its_header():
    ticket = tickets.issue(tickets.new_key(), ALICE.address, "weights", 5, b"\x01" * 16, NOW)
    assert tickets.parse_ticket(tickets.show_ticket(ticket)) == ticket
    for garbage in ("", "zz", "00" * 10, "ab" * 600):
        unauthorized(lambda: tickets.parse_ticket(garbage))


def test_once_only_remembers_until_expiry_within_a_bound():
    seen = tickets.OnceOnly(max_keys=3)
    assert seen.spend("a", 100, 0) and not seen.spend("a", 100, 50)
    assert seen.spend("a", 200, 100)  # expired: forgotten
    for key in "bcd":
        assert seen.spend(key, 1000, 100)
    assert len(seen) == 3


def test_the_minimum_balance_is_what_the_upload_is_for():
    parameters = Parameters()
    assert tickets.min_balance(parameters, "data", 4096) == submission_cost(parameters, 4096)
    assert tickets.min_balance(parameters, "weights", 10**6) == 2 * parameters.base_fee
