"""The /channels/ API: validation, lifecycle, the envelope on every answer."""

from __future__ import annotations

import socket

import pytest_twisted

from tests.helpers import TelnetUser, free_port, within


def telnet_body(port: int, **extra) -> dict:
    return {
        "type": "telnet",
        "config": {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1"},
        "mo_url": "http://127.0.0.1:9/mo",
        **extra,
    }


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As Twisted does when it listens: a closed connection's TIME_WAIT doesn't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def error_types(body: dict) -> list[str]:
    return [error["type"] for error in body["result"]["errors"]]


def error_messages(body: dict) -> str:
    return " | ".join(error["message"] for error in body["result"]["errors"])


async def create(api, **extra) -> tuple[str, int]:
    port = free_port()
    code, body = await api.post("/channels/", telnet_body(port, **extra))
    assert code == 201, body
    return body["result"]["id"], port


@pytest_twisted.ensureDeferred
async def test_create_answers_201_with_the_channel_and_its_status(api):
    port = free_port()
    code, body = await api.post("/channels/", telnet_body(port, label="L", metadata={"o": 1}))
    assert code == 201
    assert (body["status"], body["code"], body["description"]) == (
        201,
        "Created",
        "channel created",
    )
    result = body["result"]
    assert result["label"] == "L" and result["metadata"] == {"o": 1}
    assert set(result["status"]) == {
        "status",
        "components",
        "inbound_message_rate",
        "outbound_message_rate",
        "submitted_event_rate",
        "rejected_event_rate",
        "delivery_succeeded_rate",
        "delivery_failed_rate",
        "delivery_pending_rate",
        "queue",
    }
    assert result["status"]["queue"]["length"] == 0
    assert not port_is_free(port)


@pytest_twisted.ensureDeferred
async def test_invalid_json_is_a_400(api):
    code, body = await api.post("/channels/", raw=b'{"type": "telnet",')
    assert code == 400
    assert body["description"] == "json decode error"
    assert error_types(body) == ["JsonDecodeError"]


@pytest_twisted.ensureDeferred
async def test_every_schema_problem_is_listed_with_its_field(api):
    code, body = await api.post("/channels/", {"label": 5, "colour": "red"})
    assert code == 400
    assert body["description"] == "api usage error"
    messages = error_messages(body)
    for fragment in ("'type' is a required property", "'config' is a required", "colour", "label"):
        assert fragment in messages
    assert all(error["type"] == "invalid_body" for error in body["result"]["errors"])
    assert all("schema_path" in error for error in body["result"]["errors"])


@pytest_twisted.ensureDeferred
async def test_body_must_be_an_object(api):
    code, body = await api.post("/channels/", [1, 2])
    assert code == 400
    assert "is not of type 'object'" in error_messages(body)


@pytest_twisted.ensureDeferred
async def test_unknown_channel_type_lists_the_known_ones(api):
    code, body = await api.post("/channels/", {"type": "pigeon", "config": {}})
    assert code == 400
    assert error_types(body) == ["InvalidChannelType"]
    assert "telnet" in error_messages(body)


@pytest_twisted.ensureDeferred
async def test_invalid_channel_config_names_the_field(api):
    code, body = await api.post(
        "/channels/", {"type": "telnet", "config": {"twisted_endpoint": 9001}}
    )
    assert code == 400
    assert "config.twisted_endpoint" in error_messages(body)


@pytest_twisted.ensureDeferred
async def test_amqp_queue_needs_rabbitmq(api):
    code, body = await api.post("/channels/", telnet_body(free_port(), amqp_queue="app"))
    assert code == 400
    assert "--amqp-host" in error_messages(body)


@pytest_twisted.ensureDeferred
async def test_a_channel_that_cannot_start_is_refused_and_not_kept(api):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, body = await api.post("/channels/", telnet_body(port))
    assert code == 400
    assert error_types(body) == ["ChannelStartError"]
    code, body = await api.get("/channels/")
    assert body["result"] == []


@pytest_twisted.ensureDeferred
async def test_list_get_and_unknown(api):
    first, _ = await create(api)
    second, _ = await create(api)
    code, body = await api.get("/channels/")
    assert code == 200 and sorted(body["result"]) == sorted([first, second])
    code, body = await api.get(f"/channels/{first}")
    assert code == 200 and body["description"] == "channel found"
    assert body["result"]["id"] == first
    assert body["result"]["status"]["components"]["telnet"]["status"] == "ok"
    assert body["result"]["status"]["status"] == "ok"
    code, body = await api.get("/channels/nope")
    assert code == 404
    assert error_types(body) == ["ChannelNotFound"]


@pytest_twisted.ensureDeferred
async def test_modify_merges_and_restarts_the_transport_only_when_config_changes(api):
    channel_id, port = await create(api, label="before")
    user = await TelnetUser().connect(port)
    code, body = await api.post(f"/channels/{channel_id}", {"label": "after"})
    assert code == 200 and body["description"] == "channel updated"
    assert body["result"]["label"] == "after"
    assert body["result"]["mo_url"] == "http://127.0.0.1:9/mo"
    assert not user.disconnected.called  # label changes leave the wire alone

    new_port = free_port()
    code, body = await api.post(
        f"/channels/{channel_id}",
        {"config": {"twisted_endpoint": f"tcp:{new_port}:interface=127.0.0.1"}},
    )
    assert code == 200, body
    await within(user.disconnected)
    assert port_is_free(port) and not port_is_free(new_port)


@pytest_twisted.ensureDeferred
async def test_an_invalid_modification_changes_nothing(api):
    channel_id, _ = await create(api, label="kept")
    code, body = await api.post(f"/channels/{channel_id}", {"config": {}})
    assert code == 400
    code, body = await api.get(f"/channels/{channel_id}")
    assert body["result"]["label"] == "kept"
    assert "twisted_endpoint" in body["result"]["config"]


@pytest_twisted.ensureDeferred
async def test_restart(api):
    channel_id, port = await create(api)
    user = await TelnetUser().connect(port)
    code, body = await api.post(f"/channels/{channel_id}/restart")
    assert (code, body["description"], body["result"]) == (200, "channel restarted", {})
    await within(user.disconnected)
    again = await TelnetUser().connect(port)
    await again.hang_up()


@pytest_twisted.ensureDeferred
async def test_delete_stops_frees_the_port_and_forgets(api, redis, key_prefix):
    channel_id, port = await create(api)
    code, _ = await api.post(f"/channels/{channel_id}/messages/", {"to": "x", "content": "c"})
    assert code == 201
    code, body = await api.delete(f"/channels/{channel_id}")
    assert (code, body["description"]) == (200, "channel deleted")
    assert port_is_free(port)
    assert (await api.get(f"/channels/{channel_id}"))[0] == 404
    assert (await api.get("/channels/"))[1]["result"] == []
    assert (await api.delete(f"/channels/{channel_id}"))[0] == 404
    # Nothing is left behind for good: what remains (rates, messages) expires by itself.
    for key in await redis.keys(f"{key_prefix}:{channel_id}:*"):
        assert await redis.ttl(key) > 0, key


@pytest_twisted.ensureDeferred
async def test_collection_without_slash_redirects(api):
    code, body, response = await api.request("GET", "/channels")
    assert code in (301, 308)
    assert response.headers.getRawHeaders("location")[0].endswith("/channels/")
    assert body["result"]["errors"][0]["new_url"].endswith("/channels/")


@pytest_twisted.ensureDeferred
async def test_unknown_route_and_wrong_method_answer_in_the_envelope(api):
    code, body = await api.get("/nowhere")
    assert code == 404 and body["status"] == 404 and body["result"]["errors"]
    code, body, _ = await api.request("PUT", "/channels/")
    assert code == 405 and body["status"] == 405


@pytest_twisted.ensureDeferred
async def test_health_with_and_without_slash(api):
    for path in ("/health", "/health/"):
        code, body = await api.get(path)
        assert (code, body["description"]) == (200, "health ok"), path


@pytest_twisted.ensureDeferred
async def test_channels_are_restored_by_a_new_manager(api, gateway):
    from junebug.manager import ChannelManager

    channel_id, port = await create(api)
    await gateway.stop_all()
    assert port_is_free(port)
    restored = ChannelManager(gateway.backends)
    await restored.restore()
    try:
        assert list(restored.running) == [channel_id]
        user = await TelnetUser().connect(port)
        await user.hang_up()
    finally:
        await restored.stop_all()


@pytest_twisted.ensureDeferred
async def test_a_modification_that_cannot_start_keeps_the_channel_running_as_before(api):
    channel_id, port = await create(api)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        code, body = await api.post(
            f"/channels/{channel_id}",
            {"config": {"twisted_endpoint": f"tcp:{busy}:interface=127.0.0.1"}},
        )
    assert code == 400 and error_types(body) == ["ChannelStartError"]
    user = await TelnetUser().connect(port)  # still listening on its old port
    await user.hang_up()
    code, body = await api.get(f"/channels/{channel_id}")
    assert body["result"]["config"]["twisted_endpoint"] == f"tcp:{port}:interface=127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_a_failed_create_leaves_no_log_file(api, config):
    import os

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _ = await api.post("/channels/", telnet_body(taken.getsockname()[1]))
    assert code == 400
    # The log of a channel that never existed is not left open (and holds only its error).
    for name in os.listdir(config.logging_path):
        with open(os.path.join(config.logging_path, name)) as log_file:
            assert "could not start" in log_file.read()


@pytest_twisted.ensureDeferred
async def test_wire_logging_switches_on_without_a_restart(api):
    channel_id, port = await create(api)
    user = await TelnetUser().connect(port)
    user.type("before")
    code, body = await api.post(f"/channels/{channel_id}", {"wire_logging": True})
    assert code == 200 and body["result"]["wire_logging"] is True
    assert not user.disconnected.called
    user.type("after")
    for _ in range(50):  # the line is logged as it arrives; read until it shows
        code, body = await api.get(f"/channels/{channel_id}/logs?n=20")
        wire = [e for e in body["result"] if e.get("direction") == "in"]
        if wire:
            break
    # TelnetTransport has already turned the client's CRLF into LF.
    assert [e["message"] for e in wire] == [f"{user.address} sent b'after\\n'"]
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_original_channel_bodies_with_vumi_keys_and_numeric_strings_are_accepted(api):
    port = free_port()
    body = telnet_body(port)
    body["config"].update(
        transport_name="old", worker_name="old", publish_status=True, amqp_prefetch_count=20
    )
    code, result = await api.post("/channels/", body)
    assert code == 201, result
    dmark_port = free_port()
    code, result = await api.post(
        "/channels/",
        {
            "type": "dmark",
            "mo_url": "http://127.0.0.1:9/mo",
            "config": {"web_path": "ussd", "web_port": str(dmark_port), "request_timeout": "30"},
        },
    )
    assert code == 201, result
    assert result["result"]["config"]["web_port"] == dmark_port  # stored as a number
    assert result["result"]["config"]["request_timeout"] == 30
    assert not port_is_free(dmark_port)


@pytest_twisted.ensureDeferred
async def test_callback_urls_that_cannot_be_posted_to_are_refused_naming_the_field(api):
    for field, url in (
        ("mo_url", "http://[::1/mo"),
        ("status_url", "http://example.org:99999/status"),
        ("mo_url", "http:///no-host"),
    ):
        code, body = await api.post("/channels/", telnet_body(free_port(), **{field: url}))
        assert code == 400, (field, url, body)
        assert error_messages(body).startswith(f"{field}:"), body
    channel_id, _ = await create(api)
    code, body = await api.post(f"/channels/{channel_id}", {"mo_url": "http://[::1/mo"})
    assert code == 400 and "mo_url" in error_messages(body)


@pytest_twisted.ensureDeferred
async def test_json_our_answers_could_not_echo_is_refused(api):
    for raw in (
        b'{"type": "telnet", "config": {}, "metadata": {"x": Infinity}}',
        b'{"type": "telnet", "config": {}, "metadata": {"x": NaN}}',
        b'{"metadata": ' * 5000 + b"1" + b"}" * 5000,
    ):
        code, body = await api.post("/channels/", raw=raw)
        assert code == 400, raw[:60]
        assert body["description"] == "json decode error"


def test_every_default_channel_type_accepts_vumis_base_keys():
    from junebug.transports.common import VUMI_BASE_CONFIG
    from junebug.transports.registry import channel_types

    for name, transport in channel_types({}).items():
        properties = transport.CONFIG_SCHEMA.get("properties", {})
        open_schema = transport.CONFIG_SCHEMA.get("additionalProperties", True) is not False
        for key in VUMI_BASE_CONFIG:
            assert open_schema or key in properties, (name, key)


@pytest_twisted.ensureDeferred
async def test_endpoints_that_fail_while_being_checked_are_a_400(api):
    for endpoint in ("ssl:0", "ssl:0:privateKey=/nonexistent.pem"):
        code, body = await api.post(
            "/channels/", {"type": "telnet", "config": {"twisted_endpoint": endpoint}}
        )
        assert code == 400, (endpoint, body)
        assert "twisted_endpoint" in error_messages(body)


@pytest_twisted.ensureDeferred
async def test_a_setup_that_fails_half_way_releases_what_it_took(api, tmp_path):
    path = tmp_path / "telnet.sock"
    body = {"type": "telnet", "config": {"twisted_endpoint": f"unix:{path}"}}
    code, _ = await api.post("/channels/", body)
    assert code == 400  # listening works, the rest of telnet's setup needs a TCP address
    code, result = await api.post("/channels/", body)
    assert code == 400
    assert "lock" not in error_messages(result).lower()  # the socket was released


@pytest_twisted.ensureDeferred
async def test_overlapping_restarts_leave_one_tracked_transport(api):
    from twisted.internet.defer import Deferred, gatherResults

    channel_id, port = await create(api)
    answers = await gatherResults(
        [Deferred.fromCoroutine(api.post(f"/channels/{channel_id}/restart")) for _ in range(3)]
    )
    assert [code for code, _ in answers] == [200, 200, 200]
    code, body = await api.get(f"/channels/{channel_id}")
    assert body["result"]["status"]["components"]["telnet"]["status"] == "ok"
    assert (await api.delete(f"/channels/{channel_id}"))[0] == 200
    assert port_is_free(port)  # nothing left listening untracked
