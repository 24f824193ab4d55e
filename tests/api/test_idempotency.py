"""The Idempotency-Key header on POST .../messages/: retries answer, never resend."""

from __future__ import annotations

import json

import pytest_twisted
import treq
from twisted.internet.defer import Deferred, DeferredList

from junebug.store import idempotency
from junebug.store.redis import Keys
from tests.api.test_messages import connected_user, errors
from tests.helpers import within


async def post(api, path: str, body: dict, key: str | None = None):
    headers = {"Idempotency-Key": [key]} if key is not None else {}
    response = await within(
        treq.post(api.base + path, data=json.dumps(body).encode(), headers=headers)
    )
    content = await within(response.content())
    return response.code, json.loads(content), response.headers


@pytest_twisted.ensureDeferred
async def test_a_retry_answers_as_the_first_request_and_sends_once(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver)
    path = f"/channels/{channel_id}/messages/"
    body = {"to": user.address, "content": "once", "priority": "realtime"}
    code, first, headers = await post(api, path, body, key="order-17")
    assert code == 201 and not headers.hasHeader("Idempotent-Replayed")
    # Same body, keys in another order: still the same request.
    again = dict(reversed(list(body.items())))
    code, second, headers = await post(api, path, again, key="order-17")
    assert code == 201 and second == first
    assert headers.getRawHeaders("Idempotent-Replayed") == ["true"]
    code, third, _ = await post(api, path, {"to": user.address, "content": "next"})
    assert code == 201
    assert await user.next_line() == "once"
    assert await user.next_line() == "next"  # "once" was not sent a second time


@pytest_twisted.ensureDeferred
async def test_the_same_key_with_another_body_is_refused(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver)
    path = f"/channels/{channel_id}/messages/"
    code, _, _ = await post(api, path, {"to": user.address, "content": "a"}, key="k1")
    assert code == 201
    code, body, _ = await post(api, path, {"to": user.address, "content": "b"}, key="k1")
    assert code == 422 and body["description"] == "idempotency key reused"
    assert errors(body).startswith("IdempotencyKeyReused: Idempotency-Key:")


@pytest_twisted.ensureDeferred
async def test_keys_belong_to_a_channel(api, receiver):
    first_channel, first_user, _ = await connected_user(api, receiver)
    second_channel, second_user, _ = await connected_user(api, receiver)
    for channel_id, user in ((first_channel, first_user), (second_channel, second_user)):
        code, body, headers = await post(
            api, f"/channels/{channel_id}/messages/", {"to": user.address, "content": "hi"}, "k"
        )
        assert code == 201 and not headers.hasHeader("Idempotent-Replayed")
        assert await user.next_line() == "hi"


@pytest_twisted.ensureDeferred
async def test_a_failed_request_does_not_keep_its_key(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver, character_limit=3)
    path = f"/channels/{channel_id}/messages/"
    body = {"to": user.address, "content": "too long"}
    for _ in range(2):
        code, answer, _ = await post(api, path, body, key="retry-me")
        assert code == 400 and answer["description"] == "message too long"
    await api.post(f"/channels/{channel_id}", {"character_limit": None})
    code, answer, _ = await post(api, path, body, key="retry-me")
    assert code == 201, answer
    assert await user.next_line() == "too long"


@pytest_twisted.ensureDeferred
async def test_an_unusable_key_is_a_400(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver)
    path = f"/channels/{channel_id}/messages/"
    code, body, _ = await post(api, path, {"to": user.address, "content": "x"}, key="k" * 256)
    assert code == 400 and errors(body).startswith("ApiUsageError: Idempotency-Key:")


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_with_one_key_send_one_message(api, receiver):
    channel_id, user, _ = await connected_user(api, receiver)
    path = f"/channels/{channel_id}/messages/"
    body = {"to": user.address, "content": "just once"}
    results = await within(
        DeferredList([Deferred.fromCoroutine(post(api, path, body, key="race")) for _ in range(5)])
    )
    answers = [(code, answer) for ok, (code, answer, _) in results if ok]
    assert len(answers) == 5
    created = [answer for code, answer in answers if code == 201]
    in_progress = [answer for code, answer in answers if code == 409]
    assert len(created) + len(in_progress) == 5
    assert len({answer["result"]["message_id"] for answer in created}) == 1
    assert all(a["description"] == "request in progress" for a in in_progress)
    await post(api, path, {"to": user.address, "content": "marker"})
    assert await user.next_line() == "just once"
    assert await user.next_line() == "marker"


@pytest_twisted.ensureDeferred
async def test_the_store_lets_exactly_one_of_two_simultaneous_claims_through(redis, key_prefix):
    store = idempotency.IdempotencyStore(redis, Keys(key_prefix), ttl=60)
    body = {"content": "x"}
    results = await DeferredList(
        [Deferred.fromCoroutine(store.claim("chan", "key", body)) for _ in range(2)],
        consumeErrors=True,
    )
    outcomes = sorted(type(value if ok else value.value).__name__ for ok, value in results)
    assert outcomes == ["Claim", "StillInProgress"]
    claim = next(value for ok, value in results if ok)
    await store.complete(claim, 201, "message submitted", {"message_id": "m1"})
    stored = await store.claim("chan", "key", {"content": "x"})
    assert stored == idempotency.StoredAnswer(201, "message submitted", {"message_id": "m1"})
    try:
        await store.claim("chan", "key", {"content": "y"})
    except idempotency.KeyReused:
        pass
    else:
        raise AssertionError("a different body must not reuse the key")
    assert 0 < await redis.ttl(store._key("chan", "key")) <= 60
