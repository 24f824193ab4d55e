"""Callback URLs are parsed once per URL string (``workers.http._prepare``), and what
is sent is the same as parsing them on every POST."""

from __future__ import annotations

import base64

import pytest_twisted
from twisted.internet import reactor

from junebug.workers import http
from junebug.workers.http import CallbackPoster


def test_a_url_is_parsed_once_and_the_cache_is_bounded():
    http._prepare.cache_clear()
    first = http._prepare("http://u:p%40ss@127.0.0.1:81/x?y=1")
    assert http._prepare("http://u:p%40ss@127.0.0.1:81/x?y=1") is first
    assert first.request.url == "http://127.0.0.1:81/x?y=1"
    assert (first.request.host, first.request.port) == ("127.0.0.1", 81)
    ipv6 = http._prepare("http://[::1]:81/x").request
    assert (ipv6.url, ipv6.host, ipv6.family) == ("http://[::1]:81/x", "::1", 6)
    assert first.basic_auth == b"Basic " + base64.b64encode(b"u:p%40ss")
    assert http._prepare("https://h/x").basic_auth is None
    bad = http._prepare("http://127.0.0.1:99999/")
    assert bad.request is None and bad.error
    assert http._prepare.cache_info().maxsize == http.PREPARED_URLS


@pytest_twisted.ensureDeferred
async def test_url_credentials_become_basic_auth_and_a_token_wins(receiver):
    poster = CallbackPoster(reactor)
    url = receiver.url("/mo?a=1").replace("http://", "http://user:pw@")
    try:
        for _ in range(2):  # the second POST uses the cached parse
            assert (await poster.attempt(url, b"{}")).ok
            request = await receiver.next()
            assert request.path == "/mo?a=1"
            assert request.headers["authorization"] == "Basic " + base64.b64encode(
                b"user:pw"
            ).decode("ascii")
        assert (await poster.attempt(url, b"{}", token="t")).ok
        assert (await receiver.next()).headers["authorization"] == "Token t"
        assert (await poster.attempt(receiver.url("/plain"), b"{}")).ok
        assert "authorization" not in (await receiver.next()).headers
    finally:
        await poster.close()
