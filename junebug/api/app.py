"""The Klein application: every route module registered, every error in the envelope."""

from __future__ import annotations

import json
from typing import Any

import txredisapi
from klein import Klein
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter

from junebug.api import channels, deadletters, health, messages, openapi, queue
from junebug.api import routers as router_routes
from junebug.api.direct import DirectResource, ErrorHandler
from junebug.api.envelope import respond
from junebug.api.errors import JunebugError, StoreUnavailable
from junebug.api.operations import Operation

log = Logger()

#: URLs whose routing is remembered (then all are forgotten, and it starts again).
ROUTING_MEMORY = 512


class _RememberingAdapter(MapAdapter):
    """A ``MapAdapter`` that matches its URL once: werkzeug's answer for a URL, method
    and host is the same for every request while the routes stay the same."""

    _found: tuple[Any, dict[str, Any]] | None = None

    def match(  # type: ignore[override]
        self,
        path_info: str | None = None,
        method: str | None = None,
        return_rule: bool = False,
        query_args: Any = None,
        websocket: bool | None = None,
    ) -> tuple[Any, Any]:
        if (path_info, method, query_args, websocket) != (None, None, None, None):
            return super().match(path_info, method, return_rule, query_args, websocket)
        found = self._found
        if found is None:
            # Only a match is kept: NotFound, MethodNotAllowed and redirects are raised
            # again by werkzeug every time.
            found = self._found = super().match(return_rule=True)  # type: ignore[assignment]
        rule, values = found  # type: ignore[misc]
        return (rule if return_rule else rule.endpoint), dict(values)


class RoutingMap(Map):
    """werkzeug's ``Map`` for Klein, remembering for each request URL (host, script
    name, path and method: what ``KleinResource.render`` binds) the adapter it made,
    and so the rule it matched: the second request to a URL costs a dictionary lookup
    instead of a ``bind`` (IDNA-encoding the host) and a match. Adding a rule forgets
    everything. The memory is bounded (``ROUTING_MEMORY``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._adapters: dict[tuple[Any, ...], MapAdapter] = {}

    def add(self, rulefactory: Any) -> None:
        self._adapters.clear()
        super().add(rulefactory)

    def bind(  # type: ignore[override]
        self,
        server_name: str,
        script_name: str | None = None,
        subdomain: str | None = None,
        url_scheme: str = "http",
        default_method: str = "GET",
        path_info: str | None = None,
        query_args: Any = None,
    ) -> MapAdapter:
        if subdomain is not None or query_args is not None:
            return super().bind(
                server_name,
                script_name,
                subdomain,
                url_scheme,
                default_method,
                path_info,
                query_args,
            )
        key = (server_name, script_name, url_scheme, default_method, path_info)
        adapter = self._adapters.get(key)
        if adapter is None:
            made = super().bind(
                server_name,
                script_name,
                url_scheme=url_scheme,
                default_method=default_method,
                path_info=path_info,
            )
            adapter = _RememberingAdapter(
                self,
                made.server_name,
                made.script_name,
                made.subdomain,
                made.url_scheme,
                made.path_info,
                made.default_method,
                made.query_args,
            )
            if len(self._adapters) >= ROUTING_MEMORY:
                self._adapters.clear()
            self._adapters[key] = adapter
        return adapter


def _remembering_klein() -> Klein:
    """A Klein app whose routing map is a ``RoutingMap``; Klein's own map if this Klein
    keeps it elsewhere than it does today (then routing just costs what it costs)."""
    app = Klein()
    current = getattr(app, "_url_map", None)
    if type(current) is Map and app.url_map is current and not list(current.iter_rules()):
        app._url_map = RoutingMap()
    return app


class JunebugApi:
    def __init__(self, manager: Any, backends: Any, routers: Any = None) -> None:
        self.manager = manager
        #: The RouterManager (None: the router routes answer that routers are unavailable).
        self.routers = routers
        self.backends = backends
        self.config = backends.config
        self.app = _remembering_klein()
        self.operations: list[Operation] = []
        for module in (channels, messages, queue, deadletters, router_routes, health):
            module.register(self)
        self.app.route("/openapi.json", methods=["GET"])(self._openapi)
        #: In Klein's order: the first whose types match a failure answers it.
        self.error_handlers: list[ErrorHandler] = [
            ((JunebugError,), self._junebug_error),
            ((HTTPException,), self._http_error),
            ((txredisapi.ConnectionError,), self._store_unavailable),
            ((Exception,), self._unexpected_error),
        ]
        for types, handler in self.error_handlers:
            self.app.handle_errors(*types)(handler)

    def route(
        self,
        path: str,
        method: str,
        summary: str,
        status: int,
        description: str,
        result: dict[str, Any],
        *,
        body: dict[str, Any] | None = None,
        errors: tuple[int, ...] = (400, 404),
        query: tuple[Any, ...] = (),
        answers: tuple[tuple[int, str, dict[str, Any]], ...] = (),
        headers: tuple[Any, ...] = (),
        strict_slashes: bool = True,
        endpoint: str | None = None,
    ) -> Any:
        """Register a Klein route and record it as an operation of the OpenAPI description.

        ``answers`` declares other documented answers as (status, description, result
        schema), e.g. /health's 500 "queues stuck"; ``headers`` request headers it reads.
        """
        self.operations.append(
            Operation(
                path,
                method,
                summary,
                status,
                description,
                result,
                body,
                errors,
                query,
                answers,
                headers,
            )
        )
        # Klein names a route after its function unless told (two routes made by one
        # function need two names).
        named = {} if endpoint is None else {"endpoint": endpoint}
        return self.app.route(path, methods=[method], strict_slashes=strict_slashes, **named)

    def openapi(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            junebug_version = version("junebug")
        except PackageNotFoundError:
            junebug_version = "unknown"
        return openapi.build(self.operations, junebug_version)

    def _openapi(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self.openapi(), indent=1).encode()

    def resource(self) -> Any:
        """The API's root resource: Klein's, with the routes it has matched before
        answered without its per-request machinery (``api/direct.py``)."""
        return DirectResource(self.app, self.app.resource(), self.error_handlers)

    @staticmethod
    def _junebug_error(request: Any, failure: Any) -> bytes:
        error = failure.value
        return respond(request, error.status, error.description, {"errors": error.errors})

    @staticmethod
    def _http_error(request: Any, failure: Any) -> bytes:
        error = failure.value
        detail = {"code": error.code, "type": type(error).__name__, "message": error.description}
        new_url = getattr(error, "new_url", None)
        if new_url:
            request.setHeader(b"Location", new_url.encode())
            detail["new_url"] = new_url
        return respond(request, error.code, error.name.lower(), {"errors": [detail]})

    @staticmethod
    def _store_unavailable(request: Any, failure: Any) -> bytes:
        log.warn("Redis unavailable answering {uri}: {error}", uri=request.uri, error=failure.value)
        error = StoreUnavailable(f"Redis is unavailable ({failure.value}); try again shortly")
        return respond(request, error.status, error.description, {"errors": error.errors})

    @staticmethod
    def _unexpected_error(request: Any, failure: Any) -> bytes:
        log.failure("Unexpected error answering {uri}", failure, uri=request.uri)
        detail = {"type": failure.type.__name__, "message": "internal error; see the jb log"}
        return respond(request, 500, "generic error", {"errors": [detail]})
