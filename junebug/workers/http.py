"""POSTing JSON to applications: mo_url, event_url and status_url callbacks.

A callback that fails (connection error, timeout, non-2xx) is logged in the
owner's log with the reason and never raises: one bad receiver must not stop a
channel or hold up the next message.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import treq
from twisted.internet.defer import CancelledError, Deferred
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory

from junebug import messages

DEFAULT_TIMEOUT = 10.0
MAX_PERSISTENT_PER_HOST = 64


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """Twisted's connection factory without its two log lines per connection."""

    noisy = False


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """Move ``user:pass@`` out of a URL: (url without them, basic-auth pair or None)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (parts.username, parts.password or "")


class CallbackPoster:
    """Sends callbacks over a pool of persistent HTTP connections."""

    def __init__(
        self, reactor: Any = None, timeout: float = DEFAULT_TIMEOUT, clock: Any = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        #: Times requests out; a task.Clock in tests.
        self.clock = clock or reactor
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        # A forwarder can have a full prefetch of inbound and of events in flight: keep
        # that many connections open, or the extras are closed and made again each time.
        self.pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
        self.pool._factory = _QuietHTTP11ClientFactory
        self.client = treq.client.HTTPClient(Agent(reactor, pool=self.pool))

    async def post(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        log: Any,
        token: str | None = None,
        message_id: str | None = None,
        what: str = "message",
    ) -> bool:
        """POST ``payload`` as JSON; True on a 2xx answer. Failures are logged, not raised."""
        target, basic_auth = split_credentials(url)
        headers = {b"Content-Type": [b"application/json"]}
        if token:
            # One Authorization header only: an explicit token wins over URL credentials.
            headers[b"Authorization"] = [f"Token {token}".encode()]
            basic_auth = None
        body = messages.to_json(payload).encode("ascii")

        async def exchange() -> tuple[Any, bytes]:
            response = await self.client.post(target, data=body, headers=headers, auth=basic_auth)
            return response, await response.content()

        def timed_out(result: Any, timeout: float) -> Any:
            # Cancelling mid-request surfaces as treq's ResponseNeverReceived: name it.
            raise TimeoutError(timeout)

        try:
            response, content = await Deferred.fromCoroutine(exchange()).addTimeout(
                self.timeout, self.clock, onTimeoutCancel=timed_out
            )
        except (CancelledError, TimeoutError):
            log.error(
                f"Post of {what} to {target} timed out after {self.timeout:g}s",
                message_id=message_id,
            )
            return False
        except Exception as exc:  # noqa: BLE001 - any transport failure is the receiver's
            log.error(
                f"Post of {what} to {target} failed: {type(exc).__name__}: {exc}",
                message_id=message_id,
            )
            return False
        if not 200 <= response.code < 300:
            excerpt = content[:500].decode("utf-8", "replace")
            log.error(
                f"Post of {what} to {target} answered {response.code}: {excerpt}",
                message_id=message_id,
                status_code=response.code,
            )
            return False
        return True

    async def close(self) -> None:
        await self.pool.closeCachedConnections()
