"""The Klein application: every route module registered, every error in the envelope."""

from __future__ import annotations

import json
from typing import Any

import txredisapi
from klein import Klein
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException

from junebug.api import channels, deadletters, health, messages, openapi, queue
from junebug.api import routers as router_routes
from junebug.api.envelope import respond
from junebug.api.errors import JunebugError, StoreUnavailable
from junebug.api.operations import Operation

log = Logger()


class JunebugApi:
    def __init__(self, manager: Any, backends: Any, routers: Any = None) -> None:
        self.manager = manager
        #: The RouterManager (None: the router routes answer that routers are unavailable).
        self.routers = routers
        self.backends = backends
        self.config = backends.config
        self.app = Klein()
        self.operations: list[Operation] = []
        for module in (channels, messages, queue, deadletters, router_routes, health):
            module.register(self)
        self.app.route("/openapi.json", methods=["GET"])(self._openapi)
        self.app.handle_errors(JunebugError)(self._junebug_error)
        self.app.handle_errors(HTTPException)(self._http_error)
        self.app.handle_errors(txredisapi.ConnectionError)(self._store_unavailable)
        self.app.handle_errors(Exception)(self._unexpected_error)

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
        return self.app.route(path, methods=[method], strict_slashes=strict_slashes)

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
        return self.app.resource()

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
