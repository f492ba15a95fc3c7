"""V1 architecture constants and the model configuration (spec/model.md)."""

from __future__ import annotations

import dataclasses

from soma_ray.protocol.params import LOCALNET_EMBEDDING_DIM

PAD_TOKEN = 256
EOS_TOKEN = 257
VOCAB_SIZE = 264  # bytes 0-255, PAD, EOS, 258-263 unused
CHUNKS_PER_BATCH = 16  # chunks per scoring batch

SIGREG_SLICES = 256
SIGREG_T_MAX = 3.0
SIGREG_POINTS = 17
SIGREG_COEFFICIENT = 0.02


@dataclasses.dataclass(frozen=True)
class V1Config:
    """Sizes of a V1 model; field names follow the reference package's `ModelConfig`.

    `V1Config()` is the production size (about 1.21 B parameters).
    """

    embedding_dim: int = 2048
    num_layers: int = 24
    num_heads: int = 8
    pwff_hidden_dim: int = 8192
    vocab_size: int = VOCAB_SIZE
    max_seq_len: int = 1024
    max_wavelength: float = 10_000.0
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "num_layers", "num_heads", "pwff_hidden_dim",
                     "vocab_size", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"V1Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.embedding_dim % self.num_heads or (self.embedding_dim // self.num_heads) % 2:
            raise ValueError(
                f"embedding_dim {self.embedding_dim} must split into {self.num_heads} heads "
                "of even size (rotary embedding rotates half-vectors)")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")

    @classmethod
    def small(cls) -> V1Config:
        """The localnet size, CPU-friendly: D=64 (the localnet `embedding_dim` parameter),
        L=2, H=4, F=256, S=1024 (about 0.13 M parameters)."""
        return cls(embedding_dim=LOCALNET_EMBEDDING_DIM, num_layers=2, num_heads=4,
                   pwff_hidden_dim=4 * LOCALNET_EMBEDDING_DIM)

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads
