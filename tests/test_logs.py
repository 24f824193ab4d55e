"""Tests for junebug.logs: per-channel JSON-lines log files, rotation, reading, redaction."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from junebug import logs
from junebug.logs import (
    FORWARDED_KEY,
    ChannelLog,
    ChannelLogError,
    read_logs,
    redact,
)

OWNER = "123-456-7a90"


@pytest.fixture
def clock():
    c = Clock()
    c.advance(1_000_000)
    return c


@pytest.fixture
def make_log(tmp_path, clock):
    made = []

    def make(owner=OWNER, **kwargs):
        kwargs.setdefault("clock", clock)
        log = ChannelLog(owner, str(tmp_path), **kwargs)
        made.append(log)
        return log

    yield make
    for log in made:
        log.close()


@pytest.fixture
def global_events():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def file_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


class BoomError(Exception):
    pass


# -- line format and levels ---------------------------------------------------------------


def test_line_has_documented_fields(make_log, tmp_path, clock):
    log = make_log()
    clock.advance(0.5)
    log.info("bound to smsc", message_id="msg-1", smsc="10.0.0.1", attempt=2)

    [line] = file_lines(tmp_path / OWNER)
    assert line == {
        "logger": OWNER,
        "level": 20,
        "timestamp": 1_000_000.5,
        "message": "bound to smsc",
        "message_id": "msg-1",
        "smsc": "10.0.0.1",
        "attempt": 2,
    }
    assert isinstance(line["timestamp"], float)


def test_message_id_absent_when_not_given(make_log, tmp_path):
    make_log().warning("no id")
    [line] = file_lines(tmp_path / OWNER)
    assert "message_id" not in line
    assert "exception" not in line


def test_levels_and_default_threshold_drops_debug(make_log, tmp_path, clock):
    log = make_log()
    log.debug("d")
    clock.advance(1)
    log.info("i")
    log.warning("w")
    log.error("e")
    lines = file_lines(tmp_path / OWNER)
    assert [(x["message"], x["level"]) for x in lines] == [("i", 20), ("w", 30), ("e", 40)]
    assert lines[0]["timestamp"] == 1_000_001.0


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (logging.DEBUG, ["d", "i", "w", "e"]),
        (logging.WARNING, ["w", "e"]),
        (logging.ERROR, ["e"]),
    ],
)
def test_level_threshold_is_configurable(make_log, tmp_path, level, expected):
    log = make_log(level=level)
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == expected


def test_threshold_can_change_at_runtime(make_log, tmp_path):
    log = make_log()
    log.debug("hidden")
    log.level = logging.DEBUG
    log.debug("shown")
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["shown"]


def test_extra_fields_cannot_replace_line_keys(make_log, tmp_path):
    make_log().info(
        "real", level=99, logger="other", timestamp="x", exception="e", failure="not one"
    )
    [line] = file_lines(tmp_path / OWNER)
    assert (line["level"], line["logger"], line["message"]) == (20, OWNER, "real")
    assert isinstance(line["timestamp"], float)
    assert "exception" not in line
    assert (line["field_level"], line["field_logger"]) == (99, "other")
    assert (line["field_timestamp"], line["field_exception"]) == ("x", "e")
    assert line["failure"] == "not one"  # only error() renders a failure


def test_unserialisable_fields_are_written_as_text(make_log, tmp_path):
    class Thing:
        def __str__(self):
            return "a thing"

    make_log().info("odd", thing=Thing(), raw=b"\x00ab", keys={b"k": 1, 2: "v"})
    [line] = file_lines(tmp_path / OWNER)
    assert line["thing"] == "a thing"
    assert line["raw"] == "\x00ab"
    assert line["keys"] == {"k": 1, "2": "v"}


def test_non_ascii_message_round_trips(make_log, tmp_path):
    make_log().info("Sawubona — 你好 👋")
    [entry] = read_logs(str(tmp_path), OWNER, 5)
    assert entry["message"] == "Sawubona — 你好 👋"


def test_default_clock_is_the_reactor(tmp_path):
    before = time.time()
    with ChannelLog(OWNER, str(tmp_path)) as log:
        log.info("now")
    after = time.time()
    [line] = file_lines(tmp_path / OWNER)
    assert before - 1 <= line["timestamp"] <= after + 1


# -- exceptions ---------------------------------------------------------------------------


def failing_function():
    raise ValueError("Bad value")


def test_error_renders_failure(make_log, tmp_path):
    try:
        failing_function()
    except ValueError:
        failure = Failure()
    make_log().error("send failed", failure=failure, message_id="m1")

    [line] = file_lines(tmp_path / OWNER)
    assert line["level"] == 40
    assert line["message_id"] == "m1"
    exc = line["exception"]
    assert exc["class"] == "ValueError"
    assert exc["instance"] == repr(ValueError("Bad value"))
    assert isinstance(exc["stack"], list)
    assert all(isinstance(frame, str) for frame in exc["stack"])
    assert any("failing_function" in frame for frame in exc["stack"])
    assert any('raise ValueError("Bad value")' in frame for frame in exc["stack"])


def test_error_accepts_exception_and_qualifies_non_builtin_class(make_log, tmp_path):
    try:
        raise BoomError("kaboom")
    except BoomError as e:
        exc = e
    make_log().error("boom", failure=exc)

    [line] = file_lines(tmp_path / OWNER)
    rendered = line["exception"]
    assert rendered["class"] == f"{__name__}.BoomError"
    assert rendered["instance"] == "BoomError('kaboom')"
    assert any("test_error_accepts_exception" in frame for frame in rendered["stack"])


def test_error_with_unraised_exception_has_empty_stack(make_log, tmp_path):
    make_log().error("late", failure=KeyError("k"))
    [line] = file_lines(tmp_path / OWNER)
    assert line["exception"] == {"class": "KeyError", "instance": "KeyError('k')", "stack": []}


def test_error_after_clean_failure_keeps_stack(make_log, tmp_path):
    try:
        failing_function()
    except ValueError:
        failure = Failure()
    failure.cleanFailure()
    make_log().error("x", failure=failure)
    [line] = file_lines(tmp_path / OWNER)
    assert any("failing_function" in frame for frame in line["exception"]["stack"])


# -- rotation -----------------------------------------------------------------------------


def test_rotates_before_write_once_size_reached(make_log, tmp_path):
    log = make_log(rotate_size=200)
    path = tmp_path / OWNER
    n = 0
    while path.stat().st_size < 200:
        log.info(f"line {n}")
        n += 1
    assert not (tmp_path / f"{OWNER}.1").exists()  # the size is checked before a write

    log.info("after rotation")
    assert [x["message"] for x in file_lines(path)] == ["after rotation"]
    assert [x["message"] for x in file_lines(tmp_path / f"{OWNER}.1")] == [
        f"line {i}" for i in range(n)
    ]


def test_rotation_shifts_older_files(make_log, tmp_path):
    log = make_log(rotate_size=1)  # every write after the first rotates
    for i in range(4):
        log.info(f"m{i}")
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["m3"]
    for suffix, message in [(1, "m2"), (2, "m1"), (3, "m0")]:
        assert [x["message"] for x in file_lines(tmp_path / f"{OWNER}.{suffix}")] == [message]


def test_max_files_deletes_oldest(make_log, tmp_path):
    log = make_log(rotate_size=1, max_files=2)
    for i in range(6):
        log.info(f"m{i}")
    assert sorted(os.listdir(tmp_path)) == [OWNER, f"{OWNER}.1", f"{OWNER}.2"]
    assert file_lines(tmp_path / f"{OWNER}.2")[0]["message"] == "m3"
    assert [x["message"] for x in read_logs(str(tmp_path), OWNER, 10)] == ["m5", "m4", "m3"]


@pytest.mark.parametrize("max_files", [0, None])
def test_max_files_zero_or_none_keeps_everything(make_log, tmp_path, max_files):
    log = make_log(rotate_size=1, max_files=max_files)
    for i in range(12):
        log.info(f"m{i}")
    assert len(os.listdir(tmp_path)) == 12
    assert file_lines(tmp_path / f"{OWNER}.11")[0]["message"] == "m0"


def test_rotation_is_per_owner(make_log, tmp_path):
    a = make_log("a", rotate_size=1, max_files=1)
    b = make_log("ab", rotate_size=1, max_files=1)
    for i in range(3):
        a.info(f"a{i}")
        b.info(f"b{i}")
    assert sorted(os.listdir(tmp_path)) == ["a", "a.1", "ab", "ab.1"]
    assert [x["message"] for x in read_logs(str(tmp_path), "ab", 5)] == ["b2", "b1"]


def test_rotation_disabled_when_rotate_size_not_positive(make_log, tmp_path):
    log = make_log(rotate_size=0)
    for i in range(20):
        log.info(f"m{i}")
    assert os.listdir(tmp_path) == [OWNER]


def test_two_logs_for_one_owner_follow_each_others_rotation(make_log, tmp_path):
    old = make_log(rotate_size=1)
    new = make_log(rotate_size=1_000_000)
    old.info("first")
    old.info("second")  # rotates: "first" is now in .1
    new.info("third")  # must land in the current file, not in the renamed one
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["second", "third"]
    assert [x["message"] for x in file_lines(tmp_path / f"{OWNER}.1")] == ["first"]


# -- reading ------------------------------------------------------------------------------


def test_read_newest_first_across_rotated_files(make_log, tmp_path, clock):
    log = make_log(rotate_size=150, max_files=None)
    for i in range(15):
        clock.advance(1)
        log.info(f"m{i}")
    assert (tmp_path / f"{OWNER}.2").exists()

    entries = read_logs(str(tmp_path), OWNER, 100)
    assert [x["message"] for x in entries] == [f"m{i}" for i in reversed(range(15))]
    stamps = [x["timestamp"] for x in entries]
    assert stamps == sorted(stamps, reverse=True)


def test_read_stops_at_n(make_log, tmp_path):
    log = make_log(rotate_size=150, max_files=None)
    for i in range(15):
        log.info(f"m{i}")
    assert [x["message"] for x in read_logs(str(tmp_path), OWNER, 3)] == ["m14", "m13", "m12"]
    assert read_logs(str(tmp_path), OWNER, 0) == []
    assert len(read_logs(str(tmp_path), OWNER, 15)) == 15
    assert len(read_logs(str(tmp_path), OWNER, 16)) == 15


def test_read_filters_by_message_id(make_log, tmp_path):
    log = make_log(rotate_size=150, max_files=None)
    for i in range(12):
        log.info(f"m{i}", message_id="even" if i % 2 == 0 else "odd")
    log.info("no id")
    entries = read_logs(str(tmp_path), OWNER, 4, message_id="odd")
    assert [x["message"] for x in entries] == ["m11", "m9", "m7", "m5"]
    assert all(x["message_id"] == "odd" for x in entries)
    assert read_logs(str(tmp_path), OWNER, 4, message_id="missing") == []


def test_read_skips_partial_last_line_blank_lines_and_garbage(tmp_path):
    good = [{"message": f"m{i}", "level": 20} for i in range(4)]
    current = json.dumps(good[2]) + "\n\n" + "not json\n" + "[1, 2]\n" + json.dumps(good[3]) + "\n"
    (tmp_path / OWNER).write_text(current + '{"message": "half wri')
    (tmp_path / f"{OWNER}.1").write_text(
        json.dumps(good[0]) + "\n   \n" + json.dumps(good[1]) + "\n" + '{"message": "cut'
    )
    entries = read_logs(str(tmp_path), OWNER, 10)
    assert [x["message"] for x in entries] == ["m3", "m2", "m1", "m0"]


def test_read_skips_unterminated_last_line_even_if_valid_json(tmp_path):
    (tmp_path / OWNER).write_text('{"message": "done"}\n{"message": "unterminated"}')
    (tmp_path / f"{OWNER}.1").write_text('{"message": "old"}\n{"message": "cut too"}')
    assert read_logs(str(tmp_path), OWNER, 10) == [{"message": "done"}, {"message": "old"}]


def test_read_file_without_any_newline_yields_nothing(tmp_path):
    (tmp_path / OWNER).write_text('{"message": "still being written"}')
    assert read_logs(str(tmp_path), OWNER, 10) == []


def test_read_missing_directory_or_file_is_empty(tmp_path):
    assert read_logs(str(tmp_path / "nowhere"), OWNER, 10) == []
    assert read_logs(str(tmp_path), OWNER, 10) == []


def test_read_only_rotated_file_left(tmp_path):
    (tmp_path / f"{OWNER}.1").write_text('{"message": "old"}\n')
    assert read_logs(str(tmp_path), OWNER, 10) == [{"message": "old"}]


@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 16, 64, 10_000])
def test_backwards_reading_is_exact_at_any_block_size(tmp_path, monkeypatch, block_size):
    monkeypatch.setattr(logs, "READ_BLOCK_SIZE", block_size)
    entries = [{"message": "x" * (i * 7 % 23), "i": i} for i in range(30)]
    text = "".join(json.dumps(e) + ("\n\n" if i % 5 == 0 else "\n") for i, e in enumerate(entries))
    (tmp_path / OWNER).write_text(text + '{"i": "partial"')
    assert read_logs(str(tmp_path), OWNER, 100) == list(reversed(entries))


def test_reading_last_lines_does_not_read_whole_file(tmp_path, monkeypatch):
    line = json.dumps({"message": "y" * 100}) + "\n"
    (tmp_path / OWNER).write_text(line * 50_000)  # about 5 MB
    size = (tmp_path / OWNER).stat().st_size
    monkeypatch.setattr(logs, "READ_BLOCK_SIZE", 4096)
    bytes_read = []
    real_open = open

    def counting_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        real_read = handle.read

        def read(size=-1):
            data = real_read(size)
            bytes_read.append(len(data))
            return data

        handle.read = read
        return handle

    monkeypatch.setattr(logs, "open", counting_open, raising=False)
    assert len(read_logs(str(tmp_path), OWNER, 3)) == 3
    assert 0 < sum(bytes_read) <= 4096
    assert max(bytes_read) < size


# -- files and directories ----------------------------------------------------------------


def test_file_named_after_owner_in_created_directory(tmp_path, clock):
    directory = tmp_path / "deep" / "er" / "logs"
    with ChannelLog("router-9", str(directory), clock=clock) as log:
        log.info("hello")
    assert os.listdir(directory) == ["router-9"]
    assert file_lines(directory / "router-9")[0]["logger"] == "router-9"


def test_unwritable_directory_raises_clear_oserror(tmp_path, clock):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ChannelLogError) as info:
        ChannelLog(OWNER, str(blocker / "logs"), clock=clock)
    assert isinstance(info.value, OSError)
    assert str(blocker / "logs" / OWNER) in str(info.value)


def test_log_file_path_taken_by_directory_raises(tmp_path, clock):
    (tmp_path / OWNER).mkdir()
    with pytest.raises(OSError, match="cannot write the log file"):
        ChannelLog(OWNER, str(tmp_path), clock=clock)


@pytest.mark.parametrize("owner", ["", ".", "..", "../etc", "a/b"])
def test_unsafe_owner_ids_rejected(tmp_path, clock, owner):
    with pytest.raises(ValueError):
        ChannelLog(owner, str(tmp_path), clock=clock)
    with pytest.raises(ValueError):
        read_logs(str(tmp_path), owner, 1)


def test_write_failure_never_raises_and_is_reported_once(tmp_path, clock, global_events):
    directory = tmp_path / "logs"
    log = ChannelLog(OWNER, str(directory), clock=clock)
    log.info("before")
    shutil.rmtree(directory)
    directory.write_text("")  # the directory is now a file: nothing can be written

    log.info("lost 1")
    log.error("lost 2", failure=ValueError("x"))

    def failures():
        return [e for e in global_events if e.get("log_namespace") == "junebug.logs"]

    assert len(failures()) == 1
    assert failures()[0]["log_level"] == LogLevel.error
    assert failures()[0]["path"] == str(directory / OWNER)

    directory.unlink()
    log.info("after")  # the directory is recreated and writing resumes
    assert [x["message"] for x in file_lines(directory / OWNER)] == ["after"]

    shutil.rmtree(directory)
    directory.write_text("")
    log.info("lost again")
    assert len(failures()) == 2  # a new run of failures is reported again
    log.close()


def test_close_is_idempotent_and_late_lines_still_written(make_log, tmp_path):
    log = make_log()
    log.info("open")
    log.close()
    log.close()
    log.info("late")
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["open", "late"]
    assert log._file is None  # no handle left open after a late line


# -- wire logging -------------------------------------------------------------------------


def test_wire_lines_off_by_default(make_log, tmp_path):
    log = make_log(level=logging.DEBUG)
    assert log.wire_logging is False
    log.wire("out", "submit_sm seq=1")
    log.info("marker")
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["marker"]


def test_wire_lines_written_when_enabled_regardless_of_level(make_log, tmp_path):
    log = make_log(level=logging.WARNING)
    log.wire_logging = True
    log.wire("out", "submit_sm seq=1", message_id="m1", pdu={"sequence_number": 1})
    log.debug("plain debug still dropped")
    [line] = file_lines(tmp_path / OWNER)
    assert line["level"] == logging.DEBUG
    assert line["message"] == "submit_sm seq=1"
    assert line["direction"] == "out"
    assert line["message_id"] == "m1"
    assert line["pdu"] == {"sequence_number": 1}

    log.wire_logging = False
    log.wire("in", "submit_sm_resp seq=1")
    assert len(file_lines(tmp_path / OWNER)) == 1


# -- forwarding to Twisted's log ----------------------------------------------------------


def test_lines_forwarded_to_twisted_global_log(make_log, global_events):
    log = make_log()
    log.warning("throttled", message_id="m1")
    log.error("failed", failure=ValueError("bad"))
    forwarded = [e for e in global_events if e.get(FORWARDED_KEY) == OWNER]
    assert [e["log_namespace"] for e in forwarded] == [f"junebug.channel.{OWNER}"] * 2
    assert [e["log_level"] for e in forwarded] == [LogLevel.warn, LogLevel.error]
    assert forwarded[0]["junebug_text"] == "throttled"
    assert forwarded[0]["junebug_entry"]["message_id"] == "m1"
    assert "ValueError" in forwarded[1]["junebug_text"]


def test_message_braces_are_not_format_fields(make_log, global_events):
    from twisted.logger import formatEvent

    make_log().info("got {weird} text")
    [event] = [e for e in global_events if e.get(FORWARDED_KEY) == OWNER]
    assert formatEvent(event) == "got {weird} text"


def test_observer_logging_back_does_not_recurse(make_log, tmp_path):
    log = make_log()

    def echo(event):
        if event.get(FORWARDED_KEY):
            log.info("echo of " + event["junebug_text"])

    globalLogPublisher.addObserver(echo)
    try:
        log.info("original")
    finally:
        globalLogPublisher.removeObserver(echo)
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["original"]
    log.info("still works")
    assert len(file_lines(tmp_path / OWNER)) == 2


# -- redaction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "passwd",
        "secret",
        "token",
        "auth_token",
        "mo_url_auth_token",
        "event_auth_token",
        "api_key",
        "Authorization",
        "smpp_password",
        "client_secret",
        "refresh_token",
        "X-Api-Key",
    ],
)
def test_redact_secret_keys(key):
    assert redact({key: "hunter2", "user": "bob"}) == {key: "***", "user": "bob"}


@pytest.mark.parametrize("key", ["username", "system_id", "token_type", "secretary", "passive"])
def test_redact_leaves_ordinary_keys(key):
    assert redact({key: "value"}) == {key: "value"}


def test_redact_nested_and_does_not_mutate():
    original = {
        "config": {"password": "p1", "hosts": [{"token": "t1", "name": "a"}]},
        "pairs": [("Authorization", "Basic abc"), ("Accept", "json")],
        "empty_password": None,
        "count": 3,
    }
    result = redact(original)
    assert result == {
        "config": {"password": "***", "hosts": [{"token": "***", "name": "a"}]},
        "pairs": [("Authorization", "***"), ("Accept", "json")],
        "empty_password": None,
        "count": 3,
    }
    assert original["config"]["password"] == "p1"
    assert original["config"]["hosts"][0]["token"] == "t1"


def test_redact_extra_secret_keys():
    assert redact({"system_pin": "1", "a": "b"}, secret_keys={"system_pin"}) == {
        "system_pin": "***",
        "a": "b",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:pass@host/path", "http://user:***@host/path"),
        (
            "POST to https://u:pw@example.com:8080/x failed",
            "POST to https://u:***@example.com:8080/x failed",
        ),
        ("smpp://sys:p@ss@10.0.0.1:2775", "smpp://sys:***@10.0.0.1:2775"),
        ("amqp://guest:guest@localhost/%2F", "amqp://guest:***@localhost/%2F"),
        ("http://example.com:8080/path@x", "http://example.com:8080/path@x"),
        ("http://user@host/", "http://user@host/"),
        ("GET /send?to=27&token=abc123&from=x", "GET /send?to=27&token=***&from=x"),
        ("password=hunter2 user=bob", "password=*** user=bob"),
        ('{"password": "hunter2", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ("{b'authorization': [b'Basic dXNlcjpwdw==']}", "{b'authorization': ***}"),
        ("Authorization: Bearer abc.def", "Authorization: ***"),
        ("plain text stays", "plain text stays"),
    ],
)
def test_redact_text(text, expected):
    assert redact(text) == expected


def test_redact_twisted_headers():
    headers = Headers({b"Authorization": [b"Basic abc"], b"Content-Type": [b"text/plain"]})
    result = redact({"headers": headers})["headers"]
    assert result[b"Authorization"] == "***"
    assert result[b"Content-Type"] == [b"text/plain"]


def test_redact_survives_cycles():
    looped: dict = {"a": 1}
    looped["self"] = looped
    result = redact(looped)
    assert result["a"] == 1


def test_secrets_never_reach_the_file(make_log, tmp_path, global_events):
    log = make_log(level=logging.DEBUG)
    log.wire_logging = True
    log.secret_keys.add("system_pin")
    try:
        raise ConnectionError("refused: http://u:Sekr3tPw@host/x")
    except ConnectionError:
        failure = Failure()
    log.error(
        "POST to http://u:Sekr3tPw@host failed",
        url="http://u:Sekr3tPw@host/x",
        config={"password": "Sekr3tCfg", "nested": [{"api_key": "Sekr3tKey"}]},
        failure=failure,
    )
    log.info("retry", event_auth_token="Sekr3tTok", headers={"Authorization": "Basic Sekr3tB"})
    log.wire(
        "out",
        "POST /send?api_key=Sekr3tQ",
        headers=Headers({b"authorization": [b"Bearer Sekr3tH"]}),
        body=b'{"token": "Sekr3tBody"}',
        system_pin=1234,
    )
    log.debug("config {'mo_url_auth_token': 'Sekr3tRepr'}")

    data = (tmp_path / OWNER).read_bytes()
    assert data.count(b"\n") == 4
    assert b"Sekr3t" not in data
    assert b"1234" not in data
    assert b"***" in data
    lines = file_lines(tmp_path / OWNER)
    assert lines[0]["url"] == "http://u:***@host/x"
    assert lines[0]["config"]["password"] == "***"
    assert lines[2]["system_pin"] == "***"

    forwarded = [repr(e) for e in global_events if e.get(FORWARDED_KEY) == OWNER]
    assert len(forwarded) == 4
    assert not any("Sekr3t" in text for text in forwarded)


def test_rotation_threshold_is_inclusive(make_log, tmp_path):
    log = make_log()
    log.info("first")
    size = (tmp_path / OWNER).stat().st_size
    log.rotate_size = size + 1
    log.info("second")
    assert not (tmp_path / f"{OWNER}.1").exists()
    log.rotate_size = (tmp_path / OWNER).stat().st_size
    log.info("third")
    assert [x["message"] for x in file_lines(tmp_path / f"{OWNER}.1")] == ["first", "second"]
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["third"]


# -- the cheap paths give the same lines --------------------------------------------------

# Pieces of text that make the redaction patterns match, or nearly: secret and ordinary
# key names in several spellings, separators, quotes, URLs, and characters whose case
# mapping is unusual (Kelvin sign, long s, dotted and dotless i, sigma).
_PIECES = [
    "password", "PassWord", "passwd", "pass", "token", "TOKEN", "tok", "en", "api-key",
    "Api_Key", "apikey", "X-Api-Key", "secret", "cookie", "Set-Cookie", "authorization",
    "private-key", "mo_url_auth_token", "system_pin", "PIN", "user", "x", "1", "Basic ",
    "Bearer ", ":", "=", "@", "://", "http", "/", " ", '"', "'", "b'", "[", "]", "{", "}",
    ",", ";", "&", "\\", "-", "_", ".", "\n", "\t", "é", "\u212a", "to\u212aen", "\u017f",
    "\u0130", "\u0131", "\u03a3", "\ud800",
]  # fmt: skip
_NAMES = [
    *logs._SECRET_KEYS,
    "smpp_password",
    "Client-Secret",
    "system_pin",
    "user",
    "token_type",
    "secretary",
    "passive",
    "x",
]
# key=value, key: value, "key": "value" and URLs with credentials, with secret and
# ordinary names in any case and with "-" for "_".
_pairs = st.builds(
    lambda before, name, upper, dashed, quote, sep, value: (
        f"{before}{quote}{name.upper() if upper else name}{quote}{sep}{value}".replace(
            "_", "-" if dashed else "_"
        )
    ),
    st.sampled_from(["", " ", "&", "?", "{", ", ", "x"]),
    st.sampled_from(_NAMES),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["", '"', "'"]),
    st.sampled_from(["=", ":", ": ", " = ", "://u:"]),
    st.sampled_from(["hunter2", '"s3"', "'s3'", "[1, 2]", "Basic abc", "p@host/x", ""]),
)
_texts = st.one_of(
    st.text(),
    st.lists(st.one_of(_pairs, st.sampled_from(_PIECES)), max_size=8).map("".join),
    st.lists(st.sampled_from(_PIECES), max_size=25).map("".join),
    st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=3)), max_size=20).map("".join),
)
_extras = st.lists(
    st.one_of(
        st.sampled_from(["system_pin", "pin", "", " X-Pin ", "t\u0130n"]), st.text(max_size=4)
    ),
    max_size=3,
).map(tuple)


def test_every_secret_key_name_holds_a_needle():
    """``_redact_text`` skips the patterns when no needle is in the text: every name
    ``is_secret_key`` accepts must hold one."""
    for name in [*logs._SECRET_KEYS, *logs._SECRET_SUFFIXES]:
        assert any(needle in name for needle in logs._SECRET_NEEDLES), name


@settings(max_examples=2000, suppress_health_check=list(HealthCheck), deadline=None)
@given(_texts, _extras)
def test_redaction_shortcut_changes_nothing(text, extra):
    assert logs._redact_text(text, extra) == logs._redact_text_full(text, extra)


def _line_as_before(owner, level, timestamp, message, message_id, extra, fields=None):
    """A line as ChannelLog wrote it before its shortcuts: every pattern on the message,
    ``json.dumps`` of the whole entry."""
    entry = {
        "logger": owner,
        "level": level,
        "timestamp": float(timestamp),
        "message": logs._redact_text_full(message, extra),
    }
    if message_id is not None:
        entry["message_id"] = message_id
    for key, value in (fields or {}).items():
        entry[key] = (
            logs.MASK if logs.is_secret_key(key, extra) else logs._redact_text_full(value, extra)
        )
    line = json.dumps(entry, ensure_ascii=False, default=logs._safe_str) + "\n"
    return line.encode("utf-8", "backslashreplace")


@settings(max_examples=500, suppress_health_check=list(HealthCheck), deadline=None)
@given(
    message=_texts,
    message_id=st.one_of(st.none(), _texts),
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]),
    timestamp=st.one_of(st.floats(), st.integers(0, 2**40)),
    keys=st.lists(st.sampled_from(["system_pin", "pin"]), max_size=2),
    fields=st.one_of(st.just({}), st.dictionaries(st.sampled_from(["a", "token"]), _texts)),
)
def test_lines_are_byte_identical_to_before(message, message_id, level, timestamp, keys, fields):
    directory = tempfile.mkdtemp()
    try:
        clock = Clock()
        clock.seconds = lambda: timestamp
        owner = "chan-é"
        with ChannelLog(owner, directory, clock=clock, level=logging.DEBUG) as log:
            log.secret_keys |= set(keys)
            log.log(level, message, message_id=message_id, **fields)
            extra = tuple(log.secret_keys)
        with open(os.path.join(directory, owner), "rb") as f:
            written = f.read()
        assert written == _line_as_before(
            owner, level, timestamp, message, message_id, extra, fields
        )
    finally:
        shutil.rmtree(directory)


def test_lines_forwarded_as_before(make_log, global_events):
    """Lines without fields still reach the process log (those about a message only
    from WARNING up), with the same entry."""
    log = make_log()
    log.info("plain")
    log.info("about a message", message_id="m1")
    log.warning("a warning about it", message_id="m1")
    forwarded = [e["junebug_entry"] for e in global_events if e.get(FORWARDED_KEY) == OWNER]
    assert [(e["message"], e.get("message_id")) for e in forwarded] == [
        ("plain", None),
        ("a warning about it", "m1"),
    ]
    assert forwarded[1] == {
        "logger": OWNER,
        "level": 30,
        "timestamp": 1_000_000.0,
        "message": "a warning about it",
        "message_id": "m1",
    }


# -- other writers ------------------------------------------------------------------------


def test_size_counts_what_other_writers_appended(make_log, tmp_path):
    """The rotation threshold is the file's size, not what this log wrote itself."""
    log = make_log(rotate_size=1000)
    log.info("mine")
    with open(tmp_path / OWNER, "ab") as other:  # another writer of the same file
        other.write(b'{"message": "theirs"}\n' + b" " * 1000 + b"\n")
    log.info("after theirs")
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["after theirs"]
    assert (tmp_path / f"{OWNER}.1").exists()


def test_file_moved_away_by_another_writer_is_noticed_at_the_next_line(make_log, tmp_path):
    log = make_log(rotate_size=200)
    log.info("first")
    # Another process rotates the file and starts a new one with a line of its own.
    os.replace(tmp_path / OWNER, tmp_path / f"{OWNER}.1")
    (tmp_path / OWNER).write_text('{"message": "theirs"}\n')
    log.info("second")  # into the new file, and its size (small) decides: no rotation
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["theirs", "second"]
    assert [x["message"] for x in file_lines(tmp_path / f"{OWNER}.1")] == ["first"]
    # Moved away and nothing put in its place: a new file is started.
    os.replace(tmp_path / OWNER, tmp_path / f"{OWNER}.2")
    log.info("third")
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["third"]


def test_file_deleted_by_someone_is_started_again(make_log, tmp_path):
    log = make_log()
    log.info("first")
    os.remove(tmp_path / OWNER)
    log.info("second")
    assert [x["message"] for x in file_lines(tmp_path / OWNER)] == ["second"]
