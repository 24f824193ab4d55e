"""``junebug.api.schemas``: the fast path never accepts a body jsonschema refuses, so
every answer (and every error list) is the one jsonschema alone gives."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from junebug.api import routers, schemas
from junebug.api.errors import JsonDecodeError
from junebug.api.schemas import TEMPLATE_KEYWORD

#: Every request schema the API validates with.
SCHEMAS = {
    "MESSAGE_SEND": schemas.MESSAGE_SEND,
    "CHANNEL_CREATE": schemas.CHANNEL_CREATE,
    "CHANNEL_UPDATE": schemas.CHANNEL_UPDATE,
    "DEAD_LETTER_REPLAY": schemas.DEAD_LETTER_REPLAY,
    "ROUTER_CREATE": routers.ROUTER_CREATE,
    "ROUTER_UPDATE": routers.ROUTER_UPDATE,
    "DESTINATION_CREATE": routers.DESTINATION_CREATE,
    "DESTINATION_UPDATE": routers.DESTINATION_UPDATE,
}

# Values at and around every bound, pattern, enum and template the schemas have.
_TEXTS = [
    "",
    "x",
    "+27820000001",
    "http://127.0.0.1:9/events",
    "https://example.org/e?id={message_id}",
    "http://example.org/{bogus}",
    "http://example.org/{",
    "http://example.org/}",
    "ftp://example.org/",
    " http://example.org/",
    "HTTP://example.org/",
    "http:/x",
    "http://",
    "new",
    "resume",
    "close",
    "NEW",
    "bulk",
    "realtime",
    "a" * 15,
    "a" * 16,
    "a" * 64,
    "a" * 65,
    "my_queue.1:x-y",
    "My Queue",
    "queue\n",
    "telnet",
    "é",
    "1",
    "True",
    "None",
]
_NUMBERS = [
    0,
    1,
    2,
    5,
    6,
    -1,
    16,
    999,
    1000,
    1001,
    2592000,
    2592001,
    10**20,
    0.0,
    -0.0,
    0.5,
    1.0,
    3.0,
    5.0,
    5.5,
    1e-300,
    1e300,
    -1e300,
    2592000.0,
    2592000.5,
    float("nan"),
]
_KEYS = sorted(
    {key for schema in SCHEMAS.values() for key in schema.get("properties") or {}}
    | {"session_event", "continue_session", "ids", "bogus", "", "id"}
)

_LEAVES_LIST = [None, True, False, *_TEXTS, *_NUMBERS]
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(_TEXTS),
    st.sampled_from(_NUMBERS),
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_infinity=False),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3),
    ),
    max_leaves=6,
)
_BODIES = st.one_of(
    st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=8),
    _VALUES,
)


def _plausible(schema: dict) -> st.SearchStrategy:
    """Mostly values of the types ``schema`` allows, at and around its bounds (so that a
    body is often valid but for one field), now and then anything at all."""
    if "enum" in schema:
        return st.one_of(st.sampled_from([*schema["enum"], "bogus", 1, True, False]), _VALUES)
    kinds = schema.get("type", ["string", "number", "boolean", "null", "object"])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    options = [_VALUES]
    if "string" in kinds:
        options += [st.sampled_from(_TEXTS), st.text(max_size=5)]
    if "integer" in kinds or "number" in kinds:
        options.append(st.sampled_from(_NUMBERS))
    if "boolean" in kinds:
        options.append(st.booleans())
    if "null" in kinds:
        options.append(st.none())
    if "object" in kinds:
        options.append(_objects(schema))
    return st.one_of(*options)


@st.composite
def _objects(draw, schema: dict) -> dict:
    """Objects shaped by ``schema``: its required keys (usually), some of its other
    properties, and now and then a key it does not know."""
    properties = schema.get("properties") or {}
    body = {}
    for key in schema.get("required", []):
        if draw(st.integers(0, 9)):
            body[key] = draw(_plausible(properties.get(key, {})))
    if properties:
        for key in draw(st.lists(st.sampled_from(sorted(properties)), max_size=5)):
            body[key] = draw(_plausible(properties[key]))
    if not draw(st.integers(0, 9)):
        body[draw(st.sampled_from(_KEYS))] = draw(_VALUES)
    return body


#: The bodies applications send every day: all of them take the fast path.
COMMON_SENDS = [
    {"to": "+27820000001", "content": "hello"},
    {
        "to": "+27820000001",
        "from": "1234",
        "content": "hello from the benchmark",
        "event_url": "http://127.0.0.1:9/events",
    },
    {"reply_to": "0123456789abcdef", "content": "bye", "channel_data": {"continue_session": False}},
    {
        "to": "*120#",
        "content": None,
        "priority": 5,
        "validity": 60,
        "event_url": "https://app.example/e?id={message_id}&t={event_type}",
        "event_auth_token": "token",
        "group": None,
        "channel_data": {"session_event": "new", "continue_session": True, "extra": [1]},
    },
    {"to": "x", "content": "", "priority": "bulk", "validity": 0.5},
]


def _same(schema: dict, body) -> None:
    full = schemas.full_schema_errors(schema, body)
    check = schemas.fast_check(schema)
    if check is not None and check(body):
        assert full == [], f"fast path accepted a body jsonschema refuses: {body!r}"
    assert schemas.schema_errors(schema, body) == full


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(SCHEMAS)), _BODIES)
@example("MESSAGE_SEND", {"to": "x", "content": "c", "priority": True})
@example("MESSAGE_SEND", {"to": "x", "content": "c", "priority": 3.0})
@example("MESSAGE_SEND", {"to": "x", "content": "c", "validity": 0})
@example("MESSAGE_SEND", {"to": "x", "content": "c", "validity": False})
@example("MESSAGE_SEND", {"to": "x", "content": "c", "event_url": "http://a/{x}"})
@example("MESSAGE_SEND", {"to": "x", "content": "c", "channel_data": {"session_event": 1}})
@example("MESSAGE_SEND", {"to": "x", "content": "c", "channel_data": {"session_event": "x"}})
@example("MESSAGE_SEND", {"to": "", "content": "c"})
@example("MESSAGE_SEND", {"to": "x"})
@example("CHANNEL_CREATE", {"type": "telnet", "config": {}, "callback_secret": "a" * 15})
@example("CHANNEL_CREATE", {"type": "telnet", "config": {}, "amqp_queue": "q\n"})
@example("CHANNEL_UPDATE", {"callback_max_age": 0})
@example("DEAD_LETTER_REPLAY", None)
def test_the_fast_path_only_accepts_what_jsonschema_accepts(name: str, body) -> None:
    _same(SCHEMAS[name], body)


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_the_fast_path_only_accepts_what_jsonschema_accepts_for_shaped_bodies(data) -> None:
    """Bodies shaped by each schema, so that most are valid or wrong in one field."""
    name = data.draw(st.sampled_from(sorted(SCHEMAS)))
    _same(SCHEMAS[name], data.draw(_objects(SCHEMAS[name])))


@settings(max_examples=300, deadline=None)
@given(_BODIES)
def test_a_send_body_after_a_json_round_trip(body) -> None:
    """What the API validates is what json.loads made of the request: the same check
    on that."""
    try:
        parsed = json.loads(json.dumps(body))
    except ValueError:
        return
    _same(schemas.MESSAGE_SEND, parsed)


#: A body each schema accepts, to change one field of at a time.
BASES = {
    "MESSAGE_SEND": {"content": "c"},
    "CHANNEL_CREATE": {"type": "telnet", "config": {}},
    "CHANNEL_UPDATE": {},
    "DEAD_LETTER_REPLAY": {},
    "ROUTER_CREATE": {"type": "from_address", "config": {}},
    "ROUTER_UPDATE": {},
    "DESTINATION_CREATE": {"config": {}},
    "DESTINATION_UPDATE": {},
}
#: Every value above, and objects made of them (channel_data's session keys).
_POOL = [
    None,
    True,
    False,
    [],
    ["x"],
    {},
    *_TEXTS,
    *_NUMBERS,
    *({key: value} for key in ("session_event", "continue_session") for value in _LEAVES_LIST),
]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_field_with_every_value(name: str) -> None:
    """Exhaustively, one field at a time: the schema's bounds, patterns, enums and
    templates with values on either side of them."""
    schema, base = SCHEMAS[name], BASES[name]
    assert schemas.full_schema_errors(schema, base) == []
    accepted = refused = 0
    for key in [*(schema.get("properties") or {}), "bogus"]:
        for value in _POOL:
            body = {**base, key: value}
            _same(schema, body)
            if schemas.full_schema_errors(schema, body):
                refused += 1
            else:
                accepted += 1
    assert accepted and refused
    for key in schema.get("required", []):
        _same(schema, {k: v for k, v in base.items() if k != key})


#: Schemas with one keyword each (and with two), for every keyword the fast path
#: compiles, whatever the API's own schemas happen to use today.
SMALL_SCHEMAS = [
    {"type": "integer", "minimum": 1, "maximum": 5},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 2592000},
    {"type": ["number", "null"], "minimum": 0.5},
    {"type": "integer"},
    {"type": "boolean"},
    {"type": ["string", "integer"], "minLength": 1, "maxLength": 16, "maximum": 5},
    {"type": "string", "pattern": "^[a-z]+$"},
    {"type": "string", "pattern": "x"},
    {"type": ["string", "null"], TEMPLATE_KEYWORD: "event"},
    {"enum": ["new", "close"]},
    {"enum": [None, "new"]},
    {"enum": [1, True, "1"]},
    {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}},
    {"type": "object", "properties": {"a": {"maximum": 5}}, "additionalProperties": False},
    {"type": "object", "additionalProperties": True},
    {"type": "object", "additionalProperties": False},
    {"minimum": 1},
    {},
]


@pytest.mark.parametrize("schema", SMALL_SCHEMAS, ids=json.dumps)
def test_every_keyword_with_every_value(schema: dict) -> None:
    assert schemas._compile(schema) is not None
    for value in [*_POOL, {"a": "x"}, {"a": 5}, {"a": 6}, {"a": "x", "b": 1}, {"b": 1}]:
        _same(schema, value)


@pytest.mark.parametrize("body", COMMON_SENDS)
def test_common_sends_take_the_fast_path(body) -> None:
    assert schemas.full_schema_errors(schemas.MESSAGE_SEND, body) == []
    assert schemas.fast_check(schemas.MESSAGE_SEND)(body) is True


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_example_in_the_schemas_is_valid_by_either_path(name: str) -> None:
    schema = SCHEMAS[name]
    for body in schema.get("examples", []):
        assert schemas.full_schema_errors(schema, body) == []
        assert schemas.schema_errors(schema, body) == []


def test_which_schemas_have_a_fast_path() -> None:
    fast = {name for name, schema in SCHEMAS.items() if schemas.fast_check(schema) is not None}
    # The dead-letter replay's array keywords are not compiled: jsonschema checks those.
    assert fast == set(SCHEMAS) - {"DEAD_LETTER_REPLAY"}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": {"type": "string"}},
        {"type": "object", "properties": {"a": {"const": 1}}},
        {"type": "object", "patternProperties": {"^x": {}}, "additionalProperties": False},
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"anyOf": [{"type": "string"}]},
        {"$ref": "#/x"},
        {"type": "string", "minLength": True},
        {"type": 5},
        True,
    ],
)
def test_schemas_with_keywords_it_does_not_know_get_no_fast_path(schema) -> None:
    assert schemas._compile(schema) is None


def test_invalid_bodies_get_every_error_jsonschema_finds() -> None:
    body = {"to": "", "content": 5, "priority": 9, "bogus": 1, "event_url": "ftp://{x}"}
    errors = schemas.schema_errors(schemas.MESSAGE_SEND, body)
    assert errors == schemas.full_schema_errors(schemas.MESSAGE_SEND, body)
    assert [e["message"] for e in errors] == [
        "body: Additional properties are not allowed ('bogus' was unexpected)",
        "content: 5 is not of type 'string', 'null'",
        "event_url: 'ftp://{x}' does not match '^https?://'",
        "event_url: unknown template variable {x}; event_url can use {message_id}, "
        "{event_id}, {event_type}, {delivery_status}, {channel_id}, {from}, {to}, {timestamp}",
        "priority: 9 is greater than the maximum of 5",
        "to: '' should be non-empty",
    ]


# --- parsing the body: one decoder for every request, the same answers as json.loads ----


class _Body:
    def __init__(self, raw) -> None:
        self.content = io.BytesIO(raw) if isinstance(raw, bytes) else _Raw(raw)


class _Raw:
    def __init__(self, raw) -> None:
        self.raw = raw

    def read(self):
        return self.raw


def _parsed(raw) -> tuple:
    try:
        return "parsed", schemas.parse_json_body(_Body(raw))
    except Exception as exc:
        return "raised", type(exc), str(exc)


def _by_json_loads(raw) -> tuple:
    """parse_json_body as it was: json.loads with the hooks, a decoder per call."""
    try:
        value = json.loads(
            raw or b"null",
            parse_constant=schemas._no_constants,
            parse_float=schemas._finite_float,
        )
    except RecursionError:
        return "raised", JsonDecodeError, "request body is nested too deeply"
    except (ValueError, UnicodeDecodeError) as exc:
        return "raised", JsonDecodeError, f"request body is not valid JSON: {exc}"
    return "parsed", value


_JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
).map(json.dumps)


@settings(max_examples=1500, deadline=None)
@given(
    st.binary(max_size=40)
    | _JSON_TEXT.map(str.encode)
    | st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"]).flatmap(
        lambda codec: _JSON_TEXT.map(lambda text: text.encode(codec))
    )
    | _JSON_TEXT.map(lambda text: text[: len(text) // 2].encode())
    | st.text(max_size=20)
)
@example(b"")
@example(b"NaN")
@example(b"[1e999]")
@example(b'{"a": -Infinity}')
@example(b"\xef\xbb\xbf{}")
@example("\ufeff{}")
@example(b"[" * 100_000)
@example(b'"\xed\xa0\x80"')
@example(b'{"to": "x", "content": "y"}')
def test_bodies_parse_as_json_loads_parses_them(raw) -> None:
    assert _parsed(raw) == _by_json_loads(raw)
