"""The transport contract: what a channel type implements, and what it is given.

A transport owns the wire (a TCP listener, an SMPP bind, an HTTP endpoint...).
It never talks to applications: it turns wire traffic into vumi messages on the
bus and turns outbound vumi messages into wire traffic, publishing an event for
each (ack / nack / delivery_report) and status events for its connection.

Adding a channel type is one subclass of ``Transport`` with a ``CONFIG_SCHEMA``,
registered under a type name (``junebug.transports.registry``).

Outbound delivery is at-least-once end to end: the bus message of an outbound
message is acknowledged only when ``handle_outbound`` returns, so a transport
returns only once the wire has taken responsibility for the message (the SMSC
answered the submit_sm, the stanza was written to a connected stream...) and its
ack or nack was published. A transport that cannot send a message now raises
``RetryLater``: the message goes back to the bus and is delivered again after a
back-off, without any event. If the process dies, every message a transport was
still holding is delivered again when it restarts: far ends may see duplicates,
never a gap.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from jsonschema import Draft202012Validator
from twisted.internet.interfaces import IReactorCore, IReactorTime

from junebug import messages
from junebug.bus.base import MessageBus, event_key, inbound_key, status_key


class RetryLater(Exception):
    """The message was not sent and should be delivered again later.

    Raised by ``Transport.handle_outbound`` (or the failure of the call's
    Deferred): the worker publishes no event and fails the bus handler, so the
    message stays on the channel's outbound queue and the bus delivers it again
    after its back-off. Use it for "not now" (stopping, not connected), never for a
    message that can never be sent (that is a nack).
    """


class StatusEdges:
    """Decides which statuses are worth publishing (the original's edge detection).

    Per component, a status goes out when its level differs from the last one
    published, or when its type has not been seen since the level last changed, so a
    steady stream of "ok" answers does not flood the status_url.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, set[str]]] = {}

    def changed(self, component: str, level: str, type: str) -> bool:
        last = self._last.get(component)
        if last is None or last[0] != level:
            self._last[component] = (level, {type})
            return True
        if type in last[1]:
            return False
        last[1].add(type)
        return True


@attrs.define
class TransportContext:
    """Everything the gateway hands a transport; transports read no globals."""

    channel_id: str
    bus: MessageBus
    clock: IReactorTime
    log: Any  #: a ``junebug.logs.ChannelLog``
    reactor: IReactorCore | None = None
    #: A txredisapi connection for transports that keep state (SMPP ids, USSD sessions).
    redis: Any = None
    #: Prefix for every Redis key the transport writes: ``<prefix><channel_id>:...``.
    redis_prefix: str = ""
    #: Called by the transport when outbound sending should pause or resume.
    set_outbound_paused: Any = None


class Transport:
    """Base class for channel types.

    Subclasses set ``transport_type`` and ``CONFIG_SCHEMA`` and implement
    ``setup``, ``teardown`` and ``handle_outbound``. ``config`` is the channel's
    ``config`` object, already validated against ``CONFIG_SCHEMA``.
    """

    #: vumi transport_type of inbound messages (``sms``, ``ussd``, ``telnet``...).
    transport_type: ClassVar[str] = "unknown"
    #: JSON schema of the channel's ``config`` object.
    CONFIG_SCHEMA: ClassVar[dict[str, Any]] = {"type": "object"}
    #: Keys of ``config`` that are secrets and must never be logged or echoed in logs.
    SECRET_KEYS: ClassVar[frozenset[str]] = frozenset({"password", "secret", "token"})
    #: Transports that must connect before sending start with outbound paused
    #: and call ``resume_outbound`` once connected.
    START_PAUSED: ClassVar[bool] = False
    #: How many ``handle_outbound`` calls the transport can usefully have running at
    #: once, on top of the worker's buffer (``outbound_window`` reads it). 0 for
    #: transports whose ``handle_outbound`` returns as soon as the message is written.
    OUTBOUND_WINDOW: ClassVar[int] = 0

    def __init__(self, context: TransportContext, config: dict[str, Any]) -> None:
        self.context = context
        self.config = config
        self.channel_id = context.channel_id
        self.clock = context.clock
        self.log = context.log
        self.status_edges = StatusEdges()

    # -- what subclasses implement --------------------------------------------------

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        """Extra checks beyond ``CONFIG_SCHEMA``; return human-readable problems."""
        return []

    @classmethod
    def check_config(cls, config: Any) -> list[dict[str, Any]]:
        """Every problem with ``config``: schema errors first, then ``validate_config``.

        Each is ``{type: "invalid_config", message, [schema_path]}`` with the
        message naming the field, sorted by message.
        """
        problems = [
            {
                "type": "invalid_config",
                "message": "config"
                + "".join(f".{part}" for part in error.absolute_path)
                + f": {error.message}",
                "schema_path": [str(part) for part in error.absolute_schema_path],
            }
            for error in Draft202012Validator(cls.CONFIG_SCHEMA).iter_errors(config)
        ]
        if not problems:
            problems = [
                {"type": "invalid_config", "message": f"config: {message}"}
                for message in cls.validate_config(config)
            ]
        return sorted(problems, key=lambda problem: problem["message"])

    @classmethod
    def web_endpoint(cls, config: dict[str, Any]) -> tuple[str, int] | None:
        """(web_path, web_port) for HTTP-based channels that a proxy may expose."""
        path, port = config.get("web_path"), config.get("web_port")
        if path is None or port is None:
            return None
        return path, port

    async def setup(self) -> None:
        """Open the wire (listen, connect, bind). Called once when the channel starts."""

    async def teardown(self) -> None:
        """Close the wire and release ports. Must be safe after a failed ``setup``."""

    async def stopping(self) -> None:
        """The worker is about to stop: release every ``handle_outbound`` call being
        held (fail it with ``RetryLater``) and fail new ones the same way, so the
        bus consumer can stop promptly and the messages go back to the queue.

        Called before the consumer stops and before ``teardown``. Calls that are
        about to finish anyway (a submit on the wire) may be let finish first.
        """

    async def handle_outbound(self, message: dict[str, Any]) -> None:
        """Send one outbound vumi message and publish its ack or nack.

        Return (or fire) only once the wire took responsibility for the message and
        its event was published: the bus message is acknowledged then, and a
        message acknowledged is never sent again. Raise ``RetryLater`` when the
        message was not sent and should come back later (no event is published).
        Raising anything else means the message could not be handled at all: the
        worker logs it, publishes a nack with the error and acknowledges the bus
        message.
        """
        raise NotImplementedError

    def outbound_window(self) -> int:
        """How many outbound messages the transport wants in hand at once (being
        handled), beyond the worker's own buffer: the channel's bus prefetch is the
        buffer plus this. Defaults to ``OUTBOUND_WINDOW``; a transport whose
        ``handle_outbound`` waits for a far end's answer returns the number of
        answers it can wait for at once (SMPP: ``window_size``), otherwise it
        could only send one message per round trip."""
        return self.OUTBOUND_WINDOW

    # -- helpers for subclasses -----------------------------------------------------

    def make_inbound(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("transport_type", self.transport_type)
        return messages.user_message(transport_name=self.channel_id, clock=self.clock, **fields)

    async def publish_inbound(self, **fields: Any) -> dict[str, Any]:
        message = self.make_inbound(**fields)
        await self.context.bus.publish(inbound_key(self.channel_id), message)
        return message

    async def publish_event(self, event: dict[str, Any]) -> dict[str, Any]:
        await self.context.bus.publish(event_key(self.channel_id), event)
        return event

    async def publish_ack(self, message_id: str, sent_message_id: str) -> dict[str, Any]:
        return await self.publish_event(
            messages.ack(
                message_id, sent_message_id, transport_name=self.channel_id, clock=self.clock
            )
        )

    async def publish_nack(self, message_id: str, reason: str, **extra: Any) -> dict[str, Any]:
        """A nack; ``extra`` fields (e.g. ``sent_message_id``) are carried as vumi allows."""
        return await self.publish_event(
            messages.nack(
                message_id, reason, transport_name=self.channel_id, clock=self.clock, **extra
            )
        )

    async def publish_delivery_report(
        self, message_id: str, delivery_status: str, **extra: Any
    ) -> dict[str, Any]:
        return await self.publish_event(
            messages.delivery_report(
                message_id,
                delivery_status,
                transport_name=self.channel_id,
                clock=self.clock,
                **extra,
            )
        )

    async def publish_status(
        self,
        component: str,
        level: str,
        type: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        reasons: list[str] | None = None,
        only_changes: bool = False,
    ) -> dict[str, Any] | None:
        """Publish a status event for ``component``.

        With ``only_changes``, nothing is published (and None returned) unless
        ``StatusEdges`` says it is news: use it for statuses about every request.
        """
        if only_changes and not self.status_edges.changed(component, level, type):
            return None
        if not only_changes:
            self.status_edges.changed(component, level, type)
        payload = messages.status(
            component, level, type, message, details, reasons, clock=self.clock
        )
        await self.context.bus.publish(status_key(self.channel_id), payload)
        return payload

    def pause_outbound(self) -> None:
        if self.context.set_outbound_paused is not None:
            self.context.set_outbound_paused(True)

    def resume_outbound(self) -> None:
        if self.context.set_outbound_paused is not None:
            self.context.set_outbound_paused(False)
