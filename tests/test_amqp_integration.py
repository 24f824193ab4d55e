"""AMQP integration for applications (spec 1.9), with pika playing an independent app.

A ``jb`` runs against the shared RabbitMQ and Redis (its keys under a unique prefix).
The app declares and binds its own queues on exchange ``vumi``, as docs/amqp.md tells
apps to, and talks to a telnet channel created with ``amqp_queue`` through the API.
Also here: the production config in deploy/ loads with jb's own config loader.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest
import pytest_twisted
import yaml
from twisted.internet.threads import deferToThread

from junebug import messages
from junebug.store import redis as redis_store
from tests.helpers import ApiClient, JbProcess, TelnetUser, free_port, within, write_jb_config

ROOT = Path(__file__).resolve().parent.parent
AMQP_PORT = 5672


class PikaApp:
    """An AMQP application on ``<queue>.inbound`` / ``.event`` / ``.outbound``.

    pika blocks, so every call runs in a thread on a connection of its own."""

    def __init__(self, queue: str, port: int = AMQP_PORT) -> None:
        self.queue = queue
        self.port = port

    def _run(self, action: Any) -> Any:
        def run() -> Any:
            params = pika.ConnectionParameters("127.0.0.1", self.port, connection_attempts=3)
            connection = pika.BlockingConnection(params)
            try:
                return action(connection.channel())
            finally:
                if connection.is_open:
                    connection.close()

        return deferToThread(run)

    def declare(self):
        def declare(channel: Any) -> None:
            channel.exchange_declare("vumi", exchange_type="direct", durable=True)
            for kind in ("inbound", "event", "outbound"):
                name = f"{self.queue}.{kind}"
                channel.queue_declare(name, durable=True)
                channel.queue_bind(name, "vumi", routing_key=name)

        return self._run(declare)

    def next(self, kind: str, seconds: float = 10):
        """The next vumi message on ``<queue>.<kind>`` (acked), as a dict."""

        def get(channel: Any) -> Any:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                method, _, body = channel.basic_get(f"{self.queue}.{kind}", auto_ack=True)
                if method is not None:
                    return json.loads(body)
                time.sleep(0.05)
            raise TimeoutError(f"nothing on {self.queue}.{kind} within {seconds}s")

        return within(self._run(get), seconds + 5)

    def reply(self, inbound: dict[str, Any], content: str):
        """Publish a reply to ``inbound`` on ``<queue>.outbound``; fires with it."""
        reply = messages.user_message(
            to_addr=inbound["from_addr"],
            from_addr=inbound["to_addr"],
            transport_name=inbound["transport_name"],
            transport_type=inbound["transport_type"],
            content=content,
            session_event="resume",
            in_reply_to=inbound["message_id"],
        )

        def publish(channel: Any) -> None:
            channel.basic_publish(
                "vumi",
                f"{self.queue}.outbound",
                messages.encode(reply),
                pika.BasicProperties(delivery_mode=2),
            )

        return self._run(publish).addCallback(lambda _: reply)

    def delete(self):
        def delete(channel: Any) -> None:
            for kind in ("inbound", "event", "outbound"):
                channel.queue_delete(f"{self.queue}.{kind}")

        return self._run(delete)


@pytest_twisted.async_yield_fixture
async def jb_amqp(tmp_path):
    """A jb on the shared RabbitMQ and Redis; yields its ApiClient. Cleans up its keys."""
    prefix = f"jbamqp-{uuid.uuid4().hex[:10]}"
    port = free_port()
    config = write_jb_config(tmp_path, port, redis_prefix=prefix)
    jb = await JbProcess("-c", str(config), "--amqp-host", "127.0.0.1", cwd=str(tmp_path)).start()
    api = ApiClient(f"http://127.0.0.1:{port}")
    try:
        yield api
    finally:
        for channel_id in (await api.get("/channels/"))[1]["result"]:
            await api.delete(f"/channels/{channel_id}")
        assert await jb.stop() == 0, jb.output
        connection = await redis_store.connect("127.0.0.1", 6379)
        keys = await connection.keys(f"{prefix}:*")
        if keys:
            await connection.delete(keys)
        await connection.disconnect()


@pytest_twisted.async_yield_fixture
async def app():
    app = PikaApp(f"jbapp{uuid.uuid4().hex[:10]}")
    await app.declare()
    yield app
    await app.delete()


async def create_channel(api: ApiClient, telnet_port: int, **extra: Any) -> str:
    code, body = await api.post(
        "/channels/",
        {"type": "telnet", "config": {"twisted_endpoint": f"tcp:{telnet_port}"}, **extra},
    )
    assert code == 201, body
    return body["result"]["id"]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_an_amqp_app_talks_to_a_telnet_user(jb_amqp, app):
    telnet_port = free_port()
    channel_id = await create_channel(jb_amqp, telnet_port, amqp_queue=app.queue)

    user = await TelnetUser().connect(telnet_port)
    new = await app.next("inbound")
    assert new["message_type"] == "user_message"
    assert new["session_event"] == "new"
    assert new["helper_metadata"]["session_event"] == "new"
    assert new["transport_name"] == channel_id and new["from_addr"] == user.address

    user.type("hello app")
    inbound = await app.next("inbound")
    assert inbound["content"] == "hello app"
    assert inbound["message_version"] == "20110921"
    assert inbound["session_event"] == "resume"
    assert inbound["helper_metadata"] == {"session_event": "resume"}
    assert inbound["transport_type"] == "telnet"

    reply = await app.reply(inbound, "hello telnet user")
    assert await user.next_line() == "hello telnet user"

    event = await app.next("event")
    assert event["message_type"] == "event"
    assert event["event_type"] == "ack"
    assert event["user_message_id"] == reply["message_id"]
    assert event["transport_name"] == channel_id

    code, body = await jb_amqp.get(f"/channels/{channel_id}")
    assert body["result"]["amqp_queue"] == app.queue
    await user.hang_up()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_mo_url_and_amqp_queue_both_receive(jb_amqp, app, receiver):
    telnet_port = free_port()
    channel_id = await create_channel(
        jb_amqp, telnet_port, amqp_queue=app.queue, mo_url=receiver.url("/mo")
    )
    user = await TelnetUser().connect(telnet_port)
    assert (await receiver.next()).json["channel_data"] == {"session_event": "new"}
    assert (await app.next("inbound"))["session_event"] == "new"

    user.type("to both")
    posted = (await receiver.next()).json
    published = await app.next("inbound")
    assert posted["content"] == published["content"] == "to both"
    assert posted["message_id"] == published["message_id"]

    # A message sent through the API: its event goes to event_url and to the app.
    code, body = await jb_amqp.post(
        f"/channels/{channel_id}/messages/",
        {"to": user.address, "content": "from the API", "event_url": receiver.url("/event")},
    )
    assert code == 201, body
    message_id = body["result"]["message_id"]
    assert await user.next_line() == "from the API"
    assert (await receiver.next()).json["event_type"] == "submitted"
    event = await app.next("event")
    assert (event["event_type"], event["user_message_id"]) == ("ack", message_id)

    # And the app's own reply still reaches the user.
    await app.reply(published, "from the app")
    assert await user.next_line() == "from the app"
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_amqp_queue_is_refused_without_rabbitmq(api):
    body = {"type": "telnet", "config": {"twisted_endpoint": f"tcp:{free_port()}"}}
    code, answer = await api.post("/channels/", {**body, "amqp_queue": "app"})
    assert code == 400
    assert "--amqp-host" in answer["result"]["errors"][0]["message"]

    code, created = await api.post("/channels/", body)
    assert code == 201
    channel_id = created["result"]["id"]
    code, answer = await api.post(f"/channels/{channel_id}", {"amqp_queue": "app"})
    assert code == 400
    assert "--amqp-host" in answer["result"]["errors"][0]["message"]
    code, shown = await api.get(f"/channels/{channel_id}")
    assert "amqp_queue" not in shown["result"]


# -- deployment files -------------------------------------------------------------------


def test_the_production_config_loads_with_jbs_config_loader():
    from junebug.config import JunebugConfig, load_config_file

    path = ROOT / "deploy" / "junebug.production.yaml"
    config = JunebugConfig.from_mapping(load_config_file(str(path)), source=str(path))
    assert not config.embedded_redis and not config.embedded_amqp
    assert config.redis["host"] == "redis" and config.amqp["hostname"] == "rabbitmq"
    assert config.rabbitmq_management_interface == "rabbitmq:15672"
    assert config.interface == "0.0.0.0"


def test_the_dockerfile_installs_the_way_a_fresh_virtualenv_does():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM python:3.11-slim" in dockerfile
    assert "pip install --no-cache-dir ." in dockerfile
    assert "junebug.production.yaml" in dockerfile
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"junebug", "redis", "rabbitmq"}
    assert "management" in compose["services"]["rabbitmq"]["image"]
