"""The ``from_address`` router: one channel, destinations chosen by regular expression.

Each destination's ``regular_expression`` is searched (``re.search``) in the inbound
message's **to** address: the number or USSD code the user dialled. The original
Junebug matches the to address too, despite the router's name; this one does the
same, so ``^\\*123\\*4567\\*1#$`` picks out one USSD sub-code.

A message goes to every destination that matches; one that matches none goes to the
``default`` destination (at most one), or is dropped with a line in the router's log.
"""

from __future__ import annotations

import re
from typing import Any

from junebug.routers.base import Router


class FromAddressRouter(Router):
    CONFIG_SCHEMA = {
        "type": "object",
        "properties": {
            "channel": {
                "type": "string",
                "minLength": 1,
                "description": "id of the channel whose inbound messages are routed",
            },
        },
        "required": ["channel"],
        "additionalProperties": False,
    }

    DESTINATION_CONFIG_SCHEMA = {
        "type": "object",
        "properties": {
            "regular_expression": {
                "type": "string",
                "description": "searched in the to address (number or code dialled)",
            },
            "default": {
                "type": "boolean",
                "description": "gets the messages no destination matches (at most one)",
            },
        },
        "required": ["regular_expression"],
        "additionalProperties": False,
    }

    @classmethod
    def channels_of(cls, config: dict[str, Any]) -> list[str]:
        return [config["channel"]]

    @classmethod
    def validate_destination_config(cls, config: dict[str, Any]) -> list[str]:
        try:
            re.compile(config["regular_expression"])
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            return [f"regular_expression {config['regular_expression']!r} is invalid: {exc}"]
        return []

    @classmethod
    def validate_destinations(cls, configs: list[dict[str, Any]]) -> list[str]:
        defaults = [config for config in configs if config.get("default")]
        if len(defaults) > 1:
            return ["default: only one destination of a router may be the default"]
        return []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.patterns = [
            (destination.id, re.compile(destination.config["regular_expression"]))
            for destination in self.destinations.values()
        ]
        self.defaults = [d.id for d in self.destinations.values() if d.config.get("default")]

    def route_inbound(self, message: dict[str, Any]) -> list[str]:
        to_addr = message.get("to_addr")
        if to_addr is None:
            self.log.warning(
                "Inbound message without a to address", message_id=message.get("message_id")
            )
            return self.defaults
        matched = [
            destination_id for destination_id, pattern in self.patterns if pattern.search(to_addr)
        ]
        return matched or self.defaults
