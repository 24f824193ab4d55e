"""The router contract, and the plumbing every router type shares.

A router takes over the inbound messages and events of its channel(s) (channels
without an ``mo_url`` or ``amqp_queue`` of their own) and hands each inbound message
to some of its destinations. A destination delivers like a channel does (``mo_url``,
``amqp_queue``) and sends through the router's channel::

    <channel>.inbound ──► route_inbound() ──► <destination>.inbound ──► destination's forwarder
    <channel>.event   ──► the destination that sent the message ──► <destination>.event
    destination sends (HTTP, or <amqp_queue>.outbound ──► <destination>.outbound)
                      ──► stored under the channel and the destination ──► <channel>.outbound

A new router type is one subclass of :class:`Router`: its ``CONFIG_SCHEMA`` and
``DESTINATION_CONFIG_SCHEMA``, ``channels_of`` (which channels it routes) and
``route_inbound`` (which destinations get a message). Everything else is here.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, ClassVar

import attrs
from jsonschema import Draft202012Validator
from twisted.internet.defer import Deferred, DeferredList

from junebug import messages
from junebug.api.errors import JunebugError
from junebug.bus.base import event_key, inbound_key, outbound_key
from junebug.store.queues import QueueStore
from junebug.store.rates import RATE_FIELDS
from junebug.workers.forwarder import Destination, MessageForwarder
from junebug.workers.outbound import enqueue, priority_value

# -- errors a user can cause -------------------------------------------------------------


class InvalidRouterType(JunebugError):
    status = 400
    description = "invalid router type"


class InvalidRouterConfig(JunebugError):
    status = 400
    description = "invalid router config"


class InvalidRouterDestinationConfig(JunebugError):
    status = 400
    description = "invalid router destination config"


class RouterNotFound(JunebugError):
    status = 404
    description = "router not found"


class DestinationNotFound(JunebugError):
    status = 404
    description = "destination not found"


class RouterStartError(JunebugError):
    status = 400
    description = "router could not start"


# -- destinations ------------------------------------------------------------------------


@attrs.define
class RouterDestination:
    """One destination of a router: its id and its stored properties."""

    id: str
    properties: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.properties.get("config") or {}

    @property
    def delivery(self) -> Destination:
        token = self.properties.get("mo_url_auth_token") or self.properties.get("mo_url_token")
        return Destination(
            mo_url=self.properties.get("mo_url"),
            mo_url_auth_token=token,
            amqp_queue=self.properties.get("amqp_queue"),
        )

    @property
    def character_limit(self) -> int | None:
        return self.properties.get("character_limit")


class _DestinationForwarder(MessageForwarder):
    """A destination's forwarder: its AMQP application's sends go to the router
    (``<destination>.outbound``), which records them before they reach the channel."""

    async def handle_app_outbound(self, message: dict[str, Any]) -> None:
        await self.bus.publish(outbound_key(self.owner), message)


def _problems(schema: dict[str, Any], config: Any, extra: Any, kind: str) -> list[dict[str, Any]]:
    problems = [
        {
            "type": kind,
            "message": "config"
            + "".join(f".{part}" for part in error.absolute_path)
            + f": {error.message}",
            "schema_path": [str(part) for part in error.absolute_schema_path],
        }
        for error in Draft202012Validator(schema).iter_errors(config)
    ]
    if not problems:
        problems = [{"type": kind, "message": f"config: {message}"} for message in extra(config)]
    return sorted(problems, key=lambda problem: problem["message"])


# -- the base class ----------------------------------------------------------------------


class Router:
    """Base class for router types.

    Subclasses set ``CONFIG_SCHEMA`` and ``DESTINATION_CONFIG_SCHEMA`` and implement
    ``channels_of`` and ``route_inbound``; the ``validate_*`` hooks add checks a JSON
    schema cannot express. The router's own ``config`` and each destination's ``config``
    reach the instance already validated.
    """

    #: JSON schema of the router's ``config`` object.
    CONFIG_SCHEMA: ClassVar[dict[str, Any]] = {"type": "object"}
    #: JSON schema of each destination's ``config`` object.
    DESTINATION_CONFIG_SCHEMA: ClassVar[dict[str, Any]] = {"type": "object"}

    # -- what subclasses implement --------------------------------------------------

    @classmethod
    def channels_of(cls, config: dict[str, Any]) -> list[str]:
        """The ids of the channels a router with this (valid) config routes."""
        raise NotImplementedError

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        """Checks of the router config beyond ``CONFIG_SCHEMA``; human-readable problems."""
        return []

    @classmethod
    def validate_destination_config(cls, config: dict[str, Any]) -> list[str]:
        """Checks of one destination config beyond ``DESTINATION_CONFIG_SCHEMA``."""
        return []

    @classmethod
    def validate_destinations(cls, configs: list[dict[str, Any]]) -> list[str]:
        """Checks across all of a router's (individually valid) destination configs."""
        return []

    def route_inbound(self, message: dict[str, Any]) -> Any:
        """The ids of the destinations that get this inbound vumi message (may be
        empty, or a Deferred / coroutine of them)."""
        raise NotImplementedError

    def channel_for_outbound(self, destination: RouterDestination, message: dict[str, Any]) -> str:
        """The channel a destination's outbound message leaves through: for a reply,
        the channel the inbound came in on; otherwise the router's first channel."""
        channel_id = message.get("transport_name")
        return channel_id if channel_id in self.channel_ids else self.channel_ids[0]

    # -- validation (used by the manager) -------------------------------------------

    @classmethod
    def check_config(cls, config: Any) -> list[dict[str, Any]]:
        """Every problem with a router config, each naming its field."""
        return _problems(cls.CONFIG_SCHEMA, config, cls.validate_config, "invalid_config")

    @classmethod
    def check_destination_config(cls, config: Any) -> list[dict[str, Any]]:
        """Every problem with a destination config, each naming its field."""
        return _problems(
            cls.DESTINATION_CONFIG_SCHEMA,
            config,
            cls.validate_destination_config,
            "invalid_destination_config",
        )

    # -- running --------------------------------------------------------------------

    def __init__(
        self,
        router_id: str,
        config: dict[str, Any],
        destinations: list[RouterDestination],
        *,
        backends: Any,
        log: Any,
    ) -> None:
        self.id = router_id
        self.config = config
        self.destinations = {destination.id: destination for destination in destinations}
        self.backends = backends
        self.log = log
        self.channel_ids = list(self.channels_of(config))
        self._consumers: list[Any] = []
        self._forwarders: list[MessageForwarder] = []
        self._destination_logs: dict[str, Any] = {}

    def destination_log(self, destination_id: str) -> Any:
        if destination_id not in self._destination_logs:
            self._destination_logs[destination_id] = self.backends.open_log(destination_id)
        return self._destination_logs[destination_id]

    async def start(self) -> None:
        """Start every destination's forwarder, then consume the channels' traffic."""
        b = self.backends
        try:
            for destination in self.destinations.values():
                if destination.delivery.configured:
                    forwarder = _DestinationForwarder(
                        destination.id,
                        destination=destination.delivery,
                        channel_id=self.channel_ids[0],
                        bus=b.bus,
                        store=b.messages,
                        rates=b.rates,
                        poster=b.poster,
                        log=self.destination_log(destination.id),
                        callbacks=b.callbacks,
                    )
                    await forwarder.start()
                    self._forwarders.append(forwarder)
                self._consumers.append(
                    await b.bus.consume(
                        outbound_key(destination.id), self._outbound_handler(destination.id)
                    )
                )
            for channel_id in self.channel_ids:
                self._consumers.append(
                    await b.bus.consume(inbound_key(channel_id), self.handle_channel_inbound)
                )
                self._consumers.append(
                    await b.bus.consume(event_key(channel_id), self.handle_channel_event)
                )
        except Exception:
            await self.stop()
            raise

    async def stop(self) -> None:
        while self._consumers:
            await self._consumers.pop().stop()
        while self._forwarders:
            await self._forwarders.pop().stop()
        for log in self._destination_logs.values():
            log.close()
        self._destination_logs = {}

    # -- traffic --------------------------------------------------------------------

    async def handle_channel_inbound(self, message: dict[str, Any]) -> None:
        targets = self.route_inbound(message)
        if inspect.isawaitable(targets):
            targets = await targets
        message_id = message.get("message_id")
        if not targets:
            self.log.info(
                f"No destination for the message to {message.get('to_addr')!r}: dropped",
                message_id=message_id,
            )
            return
        for destination_id in targets:
            destination = self.destinations.get(destination_id)
            if destination is None:
                self.log.warning(
                    f"Unknown destination {destination_id!r}: message dropped",
                    message_id=message_id,
                )
            elif not destination.delivery.configured:
                self.log.info(
                    f"Destination {destination_id} has no mo_url or amqp_queue: message ignored",
                    message_id=message_id,
                )
            else:
                self.log.info(
                    f"Message to {message.get('to_addr')!r} routed to {destination_id}",
                    message_id=message_id,
                )
                await self.backends.bus.publish(inbound_key(destination_id), message)

    async def handle_channel_event(self, event: dict[str, Any]) -> None:
        """Pass an event to the destination that sent its message, and no other."""
        message_id = event.get("user_message_id")
        channel_id = event.get("transport_name")
        if channel_id not in self.channel_ids:
            channel_id = self.channel_ids[0]
        record = None
        if message_id is not None:
            record = await self.backends.messages.load_outbound(channel_id, message_id)
        destination_id = (record or {}).get("destination_id")
        if destination_id not in self.destinations:
            self.log.warning(
                f"{event.get('event_type')} event for a message no destination of this "
                "router sent (or sent too long ago): dropped",
                message_id=message_id,
            )
            return
        await self.backends.bus.publish(event_key(destination_id), event)

    def _outbound_handler(self, destination_id: str) -> Any:
        async def handle(message: dict[str, Any]) -> None:
            await self.handle_destination_outbound(destination_id, message)

        return handle

    async def handle_destination_outbound(
        self, destination_id: str, message: dict[str, Any]
    ) -> None:
        """An outbound message from a destination's AMQP application."""
        destination = self.destinations[destination_id]
        channel_id = self.channel_for_outbound(destination, message)
        message = {**message, "transport_name": channel_id}
        await self.dispatch(destination, channel_id, message, messages.api_from_message(message))

    async def dispatch(
        self,
        destination: RouterDestination,
        channel_id: str,
        message: dict[str, Any],
        record: dict[str, Any],
    ) -> None:
        """Record a destination's outbound message under the destination (with its
        event_url) and under the channel (naming the destination, so its events find
        their way back), queue it for the channel (``workers.outbound.enqueue``, at
        the ``priority`` and ``validity`` of an API send's body) and count it."""
        b = self.backends
        on_channel = {
            key: value
            for key, value in record.items()
            if key not in ("event_url", "event_auth_token")
        }
        on_channel.update(router_id=self.id, destination_id=destination.id)
        queues = QueueStore(b.redis, b.keys)
        priority = priority_value(record.get("priority"))
        counts = [
            b.rates.bucket(destination.id, "outbound"),
            b.rates.bucket(channel_id, "outbound"),
        ]
        # Both records, the queue's number and both rates in one round trip's wait, all
        # before the publish (so no event can arrive before its records).
        stored = await DeferredList(
            [
                Deferred.fromCoroutine(
                    b.messages.store_outbound(destination.id, record, count=counts[0])
                ),
                Deferred.fromCoroutine(
                    b.messages.store_outbound(
                        channel_id,
                        on_channel,
                        count=counts[1],
                        accept=queues.slot(channel_id, priority),
                    )
                ),
            ],
            consumeErrors=True,
        )
        failures = [result for ok, result in stored if not ok]
        if failures:
            # Take back what the write that did succeed counted (the message is not sent).
            if stored[0][0]:
                await b.rates.take_back_quietly(counts[0])
            if stored[1][0]:
                with contextlib.suppress(Exception):
                    await queues.taken(channel_id, priority)
                await b.rates.take_back_quietly(counts[1])
            failures[0].raiseException()
        seq = stored[1][1]
        self.destination_log(destination.id).info(
            f"Sending to {message.get('to_addr')} through channel {channel_id}",
            message_id=message.get("message_id"),
        )
        try:
            await enqueue(
                b.bus,
                queues,
                b.clock,
                channel_id,
                message,
                priority=priority,
                validity=record.get("validity"),
                seq=seq,
            )
        except Exception:
            # enqueue took the queue's count back; a message not sent is not counted.
            await b.rates.take_back_quietly(*counts)
            raise


async def summed_rates(rates: Any, owners: list[str]) -> dict[str, float]:
    """The seven rates of a router: the sum of its destinations' rates."""
    total = dict.fromkeys(RATE_FIELDS.values(), 0.0)
    for owner in owners:
        for field, value in (await rates.rates(owner)).items():
            total[field] += value
    return total
