"""The supply invariant of spec §3: every shannon is in exactly one place."""
from __future__ import annotations

from soma_ray.protocol.state import ACCOUNT, CHALLENGE, STAKING_POOL, SUBMISSION, TARGET, State
from soma_ray.protocol.types import Account, Challenge, StakingPool, Submission, Target


def total_supply(state: State) -> int:
    """Σ balances + Σ pool balances and pending stake + Σ locked bonds + Σ target reward pools
    + emission pool + fees collected this epoch (paid to validators at the epoch change)."""
    system = state.system()
    return (
        sum(a.balance for a in state.values(ACCOUNT, Account))
        + sum(p.soma_balance + p.pending_stake for p in state.values(STAKING_POOL, StakingPool))
        + sum(s.bond for s in state.values(SUBMISSION, Submission))
        + sum(c.bond for c in state.values(CHALLENGE, Challenge))
        + sum(t.reward_pool for t in state.values(TARGET, Target))
        + system.emission_pool.balance
        + system.fees_this_epoch
    )
