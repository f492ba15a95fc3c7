"""Exchange-rate staking pools (validators and models), AddStake and WithdrawStake (spec §2, §3).

A pool holds `soma_balance` SOMA backing `pool_token_balance` tokens. Rewards raise
`soma_balance` (so they compound); new stake waits in `pending_stake` until the next epoch
change mints tokens at that epoch's rate. A withdrawal of active stake is queued in
`pending_withdraw` and paid at the next epoch change, after that change's slashes. A `StakedSoma` stores only its principal: its tokens are
principal × tokens/SOMA at the rate recorded for its activation epoch. All integer, rounding
toward the pool, so a pool can always pay every withdrawal.
"""
from __future__ import annotations

import bisect

from soma_ray.protocol.accounts import credit, debit, require_address, require_positive
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.errors import (
    NotOwner, ObjectNotFound, PoolInactive, StakeLocked, StakeTooSmall, WithdrawalPending,
)
from soma_ray.protocol.state import MODEL, STAKED_SOMA, STAKING_POOL, VALIDATOR, State
from soma_ray.protocol.types import (
    AddStake, AddStakeToModel, ExchangeRate, Model, StakedSoma, StakingPool, Validator,
    WithdrawStake,
)


def new_pool(state: State, ctx: ExecutionContext, owner: bytes) -> StakingPool:
    """A fresh pool for a validator (by address) or a model (by id)."""
    pool = StakingPool(id=ctx.new_id(), owner=owner, activation_epoch=ctx.epoch)
    state.put(STAKING_POOL, pool.id, pool)
    return pool


def stake_active_now(state: State, ctx: ExecutionContext, pool: StakingPool, owner: bytes, amount: int) -> bytes:
    """Stake into an empty pool at 1:1, active immediately (genesis and CreateModel)."""
    pool.soma_balance += amount
    pool.pool_token_balance += amount
    pool.exchange_rates = [ExchangeRate(ctx.epoch, pool.soma_balance, pool.pool_token_balance)]
    state.put(STAKING_POOL, pool.id, pool)
    staked = StakedSoma(id=ctx.new_id(), owner=owner, pool_id=pool.id, principal=amount, activation_epoch=ctx.epoch)
    state.put(STAKED_SOMA, staked.id, staked)
    return staked.id


def stake_pending(state: State, ctx: ExecutionContext, pool: StakingPool, owner: bytes, amount: int, activation_epoch: int) -> bytes:
    """Add `amount` (already taken from its payer) as stake activating at `activation_epoch`.
    `pool` is the pool as stored (loaded, or just put, by the caller); it is written back."""
    if pool.deactivation_epoch is not None:
        raise PoolInactive(pool_id=pool.id)
    pool.pending_stake += amount
    state.put(STAKING_POOL, pool.id, pool)
    staked = StakedSoma(id=ctx.new_id(), owner=owner, pool_id=pool.id, principal=amount, activation_epoch=activation_epoch)
    state.put(STAKED_SOMA, staked.id, staked)
    return staked.id


def pool_id_of(state: State, pool_owner: bytes) -> bytes:
    """The pool of a validator (by address) or a model (by id)."""
    validator = state.get(VALIDATOR, pool_owner, Validator)
    if validator is not None:
        return validator.staking_pool_id
    model = state.get(MODEL, pool_owner, Model)
    if model is not None:
        return model.staking_pool_id
    raise ObjectNotFound(kind="validator or model", id=pool_owner)


def rate_at(pool: StakingPool, epoch: int) -> ExchangeRate | None:
    """The latest exchange rate recorded at or before `epoch` (rates are kept in epoch order)."""
    index = bisect.bisect_right([rate.epoch for rate in pool.exchange_rates], epoch)
    return pool.exchange_rates[index - 1] if index else None


def pool_tokens_of(pool: StakingPool, staked: StakedSoma) -> int:
    rate = rate_at(pool, staked.activation_epoch)
    if rate is None or rate.soma_amount == 0 or rate.pool_token_amount == 0:
        return staked.principal
    return staked.principal * rate.pool_token_amount // rate.soma_amount


def tokens_for(pool: StakingPool, amount: int) -> int:
    """The tokens `amount` SOMA mints at the pool's current rate (1:1 while either side is 0)."""
    if pool.soma_balance and pool.pool_token_balance:
        return amount * pool.pool_token_balance // pool.soma_balance
    return amount


def activate_pending_stake(pool: StakingPool, epoch: int) -> None:
    """Record the rate of `epoch`, then mint tokens for pending stake at that rate."""
    minted = tokens_for(pool, pool.pending_stake)
    last = pool.exchange_rates[-1] if pool.exchange_rates else None
    if last is None or (last.soma_amount, last.pool_token_amount) != (pool.soma_balance, pool.pool_token_balance):
        pool.exchange_rates.append(ExchangeRate(epoch, pool.soma_balance, pool.pool_token_balance))
    pool.soma_balance += pool.pending_stake
    pool.pool_token_balance += minted
    pool.pending_stake = 0


def slash_pool(pool: StakingPool, bps: int) -> int:
    """Remove `bps` of the active stake (delegators share the loss); returns the amount."""
    amount = pool.soma_balance * bps // 10_000
    pool.soma_balance -= amount
    return amount


def require_mints_tokens(pool: StakingPool, amount: int) -> None:
    """Refuse a stake that would mint 0 tokens at the pool's rate: it would be lost silently.
    `amount` is positive (require_positive runs first), so only a pool with both balances
    non-zero, hence a defined minimum, can refuse it."""
    if tokens_for(pool, amount) == 0:
        minimum = -(-pool.soma_balance // pool.pool_token_balance)
        raise StakeTooSmall(amount=amount, minimum=minimum)


def stake_activation_epoch(epoch: int) -> int:
    """The epoch stake added in `epoch` becomes active in (earns, and counts): the next; until
    then it is pending, and a withdrawal refunds it at once."""
    return epoch + 1


def stake_is_active(activation_epoch: int, epoch: int) -> bool:
    """Whether stake that activates in `activation_epoch` is active in `epoch`."""
    return activation_epoch <= epoch


def process_add_stake(state: State, tx: AddStake, ctx: ExecutionContext) -> None:
    require_address(tx.pool_owner, "pool_owner")
    require_positive(tx.amount)
    pool = state.require(STAKING_POOL, pool_id_of(state, tx.pool_owner), StakingPool)
    require_mints_tokens(pool, tx.amount)  # StakeTooSmall before stake_pending's PoolInactive
    debit(state, ctx.sender, tx.amount)
    stake_pending(state, ctx, pool, ctx.sender, tx.amount, stake_activation_epoch(ctx.epoch))


def process_add_stake_to_model(state: State, tx: AddStakeToModel, ctx: ExecutionContext) -> None:
    model = state.require(MODEL, tx.model_id, Model)
    process_add_stake(state, AddStake(pool_owner=model.id, amount=tx.amount), ctx)


def require_unlocked(state: State, pool: StakingPool, staked: StakedSoma, epoch: int) -> None:
    """A model owner's stake is locked from CreateModel on (so model_min_stake always backs the
    model's slashes) until the epoch change after deactivation (when reports are tallied)."""
    model = state.get(MODEL, pool.owner, Model)
    if model is None or staked.owner != model.owner:
        return
    if model.status != "Inactive" or epoch <= pool.deactivation_epoch:
        raise StakeLocked(model_id=model.id, status=model.status)


def process_withdraw_stake(state: State, tx: WithdrawStake, ctx: ExecutionContext) -> None:
    """Stake not yet active is refunded now (it earns and risks nothing); active stake is queued
    and paid, principal plus rewards, at the next epoch change (`pay_pending_withdrawals`)."""
    staked = state.require(STAKED_SOMA, tx.staked_id, StakedSoma)
    if staked.owner != ctx.sender:
        raise NotOwner(owner=staked.owner, sender=ctx.sender)
    pool = state.require(STAKING_POOL, staked.pool_id, StakingPool)
    require_unlocked(state, pool, staked, ctx.epoch)
    if staked.id in pool.pending_withdraw:
        raise WithdrawalPending(staked_id=staked.id)
    if not stake_is_active(staked.activation_epoch, ctx.epoch):
        pool.pending_stake -= staked.principal
        state.delete(STAKED_SOMA, staked.id)
        credit(state, ctx.sender, staked.principal)
    else:
        pool.pending_withdraw.append(staked.id)
    state.put(STAKING_POOL, pool.id, pool)


def pay_pending_withdrawals(state: State, pool: StakingPool) -> None:
    """Epoch change, step 5: pay each queued withdrawal at the pool's rate after the slashes."""
    for staked_id in pool.pending_withdraw:
        staked = state.require(STAKED_SOMA, staked_id, StakedSoma)
        tokens = pool_tokens_of(pool, staked)
        payout = tokens * pool.soma_balance // pool.pool_token_balance if pool.pool_token_balance else 0
        pool.soma_balance -= payout
        pool.pool_token_balance -= tokens
        state.delete(STAKED_SOMA, staked.id)
        credit(state, staked.owner, payout)
    pool.pending_withdraw = []
