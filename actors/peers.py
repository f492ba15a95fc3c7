"""A validator's transport to its peers: consensus messages and gossiped transactions travel as
canonical msgpack bytes in fire-and-forget calls (`deliver`, `add_transactions`) to peers found
by name, so no pickled object crosses the trust boundary and a restarted peer is reached under
the same name."""
from __future__ import annotations

import asyncio

from soma_ray.handles import find_actor
from soma_ray.config import NetworkConfig
from soma_ray.protocol.crypto import Committee, address_of


class Peers:
    def __init__(self, network: NetworkConfig):
        self._namespace = network.namespace
        # Actor name of each validator address (from the genesis: no peer's key file is read).
        self._names = {address_of(public_key): network.validator_name(i)
                       for i, public_key in enumerate(network.validator_public_keys())}
        self._all = [network.validator_name(i) for i in range(network.validators)]
        self._committee: Committee | None = None
        self._me = -1
        self._handles: dict[int, object] = {}
        self._gossip: list[bytes] = []  # admitted from clients, not yet sent to the peers

    def follow(self, committee: Committee, me: int) -> None:
        """Talk to `committee`'s members; `me` is this validator's index in it."""
        self._committee, self._me = committee, me
        self.forget()

    def forget(self) -> None:
        """Look the handles up afresh: a peer stopped and launched again is a new actor."""
        self._handles.clear()

    def others(self) -> list[int]:
        return [m for m in range(len(self._committee.members)) if m != self._me]

    def send(self, member: int, message: bytes) -> None:
        peer = self._handle(member)
        if peer is not None:
            peer.deliver.remote(message)

    def share(self, data: bytes) -> None:
        """Queue an admitted transaction for the peers: what is admitted during one turn of the
        event loop goes out as one `add_transactions` call per peer."""
        self._gossip.append(data)
        if len(self._gossip) == 1:
            asyncio.get_running_loop().call_soon(self._flush_gossip)

    def _flush_gossip(self) -> None:
        batch, self._gossip = self._gossip, []
        for member in self.others():
            peer = self._handle(member)
            if peer is not None:
                peer.add_transactions.remote(batch)

    def _handle(self, member: int):
        """Handle of committee member `member` (None while it is down)."""
        if member not in self._handles:
            name = self._names.get(self._committee.members[member].address)
            handle = None if name is None else find_actor(name, self._namespace)
            if handle is None:
                return None
            self._handles[member] = handle
        return self._handles[member]

    def every_other(self, own_name: str) -> list:
        """Every other validator of the network that runs (catch-up asks them in turn)."""
        found = (find_actor(name, self._namespace) for name in self._all if name != own_name)
        return [handle for handle in found if handle is not None]
