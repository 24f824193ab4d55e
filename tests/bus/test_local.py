"""LocalBus specifics beyond the contract (tests/bus/test_contract.py): how bodies are
kept, how deliveries are planned, and handlers' results. Time is a task.Clock; nothing
here waits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from junebug import messages
from junebug.bus import local
from junebug.bus.local import LocalBus


def sample(n: int = 0, **extra: Any) -> dict:
    return messages.user_message(
        to_addr="+27820001001",
        from_addr="+27820001002",
        transport_name="chan1",
        content=f"hello é ☃ {n}",
        **extra,
    )


def test_bodies_are_the_text_messages_encode_writes():
    clock = Clock()
    bus = LocalBus(clock)
    kept = [
        sample(),
        sample(helper_metadata={"when": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)}),
        messages.ack("m1", "smsc-1", transport_name="chan1"),
        messages.status("smpp", "down", "bind_failed", "cannot bind", details={"n": 3}),
    ]
    for message in kept:
        bus.publish("q", message)
    bodies = list(bus.queues["q"].waiting[0])
    assert bodies == [messages.encode(message).decode("ascii") for message in kept]
    assert all(body.isascii() for body in bodies)


def test_one_call_per_turn_serves_every_queue():
    clock = Clock()
    bus = LocalBus(clock)
    seen: list[tuple[str, str]] = []
    for key in ("a", "b", "c"):
        bus.consume(key, lambda m, key=key: seen.append((key, m["content"])))
    assert len(clock.getDelayedCalls()) == 1  # one for all three consumers
    clock.advance(0)
    for n in range(3):
        for key in ("c", "a", "b"):
            bus.publish(key, sample(n))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    # In the order the queues were scheduled, each queue's messages in order.
    assert seen == [("c", f"hello é ☃ {n}") for n in range(3)] + [
        ("a", f"hello é ☃ {n}") for n in range(3)
    ] + [("b", f"hello é ☃ {n}") for n in range(3)]
    assert clock.getDelayedCalls() == []


def test_messages_moved_to_a_priority_queue_are_delivered_once():
    """Published before the queue is declared with priorities (the consumer of a
    channel's outbound queue starts after the API queued messages): they move to the
    new queue, and the delivery planned for the old one does not hand them out too."""
    clock = Clock()
    bus = LocalBus(clock)
    for n in range(3):
        bus.publish("q", sample(n))
    seen: list[str] = []
    bus.consume("q", lambda m: seen.append(m["content"]), max_priority=5)
    for _ in range(3):
        clock.advance(0)
    assert sorted(seen) == [f"hello é ☃ {n}" for n in range(3)]
    assert len(bus.queues["q"]) == 0


def test_every_kind_of_handler_result(monkeypatch):
    """A plain value, a fired Deferred or a finished coroutine acknowledge the message;
    raising, a Failure returned or a failed Deferred give it back after RETRY_DELAY
    (as maybeDeferred would read them)."""
    monkeypatch.setattr(local, "RETRY_DELAY", 1.0)
    clock = Clock()
    bus = LocalBus(clock)
    calls: dict[str, int] = {}

    async def finished(message: dict) -> None:
        return None

    def raising(message: dict) -> None:
        raise ValueError("no")

    handlers: dict[str, Any] = {
        "plain": lambda m: 42,
        "deferred": lambda m: succeed(None),
        "coroutine": finished,
        "raises": raising,
        "failure": lambda m: Failure(ValueError("no")),
        "failed": lambda m: fail(ValueError("no")),
    }
    for name, handler in handlers.items():

        def counted(message: dict, name: str = name, handler: Any = handler) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return handler(message)

        bus.consume(name, counted, prefetch=1)
        bus.publish(name, sample())
    clock.advance(0)
    assert calls == dict.fromkeys(handlers, 1)
    clock.advance(1.0)
    clock.advance(0)
    again = {name: 2 if name in ("raises", "failure", "failed") else 1 for name in handlers}
    assert calls == again
    for name in handlers:
        consumer = bus.queues[name].consumers[0]
        assert consumer.in_flight == set()  # nothing left in the handler


def test_a_pending_handler_holds_its_place_until_it_fires():
    clock = Clock()
    bus = LocalBus(clock)
    waiting: list[Deferred] = []

    def handler(message: dict) -> Deferred:
        waiting.append(Deferred())
        return waiting[-1]

    bus.consume("q", handler, prefetch=1)
    bus.publish("q", sample(1))
    bus.publish("q", sample(2))
    clock.advance(0)
    clock.advance(0)
    assert len(waiting) == 1 and len(bus.queues["q"]) == 1
    consumer = bus.queues["q"].consumers[0]
    assert consumer.in_flight == {waiting[0]}
    waiting[0].callback(None)
    clock.advance(0)
    assert len(waiting) == 2 and len(bus.queues["q"]) == 0
