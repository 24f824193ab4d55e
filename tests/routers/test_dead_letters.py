"""A router destination's dead letters: its mo_url callbacks given up on, through the API."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import TelnetUser
from tests.routers.support import make_destination, make_router, routed_channel, subcode


async def _destination(rapi, receiver):
    channel_id, port = await routed_channel(rapi, subcode(1))
    router_id = await make_router(rapi, channel_id)
    destination_id = await make_destination(
        rapi,
        router_id,
        {"regular_expression": "."},
        mo_url=receiver.url("/mo"),
    )
    return router_id, destination_id, port


@pytest_twisted.ensureDeferred
async def test_a_destinations_dead_letters_are_listed_replayed_and_deleted(rapi, receiver):
    receiver.codes = [400, 404]  # answers not retried: each a dead letter at once
    router_id, destination_id, port = await _destination(rapi, receiver)
    user = await TelnetUser().connect(port)
    refused = await receiver.next()
    user.type("hello")
    failed = await receiver.next()
    path = f"/routers/{router_id}/destinations/{destination_id}/dead-letters"

    code, body = await rapi.get(path)
    assert code == 200, body
    page = body["result"]
    assert page["total"] == 2
    newest, oldest = page["dead_letters"]
    assert newest["id"] == failed.headers["x-junebug-callback-id"]
    assert (newest["kind"], newest["payload"]["content"], newest["url"]) == (
        "inbound",
        "hello",
        receiver.url("/mo"),
    )
    assert (newest["attempts"], newest["last_status"]) == (1, 404)
    assert oldest["id"] == refused.headers["x-junebug-callback-id"]

    code, body = await rapi.post(path + "/replay", {"ids": [oldest["id"]]})
    assert (code, body["result"]) == (200, {"replayed": 1})
    again = await receiver.next()
    assert again.headers["x-junebug-callback-id"] == oldest["id"]
    assert again.json == refused.json

    code, body = await rapi.delete(path)
    assert (code, body["result"]) == (200, {"deleted": 1})
    code, body = await rapi.get(path)
    assert body["result"]["total"] == 0
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_dead_letters_of_an_unknown_destination_or_router_are_404(rapi, receiver):
    router_id, _, _ = await _destination(rapi, receiver)
    code, body = await rapi.get(f"/routers/{router_id}/destinations/nope/dead-letters")
    assert code == 404 and body["result"]["errors"][0]["type"] == "DestinationNotFound"
    code, body = await rapi.delete("/routers/nope/destinations/nope/dead-letters")
    assert code == 404 and body["result"]["errors"][0]["type"] == "RouterNotFound"


@pytest_twisted.ensureDeferred
async def test_deleting_a_destination_deletes_its_dead_letters(rapi, receiver, gateway):
    receiver.codes = [400]
    router_id, destination_id, port = await _destination(rapi, receiver)
    user = await TelnetUser().connect(port)
    await receiver.next()
    store = gateway.backends.callbacks.store
    path = f"/routers/{router_id}/destinations/{destination_id}"
    code, body = await rapi.get(path + "/dead-letters")
    assert body["result"]["total"] == 1
    code, _ = await rapi.delete(path)
    assert code == 200
    assert (await store.dead_letters(destination_id, 0, 10))[0] == 0
    await user.hang_up()
