"""Pinned digests of a hand-built genesis and its first checkpoint.

These values were computed once from the genesis below; a change to any encoding, domain tag,
key layout or genesis rule changes them. If a change is intended, bump the protocol version and
update the pins in the same commit. The first test recomputes one digest with hashlib alone.
"""
import hashlib

from soma_ray.protocol.checkpoint import build_checkpoint, checkpoint_digest
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.execution import sign_transaction, transaction_digest
from soma_ray.protocol.genesis import GenesisConfig, GenesisValidator, genesis, genesis_digest
from soma_ray.protocol.params import localnet
from soma_ray.protocol.state import State
from soma_ray.protocol.types import Account, Transaction, Transfer

VALIDATOR = Keypair.from_secret(b"\x01" * 32)
USER = Keypair.from_secret(b"\x02" * 32)
GENESIS_TIME_MS = 1_700_000_000_000


def _config():
    return GenesisConfig(
        parameters=localnet(),
        validators=[GenesisValidator(VALIDATOR.public_key, "validator-0", 1_000 * 10**9, 0)],
        balances=[(USER.address, 500 * 10**9)],
        timestamp_ms=GENESIS_TIME_MS,
    )


def _transfer():
    return Transaction(USER.address, 0, Transfer(VALIDATOR.address, 500), 1000)


def test_transaction_digest_matches_an_independent_hashlib_computation():
    # msgpack by hand: [sender, 0, ["Transfer", recipient, 500], 1000]
    by_hand = (
        b"\x94" + b"\xc4\x20" + USER.address + b"\x00"
        + b"\x93" + b"\xa8Transfer" + b"\xc4\x20" + VALIDATOR.address + b"\xcd\x01\xf4"
        + b"\xcd\x03\xe8"
    )
    assert encode(_transfer()) == by_hand
    expected = hashlib.blake2b(b"soma/tx/v1" + by_hand, digest_size=32).digest()
    assert transaction_digest(_transfer()) == expected


def test_state_root_of_one_entry_matches_hashlib():
    state = State()
    state.put_account(USER.address, Account(balance=7, nonce=1))
    key, value = b"a" + USER.address, b"\x92\x07\x01"
    entry = b"\x92" + b"\xc4\x21" + key + b"\xc4\x03" + value
    expected = hashlib.blake2b(b"soma/state-entry/v1" + entry, digest_size=32).digest()
    assert state.state_root() == expected


def test_pinned_genesis_and_first_checkpoint():
    config = _config()
    state = genesis(config)
    assert genesis_digest(config).hex() == "ff404f7a86e86c0e0103d2961ab82247e3e1373136e8ca6749a075efd69b335d"
    assert state.state_root().hex() == "0e3b558767ef7182f6483a85236eef3f69834608cbe32415a501551369deeec5"
    entry = encode(sign_transaction(USER, _transfer()))
    checkpoint, effects = build_checkpoint(state, None, [entry], GENESIS_TIME_MS + 1_000)
    assert effects[0].error is None
    assert checkpoint.state_root.hex() == "74079cf009f7378e3225a6fb14e51b4633c2202e5d958bce5a2c183b280c2fbe"
    assert checkpoint.effects_digest.hex() == "b0ffad90a290bc635ab30a458389a1131871e7fea620abe12b01c14fab9a8fbe"
    assert checkpoint_digest(checkpoint).hex() == "528b599243067fe85044059650e8124bf663c9276636ce9477dbe3dc98b0b893"
