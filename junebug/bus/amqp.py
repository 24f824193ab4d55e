"""The RabbitMQ message bus, spoken through txAMQP.

Wire conventions follow vumi, so applications written for the original Junebug keep
working: one durable direct exchange ``vumi``; one durable queue per routing key,
named after the key and bound to it; persistent messages (delivery mode 2 and no
other property, except ``priority`` when the caller gives one) whose body is the
vumi JSON.

How it behaves:

* Publishing uses publisher confirms: ``publish()`` fires when the broker has taken
  responsibility for the message. While the connection is down, publishes wait for
  it to come back; one that is not confirmed within ``publish_timeout`` seconds of
  the call fails with ``BusUnavailable``. Messages in flight when the connection
  dropped are sent again after reconnecting (at-least-once).
* Each consumer has its own AMQP channel with ``basic.qos`` set to its prefetch, so
  the broker never has more than ``prefetch`` unacknowledged messages out to it. A
  message is acked after the handler's Deferred succeeds; after a failure it is
  rejected with ``requeue`` once ``retry_delay`` has passed, and the broker offers it
  again. A body that is not a vumi message is logged and acked (dropped).
* ``pause()`` cancels the subscription (``basic.cancel``) and ``resume()`` subscribes
  again; messages delivered before the cancel are still handled and acked.
* When the connection drops, the bus reconnects with capped exponential backoff and
  jitter, declares the exchange and every queue it knows again, and re-subscribes
  every consumer in its paused or running state. The broker redelivers whatever was
  unacknowledged. ``add_state_listener`` reports each up/down transition.

txAMQP loads the protocol from an XML description. The wheel on PyPI ships none, so
this module builds the subset of AMQP 0-9-1 it uses (``_SPEC``) and hands it to
``txamqp.spec.load_string``. It also decodes incoming frames itself, so message
bodies stay bytes and header tables of every 0-9-1 field type can be read (txAMQP's
own decoder knows only four and would drop the connection on the others).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import struct
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from decimal import Decimal
from io import BytesIO
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredLock,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp import spec as txspec
from txamqp.client import ChannelClosed, Closed, TwistedDelegate
from txamqp.codec import Codec
from txamqp.connection import Body, Frame, Header, Heartbeat, Method
from txamqp.content import Content
from txamqp.protocol import AMQClient

from junebug import messages
from junebug.bus.base import (
    EXCHANGE,
    MAX_PRIORITY,
    BusUnavailable,
    Consumer,
    Handler,
    MessageBus,
)

log = Logger()

NOT_FOUND = 404
PRECONDITION_FAILED = 406

# --- the protocol subset ---------------------------------------------------------------
#
# One line per class ("class <name> <id>", then its content properties) and per
# method ("<name> <id> [content] [><response>]", then its fields): AMQP 0-9-1 as
# RabbitMQ speaks it, limited to what this module sends or may receive.

_PROTOCOL = """
class connection 10
  start 10 >start-ok version-major:octet version-minor:octet server-properties:table
    mechanisms:longstr locales:longstr
  start-ok 11 client-properties:table mechanism:shortstr response:longstr locale:shortstr
  tune 30 >tune-ok channel-max:short frame-max:long heartbeat:short
  tune-ok 31 channel-max:short frame-max:long heartbeat:short
  open 40 >open-ok virtual-host:shortstr capabilities:shortstr insist:bit
  open-ok 41 known-hosts:shortstr
  close 50 >close-ok reply-code:short reply-text:shortstr class-id:short method-id:short
  close-ok 51
class channel 20
  open 10 >open-ok out-of-band:shortstr
  open-ok 11 channel-id:longstr
  flow 20 >flow-ok active:bit
  flow-ok 21 active:bit
  close 40 >close-ok reply-code:short reply-text:shortstr class-id:short method-id:short
  close-ok 41
class exchange 40
  declare 10 >declare-ok ticket:short exchange:shortstr type:shortstr passive:bit durable:bit
    auto-delete:bit internal:bit nowait:bit arguments:table
  declare-ok 11
class queue 50
  declare 10 >declare-ok ticket:short queue:shortstr passive:bit durable:bit exclusive:bit
    auto-delete:bit nowait:bit arguments:table
  declare-ok 11 queue:shortstr message-count:long consumer-count:long
  bind 20 >bind-ok ticket:short queue:shortstr exchange:shortstr routing-key:shortstr
    nowait:bit arguments:table
  bind-ok 21
  purge 30 >purge-ok ticket:short queue:shortstr nowait:bit
  purge-ok 31 message-count:long
  delete 40 >delete-ok ticket:short queue:shortstr if-unused:bit if-empty:bit nowait:bit
  delete-ok 41 message-count:long
class basic 60 content-type:shortstr content-encoding:shortstr headers:table
    delivery-mode:octet priority:octet correlation-id:shortstr reply-to:shortstr
    expiration:shortstr message-id:shortstr timestamp:timestamp type:shortstr
    user-id:shortstr app-id:shortstr cluster-id:shortstr
  qos 10 >qos-ok prefetch-size:long prefetch-count:short global:bit
  qos-ok 11
  consume 20 >consume-ok ticket:short queue:shortstr consumer-tag:shortstr no-local:bit
    no-ack:bit exclusive:bit nowait:bit arguments:table
  consume-ok 21 consumer-tag:shortstr
  cancel 30 >cancel-ok consumer-tag:shortstr nowait:bit
  cancel-ok 31 consumer-tag:shortstr
  publish 40 content ticket:short exchange:shortstr routing-key:shortstr mandatory:bit
    immediate:bit
  return 50 content reply-code:short reply-text:shortstr exchange:shortstr routing-key:shortstr
  deliver 60 content consumer-tag:shortstr delivery-tag:longlong redelivered:bit
    exchange:shortstr routing-key:shortstr
  ack 80 delivery-tag:longlong multiple:bit
  reject 90 delivery-tag:longlong requeue:bit
  nack 120 delivery-tag:longlong multiple:bit requeue:bit
class confirm 85
  select 10 >select-ok nowait:bit
  select-ok 11
"""

_CONSTANTS = {
    "frame-method": 1,
    "frame-header": 2,
    "frame-body": 3,
    "frame-heartbeat": 8,
    "frame-min-size": 4096,
    "frame-end": 206,
    "reply-success": 200,
}


def _spec_xml() -> str:
    """The txAMQP spec document for ``_PROTOCOL``."""
    # Fold continuation lines (deeper indentation) into the line they continue.
    entries: list[str] = []
    for line in _PROTOCOL.strip("\n").splitlines():
        if line.startswith("    "):
            entries[-1] += " " + line.strip()
        else:
            entries.append(line)
    parts = ['<?xml version="1.0"?><amqp major="0" minor="9" port="5672">']
    parts += [f'<constant name="{n}" value="{v}"/>' for n, v in _CONSTANTS.items()]
    for entry in entries:
        words = entry.split()
        if words[0] == "class":
            if len(parts) > len(_CONSTANTS) + 1:
                parts.append("</class>")
            name, index, fields = words[1], words[2], words[3:]
            parts.append(f'<class name="{name}" index="{index}" handler="{name}">')
            klass = name
        else:
            name, index, rest = words[0], words[1], words[2:]
            content = ' content="1"' if rest[:1] == ["content"] else ""
            rest = rest[1:] if content else rest
            responses = [w[1:] for w in rest if w.startswith(">")]
            fields = [w for w in rest if not w.startswith(">")]
            # txAMQP makes a method's docstring from its text: it must have some.
            parts.append(f'<method name="{name}" index="{index}"{content}>{klass}.{name}')
            parts += [f'<response name="{r}"/>' for r in responses]
        for field in fields:
            field_name, field_type = field.split(":")
            parts.append(f'<field name="{field_name}" type="{field_type}"/>')
        if words[0] != "class":
            parts.append("</method>")
    parts.append("</class></amqp>")
    return "".join(parts)


_SPEC = txspec.load_string(_spec_xml(), "junebug-amqp-0-9-1")


# --- frame decoding ----------------------------------------------------------------------


class _Decoder(Codec):
    """txAMQP's codec with a field-table decoder for every AMQP 0-9-1 value type."""

    def decode_table(self) -> dict[str, Any]:
        size = self.decode_long()
        end = self.nread + size
        table: dict[str, Any] = {}
        while self.nread < end:
            key = self.decode_shortstr()
            table[key] = self._value()
        return table

    def _value(self) -> Any:
        kind = self.read(1)
        simple = {
            b"t": "!B",
            b"b": "!b",
            b"B": "!B",
            b"s": "!h",
            b"u": "!H",
            b"I": "!i",
            b"i": "!I",
            b"l": "!q",
            b"L": "!Q",
            b"f": "!f",
            b"d": "!d",
            b"T": "!Q",
        }
        if kind in simple:
            value = self.unpack(simple[kind])
            return bool(value) if kind == b"t" else value
        if kind == b"S":
            return self.decode_longstr()
        if kind == b"x":
            return self.dec_bytes("!L")
        if kind == b"F":
            return self.decode_table()
        if kind == b"A":
            size = self.decode_long()
            end = self.nread + size
            items = []
            while self.nread < end:
                items.append(self._value())
            return items
        if kind == b"D":
            scale = self.unpack("!B")
            return Decimal(self.unpack("!i")).scaleb(-scale)
        if kind == b"V":
            return None
        raise ValueError(f"unknown AMQP field type {kind!r}")


def _decode_method(payload: bytes) -> Method:
    codec = _Decoder(BytesIO(payload))
    klass = _SPEC.classes.byid[codec.decode_short()]
    method = klass.methods.byid[codec.decode_short()]
    return Method(method, *[codec.decode(f.type) for f in method.fields])


def _decode_header(payload: bytes) -> Header:
    codec = _Decoder(BytesIO(payload))
    klass = _SPEC.classes.byid[codec.decode_short()]
    weight = codec.decode_short()
    size = codec.decode_longlong()
    present: list[bool] = []
    while True:
        flags = codec.decode_short()
        present += [bool(flags & (1 << bit)) for bit in range(15, 0, -1)]
        if not flags & 1:
            break
    properties = {
        field.name: codec.decode(field.type)
        for field, here in zip(klass.fields, present, strict=False)
        if here
    }
    return Header(klass, weight, size, **properties)


# --- the txAMQP client -----------------------------------------------------------------


class _Delegate(TwistedDelegate):
    """Routes what the broker sends on its own initiative to the bus."""

    def connection_start(self, ch: Any, msg: Any) -> None:
        ch.connection_start_ok(
            client_properties={"product": "junebug"},
            mechanism=self.client.mechanism,
            response=self.client.response,
            locale=self.client.locale,
        )

    def basic_deliver(self, ch: Any, msg: Any) -> None:
        consumer = getattr(ch, "junebug_consumer", None)
        if consumer is not None:
            consumer._deliver(ch, msg)

    def basic_ack(self, ch: Any, msg: Any) -> None:
        self.client.bus._confirmed(self.client, ch, msg.delivery_tag, msg.multiple, True)

    def basic_nack(self, ch: Any, msg: Any) -> None:
        self.client.bus._confirmed(self.client, ch, msg.delivery_tag, msg.multiple, False)

    def basic_cancel(self, ch: Any, msg: Any) -> None:
        log.warn("The broker cancelled consumer {tag}", tag=msg.consumer_tag)

    def basic_return_(self, ch: Any, msg: Any) -> None:
        log.warn("The broker returned a message for {key}", key=msg.routing_key)


class _Client(AMQClient):
    def __init__(self, bus: AmqpBus) -> None:
        super().__init__(_Delegate(), bus.vhost, _SPEC, heartbeat=bus.heartbeat, clock=bus.clock)
        self.bus = bus
        self.admin_lock = DeferredLock()
        self.admin_channel: Any = None
        self.publisher: Any = None
        self.confirm_seq = 0
        self.unconfirmed: dict[int, _Publish] = {}
        self._free_ids: list[int] = []
        self._next_id = 1

    def allocate_channel_id(self) -> int:
        if self._free_ids:
            return self._free_ids.pop()
        self._next_id += 1
        return self._next_id - 1

    def release_channel(self, ch: Any) -> None:
        if self.channels.pop(ch.id, None) is not None:
            self._free_ids.append(ch.id)

    def connectionMade(self) -> None:
        # Nagle's algorithm holds small frames back waiting for an ACK: ~40 ms a message.
        self.transport.setTcpNoDelay(True)
        super().connectionMade()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.bus._connection_lost(self, reason)

    def channel_failed(self, channel: Any, reason: Failure) -> None:
        self.release_channel(channel)
        self.bus._channel_failed(self, channel, reason)

    def _unpack_frame(self, data: bytes) -> Frame:
        kind, channel, size = struct.unpack_from("!BHI", data)
        payload = data[7 : 7 + size]
        if data[7 + size] != self.FRAME_END:
            raise ValueError("AMQP frame without its end marker")
        name = txspec.pythonize(self.spec.constants.byid[kind].name)
        if name == Frame.METHOD:
            return Frame(channel, _decode_method(payload))
        if name == Frame.HEADER:
            return Frame(channel, _decode_header(payload))
        if name == Frame.BODY:
            return Frame(channel, Body(payload))
        return Frame(channel, Heartbeat())


class _ClientFactory(Factory):
    noisy = False

    def __init__(self, bus: AmqpBus) -> None:
        self.bus = bus

    def buildProtocol(self, addr: Any) -> _Client:
        client = _Client(self.bus)
        client.factory = self
        return client


def _reply_code(exc: BaseException) -> int | None:
    reason = exc.args[0] if exc.args else None
    return getattr(reason, "reply_code", None) if reason is not None else None


def _call(handler: Handler, message: dict[str, Any]) -> Deferred:
    def invoke() -> Any:
        result = handler(message)
        if hasattr(result, "__await__") and not isinstance(result, Deferred):
            return Deferred.fromCoroutine(result)
        return result

    return maybeDeferred(invoke)


def _quiet(d: Any) -> None:
    """Swallow the outcome of a fire-and-forget AMQP call (the connection may be gone)."""
    if isinstance(d, Deferred):
        d.addErrback(lambda f: None)


class _Publish:
    _order = itertools.count()

    def __init__(self, routing_key: str, body: bytes, priority: int | None) -> None:
        self.seq = next(self._order)
        self.routing_key = routing_key
        self.body = body
        self.priority = priority
        self.done = Deferred()
        self.timer: Any = None

    def finish(self, error: Exception | None = None) -> None:
        if self.done.called:
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(error)


# --- consumers -------------------------------------------------------------------------


class AmqpConsumer(Consumer):
    """One subscription: its own AMQP channel, prefetch, and paused state."""

    def __init__(
        self,
        bus: AmqpBus,
        routing_key: str,
        handler: Handler,
        prefetch: int,
        max_priority: int | None,
        paused: bool,
    ) -> None:
        self.bus = bus
        self.routing_key = routing_key
        self.handler = handler
        self.prefetch = max(1, prefetch)
        self.max_priority = max_priority
        self.stopped = False
        self._paused = paused
        self._channel: Any = None
        self._tag: str | None = None
        self._lock = DeferredLock()
        self._in_flight: set[Deferred] = set()
        self._retries: dict[Any, Callable[[], None]] = {}
        self._stopping: Deferred | None = None

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        self._paused = True
        self._sync()

    def resume(self) -> None:
        self._paused = False
        self._sync()

    def wait_settled(self) -> Deferred:
        """Fires once the broker has seen every earlier pause()/resume() (AMQP only)."""
        return self._lock.run(lambda: succeed(None))

    def stop(self) -> Deferred:
        if self._stopping is None:
            self.stopped = True
            self.bus._consumers.discard(self)
            self._stopping = Deferred.fromCoroutine(self._stop())
        result = Deferred()
        self._stopping.addBoth(lambda r: (result.callback(None), r)[1])
        return result

    async def _stop(self) -> None:
        await self._sync()
        if self._in_flight:
            await DeferredList(list(self._in_flight), consumeErrors=True)
        channel, self._channel = self._channel, None
        self._cancel_retries()
        if channel is not None:
            try:
                await self.bus._close_channel(channel)
            except Exception:
                log.failure("Closing the channel of consumer {key} failed", key=self.routing_key)

    def _sync(self) -> Deferred:
        """Bring the broker's subscription in line with the paused/stopped state."""
        return self._lock.run(lambda: Deferred.fromCoroutine(self._sync_locked()))

    async def _sync_locked(self) -> None:
        channel = self._channel
        if channel is None or channel.closed:
            return
        wanted = not (self._paused or self.stopped)
        try:
            if wanted and self._tag is None:
                self._tag = f"{self.routing_key}.{uuid.uuid4().hex[:12]}"
                await channel.basic_consume(queue=self.routing_key, consumer_tag=self._tag)
            elif not wanted and self._tag is not None:
                tag, self._tag = self._tag, None
                await channel.basic_cancel(consumer_tag=tag)
        except Exception as exc:
            # The connection or channel went away; reconnecting subscribes again.
            log.info("Subscription change on {key} interrupted: {e}", key=self.routing_key, e=exc)

    async def _subscribe(self, client: _Client) -> None:
        """Open this consumer's channel on ``client`` and subscribe unless paused."""
        await self._lock.acquire()
        try:
            current = self._channel
            if self.stopped or (
                current is not None and not current.closed and current.client is client
            ):
                return
            self._cancel_retries()
            channel = await self.bus._open_channel(client)
            await channel.basic_qos(prefetch_size=0, prefetch_count=self.prefetch, global_=False)
            channel.junebug_consumer = self
            self._channel, self._tag = channel, None
            await self._sync_locked()
        finally:
            self._lock.release()

    def _detach(self, client: _Client) -> None:
        if self._channel is not None and self._channel.client is client:
            self._channel, self._tag = None, None
            self._cancel_retries()

    def _cancel_retries(self) -> None:
        for call in list(self._retries):
            if call.active():
                call.cancel()
        self._retries.clear()

    def _deliver(self, channel: Any, msg: Any) -> None:
        if self.stopped:
            return  # left unacknowledged: closing the channel hands it back to the queue
        tag = msg.delivery_tag
        body = msg.content.body if msg.content is not None else b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            message = messages.decode(body)
        except messages.InvalidMessage as exc:
            log.error("Dropping invalid message on {key}: {error}", key=self.routing_key, error=exc)
            self._settle(channel, tag, ack=True)
            return
        done = _call(self.handler, message)
        self._in_flight.add(done)

        def succeeded(_: Any) -> None:
            self._settle(channel, tag, ack=True)

        def failed(failure: Failure) -> None:
            log.failure(
                "Handler for {key} failed; the message will be delivered again",
                failure,
                key=self.routing_key,
            )
            call = self.bus.clock.callLater(self.bus.retry_delay, lambda: requeue(call))
            self._retries[call] = requeue

        def requeue(call: Any) -> None:
            self._retries.pop(call, None)
            self._settle(channel, tag, ack=False)

        done.addCallbacks(succeeded, failed)
        done.addBoth(lambda _: self._in_flight.discard(done))

    def _settle(self, channel: Any, tag: int, ack: bool) -> None:
        # Delivery tags belong to the channel that delivered: after a reconnect the
        # broker has already requeued the message, and acking on another channel
        # would be a protocol error.
        if channel is not self._channel or channel.closed:
            return
        if ack:
            _quiet(channel.basic_ack(delivery_tag=tag, multiple=False))
        else:
            _quiet(channel.basic_reject(delivery_tag=tag, requeue=True))


# --- the bus ---------------------------------------------------------------------------


class AmqpBus(MessageBus):
    """``MessageBus`` over RabbitMQ (AMQP 0-9-1), compatible with vumi's conventions.

    ``prefetch`` caps the prefetch of every consumer (``amqp_prefetch_count``).
    ``connect_timeout`` bounds each connection attempt and how long ``start()`` keeps
    trying. ``publish_timeout`` bounds how long a publish (or any other call) waits
    for the broker before failing with ``BusUnavailable``. ``retry_delay`` is the
    back-off before a message whose handler failed is handed back to the queue.
    Reconnection waits ``reconnect_initial`` seconds, doubling to ``reconnect_max``,
    each delay scaled by a random factor in [0.5, 1].
    """

    external = True

    def __init__(
        self,
        hostname: str = "127.0.0.1",
        port: int = 5672,
        vhost: str = "/",
        username: str = "guest",
        password: str = "guest",
        *,
        clock: Any = None,
        reactor: Any = None,
        prefetch: int = 20,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        retry_delay: float = 1.0,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
        heartbeat: int = 0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.hostname = hostname
        self.port = port
        self.vhost = vhost
        self.username = username
        self.password = password
        self.prefetch = prefetch
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.retry_delay = retry_delay
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.heartbeat = heartbeat

        self._client: _Client | None = None
        self._connected = False
        self._running = False
        self._attempts = 0
        self._attempt: Deferred | None = None
        self._reconnect_call: Any = None
        self._waiters: list[Deferred] = []
        self._listeners: list[Callable[[bool, str], Any]] = []
        #: Every queue this bus declared: routing key -> max_priority.
        self._queues: dict[str, int | None] = {}
        self._declaring: dict[str, list[Deferred]] = {}
        self._consumers: set[AmqpConsumer] = set()
        self._outbox: deque[_Publish] = deque()
        self._random = random.Random()

    # -- state ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def add_state_listener(self, callback: Callable[[bool, str], Any]) -> None:
        """Call ``callback(connected, reason)`` on every connection up/down transition."""
        self._listeners.append(callback)

    def remove_state_listener(self, callback: Callable[[bool, str], Any]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _notify(self, connected: bool, reason: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(connected, reason)
            except Exception:
                log.failure("AMQP state listener failed")

    def _describe(self) -> str:
        return f"amqp://{self.hostname}:{self.port}{self.vhost}"

    # -- connecting -------------------------------------------------------------------

    def start(self) -> Deferred:
        if not self._running:
            self._running = True
            self._connect()
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        try:
            await self._wait_connected(self.connect_timeout)
        except BusUnavailable:
            self._running = False
            self._cancel_connecting()
            raise

    def _connect(self) -> None:
        self._reconnect_call = None
        if not self._running or self._attempt is not None or self._client is not None:
            return
        attempt = Deferred.fromCoroutine(self._open_connection())
        attempt.addTimeout(self.connect_timeout, self.clock)
        self._attempt = attempt
        attempt.addCallbacks(self._connection_made, self._connection_failed)

    async def _open_connection(self) -> _Client:
        endpoint = TCP4ClientEndpoint(
            self.reactor, self.hostname, self.port, timeout=self.connect_timeout
        )
        client = await endpoint.connect(_ClientFactory(self))
        try:
            await client.authenticate(self.username, self.password, mechanism="PLAIN")
            await self._admin(
                client,
                lambda ch: ch.exchange_declare(exchange=EXCHANGE, type="direct", durable=True),
            )
            for key, max_priority in list(self._queues.items()):
                await self._declare_queue(client, key, max_priority)
            client.publisher = await self._open_channel(client)
            await client.publisher.confirm_select()
            for consumer in list(self._consumers):
                await consumer._subscribe(client)
            if client.closed:
                raise net_error.ConnectionLost("lost while setting up")
        except BaseException:
            if client.transport is not None and client.transport.connected:
                client.transport.abortConnection()
            raise
        return client

    def _connection_made(self, client: _Client) -> None:
        self._attempt = None
        if not self._running:
            client.transport.abortConnection()
            return
        self._client = client
        self._connected = True
        self._attempts = 0
        log.info("Connected to {url}", url=self._describe())
        self._notify(True, f"connected to {self._describe()}")
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)
        self._flush()

    def _connection_failed(self, failure: Failure) -> None:
        self._attempt = None
        if failure.check(CancelledError) and not self._running:
            return
        log.warn(
            "Cannot connect to {url}: {error}",
            url=self._describe(),
            error=failure.getErrorMessage() or failure.type.__name__,
        )
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if not self._running or self._reconnect_call is not None:
            return
        ceiling = min(self.reconnect_max, self.reconnect_initial * 2**self._attempts)
        self._attempts += 1
        delay = ceiling * self._random.uniform(0.5, 1.0)
        self._reconnect_call = self.clock.callLater(delay, self._connect)

    def _cancel_connecting(self) -> None:
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        if self._attempt is not None:
            self._attempt.cancel()

    def _connection_lost(self, client: _Client, reason: Failure) -> None:
        for consumer in list(self._consumers):
            consumer._detach(client)
        # Whatever the broker has not confirmed is sent again after reconnecting.
        retry = [p for p in client.unconfirmed.values() if not p.done.called]
        client.unconfirmed.clear()
        if retry:
            self._outbox = deque(sorted([*self._outbox, *retry], key=lambda p: p.seq))
        if client is not self._client:
            return
        self._client = None
        self._connected = False
        message = reason.getErrorMessage() if reason is not None else "connection lost"
        log.warn("Lost the connection to {url}: {error}", url=self._describe(), error=message)
        self._notify(False, message)
        self._schedule_reconnect()

    def _channel_failed(self, client: _Client, channel: Any, reason: Failure) -> None:
        if channel is client.admin_channel:
            return  # expected after a passive declare of a missing queue; reopened on use
        # A publisher or consumer channel closed by a channel error: start over cleanly.
        log.warn("AMQP channel {id} closed by the broker: {r}", id=channel.id, r=reason.value)
        client.transport.loseConnection()

    def _wait_connected(self, timeout: float) -> Deferred:
        if self._connected:
            return succeed(None)
        if not self._running:
            return fail(BusUnavailable("the AMQP bus is not running"))
        waiter = Deferred()
        self._waiters.append(waiter)

        def expire() -> None:
            if not waiter.called:
                self._waiters.remove(waiter)
                waiter.errback(
                    BusUnavailable(f"no connection to {self._describe()} within {timeout}s")
                )

        timer = self.clock.callLater(timeout, expire)
        waiter.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        return waiter

    async def _ready_client(self) -> _Client:
        await self._wait_connected(self.publish_timeout)
        assert self._client is not None
        return self._client

    # -- channels and declarations ------------------------------------------------------

    async def _open_channel(self, client: _Client) -> Any:
        channel = await client.channel(client.allocate_channel_id())
        await channel.channel_open()
        return channel

    async def _close_channel(self, channel: Any) -> None:
        if not channel.closed:
            with contextlib.suppress(Closed):
                await channel.channel_close(reply_code=200, reply_text="done")
            channel.close(None)
        channel.client.release_channel(channel)

    async def _admin(self, client: _Client, operation: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run one declare/purge/delete on ``client``'s admin channel, one at a time.

        A channel error (a passive declare of a missing queue, say) closes the admin
        channel; the next call opens a new one.
        """
        await client.admin_lock.acquire()
        try:
            channel = client.admin_channel
            if channel is None or channel.closed:
                channel = client.admin_channel = await self._open_channel(client)
            return await operation(channel)
        finally:
            client.admin_lock.release()

    async def _declare_queue(self, client: _Client, key: str, max_priority: int | None) -> None:
        arguments = {"x-max-priority": int(max_priority)} if max_priority else {}
        try:
            await self._admin(
                client, lambda ch: ch.queue_declare(queue=key, durable=True, arguments=arguments)
            )
        except ChannelClosed as exc:
            if _reply_code(exc) != PRECONDITION_FAILED:
                raise
            # The queue exists with other arguments (made by an older Junebug, a
            # vumi application, or without a priority): use it as it is.
            log.warn("Queue {key} exists with other arguments; using it as it is", key=key)
            await self._admin(client, lambda ch: ch.queue_declare(queue=key, passive=True))
        await self._admin(
            client, lambda ch: ch.queue_bind(queue=key, exchange=EXCHANGE, routing_key=key)
        )
        self._queues[key] = max_priority

    def _ensure_queue(self, client: _Client, key: str, priority: int | None) -> Deferred:
        """Declare ``key``'s queue before its first publish, so the message has a home.

        A queue first published to with a priority becomes a priority queue. Callers
        publishing to the same new key share one declaration and resume in call order.
        """
        mine = Deferred()
        waiters = self._declaring.get(key)
        if waiters is not None:
            waiters.append(mine)
            return mine
        waiters = self._declaring[key] = [mine]

        def finished(result: Any) -> None:
            self._declaring.pop(key, None)
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)

        max_priority = MAX_PRIORITY if priority is not None else None
        Deferred.fromCoroutine(self._declare_queue(client, key, max_priority)).addBoth(finished)
        return mine

    # -- publishing -------------------------------------------------------------------

    def publish(
        self, routing_key: str, message: dict[str, Any], priority: int | None = None
    ) -> Deferred:
        try:
            body = messages.encode(message)
        except Exception as exc:
            return fail(exc)
        return self._publish_body(routing_key, body, priority)

    def _publish_body(self, routing_key: str, body: bytes, priority: int | None) -> Deferred:
        """Publish an already encoded body (tests use it to send invalid ones)."""
        if not self._running:
            return fail(BusUnavailable("the AMQP bus is not running"))
        item = _Publish(routing_key, body, priority)
        item.timer = self.clock.callLater(self.publish_timeout, self._publish_expired, item)
        self._outbox.append(item)
        self._flush()
        return item.done

    def _publish_expired(self, item: _Publish) -> None:
        if item in self._outbox:
            self._outbox.remove(item)
        item.finish(
            BusUnavailable(
                f"{self._describe()} did not take the message within {self.publish_timeout}s"
            )
        )

    def _flush(self) -> None:
        while self._outbox and self._connected and self._client is not None:
            item = self._outbox.popleft()
            if item.done.called:
                continue
            client = self._client
            if item.routing_key in self._queues:
                self._send(client, item)
            else:
                declared = self._ensure_queue(client, item.routing_key, item.priority)
                declared.addCallbacks(
                    lambda _, item=item, client=client: self._send(client, item),
                    lambda f, item=item: self._declare_failed(item, f),
                )

    def _declare_failed(self, item: _Publish, failure: Failure) -> None:
        if failure.check(Closed, net_error.ConnectionLost, net_error.ConnectionDone):
            self._requeue(item)
        else:
            item.finish(BusUnavailable(f"cannot declare {item.routing_key}: {failure.value}"))

    def _requeue(self, item: _Publish) -> None:
        if item.done.called or item in self._outbox:
            return
        self._outbox = deque(sorted([*self._outbox, item], key=lambda p: p.seq))
        self._flush()

    def _send(self, client: _Client, item: _Publish) -> None:
        if item.done.called:
            return
        if client is not self._client or client.publisher is None or client.publisher.closed:
            self._requeue(item)
            return
        properties: dict[str, Any] = {"delivery-mode": 2}
        if item.priority is not None:
            properties["priority"] = min(max(int(item.priority), 0), 255)
        content = Content(item.body, properties=properties)
        _quiet(
            client.publisher.basic_publish(
                exchange=EXCHANGE, routing_key=item.routing_key, content=content
            )
        )
        client.confirm_seq += 1
        client.unconfirmed[client.confirm_seq] = item

    def _confirmed(self, client: _Client, channel: Any, tag: int, multiple: bool, ok: bool) -> None:
        if channel is not client.publisher:
            return
        unconfirmed = client.unconfirmed
        if multiple:
            # Tags were added in ascending order: take from the front up to ``tag``, so
            # each message is looked at once however many are outstanding.
            items = []
            while unconfirmed:
                first = next(iter(unconfirmed))
                if first > tag:
                    break
                items.append(unconfirmed.pop(first))
        else:
            item = unconfirmed.pop(tag, None)
            items = [] if item is None else [item]
        for item in items:
            if ok:
                item.finish()
            else:
                item.finish(BusUnavailable(f"the broker refused a message for {item.routing_key}"))

    # -- consuming and queue management ---------------------------------------------------

    def consume(
        self,
        routing_key: str,
        handler: Handler,
        *,
        prefetch: int = 20,
        max_priority: int | None = None,
        paused: bool = False,
    ) -> Deferred:
        return Deferred.fromCoroutine(
            self._consume(routing_key, handler, prefetch, max_priority, paused)
        )

    async def _consume(
        self,
        routing_key: str,
        handler: Handler,
        prefetch: int,
        max_priority: int | None,
        paused: bool,
    ) -> AmqpConsumer:
        consumer = AmqpConsumer(
            self, routing_key, handler, min(prefetch, self.prefetch), max_priority, paused
        )
        client = await self._ready_client()
        try:
            await self._declare_queue(client, routing_key, max_priority)
        except Closed as exc:
            raise BusUnavailable(f"lost the broker while declaring {routing_key}") from exc
        self._consumers.add(consumer)
        # If the connection drops now, the reconnection subscribes this consumer.
        with contextlib.suppress(Closed):
            await consumer._subscribe(client)
        return consumer

    async def _queue_call(self, routing_key: str, operation: Callable[[Any], Any]) -> Any:
        client = await self._ready_client()
        try:
            return await self._admin(client, operation)
        except ChannelClosed as exc:
            if _reply_code(exc) == NOT_FOUND:
                return None
            raise
        except Closed as exc:
            raise BusUnavailable(f"lost the broker during an operation on {routing_key}") from exc

    def queue_length(self, routing_key: str) -> Deferred:
        async def length() -> int:
            reply = await self._queue_call(
                routing_key, lambda ch: ch.queue_declare(queue=routing_key, passive=True)
            )
            return 0 if reply is None else reply.message_count

        return Deferred.fromCoroutine(length())

    def purge(self, routing_key: str) -> Deferred:
        async def purge() -> int:
            reply = await self._queue_call(
                routing_key, lambda ch: ch.queue_purge(queue=routing_key)
            )
            return 0 if reply is None else reply.message_count

        return Deferred.fromCoroutine(purge())

    def delete_queue(self, routing_key: str) -> Deferred:
        async def delete() -> None:
            stops = [c.stop() for c in list(self._consumers) if c.routing_key == routing_key]
            await DeferredList(stops, consumeErrors=True)
            self._queues.pop(routing_key, None)
            await self._queue_call(routing_key, lambda ch: ch.queue_delete(queue=routing_key))

        return Deferred.fromCoroutine(delete())

    # -- stopping ---------------------------------------------------------------------

    def stop(self) -> Deferred:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await DeferredList([c.stop() for c in list(self._consumers)], consumeErrors=True)
        # Give messages already sent their confirmation (each is bounded by its timer).
        client = self._client
        if client is not None and client.unconfirmed:
            pending = [p.done for p in client.unconfirmed.values()]
            await DeferredList(pending, consumeErrors=True)
        self._running = False
        self._cancel_connecting()
        outbox, self._outbox = self._outbox, deque()
        for item in outbox:
            item.finish(BusUnavailable("the AMQP bus stopped"))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(BusUnavailable("the AMQP bus stopped"))
        client, self._client = self._client, None
        if client is None:
            return
        was_connected, self._connected = self._connected, False
        gone = client.disconnected.wait()
        try:
            await client.close(within=min(self.connect_timeout, 5))
        except Exception:
            client.transport.abortConnection()
        await gone
        if was_connected:
            self._notify(False, "stopped")
