"""Connecting to Redis (a server, or the embedded one) and naming keys.

Everything Junebug keeps goes through one txredisapi connection; the embedded
default is a real redis-server too (``store.embedded``), reached over its socket.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet.defer import Deferred, FirstError, gatherResults


class Keys:
    """Builds Redis keys with the optional ``key_prefix`` of the original's config."""

    def __init__(self, prefix: str | None = None, separator: str = ":") -> None:
        self.prefix = f"{prefix}{separator}" if prefix else ""

    def __call__(self, *parts: str) -> str:
        return self.prefix + ":".join(str(part) for part in parts)


#: Seconds a Redis command may take (including waiting for a reconnection) before it
#: fails, so an API request answers 503 instead of hanging while Redis is away.
COMMAND_TIMEOUT = 5.0


async def together(*commands: Deferred) -> list[Any]:
    """Await Redis commands sent together (one round trip's wait instead of several);
    fails with the first command's own error, not a wrapper."""
    try:
        return await gatherResults(list(commands), consumeErrors=True)
    except FirstError as error:
        error.subFailure.raiseException()
        raise  # unreachable: raiseException always raises


class TimedRedis:
    """A txredisapi connection whose every command fails with ``ConnectionError`` when
    Redis does not answer within ``timeout`` seconds (txredisapi alone waits forever
    for a reconnection)."""

    def __init__(self, connection: Any, clock: Any, timeout: float = COMMAND_TIMEOUT) -> None:
        self._connection = connection
        self._clock = clock
        self.timeout = timeout

    def disconnect(self) -> Any:
        return self._connection.disconnect()

    def __getattr__(self, name: str) -> Any:
        command = getattr(self._connection, name)
        timeout, clock = self.timeout, self._clock

        def timed_out(result: Any, seconds: float) -> Any:
            raise txredisapi.ConnectionError(f"Redis did not answer {name} within {seconds:g}s")

        def call(*args: Any, **kwargs: Any) -> Any:
            return command(*args, **kwargs).addTimeout(timeout, clock, onTimeoutCancel=timed_out)

        return call


async def connect(
    host: str = "localhost",
    port: int = 6379,
    db: int = 0,
    password: str | None = None,
    *,
    unix_path: str | None = None,
    connect_timeout: float = 10,
    command_timeout: float = COMMAND_TIMEOUT,
    clock: Any = None,
) -> TimedRedis:
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
    return TimedRedis(handler, clock, command_timeout)
