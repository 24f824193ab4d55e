"""Connecting to Redis (a server, or the embedded one) and naming keys.

Everything Junebug keeps goes through one txredisapi connection; the embedded
default is a real redis-server too (``store.embedded``), reached over its socket.
"""

from __future__ import annotations

from typing import Any

import txredisapi


class Keys:
    """Builds Redis keys with the optional ``key_prefix`` of the original's config."""

    def __init__(self, prefix: str | None = None, separator: str = ":") -> None:
        self.prefix = f"{prefix}{separator}" if prefix else ""

    def __call__(self, *parts: str) -> str:
        return self.prefix + ":".join(str(part) for part in parts)


async def connect(
    host: str = "localhost",
    port: int = 6379,
    db: int = 0,
    password: str | None = None,
    *,
    unix_path: str | None = None,
    connect_timeout: float = 10,
    clock: Any = None,
) -> Any:
    """Connect, reconnecting on its own after any later loss.

    Returns the connection once the first connection is made; fails with
    ``ConnectionError`` if that takes longer than ``connect_timeout`` (txredisapi
    would otherwise keep retrying a server that isn't there, forever).
    """
    if clock is None:
        from twisted.internet import reactor as clock
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
        handler = txredisapi.lazyUnixConnection(unix_path, **options)
        where = unix_path
    else:
        handler = txredisapi.lazyConnection(host, port, **options)
        where = f"{host}:{port}"
    try:
        await handler._connected.addTimeout(connect_timeout, clock)
    except Exception as exc:
        await handler.disconnect()
        raise ConnectionError(
            f"no answer from Redis at {where} within {connect_timeout:g}s ({exc})"
        ) from exc
    return handler
