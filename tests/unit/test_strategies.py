"""The scripted participants' decisions, without Ray: which targets a miner may go for, whether a
scored item is a hit (the chain's own distance), which challenger checks a target, what it
challenges, the crowd's mix and roster, the corpus's chunks."""
import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from soma_ray.wire import ModelManifest, TargetView
from soma_ray.protocol.targets import cosine_distance_fixed
from soma_ray.strategies import Corpus, Spec, Stats, corpus_files, crowd_mix, roster
from soma_ray.strategies.decide import (
    Mix, assigned_to, hits_within, challenge_to_open, challengeable, largest_model_group, minable,
    split_evenly,
)
from soma_ray.strategies.participants import Fraud
from soma_ray.strategies.roster import build, keypair_of

DIM = 8
A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def vector(*values):
    return np.array(list(values) + [0.0] * (DIM - len(values)), dtype="<f4")


def target(ident, embedding=None, status="open", epoch=3, models=(A, B), threshold=1_000_000_000,
           submission=None, fill_epoch=None):
    embedding = vector(1.0) if embedding is None else embedding
    return TargetView(
        id=ident, status=status, embedding=embedding.tobytes(), model_ids=list(models),
        distance_threshold=threshold / 1e9, threshold_fixed=threshold, reward_pool=10, generation_epoch=epoch,
        bond_amount=1_000, submission_id=submission, submitter=None, winning_model_id=None,
        fill_epoch=fill_epoch, claimable_epoch=None, reveal_deadline_ms=None, settled_epoch=None)


def test_a_miner_goes_only_for_targets_open_now_without_a_commit_and_with_models():
    fresh = target(b"1" * 32)
    others = [target(b"2" * 32, epoch=2), target(b"3" * 32, submission=b"s" * 32),
              target(b"4" * 32, models=()), target(b"5" * 32, status="filled")]
    assert minable([fresh, *others], epoch=3) == [fresh]


def test_the_largest_group_of_targets_sharing_a_model_set_is_scored():
    one, two, three = target(b"1" * 32, models=(A, B)), target(b"2" * 32, models=(B, C)), target(b"3" * 32, models=(B, A))
    assert largest_model_group([one, two, three]) == [one, three]  # {A, B} in either order
    assert largest_model_group([]) == []


def test_hits_are_the_targets_within_their_threshold_by_the_chains_distance_nearest_first():
    near, nearer = target(b"1" * 32, vector(1.0, 1.0)), target(b"2" * 32, vector(1.0, 0.2))
    strict = target(b"3" * 32, vector(1.0, 0.0), threshold=0)  # only the exact direction hits
    embedding = vector(1.0, 0.1)
    hits = hits_within(embedding.tobytes(), [near, nearer, strict])
    assert [h.target for h in hits] == [nearer, near]
    assert hits[0].distance == cosine_distance_fixed(embedding, nearer.embedding)
    assert hits[0].distance_score == hits[0].distance / 1e9
    assert hits_within(vector(-1.0).tobytes(), [near, nearer, strict]) == []  # opposite: distance 2 > 1


def test_each_filled_target_is_checked_by_exactly_one_challenger():
    ids = [bytes([i]) * 32 for i in range(200)]
    owners = [[i for i in range(3) if assigned_to(t, i, 3)] for t in ids]
    assert all(len(o) == 1 for o in owners)
    assert {o[0] for o in owners} == {0, 1, 2}  # the work is spread


def test_a_challenge_is_open_only_until_the_epoch_after_the_fill():
    filled = target(b"1" * 32, status="filled", fill_epoch=4)
    assert challengeable(filled, 4) and challengeable(filled, 5) and not challengeable(filled, 6)
    assert not challengeable(target(b"2" * 32, status="claimable", fill_epoch=2), 3)


def test_a_challenger_opens_the_fraud_it_found_and_false_alarms_only_on_schedule():
    assert challenge_to_open("DataFraud", 1, 0) == "DataFraud"
    assert challenge_to_open("ScoreFraud", 2, 3) == "ScoreFraud"
    assert [challenge_to_open(None, n, 3) for n in range(1, 7)] == [None, None, "ScoreFraud", None, None, "ScoreFraud"]
    assert challenge_to_open(None, 3, 0) is None


def test_the_mix_splits_miners_by_fraud_and_lazy_rates():
    assert crowd_mix(10, 0.2, 0.2) == Mix(honest=6, lazy=2, fraudulent=2)
    assert crowd_mix(3, 1.0, 0.5) == Mix(0, 0, 3)  # lazy only from who is left
    assert sum(crowd_mix(256, 0.1, 0.1)) == 256
    with pytest.raises(ValueError):
        crowd_mix(4, 1.5, 0)


def test_the_roster_is_deterministic_keys_differ_and_roles_spread_over_actors():
    specs = roster(Mix(3, 1, 1), challengers=2)
    assert [s.role for s in specs].count("challenger") == 2 and len(specs) == 7
    assert roster(Mix(3, 1, 1), 2) == specs
    keys = {keypair_of(s, seed=5).address for s in specs}
    assert len(keys) == 7 and keypair_of(specs[0], 6).address not in keys  # another seed, other keys
    shares = split_evenly(specs, 2)
    assert sorted(sum(shares, [])) == sorted(specs)
    assert all({s.role for s in share} >= {"honest"} for share in shares)


def test_stats_add_up_counters_lists_and_error_counts():
    fraud = Fraud("withheld", A, B, 1, "DataFraud")
    one = Stats(hits=2, score_s=0.5, frauds=[fraud], errors={"TargetNotOpen": 1}, resolution_s=[1.0])
    two = Stats(hits=1, slashes=1, errors={"TargetNotOpen": 2, "TargetExpired": 1})
    total = Stats().add(one).add(two)
    assert (total.hits, total.slashes, total.score_s, total.frauds, total.resolution_s) == (3, 1, 0.5, [fraud], [1.0])
    assert total.errors == {"TargetNotOpen": 3, "TargetExpired": 1}


def test_the_corpus_streams_bounded_chunks_of_every_file_in_a_seeded_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_bytes(b"x" * 2500)
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 10)
    files = corpus_files(tmp_path)
    chunks = [Corpus(files, seed=1, chunk_bytes=1024).next_chunk() for _ in range(1)]
    stream = Corpus(files, seed=1, chunk_bytes=1024)
    first_pass = [stream.next_chunk() for _ in range(4)]
    assert sorted(map(len, first_pass)) == [10, 452, 1024, 1024] and first_pass[0] == chunks[0]
    assert len(stream.next_chunk()) <= 1024  # it goes round again
    with pytest.raises(FileNotFoundError):
        corpus_files(tmp_path / "missing")
    assert all(p.suffix == ".py" for p in corpus_files()[:50])  # the stdlib's sources by default


def test_every_role_builds_with_its_own_key():
    specs = roster(Mix(1, 1, 1), challengers=1)
    built = [build(s, 0, corpus_files(), challengers=1) for s in specs]
    assert [p.role for p in built] == ["honest", "lazy", "fraudulent", "challenger"]
    assert len({p.address for p in built}) == 4


# ------------------------------------------------------------------ the smarter cheaters (issue 20)

from soma_ray.node.audit import DEFAULT_AUDIT_TOLERANCE, Rescored, audit  # noqa: E402
from soma_ray.protocol.encoding import blake2b256  # noqa: E402
from soma_ray.protocol.submissions import LOSS_SCALE  # noqa: E402
from soma_ray.protocol.types import RevealedSubmission, Target  # noqa: E402
from soma_ray.strategies.decide import (  # noqa: E402
    FRAUD_KINDS, FRAUD_PLANS, PoolScores, fraud_label, fraud_plans, fraud_summary, fraud_table,
    is_shave_fraud, margin_band, nudge, plan_shaves, second_best,
)

TOL = DEFAULT_AUDIT_TOLERANCE
D64 = 64


def near_miss(margin: float, seed: int = 0, threshold: int = 1_000_000_000):
    """A target embedding and a true embedding whose chain distance to it is the threshold plus
    `margin` tolerances (to within a few fixed-point units)."""
    rng = np.random.default_rng(seed)
    goal = rng.standard_normal(D64).astype("<f4")
    other = rng.standard_normal(D64)
    other -= other @ goal / (goal @ goal) * goal.astype(np.float64)
    want = (threshold + margin * TOL) / 1e9  # distance = 1 - cos
    cos = 1 - want
    unit_goal = goal / np.linalg.norm(goal)
    unit_other = other / np.linalg.norm(other)
    true = (cos * unit_goal + np.sqrt(1 - cos ** 2) * unit_other) * 1.7
    return goal.tobytes(), true.astype("<f4")


def chain_target(goal: bytes, threshold: int = 1_000_000_000) -> Target:
    return Target(id=b"\x09" * 32, embedding=goal, model_ids=[A], distance_threshold=threshold, reward_pool=1,
                  generation_epoch=0, generation_timestamp_ms=0, status="Filled", fill_epoch=0)


def shaved_audit(margin: float, seed: int = 0):
    """A shave of a true near miss `margin` tolerances outside the threshold, claimed with the
    least nudge that brings the chain's distance inside, as the audit judges it."""
    goal, true = near_miss(margin, seed)
    true_distance = cosine_distance_fixed(true, goal)
    assert abs(true_distance - (1_000_000_000 + margin * TOL)) < 0.05 * TOL
    claimed, s = nudge(true, goal, 1_000_000_000, TOL)
    assert cosine_distance_fixed(claimed, goal) <= 1_000_000_000  # the chain takes the reveal
    data = b"shaved"
    revealed = RevealedSubmission(blake2b256(data), len(data), "http://x/d", A, claimed.tobytes(),
                                  round(3.0 * LOSS_SCALE), cosine_distance_fixed(claimed, goal))
    finding = audit(chain_target(goal), revealed, data, None, Rescored({A: 3.0, B: 3.5}, true.tobytes(), []))
    return finding, s, is_shave_fraud(claimed, true, true_distance, 1_000_000_000, TOL)


@pytest.mark.parametrize("margin", [0.25, 0.5, 0.9])
def test_shaving_within_the_tolerance_is_not_fraud(margin):
    finding, s, fraud = shaved_audit(margin)
    assert s <= 1 and not fraud  # the nudge stays inside the element-wise tolerance box
    assert finding.claims_hold, finding.reason


@pytest.mark.parametrize("margin", [1.5, 2.0, 5.0, 10.0])
def test_shaving_beyond_the_tolerance_is_caught(margin):
    finding, s, fraud = shaved_audit(margin)
    assert fraud and (finding.verdict, finding.fraud) == ("ChallengerWins", "ScoreFraud")
    # Caught by the distance (the nudge itself may still fit the embedding's tolerance).
    assert "threshold" in finding.reason or "embedding" in finding.reason


def test_the_nudge_is_the_least_one_and_honest_drift_alone_never_needs_it():
    goal, true = near_miss(-3.0)  # already inside: nothing to shave
    claimed, s = nudge(true, goal, 1_000_000_000, TOL)
    assert s < 1e-6
    goal, true = near_miss(4.0)
    small, s_small = nudge(true, goal, 1_000_000_000, TOL)
    goal2, true2 = near_miss(8.0)
    _, s_large = nudge(true2, goal2, 1_000_000_000, TOL)
    assert 0 < s_small < s_large


def test_a_wrong_winner_is_fraud_unless_within_the_tolerance():
    goal, true = near_miss(-2.0)
    data = b"wrong winner"

    def claim(loss):
        return RevealedSubmission(blake2b256(data), len(data), "http://x/d", A, true.tobytes(),
                                  round(loss * LOSS_SCALE), cosine_distance_fixed(true, goal))

    lower = Rescored({A: 3.0, B: 2.9}, true.tobytes(), [])
    assert audit(chain_target(goal), claim(3.0), data, None, lower).fraud == "ScoreFraud"
    tie = Rescored({A: 3.0, B: 3.0 - 5e-5}, true.tobytes(), [])  # within 2e-5 × (1 + 3)
    assert audit(chain_target(goal), claim(3.0), data, None, tie).claims_hold
    assert second_best([3.0, 2.9, 4.0]) == 0 and second_best([1.0]) is None
    assert second_best([float("nan"), 2.0, 1.0]) == 1


def test_fraud_plans_cover_every_kind_over_a_few_miners_and_epochs():
    assert {kind for kind, _ in FRAUD_PLANS} == set(FRAUD_KINDS)
    assert fraud_plans(0, 0)[0] == FRAUD_PLANS[0] and len(fraud_plans(0, 0)) == len(FRAUD_PLANS)
    played = {fraud_plans(miner, epoch)[0] for miner in range(2) for epoch in range(4)}
    assert {kind for kind, _ in played} == set(FRAUD_KINDS)
    assert margin_band(0.5) == (0.2, 0.8) and margin_band(10) == (6.0, 10)
    assert fraud_label("shave", 0.5, False) == "shave within tolerance (not fraud)"
    assert [fraud_label("shave", m, True) for m in (1.5, 4, 9, 12)] == ["shave ≤2x", "shave ≤5x", "shave ≤10x",
                                                                       "shave >10x"]
    assert fraud_label("wrong-hash", None, True) == "wrong-hash"


def test_the_detection_table_and_its_summary():
    table = fraud_table({"wrong-hash|injected": 2, "wrong-hash|caught": 2, "shave ≤2x|injected": 1,
                         "shave ≤2x|escaped": 1, "shave within tolerance (not fraud)|injected": 1,
                         "shave within tolerance (not fraud)|held": 1})
    assert list(table) == ["shave within tolerance (not fraud)", "shave ≤2x", "wrong-hash"]
    assert table["wrong-hash"] == (2, 2, 0, 0) and table["shave within tolerance (not fraud)"].held == 1
    assert fraud_summary(table) == ("frauds 3 caught 2 escaped 1 (shave within tolerance (not fraud) 1/0/0, "
                                    "shave ≤2x 1/0/1, wrong-hash 2/2/0)")
    assert fraud_summary({}) == "frauds 0 caught 0 escaped 0"


def test_a_shave_plan_predicts_the_items_true_margin_from_the_pools_chunks():
    # Synthetic pool: the chunks' scores under two models; an item's scores are the means of its
    # chunks' (what the scoring function gives for items of up to 16 chunks).
    rng = np.random.default_rng(3)
    chunks = [bytes([i]) * 1024 for i in range(16)]
    losses = np.stack([rng.uniform(3, 4, 16), rng.uniform(5, 6, 16)], axis=1)  # model 0 always wins
    # Data embeddings cluster (as real ones do): a shared direction plus a little of each chunk's.
    embeddings = rng.standard_normal(DIM) + 0.15 * rng.standard_normal((16, 2, DIM))
    goal = rng.standard_normal(DIM).astype("<f4")
    single = [cosine_distance_fixed(e.astype("<f4"), goal.tobytes()) for e in embeddings[:, 0]]
    thresholds = [int(np.quantile(single, q)) for q in (0.3, 0.4, 0.5, 0.6)]  # the chunks straddle them
    targets = [target(bytes([i]) * 32, goal, threshold=t) for i, t in enumerate(thresholds)]
    pool = PoolScores(chunks, [A, B], losses, embeddings)
    for want in (0.5, 2.0, 10.0):
        plans = plan_shaves(pool, targets, want, TOL, np.random.default_rng(1), samples=60_000)
        assert plans, want
        low, high = margin_band(want)
        for plan in plans:
            assert low < plan.margin <= high and plan.model == 0 and 1 <= sum(plan.counts) <= 16
            counts = np.array(plan.counts)
            mean = counts @ embeddings[:, 0] / counts.sum()
            distance = cosine_distance_fixed(mean.astype("<f4"), plan.target.embedding)
            assert abs((distance - plan.target.threshold_fixed) / TOL - plan.margin) < 0.05
            assert plan.data(pool) == b"".join(c * n for c, n in zip(chunks, plan.counts))


class PoolWorld:
    """What a fraudster's pool reads of the world: manifests by model id (C's weights replaced
    after a while: a new version), and a scoring service that answers per model and counts."""

    def __init__(self):
        self.client = self
        self.checksums = {A: b"1", B: b"2", C: b"3"}
        self.scored: list[bytes] = []

    async def manifests(self, model_ids):
        return [ModelManifest(model_id=m, url="u", checksum=self.checksums[m], size=1, decryption_key=b"k")
                for m in model_ids]

    async def score(self, _, manifests, embedding, data):
        (manifest,) = manifests
        self.scored.append(manifest.checksum)
        seed = manifest.checksum[0] * 256 + data[0]
        return SimpleNamespace(loss_score=float(seed), embedding_array=lambda: np.full(DIM, seed, np.float32))


def test_a_fraudsters_pool_is_scored_once_per_model_version_whatever_set_it_is_in():
    miner = build(Spec("fraudulent", 0), 0, corpus_files(), 0)
    world = PoolWorld()

    async def pools():
        first = await miner.pool(world, [target(b"t" * 32, models=(A, B))])
        second = await miner.pool(world, [target(b"u" * 32, models=(B, C))])
        world.checksums[C] = b"4"  # C's weights updated: scored again
        third = await miner.pool(world, [target(b"v" * 32, models=(C, A))])
        return first, second, third

    first, second, third = asyncio.run(pools())
    chunks = len(first.chunks)
    assert world.scored == [b"1"] * chunks + [b"2"] * chunks + [b"3"] * chunks + [b"4"] * chunks
    assert miner.stats.scores == 4 * chunks
    assert second.chunks == first.chunks and second.model_ids == [B, C] and third.model_ids == [C, A]
    assert second.losses.shape == (chunks, 2) and second.embeddings.shape == (chunks, 2, DIM)
    np.testing.assert_array_equal(second.losses[:, 0], first.losses[:, 1])  # B's scores, reused
    assert third.losses[0, 0] == b"4"[0] * 256 + first.chunks[0][0]  # the new version's
    np.testing.assert_array_equal(third.embeddings[:, 1], first.embeddings[:, 0])
