"""The control API over HTTP, in-process: a Klein Site on a real port over a simulator
whose time comes from task.Clock."""

from __future__ import annotations

import json

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.server import Site

from junebug.smsc.control import ControlApi
from tests.smsc.esme import SYSTEM_ID, submit, within


class Http:
    def __init__(self, base: str) -> None:
        self.base = base

    async def call(self, method: str, path: str, body=None, raw: bytes | None = None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        response = await within(treq.request(method, self.base + path, data=data))
        content = await within(treq.content(response))
        assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
        return response.code, json.loads(content)


@pytest_twisted.async_yield_fixture
async def http(smsc):
    port = reactor.listenTCP(0, Site(ControlApi(smsc.simulator).resource()), interface="127.0.0.1")
    yield Http(f"http://127.0.0.1:{port.getHost().port}")
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_status(smsc, http):
    code, status = await http.call("GET", "/status")
    assert code == 200
    assert status["bound"] == [] and status["submits"] == 0 and status["throttled"] is False
    await smsc.esme("bind_receiver")
    code, status = await http.call("GET", "/status")
    [bind] = status["bound"]
    assert bind["system_id"] == SYSTEM_ID and bind["bind_type"] == "receiver"
    assert status["settings"]["dr_delay"] == 0.5


@pytest_twisted.ensureDeferred
async def test_status_can_wait_for_a_bind(smsc, http):
    waiting = http.call("GET", "/status?bound=1&timeout=5")
    await smsc.esme()
    code, status = await waiting
    assert len(status["bound"]) == 1


@pytest_twisted.ensureDeferred
async def test_submits_list_and_clear(smsc, http):
    esme = await smsc.esme()
    resp = await submit(esme, b"hello", tlvs={"user_message_reference": 3})
    code, submits = await http.call("GET", "/submits")
    assert code == 200
    [record] = submits
    assert record["smsc_message_id"] == resp.params["message_id"]
    assert record["text"] == "hello"
    assert record["source_addr"] == "12345"
    assert record["destination_addr"] == "27831234567"
    assert record["data_coding"] == 0 and record["esm_class"] == 0
    assert record["udh"] is None and record["sar"] is None
    assert record["tlvs"] == {"user_message_reference": 3}
    assert record["received_at"] == smsc.clock.seconds()
    code, cleared = await http.call("DELETE", "/submits")
    assert (code, cleared) == (200, {"cleared": True})
    assert (await http.call("GET", "/submits"))[1] == []


@pytest_twisted.ensureDeferred
async def test_submits_can_wait_for_a_count_and_include_rejected(smsc, http):
    esme = await smsc.esme()
    waiting = http.call("GET", "/submits?count=2&timeout=5")
    await submit(esme)
    await submit(esme)
    code, submits = await waiting
    assert len(submits) == 2
    smsc.simulator.throttle(10)
    await submit(esme)
    assert len((await http.call("GET", "/submits"))[1]) == 2
    code, everything = await http.call("GET", "/submits?include=rejected")
    assert [r["command_status"] for r in everything] == ["ESME_ROK", "ESME_ROK", "ESME_RTHROTTLED"]


@pytest_twisted.ensureDeferred
async def test_post_mo(smsc, http):
    esme = await smsc.esme()
    code, answer = await http.call(
        "POST",
        "/mo",
        {"from": "2782", "to": "12345", "text": "z" * 200, "coding": "gsm0338", "multipart": "sar"},
    )
    assert code == 200
    assert answer["sent"] == 2
    parts = [await esme.next_of("deliver_sm") for _ in range(2)]
    assert [p.sequence_number for p in parts] == answer["sequence_numbers"]
    assert [p.tlvs["sar_segment_seqnum"] for p in parts] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_post_mo_ussd_and_binary(smsc, http):
    esme = await smsc.esme()
    body = {"from": "2782", "to": "*120#", "text": "1", "ussd_service_op": 2}
    body["its_session_info"] = "0010"
    assert (await http.call("POST", "/mo", body))[0] == 200
    pdu = await esme.next_of("deliver_sm")
    assert pdu.tlvs == {"ussd_service_op": b"\x02", "its_session_info": b"\x00\x10"}
    body = {"from": "1", "to": "2", "coding": "binary", "hex": "cafe"}
    assert (await http.call("POST", "/mo", body))[0] == 200
    pdu = await esme.next_of("deliver_sm")
    assert (pdu.params["data_coding"], pdu.params["short_message"]) == (4, b"\xca\xfe")


@pytest_twisted.ensureDeferred
async def test_post_mo_errors(smsc, http):
    code, answer = await http.call("POST", "/mo", {"from": "1", "to": "2", "text": "hi"})
    assert code == 409 and "bound" in answer["error"]
    await smsc.esme()
    for body in (
        {"to": "2"},
        {"from": "1", "to": "2", "coding": "morse"},
        {"from": "1", "to": "2", "colour": "red"},
        {"from": "1", "to": "2", "text": 5},
    ):
        code, answer = await http.call("POST", "/mo", body)
        assert code == 400, body
        assert answer["error"]
    code, answer = await http.call("POST", "/mo", raw=b"{not json")
    assert code == 400 and "JSON" in answer["error"]
    code, answer = await http.call("POST", "/mo", raw=b"[1]")
    assert code == 400


@pytest_twisted.ensureDeferred
async def test_post_receipt_for_known_and_unknown_ids(smsc, http):
    esme = await smsc.esme()
    resp = await submit(esme, registered_delivery=0)
    message_id = resp.params["message_id"]
    code, answer = await http.call(
        "POST", "/receipt", {"smsc_message_id": message_id, "status": "failed", "style": "tlv"}
    )
    assert code == 200 and answer["sent"] == 1
    receipt = await esme.next_of("deliver_sm")
    assert receipt.sequence_number == answer["sequence_numbers"][0]
    assert receipt.tlvs == {"receipted_message_id": message_id, "message_state": 5}
    assert receipt.params["destination_addr"] == "12345"  # back to the submit's sender
    code, answer = await http.call("POST", "/receipt", {"smsc_message_id": "nosuchid"})
    assert code == 200
    receipt = await esme.next_of("deliver_sm")
    assert receipt.tlvs["receipted_message_id"] == "nosuchid"
    assert b"stat:DELIVRD" in receipt.params["short_message"]
    code, answer = await http.call("POST", "/receipt", {"smsc_message_id": "x", "status": "?"})
    assert code == 400
    code, answer = await http.call("POST", "/receipt", {})
    assert code == 400


@pytest_twisted.ensureDeferred
async def test_post_unbind_and_drop(smsc, http):
    esme = await smsc.esme()
    assert (await http.call("POST", "/unbind")) == (200, {"unbound": 1})
    await esme.next_of("unbind")
    other = await smsc.esme()
    assert (await http.call("POST", "/drop")) == (200, {"dropped": 2})
    await within(esme.closed)
    await within(other.closed)


@pytest_twisted.ensureDeferred
async def test_post_throttle(smsc, http):
    esme = await smsc.esme()
    assert (await http.call("POST", "/throttle", {"seconds": 3})) == (200, {"throttled": True})
    assert (await submit(esme)).command_status == 0x58
    smsc.clock.advance(3)
    assert (await http.call("GET", "/status"))[1]["throttled"] is False
    assert (await http.call("POST", "/throttle", {}))[0] == 400
    assert (await http.call("POST", "/throttle", {"seconds": "soon"}))[0] == 400


@pytest_twisted.ensureDeferred
async def test_config_get_and_partial_update(smsc, http):
    code, settings = await http.call("GET", "/config")
    assert code == 200 and settings["id_format"] == "hex"
    code, settings = await http.call(
        "POST", "/config", {"dr_delay": 2, "id_format": "decimal", "fail_every": 2}
    )
    assert code == 200
    assert (settings["dr_delay"], settings["id_format"], settings["fail_every"]) == (
        2.0,
        "decimal",
        2,
    )
    assert settings["throttle_after"] == 0  # untouched
    code, answer = await http.call("POST", "/config", {"id_format": "roman"})
    assert code == 400 and "id_format" in answer["error"]
    assert smsc.simulator.settings.id_format == "decimal"


@pytest_twisted.ensureDeferred
async def test_deliveries_and_waiting_for_answers(smsc, http):
    esme = await smsc.esme(auto_answer=True)
    await http.call("POST", "/mo", {"from": "1", "to": "2", "text": "hi"})
    code, deliveries = await http.call("GET", "/deliveries?answered=1&timeout=5")
    [delivery] = deliveries
    assert delivery["kind"] == "mo" and delivery["command_status"] == "ESME_ROK"
    assert esme.received.pending  # the deliver_sm itself is still queued for the test


@pytest_twisted.ensureDeferred
async def test_unknown_route_is_404_json(http):
    code, answer = await http.call("GET", "/nothing")
    assert code == 404 and answer["error"]
