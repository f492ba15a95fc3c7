"""Protocol parameters of spec §7. Amounts in shannons; distances in fixed point (1e-9 units)."""
from __future__ import annotations

import msgspec

from soma_ray.protocol.encoding import Struct

SHANNONS_PER_SOMA = 10**9
BPS = 10_000
# The voting power (of 10 000) that certifies: the one definition of the quorum. It is the default
# of `Parameters.quorum` (a field of the encoded SystemState, kept for byte-identity), which the
# state's rules read (report tallies, challenge certificates), and it is `Committee.quorum` and
# `verify_certificate`'s default, with which consensus certifies checkpoints. A genesis that sets
# another `Parameters.quorum` changes only the former.
QUORUM = 6_667
GIB = 1 << 30
MIB = 1 << 20
KIB = 1 << 10


class Parameters(Struct, frozen=True):
    epoch_duration_ms: int = 86_400_000
    genesis_supply: int = 10_000_000 * SHANNONS_PER_SOMA
    initial_emission_per_epoch: int = 1_370 * SHANNONS_PER_SOMA
    emission_period_epochs: int = 365
    emission_decrease_bps: int = 1_000
    validator_share_bps: int = 2_000
    submitter_share_bps: int = 5_000
    claimer_fee_bps: int = 50
    base_fee: int = 1_000
    model_min_stake: int = 1 * SHANNONS_PER_SOMA
    model_architecture_version: int = 1
    model_max_weight_size: int = 8 * GIB
    model_reveal_slash_bps: int = 5_000
    model_tally_slash_bps: int = 9_500
    embedding_dim: int = 2048
    k_models_per_target: int = 3
    initial_targets_per_epoch: int = 100
    target_hits_per_epoch: int = 86_400
    initial_distance_threshold: int = 1_050_000_000
    min_distance_threshold: int = 950_000_000
    max_distance_threshold: int = 2_000_000_000
    target_hit_time_ms: int = 60_000
    threshold_adjust_bps: int = 200
    submission_min_bond: int = 1_000
    bond_per_byte: int = 65
    max_submission_bytes: int = 1 * MIB
    reveal_window_ms: int = 30_000
    challenge_bond_ratio_bps: int = 3_333
    audit_timeout_ms: int = 60_000
    quorum: int = QUORUM
    max_tx_bytes: int = 256 * KIB
    # Localnet only: ChangeEpoch may come before the epoch's end (`advance_epoch`).
    allow_early_epoch_change: bool = False
    # The faucet pays out of the emission pool, so it is off unless a genesis enables it.
    faucet_enabled: bool = False
    faucet_max_amount: int = 1_000 * SHANNONS_PER_SOMA
    # A Settled target (and its paid-out submission) is removed from the state at the epoch
    # change that ends epoch settled_epoch + settled_retention_epochs, i.e. it stays readable
    # for that many whole epochs after the one it settled in (0: removed at the next change).
    settled_retention_epochs: int = 2
    # The signed transactions of one checkpoint take at most this many bytes (their canonical
    # encodings; a ChangeEpoch entry is not counted): the proposer fills up to it, validators
    # refuse a proposal beyond it. At least max_tx_bytes, so every admissible transaction fits.
    max_checkpoint_bytes: int = 4 * MIB
    # URLs named on chain (a weights manifest's, a revealed submission's data_url) and a
    # validator's network address take at most this many bytes (UTF-8).
    max_url_bytes: int = 2 * KIB
    # The audit's tolerance (fixed point, 1e-9 units: 2e-5, relative and absolute) on a
    # re-scored loss and embedding, and the slack on a recomputed distance (docs/audits.md).
    audit_tolerance: int = 20_000


def testnet() -> Parameters:
    return Parameters()


LOCALNET_EMBEDDING_DIM = 64  # the small localnet model's width (spec/model.md allows 16–128)


def localnet() -> Parameters:
    return msgspec.structs.replace(
        Parameters(),
        epoch_duration_ms=60_000,
        embedding_dim=LOCALNET_EMBEDDING_DIM,
        initial_targets_per_epoch=10,
        target_hits_per_epoch=100,
        allow_early_epoch_change=True,
        faucet_enabled=True,
    )
