"""EsmeProtocol driven byte by byte with StringTransport and task.Clock (no sleeping)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from junebug.transports.smpp import pdu as smpp
from junebug.transports.smpp.constants import CommandStatus
from junebug.transports.smpp.protocol import (
    Backoff,
    BindSettings,
    EsmeHandler,
    EsmeProtocol,
    Submission,
    SubmitQueue,
    describe_pdu,
)


class Recorder(EsmeHandler):
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.results: list[tuple[Any, int, str | None]] = []
        self.deliver_status: Any = CommandStatus.ESME_ROK
        self.delivered: list[smpp.PDU] = []

    def smpp_bound(self, protocol):
        self.calls.append(("bound",))

    def smpp_bind_failed(self, protocol, command_status):
        self.calls.append(("bind_failed", command_status))

    def smpp_bind_timeout(self, protocol):
        self.calls.append(("bind_timeout",))

    def smpp_unbound(self, protocol):
        self.calls.append(("unbound",))

    def smpp_disconnected(self, protocol, reason, requeued, was_bound):
        self.calls.append(("disconnected", requeued, was_bound))

    def smpp_throttled(self, protocol, command_status):
        self.calls.append(("throttled", command_status))

    def smpp_unthrottled(self, protocol):
        self.calls.append(("unthrottled",))

    def smpp_submit_result(self, submission, command_status, message_id):
        self.results.append((submission.token, command_status, message_id))

    def smpp_deliver(self, pdu):
        self.delivered.append(pdu)
        return self.deliver_status


class AbortableTransport(StringTransport):
    def abortConnection(self) -> None:
        self.loseConnection()


class Link:
    """A protocol on a StringTransport, with helpers to read what it wrote."""

    def __init__(self, **settings: Any) -> None:
        self.clock = Clock()
        self.queue = SubmitQueue()
        self.handler = Recorder()
        self.settings = BindSettings(system_id="esme", password="secret", **settings)
        self.protocol = EsmeProtocol(self.settings, self.clock, self.queue, self.handler)
        self.transport = AbortableTransport()
        self.protocol.makeConnection(self.transport)

    def written(self) -> list[smpp.PDU]:
        data = self.transport.value()
        self.transport.clear()
        framer = smpp.PDUFramer()
        return [smpp.decode(frame) for frame in framer.feed(data)]

    def receive(self, pdu: smpp.PDU) -> None:
        self.protocol.dataReceived(smpp.encode(pdu))

    def bind(self) -> None:
        (bind,) = self.written()
        self.receive(smpp.make_response(bind, system_id="smsc"))

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionLost("gone")))

    def submit(self, token: Any) -> Submission:
        submission = Submission(
            {"destination_addr": "27820000001", "short_message": b"hi"}, token=token
        )
        self.queue.put(submission)
        return submission


@pytest.fixture
def link() -> Link:
    return Link(window_size=2, response_timeout=30, throttle_delay=1, enquire_link_interval=60)


@pytest.fixture
def bound(link: Link) -> Link:
    link.bind()
    link.written()
    return link


# -- binding ---------------------------------------------------------------------------------


def test_binds_as_transceiver_with_the_settings_and_no_delay():
    link = Link(system_type="VMA", interface_version=0x33, address_range="^1", addr_ton=1)
    (bind,) = link.written()
    assert bind.command == "bind_transceiver"
    assert bind.params["system_id"] == "esme"
    assert bind.params["password"] == "secret"
    assert bind.params["system_type"] == "VMA"
    assert bind.params["interface_version"] == 0x33
    assert bind.params["address_range"] == "^1"
    assert bind.params["addr_ton"] == 1


def test_bind_ok_starts_sending(link):
    link.submit("a")
    link.bind()
    assert link.handler.calls == [("bound",)]
    assert [p.command for p in link.written()] == ["submit_sm"]


def test_bind_refused_is_reported_and_disconnects(link):
    (bind,) = link.written()
    link.receive(smpp.make_response(bind, CommandStatus.ESME_RINVPASWD))
    assert link.handler.calls == [("bind_failed", CommandStatus.ESME_RINVPASWD)]
    assert link.transport.disconnecting


def test_generic_nack_to_the_bind_is_a_refusal(link):
    (bind,) = link.written()
    link.receive(smpp.generic_nack(bind.sequence_number, CommandStatus.ESME_RINVCMDID))
    assert link.handler.calls[0][0] == "bind_failed"
    assert link.transport.disconnecting


def test_bind_timeout():
    link = Link(bind_timeout=5)
    link.clock.advance(4.9)
    assert not link.transport.disconnecting
    link.clock.advance(0.2)
    assert link.handler.calls == [("bind_timeout",)]
    assert link.transport.disconnecting


def test_nothing_is_sent_before_the_bind(link):
    link.written()
    link.submit("a")
    assert link.written() == []


# -- keep-alive ------------------------------------------------------------------------------


def test_enquire_link_on_a_timer_and_answered(bound):
    bound.clock.advance(60)
    (enquire,) = bound.written()
    assert enquire.command == "enquire_link"
    bound.receive(smpp.make_response(enquire))
    bound.clock.advance(60)
    assert [p.command for p in bound.written()] == ["enquire_link"]
    assert not bound.transport.disconnecting


def test_unanswered_enquire_link_drops_the_connection(bound):
    bound.clock.advance(60)
    bound.written()
    bound.clock.advance(59)
    assert not bound.transport.disconnecting
    bound.clock.advance(1)
    assert bound.transport.disconnecting


def test_answers_the_smscs_enquire_link_and_unbind(bound):
    bound.receive(smpp.make_pdu("enquire_link", 77))
    (resp,) = bound.written()
    assert (resp.command, resp.sequence_number) == ("enquire_link_resp", 77)
    bound.receive(smpp.make_pdu("unbind", 78))
    (resp,) = bound.written()
    assert (resp.command, resp.sequence_number) == ("unbind_resp", 78)
    assert ("unbound",) in bound.handler.calls
    assert bound.transport.disconnecting


def test_our_unbind_waits_for_unbind_resp_then_closes(bound):
    closed = bound.protocol.unbind()
    (unbind,) = bound.written()
    assert unbind.command == "unbind"
    bound.receive(smpp.make_response(unbind))
    assert bound.transport.disconnecting
    assert not closed.called
    bound.lose()
    assert closed.called


def test_unbind_without_an_answer_closes_after_the_timeout(bound):
    bound.protocol.unbind()
    bound.written()
    bound.clock.advance(2)
    assert bound.transport.disconnecting


def test_unbind_first_waits_for_outstanding_submits(bound):
    bound.submit("a")
    (submit,) = bound.written()
    bound.protocol.unbind()
    assert bound.written() == []
    bound.receive(smpp.make_response(submit, message_id="1"))
    assert [p.command for p in bound.written()] == ["unbind"]
    assert bound.handler.results == [("a", 0, "1")]


# -- the window --------------------------------------------------------------------------------


def test_window_limits_outstanding_and_out_of_order_responses_match(bound):
    for token in "abcde":
        bound.submit(token)
    first = bound.written()
    assert [p.command for p in first] == ["submit_sm", "submit_sm"]
    bound.receive(smpp.make_response(first[1], message_id="id-b"))
    bound.receive(smpp.make_response(first[0], message_id="id-a"))
    assert bound.handler.results == [("b", 0, "id-b"), ("a", 0, "id-a")]
    assert len(bound.written()) == 2
    assert len(bound.queue) == 1


def test_error_response_is_a_result_not_a_retry(bound):
    bound.submit("a")
    (submit,) = bound.written()
    bound.receive(smpp.make_response(submit, CommandStatus.ESME_RINVDSTADR))
    assert bound.handler.results == [("a", CommandStatus.ESME_RINVDSTADR, None)]
    assert bound.written() == []


def test_response_to_an_unknown_sequence_is_ignored(bound):
    bound.receive(smpp.make_pdu("submit_sm_resp", 999, message_id="x"))
    assert bound.handler.results == []


def test_generic_nack_answers_the_submit_it_names(bound):
    bound.submit("a")
    (submit,) = bound.written()
    bound.receive(smpp.generic_nack(submit.sequence_number, CommandStatus.ESME_RINVCMDLEN))
    assert bound.handler.results == [("a", CommandStatus.ESME_RINVCMDLEN, None)]


def test_requeue_on_disconnect_keeps_order_and_resends_on_the_next_bind(bound):
    for token in "abc":
        bound.submit(token)
    sent = bound.written()
    assert len(sent) == 2
    bound.lose()
    assert bound.handler.calls[-1] == ("disconnected", 2, True)
    assert [s.token for s in bound.queue] == ["a", "b", "c"]
    assert bound.handler.results == []  # nothing nacked
    again = EsmeProtocol(bound.settings, bound.clock, bound.queue, bound.handler)
    transport = AbortableTransport()
    again.makeConnection(transport)
    bound.protocol, bound.transport = again, transport
    bound.bind()
    resent = bound.written()
    assert [p.command for p in resent] == ["submit_sm", "submit_sm"]
    assert [s.attempts for s in bound.queue] == [0]


def test_submit_without_response_drops_the_connection(bound):
    bound.submit("a")
    bound.written()
    bound.clock.advance(29)
    assert not bound.transport.disconnecting
    bound.clock.advance(1)
    assert bound.transport.disconnecting
    bound.lose()
    assert [s.token for s in bound.queue] == ["a"]


def test_timers_stop_when_the_connection_goes(bound):
    bound.submit("a")
    bound.lose()
    assert bound.clock.getDelayedCalls() == []


# -- throttling and mt_tps ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL])
def test_throttle_holds_then_retries_one_at_a_time(bound, status):
    for token in "abc":
        bound.submit(token)
    first = bound.written()
    bound.receive(smpp.make_response(first[0], status))
    assert bound.handler.calls[-1] == ("throttled", status)
    bound.receive(smpp.make_response(first[1], message_id="id-b"))
    assert ("unthrottled",) in bound.handler.calls
    bound.handler.calls.clear()
    # Throttled "a" is retried, but not before throttle_delay.
    bound.receive(smpp.make_response(first[1], message_id="dup"))  # unknown now: ignored
    assert bound.written() == []
    bound.clock.advance(1)
    retry = bound.written()
    assert len(retry) == 2
    assert retry[0].params["short_message"] == b"hi"
    assert [r[0] for r in bound.handler.results] == ["b"]
    bound.receive(smpp.make_response(retry[0], message_id="id-a"))
    assert [r[0] for r in bound.handler.results] == ["b", "a"]


def test_repeated_throttle_sends_one_probe_per_delay(bound):
    bound.submit("a")
    bound.submit("b")
    first = bound.written()
    bound.receive(smpp.make_response(first[0], CommandStatus.ESME_RTHROTTLED))
    bound.receive(smpp.make_response(first[1], CommandStatus.ESME_RTHROTTLED))
    assert [c[0] for c in bound.handler.calls].count("throttled") == 1
    bound.clock.advance(1)
    (probe,) = bound.written()
    bound.receive(smpp.make_response(probe, CommandStatus.ESME_RTHROTTLED))
    assert bound.written() == []
    bound.clock.advance(1)
    (probe,) = bound.written()
    bound.receive(smpp.make_response(probe, message_id="1"))
    assert bound.handler.calls[-1] == ("unthrottled",)
    assert [p.command for p in bound.written()] == ["submit_sm"]
    assert [r[0] for r in bound.handler.results] == ["a"]


def test_mt_tps_caps_submits_per_second():
    link = Link(window_size=100, mt_tps=2)
    link.bind()
    link.written()
    for token in range(5):
        link.submit(token)
    assert len(link.written()) == 2
    link.clock.advance(0.5)
    assert link.written() == []
    link.clock.advance(0.5)
    assert len(link.written()) == 2
    link.clock.advance(1)
    assert len(link.written()) == 1


# -- inbound -----------------------------------------------------------------------------------


def test_deliver_sm_is_answered_with_the_handlers_status(bound):
    bound.handler.deliver_status = CommandStatus.ESME_RX_T_APPN
    bound.receive(smpp.make_pdu("deliver_sm", 5, short_message=b"hi"))
    (resp,) = bound.written()
    assert (resp.command, resp.sequence_number, resp.command_status) == (
        "deliver_sm_resp",
        5,
        CommandStatus.ESME_RX_T_APPN,
    )
    assert bound.handler.delivered[0].params["short_message"] == b"hi"


def test_deliver_sm_answer_waits_for_the_handler(bound):
    answer: Deferred = Deferred()
    bound.handler.deliver_status = answer
    bound.receive(smpp.make_pdu("deliver_sm", 6))
    assert bound.written() == []
    answer.callback(0)
    (resp,) = bound.written()
    assert (resp.command, resp.command_status) == ("deliver_sm_resp", 0)


def test_failing_handler_answers_a_temporary_error(bound):
    answer: Deferred = Deferred()
    bound.handler.deliver_status = answer
    bound.receive(smpp.make_pdu("data_sm", 7))
    answer.errback(RuntimeError("bus down"))
    (resp,) = bound.written()
    assert (resp.command, resp.command_status) == ("data_sm_resp", CommandStatus.ESME_RX_T_APPN)


def test_unknown_command_gets_generic_nack(bound):
    bound.protocol.dataReceived(b"\x00\x00\x00\x10\x00\x00\x99\x99\x00\x00\x00\x00\x00\x00\x00\x09")
    (nack,) = bound.written()
    assert (nack.command, nack.sequence_number, nack.command_status) == (
        "generic_nack",
        9,
        CommandStatus.ESME_RINVCMDID,
    )


def test_undecodable_pdu_gets_generic_nack_and_the_link_goes_on(bound):
    # deliver_sm with a body too short for its mandatory params.
    bound.protocol.dataReceived(
        b"\x00\x00\x00\x12\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x0a\x00\x00"
    )
    (nack,) = bound.written()
    assert (nack.command, nack.sequence_number) == ("generic_nack", 10)
    assert not bound.transport.disconnecting
    bound.receive(smpp.make_pdu("enquire_link", 11))
    assert bound.written()[0].command == "enquire_link_resp"


def test_broken_framing_disconnects(bound):
    bound.protocol.dataReceived(b"\x00\x00\x00\x02garbage-bytes-here")
    (nack,) = bound.written()
    assert nack.command_status == CommandStatus.ESME_RINVCMDLEN
    assert bound.transport.disconnecting


def test_pdus_split_across_reads_are_reassembled(bound):
    data = smpp.encode(smpp.make_pdu("enquire_link", 12))
    for byte in data:
        bound.protocol.dataReceived(bytes([byte]))
    assert bound.written()[0].sequence_number == 12


# -- logging, backoff ------------------------------------------------------------------------------


class WireLog:
    def __init__(self) -> None:
        self.lines: list[tuple] = []

    def wire(self, direction, summary, **fields):
        self.lines.append((direction, summary, fields))

    def warning(self, message, **fields):
        self.lines.append(("warning", message, fields))

    def info(self, message, **fields):
        self.lines.append(("info", message, fields))


def test_wire_log_has_every_pdu_and_masks_the_password():
    log = WireLog()
    clock, queue = Clock(), SubmitQueue()
    settings = BindSettings(system_id="esme", password="secret")
    protocol = EsmeProtocol(settings, clock, queue, Recorder(), log)
    transport = AbortableTransport()
    protocol.makeConnection(transport)
    bind = smpp.decode(transport.value())
    protocol.dataReceived(smpp.encode(smpp.make_response(bind, system_id="x")))
    directions = [(d, s) for d, s, _ in log.lines if d in ("in", "out")]
    assert directions == [("out", "bind_transceiver"), ("in", "bind_transceiver_resp")]
    assert "secret" not in repr(log.lines)
    assert log.lines[0][2]["pdu"]["params"]["password"] == "***"


def test_no_pdu_is_described_while_wire_logging_is_off(monkeypatch):
    from junebug.transports.smpp import protocol as smpp_protocol

    def refuse(pdu):
        raise AssertionError("described with wire_logging off")

    monkeypatch.setattr(smpp_protocol, "describe_pdu", refuse)
    log = WireLog()
    log.wire_logging = False
    protocol = EsmeProtocol(
        BindSettings(system_id="esme", password="secret"), Clock(), SubmitQueue(), Recorder(), log
    )
    transport = AbortableTransport()
    protocol.makeConnection(transport)
    bind = smpp.decode(transport.value())
    protocol.dataReceived(smpp.encode(smpp.make_response(bind, system_id="x")))
    assert protocol.bound
    assert not [line for line in log.lines if line[0] in ("in", "out")]


def test_a_submission_encoded_in_advance_is_written_with_each_attempts_number(bound):
    params = {"destination_addr": "27820000001", "short_message": b"hi"}
    data = smpp.encode(smpp.make_pdu("submit_sm", 1, **params))
    submission = Submission(params, token="t", data=data)
    bound.queue.put(submission)
    (sent,) = bound.written()
    first = sent.sequence_number
    assert smpp.encode(sent) == smpp.encode(smpp.make_pdu("submit_sm", first, **params))
    bound.lose()
    bound.transport = AbortableTransport()
    bound.protocol = EsmeProtocol(bound.settings, bound.clock, bound.queue, bound.handler)
    bound.protocol.makeConnection(bound.transport)
    bound.protocol.sequence = 40
    bound.bind()
    (again,) = [p for p in bound.written() if p.command == "submit_sm"]
    assert (first, again.sequence_number) == (2, 41)
    assert smpp.encode(again) == smpp.encode(
        smpp.make_pdu("submit_sm", again.sequence_number, **params)
    )
    assert submission.attempts == 2


def test_describe_pdu_shows_octets_as_hex():
    view = describe_pdu(smpp.make_pdu("submit_sm", 3, short_message=b"\x01\xff"))
    assert view["params"]["short_message"] == "01ff"
    assert view["sequence_number"] == 3


def test_backoff_grows_with_jitter_caps_and_resets():
    backoff = Backoff(1, 10, random_fn=lambda: 0.5)
    assert [backoff.next() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    backoff.reset()
    assert backoff.next() == 1
    low = Backoff(1, 10, jitter=0.2, random_fn=lambda: 0.0)
    high = Backoff(1, 10, jitter=0.2, random_fn=lambda: 1.0)
    assert low.next() == pytest.approx(0.8)
    assert high.next() == pytest.approx(1.2)
