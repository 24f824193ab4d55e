"""Callback URL templates: syntax, substitution with encoding, and refusal at the API."""

from __future__ import annotations

import pytest
import pytest_twisted

from junebug import callback_templates as templates
from tests.helpers import TelnetUser, free_port


def test_values_are_substituted_and_percent_encoded():
    url = templates.render(
        "http://app/mo/{channel_id}?from={from}&text={content}&s={session_event}",
        "inbound",
        {"channel_id": "c 1", "from": "+27 82/1&x=y", "content": "héllo?", "session_event": None},
    )
    assert url == "http://app/mo/c%201?from=%2B27%2082%2F1%26x%3Dy&text=h%C3%A9llo%3F&s="


def test_a_url_without_variables_is_left_alone():
    assert templates.render("http://app/x?a=%7B1%7D", "event", {}) == "http://app/x?a=%7B1%7D"


@pytest.mark.parametrize(
    ("template", "kind", "expected"),
    [
        ("http://a/{nope}", "inbound", "unknown template variable {nope}"),
        ("http://a/{event_type}", "inbound", "unknown template variable {event_type}"),
        ("http://a/{content}", "event", "unknown template variable {content}"),
        ("http://a/{message_id}", "status", "unknown template variable {message_id}"),
        ("http://a/{message_id", "inbound", "stray '{' at position 9"),
        ("http://a/}", "inbound", "stray '}' at position 9"),
        ("http://a/{}", "inbound", "stray '{'"),
        ("http://a/{ from }", "inbound", "stray '{'"),
    ],
)
def test_bad_templates_are_refused_naming_the_problem(template, kind, expected):
    found = templates.problems(template, kind)
    assert found and expected in found[0]
    with pytest.raises(templates.TemplateError, match=templates.FIELDS[kind]):
        templates.render(template, kind, {})


def test_every_kind_has_its_variables():
    assert set(templates.VARIABLES) == set(templates.FIELDS)
    assert "delivery_status" in templates.VARIABLES["event"]
    assert templates.problems("http://a/{component}/{status}", "status") == []


def test_event_values_use_the_sent_message():
    values = templates.event_values(
        "c", {"user_message_id": "m", "event_type": "ack", "event_id": "e"}, {"to": "+1"}
    )
    assert values["event_type"] == "submitted" and values["to"] == "+1"


# -- through the API ----------------------------------------------------------------------


def errors(body) -> list[str]:
    return [e["message"] for e in body["result"]["errors"]]


def telnet_body(receiver, **extra):
    port = free_port()
    return port, {
        "type": "telnet",
        "config": {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1"},
        **extra,
    }


@pytest_twisted.ensureDeferred
async def test_bad_channel_templates_are_refused_at_creation_and_modification(api, receiver):
    _, body = telnet_body(receiver, mo_url="http://app/{sender}", status_url="http://a/{status")
    code, answer = await api.post("/channels/", body)
    assert code == 400
    messages = errors(answer)
    assert any(m.startswith("mo_url: unknown template variable {sender}") for m in messages)
    assert any(m.startswith("status_url: stray '{'") for m in messages)

    _, body = telnet_body(receiver, mo_url=receiver.url("/mo"))
    code, answer = await api.post("/channels/", body)
    channel_id = answer["result"]["id"]
    code, answer = await api.post(f"/channels/{channel_id}", {"mo_url": "http://a/{event_id}"})
    assert code == 400
    assert errors(answer)[0].startswith("mo_url: unknown template variable {event_id}")


@pytest_twisted.ensureDeferred
async def test_a_bad_event_url_template_is_refused_at_send(api, receiver):
    _, body = telnet_body(receiver, mo_url=receiver.url("/mo"))
    code, answer = await api.post("/channels/", body)
    channel_id = answer["result"]["id"]
    code, answer = await api.post(
        f"/channels/{channel_id}/messages/",
        {"to": "x", "content": "c", "event_url": "http://a/{from_addr}"},
    )
    assert code == 400
    assert errors(answer)[0].startswith("event_url: unknown template variable {from_addr}")


@pytest_twisted.ensureDeferred
async def test_mo_and_event_urls_are_expanded_per_message(api, receiver):
    port, body = telnet_body(
        receiver, mo_url=receiver.url("/mo/{channel_id}?from={from}&id={message_id}")
    )
    code, answer = await api.post("/channels/", body)
    assert code == 201, answer
    channel_id = answer["result"]["id"]
    user = await TelnetUser().connect(port)
    start = await receiver.next()
    from_addr = start.json["from"]
    message_id = start.json["message_id"]
    assert start.path == (f"/mo/{channel_id}?from={from_addr.replace(':', '%3A')}&id={message_id}")

    event_url = receiver.url("/ev/{event_type}/{message_id}?to={to}&s={delivery_status}")
    code, answer = await api.post(
        f"/channels/{channel_id}/messages/",
        {"to": from_addr, "content": "hi", "event_url": event_url},
    )
    assert code == 201, answer
    sent_id = answer["result"]["message_id"]
    await user.next_line()
    event = await receiver.next()
    assert event.path == f"/ev/submitted/{sent_id}?to={from_addr.replace(':', '%3A')}&s="
    await user.hang_up()
