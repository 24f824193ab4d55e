"""Helpers for router tests: channels to route, routers, destinations, PUT and PATCH."""

from __future__ import annotations

from typing import Any

from tests.helpers import free_port

SUBCODE_1 = "*123*4567*1#"


def errors(body: dict[str, Any]) -> str:
    return " | ".join(f"{e['type']}: {e['message']}" for e in body["result"]["errors"])


async def put(api: Any, path: str, body: Any) -> tuple[int, Any]:
    code, result, _ = await api.request("PUT", path, body)
    return code, result


async def patch(api: Any, path: str, body: Any) -> tuple[int, Any]:
    code, result, _ = await api.request("PATCH", path, body)
    return code, result


async def routed_channel(api: Any, to_addr: str | None = SUBCODE_1) -> tuple[str, int]:
    """A telnet channel with no mo_url (so a router may route it); inbound messages
    from it are addressed to ``to_addr``, as if the user dialled it."""
    port = free_port()
    config: dict[str, Any] = {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1"}
    if to_addr is not None:
        config["to_addr"] = to_addr
    code, body = await api.post("/channels/", {"type": "telnet", "config": config})
    assert code == 201, body
    return body["result"]["id"], port


async def dial(api: Any, channel_id: str, port: int, to_addr: str) -> None:
    """Make the channel's inbound messages come in addressed to ``to_addr``."""
    config = {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1", "to_addr": to_addr}
    code, body = await api.post(f"/channels/{channel_id}", {"config": config})
    assert code == 200, body


async def make_router(api: Any, channel_id: str, router_type: str = "from_address", **extra):
    body = {"type": router_type, "config": {"channel": channel_id}, **extra}
    code, result = await api.post("/routers/", body)
    assert code == 201, result
    return result["result"]["id"]


async def make_destination(api: Any, router_id: str, config: dict[str, Any], **extra) -> str:
    code, body = await api.post(f"/routers/{router_id}/destinations/", {"config": config, **extra})
    assert code == 201, body
    return body["result"]["id"]


def subcode(n: int) -> str:
    return f"*123*4567*{n}#"


def exactly(address: str) -> str:
    """A regular expression matching exactly ``address``."""
    import re

    return f"^{re.escape(address)}$"
