"""Pinned digests of a hand-built genesis and its first checkpoint.

These values were computed once from the genesis below; a change to any encoding, domain tag,
key layout or genesis rule changes them. If a change is intended, bump the protocol version and
update the pins in the same commit. The first test recomputes one digest with hashlib alone.

Pin history: re-pinned when `Parameters.settled_retention_epochs` and `Target.settled_epoch` were
added (pruning of Settled targets). The new code reproduces every previous pin exactly once those
two trailing fields are stripped from the encodings (the genesis digest, hence object ids and
target seeds, included), so nothing else changed. Re-pinned again for protocol version 3,
which that encoding change calls for (the version is in the SystemState: only state roots and
checkpoint digests moved).
"""
import hashlib

import numpy as np

from soma_ray.protocol.checkpoint import build_checkpoint, checkpoint_digest
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import UNDECODABLE, encode
from soma_ray.protocol.errors import MalformedInput
from soma_ray.protocol.execution import sign_transaction, transaction_digest
from soma_ray.protocol.genesis import GenesisConfig, GenesisValidator, genesis, genesis_digest, localnet_config
from soma_ray.protocol.params import localnet
from soma_ray.protocol.state import TARGET, State
from soma_ray.protocol.targets import target_embedding
from soma_ray.protocol.types import Account, ChangeEpoch, Target, Transaction, Transfer

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
    assert transaction_digest(by_hand) == expected  # the already-encoded form, as execute_entry passes it


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
    assert genesis_digest(config).hex() == "01a4639fd588b433183fa18c57dc90afdb5fd90bbebbe05ed532d24d525e379c"
    assert state.state_root().hex() == "c34844909ffd7750b3c2a8fa63200a3da75b44d4fe8e8149b374559ce73cd2e1"
    entry = encode(sign_transaction(USER, _transfer()))
    checkpoint, effects = build_checkpoint(state, None, [entry], GENESIS_TIME_MS + 1_000)
    assert effects[0].error is None
    assert checkpoint.state_root.hex() == "b67e21b0d7b161d1454addb9eda44a5d2684c24fce687cadc10545289d51e845"
    assert checkpoint.effects_digest.hex() == "b0ffad90a290bc635ab30a458389a1131871e7fea620abe12b01c14fab9a8fbe"
    assert checkpoint_digest(checkpoint).hex() == "be1a81a6c4ff741680c89d0d918f226efe79c83b0e1db5cc476ec5ea25d5b2ad"


def test_target_embedding_known_answer():
    # arrgen's normal_array for seed bytes 0..31 (u64 seed 0x0706050403020100): a generator
    # change would change every target, hence every checkpoint digest after genesis.
    vector = target_embedding(bytes(range(32)), 64)
    assert vector.dtype == np.float32
    expected = np.array([1.9571510553359985, -1.3436557054519653, 0.4603723883628845, 0.18171918392181396], np.float32)
    assert vector[:4].tobytes() == expected.tobytes()
    assert hashlib.blake2b(vector.astype("<f4").tobytes(), digest_size=32).hexdigest() == (
        "8f1eb61b82dd2293edf6f68648c15bd8b4e0b66dd0a983c94a8b5221d2ab4852"
    )


def test_undecodable_entries_record_a_fixed_reason():
    # msgspec's own message differs between versions; the hashed effects must not.
    state = genesis(_config())
    entries = [b"\x93\xa8Transfer\x01", b"\xc1", encode([1, 2, 3])]
    _, effects = build_checkpoint(state, None, entries, GENESIS_TIME_MS + 1_000)
    assert [e.error for e in effects] == [MalformedInput(reason=UNDECODABLE).to_struct()] * 3


def test_pinned_genesis_with_models_targets_and_an_epoch_change():
    config = localnet_config(validators=2, models=3, users=1)
    config.timestamp_ms = GENESIS_TIME_MS
    state = genesis(config)
    assert state.state_root().hex() == "7bad72c5885034ce32ba5fb0afbda8e539c6029aa9c0ef2842be52d99d4d927c"
    first = state.require(TARGET, state.ids(TARGET)[0], Target)
    assert hashlib.blake2b(first.embedding, digest_size=32).hexdigest() == "4dd8c04d6adfc6f5e816691ca930732fb2ced1ffd26400c8fad973e603733e27"
    assert [model_id.hex()[:16] for model_id in first.model_ids] == ["38945cd01d0fe5aa", "8318088d41c1bcb4", "069bacc50f8f527c"]
    change = encode(ChangeEpoch(epoch=1, timestamp_ms=GENESIS_TIME_MS + 1_000))
    checkpoint, effects = build_checkpoint(state, None, [change], GENESIS_TIME_MS + 1_000)
    assert effects[0].error is None
    assert checkpoint_digest(checkpoint).hex() == "2261591610ae4eb28ed2631c6ff04ee66992d565ddb5c1d925064853259888d1"
