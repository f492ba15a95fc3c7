"""The network's held-out loss (docs/game.md, "The network's loss"): does the network learn?

A fixed slice of the interpreter's standard library that no participant reads is scored under
every active model each epoch, in bits per byte; the network's loss is defined twice:

- **best** (a): each held-out item under the active model that predicts it best, averaged over
  the items: what the network knows, if a query could try every model;
- **routed** (b): each item under the one model it is routed to by embedding, as targets route
  data: the item's embedding under a model m is m's scoring embedding of it (the mean of its
  representations, as a submission's embedding is computed under its winning model), and the
  item goes to the model with the lowest selection key distance² / stake (the chain's own
  `selection_key`, target selection with k = 1; ties to the lower model id), the distance
  being the cosine distance between the item's embedding under m and m's revealed embedding.
  A model's embedding is the mean of its own embeddings of its owner's sample, so the items of
  a trainer's niche land near it under its weights.

The stdlib is cut into four kinds (`kind_of`): `library` (the `*.py` sources outside test
directories: the miners' data), `tests` (`*.py` under a directory named test, tests or
idle_test), `docs` (`*.txt`, `*.rst`, `*.html`), `data` (`*.decTest`, `*.json`, `*.xml`,
`*.csv`, `*.toml`). Of each kind, the files first in the order of the BLAKE2b-256 of their path
relative to the stdlib root (below HELD_OUT_DOMAIN) are **held out**, as many as make one file
in HELD_OUT_MODULUS (16) and at least HELD_OUT_MIN_BYTES (32 KiB): they are left out of the
miners' default corpus (`soma_ray.strategies.corpus`) and of every trainer's niche
(`stdlib_files`). The held-out items are, for each kind in KINDS' order, ITEMS_PER_KIND (6)
evenly spaced ones of the consecutive ITEM_BYTES (1 KiB) windows of its held-out files: 24 items
of at most 1 KiB, one scoring chunk each (on Python 3.11.7: 139 files, 2 MB held out).

Bits per byte: over an item's chunks (the spec's tokenizer), the summed −log₂ p of every target
that is a byte (neither EOS nor PAD), over the number of such targets. The scoring loss of the
chain (nats, PAD targets in the denominator, plus 0.02·SIGReg) decides who wins a target; this is
the plain compression rate, comparable between items and models.

Pure of Ray; torch is imported when a model is scored.
"""
from __future__ import annotations

import asyncio
import functools
import math
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from soma_ray.corpus import stdlib_root
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.targets import cosine_distance_fixed, selection_key

KINDS = ("library", "tests", "docs", "data")
SUFFIXES = {"docs": (".txt", ".rst", ".html"), "data": (".decTest", ".json", ".xml", ".csv", ".toml")}
TEST_DIRECTORIES = frozenset({"test", "tests", "idle_test"})
NOT_STDLIB = frozenset({"site-packages", "dist-packages", "__pycache__"})
HELD_OUT_DOMAIN = b"soma/held-out/"
HELD_OUT_MODULUS = 16  # at least one file in 16 of each kind is held out
HELD_OUT_MIN_BYTES = 32 * 1_024  # and at least this much of it
ITEMS_PER_KIND = 6
ITEM_BYTES = 1_024
MIN_ITEM_BYTES = 64
BYTE_TARGETS = 256  # targets below this are bytes (EOS and PAD are not)


# ---------------------------------------------------------------------------- the corpus slices

def kind_of(relative: str | Path) -> str | None:
    """The kind of a stdlib file by its path relative to the stdlib root (None: none of them)."""
    path = Path(relative)
    if NOT_STDLIB.intersection(path.parts):
        return None
    if path.suffix == ".py":
        return "tests" if TEST_DIRECTORIES.intersection(path.parts[:-1]) else "library"
    return next((kind for kind, suffixes in SUFFIXES.items() if path.suffix in suffixes), None)


def held_out_rank(relative: str | Path) -> bytes:
    """A file's place in its kind's held-out order: the BLAKE2b-256 of its path relative to the
    stdlib root, below HELD_OUT_DOMAIN."""
    return blake2b256(HELD_OUT_DOMAIN + Path(relative).as_posix().encode())


def is_held_out(path: str | Path, root: Path | None = None) -> bool:
    """Whether a file (absolute, or relative to the stdlib root) is in the held-out slice."""
    base = root or stdlib_root()
    full = Path(path) if Path(path).is_absolute() else base / path
    return full in _held_out_set(str(base))


def stdlib_files(kind: str, held_out: bool = False, root: Path | None = None) -> list[Path]:
    """The stdlib's regular files of `kind`, sorted by path: those outside the held-out slice
    (a trainer's niche), or with `held_out` those inside it."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    return [path for path, file_kind, held in _stdlib_index(str(root or stdlib_root()))
            if file_kind == kind and held == held_out]


@functools.lru_cache(maxsize=4)
def _stdlib_index(root: str) -> tuple[tuple[Path, str, bool], ...]:
    """(path, kind, held out) of every regular file of a kind under `root`, sorted by path (the
    tree is walked once per process). Of each kind, the files first in `held_out_rank` order are
    held out, as many as make one file in HELD_OUT_MODULUS and at least HELD_OUT_MIN_BYTES."""
    base = Path(root)
    found: list[tuple[Path, str, int]] = []
    for directory, subdirectories, names in os.walk(base):
        subdirectories[:] = [d for d in subdirectories if d not in NOT_STDLIB]
        for name in names:
            path = Path(directory, name)
            kind = kind_of(path.relative_to(base))
            if kind is not None and path.is_file():
                found.append((path, kind, path.stat().st_size))
    held: set[Path] = set()
    for kind in KINDS:
        ranked = sorted((held_out_rank(p.relative_to(base)), p, size) for p, k, size in found if k == kind)
        wanted, total = -(-len(ranked) // HELD_OUT_MODULUS), 0
        for count, (_, path, size) in enumerate(ranked):
            if count >= wanted and total >= HELD_OUT_MIN_BYTES:
                break
            held.add(path)
            total += size
    return tuple(sorted((path, kind, path in held) for path, kind, _ in found))


@functools.lru_cache(maxsize=4)
def _held_out_set(root: str) -> frozenset[Path]:
    return frozenset(path for path, _, held in _stdlib_index(root) if held)


def without_held_out(files: Sequence[Path], root: Path | None = None) -> list[Path]:
    """`files` less those in the held-out slice (files outside the stdlib are kept)."""
    held = _held_out_set(str(root or stdlib_root()))
    return [path for path in files if Path(path) not in held]


class Item(NamedTuple):
    kind: str
    data: bytes


def held_out_items(per_kind: int | None = None, size: int = ITEM_BYTES, root: Path | None = None) -> list[Item]:
    """The held-out items: for each kind (KINDS' order), the consecutive `size`-byte windows of
    its held-out files (a file's last window may be shorter; windows under MIN_ITEM_BYTES are not
    counted), and of them `per_kind` evenly spaced ones (window i·n/per_kind of n)."""
    per_kind = ITEMS_PER_KIND if per_kind is None else per_kind
    items = []
    for kind in KINDS:
        windows = []
        for path in stdlib_files(kind, held_out=True, root=root):
            length = path.stat().st_size
            windows += [(path, offset) for offset in range(0, length, size) if min(size, length - offset) >= MIN_ITEM_BYTES]
        for index in sorted({i * len(windows) // per_kind for i in range(per_kind)} if windows else ()):
            path, offset = windows[index]
            with open(path, "rb") as file:
                file.seek(offset)
                items.append(Item(kind, file.read(size)))
    return items


# ---------------------------------------------------------------------------- one model's losses

class ItemLosses(NamedTuple):
    """One model on the held-out items: bits per byte and scoring embedding of each."""
    bpb: np.ndarray  # [items] float64
    embeddings: np.ndarray  # [items, D] float32


def item_losses(model, items: Sequence[bytes]) -> ItemLosses:
    """Each item's bits per byte and embedding under `model` (a V1Model), in float32 at the
    canonical precision, in forward passes of at most 16 chunks. An item's embedding is its
    scoring embedding: the mean over its batches of 16 chunks of their mean representation."""
    import torch
    import torch.nn.functional as F

    from soma_ray.model import CHUNKS_PER_BATCH, tokenize
    from soma_ray.model.scoring import canonical_precision

    seq = model.config.max_seq_len
    chunks = [tokenize(bytes(item), seq) for item in items]
    counts = [c.tokens.shape[0] for c in chunks]
    tokens = np.concatenate([c.tokens for c in chunks])
    positions = np.concatenate([c.positions for c in chunks])
    targets = np.concatenate([c.targets for c in chunks])
    ce_bits = np.empty(len(tokens))
    predicted = (targets < BYTE_TARGETS).sum(axis=1)
    means = np.empty((len(tokens), model.config.embedding_dim))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), canonical_precision():
            for start in range(0, len(tokens), CHUNKS_PER_BATCH):
                rows = slice(start, start + CHUNKS_PER_BATCH)
                r = model.encode(torch.from_numpy(tokens[rows]), torch.from_numpy(positions[rows]))
                logits = model.predict(r).float()
                wanted = torch.from_numpy(targets[rows])
                nats = F.cross_entropy(logits.flatten(0, 1), wanted.flatten().clamp(max=logits.shape[-1] - 1),
                                       reduction="none").view(wanted.shape)
                nats = torch.where(wanted < BYTE_TARGETS, nats, torch.zeros_like(nats))
                ce_bits[rows] = nats.sum(dim=1).double().numpy() / math.log(2)
                means[rows] = r.float().mean(dim=1).double().numpy()
    finally:
        model.train(was_training)
    bpb, embeddings, first = [], [], 0
    for count in counts:
        rows = slice(first, first + count)
        bpb.append(ce_bits[rows].sum() / max(int(predicted[rows].sum()), 1))
        batches = [means[s:min(s + CHUNKS_PER_BATCH, first + count)].mean(axis=0)
                   for s in range(first, first + count, CHUNKS_PER_BATCH)]
        embeddings.append(np.mean(batches, axis=0))
        first += count
    return ItemLosses(np.asarray(bpb, dtype=np.float64), np.asarray(embeddings, dtype=np.float32))


# ---------------------------------------------------------------------------- the network's loss

class ModelEntry(NamedTuple):
    """An active model as the network loss sees it."""
    model_id: bytes
    stake: int
    embedding: bytes  # the revealed embedding (little-endian float32)
    losses: ItemLosses


class ModelLoss(NamedTuple):
    model_id: bytes
    stake: int
    bpb: float  # its mean over the held-out items
    best_items: int  # items it predicts best of all active models (definition a)
    routed_items: int  # items routed to it (definition b)


class NetworkLoss(NamedTuple):
    best_bpb: float  # (a)
    routed_bpb: float  # (b)
    models: list[ModelLoss]  # by model id
    items: int
    best_by_kind: dict[str, float]  # (a) over each kind's items (with `kinds`)


def best_choice(entries: Sequence[ModelEntry]) -> np.ndarray:
    """Definition (a): for each item, the index of the model with the lowest bits per byte
    (ties: the lower model id, entries being in id order)."""
    table = np.stack([e.losses.bpb for e in entries])  # [models, items]
    return np.argmin(table, axis=0)


def routed_choice(entries: Sequence[ModelEntry]) -> np.ndarray:
    """Definition (b): for each item, the index of the model with the lowest selection key
    distance² / stake, the distance between the item's embedding under that model and the
    model's revealed embedding (the chain's fixed point); ties: the lower model id."""
    items = len(entries[0].losses.bpb)
    chosen = np.empty(items, dtype=np.int64)
    for i in range(items):
        keys = [(selection_key(cosine_distance_fixed(e.losses.embeddings[i], e.embedding), e.stake), e.model_id, m)
                for m, e in enumerate(entries)]
        chosen[i] = min(keys)[2]
    return chosen


def network_loss(entries: Sequence[ModelEntry], kinds: Sequence[str] = ()) -> NetworkLoss:
    """Both definitions over `entries` (any order; read in model id order). `kinds`, one per
    item, adds (a) per kind."""
    entries = sorted(entries, key=lambda e: e.model_id)
    if not entries:
        raise ValueError("no active model to measure")
    table = np.stack([e.losses.bpb for e in entries])
    best, routed = best_choice(entries), routed_choice(entries)
    columns = np.arange(table.shape[1])
    best_bpb = table[best, columns]
    by_kind = {kind: float(best_bpb[[k == kind for k in kinds]].mean()) for kind in dict.fromkeys(kinds)}
    models = [ModelLoss(e.model_id, e.stake, float(e.losses.bpb.mean()), int((best == m).sum()),
                        int((routed == m).sum())) for m, e in enumerate(entries)]
    return NetworkLoss(float(best_bpb.mean()), float(table[routed, columns].mean()), models, table.shape[1], by_kind)


class HeldOut:
    """Measures the network's held-out loss from the chain, as anyone can: the active models
    (`get_active_models`: revealed embedding and stake), their weights downloaded, checked and
    decrypted through the SDK (`soma_ray.training.from_network.fetch_model_weights`, the
    `soma model train --from` path), each version scored once (cached by its checksum). A model
    whose weights cannot be fetched or loaded is left out (`unusable`)."""

    def __init__(self, items: Sequence[Item] | None = None, threaded: bool = False) -> None:
        self.items = list(held_out_items() if items is None else items)
        self.threaded = threaded  # score in a thread (an actor's event loop goes on meanwhile)
        self._losses: dict[bytes, ItemLosses] = {}  # weights checksum → losses
        self.unusable: set[bytes] = set()
        self.scored = 0  # model versions scored

    def losses(self, weights: bytes) -> ItemLosses:
        from soma_ray.model import load_weights

        self.scored += 1
        return item_losses(load_weights(weights), [item.data for item in self.items])

    async def measure(self, client) -> NetworkLoss:
        from soma_ray.protocol import errors
        from soma_ray.protocol.state import MODEL
        from soma_ray.protocol.types import Model
        from soma_ray.model.errors import ModelError
        from soma_ray.training.from_network import fetch_model_weights

        entries = []
        for view in await client.get_active_models():
            model = await client.get_object(MODEL, view.model_id, Model)
            if model is None or model.weights_manifest is None or view.embedding is None:
                continue
            checksum = bytes(model.weights_manifest.checksum)
            if checksum not in self._losses:
                try:
                    weights = await fetch_model_weights(client, view.model_id)
                    self._losses[checksum] = (await asyncio.to_thread(self.losses, weights) if self.threaded
                                              else self.losses(weights))
                except (errors.ProtocolError, ModelError, OSError):
                    self.unusable.add(bytes(view.model_id))
                    continue
            entries.append(ModelEntry(bytes(view.model_id), view.stake, bytes(view.embedding), self._losses[checksum]))
        return network_loss(entries, [item.kind for item in self.items])
