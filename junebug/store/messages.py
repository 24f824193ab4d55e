"""Stored messages and events, in the original's key layout.

``<owner>:inbound_messages:<id>`` holds the inbound vumi message (for replies);
``<owner>:outbound_messages:<id>`` holds the outbound's API record under field
``message`` and each event under its event id. Every read or write refreshes the
TTL, as in the original, so a reply lookup extends the window for the next reply.
"""

from __future__ import annotations

import json
from typing import Any

from junebug import messages
from junebug.store.redis import Keys, together


class MessageStore:
    def __init__(self, redis: Any, keys: Keys, inbound_ttl: int, outbound_ttl: int) -> None:
        self.redis = redis
        self.keys = keys
        self.inbound_ttl = inbound_ttl
        self.outbound_ttl = outbound_ttl

    def _inbound(self, owner: str, message_id: str) -> str:
        return self.keys(owner, "inbound_messages", message_id)

    def _outbound(self, owner: str, message_id: str) -> str:
        return self.keys(owner, "outbound_messages", message_id)

    async def _write(self, key: str, field: str, value: str, ttl: int) -> bool:
        """HSET and EXPIRE (sent together); True when the field was new, so duplicates
        can be spotted."""
        added, _ = await together(self.redis.hset(key, field, value), self.redis.expire(key, ttl))
        return bool(added)

    async def store_inbound(self, owner: str, message: dict[str, Any]) -> bool:
        return await self._write(
            self._inbound(owner, message["message_id"]),
            "message",
            messages.to_json(message),
            self.inbound_ttl,
        )

    async def load_inbound(self, owner: str, message_id: str) -> dict[str, Any] | None:
        key = self._inbound(owner, message_id)
        raw, _ = await together(
            self.redis.hget(key, "message"), self.redis.expire(key, self.inbound_ttl)
        )
        return None if raw is None else json.loads(raw)

    async def store_outbound(self, owner: str, record: dict[str, Any]) -> None:
        await self._write(
            self._outbound(owner, record["message_id"]),
            "message",
            messages.to_json(record),
            self.outbound_ttl,
        )

    async def load_outbound(self, owner: str, message_id: str) -> dict[str, Any] | None:
        key = self._outbound(owner, message_id)
        raw, _ = await together(
            self.redis.hget(key, "message"), self.redis.expire(key, self.outbound_ttl)
        )
        if raw is None:
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    async def store_event(self, owner: str, event: dict[str, Any]) -> bool:
        """Store an event; False when it was already stored (a redelivery)."""
        return await self._write(
            self._outbound(owner, event["user_message_id"]),
            event["event_id"],
            messages.to_json(event),
            self.outbound_ttl,
        )

    async def load_events(self, owner: str, message_id: str) -> list[dict[str, Any]]:
        key = self._outbound(owner, message_id)
        fields = await self.redis.hgetall(key)
        if fields:
            await self.redis.expire(key, self.outbound_ttl)
        events = [json.loads(v) for k, v in (fields or {}).items() if k != "message"]
        return sorted(events, key=lambda event: event.get("timestamp") or "")
