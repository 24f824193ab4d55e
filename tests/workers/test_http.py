"""CallbackPoster against real local HTTP servers; timeouts on a task.Clock.

The connection pool itself is tested in test_http_client.py."""

from __future__ import annotations

import base64
import email.utils
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from junebug.logs import ChannelLog, read_logs
from junebug.workers import http_client
from junebug.workers.http import CallbackPoster, Outcome, split_credentials
from tests.helpers import free_port, within


def test_split_credentials():
    assert split_credentials("http://u:p@h:81/x?y=1") == ("http://h:81/x?y=1", ("u", "p"))
    assert split_credentials("https://h/x") == ("https://h/x", None)
    assert split_credentials("http://u@[::1]/x") == ("http://[::1]/x", ("u", ""))


@pytest_twisted.ensureDeferred
async def test_post_sends_json_and_reports_success(receiver, tmp_path):
    poster = CallbackPoster(reactor)
    log = ChannelLog("c", str(tmp_path))
    try:
        assert await poster.post(receiver.url("/x"), {"a": "é"}, log=log) is True
        request = await receiver.next()
        assert (request.method, request.path, request.json) == ("POST", "/x", {"a": "é"})
        receiver.codes = [404]
        assert await poster.post(receiver.url("/x"), {}, log=log, message_id="m") is False
        assert "answered 404" in read_logs(str(tmp_path), "c", 1, message_id="m")[0]["message"]
    finally:
        await poster.close()


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_logged_not_raised(tmp_path):
    poster = CallbackPoster(reactor)
    log = ChannelLog("c", str(tmp_path))
    try:
        url = f"http://127.0.0.1:{free_port()}/"
        assert await poster.post(url, {}, log=log) is False
        assert "ConnectionRefused" in read_logs(str(tmp_path), "c", 1)[0]["message"]
    finally:
        await poster.close()


@pytest_twisted.ensureDeferred
async def test_a_receiver_that_never_answers_times_out(receiver, tmp_path):
    clock = Clock()
    poster = CallbackPoster(reactor, timeout=10, clock=clock)
    log = ChannelLog("c", str(tmp_path))
    receiver.hold = True
    try:
        outcome = Deferred.fromCoroutine(poster.post(receiver.url("/"), {}, log=log))
        await receiver.next()  # the request arrived and is being held
        clock.advance(9)
        assert not outcome.called
        clock.advance(1)
        assert await outcome is False
        assert "timed out after 10s" in read_logs(str(tmp_path), "c", 1)[0]["message"]
        assert clock.getDelayedCalls() == []
    finally:
        await poster.close()


@pytest_twisted.ensureDeferred
async def test_a_url_that_cannot_be_parsed_is_hopeless_not_raised(tmp_path):
    from junebug.workers.http import mask_credentials

    poster = CallbackPoster(reactor)
    try:
        for url in ("http://u:pw@[::1/mo", "http://127.0.0.1:99999/", "http:///no-host"):
            outcome = await poster.attempt(url, b"{}")
            assert not outcome.ok and outcome.hopeless and not outcome.retryable
            assert "cannot be sent" in outcome.error
        assert mask_credentials("http://u:pw@[::1/mo") == "http://u:***@[::1/mo"
    finally:
        await poster.close()


class _Answers(Resource):
    """Answers each POST with the next (code, headers, body) of ``answers``."""

    isLeaf = True

    def __init__(self, answers: list[tuple[int, dict[bytes, bytes], bytes]]) -> None:
        super().__init__()
        self.answers = answers

    def render_POST(self, request: Any) -> bytes:
        code, headers, body = self.answers.pop(0)
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


class _CountingSite(Site):
    noisy = False
    accepted = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.accepted += 1
        return super().buildProtocol(addr)


@pytest_twisted.async_yield_fixture
async def web():
    """A twisted.web server answering as its ``answers`` say; counts connections."""
    site = _CountingSite(_Answers([]))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    site.url = f"http://127.0.0.1:{port.getHost().port}/cb"
    yield site
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_sequential_posts_reuse_one_connection(web):
    clock = Clock()
    poster = CallbackPoster(reactor, clock=clock)
    web.resource.answers = [(200, {}, b"")] * 3 + [(204, {}, b"")]
    try:
        for _ in range(4):
            assert (await within(Deferred.fromCoroutine(poster.attempt(web.url, b"{}")))).ok
        assert web.accepted == 1
        assert clock.getDelayedCalls() == []
    finally:
        await poster.close()


@pytest_twisted.ensureDeferred
async def test_answers_become_outcomes(web):
    clock = Clock()
    clock.advance(1_000_000)
    later = email.utils.formatdate(1_000_000 + 90, usegmt=True).encode()
    web.resource.answers = [
        (500, {}, b"x" * 400 + "é".encode() * 200),
        (429, {b"Retry-After": b"30"}, b"slow down"),
        (503, {b"Retry-After": later}, b""),
        (429, {}, b""),
        (404, {b"Retry-After": b"30"}, b"no"),
        (302, {b"Location": b"/elsewhere"}, b""),
    ]
    poster = CallbackPoster(reactor, clock=clock)
    try:
        outcomes = [
            await within(Deferred.fromCoroutine(poster.attempt(web.url, b"{}"))) for _ in range(6)
        ]
    finally:
        await poster.close()
    assert outcomes[0] == Outcome(False, 500, error="answered 500: " + "x" * 400 + "é" * 50)
    assert outcomes[0].retryable
    assert outcomes[1] == Outcome(False, 429, error="answered 429: slow down", retry_after=30)
    assert outcomes[2] == Outcome(False, 503, error="answered 503: ", retry_after=90)
    assert outcomes[3].retry_after is None and outcomes[3].retryable
    assert outcomes[4] == Outcome(False, 404, error="answered 404: no")
    assert not outcomes[4].retryable and not outcomes[5].retryable
    assert outcomes[5].status == 302  # redirects are not followed
    assert web.accepted == 1


@pytest_twisted.ensureDeferred
async def test_what_a_callback_sends(receiver):
    poster = CallbackPoster(reactor)
    url = receiver.url("/mo?a=1").replace("http://", "http://user:pw@")
    extra = {b"X-Junebug-Callback-Id": [b"abc"], b"X-Junebug-Attempt": [b"2"]}
    try:
        assert (await poster.attempt(url, b'{"a": 1}', headers=extra)).ok
        request = await receiver.next()
        port = receiver.port.getHost().port
        assert request.headers == {
            "host": f"127.0.0.1:{port}",
            "user-agent": http_client.USER_AGENT.decode(),
            "content-length": "8",
            "content-type": "application/json",
            "x-junebug-callback-id": "abc",
            "x-junebug-attempt": "2",
            "authorization": "Basic " + base64.b64encode(b"user:pw").decode(),
        }
        assert (request.method, request.path, request.body) == ("POST", "/mo?a=1", b'{"a": 1}')
        assert (await poster.attempt(url, b"{}", token="t", headers=extra)).ok
        assert (await receiver.next()).headers["authorization"] == "Token t"
    finally:
        await poster.close()


@pytest_twisted.ensureDeferred
async def test_transport_failures_become_outcomes(tmp_path):
    from tests.workers.test_http_client import RawServer

    server = RawServer().start()
    poster = CallbackPoster(reactor)
    try:
        refused = await poster.attempt(f"http://127.0.0.1:{free_port()}/", b"{}")
        assert refused.error.startswith("failed: ConnectionRefusedError: ")
        assert refused.status is None and refused.retryable
        server.respond = lambda request: b"HTTP/1.1 2OO OK\r\n\r\n"
        bad = await poster.attempt(server.url(), b"{}")
        assert bad.error.startswith("failed: BadResponse: malformed answer: ")
        assert bad.retryable
        server.respond = lambda request: request.connection.transport.loseConnection()
        closed = await poster.attempt(server.url(), b"{}")
        assert closed == Outcome(
            False, error="failed: ConnectionClosed: the connection closed before an answer"
        )
        secret = await poster.attempt(server.url(), b"{}", token="s3cret\nX-Evil: 1")
        assert secret.hopeless and "s3cret" not in secret.error
        assert secret.error.startswith("cannot be sent: header 'Authorization'")
    finally:
        await poster.close()
        await server.stop()
