"""The shared parts every channel uses, built once by the service and passed down."""

from __future__ import annotations

from typing import Any

import attrs

from junebug.bus.base import MessageBus
from junebug.store.callbacks import CallbackStore
from junebug.store.channels import ChannelStore
from junebug.store.messages import MessageStore
from junebug.store.rates import RateCounter
from junebug.store.redis import Keys
from junebug.store.status import StatusStore
from junebug.transports.base import Transport


@attrs.define
class Backends:
    config: Any  #: the JunebugConfig
    clock: Any
    bus: MessageBus
    redis: Any
    keys: Keys
    poster: Any  #: a workers.http.CallbackPoster
    channel_types: dict[str, type[Transport]]
    channels: ChannelStore = attrs.field(init=False)
    messages: MessageStore = attrs.field(init=False)
    statuses: StatusStore = attrs.field(init=False)
    rates: RateCounter = attrs.field(init=False)
    #: The guaranteed path of every callback (workers.callbacks.CallbackQueue).
    callbacks: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.channels = ChannelStore(self.redis, self.keys)
        self.messages = MessageStore(
            self.redis,
            self.keys,
            self.config.inbound_message_ttl,
            self.config.outbound_message_ttl,
        )
        self.statuses = StatusStore(self.redis, self.keys)
        self.rates = RateCounter(self.redis, self.keys, self.config.metric_window, self.clock)
        from junebug.workers.callbacks import CallbackQueue

        self.callbacks = CallbackQueue(
            CallbackStore(self.redis, self.keys),
            self.poster,
            self.clock,
            secrets=self.callback_secret,
        )

    async def callback_secret(self, channel_id: str) -> str | None:
        """A channel's current ``callback_secret`` (signs its retried callbacks)."""
        properties = await self.channels.load(channel_id)
        return (properties or {}).get("callback_secret") or None

    def open_log(self, owner_id: str) -> Any:
        from junebug.logs import ChannelLog

        return ChannelLog(
            owner_id,
            self.config.logging_path,
            rotate_size=self.config.log_rotate_size,
            max_files=self.config.max_log_files or None,
            clock=self.clock,
        )
