"""Admission and execution of signed transactions (spec §2).

Admission, before ordering, in two parts:
- the envelope (`check_envelope`): size, decoding, canonical bytes, the signature under the
  network's chain id, a nonce not below the account's. Every executor re-checks it on every
  checkpoint entry, since a proposer may include anything;
- the policy (`check_admission_policy`): the fee can be paid (`max_fee ≥ base_fee`, and the
  sender's balance covers base_fee for each of its pooled transactions plus this one), the
  kind's fields are within their bounds (bounds.py), and a Faucet comes from a faucet authority.
  Only a mempool applies it; execution has its own rules for the same things.
`check_admission` is both.

`execute_transaction` runs after ordering: the nonce must be the account's and the fee payable,
or the transaction cannot execute at all (it raises, changing nothing: checkpoint.py keeps such
an entry out of every checkpoint); then the nonce increments and `base_fee` is charged whatever
happens, and the kind (its field bounds, then its `process_*` function) runs inside a savepoint,
so a typed error reverts everything but the fee and the nonce.
"""
from __future__ import annotations

from typing import Callable, Container

from soma_ray.protocol import accounts, models, staking, submissions, validators
from soma_ray.protocol.bounds import check_kind_fields
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.crypto import address_of, verify_signature
from soma_ray.protocol.encoding import DOMAIN_TX, digest, decode, encode, signing_domain
from soma_ray.protocol.errors import (
    BadNonce, FeeBelowBaseFee, InsufficientBalanceForFees, InsufficientFee, InternalError,
    InvalidSignature, NonCanonicalEncoding, ProtocolError, TransactionTooLarge,
)
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.state import State
from soma_ray.protocol import types as t

# Fixed text, never the exception's: effects are hashed, so they must not depend on a library.
INTERNAL_ERROR_REASON = "unexpected failure while executing the entry"


def recorded_error(error: BaseException) -> ProtocolError:
    """The error an entry records for `error`, raised while executing it: a ProtocolError as it
    is; any other Exception (a bug's) the fixed InternalError, so that one kind's bug fails the
    entry alike on every executor instead of halting the chain. A MemoryError (this machine's
    trouble, not the entry's) and a BaseException that is no Exception propagate."""
    if isinstance(error, ProtocolError):
        return error
    if isinstance(error, MemoryError) or not isinstance(error, Exception):
        raise error
    return InternalError(reason=INTERNAL_ERROR_REASON)


ProcessFunction = Callable[[State, object, ExecutionContext], None]

PROCESS: dict[type, ProcessFunction] = {
    t.Transfer: accounts.process_transfer,
    t.Faucet: accounts.process_faucet,
    t.AddStake: staking.process_add_stake,
    t.WithdrawStake: staking.process_withdraw_stake,
    t.AddStakeToModel: staking.process_add_stake_to_model,
    t.AddValidator: validators.process_add_validator,
    t.RemoveValidator: validators.process_remove_validator,
    t.SetCommission: validators.process_set_commission,
    t.CreateModel: models.process_create_model,
    t.CommitModel: models.process_commit_model,
    t.RevealModel: models.process_reveal_model,
    t.DeactivateModel: models.process_deactivate_model,
    t.ReportModel: models.process_report_model,
    t.UndoReportModel: models.process_undo_report_model,
    t.CommitSubmission: submissions.process_commit_submission,
    t.RevealSubmission: submissions.process_reveal_submission,
    t.InitiateChallenge: submissions.process_initiate_challenge,
    t.ResolveChallenge: submissions.process_resolve_challenge,
    t.ClaimRewards: submissions.process_claim_rewards,
}


def transaction_digest(transaction: t.Transaction | bytes) -> bytes:
    """BLAKE2b-256 of DOMAIN_TX || encode(transaction); a caller that holds the canonical
    encoding already may pass those bytes (the same digest, without encoding again)."""
    return digest(DOMAIN_TX, transaction)


def sign_transaction(keypair, transaction: t.Transaction, chain_id: bytes) -> t.SignedTransaction:
    """Wallet helper: the sender's signature over DOMAIN_TX || chain_id || encode(transaction),
    valid on the network whose `SystemState.chain_id` is `chain_id` only."""
    signature = keypair.sign(signing_domain(DOMAIN_TX, chain_id), encode(transaction))
    return t.SignedTransaction(transaction=transaction, public_key=keypair.public_key, signature=signature)


def check_admission(data: bytes, state: State, verified: Container[bytes] = (),
                    pooled: int = 0) -> t.SignedTransaction:
    """Decode and check a submitted transaction before ordering; raises a typed error.

    The envelope (`check_envelope`) and the policy (`check_admission_policy`); `pooled`: how many
    transactions of the sender the caller's mempool holds already. `verified` holds exact
    transaction bytes whose signature this caller has already checked (an executor's admission
    cache): for those the Ed25519 verification is not repeated, since the same bytes carry the
    same signature over the same message. Every other check runs."""
    system = state.system()
    signed = check_envelope(data, state, system, verified)
    check_admission_policy(signed.transaction, state, system, pooled)
    return signed


def check_envelope(data: bytes, state: State, system: t.SystemState,
                   verified: Container[bytes] = ()) -> t.SignedTransaction:
    """Size, decoding, canonical bytes, the signature under `system.chain_id`, and a nonce not
    below the account's: what every executor checks again on every entry."""
    check_size(data, system.parameters)  # before decoding: an oversized blob is never parsed
    signed = decode(data, t.SignedTransaction)
    check_decoded_admission(data, signed, state, system.parameters, system.chain_id, verified)
    return signed


def check_size(data: bytes, params: Parameters) -> None:
    limit = min(params.max_tx_bytes, params.max_checkpoint_bytes)  # it must fit a checkpoint
    if len(data) > limit:
        raise TransactionTooLarge(size=len(data), max=limit)


def check_decoded_admission(data: bytes, signed: t.SignedTransaction, state: State, params: Parameters,
                            chain_id: bytes, verified: Container[bytes] = (),
                            tx_bytes: bytes | None = None) -> None:
    """The envelope's checks after the size check and decoding, for a caller that has
    `signed = decode(data)` already; `tx_bytes`: `encode(signed.transaction)` if it has that too.
    The signature must verify under this network's `chain_id`: a transaction signed for another
    network is `InvalidSignature` here."""
    data = bytes(data)
    if encode(signed) != data:
        raise NonCanonicalEncoding()
    tx = signed.transaction
    if address_of(signed.public_key) != tx.sender:
        raise InvalidSignature(reason="the public key does not belong to the sender")
    if data not in verified:
        message = encode(tx) if tx_bytes is None else tx_bytes
        if not verify_signature(signed.public_key, signing_domain(DOMAIN_TX, chain_id), message, signed.signature):
            raise InvalidSignature(reason="the signature does not verify on this network")
    expected = state.account(tx.sender).nonce
    if tx.nonce < expected:
        raise BadNonce(expected=expected, got=tx.nonce)


def check_fee_solvency(tx: t.Transaction, balance: int, pooled: int, params: Parameters) -> None:
    """`max_fee ≥ base_fee`, and `balance` pays base_fee for the sender's `pooled` transactions
    and this one (what admission asks; execution charges each fee where it is ordered)."""
    fee = params.base_fee
    if tx.max_fee < fee:
        raise FeeBelowBaseFee(max_fee=tx.max_fee, base_fee=fee)
    required = fee * (pooled + 1)
    if balance < required:
        raise InsufficientBalanceForFees(required=required, available=balance, pooled=pooled)


def check_admission_policy(tx: t.Transaction, state: State, system: t.SystemState, pooled: int = 0) -> None:
    """What only a mempool asks of a transaction whose envelope is fine: its fee can be paid
    (`check_fee_solvency` with the sender's `pooled` count), its kind's fields are within their
    bounds, and a Faucet is sent by a faucet authority while the faucet is on. Each refusal
    keeps out a transaction that could only fail (or not pay at all) once ordered."""
    params = system.parameters
    check_fee_solvency(tx, state.account(tx.sender).balance, pooled, params)
    check_kind_fields(tx.kind, params, len(system.committee.members))
    if isinstance(tx.kind, t.Faucet):
        accounts.require_faucet_authority(system, tx.sender)


def charge_fee_and_nonce(state: State, tx: t.Transaction, fee: int, system: t.SystemState) -> None:
    """Raises BadNonce/InsufficientFee without changing anything; else bumps nonce, takes fee.
    `system` is the state's current SystemState, decoded by the caller; it is updated and written."""
    account = state.account(tx.sender)
    if tx.nonce != account.nonce:
        raise BadNonce(expected=account.nonce, got=tx.nonce)
    if tx.max_fee < fee:
        raise InsufficientFee(required=fee, available=tx.max_fee)
    if account.balance < fee:
        raise InsufficientFee(required=fee, available=account.balance)
    account.nonce += 1
    account.balance -= fee
    state.put_account(tx.sender, account)
    system.fees_this_epoch += fee
    state.put_system(system)


def execute_transaction(state: State, signed: t.SignedTransaction, ctx: ExecutionContext, tx_digest: bytes,
                        system: t.SystemState) -> t.TransactionEffects:
    """Execute one ordered, admitted transaction; the effects record the fee and any error of
    its kind. Raises BadNonce/InsufficientFee, changing nothing, when it cannot take its nonce
    or pay its fee: such a transaction is not executable and no checkpoint may carry it.
    The caller has `tx_digest = transaction_digest(tx)` and `system = state.system()` at hand
    (decoded for this entry's context); `system` is stale once the transaction has run."""
    tx = signed.transaction
    fee = ctx.params.base_fee
    committee_size = len(system.committee.members)
    charge_fee_and_nonce(state, tx, fee, system)
    effects = t.TransactionEffects(transaction_digest=tx_digest, sender=tx.sender, nonce=tx.nonce, fee_charged=fee)
    tx_ctx = ctx.for_transaction(tx_digest, tx.sender)
    state.begin()
    try:
        check_kind_fields(tx.kind, ctx.params, committee_size)
        PROCESS[type(tx.kind)](state, tx.kind, tx_ctx)
    except BaseException as error:
        state.rollback()
        effects.error = recorded_error(error).to_struct()  # or re-raises it
        return effects
    state.commit()
    effects.created = tx_ctx.created
    return effects
