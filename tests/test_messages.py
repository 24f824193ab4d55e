"""vumi message construction, validation, codec and the API mapping."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from junebug import messages

text = st.text(max_size=50)
maybe_text = st.none() | text


@given(
    content=maybe_text,
    to_addr=maybe_text,
    from_addr=maybe_text,
    session=st.sampled_from(messages.SESSION_EVENTS),
    metadata=st.dictionaries(st.text(max_size=5), st.integers() | text, max_size=3),
)
def test_user_message_round_trips_through_json(content, to_addr, from_addr, session, metadata):
    message = messages.user_message(
        to_addr=to_addr,
        from_addr=from_addr,
        transport_name="ch",
        content=content,
        session_event=session,
        helper_metadata=metadata,
    )
    body = messages.encode(message)
    body.decode("ascii")  # vumi writes ASCII-only JSON
    assert messages.decode(body) == message


def test_user_message_has_every_vumi_field():
    message = messages.user_message(to_addr="t", from_addr="f", transport_name="c")
    assert message["message_version"] == "20110921"
    assert message["message_type"] == "user_message"
    assert len(message["message_id"]) == 32 and "-" not in message["message_id"]
    for field in ("in_reply_to", "group", "provider", "to_addr_type", "from_addr_type"):
        assert message[field] is None
    assert message["routing_metadata"] == {} and message["transport_metadata"] == {}
    messages.parse_timestamp(message["timestamp"])


def test_reply_swaps_addresses_and_copies_what_vumi_copies():
    original = messages.user_message(
        to_addr="*120#",
        from_addr="+2771",
        transport_name="c",
        transport_type="ussd",
        provider="mtn",
        group="g",
        transport_metadata={"session": 7},
    )
    reply = messages.reply(original, "hi")
    assert (reply["to_addr"], reply["from_addr"]) == ("+2771", "*120#")
    assert reply["in_reply_to"] == original["message_id"]
    assert reply["session_event"] is None
    for field in ("provider", "group", "transport_type", "transport_name", "transport_metadata"):
        assert reply[field] == original[field]
    assert reply["routing_metadata"] == {"endpoint_name": "default"}
    assert messages.reply(original, "x", continue_session=False)["session_event"] == "close"
    explicit = messages.reply(original, "x", continue_session=False, session_event="resume")
    assert explicit["session_event"] == "resume"


@pytest.mark.parametrize(
    "payload, problem",
    [
        ([], "JSON object"),
        ({"message_type": "user_message"}, "message_version"),
        ({"message_version": "20110921", "message_type": "x"}, "message_type"),
        ({"message_version": "20110921", "message_type": "user_message"}, "missing"),
        (
            {
                "message_version": "20110921",
                "message_type": "event",
                "event_id": "e",
                "event_type": "ack",
                "user_message_id": "m",
            },
            "sent_message_id",
        ),
        (
            {
                "message_version": "20110921",
                "message_type": "event",
                "event_id": "e",
                "event_type": "delivery_report",
                "user_message_id": "m",
                "delivery_status": "lost",
            },
            "delivery_status",
        ),
    ],
)
def test_invalid_payloads_are_refused(payload, problem):
    with pytest.raises(messages.InvalidMessage, match=problem):
        messages.validate(payload)


def test_decode_fills_what_old_messages_lack():
    message = messages.user_message(to_addr="t", from_addr="f", transport_name="c")
    for field in ("group", "provider", "helper_metadata"):
        del message[field]
    decoded = messages.decode(json.dumps(message))
    assert decoded["group"] is None and decoded["helper_metadata"] == {}


def test_decode_rejects_non_json():
    with pytest.raises(messages.InvalidMessage, match="not JSON"):
        messages.decode(b"\xff{")


def test_api_mapping_of_messages():
    message = messages.user_message(
        to_addr="t",
        from_addr="f",
        transport_name="c",
        content="hi",
        session_event="new",
        helper_metadata={"k": 1},
        continue_session=False,
    )
    api = messages.api_from_message(message)
    assert api == {
        "to": "t",
        "from": "f",
        "group": None,
        "message_id": message["message_id"],
        "channel_id": "c",
        "timestamp": message["timestamp"],
        "reply_to": None,
        "content": "hi",
        "channel_data": {"k": 1, "session_event": "new", "continue_session": False},
    }
    assert message["helper_metadata"] == {"k": 1}  # the mapping does not mutate


def test_fields_from_api_moves_session_keys_out_of_channel_data():
    body = {
        "content": "x",
        "channel_data": {"continue_session": False, "session_event": "close", "other": 2},
    }
    assert messages.fields_from_api(body) == {
        "content": "x",
        "continue_session": False,
        "session_event": "close",
        "helper_metadata": {"other": 2},
    }


@pytest.mark.parametrize(
    "event, expected, details",
    [
        (messages.ack("m", "s", transport_name="c"), "submitted", {}),
        (messages.nack("m", "why", transport_name="c"), "rejected", {"reason": "why"}),
        (messages.delivery_report("m", "delivered", transport_name="c"), "delivery_succeeded", {}),
        (messages.delivery_report("m", "failed", transport_name="c"), "delivery_failed", {}),
        (messages.delivery_report("m", "pending", transport_name="c"), "delivery_pending", {}),
    ],
)
def test_api_mapping_of_events(event, expected, details):
    api = messages.api_from_event("chan", event)
    assert api == {
        "channel_id": "chan",
        "timestamp": event["timestamp"],
        "message_id": "m",
        "event_type": expected,
        "event_details": details,
    }


def test_api_mapping_of_status_drops_reasons():
    status = messages.status("smpp", "down", "lost", "Lost", {"h": 1}, ["r"])
    assert messages.api_from_status("c", status) == {
        "channel_id": "c",
        "component": "smpp",
        "status": "down",
        "type": "lost",
        "message": "Lost",
        "details": {"h": 1},
    }


@given(st.floats(min_value=0, max_value=4e9))
def test_timestamps_parse_back(seconds):
    stamp = messages.timestamp_from_seconds(seconds)
    assert messages.format_timestamp(messages.parse_timestamp(stamp)) == stamp


# --- ids and timestamps: the quick ways give exactly what uuid and datetime give --------


def _datetime_text(seconds) -> tuple:
    """What ``timestamp_from_seconds`` answered when it went through datetime."""
    try:
        moment = datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
        return "text", moment.strftime(messages.VUMI_DATE_FORMAT)
    except Exception as exc:  # the same failure for the same value counts as the same
        return "raised", type(exc)


def _quick_text(seconds) -> tuple:
    try:
        return "text", messages.timestamp_from_seconds(seconds)
    except Exception as exc:
        return "raised", type(exc)


#: A microsecond and a half, and the nearest floats either side of it: datetime rounds
#: the half to even and carries 999999.5 into the next second.
_HALVES = st.builds(
    lambda second, micro, nudge: math.nextafter((second * 1_000_000 + micro + 0.5) / 1e6, nudge),
    st.integers(0, 33_000_000_000),
    st.sampled_from([0, 1, 2, 499_999, 500_000, 999_998, 999_999]) | st.integers(0, 999_999),
    st.sampled_from([0.0, math.inf, -math.inf]),
)


@settings(max_examples=3000)
@given(
    st.floats(min_value=0, max_value=4e10)
    | st.floats(min_value=1.7e9, max_value=1.8e9)
    | _HALVES
    | st.integers(0, 4 * 10**10).map(float)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(10**12), 10**12)
)
@example(0.0)
@example(-0.0)
@example(1764226799.9999995)
@example(1764226799.9999996)
@example(1764226800.0000005)
@example(32503679999.9999995)
@example(messages._QUICK_SECONDS)
@example(-1e-7)
@example(1e300)
@example(float("nan"))
def test_timestamps_are_formatted_as_datetime_formats_them(seconds):
    assert _quick_text(seconds) == _datetime_text(seconds)
    assert _quick_text(seconds) == _datetime_text(seconds)  # again, the second remembered


def test_timestamps_alternating_between_seconds():
    for seconds in [1.5, 2.25, 1.75, 1e9 + 0.5, 1.0, 1e9 + 0.5, 1e9 + 1.0000001]:
        assert _quick_text(seconds) == _datetime_text(seconds)


@settings(max_examples=500)
@given(st.integers(0, 2**63 - 1))
def test_now_is_the_system_clock_to_the_microsecond_rounded_down(nanos):
    """``_now()`` without a clock: datetime.now(UTC) reads the same clock (in
    nanoseconds) and rounds it down to the microsecond."""
    try:
        expected = (datetime(1970, 1, 1) + timedelta(microseconds=nanos // 1000)).strftime(
            messages.VUMI_DATE_FORMAT
        )
    except OverflowError:
        return
    with mock.patch.object(messages.time, "time_ns", return_value=nanos):
        assert messages._now() == expected


def test_now_without_a_clock_is_now():
    before = datetime.now(UTC).replace(tzinfo=None)
    stamp = messages.parse_timestamp(messages._now())
    after = datetime.now(UTC).replace(tzinfo=None)
    assert before <= stamp <= after


@settings(max_examples=500)
@given(st.binary(min_size=16, max_size=16))
def test_ids_are_uuid4_hex_of_the_same_random_bytes(raw):
    with mock.patch.object(messages.os, "urandom", return_value=raw) as urandom:
        ours = messages.new_id()
        theirs = uuid.uuid4().hex
    assert ours == theirs == uuid.UUID(bytes=raw, version=4).hex
    assert [call.args for call in urandom.call_args_list] == [(16,), (16,)]


def test_ids_are_random_uuid4s():
    ids = {messages.new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        assert len(value) == 32 and value == value.lower()
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_to_json_is_json_dumps_with_vumi_dates():
    payload = {
        "a": [1, 2.5, None, True],
        "é": "ü\u2028",
        "when": datetime(2026, 11, 27, 1, 2, 3, 4),
    }
    assert messages.to_json(payload) == json.dumps(payload, default=messages._json_default)
    assert json.loads(messages.to_json(payload))["when"] == "2026-11-27 01:02:03.000004"
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        messages.to_json({"x": {1}})
    with pytest.raises(ValueError, match="Circular reference"):
        loop: list = []
        loop.append(loop)
        messages.to_json(loop)
