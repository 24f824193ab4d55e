"""SMPP 3.4 PDU codec: a PDU type, ``encode``/``decode`` and a streaming framer.

Values, as found in :attr:`PDU.params` and :attr:`PDU.tlvs`:

- integers (TON, NPI, esm_class, data_coding, ...) are plain ``int``; reserved or
  vendor-specific values are kept as they are, never rejected;
- C-octet strings (addresses, system_id, message_id, times, ...) are ``str``, mapped
  byte-for-byte with latin-1 so any byte an SMSC sends survives a decode/encode cycle;
- octet strings (``short_message``, ``message_payload``, ``ussd_service_op``, ...) are
  ``bytes``;
- derived counts are not stored: ``sm_length`` is ``len(short_message)``,
  ``number_of_dests`` is ``len(dest_address)`` and ``no_unsuccess`` is
  ``len(unsuccess_sme)``.

TLVs are a dict keyed by the spec's name for the standard tags of SMPP 3.4 section 5.3.2 and
by the integer tag for anything else; the latter keep their raw value bytes and are encoded
back unchanged. A standard integer TLV whose length does not match its type is kept the same
way, under its integer tag. When a tag is repeated in one PDU, the last one wins.

The codec compiles one straight-line encoder and decoder per command layout when this module
is imported, so encoding or decoding a PDU does no per-call lookups of field definitions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from junebug.transports.smpp.constants import (
    COCTET,
    COMMAND_IDS,
    COMMAND_NAMES,
    COMMAND_STATUS_NAMES,
    HEADER_LENGTH,
    INT1,
    INT2,
    INT4,
    OCTETS,
    RESPONSE_BIT,
    TLV_COCTET_MAX,
    TLV_DEFINITIONS,
    CommandId,
    CommandStatus,
)

__all__ = [
    "DEFAULT_MAX_COMMAND_LENGTH",
    "Field",
    "FramingError",
    "LAYOUTS",
    "PDU",
    "PDUDecodeError",
    "PDUEncodeError",
    "PDUError",
    "PDUFramer",
    "command_id_for",
    "command_name",
    "decode",
    "encode",
    "generic_nack",
    "make_pdu",
    "make_response",
    "status_name",
    "with_sequence_number",
]

#: Default cap on command_length accepted by :class:`PDUFramer` (64 KiB).
DEFAULT_MAX_COMMAND_LENGTH = 64 * 1024

# Layout-only field kinds (the scalar kinds come from constants).
SHORT_MESSAGE = "short_message"
DEST_ADDRESSES = "dest_addresses"
UNSUCCESS_SMES = "unsuccess_smes"

_HEADER = struct.Struct(">IIII")
_TLV_HEADER = struct.Struct(">HH")
_UINT32 = struct.Struct(">I")


# ---------------------------------------------------------------------------
# Errors


class PDUError(Exception):
    """Base class of the codec's errors.

    ``command_status`` is the status code a peer should be answered with (in a
    generic_nack), ``sequence_number`` the offending PDU's sequence number when it is
    known (else ``None``) and ``command_id`` its command id when known.
    """

    def __init__(
        self,
        message: str,
        *,
        command_status: int = CommandStatus.ESME_RSYSERR,
        sequence_number: int | None = None,
        command_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command_status = int(command_status)
        self.sequence_number = sequence_number
        self.command_id = command_id

    def generic_nack(self) -> PDU:
        """Return the generic_nack answering this error (sequence number 0 if unknown)."""
        return generic_nack(self.sequence_number or 0, self.command_status)


class PDUDecodeError(PDUError):
    """A complete PDU whose body cannot be decoded (too short, missing NUL, bad TLV...).

    The framing is intact: the connection can answer with :meth:`generic_nack` and go on.
    """


class FramingError(PDUError):
    """The byte stream cannot be split into PDUs (command_length < 16 or over the cap).

    ``command_length`` holds the offending length. The stream is unusable afterwards: answer
    :meth:`generic_nack` (ESME_RINVCMDLEN) and close the connection.
    """

    def __init__(self, message: str, *, command_length: int, **kwargs: Any) -> None:
        kwargs.setdefault("command_status", CommandStatus.ESME_RINVCMDLEN)
        super().__init__(message, **kwargs)
        self.command_length = command_length


class PDUEncodeError(PDUError, ValueError):
    """A PDU that cannot be encoded: missing or unknown parameter, value out of range..."""


class _Malformed(Exception):
    """Internal: raised by the body decoders, turned into PDUDecodeError by decode()."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------
# The PDU type


@dataclass(slots=True)
class PDU:
    """One SMPP PDU.

    ``params`` holds the mandatory parameters by their SMPP 3.4 names and ``tlvs`` the
    optional ones (see the module docstring for value types). ``body`` is only set for
    PDUs with an unknown command id: it holds their raw body, re-encoded unchanged.
    Build PDUs with :func:`make_pdu` / :func:`make_response` to get defaults filled in.
    """

    command_id: int
    sequence_number: int = 0
    command_status: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    tlvs: dict[str | int, Any] = field(default_factory=dict)
    body: bytes | None = None

    @property
    def command(self) -> str:
        """Return the command name (``"submit_sm"``), or ``"unknown_0x..."`` if unknown."""
        return command_name(self.command_id)

    @property
    def is_unknown(self) -> bool:
        """Return True if the command id is not an SMPP 3.4 command (answer generic_nack)."""
        return self.command_id not in COMMAND_NAMES

    @property
    def is_response(self) -> bool:
        """Return True for response PDUs (command_id has the 0x80000000 bit set)."""
        return bool(self.command_id & RESPONSE_BIT)


def command_name(command_id: int) -> str:
    """Return the SMPP name of ``command_id``, or ``"unknown_0x%08x"`` for unknown ids."""
    name = COMMAND_NAMES.get(command_id)
    return name if name is not None else f"unknown_0x{command_id:08x}"


def command_id_for(command: str | int) -> int:
    """Return the command id for a command name or id.

    Raises ``ValueError`` for a name that is not an SMPP 3.4 command.
    """
    if isinstance(command, int):
        return int(command)
    try:
        return COMMAND_IDS[command]
    except KeyError:
        raise ValueError(f"unknown SMPP command {command!r}") from None


def status_name(command_status: int) -> str:
    """Return the name of a command_status (``"ESME_RTHROTTLED"``).

    Codes outside the SMPP 3.4 table give ``"ESME_UNKNOWN_0x%08x"``, never an error.
    """
    name = COMMAND_STATUS_NAMES.get(command_status)
    return name if name is not None else f"ESME_UNKNOWN_0x{command_status:08x}"


# ---------------------------------------------------------------------------
# Layouts of the mandatory parameters (SMPP 3.4 section 4)


class Field(NamedTuple):
    """One mandatory parameter: its name, kind and, for C-octet strings, the maximum size
    in bytes including the terminating NUL (0 for other kinds)."""

    name: str
    kind: str
    max_size: int = 0


def _c(name: str, max_size: int) -> Field:
    return Field(name, COCTET, max_size)


def _i(name: str) -> Field:
    return Field(name, INT1)


_BIND = (
    _c("system_id", 16),
    _c("password", 9),
    _c("system_type", 13),
    _i("interface_version"),
    _i("addr_ton"),
    _i("addr_npi"),
    _c("address_range", 41),
)
_BIND_RESP = (_c("system_id", 16),)
_MESSAGE_ID = (_c("message_id", 65),)
_SOURCE_21 = (_i("source_addr_ton"), _i("source_addr_npi"), _c("source_addr", 21))
_DEST_21 = (_i("dest_addr_ton"), _i("dest_addr_npi"), _c("destination_addr", 21))
_SM_TAIL = (
    _i("esm_class"),
    _i("protocol_id"),
    _i("priority_flag"),
    _c("schedule_delivery_time", 17),
    _c("validity_period", 17),
    _i("registered_delivery"),
    _i("replace_if_present_flag"),
    _i("data_coding"),
    _i("sm_default_msg_id"),
    Field("short_message", SHORT_MESSAGE),
)
_SUBMIT = (_c("service_type", 6), *_SOURCE_21, *_DEST_21, *_SM_TAIL)

#: Mandatory parameters of every SMPP 3.4 command, in wire order, by command id.
LAYOUTS: dict[int, tuple[Field, ...]] = {
    CommandId.generic_nack: (),
    CommandId.bind_receiver: _BIND,
    CommandId.bind_receiver_resp: _BIND_RESP,
    CommandId.bind_transmitter: _BIND,
    CommandId.bind_transmitter_resp: _BIND_RESP,
    CommandId.bind_transceiver: _BIND,
    CommandId.bind_transceiver_resp: _BIND_RESP,
    CommandId.outbind: (_c("system_id", 16), _c("password", 9)),
    CommandId.unbind: (),
    CommandId.unbind_resp: (),
    CommandId.submit_sm: _SUBMIT,
    CommandId.submit_sm_resp: _MESSAGE_ID,
    CommandId.submit_multi: (
        _c("service_type", 6),
        *_SOURCE_21,
        Field("dest_address", DEST_ADDRESSES),
        *_SM_TAIL,
    ),
    CommandId.submit_multi_resp: (*_MESSAGE_ID, Field("unsuccess_sme", UNSUCCESS_SMES)),
    CommandId.deliver_sm: _SUBMIT,
    CommandId.deliver_sm_resp: _MESSAGE_ID,
    CommandId.data_sm: (
        _c("service_type", 6),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 65),
        _i("dest_addr_ton"),
        _i("dest_addr_npi"),
        _c("destination_addr", 65),
        _i("esm_class"),
        _i("registered_delivery"),
        _i("data_coding"),
    ),
    CommandId.data_sm_resp: _MESSAGE_ID,
    CommandId.query_sm: (*_MESSAGE_ID, *_SOURCE_21),
    CommandId.query_sm_resp: (
        *_MESSAGE_ID,
        _c("final_date", 17),
        _i("message_state"),
        _i("error_code"),
    ),
    CommandId.cancel_sm: (_c("service_type", 6), *_MESSAGE_ID, *_SOURCE_21, *_DEST_21),
    CommandId.cancel_sm_resp: (),
    CommandId.replace_sm: (
        *_MESSAGE_ID,
        *_SOURCE_21,
        _c("schedule_delivery_time", 17),
        _c("validity_period", 17),
        _i("registered_delivery"),
        _i("sm_default_msg_id"),
        Field("short_message", SHORT_MESSAGE),
    ),
    CommandId.replace_sm_resp: (),
    CommandId.enquire_link: (),
    CommandId.enquire_link_resp: (),
    CommandId.alert_notification: (
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 65),
        _i("esme_addr_ton"),
        _i("esme_addr_npi"),
        _c("esme_addr", 65),
    ),
}

#: Responses whose body the spec says is omitted when command_status is not ESME_ROK.
_NO_BODY_ON_ERROR = frozenset(
    {
        CommandId.bind_receiver_resp,
        CommandId.bind_transmitter_resp,
        CommandId.bind_transceiver_resp,
        CommandId.submit_sm_resp,
    }
)

#: Requests that have no response in SMPP 3.4.
_NO_RESPONSE = frozenset({CommandId.generic_nack, CommandId.outbind, CommandId.alert_notification})

_DEFAULT_VALUES = {
    COCTET: "",
    INT1: 0,
    SHORT_MESSAGE: b"",
    DEST_ADDRESSES: (),
    UNSUCCESS_SMES: (),
}
_DEFAULT_OVERRIDES = {"interface_version": 0x34}

_MAX_SHORT_MESSAGE = 254
_MAX_DESTS = 254


# ---------------------------------------------------------------------------
# Helpers called by the generated code (slow paths and the list-valued fields)


def _no_nul(data: bytes, pos: int, name: str) -> None:
    if pos >= len(data):
        raise _Malformed(f"body ends before {name}", CommandStatus.ESME_RINVCMDLEN)
    raise _Malformed(f"{name} is missing its NUL terminator", CommandStatus.ESME_RINVCMDLEN)


def _sm_overrun(sm_length: int, available: int) -> None:
    raise _Malformed(
        f"sm_length {sm_length} exceeds the {available} bytes left in the body",
        CommandStatus.ESME_RINVMSGLEN,
    )


def _read_cstring(data: bytes, pos: int, name: str) -> tuple[str, int]:
    end = data.find(0, pos)
    if end < 0:
        _no_nul(data, pos, name)
    return data[pos:end].decode("latin-1"), end + 1


def _decode_dests(data: bytes, pos: int) -> tuple[list[dict[str, Any]], int]:
    count = data[pos]
    pos += 1
    dests: list[dict[str, Any]] = []
    for _ in range(count):
        flag = data[pos]
        pos += 1
        if flag == 1:
            ton, npi = data[pos : pos + 2]
            addr, pos = _read_cstring(data, pos + 2, "destination_addr")
            dests.append(
                {
                    "dest_flag": 1,
                    "dest_addr_ton": ton,
                    "dest_addr_npi": npi,
                    "destination_addr": addr,
                }
            )
        elif flag == 2:
            name, pos = _read_cstring(data, pos, "dl_name")
            dests.append({"dest_flag": 2, "dl_name": name})
        else:
            raise _Malformed(f"unknown dest_flag {flag}", CommandStatus.ESME_RINVDESTFLAG)
    return dests, pos


def _decode_unsuccess(data: bytes, pos: int) -> tuple[list[dict[str, Any]], int]:
    count = data[pos]
    pos += 1
    smes: list[dict[str, Any]] = []
    for _ in range(count):
        ton, npi = data[pos : pos + 2]
        addr, pos = _read_cstring(data, pos + 2, "destination_addr")
        (status,) = _UINT32.unpack_from(data, pos)
        pos += 4
        smes.append(
            {
                "dest_addr_ton": ton,
                "dest_addr_npi": npi,
                "destination_addr": addr,
                "error_status_code": status,
            }
        )
    return smes, pos


def _cstring(value: str, max_size: int, name: str) -> str:
    """Return ``value`` with its NUL terminator, after checking its size and content."""
    if len(value) >= max_size or "\0" in value:
        _bad_cstring(name, value, max_size)
    return value + "\0"


def _bad_cstring(name: str, value: str, max_size: int) -> None:
    if "\0" in value:
        raise PDUEncodeError(f"{name} must not contain NUL")
    raise PDUEncodeError(
        f"{name} is {len(value)} bytes, at most {max_size - 1} allowed (plus NUL)",
        command_status=CommandStatus.ESME_RINVPARLEN,
    )


def _sm_too_long(length: int) -> None:
    raise PDUEncodeError(
        f"short_message is {length} bytes, at most {_MAX_SHORT_MESSAGE} allowed; "
        "use the message_payload TLV for longer content",
        command_status=CommandStatus.ESME_RINVMSGLEN,
    )


_SME_DEST_KEYS = frozenset({"dest_flag", "dest_addr_ton", "dest_addr_npi", "destination_addr"})
_DL_DEST_KEYS = frozenset({"dest_flag", "dl_name"})
_UNSUCCESS_KEYS = frozenset(
    {"dest_addr_ton", "dest_addr_npi", "destination_addr", "error_status_code"}
)


def _encode_dests(dests: Any) -> str:
    """Return number_of_dests and the dest_address list as latin-1 text."""
    if len(dests) > _MAX_DESTS:
        raise PDUEncodeError(f"at most {_MAX_DESTS} dest_address entries allowed")
    parts = [chr(len(dests))]
    for dest in dests:
        flag = dest["dest_flag"]
        if flag == 1 and dest.keys() == _SME_DEST_KEYS:
            parts.append(f"\x01{chr(dest['dest_addr_ton'])}{chr(dest['dest_addr_npi'])}")
            parts.append(_cstring(dest["destination_addr"], 21, "destination_addr"))
        elif flag == 2 and dest.keys() == _DL_DEST_KEYS:
            parts.append("\x02" + _cstring(dest["dl_name"], 21, "dl_name"))
        else:
            raise PDUEncodeError(
                f"dest_address entries need dest_flag 1 and keys {sorted(_SME_DEST_KEYS)} "
                f"or dest_flag 2 and keys {sorted(_DL_DEST_KEYS)}, not {dest!r}"
            )
    return "".join(parts)


def _encode_unsuccess(smes: Any) -> str:
    """Return no_unsuccess and the unsuccess_sme list as latin-1 text."""
    parts = [chr(len(smes))]
    for sme in smes:
        if sme.keys() != _UNSUCCESS_KEYS:
            raise PDUEncodeError(f"unsuccess_sme entries need exactly {sorted(_UNSUCCESS_KEYS)}")
        parts.append(chr(sme["dest_addr_ton"]) + chr(sme["dest_addr_npi"]))
        parts.append(_cstring(sme["destination_addr"], 21, "destination_addr"))
        parts.append(_UINT32.pack(sme["error_status_code"]).decode("latin-1"))
    return "".join(parts)


def _wrong_keys(params: Mapping[str, Any], names: tuple[str, ...], command: str) -> None:
    missing = [name for name in names if name not in params]
    unknown = sorted(str(name) for name in params if name not in names)
    raise PDUEncodeError(f"{command}: missing mandatory params {missing}, unknown params {unknown}")


# ---------------------------------------------------------------------------
# Code generation of the per-layout body codecs


class _BodyCodec(NamedTuple):
    names: tuple[str, ...]
    encode_body: Callable[[Mapping[str, Any]], bytes]
    decode_body: Callable[[bytes, int], tuple[dict[str, Any], int]]


_GENERATED_GLOBALS: dict[str, Any] = {
    "_no_nul": _no_nul,
    "_sm_overrun": _sm_overrun,
    "_bad_cstring": _bad_cstring,
    "_sm_too_long": _sm_too_long,
    "_wrong_keys": _wrong_keys,
    "_decode_dests": _decode_dests,
    "_decode_unsuccess": _decode_unsuccess,
    "_encode_dests": _encode_dests,
    "_encode_unsuccess": _encode_unsuccess,
    "_MAX_SM": _MAX_SHORT_MESSAGE,
}


def _decoder_source(fields: tuple[Field, ...]) -> list[str]:
    """Return the lines of ``decode_body(data, pos) -> (params, pos)`` for ``fields``.

    The whole PDU is decoded to a latin-1 str once, so C-octet strings are plain str slices
    of it (latin-1 maps bytes to code points one to one, so offsets agree); 1-byte integers
    are indexed at constant offsets. A body that ends early surfaces as an IndexError that
    decode() reports as a PDUDecodeError.
    """
    lines = ["def decode_body(d, pos):"]
    if any(f.kind == COCTET for f in fields):
        lines += ["    s = d.decode('latin-1')", "    find = s.find"]
    # Integer bytes are read at an offset from pos; pos itself only moves at strings.
    offset = 0
    for i, (name, kind, _max) in enumerate(fields):
        if kind == INT1:
            lines.append(f"    v{i} = d[pos + {offset}]" if offset else f"    v{i} = d[pos]")
            offset += 1
            continue
        if kind == SHORT_MESSAGE:
            lines.append(f"    n = d[pos + {offset}]" if offset else "    n = d[pos]")
            offset += 1
        if offset:
            lines.append(f"    pos += {offset}")
            offset = 0
        if kind == COCTET:
            lines += [
                "    e = find('\\0', pos)",
                f"    if e < 0: _no_nul(d, pos, {name!r})",
                f"    v{i} = s[pos:e]",
                "    pos = e + 1",
            ]
        elif kind == SHORT_MESSAGE:
            lines += [
                f"    v{i} = d[pos:pos + n]",
                "    pos += n",
                "    if pos > len(d): _sm_overrun(n, len(d) - pos + n)",
            ]
        elif kind == DEST_ADDRESSES:
            lines.append(f"    v{i}, pos = _decode_dests(d, pos)")
        elif kind == UNSUCCESS_SMES:
            lines.append(f"    v{i}, pos = _decode_unsuccess(d, pos)")
        else:  # pragma: no cover - layouts are static
            raise AssertionError(kind)
    if offset:
        lines.append(f"    pos += {offset}")
    items = ", ".join(f"{f.name!r}: v{k}" for k, f in enumerate(fields))
    lines.append(f"    return {{{items}}}, pos")
    return lines


def _encoder_source(fields: tuple[Field, ...], command: str) -> list[str]:
    """Return the lines of ``encode_body(params) -> bytes`` for ``fields``.

    Everything before short_message is assembled as one latin-1 str (one f-string, 1-byte
    integers as ``chr``), encoded once; short_message, always the last field, is appended.
    Out of range integers and non-latin-1 text fail in ``chr`` or ``encode`` (ValueError).
    """
    names = tuple(f.name for f in fields)
    lines = [
        "def encode_body(p):",
        f"    if len(p) != {len(fields)}: _wrong_keys(p, {names!r}, {command!r})",
    ]
    pieces: list[str] = []
    tail = ""
    for i, (name, kind, max_size) in enumerate(fields):
        if tail:  # pragma: no cover - layouts are static
            raise AssertionError("short_message must be the last field")
        if kind == COCTET:
            lines += [
                f"    v{i} = p[{name!r}]",
                f"    if len(v{i}) >= {max_size} or '\\0' in v{i}: "
                f"_bad_cstring({name!r}, v{i}, {max_size})",
            ]
            pieces.append(f"{{v{i}}}\\0")
        elif kind == INT1:
            pieces.append(f"{{chr(p[{name!r}])}}")
        elif kind == SHORT_MESSAGE:
            lines += [
                f"    v{i} = p[{name!r}]",
                f"    if len(v{i}) > _MAX_SM: _sm_too_long(len(v{i}))",
            ]
            pieces.append(f"{{chr(len(v{i}))}}")
            tail = f" + v{i}"
        elif kind == DEST_ADDRESSES:
            pieces.append(f"{{_encode_dests(p[{name!r}])}}")
        elif kind == UNSUCCESS_SMES:
            pieces.append(f"{{_encode_unsuccess(p[{name!r}])}}")
        else:  # pragma: no cover - layouts are static
            raise AssertionError(kind)
    if pieces:
        lines.append(f"    return f\"{''.join(pieces)}\".encode('latin-1'){tail}")
    else:
        lines.append("    return b''")
    return lines


def _compile_layout(command: str, fields: tuple[Field, ...]) -> _BodyCodec:
    """Compile the body encoder and decoder of one command layout."""
    namespace: dict[str, Any] = {}
    source = "\n".join(_decoder_source(fields) + [""] + _encoder_source(fields, command))
    code = compile(source, f"<smpp layout {command}>", "exec")
    exec(code, dict(_GENERATED_GLOBALS), namespace)  # noqa: S102 - source built above
    return _BodyCodec(
        tuple(f.name for f in fields), namespace["encode_body"], namespace["decode_body"]
    )


_CODECS: dict[int, _BodyCodec] = {
    int(cid): _compile_layout(COMMAND_NAMES[cid], fields) for cid, fields in LAYOUTS.items()
}


# ---------------------------------------------------------------------------
# TLVs

# Value codes of the TLV tables: the byte size for integers, else one of these.
_TLV_OCTETS = -2
_TLV_COCTET = -1
_TLV_CODES = {INT1: 1, INT2: 2, INT4: 4, OCTETS: _TLV_OCTETS, COCTET: _TLV_COCTET}

#: tag -> (name, value code)
_TLV_BY_TAG: dict[int, tuple[str, int]] = {
    tag: (name, _TLV_CODES[kind]) for name, (tag, kind) in TLV_DEFINITIONS.items()
}
_INT_TLV_PACKERS = {
    1: struct.Struct(">HHB").pack,
    2: struct.Struct(">HHH").pack,
    4: struct.Struct(">HHI").pack,
}
#: integer TLV name -> function(value) returning the whole TLV (tag, length and value)
_INT_TLV_ENCODERS: dict[str, Callable[[int], bytes]] = {
    name: partial(_INT_TLV_PACKERS[_TLV_CODES[kind]], tag, _TLV_CODES[kind])
    for name, (tag, kind) in TLV_DEFINITIONS.items()
    if _TLV_CODES[kind] > 0
}
#: other TLV names -> (value code, tag, max C-string size)
_TLV_BY_NAME: dict[str, tuple[int, int, int]] = {
    name: (_TLV_CODES[kind], tag, TLV_COCTET_MAX.get(name, 0x10000))
    for name, (tag, kind) in TLV_DEFINITIONS.items()
    if _TLV_CODES[kind] < 0
}


def _decode_tlvs(data: bytes, pos: int) -> dict[str | int, Any]:
    """Return the TLVs found from ``pos`` to the end of ``data``."""
    tlvs: dict[str | int, Any] = {}
    end = len(data)
    by_tag = _TLV_BY_TAG
    unpack_header = _TLV_HEADER.unpack_from
    while pos < end:
        if end - pos < 4:
            raise _Malformed(
                f"{end - pos} stray bytes after the last TLV", CommandStatus.ESME_RINVOPTPARSTREAM
            )
        tag, length = unpack_header(data, pos)
        pos += 4
        stop = pos + length
        if stop > end:
            raise _Malformed(
                f"TLV 0x{tag:04x} claims {length} bytes, only {end - pos} left",
                CommandStatus.ESME_RINVPARLEN,
            )
        known = by_tag.get(tag)
        if known is None:
            tlvs[tag] = data[pos:stop]
        else:
            name, code = known
            if code == length:
                tlvs[name] = data[pos] if length == 1 else int.from_bytes(data[pos:stop], "big")
            elif code == _TLV_OCTETS:
                tlvs[name] = data[pos:stop]
            elif code == _TLV_COCTET:
                # Lenient: the NUL terminator is optional, anything after it is ignored.
                nul = data.find(0, pos, stop)
                tlvs[name] = data[pos : stop if nul < 0 else nul].decode("latin-1")
            else:  # an integer TLV of the wrong size: keep it raw
                tlvs[tag] = data[pos:stop]
        pos = stop
    return tlvs


def _encode_tlvs(tlvs: Mapping[str | int, Any]) -> bytes:
    """Return the wire bytes of ``tlvs``, in the dict's order."""
    parts = []
    int_encoders = _INT_TLV_ENCODERS
    by_name = _TLV_BY_NAME
    for key, value in tlvs.items():
        encode_int = int_encoders.get(key)
        if encode_int is not None:
            parts.append(encode_int(value))
            continue
        known = by_name.get(key)
        if known is not None:
            code, tag, max_size = known
            if code == _TLV_COCTET:
                value = _cstring(value, max_size, key).encode("latin-1")
            elif not isinstance(value, bytes | bytearray):
                raise PDUEncodeError(f"TLV {key} must be bytes, not {type(value).__name__}")
        elif isinstance(key, int):
            tag = key
            if not isinstance(value, bytes | bytearray):
                raise PDUEncodeError(f"raw TLV 0x{tag:04x} must be bytes")
        else:
            raise PDUEncodeError(f"unknown TLV name {key!r}; use its integer tag")
        parts.append(_TLV_HEADER.pack(tag, len(value)) + value)
    return b"".join(parts)


# ---------------------------------------------------------------------------
# encode / decode


def encode(pdu: PDU) -> bytes:
    """Return the wire bytes of ``pdu``, header included.

    A response with a non-zero command_status and empty ``params`` is encoded without a
    body, as SMPP 3.4 prescribes for bind_*_resp and submit_sm_resp.

    Raises :class:`PDUEncodeError` when a mandatory param is missing or unknown, a value has
    the wrong type or is out of range, a C-octet string is too long or holds a NUL, or
    short_message exceeds 254 bytes.
    """
    cid = pdu.command_id
    params = pdu.params
    tlvs = pdu.tlvs
    codec = _CODECS.get(cid)
    try:
        if codec is None:
            if params or tlvs:
                raise PDUEncodeError(
                    f"{command_name(cid)}: an unknown command carries only a raw body"
                )
            body = pdu.body or b""
        elif params or not pdu.command_status or not cid & RESPONSE_BIT or not codec.names:
            body = codec.encode_body(params)
            if tlvs:
                body += _encode_tlvs(tlvs)
        elif tlvs:
            raise PDUEncodeError(
                f"{command_name(cid)}: an error response without its mandatory params "
                "cannot carry TLVs"
            )
        else:
            body = b""
        return (
            _HEADER.pack(HEADER_LENGTH + len(body), cid, pdu.command_status, pdu.sequence_number)
            + body
        )
    except PDUEncodeError:
        raise
    except KeyError as exc:
        raise PDUEncodeError(f"{command_name(cid)}: missing parameter {exc}") from exc
    except (TypeError, ValueError, AttributeError, OverflowError, struct.error) as exc:
        where = _first_bad_field(params, LAYOUTS.get(cid, ()))
        raise PDUEncodeError(f"{command_name(cid)}: invalid value{where}: {exc}") from exc


def _first_bad_field(params: Mapping[str, Any], fields: tuple[Field, ...]) -> str:
    """Slow path of encode errors: return " of <name>" for the first ill-typed scalar field."""
    for name, kind, _max in fields:
        value = params.get(name)
        if kind == INT1 and not (isinstance(value, int) and 0 <= value <= 255):
            return f" of {name} ({value!r} is not an integer 0-255)"
        if kind == COCTET and not _latin1(value):
            return f" of {name} ({value!r} is not latin-1 text)"
        if kind == SHORT_MESSAGE and not isinstance(value, bytes | bytearray):
            return f" of {name} ({type(value).__name__} is not bytes)"
    return ""


def _latin1(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def decode(data: bytes) -> PDU:
    """Decode exactly one PDU (header included) and return it.

    Unknown command ids are not an error: they give a PDU with ``is_unknown`` set and the
    raw body in ``body``, to be answered with a generic_nack ESME_RINVCMDID. Unknown TLV
    tags, reserved TON/NPI and unknown data_coding values are kept as they are.

    Raises :class:`PDUDecodeError` (carrying the sequence number when the header could be
    read) when ``data`` is shorter than a header, its length differs from command_length,
    the body is shorter than the mandatory params, a C-octet string lacks its NUL,
    sm_length overruns the body or a TLV is truncated.
    """
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < HEADER_LENGTH:
        raise PDUDecodeError(
            f"{size} bytes is shorter than a PDU header",
            command_status=CommandStatus.ESME_RINVCMDLEN,
        )
    length, cid, status, seq = _HEADER.unpack_from(data)
    if length != size:
        raise PDUDecodeError(
            f"command_length {length} but {size} bytes given",
            command_status=CommandStatus.ESME_RINVCMDLEN,
            sequence_number=seq,
            command_id=cid,
        )
    codec = _CODECS.get(cid)
    if codec is None:
        return PDU(cid, seq, status, {}, {}, data[HEADER_LENGTH:])
    try:
        if size == HEADER_LENGTH and status and cid & RESPONSE_BIT:
            # An error response without a body (lenient: accepted for every response).
            return PDU(cid, seq, status, {}, {})
        params, pos = codec.decode_body(data, HEADER_LENGTH)
        tlvs = _decode_tlvs(data, pos) if pos < size else {}
    except _Malformed as exc:
        raise PDUDecodeError(
            f"{command_name(cid)}: {exc}",
            command_status=exc.status,
            sequence_number=seq,
            command_id=cid,
        ) from None
    except (IndexError, ValueError, struct.error):
        raise PDUDecodeError(
            f"{command_name(cid)}: body is shorter than its mandatory params",
            command_status=CommandStatus.ESME_RINVCMDLEN,
            sequence_number=seq,
            command_id=cid,
        ) from None
    return PDU(cid, seq, status, params, tlvs)


def with_sequence_number(data: bytes, sequence_number: int) -> bytes:
    """Return the encoded PDU ``data`` with its sequence number replaced: what
    :func:`encode` gives for the same PDU with ``sequence_number``, without encoding
    it again."""
    return data[:12] + _UINT32.pack(sequence_number) + data[HEADER_LENGTH:]


# ---------------------------------------------------------------------------
# Builders


def make_pdu(
    command: str | int,
    sequence_number: int = 0,
    *,
    command_status: int = 0,
    tlvs: Mapping[str | int, Any] | None = None,
    **params: Any,
) -> PDU:
    """Return a PDU of ``command`` with every mandatory param not given set to its default.

    Defaults are ``""`` for strings, ``0`` for integers (``0x34`` for interface_version),
    ``b""`` for short_message and ``[]`` for dest_address / unsuccess_sme.

    Raises ``ValueError`` for an unknown command or a param that ``command`` does not have.
    """
    cid = command_id_for(command)
    fields = LAYOUTS.get(cid)
    if fields is None:
        raise ValueError(f"unknown SMPP command id 0x{cid:08x}")
    if not _PARAM_NAMES[cid].issuperset(params):
        unknown = set(params) - _PARAM_NAMES[cid]
        raise ValueError(f"{command_name(cid)} has no params {sorted(unknown)}")
    full: dict[str, Any] = {}
    for name, kind, _max in fields:
        if name in params:
            full[name] = params[name]
        elif name in _DEFAULT_OVERRIDES:
            full[name] = _DEFAULT_OVERRIDES[name]
        else:
            default = _DEFAULT_VALUES[kind]
            full[name] = list(default) if isinstance(default, tuple) else default
    return PDU(cid, sequence_number, command_status, full, dict(tlvs or {}))


#: command id -> the names of its mandatory params.
_PARAM_NAMES: dict[int, frozenset[str]] = {
    int(cid): frozenset(f.name for f in fields) for cid, fields in LAYOUTS.items()
}


def make_response(
    request: PDU,
    command_status: int = CommandStatus.ESME_ROK,
    *,
    tlvs: Mapping[str | int, Any] | None = None,
    **params: Any,
) -> PDU:
    """Return the response to ``request``, with its sequence number.

    An unknown request gets a generic_nack ESME_RINVCMDID. For bind_*_resp and
    submit_sm_resp, a non-zero ``command_status`` with no params gives a response without a
    body; otherwise missing params get the defaults of :func:`make_pdu`.

    Raises ``ValueError`` if ``request`` is itself a response or a command without one
    (outbind, alert_notification, generic_nack), or for unknown params.
    """
    if request.is_response:
        raise ValueError(f"{request.command} is a response; it is not answered")
    if request.is_unknown:
        return generic_nack(request.sequence_number, CommandStatus.ESME_RINVCMDID)
    if request.command_id in _NO_RESPONSE:
        raise ValueError(f"{request.command} has no response PDU")
    resp_id = request.command_id | RESPONSE_BIT
    if command_status and not params and resp_id in _NO_BODY_ON_ERROR and not tlvs:
        return PDU(resp_id, request.sequence_number, int(command_status), {}, {})
    return make_pdu(
        resp_id,
        request.sequence_number,
        command_status=int(command_status),
        tlvs=tlvs,
        **params,
    )


def generic_nack(
    sequence_number: int = 0, command_status: int = CommandStatus.ESME_RINVCMDID
) -> PDU:
    """Return a generic_nack PDU (sequence number 0 when the offending one is unknown)."""
    return PDU(CommandId.generic_nack, sequence_number, int(command_status), {}, {})


# ---------------------------------------------------------------------------
# Framing


class PDUFramer:
    """Split a byte stream into PDUs.

    Feed it whatever the socket delivered; it returns the complete PDUs (as bytes, header
    included, ready for :func:`decode`) and keeps any partial one for the next call.
    Framing is strict: a command_length below 16 or above ``max_command_length`` raises
    :class:`FramingError`, after which the framer refuses further input (the stream cannot
    be resynchronised; the connection should answer generic_nack and close).
    """

    def __init__(self, max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> None:
        if max_command_length < HEADER_LENGTH:
            raise ValueError(f"max_command_length must be at least {HEADER_LENGTH}")
        self.max_command_length = max_command_length
        self._buffer = bytearray()
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Return the number of bytes held waiting for the rest of a PDU."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return the list of PDUs it completed (possibly empty).

        Raises :class:`FramingError` on an invalid command_length, and again on every
        later call.
        """
        if self._error is not None:
            raise self._error
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos = 0
        available = len(buf)
        limit = self.max_command_length
        while available - pos >= 4:
            (length,) = _UINT32.unpack_from(buf, pos)
            if length < HEADER_LENGTH:
                self._fail(f"command_length {length} is shorter than the header", length, None)
            if length > limit:
                if available - pos < HEADER_LENGTH:
                    break  # wait for the sequence number to answer with
                _, cid, _, seq = _HEADER.unpack_from(buf, pos)
                self._fail(f"command_length {length} exceeds the cap of {limit}", length, seq, cid)
            if available - pos < length:
                break
            frames.append(bytes(buf[pos : pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return frames

    def _fail(self, message: str, length: int, seq: int | None, cid: int | None = None) -> None:
        self._buffer.clear()
        self._error = FramingError(
            message, command_length=length, sequence_number=seq, command_id=cid
        )
        raise self._error
