"""Template variables in callback URLs (``mo_url``, ``event_url``, ``status_url``).

A variable is a name in braces, e.g. ``http://app/mo?from={from}&id={message_id}``.
Braces are not allowed unescaped in a URL (RFC 3986 leaves them out; a real URL
carries them as ``%7B`` / ``%7D``), so a template can never be mistaken for a URL
that happens to contain the syntax, as Kannel's ``%x`` could be for a
percent-encoded character. Each value is percent-encoded whole (``/``, ``&``, ``?``,
``=`` included), so it is safe in a path segment and in a query value alike; a
missing value is the empty string.

Which variables a URL may use depends on what is POSTed to it (``KINDS``). A
template with an unknown variable, or a brace that is not part of ``{name}``, is
refused with a message naming both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from junebug import messages

#: What each kind of callback URL can use, with a short description of each variable.
VARIABLES: dict[str, dict[str, str]] = {
    "inbound": {
        "message_id": "the inbound message's id",
        "channel_id": "the channel it arrived on",
        "from": "the sender's address",
        "to": "the address it was sent to",
        "content": "the message text",
        "session_event": "new, resume or close (USSD), else empty",
        "timestamp": "when the message arrived (YYYY-MM-DD HH:MM:SS.ffffff, UTC)",
    },
    "event": {
        "message_id": "the id of the message the event is about",
        "event_id": "the event's own id",
        "event_type": "submitted, rejected, delivery_succeeded, delivery_failed or "
        "delivery_pending",
        "delivery_status": "pending, failed or delivered for delivery reports, else empty",
        "channel_id": "the channel the message was sent through",
        "from": "the sent message's from address",
        "to": "the sent message's to address",
        "timestamp": "when the event happened (YYYY-MM-DD HH:MM:SS.ffffff, UTC)",
    },
    "status": {
        "channel_id": "the channel whose status changed",
        "component": "the component the status is about",
        "status": "ok, degraded or down",
        "type": "the kind of status, e.g. connection_lost",
        "timestamp": "when the status was reported (YYYY-MM-DD HH:MM:SS.ffffff, UTC)",
    },
}

#: The API field holding each kind of URL.
FIELDS = {"inbound": "mo_url", "event": "event_url", "status": "status_url"}

_TOKEN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


class TemplateError(ValueError):
    """A callback URL template that cannot be used; the message says why."""


def _names(template: str) -> list[tuple[str | None, int]]:
    """(variable name, or None for a stray brace; its offset) for every brace."""
    return [(match.group(1), match.start()) for match in _TOKEN.finditer(template)]


def problems(template: str, kind: str) -> list[str]:
    """Everything wrong with ``template`` as a URL for ``kind`` callbacks."""
    known = VARIABLES[kind]
    found = []
    for name, offset in _names(template):
        if name is None:
            found.append(
                f"stray {template[offset]!r} at position {offset}: template variables are "
                "written {name}; a literal brace must be percent-encoded (%7B, %7D)"
            )
        elif name not in known:
            found.append(
                f"unknown template variable {{{name}}}; {FIELDS[kind]} can use "
                + ", ".join(f"{{{n}}}" for n in known)
            )
    return found


def check(template: str, kind: str, field: str | None = None) -> None:
    """Raise ``TemplateError`` (message starting with the field) unless usable."""
    found = problems(template, kind)
    if found:
        raise TemplateError(f"{field or FIELDS[kind]}: {found[0]}")


def is_template(url: str) -> bool:
    return "{" in url or "}" in url


def render(template: str, kind: str, values: Mapping[str, Any]) -> str:
    """``template`` with each variable replaced by its percent-encoded value.

    Fails with ``TemplateError`` when the template is not valid for ``kind``.
    """
    if not is_template(template):
        return template
    check(template, kind)

    def substitute(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        return "" if value is None else quote(str(value), safe="")

    return _TOKEN.sub(substitute, template)


# -- the values of each kind of callback ------------------------------------------------


def _timestamp(payload: Mapping[str, Any]) -> str | None:
    value = payload.get("timestamp")
    return value if isinstance(value, str) else None


def inbound_values(channel_id: str, message: Mapping[str, Any]) -> dict[str, Any]:
    """Variables of an inbound vumi message."""
    return {
        "message_id": message.get("message_id"),
        "channel_id": channel_id,
        "from": message.get("from_addr"),
        "to": message.get("to_addr"),
        "content": message.get("content"),
        "session_event": message.get("session_event"),
        "timestamp": _timestamp(message),
    }


def event_values(
    channel_id: str, event: Mapping[str, Any], record: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Variables of a vumi event; ``record`` is the sent message's stored record."""
    record = record or {}
    return {
        "message_id": event.get("user_message_id"),
        "event_id": event.get("event_id"),
        "event_type": messages.api_event_type(dict(event)),
        "delivery_status": event.get("delivery_status"),
        "channel_id": channel_id,
        "from": record.get("from"),
        "to": record.get("to"),
        "timestamp": _timestamp(event),
    }


def status_values(channel_id: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """Variables of a vumi status event."""
    return {
        "channel_id": channel_id,
        "component": status.get("component"),
        "status": status.get("status"),
        "type": status.get("type"),
        "timestamp": _timestamp(status),
    }
