"""The weights pipeline: from a model's manifest on chain to a loaded V1 model, one stage at a
time — download, size, checksum, decrypt, load (`soma_ray.protocol.errors.MODEL_STAGES`). A
failure at any stage is `ModelUnavailable{model_id, stage, reason}`; nothing else escapes.

The scoring service, the in-process game and the CLI all open published weights this way:

    encrypted = await download_weights(manifest, transport.fetch, timeout_s)
    model = open_weights(manifest, encrypted, V1Config.small())
"""
from __future__ import annotations

from typing import Awaitable, Callable

from soma_ray.model.config import V1Config
from soma_ray.model.encryption import decrypt_bytes
from soma_ray.model.errors import ModelError
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.errors import FetchError, FetchTooLarge, ModelUnavailable
from soma_ray.wire import ModelManifest


def unavailable(manifest: ModelManifest, stage: str, reason: str) -> ModelUnavailable:
    return ModelUnavailable(model_id=manifest.model_id, stage=stage, reason=reason)


async def download_weights(manifest: ModelManifest, fetch: Callable[[str, int, float], Awaitable[bytes]],
                           timeout_s: float) -> bytes:
    """The encrypted weights at the manifest's URL, at most its size (`fetch(url, max_bytes,
    timeout_s)`: a transport's)."""
    try:
        return await fetch(manifest.url, manifest.size, timeout_s)
    except FetchTooLarge as exc:
        raise unavailable(manifest, "size", f"the download is at least {exc.size} bytes, the manifest "
                                            f"says {manifest.size}") from None
    except FetchError as exc:
        raise unavailable(manifest, "download", exc.reason) from None


def decrypted_weights(manifest: ModelManifest, encrypted: bytes) -> bytes:
    """The weights file the downloaded bytes hold, once their size and checksum are the
    manifest's and its key decrypts them."""
    if len(encrypted) != manifest.size:
        raise unavailable(manifest, "size", f"downloaded {len(encrypted)} bytes, the manifest says {manifest.size}")
    if blake2b256(encrypted) != manifest.checksum:
        raise unavailable(manifest, "checksum", "the downloaded bytes do not match the manifest checksum")
    try:
        return decrypt_bytes(encrypted, manifest.decryption_key)
    except ModelError as exc:
        raise unavailable(manifest, "decrypt", getattr(exc, "reason", str(exc))) from None


def open_weights(manifest: ModelManifest, encrypted: bytes, config: V1Config, device: str = "cpu"):
    """The V1Model the downloaded bytes hold (size, checksum, decrypt and load checked)."""
    from soma_ray.model.weights import load_weights

    plain = decrypted_weights(manifest, encrypted)
    try:
        return load_weights(plain, config, device=device)
    except ModelError as exc:
        raise unavailable(manifest, "load", str(exc)) from None
