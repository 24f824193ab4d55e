"""``jb`` as a user runs it: the getting-started walkthrough (spec 1.2) end to end,
on the embedded default and on the real Redis, and channels surviving a restart."""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted

from junebug.store import redis as redis_store
from tests.helpers import ApiClient, JbProcess, TelnetUser, free_port, write_jb_config
from tests.walkthrough import walkthrough

pytestmark = pytest.mark.slow


@pytest_twisted.ensureDeferred
async def test_walkthrough_on_the_embedded_default_survives_a_restart(tmp_path, receiver):
    port = free_port()
    args = ("-p", str(port), "--data-dir", str(tmp_path / "data"), "-lp", str(tmp_path / "logs"))
    jb = await JbProcess(*args, cwd=str(tmp_path)).start()
    try:
        assert "Running embedded" in jb.output and str(tmp_path / "data") in jb.output
        api = ApiClient(f"http://localhost:{port}")
        channel_id, telnet_port = await walkthrough(api, receiver)
    finally:
        assert await jb.stop() == 0, jb.output

    jb = await JbProcess(*args, cwd=str(tmp_path)).start()
    try:
        code, body = await api.get("/channels/")
        assert body["result"] == [channel_id]
        user = await TelnetUser().connect(telnet_port)
        assert (await receiver.next()).json["channel_data"] == {"session_event": "new"}
        await user.hang_up()
    finally:
        assert await jb.stop() == 0, jb.output


@pytest_twisted.async_yield_fixture
async def redis_prefix():
    prefix = f"jbe2e-{uuid.uuid4().hex[:10]}"
    yield prefix
    connection = await redis_store.connect("127.0.0.1", 6379)
    keys = await connection.keys(f"{prefix}:*")
    if keys:
        await connection.delete(keys)
    await connection.disconnect()


@pytest_twisted.ensureDeferred
async def test_walkthrough_on_the_real_redis(tmp_path, receiver, redis_prefix):
    port = free_port()
    config = write_jb_config(tmp_path, port, redis_prefix=redis_prefix)
    jb = await JbProcess("-c", str(config), cwd=str(tmp_path)).start()
    try:
        assert "Redis at 127.0.0.1:6379" in jb.output
        api = ApiClient(f"http://localhost:{port}")
        channel_id, _ = await walkthrough(api, receiver)
        connection = await redis_store.connect("127.0.0.1", 6379)
        try:
            assert channel_id in await connection.smembers(f"{redis_prefix}:channels")
        finally:
            await connection.disconnect()
    finally:
        assert await jb.stop() == 0, jb.output
    assert not (tmp_path / "junebug-data").exists()  # never silently embedded


@pytest_twisted.ensureDeferred
async def test_an_unreachable_redis_is_a_clear_start_up_failure(tmp_path):
    jb = JbProcess("-p", str(free_port()), "--redis-port", str(free_port()), cwd=str(tmp_path))
    with pytest.raises(RuntimeError, match="cannot connect to Redis"):
        await jb.start()
    assert jb.exit_code == 1


@pytest_twisted.ensureDeferred
async def test_walkthrough_on_redis_and_rabbitmq(tmp_path, receiver, redis_prefix):
    port = free_port()
    config = write_jb_config(tmp_path, port, redis_prefix=redis_prefix, amqp_port=5672)
    jb = await JbProcess("-c", str(config), cwd=str(tmp_path)).start()
    try:
        assert "RabbitMQ at 127.0.0.1:5672" in jb.output
        channel_id, _ = await walkthrough(ApiClient(f"http://localhost:{port}"), receiver)
    finally:
        assert await jb.stop() == 0, jb.output
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        for kind in ("inbound", "outbound", "event", "status.status"):
            connection.channel().queue_delete(f"{channel_id}.{kind}")
    finally:
        connection.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_start_is_said_on_stderr_even_with_logging_off(tmp_path):
    jb = JbProcess(
        "-p",
        str(free_port()),
        "--redis-port",
        str(free_port()),
        cwd=str(tmp_path),
        env={"JUNEBUG_DISABLE_LOGGING": "1"},
    )
    with pytest.raises(RuntimeError, match="jb: cannot start: cannot connect to Redis"):
        await jb.start()
    assert jb.exit_code == 1
