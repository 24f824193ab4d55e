"""Destinations with an ``amqp_queue``, on the shared RabbitMQ: inbound messages on
``<queue>.inbound``, sends from ``<queue>.outbound`` reaching the wire, and their events
on ``<queue>.event`` of that destination only."""

from __future__ import annotations

import uuid
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue
from twisted.internet.task import deferLater
from twisted.web.server import Site

from junebug import messages
from tests.helpers import ApiClient, TelnetUser, within
from tests.routers.conftest import TEST_ROUTER_TYPES
from tests.routers.support import make_destination, make_router, routed_channel


@pytest_twisted.async_yield_fixture
async def amqp_api(config: Any, redis: Any, key_prefix: str):
    """Channels and routers over RabbitMQ; yields (ApiClient, bus)."""
    from junebug.api.app import JunebugApi
    from junebug.backends import Backends
    from junebug.bus.amqp import AmqpBus
    from junebug.manager import ChannelManager
    from junebug.routers.manager import RouterManager
    from junebug.routers.registry import router_types
    from junebug.store import redis as redis_store
    from junebug.transports.registry import channel_types
    from junebug.workers.http import CallbackPoster

    bus = AmqpBus(reactor=reactor)
    await bus.start()
    poster = CallbackPoster(reactor, timeout=2)
    backends = Backends(
        config=config,
        clock=reactor,
        bus=bus,
        redis=redis,
        keys=redis_store.Keys(key_prefix),
        poster=poster,
        channel_types=channel_types({}),
    )
    channels = ChannelManager(backends)
    routers = RouterManager(backends, channels, router_types(TEST_ROUTER_TYPES))
    app = JunebugApi(channels, backends, routers=routers)
    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
    api = ApiClient(f"http://127.0.0.1:{port.getHost().port}")
    yield api, bus
    await port.stopListening()
    for router_id in list(routers.running):
        await routers.delete(router_id)
    for channel_id in list(channels.running):
        await channels.delete(channel_id)
    await bus.stop()
    await poster.close()


class App:
    """An AMQP application listening on ``<queue>.inbound`` and ``<queue>.event``."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.queue = f"jbtest-{uuid.uuid4().hex[:10]}"
        self.inbound: DeferredQueue = DeferredQueue()
        self.events: DeferredQueue = DeferredQueue()
        self.seen: list[dict[str, Any]] = []
        self.consumers: list[Any] = []

    async def start(self) -> App:
        for kind, queue in (("inbound", self.inbound), ("event", self.events)):

            def handle(message: dict[str, Any], queue: DeferredQueue = queue) -> None:
                self.seen.append(message)
                queue.put(message)

            self.consumers.append(await self.bus.consume(f"{self.queue}.{kind}", handle))
        return self

    async def stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        for kind in ("inbound", "event", "outbound"):
            await self.bus.delete_queue(f"{self.queue}.{kind}")


@pytest_twisted.ensureDeferred
async def test_an_amqp_destination_receives_sends_and_gets_only_its_events(amqp_api):
    api, bus = amqp_api
    mine, other = await App(bus).start(), await App(bus).start()
    try:
        channel_id, port = await routed_channel(api, "*123*4567*1#")
        router_id = await make_router(api, channel_id)
        destination_id = await make_destination(
            api, router_id, {"regular_expression": "1#$"}, amqp_queue=mine.queue
        )
        await make_destination(
            api, router_id, {"regular_expression": "2#$"}, amqp_queue=other.queue
        )
        user = await TelnetUser().connect(port)
        inbound = await within(mine.inbound.get())
        assert inbound["to_addr"] == "*123*4567*1#" and inbound["transport_name"] == channel_id
        assert inbound["helper_metadata"]["session_event"] == "new"

        reply = messages.reply(inbound, "hello over amqp")
        await bus.publish(f"{mine.queue}.outbound", reply)
        assert await user.next_line() == "hello over amqp"
        event = await within(mine.events.get())
        assert (event["event_type"], event["user_message_id"]) == ("ack", reply["message_id"])

        # The HTTP messages endpoint of the same destination sees the message's events.
        code, body = await api.get(
            f"/routers/{router_id}/destinations/{destination_id}/messages/{reply['message_id']}"
        )
        assert (code, body["result"]["last_event_type"]) == (200, "submitted"), body
        await deferLater(reactor, 0.3, lambda: None)
        assert other.seen == []
        assert len(mine.seen) == 2
        await user.hang_up()
    finally:
        await mine.stop()
        await other.stop()
