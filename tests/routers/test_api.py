"""The router and destination endpoints: envelope, status codes, validation, storage."""

from __future__ import annotations

import json

import pytest_twisted

from junebug.store.rates import RATE_FIELDS
from tests.routers.support import (
    errors,
    exactly,
    make_destination,
    make_router,
    patch,
    put,
    routed_channel,
    subcode,
)

RATES = set(RATE_FIELDS.values())


@pytest_twisted.ensureDeferred
async def test_router_lifecycle(rapi):
    channel_id, _ = await routed_channel(rapi)
    code, body = await rapi.post(
        "/routers/",
        {
            "type": "from_address",
            "label": "USSD *123*4567#",
            "config": {"channel": channel_id},
            "metadata": {"owner": 7},
        },
    )
    assert (code, body["code"], body["description"]) == (201, "Created", "router created")
    router = body["result"]
    router_id = router["id"]
    assert router["type"] == "from_address" and router["config"] == {"channel": channel_id}
    assert router["label"] == "USSD *123*4567#" and router["metadata"] == {"owner": 7}
    assert set(router["status"]) == RATES

    code, body = await rapi.get("/routers/")
    assert (code, body["description"], body["result"]) == (200, "routers retrieved", [router_id])
    code, body = await rapi.get(f"/routers/{router_id}")
    assert (code, body["description"]) == (200, "router found")
    assert body["result"] == router

    # PATCH merges: the label changes, the rest stays.
    code, body = await patch(rapi, f"/routers/{router_id}", {"label": "renamed"})
    assert (code, body["description"]) == (200, "router updated"), body
    assert body["result"]["label"] == "renamed" and body["result"]["metadata"] == {"owner": 7}

    # PUT replaces: what is not given is gone.
    code, body = await put(
        rapi, f"/routers/{router_id}", {"type": "from_address", "config": {"channel": channel_id}}
    )
    assert (code, body["description"]) == (200, "router updated"), body
    assert "label" not in body["result"] and "metadata" not in body["result"]

    code, body = await rapi.delete(f"/routers/{router_id}")
    assert (code, body["description"], body["result"]) == (200, "router deleted", {})
    code, body = await rapi.get(f"/routers/{router_id}")
    assert (code, body["description"]) == (404, "router not found")
    assert body["result"]["errors"][0]["type"] == "RouterNotFound"
    assert (await rapi.get("/routers/"))[1]["result"] == []


@pytest_twisted.ensureDeferred
async def test_router_body_problems_are_all_listed_with_their_fields(rapi):
    code, body = await rapi.post("/routers/", {"type": 5, "config": 3, "colour": "red"})
    assert (code, body["description"]) == (400, "api usage error")
    messages = [e["message"] for e in body["result"]["errors"]]
    assert len(messages) == 3, messages
    assert any(m.startswith("type:") for m in messages)
    assert any(m.startswith("config:") for m in messages)
    assert any("colour" in m for m in messages)
    assert all(e["type"] == "invalid_body" for e in body["result"]["errors"])
    code, body = await rapi.post("/routers/", {"type": "from_address"})
    assert code == 400 and "'config' is a required property" in errors(body)
    code, body = await rapi.post("/routers/", raw=b"{nope")
    assert (code, body["description"]) == (400, "json decode error")


@pytest_twisted.ensureDeferred
async def test_router_type_and_config_are_checked(rapi, receiver):
    code, body = await rapi.post("/routers/", {"type": "bogus", "config": {}})
    assert (code, body["description"]) == (400, "invalid router type")
    assert "from_address" in errors(body) and "keyword" in errors(body)

    code, body = await rapi.post(
        "/routers/", {"type": "from_address", "config": {"chanel": "x", "extra": 1}}
    )
    assert (code, body["description"]) == (400, "invalid router config")
    text = errors(body)
    assert "'channel' is a required property" in text and "'chanel'" in text

    code, body = await rapi.post(
        "/routers/", {"type": "from_address", "config": {"channel": "no-such-channel"}}
    )
    assert code == 400 and "'no-such-channel' does not exist" in errors(body)

    code, body = await rapi.post(
        "/channels/",
        {"type": "telnet", "config": {"twisted_endpoint": "tcp:0"}, "mo_url": receiver.url()},
    )
    delivering = body["result"]["id"]
    code, body = await rapi.post(
        "/routers/", {"type": "from_address", "config": {"channel": delivering}}
    )
    assert code == 400 and "has an mo_url or amqp_queue" in errors(body)

    channel_id, _ = await routed_channel(rapi)
    router_id = await make_router(rapi, channel_id)
    code, body = await rapi.post(
        "/routers/", {"type": "from_address", "config": {"channel": channel_id}}
    )
    assert code == 400 and f"already routed by router {router_id}" in errors(body)
    # The router itself may keep its channel when it is updated.
    code, body = await patch(rapi, f"/routers/{router_id}", {"config": {"channel": channel_id}})
    assert code == 200, body


@pytest_twisted.ensureDeferred
async def test_patch_is_validated_as_a_whole(rapi):
    channel_id, _ = await routed_channel(rapi)
    router_id = await make_router(rapi, channel_id)
    code, body = await patch(rapi, f"/routers/{router_id}", {"config": {}})
    assert (code, body["description"]) == (400, "invalid router config")
    assert "'channel' is a required property" in errors(body)
    code, body = await patch(rapi, f"/routers/{router_id}", {"type": None, "bogus": 1})
    assert code == 400 and len(body["result"]["errors"]) == 2
    code, body = await patch(rapi, f"/routers/{router_id}", {"type": "keyword"})
    assert code == 200 and body["result"]["type"] == "keyword"
    # Changing the type re-checks the destinations under the new type.
    await make_destination(rapi, router_id, {"keyword": "join"})
    code, body = await patch(rapi, f"/routers/{router_id}", {"type": "from_address"})
    assert (code, body["description"]) == (400, "invalid router destination config")
    assert "regular_expression" in errors(body)
    assert (await rapi.get(f"/routers/{router_id}"))[1]["result"]["type"] == "keyword"
    code, body = await patch(rapi, "/routers/missing", {"label": "x"})
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_destination_lifecycle(rapi, receiver):
    channel_id, _ = await routed_channel(rapi)
    router_id = await make_router(rapi, channel_id)
    base = f"/routers/{router_id}/destinations/"
    created = {
        "label": "*123*4567*1# subcode",
        "config": {"regular_expression": exactly(subcode(1))},
        "metadata": {"owner": 7},
        "mo_url": receiver.url("/one"),
        "mo_url_token": "my-secret-token",
        "character_limit": 140,
    }
    code, body = await rapi.post(base, created)
    assert (code, body["code"], body["description"]) == (201, "Created", "destination created")
    destination = body["result"]
    destination_id = destination["id"]
    assert {k: destination[k] for k in created} == created
    assert set(destination["status"]) == RATES

    code, body = await rapi.get(base)
    assert (code, body["description"], body["result"]) == (
        200,
        "destinations retrieved",
        [destination_id],
    )
    code, body = await rapi.get(base + destination_id)
    assert (code, body["description"], body["result"]) == (200, "destination found", destination)

    code, body = await patch(rapi, base + destination_id, {"config": {"regular_expression": "1#$"}})
    assert (code, body["description"]) == (200, "destination updated"), body
    assert body["result"]["config"] == {"regular_expression": "1#$"}
    assert body["result"]["mo_url"] == receiver.url("/one")

    code, body = await put(rapi, base + destination_id, {"config": {"regular_expression": "x"}})
    assert (code, body["description"]) == (200, "destination updated"), body
    assert "mo_url" not in body["result"] and "label" not in body["result"]

    code, body = await rapi.delete(base + destination_id)
    assert (code, body["description"], body["result"]) == (200, "destination deleted", {})
    code, body = await rapi.get(base + destination_id)
    assert (code, body["description"]) == (404, "destination not found")
    assert body["result"]["errors"][0]["type"] == "DestinationNotFound"
    code, body = await rapi.get(f"/routers/missing/destinations/{destination_id}")
    assert (code, body["description"]) == (404, "router not found")
    code, body = await rapi.get("/routers/missing/destinations/")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_destination_validation(rapi, receiver):
    channel_id, _ = await routed_channel(rapi)
    router_id = await make_router(rapi, channel_id)
    base = f"/routers/{router_id}/destinations/"

    code, body = await rapi.post(base, {"mo_url": "ftp://x", "character_limit": -1, "x": 1})
    assert (code, body["description"]) == (400, "api usage error")
    text = errors(body)
    assert "'config' is a required property" in text
    assert "mo_url:" in text and "character_limit:" in text and "'x'" in text

    code, body = await rapi.post(base, {"config": {"regular_expression": "(unclosed"}})
    assert (code, body["description"]) == (400, "invalid router destination config")
    assert "regular_expression '(unclosed' is invalid" in errors(body)
    code, body = await rapi.post(base, {"config": {"default": "yes"}})
    text = errors(body)
    assert "'regular_expression' is a required property" in text and "config.default:" in text

    await make_destination(rapi, router_id, {"regular_expression": "1#$", "default": True})
    code, body = await rapi.post(base, {"config": {"regular_expression": "2#$", "default": True}})
    assert code == 400 and "only one destination" in errors(body)

    code, body = await rapi.post(base, {"config": {"regular_expression": "x"}, "amqp_queue": "q"})
    assert code == 400 and "RabbitMQ" in errors(body)
    code, body = await rapi.post(
        base,
        {"config": {"regular_expression": "x"}, "mo_url_token": "a", "mo_url_auth_token": "b"},
    )
    assert code == 400 and "mo_url_token" in errors(body)
    # Nothing invalid was kept.
    assert len((await rapi.get(base))[1]["result"]) == 1


@pytest_twisted.ensureDeferred
async def test_storage_uses_the_original_key_layout(rapi, redis, key_prefix):
    channel_id, _ = await routed_channel(rapi)
    router_id = await make_router(rapi, channel_id, label="stored")
    destination_id = await make_destination(rapi, router_id, {"regular_expression": "."})
    assert await redis.smembers(f"{key_prefix}:routers") == {router_id}
    record = json.loads(await redis.get(f"{key_prefix}:routers:{router_id}"))
    assert record == {
        "id": router_id,
        "type": "from_address",
        "label": "stored",
        "config": {"channel": channel_id},
    }
    assert await redis.smembers(f"{key_prefix}:routers:{router_id}:destinations") == {
        destination_id
    }
    key = f"{key_prefix}:routers:{router_id}:destinations:{destination_id}"
    assert json.loads(await redis.get(key)) == {
        "id": destination_id,
        "config": {"regular_expression": "."},
    }
    await rapi.delete(f"/routers/{router_id}")
    assert await redis.keys(f"{key_prefix}:routers*") == []


@pytest_twisted.ensureDeferred
async def test_a_routed_channel_cannot_be_deleted_or_given_an_mo_url(rapi, receiver):
    channel_id, _ = await routed_channel(rapi)
    router_id = await make_router(rapi, channel_id)
    code, body = await rapi.delete(f"/channels/{channel_id}")
    assert code == 400 and f"routed by router {router_id}" in errors(body)
    code, body = await rapi.post(f"/channels/{channel_id}", {"mo_url": receiver.url()})
    assert code == 400 and "cannot have an mo_url" in errors(body)
    code, body = await rapi.post(f"/channels/{channel_id}", {"label": "fine"})
    assert code == 200
    await rapi.delete(f"/routers/{router_id}")
    code, body = await rapi.delete(f"/channels/{channel_id}")
    assert code == 200, body


@pytest_twisted.ensureDeferred
async def test_logs_endpoints(rapi):
    channel_id, _ = await routed_channel(rapi)
    router_id = await make_router(rapi, channel_id)
    destination_id = await make_destination(rapi, router_id, {"regular_expression": "."})
    code, body = await rapi.get(f"/routers/{router_id}/logs")
    assert (code, body["description"]) == (200, "logs retrieved")
    assert any("Router started" in entry["message"] for entry in body["result"])
    code, body = await rapi.get(f"/routers/{router_id}/logs?n=1")
    assert len(body["result"]) == 1
    code, body = await rapi.get(f"/routers/{router_id}/logs?n=x")
    assert code == 400
    code, body = await rapi.get(f"/routers/{router_id}/destinations/{destination_id}/logs")
    assert (code, body["description"]) == (200, "logs retrieved")
    assert (await rapi.get("/routers/missing/logs"))[0] == 404
    assert (await rapi.get(f"/routers/{router_id}/destinations/missing/logs"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_every_router_route_is_in_the_openapi_description(rapi):
    code, document = await rapi.get("/openapi.json")
    paths = document["paths"]
    expected = {
        "/routers/": {"get", "post"},
        "/routers/{router_id}": {"get", "put", "patch", "delete"},
        "/routers/{router_id}/logs": {"get"},
        "/routers/{router_id}/destinations/": {"get", "post"},
        "/routers/{router_id}/destinations/{destination_id}": {"get", "put", "patch", "delete"},
        "/routers/{router_id}/destinations/{destination_id}/logs": {"get"},
        "/routers/{router_id}/destinations/{destination_id}/messages/": {"post"},
        "/routers/{router_id}/destinations/{destination_id}/messages/{message_id}": {"get"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
        for operation in paths[path].values():
            ok = [status for status in operation["responses"] if status.startswith("2")]
            schema = operation["responses"][ok[0]]["content"]["application/json"]["schema"]
            assert schema["properties"]["result"], path
    created = paths["/routers/"]["post"]["responses"]["201"]
    assert created["description"] == "router created"
    assert "requestBody" in paths["/routers/{router_id}"]["patch"]


@pytest_twisted.ensureDeferred
async def test_without_a_router_manager_the_routes_say_so(api):
    code, body = await api.get("/routers/")
    assert code == 400 and "not available" in errors(body)


@pytest_twisted.ensureDeferred
async def test_a_regular_expression_too_big_to_compile_is_a_400_not_a_500(rapi):
    channel_id, _ = await routed_channel(rapi)
    router_id = await make_router(rapi, channel_id)
    code, body = await rapi.post(
        f"/routers/{router_id}/destinations/",
        {"config": {"regular_expression": "a{99999999999}"}, "mo_url": "http://127.0.0.1:9/"},
    )
    assert code == 400, body
    assert "regular_expression" in errors(body)


@pytest_twisted.ensureDeferred
async def test_destination_mo_url_templates_are_checked_like_channels(rapi):
    channel_id, _ = await routed_channel(rapi)
    router_id = await make_router(rapi, channel_id)
    code, body = await rapi.post(
        f"/routers/{router_id}/destinations/",
        {"config": {"regular_expression": "1"}, "mo_url": "http://127.0.0.1:9/{sender}"},
    )
    assert code == 400, body
    assert "sender" in errors(body) and "mo_url" in errors(body)
    code, body = await rapi.post(
        f"/routers/{router_id}/destinations/",
        {"config": {"regular_expression": "1"}, "mo_url": "http://127.0.0.1:9/{message_id}"},
    )
    assert code == 201, body
