"""docs/channels/smpp.md documents every config key with its declared default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from junebug.transports.smpp.config import CONFIG_SCHEMA, all_keys
from junebug.transports.smpp.transport import SmppChannel

PAGE = Path(__file__).resolve().parents[3] / "docs" / "channels" / "smpp.md"


def rows() -> dict[str, list[str]]:
    found = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells[0].startswith("`"):
            found[cells[0].strip("`")] = cells
    return found


@pytest.mark.parametrize(("key", "spec"), all_keys(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_key_has_a_row_with_its_default(key, spec):
    row = rows().get(key)
    assert row is not None, f"{key} has no row in {PAGE.name}"
    default_cell = row[2]
    if key in CONFIG_SCHEMA["required"]:
        assert default_cell == "**required**"
    elif "default" in spec:
        encoded = json.dumps(spec["default"])
        assert default_cell in (f"`{encoded}`", "see below"), (key, default_cell)
    assert row[3] == spec.get("description", ""), key


def test_no_row_for_a_key_that_does_not_exist():
    declared = {key for key, _ in all_keys()}
    documented = {key for key in rows() if "." in key or key in CONFIG_SCHEMA["properties"]}
    assert documented <= declared
    table_keys = [k for k in rows() if k not in declared]
    # Only the status table's types may appear besides config keys.
    assert set(table_keys) <= {
        "bound",
        "bind_failed",
        "bind_timeout",
        "unbound",
        "connection_lost",
        "connection_failed",
        "throttled",
        "throttled_end",
    }


def test_the_original_keys_and_defaults_are_all_accepted():
    original = {
        "twisted_endpoint": "tcp:host=smsc:port=2775",
        "system_id": "s",
        "password": "p",
        "system_type": "",
        "interface_version": "34",
        "service_type": "",
        "address_range": "",
        "dest_addr_ton": 0,
        "dest_addr_npi": 1,
        "source_addr_ton": 0,
        "source_addr_npi": 0,
        "registered_delivery": True,
        "smpp_bind_timeout": 30,
        "smpp_enquire_link_interval": 55,
        "initial_reconnect_delay": 5,
        "throttle_delay": 0.1,
        "deliver_sm_decoding_error": "ESME_RDELIVERYFAILURE",
        "submit_sm_expiry": 86400,
        "third_party_id_expiry": 604800,
        "final_dr_third_party_id_expiry": 3600,
        "completed_multipart_info_expiry": 3600,
        "disable_ack": False,
        "disable_delivery_report": False,
        "redis_manager": {"key_prefix": "x"},
        "split_bind_prefix": "",
        "codec_class": "vumi.codecs.VumiCodec",
        "delivery_report_processor": "vumi.transports.smpp.processors.DeliveryReportProcessor",
        "delivery_report_processor_config": {"delivery_report_use_esm_class": True},
        "deliver_short_message_processor": (
            "vumi.transports.smpp.processors.DeliverShortMessageProcessor"
        ),
        "deliver_short_message_processor_config": {
            "data_coding_overrides": {"0": "utf-8"},
            "allow_empty_messages": False,
        },
        "submit_short_message_processor": (
            "vumi.transports.smpp.processors.SubmitShortMessageProcessor"
        ),
        "submit_short_message_processor_config": {
            "submit_sm_encoding": "utf-8",
            "submit_sm_data_coding": 0,
            "send_long_messages": False,
            "send_multipart_sar": False,
            "send_multipart_udh": True,
            "multipart_sar_reference_rollover": 65536,
        },
        "mt_tps": 0,
        "transport_name": "abc",
        "publish_status": True,
        "worker_name": "abc",
        "amqp_prefetch_count": 20,
    }
    assert SmppChannel.check_config(original) == []
    assert (
        SmppChannel.check_config({"host": "smsc", "port": 2775, "system_id": "s", "password": "p"})
        == []
    )
