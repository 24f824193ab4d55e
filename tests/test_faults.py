"""Backends going away under a running ``jb`` and coming back, and several ``jb``
processes sharing one Redis and one RabbitMQ.

The fast tests drive the pieces (``workers.components``, ``store.claims``) with a
fake clock; each outage test runs ``jb`` as a child process against private servers it stops or
kills and restarts on the same port (tests.servers), a telnet user, and HTTP
receivers for mo_url and status_url. What must hold: jb keeps running and
reconnects; the channel's status_url hears component ``amqp``/``redis`` go down with
the reason and come back ok; GET /channels/{id} ends ok; messages sent before,
during (the API answers 503 while a backend is down, and the client retries) and
after all arrive, at least once.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from junebug.store import redis as redis_store
from tests.helpers import (
    ApiClient,
    JbProcess,
    Receiver,
    TelnetUser,
    free_port,
    within,
    write_jb_config,
)
from tests.servers import PrivateRabbitMQ, PrivateRedis, running

slow = pytest.mark.slow


def in_background(coroutine: Any) -> Deferred:
    return Deferred.fromCoroutine(coroutine)


def sleep(seconds: float):
    return deferLater(reactor, seconds, lambda: None)


async def next_matching(receiver: Receiver, predicate: Any, seconds: float = 30) -> Any:
    """The JSON of the next request ``receiver`` gets that satisfies ``predicate``."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            seen = [r.json for r in receiver.received]
            raise AssertionError(f"no matching request within {seconds}s; saw {seen}")
        try:
            request = await receiver.next(left)
        except Exception as exc:
            seen = [r.json for r in receiver.received]
            raise AssertionError(f"no matching request within {seconds}s; saw {seen}") from exc
        if predicate(request.json):
            return request.json


def status_of(component: str, level: str):
    return lambda body: body.get("component") == component and body.get("status") == level


def content_is(text: str):
    return lambda body: body.get("content") == text


async def send_retrying(api: ApiClient, channel_id: str, body: dict, seconds: float = 40) -> str:
    """POST a message, retrying while the API answers 503 (or doesn't answer)."""
    deadline = time.monotonic() + seconds
    answers = []
    while time.monotonic() < deadline:
        try:
            code, answer = await api.post(f"/channels/{channel_id}/messages/", body)
        except Exception as exc:  # noqa: BLE001 - a timeout: try again
            answers.append(repr(exc))
            continue
        if code == 201:
            return answer["result"]["message_id"]
        assert code == 503, answer
        answers.append(answer["description"])
        await sleep(0.5)
    raise AssertionError(f"message not accepted within {seconds}s: {answers}")


async def lines_until(user: TelnetUser, wanted: set[str], seconds: float = 30) -> list[str]:
    """Lines the user reads until every one of ``wanted`` arrived (duplicates allowed)."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while not wanted <= set(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"user saw {seen}, wanted {wanted}"
        seen.append(await user.next_line(left))
    return seen


class Deployment:
    """A jb child process on given Redis and RabbitMQ ports, with receivers."""

    def __init__(self, tmp_path: Any, redis_port: int, amqp_port: int, prefix: str) -> None:
        self.tmp_path = tmp_path
        self.redis_port = redis_port
        self.amqp_port = amqp_port
        self.prefix = prefix
        self.mo = Receiver().start()
        self.statuses = Receiver().start()
        self.processes: list[JbProcess] = []

    async def start_jb(self, name: str = "jb") -> tuple[JbProcess, ApiClient]:
        port = free_port()
        config = write_jb_config(
            self.tmp_path,
            port,
            redis_prefix=self.prefix,
            redis_port=self.redis_port,
            amqp_port=self.amqp_port,
            name=name,
            logs=self.tmp_path / f"{name}-logs",
        )
        jb = await JbProcess("-c", str(config), cwd=str(self.tmp_path)).start()
        self.processes.append(jb)
        return jb, ApiClient(f"http://127.0.0.1:{port}")

    async def create_channel(self, api: ApiClient, telnet_port: int) -> str:
        code, body = await api.post(
            "/channels/",
            {
                "type": "telnet",
                "config": {"twisted_endpoint": f"tcp:{telnet_port}"},
                "mo_url": self.mo.url("/mo"),
                "status_url": self.statuses.url("/status"),
            },
        )
        assert code == 201, body
        return body["result"]["id"]

    async def close(self) -> None:
        for jb in self.processes:
            if not jb.ended.called:
                await jb.stop()
        await self.mo.stop()
        await self.statuses.stop()


async def remove_keys(port: int, prefix: str) -> None:
    connection = await redis_store.connect("127.0.0.1", port)
    keys = await connection.keys(f"{prefix}:*")
    if keys:
        await connection.delete(keys)
    await connection.disconnect()


async def connected_user(deployment: Deployment, telnet_port: int) -> TelnetUser:
    user = await TelnetUser().connect(telnet_port)
    new = await next_matching(deployment.mo, lambda b: b["from"] == user.address)
    assert new["channel_data"]["session_event"] == "new"
    return user


async def channel_components(api: ApiClient, channel_id: str) -> dict:
    code, body = await api.get(f"/channels/{channel_id}")
    assert code == 200, body
    return body["result"]["status"]


@slow
@pytest.mark.parametrize("how", ["kill", "stop"])
@pytest_twisted.ensureDeferred
async def test_rabbitmq_goes_away_and_comes_back(tmp_path, how):
    redis_server = PrivateRedis()
    with running(redis_server), running(PrivateRabbitMQ()) as rabbit:
        deployment = Deployment(tmp_path, redis_server.port, rabbit.port, "jbfault")
        try:
            jb, api = await deployment.start_jb()
            telnet_port = free_port()
            channel_id = await deployment.create_channel(api, telnet_port)
            await next_matching(deployment.statuses, status_of("telnet", "ok"))
            user = await connected_user(deployment, telnet_port)

            user.type("before")
            await next_matching(deployment.mo, content_is("before"))
            await send_retrying(api, channel_id, {"to": user.address, "content": "out before"})
            assert await user.next_line() == "out before"

            await deferToThread(rabbit.kill if how == "kill" else rabbit.stop)
            down = await next_matching(deployment.statuses, status_of("amqp", "down"))
            assert down["channel_id"] == channel_id and down["type"] == "connection_lost"
            assert "RabbitMQ connection lost" in down["message"]

            # Sent while the broker is away: 503 (or a wait) until it is back.
            during = in_background(
                send_retrying(api, channel_id, {"to": user.address, "content": "out during"})
            )
            await deferToThread(rabbit.start)
            await during
            ok = await next_matching(deployment.statuses, status_of("amqp", "ok"), 40)
            assert ok["type"] == "connected"

            user.type("after")
            await next_matching(deployment.mo, content_is("after"))
            await send_retrying(api, channel_id, {"to": user.address, "content": "out after"})
            await lines_until(user, {"out during", "out after"})

            status = await channel_components(api, channel_id)
            assert status["status"] == "ok", status
            assert status["components"]["amqp"]["status"] == "ok"
            assert not jb.ended.called
            await user.hang_up()
        finally:
            await deployment.close()


@slow
@pytest.mark.parametrize("how", ["kill", "stop"])
@pytest_twisted.ensureDeferred
async def test_redis_goes_away_and_comes_back(tmp_path, how):
    """On the shared RabbitMQ; the private Redis snapshots its data before it goes
    (a production Redis persists it: docs/deploying.md)."""
    prefix = f"jbfault-{uuid.uuid4().hex[:8]}"
    with running(PrivateRedis()) as redis_server:
        deployment = Deployment(tmp_path, redis_server.port, 5672, prefix)
        try:
            jb, api = await deployment.start_jb()
            telnet_port = free_port()
            channel_id = await deployment.create_channel(api, telnet_port)
            await next_matching(deployment.statuses, status_of("telnet", "ok"))
            user = await connected_user(deployment, telnet_port)
            user.type("before")
            await next_matching(deployment.mo, content_is("before"))

            connection = await redis_store.connect("127.0.0.1", redis_server.port)
            await connection.save()
            await connection.disconnect()
            await deferToThread(redis_server.kill if how == "kill" else redis_server.stop)

            down = await next_matching(deployment.statuses, status_of("redis", "down"))
            assert down["channel_id"] == channel_id and "Redis is unavailable" in down["message"]
            code, body = await api.get(f"/channels/{channel_id}")
            assert code == 503 and body["description"] == "redis connection error"

            # An MO typed now waits on the bus; a send is refused (503) until Redis is back.
            user.type("during")
            during = in_background(
                send_retrying(api, channel_id, {"to": user.address, "content": "out during"})
            )
            await sleep(2)
            await deferToThread(redis_server.start)
            await during
            await next_matching(deployment.mo, content_is("during"), 40)
            await next_matching(deployment.statuses, status_of("redis", "ok"), 40)

            user.type("after")
            await next_matching(deployment.mo, content_is("after"))
            await send_retrying(api, channel_id, {"to": user.address, "content": "out after"})
            await lines_until(user, {"out during", "out after"})

            # The down status couldn't be stored while Redis was away; the latest is.
            status = await channel_components(api, channel_id)
            assert status["components"]["redis"]["status"] == "ok", status
            assert status["status"] == "ok"
            assert not jb.ended.called
            await user.hang_up()
            code, _ = await api.delete(f"/channels/{channel_id}")
            assert code == 200
        finally:
            await deployment.close()


@slow
@pytest_twisted.ensureDeferred
async def test_two_processes_share_redis_and_rabbitmq(tmp_path):
    """Each channel runs in one process: the other shows it and sends through it, but
    refuses to change it, and takes it over once the first process stops."""
    prefix = f"jbtwo-{uuid.uuid4().hex[:8]}"
    deployment = Deployment(tmp_path, 6379, 5672, prefix)
    try:
        first, api_a = await deployment.start_jb("first")
        telnet_port = free_port()
        channel_id = await deployment.create_channel(api_a, telnet_port)
        user = await connected_user(deployment, telnet_port)

        second, api_b = await deployment.start_jb("second")
        assert "is running in another Junebug process" in second.output
        code, body = await api_b.get(f"/channels/{channel_id}")
        assert code == 200 and body["result"]["id"] == channel_id
        # A message sent through the second process goes out through the first.
        code, body = await api_b.post(
            f"/channels/{channel_id}/messages/", {"to": user.address, "content": "via b"}
        )
        assert code == 201, body
        assert await user.next_line() == "via b"
        for call in (
            api_b.post(f"/channels/{channel_id}", {"label": "changed"}),
            api_b.post(f"/channels/{channel_id}/restart"),
            api_b.delete(f"/channels/{channel_id}"),
        ):
            code, body = await call
            assert code == 409, body
            assert body["result"]["errors"][0]["type"] == "ChannelRunningElsewhere"
            assert "running in another Junebug process" in body["result"]["errors"][0]["message"]
        code, body = await api_a.get(f"/channels/{channel_id}")
        assert "label" not in body["result"]

        # The first process stops (releasing its claims): the second adopts the channel.
        assert await first.stop() == 0, first.output
        await user.disconnected
        deadline = time.monotonic() + 20
        while True:
            try:
                user = await TelnetUser().connect(telnet_port)
                break
            except Exception:
                assert time.monotonic() < deadline, second.output
                await sleep(0.5)
        await next_matching(deployment.mo, lambda b: b["from"] == user.address)
        code, body = await api_b.post(f"/channels/{channel_id}", {"label": "changed"})
        assert code == 200, body
        await user.hang_up()
        code, _ = await api_b.delete(f"/channels/{channel_id}")
        assert code == 200
    finally:
        await deployment.close()
        await remove_keys(6379, prefix)


# -- the pieces, fast ---------------------------------------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], dict] = {}
        self.failing = False

    async def set(self, owner: str, status: dict) -> None:
        if self.failing:
            raise ConnectionError("Redis is away")
        self.saved[(owner, status["component"])] = status


class FakePoster:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []

    async def post(self, url: str, payload: dict, **kw: Any) -> bool:
        self.posts.append((url, payload))
        return True


class FakeLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str, **kw: Any) -> None:
        self.lines.append(text)

    warning = error = info


class FakeChannel:
    def __init__(self, channel_id: str, status_url: str | None) -> None:
        self.id = channel_id
        self.properties = {"status_url": status_url} if status_url else {}
        self.log = FakeLog()


def backend_status(channels: list, store: FakeStore, poster: FakePoster, clock: Any):
    from junebug.workers.components import BackendStatus

    return BackendStatus(lambda: channels, store=store, poster=poster, clock=clock)


def test_a_backend_transition_is_a_status_of_every_running_channel():
    from twisted.internet.task import Clock

    clock, store, poster = Clock(), FakeStore(), FakePoster()
    channels = [FakeChannel("a", "http://app/status"), FakeChannel("b", None)]
    status = backend_status(channels, store, poster, clock)

    status.amqp_changed(False, "Connection refused")
    status.amqp_changed(False, "Connection refused again")  # still down: nothing new
    assert [(url, p["channel_id"], p["component"], p["status"]) for url, p in poster.posts] == [
        ("http://app/status", "a", "amqp", "down")
    ]
    assert poster.posts[0][1]["message"] == "RabbitMQ connection lost: Connection refused"
    assert {k: v["status"] for k, v in store.saved.items()} == {
        ("a", "amqp"): "down",
        ("b", "amqp"): "down",
    }
    assert channels[1].log.lines == [
        "Status amqp: down (connection_lost): RabbitMQ connection lost: Connection refused"
    ]

    status.amqp_changed(True, "connected to amqp://127.0.0.1:5672/")
    assert [p["status"] for _, p in poster.posts] == ["down", "ok"]
    assert poster.posts[1][1]["type"] == "connected"
    assert store.saved[("a", "amqp")]["status"] == "ok"


def test_statuses_wait_in_memory_while_redis_is_away():
    from twisted.internet.task import Clock

    from junebug.workers.components import REDIS

    clock, store, poster = Clock(), FakeStore(), FakePoster()
    channels = [FakeChannel("a", "http://app/status")]
    status = backend_status(channels, store, poster, clock)

    store.failing = True
    status.changed(REDIS, False, "Redis is unavailable: Lost connection")
    assert [p["status"] for _, p in poster.posts] == ["down"]  # posted at once
    assert store.saved == {} and set(status.pending) == {("a", "redis")}
    clock.advance(status.store_retry)
    assert store.saved == {}

    status.changed(REDIS, True, "Redis is available again")
    store.failing = False
    clock.advance(status.store_retry)
    assert [p["status"] for _, p in poster.posts] == ["down", "ok"]
    assert store.saved[("a", "redis")]["status"] == "ok"  # only the latest is written
    assert status.pending == {}


def test_the_redis_watcher_reports_transitions_only():
    from twisted.internet.defer import fail, succeed
    from twisted.internet.task import Clock

    from junebug.workers.components import RedisWatcher

    class FlakyRedis:
        up = True

        def ping(self):
            return succeed("PONG") if self.up else fail(ConnectionError("Lost connection"))

    clock, redis, seen = Clock(), FlakyRedis(), []
    watcher = RedisWatcher(redis, lambda up, why: seen.append((up, why)), clock=clock)
    watcher.start()
    clock.advance(1)
    redis.up = False
    clock.advance(1)
    clock.advance(1)
    redis.up = True
    clock.advance(1)
    watcher.stop()
    assert seen == [
        (False, "Redis is unavailable: Lost connection"),
        (True, "Redis is available again"),
    ]


@pytest_twisted.ensureDeferred
async def test_a_claim_belongs_to_one_process(redis, key_prefix):
    from junebug.store.claims import ClaimedElsewhere, ClaimStore
    from junebug.store.redis import Keys

    mine = ClaimStore(redis, Keys(key_prefix), "host-a:8080", ttl=5)
    theirs = ClaimStore(redis, Keys(key_prefix), "host-b:8080", ttl=5)
    await mine.claim("c1")
    await mine.claim("c1")  # renewing is claiming again
    with pytest.raises(ClaimedElsewhere, match=r"another Junebug process \(host-a:8080\)"):
        await theirs.claim("c1")
    with pytest.raises(ClaimedElsewhere):
        await theirs.check("c1")
    await mine.check("c1")
    await theirs.release("c1")  # not theirs to release
    assert await mine.owner("c1") == "host-a:8080"
    await mine.release("c1")
    await theirs.claim("c1")
    assert await redis.ttl(f"{key_prefix}:c1:claim") > 0
    await theirs.release("c1")


@pytest_twisted.ensureDeferred
async def test_stopping_waits_for_a_claims_look_that_is_starting_a_channel(
    gateway, redis, key_prefix, monkeypatch
):
    import attrs
    from twisted.internet.task import Clock

    from junebug.manager import ChannelManager
    from junebug.store.claims import ClaimStore
    from junebug.store.redis import Keys

    channel = await gateway.create(
        {"type": "telnet", "config": {"twisted_endpoint": "tcp:0:interface=127.0.0.1"}}
    )
    clock = Clock()
    backends = attrs.evolve(gateway.backends, clock=clock)
    manager = ChannelManager(backends, claims=ClaimStore(redis, Keys(key_prefix), "host-b:1"))
    gate, starting = Deferred(), Deferred()
    start = manager._start

    async def slow_start(channel):
        starting.callback(None)
        await gate
        await start(channel)

    monkeypatch.setattr(manager, "_start", slow_start)
    manager.keep_claims(interval=10)
    clock.advance(10)
    await within(starting)  # the look found the unclaimed channel and is starting it
    stopped = Deferred.fromCoroutine(manager.stop_all())
    assert not stopped.called
    gate.callback(None)
    await within(stopped)
    assert manager.running == {}  # started by the look, then stopped: nothing left running
    assert await ClaimStore(redis, Keys(key_prefix), "x").owner(channel.id) is None
