"""The latest status event per component: hash ``<channel_id>:status`` (no TTL)."""

from __future__ import annotations

import json
from typing import Any

from junebug import messages
from junebug.store.redis import Keys

_RANK = {"down": 0, "degraded": 1, "ok": 2}


def worst_level(levels: list[str]) -> str | None:
    """The worst of ok / degraded / down; None when there are no components."""
    known = [level for level in levels if level in _RANK]
    return min(known, key=_RANK.__getitem__) if known else None


class StatusStore:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def set(self, owner: str, status: dict[str, Any]) -> None:
        await self.redis.hset(
            self.keys(owner, "status"), status["component"], messages.to_json(status)
        )

    async def get_all(self, owner: str) -> dict[str, dict[str, Any]]:
        fields = await self.redis.hgetall(self.keys(owner, "status"))
        return {component: json.loads(raw) for component, raw in (fields or {}).items()}

    async def delete(self, owner: str) -> None:
        await self.redis.delete(self.keys(owner, "status"))
