"""The shared transport test harness: runs one channel type on a real bus.

A channel type's tests provide a *driver* that plays the far end of its wire
(a telnet user, an SMSC, a USSD aggregator...) and get the contract suite in
``tests/transports/contract.py`` for free.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, succeed

from junebug import messages
from junebug.bus.base import event_key, inbound_key, outbound_key, status_key
from junebug.bus.local import LocalBus
from junebug.logs import ChannelLog
from junebug.workers.transport import TransportWorker
from tests.helpers import within


class TransportDriver:
    """How the tests play the far end of a channel type. Subclass per channel type."""

    transport_class: type
    #: Whether users open and close sessions (inbound "new" / "close").
    sessions = False
    #: An address the channel cannot deliver to (a nack is expected), or None.
    unknown_address: str | None = None
    #: (label, config, text expected in a problem message) the channel must refuse.
    invalid_configs: list[tuple[str, dict, str]] = []
    #: Whether the channel tells the application when the user ends a session
    #: (an inbound "close"). Request/response channels such as USSD over HTTP
    #: cannot see a user hang up.
    reports_session_end = True
    #: Whether a message that is not a reply reaches the user. Request/response
    #: channels can only answer a pending request, so they nack it instead.
    pushes_messages = True

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def harness_options(self) -> dict[str, Any]:
        """Extra TransportHarness keyword arguments (redis, redis_prefix, clock)."""
        return {}

    async def start_peer(self) -> None:
        """Start whatever the channel connects to (an SMSC simulator...)."""

    async def stop_peer(self) -> None: ...

    async def connect_user(self, harness: TransportHarness) -> Any:
        """A new user of the channel; returns a handle the other methods take."""
        raise NotImplementedError

    def address(self, user: Any) -> str:
        """The user's address as it appears in inbound ``from_addr``."""
        raise NotImplementedError

    async def user_sends(self, user: Any, text: str) -> None:
        raise NotImplementedError

    async def user_receives(self, user: Any) -> str:
        raise NotImplementedError

    async def user_leaves(self, user: Any) -> None: ...

    async def user_left(self, user: Any) -> None:
        """Wait until the channel ended the user's session (sessions only)."""


class TransportHarness:
    """A channel type running under a TransportWorker on a LocalBus.

    ``clock`` (default: the reactor) is the transport's clock, so a test can pass a
    ``task.Clock`` to drive timeouts; the transport still listens and connects on the
    real reactor. ``redis`` and ``redis_prefix`` are handed to stateful transports.
    """

    def __init__(
        self,
        transport_class: type,
        config: dict[str, Any],
        log_dir: str,
        *,
        clock: Any = None,
        redis: Any = None,
        redis_prefix: str = "",
    ) -> None:
        self.channel_id = str(uuid.uuid4())
        self.clock = clock if clock is not None else reactor
        self.redis = redis
        self.redis_prefix = redis_prefix
        #: Every inbound message so far, in order (``inbound`` is consumed by tests).
        self.seen_inbound: list[dict] = []
        self._inbound_waiters: list[tuple[Any, Deferred]] = []
        self.bus = LocalBus(reactor)
        self.log = ChannelLog(self.channel_id, log_dir)
        self.transport_class = transport_class
        self.config = config
        self.inbound: DeferredQueue = DeferredQueue()
        self.events: DeferredQueue = DeferredQueue()
        self.statuses: DeferredQueue = DeferredQueue()
        self.worker: TransportWorker | None = None

    async def start(self) -> TransportHarness:
        await self.bus.consume(inbound_key(self.channel_id), self._inbound_arrived)
        for key, queue in (
            (event_key(self.channel_id), self.events),
            (status_key(self.channel_id), self.statuses),
        ):
            await self.bus.consume(key, queue.put)
        self.worker = TransportWorker(
            self.channel_id,
            self.transport_class,
            self.config,
            bus=self.bus,
            clock=self.clock,
            log=self.log,
            redis=self.redis,
            redis_prefix=self.redis_prefix,
            reactor=reactor,
        )
        await self.worker.start()
        return self

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        await self.bus.stop()
        self.log.close()

    def _inbound_arrived(self, message: dict[str, Any]) -> None:
        self.seen_inbound.append(message)
        for waiter in list(self._inbound_waiters):
            predicate, found = waiter
            if predicate(message):
                self._inbound_waiters.remove(waiter)
                found.callback(message)
        self.inbound.put(message)

    def inbound_seen(self, predicate: Any) -> Deferred:
        """Fires with the first inbound message (already seen or still to come) for
        which ``predicate`` is true, without taking it from ``inbound``."""
        for message in self.seen_inbound:
            if predicate(message):
                return succeed(message)
        found: Deferred = Deferred()
        self._inbound_waiters.append((predicate, found))
        return within(found)

    async def send(self, to_addr: str | None, content: str | None, **fields: Any) -> dict:
        message = messages.user_message(
            to_addr=to_addr,
            from_addr=None,
            transport_name=self.channel_id,
            content=content,
            **fields,
        )
        await self.bus.publish(outbound_key(self.channel_id), message)
        return message

    async def send_queued(
        self, to_addr: str, content: str, *, priority: int = 1, **fields: Any
    ) -> dict:
        """Send as the API does: numbered for the channel's queue, at ``priority``."""
        from junebug.workers.outbound import enqueue

        message = messages.user_message(
            to_addr=to_addr,
            from_addr=None,
            transport_name=self.channel_id,
            content=content,
            **fields,
        )
        await enqueue(self.bus, None, reactor, self.channel_id, message, priority=priority)
        return message

    async def send_message(self, message: dict[str, Any]) -> dict:
        await self.bus.publish(outbound_key(self.channel_id), message)
        return message

    def next_inbound(self) -> Any:
        return within(self.inbound.get())

    def next_event(self) -> Any:
        return within(self.events.get())

    def next_status(self) -> Any:
        return within(self.statuses.get())

    async def next_inbound_with(self, session_event: str | None) -> dict:
        """Skip inbound messages until one with this session_event."""
        while True:
            message = await self.next_inbound()
            if message["session_event"] == session_event:
                return message
