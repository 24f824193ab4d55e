"""Loading plugins and calling their hooks safely."""

from __future__ import annotations

import inspect
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from junebug.plugin import JunebugPlugin
from junebug.transports.registry import ChannelTypeError, load_class

log = Logger(namespace="junebug.plugins")


class PluginError(Exception):
    """A plugin cannot be loaded or started; the message names it."""


async def call(method: Any, *args: Any) -> Any:
    """Call a hook that may return a Deferred, a coroutine or a plain value."""
    result = await maybeDeferred(method, *args)
    if inspect.iscoroutine(result):
        result = await Deferred.fromCoroutine(result)
    return result


def load(plugin_configs: list[dict[str, Any]]) -> list[tuple[JunebugPlugin, dict[str, Any]]]:
    """Instantiate each configured plugin; raises PluginError naming the bad one."""
    loaded = []
    for config in plugin_configs:
        path = config.get("type")
        try:
            cls = load_class(str(path))
        except ChannelTypeError as exc:
            raise PluginError(f"plugin {path!r} cannot be loaded: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, JunebugPlugin)):
            raise PluginError(f"plugin {path!r} is not a junebug.plugin.JunebugPlugin")
        try:
            loaded.append((cls(), config))
        except Exception as exc:
            raise PluginError(f"plugin {path!r} could not be created: {exc}") from exc
    return loaded


class PluginHooks:
    """Calls every plugin's channel hooks; a plugin that raises is logged, not fatal."""

    def __init__(self, plugins: list[JunebugPlugin]) -> None:
        self.plugins = plugins

    async def _each(self, hook: str, channel: Any) -> None:
        for plugin in self.plugins:
            try:
                await call(getattr(plugin, hook), channel)
            except Exception as exc:  # noqa: BLE001 - a plugin must not stop a channel
                message = f"Plugin {type(plugin).__name__}.{hook} failed: {exc}"
                log.failure(message + " (channel {channel_id})", channel_id=channel.id)
                channel.log.error(message)

    async def channel_started(self, channel: Any) -> None:
        await self._each("channel_started", channel)

    async def channel_stopped(self, channel: Any) -> None:
        await self._each("channel_stopped", channel)
