"""`soma_ray` exports what a participant uses, and importing it stays light."""
import subprocess
import sys

import soma_ray
from soma_ray import wire
from soma_ray.protocol import errors


def test_every_exported_name_resolves_to_the_library_object():
    for name in soma_ray.__all__:
        assert getattr(soma_ray, name) is not None, name
    assert soma_ray.errors is errors and soma_ray.ProtocolError is errors.ProtocolError
    assert soma_ray.TargetView is wire.TargetView and soma_ray.ModelManifest is wire.ModelManifest
    assert all(issubclass(getattr(soma_ray, name), errors.ProtocolError)
               for name in soma_ray.__all__ if hasattr(errors, name) and name != "ProtocolError")
    assert set(soma_ray.__all__) <= set(dir(soma_ray))


def test_an_unknown_name_is_an_attribute_error_and_submodules_still_import():
    try:
        soma_ray.not_a_name
    except AttributeError as error:
        assert "not_a_name" in str(error)
    else:
        raise AssertionError("no AttributeError")
    from soma_ray import metrics  # a submodule, not an export

    assert metrics.__name__ == "soma_ray.metrics"


def test_import_loads_nothing_and_the_sdk_loads_no_ray_or_torch():
    program = (
        "import sys\n"
        "sys.modules['ray'] = None; sys.modules['torch'] = None\n"
        "before = set(sys.modules)\n"
        "import soma_ray\n"
        "loaded = set(sys.modules) - before\n"
        "assert not [m for m in loaded if m.split('.')[0] in ('numpy', 'msgspec', 'nacl')\n"
        "            or m.startswith('soma_ray.')], loaded\n"
        "from soma_ray import SomaClient, Keypair, FinalityTimeout, errors, TargetView\n"
        "for name in soma_ray.__all__: getattr(soma_ray, name)\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=120)
