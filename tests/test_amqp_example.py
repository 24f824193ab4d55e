"""The AMQP application of docs/amqp.md, run as written against jb on Redis + RabbitMQ."""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.utils import getProcessOutputAndValue

from tests.helpers import ApiClient, JbProcess, TelnetUser, free_port, within, write_jb_config
from tests.test_end_to_end import redis_prefix  # noqa: F401 - a fixture

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "amqp_echo_app.py"


def test_the_docs_show_the_example_as_it_is():
    docs = (REPO / "docs" / "amqp.md").read_text()
    [shown] = re.findall(r"```python\n(.*?)```\n", docs, flags=re.S)
    assert shown == EXAMPLE.read_text()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_the_echo_app_answers_a_telnet_user(tmp_path, redis_prefix):  # noqa: F811
    queue = f"echo{uuid.uuid4().hex[:8]}"
    port = free_port()
    config = write_jb_config(tmp_path, port, redis_prefix=redis_prefix, amqp_port=5672)
    jb = await JbProcess("-c", str(config), cwd=str(tmp_path)).start()
    try:
        api = ApiClient(f"http://127.0.0.1:{port}")
        telnet_port = free_port()
        code, body = await api.post(
            "/channels/",
            {
                "type": "telnet",
                "amqp_queue": queue,
                "config": {"twisted_endpoint": f"tcp:{telnet_port}:interface=127.0.0.1"},
            },
        )
        assert code == 201, body
        # The app stops by itself after one event: the ack of its reply.
        app = getProcessOutputAndValue(
            sys.executable, [str(EXAMPLE), queue, "127.0.0.1", "5672", "1"], path=str(tmp_path)
        )
        user = await TelnetUser().connect(telnet_port)
        user.type("hi")
        assert await user.next_line(seconds=30) == "you said: hi"
        out, err, exit_code = await within(app, 60)
        assert exit_code == 0, err.decode()
        assert out.decode().startswith("ack for ")
        await user.hang_up()
    finally:
        await jb.stop()
        for kind in ("inbound", "event", "outbound"):
            await _delete_queue(f"{queue}.{kind}")


async def _delete_queue(name: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        connection.channel().queue_delete(name)
    finally:
        connection.close()
