"""The Klein application: every route module registered, every error in the envelope."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException

from junebug.api import channels, health, messages
from junebug.api.envelope import respond
from junebug.api.errors import JunebugError

log = Logger()


class JunebugApi:
    def __init__(self, manager: Any, backends: Any) -> None:
        self.manager = manager
        self.backends = backends
        self.config = backends.config
        self.app = Klein()
        for module in (channels, messages, health):
            module.register(self.app, self)
        self.app.handle_errors(JunebugError)(self._junebug_error)
        self.app.handle_errors(HTTPException)(self._http_error)
        self.app.handle_errors(Exception)(self._unexpected_error)

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
    def _unexpected_error(request: Any, failure: Any) -> bytes:
        log.failure("Unexpected error answering {uri}", failure, uri=request.uri)
        detail = {"type": failure.type.__name__, "message": "internal error; see the jb log"}
        return respond(request, 500, "generic error", {"errors": [detail]})
