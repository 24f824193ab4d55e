"""The behaviour every channel type must have, run through the shared harness.

A channel type's test module subclasses ``TransportContract`` and provides a
``driver`` fixture returning its ``TransportDriver``.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from junebug import messages
from tests.transports.harness import TransportHarness


class TransportContract:
    @pytest_twisted.async_yield_fixture
    async def harness(self, driver, tmp_path):
        await driver.start_peer()
        harness = await TransportHarness(
            driver.transport_class,
            driver.config(),
            str(tmp_path / "logs"),
            **driver.harness_options(),
        ).start()
        yield harness
        await harness.stop()
        await driver.stop_peer()

    @pytest_twisted.ensureDeferred
    async def test_reports_ok_status_once_ready(self, harness):
        status = await harness.next_status()
        assert status["status"] == "ok"
        assert status["message_type"] == "status_event"

    @pytest_twisted.ensureDeferred
    async def test_user_text_arrives_as_inbound(self, driver, harness):
        user = await driver.connect_user(harness)
        await driver.user_sends(user, "hello wörld ✓")
        inbound = await harness.next_inbound_with(
            messages.SESSION_RESUME if driver.sessions else None
        )
        assert inbound["content"] == "hello wörld ✓"
        assert inbound["from_addr"] == driver.address(user)
        assert inbound["transport_name"] == harness.channel_id
        assert messages.validate(inbound) is inbound

    @pytest_twisted.ensureDeferred
    async def test_sessions_start_and_end(self, driver, harness):
        if not driver.sessions:
            pytest.skip("this channel type has no sessions")
        user = await driver.connect_user(harness)
        started = await harness.next_inbound()
        assert started["session_event"] == messages.SESSION_NEW
        assert started["content"] is None
        await driver.user_leaves(user)
        if not driver.reports_session_end:
            return
        ended = await harness.next_inbound_with(messages.SESSION_CLOSE)
        assert ended["from_addr"] == driver.address(user)
        assert ended["content"] is None

    @pytest_twisted.ensureDeferred
    async def test_outbound_reaches_user_and_is_acked(self, driver, harness):
        if not driver.pushes_messages:
            pytest.skip("this channel type only answers requests (see the undeliverable test)")
        user = await driver.connect_user(harness)
        sent = await harness.send(driver.address(user), "how are you? ✓")
        assert await driver.user_receives(user) == "how are you? ✓"
        event = await harness.next_event()
        assert event["event_type"] == "ack"
        assert event["user_message_id"] == sent["message_id"]

    @pytest_twisted.ensureDeferred
    async def test_reply_reaches_user(self, driver, harness):
        user = await driver.connect_user(harness)
        await driver.user_sends(user, "question")
        inbound = await harness.next_inbound_with(
            messages.SESSION_RESUME if driver.sessions else None
        )
        reply = messages.reply(inbound, "answer")
        await harness.send_message(reply)
        assert await driver.user_receives(user) == "answer"
        event = await harness.next_event()
        assert (event["event_type"], event["user_message_id"]) == ("ack", reply["message_id"])

    @pytest_twisted.ensureDeferred
    async def test_closing_reply_ends_session(self, driver, harness):
        if not driver.sessions:
            pytest.skip("this channel type has no sessions")
        user = await driver.connect_user(harness)
        await driver.user_sends(user, "bye?")
        inbound = await harness.next_inbound_with(messages.SESSION_RESUME)
        await harness.send_message(messages.reply(inbound, "goodbye", continue_session=False))
        assert await driver.user_receives(user) == "goodbye"
        await driver.user_left(user)
        if not driver.reports_session_end:
            return
        ended = await harness.next_inbound_with(messages.SESSION_CLOSE)
        assert ended["from_addr"] == driver.address(user)

    @pytest_twisted.ensureDeferred
    async def test_undeliverable_address_is_nacked(self, driver, harness):
        if driver.unknown_address is None:
            pytest.skip("this channel type accepts any address")
        sent = await harness.send(driver.unknown_address, "anyone there?")
        event = await harness.next_event()
        assert event["event_type"] == "nack"
        assert event["user_message_id"] == sent["message_id"]
        assert event["nack_reason"]

    @pytest_twisted.ensureDeferred
    async def test_realtime_overtakes_queued_bulk_within_the_rate_limit(self, driver, harness):
        if not driver.pushes_messages:
            pytest.skip("this channel type only answers requests")
        user = await driver.connect_user(harness)
        address = driver.address(user)
        worker = harness.worker
        worker.set_rate_limit(1, 3600)  # one message an hour
        await harness.send_queued(address, "bulk 0")
        assert await driver.user_receives(user) == "bulk 0"  # it took the only token
        for n in (1, 2, 3):
            await harness.send_queued(address, f"bulk {n}")
        await harness.send_queued(address, "realtime", priority=5)
        # Everything waits for the rate limit: wait (bounded) until the channel holds all 4.
        for _ in range(200):
            if worker.scheduler.buffered == 4:
                break
            await deferLater(reactor, 0, lambda: None)
        assert worker.scheduler.buffered == 4
        worker.set_rate_limit(None, None)  # lifted: the queue goes out, highest first
        received = [await driver.user_receives(user) for _ in range(4)]
        assert received == ["realtime", "bulk 1", "bulk 2", "bulk 3"]

    def test_valid_config_has_no_problems(self, driver):
        assert driver.transport_class.check_config(driver.config()) == []

    def test_invalid_configs_are_refused_naming_the_problem(self, driver):
        assert driver.invalid_configs, "a channel type must list configs it refuses"
        for label, config, expected in driver.invalid_configs:
            problems = driver.transport_class.check_config(config)
            assert problems, f"{label}: accepted {config!r}"
            assert any(expected in p["message"] for p in problems), (label, problems)

    @pytest_twisted.ensureDeferred
    async def test_restart_on_same_config(self, driver, harness, tmp_path):
        """Stopping releases the wire (ports, binds) so the same config starts again."""
        await harness.stop()
        again = await TransportHarness(
            driver.transport_class,
            harness.config,
            str(tmp_path / "again"),
            **driver.harness_options(),
        ).start()
        try:
            status = await again.next_status()
            assert status["status"] == "ok"
        finally:
            await again.stop()
