"""Channel type ``telnet``: a telnet server; each connected client is a "phone".

A client connecting starts a session (inbound ``new`` with no content), each line
it types is an inbound ``resume`` message, and disconnecting ends the session
(inbound ``close``). Outbound messages are written to the client whose
``host:port`` address they are sent to.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.telnet import TelnetProtocol, TelnetTransport
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ServerFactory

from junebug.messages import SESSION_CLOSE, SESSION_NEW, SESSION_RESUME
from junebug.transports.base import Transport
from junebug.transports.common import VUMI_BASE_CONFIG

#: Typing this ends the session, as in the original.
QUIT_COMMAND = "/quit"

#: Lines longer than this are cut into several messages rather than buffered forever.
MAX_LINE = 16 * 1024


class _TelnetClient(TelnetProtocol):
    """One connected client: splits its input into lines."""

    def __init__(self, channel: TelnetChannel) -> None:
        self.channel = channel
        self.buffer = b""
        self.address = ""
        self.closed = Deferred()

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.address = f"{peer.host}:{peer.port}"
        self.channel.client_connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.channel.log.wire("in", f"{self.address} sent {data!r}")
        self.buffer += data
        while b"\n" in self.buffer or len(self.buffer) > MAX_LINE:
            if b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
            else:
                line, self.buffer = self.buffer[:MAX_LINE], self.buffer[MAX_LINE:]
            self.channel.line_received(self, line.rstrip(b"\r\n").decode("utf-8", "replace"))

    def connectionLost(self, reason: Any = None) -> None:
        self.channel.client_disconnected(self)

    def write_text(self, text: str, message_id: str | None = None) -> None:
        data = text.encode("utf-8") + b"\n"
        self.channel.log.wire("out", f"to {self.address}: {data!r}", message_id=message_id)
        # TelnetTransport turns "\n" into the "\r\n" telnet clients expect.
        self.transport.write(data)


class TelnetChannel(Transport):
    transport_type = "telnet"
    CONFIG_SCHEMA = {
        "type": "object",
        "properties": {
            "twisted_endpoint": {
                "type": "string",
                "minLength": 1,
                "description": "Twisted server endpoint to listen on, e.g. tcp:9001",
            },
            "telnet_host": {"type": "string", "description": "Deprecated: use twisted_endpoint"},
            "telnet_port": {
                "type": "integer",
                "minimum": 0,
                "maximum": 65535,
                "description": "Deprecated: use twisted_endpoint",
            },
            "to_addr": {
                "type": ["string", "null"],
                "description": "to address of inbound messages (default: host:port listened on)",
            },
            "transport_type": {"type": "string", "description": "transport_type of inbound"},
            **VUMI_BASE_CONFIG,
        },
        "additionalProperties": False,
    }

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        if "twisted_endpoint" not in config and "telnet_port" not in config:
            return ["config needs 'twisted_endpoint' (e.g. \"tcp:9001\")"]
        endpoint = cls.endpoint_description(config)
        try:
            from twisted.internet import reactor

            serverFromString(reactor, endpoint)
        except Exception as exc:  # noqa: BLE001 - ssl: endpoints fail reading files, etc.
            return [f"twisted_endpoint {endpoint!r} is not a valid server endpoint: {exc}"]
        return []

    @staticmethod
    def endpoint_description(config: dict[str, Any]) -> str:
        if config.get("twisted_endpoint"):
            return config["twisted_endpoint"]
        description = f"tcp:port={config['telnet_port']}"
        if config.get("telnet_host"):
            description += f":interface={config['telnet_host']}"
        return description

    def __init__(self, context: Any, config: dict[str, Any]) -> None:
        super().__init__(context, config)
        self.transport_type = config.get("transport_type", "telnet")
        self.clients: dict[str, _TelnetClient] = {}
        self.port: Any = None
        self.to_addr: str | None = config.get("to_addr")

    async def setup(self) -> None:
        factory = ServerFactory.forProtocol(lambda: TelnetTransport(_TelnetClient, self))
        factory.noisy = False
        endpoint = serverFromString(self.context.reactor, self.endpoint_description(self.config))
        try:
            self.port = await endpoint.listen(factory)
        except Exception as exc:
            await self.publish_status("telnet", "down", "listen_failed", f"Could not listen: {exc}")
            raise
        address = self.port.getHost()
        if self.to_addr is None:
            self.to_addr = f"{address.host}:{address.port}"
        self.log.info(f"Listening for telnet clients on {address.host}:{address.port}")
        await self.publish_status(
            "telnet",
            "ok",
            "listening",
            "Listening for connections",
            {"host": address.host, "port": address.port},
        )

    async def teardown(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        closing = [client.closed for client in self.clients.values()]
        for client in list(self.clients.values()):
            client.transport.loseConnection()
        if closing:
            await DeferredList(closing)

    def _publish(self, client: _TelnetClient, session_event: str, content: str | None) -> Deferred:
        return Deferred.fromCoroutine(
            self.publish_inbound(
                to_addr=self.to_addr,
                from_addr=client.address,
                session_event=session_event,
                content=content,
            )
        ).addErrback(lambda failure: self.log.error("Could not publish inbound", failure=failure))

    def client_connected(self, client: _TelnetClient) -> None:
        self.clients[client.address] = client
        self.log.info(f"Telnet client {client.address} connected")
        self._publish(client, SESSION_NEW, None)

    def line_received(self, client: _TelnetClient, line: str) -> None:
        if line.strip().lower() == QUIT_COMMAND:
            client.transport.loseConnection()  # ends the session like hanging up
            return
        self._publish(client, SESSION_RESUME, line)

    def client_disconnected(self, client: _TelnetClient) -> None:
        if self.clients.get(client.address) is client:
            del self.clients[client.address]
        self.log.info(f"Telnet client {client.address} disconnected")
        self._publish(client, SESSION_CLOSE, None).addBoth(lambda _: client.closed.callback(None))

    async def handle_outbound(self, message: dict[str, Any]) -> None:
        message_id = message["message_id"]
        client = self.clients.get(message.get("to_addr") or "")
        if client is None:
            self.log.warning(
                f"No telnet client connected at {message.get('to_addr')!r}", message_id=message_id
            )
            await self.publish_nack(message_id, "Unknown address.")
            return
        text = "\n".join((message.get("content") or "").splitlines())
        client.write_text(text, message_id)
        await self.publish_ack(message_id, message_id)
        if message.get("session_event") == SESSION_CLOSE:
            client.transport.loseConnection()
