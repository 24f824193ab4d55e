"""POSTing JSON to applications: mo_url, event_url and status_url callbacks.

``CallbackPoster.attempt`` makes one POST and says how it went (``Outcome``): it never
raises, since one bad receiver must not stop a channel. Whether and when a failed
callback is tried again is ``workers.callbacks``' business (docs/callbacks.md).
"""

from __future__ import annotations

import binascii
import contextlib
import email.utils
import functools
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import treq
from hyperlink import EncodedURL
from twisted.internet.defer import CancelledError, Deferred
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory

from junebug import messages

DEFAULT_TIMEOUT = 10.0
MAX_PERSISTENT_PER_HOST = 64


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """Twisted's connection factory without its two log lines per connection."""

    noisy = False


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


class _CallbackURL(EncodedURL):
    """A URL that treq can send without converting it again: treq converts every
    request's URL to a URI and renders it (``to_uri().to_text()``, ~100 µs with IDNA);
    this one was converted once, by ``_prepare``, and answers with that."""

    _text: str = ""

    @classmethod
    def ready(cls, url: EncodedURL) -> _CallbackURL:
        text = url.to_uri().to_text()
        ready = cls.from_text(text)
        ready._text = text
        return ready

    def to_uri(self) -> EncodedURL:
        # A copy made by replace() has no _text: it converts as any URL does.
        return self if self._text else super().to_uri()

    def to_text(self, with_password: bool = False) -> str:
        return self._text if self._text and not with_password else super().to_text(with_password)


@attrs.frozen
class _Prepared:
    """What a POST to one URL needs from it, parsed once."""

    #: The URL without credentials, parsed as treq would (None: it cannot be sent).
    target: EncodedURL | str | None
    #: The ``Authorization`` value for the URL's ``user:pass@`` (None: no credentials).
    basic_auth: bytes | None = None
    #: Why it cannot be sent (when ``target`` is None).
    error: str = ""


@functools.lru_cache(maxsize=PREPARED_URLS)
def _prepare(url: str) -> _Prepared:
    """``split_credentials``, treq's URL parsing and the basic-auth header, once per URL."""
    try:
        clean, credentials = split_credentials(url)
    except ValueError as exc:
        return _Prepared(None, error=str(exc))
    target: EncodedURL | str = clean
    # A URL treq cannot convert (an IPv6 literal fails IDNA) stays text: treq then
    # fails on it at each attempt, as before.
    with contextlib.suppress(Exception):
        target = _CallbackURL.ready(EncodedURL.from_text(clean))
    basic = None
    if credentials is not None:
        # As treq's add_basic_auth builds it.
        pair = b"%s:%s" % (credentials[0].encode("utf-8"), credentials[1].encode("utf-8"))
        basic = b"Basic " + binascii.b2a_base64(pair).rstrip(b"\n")
    return _Prepared(target, basic)


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
        target = prepared.target
        if target is None:
            return Outcome(False, error=f"cannot be sent: {prepared.error}", hopeless=True)
        headers = {b"Content-Type": [b"application/json"], **(headers or {})}
        if token:
            # One Authorization header only: an explicit token wins over URL credentials.
            headers[b"Authorization"] = [f"Token {token}".encode()]
        elif prepared.basic_auth is not None:
            headers[b"Authorization"] = [prepared.basic_auth]

        async def exchange() -> tuple[Any, bytes]:
            response = await self.client.post(target, data=body, headers=headers)
            return response, await response.content()

        def timed_out(result: Any, timeout: float) -> Any:
            # Cancelling mid-request surfaces as treq's ResponseNeverReceived: name it.
            raise TimeoutError(timeout)

        try:
            response, content = await Deferred.fromCoroutine(exchange()).addTimeout(
                self.timeout, self.clock, onTimeoutCancel=timed_out
            )
        except (CancelledError, TimeoutError):
            return Outcome(False, error=f"timed out after {self.timeout:g}s")
        except Exception as exc:  # noqa: BLE001 - any transport failure is the receiver's
            return Outcome(False, error=f"failed: {type(exc).__name__}: {exc}")
        if 200 <= response.code < 300:
            return Outcome(True, response.code)
        excerpt = content[:500].decode("utf-8", "replace")
        wait = None
        if response.code in (429, 503):
            values = response.headers.getRawHeaders(b"Retry-After") or []
            wait = retry_after_seconds(
                values[0].decode("latin-1") if values else None, self.clock.seconds()
            )
        return Outcome(
            False, response.code, error=f"answered {response.code}: {excerpt}", retry_after=wait
        )

    async def close(self) -> None:
        await self.pool.closeCachedConnections()
