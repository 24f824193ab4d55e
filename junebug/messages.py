"""vumi-compatible messages: construction, validation, JSON codec, and the API mapping.

Messages are plain dicts shaped exactly like vumi 0.6's payloads so that external
AMQP applications written for the original Junebug read and write them unchanged.
Timestamps are kept as strings in vumi's date format (``%Y-%m-%d %H:%M:%S.%f``,
naive UTC) everywhere, so nothing needs converting on the way in or out.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import UTC, datetime
from typing import Any

MESSAGE_VERSION = "20110921"
VUMI_DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

USER_MESSAGE = "user_message"
EVENT = "event"
STATUS_EVENT = "status_event"
FAILURE_MESSAGE = "failure_message"

SESSION_NEW = "new"
SESSION_RESUME = "resume"
SESSION_CLOSE = "close"
SESSION_EVENTS = (None, SESSION_NEW, SESSION_RESUME, SESSION_CLOSE)

EVENT_TYPES = ("ack", "nack", "delivery_report")
DELIVERY_STATUSES = ("pending", "failed", "delivered")
STATUS_LEVELS = ("ok", "degraded", "down")


class InvalidMessage(ValueError):
    """A payload that is not a valid vumi message."""


def new_id() -> str:
    """A message or event id as vumi makes them: 32 lowercase hex digits.

    Exactly ``uuid.uuid4().hex``: 16 bytes from ``os.urandom`` with the version (4) and
    RFC 4122 variant bits set, without building a ``UUID`` (under half the cost)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


def format_timestamp(moment: datetime) -> str:
    return moment.strftime(VUMI_DATE_FORMAT)


#: Unix times the quick formatting handles (1970 to 2999); others take datetime's way.
_QUICK_SECONDS = 32503680000.0
#: The last whole second formatted, and its text to the second (most timestamps in a
#: busy second share it).
_second: tuple[int, str] = (-1, "")


def _to_the_second(second: int) -> str:
    global _second
    cached = _second  # one read: safe should another thread replace it meanwhile
    if cached[0] != second:
        moment = datetime.fromtimestamp(second, UTC).replace(tzinfo=None)
        cached = _second = (second, moment.strftime("%Y-%m-%d %H:%M:%S"))
    return cached[1]


def timestamp_from_seconds(seconds: float) -> str:
    """The vumi timestamp for a Unix time, e.g. ``clock.seconds()``.

    The same text as ``datetime.fromtimestamp(seconds, UTC)`` formatted with
    ``VUMI_DATE_FORMAT``: the microseconds are rounded as datetime rounds them (half to
    even, carrying into the second), and the date and time to the second are formatted
    once per second."""
    if type(seconds) is float and 0.0 <= seconds < _QUICK_SECONDS:
        fraction, whole = math.modf(seconds)
        micro = round(fraction * 1e6)
        if micro >= 1_000_000:
            micro -= 1_000_000
            whole += 1.0
        return f"{_to_the_second(int(whole))}.{micro:06d}"
    moment = datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    return format_timestamp(moment)


def parse_timestamp(text: str) -> datetime:
    """Parse a vumi timestamp; microseconds are optional, as in vumi's decoder."""
    if "." in text[-10:]:
        return datetime.strptime(text, VUMI_DATE_FORMAT)
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


def _now(clock: Any = None) -> str:
    if clock is None:
        # datetime.now(UTC) to the microsecond, as it is taken: the system clock in
        # nanoseconds, rounded down.
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        return f"{_to_the_second(second)}.{nanos // 1000:06d}"
    return timestamp_from_seconds(clock.seconds())


def _common(message_type: str, timestamp: str | None, clock: Any) -> dict[str, Any]:
    return {
        "message_version": MESSAGE_VERSION,
        "message_type": message_type,
        "timestamp": timestamp or _now(clock),
        "routing_metadata": {},
        "helper_metadata": {},
    }


def user_message(
    *,
    to_addr: str | None,
    from_addr: str | None,
    transport_name: str | None,
    transport_type: str | None = None,
    content: str | None = None,
    session_event: str | None = None,
    in_reply_to: str | None = None,
    helper_metadata: dict | None = None,
    transport_metadata: dict | None = None,
    group: str | None = None,
    provider: str | None = None,
    message_id: str | None = None,
    timestamp: str | None = None,
    clock: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """A TransportUserMessage payload. Extra keyword fields are carried verbatim."""
    message = _common(USER_MESSAGE, timestamp, clock)
    message.update(
        message_id=message_id or new_id(),
        to_addr=to_addr,
        from_addr=from_addr,
        in_reply_to=in_reply_to,
        session_event=session_event,
        content=content,
        transport_name=transport_name,
        transport_type=transport_type,
        transport_metadata=transport_metadata or {},
        helper_metadata=helper_metadata or {},
        group=group,
        provider=provider,
        to_addr_type=None,
        from_addr_type=None,
    )
    message.update(extra)
    return validate(message)


def reply(
    original: dict[str, Any],
    content: str | None,
    *,
    continue_session: bool = True,
    session_event: str | None = None,
    helper_metadata: dict | None = None,
    clock: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """A reply to ``original``, with vumi's ``reply()`` semantics.

    Addresses are swapped; group, provider, transport name/type/metadata are
    copied; ``session_event`` is ``close`` when ``continue_session`` is false
    unless an explicit ``session_event`` is given.
    """
    if session_event is None and not continue_session:
        session_event = SESSION_CLOSE
    message = user_message(
        to_addr=original.get("from_addr"),
        from_addr=original.get("to_addr"),
        transport_name=original.get("transport_name"),
        transport_type=original.get("transport_type"),
        transport_metadata=dict(original.get("transport_metadata") or {}),
        helper_metadata=(
            helper_metadata
            if helper_metadata is not None
            else dict(original.get("helper_metadata") or {})
        ),
        group=original.get("group"),
        provider=original.get("provider"),
        in_reply_to=original["message_id"],
        session_event=session_event,
        content=content,
        clock=clock,
        **extra,
    )
    endpoint = (original.get("routing_metadata") or {}).get("endpoint_name") or "default"
    message["routing_metadata"] = {"endpoint_name": endpoint}
    return message


def event(
    event_type: str,
    user_message_id: str | None,
    *,
    transport_name: str | None,
    sent_message_id: str | None = None,
    nack_reason: str | None = None,
    delivery_status: str | None = None,
    transport_metadata: dict | None = None,
    event_id: str | None = None,
    timestamp: str | None = None,
    clock: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """A TransportEvent payload (ack, nack or delivery_report)."""
    message = _common(EVENT, timestamp, clock)
    message.update(
        event_id=event_id or new_id(),
        event_type=event_type,
        user_message_id=user_message_id,
        transport_name=transport_name,
        transport_metadata=transport_metadata or {},
    )
    if event_type == "ack":
        message["sent_message_id"] = sent_message_id
    elif event_type == "nack":
        message["nack_reason"] = nack_reason
    elif event_type == "delivery_report":
        message["delivery_status"] = delivery_status
    message.update(extra)
    return validate(message)


def ack(user_message_id: str, sent_message_id: str, **kw: Any) -> dict[str, Any]:
    return event("ack", user_message_id, sent_message_id=sent_message_id, **kw)


def nack(user_message_id: str, reason: str, **kw: Any) -> dict[str, Any]:
    return event("nack", user_message_id, nack_reason=reason, **kw)


def delivery_report(user_message_id: str, delivery_status: str, **kw: Any) -> dict[str, Any]:
    return event("delivery_report", user_message_id, delivery_status=delivery_status, **kw)


def status(
    component: str,
    level: str,
    type: str,
    message: str,
    details: dict | None = None,
    reasons: list[str] | None = None,
    *,
    timestamp: str | None = None,
    clock: Any = None,
) -> dict[str, Any]:
    """A TransportStatus payload (no transport_name: the routing key names the channel)."""
    payload = _common(STATUS_EVENT, timestamp, clock)
    payload.update(
        component=component,
        status=level,
        type=type,
        message=message,
        details=details or {},
        reasons=reasons or [],
    )
    return validate(payload)


def failure(
    original: dict[str, Any], reason: str, failure_code: str | None = None, *, clock: Any = None
) -> dict[str, Any]:
    """A FailureMessage: an outbound message whose handling raised."""
    payload = _common(FAILURE_MESSAGE, None, clock)
    payload.update(message=original, failure_code=failure_code, reason=reason)
    return payload


_REQUIRED = {
    USER_MESSAGE: (
        "message_id",
        "to_addr",
        "from_addr",
        "in_reply_to",
        "session_event",
        "content",
        "transport_name",
        "transport_type",
        "transport_metadata",
        "helper_metadata",
    ),
    EVENT: ("event_id", "event_type", "user_message_id"),
    STATUS_EVENT: ("component", "status", "type", "message"),
    FAILURE_MESSAGE: ("message", "reason"),
}


def validate(message: Any) -> dict[str, Any]:
    """Check a payload the way vumi does; return it, with decode-time defaults filled."""
    if not isinstance(message, dict):
        raise InvalidMessage(f"a message must be a JSON object, not {type(message).__name__}")
    if message.get("message_version") != MESSAGE_VERSION:
        raise InvalidMessage(
            f"message_version must be {MESSAGE_VERSION!r}, got {message.get('message_version')!r}"
        )
    kind = message.get("message_type")
    if kind not in _REQUIRED:
        raise InvalidMessage(f"unknown message_type {kind!r}")
    message.setdefault("helper_metadata", {})
    message.setdefault("routing_metadata", {})
    if kind == USER_MESSAGE:
        message.setdefault("group", None)
        message.setdefault("provider", None)
    missing = [field for field in _REQUIRED[kind] if field not in message]
    if missing:
        raise InvalidMessage(f"{kind} is missing field(s): {', '.join(missing)}")
    if kind == USER_MESSAGE and message["session_event"] not in SESSION_EVENTS:
        raise InvalidMessage(f"invalid session_event {message['session_event']!r}")
    if kind == EVENT:
        event_type = message["event_type"]
        if event_type not in EVENT_TYPES:
            raise InvalidMessage(f"invalid event_type {event_type!r}")
        if event_type == "ack" and message.get("sent_message_id") is None:
            raise InvalidMessage("an ack needs sent_message_id")
        if event_type == "nack" and message.get("nack_reason") is None:
            raise InvalidMessage("a nack needs nack_reason")
        if event_type == "delivery_report" and (
            message.get("delivery_status") not in DELIVERY_STATUSES
        ):
            raise InvalidMessage(f"invalid delivery_status {message.get('delivery_status')!r}")
    if kind == STATUS_EVENT and message["status"] not in STATUS_LEVELS:
        raise InvalidMessage(f"invalid status level {message['status']!r}")
    return message


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


#: json.dumps(payload, default=_json_default), built once rather than for every call.
_ENCODER = json.JSONEncoder(default=_json_default)


def to_json(payload: Any) -> str:
    """JSON text as vumi writes it: ASCII only, datetimes in vumi's date format."""
    return _ENCODER.encode(payload)


def encode(message: dict[str, Any]) -> bytes:
    return to_json(message).encode("ascii")


def decode(data: bytes | str) -> dict[str, Any]:
    """Parse and validate a vumi message body; raises InvalidMessage."""
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"not JSON: {exc}") from exc
    return validate(payload)


# --- the HTTP API's view of messages -------------------------------------------------


def api_from_message(message: dict[str, Any]) -> dict[str, Any]:
    """The API/callback shape of a user message (spec 1.8.3)."""
    channel_data = dict(message.get("helper_metadata") or {})
    if message.get("continue_session") is not None:
        channel_data["continue_session"] = message["continue_session"]
    if message.get("session_event") is not None:
        channel_data["session_event"] = message["session_event"]
    return {
        "to": message.get("to_addr"),
        "from": message.get("from_addr"),
        "group": message.get("group"),
        "message_id": message.get("message_id"),
        "channel_id": message.get("transport_name"),
        "timestamp": message.get("timestamp"),
        "reply_to": message.get("in_reply_to"),
        "content": message.get("content"),
        "channel_data": channel_data,
    }


def fields_from_api(body: dict[str, Any]) -> dict[str, Any]:
    """Split an API send body into vumi fields.

    ``continue_session`` and ``session_event`` move out of ``channel_data`` into
    their own fields; what remains of ``channel_data`` is the helper_metadata.
    """
    channel_data = dict(body.get("channel_data") or {})
    fields: dict[str, Any] = {"content": body.get("content")}
    continue_session = channel_data.pop("continue_session", None)
    session_event = channel_data.pop("session_event", None)
    if continue_session is not None:
        fields["continue_session"] = continue_session
    if session_event is not None:
        fields["session_event"] = session_event
    fields["helper_metadata"] = channel_data
    return fields


_EVENT_TYPE_NAMES = {"ack": "submitted", "nack": "rejected"}
_DELIVERY_EVENT_NAMES = {
    "delivered": "delivery_succeeded",
    "failed": "delivery_failed",
    "pending": "delivery_pending",
}


def api_event_type(event_payload: dict[str, Any]) -> str | None:
    """submitted / rejected / delivery_* for a vumi event; None when unrecognised."""
    kind = event_payload.get("event_type")
    if kind == "delivery_report":
        return _DELIVERY_EVENT_NAMES.get(event_payload.get("delivery_status"))
    return _EVENT_TYPE_NAMES.get(kind)


def api_from_event(channel_id: str, event_payload: dict[str, Any]) -> dict[str, Any]:
    """The API/callback shape of an event (spec 1.8.2)."""
    event_type = api_event_type(event_payload)
    details: dict[str, Any] = {}
    if event_type == "rejected":
        details["reason"] = event_payload.get("nack_reason")
    return {
        "channel_id": channel_id,
        "timestamp": event_payload.get("timestamp"),
        "message_id": event_payload.get("user_message_id"),
        "event_type": event_type,
        "event_details": details,
    }


def api_from_status(channel_id: str, status_payload: dict[str, Any]) -> dict[str, Any]:
    """The API/callback shape of a status event (spec 1.8.4)."""
    return {
        "channel_id": channel_id,
        "component": status_payload.get("component"),
        "status": status_payload.get("status"),
        "type": status_payload.get("type"),
        "message": status_payload.get("message"),
        "details": status_payload.get("details") or {},
    }
