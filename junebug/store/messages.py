"""Stored messages and events, in the original's key layout.

``<owner>:inbound_messages:<id>`` holds the inbound vumi message (for replies);
``<owner>:outbound_messages:<id>`` holds the outbound's API record under field
``message`` and each event under its event id. Every read or write refreshes the
TTL, as in the original, so a reply lookup extends the window for the next reply.

A write can also count a rate (``count``: a bucket from ``RateCounter.bucket``) and,
for an event, read the outbound record back, all in one round trip
(``store.scripts.STORE``); an outbound record's write can also accept its message on
the channel's queue (``accept``: ``QueueStore.slot``; ``store.scripts.STORE_AND_ACCEPT``).
"""

from __future__ import annotations

import json
from typing import Any

from junebug import messages
from junebug.store import scripts
from junebug.store.redis import Keys, together

#: A rate bucket to count in the same round trip: (key, TTL in seconds).
Count = tuple[str, int]
#: Where a message is numbered and counted on its channel's queue (``QueueStore.slot``):
#: (the queue's hash, the priority's field).
Slot = tuple[str, str]


def _record(raw: str | None) -> dict[str, Any] | None:
    """An outbound record as stored, or None when missing or unreadable."""
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


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

    async def _store(
        self,
        key: str,
        field: str,
        value: str,
        ttl: int,
        *,
        read: str | None = None,
        count: Count | None = None,
    ) -> tuple[bool, str | None]:
        """``_write``, plus reading ``read`` back and counting ``count``, in one round
        trip: (whether the field was new, the value read back)."""
        keys = [key] if count is None else [key, count[0]]
        args = [field, value, ttl, read or "", 0 if count is None else count[1]]
        added, raw = await self.redis.eval(scripts.STORE, keys, args)
        return bool(added), raw

    async def store_inbound(
        self, owner: str, message: dict[str, Any], *, count: Count | None = None
    ) -> bool:
        """Store an inbound message (and count ``count``); False when already stored."""
        key = self._inbound(owner, message["message_id"])
        value = messages.to_json(message)
        if count is None:
            return await self._write(key, "message", value, self.inbound_ttl)
        added, _ = await self._store(key, "message", value, self.inbound_ttl, count=count)
        return added

    async def load_inbound(self, owner: str, message_id: str) -> dict[str, Any] | None:
        key = self._inbound(owner, message_id)
        raw, _ = await together(
            self.redis.hget(key, "message"), self.redis.expire(key, self.inbound_ttl)
        )
        return None if raw is None else json.loads(raw)

    async def store_outbound(
        self,
        owner: str,
        record: dict[str, Any],
        *,
        count: Count | None = None,
        accept: Slot | None = None,
    ) -> int | None:
        """Store an outbound record (and count ``count``) in one round trip.

        With ``accept`` (``QueueStore.slot``), also number the message on its channel's
        queue and count it at its priority, as ``QueueStore.accept`` would, in the same
        round trip (``store.scripts.STORE_AND_ACCEPT``), and return its number."""
        key = self._outbound(owner, record["message_id"])
        value = messages.to_json(record)
        if accept is not None:
            keys = [key, accept[0]] if count is None else [key, accept[0], count[0]]
            args = [
                "message",
                value,
                self.outbound_ttl,
                accept[1],
                0 if count is None else count[1],
            ]
            return int(await self.redis.eval(scripts.STORE_AND_ACCEPT, keys, args))
        if count is None:
            await self._write(key, "message", value, self.outbound_ttl)
        else:
            await self._store(key, "message", value, self.outbound_ttl, count=count)
        return None

    async def load_outbound(self, owner: str, message_id: str) -> dict[str, Any] | None:
        key = self._outbound(owner, message_id)
        raw, _ = await together(
            self.redis.hget(key, "message"), self.redis.expire(key, self.outbound_ttl)
        )
        return _record(raw)

    async def store_event(self, owner: str, event: dict[str, Any]) -> bool:
        """Store an event; False when it was already stored (a redelivery)."""
        return await self._write(
            self._outbound(owner, event["user_message_id"]),
            event["event_id"],
            messages.to_json(event),
            self.outbound_ttl,
        )

    async def store_event_and_load(
        self, owner: str, event: dict[str, Any], *, count: Count | None = None
    ) -> tuple[bool, dict[str, Any] | None]:
        """``store_event`` then ``load_outbound`` of its message (and count ``count``),
        in one round trip: (whether the event was new, the outbound record or None)."""
        added, raw = await self._store(
            self._outbound(owner, event["user_message_id"]),
            event["event_id"],
            messages.to_json(event),
            self.outbound_ttl,
            read="message",
            count=count,
        )
        return added, _record(raw)

    async def load_events(self, owner: str, message_id: str) -> list[dict[str, Any]]:
        key = self._outbound(owner, message_id)
        fields = await self.redis.hgetall(key)
        if fields:
            await self.redis.expire(key, self.outbound_ttl)
        events = [json.loads(v) for k, v in (fields or {}).items() if k != "message"]
        return sorted(events, key=lambda event: event.get("timestamp") or "")
