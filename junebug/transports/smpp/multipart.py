"""Long messages over SMPP: splitting outbound text, reassembling inbound parts.

Pure logic: the protocol turns the ``Part`` values returned by ``split_text``
into submit_sm PDUs, and feeds inbound parts (found by ``split_user_data`` or
``ConcatInfo.from_sar``) to a ``Reassembler``.

Outbound styles (one per channel, from the original's config flags, see
``style_from_config``):

* ``"short_message"``: one PDU, the whole text in short_message, no split.
* ``"message_payload"``: one PDU, the whole text in the message_payload TLV.
* ``"sar"``: split; each part carries sar_msg_ref_num / sar_total_segments /
  sar_segment_seqnum TLVs and the SMSC builds the headers.
* ``"udh"``: split; each part's short_message starts with a user data header
  holding the concatenation IE (0x00 with an 8-bit reference, or 0x08 with a
  16-bit one) and the PDU's esm_class gets the UDHI bit (0x40).

Text that fits in one message (160 septets, 70 UCS2 characters or 140 octets)
is sent as a single plain part in every style but message_payload. Longer text
is cut on character boundaries, so a GSM escape sequence or a UTF-16 surrogate
pair is never split, into parts of at most 153 septets, 67 UCS2 characters
(134 octets) or 134 octets (152 / 66 / 133 with a 16-bit reference UDH).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from junebug.transports.smpp.codecs import (
    GSM_EXTENSION_CHARACTERS,
    encode,
    normalise_codec_name,
    text_unit,
)

__all__ = [
    "ESM_CLASS_UDHI",
    "IEI_CONCAT_8BIT",
    "IEI_CONCAT_16BIT",
    "ConcatInfo",
    "ExpiredSet",
    "MalformedUDH",
    "MessageTooLong",
    "Part",
    "Reassembler",
    "ReferenceCounter",
    "UserDataHeader",
    "build_concat_udh",
    "parse_udh",
    "part_capacity",
    "reference_from_sequence",
    "split_text",
    "text_size",
    "split_user_data",
    "style_from_config",
]

ESM_CLASS_UDHI = 0x40
IEI_CONCAT_8BIT = 0x00
IEI_CONCAT_16BIT = 0x08

#: Octets of user data in one SMS.
USER_DATA_OCTETS = 140
#: Length of a concatenation UDH (including its length octet) by reference size.
CONCAT_UDH_LENGTH = {8: 6, 16: 7}
#: The most parts a message can have (sar_total_segments / the IE are one octet).
MAX_PARTS = 255

Style = Literal["short_message", "message_payload", "sar", "udh"]
STYLES: tuple[str, ...] = ("short_message", "message_payload", "sar", "udh")


class MessageTooLong(ValueError):
    """The text needs more than ``MAX_PARTS`` parts."""


class MalformedUDH(ValueError):
    """A user data header whose lengths do not add up."""


def style_from_config(
    send_long_messages: bool = False,
    send_multipart_sar: bool = False,
    send_multipart_udh: bool = False,
) -> Style:
    """Map the original's three mutually exclusive flags to a style name.

    Raises ``ValueError`` when more than one flag is set.
    """
    flags = {
        "message_payload": send_long_messages,
        "sar": send_multipart_sar,
        "udh": send_multipart_udh,
    }
    chosen = [style for style, enabled in flags.items() if enabled]
    if len(chosen) > 1:
        raise ValueError(
            "send_long_messages, send_multipart_sar and send_multipart_udh are mutually exclusive"
        )
    return chosen[0] if chosen else "short_message"  # type: ignore[return-value]


def part_capacity(codec: str, udh_length: int = 0) -> int:
    """Return how much text one part may hold, as counted by ``text_size``.

    ``udh_length`` is the size of the user data header (with its length
    octet) the part travels with: 0 for a single message, 6 or 7 for a
    concatenation header. For 7-bit codecs the payload is unpacked (one septet
    per octet), so the figure is septets: 160, 153, 152. UCS2 is rounded down
    to whole 16-bit units: 140, 134, 132. Other codecs: 140, 134, 133.
    """
    octets = USER_DATA_OCTETS - udh_length
    unit = text_unit(codec)
    if unit == "septet":
        return octets * 8 // 7
    if unit == "ucs2":
        return octets - octets % 2
    return octets


@attrs.frozen
class Part:
    """One submit_sm worth of a message."""

    #: The encoded text of this part (without any header).
    payload: bytes
    #: User data header to put before ``payload`` in short_message, or None.
    udh: bytes | None = None
    #: ``{"sar_msg_ref_num", "sar_total_segments", "sar_segment_seqnum"}`` TLV
    #: values, or None.
    sar: Mapping[str, int] | None = None
    #: True when ``payload`` goes in the message_payload TLV and short_message
    #: stays empty.
    message_payload: bool = False

    @property
    def esm_class_flags(self) -> int:
        """Bits to OR into the PDU's esm_class (``ESM_CLASS_UDHI`` with a UDH)."""
        return ESM_CLASS_UDHI if self.udh is not None else 0

    @property
    def short_message(self) -> bytes:
        """The short_message field of the PDU."""
        if self.message_payload:
            return b""
        return (self.udh or b"") + self.payload


class ReferenceCounter:
    """Hands out concatenation references, rolling over as configured.

    ``rollover`` is ``multipart_sar_reference_rollover`` (default 0x10000);
    values also wrap at the width of the field they go into, so with the
    default an 8-bit UDH reference cycles through 0..255.
    """

    def __init__(self, rollover: int = 0x10000, start: int = 0) -> None:
        if not 1 <= rollover <= 0x10000:
            raise ValueError("multipart_sar_reference_rollover must be between 1 and 65536")
        self.rollover = rollover
        self._value = start

    def next(self, bits: int = 16) -> int:
        """Return the next reference for a field of ``bits`` (8 or 16) bits."""
        value = self._value
        self._value += 1
        return reference_from_sequence(value, self.rollover, bits)


def reference_from_sequence(sequence: int, rollover: int = 0x10000, bits: int = 16) -> int:
    """Turn a shared sequence number (e.g. a Redis counter) into a reference."""
    if bits not in CONCAT_UDH_LENGTH:
        raise ValueError("reference bits must be 8 or 16")
    return sequence % min(rollover, 1 << bits)


def build_concat_udh(reference: int, total: int, seqnum: int, reference_bits: int = 8) -> bytes:
    """Return a user data header (with its length octet) holding one concatenation IE."""
    if not 1 <= seqnum <= total <= MAX_PARTS:
        raise ValueError(f"bad part numbering {seqnum}/{total}")
    if reference_bits == 8:
        if not 0 <= reference <= 0xFF:
            raise ValueError(f"reference {reference} does not fit in 8 bits")
        return bytes([5, IEI_CONCAT_8BIT, 3, reference, total, seqnum])
    if reference_bits == 16:
        if not 0 <= reference <= 0xFFFF:
            raise ValueError(f"reference {reference} does not fit in 16 bits")
        return (
            bytes([6, IEI_CONCAT_16BIT, 4]) + reference.to_bytes(2, "big") + bytes([total, seqnum])
        )
    raise ValueError("reference bits must be 8 or 16")


def text_size(text: str, codec: str) -> int:
    """Return what ``text`` costs against ``part_capacity`` once encoded with ``codec``.

    That is the encoded length, except for ASCII (IA5), which SMSCs carry as
    GSM 7-bit: there ``[ ] { } \\ ^ ~ |`` cost two septets each.
    """
    codec = normalise_codec_name(codec)
    if codec == "ascii":
        encode(text, codec)  # raises UnicodeEncodeError for non-ASCII text
        return len(text) + sum(1 for char in text if char in GSM_EXTENSION_CHARACTERS)
    return len(encode(text, codec))


def _chunk(text: str, codec: str, capacity: int) -> list[str]:
    """Cut ``text`` on character boundaries into pieces of at most ``capacity``."""
    sizes: dict[str, int] = {}

    def size_of(char: str) -> int:
        size = sizes.get(char)
        if size is None:
            size = sizes[char] = text_size(char, codec)
        return size

    chunks: list[str] = []
    start = 0
    length = len(text)
    while start < length:
        # Estimate from per-character sizes, then check the whole piece
        # (stateful codecs such as iso2022_jp do not simply add up).
        end = start
        used = 0
        while end < length and used + size_of(text[end]) <= capacity:
            used += size_of(text[end])
            end += 1
        end = max(end, start + 1)
        while text_size(text[start:end], codec) > capacity and end > start + 1:
            end -= 1
        if text_size(text[start:end], codec) > capacity:
            raise ValueError(f"character {text[start]!r} does not fit in a part")
        chunks.append(text[start:end])
        start = end
    return chunks


def split_text(
    text: str,
    codec: str,
    style: Style = "short_message",
    reference: int = 0,
    *,
    udh_reference_bits: int = 8,
    sar_udh_length: int = CONCAT_UDH_LENGTH[8],
) -> list[Part]:
    """Encode ``text`` with ``codec`` and cut it into parts for ``style``.

    ``reference`` is the concatenation reference for this message (see
    ``ReferenceCounter``); it must fit its field: 8 bits for ``"udh"`` with
    ``udh_reference_bits=8``, 16 bits otherwise. SAR parts leave room for the
    header the SMSC will add (``sar_udh_length`` octets, the 8-bit-reference
    size by default).

    Raises ``UnicodeEncodeError`` when the codec cannot carry the text,
    ``MessageTooLong`` beyond 255 parts and ``ValueError`` for a bad style or
    reference.
    """
    if style not in STYLES:
        raise ValueError(f"unknown long message style {style!r}")
    codec = normalise_codec_name(codec)
    whole = encode(text, codec)
    if style == "short_message":
        return [Part(whole)]
    if style == "message_payload":
        return [Part(whole, message_payload=True)]
    if text_size(text, codec) <= part_capacity(codec):
        return [Part(whole)]

    if style == "udh":
        reference_bits = udh_reference_bits
        if reference_bits not in CONCAT_UDH_LENGTH:
            raise ValueError("udh_reference_bits must be 8 or 16")
        header_length = CONCAT_UDH_LENGTH[reference_bits]
    else:
        reference_bits = 16
        header_length = sar_udh_length
    if not 0 <= reference < 1 << reference_bits:
        raise ValueError(f"reference {reference} does not fit in {reference_bits} bits")

    chunks = [
        encode(chunk, codec) for chunk in _chunk(text, codec, part_capacity(codec, header_length))
    ]
    total = len(chunks)
    if total > MAX_PARTS:
        raise MessageTooLong(f"text needs {total} parts, at most {MAX_PARTS} are possible")
    parts = []
    for seqnum, payload in enumerate(chunks, start=1):
        if style == "udh":
            udh = build_concat_udh(reference, total, seqnum, reference_bits)
            parts.append(Part(payload, udh=udh))
        else:
            sar = {
                "sar_msg_ref_num": reference,
                "sar_total_segments": total,
                "sar_segment_seqnum": seqnum,
            }
            parts.append(Part(payload, sar=sar))
    return parts


# --------------------------------------------------------------------------
# Inbound


@attrs.frozen
class ConcatInfo:
    """Where one inbound part belongs: reference, part count, 1-based number."""

    reference: int
    total: int
    seqnum: int
    #: 8 for the 0x00 IE; 16 for the 0x08 IE and for SAR TLVs.
    reference_bits: int = 8

    @classmethod
    def from_sar(
        cls,
        sar_msg_ref_num: int | None,
        sar_total_segments: int | None,
        sar_segment_seqnum: int | None,
    ) -> ConcatInfo | None:
        """Build from the sar_* TLV values; None if any is missing or inconsistent."""
        if sar_msg_ref_num is None or sar_total_segments is None or sar_segment_seqnum is None:
            return None
        if not 1 <= sar_segment_seqnum <= sar_total_segments:
            return None
        return cls(sar_msg_ref_num, sar_total_segments, sar_segment_seqnum, 16)


def _concat_from_ie(iei: int, data: bytes) -> ConcatInfo | None:
    if iei == IEI_CONCAT_8BIT and len(data) == 3:
        reference, total, seqnum = data
        bits = 8
    elif iei == IEI_CONCAT_16BIT and len(data) == 4:
        reference = int.from_bytes(data[:2], "big")
        total, seqnum = data[2], data[3]
        bits = 16
    else:
        return None
    # GSM 03.40: an IE with a zero count or an out-of-range number is ignored.
    if not 1 <= seqnum <= total:
        return None
    return ConcatInfo(reference, total, seqnum, bits)


@attrs.frozen
class UserDataHeader:
    """A parsed user data header: every IE in order, concatenation picked out."""

    #: ``(IEI, data)`` pairs as they appeared.
    elements: tuple[tuple[int, bytes], ...]

    @property
    def concat(self) -> ConcatInfo | None:
        """The (last valid) concatenation IE, or None."""
        found = None
        for iei, data in self.elements:
            info = _concat_from_ie(iei, data)
            if info is not None:
                found = info
        return found

    @property
    def other_elements(self) -> tuple[tuple[int, bytes], ...]:
        """The IEs that are not concatenation IEs, untouched."""
        return tuple(
            (iei, data)
            for iei, data in self.elements
            if iei not in (IEI_CONCAT_8BIT, IEI_CONCAT_16BIT)
        )

    def to_bytes(self) -> bytes:
        """Serialise back to octets, length octet first."""
        body = b"".join(bytes([iei, len(data)]) + data for iei, data in self.elements)
        return bytes([len(body)]) + body


def parse_udh(user_data: bytes) -> tuple[UserDataHeader, bytes]:
    """Parse the header at the start of ``user_data`` (length octet first).

    Returns the header and the user data that follows it. Raises
    ``MalformedUDH`` when the lengths run past the data.
    """
    if not user_data:
        raise MalformedUDH("empty user data")
    header_length = user_data[0]
    if header_length + 1 > len(user_data):
        raise MalformedUDH(f"header length {header_length} exceeds the data")
    body = user_data[1 : header_length + 1]
    elements = []
    index = 0
    while index < len(body):
        if index + 2 > len(body):
            raise MalformedUDH("truncated information element")
        iei, length = body[index], body[index + 1]
        end = index + 2 + length
        if end > len(body):
            raise MalformedUDH(f"information element {iei:#04x} runs past the header")
        elements.append((iei, bytes(body[index + 2 : end])))
        index = end
    return UserDataHeader(tuple(elements)), bytes(user_data[header_length + 1 :])


def split_user_data(
    short_message: bytes, esm_class: int = 0, *, sniff: bool = False
) -> tuple[UserDataHeader | None, bytes]:
    """Separate a header from the text of an inbound short_message.

    The header is parsed when esm_class has the UDHI bit; with ``sniff`` also
    when the data merely starts like a concatenation header (``05 00 03`` or
    ``06 08 04``), for SMSCs that forget the bit, as the original accepted.
    Returns ``(None, short_message)`` when there is no header. Raises
    ``MalformedUDH`` for a UDHI message whose header does not parse.
    """
    data = bytes(short_message)
    if esm_class & ESM_CLASS_UDHI:
        return parse_udh(data)
    if sniff and (
        (len(data) >= 6 and data[:3] == b"\x05\x00\x03")
        or (len(data) >= 7 and data[:3] == b"\x06\x08\x04")
    ):
        header, rest = parse_udh(data)
        if header.concat is not None:
            return header, rest
    return None, data


@attrs.frozen
class ExpiredSet:
    """An incomplete message dropped by a ``Reassembler`` (for logging)."""

    source: Any
    reference: int
    total: int
    #: Part number -> payload of the parts that did arrive.
    received: Mapping[int, bytes]
    #: clock.seconds() when the first part arrived.
    started: float
    #: ``"timeout"``, or ``"superseded"`` when a part with the same key but a
    #: different part count started a new set.
    reason: str = "timeout"

    @property
    def missing(self) -> list[int]:
        """The part numbers that never arrived."""
        return [n for n in range(1, self.total + 1) if n not in self.received]


@attrs.define
class _PartSet:
    total: int
    started: float
    timer: IDelayedCall | None
    parts: dict[int, bytes] = attrs.Factory(dict)


class Reassembler:
    """Collects inbound parts until a message is whole.

    Parts are keyed by ``(source, reference)``; ``source`` is normally the
    sender's address but any hashable will do (e.g. ``(source, destination)``).
    Parts may arrive in any order; a repeated part number keeps the first
    payload. A set still incomplete ``timeout`` seconds after its first part
    is dropped and handed to ``on_expired``. Time comes from ``clock``
    (the reactor, or ``task.Clock`` in tests).
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float = 300.0,
        on_expired: Callable[[ExpiredSet], object] | None = None,
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.on_expired = on_expired
        self._sets: dict[tuple[Hashable, int], _PartSet] = {}

    def __len__(self) -> int:
        """The number of incomplete messages held."""
        return len(self._sets)

    def add(self, source: Hashable, info: ConcatInfo, payload: bytes) -> bytes | None:
        """Store one part; return the whole message's payload once every part is in.

        The payloads are joined in part order and returned undecoded (decode
        them with the data_coding of the parts). Returns None while parts are
        missing. Raises ``ValueError`` for impossible numbering.
        """
        if not 1 <= info.seqnum <= info.total:
            raise ValueError(f"bad part numbering {info.seqnum}/{info.total}")
        if info.total == 1:
            return bytes(payload)
        key = (source, info.reference)
        part_set = self._sets.get(key)
        if part_set is not None and part_set.total != info.total:
            self._drop(key, "superseded")
            part_set = None
        if part_set is None:
            part_set = _PartSet(total=info.total, started=self.clock.seconds(), timer=None)
            part_set.timer = self.clock.callLater(self.timeout, self._drop, key, "timeout")
            self._sets[key] = part_set
        part_set.parts.setdefault(info.seqnum, bytes(payload))
        if len(part_set.parts) < part_set.total:
            return None
        del self._sets[key]
        if part_set.timer is not None and part_set.timer.active():
            part_set.timer.cancel()
        return b"".join(part_set.parts[n] for n in range(1, part_set.total + 1))

    def _drop(self, key: tuple[Hashable, int], reason: str) -> None:
        part_set = self._sets.pop(key, None)
        if part_set is None:
            return
        if part_set.timer is not None and part_set.timer.active():
            part_set.timer.cancel()
        if self.on_expired is not None:
            source, reference = key
            self.on_expired(
                ExpiredSet(
                    source=source,
                    reference=reference,
                    total=part_set.total,
                    received=dict(sorted(part_set.parts.items())),
                    started=part_set.started,
                    reason=reason,
                )
            )

    def clear(self) -> None:
        """Forget every incomplete set and cancel their timers (on shutdown)."""
        for part_set in self._sets.values():
            if part_set.timer is not None and part_set.timer.active():
                part_set.timer.cancel()
        self._sets.clear()
