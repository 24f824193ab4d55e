"""The SMSC simulator as a child process, for tests of code that speaks SMPP.

::

    from junebug.testing.smsc import SmscProcess

    async def test_my_channel():
        async with SmscProcess(system_id="smppclient", password="secret", dr_delay=0) as smsc:
            ...  # point the ESME at 127.0.0.1:smsc.port
            submits = await smsc.wait_for_submits(1)
            await smsc.send_mo("27831234567", "12345", "hello")

Every helper is a coroutine to ``await`` under a running Twisted reactor (pytest-twisted,
``task.react``); every wait is bounded by ``timeout`` seconds (default 10) and raises
:class:`SmscTimeout` when exceeded. Control API errors raise :class:`SmscControlError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from typing import Any

import treq
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol

__all__ = ["SmscControlError", "SmscProcess", "SmscTimeout"]

READY = re.compile(rb"jb-smsc listening on (\S+):(\d+), control on (http://\S+/)")
DEFAULT_TIMEOUT = 10.0


class SmscTimeout(TimeoutError):
    """The simulator did not start, stop or answer in time."""


class SmscControlError(RuntimeError):
    """The control API answered with an error; ``code`` and ``body`` say which."""

    def __init__(self, code: int, body: Any) -> None:
        message = body.get("error") if isinstance(body, dict) else body
        super().__init__(f"jb-smsc control API answered {code}: {message}")
        self.code = code
        self.body = body


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _within(d: defer.Deferred, seconds: float, what: str) -> defer.Deferred:
    def timed_out(failure: Any) -> Any:
        failure.trap(defer.TimeoutError, defer.CancelledError)
        raise SmscTimeout(f"jb-smsc: {what} took longer than {seconds} s")

    return d.addTimeout(seconds, _reactor()).addErrback(timed_out)


class _Output(ProcessProtocol):
    def __init__(self, owner: SmscProcess) -> None:
        self.owner = owner
        self.buffer = b""
        self.ready: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.output: list[bytes] = []

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.owner._line(line)
            match = READY.search(line)
            if match and not self.ready.called:
                self.ready.callback(match)

    def errReceived(self, data: bytes) -> None:
        self.output.append(data)
        del self.output[:-50]

    def processEnded(self, reason: Any) -> None:
        code = reason.value.exitCode if not reason.check(ProcessDone) else 0
        if not self.ready.called:
            stderr = b"".join(self.output).decode("utf-8", "replace").strip()
            self.ready.errback(RuntimeError(f"jb-smsc exited ({code}) before listening: {stderr}"))
        self.ended.callback(code)


class SmscProcess:
    """``jb-smsc`` in a child process, with async helpers over its control API.

    Keyword options are ``jb-smsc`` flags with underscores (``dr_delay=0``,
    ``id_format="decimal"``, ``throttle_after=5``, ``dr_status=["pending", "delivered"]``,
    ``verbose=True``); ``system_id`` and ``password`` default to ``"smppclient"`` /
    ``"password"``. The SMPP and control ports are always chosen by the system; read
    :attr:`port` and :attr:`control_url` after :meth:`start`. Lines the process prints
    are kept in :attr:`lines`.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, **options: Any) -> None:
        options.setdefault("system_id", "smppclient")
        options.setdefault("password", "password")
        for fixed in ("port", "control_port"):
            if fixed in options:
                raise TypeError(f"SmscProcess chooses {fixed} itself")
        self.options = options
        self.timeout = timeout
        self.host = options.get("interface", "127.0.0.1")
        self.port: int | None = None
        self.control_url: str | None = None
        self.lines: list[str] = []
        self._process: Any = None
        self._output: _Output | None = None

    @property
    def system_id(self) -> str:
        return self.options["system_id"]

    @property
    def password(self) -> str:
        return self.options["password"]

    def command(self) -> list[str]:
        """The command line run: ``jb-smsc`` next to this Python, else ``python -m``."""
        script = os.path.join(os.path.dirname(sys.executable), "jb-smsc")
        if not os.path.exists(script):
            script = shutil.which("jb-smsc") or ""
        argv = [script] if script else [sys.executable, "-m", "junebug.smsc.cli"]
        argv += ["--port", "0", "--control-port", "0"]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is False or value is None:
                continue
            elif isinstance(value, list | tuple):
                argv += [flag, ",".join(str(v) for v in value)]
            else:
                argv += [flag, str(value)]
        return argv

    def _line(self, line: bytes) -> None:
        self.lines.append(line.decode("utf-8", "replace"))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> SmscProcess:
        """Spawn the process and wait for its ready line; return self."""
        if self._process is not None:
            raise RuntimeError("already started")
        argv = self.command()
        self._output = _Output(self)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._process = _reactor().spawnProcess(self._output, argv[0], argv, env=env)
        try:
            match = await _within(self._output.ready, timeout or self.timeout, "starting")
        except BaseException:
            await self.stop()
            raise
        self.host = match.group(1).decode()
        self.port = int(match.group(2))
        self.control_url = match.group(3).decode()
        return self

    async def stop(self, timeout: float | None = None) -> int | None:
        """Terminate the process (SIGTERM, then SIGKILL); return its exit code."""
        if self._process is None or self._output is None:
            return None
        ended = self._output.ended
        if not ended.called:
            with contextlib.suppress(ProcessExitedAlready):
                self._process.signalProcess("TERM")
            try:
                await _within(_chain(ended), timeout or self.timeout, "stopping")
            except SmscTimeout:
                with contextlib.suppress(ProcessExitedAlready):
                    self._process.signalProcess("KILL")
                await _within(_chain(ended), timeout or self.timeout, "being killed")
        return await _chain(ended)

    async def __aenter__(self) -> SmscProcess:
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    # -- control API -------------------------------------------------------------------

    async def request(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> Any:
        """Call the control API; return the decoded JSON answer.

        Raises :class:`SmscControlError` for a non-2xx answer, :class:`SmscTimeout` when
        the whole exchange takes more than ``timeout`` seconds.
        """
        if self.control_url is None:
            raise RuntimeError("jb-smsc is not started")
        seconds = timeout or self.timeout
        data = None if body is None else json.dumps(body).encode("utf-8")

        async def exchange() -> tuple[int, Any]:
            response = await treq.request(
                method,
                self.control_url + path.lstrip("/"),
                data=data,
                headers={b"Content-Type": [b"application/json"]},
                persistent=False,
            )
            content = await treq.content(response)
            return response.code, json.loads(content) if content else None

        code, answer = await _within(
            defer.Deferred.fromCoroutine(exchange()), seconds, f"{method} {path}"
        )
        if not 200 <= code < 300:
            raise SmscControlError(code, answer)
        return answer

    async def status(self) -> dict[str, Any]:
        """``GET /status``: binds, counts, throttled flag and settings."""
        return await self.request("GET", "/status")

    async def submits(self, include_rejected: bool = False) -> list[dict[str, Any]]:
        """``GET /submits``: the recorded submit_sm (accepted ones unless asked)."""
        query = "?include=rejected" if include_rejected else ""
        return await self.request("GET", "/submits" + query)

    async def clear_submits(self) -> None:
        """``DELETE /submits``."""
        await self.request("DELETE", "/submits")

    async def deliveries(self) -> list[dict[str, Any]]:
        """``GET /deliveries``: every deliver_sm sent and the ESME's answer."""
        return await self.request("GET", "/deliveries")

    async def wait_for_bind(self, count: int = 1, timeout: float | None = None) -> dict:
        """Wait for ``count`` receiver/transceiver binds; return the status."""
        seconds = timeout or self.timeout
        status = await self.request(
            "GET", f"/status?bound={count}&timeout={seconds}", timeout=seconds + 5
        )
        receiving = [b for b in status["bound"] if b["bind_type"] in ("receiver", "transceiver")]
        if len(receiving) < count:
            raise SmscTimeout(f"jb-smsc: no {count} receiving bind(s) within {seconds} s")
        return status

    async def wait_for_submits(
        self, count: int = 1, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` submits were accepted; return them all."""
        seconds = timeout or self.timeout
        submits = await self.request(
            "GET", f"/submits?count={count}&timeout={seconds}", timeout=seconds + 5
        )
        if len(submits) < count:
            raise SmscTimeout(f"jb-smsc: {len(submits)} of {count} submits within {seconds} s")
        return submits

    async def wait_for_answers(
        self, count: int = 1, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` deliver_sm were answered; return every delivery."""
        seconds = timeout or self.timeout
        deliveries = await self.request(
            "GET", f"/deliveries?answered={count}&timeout={seconds}", timeout=seconds + 5
        )
        if sum(1 for d in deliveries if d["command_status"]) < count:
            raise SmscTimeout(f"jb-smsc: fewer than {count} deliver_sm answered in {seconds} s")
        return deliveries

    async def send_mo(
        self, from_addr: str, to_addr: str, text: str = "", **options: Any
    ) -> dict[str, Any]:
        """``POST /mo``; options are its body fields (coding, multipart, order,
        ussd_service_op, its_session_info, reference, hex, data_coding, esm_class).
        Returns ``{"sent": n, "sequence_numbers": [...]}``."""
        body = {"from": from_addr, "to": to_addr, "text": text, **options}
        return await self.request("POST", "/mo", body)

    async def send_receipt(
        self, smsc_message_id: str, status: str = "delivered", style: str | None = None
    ) -> dict[str, Any]:
        """``POST /receipt``: a receipt for ``smsc_message_id`` now."""
        body: dict[str, Any] = {"smsc_message_id": smsc_message_id, "status": status}
        if style is not None:
            body["style"] = style
        return await self.request("POST", "/receipt", body)

    async def unbind(self) -> int:
        """``POST /unbind``; return the number of binds told to unbind."""
        return (await self.request("POST", "/unbind"))["unbound"]

    async def drop(self) -> int:
        """``POST /drop``; return the number of connections closed."""
        return (await self.request("POST", "/drop"))["dropped"]

    async def throttle(self, seconds: float) -> None:
        """``POST /throttle``: answer ESME_RTHROTTLED for ``seconds``."""
        await self.request("POST", "/throttle", {"seconds": seconds})

    async def configure(self, **settings: Any) -> dict[str, Any]:
        """``POST /config``; return every setting."""
        return await self.request("POST", "/config", settings)


def _chain(d: defer.Deferred) -> defer.Deferred:
    """A new Deferred with ``d``'s result, leaving ``d`` itself untouched."""
    result: defer.Deferred = defer.Deferred()

    def forward(value: Any) -> Any:
        result.callback(value)
        return value

    if d.called:
        result.callback(d.result)
    else:
        d.addBoth(forward)
    return result
