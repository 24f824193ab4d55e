"""Channel type smpp: the shared contract against an SMSC double, plus SMPP specifics."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from junebug import messages
from junebug.bus.base import outbound_key
from junebug.store import redis as redis_store
from junebug.transports.smpp.constants import CommandStatus
from junebug.transports.smpp.transport import SmppChannel
from tests.conftest import REDIS_HOST, REDIS_PORT
from tests.helpers import free_port, within
from tests.transports.contract import TransportContract
from tests.transports.harness import TransportDriver, TransportHarness
from tests.transports.smpp.smsc_double import FakeSmsc

SHORT_CODE = "12345"


class SmppDriver(TransportDriver):
    transport_class = SmppChannel
    unknown_address = "00000"
    invalid_configs = [
        ("no system_id", {"twisted_endpoint": "tcp:host=h:port=1", "password": "p"}, "system_id"),
        ("no endpoint", {"system_id": "s", "password": "p"}, "twisted_endpoint"),
        (
            "bad endpoint",
            {"system_id": "s", "password": "p", "twisted_endpoint": "nonsense:1"},
            "not a valid client endpoint",
        ),
        (
            "two long message styles",
            {
                "system_id": "s",
                "password": "p",
                "twisted_endpoint": "tcp:host=h:port=1",
                "submit_short_message_processor_config": {
                    "send_multipart_sar": True,
                    "send_multipart_udh": True,
                },
            },
            "mutually exclusive",
        ),
        (
            "unknown codec",
            {
                "system_id": "s",
                "password": "p",
                "twisted_endpoint": "tcp:host=h:port=1",
                "submit_short_message_processor_config": {"submit_sm_encoding": "klingon"},
            },
            "submit_sm_encoding",
        ),
        (
            "data_coding override key",
            {
                "system_id": "s",
                "password": "p",
                "twisted_endpoint": "tcp:host=h:port=1",
                "deliver_short_message_processor_config": {"data_coding_overrides": {"x": "a"}},
            },
            "data_coding_overrides",
        ),
        (
            "regex without groups",
            {
                "system_id": "s",
                "password": "p",
                "twisted_endpoint": "tcp:host=h:port=1",
                "delivery_report_processor_config": {"delivery_report_regex": "id:(.*)"},
            },
            "named groups",
        ),
        (
            "bad status name",
            {
                "system_id": "s",
                "password": "p",
                "twisted_endpoint": "tcp:host=h:port=1",
                "deliver_sm_decoding_error": "ESME_NOPE",
            },
            "deliver_sm_decoding_error",
        ),
        (
            "wrong type",
            {"system_id": "s", "password": "p", "twisted_endpoint": "tcp:h", "mt_tps": "x"},
            "mt_tps",
        ),
    ]

    def __init__(self, **config: Any) -> None:
        self.extra_config = config
        self.key_prefix = f"jbtest-{uuid.uuid4().hex[:12]}"
        self.smsc = FakeSmsc(port=free_port())
        self.smsc.refuse.add(self.unknown_address)
        self.redis: Any = None
        self.numbers = iter(range(27820000001, 27829999999))

    def config(self) -> dict[str, Any]:
        return {
            "twisted_endpoint": self.smsc.endpoint(),
            "system_id": "esme",
            "password": "secret",
            "initial_reconnect_delay": 0.05,
            "max_reconnect_delay": 0.2,
            **self.extra_config,
        }

    def harness_options(self) -> dict[str, Any]:
        return {"redis": self.redis, "redis_prefix": f"{self.key_prefix}:"}

    async def start_peer(self) -> None:
        self.redis = await redis_store.connect(REDIS_HOST, REDIS_PORT)
        await self.smsc.start()

    async def stop_peer(self) -> None:
        await self.smsc.stop()
        keys = await self.redis.keys(f"{self.key_prefix}:*")
        if keys:
            await self.redis.delete(keys)
        await self.redis.disconnect()

    async def connect_user(self, harness: TransportHarness) -> str:
        await wait_status(harness, "bound")
        return str(next(self.numbers))

    def address(self, user: str) -> str:
        return user

    async def user_sends(self, user: str, text: str) -> None:
        self.smsc.send_mo(user, SHORT_CODE, text)

    async def user_receives(self, user: str) -> str:
        while True:
            submit = await self.smsc.next_submit()
            if submit["destination_addr"] == user:
                return submit["text"]


async def wait_status(harness: TransportHarness, status_type: str) -> dict:
    """Skip status events until one of ``status_type``."""
    while True:
        status = await harness.next_status()
        if status["type"] == status_type:
            return status


async def next_event_of(harness: TransportHarness, event_type: str) -> dict:
    while True:
        event = await harness.next_event()
        if event["event_type"] == event_type:
            return event


def settle(seconds: float = 0.05) -> Any:
    return deferLater(reactor, seconds, lambda: None)


class TestSmppContract(TransportContract):
    @pytest.fixture
    def driver(self):
        return SmppDriver()


# -- fixtures for the specific tests --------------------------------------------------------


@pytest.fixture
def driver_config() -> dict[str, Any]:
    return {}


@pytest_twisted.async_yield_fixture
async def smpp(driver_config, tmp_path):
    """(driver, harness) with the channel bound to the SMSC double."""
    driver = SmppDriver(**driver_config)
    await driver.start_peer()
    harness = await TransportHarness(
        SmppChannel, driver.config(), str(tmp_path / "logs"), **driver.harness_options()
    ).start()
    await wait_status(harness, "bound")
    yield driver, harness
    await harness.stop()
    await driver.stop_peer()


def log_lines(harness: TransportHarness) -> list[dict]:
    with open(harness.log.path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# -- outbound, acks, receipts ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ack_carries_the_smsc_id_and_the_receipt_becomes_a_delivery_report(smpp):
    driver, harness = smpp
    sent = await harness.send("27820000001", "hello")
    submit = await driver.smsc.next_submit()
    assert submit["registered_delivery"] == 1
    assert (submit["source_addr"], submit["destination_addr"]) == ("", "27820000001")
    ack = await harness.next_event()
    assert ack["event_type"] == "ack"
    assert ack["sent_message_id"] == submit["smsc_message_id"]
    driver.smsc.send_receipt(submit["smsc_message_id"], "DELIVRD")
    report = await harness.next_event()
    assert report["event_type"] == "delivery_report"
    assert report["user_message_id"] == sent["message_id"]
    assert report["delivery_status"] == "delivered"
    assert report["transport_metadata"] == {"smpp_delivery_status": "DELIVRD"}
    resp = await within(driver.smsc.deliver_resps.get())
    assert resp.command_status == CommandStatus.ESME_ROK


@pytest.mark.parametrize("receipt_format", ["decimal", "HEX0"])
@pytest_twisted.ensureDeferred
async def test_receipts_match_whatever_form_the_id_takes(smpp, receipt_format):
    driver, harness = smpp
    driver.smsc.receipt_id_format = receipt_format
    driver.smsc.auto_receipt = "UNDELIV"
    sent = await harness.send("27820000001", "hello")
    await next_event_of(harness, "ack")
    report = await next_event_of(harness, "delivery_report")
    assert (report["user_message_id"], report["delivery_status"]) == (sent["message_id"], "failed")


@pytest_twisted.ensureDeferred
async def test_receipt_in_tlvs_is_preferred(smpp):
    driver, harness = smpp
    sent = await harness.send("27820000001", "hello")
    submit = await driver.smsc.next_submit()
    await next_event_of(harness, "ack")
    driver.smsc.send_receipt(submit["smsc_message_id"], "EXPIRED", tlvs=True)
    report = await next_event_of(harness, "delivery_report")
    assert (report["user_message_id"], report["delivery_status"]) == (sent["message_id"], "failed")
    assert report["transport_metadata"] == {"smpp_delivery_status": "EXPIRED"}


@pytest_twisted.ensureDeferred
async def test_receipt_overtaking_its_submit_sm_resp_is_held_not_dropped(smpp):
    driver, harness = smpp
    driver.smsc.silent = True
    sent = await harness.send("27820000001", "hello")
    while not driver.smsc.unanswered:
        await settle()
    driver.smsc.send_receipt("1000", "DELIVRD")  # the id the SMSC is about to give
    await within(driver.smsc.deliver_resps.get())
    driver.smsc.answer_unanswered()
    ack = await harness.next_event()
    assert (ack["event_type"], ack["sent_message_id"]) == ("ack", "1000")
    report = await harness.next_event()
    assert (report["event_type"], report["user_message_id"]) == (
        "delivery_report",
        sent["message_id"],
    )


@pytest_twisted.ensureDeferred
async def test_stored_id_mapping_has_third_party_id_expiry(smpp):
    driver, harness = smpp
    await harness.send("27820000001", "hello")
    submit = await driver.smsc.next_submit()
    await next_event_of(harness, "ack")
    key = (
        f"{driver.key_prefix}:{harness.channel_id}:smpp:remote_message:{submit['smsc_message_id']}"
    )
    assert 0 < await driver.redis.ttl(key) <= 604800
    driver.smsc.send_receipt(submit["smsc_message_id"], "DELIVRD")
    await next_event_of(harness, "delivery_report")
    assert 0 < await driver.redis.ttl(key) <= 3600


@pytest.mark.parametrize(
    "driver_config",
    [{"submit_short_message_processor_config": {"send_multipart_udh": True}}],
)
@pytest_twisted.ensureDeferred
async def test_long_message_in_udh_parts_is_acked_once_and_reported_once(smpp):
    driver, harness = smpp
    text = "".join(f"{i:03d} " for i in range(100))  # 400 characters
    sent = await harness.send("27820000001", text)
    parts = [await driver.smsc.next_submit() for _ in range(3)]
    assert [p["udh"].seqnum for p in parts] == [1, 2, 3]
    assert all(p["esm_class"] & 0x40 for p in parts)
    assert "".join(p["text"] for p in parts) == text
    ack = await harness.next_event()
    assert ack["event_type"] == "ack"
    assert ack["sent_message_id"] == ",".join(sorted(p["smsc_message_id"] for p in parts))
    for part in parts:
        driver.smsc.send_receipt(part["smsc_message_id"], "DELIVRD")
    report = await harness.next_event()
    assert (report["delivery_status"], report["user_message_id"]) == (
        "delivered",
        sent["message_id"],
    )
    await settle(0.2)
    assert harness.events.pending == []


@pytest.mark.parametrize(
    "driver_config",
    [{"submit_short_message_processor_config": {"send_multipart_sar": True}}],
)
@pytest_twisted.ensureDeferred
async def test_long_message_with_a_refused_part_is_nacked(smpp):
    driver, harness = smpp
    driver.smsc.refuse.add("27820000009")
    sent = await harness.send("27820000009", "x" * 300)
    nack = await harness.next_event()
    assert (nack["event_type"], nack["user_message_id"]) == ("nack", sent["message_id"])
    assert nack["nack_reason"] == "ESME_RINVDSTADR"
    sar = driver.smsc.all_submits[0]["sar"]
    assert sar["sar_total_segments"] == 3


@pytest.mark.parametrize(
    "driver_config",
    [{"submit_short_message_processor_config": {"send_long_messages": True}}],
)
@pytest_twisted.ensureDeferred
async def test_long_message_in_message_payload(smpp):
    driver, harness = smpp
    await harness.send("27820000001", "y" * 500)
    submit = await driver.smsc.next_submit()
    assert submit["text"] == "y" * 500
    assert submit["pdu"].params["short_message"] == b""


@pytest.mark.parametrize(
    "driver_config",
    [
        {
            "submit_short_message_processor_config": {
                "submit_sm_encoding": "ucs2",
                "submit_sm_data_coding": 8,
            }
        }
    ],
)
@pytest_twisted.ensureDeferred
async def test_configured_encoding_and_data_coding(smpp):
    driver, harness = smpp
    await harness.send("27820000001", "Привет ✓")
    submit = await driver.smsc.next_submit()
    assert (submit["data_coding"], submit["text"]) == (8, "Привет ✓")


@pytest.mark.parametrize(
    "driver_config",
    [{"submit_short_message_processor_config": {"submit_sm_encoding": "ascii"}}],
)
@pytest_twisted.ensureDeferred
async def test_text_the_encoding_cannot_carry_is_nacked(smpp):
    driver, harness = smpp
    sent = await harness.send("27820000001", "naïve")
    nack = await harness.next_event()
    assert (nack["event_type"], nack["user_message_id"]) == ("nack", sent["message_id"])
    assert "ascii" in nack["nack_reason"]


@pytest.mark.parametrize("driver_config", [{"disable_ack": True, "disable_delivery_report": True}])
@pytest_twisted.ensureDeferred
async def test_disable_ack_and_delivery_report(smpp):
    driver, harness = smpp
    await harness.send("27820000001", "hello")
    submit = await driver.smsc.next_submit()
    driver.smsc.send_receipt(submit["smsc_message_id"], "DELIVRD")
    await within(driver.smsc.deliver_resps.get())
    await settle(0.2)
    assert harness.events.pending == []


# -- throttling, disconnects -----------------------------------------------------------------


@pytest.mark.parametrize("driver_config", [{"throttle_delay": 0.05}])
@pytest_twisted.ensureDeferred
async def test_throttling_pauses_then_sends_the_throttled_message(smpp):
    driver, harness = smpp
    driver.smsc.throttle_count = 3
    sent = await harness.send("27820000001", "hello")
    throttled = await harness.next_status()
    assert (throttled["type"], throttled["status"]) == ("throttled", "degraded")
    ack = await harness.next_event()
    assert (ack["event_type"], ack["user_message_id"]) == ("ack", sent["message_id"])
    ended = await harness.next_status()
    assert (ended["type"], ended["status"]) == ("throttled_end", "ok")
    assert len(driver.smsc.all_submits) == 4


@pytest_twisted.ensureDeferred
async def test_dropped_connection_requeues_unanswered_messages(smpp):
    driver, harness = smpp
    driver.smsc.silent = True
    sent = [await harness.send("27820000001", f"m{i}") for i in range(3)]
    while len(driver.smsc.unanswered) < 3:
        await settle()
    driver.smsc.unanswered.clear()
    driver.smsc.silent = False
    driver.smsc.drop()
    lost = await harness.next_status()
    assert (lost["type"], lost["status"]) == ("connection_lost", "down")
    assert (await harness.next_status())["type"] == "bound"
    acks = [await next_event_of(harness, "ack") for _ in range(3)]
    assert sorted(a["user_message_id"] for a in acks) == sorted(m["message_id"] for m in sent)
    assert [s["text"] for s in driver.smsc.accepted] == ["m0", "m1", "m2"]


@pytest.mark.parametrize("driver_config", [{"submit_sm_resp_timeout": 0.2}])
@pytest_twisted.ensureDeferred
async def test_unanswered_submit_reconnects_and_resends(smpp):
    driver, harness = smpp
    driver.smsc.silent = True
    sent = await harness.send("27820000001", "anyone?")
    while not driver.smsc.unanswered:
        await settle()
    driver.smsc.silent = False
    assert (await wait_status(harness, "connection_lost"))["status"] == "down"
    ack = await next_event_of(harness, "ack")
    assert ack["user_message_id"] == sent["message_id"]
    assert len(driver.smsc.all_submits) == 2


@pytest_twisted.ensureDeferred
async def test_smsc_unbind_is_answered_and_the_channel_binds_again(smpp):
    driver, harness = smpp
    driver.smsc.unbind()
    unbound = await harness.next_status()
    assert (unbound["type"], unbound["status"]) == ("unbound", "down")
    assert (await wait_status(harness, "bound"))["status"] == "ok"
    answers = [p for p in driver.smsc.received if p.command == "unbind_resp"]
    assert answers


@pytest_twisted.ensureDeferred
async def test_stopping_gives_unanswered_messages_back_to_the_outbound_queue(smpp):
    driver, harness = smpp
    driver.smsc.silent = True
    sent = await harness.send("27820000001", "later")
    while not driver.smsc.unanswered:
        await settle()
    protocol = harness.worker.transport.protocol
    protocol.settings = attrs.evolve(protocol.settings, drain_timeout=0.1)
    await harness.worker.stop()
    harness.worker = None
    # The bus handler failed (RetryLater): the bus puts it back after its back-off.
    key = outbound_key(harness.channel_id)
    for _ in range(100):
        if await harness.bus.queue_length(key) == 1:
            break
        await settle()
    assert await harness.bus.queue_length(key) == 1
    queue = harness.bus.queues[key]
    body = queue.pop()[0]
    assert messages.decode(body)["message_id"] == sent["message_id"]
    assert harness.events.pending == []  # given back, not nacked


# -- binding, statuses, logs ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_wrong_password_reports_bind_failed_and_never_logs_it(tmp_path):
    driver = SmppDriver(password="wrong-pw", wire_logging=True)
    await driver.start_peer()
    harness = await TransportHarness(
        SmppChannel, driver.config(), str(tmp_path / "logs"), **driver.harness_options()
    ).start()
    try:
        status = await harness.next_status()
        assert (status["type"], status["status"]) == ("bind_failed", "down")
        assert "ESME_RINVPASWD" in status["message"]
        assert status["component"] == "smpp"
        await wait_status(harness, "connection_lost")
        await wait_status(harness, "bind_failed")  # it keeps trying, backing off
    finally:
        await harness.stop()
        await driver.stop_peer()
    text = Path(harness.log.path).read_text(encoding="utf-8")
    assert "wrong-pw" not in text
    assert "bind_transceiver" in text  # wire logging is on


@pytest_twisted.ensureDeferred
async def test_bind_parameters_come_from_config(tmp_path):
    driver = SmppDriver(
        system_type="VMA",
        interface_version="33",
        address_range="^123",
        password="longer-than-eight",
    )
    driver.smsc.password = "longer-t"
    await driver.start_peer()
    harness = await TransportHarness(
        SmppChannel, driver.config(), str(tmp_path / "logs"), **driver.harness_options()
    ).start()
    try:
        await wait_status(harness, "bound")
        bind = driver.smsc.bind_requests[0]
        assert bind.params["system_type"] == "VMA"
        assert bind.params["interface_version"] == 0x33
        assert bind.params["address_range"] == "^123"
        assert bind.params["password"] == "longer-t"
    finally:
        await harness.stop()
        await driver.stop_peer()
    assert any("cut" in line["message"] for line in log_lines(harness))


@pytest.mark.parametrize("driver_config", [{"wire_logging": True}])
@pytest_twisted.ensureDeferred
async def test_wire_logging_writes_pdus_without_the_password(smpp):
    driver, harness = smpp
    await harness.send("27820000001", "hello")
    await next_event_of(harness, "ack")
    wire = [line for line in log_lines(harness) if line.get("direction")]
    commands = [line["message"] for line in wire]
    assert "bind_transceiver" in commands
    assert "submit_sm" in commands
    assert "submit_sm_resp" in commands
    assert "secret" not in Path(harness.log.path).read_text(encoding="utf-8")


@pytest_twisted.ensureDeferred
async def test_no_wire_lines_without_wire_logging(smpp):
    driver, harness = smpp
    await harness.send("27820000001", "hello")
    await next_event_of(harness, "ack")
    assert not [line for line in log_lines(harness) if line.get("direction")]


# -- inbound ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "driver_config",
    [{"deliver_short_message_processor_config": {"data_coding_overrides": {"0": "gsm0338"}}}],
)
@pytest_twisted.ensureDeferred
async def test_inbound_in_gsm_latin1_and_ucs2(smpp):
    driver, harness = smpp
    driver.smsc.send_mo("27820000001", SHORT_CODE, "@£$ {ok}", data_coding=0)
    driver.smsc.send_mo("27820000001", SHORT_CODE, "café", data_coding=3)
    driver.smsc.send_mo("27820000001", SHORT_CODE, "ünï ✓", data_coding=8)
    got = [(await harness.next_inbound())["content"] for _ in range(3)]
    assert got == ["@£$ {ok}", "café", "ünï ✓"]


@pytest.mark.parametrize("order", ["forward", "reverse"])
@pytest_twisted.ensureDeferred
async def test_inbound_udh_parts_arrive_whole(smpp, order):
    driver, harness = smpp
    parts = [b"\x05\x00\x03\x2a\x03" + bytes([n]) + f"part{n} ".encode() for n in (1, 2, 3)]
    if order == "reverse":
        parts.reverse()
    for part in parts:
        driver.smsc.send_mo("27820000001", SHORT_CODE, part, data_coding=3, esm_class=0x40)
    inbound = await harness.next_inbound()
    assert inbound["content"] == "part1 part2 part3 "
    assert inbound["from_addr"] == "27820000001"


@pytest_twisted.ensureDeferred
async def test_inbound_sar_parts_and_message_payload(smpp):
    driver, harness = smpp
    for n in (2, 1):
        driver.smsc.send_mo(
            "27820000001",
            SHORT_CODE,
            f"s{n}",
            data_coding=3,
            tlvs={"sar_msg_ref_num": 300, "sar_total_segments": 2, "sar_segment_seqnum": n},
        )
    assert (await harness.next_inbound())["content"] == "s1s2"
    driver.smsc.send_mo(
        "27820000001",
        SHORT_CODE,
        short_message=b"",
        data_coding=3,
        tlvs={"message_payload": b"z" * 400},
    )
    assert (await harness.next_inbound())["content"] == "z" * 400


@pytest_twisted.ensureDeferred
async def test_empty_inbound_is_refused_with_deliver_sm_decoding_error(smpp):
    driver, harness = smpp
    driver.smsc.send_mo("27820000001", SHORT_CODE, short_message=b"")
    resp = await within(driver.smsc.deliver_resps.get())
    assert resp.command_status == CommandStatus.ESME_RDELIVERYFAILURE


@pytest_twisted.ensureDeferred
async def test_ussd_over_smpp_sessions(smpp):
    driver, harness = smpp
    driver.smsc.send_mo(
        "27820000001",
        "*120#",
        "*120#",
        data_coding=3,
        tlvs={"ussd_service_op": b"\x01", "its_session_info": b"\x00\x10"},
    )
    inbound = await harness.next_inbound()
    assert inbound["transport_type"] == "ussd"
    assert inbound["session_event"] == "new"
    assert inbound["transport_metadata"] == {"session_info": "0010"}
    await harness.send_message(messages.reply(inbound, "Menu", continue_session=False))
    submit = await driver.smsc.next_submit()
    assert submit["tlvs"]["ussd_service_op"] == b"\x02"
    assert submit["tlvs"]["its_session_info"] == b"\x00\x11"
    driver.smsc.send_mo(
        "27820000001",
        "*120#",
        "1",
        data_coding=3,
        tlvs={"ussd_service_op": b"\x12", "its_session_info": b"\x00\x11"},
    )
    closing = await harness.next_inbound()
    assert closing["session_event"] == "close"
