"""Training V1 weights on a byte corpus with Ray Train (docs/training.md).

`train(TrainConfig(...), corpus)` runs a TorchTrainer job and returns a `TrainResult`: the
weights file in the reference layout and the held-out scoring loss before and after.

The Ray Train job (`train`, `TrainResult`, `prepare_corpus`: soma_ray/training/job.py) is
imported on first use, so that the parts free of Ray (the step loop, `from_network`, the
trainers' in-process fine-tune) can be imported where Ray is not (`soma simulate`).
"""

from soma_ray.training.config import TrainConfig
from soma_ray.training.corpus import (CorpusSplit, Document, read_corpus, split_corpus,
                                      stdlib_source_files)
from soma_ray.training.errors import (CorpusReadError, CorpusTooSmallError, EmptyCorpusError,
                                      InitWeightsError, TrainConfigError, TrainingError)
from soma_ray.training.schedule import learning_rate

_FROM_JOB = ("TrainResult", "prepare_corpus", "train")

__all__ = [
    "TrainConfig", "TrainResult", "train", "prepare_corpus", "read_corpus", "split_corpus",
    "stdlib_source_files", "CorpusSplit", "Document", "learning_rate", "TrainingError",
    "EmptyCorpusError", "CorpusReadError", "CorpusTooSmallError", "InitWeightsError",
    "TrainConfigError",
]


def __getattr__(name: str):
    if name in _FROM_JOB:
        from soma_ray.training import job

        return getattr(job, name)
    raise AttributeError(f"module 'soma_ray.training' has no attribute {name!r}")
