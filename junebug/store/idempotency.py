"""Idempotency keys for sends: ``<channel_id>:idempotency:<key>``.

The first request with a key claims it with ``SET NX`` (atomic, so of two concurrent
requests exactly one proceeds) as *pending*, with a short TTL in case its process
dies mid-request. When it has answered, the record becomes *done* and holds the
answer for ``ttl`` seconds (``outbound_message_ttl``); a request that failed releases
the key so it can be tried again. Each record holds a fingerprint of the request
body, so the same key with a different body is told apart from a retry.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import attrs

from junebug.store.redis import Keys

#: Seconds a pending claim lives: a request (Redis + bus) finishes long before.
PENDING_TTL = 120

# Delete the claim only while it is still the pending one this request made.
_RELEASE = """
local raw = redis.call('get', KEYS[1])
if raw and cjson.decode(raw)['token'] == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class IdempotencyConflict(Exception):
    """The key cannot be used for this request."""


class KeyReused(IdempotencyConflict):
    """The key was first used with a different request body."""


class StillInProgress(IdempotencyConflict):
    """The first request with this key has not answered yet."""


@attrs.frozen
class StoredAnswer:
    status: int
    description: str
    result: Any


@attrs.frozen
class Claim:
    """A key this request holds; ``complete`` or ``release`` it."""

    key: str
    token: str
    fingerprint: str


def fingerprint(body: Any) -> str:
    """A digest of a JSON body that ignores key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    def __init__(self, redis: Any, keys: Keys, ttl: int, pending_ttl: int = PENDING_TTL) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self.pending_ttl = pending_ttl

    def _key(self, owner: str, key: str) -> str:
        return self.keys(owner, "idempotency", key)

    async def claim(self, owner: str, key: str, body: Any) -> Claim | StoredAnswer:
        """Claim ``key`` for this request, or return the answer of the first one.

        Raises ``KeyReused`` when the key was first used with a different body and
        ``StillInProgress`` while the first request has not answered.
        """
        digest = fingerprint(body)
        redis_key = self._key(owner, key)
        for _ in range(3):
            token = uuid.uuid4().hex
            pending = json.dumps({"state": "pending", "fingerprint": digest, "token": token})
            created = await self.redis.set(
                redis_key, pending, expire=self.pending_ttl, only_if_not_exists=True
            )
            if created:
                return Claim(redis_key, token, digest)
            raw = await self.redis.get(redis_key)
            if raw is None:
                continue  # expired or released between the two commands: try again
            record = json.loads(raw)
            if record.get("fingerprint") != digest:
                raise KeyReused(key)
            if record.get("state") != "done":
                raise StillInProgress(key)
            return StoredAnswer(record["status"], record["description"], record["result"])
        raise StillInProgress(key)

    async def complete(self, claim: Claim, status: int, description: str, result: Any) -> None:
        """Keep the answer for ``ttl`` seconds, for retries to find."""
        record = {
            "state": "done",
            "fingerprint": claim.fingerprint,
            "status": status,
            "description": description,
            "result": result,
        }
        await self.redis.set(claim.key, json.dumps(record), expire=self.ttl)

    async def release(self, claim: Claim) -> None:
        """Forget a claim whose request failed, so a retry can try again."""
        await self.redis.eval(_RELEASE, [claim.key], [claim.token])
