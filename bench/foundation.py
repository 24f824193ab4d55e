"""The foundation benchmark: ``jb`` as a separate process, driven over real sockets.

Usage:
    python bench/foundation.py                 # the embedded default (2-3 min)
    python bench/foundation.py --redis         # embedded AND the real Redis, one run, ratios
    python bench/foundation.py --configs redis --json results.json
    python bench/foundation.py --configs embedded,embedded+JUNEBUG_DISABLE_LOGGING=1

For each configuration it measures, in this order:

1. idle: jb's resident memory (RSS) and CPU once its API answers, with no channels;
2. channels: RSS before and while holding K telnet channels (created through the API,
   each listening on its own OS-chosen free port on 127.0.0.1), then deleted again;
3. outbound: N messages POSTed to ``/channels/{id}/messages/`` (bounded concurrency) to
   one connected telnet client, each with an ``event_url`` on a receiver in this
   process; messages/s from the first POST until every line has arrived on the telnet
   socket and every ``submitted`` event at the receiver, and none lost;
4. inbound: the telnet client types N lines at once; messages/s until the ``mo_url``
   receiver (answering 200 at once) has all N;
5. latency: POST messages open-loop at each fixed rate for a fixed time; p50/p95/p99 of
   the time from each request's scheduled send to its response, the achieved rate and
   the errors.

Throughput phases also report jb's CPU milliseconds per message, the figure least
disturbed by other work on a shared machine. With several configurations the jb
processes run side by side and each phase runs on one configuration right after the
other, so all see the same machine noise; ratios are to the first configuration. Only
127.0.0.1 is ever contacted. Every phase is bounded in count and time, and a watchdog
stops everything after ``--max-seconds``. Exit status 1 means something was lost or
failed (listed as PROBLEM lines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from typing import Any

import psutil
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402 - after the path set-up above
    CpuMeter,
    HttpClient,
    JbProcess,
    Receiver,
    TelnetPhone,
    bounded,
    free_port,
    machine_info,
    now,
    percentile,
    sleep,
    wait_until,
)

CONFIGS = ("embedded", "redis")
MB = 2**20
BENCH = psutil.Process()


class PhaseError(Exception):
    """A phase could not run (not a slow result: a broken one)."""


class Target:
    """One configuration under test: its jb, receiver, API client and telnet client."""

    def __init__(self, name: str, index: int, workdir: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        base, *settings = name.split("+")
        env = {**args.env, **dict(item.split("=", 1) for item in settings)}
        self.jb = JbProcess(
            os.path.join(workdir, f"config{index}"), redis=(base == "redis"), env=env
        )
        if args.profile_dir:
            os.makedirs(args.profile_dir, exist_ok=True)
            profile = os.path.join(os.path.abspath(args.profile_dir), f"jb-{index}-{base}.prof")
            self.jb.argv = [sys.executable, "-m", "cProfile", "-o", profile, *self.jb.argv]
        self.receiver = Receiver()
        self.api: HttpClient | None = None
        self.phone: TelnetPhone | None = None
        self.channel_id = ""
        self.results: dict[str, Any] = {}

    def meter(self) -> CpuMeter:
        """CPU of jb, of its helper processes (embedded redis-server) and of this one."""
        return CpuMeter(self.jb.process, BENCH, *self.jb.helpers())

    def cpu_results(self, prefix: str, used: list[float], seconds: float, count: int) -> None:
        """CPU use over a phase: % of one core, and jb's CPU milliseconds per message
        (the figure least disturbed by other work on a shared machine)."""
        r = self.results
        r[f"{prefix}_jb_cpu_pct"] = 100 * used[0] / seconds
        r[f"{prefix}_jb_cpu_ms_per_msg"] = 1000 * used[0] / max(1, count)
        r[f"{prefix}_bench_cpu_pct"] = 100 * used[1] / seconds
        if len(used) > 2:
            r[f"{prefix}_helper_cpu_pct"] = 100 * sum(used[2:]) / seconds
            r[f"{prefix}_helper_cpu_ms_per_msg"] = 1000 * sum(used[2:]) / max(1, count)

    async def start(self) -> None:
        await self.jb.start()
        meter = self.meter().start()
        await sleep(self.args.settle)
        used = meter.stop()
        self.results["idle_rss_mb"] = self.jb.rss() / MB
        helpers = self.jb.helpers()
        if helpers:
            self.results["idle_helper_rss_mb"] = sum(p.memory_info().rss for p in helpers) / MB
        self.results["idle_jb_cpu_pct"] = 100 * used[0] / self.args.settle
        self.receiver.start()
        self.api = HttpClient(self.jb.base_url, connections=self.args.concurrency + 8)
        telnet_port = free_port()
        code, body = await self.api.request(
            "POST",
            "/channels/",
            {
                "type": "telnet",
                "label": "benchmark",
                "mo_url": self.receiver.url("/mo"),
                "config": {"twisted_endpoint": f"tcp:{telnet_port}:interface=127.0.0.1"},
            },
        )
        if code != 201:
            raise PhaseError(f"{self.name}: creating the channel answered {code}: {body}")
        self.channel_id = body["result"]["id"]
        self.phone = await TelnetPhone().connect(telnet_port)
        address = self.phone.address
        if not await wait_until(lambda: address in self.receiver.sessions.keys, 10):
            raise PhaseError(f"{self.name}: the session start never reached the mo_url")

    async def stop(self) -> None:
        # Best effort: stopping jb closes both anyway.
        if self.phone is not None:
            with contextlib.suppress(Exception):
                await self.phone.hang_up()
        if self.api is not None and self.channel_id:
            with contextlib.suppress(Exception):
                await self.api.request("DELETE", f"/channels/{self.channel_id}")
        if self.api is not None:
            await self.api.close()
        await self.receiver.stop()
        code = await self.jb.stop()
        if code not in (0, None):
            print(f"warning: {self.name} jb exited with {code}", file=sys.stderr)
        if self.jb.redis:
            self.results["redis_keys_cleaned"] = self.jb.clean_redis()

    # -- sending ------------------------------------------------------------------------

    async def send(self, content: str) -> str:
        """POST one message to the telnet client; its message_id (raises unless 201)."""
        code, body = await self.api.request(
            "POST",
            f"/channels/{self.channel_id}/messages/",
            {
                "to": self.phone.address,
                "content": content,
                "event_url": self.receiver.url("/event"),
            },
        )
        if code != 201:
            raise PhaseError(f"POST answered {code}: {body}")
        return body["result"]["message_id"]

    def delivered(self, contents: set[str], ids: set[str]) -> bool:
        return contents <= self.phone.lines.keys and ids <= self.receiver.events.keys

    async def send_many(self, prefix: str, count: int) -> tuple[set[str], set[str], int]:
        """(contents sent, message ids accepted, errors), ``concurrency`` at a time."""
        results = await bounded(count, self.args.concurrency, lambda i: self.send(f"{prefix}{i}"))
        ids = {r for r in results if isinstance(r, str)}
        errors = count - len(ids)
        contents = {f"{prefix}{i}" for i, r in enumerate(results) if isinstance(r, str)}
        return contents, ids, errors

    def reset(self) -> None:
        self.phone.lines.reset()
        self.receiver.events.reset()
        self.receiver.inbound.reset()
        self.receiver.event_types.clear()

    # -- phases -------------------------------------------------------------------------

    async def warm_up(self) -> None:
        contents, ids, _ = await self.send_many("w", self.args.warmup)
        await wait_until(lambda: self.delivered(contents, ids), self.args.timeout)
        self.phone.type_lines([f"v{i}" for i in range(self.args.warmup)])
        await wait_until(lambda: len(self.receiver.inbound) >= self.args.warmup, 30)
        self.reset()

    async def outbound(self) -> None:
        n = self.args.messages
        self.reset()
        connections = self.receiver.connections
        meter = self.meter().start()
        started = now()
        contents, ids, errors = await self.send_many("o", n)
        posted = now()
        complete = await wait_until(lambda: self.delivered(contents, ids), self.args.timeout)
        lines, events = self.phone.lines, self.receiver.events
        finished = max(lines.last, events.last, posted) if complete else now()
        seconds = finished - started
        r = self.results
        r["outbound_msgs"] = len(ids)
        r["outbound_msg_per_s"] = len(ids) / seconds
        r["outbound_post_per_s"] = n / (posted - started)
        r["outbound_seconds"] = seconds
        r["outbound_errors"] = errors
        r["outbound_lost_lines"] = len(contents - lines.keys)
        r["outbound_lost_events"] = len(ids - events.keys)
        r["outbound_duplicates"] = lines.duplicates + events.duplicates
        r["outbound_event_types"] = dict(self.receiver.event_types)
        r["outbound_callback_connections"] = self.receiver.connections - connections
        self.cpu_results("outbound", meter.stop(), seconds, len(ids))

    async def inbound(self) -> None:
        n = self.args.messages
        self.reset()
        expected = {f"i{i}" for i in range(n)}
        meter = self.meter().start()
        started = now()
        self.phone.type_lines(sorted(expected))
        inbound = self.receiver.inbound
        complete = await wait_until(lambda: expected <= inbound.keys, self.args.timeout)
        seconds = (inbound.last if complete else now()) - started
        r = self.results
        r["inbound_msgs"] = len(expected & inbound.keys)
        r["inbound_msg_per_s"] = r["inbound_msgs"] / seconds
        r["inbound_seconds"] = seconds
        r["inbound_lost"] = len(expected - inbound.keys)
        r["inbound_duplicates"] = inbound.duplicates
        self.cpu_results("inbound", meter.stop(), seconds, r["inbound_msgs"])

    async def latency(self) -> None:
        for rate in self.args.rates:
            await self.latency_at(rate)

    async def latency_at(self, rate: float) -> None:
        """Open loop: request i is due at start + i / rate whether or not earlier ones
        have been answered; latency counts from when it was due (so a stalled server
        can't hide its stall by slowing the sender down)."""
        duration = self.args.duration
        total = int(rate * duration)
        interval = 1.0 / rate
        latencies: list[float] = []
        lags: list[float] = []
        ids: set[str] = set()
        contents: set[str] = set()
        state = {"next": 0, "in_flight": 0, "errors": 0, "skipped": 0, "last": 0.0}
        error_samples: list[str] = []
        all_sent: Deferred = Deferred()
        self.reset()

        async def one(index: int, due: float) -> None:
            lags.append(now() - due)
            state["in_flight"] += 1
            try:
                message_id = await self.send(f"l{index}")
            except Exception as exc:  # noqa: BLE001 - counted
                state["errors"] += 1
                if len(error_samples) < 3:
                    error_samples.append(f"{type(exc).__name__}: {exc}")
            else:
                finished = now()
                latencies.append(finished - due)
                ids.add(message_id)
                contents.add(f"l{index}")
                state["last"] = finished
            finally:
                state["in_flight"] -= 1

        def fire() -> None:
            current = now()
            while state["next"] < total and start + state["next"] * interval <= current:
                index = state["next"]
                state["next"] += 1
                if state["in_flight"] >= self.args.max_in_flight:
                    state["skipped"] += 1
                    continue
                Deferred.fromCoroutine(one(index, start + index * interval))
            if state["next"] < total:
                reactor.callLater(max(0.0, start + state["next"] * interval - now()), fire)
            else:
                all_sent.callback(None)

        meter = self.meter().start()
        start = now() + 0.05
        reactor.callLater(0.05, fire)
        await all_sent.addTimeout(duration + 30, reactor)
        await wait_until(lambda: state["in_flight"] == 0, self.args.request_timeout + 5)
        span = (state["last"] if latencies else now()) - start
        used = meter.stop()
        await wait_until(lambda: self.delivered(contents, ids), self.args.timeout)
        latencies.sort()
        lags.sort()
        r = self.results
        key = latency_key(rate)
        r[f"{key}_offered_per_s"] = rate
        r[f"{key}_requests"] = total
        r[f"{key}_achieved_per_s"] = len(latencies) / span if span > 0 else 0.0
        for name, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
            value = percentile(latencies, fraction)
            r[f"{key}_{name}_ms"] = None if value is None else value * 1000
        r[f"{key}_errors"] = state["errors"]
        r[f"{key}_skipped"] = state["skipped"]
        r[f"{key}_sender_lag_p99_ms"] = (percentile(lags, 0.99) or 0.0) * 1000
        r[f"{key}_undelivered"] = len(contents - self.phone.lines.keys) + len(
            ids - self.receiver.events.keys
        )
        if error_samples:
            r[f"{key}_error_samples"] = error_samples
        self.cpu_results(key, used, span, len(latencies))

    async def channels(self) -> None:
        count = self.args.channels
        jb = self.jb
        await sleep(self.args.settle)
        r = self.results
        r["channels_count"] = count
        r["channels_rss_before_mb"] = jb.rss() / MB
        fds_before = jb.num_fds()

        async def create(index: int) -> str:
            code, body = await self.api.request(
                "POST",
                "/channels/",
                {
                    "type": "telnet",
                    "label": f"memory {index}",
                    "mo_url": self.receiver.url("/mo"),
                    "config": {"twisted_endpoint": "tcp:0:interface=127.0.0.1"},
                },
            )
            if code != 201:
                raise PhaseError(f"creating a channel answered {code}: {body}")
            return body["result"]["id"]

        async def delete(channel_id: str) -> None:
            code, body = await self.api.request("DELETE", f"/channels/{channel_id}")
            if code != 200:
                raise PhaseError(f"deleting a channel answered {code}: {body}")

        started = now()
        created = await bounded(count, self.args.channel_concurrency, create)
        created_seconds = now() - started
        ids = [c for c in created if isinstance(c, str)]
        failures = [c for c in created if not isinstance(c, str)]
        try:
            await sleep(self.args.settle)
            rss = jb.rss()
            fds = jb.num_fds()
        finally:
            started = now()
            deleted = await bounded(
                len(ids), self.args.channel_concurrency, lambda i: delete(ids[i])
            )
            deleted_seconds = now() - started
        await sleep(self.args.settle)
        r["channels_created"] = len(ids)
        r["channels_create_errors"] = len(failures)
        if failures:
            r["channels_error_sample"] = str(failures[0])
        r["channels_rss_mb"] = rss / MB
        r["channels_kb_per_channel"] = (rss / 1024 - r["channels_rss_before_mb"] * 1024) / max(
            1, len(ids)
        )
        r["channels_fds_per_channel"] = (fds - fds_before) / max(1, len(ids))
        r["channels_create_per_s"] = len(ids) / created_seconds
        r["channels_delete_per_s"] = len(ids) / deleted_seconds if ids else 0.0
        r["channels_delete_errors"] = sum(1 for d in deleted if d is not None)
        r["channels_rss_after_delete_mb"] = jb.rss() / MB


PHASES = ("channels", "outbound", "inbound", "latency")


def latency_key(rate: float) -> str:
    return f"latency_{rate:g}"


#: (result key, label, format); None as the key starts a section.
ROWS: list[tuple[str | None, str, str]] = [
    (None, "idle", ""),
    ("idle_rss_mb", "jb RSS, idle (MB)", "{:.1f}"),
    ("idle_helper_rss_mb", "embedded redis-server RSS (MB)", "{:.1f}"),
    ("idle_jb_cpu_pct", "jb CPU while idle (%)", "{:.1f}"),
    (None, "memory: telnet channels", ""),
    ("channels_created", "channels created", "{:d}"),
    ("channels_rss_before_mb", "jb RSS before (MB)", "{:.1f}"),
    ("channels_rss_mb", "jb RSS holding them (MB)", "{:.1f}"),
    ("channels_kb_per_channel", "KB per channel", "{:.1f}"),
    ("channels_fds_per_channel", "file descriptors per channel", "{:.1f}"),
    ("channels_create_per_s", "created/s", "{:.0f}"),
    ("channels_delete_per_s", "deleted/s", "{:.0f}"),
    ("channels_rss_after_delete_mb", "jb RSS after deleting them (MB)", "{:.1f}"),
    (None, "outbound: POST -> telnet line + submitted event", ""),
    ("outbound_msg_per_s", "messages/s, end to end", "{:.0f}"),
    ("outbound_post_per_s", "POSTs answered/s", "{:.0f}"),
    ("outbound_msgs", "messages delivered", "{:d}"),
    ("outbound_errors", "POST errors", "{:d}"),
    ("outbound_lost_lines", "lines lost", "{:d}"),
    ("outbound_lost_events", "events lost", "{:d}"),
    ("outbound_callback_connections", "event_url connections opened", "{:d}"),
    ("outbound_jb_cpu_ms_per_msg", "jb CPU per message (ms)", "{:.2f}"),
    ("outbound_helper_cpu_ms_per_msg", "embedded redis-server CPU per message (ms)", "{:.2f}"),
    ("outbound_jb_cpu_pct", "jb CPU (% of one core)", "{:.0f}"),
    ("outbound_bench_cpu_pct", "load generator CPU (%)", "{:.0f}"),
    (None, "inbound: telnet lines -> mo_url", ""),
    ("inbound_msg_per_s", "messages/s", "{:.0f}"),
    ("inbound_lost", "lost", "{:d}"),
    ("inbound_jb_cpu_ms_per_msg", "jb CPU per message (ms)", "{:.2f}"),
    ("inbound_helper_cpu_ms_per_msg", "embedded redis-server CPU per message (ms)", "{:.2f}"),
    ("inbound_jb_cpu_pct", "jb CPU (% of one core)", "{:.0f}"),
    ("inbound_bench_cpu_pct", "load generator CPU (%)", "{:.0f}"),
    (None, "API latency, open loop at {rate:g} requests/s", ""),
    ("{key}_achieved_per_s", "achieved (requests/s)", "{:.1f}"),
    ("{key}_p50_ms", "p50 (ms)", "{:.1f}"),
    ("{key}_p95_ms", "p95 (ms)", "{:.1f}"),
    ("{key}_p99_ms", "p99 (ms)", "{:.1f}"),
    ("{key}_max_ms", "max (ms)", "{:.1f}"),
    ("{key}_errors", "errors", "{:d}"),
    ("{key}_skipped", "not sent (too many in flight)", "{:d}"),
    ("{key}_sender_lag_p99_ms", "load generator lag p99 (ms)", "{:.1f}"),
    ("{key}_jb_cpu_ms_per_msg", "jb CPU per request (ms)", "{:.2f}"),
    ("{key}_jb_cpu_pct", "jb CPU (% of one core)", "{:.0f}"),
]


def table_rows(rates: list[float]) -> list[tuple[str | None, str, str]]:
    """ROWS with the latency rows repeated for each rate."""
    rows = []
    templated = [row for row in ROWS if "{key}" in (row[0] or "") or "{rate" in row[1]]
    for row in ROWS:
        if row in templated:
            if row is templated[0]:
                for rate in rates:
                    key = latency_key(rate)
                    rows += [
                        (None if k is None else k.format(key=key), label.format(rate=rate), f)
                        for k, label, f in templated
                    ]
            continue
        rows.append(row)
    return rows


def render_table(targets: list[Target], rates: list[float]) -> str:
    names = [t.name for t in targets]
    compare = len(targets) > 1
    width = max(12, *(len(n) + 2 for n in names))
    header = f"{'':44}" + "".join(f"{n:>{width}}" for n in names)
    if compare:
        header += f"  {names[1] + ' / ' + names[0]}"
    out = [header]
    section = None
    for key, label, fmt in table_rows(rates):
        if key is None:
            section = label
            continue
        values = [t.results.get(key) for t in targets]
        if all(v is None for v in values):
            continue
        if section is not None:
            out.append(section)
            section = None
        cells = "".join(f"{'-' if v is None else fmt.format(v):>{width}}" for v in values)
        line = f"  {label:42}{cells}"
        if compare and values[0] and values[1] is not None and isinstance(values[0], float):
            line += f"  {values[1] / values[0]:.2f}"
        out.append(line)
    return "\n".join(out)


def ratios(targets: list[Target]) -> dict[str, float]:
    if len(targets) < 2:
        return {}
    first, second = targets[0].results, targets[1].results
    return {
        key: second[key] / first[key]
        for key in first
        if isinstance(first[key], float) and first[key] and isinstance(second.get(key), float)
    }


def problems(targets: list[Target]) -> list[str]:
    found = []
    for t in targets:
        r = t.results
        for key in (
            "outbound_errors",
            "outbound_lost_lines",
            "outbound_lost_events",
            "inbound_lost",
            *(f"{latency_key(rate)}_errors" for rate in t.args.rates),
            *(f"{latency_key(rate)}_undelivered" for rate in t.args.rates),
            "channels_create_errors",
            "channels_delete_errors",
        ):
            if r.get(key):
                found.append(f"{t.name}: {key} = {r[key]}")
    return found


async def run(args: argparse.Namespace) -> int:
    workdir = tempfile.mkdtemp(prefix="jb-bench-")
    targets = [Target(name, i, workdir, args) for i, name in enumerate(args.configs)]
    watchdog = reactor.callLater(args.max_seconds, give_up, targets, workdir)
    started = now()
    load_before = os.getloadavg()
    failure: str | None = None
    try:
        for target in targets:
            log(f"starting jb ({target.name})")
            await target.start()
        for target in targets:
            log(f"warming up ({target.name})")
            await target.warm_up()
        for phase in PHASES:
            if phase not in args.phases:
                continue
            for target in targets:
                log(f"{phase} ({target.name})")
                try:
                    await getattr(target, phase)()
                except Exception as exc:  # noqa: BLE001 - report what was measured
                    failure = f"{phase} ({target.name}) failed: {type(exc).__name__}: {exc}"
                    raise
    except Exception:  # noqa: BLE001
        if failure is None:
            raise  # could not even start: nothing to report
    finally:
        for target in targets:
            try:
                await target.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others regardless
                print(f"warning: stopping {target.name}: {exc}", file=sys.stderr)
        if watchdog.active():
            watchdog.cancel()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    machine = machine_info()
    print()
    print(
        f"Junebug foundation benchmark, {machine['date']}, commit {machine['commit']}: "
        f"{machine['nproc']} x {machine['cpu_model']}, {machine['memory_gb']} GB, "
        f"Python {machine['python']}"
    )
    print(
        f"N={args.messages} messages, concurrency {args.concurrency}; latency at "
        f"{', '.join(f'{r:g}' for r in args.rates)}/s for {args.duration:g}s; "
        f"{args.channels} channels; {now() - started:.0f}s in all; load average "
        f"{load_before[0]:.1f} before, {machine['loadavg'][0]:.1f} after"
    )
    print()
    print(render_table(targets, args.rates))
    found = problems(targets) + ([failure] if failure else [])
    for line in found:
        print(f"PROBLEM: {line}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "benchmark": "foundation",
                    "machine": {**machine, "loadavg_before": list(load_before)},
                    "params": {
                        k: v for k, v in vars(args).items() if k not in ("json", "profile_dir")
                    },
                    "results": {t.name: t.results for t in targets},
                    "ratios": ratios(targets),
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


def give_up(targets: list[Target], workdir: str) -> None:
    """The watchdog: kill every jb, delete what they left, and exit with status 2."""
    print("benchmark: --max-seconds passed, killing jb and stopping", file=sys.stderr)
    for target in targets:
        with contextlib.suppress(Exception):
            target.jb.kill()
            target.jb.clean_redis()
    shutil.rmtree(workdir, ignore_errors=True)
    os._exit(2)


def log(text: str) -> None:
    print(f"[{now():10.1f}] {text}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Junebug's foundation benchmark; see the top of bench/foundation.py "
        "and docs/performance.md."
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="also run against the real Redis at 127.0.0.1:6379 (same run, with ratios)",
    )
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated configurations, the first is the reference: embedded or "
        "redis, each optionally followed by +NAME=VALUE environment settings for that jb, "
        "e.g. embedded,embedded+JUNEBUG_DISABLE_LOGGING=1 (default: embedded; "
        "embedded,redis with --redis)",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated phases to run (default {','.join(PHASES)})",
    )
    parser.add_argument("-n", "--messages", type=int, default=5000, help="N (default 5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="POSTs in flight (32)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured messages first")
    parser.add_argument(
        "--rate",
        default="50,200",
        help="latency: requests/s, one run per comma-separated rate (50,200)",
    )
    parser.add_argument("--duration", type=float, default=10, help="latency: seconds (10)")
    parser.add_argument(
        "--max-in-flight", type=int, default=256, help="latency: most requests in flight (256)"
    )
    parser.add_argument("--channels", type=int, default=1000, help="memory: channels (1000)")
    parser.add_argument("--channel-concurrency", type=int, default=8)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before RSS reads")
    parser.add_argument("--timeout", type=float, default=120, help="per-phase delivery wait")
    parser.add_argument("--request-timeout", type=float, default=30)
    parser.add_argument("--max-seconds", type=float, default=900, help="hard stop")
    parser.add_argument(
        "--jb-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for jb (repeatable), e.g. JUNEBUG_DISABLE_LOGGING=1",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--profile-dir", help="run jb under cProfile, writing jb-<index>-<config>.prof here"
    )
    args = parser.parse_args(argv)
    if args.configs is None:
        args.configs = "embedded,redis" if args.redis else "embedded"
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if any("=" not in item for item in args.jb_env):
        parser.error("--jb-env takes NAME=VALUE")
    args.env = dict(item.split("=", 1) for item in args.jb_env)
    try:
        args.rates = [float(r) for r in str(args.rate).split(",") if r.strip()]
    except ValueError:
        parser.error(f"--rate: {args.rate!r} is not a comma-separated list of numbers")
    for name in args.configs:
        base, *settings = name.split("+")
        if base not in CONFIGS or any("=" not in item for item in settings):
            parser.error(
                f"bad configuration {name!r}: {' or '.join(CONFIGS)}, then any +NAME=VALUE"
            )
    if len(set(args.configs)) != len(args.configs):
        parser.error("a configuration is named twice")
    for name in args.phases:
        if name not in PHASES:
            parser.error(f"unknown phase {name!r}; choose from {', '.join(PHASES)}")
    if min(args.messages, args.concurrency, args.channel_concurrency) < 1 or not all(
        r > 0 for r in args.rates or [0]
    ):
        parser.error("counts and rates must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    task.react(lambda _reactor: Deferred.fromCoroutine(run(args)))


if __name__ == "__main__":
    main()
