"""The getting-started walkthrough of spec 1.2, against any running API."""

from __future__ import annotations

from tests.helpers import ApiClient, TelnetUser, free_port


async def walkthrough(api: ApiClient, receiver, interface: str | None = None) -> tuple[str, int]:
    """Create a telnet channel, connect, send, read the status, type, reply, hang up.

    Returns (channel id, telnet port)."""
    telnet_port = free_port()
    code, body = await api.post(
        "/channels/",
        {
            "type": "telnet",
            "label": "My First Channel",
            "mo_url": receiver.url("/mo"),
            "config": {
                "twisted_endpoint": f"tcp:{telnet_port}"
                + (f":interface={interface}" if interface else "")
            },
        },
    )
    assert code == 201, body
    channel_id = body["result"]["id"]

    user = await TelnetUser().connect(telnet_port)
    start = (await receiver.next()).json
    assert start["channel_data"] == {"session_event": "new"}
    assert start["from"] == user.address and start["channel_id"] == channel_id

    code, body = await api.post(
        f"/channels/{channel_id}/messages/",
        {"to": user.address, "content": "hello", "event_url": receiver.url("/event")},
    )
    assert code == 201, body
    message_id = body["result"]["message_id"]
    assert await user.next_line() == "hello"
    assert (await receiver.next()).json["event_type"] == "submitted"
    code, body = await api.get(f"/channels/{channel_id}/messages/{message_id}")
    assert body["result"]["last_event_type"] == "submitted"

    user.type("Hi there")
    inbound = (await receiver.next()).json
    assert (inbound["content"], inbound["channel_data"]) == (
        "Hi there",
        {"session_event": "resume"},
    )
    code, body = await api.post(
        f"/channels/{channel_id}/messages/",
        {"reply_to": inbound["message_id"], "content": "hello again"},
    )
    assert code == 201, body
    assert await user.next_line() == "hello again"
    await user.hang_up()
    assert (await receiver.next()).json["channel_data"]["session_event"] == "close"
    return channel_id, telnet_port
