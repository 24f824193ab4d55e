"""CallbackPoster against a real local HTTP server; timeouts on a task.Clock."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from junebug.logs import ChannelLog, read_logs
from junebug.workers.http import CallbackPoster, split_credentials
from tests.helpers import free_port


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
