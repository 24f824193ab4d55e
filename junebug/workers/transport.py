"""Runs one transport: sets it up and feeds it the channel's outbound queue through
the channel's ``OutboundScheduler`` (rate limit, priorities, expiry, cancellation).

An outbound message is acknowledged on the bus when the transport's
``handle_outbound`` returns (the wire took it, its ack or nack is published) or
raises an ordinary exception (a nack is published: it can never be sent). When it
raises ``RetryLater`` nothing is published and the bus handler fails, so the bus
delivers the message again after its back-off.

The bus prefetch is the scheduler's buffer plus what the transport wants in hand
at once (``Transport.outbound_window``), so a transport waiting for answers can
keep its whole window busy.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from junebug.bus.base import MessageBus
from junebug.store.queues import QueueStore
from junebug.transports.base import RetryLater, Transport, TransportContext
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
        self.scheduler: OutboundScheduler | None = None
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
        #: The bus prefetch: the buffer plus the messages the transport holds at once.
        self.buffer_size = max(1, buffer_size) + max(0, int(self.transport.outbound_window()))
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
            buffer_size=self.buffer_size,
            paused=transport_class.START_PAUSED,
        )

    @property
    def consumer(self) -> Any:
        """The bus consumer of the channel's outbound queue (None when stopped)."""
        return self.scheduler.consumer

    def set_paused(self, paused: bool) -> None:
        if self.scheduler is not None:
            self.scheduler.set_paused(paused)

    def set_rate_limit(self, count: int | None, window: float | None) -> None:
        """Change the rate limit of the running channel, without a restart."""
        self.scheduler.set_rate_limit(count, window)

    async def start(self) -> None:
        try:
            await self.transport.setup()
        except Exception:
            # Half a setup may hold a port or a connection: the contract says teardown
            # is safe after a failed setup, so release whatever was taken.
            await self.transport.teardown()
            raise
        try:
            await self.scheduler.start()
        except Exception:
            await self.transport.teardown()
            raise

    async def stop(self) -> None:
        """Hand buffered messages back, let the transport release what it holds
        (``Transport.stopping``), stop the consumer once every message being
        handled has finished, then tear the transport down."""
        await self.scheduler.stop(release=self._release)
        await self.transport.teardown()

    async def _release(self) -> None:
        try:
            await self.transport.stopping()
        except Exception:
            self.log.error("The transport failed to release its messages", failure=Failure())

    async def handle_outbound(self, message: dict[str, Any]) -> None:
        self.log.info(f"Sending to {message.get('to_addr')}", message_id=message.get("message_id"))
        try:
            await self.transport.handle_outbound(message)
        except RetryLater as exc:
            # Not sent: no event; failing the bus handler puts it back on the queue.
            self.log.info(
                f"Not sent now, back to the queue: {exc}", message_id=message.get("message_id")
            )
            raise
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
