"""The blob store's uploads for a public network (serve/blobs.py BlobHandlers through the router,
no Ray): tickets from funded accounts only, each used once, quotas and rates per account, the
body-read deadline, the in-cluster read; every refusal typed, nothing stored."""
import asyncio
import os

import msgspec
import pytest
from starlette.requests import Request

from serve.blobs import BlobHandlers, BlobStore, UploadPolicy
from serve.router import Router
from soma_ray import tickets
from soma_ray.protocol.crypto import Committee, Keypair
from soma_ray.protocol.encoding import blake2b256, decode, encode
from soma_ray.protocol.errors import BlobTooLarge, ExecutionError
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.submissions import submission_cost
from soma_ray.protocol.types import Account, EmissionPool, SystemState, TargetState
from soma_ray.routes import RATE_LIMITS
from soma_ray.wire import MSGPACK, Uploaded

CHAIN_ID = b"\x05" * 32
MAX_DATA, MAX_WEIGHTS = 4096, 64 * 1024
RICH, POOR = Keypair.from_secret(b"\x01" * 32), Keypair.from_secret(b"\x02" * 32)


class Chain:
    """What the blob store reads of a chain: its state and balances."""

    def __init__(self, balances: dict[bytes, int]):
        self.balances = balances
        fields = dict(epoch=0, epoch_start_timestamp_ms=0, protocol_version=1, parameters=Parameters(),
                      committee=Committee(0, []), target_state=TargetState(0), emission_pool=EmissionPool(0, 0))
        if "chain_id" in SystemState.__struct_fields__:
            fields["chain_id"] = CHAIN_ID
        self.state = SystemState(**fields)

    async def system_state(self) -> bytes:
        return encode(self.state)

    async def get_account(self, address: bytes) -> bytes:
        return encode(Account(balance=self.balances.get(bytes(address), 0)))


def chain_id() -> bytes:
    return Chain({}).state.chain_id


@pytest.fixture
def handlers(tmp_path):
    funded = {RICH.address: 10**12, POOR.address: submission_cost(Parameters(), 100) - 1}
    return BlobHandlers(BlobStore(tmp_path), MAX_DATA, MAX_WEIGHTS, "http://blobs.test", Chain(funded),
                        policy=UploadPolicy(data_quota_bytes=3 * MAX_DATA, tickets_per_window=6, idle_s=0.3,
                                            deadline_base_s=1.0, min_bytes_per_s=1 << 20))


def run(coroutine):
    return asyncio.run(coroutine)


def http(router, method, path, chunks=(b"",), delay_s=0.0, **headers):
    """The router's answer to one request whose body arrives in `chunks`, `delay_s` apart."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b"",
             "client": ("198.51.100.7", 5000),
             "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]}
    parts = list(chunks)

    async def receive():
        if not parts:
            await asyncio.sleep(3600)
        if delay_s:
            await asyncio.sleep(delay_s)
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    response = run(router.handle(Request(scope, receive)))
    code = None
    if response.status_code >= 400:
        code = (decode(response.body, ExecutionError).code if response.media_type == MSGPACK
                else msgspec.json.decode(response.body)["error"])
    return response, code


def ticket_for(handlers, keypair=RICH, kind="data", size=100, **changes):
    request = tickets.sign_request(keypair, kind, size, chain_id())
    if changes:
        request = tickets.sign_request(keypair, kind, size, chain_id(), **changes)
    return run(handlers.upload_ticket(request))


def put(handlers, kind, data, ticket, chunks=None, delay_s=0.0):
    router = Router("blobs", handlers)
    headers = {} if ticket is None else {"x_soma_ticket": tickets.show_ticket(ticket)}
    return http(router, "PUT", f"/{kind}", chunks or [data], delay_s, accept=MSGPACK, **headers)


def test_a_funded_accounts_ticket_admits_one_upload(handlers, tmp_path):
    data = os.urandom(100)
    ticket = ticket_for(handlers, size=len(data))
    assert (ticket.address, ticket.kind, ticket.max_size) == (RICH.address, "data", 100)
    response, code = put(handlers, "data", data, ticket)
    assert code is None and decode(response.body, Uploaded).checksum == blake2b256(data)
    assert (tmp_path / blake2b256(data).hex()).read_bytes() == data
    assert put(handlers, "data", data, ticket)[1] == "UploadUnauthorized"  # spent


def test_uploads_without_a_good_ticket_are_401_and_store_nothing(handlers, tmp_path):
    before = sorted(os.listdir(tmp_path))
    ticket = ticket_for(handlers, size=100)
    forged = msgspec.structs.replace(ticket, max_size=10**6)
    alien = tickets.issue(tickets.new_key(), RICH.address, "data", 100, os.urandom(16), tickets.now_ms())
    for bad in (None, forged, alien):
        assert put(handlers, "data", b"x" * 100, bad)[1] == "UploadUnauthorized"
    assert put(handlers, "weights", b"x" * 100, ticket)[1] == "UploadUnauthorized"  # a data ticket
    router = Router("blobs", handlers)
    assert http(router, "PUT", "/data", [b"x"], x_soma_ticket="not hex")[1] == "UploadUnauthorized"
    assert sorted(os.listdir(tmp_path)) == before


def test_the_body_may_not_pass_the_tickets_size(handlers, tmp_path):
    ticket = ticket_for(handlers, size=100)
    response, code = put(handlers, "data", os.urandom(101), ticket, chunks=[os.urandom(60), os.urandom(41)])
    assert response.status_code == 413 and code == "BlobTooLarge"
    assert [n for n in os.listdir(tmp_path) if not n.startswith(".")] == []


def test_an_account_below_the_minimum_gets_no_ticket(handlers):
    from soma_ray.protocol.errors import AccountUnderfunded

    with pytest.raises(AccountUnderfunded) as poor:
        ticket_for(handlers, POOR, size=100)
    assert poor.value.required == submission_cost(Parameters(), 100)
    ticket_for(handlers, POOR, kind="weights", size=100)  # an owner needs the two fees only
    with pytest.raises(AccountUnderfunded):
        ticket_for(handlers, Keypair.generate(), kind="weights", size=1)


def test_a_request_is_answered_once_and_signed_for_this_chain():
    from soma_ray.protocol.errors import UploadUnauthorized

    async def scenario(handlers):
        request = tickets.sign_request(RICH, "data", 10, chain_id())
        await handlers.upload_ticket(request)
        with pytest.raises(UploadUnauthorized, match="answered already"):
            await handlers.upload_ticket(request)
        with pytest.raises(UploadUnauthorized, match="signature"):
            await handlers.upload_ticket(tickets.sign_request(RICH, "data", 10, b"\x06" * 32))

    import tempfile

    with tempfile.TemporaryDirectory() as root:
        run(scenario(BlobHandlers(BlobStore(root), MAX_DATA, MAX_WEIGHTS, "http://b", Chain({RICH.address: 10**12}))))


def test_quota_and_ticket_rate_per_account(handlers):
    from soma_ray.protocol.errors import RateLimited, UploadQuotaExceeded

    for _ in range(3):
        ticket_for(handlers, size=MAX_DATA)  # the quota: 3 x MAX_DATA per window
    with pytest.raises(UploadQuotaExceeded) as over:
        ticket_for(handlers, size=1)
    assert over.value.quota == 3 * MAX_DATA and over.value.retry_after_s >= 1
    # Another account has its own quota; the ticket rate (6 per window) counts granted tickets.
    other = Keypair.from_secret(b"\x03" * 32)
    run(handlers._network()).balances[other.address] = 10**12
    for _ in range(6):
        ticket_for(handlers, other, size=1)
    with pytest.raises(RateLimited) as fast:
        ticket_for(handlers, other, size=1)
    assert fast.value.scope == "account"
    with pytest.raises(BlobTooLarge):
        ticket_for(handlers, size=MAX_DATA + 1)


def test_a_slow_body_is_cut_and_stores_nothing(handlers, tmp_path):
    # No byte for longer than idle_s (0.3 s).
    ticket = ticket_for(handlers, size=300)
    response, code = put(handlers, "data", b"", ticket, chunks=[b"a" * 100, b"b" * 100, b"c" * 100], delay_s=0.5)
    assert (response.status_code, code) == (408, "UploadTooSlow")
    # Each piece in time, the whole past its deadline (1 s + 300 B at 1 MiB/s).
    ticket = ticket_for(handlers, size=300)
    response, code = put(handlers, "data", b"", ticket, chunks=[b"z" * 30] * 10, delay_s=0.2)
    assert (response.status_code, code) == (408, "UploadTooSlow")
    assert [n for n in os.listdir(tmp_path) if not n.startswith(".")] == []


def test_the_in_cluster_path_takes_the_same_tickets_and_reads_within_a_bound(handlers):
    data = os.urandom(200)
    ticket = ticket_for(handlers, size=200)
    uploaded = run(handlers.upload_bytes("data", data, ticket))
    from soma_ray.protocol.errors import UploadUnauthorized

    with pytest.raises(UploadUnauthorized):
        run(handlers.upload_bytes("data", data, ticket))
    assert run(handlers.read(uploaded.checksum, 200)) == data
    with pytest.raises(BlobTooLarge):
        run(handlers.read(uploaded.checksum, 199))


def test_a_store_that_follows_no_chain_issues_no_tickets(tmp_path):
    from soma_ray.protocol.errors import UploadUnauthorized

    handlers = BlobHandlers(BlobStore(tmp_path), MAX_DATA, MAX_WEIGHTS, "http://b", None, ticket_key=b"k" * 32)
    with pytest.raises(UploadUnauthorized, match="follows no chain"):
        run(handlers.upload_ticket(tickets.sign_request(RICH, "data", 10, b"")))
    ticket = tickets.issue(b"k" * 32, RICH.address, "data", 10, os.urandom(16), tickets.now_ms())
    assert put(handlers, "data", b"0123456789", ticket)[1] is None  # its own key's tickets are good


def test_concurrent_uploads_beyond_the_class_bound_are_429_with_retry_after(handlers):
    async def scenario():
        router = Router("blobs", handlers, limits=RATE_LIMITS)
        gate = asyncio.Event()
        ticket = tickets.show_ticket(await handlers.upload_ticket(tickets.sign_request(RICH, "data", 1, chain_id())))

        def stalled():
            scope = {"type": "http", "method": "PUT", "path": "/data", "root_path": "", "query_string": b"",
                     "client": ("203.0.113.9", 1), "headers": [(b"x-soma-ticket", ticket.encode())]}

            async def receive():
                await gate.wait()
                return {"type": "http.request", "body": b"", "more_body": False}
            return Request(scope, receive)

        # Hold the slots with a handler that waits (the body would be read past the ticket).
        original = handlers.upload

        async def waiting(**arguments):
            await gate.wait()
            return await original(**arguments)

        handlers.upload = waiting
        held = [asyncio.ensure_future(router.handle(stalled())) for _ in range(RATE_LIMITS["upload"].client_concurrent)]
        await asyncio.sleep(0.05)
        refused = await router.handle(stalled())
        gate.set()
        await asyncio.gather(*held)
        handlers.upload = original
        return refused

    refused = run(scenario())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert msgspec.json.decode(refused.body)["error"] == "RateLimited"
