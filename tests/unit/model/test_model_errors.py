"""Model errors stay in the process that reads the weights, yet pickle with their fields."""
import pickle

import pytest

from soma_ray.model import errors
from soma_ray.protocol.errors import ProtocolError

ERRORS = [
    errors.EmptyDataError(), errors.EmptyDataError(2), errors.WeightsFormatError("truncated header"),
    errors.MissingTensorError("embed"), errors.UnexpectedTensorError(["a", "b"]),
    errors.TensorShapeError("embed", (264, 64), (264, 32)), errors.TensorDtypeError("embed", "F32", "F16"),
    errors.ConfigMismatchError("dim", 64, 32), errors.DecryptionError("bad tag", 4096),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_model_errors_pickle_with_their_fields(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and vars(copy) == vars(error)
    assert isinstance(copy, errors.ModelError) and not isinstance(copy, ProtocolError)


def test_every_model_error_is_covered():
    assert {type(e) for e in ERRORS} == {cls for cls in errors.ModelError.__subclasses__() if cls.__module__ == errors.__name__}
