"""Genesis: the state at epoch 0 from a `GenesisConfig`, and the testnet/localnet presets (spec §7).

The emission pool holds the genesis supply minus every allocation (balances, validator stake,
model stake). Genesis models are created Active with their embeddings. The epoch-0 target budget
is (1 − validator_share) × emission_per_epoch (an allowance on the emission pool, no emission
period counted); the initial targets are seeded from the genesis digest.
"""
from __future__ import annotations

import msgspec

from soma_ray.protocol.accounts import credit, require_address, take_from_emission_pool
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.crypto import Committee, Keypair, address_of
from soma_ray.protocol.encoding import DOMAIN_CHAIN_ID, DOMAIN_TX, Struct, blake2b256, digest, u64_le
from soma_ray.protocol.models import model_commitment, validate_embedding
from soma_ray.protocol.params import SHANNONS_PER_SOMA, Parameters, localnet
from soma_ray.protocol.staking import new_pool, stake_active_now
from soma_ray.protocol.state import MODEL, VALIDATOR, State
from soma_ray.protocol.targets import generate_epoch_targets, target_embedding
from soma_ray.protocol.types import (
    EmissionPool, Model, SystemState, TargetState, Validator, WeightsManifest,
)
from soma_ray.protocol.validators import require_commission_bps, update_validator_set

PROTOCOL_VERSION = 4  # 2: ChangeEpoch on the consensus clock, faucet off by default and capped;
# 3: Settled targets pruned (Target.settled_epoch, Parameters.settled_retention_epochs);
# 4: the chain cannot be used for free (issue 18): fee solvency, checkpoint byte cap, faucet
# authorities, the chain id in every signature, bounded kind fields (docs/protocol.md)


class GenesisValidator(Struct):
    public_key: bytes
    network_address: str
    stake: int
    commission_bps: int = 0


class GenesisModel(Struct):
    owner: bytes
    stake: int
    embedding: bytes
    commission_bps: int = 0
    weights_manifest: WeightsManifest | None = None
    decryption_key: bytes = b""


class GenesisConfig(Struct):
    parameters: Parameters
    validators: list[GenesisValidator]
    balances: list[tuple[bytes, int]] = []
    models: list[GenesisModel] = []
    timestamp_ms: int = 0
    # The addresses whose Faucet transactions execute (the gateway's faucet signs with one).
    faucet_authorities: list[bytes] = []


def genesis_digest(config: GenesisConfig) -> bytes:
    return digest(DOMAIN_TX, config)


def genesis_chain_id(config: GenesisConfig) -> bytes:
    """The network's identity: BLAKE2b-256(DOMAIN_CHAIN_ID || canonical GenesisConfig). Two
    networks share it only if their genesis is byte for byte the same (the same parameters,
    keys, balances, models, faucet authorities and timestamp)."""
    return digest(DOMAIN_CHAIN_ID, config)


def genesis(config: GenesisConfig) -> State:
    """The epoch-0 state. Raises InsufficientBalance when allocations exceed the supply, and the
    kinds' own errors for a bad commission or model embedding."""
    params = config.parameters
    state = State()
    ctx = ExecutionContext(params, 0, config.timestamp_ms, genesis_digest(config), bytes(32), genesis_digest(config))
    for address in config.faucet_authorities:
        require_address(address, "faucet_authorities")
    state.put_system(initial_system_state(config))
    for address, amount in config.balances:
        take_from_emission_pool(state, amount)
        credit(state, address, amount)
    for spec in config.validators:
        add_genesis_validator(state, ctx, spec)
    for spec in config.models:
        add_genesis_model(state, ctx, spec)
    system = state.system()
    system.committee = update_validator_set(state, 0)
    state.put_system(system)
    generate_epoch_targets(state, ctx, min(system.emission_pool.emission_per_epoch, system.emission_pool.balance))
    state.mark()
    return state


def initial_system_state(config: GenesisConfig) -> SystemState:
    params = config.parameters
    return SystemState(
        epoch=0,
        epoch_start_timestamp_ms=config.timestamp_ms,
        protocol_version=PROTOCOL_VERSION,
        parameters=params,
        committee=Committee(epoch=0, members=[]),
        target_state=TargetState(distance_threshold=params.initial_distance_threshold),
        emission_pool=EmissionPool(balance=params.genesis_supply, emission_per_epoch=params.initial_emission_per_epoch),
        chain_id=genesis_chain_id(config),
        faucet_authorities=[bytes(a) for a in config.faucet_authorities],
    )


def allocate_stake(state: State, ctx: ExecutionContext, pool_owner: bytes, staker: bytes, amount: int) -> bytes:
    """Move genesis stake out of the emission pool into a fresh pool; returns the pool id."""
    take_from_emission_pool(state, amount)
    pool = new_pool(state, ctx, pool_owner)
    stake_active_now(state, ctx, pool, staker, amount)
    return pool.id


def add_genesis_validator(state: State, ctx: ExecutionContext, spec: GenesisValidator) -> None:
    require_commission_bps(spec.commission_bps)
    address = address_of(spec.public_key)
    pool_id = allocate_stake(state, ctx, address, address, spec.stake)
    validator = Validator(
        address=address, public_key=spec.public_key, network_address=spec.network_address,
        commission_bps=spec.commission_bps, staking_pool_id=pool_id, status="Active",
    )
    state.put(VALIDATOR, address, validator)


def add_genesis_model(state: State, ctx: ExecutionContext, spec: GenesisModel) -> None:
    validate_embedding(spec.embedding, ctx.params.embedding_dim)
    require_commission_bps(spec.commission_bps)
    model_id = ctx.new_id()
    pool_id = allocate_stake(state, ctx, model_id, spec.owner, spec.stake)
    model = Model(
        id=model_id, owner=spec.owner, architecture_version=ctx.params.model_architecture_version,
        status="Active", commission_bps=spec.commission_bps, staking_pool_id=pool_id,
        weights_manifest=spec.weights_manifest, embedding_commitment=model_commitment(spec.embedding),
        key_commitment=model_commitment(spec.decryption_key), commit_epoch=0,
        decryption_key=spec.decryption_key, embedding=spec.embedding,
    )
    state.put(MODEL, model_id, model)


def preset_keypair(role: str, index: int) -> Keypair:
    """Keys of the presets' validators, model owners and users, from fixed public seeds, so a
    localnet is reproducible. Never use them for real funds."""
    return Keypair.from_secret(blake2b256(f"soma/preset/{role}".encode() + u64_le(index)))


# Each localnet validator key holds this much at genesis: it pays the fees of the faucet
# transactions the validator signs for users.
LOCALNET_VALIDATOR_BALANCE = 1_000 * SHANNONS_PER_SOMA
LOCALNET_MODELS = 3
LOCALNET_USERS = 4


def preset_config(
    params: Parameters,
    validators: int,
    models: int,
    users: int,
    user_balance: int = 1_000_000 * SHANNONS_PER_SOMA,
    validator_stake: int = 100_000 * SHANNONS_PER_SOMA,
    model_stake: int = 1_000 * SHANNONS_PER_SOMA,
    validator_keys: list[bytes] | None = None,
) -> GenesisConfig:
    """The presets' genesis: `validators` validators (the preset keys unless `validator_keys`
    names theirs), each a faucet authority with LOCALNET_VALIDATOR_BALANCE for the fees of the
    faucet transactions it signs; `models` Active models and `users` funded users."""
    keys = validator_keys if validator_keys is not None else [
        preset_keypair("validator", i).public_key for i in range(validators)]
    return GenesisConfig(
        parameters=params,
        validators=[GenesisValidator(key, f"validator-{i}", validator_stake, 500) for i, key in enumerate(keys)],
        balances=[(preset_keypair("user", i).address, user_balance) for i in range(users)]
        + [(address_of(key), LOCALNET_VALIDATOR_BALANCE) for key in keys],
        models=[
            GenesisModel(
                owner=preset_keypair("model-owner", i).address,
                stake=model_stake,
                embedding=target_embedding(blake2b256(b"soma/preset/model-embedding" + u64_le(i)), params.embedding_dim)
                .astype("<f4").tobytes(),
                commission_bps=1_000,
            )
            for i in range(models)
        ],
        faucet_authorities=[address_of(key) for key in keys],
    )


def localnet_config(validators: int = 4, models: int = 3, users: int = 4) -> GenesisConfig:
    return preset_config(localnet(), validators, models, users)


def localnet_genesis_config(validator_public_keys: list[bytes], epoch_duration_ms: int,
                            early_epoch_change: bool, timestamp_ms: int) -> GenesisConfig:
    """The localnet genesis every validator computes alike from the network's settings: the
    preset models and users, the given validators (the preset stake and commission), each a
    faucet authority with a fee balance."""
    params = msgspec.structs.replace(localnet(), epoch_duration_ms=epoch_duration_ms,
                                     allow_early_epoch_change=early_epoch_change)
    config = preset_config(params, len(validator_public_keys), LOCALNET_MODELS, LOCALNET_USERS,
                           validator_keys=list(validator_public_keys))
    config.timestamp_ms = timestamp_ms
    return config


def testnet_genesis_config(validator_public_keys: list[bytes], validator_stake: int,
                           commission_bps: int, epoch_duration_ms: int, faucet: bool,
                           balances: list[tuple[bytes, int]], timestamp_ms: int) -> GenesisConfig:
    """A testnet genesis: the localnet's parameters (the small V1 model's embedding width, which
    the scoring service serves) except that epochs end on time only and the faucet is on only
    when asked; the given validators and balances, and no preset models or users (their keys are
    public). With the faucet on, each validator key is a faucet authority (the gateway's faucet
    signs with the validator's key) and gets the fee balance its faucet transactions pay from."""
    params = msgspec.structs.replace(localnet(), epoch_duration_ms=epoch_duration_ms,
                                     allow_early_epoch_change=False, faucet_enabled=faucet)
    fee_balances = [(address_of(key), LOCALNET_VALIDATOR_BALANCE)
                    for key in validator_public_keys] if faucet else []
    authorities = [address_of(key) for key in validator_public_keys] if faucet else []
    return GenesisConfig(
        parameters=params,
        validators=[GenesisValidator(key, f"validator-{i}", validator_stake, commission_bps)
                    for i, key in enumerate(validator_public_keys)],
        balances=list(balances) + fee_balances,
        timestamp_ms=timestamp_ms,
        faucet_authorities=authorities,
    )
