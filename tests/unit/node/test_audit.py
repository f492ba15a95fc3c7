"""The audit decision (spec §5) and the aggregator's vote collector, without Ray."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from soma_ray.node.audit import (
    MAX_VOTE_BYTES, ChallengeVote, Rescored, VoteCollector, audit, challenge_changes, sign_vote,
)
from soma_ray.protocol.crypto import Certificate, Committee, CommitteeMember, Keypair, verify_certificate
from soma_ray.protocol.encoding import blake2b256, encode
from soma_ray.protocol.errors import ExecutionError
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.submissions import LOSS_SCALE, challenge_vote_domain, challenge_vote_message
from soma_ray.protocol.targets import cosine_distance_fixed
from soma_ray.protocol.types import (
    ChangeEpoch, Checkpoint, InitiateChallenge, ResolveChallenge, RevealedSubmission, Target, Transaction,
    TransactionEffects,
)

DIM = 8
DATA = b"some submitted bytes"
MODELS = [bytes([i]) * 32 for i in (1, 2, 3)]
CHALLENGE = b"\x07" * 32


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def embedding(seed: int) -> bytes:
    return vector(seed).astype("<f4").tobytes()


TARGET_EMBEDDING = embedding(0)


def target(threshold: int = 2 * 10**9) -> Target:
    return Target(id=b"\x09" * 32, embedding=TARGET_EMBEDDING, model_ids=MODELS, distance_threshold=threshold,
                  reward_pool=1, generation_epoch=0, generation_timestamp_ms=0, status="Challenged")


def revealed(loss: float = 2.0, emb: bytes | None = None, model: bytes = MODELS[0], data: bytes = DATA):
    emb = embedding(1) if emb is None else emb
    return RevealedSubmission(
        data_hash=blake2b256(data), data_size=len(data), data_url="http://x/d", model_id=model,
        embedding=emb, loss_score=round(loss * LOSS_SCALE),
        distance=cosine_distance_fixed(emb, TARGET_EMBEDDING))


def honest_scores(loss: float = 2.0, emb: bytes | None = None) -> Rescored:
    return Rescored({MODELS[0]: loss, MODELS[1]: loss + 1, MODELS[2]: loss + 2},
                    embedding(1) if emb is None else emb, [])


# ------------------------------------------------------------------ the audit decision


def test_honest_claims_hold_and_the_miner_wins():
    finding = audit(target(), revealed(), DATA, None, honest_scores())
    assert (finding.verdict, finding.fraud, finding.claims_hold) == ("MinerWins", None, True)
    assert finding.recomputed_loss == 2.0 and finding.best_model == MODELS[0]
    assert finding.distance == cosine_distance_fixed(embedding(1), TARGET_EMBEDDING)


def test_unavailable_or_wrong_data_is_data_fraud():
    for data, failure in ((None, "connection refused"), (DATA + b"!", None), (b"x" * len(DATA), None)):
        finding = audit(target(), revealed(), data, failure, honest_scores())
        assert (finding.verdict, finding.fraud) == ("ChallengerWins", "DataFraud"), finding.reason
    assert "connection refused" in audit(target(), revealed(), None, "connection refused", None).reason


def test_a_claimed_loss_off_by_more_than_the_tolerance_is_score_fraud():
    finding = audit(target(), revealed(loss=1.0), DATA, None, honest_scores(loss=2.0))
    assert (finding.verdict, finding.fraud) == ("ChallengerWins", "ScoreFraud")
    assert (finding.claimed_loss, finding.recomputed_loss) == (1.0, 2.0)


@given(st.floats(min_value=-5e-5, max_value=5e-5))
def test_a_loss_within_the_tolerance_holds(offset):
    # audit_tolerance 2e-5 relative and absolute: 2e-5 × (1 + 2.0) = 6e-5 at a loss of 2.
    finding = audit(target(), revealed(loss=2.0 + offset), DATA, None, honest_scores(loss=2.0))
    assert finding.verdict == "MinerWins", finding.reason


@given(st.integers(min_value=2, max_value=10_000))
def test_a_fake_embedding_is_score_fraud(seed):
    fake = embedding(seed)
    finding = audit(target(), revealed(emb=fake), DATA, None, honest_scores())
    assert (finding.verdict, finding.fraud) == ("ChallengerWins", "ScoreFraud")


def test_an_embedding_within_the_tolerance_holds():
    close = (vector(1) + np.float32(1.5e-5)).astype("<f4").tobytes()
    assert audit(target(), revealed(emb=close), DATA, None, honest_scores()).verdict == "MinerWins"
    far = (vector(1) + np.float32(1e-3)).astype("<f4").tobytes()
    assert audit(target(), revealed(emb=far), DATA, None, honest_scores()).fraud == "ScoreFraud"


def test_the_tolerance_is_the_genesis_parameter():
    from soma_ray.node.audit import DEFAULT_AUDIT_TOLERANCE, within_tolerance
    from soma_ray.protocol.params import Parameters, localnet

    assert DEFAULT_AUDIT_TOLERANCE == Parameters().audit_tolerance == localnet().audit_tolerance == 20_000
    assert within_tolerance(1.0 + 3e-5, 1.0) and not within_tolerance(1.0 + 5e-5, 1.0)
    assert within_tolerance(1.0 + 5e-5, 1.0, tolerance=30_000)
    # A looser network parameter lets through what the default refuses.
    finding = audit(target(), revealed(loss=2.001), DATA, None, honest_scores(loss=2.0), tolerance=1_000_000)
    assert finding.verdict == "MinerWins" and finding.tolerance == 1_000_000
    assert audit(target(), revealed(loss=2.001), DATA, None, honest_scores(loss=2.0)).fraud == "ScoreFraud"


def test_claiming_a_model_that_is_not_the_lowest_loss_is_score_fraud():
    scores = Rescored({MODELS[0]: 2.0, MODELS[1]: 1.0, MODELS[2]: 3.0}, embedding(1), [])
    finding = audit(target(), revealed(), DATA, None, scores)
    assert (finding.fraud, finding.best_model, finding.best_loss) == ("ScoreFraud", MODELS[1], 1.0)


def test_a_recomputed_distance_over_the_threshold_by_more_than_the_tolerance_is_score_fraud():
    distance = cosine_distance_fixed(embedding(1), TARGET_EMBEDDING)
    finding = audit(target(threshold=distance - 20_001), revealed(), DATA, None, honest_scores())
    assert finding.fraud == "ScoreFraud" and "threshold" in finding.reason


def test_honest_drift_at_the_threshold_is_not_fraud():
    # An honest miner exactly at the threshold, re-scored by a validator whose kernels drift by up
    # to the measured ~200 fixed-point units (docs/audits.md), keeps its fill: the distance gets
    # the tolerance as slack.
    distance = cosine_distance_fixed(embedding(1), TARGET_EMBEDDING)
    for drift in (1, 200, 20_000):
        assert audit(target(threshold=distance - drift), revealed(), DATA, None, honest_scores()).claims_hold


def test_an_unusable_claimed_model_is_reported_and_the_challenger_wins():
    # Decision (issue 20): the claims cannot be established without the claimed model, so the
    # owner of a model cannot shield a colluding miner by breaking its weights after the fill.
    scores = Rescored({MODELS[1]: 0.5, MODELS[2]: 0.6}, None, [MODELS[0]], {MODELS[0]: "ModelUnavailable: gone"})
    finding = audit(target(), revealed(loss=9.0), DATA, None, scores)
    assert (finding.verdict, finding.fraud) == ("ChallengerWins", "ScoreFraud")
    assert finding.report == [MODELS[0]] and "cannot be used (ModelUnavailable: gone)" in finding.reason
    # Even when every other model agrees with the claims.
    assert audit(target(), revealed(), DATA, None, Rescored({MODELS[1]: 3.0}, None, [MODELS[0]])).fraud == "ScoreFraud"
    # Data fraud still comes first.
    assert audit(target(), revealed(), None, "gone", scores).fraud == "DataFraud"


def test_an_unloadable_other_model_is_reported_and_the_rest_still_judged():
    scores = Rescored({MODELS[0]: 2.0, MODELS[1]: 3.0}, embedding(1), [MODELS[2]])
    assert audit(target(), revealed(), DATA, None, scores).report == [MODELS[2]]
    assert audit(target(), revealed(loss=5.0), DATA, None, scores).fraud == "ScoreFraud"


# ------------------------------------------------------------------ votes

KEYS = [Keypair.from_secret(bytes([i + 1]) * 32) for i in range(4)]
COMMITTEE = Committee(epoch=0, members=[CommitteeMember(k.address, k.public_key, 2500) for k in KEYS])
CHAIN_ID = blake2b256(b"a test network")
OTHER_CHAIN_ID = blake2b256(b"another network")


def collector_of(committee=COMMITTEE) -> VoteCollector:
    return VoteCollector(committee, chain_id=CHAIN_ID)


def vote_bytes(key, verdict, challenge=CHALLENGE, chain_id=CHAIN_ID) -> bytes:
    return encode(sign_vote(key, challenge, verdict, chain_id))


def test_three_of_four_honest_votes_make_a_certificate_the_chain_accepts():
    collector = collector_of()
    for key in KEYS[:2]:
        assert collector.add(vote_bytes(key, "MinerWins")).counted
    assert collector.certificate(CHALLENGE) is None
    assert collector.add(vote_bytes(KEYS[2], "MinerWins")).counted
    verdict, certificate = collector.certificate(CHALLENGE)
    assert verdict == "MinerWins" and certificate.signer_indices == [0, 1, 2]
    verify_certificate(COMMITTEE, challenge_vote_domain(CHAIN_ID), challenge_vote_message(CHALLENGE, verdict), certificate)


def test_a_repeated_vote_counts_once():
    collector = collector_of()
    for _ in range(3):
        collector.add(vote_bytes(KEYS[0], "ChallengerWins"))
    assert collector.power(CHALLENGE, "ChallengerWins") == 2500 and collector.certificate(CHALLENGE) is None


def test_conflicting_votes_are_evidence_and_count_for_neither_verdict():
    collector = collector_of()
    assert collector.add(vote_bytes(KEYS[3], "MinerWins")).counted
    assert not collector.add(vote_bytes(KEYS[3], "ChallengerWins")).counted
    assert collector.power(CHALLENGE, "MinerWins") == 0
    assert [e.voter for e in collector.evidence] == [KEYS[3].address]
    for key in KEYS[:3]:
        collector.add(vote_bytes(key, "ChallengerWins"))
    verdict, certificate = collector.certificate(CHALLENGE)
    assert verdict == "ChallengerWins" and certificate.signer_indices == [0, 1, 2]


GARBAGE = st.one_of(
    st.binary(max_size=2 * MAX_VOTE_BYTES),
    st.builds(lambda sig: encode(ChallengeVote(CHALLENGE, "MinerWins", KEYS[1].address, sig)), st.binary(max_size=80)),
    st.builds(lambda: encode(sign_vote(Keypair.from_secret(b"\xee" * 32), CHALLENGE, "MinerWins", CHAIN_ID))),
    st.builds(lambda: vote_bytes(KEYS[1], "MinerWins", chain_id=OTHER_CHAIN_ID)),  # another network's
)


@given(st.lists(GARBAGE, max_size=8))
def test_garbage_never_counts_never_stops_an_honest_quorum_and_is_kept(garbage):
    collector = collector_of()
    for raw in garbage:
        assert not collector.add(raw).counted
    assert len(collector.evidence) == len(garbage)
    for key in KEYS[:3]:
        collector.add(vote_bytes(key, "ChallengerWins"))
    assert collector.certificate(CHALLENGE)[0] == "ChallengerWins"


def test_a_vote_signed_for_another_verdict_or_challenge_does_not_count():
    vote = sign_vote(KEYS[0], CHALLENGE, "MinerWins", CHAIN_ID)
    forged = [ChallengeVote(CHALLENGE, "ChallengerWins", vote.voter, vote.signature),
              ChallengeVote(b"\x01" * 32, "MinerWins", vote.voter, vote.signature)]
    collector = collector_of()
    assert [collector.add(encode(v)).reason for v in forged] == ["bad signature"] * 2


def test_a_new_committee_keeps_its_members_votes_only():
    collector = collector_of()
    for key in KEYS[:3]:
        collector.add(vote_bytes(key, "MinerWins"))
    smaller = Committee(epoch=1, members=[CommitteeMember(k.address, k.public_key, 5000) for k in KEYS[1:3]])
    moved = collector.under(smaller)
    verdict, certificate = moved.certificate(CHALLENGE)
    assert verdict == "MinerWins" and certificate.signer_indices == [0, 1]
    moved.forget(CHALLENGE)
    assert moved.certificate(CHALLENGE) is None and moved.open_challenges() == []


def test_challenge_changes_names_what_a_checkpoint_opened_and_resolved():
    def signed(kind, nonce):
        return encode(sign_transaction(KEYS[0], Transaction(KEYS[0].address, nonce, kind, 1_000), CHAIN_ID))

    opened_id, failed_id = b"\x11" * 32, b"\x12" * 32
    entries = [signed(InitiateChallenge(b"\x01" * 32, "ScoreFraud", 5), 0),
               signed(InitiateChallenge(b"\x02" * 32, "DataFraud", 5), 1),
               signed(ResolveChallenge(CHALLENGE, "MinerWins", Certificate([], [])), 2),
               encode(ChangeEpoch(epoch=1, timestamp_ms=5))]
    effects = [TransactionEffects(b"", KEYS[0].address, 0, 1_000, created=[opened_id]),
               TransactionEffects(b"", KEYS[0].address, 1, 1_000, ExecutionError("TargetNotFilled", []),
                                  created=[failed_id]),
               TransactionEffects(b"", KEYS[0].address, 2, 1_000),
               TransactionEffects(b"", bytes(32), 0, 0)]
    checkpoint = Checkpoint(0, 1, b"", 5, entries, b"", b"")
    assert challenge_changes(checkpoint, effects) == ([opened_id], [CHALLENGE], True)


def test_a_vote_signed_for_another_network_does_not_count():
    # Issue 18: the vote's domain carries the chain id; the same key's vote on the same challenge
    # id made for another network (a relaunched one, another localnet) is a bad signature here.
    collector = collector_of()
    assert collector.add(vote_bytes(KEYS[0], "MinerWins", chain_id=OTHER_CHAIN_ID)).reason == "bad signature"
    assert collector.add(vote_bytes(KEYS[0], "MinerWins")).counted
    moved = collector.under(COMMITTEE)  # an epoch change keeps the network
    assert moved.chain_id == CHAIN_ID and moved.power(CHALLENGE, "MinerWins") == 2500
