"""Builders shared by the model tests."""

import arrgen
import torch

from soma_ray.model import V1Config, V1Model

# The reference network's seed scheme for whole test models (spec/model.md, known answers):
# per layer l the offsets below are added to seed + l.
_LAYER_SEED_OFFSETS = {
    "norm_1.gamma": 1, "norm_1.beta": 2,
    "attention.query.weight": 3, "attention.query.bias": 4,
    "attention.key.weight": 5, "attention.key.bias": 6,
    "attention.value.weight": 7, "attention.value.bias": 8,
    "attention.output.weight": 9, "attention.output.bias": 10,
    "norm_2.gamma": 11, "norm_2.beta": 12,
    "pwff.linear_inner.weight": 13, "pwff.linear_inner.bias": 14,
    "pwff.linear_outer.weight": 15, "pwff.linear_outer.bias": 16,
}
_TOP_SEED_OFFSETS = {"final_norm.gamma": 100, "final_norm.beta": 200,
                     "embedding.weight": 250, "predictor.weight": 300, "predictor.bias": 400}


def seeded_model(config: V1Config, seed: int) -> V1Model:
    """A V1Model whose every tensor is arrgen.normal_array(seed scheme, stored shape, 0, 1)."""
    model = V1Model(config).eval()
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("encoder.layers."):
            _, _, layer, suffix = key.split(".", 3)
            tensor_seed = seed + int(layer) + _LAYER_SEED_OFFSETS[suffix]
        else:
            tensor_seed = seed + _TOP_SEED_OFFSETS[key]
        state[key] = torch.from_numpy(
            arrgen.normal_array(tensor_seed, list(tensor.shape), 0.0, 1.0))
    model.load_state_dict(state, strict=True)
    return model


def tiny_config(**overrides) -> V1Config:
    """D=16, H=4, L=2, F=32, S=16: the spec's scoring known-answer size."""
    sizes = dict(embedding_dim=16, num_layers=2, num_heads=4, pwff_hidden_dim=32, max_seq_len=16)
    return V1Config(**{**sizes, **overrides})
