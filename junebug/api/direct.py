"""Answering the API's requests without Klein's per-request machinery, same answers.

Klein's ``render`` costs about as much again as twisted.web's own handling of a request
(``bench/floors.py``: 306 against 165 µs of CPU per JSON POST): it decodes the URL, binds
a werkzeug adapter, adapts the request to ``IKleinRequest`` and chains five Deferreds
before and after the route's function. For the API's own routes none of that changes
the answer once the URL has been matched, so :class:`DirectResource` remembers, for each
method and path it has seen, the route werkzeug matched and its values, and then calls
the route through Klein's public ``execute_endpoint``, with the API's error handlers (the
same functions it registers with Klein) in Klein's order: the first whose exception types
match answers; one that fails hands its failure to the rest.

Everything else goes to Klein as before: a path werkzeug does not match as it stands
(404, 405, a redirect for a missing slash), a path with percent-escapes, non-ASCII bytes
or empty segments, ``HEAD``, and a ``Host`` Klein would refuse (not UTF-8, or not a
name werkzeug accepts). A connection that closes before the answer cancels the
route's work, as Klein does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from klein._resource import extractURLparts
from twisted.internet.defer import CancelledError, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RequestRedirect

log = Logger()

#: (method, path) pairs remembered; then all are forgotten and it starts again.
MEMORY = 1024

#: An error handler: the exception types it answers, and the function (request, failure).
ErrorHandler = tuple[tuple[type[BaseException], ...], Callable[[Any, Failure], Any]]

_MISS = object()


def _plain(path: bytes) -> bool:
    """Whether werkzeug sees ``path`` exactly as it arrived: ASCII, no escapes to decode,
    no empty segments to merge."""
    return path.isascii() and b"%" not in path and b"//" not in path and path[:1] == b"/"


class DirectResource(Resource):
    """The API's root: remembered routes answered directly, the rest by ``klein``."""

    isLeaf = True

    def __init__(self, app: Any, klein: Resource, error_handlers: Sequence[ErrorHandler]) -> None:
        super().__init__()
        self._app = app
        self._klein = klein
        self._errors = tuple(error_handlers)
        self._routes: dict[tuple[bytes, bytes], Any] = {}
        self._hosts: dict[tuple[Any, ...], bool] = {}
        self._rules = -1

    def render(self, request: Any) -> Any:
        found = self._route(request.method, request.path)
        if found is None or not self._host_ok(request):
            return self._klein.render(request)
        endpoint, values = found
        return self._answer(request, endpoint, values)

    def _host_ok(self, request: Any) -> bool:
        """Whether Klein would route this request's host: its name decodes as UTF-8
        and werkzeug accepts it (IDNA). Klein answers the others itself (400, or
        twisted.web's 500), so they go to Klein. Remembered per host."""
        key = (request.getRequestHostname(), request.getHost().port, request.isSecure())
        ok = self._hosts.get(key)
        if ok is None:
            try:
                _, server_name, _, _, _ = extractURLparts(request)
                self._app.url_map.bind(server_name)
            except Exception:  # noqa: BLE001 - URLDecodeError, werkzeug's BadHost
                ok = False
            else:
                ok = True
            if len(self._hosts) >= MEMORY:
                self._hosts.clear()
            self._hosts[key] = ok
        return ok

    def _route(self, method: bytes, path: bytes) -> tuple[str, dict[str, Any]] | None:
        url_map: Map = self._app.url_map
        rules = len(url_map._rules) if hasattr(url_map, "_rules") else -2  # -2: never kept
        if rules != self._rules:  # a route was added: what was remembered may be wrong
            self._routes.clear()
            self._rules = rules
        key = (method, path)
        found = self._routes.get(key, _MISS)
        if found is _MISS:
            found = self._match(url_map, method, path)
            if rules != -2:
                if len(self._routes) >= MEMORY:
                    self._routes.clear()
                self._routes[key] = found
        return found

    @staticmethod
    def _match(url_map: Map, method: bytes, path: bytes) -> tuple[str, dict[str, Any]] | None:
        if method == b"HEAD" or not _plain(path) or not method.isalpha():
            return None
        try:
            rule, values = url_map.bind("localhost").match(
                path.decode("ascii"), method.decode("ascii"), return_rule=True
            )
        except (HTTPException, RequestRedirect):
            return None
        return rule.endpoint, values

    def _answer(self, request: Any, endpoint: str, values: dict[str, Any]) -> Any:
        finished = False
        answer: Any = None

        def closed(result: Any) -> None:
            nonlocal finished
            finished = True
            if isinstance(result, Failure) and answer is not None:
                answer.cancel()  # the connection went away: stop the route's work

        request.notifyFinish().addBoth(closed)
        answer = maybeDeferred(self._app.execute_endpoint, endpoint, request, **values)
        answer.addErrback(self._failed, request, lambda: finished, self._errors)
        answer.addCallback(self._write, request, lambda: finished)
        answer.addErrback(lambda failure: log.failure("Unhandled error writing an answer", failure))
        return server.NOT_DONE_YET

    def _failed(
        self,
        failure: Failure,
        request: Any,
        finished: Callable[[], bool],
        handlers: Sequence[ErrorHandler],
    ) -> Any:
        if finished():
            if not failure.check(CancelledError):
                log.failure("Unhandled error answering a request", failure)
            return None
        for index, (types, handler) in enumerate(handlers):
            if failure.check(*types):
                answer = maybeDeferred(handler, request, failure)
                return answer.addErrback(self._failed, request, finished, handlers[index + 1 :])
        request.processingFailed(failure)  # no handler matched: twisted.web's own answer
        return None

    @staticmethod
    def _write(answer: Any, request: Any, finished: Callable[[], bool]) -> None:
        if isinstance(answer, str):
            answer = answer.encode("utf-8")
        if isinstance(answer, bytes):
            request.write(answer)
        if not finished():
            request.finish()
