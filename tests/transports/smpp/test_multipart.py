"""Tests for junebug.transports.smpp.multipart."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from junebug.transports.smpp.codecs import GSM_ALPHABET, decode, encode
from junebug.transports.smpp.multipart import (
    ESM_CLASS_UDHI,
    ConcatInfo,
    MalformedUDH,
    MessageTooLong,
    Part,
    Reassembler,
    ReferenceCounter,
    UserDataHeader,
    build_concat_udh,
    parse_udh,
    part_capacity,
    reference_from_sequence,
    split_text,
    split_user_data,
    style_from_config,
    text_size,
)

# Texts biased towards multi-unit characters so boundaries get exercised.
gsm_text = st.text(alphabet=st.sampled_from(GSM_ALPHABET) | st.sampled_from("€[]{}"), max_size=700)
latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=700)
ascii_text = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=700)
unicode_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]) | st.sampled_from("😀𝄞a"), max_size=500
)

CODEC_ALPHABETS = [
    ("gsm0338", gsm_text),
    ("latin1", latin1_text),
    ("ascii", ascii_text),
    ("ucs2", unicode_text),
    ("utf-8", unicode_text),
]
# (style, udh_reference_bits)
SPLITTING_STYLES = [("sar", 8), ("udh", 8), ("udh", 16)]

# pytest-twisted runs tests in the reactor greenlet, which does not mix with
# pytest.mark.parametrize on @given tests, so codec and style are drawn by hypothesis.
codec_and_text = st.sampled_from(CODEC_ALPHABETS).flatmap(
    lambda pair: st.tuples(st.just(pair[0]), pair[1])
)
styles = st.sampled_from(SPLITTING_STYLES)


def concat_info(part: Part) -> tuple[ConcatInfo | None, bytes]:
    """What the receiving side would find in a part, as the protocol will do it."""
    if part.sar is not None:
        return ConcatInfo.from_sar(**part.sar), part.payload
    header, text = split_user_data(part.short_message, part.esm_class_flags)
    return (header.concat if header else None), text


def user_data_bits(part: Part, codec: str) -> int:
    """Air-interface size of a part's user data, header included."""
    header_octets = len(part.udh or b"")
    if codec in ("gsm0338", "ascii"):
        header_septets = (header_octets * 8 + 6) // 7
        return (header_septets + text_size(decode(part.payload, codec), codec)) * 7
    return (header_octets + len(part.payload)) * 8


# --- splitting: properties -----------------------------------------------------


@settings(deadline=None, max_examples=500)
@given(codec_and_text, styles, st.data())
def test_split_then_reassemble_in_any_order(codec_text, style_bits, data):
    codec, text = codec_text
    style, bits = style_bits
    reference = data.draw(st.integers(0, (1 << (16 if style == "sar" else bits)) - 1))
    parts = split_text(text, codec, style, reference, udh_reference_bits=bits)

    # Each part alone holds whole characters: no escape or surrogate is cut.
    assert "".join(decode(part.payload, codec) for part in parts) == text

    if len(parts) == 1:
        assert parts[0] == Part(encode(text, codec))
        return

    # Deliver in a random order, repeating some parts before the last one arrives.
    order = data.draw(st.permutations(parts), label="order")
    split = data.draw(st.integers(1, len(parts) - 1), label="split")
    duplicates = data.draw(st.lists(st.sampled_from(order[:split]), max_size=3), label="dups")
    delivery = order[:split] + duplicates + order[split:]
    reassembler = Reassembler(Clock())
    results = []
    for part in delivery:
        info, payload = concat_info(part)
        assert info is not None
        assert info.total == len(parts)
        assert info.reference == reference
        results.append(reassembler.add("27820001111", info, payload))
    whole = [result for result in results if result is not None]
    assert len(whole) == 1
    assert results[-1] is not None
    assert decode(whole[0], codec) == text
    assert len(reassembler) == 0


@settings(deadline=None, max_examples=500)
@given(codec_and_text, styles)
def test_no_part_exceeds_its_capacity(codec_text, style_bits):
    codec, text = codec_text
    style, bits = style_bits
    parts = split_text(text, codec, style, 0, udh_reference_bits=bits)
    for part in parts:
        assert user_data_bits(part, codec) <= 140 * 8
        if len(parts) > 1:
            header = len(part.udh) if part.udh else 6
            assert text_size(decode(part.payload, codec), codec) <= part_capacity(codec, header)
            assert part.esm_class_flags == (ESM_CLASS_UDHI if style == "udh" else 0)
    # Parts are filled: one more character would not have fitted.
    for part, following in zip(parts, parts[1:], strict=False):
        fuller = decode(part.payload, codec) + decode(following.payload, codec)[0]
        header = len(part.udh) if part.udh else 6
        assert text_size(fuller, codec) > part_capacity(codec, header)


@given(st.text(alphabet=GSM_ALPHABET, max_size=600), st.integers(0, 255))
def test_gsm_parts_never_end_with_an_escape(text, reference):
    for part in split_text(text, "gsm0338", "udh", reference):
        assert not part.payload.endswith(b"\x1b")
        decode(part.payload, "gsm0338")


@given(st.text(alphabet=st.sampled_from("a😀é𝄞"), max_size=400))
def test_ucs2_parts_never_split_a_surrogate_pair(text):
    for part in split_text(text, "ucs2", "sar", 1):
        assert len(part.payload) % 2 == 0
        part.payload.decode("utf-16-be")  # strict: a lone surrogate would raise
        first_unit = int.from_bytes(part.payload[:2], "big") if part.payload else 0
        assert not 0xDC00 <= first_unit <= 0xDFFF


@given(codec_and_text)
def test_single_pdu_styles_never_split(codec_text):
    codec, text = codec_text
    (plain,) = split_text(text, codec, "short_message")
    assert plain == Part(encode(text, codec))
    assert plain.short_message == encode(text, codec)
    (payload,) = split_text(text, codec, "message_payload")
    assert payload.message_payload
    assert payload.short_message == b""
    assert decode(payload.payload, codec) == text


# --- splitting: examples ---------------------------------------------------------


@pytest.mark.parametrize("style", ["sar", "udh"])
def test_160_gsm_characters_is_one_part_161_is_two(style):
    (single,) = split_text("a" * 160, "gsm0338", style, 7)
    assert single == Part(b"a" * 160)
    parts = split_text("a" * 161, "gsm0338", style, 7)
    assert [len(part.payload) for part in parts] == [153, 8]
    assert len(split_text("a" * 306, "gsm0338", style, 7)) == 2
    assert len(split_text("a" * 307, "gsm0338", style, 7)) == 3


def test_gsm_extension_characters_count_twice():
    # 80 euro signs are 160 septets: one message. 81 are 162: split, and the
    # first part holds 76 (152 septets) because a 77th would need 154.
    assert len(split_text("€" * 80, "gsm0338", "udh")) == 1
    parts = split_text("€" * 81, "gsm0338", "udh")
    assert [len(part.payload) for part in parts] == [152, 10]


def test_ascii_counts_gsm_extension_characters_twice():
    # IA5 travels as GSM 7-bit, where brackets are escape sequences.
    assert text_size("a[b]", "ascii") == 6
    assert len(split_text("[" * 80, "ascii", "udh")) == 1
    parts = split_text("[" * 81, "ascii", "udh")
    assert [len(part.payload) for part in parts] == [76, 5]
    assert text_size("é", "utf-8") == 2
    with pytest.raises(UnicodeEncodeError):
        text_size("é", "ascii")


def test_escape_at_the_boundary_moves_to_the_next_part():
    text = "a" * 152 + "€" + "b" * 10
    parts = split_text(text, "gsm0338", "udh", 1)
    assert parts[0].payload == b"a" * 152
    assert parts[1].payload == b"\x1b\x65" + b"b" * 10


def test_ucs2_capacity_and_emoji_at_the_boundary():
    assert len(split_text("ж" * 70, "ucs2", "udh")) == 1
    assert [len(p.payload) for p in split_text("ж" * 71, "ucs2", "udh")] == [134, 8]
    text = "a" * 66 + "😀" + "b" * 10
    first, second = split_text(text, "ucs2", "udh", 9)
    assert decode(first.payload, "ucs2") == "a" * 66
    assert len(first.payload) == 132
    assert decode(second.payload, "ucs2") == "😀" + "b" * 10
    # With a 16-bit reference header the part holds 66 units (132 octets).
    assert [
        len(p.payload) for p in split_text("ж" * 71, "ucs2", "udh", 9, udh_reference_bits=16)
    ] == [
        132,
        10,
    ]


def test_eight_bit_capacity():
    assert len(split_text("é" * 140, "latin1", "sar")) == 1
    assert [len(p.payload) for p in split_text("é" * 141, "latin1", "sar")] == [134, 7]
    assert [
        len(p.payload) for p in split_text("é" * 141, "latin1", "udh", udh_reference_bits=16)
    ] == [133, 8]
    # UTF-8 multi-byte characters are not cut either.
    parts = split_text("é" * 71, "utf-8", "udh")
    assert [len(p.payload) for p in parts] == [134, 8]


def test_udh_parts_carry_the_concatenation_header():
    parts = split_text("x" * 200, "latin1", "udh", 0xAB)
    assert [part.udh for part in parts] == [
        bytes.fromhex("050003ab0201"),
        bytes.fromhex("050003ab0202"),
    ]
    assert all(part.esm_class_flags == 0x40 for part in parts)
    assert all(part.sar is None for part in parts)
    assert parts[0].short_message == bytes.fromhex("050003ab0201") + b"x" * 134
    parts = split_text("x" * 200, "latin1", "udh", 0x1234, udh_reference_bits=16)
    assert parts[1].udh == bytes.fromhex("06080412340202")


def test_sar_parts_carry_tlv_values():
    parts = split_text("x" * 300, "latin1", "sar", 0x1234)
    assert [part.sar for part in parts] == [
        {"sar_msg_ref_num": 0x1234, "sar_total_segments": 3, "sar_segment_seqnum": n}
        for n in (1, 2, 3)
    ]
    assert all(part.udh is None and part.esm_class_flags == 0 for part in parts)


def test_split_errors():
    with pytest.raises(ValueError):
        split_text("x" * 200, "latin1", "udh", 256)
    with pytest.raises(ValueError):
        split_text("x" * 200, "latin1", "sar", 0x10000)
    with pytest.raises(ValueError):
        split_text("x", "latin1", "pigeon")  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):
        split_text("☃" * 200, "gsm0338", "udh")
    with pytest.raises(MessageTooLong):
        split_text("x" * 134 * 256, "latin1", "udh")
    assert len(split_text("x" * 134 * 255, "latin1", "udh")) == 255


def test_empty_text_is_one_empty_part():
    assert split_text("", "gsm0338", "udh") == [Part(b"")]


def test_style_from_config():
    assert style_from_config() == "short_message"
    assert style_from_config(send_long_messages=True) == "message_payload"
    assert style_from_config(send_multipart_sar=True) == "sar"
    assert style_from_config(send_multipart_udh=True) == "udh"
    with pytest.raises(ValueError):
        style_from_config(send_multipart_sar=True, send_multipart_udh=True)


# --- references -------------------------------------------------------------------


def test_reference_counter_rolls_over_as_configured():
    counter = ReferenceCounter(rollover=3)
    assert [counter.next() for _ in range(5)] == [0, 1, 2, 0, 1]


def test_reference_counter_wraps_at_the_field_width():
    counter = ReferenceCounter(start=254)
    assert [counter.next(bits=8) for _ in range(3)] == [254, 255, 0]
    counter = ReferenceCounter(start=0xFFFF)
    assert [counter.next() for _ in range(2)] == [0xFFFF, 0]
    assert reference_from_sequence(70000) == 70000 % 0x10000
    assert reference_from_sequence(300, bits=8) == 44
    assert reference_from_sequence(300, rollover=100, bits=8) == 0


def test_reference_counter_validates():
    with pytest.raises(ValueError):
        ReferenceCounter(rollover=0)
    with pytest.raises(ValueError):
        ReferenceCounter(rollover=0x10001)
    with pytest.raises(ValueError):
        ReferenceCounter().next(bits=12)


@given(st.integers(1, 0x10000), st.integers(0, 10**9), st.sampled_from([8, 16]))
def test_references_always_fit(rollover, start, bits):
    value = ReferenceCounter(rollover, start).next(bits)
    assert 0 <= value < min(rollover, 1 << bits)
    build_concat_udh(value, 2, 1, bits)


# --- UDH parsing --------------------------------------------------------------------


def test_parse_udh_keeps_other_elements():
    # Application port addressing (0x05) then an 8-bit concatenation IE.
    data = bytes.fromhex("0b050423f4000000032a0302") + b"hello"
    header, rest = parse_udh(data)
    assert rest == b"hello"
    assert header.concat == ConcatInfo(0x2A, 3, 2, 8)
    assert header.other_elements == ((0x05, bytes.fromhex("23f40000")),)
    assert header.elements[1] == (0x00, bytes.fromhex("2a0302"))
    assert header.to_bytes() == data[:12]


def test_parse_udh_16_bit_reference():
    header, rest = parse_udh(bytes.fromhex("060804beef0301") + b"x")
    assert header.concat == ConcatInfo(0xBEEF, 3, 1, 16)
    assert rest == b"x"


@pytest.mark.parametrize("ie", ["00030a0000", "00030a0203", "00020a02", "0803000000"])
def test_invalid_concatenation_elements_are_ignored(ie):
    header, _ = parse_udh(bytes([len(bytes.fromhex(ie))]) + bytes.fromhex(ie) + b"x")
    assert header.concat is None
    assert len(header.elements) == 1


@pytest.mark.parametrize("data", ["", "05", "050003", "0400050102", "0300"])
def test_malformed_udh_raises(data):
    with pytest.raises(MalformedUDH):
        parse_udh(bytes.fromhex(data))


def test_split_user_data():
    message = bytes.fromhex("0500030c0201") + b"hi"
    header, text = split_user_data(message, esm_class=0x40)
    assert isinstance(header, UserDataHeader)
    assert (header.concat, text) == (ConcatInfo(12, 2, 1), b"hi")
    # Without UDHI the bytes are text, unless sniffing is asked for.
    assert split_user_data(message, esm_class=0) == (None, message)
    header, text = split_user_data(message, esm_class=0, sniff=True)
    assert (header.concat, text) == (ConcatInfo(12, 2, 1), b"hi")
    assert split_user_data(b"\x05\x00\x03", esm_class=0, sniff=True) == (None, b"\x05\x00\x03")
    assert split_user_data(b"hello", sniff=True) == (None, b"hello")


def test_build_concat_udh_validates():
    for args in [(256, 2, 1, 8), (0x10000, 2, 1, 16), (1, 2, 3, 8), (1, 0, 0, 8), (1, 2, 1, 9)]:
        with pytest.raises(ValueError):
            build_concat_udh(*args)


def test_sar_info():
    assert ConcatInfo.from_sar(5, 3, 2) == ConcatInfo(5, 3, 2, 16)
    assert ConcatInfo.from_sar(5, None, 2) is None
    assert ConcatInfo.from_sar(5, 3, 0) is None
    assert ConcatInfo.from_sar(5, 3, 4) is None


# --- reassembly -----------------------------------------------------------------------


def test_reassembles_out_of_order_with_duplicates():
    reassembler = Reassembler(Clock())
    assert reassembler.add("a", ConcatInfo(1, 3, 3), b"!") is None
    assert reassembler.add("a", ConcatInfo(1, 3, 1), b"hel") is None
    assert reassembler.add("a", ConcatInfo(1, 3, 1), b"XXX") is None
    assert len(reassembler) == 1
    assert reassembler.add("a", ConcatInfo(1, 3, 2), b"lo") == b"hello!"
    assert len(reassembler) == 0


def test_single_part_message_is_returned_at_once():
    reassembler = Reassembler(Clock())
    assert reassembler.add("a", ConcatInfo(1, 1, 1), b"hi") == b"hi"
    assert len(reassembler) == 0


def test_keys_are_source_and_reference():
    reassembler = Reassembler(Clock())
    assert reassembler.add("a", ConcatInfo(1, 2, 1), b"a1") is None
    assert reassembler.add("b", ConcatInfo(1, 2, 2), b"b2") is None
    assert reassembler.add("a", ConcatInfo(2, 2, 2), b"x2") is None
    assert reassembler.add("b", ConcatInfo(1, 2, 1), b"b1") == b"b1b2"
    assert reassembler.add("a", ConcatInfo(1, 2, 2, 16), b"a2") == b"a1a2"
    assert len(reassembler) == 1


def test_incomplete_sets_expire_and_are_reported():
    clock = Clock()
    expired = []
    reassembler = Reassembler(clock, timeout=60, on_expired=expired.append)
    clock.advance(5)
    reassembler.add("27820001111", ConcatInfo(7, 3, 2), b"part two")
    clock.advance(30)
    reassembler.add("27820001111", ConcatInfo(7, 3, 3), b"part three")
    clock.advance(29.9)
    assert expired == []
    clock.advance(0.1)
    assert len(reassembler) == 0
    (report,) = expired
    assert (report.source, report.reference, report.total, report.started) == (
        "27820001111",
        7,
        3,
        5,
    )
    assert report.received == {2: b"part two", 3: b"part three"}
    assert report.missing == [1]
    assert report.reason == "timeout"
    # A late part starts a new set rather than completing the dropped one.
    assert reassembler.add("27820001111", ConcatInfo(7, 3, 1), b"part one") is None
    assert len(reassembler) == 1


def test_completed_sets_cancel_their_timer():
    clock = Clock()
    expired = []
    reassembler = Reassembler(clock, timeout=10, on_expired=expired.append)
    reassembler.add("a", ConcatInfo(1, 2, 1), b"x")
    assert len(clock.getDelayedCalls()) == 1
    reassembler.add("a", ConcatInfo(1, 2, 2), b"y")
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert expired == []


def test_a_different_part_count_supersedes_the_old_set():
    clock = Clock()
    expired = []
    reassembler = Reassembler(clock, on_expired=expired.append)
    reassembler.add("a", ConcatInfo(1, 3, 1), b"old")
    assert reassembler.add("a", ConcatInfo(1, 2, 2), b"new2") is None
    assert [(e.reason, e.received) for e in expired] == [("superseded", {1: b"old"})]
    assert len(clock.getDelayedCalls()) == 1
    assert reassembler.add("a", ConcatInfo(1, 2, 1), b"new1") == b"new1new2"


def test_clear_cancels_everything_silently():
    clock = Clock()
    expired = []
    reassembler = Reassembler(clock, on_expired=expired.append)
    reassembler.add("a", ConcatInfo(1, 2, 1), b"x")
    reassembler.add("b", ConcatInfo(1, 2, 1), b"x")
    reassembler.clear()
    assert clock.getDelayedCalls() == []
    assert len(reassembler) == 0
    clock.advance(1000)
    assert expired == []


def test_expiry_without_callback():
    clock = Clock()
    reassembler = Reassembler(clock, timeout=1)
    reassembler.add("a", ConcatInfo(1, 2, 1), b"x")
    clock.advance(1)
    assert len(reassembler) == 0


def test_bad_numbering_is_rejected():
    reassembler = Reassembler(Clock())
    with pytest.raises(ValueError):
        reassembler.add("a", ConcatInfo(1, 2, 3), b"x")
    with pytest.raises(ValueError):
        reassembler.add("a", ConcatInfo(1, 0, 0), b"x")
