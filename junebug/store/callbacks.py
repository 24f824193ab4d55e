"""Callbacks waiting for a retry, and the ones given up on (dead letters).

A callback lands here only after its first attempt failed, or when it must wait
behind one that did (docs/callbacks.md). Callbacks are queued per owner (channel or
router destination) and URL; each such queue has an id ``<owner>:<hash of url>``.

Keys (under the configured prefix):

* ``callbacks:due`` — sorted set: queue id -> the time its head may next be tried
  (while a process is working on a queue, the end of that process's lease on it).
* ``callbacks:queue:<queue id>`` — sorted set: callback id -> its place in the queue
  (creation order).
* ``callbacks:cb:<callback id>`` — hash: the callback (URL, body, token, attempts,
  errors...).
* ``<owner>:dead_letters`` — list of the owner's dead callback ids, newest first; at
  most ``DEAD_LETTER_CAP``, the oldest dropped beyond that.

Nothing here has a TTL: a pending callback leaves when it is delivered or dead, a
dead letter when it is replayed, deleted or pushed out by newer ones.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from junebug.store.redis import Keys, together

#: Dead letters kept per owner.
DEAD_LETTER_CAP = 10_000

# KEYS: due, queue, record. ARGV: queue id, callback id, order, due time, fields...
_PERSIST = """
redis.call('hset', KEYS[3], unpack(ARGV, 5))
redis.call('zadd', KEYS[2], ARGV[3], ARGV[2])
return redis.call('zadd', KEYS[1], 'NX', ARGV[4], ARGV[1])
"""

# KEYS: due. ARGV: now, lease end, limit. Take the due queues, leased until ARGV[2].
_CLAIM = """
local ids = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('zadd', KEYS[1], ARGV[2], id) end
return ids
"""

# KEYS: due, queue. ARGV: queue id, record key prefix. The head callback as
# {id, flat hash}, or nil when the queue is empty (it then leaves the due set).
_HEAD = """
while true do
  local head = redis.call('zrange', KEYS[2], 0, 0)
  if #head == 0 then
    redis.call('zrem', KEYS[1], ARGV[1])
    return nil
  end
  local record = redis.call('hgetall', ARGV[2] .. head[1])
  if #record > 0 then return {head[1], record} end
  redis.call('zrem', KEYS[2], head[1])
end
"""

# KEYS: due, queue, record. ARGV: queue id, callback id, lease end.
_DELIVERED = """
redis.call('zrem', KEYS[2], ARGV[2])
redis.call('del', KEYS[3])
redis.call('zadd', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""

# KEYS: due, record. ARGV: queue id, due time, fields...
_RETRY = """
redis.call('hset', KEYS[2], unpack(ARGV, 3))
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
return 1
"""

# KEYS: due, queue, record, dead. ARGV: queue id, callback id, next due, cap,
# record key prefix, fields...
_DEAD = """
redis.call('hset', KEYS[3], unpack(ARGV, 6))
redis.call('zrem', KEYS[2], ARGV[2])
redis.call('lrem', KEYS[4], 0, ARGV[2])
redis.call('lpush', KEYS[4], ARGV[2])
local cap = tonumber(ARGV[4])
for _, old in ipairs(redis.call('lrange', KEYS[4], cap, -1)) do
  redis.call('del', ARGV[5] .. old)
end
redis.call('ltrim', KEYS[4], 0, cap - 1)
redis.call('zadd', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""

# KEYS: due, dead. ARGV: now, first order, record prefix, queue prefix, ids (none: all).
# Moves dead letters back to the end of their queues, oldest first; returns the
# queue ids that got one.
_REPLAY = """
local ids
if #ARGV > 4 then
  ids = {}
  for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('lrange', KEYS[2], 0, -1)
end
local order = tonumber(ARGV[2])
local queues = {}
for i = #ids, 1, -1 do
  local id = ids[i]
  if redis.call('lrem', KEYS[2], 0, id) > 0 then
    local record = ARGV[3] .. id
    local qid = redis.call('hget', record, 'qid')
    if qid then
      redis.call('hset', record, 'attempts', 0, 'queued', ARGV[1])
      redis.call('hincrby', record, 'replays', 1)
      redis.call('zadd', ARGV[4] .. qid, order, id)
      redis.call('zadd', KEYS[1], 'NX', ARGV[1], qid)
      order = order + 1
      queues[#queues + 1] = qid
    end
  end
end
return queues
"""

# KEYS: dead. ARGV: record prefix, ids (none: all). Returns how many were removed.
_DELETE = """
local ids
if #ARGV > 1 then
  ids = {}
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('lrange', KEYS[1], 0, -1)
end
local removed = 0
for _, id in ipairs(ids) do
  if redis.call('lrem', KEYS[1], 0, id) > 0 then
    redis.call('del', ARGV[1] .. id)
    removed = removed + 1
  end
end
return removed
"""


@functools.lru_cache(maxsize=1024)
def queue_id(owner: str, url: str) -> str:
    """The id of the queue of ``owner``'s callbacks to ``url`` (remembered for the
    last 1,024 pairs: most callbacks go to a few URLs or templates)."""
    return f"{owner}:{hashlib.sha1(url.encode('utf-8')).hexdigest()[:20]}"


def owner_of(qid: str) -> str:
    return qid.rsplit(":", 1)[0]


def _flat(fields: dict[str, Any]) -> list[str]:
    flat: list[str] = []
    for key, value in fields.items():
        flat += [key, "" if value is None else str(value)]
    return flat


def _as_dict(flat: list[Any]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class CallbackStore:
    def __init__(self, redis: Any, keys: Keys, dead_letter_cap: int = DEAD_LETTER_CAP) -> None:
        self.redis = redis
        self.keys = keys
        self.dead_letter_cap = dead_letter_cap

    # -- keys -------------------------------------------------------------------------

    @property
    def _due(self) -> str:
        return self.keys("callbacks", "due")

    def _queue(self, qid: str) -> str:
        return self.keys("callbacks", "queue", qid)

    def _record(self, callback_id: str) -> str:
        return self.keys("callbacks", "cb", callback_id)

    def _dead(self, owner: str) -> str:
        return self.keys(owner, "dead_letters")

    # -- pending callbacks ------------------------------------------------------------

    async def persist(
        self, qid: str, callback_id: str, order: int, due: float, fields: dict[str, Any]
    ) -> bool:
        """Queue a callback at ``order``; its queue becomes due at ``due`` unless it is
        already waiting (then the callback waits its turn). True when the queue was
        not waiting (``due`` now applies)."""
        added = await self.redis.eval(
            _PERSIST,
            [self._due, self._queue(qid), self._record(callback_id)],
            [qid, callback_id, str(order), repr(float(due)), *_flat(fields)],
        )
        return bool(int(added or 0))

    async def claim(self, now: float, lease_until: float, limit: int) -> list[str]:
        """The ids of up to ``limit`` queues due by ``now``, leased until ``lease_until``."""
        return list(
            await self.redis.eval(
                _CLAIM, [self._due], [repr(float(now)), repr(float(lease_until)), str(limit)]
            )
            or []
        )

    async def head(self, qid: str) -> dict[str, str] | None:
        """The first callback of a queue (None: the queue is empty, and forgotten)."""
        found = await self.redis.eval(_HEAD, [self._due, self._queue(qid)], [qid, self._record("")])
        if not found:
            return None
        return {**_as_dict(found[1]), "id": found[0]}

    async def delivered(self, qid: str, callback_id: str, lease_until: float) -> None:
        await self.redis.eval(
            _DELIVERED,
            [self._due, self._queue(qid), self._record(callback_id)],
            [qid, callback_id, repr(float(lease_until))],
        )

    async def retry_at(
        self, qid: str, callback_id: str, due: float, fields: dict[str, Any]
    ) -> None:
        """Record a failed attempt; the queue is next due at ``due``."""
        await self.redis.eval(
            _RETRY,
            [self._due, self._record(callback_id)],
            [qid, repr(float(due)), *_flat(fields)],
        )

    async def kill(
        self, qid: str, callback_id: str, owner: str, next_due: float, fields: dict[str, Any]
    ) -> None:
        """Move a callback to its owner's dead letters; the queue's next callback is
        due at ``next_due``."""
        await self.redis.eval(
            _DEAD,
            [self._due, self._queue(qid), self._record(callback_id), self._dead(owner)],
            [
                qid,
                callback_id,
                repr(float(next_due)),
                str(self.dead_letter_cap),
                self._record(""),
                *_flat(fields),
            ],
        )

    async def pending_queues(self, owner: str | None = None) -> list[str]:
        """Ids of the queues with callbacks waiting (all, or ``owner``'s)."""
        qids = await self.redis.zrange(self._due, 0, -1) or []
        if owner is None:
            return list(qids)
        return [qid for qid in qids if owner_of(qid) == owner]

    async def next_due(self) -> float | None:
        """When the earliest queue is due (None: nothing waits)."""
        first = await self.redis.zrange(self._due, 0, 0, withscores=True)
        if not first:
            return None
        return float(first[0][1])

    async def pending_count(self, owner: str) -> int:
        total = 0
        for qid in await self.pending_queues(owner):
            total += int(await self.redis.zcard(self._queue(qid)) or 0)
        return total

    # -- dead letters -----------------------------------------------------------------

    async def dead_letters(
        self, owner: str, offset: int = 0, limit: int = 50
    ) -> tuple[int, list[dict[str, str]]]:
        """(how many there are, the page of them from ``offset``, newest first)."""
        key = self._dead(owner)
        total, ids = await together(
            self.redis.llen(key), self.redis.lrange(key, offset, offset + limit - 1)
        )
        if not ids:
            return int(total or 0), []
        records = await together(*(self.redis.hgetall(self._record(i)) for i in ids))
        return int(total or 0), [
            {**record, "id": callback_id}
            for callback_id, record in zip(ids, records, strict=True)
            if record
        ]

    async def replay(self, owner: str, now: float, order: int, ids: list[str] | None) -> list[str]:
        """Re-queue dead letters (``ids``, or all); the queue ids that got one, one per
        replayed callback."""
        if ids is not None and not ids:
            return []
        return list(
            await self.redis.eval(
                _REPLAY,
                [self._due, self._dead(owner)],
                [
                    repr(float(now)),
                    str(order),
                    self._record(""),
                    self._queue(""),
                    *(ids or []),
                ],
            )
            or []
        )

    async def delete_dead(self, owner: str, ids: list[str] | None) -> int:
        """Delete dead letters (``ids``, or all); how many were deleted."""
        if ids is not None and not ids:
            return 0
        removed = await self.redis.eval(
            _DELETE, [self._dead(owner)], [self._record(""), *(ids or [])]
        )
        return int(removed or 0)

    # -- an owner going away -----------------------------------------------------------

    async def forget(self, owner: str) -> None:
        """Drop every pending callback and dead letter of ``owner``."""
        for qid in await self.pending_queues(owner):
            ids = await self.redis.zrange(self._queue(qid), 0, -1) or []
            for callback_id in ids:
                await self.redis.delete(self._record(callback_id))
            await self.redis.delete(self._queue(qid))
            await self.redis.zrem(self._due, qid)
        await self.delete_dead(owner, None)
