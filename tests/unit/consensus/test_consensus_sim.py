"""Whole networks of ConsensusCores on the simulated network: agreement, validity, liveness."""
from __future__ import annotations

import pytest
from consensus_sim import (
    SIM_CHAIN_ID,
    FIRST_HEIGHT,
    BadValueApp,
    Simulation,
    ValueApp,
    double_voter,
    equal_powers,
    equivocating_leader,
    garbage_signer,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soma_ray.consensus import LeaderSchedule, ProposalEquivocation, VoteEquivocation, verify_checkpoint_chain

UNEQUAL = [4000, 2000, 2000, 2000]


def assert_safe_and_certified(sim: Simulation) -> None:
    sim.assert_agreement()
    sim.assert_validity()
    sim.assert_no_honest_equivocation()
    for node in sim.honest():
        chain = [node.decided[h] for h in sorted(node.decided)]
        assert verify_checkpoint_chain(sim.committee, chain, FIRST_HEIGHT, chain_id=SIM_CHAIN_ID) == FIRST_HEIGHT + len(chain)


def top_height(sim: Simulation) -> int:
    return max((max(n.decided, default=0) for n in sim.live_honest()), default=0)


@pytest.mark.parametrize("n", [4, 7])
def test_decides_through_loss_delay_reordering_and_duplication(n):
    sim = Simulation(equal_powers(n), seed=n, loss=0.15, duplicate=0.2, delay_ms=(1, 120))
    assert sim.run_until_height(8, limit_ms=60_000)
    assert_safe_and_certified(sim)


def test_a_crashed_leader_is_replaced_by_timeout():
    sim = Simulation(equal_powers(4), seed=3)
    target = FIRST_HEIGHT + 2
    leader = LeaderSchedule(sim.committee).leader(target, 0)

    def crash_before_proposing(node, decide):
        if node.index == leader and decide.height == target - 1:
            sim.crash(leader)

    sim.on_decide = crash_before_proposing
    assert sim.run_until_height(target + 2, limit_ms=30_000)
    assert_safe_and_certified(sim)
    certificate = sim.live_honest()[0].decided[target].certificate
    assert certificate.round >= 1
    assert leader not in certificate.signer_indices


def test_no_progress_with_half_the_power_down_and_progress_when_it_returns():
    sim = Simulation(equal_powers(4), seed=4, loss=0.05)
    assert sim.run_until_height(3, limit_ms=20_000)
    sim.crash(2)
    sim.crash(3)
    sim.run(sim.now + 200)  # let messages already in flight land
    stalled_at = top_height(sim)
    sim.run(sim.now + 20_000)
    assert top_height(sim) == stalled_at
    sim.nodes[2].restart()
    sim.nodes[3].restart()
    assert sim.run_until_height(stalled_at + 3, limit_ms=sim.now + 60_000)
    assert_safe_and_certified(sim)


def test_progress_counts_voting_power_not_nodes():
    sim = Simulation(UNEQUAL, seed=5, loss=0.05)
    sim.crash(3)  # 8000 of 10000 remain
    assert sim.run_until_height(4, limit_ms=30_000)
    sim.crash(2)  # 6000 remain: below the quorum with half of the nodes still up
    sim.run(sim.now + 200)
    stalled_at = top_height(sim)
    sim.run(sim.now + 20_000)
    assert top_height(sim) == stalled_at
    assert_safe_and_certified(sim)


def test_unequal_power_decides_and_the_heavy_node_leads_more_often():
    sim = Simulation(UNEQUAL, seed=6, loss=0.1, delay_ms=(1, 60))
    assert sim.run_until_height(20, limit_ms=120_000)
    assert_safe_and_certified(sim)
    schedule = LeaderSchedule(sim.committee)
    leaders = [schedule.leader(h, c.certificate.round) for h, c in sim.nodes[0].decided.items()]
    assert leaders.count(0) > max(leaders.count(i) for i in (1, 2, 3))


def test_an_isolated_node_catches_up_by_certificates_after_healing():
    sim = Simulation(equal_powers(4), seed=7)
    sim.isolate(1)
    assert sim.run_until_height(6, limit_ms=40_000, nodes=[0, 2, 3])
    assert max(sim.nodes[1].decided, default=0) < 6
    sim.heal()
    assert sim.run_until_height(9, limit_ms=sim.now + 60_000)
    assert_safe_and_certified(sim)


def test_all_nodes_restarting_from_disk_keep_agreement():
    sim = Simulation(equal_powers(4), seed=8, loss=0.1)
    for stop in (1_000, 2_000, 3_000):
        sim.run(stop)
        for node in sim.nodes:
            node.restart()
    assert sim.run_until_height(top_height(sim) + 3, limit_ms=sim.now + 60_000)
    assert_safe_and_certified(sim)


BYZANTINE = {
    "equivocating leader": (equivocating_leader, ValueApp),
    "garbage signatures": (garbage_signer, ValueApp),
    "double voter": (double_voter, ValueApp),
    "bad transactions": (lambda node, sends: sends, BadValueApp),  # behaves, proposes bad values
    "equivocating double voter": (lambda node, sends: double_voter(node, equivocating_leader(node, sends)), ValueApp),
}


@pytest.mark.parametrize("name", sorted(BYZANTINE))
@pytest.mark.parametrize("n", [4, 7])
def test_honest_nodes_agree_and_progress_despite_one_byzantine_node(name, n):
    sim = Simulation(equal_powers(n), seed=10 + n, loss=0.05, delay_ms=(1, 40),
                     byzantine={1: BYZANTINE[name]})
    assert sim.run_until_height(10, limit_ms=120_000)
    assert_safe_and_certified(sim)
    honest = sim.honest()
    if name == "equivocating leader":
        assert any(isinstance(e, ProposalEquivocation) for n_ in honest for e in n_.core.evidence)
    if name == "double voter":
        assert any(isinstance(e, VoteEquivocation) and e.first.signer == 1 for n_ in honest for e in n_.core.evidence)
    if name == "garbage signatures":
        assert sum(n_.core.stats["invalid_signature"] for n_ in honest) > 0


def test_two_byzantine_of_seven_below_a_third_of_the_power_cannot_split_the_honest():
    sim = Simulation(equal_powers(7), seed=31, loss=0.05, delay_ms=(1, 40),
                     byzantine=dict.fromkeys((1, 4), BYZANTINE["equivocating double voter"]))
    assert sim.run_until_height(10, limit_ms=120_000)
    assert_safe_and_certified(sim)
    assert {e.first.signer for n_ in sim.honest() for e in n_.core.evidence} == {1, 4}


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from([4, 7]),
    loss=st.floats(0.0, 0.35),
    duplicate=st.floats(0.0, 0.3),
    max_delay=st.integers(1, 400),
    byzantine=st.sampled_from(sorted(BYZANTINE) + [None]),
    restarts=st.lists(st.tuples(st.integers(1, 3_000), st.integers(0, 6)), max_size=4),
)
def test_random_schedules_keep_agreement_and_mostly_progress(seed, n, loss, duplicate, max_delay, byzantine, restarts):
    """Safety under any schedule; liveness asserted where links lose ≤ 20% and delay ≤ 200 ms
    (heavier loss can need more simulated time than a unit test should spend)."""
    sim = Simulation(equal_powers(n), seed=seed, loss=loss, duplicate=duplicate, delay_ms=(1, max_delay),
                     byzantine={} if byzantine is None else {seed % n: BYZANTINE[byzantine]})
    for at, index in sorted(restarts):  # crash and restart from disk at once
        sim.run(at)
        sim.nodes[index % n].restart()
    must_progress = loss <= 0.2 and max_delay <= 200
    progressed = sim.run_until_height(FIRST_HEIGHT + 4, limit_ms=60_000 if must_progress else 15_000)
    assert_safe_and_certified(sim)
    assert progressed or not must_progress
