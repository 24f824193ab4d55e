"""POSTing JSON to applications: mo_url, event_url and status_url callbacks.

``CallbackPoster.attempt`` makes one POST and says how it went (``Outcome``): it never
raises, since one bad receiver must not stop a channel. Whether and when a failed
callback is tried again is ``workers.callbacks``' business (docs/callbacks.md).
"""

from __future__ import annotations

import binascii
import email.utils
import functools
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
from twisted.internet.defer import CancelledError

from junebug import messages
from junebug.workers.http_client import (
    MAX_PERSISTENT_PER_HOST,
    HTTPClient,
    InvalidRequest,
    Target,
)

DEFAULT_TIMEOUT = 10.0


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """Move ``user:pass@`` out of a URL: (url without them, basic-auth pair or None).

    Raises ValueError for a URL that cannot be sent to (bad host or port)."""
    parts = urlsplit(url)
    port = parts.port  # raises ValueError when out of range
    if not parts.hostname:
        raise ValueError(f"no host in {mask_credentials(url)!r}")
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (parts.username, parts.password or "")


#: Callback URLs whose parsing ``_prepare`` remembers (a channel's few URLs, or one
#: per message when a template puts the message id in it: bounded either way).
PREPARED_URLS = 1024


@attrs.frozen
class _Prepared:
    """What a POST to one URL needs from it, parsed once."""

    #: Where to connect and what to send (None: the URL cannot be sent).
    request: Target | None
    #: The ``Authorization`` value for the URL's ``user:pass@`` (None: no credentials).
    basic_auth: bytes | None = None
    #: Why it cannot be sent (when ``request`` is None).
    error: str = ""


@functools.lru_cache(maxsize=PREPARED_URLS)
def _prepare(url: str) -> _Prepared:
    """``split_credentials``, the URL's parsing and the basic-auth header, once per URL."""
    try:
        clean, credentials = split_credentials(url)
        request = Target.parse(clean)
    except ValueError as exc:
        return _Prepared(None, error=str(exc))
    basic = None
    if credentials is not None:
        # As treq's add_basic_auth built it.
        pair = b"%s:%s" % (credentials[0].encode("utf-8"), credentials[1].encode("utf-8"))
        basic = b"Basic " + binascii.b2a_base64(pair).rstrip(b"\n")
    return _Prepared(request, basic)


def mask_credentials(url: str) -> str:
    """``url`` with the password of any ``user:pass@`` replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable as a URL: mask by pattern instead
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(
        (parts.scheme, f"{parts.username}:***@{netloc}", parts.path, parts.query, parts.fragment)
    )


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from ``now``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(moment.timestamp() - now, 0.0)


@attrs.frozen
class Outcome:
    """How one POST went."""

    ok: bool
    #: The HTTP status answered (None: no answer: connection error or timeout).
    status: int | None = None
    #: What went wrong, for logs and dead letters (empty when ok).
    error: str = ""
    #: Seconds the receiver asked us to wait (429 / 503 with Retry-After).
    retry_after: float | None = None
    #: The request could never be made (a URL that cannot be parsed): no retry helps.
    hopeless: bool = False

    @property
    def retryable(self) -> bool:
        """Worth trying again: no answer, a 5xx, or 429."""
        if self.ok or self.hopeless:
            return False
        return self.status is None or self.status >= 500 or self.status == 429


class CallbackPoster:
    """Sends callbacks over a pool of persistent HTTP connections (``http_client``)."""

    def __init__(
        self, reactor: Any = None, timeout: float = DEFAULT_TIMEOUT, clock: Any = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        #: Times requests out; a task.Clock in tests.
        self.clock = clock or reactor
        self.timeout = timeout
        self.client = HTTPClient(reactor, max_persistent_per_host=MAX_PERSISTENT_PER_HOST)

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
        """POST ``payload`` as JSON once; True on a 2xx answer. Failures are logged, not
        raised."""
        body = messages.to_json(payload).encode("ascii")
        outcome = await self.attempt(url, body, token=token)
        if not outcome.ok:
            log.error(
                f"Post of {what} to {mask_credentials(url)} {outcome.error}",
                message_id=message_id,
                **({"status_code": outcome.status} if outcome.status else {}),
            )
        return outcome.ok

    async def attempt(
        self,
        url: str,
        body: bytes,
        *,
        token: str | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> Outcome:
        """POST the JSON ``body`` once, with ``headers`` added; never raises."""
        prepared = _prepare(url)
        request = prepared.request
        if request is None:
            return Outcome(False, error=f"cannot be sent: {prepared.error}", hopeless=True)
        fields = {b"Content-Type": [b"application/json"], **(headers or {})}
        if token:
            # One Authorization header only: an explicit token wins over URL credentials.
            fields[b"Authorization"] = [f"Token {token}".encode()]
        elif prepared.basic_auth is not None:
            fields[b"Authorization"] = [prepared.basic_auth]
        try:
            response = await self.client.post(
                request,
                body,
                [(name, value) for name, values in fields.items() for value in values],
                timeout=self.timeout,
                clock=self.clock,
            )
        except (CancelledError, TimeoutError):
            return Outcome(False, error=f"timed out after {self.timeout:g}s")
        except InvalidRequest as exc:
            return Outcome(False, error=f"cannot be sent: {exc}", hopeless=True)
        except Exception as exc:  # noqa: BLE001 - any transport failure is the receiver's
            return Outcome(False, error=f"failed: {type(exc).__name__}: {exc}")
        status = response.status
        if 200 <= status < 300:
            return Outcome(True, status)
        excerpt = response.body[:500].decode("utf-8", "replace")
        wait = None
        if status in (429, 503):
            value = response.header(b"retry-after")
            wait = retry_after_seconds(
                None if value is None else value.decode("latin-1"), self.clock.seconds()
            )
        return Outcome(False, status, error=f"answered {status}: {excerpt}", retry_after=wait)

    async def close(self) -> None:
        """Close the pooled connections and wait until they are."""
        await self.client.close()
