"""A third-party plugin and channel type, from a package outside Junebug, loaded by ``jb``.

``tests/third_party/junebug_extras_sample`` is on ``PYTHONPATH`` for the ``jb``
subprocess only (this test process cannot import it), as an installed package would be.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import pytest_twisted
import treq

from tests.helpers import ApiClient, JbProcess, free_port, within

THIRD_PARTY = Path(__file__).parent / "third_party"
PACKAGE = "junebug_extras_sample"
CHANNEL_TYPE = f"hello:{PACKAGE}.channels.HelloHttpChannel"
PLUGIN = f"{PACKAGE}.plugins.MarkerPlugin"


def jb(tmp_path: Path, *args: str) -> JbProcess:
    return JbProcess(
        *("-p", str(free_port()), "--data-dir", str(tmp_path / "data")),
        *("-lp", str(tmp_path / "logs"), *args),
        cwd=str(tmp_path),
        env={"PYTHONPATH": str(THIRD_PARTY)},
    )


def test_the_sample_package_is_not_importable_here():
    assert importlib.util.find_spec(PACKAGE) is None


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_third_party_plugin_and_channel_type_run_in_jb(tmp_path, receiver):
    marker = tmp_path / "marker.txt"
    plugin = json.dumps({"type": PLUGIN, "marker": str(marker)})
    process = await jb(tmp_path, "--plugin", plugin, "--channels", CHANNEL_TYPE).start()
    api_port = process.argv[process.argv.index("-p") + 1]
    try:
        assert marker.read_text() == f"started on port {api_port}\n"
        api = ApiClient(f"http://127.0.0.1:{api_port}")
        web_port = free_port()
        code, body = await api.post(
            "/channels/",
            {
                "type": "hello",
                "config": {"web_path": "/inbox", "web_port": web_port, "greeting": "hi there"},
                "mo_url": receiver.url("/mo"),
            },
        )
        assert code == 201, body
        channel_id = body["result"]["id"]
        assert marker.read_text().splitlines()[1] == f"channel_started {channel_id} hello"

        # The channel's own HTTP endpoint answers, and what is POSTed to it becomes an
        # inbound message delivered to mo_url.
        channel_url = f"http://127.0.0.1:{web_port}/inbox"
        response = await within(treq.get(channel_url))
        assert (response.code, await within(response.text())) == (200, "hi there")
        response = await within(
            treq.post(channel_url, data=b"ping", headers={"X-From": ["+27831234567"]})
        )
        assert response.code == 200
        inbound = (await receiver.next()).json
        assert (inbound["channel_id"], inbound["from"], inbound["content"]) == (
            channel_id,
            "+27831234567",
            "ping",
        )

        # Outbound through the API: the channel acknowledges it.
        code, body = await api.post(
            f"/channels/{channel_id}/messages/",
            {"reply_to": inbound["message_id"], "content": "pong"},
        )
        assert code == 201, body

        code, body = await api.delete(f"/channels/{channel_id}")
        assert code == 200, body
        assert marker.read_text().splitlines()[-1] == f"channel_stopped {channel_id}"
    finally:
        assert await process.stop() == 0, process.output
    assert marker.read_text().splitlines()[-1] == "stopped"


@pytest.mark.slow
@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "args, exit_code, message",
    [
        (
            ("--channels", f"hello:{PACKAGE}.nowhere.HelloHttpChannel"),
            1,
            f"cannot start: bad channel type mapping: cannot import '{PACKAGE}.nowhere'",
        ),
        (
            ("--channels", f"hello:{PACKAGE}.channels.NoSuchChannel"),
            1,
            f"module '{PACKAGE}.channels' has no 'NoSuchChannel'",
        ),
        (
            ("--channels", f"hello:{PLUGIN}"),
            1,
            f"channel type 'hello': {PLUGIN} is not a junebug.transports.base.Transport",
        ),
        (("--channels", "hello"), 2, "jb: error:"),
        (
            ("--plugin", json.dumps({"type": f"{PACKAGE}.plugins.NoSuchPlugin"})),
            1,
            f"cannot start: plugin '{PACKAGE}.plugins.NoSuchPlugin' cannot be loaded",
        ),
        (
            ("--plugin", json.dumps({"type": f"{PACKAGE}.channels.HelloHttpChannel"})),
            1,
            "is not a junebug.plugin.JunebugPlugin",
        ),
        (
            ("--plugin", json.dumps({"type": PLUGIN})),
            1,
            f"plugin {PLUGIN} failed to start: MarkerPlugin needs 'marker'",
        ),
        (("--plugin", '{"type": '), 2, "jb: error:"),
    ],
)
async def test_a_bad_extension_is_a_clear_start_up_error(tmp_path, args, exit_code, message):
    process = jb(tmp_path, *args)
    with pytest.raises(RuntimeError, match="jb exited before it was ready"):
        await process.start()
    assert process.exit_code == exit_code, process.output
    assert message in process.output
