"""Sending, replying and reading message status through the API; callbacks."""

from __future__ import annotations

import base64

import attrs
import pytest_twisted

from junebug.logs import read_logs
from tests.helpers import TelnetUser, free_port


async def telnet_channel(api, receiver, **extra) -> tuple[str, int]:
    port = free_port()
    body = {
        "type": "telnet",
        "config": {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1"},
        "mo_url": receiver.url("/mo"),
        **extra,
    }
    code, result = await api.post("/channels/", body)
    assert code == 201, result
    return result["result"]["id"], port


async def connected_user(api, receiver, **extra):
    channel_id, port = await telnet_channel(api, receiver, **extra)
    user = await TelnetUser().connect(port)
    start = await receiver.next()
    return channel_id, user, start


def errors(body) -> str:
    return " | ".join(f"{e['type']}: {e['message']}" for e in body["result"]["errors"])


@pytest_twisted.ensureDeferred
async def test_send_needs_a_destination(api):
    port = free_port()
    code, body = await api.post(
        "/channels/",
        {"type": "telnet", "config": {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1"}},
    )
    assert code == 201  # a channel without mo_url or amqp_queue can exist (for routers)
    channel_id = body["result"]["id"]
    code, body = await api.post(f"/channels/{channel_id}/messages/", {"to": "x", "content": "c"})
    assert code == 400 and "mo_url" in errors(body)
    code, body = await api.get(f"/channels/{channel_id}/messages/abc")
    assert code == 400 and "mo_url" in errors(body)


@pytest_twisted.ensureDeferred
async def test_send_validation(api, receiver):
    channel_id, _ = await telnet_channel(api, receiver)
    path = f"/channels/{channel_id}/messages/"
    code, body = await api.post(path, {"to": "x"})
    assert code == 400 and "'content' is a required property" in errors(body)
    code, body = await api.post(path, {"content": "c"})
    assert code == 400 and '"to" or "reply_to"' in errors(body)
    code, body = await api.post(path, {"to": "x", "content": "c", "bogus": 1})
    assert code == 400 and "bogus" in errors(body)
    code, body = await api.post(path, {"to": 5, "content": "c"})
    assert code == 400 and errors(body).startswith("invalid_body: to:")
    code, body = await api.post(path, raw=b"not json")
    assert code == 400 and body["description"] == "json decode error"
    code, body = await api.post("/channels/missing/messages/", {"to": "x", "content": "c"})
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_null_content_is_sent_not_a_500(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver, character_limit=3)
    code, body = await api.post(
        f"/channels/{channel_id}/messages/", {"to": user.address, "content": None}
    )
    assert code == 201, body
    assert await user.next_line() == ""


@pytest_twisted.ensureDeferred
async def test_character_limit(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver, character_limit=5)
    path = f"/channels/{channel_id}/messages/"
    code, body = await api.post(path, {"to": user.address, "content": "toolong"})
    assert code == 400 and body["description"] == "message too long"
    assert "character limit of 5" in errors(body)
    code, body = await api.post(path, {"to": user.address, "content": "short"})
    assert code == 201
    assert await user.next_line() == "short"


@pytest_twisted.ensureDeferred
async def test_reply_to_unknown_message(api, receiver):
    channel_id, _, _ = await connected_user(api, receiver)
    code, body = await api.post(
        f"/channels/{channel_id}/messages/", {"reply_to": "nope", "content": "c", "to": "x"}
    )
    assert code == 400 and body["description"] == "message not found"
    assert "nope" in errors(body)


@pytest_twisted.ensureDeferred
async def test_expired_reply_falls_back_to_to_when_allowed(api, receiver, gateway):
    gateway.backends.config = attrs.evolve(gateway.backends.config, allow_expired_replies=True)
    channel_id, user, _ = await connected_user(api, receiver)
    code, body = await api.post(
        f"/channels/{channel_id}/messages/",
        {"reply_to": "expired", "to": user.address, "content": "fallback"},
    )
    assert code == 201, body
    assert body["result"]["reply_to"] is None
    assert await user.next_line() == "fallback"


@pytest_twisted.ensureDeferred
async def test_reply_carries_channel_data_and_can_close_the_session(api, receiver):
    channel_id, user, start = await connected_user(api, receiver)
    code, body = await api.post(
        f"/channels/{channel_id}/messages/",
        {
            "reply_to": start.json["message_id"],
            "content": "bye",
            "channel_data": {"continue_session": False, "extra": 1},
        },
    )
    assert code == 201, body
    assert body["result"]["channel_data"] == {"extra": 1, "session_event": "close"}
    assert await user.next_line() == "bye"
    close = await receiver.next()
    assert close.json["channel_data"]["session_event"] == "close"


@pytest_twisted.ensureDeferred
async def test_message_status_lists_events_and_unknown_is_404(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver)
    code, body = await api.post(
        f"/channels/{channel_id}/messages/",
        {"to": "192.0.2.1:1", "content": "lost", "event_url": receiver.url("/ev")},
    )
    message_id = body["result"]["message_id"]
    event = await receiver.next()
    assert event.json["event_type"] == "rejected"
    assert event.json["event_details"] == {"reason": "Unknown address."}
    assert event.json["channel_id"] == channel_id
    code, body = await api.get(f"/channels/{channel_id}/messages/{message_id}")
    assert code == 200
    result = body["result"]
    assert result["id"] == message_id and result["last_event_type"] == "rejected"
    assert result["last_event_timestamp"] == result["events"][0]["timestamp"]
    code, body = await api.get(f"/channels/{channel_id}/messages/never-sent")
    assert code == 404 and body["result"]["errors"][0]["type"] == "MessageNotFound"


@pytest_twisted.ensureDeferred
async def test_callbacks_carry_tokens_and_url_credentials(api, receiver):
    mo_url = receiver.url("/mo").replace("http://", "http://app:s3cret@")
    channel_id, user, start = await connected_user(api, receiver, mo_url=mo_url)
    assert start.headers["authorization"] == "Basic " + base64.b64encode(b"app:s3cret").decode()
    assert start.path == "/mo"
    code, _ = await api.post(f"/channels/{channel_id}", {"mo_url_auth_token": "mo-token"})
    user.type("with token")
    assert (await receiver.next()).headers["authorization"] == "Token mo-token"
    await api.post(
        f"/channels/{channel_id}/messages/",
        {
            "to": user.address,
            "content": "hi",
            "event_url": receiver.url("/ev").replace("http://", "http://ev:pw@"),
        },
    )
    event = await receiver.next()
    expected = "Basic " + base64.b64encode(b"ev:pw").decode()
    assert event.headers["authorization"] == expected
    assert event.headers["content-type"] == "application/json"


@pytest_twisted.ensureDeferred
async def test_event_auth_token(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver)
    await api.post(
        f"/channels/{channel_id}/messages/",
        {
            "to": user.address,
            "content": "hi",
            "event_url": receiver.url("/ev"),
            "event_auth_token": "ev-token",
        },
    )
    event = await receiver.next()
    assert event.headers["authorization"] == "Token ev-token"


@pytest_twisted.ensureDeferred
async def test_failing_receiver_is_logged_and_next_message_still_delivered(api, receiver, config):
    receiver.codes = [500]
    channel_id, user, first = await connected_user(api, receiver)
    user.type("second")
    # The failed session start is retried and "second" is delivered too, in either order
    # ("second" may have been sent while the first attempt was still in flight).
    retried, second = sorted(
        [await receiver.next(), await receiver.next()],
        key=lambda request: request.json["content"] is not None,
    )
    assert second.json["content"] == "second"
    assert retried.json["message_id"] == first.json["message_id"]
    assert retried.headers["x-junebug-attempt"] == "2"
    assert retried.headers["x-junebug-callback-id"] == first.headers["x-junebug-callback-id"]
    logs = read_logs(config.logging_path, channel_id, 50, message_id=first.json["message_id"])
    assert any("answered 500" in entry["message"] for entry in logs)


@pytest_twisted.ensureDeferred
async def test_unreachable_receiver_is_logged_without_secrets(api, receiver, config):
    dead = f"http://user:hunter2@127.0.0.1:{free_port()}/mo"
    channel_id, port = await telnet_channel(api, receiver, mo_url=dead)
    user = await TelnetUser().connect(port)
    code, body = await api.post(f"/channels/{channel_id}", {"mo_url": receiver.url("/mo")})
    assert code == 200
    user.type("after fix")
    assert (await receiver.next()).json["content"] == "after fix"
    with open(f"{config.logging_path}/{channel_id}") as log_file:
        text = log_file.read()
    assert "failed" in text and "ConnectionRefused" in text
    assert "hunter2" not in text


@pytest_twisted.ensureDeferred
async def test_bad_channel_data_is_a_400_naming_it(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver)
    path = f"/channels/{channel_id}/messages/"
    for channel_data, field in (
        ({"session_event": "bogus"}, "channel_data.session_event"),
        ({"continue_session": "yes"}, "channel_data.continue_session"),
    ):
        code, body = await api.post(
            path, {"to": user.address, "content": "x", "channel_data": channel_data}
        )
        assert code == 400, body
        assert field in errors(body)


@pytest_twisted.ensureDeferred
async def test_logs_of_one_message(api, receiver, config):
    channel_id, user, _ = await connected_user(api, receiver)
    code, body = await api.post(
        f"/channels/{channel_id}/messages/", {"to": user.address, "content": "hi"}
    )
    message_id = body["result"]["message_id"]
    assert await user.next_line() == "hi"
    code, body = await api.get(f"/channels/{channel_id}/messages/{message_id}")
    code, body = await api.get(f"/channels/{channel_id}/logs?message_id={message_id}")
    assert code == 200
    lines = [entry["message"] for entry in body["result"]]
    assert any(line.startswith("Sending to") for line in lines)
    assert all(entry["message_id"] == message_id for entry in body["result"])


def test_api_priority_values():
    from junebug.workers.outbound import priority_value

    assert [priority_value(v) for v in (None, 1, 5, "2", " Realtime ", "bulk", "high")] == [
        1,
        1,
        5,
        2,
        5,
        1,
        1,
    ]
