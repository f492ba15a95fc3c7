"""A deterministic discrete-event network for ConsensusCore (tests and benchmarks only).

Messages cross the "wire" as canonical bytes and are decoded on arrival; links lose, delay
(which reorders) and duplicate them as a seeded `random.Random` says. Timers fire at simulated
time. A node's "disk" is its decided values and its last persisted safety state, so a restart
rebuilds the core from exactly what the actor would persist.
"""
from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable

import msgspec

from soma_ray.consensus import (
    Broadcast,
    CertifiedValue,
    ConsensusCore,
    Decide,
    EvidenceFound,
    PeerBehind,
    PersistSafetyState,
    Proposal,
    Send,
    SetTimer,
    TimeoutConfig,
    Vote,
)
from soma_ray.consensus.messages import Message, sign_proposal, sign_vote
from soma_ray.protocol.crypto import Committee, CommitteeMember, Keypair
from soma_ray.protocol.encoding import decode, encode

FIRST_HEIGHT = 1
# The simulated network's identity: every message is signed under it (encoding.signing_domain).
SIM_CHAIN_ID = hashlib.blake2b(b"soma/consensus-sim", digest_size=32).digest()
SIM_TIMEOUTS = TimeoutConfig(propose_ms=200, prevote_ms=100, precommit_ms=100, increase_ms=100)


def make_keypairs(n: int, tag: str = "sim") -> list[Keypair]:
    return [Keypair.from_secret(hashlib.blake2b(f"{tag}-{i}".encode(), digest_size=32).digest()) for i in range(n)]


def make_committee(keypairs: list[Keypair], powers: list[int]) -> Committee:
    assert sum(powers) == 10_000
    return Committee(
        epoch=0,
        members=[CommitteeMember(k.address, k.public_key, p) for k, p in zip(keypairs, powers)],
    )


def equal_powers(n: int) -> list[int]:
    powers = [10_000 // n] * n
    powers[0] += 10_000 - sum(powers)
    return powers


class ValueApp:
    """Proposes `h<height>/n<node>/<count>`; accepts a value only for the height it names and
    never one that starts with b"bad" (standing for bad transaction signatures or nonces)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proposals = 0

    def propose(self, height: int) -> bytes:
        self.proposals += 1
        return f"h{height}/n{self.index}/{self.proposals}".encode()

    def validate(self, height: int, value: bytes) -> bool:
        return value.startswith(f"h{height}/".encode())


class BadValueApp(ValueApp):
    """A Byzantine leader's application: proposes values honest nodes must reject."""

    def propose(self, height: int) -> bytes:
        return f"bad-transactions-h{height}/n{self.index}".encode()


# A behaviour turns what an honest core wants to send into what the node really sends:
# a list of (recipient or None for everyone, message).
Behaviour = Callable[["SimNode", list], list]


class SimNode:
    def __init__(self, sim: "Simulation", index: int, keypair: Keypair, app, behaviour: Behaviour | None) -> None:
        self.sim, self.index, self.keypair, self.app = sim, index, keypair, app
        self.behaviour = behaviour
        self.alive = True
        self.decided: dict[int, CertifiedValue] = {}
        self.persisted: bytes | None = None
        self.evidence: list = []  # every EvidenceFound output, kept across restarts
        self.core = self._build_core()

    @property
    def honest(self) -> bool:
        return self.behaviour is None

    def _build_core(self) -> ConsensusCore:
        return ConsensusCore(
            self.sim.committee,
            self.keypair,
            self.app,
            FIRST_HEIGHT + len(self.decided),
            chain_id=SIM_CHAIN_ID,
            safety_state=self.persisted,
            timeouts=self.sim.timeouts,
        )

    def restart(self) -> None:
        """Lose everything in memory; keep the disk."""
        self.alive = True
        self.core = self._build_core()
        self.perform(self.core.start_height())

    def perform(self, outputs: list) -> None:
        sends = []
        decided = False
        for output in outputs:
            if isinstance(output, PersistSafetyState):
                self.persisted = output.data
            elif isinstance(output, Broadcast):
                sends.append((None, output.message))
            elif isinstance(output, Send):
                sends.append((output.to, output.message))
            elif isinstance(output, EvidenceFound):
                self.evidence.append(output.evidence)
            elif isinstance(output, PeerBehind) and output.height in self.decided:
                sends.append((output.peer, self.decided[output.height]))  # served from "disk"
            elif isinstance(output, SetTimer):
                self.sim.schedule_timer(self, output)
            elif isinstance(output, Decide):
                self.decided[output.height] = CertifiedValue(output.value, output.certificate)
                self.sim.on_decide(self, output)
                decided = True
        if self.behaviour is not None:
            sends = self.behaviour(self, sends)
        for to, message in sends:
            self.sim.transmit(self.index, to, message)
        if decided and self.alive:  # the "actor" has applied and persisted the value: go on
            self.perform(self.core.start_height())


class Simulation:
    def __init__(
        self,
        powers: list[int],
        seed: int,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        delay_ms: tuple[int, int] = (1, 20),
        timeouts: TimeoutConfig = SIM_TIMEOUTS,
        byzantine: dict[int, tuple[Behaviour, type]] | None = None,
        app_type: type = ValueApp,
    ) -> None:
        self.random = random.Random(seed)
        self.loss, self.duplicate, self.delay_ms = loss, duplicate, delay_ms
        self.timeouts = timeouts
        self.keypairs = make_keypairs(len(powers))
        self.committee = make_committee(self.keypairs, powers)
        self.now = 0
        self.delivered = 0
        self.cut: set[tuple[int, int]] = set()
        self._queue: list = []
        self._seq = 0
        byzantine = byzantine or {}
        self.nodes = []
        for i, keypair in enumerate(self.keypairs):
            behaviour, node_app = byzantine.get(i, (None, app_type))
            self.nodes.append(SimNode(self, i, keypair, node_app(i), behaviour))
        for node in self.nodes:
            node.perform(node.core.start_height())

    # ------------------------------------------------------------- network

    def transmit(self, sender: int, to: int | None, message: Message) -> None:
        if not self.nodes[sender].alive:
            return
        data = encode(message)
        recipients = [to] if to is not None else [n.index for n in self.nodes if n.index != sender]
        for recipient in recipients:
            if (sender, recipient) in self.cut or self.random.random() < self.loss:
                continue
            copies = 2 if self.random.random() < self.duplicate else 1
            for _ in range(copies):
                self._push(self.now + self.random.randint(*self.delay_ms), ("msg", recipient, data))

    def schedule_timer(self, node: SimNode, timer: SetTimer) -> None:
        self._push(self.now + timer.duration_ms, ("timer", node.index, (node.core, timer)))

    def _push(self, at: int, event: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, event))

    def crash(self, index: int) -> None:
        self.nodes[index].alive = False

    def isolate(self, index: int) -> None:
        """Cut every link to and from `index` (the node keeps running alone)."""
        for other in range(len(self.nodes)):
            if other != index:
                self.cut |= {(index, other), (other, index)}

    def heal(self) -> None:
        self.cut.clear()

    # ------------------------------------------------------------- running

    def on_decide(self, node: SimNode, decide: Decide) -> None:
        """Hook for tests; by default nothing."""

    def step(self) -> bool:
        if not self._queue:
            return False
        at, _, (kind, index, payload) = heapq.heappop(self._queue)
        self.now = at
        node = self.nodes[index]
        if not node.alive:
            return True
        if kind == "msg":
            self.delivered += 1
            node.perform(node.core.on_message(decode(payload, Message)))
        else:
            core, timer = payload
            if core is node.core:  # a timer set before a restart died with the old process
                node.perform(core.on_timeout(timer.height, timer.round, timer.step))
        return True

    def run(self, until_ms: int, stop: Callable[[], bool] | None = None) -> None:
        while self._queue and self._queue[0][0] <= until_ms:
            self.step()
            if stop is not None and stop():
                return
        self.now = max(self.now, until_ms)

    def run_until_height(self, height: int, limit_ms: int, nodes: list[int] | None = None) -> bool:
        """Run until the given (default: live honest) nodes have decided `height`; False on limit."""
        def done() -> bool:
            watched = [self.nodes[i] for i in nodes] if nodes is not None else self.live_honest()
            return all(height in n.decided for n in watched)

        self.run(limit_ms, done)
        return done()

    # ------------------------------------------------------------- checks

    def live_honest(self) -> list[SimNode]:
        return [n for n in self.nodes if n.honest and n.alive]

    def honest(self) -> list[SimNode]:
        return [n for n in self.nodes if n.honest]

    def assert_agreement(self) -> None:
        """No two honest nodes decided different values at one height."""
        by_height: dict[int, bytes] = {}
        for node in self.honest():
            for height, certified in node.decided.items():
                agreed = by_height.setdefault(height, certified.value)
                assert agreed == certified.value, f"disagreement at height {height}"

    def assert_no_honest_equivocation(self) -> None:
        """No honest node was ever caught signing two messages for one slot (restarts included)."""
        honest = {n.index for n in self.honest()}
        for node in self.honest():
            for evidence in node.evidence:
                assert evidence.first.signer not in honest, evidence

    def assert_validity(self) -> None:
        """Every honest decision is a value an honest application accepts for that height."""
        judge = ValueApp(-1)
        for node in self.honest():
            for height, certified in node.decided.items():
                assert judge.validate(height, certified.value), (height, certified.value)


# ----------------------------------------------------------------- Byzantine behaviours


def equivocating_leader(node: SimNode, sends: list) -> list:
    """As leader, send every peer its own freshly signed proposal (all different), and odd
    peers the original as well."""
    out = []
    for to, message in sends:
        if to is None and isinstance(message, Proposal):
            for peer in range(len(node.sim.nodes)):
                if peer != node.index:
                    value = message.value + f"/to{peer}".encode()
                    twin = sign_proposal(node.keypair, node.index, message.height, message.round, value, message.valid_round,
                                         chain_id=SIM_CHAIN_ID)
                    out.append((peer, twin))
                    if peer % 2:  # these peers get both, so they hold the evidence
                        out.append((peer, message))
        else:
            out.append((to, message))
    return out


def garbage_signer(node: SimNode, sends: list) -> list:
    """Every message leaves with a random 64-byte signature."""
    out = []
    for to, message in sends:
        if isinstance(message, (Proposal, Vote)):
            message = msgspec.structs.replace(message, signature=node.sim.random.randbytes(64))
        out.append((to, message))
    return out


def double_voter(node: SimNode, sends: list) -> list:
    """Besides each vote, send half of the peers a validly signed vote for a different value."""
    out = list(sends)
    for to, message in sends:
        if isinstance(message, Vote):
            other = node.sim.random.randbytes(32) if message.value_digest is None else None
            twin = sign_vote(node.keypair, node.index, message.kind, message.height, message.round, other,
                             chain_id=SIM_CHAIN_ID)
            for peer in range(0, len(node.sim.nodes), 2):
                if peer != node.index:
                    out.append((peer, twin))
    return out
