"""Balances: debit/credit helpers and the Transfer and Faucet kinds (spec §2)."""
from __future__ import annotations

from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.errors import (
    FaucetDisabled, FaucetLimitExceeded, InsufficientBalance, InvalidAddress, InvalidAmount,
    NotFaucetAuthority,
)
from soma_ray.protocol.state import State
from soma_ray.protocol.types import Faucet, SystemState, Transfer


def require_positive(amount: int) -> None:
    if amount <= 0:
        raise InvalidAmount(amount=amount)


ADDRESS_BYTES = 32


def require_address(value: bytes, field: str) -> None:
    """Coins sent to anything but a 32-byte address could never be spent."""
    if len(value) != ADDRESS_BYTES:
        raise InvalidAddress(field=field, length=len(value))


def debit(state: State, address: bytes, amount: int) -> None:
    account = state.account(address)
    if account.balance < amount:
        raise InsufficientBalance(required=amount, available=account.balance)
    account.balance -= amount
    state.put_account(address, account)


def credit(state: State, address: bytes, amount: int) -> None:
    account = state.account(address)
    account.balance += amount
    state.put_account(address, account)


def take_from_emission_pool(state: State, amount: int) -> None:
    system = state.system()
    if system.emission_pool.balance < amount:
        raise InsufficientBalance(required=amount, available=system.emission_pool.balance)
    system.emission_pool.balance -= amount
    state.put_system(system)


def return_to_emission_pool(state: State, amount: int) -> None:
    """Slashed stake, unspent budgets and expired rewards go back here (spec §2 [D])."""
    system = state.system()
    system.emission_pool.balance += amount
    state.put_system(system)


def process_transfer(state: State, tx: Transfer, ctx: ExecutionContext) -> None:
    require_address(tx.recipient, "recipient")
    require_positive(tx.amount)
    debit(state, ctx.sender, tx.amount)
    credit(state, tx.recipient, tx.amount)


def require_faucet_authority(system: SystemState, sender: bytes) -> None:
    """Only the genesis' faucet authorities send Faucet, and only while the faucet is on."""
    if not system.parameters.faucet_enabled:
        raise FaucetDisabled()
    if bytes(sender) not in system.faucet_authorities:
        raise NotFaucetAuthority(sender=bytes(sender))


def process_faucet(state: State, tx: Faucet, ctx: ExecutionContext) -> None:
    """Mint-free faucet: the coins come out of the emission pool, so supply is conserved. Sent
    by a faucet authority only (anyone else pays the fee and gets NotFaucetAuthority)."""
    require_faucet_authority(state.system(), ctx.sender)
    require_address(tx.recipient, "recipient")
    require_positive(tx.amount)
    if tx.amount > ctx.params.faucet_max_amount:
        raise FaucetLimitExceeded(amount=tx.amount, max=ctx.params.faucet_max_amount)
    take_from_emission_pool(state, tx.amount)
    credit(state, tx.recipient, tx.amount)
