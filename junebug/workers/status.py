"""Keeps a channel's latest status per component and POSTs each to its status_url
(template variables expanded, through the guaranteed path of ``workers.callbacks``)."""

from __future__ import annotations

from typing import Any

from junebug import callback_templates, messages
from junebug.bus.base import MessageBus, status_key
from junebug.workers.callbacks import WHAT, CallbackSettings


async def post_status(
    channel_id: str,
    url: str,
    status: dict[str, Any],
    *,
    callbacks: Any,
    poster: Any,
    settings: CallbackSettings | None,
    log: Any,
) -> None:
    """POST a vumi status to a channel's ``status_url`` template (retried when it
    fails, if ``callbacks`` is given)."""
    try:
        target = callback_templates.render(
            url, "status", callback_templates.status_values(channel_id, status)
        )
    except callback_templates.TemplateError as exc:
        log.error(f"Not posting the status: {exc}")
        return
    payload = messages.api_from_status(channel_id, status)
    if callbacks is None:
        await poster.post(target, payload, log=log, what=WHAT["status"])
        return
    await callbacks.send(
        channel_id, target, payload, kind="status", settings=settings, log=log, template=url
    )


class StatusWorker:
    """Consumes ``<channel>.status.status``; ``status_url`` (and ``settings``, the
    channel's callback settings) are read per event."""

    def __init__(
        self,
        channel_id: str,
        *,
        status_url: Any,
        bus: MessageBus,
        store: Any,
        poster: Any,
        log: Any,
        callbacks: Any = None,
        settings: Any = None,
    ) -> None:
        self.channel_id = channel_id
        self._status_url = status_url
        self.bus = bus
        self.store = store
        self.poster = poster
        self.log = log
        self.callbacks = callbacks
        self._settings = settings
        self.consumer: Any = None

    async def start(self) -> None:
        if self.callbacks is not None:
            await self.callbacks.attach(self.channel_id, self.log)
        self.consumer = await self.bus.consume(status_key(self.channel_id), self.handle_status)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self.callbacks is not None:
            await self.callbacks.detach(self.channel_id, self.log)

    async def handle_status(self, status: dict[str, Any]) -> None:
        await self.store.set(self.channel_id, status)
        level = {"ok": 20, "degraded": 30, "down": 40}.get(status["status"], 20)
        text = f"Status {status['component']}: {status['status']} ({status['type']}): "
        (self.log.info if level == 20 else self.log.warning)(text + status["message"])
        url = self._status_url() if callable(self._status_url) else self._status_url
        if url:
            settings = self._settings() if callable(self._settings) else self._settings
            await post_status(
                self.channel_id,
                url,
                status,
                callbacks=self.callbacks,
                poster=self.poster,
                settings=settings,
                log=self.log,
            )
