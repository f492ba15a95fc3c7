"""Settled targets are pruned at the epoch change (spec §2 "Settled (then removable)", §3 step 8).

A target Settled in epoch e stays readable through epoch e + settled_retention_epochs and is gone,
with its submission, from the change into epoch e + settled_retention_epochs + 1 on. Only Settled
targets with nothing owed (reward 0, bonds paid, no challenge) are removed; removal never moves
funds; the state root is that of a state that never held the objects, and replays, persisted
deltas and a rolled-back epoch change all agree.
"""
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle_network import CHALLENGER, MINER, RIVAL, Network as LifecycleNetwork
from soma_ray.cli.simulate import ScriptedUsers
from soma_ray.protocol import epoch as epoch_module
from soma_ray.protocol import params as protocol_params
from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.genesis import genesis, localnet_config
from soma_ray.protocol.params import localnet
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import CHALLENGE, SUBMISSION, TARGET, State
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.targets import active_model_index, build_model_index, prune_settled_targets
from soma_ray.protocol.types import InitiateChallenge, Submission, Target


def config_with(**overrides):
    config = localnet_config(validators=4, models=3, users=4)
    config.parameters = msgspec.structs.replace(localnet(), **overrides)
    return config


class Network(LifecycleNetwork):
    """The lifecycle network with a chosen retention; every epoch change must succeed."""

    def __init__(self, retention=2, **overrides):
        self.config = config_with(settled_retention_epochs=retention, **overrides)
        super().__init__(self.config)

    def advance_epoch(self):
        effects = super().advance_epoch()
        assert effects[-1].error is None, effects[-1].error
        return effects

    def settle_filled(self):
        """Fill a target in this epoch and claim it two epochs later: (target id, submission id)."""
        target = self.open_targets()[0]
        submission_id = self.fill(target)
        self.advance_epoch()
        self.advance_epoch()
        assert self.claim(target.id).error is None
        return target.id, submission_id


def test_defaults_keep_settled_targets_two_epochs():
    assert protocol_params.testnet().settled_retention_epochs == 2
    assert localnet().settled_retention_epochs == 2


@pytest.mark.parametrize("retention", [0, 1, 2, 3])
def test_a_claimed_target_is_readable_for_the_retention_then_gone_with_its_submission(retention):
    net = Network(retention)
    target_id, submission_id = net.settle_filled()
    settled = net.target(target_id)
    assert (settled.status, settled.settled_epoch, settled.reward_pool) == ("Settled", net.epoch, 0)
    settled_in = net.epoch
    assert net.submission(submission_id).bond == 0
    while net.epoch < settled_in + retention:
        net.advance_epoch()
        assert net.target(target_id).status == "Settled"
        assert net.submission(submission_id) is not None
    net.state.mark()  # what a validator persists for the pruning checkpoint
    net.advance_epoch()  # the change into settled_in + retention + 1
    assert net.epoch == settled_in + retention + 1
    assert net.target(target_id) is None and net.submission(submission_id) is None
    assert net.state.get_raw(TARGET + target_id) is None  # what a client's get_object reads
    assert target_id not in net.state.ids(TARGET) and submission_id not in net.state.ids(SUBMISSION)
    delta = dict(net.state.changes())
    assert delta[TARGET + target_id] is None and delta[SUBMISSION + submission_id] is None
    # A claim of a removed target is an ordinary typed error, paying only the fee.
    effects = net.claim(target_id)
    assert effects.error.code == "ObjectNotFound" and effects.fee_charged == net.sim.params.base_fee


def test_an_expired_target_claimed_for_the_finder_fee_is_pruned_too():
    net = Network(retention=0)
    target = net.open_targets()[0]
    net.advance_epoch()
    assert net.claim(target.id).error is None
    assert net.target(target.id).settled_epoch == 1
    net.advance_epoch()
    assert net.target(target.id) is None


def test_a_target_settled_by_a_late_challenger_win_is_pruned_and_nothing_of_it_remains():
    net = Network(retention=0)
    target = net.open_targets()[0]
    submission_id = net.fill(target)
    net.advance_epoch()  # epoch 1 = fill_epoch + 1: still challengeable, the target's epoch is over
    challenge_id = net.challenge(submission_id)
    assert net.resolve(challenge_id, "ChallengerWins").error is None
    settled = net.target(target.id)
    assert (settled.status, settled.settled_epoch, settled.submission_id) == ("Settled", 1, None)
    net.advance_epoch()
    assert net.target(target.id) is None
    assert net.state.get(CHALLENGE, challenge_id, object) is None
    assert not [s for s in net.state.values(SUBMISSION, Submission) if s.target_id == target.id]


def test_unsettled_targets_are_never_removed():
    """Open (current and expired), Committed, Filled and Challenged targets survive every change,
    even with retention 0; only the Settled one goes."""
    net = Network(retention=0)
    open_now, expired, committed, filled, challenged, settled = net.open_targets()[:6]
    net.fill(challenged)
    challenge_id = net.challenge(net.target(challenged.id).submission_id)
    net.fill(filled)
    net.advance_epoch()  # `expired` is now Open in a past epoch; `challenged` still Challenged
    assert net.target(challenged.id).status == "Challenged"
    assert net.target(expired.id).status == "Open"
    keep = [open_now.id, expired.id, filled.id, challenged.id, committed.id]
    current = net.open_targets()
    net.commit(current[0])  # Committed, reveal window open
    keep.append(current[0].id)
    for _ in range(4):
        net.advance_epoch()
        assert all(net.target(i) is not None and net.target(i).status != "Settled" for i in keep)
    assert net.target(challenged.id).status == "Filled"  # the challenge timed out, miner stays winner
    assert net.state.get(CHALLENGE, challenge_id, object) is None


def test_a_settled_target_that_still_holds_funds_is_kept():
    """Defence in depth: a Settled target with a bonded submission or an open challenge (no kind
    creates one) is not removed, so no locked funds can vanish from the supply."""
    net = Network(retention=0)
    target_id, submission_id = net.settle_filled()
    submission = net.submission(submission_id)
    submission.bond = 1
    net.state.put(SUBMISSION, submission_id, submission)
    emission = net.state.system().emission_pool
    emission.balance -= 1  # keep the supply whole: the shannon moved into the bond
    system = net.state.system()
    system.emission_pool = emission
    net.state.put_system(system)
    net.advance_epoch()
    assert net.target(target_id).status == "Settled" and net.submission(submission_id).bond == 1


def test_pruning_keeps_supply_and_the_root_equals_a_state_that_never_held_the_objects():
    net = Network(retention=0)
    target_id, submission_id = net.settle_filled()
    pre = net.state.copy()
    supply = total_supply(pre)
    checkpoint, effects = net.sim.advance_epoch()
    assert effects[-1].error is None and net.target(target_id) is None
    assert total_supply(net.state) == supply == net.supply
    # The same checkpoint on a state built without the two entries: same checkpoint, same root.
    gone = {TARGET + target_id, SUBMISSION + submission_id}
    never_had = State.from_items((k, v) for k, v in pre.items() if k not in gone)
    again, _ = build_checkpoint(never_had, net.sim.checkpoints[-2], checkpoint.transactions, checkpoint.timestamp_ms)
    assert again == checkpoint
    assert never_had.state_root() == net.state.state_root() and never_had.items() == net.state.items()


def test_a_failed_epoch_change_rolls_the_pruning_back(monkeypatch):
    net = Network(retention=0)
    target_id, submission_id = net.settle_filled()
    pre_root, pre_epoch = net.state.state_root(), net.epoch
    real = epoch_module.prune_settled_targets

    def prune_then_fail(state, ctx):
        assert real(state, ctx) == [target_id]
        assert state.get(TARGET, target_id, Target) is None
        raise RuntimeError("a bug after the pruning")

    monkeypatch.setattr(epoch_module, "prune_settled_targets", prune_then_fail)
    _, effects = net.sim.advance_epoch()  # the proposer leaves the failing ChangeEpoch out
    assert effects == [] and net.sim.left_out[-1].error.code == "InternalError"
    assert net.state.state_root() == pre_root and net.epoch == pre_epoch
    assert net.target(target_id).status == "Settled" and net.submission(submission_id).bond == 0
    assert target_id in net.state.ids(TARGET)
    monkeypatch.setattr(epoch_module, "prune_settled_targets", real)
    net.advance_epoch()
    assert net.target(target_id) is None and net.submission(submission_id) is None


def test_the_model_index_cache_survives_pruning():
    net = Network(retention=0)
    target_id, _ = net.settle_filled()
    net.advance_epoch()
    assert net.target(target_id) is None
    cached = active_model_index(net.state)
    fresh = build_model_index(net.state)
    assert cached.model_ids == fresh.model_ids and cached.stakes == fresh.stakes
    # Fills after the pruning still generate replacement targets from the cached index.
    before = len(net.state.ids(TARGET))
    net.fill(net.open_targets()[0])
    assert len(net.state.ids(TARGET)) == before + 1


def test_prune_is_a_no_op_without_settled_targets():
    net = Network(retention=0)
    root = net.state.state_root()
    system = net.state.system()
    ctx = ExecutionContext(system.parameters, system.epoch + 5, 0, bytes(32))
    assert prune_settled_targets(net.state, ctx) == []
    assert net.state.state_root() == root


# --- random histories: replay, persisted deltas, exactly the due targets removed -----------------

ACTIONS = st.lists(
    st.tuples(st.sampled_from(["fill", "claim", "challenge", "resolve", "epoch", "epoch"]),
              st.integers(0, 20), st.booleans()),
    min_size=6, max_size=24,
)


def step(net: Network, action, index, flag):
    state = net.state
    if action == "fill":
        candidates = net.open_targets()
        if candidates:
            net.fill(candidates[index % len(candidates)], miner=[MINER, RIVAL][flag])
    elif action == "claim":
        ids = state.ids(TARGET)
        net.claim(ids[index % len(ids)])
    elif action == "challenge":
        revealed = [s for s in state.values(SUBMISSION, Submission) if s.revealed is not None and s.bond]
        if revealed:
            net.run(CHALLENGER, InitiateChallenge(revealed[index % len(revealed)].id, "ScoreFraud", 5_000))
    elif action == "resolve":
        ids = state.ids(CHALLENGE)
        if ids:
            net.resolve(ids[index % len(ids)], "ChallengerWins" if flag else "MinerWins")


@settings(max_examples=25, deadline=None)
@given(ACTIONS, st.integers(0, 2))
def test_random_histories_remove_exactly_the_due_settled_targets_and_replay_identically(actions, retention):
    net = Network(retention)
    persisted = dict(net.state.items())  # a validator's store: genesis, then each checkpoint's delta

    def persist():
        for key, value in net.state.changes():
            if value is None:
                persisted.pop(key, None)
            else:
                persisted[key] = value
        net.state.mark()

    net.state.mark()
    for action, index, flag in actions + [("epoch", 0, False)] * 3:
        if action != "epoch":
            step(net, action, index, flag)
            persist()
            continue
        before = {t.id: t for t in net.state.values(TARGET, Target)}
        new_epoch = net.epoch + 1
        net.advance_epoch()
        persist()
        after = set(net.state.ids(TARGET))
        removed = set(before) - after
        due = {i for i, t in before.items() if t.status == "Settled" and t.settled_epoch + retention < new_epoch}
        assert removed == due
        # No submission or challenge is left pointing at a removed target.
        assert not [s for s in net.state.values(SUBMISSION, Submission) if s.target_id in removed]
        assert all(net.state.get(TARGET, s.target_id, Target) is not None for s in net.state.values(SUBMISSION, Submission))
    assert State.from_items(persisted.items()).state_root() == net.state.state_root()
    replay = genesis(net.config)
    previous = None
    for checkpoint in net.sim.checkpoints:
        again, _ = build_checkpoint(replay, previous, checkpoint.transactions, checkpoint.timestamp_ms)
        assert again == checkpoint
        previous = again
    assert replay.items() == net.state.items()


# --- the Simulator: the number of stored targets stays bounded ----------------------------------


def stored_counts(retention, epochs, checkpoints_per_epoch=2):
    """Run `soma simulate`'s scripted users; (targets, submissions) stored after each epoch."""
    sim = Simulator(config_with(settled_retention_epochs=retention))
    users = ScriptedUsers(sim)
    counts, step_number = [], 0
    for _ in range(epochs):
        for _ in range(checkpoints_per_epoch):
            users.act(step_number)
            step_number += 1
            sim.make_checkpoint()
        sim.advance_epoch()
        assert total_supply(sim.state) == sim.params.genesis_supply
        counts.append((len(sim.state.ids(TARGET)), len(sim.state.ids(SUBMISSION))))
    return counts


def test_the_simulator_keeps_the_stored_targets_bounded():
    epochs = 14
    pruned = stored_counts(retention=2, epochs=epochs)
    kept = stored_counts(retention=10**6, epochs=epochs)  # effectively never pruned
    per_epoch = localnet().initial_targets_per_epoch + 2  # initial targets + at most one fill per checkpoint
    bound = (2 + 4) * per_epoch  # retention + current, expired, audit window (2) epochs
    assert max(t for t, _ in pruned) <= bound
    # Steady state: the second half never grows beyond the first half's peak.
    assert max(t for t, _ in pruned[epochs // 2:]) <= max(t for t, _ in pruned[: epochs // 2])
    assert max(s for _, s in pruned[epochs // 2:]) <= max(s for _, s in pruned[: epochs // 2])
    # Without pruning the same run grows every epoch, past the bound.
    assert kept[-1][0] > bound and all(b[0] > a[0] for a, b in zip(kept, kept[1:]))
