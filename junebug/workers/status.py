"""Keeps a channel's latest status per component and POSTs each to its status_url."""

from __future__ import annotations

from typing import Any

from junebug import messages
from junebug.bus.base import MessageBus, status_key


class StatusWorker:
    """Consumes ``<channel>.status.status``; ``status_url`` is read per event."""

    def __init__(
        self,
        channel_id: str,
        *,
        status_url: Any,
        bus: MessageBus,
        store: Any,
        poster: Any,
        log: Any,
    ) -> None:
        self.channel_id = channel_id
        self._status_url = status_url
        self.bus = bus
        self.store = store
        self.poster = poster
        self.log = log
        self.consumer: Any = None

    async def start(self) -> None:
        self.consumer = await self.bus.consume(status_key(self.channel_id), self.handle_status)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def handle_status(self, status: dict[str, Any]) -> None:
        await self.store.set(self.channel_id, status)
        level = {"ok": 20, "degraded": 30, "down": 40}.get(status["status"], 20)
        text = f"Status {status['component']}: {status['status']} ({status['type']}): "
        (self.log.info if level == 20 else self.log.warning)(text + status["message"])
        url = self._status_url() if callable(self._status_url) else self._status_url
        if url:
            await self.poster.post(
                url,
                messages.api_from_status(self.channel_id, status),
                log=self.log,
                what="status event",
            )
