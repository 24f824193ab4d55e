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

A receipt is looked up in **one** round trip (``find_receipt``, the Lua script
``RECEIPT_LOOKUP``): GET of each form of its id until one is known, HGET of the
message's part count and, for a final receipt of a message sent whole, the
EXPIREs that shorten how long its keys are kept. The script runs in Redis the same
commands, in the same order, with the same keys and TTLs, as sending each GET, HGET
and EXPIRE separately would; only the waits between them are gone. A receipt of a
message sent in parts then records its part (``part_receipt``) and, once the whole
message is final, shortens the TTLs (``expire``).
"""

from __future__ import annotations

from typing import Any

import attrs

from junebug.store.redis import together
from junebug.transports.smpp.receipts import FINAL_STATUSES, id_candidates, normalise_id

__all__ = ["RECEIPT_LOOKUP", "FoundReceipt", "MessageIdStore", "PartsOutcome"]

#: Look a receipt's id up and, for a message sent whole, do what its receipt needs
#: (``MessageIdStore.find_receipt``) in one round trip.
#:
#: KEYS: ``remote_message:<form>`` for each form of the id, best first.
#: ARGV[1]: the prefix of the parts keys (``<prefix>parts:``; the message id, read
#: from the first key found, completes it); ARGV[2]: "" when the receipt is not
#: final, else the TTL the id key gets; ARGV[3]: the TTL the parts key gets then.
#:
#: Returns nil when no form is known, else ``{message id, position of the key found
#: (1-based), part count or nil}``. A message sent in parts (a part count) is left
#: as it was: its receipt needs the part states (``part_receipt``) before deciding
#: whether it is final. Otherwise, for a final receipt, both keys get the TTLs
#: ``expire`` gives them (the parts key of a message sent whole normally does not
#: exist; EXPIRE then does nothing, inside the script, at no round trip's cost).
#:
#: The parts key is built from the value read, so the script names a key it was not
#: given: fine on one Redis server (Junebug's), not on a Redis Cluster.
RECEIPT_LOOKUP = """
for i, key in ipairs(KEYS) do
  local message_id = redis.call('get', key)
  if message_id then
    local parts = ARGV[1] .. message_id
    local total = redis.call('hget', parts, 'total')
    if not total and ARGV[2] ~= '' then
      redis.call('expire', key, ARGV[2])
      redis.call('expire', parts, ARGV[3])
    end
    return {message_id, i, total}
  end
end
return false
"""


@attrs.frozen
class FoundReceipt:
    """Which message a receipt belongs to (``MessageIdStore.find_receipt``)."""

    #: Our message id.
    message_id: str
    #: The normalised form of the SMSC id it was stored under.
    normalised: str
    #: Whether the message was sent in parts (its receipt goes to ``part_receipt``,
    #: and ``expire`` is still to be done once the message is final); otherwise
    #: everything the receipt needs in Redis was done by the lookup.
    multipart: bool


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
        if len(normalised) == 1:
            await self.redis.setex(self._remote_key(normalised[0]), ttl, message_id)
        elif normalised:
            # Sent together on the one connection: Redis runs them in this order, as
            # when each was awaited in turn, in one round trip's wait.
            redis = self.redis
            parts_key = self._parts_key(message_id)
            await together(
                *[redis.setex(self._remote_key(key), ttl, message_id) for key in normalised],
                redis.hset(parts_key, "total", str(len(normalised))),
                redis.expire(parts_key, ttl),
            )
        return normalised

    async def find_receipt(
        self, smsc_id: str, final: bool, ttl: int, parts_ttl: int
    ) -> FoundReceipt | None:
        """The message a receipt's id belongs to (under any form of the id) and, for a
        message sent whole and a ``final`` receipt, its keys' TTLs shortened as
        ``expire(..., ttl, parts_ttl)`` does, in one round trip (``RECEIPT_LOOKUP``).
        None when no form of the id is known."""
        candidates = [c for c in id_candidates(smsc_id) if c]
        if not candidates:
            return None
        found = await self.redis.eval(
            RECEIPT_LOOKUP,
            [self._remote_key(c) for c in candidates],
            [self._parts_key(""), ttl if final else "", parts_ttl],
        )
        if not found:
            return None
        message_id, position, total = found
        return FoundReceipt(_text(message_id), candidates[int(position) - 1], total is not None)

    async def expire(self, normalised_id: str, message_id: str, ttl: int, parts_ttl: int) -> None:
        """Shorten how long an id (``ttl``) and the part states of its message
        (``parts_ttl``) are kept, after the final receipt."""
        await together(
            self.redis.expire(self._remote_key(normalised_id), ttl),
            self.redis.expire(self._parts_key(message_id), parts_ttl),
        )

    async def part_receipt(self, message_id: str, normalised_id: str, status: str) -> PartsOutcome:
        """Record the receipt of one part of a message sent in parts (``find_receipt``
        told the caller so; the part count is not read again first).

        ``delivered`` is reported once every part has been delivered, ``failed``
        as soon as any part fails, ``pending`` the first time a part is pending;
        nothing is reported after the message's final outcome.
        """
        parts_key = self._parts_key(message_id)
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
