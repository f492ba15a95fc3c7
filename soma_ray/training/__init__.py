"""Training V1 weights on a byte corpus with Ray Train (docs/training.md).

`train(TrainConfig(...), corpus)` runs a TorchTrainer job and returns a `TrainResult`: the
weights file in the reference layout and the held-out scoring loss before and after.
"""

from soma_ray.training.config import TrainConfig
from soma_ray.training.corpus import (CorpusSplit, Document, read_corpus, split_corpus,
                                      stdlib_source_files)
from soma_ray.training.errors import (CorpusReadError, CorpusTooSmallError, EmptyCorpusError,
                                      InitWeightsError, TrainConfigError, TrainingError)
from soma_ray.training.job import TrainResult, prepare_corpus, train
from soma_ray.training.schedule import learning_rate

__all__ = [
    "TrainConfig", "TrainResult", "train", "prepare_corpus", "read_corpus", "split_corpus",
    "stdlib_source_files", "CorpusSplit", "Document", "learning_rate", "TrainingError",
    "EmptyCorpusError", "CorpusReadError", "CorpusTooSmallError", "InitWeightsError",
    "TrainConfigError",
]
