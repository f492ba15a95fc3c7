"""The crowd: a few async actors, each hosting many scripted participants (soma_ray/strategies).

One actor process per participant does not fit (about 90 MB and most of a second to start each
here), so each `CrowdActor` drives its share of the roster round by round on one SDK client:
a round refreshes the shared `World` once, then steps every participant, a bounded number at a
time. The chain is reached on the SDK's Ray path; blobs and scoring over HTTP, as the SDK does.
Actors are named `<prefix>crowd-<i>` in the network's namespace, so `soma stop` finds them.

Fraudulent miners play every fraud of `strategies.decide.FRAUD_PLANS` but the owner–miner pair's
(`broken-weights` needs a model whose weights the pair can take away after the fill; on a
localnet the blob store keeps every blob, downloads reach no address the pair controls and the
shared scoring service caches loaded weights: docs/game.md), which they skip for the next plan.
"""
from __future__ import annotations

import asyncio
import logging

import ray

from soma_ray.client import SomaClient
from soma_ray.config import NetworkConfig
from soma_ray.strategies import Spec, Stats, World, build, corpus_files
from soma_ray.strategies.decide import FUND_AMOUNT, split_evenly

# Participants of one actor stepping at once: each waits mostly on scoring or finality.
STEP_CONCURRENCY = 32
CROWD_NAME = "crowd-"

log = logging.getLogger(__name__)


class CrowdActor:
    def __init__(self, namespace: str, prefix: str, specs: list[Spec], seed: int, challengers: int,
                 corpus: str | None = None, false_alarm_every: int = 0, train_steps: int | None = None,
                 evaluate: bool = False) -> None:
        self._path = (namespace, prefix)
        files = corpus_files(corpus)
        training = None
        if any(Spec(*s).role == "trainer" for s in specs):  # each fine-tune a Ray Train job
            from soma_ray.training.fine_tune import RayTrainTraining

            training = RayTrainTraining(f"{prefix}trainer")
        self._participants = [build(Spec(*s), seed, files, challengers, false_alarm_every, training=training,
                                    train_steps=train_steps) for s in specs]
        self._world: World | None = None
        self._loop: asyncio.Task | None = None
        self._rounds = 0
        # The network's held-out loss, measured after every round by one actor of the crowd.
        self._held_out = None
        if evaluate:
            from soma_ray.heldout import HeldOut

            self._held_out = HeldOut(threaded=True)
        self._losses: dict[int, dict] = {}  # epoch → the last measurement in it

    async def _client_world(self) -> World:
        if self._world is None:
            namespace, prefix = self._path
            self._world = World(await SomaClient(namespace=namespace, prefix=prefix))
        return self._world

    async def fund(self, amount: int = FUND_AMOUNT) -> None:
        """Every participant gets `amount` from the localnet faucet (a trainer: its own funding,
        its model's stake included), then those with a setup (trainers: their model) do it."""
        world = await self._client_world()
        await asyncio.gather(*(world.client.request_faucet(p.address, getattr(p, "funding", amount))
                               for p in self._participants))
        await asyncio.gather(*(p.setup(world.client) for p in self._participants if hasattr(p, "setup")))

    async def step(self, mine: bool = True) -> None:
        """One round: the world read once, then one step of every participant (with `mine`
        off, miners only claim and follow their submissions; see `World.mining`)."""
        world = await self._client_world()
        await world.refresh()
        world.mining = mine
        limit = asyncio.Semaphore(STEP_CONCURRENCY)

        async def one(participant):
            async with limit:
                await participant.step(world)

        await asyncio.gather(*(one(p) for p in self._participants))
        self._rounds += 1
        if self._held_out is not None:
            await self.measure(world)

    async def measure(self, world: World) -> None:
        """The network's held-out loss now (each model version scored once), kept as the epoch's
        and exported as the soma_network_held_out_bpb and soma_model_held_out_bpb gauges."""
        from soma_ray import metrics

        try:
            loss = await self._held_out.measure(world.client)
        except ValueError:  # no active model
            return
        namespace, prefix = self._path
        metrics.record_held_out({"network": metrics.network_label(namespace, prefix)}, loss)
        self._losses[world.epoch] = {
            "epoch": world.epoch, "network_loss_bpb": loss.best_bpb, "network_routed_bpb": loss.routed_bpb,
            "loss_by_kind": loss.best_by_kind,
            "models": [{"model": "0x" + m.model_id.hex(), "stake": m.stake, "bpb": m.bpb, "best_items": m.best_items,
                        "routed_items": m.routed_items} for m in loss.models]}

    def held_out(self) -> list[dict]:
        """The network's held-out loss as last measured in each epoch, by epoch (empty unless
        this actor evaluates)."""
        return [self._losses[epoch] for epoch in sorted(self._losses)]

    async def start(self, pause_s: float = 1.0) -> None:
        """Play rounds in the background, `pause_s` apart, until `stop`."""
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._play(pause_s))

    async def _play(self, pause_s: float) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - a round that failed to read the world: next one
                log.exception("crowd round failed")
            await asyncio.sleep(pause_s)

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()

    def stats(self) -> dict[str, Stats]:
        """What each role's participants did, summed (plus the rounds played, under 'rounds')."""
        by_role: dict[str, Stats] = {}
        for participant in self._participants:
            by_role.setdefault(participant.role, Stats()).add(participant.stats)
        return {"rounds": self._rounds, **by_role}

    def addresses(self) -> dict[str, list[bytes]]:
        found: dict[str, list[bytes]] = {}
        for participant in self._participants:
            found.setdefault(participant.role, []).append(participant.address)
        return found


def crowd_name(config: NetworkConfig, index: int) -> str:
    return f"{config.prefix}{CROWD_NAME}{index}"


def launch_crowd(config: NetworkConfig, specs: list[Spec], actors: int, seed: int = 0,
                 corpus: str | None = None, false_alarm_every: int = 0, detached: bool = False,
                 train_steps: int | None = None) -> list:
    """`actors` crowd actors sharing `specs` (each role dealt over all of them), funded; returns
    their handles. Not restarted when they die: a participant's memory of its submissions and
    challenges is in its actor. With trainers, the first actor also measures the network's
    held-out loss after each round (`held_out`)."""
    challengers = sum(s.role == "challenger" for s in specs)
    evaluate = any(s.role == "trainer" for s in specs)
    handles = []
    for index, share in enumerate(split_evenly(specs, actors)):
        options = dict(name=crowd_name(config, index), namespace=config.namespace, num_cpus=0)
        if detached:
            options["lifetime"] = "detached"
        handles.append(ray.remote(CrowdActor).options(**options).remote(
            config.namespace, config.prefix, share, seed, challengers, corpus, false_alarm_every, train_steps,
            evaluate and index == 0))
    ray.get([h.fund.remote() for h in handles])
    return handles


def crowd_held_out(handles: list) -> list[dict]:
    """The network's held-out loss by epoch, from the crowd's evaluating actor (empty: none)."""
    for found in ray.get([h.held_out.remote() for h in handles], timeout=60):
        if found:
            return found
    return []


def find_crowd(namespace: str, prefix: str = "") -> list:
    """Handles of the crowd actors running for the network (`<prefix>crowd-<i>`), by index."""
    names = sorted((a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["namespace"] == namespace and a["name"].startswith(prefix + CROWD_NAME)
                    and a["name"][len(prefix + CROWD_NAME):].isdigit()),
                   key=lambda name: int(name[len(prefix + CROWD_NAME):]))
    return [ray.get_actor(name, namespace=namespace) for name in names]


def crowd_stats(handles: list) -> dict:
    """The crowd's stats, summed over its actors (roles missing from an actor count nothing)."""
    total: dict = {"rounds": 0}
    for found in ray.get([h.stats.remote() for h in handles], timeout=60):
        total["rounds"] += found.pop("rounds")
        for role, stats in found.items():
            total.setdefault(role, Stats()).add(stats)
    return total


def stop_crowd(namespace: str, prefix: str = "") -> int:
    """Kill the network's crowd actors; returns how many there were."""
    handles = find_crowd(namespace, prefix)
    for handle in handles:
        ray.kill(handle, no_restart=True)
    return len(handles)
