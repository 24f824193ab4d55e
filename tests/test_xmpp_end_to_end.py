"""``jb`` with an xmpp channel, end to end: a private prosody, jb as a subprocess on
the embedded default, a channel created through the API, an application at mo_url
that answers through the API, and a user with an independent XMPP client."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.helpers import ApiClient, JbProcess, free_port, within
from tests.xmpp_server import XmppUser, running_prosody

pytestmark = pytest.mark.slow


class ReplyingApp(Resource):
    """An application behind mo_url: answers every message with a reply through the
    Junebug API (``reply_to``), and records what it got and what the API said."""

    isLeaf = True

    def __init__(self, api_base: str) -> None:
        super().__init__()
        self.api_base = api_base
        self.inbound: DeferredQueue = DeferredQueue()
        self.replies: DeferredQueue = DeferredQueue()

    def render_POST(self, request: Any) -> bytes:
        message = json.loads(request.content.read())
        self.inbound.put(message)
        Deferred.fromCoroutine(self._reply(message)).addErrback(self.replies.put)
        return b"{}"

    async def _reply(self, message: dict) -> None:
        url = f"{self.api_base}/channels/{message['channel_id']}/messages/"
        body = {"reply_to": message["message_id"], "content": f"You said: {message['content']}"}
        response = await treq.post(url, json.dumps(body).encode())
        self.replies.put((response.code, json.loads(await response.content())))


async def wait_for_status(api: ApiClient, channel_id: str, level: str, seconds: float = 15):
    deadline = time.monotonic() + seconds
    while True:
        code, body = await api.get(f"/channels/{channel_id}")
        assert code == 200, body
        component = body["result"]["status"]["components"].get("xmpp")
        if component and component["status"] == level:
            return component
        if time.monotonic() > deadline:
            raise AssertionError(f"channel status never became {level}: {body}")
        await deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_users_talk_to_an_app_through_an_xmpp_channel(tmp_path):
    with running_prosody() as server:
        channel_jid, channel_password = server.new_account("channel")
        alice_jid, alice_password = server.new_account("alice")
        port = free_port()
        api = ApiClient(f"http://127.0.0.1:{port}")
        app = ReplyingApp(api.base)
        app_port = reactor.listenTCP(0, Site(app), interface="127.0.0.1")
        jb = await JbProcess(
            *("-p", str(port), "--data-dir", str(tmp_path / "data")),
            *("-lp", str(tmp_path / "logs")),
            cwd=str(tmp_path),
        ).start()
        alice = XmppUser(alice_jid, alice_password, server)
        try:
            code, body = await api.post(
                "/channels/",
                {
                    "type": "xmpp",
                    "label": "XMPP bot",
                    "mo_url": f"http://127.0.0.1:{app_port.getHost().port}/mo",
                    "config": {
                        "username": channel_jid,
                        "password": channel_password,
                        "host": server.host,
                        "port": server.port,
                        "status": "Ask me",
                        "tls_ca_certificates": server.ca_file,
                    },
                },
            )
            assert code == 201, body
            channel_id = body["result"]["id"]
            connected = await wait_for_status(api, channel_id, "ok")
            assert connected["type"] == "connected"
            assert channel_jid in connected["message"]

            await alice.connect()
            alice.send(channel_jid, "hello channel")
            inbound = await within(app.inbound.get())
            assert inbound["from"] == alice_jid
            assert inbound["to"] == channel_jid
            assert inbound["content"] == "hello channel"
            assert inbound["channel_id"] == channel_id

            code, reply = await within(app.replies.get())
            assert code == 201, reply
            assert await alice.next_message() == (channel_jid, "You said: hello channel")

            # A message the application starts, to the user's address.
            code, body = await api.post(
                f"/channels/{channel_id}/messages/", {"to": alice_jid, "content": "news ✓"}
            )
            assert code == 201, body
            assert await alice.next_message() == (channel_jid, "news ✓")

            # The password never reaches the channel's log.
            code, logs = await api.get(f"/channels/{channel_id}/logs")
            assert code == 200
            assert channel_password not in json.dumps(logs)
        finally:
            await alice.disconnect()
            exit_code = await jb.stop()
            await app_port.stopListening()
        assert exit_code == 0, jb.output
        assert channel_password not in jb.output
