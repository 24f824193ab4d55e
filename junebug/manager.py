"""Creates, finds, updates, restarts, restores and deletes channels."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.logger import Logger

from junebug.api.errors import (
    ApiUsageError,
    ChannelNotFound,
    ChannelStartError,
    InvalidChannelConfig,
    InvalidChannelType,
)
from junebug.bus.base import channel_keys
from junebug.channel import Channel

log = Logger()

#: Properties whose change is announced to plugins as the channel stopping and starting.
HOOKED_FIELDS = ("type", "config", "public_http")


class ChannelManager:
    def __init__(self, backends: Any, hooks: Any = None) -> None:
        self.backends = backends
        #: Objects with channel_started(channel) / channel_stopped(channel) (plugins).
        self.hooks = hooks or []
        self.running: dict[str, Channel] = {}

    # -- validation -------------------------------------------------------------------

    def check(self, properties: dict[str, Any]) -> None:
        """Raise an API error unless the (already schema-valid) properties can run."""
        types = self.backends.channel_types
        channel_type = properties.get("type")
        if channel_type not in types:
            raise InvalidChannelType(
                f"Invalid channel type {channel_type!r}, must be one of: {', '.join(sorted(types))}"
            )
        transport = types[channel_type]
        config = properties.get("config") or {}
        problems = transport.check_config(config)
        if problems:
            raise InvalidChannelConfig(problems[0]["message"], errors=problems)
        if properties.get("amqp_queue") and not self.backends.bus.external:
            raise ApiUsageError(
                "amqp_queue needs Junebug to run with RabbitMQ: start jb with --amqp-host "
                "(or an 'amqp' section in the config file)"
            )

    # -- lookups ----------------------------------------------------------------------

    async def get(self, channel_id: str) -> Channel:
        channel = self.running.get(channel_id)
        if channel is not None:
            return channel
        properties = await self.backends.channels.load(channel_id)
        if properties is None:
            raise ChannelNotFound(f"Channel {channel_id!r} not found")
        # Stored but not running here (it failed to start): show it, stopped.
        return Channel(channel_id, properties, self.backends)

    async def ids(self) -> list[str]:
        return await self.backends.channels.ids()

    # -- changes ----------------------------------------------------------------------

    async def create(self, properties: dict[str, Any]) -> Channel:
        self.check(properties)
        channel = Channel(str(uuid.uuid4()), properties, self.backends)
        await self._start(channel)
        await self.backends.channels.save(channel.id, properties)
        return channel

    async def update(self, channel_id: str, changes: dict[str, Any]) -> Channel:
        channel = await self.get(channel_id)
        previous = channel.properties
        merged = {**channel.properties, **changes}
        self.check(merged)
        if channel.id in self.running:
            try:
                await channel.update(merged)
            except Exception as exc:
                # Put the settings that worked back, so the channel keeps running as it was.
                try:
                    await channel.update(previous)
                except Exception as again:  # noqa: BLE001 - report the original problem
                    channel.log.error(f"Channel could not restart with its old settings: {again}")
                raise ChannelStartError(f"Channel could not restart: {exc}") from exc
        else:
            channel.properties = merged
        await self.backends.channels.save(channel.id, merged)
        if channel.id in self.running and any(
            previous.get(field) != merged.get(field) for field in HOOKED_FIELDS
        ):
            # Plugins (e.g. nginx) derive their state from these: let them redo it.
            for hook in self.hooks:
                await hook.channel_stopped(channel)
                await hook.channel_started(channel)
        return channel

    async def restart(self, channel_id: str) -> Channel:
        channel = await self.get(channel_id)
        await self._stop(channel)
        channel.close_log()
        channel = Channel(channel.id, channel.properties, self.backends)
        await self._start(channel)
        return channel

    async def delete(self, channel_id: str) -> None:
        channel = await self.get(channel_id)
        await self._stop(channel)
        channel.close_log()
        b = self.backends
        await b.channels.delete(channel.id)
        await b.statuses.delete(channel.id)
        for key in channel_keys(channel.id):
            await b.bus.delete_queue(key)

    async def restore(self) -> None:
        """Start every stored channel; one that fails is logged and left stopped."""
        for channel_id in await self.ids():
            if channel_id in self.running:
                continue
            properties = await self.backends.channels.load(channel_id)
            if properties is None:
                continue
            channel = Channel(channel_id, properties, self.backends)
            try:
                await self._start(channel)
            except Exception as exc:  # noqa: BLE001 - one bad channel must not stop the rest
                log.error("Channel {id} could not be restored: {error}", id=channel_id, error=exc)
                channel.log.error(f"Channel could not start after restart: {exc}")

    async def stop_all(self) -> None:
        for channel in list(self.running.values()):
            await self._stop(channel)
            channel.close_log()

    async def _start(self, channel: Channel) -> None:
        try:
            await channel.start()
        except Exception as exc:
            channel.log.error(f"Channel could not start: {exc}")
            channel.close_log()
            raise ChannelStartError(f"Channel could not start: {exc}") from exc
        self.running[channel.id] = channel
        for hook in self.hooks:
            await hook.channel_started(channel)

    async def _stop(self, channel: Channel) -> None:
        if self.running.pop(channel.id, None) is None:
            return
        await channel.stop()
        for hook in self.hooks:
            await hook.channel_stopped(channel)
