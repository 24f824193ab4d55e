"""Routes for a channel's messages: send (or reply), and read a message's status."""

from __future__ import annotations

import contextlib
from typing import Any

from junebug import messages
from junebug.api.envelope import respond
from junebug.api.errors import (
    AmqpConnectionError,
    ApiUsageError,
    IdempotencyKeyReused,
    MessageNotFound,
    MessageTooLong,
    RequestInProgress,
    UnknownMessage,
)
from junebug.api.operations import MESSAGE, MESSAGE_STATUS, QueryParameter
from junebug.api.schemas import MESSAGE_SEND, parse_object
from junebug.bus.base import BusUnavailable
from junebug.store import idempotency
from junebug.store.queues import QueueStore
from junebug.workers.outbound import enqueue, priority_value

#: The request header that makes a send safe to retry.
IDEMPOTENCY_HEADER = b"Idempotency-Key"
#: Longest Idempotency-Key accepted.
IDEMPOTENCY_KEY_MAX = 255


def register(api: Any) -> None:
    manager = api.manager
    backends = api.backends

    @api.route(
        "/channels/<string:channel_id>/messages/",
        "POST",
        "Send a message (or a reply)",
        201,
        "message submitted",
        MESSAGE,
        body=MESSAGE_SEND,
        errors=(400, 404, 409, 422),
        headers=(
            QueryParameter(
                "Idempotency-Key",
                {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX},
                "makes a retried request answer like the first instead of sending again",
            ),
        ),
    )
    async def send_message(request: Any, channel_id: str) -> bytes:
        channel = await manager.get(channel_id)
        body = parse_object(request, MESSAGE_SEND)
        require_destination(channel)
        key = idempotency_key(request)
        if key is None:
            result = await submit(channel, body)
            return respond(request, 201, "message submitted", result)
        store = idempotency.IdempotencyStore(
            backends.redis, backends.keys, backends.config.outbound_message_ttl
        )
        claim = await claim_key(store, channel.id, key, body)
        if isinstance(claim, idempotency.StoredAnswer):
            request.setHeader(b"Idempotent-Replayed", b"true")
            return respond(request, claim.status, claim.description, claim.result)
        try:
            result = await submit(channel, body)
        except BaseException:
            # No answer to replay: let a retry with this key run again.
            with contextlib.suppress(Exception):
                await store.release(claim)
            raise
        await store.complete(claim, 201, "message submitted", result)
        return respond(request, 201, "message submitted", result)

    async def submit(channel: Any, body: dict[str, Any]) -> dict[str, Any]:
        message = await build_outbound(backends, channel.id, channel.id, body)
        check_length(message, channel.character_limit)
        await send(backends, channel.id, body, message, log=channel.log)
        return messages.api_from_message(message)

    @api.route(
        "/channels/<string:channel_id>/messages/<string:message_id>",
        "GET",
        "A sent message's status and events",
        200,
        "message status",
        MESSAGE_STATUS,
    )
    async def message_status(request: Any, channel_id: str, message_id: str) -> bytes:
        channel = await manager.get(channel_id)
        require_destination(channel)
        result = await message_status_of(backends, channel.id, channel.id, message_id)
        return respond(request, 200, "message status", result)


def idempotency_key(request: Any) -> str | None:
    """The request's Idempotency-Key header, or None; 400 when it is unusable."""
    raw = request.getHeader(IDEMPOTENCY_HEADER)
    if raw is None:
        return None
    key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise ApiUsageError(
            f"Idempotency-Key: must be 1 to {IDEMPOTENCY_KEY_MAX} printable characters"
        )
    return key


async def claim_key(
    store: idempotency.IdempotencyStore, owner: str, key: str, body: dict[str, Any]
) -> idempotency.Claim | idempotency.StoredAnswer:
    try:
        return await store.claim(owner, key, body)
    except idempotency.KeyReused:
        raise IdempotencyKeyReused(
            f"Idempotency-Key: {key!r} was first used with a different request body; "
            "use a new key for a new message"
        ) from None
    except idempotency.StillInProgress:
        raise RequestInProgress(
            f"Idempotency-Key: the first request with {key!r} has not answered yet; retry shortly"
        ) from None


def require_destination(channel: Any) -> None:
    if not channel.has_destination:
        raise ApiUsageError(
            'This channel has no "mo_url" or "amqp_queue": give it one of them to send '
            "and read messages through it"
        )


async def build_outbound(
    backends: Any, channel_id: str, inbound_owner: str, body: dict[str, Any]
) -> dict[str, Any]:
    """The outbound vumi message for an API send body (a reply when reply_to resolves)."""
    fields = messages.fields_from_api(body)
    reply_to = body.get("reply_to")
    clock = backends.clock
    if reply_to is not None:
        original = await backends.messages.load_inbound(inbound_owner, reply_to)
        if original is not None:
            continue_session = fields.pop("continue_session", True)
            return messages.reply(
                original,
                fields.pop("content"),
                continue_session=continue_session,
                session_event=fields.pop("session_event", None),
                helper_metadata=fields.pop("helper_metadata"),
                clock=clock,
                **fields,
            )
        if not (body.get("to") and backends.config.allow_expired_replies):
            raise MessageNotFound(f"Inbound message with id {reply_to} not found")
    elif body.get("to") is None:
        raise ApiUsageError('Either "to" or "reply_to" must be specified')
    return messages.user_message(
        to_addr=body.get("to"),
        from_addr=body.get("from"),
        group=body.get("group"),
        transport_name=channel_id,
        clock=clock,
        **fields,
    )


def check_length(message: dict[str, Any], limit: int | None) -> None:
    content = message.get("content")
    if limit is not None and isinstance(content, str) and len(content) > limit:
        shown = repr(content[:20]) + ("..." if len(content) > 20 else "")
        raise MessageTooLong(
            f"content: message content {shown} is of length {len(content)}, "
            f"which is greater than the character limit of {limit}"
        )


async def send(
    backends: Any,
    channel_id: str,
    body: dict[str, Any],
    message: dict[str, Any],
    *,
    log: Any = None,
) -> None:
    """Store the outbound record (so events find their event_url), then queue the
    message at the body's ``priority``, to expire after its ``validity``.

    Storing the record, numbering and counting the message on the queue and counting
    the outbound rate are one Redis round trip, before the publish (so no event can
    arrive before the record). A message that is not published is not counted: both
    counts are taken back."""
    record = {**body, **messages.api_from_message(message)}
    priority = priority_value(body.get("priority"), log)
    queues = QueueStore(backends.redis, backends.keys)
    count = backends.rates.bucket(channel_id, "outbound")
    seq = await backends.messages.store_outbound(
        channel_id, record, count=count, accept=queues.slot(channel_id, priority)
    )
    try:
        await enqueue(
            backends.bus,
            queues,
            backends.clock,
            channel_id,
            message,
            priority=priority,
            validity=body.get("validity"),
            seq=seq,
        )
    except Exception as exc:
        # enqueue took the queue's count back. The rate's is best effort: the answer
        # stays the publish's failure, as when the rate was counted after the publish.
        await backends.rates.take_back_quietly(count)
        if isinstance(exc, BusUnavailable):
            raise AmqpConnectionError(f"Message not sent, message bus unavailable: {exc}") from exc
        raise


async def message_status_of(
    backends: Any, owner: str, channel_id: str, message_id: str
) -> dict[str, Any]:
    record = await backends.messages.load_outbound(owner, message_id)
    events = await backends.messages.load_events(owner, message_id)
    if record is None and not events:
        raise UnknownMessage(f"Message {message_id!r} not found (or its events have expired)")
    api_events = [messages.api_from_event(channel_id, e) for e in events]
    last = api_events[-1] if api_events else None
    return {
        "id": message_id,
        "last_event_type": last["event_type"] if last else None,
        "last_event_timestamp": last["timestamp"] if last else None,
        "events": api_events,
    }
