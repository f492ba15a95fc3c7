"""The V1 transformer (spec/model.md, "Architecture").

Parameters are stored exactly as the safetensors exchange layout names and shapes them
(Linear weights [in, out], LayerNorm gamma/beta), so `state_dict()` *is* the weights file and
loading needs neither renaming nor transposed copies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from soma_ray.model.config import V1Config

LAYER_NORM_EPS = 1e-5


class Dense(nn.Module):
    """Affine map with the weight kept as [in, out], the layout of the weights file."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # PyTorch's nn.Linear default, as the reference initialises: U(±1/sqrt(fan_in)).
        bound = 1.0 / math.sqrt(self.weight.shape[0])
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.linear takes [out, in]; the transposed view costs no copy.
        return F.linear(x, self.weight.t(), self.bias)


class LayerNorm(nn.Module):
    """LayerNorm (biased variance, eps 1e-5) with the file's parameter names gamma/beta."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.gamma.shape, self.gamma, self.beta, LAYER_NORM_EPS)


def rotary_tables(positions: torch.Tensor, head_dim: int, max_wavelength: float,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos φ and sin φ, shape [B, S, 1, head_dim/2], φ = pos / max_wavelength^(2i/head_dim)."""
    fraction = 2 * torch.arange(head_dim // 2, dtype=dtype, device=positions.device) / head_dim
    angles = positions.to(dtype).unsqueeze(-1) / (max_wavelength ** fraction)
    angles = angles.unsqueeze(-2)
    return torch.cos(angles), torch.sin(angles)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half convention, on x [B, S, H, head_dim]."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary Q/K and fused (SDPA) attention."""

    def __init__(self, config: V1Config):
        super().__init__()
        dim = config.embedding_dim
        self.num_heads = config.num_heads
        self.dropout_rate = config.dropout_rate
        self.query = Dense(dim, dim)
        self.key = Dense(dim, dim)
        self.value = Dense(dim, dim)
        self.output = Dense(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        batch, seq, dim = x.shape
        heads = (batch, seq, self.num_heads, dim // self.num_heads)
        q = rotate(self.query(x).view(heads), *rope).transpose(1, 2)
        k = rotate(self.key(x).view(heads), *rope).transpose(1, 2)
        v = self.value(x).view(heads).transpose(1, 2)
        dropout = self.dropout_rate if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.output(out.transpose(1, 2).reshape(batch, seq, dim))


class FeedForward(nn.Module):
    """Linear(D→F), exact GELU, Linear(F→D)."""

    def __init__(self, config: V1Config):
        super().__init__()
        self.linear_inner = Dense(config.embedding_dim, config.pwff_hidden_dim)
        self.linear_outer = Dense(config.pwff_hidden_dim, config.embedding_dim)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_outer(self.dropout(F.gelu(self.linear_inner(x))))


class Layer(nn.Module):
    """Pre-norm block: x + MHA(LN1(x)), then x + FFN(LN2(x))."""

    def __init__(self, config: V1Config):
        super().__init__()
        self.norm_1 = LayerNorm(config.embedding_dim)
        self.attention = Attention(config)
        self.norm_2 = LayerNorm(config.embedding_dim)
        self.pwff = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm_1(x), rope))
        return x + self.dropout(self.pwff(self.norm_2(x)))


class Encoder(nn.Module):
    def __init__(self, config: V1Config):
        super().__init__()
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layers))


class V1Model(nn.Module):
    """The shared V1 model: `encode` gives representations R, `predict` the logits."""

    def __init__(self, config: V1Config):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)  # N(0, 1) init
        self.encoder = Encoder(config)
        self.final_norm = LayerNorm(config.embedding_dim)
        self.predictor = Dense(config.embedding_dim, config.vocab_size)

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def encode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Representations [B, S, D] of tokens [B, S] at the tokenizer's positions [B, S]."""
        x = self.embedding(tokens)
        rope = rotary_tables(positions, self.config.head_dim, self.config.max_wavelength,
                             x.dtype)
        for layer in self.encoder.layers:
            x = layer(x, rope)
        return self.final_norm(x)

    def predict(self, representations: torch.Tensor) -> torch.Tensor:
        """Logits [..., vocab_size] from representations [..., D]."""
        return self.predictor(representations)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.predict(self.encode(tokens, positions))
