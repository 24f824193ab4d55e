"""A USSD session end to end: ``jb`` (embedded default) with a dmark channel, an
application answering through the HTTP API, and the test playing Dmark."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.helpers import ApiClient, JbProcess, free_port, within

pytestmark = pytest.mark.slow

WEB_PATH = "/ussd/dmark"

#: What the application answers at each step: (screen, continue_session).
SCREENS = [
    ("Welcome\n1. Balance\n2. Quit", True),
    ("Your balance is 5,000\n1. Back\n2. Quit", True),
    ("Thank you, goodbye", False),
]


class _MoResource(Resource):
    isLeaf = True

    def __init__(self, app: UssdApp) -> None:
        super().__init__()
        self.app = app

    def render_POST(self, request: Any) -> bytes:
        inbound = json.loads(request.content.read())
        self.app.inbound.put(inbound)
        # Answer the POST at once and reply through the API afterwards, as an
        # application queueing its work would.
        reactor.callLater(0, self.app.answer, inbound)
        return b"{}"


class UssdApp:
    """A tiny USSD application: its mo_url receives inbound messages, and it replies
    to each one through ``POST /channels/{id}/messages/`` with ``reply_to``."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.channel_id: str | None = None
        self.inbound: DeferredQueue = DeferredQueue()
        self.replies: list[Deferred] = []
        self.screens = iter(SCREENS)
        self.port: Any = None

    def start(self) -> UssdApp:
        site = Site(_MoResource(self))
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        return self

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}/mo"

    def answer(self, inbound: dict[str, Any]) -> None:
        content, continue_session = next(self.screens)
        body = {
            "reply_to": inbound["message_id"],
            "content": content,
            "channel_data": {"continue_session": continue_session},
        }
        self.replies.append(
            Deferred.fromCoroutine(self.api.post(f"/channels/{self.channel_id}/messages/", body))
        )

    async def stop(self) -> None:
        await self.port.stopListening()


class Aggregator:
    """Dmark's side: one HTTP request per step of the session."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}{WEB_PATH}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.transaction_id = f"tx-{uuid.uuid4().hex[:10]}"
        self.msisdn = "+256772000001"

    async def step(self, text: str, first: bool = False) -> tuple[int, dict]:
        params = {
            "transactionId": self.transaction_id,
            "msisdn": self.msisdn,
            "ussdServiceCode": "*384#",
            "transactionTime": "2024-05-01T10:00:00",
            "ussdRequestString": text,
            "creationTime": "2024-05-01T10:00:00",
            "response": "false" if first else "true",
        }
        response = await within(treq.get(self.url, params=params, pool=self.pool))
        body = await within(response.content())
        return response.code, json.loads(body)


@pytest_twisted.ensureDeferred
async def test_a_three_step_ussd_session_through_the_api(tmp_path):
    api_port, ussd_port = free_port(), free_port()
    args = ("-p", str(api_port), "--data-dir", str(tmp_path / "data"), "-lp", str(tmp_path))
    jb = await JbProcess(*args, cwd=str(tmp_path)).start()
    api = ApiClient(f"http://127.0.0.1:{api_port}")
    app = UssdApp(api).start()
    aggregator = Aggregator(ussd_port)
    try:
        code, body = await api.post(
            "/channels/",
            {
                "type": "dmark",
                "label": "USSD *384#",
                "mo_url": app.url(),
                "config": {
                    "web_path": WEB_PATH,
                    "web_port": ussd_port,
                    "web_interface": "127.0.0.1",
                    "request_timeout": 10,
                },
            },
        )
        assert code == 201, body
        app.channel_id = channel_id = body["result"]["id"]

        # 1. The user dials *384#: a new session, no content.
        code, screen = await aggregator.step("*384#", first=True)
        assert (code, screen) == (200, {"responseString": SCREENS[0][0], "action": "request"})
        dial = await within(app.inbound.get())
        assert (dial["from"], dial["to"], dial["content"]) == (aggregator.msisdn, "*384#", None)
        assert dial["channel_id"] == channel_id
        assert dial["channel_data"] == {
            "session_event": "new",
            "session_id": aggregator.transaction_id,
        }

        # 2. The user answers "1": the session resumes.
        code, screen = await aggregator.step("1")
        assert (code, screen) == (200, {"responseString": SCREENS[1][0], "action": "request"})
        answer = await within(app.inbound.get())
        assert (answer["content"], answer["channel_data"]["session_event"]) == ("1", "resume")

        # 3. The user answers "2": the application's final screen closes the session.
        code, screen = await aggregator.step("2")
        assert (code, screen) == (200, {"responseString": SCREENS[2][0], "action": "end"})
        final = await within(app.inbound.get())
        assert (final["content"], final["channel_data"]["session_event"]) == ("2", "resume")

        for reply in app.replies:
            code, body = await within(reply)
            assert code == 201, body
        code, body = await api.get(f"/channels/{channel_id}")
        components = body["result"]["status"]["components"]
        assert components["request"]["status"] == "ok"
        assert components["response"]["status"] == "ok"
        assert components["web"]["status"] == "ok"
    finally:
        await app.stop()
        await aggregator.pool.closeCachedConnections()
        assert await jb.stop() == 0, jb.output
