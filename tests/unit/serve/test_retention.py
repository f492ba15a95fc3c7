"""The blob store's retention (serve/retention.py, BlobStore.stored/remove, BlobHandlers.collect),
no Ray: what the chain still names stays, what it no longer names goes after the grace period,
never a blob an open target (and so an audit) may need."""
import asyncio
import os
import time

from serve import retention
from serve.blobs import BlobHandlers, BlobStore, RetentionPolicy
from soma_ray.protocol.encoding import blake2b256, encode
from soma_ray.protocol.state import MODEL, SUBMISSION, TARGET
from soma_ray.protocol.types import (
    Model, PendingUpdate, RevealedSubmission, Submission, Target, WeightsManifest,
)


def sum_of(name: str) -> bytes:
    return blake2b256(name.encode())


def model(ident: int, status: str = "Active", weights: str | None = None, pending: str | None = None) -> Model:
    manifest = None if weights is None else WeightsManifest(f"http://b/{weights}", sum_of(weights), 10)
    update = None if pending is None else PendingUpdate(
        WeightsManifest(f"http://b/{pending}", sum_of(pending), 10), b"", b"", b"", 0)
    return Model(id=bytes([ident]) * 32, owner=b"\x00" * 32, architecture_version=1, status=status,
                 commission_bps=0, staking_pool_id=b"\x01" * 32, weights_manifest=manifest, pending_update=update)


def target(ident: int, models: list[int], status: str = "Open", submission: int | None = None) -> Target:
    return Target(id=bytes([ident]) * 32, embedding=b"", model_ids=[bytes([m]) * 32 for m in models],
                  distance_threshold=0, reward_pool=0, generation_epoch=0, generation_timestamp_ms=0,
                  status=status, submission_id=None if submission is None else bytes([submission]) * 32)


def submission(ident: int, target_id: int, data: str | None) -> Submission:
    revealed = None if data is None else RevealedSubmission(sum_of(data), 4, "http://b/x", b"\x01" * 32, b"", 0, 0)
    return Submission(id=bytes([ident]) * 32, target_id=bytes([target_id]) * 32, miner=b"\x02" * 32,
                      commitment=b"", bond=0, commit_timestamp_ms=0, commit_epoch=0, revealed=revealed)


MODELS = {m.id: m for m in [
    model(1, weights="w-active", pending="w-update"),
    model(2, "Inactive", weights="w-retired-in-open-target"),
    model(3, "Inactive", weights="w-retired"),
    model(4, weights="w-shared"),
    model(5, weights="w-shared"),  # the same bytes published twice: one blob
]}
TARGETS = [
    target(10, [1, 2], "Filled", submission=20),  # in its audit window
    target(11, [1, 3], "Settled", submission=21),  # past it
    target(12, [3], "Challenged", submission=22),  # an audit runs: even a retired model's weights stay
    target(13, [1], "Settled", submission=23),  # settled, but its data is also another's
    target(14, [1], "Filled", submission=24),
]
SUBMISSIONS = {s.id: s for s in [
    submission(20, 10, "d-filled"), submission(21, 11, "d-settled"), submission(22, 12, "d-challenged"),
    submission(23, 13, "d-twice"), submission(24, 14, "d-twice"),
]}


def test_the_rule_keeps_what_may_still_be_audited_or_scored():
    keep = retention.referenced(MODELS, TARGETS, SUBMISSIONS)
    assert keep == {sum_of(n) for n in ("w-active", "w-update", "w-retired-in-open-target", "w-retired",
                                        "w-shared", "d-filled", "d-challenged", "d-twice")}
    # Once the challenged target settles, the retired model's weights and its data may go.
    settled = [t if t.id != bytes([12]) * 32 else target(12, [3], "Settled", submission=22) for t in TARGETS]
    later = retention.referenced(MODELS, settled, SUBMISSIONS)
    assert sum_of("w-retired") not in later and sum_of("d-challenged") not in later
    assert sum_of("d-settled") not in later


def test_only_unnamed_blobs_past_the_grace_period_are_collectable():
    keep = {sum_of("kept")}
    stored = {sum_of("kept"): 10_000.0, sum_of("old"): 10_000.0, sum_of("fresh"): 5.0}
    assert retention.collectable(stored, keep, grace_s=3600) == [sum_of("old")]
    assert retention.collectable(stored, keep, grace_s=1) == sorted([sum_of("old"), sum_of("fresh")])


class Chain:
    """A chain's objects, read as RayTransport reads them (paged ids, canonical bytes)."""

    def __init__(self, objects: dict[bytes, object]):
        self.objects = {key: encode(value) for key, value in objects.items()}

    async def object_ids(self, tag, limit, after):
        ids = sorted(k[1:] for k in self.objects if k[:1] == tag and (after is None or k[1:] > after))
        return ids[:limit]

    async def get_object(self, key):
        return self.objects.get(bytes(key))


def chain_of(models, targets, submissions) -> Chain:
    objects = {MODEL + m.id: m for m in models.values()}
    objects |= {TARGET + t.id: t for t in targets}
    objects |= {SUBMISSION + s.id: s for s in submissions.values()}
    return Chain(objects)


def test_the_references_read_from_a_chain_page_by_page():
    chain = chain_of(MODELS, TARGETS, SUBMISSIONS)
    assert asyncio.run(retention.chain_references(chain)) == retention.referenced(MODELS, TARGETS, SUBMISSIONS)
    # More ids than a page holds (MAX_PAGE, 1,000): all are read.
    lots = {MODEL + bytes([9]) * 30 + i.to_bytes(2, "big"): model(9) for i in range(2_500)}
    assert len(asyncio.run(retention.all_ids(Chain(lots), MODEL))) == 2_500


def test_collect_removes_only_what_the_chain_no_longer_names_and_a_reupload_renews(tmp_path):
    store = BlobStore(tmp_path)
    names = ["w-active", "w-retired", "d-settled", "d-filled", "d-twice", "never-named", "just-uploaded"]
    for name in names:
        asyncio.run(store.put_bytes(name.encode(), 1 << 20))
    # The blobs are addressed by their content: publish them under the names the fixtures use.
    for name in names:
        os.replace(tmp_path / blake2b256(name.encode()).hex(), tmp_path / sum_of(name).hex())
        os.replace(tmp_path / (blake2b256(name.encode()).hex() + ".chunks"), tmp_path / (sum_of(name).hex() + ".chunks"))
    old = time.time() - 7200
    for name in names[:-1]:
        os.utime(tmp_path / sum_of(name).hex(), (old, old))
    settled = [t if t.id != bytes([12]) * 32 else target(12, [3], "Settled", submission=22) for t in TARGETS]
    handlers = BlobHandlers(store, 1 << 20, 1 << 20, "http://b", chain_of(MODELS, settled, SUBMISSIONS),
                            retention=RetentionPolicy(grace_s=3600))
    removed = asyncio.run(handlers.collect())
    assert sorted(removed) == sorted(sum_of(n).hex() for n in ("w-retired", "d-settled", "never-named"))
    left = set(store.stored())
    assert left == {sum_of(n) for n in ("w-active", "d-filled", "d-twice", "just-uploaded")}
    # A blob stored again after the sweep read its age is not removed.
    assert not store.remove(sum_of("just-uploaded"), stored_before=time.time() - 3600)
    assert handlers.collected == 3
    assert asyncio.run(BlobHandlers(store, 1, 1, "http://b", None).collect()) == []  # no chain, no sweep
