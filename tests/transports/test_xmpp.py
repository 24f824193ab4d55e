"""Channel type xmpp: the shared contract plus XMPP specifics, against a real server.

Every test talks to a private prosody (``tests/xmpp_server.py``); the far end is an
independent client (slixmpp) logged in as a user of that server.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from junebug import messages
from junebug.transports.base import RetryLater
from junebug.transports.registry import channel_types
from junebug.transports.xmpp import XmppChannel, backoff_delay
from tests.helpers import within
from tests.transports.contract import TransportContract
from tests.transports.harness import TransportDriver, TransportHarness
from tests.xmpp_server import PrivateProsody, XmppUser, running_prosody

DOCS = Path(__file__).parents[2] / "docs" / "channels" / "xmpp.md"

VALID = {"username": "bot@example.org", "password": "secret"}


@pytest.fixture(scope="module")
def prosody():
    with running_prosody() as server:
        yield server


class XmppDriver(TransportDriver):
    """The channel is one account of the private server; each user is another."""

    transport_class = XmppChannel
    unknown_address = "not a jid@@"
    invalid_configs = [
        ("no username", {"password": "x"}, "username"),
        ("no password", {"username": "bot@example.org"}, "password"),
        ("username without user part", {**VALID, "username": "example.org"}, "not a JID"),
        ("username not a JID", {**VALID, "username": "a@@b"}, "not a JID"),
        ("port out of range", {**VALID, "port": 70000}, "port"),
        ("port not a number", {**VALID, "port": "5222"}, "port"),
        ("negative ping_interval", {**VALID, "ping_interval": -1}, "ping_interval"),
        ("debug not a boolean", {**VALID, "debug": "yes"}, "debug"),
        ("unknown key", {**VALID, "colour": "red"}, "colour"),
        (
            "back-off bounds reversed",
            {**VALID, "reconnect_delay": 10, "reconnect_max_delay": 1},
            "reconnect_max_delay",
        ),
        (
            "missing CA file",
            {**VALID, "tls_ca_certificates": "/nonexistent/ca.pem"},
            "tls_ca_certificates",
        ),
    ]

    def __init__(self, server: PrivateProsody) -> None:
        self.server = server
        self.bot, self.bot_password = server.new_account("bot")
        self.users: list[XmppUser] = []

    def config(self, **overrides: Any) -> dict[str, Any]:
        config = {
            "username": self.bot,
            "password": self.bot_password,
            "host": self.server.host,
            "port": self.server.port,
            "status": "Talk to me",
            "reconnect_delay": 0.1,
            "reconnect_max_delay": 0.5,
        }
        if self.server.ca_file:
            config["tls_ca_certificates"] = self.server.ca_file
        else:
            config["tls_required"] = False
        config.update(overrides)
        return config

    async def connect_user(self, harness: TransportHarness | None = None) -> XmppUser:
        account, password = self.server.new_account("user")
        user = XmppUser(account, password, self.server)
        self.users.append(user)
        return await user.connect()

    def address(self, user: XmppUser) -> str:
        return user.jid

    async def user_sends(self, user: XmppUser, text: str) -> None:
        user.send(self.bot, text)

    async def user_receives(self, user: XmppUser) -> str:
        sender, body = await user.next_message()
        assert sender == self.bot
        return body

    async def stop_peer(self) -> None:
        for user in self.users:
            await user.disconnect()


@pytest.mark.slow
class TestXmppContract(TransportContract):
    @pytest.fixture
    def driver(self, prosody):
        return XmppDriver(prosody)


# -- XMPP specifics -----------------------------------------------------------------------


@pytest.fixture
def xmpp(prosody):
    return XmppDriver(prosody)


@pytest_twisted.async_yield_fixture
async def start(xmpp, tmp_path):
    """Starts harnesses for the test (``await start(config)``) and stops them after."""
    harnesses: list[TransportHarness] = []

    async def starter(config: dict[str, Any] | None = None) -> TransportHarness:
        log_dir = str(tmp_path / f"logs{len(harnesses)}")
        harness = TransportHarness(XmppChannel, config or xmpp.config(), log_dir)
        harnesses.append(harness)
        return await harness.start()

    yield starter
    for harness in harnesses:
        await harness.stop()
    await xmpp.stop_peer()


async def next_status_of_type(harness: TransportHarness, kind: str) -> dict:
    while True:
        status = await harness.next_status()
        if status["type"] == kind:
            return status


async def eventually(condition, seconds: float = 10, what: str = "condition") -> None:
    """Poll ``condition`` (without blocking the reactor) until it holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.02, lambda: None)


def outbound_message(harness: TransportHarness, to_addr: str, content: str) -> dict:
    """An outbound message as the worker hands it to the transport."""
    return messages.user_message(
        to_addr=to_addr, from_addr=None, transport_name=harness.channel_id, content=content
    )


def log_lines(harness: TransportHarness) -> list[dict]:
    return [json.loads(line) for line in Path(harness.log.path).read_text().splitlines()]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_inbound_addresses_and_metadata(xmpp, start):
    harness = await start()
    user = await xmpp.connect_user()
    user.send(xmpp.bot, "  padded text \n", id="stanza-1")
    inbound = await harness.next_inbound()
    assert inbound["content"] == "padded text"
    assert inbound["from_addr"] == user.jid  # bare: the client's resource is dropped
    assert inbound["to_addr"] == xmpp.bot
    assert inbound["transport_type"] == "xmpp"
    assert inbound["session_event"] is None
    assert inbound["transport_metadata"] == {"xmpp_id": "stanza-1"}


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_connected_status_names_the_account(xmpp, start):
    harness = await start()
    status = await harness.next_status()
    assert (status["component"], status["status"], status["type"]) == ("xmpp", "ok", "connected")
    assert status["details"]["jid"].startswith(xmpp.bot + "/")
    assert xmpp.bot in status["message"]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_messages_without_body_are_ignored(xmpp, start):
    harness = await start()
    user = await xmpp.connect_user()
    await harness.next_status()  # logged in: the raw stanzas below reach it live
    bot = xmpp.bot
    user.send_raw(
        f"<message to='{bot}' type='chat'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    user.send_raw(f"<message to='{bot}' type='chat'><subject>no body</subject></message>")
    user.send_raw(f"<message to='{bot}' type='groupchat'><body>room talk</body></message>")
    user.send(bot, "the real one")
    inbound = await harness.next_inbound()
    assert inbound["content"] == "the real one"
    assert not harness.inbound.pending


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_wrong_password_is_an_auth_failure_status(xmpp, start):
    harness = await start(xmpp.config(password="not-the-password"))
    status = await harness.next_status()
    assert (status["status"], status["type"]) == ("down", "auth_failure")
    assert "username and password" in status["message"]
    assert xmpp.bot in status["message"]
    assert harness.worker.consumer.paused
    log = Path(harness.log.path).read_text()
    assert "not-the-password" not in log


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_debug_logs_traffic_but_never_the_password(xmpp, start):
    harness = await start(xmpp.config(debug=True))
    user = await xmpp.connect_user()
    await harness.next_status()
    sent = await harness.send(user.jid, "logged?")
    assert (await user.next_message())[1] == "logged?"
    await harness.next_event()
    wire = [line for line in log_lines(harness) if "direction" in line]
    assert any(sent["message_id"] in line["message"] for line in wire)
    assert any("<auth" in line["message"] for line in wire)
    text = Path(harness.log.path).read_text()
    plain = base64.b64encode(f"\0{xmpp.bot.split('@')[0]}\0{xmpp.bot_password}".encode())
    assert xmpp.bot_password not in text
    assert plain.decode() not in text


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_reconnects_after_server_restart_and_sends_what_waited(xmpp, start, prosody):
    harness = await start()
    user = await xmpp.connect_user()
    assert (await harness.next_status())["status"] == "ok"

    prosody.stop()
    down = await harness.next_status()
    assert (down["status"], down["type"]) == ("down", "disconnected")
    assert down["details"]["reconnect_in"] <= 0.5
    assert harness.worker.consumer.paused
    waiting = [await harness.send(user.jid, f"while you were away {n}") for n in (1, 2)]
    # One already taken off the queue as the connection dropped is held, not failed:
    # its handle_outbound call (and so its bus acknowledgement) waits for the connection.
    held = outbound_message(harness, user.jid, "while you were away 3")
    holding = Deferred.fromCoroutine(harness.worker.transport.handle_outbound(held))
    assert not holding.called
    prosody.start()

    await next_status_of_type(harness, "connected")
    await within(holding)
    acked = {(await harness.next_event())["user_message_id"] for _ in range(3)}
    assert acked == {message["message_id"] for message in [*waiting, held]}
    received = [await user.next_message(15) for _ in range(3)]
    assert sorted(body for _, body in received) == [
        "while you were away 1",
        "while you were away 2",
        "while you were away 3",
    ]

    # and the connection works both ways again
    await user.next_session()
    user.send(xmpp.bot, "back again")
    assert (await harness.next_inbound())["content"] == "back again"


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_server_down_at_start_is_retried(xmpp, start, prosody):
    prosody.stop()
    try:
        harness = await start()
        status = await harness.next_status()
        assert (status["status"], status["type"]) == ("down", "connection_failed")
        assert str(prosody.port) in status["message"]
    finally:
        prosody.start()
    assert (await next_status_of_type(harness, "connected"))["status"] == "ok"


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_held_message_goes_back_to_the_bus_when_stopped_before_reconnecting(
    xmpp, start, prosody
):
    prosody.stop()
    try:
        harness = await start()
        await harness.next_status()
        held = outbound_message(harness, "someone@localhost", "never sent")
        holding = Deferred.fromCoroutine(harness.worker.transport.handle_outbound(held))
        assert not holding.called
        await harness.worker.stop()
        harness.worker = None
    finally:
        prosody.start()
    # Given back, not nacked: the message will be delivered again on the next start.
    with pytest.raises(RetryLater):
        await within(holding)
    assert harness.events.pending == []


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_pings_are_answered(xmpp, start):
    harness = await start(xmpp.config(ping_interval=0.2))
    await harness.next_status()
    transport = harness.worker.transport
    await eventually(lambda: transport.pongs >= 2, what="two answered pings")
    assert transport.stream is not None


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_unanswered_ping_drops_the_connection_and_reconnects(xmpp, start):
    proxy = FreezableProxy(xmpp.server.host, xmpp.server.port)
    try:
        harness = await start(xmpp.config(port=proxy.port, ping_interval=0.2))
        assert (await harness.next_status())["type"] == "connected"
        proxy.freeze()  # the connection stays open but nothing comes back
        dropped = await harness.next_status()
        assert (dropped["status"], dropped["type"]) == ("down", "ping_timeout")
        assert (await harness.next_status())["type"] == "connected"
    finally:
        await proxy.close()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_unknown_certificate_is_refused_unless_verification_is_off(xmpp, start):
    strict = await start(xmpp.config(tls_ca_certificates=None))
    status = await strict.next_status()
    assert (status["status"], status["type"]) == ("down", "tls_failed")

    lax = await start(xmpp.config(tls_ca_certificates=None, tls_verify_certificate=False))
    assert (await lax.next_status())["type"] == "connected"


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_server_without_tls(start, tmp_path):
    with running_prosody(tls=False) as plain:
        driver = XmppDriver(plain)
        try:
            required = await start(driver.config(tls_required=True))
            status = await required.next_status()
            assert (status["status"], status["type"]) == ("down", "tls_unavailable")
            assert "tls_required" in status["message"]

            allowed = await start(driver.config(tls_required=False))
            assert (await allowed.next_status())["type"] == "connected"
            user = await driver.connect_user()
            user.send(driver.bot, "in the clear")
            assert (await allowed.next_inbound())["content"] == "in the clear"
        finally:
            for harness in (required, allowed):
                await harness.stop()
            await driver.stop_peer()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_message_to_unknown_account_is_reported_failed(xmpp, start):
    harness = await start()
    await harness.next_status()
    sent = await harness.send(f"nobody-{random.randrange(10**9)}@{xmpp.server.domain}", "hello?")
    ack = await harness.next_event()
    assert (ack["event_type"], ack["user_message_id"]) == ("ack", sent["message_id"])
    report = await harness.next_event()
    assert report["event_type"] == "delivery_report"
    assert (report["user_message_id"], report["delivery_status"]) == (sent["message_id"], "failed")


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_subscription_requests_are_accepted_and_returned(xmpp, start):
    harness = await start()
    await harness.next_status()
    user = await xmpp.connect_user()
    user.send_raw(f"<presence to='{xmpp.bot}' type='subscribe'/>")
    answers = {await within(user.presences.get()) for _ in range(2)}
    assert answers == {(xmpp.bot, "subscribed"), (xmpp.bot, "subscribe")}


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_outbound_to_full_jid_goes_to_the_bare_jid(xmpp, start):
    harness = await start()
    user = await xmpp.connect_user()
    await harness.send(user.jid + "/some-other-device", "found you")
    assert await user.next_message() == (xmpp.bot, "found you")


# -- without a server ---------------------------------------------------------------------


def test_backoff_grows_to_the_maximum_with_jitter():
    rng = random.Random(7)
    delays = [backoff_delay(attempt, 1, 30, rng) for attempt in range(12)]
    ceilings = [min(30, 2**attempt) for attempt in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert delays[-1] >= 15
    assert len({round(backoff_delay(8, 1, 30, rng), 6) for _ in range(5)}) == 5  # jittered


def test_xmpp_is_a_default_channel_type():
    assert channel_types({})["xmpp"] is XmppChannel


def test_defaults_are_the_schema_defaults():
    config = XmppChannel.CONFIG_SCHEMA["properties"]
    assert XmppChannel.setting(VALID, "port") == config["port"]["default"] == 5222
    assert XmppChannel.setting(VALID, "ping_interval") == 60
    assert XmppChannel.setting(VALID, "tls_required") is True
    assert XmppChannel.setting(VALID, "tls_verify_certificate") is True
    assert XmppChannel.check_config(VALID) == []


def test_docs_list_every_config_key_with_its_default():
    docs = DOCS.read_text()
    for key, schema in XmppChannel.CONFIG_SCHEMA["properties"].items():
        row = re.search(rf"^\| `{key}` \|(.*)$", docs, re.MULTILINE)
        assert row, f"docs/channels/xmpp.md has no table row for {key}"
        if "default" in schema:
            default = json.dumps(schema["default"])
            assert f"`{default}`" in row.group(1), f"{key}: default {default} not in {row.group(0)}"


# -- a TCP proxy that can stop answering ----------------------------------------------------


class _Pipe(Protocol):
    """One side of a proxied connection: writes what it receives to the other side."""

    def __init__(self, proxy: FreezableProxy) -> None:
        self.proxy = proxy
        self.peer: _Pipe | None = None
        self.frozen = False
        self.buffer: list[bytes] = []

    def connectionMade(self) -> None:
        self.proxy.pipes.append(self)

    def attach(self, peer: _Pipe) -> None:
        self.peer = peer
        for data in self.buffer:
            peer.transport.write(data)
        self.buffer = []

    def dataReceived(self, data: bytes) -> None:
        if self.frozen:
            return
        if self.peer is None:
            self.buffer.append(data)
        else:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.peer is not None:
            self.peer.transport.loseConnection()


class _ToServer(_Pipe):
    def __init__(self, proxy: FreezableProxy, accepted: _Pipe) -> None:
        super().__init__(proxy)
        self.accepted = accepted

    def connectionMade(self) -> None:
        super().connectionMade()
        self.attach(self.accepted)
        self.accepted.attach(self)


class _Accepted(_Pipe):
    def connectionMade(self) -> None:
        super().connectionMade()
        endpoint = TCP4ClientEndpoint(reactor, self.proxy.host, self.proxy.target)
        connectProtocol(endpoint, _ToServer(self.proxy, self)).addErrback(
            lambda _: self.transport.loseConnection()
        )


class FreezableProxy:
    """Forwards a port of 127.0.0.1 to the server. ``freeze`` turns the connections
    open at that moment into black holes: they stay up, but nothing gets through."""

    def __init__(self, host: str, target: int) -> None:
        self.host = host
        self.target = target
        self.pipes: list[_Pipe] = []
        factory = Factory.forProtocol(lambda: _Accepted(self))
        self.listening = reactor.listenTCP(0, factory, interface=host)
        self.port = self.listening.getHost().port

    def freeze(self) -> None:
        for pipe in self.pipes:
            pipe.frozen = True

    async def close(self) -> None:
        await self.listening.stopListening()
        for pipe in self.pipes:
            if pipe.transport is not None and pipe.transport.connected:
                pipe.transport.abortConnection()
