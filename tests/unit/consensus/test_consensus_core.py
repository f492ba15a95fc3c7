"""The handlers of one ConsensusCore, driven by hand-made signed messages (no network)."""
from __future__ import annotations

import msgspec
import pytest
from consensus_sim import SIM_CHAIN_ID, ValueApp, equal_powers, make_committee, make_keypairs

from soma_ray.consensus import (
    Broadcast,
    CertifiedValue,
    CommitCertificate,
    ConsensusCore,
    Decide,
    EvidenceFound,
    FallenBehind,
    LeaderSchedule,
    PeerBehind,
    PersistSafetyState,
    Proposal,
    ProposalEquivocation,
    SafetyStateAhead,
    Send,
    SetTimer,
    Step,
    TimeoutConfig,
    Vote,
    VoteEquivocation,
    value_digest,
)
from soma_ray.consensus.messages import proposal_signature_valid, sign_proposal, sign_vote, vote_signature_valid
from soma_ray.protocol.errors import MalformedInput

KEYS = make_keypairs(4, "core")
COMMITTEE = make_committee(KEYS, equal_powers(4))
SCHEDULE = LeaderSchedule(COMMITTEE)
ME = 0


def height_led_by_others(rounds: int = 2) -> int:
    """A height whose first `rounds` leaders are peers of node ME (so is round 0 of the next
    height: the schedule walks (height + round))."""
    return next(h for h in range(1, 100) if all(SCHEDULE.leader(h, r) != ME for r in range(rounds)))


H = height_led_by_others()


def new_core(**kwargs) -> ConsensusCore:
    core = ConsensusCore(COMMITTEE, KEYS[ME], ValueApp(ME), H, chain_id=SIM_CHAIN_ID, **kwargs)
    core.start_height()
    return core


def proposal(round: int, value: bytes, valid_round: int = -1, height: int = H):
    leader = SCHEDULE.leader(height, round)
    return sign_proposal(KEYS[leader], leader, height, round, value, valid_round, chain_id=SIM_CHAIN_ID)


def vote(signer: int, kind: Step, round: int, value: bytes | None, height: int = H) -> Vote:
    digest = None if value is None else value_digest(value)
    return sign_vote(KEYS[signer], signer, kind, height, round, digest, chain_id=SIM_CHAIN_ID)


def sent(outputs, kind=None):
    messages = [o.message for o in outputs if isinstance(o, (Broadcast, Send))]
    return [m for m in messages if kind is None or isinstance(m, kind)]


def own_votes(outputs, kind: Step):
    return [m for m in sent(outputs, Vote) if m.signer == ME and m.kind == kind]


def value(round: int = 0) -> bytes:
    return f"h{H}/r{round}".encode()


def test_prevotes_the_leaders_valid_proposal_and_persists_before_sending():
    core = new_core()
    out = core.on_proposal(proposal(0, value()))
    prevotes = own_votes(out, Step.PREVOTE)
    assert [v.value_digest for v in prevotes] == [value_digest(value())]
    persist_at = next(i for i, o in enumerate(out) if isinstance(o, PersistSafetyState))
    send_at = next(i for i, o in enumerate(out) if isinstance(o, Broadcast))
    assert persist_at < send_at
    assert SetTimer(H, 0, Step.PREVOTE, 500) in out


def test_prevotes_nil_on_a_proposal_the_application_rejects():
    core = new_core()
    out = core.on_proposal(proposal(0, b"bad-transactions"))
    assert [v.value_digest for v in own_votes(out, Step.PREVOTE)] == [None]


def test_full_round_decides_with_a_certificate_of_the_precommits():
    core = new_core()
    core.on_proposal(proposal(0, value()))
    for signer in (1, 2):
        out = core.on_vote(vote(signer, Step.PREVOTE, 0, value()))
    assert [v.value_digest for v in own_votes(out, Step.PRECOMMIT)] == [value_digest(value())]
    core.on_vote(vote(1, Step.PRECOMMIT, 0, value()))
    out = core.on_vote(vote(3, Step.PRECOMMIT, 0, value()))
    decide = next(o for o in out if isinstance(o, Decide))
    assert (decide.height, decide.value) == (H, value())
    assert decide.certificate.signer_indices == [0, 1, 3]
    assert core.height == H + 1


def test_invalid_signature_non_member_and_duplicate_are_ignored_and_counted():
    core = new_core()
    good = vote(1, Step.PREVOTE, 0, value())
    forged = msgspec.structs.replace(good, signature=bytes(64))
    assert core.on_vote(forged) == []
    assert core.on_vote(msgspec.structs.replace(good, signer=9)) == []
    core.on_vote(good)
    assert core.on_vote(good) == []
    assert (core.stats["invalid_signature"], core.stats["not_member"], core.stats["duplicate"]) == (1, 1, 1)


def test_a_vote_signed_by_another_member_counts_as_invalid():
    core = new_core()
    stolen = msgspec.structs.replace(vote(2, Step.PREVOTE, 0, value()), signer=1)
    assert core.on_vote(stolen) == []
    assert core.stats["invalid_signature"] == 1


def test_a_proposal_or_vote_signed_for_another_network_is_dropped():
    # Issue 18: consensus messages are signed under the chain id; the same keys' messages on
    # another network (another localnet with the public preset keys) do not verify here.
    other = b"\x05" * 32
    core = new_core()
    leader = SCHEDULE.leader(H, 0)
    assert core.on_proposal(sign_proposal(KEYS[leader], leader, H, 0, value(), -1, chain_id=other)) == []
    assert core.on_vote(sign_vote(KEYS[2], 2, Step.PREVOTE, H, 0, None, chain_id=other)) == []
    assert core.stats["invalid_signature"] == 2
    assert core.on_vote(vote(2, Step.PREVOTE, 0, None)) == []  # the same vote for this network counts
    assert core.stats["invalid_signature"] == 2


def test_proposal_from_a_non_leader_is_ignored():
    core = new_core()
    impostor = next(i for i in range(1, 4) if i != SCHEDULE.leader(H, 0))
    fake = sign_proposal(KEYS[impostor], impostor, H, 0, value(), -1, chain_id=SIM_CHAIN_ID)
    assert core.on_proposal(fake) == []
    assert core.stats["wrong_leader"] == 1


def test_a_re_sent_proposal_is_a_duplicate_and_a_forged_copy_is_not_evidence():
    core = new_core()
    first = proposal(0, value())
    core.on_proposal(first)
    assert core.on_proposal(first) == []
    forged = msgspec.structs.replace(first, signature=bytes(64))
    assert core.on_proposal(forged) == []
    assert (core.stats["duplicate"], core.stats["invalid_signature"]) == (1, 1)
    assert list(core.evidence) == []


def test_double_vote_is_recorded_as_evidence_and_only_the_first_counts():
    core = new_core()
    first, second = vote(1, Step.PREVOTE, 0, value()), vote(1, Step.PREVOTE, 0, None)
    core.on_vote(first)
    out = core.on_vote(second)
    assert out == [EvidenceFound(VoteEquivocation(first, second))]
    assert list(core.evidence) == [VoteEquivocation(first, second)]


def test_two_proposals_from_one_leader_are_evidence_and_the_first_stands():
    core = new_core()
    first, second = proposal(0, value()), proposal(0, value() + b"/other")
    prevote = own_votes(core.on_proposal(first), Step.PREVOTE)
    assert core.on_proposal(second) == [EvidenceFound(ProposalEquivocation(first, second))]
    assert prevote[0].value_digest == value_digest(first.value)


def test_timeouts_move_through_nil_votes_to_the_next_round_with_longer_timers():
    timeouts = TimeoutConfig(propose_ms=10, prevote_ms=20, precommit_ms=30, increase_ms=5)
    core = new_core(timeouts=timeouts)
    out = core.on_timeout(H, 0, Step.PROPOSE)
    assert [v.value_digest for v in own_votes(out, Step.PREVOTE)] == [None]
    out = core.on_timeout(H, 0, Step.PREVOTE)
    assert [v.value_digest for v in own_votes(out, Step.PRECOMMIT)] == [None]
    out = core.on_timeout(H, 0, Step.PRECOMMIT)
    assert core.round == 1
    assert SetTimer(H, 1, Step.PROPOSE, 15) in out


def test_a_repeated_timeout_resends_the_same_vote_and_a_stale_one_does_nothing():
    core = new_core()
    [prevote] = own_votes(core.on_timeout(H, 0, Step.PROPOSE), Step.PREVOTE)
    out = core.on_timeout(H, 0, Step.PROPOSE)
    assert out == [Broadcast(prevote)]
    assert core.on_timeout(H + 1, 0, Step.PRECOMMIT) == []
    assert core.on_timeout(H, 1, Step.PRECOMMIT) == []
    assert core.round == 0


def test_more_than_a_third_in_a_later_round_pulls_the_node_forward():
    core = new_core()
    core.on_vote(vote(1, Step.PREVOTE, 3, None))
    assert core.round == 0
    core.on_vote(vote(2, Step.PREVOTE, 3, None))
    assert core.round == 3


def lock_on_value(core: ConsensusCore) -> Vote:
    """Drive `core` to precommit (and lock) value() in round 0; return its precommit."""
    core.on_proposal(proposal(0, value()))
    core.on_vote(vote(1, Step.PREVOTE, 0, value()))
    [precommit] = own_votes(core.on_vote(vote(2, Step.PREVOTE, 0, value())), Step.PRECOMMIT)
    return precommit


def test_a_locked_node_prevotes_nil_for_a_different_value_in_a_later_round():
    core = new_core()
    lock_on_value(core)
    core.on_timeout(H, 0, Step.PRECOMMIT)
    out = core.on_proposal(proposal(1, value(1)))
    assert [v.value_digest for v in own_votes(out, Step.PREVOTE)] == [None]


def test_a_node_restarted_from_its_safety_state_keeps_its_lock_and_its_votes():
    core = new_core()
    precommit = lock_on_value(core)
    persisted = core.safety_state()

    restarted = ConsensusCore(COMMITTEE, KEYS[ME], ValueApp(ME), H, chain_id=SIM_CHAIN_ID, safety_state=persisted)
    out = restarted.start_height()
    assert own_votes(out, Step.PRECOMMIT) == [precommit]  # re-sent, not re-signed
    assert not [o for o in out if isinstance(o, PersistSafetyState)]
    restarted.on_timeout(H, 0, Step.PRECOMMIT)
    out = restarted.on_proposal(proposal(1, value(1)))
    assert [v.value_digest for v in own_votes(out, Step.PREVOTE)] == [None]

    amnesiac = ConsensusCore(COMMITTEE, KEYS[ME], ValueApp(ME), H, chain_id=SIM_CHAIN_ID)
    amnesiac.start_height()
    amnesiac.on_timeout(H, 0, Step.PROPOSE)
    amnesiac.on_timeout(H, 0, Step.PREVOTE)
    amnesiac.on_timeout(H, 0, Step.PRECOMMIT)
    out = amnesiac.on_proposal(proposal(1, value(1)))
    assert [v.value_digest for v in own_votes(out, Step.PREVOTE)] == [value_digest(value(1))]


def test_a_restarted_node_prevotes_its_locked_value_when_it_is_proposed_again():
    core = new_core()
    lock_on_value(core)
    restarted = ConsensusCore(COMMITTEE, KEYS[ME], ValueApp(ME), H, chain_id=SIM_CHAIN_ID, safety_state=core.safety_state())
    restarted.start_height()
    restarted.on_timeout(H, 0, Step.PRECOMMIT)
    out = restarted.on_proposal(proposal(1, value()))  # no polka attached: only the lock allows it
    assert [v.value_digest for v in own_votes(out, Step.PREVOTE)] == [value_digest(value())]


def test_a_restarted_leader_re_proposes_its_valid_value_with_the_polka():
    core = new_core()
    lock_on_value(core)
    restarted = ConsensusCore(COMMITTEE, KEYS[ME], ValueApp(ME), H, chain_id=SIM_CHAIN_ID, safety_state=core.safety_state())
    restarted.start_height()
    led = next(r for r in range(1, 50) if SCHEDULE.leader(H, r) == ME)
    for round in range(led):
        out = restarted.on_timeout(H, round, Step.PRECOMMIT)
    [reproposal] = sent(out, Proposal)
    assert (reproposal.value, reproposal.valid_round) == (value(), 0)
    assert proposal_signature_valid(COMMITTEE, reproposal, chain_id=SIM_CHAIN_ID)
    polka = [v for v in sent(out, Vote) if v.round == 0]
    assert {v.value_digest for v in polka} == {value_digest(value())}
    assert {v.signer for v in polka} == {ME, 1, 2}


def test_a_restarted_node_does_not_sign_a_second_vote_in_its_persisted_round():
    core = new_core()
    core.on_timeout(H, 0, Step.PROPOSE)  # prevoted nil
    restarted = ConsensusCore(COMMITTEE, KEYS[ME], ValueApp(ME), H, chain_id=SIM_CHAIN_ID, safety_state=core.safety_state())
    restarted.start_height()
    out = restarted.on_proposal(proposal(0, value()))
    assert own_votes(out, Step.PREVOTE) == []


def test_safety_state_from_a_later_height_is_refused():
    core = new_core()
    core.on_timeout(H, 0, Step.PROPOSE)
    with pytest.raises(SafetyStateAhead) as caught:
        ConsensusCore(COMMITTEE, KEYS[ME], ValueApp(ME), H - 1, chain_id=SIM_CHAIN_ID, safety_state=core.safety_state())
    assert (caught.value.state_height, caught.value.height) == (H, H - 1)


def test_corrupt_safety_state_is_a_typed_error():
    with pytest.raises(MalformedInput):
        ConsensusCore(COMMITTEE, KEYS[ME], ValueApp(ME), H, chain_id=SIM_CHAIN_ID, safety_state=b"\x93garbage")


def certificate_for(height: int, round: int, value_: bytes, signers=(1, 2, 3)) -> CommitCertificate:
    votes = [vote(s, Step.PRECOMMIT, round, value_, height=height) for s in signers]
    return CommitCertificate(height, round, value_digest(value_), [v.signer for v in votes], [v.signature for v in votes])


def test_catch_up_decides_a_certified_value_and_refuses_a_short_or_mismatched_one():
    core = new_core()
    short = CertifiedValue(value(), certificate_for(H, 2, value(), signers=(1, 2)))
    mismatched = CertifiedValue(value() + b"x", certificate_for(H, 2, value()))
    assert core.on_commit_certificate(short) == []
    assert core.on_commit_certificate(mismatched) == []
    assert (core.stats["invalid_certificate"], core.stats["malformed"]) == (1, 1)
    assert core.height == H
    good = CertifiedValue(value(), certificate_for(H, 2, value()))
    assert [o for o in core.on_commit_certificate(good) if isinstance(o, Decide)] == [
        Decide(H, value(), good.certificate)
    ]
    assert core.height == H + 1
    assert core.decision(H) == good


def test_catch_up_refuses_a_certificate_relabelled_for_another_value():
    core = new_core()
    other = value() + b"x"
    relabelled = msgspec.structs.replace(certificate_for(H, 2, value()), value_digest=value_digest(other))
    assert core.on_commit_certificate(CertifiedValue(other, relabelled)) == []
    assert (core.stats["invalid_certificate"], core.stats["malformed"]) == (1, 0)
    assert core.height == H


def test_a_peer_on_a_decided_height_gets_the_certified_value_once_per_round():
    core = new_core()
    good = CertifiedValue(value(), certificate_for(H, 0, value()))
    core.on_commit_certificate(good)
    core.start_height()
    lagging = vote(2, Step.PREVOTE, 4, None)
    assert core.on_vote(lagging) == [Send(2, good)]
    assert core.on_vote(lagging) == []


def test_a_peer_below_the_retained_decisions_is_reported_for_the_shell():
    core = ConsensusCore(COMMITTEE, KEYS[ME], ValueApp(ME), H, chain_id=SIM_CHAIN_ID)
    core.start_height()
    assert core.on_vote(vote(3, Step.PREVOTE, 0, None, height=H - 1)) == [PeerBehind(3, H - 1)]


def test_messages_for_the_next_height_wait_until_it_starts():
    core = new_core()
    next_value = f"h{H + 1}/x".encode()
    early = proposal(0, next_value, height=H + 1)
    assert core.on_proposal(early) == []
    core.on_commit_certificate(CertifiedValue(value(), certificate_for(H, 0, value())))
    out = core.start_height()
    assert [v.value_digest for v in own_votes(out, Step.PREVOTE)] == [value_digest(next_value)]


def test_observer_without_a_key_follows_decisions_without_signing():
    core = ConsensusCore(COMMITTEE, None, ValueApp(-1), H, chain_id=SIM_CHAIN_ID)
    out = core.start_height() + core.on_proposal(proposal(0, value()))
    assert sent(out) == []
    for signer in (1, 2, 3):
        core.on_vote(vote(signer, Step.PREVOTE, 0, value()))
    for signer in (1, 2):
        core.on_vote(vote(signer, Step.PRECOMMIT, 0, value()))
    out = core.on_vote(vote(3, Step.PRECOMMIT, 0, value()))
    assert [o.value for o in out if isinstance(o, Decide)] == [value()]


def test_leader_schedule_follows_voting_power():
    committee = make_committee(make_keypairs(4, "power"), [4000, 2000, 2000, 2000])
    schedule = LeaderSchedule(committee)
    turns = [schedule.leader(h, 0) for h in range(100)]
    assert [turns.count(i) for i in range(4)] == [40, 20, 20, 20]
    assert all(turns[i] != turns[i + 1] for i in range(99) if turns[i] != 0)
    assert [schedule.leader(7, r) for r in range(5)] == turns[7:12]


def test_starting_a_height_twice_does_not_propose_twice():
    leader = SCHEDULE.leader(H, 0)
    core = ConsensusCore(COMMITTEE, KEYS[leader], ValueApp(leader), H, chain_id=SIM_CHAIN_ID)
    first = core.start_height()
    assert [p.value for p in sent(first, Proposal)] == [f"h{H}/n{leader}/1".encode()]
    assert core.start_height() == []


def test_messages_too_far_ahead_are_dropped_and_counted():
    core = new_core(max_rounds_ahead=2, max_buffered=1)
    assert core.on_vote(vote(1, Step.PREVOTE, 3, None)) == []
    assert core.on_vote(vote(1, Step.PREVOTE, 0, None, height=H + 1)) == []
    assert core.on_vote(vote(2, Step.PREVOTE, 0, None, height=H + 1)) == []
    assert (core.stats["round_too_far"], core.stats["future_dropped"]) == (1, 1)


def test_a_signed_message_two_heights_ahead_reports_the_node_fell_behind():
    core = new_core()
    assert core.on_vote(vote(1, Step.PREVOTE, 0, None, height=H + 2)) == [FallenBehind(H + 2)]
    assert core.on_proposal(proposal(0, b"far", height=H + 5)) == [FallenBehind(H + 5)]
    forged = msgspec.structs.replace(vote(2, Step.PREVOTE, 0, None, height=H + 3), signature=bytes(64))
    assert core.on_vote(forged) == []
    assert (core.stats["fallen_behind"], core.stats["future_dropped"]) == (2, 1)


def test_a_far_height_is_reported_once_and_later_messages_at_or_below_it_are_not_verified(monkeypatch):
    import soma_ray.consensus.core as core_module

    checked = []

    def counting(committee, message, *, chain_id):
        checked.append(message.height)
        return vote_signature_valid(committee, message, chain_id=chain_id)

    monkeypatch.setattr(core_module, "vote_signature_valid", counting)
    core = new_core()
    assert core.on_vote(vote(1, Step.PREVOTE, 0, None, height=H + 3)) == [FallenBehind(H + 3)]
    assert core.on_vote(vote(2, Step.PREVOTE, 0, None, height=H + 3)) == []
    assert core.on_vote(vote(2, Step.PRECOMMIT, 1, None, height=H + 2)) == []
    assert checked == [H + 3]
    assert (core.stats["fallen_behind"], core.stats["future_dropped"]) == (1, 2)
    assert core.on_vote(vote(1, Step.PREVOTE, 0, None, height=H + 4)) == [FallenBehind(H + 4)]
    assert checked == [H + 3, H + 4]
    assert core.stats["fallen_behind"] == 2
