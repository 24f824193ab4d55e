"""HelloHttpChannel: a small HTTP-based channel type listening on ``web_port``.

``GET <web_path>`` answers the configured ``greeting``; ``POST <web_path>`` publishes
the request body as an inbound message (``from`` is the ``X-From`` header); outbound
messages are kept in ``sent`` and acknowledged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from junebug.transports.base import Transport


class _Endpoint(Resource):
    isLeaf = True

    def __init__(self, channel: HelloHttpChannel) -> None:
        super().__init__()
        self.channel = channel

    def _ours(self, request: Any) -> bool:
        if request.path.decode("utf-8", "replace") == self.channel.web_path:
            return True
        request.setResponseCode(404)
        return False

    def render_GET(self, request: Any) -> bytes:
        if not self._ours(request):
            return b"not a channel path\n"
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.channel.config.get("greeting", "hello").encode("utf-8")

    def render_POST(self, request: Any) -> Any:
        if not self._ours(request):
            return b"not a channel path\n"
        sender = request.getHeader(b"x-from") or b"anonymous"
        content = request.content.read().decode("utf-8", "replace")
        published = Deferred.fromCoroutine(
            self.channel.publish_inbound(
                from_addr=sender.decode("utf-8", "replace"),
                to_addr=self.channel.web_path,
                content=content,
            )
        )

        def answer(message: dict[str, Any]) -> None:
            request.write(message["message_id"].encode("ascii"))
            request.finish()

        def failed(failure: Any) -> None:
            request.setResponseCode(500)
            request.finish()

        published.addCallbacks(answer, failed)
        return NOT_DONE_YET


class HelloHttpChannel(Transport):
    transport_type = "http_api"
    CONFIG_SCHEMA = {
        "type": "object",
        "properties": {
            "web_path": {"type": "string", "minLength": 1},
            "web_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "web_interface": {"type": "string", "minLength": 1},
            "greeting": {"type": "string"},
            "public_http": {"type": "object"},
        },
        "required": ["web_path", "web_port"],
        "additionalProperties": False,
    }

    def __init__(self, context: Any, config: dict[str, Any]) -> None:
        super().__init__(context, config)
        self.web_path = "/" + config["web_path"].lstrip("/")
        self.sent: list[dict[str, Any]] = []
        self.port: Any = None

    async def setup(self) -> None:
        reactor = self.context.reactor
        if reactor is None:
            from twisted.internet import reactor
        site = Site(_Endpoint(self))
        site.noisy = False
        self.port = reactor.listenTCP(
            self.config["web_port"], site, interface=self.config.get("web_interface", "127.0.0.1")
        )

    async def teardown(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
            self.port = None

    async def handle_outbound(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        await self.publish_ack(message["message_id"], f"hello-{len(self.sent)}")
