"""Ed25519 keys, addresses and committee certificates (spec §0, §5, §6).

`Keypair.generate()` draws OS randomness (PyNaCl): it is a wallet operation and is never called on
the state-transition path. Signatures are always over `domain || message`.
"""
from __future__ import annotations

import nacl.exceptions
import nacl.signing

from soma_ray.protocol.encoding import Struct, blake2b256
from soma_ray.protocol.errors import InvalidCertificate, MalformedInput
from soma_ray.protocol.params import QUORUM

TOTAL_VOTING_POWER = 10_000
_TEXT_PREFIX = "somasecret1"


def address_of(public_key: bytes) -> bytes:
    """Address = blake2b-256(0x00 || public key) (spec §0)."""
    return blake2b256(b"\x00" + bytes(public_key))


def show_address(address: bytes) -> str:
    return "0x" + address.hex()


class Address(bytes):
    """A 32-byte address that is also the reference SDK's `Keypair.address()`: the bytes every
    internal use reads (`keypair.address` in a transaction, a dict key, a comparison with plain
    bytes: equal, same hash), and, called, its 0x-hex text (`keypair.address()`).

    The canonical encoder turns it into plain bytes (`encoding.enc_hook`: msgspec encodes no
    subclass of bytes by itself), so digests and signatures are those of the bytes; it pickles
    as itself (Ray)."""

    __slots__ = ()

    def __call__(self) -> str:
        return "0x" + self.hex()

    def __reduce__(self):
        return (Address, (bytes(self),))


class Keypair:
    """An Ed25519 signing key with its public key and address."""

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._key = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)
        # Bytes to every internal use; `keypair.address()` is its 0x-hex text (the SDK's form).
        self.address: Address = Address(address_of(self.public_key))

    @classmethod
    def generate(cls) -> "Keypair":
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_secret(cls, secret: bytes) -> "Keypair":
        if len(secret) != 32:
            raise MalformedInput(reason=f"a secret key is 32 bytes, got {len(secret)}")
        return cls(nacl.signing.SigningKey(bytes(secret)))

    @property
    def secret(self) -> bytes:
        return bytes(self._key)

    @classmethod
    def from_secret_key(cls, secret: str | bytes) -> "Keypair":
        """The SDK's name: from the 32 secret bytes, their hex (0x optional) or `to_text`'s form."""
        if isinstance(secret, str):
            if secret.strip().startswith(_TEXT_PREFIX):
                return cls.from_text(secret)
            digits = secret.strip().removeprefix("0x")
            try:
                secret = bytes.fromhex(digits)
            except ValueError:
                raise MalformedInput(reason="a secret key is 64 hex digits") from None
        return cls.from_secret(secret)

    def to_secret_key(self) -> str:
        """The secret as 0x-hex (what `from_secret_key` reads back). Keep it secret."""
        return "0x" + self.secret.hex()

    def to_text(self) -> str:
        return _TEXT_PREFIX + self.secret.hex()

    @classmethod
    def from_text(cls, text: str) -> "Keypair":
        text = text.strip()
        if not text.startswith(_TEXT_PREFIX):
            raise MalformedInput(reason=f"a secret key text starts with {_TEXT_PREFIX!r}")
        try:
            secret = bytes.fromhex(text[len(_TEXT_PREFIX):])
        except ValueError:
            raise MalformedInput(reason="a secret key text is hex after its prefix") from None
        return cls.from_secret(secret)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        return self._key.sign(domain + message).signature

    def __repr__(self) -> str:
        return f"Keypair(address={show_address(self.address)})"


def verify_signature(public_key: bytes, domain: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature over `domain || message`."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(bytes(public_key)).verify(domain + message, bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


class CommitteeMember(Struct, frozen=True):
    address: bytes
    public_key: bytes
    voting_power: int


class Committee(Struct, frozen=True):
    """The validator committee of one epoch; voting powers sum to 10000."""

    epoch: int
    members: list[CommitteeMember]

    @property
    def total_power(self) -> int:
        return TOTAL_VOTING_POWER

    @property
    def quorum(self) -> int:
        """`params.QUORUM`, the default of `Parameters.quorum`."""
        return QUORUM

    def power_of(self, addresses: list[bytes] | set[bytes]) -> int:
        wanted = set(addresses)
        return sum(m.voting_power for m in self.members if m.address in wanted)


class Certificate(Struct, frozen=True):
    """Signatures of committee members (by index into `Committee.members`) over one message."""

    signer_indices: list[int]
    signatures: list[bytes]


def sign_certificate(
    committee: Committee, keypairs: list[Keypair], domain: bytes, message: bytes
) -> Certificate:
    """Certificate signed by `keypairs` (each must be a committee member), indices ascending."""
    index_of = {m.address: i for i, m in enumerate(committee.members)}
    signed = sorted((index_of[k.address], k.sign(domain, message)) for k in keypairs)
    return Certificate(signer_indices=[i for i, _ in signed], signatures=[s for _, s in signed])


def verify_certificate(
    committee: Committee, domain: bytes, message: bytes, certificate: Certificate, quorum: int = QUORUM
) -> None:
    """Raise `InvalidCertificate` unless distinct members with ≥ `quorum` power signed the message
    (on the execution path, the state's `params.quorum`)."""
    if len(certificate.signer_indices) != len(certificate.signatures):
        raise InvalidCertificate(reason="signer_indices and signatures differ in length")
    seen: set[int] = set()
    power = 0
    for index, signature in zip(certificate.signer_indices, certificate.signatures):
        if index in seen:
            raise InvalidCertificate(reason=f"duplicate signer index {index}")
        if not 0 <= index < len(committee.members):
            raise InvalidCertificate(reason=f"unknown signer index {index}")
        member = committee.members[index]
        if not verify_signature(member.public_key, domain, message, signature):
            raise InvalidCertificate(reason=f"bad signature from signer index {index}")
        seen.add(index)
        power += member.voting_power
    if power < quorum:
        raise InvalidCertificate(reason=f"voting power {power} is below the quorum {quorum}")
