"""The ESME side of an SMPP 3.4 transceiver bind, as a state machine over bytes.

``EsmeProtocol`` is a Twisted ``Protocol`` that does no I/O of its own beyond
writing to its transport and asks ``clock`` for every timer, so tests drive it
with ``StringTransport`` and ``task.Clock``. It knows nothing about vumi
messages, Redis or the bus: it reports what happens to an ``EsmeHandler``.

What it does once connected:

- sends bind_transceiver and waits ``bind_timeout`` seconds for the answer;
  a refusal or no answer closes the connection;
- once bound, sends enquire_link every ``enquire_link_interval`` seconds; an
  enquire_link unanswered after another interval closes the connection;
- answers the SMSC's enquire_link, unbind (then closes), deliver_sm and
  data_sm (with the status the handler decides), and answers unknown commands
  and undecodable PDUs with generic_nack;
- takes ``Submission`` values from a ``SubmitQueue`` and keeps up to
  ``window_size`` submit_sm outstanding, matched to their submit_sm_resp by
  sequence number in any order. A submit_sm unanswered after
  ``response_timeout`` seconds means the link is unhealthy: the connection is
  closed. ``mt_tps`` caps submit_sm per second (0: no cap);
- ESME_RTHROTTLED / ESME_RMSGQFUL put the throttled submission back at the
  front of the queue and hold every submit for ``throttle_delay`` seconds; then
  one submission is sent alone until an answer other than a throttle arrives;
- when the connection goes, every outstanding submission is put back in the
  queue, in its original order, to be sent again on the next bind (an SMSC may
  therefore see at most ``window_size`` resends per lost connection).

The queue outlives connections; ``Backoff`` computes reconnection delays.
"""

from __future__ import annotations

import contextlib
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from junebug.transports.smpp import pdu as smpp
from junebug.transports.smpp.constants import COMMAND_NAMES, CommandStatus

__all__ = [
    "THROTTLE_STATUSES",
    "Backoff",
    "BindSettings",
    "EsmeHandler",
    "EsmeProtocol",
    "Submission",
    "SubmitQueue",
    "describe_pdu",
]

#: submit_sm_resp statuses that mean "slow down and try again", not failure.
THROTTLE_STATUSES = frozenset({CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL})

#: Largest sequence number (SMPP 3.4 5.1.4: 0x00000001..0x7FFFFFFF).
MAX_SEQUENCE = 0x7FFFFFFF

# Protocol states.
CLOSED = "closed"
BINDING = "binding"
BOUND = "bound"
UNBINDING = "unbinding"


@attrs.frozen
class BindSettings:
    """How to bind and pace traffic; built from the channel config."""

    system_id: str
    password: str
    system_type: str = ""
    interface_version: int = 0x34
    address_range: str = ""
    addr_ton: int = 0
    addr_npi: int = 0
    bind_timeout: float = 30.0
    enquire_link_interval: float = 55.0
    window_size: int = 10
    response_timeout: float = 60.0
    throttle_delay: float = 0.1
    mt_tps: float = 0
    unbind_timeout: float = 2.0
    #: Seconds ``unbind`` waits for outstanding submit_sm_resp before unbinding.
    drain_timeout: float = 5.0


@attrs.define(eq=False)
class Submission:
    """One submit_sm to send: its params and TLVs, and the handler's ``token``."""

    params: dict[str, Any]
    tlvs: dict[str | int, Any] = attrs.Factory(dict)
    #: Anything the handler uses to recognise the result (message id, part number).
    token: Any = None
    #: How many times it was written to a connection.
    attempts: int = 0
    #: Position in the queue, kept when it is put back.
    order: int = -1
    #: The submit_sm already encoded (with any sequence number) from ``params`` and
    #: ``tlvs``, when the sender had to encode it anyway; each attempt writes these
    #: bytes with its own sequence number instead of encoding them again. None:
    #: encoded when sent.
    data: bytes | None = None


class SubmitQueue:
    """Submissions waiting to be sent, oldest first; shared by successive connections.

    ``listener`` (set by the bound protocol) is called whenever something is added.
    """

    def __init__(self) -> None:
        self._items: deque[Submission] = deque()
        self._counter = 0
        self.listener: Callable[[], Any] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Submission]:
        return iter(list(self._items))

    def put(self, submission: Submission) -> None:
        submission.order = self._counter
        self._counter += 1
        self._items.append(submission)
        self._notify()

    def put_back(self, submissions: Iterable[Submission]) -> None:
        """Return submissions taken earlier; the queue stays in original order."""
        returned = list(submissions)
        if not returned:
            return
        self._items = deque(sorted([*returned, *self._items], key=lambda s: s.order))
        self._notify()

    def pop(self) -> Submission:
        return self._items.popleft()

    def remove(self, predicate: Callable[[Submission], bool]) -> list[Submission]:
        """Take out (and return) every waiting submission matching ``predicate``."""
        removed = [s for s in self._items if predicate(s)]
        if removed:
            self._items = deque(s for s in self._items if not predicate(s))
        return removed

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener()


class EsmeHandler:
    """What an ``EsmeProtocol`` reports to. Every method has a do-nothing default."""

    def smpp_connected(self, protocol: EsmeProtocol) -> None:
        """TCP is up and bind_transceiver was sent."""

    def smpp_bound(self, protocol: EsmeProtocol) -> None:
        """bind_transceiver_resp ESME_ROK arrived."""

    def smpp_bind_failed(self, protocol: EsmeProtocol, command_status: int) -> None:
        """The SMSC refused the bind; the connection is being closed."""

    def smpp_bind_timeout(self, protocol: EsmeProtocol) -> None:
        """No bind_transceiver_resp within bind_timeout; the connection is being closed."""

    def smpp_unbound(self, protocol: EsmeProtocol) -> None:
        """The SMSC sent unbind; it was answered and the connection is being closed."""

    def smpp_disconnected(
        self, protocol: EsmeProtocol, reason: str, requeued: int, was_bound: bool
    ) -> None:
        """The connection is gone; ``requeued`` outstanding submissions went back
        to the queue."""

    def smpp_submit_result(
        self, submission: Submission, command_status: int, message_id: str | None
    ) -> None:
        """A submit_sm_resp (or generic_nack) other than a throttle answered ``submission``."""

    def smpp_throttled(self, protocol: EsmeProtocol, command_status: int) -> None:
        """The SMSC asked us to slow down; submits are held."""

    def smpp_unthrottled(self, protocol: EsmeProtocol) -> None:
        """A submit went through again after a throttle."""

    def smpp_deliver(self, pdu: smpp.PDU) -> int | Deferred:
        """A deliver_sm or data_sm; return (or fire with) the command_status to answer."""
        return CommandStatus.ESME_ROK


class Backoff:
    """Reconnection delays: ``initial`` seconds, multiplied by ``factor`` after each
    failure up to ``maximum``, each spread by +/- ``jitter`` (a fraction). ``reset``
    after a successful bind."""

    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 300.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        random_fn: Callable[[], float] = random.random,
    ) -> None:
        self.initial = max(0.0, initial)
        self.maximum = max(self.initial, maximum)
        self.factor = factor
        self.jitter = jitter
        self.random = random_fn
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt (and count one more failure)."""
        base = min(self.maximum, self.initial * self.factor**self.failures)
        self.failures += 1
        spread = base * self.jitter * (2 * self.random() - 1)
        return max(0.0, min(self.maximum, base + spread))

    def reset(self) -> None:
        self.failures = 0


def _value_for_log(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, list):
        return [_value_for_log(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _value_for_log(v) for k, v in value.items()}
    return value


def describe_pdu(pdu: smpp.PDU) -> dict[str, Any]:
    """A loggable view of a PDU: octet strings as hex, the password masked."""
    params = {k: _value_for_log(v) for k, v in pdu.params.items()}
    if "password" in params:
        params["password"] = "***"
    view: dict[str, Any] = {
        "command": pdu.command,
        "sequence_number": pdu.sequence_number,
        "command_status": smpp.status_name(pdu.command_status),
        "params": params,
    }
    if pdu.tlvs:
        view["tlvs"] = {str(k): _value_for_log(v) for k, v in pdu.tlvs.items()}
    return view


@attrs.define(eq=False)
class _Outstanding:
    submission: Submission
    timer: IDelayedCall | None


class EsmeProtocol(Protocol):
    """One connection to an SMSC, bound as a transceiver (see the module docstring)."""

    def __init__(
        self,
        settings: BindSettings,
        clock: IReactorTime,
        queue: SubmitQueue,
        handler: EsmeHandler,
        log: Any = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.queue = queue
        self.handler = handler
        self.log = log
        self.state = CLOSED
        self.framer = smpp.PDUFramer()
        self.sequence = 0
        self.outstanding: dict[int, _Outstanding] = {}
        self.throttled = False
        self._throttle_hold: IDelayedCall | None = None
        self._pump_call: IDelayedCall | None = None
        self._sent_times: deque[float] = deque()
        self._bind_seq: int | None = None
        self._bind_timer: IDelayedCall | None = None
        self._enquire_loop: IDelayedCall | None = None
        self._enquire_pending: dict[int, IDelayedCall] = {}
        self._unbind_seq: int | None = None
        self._unbind_timer: IDelayedCall | None = None
        self._drain_timer: IDelayedCall | None = None
        self._closed: Deferred | None = None
        self._was_bound = False
        self.on_closed: list[Deferred] = []

    # -- connection ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            with contextlib.suppress(OSError):  # not a TCP socket
                set_no_delay(True)
        self.state = BINDING
        s = self.settings
        self._bind_seq = self._send(
            "bind_transceiver",
            system_id=s.system_id,
            password=s.password,
            system_type=s.system_type,
            interface_version=s.interface_version,
            addr_ton=s.addr_ton,
            addr_npi=s.addr_npi,
            address_range=s.address_range,
        )
        self._bind_timer = self.clock.callLater(s.bind_timeout, self._bind_timed_out)
        self.handler.smpp_connected(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        was_bound = self._was_bound
        self.state = CLOSED
        self.queue.listener = None
        for call in (
            self._bind_timer,
            self._enquire_loop,
            self._throttle_hold,
            self._pump_call,
            self._unbind_timer,
            self._drain_timer,
            *self._enquire_pending.values(),
        ):
            if call is not None and call.active():
                call.cancel()
        self._enquire_pending.clear()
        requeued = []
        for entry in self.outstanding.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            requeued.append(entry.submission)
        self.outstanding.clear()
        self.queue.put_back(requeued)
        text = _reason_text(reason)
        self.handler.smpp_disconnected(self, text, len(requeued), was_bound)
        waiters, self.on_closed = self.on_closed, []
        for waiter in waiters:
            waiter.callback(None)

    def disconnect(self) -> None:
        """Close the connection now, without unbinding."""
        if self.transport is None:
            return
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()

    def unbind(self) -> Deferred:
        """Stop sending, wait (up to ``drain_timeout``) for outstanding answers, unbind
        (waiting up to ``unbind_timeout`` for unbind_resp) and close. Fires once the
        connection is closed."""
        closed: Deferred = Deferred()
        if self.state == CLOSED:
            closed.callback(None)
            return closed
        self.on_closed.append(closed)
        if self.state == BOUND:
            self.state = UNBINDING
            self.queue.listener = None
            if self.outstanding:
                self._drain_timer = self.clock.callLater(
                    self.settings.drain_timeout, self._send_unbind
                )
            else:
                self._send_unbind()
        elif self.state == BINDING:
            self.disconnect()
        return closed

    def _send_unbind(self) -> None:
        if self._drain_timer is not None and self._drain_timer.active():
            self._drain_timer.cancel()
        self._drain_timer = None
        if self.state != UNBINDING or self._unbind_seq is not None:
            return
        self._unbind_seq = self._send("unbind")
        self._unbind_timer = self.clock.callLater(self.settings.unbind_timeout, self.disconnect)

    # -- incoming bytes -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except smpp.FramingError as exc:
            self._warn(f"Unusable byte stream from the SMSC: {exc.message}; disconnecting")
            self._write(exc.generic_nack())
            self.disconnect()
            return
        for frame in frames:
            if self.state == CLOSED:
                return
            try:
                pdu = smpp.decode(frame)
            except smpp.PDUDecodeError as exc:
                self._warn(f"Undecodable PDU from the SMSC: {exc.message}")
                if self._wire_logging():
                    self.log.wire("in", "undecodable PDU", data=frame.hex())
                self._write(exc.generic_nack())
                continue
            if self._wire_logging():
                self.log.wire("in", pdu.command, pdu=describe_pdu(pdu))
            self.pdu_received(pdu)

    def pdu_received(self, pdu: smpp.PDU) -> None:
        if pdu.is_unknown:
            self._write(smpp.generic_nack(pdu.sequence_number, CommandStatus.ESME_RINVCMDID))
            return
        name = _HANDLER_NAMES.get(pdu.command_id)
        handler = getattr(self, name, None) if name is not None else None
        if handler is not None:
            handler(pdu)
        elif not pdu.is_response:
            # A request an ESME does not take (submit_sm, bind...): refuse it.
            self._write(smpp.make_response(pdu, CommandStatus.ESME_RINVBNDSTS))
        else:
            self._warn(f"Ignoring unexpected {pdu.command} (sequence {pdu.sequence_number})")

    def _on_bind_transceiver_resp(self, pdu: smpp.PDU) -> None:
        if self.state != BINDING or pdu.sequence_number != self._bind_seq:
            self._warn(
                f"Ignoring unexpected bind_transceiver_resp (sequence {pdu.sequence_number})"
            )
            return
        self._cancel(self._bind_timer)
        if pdu.command_status != CommandStatus.ESME_ROK:
            self.handler.smpp_bind_failed(self, pdu.command_status)
            self.disconnect()
            return
        self.state = BOUND
        self._was_bound = True
        self._enquire_loop = self.clock.callLater(
            self.settings.enquire_link_interval, self._enquire_link
        )
        self.queue.listener = self.pump
        self.handler.smpp_bound(self)
        self.pump()

    def _on_submit_sm_resp(self, pdu: smpp.PDU) -> None:
        self._submit_answered(pdu.sequence_number, pdu.command_status, pdu.params.get("message_id"))

    def _on_generic_nack(self, pdu: smpp.PDU) -> None:
        seq = pdu.sequence_number
        status = smpp.status_name(pdu.command_status)
        if seq in self.outstanding:
            self._warn(f"generic_nack {status} for submit_sm sequence {seq}")
            self._submit_answered(seq, pdu.command_status or CommandStatus.ESME_RSYSERR, None)
        elif self.state == BINDING and seq == self._bind_seq:
            self._cancel(self._bind_timer)
            self.handler.smpp_bind_failed(self, pdu.command_status or CommandStatus.ESME_RBINDFAIL)
            self.disconnect()
        elif seq in self._enquire_pending:
            self._cancel(self._enquire_pending.pop(seq))  # the link is alive anyway
        else:
            self._warn(f"generic_nack {status} from the SMSC (sequence {seq})")

    def _on_enquire_link(self, pdu: smpp.PDU) -> None:
        self._write(smpp.make_response(pdu))

    def _on_enquire_link_resp(self, pdu: smpp.PDU) -> None:
        timer = self._enquire_pending.pop(pdu.sequence_number, None)
        if timer is not None:
            self._cancel(timer)

    def _on_unbind(self, pdu: smpp.PDU) -> None:
        self._write(smpp.make_response(pdu))
        was_bound = self.state in (BOUND, UNBINDING)
        self.state = UNBINDING
        self.queue.listener = None
        if was_bound:
            self.handler.smpp_unbound(self)
        if self.transport is not None:
            self.transport.loseConnection()

    def _on_unbind_resp(self, pdu: smpp.PDU) -> None:
        if pdu.sequence_number == self._unbind_seq:
            self._cancel(self._unbind_timer)
            if self.transport is not None:
                self.transport.loseConnection()

    def _on_deliver_sm(self, pdu: smpp.PDU) -> None:
        self._deliver(pdu)

    def _on_data_sm(self, pdu: smpp.PDU) -> None:
        self._deliver(pdu)

    def _on_alert_notification(self, pdu: smpp.PDU) -> None:
        self._info(f"alert_notification for {pdu.params.get('source_addr')!r} (not used)")

    def _on_outbind(self, pdu: smpp.PDU) -> None:
        self._info("Ignoring outbind: this bind is already open")

    def _deliver(self, pdu: smpp.PDU) -> None:
        def answer(status: Any) -> None:
            if self.state != CLOSED:
                self._write(smpp.make_response(pdu, int(status)))

        def failed(failure: Failure) -> None:
            if self.log is not None:
                self.log.error(f"Handling {pdu.command} failed", failure=failure)
            answer(CommandStatus.ESME_RX_T_APPN)

        maybeDeferred(self.handler.smpp_deliver, pdu).addCallbacks(answer, failed)

    # -- timers ---------------------------------------------------------------------------

    def _bind_timed_out(self) -> None:
        if self.state == BINDING:
            self._warn(f"No bind_transceiver_resp within {self.settings.bind_timeout:g}s")
            self.handler.smpp_bind_timeout(self)
            self.disconnect()

    def _enquire_link(self) -> None:
        if self.state != BOUND:
            return
        interval = self.settings.enquire_link_interval
        seq = self._send("enquire_link")
        self._enquire_pending[seq] = self.clock.callLater(interval, self._link_dead, seq)
        self._enquire_loop = self.clock.callLater(interval, self._enquire_link)

    def _link_dead(self, seq: int) -> None:
        self._enquire_pending.pop(seq, None)
        if self.state == CLOSED:
            return
        self._warn(
            f"No enquire_link_resp within {self.settings.enquire_link_interval:g}s; reconnecting"
        )
        self.disconnect()

    def _submit_timed_out(self, seq: int) -> None:
        entry = self.outstanding.get(seq)
        if entry is None or self.state == CLOSED:
            return
        entry.timer = None
        self._warn(
            f"No submit_sm_resp for sequence {seq} within "
            f"{self.settings.response_timeout:g}s; reconnecting (it will be sent again)"
        )
        self.disconnect()

    # -- sending submits ---------------------------------------------------------------------

    def pump(self) -> None:
        """Send queued submissions while the window, the throttle and mt_tps allow."""
        if self.state != BOUND or self._pump_call is not None:
            return
        s = self.settings
        while len(self.queue):
            if self._throttle_hold is not None:
                return
            limit = 1 if self.throttled else max(1, s.window_size)
            if len(self.outstanding) >= limit:
                return
            if s.mt_tps > 0:
                now = self.clock.seconds()
                while self._sent_times and self._sent_times[0] <= now - 1.0:
                    self._sent_times.popleft()
                if len(self._sent_times) >= s.mt_tps:
                    wait = max(0.0, self._sent_times[0] + 1.0 - now)
                    self._pump_call = self.clock.callLater(wait, self._pump_later)
                    return
                self._sent_times.append(now)
            self._send_submit(self.queue.pop())

    def _pump_later(self) -> None:
        self._pump_call = None
        self.pump()

    def _send_submit(self, submission: Submission) -> None:
        seq = self._next_sequence()
        pdu: smpp.PDU | None = None
        data = submission.data
        if data is not None:
            data = smpp.with_sequence_number(data, seq)
        else:
            try:
                pdu = smpp.make_pdu("submit_sm", seq, tlvs=submission.tlvs, **submission.params)
                data = smpp.encode(pdu)
            except (ValueError, smpp.PDUEncodeError) as exc:
                self._warn(f"Cannot encode submit_sm: {exc}")
                self.handler.smpp_submit_result(submission, CommandStatus.ESME_RSYSERR, None)
                return
        submission.attempts += 1
        timer = self.clock.callLater(self.settings.response_timeout, self._submit_timed_out, seq)
        self.outstanding[seq] = _Outstanding(submission, timer)
        if self._wire_logging():
            if pdu is None:
                pdu = smpp.make_pdu("submit_sm", seq, tlvs=submission.tlvs, **submission.params)
            self.log.wire("out", pdu.command, pdu=describe_pdu(pdu))
        self.transport.write(data)

    def _submit_answered(self, seq: int, status: int, message_id: str | None) -> None:
        entry = self.outstanding.pop(seq, None)
        if entry is None:
            self._warn(f"submit_sm_resp for unknown sequence {seq} ignored")
            return
        self._cancel(entry.timer)
        if status in THROTTLE_STATUSES:
            # Hold first, so that putting it back does not send it straight away.
            if self.state == BOUND:
                self._start_throttle(status)
            self.queue.put_back([entry.submission])
            if self.state == UNBINDING and not self.outstanding:
                self._send_unbind()
            return
        if self.throttled:
            self.throttled = False
            self.handler.smpp_unthrottled(self)
        self.handler.smpp_submit_result(entry.submission, status, message_id)
        if self.state == UNBINDING and not self.outstanding:
            self._send_unbind()
        self.pump()

    def _start_throttle(self, status: int) -> None:
        first = not self.throttled
        self.throttled = True
        if self._throttle_hold is None:
            self._throttle_hold = self.clock.callLater(
                self.settings.throttle_delay, self._throttle_over
            )
        if first:
            self.handler.smpp_throttled(self, status)

    def _throttle_over(self) -> None:
        self._throttle_hold = None
        self.pump()

    # -- writing ---------------------------------------------------------------------------

    def _next_sequence(self) -> int:
        self.sequence = self.sequence % MAX_SEQUENCE + 1
        return self.sequence

    def _send(self, command: str, **params: Any) -> int:
        seq = self._next_sequence()
        self._write(smpp.make_pdu(command, seq, **params))
        return seq

    def _write(self, pdu: smpp.PDU) -> None:
        if self.transport is None:
            return
        if self._wire_logging():
            self.log.wire("out", pdu.command, pdu=describe_pdu(pdu))
        self.transport.write(smpp.encode(pdu))

    # -- helpers ---------------------------------------------------------------------------

    def _wire_logging(self) -> bool:
        """Whether PDUs are logged: describing one costs more than the rest of its
        handling, so it is only done when the log will write it. A log without a
        ``wire_logging`` switch decides for itself (it is always called)."""
        log = self.log
        return log is not None and getattr(log, "wire_logging", True)

    @staticmethod
    def _cancel(call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()

    def _warn(self, message: str) -> None:
        if self.log is not None:
            self.log.warning(message)

    def _info(self, message: str) -> None:
        if self.log is not None:
            self.log.info(message)

    @property
    def bound(self) -> bool:
        return self.state == BOUND


#: command_id -> the name of the method that handles it (``_on_<command name>``).
_HANDLER_NAMES: dict[int, str] = {
    command_id: f"_on_{name}" for command_id, name in COMMAND_NAMES.items()
}


def _reason_text(reason: Failure | None) -> str:
    if reason is None:
        return "Connection lost"
    value = getattr(reason, "value", reason)
    text = str(value).strip()
    return text or type(value).__name__
