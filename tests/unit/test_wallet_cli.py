"""`soma wallet …` as a user runs it: output on stdout, errors on stderr with exit code 1."""

import os
import stat

import pytest
from typer.testing import CliRunner

from soma_ray.cli.wallet import app
from soma_ray.protocol.crypto import Keypair, show_address
from soma_ray.wallet import Wallet


@pytest.fixture
def wallet(tmp_path):
    return str(tmp_path / "wallet.json")


def run(*args, **kwargs):
    return CliRunner().invoke(app, list(args), **kwargs)


def test_new_list_address_round_trip(wallet):
    first = run("new", "--wallet", wallet)
    assert first.exit_code == 0
    name, addr = first.stdout.split()
    assert name == "key-0" and addr.startswith("0x") and len(addr) == 66
    second = run("new", "--name", "miner", "--wallet", wallet)
    miner_addr = second.stdout.split()[1]
    listing = run("list", "--wallet", wallet).stdout.splitlines()
    assert listing == [f"  key-0 {addr}", f"* miner {miner_addr}"]  # a new key becomes the active one
    assert run("address", "--wallet", wallet).stdout.strip() == miner_addr
    assert run("address", "key-0", "--wallet", wallet).stdout.strip() == addr
    run("new", "--alias", "spare", "--keep-default", "--wallet", wallet)
    assert run("address", "--wallet", wallet).stdout.strip() == miner_addr
    assert run("switch", "key-0", "--wallet", wallet).exit_code == 0
    assert run("address", "--wallet", wallet).stdout.strip() == addr
    assert stat.S_IMODE(os.stat(wallet).st_mode) == 0o600


def test_env_var_selects_the_wallet(wallet):
    run("new", "--name", "a", env={"SOMA_WALLET": wallet})
    assert Wallet.load(wallet).names() == ["a"]
    assert run("list", env={"SOMA_WALLET": wallet}).stdout.split()[1] == "a"


def test_export_prints_secret_on_stdout_and_warning_on_stderr(wallet):
    run("new", "--name", "a", "--wallet", wallet)
    result = run("export", "a", "--wallet", wallet)
    assert result.exit_code == 0
    assert "secret" in result.stderr and "somasecret1" not in result.stderr
    secret_text = result.stdout.strip()
    assert Keypair.from_text(secret_text).address == Wallet.load(wallet).get("a").address
    bare = run("export", "--wallet", wallet)  # the guide's form: the active key
    assert bare.exit_code == 0 and bare.stdout.strip() == secret_text
    assert Keypair.from_secret_key(secret_text).address() == show_address(Wallet.load(wallet).get("a").address)


def test_import_from_argument_and_from_hidden_prompt(wallet):
    k1, k2 = Keypair.generate(), Keypair.generate()
    result = run("import", "one", k1.to_text(), "--wallet", wallet)
    assert result.exit_code == 0 and result.stdout.split() == ["one", show_address(k1.address)]
    prompted = run("import", "two", "--set-default", "--wallet", wallet, input=k2.to_text() + "\n")
    assert prompted.exit_code == 0
    assert k2.to_text() not in prompted.stdout  # hidden input is not echoed
    assert run("address", "--wallet", wallet).stdout.strip() == show_address(k2.address)


def test_set_default_command(wallet):
    run("new", "--name", "a", "--wallet", wallet)
    run("new", "--name", "b", "--wallet", wallet)
    assert run("set-default", "b", "--wallet", wallet).exit_code == 0
    assert run("list", "--wallet", wallet).stdout.splitlines()[1].startswith("* b ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["address"], "has no keys"),
        (["address", "ghost"], "no key named 'ghost'"),
        (["export", "ghost"], "no key named 'ghost'"),
        (["import", "x", "somasecret1zz"], "bad secret key text"),
        (["new", "--name", "a"], "already has a key named 'a'"),
        (["set-default", "ghost"], "no key named 'ghost'"),
    ],
)
def test_errors_exit_1_with_message_and_leave_file_alone(wallet, args, message):
    if args[0] != "address" or len(args) > 1:
        run("new", "--name", "a", "--wallet", wallet)
    before = open(wallet, "rb").read() if os.path.exists(wallet) else None
    result = run(*args, "--wallet", wallet)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stdout == ""
    after = open(wallet, "rb").read() if os.path.exists(wallet) else None
    assert after == before


def test_world_readable_wallet_is_refused(wallet):
    run("new", "--wallet", wallet)
    os.chmod(wallet, 0o640)
    result = run("list", "--wallet", wallet)
    assert result.exit_code == 1 and "chmod 600" in result.stderr
