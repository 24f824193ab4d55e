"""Channel type ``dmark``: USSD sessions from the Dmark aggregator, over HTTP.

Dmark calls the channel once per step of a USSD session (GET, POST or PUT on
``web_path``). Each call becomes one inbound message and the HTTP request is
held open until the application's reply (an outbound message whose
``in_reply_to`` is that inbound's ``message_id``) comes back through the bus;
the reply is the HTTP response::

    {"responseString": "<reply content>", "action": "request" | "end"}

``end`` when the reply closes the session (``session_event: "close"``).
Whether a call starts a session (``new``) or continues one (``resume``) is
decided by a record per ``transactionId`` in Redis that expires after
``ussd_session_timeout`` seconds. An application that does not answer within
``request_timeout`` seconds gets the aggregator a timeout response instead.

The pure parts (parameter parsing, the response body, status edge detection)
are plain functions and classes; ``DmarkUssdChannel`` ties them to the HTTP
listener, Redis and the bus.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from junebug import messages
from junebug.transports.base import Transport
from junebug.transports.common import VUMI_BASE_CONFIG

#: Parameters Dmark sends with every request. ``response`` is "false" when the
#: session starts; it is required but otherwise ignored, as in the original.
EXPECTED_PARAMETERS = (
    "transactionId",
    "msisdn",
    "ussdServiceCode",
    "transactionTime",
    "ussdRequestString",
    "creationTime",
    "response",
)

ACTION_CONTINUE = "request"
ACTION_END = "end"

#: Status components, as in the original (plus ``web`` for the listener itself).
COMPONENT_WEB = "web"
COMPONENT_REQUEST = "request"
COMPONENT_RESPONSE = "response"

METHODS = (b"GET", b"POST", b"PUT")


# -- the config ----------------------------------------------------------------------------

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["web_path"],
    "additionalProperties": False,
    "properties": {
        **VUMI_BASE_CONFIG,
        "web_path": {
            "type": "string",
            "minLength": 1,
            "description": "Path Dmark calls for each step of a session, e.g. /ussd/dmark",
        },
        "web_port": {
            "type": "integer",
            "minimum": 0,
            "maximum": 65535,
            "default": 0,
            "description": "TCP port to listen on; 0 picks a free port (not proxyable)",
        },
        "web_interface": {
            "type": "string",
            "default": "",
            "description": "Interface to listen on; empty means all interfaces",
        },
        "web_username": {
            "type": ["string", "null"],
            "default": None,
            "description": "With web_password: HTTP Basic auth user Dmark must send",
        },
        "web_password": {
            "type": ["string", "null"],
            "default": None,
            "description": "With web_username: HTTP Basic auth password Dmark must send",
        },
        "web_auth_domain": {
            "type": "string",
            "default": "Vumi HTTP RPC transport",
            "description": "Realm named in the Basic auth challenge",
        },
        "health_path": {
            "type": "string",
            "minLength": 1,
            "default": "health",
            "description": 'Path answering GET with {"pending_requests": <n>}',
        },
        "request_timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 240,
            "description": "Seconds to wait for the application's reply before answering "
            "Dmark with the timeout response",
        },
        "request_timeout_status_code": {
            "type": "integer",
            "minimum": 100,
            "maximum": 599,
            "default": 504,
            "description": "HTTP status of the timeout response",
        },
        "request_timeout_body": {
            "type": "string",
            "default": "",
            "description": "Body of the timeout response",
        },
        "request_cleanup_interval": {
            "type": "number",
            "default": 5,
            "description": "Accepted for compatibility: each request has its own timer, "
            "so no periodic sweep is needed",
        },
        "noisy": {
            "type": "boolean",
            "default": False,
            "description": "Log every request and response in the channel log",
        },
        "validation_mode": {
            "enum": ["strict", "permissive"],
            "default": "strict",
            "description": "strict refuses unexpected parameters; permissive only "
            "refuses missing ones",
        },
        "response_time_degraded": {
            "type": "number",
            "minimum": 0,
            "default": 1.0,
            "description": "Seconds; replies slower than this make the response status degraded",
        },
        "response_time_down": {
            "type": "number",
            "minimum": 0,
            "default": 10.0,
            "description": "Seconds; replies slower than this make the response status down",
        },
        "ussd_session_timeout": {
            "type": "integer",
            "minimum": 1,
            "default": 600,
            "description": "Seconds a session is remembered after it starts (not "
            "extended by later steps)",
        },
        "fix_to_addr": {
            "type": "boolean",
            "default": False,
            "description": "Wrap a bare service code (no leading * or trailing #) as "
            "*<code># in to_addr",
        },
        "redis_manager": {
            "type": "object",
            "default": {},
            "description": "Accepted for compatibility and ignored: sessions are kept "
            "in the gateway's own Redis",
        },
    },
}

#: Every key's default, read from the schema (the one place defaults are declared).
DEFAULTS: dict[str, Any] = {
    key: spec["default"] for key, spec in CONFIG_SCHEMA["properties"].items() if "default" in spec
}


# -- parsing requests ----------------------------------------------------------------------


@attrs.frozen
class DmarkRequest:
    """The parameters of one valid Dmark request, decoded."""

    transaction_id: str
    msisdn: str
    service_code: str
    transaction_time: str
    request_string: str
    creation_time: str
    response: str


class InvalidRequest(Exception):
    """A request Dmark should not have sent; ``body`` is the JSON answered with 400."""

    def __init__(self, kind: str, description: str, body: dict[str, Any]) -> None:
        super().__init__(description)
        #: Status type: ``invalid_inbound_fields`` or ``invalid_encoding``.
        self.kind = kind
        self.description = description
        self.body = body


def _describe_request(request: Any) -> dict[str, Any]:
    """What an undecodable request looked like, as JSON-safe text."""

    def text(value: bytes) -> str:
        return value.decode("utf-8", "backslashreplace")

    request.content.seek(0)
    return {
        "uri": text(request.uri),
        "method": text(request.method),
        "path": text(request.path),
        "content": text(request.content.read()),
        "headers": {
            text(name): [text(value) for value in values]
            for name, values in request.requestHeaders.getAllRawHeaders()
        },
    }


def parse_parameters(args: Mapping[bytes, list[bytes]], validation_mode: str) -> DmarkRequest:
    """The request's parameters (first value of each), or raise ``InvalidRequest``.

    ``args`` is Twisted's ``request.args`` (query string plus form-encoded body).
    The InvalidRequest for missing or unexpected parameters has ``body``
    ``{"missing_parameter": [...], "unexpected_parameter": [...]}`` (only the
    lists that are not empty); an undecodable one raises ``UnicodeDecodeError``.
    """
    values = {
        name.decode("utf-8"): given[0].decode("utf-8") for name, given in args.items() if given
    }
    errors: dict[str, list[str]] = {}
    missing = [name for name in EXPECTED_PARAMETERS if name not in values]
    if missing:
        errors["missing_parameter"] = missing
    if validation_mode == "strict":
        unexpected = sorted(name for name in values if name not in EXPECTED_PARAMETERS)
        if unexpected:
            errors["unexpected_parameter"] = unexpected
    if errors:
        problems = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in errors.items())
        raise InvalidRequest("invalid_inbound_fields", f"Invalid request ({problems})", errors)
    return DmarkRequest(
        transaction_id=values["transactionId"],
        msisdn=values["msisdn"],
        service_code=values["ussdServiceCode"],
        transaction_time=values["transactionTime"],
        request_string=values["ussdRequestString"],
        creation_time=values["creationTime"],
        response=values["response"],
    )


def to_address(service_code: str, fix_to_addr: bool) -> str:
    """The inbound ``to_addr``: the service code, as ``*<code>#`` when fixing a bare one."""
    if fix_to_addr and not (service_code.startswith("*") or service_code.endswith("#")):
        return f"*{service_code}#"
    return service_code


def response_body(content: str, end_session: bool) -> bytes:
    """The JSON Dmark expects in answer to a request."""
    action = ACTION_END if end_session else ACTION_CONTINUE
    return json.dumps({"responseString": content, "action": action}).encode("ascii")


# -- the HTTP side -------------------------------------------------------------------------


@attrs.define
class _Pending:
    """A request held open until the application replies."""

    request: Any
    received_at: float
    timer: Any
    transaction_id: str


class _DmarkResource(Resource):
    isLeaf = True

    def __init__(self, channel: DmarkUssdChannel) -> None:
        super().__init__()
        self.channel = channel

    def render(self, request: Any) -> Any:
        return self.channel.render(request)


class _Connections(WrappingFactory):
    """Remembers open HTTP connections so that stopping the channel can close them."""

    noisy = False

    def __init__(self, factory: Any) -> None:
        super().__init__(factory)
        self._closing: dict[Any, Deferred] = {}

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        closed = self._closing.pop(protocol, None)
        if closed is not None:
            closed.callback(None)

    def close_all(self) -> Deferred:
        waiting = []
        for protocol in list(self.protocols):
            closed = self._closing[protocol] = Deferred()
            waiting.append(closed)
            protocol.loseConnection()
        return DeferredList(waiting)


class DmarkUssdChannel(Transport):
    """The ``dmark`` channel type (vumi's ``DmarkUssdTransport``)."""

    transport_type = "ussd"
    CONFIG_SCHEMA = CONFIG_SCHEMA
    SECRET_KEYS = Transport.SECRET_KEYS | {"web_password"}
    PROVIDER = "dmark"

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        problems = []
        if (config.get("web_username") is None) != (config.get("web_password") is None):
            problems.append("web_username and web_password must be given together")
        settings = {**DEFAULTS, **config}
        if _normalise_path(settings["web_path"]) == _normalise_path(settings["health_path"]):
            problems.append("web_path and health_path must differ")
        if settings["response_time_degraded"] > settings["response_time_down"]:
            problems.append("response_time_degraded must not exceed response_time_down")
        return problems

    @classmethod
    def web_endpoint(cls, config: dict[str, Any]) -> tuple[str, int] | None:
        """(web_path, web_port); None when the port is picked at random (0)."""
        port = config.get("web_port", DEFAULTS["web_port"])
        if not port or not config.get("web_path"):
            return None
        return config["web_path"], port

    def __init__(self, context: Any, config: dict[str, Any]) -> None:
        super().__init__(context, config)
        self.settings = {**DEFAULTS, **config}
        self.log.secret_keys |= self.SECRET_KEYS
        self.web_path = _normalise_path(self.settings["web_path"])
        self.health_path = _normalise_path(self.settings["health_path"])
        self.redis = context.redis
        self.pending: dict[str, _Pending] = {}
        self.port: Any = None
        self.connections: _Connections | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def setup(self) -> None:
        if self.redis is None:
            raise RuntimeError("the dmark channel type needs Redis (TransportContext.redis)")
        site = Site(_DmarkResource(self))
        site.noisy = False
        site.displayTracebacks = False
        self.connections = _Connections(site)
        endpoint = TCP4ServerEndpoint(
            self.context.reactor,
            self.settings["web_port"],
            interface=self.settings["web_interface"],
        )
        try:
            self.port = await endpoint.listen(self.connections)
        except Exception as exc:
            await self.status(COMPONENT_WEB, "down", "listen_failed", f"Could not listen: {exc}")
            raise
        address = self.port.getHost()
        self.log.info(
            f"Listening for Dmark USSD requests on {address.host}:{address.port}{self.web_path}"
        )
        await self.status(
            COMPONENT_WEB,
            "ok",
            "listening",
            "Listening for requests",
            {"host": address.host, "port": address.port, "path": self.web_path},
        )

    async def teardown(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        for request_id in list(self.pending):
            pending = self._take(request_id)
            self.log.warning(
                "Channel stopping: answering the request with 503", message_id=request_id
            )
            _answer(pending.request, 503, b"", "text/plain")
        if self.connections is not None:
            await self.connections.close_all()
            self.connections = None

    # -- requests from Dmark -----------------------------------------------------------

    def render(self, request: Any) -> Any:
        """Answer (or hold) one HTTP request; returns bytes or NOT_DONE_YET."""
        path = _normalise_path(request.path.decode("utf-8", "replace"))
        if path == self.health_path and request.method == b"GET":
            return _json(request, 200, {"pending_requests": len(self.pending)})
        if path != self.web_path:
            return _json(request, 404, {"error": "not found"})
        if request.method not in METHODS:
            request.setHeader(b"Allow", b", ".join(METHODS))
            return _json(request, 405, {"error": "method not allowed"})
        if not self._authorised(request):
            realm = self.settings["web_auth_domain"].replace('"', "")
            request.setHeader(b"WWW-Authenticate", f'Basic realm="{realm}"'.encode())
            return _json(request, 401, {"error": "unauthorised"})
        try:
            parsed = parse_parameters(request.args, self.settings["validation_mode"])
        except UnicodeDecodeError:
            details = {"request": _describe_request(request)}
            error = InvalidRequest(
                "invalid_encoding", "Invalid encoding", {"invalid_request": details["request"]}
            )
            return self._refuse(request, error, "Invalid encoding", details)
        except InvalidRequest as error:
            return self._refuse(request, error, "Invalid inbound fields", error.body)
        return self._accept(request, parsed)

    def _authorised(self, request: Any) -> bool:
        username = self.settings["web_username"]
        if username is None:
            return True
        user_ok = hmac.compare_digest(request.getUser(), username.encode("utf-8"))
        password_ok = hmac.compare_digest(
            request.getPassword(), self.settings["web_password"].encode("utf-8")
        )
        return user_ok and password_ok

    def _refuse(
        self, request: Any, error: InvalidRequest, status_message: str, details: dict
    ) -> bytes:
        self.log.warning(f"Refused a request from Dmark: {error.description}", problems=error.body)
        self._status_later(COMPONENT_REQUEST, "down", error.kind, status_message, details)
        return _json(request, 400, error.body)

    def _accept(self, request: Any, parsed: DmarkRequest) -> Any:
        request_id = messages.new_id()
        timer = self.clock.callLater(self.settings["request_timeout"], self._timed_out, request_id)
        self.pending[request_id] = _Pending(
            request=request,
            received_at=self.clock.seconds(),
            timer=timer,
            transaction_id=parsed.transaction_id,
        )
        request.notifyFinish().addErrback(lambda _: self._client_gone(request_id))
        if self.settings["noisy"]:
            self.log.info(f"Request from Dmark: {attrs.asdict(parsed)}", message_id=request_id)
        self._status_later(COMPONENT_REQUEST, "ok", "request_parsed", "Request parsed")
        Deferred.fromCoroutine(self._publish_request(request_id, parsed)).addErrback(
            self._publish_failed, request_id
        )
        return NOT_DONE_YET

    async def _publish_request(self, request_id: str, parsed: DmarkRequest) -> None:
        started = await self._start_or_resume(parsed.transaction_id)
        await self.publish_inbound(
            message_id=request_id,
            to_addr=to_address(parsed.service_code, self.settings["fix_to_addr"]),
            from_addr=parsed.msisdn,
            provider=self.PROVIDER,
            session_event=messages.SESSION_NEW if started else messages.SESSION_RESUME,
            content=None if started else parsed.request_string,
            helper_metadata={"session_id": parsed.transaction_id},
            transport_metadata={
                "dmark_ussd": {
                    "transaction_id": parsed.transaction_id,
                    "transaction_time": parsed.transaction_time,
                    "creation_time": parsed.creation_time,
                }
            },
        )

    def _publish_failed(self, failure: Failure, request_id: str) -> None:
        self.log.error(
            "Could not pass the request on to the application",
            message_id=request_id,
            failure=failure,
        )
        pending = self._take(request_id)
        if pending is not None:
            _answer(pending.request, 503, b"", "text/plain")

    # -- sessions ----------------------------------------------------------------------

    def session_key(self, transaction_id: str) -> str:
        return f"{self.context.redis_prefix}{self.channel_id}:dmark:session:{transaction_id}"

    async def _start_or_resume(self, transaction_id: str) -> bool:
        """Record the session if it is new; True when this request started it."""
        record = messages.to_json(
            {"transaction_id": transaction_id, "created_at": self.clock.seconds()}
        )
        created = await self.redis.set(
            self.session_key(transaction_id),
            record,
            expire=self.settings["ussd_session_timeout"],
            only_if_not_exists=True,
        )
        return created is not None

    # -- replies from the application ----------------------------------------------------

    async def handle_outbound(self, message: dict[str, Any]) -> None:
        message_id = message["message_id"]
        missing = [name for name in ("in_reply_to", "content") if not message.get(name)]
        if missing:
            reason = f"Missing fields: {', '.join(missing)}"
            self.log.warning(f"Cannot send the reply: {reason}", message_id=message_id)
            await self.publish_nack(message_id, reason)
            return
        request_id = message["in_reply_to"]
        pending = self._take(request_id)
        if pending is None:
            reason = "Could not find original request."
            self.log.warning(
                f"No request from Dmark is waiting for reply {message_id} to {request_id} "
                "(already answered, timed out, or never received)",
                message_id=message_id,
            )
            await self.publish_nack(message_id, reason)
            return
        end_session = message.get("session_event") == messages.SESSION_CLOSE
        body = response_body(message["content"], end_session)
        _answer(pending.request, 200, body, "text/plain")
        if self.settings["noisy"]:
            self.log.info(f"Response to Dmark: {body.decode('ascii')}", message_id=message_id)
        await self.publish_ack(message_id, message_id)
        await self._response_status(self.clock.seconds() - pending.received_at)
        if end_session:
            await self.redis.delete(self.session_key(pending.transaction_id))

    async def _response_status(self, response_time: float) -> None:
        details = {"response_time": response_time}
        down, degraded = (
            self.settings["response_time_down"],
            self.settings["response_time_degraded"],
        )
        if response_time > down:
            await self.status(
                COMPONENT_RESPONSE,
                "down",
                "very_slow_response",
                "Very slow response",
                details,
                [f"Response took longer than {down:f}s"],
            )
        elif response_time > degraded:
            await self.status(
                COMPONENT_RESPONSE,
                "degraded",
                "slow_response",
                "Slow response",
                details,
                [f"Response took longer than {degraded:f}s"],
            )
        else:
            await self.status(COMPONENT_RESPONSE, "ok", "response_sent", "Response sent", details)

    def _timed_out(self, request_id: str) -> None:
        pending = self.pending.pop(request_id, None)
        if pending is None:
            return
        timeout = self.settings["request_timeout"]
        self.log.error(
            f"The application did not reply within {timeout}s: answered Dmark with "
            f"HTTP {self.settings['request_timeout_status_code']}",
            message_id=request_id,
        )
        _answer(
            pending.request,
            self.settings["request_timeout_status_code"],
            self.settings["request_timeout_body"].encode("utf-8"),
            "text/plain",
        )
        self._status_later(
            COMPONENT_RESPONSE,
            "down",
            "timeout",
            "Response timed out",
            {"response_time": self.clock.seconds() - pending.received_at},
            [f"Response took longer than {timeout:f}s"],
        )

    def _client_gone(self, request_id: str) -> None:
        if self._take(request_id) is not None:
            self.log.warning(
                "Dmark closed the connection before the application replied",
                message_id=request_id,
            )

    def _take(self, request_id: str) -> _Pending | None:
        pending = self.pending.pop(request_id, None)
        if pending is not None and pending.timer.active():
            pending.timer.cancel()
        return pending

    # -- statuses ----------------------------------------------------------------------

    async def status(
        self,
        component: str,
        level: str,
        type: str,
        message: str,
        details: dict[str, Any] | None = None,
        reasons: list[str] | None = None,
    ) -> None:
        """Publish a status unless the edge detector says it is nothing new."""
        await self.publish_status(
            component, level, type, message, details, reasons=reasons, only_changes=True
        )

    def _status_later(self, *args: Any) -> None:
        """``status`` from synchronous code: failures are logged, not raised."""
        Deferred.fromCoroutine(self.status(*args)).addErrback(
            lambda failure: self.log.error("Could not publish a status", failure=failure)
        )


def _normalise_path(path: str) -> str:
    return "/" + path.strip("/")


def _json(request: Any, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("ascii")


def _answer(request: Any, code: int, body: bytes, content_type: str) -> None:
    """Finish a held request, unless Dmark already went away."""
    if request.finished or request._disconnected:
        return
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type.encode("ascii"))
    request.write(body)
    request.finish()
