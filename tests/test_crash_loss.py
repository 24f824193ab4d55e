"""No acknowledged message is lost when jb dies: jb (on the shared Redis and RabbitMQ)
and jb-smsc as child processes, an smpp channel between them, messages sent through
the API while the SMSC answers every submit with ESME_RTHROTTLED, jb killed with
SIGKILL while it holds some of them, started again: every message reaches the SMSC
(a few twice at most) and every event_url hears ``submitted`` and
``delivery_succeeded``.

An outbound message is acknowledged on the bus only once the SMSC answered its
submit_sm, so what jb held when it died is still on the RabbitMQ queue.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from junebug.bus.amqp import AmqpBus
from junebug.bus.base import channel_keys
from junebug.store import redis as redis_store
from junebug.testing.smsc import SmscProcess
from tests.helpers import ApiClient, JbProcess, free_port, within, write_jb_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:txamqp"),
]

SYSTEM_ID = "crashesme"
PASSWORD = "crashpw"
WINDOW = 10
#: Messages sent before the SMSC stops answering, and while it does.
BEFORE, DURING = 30, 40


async def poll(condition: Any, seconds: float, what: str) -> None:
    deadline = reactor.seconds() + seconds
    while not await condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)


class Deployment:
    """jb on Redis (a unique key prefix) + RabbitMQ, with a config file jb restarts from."""

    def __init__(self, tmp_path: Any) -> None:
        self.tmp_path = tmp_path
        self.prefix = f"jbcrash-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.config = write_jb_config(tmp_path, self.port, redis_prefix=self.prefix, amqp_port=5672)
        self.api = ApiClient(f"http://127.0.0.1:{self.port}")
        self.jb: JbProcess | None = None
        self.channel_id: str | None = None

    async def start_jb(self) -> None:
        self.jb = await JbProcess("-c", str(self.config), cwd=str(self.tmp_path)).start()

    async def kill_jb(self) -> None:
        jb, self.jb = self.jb, None
        jb.transport.signalProcess("KILL")
        await within(jb.ended, 30)

    async def clean_up(self) -> None:
        if self.jb is not None:
            await self.jb.stop()
        if self.channel_id is not None:
            bus = AmqpBus("127.0.0.1", 5672, reactor=reactor)
            await within(bus.start(), 20)
            try:
                for key in channel_keys(self.channel_id):
                    await within(bus.delete_queue(key), 20)
            finally:
                await bus.stop()
        connection = await redis_store.connect("127.0.0.1", 6379)
        keys = await connection.keys(f"{self.prefix}:*")
        if keys:
            await connection.delete(keys)
        await connection.disconnect()


@pytest_twisted.async_yield_fixture
async def deployment(tmp_path):
    deployment = Deployment(tmp_path)
    yield deployment
    await deployment.clean_up()


@pytest_twisted.ensureDeferred
async def test_messages_held_when_jb_is_killed_are_sent_after_it_restarts(deployment, receiver):
    smsc = SmscProcess(system_id=SYSTEM_ID, password=PASSWORD, dr_delay=0, timeout=20)
    await smsc.start()
    try:
        await deployment.start_jb()
        api = deployment.api
        code, body = await api.post(
            "/channels/",
            {
                "type": "smpp",
                "label": "crash",
                "mo_url": receiver.url("/mo"),
                "config": {
                    "twisted_endpoint": f"tcp:host=127.0.0.1:port={smsc.port}",
                    "system_id": SYSTEM_ID,
                    "password": PASSWORD,
                    "window_size": WINDOW,
                    "throttle_delay": 0.05,
                    "initial_reconnect_delay": 0.05,
                    "max_reconnect_delay": 0.5,
                },
            },
        )
        assert code == 201, body
        channel_id = deployment.channel_id = body["result"]["id"]
        await smsc.wait_for_bind(timeout=20)

        ids: list[str] = []

        async def send(index: int) -> None:
            code, body = await api.post(
                f"/channels/{channel_id}/messages/",
                {
                    "to": f"2782{index:07d}",
                    "from": "12345",
                    "content": f"message {index}",
                    "event_url": receiver.url(f"/events/{index}"),
                },
            )
            assert code == 201, body
            ids.append(body["result"]["message_id"])

        for index in range(BEFORE):
            await send(index)

        async def accepted() -> list[dict]:
            return await smsc.submits()

        async def first_batch_accepted() -> bool:
            return len(await accepted()) >= BEFORE

        await poll(first_batch_accepted, 30, "the first messages accepted by the SMSC")

        # The SMSC stops taking anything: jb keeps what it took off the queue in hand.
        await smsc.throttle(600)
        for index in range(BEFORE, BEFORE + DURING):
            await send(index)

        async def throttling() -> bool:
            rejected = await smsc.submits(include_rejected=True)
            return sum(s["command_status"] == "ESME_RTHROTTLED" for s in rejected) >= 5

        await poll(throttling, 30, "jb trying to send while throttled")
        code, body = await api.get(f"/channels/{channel_id}")
        assert code == 200, body
        queue = body["result"]["status"]["queue"]
        assert queue["waiting"] is not None and queue["waiting"] < DURING, queue  # jb took some

        await deployment.kill_jb()
        await smsc.throttle(0)
        await deployment.start_jb()

        total = BEFORE + DURING

        async def all_accepted() -> bool:
            texts = {s["text"] for s in await accepted()}
            return len(texts) >= total

        await poll(all_accepted, 60, "every message accepted by the SMSC after the restart")

        wanted = {f"/events/{i}" for i in range(total)}

        def found() -> dict[str, Counter]:
            events: dict[str, Counter] = {}
            for request in receiver.received:
                if request.path.startswith("/events/"):
                    events.setdefault(request.path, Counter())[request.json["event_type"]] += 1
            return events

        async def all_events() -> bool:
            events = found()
            return all(
                events.get(path, {}).get("submitted") and events[path].get("delivery_succeeded")
                for path in wanted
            )

        await poll(all_events, 60, "submitted + delivery_succeeded for every message")

        texts = Counter(s["text"] for s in await accepted())
        assert set(texts) == {f"message {i}" for i in range(total)}  # none lost
        resends = sum(count - 1 for count in texts.values())
        assert resends <= WINDOW, f"{resends} messages submitted twice, more than window_size"
        assert set(found()) == wanted
        print(f"\ncrash loss: {total} messages, {resends} submitted twice")
    finally:
        await smsc.stop()
