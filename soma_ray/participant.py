"""What a participant does on chain, with the names the user guide and the reference SDK use:
publish a model (create → commit → reveal), submit data (commit → reveal), stake, claim.
`SomaClient` inherits these; each signs with the key it is given and returns once the
transaction is in a certified checkpoint, raising the typed error if it failed.

Ids and addresses are accepted as 0x-hex strings or bytes. Amounts are shannons
(`to_shannons`/`to_soma` convert). Scores cross the chain in fixed point: a loss as
`round(loss × LOSS_SCALE)`, a distance as `round(distance × DISTANCE_SCALE)`.
"""
from __future__ import annotations

import os
from decimal import Decimal
from typing import NamedTuple

from soma_ray.protocol import errors
from soma_ray.wire import parse_hex
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.models import model_commitment
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.state import STAKED_SOMA, STAKING_POOL, TARGET, VALIDATOR
from soma_ray.protocol.submissions import LOSS_SCALE, required_bond, submission_commitment
from soma_ray.protocol.targets import DISTANCE_SCALE, embedding_bytes
from soma_ray.protocol.types import (
    AddStake, AddStakeToModel, ClaimRewards, CommitModel, CommitSubmission, CreateModel,
    DeactivateModel, RevealModel, RevealSubmission, StakedSoma, StakingPool, Target,
    TransactionEffects, Validator, WeightsManifest, WithdrawStake,
)
from soma_ray.protocol.staking import pool_tokens_of

NONCE_BYTES = 32


def as_id(value: str | bytes, what: str = "an id") -> bytes:
    """A 32-byte id or address from 0x-hex text or bytes (MalformedInput otherwise)."""
    value = parse_hex(value, what) if isinstance(value, str) else bytes(value)
    if len(value) != 32:
        raise errors.MalformedInput(reason=f"{what} is 32 bytes, got {len(value)}")
    return value


class StakeInfo(NamedTuple):
    staked_id: bytes
    pool_id: bytes
    pool_owner: bytes  # the validator's address or the model's id
    principal: int
    activation_epoch: int
    value: int  # what withdrawing now would pay, at the pool's current rate (shannons)


class ValidatorInfo(NamedTuple):
    address: bytes
    stake: int
    commission_bps: int
    voting_power: int  # of 10,000 in the current committee


class ParticipantCalls:
    """Mixed into SomaClient, whose `execute`, `get_object`, `get_object_ids` and
    `get_system_state` these use."""

    @staticmethod
    def to_shannons(soma: float | int | str | Decimal) -> int:
        return int(Decimal(str(soma)) * SHANNONS_PER_SOMA)

    @staticmethod
    def to_soma(shannons: int) -> Decimal:
        return Decimal(shannons) / SHANNONS_PER_SOMA

    async def _parameters(self):
        return (await self.get_system_state()).parameters

    async def get_embedding_dim(self) -> int:
        return (await self._parameters()).embedding_dim

    async def get_model_min_stake(self) -> int:
        return (await self._parameters()).model_min_stake

    # ------------------------------------------------------------------ models

    async def create_model(self, keypair: Keypair, commission_rate: int,
                           stake_amount: int | None = None) -> bytes:
        """A new model owned by `keypair` (commission in basis points of its rewards; stake in
        shannons, default the network's minimum); returns its id."""
        parameters = await self._parameters()
        effects = await self.execute(keypair, CreateModel(
            stake=parameters.model_min_stake if stake_amount is None else stake_amount,
            commission_bps=commission_rate, architecture_version=parameters.model_architecture_version))
        return effects.created[0]  # the model's id comes first (then its pool and the stake)

    async def commit_model(self, keypair: Keypair, model_id: str | bytes, weights_url: str,
                           encrypted_weights: bytes, decryption_key: bytes, embedding) -> TransactionEffects:
        """Commit to weights uploaded at `weights_url` (their manifest and the three commitments
        are computed here); the reveal is due in the next epoch."""
        encrypted = bytes(encrypted_weights)
        manifest = WeightsManifest(url=weights_url, checksum=blake2b256(encrypted), size=len(encrypted))
        return await self.execute(keypair, CommitModel(
            model_id=as_id(model_id, "a model id"), weights_manifest=manifest,
            weights_commitment=model_commitment(encrypted),
            embedding_commitment=model_commitment(embedding_bytes(embedding)),
            key_commitment=model_commitment(bytes(decryption_key))))

    async def reveal_model(self, keypair: Keypair, model_id: str | bytes, decryption_key: bytes,
                           embedding) -> TransactionEffects:
        return await self.execute(keypair, RevealModel(
            model_id=as_id(model_id, "a model id"), decryption_key=bytes(decryption_key),
            embedding=embedding_bytes(embedding)))

    async def add_stake_to_model(self, keypair: Keypair, model_id: str | bytes, amount: int) -> TransactionEffects:
        return await self.execute(keypair, AddStakeToModel(model_id=as_id(model_id, "a model id"), amount=amount))

    async def deactivate_model(self, keypair: Keypair, model_id: str | bytes) -> TransactionEffects:
        return await self.execute(keypair, DeactivateModel(model_id=as_id(model_id, "a model id")))

    # ------------------------------------------------------------------ submissions

    async def commit_submission(self, keypair: Keypair, target_id: str | bytes, data_hash: bytes,
                                data_size: int, model_id: str | bytes, embedding, loss_score: int,
                                bond: int | None = None) -> tuple[bytes, bytes]:
        """Commit to a submission (hash commit-reveal); returns (submission id, the secret nonce
        the reveal needs). `bond` defaults to what the data's size requires."""
        parameters = await self._parameters()
        nonce = os.urandom(NONCE_BYTES)
        commitment = submission_commitment(data_hash, data_size, as_id(model_id, "a model id"),
                                           embedding_bytes(embedding), loss_score, nonce)
        effects = await self.execute(keypair, CommitSubmission(
            target_id=as_id(target_id, "a target id"), commitment=commitment,
            bond=required_bond(parameters, data_size) if bond is None else bond))
        return effects.created[0], nonce

    async def reveal_submission(self, keypair: Keypair, submission_id: bytes, data_hash: bytes,
                                data_size: int, data_url: str, model_id: str | bytes, embedding,
                                loss_score: int, nonce: bytes) -> TransactionEffects:
        return await self.execute(keypair, RevealSubmission(
            submission_id=as_id(submission_id, "a submission id"), data_hash=bytes(data_hash),
            data_size=data_size, data_url=data_url, model_id=as_id(model_id, "a model id"),
            embedding=embedding_bytes(embedding), loss_score=loss_score, nonce=bytes(nonce)))

    async def submit_data(self, keypair: Keypair, target_id: str | bytes, data: bytes, data_url: str,
                          model_id: str | bytes, embedding, distance_score: float,
                          loss_score: float) -> bytes:
        """The guide's one call: check locally that the target is open in this epoch, the
        distance within its threshold and the bond affordable (typed errors before anything is sent), then commit,
        wait until the commit is final, and reveal. Returns the submission id."""
        target_id = as_id(target_id, "a target id")
        target = await self.get_object(TARGET, target_id, Target)
        if target is None:
            raise errors.ObjectNotFound(kind="target", id=target_id)
        if target.status != "Open":
            raise errors.TargetNotOpen(status=target.status)
        system = await self.get_system_state()
        if target.generation_epoch != system.epoch:
            raise errors.TargetExpired(generation_epoch=target.generation_epoch, current_epoch=system.epoch)
        distance = int(round(distance_score * DISTANCE_SCALE))
        if distance > target.distance_threshold:
            raise errors.DistanceExceedsThreshold(distance=distance, threshold=target.distance_threshold)
        parameters = system.parameters
        bond = required_bond(parameters, len(data))
        available = await self.get_balance(keypair.address)
        if available < bond + 2 * parameters.base_fee:
            raise errors.InsufficientBalance(required=bond + 2 * parameters.base_fee, available=available)
        data_hash, loss = blake2b256(bytes(data)), int(round(loss_score * LOSS_SCALE))
        submission_id, nonce = await self.commit_submission(
            keypair, target_id, data_hash, len(data), model_id, embedding, loss, bond)
        await self.reveal_submission(keypair, submission_id, data_hash, len(data), data_url, model_id,
                                     embedding, loss, nonce)
        return submission_id

    async def claim_rewards(self, keypair: Keypair, target_id: str | bytes) -> TransactionEffects:
        return await self.execute(keypair, ClaimRewards(target_id=as_id(target_id, "a target id")))

    # ------------------------------------------------------------------ staking

    async def add_stake(self, keypair: Keypair, validator: str | bytes, amount: int | None = None) -> bytes:
        """Delegate `amount` shannons (default the network's minimum model stake: one SOMA on
        the defaults) to a validator's pool, active from the next epoch; returns the stake's id."""
        if amount is None:
            amount = (await self._parameters()).model_min_stake
        effects = await self.execute(keypair, AddStake(pool_owner=as_id(validator, "a validator"), amount=amount))
        return effects.created[0]

    async def withdraw_stake(self, keypair: Keypair, staked_id: str | bytes) -> TransactionEffects:
        return await self.execute(keypair, WithdrawStake(staked_id=as_id(staked_id, "a stake id")))

    async def get_stakes(self, address: str | bytes) -> list[StakeInfo]:
        """The stakes `address` holds, with what each is worth now (pending ones: the principal)."""
        owner = as_id(address, "an address")
        epoch = (await self.get_system_state()).epoch
        stakes = []
        for staked_id in await self.get_object_ids(STAKED_SOMA):
            staked = await self.get_object(STAKED_SOMA, staked_id, StakedSoma)
            if staked.owner != owner:
                continue
            pool = await self.get_object(STAKING_POOL, staked.pool_id, StakingPool)
            active = staked.activation_epoch <= epoch and pool.pool_token_balance
            value = (pool_tokens_of(pool, staked) * pool.soma_balance // pool.pool_token_balance
                     if active else staked.principal)
            stakes.append(StakeInfo(staked.id, pool.id, pool.owner, staked.principal,
                                    staked.activation_epoch, value))
        return stakes

    async def get_validators(self) -> list[ValidatorInfo]:
        committee = (await self.get_system_state()).committee
        found = []
        for member in committee.members:
            validator = await self.get_object(VALIDATOR, member.address, Validator)
            pool = await self.get_object(STAKING_POOL, validator.staking_pool_id, StakingPool)
            found.append(ValidatorInfo(member.address, pool.soma_balance, validator.commission_bps,
                                       member.voting_power))
        return found

