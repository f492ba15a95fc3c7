"""Property tests: random valid and invalid transactions over several epochs.

Invariants: supply is conserved exactly after every checkpoint, no balance or pool goes negative,
every transaction in a checkpoint paid its fee, and replaying the checkpoints on a fresh genesis
gives the same state roots. Bad inputs of every shape yield typed errors, never crashes: refused
at admission, or (included anyway, as a proposer may) failing after paying the fee.
"""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.crypto import sign_certificate
from soma_ray.protocol.encoding import DOMAIN_PROOF_OF_POSSESSION, decode, encode
from soma_ray.protocol.epoch import SYSTEM_SENDER
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.execution import check_admission, sign_transaction
from soma_ray.protocol.genesis import genesis, localnet_config, preset_keypair
from soma_ray.protocol.models import model_commitment
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import ACCOUNT, CHALLENGE, MODEL, STAKED_SOMA, STAKING_POOL, SUBMISSION, TARGET, State
from soma_ray.protocol.submissions import challenge_vote_domain, challenge_vote_message, submission_commitment
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.types import (
    Account, AddStake, AddStakeToModel, AddValidator, ChangeEpoch, Checkpoint, ClaimRewards, CommitModel,
    CommitSubmission, CreateModel, DeactivateModel, Faucet, InitiateChallenge, Model, RemoveValidator,
    ReportModel, ResolveChallenge, RevealModel, RevealSubmission, SetCommission, StakedSoma, StakingPool,
    Submission, Target, Transaction, TransactionEffects, Transfer, UndoReportModel, WeightsManifest, WithdrawStake,
)

SOMA = 10**9
USERS = [preset_keypair("user", i) for i in range(4)]
VALIDATORS = [preset_keypair("validator", i) for i in range(4)]
ACTORS = USERS + VALIDATORS
KEY = b"k" * 32
NONCE = b"n" * 16

amounts = st.one_of(st.integers(-3, 5 * SOMA), st.integers(0, 2 * 10**15), st.just(0))
actions = st.lists(
    st.tuples(st.integers(0, 21), st.integers(0, 7), st.integers(0, 7), amounts), min_size=5, max_size=40
)


def _pick(ids, index):
    return ids[index % len(ids)] if ids else b"\x00" * 32


def _embedding(dim, seed):
    return np.random.default_rng(seed).standard_normal(dim).astype("<f4").tobytes()


def _kind(sim, action, a, b, amount):
    """A transaction kind for action number `action`: valid or not, depending on the draw."""
    state, dim = sim.state, sim.params.embedding_dim
    actor = ACTORS[a]
    models = state.ids(MODEL)
    targets = state.ids(TARGET)
    if action == 0:
        return Transfer(ACTORS[b].address, amount)
    if action == 1:
        return Faucet(ACTORS[b].address, amount)
    if action == 2:
        return AddStake(VALIDATORS[b % 4].address if b < 6 else _pick(models, b), amount)
    if action == 3:
        mine = [s.id for s in state.values(STAKED_SOMA, StakedSoma) if s.owner == actor.address]
        return WithdrawStake(_pick(mine or state.ids(STAKED_SOMA), b))
    if action == 4:
        return CreateModel(stake=abs(amount) % (20 * SOMA), commission_bps=b * 2000, architecture_version=1)
    if action == 5:
        emb = _embedding(dim, b)
        manifest = WeightsManifest("http://w", b"c" * 32, abs(amount))
        return CommitModel(_pick(models, b), manifest, b"w" * 32, model_commitment(emb), model_commitment(KEY))
    if action == 6:
        return RevealModel(_pick(models, a), KEY, _embedding(dim, b))
    if action == 7:
        return CommitSubmission(_pick(targets, b), _submission_commitment(state, _pick(targets, b)), abs(amount) % 10**8)
    if action == 8:
        return _reveal_submission(state, actor, b)
    if action == 9:
        return ClaimRewards(_pick(targets, b))
    if action == 10:
        return ReportModel(_pick(models, b))
    if action == 11:
        return DeactivateModel(_pick(models, b))
    if action == 14:
        pop = actor.sign(DOMAIN_PROOF_OF_POSSESSION, actor.address)
        return AddValidator(actor.public_key, "validator", pop if b % 4 else b"bad")
    if action == 15:
        return RemoveValidator()
    if action == 16:
        return SetCommission(actor.address if b % 2 else _pick(models, b), amount % 12_000 - 1_000)
    if action == 17:
        return UndoReportModel(_pick(models, b))
    if action == 18:
        return AddStakeToModel(_pick(models, b), amount)
    if action == 19:
        filled = [t.submission_id for t in state.values(TARGET, Target) if t.submission_id is not None]
        return InitiateChallenge(_pick(filled, b), "ScoreFraud" if b % 2 else "DataFraud", abs(amount) % 10**8)
    if action == 20:
        return _resolve_challenge(state, a, b)
    return None  # 12, 13, 21: epoch changes / stray nonce, handled by the caller


def _resolve_challenge(state, a, b):
    """A certificate of 1–4 current validators on a verdict for an open challenge (or a bad id)."""
    challenge_id = _pick(state.ids(CHALLENGE), b)
    verdict = "ChallengerWins" if a % 2 else "MinerWins"
    committee = state.system().committee
    members = {m.address for m in committee.members}
    signers = [v for v in VALIDATORS if v.address in members][: 1 + b % 4]
    message = challenge_vote_message(challenge_id, verdict)
    return ResolveChallenge(challenge_id, verdict, sign_certificate(committee, signers, challenge_vote_domain(state.system().chain_id), message))


def _submission_parts(state, target_id):
    target = state.get(TARGET, target_id, Target)
    if target is None or not target.model_ids:
        return None
    return target.model_ids[0], target.embedding


def _submission_commitment(state, target_id):
    parts = _submission_parts(state, target_id)
    if parts is None:
        return b"x" * 32
    model_id, embedding = parts
    return submission_commitment(b"h" * 32, 100, model_id, embedding, 5, NONCE)


def _reveal_submission(state, actor, b):
    """Reveal a commit of `actor` when it has one (any commit otherwise: NotOwner)."""
    committed = [t for t in state.values(TARGET, Target) if t.status == "Committed"]
    own = [t for t in committed if state.require(SUBMISSION, t.submission_id, Submission).miner == actor.address]
    committed = own or committed
    if not committed:
        return RevealSubmission(b"\x00" * 32, b"h" * 32, 100, "u", b"\x00" * 32, b"", 5, NONCE)
    target = committed[b % len(committed)]
    return RevealSubmission(target.submission_id, b"h" * 32, 100, "http://d", target.model_ids[0], target.embedding, 5, NONCE)


def _assert_invariants(sim):
    state = sim.state
    assert total_supply(state) == sim.params.genesis_supply
    assert all(acc.balance >= 0 and acc.nonce >= 0 for acc in state.values(ACCOUNT, Account))
    assert all(p.soma_balance >= 0 and p.pending_stake >= 0 and p.pool_token_balance >= 0
               for p in state.values(STAKING_POOL, StakingPool))
    assert all(state.get(STAKED_SOMA, staked_id, StakedSoma) is not None
               for p in state.values(STAKING_POOL, StakingPool) for staked_id in p.pending_withdraw)
    assert not [e for e in sim.effects if e.error is not None and e.error.code == "InternalError"]
    assert all(e.fee_charged == sim.params.base_fee for e in sim.effects if e.sender != SYSTEM_SENDER)


def _submit(sim, actor, kind, smuggle: bool = True) -> None:
    """Submit `kind` from `actor`; one admission refuses goes into the next checkpoint anyway
    when `smuggle` (a proposer may include anything: it then pays its fee, or is left out)."""
    data = sim.sign(actor, kind)
    try:
        sim.submit(data)
    except ProtocolError:
        if smuggle:
            sim.make_checkpoint(extra=[data])


def _run(steps):
    sim = Simulator(localnet_config())
    for validator in VALIDATORS:  # so validators can pay fees
        sim.submit_kind(USERS[0], Transfer(validator.address, 10 * SOMA))
    sim.make_checkpoint()
    for action, a, b, amount in steps:
        if action == 12:
            sim.advance_epoch()
        elif action == 21:  # a malformed ChangeEpoch: wrong epoch or not the checkpoint's time
            epoch, timestamp = sim.state.system().epoch + 1 + (b % 2), sim.timestamp_ms + 1_000 + (b // 2) % 2
            sim.make_checkpoint(sim.timestamp_ms + 1_000, [encode(ChangeEpoch(epoch, timestamp))])
        elif action == 13:
            actor = ACTORS[a]
            tx = Transaction(actor.address, sim.next_nonce(actor.address) + 1 + b, Transfer(USERS[0].address, 1), 1000)
            sim.make_checkpoint(extra=[encode(sign_transaction(actor, tx, sim.chain_id))])
        else:
            _submit(sim, ACTORS[a], _kind(sim, action, a, b, amount), smuggle=b % 2 == 1)
            if b % 3 == 0 or action in (7, 8, 19):  # these land, so later steps see them
                sim.make_checkpoint()
            if action == 7 and b % 4:  # mostly reveal at once: fills give challenges something to hit
                _submit(sim, ACTORS[a], _reveal_submission(sim.state, ACTORS[a], b))
                sim.make_checkpoint()
            if action == 19 and b % 2 == 0:  # and a verdict on it
                _submit(sim, USERS[0], _resolve_challenge(sim.state, a, b))
                sim.make_checkpoint()
        _assert_invariants(sim)
    sim.advance_epoch()
    _assert_invariants(sim)
    return sim


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_random_transactions_conserve_supply_and_replay_identically(steps):
    sim = _run(steps)
    replay = genesis(localnet_config())
    # A validator that persisted genesis and then only the deltas has the same state.
    persisted = dict(replay.items())
    for key, value in sim.state.changes():
        if value is None:
            persisted.pop(key, None)
        else:
            persisted[key] = value
    assert State.from_items(persisted.items()).state_root() == sim.state.state_root()
    previous = None
    for checkpoint in sim.checkpoints:
        again, _ = build_checkpoint(replay, previous, checkpoint.transactions, checkpoint.timestamp_ms)
        assert again == checkpoint
        previous = again
    assert replay.state_root() == sim.state.state_root()
    # Effects and checkpoints travel as bytes: they decode back to themselves.
    assert all(decode(encode(e), TransactionEffects) == e for e in sim.effects)
    assert all(decode(encode(c), Checkpoint) == c for c in sim.checkpoints)


def test_a_scripted_run_fills_and_claims_targets():
    """The random driver can reach fills and claims (so the property test covers them)."""
    sim = _run([(7, 0, 0, 10**7), (8, 0, 0, 0), (12, 0, 0, 0), (12, 0, 0, 0), (9, 1, 0, 0)])
    assert any(t.status in ("Filled", "Settled") for t in sim.state.values(TARGET, Target))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_admission(data):
    sim = _shared_sim()
    try:
        check_admission(data, sim.state)
    except ProtocolError:
        pass


# Byte strings of the wrong length, and 64 float32s all equal to one value (NaN, ±inf, 0 among them).
BAD_EMBEDDINGS = st.binary(max_size=400).filter(lambda b: len(b) != 4 * 64) | st.floats(
    allow_nan=True, allow_infinity=True, width=32).map(lambda x: np.full(64, x, dtype="<f4").tobytes())
EMBEDDING_ERRORS = {"MalformedInput", "EmbeddingDimensionMismatch", "NonFiniteEmbedding", "ZeroEmbedding"}


def _usable(embedding: bytes) -> bool:
    """64 finite float32s, not all zero: what the chain accepts as an embedding."""
    array = np.frombuffer(embedding, dtype="<f4") if len(embedding) == 256 else None
    return array is not None and bool(np.isfinite(array).all()) and bool(array.any())


@settings(max_examples=60, deadline=None)
@given(BAD_EMBEDDINGS)
def test_bad_embeddings_get_typed_errors(embedding):
    sim = Simulator(localnet_config())
    owner = USERS[0]
    sim.submit_kind(owner, CreateModel(stake=SOMA, commission_bps=0, architecture_version=1))
    _, effects = sim.make_checkpoint()
    model_id = effects[0].created[0]
    manifest = WeightsManifest("http://w", b"c" * 32, 1)
    sim.submit_kind(owner, CommitModel(model_id, manifest, b"w" * 32, model_commitment(embedding), model_commitment(KEY)))
    sim.advance_epoch()
    _submit(sim, owner, RevealModel(model_id, KEY, embedding))
    if sim.mempool:
        _, effects = sim.make_checkpoint()
    else:  # refused at admission (its length), and included anyway by _submit
        effects = sim.effects[-1:]
    valid = _usable(embedding)
    assert (effects[0].error is None) == valid
    if not valid:
        assert effects[0].error.code in EMBEDDING_ERRORS
        assert sim.state.require(MODEL, model_id, Model).status == "Pending"


@settings(max_examples=40, deadline=None)
@given(BAD_EMBEDDINGS)
def test_bad_submission_embeddings_get_typed_errors(embedding):
    sim = Simulator(localnet_config())
    miner = USERS[1]
    target = next(sim.state.values(TARGET, Target))
    model_id = target.model_ids[0]
    commitment = submission_commitment(b"h" * 32, 100, model_id, embedding, 5, NONCE)
    sim.submit_kind(miner, CommitSubmission(target.id, commitment, 10**6))
    _, effects = sim.make_checkpoint()
    _submit(sim, miner, RevealSubmission(effects[0].created[0], b"h" * 32, 100, "http://d", model_id, embedding, 5, NONCE))
    effects = sim.make_checkpoint()[1] if sim.mempool else sim.effects[-1:]
    if _usable(embedding):
        assert effects[0].error is None or effects[0].error.code == "DistanceExceedsThreshold"
    else:
        assert effects[0].error.code in EMBEDDING_ERRORS
        assert sim.state.require(TARGET, target.id, Target).status == "Committed"


_SIM = []


def _shared_sim():
    if not _SIM:
        _SIM.append(Simulator(localnet_config()))
    return _SIM[0]
