"""The ``config`` of an ``smpp`` channel: every key, declared once.

``CONFIG_SCHEMA`` lists every key of the original's ``SmppTransceiverTransport``
(and of its three default processors, under the same nested
``*_processor_config`` objects) with the same names, types and defaults, plus a
few keys Junebug adds (marked "Junebug:" in their description). The user
documentation (``docs/channels/smpp.md``) is checked against it by a test.

``SmppConfig.from_config`` turns a validated config into typed settings with
every default filled in; ``problems`` lists what the JSON schema cannot say.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from junebug.transports.smpp import codecs
from junebug.transports.smpp.constants import COMMAND_STATUSES
from junebug.transports.smpp.multipart import style_from_config
from junebug.transports.smpp.receipts import (
    DEFAULT_DELIVERY_REPORT_REGEX,
    DEFAULT_STATUS_MAPPING,
    compile_regex,
)

__all__ = [
    "CONFIG_SCHEMA",
    "DEFAULTS",
    "DEFAULT_USSD_SERVICE_OPS",
    "PROCESSOR_DEFAULTS",
    "SmppConfig",
    "all_keys",
    "problems",
]

_TON = {"type": "integer", "minimum": 0, "maximum": 255}
_SECONDS = {"type": "number", "minimum": 0}

#: The original's ussd_service_op (hex) -> session_event table.
DEFAULT_USSD_SERVICE_OPS: dict[str, str] = {
    "01": "new",
    "11": "close",
    "02": "resume",
    "12": "resume",
}

DELIVERY_REPORT_PROCESSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "delivery_report_regex": {
            "type": "string",
            "default": DEFAULT_DELIVERY_REPORT_REGEX,
            "description": "Regex (with named groups id and stat) that reads a receipt's text",
        },
        "delivery_report_status_mapping": {
            "type": "object",
            "additionalProperties": {"enum": ["delivered", "failed", "pending"]},
            "default": dict(DEFAULT_STATUS_MAPPING),
            "description": "Receipt state -> delivered / failed / pending; unmapped "
            "states are pending",
        },
        "delivery_report_use_esm_class": {
            "type": "boolean",
            "default": True,
            "description": "Recognise receipts by esm_class; false: by the regex "
            "matching the decoded text",
        },
    },
}

DELIVER_SM_PROCESSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "data_coding_overrides": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "default": {},
            "description": "data_coding (as a string key) -> codec name, merged over the "
            "built-in table",
        },
        "allow_empty_messages": {
            "type": "boolean",
            "default": False,
            "description": "Accept deliver_sm with empty text (else answered with "
            "deliver_sm_decoding_error)",
        },
        "ussd_service_op_map": {
            "type": "object",
            "additionalProperties": {"enum": ["new", "resume", "close"]},
            "default": dict(DEFAULT_USSD_SERVICE_OPS),
            "description": "Junebug: ussd_service_op (2 hex digits) -> session_event; "
            "other values close the session",
        },
    },
}

SUBMIT_SM_PROCESSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "submit_sm_encoding": {
            "type": "string",
            "default": "utf-8",
            "description": "Codec for outbound text: gsm0338, ucs2 or a Python codec name",
        },
        "submit_sm_data_coding": {
            "type": "integer",
            "minimum": 0,
            "maximum": 255,
            "default": 0,
            "description": "data_coding put in submit_sm (pair it with submit_sm_encoding)",
        },
        "send_long_messages": {
            "type": "boolean",
            "default": False,
            "description": "Send the whole text in the message_payload TLV",
        },
        "send_multipart_sar": {
            "type": "boolean",
            "default": False,
            "description": "Split long text into parts carrying SAR TLVs",
        },
        "send_multipart_udh": {
            "type": "boolean",
            "default": False,
            "description": "Split long text into parts carrying a concatenation UDH",
        },
        "multipart_sar_reference_rollover": {
            "type": "integer",
            "minimum": 1,
            "maximum": 65536,
            "default": 65536,
            "description": "Modulus of the concatenation reference",
        },
        "ussd_service_op": {
            "type": "string",
            "pattern": "^[0-9A-Fa-f]{2}$",
            "default": "02",
            "description": "Junebug: ussd_service_op (2 hex digits) of USSD replies",
        },
    },
}

#: Processor sub-config -> its schema.
PROCESSOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "delivery_report_processor_config": DELIVERY_REPORT_PROCESSOR_SCHEMA,
    "deliver_short_message_processor_config": DELIVER_SM_PROCESSOR_SCHEMA,
    "submit_short_message_processor_config": SUBMIT_SM_PROCESSOR_SCHEMA,
}

DEFAULT_PROCESSORS = {
    "delivery_report_processor": "vumi.transports.smpp.processors.DeliveryReportProcessor",
    "deliver_short_message_processor": (
        "vumi.transports.smpp.processors.DeliverShortMessageProcessor"
    ),
    "submit_short_message_processor": (
        "vumi.transports.smpp.processors.SubmitShortMessageProcessor"
    ),
}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["system_id", "password"],
    # The original ignored keys it did not know; so do we (with a warning in the log),
    # so that every channel created for it is still accepted.
    "additionalProperties": True,
    "properties": {
        "twisted_endpoint": {
            "type": "string",
            "minLength": 1,
            "description": "Twisted client endpoint of the SMSC, "
            "e.g. tcp:host=smsc.example.com:port=2775",
        },
        "host": {"type": "string", "description": "Deprecated: use twisted_endpoint"},
        "port": {
            "type": "integer",
            "minimum": 1,
            "maximum": 65535,
            "description": "Deprecated: use twisted_endpoint",
        },
        "system_id": {"type": "string", "description": "bind system_id"},
        "password": {
            "type": "string",
            "description": "bind password; cut to 8 characters (with a warning)",
        },
        "system_type": {"type": "string", "default": "", "description": "bind system_type"},
        "interface_version": {
            "type": "string",
            "pattern": "^[0-9A-Fa-f]{1,2}$",
            "default": "34",
            "description": "bind interface_version, as hex digits",
        },
        "service_type": {"type": "string", "default": "", "description": "submit_sm service_type"},
        "address_range": {"type": "string", "default": "", "description": "bind address_range"},
        "dest_addr_ton": {**_TON, "default": 0, "description": "submit_sm dest_addr_ton"},
        "dest_addr_npi": {**_TON, "default": 1, "description": "submit_sm dest_addr_npi"},
        "source_addr_ton": {**_TON, "default": 0, "description": "submit_sm source_addr_ton"},
        "source_addr_npi": {**_TON, "default": 0, "description": "submit_sm source_addr_npi"},
        "registered_delivery": {
            "type": "boolean",
            "default": True,
            "description": "Ask the SMSC for delivery receipts",
        },
        "smpp_bind_timeout": {
            **_SECONDS,
            "default": 30,
            "description": "Seconds to wait for bind_transceiver_resp",
        },
        "smpp_enquire_link_interval": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 55,
            "description": "Seconds between enquire_link; one unanswered for as long "
            "again drops the connection",
        },
        "initial_reconnect_delay": {
            **_SECONDS,
            "default": 5,
            "description": "Seconds before the first reconnection; doubles (with jitter) "
            "after each failure, reset by a successful bind",
        },
        "throttle_delay": {
            **_SECONDS,
            "default": 0.1,
            "description": "Seconds to hold submits after ESME_RTHROTTLED / ESME_RMSGQFUL",
        },
        "deliver_sm_decoding_error": {
            "type": "string",
            "default": "ESME_RDELIVERYFAILURE",
            "description": "command_status answering a deliver_sm that cannot be handled",
        },
        "submit_sm_expiry": {
            "type": "integer",
            "minimum": 0,
            "default": 86400,
            "description": "Seconds a message may wait to be sent (queued or unanswered) "
            "before it is nacked",
        },
        "third_party_id_expiry": {
            "type": "integer",
            "minimum": 0,
            "default": 604800,
            "description": "Seconds the SMSC id -> message id mapping is kept for receipts",
        },
        "final_dr_third_party_id_expiry": {
            "type": "integer",
            "minimum": 0,
            "default": 3600,
            "description": "Seconds that mapping is kept after a final receipt",
        },
        "completed_multipart_info_expiry": {
            "type": "integer",
            "minimum": 0,
            "default": 3600,
            "description": "Seconds the part states of a multipart message are kept after "
            "its final receipt",
        },
        "disable_ack": {"type": "boolean", "default": False, "description": "Publish no acks"},
        "disable_delivery_report": {
            "type": "boolean",
            "default": False,
            "description": "Publish no delivery reports",
        },
        "redis_manager": {
            "type": "object",
            "default": {},
            "description": "Accepted for compatibility and ignored: Junebug's own Redis is used",
        },
        "split_bind_prefix": {
            "type": "string",
            "default": "",
            "description": "Redis key prefix shared by channels bound to the same account "
            "(receipts on one match messages sent by another)",
        },
        "codec_class": {
            "type": "string",
            "default": "vumi.codecs.VumiCodec",
            "description": "Accepted for compatibility: the built-in codecs (gsm0338, ucs2, "
            "Python codecs) are always used",
        },
        "delivery_report_processor": {
            "type": "string",
            "default": DEFAULT_PROCESSORS["delivery_report_processor"],
            "description": "Accepted for compatibility: the default behaviour is built in",
        },
        "delivery_report_processor_config": {
            **DELIVERY_REPORT_PROCESSOR_SCHEMA,
            "default": {},
            "description": "Receipt parsing (keys below)",
        },
        "deliver_short_message_processor": {
            "type": "string",
            "default": DEFAULT_PROCESSORS["deliver_short_message_processor"],
            "description": "Accepted for compatibility: the default behaviour is built in",
        },
        "deliver_short_message_processor_config": {
            **DELIVER_SM_PROCESSOR_SCHEMA,
            "default": {},
            "description": "Inbound decoding and USSD (keys below)",
        },
        "submit_short_message_processor": {
            "type": "string",
            "default": DEFAULT_PROCESSORS["submit_short_message_processor"],
            "description": "Accepted for compatibility: the default behaviour is built in",
        },
        "submit_short_message_processor_config": {
            **SUBMIT_SM_PROCESSOR_SCHEMA,
            "default": {},
            "description": "Outbound encoding and long messages (keys below)",
        },
        "mt_tps": {
            "type": "number",
            "minimum": 0,
            "default": 0,
            "description": "Most submit_sm per second; 0 is no limit",
        },
        # vumi's base transport keys, which the original Junebug put in every config.
        "transport_name": {
            "type": "string",
            "description": "Accepted for compatibility: the channel id is used",
        },
        "publish_status": {
            "type": "boolean",
            "default": False,
            "description": "Accepted for compatibility: statuses are always published",
        },
        "amqp_prefetch_count": {
            "type": "integer",
            "minimum": 0,
            "default": 20,
            "description": "Accepted for compatibility: the gateway sets the prefetch",
        },
        "worker_name": {
            "type": "string",
            "description": "Accepted for compatibility and ignored",
        },
        # Junebug's own keys.
        "window_size": {
            "type": "integer",
            "minimum": 1,
            "maximum": 1000,
            "default": 10,
            "description": "Junebug: most submit_sm awaiting their submit_sm_resp at once",
        },
        "submit_sm_resp_timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 60,
            "description": "Junebug: seconds to wait for a submit_sm_resp before reconnecting "
            "(the message is sent again)",
        },
        "max_reconnect_delay": {
            "type": "number",
            "minimum": 0,
            "default": 300,
            "description": "Junebug: longest wait between reconnection attempts, in seconds",
        },
        "delivery_report_hold_time": {
            "type": "number",
            "minimum": 0,
            "default": 30,
            "description": "Junebug: seconds a receipt for an unknown SMSC id is held, in "
            "case it overtook its submit_sm_resp",
        },
        "multipart_reassembly_timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 300,
            "description": "Junebug: seconds to wait for the missing parts of an inbound "
            "long message before dropping it (logged)",
        },
        "wire_logging": {
            "type": "boolean",
            "default": False,
            "description": "Junebug: write every PDU (password masked) to the channel log",
        },
    },
}

#: Every top-level key's default (keys without one are required or optional).
DEFAULTS: dict[str, Any] = {
    key: spec["default"] for key, spec in CONFIG_SCHEMA["properties"].items() if "default" in spec
}
#: Every processor sub-config key's default, by sub-config.
PROCESSOR_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {key: spec["default"] for key, spec in schema["properties"].items()}
    for name, schema in PROCESSOR_SCHEMAS.items()
}


def all_keys() -> list[tuple[str, dict[str, Any]]]:
    """(dotted key, schema) for every key, processor sub-keys as ``parent.key``."""
    keys = []
    for key, spec in CONFIG_SCHEMA["properties"].items():
        keys.append((key, spec))
        if key in PROCESSOR_SCHEMAS:
            for sub, sub_spec in PROCESSOR_SCHEMAS[key]["properties"].items():
                keys.append((f"{key}.{sub}", sub_spec))
    return keys


def unknown_keys(config: dict[str, Any]) -> list[str]:
    """Keys this channel type does not know (accepted, as the original did)."""
    found = [key for key in config if key not in CONFIG_SCHEMA["properties"]]
    for name, schema in PROCESSOR_SCHEMAS.items():
        for key in config.get(name) or {}:
            if key not in schema["properties"]:
                found.append(f"{name}.{key}")
    return found


def problems(config: dict[str, Any]) -> list[str]:
    """What is wrong with a config the schema accepted."""
    found = []
    if not config.get("twisted_endpoint") and not (config.get("host") and config.get("port")):
        found.append("config needs 'twisted_endpoint' (or the deprecated 'host' and 'port')")
    else:
        endpoint = endpoint_description(config)
        try:
            from twisted.internet import reactor
            from twisted.internet.endpoints import clientFromString

            clientFromString(reactor, endpoint)
        except (ValueError, TypeError, KeyError) as exc:
            found.append(f"twisted_endpoint {endpoint!r} is not a valid client endpoint: {exc}")
    status = config.get("deliver_sm_decoding_error", DEFAULTS["deliver_sm_decoding_error"])
    if status not in COMMAND_STATUSES:
        found.append(f"deliver_sm_decoding_error {status!r} is not an SMPP command_status name")
    dr = {**PROCESSOR_DEFAULTS["delivery_report_processor_config"]}
    dr.update(config.get("delivery_report_processor_config") or {})
    try:
        compile_regex(dr["delivery_report_regex"])
    except ValueError as exc:
        found.append(str(exc))
    deliver = config.get("deliver_short_message_processor_config") or {}
    try:
        codecs.build_data_coding_map(deliver.get("data_coding_overrides") or {})
    except (ValueError, LookupError) as exc:
        found.append(f"deliver_short_message_processor_config.data_coding_overrides: {exc}")
    for op in deliver.get("ussd_service_op_map") or {}:
        if not re.fullmatch(r"[0-9A-Fa-f]{2}", op):
            found.append(f"ussd_service_op_map key {op!r} is not 2 hex digits")
    submit = {**PROCESSOR_DEFAULTS["submit_short_message_processor_config"]}
    submit.update(config.get("submit_short_message_processor_config") or {})
    try:
        codecs.normalise_codec_name(submit["submit_sm_encoding"])
    except LookupError:
        found.append(f"submit_sm_encoding {submit['submit_sm_encoding']!r} is not a known codec")
    try:
        style_from_config(
            submit["send_long_messages"], submit["send_multipart_sar"], submit["send_multipart_udh"]
        )
    except ValueError as exc:
        found.append(f"submit_short_message_processor_config: {exc}")
    return found


def endpoint_description(config: dict[str, Any]) -> str:
    if config.get("twisted_endpoint"):
        return config["twisted_endpoint"]
    return f"tcp:host={config['host']}:port={config['port']}"


@attrs.frozen
class SmppConfig:
    """A channel config with every default filled in (see ``CONFIG_SCHEMA``)."""

    values: dict[str, Any]
    delivery_report: dict[str, Any]
    deliver_sm: dict[str, Any]
    submit_sm: dict[str, Any]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SmppConfig:
        values = {**DEFAULTS, **config}
        subs = {}
        for name in PROCESSOR_SCHEMAS:
            subs[name] = {**PROCESSOR_DEFAULTS[name], **(config.get(name) or {})}
        return cls(
            values,
            subs["delivery_report_processor_config"],
            subs["deliver_short_message_processor_config"],
            subs["submit_short_message_processor_config"],
        )

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def endpoint(self) -> str:
        return endpoint_description(self.values)

    @property
    def long_message_style(self) -> str:
        s = self.submit_sm
        return style_from_config(
            s["send_long_messages"], s["send_multipart_sar"], s["send_multipart_udh"]
        )

    @property
    def interface_version(self) -> int:
        return int(self.values["interface_version"], 16)

    @property
    def deliver_sm_decoding_error(self) -> int:
        return COMMAND_STATUSES[self.values["deliver_sm_decoding_error"]]
