"""--sentry-dsn: errors reach a (local, stand-in) Sentry, tagged with the channel id."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import pytest_twisted

from tests.helpers import ApiClient, JbProcess, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def sentry_events(request) -> list[dict]:
    """The events in one Sentry envelope POST."""
    body = request.body
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    lines = [line for line in body.split(b"\n") if line.strip()]
    events = []
    # Envelope: a header line, then (item header, item payload) pairs.
    for header, payload in zip(lines[1::2], lines[2::2], strict=False):
        if json.loads(header).get("type") == "event":
            events.append(json.loads(payload))
    return events


@pytest_twisted.ensureDeferred
async def test_channel_errors_reach_sentry_tagged_with_the_channel(tmp_path, receiver):
    port = free_port()
    dsn = receiver.url("/").replace("http://", "http://publickey@") + "42"
    jb = JbProcess(
        "-p",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "-lp",
        str(tmp_path / "logs"),
        "--sentry-dsn",
        dsn,
        "--channels",
        "failing:tests.plugin_samples.FailingChannel",
        cwd=str(tmp_path),
        env={"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    await jb.start()
    try:
        api = ApiClient(f"http://127.0.0.1:{port}")
        code, body = await api.post(
            "/channels/", {"type": "failing", "config": {}, "mo_url": "http://127.0.0.1:9/"}
        )
        assert code == 201, body
        channel_id = body["result"]["id"]
        code, body = await api.post(
            f"/channels/{channel_id}/messages/", {"to": "a", "content": "x"}
        )
        assert code == 201
        while True:
            request = await receiver.next(seconds=20)
            assert request.path == "/api/42/envelope/"
            events = sentry_events(request)
            if events:
                break
        [event] = events
        assert event["tags"]["channel_id"] == channel_id
        exception = event["exception"]["values"][-1]
        assert exception["type"] == "ZeroDivisionError"
        assert exception["value"] == "the wire is on fire"
        assert "publickey" not in json.dumps(event)
    finally:
        await jb.stop()


def test_sentry_events_are_scrubbed_of_secrets():
    from junebug.cli import scrub_sentry_event

    event = {
        "exception": {"values": [{"type": "E", "value": "POST to http://u:pw1@h failed"}]},
        "extra": {"password": "pw2", "nested": [{"token": "pw3"}]},
    }
    scrubbed = str(scrub_sentry_event(event))
    for secret in ("pw1", "pw2", "pw3"):
        assert secret not in scrubbed
    assert "http://u:***@h" in scrubbed


def test_forwarded_failures_keep_their_class_name_but_not_their_secrets():
    from junebug.logs import redacted_failure

    try:
        raise ConnectionError("cannot reach http://app:hunter2@example.org/mo")
    except ConnectionError as exc:
        masked = redacted_failure(exc)
    assert masked.type.__name__ == "ConnectionError"
    assert "hunter2" not in str(masked.value) and "app:***@example.org" in str(masked.value)
    assert masked.getTracebackObject() is not None
    plain = redacted_failure(ValueError("nothing secret"))
    assert plain.type is ValueError
