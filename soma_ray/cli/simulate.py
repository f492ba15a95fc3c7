"""`soma simulate`: a localnet run in one process (no Ray, no consensus): scripted users that
exercise every flow, or, with --miners/--challengers, the game's strategies (docs/game.md)."""
from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from soma_ray.cli.common import fail
from soma_ray.protocol.genesis import localnet_config, preset_keypair
from soma_ray.protocol.models import model_commitment, reveal_allowed
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import MODEL, TARGET
from soma_ray.protocol.submissions import required_bond, submission_commitment
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.targets import accepts_commit, is_claimable, is_expired
from soma_ray.protocol.types import (
    AddStake, ClaimRewards, CommitModel, CommitSubmission, CreateModel, Faucet, Model,
    RevealModel, RevealSubmission, Target, Transfer, WeightsManifest,
)
from soma_ray.strategies import corpus_files, crowd_mix, roster
from soma_ray.strategies.decide import LAZY_RATE

SOMA = SHANNONS_PER_SOMA
MODEL_KEY = b"simulated-model-key"
DATA_HASH = b"\x11" * 32
DATA_SIZE = 1_000
SUBMISSION_NONCE = b"simulated-nonce"

app = typer.Typer()


class ScriptedUsers:
    """Users that exercise every flow: faucet, transfers, staking, a model, mining, claims."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.alice, self.bob, self.miner, self.owner = (preset_keypair("user", i) for i in range(4))
        self.validator = preset_keypair("validator", 0)
        self.model_id: bytes | None = None
        self.embedding = np.random.default_rng(7).standard_normal(sim.params.embedding_dim).astype("<f4").tobytes()

    def act(self, step: int) -> None:
        sim, epoch = self.sim, self.sim.state.system().epoch
        sim.submit_kind(self.alice, Faucet(self.bob.address, SOMA))
        sim.submit_kind(self.bob, Transfer(self.alice.address, SOMA // 2))
        if step == 0:
            sim.submit_kind(self.alice, AddStake(self.validator.address, 1_000 * SOMA))
            sim.submit_kind(self.owner, CreateModel(stake=10 * SOMA, commission_bps=1_000, architecture_version=1))
        self.step_model(epoch)
        self.mine_one_target(epoch)
        self.claim_ready_targets(epoch)

    def step_model(self, epoch: int) -> None:
        models = [m for m in self.sim.state.values(MODEL, Model) if m.owner == self.owner.address]
        if not models:
            return
        model = models[0]
        if model.status == "Created":
            manifest = WeightsManifest(url="http://blobs/simulated", checksum=b"\x00" * 32, size=1 << 20)
            self.sim.submit_kind(self.owner, CommitModel(
                model.id, manifest, b"\x00" * 32, model_commitment(self.embedding), model_commitment(MODEL_KEY)
            ))
        elif model.status == "Pending" and reveal_allowed(model.commit_epoch, epoch):
            self.sim.submit_kind(self.owner, RevealModel(model.id, MODEL_KEY, self.embedding))

    def mine_one_target(self, epoch: int) -> None:
        """Reveal what was committed in the last checkpoint, and commit to an Open target of this
        epoch with the target's own embedding (distance 0; the miner's search is scripted away)."""
        targets = list(self.sim.state.values(TARGET, Target))
        for target in targets:
            if target.status == "Committed" and target.submission_id is not None:
                self.sim.submit_kind(self.miner, RevealSubmission(
                    target.submission_id, DATA_HASH, DATA_SIZE, "http://blobs/data", target.model_ids[0],
                    target.embedding, 1, SUBMISSION_NONCE,
                ))
        for target in targets:
            if target.status == "Open" and accepts_commit(target.generation_epoch, epoch) and target.model_ids:
                commitment = submission_commitment(
                    DATA_HASH, DATA_SIZE, target.model_ids[0], target.embedding, 1, SUBMISSION_NONCE
                )
                bond = required_bond(self.sim.params, DATA_SIZE)
                self.sim.submit_kind(self.miner, CommitSubmission(target.id, commitment, bond))
                return

    def claim_ready_targets(self, epoch: int) -> None:
        """Settle filled targets after their audit window, and expired open ones."""
        for target in self.sim.state.values(TARGET, Target):
            filled_and_audited = target.status == "Filled" and is_claimable(target.fill_epoch, epoch)
            expired = target.status == "Open" and is_expired(target.generation_epoch, epoch)
            if filled_and_audited or expired:
                self.sim.submit_kind(self.bob, ClaimRewards(target.id))


def summarize(effects) -> str:
    failed = [e.error.code for e in effects if e.error is not None]
    return f"{len(effects)} txs, {len(failed)} failed" + (f" ({', '.join(sorted(set(failed)))})" if failed else "")


def target_counts(sim: Simulator) -> str:
    counts = Counter(t.status for t in sim.state.values(TARGET, Target))
    return " ".join(f"{status}={count}" for status, count in sorted(counts.items()))


@app.command("simulate")
def simulate(
    epochs: Annotated[int, typer.Option(help="Epochs to run.")] = 3,
    checkpoints_per_epoch: Annotated[Optional[int], typer.Option(
        help="Scripted users: checkpoints in each epoch before ChangeEpoch [default: 3].")] = None,
    miners: Annotated[int, typer.Option(
        "--miners", help="Play the game: scripted miners (honest, lazy and fraudulent).")] = 0,
    challengers: Annotated[int, typer.Option("--challengers", help="Play the game: scripted challengers.")] = 0,
    fraud_rate: Annotated[float, typer.Option("--fraud-rate", help="Share of the miners that cheat.")] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the participants' keys and choices.")] = 0,
    corpus: Annotated[Optional[Path], typer.Option(
        "--corpus", help="Directory the honest miners read [default: the stdlib's sources].",
        show_default=False)] = None,
    false_alarm_every: Annotated[int, typer.Option(
        "--false-alarm-every", help="Challengers also challenge every k-th target whose claims hold (0: never).")] = 0,
    rounds_per_epoch: Annotated[int, typer.Option(
        "--rounds-per-epoch", help="Mining rounds in each epoch of the game.")] = 1,
) -> None:
    """Run a localnet state machine in one process and print each checkpoint (scripted users)
    or each epoch of the game (--miners, --challengers: the strategies `soma start localnet`
    runs, with audits; scoring in process)."""
    if epochs < 1:
        raise fail(f"--epochs {epochs}: at least 1")
    if not miners and not challengers:
        for name, value, default in (("--fraud-rate", fraud_rate, 0.1), ("--seed", seed, 0),
                                     ("--corpus", corpus, None), ("--false-alarm-every", false_alarm_every, 0),
                                     ("--rounds-per-epoch", rounds_per_epoch, 1)):
            if value != default:
                raise fail(f"{name} plays the game: give --miners or --challengers too")
        run_scripted_users(epochs, 3 if checkpoints_per_epoch is None else checkpoints_per_epoch)
        return
    if checkpoints_per_epoch is not None:
        raise fail("--checkpoints-per-epoch is for the scripted users: the game's transactions make the checkpoints")
    for name, value, least in (("--miners", miners, 0), ("--challengers", challengers, 0),
                               ("--false-alarm-every", false_alarm_every, 0), ("--rounds-per-epoch", rounds_per_epoch, 1)):
        if value < least:
            raise fail(f"{name} {value}: at least {least}")
    try:
        specs = roster(crowd_mix(miners, fraud_rate, LAZY_RATE), challengers)
        files = corpus_files(corpus)
    except (ValueError, FileNotFoundError) as error:  # a rate outside [0, 1]; a corpus without files
        raise fail(f"{'--fraud-rate' if isinstance(error, ValueError) else '--corpus'}: {error}") from None
    run_game(specs, seed, files, epochs, false_alarm_every, rounds_per_epoch)


def run_scripted_users(epochs: int, checkpoints_per_epoch: int) -> None:
    sim = Simulator(localnet_config())
    users = ScriptedUsers(sim)
    step = 0
    for _ in range(epochs):
        for _ in range(checkpoints_per_epoch):
            users.act(step)
            step += 1
            checkpoint, effects = sim.make_checkpoint()
            typer.echo(f"checkpoint {checkpoint.sequence:4d} epoch {checkpoint.epoch}: {summarize(effects)}")
        checkpoint, effects = sim.advance_epoch()
        system = sim.state.system()
        typer.echo(
            f"epoch {system.epoch} begins: {summarize(effects)}; threshold "
            f"{system.target_state.distance_threshold / 1e9:.3f}, "
            f"targets {target_counts(sim)}, emission pool {system.emission_pool.balance / SOMA:,.3f} SOMA"
        )
    finish(sim, all_supplies_ok=True)


def run_game(specs, seed: int, files: list[Path], epochs: int, false_alarm_every: int,
             rounds_per_epoch: int) -> None:
    """The strategies' game (soma_ray/strategies/simulated.py), one line per epoch."""
    from soma_ray.strategies.simulated import SimulatedGame  # loads the model code

    counts = Counter(s.role for s in specs)
    typer.echo("crowd: " + ", ".join(f"{counts[r]} {r}" for r in ("honest", "lazy", "fraudulent", "challenger"))
               + f", seed {seed}")
    game = SimulatedGame(specs, seed, files, false_alarm_every, rounds_per_epoch)

    async def play() -> bool:
        await game.setup()
        supplies_ok = True
        for _ in range(epochs):
            f = await game.play_epoch()
            supplies_ok &= f.supply_ok
            typer.echo(
                f"epoch {f.epoch}: hits {f.hits} ({f.honest_hits} truthful) | challenges opened "
                f"{f.challenges_opened}, won by challengers {f.challenger_wins}, by miners {f.miner_wins}"
                f" | slashes {f.slashes} | claims {f.claims} | threshold {f.threshold:.4f} | "
                f"{f.checkpoints} checkpoints, supply {'OK' if f.supply_ok else 'BROKEN'}")
        return supplies_ok

    supplies_ok = asyncio.run(play())
    frauds = game.by_role("fraudulent")
    if frauds.frauds:
        typer.echo(f"frauds: {len(frauds.frauds)} injected, {frauds.slashes} slashed")
    finish(game.client.sim, supplies_ok)


def finish(sim: Simulator, all_supplies_ok: bool) -> None:
    """The final line; exit 1 when the supply is not the genesis supply (now, or after any
    checkpoint)."""
    supply = total_supply(sim.state)
    expected = sim.params.genesis_supply
    ok = all_supplies_ok and supply == expected
    typer.echo(
        f"final: epoch {sim.state.system().epoch}, {len(sim.checkpoints)} checkpoints, "
        f"state_root {sim.state.state_root().hex()}, supply {'OK' if ok else 'BROKEN'} "
        f"({supply} of {expected} shannons)"
    )
    if not ok:
        raise typer.Exit(code=1)
