"""Which of our messages an SMSC message id belongs to, kept in Redis.

When an SMSC accepts a submit_sm it answers with its own id for the message;
delivery reports later name only that id. ``MessageIdStore`` remembers
``SMSC id -> our message id`` for ``third_party_id_expiry`` seconds, under the
normalised form of the id (``receipts.normalise_id``), and looks a receipt's
id up under every form it may have been stored in (``receipts.id_candidates``:
as written, hex <-> decimal), so receipts match whatever padding, case or base
the SMSC uses in them.

A message sent in several parts has one SMSC id per part. The store keeps how
many parts it had and the state each part's receipt reported, so the transport
can report one delivery outcome for the whole message: ``delivered`` once every
part is, ``failed`` as soon as one part fails, and ``pending`` once.

Keys (all under ``prefix``, e.g. ``<redis_prefix><channel id>:smpp:``):

=========================== ====== ==============================================
``remote_message:<id>``     string our message id; TTL ``third_party_id_expiry``,
                                   then ``final_dr_third_party_id_expiry``
``parts:<message id>``      hash   ``total``, ``part:<smsc id>`` = state,
                                   ``reported:<status>`` flags; same TTLs
=========================== ====== ==============================================
"""

from __future__ import annotations

from typing import Any

import attrs

from junebug.transports.smpp.receipts import FINAL_STATUSES, id_candidates, normalise_id

__all__ = ["MessageIdStore", "PartsOutcome"]


@attrs.frozen
class PartsOutcome:
    """What to report for a receipt of one part of a multipart message."""

    #: The delivery_status to publish now, or None (nothing new to say).
    status: str | None
    #: Whether the whole message has reached a final state.
    final: bool


class MessageIdStore:
    """SMSC id <-> message id mapping in Redis (a txredisapi connection)."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _remote_key(self, normalised: str) -> str:
        return f"{self.prefix}remote_message:{normalised}"

    def _parts_key(self, message_id: str) -> str:
        return f"{self.prefix}parts:{message_id}"

    async def remember(self, smsc_ids: list[str], message_id: str, ttl: int) -> list[str]:
        """Store ``smsc id -> message_id`` for each id (one per part) for ``ttl`` seconds.

        Returns the normalised ids stored. With more than one id, the part
        count is stored too, for ``part_receipt``.
        """
        normalised = [normalise_id(smsc_id) for smsc_id in smsc_ids]
        for key in normalised:
            await self.redis.setex(self._remote_key(key), ttl, message_id)
        if len(normalised) > 1:
            parts_key = self._parts_key(message_id)
            await self.redis.hset(parts_key, "total", str(len(normalised)))
            await self.redis.expire(parts_key, ttl)
        return normalised

    async def lookup(self, smsc_id: str) -> tuple[str, str] | None:
        """``(message id, normalised id it was stored under)`` for a receipt's id, or
        None when no form of the id is known."""
        for candidate in id_candidates(smsc_id):
            if not candidate:
                continue
            message_id = await self.redis.get(self._remote_key(candidate))
            if message_id is not None:
                if isinstance(message_id, bytes):
                    message_id = message_id.decode("utf-8")
                return message_id, candidate
        return None

    async def expire(
        self, normalised_id: str, message_id: str, ttl: int, parts_ttl: int | None = None
    ) -> None:
        """Shorten how long an id (and the part states of its message) are kept, after
        the final receipt."""
        await self.redis.expire(self._remote_key(normalised_id), ttl)
        await self.redis.expire(
            self._parts_key(message_id), ttl if parts_ttl is None else parts_ttl
        )

    async def part_receipt(
        self, message_id: str, normalised_id: str, status: str
    ) -> PartsOutcome | None:
        """Record the receipt of one part; None when the message was sent whole.

        ``delivered`` is reported once every part has been delivered, ``failed``
        as soon as any part fails, ``pending`` the first time a part is pending;
        nothing is reported after the message's final outcome.
        """
        parts_key = self._parts_key(message_id)
        if await self.redis.hget(parts_key, "total") is None:
            return None
        # Write first, read after: receipts of several parts handled at the same time
        # each see every state written before their read, so the last one sees all.
        await self.redis.hset(parts_key, f"part:{normalised_id}", status)
        info = await self.redis.hgetall(parts_key)
        info = {_text(k): _text(v) for k, v in info.items()}
        try:
            total = int(info.get("total", "1"))
        except ValueError:
            total = 1
        if any(info.get(f"reported:{s}") for s in FINAL_STATUSES):
            return PartsOutcome(None, True)
        states = [v for k, v in info.items() if k.startswith("part:")]
        if status == "failed":
            report = "failed"
        elif len(states) >= total and all(s == "delivered" for s in states):
            report = "delivered"
        elif status == "pending" and not info.get("reported:pending"):
            report = "pending"
        else:
            return PartsOutcome(None, False)
        first = await self.redis.hsetnx(parts_key, f"reported:{report}", "1")
        if not first:
            return PartsOutcome(None, report in FINAL_STATUSES)
        return PartsOutcome(report, report in FINAL_STATUSES)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
