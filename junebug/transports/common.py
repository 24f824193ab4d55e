"""Config pieces every channel type shares."""

from __future__ import annotations

import re
from typing import Any

#: Keys every vumi transport accepted (vumi's base Transport config). Junebug sets its own
#: values for these, so a channel body may carry them and they change nothing.
VUMI_BASE_CONFIG: dict[str, Any] = {
    "transport_name": {
        "type": ["string", "null"],
        "description": "accepted for compatibility; Junebug uses the channel id",
    },
    "worker_name": {
        "type": ["string", "null"],
        "description": "accepted for compatibility; Junebug uses the channel id",
    },
    "publish_status": {
        "type": ["boolean", "null"],
        "description": "accepted for compatibility; channels always publish status events",
    },
    "amqp_prefetch_count": {
        "type": ["integer", "null"],
        "minimum": 0,
        "description": "accepted for compatibility; Junebug sets the prefetch",
    },
}

_INTEGER = re.compile(r"^\s*[-+]?\d+\s*$")
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _types(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def coerce_numbers(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with numeric strings turned into numbers where ``schema`` wants one.

    The original read its channel configs with confmodel, which took ``"8080"`` for an
    integer and ``"2.5"`` for a float; channel bodies written for it may send them so.
    Anything else is left for the schema to judge.
    """
    if isinstance(value, str):
        types = _types(schema)
        if "integer" in types and _INTEGER.match(value):
            return int(value)
        if "number" in types and _NUMBER.match(value):
            number = float(value)
            return int(number) if number.is_integer() and _INTEGER.match(value) else number
        return value
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        return {
            key: coerce_numbers(properties[key], item) if key in properties else item
            for key, item in value.items()
        }
    return value
