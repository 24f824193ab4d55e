"""Several jb processes: each runs the routers as Redis stores them (``follow_store``).

``routers`` (the fixture) is the process whose API (``rapi``) makes the changes;
``other`` is a second RouterManager on the same Redis and bus, as another jb would be.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.task import Clock

from junebug.logs import read_logs
from junebug.routers import manager as manager_module
from tests.routers.support import make_destination, make_router, routed_channel, subcode


@pytest_twisted.async_yield_fixture
async def other(gateway: Any, routers: Any):
    from junebug.routers.manager import RouterManager

    manager = RouterManager(gateway.backends, gateway, routers.types)
    yield manager
    await manager.stop_all()


def _destinations(router: Any) -> dict[str, Any]:
    return {d.id: d.config for d in router.destinations.values()}


@pytest_twisted.ensureDeferred
async def test_routers_created_changed_and_deleted_elsewhere_follow(rapi, receiver, routers, other):
    await other.follow_store()
    assert other.running == {}
    channel_id, _ = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    destination_id = await make_destination(
        rapi, router_id, {"regular_expression": "a"}, mo_url=receiver.url("/mo")
    )

    await other.follow_store()  # created elsewhere: started here
    started = other.running[router_id]
    assert _destinations(started) == {destination_id: {"regular_expression": "a"}}

    await other.follow_store()  # nothing changed: left running as it is
    assert other.running[router_id] is started

    code, body, _ = await rapi.request(
        "PATCH",
        f"/routers/{router_id}/destinations/{destination_id}",
        {"config": {"regular_expression": "b"}},
    )
    assert code == 200, body
    await other.follow_store()  # changed elsewhere: restarted with the new settings
    assert other.running[router_id] is not started
    assert _destinations(other.running[router_id]) == {destination_id: {"regular_expression": "b"}}
    assert _destinations(routers.running[router_id]) == _destinations(other.running[router_id])

    code, body = await rapi.delete(f"/routers/{router_id}")
    assert code == 200, body
    await other.follow_store()  # deleted elsewhere: stopped
    assert other.running == {}


@pytest_twisted.ensureDeferred
async def test_a_router_that_cannot_start_is_logged_once_and_tried_again(
    rapi, gateway, routers, other, monkeypatch
):
    channel_id, _ = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    attempts = []
    start = other._start

    async def failing(router_id: str, *args: Any) -> None:
        attempts.append(router_id)
        if len(attempts) < 3:
            raise RuntimeError("the bus is away")
        await start(router_id, *args)

    monkeypatch.setattr(other, "_start", failing)
    await other.follow_store()
    await other.follow_store()
    assert router_id not in other.running and len(attempts) == 2
    lines = read_logs(gateway.backends.config.logging_path, router_id, 50)
    failures = [line for line in lines if "could not start" in line["message"]]
    assert [line["message"] for line in failures] == ["Router could not start: the bus is away"]
    await other.follow_store()  # the third try starts it
    assert router_id in other.running


@pytest_twisted.ensureDeferred
async def test_the_store_is_looked_at_every_interval_until_stopped(other, monkeypatch):
    looks = []

    async def look() -> None:
        looks.append(clock.seconds())

    clock = Clock()
    monkeypatch.setattr(other, "follow_store", look)
    other.keep_in_step(clock=clock)
    clock.advance(manager_module.STEP_INTERVAL - 0.1)
    assert looks == []
    clock.advance(0.1)
    clock.advance(manager_module.STEP_INTERVAL)
    assert looks == [manager_module.STEP_INTERVAL, 2 * manager_module.STEP_INTERVAL]
    await other.stop_all()
    clock.advance(manager_module.STEP_INTERVAL)
    assert len(looks) == 2


@pytest_twisted.ensureDeferred
async def test_a_look_that_fails_is_logged_and_the_next_one_happens(other, monkeypatch):
    looks = []

    async def look() -> None:
        looks.append(clock.seconds())
        raise ConnectionError("Redis is away")

    clock = Clock()
    monkeypatch.setattr(other, "follow_store", look)
    other.keep_in_step(clock=clock)
    clock.advance(manager_module.STEP_INTERVAL)
    clock.advance(manager_module.STEP_INTERVAL)
    assert len(looks) == 2


@pytest_twisted.ensureDeferred
async def test_jb_keeps_its_routers_in_step_while_it_runs(tmp_path, key_prefix, redis):
    from junebug.service import JunebugService
    from tests.conftest import make_config
    from tests.helpers import free_port

    config = make_config(
        tmp_path,
        port=free_port(),
        redis={"host": "127.0.0.1", "port": 6379, "key_prefix": key_prefix},
    )
    service = JunebugService(config)
    await service.start()
    stepping = service.routers._stepping
    try:
        assert stepping is not None and stepping.running
        assert stepping.interval == manager_module.STEP_INTERVAL
    finally:
        await service.stop()
    assert not stepping.running


@pytest_twisted.ensureDeferred
async def test_stopping_waits_for_a_look_that_is_starting_a_router(rapi, other, monkeypatch):
    from twisted.internet.defer import Deferred

    channel_id, _ = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    gate, starting = Deferred(), Deferred()
    start = other._start

    async def slow_start(*args: Any) -> None:
        starting.callback(None)
        await gate
        await start(*args)

    monkeypatch.setattr(other, "_start", slow_start)
    clock = Clock()
    other.keep_in_step(clock=clock)
    clock.advance(manager_module.STEP_INTERVAL)
    await starting  # the look is starting the router
    stopped = Deferred.fromCoroutine(other.stop_all())
    assert not stopped.called
    gate.callback(None)
    await stopped
    assert other.running == {}  # started by the look, then stopped: nothing left running
    assert router_id not in other._running_as


@pytest_twisted.ensureDeferred
async def test_one_unreadable_router_does_not_keep_the_others_from_following(rapi, gateway, other):
    channel_id, _ = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    b = gateway.backends
    await b.redis.sadd(b.keys("routers"), "0-broken")  # sorts first
    await b.redis.set(b.keys("routers", "0-broken"), "{not json")
    try:
        await other.follow_store()
        assert list(other.running) == [router_id]
    finally:
        await b.redis.srem(b.keys("routers"), "0-broken")
        await b.redis.delete(b.keys("routers", "0-broken"))


@pytest_twisted.ensureDeferred
async def test_no_lock_is_kept_once_a_change_is_done(rapi, routers):
    channel_id, _ = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    for _ in range(3):
        code, _ = await rapi.delete("/routers/no-such-router")
        assert code == 404
    code, _ = await rapi.post("/routers/", {"type": "nope", "config": {}})
    assert code == 400
    code, _ = await rapi.delete(f"/routers/{router_id}")
    assert code == 200
    assert len(routers._lock) == 0


@pytest_twisted.ensureDeferred
async def test_a_destination_deleted_elsewhere_is_cleaned_up_here_too(
    rapi, receiver, other, monkeypatch
):
    channel_id, _ = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    kept = await make_destination(rapi, router_id, {"regular_expression": "a"})
    dropped = await make_destination(rapi, router_id, {"regular_expression": "b"})
    await other.follow_store()
    forgotten = []
    forget = other._forget_destination

    async def recording(destination_id: str) -> None:
        forgotten.append(destination_id)
        await forget(destination_id)

    monkeypatch.setattr(other, "_forget_destination", recording)
    code, _ = await rapi.delete(f"/routers/{router_id}/destinations/{dropped}")
    assert code == 200
    await other.follow_store()
    assert forgotten == [dropped]
    assert list(other.running[router_id].destinations) == [kept]
    code, _ = await rapi.delete(f"/routers/{router_id}")
    assert code == 200
    await other.follow_store()
    assert forgotten == [dropped, kept] and other.running == {}
