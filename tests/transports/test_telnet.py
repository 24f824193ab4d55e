"""Channel type telnet: the shared contract plus telnet specifics."""

from __future__ import annotations

import pytest
import pytest_twisted

from junebug.transports.telnet import TelnetChannel
from tests.helpers import TelnetUser, free_port, within
from tests.transports.contract import TransportContract
from tests.transports.harness import TransportDriver, TransportHarness


class TelnetDriver(TransportDriver):
    transport_class = TelnetChannel
    sessions = True
    unknown_address = "192.0.2.1:9"
    invalid_configs = [
        ("no endpoint", {}, "twisted_endpoint"),
        ("endpoint not a string", {"twisted_endpoint": 9001}, "twisted_endpoint"),
        ("bad endpoint", {"twisted_endpoint": "nonsense:1"}, "not a valid server endpoint"),
        ("unknown key", {"twisted_endpoint": "tcp:1", "colour": "red"}, "colour"),
        ("port out of range", {"telnet_port": 70000}, "telnet_port"),
    ]

    def __init__(self) -> None:
        self.port = free_port()

    def config(self) -> dict:
        return {"twisted_endpoint": f"tcp:{self.port}:interface=127.0.0.1"}

    async def connect_user(self, harness: TransportHarness) -> TelnetUser:
        return await TelnetUser().connect(self.port)

    def address(self, user: TelnetUser) -> str:
        return user.address

    async def user_sends(self, user: TelnetUser, text: str) -> None:
        user.type(text)

    async def user_receives(self, user: TelnetUser) -> str:
        return await user.next_line()

    async def user_leaves(self, user: TelnetUser) -> None:
        await user.hang_up()

    async def user_left(self, user: TelnetUser) -> None:
        await within(user.disconnected)


class TestTelnetContract(TransportContract):
    @pytest.fixture
    def driver(self):
        return TelnetDriver()


@pytest.fixture
def telnet():
    return TelnetDriver()


@pytest_twisted.async_yield_fixture
async def running(telnet, tmp_path):
    harness = await TransportHarness(TelnetChannel, telnet.config(), str(tmp_path)).start()
    yield harness
    await harness.stop()


@pytest_twisted.ensureDeferred
async def test_to_addr_defaults_to_listening_address(telnet, running):
    user = await telnet.connect_user(running)
    started = await running.next_inbound()
    assert started["to_addr"] == f"127.0.0.1:{telnet.port}"
    assert started["transport_type"] == "telnet"
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_configured_to_addr_and_transport_type(tmp_path):
    driver = TelnetDriver()
    config = {**driver.config(), "to_addr": "*120#", "transport_type": "ussd"}
    harness = await TransportHarness(TelnetChannel, config, str(tmp_path)).start()
    try:
        user = await driver.connect_user(harness)
        started = await harness.next_inbound()
        assert (started["to_addr"], started["transport_type"]) == ("*120#", "ussd")
        await user.hang_up()
    finally:
        await harness.stop()


@pytest_twisted.ensureDeferred
async def test_each_line_is_one_message(telnet, running):
    user = await telnet.connect_user(running)
    await running.next_inbound()
    user.protocol.transport.write(b"one\r\ntwo\n\nthree\r\n")
    contents = [(await running.next_inbound())["content"] for _ in range(4)]
    assert contents == ["one", "two", "", "three"]
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_multiline_outbound_keeps_lines(telnet, running):
    user = await telnet.connect_user(running)
    await running.send(user.address, "first\r\nsecond")
    assert [await user.next_line(), await user.next_line()] == ["first", "second"]
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_stopping_ends_every_session(telnet, running):
    users = [await telnet.connect_user(running) for _ in range(2)]
    await running.worker.stop()
    running.worker = None
    for user in users:
        await within(user.disconnected)
    events = []
    while running.inbound.pending:
        events.append((await running.next_inbound())["session_event"])
    assert events.count("close") == 2


def test_deprecated_host_and_port_still_work():
    config = {"telnet_host": "127.0.0.1", "telnet_port": 9001}
    assert TelnetChannel.check_config(config) == []
    assert TelnetChannel.endpoint_description(config) == "tcp:port=9001:interface=127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_lines_end_with_a_single_crlf(telnet, running):
    user = await telnet.connect_user(running)
    raw = []
    original = user.protocol.dataReceived
    user.protocol.dataReceived = lambda data: (raw.append(data), original(data))
    await running.send(user.address, "hello")
    assert await user.next_line() == "hello"
    assert b"".join(raw) == b"hello\r\n"
    await user.hang_up()


@pytest_twisted.ensureDeferred
async def test_quit_ends_the_session(telnet, running):
    user = await telnet.connect_user(running)
    await running.next_inbound()
    user.type("/QUIT")
    await within(user.disconnected)
    ended = await running.next_inbound()
    assert ended["session_event"] == "close"
