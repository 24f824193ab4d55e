"""Connecting to Redis (a server, or the embedded one) and naming keys.

Everything Junebug keeps goes through one txredisapi connection; the embedded
default is a real redis-server too (``store.embedded``), reached over its socket.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet.defer import CancelledError, Deferred, FirstError, fail, gatherResults
from twisted.python.failure import Failure


class Keys:
    """Builds Redis keys with the optional ``key_prefix`` of the original's config."""

    def __init__(self, prefix: str | None = None, separator: str = ":") -> None:
        self.prefix = f"{prefix}{separator}" if prefix else ""

    def __call__(self, *parts: str) -> str:
        return self.prefix + ":".join(str(part) for part in parts)


class RedisProtocol(txredisapi.RedisProtocol):
    """txredisapi's protocol with commands built in one join.

    txredisapi builds each command with a type check and two encodes per argument into a
    bytearray: 9.2 µs for an 11-argument EVALSHA like the stores' Lua scripts, 4.0 µs
    here (``timeit``). The bytes are the same; arguments other than ``bytes``,
    ``str`` and ``int`` (and text that will not encode) go through txredisapi's own
    encoding, so they read and fail exactly as before.
    """

    def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
        plain_utf8 = self.charset == "utf-8" and self.errors == "strict"
        parts = [b"*%d\r\n" % len(args)]
        append = parts.append
        for arg in args:
            kind = type(arg)
            if kind is bytes:
                data = arg
            elif kind is str and plain_utf8:
                try:
                    data = arg.encode()
                except UnicodeEncodeError:
                    data = self._encode_value(arg)  # raises txredisapi's InvalidData
            elif kind is int:
                data = b"%d" % arg
            else:
                data = self._encode_value(arg)
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
        return b"".join(parts)


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
    for a reconnection).

    One watchdog, running while commands are outstanding, cancels those past their
    deadline (so a command may take up to half a timeout longer to fail): cheaper than
    arming and cancelling a reactor timer for every command.
    """

    def __init__(self, connection: Any, clock: Any, timeout: float = COMMAND_TIMEOUT) -> None:
        self._connection = connection
        self._clock = clock
        self.timeout = timeout
        #: Outstanding commands: Deferred -> (deadline, command name).
        self._pending: dict[Deferred, tuple[float, str]] = {}
        self._watchdog: Any = None

    def disconnect(self) -> Any:
        self._stop_watchdog()
        return self._connection.disconnect()

    def __getattr__(self, name: str) -> Any:
        command = getattr(self._connection, name)
        method = getattr(RedisProtocol, name, None)
        pool = getattr(getattr(self._connection, "_factory", None), "connectionQueue", None)
        if method is None or getattr(method, "_blocking", False) or pool is None:

            def call(*args: Any, **kwargs: Any) -> Deferred:
                return self._watch(command(*args, **kwargs), name)

        else:

            def call(*args: Any, **kwargs: Any) -> Deferred:
                # txredisapi's handler finds the connection through a generator and
                # two Deferreds for every command; with our one connection up, this
                # is what it would pick. Otherwise it waits for a reconnection.
                ready = pool.pending
                if len(ready) == 1 and ready[0].connected:
                    try:
                        sent = method(ready[0], *args, **kwargs)
                    except Exception:
                        sent = fail()  # as the handler would: a failed Deferred
                    return self._watch(sent, name)
                return self._watch(command(*args, **kwargs), name)

        # Cached on the instance: later uses of this command skip __getattr__ entirely.
        self.__dict__[name] = call
        return call

    def _watch(self, command: Deferred, name: str) -> Deferred:
        if command.called:
            return command
        self._pending[command] = (self._clock.seconds() + self.timeout, name)
        command.addBoth(self._settled, command)
        if self._watchdog is None:
            self._watchdog = self._clock.callLater(self.timeout / 2, self._expire)
        return command

    def _settled(self, result: Any, command: Deferred) -> Any:
        entry = self._pending.pop(command, None)
        if entry is not None and isinstance(result, Failure) and result.check(CancelledError):
            raise txredisapi.ConnectionError(
                f"Redis did not answer {entry[1]} within {self.timeout:g}s"
            )
        return result

    def _expire(self) -> None:
        self._watchdog = None
        now = self._clock.seconds()
        late = [command for command, (deadline, _) in self._pending.items() if deadline <= now]
        for command in late:
            command.cancel()  # fails it with ConnectionError (see _settled)
        if self._pending:
            self._watchdog = self._clock.callLater(self.timeout / 2, self._expire)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None


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
    # Every connection the factory makes from now on, reconnections included (the first
    # is made once the reactor runs again).
    handler._factory.protocol = RedisProtocol
    try:
        await handler._connected.addTimeout(connect_timeout, clock)
    except Exception as exc:
        await handler.disconnect()
        raise ConnectionError(
            f"no answer from Redis at {where} within {connect_timeout:g}s ({exc})"
        ) from exc
    return TimedRedis(handler, clock, command_timeout)
