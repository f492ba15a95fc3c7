"""Helpers of the game tests: replay a localnet's certified chain and check its supply."""
import ray

from soma_ray.node.target_index import TargetIndex
from soma_ray.protocol.encoding import decode
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.types import Checkpoint

FEED_BATCH = 200


def supply_at_each_checkpoint(network) -> dict[int, int]:
    """Every certified checkpoint, re-executed from genesis as the target index does (so each
    checks out against the state root it names): sequence → total supply after it."""
    index = TargetIndex.from_genesis(network.config.genesis_config())
    validator = network.validators[0]
    supplies: dict[int, int] = {}
    while True:
        items = ray.get(validator.feed.remote(index.next_sequence, FEED_BATCH, 0.0), timeout=60)
        if not items:
            return supplies
        for item in items:
            index.follow(decode(item.checkpoint, Checkpoint), item.decoded_effects())
            supplies[item.sequence] = total_supply(index.state)
