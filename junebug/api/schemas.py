"""One JSON schema per request body, and validation that reports every problem."""

from __future__ import annotations

import json
import math
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from junebug import callback_templates
from junebug.api.errors import ApiUsageError, JsonDecodeError

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_COUNT = {"type": ["integer", "null"], "minimum": 0}
_URL = {"type": ["string", "null"], "pattern": "^https?://", "format": "uri"}
#: Keyword naming the kind of callback a URL template is for (callback_templates).
TEMPLATE_KEYWORD = "x-junebug-callback-template"


def _template_url(kind: str) -> dict[str, Any]:
    return {**_URL, TEMPLATE_KEYWORD: kind}


CHANNEL_PROPERTIES: dict[str, Any] = {
    "type": {"type": "string", "minLength": 1, "description": "channel type, e.g. telnet"},
    "label": {**_NULLABLE_STRING, "description": "user-defined label"},
    "config": {"type": "object", "description": "settings for the channel type"},
    "metadata": {"type": ["object", "null"], "description": "user-defined data"},
    "status_url": {
        **_template_url("status"),
        "description": "where status events are POSTed (may hold template variables)",
    },
    "mo_url": {
        **_template_url("inbound"),
        "description": "where inbound messages are POSTed (may hold template variables)",
    },
    "mo_url_auth_token": {**_NULLABLE_STRING, "description": "token for mo_url"},
    "amqp_queue": {
        "type": ["string", "null"],
        "pattern": "^[a-z0-9_.:-]+$",
        "description": "AMQP routing key prefix for inbound, events and outbound",
    },
    "rate_limit_count": {**_NULLABLE_COUNT, "description": "messages per window"},
    "rate_limit_window": {**_NULLABLE_COUNT, "description": "window in seconds"},
    "character_limit": {**_NULLABLE_COUNT, "description": "longest content allowed"},
    "wire_logging": {
        "type": ["boolean", "null"],
        "description": "log wire-level detail (PDUs, HTTP exchanges) in the channel's log",
    },
    "callback_secret": {
        "type": ["string", "null"],
        "minLength": 16,
        "writeOnly": True,
        "description": "signs every callback (HMAC-SHA256); never shown or logged",
    },
    "callback_max_attempts": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": 1000,
        "description": "attempts a failing callback gets before it is a dead letter",
    },
    "callback_max_age": {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "maximum": 2592000,
        "description": "seconds after which a failing callback is no longer retried",
    },
    "public_http": {
        "type": "object",
        "description": "how a proxy exposes an HTTP-based channel (nginx plugin)",
    },
}

CHANNEL_CREATE = {
    "type": "object",
    "properties": CHANNEL_PROPERTIES,
    "required": ["type", "config"],
    "additionalProperties": False,
    "examples": [
        {
            "type": "telnet",
            "label": "My First Channel",
            "mo_url": "http://127.0.0.1:9000/mo",
            "config": {"twisted_endpoint": "tcp:0:interface=127.0.0.1"},
        }
    ],
}

CHANNEL_UPDATE = {
    "type": "object",
    "properties": CHANNEL_PROPERTIES,
    "additionalProperties": False,
}

MESSAGE_SEND = {
    "type": "object",
    "properties": {
        "to": {"type": "string", "minLength": 1, "description": "address to send to"},
        "from": {**_NULLABLE_STRING, "description": "address sent from"},
        "group": {**_NULLABLE_STRING, "description": "group to send to"},
        "reply_to": {"type": "string", "minLength": 1, "description": "id of inbound to answer"},
        "content": {**_NULLABLE_STRING, "description": "text of the message"},
        "event_url": {
            **_template_url("event"),
            "description": "where this message's events are POSTed (may hold template variables)",
        },
        "event_auth_token": {**_NULLABLE_STRING, "description": "token for event_url"},
        "priority": {
            "type": ["integer", "string", "null"],
            "minimum": 1,
            "maximum": 5,
            "maxLength": 64,
            "description": 'delivery priority: 1 (default, "bulk") to 5 ("realtime"), higher '
            "first; other strings (the original ignored priority) mean 1",
        },
        "validity": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "description": "seconds the message may wait in the queue before it is dropped",
        },
        "channel_data": {
            "type": "object",
            "description": "channel-specific data",
            "properties": {
                "session_event": {
                    "enum": [None, "new", "resume", "close"],
                    "description": "the session event to send with the message",
                },
                "continue_session": {
                    "type": ["boolean", "null"],
                    "description": "false closes the session after this message",
                },
            },
        },
    },
    "required": ["content"],
    "additionalProperties": False,
    "examples": [{"to": "127.0.0.1:53378", "content": "hello"}],
}


DEAD_LETTER_REPLAY = {
    "type": ["object", "null"],
    "properties": {
        "ids": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "description": "the dead letters to replay (default: all of them)",
        },
    },
    "additionalProperties": False,
    "examples": [{"ids": ["0f1e2d3c4b5a69788796a5b4c3d2e1f0"]}, {}],
}


def _location(error: Any) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    return path or "body"


def _check_template(validator: Any, kind: str, instance: Any, schema: Any) -> Any:
    if isinstance(instance, str):
        for problem in callback_templates.problems(instance, kind):
            yield ValidationError(problem)


#: Draft 2020-12 plus the check of callback URL templates.
Validator = validators.extend(Draft202012Validator, {TEMPLATE_KEYWORD: _check_template})

_validators: dict[int, Any] = {}


def _validator(schema: dict[str, Any]) -> Any:
    # Building a validator costs more than most validations: keep one per schema.
    validator = _validators.get(id(schema))
    if validator is None or validator.schema is not schema:
        validator = _validators[id(schema)] = Validator(schema)
    return validator


def schema_errors(schema: dict[str, Any], body: Any) -> list[dict[str, Any]]:
    """Every problem with ``body``, each naming the field, sorted by message."""
    validator = _validator(schema)
    found = []
    for error in validator.iter_errors(body):
        found.append(
            {
                "type": "invalid_body",
                "message": f"{_location(error)}: {error.message}",
                "schema_path": [str(part) for part in error.absolute_schema_path],
            }
        )
    return sorted(found, key=lambda e: e["message"])


def validate(schema: dict[str, Any], body: Any) -> None:
    errors = schema_errors(schema, body)
    if errors:
        raise ApiUsageError(errors[0]["message"], errors=errors)


def _no_constants(name: str) -> Any:
    # NaN and Infinity are not JSON: stored, they would make our own answers invalid JSON.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 parses as infinity, which our answers could not echo
        raise ValueError(f"{text} is too large a number")
    return value


def parse_json_body(request: Any) -> Any:
    raw = request.content.read()
    try:
        return json.loads(raw or b"null", parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:
        raise JsonDecodeError("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonDecodeError(f"request body is not valid JSON: {exc}") from exc


def parse_object(request: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """The request's JSON object body, validated against ``schema``."""
    body = parse_json_body(request)
    validate(schema, body)
    return body
