"""What a participant does on chain, with the names the user guide and the reference SDK use:
publish a model (create → commit → reveal), submit data (commit → reveal), challenge and verify a
submission, stake, claim.
`SomaClient` inherits these; each signs with the key it is given and returns once the
transaction is in a certified checkpoint, raising the typed error if it failed.

Ids and addresses are accepted as 0x-hex strings or bytes; embeddings as any float sequence
(bytes of little-endian float32, a list or tuple, a numpy array of any float dtype, a torch
tensor), converted to float32 (`as_embedding_bytes`; the protocol's checks of finiteness and
width still apply). Amounts are shannons (`to_shannons`/`to_soma` convert; `soma_sdk` takes
SOMA). The library's own checks never call a method whose units `soma_sdk` changes: they read
balances with `balance_shannons`. Scores cross the chain in fixed point: a loss as
`round(loss × LOSS_SCALE)`, a distance as `round(distance × DISTANCE_SCALE)`.
"""
from __future__ import annotations

import os
from decimal import Decimal
from typing import NamedTuple

import numpy as np

from soma_ray.node.audit import AuditFinding, Rescored, audit, data_problem
from soma_ray.protocol import errors
from soma_ray.wire import parse_hex
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.models import model_commitment
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.state import CHALLENGE, STAKED_SOMA, STAKING_POOL, SUBMISSION, TARGET, VALIDATOR
from soma_ray.protocol.submissions import (
    LOSS_SCALE, challenge_bond_for, required_bond, submission_commitment, submission_cost,
)
from soma_ray.protocol.targets import DISTANCE_SCALE, accepts_commit, challenge_allowed, embedding_bytes
from soma_ray.protocol.types import (
    AddStake, AddStakeToModel, Challenge, ClaimRewards, CommitModel, CommitSubmission, CreateModel,
    DeactivateModel, InitiateChallenge, ReportModel, RevealModel, RevealSubmission, SetCommission, StakedSoma,
    StakingPool, Submission, Target, TransactionEffects, UndoReportModel, Validator, WeightsManifest, WithdrawStake,
)
from soma_ray.protocol.staking import pool_tokens_of, stake_is_active

NONCE_BYTES = 32
# The challenge kinds by their command-line names (the protocol's names are accepted too).
CHALLENGE_KINDS = {"score-fraud": "ScoreFraud", "data-fraud": "DataFraud"}
# The chain keeps only open challenges: a resolved or closed one is deleted with its bonds paid.
CHALLENGE_STATUSES = ("open",)
# "Stake all available" keeps the fees of the create, the commit and the reveal of its weights.
PUBLISH_TRANSACTIONS = 3
# Trouble on an auditor's own side, never a finding: the scoring service or the network
# unreachable (ConnectionError, OSError), a timeout, the scoring service saying it is unavailable.
OWN_TROUBLE = (ConnectionError, TimeoutError, OSError, errors.ScoringUnavailable, errors.ScoringTimeout)


def as_embedding_bytes(embedding) -> bytes:
    """An embedding as the chain carries it (little-endian float32 bytes) from any float
    sequence: bytes as they are, anything else (list, tuple, numpy array of any float dtype, a
    torch tensor) converted to float32 first. NaN/inf (also a float64 value beyond float32's
    range) and anything but a vector are refused by the protocol's check (`embedding_bytes`)."""
    if isinstance(embedding, (bytes, bytearray, memoryview)):
        return embedding_bytes(bytes(embedding))
    if hasattr(embedding, "detach") and hasattr(embedding, "cpu"):  # a torch tensor
        embedding = embedding.detach().cpu().float().numpy()
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            array = np.asarray(embedding, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise errors.MalformedInput(reason=f"an embedding is a sequence of numbers ({error})"[:200]) from None
    return embedding_bytes(array)


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


class ChallengeInfo(NamedTuple):
    id: bytes
    target_id: bytes
    submission_id: bytes
    challenger: bytes
    kind: str  # ScoreFraud or DataFraud
    bond: int
    opened_epoch: int
    status: str  # "open": the chain holds no other (see CHALLENGE_STATUSES)


def challenge_kind(kind: str) -> str:
    """The protocol's ChallengeKind for "score-fraud"/"data-fraud" (or the protocol's own name)."""
    found = CHALLENGE_KINDS.get(kind, kind)
    if found not in CHALLENGE_KINDS.values():
        raise errors.MalformedInput(reason=f"challenge kind {kind!r}: score-fraud or data-fraud")
    return found


def _challenge_info(challenge: Challenge) -> ChallengeInfo:
    return ChallengeInfo(challenge.id, challenge.target_id, challenge.submission_id, challenge.challenger,
                         challenge.kind, challenge.bond, challenge.opened_epoch, "open")


def _model_named(error: Exception, among: list[bytes]) -> bytes | None:
    """The model of `among` a failure names, if it is one that only names a model: the scoring
    service's ModelUnavailable, the chain's ModelHasNoWeights, an unknown model (the HTTP path
    carries the id as hex)."""
    if isinstance(error, (errors.ModelUnavailable, errors.ModelHasNoWeights)):
        model_id = error.model_id
    elif isinstance(error, errors.ObjectNotFound) and error.kind == "model":
        model_id = error.id
    else:
        return None
    if isinstance(model_id, str):
        try:
            model_id = bytes.fromhex(model_id.removeprefix("0x"))
        except ValueError:
            return None
    model_id = bytes(model_id)
    return model_id if model_id in among else None


def _why(error: Exception) -> str:
    return f"{getattr(error, 'code', type(error).__name__)}: {error}"[:500]


def _check_reply(response, models: int, dim: int) -> None:
    """A scoring reply of the shape asked for (one loss per model, a winner among them, an
    embedding of the network's width), else UnusableReply."""
    embedding = bytes(response.embedding)
    if (len(response.losses) != models or not 0 <= response.winner < models
            or len(embedding) != 4 * dim):
        raise UnusableReply(f"{len(response.losses)} losses for {models} models, winner {response.winner}, "
                            f"an embedding of {len(embedding)} bytes for width {dim}")


class UnusableReply(ValueError):
    """A scoring reply that is not of the shape asked for."""


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
        shannons, default the network's minimum; `soma_sdk`'s default is all available,
        `stake_all_available`); returns its id."""
        parameters = await self._parameters()
        effects = await self.execute(keypair, CreateModel(
            stake=parameters.model_min_stake if stake_amount is None else stake_amount,
            commission_bps=commission_rate, architecture_version=parameters.model_architecture_version))
        return effects.created[0]  # the model's id comes first (then its pool and the stake)

    async def stake_all_available(self, keypair: Keypair) -> int:
        """What "stake all available" stakes (shannons): the balance less the fees of the
        transaction that stakes it and of the commit and reveal that publish the model's weights
        (the network's base fee each, which a transaction pays at most), so the guide's next
        steps can be paid; InsufficientBalance when that is below the network's minimum stake."""
        parameters = await self._parameters()
        reserved = PUBLISH_TRANSACTIONS * parameters.base_fee
        available = await self.balance_shannons(keypair.address) - reserved
        if available < parameters.model_min_stake:
            raise errors.InsufficientBalance(required=parameters.model_min_stake + reserved,
                                             available=available + reserved)
        return available

    async def commit_model(self, keypair: Keypair, model_id: str | bytes, weights_url: str,
                           encrypted_weights: bytes, decryption_key: bytes, embedding) -> TransactionEffects:
        """Commit to weights uploaded at `weights_url` (their manifest and the three commitments
        are computed here); the reveal is due in the next epoch."""
        encrypted = bytes(encrypted_weights)
        manifest = WeightsManifest(url=weights_url, checksum=blake2b256(encrypted), size=len(encrypted))
        return await self.execute(keypair, CommitModel(
            model_id=as_id(model_id, "a model id"), weights_manifest=manifest,
            weights_commitment=model_commitment(encrypted),
            embedding_commitment=model_commitment(as_embedding_bytes(embedding)),
            key_commitment=model_commitment(bytes(decryption_key))))

    async def reveal_model(self, keypair: Keypair, model_id: str | bytes, decryption_key: bytes,
                           embedding) -> TransactionEffects:
        return await self.execute(keypair, RevealModel(
            model_id=as_id(model_id, "a model id"), decryption_key=bytes(decryption_key),
            embedding=as_embedding_bytes(embedding)))

    async def add_stake_to_model(self, keypair: Keypair, model_id: str | bytes,
                                 amount: int | None = None) -> TransactionEffects:
        """Stake `amount` shannons (default the network's minimum model stake) on a model."""
        if amount is None:
            amount = (await self._parameters()).model_min_stake
        return await self.execute(keypair, AddStakeToModel(model_id=as_id(model_id, "a model id"), amount=amount))

    async def set_model_commission_rate(self, keypair: Keypair, model_id: str | bytes,
                                        commission_rate: int) -> TransactionEffects:
        """The owner's new commission (basis points), from the next epoch."""
        return await self.execute(keypair, SetCommission(target=as_id(model_id, "a model id"), bps=commission_rate))

    async def undo_report_model(self, keypair: Keypair, model_id: str | bytes) -> TransactionEffects:
        return await self.execute(keypair, UndoReportModel(model_id=as_id(model_id, "a model id")))

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
                                           as_embedding_bytes(embedding), loss_score, nonce)
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
            embedding=as_embedding_bytes(embedding), loss_score=loss_score, nonce=bytes(nonce)))

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
        if not accepts_commit(target.generation_epoch, system.epoch):
            raise errors.TargetExpired(generation_epoch=target.generation_epoch, current_epoch=system.epoch)
        distance = int(round(distance_score * DISTANCE_SCALE))
        if distance > target.distance_threshold:
            raise errors.DistanceExceedsThreshold(distance=distance, threshold=target.distance_threshold)
        parameters = system.parameters
        bond, needed = required_bond(parameters, len(data)), submission_cost(parameters, len(data))
        available = await self.balance_shannons(keypair.address)
        if available < needed:
            raise errors.InsufficientBalance(required=needed, available=available)
        data_hash, loss = blake2b256(bytes(data)), int(round(loss_score * LOSS_SCALE))
        submission_id, nonce = await self.commit_submission(
            keypair, target_id, data_hash, len(data), model_id, embedding, loss, bond)
        await self.reveal_submission(keypair, submission_id, data_hash, len(data), data_url, model_id,
                                     embedding, loss, nonce)
        return submission_id

    async def claim_rewards(self, keypair: Keypair, target_id: str | bytes) -> TransactionEffects:
        return await self.execute(keypair, ClaimRewards(target_id=as_id(target_id, "a target id")))

    # ------------------------------------------------------------------ challenges and audits

    async def _filled_submission(self, target_id: bytes) -> tuple[Target, Submission]:
        """The target and its revealed submission (ObjectNotFound, NoRevealedSubmission)."""
        target = await self.get_object(TARGET, target_id, Target)
        if target is None:
            raise errors.ObjectNotFound(kind="target", id=target_id)
        submission = None if target.submission_id is None else (
            await self.get_object(SUBMISSION, target.submission_id, Submission))
        if submission is None or submission.revealed is None or target.status not in ("Filled", "Challenged"):
            raise errors.NoRevealedSubmission(target_id=target_id)
        return target, submission

    async def initiate_challenge(self, keypair: Keypair, target_id: str | bytes, kind: str,
                                 bond: int | None = None) -> bytes:
        """Challenge a filled target's submission (`kind` "score-fraud" or "data-fraud"), posting
        `bond` shannons (default the least allowed: the submission's bond × the challenge bond
        ratio). Checked here first (typed errors before anything is sent): the target is Filled,
        the challenge window open, the bond enough and affordable. Returns the challenge's id;
        every validator then audits, and the verdict moves the bonds (spec §2, §5)."""
        target_id, kind = as_id(target_id, "a target id"), challenge_kind(kind)
        target = await self.get_object(TARGET, target_id, Target)
        if target is None:
            raise errors.ObjectNotFound(kind="target", id=target_id)
        if target.status == "Challenged":
            open_ = await self.get_challenges(target_id=target_id)
            raise errors.ChallengeAlreadyOpen(challenge_id=open_[0].id if open_ else b"")
        if target.status != "Filled":
            raise errors.TargetNotFilled(status=target.status)
        _, submission = await self._filled_submission(target_id)
        system = await self.get_system_state()
        if not challenge_allowed(target.fill_epoch, system.epoch):
            raise errors.ChallengeWindowClosed(fill_epoch=target.fill_epoch, current_epoch=system.epoch)
        required = challenge_bond_for(system.parameters, submission.bond)
        bond = required if bond is None else bond
        if bond < required:
            raise errors.InsufficientBond(required=required, provided=bond)
        available = await self.balance_shannons(keypair.address)
        if available < bond + system.parameters.base_fee:
            raise errors.InsufficientBalance(required=bond + system.parameters.base_fee, available=available)
        effects = await self.execute(keypair, InitiateChallenge(submission_id=submission.id, kind=kind, bond=bond))
        return effects.created[0]

    async def get_challenge(self, challenge_id: str | bytes) -> ChallengeInfo | None:
        """An open challenge, or None (never opened, or already resolved or closed)."""
        found = await self.get_object(CHALLENGE, as_id(challenge_id, "a challenge id"), Challenge)
        return None if found is None else _challenge_info(found)

    async def get_challenges(self, target_id: str | bytes | None = None, challenger: str | bytes | None = None,
                             status: str | None = None) -> list[ChallengeInfo]:
        """The open challenges (on `target_id`, by `challenger`), read from the chain. The chain
        deletes a challenge once it is resolved or its window closes, so "open" is the one
        status (a resolved challenge shows in its target and the balances)."""
        if status is not None and status not in CHALLENGE_STATUSES:
            raise errors.MalformedInput(reason=f"challenge status {status!r}: the chain keeps only open ones")
        target_id = None if target_id is None else as_id(target_id, "a target id")
        challenger = None if challenger is None else as_id(challenger, "an address")
        found = []
        for challenge_id in await self.get_object_ids(CHALLENGE):
            challenge = await self.get_object(CHALLENGE, challenge_id, Challenge)
            if challenge is None or (target_id is not None and challenge.target_id != target_id):
                continue
            if challenger is None or challenge.challenger == challenger:
                found.append(_challenge_info(challenge))
        return found

    async def verify(self, target_id: str | bytes, timeout_s: float | None = None,
                     decide_unscorable: bool = False) -> AuditFinding:
        """Audit a filled (or challenged) target as a validator does (spec §5): download its data,
        check hash and size, re-score it under all of the target's models through the scoring
        service, and compare with the claims within the network's `audit_tolerance`. The
        finding says whether the claims hold (`claims_hold`, `verdict`, `fraud`, `reason`) with
        the numbers; `timeout_s` bounds the download (default the network's audit_timeout_ms).

        Any failure of a model (no weights on chain, download, size, checksum, decrypt, load, a
        scoring failure that only that model meets, a reply of the wrong shape) leaves it out and
        names it in `report`; when it is the claimed model the claims cannot be established
        (ChallengerWins). Trouble of the auditor's own (`OWN_TROUBLE`: the scoring service or the
        network unreachable, a timeout) raises, to be tried again. A failure of the data's
        scoring that no model can be blamed for raises too, unless `decide_unscorable`: then the
        claims cannot be established either (an auditor's last attempt: a challenge must not
        lapse because its audit keeps crashing)."""
        target, submission = await self._filled_submission(as_id(target_id, "a target id"))
        revealed = submission.revealed
        parameters = await self._parameters()
        if timeout_s is None:
            timeout_s = parameters.audit_timeout_ms / 1000
        tolerance = parameters.audit_tolerance
        try:
            data, failure = await self.fetch_submission_data(target.id, timeout_s), None
        except (errors.FetchError, errors.FetchTooLarge, errors.NoRevealedSubmission) as error:
            data, failure = None, str(error)
        if data is None or data_problem(revealed, data, None) is not None:
            return audit(target, revealed, data, failure, None, tolerance)
        try:
            rescored = await self._rescore(target, revealed.model_id, data, parameters.embedding_dim)
        except OWN_TROUBLE:
            raise
        except Exception as error:  # noqa: BLE001 - nothing to blame but the data's scoring
            if not decide_unscorable:
                raise
            rescored = Rescored({}, None, [], {revealed.model_id: f"the data could not be scored: {_why(error)}"})
        return audit(target, revealed, data, None, rescored, tolerance)

    async def _rescore(self, target: Target, claimed_model: bytes, data: bytes, dim: int) -> Rescored:
        """Losses of every usable model of `target` on `data`, and the claimed model's embedding.
        A model that cannot be used is left out and named with the reason: one the scoring
        service or the chain names (`ModelUnavailable`, `ModelHasNoWeights`, an unknown model),
        or, when a failure names no model, the ones that fail when scored alone."""
        remaining, failed = list(target.model_ids), {}
        while remaining:
            try:
                manifests = await self._model_manifests(remaining)
                response = await self._score_request(None, manifests, target.embedding, data=data)
                _check_reply(response, len(manifests), dim)
            except OWN_TROUBLE:
                raise
            except Exception as error:  # noqa: BLE001 - any failure: whose is it?
                model_id = _model_named(error, remaining)
                if model_id is None:
                    return await self._rescore_each(target, claimed_model, data, dim, remaining, failed, error)
                remaining.remove(model_id)
                failed[model_id] = _why(error)
                continue
            losses = {m.model_id: loss for m, loss in zip(manifests, response.losses)}
            if manifests[response.winner].model_id == claimed_model:
                return Rescored(losses, response.embedding, list(failed), failed)
            if claimed_model not in losses:
                return Rescored(losses, None, list(failed), failed)
            scored = await self._score_alone(target, claimed_model, data, dim)
            if isinstance(scored, str):  # the claimed model fails alone: it cannot be used
                losses.pop(claimed_model)
                failed[claimed_model] = scored
                return Rescored(losses, None, list(failed), failed)
            return Rescored(losses, scored.embedding, list(failed), failed)
        return Rescored({}, None, list(failed), failed)

    async def _rescore_each(self, target: Target, claimed_model: bytes, data: bytes, dim: int,
                            remaining: list[bytes], failed: dict[bytes, str], error: Exception) -> Rescored:
        """Each remaining model scored alone, after a failure that named none: the models that
        fail alone are the ones to blame. When every one fails, no model is (the data or the
        service is): `error` is raised again."""
        scored = {model_id: await self._score_alone(target, model_id, data, dim) for model_id in remaining}
        if all(isinstance(s, str) for s in scored.values()):
            raise error
        failed = {**failed, **{m: s for m, s in scored.items() if isinstance(s, str)}}
        losses = {m: s.loss_score for m, s in scored.items() if not isinstance(s, str)}
        claimed = scored.get(claimed_model)
        return Rescored(losses, None if claimed is None or isinstance(claimed, str) else claimed.embedding,
                        list(failed), failed)

    async def _score_alone(self, target: Target, model_id: bytes, data: bytes, dim: int):
        """`model_id` alone on `data`: its ScoreResponse, or why it cannot be used (a str)."""
        try:
            manifests = await self._model_manifests([model_id])
            response = await self._score_request(None, manifests, target.embedding, data=data)
            _check_reply(response, 1, dim)
            return response
        except OWN_TROUBLE:
            raise
        except Exception as error:  # noqa: BLE001 - this model's failure, whatever it is
            return _why(error)

    async def report_model(self, keypair: Keypair, model_id: str | bytes) -> TransactionEffects:
        """A validator's report of a model whose weights cannot be used (spec §2): a report
        quorum at the epoch change slashes and deactivates it."""
        return await self.execute(keypair, ReportModel(model_id=as_id(model_id, "a model id")))

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
            active = stake_is_active(staked.activation_epoch, epoch) and pool.pool_token_balance
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

