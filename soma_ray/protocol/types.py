"""State objects (spec §1), transaction kinds (spec §2), effects and checkpoints.

Every type is a canonical `Struct` (positional msgpack array). Amounts are shannons; distances,
thresholds and loss scores are fixed-point integers (1e-9 units, `targets.DISTANCE_SCALE`);
embeddings are little-endian float32 bytes. Status fields are the strings named in the spec.
"""
from __future__ import annotations

from typing import Literal, Union

from soma_ray.protocol.crypto import Certificate, Committee
from soma_ray.protocol.encoding import Struct
from soma_ray.protocol.errors import ExecutionError
from soma_ray.protocol.params import Parameters

ModelStatus = Literal["Created", "Pending", "Active", "Inactive"]
ValidatorStatus = Literal["Pending", "Active", "Leaving"]
TargetStatus = Literal["Open", "Committed", "Filled", "Challenged", "Settled"]
ChallengeKind = Literal["ScoreFraud", "DataFraud"]
Verdict = Literal["ChallengerWins", "MinerWins"]

# ----------------------------------------------------------------------------- state objects


class Account(Struct):
    balance: int = 0
    nonce: int = 0


class ExchangeRate(Struct):
    """SOMA backing `pool_token_amount` pool tokens from `epoch` on."""

    epoch: int
    soma_amount: int
    pool_token_amount: int


class StakingPool(Struct):
    """Exchange-rate staking pool of a validator or a model. `owner` is the validator's address or
    the model's id; `soma_balance` includes compounded rewards; `pending_stake` activates and
    `pending_withdraw` is paid at the next epoch change."""

    id: bytes
    owner: bytes
    soma_balance: int = 0
    pool_token_balance: int = 0
    pending_stake: int = 0
    # StakedSoma ids whose withdrawal is paid at the next epoch change, after that change's
    # slashes (spec §3 step 5), so a delegator cannot leave ahead of a slash.
    pending_withdraw: list[bytes] = []
    exchange_rates: list[ExchangeRate] = []
    activation_epoch: int | None = None
    deactivation_epoch: int | None = None


class StakedSoma(Struct):
    """A delegation receipt: `principal` shannons staked into `pool_id`, active from `activation_epoch`."""

    id: bytes
    owner: bytes
    pool_id: bytes
    principal: int
    activation_epoch: int


class Validator(Struct):
    address: bytes
    public_key: bytes
    network_address: str
    commission_bps: int
    staking_pool_id: bytes
    status: ValidatorStatus = "Pending"
    next_epoch_commission_bps: int | None = None


class WeightsManifest(Struct):
    url: str
    checksum: bytes
    size: int


class PendingUpdate(Struct):
    weights_manifest: WeightsManifest
    weights_commitment: bytes
    embedding_commitment: bytes
    key_commitment: bytes
    commit_epoch: int


class Model(Struct):
    id: bytes
    owner: bytes
    architecture_version: int
    status: ModelStatus
    commission_bps: int
    staking_pool_id: bytes
    weights_manifest: WeightsManifest | None = None
    weights_commitment: bytes = b""
    embedding_commitment: bytes = b""
    key_commitment: bytes = b""
    commit_epoch: int | None = None
    decryption_key: bytes | None = None
    embedding: bytes | None = None
    pending_update: PendingUpdate | None = None
    next_epoch_commission_bps: int | None = None
    reporters: list[bytes] = []


class Target(Struct):
    id: bytes
    embedding: bytes
    model_ids: list[bytes]
    distance_threshold: int
    reward_pool: int
    generation_epoch: int
    generation_timestamp_ms: int
    status: TargetStatus = "Open"
    submission_id: bytes | None = None
    fill_epoch: int | None = None
    # The epoch in which the target became Settled (claimed, or reverted by ChallengerWins after
    # its epoch); a Settled target is pruned `settled_retention_epochs` epochs later (§3 step 8).
    settled_epoch: int | None = None


class RevealedSubmission(Struct):
    data_hash: bytes
    data_size: int
    data_url: str
    model_id: bytes
    embedding: bytes
    loss_score: int
    distance: int
    hit_time_ms: int = 0  # its contribution to the epoch's difficulty tally


class Submission(Struct):
    id: bytes
    target_id: bytes
    miner: bytes
    commitment: bytes
    bond: int
    commit_timestamp_ms: int
    commit_epoch: int
    revealed: RevealedSubmission | None = None


class Challenge(Struct):
    id: bytes
    submission_id: bytes
    target_id: bytes
    challenger: bytes
    kind: ChallengeKind
    bond: int
    opened_epoch: int


class EmissionPool(Struct):
    balance: int
    emission_per_epoch: int
    epochs_in_period: int = 0


class TargetState(Struct):
    distance_threshold: int
    targets_generated_this_epoch: int = 0
    hit_time_sum_ms: int = 0
    confirmed_hits: int = 0
    reward_budget: int = 0
    reward_per_target: int = 0


class SystemState(Struct):
    epoch: int
    epoch_start_timestamp_ms: int
    protocol_version: int
    parameters: Parameters
    committee: Committee
    target_state: TargetState
    emission_pool: EmissionPool
    fees_this_epoch: int = 0
    safe_mode: bool = False
    # The network's identity, the digest of its genesis (genesis.chain_id): every signature of
    # this network is made under it (encoding.signing_domain).
    chain_id: bytes = bytes(32)
    # The addresses whose Faucet transactions execute (named by the genesis; none: no faucet).
    faucet_authorities: list[bytes] = []


# ----------------------------------------------------------------------------- transaction kinds


class Kind(Struct, tag=True):
    """Base of transaction kinds: encoded with the class name as the first array element."""


class Transfer(Kind):
    recipient: bytes
    amount: int


class Faucet(Kind):
    recipient: bytes
    amount: int


class AddStake(Kind):
    """Stake into the pool of a validator (by address) or of a model (by model id)."""

    pool_owner: bytes
    amount: int


class WithdrawStake(Kind):
    staked_id: bytes


class AddValidator(Kind):
    public_key: bytes
    network_address: str
    proof_of_possession: bytes


class RemoveValidator(Kind):
    pass


class SetCommission(Kind):
    """`target` is the sender's validator address or a model id the sender owns."""

    target: bytes
    bps: int


class CreateModel(Kind):
    stake: int
    commission_bps: int
    architecture_version: int


class CommitModel(Kind):
    model_id: bytes
    weights_manifest: WeightsManifest
    weights_commitment: bytes
    embedding_commitment: bytes
    key_commitment: bytes


class RevealModel(Kind):
    model_id: bytes
    decryption_key: bytes
    embedding: bytes


class AddStakeToModel(Kind):
    model_id: bytes
    amount: int


class DeactivateModel(Kind):
    model_id: bytes


class ReportModel(Kind):
    model_id: bytes


class UndoReportModel(Kind):
    model_id: bytes


class CommitSubmission(Kind):
    target_id: bytes
    commitment: bytes
    bond: int


class RevealSubmission(Kind):
    submission_id: bytes
    data_hash: bytes
    data_size: int
    data_url: str
    model_id: bytes
    embedding: bytes
    loss_score: int
    nonce: bytes


class InitiateChallenge(Kind):
    submission_id: bytes
    kind: ChallengeKind
    bond: int


class ResolveChallenge(Kind):
    challenge_id: bytes
    verdict: Verdict
    certificate: Certificate


class ClaimRewards(Kind):
    target_id: bytes


TransactionKind = Union[
    Transfer, Faucet, AddStake, WithdrawStake, AddValidator, RemoveValidator, SetCommission,
    CreateModel, CommitModel, RevealModel, AddStakeToModel, DeactivateModel, ReportModel,
    UndoReportModel, CommitSubmission, RevealSubmission, InitiateChallenge, ResolveChallenge,
    ClaimRewards,
]


class Transaction(Struct):
    sender: bytes
    nonce: int
    kind: TransactionKind
    max_fee: int


class SignedTransaction(Struct, tag=True):
    """A transaction with the sender's Ed25519 signature over DOMAIN_TX || encode(transaction)."""

    transaction: Transaction
    public_key: bytes
    signature: bytes


class ChangeEpoch(Struct, tag=True):
    """The system transaction that ends the current epoch (no sender, no signature)."""

    epoch: int
    timestamp_ms: int


CheckpointEntry = Union[SignedTransaction, ChangeEpoch]


class TransactionEffects(Struct):
    transaction_digest: bytes
    sender: bytes
    nonce: int
    fee_charged: int
    error: ExecutionError | None = None
    created: list[bytes] = []


class Checkpoint(Struct):
    epoch: int
    sequence: int
    previous_digest: bytes
    timestamp_ms: int
    transactions: list[bytes]
    effects_digest: bytes
    state_root: bytes
