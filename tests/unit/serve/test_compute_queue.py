"""ComputeQueue: groups that wait for the compute thread merge by (model, seed) into one call,
and every caller gets exactly its own items' results (or its model's error)."""
import asyncio
import threading

import pytest

from serve.scoring import ComputeQueue


class Recorder:
    """A run function that records each call and can hold the first one until released."""

    def __init__(self, fail_model=None):
        self.calls: list[tuple[str, list[bytes], int]] = []
        self.release = threading.Event()
        self.fail_model = fail_model

    def __call__(self, model, items, seed):
        self.calls.append((model, list(items), seed))
        if len(self.calls) == 1:
            self.release.wait(timeout=30)
        if model == self.fail_model:
            raise ValueError(f"cannot score under {model}")
        return [(model, item, seed) for item in items]


async def _started(recorder, count=1):
    while len(recorder.calls) < count:
        await asyncio.sleep(0.001)


def test_groups_waiting_for_one_model_merge_into_one_call():
    async def scenario():
        recorder = Recorder()
        queue = ComputeQueue(recorder)
        first = asyncio.ensure_future(queue.score("a", [b"0"], 1))
        await _started(recorder)  # the thread is busy with the first group
        waiting = [asyncio.ensure_future(queue.score("a", [bytes([i]), bytes([i, i])], 1))
                   for i in range(1, 4)]
        other_seed = asyncio.ensure_future(queue.score("a", [b"x"], 2))
        other_model = asyncio.ensure_future(queue.score("b", [b"y"], 1))
        await asyncio.sleep(0.01)
        recorder.release.set()
        results = await asyncio.gather(first, *waiting, other_seed, other_model)
        return recorder.calls, results

    calls, results = asyncio.run(scenario())
    assert [(m, len(items), seed) for m, items, seed in calls] == [
        ("a", 1, 1), ("a", 6, 1), ("a", 1, 2), ("b", 1, 1)]  # oldest first, merged per key
    assert results[0] == [("a", b"0", 1)]
    for i, result in enumerate(results[1:4], start=1):
        assert result == [("a", bytes([i]), 1), ("a", bytes([i, i]), 1)]
    assert results[4] == [("a", b"x", 2)] and results[5] == [("b", b"y", 1)]


def test_a_failing_model_fails_only_its_callers_and_a_cancelled_caller_harms_none():
    async def scenario():
        recorder = Recorder(fail_model="bad")
        queue = ComputeQueue(recorder)
        first = asyncio.ensure_future(queue.score("good", [b"0"], 0))
        await _started(recorder)
        bad = [asyncio.ensure_future(queue.score("bad", [b"1"], 0)) for _ in range(2)]
        cancelled = asyncio.ensure_future(queue.score("good", [b"2"], 0))
        kept = asyncio.ensure_future(queue.score("good", [b"3"], 0))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        recorder.release.set()
        outcomes = await asyncio.gather(first, *bad, kept, return_exceptions=True)
        return outcomes

    first, bad1, bad2, kept = asyncio.run(scenario())
    assert first == [("good", b"0", 0)] and kept == [("good", b"3", 0)]
    for outcome in (bad1, bad2):
        assert isinstance(outcome, ValueError) and "bad" in str(outcome)


def test_the_queue_keeps_working_after_it_drained():
    async def scenario():
        recorder = Recorder()
        recorder.release.set()
        queue = ComputeQueue(recorder)
        one = await queue.score("a", [b"1"], 0)
        two = await queue.score("a", [b"2"], 0)
        return one, two, len(recorder.calls)

    assert asyncio.run(scenario()) == ([("a", b"1", 0)], [("a", b"2", 0)], 2)


@pytest.mark.parametrize("sizes", [[1], [3, 1, 2], [5, 5, 5, 5]])
def test_every_item_comes_back_once_in_order(sizes):
    async def scenario():
        recorder = Recorder()
        queue = ComputeQueue(recorder)
        first = asyncio.ensure_future(queue.score("m", [b"first"], 0))
        await _started(recorder)
        groups = [[f"{g}-{i}".encode() for i in range(n)] for g, n in enumerate(sizes)]
        futures = [asyncio.ensure_future(queue.score("m", g, 0)) for g in groups]
        await asyncio.sleep(0.01)
        recorder.release.set()
        await first
        return groups, await asyncio.gather(*futures)

    groups, results = asyncio.run(scenario())
    assert [[item for _, item, _ in r] for r in results] == groups
