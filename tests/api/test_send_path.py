"""What ``POST /channels/{id}/messages/`` leaves in Redis, and in what order.

The record, the queue's number and count and the outbound rate are written in one
round trip before the message is published (``api/messages.py`` ``send``); these tests
read Redis after a send, at the moment the message reaches the bus, and after a publish
that failed.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from junebug.bus.base import BusUnavailable, outbound_key
from junebug.store.rates import RateCounter
from tests.api.test_messages import connected_user, telnet_channel
from tests.api.test_queue import SLOW, send

PRIORITIES = ("p1", "p2", "p3", "p4", "p5")


def clocked_rates(gateway) -> RateCounter:
    """A rate counter on a clock that stands still, so every count of a test lands in
    one bucket whatever the time."""
    backends = gateway.backends
    clock = Clock()
    clock.advance(1_000_000)
    backends.rates = RateCounter(
        backends.redis, backends.keys, backends.config.metric_window, clock
    )
    return backends.rates


async def redis_view(gateway, channel_id: str, message_id: str) -> dict:
    """The record of ``message_id``, the channel's queue hash and its outbound rate bucket."""
    backends = gateway.backends
    redis, keys = backends.redis, backends.keys
    record_key = keys(channel_id, "outbound_messages", message_id)
    bucket, _ = backends.rates.bucket(channel_id, "outbound")
    return {
        "record": await redis.hget(record_key, "message"),
        "record_ttl": await redis.ttl(record_key),
        "queue": await redis.hgetall(keys(channel_id, "outbound_queue")) or {},
        "rate": int(await redis.get(bucket) or 0),
        "rate_ttl": await redis.ttl(bucket),
    }


@pytest_twisted.ensureDeferred
async def test_a_send_stores_the_record_numbers_and_counts_the_message(api, receiver, gateway):
    rates = clocked_rates(gateway)
    config = gateway.backends.config
    channel_id, user, _ = await connected_user(api, receiver, **SLOW)
    first = await send(api, channel_id, to=user.address, content="first", event_url=None)
    assert await user.next_line() == "first"  # the hour's only token: the rest stays queued
    body = {"to": user.address, "content": "second", "priority": 3, "validity": 600}
    second = await send(api, channel_id, **body)

    view = await redis_view(gateway, channel_id, second["message_id"])
    assert json.loads(view["record"]) == {**body, **second}
    assert config.outbound_message_ttl - 10 < view["record_ttl"] <= config.outbound_message_ttl
    assert view["queue"]["seq"] == "2"
    assert view["queue"]["p3"] == "1"
    assert view["rate"] == 2
    assert 0 < view["rate_ttl"] <= 2 * config.metric_window
    record = await gateway.backends.messages.load_outbound(channel_id, first["message_id"])
    assert record == {"to": user.address, "content": "first", "event_url": None, **first}
    bucket = rates.bucket(channel_id, "outbound")[0]
    rates.clock.advance(config.metric_window)
    assert await rates.rate(channel_id, "outbound") == 2 / config.metric_window
    assert bucket != rates.bucket(channel_id, "outbound")[0]


@pytest_twisted.ensureDeferred
async def test_the_record_is_in_redis_when_the_message_reaches_the_bus(api, receiver, gateway):
    """No event can arrive before its message's record: the record (and the queue's
    number and count and the rate) are written before the publish starts."""
    clocked_rates(gateway)
    channel_id, user, _ = await connected_user(api, receiver, **SLOW)
    bus = gateway.backends.bus
    publish = bus.publish
    seen = []

    def checking_publish(routing_key, message, priority=None):
        async def check_then_publish():
            if routing_key == outbound_key(channel_id):
                seen.append((message, await redis_view(gateway, channel_id, message["message_id"])))
            return await publish(routing_key, message, priority=priority)

        return Deferred.fromCoroutine(check_then_publish())

    bus.publish = checking_publish
    try:
        sent = [
            await send(api, channel_id, to=user.address, content=f"m{n}", priority=priority)
            for n, priority in enumerate((1, 5, "bulk"))
        ]
    finally:
        del bus.publish
    assert [message["message_id"] for message, _ in seen] == [m["message_id"] for m in sent]
    for n, (message, view) in enumerate(seen):
        assert json.loads(view["record"])["message_id"] == message["message_id"]
        assert view["queue"]["seq"] == str(n + 1) == str(message["junebug_queue"]["seq"])
        assert view["rate"] == n + 1
    assert seen[1][1]["queue"]["p5"] == "1"


@pytest_twisted.ensureDeferred
async def test_a_failed_publish_takes_the_counts_back(api, receiver, gateway):
    """A message the bus did not take is not counted (not on the queue, not in the
    outbound rate), as when the rate was counted after the publish; its record stays,
    as it did."""
    clocked_rates(gateway)
    channel_id, _ = await telnet_channel(api, receiver, **SLOW)
    path = f"/channels/{channel_id}/messages/"
    bus = gateway.backends.bus
    failures = [BusUnavailable("the broker went away"), RuntimeError("publish broke")]

    def failing_publish(routing_key, message, priority=None):
        failing_publish.message = message
        return fail(failures.pop(0))

    bus.publish = failing_publish
    try:
        code, body = await api.post(path, {"to": "x", "content": "lost", "priority": 4})
        assert code == 503, body
        assert body["description"] == "amqp connection error"
        assert (
            "message bus unavailable: the broker went away"
            in body["result"]["errors"][0]["message"]
        )
        first = failing_publish.message
        view = await redis_view(gateway, channel_id, first["message_id"])
        assert view["queue"] == {"seq": "1", "p4": "0"}
        assert view["rate"] == 0
        assert json.loads(view["record"])["message_id"] == first["message_id"]

        code, body = await api.post(path, {"to": "x", "content": "lost again"})
        assert code == 500 and body["description"] == "generic error"
        view = await redis_view(gateway, channel_id, failing_publish.message["message_id"])
        assert view["queue"] == {"seq": "2", "p4": "0", "p1": "0"}
        assert view["rate"] == 0
    finally:
        del bus.publish
    # The channel still sends, numbering on from where it was.
    sent = await send(api, channel_id, to="x", content="sent")
    view = await redis_view(gateway, channel_id, sent["message_id"])
    assert view["queue"]["seq"] == "3" and view["rate"] == 1
    assert not set(view["queue"]) - {"seq", *PRIORITIES}
