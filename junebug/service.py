"""JunebugService: starts the store and bus, restores channels, serves the API."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.server import Site

from junebug import plugins
from junebug.api import speedups
from junebug.api.app import JunebugApi
from junebug.backends import Backends
from junebug.bus.local import LocalBus
from junebug.manager import ChannelManager
from junebug.plugins import PluginHooks
from junebug.routers.manager import RouterManager
from junebug.routers.registry import router_types
from junebug.store import redis as redis_store
from junebug.store.claims import ClaimStore, process_identity
from junebug.transports.registry import channel_types
from junebug.workers.components import BackendMonitor
from junebug.workers.http import CallbackPoster

log = Logger(namespace="junebug")


class StartupError(Exception):
    """Junebug cannot start with this configuration; the message says why."""


class _QuietSite(Site):
    """The API's HTTP site, without an access-log line per request (a busy gateway
    answers thousands a second; errors are logged where they happen)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def api_site(api: JunebugApi) -> Site:
    """The HTTP site serving ``api``: quiet, with the speedups in place (same answers,
    less CPU per request: api/speedups.py)."""
    speedups.install()
    return _QuietSite(api.resource())


def _quote_interface(interface: str) -> str:
    return interface.replace(":", r"\:")


class JunebugService(MultiService):
    def __init__(self, config: Any, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.embedded_redis: Any = None
        self.redis: Any = None
        self.bus: Any = None
        self.poster: Any = None
        self.backends: Backends | None = None
        self.manager: ChannelManager | None = None
        self.routers: RouterManager | None = None
        self.monitor: BackendMonitor | None = None
        self.port: Any = None
        self.plugins: list[Any] = []

    # Twisted's service protocol ------------------------------------------------------

    def startService(self) -> Deferred:
        super().startService()
        return Deferred.fromCoroutine(self.start())

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self.stop())

    # ---------------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        try:
            types = channel_types(config.channels, config.replace_channels)
        except ValueError as exc:
            raise StartupError(f"bad channel type mapping: {exc}") from exc
        try:
            routers = router_types(config.routers, config.replace_routers)
        except ValueError as exc:
            raise StartupError(f"bad router type mapping: {exc}") from exc
        self.redis = await self._connect_redis()
        self.bus = await self._start_bus()
        self.poster = CallbackPoster(self.reactor)
        prefix = (config.redis or {}).get("key_prefix")
        self.backends = Backends(
            config=config,
            clock=self.reactor,
            bus=self.bus,
            redis=self.redis,
            keys=redis_store.Keys(prefix),
            poster=self.poster,
            channel_types=types,
        )
        self._announce_mode()
        await self._start_plugins()
        claims = ClaimStore(self.redis, self.backends.keys, process_identity(config.port))
        self.manager = ChannelManager(
            self.backends, hooks=[PluginHooks(self.plugins)], claims=claims
        )
        self.routers = RouterManager(self.backends, self.manager, routers)
        await self.manager.restore()
        await self.routers.restore()
        self.manager.keep_claims()
        # Routers created, changed or deleted through another jb's API follow here.
        self.routers.keep_in_step()
        # Callbacks waiting for a retry in Redis (from before a restart, too) go out.
        await self.backends.callbacks.start()
        self.monitor = BackendMonitor(
            bus=self.bus,
            redis=self.redis,
            statuses=self.backends.statuses,
            poster=self.poster,
            clock=self.reactor,
            channels=lambda: self.manager.running.values(),
            callbacks=self.backends.callbacks,
        )
        self.monitor.start()
        api = JunebugApi(self.manager, self.backends, routers=self.routers)
        site = api_site(api)
        description = f"tcp:port={config.port}:interface={_quote_interface(config.interface)}"
        try:
            self.port = await serverFromString(self.reactor, description).listen(site)
        except Exception as exc:
            raise StartupError(
                f"cannot listen for the API on {config.interface}:{config.port}: {exc}"
            ) from exc
        address = self.port.getHost()
        log.info(
            "Junebug API listening on http://{host}:{port}/", host=address.host, port=address.port
        )

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        if self.monitor is not None:
            self.monitor.stop()
        if self.routers is not None:
            await self.routers.stop_all()
        if self.manager is not None:
            await self.manager.stop_all()
        if self.backends is not None:
            await self.backends.callbacks.stop()
        await self._stop_plugins()
        if self.bus is not None:
            await self.bus.stop()
        if self.poster is not None:
            await self.poster.close()
        if self.redis is not None:
            await self.redis.disconnect()
            self.redis = None
        if self.embedded_redis is not None:
            self.embedded_redis.stop()
            self.embedded_redis = None

    async def _start_plugins(self) -> None:
        try:
            loaded = plugins.load(self.config.plugins)
        except plugins.PluginError as exc:
            raise StartupError(str(exc)) from exc
        for plugin, plugin_config in loaded:
            name = plugin_config.get("type")
            try:
                await plugins.call(plugin.start_plugin, plugin_config, self.config)
            except Exception as exc:
                raise StartupError(f"plugin {name} failed to start: {exc}") from exc
            self.plugins.append(plugin)
            log.info("Plugin {name} started", name=name)

    async def _stop_plugins(self) -> None:
        while self.plugins:
            plugin = self.plugins.pop()
            try:
                await plugins.call(plugin.stop_plugin)
            except Exception:  # noqa: BLE001 - keep stopping the others
                log.failure("Plugin {name} failed to stop", name=type(plugin).__name__)

    async def _connect_redis(self) -> Any:
        config = self.config
        if config.embedded_redis:
            from junebug.store.embedded import EmbeddedRedis

            self.embedded_redis = EmbeddedRedis(config.data_dir)
            try:
                socket_path = self.embedded_redis.start()
            except Exception as exc:
                raise StartupError(f"cannot start the embedded Redis: {exc}") from exc
            return await redis_store.connect(unix_path=socket_path)
        settings = config.redis
        try:
            return await redis_store.connect(
                settings.get("host", "localhost"),
                int(settings.get("port", 6379)),
                int(settings.get("db", 0)),
                settings.get("password"),
            )
        except Exception as exc:
            raise StartupError(
                f"cannot connect to Redis at {settings.get('host')}:{settings.get('port')}: {exc}"
            ) from exc

    async def _start_bus(self) -> Any:
        config = self.config
        if config.embedded_amqp:
            bus = LocalBus(self.reactor)
        else:
            from junebug.bus.amqp import AmqpBus

            amqp = config.amqp
            bus = AmqpBus(
                hostname=amqp.get("hostname", "127.0.0.1"),
                port=int(amqp.get("port", 5672)),
                vhost=amqp.get("vhost", "/"),
                username=amqp.get("username", "guest"),
                password=amqp.get("password", "guest"),
                reactor=self.reactor,
                # Back within 10 s of the broker's return (docs/deploying.md).
                reconnect_max=10.0,
            )
        try:
            await bus.start()
        except Exception as exc:
            raise StartupError(f"cannot start the message bus: {exc}") from exc
        return bus

    def _announce_mode(self) -> None:
        config = self.config
        if config.embedded_redis and config.embedded_amqp:
            log.info(
                "Running embedded: Redis data in {path}, in-process message bus (messages "
                "still queued at exit are not kept). For production, point jb at your servers "
                "with --redis-host and --amqp-host (see docs/cli-and-config.md).",
                path=self.embedded_redis.data_dir,
            )
        elif config.embedded_redis:
            log.info(
                "Embedded Redis with data in {path}; RabbitMQ at {host}:{port}. Use --redis-host "
                "to use your own Redis.",
                path=self.embedded_redis.data_dir,
                host=config.amqp.get("hostname"),
                port=config.amqp.get("port"),
            )
        elif config.embedded_amqp:
            log.info(
                "Redis at {host}:{port}; in-process message bus (messages still queued at exit "
                "are not kept). Use --amqp-host to use RabbitMQ.",
                host=config.redis.get("host"),
                port=config.redis.get("port"),
            )
        else:
            log.info(
                "Redis at {rhost}:{rport}; RabbitMQ at {ahost}:{aport}",
                rhost=config.redis.get("host"),
                rport=config.redis.get("port"),
                ahost=config.amqp.get("hostname"),
                aport=config.amqp.get("port"),
            )


def run(config: Any, reactor: Any = None) -> int:
    """Run Junebug until it is stopped; returns the process exit code."""
    if reactor is None:
        from twisted.internet import reactor
    service = JunebugService(config, reactor)
    outcome = {"code": 0}

    def failed(failure: Any) -> None:
        if failure.check(StartupError):
            log.critical("jb: cannot start: {reason}", reason=failure.value)
        else:
            log.failure("jb: cannot start", failure)
        # Also on stderr: the process log may be switched off (JUNEBUG_DISABLE_LOGGING).
        print(f"jb: cannot start: {failure.value}", file=sys.stderr)
        outcome["code"] = 1
        reactor.stop()

    def start() -> None:
        service.startService().addErrback(failed)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return outcome["code"]
