"""DirectResource: remembered routes answered without Klein's render, Klein's semantics kept.

That the answers are the same byte for byte, for the API's real routes and the odd
requests that must still go through Klein, is tested in test_speedups.py; these tests
hold what that comparison cannot see: which requests skip Klein, the memory, error
handlers, and cancelling the route when the client goes away.
"""

from __future__ import annotations

import pytest_twisted
import txredisapi
from klein import Klein
from klein.resource import KleinResource
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.test.requesthelper import DummyRequest

from junebug.api import direct
from junebug.api.direct import DirectResource

from ..helpers import ApiClient, within


class Boom(Exception):
    pass


#: The /forever route's: (it started, it was cancelled); new for every test.
served_events: list[Deferred] = []


def _app():
    app = Klein()
    calls: list[str] = []

    @app.route("/things/<string:thing>/", methods=["POST"])
    def thing(request, thing):
        calls.append(thing)
        return f"thing {thing}".encode()

    @app.route("/boom", methods=["GET"])
    def boom(request):
        raise Boom("no")

    @app.route("/redis", methods=["GET"])
    async def redis(request):
        raise txredisapi.ConnectionError("away")

    @app.route("/forever", methods=["GET"])
    def forever(request):
        started, cancelled = served_events
        started.callback(None)
        return Deferred(lambda d: cancelled.callback(None))

    answered: list[str] = []

    def on_boom(request, failure):
        answered.append("boom")
        raise ValueError("the handler failed too")

    def on_redis(request, failure):
        answered.append("redis")
        request.setResponseCode(503)
        return b"redis"

    def on_anything(request, failure):
        answered.append(f"anything: {failure.type.__name__}")
        request.setResponseCode(500)
        return b"anything"

    handlers = [((Boom,), on_boom), ((txredisapi.ConnectionError,), on_redis)]
    handlers.append(((Exception,), on_anything))
    return app, handlers, calls, answered


@pytest_twisted.async_yield_fixture
async def served(monkeypatch):
    served_events[:] = [Deferred(), Deferred()]
    app, handlers, calls, answered = _app()
    klein_paths: list[bytes] = []
    render = KleinResource.render

    def counted(self, request):
        klein_paths.append(request.path)
        return render(self, request)

    monkeypatch.setattr(KleinResource, "render", counted)
    resource = DirectResource(app, app.resource(), handlers)
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    client = ApiClient(f"http://127.0.0.1:{port.getHost().port}")
    yield app, resource, client, calls, answered, klein_paths
    await port.stopListening()


async def _status_and_body(client, method, path):
    import treq

    response = await within(treq.request(method, client.base + path, allow_redirects=False))
    return response.code, await within(response.content())


@pytest_twisted.ensureDeferred
async def test_matched_routes_skip_klein_and_the_rest_go_through_it(served):
    app, resource, client, calls, _, klein_paths = served
    assert await _status_and_body(client, "POST", "/things/a/") == (200, b"thing a")
    assert await _status_and_body(client, "POST", "/things/a/") == (200, b"thing a")
    assert klein_paths == []
    # Werkzeug decodes escapes and redirects a missing slash: those stay with Klein.
    assert await _status_and_body(client, "POST", "/things/%61/") == (200, b"thing a")
    assert (await _status_and_body(client, "POST", "/things/a"))[0] == 308
    assert (await _status_and_body(client, "GET", "/things/a/"))[0] == 405
    assert (await _status_and_body(client, "GET", "/nowhere"))[0] == 404
    assert klein_paths == [b"/things/%61/", b"/things/a", b"/things/a/", b"/nowhere"]
    assert calls == ["a", "a", "a"]


@pytest_twisted.ensureDeferred
async def test_a_route_added_later_is_found(served):
    app, resource, client, calls, *_ = served
    assert (await _status_and_body(client, "GET", "/later"))[0] == 404
    app.route("/later", methods=["GET"])(lambda request: b"here now")
    assert await _status_and_body(client, "GET", "/later") == (200, b"here now")


@pytest_twisted.ensureDeferred
async def test_what_is_remembered_is_bounded(served, monkeypatch):
    app, resource, client, *_ = served
    monkeypatch.setattr(direct, "MEMORY", 3)
    for thing in "abcde":
        assert (await _status_and_body(client, "POST", f"/things/{thing}/"))[0] == 200
        assert len(resource._routes) <= 3
    assert (b"POST", b"/things/e/") in resource._routes


@pytest_twisted.ensureDeferred
async def test_failures_go_through_the_error_handlers_in_order(served):
    _, _, client, _, answered, klein_paths = served
    # The first handler matches and fails itself: its failure goes on to the rest.
    assert await _status_and_body(client, "GET", "/boom") == (500, b"anything")
    assert answered == ["boom", "anything: ValueError"]
    answered.clear()
    assert await _status_and_body(client, "GET", "/redis") == (503, b"redis")
    assert answered == ["redis"]
    assert klein_paths == []


def test_a_request_whose_connection_is_lost_cancels_the_route():
    served_events[:] = [Deferred(), Deferred()]
    app, handlers, _, answered = _app()
    started, cancelled = served_events
    resource = DirectResource(app, app.resource(), handlers)
    request = DummyRequest([b"forever"])
    request.method, request.path = b"GET", b"/forever"
    request.isSecure = lambda: False  # what a real request has and DummyRequest lacks
    assert resource.render(request) is NOT_DONE_YET
    assert started.called and not cancelled.called
    request.processingFailed(Failure(ConnectionLost()))  # what a lost connection does
    assert cancelled.called
    assert answered == [] and request.written == []  # nothing answered to nobody


async def _raw_status(port: int, request: bytes) -> bytes:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    class Exchange(Protocol):
        def __init__(self) -> None:
            self.data = b""
            self.done = Deferred()

        def dataReceived(self, data: bytes) -> None:
            self.data += data

        def connectionLost(self, reason=None) -> None:
            self.done.callback(self.data)

    exchange = Exchange()
    await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), exchange))
    exchange.transport.write(request)
    return (await within(exchange.done)).split(b"\r\n", 1)[0]


@pytest_twisted.ensureDeferred
async def test_a_host_klein_would_refuse_goes_to_klein(served):
    _, _, client, calls, _, klein_paths = served
    port = int(client.base.rsplit(":", 1)[1])
    request = b"POST /things/a/ HTTP/1.1\r\nConnection: close\r\nHost: %s\r\n\r\n"
    assert await _raw_status(port, request % b"example.org") == b"HTTP/1.1 200 OK"
    assert klein_paths == []
    # Not UTF-8: Klein answers 400. Not a name werkzeug accepts: twisted.web's 500.
    assert (await _raw_status(port, request % b"\xff\xfe")).startswith(b"HTTP/1.1 400")
    assert (await _raw_status(port, request % b"a..b")).startswith(b"HTTP/1.1 500")
    assert klein_paths == [b"/things/a/", b"/things/a/"]
    assert calls == ["a"]


class _StrictRequest(DummyRequest):
    """Refuses a write after finish, as twisted.web's Request does."""

    def write(self, data: bytes) -> None:
        if self.finished:
            raise RuntimeError("write after finish")
        super().write(data)


def test_a_failure_writing_the_answer_is_logged():
    from twisted.logger import globalLogPublisher

    app = Klein()

    @app.route("/done", methods=["GET"])
    def done(request):
        request.finish()  # finished by the route itself: writing the answer then fails
        return b"too late"

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        resource = DirectResource(app, app.resource(), [])
        request = _StrictRequest([b"done"])
        request.method, request.path = b"GET", b"/done"
        request.isSecure = lambda: False
        resource.render(request)
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [e for e in events if e.get("log_format") == "Unhandled error writing an answer"]
    assert len(logged) == 1 and logged[0]["log_failure"].check(Exception)
