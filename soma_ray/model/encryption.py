"""Weights at rest and in transit: PyNaCl secretstream (XChaCha20-Poly1305), streamed.

File format: the 24-byte stream header, then the plaintext in messages of CHUNK_BYTES (the
last may be shorter, possibly empty), each sealed with its 17-byte tag; the last message
carries TAG_FINAL, so truncation, reordering and tampering are all detected.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

import nacl.exceptions
from nacl import bindings as sodium

from soma_ray.model.errors import DecryptionError
from soma_ray.files import replacing

CHUNK_BYTES = 1 << 20
KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_SEALED_CHUNK_BYTES = CHUNK_BYTES + sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


def encrypt_stream(plain: BinaryIO, sealed: BinaryIO) -> bytes:
    """Encrypt what `plain` holds into `sealed` under a fresh random key, which is returned."""
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sealed.write(sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key))
    chunk = plain.read(CHUNK_BYTES)
    while True:
        following = plain.read(CHUNK_BYTES)
        tag = _TAG_MESSAGE if following else _TAG_FINAL
        sealed.write(sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, None, tag))
        if not following:
            return key
        chunk = following


def decrypt_stream(sealed: BinaryIO, plain: BinaryIO, key: bytes) -> None:
    """Decrypt `sealed` into `plain`; DecryptionError on any failure (what was written to
    `plain` by then must be discarded)."""
    check_key(key)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sealed.read(_HEADER_BYTES)
    if len(header) != _HEADER_BYTES:
        raise DecryptionError("the file is shorter than the stream header", 0)
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    offset = _HEADER_BYTES
    while True:
        message = sealed.read(_SEALED_CHUNK_BYTES)
        if not message:
            raise DecryptionError("the stream ends before its final message (truncated)", offset)
        try:
            chunk, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, message, None)
        except nacl.exceptions.CryptoError:
            raise DecryptionError("authentication failed (wrong key or tampered data)", offset) from None
        plain.write(chunk)
        offset += len(message)
        if tag == _TAG_FINAL:
            if sealed.read(1):
                raise DecryptionError("data follows the final message", offset)
            return


def encrypt_weights(src: str | os.PathLike, dst: str | os.PathLike) -> bytes:
    """Encrypt file `src` into `dst` under a fresh random key, which is returned (32 bytes)."""
    with open(src, "rb") as plain, replacing(dst) as tmp, open(tmp, "wb") as sealed:
        return encrypt_stream(plain, sealed)


def check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise DecryptionError(f"the key has {len(key)} bytes, expected {KEY_BYTES}", 0)


def decrypt_weights(src: str | os.PathLike, dst: str | os.PathLike, key: bytes) -> None:
    """Decrypt `src` into `dst`; DecryptionError (and no `dst` written) on any failure."""
    with open(src, "rb") as sealed, replacing(dst) as tmp, open(tmp, "wb") as plain:
        decrypt_stream(sealed, plain, key)


def encrypt_bytes(data: bytes) -> tuple[bytes, bytes]:
    """(encrypted bytes, key) of `data`, in the same format as a file."""
    sealed = io.BytesIO()
    key = encrypt_stream(io.BytesIO(data), sealed)
    return sealed.getvalue(), key


def decrypt_bytes(data: bytes, key: bytes) -> bytes:
    """The plaintext of encrypted `data`; DecryptionError on any failure."""
    plain = io.BytesIO()
    decrypt_stream(io.BytesIO(data), plain, key)
    return plain.getvalue()
