"""``jb``: command-line flags + YAML file -> JunebugConfig -> reactor -> logging -> service.

Nothing here imports ``twisted.internet.reactor``: :func:`select_reactor` must be able to
install the reactor named by ``JUNEBUG_REACTOR`` before anything else does.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from junebug.config import (
    OPTIONS,
    ConfigError,
    JunebugConfig,
    Option,
    default_text,
    help_epilog,
    load_config_file,
    parse_bool_word,
    resolve,
)

__all__ = [
    "REACTORS",
    "available_reactors",
    "build_parser",
    "logging_disabled",
    "main",
    "make_log_observer",
    "make_sentry_observer",
    "parse_config",
    "select_reactor",
    "setup_logging",
]

DESCRIPTION = (
    "Junebug. A system for managing text messaging transports via a RESTful HTTP interface"
)

#: JUNEBUG_REACTOR names and the Twisted modules whose ``install()`` installs them.
REACTORS: Mapping[str, str] = {
    "SELECT": "twisted.internet.selectreactor",
    "POLL": "twisted.internet.pollreactor",
    "EPOLL": "twisted.internet.epollreactor",
    "KQUEUE": "twisted.internet.kqreactor",
    "WFMO": "twisted.internet.win32eventreactor",
    "IOCP": "twisted.internet.iocpreactor",
    "DEFAULT": "twisted.internet.default",
}

#: The process log line format: ``2026-11-27 10:00:00,123 [namespace] INFO: message``.
LOG_FORMAT = "%(asctime)s [%(name)s] %(levelname)s: %(message)s"
LOGFILE_MAX_BYTES = 1024 * 1024
LOGFILE_BACKUPS = 5


# --- arguments ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise ConfigError(message)


def _converter(option: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return option.parse_cli(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = option.dest  # argparse names the type in some messages
    return convert


def _help_text(option: Option) -> str:
    parts = [option.help]
    if option.file_key:
        if option.field is not None and not option.optional_key and option.cli != "append":
            parts.append(f"Default: {default_text(option)}.")
        parts.append(f"File key: {option.file_key}.")
    return " ".join(parts).replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The ``jb`` argument parser, built from :data:`junebug.config.OPTIONS`. Options not
    given are absent from the namespace it returns."""
    parser = _Parser(
        prog="jb",
        description=DESCRIPTION,
        epilog=help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    for option in OPTIONS:
        if not option.flags:
            continue  # config file only
        if option.cli == "flag":
            parser.add_argument(
                *option.flags, dest=option.dest, action="store_true", help=_help_text(option)
            )
            continue
        metavar = option.metavar or option.long.lstrip("-").replace("-", "_").upper()
        parser.add_argument(
            *option.flags,
            dest=option.dest,
            metavar=metavar,
            type=_converter(option),
            action="append" if option.cli == "append" else "store",
            help=_help_text(option),
        )
    return parser


def logging_disabled(environ: Mapping[str, str]) -> bool:
    """Whether JUNEBUG_DISABLE_LOGGING asks for no process log on stdout."""
    value = environ.get("JUNEBUG_DISABLE_LOGGING", "")
    if not value.strip():
        return False
    try:
        return parse_bool_word(value)
    except ValueError:
        raise ConfigError(
            f"JUNEBUG_DISABLE_LOGGING must be one of true/false/yes/no/1/0, got {value!r}"
        ) from None


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> JunebugConfig:
    """Parse ``jb``'s arguments (and the config file they name) into a JunebugConfig.

    Also checks the environment variables ``jb`` reads (JUNEBUG_REACTOR names a known
    reactor, JUNEBUG_DISABLE_LOGGING is a boolean) without acting on them.
    Raises ConfigError for anything wrong; ``--help`` raises SystemExit(0).
    """
    _reactor_module(environ.get("JUNEBUG_REACTOR", ""))
    logging_disabled(environ)
    given = dict(vars(build_parser().parse_args(list(argv))))
    path = given.pop("config", None)
    file_data = load_config_file(path) if path is not None else {}
    source = f"config file '{path}'" if path is not None else "command line"
    return resolve(file_data, given, source=source)


# --- reactor ------------------------------------------------------------------------------


def _reactor_module(name: str | None) -> str | None:
    if name is None or not name.strip():
        return None
    module = REACTORS.get(name.strip().upper())
    if module is None:
        raise ConfigError(
            f"JUNEBUG_REACTOR: unknown reactor {name!r}; choose one of "
            f"{', '.join(REACTORS)} (available here: {', '.join(available_reactors())})"
        )
    return module


def available_reactors() -> list[str]:
    """The JUNEBUG_REACTOR names whose reactor can be imported on this system."""
    found = []
    for name, module in REACTORS.items():
        try:
            importlib.import_module(module)
        except (ImportError, OSError):
            continue
        found.append(name)
    return found


def select_reactor(name: str | None) -> None:
    """Install the Twisted reactor named ``name`` (a JUNEBUG_REACTOR value, any case).

    None or empty: do nothing (Twisted installs its default when first imported).
    Raises ConfigError if the name is unknown, the reactor does not exist on this system
    (naming those that do), or a different reactor is already installed."""
    module_name = _reactor_module(name)
    if module_name is None:
        return
    label = name.strip().upper()
    try:
        module = importlib.import_module(module_name)
    except (ImportError, OSError):
        raise ConfigError(
            f"JUNEBUG_REACTOR: the {label} reactor is not available on this system; "
            f"available here: {', '.join(available_reactors())}"
        ) from None
    from twisted.internet.error import ReactorAlreadyInstalledError

    already = "a reactor is already installed"
    if "twisted.internet.reactor" in sys.modules:
        raise ConfigError(f"JUNEBUG_REACTOR: cannot install the {label} reactor, {already}")
    try:
        module.install()
    except ReactorAlreadyInstalledError:
        raise ConfigError(
            f"JUNEBUG_REACTOR: cannot install the {label} reactor, a reactor is already installed"
        ) from None


# --- process logging ----------------------------------------------------------------------

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def make_log_observer() -> Callable[[dict[str, Any]], None]:
    """A Twisted log observer forwarding each event to the Python logger named after the
    event's namespace, at the matching level, with a failure's traceback appended."""
    from twisted.logger import formatEvent

    def observe(event: dict[str, Any]) -> None:
        level = _LEVELS.get(getattr(event.get("log_level"), "name", "info"), logging.INFO)
        logger = logging.getLogger(event.get("log_namespace") or "twisted")
        if not logger.isEnabledFor(level):
            return
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}\n{failure.getTraceback()}"
        logger.log(level, text)

    return observe


def setup_logging(
    config: JunebugConfig,
    *,
    disable_stdout: bool = False,
    stream: IO[str] | None = None,
    root: logging.Logger | None = None,
) -> Callable[[], None]:
    """Send Python logging (which :func:`make_log_observer` feeds) to ``stream``
    (default stdout) unless ``disable_stdout``, and to ``config.logfile`` when set,
    rotated at 1 MiB keeping 5. Returns a function that removes the handlers again."""
    root = logging.getLogger() if root is None else root
    formatter = logging.Formatter(LOG_FORMAT)
    handlers: list[logging.Handler] = []
    if not disable_stdout:
        handlers.append(logging.StreamHandler(sys.stdout if stream is None else stream))
    if config.logfile:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                config.logfile,
                maxBytes=LOGFILE_MAX_BYTES,
                backupCount=LOGFILE_BACKUPS,
                encoding="utf-8",
            )
        )
    if not handlers:
        handlers.append(logging.NullHandler())  # keep logging's last resort off stderr
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)

    def remove() -> None:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()

    return remove


def make_sentry_observer(
    capture: Callable[[Any], Any], set_tag: Callable[[str, str], Any] | None = None
) -> Callable[[dict[str, Any]], None]:
    """A Twisted log observer reporting each error-or-worse event that carries an
    exception to ``capture`` (``sentry_sdk.capture_exception``, given an exc_info
    tuple). Errors logged in a channel's log are tagged with its ``channel_id``
    through ``set_tag`` (called inside the scope of that one report)."""
    from twisted.logger import LogLevel
    from twisted.python.failure import Failure

    from junebug.logs import FORWARDED_KEY

    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        failure = event.get("log_failure") or event.get("junebug_failure")
        if failure is None or level < LogLevel.error:
            return
        if isinstance(failure, BaseException):
            failure = Failure(failure)
        exc_info = (failure.type, failure.value, failure.getTracebackObject())
        owner = event.get(FORWARDED_KEY)
        if owner and set_tag is not None:
            import sentry_sdk

            with sentry_sdk.new_scope():
                set_tag("channel_id", owner)
                capture(exc_info)
        else:
            capture(exc_info)

    return observe


def scrub_sentry_event(event: dict[str, Any], hint: Any = None) -> dict[str, Any]:
    """Mask secrets (passwords, tokens, URL credentials) anywhere in a Sentry event."""
    from junebug.logs import redact

    return redact(event)


def _start_logging(config: JunebugConfig, environ: Mapping[str, str]) -> None:
    from twisted.logger import globalLogBeginner

    setup_logging(config, disable_stdout=logging_disabled(environ))
    observers = [make_log_observer()]
    if config.sentry_dsn:
        import sentry_sdk

        sentry_sdk.init(
            dsn=config.sentry_dsn,
            default_integrations=False,
            # Frame locals can hold passwords and tokens: never send them.
            include_local_variables=False,
            before_send=scrub_sentry_event,
        )
        observers.append(make_sentry_observer(sentry_sdk.capture_exception, sentry_sdk.set_tag))
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)


# --- entry point --------------------------------------------------------------------------


def _fail(error: ConfigError) -> int:
    message = " ".join(str(error).split())
    print(f"jb: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run ``jb``: returns the exit code (2 for a configuration error, else the service's)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ
    try:
        config = parse_config(argv, environ)
        select_reactor(environ.get("JUNEBUG_REACTOR"))
    except ConfigError as exc:
        return _fail(exc)
    _start_logging(config, environ)
    from junebug.service import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
