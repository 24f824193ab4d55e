"""workers.http_client against real local servers: a raw HTTP/1.1 server written here
(so a test can answer anything, malformed or cut short, and count connections) and a
TLS one. Timeouts on a task.Clock; no sleeps."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from typing import Any
from urllib.parse import unquote

import attrs
import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredQueue
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from junebug.workers import http_client
from junebug.workers.http import CallbackPoster
from junebug.workers.http_client import BODY_KEPT, HTTPClient, Target
from tests.helpers import free_port, within


def answer(status: int = 200, body: bytes = b"{}", headers: tuple = (), reason=b"X") -> bytes:
    """An HTTP/1.1 answer with a Content-Length."""
    head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (status, reason, len(body))
    for name, value in headers:
        head += b"%s: %s\r\n" % (name, value)
    return head + b"\r\n" + body


@attrs.define
class Request:
    method: bytes
    target: bytes
    headers: dict[bytes, bytes]
    body: bytes
    connection: Any
    #: 1 for the first request on its connection, then 2, 3 ...
    number: int


class _ServerConnection(Protocol):
    def __init__(self, server: RawServer) -> None:
        self.server = server
        self.buffer = b""
        self.requests = 0
        self.closed: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.server.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ")
            headers = {}
            for line in lines[1:]:
                name, value = line.split(b":", 1)
                assert name.lower() not in headers, f"{name!r} sent twice"
                headers[name.lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.requests += 1
            request = Request(method, target, headers, rest[:length], self, self.requests)
            self.server.received.append(request)
            reply = self.server.respond(request)
            if reply is not None:
                self.transport.write(reply)
            self.server.requests.put(request)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


class RawServer:
    """Answers each request with ``respond(request)``: bytes to write (anything, valid
    HTTP or not), or None to write nothing (the test answers, closes or holds)."""

    def __init__(self, interface: str = "127.0.0.1") -> None:
        self.interface = interface
        self.connections: list[_ServerConnection] = []
        self.received: list[Request] = []
        self.requests: DeferredQueue = DeferredQueue()
        self.respond = lambda request: answer()
        self.port: Any = None

    def start(self, listen: Any = None) -> RawServer:
        factory = Factory.forProtocol(lambda: _ServerConnection(self))
        factory.noisy = False
        if listen is not None:
            self.port = listen(factory)
        else:
            self.port = reactor.listenTCP(0, factory, interface=self.interface)
        return self

    @property
    def accepted(self) -> int:
        return len(self.connections)

    def url(self, path: str = "/", scheme: str = "http", host: str | None = None) -> str:
        host = host or self.interface
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port.getHost().port}{path}"

    async def stop(self) -> None:
        for connection in self.connections:
            if not connection.closed.called:
                connection.transport.abortConnection()
        await self.port.stopListening()


@pytest_twisted.async_yield_fixture
async def server():
    raw = RawServer().start()
    yield raw
    await raw.stop()


@pytest_twisted.async_yield_fixture
async def client():
    made = HTTPClient(reactor)
    yield made
    await made.close()
    assert made._sweeper is None and made.idle_connections() == 0


def post(client: HTTPClient, url: str, body: bytes = b"{}", clock: Any = None, **kw: Any):
    return client.post(Target.parse(url), body, [], timeout=kw.get("timeout", 10), clock=clock)


# The pool.


@pytest_twisted.ensureDeferred
async def test_sequential_posts_share_one_connection(server, client):
    for n in range(5):
        response = await within(post(client, server.url(f"/cb?n={n}"), b'{"n": 1}'))
        assert (response.status, response.body) == (200, b"{}")
    assert server.accepted == 1
    assert [r.number for r in server.received] == [1, 2, 3, 4, 5]
    assert server.received[3].target == b"/cb?n=3" and server.received[3].body == b'{"n": 1}'
    assert client.idle_connections() == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_posts_each_get_a_connection_and_the_pool_keeps_its_cap(server):
    client = HTTPClient(reactor, max_persistent_per_host=4)
    held: list[Request] = []

    def hold_until_all_arrived(request: Request) -> None:
        held.append(request)
        if len(held) == 20:
            for each in held:
                each.connection.transport.write(answer(body=each.body))

    server.respond = hold_until_all_arrived
    try:
        results = [post(client, server.url(), b"%d" % n) for n in range(20)]
        responses = [await within(d) for d in results]
        assert [r.body for r in responses] == [b"%d" % n for n in range(20)]
        assert server.accepted == 20
        assert client.idle_connections() == 4
        await within(Deferred.fromCoroutine(_closed(server.connections, 16)))
        server.respond = lambda request: answer()
        again = [post(client, server.url()) for _ in range(4)]
        for d in again:
            assert (await within(d)).status == 200
        assert server.accepted == 20  # the four pooled connections, no new one
    finally:
        await client.close()


async def _closed(connections: list[_ServerConnection], count: int) -> None:
    """Waits until ``count`` of ``connections`` are closed, whichever they are."""
    while sum(c.closed.called for c in connections) < count:
        pending = [c.closed for c in connections if not c.closed.called]
        await DeferredList(pending, fireOnOneCallback=True)


@pytest_twisted.ensureDeferred
async def test_connection_close_means_a_new_connection_next_time(server, client):
    server.respond = lambda request: answer(headers=[(b"Connection", b"close")])
    for _ in range(3):
        assert (await within(post(client, server.url()))).status == 200
    assert server.accepted == 3
    assert client.idle_connections() == 0


@pytest_twisted.ensureDeferred
async def test_an_http10_answer_delimited_by_closing_is_read_whole(server, client):
    def http10(request: Request) -> None:
        request.connection.transport.write(b"HTTP/1.0 503 Busy\r\n\r\nbody until the end")
        request.connection.transport.loseConnection()

    server.respond = http10
    response = await within(post(client, server.url()))
    assert (response.status, response.body) == (503, b"body until the end")
    assert client.idle_connections() == 0


@pytest_twisted.ensureDeferred
async def test_an_idle_connection_the_server_closes_leaves_the_pool(server, client):
    assert (await within(post(client, server.url()))).status == 200
    [pooled] = client._idle[Target.parse(server.url()).key]
    server.connections[0].transport.loseConnection()
    await within(pooled.when_lost())
    assert client.idle_connections() == 0
    assert (await within(post(client, server.url()))).status == 200
    assert server.accepted == 2
    assert [r.number for r in server.received] == [1, 1]


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest_twisted.ensureDeferred
async def test_a_stale_pooled_connection_is_retried_once_on_a_new_one(server, client, how):
    """The server closes a kept-alive connection as the next request arrives on it."""

    def close_second_request(request: Request) -> bytes | None:
        if request.number == 1 and request.connection is server.connections[0]:
            return answer()
        if request.connection is server.connections[0]:
            if how == "close":
                request.connection.transport.loseConnection()
            else:
                request.connection.transport.abortConnection()
            return None
        return answer(body=b"fresh")

    server.respond = close_second_request
    clock = Clock()
    assert (await within(post(client, server.url(), clock=clock))).status == 200
    response = await within(post(client, server.url(), clock=clock))
    assert response.body == b"fresh"
    assert server.accepted == 2
    assert [(r.connection, r.number) for r in server.received] == [
        (server.connections[0], 1),
        (server.connections[0], 2),
        (server.connections[1], 1),
    ]
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_only_one_retry_and_none_on_a_new_connection(server, client):
    def only_the_first(request: Request) -> bytes | None:
        if request.connection is server.connections[0] and request.number == 1:
            return answer()
        request.connection.transport.loseConnection()
        return None

    server.respond = only_the_first
    assert (await within(post(client, server.url()))).status == 200
    with pytest.raises(http_client.ConnectionClosed, match="closed before an answer"):
        await within(post(client, server.url()))
    assert server.accepted == 2  # the pooled one, then one retry
    with pytest.raises(http_client.ConnectionClosed):
        await within(post(client, server.url()))
    assert server.accepted == 3  # a new connection failing is not retried


@pytest_twisted.ensureDeferred
async def test_no_retry_once_part_of_an_answer_arrived(server, client):
    def cut_short(request: Request) -> bytes | None:
        if request.number == 1:
            return answer()
        request.connection.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        request.connection.transport.loseConnection()
        return None

    server.respond = cut_short
    assert (await within(post(client, server.url()))).status == 200
    with pytest.raises(http_client.ConnectionClosed) as raised:
        await within(post(client, server.url()))
    assert "during the answer" in str(raised.value)
    assert "received 3 bytes, expected 10" in str(raised.value)
    assert server.accepted == 1


# Answers.


@pytest_twisted.ensureDeferred
async def test_what_is_sent(server, client):
    target = Target.parse(server.url("/a b/é?q=ü x&r=%2F"))
    await within(client.post(target, b"[1]", [(b"X-Extra", b"yes")], timeout=10))
    request = server.received[0]
    assert (request.method, request.target) == (b"POST", b"/a%20b/%C3%A9?q=%C3%BC%20x&r=%2F")
    assert request.headers == {
        b"host": b"127.0.0.1:%d" % server.port.getHost().port,
        b"user-agent": http_client.USER_AGENT,
        b"content-length": b"3",
        b"x-extra": b"yes",
    }
    assert http_client.USER_AGENT.startswith(b"Junebug/")


def test_targets():
    t = Target.parse("https://Example.COM/x#frag")
    assert (t.scheme, t.host, t.port, t.family) == ("https", "example.com", 443, 0)
    assert (t.request_target, t.host_header) == (b"/x", b"example.com")
    assert Target.parse("http://h:8080").request_target == b"/"
    assert Target.parse("http://h:8080").host_header == b"h:8080"
    assert Target.parse("http://h:80/").host_header == b"h"
    v6 = Target.parse("http://[::1]:81/x?y")
    assert (v6.host, v6.family, v6.host_header, v6.url) == ("::1", 6, b"[::1]:81", v6.url)
    assert v6.url == "http://[::1]:81/x?y"
    assert Target.parse("http://10.0.0.1/").family == 4
    assert Target.parse("http://bücher.example/").host == "xn--bcher-kva.example"
    for bad in ("ftp://h/", "http:///x", "http://h:99999/", "http://h\x01x/"):
        with pytest.raises(ValueError):
            Target.parse(bad)


@settings(max_examples=200)
@given(path=st.text(st.characters(exclude_characters="%?#\\", exclude_categories=["Cs"])))
def test_any_path_is_sent_percent_encoded_and_means_the_same(path):
    target = Target.parse("http://h/" + path).request_target
    assert target.isascii() and all(0x21 <= byte <= 0x7E for byte in target)
    decoded = unquote(target.decode("ascii"))
    # urlsplit drops tabs and newlines from URLs (WHATWG); everything else is kept.
    assert decoded == "/" + "".join(c for c in path if c not in "\t\r\n")


@pytest_twisted.ensureDeferred
async def test_a_long_body_is_read_to_the_end_but_only_its_start_kept(server, client):
    body = bytes(range(256)) * 1024  # 256 KB
    server.respond = lambda request: answer(500, body)
    response = await within(post(client, server.url()))
    assert response.body == body[:BODY_KEPT]
    assert client.idle_connections() == 1  # read whole: still usable


@pytest_twisted.ensureDeferred
async def test_a_huge_body_is_not_read_and_its_connection_closed(server, client):
    head = b"HTTP/1.1 500 X\r\nContent-Length: %d\r\n\r\n" % (10 * 1024 * 1024)
    server.respond = lambda request: head + b"x" * (1024 * 1024 + 1)
    response = await within(post(client, server.url()))
    assert (response.status, response.body) == (500, b"x" * BODY_KEPT)
    await within(server.connections[0].closed)
    assert client.idle_connections() == 0


@pytest_twisted.ensureDeferred
async def test_interim_answers_are_skipped(server, client):
    server.respond = lambda request: b"HTTP/1.1 100 Continue\r\n\r\n" + answer(201)
    assert (await within(post(client, server.url()))).status == 201
    assert client.idle_connections() == 1


@pytest_twisted.ensureDeferred
async def test_a_malformed_answer_fails_and_closes_the_connection(server, client):
    server.respond = lambda request: b"garbage\r\n\r\n"
    with pytest.raises(http_client.BadResponse, match="malformed answer"):
        await within(post(client, server.url()))
    await within(server.connections[0].closed)
    assert client.idle_connections() == 0


@pytest_twisted.ensureDeferred
async def test_bytes_after_the_answer_mean_the_connection_is_not_reused(server, client):
    server.respond = lambda request: answer() + b"HTTP/1.1 200 OK\r\n"
    assert (await within(post(client, server.url()))).status == 200
    await within(server.connections[0].closed)
    assert client.idle_connections() == 0


@pytest_twisted.ensureDeferred
async def test_a_header_that_cannot_be_sent_is_refused_without_its_value(server, client):
    with pytest.raises(http_client.InvalidRequest) as raised:
        client.post(
            Target.parse(server.url()), b"", [(b"Authorization", b"s3cret\r\nX: y")], timeout=1
        )
    assert "Authorization" in str(raised.value) and "s3cret" not in str(raised.value)
    assert server.accepted == 0


# Timeouts and cancelling.


@pytest_twisted.ensureDeferred
async def test_a_held_request_times_out_and_its_connection_is_aborted(server, client):
    clock = Clock()
    server.respond = lambda request: None
    result = post(client, server.url(), clock=clock, timeout=10)
    await server.requests.get()
    clock.advance(9.9)
    assert not result.called
    clock.advance(0.1)
    with pytest.raises(TimeoutError, match="timed out after 10s"):
        await result
    await within(server.connections[0].closed)
    assert clock.getDelayedCalls() == [] and client.idle_connections() == 0


@pytest_twisted.ensureDeferred
async def test_answers_and_failures_leave_no_timer(server, client):
    clock = Clock()
    assert (await within(post(client, server.url(), clock=clock))).status == 200
    with pytest.raises(ConnectionRefusedError):
        await within(post(client, f"http://127.0.0.1:{free_port()}/", clock=clock))
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_cancelling_aborts_the_exchange(server, client):
    clock = Clock()
    server.respond = lambda request: None
    result = post(client, server.url(), clock=clock)
    await server.requests.get()
    result.cancel()
    with pytest.raises(CancelledError):
        await result
    await within(server.connections[0].closed)
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_close_closes_idle_connections_and_busy_ones_when_done(server):
    client = HTTPClient(reactor)
    assert client._sweeper is None
    await within(post(client, server.url()))
    assert client._sweeper is not None  # the idle connection will be closed in time
    held: list[Request] = []
    server.respond = held.append
    busy = post(client, server.url("/busy"))  # on the pooled connection
    second = post(client, server.url("/second"))  # on a new one
    while len(held) < 2:
        await within(server.requests.get())
    [on_first, on_second] = sorted(held, key=lambda r: r.target)
    assert (on_first.connection, on_second.connection) == tuple(server.connections)
    on_second.connection.transport.write(answer())
    await within(second)
    assert client.idle_connections() == 1
    await within(Deferred.fromCoroutine(client.close()))
    await within(server.connections[1].closed)
    assert not server.connections[0].closed.called
    assert client._sweeper is None and client.idle_connections() == 0
    on_first.connection.transport.write(answer())
    await within(busy)
    await within(server.connections[0].closed)  # not pooled after close()
    assert client.idle_connections() == 0


@pytest_twisted.ensureDeferred
async def test_idle_connections_are_closed_after_the_idle_timeout(server):
    client = HTTPClient(reactor, idle_timeout=0.05)
    try:
        await within(post(client, server.url()))
        await within(server.connections[0].closed)  # closed by the sweep, not by us
        assert client.idle_connections() == 0 and client._sweeper is None
    finally:
        await client.close()


# Errors.


@pytest_twisted.ensureDeferred
async def test_connection_refused_and_dns_failure(client):
    with pytest.raises(ConnectionRefusedError):
        await within(post(client, f"http://127.0.0.1:{free_port()}/"))
    with pytest.raises(DNSLookupError):
        await within(post(client, "http://nothing-here.invalid/"))


@pytest_twisted.ensureDeferred
async def test_a_host_name_is_resolved(server, client):
    response = await within(post(client, server.url(host="localhost")))
    assert response.status == 200
    assert server.received[0].headers[b"host"] == b"localhost:%d" % server.port.getHost().port


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
@pytest_twisted.ensureDeferred
async def test_an_ipv6_literal(client):
    server = RawServer("::1").start()
    try:
        for _ in range(2):
            assert (await within(post(client, server.url("/six")))).status == 200
        port = server.port.getHost().port
        assert server.received[0].headers[b"host"] == b"[::1]:%d" % port
        assert server.accepted == 1
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_connections_make_no_log_lines(server, client):
    events: list[Any] = []
    globalLogPublisher.addObserver(events.append)
    try:
        server.respond = lambda request: answer(headers=[(b"Connection", b"close")])
        for _ in range(2):
            await within(post(client, server.url()))
        with pytest.raises(ConnectionRefusedError):
            await within(post(client, f"http://127.0.0.1:{free_port()}/"))
        await within(post(client, server.url(host="localhost")))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert events == []


# TLS.


def _self_signed() -> tuple[bytes, bytes]:
    """A certificate for localhost and 127.0.0.1 signed by itself, and its key (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@implementer(IOpenSSLContextFactory)
class _ServerTLS:
    """A TLS server context for ``cert`` and ``key`` (PEM)."""

    def __init__(self, cert: bytes, key: bytes) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from OpenSSL import SSL

        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        self.context.use_certificate(x509.load_pem_x509_certificate(cert))
        self.context.use_privatekey(serialization.load_pem_private_key(key, None))

    def getContext(self) -> Any:
        return self.context


@pytest_twisted.async_yield_fixture
async def tls_server():
    cert, key = _self_signed()
    tls = _ServerTLS(cert, key)
    raw = RawServer().start(lambda f: reactor.listenSSL(0, f, tls, interface="127.0.0.1"))
    raw.certificate = cert
    yield raw
    await raw.stop()


@pytest_twisted.ensureDeferred
async def test_https_to_a_trusted_server_reuses_its_connection(tls_server):
    from twisted.internet import ssl

    root = ssl.Certificate.loadPEM(tls_server.certificate)
    client = HTTPClient(
        reactor, tls_options=lambda host: ssl.optionsForClientTLS(host, trustRoot=root)
    )
    try:
        for host in ("127.0.0.1", "127.0.0.1", "localhost"):
            response = await within(post(client, tls_server.url("/s", "https", host)))
            assert response.status == 200
        assert tls_server.accepted == 2  # one per host name
        assert [r.number for r in tls_server.received] == [1, 2, 1]
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_https_refuses_a_certificate_it_cannot_verify(tls_server, client):
    with pytest.raises(http_client.TLSError, match="certificate verify failed"):
        await within(post(client, tls_server.url("/s", "https")))
    assert tls_server.received == []
    assert client.idle_connections() == 0


@pytest_twisted.ensureDeferred
async def test_https_checks_the_host_name(tls_server):
    from twisted.internet import ssl

    root = ssl.Certificate.loadPEM(tls_server.certificate)
    client = HTTPClient(
        reactor, tls_options=lambda host: ssl.optionsForClientTLS("other.example", trustRoot=root)
    )
    try:
        with pytest.raises(http_client.TLSError):
            await within(post(client, tls_server.url("/s", "https")))
    finally:
        await client.close()


# Through CallbackPoster: any status and body.


@settings(max_examples=80, deadline=None)
@given(
    status=st.integers(200, 599),
    body=st.binary(max_size=2000),
    retry_after=st.none() | st.integers(0, 10_000),
    close=st.booleans(),
)
@pytest_twisted.ensureDeferred
async def test_any_status_and_body_make_the_same_outcome(status, body, retry_after, close):
    # pytest-twisted runs each example in the reactor and waits for it.
    if status in (204, 304):  # answers that have no body
        body = b""
    headers = [] if retry_after is None else [(b"Retry-After", b"%d" % retry_after)]
    if close:
        headers.append((b"Connection", b"close"))
    server = RawServer().start()
    server.respond = lambda request: answer(status, body, headers)
    poster = CallbackPoster(reactor, timeout=10)
    try:
        outcomes = [
            await within(Deferred.fromCoroutine(poster.attempt(server.url(), b"{}")))
            for _ in range(2)
        ]
    finally:
        await poster.close()
        await server.stop()
    assert outcomes[0] == outcomes[1]
    assert server.accepted == (2 if close else 1)
    outcome = outcomes[0]
    assert outcome.status == status
    assert outcome.ok == (200 <= status < 300)
    if not outcome.ok:
        assert outcome.error == f"answered {status}: " + body[:500].decode("utf-8", "replace")
    expected_wait = retry_after if status in (429, 503) and retry_after is not None else None
    assert outcome.retry_after == expected_wait


# Parsing answers fed in pieces (on a StringTransport: how bytes arrive is chosen here).


def _feed(pieces: list[bytes], *, close: bool = False, lose: bool = False) -> tuple[Any, Any]:
    """Feeds ``pieces`` as the answer to one exchange on a new connection; answers the
    exchange's result (None while it is pending) and the client."""
    from twisted.internet.error import ConnectionDone
    from twisted.internet.testing import StringTransport
    from twisted.python.failure import Failure

    client = HTTPClient(Clock())
    target = Target.parse("http://example.com/")
    exchange = http_client._Exchange(client, target, b"POST / HTTP/1.1\r\n\r\n", close)
    connection = http_client._Connection()
    connection.makeConnection(StringTransport())
    connection.client, connection.key = client, target.key
    exchange.use(connection, fresh=True)
    results: list = []
    exchange.result.addBoth(results.append)
    for piece in pieces:
        if connection.lost or connection.transport.disconnecting:
            break
        connection.dataReceived(piece)
    if lose and not connection.lost:
        connection.connectionLost(Failure(ConnectionDone()))
    return (results[0] if results else None), client


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, rest = b"", body
    for size in sizes:
        if not rest:
            break
        piece, rest = rest[:size], rest[size:]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    if rest:
        out += b"%X;ext=1\r\n%s\r\n" % (len(rest), rest)
    return out + b"0\r\n\r\n"


@settings(max_examples=200)
@given(
    body=st.binary(max_size=300),
    sizes=st.lists(st.integers(1, 50), max_size=10),
    cuts=st.lists(st.integers(0, 600), max_size=8),
    interim=st.booleans(),
)
def test_a_chunked_answer_in_any_pieces_is_read_whole_and_reused(body, sizes, cuts, interim):
    data = (b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b"") + (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nX-A:  b \r\n\r\n"
        + _chunked(body, sizes)
    )
    result, client = _feed(_split(data, cuts))
    assert isinstance(result, http_client.Response)
    assert (result.status, result.body, result.header(b"x-a")) == (202, body, b"b")
    assert client.idle_connections() == 1


@settings(max_examples=200)
@given(body=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_an_answer_delimited_by_closing_in_any_pieces_is_read_whole(body, cuts):
    data = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n" + body
    assert _feed(_split(data, cuts))[0] is None  # not over until the connection is
    result, client = _feed(_split(data, cuts), lose=True)
    assert isinstance(result, http_client.Response)
    assert (result.status, result.body) == (200, body)
    assert client.idle_connections() == 0


@settings(max_examples=100)
@given(body=st.binary(min_size=1, max_size=100), cut=st.integers(0, 200))
def test_a_chunked_answer_cut_short_fails(body, cut):
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(body, [7])
    cut = min(cut, len(data) - 1)
    result, client = _feed([data[:cut]], lose=True)
    assert isinstance(result.value, http_client.ConnectionClosed)
    assert "during the answer" in str(result.value)
    assert client.idle_connections() == 0


@pytest.mark.parametrize(
    ("answer_bytes", "close"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),  # we said close
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\x00garbage", False),
    ],
)
def test_answers_whose_connection_is_not_reused(answer_bytes, close):
    result, client = _feed([answer_bytes], close=close)
    assert (result.status, result.body) == (200, b"ok")
    assert client.idle_connections() == 0


def test_a_no_content_answer_needs_no_close_and_is_reused():
    result, client = _feed([b"HTTP/1.1 204 No Content\r\n\r\n"])
    assert (result.status, result.body) == (204, b"")
    assert client.idle_connections() == 1


@pytest.mark.parametrize(
    "answer_bytes",
    [
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
    ],
)
def test_malformed_answers_fail_as_such(answer_bytes):
    result, client = _feed([answer_bytes])
    assert isinstance(result.value, http_client.BadResponse)
    assert str(result.value).startswith("malformed answer: ")
    assert client.idle_connections() == 0


@pytest.mark.parametrize(
    "header",
    [
        (b"X-A", b"a\nb"),
        (b"X-A", b"a\rb"),
        (b"X-A", b"a\x00b"),
        (b"X-A", b" a"),
        (b"X-A", b"a "),
        (b"X A", b"a"),
        (b"X-A:", b"a"),
        (b"", b"a"),
        (b"Content-Length", b"1, 2"),
        (b"Transfer-Encoding", b"gzip"),
    ],
)
def test_headers_that_cannot_be_sent_are_named(header):
    with pytest.raises(http_client.InvalidRequest) as raised:
        HTTPClient(Clock()).post(Target.parse("http://h/"), b"", [header], timeout=1)
    assert repr(header[0].decode())[:-1] in str(raised.value)
    assert "has a character not allowed" in str(raised.value)


@pytest.mark.parametrize(
    "headers",
    [[(b"Host", b"other")], [(b"Content-Length", b"5")]],
)
def test_conflicting_headers_cannot_be_sent(headers):
    with pytest.raises(http_client.InvalidRequest, match="headers cannot be sent"):
        HTTPClient(Clock()).post(Target.parse("http://h/"), b"", headers, timeout=1)


def test_the_request_bytes():
    request, close = http_client._request(
        b"/p?q",
        [(b"Host", b"h"), (b"Content-Length", b"3"), ("X-Str", "v  w"), (b"content-length", b"3")],
        b"abc",
    )
    assert (
        request == b"POST /p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-Str: v  w\r\n\r\nabc"
    )
    assert not close
    request, close = http_client._request(
        b"/",
        [(b"Host", b"h"), (b"Transfer-Encoding", b"Chunked"), (b"Connection", b"x, Close")],
        b"ab",
    )
    assert request.endswith(
        b"Transfer-Encoding: chunked\r\nConnection: x, Close\r\n\r\n2\r\nab\r\n0\r\n\r\n"
    )
    assert close
