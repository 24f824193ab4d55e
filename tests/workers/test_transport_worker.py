"""TransportWorker: outbound handling, failures become nacks, pausing."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from junebug import messages
from junebug.bus.base import event_key, outbound_key
from junebug.bus.local import RETRY_DELAY, LocalBus
from junebug.logs import ChannelLog
from junebug.transports.base import RetryLater, Transport
from junebug.workers.outbound import BUFFER_SIZE
from junebug.workers.transport import TransportWorker
from tests.transports.harness import TransportHarness


class Flaky(Transport):
    """Raises on content "boom", records the rest; can be paused from the test."""

    START_PAUSED = True
    instances: list[Flaky] = []

    def __init__(self, context: Any, config: dict) -> None:
        super().__init__(context, config)
        self.sent: list[str] = []
        self.sent_event = Deferred()
        Flaky.instances.append(self)

    async def setup(self) -> None:
        await self.publish_status("flaky", "ok", "ready", "Ready")

    async def handle_outbound(self, message: dict) -> None:
        if message["content"] == "boom":
            raise ValueError("cannot send boom")
        self.sent.append(message["content"])
        await self.publish_ack(message["message_id"], "remote-1")


@pytest_twisted.ensureDeferred
async def test_starts_paused_until_the_transport_resumes(tmp_path):
    harness = await TransportHarness(Flaky, {}, str(tmp_path)).start()
    try:
        transport = Flaky.instances[-1]
        await harness.send("a", "first")
        await harness.next_status()
        # Let the reactor turn: a paused consumer must not deliver.
        await pytest_twisted.blockon_default if False else None  # noqa: B018
        assert transport.sent == []
        assert await harness.bus.queue_length(f"{harness.channel_id}.outbound") == 1
        transport.resume_outbound()
        event = await harness.next_event()
        assert event["event_type"] == "ack" and transport.sent == ["first"]
    finally:
        await harness.stop()


@pytest_twisted.ensureDeferred
async def test_a_raising_transport_nacks_and_keeps_going(tmp_path):
    harness = await TransportHarness(Flaky, {}, str(tmp_path)).start()
    try:
        Flaky.instances[-1].resume_outbound()
        boom = await harness.send("a", "boom")
        fine = await harness.send("a", "fine")
        first, second = await harness.next_event(), await harness.next_event()
        assert (first["event_type"], first["user_message_id"]) == ("nack", boom["message_id"])
        assert "cannot send boom" in first["nack_reason"]
        assert (second["event_type"], second["user_message_id"]) == ("ack", fine["message_id"])
        logged = (tmp_path / harness.channel_id).read_text()
        assert "cannot send boom" in logged and boom["message_id"] in logged
    finally:
        await harness.stop()


# -- RetryLater, stopping and the window, on a task.Clock -------------------------------


class Holding(Transport):
    """Holds every handle_outbound call until the test answers it; "retry" content
    raises RetryLater the first time it is seen."""

    OUTBOUND_WINDOW = 3
    instances: list[Holding] = []

    def __init__(self, context: Any, config: dict) -> None:
        super().__init__(context, config)
        self.held: dict[str, Deferred] = {}
        self.seen: list[str] = []
        self.stopping_called = False
        Holding.instances.append(self)

    async def handle_outbound(self, message: dict) -> None:
        self.seen.append(message["content"])
        if message["content"] == "retry" and self.seen.count("retry") == 1:
            raise RetryLater("not now")
        if message["content"] == "hold":
            waiting = self.held[message["message_id"]] = Deferred()
            await waiting
        await self.publish_ack(message["message_id"], "remote")

    async def stopping(self) -> None:
        self.stopping_called = True
        held, self.held = self.held, {}
        for waiting in held.values():
            waiting.errback(RetryLater("stopping"))


class ClockedWorker:
    def __init__(self, tmp_path: Any) -> None:
        self.clock = Clock()
        self.bus = LocalBus(self.clock)
        self.channel_id = "clocked"
        self.log = ChannelLog(self.channel_id, str(tmp_path))
        self.worker = TransportWorker(
            self.channel_id, Holding, {}, bus=self.bus, clock=self.clock, log=self.log
        )
        self.events: list[dict] = []

    async def start(self) -> None:
        await self.bus.consume(event_key(self.channel_id), self.events.append)
        await self.worker.start()

    def send(self, content: str) -> dict:
        message = messages.user_message(
            to_addr="a", from_addr=None, transport_name=self.channel_id, content=content
        )
        self.bus.publish(outbound_key(self.channel_id), message)
        return message

    def turn(self, seconds: float = 0) -> None:
        for _ in range(5):
            self.clock.advance(seconds if _ == 0 else 0)

    def waiting(self) -> int:
        return len(self.bus.queues[outbound_key(self.channel_id)])


@pytest_twisted.ensureDeferred
async def test_retry_later_puts_the_message_back_without_an_event(tmp_path):
    setup = ClockedWorker(tmp_path)
    await setup.start()
    transport = Holding.instances[-1]
    sent = setup.send("retry")
    setup.turn()
    assert transport.seen == ["retry"]
    assert setup.events == []  # no nack: the message is not given up
    setup.turn(RETRY_DELAY)  # the bus's back-off
    assert transport.seen == ["retry", "retry"]
    assert [(e["event_type"], e["user_message_id"]) for e in setup.events] == [
        ("ack", sent["message_id"])
    ]
    assert setup.waiting() == 0
    await setup.worker.stop()
    setup.log.close()


@pytest_twisted.ensureDeferred
async def test_the_prefetch_covers_the_transports_window(tmp_path):
    setup = ClockedWorker(tmp_path)
    await setup.start()
    transport = Holding.instances[-1]
    assert setup.worker.buffer_size == BUFFER_SIZE + Holding.OUTBOUND_WINDOW
    assert setup.worker.consumer.prefetch == setup.worker.buffer_size
    for _ in range(setup.worker.buffer_size + 2):
        setup.send("hold")
    setup.turn()
    # Every place is a message being handled: none is acknowledged yet.
    assert len(transport.held) == setup.worker.buffer_size
    assert setup.waiting() == 2
    await setup.worker.stop()
    setup.log.close()


@pytest_twisted.ensureDeferred
async def test_stopping_releases_held_calls_and_they_go_back_to_the_queue(tmp_path):
    setup = ClockedWorker(tmp_path)
    await setup.start()
    transport = Holding.instances[-1]
    for _ in range(3):
        setup.send("hold")
    setup.turn()
    assert len(transport.held) == 3
    stopped = Deferred.fromCoroutine(setup.worker.stop())
    setup.turn()
    assert transport.stopping_called and stopped.called  # did not wait for the far end
    assert setup.events == []
    setup.turn(RETRY_DELAY)
    assert setup.waiting() == 3  # every message is back on the queue, none lost
    setup.log.close()
