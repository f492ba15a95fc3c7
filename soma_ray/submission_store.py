"""What the reveal of a submission needs, kept between `soma submit commit` and `soma submit
reveal`: the secret nonce and the claims committed to (`$SOMA_HOME/submissions/<id>.json`, 0600
in a 0700 directory, as the model key store keeps a model's key)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from soma_ray.keyfile import read_private, write_private

STORE_DIR = "submissions"
MAX_RECORD_BYTES = 1 << 20


class SubmissionStoreError(ValueError):
    pass


@dataclass(frozen=True)
class SubmissionSecret:
    submission_id: bytes
    target_id: bytes
    model_id: bytes
    data_hash: bytes
    data_size: int
    embedding: bytes  # little-endian float32
    loss_score: int  # fixed point, as committed
    nonce: bytes


def store_path(submission_id: bytes, home: Path | None = None) -> Path:
    if home is None:
        from soma_ray.cluster import soma_home

        home = soma_home()
    return Path(home) / STORE_DIR / f"0x{bytes(submission_id).hex()}.json"


def save_submission(secret: SubmissionSecret, home: Path | None = None) -> Path:
    path = store_path(secret.submission_id, home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {name: ("0x" + value.hex() if isinstance(value, bytes) else value)
              for name, value in secret.__dict__.items()}
    write_private(path, (json.dumps(record, indent=1) + "\n").encode())
    return path


def load_submission(submission_id: bytes, home: Path | None = None) -> SubmissionSecret:
    path = store_path(submission_id, home)
    try:
        record = json.loads(read_private(path, MAX_RECORD_BYTES))
    except FileNotFoundError:
        raise SubmissionStoreError(f"no record {path}: the reveal needs the nonce `soma submit commit` "
                                   "printed (give --nonce, with the same --data and --model)") from None
    except (OSError, ValueError) as error:
        raise SubmissionStoreError(f"{path}: {error}") from None
    return SubmissionSecret(**{name: bytes.fromhex(value[2:]) if isinstance(value, str) else value
                               for name, value in record.items()})
