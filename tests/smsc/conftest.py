from __future__ import annotations

import pytest_twisted

from tests.smsc.esme import Smsc


@pytest_twisted.async_yield_fixture
async def smsc():
    """An in-process simulator on a real port, its time from a task.Clock."""
    server = await Smsc().start()
    yield server
    await server.stop()
