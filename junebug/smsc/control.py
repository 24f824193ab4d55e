"""The simulator's HTTP control API (Klein, JSON in and out).

Every route works on one :class:`~junebug.smsc.simulator.SmscSimulator`, on the same
reactor as its SMPP side. Errors are answered as ``{"error": "<description>"}`` with
status 400 (bad request), 404 (unknown route) or 409 (nothing bound to deliver to).

=========================  ==========================================================
``GET /status``            binds, counts, throttled flag, current settings
                           (``?bound=N&timeout=S`` waits for N receiving binds)
``GET /submits``           accepted submit_sm records (``?include=rejected`` for all;
                           ``?count=N&timeout=S`` waits for N accepted submits)
``DELETE /submits``        forget the recorded submits
``GET /deliveries``        every deliver_sm sent (MO parts, receipts) and its answer
                           (``?answered=N&timeout=S`` waits for N answers)
``POST /mo``               send a mobile-originated message
``POST /receipt``          send a delivery receipt now
``POST /unbind``           SMSC-initiated unbind of every bind
``POST /drop``             close every connection without unbind
``POST /throttle``         answer ESME_RTHROTTLED for ``seconds``
``GET /config``            the current settings
``POST /config``           change settings (partial)
=========================  ==========================================================
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.python.failure import Failure

from junebug.smsc.simulator import SimulatorError, SmscSimulator

__all__ = ["ControlApi", "MO_FIELDS"]

#: POST /mo body field -> SmscSimulator.build_mo keyword.
MO_FIELDS = {
    "text": "text",
    "coding": "coding",
    "multipart": "multipart",
    "ussd_service_op": "ussd_service_op",
    "its_session_info": "its_session_info",
    "order": "order",
    "reference": "reference",
    "hex": "hex_payload",
    "data_coding": "data_coding",
    "esm_class": "esm_class",
}


class _BadRequest(SimulatorError):
    pass


class ControlApi:
    """The Klein app over ``simulator``; serve :meth:`resource` with a ``Site``."""

    app = Klein()

    def __init__(self, simulator: SmscSimulator) -> None:
        self.simulator = simulator

    def resource(self) -> Any:
        return self.app.resource()

    # -- plumbing ----------------------------------------------------------------------

    @staticmethod
    def _json(request: Any, data: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(data).encode("utf-8")

    @staticmethod
    def _body(request: Any) -> dict[str, Any]:
        raw = request.content.read() if request.content is not None else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _BadRequest(f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest("the body must be a JSON object")
        return body

    @app.handle_errors(SimulatorError)
    def _simulator_error(self, request: Any, failure: Failure) -> bytes:
        return self._json(request, {"error": str(failure.value)}, failure.value.status)

    @app.handle_errors(Exception)
    def _unexpected(self, request: Any, failure: Failure) -> bytes:
        from werkzeug.exceptions import HTTPException

        if isinstance(failure.value, HTTPException):
            code = failure.value.code or 500
            return self._json(request, {"error": failure.value.description}, code)
        return self._json(request, {"error": f"internal error: {failure.value!r}"}, 500)

    # -- routes ------------------------------------------------------------------------

    @staticmethod
    def _arg(request: Any, name: str) -> str | None:
        values = request.args.get(name.encode("ascii"))
        return values[0].decode("latin-1") if values else None

    def _wait_args(self, request: Any, name: str) -> tuple[int | None, float]:
        """``?<name>=N&timeout=S``: wait for N of something, at most S seconds (max 60)."""
        count, timeout = self._arg(request, name), self._arg(request, "timeout")
        try:
            number = None if count is None else int(count)
            seconds = 10.0 if timeout is None else float(timeout)
        except ValueError:
            raise _BadRequest(f"{name} must be an integer and timeout a number") from None
        return number, max(0.0, min(seconds, 60.0))

    @app.route("/status", methods=["GET"])
    async def status(self, request: Any) -> bytes:
        bound, timeout = self._wait_args(request, "bound")
        if bound is not None:
            simulator = self.simulator
            await simulator.when(
                lambda: sum(1 for c in simulator.binds if c.receives) >= bound, timeout
            )
        return self._json(request, self.simulator.status())

    @app.route("/submits", methods=["GET"])
    async def submits(self, request: Any) -> bytes:
        count, timeout = self._wait_args(request, "count")
        if count is not None:
            await self.simulator.wait_for_submits(count, timeout)
        include = self._arg(request, "include")
        return self._json(request, self.simulator.submits(include_rejected=include == "rejected"))

    @app.route("/submits", methods=["DELETE"])
    def clear_submits(self, request: Any) -> bytes:
        self.simulator.clear_submits()
        return self._json(request, {"cleared": True})

    @app.route("/deliveries", methods=["GET"])
    async def deliveries(self, request: Any) -> bytes:
        answered, timeout = self._wait_args(request, "answered")
        if answered is not None:
            simulator = self.simulator
            await simulator.when(
                lambda: sum(1 for d in simulator.deliveries() if d["command_status"]) >= answered,
                timeout,
            )
        return self._json(request, self.simulator.deliveries())

    @app.route("/mo", methods=["POST"])
    async def mo(self, request: Any) -> bytes:
        body = self._body(request)
        for key in ("from", "to"):
            if not isinstance(body.get(key), str):
                raise _BadRequest(f"{key!r} is required and must be a string")
        unknown = set(body) - set(MO_FIELDS) - {"from", "to"}
        if unknown:
            raise _BadRequest(f"unknown fields {sorted(unknown)}")
        options = {MO_FIELDS[key]: value for key, value in body.items() if key in MO_FIELDS}
        text = options.pop("text", "")
        if not isinstance(text, str):
            raise _BadRequest("'text' must be a string")
        sequence_numbers = await self.simulator.send_mo(body["from"], body["to"], text, **options)
        return self._json(
            request, {"sent": len(sequence_numbers), "sequence_numbers": sequence_numbers}
        )

    @app.route("/receipt", methods=["POST"])
    async def receipt(self, request: Any) -> bytes:
        body = self._body(request)
        message_id = body.get("smsc_message_id")
        if not isinstance(message_id, str) or not message_id:
            raise _BadRequest("'smsc_message_id' is required and must be a string")
        status = body.get("status", "delivered")
        if not isinstance(status, str):
            raise _BadRequest("'status' must be a string")
        sequence_number = await self.simulator.send_receipt(message_id, status, body.get("style"))
        return self._json(
            request,
            {"sent": 0 if sequence_number is None else 1, "sequence_numbers": [sequence_number]},
        )

    @app.route("/unbind", methods=["POST"])
    def unbind(self, request: Any) -> bytes:
        return self._json(request, {"unbound": self.simulator.unbind_all()})

    @app.route("/drop", methods=["POST"])
    def drop(self, request: Any) -> bytes:
        return self._json(request, {"dropped": self.simulator.drop_all()})

    @app.route("/throttle", methods=["POST"])
    def throttle(self, request: Any) -> bytes:
        body = self._body(request)
        if "seconds" not in body:
            raise _BadRequest("'seconds' is required")
        self.simulator.throttle(body["seconds"])
        return self._json(request, {"throttled": self.simulator.throttled})

    @app.route("/config", methods=["GET"])
    def get_config(self, request: Any) -> bytes:
        return self._json(request, self.simulator.settings.as_json())

    @app.route("/config", methods=["POST"])
    def set_config(self, request: Any) -> bytes:
        return self._json(request, self.simulator.configure(**self._body(request)))
