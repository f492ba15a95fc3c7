"""The validator store keeps exactly what was committed, rejects bad input without losing
anything, and survives a SIGKILL mid-write."""

import gc
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soma_ray.storage import (
    CheckpointNotFound,
    ConflictingCheckpoint,
    GenesisMismatch,
    InvalidStateKey,
    NotInitialized,
    SequenceGap,
    StoreFull,
    StoreInUse,
    ValidatorStore,
)

GENESIS = b"\x01" * 32
OTHER_GENESIS = b"\x02" * 32
GENESIS_STATE = [(b"acct/alice", b"100"), (b"acct/bob", b"50"), (b"system", b"epoch0")]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def state_value(store: ValidatorStore, key: bytes) -> bytes | None:
    """One key's committed value, through the read a validator loads its state with."""
    return dict(store.state_items()).get(key)


def lose_disk(store: ValidatorStore) -> ValidatorStore:
    """What a validator that lost its disk finds: its directory gone, a store opened anew there."""
    store.close()
    shutil.rmtree(store.path)
    return ValidatorStore(store.path)


@pytest.fixture
def store(tmp_path):
    with ValidatorStore(tmp_path / "v0") as s:
        s.write_genesis(GENESIS, GENESIS_STATE)
        yield s


def test_genesis_state_survives_reopen(tmp_path):
    path = tmp_path / "v0"
    with ValidatorStore(path) as s:
        assert s.genesis_digest() is None
        assert s.write_genesis(GENESIS, reversed(GENESIS_STATE)) is True
    with ValidatorStore(path, genesis_digest=GENESIS) as s:
        assert s.genesis_digest() == GENESIS
        assert s.state_items() == sorted(GENESIS_STATE)
        assert s.latest_sequence() is None and s.next_sequence() == 0
        # A restarting validator may write its genesis again: nothing changes.
        assert s.write_genesis(GENESIS, [(b"acct/alice", b"0")]) is False
        assert state_value(s, b"acct/alice") == b"100"


def test_store_of_another_genesis_is_refused(tmp_path, store):
    with pytest.raises(GenesisMismatch) as err:
        store.write_genesis(OTHER_GENESIS, [(b"x", b"y")])
    assert (err.value.expected, err.value.found) == (OTHER_GENESIS, GENESIS)
    assert store.state_items() == sorted(GENESIS_STATE)
    store.close()
    with pytest.raises(GenesisMismatch):
        ValidatorStore(tmp_path / "v0", genesis_digest=OTHER_GENESIS)
    # The refused open released the directory.
    with ValidatorStore(tmp_path / "v0", genesis_digest=GENESIS) as s:
        assert s.state_items() == sorted(GENESIS_STATE)


def test_checkpoint_before_genesis_is_refused(tmp_path):
    with ValidatorStore(tmp_path / "v0") as s:
        with pytest.raises(NotInitialized):
            s.commit_checkpoint(0, b"cp0", b"cert0", [(b"k", b"v")])
        assert s.state_items() == [] and s.latest_sequence() is None


def test_commit_applies_changes_and_keeps_checkpoint_and_certificate(tmp_path, store):
    assert store.commit_checkpoint(
        0, b"cp0", b"cert0", [(b"acct/alice", b"90"), (b"acct/carol", b"10"), (b"system", None)],
        epoch=0,
    )
    store.commit_checkpoint(1, b"cp1", b"cert1", [(b"acct/bob", None)], epoch=1)
    expected = [(b"acct/alice", b"90"), (b"acct/carol", b"10")]
    assert store.state_items() == expected
    assert store.get_checkpoint(0) == (b"cp0", b"cert0")
    assert store.latest_sequence() == 1 and store.epoch() == 1
    store.close()
    with ValidatorStore(tmp_path / "v0") as s:
        assert s.state_items() == expected
        assert s.get_checkpoint(1) == (b"cp1", b"cert1")
        assert s.latest_sequence() == 1 and s.epoch() == 1


def test_sequence_gap_is_refused_and_writes_nothing(store):
    store.commit_checkpoint(0, b"cp0", b"cert0", [])
    with pytest.raises(SequenceGap) as err:
        store.commit_checkpoint(2, b"cp2", b"cert2", [(b"acct/alice", b"0")])
    assert (err.value.expected, err.value.got) == (1, 2)
    with pytest.raises(SequenceGap):
        store.commit_checkpoint(-1, b"cp", b"cert", [])
    assert store.latest_sequence() == 0
    assert state_value(store, b"acct/alice") == b"100"
    with pytest.raises(CheckpointNotFound):
        store.get_checkpoint(2)


def test_same_checkpoint_twice_is_a_no_op_and_keeps_first_certificate(store):
    store.commit_checkpoint(0, b"cp0", b"cert-a", [(b"acct/alice", b"1")])
    assert store.commit_checkpoint(0, b"cp0", b"cert-b", [(b"acct/alice", b"2")]) is False
    assert store.get_checkpoint(0) == (b"cp0", b"cert-a")
    assert state_value(store, b"acct/alice") == b"1"


def test_different_checkpoint_at_committed_sequence_is_refused(store):
    store.commit_checkpoint(0, b"cp0", b"cert0", [(b"acct/alice", b"1")])
    with pytest.raises(ConflictingCheckpoint) as err:
        store.commit_checkpoint(0, b"forked-cp0", b"cert0", [(b"acct/alice", b"666")])
    assert (err.value.sequence, err.value.stored_len, err.value.offered_len) == (0, 3, 10)
    assert store.get_checkpoint(0) == (b"cp0", b"cert0")
    assert state_value(store, b"acct/alice") == b"1"


def test_missing_checkpoint_error_names_the_latest(store):
    store.commit_checkpoint(0, b"cp0", b"cert0", [])
    with pytest.raises(CheckpointNotFound) as err:
        store.get_checkpoint(5)
    assert (err.value.sequence, err.value.latest) == (5, 0)
    assert isinstance(err.value, KeyError)
    assert "sequence 5" in str(err.value)


@pytest.mark.parametrize("key", [b"", b"k" * 600])
def test_invalid_state_key_is_refused_and_nothing_is_written(store, key):
    with pytest.raises(InvalidStateKey) as err:
        store.commit_checkpoint(0, b"cp0", b"cert0", [(b"acct/alice", b"0"), (key, b"v")])
    assert err.value.key_len == len(key) and err.value.max_len == 511
    assert store.latest_sequence() is None
    assert state_value(store, b"acct/alice") == b"100"


def test_catch_up_replays_served_range_into_an_empty_store(tmp_path, store):
    for seq in range(6):
        store.commit_checkpoint(seq, b"cp%d" % seq, b"cert%d" % seq, [(b"n/%d" % seq, b"x")])
    served = store.checkpoints(2, 4)
    assert [s for s, _, _ in served] == [2, 3, 4]
    assert served[0] == (2, b"cp2", b"cert2")
    assert store.checkpoints(4, 100)[-1][0] == 5
    assert store.checkpoints(7, 9) == [] and store.checkpoints(3, 2) == []

    with ValidatorStore(tmp_path / "v1", genesis_digest=GENESIS) as peer:
        peer.write_genesis(GENESIS, GENESIS_STATE)
        for seq, cp, cert in store.checkpoints(0, store.latest_sequence()):
            peer.commit_checkpoint(seq, cp, cert, [(b"n/%d" % seq, b"x")])
        assert peer.state_items() == store.state_items()
        assert peer.checkpoints(0, 10) == store.checkpoints(0, 10)


def test_full_map_grows_and_keeps_everything(tmp_path):
    path = tmp_path / "v0"
    with ValidatorStore(path, map_size=64 << 10, durable=False) as s:
        s.write_genesis(GENESIS, [])
        big = [(b"blob/%04d" % i, bytes([i % 256]) * 1000) for i in range(1000)]
        s.commit_checkpoint(0, b"cp0", b"cert0", big)
        assert s.map_size() >= 1 << 20
    with ValidatorStore(path) as s:
        assert s.state_items() == big


def test_store_full_beyond_max_map_size_keeps_earlier_commits(tmp_path):
    with ValidatorStore(tmp_path / "v0", map_size=64 << 10, max_map_size=256 << 10,
                        durable=False) as s:
        s.write_genesis(GENESIS, [(b"a", b"1")])
        s.commit_checkpoint(0, b"cp0", b"cert0", [(b"a", b"2")])
        big = [(b"blob/%04d" % i, b"x" * 1000) for i in range(1000)]
        with pytest.raises(StoreFull) as err:
            s.commit_checkpoint(1, b"cp1", b"cert1", big)
        assert (err.value.map_size, err.value.max_map_size) == (256 << 10, 256 << 10)
        assert s.latest_sequence() == 0 and s.state_items() == [(b"a", b"2")]
        s.commit_checkpoint(1, b"cp1", b"cert1", [(b"a", b"3")])
        assert state_value(s, b"a") == b"3"


def test_safety_state_survives_reopen(tmp_path, store):
    assert store.safety_state() is None
    store.put_safety_state(b"locked-round-7")
    store.put_safety_state(b"locked-round-8")
    store.close()
    with ValidatorStore(tmp_path / "v0") as s:
        assert s.safety_state() == b"locked-round-8"


def test_second_open_of_same_directory_is_refused(tmp_path, store):
    with pytest.raises(StoreInUse) as err:
        ValidatorStore(tmp_path / "v0")
    assert err.value.path == os.path.realpath(tmp_path / "v0")
    assert store.state_items() == sorted(GENESIS_STATE)


def test_store_dropped_without_close_frees_its_directory(tmp_path):
    s = ValidatorStore(tmp_path / "v0")
    s.write_genesis(GENESIS, GENESIS_STATE)
    del s
    gc.collect()
    with ValidatorStore(tmp_path / "v0") as again:
        assert again.genesis_digest() == GENESIS


def test_a_lost_disk_forgets_everything(store):
    store.commit_checkpoint(0, b"cp0", b"cert0", [])
    store.put_safety_state(b"s")
    with lose_disk(store) as store:
        assert store.genesis_digest() is None and store.state_items() == []
        assert store.latest_sequence() is None
        assert store.safety_state() is None and store.checkpoints(0, 10) == []
        assert store.write_genesis(OTHER_GENESIS, [(b"k", b"v")]) is True


# Each checkpoint i writes 200 keys tagged i and sets b"last" = i; kill the writer mid-loop.
_WRITER = textwrap.dedent(
    """
    import sys
    from soma_ray.storage import ValidatorStore
    s = ValidatorStore(sys.argv[1], map_size=1 << 20)
    s.write_genesis(b"g" * 32, [(b"last", b"-")])
    for seq in range(10**6):
        changes = [(b"k%03d" % j, b"%d" % seq * 50) for j in range(200)]
        s.commit_checkpoint(seq, b"cp%d" % seq, b"cert", changes + [(b"last", b"%d" % seq)])
        print(seq, flush=True)
    """
)


def test_sigkill_mid_write_reopens_at_last_full_checkpoint(tmp_path):
    path = str(tmp_path / "v0")
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, path], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        acknowledged = -1
        while acknowledged < 15:
            line = writer.stdout.readline()
            assert line, "writer exited early"
            acknowledged = int(line)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    with ValidatorStore(path, genesis_digest=b"g" * 32) as s:
        latest = s.latest_sequence()
        assert latest >= acknowledged  # what was acknowledged is on disk
        state = dict(s.state_items())
        assert state[b"last"] == b"%d" % latest
        assert set(state.values()) - {b"%d" % latest} == {b"%d" % latest * 50}
        assert len(state) == 201
        assert s.get_checkpoint(latest)[0] == b"cp%d" % latest
        with pytest.raises(CheckpointNotFound):
            s.get_checkpoint(latest + 1)


_changes = st.lists(
    st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), st.none() | st.binary(max_size=8)),
    max_size=6,
)


@settings(max_examples=25, deadline=None)
@given(st.lists(_changes, max_size=6))
def test_reopened_state_equals_changes_applied_in_order(tmp_path_factory, batches):
    path = tmp_path_factory.mktemp("prop")
    model = {b"a": b"genesis"}
    with ValidatorStore(path, durable=False) as s:
        s.write_genesis(GENESIS, model.items())
        for seq, changes in enumerate(batches):
            s.commit_checkpoint(seq, b"cp%d" % seq, b"c", changes)
            for key, value in changes:
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
    with ValidatorStore(path) as s:
        assert s.state_items() == sorted(model.items())
        assert s.next_sequence() == len(batches)


def test_effects_are_kept_with_their_checkpoint_and_absent_when_not_given(tmp_path):
    with ValidatorStore(tmp_path / "db", genesis_digest=GENESIS) as s:
        s.write_genesis(GENESIS, GENESIS_STATE)
        s.commit_checkpoint(0, b"cp0", b"cert0", [], effects=b"fx0")
        s.commit_checkpoint(1, b"cp1", b"cert1", [])  # as a version that kept no effects did
        assert (s.effects(0), s.effects(1), s.effects(2), s.effects(-1)) == (b"fx0", None, None, None)
    with ValidatorStore(tmp_path / "db", genesis_digest=GENESIS) as s:  # durable
        assert s.effects(0) == b"fx0"
        with lose_disk(s) as wiped:
            assert wiped.effects(0) is None
