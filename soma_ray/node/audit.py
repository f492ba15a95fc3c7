"""Audits and challenge votes (spec §5), pure: no Ray, no I/O, no clock.

`audit` decides what one validator votes on a challenged submission from what it found: the
downloaded bytes (or why there are none) and the target's models re-scored by the scoring
function. `VoteCollector` is the aggregator's tally: it checks each signed vote, sums voting
power per verdict and builds the ResolveChallenge certificate once one verdict has the quorum;
votes that do not count are kept as evidence.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from soma_ray.protocol.crypto import Certificate, Committee, verify_signature
from soma_ray.protocol.encoding import DOMAIN_CHALLENGE_VOTE, Struct, blake2b256, decode
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.params import QUORUM
from soma_ray.protocol.submissions import LOSS_SCALE, challenge_vote_message
from soma_ray.protocol.targets import as_embedding, cosine_distance_fixed
from soma_ray.protocol.types import (
    ChallengeKind, ChangeEpoch, Checkpoint, CheckpointEntry, InitiateChallenge, ResolveChallenge,
    RevealedSubmission, SignedTransaction, Target, TransactionEffects, Verdict,
)

# audit_tolerance (spec §5): a recomputed value matches a claimed one when
# |claimed − recomputed| ≤ AUDIT_ATOL + AUDIT_RTOL × |recomputed|.
AUDIT_RTOL = 1e-2
AUDIT_ATOL = 1e-2


def within_tolerance(claimed, recomputed) -> bool:
    """Every element of `claimed` matches `recomputed` within the audit tolerance."""
    return bool(np.allclose(claimed, recomputed, rtol=AUDIT_RTOL, atol=AUDIT_ATOL, equal_nan=False))


# ------------------------------------------------------------------------------ the audit


class Rescored(NamedTuple):
    """What the scoring function gave for the target's models on the submitted data."""

    losses: dict[bytes, float]  # model id → loss, for every model that could be loaded
    embedding: bytes | None  # the claimed model's embedding (little-endian float32), if it loaded
    unloadable: list[bytes]  # models whose weights could not be used (to be reported)


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
                  claimed_loss: float, distance: int | None) -> str | None:
    """Why the revealed scores are not what the models give (ScoreFraud), or None. A model that
    could not be loaded is never evidence of fraud: only what was recomputed is compared."""
    recomputed = rescored.losses.get(revealed.model_id)
    if recomputed is None:  # the claimed model did not load: nothing to contradict the claims
        return None
    if not math.isfinite(recomputed) or not within_tolerance(claimed_loss, recomputed):
        return f"claimed loss {claimed_loss:.6g}, the model gives {recomputed:.6g}"
    lower = [(loss, model) for model, loss in rescored.losses.items()
             if model != revealed.model_id and math.isfinite(loss) and not within_tolerance(recomputed, loss)
             and loss < recomputed]
    if lower:
        loss, model = min(lower)
        return f"model 0x{model.hex()} has the lower loss {loss:.6g} (claimed model: {recomputed:.6g})"
    claimed = np.frombuffer(revealed.embedding, dtype="<f4")
    if rescored.embedding is None or not within_tolerance(claimed, np.frombuffer(rescored.embedding, dtype="<f4")):
        return "claimed embedding differs from the model's"
    if distance is None or distance > target.distance_threshold:
        return f"recomputed distance {distance} exceeds the threshold {target.distance_threshold}"
    return None


def recomputed_distance(target: Target, rescored: Rescored) -> int | None:
    if rescored.embedding is None:
        return None
    try:
        return cosine_distance_fixed(as_embedding(rescored.embedding), target.embedding)
    except ProtocolError:  # wrong dimension, non-finite or zero: no distance to speak of
        return None


def audit(target: Target, revealed: RevealedSubmission, data: bytes | None, failure: str | None,
          rescored: Rescored | None) -> AuditFinding:
    """The verdict of spec §5: the data unavailable or not the revealed bytes → ChallengerWins
    (DataFraud); the scores not what the models give within the tolerance → ChallengerWins
    (ScoreFraud); otherwise MinerWins. `rescored` is None when the data was not scored (it is
    not needed once the data is wrong). Unloadable models go into `report`."""
    claimed_loss = revealed.loss_score / LOSS_SCALE
    rescored = rescored or Rescored({}, None, [])
    best = min(((loss, model) for model, loss in rescored.losses.items() if math.isfinite(loss)), default=None)
    distance = recomputed_distance(target, rescored)
    problem = data_problem(revealed, data, failure)
    fraud = "DataFraud" if problem else None
    if problem is None:
        problem = score_problem(target, revealed, rescored, claimed_loss, distance)
        fraud = "ScoreFraud" if problem else None
    if problem is None and revealed.model_id in rescored.unloadable:
        problem = "the claimed model could not be loaded: reported, the claims stand"
    return AuditFinding(
        verdict="ChallengerWins" if fraud else "MinerWins", fraud=fraud, reason=problem or "the claims hold",
        claimed_loss=claimed_loss, recomputed_loss=rescored.losses.get(revealed.model_id),
        best_model=None if best is None else best[1], best_loss=None if best is None else best[0],
        distance=distance, threshold=target.distance_threshold, report=sorted(rescored.unloadable))


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
    """A validator's signed vote: `signature` is its key's over DOMAIN_CHALLENGE_VOTE ||
    challenge_vote_message(challenge_id, verdict)."""

    challenge_id: bytes
    verdict: Verdict
    voter: bytes  # the validator's address
    signature: bytes


def sign_vote(keypair, challenge_id: bytes, verdict: Verdict) -> ChallengeVote:
    signature = keypair.sign(DOMAIN_CHALLENGE_VOTE, challenge_vote_message(challenge_id, verdict))
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

    def __init__(self, committee: Committee, quorum: int = QUORUM):
        self.committee = committee
        self.quorum = quorum
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
        if not verify_signature(member.public_key, DOMAIN_CHALLENGE_VOTE, message, vote.signature):
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
        moved = VoteCollector(committee, self.quorum)
        moved.evidence = self.evidence
        for challenge_id, votes in self._votes.items():
            for vote in votes.values():
                moved.add_vote(vote)
            for index in self._equivocators.get(challenge_id, ()):
                address = self.committee.members[index].address
                if address in moved._member:
                    moved._equivocators.setdefault(challenge_id, set()).add(moved._member[address])
        return moved
