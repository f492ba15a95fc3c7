"""Equivocation evidence in the validator store: kept durably once per id, in arrival order,
bounded, and a store written before the evidence databases existed still opens."""

import hashlib
import shutil

import lmdb
import pytest

from soma_ray.storage import InvalidEvidence, ValidatorStore

GENESIS = b"\x01" * 32


def evidence_id(record: bytes) -> bytes:
    return hashlib.blake2b(record, digest_size=32).digest()


def add(store: ValidatorStore, record: bytes) -> int | None:
    return store.add_evidence(evidence_id(record), record)


def test_evidence_survives_reopen_in_arrival_order(tmp_path):
    path = tmp_path / "v0"
    with ValidatorStore(path) as s:
        assert s.evidence_count() == 0 and s.evidence() == []
        assert [add(s, b"ev%d" % i) for i in range(5)] == [0, 1, 2, 3, 4]
    with ValidatorStore(path) as s:
        assert s.evidence_count() == 5
        assert s.evidence() == [(i, b"ev%d" % i) for i in range(5)]
        assert s.evidence(from_index=3) == [(3, b"ev3"), (4, b"ev4")]
        assert s.evidence(from_index=1, limit=2) == [(1, b"ev1"), (2, b"ev2")]
        assert s.evidence(from_index=9) == [] and s.evidence(limit=0) == []
        assert add(s, b"ev5") == 5


def test_same_evidence_twice_is_kept_once(tmp_path):
    with ValidatorStore(tmp_path / "v0") as s:
        assert add(s, b"equivocation") == 0
        assert add(s, b"equivocation") is None
        assert s.evidence_count() == 1 and s.evidence() == [(0, b"equivocation")]
    with ValidatorStore(tmp_path / "v0") as s:  # also after a restart
        assert add(s, b"equivocation") is None and s.evidence_count() == 1


def test_oldest_evidence_is_dropped_beyond_max_evidence(tmp_path):
    with ValidatorStore(tmp_path / "v0", max_evidence=3) as s:
        for i in range(5):
            add(s, b"ev%d" % i)
        assert s.evidence_count() == 3
        assert s.evidence() == [(2, b"ev2"), (3, b"ev3"), (4, b"ev4")]
        # Indices keep growing; a dropped record is forgotten, ids and all.
        assert add(s, b"ev0") == 5
        assert s.evidence() == [(3, b"ev3"), (4, b"ev4"), (5, b"ev0")]


@pytest.mark.parametrize("ident, record", [(b"", b"ev"), (b"\x00" * 31, b"ev"),
                                           (b"\x00" * 33, b"ev"), (b"\x00" * 32, b"")])
def test_bad_evidence_is_refused_and_nothing_is_written(tmp_path, ident, record):
    with ValidatorStore(tmp_path / "v0") as s:
        with pytest.raises(InvalidEvidence) as err:
            s.add_evidence(ident, record)
        assert (err.value.id_len, err.value.record_len) == (len(ident), len(record))
        assert s.evidence_count() == 0


def test_a_lost_disk_forgets_evidence(tmp_path):
    with ValidatorStore(tmp_path / "v0") as s:
        add(s, b"ev")
    shutil.rmtree(tmp_path / "v0")  # what a validator that lost its disk finds
    with ValidatorStore(tmp_path / "v0") as s:
        assert s.evidence_count() == 0 and add(s, b"ev") == 0


def test_store_created_with_four_databases_opens_and_gains_evidence(tmp_path):
    path = tmp_path / "v0"
    path.mkdir()
    # What ValidatorStore wrote before it kept evidence.
    env = lmdb.open(str(path), max_dbs=4)
    with env.begin(write=True) as txn:
        state, meta = env.open_db(b"state", txn=txn), env.open_db(b"meta", txn=txn)
        env.open_db(b"checkpoints", txn=txn), env.open_db(b"certificates", txn=txn)
        txn.put(b"acct/alice", b"100", db=state)
        txn.put(b"genesis", GENESIS, db=meta)
    env.close()
    with ValidatorStore(path, genesis_digest=GENESIS) as s:
        assert s.state_items() == [(b"acct/alice", b"100")]
        assert s.evidence_count() == 0 and add(s, b"ev") == 0
    with ValidatorStore(path, genesis_digest=GENESIS) as s:
        assert s.evidence() == [(0, b"ev")]
