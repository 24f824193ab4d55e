"""A channel whose peer goes away: its status shows it, its status_url hears it, and its
logs say why — then the same as the peer comes back. jb and jb-smsc as processes."""

from __future__ import annotations

import pytest
import pytest_twisted

from junebug.testing.smsc import SmscProcess
from tests.helpers import ApiClient, JbProcess, free_port

pytestmark = pytest.mark.slow


async def next_status(receiver, type_: str) -> dict:
    """The next status event POSTed to the status_url with this type (bounded)."""
    for _ in range(20):
        event = (await receiver.next(seconds=30)).json
        if event["type"] == type_:
            return event
    raise AssertionError(f"no {type_} status")


@pytest_twisted.ensureDeferred
async def test_a_lost_smsc_is_shown_reported_and_explained(tmp_path, receiver):
    smsc = await SmscProcess(password="sekrit99").start()
    port = free_port()
    jb = await JbProcess(
        "-p",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "-lp",
        str(tmp_path / "logs"),
        cwd=str(tmp_path),
    ).start()
    api = ApiClient(f"http://127.0.0.1:{port}")
    try:
        code, body = await api.post(
            "/channels/",
            {
                "type": "smpp",
                "status_url": receiver.url("/status"),
                "mo_url": receiver.url("/mo"),
                "config": {
                    "twisted_endpoint": f"tcp:host=127.0.0.1:port={smsc.port}",
                    "system_id": smsc.system_id,
                    "password": smsc.password,
                },
            },
        )
        assert code == 201, body
        channel_id = body["result"]["id"]
        bound = await next_status(receiver, "bound")
        assert (bound["channel_id"], bound["component"], bound["status"]) == (
            channel_id,
            "smpp",
            "ok",
        )

        await smsc.drop()  # the connection breaks; the SMSC is still there
        lost = await next_status(receiver, "connection_lost")
        assert lost["status"] == "down"
        back = await next_status(receiver, "bound")  # reconnected and bound again
        assert back["status"] == "ok"
        code, body = await api.get(f"/channels/{channel_id}")
        assert body["result"]["status"]["status"] == "ok"

        await smsc.stop()  # now the SMSC goes away and stays away
        await next_status(receiver, "connection_lost")
        code, body = await api.get(f"/channels/{channel_id}")
        status = body["result"]["status"]
        assert status["status"] == "down"
        assert status["components"]["smpp"]["type"] in ("connection_lost", "connection_failed")

        code, body = await api.get(f"/channels/{channel_id}/logs")
        logged = " | ".join(entry["message"] for entry in body["result"])
        assert "Status smpp: down (connection_lost)" in logged
        assert "sekrit99" not in logged
    finally:
        await jb.stop()
        await smsc.stop()
