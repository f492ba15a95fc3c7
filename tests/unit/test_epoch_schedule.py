"""The epoch clock's rule (consensus time only) and the epoch waiter's wake-ups."""

import asyncio

import pytest

from soma_ray.epoch_schedule import (
    EpochWaiter,
    EpochWaitTimeout,
    InvalidEpochDuration,
    change_epoch_due,
    epoch_end_ms,
    ms_until_change_epoch,
)

START = 1_700_000_000_000
MINUTE = 60_000


def test_change_epoch_is_due_exactly_from_the_epoch_end():
    assert epoch_end_ms(START, MINUTE) == START + MINUTE
    assert not change_epoch_due(START, MINUTE, START)
    assert not change_epoch_due(START, MINUTE, START + MINUTE - 1)
    assert change_epoch_due(START, MINUTE, START + MINUTE)
    # Long after the end (an outage) one change is still simply due.
    assert change_epoch_due(START, MINUTE, START + 10 * MINUTE)


def test_time_left_counts_down_to_zero():
    assert ms_until_change_epoch(START, MINUTE, START) == MINUTE
    assert ms_until_change_epoch(START, MINUTE, START + 45_000) == 15_000
    assert ms_until_change_epoch(START, MINUTE, START + 5 * MINUTE) == 0


@pytest.mark.parametrize("duration", [0, -1])
def test_non_positive_duration_is_refused(duration):
    with pytest.raises(InvalidEpochDuration) as err:
        change_epoch_due(START, duration, START)
    assert err.value.epoch_duration_ms == duration


def test_waiters_wake_when_their_epoch_begins_and_not_before():
    async def scenario():
        waiter = EpochWaiter(epoch=0)
        next_one = asyncio.create_task(waiter.wait_for(waiter.current + 1))
        for_two = [asyncio.create_task(waiter.wait_for(2)) for _ in range(3)]
        for_five = asyncio.create_task(waiter.wait_for(5))
        await asyncio.sleep(0)
        waiter.advance(1)
        assert await next_one == 1
        await asyncio.sleep(0)
        assert not any(t.done() for t in for_two) and not for_five.done()
        waiter.advance(3)  # a jump wakes every epoch it passed
        assert await asyncio.gather(*for_two) == [3, 3, 3]
        await asyncio.sleep(0)
        assert not for_five.done()
        waiter.advance(2)  # a late, older report changes nothing
        assert waiter.current == 3
        waiter.advance(5)
        assert await for_five == 5

    asyncio.run(scenario())


def test_reached_epoch_returns_at_once():
    async def scenario():
        waiter = EpochWaiter(epoch=4)
        assert await waiter.wait_for(3) == 4
        assert await waiter.wait_for(4) == 4

    asyncio.run(scenario())


def test_timeout_names_the_awaited_and_current_epoch():
    async def scenario():
        waiter = EpochWaiter(epoch=7)
        with pytest.raises(EpochWaitTimeout) as err:
            await waiter.wait_for(waiter.current + 1, timeout_s=0.01)
        assert (err.value.epoch, err.value.current, err.value.timeout_s) == (8, 7, 0.01)
        assert isinstance(err.value, TimeoutError)
        # A timed-out wait does not stop a later one from being woken.
        later = asyncio.create_task(waiter.wait_for(8))
        await asyncio.sleep(0)
        waiter.advance(8)
        assert await later == 8

    asyncio.run(scenario())


def test_the_wait_timeout_pickles_with_its_fields():
    """It crosses Ray from the epoch clock to the gateway and clients."""
    import pickle

    from soma_ray.epoch_schedule import EpochWaitTimeout

    again = pickle.loads(pickle.dumps(EpochWaitTimeout(5, 3, 1.5)))
    assert (type(again), again.epoch, again.current, again.timeout_s) == (EpochWaitTimeout, 5, 3, 1.5)
