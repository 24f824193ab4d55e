"""Delivers a channel's (or router destination's) inbound messages and events to
its application: stores them, POSTs them to mo_url / event_url (expanding their
template variables, through the guaranteed path of ``workers.callbacks``), and
republishes them on ``<amqp_queue>.inbound`` / ``.event`` for AMQP applications.
Outbound messages AMQP applications publish on ``<amqp_queue>.outbound`` are queued
for the channel through ``workers.outbound.enqueue``, like the API's sends.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs

from junebug import callback_templates, messages
from junebug.bus.base import MessageBus, event_key, inbound_key, outbound_key
from junebug.workers.callbacks import WHAT, CallbackSettings
from junebug.workers.outbound import enqueue

#: The variables given for a callback URL without any (``render`` returns such a URL
#: as it is): they are not worked out.
_NO_VALUES: dict[str, Any] = {}


@attrs.define
class Destination:
    """Where an owner's traffic goes: the delivery half of a channel or destination."""

    mo_url: str | None = None
    mo_url_auth_token: str | None = None
    amqp_queue: str | None = None
    #: Retry limits and signing of the callbacks (docs/callbacks.md).
    callback: CallbackSettings = attrs.field(factory=CallbackSettings)

    @property
    def configured(self) -> bool:
        return bool(self.mo_url or self.amqp_queue)


class MessageForwarder:
    """Consumes ``<owner>.inbound`` and ``<owner>.event``.

    ``owner`` is the channel id (or a router destination's id); ``destination`` is
    read on every message so that an update through the API applies at once.
    """

    def __init__(
        self,
        owner: str,
        *,
        destination: Any,
        bus: MessageBus,
        store: Any,
        rates: Any,
        poster: Any,
        log: Any,
        channel_id: str | None = None,
        callbacks: Any = None,
        queues: Any = None,
        clock: Any = None,
    ) -> None:
        """``callbacks`` is the ``CallbackQueue`` (without one, each callback is tried
        once); ``queues`` and ``clock`` number and stamp AMQP applications' sends
        (``workers.outbound.enqueue``)."""
        self.owner = owner
        self.channel_id = channel_id or owner
        self._destination = destination
        self.bus = bus
        self.store = store
        self.rates = rates
        self.poster = poster
        self.log = log
        self.callbacks = callbacks
        self.queues = queues
        self.clock = clock
        self.consumers: list[Any] = []

    @property
    def destination(self) -> Destination:
        value = self._destination
        return value() if callable(value) else value

    async def start(self) -> None:
        if self.callbacks is not None:
            await self.callbacks.attach(self.owner, self.log)
        self.consumers = [
            await self.bus.consume(inbound_key(self.owner), self.handle_inbound),
            await self.bus.consume(event_key(self.owner), self.handle_event),
        ]
        queue = self.destination.amqp_queue
        if queue and self.bus.external:
            self.consumers.append(
                await self.bus.consume(outbound_key(queue), self.handle_app_outbound)
            )

    async def stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        self.consumers = []
        if self.callbacks is not None:
            await self.callbacks.detach(self.owner, self.log)

    async def post(
        self,
        kind: str,
        template: str,
        values: dict[str, Any],
        payload: dict[str, Any],
        *,
        token: str | None,
        settings: CallbackSettings,
        message_id: str | None,
        source_id: str | None,
    ) -> None:
        """Expand ``template`` and POST ``payload`` to it (retried when it fails)."""
        try:
            url = callback_templates.render(template, kind, values)
        except callback_templates.TemplateError as exc:
            self.log.error(f"Not posting: {exc}", message_id=message_id)
            return
        if self.callbacks is None:
            await self.poster.post(
                url, payload, token=token, log=self.log, message_id=message_id, what=WHAT[kind]
            )
            return
        await self.callbacks.send(
            self.owner,
            url,
            payload,
            kind=kind,
            settings=settings,
            token=token,
            log=self.log,
            message_id=message_id,
            source_id=source_id,
            template=template,
        )

    async def handle_inbound(self, message: dict[str, Any]) -> None:
        destination = self.destination
        message_id = message.get("message_id")
        # Stored and counted in one round trip (counted before the POST, not after it).
        await self.store.store_inbound(
            self.owner, message, count=self.rates.bucket(self.owner, "inbound")
        )
        payload = messages.api_from_message(message)
        self.log.info(
            f"Inbound message from {message.get('from_addr')} "
            f"(session {message.get('session_event') or 'none'})",
            message_id=message_id,
        )
        if destination.mo_url:
            await self.post(
                "inbound",
                destination.mo_url,
                (
                    callback_templates.inbound_values(self.channel_id, message)
                    if callback_templates.is_template(destination.mo_url)
                    else _NO_VALUES
                ),
                payload,
                token=destination.mo_url_auth_token,
                settings=destination.callback,
                message_id=message_id,
                source_id=message_id,
            )
        if destination.amqp_queue and self.bus.external:
            # The original put session_event into helper_metadata before publishing,
            # and its documentation shows it there: AMQP apps may rely on it.
            published = copy.deepcopy(message)
            published["helper_metadata"] = payload["channel_data"]
            await self.bus.publish(inbound_key(destination.amqp_queue), published)

    async def handle_event(self, event: dict[str, Any]) -> None:
        message_id = event.get("user_message_id")
        if message_id is None:
            self.log.warning(f"Dropping {event.get('event_type')} event without user_message_id")
            return
        event_type = messages.api_event_type(event)
        record = None
        if event_type is None:
            await self.store.store_event(self.owner, event)
        else:
            # Store it, read its message's record and count it: one round trip.
            _, record = await self.store.store_event_and_load(
                self.owner, event, count=self.rates.bucket(self.owner, event_type)
            )
        self.log.info(
            f"Event {event_type or event.get('event_type')}"
            + (f": {event['nack_reason']}" if event.get("nack_reason") else ""),
            message_id=message_id,
        )
        destination = self.destination
        if event_type is None:
            self.log.warning(
                f"Discarding unrecognised event {event.get('event_type')}", message_id=message_id
            )
        else:
            event_url = record.get("event_url") if record else None
            if event_url:
                await self.post(
                    "event",
                    event_url,
                    (
                        callback_templates.event_values(self.channel_id, event, record)
                        if callback_templates.is_template(event_url)
                        else _NO_VALUES
                    ),
                    messages.api_from_event(self.channel_id, event),
                    token=record.get("event_auth_token"),
                    settings=destination.callback,
                    message_id=message_id,
                    source_id=event.get("event_id"),
                )
        if destination.amqp_queue and self.bus.external:
            await self.bus.publish(event_key(destination.amqp_queue), event)

    async def handle_app_outbound(self, message: dict[str, Any]) -> None:
        """An AMQP app's outbound message: queue it for the channel's transport,
        numbered (so a cancellation covers it) and counted, at the default priority."""
        await enqueue(self.bus, self.queues, self.clock, self.channel_id, message)
