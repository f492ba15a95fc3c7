"""soma-ray: the SOMA network on Ray. The SDK's names are importable from here:

    from soma_ray import SomaClient, Keypair

(loaded on first use, so importing any part of the library does not load the SDK's HTTP client)."""

_EXPORTS = {"SomaClient": "soma_ray.client", "Keypair": "soma_ray.protocol.crypto"}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'soma_ray' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
