"""A Byzantine validator for tests: the honest actor with a few methods overridden.

`ByzantineValidatorActor` is `ValidatorActor` (actors/validator.py) plus a behaviour chosen at run
time with `behave(...)`; with none it is honest. The behaviours of the issue:

- `EQUIVOCATE`: as leader of a round it proposes, it signs a second valid-looking checkpoint
  (the same entries one millisecond later) for the same (height, round) and sends the first
  proposal to one peer, the second to another and both to the third (`_send`).
- `GARBAGE`: every proposal and vote it sends carries a corrupted signature, and so does its
  precommit in the certificate of a value it serves to a lagging peer (`_send`).
- `BAD_TRANSACTIONS`: as leader it puts the given entries (e.g. a transaction with a bad
  signature, a replayed one, one whose sender cannot pay its fee) at the head of the checkpoint
  it proposes, sealed as the rules before issue 18 would have: each recorded as failed, with
  no effect on the state root (`propose`, `smuggle`). Honest replicas refuse such a proposal
  (every entry of a checkpoint must execute: protocol.checkpoint.build_checkpoint), so it is
  never certified; the round times out and the next leader's checkpoint is decided.

Launch one in place of validator `index` of a running network with `replace_with_byzantine`.
"""
from __future__ import annotations

import asyncio

import msgspec

from actors.network import Network
from actors.validator import ValidatorActor
from soma_ray.consensus.messages import NIL_ROUND, CertifiedValue, Message, Proposal, sign_proposal, value_digest
from soma_ray.node.executor import Executed, Executor
from soma_ray.protocol.checkpoint import effects_digest
from soma_ray.protocol.encoding import DOMAIN_TX, decode, digest, encode
from soma_ray.protocol.epoch import SYSTEM_SENDER
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.types import Checkpoint, TransactionEffects

EQUIVOCATE = "equivocate"
GARBAGE = "garbage"
BAD_TRANSACTIONS = "bad_transactions"
BEHAVIOURS = (EQUIVOCATE, GARBAGE, BAD_TRANSACTIONS)


class ByzantineValidatorActor(ValidatorActor):
    def __init__(self, config: dict, index: int):
        super().__init__(config, index)
        self._behaviour: str | None = None
        self._smuggled: list[bytes] = []
        self._twins: dict[tuple[int, int], bytes] = {}  # (height, round) -> the second proposal

    async def behave(self, behaviour: str | None, entries: list[bytes] = ()) -> int:
        """Switch behaviour (None: honest); `entries` are what BAD_TRANSACTIONS smuggles in.

        Then it catches up with the peers as an honest validator that fell behind does
        (`_rejoin`), so that it works on their height: a replica two or more heights behind drops
        the peers' messages as too far ahead and learns one decided height per round of its own
        (a propose timeout plus the idle interval), slower than the others cut them, so it would
        never lead a height the others still decide. The behaviour is set before that: the core
        the rejoin starts signs as told from its first message on.
        Returns the height it works on."""
        assert behaviour is None or behaviour in BEHAVIOURS, behaviour
        self._behaviour = behaviour
        self._smuggled = list(entries)
        if self._rejoining is None:  # else one is under way; its new core follows the behaviour too
            self._rejoining = asyncio.get_running_loop().create_task(self._rejoin())
        await self._rejoining
        return self._core.height

    # ------------------------------------------------------------------ overridden

    def propose(self, height: int) -> bytes:
        value = super().propose(height)
        if self._behaviour == BAD_TRANSACTIONS and self._smuggled:
            return smuggle(self._executor, value, self._smuggled)
        return value

    def _send(self, member: int, message: bytes) -> None:
        if self._behaviour not in (EQUIVOCATE, GARBAGE):
            return super()._send(member, message)
        decoded = decode(message, Message)
        if self._behaviour == GARBAGE:
            return super()._send(member, encode(self._garbled(decoded)))
        if (not isinstance(decoded, Proposal) or decoded.signer != self._core.index
                or decoded.valid_round != NIL_ROUND):
            return super()._send(member, message)
        peers = self._other_members()
        twin = self._twin(decoded)
        if member == peers[0]:
            super()._send(member, message)
        elif member == peers[1]:
            super()._send(member, twin)
        else:
            super()._send(member, message)
            super()._send(member, twin)

    # ------------------------------------------------------------------ helpers

    def _garbled(self, message: Message) -> Message:
        """`message` with this validator's own signature corrupted, also where it is one of the
        precommits in the certificate of a value served to a lagging peer: its core counts its
        own valid votes, and such a certificate would carry one to the peer."""
        own = self._core.index
        if isinstance(message, CertifiedValue):
            certificate = message.certificate
            signatures = [_garbage(signature) if signer == own else signature
                          for signer, signature in zip(certificate.signer_indices, certificate.signatures)]
            return msgspec.structs.replace(
                message, certificate=msgspec.structs.replace(certificate, signatures=signatures))
        if message.signer == own:
            return msgspec.structs.replace(message, signature=_garbage(message.signature))
        return message  # another member's vote it passes on (a polka with its proposal)

    def _twin(self, proposal: Proposal) -> bytes:
        """A second signed proposal for the same (height, round): the same entries, 1 ms later,
        executed honestly, so each of the two checkpoints is valid on its own."""
        key = (proposal.height, proposal.round)
        if key not in self._twins:
            first = decode(proposal.value, Checkpoint)
            second = self._executor.build(first.transactions, first.timestamp_ms + 1).checkpoint
            signed = sign_proposal(self._keypair, self._core.index, proposal.height, proposal.round,
                                   encode(second), proposal.valid_round, chain_id=self._core.chain_id)
            self._twins = {key: encode(signed)}  # only the current round's is ever needed
        return self._twins[key]


def smuggle(executor: Executor, value: bytes, entries: list[bytes]) -> bytes:
    """The honest proposal `value` (built by `executor`) with `entries` put first, sealed as the
    rules before issue 18 sealed an entry that could not execute: recorded as failed, changing
    nothing (so the state root stays the honest one). Kept as this node's own trial, so its core
    votes for it."""
    executed = executor._executed[value_digest(value)]
    failed = [TransactionEffects(transaction_digest=digest(DOMAIN_TX, raw), sender=SYSTEM_SENDER, nonce=0,
                                 fee_charged=0, error=_why_not(executor, raw).to_struct()) for raw in entries]
    effects = failed + executed.effects
    checkpoint = msgspec.structs.replace(executed.checkpoint, transactions=list(entries) + executed.checkpoint.transactions,
                                         effects_digest=effects_digest(effects))
    smuggled = encode(checkpoint)
    executor._executed[value_digest(smuggled)] = Executed(checkpoint, executed.changes, effects)
    return smuggled


def _why_not(executor: Executor, raw: bytes) -> ProtocolError:
    try:
        executor.build([raw], executor.latest_timestamp_ms)
    except ProtocolError as error:
        return error
    return ProtocolError()  # it would execute: smuggled anyway


def _garbage(signature: bytes) -> bytes:
    return bytes(b ^ 0x5A for b in signature)


def replace_with_byzantine(network: Network, index: int, timeout_s: float = 120.0):
    """Stop validator `index` of `network` and run a `ByzantineValidatorActor` in its place:
    the same actor name, namespace, options, key and data dir (`network.relaunch_validator`)."""
    network.stop_validator(index)
    network.relaunch_validator(index, timeout_s, actor_class=ByzantineValidatorActor)
    return network.validators[index]
