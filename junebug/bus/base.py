"""The message bus contract: what every part of Junebug above ``bus/`` relies on.

Two implementations: ``bus.local.LocalBus`` (in-process, the embedded default) and
``bus.amqp.AmqpBus`` (RabbitMQ through txAMQP). Routing keys follow vumi:
``<name>.inbound``, ``<name>.outbound``, ``<name>.event``, ``<name>.status.status``.
Payloads are vumi message dicts (``junebug.messages``); the bus encodes and decodes.

Delivery is at-least-once: a message is acknowledged only after the handler's
Deferred (or coroutine) succeeds. When the handler fails, the message stays on its
queue and is delivered again after a short back-off, so handlers must tolerate
duplicates. A body that is not a valid vumi message is logged and dropped: it can
never succeed, and retrying it would block the queue behind it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred

Handler = Callable[[dict[str, Any]], Awaitable[Any] | Deferred | None]

EXCHANGE = "vumi"

#: Priority levels a queue declared with ``max_priority`` accepts (RabbitMQ: 0..255).
MAX_PRIORITY = 5


def inbound_key(name: str) -> str:
    return f"{name}.inbound"


def outbound_key(name: str) -> str:
    return f"{name}.outbound"


def event_key(name: str) -> str:
    return f"{name}.event"


def status_key(name: str) -> str:
    # vumi's status connector is itself named "<name>.status", hence the double suffix.
    return f"{name}.status.status"


def channel_keys(name: str) -> list[str]:
    """Every queue a channel (or router destination) owns."""
    return [inbound_key(name), outbound_key(name), event_key(name), status_key(name)]


class BusUnavailable(Exception):
    """The bus cannot take the message now (e.g. the broker connection is down)."""


class Consumer(ABC):
    """A running subscription to one queue."""

    routing_key: str

    @abstractmethod
    def pause(self) -> None:
        """Stop delivering new messages; those in the handler finish normally."""

    @abstractmethod
    def resume(self) -> None:
        """Start delivering again after ``pause``."""

    @property
    @abstractmethod
    def paused(self) -> bool: ...

    @abstractmethod
    def stop(self) -> Deferred:
        """Unsubscribe; fires once every message in a handler has finished."""


class MessageBus(ABC):
    """Publish vumi messages by routing key and consume them with acknowledgement."""

    #: Whether applications outside this process can reach the bus (``amqp_queue``).
    external: bool = False

    @abstractmethod
    def start(self) -> Deferred:
        """Connect; fires when the bus is usable."""

    @abstractmethod
    def stop(self) -> Deferred:
        """Stop every consumer and disconnect."""

    @abstractmethod
    def publish(
        self, routing_key: str, message: dict[str, Any], priority: int | None = None
    ) -> Deferred:
        """Put ``message`` on ``routing_key``'s queue.

        Fires once the message is accepted (for RabbitMQ: handed to the broker as a
        persistent message); fails with ``BusUnavailable`` when it cannot be.
        ``priority`` only orders messages on queues declared with ``max_priority``.
        """

    @abstractmethod
    def consume(
        self,
        routing_key: str,
        handler: Handler,
        *,
        prefetch: int = 20,
        max_priority: int | None = None,
        paused: bool = False,
    ) -> Deferred:
        """Declare the queue if needed and deliver its messages to ``handler``.

        At most ``prefetch`` messages are in the handler at once. Fires with a
        ``Consumer``. ``max_priority`` declares the queue as a priority queue.
        """

    @abstractmethod
    def queue_length(self, routing_key: str) -> Deferred:
        """Fires with the number of messages waiting (not yet delivered) on the queue."""

    @abstractmethod
    def purge(self, routing_key: str) -> Deferred:
        """Drop every waiting message; fires with how many were dropped."""

    @abstractmethod
    def delete_queue(self, routing_key: str) -> Deferred:
        """Remove the queue and its messages (used when a channel is deleted)."""
