"""Guaranteed callbacks: every POST to an ``mo_url``, ``event_url`` or ``status_url``
goes through ``CallbackQueue.send``.

The first attempt is made at once, from memory. A callback whose attempt fails with no
answer, a timeout, a 5xx or a 429 is written to Redis (``store.callbacks``) and tried
again later with exponential backoff and jitter, by the queue's worker, until it is
delivered, has had ``callback_max_attempts`` attempts or would be older than
``callback_max_age``; then it becomes a dead letter. A 4xx (other than 429) is not
tried again: it becomes a dead letter at once.

Order: callbacks are queued per owner (channel or router destination) and URL as
configured (the template, before its variables are expanded). While a queue holds a
callback waiting for a retry, later callbacks to that URL wait behind it (in Redis)
instead of overtaking it; once the queue is empty they go straight to the receiver
again.

Every attempt carries ``X-Junebug-Callback-Id`` (the same for every attempt of one
callback), ``X-Junebug-Attempt`` and, when the channel has a ``callback_secret``,
``X-Junebug-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.
docs/callbacks.md is the user's description.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from junebug import messages
from junebug.store.callbacks import CallbackStore, owner_of, queue_id
from junebug.workers.http import Outcome, mask_credentials, split_credentials

log = Logger()

#: Attempts a callback gets before it becomes a dead letter.
DEFAULT_MAX_ATTEMPTS = 30
#: Seconds after it was created that a callback is no longer tried.
DEFAULT_MAX_AGE = 86400.0
#: The wait after the first failed attempt; it doubles after each further one ...
BASE_DELAY = 1.0
#: ... up to this.
MAX_DELAY = 600.0
#: The longest Retry-After honoured.
MAX_RETRY_AFTER = 3600.0
#: Seconds between two looks at Redis for due callbacks queued by other processes.
POLL_INTERVAL = 5.0
#: Queues taken from Redis at once.
BATCH = 50

CALLBACK_ID_HEADER = b"X-Junebug-Callback-Id"
ATTEMPT_HEADER = b"X-Junebug-Attempt"
SIGNATURE_HEADER = b"X-Junebug-Signature"

#: What each kind of callback is called in logs.
WHAT = {"inbound": "inbound message", "event": "event", "status": "status event"}

_ID_NAMESPACE = uuid.UUID("5a0c1f1e-8d3b-4c1a-9d6e-6a756e656275")
_ID_NAMESPACE_BYTES = _ID_NAMESPACE.bytes


def _uuid5_hex(name: str) -> str:
    """``uuid.uuid5(_ID_NAMESPACE, name).hex``, without building two UUID objects:
    the first 16 bytes of SHA-1(namespace + name), version 5, RFC 4122 variant."""
    digest = bytearray(hashlib.sha1(_ID_NAMESPACE_BYTES + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


class CallbackNotQueued(Exception):
    """A failed callback could not be written to Redis for a retry."""


@attrs.frozen
class CallbackSettings:
    """An owner's callback settings (a channel's ``callback_*`` properties)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_age: float = DEFAULT_MAX_AGE
    #: Signs the callbacks (never stored with them, never logged).
    secret: str | None = attrs.field(default=None, repr=False)
    #: The channel whose ``callback_secret`` signs retries (looked up at each retry).
    signer: str | None = None


_DEFAULT_SETTINGS = CallbackSettings()


def settings_from(channel_id: str, properties: dict[str, Any]) -> CallbackSettings:
    """A channel's callback settings, defaults for what it does not set."""
    return CallbackSettings(
        max_attempts=int(properties.get("callback_max_attempts") or DEFAULT_MAX_ATTEMPTS),
        max_age=float(properties.get("callback_max_age") or DEFAULT_MAX_AGE),
        secret=properties.get("callback_secret") or None,
        signer=channel_id,
    )


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Junebug-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(
        secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff(attempts: int, rand: float, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: ``d = min(cap, base *
    2**(attempts-1))``, then a uniformly random point in ``[d/2, d]`` (``rand`` in
    [0, 1))."""
    ceiling = min(cap, base * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + ceiling / 2 * rand


@attrs.define
class _Callback:
    id: str
    qid: str
    owner: str
    kind: str
    url: str
    body: str
    token: str | None
    message_id: str | None
    signer: str | None
    max_attempts: int
    max_age: float
    created: float
    #: When it was (re)queued: its age counts from here (a replay starts it again).
    queued: float
    order: int
    attempts: int = 0
    first_attempt: float | None = None
    last_attempt: float | None = None
    last_error: str = ""
    last_status: int | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "qid": self.qid,
            "owner": self.owner,
            "kind": self.kind,
            "url": self.url,
            "body": self.body,
            "token": self.token,
            "message_id": self.message_id,
            "signer": self.signer,
            "max_attempts": self.max_attempts,
            "max_age": repr(self.max_age),
            "created": repr(self.created),
            "queued": repr(self.queued),
            "order": self.order,
            **self.attempt_fields(),
        }

    def attempt_fields(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "first_attempt": "" if self.first_attempt is None else repr(self.first_attempt),
            "last_attempt": "" if self.last_attempt is None else repr(self.last_attempt),
            "last_error": self.last_error,
            "last_status": self.last_status or "",
        }

    @classmethod
    def from_record(cls, record: dict[str, str]) -> _Callback:
        def number(name: str) -> float | None:
            value = record.get(name)
            return float(value) if value else None

        return cls(
            id=record["id"],
            qid=record["qid"],
            owner=record.get("owner") or owner_of(record["qid"]),
            kind=record.get("kind") or "inbound",
            url=record["url"],
            body=record.get("body") or "{}",
            token=record.get("token") or None,
            message_id=record.get("message_id") or None,
            signer=record.get("signer") or None,
            max_attempts=int(record.get("max_attempts") or DEFAULT_MAX_ATTEMPTS),
            max_age=number("max_age") or DEFAULT_MAX_AGE,
            created=number("created") or 0.0,
            queued=number("queued") or number("created") or 0.0,
            order=int(record.get("order") or 0),
            attempts=int(record.get("attempts") or 0),
            first_attempt=number("first_attempt"),
            last_attempt=number("last_attempt"),
            last_error=record.get("last_error") or "",
            last_status=int(record["last_status"]) if record.get("last_status") else None,
        )

    @property
    def what(self) -> str:
        return WHAT.get(self.kind, self.kind)

    @property
    def shown_url(self) -> str:
        return split_credentials(self.url)[0]


def dead_letter_view(record: dict[str, str]) -> dict[str, Any]:
    """A dead letter as the API shows it (URL credentials masked, no token)."""
    callback = _Callback.from_record(record)
    try:
        payload: Any = json.loads(callback.body)
    except ValueError:
        payload = callback.body

    def stamp(seconds: float | None) -> str | None:
        return None if seconds is None else messages.timestamp_from_seconds(seconds)

    return {
        "id": callback.id,
        "kind": callback.kind,
        "url": mask_credentials(callback.url),
        "message_id": callback.message_id,
        "attempts": callback.attempts,
        "last_error": callback.last_error,
        "last_status": callback.last_status,
        "created_at": stamp(callback.created),
        "first_attempt_at": stamp(callback.first_attempt),
        "last_attempt_at": stamp(callback.last_attempt),
        "replays": int(record.get("replays") or 0),
        "payload": payload,
    }


class _ProcessLog:
    """Stands in for an owner's log when no channel of this process has it open."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def _emit(self, method: Any, text: str, **fields: Any) -> None:
        method("{owner}: {text}", owner=self.owner, text=text)

    def info(self, text: str, **fields: Any) -> None:
        self._emit(log.info, text)

    def warning(self, text: str, **fields: Any) -> None:
        self._emit(log.warn, text)

    def error(self, text: str, **fields: Any) -> None:
        self._emit(log.error, text)


class CallbackQueue:
    """Sends callbacks now and, when that fails, later (module docstring).

    ``secrets(channel_id)`` returns (a Deferred or coroutine of) the channel's current
    ``callback_secret``, for retries. ``rand`` returns floats in [0, 1) (the jitter).
    The worker runs while the service holds it (``start``) or while some owner is
    attached (its channel or destination is running here).
    """

    def __init__(
        self,
        store: CallbackStore,
        poster: Any,
        clock: Any,
        *,
        secrets: Callable[[str], Awaitable[str | None] | Deferred] | None = None,
        rand: Callable[[], float] = random.random,
        poll_interval: float = POLL_INTERVAL,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.poster = poster
        self.clock = clock
        self.secrets = secrets
        self.rand = rand
        self.poll_interval = poll_interval
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.batch = batch
        #: Seconds a process keeps a queue to itself while working on it.
        self.lease = float(getattr(poster, "timeout", 10.0)) * 2 + 5
        #: Queue ids known to hold callbacks in Redis: later ones wait behind them.
        self.blocked: set[str] = set()
        self._logs: dict[str, list[Any]] = {}
        self._held = False
        self._running = False
        self._timer: Any = None
        self._timer_at: float | None = None
        self._ticking = False
        self._tick_again = False
        self._active: dict[str, Deferred] = {}
        self._ticks: set[Deferred] = set()
        self._orders = itertools.count()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Run the worker for the service's lifetime (until ``stop``)."""
        self._held = True
        await self._run()

    async def stop(self) -> None:
        self._held = False
        await self._halt()

    async def attach(self, owner: str, owner_log: Any) -> None:
        """``owner`` runs here: log its callbacks in ``owner_log``, keep its queued
        callbacks' order, and run the worker."""
        self._logs.setdefault(owner, []).append(owner_log)
        try:
            self.blocked.update(await self.store.pending_queues(owner))
        except Exception as exc:  # noqa: BLE001 - Redis away: found again by the worker
            log.info("Could not read the pending callbacks of {owner}: {e}", owner=owner, e=exc)
        await self._run()

    async def detach(self, owner: str, owner_log: Any = None) -> None:
        logs = self._logs.get(owner, [])
        # Only the log this caller attached: another start of the same owner may have
        # attached its own meanwhile, and must keep it.
        if owner_log in logs:
            logs.remove(owner_log)
        if not logs:
            self._logs.pop(owner, None)
        if not self._logs and not self._held:
            await self._halt()

    async def _run(self) -> None:
        if self._running:
            return
        self._running = True
        self._wake_at(self.clock.seconds())

    async def _halt(self) -> None:
        self._running = False
        self._cancel_timer()
        await self.idle()

    def log_of(self, owner: str) -> Any:
        logs = self._logs.get(owner)
        return logs[-1] if logs else _ProcessLog(owner)

    # -- sending ------------------------------------------------------------------------

    async def send(
        self,
        owner: str,
        url: str,
        payload: dict[str, Any],
        *,
        kind: str,
        settings: CallbackSettings | None = None,
        token: str | None = None,
        log: Any = None,
        message_id: str | None = None,
        source_id: str | None = None,
        template: str | None = None,
    ) -> bool:
        """POST ``payload`` to ``url`` (already expanded) now, or queue it behind the
        callbacks to the same URL ``template`` (default: ``url``) that wait for a retry.
        True when delivered now.

        Fails with ``CallbackNotQueued`` only when a callback that must be retried
        cannot be written to Redis (the caller's message then stays on the bus)."""
        settings = settings or _DEFAULT_SETTINGS
        owner_log = log or self.log_of(owner)
        now = self.clock.seconds()
        qid = queue_id(owner, template or url)
        callback_id = self._callback_id(owner, kind, url, source_id)
        body = messages.to_json(payload)
        order = self._order(now)

        def record(**attempt: Any) -> _Callback:
            # Only a callback that waits or failed needs its record.
            return _Callback(
                id=callback_id,
                qid=qid,
                owner=owner,
                kind=kind,
                url=url,
                body=body,
                token=token,
                message_id=message_id,
                signer=settings.signer,
                max_attempts=max(1, settings.max_attempts),
                max_age=settings.max_age,
                created=now,
                queued=now,
                order=order,
                **attempt,
            )

        if qid in self.blocked:
            await self._persist(record(), now, owner_log, "waits behind earlier callbacks")
            return False
        # The first attempt, as ``_attempt`` makes it.
        attempted = self.clock.seconds()
        outcome = await self._post(
            url, body.encode("utf-8"), callback_id, 1, token, settings.secret, attempted
        )
        if outcome.ok:
            return True
        callback = record(
            attempts=1,
            first_attempt=attempted,
            last_attempt=attempted,
            last_error=outcome.error,
            last_status=outcome.status,
        )
        now = self.clock.seconds()
        if not outcome.retryable:
            owner_log.error(
                f"Post of {callback.what} to {callback.shown_url} {outcome.error}; "
                "not retried (kept as a dead letter)",
                message_id=message_id,
                status_code=outcome.status,
            )
            try:
                await self.store.kill(qid, callback.id, owner, now, callback.fields())
            except Exception as exc:  # noqa: BLE001 - the failure is logged above
                owner_log.error(f"Could not keep the dead letter: {exc}", message_id=message_id)
            return False
        delay = self._delay(callback.attempts, outcome)
        if self._exhausted(callback, now, delay):
            await self._give_up(callback, now, owner_log, outcome, direct=True)
            return False
        owner_log.error(
            f"Post of {callback.what} to {callback.shown_url} {outcome.error}; "
            f"retrying in {delay:.1f}s (attempt 1 of {callback.max_attempts})",
            message_id=message_id,
            **({"status_code": outcome.status} if outcome.status else {}),
        )
        await self._persist(callback, now + delay, owner_log, None)
        return False

    def _callback_id(self, owner: str, kind: str, url: str, source_id: str | None) -> str:
        # Stable across a redelivery from the bus, so the receiver can spot the repeat.
        if source_id:
            return _uuid5_hex(f"{owner}\n{kind}\n{source_id}\n{url}")
        return uuid.uuid4().hex

    def _order(self, now: float) -> int:
        # Creation order, exact in a float score: milliseconds, then a counter.
        return int(now * 1000) * 1000 + next(self._orders) % 1000

    async def _persist(
        self, callback: _Callback, due: float, owner_log: Any, note: str | None
    ) -> None:
        self.blocked.add(callback.qid)
        try:
            scheduled = await self.store.persist(
                callback.qid, callback.id, callback.order, due, callback.fields()
            )
        except Exception as exc:
            owner_log.error(
                f"Could not queue the {callback.what} for {callback.shown_url} for a retry: {exc}",
                message_id=callback.message_id,
            )
            raise CallbackNotQueued(str(exc)) from exc
        self.blocked.add(callback.qid)
        if note:
            owner_log.info(
                f"Post of {callback.what} to {callback.shown_url} {note}",
                message_id=callback.message_id,
            )
        if scheduled:  # its queue was empty: it decides when the queue is due
            self._wake_at(due)

    async def _attempt(self, callback: _Callback, secret: str | None) -> Outcome:
        now = self.clock.seconds()
        callback.attempts += 1
        if callback.first_attempt is None:
            callback.first_attempt = now
        callback.last_attempt = now
        outcome = await self._post(
            callback.url,
            callback.body.encode("utf-8"),
            callback.id,
            callback.attempts,
            callback.token,
            secret,
            now,
        )
        if not outcome.ok:
            callback.last_error = outcome.error
            callback.last_status = outcome.status
        return outcome

    def _post(
        self,
        url: str,
        body: bytes,
        callback_id: str,
        attempt: int,
        token: str | None,
        secret: str | None,
        now: float,
    ) -> Awaitable[Outcome]:
        """One attempt's POST, with its headers (module docstring)."""
        headers = {
            CALLBACK_ID_HEADER: [callback_id.encode("ascii")],
            ATTEMPT_HEADER: [str(attempt).encode("ascii")],
        }
        if secret:
            headers[SIGNATURE_HEADER] = [signature(secret, int(now), body).encode("ascii")]
        return self.poster.attempt(url, body, token=token, headers=headers)

    def _delay(self, attempts: int, outcome: Outcome) -> float:
        if outcome.status == 429 and outcome.retry_after is not None:
            return min(max(outcome.retry_after, 0.0), MAX_RETRY_AFTER)
        return backoff(attempts, self.rand(), self.base_delay, self.max_delay)

    @staticmethod
    def _exhausted(callback: _Callback, now: float, delay: float) -> bool:
        return (
            callback.attempts >= callback.max_attempts
            or now + delay - callback.queued > callback.max_age
        )

    async def _give_up(
        self, callback: _Callback, now: float, owner_log: Any, outcome: Outcome, *, direct: bool
    ) -> None:
        owner_log.error(
            f"Post of {callback.what} to {callback.shown_url} {outcome.error}; giving up "
            f"after {callback.attempts} attempt(s) (kept as a dead letter)",
            message_id=callback.message_id,
        )
        delay = self._delay(callback.attempts, outcome)
        try:
            await self.store.kill(
                callback.qid, callback.id, callback.owner, now + delay, callback.fields()
            )
        except Exception as exc:
            if direct:
                raise CallbackNotQueued(str(exc)) from exc
            raise

    # -- the worker -----------------------------------------------------------------------

    def _wake_at(self, when: float) -> None:
        """Look for due queues at ``when`` (or sooner, if already planned)."""
        if not self._running:
            return
        if self._timer is not None and self._timer.active():
            if self._timer_at is not None and self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.clock.callLater(max(when - self.clock.seconds(), 0), self._woken)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _woken(self) -> None:
        self._timer = None
        self._timer_at = None
        self.tick().addErrback(lambda f: log.failure("Callback worker failed", f))

    def tick(self) -> Deferred:
        """Start delivering every due queue; fires once they have been claimed."""
        ticking = Deferred.fromCoroutine(self._tick())
        if not ticking.called:
            self._ticks.add(ticking)
            ticking.addBoth(lambda result: (self._ticks.discard(ticking), result)[1])
        return ticking

    def idle(self) -> Deferred:
        """Fires once the worker has nothing in hand (for tests and shutdown): no look
        for due queues and no delivery under way."""
        return Deferred.fromCoroutine(self._idle())

    async def _idle(self) -> None:
        while self._ticks or self._active:
            await DeferredList([*self._ticks, *self._active.values()], consumeErrors=True)

    async def _tick(self) -> None:
        if self._ticking:
            self._tick_again = True
            return
        self._ticking = True
        try:
            while self._running:
                self._tick_again = False
                now = self.clock.seconds()
                try:
                    qids = await self.store.claim(now, now + self.lease, self.batch)
                    for qid in qids:
                        if qid not in self._active:
                            self._drain(qid)
                    upcoming = await self.store.next_due()
                except Exception as exc:  # noqa: BLE001 - Redis away: look again later
                    log.info("Cannot look for due callbacks now: {error}", error=exc)
                    self._wake_at(self.clock.seconds() + self.poll_interval)
                    return
                if len(qids) >= self.batch or self._tick_again:
                    continue
                later = self.clock.seconds() + self.poll_interval
                self._wake_at(later if upcoming is None else min(upcoming, later))
                return
        finally:
            self._ticking = False

    def _drain(self, qid: str) -> None:
        done = Deferred.fromCoroutine(self._deliver_queue(qid))

        def finished(result: Any) -> None:
            self._active.pop(qid, None)
            if hasattr(result, "getErrorMessage"):
                log.info(
                    "Callbacks of {qid} stopped: {error}; trying again once due",
                    qid=qid,
                    error=result.getErrorMessage(),
                )

        if not done.called:
            self._active[qid] = done
        done.addBoth(finished)

    async def _deliver_queue(self, qid: str) -> None:
        """Deliver a queue's callbacks in order until one must wait (or none is left)."""
        secrets: dict[str | None, str | None] = {}
        while self._running:
            record = await self.store.head(qid)
            if record is None:
                self.blocked.discard(qid)
                return
            callback = _Callback.from_record(record)
            owner_log = self.log_of(callback.owner)
            if callback.signer not in secrets:
                secrets[callback.signer] = await self._secret(callback.signer)
            outcome = await self._attempt(callback, secrets[callback.signer])
            now = self.clock.seconds()
            if outcome.ok:
                await self.store.delivered(qid, callback.id, now + self.lease)
                owner_log.info(
                    f"Post of {callback.what} to {callback.shown_url} delivered at attempt "
                    f"{callback.attempts}",
                    message_id=callback.message_id,
                )
                continue
            if not outcome.retryable:
                owner_log.error(
                    f"Post of {callback.what} to {callback.shown_url} {outcome.error}; not "
                    "retried (kept as a dead letter)",
                    message_id=callback.message_id,
                    status_code=outcome.status,
                )
                await self.store.kill(qid, callback.id, callback.owner, now, callback.fields())
                continue  # the receiver answers: the next one can go now
            delay = self._delay(callback.attempts, outcome)
            if self._exhausted(callback, now, delay):
                await self._give_up(callback, now, owner_log, outcome, direct=False)
                await self._expire_behind(qid, now, owner_log)
                self._wake_at(now + delay)
                return
            owner_log.error(
                f"Post of {callback.what} to {callback.shown_url} {outcome.error}; retrying "
                f"in {delay:.1f}s (attempt {callback.attempts} of {callback.max_attempts})",
                message_id=callback.message_id,
                **({"status_code": outcome.status} if outcome.status else {}),
            )
            await self.store.retry_at(qid, callback.id, now + delay, callback.attempt_fields())
            self._wake_at(now + delay)
            return

    async def _expire_behind(self, qid: str, now: float, owner_log: Any) -> None:
        """After giving up on a callback whose receiver keeps failing, give up at once
        on those behind it that are already past their max age."""
        while True:
            record = await self.store.head(qid)
            if record is None:
                self.blocked.discard(qid)
                return
            callback = _Callback.from_record(record)
            if now - callback.queued <= callback.max_age:
                return
            callback.last_error = "older than callback_max_age while its receiver kept failing"
            owner_log.error(
                f"Post of {callback.what} to {callback.shown_url} given up without an attempt: "
                "older than callback_max_age while its receiver keeps failing",
                message_id=callback.message_id,
            )
            await self.store.kill(qid, callback.id, callback.owner, now, callback.fields())

    async def _secret(self, channel_id: str | None) -> str | None:
        if not channel_id or self.secrets is None:
            return None
        # A failure stops this queue's delivery until it is due again: a callback that
        # should be signed is never sent unsigned.
        return await self.secrets(channel_id)

    # -- dead letters ---------------------------------------------------------------------

    async def replay(self, owner: str, ids: list[str] | None) -> int:
        """Queue dead letters (``ids``, or all) again, behind what waits for their URL;
        returns how many."""
        now = self.clock.seconds()
        qids = await self.store.replay(owner, now, self._order(now), ids)
        self.blocked.update(qids)
        if qids:
            self._wake_at(now)
        return len(qids)
