"""The MessageBus contract, run against both implementations.

The AMQP run uses the shared RabbitMQ on 127.0.0.1:5672 with queue names unique to
each test, deleted afterwards. Waits are bounded Deferred timeouts, never sleeps.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, succeed

from junebug import messages
from junebug.bus import local
from junebug.bus.amqp import AmqpBus
from junebug.bus.base import MAX_PRIORITY, MessageBus
from junebug.bus.local import LocalBus

# txAMQP still uses defer.returnValue, deprecated since Twisted 24.7.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:txamqp")

TIMEOUT = 5.0
RETRY_DELAY = 0.05


def within(d: Deferred, seconds: float = TIMEOUT) -> Deferred:
    """``d``, failing with TimeoutError if it has not fired after ``seconds``."""
    return d.addTimeout(seconds, reactor)


class Harness:
    """The bus under test plus helpers that know its kind."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.prefix = f"jbtest{uuid.uuid4().hex[:10]}"
        self.keys: set[str] = set()

    def key(self, name: str) -> str:
        key = f"{self.prefix}.{name}"
        self.keys.add(key)
        return key

    def publish_raw(self, key: str, body: bytes) -> Deferred:
        """Put a body on the queue as is, bypassing encoding (for invalid messages)."""
        if isinstance(self.bus, LocalBus):
            queue = self.bus._queue(key)
            queue.push(body, 0)
            self.bus._schedule(queue)
            return succeed(None)
        return self.bus._publish_body(key, body, None)

    def settled(self, consumer: Any) -> Deferred:
        """Fires when an earlier pause()/resume() has taken effect at the broker."""
        wait = getattr(consumer, "wait_settled", None)
        return wait() if wait is not None else succeed(None)


@pytest_twisted.async_yield_fixture(params=["local", "amqp"])
async def harness(request: Any, monkeypatch: Any):
    if request.param == "local":
        monkeypatch.setattr(local, "RETRY_DELAY", RETRY_DELAY)
        bus: MessageBus = LocalBus(reactor)
    else:
        bus = AmqpBus(retry_delay=RETRY_DELAY, connect_timeout=5, publish_timeout=5)
    await within(bus.start())
    h = Harness(bus)
    yield h
    await within(bus.stop(), 10)
    if isinstance(bus, AmqpBus):
        cleaner = AmqpBus(connect_timeout=5)
        await within(cleaner.start())
        for key in h.keys:
            await within(cleaner.delete_queue(key))
        await within(cleaner.stop())


def collector(count: int) -> tuple[list[dict], Deferred, Any]:
    """A handler that records messages; the Deferred fires after ``count`` of them."""
    seen: list[dict] = []
    done: Deferred = Deferred()

    def handler(message: dict) -> None:
        seen.append(message)
        if len(seen) == count and not done.called:
            done.callback(seen)

    return seen, done, handler


def sample_messages() -> list[dict]:
    inbound = messages.user_message(
        to_addr="+27820001001",
        from_addr="+27820001002",
        transport_name="chan1",
        transport_type="sms",
        content="hello é ☃",
        session_event="new",
        helper_metadata={"voice": {"speech_url": "http://example.com"}},
        transport_metadata={"smsc": "x"},
    )
    return [
        inbound,
        messages.reply(inbound, "bye", continue_session=False),
        messages.ack(inbound["message_id"], "smsc-1", transport_name="chan1"),
        messages.nack(inbound["message_id"], "no route", transport_name="chan1"),
        messages.delivery_report(inbound["message_id"], "delivered", transport_name="chan1"),
        messages.status("smpp", "down", "bind_failed", "cannot bind", details={"n": 3}),
        messages.failure(inbound, "boom", "permanent"),
    ]


@pytest_twisted.ensureDeferred
async def test_round_trip_every_message_kind(harness: Harness) -> None:
    samples = sample_messages()
    key = harness.key("inbound")
    for message in samples:
        await within(harness.bus.publish(key, message))
    seen, done, handler = collector(len(samples))
    consumer = await within(harness.bus.consume(key, handler))
    await within(done)
    assert seen == samples
    assert {m["message_type"] for m in seen} == {
        messages.USER_MESSAGE,
        messages.EVENT,
        messages.STATUS_EVENT,
        messages.FAILURE_MESSAGE,
    }
    await within(consumer.stop())


@pytest_twisted.ensureDeferred
async def test_publish_to_a_consumed_queue_is_delivered(harness: Harness) -> None:
    key = harness.key("event")
    seen, done, handler = collector(1)
    consumer = await within(harness.bus.consume(key, handler))
    message = messages.ack("abc", "def", transport_name="chan1")
    await within(harness.bus.publish(key, message))
    assert await within(done) == [message]
    await within(consumer.stop())


@pytest_twisted.ensureDeferred
async def test_failed_handler_gets_the_message_again(harness: Harness) -> None:
    key = harness.key("inbound")
    attempts: list[str] = []
    done: Deferred = Deferred()

    def handler(message: dict) -> Deferred:
        attempts.append(message["message_id"])
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        done.callback(None)
        return succeed(None)

    consumer = await within(harness.bus.consume(key, handler))
    message = sample_messages()[0]
    await within(harness.bus.publish(key, message))
    await within(done)
    assert attempts == [message["message_id"], message["message_id"]]
    # Acknowledged after the successful attempt: nothing is left once the consumer stops.
    await within(consumer.stop())
    assert await within(harness.bus.queue_length(key)) == 0


@pytest_twisted.ensureDeferred
async def test_async_handler_failure_is_retried(harness: Harness) -> None:
    key = harness.key("inbound")
    calls: list[int] = []
    done: Deferred = Deferred()

    async def handler(message: dict) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("not yet")
        done.callback(None)

    consumer = await within(harness.bus.consume(key, handler))
    await within(harness.bus.publish(key, sample_messages()[0]))
    await within(done)
    assert len(calls) == 3
    await within(consumer.stop())


@pytest_twisted.ensureDeferred
async def test_prefetch_bounds_messages_in_the_handler(harness: Harness) -> None:
    key = harness.key("outbound")
    total, prefetch = 10, 3
    for _ in range(total):
        await within(harness.bus.publish(key, sample_messages()[0]))
    held: list[Deferred] = []
    peak = [0]
    handled: list[int] = []
    arrival: list[Deferred] = [Deferred()]

    def handler(message: dict) -> Deferred:
        d: Deferred = Deferred()
        held.append(d)
        peak[0] = max(peak[0], len(held))
        d.addCallback(lambda _: (held.remove(d), handled.append(1)))
        if len(held) == prefetch or len(handled) + len(held) == total:
            waiter, arrival[0] = arrival[0], Deferred()
            waiter.callback(None)
        return d

    consumer = await within(harness.bus.consume(key, handler, prefetch=prefetch))
    await within(arrival[0])
    # The others wait on the queue, not in this process.
    assert len(held) == prefetch
    assert await within(harness.bus.queue_length(key)) == total - prefetch
    while len(handled) < total:
        if len(held) < prefetch and len(handled) + len(held) < total:
            await within(arrival[0])  # the next delivery fills the freed slot
        held[0].callback(None)
    assert peak[0] == prefetch
    await within(consumer.stop())


@pytest_twisted.ensureDeferred
async def test_pause_and_resume(harness: Harness) -> None:
    key = harness.key("outbound")
    seen: list[dict] = []
    arrivals: list[Deferred] = [Deferred(), Deferred()]

    def handler(message: dict) -> None:
        seen.append(message)
        arrivals[len(seen) - 1].callback(None)

    consumer = await within(harness.bus.consume(key, handler, paused=True))
    assert consumer.paused
    first, second = sample_messages()[:2]
    await within(harness.bus.publish(key, first))
    assert await within(harness.bus.queue_length(key)) == 1
    assert seen == []

    consumer.resume()
    assert not consumer.paused
    await within(arrivals[0])
    assert seen == [first]

    consumer.pause()
    await within(harness.settled(consumer))
    await within(harness.bus.publish(key, second))
    assert await within(harness.bus.queue_length(key)) == 1
    assert seen == [first]

    consumer.resume()
    await within(arrivals[1])
    assert seen == [first, second]
    await within(consumer.stop())


@pytest_twisted.ensureDeferred
async def test_queue_length_and_purge(harness: Harness) -> None:
    key = harness.key("inbound")
    assert await within(harness.bus.queue_length(harness.key("never-used"))) == 0
    assert await within(harness.bus.purge(harness.key("never-used-either"))) == 0
    for message in sample_messages()[:3]:
        await within(harness.bus.publish(key, message))
    assert await within(harness.bus.queue_length(key)) == 3
    assert await within(harness.bus.purge(key)) == 3
    assert await within(harness.bus.queue_length(key)) == 0


@pytest_twisted.ensureDeferred
async def test_delete_queue(harness: Harness) -> None:
    key = harness.key("inbound")
    seen, _, handler = collector(99)
    await within(harness.bus.consume(key, handler, paused=True))
    await within(harness.bus.publish(key, sample_messages()[0]))
    assert await within(harness.bus.queue_length(key)) == 1
    await within(harness.bus.delete_queue(key))
    assert await within(harness.bus.queue_length(key)) == 0
    # Deleting stopped the queue's consumers; publishing again starts a new queue.
    await within(harness.bus.publish(key, sample_messages()[1]))
    assert await within(harness.bus.queue_length(key)) == 1
    assert seen == []
    await within(harness.bus.delete_queue(harness.key("never-used")))


@pytest_twisted.ensureDeferred
async def test_priority_queue_serves_high_priority_first(harness: Harness) -> None:
    key = harness.key("outbound")
    seen, done, handler = collector(3)
    consumer = await within(
        harness.bus.consume(key, handler, max_priority=MAX_PRIORITY, paused=True)
    )
    low, high, normal = sample_messages()[:3]
    await within(harness.bus.publish(key, low, priority=0))
    await within(harness.bus.publish(key, normal))
    await within(harness.bus.publish(key, high, priority=MAX_PRIORITY))
    consumer.resume()
    await within(done)
    assert seen[0] == high
    assert sorted(map(messages.to_json, seen)) == sorted(map(messages.to_json, [low, high, normal]))
    await within(consumer.stop())


@pytest_twisted.ensureDeferred
async def test_invalid_body_is_dropped_without_blocking(harness: Harness) -> None:
    key = harness.key("inbound")
    await within(harness.publish_raw(key, b"this is not json"))
    await within(harness.publish_raw(key, b'{"message_version": "20110921"}'))
    good = sample_messages()[0]
    await within(harness.bus.publish(key, good))
    seen, done, handler = collector(1)
    consumer = await within(harness.bus.consume(key, handler))
    assert await within(done) == [good]
    await within(consumer.stop())
    # Stopping hands unacknowledged messages back: the invalid ones were acked away.
    assert await within(harness.bus.queue_length(key)) == 0
    assert seen == [good]


@pytest_twisted.ensureDeferred
async def test_consumer_stop_waits_for_handlers_in_flight(harness: Harness) -> None:
    key = harness.key("inbound")
    gate: Deferred = Deferred()
    entered: Deferred = Deferred()
    finished: list[str] = []

    def handler(message: dict) -> Deferred:
        # Signalled on a later turn, so the test acts after the handler has returned.
        reactor.callLater(0, entered.callback, None)
        return gate.addCallback(lambda _: finished.append(message["message_id"]))

    consumer = await within(harness.bus.consume(key, handler))
    message = sample_messages()[0]
    await within(harness.bus.publish(key, message))
    await within(entered)
    stopping = consumer.stop()
    assert not stopping.called
    gate.callback(None)
    await within(stopping)
    assert finished == [message["message_id"]]
    # The handler succeeded before the consumer went away, so the message was acked.
    assert await within(harness.bus.queue_length(key)) == 0


@pytest_twisted.ensureDeferred
async def test_bus_stop_waits_for_handlers_in_flight(harness: Harness) -> None:
    key = harness.key("inbound")
    gate: Deferred = Deferred()
    entered: Deferred = Deferred()

    def handler(message: dict) -> Deferred:
        # Signalled on a later turn, so the test acts after the handler has returned.
        reactor.callLater(0, entered.callback, None)
        return gate

    await within(harness.bus.consume(key, handler))
    await within(harness.bus.publish(key, sample_messages()[0]))
    await within(entered)
    stopping = harness.bus.stop()
    assert not stopping.called
    gate.callback(None)
    await within(stopping)


@pytest_twisted.ensureDeferred
async def test_messages_are_shared_between_consumers_of_a_queue(harness: Harness) -> None:
    key = harness.key("inbound")
    seen: list[dict] = []
    done: Deferred = Deferred()
    total = 6

    def handler(message: dict) -> None:
        seen.append(message)
        if len(seen) == total:
            done.callback(None)

    consumers = [await within(harness.bus.consume(key, handler)) for _ in range(2)]
    for _ in range(total):
        await within(harness.bus.publish(key, sample_messages()[0]))
    await within(done)
    assert len(seen) == total
    await within(DeferredList([c.stop() for c in consumers]))
