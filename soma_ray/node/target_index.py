"""The target index: a read view of finalized targets, models and submissions (pure: no Ray, no
I/O). The actor `actors/target_state.py` feeds it the committed checkpoints; docs/target_index.md.

    index = TargetIndex.from_genesis(config.genesis_config())
    index.follow(checkpoint, effects)      # every certified checkpoint, in order, from 0
    page = index.list_targets(status="open", limit=50)
    more = index.list_targets(status="open", page_token=page.next_page_token)

It follows the chain by re-executing each checkpoint on its own State from genesis (the
validators' `Executor`), which also proves that the checkpoint gives the state root it names;
then it updates its secondary indexes from the objects the checkpoint wrote (the delta of
`Executed.changes`, read against the state before it is applied).

Statuses (the SDK's names, derived from the chain's `Target.status` and the current epoch E):

    Open / Committed, generation_epoch == E   -> "open"      (a miner may commit: Committed
                                                             counts, its commit may go stale)
    Open / Committed, generation_epoch <  E   -> "expired"   (ClaimRewards pays only the
                                                             finder's fee; the rest goes back)
    Filled, E <  fill_epoch + 2               -> "filled"    (challenges open until fill_epoch + 1)
    Filled, E >= fill_epoch + 2               -> "claimable" (ClaimRewards pays the split)
    Challenged                                -> "filled"    (an open challenge: never claimable)
    Settled                                   -> "settled"

(A Committed target of a past epoch cannot exist: the epoch change drops its commit.)

Order: targets are listed in creation order: the sequence of the checkpoint that created them
(genesis first), then their place among the ids that checkpoint's effects created. It is the
chain's own order, so a rebuilt index orders (and pages) alike, and a target created later
always comes after every page already read: paging never skips or repeats a target that
exists throughout.

Submissions and challenges: every submission and challenge the chain has held, kept after the
chain deletes them (a resolved or closed challenge, a slashed or dropped submission, one pruned
with its settled target), listed in creation order by miner, target, submission or challenger:

    submission  committed -> revealed <-> challenged -> claimed (bond back) | slashed (a
                ChallengerWins) ; committed -> dropped (the commit went stale or its epoch ended)
    challenge   open -> challenger_wins | miner_wins (ResolveChallenge) | closed (its window
                ended unresolved: the bond back, the miner stays the winner)

The closed ones are kept up to MAX_CLOSED_RECORDS of each kind (the oldest closed go first).

Leaderboard: a *hit* (a miner's) is a *win* (of the model the miner revealed with): a revealed
submission that stands: counted when a checkpoint leaves a target Filled with it, uncounted if a
later checkpoint undoes it (ChallengerWins), kept after the claim and after the target is pruned.
Rewards and earnings are what `ClaimRewards` of a filled target pays, computed as the claim does
from the target's reward pool R before it: finder's fee f = R × claimer_fee_bps / 10000 (to the
claimer, not counted here), miner reward ⌊(R − f) × submitter_share_bps / 10000⌋, model
earnings R − f − miner reward (its owner's commission included). Bonds returned are not rewards.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from typing import Iterable

import numpy as np

from soma_ray.node.executor import Executed, Executor
from soma_ray.protocol.checkpoint import executed_transactions
from soma_ray.protocol.encoding import decode
from soma_ray.protocol.epoch import SYSTEM_SENDER
from soma_ray.protocol.errors import MalformedInput, ModelHasNoWeights, ObjectNotFound, ZeroEmbedding
from soma_ray.protocol.genesis import GenesisConfig, genesis
from soma_ray.protocol.submissions import claim_split, required_bond
from soma_ray.protocol.state import CHALLENGE, MODEL, STAKING_POOL, SUBMISSION, TARGET, State
from soma_ray.protocol.targets import (
    DISTANCE_SCALE, accepts_commit, as_embedding, claimable_epoch, is_claimable,
)
from soma_ray.protocol.types import (
    Challenge, Checkpoint, ClaimRewards, Model, ResolveChallenge,
    StakingPool, Submission, Target, TransactionEffects,
)
from soma_ray.wire import (
    CHALLENGE_STATUSES, MAX_PAGE, STATUSES, SUBMISSION_STATUSES, ChallengePage, ChallengeView,
    IndexStatus, Leaderboard, MinerScore, ModelManifest, ModelScore, ModelView, NearbyTarget,
    SubmissionPage, SubmissionView, TargetPage, TargetView,
)

_TOKEN_CHARS = 16  # a page token: the last listed target's order key, 16 hex digits
_TOKEN = re.compile(f"[0-9a-f]{{{_TOKEN_CHARS}}}")
_BULK = 32  # more changes than this to one sorted list: rebuild it instead of bisecting
# Closed submissions (claimed, slashed, dropped) and closed challenges kept, of each kind.
MAX_CLOSED_RECORDS = 100_000
_SUBMISSION_CLOSED = frozenset({"claimed", "slashed", "dropped"})
_CHALLENGE_CLOSED = frozenset({"challenger_wins", "miner_wins", "closed"})


def view_status(target: Target, epoch: int) -> str:
    """The SDK status of `target` in epoch `epoch` (the module docstring's table)."""
    if target.status in ("Open", "Committed"):
        return "open" if accepts_commit(target.generation_epoch, epoch) else "expired"
    if target.status == "Filled":
        return "claimable" if is_claimable(target.fill_epoch, epoch) else "filled"
    if target.status == "Challenged":
        return "filled"
    return "settled"


# ----------------------------------------------------------------------------- internals


class _SortedKeys:
    """Order keys (ints) kept sorted: bisect for a few changes, a rebuild for many."""

    __slots__ = ("keys",)

    def __init__(self) -> None:
        self.keys: list[int] = []

    def update(self, adds: set[int], removes: set[int]) -> None:
        if len(adds) + len(removes) > _BULK:
            present = set(self.keys)
            present -= removes
            present |= adds
            self.keys = sorted(present)
            return
        for key in removes:
            i = bisect_left(self.keys, key)
            if i < len(self.keys) and self.keys[i] == key:
                del self.keys[i]
        for key in adds:
            i = bisect_left(self.keys, key)
            if i == len(self.keys) or self.keys[i] != key:
                self.keys.insert(i, key)


class _Record:
    """What the index holds of one target: the object, its submission, its order and status."""

    __slots__ = ("target", "submission", "order", "status")

    def __init__(self, target: Target, submission: Submission | None, order: int, status: str):
        self.target = target
        self.submission = submission
        self.order = order
        self.status = status

    @property
    def submitter(self) -> bytes | None:
        return None if self.submission is None else self.submission.miner

    def fill(self) -> tuple[bytes, bytes, bytes] | None:
        """(submission id, miner, model id) of the standing revealed submission, if any."""
        s = self.submission
        if s is None or s.revealed is None or self.target.status not in ("Filled", "Challenged", "Settled"):
            return None
        return s.id, s.miner, s.revealed.model_id


class _Moves:
    """Pending additions and removals per sorted list, applied together."""

    def __init__(self) -> None:
        self._pending: dict[tuple[int, object], tuple[dict, set[int], set[int]]] = {}

    def move(self, group: dict, name, order: int, add: bool) -> None:
        entry = self._pending.get((id(group), name))
        if entry is None:
            entry = self._pending[(id(group), name)] = (group, set(), set())
        (entry[1] if add else entry[2]).add(order)

    def apply(self) -> set:
        """Apply every move; returns the (group id, name) pairs that changed."""
        changed = set()
        for (gid, name), (group, adds, removes) in self._pending.items():
            both = adds & removes  # removed then added back: unchanged
            adds, removes = adds - both, removes - both
            if adds or removes:
                changed.add((gid, name))
                keys = group.get(name)
                if keys is None:
                    keys = group[name] = _SortedKeys()
                keys.update(adds, removes)
                if not keys.keys:
                    del group[name]
        return changed


class _History:
    """Records (submissions or challenges) by id, in creation order, with sorted lists of order
    keys by each filter's value (new records come last, but within one checkpoint in any order:
    inserted in place), and the closed ones bounded."""

    def __init__(self, filters: tuple[str, ...], closed: frozenset[str], what: str) -> None:
        self.records: dict[bytes, list] = {}  # id -> [view fields dict, order]
        self.by_order: dict[int, bytes] = {}
        self.every: list[int] = []
        self.filters = {name: {} for name in filters}  # name -> value -> [orders]
        self.closed_statuses = closed
        self.closed: dict[bytes, None] = {}  # closed ids, oldest first
        self.what = what

    def add(self, ident: bytes, order: int, fields: dict) -> None:
        self.records[ident] = [fields, order]
        self.by_order[order] = ident
        insort(self.every, order)
        for name, groups in self.filters.items():
            insort(groups.setdefault(fields[name], []), order)

    def set_status(self, ident: bytes, status: str, epoch: int, **changes) -> None:
        record = self.records.get(ident)
        if record is None:
            return
        fields = record[0]
        fields.update(changes)
        if fields["status"] == status:
            return
        fields["status"] = status
        if status in self.closed_statuses:
            fields["closed_epoch"] = epoch
            self.closed[ident] = None
        else:
            fields["closed_epoch"] = None
            self.closed.pop(ident, None)

    def evict(self, keep: int) -> None:
        """Forget the oldest closed records beyond `keep`."""
        if len(self.closed) <= keep:
            return
        gone = list(self.closed)[:len(self.closed) - keep]
        orders = set()
        for ident in gone:
            del self.closed[ident]
            fields, order = self.records.pop(ident)
            del self.by_order[order]
            orders.add(order)
            for name, groups in self.filters.items():
                kept = [o for o in groups[fields[name]] if o != order]
                if kept:
                    groups[fields[name]] = kept
                else:
                    del groups[fields[name]]
        self.every = [o for o in self.every if o not in orders]

    def page(self, view, filters: dict, status: str | None, limit: int, page_token: str | None):
        """(views, next token) of the records matching `filters` (name -> value) and `status`."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise MalformedInput(reason=f"limit {limit!r} is outside 1..{MAX_PAGE}")
        after = -1 if page_token is None else _parse_token(page_token)
        lists = [self.filters[name].get(bytes(value), []) for name, value in filters.items() if value is not None]
        keys = min(lists, key=len) if lists else self.every
        found = []
        for i in range(bisect_right(keys, after), len(keys)):
            fields, order = self.records[self.by_order[keys[i]]]
            if status is not None and fields["status"] != status:
                continue
            if any(value is not None and fields[name] != bytes(value) for name, value in filters.items()):
                continue
            if len(found) == limit:
                return [view(f) for f, _ in found], _token(found[-1][1])
            found.append((fields, order))
        return [view(f) for f, _ in found], None

    def get(self, ident: bytes, view):
        record = self.records.get(bytes(ident))
        if record is None:
            raise ObjectNotFound(kind=self.what, id=bytes(ident))
        return view(record[0])


class OutOfOrder(Exception):
    """A checkpoint handed to `follow` is not the next one."""

    def __init__(self, expected: int, got: int):
        self.expected, self.got = expected, got
        super().__init__(f"the index expects checkpoint {expected}, got {got}")


# ----------------------------------------------------------------------------- the index


class TargetIndex:
    def __init__(self, state: State):
        """An index of `state`, the genesis state (it is re-executed on, so it becomes the
        index's own)."""
        self._verified: set[bytes] = set()
        self._executor = Executor(state, None, self._verified)
        self._records: dict[bytes, _Record] = {}
        self._by_order: dict[int, bytes] = {}
        self._by_status: dict[str, _SortedKeys] = {}
        self._by_submitter: dict[bytes, _SortedKeys] = {}
        self._by_model: dict[bytes, _SortedKeys] = {}
        self._every: dict[None, _SortedKeys] = {}  # one list: every target
        self._wins: Counter = Counter()
        self._earnings: Counter = Counter()
        self._hits: Counter = Counter()
        self._rewards: Counter = Counter()
        self._open_version = 0
        self._open_matrix: tuple[int, np.ndarray, list[int]] | None = None
        self._submissions = _History(("miner", "target_id"), _SUBMISSION_CLOSED, "submission")
        self._challenges = _History(("submission_id", "challenger", "target_id"), _CHALLENGE_CLOSED, "challenge")
        self._epoch = state.system().epoch
        self._params = state.system().parameters
        moves = _Moves()
        for number, target_id in enumerate(state.ids(TARGET)):  # genesis: in id order
            self._refresh(target_id, number, moves, ())
        self._apply_moves(moves)

    @classmethod
    def from_genesis(cls, config: GenesisConfig) -> "TargetIndex":
        return cls(genesis(config))

    # -- following the chain ---------------------------------------------------------------------
    @property
    def synced_sequence(self) -> int | None:
        """The last checkpoint applied (None while only genesis is)."""
        latest = self._executor.latest
        return None if latest is None else latest.sequence

    @property
    def next_sequence(self) -> int:
        return self._executor.next_sequence

    @property
    def state(self) -> State:
        """The index's state (read only: change it and the index is wrong)."""
        return self._executor.state

    def follow(self, checkpoint: Checkpoint, effects: list[TransactionEffects] | None = None) -> None:
        """Apply the next certified checkpoint. `effects`: the ones certified with it (checked
        against its effects digest by the feed); entries they record as admitted skip the
        signature check (the committee checked them; the re-executed state root must match
        anyway). Raises OutOfOrder, or executor.InvalidCheckpoint when it does not re-execute
        to the state it names (the index then stays at the checkpoint before)."""
        if checkpoint.sequence != self.next_sequence:
            raise OutOfOrder(self.next_sequence, checkpoint.sequence)
        self._verified.clear()
        if effects is not None and len(effects) == len(checkpoint.transactions):
            self._verified.update(raw for raw, e in zip(checkpoint.transactions, effects)
                                  if e.sender != SYSTEM_SENDER)
        try:
            executed = self._executor.execute(checkpoint.sequence, checkpoint)
        finally:
            self._verified.clear()
        claims = self._claims(executed)
        olds = {key: self.state.get_raw(key) for key, _ in executed.changes
                if key[:1] in (SUBMISSION, CHALLENGE)}
        self._executor.apply(executed)
        self._update(executed, olds, claims)
        self._record_history(executed, olds)

    def _claims(self, executed: Executed) -> set[bytes]:
        """Targets this checkpoint claimed; the split of each filled one is counted (from the
        record as it was before the checkpoint: a filled target's pool cannot change before
        its claim within one checkpoint)."""
        claimed = set()
        params = self._params
        for tx, _ in executed_transactions(executed.checkpoint, executed.effects):
            if not isinstance(tx.kind, ClaimRewards):
                continue
            target_id = tx.kind.target_id
            claimed.add(target_id)
            record = self._records.get(target_id)
            fill = None if record is None else record.fill()
            if fill is None or record.target.status == "Settled":
                continue  # an expired target: only the finder's fee, not counted
            _, miner, model_id = fill
            _, miner_reward, model_earnings = claim_split(params, record.target.reward_pool)
            self._rewards[miner] += miner_reward
            self._earnings[model_id] += model_earnings
        return claimed

    def _update(self, executed: Executed, olds: dict, claims: set[bytes]) -> None:
        state = self.state
        system = state.system()
        epoch_changed = system.epoch != self._epoch
        self._epoch, self._params = system.epoch, system.parameters
        touched: set[bytes] = set()
        for key, value in executed.changes:
            tag, ident = key[:1], key[1:]
            if tag == TARGET:
                touched.add(ident)
            elif tag in (SUBMISSION, CHALLENGE):
                raw = value if value is not None else olds.get(key)
                if raw is not None:
                    touched.add(decode(raw, Submission if tag == SUBMISSION else Challenge).target_id)
        if epoch_changed:  # open -> expired, filled -> claimable
            for status in ("open", "filled"):
                keys = self._by_status.get(status)
                touched.update(self._by_order[o] for o in (keys.keys if keys else ()))
        base = (executed.checkpoint.sequence + 1) << 32
        created = [i for e in executed.effects for i in e.created]
        number = {ident: base | n for n, ident in enumerate(created)}
        extra = sorted(t for t in touched if t not in number and t not in self._records)
        number.update((t, base | (len(created) + n)) for n, t in enumerate(extra))
        moves = _Moves()
        for target_id in touched:
            self._refresh(target_id, number.get(target_id), moves, claims)
        self._apply_moves(moves)

    def _record_history(self, executed: Executed, olds: dict) -> None:
        """The submissions and challenges index, from the checkpoint's changes (module docstring)."""
        verdicts = {tx.kind.challenge_id: tx.kind.verdict
                    for tx, _ in executed_transactions(executed.checkpoint, executed.effects)
                    if isinstance(tx.kind, ResolveChallenge)}
        epoch = executed.checkpoint.epoch
        base = (executed.checkpoint.sequence + 1) << 32
        created = {ident: n for n, ident in enumerate(i for e in executed.effects for i in e.created)}
        slashed: set[bytes] = set()
        changes = sorted(((key, value) for key, value in executed.changes if key[:1] in (SUBMISSION, CHALLENGE)),
                         key=lambda change: change[0][:1] != CHALLENGE)  # challenges first
        extra = 0
        for key, value in changes:
            tag, ident = key[:1], key[1:]
            if ident not in created and ident not in (self._challenges.records if tag == CHALLENGE
                                                      else self._submissions.records) and value is not None:
                created[ident] = len(created) + extra
                extra += 1
            if tag == CHALLENGE:
                self._challenge_changed(ident, value, olds.get(key), base | created.get(ident, 0), epoch,
                                        verdicts, slashed)
            else:
                self._submission_changed(ident, value, olds.get(key), base | created.get(ident, 0), epoch, slashed)
        self._submissions.evict(MAX_CLOSED_RECORDS)
        self._challenges.evict(MAX_CLOSED_RECORDS)

    def _challenge_changed(self, ident: bytes, value: bytes | None, old: bytes | None, order: int,
                           epoch: int, verdicts: dict, slashed: set) -> None:
        history = self._challenges
        if value is not None:
            if ident not in history.records:
                c = decode(value, Challenge)
                history.add(ident, order, dict(
                    id=c.id, submission_id=c.submission_id, target_id=c.target_id, challenger=c.challenger,
                    kind=c.kind, bond=c.bond, opened_epoch=c.opened_epoch, status="open", closed_epoch=None))
                self._submissions.set_status(c.submission_id, "challenged", epoch)
            return
        if old is None:
            return
        c = decode(old, Challenge)
        verdict = verdicts.get(ident)
        status = {"ChallengerWins": "challenger_wins", "MinerWins": "miner_wins"}.get(verdict, "closed")
        history.set_status(ident, status, epoch)
        if status == "challenger_wins":
            slashed.add(c.submission_id)
        else:  # the miner stays the winner
            self._submissions.set_status(c.submission_id, "revealed", epoch)

    def _submission_changed(self, ident: bytes, value: bytes | None, old: bytes | None, order: int,
                            epoch: int, slashed: set) -> None:
        history = self._submissions
        if value is None:
            if old is None:
                return
            s = decode(old, Submission)
            if ident in slashed:
                status = "slashed"
            elif s.revealed is None:
                status = "dropped"
            else:  # pruned with its settled target: it stays what it was (claimed)
                status = "claimed" if s.bond == 0 else history.records.get(ident, [{"status": "revealed"}])[0]["status"]
                if status not in _SUBMISSION_CLOSED:
                    status = "claimed"
            history.set_status(ident, status, epoch)
            return
        s = decode(value, Submission)
        revealed = s.revealed
        fields = dict(model_id=None if revealed is None else revealed.model_id,
                      data_url=None if revealed is None else revealed.data_url,
                      data_size=None if revealed is None else revealed.data_size,
                      loss_score=None if revealed is None else revealed.loss_score,
                      distance=None if revealed is None else revealed.distance, bond=s.bond)
        if ident not in history.records:
            history.add(ident, order, dict(id=s.id, target_id=s.target_id, miner=s.miner, status="committed",
                                           commit_epoch=s.commit_epoch, closed_epoch=None, **fields))
        if revealed is None:
            status = "committed"
        elif s.bond == 0:
            status = "claimed"
        else:
            target = self.state.get(TARGET, s.target_id, Target)
            status = "challenged" if target is not None and target.status == "Challenged" else "revealed"
        history.set_status(ident, status, epoch, **fields)

    def _refresh(self, target_id: bytes, order: int | None, moves: _Moves, claims) -> None:
        """Bring one target's record and its places in the indexes up to the state."""
        state = self.state
        previous = self._records.get(target_id)
        target = state.get(TARGET, target_id, Target)
        record = None
        if target is not None:
            submission = (None if target.submission_id is None
                          else state.get(SUBMISSION, target.submission_id, Submission))
            order = previous.order if previous is not None else order
            record = _Record(target, submission, order, view_status(target, self._epoch))
        old_fill = None if previous is None else previous.fill()
        new_fill = None if record is None else record.fill()
        if old_fill != new_fill:
            pruned_after_claim = record is None and (
                previous.target.status == "Settled" or target_id in claims)
            if old_fill is not None and not pruned_after_claim:
                self._count(old_fill, -1)
            if new_fill is not None:
                self._count(new_fill, +1)
        if previous is not None:
            moves.move(self._by_status, previous.status, previous.order, False)
            if previous.submitter is not None:
                moves.move(self._by_submitter, previous.submitter, previous.order, False)
        if record is None:
            if previous is not None:
                for model_id in previous.target.model_ids:
                    moves.move(self._by_model, model_id, previous.order, False)
                moves.move(self._every, None, previous.order, False)
                del self._records[target_id]
                del self._by_order[previous.order]
            return
        self._records[target_id] = record
        self._by_order[record.order] = target_id
        moves.move(self._by_status, record.status, record.order, True)
        if record.submitter is not None:
            moves.move(self._by_submitter, record.submitter, record.order, True)
        if previous is None:
            for model_id in target.model_ids:
                moves.move(self._by_model, model_id, record.order, True)
            moves.move(self._every, None, record.order, True)

    def _count(self, fill: tuple[bytes, bytes, bytes], step: int) -> None:
        _, miner, model_id = fill
        self._hits[miner] += step
        self._wins[model_id] += step

    def _apply_moves(self, moves: _Moves) -> None:
        changed = moves.apply()
        if (id(self._by_status), "open") in changed:
            self._open_version += 1

    # -- queries ---------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self._epoch

    def view(self, record: _Record) -> TargetView:
        t, s = record.target, record.submission
        revealed = None if s is None else s.revealed
        committed = t.status == "Committed" and s is not None
        return TargetView(
            id=t.id, status=record.status, embedding=t.embedding, model_ids=list(t.model_ids),
            distance_threshold=t.distance_threshold / DISTANCE_SCALE, threshold_fixed=t.distance_threshold,
            reward_pool=t.reward_pool, generation_epoch=t.generation_epoch,
            bond_amount=self._params.submission_min_bond,
            submission_id=t.submission_id, submitter=None if s is None else s.miner,
            winning_model_id=None if revealed is None else revealed.model_id,
            fill_epoch=t.fill_epoch,
            claimable_epoch=None if t.fill_epoch is None else claimable_epoch(t.fill_epoch),
            reveal_deadline_ms=s.commit_timestamp_ms + self._params.reveal_window_ms if committed else None,
            settled_epoch=t.settled_epoch,
        )

    def get_target(self, target_id: bytes) -> TargetView:
        """The target, or ObjectNotFound (never existed, or pruned by the chain after settling)."""
        record = self._records.get(bytes(target_id))
        if record is None:
            raise ObjectNotFound(kind="target", id=bytes(target_id))
        return self.view(record)

    def required_bond(self, data_size: int) -> int:
        """The least bond a commit must post to reveal `data_size` bytes later."""
        if not 0 <= data_size <= self._params.max_submission_bytes:
            raise MalformedInput(reason=f"data_size {data_size} is outside 0..{self._params.max_submission_bytes}")
        return required_bond(self._params, data_size)

    def list_targets(self, status: str | None = None, limit: int = 50, page_token: str | None = None,
                     submitter: bytes | None = None, model_id: bytes | None = None) -> TargetPage:
        """Targets in creation order, filtered by status (STATUSES), submitter (the miner of the
        committed or winning submission) and one of the target's models; `limit` per page
        (1..MAX_PAGE); `page_token` from the previous page continues after it."""
        if status is not None and status not in STATUSES:
            raise MalformedInput(reason=f"status {status!r} is not one of {', '.join(STATUSES)}")
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise MalformedInput(reason=f"limit {limit!r} is outside 1..{MAX_PAGE}")
        after = -1 if page_token is None else _parse_token(page_token)
        filters = []
        if status is not None:
            filters.append(self._by_status.get(status))
        if submitter is not None:
            filters.append(self._by_submitter.get(bytes(submitter)))
        if model_id is not None:
            filters.append(self._by_model.get(bytes(model_id)))
        if any(keys is None for keys in filters):
            return TargetPage([], None)
        if filters:
            keys = min((k.keys for k in filters), key=len)
        else:
            keys = self._every[None].keys if self._every else []
        found: list[_Record] = []
        for i in range(bisect_right(keys, after), len(keys)):
            record = self._records[self._by_order[keys[i]]]
            if ((status is None or record.status == status)
                    and (submitter is None or record.submitter == submitter)
                    and (model_id is None or model_id in record.target.model_ids)):
                if len(found) == limit:
                    return TargetPage([self.view(r) for r in found], _token(found[-1].order))
                found.append(record)
        return TargetPage([self.view(r) for r in found], None)

    def nearest_open_targets(self, embedding, k: int = 10) -> list[NearbyTarget]:
        """The `k` open targets nearest to `embedding` (float32, `embedding_dim`) by cosine
        distance (float arithmetic: off-chain advice; the chain decides with the fixed point),
        nearest first, ties in creation order."""
        if not isinstance(k, int) or not 1 <= k <= MAX_PAGE:
            raise MalformedInput(reason=f"k {k!r} is outside 1..{MAX_PAGE}")
        query = as_embedding(embedding, self._params.embedding_dim).astype(np.float64)
        norm = float(np.sqrt(query @ query))
        if norm == 0.0:
            raise ZeroEmbedding()
        orders, matrix = self._open_targets_matrix()
        if not orders:
            return []
        distances = 1.0 - (matrix @ (query / norm).astype(np.float32)).astype(np.float64)
        count = min(k, len(orders))
        nearest = np.argpartition(distances, count - 1)[:count] if count < len(orders) else np.arange(count)
        ranked = sorted(nearest.tolist(), key=lambda i: (distances[i], orders[i]))
        return [NearbyTarget(float(distances[i]), self.view(self._records[self._by_order[orders[i]]]))
                for i in ranked]

    def _open_targets_matrix(self) -> tuple[list[int], np.ndarray]:
        cached = self._open_matrix
        if cached is None or cached[0] != self._open_version:
            keys = self._by_status.get("open")
            orders = list(keys.keys) if keys else []
            rows = b"".join(self._records[self._by_order[o]].target.embedding for o in orders)
            matrix = np.frombuffer(rows, dtype="<f4").astype(np.float32).reshape(len(orders), self._params.embedding_dim)
            if len(orders):
                matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            cached = self._open_matrix = (self._open_version, matrix, orders)
        return cached[2], cached[1]

    def get_model(self, model_id: bytes) -> ModelView:
        model = self.state.get(MODEL, bytes(model_id), Model)
        if model is None:
            raise ObjectNotFound(kind="model", id=bytes(model_id))
        return self._model_view(model)

    def _model_view(self, model: Model) -> ModelView:
        pool = self.state.get(STAKING_POOL, model.staking_pool_id, StakingPool)
        return ModelView(
            model_id=model.id, owner=model.owner, status=model.status, embedding=model.embedding,
            stake=0 if pool is None else pool.soma_balance, commission_bps=model.commission_bps,
            has_pending_update=model.pending_update is not None,
        )

    def active_models(self) -> list[ModelView]:
        """Every Active model, by id (rebuilt only after a model or a pool changed)."""
        def build() -> list[ModelView]:
            return [self._model_view(m) for m in self.state.values(MODEL, Model) if m.status == "Active"]
        return list(self.state.derived("target_index.active_models", (MODEL, STAKING_POOL), build))

    def model_manifests(self, model_ids: Iterable[bytes]) -> list[ModelManifest]:
        """The weights manifest and revealed decryption key of each model, in the order asked.
        An unknown model raises ObjectNotFound(kind="model"); a model without weights (no
        manifest, or no revealed key) raises ModelHasNoWeights naming it: never dropped."""
        found = []
        for model_id in model_ids:
            model = self.state.get(MODEL, bytes(model_id), Model)
            if model is None:
                raise ObjectNotFound(kind="model", id=bytes(model_id))
            manifest = model.weights_manifest
            if manifest is None or not model.decryption_key:
                raise ModelHasNoWeights(model_id=bytes(model_id))
            found.append(ModelManifest(model.id, manifest.url, manifest.checksum, manifest.size,
                                      model.decryption_key))
        return found

    def list_submissions(self, miner: bytes | None = None, target_id: bytes | None = None,
                         status: str | None = None, limit: int = 50,
                         page_token: str | None = None) -> SubmissionPage:
        """Submissions in creation order, by miner, target and status (SUBMISSION_STATUSES)."""
        if status is not None and status not in SUBMISSION_STATUSES:
            raise MalformedInput(reason=f"status {status!r} is not one of {', '.join(SUBMISSION_STATUSES)}")
        found, token = self._submissions.page(
            _submission_view, {"miner": miner, "target_id": target_id}, status, limit, page_token)
        return SubmissionPage(found, token)

    def get_submission(self, submission_id: bytes) -> SubmissionView:
        return self._submissions.get(submission_id, _submission_view)

    def list_challenges(self, submission_id: bytes | None = None, challenger: bytes | None = None,
                        target_id: bytes | None = None, status: str | None = None, limit: int = 50,
                        page_token: str | None = None) -> ChallengePage:
        """Challenges in creation order, by submission, challenger, target and status
        (CHALLENGE_STATUSES), the resolved and closed ones too."""
        if status is not None and status not in CHALLENGE_STATUSES:
            raise MalformedInput(reason=f"status {status!r} is not one of {', '.join(CHALLENGE_STATUSES)}")
        found, token = self._challenges.page(
            _challenge_view, {"submission_id": submission_id, "challenger": challenger, "target_id": target_id},
            status, limit, page_token)
        return ChallengePage(found, token)

    def get_challenge(self, challenge_id: bytes) -> ChallengeView:
        return self._challenges.get(challenge_id, _challenge_view)

    def leaderboard(self, limit: int = 100) -> Leaderboard:
        """Models by wins and earnings, miners by hits and rewards (module docstring)."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise MalformedInput(reason=f"limit {limit!r} is outside 1..{MAX_PAGE}")
        models = sorted((ModelScore(m, self._wins[m], self._earnings[m])
                         for m in set(self._wins) | set(self._earnings)
                         if self._wins[m] or self._earnings[m]),
                        key=lambda s: (-s.wins, -s.earnings, s.model_id))
        miners = sorted((MinerScore(a, self._hits[a], self._rewards[a])
                         for a in set(self._hits) | set(self._rewards)
                         if self._hits[a] or self._rewards[a]),
                        key=lambda s: (-s.hits, -s.rewards, s.address))
        return Leaderboard(models[:limit], miners[:limit])

    def status(self) -> IndexStatus:
        counts = [(s, len(self._by_status[s].keys) if s in self._by_status else 0) for s in STATUSES]
        return IndexStatus(self.synced_sequence, self._epoch, self.state.state_root(),
                           len(self._records), counts)


def _submission_view(fields: dict) -> SubmissionView:
    return SubmissionView(**fields)


def _challenge_view(fields: dict) -> ChallengeView:
    return ChallengeView(**fields)


def _token(order: int) -> str:
    return f"{order:0{_TOKEN_CHARS}x}"


def _parse_token(token) -> int:
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise MalformedInput(reason="the page token is not one this index gave")
    return int(token, 16)
