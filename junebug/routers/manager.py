"""Creates, finds, updates, restores and deletes routers and their destinations.

Every change is validated first (the router type checks its config and its
destinations' configs; the manager checks the routed channels), then the router is
(re)started with its new settings, and only then saved: a change that cannot run
leaves the router as it was. A router restarts whenever it or one of its
destinations changes.

Several ``jb`` processes sharing one Redis each run every router (their consumers
share its queues on RabbitMQ). ``keep_in_step`` makes each process follow the
routers stored in Redis every few seconds: a router created, changed or deleted
through one process's API is started, restarted or stopped in the others.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from junebug.api.errors import ApiUsageError
from junebug.bus.base import channel_keys
from junebug.keyed_lock import KeyedLock
from junebug.routers.base import (
    DestinationNotFound,
    InvalidRouterConfig,
    InvalidRouterDestinationConfig,
    InvalidRouterType,
    Router,
    RouterDestination,
    RouterNotFound,
    RouterStartError,
    summed_rates,
)
from junebug.store.routers import RouterStore

log = Logger()

Records = dict[str, dict[str, Any]]

#: Seconds between two looks at the stored routers (``keep_in_step``): a change made
#: through another process's API is running here within this long.
STEP_INTERVAL = 10.0


def _settings(properties: dict[str, Any], destinations: Records) -> str:
    """A router's settings as one comparable value (what Redis holds, key order aside)."""
    return json.dumps([properties, destinations], sort_keys=True)


class RouterManager:
    def __init__(self, backends: Any, channels: Any, types: dict[str, type[Router]]) -> None:
        self.backends = backends
        self.channels = channels
        self.types = types
        self.store = RouterStore(backends.redis, backends.keys)
        self.running: dict[str, Router] = {}
        self._logs: dict[str, Any] = {}
        #: The settings each running router started with, and those of stored routers
        #: whose failure to start was logged (not logged again for the same settings).
        self._running_as: dict[str, str] = {}
        self._failed_as: dict[str, str] = {}
        #: Changes to one router happen one at a time: a look at the stored routers
        #: between an API change's restart and its save would undo the change.
        self._lock = KeyedLock()
        self._stepping: Any = None
        self._stepped: Deferred | None = None
        guards = getattr(channels, "guards", None)
        if guards is not None:
            guards.append(self.guard_channel)

    # -- lookups ----------------------------------------------------------------------

    async def ids(self) -> list[str]:
        return await self.store.ids()

    async def load(self, router_id: str) -> dict[str, Any]:
        properties = await self.store.load(router_id)
        if properties is None:
            raise RouterNotFound(f"Router {router_id!r} not found")
        return properties

    async def destination_ids(self, router_id: str) -> list[str]:
        await self.load(router_id)
        return await self.store.destination_ids(router_id)

    async def load_destination(self, router_id: str, destination_id: str) -> dict[str, Any]:
        await self.load(router_id)
        properties = await self.store.load_destination(router_id, destination_id)
        if properties is None:
            raise DestinationNotFound(
                f"Destination {destination_id!r} not found on router {router_id!r}"
            )
        return properties

    async def view(self, router_id: str) -> dict[str, Any]:
        """The router as the API shows it: its properties, id and status (the seven
        rates, summed over its destinations)."""
        properties = await self.load(router_id)
        owners = await self.store.destination_ids(router_id)
        status = await summed_rates(self.backends.rates, owners)
        return {**properties, "id": router_id, "status": status}

    async def destination_view(self, router_id: str, destination_id: str) -> dict[str, Any]:
        properties = await self.load_destination(router_id, destination_id)
        status = await self.backends.rates.rates(destination_id)
        return {**properties, "id": destination_id, "status": status}

    def running_router(self, router_id: str) -> Router:
        router = self.running.get(router_id)
        if router is None:
            raise ApiUsageError(
                f"Router {router_id} is not running (it could not start: see its logs)"
            )
        return router

    async def routers_of_channel(self, channel_id: str, but: str | None = None) -> list[str]:
        """Ids of the stored routers that route ``channel_id`` (except ``but``)."""
        found = []
        for router_id in await self.store.ids():
            if router_id == but:
                continue
            properties = await self.store.load(router_id)
            cls = self.types.get((properties or {}).get("type"))
            if cls is None:
                continue
            try:
                routed = cls.channels_of(properties.get("config") or {})
            except Exception:  # noqa: BLE001 - a config the type no longer reads
                continue
            if channel_id in routed:
                found.append(router_id)
        return found

    # -- validation -------------------------------------------------------------------

    def router_class(self, router_type: Any) -> type[Router]:
        cls = self.types.get(router_type)
        if cls is None:
            raise InvalidRouterType(
                f"Invalid router type {router_type!r}, must be one of: "
                f"{', '.join(sorted(self.types))}"
            )
        return cls

    async def check(
        self, router_id: str | None, properties: dict[str, Any], destinations: Records
    ) -> type[Router]:
        """Raise an API error unless the (schema-valid) router and its destinations can run."""
        cls = self.router_class(properties.get("type"))
        config = properties.get("config") or {}
        problems = cls.check_config(config)
        if problems:
            raise InvalidRouterConfig(problems[0]["message"], errors=problems)
        found = []
        for channel_id in cls.channels_of(config):
            channel = await self.backends.channels.load(channel_id)
            if channel is None:
                found.append(f"channel {channel_id!r} does not exist")
                continue
            if channel.get("mo_url") or channel.get("amqp_queue"):
                found.append(
                    f"channel {channel_id!r} has an mo_url or amqp_queue: a routed channel "
                    "must have neither (its router's destinations deliver instead)"
                )
            for other in await self.routers_of_channel(channel_id, but=router_id):
                found.append(f"channel {channel_id!r} is already routed by router {other}")
        if found:
            errors = [{"type": "invalid_config", "message": f"config: {m}"} for m in found]
            raise InvalidRouterConfig(errors[0]["message"], errors=errors)
        self.check_destinations(cls, destinations)
        return cls

    def check_destinations(self, cls: type[Router], destinations: Records) -> None:
        errors = []
        for destination_id, properties in destinations.items():
            for problem in cls.check_destination_config(properties.get("config")):
                if len(destinations) > 1 and destination_id:
                    problem = {**problem, "message": f"{destination_id}: {problem['message']}"}
                errors.append(problem)
        if not errors:
            configs = [properties.get("config") or {} for properties in destinations.values()]
            errors = [
                {"type": "invalid_destination_config", "message": f"config: {message}"}
                for message in cls.validate_destinations(configs)
            ]
        if errors:
            raise InvalidRouterDestinationConfig(errors[0]["message"], errors=errors)

    def check_delivery(self, properties: dict[str, Any]) -> None:
        if properties.get("amqp_queue") and not self.backends.bus.external:
            raise ApiUsageError(
                "amqp_queue needs Junebug to run with RabbitMQ: start jb with --amqp-host "
                "(or an 'amqp' section in the config file)"
            )
        token, alias = properties.get("mo_url_auth_token"), properties.get("mo_url_token")
        if token is not None and alias is not None and token != alias:
            raise ApiUsageError(
                "mo_url_token and mo_url_auth_token are two names for the same token: "
                "give one of them (or the same value to both)"
            )

    async def guard_channel(self, channel_id: str, properties: dict[str, Any] | None) -> None:
        """Refuse deleting a routed channel (``properties`` None), or giving it a
        delivery of its own (its router would compete with it for every message)."""
        routers = await self.routers_of_channel(channel_id)
        if not routers:
            return
        if properties is None:
            raise ApiUsageError(
                f"Channel {channel_id} is routed by router {routers[0]}: delete that router "
                "(or point it at another channel) before deleting the channel"
            )
        if properties.get("mo_url") or properties.get("amqp_queue"):
            raise ApiUsageError(
                f"Channel {channel_id} is routed by router {routers[0]}: it cannot have an "
                "mo_url or amqp_queue (give them to the router's destinations)"
            )

    # -- routers ----------------------------------------------------------------------

    async def create(self, properties: dict[str, Any]) -> str:
        router_id = str(uuid.uuid4())
        async with self._lock(router_id):
            await self.check(None, properties, {})
            await self._replace_running(router_id, properties, {}, previous=None)
            await self.store.save(router_id, properties)
        return router_id

    async def update(self, router_id: str, properties: dict[str, Any]) -> None:
        """Replace the router's properties (PATCH merges before calling this)."""
        async with self._lock(router_id):
            await self._update(router_id, properties)

    async def _update(self, router_id: str, properties: dict[str, Any]) -> None:
        previous = await self.load(router_id)
        destinations = await self.store.load_destinations(router_id)
        await self.check(router_id, properties, destinations)
        await self._replace_running(
            router_id, properties, destinations, previous=(previous, destinations)
        )
        await self.store.save(router_id, properties)

    async def delete(self, router_id: str) -> None:
        async with self._lock(router_id):
            await self._delete(router_id)

    async def _delete(self, router_id: str) -> None:
        await self.load(router_id)
        destination_ids = await self.store.destination_ids(router_id)
        await self._stop(router_id)
        await self.store.delete(router_id)
        for destination_id in destination_ids:
            await self._forget_destination(destination_id)

    # -- destinations -----------------------------------------------------------------

    async def create_destination(self, router_id: str, properties: dict[str, Any]) -> str:
        destination_id = str(uuid.uuid4())
        await self._change_destination(router_id, destination_id, properties)
        return destination_id

    async def update_destination(
        self, router_id: str, destination_id: str, properties: dict[str, Any]
    ) -> None:
        await self.load_destination(router_id, destination_id)
        await self._change_destination(router_id, destination_id, properties)

    async def delete_destination(self, router_id: str, destination_id: str) -> None:
        await self.load_destination(router_id, destination_id)
        await self._change_destination(router_id, destination_id, None)
        await self._forget_destination(destination_id)

    async def _forget_destinations(self, destination_ids: list[str]) -> None:
        for destination_id in destination_ids:
            try:
                await self._forget_destination(destination_id)
            except Exception as exc:  # noqa: BLE001 - best effort: logged, not retried
                log.info(
                    "Could not clean up after destination {id}: {error}",
                    id=destination_id,
                    error=exc,
                )

    async def _forget_destination(self, destination_id: str) -> None:
        """What a deleted destination leaves behind: its queues, and its callbacks
        waiting for a retry and its dead letters."""
        for key in channel_keys(destination_id):
            await self.backends.bus.delete_queue(key)
        callbacks = getattr(self.backends, "callbacks", None)
        if callbacks is not None:
            await callbacks.store.forget(destination_id)

    async def _change_destination(
        self, router_id: str, destination_id: str, properties: dict[str, Any] | None
    ) -> None:
        async with self._lock(router_id):
            await self._change_destination_now(router_id, destination_id, properties)

    async def _change_destination_now(
        self, router_id: str, destination_id: str, properties: dict[str, Any] | None
    ) -> None:
        router = await self.load(router_id)
        cls = self.router_class(router.get("type"))
        destinations = await self.store.load_destinations(router_id)
        changed = dict(destinations)
        if properties is None:
            changed.pop(destination_id, None)
        else:
            self.check_delivery(properties)
            self.check_destinations(cls, {"": properties})
            changed[destination_id] = properties
            self.check_destinations(cls, changed)
        await self._replace_running(router_id, router, changed, previous=(router, destinations))
        if properties is None:
            await self.store.delete_destination(router_id, destination_id)
        else:
            await self.store.save_destination(router_id, destination_id, properties)

    # -- running ----------------------------------------------------------------------

    async def restore(self) -> None:
        """Start every stored router; one that fails is logged and left stopped."""
        await self.follow_store()

    async def follow_store(self) -> None:
        """Run the routers stored in Redis as they are stored: start the new ones,
        restart those whose settings changed (through another process's API), stop
        those deleted. A router that cannot start is logged (once for the same
        settings) and left stopped; the next look tries again."""
        stored = set(await self.store.ids())
        for router_id in list(self._failed_as):
            if router_id not in stored:
                del self._failed_as[router_id]
        for router_id in [r for r in self.running if r not in stored]:
            async with self._lock(router_id):
                if router_id in self.running and router_id not in await self.store.ids():
                    gone = list(self.running[router_id].destinations)
                    self._log(router_id).info("Router deleted through another process: stopped")
                    await self._stop(router_id)
                    await self._forget_destinations(gone)
        for router_id in sorted(stored):
            try:
                async with self._lock(router_id):
                    await self._follow(router_id)
            except Exception as exc:  # noqa: BLE001 - e.g. a record that isn't JSON
                log.error("Router {id} could not be read: {error}", id=router_id, error=exc)

    async def _follow(self, router_id: str) -> None:
        properties = await self.store.load(router_id)
        if properties is None:
            return  # deleted meanwhile
        destinations = await self.store.load_destinations(router_id)
        settings = _settings(properties, destinations)
        if settings == self._running_as.get(router_id):
            return
        running = self.running.get(router_id)
        changed = running is not None
        # Destinations deleted through another process: once the router is stopped,
        # what they left behind here goes too (queues, callbacks made meanwhile).
        gone = [d for d in (running.destinations if running else ()) if d not in destinations]
        try:
            await self._stop(router_id)
            await self._forget_destinations(gone)
            await self._start(router_id, properties, destinations)
        except Exception as exc:  # noqa: BLE001 - one bad router must not stop the rest
            # Tried again at every look; logged once for the same settings.
            if self._failed_as.get(router_id) != settings:
                self._failed_as[router_id] = settings
                log.error("Router {id} could not be started: {error}", id=router_id, error=exc)
                self._log(router_id).error(f"Router could not start: {exc}")
            self._close_log(router_id)
        else:
            if changed:
                self.running[router_id].log.info("Router restarted: changed in another process")

    def keep_in_step(self, interval: float = STEP_INTERVAL, clock: Any = None) -> None:
        """Every ``interval`` seconds on ``clock`` (default: the backends'),
        ``follow_store`` (errors are logged and the next look tries again)."""
        if self._stepping is not None:
            return
        from twisted.internet.task import LoopingCall

        async def step() -> None:
            try:
                await self.follow_store()
            except Exception as exc:  # noqa: BLE001 - Redis away: try again next time
                log.info("Could not read the stored routers: {error}", error=exc)

        self._stepping = LoopingCall(lambda: Deferred.fromCoroutine(step()))
        self._stepping.clock = clock or self.backends.clock
        # Fires once stopped and any look in progress has ended.
        self._stepped = self._stepping.start(interval, now=False)

    async def stop_all(self) -> None:
        if self._stepping is not None and self._stepping.running:
            self._stepping.stop()
            await self._stepped  # a look in progress may be starting a router: let it finish
        self._stepping = None
        for router_id in list(self.running):
            await self._stop(router_id)

    def _log(self, router_id: str) -> Any:
        if router_id not in self._logs:
            self._logs[router_id] = self.backends.open_log(router_id)
        return self._logs[router_id]

    def _close_log(self, router_id: str) -> None:
        router_log = self._logs.pop(router_id, None)
        if router_log is not None:
            router_log.close()

    async def _start(
        self, router_id: str, properties: dict[str, Any], destinations: Records
    ) -> None:
        cls = self.router_class(properties.get("type"))
        router = cls(
            router_id,
            properties.get("config") or {},
            [RouterDestination(did, record) for did, record in sorted(destinations.items())],
            backends=self.backends,
            log=self._log(router_id),
        )
        await router.start()
        self.running[router_id] = router
        self._running_as[router_id] = _settings(properties, destinations)
        self._failed_as.pop(router_id, None)
        router.log.info(
            f"Router started: routing {', '.join(router.channel_ids)} to "
            f"{len(destinations)} destination(s)"
        )

    async def _stop(self, router_id: str) -> None:
        router = self.running.pop(router_id, None)
        self._running_as.pop(router_id, None)
        if router is not None:
            await router.stop()
        self._close_log(router_id)

    async def _replace_running(
        self,
        router_id: str,
        properties: dict[str, Any],
        destinations: Records,
        previous: tuple[dict[str, Any], Records] | None,
    ) -> None:
        """Restart the router with new settings; if it cannot start, start it again
        with ``previous`` (when it was running) and raise RouterStartError."""
        was_running = router_id in self.running
        await self._stop(router_id)
        try:
            await self._start(router_id, properties, destinations)
        except Exception as exc:
            self._log(router_id).error(f"Router could not start: {exc}")
            if previous is not None and was_running:
                try:
                    await self._start(router_id, *previous)
                except Exception as again:  # noqa: BLE001 - report the original problem
                    self._log(router_id).error(f"Router could not restart as it was: {again}")
            if router_id not in self.running:
                self._close_log(router_id)
            raise RouterStartError(f"Router could not start: {exc}") from exc
