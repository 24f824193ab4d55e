"""The getting-started walkthrough (spec 1.2) against the API in-process."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import TelnetUser, free_port


@pytest_twisted.ensureDeferred
async def test_walkthrough(api, receiver):
    port = free_port()
    code, body = await api.post(
        "/channels/",
        {
            "type": "telnet",
            "label": "My First Channel",
            "mo_url": receiver.url("/mo"),
            "config": {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1"},
        },
    )
    assert code == 201, body
    assert body["description"] == "channel created"
    channel = body["result"]
    assert channel["label"] == "My First Channel"
    assert channel["status"]["inbound_message_rate"] == 0
    channel_id = channel["id"]

    user = await TelnetUser().connect(port)
    session_start = (await receiver.next()).json
    assert session_start["channel_data"] == {"session_event": "new"}
    assert session_start["from"] == user.address
    assert session_start["to"] == f"127.0.0.1:{port}"
    assert session_start["content"] is None
    assert session_start["channel_id"] == channel_id

    code, body = await api.post(
        f"/channels/{channel_id}/messages/",
        {"to": user.address, "content": "hello", "event_url": receiver.url("/event")},
    )
    assert code == 201, body
    sent = body["result"]
    assert await user.next_line() == "hello"
    event = await receiver.next()
    assert event.path == "/event"
    assert event.json["event_type"] == "submitted"
    assert event.json["message_id"] == sent["message_id"]

    code, body = await api.get(f"/channels/{channel_id}/messages/{sent['message_id']}")
    assert code == 200
    assert body["result"]["last_event_type"] == "submitted"
    assert [e["event_type"] for e in body["result"]["events"]] == ["submitted"]

    user.type("Hi there")
    inbound = (await receiver.next()).json
    assert inbound["content"] == "Hi there"
    assert inbound["channel_data"] == {"session_event": "resume"}

    code, body = await api.post(
        f"/channels/{channel_id}/messages/",
        {"reply_to": inbound["message_id"], "content": "hello again"},
    )
    assert code == 201, body
    assert body["result"]["reply_to"] == inbound["message_id"]
    assert body["result"]["to"] == user.address
    assert await user.next_line() == "hello again"

    await user.hang_up()
    close = (await receiver.next()).json
    assert close["channel_data"] == {"session_event": "close"}
    assert close["content"] is None
