"""The per-channel outbound scheduler: what leaves a channel's queue, when, and in
what order.

Each running channel has one ``OutboundScheduler`` (inside its ``TransportWorker``)
consuming ``<channel_id>.outbound`` with a small prefetch. What the bus delivers
waits in a local buffer ordered by priority, then arrival; the scheduler hands the
best buffered message to the transport whenever the channel's rate limit has a token
for it. A message is acknowledged on the bus only once the transport has handled it
(its ``handle_outbound`` returned: the wire took it) or it was rejected, so the
buffer and the messages being sent never hold more than the prefetch and nothing is
lost if the process stops or dies. When the transport gives a message back
(``RetryLater``), its bus handler fails and the bus delivers it again later.

Messages can also leave without being sent: when their ``validity`` has run out
(rejected with reason ``expired``) or when the channel's queue was cancelled
(reason ``cancelled``). Both publish a nack event, so the message's ``event_url``
hears about it. docs/queues.md describes the guarantees.

Each message carries its queue metadata in the field ``junebug_queue``:
``{"priority": 1-5, "seq": n, "expires_at": unix seconds or null}``, added by
``enqueue`` (the API's send path).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from junebug import messages
from junebug.bus.base import MAX_PRIORITY, MessageBus, outbound_key
from junebug.store.queues import CancelMark, QueueStore

log = Logger()

#: The field of an outbound vumi message that holds its queue metadata.
QUEUE_FIELD = "junebug_queue"
#: Priority of API messages that give none ("bulk").
DEFAULT_PRIORITY = 1
#: Names the API accepts for priorities.
PRIORITY_NAMES = {"bulk": 1, "realtime": MAX_PRIORITY}
#: How many messages a channel takes off its queue ahead of sending them (the bus
#: prefetch): the local buffer plus the messages being handed to the transport.
BUFFER_SIZE = 8
#: Seconds the scheduler gathers the messages leaving its buffer before counting them
#: down in Redis (``QueueStore.taken``): one command per priority for all of them,
#: instead of one per message. The channel's queue status, stopping the channel and
#: ``flush_taken`` write them at once.
TAKEN_FLUSH_DELAY = 0.05

#: nack reasons.
CANCELLED = "cancelled"
EXPIRED = "expired"

# Slack for float arithmetic on clock times.
_EPSILON = 1e-9


class HandedBack(Exception):
    """A buffered message given back to the bus because its channel is stopping."""


# -- the producer side ----------------------------------------------------------------


def priority_value(priority: int | str | None, log: Any = None) -> int:
    """The queue priority of a send's ``priority`` (schema-valid: 1-5, a string or null).

    "1" to "5", "bulk" and "realtime" mean what they say. The original accepted any
    string and ignored it, so any other string means the default, with a warning.
    """
    if priority is None:
        return DEFAULT_PRIORITY
    if not isinstance(priority, str):
        return int(priority)
    text = priority.strip().lower()
    if text in PRIORITY_NAMES:
        return PRIORITY_NAMES[text]
    if text in ("1", "2", "3", "4", "5"):
        return int(text)
    if log is not None:
        log.warning(f"priority {priority!r} is not 1-5, bulk or realtime: sent at priority 1")
    return DEFAULT_PRIORITY


async def enqueue(
    bus: MessageBus,
    queues: QueueStore | None,
    clock: Any,
    channel_id: str,
    message: dict[str, Any],
    *,
    priority: int = DEFAULT_PRIORITY,
    validity: float | None = None,
    seq: int | None = None,
) -> None:
    """Number and count ``message``, stamp its queue metadata, and publish it on the
    channel's outbound queue at ``priority``. Fails as ``bus.publish`` does (the
    count is then taken back).

    ``seq``: the message was already numbered and counted at ``priority`` (e.g. in the
    round trip that stored its record: ``MessageStore.store_outbound``'s ``accept``);
    it is not accepted again, but its count is still taken back from ``queues`` if
    the publish fails."""
    if seq is None and queues is not None:
        seq = await queues.accept(channel_id, priority)
    message[QUEUE_FIELD] = {
        "priority": priority,
        "seq": seq,
        # A validity too large to matter (JSON's 1e999 is infinite) means none.
        "expires_at": clock.seconds() + validity if validity and math.isfinite(validity) else None,
    }
    try:
        await bus.publish(outbound_key(channel_id), message, priority=priority)
    except Exception:
        if queues is not None and seq is not None:
            await queues.taken(channel_id, priority)
        raise


# -- the rate limit -------------------------------------------------------------------


class RateLimit:
    """At most ``count`` sends start in any ``window`` seconds.

    A bucket of ``count`` tokens in which each token spent comes back ``window``
    seconds after it was spent (not bit by bit), so bursts of up to ``count`` are
    allowed but no window of ``window`` seconds ever holds more than ``count``
    sends. A null or zero ``count`` or ``window`` means no limit.
    """

    def __init__(self, count: int | None = None, window: float | None = None) -> None:
        self._spent: deque[float] = deque()
        self.count = 0
        self.window = 0.0
        self.set(count, window)

    @property
    def unlimited(self) -> bool:
        return not (self.count and self.window)

    def set(self, count: int | None, window: float | None) -> None:
        self.count = int(count or 0)
        self.window = float(window or 0)
        self._trim()

    def _trim(self) -> None:
        # Only the newest ``count`` sends can hold a token.
        while len(self._spent) > self.count:
            self._spent.popleft()

    def wait(self, now: float) -> float:
        """Seconds until a token is free (0: one is free now)."""
        if self.unlimited:
            return 0.0
        while self._spent and self._spent[0] + self.window <= now + _EPSILON:
            self._spent.popleft()
        if len(self._spent) < self.count:
            return 0.0
        return max(self._spent[0] + self.window - now, _EPSILON)

    def take(self, now: float) -> None:
        if self.unlimited:
            return
        self._spent.append(now)
        self._trim()


# -- the scheduler ----------------------------------------------------------------------


def queue_metadata(message: dict[str, Any]) -> tuple[int, int | None, float | None]:
    """(priority, seq, expires_at) of an outbound message; messages that did not come
    through the API (AMQP applications) have priority 0, no number and no expiry."""
    meta = message.get(QUEUE_FIELD)
    if not isinstance(meta, dict):
        return 0, None, None
    try:
        priority = min(max(int(meta.get("priority") or 0), 0), MAX_PRIORITY)
    except (TypeError, ValueError):
        priority = 0
    seq = meta.get("seq")
    expires_at = meta.get("expires_at")
    return (
        priority,
        seq if isinstance(seq, int) else None,
        float(expires_at) if isinstance(expires_at, int | float) else None,
    )


def _stamped_seconds(message: dict[str, Any]) -> float | None:
    text = message.get("timestamp")
    if not isinstance(text, str):
        return None
    try:
        moment = messages.parse_timestamp(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC).timestamp()


class _Entry:
    __slots__ = ("message", "priority", "seq", "expires_at", "done", "gone", "timer")

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        self.priority, self.seq, self.expires_at = queue_metadata(message)
        #: Fires (or fails) to acknowledge the message on the bus.
        self.done: Deferred = Deferred()
        #: True once the entry has left the buffer.
        self.gone = False
        self.timer: Any = None

    @property
    def message_id(self) -> str | None:
        return self.message.get("message_id")


class OutboundScheduler:
    """Feeds one channel's transport from its outbound queue.

    ``send(message)`` hands a message to the transport (the transport worker's
    ``handle_outbound``); ``reject(message, reason)`` publishes its nack. ``queues``
    (optional) keeps the per-priority counts and the cancellation mark in Redis.
    """

    def __init__(
        self,
        channel_id: str,
        *,
        send: Callable[[dict[str, Any]], Awaitable[Any]],
        reject: Callable[[dict[str, Any], str], Awaitable[Any]],
        bus: MessageBus,
        clock: Any,
        log: Any = None,
        queues: QueueStore | None = None,
        rate_limit_count: int | None = None,
        rate_limit_window: float | None = None,
        buffer_size: int = BUFFER_SIZE,
        paused: bool = False,
    ) -> None:
        self.channel_id = channel_id
        self._send = send
        self._reject = reject
        self.bus = bus
        self.clock = clock
        self.log = log
        self.queues = queues
        self.rate = RateLimit(rate_limit_count, rate_limit_window)
        self.buffer_size = max(1, buffer_size)
        self.cancel_mark = CancelMark()
        self.consumer: Any = None
        self._paused = paused
        self._stopping = False
        self._heap: list[tuple[int, int, _Entry]] = []
        self._arrivals = itertools.count()
        self._live = 0
        self._in_flight: set[Deferred] = set()
        self._wakeup: Any = None
        self._pumping = False
        self._watchers: list[tuple[Callable[[OutboundScheduler], bool], Deferred]] = []
        #: Messages already counted as taken whose send failed (given back to the bus):
        #: not counted a second time when they come back to this scheduler.
        self._counted: set[str] = set()
        #: Messages taken out of the buffer and not yet counted down in Redis, by
        #: priority; written by ``flush_taken``.
        self._taken: dict[int, int] = {}
        self._taken_call: Any = None
        #: Writes of those counts under way.
        self._taken_writes: set[Deferred] = set()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.queues is not None:
            try:
                self.cancel_mark = await self.queues.cancel_mark(self.channel_id)
            except Exception as exc:  # noqa: BLE001 - Redis away: send anyway
                log.warn(
                    "Could not read the cancellation mark of {id}: {error}",
                    id=self.channel_id,
                    error=exc,
                )
        self.consumer = await self.bus.consume(
            outbound_key(self.channel_id),
            self._arrived,
            prefetch=self.buffer_size,
            max_priority=MAX_PRIORITY,
            paused=self._paused,
        )
        # The transport may have paused or resumed while the consumer was being set
        # up (an SMPP bind is quicker than an AMQP subscription): apply it now.
        if self.consumer.paused != self._paused:
            (self.consumer.pause if self._paused else self.consumer.resume)()

    async def stop(self, release: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Stop consuming; buffered messages go back to the queue, messages being
        sent finish first.

        ``release`` (the transport's ``stopping``) is awaited once nothing more
        arrives or is handed to the transport, before waiting for the messages being
        sent: it lets the transport give back (``RetryLater``) the messages it holds,
        so stopping waits only for sends that are about to finish.
        """
        self._stopping = True
        self._cancel_wakeup()
        consumer, self.consumer = self.consumer, None
        # Unsubscribes at once; fires when every message in the handler has finished.
        stopped = consumer.stop() if consumer is not None else None
        for entry in self._take_all():
            entry.done.errback(
                HandedBack(f"channel {self.channel_id} stopping: message handed back to the queue")
            )
        if release is not None:
            await release()
        if stopped is not None:
            await stopped
        # Nothing leaves the buffer any more: count down what left it.
        await self.flush_taken()

    # -- settings -----------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        """Stop (or start again) handing messages to the transport; while paused the
        bus keeps the messages (cancellation and expiry still apply)."""
        self._paused = paused
        if self.consumer is not None:
            (self.consumer.pause if paused else self.consumer.resume)()
        if not paused:
            self._pump()

    def set_rate_limit(self, count: int | None, window: float | None) -> None:
        """Apply a new rate limit at once (tokens already spent stay spent)."""
        self.rate.set(count, window)
        self._cancel_wakeup()
        self._pump()

    def cancel(self, mark: CancelMark) -> int:
        """Reject every message the mark covers; returns how many were in the buffer.

        Those still on the bus are rejected as they arrive, without waiting for the
        rate limit. A paused channel resumes consuming so they drain.
        """
        if mark.seq >= self.cancel_mark.seq:
            self.cancel_mark = mark
        dropped = 0
        for entry in [e for _, _, e in self._heap if not e.gone and self._cancelled(e)]:
            self._leave_buffer(entry)
            self._drop(entry, CANCELLED).chainDeferred(entry.done)
            dropped += 1
        if self.consumer is not None and self.consumer.paused:
            self.consumer.resume()
        self._changed()
        return dropped

    # -- what the API shows ---------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Messages taken off the bus and waiting here to be sent."""
        return self._live

    @property
    def sending(self) -> int:
        """Messages handed to the transport whose handling has not finished."""
        return len(self._in_flight)

    def buffered_by_priority(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, _, entry in self._heap:
            if not entry.gone:
                counts[str(entry.priority)] = counts.get(str(entry.priority), 0) + 1
        return counts

    def until(self, predicate: Callable[[OutboundScheduler], bool]) -> Deferred:
        """Fires once ``predicate(self)`` holds, checked after every change of the
        buffer (for tests and monitoring: no polling)."""
        if predicate(self):
            return succeed(self)
        waiter: Deferred = Deferred()
        self._watchers.append((predicate, waiter))
        return waiter

    def _changed(self) -> None:
        if not self._watchers:
            return
        for watcher in list(self._watchers):
            predicate, waiter = watcher
            if predicate(self):
                self._watchers.remove(watcher)
                waiter.callback(self)

    # -- arrivals -----------------------------------------------------------------------

    def _arrived(self, message: dict[str, Any]) -> Deferred:
        """The bus handler: the returned Deferred acknowledges the message."""
        entry = _Entry(message)
        if self._stopping:
            entry.done.errback(HandedBack(f"channel {self.channel_id} stopping"))
            return entry.done
        if self._cancelled(entry):
            return self._drop(entry, CANCELLED)
        if entry.expires_at is not None:
            now = self.clock.seconds()
            if self._expired(entry, now):
                return self._drop(entry, EXPIRED)
            entry.timer = self.clock.callLater(max(entry.expires_at - now, 0), self._expire, entry)
        heapq.heappush(self._heap, (-entry.priority, next(self._arrivals), entry))
        self._live += 1
        self._changed()
        self._pump()
        return entry.done

    def _cancelled(self, entry: _Entry) -> bool:
        mark = self.cancel_mark
        if entry.seq is not None:
            return entry.seq <= mark.seq
        if mark.time is None:
            return False
        stamped = _stamped_seconds(entry.message)
        return stamped is not None and stamped <= mark.time

    @staticmethod
    def _expired(entry: _Entry, now: float) -> bool:
        return entry.expires_at is not None and entry.expires_at <= now + _EPSILON

    def _expire(self, entry: _Entry) -> None:
        entry.timer = None
        if entry.gone:
            return
        self._leave_buffer(entry)
        self._drop(entry, EXPIRED).chainDeferred(entry.done)
        self._changed()

    # -- leaving ------------------------------------------------------------------------

    def _leave_buffer(self, entry: _Entry) -> None:
        entry.gone = True
        self._live -= 1
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None
        # Gone entries are skipped when they reach the top; keep the heap small.
        if len(self._heap) > 4 * self.buffer_size:
            self._heap = [item for item in self._heap if not item[2].gone]
            heapq.heapify(self._heap)

    def _take_all(self) -> list[_Entry]:
        entries = [entry for _, _, entry in self._heap if not entry.gone]
        for entry in entries:
            self._leave_buffer(entry)
        self._heap = []
        return entries

    def _drop(self, entry: _Entry, reason: str) -> Deferred:
        """Reject a message instead of sending it; fires once its nack is published."""

        async def reject() -> None:
            if self.log is not None:
                self.log.info(f"Not sending: {reason}", message_id=entry.message_id)
            self._count_taken(entry)
            await self._reject(entry.message, reason)

        return Deferred.fromCoroutine(reject())

    def _count_taken(self, entry: _Entry) -> None:
        """Count ``entry`` down in Redis: within ``TAKEN_FLUSH_DELAY`` seconds, with the
        others leaving meanwhile."""
        if self.queues is None or entry.seq is None or entry.priority < 1:
            return
        self._taken[entry.priority] = self._taken.get(entry.priority, 0) + 1
        if self._taken_call is None:
            self._taken_call = self.clock.callLater(TAKEN_FLUSH_DELAY, self.flush_taken)

    @property
    def taken_pending(self) -> bool:
        """Count-downs not yet written (or being written) to Redis."""
        return bool(self._taken or self._taken_writes)

    def flush_taken(self) -> Deferred:
        """Count down in Redis, now, the messages that left the buffer (one command per
        priority); fires once every such write made so far has finished (a failure
        is logged, as one per message was)."""
        if self._taken_call is not None:
            if self._taken_call.active():
                self._taken_call.cancel()
            self._taken_call = None
        counts, self._taken = self._taken, {}
        for priority, count in counts.items():
            written = maybeDeferred(self.queues.taken, self.channel_id, priority, count)
            written.addErrback(self._taken_failed)
            if not written.called:
                self._taken_writes.add(written)
                written.addBoth(self._taken_written, written)
        if not self._taken_writes:
            return succeed(None)
        return DeferredList(list(self._taken_writes)).addCallback(lambda _: None)

    def _taken_failed(self, failure: Failure) -> None:
        log.info(
            "Could not count down the queue of {id}: {error}",
            id=self.channel_id,
            error=failure.getErrorMessage(),
        )

    def _taken_written(self, result: Any, written: Deferred) -> Any:
        self._taken_writes.discard(written)
        return result

    # -- sending ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand buffered messages to the transport while tokens allow."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._heap and not (self._paused or self._stopping):
                entry = self._heap[0][2]
                if entry.gone:
                    heapq.heappop(self._heap)
                    continue
                now = self.clock.seconds()
                if self._expired(entry, now):
                    self._expire(entry)
                    continue
                wait = self.rate.wait(now)
                if wait > 0:
                    self._schedule_wakeup(wait)
                    break
                heapq.heappop(self._heap)
                self._leave_buffer(entry)
                self.rate.take(now)
                self._start_sending(entry)
        finally:
            self._pumping = False
        self._changed()

    def _start_sending(self, entry: _Entry) -> None:
        message_id = entry.message_id
        if message_id is not None and message_id in self._counted:
            self._counted.discard(message_id)
        else:
            self._count_taken(entry)
        # ``send``'s Deferred or coroutine, or its plain result (as maybeDeferred would).
        try:
            sending = self._send(entry.message)
            if not isinstance(sending, Deferred):
                if hasattr(sending, "__await__"):
                    sending = Deferred.fromCoroutine(sending)
                elif isinstance(sending, Failure):
                    sending = fail(sending)
                else:
                    sending = succeed(sending)
        except BaseException:
            sending = fail()
        self._in_flight.add(sending)
        sending.addCallbacks(
            self._sent,
            self._not_sent,
            callbackArgs=(sending, entry),
            errbackArgs=(sending, entry),
        )

    def _sent(self, result: Any, sending: Deferred, entry: _Entry) -> None:
        self._in_flight.discard(sending)
        entry.done.callback(result)

    def _not_sent(self, failure: Failure, sending: Deferred, entry: _Entry) -> None:
        self._in_flight.discard(sending)
        message_id = entry.message_id
        if message_id is not None and entry.seq is not None:
            # Given back to the bus (RetryLater): it is still queued.
            self._counted.add(message_id)
        entry.done.errback(failure)

    def _schedule_wakeup(self, delay: float) -> None:
        if self._wakeup is not None and self._wakeup.active():
            return
        self._wakeup = self.clock.callLater(delay, self._woken)

    def _woken(self) -> None:
        self._wakeup = None
        self._pump()

    def _cancel_wakeup(self) -> None:
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None


# -- what the API shows ---------------------------------------------------------------


#: Seconds a status read waits for the bus to report a queue's length.
QUEUE_LENGTH_TIMEOUT = 1.0


async def queue_status(
    bus: MessageBus,
    channel_id: str,
    *,
    scheduler: OutboundScheduler | None = None,
    queues: QueueStore | None = None,
    clock: Any = None,
) -> dict[str, Any]:
    """The channel's queue: ``length`` (waiting on the bus + buffered), its parts, and
    the per-priority counts kept in Redis. ``waiting`` and ``length`` are null when
    the bus cannot be asked."""
    if clock is None:
        from twisted.internet import reactor as clock
    try:
        # While the broker is away the bus would wait for it: the status shows null instead.
        waiting: int | None = await bus.queue_length(outbound_key(channel_id)).addTimeout(
            QUEUE_LENGTH_TIMEOUT, clock
        )
    except Exception as exc:  # noqa: BLE001 - show the channel without it
        log.info("Queue length of {id} unavailable: {error}", id=channel_id, error=exc)
        waiting = None
    buffered = scheduler.buffered if scheduler is not None else 0
    by_priority = None
    if queues is not None:
        if scheduler is not None:
            # What left the buffer is counted down before the counts are read.
            await scheduler.flush_taken()
        by_priority = await queues.counts(channel_id)
        # A message that passed through the buffer while we waited (its count-down still
        # pending) would be taken below zero by a reset: reset only when nothing moved.
        quiet = scheduler is None or (scheduler.buffered == 0 and not scheduler.taken_pending)
        if waiting == 0 and buffered == 0 and quiet and any(by_priority.values()):
            # Nothing is queued, whatever the counters say (a lost in-process queue,
            # a message counted twice): start them again from zero.
            await queues.reset_counts(channel_id)
            by_priority = dict.fromkeys(by_priority, 0)
    return {
        "length": None if waiting is None else waiting + buffered,
        "waiting": waiting,
        "buffered": buffered,
        "sending": scheduler.sending if scheduler is not None else 0,
        "by_priority": by_priority,
    }
