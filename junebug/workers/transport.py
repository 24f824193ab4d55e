"""Runs one transport: sets it up and feeds it the channel's outbound queue through
the channel's ``OutboundScheduler`` (rate limit, priorities, expiry, cancellation)."""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from junebug.bus.base import MessageBus
from junebug.store.queues import QueueStore
from junebug.transports.base import Transport, TransportContext
from junebug.workers.outbound import BUFFER_SIZE, OutboundScheduler


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
        rate_limit_count: int | None = None,
        rate_limit_window: float | None = None,
        queues: QueueStore | None = None,
        buffer_size: int = BUFFER_SIZE,
    ) -> None:
        self.channel_id = channel_id
        self.bus = bus
        self.log = log
        self.scheduler = OutboundScheduler(
            channel_id,
            send=self.handle_outbound,
            reject=self.reject,
            bus=bus,
            clock=clock,
            log=log,
            queues=queues,
            rate_limit_count=rate_limit_count,
            rate_limit_window=rate_limit_window,
            buffer_size=buffer_size,
            paused=transport_class.START_PAUSED,
        )
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

    @property
    def consumer(self) -> Any:
        """The bus consumer of the channel's outbound queue (None when stopped)."""
        return self.scheduler.consumer

    def set_paused(self, paused: bool) -> None:
        self.scheduler.set_paused(paused)

    def set_rate_limit(self, count: int | None, window: float | None) -> None:
        """Change the rate limit of the running channel, without a restart."""
        self.scheduler.set_rate_limit(count, window)

    async def start(self) -> None:
        await self.transport.setup()
        try:
            await self.scheduler.start()
        except Exception:
            await self.transport.teardown()
            raise

    async def stop(self) -> None:
        await self.scheduler.stop()
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

    async def reject(self, message: dict[str, Any], reason: str) -> None:
        """A message that will not be sent (cancelled, expired): its nack."""
        await self.transport.publish_nack(message["message_id"], reason)
