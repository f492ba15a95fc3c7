"""Validators: AddValidator, RemoveValidator, SetCommission, and the committee (spec §2, §3.6)."""
from __future__ import annotations

from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.crypto import (
    TOTAL_VOTING_POWER, Committee, CommitteeMember, address_of, verify_signature,
)
from soma_ray.protocol.encoding import DOMAIN_PROOF_OF_POSSESSION
from soma_ray.protocol.errors import (
    AlreadyValidator, CommissionTooHigh, InvalidAmount, InvalidProofOfPossession, LastValidator, NotAValidator,
    NotOwner, ObjectNotFound,
)
from soma_ray.protocol.params import BPS
from soma_ray.protocol.staking import new_pool
from soma_ray.protocol.state import MODEL, STAKING_POOL, VALIDATOR, State
from soma_ray.protocol.types import (
    AddValidator, Model, RemoveValidator, SetCommission, StakingPool, Validator,
)


def proof_of_possession_message(address: bytes) -> bytes:
    """What a new validator signs with its key (under DOMAIN_PROOF_OF_POSSESSION)."""
    return address


def process_add_validator(state: State, tx: AddValidator, ctx: ExecutionContext) -> None:
    if address_of(tx.public_key) != ctx.sender:
        raise InvalidProofOfPossession(reason="the public key is not the sender's")
    message = proof_of_possession_message(ctx.sender)
    if not verify_signature(tx.public_key, DOMAIN_PROOF_OF_POSSESSION, message, tx.proof_of_possession):
        raise InvalidProofOfPossession(reason="the signature does not verify")
    if state.get(VALIDATOR, ctx.sender, Validator) is not None:
        raise AlreadyValidator(address=ctx.sender)
    pool = new_pool(state, ctx, ctx.sender)
    validator = Validator(
        address=ctx.sender, public_key=tx.public_key, network_address=tx.network_address,
        commission_bps=0, staking_pool_id=pool.id, status="Pending",
    )
    state.put(VALIDATOR, ctx.sender, validator)


def require_validator(state: State, address: bytes) -> Validator:
    validator = state.get(VALIDATOR, address, Validator)
    if validator is None:
        raise NotAValidator(address=address)
    return validator


def deactivate_pool(state: State, pool_id: bytes, epoch: int) -> None:
    pool = state.require(STAKING_POOL, pool_id, StakingPool)
    pool.deactivation_epoch = epoch
    state.put(STAKING_POOL, pool_id, pool)


def process_remove_validator(state: State, tx: RemoveValidator, ctx: ExecutionContext) -> None:
    """A pending validator leaves at once; an active one leaves the committee at the epoch change."""
    validator = require_validator(state, ctx.sender)
    if validator.status == "Pending":
        state.delete(VALIDATOR, ctx.sender)
        deactivate_pool(state, validator.staking_pool_id, ctx.epoch)
        return
    remaining = sum(
        1 for v in state.values(VALIDATOR, Validator) if v.status == "Active" and v.address != ctx.sender
    )
    if remaining == 0:
        raise LastValidator(remaining=remaining)
    validator.status = "Leaving"
    state.put(VALIDATOR, ctx.sender, validator)


def require_commission_bps(bps: int) -> None:
    if bps < 0:
        raise InvalidAmount(amount=bps)
    if bps > BPS:
        raise CommissionTooHigh(bps=bps, max=BPS)


def process_set_commission(state: State, tx: SetCommission, ctx: ExecutionContext) -> None:
    """Commission of the sender's validator or of a model it owns, from the next epoch."""
    require_commission_bps(tx.bps)
    validator = state.get(VALIDATOR, tx.target, Validator)
    if validator is not None:
        if tx.target != ctx.sender:
            raise NotOwner(owner=validator.address, sender=ctx.sender)
        validator.next_epoch_commission_bps = tx.bps
        state.put(VALIDATOR, tx.target, validator)
        return
    model = state.get(MODEL, tx.target, Model)
    if model is None:
        raise ObjectNotFound(kind="validator or model", id=tx.target)
    if model.owner != ctx.sender:
        raise NotOwner(owner=model.owner, sender=ctx.sender)
    model.next_epoch_commission_bps = tx.bps
    state.put(MODEL, model.id, model)


def voting_powers(stakes: list[int]) -> list[int]:
    """Stake-proportional powers summing to exactly 10000 (largest remainder, ties by position)."""
    total = sum(stakes)
    if total == 0:
        stakes, total = [1] * len(stakes), len(stakes)
    powers = [s * TOTAL_VOTING_POWER // total for s in stakes]
    remainders = [s * TOTAL_VOTING_POWER % total for s in stakes]
    by_remainder = sorted(range(len(stakes)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[: TOTAL_VOTING_POWER - sum(powers)]:
        powers[i] += 1
    return powers


def update_validator_set(state: State, epoch: int) -> Committee:
    """Step 6: joins, removals, commission changes; the new committee ordered by address."""
    members: list[Validator] = []
    for validator in list(state.values(VALIDATOR, Validator)):
        if validator.status == "Leaving":
            state.delete(VALIDATOR, validator.address)
            deactivate_pool(state, validator.staking_pool_id, epoch)
            continue
        if validator.next_epoch_commission_bps is not None:
            validator.commission_bps = validator.next_epoch_commission_bps
            validator.next_epoch_commission_bps = None
        pool = state.require(STAKING_POOL, validator.staking_pool_id, StakingPool)
        if validator.status == "Pending" and pool.soma_balance > 0:
            validator.status = "Active"
        state.put(VALIDATOR, validator.address, validator)
        if validator.status == "Active":
            members.append(validator)
    stakes = [state.require(STAKING_POOL, v.staking_pool_id, StakingPool).soma_balance for v in members]
    powers = voting_powers(stakes)
    return Committee(
        epoch=epoch,
        members=[CommitteeMember(v.address, v.public_key, p) for v, p in zip(members, powers)],
    )
