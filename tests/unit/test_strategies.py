"""The scripted participants' decisions, without Ray: which targets a miner may go for, whether a
scored item is a hit (the chain's own distance), which challenger checks a target, what it
challenges, the crowd's mix and roster, the corpus's chunks."""
import numpy as np
import pytest

from soma_ray.wire import TargetView
from soma_ray.protocol.targets import cosine_distance_fixed
from soma_ray.strategies import Corpus, Stats, corpus_files, crowd_mix, roster
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
