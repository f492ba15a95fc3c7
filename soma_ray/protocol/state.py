"""The chain state: canonical bytes by key, an incremental state root, savepoints and deltas.

How to read and update objects
------------------------------
Objects are stored as their canonical encoding, so a value you read is a fresh copy: change it,
then write it back, or nothing happens::

    account = state.account(address)          # Account(0, 0) if absent
    account.balance -= amount
    state.put_account(address, account)

    model = state.require(MODEL, model_id, Model)   # ObjectNotFound if absent
    model.status = "Active"
    state.put(MODEL, model_id, model)

    system = state.system()                     # the one SystemState
    state.put_system(system)

Keys are `tag || id` where `tag` is one of the one-byte namespaces below (`ACCOUNT`, `MODEL`,
`TARGET`, …); `state.ids(TAG)` lists the ids of a namespace in ascending order.

`state_root()` is the sum mod 2^256 of blake2b(DOMAIN_STATE_ENTRY || encode([key, value])) over
all entries: order-independent, updated in O(1) per write.

`begin()` opens a savepoint; `rollback()` undoes every write since the matching `begin()`,
`commit()` keeps them (savepoints nest). `mark()` starts a new delta and `changes()` returns the
`(key, value-or-None)` pairs written since then, so a validator persists only what changed.

`derived(name, tags, build)` memoizes data computed from some namespaces (e.g. the model index
for target selection) until any entry of those namespaces is written, rolled back included.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

from soma_ray.protocol.encoding import DOMAIN_STATE_ENTRY, decode, digest, encode
from soma_ray.protocol.errors import ObjectNotFound
from soma_ray.protocol.types import Account, SystemState

T = TypeVar("T")

ACCOUNT = b"a"
SYSTEM = b"s"
VALIDATOR = b"v"
STAKING_POOL = b"p"
STAKED_SOMA = b"k"
MODEL = b"m"
TARGET = b"t"
SUBMISSION = b"u"
CHALLENGE = b"c"

KIND_NAMES = {
    ACCOUNT: "account", SYSTEM: "system state", VALIDATOR: "validator", STAKING_POOL: "staking pool",
    STAKED_SOMA: "staked soma", MODEL: "model", TARGET: "target", SUBMISSION: "submission",
    CHALLENGE: "challenge",
}
_ROOT_MODULUS = 1 << 256


def _entry_hash(key: bytes, value: bytes) -> int:
    return int.from_bytes(digest(DOMAIN_STATE_ENTRY, (key, value)), "big")


class State:
    """All objects of the chain, keyed by `tag || id`, stored as canonical bytes."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._by_tag: dict[bytes, set[bytes]] = {}
        self._root = 0
        self._savepoints: list[list[tuple[bytes, bytes | None]]] = []
        self._changed: set[bytes] = set()
        self._versions: dict[bytes, int] = {}  # writes per namespace, for `derived`
        self._derived: dict[str, tuple[tuple[int, ...], object]] = {}

    # -- raw access ------------------------------------------------------------------------------
    def get_raw(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def put_raw(self, key: bytes, value: bytes | None) -> None:
        """Write (or delete, with None) one entry, keeping the root, savepoints and delta."""
        old = self._data.get(key)
        if old == value:
            return
        if self._savepoints:
            self._savepoints[-1].append((key, old))
        self._changed.add(key)
        self._apply(key, old, value)

    def _apply(self, key: bytes, old: bytes | None, value: bytes | None) -> None:
        tag, ident = key[:1], key[1:]
        self._versions[tag] = self._versions.get(tag, 0) + 1
        if old is not None:
            self._root = (self._root - _entry_hash(key, old)) % _ROOT_MODULUS
        if value is None:
            del self._data[key]
            self._by_tag[tag].discard(ident)
        else:
            self._data[key] = value
            self._by_tag.setdefault(tag, set()).add(ident)
            self._root = (self._root + _entry_hash(key, value)) % _ROOT_MODULUS

    # -- typed access ----------------------------------------------------------------------------
    def get(self, tag: bytes, ident: bytes, type_: type[T]) -> T | None:
        raw = self._data.get(tag + ident)
        return None if raw is None else decode(raw, type_)

    def require(self, tag: bytes, ident: bytes, type_: type[T]) -> T:
        """The object, or `ObjectNotFound(kind, id)`."""
        found = self.get(tag, ident, type_)
        if found is None:
            raise ObjectNotFound(kind=KIND_NAMES.get(tag, tag.hex()), id=ident)
        return found

    def put(self, tag: bytes, ident: bytes, obj: object) -> None:
        self.put_raw(tag + ident, encode(obj))

    def delete(self, tag: bytes, ident: bytes) -> None:
        self.put_raw(tag + ident, None)

    def ids(self, tag: bytes) -> list[bytes]:
        """Ids of one namespace in ascending byte order (a deterministic iteration order)."""
        return sorted(self._by_tag.get(tag, ()))

    def values(self, tag: bytes, type_: type[T]) -> Iterator[T]:
        for ident in self.ids(tag):
            yield decode(self._data[tag + ident], type_)

    def account(self, address: bytes) -> Account:
        return self.get(ACCOUNT, address, Account) or Account()

    def put_account(self, address: bytes, account: Account) -> None:
        # An empty account is not stored: absent and zero are the same state.
        if account.balance == 0 and account.nonce == 0:
            self.delete(ACCOUNT, address)
        else:
            self.put(ACCOUNT, address, account)

    def system(self) -> SystemState:
        return self.require(SYSTEM, b"", SystemState)

    def put_system(self, system: SystemState) -> None:
        self.put(SYSTEM, b"", system)

    # -- derived data --------------------------------------------------------------------------
    def derived(self, name: str, tags: tuple[bytes, ...], build: Callable[[], T]) -> T:
        """`build()`, reused until an entry under one of `tags` changes. The result is shared:
        callers must not modify it."""
        versions = tuple(self._versions.get(tag, 0) for tag in tags)
        cached = self._derived.get(name)
        if cached is not None and cached[0] == versions:
            return cached[1]
        value = build()
        self._derived[name] = (versions, value)
        return value

    # -- root, savepoints, deltas ----------------------------------------------------------------
    def state_root(self) -> bytes:
        return self._root.to_bytes(32, "big")

    def begin(self) -> None:
        self._savepoints.append([])

    def commit(self) -> None:
        undo = self._savepoints.pop()
        if self._savepoints:
            self._savepoints[-1].extend(undo)

    def rollback(self) -> None:
        for key, old in reversed(self._savepoints.pop()):
            self._apply(key, self._data.get(key), old)

    def mark(self) -> None:
        self._changed = set()

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """(key, value or None if deleted) for every key written since `mark()`, sorted by key."""
        return [(key, self._data.get(key)) for key in sorted(self._changed)]

    # -- persistence -----------------------------------------------------------------------------
    def items(self) -> list[tuple[bytes, bytes]]:
        return sorted(self._data.items())

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, bytes]]) -> "State":
        state = cls()
        for key, value in items:
            state._apply(key, state._data.get(key), value)
        return state

    def copy(self) -> "State":
        """An independent copy of the entries and root (open savepoints and the delta are not copied)."""
        clone = State()
        clone._data = dict(self._data)
        clone._by_tag = {tag: set(ids) for tag, ids in self._by_tag.items()}
        clone._root = self._root
        return clone

    def __len__(self) -> int:
        return len(self._data)
