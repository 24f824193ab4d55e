"""GET /health: ``health ok`` without the management interface; with it, each channel
queue read from RabbitMQ's management API (a fake one here, a real broker in the slow
test) and ``queues ok`` / ``queues stuck``."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import attrs
import pytest
import pytest_twisted
from jsonschema import Draft202012Validator
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from junebug.api.app import JunebugApi
from junebug.api.health import HEALTH_RESULT, queue_health, queue_url
from junebug.store import redis as redis_store
from tests.helpers import ApiClient, JbProcess, TelnetUser, free_port, write_jb_config
from tests.servers import PrivateRabbitMQ, running


class FakeManagement(Resource):
    """Answers GET /api/queues/<vhost>/<name> from ``queues``; 404 for the rest."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[str, dict[str, Any]] = {}
        self.paths: list[str] = []
        self.auth: list[str] = []

    def render_GET(self, request: Any) -> bytes:
        path = request.path.decode()
        self.paths.append(path)
        self.auth.append(request.getHeader("authorization") or "")
        name = path.rsplit("/", 1)[-1]
        request.setHeader(b"Content-Type", b"application/json")
        if name not in self.queues:
            request.setResponseCode(404)
            return json.dumps({"error": "Object Not Found", "reason": "Not Found"}).encode()
        return json.dumps(self.queues[name]).encode()


@pytest.fixture
def management():
    fake = FakeManagement()
    port = reactor.listenTCP(0, Site(fake), interface="127.0.0.1")
    fake.interface = f"127.0.0.1:{port.getHost().port}"
    yield fake
    port.stopListening()


@pytest_twisted.async_yield_fixture
async def health_api(gateway, management):
    """An API whose config names the fake management API, as if on RabbitMQ."""
    backends = gateway.backends
    backends.config = attrs.evolve(
        backends.config,
        rabbitmq_management_interface=management.interface,
        amqp={"username": "jbuser", "password": "s3cret", "vhost": "/jb"},
    )
    backends.bus.external = True  # the checks only run with RabbitMQ
    app = JunebugApi(gateway, backends)
    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
    yield ApiClient(f"http://127.0.0.1:{port.getHost().port}")
    await port.stopListening()


async def a_channel(api: ApiClient) -> str:
    code, body = await api.post(
        "/channels/", {"type": "telnet", "config": {"twisted_endpoint": f"tcp:{free_port()}"}}
    )
    assert code == 201, body
    return body["result"]["id"]


@pytest_twisted.ensureDeferred
async def test_health_ok_without_the_management_interface(api):
    for path in ("/health", "/health/"):
        code, body = await api.get(path)
        assert (code, body) == (
            200,
            {"status": 200, "code": "OK", "description": "health ok", "result": {}},
        )


@pytest_twisted.ensureDeferred
async def test_queues_stuck_is_a_500_with_every_queue(health_api, management):
    channel_id = await a_channel(health_api)
    management.queues = {
        f"{channel_id}.inbound": {"messages": 3, "message_stats": {"ack_details": {"rate": 0.0}}},
        f"{channel_id}.outbound": {"messages": 2, "message_stats": {"ack_details": {"rate": 1.5}}},
    }
    code, body = await health_api.get("/health")
    assert code == 500
    assert (body["status"], body["code"], body["description"]) == (
        500,
        "Internal Server Error",
        "queues stuck",
    )
    assert body["result"] == [
        {"name": f"{channel_id}.inbound", "messages": 3, "rate": 0.0, "stuck": True},
        {"name": f"{channel_id}.outbound", "messages": 2, "rate": 1.5, "stuck": False},
    ]  # the event queue is unknown to the broker (404): left out
    expected = "Basic " + base64.b64encode(b"jbuser:s3cret").decode()
    assert set(management.auth) == {expected}
    assert sorted(management.paths) == sorted(
        f"/api/queues/%2Fjb/{channel_id}.{kind}" for kind in ("inbound", "outbound", "event")
    )


@pytest_twisted.ensureDeferred
async def test_queues_ok_lists_the_queues(health_api, management):
    first, second = await a_channel(health_api), await a_channel(health_api)
    management.queues = {
        f"{owner}.{kind}": {"messages": 0, "message_stats": {"ack_details": {"rate": 0.0}}}
        for owner in (first, second)
        for kind in ("inbound", "outbound", "event")
    }
    management.queues[f"{first}.event"] = {"messages": 7}  # no stats: never stuck
    code, body = await health_api.get("/health")
    assert (code, body["description"]) == (200, "queues ok")
    names = [entry["name"] for entry in body["result"]]
    assert sorted(names) == sorted(management.queues)
    assert {"name": f"{first}.event", "messages": 7, "stuck": False} in body["result"]
    assert not any(entry["stuck"] for entry in body["result"])


@pytest_twisted.ensureDeferred
async def test_an_unreachable_management_api_is_a_503(health_api, management, gateway):
    await a_channel(health_api)
    gateway.backends.config = attrs.evolve(
        gateway.backends.config, rabbitmq_management_interface=f"127.0.0.1:{free_port()}"
    )
    code, body = await health_api.get("/health")
    assert code == 503
    assert body["description"] == "amqp connection error"
    assert "management API" in body["result"]["errors"][0]["message"]


def test_queue_entries_follow_the_original_rule():
    assert queue_health("q", {"error": "Object Not Found"}) is None
    assert queue_health("q", {"messages": 5}) == {"name": "q", "messages": 5, "stuck": False}
    # Messages and acknowledgements never seen: no ack_details, a rate of 0, stuck.
    stats = {"messages": 1, "message_stats": {"publish_details": {"rate": 0.2}}}
    assert queue_health("q", stats) == {"name": "q", "messages": 1, "rate": 0, "stuck": True}
    empty = {"messages": 0, "message_stats": {"ack_details": {"rate": 0.0}}}
    assert queue_health("q", empty)["stuck"] is False


def test_queue_url_quotes_the_vhost():
    assert queue_url("h:15672", "/", "c.inbound") == "http://h:15672/api/queues/%2F/c.inbound"
    assert queue_url("https://h/", "a/b", "c.event") == "https://h/api/queues/a%2Fb/c.event"


def test_the_openapi_result_covers_both_answers(gateway):
    document = JunebugApi(gateway, gateway.backends).openapi()
    schema = document["paths"]["/health"]["get"]["responses"]["200"]["content"]
    schema = schema["application/json"]["schema"]["properties"]["result"]
    assert schema is HEALTH_RESULT
    validator = Draft202012Validator(schema)
    assert validator.is_valid({})
    assert validator.is_valid([{"name": "c.inbound", "messages": 1, "rate": 0.5, "stuck": False}])
    assert not validator.is_valid([{"name": "c.inbound"}])


# -- against a real broker ----------------------------------------------------------------


@pytest.fixture
def rabbitmq_with_management():
    server = PrivateRabbitMQ(management=True)
    # Queue statistics every 0.5 s instead of 5 s, so the test doesn't wait for them.
    with (server.directory / "rabbitmq.conf").open("a") as conf:
        conf.write("collect_statistics_interval = 500\n")
    with running(server):
        yield server


async def poll_health(
    api: ApiClient, wanted: str, queue: str, seconds: float = 20
) -> tuple[int, Any]:
    """/health until it answers ``wanted`` with ``queue`` in its list (the broker's
    statistics lag a little behind)."""
    deadline = time.monotonic() + seconds
    while True:
        code, body = await api.get("/health")
        names = [entry["name"] for entry in body["result"] or []]
        if (body["description"] == wanted and queue in names) or time.monotonic() > deadline:
            return code, body
        await _sleep(0.3)


def _sleep(seconds: float):
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_queue_without_a_consumer_is_stuck_on_a_real_broker(
    tmp_path, rabbitmq_with_management
):
    rabbit = rabbitmq_with_management
    prefix = f"jbhealth-{uuid.uuid4().hex[:10]}"
    port = free_port()
    config = write_jb_config(
        tmp_path,
        port,
        redis_prefix=prefix,
        amqp_port=rabbit.port,
        rabbitmq_management_interface=f"127.0.0.1:{rabbit.management_port}",
    )
    jb = await JbProcess("-c", str(config), cwd=str(tmp_path)).start()
    api = ApiClient(f"http://127.0.0.1:{port}")
    try:
        telnet_port = free_port()
        channel_id = await a_channel_on(api, telnet_port)
        code, body = await poll_health(api, "queues ok", f"{channel_id}.outbound")
        assert (code, body["description"]) == (200, "queues ok"), body
        assert f"{channel_id}.outbound" in [entry["name"] for entry in body["result"]]

        # No mo_url or amqp_queue: nothing consumes the channel's inbound queue.
        user = await TelnetUser().connect(telnet_port)
        user.type("anyone there?")
        code, body = await poll_health(api, "queues stuck", f"{channel_id}.inbound")
        assert (code, body["description"]) == (500, "queues stuck"), body
        inbound = [e for e in body["result"] if e["name"] == f"{channel_id}.inbound"]
        assert inbound and inbound[0]["stuck"] and inbound[0]["messages"] >= 1
        assert inbound[0]["rate"] == 0
        await user.hang_up()
    finally:
        for channel_id in (await api.get("/channels/"))[1]["result"]:
            await api.delete(f"/channels/{channel_id}")
        assert await jb.stop() == 0, jb.output
        connection = await redis_store.connect("127.0.0.1", 6379)
        keys = await connection.keys(f"{prefix}:*")
        if keys:
            await connection.delete(keys)
        await connection.disconnect()


async def a_channel_on(api: ApiClient, telnet_port: int) -> str:
    code, body = await api.post(
        "/channels/", {"type": "telnet", "config": {"twisted_endpoint": f"tcp:{telnet_port}"}}
    )
    assert code == 201, body
    return body["result"]["id"]
