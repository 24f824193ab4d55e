"""SMPP 3.4 numbers: command ids, command status codes, TLV tags and common field values.

Every table here is data taken from the SMPP v3.4 specification (section 5). The codec in
:mod:`junebug.transports.smpp.pdu` builds its precomputed layouts from these tables.

The enums are :class:`enum.IntEnum`, so members compare equal to the plain integers the
decoder produces; the decoder itself never converts values to enum members, which keeps
reserved and vendor-specific values (a TON of 7, a data_coding of 0xF5, ...) intact.
"""

from __future__ import annotations

from enum import IntEnum

#: Bit set in the command_id of every response PDU.
RESPONSE_BIT = 0x80000000

#: Size of the PDU header: command_length, command_id, command_status, sequence_number.
HEADER_LENGTH = 16


class CommandId(IntEnum):
    """SMPP 3.4 command ids (section 5.1.2.1); the member name is the spec's command name."""

    generic_nack = 0x80000000
    bind_receiver = 0x00000001
    bind_receiver_resp = 0x80000001
    bind_transmitter = 0x00000002
    bind_transmitter_resp = 0x80000002
    query_sm = 0x00000003
    query_sm_resp = 0x80000003
    submit_sm = 0x00000004
    submit_sm_resp = 0x80000004
    deliver_sm = 0x00000005
    deliver_sm_resp = 0x80000005
    unbind = 0x00000006
    unbind_resp = 0x80000006
    replace_sm = 0x00000007
    replace_sm_resp = 0x80000007
    cancel_sm = 0x00000008
    cancel_sm_resp = 0x80000008
    bind_transceiver = 0x00000009
    bind_transceiver_resp = 0x80000009
    outbind = 0x0000000B
    enquire_link = 0x00000015
    enquire_link_resp = 0x80000015
    submit_multi = 0x00000021
    submit_multi_resp = 0x80000021
    alert_notification = 0x00000102
    data_sm = 0x00000103
    data_sm_resp = 0x80000103


#: command name -> command id, and back.
COMMAND_IDS: dict[str, int] = {member.name: member.value for member in CommandId}
COMMAND_NAMES: dict[int, str] = {value: name for name, value in COMMAND_IDS.items()}


class CommandStatus(IntEnum):
    """SMPP 3.4 error codes (section 5.1.3), used in command_status and error_status_code."""

    ESME_ROK = 0x00000000
    ESME_RINVMSGLEN = 0x00000001
    ESME_RINVCMDLEN = 0x00000002
    ESME_RINVCMDID = 0x00000003
    ESME_RINVBNDSTS = 0x00000004
    ESME_RALYBND = 0x00000005
    ESME_RINVPRTFLG = 0x00000006
    ESME_RINVREGDLVFLG = 0x00000007
    ESME_RSYSERR = 0x00000008
    ESME_RINVSRCADR = 0x0000000A
    ESME_RINVDSTADR = 0x0000000B
    ESME_RINVMSGID = 0x0000000C
    ESME_RBINDFAIL = 0x0000000D
    ESME_RINVPASWD = 0x0000000E
    ESME_RINVSYSID = 0x0000000F
    ESME_RCANCELFAIL = 0x00000011
    ESME_RREPLACEFAIL = 0x00000013
    ESME_RMSGQFUL = 0x00000014
    ESME_RINVSERTYP = 0x00000015
    ESME_RINVNUMDESTS = 0x00000033
    ESME_RINVDLNAME = 0x00000034
    ESME_RINVDESTFLAG = 0x00000040
    ESME_RINVSUBREP = 0x00000042
    ESME_RINVESMCLASS = 0x00000043
    ESME_RCNTSUBDL = 0x00000044
    ESME_RSUBMITFAIL = 0x00000045
    ESME_RINVSRCTON = 0x00000048
    ESME_RINVSRCNPI = 0x00000049
    ESME_RINVDSTTON = 0x00000050
    ESME_RINVDSTNPI = 0x00000051
    ESME_RINVSYSTYP = 0x00000053
    ESME_RINVREPFLAG = 0x00000054
    ESME_RINVNUMMSGS = 0x00000055
    ESME_RTHROTTLED = 0x00000058
    ESME_RINVSCHED = 0x00000061
    ESME_RINVEXPIRY = 0x00000062
    ESME_RINVDFTMSGID = 0x00000063
    ESME_RX_T_APPN = 0x00000064
    ESME_RX_P_APPN = 0x00000065
    ESME_RX_R_APPN = 0x00000066
    ESME_RQUERYFAIL = 0x00000067
    ESME_RINVOPTPARSTREAM = 0x000000C0
    ESME_ROPTPARNOTALLWD = 0x000000C1
    ESME_RINVPARLEN = 0x000000C2
    ESME_RMISSINGOPTPARAM = 0x000000C3
    ESME_RINVOPTPARAMVAL = 0x000000C4
    ESME_RDELIVERYFAILURE = 0x000000FE
    ESME_RUNKNOWNERR = 0x000000FF


#: status name -> code, and back.
COMMAND_STATUSES: dict[str, int] = {member.name: member.value for member in CommandStatus}
COMMAND_STATUS_NAMES: dict[int, str] = {value: name for name, value in COMMAND_STATUSES.items()}

#: Human readable descriptions of the status codes (wording ours, meaning the spec's).
COMMAND_STATUS_DESCRIPTIONS: dict[int, str] = {
    0x00: "No error",
    0x01: "Message length is invalid",
    0x02: "Command length is invalid",
    0x03: "Invalid command id",
    0x04: "Incorrect bind status for given command",
    0x05: "ESME already in bound state",
    0x06: "Invalid priority flag",
    0x07: "Invalid registered delivery flag",
    0x08: "System error",
    0x0A: "Invalid source address",
    0x0B: "Invalid destination address",
    0x0C: "Message id is invalid",
    0x0D: "Bind failed",
    0x0E: "Invalid password",
    0x0F: "Invalid system id",
    0x11: "cancel_sm failed",
    0x13: "replace_sm failed",
    0x14: "Message queue full",
    0x15: "Invalid service type",
    0x33: "Invalid number of destinations",
    0x34: "Invalid distribution list name",
    0x40: "Destination flag is invalid (submit_multi)",
    0x42: "Invalid 'submit with replace' request",
    0x43: "Invalid esm_class field data",
    0x44: "Cannot submit to distribution list",
    0x45: "submit_sm or submit_multi failed",
    0x48: "Invalid source address TON",
    0x49: "Invalid source address NPI",
    0x50: "Invalid destination address TON",
    0x51: "Invalid destination address NPI",
    0x53: "Invalid system_type field",
    0x54: "Invalid replace_if_present flag",
    0x55: "Invalid number of messages",
    0x58: "Throttling error (ESME has exceeded allowed message limits)",
    0x61: "Invalid scheduled delivery time",
    0x62: "Invalid message validity period (expiry time)",
    0x63: "Predefined message invalid or not found",
    0x64: "ESME receiver temporary application error",
    0x65: "ESME receiver permanent application error",
    0x66: "ESME receiver reject message error",
    0x67: "query_sm request failed",
    0xC0: "Error in the optional part of the PDU body",
    0xC1: "Optional parameter not allowed",
    0xC2: "Invalid parameter length",
    0xC3: "Expected optional parameter missing",
    0xC4: "Invalid optional parameter value",
    0xFE: "Delivery failure (used for data_sm_resp)",
    0xFF: "Unknown error",
}


class Ton(IntEnum):
    """Type of number (section 5.2.5). Other values are reserved but kept as integers."""

    UNKNOWN = 0
    INTERNATIONAL = 1
    NATIONAL = 2
    NETWORK_SPECIFIC = 3
    SUBSCRIBER_NUMBER = 4
    ALPHANUMERIC = 5
    ABBREVIATED = 6


class Npi(IntEnum):
    """Numbering plan indicator (section 5.2.6). Other values are reserved."""

    UNKNOWN = 0
    ISDN = 1
    DATA = 3
    TELEX = 4
    LAND_MOBILE = 6
    NATIONAL = 8
    PRIVATE = 9
    ERMES = 10
    INTERNET = 14
    WAP_CLIENT_ID = 18


class DataCoding(IntEnum):
    """Well known data_coding values (section 5.2.19). Any other value is kept as an int."""

    SMSC_DEFAULT = 0x00
    IA5 = 0x01
    OCTET_UNSPECIFIED = 0x02
    LATIN_1 = 0x03
    OCTET_UNSPECIFIED_2 = 0x04
    JIS = 0x05
    CYRILLIC = 0x06
    LATIN_HEBREW = 0x07
    UCS2 = 0x08
    PICTOGRAM = 0x09
    ISO_2022_JP = 0x0A
    EXTENDED_KANJI = 0x0D
    KS_C_5601 = 0x0E


class MessageState(IntEnum):
    """Values of the message_state TLV and query_sm_resp field (section 5.2.28)."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


# Field and TLV value kinds.
INT1 = "int1"
INT2 = "int2"
INT4 = "int4"
COCTET = "c-octet"
OCTETS = "octets"

#: Standard TLVs of SMPP 3.4 section 5.3.2: name -> (tag, kind). C-octet string TLVs and
#: integers are decoded to str / int, octet strings stay bytes.
TLV_DEFINITIONS: dict[str, tuple[int, str]] = {
    "dest_addr_subunit": (0x0005, INT1),
    "dest_network_type": (0x0006, INT1),
    "dest_bearer_type": (0x0007, INT1),
    "dest_telematics_id": (0x0008, INT2),
    "source_addr_subunit": (0x000D, INT1),
    "source_network_type": (0x000E, INT1),
    "source_bearer_type": (0x000F, INT1),
    "source_telematics_id": (0x0010, INT2),
    "qos_time_to_live": (0x0017, INT4),
    "payload_type": (0x0019, INT1),
    "additional_status_info_text": (0x001D, COCTET),
    "receipted_message_id": (0x001E, COCTET),
    "ms_msg_wait_facilities": (0x0030, INT1),
    "privacy_indicator": (0x0201, INT1),
    "source_subaddress": (0x0202, OCTETS),
    "dest_subaddress": (0x0203, OCTETS),
    "user_message_reference": (0x0204, INT2),
    "user_response_code": (0x0205, INT1),
    "source_port": (0x020A, INT2),
    "destination_port": (0x020B, INT2),
    "sar_msg_ref_num": (0x020C, INT2),
    "language_indicator": (0x020D, INT1),
    "sar_total_segments": (0x020E, INT1),
    "sar_segment_seqnum": (0x020F, INT1),
    "sc_interface_version": (0x0210, INT1),
    "callback_num_pres_ind": (0x0302, INT1),
    "callback_num_atag": (0x0303, OCTETS),
    "number_of_messages": (0x0304, INT1),
    "callback_num": (0x0381, OCTETS),
    "dpf_result": (0x0420, INT1),
    "set_dpf": (0x0421, INT1),
    "ms_availability_status": (0x0422, INT1),
    "network_error_code": (0x0423, OCTETS),
    "message_payload": (0x0424, OCTETS),
    "delivery_failure_reason": (0x0425, INT1),
    "more_messages_to_send": (0x0426, INT1),
    "message_state": (0x0427, INT1),
    "ussd_service_op": (0x0501, OCTETS),
    "display_time": (0x1201, INT1),
    "sms_signal": (0x1203, INT2),
    "ms_validity": (0x1204, INT1),
    "alert_on_message_delivery": (0x130C, OCTETS),
    "its_reply_type": (0x1380, INT1),
    "its_session_info": (0x1383, OCTETS),
}

#: TLV name -> tag, and back.
TLV_TAGS: dict[str, int] = {name: tag for name, (tag, _kind) in TLV_DEFINITIONS.items()}
TLV_NAMES: dict[int, str] = {tag: name for name, tag in TLV_TAGS.items()}

#: Maximum sizes of the C-octet string TLVs, terminating NUL included.
TLV_COCTET_MAX: dict[str, int] = {
    "additional_status_info_text": 256,
    "receipted_message_id": 65,
}
