"""A small in-process SMSC for the smpp channel's tests: a Twisted server over pdu.py.

It binds one ESME (checking system_id/password), records every submit_sm and
answers it (ids in hex or decimal, refusals per destination, throttling, or
silence), sends mobile-originated messages and receipts, and can unbind or
drop the connection. Everything a test waits for is a DeferredQueue.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Factory, Protocol

from junebug.transports.smpp import codecs, multipart
from junebug.transports.smpp import pdu as smpp
from junebug.transports.smpp.constants import CommandStatus
from tests.helpers import within


class SmscConnection(Protocol):
    def __init__(self, smsc: FakeSmsc) -> None:
        self.smsc = smsc
        self.framer = smpp.PDUFramer()
        self.bound = False
        self.sequence = itertools.count(1)
        self.closed: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.smsc.connections.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.smsc.connections:
            self.smsc.connections.remove(self)
        self.smsc.disconnects += 1
        self.closed.callback(None)

    def send(self, pdu: smpp.PDU) -> None:
        self.transport.write(smpp.encode(pdu))

    def request(self, command: str, tlvs: dict | None = None, **params: Any) -> int:
        seq = next(self.sequence)
        self.send(smpp.make_pdu(command, seq, tlvs=tlvs, **params))
        return seq

    def dataReceived(self, data: bytes) -> None:
        for frame in self.framer.feed(data):
            pdu = smpp.decode(frame)
            self.smsc.received.append(pdu)
            getattr(self, f"on_{pdu.command}", self.on_other)(pdu)

    def on_other(self, pdu: smpp.PDU) -> None:
        if pdu.is_response:
            self.smsc.responses.put(pdu)
        else:
            self.send(smpp.make_response(pdu, CommandStatus.ESME_RINVCMDID))

    def on_bind_transceiver(self, pdu: smpp.PDU) -> None:
        smsc = self.smsc
        smsc.bind_requests.append(pdu)
        if smsc.ignore_binds:
            return
        ok = pdu.params["system_id"] == smsc.system_id and pdu.params["password"] == smsc.password
        if not ok:
            self.send(smpp.make_response(pdu, CommandStatus.ESME_RINVPASWD))
            return
        self.bound = True
        self.send(smpp.make_response(pdu, system_id="fake-smsc"))
        smsc.binds.put(self)

    def on_enquire_link(self, pdu: smpp.PDU) -> None:
        self.smsc.enquire_links += 1
        if not self.smsc.ignore_enquire_link:
            self.send(smpp.make_response(pdu))

    def on_unbind(self, pdu: smpp.PDU) -> None:
        self.send(smpp.make_response(pdu))
        self.transport.loseConnection()

    def on_submit_sm(self, pdu: smpp.PDU) -> None:
        smsc = self.smsc
        record = smsc.record_submit(pdu)
        if smsc.silent:
            smsc.unanswered.append((self, pdu))
            return
        if smsc.throttle_count > 0:
            smsc.throttle_count -= 1
            smsc.throttled += 1
            self.send(smpp.make_response(pdu, CommandStatus.ESME_RTHROTTLED))
            return
        if pdu.params["destination_addr"] in smsc.refuse:
            self.send(smpp.make_response(pdu, CommandStatus.ESME_RINVDSTADR))
            return
        self.answer_submit(pdu, record)

    def answer_submit(self, pdu: smpp.PDU, record: dict[str, Any]) -> None:
        smsc = self.smsc
        number = next(smsc.ids)
        smsc_id = f"{number:x}" if smsc.id_format == "hex" else str(number)
        record["smsc_message_id"] = smsc_id
        self.send(smpp.make_response(pdu, message_id=smsc_id))
        smsc.accepted.append(record)
        smsc.submits.put(record)
        if smsc.auto_receipt and pdu.params["registered_delivery"]:
            receipt_id = smsc.receipt_id(number)
            reactor.callLater(0, smsc.send_receipt, receipt_id, smsc.auto_receipt)

    def on_deliver_sm_resp(self, pdu: smpp.PDU) -> None:
        self.smsc.deliver_resps.put(pdu)


class FakeSmsc:
    """See the module docstring. ``start`` listens on a free port on 127.0.0.1."""

    def __init__(
        self,
        system_id: str = "esme",
        password: str = "secret",
        id_format: str = "hex",
        receipt_id_format: str | None = None,
        port: int = 0,
    ) -> None:
        self.listen_port = port
        self.system_id = system_id
        self.password = password
        self.id_format = id_format
        #: How receipts write the id: "hex", "HEX0" (upper case, zero padded) or "decimal".
        self.receipt_id_format = receipt_id_format or id_format
        self.connections: list[SmscConnection] = []
        self.binds: DeferredQueue = DeferredQueue()
        self.submits: DeferredQueue = DeferredQueue()
        self.deliver_resps: DeferredQueue = DeferredQueue()
        self.responses: DeferredQueue = DeferredQueue()
        self.all_submits: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.received: list[smpp.PDU] = []
        self.bind_requests: list[smpp.PDU] = []
        self.unanswered: list[tuple[SmscConnection, smpp.PDU]] = []
        self.refuse: set[str] = set()
        self.ids = itertools.count(0x1000)
        self.throttle_count = 0
        self.throttled = 0
        self.silent = False
        self.ignore_binds = False
        self.ignore_enquire_link = False
        self.enquire_links = 0
        self.disconnects = 0
        #: Receipt state sent after every accepted submit (None: no receipts).
        self.auto_receipt: str | None = None
        self.port: Any = None

    async def start(self) -> FakeSmsc:
        factory = Factory.forProtocol(lambda: SmscConnection(self))
        factory.noisy = False
        self.port = reactor.listenTCP(self.listen_port, factory, interface="127.0.0.1")
        return self

    @property
    def port_number(self) -> int:
        return self.listen_port or self.port.getHost().port

    def endpoint(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.port_number}"

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
        for connection in list(self.connections):
            connection.transport.abortConnection()
            await within(connection.closed)

    # -- observing -------------------------------------------------------------------------

    def record_submit(self, pdu: smpp.PDU) -> dict[str, Any]:
        params = pdu.params
        payload = pdu.tlvs.get("message_payload") or params["short_message"]
        udh = None
        if params["esm_class"] & multipart.ESM_CLASS_UDHI:
            udh, payload = multipart.parse_udh(payload)
        text = decode_text(payload, params["data_coding"])
        record = {
            "sequence_number": pdu.sequence_number,
            "source_addr": params["source_addr"],
            "destination_addr": params["destination_addr"],
            "data_coding": params["data_coding"],
            "esm_class": params["esm_class"],
            "registered_delivery": params["registered_delivery"],
            "text": text,
            "udh": udh.concat if udh else None,
            "sar": {k: v for k, v in pdu.tlvs.items() if str(k).startswith("sar_")} or None,
            "tlvs": dict(pdu.tlvs),
            "pdu": pdu,
        }
        self.all_submits.append(record)
        return record

    def next_submit(self) -> Deferred:
        return within(self.submits.get())

    def next_bind(self) -> Deferred:
        return within(self.binds.get())

    @property
    def connection(self) -> SmscConnection:
        bound = [c for c in self.connections if c.bound]
        assert bound, "no ESME is bound"
        return bound[-1]

    # -- acting ------------------------------------------------------------------------------

    def receipt_id(self, number: int) -> str:
        if self.receipt_id_format == "decimal":
            return str(number)
        if self.receipt_id_format == "HEX0":
            return f"{number:010X}"
        return f"{number:x}"

    def send_mo(
        self,
        from_: str,
        to: str,
        text: str | bytes = "",
        *,
        data_coding: int = 8,
        esm_class: int = 0,
        tlvs: dict | None = None,
        short_message: bytes | None = None,
    ) -> int:
        if short_message is None:
            if isinstance(text, bytes):
                short_message = text
            else:
                codec = "utf-16-be" if data_coding == 8 else "latin-1"
                if data_coding == 0:
                    codec = "gsm0338"
                short_message = codecs.encode(text, codec)
        return self.connection.request(
            "deliver_sm",
            tlvs=tlvs,
            source_addr=from_,
            destination_addr=to,
            esm_class=esm_class,
            data_coding=data_coding,
            short_message=short_message,
        )

    def send_receipt(self, smsc_id: str, state: str = "DELIVRD", *, tlvs: bool = False) -> int:
        text = (
            f"id:{smsc_id} sub:001 dlvrd:001 submit date:2401011200 "
            f"done date:2401011201 stat:{state} err:000 text:hello"
        )
        extra = None
        if tlvs:
            states = {"DELIVRD": 2, "EXPIRED": 3, "UNDELIV": 5, "ACCEPTD": 6, "REJECTD": 8}
            extra = {"receipted_message_id": smsc_id, "message_state": states.get(state, 7)}
        return self.connection.request(
            "deliver_sm",
            tlvs=extra,
            source_addr="27000000000",
            destination_addr="12345",
            esm_class=0x04,
            short_message=text.encode("ascii"),
        )

    def answer_unanswered(self) -> None:
        pending, self.unanswered = self.unanswered, []
        for connection, pdu in pending:
            record = next(r for r in self.all_submits if r["pdu"] is pdu)
            connection.answer_submit(pdu, record)

    def unbind(self) -> int:
        return self.connection.request("unbind")

    def drop(self) -> None:
        for connection in list(self.connections):
            connection.transport.abortConnection()


def decode_text(payload: bytes, data_coding: int) -> str:
    if data_coding == 8:
        return payload.decode("utf-16-be")
    if data_coding == 0:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return codecs.decode(payload, "gsm0338", "replace")
    if data_coding == 3:
        return payload.decode("latin-1")
    return payload.decode("utf-8", "replace")
