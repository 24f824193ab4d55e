"""Redis going away: commands fail fast (503 from the API), and work again after."""

from __future__ import annotations

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.task import deferLater

from junebug.store import redis as redis_store
from tests.servers import private_redis_fixture

private_redis = private_redis_fixture()

pytestmark = pytest.mark.slow


async def eventually(check, attempts: int = 100):
    """Retry ``check`` on later reactor turns (bounded) until it stops raising."""
    for attempt in range(attempts):
        try:
            return await check()
        except txredisapi.ConnectionError:
            if attempt == attempts - 1:
                raise
            await deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_commands_fail_while_redis_is_down_and_work_after(private_redis):
    connection = await redis_store.connect("127.0.0.1", private_redis.port, command_timeout=1)
    try:
        await connection.set("k", "v")
        private_redis.stop()
        with pytest.raises(txredisapi.ConnectionError):
            await connection.get("k")
        private_redis.start()
        assert await eventually(lambda: connection.ping()) == "PONG"
    finally:
        await connection.disconnect()


@pytest_twisted.ensureDeferred
async def test_the_api_answers_503_while_redis_is_down(private_redis, tmp_path):
    from twisted.web.server import Site

    from junebug.api.app import JunebugApi
    from junebug.backends import Backends
    from junebug.bus.local import LocalBus
    from junebug.manager import ChannelManager
    from junebug.transports.registry import channel_types
    from junebug.workers.http import CallbackPoster
    from tests.conftest import make_config
    from tests.helpers import ApiClient

    connection = await redis_store.connect("127.0.0.1", private_redis.port, command_timeout=1)
    backends = Backends(
        config=make_config(tmp_path),
        clock=reactor,
        bus=LocalBus(reactor),
        redis=connection,
        keys=redis_store.Keys("outage"),
        poster=CallbackPoster(reactor),
        channel_types=channel_types({}),
    )
    api = JunebugApi(ChannelManager(backends), backends)
    port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
    client = ApiClient(f"http://127.0.0.1:{port.getHost().port}")
    try:
        assert (await client.get("/channels/"))[0] == 200
        private_redis.stop()
        code, body = await client.get("/channels/")
        assert code == 503
        assert body["result"]["errors"][0]["type"] == "StoreUnavailable"
        private_redis.start()

        async def listed():
            code, _ = await client.get("/channels/")
            if code != 200:
                raise txredisapi.ConnectionError("not yet")
            return code

        assert await eventually(listed) == 200
    finally:
        await port.stopListening()
        await backends.poster.close()
        await connection.disconnect()
