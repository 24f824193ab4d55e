"""Each API operation declared once: its route, body schema, result schema and answers.

``JunebugApi.route`` registers the Klein route and records the operation here;
``openapi.py`` turns the records into the OpenAPI description, so the two can't drift.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from junebug.api.schemas import CHANNEL_PROPERTIES
from junebug.store.rates import RATE_FIELDS

_NULLABLE_STRING = {"type": ["string", "null"]}

COMPONENT_STATUS = {
    "type": "object",
    "properties": {
        "channel_id": {"type": "string"},
        "component": {"type": "string"},
        "status": {"enum": ["ok", "degraded", "down"]},
        "type": {"type": "string"},
        "message": {"type": "string"},
        "details": {"type": "object"},
    },
}

CHANNEL_STATUS = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ok", "degraded", "down", None]},
        "components": {"type": "object", "additionalProperties": COMPONENT_STATUS},
        **{name: {"type": "number"} for name in RATE_FIELDS.values()},
    },
    "required": ["status", "components", "inbound_message_rate", "outbound_message_rate"],
}

CHANNEL = {
    "type": "object",
    "properties": {**CHANNEL_PROPERTIES, "id": {"type": "string"}, "status": CHANNEL_STATUS},
    "required": ["id", "type", "config", "status"],
}

ID_LIST = {"type": "array", "items": {"type": "string"}}

MESSAGE = {
    "type": "object",
    "properties": {
        "to": _NULLABLE_STRING,
        "from": _NULLABLE_STRING,
        "group": _NULLABLE_STRING,
        "message_id": {"type": "string"},
        "channel_id": _NULLABLE_STRING,
        "timestamp": {"type": "string"},
        "reply_to": _NULLABLE_STRING,
        "content": _NULLABLE_STRING,
        "channel_data": {"type": "object"},
    },
    "required": ["message_id", "to", "from", "content", "channel_data"],
}

EVENT = {
    "type": "object",
    "properties": {
        "channel_id": {"type": "string"},
        "message_id": _NULLABLE_STRING,
        "timestamp": {"type": "string"},
        "event_type": {
            "enum": [
                "submitted",
                "rejected",
                "delivery_succeeded",
                "delivery_failed",
                "delivery_pending",
                None,
            ]
        },
        "event_details": {"type": "object"},
    },
}

MESSAGE_STATUS = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "last_event_type": {"type": ["string", "null"]},
        "last_event_timestamp": {"type": ["string", "null"]},
        "events": {"type": "array", "items": EVENT},
    },
    "required": ["id", "last_event_type", "last_event_timestamp", "events"],
}

LOG_ENTRIES = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "logger": {"type": "string"},
            "level": {"type": "integer"},
            "timestamp": {"type": "number"},
            "message": {"type": "string"},
            "message_id": {"type": "string"},
            "exception": {
                "type": "object",
                "properties": {
                    "class": {"type": "string"},
                    "instance": {"type": "string"},
                    "stack": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "required": ["logger", "level", "timestamp", "message"],
    },
}

EMPTY = {"type": "object", "maxProperties": 0}

ERRORS = {
    "type": "object",
    "properties": {
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                    "schema_path": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["type", "message"],
            },
        }
    },
    "required": ["errors"],
}


@attrs.frozen
class QueryParameter:
    name: str
    schema: dict[str, Any]
    description: str


@attrs.frozen
class Operation:
    path: str  #: Klein/werkzeug rule, e.g. /channels/<string:channel_id>
    method: str
    summary: str
    status: int
    description: str
    result: dict[str, Any]
    body: dict[str, Any] | None = None
    errors: tuple[int, ...] = (400, 404)
    query: tuple[QueryParameter, ...] = ()
    #: Other documented answers: (status, description, result schema).
    answers: tuple[tuple[int, str, dict[str, Any]], ...] = ()
    #: Request headers the operation reads.
    headers: tuple[QueryParameter, ...] = ()

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", self.path)

    @property
    def path_parameters(self) -> list[str]:
        return re.findall(r"<(?:\w+:)?(\w+)>", self.path)
