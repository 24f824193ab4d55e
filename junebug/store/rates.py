"""Message and event rates, counted in Redis so several processes add up.

Counts go into bucket ``int(now / metric_window)`` (``<owner>:<label>:<bucket>``,
expiring after two windows). The reported rate is the previous, complete bucket's
count divided by the window: messages per second over the last whole window.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from junebug.store.redis import Keys, together

#: Counter label -> the field of the channel status object that reports it.
RATE_FIELDS = {
    "inbound": "inbound_message_rate",
    "outbound": "outbound_message_rate",
    "submitted": "submitted_event_rate",
    "rejected": "rejected_event_rate",
    "delivery_succeeded": "delivery_succeeded_rate",
    "delivery_failed": "delivery_failed_rate",
    "delivery_pending": "delivery_pending_rate",
}


# DECR only a bucket that still exists (DECR keeps its TTL).
_TAKE_BACK = """
if redis.call('exists', KEYS[1]) == 1 then
  return redis.call('decr', KEYS[1])
end
return false
"""


class RateCounter:
    def __init__(self, redis: Any, keys: Keys, window: float, clock: Any) -> None:
        self.redis = redis
        self.keys = keys
        self.window = float(window)
        self.clock = clock

    def _bucket(self) -> int:
        return int(self.clock.seconds() / self.window)

    def bucket(self, owner: str, label: str) -> tuple[str, int]:
        """The current bucket to count ``label`` in, and its TTL: (key, seconds). For
        counting in the same round trip as other commands (``MessageStore``'s
        ``count``)."""
        return self.keys(owner, label, str(self._bucket())), math.ceil(2 * self.window)

    async def increment(self, owner: str, label: str) -> None:
        key, ttl = self.bucket(owner, label)
        await together(self.redis.incr(key), self.redis.expire(key, ttl))

    async def take_back(self, count: tuple[str, int]) -> None:
        """Undo one count in ``count`` (a ``bucket``, counted earlier): for a message
        counted before it was sent that then was not. A bucket that has expired
        meanwhile is left alone (DECR would make it again, at -1 and without a TTL)."""
        await self.redis.eval(_TAKE_BACK, [count[0]], [])

    async def take_back_quietly(self, *counts: tuple[str, int]) -> None:
        """``take_back`` each of ``counts``, ignoring failures: for a caller that is
        already failing (its own error is the one to report)."""
        for count in counts:
            with contextlib.suppress(Exception):
                await self.take_back(count)

    async def rate(self, owner: str, label: str) -> float:
        raw = await self.redis.get(self.keys(owner, label, str(self._bucket() - 1)))
        return int(raw) / self.window if raw else 0.0

    async def rates(self, owner: str) -> dict[str, float]:
        return {field: await self.rate(owner, label) for label, field in RATE_FIELDS.items()}
