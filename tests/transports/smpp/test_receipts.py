"""Receipt parsing, state mapping and SMSC id normalisation."""

from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from junebug.transports.smpp.ids import FoundReceipt, MessageIdStore
from junebug.transports.smpp.receipts import (
    DEFAULT_DELIVERY_REPORT_REGEX,
    compile_regex,
    delivery_status,
    id_candidates,
    message_state_name,
    normalise_id,
    parse_receipt,
    parse_receipt_text,
)

STANDARD = (
    b"id:0A1B2C sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
    b"stat:DELIVRD err:000 text:hello there"
)


def test_standard_text_with_receipt_esm_class():
    receipt = parse_receipt(0x04, {}, STANDARD)
    assert (receipt.smsc_id, receipt.state, receipt.error, receipt.source) == (
        "0A1B2C",
        "DELIVRD",
        "000",
        "text",
    )


def test_not_a_receipt_without_the_esm_class_bits():
    assert parse_receipt(0x00, {}, STANDARD) is None
    assert parse_receipt(0x40, {}, STANDARD) is None  # UDHI only


def test_receipted_message_id_tlv_is_preferred_over_the_text():
    receipt = parse_receipt(0x04, {"receipted_message_id": "FFEE"}, STANDARD)
    assert (receipt.smsc_id, receipt.state, receipt.source) == ("FFEE", "DELIVRD", "tlv")


def test_tlvs_alone_make_a_receipt_whatever_the_esm_class():
    receipt = parse_receipt(0, {"receipted_message_id": "77", "message_state": 5}, b"")
    assert (receipt.smsc_id, receipt.state) == ("77", "UNDELIVERABLE")


def test_text_without_a_text_field_is_still_read_when_esm_class_says_receipt():
    text = b"id:123 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD"
    assert parse_receipt_text(text.decode()) is None  # the original's regex needs text:
    receipt = parse_receipt(0x04, {}, text)
    assert (receipt.smsc_id, receipt.state) == ("123", "DELIVRD")


def test_lenient_parse_handles_case_and_separators():
    receipt = parse_receipt(0x04, {}, b"ID=abc;Stat=undeliv;Err=012")
    assert (receipt.smsc_id, receipt.state, receipt.error) == ("abc", "UNDELIV", "012")


def test_unparseable_receipt_is_still_a_receipt_with_no_id():
    receipt = parse_receipt(0x04, {}, b"nothing useful")
    assert receipt is not None and receipt.smsc_id == ""


def test_without_esm_class_the_regex_decides():
    assert parse_receipt(0, {}, STANDARD, use_esm_class=False).smsc_id == "0A1B2C"
    assert parse_receipt(0x04, {}, b"hello", use_esm_class=False) is None


def test_custom_regex():
    regex = compile_regex(r"ref=(?P<id>\w+) state=(?P<stat>\w+)")
    receipt = parse_receipt(0x04, {}, b"ref=99 state=FAILED", regex)
    assert (receipt.smsc_id, receipt.state) == ("99", "FAILED")


@pytest.mark.parametrize("pattern", ["id:(?P<id>.*)", "(", "stat:(?P<stat>.*)"])
def test_regex_needs_id_and_stat_groups(pattern):
    with pytest.raises(ValueError):
        compile_regex(pattern)


def test_default_regex_compiles():
    assert compile_regex(DEFAULT_DELIVERY_REPORT_REGEX).groupindex.keys() >= {"id", "stat"}


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("DELIVRD", "delivered"),
        ("delivered", "delivered"),
        ("ACCEPTED", "delivered"),
        ("0", "delivered"),
        ("EXPIRED", "failed"),
        ("REJECTD", "failed"),
        ("UNDELIV", "failed"),
        ("UNDELIVERABLE", "failed"),
        ("ENROUTE", "pending"),
        ("UNKNOWN", "pending"),
        ("WHATEVER", "pending"),
        ("delivrd", "delivered"),
    ],
)
def test_default_status_mapping(state, status):
    assert delivery_status(state) == status


def test_configured_mapping_replaces_the_default():
    assert delivery_status("DELIVRD", {"DELIVRD": "failed"}) == "failed"
    assert delivery_status("EXPIRED", {"DELIVRD": "failed"}) == "pending"


@pytest.mark.parametrize(
    ("value", "name"), [(1, "ENROUTE"), (2, "DELIVERED"), (8, "REJECTED"), (99, "UNKNOWN")]
)
def test_message_state_names(value, name):
    assert message_state_name(value) == name


def test_message_state_names_are_the_enums_for_every_octet():
    from junebug.transports.smpp.constants import MessageState

    for value in range(256):
        try:
            expected = MessageState(value).name
        except ValueError:
            expected = "UNKNOWN"
        assert message_state_name(value) == expected


# -- id normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("00001A2B", "1a2b"), (" 1a2b\0", "1a2b"), ("0", "0"), ("000", "0"), ("ab-CD", "ab-cd")],
)
def test_normalise_id(raw, normal):
    assert normalise_id(raw) == normal


@given(st.text(max_size=70))
def test_normalise_is_idempotent(raw):
    once = normalise_id(raw)
    assert normalise_id(once) == once


@given(
    st.integers(min_value=0, max_value=2**64),
    st.integers(min_value=0, max_value=6),
    st.booleans(),
)
def test_hex_submit_id_matches_decimal_or_padded_receipt(number, padding, upper):
    submit_id = format(number, "x")
    stored = normalise_id(submit_id.upper() if upper else submit_id)
    decimal_receipt = "0" * padding + str(number)
    hex_receipt = "0" * padding + (format(number, "X") if upper else format(number, "x"))
    assert stored in id_candidates(decimal_receipt)
    assert stored in id_candidates(hex_receipt)
    assert id_candidates(hex_receipt)[0] == stored  # the literal form is tried first


@given(st.integers(min_value=0, max_value=2**64), st.integers(min_value=0, max_value=6))
def test_decimal_submit_id_matches_hex_receipt(number, padding):
    stored = normalise_id(str(number))
    assert stored in id_candidates("0" * padding + format(number, "X"))


@given(st.text(alphabet="ghijklmnopqrstuvwxyz-_", min_size=1, max_size=30))
def test_non_numeric_ids_only_match_themselves(text):
    assert id_candidates(text) == [normalise_id(text)]


# -- the Redis store ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_store_remembers_and_looks_up_any_form(redis, key_prefix):
    store = MessageIdStore(redis, f"{key_prefix}:ids:")
    key = f"{key_prefix}:ids:remote_message:1a2b"
    await store.remember(["00001A2B"], "msg-1", 100)
    whole = FoundReceipt("msg-1", "1a2b", multipart=False)
    assert await store.find_receipt("6699", False, 10, 5) == whole  # decimal
    assert await store.find_receipt("1a2b", False, 10, 5) == whole
    assert await store.find_receipt("1A2B", False, 10, 5) == whole  # case
    assert await store.find_receipt("1A2C", True, 10, 5) is None
    # Receipts that are not final (and unknown ids) leave the TTL alone.
    assert 10 < await redis.ttl(key) <= 100
    assert await store.find_receipt("01a2b", True, 10, 5) == whole  # padding
    assert 0 < await redis.ttl(key) <= 10


@pytest_twisted.ensureDeferred
async def test_store_reports_multipart_outcomes_once(redis, key_prefix):
    store = MessageIdStore(redis, f"{key_prefix}:ids:")
    await store.remember(["a1", "a2"], "m", 100)
    found = await store.find_receipt("A2", True, 10, 5)
    assert found == FoundReceipt("m", "a2", multipart=True)
    # A message in parts is not final until its parts say so: the TTL is left alone.
    assert 10 < await redis.ttl(f"{key_prefix}:ids:remote_message:a2") <= 100
    assert (await store.part_receipt("m", "a1", "pending")).status == "pending"
    assert (await store.part_receipt("m", "a2", "pending")).status is None
    first = await store.part_receipt("m", "a1", "delivered")
    assert (first.status, first.final) == (None, False)
    second = await store.part_receipt("m", "a2", "delivered")
    assert (second.status, second.final) == ("delivered", True)
    again = await store.part_receipt("m", "a2", "delivered")
    assert (again.status, again.final) == (None, True)


@pytest_twisted.ensureDeferred
async def test_store_fails_a_multipart_message_on_its_first_failed_part(redis, key_prefix):
    store = MessageIdStore(redis, f"{key_prefix}:ids:")
    await store.remember(["b1", "b2"], "m2", 100)
    pending = await store.part_receipt("m2", "b1", "pending")
    assert pending.status == "pending"
    assert (await store.part_receipt("m2", "b2", "pending")).status is None
    failed = await store.part_receipt("m2", "b1", "failed")
    assert (failed.status, failed.final) == ("failed", True)
    after = await store.part_receipt("m2", "b2", "delivered")
    assert (after.status, after.final) == (None, True)


@pytest_twisted.ensureDeferred
async def test_store_finds_a_message_sent_whole_is_not_in_parts(redis, key_prefix):
    store = MessageIdStore(redis, f"{key_prefix}:ids:")
    await store.remember(["x"], "single", 100)
    found = await store.find_receipt("x", True, 10, 5)
    assert found == FoundReceipt("single", "x", multipart=False)
    assert await redis.exists(f"{key_prefix}:ids:parts:single") == 0


def test_a_receipt_regex_too_big_to_compile_is_a_clear_error():
    from junebug.transports.smpp.receipts import compile_regex

    with pytest.raises(ValueError, match="not a valid regex"):
        compile_regex("id:(?P<id>a{99999999999}) stat:(?P<stat>x)")
