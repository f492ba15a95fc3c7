"""The network's public HTTP gateway on Ray Serve: the gateway routes of the route table
(soma_ray/routes.py) over the validators and the target index, reached inside the cluster through
`soma_ray.ray_transport.RayTransport`.

Every byte from outside is bounded and validated before anything acts on it (serve/router.py:
bodies read within their declared limits, URL arguments parsed by their codecs); transactions then
go through the validators' admission checks. A bad request gets a 4xx carrying its typed error
and changes nothing; only a fault of the network itself is a 5xx.

`GatewayHandlers` answers each route: by the transport's method of the same name, except where
the gateway adds a rule of its own (a transaction's size limit is the chain's, faucet requests
are switched and rate-limited per recipient, a refused transaction is a refusal). Every route's
rate class is limited per client and for all clients by the router (soma_ray/routes.py
`RATE_LIMITS`): long polls, submissions and the faucet among them, so a new recipient address
does not buy a client more faucet requests.

    serve.run(gateway_app(namespace, prefix, localnet=True), name="gateway", route_prefix="/")
"""
from __future__ import annotations

import time

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from serve.router import Router
from soma_ray import metrics
from soma_ray.node.replies import SubmitReply
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.types import SystemState
from soma_ray.ray_transport import RayTransport

# Faucet requests one recipient may make per FAUCET_WINDOW_S.
FAUCET_PER_WINDOW = 10
FAUCET_WINDOW_S = 60.0
# Recipients remembered before those with no request in the window are forgotten.
MAX_FAUCET_RECIPIENTS = 10_000


class GatewayHandlers:
    """The gateway's answer to each of its routes (see the module docstring)."""

    def __init__(self, transport, localnet: bool, faucet_per_window: int = FAUCET_PER_WINDOW):
        self._transport = transport
        self._localnet = localnet
        self._faucet_per_window = faucet_per_window
        self._faucet_uses: dict[bytes, list[float]] = {}
        self._parameters: Parameters | None = None  # the genesis' (no transaction changes them)

    def __getattr__(self, name: str):
        """Every route without a rule of its own is the transport's method."""
        return getattr(self._transport, name)

    async def _chain_parameters(self) -> Parameters:
        if self._parameters is None:
            self._parameters = decode(await self._transport.system_state(), SystemState).parameters
        return self._parameters

    async def body_limit(self, name: str) -> int:
        """The limits routes declare by name: the chain's parameters."""
        return getattr(await self._chain_parameters(), name)

    async def submit(self, tx: bytes) -> SubmitReply:
        return _accepted(await self._transport.submit(tx))

    async def submit_batch(self, batch: list[bytes]) -> list[SubmitReply]:
        """Each transaction over the chain's size limit is refused on its own; the others go on."""
        limit = (await self._chain_parameters()).max_tx_bytes
        replies: list[SubmitReply | None] = [
            SubmitReply.refused(errors.TransactionTooLarge(size=len(tx), max=limit))
            if len(tx) > limit else None for tx in batch]
        sent = iter(await self._transport.submit_batch([tx for tx, r in zip(batch, replies) if r is None]))
        return [reply if reply is not None else next(sent) for reply in replies]

    async def request_faucet(self, recipient: bytes, amount: int) -> SubmitReply:
        # The chain's own switch (a localnet's genesis, or a testnet's `faucet = true`).
        if not (await self._chain_parameters()).faucet_enabled:
            raise errors.FaucetDisabled()
        if len(recipient) != 32 or amount <= 0:
            raise errors.MalformedInput(reason="a faucet request names a 32-byte address and a positive amount")
        self._take_faucet_turn(recipient)
        return _accepted(await self._transport.request_faucet(recipient, amount))

    def _take_faucet_turn(self, recipient: bytes) -> None:
        """At most `faucet_per_window` requests per recipient in any FAUCET_WINDOW_S."""
        now = time.monotonic()
        recent = [t for t in self._faucet_uses.get(recipient, []) if t > now - FAUCET_WINDOW_S]
        if len(recent) >= self._faucet_per_window:
            raise errors.FaucetRateLimited(retry_after_s=int(recent[0] + FAUCET_WINDOW_S - now) + 1)
        self._faucet_uses[recipient] = [*recent, now]
        if len(self._faucet_uses) > MAX_FAUCET_RECIPIENTS:  # forget those with no turn in the window
            self._faucet_uses = {r: uses for r, uses in self._faucet_uses.items()
                                 if uses[-1] > now - FAUCET_WINDOW_S}


def _accepted(reply: SubmitReply) -> SubmitReply:
    """A transaction refused at admission or dropped unexecuted did nothing: a refusal."""
    if reply.error is not None:
        raise errors.error_from_struct(reply.error)
    return reply


# One replica: the rate limits and the faucet's per-recipient turns are its memory.
@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=2_000)
class Gateway:
    def __init__(self, namespace: str, prefix: str, localnet: bool,
                 faucet_per_window: int = FAUCET_PER_WINDOW, limits: dict | None = None,
                 trusted_proxies: tuple[str, ...] = ()):
        tags = {"network": metrics.network_label(namespace, prefix)}
        handlers = GatewayHandlers(RayTransport.connect(namespace, prefix), localnet, faucet_per_window)
        self._router = Router("gateway", handlers, localnet, on_answer=lambda route, code: (
            metrics.GATEWAY_REQUESTS.record(1, {**tags, "route": route, "code": str(code)})),
            limits=limits, trusted_proxies=trusted_proxies)

    async def __call__(self, request: Request) -> Response:
        return await self._router.handle(request)


def gateway_app(namespace: str, prefix: str = "", localnet: bool = True,
                faucet_per_window: int = FAUCET_PER_WINDOW, limits: dict | None = None,
                trusted_proxies: tuple[str, ...] = ()):
    """The gateway application: `serve.run(gateway_app(...), name=..., route_prefix="/")`.
    `limits`: each rate class's (soma_ray.routes.RATE_LIMITS by default); `trusted_proxies`:
    reverse proxies whose X-Forwarded-For names the client (serve/router.py)."""
    return Gateway.bind(namespace, prefix, localnet, faucet_per_window, limits, tuple(trusted_proxies))
