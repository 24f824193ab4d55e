"""The in-process message bus of the embedded default.

Queues live in memory, so messages still waiting when the process exits are lost:
this bus is for trying Junebug out and for single-process installs that accept
that. Production deployments use ``bus.amqp.AmqpBus``. Messages are stored encoded,
exactly as they would cross RabbitMQ, so no handler can mutate another's copy.

A body is kept as the JSON text ``messages.encode`` writes (ASCII only), not as its
bytes: the same message, without copying it into bytes and, on delivery, back.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from junebug import messages
from junebug.bus.base import MAX_PRIORITY, Consumer, Handler, MessageBus

log = Logger()

#: Seconds before a message whose handler failed is offered again.
RETRY_DELAY = 1.0

#: A message as the bus keeps it: JSON text (bytes when put there by other means).
Body = str | bytes


class _Queue:
    def __init__(self, name: str, max_priority: int | None) -> None:
        self.name = name
        self.levels = (max_priority or 0) + 1
        # One deque per priority level; the highest level is served first.
        self.waiting: list[deque[Body]] = [deque() for _ in range(self.levels)]
        self.consumers: list[LocalConsumer] = []
        self.next_consumer = 0
        #: Messages waiting, at every level.
        self.size = 0
        #: A delivery of this queue is planned (``LocalBus._schedule``).
        self.scheduled = False

    def __len__(self) -> int:
        return self.size

    def push(self, body: Body, priority: int | None, front: bool = False) -> None:
        level = min(max(priority or 0, 0), self.levels - 1)
        if front:
            self.waiting[level].appendleft(body)
        else:
            self.waiting[level].append(body)
        self.size += 1

    def pop(self) -> tuple[Body, int] | None:
        if not self.size:
            return None
        waiting = self.waiting
        for level in range(self.levels - 1, -1, -1):
            if waiting[level]:
                self.size -= 1
                return waiting[level].popleft(), level
        return None

    def clear(self) -> int:
        count = self.size
        for level in self.waiting:
            level.clear()
        self.size = 0
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

    def deliver(self, body: Body, priority: int) -> None:
        try:
            message = messages.decode(body)
        except messages.InvalidMessage as exc:
            log.error("Dropping invalid message on {key}: {error}", key=self.routing_key, error=exc)
            return
        # The handler's Deferred or coroutine, or its plain result (as maybeDeferred
        # would, without wrapping a plain result in a Deferred).
        try:
            done = self.handler(message)
            if not isinstance(done, Deferred):
                if hasattr(done, "__await__"):
                    done = Deferred.fromCoroutine(done)
                elif isinstance(done, Failure):
                    done = fail(done)
                else:
                    self.bus._schedule(self.queue)  # finished already: the next one
                    return
        except BaseException:
            done = fail()
        self.in_flight.add(done)
        done.addCallbacks(
            self._settle,
            self._retry,
            callbackArgs=(done,),
            errbackArgs=(done, body, priority),
        )

    def _settle(self, result: Any, done: Deferred) -> None:
        self.in_flight.discard(done)
        self.bus._schedule(self.queue)

    def _retry(self, failure: Any, done: Deferred, body: Body, priority: int) -> None:
        log.failure(
            "Handler for {key} failed; the message will be delivered again",
            failure,
            key=self.routing_key,
        )
        self.bus.clock.callLater(RETRY_DELAY, self._requeue, body, priority)
        self._settle(None, done)

    def _requeue(self, body: Body, priority: int) -> None:
        self.queue.push(body, priority, front=True)
        self.bus._schedule(self.queue)


class LocalBus(MessageBus):
    """An in-memory ``MessageBus``; delivery happens on later reactor turns.

    One ``callLater(0)`` per turn serves every queue that has something to deliver
    (``_schedule``), rather than one per queue and message."""

    external = False

    def __init__(self, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.queues: dict[str, _Queue] = {}
        #: Queues to deliver from on the next turn, in the order they were scheduled.
        self._due: list[_Queue] = []
        self._due_call: Any = None

    def _queue(self, name: str, max_priority: int | None = None) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _Queue(name, max_priority)
        return queue

    def _schedule(self, queue: _Queue) -> None:
        """Deliver what ``queue`` holds on the next turn."""
        if queue.scheduled:
            return
        queue.scheduled = True
        self._due.append(queue)
        if self._due_call is None:
            self._due_call = self.clock.callLater(0, self._pump_due)

    def _pump_due(self) -> None:
        self._due_call = None
        due, self._due = self._due, []
        for queue in due:
            queue.scheduled = False
            self._pump(queue)

    def _pump(self, queue: _Queue) -> None:
        while queue.size and queue.consumers:
            consumer = self._next_ready(queue)
            if consumer is None:
                return
            body, priority = queue.pop()
            consumer.deliver(body, priority)

    def _next_ready(self, queue: _Queue) -> LocalConsumer | None:
        if len(queue.consumers) == 1:
            consumer = queue.consumers[0]
            return consumer if consumer.ready else None
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
        body = messages.to_json(message)
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
            # They live on in the new queue only: a delivery already planned for the
            # old one must not hand them out a second time.
            queue.clear()
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
