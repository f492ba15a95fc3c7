"""`soma simulate`: a localnet run in one process with scripted users (no Ray, no consensus)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import typer

from soma_ray.protocol.genesis import localnet_config, preset_keypair
from soma_ray.protocol.models import model_commitment
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import MODEL, TARGET
from soma_ray.protocol.submissions import submission_commitment
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.types import (
    AddStake, ClaimRewards, CommitModel, CommitSubmission, CreateModel, Faucet, Model,
    RevealModel, RevealSubmission, Target, Transfer, WeightsManifest,
)

SOMA = SHANNONS_PER_SOMA
MODEL_KEY = b"simulated-model-key"
DATA_HASH = b"\x11" * 32
DATA_SIZE = 1_000
SUBMISSION_NONCE = b"simulated-nonce"


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
        elif model.status == "Pending" and epoch == model.commit_epoch + 1:
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
            if target.status == "Open" and target.generation_epoch == epoch and target.model_ids:
                commitment = submission_commitment(
                    DATA_HASH, DATA_SIZE, target.model_ids[0], target.embedding, 1, SUBMISSION_NONCE
                )
                bond = max(self.sim.params.submission_min_bond, DATA_SIZE * self.sim.params.bond_per_byte)
                self.sim.submit_kind(self.miner, CommitSubmission(target.id, commitment, bond))
                return

    def claim_ready_targets(self, epoch: int) -> None:
        """Settle filled targets after their audit window, and expired open ones."""
        for target in self.sim.state.values(TARGET, Target):
            filled_and_audited = target.status == "Filled" and epoch >= target.fill_epoch + 2
            expired = target.status == "Open" and target.generation_epoch < epoch
            if filled_and_audited or expired:
                self.sim.submit_kind(self.bob, ClaimRewards(target.id))


def summarize(effects) -> str:
    failed = [e.error.code for e in effects if e.error is not None]
    return f"{len(effects)} txs, {len(failed)} failed" + (f" ({', '.join(sorted(set(failed)))})" if failed else "")


def target_counts(sim: Simulator) -> str:
    counts = Counter(t.status for t in sim.state.values(TARGET, Target))
    return " ".join(f"{status}={count}" for status, count in sorted(counts.items()))


def simulate(
    epochs: int = typer.Option(3, help="Epochs to run."),
    checkpoints_per_epoch: int = typer.Option(3, help="Checkpoints in each epoch before ChangeEpoch."),
) -> None:
    """Run a localnet state machine in one process with scripted users and print each checkpoint."""
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
    supply = total_supply(sim.state)
    expected = sim.params.genesis_supply
    typer.echo(
        f"final: epoch {sim.state.system().epoch}, {len(sim.checkpoints)} checkpoints, "
        f"state_root {sim.state.state_root().hex()}, supply {'OK' if supply == expected else 'BROKEN'} "
        f"({supply} of {expected} shannons)"
    )
    if supply != expected:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
