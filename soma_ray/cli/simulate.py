"""`soma simulate`: a localnet run in one process (no Ray, no consensus): scripted users that
exercise every flow, or, with --miners/--challengers/--trainers, the game's strategies and the
network's held-out loss epoch by epoch (docs/game.md; `--report FILE` writes them as JSON)."""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Annotated, NamedTuple, Optional

import numpy as np
import typer

from soma_ray.cli.common import fail
from soma_ray.protocol.checkpoint import executed_transactions
from soma_ray.protocol.genesis import localnet_config, preset_keypair
from soma_ray.protocol.models import model_commitment, reveal_allowed
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import MODEL, TARGET
from soma_ray.protocol.submissions import LOSS_SCALE, required_bond, submission_commitment
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.targets import accepts_commit, is_claimable, is_expired
from soma_ray.protocol.types import (
    AddStake, ClaimRewards, CommitModel, CommitSubmission, CreateModel, Faucet, Model,
    RevealModel, RevealSubmission, Target, Transfer, WeightsManifest,
)
from soma_ray.strategies import corpus_files, crowd_mix, roster
from soma_ray.strategies.decide import LAZY_RATE

SOMA = SHANNONS_PER_SOMA
MODEL_KEY = b"simulated-model-key".ljust(32, b"-")  # a decryption key is 32 bytes
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
        sim.submit_kind(self.validator, Faucet(self.bob.address, SOMA))  # a faucet authority
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
    trainers: Annotated[int, typer.Option(
        "--trainers", help="Play the game: model owners who fine-tune their model every epoch (in process).")] = 0,
    lazy_rate: Annotated[float, typer.Option(
        "--lazy-rate", help="Share of the miners that submit random bytes (of those who do not cheat).")] = LAZY_RATE,
    train_steps: Annotated[Optional[int], typer.Option(
        "--train-steps", help="Each trainer's optimizer steps an epoch [default: 10].", show_default=False)] = None,
    report: Annotated[Optional[Path], typer.Option(
        "--report", help="Write the game's figures and the network's held-out loss, epoch by epoch, "
        "to this JSON file.", show_default=False)] = None,
) -> None:
    """Run a localnet state machine in one process and print each checkpoint (scripted users)
    or each epoch of the game (--miners, --challengers, --trainers: the strategies `soma start
    localnet` runs, with audits; scoring and training in process)."""
    if epochs < 1:
        raise fail(f"--epochs {epochs}: at least 1")
    if not miners and not challengers and not trainers:
        for name, value, default in (("--fraud-rate", fraud_rate, 0.1), ("--seed", seed, 0),
                                     ("--corpus", corpus, None), ("--false-alarm-every", false_alarm_every, 0),
                                     ("--rounds-per-epoch", rounds_per_epoch, 1), ("--lazy-rate", lazy_rate, LAZY_RATE),
                                     ("--train-steps", train_steps, None), ("--report", report, None)):
            if value != default:
                raise fail(f"{name} plays the game: give --miners, --challengers or --trainers too")
        run_scripted_users(epochs, 3 if checkpoints_per_epoch is None else checkpoints_per_epoch)
        return
    if checkpoints_per_epoch is not None:
        raise fail("--checkpoints-per-epoch is for the scripted users: the game's transactions make the checkpoints")
    for name, value, least in (("--miners", miners, 0), ("--challengers", challengers, 0), ("--trainers", trainers, 0),
                               ("--false-alarm-every", false_alarm_every, 0), ("--rounds-per-epoch", rounds_per_epoch, 1),
                               ("--train-steps", 1 if train_steps is None else train_steps, 1)):
        if value < least:
            raise fail(f"{name} {value}: at least {least}")
    for name, rate in (("--fraud-rate", fraud_rate), ("--lazy-rate", lazy_rate)):
        if not 0 <= rate <= 1:
            raise fail(f"{name} {rate}: a fraction in [0, 1]")
    try:
        specs = roster(crowd_mix(miners, fraud_rate, lazy_rate), challengers, trainers)
        files = corpus_files(corpus)
    except FileNotFoundError as error:  # a corpus without files
        raise fail(f"--corpus: {error}") from None
    run_game(specs, seed, files, epochs, false_alarm_every, rounds_per_epoch, train_steps, report)


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
             rounds_per_epoch: int, train_steps: int | None = None, report_file: Path | None = None) -> None:
    """The strategies' game (soma_ray/strategies/simulated.py), one line per epoch; then the
    detection report (frauds by kind and margin), the sampling audits' coverage and latency,
    the network's held-out loss (with trainers or a report), the final state, and last
    `frauds: N injected, M slashed; honest slashed: K`. Exits 1 when a fraud escaped (was not
    slashed by the end), a truthful miner was slashed or the supply broke. With `report_file`,
    the epochs' figures as JSON (`report_entry`)."""
    from soma_ray.heldout import HeldOut  # the model code, loaded by the game anyway
    from soma_ray.strategies.simulated import SimulatedGame  # loads the model code

    counts = Counter(s.role for s in specs)
    typer.echo("crowd: " + ", ".join(f"{counts[r]} {r}" for r in ("honest", "lazy", "fraudulent", "challenger"))
               + (f", {counts['trainer']} trainer" if counts["trainer"] else "") + f", seed {seed}")
    game = SimulatedGame(specs, seed, files, false_alarm_every, rounds_per_epoch, train_steps=train_steps)
    held_out = HeldOut() if counts["trainer"] or report_file is not None else None
    entries: list[dict] = []

    async def measure(tally_before: Tally, sealed: int) -> dict | None:
        if held_out is None:
            return None
        loss = await held_out.measure(game.client)
        entry = report_entry(game, len(entries) and game.client.sim.state.system().epoch, tally_before,
                             Tally.of(game), loss, game.client.feed[sealed:])
        entries.append(entry)
        return entry

    async def play() -> bool:
        await game.setup()
        supplies_ok = True
        tally, sealed = Tally.of(game), len(game.client.feed)
        await measure(tally, sealed)
        for _ in range(epochs):
            f = await game.play_epoch()
            supplies_ok &= f.supply_ok
            entry = await measure(tally, sealed)
            tally, sealed = Tally.of(game), len(game.client.feed)
            typer.echo(
                f"epoch {f.epoch}: hits {f.hits} ({f.honest_hits} truthful) | sampled {f.sampled} | challenges "
                f"opened {f.challenges_opened + f.validator_challenges} ({f.validator_challenges} by validators), "
                f"won by challengers {f.challenger_wins}, by miners {f.miner_wins}"
                f" | slashes {f.slashes} | claims {f.claims} | threshold {f.threshold:.4f} | "
                f"{f.checkpoints} checkpoints, supply {'OK' if f.supply_ok else 'BROKEN'}"
                + ("" if entry is None else
                   f" | held-out {entry['network_loss_bpb']:.3f} bpb (routed {entry['network_routed_bpb']:.3f})"))
        return supplies_ok

    supplies_ok = asyncio.run(play())
    report = game.report()
    for line in report_lines(report):
        typer.echo(line)
    if entries:
        first, last = entries[0]["network_loss_bpb"], entries[-1]["network_loss_bpb"]
        trained = game.by_role("trainer")
        typer.echo(f"network held-out loss: {first:.3f} -> {last:.3f} bpb ({(last - first) / first:+.1%}); "
                   f"routed {entries[0]['network_routed_bpb']:.3f} -> {entries[-1]['network_routed_bpb']:.3f}; "
                   f"{trained.trainings} fine-tunes, {trained.train_steps} steps, {trained.hit_items} hit items")
    if report_file is not None:
        try:
            report_file.write_text(json.dumps(entries, indent=1) + "\n")
        except OSError as error:
            raise fail(f"--report {report_file}: {error}") from None
    finish(game.client.sim, supplies_ok, exit_on_failure=False)
    typer.echo(f"frauds: {report.injected} injected, {report.slashed} slashed; honest slashed: {report.honest_slashed}")
    if not (supplies_ok and report.ok and supply_ok(game.client.sim)):
        raise typer.Exit(code=1)


class Tally(NamedTuple):
    """The game's running totals, read before and after an epoch (`report_entry` counts the
    difference)."""
    hits: int  # revealed submissions of every miner (frauds included)
    truthful_hits: int
    lazy_hits: int
    claims: int
    lazy_claims: int
    frauds_injected: int  # claims within the audit tolerance are not frauds
    frauds_slashed: int
    honest_slashed: int  # honest and lazy miners' submissions undone
    trainings: int
    train_steps: int
    hit_items: int  # won hits' data the trainers trained on

    @classmethod
    def of(cls, game) -> Tally:
        miners = [game.by_role(role) for role in ("honest", "lazy", "fraudulent")]
        honest, lazy, fraudulent = miners
        trainer = game.by_role("trainer")
        frauds = [f for f in fraudulent.frauds if f.is_fraud]
        caught = sum(n for key, n in fraudulent.fraud_outcomes.items()
                     if key.endswith("|caught") and "not fraud" not in key)
        return cls(sum(m.submissions for m in miners), honest.hits + lazy.hits, lazy.hits,
                   sum(m.claims for m in miners), lazy.claims, len(frauds), caught, honest.slashes + lazy.slashes,
                   trainer.trainings, trainer.train_steps, trainer.hit_items)


def report_entry(game, epoch: int, before: Tally, after: Tally, loss, feed) -> dict:
    """One object of `--report`: `epoch` (the chain's epoch when measured: 0 for the genesis
    state, then each epoch's end, measured once the next epoch began and the trainers revealed
    the weights they committed), what the epoch did (`hits` … `hit_items`: counts within it),
    the network's held-out loss (`network_loss_bpb`: definition (a), the best active model per
    item; `network_routed_bpb`: (b), each item routed by embedding; `loss_by_kind`: (a) per
    kind of item) and each active model's (`models`: id, owner's role, stake, bpb, items it is
    best on, items routed to it), and every hit revealed in the epoch (`revealed`: the miner's
    role, the winning model's owner role, the loss it claimed in nats)."""
    owners = model_owners(game)
    roles = {p.address: p.role for p in game.participants}
    counts = {field: getattr(after, field) - getattr(before, field) for field in Tally._fields}
    return {
        "epoch": epoch,
        **counts,
        "network_loss_bpb": loss.best_bpb,
        "network_routed_bpb": loss.routed_bpb,
        "loss_by_kind": loss.best_by_kind,
        "models": [{"model": "0x" + m.model_id.hex(), "owner": owners.get(m.model_id, "other"), "stake": m.stake,
                    "bpb": m.bpb, "best_items": m.best_items, "routed_items": m.routed_items} for m in loss.models],
        "revealed": [{"miner": roles.get(sender, "other"), "model": owners.get(model_id, "other"), "loss": loss_nats}
                     for sender, model_id, loss_nats in revealed_hits(feed)],
    }


def model_owners(game) -> dict[bytes, str]:
    """Each model's owner as a role: `genesis`, `pair` (the owner–miner pair's), or
    `trainer-<i> (<niche>)`."""
    owners = {m.id: "genesis" for m in game.client.sim.state.values(MODEL, Model)}
    if game.pair is not None:
        owners[game.pair.model_id] = "pair"
    for p in game.participants:
        if p.role == "trainer" and p.model_id is not None:
            owners[p.model_id] = f"trainer-{p.index} ({p.niche})"
    return owners


def revealed_hits(feed) -> list[tuple[bytes, bytes, float]]:
    """(miner, winning model, claimed loss in nats) of every reveal that executed in `feed`'s
    checkpoints."""
    return [(tx.sender, tx.kind.model_id, tx.kind.loss_score / LOSS_SCALE)
            for checkpoint, effects in feed for tx, _ in executed_transactions(checkpoint, effects)
            if isinstance(tx.kind, RevealSubmission)]


def report_lines(report) -> list[str]:
    """The detection table (one row per kind, a shave's by the band of its true margin in audit
    tolerances), then the sampling audits' coverage and latency (simulated time)."""
    lines = []
    if report.frauds:
        width = max(len(label) for label in report.frauds)
        lines.append(f"{'detection':<{width}}  injected  slashed  standing")
        for label, row in report.frauds.items():
            lines.append(f"{label:<{width}}  {row.injected:8d}  {row.caught:7d}  {row.standing:8d}")
    found = report.coverage
    needed = found.assigned - found.moot
    ratio = "-" if found.ratio is None else f"{found.ratio:.0%}"
    latency = ("" if found.latency_p50_s is None else
               f", latency p50 {found.latency_p50_s:.1f} s p99 {found.latency_p99_s:.1f} s (simulated)")
    lines.append(f"sampling: {found.fills} fills, {found.audited} of {needed} audited within their window "
                 f"({ratio}), {found.frauds} frauds found, {found.missed} missed{latency}")
    return lines


def supply_ok(sim: Simulator) -> bool:
    return total_supply(sim.state) == sim.params.genesis_supply


def finish(sim: Simulator, all_supplies_ok: bool, exit_on_failure: bool = True) -> None:
    """The final line; exit 1 when the supply is not the genesis supply (now, or after any
    checkpoint), unless the caller decides."""
    supply = total_supply(sim.state)
    expected = sim.params.genesis_supply
    ok = all_supplies_ok and supply == expected
    typer.echo(
        f"final: epoch {sim.state.system().epoch}, {len(sim.checkpoints)} checkpoints, "
        f"state_root {sim.state.state_root().hex()}, supply {'OK' if ok else 'BROKEN'} "
        f"({supply} of {expected} shannons)"
    )
    if not ok and exit_on_failure:
        raise typer.Exit(code=1)
