"""Text encodings for SMPP: GSM 03.38, UCS2 and the data_coding table.

Everything here is pure (no I/O, no reactor). Codecs are named by strings so
they can come from channel config:

* ``"gsm0338"``: the GSM 03.38 default alphabet plus its basic extension
  table, one septet per octet ("unpacked"), which is how SMPP usually carries
  7-bit text. Extension characters (``€ [ ] { } \\ ^ ~ |`` and form feed) are
  written as the escape septet ``0x1B`` followed by their code, so they count
  as two septets. ``pack_septets`` / ``unpack_septets`` convert to and from
  the packed air-interface form.
* ``"ucs2"``: UTF-16-BE. Characters outside the BMP become surrogate pairs
  (four octets), as handsets do in practice.
* any other name Python's :mod:`codecs` knows (``latin1``, ``ascii``,
  ``utf-8``, ``shift_jis``...).

``DEFAULT_DATA_CODING_MAP`` is the original vumi transport's table of
data_coding values to codecs; ``build_data_coding_map`` merges the channel's
``data_coding_overrides`` over it. ``decode_message`` never raises: values the
map does not know are interpreted through the GSM 03.38 data coding scheme
bits, with UTF-8 then Latin-1 as the last resort, and the result says when such
a fallback was used. ``encode_outbound`` picks the data_coding and bytes for an
outbound text from ``submit_sm_encoding`` / ``submit_sm_data_coding``.
"""

from __future__ import annotations

import codecs as _pycodecs
from collections.abc import Mapping
from typing import Literal

import attrs

__all__ = [
    "DEFAULT_DATA_CODING_MAP",
    "GSM0338",
    "UCS2",
    "DecodedText",
    "EncodedText",
    "build_data_coding_map",
    "codec_for_data_coding",
    "decode",
    "decode_message",
    "encode",
    "encode_outbound",
    "fallback_codec",
    "gsm_septet_count",
    "is_gsm_encodable",
    "normalise_codec_name",
    "pack_septets",
    "text_unit",
    "unpack_septets",
]

GSM0338 = "gsm0338"
UCS2 = "ucs2"

#: SMPP 3.4 data_coding values (5.2.19). Others are GSM 03.38 data coding schemes.
DC_SMSC_DEFAULT = 0x00
DC_IA5 = 0x01
DC_OCTET_UNSPECIFIED = 0x02
DC_LATIN1 = 0x03
DC_OCTET_UNSPECIFIED_2 = 0x04
DC_JIS = 0x05
DC_CYRILLIC = 0x06
DC_LATIN_HEBREW = 0x07
DC_UCS2 = 0x08
DC_PICTOGRAM = 0x09
DC_ISO2022_JP = 0x0A
DC_EXTENDED_KANJI = 0x0D
DC_KS_C_5601 = 0x0E

#: The original transport's built-in map. 0 (SMSC default), 2 and 4 (binary) are
#: deliberately absent: what they mean depends on the SMSC.
DEFAULT_DATA_CODING_MAP: Mapping[int, str] = {
    DC_IA5: "ascii",
    DC_LATIN1: "latin1",
    DC_JIS: "iso2022_jp",
    DC_CYRILLIC: "iso8859_5",
    DC_LATIN_HEBREW: "iso8859_8",
    DC_UCS2: "utf-16be",
    DC_PICTOGRAM: "shift_jis",
    DC_ISO2022_JP: "iso2022_jp",
}

# --------------------------------------------------------------------------
# GSM 03.38 tables

ESCAPE = 0x1B

# The default alphabet in code order, 0x00..0x7F. 0x1B is the escape septet and
# has no character of its own (it decodes through the extension table).
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_GSM_BASIC) == 128

# Code after the escape septet -> character.
_GSM_EXTENSION = {
    0x0A: "\x0c",  # page break (form feed)
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_GSM_ENCODE: dict[str, bytes] = {}
for _code, _char in enumerate(_GSM_BASIC):
    if _code != ESCAPE:
        _GSM_ENCODE[_char] = bytes([_code])
for _code, _char in _GSM_EXTENSION.items():
    _GSM_ENCODE[_char] = bytes([ESCAPE, _code])
del _code, _char

#: Every character the GSM codec can encode, basic table first.
GSM_ALPHABET = "".join(_GSM_ENCODE)
#: The characters that cost two septets.
GSM_EXTENSION_CHARACTERS = "".join(_GSM_EXTENSION.values())

Errors = Literal["strict", "replace", "ignore"]


def _gsm_encode(text: str, errors: str = "strict") -> bytes:
    out = bytearray()
    for index, char in enumerate(text):
        code = _GSM_ENCODE.get(char)
        if code is not None:
            out += code
        elif errors == "strict":
            raise UnicodeEncodeError(
                GSM0338, text, index, index + 1, "character not in the GSM 03.38 alphabet"
            )
        elif errors == "replace":
            out += _GSM_ENCODE["?"]
        elif errors != "ignore":
            raise LookupError(f"unsupported error handler {errors!r}")
    return bytes(out)


def _gsm_decode(data: bytes, errors: str = "strict") -> str:
    out: list[str] = []
    index = 0
    length = len(data)
    while index < length:
        code = data[index]
        if code > 0x7F:
            if errors == "strict":
                raise UnicodeDecodeError(
                    GSM0338, bytes(data), index, index + 1, "octet is not a 7-bit septet"
                )
            if errors == "replace":
                out.append("\ufffd")
            elif errors != "ignore":
                raise LookupError(f"unsupported error handler {errors!r}")
            index += 1
            continue
        if code != ESCAPE:
            out.append(_GSM_BASIC[code])
            index += 1
            continue
        # Escape: per GSM 03.38, an unknown extension code shows the basic
        # character; 0x1B 0x1B (reserved) and a dangling escape show a space.
        following = data[index + 1] if index + 1 < length else None
        if following is None:
            out.append(" ")
            index += 1
        elif following in _GSM_EXTENSION:
            out.append(_GSM_EXTENSION[following])
            index += 2
        elif following == ESCAPE:
            out.append(" ")
            index += 2
        elif following > 0x7F:
            # Let the main loop deal with the bad octet.
            out.append(" ")
            index += 1
        else:
            out.append(_GSM_BASIC[following])
            index += 2
    return "".join(out)


def is_gsm_encodable(text: str) -> bool:
    """Return whether every character of ``text`` is in the GSM 03.38 alphabet."""
    return all(char in _GSM_ENCODE for char in text)


def gsm_septet_count(text: str) -> int:
    """Return the septets ``text`` takes in GSM 03.38 (extension characters count 2).

    Raises ``UnicodeEncodeError`` when a character is not in the alphabet.
    """
    return len(_gsm_encode(text))


# --------------------------------------------------------------------------
# Packed 7-bit


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack unpacked septets (one per octet) into the 7-bit air format.

    ``fill_bits`` (0..6) zero bits are put first, which is how text is aligned
    to a septet boundary after a user data header. Septets are taken from the
    low 7 bits of each octet, least significant bit first.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be between 0 and 6")
    accumulator = 0
    bit_count = fill_bits
    out = bytearray()
    for septet in septets:
        if septet > 0x7F:
            raise ValueError(f"{septet:#04x} is not a septet")
        accumulator |= septet << bit_count
        bit_count += 7
        while bit_count >= 8:
            out.append(accumulator & 0xFF)
            accumulator >>= 8
            bit_count -= 8
    if bit_count:
        out.append(accumulator & 0xFF)
    return bytes(out)


def unpack_septets(data: bytes, count: int | None = None, fill_bits: int = 0) -> bytes:
    """Unpack 7-bit packed ``data`` into one septet per octet.

    ``count`` is the number of septets (the SMS user data length); without it
    every whole septet in ``data`` is returned, so a text of 8n-1 septets gains
    a trailing ``0x00`` ('@') unless the sender padded with CR, as GSM 03.38
    recommends. ``fill_bits`` leading bits are skipped first.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be between 0 and 6")
    available = (len(data) * 8 - fill_bits) // 7
    if count is None:
        count = available
    elif count > available:
        raise ValueError(f"{count} septets requested, {available} available")
    value = int.from_bytes(data, "little") >> fill_bits
    return bytes((value >> (7 * index)) & 0x7F for index in range(count))


# --------------------------------------------------------------------------
# Codec names

_GSM_ALIASES = frozenset({"gsm0338", "gsm03.38", "gsm_0338", "gsm-0338", "gsm", "gsm7"})
_UCS2_ALIASES = frozenset({"ucs2", "ucs-2", "ucs_2"})


def normalise_codec_name(name: str) -> str:
    """Return the canonical name of codec ``name``; raise ``LookupError`` if unknown.

    Our own codecs are ``"gsm0338"`` and ``"ucs2"``; the rest are Python codec
    names (``"latin1"`` -> ``"iso8859-1"``, ``"utf-16be"`` -> ``"utf-16-be"``).
    """
    known = _CANONICAL_NAMES.get(name) if type(name) is str else None
    if known is not None:
        return known
    lowered = name.strip().lower()
    if lowered in _GSM_ALIASES:
        canonical = GSM0338
    elif lowered in _UCS2_ALIASES:
        canonical = UCS2
    else:
        canonical = _pycodecs.lookup(lowered).name
        if canonical == "utf-16-be":
            canonical = UCS2
    if type(name) is str and len(_CANONICAL_NAMES) < _MAX_CANONICAL_NAMES:
        _CANONICAL_NAMES[name] = canonical
    return canonical


# normalise_codec_name is called a few times for every message sent (encoding,
# splitting, sizing); the names it has seen are few (those of the channels' configs).
# Python caches its own codec lookups, so a name's answer never changes; unknown names
# raise and are not kept.
_CANONICAL_NAMES: dict[str, str] = {}
_MAX_CANONICAL_NAMES = 256


def encode(text: str, codec: str, errors: Errors = "strict") -> bytes:
    """Encode ``text`` with ``codec`` (see module doc); errors as in ``str.encode``."""
    name = normalise_codec_name(codec)
    if name == GSM0338:
        return _gsm_encode(text, errors)
    if name == UCS2:
        return text.encode("utf-16-be", errors)
    return text.encode(name, errors)


def decode(data: bytes, codec: str, errors: Errors = "strict") -> str:
    """Decode ``data`` with ``codec`` (see module doc); errors as in ``bytes.decode``."""
    name = normalise_codec_name(codec)
    if name == GSM0338:
        return _gsm_decode(data, errors)
    if name == UCS2:
        return bytes(data).decode("utf-16-be", errors)
    return bytes(data).decode(name, errors)


TextUnit = Literal["septet", "octet", "ucs2"]


def text_unit(codec: str) -> TextUnit:
    """Return how an SMSC counts a codec's text against the 140-octet user data.

    ``"septet"`` (GSM 03.38 and ASCII/IA5: 160 per message), ``"ucs2"``
    (16-bit units: 70 per message) or ``"octet"`` (140 per message).
    """
    name = normalise_codec_name(codec)
    if name in (GSM0338, "ascii"):
        return "septet"
    if name == UCS2:
        return "ucs2"
    return "octet"


# --------------------------------------------------------------------------
# data_coding


def build_data_coding_map(overrides: Mapping[str | int, str] | None = None) -> dict[int, str]:
    """Merge ``data_coding_overrides`` over ``DEFAULT_DATA_CODING_MAP``.

    Keys may be ints or int-like strings (JSON objects only have string keys:
    ``{"0": "gsm0338"}``). Raises ``ValueError`` for a key that is not an
    integer 0..255 and ``LookupError`` for an unknown codec name, so the
    channel config can be rejected up front.
    """
    result = dict(DEFAULT_DATA_CODING_MAP)
    for key, codec in (overrides or {}).items():
        try:
            data_coding = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"data_coding_overrides key {key!r} is not an integer") from None
        if not 0 <= data_coding <= 0xFF:
            raise ValueError(f"data_coding_overrides key {key!r} is not between 0 and 255")
        normalise_codec_name(codec)
        result[data_coding] = codec
    return result


def codec_for_data_coding(
    data_coding: int, codec_map: Mapping[int, str] | None = None
) -> str | None:
    """Return the configured codec for ``data_coding``, or ``None`` if unmapped."""
    if codec_map is None:
        codec_map = DEFAULT_DATA_CODING_MAP
    return codec_map.get(data_coding)


def fallback_codec(data_coding: int) -> str:
    """Return the best guess of a codec for a data_coding the map does not know.

    SMPP's own values 0x00..0x0F guess ``utf-8`` (decode_message then falls
    back to Latin-1, which cannot fail). From 0x10 on the value is read as a
    GSM 03.38 data coding scheme: its alphabet bits choose ``gsm0338``
    (unpacked), ``ucs2`` or 8-bit data (``utf-8``). Compressed text and
    reserved groups also get ``utf-8``.
    """
    if data_coding < 0x10:
        return "utf-8"
    group = data_coding >> 4
    if group <= 0x7:
        # General data coding (0x00..0x3F) and automatic deletion (0x40..0x7F).
        if data_coding & 0x20:
            return "utf-8"  # compressed: nothing sensible to decode
        alphabet = (data_coding >> 2) & 0x3
        return {0: GSM0338, 1: "utf-8", 2: UCS2}.get(alphabet, "utf-8")
    if group in (0xC, 0xD):
        return GSM0338  # message waiting indication, default alphabet
    if group == 0xE:
        return UCS2  # message waiting indication, UCS2
    if group == 0xF:
        return "utf-8" if data_coding & 0x04 else GSM0338
    return "utf-8"  # reserved groups 0x8..0xB


@attrs.frozen
class DecodedText:
    """What ``decode_message`` made of some bytes."""

    text: str
    #: The codec that produced ``text``.
    codec: str
    #: The data_coding as received (kept as an int even when unknown).
    data_coding: int
    #: False when the configured codec decoded the bytes strictly; True when a
    #: guessed codec or a lossy error handler was needed (worth a log line, or
    #: rejecting the message if the channel wants the original's strictness).
    fallback: bool


def decode_message(
    data: bytes, data_coding: int, codec_map: Mapping[int, str] | None = None
) -> DecodedText:
    """Decode an inbound short_message / message_payload; never raises.

    Tries the mapped codec strictly; then, for an unmapped data_coding, the
    ``fallback_codec`` guess strictly; then Latin-1 for 8-bit guesses (every
    octet decodes) or the guessed codec with ``errors="replace"``.
    """
    data = bytes(data)
    mapped = codec_for_data_coding(data_coding, codec_map)
    if mapped is not None:
        try:
            return DecodedText(decode(data, mapped), mapped, data_coding, False)
        except (UnicodeDecodeError, LookupError):
            pass
    guess = fallback_codec(data_coding)
    try:
        return DecodedText(decode(data, guess), guess, data_coding, True)
    except UnicodeDecodeError:
        pass
    if guess == "utf-8":
        return DecodedText(data.decode("latin-1"), "latin1", data_coding, True)
    return DecodedText(decode(data, guess, "replace"), guess, data_coding, True)


@attrs.frozen
class EncodedText:
    """Outbound text ready for a submit_sm."""

    data_coding: int
    payload: bytes
    #: Canonical name of the codec used (for splitting into parts).
    codec: str


def encode_outbound(
    text: str | None,
    submit_sm_encoding: str = "utf-8",
    submit_sm_data_coding: int = 0,
    errors: Errors = "strict",
) -> EncodedText:
    """Encode outbound ``text`` as the channel is configured to.

    As in the original, ``submit_sm_data_coding`` is used as given: the
    operator pairs it with ``submit_sm_encoding`` (e.g. ``ucs2`` with 8,
    ``gsm0338`` or ``utf-8`` with 0). ``None`` content is sent as empty text.
    Raises ``UnicodeEncodeError`` (with ``errors="strict"``) when the text has
    characters the codec cannot carry, ``LookupError`` for an unknown codec and
    ``ValueError`` for a data_coding outside 0..255.
    """
    if not 0 <= submit_sm_data_coding <= 0xFF:
        raise ValueError(f"data_coding {submit_sm_data_coding!r} is not between 0 and 255")
    codec = normalise_codec_name(submit_sm_encoding)
    payload = encode(text or "", codec, errors)
    return EncodedText(submit_sm_data_coding, payload, codec)
