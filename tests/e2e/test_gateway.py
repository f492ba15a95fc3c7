"""The public HTTP gateway (serve/gateway.py) on a real localnet: the SDK in a process that
cannot import Ray, and every route fuzzed with bad input (a 4xx with a typed error, never a
5xx, never a state change)."""
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

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

FUZZ = settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                         HealthCheck.too_slow])
tried = {"inputs": 0}


@pytest.fixture(scope="module")
def gateway(ray_session, serve_url, tmp_path_factory):
    network = start_network(tmp_path_factory, "gateway", epoch_duration_ms=3_600_000)
    serve.run(gateway_app(network.config.namespace, network.config.prefix, localnet=True,
                          faucet_per_window=3),
              name="gateway-test", route_prefix="/")
    yield network, serve_url
    serve.delete("gateway-test")
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


ROUTES = [("POST", "/tx"), ("POST", "/tx/batch"), ("POST", "/faucet"), ("GET", "/accounts/{}"),
          ("GET", "/objects/{}"), ("GET", "/ids/{}"), ("GET", "/checkpoints/{}"),
          ("GET", "/epoch/wait?epoch={}&timeout_s=1"), ("GET", "/nothing/{}"), ("DELETE", "/system")]


@pytest.fixture(scope="module")
def fuzzed(gateway):
    """The state root before any fuzzing, and after all of it (checked in the last test)."""
    network, _ = gateway
    return roots(network)


@pytest.mark.parametrize("method,path", ROUTES)
def test_fuzzed_requests_get_a_typed_4xx_and_change_nothing(gateway, fuzzed, method, path):
    network, url = gateway

    @FUZZ
    @given(body=st.binary(max_size=2_000), part=st.text(max_size=80), msgpack=st.booleans())
    def one(body, part, msgpack):
        headers = {"Accept": wire.MSGPACK if msgpack else wire.JSON}
        target = url + path.format(requests.utils.quote(part, safe=""))
        response = requests.request(method, target, data=body if method == "POST" else None,
                                    headers=headers, timeout=60)
        if method == "POST" and path == "/tx/batch" and response.status_code == 200:
            # A well-formed batch of bad transactions: each is refused on its own.
            replies = msgspec.msgpack.decode(response.content) if msgpack else response.json()
            tried["inputs"] += 1
            assert all(r[2] if msgpack else r["error"] for r in replies)
            return
        if method == "GET" and path.startswith(("/accounts", "/objects", "/checkpoints", "/ids",
                                                "/epoch")) and response.status_code == 200:
            tried["inputs"] += 1  # text that happens to name a real thing: a read, harmless
            return
        assert_refused(response)

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
    print(f"fuzzed inputs tried: {tried['inputs']}")
    assert tried["inputs"] >= 60 * len(ROUTES)
