"""An SMSC simulator: the SMPP 3.4 server side, for trying the gateway and testing it.

:class:`SmscSimulator` holds the state (settings, binds, the submits it received, the
receipts it owes) and is a Twisted protocol factory: listen on any server endpoint with
:meth:`SmscSimulator.listen`. Every timer goes through the ``clock`` it is given, so tests
drive receipts, throttling and keep-alives with ``task.Clock``. Nothing here touches the
global reactor.

What it does, in SMPP terms:

- answers bind_transmitter / bind_receiver / bind_transceiver, checking system_id,
  password (compared on its first 8 characters, the most the field carries) and, when one
  is configured, system_type. A rejected bind is answered with an error status and the
  connection is kept open so the ESME sees the error;
- answers enquire_link and unbind (closing the connection after unbind_resp);
- answers submit_sm with a message id (hex, decimal or uuid), or with ESME_RTHROTTLED
  while throttled, or with the configured error every Nth submit; accepted submits are
  recorded with their decoded text, UDH / SAR details and TLVs;
- sends delivery receipts (deliver_sm with esm_class 0x04, receipt text and/or the
  receipted_message_id + message_state TLVs) ``dr_delay`` seconds after each accepted
  submit that asked for one (registered_delivery);
- sends mobile-originated messages on request (:meth:`SmscSimulator.send_mo`), in any
  coding and multipart style, with at most ``window`` deliver_sm awaiting their response
  per connection;
- answers unknown commands with generic_nack ESME_RINVCMDID.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from junebug.transports.smpp import codecs as smpp_codecs
from junebug.transports.smpp.constants import CommandId, CommandStatus, MessageState
from junebug.transports.smpp.multipart import (
    ConcatInfo,
    MalformedUDH,
    part_capacity,
    split_text,
    split_user_data,
    text_size,
)
from junebug.transports.smpp.pdu import (
    PDU,
    FramingError,
    PDUDecodeError,
    PDUEncodeError,
    PDUFramer,
    decode,
    encode,
    generic_nack,
    make_pdu,
    make_response,
    status_name,
)

__all__ = [
    "BIND_TYPES",
    "CODINGS",
    "DR_STATUSES",
    "DR_STYLES",
    "ID_FORMATS",
    "MULTIPART_STYLES",
    "NotBound",
    "Settings",
    "SmscProtocol",
    "SmscSimulator",
    "SimulatorError",
    "parse_status",
    "receipt_text",
]

log = Logger()

ID_FORMATS = ("hex", "decimal", "uuid")
DR_STYLES = ("text", "tlv", "both")
#: Receipt status name -> (``stat:`` word of the receipt text, message_state TLV value,
#: ``err:`` code). ``failed`` is the word the original gateway maps to a failed report.
DR_STATUSES: dict[str, tuple[str, int, str]] = {
    "delivered": ("DELIVRD", MessageState.DELIVERED, "000"),
    "failed": ("FAILED", MessageState.UNDELIVERABLE, "001"),
    "undeliverable": ("UNDELIV", MessageState.UNDELIVERABLE, "001"),
    "rejected": ("REJECTD", MessageState.REJECTED, "002"),
    "expired": ("EXPIRED", MessageState.EXPIRED, "003"),
    "deleted": ("DELETED", MessageState.DELETED, "004"),
    "pending": ("ENROUTE", MessageState.ENROUTE, "000"),
    "enroute": ("ENROUTE", MessageState.ENROUTE, "000"),
    "accepted": ("ACCEPTD", MessageState.ACCEPTED, "000"),
    "unknown": ("UNKNOWN", MessageState.UNKNOWN, "000"),
}
#: Receipt statuses that count as a failure (for registered_delivery = 2).
FAILURE_STATUSES = frozenset({"failed", "undeliverable", "rejected", "expired", "deleted"})
#: MO codings: name -> (data_coding, codec used to encode the text).
CODINGS: dict[str, tuple[int, str]] = {
    "gsm0338": (0x00, "gsm0338"),
    "ascii": (0x01, "ascii"),
    "latin1": (0x03, "latin1"),
    "binary": (0x04, "latin1"),
    "ucs2": (0x08, "ucs2"),
}
MULTIPART_STYLES = ("none", "udh", "udh16", "sar", "payload")
ORDERS = ("forward", "reverse", "shuffle")
BIND_TYPES = {
    CommandId.bind_transmitter: "transmitter",
    CommandId.bind_receiver: "receiver",
    CommandId.bind_transceiver: "transceiver",
}
ESM_CLASS_RECEIPT = 0x04
#: Seconds an SMSC-initiated unbind waits for unbind_resp before closing anyway.
UNBIND_TIMEOUT = 2.0


class SimulatorError(ValueError):
    """A request the simulator cannot act on (bad setting, bad MO). ``status`` is the HTTP
    status the control API answers with."""

    status = 400


class NotBound(SimulatorError):
    """No receiver or transceiver is bound to deliver a message to."""

    status = 409


def parse_status(value: str | int) -> int:
    """Return the command_status for a name (``"ESME_RSYSERR"``) or a number (``8``,
    ``"0x58"``). Raises :class:`SimulatorError` for anything else."""
    if isinstance(value, bool):
        raise SimulatorError(f"not a command_status: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(CommandStatus[text.upper()])
    except KeyError:
        pass
    try:
        return int(text, 0)
    except ValueError:
        raise SimulatorError(f"unknown command_status {value!r}") from None


def _check_dr_statuses(value: str | Iterable[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    statuses = tuple(str(item).strip().lower() for item in items if str(item).strip())
    if not statuses:
        raise SimulatorError("dr_status needs at least one status")
    for status in statuses:
        if status not in DR_STATUSES:
            raise SimulatorError(
                f"unknown receipt status {status!r}; choose from {', '.join(DR_STATUSES)}"
            )
    return statuses


@attrs.define
class Settings:
    """What the simulator does; every field can be changed at runtime with
    :meth:`SmscSimulator.configure` except the credentials."""

    system_id: str
    password: str
    #: When not empty, binds must send this system_type (else ESME_RINVSYSTYP).
    system_type: str = ""
    id_format: str = "hex"
    #: Seconds between an accepted submit and its receipt; negative: no receipts.
    dr_delay: float = 0.5
    #: The receipts each message gets, in order, ``dr_delay`` apart.
    dr_status: tuple[str, ...] = ("delivered",)
    dr_style: str = "both"
    #: Throttle once this many submits arrived within ``throttle_window`` seconds; 0: off.
    throttle_after: int = 0
    throttle_for: float = 1.0
    throttle_window: float = 1.0
    #: Answer every Nth submit with ``fail_status``; 0: off.
    fail_every: int = 0
    fail_status: int = CommandStatus.ESME_RSYSERR
    #: Most deliver_sm awaiting their response per connection; 0: unlimited.
    window: int = 10
    #: Seconds between the SMSC's own enquire_links to bound ESMEs; 0: none.
    enquire_link_interval: float = 0.0
    #: Codec used to read submits with data_coding 0 (the "SMSC default alphabet").
    default_coding: str = "gsm0338"
    #: When set, every bind is refused with this command_status.
    bind_error: int | None = None

    def as_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data.pop("password")
        data["dr_status"] = list(self.dr_status)
        data["fail_status"] = status_name(self.fail_status)
        data["bind_error"] = None if self.bind_error is None else status_name(self.bind_error)
        return data


#: Settings :meth:`SmscSimulator.configure` accepts, with their converters.
def _non_negative_int(name: str) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise SimulatorError(f"{name} must be an integer")
        try:
            number = int(value)
        except ValueError:
            raise SimulatorError(f"{name} must be an integer") from None
        if number < 0:
            raise SimulatorError(f"{name} must not be negative")
        return number

    return convert


def _number(name: str, minimum: float | None = 0.0) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool):
            raise SimulatorError(f"{name} must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise SimulatorError(f"{name} must be a number") from None
        if minimum is not None and number < minimum:
            raise SimulatorError(f"{name} must be at least {minimum}")
        return number

    return convert


def _choice(name: str, choices: Iterable[str]) -> Callable[[Any], str]:
    allowed = tuple(choices)

    def convert(value: Any) -> str:
        if value not in allowed:
            raise SimulatorError(f"{name} must be one of {', '.join(allowed)}")
        return value

    return convert


def _codec(value: Any) -> str:
    try:
        return smpp_codecs.normalise_codec_name(str(value))
    except LookupError:
        raise SimulatorError(f"unknown codec {value!r}") from None


def _optional_status(value: Any) -> int | None:
    return None if value in (None, "", 0, "ESME_ROK") else parse_status(value)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "system_type": str,
    "id_format": _choice("id_format", ID_FORMATS),
    "dr_delay": _number("dr_delay", None),
    "dr_status": _check_dr_statuses,
    "dr_style": _choice("dr_style", DR_STYLES),
    "throttle_after": _non_negative_int("throttle_after"),
    "throttle_for": _number("throttle_for"),
    "throttle_window": _number("throttle_window"),
    "fail_every": _non_negative_int("fail_every"),
    "fail_status": parse_status,
    "window": _non_negative_int("window"),
    "enquire_link_interval": _number("enquire_link_interval"),
    "default_coding": _codec,
    "bind_error": _optional_status,
}


def receipt_text(
    message_id: str,
    status: str,
    submitted_at: float,
    done_at: float,
    text: str = "",
) -> bytes:
    """Return the conventional receipt short_message for ``message_id``.

    ``id:<id> sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD
    err:000 text:<first 20 characters>``, dates in UTC, the text reduced to ASCII.
    """
    stat, _state, err = DR_STATUSES[status]
    delivered = "001" if status == "delivered" else "000"
    submit_date = time.strftime("%y%m%d%H%M", time.gmtime(submitted_at))
    done_date = time.strftime("%y%m%d%H%M", time.gmtime(done_at))
    snippet = text[:20].encode("ascii", "replace").decode("ascii").replace("\0", "?")
    return (
        f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{submit_date} "
        f"done date:{done_date} stat:{stat} err:{err} text:{snippet}"
    ).encode("ascii")


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return value


def _tlvs_json(tlvs: Mapping[str | int, Any]) -> dict[str, Any]:
    return {
        (key if isinstance(key, str) else f"0x{key:04x}"): _json_safe(value)
        for key, value in tlvs.items()
    }


# ---------------------------------------------------------------------------
# The protocol: one ESME connection


@attrs.define
class _Outgoing:
    """A deliver_sm waiting to be written, or written and waiting for its response."""

    pdu: PDU
    kind: str
    written: defer.Deferred
    record: dict[str, Any]
    receipt: tuple[dict[str, Any], str, str] | None = None


class SmscProtocol(Protocol):
    """One ESME connection: a state machine over bytes, no timers of its own but the
    simulator's clock."""

    def __init__(self, simulator: SmscSimulator) -> None:
        self.simulator = simulator
        self.framer = PDUFramer()
        self.bind_type: str | None = None
        self.system_id: str | None = None
        self.peer = ""
        self.connected = False
        self._sequence = 0
        self._outstanding: dict[int, _Outgoing] = {}
        self._queue: deque[_Outgoing] = deque()
        self._keepalive: IDelayedCall | None = None
        self._unbind_timer: IDelayedCall | None = None
        self._unbinding = False

    # -- connection ------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            with contextlib.suppress(OSError):  # not a TCP socket
                set_no_delay(True)
        peer = self.transport.getPeer()
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        self.peer = f"{host}:{port}" if host is not None else str(peer)
        self.simulator._connections.append(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected = False
        for timer in (self._keepalive, self._unbind_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._keepalive = self._unbind_timer = None
        self.simulator._connection_gone(self)
        pending = list(self._queue)
        self._queue.clear()
        self._outstanding.clear()
        for item in pending:
            if item.receipt is not None:
                self.simulator._owe_receipt(*item.receipt)
            if not item.written.called:
                item.written.errback(NotBound("the connection closed before the PDU was sent"))
        self.bind_type = None

    @property
    def bound(self) -> bool:
        return self.bind_type is not None

    @property
    def receives(self) -> bool:
        """Whether deliver_sm may be sent here (a receiver or transceiver bind)."""
        return self.connected and self.bind_type in ("receiver", "transceiver")

    def describe(self) -> dict[str, Any]:
        return {"system_id": self.system_id, "bind_type": self.bind_type, "peer": self.peer}

    # -- bytes in ----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            log.warn("SMSC: unframeable input from {peer}: {error}", peer=self.peer, error=exc)
            self._write(exc.generic_nack())
            self.transport.loseConnection()
            return
        for frame in frames:
            if not self.connected:
                return
            try:
                pdu = decode(frame)
            except PDUDecodeError as exc:
                self._write(exc.generic_nack())
                continue
            self.simulator._trace("in", self, pdu)
            self._dispatch(pdu)

    def _dispatch(self, pdu: PDU) -> None:
        if pdu.is_unknown:
            self._write(make_response(pdu))
            return
        cid = pdu.command_id
        if cid in BIND_TYPES:
            self._on_bind(pdu)
        elif cid == CommandId.enquire_link:
            self._write(make_response(pdu))
        elif cid == CommandId.unbind:
            self._write(make_response(pdu))
            self.bind_type = None
            self.simulator._binds_changed()
            self.transport.loseConnection()
        elif cid == CommandId.unbind_resp:
            self.transport.loseConnection()
        elif cid == CommandId.submit_sm:
            self._on_submit(pdu)
        elif cid == CommandId.deliver_sm_resp:
            self._on_deliver_sm_resp(pdu)
        elif pdu.is_response or cid == CommandId.generic_nack:
            pass  # enquire_link_resp, generic_nack and other answers to us: nothing to do
        elif cid in (CommandId.outbind, CommandId.alert_notification):
            pass  # not something an ESME sends; no response exists
        else:
            # query_sm, cancel_sm, replace_sm, submit_multi, data_sm...: not simulated.
            status = (
                CommandStatus.ESME_RINVBNDSTS if not self.bound else CommandStatus.ESME_RINVCMDID
            )
            self._write(generic_nack(pdu.sequence_number, status))

    def _on_bind(self, pdu: PDU) -> None:
        resp_id = pdu.command_id | 0x80000000
        if self.bound:
            self._write(PDU(resp_id, pdu.sequence_number, CommandStatus.ESME_RALYBND))
            return
        status = self.simulator._check_bind(pdu.params)
        if status:
            self._write(PDU(resp_id, pdu.sequence_number, status))
            return
        self.bind_type = BIND_TYPES[pdu.command_id]
        self.system_id = pdu.params.get("system_id", "")
        self._write(
            make_response(
                pdu, system_id=self.simulator.smsc_name, tlvs={"sc_interface_version": 0x34}
            )
        )
        self._schedule_keepalive()
        self.simulator._binds_changed()

    def _on_submit(self, pdu: PDU) -> None:
        if self.bind_type not in ("transmitter", "transceiver"):
            self._write(
                PDU(CommandId.submit_sm_resp, pdu.sequence_number, CommandStatus.ESME_RINVBNDSTS)
            )
            return
        status, message_id = self.simulator._accept_submit(self, pdu)
        if status:
            self._write(make_response(pdu, status))
        else:
            self._write(make_response(pdu, message_id=message_id))

    def _on_deliver_sm_resp(self, pdu: PDU) -> None:
        item = self._outstanding.pop(pdu.sequence_number, None)
        if item is not None:
            item.record["command_status"] = status_name(pdu.command_status)
            item.record["responded_at"] = self.simulator.clock.seconds()
        self._drain()
        self.simulator._notify()

    # -- bytes out ---------------------------------------------------------------------

    def next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def _write(self, pdu: PDU) -> None:
        if not self.connected:
            return
        self.simulator._trace("out", self, pdu)
        self.transport.write(encode(pdu))

    def queue_deliver(self, item: _Outgoing) -> None:
        """Send a deliver_sm as soon as the window allows; ``item.written`` fires with its
        sequence number once it is written."""
        self._queue.append(item)
        self._drain()

    def _drain(self) -> None:
        window = self.simulator.settings.window
        while self._queue and self.connected and (not window or len(self._outstanding) < window):
            item = self._queue.popleft()
            item.pdu.sequence_number = self.next_sequence()
            item.record["sequence_number"] = item.pdu.sequence_number
            item.record["sent_at"] = self.simulator.clock.seconds()
            self._outstanding[item.pdu.sequence_number] = item
            self._write(item.pdu)
            item.written.callback(item.pdu.sequence_number)

    def _schedule_keepalive(self) -> None:
        interval = self.simulator.settings.enquire_link_interval
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None
        if interval > 0 and self.connected and self.bound:
            self._keepalive = self.simulator.clock.callLater(interval, self._send_enquire_link)

    def _send_enquire_link(self) -> None:
        self._keepalive = None
        if self.connected and self.bound:
            self._write(make_pdu("enquire_link", self.next_sequence()))
            self._schedule_keepalive()

    def start_unbind(self) -> None:
        """SMSC-initiated unbind: send unbind, close on unbind_resp or after a timeout."""
        if not self.connected or self._unbinding:
            return
        self._unbinding = True
        self._write(make_pdu("unbind", self.next_sequence()))
        self.bind_type = None
        self.simulator._binds_changed()
        self._unbind_timer = self.simulator.clock.callLater(
            UNBIND_TIMEOUT, self.transport.loseConnection
        )

    def drop(self) -> None:
        """Close the TCP connection at once, without unbind."""
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:  # pragma: no cover - transports without abortConnection
            self.transport.loseConnection()


# ---------------------------------------------------------------------------
# The simulator


class SmscSimulator(Factory):
    """The SMSC: settings, binds, recorded submits and owed receipts; a protocol factory.

    ``clock`` provides time (``reactor`` or ``task.Clock``); the other keyword arguments
    are :class:`Settings` fields. ``first_id`` is the first message id number (random
    when ``None``, so ids differ between runs); ``rng`` orders shuffled parts. ``trace``,
    when given, is called with one line per PDU in or out.
    """

    protocol = SmscProtocol

    def __init__(
        self,
        clock: IReactorTime,
        system_id: str,
        password: str,
        *,
        first_id: int | None = None,
        rng: random.Random | None = None,
        smsc_name: str = "jb-smsc",
        trace: Callable[[str], object] | None = None,
        **settings: Any,
    ) -> None:
        self.clock = clock
        self.settings = Settings(system_id=system_id, password=password)
        self.smsc_name = smsc_name
        self.rng = rng or random.Random()
        self.trace = trace
        self._next_id = first_id if first_id is not None else self.rng.randrange(1, 1 << 24)
        self._reference = self.rng.randrange(0, 1 << 16) if first_id is None else 1
        self._connections: list[SmscProtocol] = []
        self._submits: list[dict[str, Any]] = []
        self._rejected: list[dict[str, Any]] = []
        self._deliveries: list[dict[str, Any]] = []
        self._submit_count = 0
        self._fail_counter = 0
        self._recent_submits: deque[float] = deque()
        self._throttled_until = 0.0
        self._timers: set[IDelayedCall] = set()
        self._owed: deque[tuple[dict[str, Any], str, str]] = deque()
        self._waiters: list[list[Any]] = []
        self.configure(**settings)

    def buildProtocol(self, addr: Any) -> SmscProtocol:
        return SmscProtocol(self)

    def listen(self, endpoint: Any) -> defer.Deferred:
        """Listen on a server endpoint; the Deferred fires with the IListeningPort."""
        return endpoint.listen(self)

    # -- settings ----------------------------------------------------------------------

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings (see :class:`Settings`); return all of them as JSON.

        Raises :class:`SimulatorError` for an unknown name or a bad value, before changing
        anything.
        """
        converted = {}
        for name, value in changes.items():
            converter = _CONVERTERS.get(name)
            if converter is None:
                raise SimulatorError(
                    f"unknown setting {name!r}; settable: {', '.join(sorted(_CONVERTERS))}"
                )
            converted[name] = converter(value)
        for name, value in converted.items():
            setattr(self.settings, name, value)
        if "fail_every" in converted:
            self._fail_counter = 0
        if "throttle_after" in converted or "throttle_window" in converted:
            self._recent_submits.clear()
        for connection in list(self._connections):
            if "window" in converted:
                connection._drain()
            if "enquire_link_interval" in converted:
                connection._schedule_keepalive()
        return self.settings.as_json()

    # -- observing ---------------------------------------------------------------------

    @property
    def binds(self) -> list[SmscProtocol]:
        """The bound connections, oldest first."""
        return [c for c in self._connections if c.connected and c.bound]

    @property
    def throttled(self) -> bool:
        return self.clock.seconds() < self._throttled_until

    def status(self) -> dict[str, Any]:
        """``{bound, connections, submits, rejected, throttled, pending_receipts, settings}``."""
        return {
            "bound": [c.describe() for c in self.binds],
            "connections": len([c for c in self._connections if c.connected]),
            "submits": len(self._submits),
            "rejected": len(self._rejected),
            "throttled": self.throttled,
            "pending_receipts": len(self._timers) + len(self._owed),
            "settings": self.settings.as_json(),
        }

    def submits(self, include_rejected: bool = False) -> list[dict[str, Any]]:
        """The accepted submit_sm records, oldest first (rejected ones too if asked,
        in arrival order)."""
        if include_rejected:
            return sorted(self._submits + self._rejected, key=lambda r: r["index"])
        return list(self._submits)

    def clear_submits(self) -> None:
        self._submits.clear()
        self._rejected.clear()

    def deliveries(self) -> list[dict[str, Any]]:
        """Every deliver_sm sent (MO parts and receipts) with the ESME's answer."""
        return list(self._deliveries)

    def when(self, predicate: Callable[[], bool], timeout: float | None = None) -> defer.Deferred:
        """A Deferred firing with True once ``predicate()`` holds (checked now and after
        every bind, unbind, submit and deliver_sm_resp), or with False after ``timeout``
        seconds of the simulator's clock."""
        if predicate():
            return defer.succeed(True)
        waiter: defer.Deferred = defer.Deferred()
        entry: list[Any] = [predicate, waiter, None]
        if timeout is not None:
            entry[2] = self.clock.callLater(timeout, self._give_up, entry)
        self._waiters.append(entry)
        return waiter

    def wait_for_bind(self, timeout: float | None = None) -> defer.Deferred:
        """``when`` a receiver or transceiver is bound."""
        return self.when(lambda: any(c.receives for c in self.binds), timeout)

    def wait_for_submits(self, count: int, timeout: float | None = None) -> defer.Deferred:
        """``when`` at least ``count`` accepted submits are recorded."""
        return self.when(lambda: len(self._submits) >= count, timeout)

    def _give_up(self, entry: list[Any]) -> None:
        if entry in self._waiters:
            self._waiters.remove(entry)
            entry[1].callback(False)

    def _notify(self) -> None:
        for entry in list(self._waiters):
            predicate, waiter, timer = entry
            if entry in self._waiters and predicate():
                self._waiters.remove(entry)
                if timer is not None and timer.active():
                    timer.cancel()
                waiter.callback(True)

    # -- bind and submit (called by the protocol) ----------------------------------------

    def _check_bind(self, params: Mapping[str, Any]) -> int:
        settings = self.settings
        if settings.bind_error is not None:
            return settings.bind_error
        if params.get("system_id") != settings.system_id:
            return CommandStatus.ESME_RINVSYSID
        if params.get("password") != settings.password[:8]:
            return CommandStatus.ESME_RINVPASWD
        if settings.system_type and params.get("system_type") != settings.system_type:
            return CommandStatus.ESME_RINVSYSTYP
        return CommandStatus.ESME_ROK

    def _binds_changed(self) -> None:
        if any(c.receives for c in self.binds):
            self._flush_owed()
        self._notify()

    def _connection_gone(self, connection: SmscProtocol) -> None:
        if connection in self._connections:
            self._connections.remove(connection)
        self._notify()

    def _new_message_id(self) -> str:
        fmt = self.settings.id_format
        if fmt == "uuid":
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        number = self._next_id
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        return f"{number:08x}" if fmt == "hex" else f"{number:08d}"

    def _accept_submit(self, connection: SmscProtocol, pdu: PDU) -> tuple[int, str]:
        """Decide the fate of one submit_sm; return (command_status, message id)."""
        now = self.clock.seconds()
        settings = self.settings
        record = self._describe_submit(connection, pdu, now)
        self._submit_count += 1
        record["index"] = self._submit_count
        status = CommandStatus.ESME_ROK
        if now < self._throttled_until:
            status = CommandStatus.ESME_RTHROTTLED
        elif settings.throttle_after:
            recent = self._recent_submits
            while recent and recent[0] <= now - settings.throttle_window:
                recent.popleft()
            if len(recent) >= settings.throttle_after:
                self._throttled_until = now + settings.throttle_for
                recent.clear()
                status = CommandStatus.ESME_RTHROTTLED
            else:
                recent.append(now)
        if not status:
            self._fail_counter += 1
            if settings.fail_every and self._fail_counter % settings.fail_every == 0:
                status = settings.fail_status
        if status:
            record["command_status"] = status_name(status)
            self._rejected.append(record)
            self._notify()
            return status, ""
        message_id = self._new_message_id()
        record["smsc_message_id"] = message_id
        record["command_status"] = "ESME_ROK"
        self._submits.append(record)
        self._schedule_receipts(record, pdu.params.get("registered_delivery", 0))
        self._notify()
        return CommandStatus.ESME_ROK, message_id

    def _describe_submit(self, connection: SmscProtocol, pdu: PDU, now: float) -> dict[str, Any]:
        params = pdu.params
        esm_class = params.get("esm_class", 0)
        data_coding = params.get("data_coding", 0)
        payload = pdu.tlvs.get("message_payload")
        raw = payload if isinstance(payload, bytes) else params.get("short_message", b"")
        udh_info = None
        try:
            header, user_text = split_user_data(raw, esm_class)
        except MalformedUDH as exc:
            header, user_text = None, raw
            udh_info = {"error": str(exc)}
        if header is not None:
            concat = header.concat
            udh_info = {
                "hex": header.to_bytes().hex(),
                "reference": concat.reference if concat else None,
                "total": concat.total if concat else None,
                "seqnum": concat.seqnum if concat else None,
                "reference_bits": concat.reference_bits if concat else None,
            }
        sar = ConcatInfo.from_sar(
            pdu.tlvs.get("sar_msg_ref_num"),
            pdu.tlvs.get("sar_total_segments"),
            pdu.tlvs.get("sar_segment_seqnum"),
        )
        codec_map = dict(smpp_codecs.DEFAULT_DATA_CODING_MAP)
        codec_map[0] = self.settings.default_coding
        decoded = smpp_codecs.decode_message(user_text, data_coding, codec_map)
        return {
            "index": 0,
            "smsc_message_id": None,
            "command_status": None,
            "system_id": connection.system_id,
            "sequence_number": pdu.sequence_number,
            "service_type": params.get("service_type", ""),
            "source_addr_ton": params.get("source_addr_ton", 0),
            "source_addr_npi": params.get("source_addr_npi", 0),
            "source_addr": params.get("source_addr", ""),
            "dest_addr_ton": params.get("dest_addr_ton", 0),
            "dest_addr_npi": params.get("dest_addr_npi", 0),
            "destination_addr": params.get("destination_addr", ""),
            "esm_class": esm_class,
            "registered_delivery": params.get("registered_delivery", 0),
            "data_coding": data_coding,
            "codec": decoded.codec,
            "text": decoded.text,
            "short_message": params.get("short_message", b"").hex(),
            "message_payload": isinstance(payload, bytes),
            "udh": udh_info,
            "sar": (
                None
                if sar is None
                else {
                    "msg_ref_num": sar.reference,
                    "total_segments": sar.total,
                    "segment_seqnum": sar.seqnum,
                }
            ),
            "tlvs": _tlvs_json(pdu.tlvs),
            "received_at": now,
        }

    # -- receipts ----------------------------------------------------------------------

    def _schedule_receipts(self, record: dict[str, Any], registered_delivery: int) -> None:
        settings = self.settings
        wanted = registered_delivery & 0x03
        if settings.dr_delay < 0 or wanted == 0:
            return
        statuses = settings.dr_status
        if wanted == 2:  # receipt on failure only
            statuses = tuple(s for s in statuses if s in FAILURE_STATUSES)
        style = settings.dr_style
        for number, status in enumerate(statuses, start=1):
            self._timers.add(
                self.clock.callLater(
                    settings.dr_delay * number, self._receipt_due, record, status, style
                )
            )

    def _receipt_due(self, record: dict[str, Any], status: str, style: str) -> None:
        # The timer being run is no longer active: forget it and any other spent one.
        self._timers = {timer for timer in self._timers if timer.active()}
        self._owe_receipt(record, status, style)

    def _owe_receipt(self, record: dict[str, Any], status: str, style: str) -> None:
        self._owed.append((record, status, style))
        self._flush_owed()

    def _flush_owed(self) -> None:
        while self._owed:
            target = self._receiver()
            if target is None:
                return
            record, status, style = self._owed.popleft()
            self._send_receipt_to(target, record, status, style)

    def _receiver(self) -> SmscProtocol | None:
        for connection in self.binds:
            if connection.receives:
                return connection
        return None

    def _send_receipt_to(
        self, target: SmscProtocol, record: Mapping[str, Any], status: str, style: str
    ) -> defer.Deferred:
        message_id = record["smsc_message_id"]
        _stat, state, _err = DR_STATUSES[status]
        now = self.clock.seconds()
        tlvs: dict[str | int, Any] = {}
        short_message = b""
        if style in ("text", "both"):
            short_message = receipt_text(
                message_id, status, record.get("received_at", now), now, record.get("text", "")
            )
        if style in ("tlv", "both"):
            tlvs = {"receipted_message_id": message_id, "message_state": int(state)}
        pdu = make_pdu(
            "deliver_sm",
            source_addr_ton=record.get("dest_addr_ton", 0),
            source_addr_npi=record.get("dest_addr_npi", 0),
            source_addr=record.get("destination_addr", ""),
            dest_addr_ton=record.get("source_addr_ton", 0),
            dest_addr_npi=record.get("source_addr_npi", 0),
            destination_addr=record.get("source_addr", ""),
            esm_class=ESM_CLASS_RECEIPT,
            short_message=short_message,
            tlvs=tlvs,
        )
        delivery = {
            "kind": "receipt",
            "smsc_message_id": message_id,
            "status": status,
            "style": style,
            "system_id": target.system_id,
            "sequence_number": None,
            "command_status": None,
            "queued_at": now,
        }
        self._deliveries.append(delivery)
        written: defer.Deferred = defer.Deferred()
        written.addErrback(lambda _f: None)  # a lost connection re-owes the receipt
        target.queue_deliver(
            _Outgoing(pdu, "receipt", written, delivery, (dict(record), status, style))
        )
        return written

    def send_receipt(
        self,
        smsc_message_id: str,
        status: str = "delivered",
        style: str | None = None,
    ) -> defer.Deferred:
        """Send a receipt for ``smsc_message_id`` now (known or not).

        The Deferred fires with the deliver_sm's sequence number once written. Raises
        :class:`NotBound` when no receiver is bound, :class:`SimulatorError` for a bad
        status or style.
        """
        status = _check_dr_statuses([status])[0]
        style = _choice("style", DR_STYLES)(style or self.settings.dr_style)
        target = self._receiver()
        if target is None:
            raise NotBound("no receiver or transceiver is bound")
        record = next(
            (r for r in reversed(self._submits) if r["smsc_message_id"] == smsc_message_id),
            {"smsc_message_id": smsc_message_id},
        )
        written = defer.Deferred()
        self._send_receipt_to(target, record, status, style).chainDeferred(written)
        return written

    # -- mobile originated -------------------------------------------------------------

    def build_mo(
        self,
        from_addr: str,
        to_addr: str,
        text: str = "",
        *,
        coding: str = "gsm0338",
        multipart: str = "none",
        ussd_service_op: int | None = None,
        its_session_info: str | None = None,
        order: str = "forward",
        reference: int | None = None,
        hex_payload: str | None = None,
        data_coding: int | None = None,
        esm_class: int = 0,
    ) -> list[PDU]:
        """Return the deliver_sm PDUs (sequence numbers unset) carrying one MO message.

        ``coding`` picks data_coding and codec (see :data:`CODINGS`); ``binary`` sends
        ``hex_payload`` octets (or the text's latin-1 octets). ``multipart``: ``none``
        sends one PDU, moving a text longer than one SMS to message_payload; ``udh`` /
        ``udh16`` split with an 8- / 16-bit reference concatenation header; ``sar``
        splits with SAR TLVs; ``payload`` always uses message_payload. Raises
        :class:`SimulatorError` for bad values or text the coding cannot carry.
        """
        if coding not in CODINGS:
            raise SimulatorError(f"coding must be one of {', '.join(CODINGS)}")
        if multipart not in MULTIPART_STYLES:
            raise SimulatorError(f"multipart must be one of {', '.join(MULTIPART_STYLES)}")
        if order not in ORDERS:
            raise SimulatorError(f"order must be one of {', '.join(ORDERS)}")
        dc, codec = CODINGS[coding]
        if data_coding is not None:
            dc = data_coding
        if hex_payload is not None:
            try:
                text = bytes.fromhex(hex_payload).decode("latin-1")
            except ValueError:
                raise SimulatorError("hex is not a hex string") from None
            codec = "latin1"
        tlvs: dict[str | int, Any] = {}
        if ussd_service_op is not None:
            if not isinstance(ussd_service_op, int) or not 0 <= ussd_service_op <= 255:
                raise SimulatorError("ussd_service_op must be an integer 0-255")
            tlvs["ussd_service_op"] = bytes([ussd_service_op])
        if its_session_info is not None:
            try:
                tlvs["its_session_info"] = bytes.fromhex(its_session_info)
            except ValueError:
                raise SimulatorError("its_session_info must be a hex string") from None
        try:
            if multipart == "none":
                style = "short_message"
                if text_size(text, codec) > part_capacity(codec):
                    style = "message_payload"
                parts = split_text(text, codec, style)
            elif multipart == "payload":
                parts = split_text(text, codec, "message_payload")
            else:
                bits = 8 if multipart == "udh" else 16
                if reference is None:
                    self._reference = (self._reference + 1) % 0x10000
                    reference = self._reference
                reference %= 1 << bits
                style = "sar" if multipart == "sar" else "udh"
                parts = split_text(text, codec, style, reference, udh_reference_bits=bits)
        except UnicodeEncodeError as exc:
            raise SimulatorError(f"the text cannot be encoded as {coding}: {exc}") from None
        except ValueError as exc:
            raise SimulatorError(str(exc)) from None
        pdus = []
        for part in parts:
            part_tlvs = dict(tlvs)
            if part.sar is not None:
                part_tlvs.update(part.sar)
            if part.message_payload:
                part_tlvs["message_payload"] = part.payload
            pdus.append(
                make_pdu(
                    "deliver_sm",
                    source_addr=from_addr,
                    destination_addr=to_addr,
                    esm_class=esm_class | part.esm_class_flags,
                    data_coding=dc,
                    short_message=part.short_message,
                    tlvs=part_tlvs,
                )
            )
        if order == "reverse":
            pdus.reverse()
        elif order == "shuffle":
            self.rng.shuffle(pdus)
        for pdu in pdus:
            try:
                encode(pdu)
            except PDUEncodeError as exc:
                raise SimulatorError(str(exc)) from None
        return pdus

    def send_mo(self, from_addr: str, to_addr: str, text: str = "", **options: Any) -> Any:
        """Send one MO message (see :meth:`build_mo` for the options) to the oldest
        receiver or transceiver bind.

        Returns a Deferred firing with the list of sequence numbers once every PDU is
        written (later than the call when the window is full). Raises :class:`NotBound`
        when nothing can receive, :class:`SimulatorError` for bad options.
        """
        pdus = self.build_mo(from_addr, to_addr, text, **options)
        target = self._receiver()
        if target is None:
            raise NotBound("no receiver or transceiver is bound")
        written = []
        now = self.clock.seconds()
        for pdu in pdus:
            delivery = {
                "kind": "mo",
                "source_addr": from_addr,
                "destination_addr": to_addr,
                "system_id": target.system_id,
                "sequence_number": None,
                "command_status": None,
                "queued_at": now,
            }
            self._deliveries.append(delivery)
            d: defer.Deferred = defer.Deferred()
            target.queue_deliver(_Outgoing(pdu, "mo", d, delivery))
            written.append(d)
        return defer.gatherResults(written, consumeErrors=True).addErrback(
            lambda f: f.value.subFailure if hasattr(f.value, "subFailure") else f
        )

    # -- SMSC actions --------------------------------------------------------------------

    def throttle(self, seconds: float) -> None:
        """Answer every submit_sm with ESME_RTHROTTLED for ``seconds`` from now."""
        seconds = _number("seconds")(seconds)
        self._throttled_until = self.clock.seconds() + seconds

    def unbind_all(self) -> int:
        """Send unbind to every bound ESME; return how many."""
        targets = self.binds
        for connection in targets:
            connection.start_unbind()
        return len(targets)

    def drop_all(self) -> int:
        """Close every connection without unbind; return how many."""
        targets = [c for c in self._connections if c.connected]
        for connection in targets:
            connection.drop()
        return len(targets)

    def stop(self) -> None:
        """Cancel every timer (owed receipts are forgotten); connections stay as they are."""
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        for entry in list(self._waiters):
            self._give_up(entry)
            if entry[2] is not None and entry[2].active():
                entry[2].cancel()
        self._owed.clear()
        for connection in list(self._connections):
            for timer in (connection._keepalive, connection._unbind_timer):
                if timer is not None and timer.active():
                    timer.cancel()

    # -- tracing -----------------------------------------------------------------------

    def _trace(self, direction: str, connection: SmscProtocol, pdu: PDU) -> None:
        if self.trace is None:
            return
        arrow = "<-" if direction == "in" else "->"
        detail = ""
        if pdu.command_id in (CommandId.submit_sm, CommandId.deliver_sm):
            detail = (
                f" {pdu.params.get('source_addr')!r} -> {pdu.params.get('destination_addr')!r}"
                f" esm_class=0x{pdu.params.get('esm_class', 0):02x}"
                f" data_coding={pdu.params.get('data_coding', 0)}"
            )
        self.trace(
            f"{connection.peer} {arrow} {pdu.command} seq={pdu.sequence_number} "
            f"status={status_name(pdu.command_status)}{detail}"
        )


def listening_port_address(port: IListeningPort) -> tuple[str, int]:
    """Return (host, port) of a TCP listening port."""
    host = port.getHost()
    return host.host, host.port
