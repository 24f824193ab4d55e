"""The SMSC simulator in-process on a real TCP port, time from task.Clock, driven by a
minimal ESME built on our own PDU codec."""

from __future__ import annotations

import re
import uuid

import pytest
import pytest_twisted

from junebug.smsc.simulator import NotBound, SimulatorError, SmscSimulator, receipt_text
from junebug.transports.smpp.codecs import decode as decode_text
from junebug.transports.smpp.constants import CommandId, CommandStatus
from junebug.transports.smpp.pdu import PDU, encode, make_pdu
from tests.smsc.esme import PASSWORD, SYSTEM_ID, Smsc, make_smsc, submit, within

#: The original gateway's receipt regex (docs/reference: vumi DeliveryReportProcessor).
VUMI_RECEIPT = re.compile(
    r"id:(?P<id>[^ ]{,65})(?: +sub:(?P<sub>[^ ]+))?(?: +dlvrd:(?P<dlvrd>[^ ]+))?"
    r"(?: +submit date:(?P<submit_date>\d*))?(?: +done date:(?P<done_date>\d*))?"
    r" +stat:(?P<stat>[A-Z]{5,7})(?: +err:(?P<err>[^ ]+))? +[Tt]ext:(?P<text>.{,20}).*"
)


# ---------------------------------------------------------------------------
# Binding


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("command", ["bind_transceiver", "bind_transmitter", "bind_receiver"])
async def test_every_bind_type_succeeds_and_is_listed(smsc, command):
    esme = await smsc.esme(bind=None)
    resp = await esme.bind(SYSTEM_ID, PASSWORD, command)
    assert resp.command == command + "_resp"
    assert resp.command_status == CommandStatus.ESME_ROK
    assert resp.params["system_id"] == "jb-smsc"
    [bound] = smsc.simulator.status()["bound"]
    assert bound["system_id"] == SYSTEM_ID
    assert bound["bind_type"] == command.removeprefix("bind_")
    assert bound["peer"].startswith("127.0.0.1:")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [
        ("intruder", PASSWORD, CommandStatus.ESME_RINVSYSID),
        (SYSTEM_ID, "wrong", CommandStatus.ESME_RINVPASWD),
        ("intruder", "wrong", CommandStatus.ESME_RINVSYSID),
    ],
)
async def test_bad_credentials_are_refused_and_the_connection_kept(
    smsc, system_id, password, status
):
    esme = await smsc.esme(bind=None)
    resp = await esme.bind(system_id, password)
    assert resp.command == "bind_transceiver_resp"
    assert resp.command_status == status
    assert smsc.simulator.status()["bound"] == []
    # Still connected: a second attempt with the right credentials works.
    assert esme.transport.connected
    retry = await esme.bind(SYSTEM_ID, PASSWORD)
    assert retry.command_status == CommandStatus.ESME_ROK


@pytest_twisted.ensureDeferred
async def test_system_type_is_checked_when_configured():
    smsc = await make_smsc(system_type="VMA")
    try:
        esme = await smsc.esme(bind=None)
        wrong = await esme.bind(SYSTEM_ID, PASSWORD, system_type="OTHER")
        assert wrong.command_status == CommandStatus.ESME_RINVSYSTYP
        right = await esme.bind(SYSTEM_ID, PASSWORD, system_type="VMA")
        assert right.command_status == CommandStatus.ESME_ROK
    finally:
        await smsc.stop()


@pytest_twisted.ensureDeferred
async def test_bind_error_setting_refuses_every_bind(smsc):
    smsc.simulator.configure(bind_error="ESME_RBINDFAIL")
    esme = await smsc.esme(bind=None)
    resp = await esme.bind(SYSTEM_ID, PASSWORD)
    assert resp.command_status == CommandStatus.ESME_RBINDFAIL
    smsc.simulator.configure(bind_error=None)
    assert (await esme.bind(SYSTEM_ID, PASSWORD)).command_status == 0


@pytest_twisted.ensureDeferred
async def test_password_compared_on_its_first_eight_characters():
    smsc = Smsc()
    smsc.simulator = SmscSimulator(smsc.clock, SYSTEM_ID, "longpassword")
    await smsc.start()
    try:
        esme = await smsc.esme(bind=None)
        assert (await esme.bind(SYSTEM_ID, "longpass")).command_status == 0
    finally:
        await smsc.stop()


@pytest_twisted.ensureDeferred
async def test_second_bind_on_one_connection_is_already_bound(smsc):
    esme = await smsc.esme()
    again = await esme.bind(SYSTEM_ID, PASSWORD)
    assert again.command_status == CommandStatus.ESME_RALYBND


@pytest_twisted.ensureDeferred
async def test_submit_before_bind_or_on_a_receiver_is_refused(smsc):
    unbound = await smsc.esme(bind=None)
    assert (await submit(unbound)).command_status == CommandStatus.ESME_RINVBNDSTS
    receiver = await smsc.esme("bind_receiver")
    assert (await submit(receiver)).command_status == CommandStatus.ESME_RINVBNDSTS
    assert smsc.simulator.submits() == []


# ---------------------------------------------------------------------------
# Housekeeping PDUs


@pytest_twisted.ensureDeferred
async def test_enquire_link_is_answered_bound_or_not(smsc):
    esme = await smsc.esme(bind=None)
    resp = await esme.call("enquire_link")
    assert resp.command == "enquire_link_resp"
    assert resp.command_status == 0
    await esme.bind(SYSTEM_ID, PASSWORD)
    assert (await esme.call("enquire_link")).command == "enquire_link_resp"


@pytest_twisted.ensureDeferred
async def test_esme_unbind_is_answered_then_the_connection_closes(smsc):
    esme = await smsc.esme()
    resp = await esme.call("unbind")
    assert resp.command == "unbind_resp"
    await within(esme.closed)
    assert smsc.simulator.status()["bound"] == []


@pytest_twisted.ensureDeferred
async def test_unknown_command_gets_generic_nack(smsc):
    esme = await smsc.esme()
    esme.send_raw(encode(PDU(0x00000077, 42, 0, {}, {}, b"\x01\x02")))
    nack = await esme.next_pdu()
    assert nack.command_id == CommandId.generic_nack
    assert nack.command_status == CommandStatus.ESME_RINVCMDID
    assert nack.sequence_number == 42
    # The connection goes on.
    assert (await esme.call("enquire_link")).command_status == 0


@pytest_twisted.ensureDeferred
async def test_undecodable_body_gets_generic_nack_and_the_connection_goes_on(smsc):
    esme = await smsc.esme()
    # A submit_sm whose body stops in the middle of service_type.
    esme.send_raw(b"\x00\x00\x00\x13\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x09abc")
    nack = await esme.next_pdu()
    assert nack.command_id == CommandId.generic_nack
    assert nack.sequence_number == 9
    assert nack.command_status != 0
    assert (await esme.call("enquire_link")).command_status == 0


@pytest_twisted.ensureDeferred
async def test_a_broken_frame_is_nacked_and_closed(smsc):
    esme = await smsc.esme()
    esme.send_raw(b"\x00\x00\x00\x04" + b"\x00" * 12)
    nack = await esme.next_pdu()
    assert nack.command_status == CommandStatus.ESME_RINVCMDLEN
    await within(esme.closed)


@pytest_twisted.ensureDeferred
async def test_tcp_nodelay_is_set(smsc):
    import socket

    await smsc.esme()
    [connection] = smsc.simulator.binds
    sock = connection.transport.getHandle()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@pytest_twisted.ensureDeferred
async def test_smsc_sends_enquire_link_when_configured():
    smsc = await make_smsc(enquire_link_interval=30)
    try:
        esme = await smsc.esme()
        smsc.clock.advance(29)
        smsc.clock.advance(1)
        ping = await esme.next_of("enquire_link")
        assert ping.command_status == 0
        smsc.clock.advance(30)
        await esme.next_of("enquire_link")
    finally:
        await smsc.stop()


# ---------------------------------------------------------------------------
# submit_sm


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    ("id_format", "first", "second"),
    [("hex", "0a1b2c3d", "0a1b2c3e"), ("decimal", "169552957", "169552958")],
)
async def test_submit_sm_resp_ids(id_format, first, second):
    smsc = await make_smsc(id_format=id_format)
    try:
        esme = await smsc.esme()
        one = await submit(esme)
        two = await submit(esme)
        assert one.command == "submit_sm_resp" and one.command_status == 0
        assert (one.params["message_id"], two.params["message_id"]) == (first, second)
    finally:
        await smsc.stop()


@pytest_twisted.ensureDeferred
async def test_submit_sm_resp_uuid_ids(smsc):
    smsc.simulator.configure(id_format="uuid")
    esme = await smsc.esme()
    ids = {(await submit(esme)).params["message_id"] for _ in range(3)}
    assert len(ids) == 3
    for message_id in ids:
        assert str(uuid.UUID(message_id)) == message_id


@pytest_twisted.ensureDeferred
async def test_decimal_ids_are_eight_digits_at_least():
    smsc = await make_smsc(id_format="decimal", first_id=42)
    try:
        esme = await smsc.esme()
        assert (await submit(esme)).params["message_id"] == "00000042"
    finally:
        await smsc.stop()


@pytest_twisted.ensureDeferred
async def test_submits_are_recorded_with_decoded_text_and_tlvs(smsc):
    esme = await smsc.esme("bind_transmitter")
    resp = await submit(
        esme,
        "héllo".encode("utf-16-be"),
        data_coding=8,
        source_addr_ton=5,
        tlvs={"user_message_reference": 7, 0x1400: b"\xff"},
    )
    [record] = smsc.simulator.submits()
    assert record["smsc_message_id"] == resp.params["message_id"]
    assert record["command_status"] == "ESME_ROK"
    assert record["source_addr"] == "12345"
    assert record["source_addr_ton"] == 5
    assert record["destination_addr"] == "27831234567"
    assert record["data_coding"] == 8
    assert record["text"] == "héllo"
    assert record["esm_class"] == 0
    assert record["udh"] is None and record["sar"] is None
    assert record["tlvs"] == {"user_message_reference": 7, "0x1400": "ff"}
    assert record["received_at"] == 1_700_000_000
    assert record["system_id"] == SYSTEM_ID


@pytest_twisted.ensureDeferred
async def test_submit_codings_are_decoded(smsc):
    esme = await smsc.esme()
    await submit(esme, b"\x00 costs \x02\x1b\x65", data_coding=0)  # GSM: @ costs $€
    await submit(esme, "café".encode("latin-1"), data_coding=3)
    await submit(esme, b"plain", data_coding=1)
    await submit(esme, "naïve".encode(), data_coding=0)  # not GSM: falls back to UTF-8
    texts = [r["text"] for r in smsc.simulator.submits()]
    assert texts == ["@ costs $€", "café", "plain", "naïve"]


@pytest_twisted.ensureDeferred
async def test_udh_and_sar_and_payload_parts_are_described(smsc):
    esme = await smsc.esme()
    await submit(esme, b"\x05\x00\x03\x2a\x02\x01" + b"first half", esm_class=0x40)
    await submit(
        esme,
        b"second half",
        tlvs={"sar_msg_ref_num": 300, "sar_total_segments": 2, "sar_segment_seqnum": 2},
    )
    await submit(esme, b"", tlvs={"message_payload": b"x" * 300})
    udh, sar, payload = smsc.simulator.submits()
    assert udh["udh"] == {
        "hex": "0500032a0201",
        "reference": 42,
        "total": 2,
        "seqnum": 1,
        "reference_bits": 8,
    }
    assert udh["text"] == "first half"
    assert udh["esm_class"] == 0x40
    assert sar["sar"] == {"msg_ref_num": 300, "total_segments": 2, "segment_seqnum": 2}
    assert sar["text"] == "second half"
    assert payload["message_payload"] is True
    assert payload["text"] == "x" * 300
    assert payload["tlvs"]["message_payload"] == "78" * 300


# ---------------------------------------------------------------------------
# Receipts


@pytest_twisted.ensureDeferred
async def test_receipt_after_dr_delay_in_both_forms(smsc):
    esme = await smsc.esme()
    resp = await submit(esme, b"hello world")
    message_id = resp.params["message_id"]
    smsc.clock.advance(0.4)
    assert smsc.simulator.deliveries() == []
    smsc.clock.advance(0.1)
    receipt = await esme.next_of("deliver_sm")
    assert receipt.params["esm_class"] == 0x04
    assert receipt.params["source_addr"] == "27831234567"
    assert receipt.params["destination_addr"] == "12345"
    assert receipt.tlvs["receipted_message_id"] == message_id
    assert receipt.tlvs["message_state"] == 2
    text = receipt.params["short_message"].decode("ascii")
    assert text == (
        f"id:{message_id} sub:001 dlvrd:001 submit date:2311142213 "
        "done date:2311142213 stat:DELIVRD err:000 text:hello world"
    )
    match = VUMI_RECEIPT.search(text)
    assert match and match["id"] == message_id and match["stat"] == "DELIVRD"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    ("status", "stat", "state"),
    [
        ("delivered", "DELIVRD", 2),
        ("failed", "FAILED", 5),
        ("undeliverable", "UNDELIV", 5),
        ("rejected", "REJECTD", 8),
        ("expired", "EXPIRED", 3),
        ("pending", "ENROUTE", 1),
        ("accepted", "ACCEPTD", 6),
    ],
)
async def test_receipt_statuses(status, stat, state):
    smsc = await make_smsc(dr_status=status, dr_delay=0)
    try:
        esme = await smsc.esme()
        await submit(esme)
        smsc.clock.advance(0)
        receipt = await esme.next_of("deliver_sm")
        assert VUMI_RECEIPT.search(receipt.params["short_message"].decode())["stat"] == stat
        assert receipt.tlvs["message_state"] == state
    finally:
        await smsc.stop()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("style", ["text", "tlv"])
async def test_receipt_styles(smsc, style):
    smsc.simulator.configure(dr_style=style, dr_delay=1)
    esme = await smsc.esme()
    message_id = (await submit(esme)).params["message_id"]
    smsc.clock.advance(1)
    receipt = await esme.next_of("deliver_sm")
    assert receipt.params["esm_class"] == 0x04
    if style == "text":
        assert receipt.tlvs == {}
        assert receipt.params["short_message"].startswith(f"id:{message_id} ".encode())
    else:
        assert receipt.params["short_message"] == b""
        assert receipt.tlvs == {"receipted_message_id": message_id, "message_state": 2}


@pytest_twisted.ensureDeferred
async def test_a_series_of_receipts_dr_delay_apart():
    smsc = await make_smsc(dr_status="pending,delivered", dr_delay=2)
    try:
        esme = await smsc.esme()
        await submit(esme)
        smsc.clock.advance(2)
        first = await esme.next_of("deliver_sm")
        assert first.tlvs["message_state"] == 1
        assert len(smsc.simulator.deliveries()) == 1
        smsc.clock.advance(2)
        second = await esme.next_of("deliver_sm")
        assert second.tlvs["message_state"] == 2
    finally:
        await smsc.stop()


@pytest_twisted.ensureDeferred
async def test_no_receipt_when_not_requested_or_dr_delay_negative(smsc):
    esme = await smsc.esme()
    await submit(esme, registered_delivery=0)
    smsc.simulator.configure(dr_delay=-1)
    await submit(esme, registered_delivery=1)
    smsc.clock.advance(60)
    assert smsc.simulator.deliveries() == []
    assert smsc.simulator.status()["pending_receipts"] == 0


@pytest_twisted.ensureDeferred
async def test_registered_delivery_2_gets_only_failure_receipts(smsc):
    smsc.simulator.configure(dr_status=["pending", "failed"], dr_delay=1)
    esme = await smsc.esme()
    await submit(esme, registered_delivery=2)
    smsc.clock.advance(1)
    receipt = await esme.next_of("deliver_sm")
    assert receipt.tlvs["message_state"] == 5
    smsc.clock.advance(10)
    assert len(smsc.simulator.deliveries()) == 1


@pytest_twisted.ensureDeferred
async def test_each_part_of_a_multipart_submit_gets_its_own_receipt(smsc):
    esme = await smsc.esme()
    ids = []
    for seqnum in (1, 2, 3):
        udh = bytes([5, 0, 3, 9, 3, seqnum])
        ids.append((await submit(esme, udh + b"part", esm_class=0x40)).params["message_id"])
    assert len(set(ids)) == 3
    smsc.clock.advance(0.5)
    receipted = [(await esme.next_of("deliver_sm")).tlvs["receipted_message_id"] for _ in ids]
    assert receipted == ids


@pytest_twisted.ensureDeferred
async def test_receipts_wait_for_a_receiver_and_follow_a_rebind(smsc):
    transmitter = await smsc.esme("bind_transmitter")
    message_id = (await submit(transmitter)).params["message_id"]
    smsc.clock.advance(1)
    assert smsc.simulator.status()["pending_receipts"] == 1
    receiver = await smsc.esme("bind_receiver")
    receipt = await receiver.next_of("deliver_sm")
    assert receipt.tlvs["receipted_message_id"] == message_id


@pytest_twisted.ensureDeferred
async def test_send_receipt_now_for_any_id(smsc):
    esme = await smsc.esme()
    sequence_number = await smsc.simulator.send_receipt("deadbeef", "failed", "text")
    receipt = await esme.next_of("deliver_sm")
    assert receipt.sequence_number == sequence_number
    assert receipt.params["short_message"].startswith(b"id:deadbeef sub:001 dlvrd:000 ")
    assert b"stat:FAILED" in receipt.params["short_message"]
    assert receipt.tlvs == {}


@pytest_twisted.ensureDeferred
async def test_send_receipt_needs_a_receiver_and_a_known_status(smsc):
    with pytest.raises(NotBound):
        smsc.simulator.send_receipt("x")
    await smsc.esme()
    with pytest.raises(SimulatorError):
        smsc.simulator.send_receipt("x", "lost")


def test_receipt_text_uses_utc_dates_and_ascii_text():
    text = receipt_text("abc", "rejected", 0, 3600 * 24, "héllo wörld, a long one")
    assert text == (
        b"id:abc sub:001 dlvrd:000 submit date:7001010000 done date:7001020000 "
        b"stat:REJECTD err:002 text:h?llo w?rld, a long "
    )


# ---------------------------------------------------------------------------
# Throttling and failures


@pytest_twisted.ensureDeferred
async def test_throttle_after_n_submits_within_the_window():
    smsc = await make_smsc(throttle_after=3, throttle_window=1, throttle_for=5)
    try:
        esme = await smsc.esme()
        statuses = [(await submit(esme)).command_status for _ in range(4)]
        assert statuses == [0, 0, 0, CommandStatus.ESME_RTHROTTLED]
        assert smsc.simulator.status()["throttled"] is True
        smsc.clock.advance(4.9)
        assert (await submit(esme)).command_status == CommandStatus.ESME_RTHROTTLED
        smsc.clock.advance(0.1)
        assert smsc.simulator.status()["throttled"] is False
        assert (await submit(esme)).command_status == 0
        status = smsc.simulator.status()
        assert (status["submits"], status["rejected"]) == (4, 2)
    finally:
        await smsc.stop()


@pytest_twisted.ensureDeferred
async def test_submits_spread_over_windows_are_not_throttled():
    smsc = await make_smsc(throttle_after=2, throttle_window=1)
    try:
        esme = await smsc.esme()
        for _ in range(5):
            assert (await submit(esme)).command_status == 0
            smsc.clock.advance(0.6)
    finally:
        await smsc.stop()


@pytest_twisted.ensureDeferred
async def test_throttle_now(smsc):
    esme = await smsc.esme()
    smsc.simulator.throttle(2)
    resp = await submit(esme)
    assert resp.command_status == CommandStatus.ESME_RTHROTTLED
    assert resp.params == {}  # error submit_sm_resp has no body
    smsc.clock.advance(2)
    assert (await submit(esme)).command_status == 0
    rejected = smsc.simulator.submits(include_rejected=True)
    assert [r["command_status"] for r in rejected] == ["ESME_RTHROTTLED", "ESME_ROK"]
    assert rejected[0]["smsc_message_id"] is None


@pytest_twisted.ensureDeferred
async def test_every_nth_submit_fails_without_a_receipt():
    smsc = await make_smsc(fail_every=3, fail_status="ESME_RSUBMITFAIL")
    try:
        esme = await smsc.esme()
        statuses = [(await submit(esme)).command_status for _ in range(6)]
        assert statuses == [0, 0, 0x45, 0, 0, 0x45]
        smsc.clock.advance(1)
        for _ in range(4):
            await esme.next_of("deliver_sm")
        assert len(smsc.simulator.deliveries()) == 4
        assert len(smsc.simulator.submits()) == 4
    finally:
        await smsc.stop()


@pytest_twisted.ensureDeferred
async def test_configure_at_runtime(smsc):
    esme = await smsc.esme()
    settings = smsc.simulator.configure(fail_every=1, fail_status=0x58, id_format="decimal")
    assert settings["fail_status"] == "ESME_RTHROTTLED"
    assert "password" not in settings
    assert (await submit(esme)).command_status == 0x58
    smsc.simulator.configure(fail_every=0)
    assert (await submit(esme)).params["message_id"].isdigit()
    with pytest.raises(SimulatorError):
        smsc.simulator.configure(id_format="base64")
    with pytest.raises(SimulatorError):
        smsc.simulator.configure(password="x")
    with pytest.raises(SimulatorError):
        smsc.simulator.configure(dr_status="lost")


# ---------------------------------------------------------------------------
# Mobile originated


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    ("coding", "text", "data_coding", "short_message"),
    [
        ("gsm0338", "@ costs €1", 0, b"\x00 costs \x1b\x651"),
        ("ascii", "plain", 1, b"plain"),
        ("latin1", "café", 3, b"caf\xe9"),
        ("ucs2", "日本", 8, "日本".encode("utf-16-be")),
    ],
)
async def test_mo_in_every_coding(smsc, coding, text, data_coding, short_message):
    esme = await smsc.esme()
    sequence_numbers = await smsc.simulator.send_mo("2782", "12345", text, coding=coding)
    pdu = await esme.next_of("deliver_sm")
    assert sequence_numbers == [pdu.sequence_number]
    assert pdu.params["source_addr"] == "2782"
    assert pdu.params["destination_addr"] == "12345"
    assert pdu.params["data_coding"] == data_coding
    assert pdu.params["short_message"] == short_message
    assert pdu.params["esm_class"] == 0
    assert pdu.tlvs == {}


@pytest_twisted.ensureDeferred
async def test_mo_binary_from_hex(smsc):
    esme = await smsc.esme()
    await smsc.simulator.send_mo("2782", "12345", coding="binary", hex_payload="00ff10")
    pdu = await esme.next_of("deliver_sm")
    assert pdu.params["data_coding"] == 4
    assert pdu.params["short_message"] == b"\x00\xff\x10"


@pytest_twisted.ensureDeferred
async def test_long_mo_without_multipart_goes_in_message_payload(smsc):
    esme = await smsc.esme()
    text = "a" * 161
    await smsc.simulator.send_mo("2782", "12345", text)
    pdu = await esme.next_of("deliver_sm")
    assert pdu.params["short_message"] == b""
    assert pdu.tlvs["message_payload"] == b"a" * 161


@pytest_twisted.ensureDeferred
async def test_mo_payload_style_always_uses_message_payload(smsc):
    esme = await smsc.esme()
    await smsc.simulator.send_mo("2782", "12345", "short", multipart="payload")
    pdu = await esme.next_of("deliver_sm")
    assert pdu.params["short_message"] == b""
    assert pdu.tlvs == {"message_payload": b"short"}


@pytest_twisted.ensureDeferred
async def test_mo_udh_parts(smsc):
    esme = await smsc.esme()
    text = "x" * 153 + "y" * 10
    sent = await smsc.simulator.send_mo("2782", "12345", text, multipart="udh", reference=42)
    parts = [await esme.next_of("deliver_sm") for _ in sent]
    assert [p.sequence_number for p in parts] == sent
    assert [p.params["esm_class"] for p in parts] == [0x40, 0x40]
    assert parts[0].params["short_message"] == b"\x05\x00\x03\x2a\x02\x01" + b"x" * 153
    assert parts[1].params["short_message"] == b"\x05\x00\x03\x2a\x02\x02" + b"y" * 10


@pytest_twisted.ensureDeferred
async def test_mo_udh16_parts_in_ucs2(smsc):
    esme = await smsc.esme()
    text = "ж" * 70 + "щ"
    sent = await smsc.simulator.send_mo(
        "2782", "12345", text, coding="ucs2", multipart="udh16", reference=0x1234
    )
    parts = [await esme.next_of("deliver_sm") for _ in sent]
    assert len(parts) == 2
    headers = [p.params["short_message"][:7] for p in parts]
    assert headers == [b"\x06\x08\x04\x12\x34\x02\x01", b"\x06\x08\x04\x12\x34\x02\x02"]
    assert all(p.params["data_coding"] == 8 for p in parts)
    body = b"".join(p.params["short_message"][7:] for p in parts)
    assert decode_text(body, "ucs2") == text


@pytest_twisted.ensureDeferred
async def test_mo_sar_parts(smsc):
    esme = await smsc.esme()
    text = "z" * 200
    sent = await smsc.simulator.send_mo("2782", "12345", text, multipart="sar", reference=777)
    parts = [await esme.next_of("deliver_sm") for _ in sent]
    assert [p.tlvs for p in parts] == [
        {"sar_msg_ref_num": 777, "sar_total_segments": 2, "sar_segment_seqnum": 1},
        {"sar_msg_ref_num": 777, "sar_total_segments": 2, "sar_segment_seqnum": 2},
    ]
    assert all(p.params["esm_class"] == 0 for p in parts)
    assert b"".join(p.params["short_message"] for p in parts) == b"z" * 200


@pytest_twisted.ensureDeferred
async def test_mo_short_text_in_a_multipart_style_is_one_plain_pdu(smsc):
    esme = await smsc.esme()
    sent = await smsc.simulator.send_mo("2782", "12345", "hi", multipart="udh")
    assert len(sent) == 1
    pdu = await esme.next_of("deliver_sm")
    assert pdu.params["esm_class"] == 0 and pdu.params["short_message"] == b"hi"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("order", ["reverse", "shuffle"])
async def test_mo_parts_out_of_order(smsc, order):
    esme = await smsc.esme()
    text = "".join(chr(ord("a") + i % 26) for i in range(153 * 4))
    await smsc.simulator.send_mo("2782", "12345", text, multipart="udh", order=order)
    seqnums = [(await esme.next_of("deliver_sm")).params["short_message"][5] for _ in range(4)]
    assert sorted(seqnums) == [1, 2, 3, 4]
    if order == "reverse":
        assert seqnums == [4, 3, 2, 1]
    else:
        assert seqnums != [1, 2, 3, 4]  # the seeded shuffle of the fixture moves them


@pytest_twisted.ensureDeferred
async def test_mo_references_advance_when_not_given(smsc):
    esme = await smsc.esme()
    text = "q" * 170
    await smsc.simulator.send_mo("1", "2", text, multipart="sar")
    await smsc.simulator.send_mo("1", "2", text, multipart="sar")
    refs = [(await esme.next_of("deliver_sm")).tlvs["sar_msg_ref_num"] for _ in range(4)]
    assert refs[0] == refs[1] and refs[2] == refs[3] and refs[0] != refs[2]


@pytest_twisted.ensureDeferred
async def test_mo_ussd_tlvs(smsc):
    esme = await smsc.esme()
    await smsc.simulator.send_mo("2782", "*120#", "", ussd_service_op=1, its_session_info="0a0b")
    pdu = await esme.next_of("deliver_sm")
    assert pdu.tlvs == {"ussd_service_op": b"\x01", "its_session_info": b"\x0a\x0b"}


@pytest_twisted.ensureDeferred
async def test_mo_errors(smsc):
    with pytest.raises(NotBound):
        smsc.simulator.send_mo("1", "2", "hi")
    await smsc.esme("bind_transmitter")
    with pytest.raises(NotBound):  # a transmitter cannot receive
        smsc.simulator.send_mo("1", "2", "hi")
    await smsc.esme("bind_receiver")
    for options in (
        {"coding": "ebcdic"},
        {"multipart": "zip"},
        {"order": "random"},
        {"coding": "ascii", "text": "é"},
        {"ussd_service_op": 300},
        {"its_session_info": "xyz"},
    ):
        text = options.pop("text", "hi")
        with pytest.raises(SimulatorError):
            smsc.simulator.send_mo("1", "2", text, **options)


@pytest_twisted.ensureDeferred
async def test_window_holds_deliver_sm_until_responses_arrive(smsc):
    smsc.simulator.configure(window=2)
    esme = await smsc.esme()
    sent = smsc.simulator.send_mo("1", "2", "x" * 153 * 3, multipart="udh")
    first = await esme.next_of("deliver_sm")
    second = await esme.next_of("deliver_sm")
    assert not sent.called
    with pytest.raises(Exception):  # noqa: B017 - nothing else arrives while the window is full
        await esme.next_pdu(0.2)
    esme.send(make_pdu("deliver_sm_resp", first.sequence_number))
    third = await esme.next_of("deliver_sm")
    assert await within(sent) == [
        first.sequence_number,
        second.sequence_number,
        third.sequence_number,
    ]
    esme.send(make_pdu("deliver_sm_resp", second.sequence_number, command_status=0x64))
    await within(smsc.simulator.when(lambda: smsc.simulator.deliveries()[1]["command_status"]))
    answers = [d["command_status"] for d in smsc.simulator.deliveries()]
    assert answers == ["ESME_ROK", "ESME_RX_T_APPN", None]


@pytest_twisted.ensureDeferred
async def test_mo_goes_to_the_oldest_receiving_bind(smsc):
    first = await smsc.esme("bind_receiver")
    await smsc.esme("bind_transceiver")
    await smsc.simulator.send_mo("1", "2", "hi")
    assert (await first.next_of("deliver_sm")).params["short_message"] == b"hi"


# ---------------------------------------------------------------------------
# SMSC-initiated unbind and drop


@pytest_twisted.ensureDeferred
async def test_smsc_unbind_then_close_on_unbind_resp(smsc):
    esme = await smsc.esme()
    assert smsc.simulator.unbind_all() == 1
    unbind = await esme.next_of("unbind")
    assert smsc.simulator.status()["bound"] == []
    esme.send(make_pdu("unbind_resp", unbind.sequence_number))
    await within(esme.closed)


@pytest_twisted.ensureDeferred
async def test_smsc_unbind_closes_after_a_timeout_without_unbind_resp(smsc):
    esme = await smsc.esme()
    smsc.simulator.unbind_all()
    await esme.next_of("unbind")
    assert not esme.closed.called
    smsc.clock.advance(2)
    await within(esme.closed)


@pytest_twisted.ensureDeferred
async def test_drop_closes_every_connection_without_unbind(smsc):
    one = await smsc.esme()
    two = await smsc.esme(bind=None)
    assert smsc.simulator.drop_all() == 2
    await within(one.closed)
    await within(two.closed)
    assert b"\x00\x00\x00\x06" not in one.raw[4:8]  # no unbind was sent
    assert smsc.simulator.status()["connections"] == 0


@pytest_twisted.ensureDeferred
async def test_receipt_queued_on_a_lost_connection_is_redelivered(smsc):
    smsc.simulator.configure(window=1)
    esme = await smsc.esme()
    for _ in range(2):
        await submit(esme)
    smsc.clock.advance(0.5)
    await esme.next_of("deliver_sm")  # the second waits for the window
    smsc.simulator.drop_all()
    await within(esme.closed)
    again = await smsc.esme()
    receipt = await again.next_of("deliver_sm")
    assert receipt.params["esm_class"] == 0x04


@pytest_twisted.ensureDeferred
async def test_wait_for_helpers(smsc):
    waiting = smsc.simulator.wait_for_bind(timeout=5)
    assert not waiting.called
    esme = await smsc.esme()
    assert await within(waiting) is True
    submits = smsc.simulator.wait_for_submits(1, timeout=5)
    await submit(esme)
    assert await within(submits) is True
    late = smsc.simulator.wait_for_submits(5, timeout=5)
    smsc.clock.advance(5)
    assert await within(late) is False
