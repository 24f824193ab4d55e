"""Priorities, rate limits, queue length, cancellation and validity through the API.

A telnet channel limited to one message an hour keeps everything after its first
message queued, so the tests read a queue that stays put; changing the limit lets
the queue drain. Events are awaited at the test's event_url, never slept for.
"""

from __future__ import annotations

import pytest_twisted

from tests.api.test_messages import connected_user, errors

SLOW = {"rate_limit_count": 1, "rate_limit_window": 3600}


async def events_at(receiver, count: int, path: str = "/ev") -> list:
    """The next ``count`` callbacks POSTed to ``path`` (others are skipped)."""
    found = []
    while len(found) < count:
        request = await receiver.next()
        if request.path == path:
            found.append(request.json)
    return found


async def send(api, channel_id: str, **body):
    code, answer = await api.post(f"/channels/{channel_id}/messages/", body)
    assert code == 201, answer
    return answer["result"]


@pytest_twisted.ensureDeferred
async def test_priority_and_validity_are_validated(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver)
    path = f"/channels/{channel_id}/messages/"
    for bad in (0, 6, 2.5, True):
        code, body = await api.post(path, {"to": user.address, "content": "x", "priority": bad})
        assert code == 400, bad
        assert errors(body).startswith("invalid_body: priority:"), errors(body)
    for bad in (0, -5, "10"):
        code, body = await api.post(path, {"to": user.address, "content": "x", "validity": bad})
        assert code == 400 and "validity:" in errors(body), bad
    # The original took any string and ignored it: unknown strings are sent at priority 1.
    for good in (1, 5, "bulk", "realtime", None, "3", "urgent"):
        code, body = await api.post(path, {"to": user.address, "content": "y", "priority": good})
        assert code == 201, body
        assert await user.next_line() == "y"
    code, body = await api.get(f"/channels/{channel_id}/logs")
    assert any("priority 'urgent'" in entry["message"] for entry in body["result"])


@pytest_twisted.ensureDeferred
async def test_queue_length_by_priority_then_a_new_limit_drains_it_in_order(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver, **SLOW)
    await send(api, channel_id, to=user.address, content="first")
    assert await user.next_line() == "first"  # the hour's only token
    await send(api, channel_id, to=user.address, content="bulk-1")
    await send(api, channel_id, to=user.address, content="rt", priority="realtime")
    await send(api, channel_id, to=user.address, content="bulk-2", priority=1)
    await send(api, channel_id, to=user.address, content="p3", priority=3)

    code, body = await api.get(f"/channels/{channel_id}")
    assert code == 200
    queue = body["result"]["status"]["queue"]
    assert queue["length"] == 4 and queue["waiting"] + queue["buffered"] == 4
    assert queue["by_priority"] == {"1": 2, "2": 0, "3": 1, "4": 0, "5": 1}
    code, body = await api.get(f"/channels/{channel_id}/queue")
    assert code == 200 and body["result"]["length"] == 4

    # A higher limit applies at once: the telnet user stays connected (no restart).
    code, body = await api.post(f"/channels/{channel_id}", {"rate_limit_count": 100})
    assert code == 200, body
    assert [await user.next_line() for _ in range(4)] == ["rt", "p3", "bulk-1", "bulk-2"]
    code, body = await api.get(f"/channels/{channel_id}/queue")
    assert body["result"]["length"] == 0
    assert body["result"]["by_priority"] == dict.fromkeys("12345", 0)


@pytest_twisted.ensureDeferred
async def test_cancel_rejects_every_queued_message_at_its_event_url(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver, **SLOW)
    await send(api, channel_id, to=user.address, content="first")
    assert await user.next_line() == "first"
    queued = [
        await send(
            api,
            channel_id,
            to=user.address,
            content=f"m{n}",
            priority=1 + n % 5,
            event_url=receiver.url("/ev"),
        )
        for n in range(12)
    ]
    code, body = await api.delete(f"/channels/{channel_id}/messages/")
    assert code == 200 and body["description"] == "messages cancelled"
    assert body["result"] == {"cancelled": 12}
    events = await events_at(receiver, 12)
    assert {e["message_id"] for e in events} == {m["message_id"] for m in queued}
    assert {e["event_type"] for e in events} == {"rejected"}
    assert {e["event_details"]["reason"] for e in events} == {"cancelled"}
    code, body = await api.get(f"/channels/{channel_id}/messages/{queued[0]['message_id']}")
    assert body["result"]["last_event_type"] == "rejected"
    code, body = await api.get(f"/channels/{channel_id}/queue")
    assert body["result"]["length"] == 0

    # What is sent after the cancellation is sent as usual.
    await api.post(f"/channels/{channel_id}", {"rate_limit_count": None})
    await send(api, channel_id, to=user.address, content="after")
    assert await user.next_line() == "after"


@pytest_twisted.ensureDeferred
async def test_cancel_errors(api, receiver):
    code, body = await api.delete("/channels/nope/messages/")
    assert code == 404 and body["description"] == "channel not found"
    channel_id, _, _ = await connected_user(api, receiver)
    code, body = await api.delete(f"/channels/{channel_id}/messages/")
    assert code == 200 and body["result"] == {"cancelled": 0}


@pytest_twisted.ensureDeferred
async def test_a_message_past_its_validity_is_rejected_as_expired(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver, **SLOW)
    await send(api, channel_id, to=user.address, content="first")
    assert await user.next_line() == "first"
    doomed = await send(
        api,
        channel_id,
        to=user.address,
        content="soon",
        validity=0.05,
        event_url=receiver.url("/ev"),
    )
    (event,) = await events_at(receiver, 1)
    assert event["message_id"] == doomed["message_id"]
    assert (event["event_type"], event["event_details"]) == ("rejected", {"reason": "expired"})
    code, body = await api.get(f"/channels/{channel_id}/queue")
    assert body["result"]["length"] == 0
