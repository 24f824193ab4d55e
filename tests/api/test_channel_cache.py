"""A channel keeps its destination (and callback settings) made once, and makes them
again as soon as a property they are made of changes: through the API, or in place."""

from __future__ import annotations

import pytest
import pytest_twisted

from junebug.api.schemas import CHANNEL_PROPERTIES
from junebug.channel import DELIVERY_FIELDS, Channel
from junebug.workers.callbacks import settings_from
from junebug.workers.forwarder import Destination
from tests.api.test_messages import errors, telnet_channel


def fresh(channel: Channel) -> Destination:
    """The destination as it was made on every read, before it was kept."""
    properties = channel.properties
    return Destination(
        mo_url=properties.get("mo_url"),
        mo_url_auth_token=properties.get("mo_url_auth_token"),
        amqp_queue=properties.get("amqp_queue"),
        callback=settings_from(channel.id, properties),
    )


def assert_current(channel: Channel) -> None:
    expected = fresh(channel)
    assert channel.destination == expected
    assert channel.callback_settings == expected.callback
    assert channel.has_destination is expected.configured


#: Values for every property a channel has, so that each is changed at least twice.
VALUES = {
    "mo_url": ["http://a.example/mo", "http://b.example/mo", None],
    "mo_url_auth_token": ["t1", "t2", None],
    "amqp_queue": ["q1", "q2", None],
    "callback_max_attempts": [3, 7, None],
    "callback_max_age": [10.0, 2.5, 60, None],
    "callback_secret": ["s" * 16, "t" * 16, None],
}


def test_every_property_a_channel_has_is_seen_by_its_destination():
    """Every channel property changed in place, and by a new properties dict: whatever
    the destination or the callback settings are made of (today DELIVERY_FIELDS), a
    change is seen at once."""
    channel = Channel("c1", {"type": "telnet", "config": {}, "mo_url": "http://x/mo"}, None)
    assert_current(channel)
    kept = channel.destination
    assert channel.destination is kept  # kept while nothing changes
    for field in CHANNEL_PROPERTIES:
        for value in VALUES.get(field, ["one", 2, None, {"x": 1}]):
            channel.properties[field] = value  # in place
            assert_current(channel)
            channel.properties = {**channel.properties, field: value, "label": field}
            assert_current(channel)
        channel.properties.pop(field)
        assert_current(channel)
    assert set(VALUES) == set(DELIVERY_FIELDS)


@pytest.mark.parametrize("field", DELIVERY_FIELDS)
def test_changing_one_delivery_field_makes_a_new_destination(field):
    channel = Channel("c2", {"type": "telnet", "config": {}, "mo_url": "http://x/mo"}, None)
    before = channel.destination
    channel.properties[field] = VALUES[field][0]
    assert channel.destination is not before
    assert_current(channel)


@pytest_twisted.ensureDeferred
async def test_updates_through_the_api_are_seen_by_the_next_send(api, receiver, gateway):
    channel_id, _ = await telnet_channel(api, receiver)
    channel = gateway.running[channel_id]
    send = {"to": "x", "content": "c"}
    path = f"/channels/{channel_id}/messages/"
    code, body = await api.post(path, send)
    assert code == 201, body
    assert channel.has_destination and channel.destination.mo_url == receiver.url("/mo")

    code, body = await api.post(f"/channels/{channel_id}", {"mo_url": None})
    assert code == 200, body
    assert channel.has_destination is False
    code, body = await api.post(path, send)
    assert code == 400 and "mo_url" in errors(body)

    code, body = await api.post(
        f"/channels/{channel_id}",
        {
            "mo_url": receiver.url("/other"),
            "mo_url_auth_token": "token",
            "callback_secret": "s" * 16,
            "callback_max_attempts": 4,
        },
    )
    assert code == 200, body
    channel = gateway.running[channel_id]
    assert_current(channel)
    assert channel.destination.mo_url == receiver.url("/other")
    assert channel.destination.mo_url_auth_token == "token"
    assert channel.callback_settings.secret == "s" * 16
    assert channel.callback_settings.max_attempts == 4
    # What the forwarder reads for each message is the channel's current destination.
    assert channel.forwarder.destination == channel.destination
    code, body = await api.post(path, send)
    assert code == 201, body

    code, body = await api.post(f"/channels/{channel_id}", {"callback_max_attempts": None})
    assert code == 200, body
    assert_current(channel)
    assert (
        channel.forwarder.destination.callback.max_attempts == fresh(channel).callback.max_attempts
    )
