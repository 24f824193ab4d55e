"""The ack and receipt paths of SmppChannel against the real Redis: which commands they
send (round trips), the keys and TTLs they leave, and the submit_sm bytes written.

The channel's connection is a StringTransport and its timers a task.Clock; only Redis
is real (its replies are awaited, nothing sleeps).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from junebug.bus.local import LocalBus
from junebug.transports.smpp import pdu as smpp
from junebug.transports.smpp import protocol as smpp_protocol
from junebug.transports.smpp.constants import CommandStatus
from junebug.transports.smpp.ids import MessageIdStore, PartsOutcome
from junebug.transports.smpp.receipts import id_candidates
from tests.transports.smpp.wire import Wire

CHANNEL = "smppids"
ID_TTL = 5000
FINAL_TTL = 1000
PARTS_TTL = 500


class CountingRedis:
    """The Redis connection, noting the name of every command the channel sends."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self.commands: list[str] = []

    def __getattr__(self, name: str) -> Any:
        command = getattr(self._redis, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.commands.append(name)
            return command(*args, **kwargs)

        return call

    def take(self) -> list[str]:
        taken, self.commands = self.commands, []
        return taken


class GatedBus(LocalBus):
    """A LocalBus whose acks are published only once ``gate`` fires (when set)."""

    gate: Deferred | None = None

    def publish(self, routing_key: str, message: dict[str, Any], priority: Any = None) -> Any:
        published = super().publish(routing_key, message, priority)
        if self.gate is not None and message.get("event_type") == "ack":
            gate = self.gate
            return gate.addCallback(lambda _: published)
        return published


class RedisWire(Wire):
    """A Wire whose channel keeps its ids in the real Redis, counting the commands it sends,
    and which keeps every Deferred of work the channel starts in the background."""

    bus_type = GatedBus

    def __init__(self, tmp_path: Any, redis: Any, key_prefix: str, **config: Any) -> None:
        self.redis = CountingRedis(redis)
        self.prefix = f"{key_prefix}:{CHANNEL}:smpp:"
        super().__init__(
            tmp_path,
            CHANNEL,
            redis=self.redis,
            redis_prefix=f"{key_prefix}:",
            window_size=4,
            third_party_id_expiry=ID_TTL,
            final_dr_third_party_id_expiry=FINAL_TTL,
            completed_multipart_info_expiry=PARTS_TTL,
            **config,
        )
        #: Every Deferred of work the channel started in the background.
        self.tasks: list[Deferred] = []
        #: Those of the deliver_sm (receipts) it was given.
        self.deliveries: list[Deferred] = []
        spawn = self.channel._spawn

        def spawned(coroutine: Any) -> Deferred:
            task = spawn(coroutine)
            self.tasks.append(task)
            return task

        self.channel._spawn = spawned
        deliver = self.channel.smpp_deliver

        def delivering(pdu: smpp.PDU) -> Deferred:
            task = deliver(pdu)
            self.tasks.append(task)
            self.deliveries.append(task)
            return task

        self.channel.smpp_deliver = delivering

    def receipt(self, smsc_id: str, state: str = "DELIVRD") -> smpp.PDU:
        text = (
            f"id:{smsc_id} sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
            f"stat:{state} err:000 text:hello"
        )
        return smpp.make_pdu(
            "deliver_sm",
            9000 + len(self.tasks),
            esm_class=0x04,
            source_addr="27820000001",
            destination_addr="12345",
            short_message=text.encode("ascii"),
        )

    async def settle(self) -> None:
        """Wait for everything the channel started (background tasks, receipts)."""
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            for task in tasks:
                await task


@pytest.fixture
def wire_factory(tmp_path, redis, key_prefix):
    made: list[RedisWire] = []

    def make(**config: Any) -> RedisWire:
        wire = RedisWire(tmp_path / str(len(made)), redis, key_prefix, **config)
        made.append(wire)
        wire.connect()
        wire.redis.take()
        return wire

    yield make
    for wire in made:
        wire.log.close()


async def ttl(redis: Any, key: str) -> int:
    return int(await redis.ttl(key))


# -- single-part: the ack is one SETEX, the receipt one script --------------------------


@pytest_twisted.ensureDeferred
async def test_single_part_ack_and_receipt_take_one_round_trip_each(wire_factory, redis):
    wire = wire_factory()
    message, sending = wire.send("hello")
    (submit,) = wire.submits()
    wire.receive(smpp.make_response(submit, message_id="00001A2B"))
    await sending
    assert wire.redis.take() == ["setex"]
    key = f"{wire.prefix}remote_message:1a2b"
    assert await redis.get(key) == message["message_id"]
    assert FINAL_TTL < await ttl(redis, key) <= ID_TTL

    wire.receive(wire.receipt("6699"))  # the same id, in decimal
    await wire.settle()
    assert wire.redis.take() == ["eval"]
    ack, report = wire.events()
    assert (ack["event_type"], ack["sent_message_id"]) == ("ack", "00001A2B")
    assert (report["event_type"], report["delivery_status"]) == ("delivery_report", "delivered")
    assert report["user_message_id"] == message["message_id"]
    # The final receipt shortened the id's TTL, as before; no parts key was made.
    assert 0 < await ttl(redis, key) <= FINAL_TTL
    assert await redis.exists(f"{wire.prefix}parts:{message['message_id']}") == 0
    (resp,) = [p for p in wire.written() if p.command == "deliver_sm_resp"]
    assert resp.command_status == CommandStatus.ESME_ROK


@pytest_twisted.ensureDeferred
async def test_a_pending_receipt_leaves_the_ttl_alone(wire_factory, redis):
    wire = wire_factory()
    message, sending = wire.send("hello")
    (submit,) = wire.submits()
    wire.receive(smpp.make_response(submit, message_id="abc"))
    await sending
    wire.receive(wire.receipt("abc", "ENROUTE"))
    await wire.settle()
    assert wire.redis.take() == ["setex", "eval"]
    assert FINAL_TTL < await ttl(redis, f"{wire.prefix}remote_message:abc") <= ID_TTL
    statuses = [e.get("delivery_status") for e in wire.events()]
    assert statuses == [None, "pending"]


@pytest_twisted.ensureDeferred
async def test_a_receipt_for_an_unknown_id_is_held_and_leaves_nothing_in_redis(
    wire_factory, redis, key_prefix
):
    wire = wire_factory(delivery_report_hold_time=30)
    wire.receive(wire.receipt("feed"))
    await wire.settle()
    assert wire.redis.take() == ["eval"]
    assert await redis.keys(f"{key_prefix}:*") == []
    assert len(wire.channel.held) == 1
    wire.clock.advance(30)  # the last try finds nothing either
    await wire.settle()
    assert wire.redis.take() == ["eval"]
    assert not wire.channel.held
    assert wire.events() == []


@pytest_twisted.ensureDeferred
async def test_a_receipt_before_its_submit_sm_resp_is_held_then_matched(wire_factory, redis):
    wire = wire_factory()
    message, sending = wire.send("hello")
    (submit,) = wire.submits()
    wire.receive(wire.receipt("77"))  # overtakes the submit_sm_resp
    await wire.settle()
    assert len(wire.channel.held) == 1
    wire.receive(smpp.make_response(submit, message_id="77"))
    await sending
    await wire.settle()
    assert wire.redis.take() == ["eval", "setex", "eval"]
    events = wire.events()
    assert [e["event_type"] for e in events] == ["ack", "delivery_report"]
    assert events[1]["user_message_id"] == message["message_id"]
    assert not wire.channel.held
    assert 0 < await ttl(redis, f"{wire.prefix}remote_message:77") <= FINAL_TTL


@pytest_twisted.ensureDeferred
async def test_a_receipt_while_the_ack_is_published_is_reported_after_it(wire_factory, redis):
    wire = wire_factory()
    wire.bus.gate = Deferred()
    message, sending = wire.send("hello")
    (submit,) = wire.submits()
    wire.receive(smpp.make_response(submit, message_id="5150"))
    await redis.ping()  # answered after the SETEX: the ack now waits for the bus
    assert message["message_id"] in wire.channel.outgoing
    wire.receive(wire.receipt("5150", "UNDELIV"))
    (handled,) = wire.deliveries
    await handled  # not settle(): the ack's task waits for the gate
    # Looked up (and its TTL shortened) already; reported once the ack is out.
    assert wire.redis.take() == ["setex", "eval"]
    assert [e["event_type"] for e in wire.events()] == ["ack"]
    assert 0 < await ttl(redis, f"{wire.prefix}remote_message:5150") <= FINAL_TTL
    wire.bus.gate.callback(None)
    await sending
    await wire.settle()
    assert wire.redis.take() == []
    (report,) = wire.events()
    assert (report["delivery_status"], report["user_message_id"]) == (
        "failed",
        message["message_id"],
    )


# -- multipart: acks aggregate, one report, the parts' TTLs ---------------------------------


@pytest_twisted.ensureDeferred
async def test_multipart_ack_aggregates_and_receipts_report_once(wire_factory, redis):
    wire = wire_factory(submit_short_message_processor_config={"send_multipart_udh": True})
    text = "".join(f"{i:03d} " for i in range(100))  # 400 characters: 3 parts
    message, sending = wire.send(text)
    await redis.ping()  # answered after the reference's INCR
    submits = wire.submits()
    assert len(submits) == 3
    for number, submit in enumerate(submits):
        wire.receive(smpp.make_response(submit, message_id=f"p{number}"))
    await sending
    assert wire.redis.take() == ["incr", "setex", "setex", "setex", "hset", "expire"]
    parts_key = f"{wire.prefix}parts:{message['message_id']}"
    assert await redis.hgetall(parts_key) == {"total": "3"}
    assert FINAL_TTL < await ttl(redis, parts_key) <= ID_TTL
    for number in range(3):
        assert await redis.get(f"{wire.prefix}remote_message:p{number}") == message["message_id"]
    (ack,) = wire.events()
    assert ack["sent_message_id"] == "p0,p1,p2"

    for number in range(3):
        wire.receive(wire.receipt(f"p{number}"))
        await wire.settle()
    (report,) = wire.events()
    assert (report["delivery_status"], report["user_message_id"]) == (
        "delivered",
        message["message_id"],
    )
    # Only the receipt that completed the message shortened the TTLs.
    assert FINAL_TTL < await ttl(redis, f"{wire.prefix}remote_message:p0") <= ID_TTL
    assert 0 < await ttl(redis, f"{wire.prefix}remote_message:p2") <= FINAL_TTL
    assert 0 < await ttl(redis, parts_key) <= PARTS_TTL
    assert (await redis.hgetall(parts_key))["reported:delivered"] == "1"


@pytest_twisted.ensureDeferred
async def test_a_single_part_message_on_a_udh_channel_takes_no_reference(wire_factory, redis):
    wire = wire_factory(submit_short_message_processor_config={"send_multipart_udh": True})
    _, sending = wire.send("short")
    (submit,) = wire.submits()
    assert submit.params["esm_class"] == 0
    wire.receive(smpp.make_response(submit, message_id="s1"))
    await sending
    assert wire.redis.take() == ["setex"]
    assert await redis.get(f"{wire.prefix}multipart_reference") is None
    _, sending = wire.send("x" * 200)
    await redis.ping()  # answered after the reference's INCR
    parts = wire.submits()
    assert [p.params["short_message"][:6] for p in parts] == [
        bytes([5, 0, 3, 1, 2, 1]),
        bytes([5, 0, 3, 1, 2, 2]),
    ]
    assert await redis.get(f"{wire.prefix}multipart_reference") == "1"


# -- the store's lookup against the separate calls it replaces ------------------------------

# The reference: the separate GET / HGET / EXPIRE commands a receipt's lookup would send
# one at a time, each awaited, which RECEIPT_LOOKUP runs in one round trip.


async def _old_lookup(redis: Any, prefix: str, smsc_id: str) -> tuple[str, str] | None:
    """GET of each form of the id, best first, until one is known: ``(message id, form)``."""
    for candidate in id_candidates(smsc_id):
        if not candidate:
            continue
        message_id = await redis.get(f"{prefix}remote_message:{candidate}")
        if message_id is not None:
            if isinstance(message_id, bytes):
                message_id = message_id.decode("utf-8")
            return message_id, candidate
    return None


async def _old_part_receipt_whole_message_check(redis: Any, prefix: str, message_id: str) -> bool:
    """HGET of the message's part count: whether it was sent in parts."""
    return await redis.hget(f"{prefix}parts:{message_id}", "total") is not None


async def _old_expire(
    redis: Any, prefix: str, normalised: str, message_id: str, ttl: int, parts_ttl: int
) -> None:
    """EXPIRE of the id's key, then of the message's parts key."""
    await redis.expire(f"{prefix}remote_message:{normalised}", ttl)
    await redis.expire(f"{prefix}parts:{message_id}", parts_ttl)


async def _old_path(
    redis: Any, store: MessageIdStore, receipt_id: str, status: str
) -> tuple[str, str, PartsOutcome | None]:
    """A receipt handled with the separate commands: ``(message id, form, outcome)``, the
    outcome None for a message sent whole."""
    prefix = store.prefix
    found = await _old_lookup(redis, prefix, receipt_id)
    assert found is not None
    message_id, normalised = found
    outcome = None
    if await _old_part_receipt_whole_message_check(redis, prefix, message_id):
        outcome = await store.part_receipt(message_id, normalised, status)
        final = outcome.final
    else:
        final = status in ("delivered", "failed")
    if final:
        await _old_expire(redis, prefix, normalised, message_id, FINAL_TTL, PARTS_TTL)
    return message_id, normalised, outcome


async def _state(redis: Any, keys: list[str]) -> list[tuple[Any, int]]:
    found = []
    for key in keys:
        kind = await redis.type(key)
        value = await redis.hgetall(key) if kind == "hash" else await redis.get(key)
        found.append((value, int(await redis.ttl(key))))
    return found


@pytest.mark.parametrize(
    ("ids", "receipt_id", "status"),
    [
        (["1A2B"], "6699", "delivered"),
        (["1A2B"], "1a2b", "pending"),
        (["42"], "2a", "failed"),
        (["m1", "m2"], "m2", "delivered"),
        (["m1", "m2"], "m1", "failed"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_find_receipt_leaves_what_the_separate_calls_left(
    redis, key_prefix, ids, receipt_id, status
):
    """The separate GET / HGET / EXPIRE commands (the reference) and find_receipt +
    part_receipt + expire for messages in parts (the channel's path) leave the same
    values and TTLs."""
    old = MessageIdStore(redis, f"{key_prefix}:old:")
    new = MessageIdStore(redis, f"{key_prefix}:new:")
    final = status in ("delivered", "failed")
    for store in (old, new):
        await store.remember(ids, "msg", ID_TTL)

    message_id, normalised, outcome = await _old_path(redis, old, receipt_id, status)

    found = await new.find_receipt(receipt_id, final, FINAL_TTL, PARTS_TTL)
    assert (found.message_id, found.normalised) == (message_id, normalised)
    assert found.multipart == (len(ids) > 1)
    if found.multipart:
        new_outcome = await new.part_receipt(message_id, normalised, status)
        assert new_outcome == outcome
        if new_outcome.final:
            await new.expire(normalised, message_id, FINAL_TTL, PARTS_TTL)
    else:
        assert outcome is None

    suffixes = [f"remote_message:{i.lower()}" for i in ids] + ["parts:msg"]
    old_state = await _state(redis, [f"{key_prefix}:old:{s}" for s in suffixes])
    new_state = await _state(redis, [f"{key_prefix}:new:{s}" for s in suffixes])
    assert [value for value, _ in new_state] == [value for value, _ in old_state]
    for (_, old_ttl), (_, new_ttl) in zip(old_state, new_state, strict=True):
        assert abs(old_ttl - new_ttl) <= 1
    if final and len(ids) == 1:
        assert 0 < new_state[0][1] <= FINAL_TTL


@pytest_twisted.ensureDeferred
async def test_find_receipt_of_an_unknown_or_empty_id(redis, key_prefix):
    store = MessageIdStore(redis, f"{key_prefix}:ids:")
    assert await store.find_receipt("abc", True, FINAL_TTL, PARTS_TTL) is None
    assert await store.find_receipt("  ", True, FINAL_TTL, PARTS_TTL) is None
    assert await redis.keys(f"{key_prefix}:*") == []


# -- submit_sm: encoded once, the same bytes ------------------------------------------------


@pytest.mark.parametrize(
    ("config", "text", "fields"),
    [
        ({}, "hello", {}),
        ({"registered_delivery": False, "source_addr_ton": 5, "service_type": "CMT"}, "x", {}),
        (
            {
                "submit_short_message_processor_config": {
                    "submit_sm_encoding": "ucs2",
                    "submit_sm_data_coding": 8,
                }
            },
            "héllo ☃",
            {},
        ),
        ({"submit_short_message_processor_config": {"send_multipart_udh": True}}, "u" * 400, {}),
        ({"submit_short_message_processor_config": {"send_multipart_sar": True}}, "s" * 400, {}),
        ({"submit_short_message_processor_config": {"send_long_messages": True}}, "l" * 400, {}),
        (
            {},
            "menu",
            {
                "transport_type": "ussd",
                "session_event": "close",
                "transport_metadata": {"session_info": "0a10"},
            },
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_submit_sm_is_encoded_once_and_written_as_before(
    wire_factory, redis, monkeypatch, config, text, fields
):
    encoded: list[int] = []
    encode = smpp.encode

    def counting_encode(pdu: smpp.PDU) -> bytes:
        if pdu.command == "submit_sm":
            encoded.append(pdu.sequence_number)
        return encode(pdu)

    monkeypatch.setattr(smpp, "encode", counting_encode)
    wire = wire_factory(**config)
    wire.send(text, **fields)
    await redis.ping()  # answered after the INCR of a long message's reference
    frames = smpp.PDUFramer().feed(wire.raw())
    assert len(frames) == (3 if len(text) == 400 and "send_long_messages" not in str(config) else 1)
    submissions = sorted(
        (e.submission for e in wire.channel.protocol.outstanding.values()),
        key=lambda s: s.order,
    )
    assert len(frames) == len(submissions) == len(encoded)
    for frame, seq, submission in zip(
        frames, sorted(wire.channel.protocol.outstanding), submissions, strict=True
    ):
        # What the protocol wrote before: make_pdu + encode with the sequence number.
        expected = encode(
            smpp.make_pdu("submit_sm", seq, tlvs=submission.tlvs, **submission.params)
        )
        assert frame == expected
        assert smpp.decode(frame).sequence_number == seq

    # Sent again after a reconnection: new sequence numbers, still not encoded again.
    before = len(encoded)
    wire.transport.loseConnection()
    wire.connect()
    resent = wire.submits()
    assert len(encoded) == before
    assert len(resent) == len(submissions)
    for pdu, submission in zip(resent, submissions, strict=True):
        assert smpp.encode(pdu) == encode(
            smpp.make_pdu(
                "submit_sm", pdu.sequence_number, tlvs=submission.tlvs, **submission.params
            )
        )


def test_default_submit_sm_bytes(tmp_path):
    """The bytes of a plain submit_sm, spelled out (not computed by the code under test)."""
    wire = Wire(tmp_path, CHANNEL)
    wire.connect()
    wire.send("hi")
    body = (
        b"\x00"  # service_type
        + b"\x00\x00"  # source_addr_ton, source_addr_npi
        + b"12345\x00"
        + b"\x00\x01"  # dest_addr_ton, dest_addr_npi
        + b"27820000001\x00"
        + b"\x00\x00\x00"  # esm_class, protocol_id, priority_flag
        + b"\x00\x00"  # schedule_delivery_time, validity_period
        + b"\x01"  # registered_delivery
        + b"\x00\x00\x00"  # replace_if_present_flag, data_coding, sm_default_msg_id
        + b"\x02hi"
    )
    header = (16 + len(body)).to_bytes(4, "big") + bytes.fromhex("00000004 00000000 00000002")
    assert wire.raw() == header + body
    wire.log.close()


# -- wire logging ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pdus_are_not_described_without_wire_logging(wire_factory, monkeypatch):
    def refuse(pdu: smpp.PDU) -> dict:
        raise AssertionError("describe_pdu called with wire_logging off")

    monkeypatch.setattr(smpp_protocol, "describe_pdu", refuse)
    wire = wire_factory()
    _, sending = wire.send("hello")
    (submit,) = wire.submits()
    wire.receive(smpp.make_response(submit, message_id="d1"))
    await sending
    wire.receive(wire.receipt("d1"))
    await wire.settle()
    assert [e["event_type"] for e in wire.events()] == ["ack", "delivery_report"]


@pytest_twisted.ensureDeferred
async def test_wire_logging_describes_the_submit_sm_as_sent(wire_factory):
    wire = wire_factory()
    wire.log.wire_logging = True
    wire.send("hello")
    (submit,) = wire.submits()
    wire.receive(smpp.make_response(submit, message_id="w1"))
    with open(wire.log.path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    logged = [
        line for line in lines if (line.get("direction"), line["message"]) == ("out", "submit_sm")
    ]
    assert len(logged) == 1
    assert logged[0]["pdu"]["sequence_number"] == submit.sequence_number
    assert logged[0]["pdu"]["params"]["short_message"] == b"hello".hex()
    assert logged[0]["pdu"]["params"]["destination_addr"] == "27820000001"
    inbound = [line["message"] for line in lines if line.get("direction") == "in"]
    assert inbound == ["submit_sm_resp"]
    await wire.settle()
