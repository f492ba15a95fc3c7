"""Models: create → commit → reveal, stake, deactivate, reports (spec §2) and their epoch step (§3.5).

Commitments are `model_commitment(bytes)` = blake2b(DOMAIN_MODEL_COMMITMENT || bytes) of the
decryption key and of the embedding's little-endian float32 bytes.
"""
from __future__ import annotations

from typing import NamedTuple

from soma_ray.protocol.accounts import debit, return_to_emission_pool
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.crypto import Committee
from soma_ray.protocol.encoding import DOMAIN_MODEL_COMMITMENT, digest
from soma_ray.protocol.errors import (
    AlreadyReported, ArchitectureMismatch, CommitmentMismatch, DataTooLarge,
    InvalidModelStatus, ModelRevealEpochMismatch, NotAValidator, NotOwner, NotReported,
    StakeBelowMinimum,
)
from soma_ray.protocol.staking import new_pool, slash_pool, stake_active_now
from soma_ray.protocol.state import MODEL, STAKING_POOL, State
from soma_ray.protocol.targets import ZeroEmbedding, as_embedding
from soma_ray.protocol.types import (
    CommitModel, CreateModel, DeactivateModel, Model, PendingUpdate, ReportModel, RevealModel,
    StakingPool, UndoReportModel,
)
from soma_ray.protocol.validators import require_commission_bps


def model_commitment(data: bytes) -> bytes:
    return digest(DOMAIN_MODEL_COMMITMENT, bytes(data))


def require_model_owner(model: Model, sender: bytes) -> None:
    """Only a model's owner commits, reveals, and deactivates it (NotOwner)."""
    if model.owner != sender:
        raise NotOwner(owner=model.owner, sender=sender)


def require_owned_model(state: State, model_id: bytes, sender: bytes) -> Model:
    model = state.require(MODEL, model_id, Model)
    require_model_owner(model, sender)
    return model


# --- The model's epochs and statuses: the rules the commands check before they send ------------


class AwaitedReveal(NamedTuple):
    """The commit a model awaits the reveal of: its first weights, or an update."""

    commit_epoch: int
    key_commitment: bytes
    embedding_commitment: bytes


def reveal_epoch(commit_epoch: int) -> int:
    """The only epoch the reveal of a commit made in `commit_epoch` is accepted in: the next."""
    return commit_epoch + 1


def reveal_allowed(commit_epoch: int, epoch: int) -> bool:
    """Whether a commit made in `commit_epoch` may be revealed in `epoch`."""
    return epoch == reveal_epoch(commit_epoch)


def reveal_missed(commit_epoch: int, epoch: int) -> bool:
    """Whether the reveal of a commit made in `commit_epoch` can no longer come in `epoch` (its
    epoch has ended): a Pending model is slashed, an unrevealed update dropped."""
    return epoch > reveal_epoch(commit_epoch)


def awaited_commit(model: Model) -> AwaitedReveal | None:
    """The commit `model` awaits the reveal of: a Pending model's first weights, or an Active
    one's pending update; None for any other model."""
    if model.status == "Pending":
        return AwaitedReveal(model.commit_epoch, model.key_commitment, model.embedding_commitment)
    update = model.pending_update
    if model.status == "Active" and update is not None:
        return AwaitedReveal(update.commit_epoch, update.key_commitment, update.embedding_commitment)
    return None


def awaited_reveal(model: Model) -> AwaitedReveal:
    """`awaited_commit`, or InvalidModelStatus when the model awaits no reveal."""
    awaited = awaited_commit(model)
    if awaited is None:
        raise InvalidModelStatus(status=model.status, expected="Pending, or Active with a pending update")
    return awaited


def require_commit_allowed(model: Model) -> None:
    """A commit is taken by a Created model (its first weights), or an Active one without a
    pending update (an update); InvalidModelStatus otherwise."""
    if not (model.status == "Created" or (model.status == "Active" and model.pending_update is None)):
        status = "Active with a pending update" if model.status == "Active" else model.status
        raise InvalidModelStatus(status=status, expected="Created, or Active without a pending update")


def require_deactivatable(model: Model) -> None:
    """A Created or Active model may be deactivated; a Pending one must reveal or be slashed
    (deactivating would dodge the slash)."""
    if model.status not in ("Created", "Active"):
        raise InvalidModelStatus(status=model.status, expected="Created or Active")


def validate_embedding(embedding: bytes, dim: int) -> None:
    """Right dimension, finite, and not all zero (a zero vector has no cosine distance)."""
    array = as_embedding(embedding, dim)
    if not array.any():
        raise ZeroEmbedding()


def process_create_model(state: State, tx: CreateModel, ctx: ExecutionContext) -> None:
    params = ctx.params
    if tx.architecture_version != params.model_architecture_version:
        raise ArchitectureMismatch(expected=params.model_architecture_version, got=tx.architecture_version)
    if tx.stake < params.model_min_stake:
        raise StakeBelowMinimum(required=params.model_min_stake, provided=tx.stake)
    require_commission_bps(tx.commission_bps)
    debit(state, ctx.sender, tx.stake)
    model_id = ctx.new_id()
    pool = new_pool(state, ctx, model_id)
    stake_active_now(state, ctx, pool, ctx.sender, tx.stake)
    model = Model(
        id=model_id, owner=ctx.sender, architecture_version=tx.architecture_version,
        status="Created", commission_bps=tx.commission_bps, staking_pool_id=pool.id,
    )
    state.put(MODEL, model_id, model)


def process_commit_model(state: State, tx: CommitModel, ctx: ExecutionContext) -> None:
    """Created → Pending (first weights), or Active → pending_update; revealed next epoch."""
    model = require_owned_model(state, tx.model_id, ctx.sender)
    if tx.weights_manifest.size > ctx.params.model_max_weight_size:
        raise DataTooLarge(size=tx.weights_manifest.size, max=ctx.params.model_max_weight_size)
    require_commit_allowed(model)
    if model.status == "Created":
        model.status = "Pending"
        model.weights_manifest = tx.weights_manifest
        model.weights_commitment = tx.weights_commitment
        model.embedding_commitment = tx.embedding_commitment
        model.key_commitment = tx.key_commitment
        model.commit_epoch = ctx.epoch
    else:  # Active without a pending update
        model.pending_update = PendingUpdate(
            tx.weights_manifest, tx.weights_commitment, tx.embedding_commitment, tx.key_commitment, ctx.epoch
        )
    state.put(MODEL, model.id, model)


def process_reveal_model(state: State, tx: RevealModel, ctx: ExecutionContext) -> None:
    """In exactly its `reveal_epoch`: commitments match, embedding valid → Active / updated."""
    model = require_owned_model(state, tx.model_id, ctx.sender)
    update = model.pending_update
    awaited = awaited_reveal(model)
    if not reveal_allowed(awaited.commit_epoch, ctx.epoch):
        raise ModelRevealEpochMismatch(commit_epoch=awaited.commit_epoch, current_epoch=ctx.epoch)
    validate_embedding(tx.embedding, ctx.params.embedding_dim)
    if model_commitment(tx.decryption_key) != awaited.key_commitment:
        raise CommitmentMismatch(field="decryption_key")
    if model_commitment(tx.embedding) != awaited.embedding_commitment:
        raise CommitmentMismatch(field="embedding")
    if update is not None:
        model.weights_manifest = update.weights_manifest
        model.weights_commitment = update.weights_commitment
        model.embedding_commitment = update.embedding_commitment
        model.key_commitment = update.key_commitment
        model.commit_epoch = update.commit_epoch
        model.pending_update = None
    model.status = "Active"
    model.decryption_key = tx.decryption_key
    model.embedding = tx.embedding
    state.put(MODEL, model.id, model)


def deactivate_model(state: State, model: Model, epoch: int) -> None:
    """Inactive from now; reports already made are still tallied at the next epoch change."""
    model.status = "Inactive"
    model.pending_update = None
    pool = state.require(STAKING_POOL, model.staking_pool_id, StakingPool)
    pool.deactivation_epoch = epoch
    state.put(STAKING_POOL, pool.id, pool)
    state.put(MODEL, model.id, model)


def process_deactivate_model(state: State, tx: DeactivateModel, ctx: ExecutionContext) -> None:
    model = require_owned_model(state, tx.model_id, ctx.sender)
    require_deactivatable(model)
    deactivate_model(state, model, ctx.epoch)


def require_committee_member(state: State, address: bytes) -> None:
    if all(member.address != address for member in state.system().committee.members):
        raise NotAValidator(address=address)


def process_report_model(state: State, tx: ReportModel, ctx: ExecutionContext) -> None:
    require_committee_member(state, ctx.sender)
    model = state.require(MODEL, tx.model_id, Model)
    if model.status != "Active":
        raise InvalidModelStatus(status=model.status, expected="Active")
    if ctx.sender in model.reporters:
        raise AlreadyReported(reporter=ctx.sender)
    model.reporters = sorted([*model.reporters, ctx.sender])
    state.put(MODEL, model.id, model)


def process_undo_report_model(state: State, tx: UndoReportModel, ctx: ExecutionContext) -> None:
    require_committee_member(state, ctx.sender)
    model = state.require(MODEL, tx.model_id, Model)
    if ctx.sender not in model.reporters:
        raise NotReported(reporter=ctx.sender)
    model.reporters = [r for r in model.reporters if r != ctx.sender]
    state.put(MODEL, model.id, model)


def slash_and_deactivate(state: State, model: Model, bps: int, epoch: int) -> None:
    pool = state.require(STAKING_POOL, model.staking_pool_id, StakingPool)
    slashed = slash_pool(pool, bps)
    state.put(STAKING_POOL, pool.id, pool)
    return_to_emission_pool(state, slashed)
    if model.status == "Inactive":
        state.put(MODEL, model.id, model)
    else:
        deactivate_model(state, model, epoch)


def process_model_epoch(state: State, new_epoch: int, committee: Committee) -> None:
    """Step 5 for models: missed reveals slashed, unrevealed updates dropped, report quorums
    slashed (also of models deactivated during the ending epoch), commission changes applied.
    `committee` is the ending epoch's."""
    params = state.system().parameters
    for model in list(state.values(MODEL, Model)):
        if model.status == "Pending" and reveal_missed(model.commit_epoch, new_epoch):
            slash_and_deactivate(state, model, params.model_reveal_slash_bps, new_epoch)
            continue
        if committee.power_of(model.reporters) >= params.quorum:
            model.reporters = []
            slash_and_deactivate(state, model, params.model_tally_slash_bps, new_epoch)
            continue
        if model.status == "Inactive" and model.reporters:
            model.reporters = []  # reports on a deactivated model are tallied once only
            state.put(MODEL, model.id, model)
            continue
        changed = False
        if model.pending_update is not None and reveal_missed(model.pending_update.commit_epoch, new_epoch):
            model.pending_update = None
            changed = True
        if model.next_epoch_commission_bps is not None:
            model.commission_bps = model.next_epoch_commission_bps
            model.next_epoch_commission_bps = None
            changed = True
        if changed:
            state.put(MODEL, model.id, model)
