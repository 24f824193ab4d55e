"""The in-process message bus of the embedded default.

Queues live in memory, so messages still waiting when the process exits are lost:
this bus is for trying Junebug out and for single-process installs that accept
that. Production deployments use ``bus.amqp.AmqpBus``. Messages are stored encoded,
exactly as they would cross RabbitMQ, so no handler can mutate another's copy.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger

from junebug import messages
from junebug.bus.base import MAX_PRIORITY, Consumer, Handler, MessageBus

log = Logger()

#: Seconds before a message whose handler failed is offered again.
RETRY_DELAY = 1.0


def _call(handler: Handler, message: dict[str, Any]) -> Deferred:
    def invoke() -> Any:
        result = handler(message)
        if hasattr(result, "__await__") and not isinstance(result, Deferred):
            return Deferred.fromCoroutine(result)
        return result

    return maybeDeferred(invoke)


class _Queue:
    def __init__(self, name: str, max_priority: int | None) -> None:
        self.name = name
        self.levels = (max_priority or 0) + 1
        # One deque per priority level; the highest level is served first.
        self.waiting: list[deque[bytes]] = [deque() for _ in range(self.levels)]
        self.consumers: list[LocalConsumer] = []
        self.next_consumer = 0

    def __len__(self) -> int:
        return sum(len(level) for level in self.waiting)

    def push(self, body: bytes, priority: int | None, front: bool = False) -> None:
        level = min(max(priority or 0, 0), self.levels - 1)
        if front:
            self.waiting[level].appendleft(body)
        else:
            self.waiting[level].append(body)

    def pop(self) -> tuple[bytes, int] | None:
        for level in range(self.levels - 1, -1, -1):
            if self.waiting[level]:
                return self.waiting[level].popleft(), level
        return None

    def clear(self) -> int:
        count = len(self)
        for level in self.waiting:
            level.clear()
        return count


class LocalConsumer(Consumer):
    def __init__(self, bus: LocalBus, queue: _Queue, handler: Handler, prefetch: int) -> None:
        self.bus = bus
        self.queue = queue
        self.routing_key = queue.name
        self.handler = handler
        self.prefetch = max(1, prefetch)
        self.in_flight: set[Deferred] = set()
        self._paused = False
        self.stopped = False

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def ready(self) -> bool:
        return not (self._paused or self.stopped) and len(self.in_flight) < self.prefetch

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self.bus._schedule(self.queue)

    def stop(self) -> Deferred:
        self.stopped = True
        if self in self.queue.consumers:
            self.queue.consumers.remove(self)
        if not self.in_flight:
            return succeed(None)
        return DeferredList(list(self.in_flight), consumeErrors=True).addCallback(lambda _: None)

    def deliver(self, body: bytes, priority: int) -> None:
        try:
            message = messages.decode(body)
        except messages.InvalidMessage as exc:
            log.error("Dropping invalid message on {key}: {error}", key=self.routing_key, error=exc)
            return
        done = _call(self.handler, message)
        self.in_flight.add(done)

        def settle(result: Any) -> None:
            self.in_flight.discard(done)
            self.bus._schedule(self.queue)

        def retry(failure: Any) -> None:
            log.failure(
                "Handler for {key} failed; the message will be delivered again",
                failure,
                key=self.routing_key,
            )

            def requeue() -> None:
                self.queue.push(body, priority, front=True)
                self.bus._schedule(self.queue)

            self.bus.clock.callLater(RETRY_DELAY, requeue)

        done.addErrback(retry)
        done.addBoth(settle)


class LocalBus(MessageBus):
    """An in-memory ``MessageBus``; delivery happens on later reactor turns."""

    external = False

    def __init__(self, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.queues: dict[str, _Queue] = {}
        self._scheduled: set[str] = set()

    def _queue(self, name: str, max_priority: int | None = None) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _Queue(name, max_priority)
        return queue

    def _schedule(self, queue: _Queue) -> None:
        if queue.name in self._scheduled:
            return
        self._scheduled.add(queue.name)
        self.clock.callLater(0, self._pump, queue)

    def _pump(self, queue: _Queue) -> None:
        self._scheduled.discard(queue.name)
        while len(queue) and queue.consumers:
            consumer = self._next_ready(queue)
            if consumer is None:
                return
            body, priority = queue.pop()
            consumer.deliver(body, priority)

    def _next_ready(self, queue: _Queue) -> LocalConsumer | None:
        count = len(queue.consumers)
        for offset in range(count):
            index = (queue.next_consumer + offset) % count
            consumer = queue.consumers[index]
            if consumer.ready:
                queue.next_consumer = (index + 1) % count
                return consumer
        return None

    def start(self) -> Deferred:
        return succeed(None)

    def stop(self) -> Deferred:
        stops = [c.stop() for q in self.queues.values() for c in list(q.consumers)]
        return DeferredList(stops, consumeErrors=True).addCallback(lambda _: None)

    def publish(
        self, routing_key: str, message: dict[str, Any], priority: int | None = None
    ) -> Deferred:
        body = messages.encode(message)
        queue = self._queue(routing_key)
        queue.push(body, min(priority or 0, MAX_PRIORITY))
        self._schedule(queue)
        return succeed(None)

    def consume(
        self,
        routing_key: str,
        handler: Handler,
        *,
        prefetch: int = 20,
        max_priority: int | None = None,
        paused: bool = False,
    ) -> Deferred:
        queue = self.queues.get(routing_key)
        if queue is None:
            queue = self._queue(routing_key, max_priority)
        elif max_priority and queue.levels == 1:
            # Declared as a priority queue after messages arrived: move them over.
            upgraded = _Queue(routing_key, max_priority)
            upgraded.consumers = queue.consumers
            for body in queue.waiting[0]:
                upgraded.push(body, 0)
            queue = self.queues[routing_key] = upgraded
        consumer = LocalConsumer(self, queue, handler, prefetch)
        consumer._paused = paused
        queue.consumers.append(consumer)
        self._schedule(queue)
        return succeed(consumer)

    def queue_length(self, routing_key: str) -> Deferred:
        queue = self.queues.get(routing_key)
        return succeed(len(queue) if queue else 0)

    def purge(self, routing_key: str) -> Deferred:
        queue = self.queues.get(routing_key)
        return succeed(queue.clear() if queue else 0)

    def delete_queue(self, routing_key: str) -> Deferred:
        queue = self.queues.pop(routing_key, None)
        if queue is None:
            return succeed(None)
        queue.clear()
        stops = [consumer.stop() for consumer in list(queue.consumers)]
        return DeferredList(stops, consumeErrors=True).addCallback(lambda _: None)
