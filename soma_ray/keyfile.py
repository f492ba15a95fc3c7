"""Secret files at rest: private files (the owner's only, checked on the open descriptor) and
passphrase sealing, for the wallet, the model key store (soma_ray/wallet.py) and validator keys
(soma_ray/config.py).

A sealed file is a small JSON object:

    {"soma_sealed": 1, "kdf": "argon2id13", "opslimit": 3, "memlimit": 268435456,
     "salt": "<16 bytes, hex>", "cipher": "xsalsa20poly1305", "nonce": "<24 bytes, hex>",
     "ciphertext": "<base64>"}

The key is libsodium's Argon2id (`nacl.pwhash.argon2id.kdf`, 32 bytes) of the UTF-8 passphrase
with a fresh random salt, at the limits the file states; the file's plain bytes are sealed with
that key by XSalsa20-Poly1305 (`nacl.secret.SecretBox`, a fresh random nonce). A wrong
passphrase, or any change to the file, fails the Poly1305 check: `WrongPassphrase`. The limits
are read back from the file (so a later default can change and old files still open), within
MAX_OPSLIMIT/MAX_MEMLIMIT, so a crafted file cannot make a reader spend unbounded memory.

PyNaCl is imported inside the functions: the wallet's plaintext path and `soma --help` do not
pay for it.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from soma_ray.files import read_at_most, write_atomic

FORMAT = 1
KDF = "argon2id13"
CIPHER = "xsalsa20poly1305"
# libsodium's "moderate" Argon2id limits (crypto_pwhash_OPSLIMIT_MODERATE / MEMLIMIT_MODERATE):
# about 0.6 s and 256 MiB per derivation on a 2020s core. Tests pass lower limits explicitly.
DEFAULT_OPSLIMIT = 3
DEFAULT_MEMLIMIT = 256 * 1024 * 1024
# The most a sealed file may ask its reader for (libsodium's "sensitive" level: 4, 1 GiB).
MAX_OPSLIMIT = 4
MAX_MEMLIMIT = 1024 * 1024 * 1024
SALT_BYTES = 16
NONCE_BYTES = 24
KEY_BYTES = 32
MAX_SEALED_BYTES = 16 << 20


class KeyFileError(Exception):
    """A secret file that cannot be used: the message names the file and what to do."""


class PrivateFileError(KeyFileError):
    """A private file (the wallet, a key store record, a validator key) that cannot be used:
    `reason` says why; `mode` is set when users other than its owner may access it."""

    def __init__(self, path: Path, reason: str, mode: int | None = None):
        self.path = path
        self.reason = reason
        self.mode = mode
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.mode)


class WrongPassphrase(KeyFileError):
    """The passphrase does not open the sealed file (or the file was changed)."""

    def __init__(self, path: Path, source: str = "the passphrase"):
        self.path = path
        self.source = source
        super().__init__(f"{source} does not open {path} (wrong passphrase, or the file was altered)")

    def __reduce__(self):
        return type(self), (self.path, self.source)


class PassphraseRequired(KeyFileError):
    """The file is sealed and no passphrase was given (no variable set, no terminal to ask at)."""

    def __init__(self, path: Path, env_var: str):
        self.path = path
        self.env_var = env_var
        super().__init__(f"{path} is encrypted: set {env_var} to its passphrase, or run the "
                         "command in a terminal to be asked for it")

    def __reduce__(self):
        return type(self), (self.path, self.env_var)


class BadSealedFile(KeyFileError):
    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path} is not a usable encrypted key file: {reason}")

    def __reduce__(self):
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class KdfLimits:
    """Argon2id's cost: passes over memory (`opslimit`) and memory in bytes (`memlimit`)."""
    opslimit: int = DEFAULT_OPSLIMIT
    memlimit: int = DEFAULT_MEMLIMIT


DEFAULT_LIMITS = KdfLimits()


# ------------------------------------------------------------------------------- private files


def loose_mode_message(path: Path, mode: int) -> str:
    """The refusal of a key file others may access: its mode, and the command that fixes it."""
    return (f"{path} has mode {mode:04o}: group or others may read it, and a key file must be "
            f"its owner's only; run chmod 600 {path}")


def read_private(path: Path, limit: int | None = None, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of `path`, refused (PrivateFileError) unless it is a regular file only its
    owner can access; checked on the open descriptor, so the file cannot be swapped between
    check and read. FileNotFoundError when it does not exist; with `limit`, FileTooLarge when
    it holds more (read no further)."""
    flags = os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise PrivateFileError(path, err.strerror or str(err)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PrivateFileError(path, "not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise PrivateFileError(path, f"mode {mode:04o}: others may access it", mode)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        return file.read() if limit is None else read_at_most(file, limit, path)


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` by `data`, readable by the owner only, in a directory made
    0700 if missing (`soma_ray.files.write_atomic`: a scratch file created 0600 by mkstemp
    before any secret is written, synced, renamed over `path`, then the directory synced so the
    rename itself survives a crash)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, data, durable=True)


# ------------------------------------------------------------------------------- sealing


def _key(passphrase: str, salt: bytes, limits: KdfLimits) -> bytes:
    from nacl.pwhash import argon2id

    return argon2id.kdf(KEY_BYTES, passphrase.encode(), salt, opslimit=limits.opslimit,
                        memlimit=limits.memlimit)


def seal(data: bytes, passphrase: str, limits: KdfLimits | None = None) -> bytes:
    """`data` sealed with `passphrase` (the file format above) at `limits` (default:
    DEFAULT_LIMITS, read when called); ValueError for an empty passphrase."""
    from nacl.secret import SecretBox
    from nacl.utils import random

    limits = limits or DEFAULT_LIMITS
    if not passphrase:
        raise ValueError("the passphrase is empty")
    salt, nonce = random(SALT_BYTES), random(NONCE_BYTES)
    box = SecretBox(_key(passphrase, salt, limits))
    ciphertext = box.encrypt(data, nonce).ciphertext
    document = {"soma_sealed": FORMAT, "kdf": KDF, "opslimit": limits.opslimit,
                "memlimit": limits.memlimit, "salt": salt.hex(), "cipher": CIPHER,
                "nonce": nonce.hex(), "ciphertext": base64.b64encode(ciphertext).decode()}
    return (json.dumps(document, indent=1) + "\n").encode()


def is_sealed(data: bytes) -> bool:
    """Whether `data` is a sealed file (a JSON object with the `soma_sealed` field)."""
    if not data.lstrip().startswith(b"{"):
        return False
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(document, dict) and "soma_sealed" in document


def sealed_limits(data: bytes, path: Path = Path("<sealed>")) -> KdfLimits:
    """The Argon2id limits a sealed file was written with."""
    return _parse(data, path)[0]


def _parse(data: bytes, path: Path) -> tuple[KdfLimits, bytes, bytes, bytes]:
    if len(data) > MAX_SEALED_BYTES:
        raise BadSealedFile(path, f"over {MAX_SEALED_BYTES} bytes")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadSealedFile(path, "not JSON") from None
    if not isinstance(document, dict) or document.get("soma_sealed") != FORMAT:
        raise BadSealedFile(path, f"expected a format {FORMAT} sealed object")
    if document.get("kdf") != KDF or document.get("cipher") != CIPHER:
        raise BadSealedFile(path, f"expected kdf {KDF!r} and cipher {CIPHER!r}")
    ops, mem = document.get("opslimit"), document.get("memlimit")
    if not all(type(v) is int for v in (ops, mem)) or not (1 <= ops <= MAX_OPSLIMIT) or not (
            8192 <= mem <= MAX_MEMLIMIT):
        raise BadSealedFile(path, f"Argon2id limits out of range (opslimit 1..{MAX_OPSLIMIT}, "
                            f"memlimit 8 KiB..{MAX_MEMLIMIT >> 20} MiB)")
    try:
        salt = bytes.fromhex(document["salt"])
        nonce = bytes.fromhex(document["nonce"])
        ciphertext = base64.b64decode(document["ciphertext"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise BadSealedFile(path, "salt, nonce and ciphertext must be hex, hex and base64") from None
    if len(salt) != SALT_BYTES or len(nonce) != NONCE_BYTES:
        raise BadSealedFile(path, f"the salt is {SALT_BYTES} bytes and the nonce {NONCE_BYTES}")
    return KdfLimits(ops, mem), salt, nonce, ciphertext


def unseal(data: bytes, passphrase: str, path: Path = Path("<sealed>"),
           source: str = "the passphrase") -> bytes:
    """The plain bytes of the sealed file `data` (read from `path`, named in errors);
    WrongPassphrase when `passphrase` does not open it, BadSealedFile when it is not one."""
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    limits, salt, nonce, ciphertext = _parse(data, path)
    box = SecretBox(_key(passphrase, salt, limits))
    try:
        return box.decrypt(ciphertext, nonce)
    except CryptoError:
        raise WrongPassphrase(path, source) from None
