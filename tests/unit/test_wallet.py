"""The wallet keeps named keys private and intact: every refused change leaves the file as it was."""

import json
import os
import stat
import subprocess
import sys

import pytest

from soma_ray.protocol.crypto import Keypair
from soma_ray.wallet import (
    BadSecretText,
    CorruptWallet,
    DuplicateKey,
    DuplicateKeyName,
    EmptyWallet,
    InsecureWalletFile,
    InvalidKeyName,
    UnknownKeyName,
    Wallet,
    wallet_path,
)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "soma" / "wallet.json"


def mode_of(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def temp_files(path) -> list[str]:
    return [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_wallet_path_prefers_flag_then_env_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SOMA_WALLET", raising=False)
    assert wallet_path() == tmp_path / ".soma" / "wallet.json"
    monkeypatch.setenv("SOMA_WALLET", str(tmp_path / "env.json"))
    assert wallet_path() == tmp_path / "env.json"
    assert wallet_path(tmp_path / "flag.json") == tmp_path / "flag.json"


def test_new_keys_are_private_and_survive_reload(path):
    old_umask = os.umask(0)  # even a permissive umask must not widen the key file
    try:
        w = Wallet.load(path)
        first, kp1 = w.new_key()
        second, kp2 = w.new_key("miner")
    finally:
        os.umask(old_umask)
    assert mode_of(path) == 0o600 and mode_of(path.parent) == 0o700
    assert (first, second) == ("key-0", "miner")
    again = Wallet.load(path)
    assert again.names() == ["key-0", "miner"]
    assert again.active == "key-0"  # the first key is the default
    assert again.get().address == kp1.address
    assert again.get("miner").secret == kp2.secret
    assert temp_files(path) == []


def test_set_default_moves_the_active_key(path):
    w = Wallet.load(path)
    w.new_key("a")
    w.new_key("b", set_default=True)
    assert Wallet.load(path).active == "b"
    w.set_default("a")
    assert Wallet.load(path).get().address == w.get("a").address
    with pytest.raises(UnknownKeyName):
        w.set_default("zzz")
    assert Wallet.load(path).active == "a"


def test_imported_secret_gives_back_the_same_key(path):
    original = Keypair.generate()
    Wallet.load(path).import_key("cold", "  " + original.to_text() + "\n")
    stored = Wallet.load(path).get("cold")
    assert stored.address == original.address and stored.secret == original.secret


def test_missing_wallet_reads_as_empty_and_has_no_default(path):
    w = Wallet.load(path)
    assert w.names() == [] and not path.exists()
    with pytest.raises(EmptyWallet) as err:
        w.get()
    assert err.value.path == path


@pytest.mark.parametrize(
    "text", ["", "nonsense", "somasecret1zz", "somasecret1" + "ab" * 31, "somasecret1" + "ab" * 33]
)
def test_bad_secret_text_is_refused_and_file_unchanged(path, text):
    w = Wallet.load(path)
    w.new_key("a")
    before = path.read_bytes()
    with pytest.raises(BadSecretText) as err:
        w.import_key("b", text)
    assert err.value.reason
    assert path.read_bytes() == before and w.names() == ["a"]


def test_duplicate_name_and_duplicate_key_are_refused(path):
    w = Wallet.load(path)
    _, kp = w.new_key("a")
    before = path.read_bytes()
    with pytest.raises(DuplicateKeyName) as err:
        w.new_key("a")
    assert err.value.name == "a"
    with pytest.raises(DuplicateKey) as err:
        w.import_key("copy", kp.to_text())
    assert (err.value.name, err.value.existing_name) == ("copy", "a")
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["", "two words", "tab\there", "x" * 65])
def test_invalid_names_are_refused(path, name):
    with pytest.raises(InvalidKeyName):
        Wallet.load(path).new_key(name)
    assert not path.exists()


def test_unknown_name_lists_the_known_ones(path):
    w = Wallet.load(path)
    w.new_key("a")
    w.new_key("b")
    with pytest.raises(UnknownKeyName) as err:
        w.get("c")
    assert (err.value.name, err.value.known) == ("c", ["a", "b"])


def test_key_file_readable_by_others_is_refused(path):
    Wallet.load(path).new_key("a")
    os.chmod(path, 0o644)
    with pytest.raises(InsecureWalletFile) as err:
        Wallet.load(path)
    assert err.value.mode == 0o644 and "chmod 600" in str(err.value)


def _rewrite(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda d: d["keys"][0].update(address="0x" + "00" * 32), "does not match its address"),
        (lambda d: d["keys"][0].update(secret="somasecret1beef"), "key 'a'"),
        (lambda d: d["keys"].append(dict(d["keys"][0])), "appears twice"),
        (lambda d: d.update(active="ghost"), "not in the wallet"),
        (lambda d: d.update(active=None), "no active key"),
        (lambda d: d.update(version=7), "version 1"),
        (lambda d: d.update(keys={}), "not a list"),
        (lambda d: d["keys"][0].pop("secret"), "string fields"),
    ],
)
def test_corrupt_wallet_is_refused_with_reason(path, edit, reason):
    Wallet.load(path).new_key("a")
    _rewrite(path, edit)
    before = path.read_bytes()
    with pytest.raises(CorruptWallet) as err:
        Wallet.load(path)
    assert reason in err.value.reason and err.value.path == path
    assert path.read_bytes() == before


def test_non_json_and_non_file_are_corrupt(path):
    path.parent.mkdir(mode=0o700)
    path.write_bytes(b"\xff\x00garbage")
    os.chmod(path, 0o600)
    with pytest.raises(CorruptWallet, match="not JSON"):
        Wallet.load(path)
    path.unlink()
    path.mkdir(mode=0o700)
    with pytest.raises(CorruptWallet, match="not a regular file"):
        Wallet.load(path)


def test_failed_write_keeps_the_old_file_whole(path, monkeypatch):
    w = Wallet.load(path)
    w.new_key("a")
    before = path.read_bytes()

    def crash(*_):
        raise OSError("disk unplugged")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk unplugged"):
        w.new_key("b")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert temp_files(path) == []
    assert w.names() == ["a"] and Wallet.load(path).names() == ["a"]


_ADD_KEYS = """
import sys
from soma_ray.wallet import Wallet
for i in range(15):
    Wallet.load(sys.argv[1]).new_key(f"{sys.argv[2]}{i}")
"""


def test_concurrent_commands_do_not_lose_keys(path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    writers = [
        subprocess.Popen([sys.executable, "-c", _ADD_KEYS, str(path), tag], cwd=repo)
        for tag in ("a", "b")
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    names = Wallet.load(path).names()
    assert sorted(names) == sorted(f"{tag}{i}" for tag in "ab" for i in range(15))


# ------------------------------------------------------------------ the private files it shares
# The wallet and the model key store read and write with the same helpers (`read_private`,
# `write_private`, over `soma_ray.files`).


def test_private_files_are_written_whole_and_private_and_read_back(tmp_path):
    from soma_ray.wallet import read_private, write_private

    target = tmp_path / "new" / "secret.json"
    write_private(target, b"first")
    write_private(target, b"second")
    assert (target.read_bytes(), mode_of(target), mode_of(target.parent)) == (b"second", 0o600, 0o700)
    assert read_private(target) == b"second" and temp_files(target) == []


def test_a_private_read_refuses_others_files_links_when_asked_and_reads_at_most_its_limit(tmp_path):
    from soma_ray.files import FileTooLarge
    from soma_ray.wallet import PrivateFileError, read_private, write_private

    target = tmp_path / "secret"
    write_private(target, b"x" * 10)
    assert read_private(target, 10) == b"x" * 10
    with pytest.raises(FileTooLarge, match="over 9 bytes") as large:
        read_private(target, 9)
    assert (large.value.limit, large.value.size) == (9, 10)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert read_private(link) == b"x" * 10
    with pytest.raises(PrivateFileError):
        read_private(link, follow_symlinks=False)
    os.chmod(target, 0o640)
    with pytest.raises(PrivateFileError) as shared:
        read_private(target)
    assert shared.value.mode == 0o640
    with pytest.raises(FileNotFoundError):
        read_private(tmp_path / "missing")


def test_a_bounded_read_stops_one_byte_past_its_limit(tmp_path):
    from soma_ray.files import FileTooLarge, read_bounded

    data = tmp_path / "data"
    data.write_bytes(b"y" * 100)
    assert read_bounded(data, 100) == b"y" * 100
    with pytest.raises(FileTooLarge) as large:
        read_bounded(data, 64)
    assert (large.value.limit, large.value.size, str(large.value)) == (64, 100, f"{data} is over 64 bytes")
