"""Keys at rest: the wallet, the model key store and validator keys sealed with a passphrase
(Argon2id + XSalsa20-Poly1305, soma_ray/keyfile.py); plaintext files still open; key files that
group or others may read are refused. Tests use libsodium's lowest Argon2id limits (the files
state theirs; the defaults are libsodium's "moderate", ~0.6 s and 256 MiB)."""
import json
import os
import stat
from dataclasses import asdict

import pytest
from typer.testing import CliRunner

from actors.testnet import node_key
from soma_ray import keyfile, wallet
from soma_ray.cli.wallet import app as wallet_app
from soma_ray.config import (
    KEY_FILE, NetworkConfig, ValidatorKeyError, read_validator_key, write_validator_key,
)
from soma_ray.protocol.crypto import Keypair, show_address
from soma_ray.wallet import (
    InsecureWalletFile, KeyStoreError, ModelSecret, PassphraseRequired, Wallet, WalletError,
    WrongPassphrase, load_secret, save_secret,
)

FAST = keyfile.KdfLimits(opslimit=1, memlimit=8192)


@pytest.fixture(autouse=True)
def fast_and_clean(monkeypatch):
    """Cheap Argon2id for every seal here, no passphrase from the environment or an earlier
    test, and no terminal to ask at."""
    monkeypatch.setattr(keyfile, "DEFAULT_LIMITS", FAST)
    monkeypatch.delenv(wallet.PASSWORD_ENV, raising=False)
    monkeypatch.delenv("SOMA_VALIDATOR_PASSWORD", raising=False)
    monkeypatch.setattr(wallet, "ask", lambda prompt: None)
    wallet.forget_passphrase()
    yield
    wallet.forget_passphrase()


@pytest.fixture
def path(tmp_path):
    return tmp_path / "soma" / "wallet.json"


def mode_of(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# ---------------------------------------------------------------------------------- the format


def test_seal_round_trips_and_states_its_limits():
    sealed = keyfile.seal(b"secret bytes", "pass phrase", FAST)
    assert keyfile.is_sealed(sealed) and not keyfile.is_sealed(b"secret bytes")
    document = json.loads(sealed)
    assert (document["kdf"], document["cipher"]) == ("argon2id13", "xsalsa20poly1305")
    assert (document["opslimit"], document["memlimit"]) == (1, 8192)
    assert b"secret bytes" not in sealed
    assert keyfile.unseal(sealed, "pass phrase") == b"secret bytes"
    assert keyfile.seal(b"secret bytes", "pass phrase", FAST) != sealed  # fresh salt and nonce
    assert keyfile.DEFAULT_LIMITS == FAST  # (this module's fixture)
    assert (keyfile.KdfLimits().opslimit, keyfile.KdfLimits().memlimit) == (3, 256 << 20)


def test_a_wrong_passphrase_or_a_changed_file_is_a_typed_error():
    sealed = keyfile.seal(b"secret", "right", FAST)
    with pytest.raises(keyfile.WrongPassphrase):
        keyfile.unseal(sealed, "wrong")
    document = json.loads(sealed)
    document["ciphertext"] = document["ciphertext"][:-4] + ("AAAA" if not document[
        "ciphertext"].endswith("AAAA") else "BBBB")
    with pytest.raises(keyfile.WrongPassphrase):
        keyfile.unseal(json.dumps(document).encode(), "right")
    with pytest.raises(ValueError):
        keyfile.seal(b"secret", "")


def test_a_sealed_file_cannot_ask_for_unbounded_work_or_be_malformed():
    document = json.loads(keyfile.seal(b"secret", "pw", FAST))
    for change, reason in (({"memlimit": 64 << 30}, "limits"), ({"opslimit": 1000}, "limits"),
                           ({"opslimit": True}, "limits"), ({"kdf": "scrypt"}, "kdf"),
                           ({"salt": "zz"}, "hex"), ({"nonce": "00"}, "nonce"),
                           ({"soma_sealed": 2}, "format")):
        with pytest.raises(keyfile.BadSealedFile, match=reason):
            keyfile.unseal(json.dumps({**document, **change}).encode(), "pw")


# ---------------------------------------------------------------------------------- the wallet


def test_an_encrypted_wallet_round_trips_and_never_holds_a_secret_in_the_clear(path):
    w = Wallet.load(path)
    w.encrypt("correct horse")
    assert w.encrypted and keyfile.is_sealed(path.read_bytes()) and mode_of(path) == 0o600
    name, keypair = w.new_key("miner")
    raw = path.read_bytes()
    assert keyfile.is_sealed(raw) and keypair.to_text().encode() not in raw
    assert show_address(keypair.address).encode() not in raw
    wallet.forget_passphrase()
    again = Wallet.load(path, passphrase="correct horse")
    assert again.names() == ["miner"] and again.get().address == keypair.address
    again.new_key("second")  # a change keeps it sealed, with the same passphrase
    assert keyfile.is_sealed(path.read_bytes())
    wallet.forget_passphrase()
    assert Wallet.load(path, "correct horse").names() == ["miner", "second"]


def test_a_wrong_passphrase_is_a_typed_error_and_nothing_is_written(path, monkeypatch):
    w = Wallet.load(path)
    w.encrypt("right")
    w.new_key("a")
    before = path.read_bytes()
    wallet.forget_passphrase()
    with pytest.raises(WrongPassphrase) as wrong:
        Wallet.load(path, "wrong")
    assert isinstance(wrong.value, WalletError) and str(path) in str(wrong.value)
    monkeypatch.setenv(wallet.PASSWORD_ENV, "also wrong")
    with pytest.raises(WrongPassphrase, match=wallet.PASSWORD_ENV):
        Wallet.load(path)
    stale = Wallet(path, {}, None, passphrase="wrong")  # a change with the wrong one
    with pytest.raises(WrongPassphrase):
        stale.new_key("b")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_the_passphrase_comes_from_the_variable_then_this_process_then_a_prompt(path, monkeypatch):
    w = Wallet.load(path)
    w.encrypt("pw")
    w.new_key("a")
    wallet.forget_passphrase()
    with pytest.raises(PassphraseRequired) as required:  # no variable, no terminal
        Wallet.load(path)
    assert wallet.PASSWORD_ENV in str(required.value) and isinstance(required.value, WalletError)
    monkeypatch.setenv(wallet.PASSWORD_ENV, "pw")
    assert Wallet.load(path).names() == ["a"]
    monkeypatch.delenv(wallet.PASSWORD_ENV)
    assert Wallet.load(path).names() == ["a"]  # remembered by this process
    wallet.forget_passphrase()
    asked = []
    monkeypatch.setattr(wallet, "ask", lambda prompt: asked.append(prompt) or "pw")
    assert Wallet.load(path).names() == ["a"] and asked == [f"passphrase for {path}: "]


def test_a_plaintext_wallet_still_opens_and_stays_plaintext(path):
    keypair = Keypair.generate()
    path.parent.mkdir(mode=0o700)
    path.write_text(json.dumps({"version": 1, "active": "old", "keys": [
        {"name": "old", "address": show_address(keypair.address), "secret": keypair.to_text()}]}))
    path.chmod(0o600)
    w = Wallet.load(path)
    assert not w.encrypted and w.get().address == keypair.address
    w.new_key("new")
    assert not keyfile.is_sealed(path.read_bytes())
    w.encrypt("now sealed")
    assert keyfile.is_sealed(path.read_bytes())
    assert Wallet.load(path, "now sealed").names() == ["old", "new"]


def test_an_encrypted_wallet_others_may_read_is_refused(path):
    w = Wallet.load(path)
    w.encrypt("pw")
    w.new_key()
    path.chmod(0o640)
    with pytest.raises(InsecureWalletFile) as refused:
        Wallet.load(path, "pw")
    assert f"chmod 600 {path}" in str(refused.value) and "0640" in str(refused.value)


# ---------------------------------------------------------------------------------- the key store


def secret(model_id=b"\x01" * 32) -> ModelSecret:
    return ModelSecret(model_id, b"\x02" * 32, b"\x00\x00\x80\x3f" * 4, "http://h/blobs/x")


def test_records_are_sealed_with_the_opened_wallets_passphrase(path, tmp_path, monkeypatch):
    home = tmp_path / "home"
    plain = save_secret(secret(b"\x05" * 32), home)  # no sealed wallet opened: as before
    assert not keyfile.is_sealed(plain.read_bytes())
    w = Wallet.load(path)
    w.encrypt("pw")
    record = save_secret(secret(), home)
    raw = record.read_bytes()
    assert keyfile.is_sealed(raw) and (b"\x02" * 32).hex().encode() not in raw
    assert load_secret(b"\x01" * 32, home) == secret()  # this process knows the passphrase
    wallet.forget_passphrase()
    with pytest.raises(PassphraseRequired):
        load_secret(b"\x01" * 32, home)
    with pytest.raises(WrongPassphrase):
        load_secret(b"\x01" * 32, home, passphrase="wrong")
    monkeypatch.setenv(wallet.PASSWORD_ENV, "pw")
    assert load_secret(b"\x01" * 32, home) == secret()
    assert load_secret(b"\x05" * 32, home) == secret(b"\x05" * 32)  # plaintext still opens
    record.chmod(0o644)
    with pytest.raises(KeyStoreError, match=f"chmod 600 {record}"):
        load_secret(b"\x01" * 32, home)


# ---------------------------------------------------------------------------------- validator keys


@pytest.fixture
def network(tmp_path) -> NetworkConfig:
    return NetworkConfig(data_dir=str(tmp_path / "net"), validators=1, keys="files")


def test_a_validator_key_is_sealed_with_the_nodes_variable_and_opens_with_it(network, monkeypatch):
    keypair = Keypair.generate()
    monkeypatch.setenv("SOMA_VALIDATOR_PASSWORD", "node secret")
    write_validator_key(network, 0, keypair)
    key_file = network.validator_dir(0) / KEY_FILE
    assert keyfile.is_sealed(key_file.read_bytes()) and keypair.secret not in key_file.read_bytes()
    assert mode_of(key_file) == 0o600
    assert network.validator_keypair(0).public_key == keypair.public_key
    monkeypatch.delenv("SOMA_VALIDATOR_PASSWORD")
    with pytest.raises(ValidatorKeyError, match="SOMA_VALIDATOR_PASSWORD is not set") as missing:
        network.validator_keypair(0)
    assert str(key_file) in str(missing.value)
    monkeypatch.setenv("SOMA_VALIDATOR_PASSWORD", "wrong")
    with pytest.raises(ValidatorKeyError, match="does not open it"):
        network.validator_keypair(0)
    assert read_validator_key(key_file, passphrase="node secret").public_key == keypair.public_key


def test_a_plaintext_validator_key_still_opens_and_a_loose_one_is_refused(network):
    keypair = Keypair.generate()
    write_validator_key(network, 0, keypair)
    key_file = network.validator_dir(0) / KEY_FILE
    assert key_file.read_bytes() == keypair.secret  # no variable: the 32 raw bytes, as before
    assert network.validator_keypair(0).public_key == keypair.public_key
    key_file.chmod(0o644)
    with pytest.raises(ValidatorKeyError) as loose:
        network.validator_keypair(0)
    message = str(loose.value)
    assert str(key_file) in message and "0644" in message and f"chmod 600 {key_file}" in message
    key_file.chmod(0o600)
    key_file.write_bytes(b"not a key")
    with pytest.raises(ValidatorKeyError, match="neither a 32-byte secret"):
        network.validator_keypair(0)
    key_file.unlink()
    with pytest.raises(ValidatorKeyError, match="missing"):
        network.validator_keypair(0)


def test_the_launchers_node_task_reports_a_refused_key_instead_of_raising(network, monkeypatch):
    """What runs on each validator's node (a Ray task there; a plain call here)."""
    monkeypatch.setenv("SOMA_VALIDATOR_PASSWORD", "node secret")
    public_key, refused = node_key(asdict(network), 0, create=True)
    key_file = network.validator_dir(0) / KEY_FILE
    assert refused is None and keyfile.is_sealed(key_file.read_bytes())
    assert node_key(asdict(network), 0, create=True) == (public_key, None)  # kept, not remade
    key_file.chmod(0o604)
    public_key, refused = node_key(asdict(network), 0, create=False)
    assert public_key is None and f"chmod 600 {key_file}" in refused


# ---------------------------------------------------------------------------------- the CLI


def run(*args, **kwargs):
    return CliRunner().invoke(wallet_app, list(args), **kwargs)


def test_wallet_new_encrypt_with_the_variable_then_every_command_needs_it(path):
    env = {wallet.PASSWORD_ENV: "scripted"}
    made = run("new", "--encrypt", "--name", "bot", "--wallet", str(path), env=env)
    assert made.exit_code == 0, made.output
    name, address = made.stdout.split()
    assert keyfile.is_sealed(path.read_bytes())
    wallet.forget_passphrase()
    listed = run("list", "--wallet", str(path), env=env)
    assert listed.stdout.split() == ["*", "bot", address]
    wallet.forget_passphrase()
    refused = run("list", "--wallet", str(path), env={wallet.PASSWORD_ENV: ""})
    assert refused.exit_code == 1 and wallet.PASSWORD_ENV in refused.stderr
    assert refused.stderr.count("\n") == 1
    wrong = run("new", "--wallet", str(path), env={wallet.PASSWORD_ENV: "nope"})
    assert wrong.exit_code == 1 and "does not open" in wrong.stderr
    assert Wallet.load(path, "scripted").names() == ["bot"]


def test_wallet_new_encrypt_asks_twice_at_a_hidden_prompt(path):
    made = run("new", "--encrypt", "--wallet", str(path), input="typed pw\ntyped pw\n")
    assert made.exit_code == 0, made.output
    assert "typed pw" not in made.output  # hidden input
    wallet.forget_passphrase()
    assert Wallet.load(path, "typed pw").names() == ["key-0"]
    mismatch = run("new", "--encrypt", "--wallet", str(path.with_name("other.json")),
                   input="one\ntwo\nthree\nthree\n")
    assert mismatch.exit_code == 0 and "do not match" in mismatch.output.lower()
    wallet.forget_passphrase()
    assert Wallet.load(path.with_name("other.json"), "three").names() == ["key-0"]


def test_wallet_encrypt_seals_a_plaintext_wallet_and_changes_a_passphrase(path):
    made = run("new", "--name", "a", "--wallet", str(path))
    assert made.exit_code == 0 and not keyfile.is_sealed(path.read_bytes())
    sealed = run("encrypt", "--wallet", str(path), env={wallet.PASSWORD_ENV: "first"})
    assert sealed.exit_code == 0 and "encrypted (1 key)" in sealed.stdout
    assert keyfile.is_sealed(path.read_bytes())
    wallet.forget_passphrase()
    changed = run("encrypt", "--wallet", str(path), env={wallet.PASSWORD_ENV: "first"},
                  input="second\nsecond\n")
    assert changed.exit_code == 0 and "new passphrase set" in changed.stdout, changed.output
    wallet.forget_passphrase()
    with pytest.raises(WrongPassphrase):
        Wallet.load(path, "first")
    assert Wallet.load(path, "second").names() == ["a"]


def test_key_file_errors_survive_pickling(tmp_path):
    """They cross Ray's process boundaries (a validator actor's death cause, a node's task)."""
    import pickle

    for error in (ValidatorKeyError(tmp_path / "v.key", "mode 0644: run chmod 600 it"),
                  keyfile.PrivateFileError(tmp_path / "w", "mode 0644", 0o644),
                  WrongPassphrase(tmp_path / "w", wallet.PASSWORD_ENV),
                  PassphraseRequired(tmp_path / "w", wallet.PASSWORD_ENV),
                  keyfile.BadSealedFile(tmp_path / "w", "not JSON")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
