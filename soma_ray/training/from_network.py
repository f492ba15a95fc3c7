"""Fine-tuning from a network model: its weights downloaded through the SDK (`SomaClient.
fetch_model`: the chain's manifest, size and checksum checked, decrypted with the revealed key)
and written where a training run reads `init` from. `soma model train --from MODEL_ID` and the
trainers of issue 22 use it.

    path = download_model("http://127.0.0.1:8000", model_id, Path("runs/init"))
    weights = await fetch_model_weights(client, model_id)     # bytes, inside a running loop
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from soma_ray.files import write_atomic


async def fetch_model_weights(client, model_id: bytes) -> bytes:
    """A revealed model's weights file (safetensors bytes), checked and decrypted."""
    return await client.fetch_model(model_id)


def download_model(rpc_url: str, model_id: bytes, directory: Path) -> Path:
    """The model's weights written to `directory/<0x id>.safetensors` (atomically); its path.
    Raises the SDK's typed errors (ObjectNotFound, ModelHasNoWeights, FetchError) or
    GatewayUnavailable."""
    from soma_ray.client import SomaClient

    async def fetch() -> bytes:
        async with SomaClient(rpc_url) as client:
            return await fetch_model_weights(client, model_id)

    weights = asyncio.run(fetch())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"0x{bytes(model_id).hex()}.safetensors"
    write_atomic(path, weights)
    return path
