"""Fixtures: the real Redis on 127.0.0.1:6379 under a per-test key prefix, the local
bus, an HTTP receiver, and a running Junebug API."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.server import Site

from junebug.store import redis as redis_store
from tests.helpers import ApiClient, Receiver

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


def make_config(tmp_path: Any, **overrides: Any) -> Any:
    """A JunebugConfig for tests: defaults plus logs under tmp_path."""
    from junebug.config import JunebugConfig

    fields = {"logging_path": str(tmp_path / "logs"), "data_dir": str(tmp_path / "data")}
    fields.update(overrides)
    return JunebugConfig(**fields)


@pytest.fixture
def key_prefix() -> str:
    return f"jbtest-{uuid.uuid4().hex[:12]}"


@pytest_twisted.async_yield_fixture
async def redis(key_prefix: str):
    """A connection to the shared Redis; every key the test wrote is removed after."""
    connection = await redis_store.connect(REDIS_HOST, REDIS_PORT)
    yield connection
    keys = await connection.keys(f"{key_prefix}:*")
    if keys:
        await connection.delete(keys)
    await connection.disconnect()


@pytest_twisted.async_yield_fixture
async def receiver():
    server = Receiver().start()
    yield server
    await server.stop()


@pytest.fixture
def config(tmp_path: Any) -> Any:
    return make_config(tmp_path)


@pytest_twisted.async_yield_fixture
async def gateway(config: Any, redis: Any, key_prefix: str):
    """Backends + channel manager on the local bus and the shared Redis."""
    from junebug.backends import Backends
    from junebug.bus.local import LocalBus
    from junebug.manager import ChannelManager
    from junebug.transports.registry import channel_types
    from junebug.workers.http import CallbackPoster

    bus = LocalBus(reactor)
    poster = CallbackPoster(reactor, timeout=2)
    backends = Backends(
        config=config,
        clock=reactor,
        bus=bus,
        redis=redis,
        keys=redis_store.Keys(key_prefix),
        poster=poster,
        channel_types=channel_types(config.channels, config.replace_channels),
    )
    manager = ChannelManager(backends)
    yield manager
    await manager.stop_all()
    await bus.stop()
    await poster.close()


@pytest_twisted.async_yield_fixture
async def api(gateway: Any):
    """A running API over ``gateway``; yields an ApiClient."""
    from junebug.api.app import JunebugApi

    app = JunebugApi(gateway, gateway.backends)
    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
    yield ApiClient(f"http://127.0.0.1:{port.getHost().port}")
    await port.stopListening()
