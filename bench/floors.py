"""What the building blocks cost on this machine: the floor under jb's CPU per message.

Each SMPP message through jb is one HTTP request answered (the API's POST) and two HTTP
requests made (its ``submitted`` and ``delivery_succeeded`` callbacks), plus Redis
commands. This script measures, in one run and alternating so that every row sees the
same machine, the CPU one such exchange costs with each library on its own, with nothing
of Junebug around it:

- answering a JSON POST: a bare ``twisted.web`` resource, the same behind Klein, and an
  ``h11`` protocol; the load comes from ``wrk`` (C, in its own process), so only the
  server's CPU is counted;
- making a JSON POST (16 in flight, persistent connections): treq, junebug's
  ``CallbackPoster``, and an ``h11`` protocol; the receiver is nginx when it is
  installed (C), otherwise the h11 server in its own process;
- both again with ``httptools`` (C bindings to llhttp, the fastest HTTP parser Python
  can use from Twisted; a project dependency, which jb's callback client parses with);
- a Redis command (16 in flight) against 127.0.0.1:6379 through txredisapi with its own
  (Python) reply parser, through txredisapi with hiredis's, and through junebug's
  connection (``store.redis.connect``: hiredis, commands built in one join, sent
  straight to the connection).

From those it prints the ceiling they put on messages per second per core: 1 / (one
answered + two made exchanges), before any Redis, SMPP, bus or JSON work.

    .venv/bin/python bench/floors.py                 # 3 rounds of each
    .venv/bin/python bench/floors.py --rounds 5 --seconds 5 --json floors.json

``wrk`` and ``nginx`` come from Debian's packages (``apt-get install wrk nginx-light``);
without wrk the server rows are skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HOST, free_port, json_post_server, machine_info  # noqa: E402

#: The body an application sends to ``POST /channels/{id}/messages/``.
API_BODY = b'{"to": "+27123456789", "content": "hello world", "event_url": "http://127.0.0.1:9/e"}'
#: The body of an event callback.
EVENT_BODY = (
    b'{"message_id": "0123456789abcdef0123456789abcdef", "event_type": "submitted", '
    b'"timestamp": "2026-11-27 00:00:00.000000", "channel_id": "bench", "event_details": {}}'
)
IN_FLIGHT = 16
SERVERS = ("twisted.web", "klein", "h11", "httptools")
CLIENTS = ("treq", "junebug CallbackPoster", "h11", "httptools")
#: Rows that need a package the project does not depend on (skipped without it).
OPTIONAL = {"h11": "h11", "httptools": "httptools"}


# -- the roles, each run in a child process ------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def print_in_flight_cost(one: Any, count: int) -> None:
    """Run ``one()`` 200 times to warm up, then ``count`` times (rounded down to a
    multiple of IN_FLIGHT) with IN_FLIGHT at a time; print CPU µs per call and calls per
    second as JSON (what the conductor reads)."""
    from twisted.internet import defer

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    await worker(200)
    started, cpu = time.perf_counter(), cpu_seconds()
    await defer.gatherResults(
        [defer.Deferred.fromCoroutine(worker(count // IN_FLIGHT)) for _ in range(IN_FLIGHT)]
    )
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - started
    done = count // IN_FLIGHT * IN_FLIGHT
    print(json.dumps({"cpu_us": cpu / done * 1e6, "per_second": done / wall}), flush=True)


def serve(kind: str, port: int) -> None:
    """Answer JSON POSTs with 201 and a JSON envelope until SIGTERM."""
    from twisted.internet import reactor

    def answer(body: bytes) -> bytes:
        return json.dumps({"status": 201, "result": json.loads(body)}).encode()

    if kind == "h11":
        import h11
        from twisted.internet.protocol import Factory, Protocol

        class H11Server(Protocol):
            def connectionMade(self) -> None:
                self.conn = h11.Connection(h11.SERVER)
                self.body: list[bytes] = []

            def dataReceived(self, data: bytes) -> None:
                self.conn.receive_data(data)
                while True:
                    event = self.conn.next_event()
                    if event is h11.NEED_DATA or event is h11.PAUSED:
                        return
                    if isinstance(event, h11.Data):
                        self.body.append(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        out = answer(b"".join(self.body))
                        self.body = []
                        headers = [
                            ("Content-Type", "application/json"),
                            ("Content-Length", str(len(out))),
                        ]
                        self.transport.write(
                            self.conn.send(h11.Response(status_code=201, headers=headers))
                            + self.conn.send(h11.Data(data=out))
                            + self.conn.send(h11.EndOfMessage())
                        )
                        self.conn.start_next_cycle()
                    elif isinstance(event, h11.ConnectionClosed):
                        return

        factory = Factory.forProtocol(H11Server)
    elif kind == "httptools":
        factory = json_post_server(answer, status=b"201 Created")
    else:
        from twisted.web.server import Site

        if kind == "klein":
            from klein import Klein

            app = Klein()

            @app.route("/channels/<channel_id>/messages/", methods=["POST"])
            def send(request: Any, channel_id: str) -> bytes:
                request.setResponseCode(201)
                request.setHeader(b"content-type", b"application/json")
                return answer(request.content.read())

            root = app.resource()
        else:
            from twisted.web.resource import Resource

            class Send(Resource):
                isLeaf = True

                def render_POST(self, request: Any) -> bytes:
                    request.setResponseCode(201)
                    request.setHeader(b"content-type", b"application/json")
                    return answer(request.content.read())

            root = Send()
        factory = Site(root)
        factory.log = lambda request: None  # no access log: it is not what is measured
    factory.noisy = False
    reactor.listenTCP(port, factory, interface=HOST)
    reactor.callWhenRunning(
        signal.signal, signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop)
    )
    reactor.callWhenRunning(print, "ready", flush=True)
    reactor.run()


def post_many(kind: str, url: str, count: int) -> None:
    """POST ``count`` events to ``url`` (after a warm-up); print CPU µs per POST as JSON."""
    from twisted.internet import defer, task

    async def run(reactor: Any) -> None:
        if kind == "treq":
            import treq
            from twisted.web.client import HTTPConnectionPool

            pool = HTTPConnectionPool(reactor)
            pool.maxPersistentPerHost = IN_FLIGHT
            headers = {b"Content-Type": [b"application/json"]}

            async def post() -> int:
                response = await treq.post(url, data=EVENT_BODY, headers=headers, pool=pool)
                await response.content()
                return response.code

            close = pool.closeCachedConnections
        elif kind == "h11":
            post, close = await h11_poster(reactor, url)
        elif kind == "httptools":
            post, close = await httptools_poster(reactor, url)
        else:
            from junebug.workers.http import CallbackPoster

            poster = CallbackPoster(reactor)

            async def post() -> int:
                outcome = await poster.attempt(url, EVENT_BODY)
                return outcome.status or 0

            close = poster.close

        async def one() -> None:
            status = await post()
            if not 200 <= status < 300:
                raise RuntimeError(f"{kind}: answered {status}")

        await print_in_flight_cost(one, count)
        await close()

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


async def pooled(reactor: Any, parts: Any, client: Any) -> tuple[Any, Any]:
    """IN_FLIGHT connections of ``client`` (a protocol with ``post()``) to ``parts``'s
    host, handed out in turn: (post, close)."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    endpoint = TCP4ClientEndpoint(reactor, parts.hostname, parts.port)
    idle = [await connectProtocol(endpoint, client()) for _ in range(IN_FLIGHT)]

    async def post() -> int:
        connection = idle.pop()
        try:
            return await connection.post()
        finally:
            idle.append(connection)

    async def close() -> None:
        for connection in idle:
            connection.transport.loseConnection()

    return post, close


async def h11_poster(reactor: Any, url: str) -> tuple[Any, Any]:
    """A minimal h11 client: IN_FLIGHT persistent connections handed out in turn."""
    from urllib.parse import urlsplit

    import h11
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Protocol

    parts = urlsplit(url)
    headers = [
        ("Host", parts.netloc),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(EVENT_BODY))),
    ]

    class H11Client(Protocol):
        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)
            self.conn = h11.Connection(h11.CLIENT)

        def post(self) -> Deferred:
            self.waiting: Deferred = Deferred()
            self.status = 0
            self.transport.write(
                self.conn.send(
                    h11.Request(method="POST", target=parts.path or "/", headers=headers)
                )
                + self.conn.send(h11.Data(data=EVENT_BODY))
                + self.conn.send(h11.EndOfMessage())
            )
            return self.waiting

        def dataReceived(self, data: bytes) -> None:
            self.conn.receive_data(data)
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Response):
                    self.status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    self.conn.start_next_cycle()
                    self.waiting.callback(self.status)
                    return

    return await pooled(reactor, parts, H11Client)


async def httptools_poster(reactor: Any, url: str) -> tuple[Any, Any]:
    """The same with httptools (C, llhttp) parsing the answers and the request written
    by hand: what the fastest parser available to Twisted would cost."""
    from urllib.parse import urlsplit

    import httptools
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Protocol

    parts = urlsplit(url)
    request = (
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        % ((parts.path or "/").encode(), parts.netloc.encode(), len(EVENT_BODY), EVENT_BODY)
    )

    class HttptoolsClient(Protocol):
        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)
            self.parser = httptools.HttpResponseParser(self)

        def post(self) -> Deferred:
            self.waiting: Deferred = Deferred()
            self.transport.write(request)
            return self.waiting

        def on_message_complete(self) -> None:
            self.waiting.callback(self.parser.get_status_code())

        def dataReceived(self, data: bytes) -> None:
            self.parser.feed_data(data)

    return await pooled(reactor, parts, HttptoolsClient)


#: The Redis rows: how each connects.
REDIS_KINDS = ("txredisapi", "txredisapi+hiredis", "junebug")


def redis_commands(kind: str, count: int) -> None:
    """SET through ``kind``, IN_FLIGHT at a time; print CPU µs per command as JSON."""
    import txredisapi
    from twisted.internet import defer, task

    from junebug.store import redis as redis_store

    async def run(reactor: Any) -> None:
        if kind == "junebug":
            redis = await redis_store.connect("127.0.0.1", 6379)
        else:
            if kind == "txredisapi":
                txredisapi.RedisFactory.protocol = txredisapi.BaseRedisProtocol
            redis = await txredisapi.Connection("127.0.0.1", 6379, reconnect=False)
        key = f"junebug-bench-floors:{os.getpid()}"

        async def one() -> None:
            await redis.set(key, 1)

        await print_in_flight_cost(one, count)
        await redis.delete(key)
        await redis.disconnect()

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


# -- the conductor --------------------------------------------------------------------------


def child(*args: str) -> list[str]:
    return [sys.executable, __file__, "--role", *args]


def start_server(kind: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(child("serve", kind, str(port)), stdout=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError(f"the {kind} server did not start")
    return process, port


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure_server(kind: str, seconds: float, lua: str) -> dict[str, float]:
    """wrk against one server; that server's CPU µs per request answered."""
    process, port = start_server(kind)
    try:
        url = f"http://{HOST}:{port}/channels/bench/messages/"
        wrk = ["wrk", "-t1", f"-c{IN_FLIGHT}", "-s", lua, url]
        subprocess.run([*wrk, "-d1s"], check=True, capture_output=True)  # warm-up
        meter = psutil.Process(process.pid)
        before = sum(meter.cpu_times()[:2])
        result = subprocess.run(
            [*wrk, f"-d{seconds:g}s"], check=True, capture_output=True, text=True
        )
        cpu = sum(meter.cpu_times()[:2]) - before
    finally:
        stop(process)
    requests = next(
        int(line.split()[0]) for line in result.stdout.splitlines() if "requests in" in line
    )
    if "Non-2xx" in result.stdout:
        raise RuntimeError(f"{kind}: wrk saw errors:\n{result.stdout}")
    return {"cpu_us": cpu / requests * 1e6, "per_second": requests / seconds}


def measure_client(kind: str, url: str, count: int) -> dict[str, float]:
    result = subprocess.run(
        child("post", kind, url, str(count)), check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_receiver(workdir: str) -> tuple[Any, str, str]:
    """nginx answering 200 to every POST (or the h11 server, without nginx)."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if nginx is None:
        kind = "h11" if importlib.util.find_spec("h11") is not None else "httptools"
        process, port = start_server(kind)
        return (lambda: stop(process)), f"http://{HOST}:{port}/events", f"the {kind} server"
    port = free_port()
    conf = Path(workdir, "nginx.conf")
    conf.write_text(
        f"worker_processes 1; daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; client_body_temp_path {workdir}; keepalive_requests 1000000;\n"
        f"  server {{ listen {HOST}:{port}; location / {{ return 200 'ok'; }} }} }}\n"
    )
    process = subprocess.Popen([nginx, "-c", str(conf), "-p", workdir], stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not Path(workdir, "nginx.pid").exists() and time.time() < deadline:
        time.sleep(0.05)
    return (lambda: stop(process)), f"http://{HOST}:{port}/events", "nginx"


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of every row")
    parser.add_argument("--seconds", type=float, default=4, help="wrk duration per server row")
    parser.add_argument("-n", type=int, default=8000, help="POSTs per client row, Redis commands")
    parser.add_argument("--json", help="write every number to this file")
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role, *rest = args.role
        if role == "serve":
            serve(rest[0], int(rest[1]))
        elif role == "post":
            post_many(rest[0], rest[1], int(rest[2]))
        elif role == "redis":
            redis_commands(rest[0], int(rest[1]))
        return

    samples: dict[str, list[dict[str, float]]] = {}
    have_wrk = shutil.which("wrk") is not None
    missing = {k for k, module in OPTIONAL.items() if importlib.util.find_spec(module) is None}
    for kind in sorted(missing):
        print(
            f"{OPTIONAL[kind]} is not installed (pip install {OPTIONAL[kind]}): "
            f"its rows are skipped",
            file=sys.stderr,
        )
    servers = [kind for kind in SERVERS if kind not in missing]
    clients = [kind for kind in CLIENTS if kind not in missing]
    if not have_wrk:
        print("wrk is not installed (apt-get install wrk): server rows skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="junebug-floors-") as workdir:
        lua = Path(workdir, "post.lua")
        lua.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = '{API_BODY.decode()}'\n"
        )
        stop_receiver, receiver_url, receiver = start_receiver(workdir)
        try:
            for round_number in range(args.rounds):
                print(f"round {round_number + 1} of {args.rounds}", file=sys.stderr, flush=True)
                if have_wrk:
                    for kind in servers:
                        samples.setdefault(f"server: {kind}", []).append(
                            measure_server(kind, args.seconds, str(lua))
                        )
                for kind in clients:
                    samples.setdefault(f"client: {kind}", []).append(
                        measure_client(kind, receiver_url, args.n)
                    )
                for kind in REDIS_KINDS:
                    result = subprocess.run(
                        child("redis", kind, str(args.n)),
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    samples.setdefault(f"redis: {kind} SET", []).append(
                        json.loads(result.stdout.splitlines()[-1])
                    )
        finally:
            stop_receiver()

    rows = {
        name: {key: median([s[key] for s in values]) for key in ("cpu_us", "per_second")}
        for name, values in samples.items()
    }
    info = machine_info()
    print(
        f"\nBuilding blocks, {info['date']}, commit {info['commit']}: {info['nproc']} x "
        f"{info['cpu_model']}, CPython {info['python']}; load average {info['loadavg']}; "
        f"medians of {args.rounds} alternating rounds, {IN_FLIGHT} in flight; "
        f"receiver: {receiver}\n"
    )
    print(f"  {'':38} {'CPU µs each':>12} {'per second':>11}")
    for name, row in rows.items():
        print(f"  {name:38} {row['cpu_us']:12,.0f} {row['per_second']:11,.0f}")
    ceilings = {}
    for server in SERVERS:
        for client in CLIENTS:
            answered, made = rows.get(f"server: {server}"), rows.get(f"client: {client}")
            if answered and made:
                ceilings[f"{server} + 2 x {client}"] = 1e6 / (
                    answered["cpu_us"] + 2 * made["cpu_us"]
                )
    if ceilings:
        print("\n  ceiling on messages/s per core from HTTP alone (1 answered + 2 made):")
        for name, value in ceilings.items():
            print(f"    {name:50} {value:8,.0f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "rounds": samples,
                    "medians": rows,
                    "ceilings": ceilings,
                    "receiver": receiver,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
