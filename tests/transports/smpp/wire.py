"""An SmppChannel whose connections are StringTransports the test plays the SMSC on:
no network, timers on a task.Clock. Shared by the channel's unit tests."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from junebug import messages
from junebug.bus.base import event_key
from junebug.bus.local import LocalBus
from junebug.logs import ChannelLog
from junebug.transports.base import TransportContext
from junebug.transports.smpp import pdu as smpp
from junebug.transports.smpp.constants import CommandStatus
from junebug.transports.smpp.transport import SmppChannel, _EsmeFactory


class AbortableTransport(StringTransport):
    """A StringTransport whose close reaches its protocol, as a real connection's does."""

    def __init__(self, protocol: Any) -> None:
        super().__init__()
        self.protocol = protocol

    def abortConnection(self) -> None:
        self.loseConnection()

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            self.protocol.connectionLost(Failure(ConnectionLost("closed")))


class Wire:
    """The channel ``channel_id`` with ``config`` over the base config below; ``redis``
    for a channel that keeps its ids (None: no Redis)."""

    bus_type: type[LocalBus] = LocalBus

    def __init__(
        self,
        tmp_path: Any,
        channel_id: str = "smppunit",
        *,
        redis: Any = None,
        redis_prefix: str = "",
        **config: Any,
    ) -> None:
        self.channel_id = channel_id
        self.clock = Clock()
        self.bus = self.bus_type(self.clock)
        self.log = ChannelLog(channel_id, str(tmp_path))
        context = TransportContext(
            channel_id=channel_id,
            bus=self.bus,
            clock=self.clock,
            log=self.log,
            reactor=self.clock,
            redis=redis,
            redis_prefix=redis_prefix,
        )
        self.channel = SmppChannel(
            context,
            {
                "twisted_endpoint": "tcp:host=127.0.0.1:port=1",
                "system_id": "esme",
                "password": "secret",
                "window_size": 2,
                **config,
            },
        )
        self.transport: AbortableTransport | None = None

    def connect(self) -> None:
        protocol = _EsmeFactory(self.channel).buildProtocol(None)
        self.transport = AbortableTransport(protocol)
        protocol.makeConnection(self.transport)
        (bind,) = self.written()
        self.receive(smpp.make_response(bind, system_id="smsc"))

    def raw(self) -> bytes:
        """The bytes written since the last look."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def written(self) -> list[smpp.PDU]:
        return [smpp.decode(frame) for frame in smpp.PDUFramer().feed(self.raw())]

    def submits(self) -> list[smpp.PDU]:
        return [p for p in self.written() if p.command == "submit_sm"]

    def receive(self, pdu: smpp.PDU) -> None:
        self.channel.protocol.dataReceived(smpp.encode(pdu))

    def answer(self, submit: smpp.PDU, status: int = CommandStatus.ESME_ROK) -> None:
        self.receive(smpp.make_response(submit, status, message_id=f"id-{submit.sequence_number}"))

    def drop(self) -> None:
        self.transport.loseConnection()

    def send(self, text: str, to_addr: str = "27820000001", **fields: Any) -> tuple[dict, Deferred]:
        message = messages.user_message(
            to_addr=to_addr,
            from_addr="12345",
            transport_name=self.channel_id,
            content=text,
            **fields,
        )
        return message, Deferred.fromCoroutine(self.channel.handle_outbound(message))

    def events(self) -> list[dict]:
        queue = self.bus.queues.get(event_key(self.channel_id))
        found = []
        while queue is not None and len(queue):
            found.append(messages.decode(queue.pop()[0]))
        return found
