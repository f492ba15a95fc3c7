"""Faults on a 4-validator localnet: a crash, a lost quorum, a lost disk."""
import os
import shutil
import signal

import pytest

from localnet_helpers import (client_of, consensus_positions, run, same_root_at_same_height, sequences,
                              statuses, wait_until)
from soma_ray.protocol.genesis import preset_keypair

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# Rounds without a decision that show a height is stuck: three rounds in a row have three
# different leaders of the four, so at least one of them was running and proposed.
HALTED_ROUNDS = 3


def test_killed_validator_restarts_recovers_from_disk_and_catches_up(localnet):
    victim = 1
    pid = statuses(localnet)[victim].pid
    before = sequences(localnet, [0, 2, 3])
    os.kill(pid, signal.SIGKILL)
    # The three others keep certifying checkpoints without it.
    wait_until(lambda: min(sequences(localnet, [0, 2, 3])) >= max(before) + 3)
    # Ray restarts it; it reopens its LMDB store and catches up with the others.
    restarted = wait_until(lambda: statuses(localnet)[victim].pid != pid and statuses(localnet))
    assert restarted[victim].sequence is not None
    wait_until(lambda: same_root_at_same_height(localnet))


def test_two_of_four_stopped_halts_commits_until_they_return(localnet):
    for index in (2, 3):
        localnet.stop_validator(index)

    # 2 of 4 is below the 2f+1 quorum: the two left run round after round at their next height
    # and decide nothing. Once both are HALTED_ROUNDS rounds into one height, that height's
    # checkpoint is still missing on both (one in flight at the stop may have finished first).
    def both_rounds_into_one_height():
        positions = consensus_positions(localnet, [0, 1])
        if None in positions or positions[0][0] != positions[1][0]:
            return False
        return positions[0][0] if min(round for _, round in positions) >= HALTED_ROUNDS else False

    height = wait_until(both_rounds_into_one_height)
    stalled = sequences(localnet, [0, 1])
    assert stalled == [height - 1] * 2

    async def reads_while_halted():  # any running validator still serves reads
        client = await client_of(localnet)
        user = preset_keypair("user", 0).address
        return [s is None for s in await client.status()], await client.get_balance(user)

    down, balance = run(reads_while_halted())
    assert down == [False, False, True, True] and balance > 0
    for index in (2, 3):
        localnet.relaunch_validator(index)
    wait_until(lambda: min(sequences(localnet, [0, 1, 2, 3])) >= max(stalled) + 2)
    wait_until(lambda: same_root_at_same_height(localnet))


def test_validator_with_wiped_disk_resyncs_from_peers(localnet):
    victim = 3
    localnet.stop_validator(victim)
    shutil.rmtree(localnet.config.validator_dir(victim))
    # Taken before the relaunch: its start-up catch-up fetches at least this from the peers, and
    # the relaunch returns once it has (a read of the peers afterwards races their next commits).
    others = sequences(localnet, [0, 1, 2])
    localnet.relaunch_validator(victim)
    assert sequences(localnet, [victim])[0] >= max(others)
    wait_until(lambda: same_root_at_same_height(localnet))


def test_validator_paused_while_running_catches_up_in_bulk(localnet):
    victim = 2
    others = [0, 1, 3]
    pid = statuses(localnet)[victim].pid
    os.kill(pid, signal.SIGSTOP)  # frozen, not crashed: no restart, no start-up catch-up
    try:
        before = max(sequences(localnet, others))
        wait_until(lambda: min(sequences(localnet, others)) >= before + 8)
    finally:
        os.kill(pid, signal.SIGCONT)
    # Learning one height per round of its own (≥ 1 s each) while the others decide about one a
    # second, it would never close an 8-height gap; fetching the certified checkpoints in bulk
    # closes it. So it must reach the others where they are at each look, not a height fixed
    # now (which the slow way would reach too, given time): no deadline to race.
    def caught_up():
        victim_at, *others_at = sequences(localnet, [victim, *others])
        return victim_at >= min(others_at)

    wait_until(caught_up)
    wait_until(lambda: same_root_at_same_height(localnet))
