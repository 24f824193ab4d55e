"""Routers and their destinations, in the original's key layout (no TTL):

- ``routers``: set of router ids;
- ``routers:<router_id>``: the router's JSON record (including its ``id``);
- ``routers:<router_id>:destinations``: set of its destination ids;
- ``routers:<router_id>:destinations:<destination_id>``: the destination's JSON record.
"""

from __future__ import annotations

import json
from typing import Any

from junebug.store.redis import Keys


class RouterStore:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # -- routers ----------------------------------------------------------------------

    async def ids(self) -> list[str]:
        return sorted(await self.redis.smembers(self.keys("routers")))

    async def save(self, router_id: str, record: dict[str, Any]) -> None:
        await self.redis.set(
            self.keys("routers", router_id), json.dumps({**record, "id": router_id})
        )
        await self.redis.sadd(self.keys("routers"), router_id)

    async def load(self, router_id: str) -> dict[str, Any] | None:
        """The router's record without its ``id``; None when there is no such router."""
        return _decode(await self.redis.get(self.keys("routers", router_id)))

    async def delete(self, router_id: str) -> None:
        """Remove the router and every one of its destinations."""
        for destination_id in await self.destination_ids(router_id):
            await self.redis.delete(self.keys("routers", router_id, "destinations", destination_id))
        await self.redis.delete(self.keys("routers", router_id, "destinations"))
        await self.redis.delete(self.keys("routers", router_id))
        await self.redis.srem(self.keys("routers"), router_id)

    # -- destinations -----------------------------------------------------------------

    async def destination_ids(self, router_id: str) -> list[str]:
        return sorted(await self.redis.smembers(self.keys("routers", router_id, "destinations")))

    async def save_destination(
        self, router_id: str, destination_id: str, record: dict[str, Any]
    ) -> None:
        key = self.keys("routers", router_id, "destinations", destination_id)
        await self.redis.set(key, json.dumps({**record, "id": destination_id}))
        await self.redis.sadd(self.keys("routers", router_id, "destinations"), destination_id)

    async def load_destination(self, router_id: str, destination_id: str) -> dict[str, Any] | None:
        key = self.keys("routers", router_id, "destinations", destination_id)
        return _decode(await self.redis.get(key))

    async def load_destinations(self, router_id: str) -> dict[str, dict[str, Any]]:
        """Every destination of the router: id -> record (without ``id``)."""
        found = {}
        for destination_id in await self.destination_ids(router_id):
            record = await self.load_destination(router_id, destination_id)
            if record is not None:
                found[destination_id] = record
        return found

    async def delete_destination(self, router_id: str, destination_id: str) -> None:
        await self.redis.delete(self.keys("routers", router_id, "destinations", destination_id))
        await self.redis.srem(self.keys("routers", router_id, "destinations"), destination_id)


def _decode(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    record = json.loads(raw)
    record.pop("id", None)
    return record
