"""`soma model …` as a model owner runs it: the real `soma` executable in a subprocess, reaching a
4-validator localnet's gateway over HTTP (SOMA_RPC_URL), with its own SOMA_HOME and wallet. A real
small V1 weights file is published (encrypted, uploaded, created, committed), revealed with
`--wait` while the epoch is advanced, listed, shown, downloaded, staked on and deactivated; bad
input is one `error:` line, exit code 1, and changes nothing on chain."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from localnet_helpers import run
from soma_ray.wallet import load_secret
from soma_ray.client import SomaClient
from soma_ray.model import V1Config, seeded_model, weights_bytes
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.state import MODEL, STAKING_POOL
from soma_ray.protocol.types import Model, StakingPool
from soma_ray.wallet import Wallet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
SOMA = 10**9
SOMA_EXE = str(Path(sys.executable).with_name("soma"))


@pytest.fixture(scope="module")
def gateway_url(participants_network):
    """One validator with its services (shared: tests/e2e/conftest.py); its gateway's URL."""
    return participants_network.config.public_url


class Owner:
    """A model owner's machine: a wallet with a funded key, a SOMA_HOME, the `soma` command."""

    def __init__(self, url: str, root: Path):
        self.url, self.home = url, root / "soma-home"
        wallet = root / "wallet.json"
        _, self.key = Wallet.load(wallet).new_key("owner", set_default=True)
        self.env = {**os.environ, "SOMA_RPC_URL": url, "SOMA_HOME": str(self.home),
                    "SOMA_WALLET": str(wallet)}
        self.weights = root / "w.safetensors"
        self.weights.write_bytes(weights_bytes(seeded_model(V1Config.small(), 21)))

    def soma(self, *args, expect: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run([SOMA_EXE, "model", *args], env=self.env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == expect, (args, done.stdout, done.stderr)
        return done

    def start(self, *args) -> subprocess.Popen:
        return subprocess.Popen([SOMA_EXE, "model", *args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def chain(self, scenario):
        """`await scenario(client)` with a client of the gateway, as the test reads the chain."""
        async def main():
            client = await SomaClient(rpc_url=self.url)
            try:
                return await scenario(client)
            finally:
                await client.close()
        return run(main())

    def account(self):
        async def read(client):
            return await client.get_account(self.key.address), len(await client.get_object_ids(MODEL))
        return self.chain(read)

    def model(self, model_id: bytes) -> tuple[Model, StakingPool]:
        async def read(client):
            model = await client.get_object(MODEL, model_id, Model)
            return model, await client.get_object(STAKING_POOL, model.staking_pool_id, StakingPool)
        return self.chain(read)


@pytest.fixture(scope="module")
def owner(gateway_url, tmp_path_factory):
    owner = Owner(gateway_url, tmp_path_factory.mktemp("model-owner"))

    async def fund(client):
        await client.request_faucet(owner.key.address, 100 * SOMA)
    owner.chain(fund)
    return owner


@pytest.fixture(scope="module")
def published(owner):
    """The model `soma model publish` made: its id."""
    done = owner.soma("publish", str(owner.weights), "--commission", "12.5%", "--stake", "2")
    first, rest = done.stdout.split("\n", 1)
    assert "reveal in epoch" in rest and "--wait" in rest
    return bytes.fromhex(first.removeprefix("0x"))


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    return done.stderr


def test_publish_keeps_the_key_privately_and_reveal_waits_for_the_next_epoch(owner, published):
    model, pool = owner.model(published)
    assert (model.status, model.owner, model.commission_bps, pool.soma_balance) == (
        "Pending", owner.key.address, 1_250, 2 * SOMA)
    record = owner.home / "models" / f"{show_address(published)}.json"
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    before = owner.account()
    early = owner.soma("reveal", show_address(published), expect=1)  # the reveal is due next epoch
    assert f"committed in {model.commit_epoch}, now {model.commit_epoch}" in one_error_line(early)
    assert owner.account() == before  # refused before anything was sent: no fee

    waiting = owner.start("reveal", show_address(published), "--wait")
    assert waiting.stderr.readline().startswith(f"waiting for epoch {model.commit_epoch + 1}")

    async def advance(client):
        return await client.advance_epoch()
    assert owner.chain(advance) == model.commit_epoch + 1
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert out.startswith(f"revealed model {show_address(published)} in epoch {model.commit_epoch + 1}")
    revealed, _ = owner.model(published)
    secret = load_secret(published, owner.home)
    assert (revealed.status, revealed.embedding, revealed.decryption_key) == (
        "Active", secret.embedding, secret.decryption_key)
    vector = np.frombuffer(revealed.embedding, "<f4")  # the model's own mean embedding, unit length
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_list_info_and_download_show_the_revealed_model(owner, published, tmp_path):
    listing = owner.soma("list").stdout
    [row] = [line for line in listing.splitlines() if show_address(published) in line]
    assert show_address(owner.key.address) in row and "2 SOMA" in row and "12.5%" in row
    info = owner.soma("info", show_address(published)).stdout
    model, _ = owner.model(published)
    assert "Active" in info and model.weights_manifest.url in info and "12.5%" in info
    out = tmp_path / "downloaded.safetensors"
    owner.soma("download", show_address(published), "--out", str(out))
    assert out.read_bytes() == owner.weights.read_bytes()  # downloaded, checked, decrypted


def test_stake_then_deactivate(owner, published):
    _, pool = owner.model(published)
    owner.soma("stake", show_address(published), "1.5")
    _, staked = owner.model(published)
    assert staked.pending_stake - pool.pending_stake == 1_500_000_000
    owner.soma("deactivate", show_address(published))
    model, _ = owner.model(published)
    assert model.status == "Inactive"
    # Another process deactivated it: `list` reads from the chain's latest checkpoint, no waiting.
    assert show_address(published) not in owner.soma("list").stdout


def test_bad_input_is_one_error_line_and_changes_nothing_on_chain(owner, tmp_path):
    before = owner.account()
    unknown = show_address(b"\x5a" * 32)
    for args, message in [
        (("info", unknown), f"no model with id {unknown}"),
        (("stake", unknown, "1"), f"no model with id {unknown}"),
        (("reveal", unknown), f"no model with id {unknown}"),
        (("deactivate", "0xnothex"), "model id '0xnothex': expected 0x followed by 64 hex digits"),
        (("publish", str(tmp_path / "missing.safetensors")), "missing.safetensors: No such file"),
    ]:
        assert message in one_error_line(owner.soma(*args, expect=1)), args
    assert owner.account() == before  # same balance, same nonce, no model created
