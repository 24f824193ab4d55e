"""AmqpBus on its own: wire compatibility with another AMQP client, and broker outages.

pika is blocking, so it runs in the reactor's thread pool. The outage test runs a
private RabbitMQ (tests.servers) that it crashes and restarts on the same port.
"""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pika
import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from junebug import messages
from junebug.bus.amqp import AmqpBus
from junebug.bus.base import EXCHANGE, MAX_PRIORITY, BusUnavailable, outbound_key
from tests.servers import PrivateRabbitMQ, free_port, private_rabbitmq_fixture

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:txamqp")

TIMEOUT = 5.0

private_rabbitmq = private_rabbitmq_fixture()


def within(d: Deferred, seconds: float = TIMEOUT) -> Deferred:
    return d.addTimeout(seconds, reactor)


def pika_call(port: int, action: Any) -> Deferred:
    """Run ``action(channel)`` on a fresh pika connection in a thread."""

    def run() -> Any:
        params = pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1)
        connection = pika.BlockingConnection(params)
        try:
            return action(connection.channel())
        finally:
            if connection.is_open:
                connection.close()

    return deferToThread(run)


def a_message(content: str = "hello") -> dict:
    return messages.user_message(
        to_addr="+27820001001", from_addr="+27820001002", transport_name="c1", content=content
    )


@pytest_twisted.async_yield_fixture
async def bus():
    bus = AmqpBus(connect_timeout=5, publish_timeout=5, retry_delay=0.05)
    await within(bus.start())
    bus.test_keys = []
    yield bus
    for key in bus.test_keys:
        await within(bus.delete_queue(key))
    await within(bus.stop())


def unique_key(bus: AmqpBus, kind: str) -> str:
    key = f"jbtest{uuid.uuid4().hex[:10]}.{kind}"
    bus.test_keys.append(key)
    return key


@pytest_twisted.ensureDeferred
async def test_published_message_is_vumi_json_with_delivery_mode_2(bus: AmqpBus) -> None:
    key = unique_key(bus, "inbound")
    message = a_message()
    await within(bus.publish(key, message))

    def get(channel: Any) -> Any:
        return channel.basic_get(queue=key, auto_ack=True)

    method, properties, body = await within(pika_call(5672, get))
    assert method.routing_key == key
    assert method.exchange == EXCHANGE
    assert body == messages.encode(message)
    assert properties.delivery_mode == 2
    assert properties.content_type is None
    assert properties.headers is None
    assert properties.priority is None
    assert properties.message_id is None


@pytest_twisted.ensureDeferred
async def test_message_published_by_pika_reaches_a_consumer(bus: AmqpBus) -> None:
    key = unique_key(bus, "outbound")
    received: Deferred = Deferred()
    consumer = await within(bus.consume(key, received.callback))
    message = a_message("from pika")

    def publish(channel: Any) -> None:
        channel.basic_publish(
            exchange=EXCHANGE,
            routing_key=key,
            body=messages.to_json(message),
            properties=pika.BasicProperties(
                delivery_mode=2,
                # Field types txAMQP's own decoder cannot read (a dead-lettered message
                # carries such headers): the bus must still take the message.
                headers={
                    "x-big": 2**40,
                    "x-list": [1, "a", True],
                    "x-when": datetime(2020, 1, 2, tzinfo=UTC),
                    "x-decimal": Decimal("1.5"),
                    "x-nothing": None,
                },
            ),
        )

    await within(pika_call(5672, publish))
    assert await within(received) == message
    await within(consumer.stop())


@pytest_twisted.ensureDeferred
async def test_outbound_queue_is_a_priority_queue(bus: AmqpBus) -> None:
    name = f"jbtest{uuid.uuid4().hex[:10]}"
    key = outbound_key(name)
    bus.test_keys.append(key)
    consumer = await within(bus.consume(key, lambda m: None, max_priority=MAX_PRIORITY))

    def declare(arguments: dict) -> Any:
        # Redeclaring succeeds only with the arguments the queue already has.
        def action(channel: Any) -> str:
            try:
                channel.queue_declare(key, durable=True, arguments=arguments)
            except pika.exceptions.ChannelClosedByBroker as exc:
                return f"refused {exc.reply_code}"
            return "same"

        return action

    same = await within(pika_call(5672, declare({"x-max-priority": MAX_PRIORITY})))
    other = await within(pika_call(5672, declare({})))
    assert (same, other) == ("same", "refused 406")
    await within(consumer.stop())


@pytest_twisted.ensureDeferred
async def test_existing_queue_with_other_arguments_is_used_as_it_is(bus: AmqpBus) -> None:
    key = unique_key(bus, "outbound")
    await within(pika_call(5672, lambda ch: ch.queue_declare(key, durable=True)))
    await within(pika_call(5672, lambda ch: ch.queue_bind(key, EXCHANGE, routing_key=key)))
    received: Deferred = Deferred()
    consumer = await within(bus.consume(key, received.callback, max_priority=MAX_PRIORITY))
    message = a_message()
    await within(bus.publish(key, message, priority=3))
    assert await within(received) == message
    await within(consumer.stop())


@pytest_twisted.ensureDeferred
async def test_start_fails_when_no_broker_listens() -> None:
    bus = AmqpBus(port=free_port(), connect_timeout=0.5, reconnect_initial=0.05)
    with pytest.raises(BusUnavailable):
        await within(bus.start())
    with pytest.raises(BusUnavailable):
        await within(bus.publish("x.inbound", a_message()))
    await within(bus.stop())


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_broker_crash_and_restart(private_rabbitmq: PrivateRabbitMQ) -> None:
    server = private_rabbitmq
    bus = AmqpBus(
        port=server.port,
        connect_timeout=2,
        publish_timeout=30,
        retry_delay=0.05,
        reconnect_initial=0.1,
        reconnect_max=0.5,
    )
    transitions: list[tuple[bool, str]] = []
    changed: list[Deferred] = [Deferred()]

    def listener(connected: bool, reason: str) -> None:
        transitions.append((connected, reason))
        waiter, changed[0] = changed[0], Deferred()
        waiter.callback(connected)

    bus.add_state_listener(listener)
    await within(bus.start())
    assert bus.connected
    assert transitions == [(True, f"connected to amqp://127.0.0.1:{server.port}/")]

    key = "jbtest.fault.inbound"
    handled: list[str] = []
    held: Deferred = Deferred()
    arrived: dict[str, Deferred] = {}

    def expect(content: str) -> Deferred:
        arrived[content] = Deferred()
        return arrived[content]

    def handler(message: dict) -> Any:
        content = message["content"]
        handled.append(content)
        if content == "held" and handled.count("held") == 1:
            # In the handler, unacknowledged, when the broker dies.
            reactor.callLater(0, arrived.pop("held-first").callback, None)
            return held
        waiter = arrived.pop(content, None)
        if waiter is not None:
            # On a later turn, once the bus has sent the ack.
            reactor.callLater(0, waiter.callback, None)
        return None

    consumer = await within(bus.consume(key, handler, prefetch=5))
    first = expect("held-first")
    before = expect("before")
    await within(bus.publish(key, a_message("held")))
    await within(bus.publish(key, a_message("before")))
    await within(first)
    await within(before)

    down = changed[0]
    server.kill()
    assert await within(down) is False
    assert not bus.connected

    # While the broker is away a publish waits for it, up to publish_timeout.
    bus.publish_timeout = 0.2
    with pytest.raises(BusUnavailable):
        await within(bus.publish(key, a_message("given up")))
    bus.publish_timeout = 30
    during = bus.publish(key, a_message("during"))
    redelivered = expect("held")
    during_arrived = expect("during")

    up = changed[0]  # the bus may be back before start() returns
    await within(deferToThread(server.start), 60)
    assert await within(up, 20) is True
    assert bus.connected
    await within(during, 10)

    after = expect("after")
    await within(bus.publish(key, a_message("after")))
    await within(redelivered, 10)
    await within(during_arrived, 10)
    await within(after, 10)
    held.callback(None)  # the first attempt finishing late changes nothing

    assert [connected for connected, _ in transitions] == [True, False, True]
    # Nothing lost; the held message came twice. (Others may too: at-least-once.)
    assert set(handled) == {"held", "before", "during", "after"}
    assert handled.count("held") >= 2
    await within(consumer.stop())
    assert await within(bus.queue_length(key)) == 0
    await within(bus.stop())
    assert transitions[-1] == (False, "stopped")


@pytest_twisted.ensureDeferred
async def test_socket_has_nagle_off(bus: AmqpBus) -> None:
    sock = bus._client.transport.getHandle()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_reconnect_delays_grow_exponentially_with_jitter_up_to_a_cap() -> None:
    clock = task.Clock()
    bus = AmqpBus(clock=clock, reconnect_initial=0.5, reconnect_max=4.0)
    bus._running = True
    attempts: list[float] = []
    bus._connect = lambda: (attempts.append(clock.seconds()), setattr(bus, "_reconnect_call", None))
    delays = []
    for _ in range(8):
        bus._schedule_reconnect()
        (call,) = clock.getDelayedCalls()
        delays.append(call.getTime() - clock.seconds())
        clock.advance(delays[-1])
    ceilings = [0.5, 1, 2, 4, 4, 4, 4, 4]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(attempts) == 8


def test_confirms_settle_exactly_the_messages_they_cover():
    """A broker ack with multiple=true settles every message up to its tag, and no more;
    a nack fails its message."""
    from types import SimpleNamespace

    from junebug.bus.amqp import AmqpBus, _Publish

    bus = AmqpBus()
    publisher = object()
    items = {tag: _Publish("k.outbound", b"{}", None) for tag in range(1, 7)}
    client = SimpleNamespace(publisher=publisher, unconfirmed=dict(items))
    outcomes = {}
    for tag, item in items.items():
        item.done.addCallbacks(
            lambda _, t=tag: outcomes.__setitem__(t, "ok"),
            lambda f, t=tag: outcomes.__setitem__(t, f.type.__name__),
        )
    bus._confirmed(client, object(), 6, True, True)  # another channel's confirm: ignored
    assert outcomes == {}
    bus._confirmed(client, publisher, 3, True, True)
    assert outcomes == {1: "ok", 2: "ok", 3: "ok"}
    bus._confirmed(client, publisher, 5, False, False)
    assert outcomes[5] == "BusUnavailable" and 4 not in outcomes
    bus._confirmed(client, publisher, 6, True, True)
    assert outcomes == {1: "ok", 2: "ok", 3: "ok", 4: "ok", 5: "BusUnavailable", 6: "ok"}
    assert client.unconfirmed == {}
