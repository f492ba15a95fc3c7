"""A Byzantine validator for tests: the honest actor with a few methods overridden.

`ByzantineValidatorActor` is `ValidatorActor` (actors/validator.py) plus a behaviour chosen at run
time with `behave(...)`; with none it is honest. The behaviours of the issue:

- `EQUIVOCATE`: as leader of a round it proposes, it signs a second valid-looking checkpoint
  (the same entries one millisecond later) for the same (height, round) and sends the first
  proposal to one peer, the second to another and both to the third (`_send`).
- `GARBAGE`: every proposal and vote it sends carries a corrupted signature, and so does its
  precommit in the certificate of a value it serves to a lagging peer (`_send`).
- `BAD_TRANSACTIONS`: as leader it adds the given entries (e.g. a transaction with a bad
  signature and a replayed one) to the checkpoint it proposes, sealed with the state root they
  really give (`_next_entries`); honest replicas re-execute it and record those entries as
  failed with no effect (protocol.checkpoint.execute_entry).

Launch one in place of validator `index` of a running network with `replace_with_byzantine`.
"""
from __future__ import annotations

import asyncio

import msgspec

from actors.network import Network
from actors.validator import ValidatorActor
from soma_ray.consensus.messages import NIL_ROUND, CertifiedValue, Message, Proposal, sign_proposal
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.types import Checkpoint

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

    def _next_entries(self, timestamp_ms: int) -> list:
        entries = super()._next_entries(timestamp_ms)
        if self._behaviour == BAD_TRANSACTIONS:
            return self._smuggled + entries  # first: a trailing ChangeEpoch stays last
        return entries

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
                                   encode(second), proposal.valid_round)
            self._twins = {key: encode(signed)}  # only the current round's is ever needed
        return self._twins[key]


def _garbage(signature: bytes) -> bytes:
    return bytes(b ^ 0x5A for b in signature)


def replace_with_byzantine(network: Network, index: int, timeout_s: float = 120.0):
    """Stop validator `index` of `network` and run a `ByzantineValidatorActor` in its place:
    the same actor name, namespace, options, key and data dir (`network.relaunch_validator`)."""
    network.stop_validator(index)
    network.relaunch_validator(index, timeout_s, actor_class=ByzantineValidatorActor)
    return network.validators[index]
