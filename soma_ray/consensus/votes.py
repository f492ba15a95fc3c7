"""Vote bookkeeping for one height: tallies by (round, kind, value) and equivocation evidence."""
from __future__ import annotations

from collections import defaultdict

from soma_ray.consensus.messages import Step, Vote, VoteEquivocation
from soma_ray.protocol.crypto import Committee


class VoteBook:
    """Verified votes of one height. Adding returns what the vote was: new, duplicate or evidence."""

    def __init__(self, committee: Committee) -> None:
        self._powers = [m.voting_power for m in committee.members]
        self._votes: dict[tuple[int, Step], dict[int, Vote]] = defaultdict(dict)
        self._power: dict[tuple[int, Step, bytes | None], int] = defaultdict(int)
        self._any_power: dict[tuple[int, Step], int] = defaultdict(int)
        self._round_signers: dict[int, set[int]] = defaultdict(set)

    def add(self, vote: Vote) -> str | VoteEquivocation:
        """Record `vote`; "new", "duplicate", or the evidence when its signer already voted otherwise."""
        seen = self._votes[(vote.round, vote.kind)]
        earlier = seen.get(vote.signer)
        if earlier is not None:
            return "duplicate" if earlier == vote else VoteEquivocation(first=earlier, second=vote)
        seen[vote.signer] = vote
        power = self._powers[vote.signer]
        self._power[(vote.round, vote.kind, vote.value_digest)] += power
        self._any_power[(vote.round, vote.kind)] += power
        self.saw_signer(vote.round, vote.signer)
        return "new"

    def saw_signer(self, round: int, signer: int) -> None:
        self._round_signers[round].add(signer)

    def power_for(self, round: int, kind: Step, digest: bytes | None) -> int:
        return self._power.get((round, kind, digest), 0)

    def power_any(self, round: int, kind: Step) -> int:
        return self._any_power.get((round, kind), 0)

    def round_power(self, round: int) -> int:
        """Voting power of the members that sent anything for `round`."""
        return sum(self._powers[s] for s in self._round_signers.get(round, ()))

    def rounds_seen(self) -> list[int]:
        return sorted(self._round_signers)

    def votes_for(self, round: int, kind: Step, digest: bytes | None) -> list[Vote]:
        """The recorded votes for one value, by ascending signer index."""
        seen = self._votes.get((round, kind), {})
        return [seen[s] for s in sorted(seen) if seen[s].value_digest == digest]
