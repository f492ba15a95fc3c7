"""The blob store's retention rule: which stored blobs the network no longer needs (docs/blobs.md).

The chain names blobs by checksum: a model's weights manifest (and its pending update's), a
revealed submission's `data_hash`. A blob is kept while anything that may still be audited or
scored names it, and for a grace period after it was stored (an upload comes before the
transaction that names it: a miner uploads, then commits and reveals; an owner uploads, then
commits, and reveals an epoch later). The rule, `referenced(...)`:

- the weights (current and pending) of every model that is not Inactive;
- for every target that is not Settled: the weights of each of its models, Inactive ones too
  (an audit of the target re-scores under all of them), and the data of its revealed
  submission. A target settles only after its challenge window and any audit in it are over
  (claimed from fill_epoch + 2, or reverted by a resolved challenge), so no blob an audit may
  still need goes before the audit window ends.

Blobs of Settled targets (and of expired ones, which the chain prunes) and of deactivated
models that no open target names are collected. The store is content-addressed: one blob can
be named by several submissions or models, and it stays while any of them keeps it.

`collectable(stored, keep, grace_s)` is the decision on the store's files; `chain_references`
reads what the rule needs from the chain through any `Transport` (RayTransport in the cluster,
SimTransport in tests). Pure apart from those reads: no Ray, no Serve.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from soma_ray.protocol.encoding import decode
from soma_ray.protocol.state import MODEL, SUBMISSION, TARGET
from soma_ray.protocol.types import Model, Submission, Target
from soma_ray.wire import MAX_PAGE

# Target statuses past every audit: their blobs are no longer kept for them.
DONE = ("Settled",)


def _weights(model: Model | None) -> set[bytes]:
    if model is None:
        return set()
    found = set()
    if model.weights_manifest is not None:
        found.add(bytes(model.weights_manifest.checksum))
    if model.pending_update is not None:
        found.add(bytes(model.pending_update.weights_manifest.checksum))
    return found


def referenced(models: Mapping[bytes, Model], targets: Iterable[Target],
               submissions: Mapping[bytes, Submission]) -> set[bytes]:
    """The checksums the network still needs (the module docstring's rule)."""
    keep: set[bytes] = set()
    for model in models.values():
        if model.status != "Inactive":
            keep |= _weights(model)
    for target in targets:
        if target.status in DONE:
            continue
        for model_id in target.model_ids:
            keep |= _weights(models.get(bytes(model_id)))
        submission = None if target.submission_id is None else submissions.get(bytes(target.submission_id))
        if submission is not None and submission.revealed is not None:
            keep.add(bytes(submission.revealed.data_hash))
    return keep


def collectable(stored: Mapping[bytes, float], keep: set[bytes], grace_s: float) -> list[bytes]:
    """The stored blobs (checksum -> seconds since stored) to remove: named by nothing the
    network keeps, and stored more than `grace_s` ago."""
    return sorted(checksum for checksum, age_s in stored.items() if checksum not in keep and age_s > grace_s)


async def all_ids(chain, tag: bytes) -> list[bytes]:
    ids: list[bytes] = []
    while True:
        page = await chain.object_ids(tag, MAX_PAGE, ids[-1] if ids else None)
        ids += page
        if len(page) < MAX_PAGE:
            return ids


async def _objects(chain, tag: bytes, type_, ids: Iterable[bytes]) -> dict[bytes, object]:
    found = {}
    for ident in ids:
        raw = await chain.get_object(tag + bytes(ident))
        if raw is not None:
            found[bytes(ident)] = decode(raw, type_)
    return found


async def chain_references(chain) -> set[bytes]:
    """`referenced(...)` of the chain's latest state, read through `chain` (a Transport)."""
    models = await _objects(chain, MODEL, Model, await all_ids(chain, MODEL))
    targets = list((await _objects(chain, TARGET, Target, await all_ids(chain, TARGET))).values())
    wanted = [t.submission_id for t in targets if t.status not in DONE and t.submission_id is not None]
    submissions = await _objects(chain, SUBMISSION, Submission, wanted)
    return referenced(models, targets, submissions)
