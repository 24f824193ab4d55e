"""A channel: its properties and the lifecycle of its three workers.

transport worker (the wire) -> bus -> forwarder (the application) and status worker.
The forwarder runs only when the channel has somewhere to deliver (mo_url or
amqp_queue); a channel without one is still useful as a router's source.
"""

from __future__ import annotations

from typing import Any

from junebug import messages
from junebug.store.queues import QueueStore
from junebug.store.status import worst_level
from junebug.workers.callbacks import CallbackSettings, settings_from
from junebug.workers.forwarder import Destination, MessageForwarder
from junebug.workers.outbound import queue_status
from junebug.workers.status import StatusWorker
from junebug.workers.transport import TransportWorker

#: Properties whose change means the transport must restart.
TRANSPORT_FIELDS = ("type", "config")
#: Properties whose change means the forwarder must restart.
DESTINATION_FIELDS = ("mo_url", "amqp_queue")
#: Properties applied to the running transport's scheduler, without a restart.
RATE_LIMIT_FIELDS = ("rate_limit_count", "rate_limit_window")
#: Properties the API accepts but never shows.
WRITE_ONLY_FIELDS = ("callback_secret",)
#: Properties the destination and the callback settings are made of.
DELIVERY_FIELDS = (
    "mo_url",
    "mo_url_auth_token",
    "amqp_queue",
    "callback_max_attempts",
    "callback_max_age",
    "callback_secret",
)


class Channel:
    def __init__(self, channel_id: str, properties: dict[str, Any], backends: Any) -> None:
        self.id = channel_id
        self.properties = properties
        self.backends = backends
        self._log: Any = None
        self.transport_worker: TransportWorker | None = None
        self.forwarder: MessageForwarder | None = None
        self.status_worker: StatusWorker | None = None
        #: (the DELIVERY_FIELDS' values, the Destination made of them)
        self._delivery: tuple[tuple[Any, ...], Destination] | None = None

    # -- properties -------------------------------------------------------------------

    @property
    def log(self) -> Any:
        """The channel's log, opened on first use (a stopped channel shown by the API
        never opens one)."""
        if self._log is None:
            self._log = self.backends.open_log(self.id)
            self._log.wire_logging = bool(self.properties.get("wire_logging"))
        return self._log

    @property
    def destination(self) -> Destination:
        """Where the channel delivers, with its callback settings.

        Read for every API send and every message the forwarder delivers, so it is made
        once and kept while the properties it is made of keep their values (compared on
        every read: an update, or a change made in place, is seen at once)."""
        get = self.properties.get
        values = (  # DELIVERY_FIELDS
            get("mo_url"),
            get("mo_url_auth_token"),
            get("amqp_queue"),
            get("callback_max_attempts"),
            get("callback_max_age"),
            get("callback_secret"),
        )
        delivery = self._delivery
        if delivery is None or delivery[0] != values:
            destination = Destination(
                mo_url=get("mo_url"),
                mo_url_auth_token=get("mo_url_auth_token"),
                amqp_queue=get("amqp_queue"),
                callback=settings_from(self.id, self.properties),
            )
            delivery = self._delivery = (values, destination)
        return delivery[1]

    @property
    def callback_settings(self) -> CallbackSettings:
        """Retry limits and signing secret of the channel's callbacks."""
        return self.destination.callback

    @property
    def has_destination(self) -> bool:
        return self.destination.configured

    @property
    def character_limit(self) -> int | None:
        return self.properties.get("character_limit")

    @property
    def transport_class(self) -> type:
        return self.backends.channel_types[self.properties["type"]]

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; if one fails, stop those already started and re-raise."""
        try:
            await self._start_status_worker()
            await self._start_forwarder()
            await self._start_transport()
        except Exception:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self._stop_transport()
        await self._stop_forwarder()
        if self.status_worker is not None:
            await self.status_worker.stop()
            self.status_worker = None

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def update(self, properties: dict[str, Any]) -> None:
        """Apply new (already validated) properties, restarting only what they affect."""
        old = self.properties
        self.properties = properties
        self.log.wire_logging = bool(properties.get("wire_logging"))  # no restart needed
        if any(old.get(f) != properties.get(f) for f in TRANSPORT_FIELDS):
            await self._stop_transport()
            await self._start_transport()
        elif self.transport_worker is not None and any(
            old.get(f) != properties.get(f) for f in RATE_LIMIT_FIELDS
        ):
            self.transport_worker.set_rate_limit(
                properties.get("rate_limit_count"), properties.get("rate_limit_window")
            )
        if any(old.get(f) != properties.get(f) for f in DESTINATION_FIELDS):
            await self._stop_forwarder()
            await self._start_forwarder()

    async def _start_status_worker(self) -> None:
        b = self.backends
        self.status_worker = StatusWorker(
            self.id,
            status_url=lambda: self.properties.get("status_url"),
            bus=b.bus,
            store=b.statuses,
            poster=b.poster,
            log=self.log,
            callbacks=b.callbacks,
            settings=lambda: self.callback_settings,
        )
        await self.status_worker.start()

    async def _start_forwarder(self) -> None:
        if not self.has_destination:
            return
        b = self.backends
        self.forwarder = MessageForwarder(
            self.id,
            destination=lambda: self.destination,
            bus=b.bus,
            store=b.messages,
            rates=b.rates,
            poster=b.poster,
            log=self.log,
            callbacks=b.callbacks,
            queues=QueueStore(b.redis, b.keys),
            clock=b.clock,
        )
        await self.forwarder.start()

    async def _stop_forwarder(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.stop()
            self.forwarder = None

    async def _start_transport(self) -> None:
        b = self.backends
        self.transport_worker = TransportWorker(
            self.id,
            self.transport_class,
            self.properties.get("config") or {},
            bus=b.bus,
            clock=b.clock,
            log=self.log,
            redis=b.redis,
            redis_prefix=b.keys.prefix,
            rate_limit_count=self.properties.get("rate_limit_count"),
            rate_limit_window=self.properties.get("rate_limit_window"),
            queues=QueueStore(b.redis, b.keys),
        )
        try:
            await self.transport_worker.start()
        except Exception:
            self.transport_worker = None
            raise

    async def _stop_transport(self) -> None:
        if self.transport_worker is not None:
            await self.transport_worker.stop()
            self.transport_worker = None

    # -- what the API shows -----------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        b = self.backends
        components = await b.statuses.get_all(self.id)
        result: dict[str, Any] = {
            "status": worst_level([c["status"] for c in components.values()]),
            "components": {
                name: messages.api_from_status(self.id, payload)
                for name, payload in components.items()
            },
        }
        result.update(await b.rates.rates(self.id))
        result["queue"] = await self.queue_status()
        return result

    async def queue_status(self) -> dict[str, Any]:
        """The outbound queue's length (docs/queues.md)."""
        worker = self.transport_worker
        return await queue_status(
            self.backends.bus,
            self.id,
            scheduler=worker.scheduler if worker is not None else None,
            queues=QueueStore(self.backends.redis, self.backends.keys),
        )

    async def view(self) -> dict[str, Any]:
        """The channel as the API returns it: its properties (but not the write-only
        ones, e.g. ``callback_secret``), id and status."""
        shown = {k: v for k, v in self.properties.items() if k not in WRITE_ONLY_FIELDS}
        return {**shown, "id": self.id, "status": await self.status()}
