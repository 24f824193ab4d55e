"""Per-channel (and per-router) log files: one JSON object per line, rotated by size.

Every channel and router owns a :class:`ChannelLog`. Its file lives in the configured
logging directory and is named exactly after the owner's id; when the file grows past
``rotate_size`` it is renamed ``<id>.1`` (older ones shift to ``<id>.2``, ``<id>.3`` ...)
and a new one is started. ``GET /channels/<id>/logs`` reads it back with
:func:`read_logs`, newest entry first.

A line looks like::

    {"logger": "<owner id>", "level": 20, "timestamp": 1700000000.0,
     "message": "bound to smsc", "message_id": "...", <extra fields...>,
     "exception": {"class": "ValueError", "instance": "ValueError('x')", "stack": [...]}}

Secrets never reach the file: the message and every extra field pass through
:func:`redact`, which masks values under secret-looking keys and credentials written
inside URLs or ``key=value`` text.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

__all__ = [
    "FORWARDED_KEY",
    "MASK",
    "ChannelLog",
    "ChannelLogError",
    "is_secret_key",
    "read_logs",
    "redact",
]

#: What a secret value is replaced with.
MASK = "***"

#: Key set on every event this module forwards to Twisted's global log. A global
#: observer that copies Twisted events into channel logs must skip events carrying it.
FORWARDED_KEY = "junebug_channel_log"

#: Bytes read per step when reading a log file backwards.
READ_BLOCK_SIZE = 64 * 1024

#: Nesting depth after which :func:`redact` stops descending (guards against cycles).
_MAX_DEPTH = 32

_SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "auth_token",
        "mo_url_auth_token",
        "event_auth_token",
        "api_key",
        "apikey",
        "authorization",
        "private_key",
        "cookie",
        "set_cookie",
    }
)
_SECRET_SUFFIXES = ("_password", "_passwd", "_token", "_secret", "_api_key", "_authorization")

# Keys of a log line that extra fields may not replace.
_RESERVED = frozenset({"logger", "level", "timestamp", "message", "message_id", "exception"})


_log = Logger(namespace="junebug.logs")


class ChannelLogError(OSError):
    """The log file of a channel or router cannot be created or written."""


def is_secret_key(key: object, extra: Iterable[str] = ()) -> bool:
    """True when values stored under ``key`` must be masked.

    Matching ignores case and treats ``-`` like ``_`` (so HTTP header names match):
    the names in ``_SECRET_KEYS``, any name ending in ``_password``, ``_token``,
    ``_secret`` (and a few more), and any name in ``extra``.
    """
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if not isinstance(key, str):
        return False
    norm = key.strip().lower().replace("-", "_")
    if norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES):
        return True
    return any(norm == e.strip().lower().replace("-", "_") for e in extra)


# -- redaction of free text -------------------------------------------------------------

# scheme://user:password@host  ->  scheme://user:***@host. The password runs to the last
# "@" before a "/" or whitespace, so an unescaped "@" inside it is masked too.
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:]*):[^\s/]*@")

# A value after "key: " / "key = ": a quoted string, a bracketed list, an HTTP
# authorization scheme followed by its credentials, or one bare word.
_VALUE = (
    r"(?:b?\"(?:\\.|[^\"\\])*\""
    r"|b?'(?:\\.|[^'\\])*'"
    r"|\[[^\]]*\]"
    r"|(?:Basic|Bearer|Digest|Token)\s+[^\s&;,]+"
    r"|[^\s&;,}\]\"']+)"
)
# "key": value  and  'key': value  (JSON, Python reprs of dicts and headers).
_QUOTED_KEY = re.compile(
    r"(?P<head>(?P<q>[\"'])(?P<key>[A-Za-z0-9_.\-]{1,64})(?P=q)\s*:\s*)(?P<value>" + _VALUE + ")"
)
# key=value, key: value (query strings, form bodies, log text, HTTP header lines).
_BARE_KEY = re.compile(
    r"(?P<head>(?<![\w.\-\"'])(?P<key>[A-Za-z][A-Za-z0-9_.\-]{0,63})\s*[=:]\s*)(?P<value>"
    + _VALUE
    + ")",
    re.IGNORECASE,
)


# Every secret key name contains one of these, once normalised as ``is_secret_key``
# does (lower case, "-" as "_"): "password"/"passwd", "secret", "token", "api_key"/
# "apikey", "authorization", "private_key", "cookie" (tests/test_logs.py checks it).
_SECRET_NEEDLES = (
    "passw",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "cookie",
)


@functools.lru_cache(maxsize=256)
def _needles(extra: tuple[str, ...]) -> tuple[str, ...]:
    return _SECRET_NEEDLES + tuple(e.strip().lower().replace("-", "_") for e in extra)


def _redact_text(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with credentials in URLs and values of secret keys masked.

    Most text holds nothing to mask, and the three regular expressions cost more than
    the line they look at, so they run only when they could change something:

    * a URL with credentials needs "://" and "@";
    * a masked ``key: value`` / ``key=value`` needs ":" or "=", and a key that
      ``is_secret_key`` accepts. Such a key is ASCII (the patterns' key characters, and
      what IGNORECASE lets them match, e.g. the Kelvin sign, lower-case the same way
      inside and outside the text), so its normalised form is a substring of the
      text's normalised form, and every secret name contains one of ``_needles``.

    tests/test_logs.py checks with hypothesis that this equals ``_redact_text_full``.
    """
    if "@" in text and "://" in text:
        return _redact_text_full(text, extra)
    if ":" not in text and "=" not in text:
        return text
    extra = extra if isinstance(extra, tuple) else tuple(extra)
    try:
        needles = _needles(extra)
    except (AttributeError, TypeError):  # not names: let is_secret_key judge them
        return _redact_text_full(text, extra)
    normalised = text.lower().replace("-", "_")
    for needle in needles:
        if needle in normalised:
            return _redact_text_full(text, extra)
    return text


def _redact_text_full(text: str, extra: Iterable[str] = ()) -> str:
    def mask(match: re.Match[str]) -> str:
        if not is_secret_key(match.group("key"), extra):
            return match.group(0)
        value = match.group("value").removeprefix("b")
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{match.group('head')}{quote}{MASK}{quote}"

    text = _URL_CREDENTIALS.sub(lambda m: m.group("head") + ":" + MASK + "@", text)
    text = _QUOTED_KEY.sub(mask, text)
    return _BARE_KEY.sub(mask, text)


# -- redaction of structures ------------------------------------------------------------


def redact(value: Any, *, secret_keys: Iterable[str] = ()) -> Any:
    """Return a copy of ``value`` with secrets replaced by ``"***"``.

    Dicts (any mapping) and lists/tuples are copied recursively. A value stored under a
    secret key (see :func:`is_secret_key`, plus ``secret_keys``) becomes ``"***"``
    unless it is ``None``; so does the second item of a ``(name, value)`` pair whose
    name is a secret key (header lists). Strings keep their text but lose credentials
    written in URLs (``http://user:***@host``), ``key=value`` / ``key: value`` text and
    quoted ``"key": "value"`` text. Other values are returned unchanged.
    """
    extra = tuple(secret_keys)
    return _redact(value, extra, 0, jsonable=False)


def _redact(value: Any, extra: tuple[str, ...], depth: int, *, jsonable: bool) -> Any:
    if isinstance(value, str):
        return _redact_text(value, extra)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes | bytearray):
        if not jsonable:
            return value
        return _redact_text(bytes(value).decode("utf-8", "backslashreplace"), extra)
    if depth >= _MAX_DEPTH:
        return "<nested too deeply>"
    if _is_headers(value):
        value = {name: values for name, values in value.getAllRawHeaders()}
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if jsonable:
                key = _json_key(key)
            if item is not None and is_secret_key(key, extra):
                result[key] = MASK
            else:
                result[key] = _redact(item, extra, depth + 1, jsonable=jsonable)
        return result
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        if (
            len(items) == 2
            and isinstance(items[0], str | bytes)
            and items[1] is not None
            and is_secret_key(items[0], extra)
        ):
            items = [_redact(items[0], extra, depth + 1, jsonable=jsonable), MASK]
        else:
            items = [_redact(item, extra, depth + 1, jsonable=jsonable) for item in items]
        if isinstance(value, tuple) and not jsonable:
            return tuple(items)
        return items
    if not jsonable:
        return value
    return _redact_text(_safe_str(value), extra)


def _is_headers(value: object) -> bool:
    # twisted.web.http_headers.Headers, without importing twisted.web here.
    return callable(getattr(value, "getAllRawHeaders", None))


def _json_key(key: object) -> str | int | float | bool | None:
    if key is None or isinstance(key, str | int | float | bool):
        return key
    if isinstance(key, bytes):
        return key.decode("utf-8", "backslashreplace")
    return _safe_str(key)


def redacted_failure(failure: Any) -> Failure | None:
    """``failure`` (a Failure or exception) with secrets masked in its message.

    When the message holds nothing secret the original is returned. Otherwise the copy
    is an exception of a stand-in class with the same name and module (so error
    trackers group it the same way) and the original traceback.
    """
    if failure is None:
        return None
    if isinstance(failure, BaseException):
        failure = Failure(failure, type(failure), failure.__traceback__)
    original = _safe_str(failure.value)
    masked = _redact_text(original)
    if masked == original:
        return failure
    cls = failure.type
    stand_in = type(
        cls.__name__, (Exception,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
    )
    return Failure(stand_in(masked), stand_in, failure.getTracebackObject())


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


# How a line is written: json.dumps(entry, ensure_ascii=False, default=_safe_str), with
# the encoder built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_safe_str)
# What that encoder writes a string with, for lines without extra fields
# (``ChannelLog._line``).
_json_string = json.encoder.encode_basestring
_INFINITY = float("inf")


# -- exceptions -------------------------------------------------------------------------


def _render_exception(failure: Any) -> dict[str, Any]:
    """The ``exception`` object of a line: class name, repr of the instance, stack."""
    if isinstance(failure, BaseException):
        failure = Failure(failure, type(failure), failure.__traceback__)
    if not isinstance(failure, Failure):
        return {"class": type(failure).__name__, "instance": _safe_repr(failure), "stack": []}
    cls = failure.type
    if isinstance(cls, type):
        name = cls.__qualname__
        if cls.__module__ not in ("builtins", "exceptions"):
            name = f"{cls.__module__}.{name}"
    else:
        name = _safe_str(cls)
    frames = [
        traceback.FrameSummary(filename, lineno, funcname)
        for funcname, filename, lineno, _locals, _globals in failure.frames
    ]
    stack = [line.rstrip("\n") for line in traceback.format_list(frames)]
    return {"class": name, "instance": _safe_repr(failure.value), "stack": stack}


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _twisted_level(level: int) -> LogLevel:
    if level < logging.INFO:
        return LogLevel.debug
    if level < logging.WARNING:
        return LogLevel.info
    if level < logging.ERROR:
        return LogLevel.warn
    if level < logging.CRITICAL:
        return LogLevel.error
    return LogLevel.critical


def _check_owner_id(owner_id: str) -> None:
    if (
        not isinstance(owner_id, str)
        or not owner_id
        or owner_id in (".", "..")
        or "/" in owner_id
        or "\\" in owner_id
        or "\0" in owner_id
    ):
        raise ValueError(f"not a usable log file name: {owner_id!r}")


def _rotated_numbers(directory: str, name: str) -> list[int]:
    """Suffixes N of the existing ``<name>.N`` files, ascending."""
    pattern = re.compile(re.escape(name) + r"\.([1-9][0-9]*)")
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(pattern.fullmatch, entries) if m)


# -- writing ----------------------------------------------------------------------------


class ChannelLog:
    """The log of one channel or router: one JSON-lines file, rotated.

    ``directory`` is created (with parents) when missing; the file is
    ``<directory>/<owner_id>``. Lines below ``level`` are dropped, except wire lines
    (:meth:`wire`), which are written whenever ``wire_logging`` is true. Writing never
    raises into the caller: a failure is reported once on Twisted's global log and the
    next line is tried afresh. Each line is also forwarded to Twisted's global log under
    the namespace ``junebug.channel.<owner_id>``.

    ``rotate_size`` <= 0 turns rotation off; ``max_files`` is how many rotated files
    are kept (``None`` or 0: all of them). The ``secret_keys`` attribute (a set, empty
    at first) holds extra key names, beyond the built-in ones, whose values are masked:
    a transport adds its ``SECRET_KEYS`` with ``log.secret_keys |= SECRET_KEYS``.
    """

    wire_logging: bool = False

    def __init__(
        self,
        owner_id: str,
        directory: str,
        *,
        rotate_size: int = 1_000_000,
        max_files: int | None = 5,
        clock: Any = None,
        level: int = logging.INFO,
    ) -> None:
        _check_owner_id(owner_id)
        if clock is None:
            from twisted.internet import reactor as clock
        self.owner_id = owner_id
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, owner_id)
        self.rotate_size = rotate_size
        self.max_files = max_files
        self.level = level
        self.wire_logging = False
        self.secret_keys: set[str] = set()
        self._clock = clock
        self._logger = Logger(namespace=f"junebug.channel.{owner_id}", source=self)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._file: BinaryIO | None = None
        self._file_id: tuple[int, int] | None = None
        #: The start of every line, as the JSON encoder writes it.
        self._head = '{"logger": ' + _json_string(owner_id) + ', "level": '
        self._closed = False
        self._failing = False
        try:
            self._open()
        except OSError as e:
            raise ChannelLogError(
                e.errno or errno.EIO,
                f"cannot write the log file {self.path!r}: {e.strerror or e}",
            ) from e

    # -- public API ---------------------------------------------------------------------

    def log(
        self,
        level: int,
        message: str,
        *,
        message_id: str | None = None,
        failure: Any = None,
        **fields: Any,
    ) -> None:
        """Write one line at ``level`` (a Python ``logging`` level) unless it is below
        this log's ``level``."""
        self._log(level, message, message_id, fields, failure)

    def debug(self, message: str, *, message_id: str | None = None, **fields: Any) -> None:
        self._log(logging.DEBUG, message, message_id, fields, None)

    def info(self, message: str, *, message_id: str | None = None, **fields: Any) -> None:
        self._log(logging.INFO, message, message_id, fields, None)

    def warning(self, message: str, *, message_id: str | None = None, **fields: Any) -> None:
        self._log(logging.WARNING, message, message_id, fields, None)

    def error(
        self,
        message: str,
        *,
        message_id: str | None = None,
        failure: Any = None,
        **fields: Any,
    ) -> None:
        """Write an ERROR line; ``failure`` (a ``Failure`` or an exception) becomes the
        line's ``exception`` object."""
        self._log(logging.ERROR, message, message_id, fields, failure)

    def wire(
        self, direction: str, summary: str, *, message_id: str | None = None, **fields: Any
    ) -> None:
        """Wire-level detail (a PDU, an HTTP request...), written at DEBUG with a
        ``direction`` field, only while ``wire_logging`` is true (whatever ``level``)."""
        if not self.wire_logging:
            return
        self._emit(logging.DEBUG, summary, message_id, fields, None, {"direction": direction})

    def close(self) -> None:
        """Close the file. Lines logged afterwards are still written (the file is
        opened for each of them), so late callbacks lose nothing."""
        with self._lock:
            self._closed = True
            self._close_file()

    def __enter__(self) -> ChannelLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- building and writing a line ----------------------------------------------------

    def _log(
        self,
        level: int,
        message: str,
        message_id: str | None,
        fields: dict[str, Any],
        failure: Any,
    ) -> None:
        if level < self.level:
            return
        self._emit(level, message, message_id, fields, failure, None)

    def _emit(
        self,
        level: int,
        message: str,
        message_id: str | None,
        fields: dict[str, Any],
        failure: Any,
        reserved_fields: dict[str, Any] | None,
    ) -> None:
        # A global observer reacting to our forwarded event by logging here again
        # would loop forever: lines logged from inside our own forwarding are dropped.
        if getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            try:
                if fields or failure is not None or reserved_fields is not None:
                    entry: dict[str, Any] | None = self._entry(
                        level, message, message_id, fields, failure, reserved_fields
                    )
                    line = _ENCODER.encode(entry) + "\n"
                else:
                    line, entry = self._line(level, message, message_id)
                data = line.encode("utf-8", "backslashreplace")
            except Exception as e:
                self._report_failure(e)
                return
            self._write(data)
            if entry is not None:
                self._forward(entry, failure)
        finally:
            self._local.busy = False

    def _line(
        self, level: int, message: str, message_id: str | None
    ) -> tuple[str, dict[str, Any] | None]:
        """A line without extra fields or exception, written without building and
        encoding a dict: the same text as ``_ENCODER.encode(self._entry(...))``
        (tests/test_logs.py checks it with hypothesis). Returns the entry too when the
        line is forwarded (``_forward``), else None."""
        level = int(level)
        timestamp = float(self._clock.seconds())
        text = _redact_text(_safe_str(message), tuple(self.secret_keys))
        if timestamp != timestamp:
            stamp = "NaN"
        elif timestamp in (_INFINITY, -_INFINITY):
            stamp = "Infinity" if timestamp > 0 else "-Infinity"
        else:
            stamp = float.__repr__(timestamp)
        line = f'{self._head}{level}, "timestamp": {stamp}, "message": {_json_string(text)}'
        if message_id is None:
            line += "}\n"
        else:
            message_id = _safe_str(message_id)
            line += f', "message_id": {_json_string(message_id)}}}\n'
            if level < logging.WARNING:
                return line, None  # not forwarded: see _forward
        entry: dict[str, Any] = {
            "logger": self.owner_id,
            "level": level,
            "timestamp": timestamp,
            "message": text,
        }
        if message_id is not None:
            entry["message_id"] = message_id
        return line, entry

    def _entry(
        self,
        level: int,
        message: str,
        message_id: str | None,
        fields: dict[str, Any],
        failure: Any,
        reserved_fields: dict[str, Any] | None,
    ) -> dict[str, Any]:
        extra = tuple(self.secret_keys)
        entry: dict[str, Any] = {
            "logger": self.owner_id,
            "level": int(level),
            "timestamp": float(self._clock.seconds()),
            "message": _redact(_safe_str(message), extra, 0, jsonable=True),
        }
        if message_id is not None:
            entry["message_id"] = _safe_str(message_id)
        reserved = _RESERVED | set(reserved_fields) if reserved_fields else _RESERVED
        for key, value in fields.items():
            # Extra fields never replace the line's own keys; a clash is kept under
            # "field_<key>" rather than dropped.
            name = f"field_{key}" if key in reserved else key
            if value is not None and is_secret_key(key, extra):
                entry[name] = MASK
            else:
                entry[name] = _redact(value, extra, 0, jsonable=True)
        for key, value in (reserved_fields or {}).items():
            entry[key] = _redact(value, extra, 0, jsonable=True)
        if failure is not None:
            entry["exception"] = _redact(_render_exception(failure), extra, 0, jsonable=True)
        return entry

    def _write(self, data: bytes) -> None:
        with self._lock:
            try:
                size = self._open()
                if self.rotate_size > 0 and size >= self.rotate_size:
                    self._rotate()
                self._write_all(data)
            except Exception as e:
                self._report_failure(e)
                return
            finally:
                if self._closed:
                    self._close_file()
            self._failing = False

    def _open(self) -> int:
        """Make sure ``_file`` is an open handle on the file now at ``path``; returns
        the file's size.

        Reopens when the file was moved away or deleted meanwhile (another ChannelLog
        for the same owner, or another process, rotated it, or someone removed it):
        checked before every line. The size is the one ``stat`` found at ``path``
        (the same file as ``_file``), so it counts what other writers appended too."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if self._file is not None and st is not None and (st.st_dev, st.st_ino) == self._file_id:
            return st.st_size
        self._close_file()
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
        fst = os.fstat(handle.fileno())
        self._file, self._file_id = handle, (fst.st_dev, fst.st_ino)
        return fst.st_size

    def _close_file(self) -> None:
        handle, self._file, self._file_id = self._file, None, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()

    def _write_all(self, data: bytes) -> None:
        assert self._file is not None
        written = self._file.write(data)
        if written == len(data):
            return
        if not written:
            raise OSError(errno.EIO, f"short write to {self.path!r}")
        view = memoryview(data)[written:]
        while view:
            written = self._file.write(view)
            if not written:
                raise OSError(errno.EIO, f"short write to {self.path!r}")
            view = view[written:]

    def _rotate(self) -> None:
        """<name>.N -> <name>.N+1 (dropping those past ``max_files``), current ->
        <name>.1, then a new empty current file."""
        keep = self.max_files if self.max_files and self.max_files > 0 else None
        for number in reversed(_rotated_numbers(self.directory, self.owner_id)):
            older = f"{self.path}.{number}"
            if keep is not None and number >= keep:
                os.remove(older)
            else:
                os.replace(older, f"{self.path}.{number + 1}")
        self._close_file()
        os.replace(self.path, f"{self.path}.1")
        self._open()

    def _report_failure(self, error: BaseException) -> None:
        # Once per run of failures: a full disk must not flood the process log.
        if self._failing:
            return
        self._failing = True
        with contextlib.suppress(Exception):
            _log.error(
                "Cannot write channel log {path}: {error}; "
                "further failures are not reported until a line is written again",
                path=self.path,
                error=_redact_text(_safe_str(error)),
                **{FORWARDED_KEY: self.owner_id},
            )

    def _forward(self, entry: dict[str, Any], failure: Any = None) -> None:
        # Routine lines about one message stay in the channel's own log: at thousands of
        # messages a second they would swamp the process log (and cost a write each).
        if "message_id" in entry and entry["level"] < logging.WARNING:
            return
        text = entry["message"]
        exception = entry.get("exception")
        if exception:
            lines = [text, *exception["stack"], f"{exception['class']}: {exception['instance']}"]
            text = "\n".join(lines)
        with contextlib.suppress(Exception):
            self._logger.emit(
                _twisted_level(entry["level"]),
                "{junebug_text}",
                junebug_text=text,
                junebug_entry=entry,
                # The exception, for observers that report errors (Sentry), with any
                # secret in its message masked like everything else we log.
                junebug_failure=redacted_failure(failure),
                **{FORWARDED_KEY: self.owner_id},
            )


# -- reading ----------------------------------------------------------------------------


def read_logs(
    directory: str, owner_id: str, n: int, message_id: str | None = None
) -> list[dict[str, Any]]:
    """The newest ``n`` entries of a channel's or router's log, newest first.

    Reads the current file from its end backwards, then ``<owner_id>.1``,
    ``<owner_id>.2`` ... Blank lines, lines that are not JSON objects and a last line
    without its newline (still being written) are skipped. With ``message_id``, only
    entries carrying that ``message_id`` are returned. A missing directory or file
    yields ``[]``.
    """
    _check_owner_id(owner_id)
    if n <= 0:
        return []
    directory = os.fspath(directory)
    base = os.path.join(directory, owner_id)
    paths = [base] + [f"{base}.{k}" for k in _rotated_numbers(directory, owner_id)]
    result: list[dict[str, Any]] = []
    for path in paths:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue  # rotated away while we were listing
        with handle:
            for raw in _lines_backwards(handle, READ_BLOCK_SIZE):
                entry = _decode(raw)
                if entry is None:
                    continue
                if message_id is not None and entry.get("message_id") != message_id:
                    continue
                result.append(entry)
                if len(result) >= n:
                    return result
    return result


def _decode(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        entry = json.loads(raw)
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        return None
    return entry if isinstance(entry, dict) else None


def _lines_backwards(handle: BinaryIO, block_size: int) -> Iterator[bytes]:
    """Complete lines of a file, last first, reading ``block_size`` bytes at a time.

    Whatever follows the file's last newline (a line still being written) is skipped.
    """
    position = handle.seek(0, os.SEEK_END)
    pending = b""  # the start of a line whose beginning we have not read yet
    seen_newline = False
    while position > 0:
        step = min(block_size, position)
        position -= step
        handle.seek(position)
        block = handle.read(step) + pending
        pieces = block.split(b"\n")
        pending = pieces[0]
        complete = pieces[1:]
        if not seen_newline and complete:
            seen_newline = True
            complete.pop()  # text after the last newline: empty or partial
        yield from reversed(complete)
    if seen_newline and pending:
        yield pending
