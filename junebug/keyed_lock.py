"""One lock per key (a channel's or a router's id), kept only while someone holds or
waits for it: the ids come from API clients, so locks for unknown or deleted ids must
not pile up."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from twisted.internet.defer import DeferredLock


class KeyedLock:
    """``async with locks(key):`` runs the block while no other block holds ``key``."""

    def __init__(self) -> None:
        self._locks: dict[str, DeferredLock] = {}

    def __len__(self) -> int:
        """How many keys are held or waited for."""
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = DeferredLock()
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()  # to the next waiter, if any
            if not lock.locked and self._locks.get(key) is lock:
                del self._locks[key]
