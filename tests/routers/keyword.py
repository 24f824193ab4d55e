"""A test-only router type, to show that a new router type is one small module:
inbound messages go to the destinations whose ``keyword`` is the message's first word."""

from __future__ import annotations

from typing import Any

from junebug.routers.base import Router


class KeywordRouter(Router):
    CONFIG_SCHEMA = {
        "type": "object",
        "properties": {"channel": {"type": "string", "minLength": 1}},
        "required": ["channel"],
        "additionalProperties": False,
    }
    DESTINATION_CONFIG_SCHEMA = {
        "type": "object",
        "properties": {"keyword": {"type": "string", "pattern": "^\\S+$"}},
        "required": ["keyword"],
        "additionalProperties": False,
    }

    @classmethod
    def channels_of(cls, config: dict[str, Any]) -> list[str]:
        return [config["channel"]]

    def route_inbound(self, message: dict[str, Any]) -> list[str]:
        words = (message.get("content") or "").split()
        first = words[0].lower() if words else None
        return [d.id for d in self.destinations.values() if d.config["keyword"].lower() == first]
