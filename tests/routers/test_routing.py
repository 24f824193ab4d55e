"""Real traffic through routers: telnet users dial (the channel's ``to_addr``), the
router picks destinations, destinations reply and send, events find their sender."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from junebug.logs import read_logs
from junebug.store.queues import QueueStore
from junebug.workers.outbound import DEFAULT_PRIORITY
from tests.helpers import TelnetUser, within
from tests.routers.support import (
    dial,
    errors,
    exactly,
    make_destination,
    make_router,
    patch,
    routed_channel,
    subcode,
)


async def settle(receiver: Any, seconds: float = 0.3) -> None:
    """Give stray callbacks a moment to arrive (there should be none)."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


def paths(receiver: Any) -> list[str]:
    return [request.path for request in receiver.received]


async def one_destination(rapi: Any, receiver: Any) -> tuple[str, str, str, TelnetUser]:
    """A routed channel, its router and one destination taking everything, and a telnet
    user dialled in (the session's first message to the destination already taken)."""
    channel_id, port = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    destination_id = await make_destination(
        rapi, router_id, {"regular_expression": "."}, mo_url=receiver.url("/mo")
    )
    user = await TelnetUser().connect(port)
    await receiver.next()
    return channel_id, router_id, destination_id, user


@pytest_twisted.ensureDeferred
async def test_each_subcode_reaches_its_destination_and_the_rest_the_default(rapi, receiver):
    channel_id, port = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    for n in (1, 2):
        await make_destination(
            rapi,
            router_id,
            {"regular_expression": exactly(subcode(n))},
            mo_url=receiver.url(f"/app{n}"),
        )
    await make_destination(
        rapi,
        router_id,
        {"regular_expression": "^nothing$", "default": True},
        mo_url=receiver.url("/default"),
    )

    user = await TelnetUser().connect(port)
    first = await receiver.next()
    assert first.path == "/app1"
    assert first.json["to"] == subcode(1) and first.json["channel_id"] == channel_id
    assert first.json["channel_data"]["session_event"] == "new"
    user.type("hello one")
    said = await receiver.next()
    assert (said.path, said.json["content"]) == ("/app1", "hello one"), [
        (r.path, r.json) for r in receiver.received
    ]

    # The channel's config changes (its transport restarts, the user is cut off):
    # the router keeps routing.
    await dial(rapi, channel_id, port, subcode(2))
    close = await receiver.next()
    assert (close.path, close.json["channel_data"]["session_event"]) == ("/app1", "close")
    user = await TelnetUser().connect(port)
    assert (await receiver.next()).path == "/app2"

    await dial(rapi, channel_id, port, subcode(9))
    assert (await receiver.next()).path == "/app2"  # the close of the session
    user = await TelnetUser().connect(port)
    unmatched = await receiver.next()
    assert (unmatched.path, unmatched.json["to"]) == ("/default", subcode(9))
    await user.hang_up()
    assert (await receiver.next()).path == "/default"
    await settle(receiver)
    assert paths(receiver) == ["/app1", "/app1", "/app1", "/app2", "/app2", "/default", "/default"]


@pytest_twisted.ensureDeferred
async def test_a_message_matching_several_goes_to_each_and_none_is_dropped(rapi, receiver, config):
    channel_id, port = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    await make_destination(
        rapi, router_id, {"regular_expression": r"^\*123\*"}, mo_url=receiver.url("/wide")
    )
    await make_destination(
        rapi, router_id, {"regular_expression": r"1#$"}, mo_url=receiver.url("/narrow")
    )
    user = await TelnetUser().connect(port)
    got = sorted([(await receiver.next()).path, (await receiver.next()).path])
    assert got == ["/narrow", "/wide"]

    # No default: a message matching nothing is dropped, with a line in the router's log.
    await dial(rapi, channel_id, port, "*999#")
    await receiver.next()
    await receiver.next()  # the close of the first session, to both
    user = await TelnetUser().connect(port)
    user.type("anyone?")
    await settle(receiver)
    assert len(receiver.received) == 4
    code, body = await rapi.get(f"/routers/{router_id}/logs")
    assert any(
        "No destination for the message to '*999#': dropped" in entry["message"]
        for entry in body["result"]
    )
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_replies_and_sends_reach_the_wire_and_events_only_their_sender(rapi, receiver):
    channel_id, port = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    one = await make_destination(
        rapi, router_id, {"regular_expression": "1#$"}, mo_url=receiver.url("/mo-one")
    )
    two = await make_destination(
        rapi, router_id, {"regular_expression": "2#$"}, mo_url=receiver.url("/mo-two")
    )
    user = await TelnetUser().connect(port)
    start = await receiver.next()
    assert start.path == "/mo-one"

    # Destination one replies to the message it was given.
    code, body = await rapi.post(
        f"/routers/{router_id}/destinations/{one}/messages/",
        {
            "reply_to": start.json["message_id"],
            "content": "welcome",
            "event_url": receiver.url("/ev-one"),
        },
    )
    assert (code, body["description"]) == (201, "message submitted"), body
    reply = body["result"]
    assert reply["reply_to"] == start.json["message_id"] and reply["channel_id"] == channel_id
    assert await user.next_line() == "welcome"
    event = await receiver.next()
    assert event.path == "/ev-one"
    assert event.json["message_id"] == reply["message_id"]
    assert (event.json["event_type"], event.json["channel_id"]) == ("submitted", channel_id)

    # Destination two sends a new message: it reaches the wire, its events come to it.
    code, body = await rapi.post(
        f"/routers/{router_id}/destinations/{two}/messages/",
        {"to": user.address, "content": "news from two", "event_url": receiver.url("/ev-two")},
    )
    assert code == 201, body
    sent = body["result"]
    assert await user.next_line() == "news from two"
    event = await receiver.next()
    assert (event.path, event.json["message_id"]) == ("/ev-two", sent["message_id"])

    # One to nowhere: the nack goes to two's event_url as well, and nowhere else.
    code, body = await rapi.post(
        f"/routers/{router_id}/destinations/{two}/messages/",
        {"to": "192.0.2.1:1", "content": "lost", "event_url": receiver.url("/ev-two")},
    )
    lost = body["result"]["message_id"]
    event = await receiver.next()
    assert (event.path, event.json["event_type"]) == ("/ev-two", "rejected")
    await settle(receiver)
    assert paths(receiver) == ["/mo-one", "/ev-one", "/ev-two", "/ev-two"]

    # Each destination's messages endpoint shows its own messages and events.
    base = f"/routers/{router_id}/destinations"
    code, body = await rapi.get(f"{base}/{one}/messages/{reply['message_id']}")
    assert (code, body["description"]) == (200, "message status")
    assert body["result"]["last_event_type"] == "submitted"
    code, body = await rapi.get(f"{base}/{two}/messages/{lost}")
    assert body["result"]["last_event_type"] == "rejected"
    assert body["result"]["events"][0]["event_details"] == {"reason": "Unknown address."}
    code, body = await rapi.get(f"{base}/{one}/messages/{lost}")
    assert code == 404
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_destination_delivery_options(rapi, receiver, config):
    channel_id, port = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    silent = await make_destination(rapi, router_id, {"regular_expression": "1#$"})
    limited = await make_destination(
        rapi,
        router_id,
        {"regular_expression": "^\\*123"},
        mo_url=receiver.url("/mo"),
        mo_url_token="secret-token",
        character_limit=5,
    )
    user = await TelnetUser().connect(port)
    start = await receiver.next()
    assert start.headers["authorization"] == "Token secret-token"

    # The other name of the token works too.
    await patch(
        rapi,
        f"/routers/{router_id}/destinations/{limited}",
        {"mo_url_token": None, "mo_url_auth_token": "other-token"},
    )
    user.type("again")
    assert (await receiver.next()).headers["authorization"] == "Token other-token"

    base = f"/routers/{router_id}/destinations"
    code, body = await rapi.post(
        f"{base}/{limited}/messages/", {"to": user.address, "content": "too long"}
    )
    assert (code, body["description"]) == (400, "message too long")
    code, body = await rapi.post(
        f"{base}/{limited}/messages/", {"to": user.address, "content": "short"}
    )
    assert code == 201
    assert await user.next_line() == "short"

    # A destination with no mo_url or amqp_queue ignores messages, and can't send.
    code, body = await rapi.post(f"{base}/{silent}/messages/", {"to": user.address, "content": "x"})
    assert code == 400 and 'no "mo_url" or "amqp_queue"' in errors(body)
    code, body = await rapi.get(f"{base}/{silent}/messages/whatever")
    assert code == 400
    logs = read_logs(config.logging_path, router_id, 50)
    assert any(f"Destination {silent} has no mo_url" in entry["message"] for entry in logs)
    code, body = await rapi.post(f"{base}/missing/messages/", {"to": "x", "content": "x"})
    assert (code, body["description"]) == (404, "destination not found")
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_rates_are_counted_per_destination_and_summed_for_the_router(rapi, receiver, gateway):
    channel_id, router_id, destination_id, user = await one_destination(rapi, receiver)
    b = gateway.backends
    pattern = b.keys(destination_id, "inbound", "*")
    for _ in range(50):  # the forwarder counts just after its POST is answered
        counted = await b.redis.keys(pattern)
        if counted:
            break
        await settle(receiver, 0.05)
    assert len(counted) == 1 and await b.redis.get(counted[0]) == "1"
    bucket = int(counted[0].rsplit(":", 1)[1])
    # Move the clock into the next window, so the bucket just written is the one reported.
    b.rates.clock = _At((bucket + 1) * b.rates.window + 0.1)
    code, body = await rapi.get(f"/routers/{router_id}")
    assert body["result"]["status"]["inbound_message_rate"] == 1 / b.rates.window
    code, body = await rapi.get(f"/routers/{router_id}/destinations/{destination_id}")
    assert body["result"]["status"]["inbound_message_rate"] == 1 / b.rates.window
    await user.hang_up()


class _At:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def seconds(self) -> float:
        return self._seconds


@pytest_twisted.ensureDeferred
async def test_routers_are_restored_after_a_restart(rapi, receiver, gateway, routers):
    from junebug.routers.manager import RouterManager

    channel_id, port = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    await make_destination(rapi, router_id, {"regular_expression": "."}, mo_url=receiver.url("/mo"))
    await routers.stop_all()
    assert routers.running == {}

    restored = RouterManager(gateway.backends, gateway, routers.types)
    await restored.restore()
    try:
        assert list(restored.running) == [router_id]
        user = await TelnetUser().connect(port)
        assert (await receiver.next()).path == "/mo"
        await user.hang_up()
        await within(receiver.next())
    finally:
        await restored.stop_all()


@pytest_twisted.ensureDeferred
async def test_a_new_router_type_is_one_small_module(rapi, receiver):
    channel_id, port = await routed_channel(rapi, None)
    router_id = await make_router(rapi, channel_id, router_type="keyword")
    ids = {}
    for word in ("join", "stop"):
        ids[word] = await make_destination(
            rapi, router_id, {"keyword": word}, mo_url=receiver.url(f"/{word}")
        )
    code, body = await rapi.post(
        f"/routers/{router_id}/destinations/", {"config": {"keyword": "two words"}}
    )
    assert (code, body["description"]) == (400, "invalid router destination config")
    user = await TelnetUser().connect(port)
    user.type("JOIN please")
    user.type("hello")
    user.type("stop")
    # Two destinations deliver independently: in either order.
    first, second = sorted([await receiver.next(), await receiver.next()], key=lambda r: r.path)
    assert (first.path, first.json["content"]) == ("/join", "JOIN please")
    assert (second.path, second.json["content"]) == ("/stop", "stop")
    code, body = await rapi.post(
        f"/routers/{router_id}/destinations/{ids['join']}/messages/",
        {"reply_to": first.json["message_id"], "content": "joined"},
    )
    assert code == 201, body
    assert await user.next_line() == "joined"
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_a_destination_send_stores_both_records_and_counts_both_rates(
    rapi, receiver, gateway
):
    channel_id, router_id, destination_id, user = await one_destination(rapi, receiver)
    b = gateway.backends
    queue_key, _ = QueueStore(b.redis, b.keys).slot(channel_id, DEFAULT_PRIORITY)
    seq_before = int(await b.redis.hget(queue_key, "seq") or 0)
    code, body = await rapi.post(
        f"/routers/{router_id}/destinations/{destination_id}/messages/",
        {"to": user.address, "content": "counted", "event_url": receiver.url("/ev")},
    )
    assert code == 201, body
    message_id = body["result"]["message_id"]
    assert await user.next_line() == "counted"

    own = await b.messages.load_outbound(destination_id, message_id)
    on_channel = await b.messages.load_outbound(channel_id, message_id)
    assert own["event_url"] == receiver.url("/ev")
    assert "event_url" not in on_channel
    assert (on_channel["router_id"], on_channel["destination_id"]) == (router_id, destination_id)
    assert int(await b.redis.hget(queue_key, "seq")) == seq_before + 1
    for owner in (destination_id, channel_id):
        [bucket] = await b.redis.keys(b.keys(owner, "outbound", "*"))
        assert await b.redis.get(bucket) == "1"
        assert 0 < await b.redis.ttl(bucket) <= 2 * b.rates.window
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_a_send_whose_destination_write_fails_takes_back_the_channels_counts(
    rapi, receiver, gateway
):
    channel_id, router_id, destination_id, user = await one_destination(rapi, receiver)
    b = gateway.backends
    # The destination's rate bucket is not a counter: its write fails (WRONGTYPE), while
    # the channel's record, queue number and rate are written in the same round trip.
    key, _ = b.rates.bucket(destination_id, "outbound")
    bucket = int(key.rsplit(":", 1)[1])
    broken = [b.keys(destination_id, "outbound", str(bucket + n)) for n in range(3)]
    for name in broken:
        await b.redis.hset(name, "not", "a counter")
    queue_key, field = QueueStore(b.redis, b.keys).slot(channel_id, DEFAULT_PRIORITY)
    before = int(await b.redis.hget(queue_key, field) or 0)
    try:
        code, body = await rapi.post(
            f"/routers/{router_id}/destinations/{destination_id}/messages/",
            {"to": user.address, "content": "never sent"},
        )
    finally:
        await b.redis.delete(broken)
    assert (code, body["description"]) == (500, "generic error"), body
    assert int(await b.redis.hget(queue_key, field) or 0) == before
    for name in await b.redis.keys(b.keys(channel_id, "outbound", "*")):
        assert await b.redis.get(name) in (None, "0")
    await user.hang_up()
