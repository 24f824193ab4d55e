"""Connecting to Redis (a server, or the embedded one) and naming keys.

Everything Junebug keeps goes through one txredisapi connection; the embedded
default is a real redis-server too (``store.embedded``), reached over its socket.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet.defer import Deferred


class Keys:
    """Builds Redis keys with the optional ``key_prefix`` of the original's config."""

    def __init__(self, prefix: str | None = None, separator: str = ":") -> None:
        self.prefix = f"{prefix}{separator}" if prefix else ""

    def __call__(self, *parts: str) -> str:
        return self.prefix + ":".join(str(part) for part in parts)


def connect(
    host: str = "localhost",
    port: int = 6379,
    db: int = 0,
    password: str | None = None,
    *,
    unix_path: str | None = None,
    connect_timeout: float = 10,
) -> Deferred:
    """Connect (with automatic reconnection); fires with the connection once ready."""
    options: dict[str, Any] = {
        "dbid": db,
        "reconnect": True,
        "charset": "utf-8",
        "connectTimeout": connect_timeout,
        "convertNumbers": False,
    }
    if password:
        options["password"] = password
    if unix_path:
        return txredisapi.UnixConnection(unix_path, **options)
    return txredisapi.Connection(host, port, **options)
