"""Routes for a channel's outbound queue: read its length, cancel what waits in it."""

from __future__ import annotations

from typing import Any

from junebug.api.envelope import respond
from junebug.api.errors import ChannelRunningElsewhere
from junebug.store.claims import ClaimedElsewhere
from junebug.store.queues import QueueStore

CHANNEL_PATH = "/channels/<string:channel_id>"

_COUNT = {"type": ["integer", "null"], "minimum": 0}

#: The queue object: in GET .../queue and as ``status.queue`` of the channel object.
QUEUE = {
    "type": "object",
    "properties": {
        "length": {**_COUNT, "description": "waiting + buffered; null if the bus is unreachable"},
        "waiting": {**_COUNT, "description": "messages on the message bus queue"},
        "buffered": {"type": "integer", "minimum": 0, "description": "taken off the bus, unsent"},
        "sending": {"type": "integer", "minimum": 0, "description": "being handed to the wire"},
        "by_priority": {
            "type": ["object", "null"],
            "additionalProperties": {"type": "integer", "minimum": 0},
            "description": "messages sent through the API and still queued, per priority",
        },
    },
    "required": ["length", "waiting", "buffered", "by_priority"],
}

CANCELLED = {
    "type": "object",
    "properties": {
        "cancelled": {
            "type": "integer",
            "minimum": 0,
            "description": "messages queued when the cancellation was made",
        }
    },
    "required": ["cancelled"],
}


def register(api: Any) -> None:
    manager = api.manager
    backends = api.backends

    @api.route(
        CHANNEL_PATH + "/queue",
        "GET",
        "The channel's outbound queue",
        200,
        "queue found",
        QUEUE,
    )
    async def get_queue(request: Any, channel_id: str) -> bytes:
        channel = await manager.get(channel_id)
        return respond(request, 200, "queue found", await channel.queue_status())

    @api.route(
        CHANNEL_PATH + "/messages/",
        "DELETE",
        "Cancel every message still queued",
        200,
        "messages cancelled",
        CANCELLED,
    )
    async def cancel_messages(request: Any, channel_id: str) -> bytes:
        channel = await manager.get(channel_id)
        await refuse_if_elsewhere(manager, channel)
        mark = await QueueStore(backends.redis, backends.keys).cancel(
            channel.id, backends.clock.seconds()
        )
        worker = channel.transport_worker
        cancelled = worker.scheduler.cancel(mark) if worker is not None else 0
        status = await channel.queue_status()
        cancelled += status["waiting"] or 0
        return respond(request, 200, "messages cancelled", {"cancelled": cancelled})


async def refuse_if_elsewhere(manager: Any, channel: Any) -> None:
    """A channel another process runs is cancelled through that process's API: only
    its scheduler can reject what it has buffered."""
    claims = getattr(manager, "claims", None)
    if claims is None or channel.id in manager.running:
        return
    try:
        await claims.check(channel.id)
    except ClaimedElsewhere as exc:
        raise ChannelRunningElsewhere(str(exc)) from exc
