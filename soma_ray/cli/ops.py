"""What the operator's commands share: they join the network's Ray cluster (a participant's
commands reach its gateway over HTTP instead, `soma_ray.cli.common`): the --address and
--namespace options, durations, a quiet Serve, and `run_client`."""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Optional

import typer

from actors import network as net
from soma_ray import cluster
from soma_ray.cli.common import BadArgument, fail
from soma_ray.client import SomaClient
from soma_ray.protocol.errors import ProtocolError
from soma_ray.wallet import WalletError

_DURATION = re.compile(r"^(\d+)(ms|s|m|h)?$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, None: 1_000}

NamespaceOption = Annotated[str, typer.Option("--namespace", help="Ray namespace of the network.")]
AddressOption = Annotated[
    Optional[str], typer.Option(
        "--address", envvar="RAY_ADDRESS",
        help="Ray cluster address host:port (default: the cluster `soma start` recorded).")
]


def parse_duration_ms(text: str) -> int:
    """'60s', '5m', '500ms', '1h' or plain seconds → milliseconds (positive)."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise BadArgument(f"duration {text!r}: use a positive number with ms, s, m or h")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def quiet_serve() -> None:
    """Serve logs each step it takes (INFO) to this terminal: only its errors belong there. A
    filter, since Serve sets its logger's level again when it starts."""
    logger = logging.getLogger("ray.serve")
    if not any(isinstance(f, _ErrorsOnly) for f in logger.filters):
        logger.addFilter(_ErrorsOnly())


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def run_client(address: str | None, namespace: str, action):
    """Connect to the network's cluster (`cluster.connect`: --address, RAY_ADDRESS or the
    recorded one), then run `action(client)`; typed errors become one-line messages."""
    async def main():
        client = await SomaClient(address=address, namespace=namespace)
        return await action(client)

    try:
        cluster.connect(address, namespace=namespace)
        return asyncio.run(main())
    except (ProtocolError, net.NetworkNotRunning, BadArgument, WalletError, ConnectionError,
            PermissionError, TimeoutError) as error:
        raise fail(str(error)) from None
