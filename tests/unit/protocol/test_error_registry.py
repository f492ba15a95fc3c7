"""The one registry of typed errors (soma_ray.protocol.errors): every code decodes, in any process.

A client decodes an error (from effects or a validator's refusal) by code alone: it must not
matter which modules the client imported, and no two classes may share a code.
"""
import importlib
import pathlib
import pickle
import pkgutil
import subprocess
import sys
import types

import msgspec
import pytest

from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.errors import (
    ExecutionError, ProtocolError, UnknownProtocolError, error_from_struct, register, registry,
)

ROOT = pathlib.Path(__file__).resolve().parents[3]
REGISTRY = registry()
# Every kind of field value an error carries, in turn.
SAMPLES = [7, "some text", b"\x00\xff", True, None, -3, False, 2**64 - 1, "", b""]


def sample(cls: type[ProtocolError]) -> ProtocolError:
    """An instance of `cls` whose fields take the sample values in turn (a value of each kind)."""
    offset = sum(map(ord, cls.__name__))
    return cls(**{name: SAMPLES[(offset + i) % len(SAMPLES)] for i, name in enumerate(cls.fields)})


def exact(values: dict) -> list:
    """Values with their types, so True and 1, or b"" and "", do not compare equal."""
    return sorted((name, type(value), value) for name, value in values.items())


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _import_everything() -> None:
    """Import every module of the packages that could define an error a client receives."""
    for name in ("soma_ray", "actors", "serve"):
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, name + "."):
            importlib.import_module(module.name)


def test_the_registry_names_each_class_by_its_code():
    assert len(REGISTRY) > 50
    for code, cls in REGISTRY.items():
        assert issubclass(cls, ProtocolError) and cls.__name__ == code
        assert cls.__module__ == errors.__name__
        assert getattr(importlib.import_module(cls.__module__), code) is cls


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_every_registered_code_decodes_with_its_fields(code):
    error = sample(REGISTRY[code])
    struct = decode(encode(error.to_struct()), ExecutionError)
    decoded = error_from_struct(struct)
    assert type(decoded) is REGISTRY[code] and decoded == error
    assert exact(decoded.values()) == exact(error.values())
    assert decoded.message == error.message and str(decoded) == error.message


def test_errors_raised_outside_errors_py_are_the_registered_classes():
    from soma_ray.consensus import errors as consensus_errors
    from soma_ray.protocol import submissions, targets

    assert targets.ZeroEmbedding is REGISTRY["ZeroEmbedding"]
    assert targets.ModelSetMismatch is REGISTRY["ModelSetMismatch"]
    assert submissions.TargetNotFilled is REGISTRY["TargetNotFilled"]
    for code in ("SafetyStateAhead", "CheckpointChainBroken", "ValueNotCertified"):
        assert getattr(consensus_errors, code) is REGISTRY[code]
    assert issubclass(REGISTRY["ValueNotCertified"], REGISTRY["InvalidCertificate"])


def test_every_protocol_error_anywhere_is_registered():
    """A ProtocolError defined next to the code that raises it would decode only in a process that
    imported that module: each must be in protocol/errors.py."""
    _import_everything()
    strays = {
        f"{cls.__module__}.{cls.__qualname__}": cls
        for cls in _subclasses(ProtocolError) if REGISTRY.get(cls.__name__) is not cls
    }
    unexpected = sorted(strays)
    assert not unexpected, (
        f"{unexpected}: define these in soma_ray/protocol/errors.py (with _error or @register) and "
        "import them from there"
    )


def test_a_code_cannot_be_registered_twice():
    before = dict(REGISTRY)
    impostor = type("BadNonce", (ProtocolError,), {"fields": ("x",), "template": "{x}"})
    with pytest.raises(TypeError, match="error code BadNonce is taken by soma_ray.protocol.errors.BadNonce"):
        register(impostor)
    with pytest.raises(TypeError, match="only ProtocolError subclasses"):
        register(ValueError)
    assert dict(REGISTRY) == before and REGISTRY["BadNonce"] is errors.BadNonce
    with pytest.raises(TypeError):  # read-only: only `register` adds
        REGISTRY["BadNonce"] = impostor


def test_an_unknown_code_or_field_set_decodes_as_unknown_protocol_error():
    unknown = error_from_struct(ExecutionError(code="FromTheFuture", fields=[("a", 1), ("b", b"\x01")]))
    assert type(unknown) is UnknownProtocolError
    assert unknown.error_code == "FromTheFuture" and unknown.detail == "[('a', 1), ('b', b'\\x01')]"
    assert "FromTheFuture" in unknown.message
    for fields in ([("expected", 1)], [("expected", 1), ("got", 2), ("extra", 3)]):
        other = error_from_struct(ExecutionError(code="BadNonce", fields=fields))
        assert type(other) is UnknownProtocolError and other.error_code == "BadNonce"


_CHILD = """
import sys
import msgspec
from soma_ray.protocol.errors import ExecutionError, error_from_struct

structs = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=list[ExecutionError])
decoded = [error_from_struct(struct) for struct in structs]
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("soma_ray", "actors", "serve"))
heavy = sorted(name for name in sys.modules if name.split(".")[0] in (
    "ray", "numpy", "torch", "aiohttp", "fastapi", "starlette", "lmdb", "nacl", "arrgen"))
sys.stdout.buffer.write(msgspec.msgpack.encode(
    [loaded, heavy, [[type(e).__name__, type(e).__module__, e.to_struct(), e.message] for e in decoded]]))
"""


def test_a_process_that_imports_only_errors_py_decodes_every_code():
    sent = [sample(cls) for cls in REGISTRY.values()]
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], input=msgspec.msgpack.encode([e.to_struct() for e in sent]),
        capture_output=True, cwd=ROOT, timeout=120, check=True,
    )
    loaded, heavy, decoded = msgspec.msgpack.decode(
        result.stdout, type=tuple[list[str], list[str], list[tuple[str, str, ExecutionError, str]]]
    )
    assert set(loaded) == {"soma_ray", "soma_ray.protocol", "soma_ray.protocol.errors"}
    assert not heavy
    assert [(name, module) for name, module, _, _ in decoded] == [
        (type(e).__name__, type(e).__module__) for e in sent
    ]
    assert [struct for _, _, struct, _ in decoded] == [e.to_struct() for e in sent]
    assert [message for _, _, _, message in decoded] == [e.message for e in sent]


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_every_error_pickles_with_its_fields(code):
    """Ray pickles an exception an actor raises: it must come back with its fields."""
    error = sample(REGISTRY[code])
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and copy == error and str(copy) == str(error)
    assert exact(copy.values()) == exact(error.values())


def test_an_error_raised_through_a_wrapper_class_keeps_its_code():
    """Ray re-raises an actor's error as an instance of a class it derives from the error's."""
    wrapped_class = type("RayTaskError(BadNonce)", (errors.BadNonce,), {})
    error = wrapped_class(expected=3, got=1)
    assert error.code == "BadNonce"
    assert error_from_struct(error.to_struct()) == errors.BadNonce(expected=3, got=1)
