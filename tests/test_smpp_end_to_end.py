"""The smpp channel end to end: ``jb`` and ``jb-smsc`` as child processes, an smpp
channel created through the HTTP API, messages sent through the API while the
simulator throttles and drops the connection, and phones' messages in every coding
and multipart style arriving at the mo_url."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater

from junebug.store import redis as redis_store
from junebug.testing.smsc import SmscProcess
from tests.helpers import ApiClient, JbProcess, Receiver, free_port, write_jb_config

pytestmark = pytest.mark.slow

SYSTEM_ID = "e2eesme"
PASSWORD = "e2epw"
#: The channel's window_size: the most submit_sm that may be sent twice per lost connection.
WINDOW = 10
#: POSTs in flight at once.
CONCURRENCY = 16


def channel_body(smsc: SmscProcess, receiver: Receiver) -> dict[str, Any]:
    return {
        "type": "smpp",
        "label": "end to end",
        "mo_url": receiver.url("/mo"),
        "config": {
            "twisted_endpoint": f"tcp:host=127.0.0.1:port={smsc.port}",
            "system_id": SYSTEM_ID,
            "password": PASSWORD,
            "window_size": WINDOW,
            "initial_reconnect_delay": 0.05,
            "max_reconnect_delay": 0.5,
            "deliver_short_message_processor_config": {"data_coding_overrides": {"0": "gsm0338"}},
        },
    }


class Gateway:
    """jb (embedded, or on the real Redis under ``redis_prefix``), jb-smsc, and an
    smpp channel between them whose mo_url is ``receiver``."""

    def __init__(self, tmp_path: Any, receiver: Receiver, redis_prefix: str | None) -> None:
        self.tmp_path = tmp_path
        self.receiver = receiver
        self.redis_prefix = redis_prefix
        self.smsc = SmscProcess(system_id=SYSTEM_ID, password=PASSWORD, dr_delay=0, timeout=20)
        self.jb: JbProcess | None = None
        self.api: ApiClient | None = None
        self.channel_id = ""

    async def start(self) -> Gateway:
        await self.smsc.start()
        port = free_port()
        if self.redis_prefix is None:
            args = ["-p", str(port), "--data-dir", str(self.tmp_path / "data")]
            args += ["-lp", str(self.tmp_path / "logs")]
        else:
            config = write_jb_config(self.tmp_path, port, redis_prefix=self.redis_prefix)
            args = ["-c", str(config)]
        self.jb = await JbProcess(*args, cwd=str(self.tmp_path)).start()
        self.api = ApiClient(f"http://127.0.0.1:{port}")
        code, body = await self.api.post("/channels/", channel_body(self.smsc, self.receiver))
        assert code == 201, body
        self.channel_id = body["result"]["id"]
        await self.smsc.wait_for_bind(timeout=20)
        return self

    async def stop(self) -> None:
        try:
            if self.jb is not None:
                assert await self.jb.stop() == 0, self.jb.output[-3000:]
        finally:
            await self.smsc.stop()


async def poll(condition: Any, seconds: float, what: str) -> None:
    """Wait (bounded) until ``condition()`` holds, checking every 50 ms."""
    deadline = reactor.seconds() + seconds
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)


async def bounded(count: int, concurrency: int, job: Any) -> list[Any]:
    """``job(i)`` for every i < count, at most ``concurrency`` at once; results in order."""
    results: list[Any] = [None] * count
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            results[index] = await job(index)

    await DeferredList(
        [Deferred.fromCoroutine(worker()) for _ in range(concurrency)], fireOnOneErrback=True
    )
    return results


def events_by_path(receiver: Receiver) -> dict[str, Counter]:
    """``{path: Counter(event_type)}`` of everything POSTed under /events/."""
    found: dict[str, Counter] = {}
    for request in receiver.received:
        if request.path.startswith("/events/"):
            found.setdefault(request.path, Counter())[request.json["event_type"]] += 1
    return found


async def send_through_throttle_and_drop(gateway: Gateway, n: int) -> dict[str, int]:
    """POST ``n`` messages, throttle the SMSC after a quarter and drop the connection
    after half; check every message's events and what the SMSC saw; return the counts."""
    api, smsc, receiver = gateway.api, gateway.smsc, gateway.receiver
    answered = [0]
    faults: list[Deferred] = []

    async def send(index: int) -> str:
        code, body = await api.post(
            f"/channels/{gateway.channel_id}/messages/",
            {
                "to": f"2782{index:07d}",
                "from": "12345",
                "content": f"message {index}",
                "event_url": receiver.url(f"/events/{index}"),
            },
        )
        assert code == 201, body
        answered[0] += 1
        if answered[0] == n // 4:
            faults.append(Deferred.fromCoroutine(smsc.throttle(1.0)))
        elif answered[0] == n // 2:
            faults.append(Deferred.fromCoroutine(smsc.drop()))
        return body["result"]["message_id"]

    ids = await bounded(n, CONCURRENCY, send)
    assert len(set(ids)) == n
    await DeferredList(faults, fireOnOneErrback=True)
    assert [f.result for f in faults] == [None, 1]  # throttled, then one connection dropped

    wanted = {f"/events/{i}" for i in range(n)}

    def all_arrived() -> bool:
        found = events_by_path(receiver)
        return all(
            found.get(path, {}).get("submitted") and found[path].get("delivery_succeeded")
            for path in wanted
        )

    await poll(all_arrived, 60, f"submitted + delivery_succeeded for all {n} messages")
    # A receipt sent again after the drop would arrive within moments: give it time.
    await deferLater(reactor, 1.0, lambda: None)

    found = events_by_path(receiver)
    assert set(found) == wanted
    for request in receiver.received:
        if request.path.startswith("/events/"):
            index = int(request.path.rsplit("/", 1)[1])
            assert request.json["message_id"] == ids[index]  # each at its own event_url
            assert request.json["channel_id"] == gateway.channel_id
    types = Counter()
    for counts in found.values():
        types.update(counts)
    assert set(types) == {"submitted", "delivery_succeeded"}, types
    duplicate_events = sum(c - 1 for counts in found.values() for c in counts.values())

    submits = await smsc.submits(include_rejected=True)
    accepted = [s for s in submits if s["command_status"] == "ESME_ROK"]
    throttled = [s for s in submits if s["command_status"] == "ESME_RTHROTTLED"]
    texts = Counter(s["text"] for s in accepted)
    assert set(texts) == {f"message {i}" for i in range(n)}  # none lost on the way
    assert all(s["destination_addr"] == f"2782{int(s['text'].split()[1]):07d}" for s in accepted)
    resends = sum(c - 1 for c in texts.values())
    assert throttled, "the SMSC never throttled a submit"
    assert len(submits) == len(accepted) + len(throttled)
    assert resends <= WINDOW, f"{resends} submit_sm sent twice, more than window_size"
    assert duplicate_events <= WINDOW, f"{duplicate_events} duplicate events"

    status = await smsc.status()
    assert len(status["bound"]) == 1  # bound again after the drop
    return {
        "messages": n,
        "submits_throttled": len(throttled),
        "submits_sent_again": resends,
        "duplicate_events": duplicate_events,
    }


@pytest_twisted.async_yield_fixture
async def embedded(tmp_path, receiver):
    gateway = await Gateway(tmp_path, receiver, None).start()
    yield gateway
    await gateway.stop()


@pytest_twisted.ensureDeferred
async def test_a_thousand_messages_through_a_throttle_and_a_drop(embedded, record_property):
    counts = await send_through_throttle_and_drop(embedded, 1000)
    for name, value in counts.items():
        record_property(name, value)
    print(f"\nsmpp end to end (embedded): {counts}")


@pytest_twisted.async_yield_fixture
async def on_real_redis(tmp_path, receiver):
    prefix = f"jbsmpp-{uuid.uuid4().hex[:10]}"
    gateway = await Gateway(tmp_path, receiver, prefix).start()
    yield gateway
    try:
        await gateway.stop()
    finally:
        connection = await redis_store.connect("127.0.0.1", 6379)
        keys = await connection.keys(f"{prefix}:*")
        if keys:
            await connection.delete(keys)
        await connection.disconnect()


@pytest_twisted.ensureDeferred
async def test_messages_through_a_throttle_and_a_drop_on_the_real_redis(
    on_real_redis, record_property
):
    counts = await send_through_throttle_and_drop(on_real_redis, 200)
    for name, value in counts.items():
        record_property(name, value)
    print(f"\nsmpp end to end (real Redis): {counts}")


#: Long enough for several parts in each coding; every character valid in it.
TEXTS = {
    "gsm0338": "Hello wörld, prices in € and [brackets] {braces} ~tilde^ \\ |pipe| ÆØÅ ñ. ",
    "ucs2": "Привет мир, 你好世界, ☺ emoji-free UCS2 text with ǅ and Ω. ",
    "latin1": "Grüße aus Köln, ½ price ¿qué? « ÿ » © ® ± µ ¶ ß. ",
}
STYLES = ("udh", "udh16", "sar", "payload", "none")
ORDERS = ("forward", "reverse")


@pytest_twisted.ensureDeferred
async def test_mo_in_every_coding_multipart_style_and_order_arrives_whole(embedded):
    smsc, receiver = embedded.smsc, embedded.receiver
    expected: dict[str, tuple[str, str]] = {}
    number = 0
    for coding, body in TEXTS.items():
        for style in STYLES:
            for order in ORDERS:
                number += 1
                sender = f"2783{number:07d}"
                text = f"{coding} {style} {order}: " + body * 5
                to = f"*{number}#"
                expected[sender] = (text, to)
                answer = await smsc.send_mo(
                    sender, to, text, coding=coding, multipart=style, order=order
                )
                if style in ("payload", "none"):
                    assert answer["sent"] == 1
                else:
                    assert answer["sent"] >= 2, (coding, style)

    def arrived() -> list[Any]:
        return [r for r in receiver.received if r.path == "/mo"]

    await poll(lambda: len(arrived()) >= len(expected), 30, "every MO message at the mo_url")
    await deferLater(reactor, 0.2, lambda: None)
    received = [r.json for r in arrived()]
    assert len(received) == len(expected)  # each whole, none twice, no parts on their own
    for message in received:
        text, to = expected[message["from"]]
        assert message["content"] == text, message["from"]
        assert message["to"] == to
        assert message["channel_id"] == embedded.channel_id
    deliveries = await smsc.deliveries()
    assert {d["command_status"] for d in deliveries if d["kind"] != "receipt"} == {"ESME_ROK"}
