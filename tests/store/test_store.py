"""The Redis store against the real Redis: layouts, TTLs, rates, statuses."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from junebug import messages
from junebug.store.channels import ChannelStore
from junebug.store.messages import MessageStore
from junebug.store.queues import QueueStore
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


async def _outbound_state(redis, keys, owner: str, ids: list[str], bucket: str) -> dict:
    """Everything the API's send leaves in Redis for ``owner``, TTLs in whole seconds
    below their limits (so two runs a moment apart compare equal)."""
    records = {}
    for message_id in ids:
        key = keys(owner, "outbound_messages", message_id)
        records[message_id] = (await redis.hgetall(key), 990 < await redis.ttl(key) <= 1000)
    return {
        "records": records,
        "queue": await redis.hgetall(keys(owner, "outbound_queue")),
        "queue_ttl": await redis.ttl(keys(owner, "outbound_queue")),
        "rate": await redis.get(bucket),
        "rate_ttl_ok": 0 < await redis.ttl(bucket) <= 20,
    }


@pytest_twisted.ensureDeferred
async def test_outbound_stored_accepted_and_counted_in_one_round_trip(redis, keys):
    """``store_outbound(..., count=, accept=)``: the same keys, values and TTLs as the
    three round trips the API's send made before (``store_outbound``,
    ``QueueStore.accept``, ``RateCounter.increment``), and the same numbers."""
    clock = Clock()
    clock.advance(1000)
    rates = RateCounter(redis, keys, window=10, clock=clock)
    store = MessageStore(redis, keys, inbound_ttl=600, outbound_ttl=1000)
    queues = QueueStore(redis, keys)

    async def three_round_trips(owner: str, record: dict, priority: int) -> int:
        await store.store_outbound(owner, record)
        seq = await queues.accept(owner, priority)
        await rates.increment(owner, "outbound")
        return seq

    async def one_round_trip(owner: str, record: dict, priority: int) -> int:
        return await store.store_outbound(
            owner,
            record,
            count=rates.bucket(owner, "outbound"),
            accept=queues.slot(owner, priority),
        )

    ids = ["m0", "m1", "m2"]
    states = []
    for owner, send in (("before", three_round_trips), ("after", one_round_trip)):
        seqs = []
        for message_id, priority in zip(ids, (1, 5, 1), strict=True):
            record = {"message_id": message_id, "content": "é", "event_url": None}
            seqs.append(await send(owner, record, priority))
        assert seqs == [1, 2, 3]
        state = await _outbound_state(redis, keys, owner, ids, rates.bucket(owner, "outbound")[0])
        states.append(state)
    before, after = states
    assert after == before
    assert after["queue"] == {"seq": "3", "p1": "2", "p5": "1"}
    assert after["queue_ttl"] == -1  # the queue's hash never expires (store/queues.py)
    assert after["rate"] == "3" and after["rate_ttl_ok"]
    record = {"message_id": "m0", "content": "é", "event_url": None}
    assert after["records"]["m0"] == ({"message": messages.to_json(record)}, True)
    assert await store.load_outbound("after", "m0") == record
    clock.advance(10)
    assert await rates.rate("after", "outbound") == 0.3


@pytest_twisted.ensureDeferred
async def test_outbound_accepted_without_a_count(redis, keys):
    store = MessageStore(redis, keys, inbound_ttl=600, outbound_ttl=1000)
    queues = QueueStore(redis, keys)
    record = {"message_id": "m1"}
    assert await store.store_outbound("c", record, accept=queues.slot("c", 3)) == 1
    assert await store.store_outbound("c", {"message_id": "m2"}) is None  # as before
    assert await queues.accept("c", 3) == 2  # one numbering, however a message is accepted
    assert await queues.counts("c") == {"1": 0, "2": 0, "3": 2, "4": 0, "5": 0}
    assert await store.load_outbound("c", "m1") == record
    assert 990 < await redis.ttl(keys("c", "outbound_messages", "m1")) <= 1000
    assert await redis.keys(keys("c", "outbound", "*")) == []  # no rate counted


@pytest_twisted.ensureDeferred
async def test_taken_counts_several_messages_down_at_once(redis, keys):
    queues = QueueStore(redis, keys)
    for priority in (1, 1, 1, 4):
        await queues.accept("c", priority)
    await queues.taken("c", 1, 2)  # two messages of priority 1 left together
    await queues.taken("c", 4)  # one, as before
    assert await queues.counts("c") == {"1": 1, "2": 0, "3": 0, "4": 0, "5": 0}
    assert await queues.accept("c", 1) == 5  # the numbering is untouched


@pytest_twisted.ensureDeferred
async def test_a_count_taken_back_keeps_its_ttl_and_never_makes_a_bucket(redis, keys):
    clock = Clock()
    rates = RateCounter(redis, keys, window=10, clock=clock)
    count = rates.bucket("c", "outbound")
    await rates.increment("c", "outbound")
    await rates.increment("c", "outbound")
    await rates.take_back(count)
    assert await redis.get(count[0]) == "1"
    assert 0 < await redis.ttl(count[0]) <= 20
    await redis.delete(count[0])  # expired meanwhile
    await rates.take_back(count)
    assert await redis.exists(count[0]) in (0, False)


@pytest_twisted.ensureDeferred
async def test_counts_taken_back_quietly_go_on_past_one_that_fails(redis, keys):
    clock = Clock()
    rates = RateCounter(redis, keys, window=10, clock=clock)
    broken, good = rates.bucket("a", "outbound"), rates.bucket("b", "outbound")
    await redis.hset(broken[0], "not", "a counter")  # its DECR fails (WRONGTYPE)
    await rates.increment("b", "outbound")
    try:
        await rates.take_back_quietly(broken, good)  # does not raise
        assert await redis.get(good[0]) == "0"
    finally:
        await redis.delete(broken[0])
