"""Delivery reports (receipts) from an SMSC: recognising, parsing, mapping states.

Pure functions, no I/O. An SMSC reports the fate of a submitted message with a
deliver_sm (or data_sm) that is marked as a receipt by its esm_class and/or
carries the ``receipted_message_id`` and ``message_state`` TLVs, and usually
also the de-facto standard text::

    id:0A1B2C sub:001 dlvrd:001 submit date:2401011200 done date:2401011201
    stat:DELIVRD err:000 text:hello

(on one line)

``parse_receipt`` finds the SMSC message id and the state from whichever of
these the PDU has (the TLV id is preferred over the text's), and
``delivery_status`` maps the state to vumi's ``delivered`` / ``failed`` /
``pending`` with the channel's ``delivery_report_status_mapping``.

SMSCs disagree with themselves about how they write message ids: the
submit_sm_resp may say ``1a2b`` while the receipt says ``6699`` (the same
number in decimal), ``00001A2B`` or ``1A2B``. ``normalise_id`` and
``id_candidates`` make those meet (see ``junebug.transports.smpp.ids``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from junebug.transports.smpp.constants import MessageState

__all__ = [
    "DEFAULT_DELIVERY_REPORT_REGEX",
    "DEFAULT_STATUS_MAPPING",
    "ESM_CLASS_RECEIPT_MASK",
    "FINAL_STATUSES",
    "Receipt",
    "compile_regex",
    "delivery_status",
    "id_candidates",
    "is_receipt_esm_class",
    "message_state_name",
    "normalise_id",
    "parse_receipt",
    "parse_receipt_text",
]

#: The original's default receipt regex (applied with ``search``).
DEFAULT_DELIVERY_REPORT_REGEX = (
    r"id:(?P<id>[^ ]{,65})"
    r"(?: +sub:(?P<sub>[^ ]+))?"
    r"(?: +dlvrd:(?P<dlvrd>[^ ]+))?"
    r"(?: +submit date:(?P<submit_date>\d*))?"
    r"(?: +done date:(?P<done_date>\d*))?"
    r" +stat:(?P<stat>[A-Z]{5,7})"
    r"(?: +err:(?P<err>[^ ]+))?"
    r" +[Tt]ext:(?P<text>.{,20}).*"
)

#: The original's default state -> delivery_status table, plus the 7-letter forms
#: ``UNDELIV`` and ``ACCEPTD`` most SMSCs write (the original left them unmapped, so
#: an undeliverable message was reported as pending); unmapped states are pending.
DEFAULT_STATUS_MAPPING: Mapping[str, str] = {
    "delivered": "delivered",
    "DELIVERED": "delivered",
    "DELIVRD": "delivered",
    "ACCEPTED": "delivered",
    "ACCEPTD": "delivered",
    "0": "delivered",
    "failed": "failed",
    "EXPIRED": "failed",
    "DELETED": "failed",
    "UNDELIVERABLE": "failed",
    "UNDELIV": "failed",
    "REJECTED": "failed",
    "REJECTD": "failed",
    "FAILED": "failed",
    "pending": "pending",
    "ENROUTE": "pending",
    "UNKNOWN": "pending",
}

#: Statuses after which no further receipt is expected for a message.
FINAL_STATUSES = frozenset({"delivered", "failed"})

#: esm_class bits 2-5 (message type): non-zero means an SMSC delivery receipt,
#: an SME acknowledgement or an intermediate notification.
ESM_CLASS_RECEIPT_MASK = 0b00111100

# Used when the configured regex does not match a PDU that is certainly a
# receipt (by esm_class or TLVs): finds "id:" and "stat:" anywhere, in any case,
# with or without a text field, separated by spaces, commas or semicolons.
_LENIENT_ID = re.compile(r"(?:^|[\s,;])id\s*[:=]\s*(?P<id>[^\s,;]{1,65})", re.IGNORECASE)
_LENIENT_STAT = re.compile(r"(?:^|[\s,;])stat\s*[:=]\s*(?P<stat>[A-Za-z0-9_]{1,16})", re.IGNORECASE)
_LENIENT_ERR = re.compile(r"(?:^|[\s,;])err\s*[:=]\s*(?P<err>[^\s,;]{1,16})", re.IGNORECASE)


@attrs.frozen
class Receipt:
    """What a delivery report says."""

    #: The SMSC's id of the submitted message, as written in the receipt.
    smsc_id: str
    #: The raw state (``DELIVRD``, ``UNDELIV``, ``2``...).
    state: str
    #: The ``err`` field or network error, when given.
    error: str | None = None
    #: Where the id came from: ``"tlv"`` or ``"text"``.
    source: str = "text"


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a ``delivery_report_regex``; raises ``ValueError`` unless it is a valid
    regex with named groups ``id`` and ``stat``."""
    try:
        compiled = re.compile(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise ValueError(f"delivery_report_regex is not a valid regex: {exc}") from exc
    missing = {"id", "stat"} - set(compiled.groupindex)
    if missing:
        raise ValueError(
            "delivery_report_regex needs the named groups (?P<id>...) and (?P<stat>...); "
            f"missing: {', '.join(sorted(missing))}"
        )
    return compiled


def message_state_name(value: int) -> str:
    """The state name of a ``message_state`` TLV value (UNKNOWN for others)."""
    return _STATE_NAMES.get(value, "UNKNOWN")


#: message_state value -> name (what ``MessageState(value).name`` gives, without the
#: cost of an Enum call for every receipt).
_STATE_NAMES: dict[int, str] = {int(state): state.name for state in MessageState}


def is_receipt_esm_class(esm_class: int) -> bool:
    """True when esm_class marks the PDU as a receipt or notification."""
    return bool(esm_class & ESM_CLASS_RECEIPT_MASK)


def parse_receipt_text(
    text: str, regex: re.Pattern[str] | None = None, *, lenient: bool = False
) -> Receipt | None:
    """Parse a receipt's text with ``regex`` (default: the original's).

    With ``lenient``, text the regex does not match is still read when it has
    ``id:`` and ``stat:`` fields somewhere (SMSCs that leave out ``text:`` or
    change the case). Returns None when nothing matches.
    """
    pattern = regex if regex is not None else _DEFAULT_COMPILED
    match = pattern.search(text)
    if match is not None and match.group("id") is not None and match.group("stat"):
        groups = match.groupdict()
        return Receipt(match.group("id"), match.group("stat"), groups.get("err"), "text")
    if not lenient:
        return None
    found_id = _LENIENT_ID.search(text)
    found_stat = _LENIENT_STAT.search(text)
    if found_id is None or found_stat is None:
        return None
    found_err = _LENIENT_ERR.search(text)
    return Receipt(
        found_id.group("id"),
        found_stat.group("stat").upper(),
        found_err.group("err") if found_err else None,
        "text",
    )


def _text_of(short_message: Any) -> str:
    if isinstance(short_message, bytes | bytearray):
        # Receipt texts are ASCII; latin-1 never fails and keeps every byte.
        return bytes(short_message).decode("latin-1")
    return short_message or ""


def parse_receipt(
    esm_class: int,
    tlvs: Mapping[str | int, Any],
    short_message: bytes | str | None,
    regex: re.Pattern[str] | None = None,
    *,
    use_esm_class: bool = True,
) -> Receipt | None:
    """Return the receipt a deliver_sm carries, or None if it is not one.

    A PDU is a receipt when it has both ``receipted_message_id`` and
    ``message_state`` TLVs, or (with ``use_esm_class``) when its esm_class says
    so, or (without ``use_esm_class``) when its text matches ``regex``. The
    ``receipted_message_id`` TLV is preferred over the id in the text, and the
    ``message_state`` TLV over the text's ``stat``. A PDU that esm_class marks
    as a receipt but whose id cannot be found is returned with an empty
    ``smsc_id`` so the caller can log it instead of treating it as a message.
    """
    tlv_id = tlvs.get("receipted_message_id")
    tlv_state = tlvs.get("message_state")
    if isinstance(tlv_id, bytes | bytearray):
        tlv_id = bytes(tlv_id).rstrip(b"\0").decode("latin-1")
    marked = use_esm_class and is_receipt_esm_class(esm_class)
    text = _text_of(tlvs.get("message_payload") or short_message)
    if tlv_id and isinstance(tlv_state, int):
        from_text = parse_receipt_text(text, regex, lenient=True)
        return Receipt(
            tlv_id,
            message_state_name(tlv_state),
            from_text.error if from_text else None,
            "tlv",
        )
    if not marked and use_esm_class:
        return None
    parsed = parse_receipt_text(text, regex, lenient=marked)
    if parsed is None:
        if marked:
            return Receipt(tlv_id or "", "", None, "tlv" if tlv_id else "text")
        return None
    if tlv_id:
        return attrs.evolve(parsed, smsc_id=tlv_id, source="tlv")
    return parsed


def delivery_status(state: str, mapping: Mapping[str, str] | None = None) -> str:
    """vumi delivery_status for a receipt state: the mapping's value for the state as
    written, else for its upper-case form, else ``pending``."""
    table = DEFAULT_STATUS_MAPPING if mapping is None else mapping
    status = table.get(state)
    if status is None:
        status = table.get(state.upper())
    if status not in ("delivered", "failed", "pending"):
        return "pending"
    return status


# -- message ids ----------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-f]+")
_DECIMAL = re.compile(r"[0-9]+")


def normalise_id(smsc_id: str) -> str:
    """The canonical form of an SMSC message id: trimmed (spaces and NULs), lower
    case, without leading zeros when it is made of hex digits (``"0"`` stays)."""
    text = smsc_id.strip().strip("\0").strip().lower()
    if text and _HEX.fullmatch(text):
        text = text.lstrip("0") or "0"
    return text


def id_candidates(smsc_id: str) -> list[str]:
    """Normalised forms under which a receipt's id may have been stored, best first.

    The id as written comes first; then, for an id made of decimal digits, the
    same number in hex; then, for one made of hex digits, the same number in
    decimal. Ids longer than 64 digits are not converted.
    """
    literal = normalise_id(smsc_id)
    candidates = [literal]
    if not literal or len(literal) > 64:
        return candidates
    if _DECIMAL.fullmatch(literal):
        candidates.append(format(int(literal), "x"))
    if _HEX.fullmatch(literal):
        candidates.append(str(int(literal, 16)))
    unique: list[str] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


_DEFAULT_COMPILED = compile_regex(DEFAULT_DELIVERY_REPORT_REGEX)
