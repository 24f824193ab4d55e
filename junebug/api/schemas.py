"""One JSON schema per request body, and validation that reports every problem.

Validation has a fast path (``fast_check``): a request schema is compiled once into a
plain-Python check that answers "certainly valid" for the common bodies (the exact JSON
types, lengths, ranges, patterns and templates the schema asks for) and "not sure" for
everything else. Only "certainly valid" skips jsonschema; a body it is not sure of is
validated by jsonschema exactly as before, so every error answer is jsonschema's own.
A schema using a keyword the compiler does not know gets no fast path at all.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
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


# -- the fast path ---------------------------------------------------------------------

#: Keywords that never make an instance invalid (``format`` too: our validators are
#: built without a format checker, so jsonschema treats it as an annotation).
_ANNOTATIONS = frozenset(
    {
        "description",
        "examples",
        "title",
        "default",
        "writeOnly",
        "readOnly",
        "deprecated",
        "$comment",
        "format",
    }
)
#: The exact Python types json.loads makes, and the JSON Schema types each certainly
#: is. A float is only a "number" here (jsonschema also calls 3.0 an "integer": such a
#: body is left to jsonschema); subclasses are never recognised.
_JSON_TYPES: dict[type, frozenset[str]] = {
    str: frozenset({"string"}),
    int: frozenset({"integer", "number"}),
    float: frozenset({"number"}),
    bool: frozenset({"boolean"}),
    type(None): frozenset({"null"}),
    dict: frozenset({"object"}),
    list: frozenset({"array"}),
}

Check = Callable[[Any], bool]


def _template_ok(kind: str) -> Check:
    # The check _check_template makes, answered as a bool.
    return lambda text: not callback_templates.problems(text, kind)


def _compile(schema: Any) -> Check | None:
    """A check that is True only for instances ``schema`` certainly accepts; None when
    ``schema`` uses anything this function does not understand."""
    if type(schema) is not dict:
        return None
    known: frozenset[type] = frozenset(_JSON_TYPES)  # the types checked at all
    text: list[Check] = []  # applied to a str
    number: list[Check] = []  # applied to an int or float
    enum_null = False
    enum_text: frozenset[str] | None = None
    properties: dict[str, Check] = {}
    required: tuple[str, ...] = ()
    closed = False
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        if keyword == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                return None
            known = frozenset(t for t, kinds in _JSON_TYPES.items() if kinds & set(names))
        elif keyword in ("minLength", "maxLength", "minimum", "maximum") or keyword in (
            "exclusiveMinimum",
            "exclusiveMaximum",
        ):
            if type(value) not in (int, float):
                return None
            target = text if keyword.endswith("Length") else number
            target.append(_BOUNDS[keyword](value))
        elif keyword == "pattern":
            if not isinstance(value, str):
                return None
            search = re.compile(value).search  # jsonschema: re.search(pattern, instance)
            text.append(lambda s, search=search: search(s) is not None)
        elif keyword == TEMPLATE_KEYWORD:
            if value not in callback_templates.VARIABLES:
                return None
            text.append(_template_ok(value))
        elif keyword == "enum":
            if not isinstance(value, list):
                return None
            enum_null = any(member is None for member in value)
            enum_text = frozenset(m for m in value if type(m) is str)
        elif keyword == "properties":
            if type(value) is not dict:
                return None
            for name, subschema in value.items():
                check = _compile(subschema)
                if check is None:
                    return None
                properties[name] = check
        elif keyword == "required":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                return None
            required = tuple(value)
        elif keyword == "additionalProperties" and value is False:
            closed = True
        elif keyword == "additionalProperties" and value is True:
            continue
        else:
            return None
    has_enum = enum_text is not None

    def check(instance: Any) -> bool:
        kind = type(instance)
        if kind not in known:
            return False
        if has_enum and not (
            (instance is None and enum_null) or (kind is str and instance in enum_text)
        ):
            return False
        if kind is str:
            for ok in text:
                if not ok(instance):
                    return False
        elif kind is int or kind is float:
            for ok in number:
                if not ok(instance):
                    return False
        elif kind is dict:
            for name in required:
                if name not in instance:
                    return False
            for name, item in instance.items():
                ok = properties.get(name)
                if ok is None:
                    if closed:
                        return False
                elif not ok(item):
                    return False
        return True

    return check


_BOUNDS: dict[str, Callable[[Any], Check]] = {
    # Each is True exactly when jsonschema's keyword of that name yields no error.
    "minLength": lambda n: lambda s: len(s) >= n,
    "maxLength": lambda n: lambda s: len(s) <= n,
    "minimum": lambda n: lambda x: x >= n,
    "maximum": lambda n: lambda x: x <= n,
    "exclusiveMinimum": lambda n: lambda x: x > n,
    "exclusiveMaximum": lambda n: lambda x: x < n,
}

_fast_checks: dict[int, tuple[Any, Check | None]] = {}


def fast_check(schema: dict[str, Any]) -> Check | None:
    """``schema``'s compiled check (kept per schema, like its validator), or None when
    it has none. Schemas are constants: one changed after first use is not recompiled."""
    found = _fast_checks.get(id(schema))
    if found is None or found[0] is not schema:
        compiled = _compile(schema) if _validator(schema).format_checker is None else None
        found = _fast_checks[id(schema)] = (schema, compiled)
    return found[1]


def schema_errors(schema: dict[str, Any], body: Any) -> list[dict[str, Any]]:
    """Every problem with ``body``, each naming the field, sorted by message."""
    check = fast_check(schema)
    if check is not None and check(body):
        return []  # certainly valid: what jsonschema would say, at a fraction of the cost
    return full_schema_errors(schema, body)


def full_schema_errors(schema: dict[str, Any], body: Any) -> list[dict[str, Any]]:
    """``schema_errors`` by jsonschema alone, without the fast path."""
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


#: What json.loads(..., parse_constant=_no_constants, parse_float=_finite_float) builds
#: for every call (a decoder and its scanner), built once.
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite_float)


def _loads(raw: Any) -> Any:
    if type(raw) is not bytes:
        return json.loads(raw, parse_constant=_no_constants, parse_float=_finite_float)
    # json.loads's own steps for bytes, with the decoder built once.
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def parse_json_body(request: Any) -> Any:
    raw = request.content.read()
    try:
        return _loads(raw or b"null")
    except RecursionError:
        raise JsonDecodeError("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonDecodeError(f"request body is not valid JSON: {exc}") from exc


def parse_object(request: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """The request's JSON object body, validated against ``schema``."""
    body = parse_json_body(request)
    validate(schema, body)
    return body
