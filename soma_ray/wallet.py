"""The wallet: named Ed25519 keys in one JSON file that only its owner can read.

File layout (version 1):
    {"version": 1, "active": "<name>",
     "keys": [{"name": "<name>", "address": "0x…", "secret": "somasecret1…"}, …]}
The address is stored next to each secret so that a damaged secret is noticed on load.
Every change is made under an exclusive lock on a side file, written to a temporary file
created with mode 0600 and renamed over the old one, so a crash leaves either the old wallet or
the new one, never half of either, and concurrent commands do not lose each other's keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from soma_ray.protocol.crypto import Keypair, show_address
from soma_ray.protocol.errors import MalformedInput

DEFAULT_WALLET = Path("~/.soma/wallet.json")
WALLET_ENV = "SOMA_WALLET"
FORMAT_VERSION = 1
MAX_NAME_LEN = 64


class WalletError(Exception):
    """Base class of every wallet error."""


class InsecureWalletFile(WalletError):
    """The key file can be read or written by users other than its owner."""

    def __init__(self, path: Path, mode: int):
        self.path = path
        self.mode = mode
        super().__init__(
            f"{path} has mode {mode:04o}; a key file must be private: run chmod 600 {path}"
        )


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
    """Named keys, in the order they were added; `active` names the default key."""

    def __init__(self, path: Path, keys: dict[str, Keypair], active: str | None):
        self.path = path
        self.keys = keys
        self.active = active

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Wallet:
        """The wallet at `path` (see `wallet_path`); an empty one if the file does not exist."""
        path = wallet_path(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return cls(path, {}, None)
        except OSError as err:
            raise CorruptWallet(path, err.strerror or str(err)) from None
        try:
            raw = _read_private(path, fd)
        finally:
            os.close(fd)
        return cls(path, *_parse(path, raw))

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

    def _change(self, apply: Callable[[dict[str, Keypair], str | None], tuple]) -> Any:
        """Re-read the file under an exclusive lock, apply the change, write it: two commands
        changing one wallet at once both land. `apply` returns (keys, active, result)."""
        with _locked(self.path):
            fresh = Wallet.load(self.path)
            keys, active, result = apply(fresh.keys, fresh.active)
            write_private(self.path, _serialize(keys, active))
        self.keys, self.active = keys, active
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


def _read_private(path: Path, fd: int) -> bytes:
    """The file's bytes, refused unless it is a regular file only its owner can access.
    Checked on the open descriptor, so the file cannot be swapped between check and read."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise CorruptWallet(path, "not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise InsecureWalletFile(path, mode)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


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


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` by `data`, readable by the owner only.

    The temporary file is created with mode 0600 by mkstemp (O_EXCL: never someone else's file)
    before any secret is written, synced, then renamed over `path`; the directory is synced so
    the rename itself survives a crash.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
