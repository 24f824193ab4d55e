"""The smpp channel against jb-smsc (junebug.testing.smsc.SmscProcess) over real TCP."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from junebug.store import redis as redis_store
from junebug.testing.smsc import SmscProcess
from junebug.transports.smpp.transport import SmppChannel
from tests.conftest import REDIS_HOST, REDIS_PORT
from tests.transports.harness import TransportHarness
from tests.transports.smpp.test_transport import wait_status

WINDOW = 5


async def start(tmp_path: Any, smsc_options: dict, **config: Any) -> tuple[Any, Any, Any]:
    smsc = await SmscProcess(system_id="esme", password="secret", **smsc_options).start()
    redis = await redis_store.connect(REDIS_HOST, REDIS_PORT)
    prefix = f"jbtest-{uuid.uuid4().hex[:12]}"
    channel_config = {
        "twisted_endpoint": f"tcp:host=127.0.0.1:port={smsc.port}",
        "system_id": "esme",
        "password": "secret",
        "initial_reconnect_delay": 0.05,
        "max_reconnect_delay": 0.5,
        "window_size": WINDOW,
        **config,
    }
    harness = await TransportHarness(
        SmppChannel,
        channel_config,
        str(tmp_path / "logs"),
        redis=redis,
        redis_prefix=f"{prefix}:",
    ).start()
    harness.prefix = prefix
    await wait_status(harness, "bound")
    return smsc, redis, harness


async def finish(smsc: Any, redis: Any, harness: Any) -> None:
    await harness.stop()
    await smsc.stop()
    keys = await redis.keys(f"{harness.prefix}:*")
    if keys:
        await redis.delete(keys)
    await redis.disconnect()


@pytest_twisted.async_yield_fixture
async def running(tmp_path):
    smsc, redis, harness = await start(
        tmp_path,
        {"dr_delay": 0.05},
        deliver_short_message_processor_config={"data_coding_overrides": {"0": "gsm0338"}},
    )
    yield smsc, harness
    await finish(smsc, redis, harness)


TEXT = "Hello wörld, this is a long message that needs several parts. " * 3


@pytest_twisted.ensureDeferred
async def test_mo_in_each_coding_and_multipart_style_arrives_whole(running):
    smsc, harness = running
    for coding in ("gsm0338", "ucs2", "latin1"):
        for multipart in ("none", "udh", "udh16", "sar", "payload"):
            for order in ("forward", "reverse", "shuffle"):
                text = f"short ök {coding}" if multipart == "none" else f"{coding} {TEXT}"
                await smsc.send_mo(
                    "27820000001", "12345", text, coding=coding, multipart=multipart, order=order
                )
                inbound = await harness.next_inbound()
                assert inbound["content"] == text, (coding, multipart, order)
                assert (inbound["from_addr"], inbound["to_addr"]) == ("27820000001", "12345")


@pytest_twisted.ensureDeferred
async def test_ussd_mo_becomes_a_session(running):
    smsc, harness = running
    await smsc.send_mo("27820000001", "*120#", "*120#", coding="latin1", ussd_service_op=1)
    inbound = await harness.next_inbound()
    assert (inbound["transport_type"], inbound["session_event"]) == ("ussd", "new")


@pytest_twisted.ensureDeferred
async def test_burst_with_throttling_and_a_dropped_connection(tmp_path):
    smsc, redis, harness = await start(
        tmp_path, {"dr_delay": 0.05, "id_format": "decimal"}, throttle_delay=0.05
    )
    try:
        count = 60
        sent = [await harness.send(f"2782{n:07d}", f"burst {n}") for n in range(count)]
        await smsc.throttle(0.3)
        while len(await smsc.submits()) < count // 3:
            await deferLater(reactor, 0.02, lambda: None)
        await smsc.drop()
        acks: Counter = Counter()
        delivered: Counter = Counter()
        wanted = {m["message_id"] for m in sent}
        while not (set(acks) >= wanted and set(delivered) >= wanted):
            event = await harness.next_event()
            if event["event_type"] == "ack":
                acks[event["user_message_id"]] += 1
            elif event["event_type"] == "delivery_report":
                assert event["delivery_status"] == "delivered"
                delivered[event["user_message_id"]] += 1
            else:
                raise AssertionError(f"unexpected event {event}")
        await deferLater(reactor, 0.5, lambda: None)
        while harness.events.pending:
            event = await harness.next_event()
            if event["event_type"] == "ack":
                acks[event["user_message_id"]] += 1
            else:
                delivered[event["user_message_id"]] += 1
        assert set(acks) == wanted and set(acks.values()) == {1}
        assert set(delivered) == wanted and set(delivered.values()) == {1}
        submits = await smsc.submits()
        texts = Counter(s["text"] for s in submits)
        duplicates = sum(n - 1 for n in texts.values())
        # Resends only come from submits in flight when the connection dropped.
        assert duplicates <= WINDOW
        assert set(texts) == {f"burst {n}" for n in range(count)}
    finally:
        await finish(smsc, redis, harness)
