"""Channel type dmark: the shared contract plus the Dmark USSD protocol.

``DmarkDriver`` plays the aggregator: real HTTP requests (treq) to the channel's
port, each held open until the application (the test) replies on the bus.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList, DeferredQueue
from twisted.web.client import HTTPConnectionPool

from junebug import messages
from junebug.store import redis as redis_store
from junebug.transports.dmark import (
    CONFIG_SCHEMA,
    DEFAULTS,
    EXPECTED_PARAMETERS,
    DmarkRequest,
    DmarkUssdChannel,
    InvalidRequest,
    parse_parameters,
    response_body,
    to_address,
)
from junebug.transports.registry import channel_types
from tests.conftest import REDIS_HOST, REDIS_PORT
from tests.helpers import free_port, within
from tests.transports.contract import TransportContract
from tests.transports.harness import TransportDriver, TransportHarness

DOCS = Path(__file__).resolve().parents[2] / "docs" / "channels" / "dmark.md"
WEB_PATH = "/dmark/ussd"
SERVICE_CODE = "*123#"


class DmarkUser:
    """One phone in one USSD session (one transactionId)."""

    def __init__(self, harness: TransportHarness, msisdn: str, transaction_id: str) -> None:
        self.harness = harness
        self.msisdn = msisdn
        self.transaction_id = transaction_id
        self.responses: DeferredQueue = DeferredQueue()
        self.outstanding: list[Deferred] = []
        self.inbound_ids: set[str] = set()
        self.last_action: str | None = None


class DmarkDriver(TransportDriver):
    transport_class = DmarkUssdChannel
    sessions = True
    reports_session_end = False
    pushes_messages = False
    unknown_address = "+256700000000"
    invalid_configs = [
        ("no web_path", {"web_port": 8080}, "web_path"),
        ("port out of range", {"web_path": "/u", "web_port": 70000}, "web_port"),
        ("unknown key", {"web_path": "/u", "colour": "red"}, "colour"),
        ("bad validation mode", {"web_path": "/u", "validation_mode": "lax"}, "validation_mode"),
        ("username alone", {"web_path": "/u", "web_username": "dmark"}, "web_password"),
        ("health on the ussd path", {"web_path": "/health"}, "health_path"),
        ("zero timeout", {"web_path": "/u", "request_timeout": 0}, "request_timeout"),
        ("session timeout text", {"web_path": "/u", "ussd_session_timeout": "1"}, "ussd_session"),
        (
            "degraded slower than down",
            {"web_path": "/u", "response_time_degraded": 20},
            "response_time_degraded",
        ),
    ]

    def __init__(self, **config: Any) -> None:
        self.port = free_port()
        self.extra_config = config
        self.key_prefix = f"jbtest-{uuid.uuid4().hex[:12]}"
        self.redis: Any = None
        self.pool: Any = None
        self.outstanding: list[Deferred] = []
        self.numbers = itertools.count(1)

    def config(self) -> dict[str, Any]:
        return {
            "web_path": WEB_PATH,
            "web_port": self.port,
            "web_interface": "127.0.0.1",
            **self.extra_config,
        }

    def harness_options(self) -> dict[str, Any]:
        return {"redis": self.redis, "redis_prefix": f"{self.key_prefix}:"}

    async def start_peer(self) -> None:
        self.redis = await redis_store.connect(REDIS_HOST, REDIS_PORT)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def stop_peer(self) -> None:
        await within(DeferredList(self.outstanding, consumeErrors=True))
        keys = await self.redis.keys(f"{self.key_prefix}:*")
        if keys:
            await self.redis.delete(keys)
        await self.redis.disconnect()
        await self.pool.closeCachedConnections()

    # -- raw HTTP, for the protocol tests ----------------------------------------------

    def url(self, path: str = WEB_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method: str = "GET", path: str = WEB_PATH, **kwargs: Any) -> Deferred:
        """Fires with (code, headers, body bytes) of one request to the channel."""

        async def call() -> tuple[int, Any, bytes]:
            response = await treq.request(method, self.url(path), pool=self.pool, **kwargs)
            return response.code, response.headers, await response.content()

        d = Deferred.fromCoroutine(call())
        self.outstanding.append(d)
        return d

    @staticmethod
    def parameters(user: DmarkUser, text: str, first: bool) -> dict[str, str]:
        return {
            "transactionId": user.transaction_id,
            "msisdn": user.msisdn,
            "ussdServiceCode": SERVICE_CODE,
            "transactionTime": "2024-05-01T10:00:00",
            "ussdRequestString": text,
            "creationTime": "2024-05-01T09:59:58",
            "response": "false" if first else "true",
        }

    async def step(self, user: DmarkUser, text: str, first: bool = False) -> dict:
        """Send one step of ``user``'s session and wait until the channel published it.

        The response (whenever it comes) goes to ``user.responses``.
        """
        d = self.request("GET", params=self.parameters(user, text, first))
        user.outstanding.append(d)
        d.addBoth(user.responses.put)
        inbound = await user.harness.inbound_seen(
            lambda m: (
                m["helper_metadata"].get("session_id") == user.transaction_id
                and m["message_id"] not in user.inbound_ids
            )
        )
        user.inbound_ids.add(inbound["message_id"])
        return inbound

    def new_user(self, harness: TransportHarness) -> DmarkUser:
        number = next(self.numbers)
        return DmarkUser(harness, f"+2567700{number:05d}", f"tx-{uuid.uuid4().hex[:8]}")

    # -- the contract's driver interface ----------------------------------------------

    async def connect_user(self, harness: TransportHarness) -> DmarkUser:
        user = self.new_user(harness)
        await self.step(user, SERVICE_CODE, first=True)
        return user

    def address(self, user: DmarkUser) -> str:
        return user.msisdn

    async def user_sends(self, user: DmarkUser, text: str) -> None:
        await self.step(user, text)

    async def user_receives(self, user: DmarkUser) -> str:
        result = await within(user.responses.get())
        code, headers, body = result
        assert code == 200, (code, body)
        answer = json.loads(body)
        user.last_action = answer["action"]
        return answer["responseString"]

    async def user_leaves(self, user: DmarkUser) -> None:
        # A phone hanging up is invisible to Dmark's HTTP calls; the closest is the
        # aggregator giving up on its outstanding requests.
        for d in user.outstanding:
            d.cancel()

    async def user_left(self, user: DmarkUser) -> None:
        assert user.last_action == "end"


class TestDmarkContract(TransportContract):
    @pytest.fixture
    def driver(self):
        return DmarkDriver()


# -- fixtures for the protocol tests -------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def dmark():
    driver = DmarkDriver()
    await driver.start_peer()
    yield driver
    await driver.stop_peer()


async def start(driver: DmarkDriver, tmp_path: Path, **options: Any) -> TransportHarness:
    config = {**driver.config(), **options.pop("config", {})}
    harness = TransportHarness(
        DmarkUssdChannel, config, str(tmp_path / "logs"), **driver.harness_options(), **options
    )
    await harness.start()
    listening = await harness.next_status()
    assert (listening["component"], listening["status"]) == ("web", "ok")
    return harness


@pytest_twisted.async_yield_fixture
async def running(dmark, tmp_path):
    harness = await start(dmark, tmp_path)
    yield harness
    await harness.stop()


@pytest.fixture
def clock():
    return task.Clock()


@pytest_twisted.async_yield_fixture
async def clocked(dmark, tmp_path, clock):
    """The channel on a task.Clock: time (timeouts, response times) moves only by hand."""
    harness = await start(dmark, tmp_path, clock=clock)
    yield harness
    await harness.stop()


def log_lines(harness: TransportHarness) -> list[dict]:
    with open(harness.log.path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


async def status_of(harness: TransportHarness, component: str) -> dict:
    while True:
        status = await harness.next_status()
        if status["component"] == component:
            return status


def full_parameters(**overrides: str) -> dict[bytes, list[bytes]]:
    values = {name: f"{name}-value" for name in EXPECTED_PARAMETERS}
    values.update(overrides)
    return {k.encode(): [v.encode()] for k, v in values.items()}


# -- pure protocol -------------------------------------------------------------------------


def test_parameters_are_parsed_first_value_each():
    args = full_parameters(msisdn="+256700000001", ussdRequestString="1 ✓")
    args[b"msisdn"].append(b"ignored")
    parsed = parse_parameters(args, "strict")
    assert parsed == DmarkRequest(
        transaction_id="transactionId-value",
        msisdn="+256700000001",
        service_code="ussdServiceCode-value",
        transaction_time="transactionTime-value",
        request_string="1 ✓",
        creation_time="creationTime-value",
        response="response-value",
    )


def test_missing_and_unexpected_parameters_are_named():
    args = full_parameters()
    del args[b"msisdn"], args[b"creationTime"]
    args[b"colour"] = [b"red"]
    with pytest.raises(InvalidRequest) as strict:
        parse_parameters(args, "strict")
    assert strict.value.kind == "invalid_inbound_fields"
    assert strict.value.body == {
        "missing_parameter": ["msisdn", "creationTime"],
        "unexpected_parameter": ["colour"],
    }
    with pytest.raises(InvalidRequest) as permissive:
        parse_parameters(args, "permissive")
    assert permissive.value.body == {"missing_parameter": ["msisdn", "creationTime"]}


def test_permissive_mode_accepts_extra_parameters():
    args = {**full_parameters(), b"colour": [b"red"]}
    assert parse_parameters(args, "permissive").msisdn == "msisdn-value"


def test_undecodable_parameters_raise():
    with pytest.raises(UnicodeDecodeError):
        parse_parameters(full_parameters() | {b"msisdn": [b"\xff"]}, "strict")


@pytest.mark.parametrize(
    ("code", "fix", "expected"),
    [
        ("*123#", False, "*123#"),
        ("123", False, "123"),
        ("123", True, "*123#"),
        ("*123", True, "*123"),
        ("123#", True, "123#"),
        ("*123#", True, "*123#"),
    ],
)
def test_to_address(code, fix, expected):
    assert to_address(code, fix) == expected


def test_response_body_continue_and_end():
    assert json.loads(response_body("Menu ✓", False)) == {
        "responseString": "Menu ✓",
        "action": "request",
    }
    assert json.loads(response_body("Bye", True))["action"] == "end"


# -- config ------------------------------------------------------------------------------


def test_every_key_of_the_original_is_accepted_with_its_default():
    assert DEFAULTS == {
        "web_port": 0,
        "web_interface": "",
        "web_username": None,
        "web_password": None,
        "web_auth_domain": "Vumi HTTP RPC transport",
        "health_path": "health",
        "request_timeout": 240,
        "request_timeout_status_code": 504,
        "request_timeout_body": "",
        "request_cleanup_interval": 5,
        "noisy": False,
        "validation_mode": "strict",
        "response_time_degraded": 1.0,
        "response_time_down": 10.0,
        "ussd_session_timeout": 600,
        "fix_to_addr": False,
        "redis_manager": {},
    }
    everything = {"web_path": "/u", **DEFAULTS, "web_username": "u", "web_password": "p"}
    assert DmarkUssdChannel.check_config(everything) == []
    for key, spec in CONFIG_SCHEMA["properties"].items():
        assert spec.get("description"), key
        assert "type" in spec or "enum" in spec, key


def test_registered_as_the_dmark_channel_type():
    assert channel_types({})["dmark"] is DmarkUssdChannel


def test_web_endpoint_is_path_and_port():
    assert DmarkUssdChannel.web_endpoint({"web_path": "/u", "web_port": 8080}) == ("/u", 8080)
    assert DmarkUssdChannel.web_endpoint({"web_path": "/u"}) is None  # random port
    assert DmarkUssdChannel.web_endpoint({"web_path": "/u", "web_port": 0}) is None


def test_docs_list_every_config_key_with_its_default():
    text = DOCS.read_text(encoding="utf-8")
    for key in CONFIG_SCHEMA["properties"]:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
        assert rows, f"{key} is not in the table of {DOCS.name}"
        assert CONFIG_SCHEMA["properties"][key]["description"] in rows[0], (key, rows[0])
        if key in DEFAULTS:
            assert f"`{json.dumps(DEFAULTS[key])}`" in rows[0], (key, rows[0])


# -- sessions over HTTP --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_dial_is_a_new_session_with_the_originals_fields(dmark, running):
    user = dmark.new_user(running)
    inbound = await dmark.step(user, SERVICE_CODE, first=True)
    assert messages.validate(inbound) is inbound
    assert inbound["session_event"] == "new"
    assert inbound["content"] is None
    assert (inbound["to_addr"], inbound["from_addr"]) == (SERVICE_CODE, user.msisdn)
    assert (inbound["provider"], inbound["transport_type"]) == ("dmark", "ussd")
    assert inbound["transport_name"] == running.channel_id
    assert inbound["helper_metadata"] == {"session_id": user.transaction_id}
    assert inbound["transport_metadata"] == {
        "dmark_ussd": {
            "transaction_id": user.transaction_id,
            "transaction_time": "2024-05-01T10:00:00",
            "creation_time": "2024-05-01T09:59:58",
        }
    }


@pytest_twisted.ensureDeferred
async def test_a_whole_session_continue_then_close(dmark, running):
    user = dmark.new_user(running)
    dial = await dmark.step(user, SERVICE_CODE, first=True)
    key = f"{dmark.key_prefix}:{running.channel_id}:dmark:session:{user.transaction_id}"
    record = json.loads(await dmark.redis.get(key))
    assert record["transaction_id"] == user.transaction_id
    assert 0 < await dmark.redis.ttl(key) <= 600

    await running.send_message(messages.reply(dial, "1. Balance\n2. Quit"))
    code, headers, body = await within(user.responses.get())
    assert code == 200
    assert headers.getRawHeaders("content-type") == ["text/plain"]
    assert json.loads(body) == {"responseString": "1. Balance\n2. Quit", "action": "request"}

    answer = await dmark.step(user, "2")
    assert (answer["session_event"], answer["content"]) == ("resume", "2")
    assert answer["message_id"] != dial["message_id"]
    closing = messages.reply(answer, "Goodbye", continue_session=False)
    await running.send_message(closing)
    code, _, body = await within(user.responses.get())
    assert json.loads(body) == {"responseString": "Goodbye", "action": "end"}

    events = [await running.next_event(), await running.next_event()]
    assert [(e["event_type"], e["user_message_id"]) for e in events][1] == (
        "ack",
        closing["message_id"],
    )
    assert await dmark.redis.exists(key) == 0  # the closed session is forgotten

    again = await dmark.step(user, SERVICE_CODE, first=True)
    assert again["session_event"] == "new"


@pytest_twisted.ensureDeferred
async def test_form_encoded_post_and_put_are_accepted(dmark, running):
    """As in the original, parameters come from the query string, and from the body
    only for a form-encoded POST (Twisted parses no other body)."""
    user = dmark.new_user(running)
    for method, where in (("POST", "data"), ("PUT", "params")):
        d = dmark.request(method, **{where: dmark.parameters(user, "hi", first=True)})
        inbound = await running.next_inbound()
        assert inbound["from_addr"] == user.msisdn
        await running.send_message(messages.reply(inbound, f"via {method}"))
        code, _, body = await within(d)
        assert (code, json.loads(body)["responseString"]) == (200, f"via {method}")


@pytest_twisted.ensureDeferred
async def test_fix_to_addr_wraps_a_bare_service_code(dmark, tmp_path):
    harness = await start(dmark, tmp_path, config={"fix_to_addr": True})
    try:
        user = dmark.new_user(harness)
        params = {**dmark.parameters(user, "", first=True), "ussdServiceCode": "384"}
        dmark.request(params=params)
        assert (await harness.next_inbound())["to_addr"] == "*384#"
    finally:
        await harness.stop()


# -- bad requests ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_incomplete_request_is_a_400_naming_the_parameters(dmark, running):
    params = {"msisdn": "+256700000001", "colour": "red"}
    code, _, body = await within(dmark.request(params=params))
    assert code == 400
    assert json.loads(body) == {
        "missing_parameter": [
            "transactionId",
            "ussdServiceCode",
            "transactionTime",
            "ussdRequestString",
            "creationTime",
            "response",
        ],
        "unexpected_parameter": ["colour"],
    }
    status = await status_of(running, "request")
    assert (status["status"], status["type"], status["message"]) == (
        "down",
        "invalid_inbound_fields",
        "Invalid inbound fields",
    )
    assert status["details"] == json.loads(body)
    refused = [line for line in log_lines(running) if "Refused" in line["message"]]
    assert refused and "transactionId" in refused[0]["message"]
    assert running.inbound.pending == []


@pytest_twisted.ensureDeferred
async def test_undecodable_request_is_a_400(dmark, running):
    code, _, body = await within(dmark.request(path=WEB_PATH + "?msisdn=%FF"))
    assert code == 400
    invalid = json.loads(body)["invalid_request"]
    assert invalid["method"] == "GET" and "%FF" in invalid["uri"]
    status = await status_of(running, "request")
    assert (status["status"], status["type"]) == ("down", "invalid_encoding")


@pytest_twisted.ensureDeferred
async def test_permissive_mode_ignores_unexpected_parameters(dmark, tmp_path):
    harness = await start(dmark, tmp_path, config={"validation_mode": "permissive"})
    try:
        user = dmark.new_user(harness)
        dmark.request(params={**dmark.parameters(user, "", first=True), "extra": "1"})
        assert (await harness.next_inbound())["from_addr"] == user.msisdn
    finally:
        await harness.stop()


@pytest_twisted.ensureDeferred
async def test_other_paths_methods_and_the_health_path(dmark, running):
    code, _, _ = await within(dmark.request(path="/elsewhere"))
    assert code == 404
    code, headers, _ = await within(dmark.request("DELETE"))
    assert code == 405 and headers.getRawHeaders("allow") == ["GET, POST, PUT"]
    user = dmark.new_user(running)
    await dmark.step(user, SERVICE_CODE, first=True)
    code, _, body = await within(dmark.request(path="/health"))
    assert (code, json.loads(body)) == (200, {"pending_requests": 1})


@pytest_twisted.ensureDeferred
async def test_basic_auth_when_configured(dmark, tmp_path):
    config = {"web_username": "dmark", "web_password": "s3cret"}
    harness = await start(dmark, tmp_path, config=config)
    try:
        user = dmark.new_user(harness)
        params = dmark.parameters(user, "", first=True)
        code, headers, _ = await within(dmark.request(params=params))
        assert code == 401
        assert headers.getRawHeaders("www-authenticate") == [
            'Basic realm="Vumi HTTP RPC transport"'
        ]
        code, _, _ = await within(dmark.request(params=params, auth=("dmark", "wrong")))
        assert code == 401
        dmark.request(params=params, auth=("dmark", "s3cret"))
        assert (await harness.next_inbound())["from_addr"] == user.msisdn
    finally:
        await harness.stop()


# -- replies that cannot be delivered ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reply_without_a_pending_request_is_nacked_and_logged(dmark, running):
    user = dmark.new_user(running)
    dial = await dmark.step(user, SERVICE_CODE, first=True)
    stray = messages.reply({**dial, "message_id": "f" * 32}, "lost")
    await running.send_message(stray)
    event = await running.next_event()
    assert (event["event_type"], event["user_message_id"]) == ("nack", stray["message_id"])
    assert event["nack_reason"] == "Could not find original request."
    warned = [
        line
        for line in log_lines(running)
        if line.get("message_id") == stray["message_id"] and line["level"] == 30
    ]
    assert warned and "f" * 32 in warned[0]["message"]


@pytest_twisted.ensureDeferred
async def test_reply_without_content_is_nacked(dmark, running):
    user = dmark.new_user(running)
    dial = await dmark.step(user, SERVICE_CODE, first=True)
    empty = messages.reply(dial, "")
    await running.send_message(empty)
    event = await running.next_event()
    assert (event["event_type"], event["nack_reason"]) == ("nack", "Missing fields: content")


@pytest_twisted.ensureDeferred
async def test_reply_after_the_aggregator_gave_up_is_nacked(dmark, running):
    user = dmark.new_user(running)
    dial = await dmark.step(user, SERVICE_CODE, first=True)
    await dmark.user_leaves(user)
    code, _, body = await within(dmark.request(path="/health"))
    while json.loads(body)["pending_requests"]:  # the disconnect is seen asynchronously
        code, _, body = await within(dmark.request(path="/health"))
    await running.send_message(messages.reply(dial, "too late"))
    event = await running.next_event()
    assert event["nack_reason"] == "Could not find original request."


# -- time: timeouts and slow responses, on a task.Clock ------------------------------------


@pytest_twisted.ensureDeferred
async def test_unanswered_request_times_out(dmark, clocked, clock):
    user = dmark.new_user(clocked)
    dial = await dmark.step(user, SERVICE_CODE, first=True)
    clock.advance(239)
    assert not user.responses.pending
    clock.advance(1)
    code, headers, body = await within(user.responses.get())
    assert (code, body) == (504, b"")
    status = await status_of(clocked, "response")
    assert (status["status"], status["type"], status["message"]) == (
        "down",
        "timeout",
        "Response timed out",
    )
    assert status["reasons"] == ["Response took longer than 240.000000s"]
    assert status["details"] == {"response_time": 240}
    failed = [
        line
        for line in log_lines(clocked)
        if line.get("message_id") == dial["message_id"] and line["level"] == 40
    ]
    assert failed and "240" in failed[0]["message"]

    await clocked.send_message(messages.reply(dial, "too late"))
    event = await clocked.next_event()
    assert event["nack_reason"] == "Could not find original request."


@pytest_twisted.ensureDeferred
async def test_timeout_answer_is_configurable(dmark, tmp_path, clock):
    config = {
        "request_timeout": 5,
        "request_timeout_status_code": 200,
        "request_timeout_body": "Sorry, try later",
    }
    harness = await start(dmark, tmp_path, clock=clock, config=config)
    try:
        user = dmark.new_user(harness)
        await dmark.step(user, SERVICE_CODE, first=True)
        clock.advance(5)
        code, _, body = await within(user.responses.get())
        assert (code, body) == (200, b"Sorry, try later")
    finally:
        await harness.stop()


@pytest_twisted.ensureDeferred
async def test_response_statuses_follow_response_time_and_are_edge_detected(dmark, clocked, clock):
    user = dmark.new_user(clocked)

    async def answer_after(seconds: float) -> None:
        inbound = await dmark.step(user, "x", first=not user.inbound_ids)
        clock.advance(seconds)
        await clocked.send_message(messages.reply(inbound, "ok"))
        await within(user.responses.get())
        await clocked.next_event()

    await answer_after(0.5)
    request = await status_of(clocked, "request")
    assert (request["status"], request["type"], request["message"]) == (
        "ok",
        "request_parsed",
        "Request parsed",
    )
    response = await status_of(clocked, "response")
    assert (response["status"], response["type"]) == ("ok", "response_sent")
    assert response["details"] == {"response_time": 0.5}

    await answer_after(0.5)  # nothing new: neither component publishes again
    await answer_after(2)
    slow = await clocked.next_status()
    assert (slow["component"], slow["status"], slow["type"]) == (
        "response",
        "degraded",
        "slow_response",
    )
    assert slow["reasons"] == ["Response took longer than 1.000000s"]

    await answer_after(11)
    very_slow = await clocked.next_status()
    assert (very_slow["status"], very_slow["type"]) == ("down", "very_slow_response")
    assert very_slow["reasons"] == ["Response took longer than 10.000000s"]
    assert clocked.statuses.pending == []


# -- stopping ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stopping_answers_pending_requests(dmark, running):
    user = dmark.new_user(running)
    await dmark.step(user, SERVICE_CODE, first=True)
    await running.worker.stop()
    running.worker = None
    code, _, _ = await within(user.responses.get())
    assert code == 503
