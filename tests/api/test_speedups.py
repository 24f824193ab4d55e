"""``junebug.api.speedups``: the memoised Content-Type parser answers exactly as
Twisted's own, and the API answers the same with it as without it."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.web import http

from junebug.api import speedups
from tests.api.test_messages import telnet_channel
from tests.helpers import within

# Twisted's own parser, whatever state a test leaves the module in.
TWISTED_PARSER = getattr(http._parseContentType, "__wrapped__", http._parseContentType)


@pytest.fixture
def twisted_parser():
    """Twisted's parser in place at the start; whatever was in place is put back after."""
    before = http._parseContentType
    http._parseContentType = TWISTED_PARSER
    yield TWISTED_PARSER
    http._parseContentType = before


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


def test_install_once_and_uninstall(twisted_parser):
    assert speedups.install() is True
    installed = http._parseContentType
    assert installed is not twisted_parser and installed.__wrapped__ is twisted_parser
    assert speedups.install() is True
    assert http._parseContentType is installed  # not wrapped twice
    speedups.uninstall()
    assert http._parseContentType is twisted_parser
    speedups.uninstall()
    assert http._parseContentType is twisted_parser


def test_install_without_the_function_does_nothing(twisted_parser):
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
async def test_the_api_answers_the_same_with_the_memoised_parser(api, receiver, twisted_parser):
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
