"""The SMPP benchmark: the API -> an ``smpp`` channel -> ``jb-smsc`` -> events, end to end.

Usage:
    python bench/smpp.py                          # 10,000 messages, throttle + drop (1-2 min)
    python bench/smpp.py -n 2000 --no-throttle --no-drop
    python bench/smpp.py --redis                  # jb on the real Redis at 127.0.0.1:6379
    python bench/smpp.py --py-spy profile.txt     # also sample jb with py-spy while measuring

What runs, every process on 127.0.0.1 only:

- ``jb`` as a child process (``bench/_common.JbProcess``: the embedded default, or the real
  Redis under a unique key prefix with ``--redis``);
- ``jb-smsc`` as a child process (``junebug.testing.smsc.SmscProcess``), sending a
  delivery receipt for every accepted submit after ``--dr-delay`` seconds;
- one ``smpp`` channel created through the API, bound to the simulator;
- in this process: the load generator and the application's event_url.

It measures, in one run (so both share the machine's conditions):

1. the PDU codec: encode + decode round trips per second (``bench/smpp_codec.py``'s
   measurement, before and after the end-to-end phase; the best round is reported);
2. end to end: N messages POSTed to ``/channels/{id}/messages/`` (at most
   ``--concurrency`` in flight), each with an ``event_url`` here. Once ``--throttle-at``
   of them were answered the simulator throttles (``ESME_RTHROTTLED``) for
   ``--throttle-for`` seconds; once ``--drop-at`` were answered it drops the connection.
   Messages/s runs from the first POST until every message has both its ``submitted``
   and its ``delivery_succeeded`` event. Reported: messages lost (an event missing),
   duplicate events, submit_sm the simulator saw more than once (resends after the drop,
   which must not exceed the channel's ``window_size``), and CPU per message of jb, the
   simulator and the embedded redis-server.

Every wait is bounded (``--timeout``) and a watchdog stops everything after
``--max-seconds``. Exit status 1 means something was lost or failed (PROBLEM lines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from typing import Any

import psutil
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402 - after the path set-up above
    HOST,
    CpuMeter,
    HttpClient,
    JbProcess,
    bounded,
    json_post_server,
    machine_info,
    now,
    sleep,
    wait_until,
)
from smpp_codec import run_round, sample_pdus  # noqa: E402

from junebug.testing.smsc import SmscProcess  # noqa: E402

BENCH = psutil.Process()
SYSTEM_ID = "benchesme"
PASSWORD = "benchpw"
WANTED = ("submitted", "delivery_succeeded")


class PhaseError(Exception):
    """The benchmark could not run (not a slow result: a broken one)."""


# -- the application's event_url ------------------------------------------------------------


class EventReceiver:
    """Answers 200 at once; counts each (message_id, event_type) and notes when the last
    message became complete (both of its WANTED events arrived)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.complete: set[str] = set()
        self.last_complete = 0.0
        self.bad = 0
        self.port: Any = None

    def start(self) -> EventReceiver:
        self.port = reactor.listenTCP(
            0, json_post_server(self.handle), interface=HOST, backlog=1024
        )
        return self

    def url(self) -> str:
        return f"http://{HOST}:{self.port.getHost().port}/event"

    def handle(self, body: bytes) -> None:
        try:
            payload = json.loads(body)
            message_id, event_type = payload["message_id"], payload["event_type"]
        except (ValueError, KeyError, TypeError):
            self.bad += 1
            return
        key = (message_id, event_type)
        self.counts[key] += 1
        if self.counts[key] == 1 and event_type in WANTED:
            other = WANTED[1] if event_type == WANTED[0] else WANTED[0]
            if (message_id, other) in self.counts:
                self.complete.add(message_id)
                self.last_complete = now()

    def reset(self) -> None:
        self.counts.clear()
        self.complete.clear()
        self.last_complete = 0.0
        self.bad = 0

    def summary(self, ids: set[str]) -> dict[str, Any]:
        """Lost, duplicated and unexpected events for the messages ``ids``."""
        types = Counter()
        duplicates = 0
        for (message_id, event_type), count in self.counts.items():
            if message_id in ids:
                types[event_type] += count
                duplicates += count - 1
        return {
            "lost_submitted": sum(1 for i in ids if (i, "submitted") not in self.counts),
            "lost_delivered": sum(1 for i in ids if (i, "delivery_succeeded") not in self.counts),
            "duplicate_events": duplicates,
            "event_types": dict(types),
            "foreign_events": sum(c for (i, _), c in self.counts.items() if i not in ids),
            "bad_events": self.bad,
        }

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()


# -- the codec ---------------------------------------------------------------------------


def codec_rate(count: int, rounds: int) -> tuple[float, float]:
    """(best wall-clock rate, best CPU-time rate) of PDU encode+decode round trips."""
    pdus = sample_pdus()
    results = [run_round(pdus, count) for _ in range(rounds)]
    return count / min(w for w, _ in results), count / min(c for _, c in results)


# -- py-spy ------------------------------------------------------------------------------


class Sampler:
    """``py-spy record`` on jb for the measured phase, collapsed stacks to ``path``."""

    def __init__(self, pid: int, path: str, rate: int) -> None:
        spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
        if spy is None:
            raise PhaseError("--py-spy needs py-spy (pip install py-spy)")
        self.path = path
        self.process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
            + ["--nonblocking", "--output", path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> str:
        """Stop sampling; return py-spy's own messages."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err.decode("utf-8", "replace").strip()


#: Modules that only carry other code's work (the reactor loop, the in-process bus).
_CARRIERS = ("junebug/cli.py", "junebug/service.py", "junebug/bus/local.py")


def summarise_profile(path: str, top: int) -> list[str]:
    """Three views of py-spy's collapsed stacks (one ``frame;frame;... count`` line per
    stack): the functions at the top of the stack (self time); the junebug module
    whose code is innermost on the stack (the work it asked for, wherever the CPU went
    below it: Redis client, HTTP, JSON); and the junebug functions anywhere on the stack
    (inclusive)."""
    own: Counter[str] = Counter()
    module: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            samples = int(count)
            total += samples
            frames = [_short(f) for f in stack.split(";")]
            own[frames[-1]] += samples
            ours = [f for f in frames if "(junebug/" in f and not f.endswith(_CARRIERS_PAREN)]
            for frame in set(ours):
                inclusive[frame] += samples
            module[ours[-1].split(" (", 1)[1][:-1] if ours else "(no junebug code)"] += samples
    if not total:
        return ["(no samples)"]

    def listing(counter: Counter[str]) -> list[str]:
        return [f"  {100 * c / total:5.1f}%  {f}" for f, c in counter.most_common(top)]

    return [
        f"{total} samples",
        "self (the function itself, at the top of the stack):",
        *listing(own),
        "by the innermost junebug module on the stack:",
        *listing(module),
        "junebug functions, inclusive (anywhere on the stack):",
        *listing(inclusive),
    ]


_CARRIERS_PAREN = tuple(f"({m})" for m in _CARRIERS)


def _short(frame: str) -> str:
    """``func (path/to/junebug/x.py:12)`` -> ``func (junebug/x.py)``: one entry per
    function, whatever line was running."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.split("/main/", 1)[-1]
    return f"{name} ({path})"


# -- the run -------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.jb = JbProcess(os.path.join(workdir, "jb"), redis=args.redis)
        self.smsc = SmscProcess(
            system_id=SYSTEM_ID,
            password=PASSWORD,
            dr_delay=args.dr_delay,
            window=args.smsc_window,
            timeout=30,
        )
        self.events = EventReceiver()
        self.api: HttpClient | None = None
        self.channel_id = ""
        self.results: dict[str, Any] = {}
        self.faults: list[str] = []

    async def start(self) -> None:
        await self.smsc.start()
        await self.jb.start()
        self.events.start()
        self.api = HttpClient(self.jb.base_url, connections=self.args.concurrency + 8)
        code, body = await self.api.request(
            "POST",
            "/channels/",
            {
                "type": "smpp",
                "label": "smpp benchmark",
                "mo_url": f"http://{HOST}:9/unused",
                "config": {
                    "twisted_endpoint": f"tcp:host={HOST}:port={self.smsc.port}",
                    "system_id": SYSTEM_ID,
                    "password": PASSWORD,
                    "window_size": self.args.window,
                    "initial_reconnect_delay": self.args.reconnect_delay,
                    "max_reconnect_delay": max(1.0, self.args.reconnect_delay),
                    "throttle_delay": self.args.throttle_delay,
                },
            },
        )
        if code != 201:
            raise PhaseError(f"creating the channel answered {code}: {body}")
        self.channel_id = body["result"]["id"]
        await self.smsc.wait_for_bind(timeout=30)

    async def stop(self) -> None:
        if self.api is not None and self.channel_id:
            with contextlib.suppress(Exception):
                await self.api.request("DELETE", f"/channels/{self.channel_id}")
        if self.api is not None:
            await self.api.close()
        await self.events.stop()
        try:
            code = await self.jb.stop()
            if code not in (0, None):
                print(f"warning: jb exited with {code}", file=sys.stderr)
        finally:
            await self.smsc.stop()
            if self.jb.redis:
                self.results["redis_keys_cleaned"] = self.jb.clean_redis()

    async def send(self, index: int, prefix: str) -> str:
        code, body = await self.api.request(
            "POST",
            f"/channels/{self.channel_id}/messages/",
            {
                "to": f"2782{index:07d}",
                "content": f"{prefix}{index}",
                "event_url": self.events.url(),
            },
        )
        if code != 201:
            raise PhaseError(f"POST answered {code}: {body}")
        return body["result"]["message_id"]

    async def send_many(self, count: int, prefix: str, on_answer: Any = None) -> list[Any]:
        async def job(index: int) -> str:
            try:
                return await self.send(index, prefix)
            finally:
                if on_answer is not None:
                    on_answer()

        return await bounded(count, self.args.concurrency, job)

    async def warm_up(self) -> None:
        n = self.args.warmup
        if not n:
            return
        results = await self.send_many(n, "w")
        ids = {r for r in results if isinstance(r, str)}
        await wait_until(lambda: ids <= self.events.complete, self.args.timeout)
        await sleep(0.5)
        self.events.reset()
        await self.smsc.clear_submits()

    async def measure(self) -> None:
        args, n = self.args, self.args.messages
        throttle_at = int(args.throttle_at * n) if args.throttle_at is not None else -1
        drop_at = int(args.drop_at * n) if args.drop_at is not None else -1
        answered = [0]
        fault_tasks: list[Deferred] = []

        def fault(name: str, action: Any) -> None:
            at = answered[0]

            async def run() -> None:
                try:
                    result = await action()
                except Exception as exc:  # noqa: BLE001 - reported
                    self.faults.append(f"{name} FAILED: {exc}")
                else:
                    done = "" if result is None else f": {result} connection(s) closed"
                    self.faults.append(f"{name} after {at} POSTs{done}")

            fault_tasks.append(Deferred.fromCoroutine(run()))

        def on_answer() -> None:
            answered[0] += 1
            if answered[0] == throttle_at:
                fault(
                    f"throttle {args.throttle_for:g}s",
                    lambda: self.smsc.throttle(args.throttle_for),
                )
            if answered[0] == drop_at:
                fault("drop", self.smsc.drop)

        processes = [self.jb.process, self.smsc._process.pid, BENCH, *self.jb.helpers()]
        meter = CpuMeter(
            *(p if isinstance(p, psutil.Process) else psutil.Process(p) for p in processes)
        )
        sampler = None
        if args.py_spy:
            sampler = Sampler(self.jb.process.pid, args.py_spy + ".raw", args.py_spy_rate)
            await sleep(0.5)
        meter.start()
        started = now()
        results = await self.send_many(n, "m", on_answer)
        posted = now()
        ids = {r for r in results if isinstance(r, str)}
        errors = [r for r in results if not isinstance(r, str)]
        complete = await wait_until(lambda: ids <= self.events.complete, args.timeout)
        finished = self.events.last_complete if complete else now()
        used = meter.stop()
        in_kernel = meter.system()
        if sampler is not None:
            spy_messages = sampler.stop()
            self.results["py_spy"] = spy_messages.splitlines()[-3:]
        for d in fault_tasks:
            await d
        # Late duplicates (a receipt sent again after the drop) arrive within moments.
        await sleep(args.settle)
        seconds = finished - started
        r = self.results
        r["messages"] = n
        r["accepted"] = len(ids)
        r["post_errors"] = len(errors)
        if errors:
            r["post_error_sample"] = repr(errors[0])
        r["seconds"] = seconds
        r["msg_per_s"] = len(ids) / seconds
        r["post_per_s"] = n / (posted - started)
        r.update(self.events.summary(ids))
        r["lost"] = len(ids - self.events.complete)
        for name, cpu in zip(("jb", "smsc", "bench"), used, strict=False):
            r[f"{name}_cpu_ms_per_msg"] = 1000 * cpu / max(1, len(ids))
            r[f"{name}_cpu_pct"] = 100 * cpu / seconds
        r["jb_kernel_ms_per_msg"] = 1000 * in_kernel[0] / max(1, len(ids))
        if len(used) > 3:
            r["redis_cpu_ms_per_msg"] = 1000 * sum(used[3:]) / max(1, len(ids))
        submits = await self.smsc.submits(include_rejected=True)
        accepted = [s for s in submits if s["command_status"] == "ESME_ROK"]
        texts = Counter(s["text"] for s in accepted)
        r["smsc_submits_accepted"] = len(accepted)
        r["smsc_submits_refused"] = len(submits) - len(accepted)
        r["smsc_messages_unique"] = len(texts)
        r["smsc_resends"] = sum(c - 1 for c in texts.values())
        r["faults"] = list(self.faults)
        if sampler is not None:
            r["profile"] = summarise_profile(args.py_spy + ".raw", args.top)
            with open(args.py_spy, "w") as handle:
                handle.write("\n".join(r["profile"]) + "\n")


def problems(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    found = []
    for key in ("post_errors", "lost", "lost_submitted", "lost_delivered", "bad_events"):
        if r.get(key):
            found.append(f"{key} = {r[key]}")
    if r.get("smsc_resends", 0) > args.window * max(1, sum(1 for f in r["faults"] if "drop" in f)):
        found.append(f"smsc_resends = {r['smsc_resends']} exceeds the window ({args.window})")
    if r.get("duplicate_events", 0) > args.window:
        found.append(f"duplicate_events = {r['duplicate_events']} exceeds the window")
    if r.get("smsc_messages_unique") != r.get("accepted"):
        found.append(
            f"the SMSC saw {r.get('smsc_messages_unique')} distinct messages of {r.get('accepted')}"
        )
    found += [f for f in r.get("faults", []) if "FAILED" in f]
    return found


async def run(args: argparse.Namespace) -> int:
    workdir = tempfile.mkdtemp(prefix="jb-bench-smpp-")
    bench = Bench(args, workdir)
    watchdog = reactor.callLater(args.max_seconds, give_up, bench)
    load_before = os.getloadavg()
    begun = now()
    codec = [codec_rate(args.codec_count, args.codec_rounds)]
    try:
        log("starting jb-smsc and jb")
        await bench.start()
        log(f"warming up ({args.warmup} messages)")
        await bench.warm_up()
        log(f"measuring {args.messages} messages")
        await bench.measure()
    finally:
        try:
            await bench.stop()
        finally:
            if watchdog.active():
                watchdog.cancel()
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    codec.append(codec_rate(args.codec_count, args.codec_rounds))
    r = bench.results
    r["codec_pdu_per_s"] = max(c[0] for c in codec)
    r["codec_cpu_pdu_per_s"] = max(c[1] for c in codec)
    machine = machine_info()
    found = problems(args, r)
    print()
    print(
        f"Junebug SMPP benchmark, {machine['date']}, commit {machine['commit']}: "
        f"{machine['nproc']} x {machine['cpu_model']}, {machine['memory_gb']} GB, "
        f"{platform.python_implementation()} {machine['python']}; "
        f"{'real Redis' if args.redis else 'embedded'}; load average {load_before[0]:.1f} "
        f"before, {machine['loadavg'][0]:.1f} after; {now() - begun:.0f}s in all"
    )
    print(
        f"N={args.messages}, concurrency {args.concurrency}, window_size {args.window}, "
        f"jb-smsc --dr-delay {args.dr_delay:g} --window {args.smsc_window}; faults: "
        f"{'; '.join(r['faults']) or 'none'}"
    )
    print()
    rows = [
        ("codec_pdu_per_s", "codec: PDU encode+decode/s (wall)", "{:,.0f}"),
        ("codec_cpu_pdu_per_s", "codec: PDU encode+decode/s (CPU time)", "{:,.0f}"),
        ("msg_per_s", "end to end: messages/s (POST -> both events)", "{:,.0f}"),
        ("post_per_s", "POSTs answered/s", "{:,.0f}"),
        ("seconds", "seconds", "{:.1f}"),
        ("accepted", "messages accepted (201)", "{:d}"),
        ("post_errors", "POST errors", "{:d}"),
        ("lost", "messages lost (an event missing)", "{:d}"),
        ("duplicate_events", "duplicate events", "{:d}"),
        ("smsc_submits_accepted", "submit_sm accepted by the SMSC", "{:d}"),
        ("smsc_submits_refused", "submit_sm refused (throttled)", "{:d}"),
        ("smsc_resends", "submit_sm sent again (after the drop)", "{:d}"),
        ("jb_cpu_ms_per_msg", "jb CPU per message (ms)", "{:.2f}"),
        ("jb_kernel_ms_per_msg", "  of which in the kernel (ms)", "{:.2f}"),
        ("redis_cpu_ms_per_msg", "embedded redis-server CPU per message (ms)", "{:.2f}"),
        ("smsc_cpu_ms_per_msg", "jb-smsc CPU per message (ms)", "{:.2f}"),
        ("bench_cpu_ms_per_msg", "load generator CPU per message (ms)", "{:.2f}"),
        ("jb_cpu_pct", "jb CPU (% of one core)", "{:.0f}"),
        ("smsc_cpu_pct", "jb-smsc CPU (% of one core)", "{:.0f}"),
        ("bench_cpu_pct", "load generator CPU (% of one core)", "{:.0f}"),
    ]
    for key, label, fmt in rows:
        if r.get(key) is not None:
            print(f"  {label:48}{fmt.format(r[key]):>12}")
    print(f"  {'event types':48}{r.get('event_types')}")
    if r.get("profile"):
        print("\njb profile (py-spy, measured phase):")
        print("\n".join(r["profile"]))
    for line in found:
        print(f"PROBLEM: {line}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "benchmark": "smpp",
                    "machine": {**machine, "loadavg_before": list(load_before)},
                    "params": {k: v for k, v in vars(args).items() if k != "json"},
                    "results": r,
                    "problems": found,
                },
                handle,
                indent=2,
                sort_keys=True,
            )
        print(f"\nresults written to {args.json}")
    if found:
        raise SystemExit(1)
    return 0


def give_up(bench: Bench) -> None:
    print("benchmark: --max-seconds passed, killing jb and jb-smsc", file=sys.stderr)
    bench.jb.kill()
    bench.jb.clean_redis()
    with contextlib.suppress(Exception):
        bench.smsc._process.signalProcess("KILL")
    reactor.stop()


def log(text: str) -> None:
    print(f"[{now():10.1f}] {text}", flush=True)


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("a fraction between 0 and 1")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Junebug's SMPP benchmark; see the top of bench/smpp.py and "
        "docs/performance.md."
    )
    add = parser.add_argument
    add("-n", "--messages", type=int, default=10_000, help="N messages (10000)")
    add("--concurrency", type=int, default=32, help="POSTs in flight (32)")
    add("--window", type=int, default=10, help="the channel's window_size (10)")
    add("--warmup", type=int, default=200, help="unmeasured messages first (200)")
    add("--redis", action="store_true", help="jb on the real Redis instead of embedded")
    add("--throttle-at", type=fraction, default=0.25, help="throttle after this share (0.25)")
    add("--throttle-for", type=float, default=1.0, help="seconds of throttling (1)")
    add("--no-throttle", dest="throttle_at", action="store_const", const=None)
    add("--drop-at", type=fraction, default=0.5, help="drop the connection after this share")
    add("--no-drop", dest="drop_at", action="store_const", const=None)
    add("--dr-delay", type=float, default=0.0, help="jb-smsc --dr-delay (0)")
    add("--smsc-window", type=int, default=10, help="jb-smsc --window: deliver_sm in flight")
    add("--reconnect-delay", type=float, default=0.1, help="initial_reconnect_delay (0.1)")
    add("--throttle-delay", type=float, default=0.1, help="the channel's throttle_delay")
    add("--codec-count", type=int, default=100_000, help="codec: PDUs per round")
    add("--codec-rounds", type=int, default=3, help="codec: rounds, before and after")
    add("--timeout", type=float, default=300, help="wait for the last events (300 s)")
    add("--settle", type=float, default=1.0, help="seconds to wait for late duplicates")
    add("--max-seconds", type=float, default=900, help="hard stop")
    add("--py-spy", metavar="PATH", help="sample jb with py-spy; the summary goes to PATH")
    add("--py-spy-rate", type=int, default=200, help="py-spy samples per second")
    add("--top", type=int, default=25, help="profile: functions listed")
    add("--json", metavar="PATH", help="also write the results as JSON")
    add("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if min(args.messages, args.concurrency, args.window, args.codec_count, args.codec_rounds) < 1:
        parser.error("counts must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    task.react(lambda _reactor: Deferred.fromCoroutine(run(args)))


if __name__ == "__main__":
    main()
