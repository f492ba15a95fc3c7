"""`soma model ...`: train V1 weights on a byte corpus with Ray Train (`train`), and publish and
manage models on a network over its HTTP gateway (`create`, `commit`, `reveal`, `publish`, `list`,
`info`, `download`, `stake`, `deactivate`; docs/model_owner.md).

The network commands never use Ray: they reach the gateway with `SomaClient(rpc_url=...)`
(`soma_ray.cli.common.run_participant`). What `reveal` needs (the decryption key and the
embedding committed to) is kept in the wallet's key store (`soma_ray.wallet.save_secret`,
`$SOMA_HOME/models/<model id>.json`, 0600). Every rule the chain would refuse a transaction for,
and that the command can see from the chain's state, is checked before anything is sent (the
protocol's own rule functions): a refused transaction would still cost its fee.
"""

from __future__ import annotations

import dataclasses
import io
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from soma_ray.cli.common import (BadArgument, KeyOption, RpcOption, WalletOption, fail, load_key, parse_amount,
                                 parse_id, print_table, run_participant, show_amount)
from soma_ray.client import SomaClient
from soma_ray.corpus import (CorpusNotFound, EmptyCorpus, corpus_files, sample_windows,
                             stdlib_sources)
from soma_ray.files import FileTooLarge, read_bounded, write_atomic
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair, show_address
from soma_ray.protocol.models import (
    awaited_reveal, model_commitment, require_commit_allowed, require_deactivatable,
    require_model_owner, reveal_allowed, reveal_epoch, validate_embedding,
)
from soma_ray.protocol.params import BPS
from soma_ray.protocol.state import MODEL, STAKING_POOL
from soma_ray.protocol.targets import embedding_bytes
from soma_ray.protocol.types import Model, StakingPool
from soma_ray.wallet import KeyStoreError, ModelSecret, load_secret, save_secret

# torch and Ray Train are imported inside the commands that need them: every other `soma`
# command (and `--help`) would otherwise pay seconds of import time for them.

app = typer.Typer(name="model", help="Train, publish and manage V1 models.", no_args_is_help=True)

MODEL_SIZES = ("small", "v1")
DEFAULT_COMMISSION = "10%"
MAX_EMBEDDING_FILE_BYTES = 1 << 20
# How long one gateway call of `reveal --wait` waits (below the HTTP client's request timeout).
WAIT_STEP_S = 60.0


@app.callback()
def model() -> None:
    """Train, publish and manage V1 models (a group, so each command is a subcommand)."""


@app.command()
def train(
    out: Path = typer.Option(..., help="Where to write the trained weights (safetensors)."),
    config: str = typer.Option("small", help=f"Model size: {', '.join(MODEL_SIZES)}."),
    corpus: Optional[Path] = typer.Option(
        None, help="Directory or file of training bytes [default: Python's standard library]."),
    steps: int = typer.Option(100, help="Optimizer steps."),
    workers: int = typer.Option(1, help="Ray Train workers (data parallel)."),
    init: Optional[Path] = typer.Option(None, help="Fine-tune from this weights file."),
    from_model: Optional[str] = typer.Option(
        None, "--from", help="Fine-tune from a network model (its id): downloaded through the "
        "gateway, checked against the chain's manifest and decrypted (the guide's fastest path)."),
    rpc_url: Optional[str] = typer.Option(
        None, "--rpc-url", envvar="SOMA_RPC_URL", help="The gateway --from downloads through "
        "[default: the localnet's; or --chain]."),
    micro_batch: int = typer.Option(2, help="Chunks per worker per forward pass (the guide's 2)."),
    grad_accum: int = typer.Option(64, help="Micro-batches per optimizer step (the guide's 64: an "
                                   "effective batch of 128)."),
    lr: float = typer.Option(1e-4, help="Peak learning rate, warmup then cosine decay (the guide's 1e-4)."),
    warmup: int = typer.Option(10, help="Warmup steps."),
    dropout: float = typer.Option(0.1, help="Dropout rate (the guide's 0.1)."),
    seed: int = typer.Option(0, help="Seed of the init, data order and noise."),
    checkpoint_every: int = typer.Option(50, help="Steps between checkpoints."),
    gpu: bool = typer.Option(False, help="One GPU per worker, bf16 autocast."),
    name: str = typer.Option("soma-train", help="Run name: rerun with the same name to resume."),
    storage: Optional[Path] = typer.Option(None, help="Checkpoint directory [~/.soma/training]."),
    address: Optional[str] = typer.Option(
        None, help="Ray address host:port [default: $RAY_ADDRESS, else the cluster `soma start` "
        "recorded, else a local Ray for this command]."),
) -> None:
    """Train V1 weights; print progress, then held-out loss before/after and the weights path."""
    import ray

    from soma_ray.training import TrainingError, prepare_corpus
    from soma_ray.training.loop import check_init_weights

    if from_model is not None:
        if init is not None:
            raise fail("give --init (a file) or --from (a network model), not both")
        init = _download_init(from_model, rpc_url, storage)
    try:
        settings = _settings(config, dropout, steps=steps, num_workers=workers, init=init,
                             micro_batch=micro_batch, grad_accum=grad_accum, lr=lr,
                             warmup_steps=warmup, seed=seed, checkpoint_every=checkpoint_every,
                             use_gpu=gpu)
        split = prepare_corpus(corpus, settings.held_out_fraction)
        if init is not None:
            check_init_weights(settings)  # a wrong-size file fails before Ray starts
    except TrainingError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    connected = _start_ray(address)
    try:
        result = _train_with_progress(settings, split, out, name, storage)
    finally:
        if connected:
            ray.shutdown()
    tokens_per_s = sum(m["tokens_per_s"] for m in result.history) / len(result.history)
    typer.echo(f"trained {result.steps} steps, {tokens_per_s:,.0f} tokens/s per step on average")
    typer.echo(f"held-out loss {result.loss_before:.4f} -> {result.loss_after:.4f}")
    typer.echo(f"weights: {result.weights}")


def _download_init(model_id: str, rpc_url: str | None, storage: Path | None) -> Path:
    """The network model's weights, downloaded and decrypted into the training directory (the
    library's `soma_ray.training.from_network.download_model`), as --init."""
    from soma_ray.cli.common import endpoints
    from soma_ray.training.from_network import download_model

    gateway, _ = endpoints(rpc_url)
    directory = (storage or cluster_home() / "training") / "init"
    try:
        path = download_model(gateway, parse_model_id(model_id), directory)
    except (errors.ProtocolError, ConnectionError, OSError, BadArgument) as error:
        raise fail(f"--from {model_id}: {error}") from None
    typer.echo(f"fine-tuning from model {model_id} ({path})", err=True)
    return path


def cluster_home() -> Path:
    from soma_ray.cluster import soma_home

    return soma_home()


def _settings(size: str, dropout: float | None, **fields):
    from soma_ray.model import V1Config
    from soma_ray.training import TrainConfig, TrainConfigError

    if size not in MODEL_SIZES:
        raise TrainConfigError("model", size, f"one of {', '.join(MODEL_SIZES)}")
    model = V1Config.small() if size == "small" else V1Config()
    if dropout is not None:
        model = dataclasses.replace(model, dropout_rate=dropout)
    return TrainConfig(model=model, **fields)


def _start_ray(address: str | None) -> bool:
    """Join the network's cluster as every `soma` command finds it (`soma_ray.cluster.connect`:
    --address, else $RAY_ADDRESS, else the cluster `soma start` recorded), else start a local
    Ray for this command; never whatever `address="auto"` finds. A dead or unreachable cluster
    is a one-line error within seconds (exit code 1). A process already connected (the command
    called from Python) keeps its connection: returns whether this command connected, and so
    must disconnect."""
    from soma_ray import cluster

    try:
        return cluster.connect(address, local_fallback=True,
                               local_options={"include_dashboard": False}).connected_here
    except ConnectionError as e:  # cluster.ClusterError, or ray.init's own
        typer.echo(f"error: {(str(e).strip().splitlines() or ['no Ray cluster'])[0]}", err=True)
        raise typer.Exit(1) from None


def _train_with_progress(settings, split, out: Path, name: str, storage: Path | None):
    from soma_ray.training import train as run_training

    with typer.progressbar(length=settings.steps, label="training", show_eta=True,
                           show_pos=True, item_show_func=_describe) as bar:
        done = 0

        def on_step(metrics: dict) -> None:
            nonlocal done
            bar.current_item = metrics
            bar.update(metrics["step"] - done)
            done = metrics["step"]

        return run_training(settings, split, out=out, name=name, storage_path=storage,
                            on_step=on_step)


def _describe(metrics: dict | None) -> str:
    if metrics is None:
        return ""
    return (f"loss {metrics['loss']:.3f}  {metrics['tokens_per_s']:,.0f} tok/s  "
            f"lr {metrics['lr']:.2e}")


# ---------------------------------------------------------------------------------- arguments

ModelIdArgument = Annotated[str, typer.Argument(help="The model's id (0x followed by 64 hex digits).")]
CommissionOption = Annotated[str, typer.Option(
    "--commission", help="Share of the model's rewards for its owner: basis points (1000) or a "
    "percentage (10%).")]
StakeOption = Annotated[Optional[str], typer.Option(
    "--stake", help="SOMA to stake on the model [default: the network's minimum model stake].")]
EmbeddingOption = Annotated[Optional[Path], typer.Option(
    "--embedding", help="The model's embedding: a .npy float32 vector, or raw little-endian float32 "
    "[default: the model's own mean embedding over --embedding-corpus].")]
CorpusOption = Annotated[Optional[Path], typer.Option(
    "--embedding-corpus", help="File or directory the default embedding is sampled from "
    "[default: the Python standard library's top-level modules].")]


def parse_commission(text: str) -> int:
    """'1000' (basis points) or '10%' / '12.5%' → basis points, 0 to 10,000."""
    number = text.strip()
    percent = number.endswith("%")
    try:
        bps = Decimal(number.removesuffix("%")) * (100 if percent else 1)
        whole = bps == bps.to_integral_value() and 0 <= bps <= BPS
    except InvalidOperation:
        whole = False
    if not whole:
        raise BadArgument(f"commission {text!r}: whole basis points from 0 to {BPS} (1000), "
                          "or a percentage from 0% to 100% (10%, 12.5%)")
    return int(bps)


def show_commission(bps: int) -> str:
    return f"{Decimal(bps) / 100:f}%"


def read_file(path: Path, what: str, limit: int) -> bytes:
    """The bytes of `path`, at most `limit` of them (BadArgument naming `what` otherwise)."""
    try:
        return read_bounded(path, limit)
    except FileTooLarge:
        raise BadArgument(f"{what} {path} is over {limit} bytes") from None
    except OSError as error:
        raise BadArgument(f"{what} {path}: {error.strerror or error}") from None


def read_embedding_file(path: Path) -> bytes:
    """An embedding from a .npy float32 vector or raw little-endian float32 bytes, as canonical
    bytes (`validate_embedding` then checks it against the network)."""
    data = read_file(path, "embedding file", MAX_EMBEDDING_FILE_BYTES)
    if path.suffix != ".npy":
        return embedding_bytes(data)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BadArgument(f"embedding file {path} is not a .npy array ({error})") from None
    return embedding_bytes(array)


def read_weights(path: Path, dim: int, limit: int) -> bytes:
    """The bytes of a V1 weights file as wide as the network's embedding_dim."""
    from soma_ray.model import ModelError, read_weights_header

    data = read_file(path, "weights file", limit)
    try:
        width = read_weights_header(data).embedding_dim
    except ModelError as error:
        raise BadArgument(f"{path}: {error}") from None  # "weights file is not valid ..."
    if width != dim:
        raise BadArgument(f"weights file {path} is a model of width {width}; the network's "
                          f"embedding_dim is {dim}")
    return data


# ---------------------------------------------------------------------------------- the embedding

def embedding_sample(corpus: Path | None) -> list[bytes]:
    """The sample the default embedding is computed over (`soma_ray.corpus.sample_windows`):
    windows of `corpus`, a file or a directory's files; None: the Python standard library's
    top-level modules."""
    try:
        return sample_windows(stdlib_sources(top_level=True) if corpus is None else corpus_files(corpus))
    except CorpusNotFound:
        raise BadArgument(f"embedding corpus {corpus}: no such file or directory") from None
    except EmptyCorpus:
        raise BadArgument("the embedding corpus holds no bytes") from None


def model_embedding(weights: bytes, sample: list[bytes]) -> bytes:
    """The model's own embedding (the library's `soma_ray.model.embedding.model_embedding`: the
    unit mean of its scoring embeddings of the sample's windows), in the command's words when
    there is none."""
    from soma_ray.model.embedding import ZeroMeanEmbedding
    from soma_ray.model.embedding import model_embedding as own_embedding

    try:
        return own_embedding(weights, sample)
    except ZeroMeanEmbedding:
        raise BadArgument("the model's mean embedding over the corpus sample is zero or not "
                          "finite: give one with --embedding") from None


# ---------------------------------------------------------------------------------- checks
# The chain's rules a command can check from the chain's state before it sends anything: a
# transaction refused at execution still costs its fee.


def check_commit(model: Model, sender: bytes) -> None:
    """A commit is taken by a Created model, or an Active one without a pending update; so the key
    store record it replaces is no longer needed."""
    require_model_owner(model, sender)
    require_commit_allowed(model)


def check_reveal(model: Model, sender: bytes, epoch: int, secret: ModelSecret) -> None:
    """The reveal of `secret` by `sender` in `epoch` is what the chain accepts."""
    require_model_owner(model, sender)
    due = awaited_reveal(model)
    if not reveal_allowed(due.commit_epoch, epoch):
        raise errors.ModelRevealEpochMismatch(commit_epoch=due.commit_epoch, current_epoch=epoch)
    if (model_commitment(secret.decryption_key), model_commitment(secret.embedding)) != (
            due.key_commitment, due.embedding_commitment):
        raise KeyStoreError(f"the key and embedding kept for model {show_address(model.id)} are not "
                            "the ones it committed to (kept by a commit that failed, or the model "
                            "was committed elsewhere)")


def check_deactivate(model: Model, sender: bytes) -> None:
    require_model_owner(model, sender)
    require_deactivatable(model)  # a Pending model must reveal or be slashed


def check_stake(pool: StakingPool, amount: int, available: int, fee: int) -> None:
    if pool.deactivation_epoch is not None:
        raise errors.PoolInactive(pool_id=pool.id)
    if available < amount + fee:
        raise errors.InsufficientBalance(required=amount + fee, available=available)


def model_rows(model: Model, pool: StakingPool) -> list[tuple[str, str]]:
    """`soma model info`'s table: the model object in words."""
    rows = [("status", model.status), ("owner", show_address(model.owner)),
            ("stake", show_amount(pool.soma_balance))]
    if pool.pending_stake:
        rows.append(("pending stake", f"{show_amount(pool.pending_stake)} (active next epoch)"))
    rows.append(("commission", show_commission(model.commission_bps)))
    if model.next_epoch_commission_bps is not None:
        rows.append(("next epoch's commission", show_commission(model.next_epoch_commission_bps)))
    manifest = model.weights_manifest
    rows += [("weights", "none committed" if manifest is None else manifest.url)]
    if manifest is not None:
        rows += [("weights size", f"{manifest.size} bytes (encrypted)"),
                 ("weights checksum", show_address(manifest.checksum)),
                 ("committed in epoch", str(model.commit_epoch))]
    rows += [("decryption key", "not revealed" if model.decryption_key is None
              else show_address(model.decryption_key)),
             ("embedding", "not revealed" if model.embedding is None
              else f"{len(model.embedding) // 4} dimensions")]
    update = model.pending_update
    rows.append(("pending update", "none" if update is None else
                 f"{update.weights_manifest.url}, committed in epoch {update.commit_epoch}, "
                 f"reveal due in epoch {reveal_epoch(update.commit_epoch)}"))
    if model.reporters:
        rows.append(("reported by", f"{len(model.reporters)} validators"))
    return rows


# ---------------------------------------------------------------------------------- network steps

async def chain_model(client: SomaClient, model_id: bytes) -> Model:
    model = await client.get_object(MODEL, model_id, Model)
    if model is None:
        raise errors.ObjectNotFound(kind="model", id=model_id)
    return model


@dataclasses.dataclass(frozen=True)
class PreparedWeights:
    encrypted: bytes
    decryption_key: bytes
    embedding: bytes


async def prepare_weights(client: SomaClient, weights_file: Path, embedding_file: Path | None,
                          corpus: Path | None) -> PreparedWeights:
    """Everything a commit needs that can fail locally, before anything is sent: the weights
    checked and encrypted, the embedding read or computed, both within the network's limits."""
    params = (await client.get_system_state()).parameters
    weights = read_weights(weights_file, params.embedding_dim, params.model_max_weight_size)
    embedding = (read_embedding_file(embedding_file) if embedding_file is not None
                 else model_embedding(weights, embedding_sample(corpus)))
    validate_embedding(embedding, params.embedding_dim)
    encrypted, key = SomaClient.encrypt_weights(weights)
    if len(encrypted) > params.model_max_weight_size:
        raise errors.DataTooLarge(size=len(encrypted), max=params.model_max_weight_size)
    return PreparedWeights(encrypted, key, embedding)


async def upload_and_commit(client: SomaClient, owner: Keypair, model_id: bytes,
                            prepared: PreparedWeights) -> None:
    """Upload the encrypted weights, keep what the reveal needs, commit, and say when to reveal.
    The record is written before the commit is sent: a commit whose key is lost can never be
    revealed, and is slashed."""
    url = await client.upload(prepared.encrypted, kind="weights", signer=owner)
    path = save_secret(ModelSecret(model_id, prepared.decryption_key, prepared.embedding, url))
    await client.commit_model(owner, model_id, url, prepared.encrypted, prepared.decryption_key,
                              prepared.embedding)
    committed = awaited_reveal(await chain_model(client, model_id)).commit_epoch
    typer.echo(f"committed in epoch {committed}: reveal in epoch {reveal_epoch(committed)} with "
               f"`soma model reveal {show_address(model_id)} --wait` (key and embedding kept in {path})")


async def wait_for_epoch(client: SomaClient, epoch: int, timeout_s: float | None) -> int:
    """Wait until `epoch` begins, in steps the gateway allows, at most `timeout_s` (None: as long
    as it takes); returns the epoch then current."""
    import asyncio

    typer.echo(f"waiting for epoch {epoch}", err=True)
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    while True:
        left = WAIT_STEP_S if deadline is None else max(0.0, deadline - loop.time())
        try:
            return await client.wait_for_epoch(epoch, min(WAIT_STEP_S, left))
        except errors.EpochNotReached:
            if deadline is not None and loop.time() >= deadline:
                raise


def parse_model_id(text: str) -> bytes:
    return parse_id(text, "model id")


def parse_stake(text: str | None) -> int | None:
    return None if text is None else parse_amount(text)


# ---------------------------------------------------------------------------------- commands

@app.command()
def create(commission: CommissionOption = DEFAULT_COMMISSION, stake: StakeOption = None,
           wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Create a model (no weights yet: `commit` them next); prints its id."""
    async def action(client: SomaClient):
        owner, bps, amount = load_key(wallet, key), parse_commission(commission), parse_stake(stake)
        typer.echo(show_address(await client.create_model(owner, bps, amount)))

    run_participant(rpc_url, action)


ModelOption = Annotated[Optional[str], typer.Option("--model", help="The model's id (the plan's form).")]
WeightsOption = Annotated[Optional[Path], typer.Option("--weights", help="The V1 weights file (safetensors).")]
OptionalModelArgument = Annotated[Optional[str], typer.Argument(
    help="The model's id (0x followed by 64 hex digits), or --model.", show_default=False)]
OptionalWeightsArgument = Annotated[Optional[Path], typer.Argument(
    help="The V1 weights file (safetensors), or --weights.", show_default=False)]


def one_of(positional, option, what: str, required: bool = True):
    """The value given as an argument or as its option (the same value if both)."""
    if positional is not None and option is not None and positional != option:
        raise BadArgument(f"give the {what} once")
    found = positional if positional is not None else option
    if found is None and required:
        raise BadArgument(f"give the {what}")
    return found


def _commit(model_id: str | None, weights_file: Path | None, commission: str, stake: str | None,
            embedding: Path | None, embedding_corpus: Path | None, wallet, key, rpc_url,
            update: bool = False) -> None:
    """Commit weights to a model, or (no model id) create one with --stake then commit."""
    async def action(client: SomaClient):
        owner, weights = load_key(wallet, key), one_of(weights_file, None, "weights file (--weights)")
        if model_id is None:
            if update:
                raise BadArgument("an update needs the model's id (--model)")
            bps, amount = parse_commission(commission), parse_stake(stake)
            prepared = await prepare_weights(client, weights, embedding, embedding_corpus)
            ident = await client.create_model(owner, bps, amount)
            typer.echo(show_address(ident))
        else:
            ident = parse_model_id(model_id)
            model = await chain_model(client, ident)
            check_commit(model, owner.address)
            if update and model.status != "Active":
                raise errors.InvalidModelStatus(status=model.status, expected="Active (an update)")
            prepared = await prepare_weights(client, weights, embedding, embedding_corpus)
        await upload_and_commit(client, owner, ident, prepared)

    run_participant(rpc_url, action)


@app.command()
def commit(model_id: OptionalModelArgument = None, weights_file: OptionalWeightsArgument = None,
           model: ModelOption = None, weights: WeightsOption = None,
           stake: StakeOption = None, commission: CommissionOption = DEFAULT_COMMISSION,
           embedding: EmbeddingOption = None, embedding_corpus: CorpusOption = None,
           wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Encrypt, upload and commit to weights (first ones, or an update); reveal next epoch.

    `commit MODEL_ID FILE` (or --model, --weights) commits to an existing model; the plan's
    `commit --weights FILE --stake AMOUNT` creates a model with that stake first (its id is
    printed first)."""
    try:
        ident = one_of(model_id, model, "model id", required=False)
        chosen = one_of(weights_file, weights, "weights file (--weights)")
    except BadArgument as error:
        raise fail(str(error)) from None
    if ident is not None and stake is not None:
        raise fail("--stake creates a new model: leave out the model id, or stake with `soma model stake`")
    _commit(ident, chosen, commission, stake, embedding, embedding_corpus, wallet, key, rpc_url)


@app.command("update-commit")
def update_commit(model: Annotated[str, typer.Option("--model", help="The Active model's id.")],
                  weights: Annotated[Path, typer.Option("--weights", help="The new V1 weights file.")],
                  embedding: EmbeddingOption = None, embedding_corpus: CorpusOption = None,
                  wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Commit new weights to an Active model (an update); `update-reveal` next epoch."""
    _commit(model, weights, DEFAULT_COMMISSION, None, embedding, embedding_corpus, wallet, key, rpc_url,
            update=True)


async def check_weights_committed(client: SomaClient, model: Model, secret: ModelSecret, weights_file: Path) -> None:
    """`weights_file` is the file the awaited commit holds: the committed (encrypted) upload,
    opened with the kept key, is byte for byte the file (BadArgument otherwise)."""
    manifest = model.weights_manifest if model.status == "Pending" else model.pending_update.weights_manifest
    committed = client.decrypt_weights(await client.download(manifest.url, manifest.size, manifest.checksum),
                                       secret.decryption_key)
    given = read_file(weights_file, "weights file", max(len(committed), 1) + 1)
    if given != committed:
        raise BadArgument(f"weights file {weights_file} is not the one model {show_address(model.id)} "
                          "committed to")


def _reveal(model_id: str, weights: Path | None, wait: bool, timeout: float | None, wallet, key, rpc_url,
            update: bool = False) -> None:
    async def action(client: SomaClient):
        owner, ident = load_key(wallet, key), parse_model_id(model_id)
        model = await chain_model(client, ident)
        require_model_owner(model, owner.address)
        if update and model.status != "Active":
            raise errors.InvalidModelStatus(status=model.status, expected="Active with a pending update")
        due, secret = reveal_epoch(awaited_reveal(model).commit_epoch), load_secret(ident)
        if weights is not None:
            await check_weights_committed(client, model, secret, weights)
        epoch = (await client.get_epoch()).epoch
        if wait and epoch < due:
            epoch = await wait_for_epoch(client, due, timeout)
        check_reveal(model, owner.address, epoch, secret)
        await client.reveal_model(owner, ident, secret.decryption_key, secret.embedding)
        typer.echo(f"revealed model {show_address(ident)} in epoch {epoch}: it is Active")

    run_participant(rpc_url, action)


WaitOption = Annotated[bool, typer.Option("--wait", help="Wait for the epoch the reveal is due in.")]
TimeoutOption = Annotated[Optional[float], typer.Option(
    "--timeout", help="Seconds --wait waits at most [default: until the epoch begins].")]
RevealWeightsOption = Annotated[Optional[Path], typer.Option(
    "--weights", help="Check first that this is the weights file the commit holds.")]


@app.command()
def reveal(model_id: OptionalModelArgument = None, model: ModelOption = None,
           weights: RevealWeightsOption = None, wait: WaitOption = False, timeout: TimeoutOption = None,
           wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Reveal the key and embedding the commit kept: the model is Active (or updated) from then on.
    `reveal MODEL_ID` or the plan's `reveal --model ID --weights FILE`."""
    try:
        ident = one_of(model_id, model, "model id (--model)")
    except BadArgument as error:
        raise fail(str(error)) from None
    _reveal(ident, weights, wait, timeout, wallet, key, rpc_url)


@app.command("update-reveal")
def update_reveal(model: Annotated[str, typer.Option("--model", help="The Active model's id.")],
                  weights: RevealWeightsOption = None, wait: WaitOption = False, timeout: TimeoutOption = None,
                  wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Reveal an Active model's pending update (committed with `update-commit`)."""
    _reveal(model, weights, wait, timeout, wallet, key, rpc_url, update=True)


@app.command()
def publish(weights_file: Annotated[Path, typer.Argument(help="The V1 weights file (safetensors).")],
            commission: CommissionOption = DEFAULT_COMMISSION, stake: StakeOption = None,
            embedding: EmbeddingOption = None, embedding_corpus: CorpusOption = None,
            wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Encrypt, upload, create and commit in one go; prints the new model's id, then when to reveal."""
    async def action(client: SomaClient):
        owner, bps, amount = load_key(wallet, key), parse_commission(commission), parse_stake(stake)
        prepared = await prepare_weights(client, weights_file, embedding, embedding_corpus)
        model_id = await client.create_model(owner, bps, amount)
        typer.echo(show_address(model_id))
        await upload_and_commit(client, owner, model_id, prepared)

    run_participant(rpc_url, action)


@app.command("list")
def list_models(owner: Annotated[Optional[str], typer.Option(
                    "--owner", help="Only this owner's models, whatever their status (an address, or "
                    "`me`: your key's).")] = None,
                pending: Annotated[bool, typer.Option(
                    "--pending", help="Only models awaiting a reveal (Pending, or an update).")] = False,
                wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """The Active models (with --owner or --pending: every model of the chain that matches): id,
    status, owner, stake, commission, whether an update awaits its reveal."""
    async def action(client: SomaClient):
        wanted = None if owner is None else (
            load_key(wallet, key).address if owner == "me" else parse_id(owner, "address"))
        if wanted is None and not pending:
            found = await client.get_active_models()
        else:
            found = [await client.get_model(ident) for ident in await client.get_object_ids(MODEL)]
        rows = [(show_address(m.model_id), m.status, show_address(m.owner), show_amount(m.stake),
                 show_commission(m.commission_bps), "yes" if m.has_pending_update else "no")
                for m in found
                if (wanted is None or m.owner == wanted)
                and (not pending or m.status == "Pending" or m.has_pending_update)]
        title = "models" if wanted is not None or pending else "active models"
        print_table(title, ("model", "status", "owner", "stake", "commission", "pending update"), rows)

    run_participant(rpc_url, action)


@app.command()
def info(model_id: ModelIdArgument, rpc_url: RpcOption = None) -> None:
    """A model: status, owner, stake, commission, weights manifest, pending update."""
    async def action(client: SomaClient):
        model = await chain_model(client, parse_model_id(model_id))
        pool = await client.get_object(STAKING_POOL, model.staking_pool_id, StakingPool)
        print_table(f"model {show_address(model.id)}", ("field", "value"), model_rows(model, pool))

    run_participant(rpc_url, action)


@app.command()
def download(model_id: OptionalModelArgument = None, model: ModelOption = None,
             out: Annotated[Optional[Path], typer.Option(
                 "--out", "-o", help="Where to write the weights [default: ./<model id>.safetensors].")] = None,
             output: Annotated[Optional[Path], typer.Option(
                 "--output", help="A directory to write <model id>.safetensors into (the plan's form).")] = None,
             rpc_url: RpcOption = None) -> None:
    """A revealed model's weights: downloaded, checked against the chain's manifest, decrypted."""
    from soma_ray.model import ModelError

    try:
        ident_text = one_of(model_id, model, "model id (--model)")
    except BadArgument as error:
        raise fail(str(error)) from None
    if out is not None and output is not None:
        raise fail("give --out (a file) or --output (a directory), not both")

    async def action(client: SomaClient):
        ident = parse_model_id(ident_text)
        await chain_model(client, ident)
        try:
            weights = await client.fetch_model(ident)
        except ModelError as error:  # DecryptionError: the revealed key does not open them
            raise BadArgument(f"model {show_address(ident)}'s weights: {error}") from None
        name = f"{show_address(ident)}.safetensors"
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
        path = out or (output / name if output is not None else Path(name))
        write_atomic(path, weights)
        typer.echo(f"{path}: {len(weights)} bytes, checked against the chain's manifest and decrypted")

    run_participant(rpc_url, action)


@app.command()
def stake(model_id: OptionalModelArgument = None,
          amount: Annotated[Optional[str], typer.Argument(help="SOMA to stake, or --amount.", show_default=False)] = None,
          model: ModelOption = None,
          amount_option: Annotated[Optional[str], typer.Option("--amount", help="SOMA to stake.")] = None,
          wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Stake SOMA on a model (anyone may; active from the next epoch): `stake MODEL_ID AMOUNT`
    or the plan's `stake --model ID --amount A`."""
    try:
        ident_text = one_of(model_id, model, "model id (--model)")
        amount_text = one_of(amount, amount_option, "amount (--amount)")
    except BadArgument as error:
        raise fail(str(error)) from None

    async def action(client: SomaClient):
        staker, ident, shannons = load_key(wallet, key), parse_model_id(ident_text), parse_amount(amount_text)
        model = await chain_model(client, ident)
        pool = await client.get_object(STAKING_POOL, model.staking_pool_id, StakingPool)
        fee = (await client.get_system_state()).parameters.base_fee
        check_stake(pool, shannons, await client.balance_shannons(staker.address), fee)
        await client.add_stake_to_model(staker, ident, shannons)
        typer.echo(f"staked {show_amount(shannons)} on model {show_address(ident)}, active from the next epoch")

    run_participant(rpc_url, action)


@app.command()
def deactivate(model_id: ModelIdArgument, wallet: WalletOption = None, key: KeyOption = None,
               rpc_url: RpcOption = None) -> None:
    """Deactivate your model: no new targets select it; its stake unlocks at the next epoch change."""
    async def action(client: SomaClient):
        owner, ident = load_key(wallet, key), parse_model_id(model_id)
        check_deactivate(await chain_model(client, ident), owner.address)
        await client.deactivate_model(owner, ident)
        typer.echo(f"deactivated model {show_address(ident)}")

    run_participant(rpc_url, action)
