"""``jb-smsc`` as a child process through the public helper junebug.testing.smsc, with the
minimal ESME over real TCP and real time (every wait bounded)."""

from __future__ import annotations

import re
import sys

import pytest
import pytest_twisted

from junebug.smsc import cli
from junebug.testing.smsc import SmscControlError, SmscProcess, SmscTimeout
from tests.smsc.esme import connect, submit, within

pytestmark = pytest.mark.slow


@pytest_twisted.async_yield_fixture
async def process():
    smsc = SmscProcess(system_id="esme", password="pw", dr_delay=0, id_format="decimal")
    await smsc.start()
    yield smsc
    await smsc.stop()


async def bound_esme(smsc: SmscProcess, **kwargs):
    esme = await connect(smsc.port, **kwargs)
    resp = await esme.bind(smsc.system_id, smsc.password)
    assert resp.command_status == 0
    return esme


@pytest_twisted.ensureDeferred
async def test_start_prints_the_ready_line_and_serves_both_ports(process):
    assert process.port and process.control_url.startswith("http://127.0.0.1:")
    ready = [line for line in process.lines if line.startswith("jb-smsc listening")]
    assert ready == [
        f"jb-smsc listening on 127.0.0.1:{process.port}, control on {process.control_url}"
    ]
    status = await process.status()
    assert status["bound"] == [] and status["settings"]["id_format"] == "decimal"


@pytest_twisted.ensureDeferred
async def test_bind_submit_receipt_and_control_helpers(process):
    esme = await bound_esme(process, auto_answer=True)
    await process.wait_for_bind()
    resp = await submit(esme, b"hi there")
    message_id = resp.params["message_id"]
    assert re.fullmatch(r"\d{8,}", message_id)
    receipt = await esme.next_of("deliver_sm")
    assert receipt.tlvs["receipted_message_id"] == message_id
    [record] = await process.wait_for_submits(1)
    assert record["smsc_message_id"] == message_id and record["text"] == "hi there"
    deliveries = await process.wait_for_answers(1)
    assert deliveries[0]["kind"] == "receipt"
    await process.clear_submits()
    assert await process.submits() == []


@pytest_twisted.ensureDeferred
async def test_bad_password_is_refused(process):
    esme = await connect(process.port)
    resp = await esme.bind(process.system_id, "nope")
    assert resp.command_status == 0x0E
    await esme.close()


@pytest_twisted.ensureDeferred
async def test_mo_receipt_throttle_configure_unbind_drop(process):
    esme = await bound_esme(process)
    answer = await process.send_mo("2782", "12345", "x" * 170, multipart="udh", reference=5)
    assert answer["sent"] == 2
    parts = [await esme.next_of("deliver_sm") for _ in range(2)]
    assert [p.params["short_message"][:6] for p in parts] == [
        b"\x05\x00\x03\x05\x02\x01",
        b"\x05\x00\x03\x05\x02\x02",
    ]
    await process.send_receipt("abc", "undeliverable", "text")
    receipt = await esme.next_of("deliver_sm")
    assert b"stat:UNDELIV" in receipt.params["short_message"]

    await process.throttle(30)
    assert (await submit(esme)).command_status == 0x58
    assert (await process.status())["throttled"] is True
    settings = await process.configure(fail_every=1, fail_status="ESME_RMSGQFUL")
    assert settings["fail_status"] == "ESME_RMSGQFUL"

    assert await process.unbind() == 1
    await esme.next_of("unbind")
    other = await connect(process.port)
    assert await process.drop() == 2
    await within(esme.closed)
    await within(other.closed)


@pytest_twisted.ensureDeferred
async def test_control_errors_and_bounded_waits(process):
    with pytest.raises(SmscControlError) as error:
        await process.send_mo("1", "2", "hi")
    assert error.value.code == 409
    with pytest.raises(SmscControlError) as error:
        await process.configure(colour="red")
    assert error.value.code == 400
    with pytest.raises(SmscTimeout):
        await process.wait_for_submits(1, timeout=0.2)


@pytest_twisted.ensureDeferred
async def test_async_context_manager_and_failed_start():
    async with SmscProcess(throttle_after=1, dr_delay=-1) as smsc:
        esme = await bound_esme(smsc)
        assert (await submit(esme)).command_status == 0
        assert (await submit(esme)).command_status == 0x58
    assert smsc._output.ended.called
    broken = SmscProcess(id_format="roman")
    with pytest.raises(RuntimeError, match="exited"):
        await broken.start()


def test_cli_arguments_become_settings():
    args = cli.build_parser().parse_args(
        [
            "--port",
            "2775",
            "--system-id",
            "a",
            "--password",
            "b",
            "--dr-status",
            "pending,delivered",
            "--fail-status",
            "0x45",
            "--throttle-after",
            "3",
            "--throttle-for",
            "2.5",
        ]
    )
    settings = cli.settings_from_args(args)
    assert settings["dr_status"] == "pending,delivered"
    assert settings["fail_status"] == 0x45
    assert settings["throttle_after"] == 3 and settings["throttle_for"] == 2.5
    assert settings["dr_delay"] == 0.5 and settings["dr_style"] == "both"


def test_cli_rejects_bad_values(capsys):
    for argv in (["--dr-status", "lost"], ["--fail-status", "ESME_NOPE"], ["--id-format", "x"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(
                ["--port", "1", "--system-id", "a", "--password", "b", *argv]
            )
    assert "jb-smsc" in capsys.readouterr().err


def test_command_uses_the_console_script():
    command = SmscProcess(dr_status=["pending", "delivered"], verbose=True).command()
    assert command[0].endswith("jb-smsc") or command[:3] == [
        sys.executable,
        "-m",
        "junebug.smsc.cli",
    ]
    assert command[command.index("--dr-status") + 1] == "pending,delivered"
    assert "--verbose" in command and command.count("--port") == 1
    with pytest.raises(TypeError):
        SmscProcess(port=2775)
