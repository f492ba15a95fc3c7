"""The public HTTP gateway (serve/gateway.py) on a real localnet: the SDK in a process that
cannot import Ray, and every route of the route table (soma_ray.routes.ROUTES: the gateway's,
the blob store's and the scoring service's) fuzzed with bad input (a 4xx with a typed error,
never a 5xx, never a state change, nothing stored)."""
import os
import subprocess
import sys
import textwrap

import msgspec
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray import serve

from localnet_helpers import run, start_network, statuses, wait_until
from serve.gateway import gateway_app
from soma_ray import wire
from soma_ray.client import SomaClient
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.errors import ExecutionError
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.types import Account, SystemState
from soma_ray.routes import APP_PREFIX
from soma_ray.routes import ROUTES as TABLE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

FUZZ = settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                         HealthCheck.too_slow])
tried = {"inputs": 0}


@pytest.fixture(scope="module")
def gateway(ray_session, serve_url, tmp_path_factory):
    from serve.blobs import blob_app
    from serve.scoring import scoring_app
    from soma_ray.routes import LOCALNET_RATE_LIMITS as limits  # the fuzz should reach the handlers

    network = start_network(tmp_path_factory, "gateway", epoch_duration_ms=3_600_000)
    chain = (network.config.namespace, network.config.prefix)
    blobs = tmp_path_factory.mktemp("gateway-blobs")
    serve.run_many([
        serve.RunTarget(gateway_app(*chain, localnet=True, faucet_per_window=3, limits=limits), name="gateway-test",
                        route_prefix="/"),
        serve.RunTarget(blob_app(str(blobs), 1 << 20, 1 << 20, serve_url, network=chain, limits=limits),
                        name="gateway-test-blobs", route_prefix="/blobs"),
        serve.RunTarget(scoring_app(device="cpu", chain=chain, max_replicas=1, limits=limits),
                        name="gateway-test-scoring", route_prefix="/scoring"),
    ])
    network.fuzz_blobs = blobs
    yield network, serve_url
    for name in ("gateway-test", "gateway-test-blobs", "gateway-test-scoring"):
        serve.delete(name, _blocking=False)  # their replicas' graceful shutdowns overlap the rest
    network.stop()


def roots(network):
    """The state root every validator agrees on (waits while they differ)."""
    found = wait_until(lambda: (lambda s: s if len({x.state_root for x in s}) == 1 and
                                len({x.sequence for x in s}) == 1 else None)(statuses(network)))
    return found[0].state_root


def test_the_sdk_works_from_a_process_that_cannot_import_ray(gateway):
    network, url = gateway
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.modules["ray"] = None  # any import of Ray fails
        from soma_ray import SomaClient, Keypair
        from soma_ray.protocol.genesis import preset_keypair

        async def main():
            client = await SomaClient(rpc_url={url!r})
            alice, bob = preset_keypair("http-alice", 0), preset_keypair("http-bob", 0)
            await client.request_faucet(alice.address, 5 * 10**9)
            effects = await client.transfer(alice, bob.address, 10**9)
            health = await client._transport.health()
            print(await client.get_balance(bob.address), effects.fee_charged, health.validators_up)
            await client.close()

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr[-2000:]
    balance, fee, up = map(int, done.stdout.split())
    assert (balance, up) == (SHANNONS_PER_SOMA, 4) and fee > 0


def test_reads_and_the_json_view(gateway):
    network, url = gateway
    user = preset_keypair("user", 0).address
    account = decode(requests.get(f"{url}/accounts/0x{user.hex()}", timeout=30).content, Account)
    assert account.balance > 0
    as_json = requests.get(f"{url}/accounts/0x{user.hex()}?format=json", timeout=30).json()
    assert as_json == {"balance": account.balance, "nonce": account.nonce}
    system = decode(requests.get(f"{url}/system", timeout=30).content, SystemState)
    info = requests.get(f"{url}/epoch", headers={"Accept": wire.JSON}, timeout=30).json()
    assert info["epoch"] == system.epoch and info["next_epoch_ms"] > info["epoch_start_ms"]
    latest = requests.get(f"{url}/checkpoints/latest?format=json", timeout=30).json()
    assert latest["checkpoint"]["sequence"] >= 0
    assert requests.get(f"{url}/health?format=json", timeout=30).json()["validators_up"] == 4


def test_the_faucet_is_rate_limited_per_address(gateway):
    network, url = gateway
    recipient = preset_keypair("http-faucet", 0).address
    body = encode(wire.FaucetRequest(recipient=recipient, amount=1))
    codes = [requests.post(f"{url}/faucet", data=body, timeout=120).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]

    async def balance():
        client = await SomaClient(rpc_url=url)
        try:
            return await client.get_balance(recipient)
        finally:
            await client.close()

    assert run(balance()) == 3  # the refused request paid nothing out


def assert_refused(response, codes=range(400, 500)):
    """A 4xx whose body is a typed error (msgpack when asked for, else JSON)."""
    tried["inputs"] += 1
    assert response.status_code in codes, (response.status_code, response.content[:300])
    if response.headers.get("content-type", "").startswith(wire.MSGPACK):
        assert decode(response.content, ExecutionError).code
    else:
        assert response.json()["error"]


@pytest.fixture(scope="module")
def fuzzed(gateway):
    """The state root before any fuzzing, and after all of it (checked in the last test)."""
    network, _ = gateway
    return roots(network)


# Every route of the table but the localnet's epoch switch (it answers any request on a localnet,
# by design), and two that are not routes.
FUZZED = [route for route in TABLE.values() if route.name != "advance_epoch"]
NOT_ROUTES = [("GET", "/nothing/{}"), ("DELETE", "/system")]
tried_per_route: dict[str, int] = {}
statuses_seen: dict[int, int] = {}  # over the routes' fuzz: how often each status answered
# Answers that are not refusals, and why they are harmless: reads (any GET answers what exists),
# a POST that only reads (nearest targets, manifests), a batch of bad transactions (each refused).
READS_BY_POST = {"nearest_targets", "model_manifests"}


def _hex32():
    return st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())


def _argument(route, param):
    """Text for one URL argument: anything, or (sometimes) a well-formed value, so that the
    fuzz reaches the handlers too; a long poll's timeout stays short."""
    if param.name == "timeout_s":
        return st.one_of(st.text(max_size=20).filter(lambda t: not _is_number(t)),
                         st.floats(0, 1).map(repr))
    return st.one_of(st.text(max_size=80), _hex32(), st.integers(0, 2**64).map(str),
                     st.sampled_from(["latest", "open", "data", "weights", "0x01"]))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _answered_harmlessly(route, response, msgpack: bool) -> bool:
    if response.status_code >= 300:
        return False
    if route.method == "GET" or route.name in READS_BY_POST:
        return True
    if route.name == "submit_batch":  # a well-formed batch of bad transactions: each refused on its own
        replies = msgspec.msgpack.decode(response.content) if msgpack else response.json()
        return all(r[2] if msgpack else r["error"] for r in replies)
    return False


@pytest.mark.parametrize("route", FUZZED, ids=[route.name for route in FUZZED])
def test_every_route_fuzzed_gets_a_typed_4xx_and_changes_nothing(gateway, fuzzed, route):
    network, url = gateway
    params = {p.name: p for p in route.params}

    @FUZZ
    @given(data=st.data(), body=st.binary(max_size=2_000), msgpack=st.booleans())
    def one(data, body, msgpack):
        texts = {name: data.draw(_argument(route, param), label=name) for name, param in params.items()
                 if param.in_path or param.required or data.draw(st.booleans(), label=f"send {name}")}
        path = APP_PREFIX[route.app] + "/" + "/".join(
            requests.utils.quote(texts[s[1:-1]], safe="") if s.startswith("{") else s for s in route.segments)
        query = {name: text for name, text in texts.items() if not params[name].in_path and params[name].header is None}
        headers = {"Accept": wire.MSGPACK if msgpack else wire.JSON}
        headers |= {params[n].header: "".join(c for c in t if " " < c < "\x7f") or "-"
                    for n, t in texts.items() if params[n].header is not None}
        if data.draw(st.booleans(), label="json body"):
            headers["Content-Type"] = wire.JSON
        response = requests.request(route.method, url + path, params=query, headers=headers, timeout=60,
                                    data=body if route.body is not None else None)
        tried_per_route[route.name] = tried_per_route.get(route.name, 0) + 1
        statuses_seen[response.status_code] = statuses_seen.get(response.status_code, 0) + 1
        if _answered_harmlessly(route, response, msgpack):
            tried["inputs"] += 1
            return
        assert_refused(response)

    one()


@pytest.mark.parametrize("method,path", NOT_ROUTES)
def test_what_is_not_a_route_gets_a_typed_4xx(gateway, fuzzed, method, path):
    network, url = gateway

    @FUZZ
    @given(body=st.binary(max_size=2_000), part=st.text(max_size=80), msgpack=st.booleans())
    def one(body, part, msgpack):
        headers = {"Accept": wire.MSGPACK if msgpack else wire.JSON}
        target = url + path.format(requests.utils.quote(part, safe=""))
        assert_refused(requests.request(method, target, data=body, headers=headers, timeout=60))

    one()


def test_an_oversized_body_is_refused_while_it_streams(gateway):
    network, url = gateway

    def endless():
        for _ in range(64):
            yield b"\0" * 65_536  # 4 MiB in all, sent without a Content-Length

    assert_refused(requests.post(f"{url}/tx", data=endless(), timeout=60), codes=[413])


def test_after_all_the_fuzzing_the_state_is_unchanged(gateway, fuzzed):
    network, _ = gateway
    assert roots(network) == fuzzed
    assert [p.name for p in network.fuzz_blobs.iterdir() if not p.name.startswith(".")] == []  # nothing stored
    print(f"fuzzed inputs tried: {tried['inputs']} over {len(FUZZED) + len(NOT_ROUTES)} routes; "
          f"per route: {dict(sorted(tried_per_route.items()))}; statuses: {dict(sorted(statuses_seen.items()))}")
    assert tried["inputs"] >= 60 * (len(FUZZED) + len(NOT_ROUTES))
