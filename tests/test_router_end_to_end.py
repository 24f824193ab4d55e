"""The USSD sub-code example of the documentation, end to end: ``jb`` (embedded default)
with one Dmark USSD channel for ``*123*4567#``, a from_address router, one application
per sub-code (``*1#``, ``*2#``, ``*3#``) and a default application for the rest.
Everything is set up through the HTTP API; the test plays Dmark and the applications.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
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

ROOT = Path(__file__).resolve().parent.parent
WEB_PATH = "/ussd/dmark"
MAIN_CODE = "*123*4567#"
APPS = ("app1", "app2", "app3", "default")


def subcode(n: int) -> str:
    return f"*123*4567*{n}#"


class _AppResource(Resource):
    isLeaf = True

    def __init__(self, apps: Applications) -> None:
        super().__init__()
        self.apps = apps

    def render_POST(self, request: Any) -> bytes:
        name, kind = request.path.decode().strip("/").split("/")
        payload = json.loads(request.content.read())
        # Recorded first: put() resumes the waiting test at once.
        self.apps.received.append((name, kind, payload))
        if kind == "mo":
            self.apps.inbound[name].put(payload)
            # Answer the POST at once, reply through the API afterwards.
            reactor.callLater(0, self.apps.answer, name, payload)
        else:
            self.apps.events[name].put(payload)
        return b"{}"


class Applications:
    """Four applications behind one HTTP server: each has ``/<name>/mo`` (its
    destination's mo_url) and ``/<name>/events`` (the event_url of its replies), and
    answers every inbound message with a one-screen reply that ends the session."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.router_id = ""
        self.destinations: dict[str, str] = {}
        self.inbound = {name: DeferredQueue() for name in APPS}
        self.events = {name: DeferredQueue() for name in APPS}
        self.received: list[tuple[str, str, dict]] = []
        self.replies: list[Deferred] = []
        self.port: Any = None

    def start(self) -> Applications:
        site = Site(_AppResource(self))
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        return self

    def url(self, name: str, kind: str) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}/{name}/{kind}"

    def answer(self, name: str, inbound: dict[str, Any]) -> None:
        body = {
            "reply_to": inbound["message_id"],
            "content": f"{name} menu",
            "channel_data": {"continue_session": False},
            "event_url": self.url(name, "events"),
        }
        path = f"/routers/{self.router_id}/destinations/{self.destinations[name]}/messages/"
        self.replies.append(Deferred.fromCoroutine(self.api.post(path, body)))

    async def stop(self) -> None:
        await self.port.stopListening()


class Dmark:
    """Dmark's side: a user dials a code, one HTTP request held until the answer."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}{WEB_PATH}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def dial(self, code: str, msisdn: str = "+256772000001") -> dict[str, Any]:
        params = {
            "transactionId": f"tx-{uuid.uuid4().hex[:10]}",
            "msisdn": msisdn,
            "ussdServiceCode": code,
            "transactionTime": "2024-05-01T10:00:00",
            "ussdRequestString": code,
            "creationTime": "2024-05-01T10:00:00",
            "response": "false",
        }
        response = await within(treq.get(self.url, params=params, pool=self.pool))
        body = await within(response.content())
        assert response.code == 200, body
        return json.loads(body)


async def start_jb(tmp_path: Path, api_port: int) -> JbProcess:
    args = (
        "-p",
        str(api_port),
        "--data-dir",
        str(tmp_path / "data"),
        "-lp",
        str(tmp_path / "logs"),
        # An extra router type, loaded like a channel type (tests/routers/keyword.py).
        "--routers",
        "keyword:tests.routers.keyword.KeywordRouter",
    )
    return await JbProcess(*args, cwd=str(tmp_path), env={"PYTHONPATH": str(ROOT)}).start()


async def dial_every_code(dmark: Dmark, apps: Applications) -> None:
    """Each sub-code reaches its own application, anything else the default one."""
    for code, name in (
        (subcode(1), "app1"),
        (subcode(2), "app2"),
        (subcode(3), "app3"),
        (subcode(7), "default"),
        (MAIN_CODE, "default"),
    ):
        screen = await dmark.dial(code)
        assert screen == {"responseString": f"{name} menu", "action": "end"}, code
        inbound = await within(apps.inbound[name].get())
        assert (inbound["to"], inbound["content"]) == (code, None)
        assert inbound["channel_data"]["session_event"] == "new"
        event = await within(apps.events[name].get())
        assert event["event_type"] == "submitted"
    for reply in apps.replies:
        code, body = await within(reply)
        assert code == 201, body


@pytest_twisted.ensureDeferred
async def test_ussd_subcodes_routed_to_three_applications_and_a_default(tmp_path):
    api_port, ussd_port = free_port(), free_port()
    jb = await start_jb(tmp_path, api_port)
    api = ApiClient(f"http://127.0.0.1:{api_port}")
    apps = Applications(api).start()
    dmark = Dmark(ussd_port)
    try:
        # The channel: one USSD line, with no mo_url of its own (the router delivers).
        code, body = await api.post(
            "/channels/",
            {
                "type": "dmark",
                "label": f"USSD {MAIN_CODE}",
                "config": {
                    "web_path": WEB_PATH,
                    "web_port": ussd_port,
                    "web_interface": "127.0.0.1",
                },
            },
        )
        assert code == 201, body
        channel_id = body["result"]["id"]

        code, body = await api.post(
            "/routers/",
            {"type": "from_address", "label": MAIN_CODE, "config": {"channel": channel_id}},
        )
        assert (code, body["description"]) == (201, "router created"), body
        apps.router_id = router_id = body["result"]["id"]

        for n in (1, 2, 3):
            code, body = await api.post(
                f"/routers/{router_id}/destinations/",
                {
                    "label": f"{subcode(n)} sub-code",
                    "config": {"regular_expression": f"^{re.escape(subcode(n))}$"},
                    "mo_url": apps.url(f"app{n}", "mo"),
                },
            )
            assert (code, body["description"]) == (201, "destination created"), body
            apps.destinations[f"app{n}"] = body["result"]["id"]
        code, body = await api.post(
            f"/routers/{router_id}/destinations/",
            {
                "label": "everything else",
                "config": {"regular_expression": f"^{re.escape(MAIN_CODE)}$", "default": True},
                "mo_url": apps.url("default", "mo"),
            },
        )
        assert code == 201, body
        apps.destinations["default"] = body["result"]["id"]

        await dial_every_code(dmark, apps)

        # Nobody got anything meant for another: one inbound per dial, one event per reply.
        mine = {name: [kind for who, kind, _ in apps.received if who == name] for name in APPS}
        assert mine == {
            "app1": ["mo", "events"],
            "app2": ["mo", "events"],
            "app3": ["mo", "events"],
            "default": ["mo", "events", "mo", "events"],
        }
        # Each event is about that application's own reply.
        replies = [(await within(reply))[1]["result"] for reply in apps.replies]
        for name in APPS:
            sent = {r["message_id"] for r in replies if r["content"] == f"{name} menu"}
            got = {
                p["message_id"] for who, kind, p in apps.received if (who, kind) == (name, "events")
            }
            assert got == sent, name

        # The status of a reply, read through its destination.
        reply = replies[0]
        code, body = await api.get(
            f"/routers/{router_id}/destinations/{apps.destinations['app1']}"
            f"/messages/{reply['message_id']}"
        )
        assert (code, body["result"]["last_event_type"]) == (200, "submitted"), body

        # The extra router type given on the command line is there.
        code, body = await api.post("/routers/", {"type": "bogus", "config": {}})
        assert code == 400 and "from_address, keyword" in body["result"]["errors"][0]["message"]

        # A restart restores the router and its destinations.
        assert await jb.stop() == 0, jb.output
        jb = await start_jb(tmp_path, api_port)
        code, body = await api.get("/routers/")
        assert body["result"] == [router_id]
        code, body = await api.get(f"/routers/{router_id}/destinations/")
        assert sorted(body["result"]) == sorted(apps.destinations.values())
        apps.replies.clear()
        screen = await dmark.dial(subcode(2))
        assert screen == {"responseString": "app2 menu", "action": "end"}
        await within(apps.inbound["app2"].get())
        assert (await within(apps.events["app2"].get()))["event_type"] == "submitted"
    finally:
        await apps.stop()
        await dmark.pool.closeCachedConnections()
        assert await jb.stop() == 0, jb.output
