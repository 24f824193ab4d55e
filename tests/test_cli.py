"""junebug.cli: flags, precedence over the file, the mode rule, the environment, main()."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher

from junebug import cli
from junebug.cli import (
    build_parser,
    logging_disabled,
    make_log_observer,
    parse_config,
    select_reactor,
    setup_logging,
)
from junebug.config import OPTIONS, ConfigError, JunebugConfig

ROOT = Path(__file__).resolve().parent.parent
JB = ROOT / ".venv" / "bin" / "jb"
PYTHON = ROOT / ".venv" / "bin" / "python"

#: The flags of spec 1.3/1.4, plus our --data-dir, written out by hand.
SPEC_FLAGS = [
    ("--config", "-c"),
    ("--interface", "-i"),
    ("--port", "-p"),
    ("--log-file", "-l"),
    ("--sentry-dsn", "-sd"),
    ("--redis-host", "-redish"),
    ("--redis-port", "-redisp"),
    ("--redis-db", "-redisdb"),
    ("--redis-password", "-redispass"),
    ("--amqp-host", "-amqph"),
    ("--amqp-vhost", "-amqpvh"),
    ("--amqp-port", "-amqpp"),
    ("--amqp-user", "-amqpu"),
    ("--amqp-password", "-amqppass"),
    ("--inbound-message-ttl", "-ittl"),
    ("--outbound-message-ttl", "-ottl"),
    ("--allow-expired-replies", "-aer"),
    ("--channels", "-ch"),
    ("--replace-channels", "-rch"),
    ("--routers", None),
    ("--replace-routers", None),
    ("--plugin", "-pl"),
    ("--metric-window", "-mw"),
    ("--logging-path", "-lp"),
    ("--log-rotate-size", "-lrs"),
    ("--max-log-files", "-mlf"),
    ("--max-logs", "-ml"),
    ("--rabbitmq-management-interface", "-rmi"),
    ("--data-dir", "-dd"),
]

#: (long flag, value on the command line, attribute path, expected value).
VALUE_FLAGS: list[tuple[str, str, str, Any]] = [
    ("--interface", "0.0.0.0", "interface", "0.0.0.0"),
    ("--port", "8000", "port", 8000),
    ("--log-file", "/tmp/jb.log", "logfile", "/tmp/jb.log"),
    ("--sentry-dsn", "https://k@s.example/1", "sentry_dsn", "https://k@s.example/1"),
    ("--redis-host", "redis.example", "redis.host", "redis.example"),
    ("--redis-port", "6380", "redis.port", 6380),
    ("--redis-db", "4", "redis.db", 4),
    ("--redis-password", "pw", "redis.password", "pw"),
    ("--amqp-host", "rabbit.example", "amqp.hostname", "rabbit.example"),
    ("--amqp-vhost", "/jb", "amqp.vhost", "/jb"),
    ("--amqp-port", "5673", "amqp.port", 5673),
    ("--amqp-user", "jbuser", "amqp.username", "jbuser"),
    ("--amqp-password", "jbpass", "amqp.password", "jbpass"),
    ("--inbound-message-ttl", "30", "inbound_message_ttl", 30),
    ("--outbound-message-ttl", "40", "outbound_message_ttl", 40),
    ("--channels", "sms:pkg.mod.Sms", "channels", {"sms": "pkg.mod.Sms"}),
    ("--replace-channels", "true", "replace_channels", True),
    ("--routers", "kw:pkg.mod.Keyword", "routers", {"kw": "pkg.mod.Keyword"}),
    ("--replace-routers", "yes", "replace_routers", True),
    ("--plugin", '{"type": "pkg.P", "a": 1}', "plugins", [{"type": "pkg.P", "a": 1}]),
    ("--metric-window", "2.5", "metric_window", 2.5),
    ("--logging-path", "/var/log/jb", "logging_path", "/var/log/jb"),
    ("--log-rotate-size", "2048", "log_rotate_size", 2048),
    ("--max-log-files", "0", "max_log_files", 0),
    ("--max-logs", "12", "max_logs", 12),
    ("--rabbitmq-management-interface", "localhost:15672", "rabbitmq_management_interface")
    + ("localhost:15672",),
    ("--data-dir", "/var/lib/jb", "data_dir", "/var/lib/jb"),
]

SHORT = {long: short for long, short in SPEC_FLAGS}


def lookup(config: JunebugConfig, path: str) -> Any:
    field, _, key = path.partition(".")
    value = getattr(config, field)
    return value[key] if key else value


def parse(*argv: str, environ: dict[str, str] | None = None) -> JunebugConfig:
    return parse_config(list(argv), environ or {})


def write(tmp_path: Path, text: str, name: str = "junebug.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- flags --------------------------------------------------------------------------------


def test_flags_are_exactly_the_spec_ones() -> None:
    declared = [(o.long, o.short) for o in OPTIONS if o.long]
    assert declared == SPEC_FLAGS


def test_value_flag_table_covers_every_option() -> None:
    tested = {long for long, *_ in VALUE_FLAGS} | {"--config", "--allow-expired-replies"}
    assert tested == {long for long, _ in SPEC_FLAGS}


def _forms(flag: str, text: str) -> list[tuple[str, list[str]]]:
    forms = [(flag, [flag, text]), (f"{flag}=", [f"{flag}={text}"])]
    if SHORT[flag]:
        forms.append((SHORT[flag], [SHORT[flag], text]))
    return forms


FORMS = [
    pytest.param(argv, path, expected, id=name)
    for flag, text, path, expected in VALUE_FLAGS
    for name, argv in _forms(flag, text)
]


@pytest.mark.parametrize(("argv", "path", "expected"), FORMS)
def test_every_flag_in_every_form(argv: list[str], path: str, expected: Any) -> None:
    config = parse(*argv)
    assert lookup(config, path) == expected
    assert path.partition(".")[0] in config.explicit


@pytest.mark.parametrize("flag", ["--allow-expired-replies", "-aer"])
def test_allow_expired_replies_flag(flag: str) -> None:
    assert parse(flag).allow_expired_replies is True
    assert parse().allow_expired_replies is False


@pytest.mark.parametrize("flag", ["--config", "-c"])
def test_config_flag_long_and_short(tmp_path: Path, flag: str) -> None:
    path = write(tmp_path, "port: 9123\n")
    assert parse(flag, path).port == 9123


def test_spec_examples_with_multi_letter_short_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "interface: 10.0.0.1\n")
    config = parse(
        "-redish", "localhost", "-p", "8000", "-c", path, "-amqppass", "x", "-rmi", "h:1"
    )
    assert config.redis["host"] == "localhost"
    assert config.port == 8000
    assert config.interface == "10.0.0.1"
    assert config.amqp["password"] == "x"
    assert config.rabbitmq_management_interface == "h:1"


def test_prefix_flags_do_not_swallow_longer_ones() -> None:
    # -l / -lp / -lrs, -p / -pl, -c / -ch, -ml / -mlf share prefixes
    config = parse(
        "-l", "a.log", "-lp", "logs2/", "-lrs", "5", "-pl", '{"type": "x.Y"}', "-p", "81"
    )
    assert (config.logfile, config.logging_path, config.log_rotate_size) == ("a.log", "logs2/", 5)
    assert config.plugins == [{"type": "x.Y"}] and config.port == 81
    config = parse("-ch", "a:b.C", "-ml", "3", "-mlf", "4")
    assert (config.channels, config.max_logs, config.max_log_files) == ({"a": "b.C"}, 3, 4)


def test_repeatable_flags_collect_every_value() -> None:
    config = parse(
        "-ch", "a:x.A", "--channels", "b:x.B",
        "--routers", "r:x.R", "--routers", "s:x.S",
        "-pl", '{"type": "p.One"}', "--plugin", '{"type": "p.Two"}',
    )  # fmt: skip
    assert config.channels == {"a": "x.A", "b": "x.B"}
    assert config.routers == {"r": "x.R", "s": "x.S"}
    assert config.plugins == [{"type": "p.One"}, {"type": "p.Two"}]


def test_type_mapping_splits_on_the_first_colon() -> None:
    assert parse("-ch", "smpp:pkg.mod:Klass").channels == {"smpp": "pkg.mod:Klass"}


def test_no_flags_gives_the_defaults() -> None:
    assert parse() == JunebugConfig()


def test_parser_leaves_out_flags_not_given() -> None:
    namespace = build_parser().parse_args(["-p", "1"])
    assert vars(namespace) == {"port": 1}


# --- the mode rule ------------------------------------------------------------------------


def test_nothing_named_means_embedded_everything() -> None:
    config = parse("-p", "8000", "-dd", "/tmp/d")
    assert config.embedded_redis is True
    assert config.embedded_amqp is True
    assert config.data_dir == "/tmp/d"


@pytest.mark.parametrize(
    "argv",
    [["-redish", "h"], ["--redis-port", "6390"], ["-redisdb", "1"], ["-redispass", "p"]],
)
def test_any_redis_flag_means_external_redis(argv: list[str]) -> None:
    config = parse(*argv)
    assert config.embedded_redis is False
    assert config.embedded_amqp is True
    assert set(config.redis) == {"host", "port", "db", "password"}


@pytest.mark.parametrize(
    "argv",
    [["-amqph", "h"], ["--amqp-vhost", "/v"], ["-amqpp", "5"], ["-amqpu", "u"], ["-amqppass", "p"]],
)
def test_any_amqp_flag_means_rabbitmq(argv: list[str]) -> None:
    config = parse(*argv)
    assert config.embedded_amqp is False
    assert config.embedded_redis is True


def test_redis_key_in_file_means_external_even_when_empty(tmp_path: Path) -> None:
    config = parse("-c", write(tmp_path, "redis: {}\n"))
    assert config.embedded_redis is False
    assert config.redis == {"host": "localhost", "port": 6379, "db": 0, "password": None}
    assert config.embedded_amqp is True


def test_amqp_key_in_file_means_rabbitmq(tmp_path: Path) -> None:
    config = parse("-c", write(tmp_path, "amqp:\n  vhost: /x\n"))
    assert config.embedded_amqp is False
    assert config.amqp["hostname"] == "127.0.0.1" and config.amqp["vhost"] == "/x"
    assert config.embedded_redis is True


def test_other_file_fields_keep_embedded_mode(tmp_path: Path) -> None:
    config = parse("-c", write(tmp_path, "port: 1\ndata_dir: d\nchannels: {}\n"))
    assert config.embedded_redis is True and config.embedded_amqp is True


# --- precedence ---------------------------------------------------------------------------

FILE = """\
interface: 10.1.1.1
port: 9000
logfile: file.log
redis:
  host: file-redis
  password: filepw
  key_prefix: jb
amqp:
  hostname: file-rabbit
  username: fileuser
inbound_message_ttl: 11
allow_expired_replies: true
channels:
  a: file.A
  b: file.B
replace_channels: true
routers:
  r: file.R
plugins:
  - type: file.Plugin
metric_window: 3
max_log_files: 9
"""


def test_file_values_apply_when_flags_are_absent(tmp_path: Path) -> None:
    config = parse("-c", write(tmp_path, FILE))
    assert config.interface == "10.1.1.1" and config.port == 9000
    assert config.logfile == "file.log"
    assert config.inbound_message_ttl == 11
    assert config.allow_expired_replies is True  # quirk (b): the file's true is honoured
    assert config.replace_channels is True
    assert config.metric_window == 3.0
    assert config.max_log_files == 9
    assert config.outbound_message_ttl == 172800  # not in file, not on CLI: default


def test_flags_override_file_values(tmp_path: Path) -> None:
    config = parse(
        "-c", write(tmp_path, FILE),
        "-p", "9001", "-i", "0.0.0.0", "-ittl", "12", "-rch", "false", "-mw", "4", "-mlf", "0",
    )  # fmt: skip
    assert config.port == 9001 and config.interface == "0.0.0.0"
    assert config.inbound_message_ttl == 12
    assert config.replace_channels is False
    assert config.metric_window == 4.0
    assert config.max_log_files == 0
    assert config.logfile == "file.log"


def test_flag_order_relative_to_config_does_not_matter(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    assert parse("-p", "9002", "-c", path).port == 9002
    assert parse("-c", path, "-p", "9002").port == 9002


def test_redis_and_amqp_merge_key_by_key(tmp_path: Path) -> None:
    config = parse("-c", write(tmp_path, FILE), "-redisdb", "5", "-amqpp", "5999", "-amqpvh", "/v")
    assert config.redis == {
        "host": "file-redis",
        "port": 6379,
        "db": 5,
        "password": "filepw",
        "key_prefix": "jb",
    }
    assert config.amqp == {
        "hostname": "file-rabbit",
        "vhost": "/v",
        "port": 5999,
        "username": "fileuser",
        "password": "guest",
        "db": 0,
    }


def test_flag_overrides_file_key_in_dict(tmp_path: Path) -> None:
    config = parse("-c", write(tmp_path, FILE), "-redish", "cli-redis", "-redispass", "clipw")
    assert config.redis["host"] == "cli-redis"
    assert config.redis["password"] == "clipw"
    assert config.redis["key_prefix"] == "jb"


def test_channels_and_routers_flags_replace_file_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    config = parse("-c", path, "-ch", "c:cli.C")
    assert config.channels == {"c": "cli.C"}
    assert config.routers == {"r": "file.R"}
    config = parse("-c", path, "--routers", "s:cli.S")
    assert config.routers == {"s": "cli.S"}
    assert config.channels == {"a": "file.A", "b": "file.B"}


def test_plugin_flags_are_appended_to_file_plugins(tmp_path: Path) -> None:
    config = parse("-c", write(tmp_path, FILE), "-pl", '{"type": "cli.Plugin", "k": [1]}')
    assert config.plugins == [{"type": "file.Plugin"}, {"type": "cli.Plugin", "k": [1]}]


# --- the original's quirks, resolved ------------------------------------------------------


def test_max_log_files_defaults_to_five_from_the_command_line() -> None:
    assert parse("-p", "8000").max_log_files == 5
    assert parse("-mlf", "0").max_log_files == 0


def test_allow_expired_replies_file_true_without_flag(tmp_path: Path) -> None:
    assert parse("-c", write(tmp_path, "allow_expired_replies: true\n")).allow_expired_replies
    path = write(tmp_path, "allow_expired_replies: false\n", "f.yaml")
    assert parse("-c", path).allow_expired_replies is False
    assert parse("-c", path, "-aer").allow_expired_replies is True


@pytest.mark.parametrize(
    ("word", "value"),
    [("true", True), ("True", True), ("YES", True), ("1", True)]
    + [("false", False), ("False", False), ("no", False), ("0", False), ("NO", False)],
)
@pytest.mark.parametrize("flag", ["--replace-channels", "-rch", "--replace-routers"])
def test_replace_flags_take_boolean_words(flag: str, word: str, value: bool) -> None:
    config = parse(flag, word)
    field = "replace_routers" if "routers" in flag else "replace_channels"
    assert getattr(config, field) is value


@pytest.mark.parametrize("flag", ["--replace-channels", "-rch", "--replace-routers"])
@pytest.mark.parametrize("word", ["maybe", "", "2", "on"])
def test_replace_flags_reject_other_words(flag: str, word: str) -> None:
    with pytest.raises(ConfigError, match=r"expected one of true/false/yes/no/1/0"):
        parse(flag, word)


def test_replace_flag_false_overrides_file_true(tmp_path: Path) -> None:
    path = write(tmp_path, "replace_channels: true\nreplace_routers: true\n")
    config = parse("-c", path, "-rch", "false", "--replace-routers", "no")
    assert config.replace_channels is False and config.replace_routers is False


# --- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "0"], "argument --port/-p: expected an integer from 1 to 65535, got '0'"),
        (["--port", "65536"], "argument --port/-p: expected an integer from 1 to 65535"),
        (["-p", "http"], "argument --port/-p: expected an integer from 1 to 65535, got 'http'"),
        (["-redisp", "0"], "argument --redis-port/-redisp: expected an integer from 1 to 65535"),
        (["-amqpp", "x"], "argument --amqp-port/-amqpp: expected an integer from 1 to 65535"),
        (["-redisdb", "-1"], "argument --redis-db/-redisdb: expected an integer >= 0"),
        (["-ittl", "-5"], "argument --inbound-message-ttl/-ittl: expected an integer >= 0"),
        (["-ottl", "1.5"], "argument --outbound-message-ttl/-ottl: expected an integer >= 0"),
        (["-lrs", "-1"], "argument --log-rotate-size/-lrs: expected an integer >= 0"),
        (["-mlf", "-1"], "argument --max-log-files/-mlf: expected an integer >= 0"),
        (["-ml", "lots"], "argument --max-logs/-ml: expected an integer >= 0, got 'lots'"),
        (["-mw", "0"], "argument --metric-window/-mw: expected a number > 0, got '0'"),
        (["-mw", "nan"], "argument --metric-window/-mw: expected a number > 0, got 'nan'"),
        (["-mw", "-2"], "argument --metric-window/-mw: expected a number > 0"),
        (["-ch", "sms"], "argument --channels/-ch: expected TYPE:python.class.Path, got 'sms'"),
        (["-ch", ":pkg.C"], "argument --channels/-ch: expected TYPE:python.class.Path"),
        (["--routers", "kw:"], "argument --routers: expected TYPE:python.class.Path, got 'kw:'"),
        (["-pl", "{bad"], "argument --plugin/-pl: expected a JSON object (invalid JSON: "),
        (["-pl", "[1]"], "argument --plugin/-pl: expected a JSON object with a 'type' key"),
        (["-pl", '{"a": 1}'], "argument --plugin/-pl: expected a JSON object with a 'type' key"),
        (["-pl", '{"type": 3}'], "argument --plugin/-pl: expected a JSON object with a 'type'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-p"], "argument --port/-p: expected one argument"),
        (["extra"], "unrecognized arguments: extra"),
    ],
)
def test_bad_flag_values_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(*argv)
    assert str(info.value).startswith(message)


def test_bad_config_file_through_the_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "port: abc\n")
    with pytest.raises(ConfigError) as info:
        parse("-c", path)
    assert str(info.value) == (
        f"config file '{path}': field 'port' must be an integer from 1 to 65535, got 'abc'"
    )


# --- environment --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "disabled"),
    [("", False), ("true", True), ("1", True), ("YES", True), ("false", False), ("0", False)],
)
def test_logging_disabled_values(value: str, disabled: bool) -> None:
    assert logging_disabled({"JUNEBUG_DISABLE_LOGGING": value}) is disabled


def test_logging_disabled_unset_and_bad() -> None:
    assert logging_disabled({}) is False
    with pytest.raises(ConfigError, match=r"^JUNEBUG_DISABLE_LOGGING must be one of"):
        parse(environ={"JUNEBUG_DISABLE_LOGGING": "perhaps"})


def test_parse_config_rejects_unknown_reactor_name() -> None:
    with pytest.raises(ConfigError, match=r"^JUNEBUG_REACTOR: unknown reactor 'turbo'"):
        parse(environ={"JUNEBUG_REACTOR": "turbo"})
    assert parse(environ={"JUNEBUG_REACTOR": "select"}) == JunebugConfig()


def test_available_reactors_on_this_system() -> None:
    available = cli.available_reactors()
    assert "SELECT" in available and "DEFAULT" in available
    if sys.platform.startswith("linux"):
        assert "EPOLL" in available and "POLL" in available
        assert "KQUEUE" not in available and "IOCP" not in available
        assert "WFMO" not in available


def test_select_reactor_with_nothing_does_nothing() -> None:
    before = sys.modules.get("twisted.internet.reactor")
    select_reactor(None)
    select_reactor("")
    assert sys.modules.get("twisted.internet.reactor") is before


def test_select_reactor_when_one_is_installed() -> None:
    # this test process already runs a reactor (pytest-twisted): installing another fails
    import twisted.internet.reactor  # noqa: F401

    with pytest.raises(ConfigError, match=r"a reactor is already installed"):
        select_reactor("select")


# --- process logging ----------------------------------------------------------------------

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(?P<ns>[^\]]+)\] (?P<lvl>\w+): ")


@pytest.fixture
def logger_root():
    """A private logger standing in for the root logger, with its level restored."""
    root = logging.getLogger()
    level = root.level
    yield root
    root.setLevel(level)


def emit(namespace: str) -> Logger:
    publisher = LogPublisher()
    publisher.addObserver(make_log_observer())
    return Logger(namespace=namespace, observer=publisher)


def test_twisted_events_go_to_stdout_in_the_documented_format(logger_root) -> None:
    stream = io.StringIO()
    remove = setup_logging(JunebugConfig(), stream=stream)
    try:
        log = emit("junebug.testing")
        log.info("hello {who}", who="world")
        log.debug("not shown")
        log.warn("careful")
    finally:
        remove()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = LINE.match(lines[0])
    assert first and first["ns"] == "junebug.testing" and first["lvl"] == "INFO"
    assert lines[0].endswith("INFO: hello world")
    assert lines[1].endswith("[junebug.testing] WARNING: careful")


def test_failures_carry_their_traceback(logger_root) -> None:
    stream = io.StringIO()
    remove = setup_logging(JunebugConfig(), stream=stream)
    try:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            emit("junebug.boom").failure("it broke")
    finally:
        remove()
    text = stream.getvalue()
    assert "[junebug.boom] CRITICAL: it broke" in text
    assert "ZeroDivisionError" in text


def test_logfile_gets_the_lines_and_rotates(tmp_path: Path, logger_root) -> None:
    logfile = tmp_path / "jb.log"
    stream = io.StringIO()
    before = set(logging.getLogger().handlers)
    remove = setup_logging(JunebugConfig(logfile=str(logfile)), stream=stream)
    try:
        added = [h for h in logging.getLogger().handlers if h not in before]
        rotating = [h for h in added if isinstance(h, logging.handlers.RotatingFileHandler)]
        assert len(rotating) == 1
        assert rotating[0].maxBytes == 1024 * 1024
        assert rotating[0].backupCount == 5
        emit("junebug.file").info("to the file")
    finally:
        remove()
    assert "[junebug.file] INFO: to the file" in logfile.read_text()
    assert "to the file" in stream.getvalue()
    assert not set(logging.getLogger().handlers) - before


def test_disabled_stdout_still_writes_the_logfile(tmp_path: Path, logger_root) -> None:
    logfile = tmp_path / "jb.log"
    stream = io.StringIO()
    remove = setup_logging(JunebugConfig(logfile=str(logfile)), disable_stdout=True, stream=stream)
    try:
        emit("junebug.quiet").info("only in the file")
    finally:
        remove()
    assert stream.getvalue() == ""
    assert "only in the file" in logfile.read_text()


def test_sentry_observer_captures_failures_only() -> None:
    captured: list[Any] = []
    publisher = LogPublisher()
    publisher.addObserver(cli.make_sentry_observer(captured.append))
    log = Logger(namespace="junebug.sentry", observer=publisher)
    log.error("no failure here")
    try:
        raise KeyError("k")
    except KeyError:
        log.failure("with a failure")
    try:
        raise ValueError("v")
    except ValueError:
        log.failure("only a warning", level=LogLevel.warn)
    assert len(captured) == 1
    exc_type, exc_value, _ = captured[0]
    assert exc_type is KeyError and exc_value.args == ("k",)


# --- main() -------------------------------------------------------------------------------


@pytest.fixture
def fake_service(monkeypatch: pytest.MonkeyPatch) -> list[JunebugConfig]:
    """junebug.service replaced by a module whose run() records its config and returns 3;
    process logging is not started."""
    calls: list[JunebugConfig] = []
    module = types.ModuleType("junebug.service")

    def run(config: JunebugConfig) -> int:
        calls.append(config)
        return 3

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "junebug.service", module)
    started: list[Any] = []
    monkeypatch.setattr(cli, "_start_logging", lambda config, environ: started.append(config))
    return calls


def test_main_runs_the_service_with_the_config(fake_service: list[JunebugConfig]) -> None:
    assert cli.main(["-p", "9001", "-redish", "r"], environ={}) == 3
    (config,) = fake_service
    assert config.port == 9001
    assert config.redis["host"] == "r" and config.embedded_redis is False


def test_main_reports_errors_on_one_line(
    fake_service: list[JunebugConfig], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["-c", write(tmp_path, "prot: 1\n")], environ={}) == 2
    err = capsys.readouterr().err
    assert err.startswith("jb: error: config file '")
    assert err.endswith("unknown field 'prot' (did you mean 'port'?)\n")
    assert err.count("\n") == 1
    assert fake_service == []


def test_main_help_exits_zero(fake_service: list[JunebugConfig], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"], environ={})
    assert info.value.code == 0
    assert "--redis-host REDIS_HOST, -redish REDIS_HOST" in capsys.readouterr().out
    assert fake_service == []


# --- the real command, in subprocesses ----------------------------------------------------

FAKE_RUNNER = """\
import sys, types
module = types.ModuleType("junebug.service")
def run(config):
    from twisted.internet import reactor
    from twisted.logger import Logger
    Logger(namespace="junebug.fake").info("reactor is {name}", name=type(reactor).__name__)
    print("RAN", config.port, config.embedded_redis, config.embedded_amqp, flush=True)
    return 5
module.run = run
sys.modules["junebug.service"] = module
from junebug.cli import main
sys.exit(main())
"""


def run_jb(
    args: list[str], env: dict[str, str] | None = None, fake: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JUNEBUG_")}
    environ.update(env or {})
    command = [str(PYTHON), str(fake), *args] if fake else [str(JB), *args]
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=60)


@pytest.fixture
def fake_runner(tmp_path: Path) -> Path:
    path = tmp_path / "fake_runner.py"
    path.write_text(FAKE_RUNNER)
    return path


@pytest.mark.slow
def test_jb_help_lists_every_flag_and_the_mode_rule() -> None:
    result = run_jb(["--help"])
    assert result.returncode == 0
    for long, short in SPEC_FLAGS:
        assert long in result.stdout
        if short:
            assert f", {short} " in result.stdout or f", {short}\n" in result.stdout
    text = " ".join(result.stdout.split())
    assert "never falls back to the embedded one" in text
    assert "JUNEBUG_REACTOR" in text and "JUNEBUG_DISABLE_LOGGING" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("port: [\n", "is not valid YAML"),
        ("prot: 8080\n", "unknown field 'prot' (did you mean 'port'?)"),
        ("redis:\n  port: lots\n", "field 'redis.port' must be an integer from 1 to 65535"),
        (None, "does not exist"),
    ],
)
def test_jb_bad_config_file_exits_2(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    result = run_jb(["-c", str(path)])
    assert result.returncode == 2
    assert result.stderr.startswith(f"jb: error: config file '{path}'")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_jb_bad_flag_exits_2() -> None:
    result = run_jb(["-redisp", "99999"])
    assert result.returncode == 2
    assert result.stderr == (
        "jb: error: argument --redis-port/-redisp: expected an integer from 1 to 65535, "
        "got '99999'\n"
    )


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux reactors")
@pytest.mark.parametrize("name", ["KQUEUE", "iocp", "WFMO"])
def test_jb_reactor_missing_here(name: str) -> None:
    result = run_jb([], env={"JUNEBUG_REACTOR": name})
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith(f"jb: error: JUNEBUG_REACTOR: the {name.upper()} reactor is not")
    assert "available here: SELECT, POLL, EPOLL, DEFAULT" in line
    assert "\n" not in line and "Traceback" not in result.stderr


@pytest.mark.slow
def test_jb_reactor_unknown() -> None:
    result = run_jb([], env={"JUNEBUG_REACTOR": "warp"})
    assert result.returncode == 2
    assert result.stderr.startswith("jb: error: JUNEBUG_REACTOR: unknown reactor 'warp'")
    assert "SELECT" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "reactor"),
    [("poll", "PollReactor"), ("SELECT", "SelectReactor"), ("Epoll", "EPollReactor")],
)
def test_jb_installs_the_named_reactor(fake_runner: Path, name: str, reactor: str) -> None:
    if sys.platform != "linux" and name.upper() == "EPOLL":
        pytest.skip("epoll is Linux only")
    result = run_jb(["-p", "8123"], env={"JUNEBUG_REACTOR": name}, fake=fake_runner)
    assert result.returncode == 5, result.stderr
    assert f"[junebug.fake] INFO: reactor is {reactor}" in result.stdout
    assert "RAN 8123 True True" in result.stdout


@pytest.mark.slow
def test_jb_logs_to_stdout_and_logfile(fake_runner: Path, tmp_path: Path) -> None:
    logfile = tmp_path / "jb.log"
    sentry = "https://public@127.0.0.1:9/1"  # initialised, never sent to: no failures
    result = run_jb(["-l", str(logfile), "-amqph", "rabbit", "-sd", sentry], fake=fake_runner)
    assert result.returncode == 5, result.stderr
    lines = [line for line in result.stdout.splitlines() if "junebug.fake" in line]
    assert len(lines) == 1 and LINE.match(lines[0])
    assert "RAN 8080 True False" in result.stdout
    assert "[junebug.fake] INFO: reactor is" in logfile.read_text()


@pytest.mark.slow
def test_jb_disable_logging(fake_runner: Path) -> None:
    result = run_jb([], env={"JUNEBUG_DISABLE_LOGGING": "true"}, fake=fake_runner)
    assert result.returncode == 5, result.stderr
    assert result.stdout == "RAN 8080 True True\n"
    assert result.stderr == ""


@pytest.mark.slow
def test_importing_cli_does_not_install_a_reactor() -> None:
    code = (
        "import sys, junebug.cli, junebug.config; print('twisted.internet.reactor' in sys.modules)"
    )
    result = subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
