"""Guaranteed callbacks survive ``jb`` being killed: callbacks waiting for a retry
when the process gets SIGKILL are all delivered, in order, signed, by the next one."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from junebug.store import redis as redis_store
from junebug.store.callbacks import CallbackStore
from tests.helpers import ApiClient, JbProcess, TelnetUser, free_port, within, write_jb_config

pytestmark = pytest.mark.slow

SECRET = "end-to-end-secret-value"


@pytest_twisted.async_yield_fixture
async def redis_prefix():
    prefix = f"jbcb-{uuid.uuid4().hex[:10]}"
    connection = await redis_store.connect("127.0.0.1", 6379)
    yield prefix, connection
    keys = await connection.keys(f"{prefix}:*")
    if keys:
        await connection.delete(keys)
    await connection.disconnect()


async def until(predicate, seconds: float = 30, step: float = 0.05):
    """Check ``predicate`` (async) on every step until it holds (at most ``seconds``)."""
    waited = 0.0
    while not await predicate():
        assert waited < seconds, "condition not reached"
        await deferLater(reactor, step, lambda: None)
        waited += step


def signed(request) -> bool:
    fields = dict(p.split("=", 1) for p in request.headers["x-junebug-signature"].split(","))
    mac = hmac.new(SECRET.encode(), fields["t"].encode() + b"." + request.body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), fields["v1"])


@pytest_twisted.ensureDeferred
async def test_pending_callbacks_survive_sigkill(tmp_path, receiver, redis_prefix):
    prefix, connection = redis_prefix
    port = free_port()
    config = write_jb_config(tmp_path, port, redis_prefix=prefix)
    store = CallbackStore(connection, redis_store.Keys(prefix))
    receiver.codes = [503] * 10_000  # down until after the restart
    jb = await JbProcess("-c", str(config), cwd=str(tmp_path)).start()
    try:
        api = ApiClient(f"http://127.0.0.1:{port}")
        telnet_port = free_port()
        code, body = await api.post(
            "/channels/",
            {
                "type": "telnet",
                "config": {"twisted_endpoint": f"tcp:{telnet_port}:interface=127.0.0.1"},
                "mo_url": receiver.url("/mo/{message_id}"),
                "callback_secret": SECRET,
            },
        )
        assert code == 201, body
        channel_id = body["result"]["id"]
        user = await TelnetUser().connect(telnet_port)
        await receiver.next()  # the session's start, refused

        async def first_pending() -> bool:
            return await store.pending_count(channel_id) == 1

        # Sent after the first failure: these wait behind it, untried.
        await until(first_pending)
        user.type("one")
        user.type("two")
        code, body = await api.post(
            f"/channels/{channel_id}/messages/",
            {"to": user.address, "content": "out", "event_url": receiver.url("/events")},
        )
        assert code == 201, body
        sent_id = body["result"]["message_id"]
        await user.next_line()

        async def all_pending() -> bool:
            return await store.pending_count(channel_id) == 4  # 3 inbound + 1 event

        await until(all_pending)
        jb.transport.signalProcess("KILL")
        await within(jb.ended)
    finally:
        if not jb.ended.called:
            await jb.stop()
    assert jb.exit_code != 0
    attempts_before = len(receiver.received)
    ids_before = {r.headers["x-junebug-callback-id"] for r in receiver.received}
    assert len(ids_before) == 2  # the first of each URL's queue; the rest wait behind

    jb = await JbProcess("-c", str(config), cwd=str(tmp_path)).start()
    try:
        first_healthy = len(receiver.received)
        receiver.codes = []  # the receiver is back

        async def delivered() -> bool:
            return await store.pending_count(channel_id) == 0

        await until(delivered)
        healthy = receiver.received[first_healthy:]
        inbound = [r for r in healthy if r.path.startswith("/mo/")]
        events = [r for r in healthy if r.path == "/events"]
        assert [r.json["content"] for r in inbound][-3:] == [None, "one", "two"]
        assert all(r.path == f"/mo/{r.json['message_id']}" for r in inbound)
        assert events[-1].json["message_id"] == sent_id
        assert events[-1].json["event_type"] == "submitted"
        assert all(signed(r) for r in healthy)
        # Same ids as before the kill: the receiver can tell a retry from a new callback.
        assert ids_before <= {r.headers["x-junebug-callback-id"] for r in healthy}
        assert int(inbound[-3].headers["x-junebug-attempt"]) > 1
        assert attempts_before >= 2
        code, body = await ApiClient(f"http://127.0.0.1:{port}").get(
            f"/channels/{channel_id}/dead-letters"
        )
        assert body["result"]["total"] == 0
    finally:
        assert await jb.stop() == 0, jb.output
