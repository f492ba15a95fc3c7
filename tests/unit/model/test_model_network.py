import numpy as np
import pytest
import torch

from model_builders import seeded_model
from soma_ray.model import V1Config, V1Model


def test_known_answer_representations_and_logits():
    # spec/model.md known answers: D=4, H=2, L=2, F=8, vocab 4, seed 42, arange positions.
    config = V1Config(embedding_dim=4, num_heads=2, num_layers=2, pwff_hidden_dim=8,
                      vocab_size=4, max_seq_len=4)
    model = seeded_model(config, 42)
    with torch.no_grad():
        r = model.encode(torch.tensor([[0, 1, 2, 3]]), torch.arange(4).unsqueeze(0))
        logits = model.predict(r)
    np.testing.assert_allclose(r[0, 0].numpy(), [2.09210730, 0.69636524, 1.51327145, 2.31296515],
                               atol=1e-5)
    np.testing.assert_allclose(r[0, 3].numpy(), [1.96223700, 0.77187395, 1.54670000, 2.34615612],
                               atol=1e-5)
    np.testing.assert_allclose(logits[0, 0].numpy(),
                               [1.89312398, -3.37666154, -5.06565857, -9.11204624], atol=1e-5)


def test_causal_and_chunk_independent():
    # A token's representation depends only on earlier tokens of its own chunk.
    model = V1Model(V1Config(embedding_dim=16, num_layers=2, num_heads=4, pwff_hidden_dim=32))
    model.eval()
    tokens = torch.randint(0, 256, (2, 8))
    positions = torch.arange(16).view(2, 8)
    with torch.no_grad():
        full = model.encode(tokens, positions)
        changed = tokens.clone()
        changed[0, 5:] = 7
        prefix = model.encode(changed, positions)
        single = model.encode(tokens[1:], positions[1:])
    torch.testing.assert_close(prefix[0, :5], full[0, :5])
    assert not torch.allclose(prefix[0, 5:], full[0, 5:])
    torch.testing.assert_close(single[0], full[1], atol=1e-6, rtol=1e-5)


def test_positions_matter_relatively():
    # RoPE depends on offsets between positions: a shift changes nothing, a gap does.
    model = V1Model(V1Config(embedding_dim=16, num_layers=1, num_heads=2, pwff_hidden_dim=32))
    tokens = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        a = model.encode(tokens, torch.arange(6).unsqueeze(0))
        shifted = model.encode(tokens, torch.arange(100, 106).unsqueeze(0))
        gapped = model.encode(tokens, torch.tensor([[0, 1, 2, 9, 10, 11]]))
    torch.testing.assert_close(shifted, a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gapped[:, :3], a[:, :3])
    assert not torch.allclose(gapped[:, 3:], a[:, 3:], atol=1e-3)


def test_fresh_initialisation_follows_pytorch_defaults():
    torch.manual_seed(0)
    config = V1Config(embedding_dim=64, num_layers=1, num_heads=4, pwff_hidden_dim=256)
    model = V1Model(config)
    emb = model.embedding.weight
    assert abs(emb.mean().item()) < 0.05 and abs(emb.std().item() - 1.0) < 0.05
    inner = model.encoder.layers[0].pwff.linear_inner
    bound = 1 / np.sqrt(64)
    assert inner.weight.shape == (64, 256)
    assert inner.weight.abs().max().item() <= bound and inner.weight.abs().max().item() > 0.9 * bound
    assert inner.bias.abs().max().item() <= bound
    outer_bound = 1 / np.sqrt(256)
    assert model.encoder.layers[0].pwff.linear_outer.weight.abs().max().item() <= outer_bound
    norm = model.encoder.layers[0].norm_1
    assert torch.equal(norm.gamma, torch.ones(64)) and torch.equal(norm.beta, torch.zeros(64))


def test_parameter_count_of_full_size():
    with torch.device("meta"):
        model = V1Model(V1Config())
    count = sum(p.numel() for p in model.parameters())
    assert 1.20e9 < count < 1.22e9  # spec: about 1.21 B
    assert len(model.state_dict()) == 389


@pytest.mark.parametrize("field,value", [("embedding_dim", 10), ("num_layers", 0),
                                         ("dropout_rate", 1.0)])
def test_bad_config_is_rejected(field, value):
    sizes = dict(embedding_dim=16, num_layers=1, num_heads=4, pwff_hidden_dim=32)
    with pytest.raises(ValueError, match=field):
        V1Config(**{**sizes, field: value})


def test_training_loss_reaches_every_parameter():
    # Training (soma_ray/training) differentiates CE + 0.02·sigreg through the model.
    import torch.nn.functional as F
    from soma_ray.model import SIGREG_COEFFICIENT, sigreg

    config = V1Config(embedding_dim=16, num_layers=2, num_heads=4, pwff_hidden_dim=32,
                      dropout_rate=0.1)
    model = V1Model(config).train()
    tokens = torch.randint(0, 256, (2, 8))
    r = model.encode(tokens, torch.arange(16).view(2, 8))
    ce = F.cross_entropy(model.predict(r).flatten(0, 1), tokens.roll(-1, 1).flatten())
    loss = ce + SIGREG_COEFFICIENT * sigreg(r, torch.randn(16, 256))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.embedding.weight.grad.abs().sum() > 0


def test_dropout_only_in_training_mode():
    config = V1Config(embedding_dim=16, num_layers=1, num_heads=2, pwff_hidden_dim=32,
                      dropout_rate=0.5)
    model = V1Model(config)
    tokens, positions = torch.randint(0, 256, (1, 8)), torch.arange(8).unsqueeze(0)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model.encode(tokens, positions), model.encode(tokens, positions))
        model.eval()
        assert torch.equal(model.encode(tokens, positions), model.encode(tokens, positions))
