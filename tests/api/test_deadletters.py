"""Dead letters through the API; signed callbacks and the write-only callback_secret."""

from __future__ import annotations

import hashlib
import hmac

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.helpers import TelnetUser, free_port

SECRET = "a-long-enough-secret"


async def channel(api, receiver, **extra) -> tuple[str, int]:
    port = free_port()
    body = {
        "type": "telnet",
        "config": {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1"},
        "mo_url": receiver.url("/mo"),
        **extra,
    }
    code, result = await api.post("/channels/", body)
    assert code == 201, result
    return result["result"]["id"], port


@pytest_twisted.ensureDeferred
async def test_dead_letters_are_listed_replayed_and_deleted(api, receiver):
    receiver.codes = [400, 500]  # the first is refused; the next fails on its only attempt
    channel_id, port = await channel(api, receiver, callback_max_attempts=1)
    user = await TelnetUser().connect(port)
    refused = await receiver.next()
    user.type("hello")
    failed = await receiver.next()
    path = f"/channels/{channel_id}/dead-letters"

    async def listed(query=""):
        code, body = await api.get(path + query)
        assert code == 200, body
        return body["result"]

    page = await listed()
    assert page["total"] == 2 and page["offset"] == 0 and page["limit"] == 50
    newest, oldest = page["dead_letters"]
    assert newest["payload"]["content"] == "hello"
    assert newest["id"] == failed.headers["x-junebug-callback-id"]
    assert (newest["attempts"], newest["last_status"], newest["kind"]) == (1, 500, "inbound")
    assert newest["last_error"].startswith("answered 500")
    assert newest["url"] == receiver.url("/mo")
    assert oldest["id"] == refused.headers["x-junebug-callback-id"]
    assert oldest["first_attempt_at"] and oldest["last_attempt_at"] and oldest["created_at"]
    assert (await listed("?offset=1&limit=1"))["dead_letters"] == [oldest]

    code, body = await api.get(path + "?limit=0")
    assert code == 400
    code, body = await api.post(path + "/replay", {"ids": "all"})
    assert code == 400

    code, body = await api.post(path + "/replay", {"ids": [oldest["id"]]})
    assert (code, body["result"]) == (200, {"replayed": 1})
    again = await receiver.next()
    assert again.headers["x-junebug-callback-id"] == oldest["id"]
    assert again.json == refused.json
    assert [d["id"] for d in (await listed())["dead_letters"]] == [newest["id"]]

    code, body = await api.delete(path)
    assert (code, body["result"]) == (200, {"deleted": 1})
    assert (await listed())["total"] == 0
    code, body = await api.post(path + "/replay")
    assert (code, body["result"]) == (200, {"replayed": 0})
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_dead_letters_of_an_unknown_channel_are_404(api):
    code, _ = await api.get("/channels/nope/dead-letters")
    assert code == 404
    code, _ = await api.post("/channels/nope/dead-letters/replay")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_callbacks_are_signed_and_the_secret_is_never_shown(api, receiver, config):
    channel_id, port = await channel(api, receiver, callback_secret=SECRET)
    user = await TelnetUser().connect(port)
    request = await receiver.next()
    fields = dict(p.split("=", 1) for p in request.headers["x-junebug-signature"].split(","))
    mac = hmac.new(SECRET.encode(), fields["t"].encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(mac.hexdigest(), fields["v1"])

    code, body = await api.get(f"/channels/{channel_id}")
    assert code == 200 and "callback_secret" not in body["result"]
    code, body = await api.post(f"/channels/{channel_id}", {"label": "x"})
    assert code == 200 and "callback_secret" not in body["result"]
    # Still signing after a modification that did not touch it.
    user.type("again")
    assert "x-junebug-signature" in (await receiver.next()).headers
    await user.hang_up()
    with open(f"{config.logging_path}/{channel_id}") as log_file:
        assert SECRET not in log_file.read()

    code, body = await api.post(f"/channels/{channel_id}", {"callback_secret": "short"})
    assert code == 400 and "callback_secret" in body["result"]["errors"][0]["message"]


@pytest_twisted.ensureDeferred
async def test_deleting_a_channel_drops_its_pending_callbacks(api, receiver, gateway):
    from tests.helpers import TelnetUser, free_port

    receiver.codes = [500] * 10
    port = free_port()
    code, body = await api.post(
        "/channels/",
        {
            "type": "telnet",
            "mo_url": receiver.url("/mo"),
            "config": {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1"},
        },
    )
    channel_id = body["result"]["id"]
    await TelnetUser().connect(port)
    await receiver.next()  # the session start, answered 500: it waits for a retry
    store = gateway.backends.callbacks.store
    for _ in range(100):  # the failure is recorded just after the answer (bounded wait)
        if await store.pending_queues(channel_id):
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert await store.pending_queues(channel_id)
    code, _ = await api.delete(f"/channels/{channel_id}")
    assert code == 200
    assert await store.pending_queues(channel_id) == []
