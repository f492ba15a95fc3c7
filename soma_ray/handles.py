"""Finding a running network's actors by name (the names and the config: soma_ray/config.py).

The client, the clock, the validators (their peers) and the launcher all look actors up here;
it imports no other actor module, so no actor module imports another's.
"""
from __future__ import annotations

from dataclasses import dataclass

import ray

from soma_ray.config import DEFAULT_NAMESPACE, NetworkConfig


class NetworkNotRunning(RuntimeError):
    """No validator of the named network answers in this Ray cluster."""

    def __init__(self, namespace: str, name: str):
        self.namespace = namespace
        self.name = name
        super().__init__(f"no actor {name!r} in Ray namespace {namespace!r}: is the network started?")


def find_actor(name: str, namespace: str):
    """The named actor, or None when it is not running (a stopped validator)."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


@dataclass
class NetworkHandles:
    """Handles to a running network's actors; None for a validator that is not running."""

    config: NetworkConfig
    validators: list
    clock: object

    def validator(self, index: int):
        return self.validators[index]


def connect(namespace: str = DEFAULT_NAMESPACE, prefix: str = "") -> NetworkHandles:
    """Handles to a network started elsewhere (another process, a detached localnet)."""
    clock_name = f"{prefix}epoch-clock"
    clock = find_actor(clock_name, namespace)
    if clock is None:
        raise NetworkNotRunning(namespace, clock_name)
    config = NetworkConfig(**ray.get(clock.config.remote()))
    validators = [find_actor(config.validator_name(i), namespace) for i in range(config.validators)]
    if not any(validators):
        raise NetworkNotRunning(namespace, config.validator_name(0))
    return NetworkHandles(config, validators, clock)
