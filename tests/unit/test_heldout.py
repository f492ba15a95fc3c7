"""The network's held-out loss (soma_ray/heldout.py): the held-out slice no participant reads,
bits per byte on tiny models against a hand computation, and the two definitions of the
network's loss — (a) the best active model per item, (b) each item routed by embedding with the
chain's stake-weighted selection key — on losses and embeddings built by hand."""
import asyncio
import math

import numpy as np
import pytest
import torch

from soma_ray import heldout
from soma_ray.heldout import HeldOut, Item, ItemLosses, ModelEntry, item_losses, network_loss
from soma_ray.model import V1Config, seeded_model, tokenize
from soma_ray.strategies import corpus_files

TINY = V1Config(embedding_dim=16, num_layers=1, num_heads=2, pwff_hidden_dim=32, max_seq_len=32)
A, B, C = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32


def unit(*values):
    return np.asarray(values, dtype=np.float32)


def entry(model_id, bpb, embeddings, stake=100, embedding=(1.0, 0.0)):
    return ModelEntry(model_id, stake, unit(*embedding).astype("<f4").tobytes(),
                      ItemLosses(np.asarray(bpb, dtype=np.float64), np.asarray(embeddings, dtype=np.float32)))


# ------------------------------------------------------------------ the slice

def test_the_held_out_slice_is_fixed_disjoint_from_every_corpus_and_covers_every_kind():
    root = heldout.stdlib_root()
    assert heldout.kind_of("json/decoder.py") == "library"
    assert heldout.kind_of("test/test_json/test_decode.py") == "tests"
    assert heldout.kind_of("idlelib/idle_test/test_run.py") == "tests"
    assert heldout.kind_of("test/test_email/data/msg_01.txt") == "docs"
    assert heldout.kind_of("test/decimaltestdata/abs.decTest") == "data"
    assert heldout.kind_of("lib-dynload/_json.so") is None
    assert heldout.kind_of("site-packages/pip/__init__.py") is None
    held = {kind: heldout.stdlib_files(kind, held_out=True) for kind in heldout.KINDS}
    for kind, files in held.items():
        niche = heldout.stdlib_files(kind)
        assert files and niche and not set(files) & set(niche), kind
        assert len(files) >= len(files + niche) / heldout.HELD_OUT_MODULUS
        assert all(heldout.is_held_out(path) for path in files)
        assert all(heldout.is_held_out(path.relative_to(root)) for path in files)
    everything = set().union(*held.values())
    assert not everything & set(corpus_files())  # the miners' default corpus
    items = heldout.held_out_items()
    assert items == heldout.held_out_items()  # fixed
    assert [item.kind for item in items] == [k for k in heldout.KINDS for _ in range(heldout.ITEMS_PER_KIND)]
    assert all(heldout.MIN_ITEM_BYTES <= len(item.data) <= heldout.ITEM_BYTES for item in items)


# ------------------------------------------------------------------ bits per byte

def test_bits_per_byte_are_the_byte_targets_log2_loss_and_the_embedding_the_scoring_ones():
    model = seeded_model(TINY, 5)
    items = [b"def f(x):\n    return x\n" * 3, b"ab", bytes(range(40, 104))]  # 69, 2 and 64 bytes
    found = item_losses(model, items)
    for i, item in enumerate(items):
        chunks = tokenize(item, TINY.max_seq_len)
        with torch.no_grad():
            logits = model(torch.from_numpy(chunks.tokens), torch.from_numpy(chunks.positions)).double()
        logp = torch.log_softmax(logits, -1)
        targets = torch.from_numpy(chunks.targets)
        picked = logp.gather(-1, targets.clamp(max=logits.shape[-1] - 1)[..., None])[..., 0]
        mask = targets < 256  # bytes only: EOS and PAD targets are not predicted bytes
        assert int(mask.sum()) == len(item) - len(chunks.tokens)  # a chunk's first byte is not predicted
        expected = float(-(picked[mask]).sum() / mask.sum() / math.log(2))
        assert found.bpb[i] == pytest.approx(expected, rel=1e-5)
        with torch.no_grad():
            r = model.encode(torch.from_numpy(chunks.tokens), torch.from_numpy(chunks.positions))
        assert np.allclose(found.embeddings[i], r.mean(dim=(0, 1)).numpy(), atol=1e-5)


def test_a_model_that_predicts_nothing_costs_log2_of_the_vocabulary_per_byte():
    model = seeded_model(TINY, 6)
    with torch.no_grad():
        model.predictor.weight.zero_()
        model.predictor.bias.zero_()
    found = item_losses(model, [b"x" * 100, b"hello world"])
    assert found.bpb == pytest.approx([math.log2(TINY.vocab_size)] * 2, rel=1e-6)


# ------------------------------------------------------------------ the two definitions

def test_best_takes_each_items_best_model_and_routed_the_nearest_by_the_selection_key():
    # Three items. A is best on items 0 and 2, B on item 1; by embedding, every item under A
    # lies far from A's embedding, under B near B's: all three are routed to B.
    a = entry(A, [3.0, 6.0, 2.0], [(0.0, 1.0)] * 3, embedding=(1.0, 0.0))
    b = entry(B, [5.0, 4.0, 7.0], [(0.9, 0.1)] * 3, embedding=(1.0, 0.0))
    loss = network_loss([b, a], kinds=["code", "code", "docs"])
    assert loss.best_bpb == pytest.approx((3.0 + 4.0 + 2.0) / 3)
    assert loss.routed_bpb == pytest.approx((5.0 + 4.0 + 7.0) / 3)
    assert loss.best_by_kind == pytest.approx({"code": 3.5, "docs": 2.0})
    assert [(m.model_id, m.best_items, m.routed_items) for m in loss.models] == [(A, 2, 0), (B, 1, 3)]
    assert loss.models[0].bpb == pytest.approx(11 / 3) and loss.items == 3


def test_routing_weighs_the_distance_by_stake_as_target_selection_does():
    # Item under A at cosine distance 1 - cos(60°) = 0.5, under B at 1 - cos(45°) ≈ 0.293:
    # distance² / stake decides, so a stake 4x larger lets A win it (0.25/4 < 0.0858/1).
    c60, c45 = (math.cos(math.pi / 3), math.sin(math.pi / 3)), (math.cos(math.pi / 4), math.sin(math.pi / 4))
    for stake_a, chosen in ((1, B), (4, A)):
        a = entry(A, [1.0], [c60], stake=stake_a)
        b = entry(B, [2.0], [c45], stake=1)
        loss = network_loss([a, b])
        assert loss.routed_bpb == (1.0 if chosen == A else 2.0)
    # Ties (same distance, same stake): the lower model id, as the chain's selection.
    tied = network_loss([entry(B, [2.0], [c45]), entry(A, [1.0], [c45])])
    assert tied.routed_bpb == 1.0 and tied.best_bpb == 1.0


def test_one_model_is_the_network():
    only = network_loss([entry(C, [4.0, 6.0], [(1.0, 0.5), (0.2, 1.0)])])
    assert only.best_bpb == only.routed_bpb == 5.0
    with pytest.raises(ValueError):
        network_loss([])


def test_the_network_is_measured_from_the_chain_as_anyone_can(monkeypatch):
    # The simulated network's three genesis models, their weights fetched through the SDK;
    # each version scored once.
    from soma_ray.strategies.simulated import SimulatedClient, simulated_genesis

    config, blobs = simulated_genesis()
    client = SimulatedClient(config, blobs)
    measurer = HeldOut([Item("library", b"import os\nprint(os.getcwd())\n"), Item("docs", b"Hello, world.\n")])

    async def twice():
        return await measurer.measure(client), await measurer.measure(client)

    first, second = asyncio.run(twice())
    assert len(first.models) == 3 and first == second and measurer.scored == 3
    assert first.best_bpb <= first.routed_bpb and first.best_bpb <= min(m.bpb for m in first.models)
    assert set(first.best_by_kind) == {"library", "docs"}
