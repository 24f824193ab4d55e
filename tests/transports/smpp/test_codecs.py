"""Tests for junebug.transports.smpp.codecs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from junebug.transports.smpp import codecs
from junebug.transports.smpp.codecs import (
    DEFAULT_DATA_CODING_MAP,
    GSM_ALPHABET,
    GSM_EXTENSION_CHARACTERS,
    build_data_coding_map,
    codec_for_data_coding,
    decode,
    decode_message,
    encode,
    encode_outbound,
    fallback_codec,
    gsm_septet_count,
    is_gsm_encodable,
    normalise_codec_name,
    pack_septets,
    text_unit,
    unpack_septets,
)

gsm_text = st.text(alphabet=GSM_ALPHABET)
latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF))
ascii_text = st.text(alphabet=st.characters(max_codepoint=0x7F))
# Every code point except lone surrogates, which no codec can carry.
unicode_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]))
septets = st.binary().map(lambda data: bytes(b & 0x7F for b in data))

CODEC_ALPHABETS = [
    ("gsm0338", gsm_text),
    ("latin1", latin1_text),
    ("ascii", ascii_text),
    ("ucs2", unicode_text),
    ("utf-8", unicode_text),
]


# --- round trips ------------------------------------------------------------


# pytest-twisted runs tests in the reactor greenlet, which does not mix with
# pytest.mark.parametrize on @given tests, so the codec is drawn by hypothesis.
codec_and_text = st.sampled_from(CODEC_ALPHABETS).flatmap(
    lambda pair: st.tuples(st.just(pair[0]), pair[1])
)


@settings(max_examples=400)
@given(codec_and_text)
def test_round_trip_over_alphabet(codec_text):
    codec, text = codec_text
    assert decode(encode(text, codec), codec) == text


@given(gsm_text)
def test_gsm_is_one_septet_per_octet_and_counts_extensions_twice(text):
    encoded = encode(text, "gsm0338")
    assert all(octet <= 0x7F for octet in encoded)
    extensions = sum(1 for char in text if char in GSM_EXTENSION_CHARACTERS)
    assert len(encoded) == len(text) + extensions == gsm_septet_count(text)


@given(septets)
def test_gsm_decodes_any_septets(data):
    text = decode(data, "gsm0338")
    assert is_gsm_encodable(text)


@given(septets, st.integers(0, 6))
def test_pack_unpack_round_trip(data, fill_bits):
    packed = pack_septets(data, fill_bits)
    assert len(packed) == (len(data) * 7 + fill_bits + 7) // 8
    assert unpack_septets(packed, len(data), fill_bits) == data


@given(unicode_text)
def test_ucs2_uses_surrogate_pairs_outside_bmp(text):
    encoded = encode(text, "ucs2")
    astral = sum(1 for char in text if ord(char) > 0xFFFF)
    assert len(encoded) == 2 * (len(text) + astral)
    assert encoded == text.encode("utf-16-be")


# --- GSM 03.38 examples -------------------------------------------------------


def test_euro_sign_is_two_septets():
    assert encode("€", "gsm0338") == b"\x1b\x65"
    assert gsm_septet_count("€") == 2
    assert gsm_septet_count("5€") == 3


def test_gsm_table_samples():
    assert encode("@£$¥", "gsm0338") == b"\x00\x01\x02\x03"
    assert encode("ΔÆÉ¡¿à", "gsm0338") == b"\x10\x1c\x1f\x40\x60\x7f"
    assert encode("^{}\\[~]|\x0c", "gsm0338") == (
        b"\x1b\x14\x1b\x28\x1b\x29\x1b\x2f\x1b\x3c\x1b\x3d\x1b\x3e\x1b\x40\x1b\x0a"
    )
    assert len(GSM_ALPHABET) == 127 + 10


def test_gsm_escape_edge_cases_decode_leniently():
    # Unknown extension code shows the basic character.
    assert decode(b"\x1b\x41", "gsm0338") == "A"
    # Reserved 1B 1B and a dangling escape show a space.
    assert decode(b"a\x1b\x1bb", "gsm0338") == "a b"
    assert decode(b"a\x1b", "gsm0338") == "a "


def test_gsm_encode_errors():
    with pytest.raises(UnicodeEncodeError):
        encode("snow ☃", "gsm0338")
    assert encode("a☃b", "gsm0338", "replace") == b"a?b"
    assert encode("a☃b", "gsm0338", "ignore") == b"ab"
    assert not is_gsm_encodable("`")


def test_gsm_decode_errors():
    with pytest.raises(UnicodeDecodeError):
        decode(b"a\x80", "gsm0338")
    assert decode(b"a\x80b", "gsm0338", "replace") == "a\ufffdb"
    assert decode(b"a\x80b", "gsm0338", "ignore") == "ab"


def test_packed_known_vector():
    # The classic example: "hellohello" packs to E8 32 9B FD 46 97 D9 EC 37.
    packed = pack_septets(encode("hellohello", "gsm0338"))
    assert packed == bytes.fromhex("e8329bfd4697d9ec37")
    assert decode(unpack_septets(packed, 10), "gsm0338") == "hellohello"


def test_unpack_without_count_and_bad_input():
    assert unpack_septets(pack_septets(b"\x41" * 8)) == b"\x41" * 8
    with pytest.raises(ValueError):
        unpack_septets(b"\x00", 2)
    with pytest.raises(ValueError):
        pack_septets(b"\x80")
    with pytest.raises(ValueError):
        pack_septets(b"a", fill_bits=7)


# --- names and units ----------------------------------------------------------


def test_codec_names():
    assert normalise_codec_name("GSM0338") == "gsm0338"
    assert normalise_codec_name("ucs-2") == "ucs2"
    assert normalise_codec_name("utf-16be") == "ucs2"
    assert normalise_codec_name("latin1") == "iso8859-1"
    with pytest.raises(LookupError):
        normalise_codec_name("klingon")


def test_codec_names_are_the_same_when_asked_again():
    names = ["GSM0338", "ucs-2", "utf-16be", "latin1", " UTF-8 ", "ascii"]
    first = [normalise_codec_name(name) for name in names]
    assert [normalise_codec_name(name) for name in names] == first
    for _ in range(2):  # an unknown name is not remembered as known
        with pytest.raises(LookupError):
            normalise_codec_name("klingon")


def test_text_units():
    assert text_unit("gsm0338") == "septet"
    assert text_unit("ascii") == "septet"
    assert text_unit("ucs2") == "ucs2"
    assert text_unit("utf-16be") == "ucs2"
    assert text_unit("latin1") == "octet"
    assert text_unit("utf-8") == "octet"


# --- data_coding --------------------------------------------------------------


def test_default_map_matches_the_original():
    assert dict(DEFAULT_DATA_CODING_MAP) == {
        1: "ascii",
        3: "latin1",
        5: "iso2022_jp",
        6: "iso8859_5",
        7: "iso8859_8",
        8: "utf-16be",
        9: "shift_jis",
        10: "iso2022_jp",
    }
    for unmapped in (0, 2, 4):
        assert codec_for_data_coding(unmapped) is None


def test_overrides_accept_string_keys():
    codec_map = build_data_coding_map({"0": "gsm0338", 3: "cp1252"})
    assert codec_map[0] == "gsm0338"
    assert codec_map[3] == "cp1252"
    assert codec_map[8] == "utf-16be"
    assert build_data_coding_map(None) == dict(DEFAULT_DATA_CODING_MAP)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"zero": "latin1"}, ValueError),
        ({"256": "latin1"}, ValueError),
        ({"0": "nope"}, LookupError),
    ],
)
def test_bad_overrides_are_rejected(overrides, error):
    with pytest.raises(error):
        build_data_coding_map(overrides)


def test_decode_with_mapped_codec():
    result = decode_message("olá".encode("latin-1"), 3)
    assert result == codecs.DecodedText("olá", "latin1", 3, False)
    codec_map = build_data_coding_map({"0": "gsm0338"})
    assert decode_message(b"\x1bea", 0, codec_map).text == "€a"


def test_decode_unmapped_smpp_values_falls_back_to_utf8_then_latin1():
    result = decode_message("héllo".encode(), 0)
    assert (result.text, result.codec, result.fallback) == ("héllo", "utf-8", True)
    result = decode_message(b"\xff\xfe", 0)
    assert (result.text, result.codec, result.fallback) == ("ÿþ", "latin1", True)


def test_decode_mapped_codec_failure_falls_back():
    # data_coding 1 is ASCII, but the bytes are not.
    result = decode_message("é".encode(), 1)
    assert (result.text, result.fallback) == ("é", True)


def test_unknown_data_coding_is_kept_as_int_and_decoded():
    # 0xF0..0xFF: bit 2 clear means the default alphabet (here unpacked GSM).
    result = decode_message(b"\x00hi", 0xF1)
    assert (result.text, result.codec, result.data_coding) == ("@hi", "gsm0338", 0xF1)
    # 0x18: general group, UCS2 alphabet.
    assert decode_message("😀".encode("utf-16-be"), 0x18).text == "😀"
    # Odd-length UCS2 cannot raise either.
    assert decode_message(b"\x00a\x00", 0x18).text == "a\ufffd"
    # 0xF4: 8-bit data.
    assert decode_message(b"\xff", 0xF4).text == "ÿ"
    assert decode_message(b"ab", 0x99).text == "ab"


@pytest.mark.parametrize(
    ("data_coding", "codec"),
    [
        (0x00, "utf-8"),
        (0x04, "utf-8"),
        (0x10, "gsm0338"),
        (0x14, "utf-8"),
        (0x18, "ucs2"),
        (0x30, "utf-8"),
        (0x48, "ucs2"),
        (0x80, "utf-8"),
        (0xC0, "gsm0338"),
        (0xE0, "ucs2"),
        (0xF0, "gsm0338"),
        (0xF6, "utf-8"),
    ],
)
def test_fallback_codec(data_coding, codec):
    assert fallback_codec(data_coding) == codec


@given(st.binary(max_size=300), st.integers(0, 255))
def test_decode_message_never_raises(data, data_coding):
    result = decode_message(data, data_coding)
    assert isinstance(result.text, str)
    assert result.data_coding == data_coding


# --- outbound -----------------------------------------------------------------


def test_encode_outbound_defaults_like_the_original():
    assert encode_outbound("héllo") == codecs.EncodedText(0, "héllo".encode(), "utf-8")
    assert encode_outbound(None).payload == b""


def test_encode_outbound_with_configured_codec():
    result = encode_outbound("hi 😀", "ucs2", 8)
    assert (result.data_coding, result.payload, result.codec) == (
        8,
        "hi 😀".encode("utf-16-be"),
        "ucs2",
    )
    assert encode_outbound("€", "gsm0338").payload == b"\x1b\x65"


def test_encode_outbound_errors():
    with pytest.raises(UnicodeEncodeError):
        encode_outbound("☃", "gsm0338")
    with pytest.raises(LookupError):
        encode_outbound("a", "nope")
    with pytest.raises(ValueError):
        encode_outbound("a", "utf-8", 256)
