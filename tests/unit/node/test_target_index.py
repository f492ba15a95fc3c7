"""The target index (soma_ray/node/target_index.py) following checkpoints built in one process: the
statuses through whole lifecycles, pages, filters, manifests, nearest targets and the
leaderboard, each checked against what the chain's own state says."""
import msgspec
import numpy as np
import pytest

from soma_ray.node.executor import InvalidCheckpoint
from soma_ray.node.target_index import OutOfOrder, TargetIndex
from soma_ray.wire import STATUSES
from soma_ray.protocol.submissions import claim_split
from soma_ray.protocol.crypto import sign_certificate
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.errors import (
    EmbeddingDimensionMismatch, MalformedInput, ModelHasNoWeights, ObjectNotFound, ZeroEmbedding,
)
from soma_ray.protocol.genesis import localnet_config, preset_keypair
from soma_ray.protocol.params import localnet
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import MODEL, STAKING_POOL, TARGET
from soma_ray.protocol.submissions import challenge_vote_domain, challenge_vote_message, submission_commitment
from soma_ray.protocol.targets import DISTANCE_SCALE
from soma_ray.protocol.types import (
    ClaimRewards, CommitSubmission, InitiateChallenge, Model, ResolveChallenge, RevealSubmission,
    StakingPool, Target, WeightsManifest,
)

MINER, RIVAL, CHALLENGER, CLAIMER = (preset_keypair("user", i) for i in range(4))
VALIDATORS = [preset_keypair("validator", i) for i in range(4)]
DATA = b"bytes the miner found"
BOND = 10_000


class Chain:
    """A localnet Simulator whose every checkpoint the index follows (and must match)."""

    def __init__(self, config=None, **parameters):
        config = config or localnet_config(validators=4, models=3, users=4)
        if parameters:
            config.parameters = msgspec.structs.replace(config.parameters, **parameters)
        self.sim = Simulator(config)
        self.index = TargetIndex.from_genesis(config)
        self.followed = []  # (checkpoint, effects), to rebuild another index

    @property
    def state(self):
        return self.sim.state

    def _follow(self, checkpoint, effects):
        self.index.follow(checkpoint, effects)
        self.followed.append((checkpoint, effects))
        assert self.index.synced_sequence == checkpoint.sequence
        return effects

    def checkpoint(self):
        return self._follow(*self.sim.make_checkpoint())

    def advance_epoch(self):
        return self._follow(*self.sim.advance_epoch())

    def run(self, keypair, kind):
        self.sim.submit_kind(keypair, kind)
        (effects,) = self.checkpoint()
        return effects

    def ok(self, keypair, kind):
        effects = self.run(keypair, kind)
        assert effects.error is None, effects.error
        return effects

    def target(self, target_id) -> Target:
        return self.state.get(TARGET, target_id, Target)

    def chain_open(self) -> list[Target]:
        epoch = self.state.system().epoch
        return [t for t in self.state.values(TARGET, Target) if t.status == "Open" and t.generation_epoch == epoch]

    def reveal_kind(self, target, submission_id):
        return RevealSubmission(submission_id, blake2b256(DATA), len(DATA), "http://blobs/x",
                                target.model_ids[0], target.embedding, 7, b"nonce")

    def commit(self, target, miner=MINER) -> bytes:
        r = self.reveal_kind(target, b"")
        commitment = submission_commitment(r.data_hash, r.data_size, r.model_id, r.embedding, r.loss_score, r.nonce)
        return self.ok(miner, CommitSubmission(target.id, commitment, BOND)).created[0]

    def fill(self, target, miner=MINER) -> bytes:
        submission_id = self.commit(target, miner)
        self.ok(miner, self.reveal_kind(target, submission_id))
        return submission_id

    def challenge(self, submission_id) -> bytes:
        return self.ok(CHALLENGER, InitiateChallenge(submission_id, "DataFraud", 5_000)).created[0]

    def resolve(self, challenge_id, verdict):
        committee = self.state.system().committee
        cert = sign_certificate(committee, VALIDATORS[:3], challenge_vote_domain(self.state.system().chain_id),
                                challenge_vote_message(challenge_id, verdict))
        return self.ok(CLAIMER, ResolveChallenge(challenge_id, verdict, cert))

    def pool_of(self, model_id) -> StakingPool:
        model = self.state.get(MODEL, model_id, Model)
        return self.state.get(STAKING_POOL, model.staking_pool_id, StakingPool)


def all_pages(index, limit=7, **filters):
    """Every target a client paging with `limit` gets, in order."""
    found, token = [], None
    while True:
        page = index.list_targets(limit=limit, page_token=token, **filters)
        assert len(page.targets) <= limit
        found += page.targets
        token = page.next_page_token
        if token is None:
            return found


def status_of(chain, target_id):
    return chain.index.get_target(target_id).status


@pytest.fixture
def chain():
    return Chain()


# ------------------------------------------------------------------------------ views, statuses


def test_genesis_targets_are_listed_open_with_the_chains_fields(chain):
    listed = all_pages(chain.index, status="open")
    chain_targets = list(chain.state.values(TARGET, Target))
    assert sorted(v.id for v in listed) == sorted(t.id for t in chain_targets) and len(listed) == 10
    params = chain.state.system().parameters
    for view in listed:
        target = chain.target(view.id)
        assert view.model_ids == target.model_ids and len(view.model_ids) == params.k_models_per_target
        assert view.embedding == target.embedding and view.reward_pool == target.reward_pool > 0
        assert view.threshold_fixed == target.distance_threshold
        assert view.distance_threshold == target.distance_threshold / DISTANCE_SCALE
        assert view.bond_amount == params.submission_min_bond and view.generation_epoch == 0
        assert view.submitter is None and view.winning_model_id is None and view.fill_epoch is None
    assert chain.index.required_bond(len(DATA)) == max(params.submission_min_bond, len(DATA) * params.bond_per_byte)
    assert chain.index.required_bond(100_000) == 100_000 * params.bond_per_byte


def test_statuses_through_fill_challenge_claim_and_expiry(chain):
    target, other = chain.chain_open()[:2]
    submission_id = chain.commit(target)
    view = chain.index.get_target(target.id)
    assert view.status == "open" and view.submitter == MINER.address and view.submission_id == submission_id
    commit_ms = chain.sim.checkpoints[-1].timestamp_ms
    assert view.reveal_deadline_ms == commit_ms + chain.state.system().parameters.reveal_window_ms
    chain.ok(MINER, chain.reveal_kind(target, submission_id))
    view = chain.index.get_target(target.id)
    assert (view.status, view.fill_epoch, view.claimable_epoch) == ("filled", 0, 2)
    assert view.winning_model_id == target.model_ids[0] and view.reveal_deadline_ms is None
    chain.advance_epoch()  # epoch 1: still inside the challenge window
    assert status_of(chain, target.id) == "filled"
    assert status_of(chain, other.id) == "expired"
    challenge_id = chain.challenge(submission_id)
    assert chain.target(target.id).status == "Challenged" and status_of(chain, target.id) == "filled"
    chain.resolve(challenge_id, "MinerWins")
    assert status_of(chain, target.id) == "filled"
    chain.advance_epoch()  # epoch 2 = fill_epoch + 2
    assert status_of(chain, target.id) == "claimable"
    assert [v.id for v in all_pages(chain.index, status="claimable")] == [target.id]
    chain.ok(CLAIMER, ClaimRewards(target.id))
    view = chain.index.get_target(target.id)
    assert (view.status, view.settled_epoch, view.reward_pool) == ("settled", 2, 0)
    assert view.submitter == MINER.address  # the paid-out submission is kept until pruning
    chain.ok(CLAIMER, ClaimRewards(other.id))  # an expired target: the finder's fee
    assert status_of(chain, other.id) == "settled"
    # Every listed status is the rule applied to the chain's own object, for every target.
    epoch = chain.state.system().epoch
    for t in chain.state.values(TARGET, Target):
        expected = {"Open": "open" if t.generation_epoch == epoch else "expired", "Settled": "settled",
                    "Filled": "claimable" if epoch >= (t.fill_epoch or 0) + 2 else "filled",
                    "Challenged": "filled"}[t.status]
        assert status_of(chain, t.id) == expected
    counts = dict(chain.index.status().counts)
    assert sum(counts.values()) == len(chain.state.ids(TARGET)) and set(counts) == set(STATUSES)


def test_a_challenger_win_reopens_the_target_and_takes_back_the_hit(chain):
    target = chain.chain_open()[0]
    cheat = chain.fill(target)
    assert [(m.address, m.hits) for m in chain.index.leaderboard().miners] == [(MINER.address, 1)]
    chain.resolve(chain.challenge(cheat), "ChallengerWins")
    view = chain.index.get_target(target.id)
    assert (view.status, view.submitter, view.winning_model_id) == ("open", None, None)
    assert chain.index.leaderboard().miners == [] and chain.index.leaderboard().models == []
    chain.fill(target, miner=RIVAL)
    board = chain.index.leaderboard()
    assert [(m.address, m.hits) for m in board.miners] == [(RIVAL.address, 1)]
    assert [(m.model_id, m.wins) for m in board.models] == [(target.model_ids[0], 1)]


# ------------------------------------------------------------------------------ pages, filters


def test_pages_have_no_duplicates_and_no_gaps_while_new_targets_appear():
    chain = Chain(initial_targets_per_epoch=40, target_hits_per_epoch=400)
    before = [t.id for t in chain.state.values(TARGET, Target)]
    assert len(before) == 40
    listed, token, fills = [], None, 0
    while True:
        page = chain.index.list_targets(limit=6, page_token=token)
        listed += [v.id for v in page.targets]
        token = page.next_page_token
        if token is None:
            break
        # Between pages the chain moves: a fill creates a replacement target.
        chain.fill(chain.chain_open()[-1])
        fills += 1
    assert len(listed) == len(set(listed))  # no duplicates
    assert set(before) <= set(listed)  # no gaps among targets that existed throughout
    assert len(chain.state.ids(TARGET)) == 40 + fills == len(listed)  # the new ones came at the end
    assert listed[:40] == [v.id for v in all_pages(chain.index, limit=50)][:40]  # a stable order
    assert [v.id for v in all_pages(chain.index, limit=1)] == [v.id for v in all_pages(chain.index, limit=1000)]


def test_open_pages_stay_stable_while_targets_fill():
    chain = Chain(initial_targets_per_epoch=30, target_hits_per_epoch=300)
    open_throughout = {t.id for t in chain.chain_open()}
    listed, token = [], None
    while True:
        page = chain.index.list_targets(status="open", limit=4, page_token=token)
        assert all(v.status == "open" for v in page.targets)
        listed += [v.id for v in page.targets]
        token = page.next_page_token
        if token is None:
            break
        filled = chain.chain_open()[0]  # the earliest open target: maybe already listed, maybe not
        chain.fill(filled)
        open_throughout.discard(filled.id)
    assert len(listed) == len(set(listed))
    assert open_throughout <= set(listed)
    assert {v.id for v in all_pages(chain.index, status="open")} == {t.id for t in chain.chain_open()}


def test_filters_by_status_submitter_and_model(chain):
    first, second, third = chain.chain_open()[:3]
    chain.fill(first)
    chain.commit(second, miner=RIVAL)
    assert [v.id for v in all_pages(chain.index, submitter=MINER.address)] == [first.id]
    assert [v.id for v in all_pages(chain.index, submitter=RIVAL.address, status="open")] == [second.id]
    assert all_pages(chain.index, submitter=RIVAL.address, status="filled") == []
    assert all_pages(chain.index, submitter=CLAIMER.address) == []
    model_id = third.model_ids[-1]
    expected = [t.id for t in chain.state.values(TARGET, Target) if model_id in t.model_ids]
    assert sorted(v.id for v in all_pages(chain.index, limit=2, model_id=model_id)) == sorted(expected)
    assert [v.id for v in all_pages(chain.index, status="filled", model_id=first.model_ids[0])] == [first.id]
    assert all_pages(chain.index, model_id=b"\x07" * 32) == []


def test_bad_queries_raise_typed_errors(chain):
    with pytest.raises(ObjectNotFound) as missing:
        chain.index.get_target(b"\x01" * 32)
    assert missing.value.id == b"\x01" * 32 and missing.value.kind == "target"
    for token in ("nonsense", "", "0" * 15, "+" + "0" * 15, "0000_00000000000", 12):
        with pytest.raises(MalformedInput):
            chain.index.list_targets(page_token=token)
    for bad in ({"status": "Open"}, {"limit": 0}, {"limit": 1001}):
        with pytest.raises(MalformedInput):
            chain.index.list_targets(**bad)
    with pytest.raises(EmbeddingDimensionMismatch):
        chain.index.nearest_open_targets(np.ones(63, dtype=np.float32).tobytes(), 3)
    with pytest.raises(ZeroEmbedding):
        chain.index.nearest_open_targets(np.zeros(64, dtype=np.float32).tobytes(), 3)
    with pytest.raises(MalformedInput):
        chain.index.nearest_open_targets(np.ones(64, dtype=np.float64), 3)
    with pytest.raises(MalformedInput):
        chain.index.nearest_open_targets(np.ones(64, dtype=np.float32), 0)


# ------------------------------------------------------------------------------ models


def test_manifests_of_models_with_weights_and_a_typed_error_for_one_without():
    config = localnet_config(validators=4, models=3, users=4)
    manifest = WeightsManifest("http://blobs/weights-0", b"\x0c" * 32, 12_345)
    config.models[0].weights_manifest = manifest
    config.models[0].decryption_key = b"\x0b" * 32
    chain = Chain(config)
    models = chain.index.active_models()
    with_weights = next(m.model_id for m in models if chain.state.get(MODEL, m.model_id, Model).weights_manifest)
    without = [m.model_id for m in models if m.model_id != with_weights]
    (view,) = chain.index.model_manifests([with_weights])
    assert (view.model_id, view.url, view.checksum, view.size, view.decryption_key) == (
        with_weights, manifest.url, manifest.checksum, manifest.size, b"\x0b" * 32)
    with pytest.raises(ModelHasNoWeights) as no_weights:
        chain.index.model_manifests([with_weights, without[1]])
    assert no_weights.value.model_id == without[1]  # never silently dropped: the model is named
    with pytest.raises(ObjectNotFound) as unknown:
        chain.index.model_manifests([b"\x09" * 32])
    assert unknown.value.kind == "model"


def test_active_models_are_the_chains_with_their_pools_stake(chain):
    def expected():
        return [(m.id, m.owner, m.embedding, chain.pool_of(m.id).soma_balance, m.commission_bps)
                for m in chain.state.values(MODEL, Model) if m.status == "Active"]
    listed = chain.index.active_models()
    assert [(m.model_id, m.owner, m.embedding, m.stake, m.commission_bps) for m in listed] == expected()
    assert len(listed) == 3 and not any(m.has_pending_update for m in listed)
    target = chain.chain_open()[0]
    chain.fill(target)
    chain.advance_epoch()
    chain.advance_epoch()
    chain.ok(CLAIMER, ClaimRewards(target.id))  # the model's pool grows
    after = chain.index.active_models()
    assert [(m.model_id, m.owner, m.embedding, m.stake, m.commission_bps) for m in after] == expected()
    assert after != listed
    assert chain.index.get_model(target.model_ids[0]).stake == chain.pool_of(target.model_ids[0]).soma_balance


# ------------------------------------------------------------------------------ nearest, board


def test_nearest_open_targets_by_cosine_distance(chain):
    open_targets = chain.chain_open()
    query = np.frombuffer(open_targets[3].embedding, dtype="<f4") + np.float32(0.01)
    found = chain.index.nearest_open_targets(query.astype(np.float32), k=4)
    assert found[0].target.id == open_targets[3].id and found[0].distance < 1e-3

    def cosine(target):
        e = np.frombuffer(target.embedding, dtype="<f4").astype(np.float64)
        return 1 - e @ query / (np.linalg.norm(e) * np.linalg.norm(query))
    brute = sorted(open_targets, key=cosine)[:4]
    assert [n.target.id for n in found] == [t.id for t in brute]
    assert [n.distance for n in found] == pytest.approx([cosine(t) for t in brute], abs=1e-5)
    chain.fill(open_targets[3])  # filled: no longer open, so no longer offered
    assert open_targets[3].id not in [n.target.id for n in chain.index.nearest_open_targets(query, k=20)]
    assert all(n.target.status == "open" for n in chain.index.nearest_open_targets(query, k=20))


def test_leaderboard_figures_equal_what_the_claims_paid(chain):
    first, second = chain.chain_open()[:2]
    chain.fill(first)
    chain.fill(second, miner=RIVAL)
    chain.advance_epoch()
    chain.advance_epoch()
    params = chain.state.system().parameters
    base_fee = params.base_fee
    miner_before, rival_before = (chain.state.account(k.address).balance for k in (MINER, RIVAL))
    pool = chain.pool_of(first.model_ids[0])
    chain.ok(CLAIMER, ClaimRewards(first.id))
    chain.ok(RIVAL, ClaimRewards(second.id))  # the miner claims its own: the finder's fee too
    board = chain.index.leaderboard()
    miners = {m.address: m for m in board.miners}
    assert (miners[MINER.address].hits, miners[RIVAL.address].hits) == (1, 1)
    fee, miner_reward, _ = claim_split(params, first.reward_pool)
    assert miners[MINER.address].rewards == miner_reward
    assert chain.state.account(MINER.address).balance - miner_before == miner_reward + BOND
    rival_fee, rival_reward, _ = claim_split(params, second.reward_pool)
    assert chain.state.account(RIVAL.address).balance - rival_before == rival_reward + rival_fee + BOND - base_fee
    assert miners[RIVAL.address].rewards == rival_reward
    # A model's earnings are what its pool received: compounded plus its owner's commission stake.
    after = chain.pool_of(first.model_ids[0])
    # (Both claims' shares when both targets named the same model: so do its earnings.)
    received = (after.soma_balance + after.pending_stake) - (pool.soma_balance + pool.pending_stake)
    models = {m.model_id: m for m in board.models}
    assert models[first.model_ids[0]].earnings == received
    assert sum(m.wins for m in board.models) == 2
    assert board.models == sorted(board.models, key=lambda m: (-m.wins, -m.earnings, m.model_id))


def test_a_claimed_target_pruned_in_the_same_checkpoint_keeps_its_hit_and_is_gone():
    chain = Chain(settled_retention_epochs=0)
    target = chain.chain_open()[0]
    chain.fill(target)
    chain.advance_epoch()
    chain.advance_epoch()
    chain.sim.submit_kind(CLAIMER, ClaimRewards(target.id))
    effects = chain.advance_epoch()  # the claim and the epoch change that prunes it: one checkpoint
    assert effects[0].error is None and chain.target(target.id) is None
    with pytest.raises(ObjectNotFound):
        chain.index.get_target(target.id)
    (miner,) = chain.index.leaderboard().miners
    assert (miner.address, miner.hits) == (MINER.address, 1)
    assert miner.rewards == claim_split(chain.state.system().parameters, target.reward_pool)[1]


# ------------------------------------------------------------------------------ following


def test_a_rebuilt_index_gives_the_same_answers_and_refuses_bad_checkpoints(chain):
    target = chain.chain_open()[0]
    chain.fill(target)
    chain.advance_epoch()
    chain.commit(chain.chain_open()[1], miner=RIVAL)
    rebuilt = TargetIndex(Simulator(localnet_config(validators=4, models=3, users=4)).state)
    for checkpoint, effects in chain.followed:
        rebuilt.follow(checkpoint, None if checkpoint.sequence % 2 else effects)  # verified or not
    assert rebuilt.status() == chain.index.status()
    assert all_pages(rebuilt) == all_pages(chain.index)
    assert rebuilt.leaderboard() == chain.index.leaderboard()
    chain.checkpoint()
    checkpoint, effects = chain.followed[-1]
    with pytest.raises(OutOfOrder):
        rebuilt.follow(chain.followed[0][0], chain.followed[0][1])
    forged = msgspec.structs.replace(checkpoint, state_root=b"\x00" * 32)
    with pytest.raises(InvalidCheckpoint):
        rebuilt.follow(forged, effects)
    assert rebuilt.synced_sequence == checkpoint.sequence - 1  # still where it was
    rebuilt.follow(checkpoint, effects)
    assert rebuilt.status() == chain.index.status()
