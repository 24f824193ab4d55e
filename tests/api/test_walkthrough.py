"""The getting-started walkthrough (spec 1.2) against the API in-process."""

from __future__ import annotations

import pytest_twisted

from tests.walkthrough import walkthrough


@pytest_twisted.ensureDeferred
async def test_walkthrough(api, receiver):
    channel_id, _ = await walkthrough(api, receiver, interface="127.0.0.1")
    code, body = await api.get(f"/channels/{channel_id}")
    assert body["result"]["status"]["components"]["telnet"]["status"] == "ok"
