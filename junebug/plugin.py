"""The plugin interface (spec 1.10): hooks into Junebug's start, stop and channels.

A plugin is a subclass of ``JunebugPlugin`` named by its full Python path in the
``type`` key of its config (``--plugin '{"type": "pkg.mod.Class", ...}'`` or the
config file's ``plugins`` list). Each method may return a Deferred (or be a
coroutine function); Junebug waits for it.
"""

from __future__ import annotations

from typing import Any


class JunebugPlugin:
    """Base class for plugins; every method is optional."""

    def start_plugin(self, config: dict[str, Any], junebug_config: Any) -> Any:
        """Called once at start-up, before channels are restored.

        ``config`` is this plugin's dict (with its ``type``); ``junebug_config`` the
        JunebugConfig. Raise ``PluginConfigError`` to stop start-up with a message.
        """

    def stop_plugin(self) -> Any:
        """Called once at shut-down, after every channel has stopped."""

    def channel_started(self, channel: Any) -> Any:
        """Called after a channel's workers started (create, restart, restore).

        ``channel.id`` and ``channel.properties`` describe it.
        """

    def channel_stopped(self, channel: Any) -> Any:
        """Called after a channel's workers stopped (restart, delete, shut-down)."""


class PluginConfigError(ValueError):
    """A plugin's config is invalid; start-up stops with this message."""
