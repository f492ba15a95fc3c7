"""Helpers to drive and watch a test localnet (imported by the e2e test modules)."""
import asyncio
import socket
import time
import uuid

import ray

from actors import network as net
from soma_ray.client import SomaClient
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.types import SystemState, Transaction, Transfer

FEE = 1_000
STOPPED = (2, 3)  # 2 of 4 is below the quorum: nothing commits, so a pool only fills


def run(coroutine):
    return asyncio.run(coroutine)


def with_client(url, scenario):
    """`scenario(client)` with an SDK client of the gateway at `url` (HTTP only), closed after."""
    async def main():
        client = await SomaClient(rpc_url=url)
        try:
            return await scenario(client)
        finally:
            await client.close()
    return run(main())


async def funded(client, name, amount=100 * SHANNONS_PER_SOMA):
    """The preset key `name`, given `amount` shannons from the faucet."""
    key = preset_keypair(name, 0)
    await client.request_faucet(key.address, amount)
    return key


async def eventually(read, timeout_s=120.0, interval_s=0.2):
    """`wait_until` inside a scenario: the first truthy value of `await read()`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await read()
        if value:
            return value
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not reached in {timeout_s} s")


def consensus_positions(network, indices):
    """(height, round) that consensus works on at the validators `indices`; None for one whose
    consensus is not running (not started, or rejoining)."""
    return [None if s.height is None else (s.height, s.round) for s in statuses(network, indices)]


async def client_of(network):
    return await SomaClient(namespace=network.config.namespace, prefix=network.config.prefix)


def statuses(network, indices=None):
    """Status of the validators `indices` (all by default)."""
    chosen = range(len(network.validators)) if indices is None else indices
    return ray.get([network.validators[i].status.remote() for i in chosen], timeout=30)


def sequences(network, indices=None):
    """Checkpoint sequence of the validators `indices` (all by default)."""
    return [s.sequence for s in statuses(network, indices)]


def pooled_counts(network):
    """Mempool sizes of validators 0 and 1."""
    return [s.mempool for s in statuses(network, [0, 1])]


_CHAIN_IDS: dict[str, bytes] = {}


def chain_id_of(network) -> bytes:
    """The network's chain id (its genesis digest: what its transactions are signed under), read
    from the first validator that answers, once per network."""
    key = network.config.prefix + network.config.namespace
    if key not in _CHAIN_IDS:
        for validator in network.validators:
            if validator is not None:
                raw = ray.get(validator.system_state.remote(), timeout=30)
                _CHAIN_IDS[key] = decode(raw, SystemState).chain_id
                break
    return _CHAIN_IDS[key]


def transfers(network, sender, recipient: bytes, nonces, amount: int = SHANNONS_PER_SOMA) -> list[bytes]:
    """Encoded transfers of `amount` from `sender` signed for `network`, one per nonce, each with
    max fee FEE."""
    chain_id = chain_id_of(network)
    return [encode(sign_transaction(sender, Transaction(
        sender=sender.address, nonce=nonce, kind=Transfer(recipient=recipient, amount=amount),
        max_fee=FEE), chain_id)) for nonce in nonces]


def wait_until(predicate, timeout_s=120.0, interval_s=0.2):
    """The first truthy value of `predicate()`, polled until the deadline: a generous one, since
    it only bounds a failing test (2-core CI machines are often loaded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not reached in {timeout_s} s")


def same_root_at_same_height(network):
    """All validators at one sequence with one state root (or False while they differ)."""
    found = statuses(network)
    heights = {s.sequence for s in found}
    roots = {s.state_root for s in found}
    return found if len(heights) == 1 and len(roots) == 1 else False


def start_network(tmp_path_factory, name: str, epoch_duration_ms: int = 3_600_000, validators: int = 4,
                  **settings):
    """A network of 4 validators unless told otherwise (epochs too long to end during a test
    unless told otherwise, and these other `NetworkConfig` settings), once every validator has
    opened its disk; stopped again if that does not happen in time. Modules that test what a
    participant sees, not consensus, run one validator: fewer processes on a 2-core machine."""
    config = net.NetworkConfig(
        data_dir=str(tmp_path_factory.mktemp(name)), validators=validators, epoch_duration_ms=epoch_duration_ms,
        namespace="soma-test", prefix=f"{name}-{uuid.uuid4().hex[:6]}-", **settings)
    network = net.start(config)
    try:
        wait_until(lambda: all(s.sequence is not None for s in statuses(network)))
    except BaseException:
        network.stop()
        raise
    return network


def start_served(tmp_path_factory, serve_url: str, name: str, **settings):
    """`start_network` on the session's Serve port with its services (gateway, blob store,
    scoring service, target index, audits) started: `network.config.public_url` reaches them.
    Stopped again if they do not start."""
    network = start_network(tmp_path_factory, name, http_port=int(serve_url.rsplit(":", 1)[1]), **settings)
    try:
        network.start_services(scoring_device="cpu")
    except BaseException:
        network.stop()
        raise
    return network


def whole_http_answer(conn: socket.socket, first: bytes) -> bytes:
    """An HTTP answer read to the end of its body (Content-Length), starting from `first`."""
    answer = first
    while b"\r\n\r\n" not in answer:
        answer += conn.recv(4096)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        more = conn.recv(4096)
        if not more:
            break
        body += more
    return head + b"\r\n\r\n" + body
