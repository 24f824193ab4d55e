"""Bookkeeping for a channel's outbound queue: hash ``<channel_id>:outbound_queue``.

Fields:

* ``seq``: the number of the last message accepted for sending. Every message the
  API accepts takes the next number (one Redis counter, so every ``jb`` process
  sharing Redis numbers messages in one order).
* ``p1`` .. ``p5``: messages accepted at each priority and not yet taken out of the
  channel's local buffer (sent, cancelled or expired). Approximate: see
  docs/queues.md.
* ``cancel_seq`` / ``cancel_time``: the last cancellation. Every message numbered up
  to ``cancel_seq`` (or, for a message without a number, stamped at or before
  ``cancel_time``) is rejected with reason ``cancelled`` instead of being sent.

The hash has no TTL: ``seq`` must keep growing for as long as messages numbered
with it may still wait on the queue.
"""

from __future__ import annotations

from typing import Any

import attrs

from junebug.store.redis import Keys

#: The priorities the API accepts; the lowest is the default.
PRIORITIES = (1, 2, 3, 4, 5)

# Number a message and count it at its priority, in one round trip.
_ACCEPT = """
local seq = redis.call('hincrby', KEYS[1], 'seq', 1)
redis.call('hincrby', KEYS[1], ARGV[1], 1)
return seq
"""

# Record a cancellation of everything numbered so far; returns that number.
_CANCEL = """
local seq = tonumber(redis.call('hget', KEYS[1], 'seq') or '0')
redis.call('hset', KEYS[1], 'cancel_seq', seq, 'cancel_time', ARGV[1])
return seq
"""


@attrs.frozen
class CancelMark:
    """Messages numbered up to ``seq`` (or unnumbered and stamped up to ``time``)."""

    seq: int = 0
    time: float | None = None


def _field(priority: int) -> str:
    return f"p{priority}"


class QueueStore:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def _key(self, channel_id: str) -> str:
        return self.keys(channel_id, "outbound_queue")

    async def accept(self, channel_id: str, priority: int) -> int:
        """Number a message about to be queued at ``priority`` and count it."""
        seq = await self.redis.eval(_ACCEPT, [self._key(channel_id)], [_field(priority)])
        return int(seq)

    def slot(self, channel_id: str, priority: int) -> tuple[str, str]:
        """Where ``accept`` numbers and counts a message at ``priority``: (the queue's
        hash, the priority's field). For accepting in the same round trip as other
        commands (``MessageStore.store_outbound``'s ``accept``); ``taken`` undoes it."""
        return self._key(channel_id), _field(priority)

    async def taken(self, channel_id: str, priority: int, count: int = 1) -> None:
        """``count`` counted messages left the queue (sent, cancelled, expired or never
        published)."""
        await self.redis.hincrby(self._key(channel_id), _field(priority), -count)

    async def counts(self, channel_id: str) -> dict[str, int]:
        """Messages waiting at each priority, ``{"1": n, ..., "5": n}`` (never negative)."""
        fields = await self.redis.hgetall(self._key(channel_id)) or {}
        return {str(p): max(0, int(fields.get(_field(p)) or 0)) for p in PRIORITIES}

    async def reset_counts(self, channel_id: str) -> None:
        """Set every priority's count to zero (the queue was seen empty)."""
        await self.redis.hdel(self._key(channel_id), [_field(p) for p in PRIORITIES])

    async def cancel(self, channel_id: str, now: float) -> CancelMark:
        """Mark every message accepted so far as cancelled."""
        seq = await self.redis.eval(_CANCEL, [self._key(channel_id)], [repr(float(now))])
        return CancelMark(int(seq), float(now))

    async def cancel_mark(self, channel_id: str) -> CancelMark:
        fields = await self.redis.hgetall(self._key(channel_id)) or {}
        time = fields.get("cancel_time")
        return CancelMark(int(fields.get("cancel_seq") or 0), float(time) if time else None)

    async def delete(self, channel_id: str) -> None:
        await self.redis.delete(self._key(channel_id))
