"""The guaranteed callback path against the real Redis and a real HTTP receiver;
retries are driven by a task.Clock (the HTTP exchanges themselves are real)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from junebug.store.callbacks import CallbackStore, queue_id
from junebug.store.redis import Keys
from junebug.workers.callbacks import (
    CallbackQueue,
    CallbackSettings,
    backoff,
    dead_letter_view,
    signature,
)
from junebug.workers.http import CallbackPoster, mask_credentials, retry_after_seconds
from tests.helpers import within

START = 1_700_000_000.0
SECRET = "s3cret-s3cret-s3cret"


class FakeLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str, **kw: Any) -> None:
        self.lines.append(text)

    warning = error = info


class Harness:
    def __init__(self, redis: Any, key_prefix: str) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.poster = CallbackPoster(reactor, timeout=2)
        self.store = CallbackStore(redis, Keys(key_prefix))
        self.secrets: dict[str, str] = {"chan": SECRET}
        self.log = FakeLog()
        self.queue = self.new_queue()

    def new_queue(self) -> CallbackQueue:
        async def secret_of(channel_id: str) -> str | None:
            return self.secrets.get(channel_id)

        # rand 1.0: every wait is the top of its jitter range (1, 2, 4, ... seconds).
        return CallbackQueue(
            self.store, self.poster, self.clock, secrets=secret_of, rand=lambda: 1.0
        )

    async def send(self, url: str, payload: dict, **kw: Any) -> bool:
        kw.setdefault("kind", "inbound")
        kw.setdefault("log", self.log)
        return await self.queue.send("chan", url, payload, **kw)

    async def advance(self, seconds: float) -> None:
        """Move the clock on, then let the worker finish what became due."""
        self.clock.advance(seconds)
        await within(self.queue.idle())


@pytest_twisted.async_yield_fixture
async def harness(redis, key_prefix):
    h = Harness(redis, key_prefix)
    await h.queue.attach("chan", h.log)
    yield h
    await h.queue.detach("chan", h.log)
    await h.queue.stop()
    await h.poster.close()


def verify(secret: str, request: Any, now: float, tolerance: float = 300) -> bool:
    """What a receiver does with X-Junebug-Signature (docs/callbacks.md)."""
    fields = dict(part.split("=", 1) for part in request.headers["x-junebug-signature"].split(","))
    timestamp = int(fields["t"])
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(now - timestamp) <= tolerance


# -- pure parts -------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_with_jitter_in_the_upper_half():
    assert [backoff(n, 1.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert [backoff(n, 0.0) for n in (1, 2, 3)] == [0.5, 1, 2]
    assert backoff(30, 1.0) == 600 and backoff(30, 0.0) == 300


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    expected = hmac.new(b"k" * 16, b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature("k" * 16, 1700000000, b"{}") == f"t=1700000000,v1={expected}"


def test_retry_after_and_masking():
    assert retry_after_seconds("7", 0) == 7
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", 40) == 60
    assert retry_after_seconds("soon", 0) is None
    assert mask_credentials("http://u:pw@h:81/x?y=1") == "http://u:***@h:81/x?y=1"
    assert mask_credentials("http://h/x") == "http://h/x"


# -- delivery -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delivered_at_once_with_a_callback_id_and_a_signature(harness, receiver):
    settings = CallbackSettings(secret=SECRET, signer="chan")
    ok = await harness.send(receiver.url("/mo"), {"a": 1}, settings=settings, source_id="m1")
    assert ok is True
    request = await receiver.next()
    assert request.json == {"a": 1}
    assert request.headers["x-junebug-attempt"] == "1"
    assert len(request.headers["x-junebug-callback-id"]) == 32
    assert verify(SECRET, request, START)
    assert not verify("another secret!!", request, START)
    assert not verify(SECRET, request, START + 301)  # too old: a replay
    # Nothing was written to Redis for a callback delivered at once.
    assert await harness.store.pending_queues() == []


@pytest_twisted.ensureDeferred
async def test_a_failing_receiver_gets_retries_with_backoff_until_it_answers(harness, receiver):
    receiver.codes = [500, 502, 503]
    settings = CallbackSettings(secret=SECRET, signer="chan")
    url = receiver.url("/mo")
    assert await harness.send(url, {"n": 1}, settings=settings, message_id="m1") is False
    first = await receiver.next()
    assert await harness.store.pending_queues() == [queue_id("chan", url)]
    assert any("answered 500" in line and "retrying in 1.0s" in line for line in harness.log.lines)

    await harness.advance(0.9)
    assert len(receiver.received) == 1  # not yet
    await harness.advance(0.1)
    second = await receiver.next()
    await harness.advance(1.9)
    assert len(receiver.received) == 2
    await harness.advance(0.1)
    third = await receiver.next()
    await harness.advance(4)
    fourth = await receiver.next()

    attempts = [r.headers["x-junebug-attempt"] for r in (first, second, third, fourth)]
    assert attempts == ["1", "2", "3", "4"]
    ids = {r.headers["x-junebug-callback-id"] for r in (first, second, third, fourth)}
    assert len(ids) == 1  # one id for every attempt: the receiver can spot repeats
    assert verify(SECRET, fourth, START + 7)
    assert await harness.store.pending_queues() == []
    assert "chan:" not in str(harness.queue.blocked)
    assert any("delivered at attempt 4" in line for line in harness.log.lines)


@pytest_twisted.ensureDeferred
async def test_later_callbacks_to_the_same_url_wait_behind_a_failing_one(harness, receiver):
    receiver.codes = [500]
    url, other = receiver.url("/mo"), receiver.url("/other")
    assert await harness.send(url, {"n": 1}) is False
    assert await harness.send(url, {"n": 2}) is False  # queued, not tried
    assert await harness.send(url, {"n": 3}) is False
    assert [r.json for r in receiver.received] == [{"n": 1}]
    # Another URL is not held up.
    assert await harness.send(other, {"n": "x"}) is True
    await harness.advance(1)
    assert [r.json["n"] for r in receiver.received] == [1, "x", 1, 2, 3]
    assert await harness.store.pending_queues() == []
    assert await harness.send(url, {"n": 4}) is True  # straight through again


@pytest_twisted.ensureDeferred
async def test_a_4xx_is_not_retried_and_becomes_a_dead_letter(harness, receiver):
    receiver.codes = [404]
    url = receiver.url("/mo").replace("http://", "http://user:pw@")
    assert await harness.send(url, {"n": 1}, message_id="m1") is False
    assert await harness.send(url, {"n": 2}) is True  # the receiver answers: no queue
    total, records = await harness.store.dead_letters("chan")
    assert total == 1
    view = dead_letter_view(records[0])
    assert view["url"] == url.replace(":pw@", ":***@")
    assert (view["attempts"], view["last_status"], view["message_id"]) == (1, 404, "m1")
    assert view["last_error"].startswith("answered 404")
    assert view["payload"] == {"n": 1}
    assert view["first_attempt_at"] == view["last_attempt_at"] == "2023-11-14 22:13:20.000000"


@pytest_twisted.ensureDeferred
async def test_after_its_last_attempt_a_callback_is_a_dead_letter(harness, receiver):
    receiver.codes = [500] * 3
    settings = CallbackSettings(max_attempts=3)
    url = receiver.url("/mo")
    await harness.send(url, {"n": 1}, settings=settings)
    await harness.send(url, {"n": 2}, settings=settings)
    await harness.advance(1)
    await harness.advance(2)
    assert [r.json["n"] for r in receiver.received] == [1, 1, 1]
    total, records = await harness.store.dead_letters("chan")
    assert total == 1 and dead_letter_view(records[0])["attempts"] == 3
    # The next one waits for the backoff the dead one would have had, then goes.
    await harness.advance(3.9)
    assert len(receiver.received) == 3
    await harness.advance(0.1)
    assert [r.json["n"] for r in receiver.received] == [1, 1, 1, 2]

    # Replayed, it is queued and delivered again, with its id.
    assert await harness.queue.replay("chan", None) == 1
    await harness.advance(0)
    replayed = receiver.received[-1]
    assert replayed.json == {"n": 1}
    assert (
        replayed.headers["x-junebug-callback-id"]
        == receiver.received[0].headers["x-junebug-callback-id"]
    )
    assert (await harness.store.dead_letters("chan"))[0] == 0


@pytest_twisted.ensureDeferred
async def test_a_callback_is_not_retried_past_its_max_age(harness, receiver):
    receiver.codes = [500] * 10
    settings = CallbackSettings(max_age=5)
    await harness.send(receiver.url("/mo"), {"n": 1}, settings=settings)
    await harness.advance(1)  # attempt 2; next wait (2s) still ends within 5s
    await harness.advance(2)  # attempt 3; 3 + 4 > 5: given up
    assert len(receiver.received) == 3
    assert (await harness.store.dead_letters("chan"))[0] == 1
    assert await harness.store.pending_queues() == []


@pytest_twisted.ensureDeferred
async def test_no_answer_is_retried(harness):
    from tests.helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/mo"
    assert await harness.send(url, {"n": 1}) is False
    record = await harness.store.head(queue_id("chan", url))
    assert record["attempts"] == "1" and "ConnectionRefused" in record["last_error"]


class _TooMany(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def render_POST(self, request: Any) -> bytes:
        self.seen += 1
        if self.seen == 1:
            request.setResponseCode(429)
            request.setHeader(b"Retry-After", b"30")
        return b"{}"


@pytest_twisted.ensureDeferred
async def test_429_waits_as_long_as_retry_after_says(harness):
    resource = _TooMany()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/mo"
        assert await harness.send(url, {"n": 1}) is False
        await harness.advance(29)
        assert resource.seen == 1
        await harness.advance(1)
        assert resource.seen == 2
        assert await harness.store.pending_queues() == []
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_pending_callbacks_are_in_redis_not_in_memory(harness, receiver):
    receiver.codes = [500, 500]
    url = receiver.url("/mo")
    settings = CallbackSettings(secret=SECRET, signer="chan")
    await harness.send(url, {"n": 1}, settings=settings)
    await harness.send(url, {"n": 2}, settings=settings)
    # The process goes away; a new one (nothing shared but Redis) takes over.
    await harness.queue.detach("chan", harness.log)
    harness.queue = harness.new_queue()
    await harness.queue.start()
    await harness.advance(1)  # attempt 2 fails again (waits 2s)
    assert [r.json["n"] for r in receiver.received] == [1, 1]
    await harness.advance(2)
    assert [r.json["n"] for r in receiver.received] == [1, 1, 1, 2]
    # Retries are signed with the channel's current secret, looked up each time.
    assert verify(SECRET, receiver.received[-1], START + 3)
    # A new process keeps the order: a new callback waits behind the queued ones.
    receiver.codes = [500]
    await harness.send(url, {"n": 3})
    fresh = harness.new_queue()
    await fresh.attach("chan", harness.log)
    try:
        assert fresh.blocked == {queue_id("chan", url)}
    finally:
        await fresh.detach("chan", harness.log)


@pytest.mark.parametrize("code", [500, 503, 429, None])
def test_what_is_retryable(code):
    from junebug.workers.http import Outcome

    assert Outcome(False, code).retryable


@pytest.mark.parametrize("code", [400, 401, 404, 410, 301])
def test_what_is_not_retryable(code):
    from junebug.workers.http import Outcome

    assert not Outcome(False, code).retryable


# -- the first attempt, without a record unless it fails ----------------------------------


@hypothesis_settings(max_examples=500, deadline=None)
@given(st.text())
def test_callback_ids_are_uuid5_of_the_source(name):
    from junebug.workers.callbacks import _ID_NAMESPACE, _uuid5_hex

    try:
        expected = uuid.uuid5(_ID_NAMESPACE, name).hex
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            _uuid5_hex(name)
        return
    assert _uuid5_hex(name) == expected


@pytest_twisted.ensureDeferred
async def test_a_failed_first_attempt_is_recorded_as_before(harness, receiver):
    """A callback delivered at once never gets a record; one whose first attempt fails
    is written with every field the attempt gave it."""
    from junebug.workers.callbacks import _ID_NAMESPACE

    url = receiver.url("/ev")
    settings = CallbackSettings(max_attempts=7, max_age=99.5, secret=SECRET, signer="chan")
    sent = {"n": 1, "text": "é"}
    assert await harness.send(url, sent, kind="event", settings=settings, source_id="e1")
    delivered = await receiver.next()
    callback_id = uuid.uuid5(_ID_NAMESPACE, f"chan\nevent\ne1\n{url}").hex
    assert delivered.headers["x-junebug-callback-id"] == callback_id
    assert delivered.headers["x-junebug-attempt"] == "1"
    assert verify(SECRET, delivered, START)

    receiver.codes = [503]
    harness.clock.advance(2.5)
    ok = await harness.send(
        url,
        sent,
        kind="event",
        settings=settings,
        token="tok",
        message_id="m2",
        source_id="e2",
        template=url,
    )
    assert ok is False
    record = await harness.store.head(queue_id("chan", url))
    now = START + 2.5
    assert int(record["order"]) // 1000 == int(now * 1000)
    del record["order"]
    assert record == {
        "id": uuid.uuid5(_ID_NAMESPACE, f"chan\nevent\ne2\n{url}").hex,
        "qid": queue_id("chan", url),
        "owner": "chan",
        "kind": "event",
        "url": url,
        "body": '{"n": 1, "text": "\\u00e9"}',
        "token": "tok",
        "message_id": "m2",
        "signer": "chan",
        "max_attempts": "7",
        "max_age": "99.5",
        "created": repr(now),
        "queued": repr(now),
        "attempts": "1",
        "first_attempt": repr(now),
        "last_attempt": repr(now),
        "last_error": record["last_error"],
        "last_status": "503",
    }
    assert record["last_error"].startswith("answered 503")
