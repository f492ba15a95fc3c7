"""The V1 model every participant shares, its tokenizer, weight files and scoring function.

No Ray here: the scoring deployment and training build on this package.
"""

from soma_ray.model.commitments import (
    embedding_bytes,
    embedding_commitment,
    key_commitment,
    weights_commitment,
    weights_manifest,
)
from soma_ray.model.config import (
    CHUNKS_PER_BATCH,
    EOS_TOKEN,
    PAD_TOKEN,
    SIGREG_COEFFICIENT,
    VOCAB_SIZE,
    V1Config,
)
from soma_ray.model.encryption import decrypt_weights, encrypt_weights
from soma_ray.model.errors import (
    ConfigMismatchError,
    DecryptionError,
    EmptyDataError,
    MissingTensorError,
    ModelError,
    TensorDtypeError,
    TensorShapeError,
    UnexpectedTensorError,
    WeightsFormatError,
)
from soma_ray.model.network import V1Model
from soma_ray.model.scoring import (
    ModelScore,
    ScoreResult,
    cosine_distance,
    score,
    score_many,
    score_model,
)
from soma_ray.model.sigreg_stat import sigreg
from soma_ray.model.tokenizer import Chunks, tokenize
from soma_ray.model.weights import (
    GENESIS_WEIGHTS_SEED, genesis_model_weights, load_weights, read_weights_header, save_weights, seeded_model,
    weights_bytes,
)

__all__ = [
    "CHUNKS_PER_BATCH", "EOS_TOKEN", "PAD_TOKEN", "SIGREG_COEFFICIENT", "VOCAB_SIZE",
    "V1Config", "V1Model", "Chunks", "tokenize", "sigreg",
    "save_weights", "load_weights", "read_weights_header", "seeded_model", "weights_bytes",
    "GENESIS_WEIGHTS_SEED", "genesis_model_weights",
    "ModelScore", "ScoreResult", "score_model", "score_many", "score", "cosine_distance",
    "encrypt_weights", "decrypt_weights", "weights_manifest", "weights_commitment",
    "key_commitment", "embedding_commitment", "embedding_bytes",
    "ModelError", "ConfigMismatchError", "DecryptionError",
    "EmptyDataError", "MissingTensorError", "TensorDtypeError",
    "TensorShapeError", "UnexpectedTensorError", "WeightsFormatError",
]
