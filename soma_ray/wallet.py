"""The wallet: named Ed25519 keys in one JSON file that only its owner can read; and the model
key store, what a model's reveal needs, kept from its commit in private files beside it.

File layout (version 1):
    {"version": 1, "active": "<name>",
     "keys": [{"name": "<name>", "address": "0x…", "secret": "somasecret1…"}, …]}
The address is stored next to each secret so that a damaged secret is noticed on load.
Every change is made under an exclusive lock on a side file, written to a temporary file
created with mode 0600 and renamed over the old one, so a crash leaves either the old wallet or
the new one, never half of either, and concurrent commands do not lose each other's keys.

Key store (`save_secret`, `load_secret`): one record per model committed from this machine,
`$SOMA_HOME/models/<model id>.json` (0600 in a 0700 directory), written and read with the
wallet's own private-file helpers (`write_private`, `read_private`, in soma_ray/keyfile.py).

Encryption at rest (docs/wallet.md): a wallet can be sealed with a passphrase (Argon2id +
XSalsa20-Poly1305, `soma_ray.keyfile`); the whole document above is then the sealed plaintext. A
sealed wallet stays sealed through every change; a plaintext one opens and stays as before. The
passphrase of a sealed file: the caller's, else $SOMA_WALLET_PASSWORD, else the one this process
already opened a sealed wallet with, else a hidden prompt when stdin is a terminal, else
`PassphraseRequired`. Key store records are sealed with the passphrase of the sealed wallet this
process opened (or one given), so a model's decryption key is kept as its owner's key is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from soma_ray import keyfile
from soma_ray.cluster import soma_home
from soma_ray.files import FileTooLarge
from soma_ray.keyfile import (  # noqa: F401  (PrivateFileError, read/write_private: re-exported)
    KdfLimits, PrivateFileError, is_sealed, read_private, seal, sealed_limits,
    write_private,
)
from soma_ray.protocol.crypto import Keypair, show_address
from soma_ray.protocol.errors import MalformedInput, ProtocolError
from soma_ray.protocol.targets import embedding_bytes
from soma_ray.wire import parse_hex

DEFAULT_WALLET = Path("~/.soma/wallet.json")
WALLET_ENV = "SOMA_WALLET"
# The passphrase of a sealed wallet and of the key store records sealed with it, for scripts.
PASSWORD_ENV = "SOMA_WALLET_PASSWORD"
FORMAT_VERSION = 1
MAX_NAME_LEN = 64


class WalletError(Exception):
    """Base class of every wallet error."""


class InsecureWalletFile(WalletError):
    """The key file can be read or written by users other than its owner."""

    def __init__(self, path: Path, mode: int):
        self.path = path
        self.mode = mode
        super().__init__(keyfile.loose_mode_message(path, mode))


class WrongPassphrase(WalletError, keyfile.WrongPassphrase):
    """The passphrase does not open a sealed wallet or key store record; nothing was written."""


class PassphraseRequired(WalletError, keyfile.PassphraseRequired):
    """A sealed wallet or key store record, and no passphrase to open it with."""


class CorruptWallet(WalletError):
    """The key file cannot be read or does not hold a wallet."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path} is not a usable wallet: {reason}")


class InvalidKeyName(WalletError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(
            f"key name {name!r} is invalid: use 1..{MAX_NAME_LEN} printable characters, "
            "no spaces"
        )


class DuplicateKeyName(WalletError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"the wallet already has a key named {name!r}")


class DuplicateKey(WalletError):
    """The imported secret is already in the wallet under another name."""

    def __init__(self, name: str, existing_name: str):
        self.name = name
        self.existing_name = existing_name
        super().__init__(f"this key is already in the wallet as {existing_name!r}")


class UnknownKeyName(WalletError):
    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = known
        super().__init__(f"no key named {name!r}; the wallet has {', '.join(known) or 'no keys'}")


class EmptyWallet(WalletError):
    def __init__(self, path: Path):
        self.path = path
        super().__init__(f"the wallet at {path} has no keys: create one with `soma wallet new`")


class BadSecretText(WalletError):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"bad secret key text: {reason}")


def wallet_path(explicit: str | os.PathLike | None = None) -> Path:
    """The key file: `explicit` if given, else $SOMA_WALLET, else ~/.soma/wallet.json."""
    chosen = explicit or os.environ.get(WALLET_ENV) or DEFAULT_WALLET
    return Path(chosen).expanduser()


def keypair_from_text(text: str) -> Keypair:
    try:
        return Keypair.from_text(text)
    except MalformedInput as err:
        raise BadSecretText(err.reason) from None


class Wallet:
    """Named keys, in the order they were added; `active` names the default key. `passphrase`
    is None for a plaintext wallet, else what its file is sealed with (at `limits`)."""

    def __init__(self, path: Path, keys: dict[str, Keypair], active: str | None,
                 passphrase: str | None = None, limits: KdfLimits | None = None):
        self.path = path
        self.keys = keys
        self.active = active
        self.passphrase = passphrase
        self.limits = limits

    @property
    def encrypted(self) -> bool:
        return self.passphrase is not None

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, passphrase: str | None = None) -> Wallet:
        """The wallet at `path` (see `wallet_path`); an empty one if the file does not exist. A
        sealed file opens with `passphrase`, else as the module docstring says (the variable,
        this process's earlier one, a prompt): WrongPassphrase or PassphraseRequired if not."""
        path = wallet_path(path)
        try:
            raw = read_private(path)
        except FileNotFoundError:
            return cls(path, {}, None)
        except PrivateFileError as err:
            if err.mode is not None:
                raise InsecureWalletFile(path, err.mode) from None
            raise CorruptWallet(path, err.reason) from None
        if not is_sealed(raw):
            return cls(path, *_parse(path, raw))
        try:
            limits = sealed_limits(raw, path)
        except keyfile.BadSealedFile as err:
            raise CorruptWallet(path, err.reason) from None
        plain, passphrase = open_sealed(path, raw, passphrase)
        return cls(path, *_parse(path, plain), passphrase, limits)

    # -- reading ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self.keys)

    def get(self, name: str | None = None) -> Keypair:
        """The key named `name`, or the active key when `name` is None."""
        if name is None:
            if self.active is None:
                raise EmptyWallet(self.path)
            name = self.active
        try:
            return self.keys[name]
        except KeyError:
            raise UnknownKeyName(name, self.names()) from None

    # -- changing (each writes the file before returning) -------------------------------------

    def new_key(self, name: str | None = None, set_default: bool = False) -> tuple[str, Keypair]:
        """Generate a key named `name` (default: the first free key-N)."""
        if name is not None:
            _check_name(name)
        keypair = Keypair.generate()

        def add(keys: dict[str, Keypair], active: str | None):
            chosen = name if name is not None else _free_name(keys)
            return (*_with_key(keys, active, chosen, keypair, set_default), chosen)

        return self._change(add), keypair

    def import_key(self, name: str, secret_text: str, set_default: bool = False) -> Keypair:
        _check_name(name)
        keypair = keypair_from_text(secret_text)

        def add(keys: dict[str, Keypair], active: str | None):
            return (*_with_key(keys, active, name, keypair, set_default), None)

        self._change(add)
        return keypair

    def set_default(self, name: str) -> None:
        def activate(keys: dict[str, Keypair], active: str | None):
            if name not in keys:
                raise UnknownKeyName(name, list(keys))
            return keys, name, None

        self._change(activate)

    def encrypt(self, passphrase: str, limits: KdfLimits | None = None) -> None:
        """Seal the wallet with `passphrase` from now on (a plaintext one is encrypted, a sealed
        one gets the new passphrase); a wallet with no file yet is written empty and sealed, so
        its first key never reaches the disk in the clear."""
        if not passphrase:
            raise PassphraseRequired(self.path, PASSWORD_ENV)
        self._change(lambda keys, active: (keys, active, None), (passphrase, limits))
        _remember(passphrase)

    def _change(self, apply: Callable[[dict[str, Keypair], str | None], tuple],
                seal_with: tuple[str, KdfLimits | None] | None = None) -> Any:
        """Re-read the file under an exclusive lock, apply the change, write it (sealed as the
        file was, or with `seal_with`): two commands changing one wallet at once both land.
        `apply` returns (keys, active, result). A file that cannot be opened is left as it was."""
        with _locked(self.path):
            fresh = Wallet.load(self.path, self.passphrase)
            keys, active, result = apply(fresh.keys, fresh.active)
            passphrase, limits = seal_with or (fresh.passphrase, fresh.limits)
            data = _serialize(keys, active)
            write_private(self.path, data if passphrase is None else seal(data, passphrase, limits))
        self.keys, self.active = keys, active
        self.passphrase, self.limits = passphrase, limits
        return result


def _with_key(
    keys: dict[str, Keypair], active: str | None, name: str, keypair: Keypair, set_default: bool
) -> tuple[dict[str, Keypair], str]:
    """`keys` plus `keypair` as `name`, and the active name after adding it."""
    if name in keys:
        raise DuplicateKeyName(name)
    for existing_name, existing in keys.items():
        if existing.public_key == keypair.public_key:
            raise DuplicateKey(name, existing_name)
    return {**keys, name: keypair}, name if set_default or active is None else active


def _free_name(keys: dict[str, Keypair]) -> str:
    n = len(keys)
    while f"key-{n}" in keys:
        n += 1
    return f"key-{n}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on a side file next to `path` (the wallet itself is replaced by
    rename, so it cannot carry the lock)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_name(name: str) -> None:
    printable = name.isprintable() and not any(c.isspace() for c in name)
    if not (0 < len(name) <= MAX_NAME_LEN and printable):
        raise InvalidKeyName(name)


def _serialize(keys: dict[str, Keypair], active: str | None) -> bytes:
    entries = [
        {"name": name, "address": show_address(kp.address), "secret": kp.to_text()}
        for name, kp in keys.items()
    ]
    doc = {"version": FORMAT_VERSION, "active": active, "keys": entries}
    return (json.dumps(doc, indent=2) + "\n").encode()


def _parse(path: Path, raw: bytes) -> tuple[dict[str, Keypair], str | None]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptWallet(path, f"not JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise CorruptWallet(path, f"expected a version {FORMAT_VERSION} wallet object")
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise CorruptWallet(path, "'keys' is not a list")
    keys: dict[str, Keypair] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(f), str) for f in ("name", "address", "secret")
        ):
            raise CorruptWallet(path, f"key #{i} needs string fields name, address, secret")
        name = entry["name"]
        if name in keys:
            raise CorruptWallet(path, f"key name {name!r} appears twice")
        try:
            keypair = keypair_from_text(entry["secret"])
        except BadSecretText as err:
            raise CorruptWallet(path, f"key {name!r}: {err.reason}") from None
        if show_address(keypair.address) != entry["address"]:
            raise CorruptWallet(path, f"key {name!r}: secret does not match its address")
        keys[name] = keypair
    active = doc.get("active")
    if active is not None and active not in keys:
        raise CorruptWallet(path, f"active key {active!r} is not in the wallet")
    if active is None and keys:
        raise CorruptWallet(path, "the wallet has keys but no active key")
    return keys, active


# ------------------------------------------------------------------------------- passphrases

# The passphrase this process last opened (or sealed) a wallet with: the key store records the
# same command writes are sealed with it, and its records open without asking again.
_opened_with: str | None = None


def _remember(passphrase: str) -> None:
    global _opened_with
    _opened_with = passphrase


def remembered_passphrase() -> str | None:
    """The passphrase this process opened a sealed wallet with, if any."""
    return _opened_with


def forget_passphrase() -> None:
    _remember(None)


def ask(prompt: str) -> str | None:
    """A passphrase typed at a hidden prompt, or None when stdin is not a terminal."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        return None
    return getpass.getpass(prompt)


def open_sealed(path: Path, raw: bytes, passphrase: str | None = None) -> tuple[bytes, str]:
    """The plain bytes of the sealed file `raw` (at `path`) and the passphrase that opened it:
    `passphrase` if given, else $SOMA_WALLET_PASSWORD (each final: a wrong one is
    WrongPassphrase), else the one this process opened a wallet with (if it fits), else a hidden
    prompt (`ask`), else PassphraseRequired."""
    def attempt(candidate: str, source: str) -> bytes:
        try:
            return keyfile.unseal(raw, candidate, path, source)
        except keyfile.WrongPassphrase:
            raise WrongPassphrase(path, source) from None
        except keyfile.BadSealedFile as err:
            raise CorruptWallet(path, err.reason) from None

    def opened(candidate: str, source: str) -> tuple[bytes, str]:
        plain = attempt(candidate, source)
        _remember(candidate)
        return plain, candidate

    if passphrase is not None:
        return opened(passphrase, "the passphrase")
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return opened(from_env, PASSWORD_ENV)
    if _opened_with is not None:
        with contextlib.suppress(WrongPassphrase):
            return opened(_opened_with, "the passphrase")
    typed = ask(f"passphrase for {path}: ")
    if not typed:
        raise PassphraseRequired(path, PASSWORD_ENV)
    return opened(typed, "the passphrase")


# ------------------------------------------------------------------------------- the key store

KEY_STORE_DIR = "models"
KEY_STORE_VERSION = 1
MAX_KEY_STORE_BYTES = 1 << 20  # a record holds a key, a URL and at most a few 10 KiB of embedding


class KeyStoreError(WalletError):
    """A key store record that is missing, not private, or not a record."""


@dataclasses.dataclass(frozen=True)
class ModelSecret:
    """What revealing a commit needs, kept from the commit until the reveal."""

    model_id: bytes
    decryption_key: bytes
    embedding: bytes  # the canonical little-endian float32 bytes committed to
    weights_url: str


def key_store_path(model_id: bytes, home: Path | None = None) -> Path:
    return (home or soma_home()) / KEY_STORE_DIR / f"{show_address(model_id)}.json"


def save_secret(secret: ModelSecret, home: Path | None = None, passphrase: str | None = None,
                limits: KdfLimits | None = None) -> Path:
    """Write the record atomically, 0600 in a 0700 directory (`write_private`); sealed with
    `passphrase`, else with the one this process opened its sealed wallet with (if any)."""
    path = key_store_path(secret.model_id, home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)  # one made earlier with a wider mode too
    record = {"version": KEY_STORE_VERSION, "model_id": show_address(secret.model_id),
              "decryption_key": show_address(secret.decryption_key),
              "embedding": show_address(secret.embedding), "weights_url": secret.weights_url}
    data = (json.dumps(record, indent=2) + "\n").encode()
    passphrase = passphrase or remembered_passphrase()
    write_private(path, data if passphrase is None else seal(data, passphrase, limits))
    return path


def load_secret(model_id: bytes, home: Path | None = None,
                passphrase: str | None = None) -> ModelSecret:
    """The record of `model_id`; refused when missing, not private, too large or malformed. A
    sealed record opens as a sealed wallet does (`open_sealed`)."""
    path = key_store_path(model_id, home)
    try:
        data = read_private(path, MAX_KEY_STORE_BYTES, follow_symlinks=False)
    except FileNotFoundError:
        raise KeyStoreError(
            f"no key store record {path}: the reveal needs the key and embedding that model "
            f"{show_address(model_id)}'s commit kept there (commit from this machine, or copy the "
            "record here)") from None
    except FileTooLarge:
        raise KeyStoreError(f"{path} is over {MAX_KEY_STORE_BYTES} bytes: not a key store record") from None
    except PrivateFileError as err:
        if err.mode is not None:
            raise KeyStoreError(keyfile.loose_mode_message(path, err.mode)) from None
        raise KeyStoreError(f"key store record {path}: {err.reason}") from None
    if is_sealed(data):
        try:
            data, _ = open_sealed(path, data, passphrase)
        except CorruptWallet as err:
            raise KeyStoreError(f"{path} is not a usable key store record: {err.reason}") from None
    return parse_secret(data, model_id, path)


def parse_secret(data: bytes, model_id: bytes, path: Path) -> ModelSecret:
    def bad(reason: str) -> KeyStoreError:
        return KeyStoreError(f"{path} is not a usable key store record: {reason}")

    try:
        record = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("not JSON") from None
    fields = ("version", "model_id", "decryption_key", "embedding", "weights_url")
    if not isinstance(record, dict) or sorted(record) != sorted(fields):
        raise bad(f"expected the fields {', '.join(fields)}")
    if record["version"] != KEY_STORE_VERSION:
        raise bad(f"version {record['version']!r}, this soma reads version {KEY_STORE_VERSION}")
    if not all(isinstance(record[name], str) for name in fields[1:]):
        raise bad("its values are not text")
    try:
        secret = ModelSecret(parse_hex(record["model_id"], "model_id", 32),
                             parse_hex(record["decryption_key"], "decryption_key", 32),
                             embedding_bytes(parse_hex(record["embedding"], "embedding")),
                             record["weights_url"])
    except ProtocolError as error:  # MalformedInput, NonFiniteEmbedding
        raise bad(str(error)) from None
    if secret.model_id != model_id:
        raise bad(f"it holds model {record['model_id']}, not {show_address(model_id)}")
    return secret
