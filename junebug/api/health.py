"""GET /health: is the API up, and (with RabbitMQ's management API) are queues moving.

Without ``rabbitmq_management_interface`` the answer is 200 ``health ok``. With it,
every Junebug queue (each channel's ``.inbound``, ``.outbound`` and ``.event``) is
read from the management API, authenticated with the AMQP user and password, and a
queue is *stuck* when messages wait on it and none were acknowledged lately
(``messages > 0`` and ``message_stats.ack_details.rate == 0``). Any stuck queue
makes the answer 500 ``queues stuck``; otherwise it is 200 ``queues ok``. Both carry
the per-queue list as ``result``. Queues the broker doesn't know are left out.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore

from junebug.api.envelope import respond
from junebug.api.errors import AmqpConnectionError
from junebug.api.operations import EMPTY

#: The queues checked for each channel (status queues are not, as in the original).
SUFFIXES = ("inbound", "outbound", "event")
#: Requests to the management API at once, and how long each may take.
CONCURRENCY = 20
TIMEOUT = 5.0

QUEUE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "messages": {"type": "integer"},
        "rate": {"type": "number"},
        "stuck": {"type": "boolean"},
    },
    "required": ["name", "messages", "stuck"],
}
QUEUE_LIST = {"type": "array", "items": QUEUE}
#: ``{}`` without the management interface, the queue list with it.
HEALTH_RESULT = {"anyOf": [EMPTY, QUEUE_LIST]}


def queue_url(interface: str, vhost: str, queue: str) -> str:
    """The management API's URL for one queue; ``interface`` is ``host:port`` (or a
    base URL with its scheme)."""
    base = interface if "://" in interface else f"http://{interface}"
    return f"{base.rstrip('/')}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"


def queue_health(name: str, info: Any) -> dict[str, Any] | None:
    """The result entry for one queue's management API answer; None to leave it out."""
    if not isinstance(info, dict) or "messages" not in info:
        return None
    entry: dict[str, Any] = {"name": name, "messages": info["messages"] or 0, "stuck": False}
    stats = info.get("message_stats")
    if isinstance(stats, dict):
        # No ack_details means nothing was ever acknowledged: a rate of 0.
        rate = (stats.get("ack_details") or {}).get("rate", 0.0)
        entry["rate"] = rate
        entry["stuck"] = entry["messages"] > 0 and rate == 0
    return entry


async def check_queues(
    interface: str, amqp: dict[str, Any], names: list[str], *, reactor: Any = None
) -> list[dict[str, Any]]:
    """Read each queue from the management API; entries in the order of ``names``.

    Fails with ``AmqpConnectionError`` when the management API can't be reached.
    """
    if reactor is None:
        from twisted.internet import reactor
    auth = (amqp.get("username", "guest"), amqp.get("password", "guest"))
    vhost = amqp.get("vhost", "/")
    limit = DeferredSemaphore(CONCURRENCY)

    async def fetch(name: str) -> Any:
        url = queue_url(interface, vhost, name)
        response = await treq.get(url, auth=auth, timeout=TIMEOUT, reactor=reactor)
        body = await response.content()
        if response.code == 401:
            raise AmqpConnectionError(
                f"the RabbitMQ management API at {interface} refused the AMQP credentials"
            )
        try:
            return json.loads(body)
        except ValueError:
            return None

    calls = [limit.run(lambda n=name: Deferred.fromCoroutine(fetch(n))) for name in names]
    results = await DeferredList(calls, consumeErrors=True)
    entries = []
    for name, (ok, value) in zip(names, results, strict=True):
        if not ok:
            if value.check(AmqpConnectionError):
                raise value.value
            raise AmqpConnectionError(
                f"cannot read queue {name} from the RabbitMQ management API at {interface}: "
                f"{value.getErrorMessage() or value.type.__name__}"
            )
        entry = queue_health(name, value)
        if entry is not None:
            entries.append(entry)
    return entries


async def owner_ids(api: Any) -> list[str]:
    """Every channel id, then each router's destination ids (sorted), as the original."""
    owners = list(await api.manager.ids())
    routers = getattr(api, "routers", None)
    if routers is not None:
        for router_id in await routers.ids():
            owners += sorted(await routers.destination_ids(router_id))
    return owners


def register(api: Any) -> None:
    @api.route(
        "/health",
        "GET",
        "Health check (queues too, with rabbitmq_management_interface)",
        200,
        "health ok",
        HEALTH_RESULT,
        errors=(),
        answers=((500, "queues stuck", QUEUE_LIST),),
        strict_slashes=False,
    )
    async def health(request: Any) -> bytes:
        config = api.backends.config
        interface = getattr(config, "rabbitmq_management_interface", None)
        if not interface or not api.backends.bus.external:
            return respond(request, 200, "health ok", {})
        names = [f"{owner}.{suffix}" for owner in await owner_ids(api) for suffix in SUFFIXES]
        entries = await check_queues(interface, config.amqp or {}, names)
        if any(entry["stuck"] for entry in entries):
            return respond(request, 500, "queues stuck", entries)
        return respond(request, 200, "queues ok", entries)
