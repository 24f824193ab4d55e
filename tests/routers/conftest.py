"""Fixtures: a RouterManager over the ``gateway`` channel manager, and an API that
serves channels and routers (the test-only ``keyword`` router type included)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.web.server import Site

from tests.helpers import ApiClient

TEST_ROUTER_TYPES = {"keyword": "tests.routers.keyword.KeywordRouter"}


@pytest_twisted.async_yield_fixture
async def routers(gateway: Any):
    from junebug.routers.manager import RouterManager
    from junebug.routers.registry import router_types

    manager = RouterManager(gateway.backends, gateway, router_types(TEST_ROUTER_TYPES))
    yield manager
    await manager.stop_all()


@pytest_twisted.async_yield_fixture
async def rapi(gateway: Any, routers: Any):
    """A running API over ``gateway`` and ``routers``; yields an ApiClient."""
    from junebug.api.app import JunebugApi

    app = JunebugApi(gateway, gateway.backends, routers=routers)
    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
    yield ApiClient(f"http://127.0.0.1:{port.getHost().port}")
    await port.stopListening()
