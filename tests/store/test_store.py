"""The Redis store against the real Redis: layouts, TTLs, rates, statuses."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from junebug import messages
from junebug.store.channels import ChannelStore
from junebug.store.messages import MessageStore
from junebug.store.rates import RATE_FIELDS, RateCounter
from junebug.store.redis import Keys
from junebug.store.status import StatusStore, worst_level


@pytest.fixture
def keys(key_prefix):
    return Keys(key_prefix)


@pytest_twisted.ensureDeferred
async def test_channel_properties_round_trip(redis, keys):
    store = ChannelStore(redis, keys)
    await store.save("b", {"type": "telnet", "config": {"x": 1}})
    await store.save("a", {"type": "telnet"})
    assert await store.ids() == ["a", "b"]
    assert await store.load("b") == {"type": "telnet", "config": {"x": 1}}
    assert await redis.get(keys("b", "properties")) is not None  # the original's layout
    await store.delete("b")
    assert await store.ids() == ["a"] and await store.load("b") is None


@pytest_twisted.ensureDeferred
async def test_inbound_ttl_is_set_and_refreshed_by_reads(redis, keys):
    store = MessageStore(redis, keys, inbound_ttl=600, outbound_ttl=172800)
    inbound = messages.user_message(to_addr="t", from_addr="f", transport_name="c", content="x")
    assert await store.store_inbound("c", inbound) is True
    key = keys("c", "inbound_messages", inbound["message_id"])
    await redis.expire(key, 5)
    assert await store.load_inbound("c", inbound["message_id"]) == inbound
    assert 590 < await redis.ttl(key) <= 600
    assert await store.load_inbound("c", "unknown") is None


@pytest_twisted.ensureDeferred
async def test_events_are_stored_once_sorted_and_expire_with_the_message(redis, keys):
    store = MessageStore(redis, keys, inbound_ttl=600, outbound_ttl=1000)
    await store.store_outbound("c", {"message_id": "m1", "event_url": "http://x/"})
    later = messages.ack("m1", "s", transport_name="c", timestamp="2020-01-01 00:00:02.000000")
    earlier = messages.nack("m1", "r", transport_name="c", timestamp="2020-01-01 00:00:01.000000")
    assert await store.store_event("c", later) is True
    assert await store.store_event("c", earlier) is True
    assert await store.store_event("c", later) is False  # a redelivery is spotted
    assert [e["event_type"] for e in await store.load_events("c", "m1")] == ["nack", "ack"]
    assert (await store.load_outbound("c", "m1"))["event_url"] == "http://x/"
    assert 990 < await redis.ttl(keys("c", "outbound_messages", "m1")) <= 1000


@pytest_twisted.ensureDeferred
async def test_corrupt_outbound_record_reads_as_missing(redis, keys):
    store = MessageStore(redis, keys, 600, 600)
    await redis.hset(keys("c", "outbound_messages", "m"), "message", "{not json")
    assert await store.load_outbound("c", "m") is None


@pytest_twisted.ensureDeferred
async def test_rates_report_the_previous_complete_window(redis, keys):
    clock = Clock()
    clock.advance(1000)
    rates = RateCounter(redis, keys, window=10, clock=clock)
    for _ in range(5):
        await rates.increment("c", "inbound")
    await rates.increment("c", "delivery_failed")
    assert (await rates.rates("c"))["inbound_message_rate"] == 0.0  # window not complete
    clock.advance(10)
    reported = await rates.rates("c")
    assert reported["inbound_message_rate"] == 0.5
    assert reported["delivery_failed_rate"] == 0.1
    assert set(reported) == set(RATE_FIELDS.values())
    clock.advance(10)
    assert (await rates.rates("c"))["inbound_message_rate"] == 0.0
    bucket_key = keys("c", "inbound", str(int(1000 / 10)))
    assert 0 < await redis.ttl(bucket_key) <= 20


@pytest_twisted.ensureDeferred
async def test_two_counters_add_up(redis, keys):
    """Two processes counting the same channel share the Redis buckets."""
    clock = Clock()
    first, second = (RateCounter(redis, keys, 10, clock) for _ in range(2))
    await first.increment("c", "outbound")
    await second.increment("c", "outbound")
    clock.advance(10)
    assert await first.rate("c", "outbound") == 0.2


@pytest_twisted.ensureDeferred
async def test_status_store_keeps_latest_per_component(redis, keys):
    store = StatusStore(redis, keys)
    await store.set("c", messages.status("smpp", "down", "connection_lost", "lost"))
    await store.set("c", messages.status("smpp", "ok", "bound", "Bound"))
    await store.set("c", messages.status("redis", "degraded", "slow", "slow"))
    stored = await store.get_all("c")
    assert {k: v["status"] for k, v in stored.items()} == {"smpp": "ok", "redis": "degraded"}


def test_worst_level():
    assert worst_level([]) is None
    assert worst_level(["ok", "degraded"]) == "degraded"
    assert worst_level(["ok", "down", "degraded"]) == "down"
    assert worst_level(["ok"]) == "ok"


@pytest_twisted.ensureDeferred
async def test_a_command_redis_never_answers_fails_after_the_timeout():
    import txredisapi
    from twisted.internet.defer import Deferred

    from junebug.store.redis import TimedRedis

    class Silent:
        def __init__(self):
            self.sent = []

        def get(self, key):
            answer = Deferred()
            self.sent.append(answer)
            return answer

    clock = Clock()
    silent = Silent()
    redis = TimedRedis(silent, clock, timeout=4)
    stuck = redis.get("a")
    clock.advance(2)
    answered = redis.get("b")
    silent.sent[1].callback("value")
    assert await answered == "value"
    clock.advance(2)  # "a" is past its deadline: the watchdog fails it
    with pytest.raises(txredisapi.ConnectionError, match="did not answer get within 4s"):
        await stuck
    assert redis._pending == {}
    clock.advance(10)
    assert redis._watchdog is None  # nothing outstanding: no timer left running


@pytest_twisted.ensureDeferred
async def test_event_stored_read_back_and_counted_in_one_round_trip(redis, keys):
    """``store_event_and_load``: the same keys, TTLs and answers as ``store_event``,
    ``load_outbound`` and ``RateCounter.increment`` one after the other."""
    clock = Clock()
    clock.advance(1000)
    rates = RateCounter(redis, keys, window=10, clock=clock)
    store = MessageStore(redis, keys, inbound_ttl=600, outbound_ttl=1000)
    record = {"message_id": "m1", "event_url": "http://x/"}
    await store.store_outbound("c", record, count=rates.bucket("c", "outbound"))
    key = keys("c", "outbound_messages", "m1")
    await redis.expire(key, 5)
    ack = messages.ack("m1", "s", transport_name="c")
    count = rates.bucket("c", "submitted")
    assert count == (keys("c", "submitted", "100"), 20)
    assert await store.store_event_and_load("c", ack, count=count) == (True, record)
    assert 990 < await redis.ttl(key) <= 1000
    assert await store.store_event_and_load("c", ack, count=count) == (False, record)
    assert [e["event_id"] for e in await store.load_events("c", "m1")] == [ack["event_id"]]
    # Events of an unknown (or expired) message are stored; the record reads as None.
    other = messages.ack("m2", "s", transport_name="c")
    assert await store.store_event_and_load("c", other) == (True, None)
    assert 990 < await redis.ttl(keys("c", "outbound_messages", "m2")) <= 1000
    await redis.hset(keys("c", "outbound_messages", "m3"), "message", "{not json")
    bad = messages.ack("m3", "s", transport_name="c")
    assert await store.store_event_and_load("c", bad) == (True, None)
    assert 0 < await redis.ttl(count[0]) <= 20
    clock.advance(10)
    assert await rates.rate("c", "submitted") == 0.2
    assert await rates.rate("c", "outbound") == 0.1


@pytest_twisted.ensureDeferred
async def test_inbound_stored_and_counted_in_one_round_trip(redis, keys):
    clock = Clock()
    rates = RateCounter(redis, keys, window=10, clock=clock)
    store = MessageStore(redis, keys, inbound_ttl=600, outbound_ttl=1000)
    inbound = messages.user_message(to_addr="t", from_addr="f", transport_name="c", content="x")
    count = rates.bucket("c", "inbound")
    assert await store.store_inbound("c", inbound, count=count) is True
    assert await store.store_inbound("c", inbound, count=count) is False
    assert await store.load_inbound("c", inbound["message_id"]) == inbound
    assert 590 < await redis.ttl(keys("c", "inbound_messages", inbound["message_id"])) <= 600
    assert 0 < await redis.ttl(count[0]) <= 20
    clock.advance(10)
    assert await rates.rate("c", "inbound") == 0.2
