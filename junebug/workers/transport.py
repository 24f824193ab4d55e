"""Runs one transport: sets it up and feeds it the channel's outbound queue."""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from junebug.bus.base import MAX_PRIORITY, MessageBus, outbound_key
from junebug.transports.base import Transport, TransportContext


class TransportWorker:
    def __init__(
        self,
        channel_id: str,
        transport_class: type[Transport],
        config: dict[str, Any],
        *,
        bus: MessageBus,
        clock: Any,
        log: Any,
        redis: Any = None,
        redis_prefix: str = "",
        reactor: Any = None,
    ) -> None:
        self.channel_id = channel_id
        self.bus = bus
        self.log = log
        self.consumer: Any = None
        self._paused = transport_class.START_PAUSED
        context = TransportContext(
            channel_id=channel_id,
            bus=bus,
            clock=clock,
            log=log,
            reactor=reactor or clock,
            redis=redis,
            redis_prefix=redis_prefix,
            set_outbound_paused=self.set_paused,
        )
        self.transport = transport_class(context, config)

    def set_paused(self, paused: bool) -> None:
        self._paused = paused
        if self.consumer is not None:
            (self.consumer.pause if paused else self.consumer.resume)()

    async def start(self) -> None:
        await self.transport.setup()
        try:
            self.consumer = await self.bus.consume(
                outbound_key(self.channel_id),
                self.handle_outbound,
                max_priority=MAX_PRIORITY,
                paused=self._paused,
            )
        except Exception:
            await self.transport.teardown()
            raise

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        await self.transport.teardown()

    async def handle_outbound(self, message: dict[str, Any]) -> None:
        self.log.info(f"Sending to {message.get('to_addr')}", message_id=message.get("message_id"))
        try:
            await self.transport.handle_outbound(message)
        except Exception as exc:
            # The message can never be sent as it is: tell the application, and
            # acknowledge it so it doesn't block the queue behind it.
            reason = f"{type(exc).__name__}: {exc}"
            self.log.error(
                f"Sending failed: {reason}", message_id=message.get("message_id"), failure=Failure()
            )
            await self.transport.publish_nack(message["message_id"], reason)
