"""Which Junebug process runs each channel: ``<channel_id>:claim`` (a Redis lease).

Several ``jb`` processes may share one Redis and one RabbitMQ, but a channel must run
in exactly one of them: two would open the same listener, bind twice to the same
SMSC and compete for the channel's outbound queue. A process claims a channel before
starting it (``SET NX`` with a TTL), renews its claims every ``ttl / 3`` seconds, and
releases them when it stops the channel. A claim held by a process that died expires
after ``ttl`` seconds.

The claim holds the process's identity, ``<hostname>:<API port>``, so a jb restarted
on the same host and port (systemd, a container restart) takes its channels back at
once instead of waiting for its old claims to expire.
"""

from __future__ import annotations

import socket
from typing import Any

from junebug.store.redis import Keys

#: Seconds a claim lives without renewal.
CLAIM_TTL = 30

# Compare-and-renew / compare-and-delete: only the holder may touch its claim.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('expire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def process_identity(port: Any) -> str:
    return f"{socket.gethostname()}:{port}"


class ClaimedElsewhere(Exception):
    """The channel runs in another Junebug process; ``owner`` names it."""

    def __init__(self, channel_id: str, owner: str) -> None:
        super().__init__(
            f"channel {channel_id} is running in another Junebug process ({owner}); "
            "change, restart or delete it through that process's API"
        )
        self.channel_id = channel_id
        self.owner = owner


class ClaimStore:
    def __init__(self, redis: Any, keys: Keys, identity: str, ttl: int = CLAIM_TTL) -> None:
        self.redis = redis
        self.keys = keys
        self.identity = identity
        self.ttl = ttl

    def _key(self, channel_id: str) -> str:
        return self.keys(channel_id, "claim")

    async def owner(self, channel_id: str) -> str | None:
        return await self.redis.get(self._key(channel_id))

    async def claim(self, channel_id: str) -> None:
        """Claim ``channel_id`` for this process (or renew our claim); raises
        ``ClaimedElsewhere`` when another process holds it."""
        key = self._key(channel_id)
        if await self.redis.set(key, self.identity, expire=self.ttl, only_if_not_exists=True):
            return
        if await self.redis.eval(_RENEW, [key], [self.identity, self.ttl]):
            return
        owner = await self.redis.get(key)
        if owner is None:  # expired in between: try once more
            if await self.redis.set(key, self.identity, expire=self.ttl, only_if_not_exists=True):
                return
            owner = await self.redis.get(key) or "unknown"
        raise ClaimedElsewhere(channel_id, owner)

    async def release(self, channel_id: str) -> None:
        await self.redis.eval(_RELEASE, [self._key(channel_id)], [self.identity])

    async def check(self, channel_id: str) -> None:
        """Raise ``ClaimedElsewhere`` if another process holds ``channel_id``."""
        owner = await self.owner(channel_id)
        if owner is not None and owner != self.identity:
            raise ClaimedElsewhere(channel_id, owner)
