"""``junebug.api.speedups``: the memoised Content-Type parser answers exactly as
Twisted's own, and the API answers the same with it as without it."""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted
import treq
from hypothesis import example, given, settings
from hypothesis import strategies as st
from klein import Klein
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web import http, server
from twisted.web.server import Site

from junebug.api import speedups
from tests.api.test_messages import telnet_channel
from tests.api.test_schemas import COMMON_SENDS
from tests.helpers import ApiClient, within

# Twisted's own parser, whatever state a test leaves the module in.
TWISTED_PARSER = getattr(http._parseContentType, "__wrapped__", http._parseContentType)


@pytest.fixture
def twisted_parser(monkeypatch):
    """Twisted's parser in place at the start; whatever was in place is put back after."""
    monkeypatch.setattr(http, "_parseContentType", TWISTED_PARSER)
    return TWISTED_PARSER


def outcome(parse, value: bytes):
    try:
        return "answer", parse(value)
    except Exception as exc:  # the same failure, for the same value, counts as the same
        return "raised", type(exc), str(exc)


_KNOWN = [
    "application/json",
    "multipart/form-data",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/mixed",
]
_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-+.!#$&^_", max_size=12)
_LATIN1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=20)


@st.composite
def content_types(draw) -> bytes:
    """Header values shaped like Content-Types, in every case and spacing, with
    parameters (quoted, empty, odd), and now and then something else entirely."""
    kind = draw(st.one_of(st.sampled_from(_KNOWN), st.builds("{}/{}".format, _TOKEN, _TOKEN)))
    kind = "".join(c.upper() if draw(st.booleans()) else c for c in kind)
    params = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["charset", "boundary", "q", "", "Charset"]),
                st.one_of(_TOKEN, _LATIN1.map(lambda s: json.dumps(s, ensure_ascii=False))),
            ),
            max_size=3,
        )
    )
    space = draw(st.sampled_from(["", " ", "  ", "\t"]))
    text = space + kind + space + "".join(f";{space}{k}={v}" for k, v in params)
    return text.encode("latin-1")


def _assert_same_answers(value: bytes) -> None:
    memoised = speedups.memoised_content_type(TWISTED_PARSER)
    expected = outcome(TWISTED_PARSER, value)
    assert outcome(memoised, value) == expected
    assert outcome(memoised, value) == expected  # again, from the cache


@settings(max_examples=400, deadline=None)
@given(content_types())
@example(b"application/json")
@example(b"Multipart/Form-Data; boundary=----x")
@example(b'multipart/form-data;boundary="a;b"')
@example(b"application/x-www-form-urlencoded; charset=utf-8")
@example(b"")
@example(b"garbage")
@example(b"a/b/c")
@example(b"\xff\xfe/x")
@example(b"x\r\ny")  # Twisted's raises: so does ours, every time
def test_memoised_parser_answers_as_twisted_does(value: bytes):
    _assert_same_answers(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_memoised_parser_answers_as_twisted_does_for_any_bytes(value: bytes):
    _assert_same_answers(value)


def test_the_cache_is_bounded_and_skips_long_values():
    memoised = speedups.memoised_content_type(TWISTED_PARSER)
    for n in range(speedups.CONTENT_TYPE_CACHE + 50):
        assert memoised(b"multipart/form-data; boundary=%d" % n) == b"multipart/form-data"
    assert memoised.cache_info().currsize == speedups.CONTENT_TYPE_CACHE
    long = b"application/json; x=" + b"y" * speedups.CONTENT_TYPE_LONGEST
    assert memoised(long) == b"application/json"
    assert memoised.cache_info().currsize == speedups.CONTENT_TYPE_CACHE
    assert memoised(bytearray(b"text/html")) == TWISTED_PARSER(bytearray(b"text/html"))


def test_install_once_and_uninstall(twisted_parser, twisted_date):
    assert speedups.install() is True
    installed = http._parseContentType
    assert installed is not twisted_parser and installed.__wrapped__ is twisted_parser
    assert speedups.install() is True
    assert http._parseContentType is installed  # not wrapped twice
    speedups.uninstall()
    assert http._parseContentType is twisted_parser
    speedups.uninstall()
    assert http._parseContentType is twisted_parser


def test_install_without_the_function_does_nothing(twisted_parser, twisted_date):
    """A Twisted without ``_parseContentType`` (or with something else under its name):
    nothing to speed up, nothing breaks."""
    # twisted.web.http is a deprecation proxy of the module: change the module itself.
    module = http.Request.requestReceived.__globals__
    try:
        del module["_parseContentType"]
        assert speedups.install() is False
        assert "_parseContentType" not in module
        speedups.uninstall()
        module["_parseContentType"] = None
        assert speedups.install() is False
        assert module["_parseContentType"] is None
    finally:
        module["_parseContentType"] = twisted_parser


async def _answer(url: str, body: bytes, content_type: bytes | None):
    headers = {} if content_type is None else {b"Content-Type": [content_type]}
    try:
        response = await within(treq.post(url, data=body, headers=headers))
        content = await within(response.content())
    except Exception as exc:
        return "failed", type(exc).__name__
    return response.code, response.headers.getRawHeaders(b"Content-Type"), content


@pytest_twisted.ensureDeferred
async def test_the_api_answers_the_same_with_the_memoised_parser(
    api, receiver, twisted_parser, twisted_date
):
    channel_id, _ = await telnet_channel(api, receiver)
    url = f"{api.base}/channels/{channel_id}/messages/"
    requests = [
        (b"not json", b"application/json"),
        (b"not json", None),
        (b"not json", b"text/plain; charset=utf-8"),
        (b"not json", b"application/x-www-form-urlencoded"),
        (b"to=x&content=y", b"application/x-www-form-urlencoded"),
        (b"not json", b"multipart/form-data; boundary=xyz"),
        (
            b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--xyz--\r\n",
            b"Multipart/Form-Data; boundary=xyz",
        ),
        (b'{"to": 5, "content": "c"}', b"application/json"),
        (b'{"to": "x", "bogus": 1}', b"APPLICATION/JSON"),
    ]
    without = [await _answer(url, body, ctype) for body, ctype in requests]
    assert speedups.install() is True
    with_speedups = [await _answer(url, body, ctype) for body, ctype in requests]
    assert http._parseContentType.cache_info().hits > 0  # the API did use it
    assert with_speedups == without
    code, content_type, content = with_speedups[0]
    assert (code, content_type) == (400, [b"application/json"])
    assert json.loads(content)["description"] == "json decode error"


# --- the Date header ------------------------------------------------------------------

TWISTED_DATE = getattr(server.datetimeToString, "__wrapped__", server.datetimeToString)


@pytest.fixture
def twisted_date(monkeypatch):
    """Twisted's datetimeToString in place at the start; what was there is put back after."""
    monkeypatch.setattr(server, "datetimeToString", TWISTED_DATE)
    return TWISTED_DATE


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=2**40) | st.integers(0, 2**40), max_size=6))
def test_the_date_is_twisteds_for_the_current_second(moments):
    now = [0.0]
    memoised = speedups.memoised_date(TWISTED_DATE, clock=lambda: now[0])
    for moment in moments:
        now[0] = moment
        assert memoised() == TWISTED_DATE(moment) == TWISTED_DATE(int(moment))
        assert memoised(moment) == TWISTED_DATE(moment)  # an explicit time: passed through
        assert memoised() == TWISTED_DATE(moment)


def test_the_date_is_formatted_once_a_second():
    calls = []

    def counting(seconds=None):
        calls.append(seconds)
        return TWISTED_DATE(seconds)

    now = [100.25]
    memoised = speedups.memoised_date(counting, clock=lambda: now[0])
    assert memoised() == memoised() == TWISTED_DATE(100)
    now[0] = 100.99
    assert memoised() == TWISTED_DATE(100)
    now[0] = 101.0
    assert memoised() == TWISTED_DATE(101)
    assert calls == [100, 101]


def test_the_real_clock_gives_the_time_now(twisted_date):
    memoised = speedups.memoised_date(twisted_date)
    before = twisted_date()
    stamp = memoised()
    after = twisted_date()
    assert stamp in (before, after)


def test_install_and_uninstall_the_date(twisted_parser, twisted_date):
    assert speedups.install() is True
    installed = server.datetimeToString
    assert installed.__wrapped__ is twisted_date
    assert server.Request.process.__globals__["datetimeToString"] is installed
    speedups.install()
    assert server.datetimeToString is installed
    speedups.uninstall()
    assert server.datetimeToString is twisted_date


# --- the API site: every answer byte for byte as without any of the speedups -----------


class _Exchange(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason=None) -> None:
        self.done.callback(self.data)


async def _raw(port: int, request: bytes) -> bytes:
    exchange = _Exchange()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await within(connectProtocol(endpoint, exchange))
    exchange.transport.write(request)
    return await within(exchange.done)


def _normalised(answer: bytes, port: int) -> bytes:
    """An answer without what differs between any two sends: the date, the server's port
    (in redirects), message ids and timestamps (each the same length whatever its
    value)."""
    answer = answer.replace(b":%d/" % port, b":PORT/")
    answer = re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", answer)
    answer = re.sub(rb'"message_id": "[0-9a-f]{32}"', b'"message_id": "-"', answer)
    return re.sub(rb'"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}"', b'"-"', answer)


def _requests(channel_id: str, bare_id: str) -> list[bytes]:
    sends = [
        *(json.dumps(body).encode() for body in COMMON_SENDS),
        b'{"to": "", "content": 5, "priority": 9, "bogus": 1, "event_url": "ftp://{x}"}',
        b'{"to": "x", "content": "c", "priority": 3.0, "validity": 0}',
        b'{"to": "x", "content": "c", "channel_data": {"session_event": "bogus"}}',
        b'{"to": "x"}',
        b'{"content": "c"}',
        b"[]",
        b"null",
        b"",
        b"not json",
        b'{"to": "x", "content": NaN}',
        b'{"to": "x", "content": "c", "validity": 1e999}',
        '{"to": "x", "content": "\u00e9\u20ac"}'.encode(),
    ]
    messages = f"/channels/{channel_id}/messages/"
    requests = [(b"POST", messages, body, b"application/json", b"127.0.0.1") for body in sends] + [
        (b"POST", messages, sends[0], b"text/plain; charset=utf-8", b"127.0.0.1"),
        (b"POST", messages, b"to=x&content=y", b"application/x-www-form-urlencoded", b"h"),
        (b"POST", messages, sends[0], None, b"Example.ORG:8080"),
        (b"POST", messages, sends[0], b"application/json", None),
        (b"POST", messages.upper(), sends[0], b"application/json", b"127.0.0.1"),
        (b"POST", messages.rstrip("/"), sends[0], b"application/json", b"127.0.0.1"),
        (b"POST", "/" + messages, sends[0], b"application/json", b"127.0.0.1"),
        (b"POST", messages.replace("/messages", "//messages"), sends[0], None, b"x"),
        (b"POST", messages.replace("channels", "chan%6Eels"), sends[0], None, b"x"),
        (b"POST", messages + "?x=1", sends[0], b"application/json", b"127.0.0.1"),
        (b"POST", f"/channels/{bare_id}/messages/", sends[0], b"application/json", b"h"),
        (b"POST", "/channels/nope/messages/", sends[0], b"application/json", b"h"),
        (b"GET", messages, b"", None, b"127.0.0.1"),
        (b"PUT", messages, sends[0], b"application/json", b"127.0.0.1"),
        (b"HEAD", messages + "0" * 32, b"", None, b"127.0.0.1"),
        (b"GET", messages + "0" * 32, b"", None, b"127.0.0.1"),
        (b"GET", "/nowhere", b"", None, b"127.0.0.1"),
        (b"GET", "/channels/%ff/messages/", b"", None, b"127.0.0.1"),
        (b"POST", "/channels/", b'{"type": "bogus", "config": {}}', None, b"h"),
        (b"POST", "/channels/", b'{"type": "telnet", "config": {}, "x": 1}', None, b"h"),
        (b"POST", f"/channels/{bare_id}", b'{"callback_secret": "short"}', None, b"h"),
        (b"GET", f"/channels/{bare_id}", b"", None, b"h"),
        (b"GET", f"/channels/{bare_id}/", b"", None, b"h"),
        (b"GET", "/channels/", b"", None, b"h"),
        (b"GET", "/channels", b"", None, b"h"),
        (b"DELETE", "/channels/nope", b"", None, b"h"),
        (b"GET", f"/channels/{bare_id}/logs?n=1", b"", None, b"h"),
        (b"GET", f"/channels/{bare_id}/dead-letters?limit=x", b"", None, b"h"),
        (b"GET", "/routers/nope", b"", None, b"h"),
        (b"get", f"/channels/{bare_id}", b"", None, b"h"),
        (b"OPTIONS", f"/channels/{bare_id}", b"", None, b"h"),
        (b"GET", "/openapi.json", b"", None, b"h"),
    ]
    made = []
    for method, path, body, content_type, host in requests:
        head = [method + b" " + path.encode() + b" HTTP/1.1", b"Connection: close"]
        if host is not None:
            head.append(b"Host: " + host)
        if content_type is not None:
            head.append(b"Content-Type: " + content_type)
        head.append(b"Content-Length: %d" % len(body))
        made.append(b"\r\n".join(head) + b"\r\n\r\n" + body)
    return made


@pytest_twisted.ensureDeferred
async def test_the_api_site_answers_byte_for_byte_as_twisted_and_klein_alone(
    gateway, receiver, twisted_parser, twisted_date, monkeypatch
):
    """The same requests (each twice, so that what is remembered is used), first to the
    API as plain Twisted and Klein serve it with jsonschema validating every body, then
    to the API as ``jb`` serves it (``service.api_site``: the speedups, the remembered
    routing, the validation's fast path): the same answers, byte for byte, but for the
    Date header and the ids and timestamps of the messages sent."""
    from junebug.api import app as app_module
    from junebug.api import schemas
    from junebug.api.app import JunebugApi, RoutingMap
    from junebug.service import api_site

    with monkeypatch.context() as plain:
        plain.setattr(app_module, "_remembering_klein", Klein)
        plain.setattr(schemas, "fast_check", lambda schema: None)
        plain.setattr(JunebugApi, "resource", lambda self: self.app.resource())
        plain_api = JunebugApi(gateway, gateway.backends)
        assert type(plain_api.app.url_map) is not RoutingMap
        plain_port = reactor.listenTCP(0, Site(plain_api.resource()), interface="127.0.0.1")
        try:
            client = ApiClient(f"http://127.0.0.1:{plain_port.getHost().port}")
            channel_id, _ = await telnet_channel(client, receiver)
            code, body = await client.post(
                "/channels/",
                {"type": "telnet", "config": {"twisted_endpoint": "tcp:0:interface=127.0.0.1"}},
            )
            assert code == 201
            requests = _requests(channel_id, body["result"]["id"])
            port = plain_port.getHost().port
            without = [_normalised(await _raw(port, r), port) for r in requests + requests]
        finally:
            await plain_port.stopListening()

    api = JunebugApi(gateway, gateway.backends)
    assert type(api.app.url_map) is RoutingMap
    site = api_site(api)
    assert server.datetimeToString is not twisted_date  # installed
    fast_port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        port = fast_port.getHost().port
        validated = []
        full = schemas.full_schema_errors
        monkeypatch.setattr(
            schemas, "full_schema_errors", lambda s, b: validated.append(b) or full(s, b)
        )
        with_speedups = [_normalised(await _raw(port, r), port) for r in requests + requests]
    finally:
        await fast_port.stopListening()
    for before, after in zip(without, with_speedups, strict=True):
        assert after.decode("latin-1") == before.decode("latin-1")
    assert b"HTTP/1.1 201 Created" in without[0] and b"HTTP/1.1 400" in without[6]
    assert http._parseContentType.cache_info().hits > 0
    assert api.app.url_map._adapters  # routing was remembered (for what went to Klein)
    # Only the bodies the fast path was not sure of went to jsonschema: not the sends.
    assert {"to": "+27820000001", "content": "hello"} not in validated
    assert {"to": "x"} in validated
