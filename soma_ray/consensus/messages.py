"""Consensus messages, the outputs the core asks its shell to perform, and the safety state.

Everything that is signed or persisted is a canonical `Struct` (spec §0). Signers are named by
their index into `Committee.members`; a vote's value is named by its digest, `None` for nil.
Proposals and votes are signed under the network's chain id (`encoding.signing_domain`): a
message or a certificate of one network never verifies on another.
"""
from __future__ import annotations

from enum import IntEnum

import msgspec

from soma_ray.consensus.errors import ValueNotCertified
from soma_ray.protocol.crypto import Certificate, Committee, Keypair, verify_certificate, verify_signature
from soma_ray.protocol.encoding import DOMAIN_CHECKPOINT, DOMAIN_VOTE, Struct, digest, encode, signing_domain

# Proposals get their own tag so that a leader's proposal signature can never count as a vote.
DOMAIN_PROPOSAL = b"soma/proposal/v1"
NIL_ROUND = -1


class Step(IntEnum):
    """The three steps of a round; a vote's kind is PREVOTE or PRECOMMIT."""

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


def value_digest(value: bytes) -> bytes:
    """Digest of a decided value: for a checkpoint, the checkpoint digest."""
    return digest(DOMAIN_CHECKPOINT, value)


class ProposalBody(Struct, frozen=True):
    height: int
    round: int
    value_digest: bytes
    valid_round: int


class VoteBody(Struct, frozen=True):
    kind: Step
    height: int
    round: int
    value_digest: bytes | None


class Proposal(Struct, frozen=True, tag=True):
    """The leader's value for (height, round); `valid_round` is the round of its polka, or -1."""

    height: int
    round: int
    value: bytes
    valid_round: int
    signer: int
    signature: bytes

    def body(self, digest_: bytes | None = None) -> ProposalBody:
        """The signed body; `digest_` is the value's digest where the caller already has it."""
        value_digest_ = value_digest(self.value) if digest_ is None else digest_
        return ProposalBody(self.height, self.round, value_digest_, self.valid_round)


class Vote(Struct, frozen=True, tag=True):
    kind: Step
    height: int
    round: int
    value_digest: bytes | None
    signer: int
    signature: bytes

    def body(self) -> VoteBody:
        return VoteBody(self.kind, self.height, self.round, self.value_digest)


class CommitCertificate(Struct, frozen=True):
    """Precommit signatures of ≥ quorum voting power for one value at (height, round)."""

    height: int
    round: int
    value_digest: bytes
    signer_indices: list[int]
    signatures: list[bytes]


class CertifiedValue(Struct, frozen=True, tag=True):
    """A decided value with its certificate: what a node sends a peer that is behind."""

    value: bytes
    certificate: CommitCertificate


class VoteEquivocation(Struct, frozen=True):
    """Two different signed votes of one signer for the same (height, round, kind)."""

    first: Vote
    second: Vote


class ProposalEquivocation(Struct, frozen=True):
    """Two different signed proposals of one leader for the same (height, round)."""

    first: Proposal
    second: Proposal


# Wire messages carry their class name first, so `decode(data, Message)` tells them apart.
Message = Proposal | Vote | CertifiedValue
Evidence = VoteEquivocation | ProposalEquivocation


class SafetyState(Struct):
    """What a validator must remember across restarts so that it never signs against itself.

    `prevote`/`precommit`/`proposal` are the node's own messages in `round` (None where it sent
    none): a restarted node re-sends these instead of signing new ones. `valid_polka` are the
    prevotes that make `valid_value` re-proposable: peers cannot accept a re-proposal without them.
    """

    height: int
    round: int
    locked_round: int = NIL_ROUND
    locked_value: bytes | None = None
    valid_round: int = NIL_ROUND
    valid_value: bytes | None = None
    prevote: Vote | None = None
    precommit: Vote | None = None
    proposal: Proposal | None = None
    valid_polka: list[Vote] = []


# Outputs: the shell performs them in the order given.
class Broadcast(msgspec.Struct, frozen=True):
    message: Message


class Send(msgspec.Struct, frozen=True):
    to: int
    message: Message


class SetTimer(msgspec.Struct, frozen=True):
    """Call `on_timeout(height, round, step)` after `duration_ms`."""

    height: int
    round: int
    step: Step
    duration_ms: int


class PersistSafetyState(msgspec.Struct, frozen=True):
    """Write `data` durably before performing any later output (it precedes a vote)."""

    data: bytes


class Decide(msgspec.Struct, frozen=True):
    """`value` is final at `height`; apply it, persist it, then call `core.start_height()`."""

    height: int
    value: bytes
    certificate: CommitCertificate


class EvidenceFound(msgspec.Struct, frozen=True):
    evidence: Evidence


class PeerBehind(msgspec.Struct, frozen=True):
    """`peer` works on `height`, which this core no longer retains: serve it from storage."""

    peer: int
    height: int


class FallenBehind(msgspec.Struct, frozen=True):
    """A member signed a message for `height`, two or more heights past this core: the shell
    should fetch and verify the certified checkpoints it missed, then start a core there."""

    height: int


Output = (Broadcast | Send | SetTimer | PersistSafetyState | Decide | EvidenceFound | PeerBehind
          | FallenBehind)


def sign_proposal(
    keypair: Keypair, signer: int, height: int, round: int, value: bytes, valid_round: int,
    digest_: bytes | None = None, *, chain_id: bytes,
) -> Proposal:
    """`digest_`: `value_digest(value)` where the caller already has it."""
    body = ProposalBody(height, round, value_digest(value) if digest_ is None else digest_, valid_round)
    signature = keypair.sign(signing_domain(DOMAIN_PROPOSAL, chain_id), encode(body))
    return Proposal(height, round, value, valid_round, signer, signature)


def sign_vote(keypair: Keypair, signer: int, kind: Step, height: int, round: int, digest_: bytes | None,
              *, chain_id: bytes) -> Vote:
    body = VoteBody(kind, height, round, digest_)
    return Vote(kind, height, round, digest_, signer, keypair.sign(signing_domain(DOMAIN_VOTE, chain_id), encode(body)))


def is_member(committee: Committee, signer: int) -> bool:
    return 0 <= signer < len(committee.members)


def proposal_signature_valid(committee: Committee, proposal: Proposal, digest_: bytes | None = None,
                             *, chain_id: bytes) -> bool:
    """`digest_`: the proposal's value digest where the caller already has it."""
    member = committee.members[proposal.signer]
    return verify_signature(member.public_key, signing_domain(DOMAIN_PROPOSAL, chain_id),
                            encode(proposal.body(digest_)), proposal.signature)


def vote_signature_valid(committee: Committee, vote: Vote, *, chain_id: bytes) -> bool:
    member = committee.members[vote.signer]
    return verify_signature(member.public_key, signing_domain(DOMAIN_VOTE, chain_id), encode(vote.body()), vote.signature)


def verify_commit_certificate(committee: Committee, certificate: CommitCertificate, *, chain_id: bytes) -> None:
    """Raise `InvalidCertificate` unless ≥ quorum of `committee` precommitted the certified value
    on the network `chain_id`."""
    body = VoteBody(Step.PRECOMMIT, certificate.height, certificate.round, certificate.value_digest)
    signatures = Certificate(certificate.signer_indices, certificate.signatures)
    verify_certificate(committee, signing_domain(DOMAIN_VOTE, chain_id), encode(body), signatures)


def verify_certified_value(committee: Committee, value: bytes, certificate: CommitCertificate,
                           *, chain_id: bytes) -> None:
    """Raise `ValueNotCertified` unless `certificate` names `value`, `InvalidCertificate` unless
    ≥ quorum of `committee` precommitted it: the one check for a decision taken from a peer."""
    if value_digest(value) != certificate.value_digest:
        raise ValueNotCertified(reason="value does not match the certified digest")
    verify_commit_certificate(committee, certificate, chain_id=chain_id)
