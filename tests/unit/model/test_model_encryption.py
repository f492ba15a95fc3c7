import hashlib
import os

import numpy as np
import pytest

from soma_ray.model import DecryptionError
from soma_ray.model.commitments import (
    embedding_bytes,
    embedding_commitment,
    key_commitment,
    weights_commitment,
    weights_manifest,
)
from soma_ray.model.encryption import CHUNK_BYTES, decrypt_weights, encrypt_weights
from soma_ray.protocol.encoding import DOMAIN_MODEL_COMMITMENT, digest
from soma_ray.protocol.errors import MalformedInput, NonFiniteEmbedding

SEALED_CHUNK = CHUNK_BYTES + 17


@pytest.fixture
def plain(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(os.urandom(2 * CHUNK_BYTES + 1234))  # three stream messages
    return path


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES, 2 * CHUNK_BYTES + 1234])
def test_round_trip(tmp_path, size):
    data = os.urandom(size)
    (tmp_path / "p").write_bytes(data)
    key = encrypt_weights(tmp_path / "p", tmp_path / "c")
    assert len(key) == 32
    sealed = (tmp_path / "c").read_bytes()
    if size >= 64:
        assert data[:64] not in sealed
    decrypt_weights(tmp_path / "c", tmp_path / "out", key)
    assert (tmp_path / "out").read_bytes() == data


def test_each_encryption_uses_a_fresh_key(plain, tmp_path):
    assert encrypt_weights(plain, tmp_path / "a") != encrypt_weights(plain, tmp_path / "b")


def _fails_and_writes_nothing(tmp_path, sealed_path, key, match):
    out = tmp_path / "out"
    out.write_bytes(b"previous")
    with pytest.raises(DecryptionError, match=match) as err:
        decrypt_weights(sealed_path, out, key)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    return err.value


def test_wrong_key(plain, tmp_path):
    encrypt_weights(plain, tmp_path / "c")
    err = _fails_and_writes_nothing(tmp_path, tmp_path / "c", bytes(32), "wrong key or tampered")
    assert err.offset == 24


def test_key_of_wrong_length(plain, tmp_path):
    encrypt_weights(plain, tmp_path / "c")
    _fails_and_writes_nothing(tmp_path, tmp_path / "c", b"short", "5 bytes, expected 32")


def test_tampered_byte_in_a_later_message(plain, tmp_path):
    key = encrypt_weights(plain, tmp_path / "c")
    sealed = bytearray((tmp_path / "c").read_bytes())
    sealed[24 + SEALED_CHUNK + 10] ^= 1
    (tmp_path / "c").write_bytes(bytes(sealed))
    err = _fails_and_writes_nothing(tmp_path, tmp_path / "c", key, "tampered")
    assert err.offset == 24 + SEALED_CHUNK


def test_reordered_messages(plain, tmp_path):
    key = encrypt_weights(plain, tmp_path / "c")
    sealed = (tmp_path / "c").read_bytes()
    first, second = sealed[24:24 + SEALED_CHUNK], sealed[24 + SEALED_CHUNK:24 + 2 * SEALED_CHUNK]
    (tmp_path / "c").write_bytes(sealed[:24] + second + first + sealed[24 + 2 * SEALED_CHUNK:])
    _fails_and_writes_nothing(tmp_path, tmp_path / "c", key, "tampered")


def test_truncation_at_a_message_boundary_is_detected(plain, tmp_path):
    key = encrypt_weights(plain, tmp_path / "c")
    sealed = (tmp_path / "c").read_bytes()
    (tmp_path / "c").write_bytes(sealed[:24 + 2 * SEALED_CHUNK])
    _fails_and_writes_nothing(tmp_path, tmp_path / "c", key, "truncated")
    (tmp_path / "c").write_bytes(sealed[:10])
    _fails_and_writes_nothing(tmp_path, tmp_path / "c", key, "shorter than the stream header")


@pytest.mark.parametrize("size,match", [(CHUNK_BYTES, "follows the final"),
                                        (CHUNK_BYTES + 5, "tampered")])
def test_trailing_data_after_the_final_message(tmp_path, size, match):
    (tmp_path / "p").write_bytes(os.urandom(size))
    key = encrypt_weights(tmp_path / "p", tmp_path / "c")
    with open(tmp_path / "c", "ab") as f:
        f.write(b"x")
    _fails_and_writes_nothing(tmp_path, tmp_path / "c", key, match)


def test_manifest_and_weights_commitment_cover_the_encrypted_bytes(plain, tmp_path):
    encrypt_weights(plain, tmp_path / "c")
    sealed = (tmp_path / "c").read_bytes()
    manifest = weights_manifest(tmp_path / "c", "http://blobs/abc")
    assert (manifest.url, manifest.size) == ("http://blobs/abc", len(sealed))
    assert manifest.checksum == hashlib.blake2b(sealed, digest_size=32).digest()
    # Streaming equals the one-shot domain-tagged digest a verifier computes.
    assert weights_commitment(tmp_path / "c") == digest(DOMAIN_MODEL_COMMITMENT, sealed)
    assert weights_commitment(tmp_path / "c") != manifest.checksum


def test_key_and_embedding_commitments_are_what_the_chain_checks():
    key = bytes(range(32))
    assert key_commitment(key) == hashlib.blake2b(DOMAIN_MODEL_COMMITMENT + key,
                                                  digest_size=32).digest()
    assert key_commitment(key) != key_commitment(bytes(32))
    with pytest.raises(DecryptionError):
        key_commitment(b"\x00" * 31)
    embedding = np.array([1.0, -2.5, 0.0, 3.25], dtype=np.float32)
    assert embedding_bytes(embedding) == b"".join(
        np.array([x], "<f4").tobytes()
        for x in (1.0, -2.5, 0.0, 3.25))
    assert embedding_commitment(embedding) == digest(DOMAIN_MODEL_COMMITMENT,
                                                     embedding_bytes(embedding))
    assert embedding_commitment(embedding.astype(">f4")) == embedding_commitment(embedding)


def test_embedding_commitment_refuses_nan_and_other_dtypes():
    with pytest.raises(NonFiniteEmbedding) as err:
        embedding_commitment(np.array([0.0, np.nan], dtype=np.float32))
    assert err.value.index == 1
    with pytest.raises(MalformedInput):
        embedding_commitment(np.array([0.0, 1.0]))


def test_bytes_round_trip_matches_the_file_format(tmp_path):
    from soma_ray.model.encryption import decrypt_bytes, decrypt_weights, encrypt_bytes

    data = os.urandom(3 * CHUNK_BYTES // 2)
    sealed, key = encrypt_bytes(data)
    assert decrypt_bytes(sealed, key) == data
    (tmp_path / "sealed").write_bytes(sealed)  # the bytes are a valid encrypted file
    decrypt_weights(tmp_path / "sealed", tmp_path / "plain", key)
    assert (tmp_path / "plain").read_bytes() == data
    with pytest.raises(DecryptionError):
        decrypt_bytes(sealed[:-1], key)
    with pytest.raises(DecryptionError):
        decrypt_bytes(sealed, bytes(32))
