"""A small HTTP/1.1 client for callbacks: one POST at a time per connection, over a
pool of persistent connections. The request is written here; answers are parsed by
httptools (C bindings to llhttp, the parser uvicorn and Node.js use).

treq/Agent spent 600-700 µs of CPU per callback POST on a persistent connection, and
this client on h11 180-290 µs (most of it in h11); on httptools a CallbackPoster POST
costs ~95 µs (bench/floors.py). It does only what callbacks need: POST a body that is
already bytes, read the answer's status, headers and the start of its body, time the
whole exchange out, and keep connections open between POSTs.

``HTTPClient.post`` answers a ``Response`` (any status: what it means is the caller's
business) or fails with: ``TimeoutError`` (no complete answer in time), ``InvalidRequest``
(a header that can never be sent), ``ConnectionClosed``, ``BadResponse``, ``TLSError``
or the exception Twisted connected with (``ConnectionRefusedError``, ``DNSLookupError``
...). Connections make no log lines.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import httptools
import idna
from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionClosed as _TransportClosed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS

#: Idle connections kept open per (scheme, host, port). A forwarder can have a full
#: prefetch of inbound and of events in flight: keep that many connections, or the
#: extras are closed and made again each time. More can be open at once while busy.
MAX_PERSISTENT_PER_HOST = 64
#: Seconds an idle connection is kept (as Twisted's HTTPConnectionPool did).
IDLE_TIMEOUT = 240.0
#: Bytes of an answer's body kept (for the caller's excerpt); the rest is read and
#: dropped, so that the connection can be used again.
BODY_KEPT = 64 * 1024
#: An answer whose body is longer than this ends the exchange there (with its status
#: and the bytes kept) and its connection is closed instead of read to the end.
BODY_MAX = 1024 * 1024


def _user_agent() -> bytes:
    try:
        return f"Junebug/{version('junebug')}".encode("ascii")
    except PackageNotFoundError:  # running from a tree that is not installed
        return b"Junebug"


USER_AGENT = _user_agent()

#: Characters left as they are in a path and in a query (RFC 3986 pchar, "%" so that
#: escapes already made stay, and "/" and "?"); anything else (spaces, non-ASCII) is
#: percent-encoded (UTF-8), as treq did.
_PATH_SAFE = "/:@!$&'()*+,;=%"
_QUERY_SAFE = _PATH_SAFE + "?"
_HOST_HEADER = re.compile(r"[\x21-\x7e]+")
#: What h11 (which this client used before httptools) accepted in a header: a token for
#: the name; for the value, no NUL, no CR/LF or other whitespace than inner spaces/tabs.
_FIELD_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_CONTENT_LENGTH = re.compile(rb"[0-9]+")


class InvalidRequest(ValueError):
    """The request can never be sent as given (a header with a control character)."""


class ConnectionClosed(Exception):
    """The connection ended before a complete answer."""


class BadResponse(Exception):
    """The answer was not HTTP/1.1 (or 1.0)."""


class TLSError(Exception):
    """The TLS handshake failed (certificate not valid for the host, unknown issuer ...)."""


@attrs.frozen
class Target:
    """Where a POST goes, parsed from a URL once (``Target.parse``)."""

    scheme: str
    #: What to connect to: an IP address (without brackets) or an ASCII host name.
    host: str
    port: int
    #: 4 or 6 for an IP address, 0 for a host name.
    family: int
    #: The path and query, percent-encoded: the request line's target.
    request_target: bytes
    #: The ``Host`` header: the host, with the port when it is not the scheme's default.
    host_header: bytes

    @property
    def key(self) -> tuple[str, str, int]:
        """Connections are pooled by this."""
        return (self.scheme, self.host, self.port)

    @property
    def url(self) -> str:
        """The URL as it is sent (no credentials, no fragment)."""
        return self.scheme + "://" + (self.host_header + self.request_target).decode("ascii")

    @classmethod
    def parse(cls, url: str) -> Target:
        """Raises ValueError for a URL that cannot be sent to. Credentials in it are
        ignored (``workers.http.split_credentials`` makes them a header)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {parts.scheme!r}")
        port = parts.port  # ValueError when not a number in range
        host = parts.hostname
        if not host:
            raise ValueError("no host")
        default = 443 if scheme == "https" else 80
        if port is None:
            port = default
        if isIPv6Address(host):
            family, shown = 6, f"[{host}]"
        elif isIPAddress(host):
            family, shown = 4, host
        else:
            family = 0
            if not host.isascii():
                try:
                    host = idna.encode(host, uts46=True).decode("ascii")
                except idna.IDNAError as exc:
                    raise ValueError(f"bad host name: {exc}") from None
            shown = host
        host_header = shown if port == default else f"{shown}:{port}"
        if not _HOST_HEADER.fullmatch(host_header):
            raise ValueError("bad host name")
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_QUERY_SAFE)
        return cls(scheme, host, port, family, path.encode("ascii"), host_header.encode("ascii"))


@attrs.frozen
class Response:
    """An answer: status, headers (names in lower case) and the first BODY_KEPT bytes of
    its body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _tls_options(hostname: str) -> Any:
    """Verifies the server's certificate against the platform's trust roots and
    ``hostname``, as Agent's default (BrowserLikePolicyForHTTPS) did."""
    return optionsForClientTLS(hostname)


class HTTPClient:
    """POSTs over persistent HTTP/1.1 connections, pooled per (scheme, host, port).

    A connection goes back to the pool only when its exchange ended cleanly and both
    sides keep it alive (HTTP/1.1, no ``Connection: close`` either way, no stray bytes
    after the answer);
    otherwise it is closed. The pool keeps the most recently used connections and
    takes them first (the least likely to have been closed by the server meanwhile).
    """

    def __init__(
        self,
        reactor: Any,
        *,
        max_persistent_per_host: int = MAX_PERSISTENT_PER_HOST,
        idle_timeout: float = IDLE_TIMEOUT,
        tls_options: Any = None,
        user_agent: bytes = USER_AGENT,
    ) -> None:
        self.reactor = reactor
        self.max_persistent_per_host = max_persistent_per_host
        self.idle_timeout = idle_timeout
        self.user_agent = user_agent
        #: hostname -> a TLS connection creator; a test gives one that trusts its own CA.
        self._tls_options = tls_options or _tls_options
        self._tls_cache: dict[str, Any] = {}
        #: Idle connections per Target.key, most recently used last.
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        #: Bumped by close(): connections older than that are not pooled again.
        self._generation = 0
        self._sweeper: Any = None
        self._factory = _ConnectionFactory()

    def post(
        self,
        target: Target,
        body: bytes,
        headers: list[tuple[Any, Any]],
        *,
        timeout: float,
        clock: Any = None,
    ) -> Deferred[Response]:
        """POST ``body`` to ``target`` with ``headers`` added to Host, User-Agent and
        Content-Length; the whole exchange (connecting included) is given ``timeout``
        seconds on ``clock`` (default: the reactor). Cancelling the Deferred aborts it."""
        fields = [
            (b"Host", target.host_header),
            (b"User-Agent", self.user_agent),
            (b"Content-Length", b"%d" % len(body)),
            *headers,
        ]
        request, close = _request(target.request_target, fields, body)
        exchange = _Exchange(self, target, request, close)
        exchange.timer = (clock or self.reactor).callLater(timeout, exchange.timed_out, timeout)
        connection = self._take(target.key)
        if connection is None:
            exchange.connect()
        else:
            exchange.use(connection)
        return exchange.result

    async def close(self) -> None:
        """Close the idle connections and wait until they are; busy ones are closed
        when their exchange ends. The client can still be used afterwards."""
        self._generation += 1
        if self._sweeper is not None:
            if self._sweeper.active():
                self._sweeper.cancel()
            self._sweeper = None
        closing = []
        for connections in self._idle.values():
            for connection in connections:
                closing.append(connection.when_lost())
                connection.transport.loseConnection()
        self._idle.clear()
        if closing:
            await DeferredList(closing)

    def idle_connections(self, target: Target | None = None) -> int:
        """How many connections are in the pool (for ``target``'s host, or in all)."""
        if target is not None:
            return len(self._idle.get(target.key, ()))
        return sum(len(connections) for connections in self._idle.values())

    # The pool.

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.lost:
                return connection
        return None

    def _release(self, connection: _Connection) -> None:
        """``connection`` finished an exchange and can take another."""
        idle = self._idle.get(connection.key)
        if idle is None:
            idle = self._idle[connection.key] = []
        if connection.generation != self._generation or len(idle) >= self.max_persistent_per_host:
            connection.transport.loseConnection()
            return
        connection.idle_since = self.reactor.seconds()
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.reactor.callLater(self.idle_timeout, self._sweep)

    def _forget(self, connection: _Connection) -> None:
        """``connection`` closed: it is no longer in the pool."""
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)
            if not idle:
                del self._idle[connection.key]

    def _sweep(self) -> None:
        """Close connections idle for idle_timeout; come back when the next one will be."""
        self._sweeper = None
        now = self.reactor.seconds()
        oldest = None
        for connections in list(self._idle.values()):
            for connection in list(connections):  # oldest first
                if now - connection.idle_since >= self.idle_timeout:
                    connections.remove(connection)
                    connection.transport.loseConnection()
                else:
                    if oldest is None or connection.idle_since < oldest:
                        oldest = connection.idle_since
                    break
        for key in [key for key, connections in self._idle.items() if not connections]:
            del self._idle[key]
        if oldest is not None:
            delay = max(oldest + self.idle_timeout - now, 1.0)
            self._sweeper = self.reactor.callLater(delay, self._sweep)

    def _endpoint(self, target: Target) -> Any:
        if target.family == 4:
            endpoint = TCP4ClientEndpoint(self.reactor, target.host, target.port)
        elif target.family == 6:
            endpoint = TCP6ClientEndpoint(self.reactor, target.host, target.port)
        else:
            endpoint = HostnameEndpoint(self.reactor, target.host, target.port)
        if target.scheme == "https":
            creator = self._tls_cache.get(target.host)
            if creator is None:
                if len(self._tls_cache) >= 256:
                    self._tls_cache.clear()
                creator = self._tls_cache[target.host] = self._tls_options(target.host)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint


def _bytes(value: Any) -> bytes:
    """A header's name or value as bytes (str as ASCII), as h11 took them."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        value = value.encode("ascii")
    if isinstance(value, int):
        raise TypeError("expected bytes-like object, not int")
    return bytes(value)


def _field_ok(name: bytes, value: bytes) -> bool:
    """Whether one header can be sent on its own (h11's rules)."""
    if not _FIELD_NAME.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
        return False
    lower = name.lower()
    if lower == b"content-length":
        lengths = {length.strip() for length in value.split(b",")}
        return len(lengths) == 1 and bool(_CONTENT_LENGTH.fullmatch(next(iter(lengths))))
    if lower == b"transfer-encoding":
        return value.lower() == b"chunked"
    return True


def _request(
    request_target: bytes, fields: list[tuple[Any, Any]], body: bytes
) -> tuple[bytes, bool]:
    """The request's bytes, and whether it asks for the connection to be closed.

    Raises InvalidRequest for headers that can never be sent: a name or value with a
    character not allowed (CR, LF, NUL ...), conflicting Content-Lengths, a Host given
    twice, a Transfer-Encoding other than chunked. Headers are written in the order
    given (Host first), a repeated Content-Length of the same value once."""
    lines = [b"POST %s HTTP/1.1\r\n" % request_target]
    content_length: bytes | None = None
    chunked = close = False
    hosts = 0
    try:
        for raw_name, raw_value in fields:
            name, value = _bytes(raw_name), _bytes(raw_value)
            if not _field_ok(name, value):
                raise ValueError
            lower = name.lower()
            if lower == b"content-length":
                value = value.split(b",", 1)[0].strip()
                if content_length is not None:
                    if content_length != value:
                        raise ValueError
                    continue
                content_length = value
            elif lower == b"transfer-encoding":
                if chunked:
                    raise ValueError
                chunked, value = True, b"chunked"
            elif lower == b"host":
                hosts += 1
            elif lower == b"connection":
                close = close or any(
                    token.strip().lower() == b"close" for token in value.split(b",")
                )
            lines.append(b"%s: %s\r\n" % (name, value))
        if hosts != 1:
            raise ValueError
    except ValueError:
        raise InvalidRequest(_invalid_header(fields)) from None
    lines.append(b"\r\n")
    if chunked:
        lines.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n")
    else:
        lines.append(body)
    return b"".join(lines), close


def _invalid_header(fields: list[tuple[Any, Any]]) -> str:
    """Which header was refused (by name only: a value can be a credential)."""
    for name, value in fields:
        if not _field_ok(_bytes(name), _bytes(value)):
            shown = name.decode("latin-1") if isinstance(name, bytes) else str(name)
            return f"header {shown[:100]!r} has a character not allowed in HTTP headers"
    return "the request's headers cannot be sent"


class _Exchange:
    """One POST: a connection from the pool or a new one, the answer, the timeout, and
    one retry on a new connection when a pooled connection turns out to be stale."""

    def __init__(self, client: HTTPClient, target: Target, request: bytes, close: bool):
        self.client = client
        self.target = target
        #: The request's bytes, head and body.
        self.request = request
        #: Whether the request says ``Connection: close`` (the connection is then not reused).
        self.close = close
        self.result: Deferred[Response] = Deferred(self._cancel)
        self.timer: Any = None
        self.connecting: Deferred | None = None
        self.connection: _Connection | None = None
        self.retried = False
        self.done = False

    def connect(self) -> None:
        generation = self.client._generation
        try:
            endpoint = self.client._endpoint(self.target)
            connecting = self.connecting = endpoint.connect(self.client._factory)
        except Exception as exc:  # noqa: BLE001 - e.g. bad TLS options: the exchange fails
            self.fail(exc)
            return
        connecting.addCallbacks(self._connected, self._not_connected, (generation,))

    def _connected(self, connection: _Connection, generation: int) -> None:
        self.connecting = None
        connection.client = self.client
        connection.key = self.target.key
        connection.generation = generation
        if self.done:  # timed out or cancelled as the connection was made
            connection.transport.abortConnection()
            return
        self.use(connection, fresh=True)

    def _not_connected(self, failure: Any) -> None:
        self.connecting = None
        self.fail(failure.value)

    def use(self, connection: _Connection, fresh: bool = False) -> None:
        self.connection = connection
        connection.start(self, reused=not fresh)

    def connection_lost(self, connection: _Connection, reason: Exception) -> None:
        """``connection`` ended before any byte of an answer arrived."""
        self.connection = None
        if connection.reused and not self.retried and isinstance(reason, _TransportClosed):
            # A pooled connection can be closed by the server (its keep-alive timeout)
            # at the moment we send on it: the request then meets a closed socket and
            # nothing comes back. Browsers retry such a request once on a new
            # connection, as long as nothing of an answer arrived. Twisted's pool does
            # so only for idempotent methods; we do it for this POST too, because a
            # callback is at-least-once already: workers/callbacks.py retries failed
            # callbacks, and receivers are told to dedupe by X-Junebug-Callback-Id.
            # Only one retry, on a new connection, within the same timeout.
            self.retried = True
            self.connect()
            return
        if isinstance(reason, _TransportClosed):
            detail = "" if isinstance(reason, ConnectionDone) else f" ({reason})"
            self.fail(ConnectionClosed(f"the connection closed before an answer{detail}"))
        else:
            self.fail(reason)

    def succeed(self, response: Response) -> None:
        if self._end():
            self.result.callback(response)

    def fail(self, exc: Exception) -> None:
        if self._end():
            self.result.errback(exc)

    def timed_out(self, timeout: float) -> None:
        self.timer = None
        if self._end():
            self.result.errback(TimeoutError(f"timed out after {timeout:g}s"))

    def _cancel(self, result: Deferred) -> None:
        self._end()  # Deferred.cancel then fails the result with CancelledError

    def _end(self) -> bool:
        """Mark the exchange over, aborting whatever is still under way; False when it
        already was."""
        if self.done:
            return False
        self.done = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        connection, self.connection = self.connection, None
        if connection is not None and connection.exchange is self:
            connection.exchange = None
            connection.transport.abortConnection()
        if self.connecting is not None:
            connecting, self.connecting = self.connecting, None
            connecting.cancel()
        return True


class _ConnectionFactory(Factory):
    """Builds connections, without Factory's log line for each one."""

    noisy = False

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection()


def _reason(failure: Any) -> Exception:
    """The exception a connection ended with; TLS failures named as such."""
    exc = failure.value if failure is not None else ConnectionClosed("no reason")
    if isinstance(exc, SSL.Error | VerificationError | CertificateError):
        return TLSError(f"TLS failed: {exc}")
    return exc


class _Stop(Exception):
    """Raised in a parser callback to stop parsing (the caller knows why)."""


class _Connection(Protocol):
    """One HTTP/1.1 connection; its answers are parsed by httptools.

    The parser's callbacks only take note; ``dataReceived`` acts once ``feed_data``
    returns (or raises), so that no caller's code runs inside the parser."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.client: HTTPClient | None = None
        self.key: tuple[str, str, int] = ("", "", 0)
        self.generation = 0
        self.exchange: _Exchange | None = None
        self.reused = False
        self.idle_since = 0.0
        self.lost = False
        self._lost_waiters: list[Deferred] = []
        self._answered = False  # a byte of the answer arrived
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._kept = 0
        self._length = 0
        self._content_length: int | None = None  # of the answer being read
        self._chunked = False
        self._interim = False  # the message being read is a 1xx
        self._headers_done = False  # the final answer's headers were read
        self._done = False  # the final answer was read whole
        self._keep_alive = False
        self._extra = False  # bytes followed the answer
        self._too_long = False  # the body went past BODY_MAX

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)

    def start(self, exchange: _Exchange, reused: bool) -> None:
        """Send ``exchange``'s request."""
        self.exchange = exchange
        self.reused = reused
        self._answered = False
        self._status = 0
        self._headers = []
        self._kept = self._length = 0
        self._content_length = None
        self._chunked = self._interim = self._headers_done = self._done = False
        self._keep_alive = self._extra = self._too_long = False
        self.transport.write(exchange.request)

    # The parser's callbacks.

    def on_message_begin(self) -> None:
        if self._done:  # another answer after ours: nobody asked for it
            self._extra = True
            raise _Stop
        self._headers = []
        self._content_length = None
        self._chunked = self._interim = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        value = value.strip(b" \t")
        self._headers.append((name, value))
        if name == b"content-length":
            if value.isdigit():
                self._content_length = int(value)
        elif name == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue and such: wait on for the answer
            self._interim = True
            return
        self._status = status
        self._headers_done = True

    def on_body(self, data: bytes) -> None:
        if self._interim:
            return
        self._length += len(data)
        if self._kept < BODY_KEPT:
            if self._kept + len(data) > BODY_KEPT:
                data = data[: BODY_KEPT - self._kept]
            self._body.append(data)
            self._kept += len(data)
        if self._length > BODY_MAX:  # not worth reading further
            self._too_long = True
            raise _Stop

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._done = True
        parser = self.parser
        self._keep_alive = parser.should_keep_alive() and parser.get_http_version() >= "1.1"

    # The transport's.

    def dataReceived(self, data: bytes) -> None:
        if self.exchange is None:  # bytes nobody asked for: this connection is unusable
            self._end_with(None)
            return
        self._answered = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._done:  # bytes after the answer that are not one
                self._extra = True
            elif not self._too_long:
                detail = str(exc) or type(exc).__name__
                if isinstance(exc, httptools.HttpParserUpgrade):
                    detail = f"unexpected switch of protocols ({self.parser.get_status_code()})"
                self._end_with(BadResponse(f"malformed answer: {detail}"))
                return
        if self._done:
            self._complete(
                reusable=self._keep_alive and not self._extra and not self.exchange.close
            )
        elif self._too_long:
            self._complete(reusable=False)

    def _complete(self, reusable: bool) -> None:
        exchange, self.exchange = self.exchange, None
        response = Response(self._status, self._headers, b"".join(self._body))
        self._body = []
        exchange.connection = None
        if self.lost:
            pass
        elif reusable:
            self.client._release(self)
        else:
            self.transport.abortConnection()
        # Last: the caller's code runs in this callback, and may take this connection
        # from the pool for its next POST.
        exchange.succeed(response)

    def _end_with(self, error: Exception | None) -> None:
        """Give up on this connection; the exchange (if any) fails with ``error``."""
        exchange, self.exchange = self.exchange, None
        if not self.lost:
            self.transport.abortConnection()
            if self.client is not None:
                self.client._forget(self)
        if exchange is not None:
            exchange.connection = None
            exchange.fail(error or ConnectionClosed("unexpected bytes"))

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        if self.client is not None:
            self.client._forget(self)
        exchange = self.exchange
        if exchange is not None and self._answered:
            # An answer whose body has no length (no Content-Length, not chunked: an
            # HTTP/1.0 answer, say) ends with the connection; any other is incomplete.
            # (httptools cannot be told of the end of the stream: this is decided here.)
            if not self._headers_done:
                missing = "peer unexpectedly closed connection"
            elif self._chunked:
                missing = (
                    "peer closed connection without sending complete message body: "
                    "incomplete chunked read"
                )
            elif self._content_length is not None:
                missing = (
                    "peer closed connection without sending complete message body: "
                    f"received {self._length} bytes, expected {self._content_length}"
                )
            else:
                self._complete(reusable=False)
                missing = ""
            if missing:
                self._end_with(
                    ConnectionClosed(f"the connection closed during the answer: {missing}")
                )
        elif exchange is not None:
            self.exchange = None
            exchange.connection_lost(self, _reason(reason))
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def when_lost(self) -> Deferred:
        d: Deferred = Deferred()
        if self.lost:
            d.callback(None)
        else:
            self._lost_waiters.append(d)
        return d
