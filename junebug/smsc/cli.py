"""``jb-smsc``: run the SMSC simulator with its HTTP control API on one reactor.

Prints ``jb-smsc listening on <host>:<port>, control on http://<host>:<cport>/`` once both
ports listen (port 0 picks a free port; the line shows the one chosen). Stops on SIGINT /
SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from junebug.smsc.simulator import (
    DR_STATUSES,
    DR_STYLES,
    ID_FORMATS,
    SimulatorError,
    parse_status,
)

__all__ = ["build_parser", "main", "settings_from_args"]

READY_LINE = "jb-smsc listening on {host}:{port}, control on http://{host}:{control_port}/"


def _status_arg(value: str) -> int:
    try:
        return parse_status(value)
    except SimulatorError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dr_status_arg(value: str) -> str:
    for status in value.split(","):
        if status.strip().lower() not in DR_STATUSES:
            raise argparse.ArgumentTypeError(
                f"unknown receipt status {status!r}; choose from {', '.join(DR_STATUSES)}"
            )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jb-smsc",
        description="An SMPP 3.4 SMSC simulator with an HTTP control API, for trying and "
        "testing Junebug's smpp channels.",
    )
    add = parser.add_argument
    add("--port", type=int, required=True, help="SMPP port (0: any free port)")
    add("--interface", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--system-id", required=True, help="system_id binds must use")
    add("--password", required=True, help="password binds must use (first 8 characters)")
    add("--system-type", default="", help="system_type binds must use (default: any)")
    add("--control-port", type=int, default=0, help="HTTP control API port (default 0: any)")
    add("--id-format", choices=ID_FORMATS, default="hex", help="message id format")
    add(
        "--first-id",
        type=int,
        default=None,
        help="first message id number (default: random, so ids differ between runs)",
    )
    add(
        "--dr-delay",
        type=float,
        default=0.5,
        help="seconds before a delivery receipt (default 0.5; negative: no receipts)",
    )
    add(
        "--dr-status",
        type=_dr_status_arg,
        default="delivered",
        help="receipt status, or a comma-separated series sent dr-delay apart "
        f"({', '.join(DR_STATUSES)}; default delivered)",
    )
    add("--dr-style", choices=DR_STYLES, default="both", help="receipt form (default both)")
    add("--throttle-after", type=int, default=0, help="throttle after N submits in the window")
    add("--throttle-for", type=float, default=1.0, help="seconds a throttle lasts (default 1)")
    add(
        "--throttle-window",
        type=float,
        default=1.0,
        help="seconds over which --throttle-after counts submits (default 1)",
    )
    add("--fail-every", type=int, default=0, help="answer every Nth submit with --fail-status")
    add(
        "--fail-status",
        type=_status_arg,
        default="ESME_RSYSERR",
        help="command_status of failed submits (name or number; default ESME_RSYSERR)",
    )
    add("--window", type=int, default=10, help="most deliver_sm awaiting a response (0: no cap)")
    add(
        "--enquire-link-interval",
        type=float,
        default=0.0,
        help="seconds between the SMSC's own enquire_links (default 0: none)",
    )
    add(
        "--default-coding",
        default="gsm0338",
        help="codec for reading submits with data_coding 0 (default gsm0338)",
    )
    add("--verbose", action="store_true", help="print one line per PDU")
    return parser


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The SmscSimulator keyword arguments the parsed command line asks for."""
    return {
        "system_type": args.system_type,
        "id_format": args.id_format,
        "dr_delay": args.dr_delay,
        "dr_status": args.dr_status,
        "dr_style": args.dr_style,
        "throttle_after": args.throttle_after,
        "throttle_for": args.throttle_for,
        "throttle_window": args.throttle_window,
        "fail_every": args.fail_every,
        "fail_status": args.fail_status,
        "window": args.window,
        "enquire_link_interval": args.enquire_link_interval,
        "default_coding": args.default_coding,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until interrupted; return the exit status."""
    args = build_parser().parse_args(argv)

    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.server import Site

    from junebug.smsc.control import ControlApi
    from junebug.smsc.simulator import SmscSimulator

    def trace(line: str) -> None:
        print(line, flush=True)

    try:
        simulator = SmscSimulator(
            reactor,
            args.system_id,
            args.password,
            first_id=args.first_id,
            trace=trace if args.verbose else None,
            **settings_from_args(args),
        )
    except SimulatorError as exc:
        print(f"jb-smsc: {exc}", file=sys.stderr)
        return 2

    outcome = {"status": 0}

    def started(ports: list[Any]) -> None:
        smpp, control = (port.getHost() for port in ports)
        print(
            READY_LINE.format(host=smpp.host, port=smpp.port, control_port=control.port),
            flush=True,
        )

    def failed(failure: Any) -> None:
        error = getattr(failure.value, "subFailure", failure).value
        print(f"jb-smsc: cannot listen: {error}", file=sys.stderr, flush=True)
        outcome["status"] = 1
        reactor.stop()

    from twisted.internet import defer

    listening = defer.gatherResults(
        [
            simulator.listen(TCP4ServerEndpoint(reactor, args.port, interface=args.interface)),
            TCP4ServerEndpoint(reactor, args.control_port, interface=args.interface).listen(
                Site(ControlApi(simulator).resource())
            ),
        ],
        consumeErrors=True,
    )
    listening.addCallbacks(started, failed)
    reactor.addSystemEventTrigger("before", "shutdown", simulator.stop)
    reactor.run()
    return outcome["status"]


if __name__ == "__main__":
    sys.exit(main())
