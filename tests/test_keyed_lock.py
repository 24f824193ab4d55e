"""KeyedLock: one lock per key, dropped once nobody holds or waits for it."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from junebug.keyed_lock import KeyedLock


async def _hold(locks: KeyedLock, key: str, gate: Deferred, trace: list[str], name: str):
    async with locks(key):
        trace.append(f"{name} in")
        await gate
        trace.append(f"{name} out")


@pytest_twisted.ensureDeferred
async def test_one_key_runs_one_block_at_a_time_and_others_do_not_wait():
    locks = KeyedLock()
    trace: list[str] = []
    first_gate, second_gate, other_gate = Deferred(), Deferred(), Deferred()
    first = Deferred.fromCoroutine(_hold(locks, "a", first_gate, trace, "first"))
    second = Deferred.fromCoroutine(_hold(locks, "a", second_gate, trace, "second"))
    other = Deferred.fromCoroutine(_hold(locks, "b", other_gate, trace, "other"))
    assert trace == ["first in", "other in"]  # "b" does not wait for "a"
    assert len(locks) == 2
    first_gate.callback(None)
    await first
    assert trace == ["first in", "other in", "first out", "second in"]
    assert len(locks) == 2  # "a" handed on to its waiter, not dropped
    second_gate.callback(None)
    other_gate.callback(None)
    await second
    await other
    assert len(locks) == 0


@pytest_twisted.ensureDeferred
async def test_a_block_that_fails_frees_its_key():
    locks = KeyedLock()
    with pytest.raises(ValueError):
        async with locks("a"):
            raise ValueError("no")
    assert len(locks) == 0
    async with locks("a"):  # and the key can be taken again
        assert len(locks) == 1


@pytest_twisted.ensureDeferred
async def test_channel_changes_to_unknown_ids_leave_no_locks(api, gateway):
    for _ in range(3):
        code, _ = await api.delete("/channels/no-such-channel")
        assert code == 404
        code, _ = await api.post("/channels/no-such-channel/restart")
        assert code == 404
    assert len(gateway._lock) == 0
