"""Channel properties: the ``channels`` set and ``<channel_id>:properties`` (no TTL)."""

from __future__ import annotations

import json
from typing import Any

from junebug.store.redis import Keys


class ChannelStore:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def save(self, channel_id: str, properties: dict[str, Any]) -> None:
        await self.redis.set(self.keys(channel_id, "properties"), json.dumps(properties))
        await self.redis.sadd(self.keys("channels"), channel_id)

    async def load(self, channel_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys(channel_id, "properties"))
        return None if raw is None else json.loads(raw)

    async def delete(self, channel_id: str) -> None:
        await self.redis.delete(self.keys(channel_id, "properties"))
        await self.redis.srem(self.keys("channels"), channel_id)

    async def ids(self) -> list[str]:
        return sorted(await self.redis.smembers(self.keys("channels")))
