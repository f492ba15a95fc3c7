"""Storage errors stay in the validator's process, yet pickle with their fields (Ray sends an
actor's exception, e.g. one raised while opening its store, to the caller)."""
import pickle

import pytest

from soma_ray.protocol.errors import ProtocolError
from soma_ray.storage import errors

ERRORS = [
    errors.StoreInUse("/data/db"), errors.NotInitialized("/data/db"), errors.GenesisMismatch(b"\x01", b"\x02"),
    errors.SequenceGap(4, 6), errors.ConflictingCheckpoint(3, 10, 11), errors.CheckpointNotFound(9, None),
    errors.InvalidStateKey(0, 511), errors.StoreFull(1 << 20, 1 << 30), errors.InvalidEvidence(31, 0),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_storage_errors_pickle_with_their_fields(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and vars(copy) == vars(error)
    assert isinstance(copy, errors.StorageError) and not isinstance(copy, ProtocolError)


def test_every_storage_error_is_covered():
    covered = {type(e) for e in ERRORS}
    assert covered == {cls for cls in errors.StorageError.__subclasses__() if cls.__module__ == errors.__name__}
