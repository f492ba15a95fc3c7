"""Issue 18 through the gateway on a localnet: the chain cannot be used for free. An unpaid
transaction, a self-sent Faucet, a transfer replayed from another localnet and a malformed model
manifest, each posted to /tx: a typed 4xx, and nothing changes (state root, balances)."""
import msgspec
import pytest
import requests
from ray import serve

from localnet_helpers import FEE, run, start_network, statuses, wait_until
from serve.gateway import gateway_app
from soma_ray import wire
from soma_ray.client import SomaClient
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.errors import ExecutionError
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.genesis import genesis_chain_id
from soma_ray.protocol.models import model_commitment
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.types import (
    CommitModel, CreateModel, Faucet, SystemState, Transaction, Transfer, WeightsManifest,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SOMA = SHANNONS_PER_SOMA


@pytest.fixture(scope="module")
def economy(ray_session, serve_url, tmp_path_factory):
    """One validator (consensus is not the point) behind its own gateway."""
    network = start_network(tmp_path_factory, "economics", validators=1)
    route = network.config.route_prefix("gateway")
    serve.run(gateway_app(network.config.namespace, network.config.prefix, localnet=True),
              name=network.config.app_name("gateway"), route_prefix=route)
    try:
        yield network, serve_url + route
    finally:
        serve.delete(network.config.app_name("gateway"), _blocking=False)
        network.stop()


@pytest.fixture(scope="module")
def alice(economy):
    """A funded account with a Created model, and the chain id."""
    network, url = economy
    key = Keypair.from_secret(b"\xa1" * 32)

    async def setup():
        client = await SomaClient(rpc_url=url)
        try:
            await client.request_faucet(key.address, 100 * SOMA)
            effects = await client.execute(key, CreateModel(stake=SOMA, commission_bps=0, architecture_version=1))
            return effects.created[0], await client.chain_id()
        finally:
            await client.close()

    model_id, chain_id = run(setup())
    return key, model_id, chain_id


def settled_root(network) -> str:
    """The state root once the validator has cut another checkpoint (an idle one changes nothing)."""
    first = statuses(network)[0].sequence
    return wait_until(lambda: (lambda s: s.state_root if s.sequence > first else None)(statuses(network)[0]))


def post(url: str, data: bytes) -> tuple[int, ExecutionError]:
    response = requests.post(f"{url}/tx", data=data, headers={"Accept": wire.MSGPACK}, timeout=60)
    return response.status_code, decode(response.content, ExecutionError)


def account(url: str, address: bytes) -> tuple[int, int]:
    raw = requests.get(f"{url}/accounts/0x{address.hex()}?format=json", timeout=30).json()
    return raw["balance"], raw["nonce"]


def signed(key, kind, nonce: int, chain_id: bytes, max_fee: int = FEE) -> bytes:
    return encode(sign_transaction(key, Transaction(key.address, nonce, kind, max_fee), chain_id))


def test_unpaid_faucet_replay_and_malformed_manifest_get_typed_4xx_and_change_nothing(economy, alice):
    network, url = economy
    key, model_id, chain_id = alice
    broke = Keypair.from_secret(b"\xa2" * 32)
    before_root = settled_root(network)
    before = account(url, key.address)
    system = decode(requests.get(f"{url}/system", timeout=30).content, SystemState)
    assert system.chain_id == chain_id and key.address not in system.faucet_authorities
    nonce = before[1]

    # The unpaid transaction: a key with nothing, max_fee 0 or the base fee.
    status, error = post(url, signed(broke, Transfer(key.address, 1), 0, chain_id, max_fee=0))
    assert (status, error.code) == (400, "FeeBelowBaseFee")
    status, error = post(url, signed(broke, Transfer(key.address, 1), 0, chain_id))
    assert (status, error.code) == (400, "InsufficientBalanceForFees")
    # The self-sent Faucet, straight to /tx.
    status, error = post(url, signed(key, Faucet(key.address, 1_000 * SOMA), nonce, chain_id))
    assert (status, error.code) == (403, "NotFaucetAuthority")
    # A transfer signed for another localnet: the same preset-style keys, another genesis time.
    other = msgspec.structs.replace(network.config.genesis_config(),
                                    timestamp_ms=network.config.genesis_timestamp_ms + 1)
    status, error = post(url, signed(key, Transfer(broke.address, SOMA), nonce, genesis_chain_id(other)))
    assert (status, error.code) == (400, "InvalidSignature")
    # A malformed manifest: size -1, a 31-byte checksum, a URL of any length.
    commitments = (b"w" * 32, model_commitment(b"e"), model_commitment(b"k" * 32))
    for manifest, code in [(WeightsManifest("https://blobs.example/w", b"c" * 32, -1), "ValueOutOfRange"),
                           (WeightsManifest("https://blobs.example/w", b"c" * 31, 1_000), "FieldLengthMismatch"),
                           (WeightsManifest("https://b/" + "w" * 4_000, b"c" * 32, 1_000), "FieldTooLong")]:
        status, error = post(url, signed(key, CommitModel(model_id, manifest, *commitments), nonce, chain_id))
        assert (status, error.code) == (400, code)

    assert account(url, key.address) == before
    assert account(url, broke.address) == (0, 0)
    assert settled_root(network) == before_root
    # The account still works: its next transaction takes the nonce none of those used.
    status = requests.post(f"{url}/tx", data=signed(key, Transfer(broke.address, SOMA), nonce, chain_id),
                           timeout=60).status_code
    assert status == 200 and account(url, broke.address) == (SOMA, 0)
