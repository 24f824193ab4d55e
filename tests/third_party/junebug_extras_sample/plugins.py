"""MarkerPlugin: records every hook it receives, one line each, in a file."""

from __future__ import annotations

from typing import Any

from junebug.plugin import JunebugPlugin, PluginConfigError


class MarkerPlugin(JunebugPlugin):
    """Config: ``{"type": "junebug_extras_sample.plugins.MarkerPlugin", "marker": PATH}``."""

    def __init__(self) -> None:
        self.marker = ""

    def _note(self, line: str) -> None:
        with open(self.marker, "a", encoding="utf-8") as marker:
            marker.write(line + "\n")

    def start_plugin(self, config: dict[str, Any], junebug_config: Any) -> None:
        marker = config.get("marker")
        if not isinstance(marker, str) or not marker:
            raise PluginConfigError("MarkerPlugin needs 'marker', the path of a file to write")
        self.marker = marker
        self._note(f"started on port {junebug_config.port}")

    def stop_plugin(self) -> None:
        self._note("stopped")

    def channel_started(self, channel: Any) -> None:
        self._note(f"channel_started {channel.id} {channel.properties['type']}")

    def channel_stopped(self, channel: Any) -> None:
        self._note(f"channel_stopped {channel.id}")
