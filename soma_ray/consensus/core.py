"""Tendermint-style BFT consensus as pure message handlers.

One `ConsensusCore` runs the heights of one committee (one epoch). Every handler takes plain
data and returns a list of outputs (`messages.Output`) that the shell performs in order; the core
never reads a clock, draws randomness or does I/O. The algorithm is the one of Buchman, Kwon and
Milosevic, "The latest gossip on BFT consensus" (2018), with stake-weighted quorums; the rule
names in comments follow that paper. See docs/consensus.md for the safety and liveness argument.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Protocol

import msgspec

from soma_ray.consensus.errors import SafetyStateAhead, ValueNotCertified
from soma_ray.consensus.messages import (
    NIL_ROUND,
    Broadcast,
    CertifiedValue,
    CommitCertificate,
    Decide,
    Evidence,
    EvidenceFound,
    Message,
    Output,
    FallenBehind,
    PeerBehind,
    PersistSafetyState,
    Proposal,
    ProposalEquivocation,
    SafetyState,
    Send,
    SetTimer,
    Step,
    Vote,
    is_member,
    proposal_signature_valid,
    sign_proposal,
    sign_vote,
    value_digest,
    verify_certified_value,
    vote_signature_valid,
)
from soma_ray.consensus.schedule import LeaderSchedule
from soma_ray.consensus.votes import VoteBook
from soma_ray.protocol.crypto import Committee, Keypair
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.errors import InvalidCertificate


class Application(Protocol):
    """What consensus needs from the state machine; both calls must be deterministic."""

    def propose(self, height: int) -> bytes:
        """The value this node proposes as leader (the encoded checkpoint)."""

    def validate(self, height: int, value: bytes) -> bool:
        """Whether `value` is a correct next value (re-execute, compare the state_root)."""


class TimeoutConfig(msgspec.Struct, frozen=True):
    """Step timeouts in ms; each grows by `increase_ms` per round so that after GST they
    eventually exceed the network delay."""

    propose_ms: int = 1000
    prevote_ms: int = 500
    precommit_ms: int = 500
    increase_ms: int = 500

    def duration(self, step: Step, round: int) -> int:
        base = (self.propose_ms, self.prevote_ms, self.precommit_ms)[step]
        return base + round * self.increase_ms


class ConsensusCore:
    """Consensus of one committee from `height` on. Call `start_height()` to begin a height.

    `keypair` None (or not in the committee) makes an observer that follows decisions but never
    signs. `chain_id` is the network's (`SystemState.chain_id`): every message is signed and
    verified under it. `safety_state` is the last `PersistSafetyState.data` the node persisted.
    """

    def __init__(
        self,
        committee: Committee,
        keypair: Keypair | None,
        app: Application,
        height: int,
        *,
        chain_id: bytes,
        safety_state: bytes | None = None,
        timeouts: TimeoutConfig = TimeoutConfig(),
        retain_decisions: int = 16,
        max_buffered: int = 1024,
        max_rounds_ahead: int = 256,
        max_evidence: int = 256,
    ) -> None:
        self.committee = committee
        self.chain_id = bytes(chain_id)
        self.index = _member_index(committee, keypair)
        self._keypair = keypair
        self._app = app
        self._schedule = LeaderSchedule(committee)
        self._timeouts = timeouts
        self._retain = retain_decisions
        self._max_buffered = max_buffered
        self._max_rounds_ahead = max_rounds_ahead
        self._skip_power = committee.total_power - committee.quorum + 1
        self.height = height
        self.stats: Counter[str] = Counter()
        self.evidence: deque[Evidence] = deque(maxlen=max_evidence)  # the latest; the shell keeps all
        self._decisions: dict[int, CertifiedValue] = {}
        self._buffer: list[Message] = []
        self._reported_behind = -1  # the highest height a FallenBehind was emitted for
        self._restored = _restore(safety_state, height)
        self._reset_height()

    # ----------------------------------------------------------------- public handlers

    def start_height(self) -> list[Output]:
        """Begin `self.height`: resume the persisted round or start round 0, then replay
        messages that arrived early. Calling it again for a started height does nothing."""
        if self._started:
            return []
        self._started = True
        restored, self._restored = self._restored, None
        out = self._resume(restored) if restored is not None else self._start_round(0)
        early, self._buffer = self._buffer, []
        for message in early:
            out += self.on_message(message)
        return out

    def on_message(self, message: Message) -> list[Output]:
        if isinstance(message, Proposal):
            return self.on_proposal(message)
        if isinstance(message, Vote):
            return self.on_vote(message)
        return self.on_commit_certificate(message)

    def on_proposal(self, proposal: Proposal) -> list[Output]:
        if not self._accepts_sender(proposal.signer):
            return []
        if not self._current(proposal):
            return self._route_other_height(proposal)
        if self._schedule.leader(proposal.height, proposal.round) != proposal.signer:
            return self._reject("wrong_leader")
        if not NIL_ROUND <= proposal.valid_round < proposal.round:
            return self._reject("malformed")
        earlier = self._proposals.get(proposal.round)
        if earlier == proposal:  # a re-sent copy of a proposal whose signature was checked
            return self._reject("duplicate")
        digest = value_digest(proposal.value)
        if not proposal_signature_valid(self.committee, proposal, digest, chain_id=self.chain_id):
            return self._reject("invalid_signature")
        if earlier is not None:
            return self._record_evidence(ProposalEquivocation(first=earlier, second=proposal))
        self._store_proposal(proposal, digest)
        return self._progress()

    def on_vote(self, vote: Vote) -> list[Output]:
        if not self._accepts_sender(vote.signer):
            return []
        if not self._current(vote):
            return self._route_other_height(vote)
        if vote.kind not in (Step.PREVOTE, Step.PRECOMMIT) or vote.round < 0:
            return self._reject("malformed")
        if not vote_signature_valid(self.committee, vote, chain_id=self.chain_id):
            return self._reject("invalid_signature")
        return self._add_vote(vote) + self._progress()

    def on_timeout(self, height: int, round: int, step: Step) -> list[Output]:
        if not self._started or height != self.height or round != self.round:
            return []
        if step == Step.PROPOSE and self.step == Step.PROPOSE:
            return self._prevote(None) + self._progress()
        # Each timer also re-sends this round's own messages: links may have lost them.
        if step == Step.PREVOTE and self.step == Step.PREVOTE:
            return self._resend_own_messages() + self._precommit(None) + self._progress()
        if step == Step.PRECOMMIT:
            return self._resend_own_messages() + self._start_round(round + 1)
        return self._resend_own_messages()

    def on_commit_certificate(self, certified: CertifiedValue) -> list[Output]:
        """Catch-up: a certified value for the height being decided is decided at once."""
        certificate = certified.certificate
        if certificate.height < self.height:
            return self._reject("stale")
        if certificate.height > self.height or not self._started:
            return self._buffer_early(certified, certificate.height)
        try:
            verify_certified_value(self.committee, certified.value, certificate, chain_id=self.chain_id)
        except ValueNotCertified:
            return self._reject("malformed")
        except InvalidCertificate:
            return self._reject("invalid_certificate")
        return self._decide(certified.value, certificate)

    def safety_state(self) -> bytes:
        """Canonical bytes to persist; pass them back as `safety_state=` after a restart."""
        return encode(
            SafetyState(
                height=self.height,
                round=self.round,
                locked_round=self._locked_round,
                locked_value=self._locked_value,
                valid_round=self._valid_round,
                valid_value=self._valid_value,
                prevote=self._own_votes.get((self.round, Step.PREVOTE)),
                precommit=self._own_votes.get((self.round, Step.PRECOMMIT)),
                proposal=self._own_proposal,
                valid_polka=self._valid_polka(),
            )
        )

    def decision(self, height: int) -> CertifiedValue | None:
        """A retained decision (the last `retain_decisions` heights), for serving peers."""
        return self._decisions.get(height)

    # ----------------------------------------------------------------- height and round

    def _reset_height(self) -> None:
        self._started = False
        self.round = 0
        self.step = Step.PROPOSE
        # Each value is hashed once, where it enters the core; the rules compare digests.
        self._locked_round, self._locked_value, self._locked_digest = NIL_ROUND, None, None
        self._valid_round, self._valid_value, self._valid_digest = NIL_ROUND, None, None
        self._proposals: dict[int, Proposal] = {}
        self._proposal_digests: dict[int, bytes] = {}
        self._values: dict[bytes, bytes] = {}
        self._validity: dict[bytes, bool] = {}
        self._votes = VoteBook(self.committee)
        self._certified: dict[bytes, int] = {}
        self._own_votes: dict[tuple[int, Step], Vote] = {}
        self._own_proposal: Proposal | None = None
        self._done: set[tuple[str, int]] = set()
        self._served: set[tuple[int, int, int]] = set()

    def _start_round(self, round: int) -> list[Output]:
        self.round, self.step = round, Step.PROPOSE
        self._own_proposal = None
        out: list[Output] = []
        if self.index is not None and self._schedule.leader(self.height, round) == self.index:
            out += self._propose(round)
        out.append(self._timer(Step.PROPOSE))
        return out + self._progress()

    def _propose(self, round: int) -> list[Output]:
        """StartRound as leader: re-propose the value of the latest polka, if any (rules 14-19).

        The polka's prevotes go along: peers that lost them (or restarted) need them to accept a
        re-proposal, or a locked minority and an unlocked one could block each other for ever.
        """
        if self._valid_value is not None:
            value, digest = self._valid_value, self._valid_digest
        else:
            value = self._app.propose(self.height)
            digest = value_digest(value)
        proposal = sign_proposal(self._keypair, self.index, self.height, round, value, self._valid_round, digest,
                                 chain_id=self.chain_id)
        self._own_proposal = proposal
        self._store_proposal(proposal, digest)
        polka = [Broadcast(v) for v in self._valid_polka()]
        return [PersistSafetyState(self.safety_state()), Broadcast(proposal)] + polka

    def _valid_polka(self) -> list[Vote]:
        if self._valid_value is None:
            return []
        return self._votes.votes_for(self._valid_round, Step.PREVOTE, self._valid_digest)

    def _resume(self, state: SafetyState) -> list[Output]:
        """Re-enter the persisted round with the persisted votes: re-send them, sign nothing new."""
        self.round = state.round
        self._locked_round, self._locked_value = state.locked_round, state.locked_value
        self._locked_digest = _digest_or_none(state.locked_value)
        self._valid_round, self._valid_value = state.valid_round, state.valid_value
        self._valid_digest = _digest_or_none(state.valid_value)
        for vote in state.valid_polka:
            self._votes.add(vote)
        out: list[Output] = []
        if state.proposal is not None:
            self._own_proposal = state.proposal
            self._store_proposal(state.proposal, value_digest(state.proposal.value))
            out.append(Broadcast(state.proposal))
        self.step = Step.PROPOSE
        for vote in (state.prevote, state.precommit):
            if vote is not None:
                self._own_votes[(vote.round, vote.kind)] = vote
                self._add_vote(vote)
                self.step = vote.kind
                out.append(Broadcast(vote))
        out.append(self._timer(self.step))
        return out + self._progress()

    def _timer(self, step: Step) -> SetTimer:
        return SetTimer(self.height, self.round, step, self._timeouts.duration(step, self.round))

    # ----------------------------------------------------------------- the rules

    def _progress(self) -> list[Output]:
        """Apply the upon-rules until none fires; the first to fire restarts the scan.

        A rule returns None when it does not apply, else its outputs (possibly none)."""
        rules = (
            self._rule_decide,
            self._rule_skip_round,
            self._rule_prevote_on_proposal,
            self._rule_lock_on_polka,
            self._rule_precommit_nil,
            self._rule_precommit_timer,
        )
        out: list[Output] = []
        start_height = self.height
        while self.height == start_height and self._started:
            fired = next((o for o in (rule() for rule in rules) if o is not None), None)
            if fired is None:
                break
            out += fired
        return out

    def _rule_decide(self) -> list[Output] | None:
        """Rule 49: a proposal's value with ≥ quorum precommits in any round is decided."""
        for digest, round in self._certified.items():
            if digest in self._values:
                votes = self._votes.votes_for(round, Step.PRECOMMIT, digest)
                certificate = CommitCertificate(
                    height=self.height,
                    round=round,
                    value_digest=digest,
                    signer_indices=[v.signer for v in votes],
                    signatures=[v.signature for v in votes],
                )
                return self._decide(self._values[digest], certificate)
        return None

    def _rule_skip_round(self) -> list[Output] | None:
        """Rule 55: more than a third of the power is in a later round, so join it."""
        later = [
            r for r in self._votes.rounds_seen()
            if r > self.round and self._votes.round_power(r) >= self._skip_power
        ]
        return self._start_round(max(later)) if later else None

    def _rule_prevote_on_proposal(self) -> list[Output] | None:
        """Rules 22 and 28: prevote the round's proposal unless locked on something else."""
        proposal = self._proposals.get(self.round)
        if self.step != Step.PROPOSE or proposal is None:
            return None
        digest = self._proposal_digests[self.round]
        if proposal.valid_round == NIL_ROUND:
            acceptable = self._locked_round == NIL_ROUND or self._locked_is(digest)
        elif self._votes.power_for(proposal.valid_round, Step.PREVOTE, digest) >= self.committee.quorum:
            acceptable = self._locked_round <= proposal.valid_round or self._locked_is(digest)
        else:
            return None  # wait for the polka the leader claims, or for the propose timeout
        return self._prevote(digest if acceptable and self._valid(digest) else None)

    def _rule_lock_on_polka(self) -> list[Output] | None:
        """Rule 36: a polka for the round's valid proposal locks it (and makes it the valid value)."""
        proposal = self._proposals.get(self.round)
        if self.step == Step.PROPOSE or proposal is None or ("polka", self.round) in self._done:
            return None
        digest = self._proposal_digests[self.round]
        if self._votes.power_for(self.round, Step.PREVOTE, digest) < self.committee.quorum:
            return None
        if not self._valid(digest):
            return None
        self._done.add(("polka", self.round))
        self._valid_round, self._valid_value, self._valid_digest = self.round, proposal.value, digest
        if self.step != Step.PREVOTE:
            return []
        self._locked_round, self._locked_value, self._locked_digest = self.round, proposal.value, digest
        return self._precommit(digest)

    def _rule_precommit_nil(self) -> list[Output] | None:
        """Rule 44: a nil polka means no value can be decided in this round."""
        if self.step != Step.PREVOTE:
            return None
        if self._votes.power_for(self.round, Step.PREVOTE, None) < self.committee.quorum:
            return None
        return self._precommit(None)

    def _rule_precommit_timer(self) -> list[Output] | None:
        """Rule 47: a quorum precommitted something in this round: end the round on timeout."""
        if ("precommit-timer", self.round) in self._done:
            return None
        if self._votes.power_any(self.round, Step.PRECOMMIT) < self.committee.quorum:
            return None
        self._done.add(("precommit-timer", self.round))
        return [self._timer(Step.PRECOMMIT)]

    # ----------------------------------------------------------------- voting

    def _prevote(self, digest: bytes | None) -> list[Output]:
        self.step = Step.PREVOTE
        return self._cast(Step.PREVOTE, digest) + [self._timer(Step.PREVOTE)]

    def _precommit(self, digest: bytes | None) -> list[Output]:
        self.step = Step.PRECOMMIT
        return self._cast(Step.PRECOMMIT, digest) + [self._timer(Step.PRECOMMIT)]

    def _cast(self, kind: Step, digest: bytes | None) -> list[Output]:
        """Sign one vote; the safety state that records it is persisted before it is sent."""
        if self.index is None:
            return []
        key = (self.round, kind)
        assert key not in self._own_votes, f"would sign a second {kind.name} in round {self.round}"
        vote = sign_vote(self._keypair, self.index, kind, self.height, self.round, digest, chain_id=self.chain_id)
        self._own_votes[key] = vote
        self._add_vote(vote)
        return [PersistSafetyState(self.safety_state()), Broadcast(vote)]

    def _resend_own_messages(self) -> list[Output]:
        out = [Broadcast(self._own_proposal)] if self._own_proposal is not None else []
        return out + [Broadcast(v) for (r, _), v in sorted(self._own_votes.items()) if r == self.round]

    def _add_vote(self, vote: Vote) -> list[Output]:
        result = self._votes.add(vote)
        if result == "duplicate":
            return self._reject("duplicate")
        if result != "new":
            return self._record_evidence(result)
        if (
            vote.kind == Step.PRECOMMIT
            and vote.value_digest is not None
            and self._votes.power_for(vote.round, Step.PRECOMMIT, vote.value_digest) >= self.committee.quorum
        ):
            self._certified.setdefault(vote.value_digest, vote.round)
        return []

    def _decide(self, value: bytes, certificate: CommitCertificate) -> list[Output]:
        height = self.height
        self._decisions[height] = CertifiedValue(value=value, certificate=certificate)
        self._decisions.pop(height - self._retain, None)
        self.height = height + 1
        self._reset_height()
        return [Decide(height, value, certificate)]

    # ----------------------------------------------------------------- helpers

    def _store_proposal(self, proposal: Proposal, digest: bytes) -> None:
        self._proposals[proposal.round] = proposal
        self._proposal_digests[proposal.round] = digest
        self._values[digest] = proposal.value
        self._votes.saw_signer(proposal.round, proposal.signer)

    def _valid(self, digest: bytes) -> bool:
        if digest not in self._validity:
            self._validity[digest] = bool(self._app.validate(self.height, self._values[digest]))
            if not self._validity[digest]:
                self.stats["invalid_value"] += 1  # e.g. a checkpoint with an unpaid entry
        return self._validity[digest]

    def _locked_is(self, digest: bytes) -> bool:
        return self._locked_digest == digest

    def _accepts_sender(self, signer: int) -> bool:
        if is_member(self.committee, signer):
            return True
        self.stats["not_member"] += 1
        return False

    def _current(self, message: Proposal | Vote) -> bool:
        """True for a message this core should process now (its height and a sane round)."""
        return self._started and message.height == self.height and message.round <= self.round + self._max_rounds_ahead

    def _route_other_height(self, message: Proposal | Vote) -> list[Output]:
        if message.height < self.height:
            return self._serve_lagging_peer(message)
        if message.height == self.height and self._started:
            return self._reject("round_too_far")
        if message.height >= self.height + 2:
            # Only the next height is buffered; from further back, one height per round trip
            # would never catch up with peers that keep deciding. One report per height (and
            # none for a lower one) suffices: the shell rejoins with a new core, and checking
            # the signature of every far message of every round would cost a lagging node dear.
            if message.height <= self._reported_behind:
                return self._reject("future_dropped")
            if self._signature_valid(message):
                self._reported_behind = message.height
                self.stats["fallen_behind"] += 1
                return [FallenBehind(message.height)]
        return self._buffer_early(message, message.height)

    def _signature_valid(self, message: Proposal | Vote) -> bool:
        if isinstance(message, Proposal):
            return proposal_signature_valid(self.committee, message, chain_id=self.chain_id)
        return vote_signature_valid(self.committee, message, chain_id=self.chain_id)

    def _serve_lagging_peer(self, message: Proposal | Vote) -> list[Output]:
        """A peer still works on a decided height: send it the certified value (once per round)."""
        if not self._signature_valid(message):
            return self._reject("invalid_signature")
        key = (message.signer, message.height, message.round)
        if key in self._served:
            return self._reject("stale")
        self._served.add(key)
        certified = self._decisions.get(message.height)
        if certified is None:
            return [PeerBehind(message.signer, message.height)]
        return [Send(message.signer, certified)]

    def _buffer_early(self, message: Message, height: int) -> list[Output]:
        """Keep a message for the next height (a faster peer's) until this node starts it."""
        next_height = self.height if not self._started else self.height + 1
        if height != next_height or len(self._buffer) >= self._max_buffered:
            return self._reject("future_dropped")
        self._buffer.append(message)
        return []

    def _record_evidence(self, evidence: Evidence) -> list[Output]:
        self.stats["equivocation"] += 1
        self.evidence.append(evidence)
        return [EvidenceFound(evidence)]

    def _reject(self, reason: str) -> list[Output]:
        self.stats[reason] += 1
        return []


def _member_index(committee: Committee, keypair: Keypair | None) -> int | None:
    if keypair is None:
        return None
    for index, member in enumerate(committee.members):
        if member.public_key == keypair.public_key:
            return index
    return None


def _digest_or_none(value: bytes | None) -> bytes | None:
    return None if value is None else value_digest(value)


def _restore(data: bytes | None, height: int) -> SafetyState | None:
    """The persisted state when it is for `height`; an older height's state no longer binds."""
    if data is None:
        return None
    state = decode(data, SafetyState)
    if state.height > height:
        raise SafetyStateAhead(state_height=state.height, height=height)
    return state if state.height == height else None
