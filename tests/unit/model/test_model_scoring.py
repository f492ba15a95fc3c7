import numpy as np
import pytest
import torch
import torch.nn.functional as F
import arrgen
from soma_models.v1.configs import V1_PAD_TOKEN_ID
from soma_models.v1.tokenizer import tokenize as reference_tokenize
from soma_models.v1.torch import Model as ReferenceModel
from soma_models.v1.torch import ModelConfig as ReferenceConfig
from soma_models.v1.torch import SIGReg, SIGRegConfig

from model_builders import seeded_model, tiny_config
from soma_ray.model import EmptyDataError, V1Model, save_weights
from soma_ray.model.scoring import ModelScore, cosine_distance, score, score_many, score_model
from soma_ray.protocol.errors import NonFiniteEmbedding
from soma_ray.protocol.targets import ZeroEmbedding

S = 16


def test_known_answer_score():
    # spec/model.md: D=16, H=4, L=2, F=32, seed-42 weights, S=16, seed 0.
    result = score_model(seeded_model(tiny_config(), 42), b"Hello, SOMA! " * 3)
    assert result.loss == pytest.approx(8.687536, abs=1e-5)
    np.testing.assert_allclose(result.embedding[:4],
                               [1.71193635, 0.27038804, 0.10950031, 1.13153493], atol=1e-5)
    assert result.embedding.dtype == np.float32 and result.embedding.shape == (16,)


def spec_runner(model: ReferenceModel, data: bytes, seed: int) -> tuple[float, np.ndarray]:
    """spec/model.md's scoring, written on the reference package's own modules."""
    sequences = reference_tokenize(data, S)
    sig = SIGReg(SIGRegConfig())  # its coefficient is the spec's 0.02
    losses, embeddings = [], []
    for k, start in enumerate(range(0, len(sequences), 16)):
        batch = sequences[start:start + 16]
        tokens = torch.tensor([b.token_ids for b in batch])
        positions = torch.tensor([b.pos_ids for b in batch])
        targets = torch.tensor([b.targets for b in batch])
        with torch.no_grad():
            r = model.encode(tokens, positions)
            logits = model.predict(r)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 ignore_index=V1_PAD_TOKEN_ID, reduction="sum") / tokens.numel()
            noise = torch.from_numpy(arrgen.normal_array(seed + k, [r.shape[-1], 256], 0.0, 1.0))
            losses.append((ce + sig.compute(r, noise)).item())
            embeddings.append(r.mean(dim=(0, 1)).numpy())
    return float(np.mean(losses)), np.mean(embeddings, axis=0)


@pytest.fixture(scope="module")
def model_pair(tmp_path_factory):
    torch.manual_seed(11)
    ours = V1Model(tiny_config()).eval()
    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    save_weights(ours, path)
    config = ReferenceConfig(dropout_rate=0.0, embedding_dim=16, pwff_hidden_dim=32,
                             num_layers=2, num_heads=4)
    return ours, ReferenceModel.load(path, config).eval()


@pytest.mark.parametrize("size", [1, S, S + 1, 16 * S, 16 * S + 1, 40 * S + 5])
def test_score_model_equals_a_spec_runner_on_the_reference_modules(model_pair, size):
    ours, theirs = model_pair
    data = bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8))
    expected_loss, expected_embedding = spec_runner(theirs, data, seed=5)
    result = score_model(ours, data, seed=5)
    assert result.loss == pytest.approx(expected_loss, abs=1e-5, rel=1e-5)
    np.testing.assert_allclose(result.embedding, expected_embedding, atol=1e-5, rtol=1e-5)


def test_seed_changes_the_loss_but_not_the_embedding(model_pair):
    ours, _ = model_pair
    a, b = score_model(ours, b"some data" * 5, seed=0), score_model(ours, b"some data" * 5, seed=1)
    assert a.loss != b.loss
    np.testing.assert_array_equal(a.embedding, b.embedding)


def test_score_many_equals_score_model_item_by_item(model_pair):
    ours, _ = model_pair
    rng = np.random.default_rng(2)
    items = [bytes(rng.integers(0, 256, n, dtype=np.uint8))
             for n in (1, 7, S, S + 1, 17 * S + 3, 3, 33 * S)]
    singles = [score_model(ours, item, seed=3) for item in items]
    # A pass size that is not a multiple of 16 chunks mixes items and batch indices per pass.
    for tokens_per_pass in (5 * S, 1000 * S):
        many = score_many(ours, items, seed=3, tokens_per_pass=tokens_per_pass)
        assert len(many) == len(items)
        for got, want in zip(many, singles):
            assert got.loss == pytest.approx(want.loss, abs=1e-6, rel=1e-6)
            np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-6, rtol=1e-6)


def test_score_many_over_several_models_gives_one_list_per_model(model_pair):
    ours, _ = model_pair
    other = seeded_model(tiny_config(), 42)
    per_model = score_many([ours, other], [b"abc", b"hello world"])
    assert [len(x) for x in per_model] == [2, 2]
    assert score_many(ours, []) == [] and score_many([ours, other], []) == [[], []]
    assert per_model[1][1].loss == pytest.approx(score_model(other, b"hello world").loss, rel=1e-6)


def test_autocast_scoring_is_close_but_not_within_the_audit_tolerance(model_pair):
    # bf16 autocast on CPU stands in for an accelerator's: the forward pass runs in bf16, the
    # statistics and the results stay float32. The numbers stay close (1e-2) but not within the
    # audit's tolerance (2e-5): good for a miner's search, never for what it reveals.
    from soma_ray.node.audit import within_tolerance

    ours, _ = model_pair
    rng = np.random.default_rng(4)
    items = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in (1, S + 3, 20 * S)]
    exact = score_many(ours, items)
    fast = score_many(ours, items, autocast=torch.bfloat16)
    assert fast[1].loss != exact[1].loss
    for got, want in zip(fast, exact):
        assert got.embedding.dtype == np.float32
        assert got.loss == pytest.approx(want.loss, abs=1e-2, rel=1e-2)
        np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-2, rtol=1e-2)
    assert not all(within_tolerance(g.embedding, w.embedding) for g, w in zip(fast, exact))
    single = score_model(ours, items[1], autocast=torch.bfloat16)
    assert single.loss == pytest.approx(fast[1].loss, rel=1e-6)
    np.testing.assert_allclose(single.embedding, fast[1].embedding, rtol=1e-6, atol=1e-6)


def test_canonical_scoring_pins_float32_matmul_precision_highest(model_pair):
    # A process that asked for 'medium' (bf16 matmuls on AVX512-BF16/AMX CPUs, TF32 on GPUs) still
    # scores the canonical float32 numbers, and gets its own setting back.
    from soma_ray.model.scoring import canonical_precision

    ours, _ = model_pair
    items = [b"the canonical numbers " * 50, bytes(range(256)) * 5]
    exact = score_many(ours, items)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        again = score_many(ours, items)
        assert torch.get_float32_matmul_precision() == "medium"
        with canonical_precision():
            assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)
    for got, want in zip(again, exact):
        assert got.loss == want.loss
        np.testing.assert_array_equal(got.embedding, want.embedding)


def test_score_picks_the_lowest_loss_and_measures_distance_to_the_target(model_pair):
    ours, _ = model_pair
    other = seeded_model(tiny_config(), 42)
    data = b"Hello, SOMA! " * 3
    target = np.ones(16, dtype=np.float32)
    result = score([other, ours, other], data, target)
    losses = [score_model(m, data).loss for m in (other, ours, other)]
    assert result.losses == pytest.approx(losses)
    assert result.winner == int(np.argmin(losses))
    assert result.loss == min(losses)
    e = result.embedding.astype(np.float64)
    assert result.distance == pytest.approx(1 - e.sum() / (np.linalg.norm(e) * 4), abs=1e-8)


def test_a_model_with_a_nan_loss_never_wins(model_pair):
    ours, _ = model_pair
    broken = seeded_model(tiny_config(), 42)
    with torch.no_grad():
        broken.predictor.bias.fill_(float("nan"))
    result = score([broken, ours], b"xyz", np.ones(16, dtype=np.float32))
    assert np.isnan(result.losses[0])
    assert (result.winner, result.loss) == (1, result.losses[1])


def test_a_callers_autocast_does_not_change_the_canonical_score(model_pair):
    ours, _ = model_pair
    data = bytes(range(200)) * 3
    want = score_model(ours, data)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = score_model(ours, data)
    assert got.loss == want.loss
    np.testing.assert_array_equal(got.embedding, want.embedding)


def test_score_ties_go_to_the_first_model(model_pair):
    ours, _ = model_pair
    assert score([ours, ours], b"xyz", np.ones(16, dtype=np.float32)).winner == 0


def test_cosine_distance_values_and_errors():
    a = np.array([1, 0, 0], dtype=np.float32)
    assert cosine_distance(a, a) == 0.0
    assert cosine_distance(a, -a) == 2.0
    assert cosine_distance(a, np.array([0, 3, 0], dtype=np.float32)) == 1.0
    with pytest.raises(ZeroEmbedding):
        cosine_distance(a, np.zeros(3, dtype=np.float32))
    with pytest.raises(NonFiniteEmbedding) as err:
        cosine_distance(a, np.array([1, np.nan, 0], dtype=np.float32))
    assert err.value.index == 1


def test_nan_target_embedding_is_an_error(model_pair):
    ours, _ = model_pair
    target = np.ones(16, dtype=np.float32)
    target[3] = np.nan
    with pytest.raises(NonFiniteEmbedding):
        score([ours], b"abc", target)


def test_empty_data_is_an_error_naming_the_item(model_pair):
    ours, _ = model_pair
    with pytest.raises(EmptyDataError):
        score_model(ours, b"")
    with pytest.raises(EmptyDataError) as err:
        score_many(ours, [b"a", b"bc", b""])
    assert err.value.item == 2


def test_scoring_leaves_a_training_model_in_training_mode(model_pair):
    ours, _ = model_pair
    ours.train()
    try:
        assert isinstance(score_model(ours, b"abc"), ModelScore)
        assert ours.training
    finally:
        ours.eval()
