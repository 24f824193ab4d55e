"""TransportWorker: outbound handling, failures become nacks, pausing."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred

from junebug.transports.base import Transport
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
