"""The SDK follows the pages of `/ids/{tag}` (soma_ray/client.py get_object_ids), without a network."""
import asyncio

from soma_ray.client import SomaClient
from soma_ray.wire import MAX_PAGE


class Pages:
    """A transport's object_ids over 2,345 ids, recording each page asked for."""

    def __init__(self, count: int):
        self.ids = [i.to_bytes(32, "big") for i in range(count)]
        self.asked = []

    async def object_ids(self, tag, limit, after):
        self.asked.append((limit, after))
        start = 0 if after is None else self.ids.index(after) + 1
        return self.ids[start:start + limit]


def test_get_object_ids_follows_every_page():
    for count, pages in ((2_345, 3), (MAX_PAGE, 2), (0, 1)):
        transport = Pages(count)
        found = asyncio.run(SomaClient(transport=transport).get_object_ids(b"\x05"))
        assert found == transport.ids and len(transport.asked) == pages
        assert transport.asked[0] == (MAX_PAGE, None)
