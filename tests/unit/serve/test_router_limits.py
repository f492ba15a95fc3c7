"""The router's limits (serve/router.py over soma_ray/limits.py) and the scoring service's public
lane, without Serve: 429 RateLimited with Retry-After per client and for all, clients behind a
trusted proxy, a streamed answer holding its slot, paged ids, score requests by model id only."""
import asyncio

import msgspec
import numpy as np
import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse

from serve.router import Router, client_of
from soma_ray.limits import Limit
from soma_ray.protocol.encoding import decode
from soma_ray.routes import ROUTES
from soma_ray.wire import EpochReply, ModelManifest, ScoreRequest

LIMITS = {name: Limit(per_client=1000, window_s=60, client_concurrent=100, concurrent=1000)
          for name in ("read", "submit", "faucet", "upload", "download", "score")}
LIMITS["long_poll"] = Limit(per_client=3, window_s=60, client_concurrent=2, concurrent=3)


def request(path: str, client: str = "198.51.100.1", query: str = "", **headers) -> Request:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": query.encode(),
             "client": (client, 1234),
             "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    return Request(scope, receive)


class Gateway:
    def __init__(self):
        self.release = asyncio.Event()
        self.waiting = 0
        self.pages = []

    async def wait_for_epoch(self, epoch, timeout_s):
        self.waiting += 1
        await self.release.wait()
        return EpochReply(epoch)

    async def object_ids(self, tag, limit, after):
        self.pages.append((tag, limit, after))
        return [b"\x01" * 32]


def test_long_polls_beyond_the_bounds_are_429_with_retry_after_and_free_their_slots():
    async def scenario():
        gateway = Gateway()
        router = Router("gateway", gateway, limits=LIMITS)
        poll = lambda client: router.handle(request("/epoch/wait", client, "epoch=9&timeout_s=300"))  # noqa: E731
        held = [asyncio.ensure_future(poll("10.0.0.1")) for _ in range(2)]
        await asyncio.sleep(0.01)
        per_client = await poll("10.0.0.1")  # a third from the same client
        held.append(asyncio.ensure_future(poll("10.0.0.2")))
        await asyncio.sleep(0.01)
        for_all = await poll("10.0.0.3")  # a fourth in flight, whoever asks
        gateway.release.set()
        answers = await asyncio.gather(*held)
        again = await poll("10.0.0.3")
        return gateway, per_client, for_all, answers, again, router

    gateway, per_client, for_all, answers, again, router = asyncio.run(scenario())
    for refused, scope in ((per_client, "client"), (for_all, "all")):
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        body = msgspec.json.decode(refused.body)
        assert body == {"error": "RateLimited", "fields": {"rate_class": "long_poll", "scope": scope, "retry_after_s": 1}}
    assert [a.status_code for a in answers] == [200, 200, 200] and gateway.waiting == 4
    # The window's three requests per client: 10.0.0.3 was refused once (costing nothing), then served.
    assert again.status_code == 200
    assert router.limiter.in_flight("long_poll") == 0


def test_a_client_behind_a_trusted_proxy_is_the_address_it_forwards():
    direct = request("/x", client="203.0.113.5", x_forwarded_for="1.1.1.1")
    assert client_of(direct, frozenset({"10.0.0.9"})) == "203.0.113.5"  # not a trusted proxy: ignored
    proxied = request("/x", client="10.0.0.9", x_forwarded_for="6.6.6.6, 1.1.1.1, 10.0.0.8")
    assert client_of(proxied, frozenset({"10.0.0.9", "10.0.0.8"})) == "1.1.1.1"  # spoofed 6.6.6.6 ignored
    assert client_of(request("/x", client="10.0.0.9"), frozenset({"10.0.0.9"})) == "10.0.0.9"


def test_ids_are_paged():
    async def scenario():
        gateway = Gateway()
        router = Router("gateway", gateway, limits=LIMITS)
        after = "0x" + "ab" * 32
        ok = await router.handle(request("/ids/0x01", query=f"limit=10&after={after}"))
        bad = await router.handle(request("/ids/0x01", query="limit=5000"))
        return gateway, ok, bad

    gateway, ok, bad = asyncio.run(scenario())
    assert ok.status_code == 200 and decode(ok.body, list[bytes]) == [b"\x01" * 32]
    assert gateway.pages == [(b"\x01", 10, b"\xab" * 32)]
    assert bad.status_code == 400
    assert ROUTES["object_ids"].query({"tag": b"\x01", "limit": 7, "after": None}) == {"limit": "7"}


def test_a_streamed_answer_holds_its_slot_until_its_body_is_sent():
    class Blobs:
        async def get_blob(self, checksum):
            async def body():
                yield b"abc"
            return StreamingResponse(body())

    async def scenario():
        router = Router("blobs", Blobs(), limits={**LIMITS, "download": Limit(10, 60, 1, 10)})
        path = "/blobs/" + "00" * 32
        first = await router.handle(request("/" + "00" * 32))
        during = await router.handle(request("/" + "00" * 32))
        chunks = [chunk async for chunk in first.body_iterator]
        after = await router.handle(request("/" + "00" * 32))
        return path, during, chunks, after, router

    _, during, chunks, after, router = asyncio.run(scenario())
    assert during.status_code == 429 and chunks == [b"abc"] and after.status_code == 200
    del after
    import gc

    gc.collect()  # a body never read frees its slot when dropped
    assert router.limiter.in_flight("download") == 0


def test_public_score_requests_name_model_ids_only_and_resolve_from_the_chain():
    from serve.scoring import PublicScoring, StaticManifests
    from soma_ray.protocol.errors import MalformedInput, ObjectNotFound

    manifest = ModelManifest(model_id=b"\x07" * 32, url="http://10.0.0.1/w", checksum=b"\x01" * 32, size=10,
                             decryption_key=b"\x02" * 32)

    class Ingress:
        _settings = None

        def __init__(self):
            self.lanes = []

        async def score_in_lane(self, request, lane):
            self.lanes.append(lane)
            return "scored"

    ingress = Ingress()
    public = PublicScoring(ingress)
    target = np.ones(4, "<f4").tobytes()
    with pytest.raises(MalformedInput, match="manifests are refused"):
        asyncio.run(public.score(ScoreRequest(target_embedding=target, manifests=[manifest], data=b"x")))
    assert asyncio.run(public.score(ScoreRequest(target_embedding=target, model_ids=[b"\x07" * 32], data=b"x"))) == "scored"
    from serve.scoring import PUBLIC

    assert ingress.lanes == [PUBLIC]
    static = StaticManifests([manifest])
    assert asyncio.run(static.model_manifests([b"\x07" * 32])) == [manifest]
    with pytest.raises(ObjectNotFound):
        asyncio.run(static.model_manifests([b"\x08" * 32]))


def test_the_compute_queue_serves_the_in_cluster_lane_first():
    from serve.scoring import IN_CLUSTER, PUBLIC, ComputeQueue

    order = []

    def run(model, items, seed):
        order.append((model, list(items)))
        return [0.0] * len(items)

    async def scenario():
        queue = ComputeQueue(run)
        first = asyncio.ensure_future(queue.score("m", [b"0"], 0, PUBLIC))
        await asyncio.sleep(0)
        public = [asyncio.ensure_future(queue.score("m", [bytes([i])], 0, PUBLIC)) for i in range(1, 4)]
        audit = asyncio.ensure_future(queue.score("a", [b"audit"], 0, IN_CLUSTER))
        await asyncio.gather(first, audit, *public)

    asyncio.run(scenario())
    assert order[0] == ("m", [b"0"])  # already running when the audit came
    assert order[1] == ("a", [b"audit"])  # then the audit, before the public requests that waited longer
    assert order[2] == ("m", [b"\x01", b"\x02", b"\x03"])


def test_a_public_call_merges_a_bounded_amount_so_an_audit_waits_for_little():
    from serve.scoring import IN_CLUSTER, PUBLIC, ComputeQueue

    order = []

    def run(model, items, seed):
        order.append((model, [len(item) for item in items]))
        return [0.0] * len(items)

    async def scenario():
        queue = ComputeQueue(run, low_merge_bytes=50)
        first = asyncio.ensure_future(queue.score("m", [b"0"], 0, PUBLIC))
        await asyncio.sleep(0)
        public = [asyncio.ensure_future(queue.score("m", [b"x" * 20], 0, PUBLIC)) for _ in range(5)]
        big = asyncio.ensure_future(queue.score("m", [b"x" * 80], 0, PUBLIC))
        await asyncio.sleep(0)
        await asyncio.gather(first, big, *public)
        # the audit comes while public work waits: it goes after the one call running, whatever waits
        running = asyncio.ensure_future(queue.score("m", [b"x" * 20], 0, PUBLIC))
        await asyncio.sleep(0)
        more = [asyncio.ensure_future(queue.score("m", [b"x" * 20], 0, PUBLIC)) for _ in range(2)]
        audit = asyncio.ensure_future(queue.score("a", [b"audit"], 0, IN_CLUSTER))
        await asyncio.gather(running, audit, *more)
        in_cluster = [asyncio.ensure_future(queue.score("a", [b"y" * 40], 0, IN_CLUSTER)) for _ in range(3)]
        await asyncio.gather(*in_cluster)

    asyncio.run(scenario())
    assert order[0] == ("m", [1])
    # at most 50 bytes a public call (one group at least, so 80 bytes alone), oldest first
    assert order[1:5] == [("m", [20, 20]), ("m", [20, 20]), ("m", [20]), ("m", [80])]
    assert order[5] == ("m", [20])  # running when the audit came
    assert order[6] == ("a", [5])
    assert order[7] == ("m", [20, 20])
    assert order[8] == ("a", [40, 40, 40])  # the in-cluster lane merges without a bound
