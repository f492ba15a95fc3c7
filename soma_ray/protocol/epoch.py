"""ChangeEpoch, the system transaction that ends an epoch, in exactly the order of spec §3.

1. expire targets and closed challenges          (targets/submissions: `expire_targets`)
2. emission E (step decay), at most the emission pool's balance
3. validator rewards: validator_share of E (taken from the emission pool) + the epoch's fees,
   by voting power, with commission
4. difficulty adjustment                         (targets/submissions: `adjust_difficulty`)
5. models (missed reveals, dropped updates, report quorums); pools activate stake, record rates
6. validator set and voting power
7. target budget (1 − validator_share) × E and target generation (`generate_epoch_targets`);
   the budget is an allowance: it stays in the emission pool until a target is funded
8. pruning: targets Settled in an epoch ≤ new epoch − 1 − `settled_retention_epochs` are removed
   with their paid-out submissions (`prune_settled_targets`); no funds move. Not in the spec's
   list (it says only "Settled (then removable)"): last, so every earlier step still sees them.

Steps 1–4 see the ending epoch in `SystemState.epoch`; the epoch number advances before step 5.
"""
from __future__ import annotations

from soma_ray.protocol.accounts import return_to_emission_pool, take_from_emission_pool
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.crypto import TOTAL_VOTING_POWER, Committee
from soma_ray.protocol.encoding import DOMAIN_TX, digest
from soma_ray.protocol.errors import (
    EpochChangeNotDue, EpochChangeTimestampMismatch, EpochMismatch, TimestampRegression,
)
from soma_ray.protocol.models import process_model_epoch
from soma_ray.protocol.params import BPS
from soma_ray.protocol.staking import activate_pending_stake, pay_pending_withdrawals, stake_pending
from soma_ray.protocol.state import STAKING_POOL, VALIDATOR, State
from soma_ray.protocol.targets import (
    adjust_difficulty, expire_targets, generate_epoch_targets, prune_settled_targets,
)
from soma_ray.protocol.types import ChangeEpoch, StakingPool, TransactionEffects, Validator
from soma_ray.protocol.validators import update_validator_set

SYSTEM_SENDER = bytes(32)


def next_emission(state: State) -> int:
    """Step 2: this epoch's emission E; it drops by emission_decrease_bps every period."""
    system = state.system()
    pool, params = system.emission_pool, system.parameters
    emission = min(pool.emission_per_epoch, pool.balance)
    pool.epochs_in_period += 1
    if pool.epochs_in_period >= params.emission_period_epochs:
        pool.emission_per_epoch -= pool.emission_per_epoch * params.emission_decrease_bps // BPS
        pool.epochs_in_period = 0
    state.put_system(system)
    return emission


def validator_part(emission: int, params) -> int:
    return emission * params.validator_share_bps // BPS


def pay_validator_rewards(state: State, committee: Committee, reward: int, ctx: ExecutionContext) -> None:
    """Step 3: `reward` split by voting power; commission becomes the validator's new stake, the
    rest raises its pool's balance (compounding for delegators). Rounding dust returns to the
    emission pool."""
    paid = 0
    for member in committee.members:
        share = reward * member.voting_power // TOTAL_VOTING_POWER
        validator = state.get(VALIDATOR, member.address, Validator)
        if share == 0 or validator is None:
            continue
        commission = share * validator.commission_bps // BPS
        pool = state.require(STAKING_POOL, validator.staking_pool_id, StakingPool)
        pool.soma_balance += share - commission
        state.put(STAKING_POOL, pool.id, pool)
        if commission:
            stake_pending(state, ctx, pool, validator.address, commission, ctx.epoch)
        paid += share
    return_to_emission_pool(state, reward - paid)


def process_pools(state: State, epoch: int) -> None:
    """Step 5 for pools, after the model slashes: pay queued withdrawals, then activate pending
    stake at the new epoch's rate."""
    for pool in list(state.values(STAKING_POOL, StakingPool)):
        pay_pending_withdrawals(state, pool)
        activate_pending_stake(pool, epoch)
        state.put(STAKING_POOL, pool.id, pool)


def collect_validator_reward(state: State, emission: int) -> int:
    """Validator share of E out of the emission pool plus the epoch's fees; fees reset."""
    take_from_emission_pool(state, validator_part(emission, state.system().parameters))
    system = state.system()
    fees, system.fees_this_epoch = system.fees_this_epoch, 0
    state.put_system(system)
    return validator_part(emission, system.parameters) + fees


def start_epoch(state: State, epoch: int, timestamp_ms: int) -> None:
    system = state.system()
    system.epoch = epoch
    system.epoch_start_timestamp_ms = timestamp_ms
    state.put_system(system)


def epoch_end_ms(epoch_start_ms: int, epoch_duration_ms: int) -> int:
    """The consensus time at which an epoch is over: the one rule behind ChangeEpoch's check
    and the epoch clock (soma_ray.epoch_schedule), which knows only these two numbers."""
    return epoch_start_ms + epoch_duration_ms


def current_epoch_end_ms(state: State) -> int:
    system = state.system()
    return epoch_end_ms(system.epoch_start_timestamp_ms, system.parameters.epoch_duration_ms)


def require_change_allowed(state: State, epoch: int, timestamp_ms: int, ctx: ExecutionContext) -> None:
    """ChangeEpoch follows the consensus clock: it carries its checkpoint's timestamp and comes
    only once the epoch is over (localnet may allow it earlier)."""
    system = state.system()
    if epoch != system.epoch + 1:
        raise EpochMismatch(expected=system.epoch + 1, got=epoch)
    if timestamp_ms != ctx.timestamp_ms:
        raise EpochChangeTimestampMismatch(checkpoint_ms=ctx.timestamp_ms, got_ms=timestamp_ms)
    if timestamp_ms < system.epoch_start_timestamp_ms:
        raise TimestampRegression(previous_ms=system.epoch_start_timestamp_ms, got_ms=timestamp_ms)
    # Due once consensus time has reached the current epoch's end (spec §3).
    due_at = epoch_end_ms(system.epoch_start_timestamp_ms, system.parameters.epoch_duration_ms)
    if not system.parameters.allow_early_epoch_change and timestamp_ms < due_at:
        raise EpochChangeNotDue(due_at_ms=due_at, timestamp_ms=timestamp_ms)


def change_epoch(state: State, epoch: int, timestamp_ms: int, ctx: ExecutionContext) -> TransactionEffects:
    """Execute ChangeEpoch{epoch, timestamp_ms} in a checkpoint at `ctx.timestamp_ms`; raises
    EpochMismatch, EpochChangeTimestampMismatch, TimestampRegression or EpochChangeNotDue."""
    require_change_allowed(state, epoch, timestamp_ms, ctx)
    system = state.system()
    tx_digest = digest(DOMAIN_TX, ChangeEpoch(epoch=epoch, timestamp_ms=timestamp_ms))
    epoch_ctx = ExecutionContext(system.parameters, epoch, timestamp_ms, ctx.checkpoint_seed, SYSTEM_SENDER, tx_digest)
    ending = system.committee

    expire_targets(state, epoch_ctx)
    emission = next_emission(state)
    pay_validator_rewards(state, ending, collect_validator_reward(state, emission), epoch_ctx)
    adjust_difficulty(state)
    start_epoch(state, epoch, timestamp_ms)
    process_model_epoch(state, epoch, ending)
    process_pools(state, epoch)
    system = state.system()
    system.committee = update_validator_set(state, epoch)
    state.put_system(system)
    generate_epoch_targets(state, epoch_ctx, emission)
    prune_settled_targets(state, epoch_ctx)
    return TransactionEffects(
        transaction_digest=tx_digest, sender=SYSTEM_SENDER, nonce=epoch, fee_charged=0, created=epoch_ctx.created
    )
