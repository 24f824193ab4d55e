"""A minimal ESME for the simulator's tests: our own PDU codec over real TCP."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from junebug.smsc.simulator import SmscSimulator
from junebug.transports.smpp.pdu import PDU, PDUFramer, decode, encode, make_pdu, make_response

WAIT = 10


def within(d: Deferred, seconds: float = WAIT) -> Deferred:
    return d.addTimeout(seconds, reactor)


class MiniEsme(Protocol):
    """Sends PDUs, queues what arrives. With ``auto_answer`` deliver_sm and enquire_link
    are answered (ESME_ROK, or ``deliver_status``) and still queued."""

    def __init__(self, auto_answer: bool = False, deliver_status: int = 0) -> None:
        self.framer = PDUFramer()
        self.received: DeferredQueue = DeferredQueue()
        self.sequence = 0
        self.auto_answer = auto_answer
        self.deliver_status = deliver_status
        self.closed: Deferred = Deferred()
        self.raw = b""

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        for frame in self.framer.feed(data):
            pdu = decode(frame)
            if self.auto_answer and pdu.command in ("deliver_sm", "enquire_link", "unbind"):
                status = self.deliver_status if pdu.command == "deliver_sm" else 0
                self.send(make_response(pdu, status))
            self.received.put(pdu)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    def send(self, pdu: PDU) -> PDU:
        if not pdu.is_response and not pdu.sequence_number:
            self.sequence += 1
            pdu.sequence_number = self.sequence
        self.transport.write(encode(pdu))
        return pdu

    def send_raw(self, data: bytes) -> None:
        self.transport.write(data)

    def next_pdu(self, seconds: float = WAIT) -> Deferred:
        return within(self.received.get(), seconds)

    async def next_of(self, command: str, seconds: float = WAIT) -> PDU:
        """The next PDU of ``command``, skipping others."""
        while True:
            pdu = await self.next_pdu(seconds)
            if pdu.command == command:
                return pdu

    async def call(self, command: str, tlvs: dict | None = None, **params: Any) -> PDU:
        """Send a request and return its response (other PDUs stay queued... in order)."""
        request = self.send(make_pdu(command, tlvs=tlvs, **params))
        skipped = []
        while True:
            pdu = await self.next_pdu()
            if pdu.sequence_number == request.sequence_number and pdu.is_response:
                break
            skipped.append(pdu)
        for other in skipped:
            self.received.put(other)
        return pdu

    async def bind(
        self, system_id: str, password: str, command: str = "bind_transceiver", **params: Any
    ) -> PDU:
        return await self.call(command, system_id=system_id, password=password, **params)

    def close(self) -> Deferred:
        self.transport.loseConnection()
        return within(self.closed)


async def connect(port: int, **kwargs: Any) -> MiniEsme:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return await within(connectProtocol(endpoint, MiniEsme(**kwargs)))


SYSTEM_ID = "smppclient"
PASSWORD = "secret"


class Smsc:
    """A simulator listening on 127.0.0.1, plus the ESMEs a test opened."""

    def __init__(self, **settings):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)  # 2023-11-14 22:13:20 UTC
        settings.setdefault("first_id", 0x0A1B2C3D)
        settings.setdefault("rng", random.Random(7))
        self.simulator = SmscSimulator(self.clock, SYSTEM_ID, PASSWORD, **settings)
        self.port = None
        self.esmes: list[MiniEsme] = []

    async def start(self):
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.port = await self.simulator.listen(endpoint)
        return self

    async def esme(self, bind: str | None = "bind_transceiver", **kwargs) -> MiniEsme:
        esme = await connect(self.port.getHost().port, **kwargs)
        self.esmes.append(esme)
        if bind:
            resp = await esme.bind(SYSTEM_ID, PASSWORD, bind)
            assert resp.command_status == 0
        return esme

    async def stop(self):
        self.simulator.stop()
        for esme in self.esmes:
            if esme.transport.connected:
                await esme.close()
        await self.port.stopListening()


async def make_smsc(**settings) -> Smsc:
    return await Smsc(**settings).start()


async def submit(esme: MiniEsme, text: bytes = b"hello", tlvs=None, **params) -> PDU:
    params.setdefault("source_addr", "12345")
    params.setdefault("destination_addr", "27831234567")
    params.setdefault("registered_delivery", 1)
    return await esme.call("submit_sm", tlvs=tlvs, short_message=text, **params)
