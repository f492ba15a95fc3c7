"""Audits and challenge votes (spec §5), pure: no Ray, no I/O, no clock.

`audit` decides what one validator votes on a challenged (or sampled) submission from what it
found: the downloaded bytes (or why there are none) and the target's models re-scored by the
scoring function, compared within the genesis `audit_tolerance`. `VoteCollector` is the
aggregator's tally: it checks each signed vote, sums voting power per verdict and builds the
ResolveChallenge certificate once one verdict has the quorum; votes that do not count are kept as
evidence.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from soma_ray.protocol.crypto import Certificate, Committee, verify_signature
from soma_ray.protocol.encoding import Struct, blake2b256, decode
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.params import QUORUM, Parameters
from soma_ray.protocol.submissions import LOSS_SCALE, challenge_vote_domain, challenge_vote_message
from soma_ray.protocol.targets import as_embedding, cosine_distance_fixed
from soma_ray.protocol.types import (
    ChallengeKind, ChangeEpoch, Checkpoint, CheckpointEntry, InitiateChallenge, ResolveChallenge,
    RevealedSubmission, SignedTransaction, Target, TransactionEffects, Verdict,
)

# audit_tolerance (spec §5, the genesis parameter `Parameters.audit_tolerance`, fixed point 1e-9):
# a recomputed value matches a claimed one when |claimed − recomputed| ≤ t + t × |recomputed|
# (relative and absolute alike), and a recomputed distance passes the threshold when it is at
# most threshold + audit_tolerance. The two constants are the default genesis value as floats.
DEFAULT_AUDIT_TOLERANCE = Parameters().audit_tolerance
TOLERANCE_SCALE = 10**9
AUDIT_RTOL = AUDIT_ATOL = DEFAULT_AUDIT_TOLERANCE / TOLERANCE_SCALE


def within_tolerance(claimed, recomputed, tolerance: int = DEFAULT_AUDIT_TOLERANCE) -> bool:
    """Every element of `claimed` matches `recomputed` within the audit tolerance (fixed point:
    rtol = atol = tolerance / 1e9)."""
    t = tolerance / TOLERANCE_SCALE
    return bool(np.allclose(claimed, recomputed, rtol=t, atol=t, equal_nan=False))


# ------------------------------------------------------------------------------ the audit


class Rescored(NamedTuple):
    """What the scoring function gave for the target's models on the submitted data."""

    losses: dict[bytes, float]  # model id → loss, for every model that could be used
    embedding: bytes | None  # the claimed model's embedding (little-endian float32), if it could be used
    unloadable: list[bytes]  # models whose weights could not be used (to be reported)
    reasons: dict[bytes, str] = {}  # why, for those of `unloadable` the scorer said


class AuditFinding(Struct):
    """One validator's verdict on a challenged submission, with the numbers behind it."""

    verdict: Verdict
    fraud: ChallengeKind | None  # what was found (None: the claims hold)
    reason: str
    claimed_loss: float
    recomputed_loss: float | None  # the claimed model's (None: not recomputed)
    best_model: bytes | None  # the lowest-loss model that could be scored
    best_loss: float | None
    distance: int | None  # the chain's fixed-point distance of the recomputed embedding
    threshold: int
    report: list[bytes] = []  # models this validator reports (ReportModel) instead
    tolerance: int = DEFAULT_AUDIT_TOLERANCE  # the audit_tolerance it was judged with

    @property
    def claims_hold(self) -> bool:
        return self.fraud is None


def data_problem(revealed: RevealedSubmission, data: bytes | None, failure: str | None) -> str | None:
    """Why the data is not what the reveal names (DataFraud), or None when it is."""
    if data is None:
        return f"data not available: {failure or 'no bytes'}"
    if len(data) != revealed.data_size:
        return f"data is {len(data)} bytes, the reveal says {revealed.data_size}"
    if blake2b256(data) != revealed.data_hash:
        return "data hash differs from the revealed data_hash"
    return None


def score_problem(target: Target, revealed: RevealedSubmission, rescored: Rescored,
                  claimed_loss: float, distance: int | None,
                  tolerance: int = DEFAULT_AUDIT_TOLERANCE) -> str | None:
    """Why the revealed scores are not what the models give (ScoreFraud), or None.

    The claimed model must be usable: when its weights cannot be used (or it was not
    re-scored) the claims cannot be established, and that is ScoreFraud (decision of issue 20:
    otherwise a model's owner could shield a colluding miner by breaking the weights after the
    fill). Any other model that cannot be used is left out of the comparison (and reported)."""
    recomputed = rescored.losses.get(revealed.model_id)
    if recomputed is None:
        why = rescored.reasons.get(revealed.model_id, "not re-scored")
        return (f"the claimed model 0x{revealed.model_id.hex()} cannot be used ({why}): "
                "the claims cannot be established")
    if not math.isfinite(recomputed) or not within_tolerance(claimed_loss, recomputed, tolerance):
        return f"claimed loss {claimed_loss:.6g}, the model gives {recomputed:.6g}"
    lower = [(loss, model) for model, loss in rescored.losses.items()
             if model != revealed.model_id and math.isfinite(loss)
             and not within_tolerance(recomputed, loss, tolerance) and loss < recomputed]
    if lower:
        loss, model = min(lower)
        return f"model 0x{model.hex()} has the lower loss {loss:.6g} (claimed model: {recomputed:.6g})"
    claimed = np.frombuffer(revealed.embedding, dtype="<f4")
    recomputed_embedding = None if rescored.embedding is None else np.frombuffer(rescored.embedding, dtype="<f4")
    if (recomputed_embedding is None or recomputed_embedding.shape != claimed.shape
            or not within_tolerance(claimed, recomputed_embedding, tolerance)):
        return "claimed embedding differs from the model's"
    if distance is None or distance > target.distance_threshold + tolerance:
        return (f"recomputed distance {distance} exceeds the threshold {target.distance_threshold} "
                f"by more than the tolerance {tolerance}")
    return None


def recomputed_distance(target: Target, rescored: Rescored) -> int | None:
    if rescored.embedding is None:
        return None
    try:
        return cosine_distance_fixed(as_embedding(rescored.embedding), target.embedding)
    except ProtocolError:  # wrong dimension, non-finite or zero: no distance to speak of
        return None


def audit(target: Target, revealed: RevealedSubmission, data: bytes | None, failure: str | None,
          rescored: Rescored | None, tolerance: int = DEFAULT_AUDIT_TOLERANCE) -> AuditFinding:
    """The verdict of spec §5 with issue 20's decisions: the data unavailable or not the
    revealed bytes → ChallengerWins (DataFraud); the scores not what the models give within
    `tolerance` (the genesis audit_tolerance), the recomputed distance over the threshold by more
    than it, or the claimed model unusable → ChallengerWins (ScoreFraud); otherwise MinerWins.
    `rescored` is None when the data was not scored (it is not needed once the data is wrong).
    Unusable models go into `report`."""
    claimed_loss = revealed.loss_score / LOSS_SCALE
    rescored = rescored or Rescored({}, None, [])
    best = min(((loss, model) for model, loss in rescored.losses.items() if math.isfinite(loss)), default=None)
    distance = recomputed_distance(target, rescored)
    problem = data_problem(revealed, data, failure)
    fraud = "DataFraud" if problem else None
    if problem is None:
        problem = score_problem(target, revealed, rescored, claimed_loss, distance, tolerance)
        fraud = "ScoreFraud" if problem else None
    return AuditFinding(
        verdict="ChallengerWins" if fraud else "MinerWins", fraud=fraud, reason=problem or "the claims hold",
        claimed_loss=claimed_loss, recomputed_loss=rescored.losses.get(revealed.model_id),
        best_model=None if best is None else best[1], best_loss=None if best is None else best[0],
        distance=distance, threshold=target.distance_threshold, report=sorted(rescored.unloadable),
        tolerance=tolerance)


# ------------------------------------------------------------------------------ the feed


class ChallengeChanges(NamedTuple):
    opened: list[bytes]  # challenges this checkpoint opened
    resolved: list[bytes]  # challenges it resolved
    epoch_changed: bool  # an epoch change closes expired challenges and may change the committee


def challenge_changes(checkpoint: Checkpoint, effects: list[TransactionEffects]) -> ChallengeChanges:
    """What a certified checkpoint (and its certified effects) did to challenges."""
    opened, resolved, epoch_changed = [], [], False
    for raw, effect in zip(checkpoint.transactions, effects):
        entry = decode(raw, CheckpointEntry)
        if isinstance(entry, ChangeEpoch):
            epoch_changed = True
        elif isinstance(entry, SignedTransaction) and effect.error is None:
            kind = entry.transaction.kind
            if isinstance(kind, InitiateChallenge):
                opened.append(effect.created[0])
            elif isinstance(kind, ResolveChallenge):
                resolved.append(kind.challenge_id)
    return ChallengeChanges(opened, resolved, epoch_changed)


# ------------------------------------------------------------------------------ votes

# A vote on the wire is a few hundred bytes; anything longer is garbage, refused unread.
MAX_VOTE_BYTES = 1_024
# Evidence kept at most (the oldest goes first), and challenges tallied at once.
MAX_EVIDENCE = 1_000
MAX_CHALLENGES = 10_000


class ChallengeVote(Struct):
    """A validator's signed vote: `signature` is its key's over DOMAIN_CHALLENGE_VOTE || chain id ||
    challenge_vote_message(challenge_id, verdict)."""

    challenge_id: bytes
    verdict: Verdict
    voter: bytes  # the validator's address
    signature: bytes


def sign_vote(keypair, challenge_id: bytes, verdict: Verdict, chain_id: bytes) -> ChallengeVote:
    """`keypair`'s vote on the network `chain_id` (its SystemState.chain_id)."""
    signature = keypair.sign(challenge_vote_domain(chain_id), challenge_vote_message(challenge_id, verdict))
    return ChallengeVote(bytes(challenge_id), verdict, keypair.address, signature)


class Evidence(Struct):
    """A vote that did not count, and why (`vote` holds the bytes as received, cut to
    MAX_VOTE_BYTES)."""

    reason: str
    vote: bytes
    voter: bytes | None = None
    challenge_id: bytes | None = None


class Added(NamedTuple):
    counted: bool
    reason: str  # why not, when not counted
    challenge_id: bytes | None = None  # the challenge a decodable vote names


class VoteCollector:
    """The votes on open challenges under one committee (the current one: a certificate must be
    signed by it). A voter's first valid vote on a challenge counts; one who also votes the
    other verdict counts for neither from then on. Garbage, bad signatures and non-members
    count for nothing. Everything that does not count is kept as evidence."""

    def __init__(self, committee: Committee, quorum: int = QUORUM, *, chain_id: bytes):
        self.committee = committee
        self.quorum = quorum
        self.chain_id = bytes(chain_id)  # the network's: a vote signed for another never counts
        self._domain = challenge_vote_domain(self.chain_id)
        self._member = {m.address: i for i, m in enumerate(committee.members)}
        self._votes: dict[bytes, dict[int, ChallengeVote]] = {}  # challenge → member index → vote
        self._equivocators: dict[bytes, set[int]] = {}
        self.evidence: list[Evidence] = []

    def add(self, raw: bytes) -> Added:
        """Check and count one encoded ChallengeVote."""
        raw = bytes(raw)
        if len(raw) > MAX_VOTE_BYTES:
            return self._reject(raw, f"{len(raw)} bytes, more than a vote's {MAX_VOTE_BYTES}")
        try:
            vote = decode(raw, ChallengeVote)
        except ProtocolError:  # MalformedInput
            return self._reject(raw, "not a vote (undecodable)")
        return self.add_vote(vote, raw)

    def add_vote(self, vote: ChallengeVote, raw: bytes = b"") -> Added:
        index = self._member.get(vote.voter)
        if index is None:
            return self._reject(raw, "not a member of the current committee", vote)
        member = self.committee.members[index]
        message = challenge_vote_message(vote.challenge_id, vote.verdict)
        if not verify_signature(member.public_key, self._domain, message, vote.signature):
            return self._reject(raw, "bad signature", vote)
        votes = self._votes.get(vote.challenge_id)
        if votes is None:
            if len(self._votes) >= MAX_CHALLENGES:
                return self._reject(raw, f"already tallying {MAX_CHALLENGES} challenges", vote)
            votes = self._votes[vote.challenge_id] = {}
        earlier = votes.get(index)
        if earlier is not None and earlier.verdict != vote.verdict:
            self._equivocators.setdefault(vote.challenge_id, set()).add(index)
            return self._reject(raw, f"voted {earlier.verdict} before: conflicting votes", vote)
        if index in self._equivocators.get(vote.challenge_id, ()):
            return Added(False, "this voter cast conflicting votes: it counts for neither verdict", vote.challenge_id)
        votes[index] = vote
        return Added(True, "", vote.challenge_id)

    def _reject(self, raw: bytes, reason: str, vote: ChallengeVote | None = None) -> Added:
        if len(self.evidence) >= MAX_EVIDENCE:
            del self.evidence[0]
        challenge_id = vote and vote.challenge_id
        self.evidence.append(Evidence(reason, raw[:MAX_VOTE_BYTES], vote and vote.voter, challenge_id))
        return Added(False, reason, challenge_id)

    def power(self, challenge_id: bytes, verdict: Verdict) -> int:
        """Voting power of the members whose counted vote on `challenge_id` is `verdict`."""
        return sum(self.committee.members[i].voting_power for i in self._counted(challenge_id, verdict))

    def _counted(self, challenge_id: bytes, verdict: Verdict) -> list[int]:
        excluded = self._equivocators.get(challenge_id, set())
        return sorted(i for i, v in self._votes.get(challenge_id, {}).items()
                      if v.verdict == verdict and i not in excluded)

    def certificate(self, challenge_id: bytes) -> tuple[Verdict, Certificate] | None:
        """The verdict that reached the quorum and its certificate (signers ascending), if any."""
        for verdict in ("ChallengerWins", "MinerWins"):
            if self.power(challenge_id, verdict) >= self.quorum:
                signers = self._counted(challenge_id, verdict)
                votes = self._votes[challenge_id]
                return verdict, Certificate(signers, [votes[i].signature for i in signers])
        return None

    def voters(self, challenge_id: bytes) -> set[bytes]:
        return {v.voter for v in self._votes.get(challenge_id, {}).values()}

    def forget(self, challenge_id: bytes) -> None:
        """Drop a challenge that is no longer open (its evidence stays)."""
        self._votes.pop(challenge_id, None)
        self._equivocators.pop(challenge_id, None)

    def open_challenges(self) -> list[bytes]:
        return list(self._votes)

    def under(self, committee: Committee) -> VoteCollector:
        """The same votes and evidence tallied under a new committee (after an epoch change):
        votes of validators no longer in it stop counting."""
        moved = VoteCollector(committee, self.quorum, chain_id=self.chain_id)
        moved.evidence = self.evidence
        for challenge_id, votes in self._votes.items():
            for vote in votes.values():
                moved.add_vote(vote)
            for index in self._equivocators.get(challenge_id, ()):
                address = self.committee.members[index].address
                if address in moved._member:
                    moved._equivocators.setdefault(challenge_id, set()).add(moved._member[address])
        return moved
