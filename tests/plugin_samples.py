"""Plugins used by the tests (importable by their Python path)."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from junebug.plugin import JunebugPlugin, PluginConfigError
from junebug.transports.base import Transport

#: Every call any RecordingPlugin received, in order, across instances.
CALLS: list[tuple[str, Any]] = []


class RecordingPlugin(JunebugPlugin):
    def start_plugin(self, config: dict, junebug_config: Any) -> Any:
        CALLS.append(("start_plugin", config.get("name")))
        # A Deferred the service must wait for.
        return deferLater(reactor, 0, lambda: None)

    def stop_plugin(self) -> None:
        CALLS.append(("stop_plugin", None))

    async def channel_started(self, channel: Any) -> None:
        CALLS.append(("channel_started", channel.id))

    def channel_stopped(self, channel: Any) -> None:
        CALLS.append(("channel_stopped", channel.id))


class ExplodingPlugin(JunebugPlugin):
    def channel_started(self, channel: Any) -> None:
        raise RuntimeError("kaboom")


class PickyPlugin(JunebugPlugin):
    def start_plugin(self, config: dict, junebug_config: Any) -> None:
        if "colour" not in config:
            raise PluginConfigError("PickyPlugin needs 'colour'")


class NotAPlugin:
    pass


class FailingChannel(Transport):
    """A channel type whose every send raises (to test error reporting)."""

    CONFIG_SCHEMA = {"type": "object"}

    async def setup(self) -> None:
        await self.publish_status("failing", "ok", "ready", "Ready")

    async def handle_outbound(self, message: dict) -> None:
        raise ZeroDivisionError("the wire is on fire")
