"""The transport base class: helpers every channel type shares."""

from __future__ import annotations

import pytest_twisted

from junebug.transports.base import StatusEdges, Transport
from tests.transports.harness import TransportHarness


def test_status_edges_publish_changes_and_new_types_only():
    edges = StatusEdges()
    assert edges.changed("response", "ok", "response_sent")
    assert not edges.changed("response", "ok", "response_sent")
    assert edges.changed("request", "ok", "request_parsed")  # components are independent
    assert edges.changed("response", "down", "timeout")
    assert edges.changed("response", "down", "very_slow_response")  # new type, same level
    assert not edges.changed("response", "down", "timeout")
    assert edges.changed("response", "ok", "response_sent")
    assert edges.changed("response", "down", "timeout")  # seen types reset on change


class Quiet(Transport):
    async def setup(self) -> None:
        for _ in range(3):
            await self.publish_status("web", "ok", "answered", "Answered", only_changes=True)
        await self.publish_status("web", "down", "timeout", "Timed out", reasons=["slow"])


@pytest_twisted.ensureDeferred
async def test_only_changes_suppresses_repeats_and_reasons_are_carried(tmp_path):
    harness = await TransportHarness(Quiet, {}, str(tmp_path)).start()
    try:
        first, second = await harness.next_status(), await harness.next_status()
        assert (first["type"], second["type"]) == ("answered", "timeout")
        assert second["reasons"] == ["slow"]
        assert not harness.statuses.pending
    finally:
        await harness.stop()
