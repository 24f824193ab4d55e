"""Backends going down and coming back, told to every running channel as a status.

When the RabbitMQ connection drops (``AmqpBus.add_state_listener``) or Redis stops
answering (``RedisWatcher``), every running channel gets a status event for the
component ``amqp`` or ``redis``: ``down`` with the reason, then ``ok`` once the
backend is back. Such a status can't travel over the bus like a transport's (the bus
may be the thing that is down), so ``BackendStatus`` does the status worker's job
itself: it POSTs the status to the channel's ``status_url`` at once (through the
guaranteed path of ``workers.callbacks`` when it has one) and stores it
with the status store. While Redis is unreachable the latest status per channel and
component waits in memory and is written as soon as a write succeeds again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from junebug import messages
from junebug.workers.callbacks import settings_from
from junebug.workers.status import post_status

log = Logger()

AMQP = "amqp"
REDIS = "redis"

#: Seconds between two attempts to write statuses that failed to be stored.
STORE_RETRY = 2.0


class BackendStatus:
    """Turns backend up/down transitions into channel status events.

    ``channels`` returns the running channels (objects with ``id``, ``properties``
    and ``log``); ``store`` is a ``StatusStore``; ``poster`` a ``CallbackPoster``;
    ``callbacks`` (optional) the ``CallbackQueue`` that retries failed POSTs.
    """

    def __init__(
        self,
        channels: Callable[[], Iterable[Any]],
        *,
        store: Any,
        poster: Any,
        clock: Any,
        store_retry: float = STORE_RETRY,
        callbacks: Any = None,
    ) -> None:
        self.channels = channels
        self.store = store
        self.poster = poster
        self.callbacks = callbacks
        self.clock = clock
        self.store_retry = store_retry
        #: Whether each backend is up, as last announced.
        self.up: dict[str, bool] = {}
        #: Statuses not yet stored: (channel id, component) -> status payload.
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}
        self._writing = False
        self._retry: Any = None
        self._posting: dict[str, DeferredLock] = {}
        self._stopped = False

    def changed(self, component: str, up: bool, reason: str) -> None:
        """Announce ``component`` as up or down; repeats of the same state are ignored."""
        if self._stopped or self.up.get(component, True) == up:
            self.up[component] = up
            return
        self.up[component] = up
        level, kind = ("ok", "connected") if up else ("down", "connection_lost")
        for channel in list(self.channels()):
            status = messages.status(component, level, kind, reason, clock=self.clock)
            (channel.log.info if up else channel.log.warning)(
                f"Status {component}: {level} ({kind}): {reason}"
            )
            self.pending[(channel.id, component)] = status
            self._post(channel, status)
        self.flush()

    # -- amqp -------------------------------------------------------------------------

    def amqp_changed(self, connected: bool, reason: str) -> None:
        """An ``AmqpBus`` state listener."""
        text = (
            f"RabbitMQ connection restored ({reason})"
            if connected
            else f"RabbitMQ connection lost: {reason}"
        )
        self.changed(AMQP, connected, text)

    # -- storing and posting ----------------------------------------------------------

    def flush(self) -> None:
        """Store every pending status; on failure keep them and try again later."""
        if self._writing or self._stopped or not self.pending:
            return
        self._writing = True
        Deferred.fromCoroutine(self._write_pending()).addBoth(self._written)

    async def _write_pending(self) -> None:
        while self.pending:
            key, status = next(iter(self.pending.items()))
            await self.store.set(key[0], status)
            # A newer status may have replaced this one while it was being written.
            if self.pending.get(key) is status:
                del self.pending[key]

    def _written(self, result: Any) -> None:
        self._writing = False
        if isinstance(result, Failure):
            log.info(
                "Cannot store backend statuses yet ({reason}); will retry",
                reason=result.getErrorMessage(),
            )
            if not self._stopped and (self._retry is None or not self._retry.active()):
                self._retry = self.clock.callLater(self.store_retry, self.flush)
        elif self.pending:
            self.flush()

    def _post(self, channel: Any, status: dict[str, Any]) -> None:
        url = channel.properties.get("status_url")
        if not url:
            return
        # One POST at a time per channel, so its receiver sees down before ok.
        lock = self._posting.setdefault(channel.id, DeferredLock())
        settings = settings_from(channel.id, channel.properties)

        def send() -> Deferred:
            return Deferred.fromCoroutine(
                post_status(
                    channel.id,
                    url,
                    status,
                    callbacks=self.callbacks,
                    poster=self.poster,
                    settings=settings,
                    log=channel.log,
                )
            )

        lock.run(send).addErrback(
            lambda f: channel.log.error(f"Status not posted: {f.getErrorMessage()}")
        )

    def stop(self) -> None:
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()


class RedisWatcher:
    """Pings Redis every ``interval`` seconds and reports each up/down transition
    through ``callback(up, reason)``. A ping that fails or takes longer than
    ``timeout`` seconds counts as down; txredisapi reconnects on its own, and the
    first ping that succeeds afterwards counts as up."""

    def __init__(
        self,
        redis: Any,
        callback: Callable[[bool, str], Any],
        *,
        clock: Any,
        interval: float = 1.0,
        timeout: float = 2.0,
        where: str = "Redis",
    ) -> None:
        self.redis = redis
        self.callback = callback
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self.where = where
        self.up = True
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: log.failure("Redis watcher stopped", f)
        )

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> Deferred:
        return Deferred.fromCoroutine(self._ping())

    async def _ping(self) -> None:
        try:
            await self.redis.ping().addTimeout(self.timeout, self.clock)
        except Exception as exc:  # noqa: BLE001 - any failure means Redis is not usable
            if self.up:
                self.up = False
                detail = str(exc) or type(exc).__name__
                if type(exc).__name__ in ("TimeoutError", "CancelledError"):
                    detail = f"no answer within {self.timeout:g}s"
                log.warn("{where} is unavailable: {detail}", where=self.where, detail=detail)
                self.callback(False, f"{self.where} is unavailable: {detail}")
            return
        if not self.up:
            self.up = True
            log.info("{where} is available again", where=self.where)
            self.callback(True, f"{self.where} is available again")


class BackendMonitor:
    """Wires ``BackendStatus`` to the bus and Redis of a running service."""

    def __init__(
        self,
        *,
        bus: Any,
        redis: Any,
        statuses: Any,
        poster: Any,
        clock: Any,
        channels: Any,
        callbacks: Any = None,
    ) -> None:
        self.bus = bus
        self.status = BackendStatus(
            channels, store=statuses, poster=poster, clock=clock, callbacks=callbacks
        )
        self.watcher = RedisWatcher(
            redis, lambda up, reason: self.status.changed(REDIS, up, reason), clock=clock
        )

    def start(self) -> None:
        if hasattr(self.bus, "add_state_listener"):
            self.bus.add_state_listener(self.status.amqp_changed)
        self.watcher.start()

    def stop(self) -> None:
        if hasattr(self.bus, "remove_state_listener"):
            self.bus.remove_state_listener(self.status.amqp_changed)
        self.watcher.stop()
        self.status.stop()
