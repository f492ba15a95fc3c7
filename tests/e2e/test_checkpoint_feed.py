"""The committed-checkpoint feed: a subscriber actor receives every certified checkpoint with its
effects, in order, exactly once — also when it is killed and restarted (it resumes after the
last sequence it acknowledged) and when the validator it reads from restarts or is replaced."""
import asyncio
import os
import signal

import pytest
import ray

from actors.feed import CheckpointFeed
from localnet_helpers import STOPPED, consensus_positions, run, sequences, start_network, statuses, transfers, wait_until
from soma_ray.client import SomaClient
from soma_ray.protocol.execution import transaction_digest
from soma_ray.protocol.encoding import decode
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.types import SignedTransaction

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@ray.remote(num_cpus=0, max_restarts=-1)
class FeedRecorder:
    """A subscriber that appends each delivered sequence and its transactions' digests to a file,
    then acknowledges it (what a real follower such as the target index does with its state)."""

    def __init__(self, config, name: str, log: str):
        self._feed = CheckpointFeed(config, name)
        self._log = log
        self._task = None

    async def start(self) -> int:
        """Begin following (idempotent); the sequence it starts from."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())
        return self._feed.next_sequence

    async def _follow(self):
        async for followed in self._feed.items():
            digests = " ".join(e.transaction_digest.hex() for e in followed.effects)
            with open(self._log, "a") as out:
                out.write(f"{followed.sequence} {digests}\n")
            self._feed.ack(followed.sequence)

    def acknowledged(self):
        return self._feed.acknowledged()

    def pid(self) -> int:
        return os.getpid()


@pytest.fixture(scope="module")
def feed_net(ray_session, tmp_path_factory):
    network = start_network(tmp_path_factory, "feed", epoch_duration_ms=60_000)
    yield network
    network.stop()


def delivered(log):
    """(sequence, transaction digests) per line of a recorder's log."""
    lines = [line.split() for line in open(log).read().splitlines()]
    return [(int(line[0]), line[1:]) for line in lines]


def send_transfers(network, count):
    """Submit `count` transfers and return their digests once all are certified."""
    sender, recipient = preset_keypair("user", 1), preset_keypair("feed-recipient", 0)

    async def scenario():
        client = await SomaClient(namespace=network.config.namespace, prefix=network.config.prefix)
        nonce = (await client.get_account(sender.address)).nonce
        signed = transfers(network, sender, recipient.address, range(nonce, nonce + count))
        for data in signed:
            await client.submit(data)
        return [transaction_digest(decode(data, SignedTransaction).transaction).hex() for data in signed]

    return run(scenario())


def caught_up(recorder, network, indices=None):
    """A predicate: the recorder acknowledged the latest checkpoint of the validators `indices`."""
    return lambda: (ray.get(recorder.acknowledged.remote()) or -1) >= max(sequences(network, indices))


def halted_sequence(network, indices):
    """The latest sequence of a halted chain: once the running validators `indices` are all
    three rounds into one height (three rounds have three different leaders of the four, so a
    running one proposed and nothing was decided), the height before it is the last one."""
    def stuck():
        positions = consensus_positions(network, indices)
        if None in positions or len({height for height, _ in positions}) != 1:
            return None
        return positions[0][0] if min(round_ for _, round_ in positions) >= 3 else None
    height = wait_until(stuck)
    assert sequences(network, indices) == [height - 1] * len(indices)
    return height - 1


def assert_exactly_once(log, digests):
    found = delivered(log)
    assert [sequence for sequence, _ in found] == list(range(len(found)))  # from 0, in order, once
    every = [d for _, ds in found for d in ds]
    assert all(every.count(d) == 1 for d in digests)


def test_a_killed_subscriber_resumes_after_what_it_acknowledged(feed_net, tmp_path):
    log = str(tmp_path / "killed.log")
    recorder = FeedRecorder.remote(feed_net.config, "killed-subscriber", log)
    assert ray.get(recorder.start.remote()) == 0
    first = send_transfers(feed_net, 3)
    wait_until(caught_up(recorder, feed_net))
    # Halt the chain (2 of 4 is below the quorum), so the subscriber is idle when it dies.
    for index in STOPPED:
        feed_net.stop_validator(index)
    halted_at = halted_sequence(feed_net, [0, 1])
    wait_until(caught_up(recorder, feed_net, [0, 1]))
    assert ray.get(recorder.acknowledged.remote()) == halted_at
    pid = ray.get(recorder.pid.remote())
    os.kill(pid, signal.SIGKILL)
    # Ray restarts it; it resumes right after the last sequence it acknowledged.
    resumed = wait_until(lambda: _start_if_restarted(recorder, pid))
    assert resumed == halted_at + 1
    for index in STOPPED:
        feed_net.relaunch_validator(index)
    later = send_transfers(feed_net, 3)
    wait_until(caught_up(recorder, feed_net))
    assert_exactly_once(log, first + later)
    ray.kill(recorder)


def _start_if_restarted(recorder, old_pid):
    try:
        if ray.get(recorder.pid.remote(), timeout=10) == old_pid:
            return None
        return ray.get(recorder.start.remote(), timeout=10)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def test_the_feed_goes_on_when_its_validator_restarts_or_is_replaced(feed_net, tmp_path):
    log = str(tmp_path / "follower.log")
    recorder = FeedRecorder.remote(feed_net.config, "follower", log)
    ray.get(recorder.start.remote())  # it reads from validator 0 first
    first = send_transfers(feed_net, 3)
    wait_until(caught_up(recorder, feed_net))
    # Validator 0 crashes (Ray restarts it) and validator 1 is replaced by a new actor.
    os.kill(statuses(feed_net, [0])[0].pid, signal.SIGKILL)
    during = send_transfers(feed_net, 3)
    feed_net.stop_validator(1)
    feed_net.relaunch_validator(1)
    after = send_transfers(feed_net, 3)
    wait_until(caught_up(recorder, feed_net))
    assert_exactly_once(log, first + during + after)
    ray.kill(recorder)
