"""Creates, finds, updates, restarts, restores and deletes channels."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from junebug.api.errors import (
    ApiUsageError,
    ChannelNotFound,
    ChannelRunningElsewhere,
    ChannelStartError,
    InvalidChannelConfig,
    InvalidChannelType,
)
from junebug.api.urls import CALLBACK_URL_FIELDS, url_problem
from junebug.bus.base import channel_keys
from junebug.channel import Channel
from junebug.keyed_lock import KeyedLock
from junebug.store.claims import ClaimedElsewhere
from junebug.store.queues import QueueStore
from junebug.transports.common import coerce_numbers

log = Logger()

#: Properties whose change is announced to plugins as the channel stopping and starting.
HOOKED_FIELDS = ("type", "config", "public_http")


class ChannelManager:
    def __init__(self, backends: Any, hooks: Any = None, claims: Any = None) -> None:
        self.backends = backends
        #: Objects with channel_started(channel) / channel_stopped(channel) (plugins).
        self.hooks = hooks or []
        self.running: dict[str, Channel] = {}
        #: Async callables (channel_id, new properties, or None when deleting) that raise
        #: an API error to refuse the change: routers protect the channels they route.
        self.guards: list[Any] = []
        #: A store.claims.ClaimStore when several jb processes may share Redis: each
        #: channel then runs only in the process holding its claim.
        self.claims = claims
        #: Channels that failed to start here for their own reasons (not retried).
        self.broken: set[str] = set()
        #: Channels seen running in another process: id -> that process.
        self.elsewhere: dict[str, str] = {}
        self._keeping: Any = None
        self._kept: Deferred | None = None
        #: Changes to one channel happen one at a time: two overlapping restarts would
        #: otherwise each start a transport, and one would run untracked.
        self._lock = KeyedLock()

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
        if isinstance(properties.get("config"), dict):
            # Numbers sent as strings, as the original's config reader accepted them.
            properties["config"] = coerce_numbers(transport.CONFIG_SCHEMA, properties["config"])
        config = properties.get("config") or {}
        problems = transport.check_config(config)
        if problems:
            raise InvalidChannelConfig(problems[0]["message"], errors=problems)
        bad_urls = [
            {"type": "invalid_body", "message": f"{field}: {problem}"}
            for field in CALLBACK_URL_FIELDS
            if isinstance(properties.get(field), str)
            and (problem := url_problem(properties[field])) is not None
        ]
        if bad_urls:
            raise ApiUsageError(bad_urls[0]["message"], errors=bad_urls)
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
        async with self._lock(channel_id):
            return await self._update(channel_id, changes)

    async def _update(self, channel_id: str, changes: dict[str, Any]) -> Channel:
        channel = await self.get(channel_id)
        await self._refuse_if_elsewhere(channel)
        previous = channel.properties
        merged = {**channel.properties, **changes}
        self.check(merged)
        for guard in self.guards:
            await guard(channel.id, merged)
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
        async with self._lock(channel_id):
            return await self._restart(channel_id)

    async def _restart(self, channel_id: str) -> Channel:
        channel = await self.get(channel_id)
        await self._refuse_if_elsewhere(channel)
        await self._stop(channel, release=False)  # keep the claim: no one else adopts it
        channel.close_log()
        channel = Channel(channel.id, channel.properties, self.backends)
        await self._start(channel)
        return channel

    async def delete(self, channel_id: str) -> None:
        async with self._lock(channel_id):
            return await self._delete(channel_id)

    async def _delete(self, channel_id: str) -> None:
        channel = await self.get(channel_id)
        for guard in self.guards:
            await guard(channel.id, None)
        await self._refuse_if_elsewhere(channel)
        # The claim goes last, so no other process adopts a half-deleted channel.
        await self._stop(channel, release=False)
        channel.close_log()
        b = self.backends
        await b.channels.delete(channel.id)
        await b.statuses.delete(channel.id)
        await QueueStore(b.redis, b.keys).delete(channel.id)  # numbering, counts, cancel mark
        callbacks = getattr(b, "callbacks", None)
        if callbacks is not None:
            await callbacks.store.forget(channel.id)  # pending retries and dead letters
        for key in channel_keys(channel.id):
            await b.bus.delete_queue(key)
        if self.claims is not None:
            await self.claims.release(channel.id)

    async def restore(self) -> None:
        """Start every stored channel; one that fails is logged and left stopped."""
        for channel_id in await self.ids():
            if channel_id in self.running or channel_id in self.broken:
                continue
            if self.claims is not None:
                owner = await self.claims.owner(channel_id)
                if owner is not None and owner != self.claims.identity:
                    if self.elsewhere.get(channel_id) != owner:
                        log.info(
                            "Channel {id} is running in another Junebug process ({owner})",
                            id=channel_id,
                            owner=owner,
                        )
                    self.elsewhere[channel_id] = owner
                    continue
            properties = await self.backends.channels.load(channel_id)
            if properties is None:
                continue
            channel = Channel(channel_id, properties, self.backends)
            try:
                async with self._lock(channel_id):
                    if channel_id in self.running:
                        continue  # started meanwhile (by the API)
                    await self._start(channel)
            except Exception as exc:  # noqa: BLE001 - one bad channel must not stop the rest
                if isinstance(exc.__cause__, ClaimedElsewhere):
                    continue  # claimed by another process in between
                self.broken.add(channel_id)
                log.error("Channel {id} could not be restored: {error}", id=channel_id, error=exc)
                channel.log.error(f"Channel could not start after restart: {exc}")
            else:
                self.elsewhere.pop(channel_id, None)

    def keep_claims(self, interval: float | None = None) -> None:
        """Every ``interval`` seconds (a third of the claim TTL): renew this process's
        claims, stop a channel whose claim another process now holds, and start stored
        channels nobody runs (their process stopped or died)."""
        if self.claims is None or self._keeping is not None:
            return
        from twisted.internet.task import LoopingCall

        self._keeping = LoopingCall(lambda: Deferred.fromCoroutine(self._keep_claims()))
        self._keeping.clock = self.backends.clock
        # Fires once stopped and any look in progress has ended.
        self._kept = self._keeping.start(interval or self.claims.ttl / 3, now=False)

    async def _keep_claims(self) -> None:
        try:
            for channel in list(self.running.values()):
                try:
                    await self.claims.claim(channel.id)
                except ClaimedElsewhere as exc:
                    log.error("Stopping channel {id}: {error}", id=channel.id, error=exc)
                    channel.log.error(f"Stopping: {exc}")
                    await self._stop(channel, release=False)
                    channel.close_log()
            await self.restore()
        except Exception as exc:  # noqa: BLE001 - Redis away: try again next time
            log.info("Could not renew channel claims: {error}", error=exc)

    async def stop_all(self) -> None:
        if self._keeping is not None and self._keeping.running:
            self._keeping.stop()
            await self._kept  # a look in progress may be starting a channel: let it finish
        for channel in list(self.running.values()):
            await self._stop(channel)
            channel.close_log()

    async def _start(self, channel: Channel) -> None:
        if self.claims is not None:
            try:
                await self.claims.claim(channel.id)
            except ClaimedElsewhere as exc:
                raise ChannelStartError(f"Channel could not start: {exc}") from exc
        try:
            await channel.start()
        except Exception as exc:
            channel.log.error(f"Channel could not start: {exc}")
            channel.close_log()
            if self.claims is not None:
                await self.claims.release(channel.id)
            raise ChannelStartError(f"Channel could not start: {exc}") from exc
        self.running[channel.id] = channel
        self.broken.discard(channel.id)
        for hook in self.hooks:
            await hook.channel_started(channel)

    async def _stop(self, channel: Channel, release: bool = True) -> None:
        if self.running.get(channel.id) is not channel:
            return  # not running, or another object runs under this id: not ours to stop
        del self.running[channel.id]
        await channel.stop()
        if release and self.claims is not None:
            try:
                await self.claims.release(channel.id)
            except Exception as exc:  # noqa: BLE001 - the claim expires on its own
                log.info("Could not release the claim on {id}: {error}", id=channel.id, error=exc)
        for hook in self.hooks:
            await hook.channel_stopped(channel)

    async def _refuse_if_elsewhere(self, channel: Channel) -> None:
        """A channel another process runs can only be changed through that process."""
        if self.claims is not None and channel.id not in self.running:
            try:
                await self.claims.check(channel.id)
            except ClaimedElsewhere as exc:
                raise ChannelRunningElsewhere(str(exc)) from exc
