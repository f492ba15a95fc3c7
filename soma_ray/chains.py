"""Named networks: a chain name stands for a gateway URL (and, optionally, a scoring service of
one's own), so that `SomaClient(chain="testnet")` and `soma ... --chain testnet` reach it.

"localnet" is built in (http://127.0.0.1:8000, the gateway `soma start localnet` serves); any
other name is one the user added, kept in `$SOMA_HOME/chains.json` (`~/.soma/chains.json`):

    {"testnet": {"rpc_url": "https://gateway.example:8000", "scoring_url": "http://127.0.0.1:8001"}}

    soma network add testnet https://gateway.example:8000 [--scoring-url URL]
    soma network list | remove testnet

Pure: the standard library and the soma home (soma_ray.cluster.soma_home: no Ray imported).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from soma_ray.files import FileTooLarge, read_bounded, write_atomic

CHAINS_FILE = "chains.json"
LOCALNET = "localnet"
LOCALNET_URL = "http://127.0.0.1:8000"
MAX_CHAINS_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Chain:
    """What a chain name stands for."""

    name: str
    rpc_url: str
    scoring_url: str | None = None
    builtin: bool = False


BUILTIN = {LOCALNET: Chain(LOCALNET, LOCALNET_URL, builtin=True)}


class ChainError(ValueError):
    """A chain name or URL that cannot be used, or an unreadable chains file (one line)."""


def chains_path(home: Path | None = None) -> Path:
    if home is None:
        from soma_ray.cluster import soma_home  # a light module: no Ray at import

        home = soma_home()
    return Path(home) / CHAINS_FILE


def check_url(url: str, what: str = "rpc_url") -> str:
    """An http(s) URL with a host, without a trailing slash (ChainError otherwise)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChainError(f"{what} {url!r}: an http:// or https:// URL with a host")
    return url.strip().rstrip("/")


def check_name(name: str) -> str:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise ChainError(f"chain name {name!r}: 1 to 64 letters, digits, '-', '_' or '.'")
    return name


def read_chains(home: Path | None = None) -> dict[str, Chain]:
    """The chains the user added (the file's), by name; {} when there is no file."""
    path = chains_path(home)
    try:
        raw = read_bounded(path, MAX_CHAINS_FILE_BYTES)
    except FileNotFoundError:
        return {}
    except FileTooLarge as error:
        raise ChainError(str(error)) from None
    except OSError as error:
        raise ChainError(f"{path}: {error.strerror or error}") from None
    try:
        found = json.loads(raw or b"{}")
        return {name: Chain(check_name(name), check_url(entry["rpc_url"]),
                            None if entry.get("scoring_url") is None
                            else check_url(entry["scoring_url"], "scoring_url"))
                for name, entry in found.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ChainError(f"{path} is not a chains file ({error})") from None


def known_chains(home: Path | None = None) -> dict[str, Chain]:
    """Every chain a name can stand for: the built-in ones, then the user's."""
    return {**BUILTIN, **read_chains(home)}


def resolve_chain(name: str, home: Path | None = None) -> Chain:
    """The chain `name` stands for; ValueError (ChainError) naming the known ones otherwise."""
    chains = known_chains(home)
    if name not in chains:
        raise ChainError(f"unknown chain {name!r}: known are {', '.join(sorted(chains))} "
                         f"(`soma network add NAME URL` names one, in {chains_path(home)})")
    return chains[name]


def add_chain(name: str, rpc_url: str, scoring_url: str | None = None,
              home: Path | None = None) -> Chain:
    """Name a network (replacing what the name stood for); the built-in names cannot be taken."""
    name = check_name(name)
    if name in BUILTIN:
        raise ChainError(f"{name!r} is built in ({BUILTIN[name].rpc_url}): choose another name")
    chain = Chain(name, check_url(rpc_url), None if scoring_url is None else check_url(scoring_url, "scoring_url"))
    chains = read_chains(home)
    chains[name] = chain
    _write(chains, home)
    return chain


def remove_chain(name: str, home: Path | None = None) -> Chain:
    chains = read_chains(home)
    if name not in chains:
        raise ChainError(f"no chain named {name!r} in {chains_path(home)}"
                         + (" (it is built in)" if name in BUILTIN else ""))
    removed = chains.pop(name)
    _write(chains, home)
    return removed


def _write(chains: dict[str, Chain], home: Path | None) -> None:
    path = chains_path(home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {name: {k: v for k, v in asdict(chain).items() if k not in ("name", "builtin") and v is not None}
            for name, chain in sorted(chains.items())}
    write_atomic(path, (json.dumps(body, indent=1) + "\n").encode())


def endpoints(rpc_url: str | None = None, chain: str | None = None, scoring_url: str | None = None,
              home: Path | None = None) -> tuple[str, str | None]:
    """(gateway URL, scoring URL or None) of a client's arguments, as the reference SDK reads
    them: `chain` and `rpc_url` together are a ValueError; neither is the localnet; an unknown
    chain is a ValueError naming the known ones. A chain's own scoring_url applies unless one
    is given."""
    if chain is not None and rpc_url is not None:
        raise ChainError("give chain or rpc_url, not both")
    if rpc_url is not None:
        return check_url(rpc_url), scoring_url
    found = resolve_chain(chain if chain is not None else LOCALNET, home)
    return found.rpc_url, scoring_url if scoring_url is not None else found.scoring_url

