"""Test helpers shared by the suite: a real HTTP receiver, an API client, free ports."""

from __future__ import annotations

import json
import socket
from typing import Any

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

#: Upper bound on any wait in a test, so a broken test fails instead of hanging.
WAIT = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def within(d: Deferred, seconds: float = WAIT) -> Deferred:
    """``d``, failing with TimeoutError after ``seconds``."""
    return d.addTimeout(seconds, reactor)


@attrs.define
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class _Recorder(Resource):
    isLeaf = True

    def __init__(self, receiver: Receiver) -> None:
        super().__init__()
        self.receiver = receiver

    def render(self, request: Any) -> Any:
        received = ReceivedRequest(
            method=request.method.decode(),
            path=request.uri.decode(),
            headers={
                k.decode().lower(): v[0].decode()
                for k, v in request.requestHeaders.getAllRawHeaders()
            },
            body=request.content.read(),
        )
        code = self.receiver.next_code()
        self.receiver.requests.put(received)
        self.receiver.received.append(received)
        request.setResponseCode(code)
        if self.receiver.hold:
            self.receiver.held.append(request)
            return NOT_DONE_YET
        return b"{}"


class Receiver:
    """A real HTTP server standing in for an application (mo_url, event_url, status_url).

    ``codes`` are answered in turn (then 200); ``hold`` keeps requests unanswered,
    to test timeouts.
    """

    def __init__(self) -> None:
        self.requests: DeferredQueue = DeferredQueue()
        self.received: list[ReceivedRequest] = []
        self.codes: list[int] = []
        self.hold = False
        self.held: list[Any] = []
        self.port: Any = None

    def next_code(self) -> int:
        return self.codes.pop(0) if self.codes else 200

    def start(self) -> Receiver:
        self.port = reactor.listenTCP(0, Site(_Recorder(self)), interface="127.0.0.1")
        return self

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}{path}"

    def next(self, seconds: float = WAIT) -> Deferred:
        """Fires with the next ReceivedRequest."""
        return within(self.requests.get(), seconds)

    async def stop(self) -> None:
        for request in self.held:
            if not request.finished and not request._disconnected:
                request.finish()
        await self.port.stopListening()


class ApiClient:
    """Calls a running Junebug API and decodes its envelope."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    async def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        response = await within(
            treq.request(method, self.base + path, data=data, allow_redirects=False)
        )
        content = await within(response.content())
        return response.code, (json.loads(content) if content else None), response

    async def get(self, path: str):
        code, body, _ = await self.request("GET", path)
        return code, body

    async def post(self, path: str, body: Any = None, raw: bytes | None = None):
        code, body, _ = await self.request("POST", path, body, raw)
        return code, body

    async def delete(self, path: str):
        code, body, _ = await self.request("DELETE", path)
        return code, body


class _LineCollector(Protocol):
    def __init__(self, user: TelnetUser) -> None:
        self.user = user
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.user.lines.put(line.rstrip(b"\r").decode("utf-8"))

    def connectionLost(self, reason: Any = None) -> None:
        self.user.disconnected.callback(None)


class TelnetUser:
    """A person at a telnet client: a real TCP connection that reads lines."""

    def __init__(self) -> None:
        self.lines: DeferredQueue = DeferredQueue()
        self.disconnected: Deferred = Deferred()
        self.protocol: _LineCollector | None = None
        self.address = ""

    async def connect(self, port: int, host: str = "127.0.0.1") -> TelnetUser:
        endpoint = TCP4ClientEndpoint(reactor, host, port)
        self.protocol = await within(connectProtocol(endpoint, _LineCollector(self)))
        local = self.protocol.transport.getHost()
        self.address = f"{local.host}:{local.port}"
        return self

    def type(self, text: str) -> None:
        self.protocol.transport.write(text.encode("utf-8") + b"\r\n")

    def next_line(self, seconds: float = WAIT) -> Deferred:
        return within(self.lines.get(), seconds)

    async def hang_up(self) -> None:
        self.protocol.transport.loseConnection()
        await within(self.disconnected)


class _JbOutput(ProcessProtocol):
    def __init__(self, process: JbProcess) -> None:
        self.process = process

    def outReceived(self, data: bytes) -> None:
        self.process.output += data.decode("utf-8", "replace")
        if JbProcess.READY in self.process.output and not self.process.ready.called:
            self.process.ready.callback(self.process)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.process.exit_code = reason.value.exitCode
        if not self.process.ready.called:
            self.process.ready.errback(
                RuntimeError(f"jb exited before it was ready:\n{self.process.output}")
            )
        self.process.ended.callback(self.process.exit_code)


class JbProcess:
    """``jb`` as a child process; ``start`` fires when its API is listening."""

    READY = "Junebug API listening on"

    def __init__(self, *args: str, cwd: str, env: dict[str, str] | None = None) -> None:
        import os
        import sys

        self.argv = [os.path.join(os.path.dirname(sys.executable), "jb"), *args]
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.output = ""
        self.exit_code: int | None = None
        self.ready: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.transport: Any = None

    async def start(self, seconds: float = 30) -> JbProcess:
        self.transport = reactor.spawnProcess(
            _JbOutput(self), self.argv[0], self.argv, env=self.env, path=self.cwd
        )
        await within(self.ready, seconds)
        return self

    async def stop(self, seconds: float = 30) -> int | None:
        if not self.ended.called:
            self.transport.signalProcess("TERM")
        await within(self.ended, seconds)
        return self.exit_code


def write_jb_config(
    directory: Any,
    port: int,
    *,
    redis_prefix: str,
    redis_port: int = 6379,
    amqp_port: int | None = None,
    name: str = "junebug",
    logs: Any = None,
    **fields: Any,
) -> Any:
    """A YAML config file for a ``jb`` on a real Redis (under ``redis_prefix``) and, with
    ``amqp_port``, RabbitMQ, both on 127.0.0.1; ``fields`` are added as they are."""
    import yaml

    config: dict[str, Any] = {
        "port": port,
        "redis": {"host": "127.0.0.1", "port": redis_port, "key_prefix": redis_prefix},
        "logging_path": str(logs or directory / "logs"),
    }
    if amqp_port is not None:
        config["amqp"] = {"hostname": "127.0.0.1", "port": amqp_port}
    config.update(fields)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
