"""soma_sdk: the reference SDK's names and units over soma-ray's client (in process, over the
simulated chain: SimTransport), the callable Address, the chains file and the client's close."""
import asyncio
import gc
import pickle
import subprocess
import sys
from decimal import Decimal

import numpy as np
import pytest

from soma_ray import chains
from soma_ray.client import SomaClient as LibraryClient
from soma_ray.participant import as_embedding_bytes
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Address, Keypair
from soma_ray.protocol.encoding import digest, encode, DOMAIN_TX
from soma_ray.protocol.execution import transaction_digest
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.types import Transaction, Transfer
from soma_ray.strategies.simulated import SimTransport, simulated_genesis
from soma_sdk import SomaClient, reference_error, to_shannons, to_soma

KEY = Keypair.from_secret(b"\x07" * 32)


# ----------------------------------------------------------------------------- Address


def test_address_is_the_bytes_and_called_is_its_hex():
    address = KEY.address
    plain = bytes(address)
    assert isinstance(address, Address) and isinstance(address, bytes)
    assert address == plain and hash(address) == hash(plain) and {plain: 1}[address] == 1
    assert address() == "0x" + plain.hex() and address.hex() == plain.hex()
    copy = pickle.loads(pickle.dumps(address))
    assert type(copy) is Address and copy == plain and copy() == address()


def test_an_address_encodes_and_digests_exactly_as_its_bytes():
    plain = bytes(KEY.address)
    as_address = Transaction(KEY.address, 3, Transfer(KEY.address, 5), 1000)
    as_bytes = Transaction(plain, 3, Transfer(plain, 5), 1000)
    assert encode(as_address) == encode(as_bytes)
    assert transaction_digest(as_address) == transaction_digest(as_bytes)
    assert digest(DOMAIN_TX, as_address) == digest(DOMAIN_TX, as_bytes)
    with pytest.raises(TypeError):
        encode(object())  # the hook turns bytes subclasses only


def test_keypair_round_trips_its_secret_in_every_form():
    for text in (KEY.to_secret_key(), KEY.to_secret_key().removeprefix("0x"), KEY.to_text()):
        assert Keypair.from_secret_key(text).address() == KEY.address()


# ----------------------------------------------------------------------------- embeddings


def test_any_float_sequence_is_an_embedding_in_float32():
    values = [0.1, -2.5, 3.0, 1e-3]
    expected = np.asarray(values, dtype="<f4").tobytes()
    for given in (values, tuple(values), np.asarray(values), np.asarray(values, dtype=np.float32),
                  np.asarray(values, dtype=np.float16).astype(np.float64), expected):
        got = as_embedding_bytes(given)
        assert np.allclose(np.frombuffer(got, "<f4"), values, atol=1e-3) and len(got) == 16
    assert as_embedding_bytes(values) == expected
    torch = pytest.importorskip("torch")
    assert as_embedding_bytes(torch.tensor(values, dtype=torch.float64)) == expected
    with pytest.raises(errors.NonFiniteEmbedding):
        as_embedding_bytes([1.0, 1e300])  # beyond float32: inf, refused as the protocol refuses it
    with pytest.raises(errors.MalformedInput):
        as_embedding_bytes(["a", "b"])


# ----------------------------------------------------------------------------- units


def test_soma_converts_exactly_to_shannons_and_back():
    assert to_shannons(2) == 2 * SHANNONS_PER_SOMA and to_shannons("0.000000001") == 1
    assert to_shannons(0.1) == 100_000_000  # a float by its shortest repr, not its binary value
    assert to_soma(1) == Decimal("1E-9") and to_soma(1_500_000_000) == Decimal("1.5")
    with pytest.raises(ValueError):
        to_shannons("0.0000000001")


def test_errors_are_typed_runtime_errors_named_in_their_text():
    error = reference_error(errors.TargetNotOpen(status="Filled"))
    assert isinstance(error, errors.TargetNotOpen) and isinstance(error, RuntimeError)
    assert str(error).startswith("TargetNotOpen:") and error.status == "Filled"


# ----------------------------------------------------------------------------- chains


def test_chains_file_names_networks(tmp_path, monkeypatch):
    monkeypatch.setenv("SOMA_HOME", str(tmp_path))
    assert chains.endpoints() == (chains.LOCALNET_URL, None)
    with pytest.raises(ValueError, match="known are localnet"):
        LibraryClient(chain="testnet")
    chains.add_chain("testnet", "https://gw.example:8000/", scoring_url="http://127.0.0.1:8001")
    client = SomaClient(chain="testnet")
    assert (client.rpc_url, client.scoring_url) == ("https://gw.example:8000", "http://127.0.0.1:8001")
    assert SomaClient(chain="testnet", scoring_url="http://127.0.0.1:9").scoring_url == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="not both"):
        SomaClient("http://127.0.0.1:8000", chain="testnet")
    with pytest.raises(ValueError, match="built in"):
        chains.add_chain("localnet", "http://x:1")
    assert set(chains.known_chains()) == {"localnet", "testnet"}
    chains.remove_chain("testnet")
    with pytest.raises(ValueError, match="unknown chain 'testnet'"):
        SomaClient(chain="testnet")
    (tmp_path / "chains.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a chains file"):
        chains.known_chains()
    (tmp_path / "chains.json").write_bytes(b" " * (chains.MAX_CHAINS_FILE_BYTES + 1))
    with pytest.raises(chains.ChainError, match=f"is over {chains.MAX_CHAINS_FILE_BYTES} bytes"):
        chains.known_chains()  # read no further than the bound


# ----------------------------------------------------------------------------- the facade


@pytest.fixture(scope="module")
def sim():
    return simulated_genesis(4)


def sdk_client(sim) -> SomaClient:
    config, blobs = sim
    return SomaClient(transport=SimTransport(config, blobs))


def test_the_reference_calls_take_and_answer_soma(sim):
    async def main():
        async with sdk_client(sim) as client:
            receipt = await client.request_faucet(KEY.address())  # the reference's 2 SOMA
            assert receipt.status == "Success" and receipt["coins_sent"] == Decimal(2)
            await client.request_faucet(KEY.address, amount="900.5")
            balance = await client.get_balance(KEY.address())
            assert balance == Decimal("902.5") and isinstance(balance, Decimal)
            library = await LibraryClient.get_balance(client, KEY.address)
            assert library == 902_500_000_000  # the library's unit, unchanged
            other = Keypair.from_secret(b"\x08" * 32)
            await client.transfer_coin(KEY, other.address(), "0.25")
            await client.pay_coins(KEY, [other.address(), other.address()], [1, Decimal("0.75")])
            assert await client.get_balance(other.address()) == Decimal(2)
            fee = (await client.get_system_state()).parameters.base_fee
            assert await client.get_balance(KEY.address()) == Decimal("900.5") - 3 * to_soma(fee)

            targets = await client.get_targets(status="open")
            assert targets and all(t.id.startswith("0x") and t.status == "open" for t in targets)
            assert isinstance(targets[0].embedding, list) and isinstance(targets[0].model_ids[0], str)
            assert [t.id for t in await client.get_targets(status="open", limit=1)] == [targets[0].id]
            page = await client.list_targets(status="open", limit=1)
            assert page["targets"][0].id == targets[0].id
            assert (await client.get_target(targets[0].id)).reward_pool == targets[0].reward_pool
            manifests = await client.get_model_manifests(targets[0])
            assert [m.model_id for m in manifests] == targets[0].model_ids
            models = await client.get_active_models()
            assert all(m.model_id.startswith("0x") and m.commission_rate == 1000 for m in models)

            epoch = await client.get_epoch()
            assert epoch.epoch == 0 and await client.get_next_epoch_timestamp() == epoch.next_epoch_timestamp_ms
            assert (await client.get_following_epoch_timestamp()
                    == epoch.next_epoch_timestamp_ms + epoch.epoch_duration_ms)
            assert await client.scoring_health() is True
            assert await client.get_embedding_dim() == len(targets[0].embedding)

            min_stake = await client.get_model_min_stake()
            model_id = await client.create_model(KEY, commission_rate=1000, stake_amount=None)  # all available
            assert model_id.startswith("0x")
            left = await LibraryClient.get_balance(client, KEY.address)
            assert left == 2 * fee  # all staked but the fees of the commit and reveal to come
            with pytest.raises(RuntimeError, match="InsufficientBalance"):
                await client.create_model(KEY, commission_rate=1000, stake_amount=None)
            assert min_stake > 0
    asyncio.run(main())


def test_scoring_health_is_false_when_the_service_cannot_be_reached():
    async def main():
        async with SomaClient("http://127.0.0.1:9", scoring_url="http://127.0.0.1:9") as client:
            assert await client.scoring_health() is False
    asyncio.run(main())


def test_a_script_that_never_closes_its_client_prints_no_warning():
    script = (
        "import asyncio\n"
        "from soma_sdk import SomaClient\n"
        "async def main():\n"
        "    client = await SomaClient('http://127.0.0.1:9')\n"
        "    assert await client.scoring_health() is False\n"
        "    kept.append(client)\n"
        "kept = []\n"
        "asyncio.run(main())\n"
        "async def dropped():\n"
        "    client = await SomaClient('http://127.0.0.1:9')\n"
        "    await client.scoring_health()\n"
        "asyncio.run(dropped())\n"
    )
    done = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Unclosed" not in done.stderr, done.stderr
