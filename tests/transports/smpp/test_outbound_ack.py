"""SmppChannel.handle_outbound returns only once the SMSC answered: driven with a
StringTransport and task.Clock, no network and no sleeping.

What the bus acknowledges is what ``handle_outbound`` returned for, so these tests
check when the call fires (or fails with ``RetryLater``) against what the SMSC saw.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from junebug.transports.base import RetryLater
from junebug.transports.smpp.constants import CommandStatus
from tests.transports.smpp.wire import Wire

CHANNEL = "smppunit"


@pytest.fixture
def wire(tmp_path):
    wire = Wire(tmp_path)
    wire.connect()
    yield wire
    wire.log.close()


def test_window_size_is_what_the_channel_wants_in_hand(wire):
    assert wire.channel.outbound_window() == 2


def test_handle_outbound_returns_only_after_submit_sm_resp_and_the_ack(wire):
    message, handled = wire.send("hello")
    (submit,) = wire.submits()
    assert not handled.called  # on the wire, not answered: the bus must not ack yet
    assert wire.events() == []
    wire.answer(submit)
    assert handled.called and handled.result is None
    (ack,) = wire.events()
    assert (ack["event_type"], ack["user_message_id"]) == ("ack", message["message_id"])


def test_a_refused_submit_returns_after_the_nack(wire):
    message, handled = wire.send("no")
    (submit,) = wire.submits()
    wire.answer(submit, CommandStatus.ESME_RINVDSTADR)
    assert handled.called and handled.result is None
    (nack,) = wire.events()
    assert (nack["event_type"], nack["user_message_id"]) == ("nack", message["message_id"])


def test_a_full_window_is_in_flight_at_once(wire):
    calls = [wire.send(f"m{n}")[1] for n in range(3)]
    first, second = wire.submits()
    assert not any(call.called for call in calls)
    wire.answer(second)
    assert calls[1].called and not calls[0].called
    (third,) = wire.submits()  # the window had a free place
    wire.answer(first)
    wire.answer(third)
    assert all(call.called for call in calls)


def test_a_submit_unanswered_when_the_connection_drops_is_sent_again_in_the_same_call(wire):
    message, handled = wire.send("again")
    (submit,) = wire.submits()
    wire.drop()
    assert not handled.called  # still held: its bus message is not acknowledged
    wire.connect()
    (resent,) = wire.submits()
    assert resent.params["short_message"] == submit.params["short_message"]
    wire.answer(resent)
    assert handled.called and handled.result is None
    assert [e["event_type"] for e in wire.events()] == ["ack"]


def test_a_repeat_delivery_waits_for_the_same_answer(wire):
    message, first = wire.send("once")
    repeat = Deferred.fromCoroutine(wire.channel.handle_outbound(dict(message)))
    (submit,) = wire.submits()
    assert wire.submits() == []  # sent once
    assert not repeat.called
    wire.answer(submit)
    assert first.called and repeat.called


def test_stopping_releases_queued_calls_with_retry_later_and_waits_for_answers(tmp_path):
    wire = Wire(tmp_path, window_size=1)
    wire.connect()
    try:
        on_wire, held_on_wire = wire.send("on the wire")
        queued, held_queued = wire.send("queued")
        (submit,) = wire.submits()  # window 1: the second waits in the channel
        stopping = Deferred.fromCoroutine(wire.channel.stopping())
        failures: list[Failure] = []
        held_queued.addErrback(failures.append)
        assert held_queued.called and failures and failures[0].check(RetryLater)
        assert not held_on_wire.called and not stopping.called
        wire.answer(submit)  # the drain lets it finish...
        assert held_on_wire.called and held_on_wire.result is None
        assert [p.command for p in wire.written()] == ["unbind"]  # ...then unbinds
        wire.drop()
        assert stopping.called
        events = wire.events()
        assert [(e["event_type"], e["user_message_id"]) for e in events] == [
            ("ack", on_wire["message_id"])
        ]
        # New calls are refused the same way: they go back to the bus.
        _, late = wire.send("late")
        late_failures: list[Failure] = []
        late.addErrback(late_failures.append)
        assert late_failures and late_failures[0].check(RetryLater)
    finally:
        wire.log.close()


def test_stopping_gives_back_submits_unanswered_after_the_drain_time(tmp_path):
    wire = Wire(tmp_path)
    wire.connect()
    try:
        _, held = wire.send("never answered")
        wire.submits()
        stopping = Deferred.fromCoroutine(wire.channel.stopping())
        wire.clock.advance(wire.channel.settings.drain_timeout)
        assert [p.command for p in wire.written()] == ["unbind"]
        wire.clock.advance(wire.channel.settings.unbind_timeout)
        assert stopping.called
        failures: list[Failure] = []
        held.addErrback(failures.append)
        assert failures and failures[0].check(RetryLater)
        assert wire.events() == []
    finally:
        wire.log.close()
