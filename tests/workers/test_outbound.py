"""The outbound scheduler: rate limit, priorities, expiry and cancellation, on both
buses.

Time is a ``task.Clock`` given to the scheduler; the bus runs on the reactor. Tests
wait for things to happen (``scheduler.until``, the wire's DeferredQueue) within a
bound, and count what reached the wire: nothing here sleeps or asserts on timing.
The AMQP runs use the shared RabbitMQ with queue names unique to each test, deleted
afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList, DeferredQueue

from junebug import messages
from junebug.bus.amqp import AmqpBus
from junebug.bus.base import MessageBus, channel_keys, event_key, outbound_key
from junebug.bus.local import LocalBus
from junebug.logs import ChannelLog
from junebug.store.queues import QueueStore
from junebug.store.redis import Keys
from junebug.transports.base import Transport
from junebug.workers.outbound import (
    BUFFER_SIZE,
    QUEUE_FIELD,
    TAKEN_FLUSH_DELAY,
    RateLimit,
    enqueue,
    priority_value,
    queue_status,
)
from junebug.workers.transport import TransportWorker
from tests.helpers import within

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:txamqp")


# -- the rate limit on its own ----------------------------------------------------------


def test_rate_limit_allows_count_per_window_and_never_more():
    rate = RateLimit(3, 10)
    now = 100.0
    for _ in range(3):
        assert rate.wait(now) == 0
        rate.take(now)
    assert rate.wait(now) == pytest.approx(10)
    assert rate.wait(now + 9.5) == pytest.approx(0.5)
    assert rate.wait(now + 10) == 0


def test_rate_limit_tokens_come_back_one_window_after_each_send():
    rate = RateLimit(2, 10)
    rate.take(0.0)
    rate.take(4.0)
    assert rate.wait(5.0) == pytest.approx(5)  # the first token returns at 10
    assert rate.wait(10.0) == 0
    rate.take(10.0)
    assert rate.wait(10.0) == pytest.approx(4)  # the second returns at 14


def test_rate_limit_without_count_or_window_is_unlimited():
    for count, window in ((None, None), (0, 10), (5, 0), (None, 10)):
        rate = RateLimit(count, window)
        for _ in range(1000):
            rate.take(0.0)
        assert rate.unlimited and rate.wait(0.0) == 0


def test_rate_limit_lowered_waits_for_spent_tokens():
    rate = RateLimit(10, 10)
    for second in range(5):
        rate.take(float(second))
    rate.set(2, 10)
    # The two newest sends (at 3 and 4) hold both tokens now.
    assert rate.wait(5.0) == pytest.approx(8)
    rate.set(20, 10)
    assert rate.wait(5.0) == 0


def test_priority_names():
    assert priority_value(None) == 1
    assert priority_value("bulk") == 1
    assert priority_value("realtime") == 5
    assert priority_value(3) == 3


# -- the scheduler on a real bus --------------------------------------------------------


class Wire(Transport):
    """Records what reaches the wire; ``hold`` keeps every send unfinished (a peer
    that stopped answering)."""

    transport_type = "test"
    instances: list[Wire] = []

    def __init__(self, context: Any, config: dict) -> None:
        super().__init__(context, config)
        self.sent: list[str] = []
        self.arrivals: DeferredQueue = DeferredQueue()
        self.hold = bool(config.get("hold"))
        self.held: list[Deferred] = []
        Wire.instances.append(self)

    async def handle_outbound(self, message: dict) -> None:
        self.sent.append(message["content"])
        self.arrivals.put(message["content"])
        if self.hold:
            waiting: Deferred = Deferred()
            self.held.append(waiting)
            await waiting

    def release(self) -> None:
        held, self.held = self.held, []
        for d in held:
            d.callback(None)


class Setup:
    """A bus, a Redis queue store and the channels a test runs on it."""

    def __init__(self, bus: MessageBus, redis: Any, prefix: str, log_dir: str) -> None:
        self.bus = bus
        self.queues = QueueStore(redis, Keys(prefix))
        self.log_dir = log_dir
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.channel_ids: list[str] = []
        self.workers: list[TransportWorker] = []
        self.logs: list[ChannelLog] = []
        self.events: dict[str, DeferredQueue] = {}

    def new_channel(self) -> str:
        channel_id = f"jbtest{uuid.uuid4().hex[:10]}"
        self.channel_ids.append(channel_id)
        return channel_id

    async def start(self, channel_id: str, **options: Any) -> TransportWorker:
        config = {"hold": options.pop("hold", False)}
        log = ChannelLog(channel_id, self.log_dir)
        self.logs.append(log)
        if channel_id not in self.events:
            self.events[channel_id] = DeferredQueue()
            await within(self.bus.consume(event_key(channel_id), self.events[channel_id].put))
        worker = TransportWorker(
            channel_id,
            Wire,
            config,
            bus=self.bus,
            clock=self.clock,
            log=log,
            queues=self.queues,
            **options,
        )
        await within(Deferred.fromCoroutine(worker.start()))
        self.workers.append(worker)
        return worker

    async def send(
        self,
        channel_id: str,
        content: str,
        priority: int = 1,
        validity: float | None = None,
        counted: bool = True,
    ) -> dict:
        message = messages.user_message(
            to_addr="+27820000001", from_addr=None, transport_name=channel_id, content=content
        )
        await enqueue(
            self.bus,
            self.queues if counted else None,
            self.clock,
            channel_id,
            message,
            priority=priority,
            validity=validity,
        )
        return message

    async def send_many(self, channel_id: str, count: int, prefix: str = "bulk") -> None:
        """Publish ``count`` bulk messages, uncounted in Redis, in pipelined batches."""
        for start in range(0, count, 200):
            batch = [
                Deferred.fromCoroutine(self.send(channel_id, f"{prefix}-{n}", counted=False))
                for n in range(start, min(start + 200, count))
            ]
            await within(DeferredList(batch, fireOnOneErrback=True, consumeErrors=True), 60)

    async def next_event(self, channel_id: str) -> dict:
        return await within(self.events[channel_id].get())

    async def stop(self) -> None:
        for worker in self.workers:
            await within(Deferred.fromCoroutine(worker.stop()), 20)
        for log in self.logs:
            log.close()


@pytest_twisted.async_yield_fixture(params=["local", "amqp"])
async def setup(request: Any, redis: Any, key_prefix: str, tmp_path: Any):
    if request.param == "local":
        bus: MessageBus = LocalBus(reactor)
    else:
        bus = AmqpBus(connect_timeout=5, publish_timeout=30, retry_delay=0.05)
    await within(bus.start())
    s = Setup(bus, redis, key_prefix, str(tmp_path))
    yield s
    await s.stop()
    if isinstance(bus, AmqpBus):
        for channel_id in s.channel_ids:
            for key in channel_keys(channel_id):
                await within(bus.delete_queue(key), 30)
    await within(bus.stop(), 20)


def buffered_at_least(count: int) -> Any:
    return lambda scheduler: scheduler.buffered >= count


async def wire_count(wire: Wire, count: int) -> list[str]:
    """Wait until ``count`` messages reached the wire."""
    while len(wire.sent) < count:
        await within(wire.arrivals.get())
    # Take what is already counted off the queue so later waits see new sends only.
    while wire.arrivals.pending:
        wire.arrivals.pending.pop()
    return wire.sent


@pytest_twisted.ensureDeferred
async def test_rate_limit_sends_count_per_window_and_keeps_the_rest_queued(setup: Setup):
    channel = setup.new_channel()
    for n in range(7):
        await setup.send(channel, f"m{n}")
    worker = await setup.start(channel, rate_limit_count=3, rate_limit_window=10)
    wire = Wire.instances[-1]
    await wire_count(wire, 3)
    await within(worker.scheduler.until(buffered_at_least(4)))
    assert wire.sent == ["m0", "m1", "m2"]
    setup.clock.advance(9.9)
    assert len(wire.sent) == 3
    setup.clock.advance(0.1)
    await wire_count(wire, 6)
    assert wire.sent == [f"m{n}" for n in range(6)]
    setup.clock.advance(10)
    await wire_count(wire, 7)
    status = await queue_status(setup.bus, channel, scheduler=worker.scheduler)
    assert (status["length"], status["buffered"]) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_changing_the_rate_limit_applies_to_the_running_scheduler(setup: Setup):
    channel = setup.new_channel()
    for n in range(6):
        await setup.send(channel, f"m{n}")
    worker = await setup.start(channel, rate_limit_count=1, rate_limit_window=60)
    wire = Wire.instances[-1]
    await wire_count(wire, 1)
    await within(worker.scheduler.until(buffered_at_least(5)))
    consumer = worker.consumer
    worker.set_rate_limit(3, 60)
    await wire_count(wire, 3)  # two more tokens at once, no clock movement
    worker.set_rate_limit(None, None)
    await wire_count(wire, 6)
    assert wire.sent == [f"m{n}" for n in range(6)]
    assert worker.consumer is consumer and Wire.instances[-1] is wire  # no restart


@pytest_twisted.ensureDeferred
async def test_realtime_overtakes_ten_thousand_queued_bulk_messages(setup: Setup):
    channel = setup.new_channel()
    await setup.send_many(channel, 10_000)
    worker = await setup.start(channel, rate_limit_count=1, rate_limit_window=1)
    wire = Wire.instances[-1]
    await wire_count(wire, 1)
    # The local buffer is full of bulk messages already taken off the queue.
    await within(worker.scheduler.until(buffered_at_least(BUFFER_SIZE)))
    realtime = await setup.send(channel, "realtime!", priority=5)
    assert realtime[QUEUE_FIELD]["priority"] == 5

    # The token due now goes to the best message the consumer holds (a bulk one);
    # sending it frees the buffer slot the realtime message arrives in...
    setup.clock.advance(1)
    await wire_count(wire, 2)
    await within(worker.scheduler.until(lambda s: "5" in s.buffered_by_priority()))
    # ... and the next token is its: ahead of the 7 bulk messages buffered before it.
    setup.clock.advance(1)
    await wire_count(wire, 3)
    assert wire.sent == ["bulk-0", "bulk-1", "realtime!"]
    await within(worker.scheduler.until(buffered_at_least(BUFFER_SIZE)))
    waiting = await within(setup.bus.queue_length(outbound_key(channel)))
    assert waiting + worker.scheduler.buffered == 10_000 - 2
    await within(worker.scheduler.flush_taken())  # counted down within TAKEN_FLUSH_DELAY
    assert (await setup.queues.counts(channel))["5"] == 0


@pytest_twisted.ensureDeferred
async def test_higher_priorities_first_then_arrival_order(setup: Setup):
    channel = setup.new_channel()
    worker = await setup.start(channel, rate_limit_count=1, rate_limit_window=1)
    wire = Wire.instances[-1]
    await setup.send(channel, "first")
    await wire_count(wire, 1)  # spends the token: what follows waits in the buffer
    for content, priority in (("a1", 1), ("b3", 3), ("c1", 1), ("d5", 5), ("e3", 3), ("f5", 5)):
        await setup.send(channel, content, priority=priority)
    await within(worker.scheduler.until(buffered_at_least(6)))
    for n in range(2, 8):
        setup.clock.advance(1)
        await wire_count(wire, n)
    assert wire.sent == ["first", "d5", "f5", "b3", "e3", "a1", "c1"]


@pytest_twisted.ensureDeferred
async def test_one_channels_backlog_and_stuck_peer_do_not_slow_another(setup: Setup):
    stuck, fine = setup.new_channel(), setup.new_channel()
    await setup.send_many(stuck, 200, prefix="stuck")
    await setup.start(stuck, hold=True)
    stuck_wire = Wire.instances[-1]
    await wire_count(stuck_wire, BUFFER_SIZE)  # every slot waits on the silent peer
    await setup.start(fine)
    fine_wire = Wire.instances[-1]
    for n in range(20):
        await setup.send(fine, f"fine-{n}")
    await wire_count(fine_wire, 20)
    assert fine_wire.sent == [f"fine-{n}" for n in range(20)]
    assert len(stuck_wire.sent) == BUFFER_SIZE
    stuck_wire.hold = False
    stuck_wire.release()


@pytest_twisted.ensureDeferred
async def test_expired_messages_are_rejected_not_sent(setup: Setup):
    channel = setup.new_channel()
    await setup.send(channel, "first")
    await setup.send(channel, "short-lived", validity=5)
    await setup.send(channel, "patient", validity=3600)
    worker = await setup.start(channel, rate_limit_count=1, rate_limit_window=10)
    wire = Wire.instances[-1]
    await wire_count(wire, 1)
    await within(worker.scheduler.until(buffered_at_least(2)))
    setup.clock.advance(5)  # short-lived expires in the buffer, before its token
    event = await setup.next_event(channel)
    assert (event["event_type"], event["nack_reason"]) == ("nack", "expired")
    api_event = messages.api_from_event(channel, event)
    assert api_event["event_type"] == "rejected"
    assert api_event["event_details"] == {"reason": "expired"}
    setup.clock.advance(5)
    await wire_count(wire, 2)
    assert wire.sent == ["first", "patient"]
    # Expired on its way through the queue (or in the buffer): rejected, never sent.
    await setup.send(channel, "too late", validity=1)
    setup.clock.advance(2)
    event = await setup.next_event(channel)
    assert event["nack_reason"] == "expired"
    assert wire.sent == ["first", "patient"]
    await within(worker.scheduler.flush_taken())
    assert (await setup.queues.counts(channel)) == dict.fromkeys("12345", 0)


@pytest_twisted.ensureDeferred
async def test_cancel_rejects_everything_queued_and_later_messages_go_out(setup: Setup):
    channel = setup.new_channel()
    sent = [await setup.send(channel, f"old-{n}", priority=1 + n % 5) for n in range(30)]
    worker = await setup.start(channel, rate_limit_count=1, rate_limit_window=60)
    wire = Wire.instances[-1]
    await wire_count(wire, 1)
    await within(worker.scheduler.until(buffered_at_least(BUFFER_SIZE)))
    mark = await setup.queues.cancel(channel, setup.clock.seconds())
    assert worker.scheduler.cancel(mark) == BUFFER_SIZE
    rejected = [await setup.next_event(channel) for _ in range(29)]
    assert {e["nack_reason"] for e in rejected} == {"cancelled"}
    first_out = wire.sent[0]
    expected = {m["message_id"] for m in sent if m["content"] != first_out}
    assert {e["user_message_id"] for e in rejected} == expected
    newer = await setup.send(channel, "new")
    setup.clock.advance(60)
    await wire_count(wire, 2)
    assert wire.sent == [first_out, newer["content"]]
    status = await queue_status(setup.bus, channel, scheduler=worker.scheduler)
    assert status["length"] == 0


@pytest_twisted.ensureDeferred
async def test_cancel_drains_a_paused_channel(setup: Setup):
    channel = setup.new_channel()
    worker = await setup.start(channel)
    wire = Wire.instances[-1]
    for n in range(20):
        await setup.send(channel, f"m{n}")
    await wire_count(wire, 20)
    worker.set_paused(True)  # the transport lost its connection, say
    for n in range(20, 40):
        await setup.send(channel, f"m{n}")
    mark = await setup.queues.cancel(channel, setup.clock.seconds())
    worker.scheduler.cancel(mark)
    rejected = [await setup.next_event(channel) for _ in range(20)]
    assert {e["nack_reason"] for e in rejected} == {"cancelled"}
    assert len(wire.sent) == 20


@pytest_twisted.ensureDeferred
async def test_a_cancelled_mark_survives_a_restart(setup: Setup):
    channel = setup.new_channel()
    await setup.send(channel, "before")
    await setup.queues.cancel(channel, setup.clock.seconds())
    await setup.send(channel, "after")
    await setup.start(channel)
    wire = Wire.instances[-1]
    event = await setup.next_event(channel)
    assert event["nack_reason"] == "cancelled"
    await wire_count(wire, 1)
    assert wire.sent == ["after"]


@pytest_twisted.ensureDeferred
async def test_stopping_hands_buffered_messages_back_to_the_queue(setup: Setup, monkeypatch):
    from junebug.bus import local

    monkeypatch.setattr(local, "RETRY_DELAY", 0.01)
    channel = setup.new_channel()
    for n in range(12):
        await setup.send(channel, f"m{n}")
    worker = await setup.start(channel, rate_limit_count=2, rate_limit_window=60)
    first = Wire.instances[-1]
    await wire_count(first, 2)
    await within(worker.scheduler.until(buffered_at_least(BUFFER_SIZE)))
    await within(Deferred.fromCoroutine(worker.stop()), 20)
    setup.workers.remove(worker)
    await setup.start(channel)
    second = Wire.instances[-1]
    await wire_count(second, 10)
    # Every message went out exactly once (the in-process bus may reorder the ones
    # handed back, see docs/queues.md).
    assert sorted(first.sent + second.sent) == sorted(f"m{n}" for n in range(12))


@pytest_twisted.ensureDeferred
async def test_queue_status_does_not_wait_for_an_absent_broker():
    from twisted.internet.defer import Deferred
    from twisted.internet.task import Clock

    from junebug.workers.outbound import QUEUE_LENGTH_TIMEOUT, queue_status

    class AbsentBroker:
        def queue_length(self, key):
            return Deferred()  # never answers, like a bus waiting to reconnect

    clock = Clock()
    pending = Deferred.fromCoroutine(queue_status(AbsentBroker(), "c", clock=clock))
    assert not pending.called
    clock.advance(QUEUE_LENGTH_TIMEOUT)
    status = await pending
    assert (status["length"], status["waiting"]) == (None, None)


class _RecordingBus:
    """Publishes succeed (and are kept) until ``failure`` is set; then they fail with it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict, int | None]] = []
        self.failure: Exception | None = None

    def publish(self, routing_key: str, message: dict, priority: int | None = None) -> Deferred:
        from twisted.internet.defer import fail, succeed

        if self.failure is not None:
            return fail(self.failure)
        self.published.append((routing_key, message, priority))
        return succeed(None)


@pytest_twisted.ensureDeferred
async def test_enqueue_with_a_seq_already_accepted(redis: Any, key_prefix: str):
    """``seq`` given (accepted with the record, ``store_outbound``'s ``accept``): the
    message carries it, it is not counted twice, and a failed publish still takes its
    count back, as when ``enqueue`` accepted it itself."""
    from junebug.bus.base import BusUnavailable

    queues = QueueStore(redis, Keys(key_prefix))
    clock = task.Clock()
    clock.advance(100)
    bus = _RecordingBus()
    message = messages.user_message(to_addr="+27820000001", from_addr=None, transport_name="c")
    seq = await queues.accept("c", 3)
    await enqueue(bus, queues, clock, "c", message, priority=3, validity=5, seq=seq)
    assert bus.published == [(outbound_key("c"), message, 3)]
    assert message[QUEUE_FIELD] == {"priority": 3, "seq": 1, "expires_at": 105}
    assert await queues.counts("c") == {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0}

    bus.failure = BusUnavailable("gone")
    seq = await queues.accept("c", 3)
    other = messages.user_message(to_addr="+27820000001", from_addr=None, transport_name="c")
    with pytest.raises(BusUnavailable):
        await enqueue(bus, queues, clock, "c", other, priority=3, seq=seq)
    assert other[QUEUE_FIELD]["seq"] == 2
    assert await queues.counts("c") == {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0}
    assert await queues.accept("c", 1) == 3  # numbers are never handed out twice

    # Without seq, enqueue accepts as before.
    bus.failure = None
    last = messages.user_message(to_addr="+27820000001", from_addr=None, transport_name="c")
    await enqueue(bus, queues, clock, "c", last, priority=1)
    assert last[QUEUE_FIELD]["seq"] == 4
    assert await queues.counts("c") == {"1": 2, "2": 0, "3": 1, "4": 0, "5": 0}


# -- counting down what leaves the buffer -------------------------------------------------


class CountingQueues(QueueStore):
    """A QueueStore that records its ``taken`` writes."""

    def __init__(self, queues: QueueStore) -> None:
        super().__init__(queues.redis, queues.keys)
        self.writes: list[tuple[int, int]] = []

    async def taken(self, channel_id: str, priority: int, count: int = 1) -> None:
        self.writes.append((priority, count))
        await super().taken(channel_id, priority, count)


@pytest_twisted.ensureDeferred
async def test_messages_leaving_are_counted_down_together_within_the_flush_delay(setup: Setup):
    setup.queues = queues = CountingQueues(setup.queues)
    channel = setup.new_channel()
    for n in range(20):
        await setup.send(channel, f"m{n}", priority=1 + n % 5)
    assert await queues.counts(channel) == dict.fromkeys("12345", 4)
    worker = await setup.start(channel)
    await wire_count(Wire.instances[-1], 20)
    # Not one write per message: nothing yet, until TAKEN_FLUSH_DELAY has passed...
    assert queues.writes == []
    assert await queues.counts(channel) == dict.fromkeys("12345", 4)
    setup.clock.advance(TAKEN_FLUSH_DELAY)
    await within(worker.scheduler.flush_taken())  # ... then one per priority.
    assert sorted(queues.writes) == [(p, 4) for p in range(1, 6)]
    # The same counts one write per message gave.
    assert await queues.counts(channel) == dict.fromkeys("12345", 0)


@pytest_twisted.ensureDeferred
async def test_stopping_counts_down_what_left_the_buffer(setup: Setup):
    channel = setup.new_channel()
    for n in range(6):
        await setup.send(channel, f"m{n}", priority=1 + n % 2)
    worker = await setup.start(channel)
    await wire_count(Wire.instances[-1], 6)
    await within(Deferred.fromCoroutine(worker.stop()), 20)
    setup.workers.remove(worker)
    assert await setup.queues.counts(channel) == dict.fromkeys("12345", 0)  # no clock moved


@pytest_twisted.ensureDeferred
async def test_queue_status_counts_down_what_left_the_buffer_before_reading(setup: Setup):
    channel = setup.new_channel()
    for n in range(5):
        await setup.send(channel, f"m{n}", priority=1 if n < 3 else 3)
    worker = await setup.start(channel, rate_limit_count=2, rate_limit_window=60)
    await wire_count(Wire.instances[-1], 2)
    await within(worker.scheduler.until(buffered_at_least(3)))
    status = await queue_status(setup.bus, channel, scheduler=worker.scheduler, queues=setup.queues)
    assert status["length"] == 3
    buffered = worker.scheduler.buffered_by_priority()
    assert status["by_priority"] == {p: buffered.get(p, 0) for p in "12345"}


@pytest_twisted.ensureDeferred
async def test_a_failed_count_down_is_logged_not_raised():
    from twisted.logger import globalLogPublisher

    from junebug.workers.outbound import OutboundScheduler, _Entry

    class RedisAway:
        async def taken(self, channel_id: str, priority: int, count: int = 1) -> None:
            raise ConnectionError("Redis away")

    clock = task.Clock()
    scheduler = OutboundScheduler(
        "c", send=None, reject=None, bus=None, clock=clock, queues=RedisAway()
    )
    message = messages.user_message(to_addr="a", from_addr=None, transport_name="c")
    message[QUEUE_FIELD] = {"priority": 2, "seq": 7, "expires_at": None}
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        scheduler._count_taken(_Entry(message))
        clock.advance(TAKEN_FLUSH_DELAY)
        await within(scheduler.flush_taken())
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e["error"] for e in events if "count down" in e.get("log_format", "")] == ["Redis away"]


@pytest_twisted.ensureDeferred
async def test_a_status_read_does_not_reset_counts_a_pending_count_down_will_lower(setup: Setup):
    """A message accepted, buffered and sent while the status read waits on Redis has its
    count-down still pending: resetting then would leave its priority at -1 for good."""
    from junebug.workers.outbound import OutboundScheduler, _Entry

    channel = setup.new_channel()
    clock = task.Clock()
    real = setup.queues

    class RaceInCounts(QueueStore):
        async def counts(self, channel_id: str) -> dict[str, int]:
            seen = await real.counts(channel_id)
            # Meanwhile the message went through the buffer and out: count-down pending.
            scheduler._count_taken(_Entry(message))
            return seen

    queues = RaceInCounts(real.redis, real.keys)
    scheduler = OutboundScheduler(
        channel, send=None, reject=None, bus=None, clock=clock, queues=queues
    )
    seq = await real.accept(channel, 2)
    message = messages.user_message(to_addr="a", from_addr=None, transport_name=channel)
    message[QUEUE_FIELD] = {"priority": 2, "seq": seq, "expires_at": None}

    status = await queue_status(
        LocalBus(clock), channel, scheduler=scheduler, queues=queues, clock=clock
    )
    assert status["by_priority"]["2"] == 1  # as read; not reset under the pending count-down
    await within(scheduler.flush_taken())
    assert await real.redis.hget(*real.slot(channel, 2)) == "0"  # not -1
