"""The V1 model every participant shares, its tokenizer, weight files and scoring function.

No Ray here: the scoring deployment and training build on this package.
"""

from soma_ray.model.config import (
    CHUNKS_PER_BATCH,
    EOS_TOKEN,
    PAD_TOKEN,
    SIGREG_COEFFICIENT,
    VOCAB_SIZE,
    V1Config,
)
from soma_ray.model.errors import (
    ConfigMismatchError,
    DecryptionError,
    EmbeddingShapeError,
    EmptyDataError,
    MissingTensorError,
    ModelError,
    NonFiniteEmbeddingError,
    TensorDtypeError,
    TensorShapeError,
    UnexpectedTensorError,
    WeightsFormatError,
    ZeroVectorError,
)
from soma_ray.model.network import V1Model
from soma_ray.model.sigreg import sigreg
from soma_ray.model.tokenizer import Chunks, tokenize
from soma_ray.model.weights import load_weights, save_weights

__all__ = [
    "CHUNKS_PER_BATCH", "EOS_TOKEN", "PAD_TOKEN", "SIGREG_COEFFICIENT", "VOCAB_SIZE",
    "V1Config", "V1Model", "Chunks", "tokenize", "sigreg", "save_weights", "load_weights",
    "ModelError", "ConfigMismatchError", "DecryptionError", "EmbeddingShapeError",
    "EmptyDataError", "MissingTensorError", "NonFiniteEmbeddingError", "TensorDtypeError",
    "TensorShapeError", "UnexpectedTensorError", "WeightsFormatError", "ZeroVectorError",
]
