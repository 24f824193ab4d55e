"""The nginx plugin: config, templates, public_http, failures, and a real nginx.

Unit tests drive NginxPlugin directly with temp directories and a recording reload
runner. The slow tests run the reload command as a real child process, check the
bundled templates with ``nginx -t``, and put a private nginx in front of ``jb``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectError
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from twisted.web._newclient import ResponseFailed, ResponseNeverReceived

import junebug.plugins.nginx as nginx_plugin
from junebug.manager import ChannelManager
from junebug.plugin import PluginConfigError
from junebug.plugins import PluginHooks
from junebug.plugins.nginx import NginxPlugin, NotExposable, PublicHttp, public_http
from junebug.transports.base import Transport
from tests.helpers import WAIT, ApiClient, JbProcess, free_port, within

THIRD_PARTY = Path(__file__).parent / "third_party"
HELLO_TYPE = "hello:junebug_extras_sample.channels.HelloHttpChannel"
#: Any executable: the fake runner never runs it, but the plugin resolves it first.
FAKE_NGINX = sys.executable


# -- doubles ---------------------------------------------------------------------------


class FakeLog:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def error(self, message: str, **fields: Any) -> None:
        self.errors.append(message)

    def info(self, message: str, **fields: Any) -> None:
        self.infos.append(message)

    def warning(self, message: str, **fields: Any) -> None:
        self.warnings.append(message)


class FakeChannel:
    def __init__(self, channel_id: str = "chan-1", transport: Any = None, **properties: Any):
        self.id = channel_id
        self.properties = {"type": "hello", "config": {}, **properties}
        self.log = FakeLog()
        if transport is not None:
            self.transport_class = transport


class Runner:
    """Records reload commands; answers each with ``result`` (or what ``answer`` returns)."""

    def __init__(self, result: tuple[bytes, bytes, int] = (b"", b"", 0)) -> None:
        self.calls: list[list[str]] = []
        self.result = result
        self.answer = None

    def __call__(self, executable: str, args: list[str]) -> Deferred:
        self.calls.append([executable, *args])
        if self.answer is not None:
            return self.answer()
        return succeed(self.result)


@pytest.fixture
def events(monkeypatch):
    """What the plugin writes to Junebug's (process) log."""
    captured: list[dict] = []
    monkeypatch.setattr(
        nginx_plugin, "log", Logger(namespace="junebug.plugins.nginx", observer=captured.append)
    )
    return captured


def logged_errors(events: list[dict]) -> list[str]:
    from twisted.logger import LogLevel, formatEvent

    return [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]


def plugin_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config = {
        "type": "junebug.plugins.nginx.NginxPlugin",
        "server_name": "sms.example.org",
        "vhost_file": str(tmp_path / "sites" / "junebug.conf"),
        "locations_dir": str(tmp_path / "locations"),
        "reload_command": [FAKE_NGINX, "-s", "reload"],
    }
    config.update(overrides)
    return config


async def started(tmp_path: Path, runner: Runner | None = None, **overrides: Any):
    plugin = NginxPlugin(run=runner or Runner())
    await plugin.start_plugin(plugin_config(tmp_path, **overrides), None)
    return plugin


def hello(port: int = 8042, path: str = "/hello", channel_id: str = "chan-1", **properties):
    return FakeChannel(channel_id, config={"web_path": path, "web_port": port}, **properties)


# -- config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"server_name": None}, "server_name is required"),
        ({"server_name": ""}, "server_name must be"),
        ({"server_name": "a.example; include /etc/passwd"}, "server_name must be"),
        ({"server_name": ["a.example"]}, "server_name must be"),
        ({"colour": "blue"}, "unknown config keys: colour"),
        ({"vhost_file": 3}, "vhost_file must be a path"),
        ({"locations_dir": ""}, "locations_dir must be a path"),
        ({"reload_command": []}, "reload_command must be a non-empty list"),
        ({"reload_command": ["nginx", 1]}, "reload_command must be a non-empty list"),
        ({"reload_command": 7}, "reload_command must be a non-empty list"),
        ({"reload_command": "nginx 'unclosed"}, "reload_command cannot be split"),
        ({"vhost_template": "/no/such/template"}, "cannot read vhost_template /no/such/template"),
        ({"location_template": 5}, "location_template must be a path"),
    ],
)
def test_invalid_config_is_a_clear_error(tmp_path, overrides, message):
    config = plugin_config(tmp_path, **overrides)
    if overrides.get("server_name", "") is None:
        del config["server_name"]
    with pytest.raises(PluginConfigError, match="^nginx plugin: .*" + message):
        nginx_plugin.parse_settings(config)


def test_every_problem_is_named_at_once(tmp_path):
    with pytest.raises(PluginConfigError) as raised:
        nginx_plugin.parse_settings({"type": "x", "colour": 1, "reload_command": []})
    assert "unknown config keys: colour" in str(raised.value)
    assert "server_name is required" in str(raised.value)
    assert "reload_command must be" in str(raised.value)


@pytest.mark.parametrize(
    "template, message",
    [
        ("location %(path)s {}", r"unknown variable %\(path\)s \(available: channel_id, "),
        ("rewrite ^/(.*)$ 50% off;", "not a valid %-format template"),
    ],
)
def test_bad_templates_are_refused_at_start(tmp_path, template, message):
    (tmp_path / "location.template").write_text(template)
    config = plugin_config(tmp_path, location_template=str(tmp_path / "location.template"))
    with pytest.raises(PluginConfigError, match="location_template .*" + message):
        nginx_plugin.parse_settings(config)


def test_defaults_and_bundled_templates():
    settings = nginx_plugin.parse_settings({"type": "x", "server_name": "a.example"})
    assert settings.vhost_file == "/etc/nginx/sites-enabled/junebug.conf"
    assert settings.locations_dir == "/etc/nginx/includes/junebug"
    assert settings.reload_command == ["nginx", "-s", "reload"]
    bundled = resources.files("junebug.plugins.nginx")
    assert settings.vhost_template == bundled.joinpath("vhost.template").read_text()
    assert settings.location_template == bundled.joinpath("location.template").read_text()
    assert settings.vhost_template_name == "bundled vhost_template"


def test_reload_command_may_be_a_command_line():
    settings = nginx_plugin.parse_settings(
        {"server_name": "a.example", "reload_command": "sudo -n '/usr/sbin/nginx' -s reload"}
    )
    assert settings.reload_command == ["sudo", "-n", "/usr/sbin/nginx", "-s", "reload"]


@pytest_twisted.ensureDeferred
async def test_an_unwritable_vhost_stops_start_up_with_a_message(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    plugin = NginxPlugin(run=Runner())
    with pytest.raises(PluginConfigError, match="cannot write vhost_file .*not-a-dir"):
        await plugin.start_plugin(
            plugin_config(tmp_path, vhost_file=str(tmp_path / "not-a-dir" / "junebug.conf")),
            None,
        )
    with pytest.raises(PluginConfigError, match="cannot use locations_dir"):
        await plugin.start_plugin(
            plugin_config(tmp_path, locations_dir=str(tmp_path / "not-a-dir" / "locations")),
            None,
        )


# -- files and reloads -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_start_writes_the_vhost_and_reloads(tmp_path):
    runner = Runner()
    await started(tmp_path, runner)
    vhost = (tmp_path / "sites" / "junebug.conf").read_text()
    assert "server_name sms.example.org;" in vhost
    assert f"include {tmp_path / 'locations'}/*.conf;" in vhost
    assert "listen 80;" in vhost
    assert runner.calls == [[FAKE_NGINX, "-s", "reload"]]
    assert os.stat(tmp_path / "sites" / "junebug.conf").st_mode & 0o777 == 0o644
    assert (tmp_path / "locations").is_dir()
    assert os.listdir(tmp_path / "sites") == ["junebug.conf"]  # no temp file left


@pytest_twisted.ensureDeferred
async def test_a_channel_gets_a_location_and_loses_it_when_it_stops(tmp_path):
    runner = Runner()
    plugin = await started(tmp_path, runner)
    channel = hello(8042, "/hello")
    await plugin.channel_started(channel)
    location = tmp_path / "locations" / "chan-1.conf"
    text = location.read_text()
    assert text.startswith("# Managed by Junebug's nginx plugin for channel chan-1")
    assert "location /hello {" in text
    assert "proxy_pass http://127.0.0.1:8042/hello;" in text
    assert len(runner.calls) == 2
    assert channel.log.errors == []
    assert channel.log.infos == [
        "nginx plugin: exposed at /hello on sms.example.org, proxied to http://127.0.0.1:8042/hello"
    ]

    await plugin.channel_stopped(channel)
    assert not location.exists()
    assert len(runner.calls) == 3
    await plugin.channel_stopped(channel)  # already gone: nothing to do
    assert len(runner.calls) == 3


@pytest_twisted.ensureDeferred
async def test_template_variables(tmp_path):
    (tmp_path / "vhost.t").write_text("%(server_name)s|%(locations_dir)s|%(includes)s|100%%")
    (tmp_path / "location.t").write_text(
        "%(channel_id)s|%(external_path)s|%(web_port)d|%(internal_url)s"
    )
    plugin = await started(
        tmp_path,
        vhost_template=str(tmp_path / "vhost.t"),
        location_template=str(tmp_path / "location.t"),
        locations_dir=str(tmp_path / "locations") + "/",
    )
    locations = tmp_path / "locations"
    assert (tmp_path / "sites" / "junebug.conf").read_text() == (
        f"sms.example.org|{locations}|{locations}/*.conf|100%"
    )
    await plugin.channel_started(hello(9000, "in/sms", channel_id="c2"))
    assert (locations / "c2.conf").read_text().splitlines()[1] == (
        "c2|/in/sms|9000|http://127.0.0.1:9000/in/sms"
    )


@pytest_twisted.ensureDeferred
async def test_stop_removes_the_vhost_and_every_location_it_wrote(tmp_path):
    runner = Runner()
    plugin = await started(tmp_path, runner)
    for number in range(3):
        await plugin.channel_started(hello(9000 + number, f"/c{number}", f"c{number}"))
    (tmp_path / "locations" / "someone-else.conf").write_text("location /x {}\n")
    await plugin.stop_plugin()
    assert not (tmp_path / "sites" / "junebug.conf").exists()
    assert os.listdir(tmp_path / "locations") == ["someone-else.conf"]
    assert len(runner.calls) == 1 + 3 + 1
    await plugin.stop_plugin()  # a second stop does nothing
    assert len(runner.calls) == 5


@pytest_twisted.ensureDeferred
async def test_start_removes_location_files_a_crashed_run_left(tmp_path):
    plugin = await started(tmp_path)
    await plugin.channel_started(hello(9000, "/old", "old-channel"))
    (tmp_path / "locations" / "hand-written.conf").write_text("location /x {}\n")
    # No stop_plugin: the process died. The next start cleans up after it.
    await started(tmp_path)
    assert os.listdir(tmp_path / "locations") == ["hand-written.conf"]


@pytest_twisted.ensureDeferred
async def test_a_channel_without_web_endpoint_is_left_alone(tmp_path):
    runner = Runner()
    plugin = await started(tmp_path, runner)
    telnet = FakeChannel("t1", config={"twisted_endpoint": "tcp:9001"})
    await plugin.channel_started(telnet)
    await plugin.channel_stopped(telnet)
    assert os.listdir(tmp_path / "locations") == []
    assert len(runner.calls) == 1
    assert telnet.log.errors == []


@pytest_twisted.ensureDeferred
async def test_disabling_a_restarted_channel_removes_its_location(tmp_path):
    plugin = await started(tmp_path)
    await plugin.channel_started(hello(9000, "/x"))
    assert os.listdir(tmp_path / "locations") == ["chan-1.conf"]
    await plugin.channel_started(hello(9000, "/x", public_http={"enabled": False}))
    assert os.listdir(tmp_path / "locations") == []


@pytest_twisted.ensureDeferred
async def test_two_channels_cannot_share_a_public_path(tmp_path):
    plugin = await started(tmp_path)
    await plugin.channel_started(hello(9000, "/sms", "first"))
    second = hello(9001, "sms", "second")
    await plugin.channel_started(second)
    assert second.log.errors == [
        "nginx plugin: channel not exposed: /sms is already the public path of channel first"
    ]
    assert os.listdir(tmp_path / "locations") == ["first.conf"]
    await plugin.channel_stopped(hello(9000, "/sms", "first"))
    await plugin.channel_started(second)
    assert os.listdir(tmp_path / "locations") == ["second.conf"]


# -- public_http -----------------------------------------------------------------------


def exposure(config: dict, **properties: Any) -> PublicHttp | None:
    return public_http(FakeChannel(config=config, **properties))


@pytest.mark.parametrize(
    "config, properties, expected",
    [
        ({"web_path": "/a", "web_port": 80}, {}, ("/a", 80)),
        ({"web_path": "a/b", "web_port": 80}, {}, ("/a/b", 80)),
        ({"web_path": "//a", "web_port": 80}, {}, ("/a", 80)),
        ({"web_path": "", "web_port": 80}, {}, ("/", 80)),
        ({"web_path": "/a", "web_port": "8080"}, {}, ("/a", 8080)),
        (
            {"web_path": "/a", "web_port": 80, "public_http": {"web_path": "b", "web_port": 81}},
            {},
            ("/b", 81),
        ),
        (
            {"web_path": "/a", "web_port": 80, "public_http": {"web_path": "/b"}},
            {"public_http": {"web_path": "/c"}},
            ("/c", 80),
        ),
        (
            {"web_path": "/a", "web_port": 80, "public_http": {"web_port": 81}},
            {"public_http": {"web_path": "/c"}},
            ("/c", 81),
        ),
        ({"web_path": "/a"}, {"public_http": {"web_port": 82}}, ("/a", 82)),
        ({}, {"public_http": {"web_path": "/top", "web_port": 83}}, ("/top", 83)),
        ({"web_path": "/a", "web_port": 80, "public_http": {"web_path": None}}, {}, ("/a", 80)),
        ({"web_path": "/a", "web_port": 80, "public_http": {"enabled": False}}, {}, None),
        ({"web_path": "/a", "web_port": 80}, {"public_http": {"enabled": False}}, None),
        (
            {"web_path": "/a", "web_port": 80, "public_http": {"enabled": False}},
            {"public_http": {"enabled": True}},
            ("/a", 80),
        ),
        ({"twisted_endpoint": "tcp:9001"}, {}, None),
        ({}, {"public_http": {"enabled": True}}, None),
    ],
)
def test_public_http_settings(config, properties, expected):
    result = exposure(config, **properties)
    assert (None if result is None else (result.external_path, result.web_port)) == expected


@pytest.mark.parametrize(
    "config, properties, message",
    [
        ({"web_path": "/a"}, {}, r"web_port \(a fixed port, not 0\) is not set"),
        ({"web_path": "/a", "web_port": 0}, {}, r"web_port \(a fixed port, not 0\) is not"),
        ({"web_port": 80}, {}, "web_path is not set"),
        ({"web_path": "/a b", "web_port": 80}, {}, "web_path '/a b' is not allowed"),
        ({"web_path": "/a;}", "web_port": 80}, {}, "is not allowed"),
        ({"web_path": "/a", "web_port": 80}, {"public_http": {"web_path": "/$x"}}, "allowed"),
        ({"web_path": 5, "web_port": 80}, {}, "web_path must be a string"),
        ({"web_path": "/a", "web_port": -1}, {}, "web_port must be a port number"),
        ({"web_path": "/a", "web_port": 65536}, {}, "web_port must be a port number"),
        ({"web_path": "/a", "web_port": "http"}, {}, "web_port must be a port number"),
        ({"web_path": "/a", "web_port": True}, {}, "web_port must be a port number"),
        ({"web_path": "/a", "web_port": 1, "public_http": "yes"}, {}, "config.public_http must"),
        ({"web_path": "/a", "web_port": 1}, {"public_http": {"enabled": "no"}}, "true or false"),
    ],
)
def test_unusable_public_http_settings_say_why(config, properties, message):
    with pytest.raises(NotExposable, match=message):
        exposure(config, **properties)


def test_the_channel_types_web_endpoint_is_used():
    class PortChannel(Transport):
        @classmethod
        def web_endpoint(cls, config):
            return "/inbound", config["port"]

    channel = FakeChannel(config={"port": 7000}, transport=PortChannel)
    assert public_http(channel) == PublicHttp("/inbound", 7000)
    channel.properties["public_http"] = {"web_path": "/public"}
    assert public_http(channel) == PublicHttp("/public", 7000)


@pytest_twisted.ensureDeferred
async def test_unusable_settings_are_logged_in_the_channel_log(tmp_path, events):
    plugin = await started(tmp_path)
    channel = hello(8042, "/a b")
    await plugin.channel_started(channel)
    assert channel.log.errors == [
        "nginx plugin: channel not exposed: web_path '/a b' is not allowed: use only "
        "letters, digits and . _ ~ ! * + , : = @ % / -"
    ]
    assert any(e.endswith("% / - (channel chan-1)") for e in logged_errors(events))
    assert os.listdir(tmp_path / "locations") == []


@pytest_twisted.ensureDeferred
async def test_a_channel_with_half_an_endpoint_gets_a_warning(tmp_path, events):
    runner = Runner()
    plugin = await started(tmp_path, runner)
    channel = FakeChannel(config={"web_path": "/ussd", "web_port": 0})
    await plugin.channel_started(channel)
    assert channel.log.errors == []
    assert channel.log.warnings == [
        "nginx plugin: channel not exposed: web_port (a fixed port, not 0) is not set, so "
        "nginx cannot expose this channel (set it, or public_http.enabled to false)"
    ]
    assert os.listdir(tmp_path / "locations") == []
    assert len(runner.calls) == 1


# -- failures --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_write_failure_is_reported_and_the_channel_keeps_running(tmp_path, gateway, events):
    """Through the real channel manager: the location cannot be written (its directory
    was replaced by a file), the error is in the channel's log file and Junebug's log,
    and the channel runs on."""
    plugin = await started(tmp_path)
    shutil.rmtree(tmp_path / "locations")
    (tmp_path / "locations").write_text("not a directory")
    manager = ChannelManager(gateway.backends, hooks=[PluginHooks([plugin])])
    channel = await manager.create(
        {
            "type": "telnet",
            "config": {"twisted_endpoint": f"tcp:{free_port()}:interface=127.0.0.1"},
            "public_http": {"web_path": "/telnet", "web_port": 9999},
        }
    )
    try:
        assert channel.id in manager.running
        log_file = Path(gateway.backends.config.logging_path) / channel.id
        lines = [json.loads(line) for line in log_file.read_text().splitlines()]
        [error] = [line for line in lines if line["level"] == 40]
        assert error["message"].startswith(
            f"nginx plugin: cannot write {tmp_path / 'locations' / channel.id}.conf: "
        )
        assert any(f"(channel {channel.id})" in e for e in logged_errors(events))
        assert "Plugin NginxPlugin" not in log_file.read_text()  # handled, not raised
    finally:
        await manager.stop_all()


@pytest_twisted.ensureDeferred
async def test_a_failed_reload_is_reported_in_the_channel_log(tmp_path, events):
    runner = Runner()
    plugin = await started(tmp_path, runner)
    runner.result = (b"", b'nginx: [emerg] unknown directive "prox" in x.conf:3\n', 1)
    channel = hello()
    await plugin.channel_started(channel)
    assert channel.log.errors == [
        f"nginx plugin: nginx reload failed: '{FAKE_NGINX} -s reload' exited with 1: "
        'nginx: [emerg] unknown directive "prox" in x.conf:3'
    ]
    assert (tmp_path / "locations" / "chan-1.conf").exists()
    assert "nginx reload failed" in logged_errors(events)[-1]

    runner.answer = lambda: Deferred.fromCoroutine(_raise(OSError("fork failed")))
    await plugin.channel_stopped(channel)
    assert channel.log.errors[-1].endswith("could not run: fork failed")


async def _raise(exc: Exception) -> None:
    raise exc


@pytest_twisted.ensureDeferred
async def test_a_missing_nginx_is_logged_not_fatal(tmp_path, events):
    runner = Runner()
    plugin = await started(tmp_path, runner, reload_command=["no-such-nginx-binary", "-s"])
    assert runner.calls == []
    assert logged_errors(events) == [
        "nginx plugin: cannot reload nginx: 'no-such-nginx-binary' not found in PATH "
        "(ran 'no-such-nginx-binary -s')"
    ]
    channel = hello()
    await plugin.channel_started(channel)
    assert "not found in PATH" in channel.log.errors[0]
    assert (tmp_path / "locations" / "chan-1.conf").exists()


@pytest_twisted.ensureDeferred
async def test_reloads_run_one_at_a_time(tmp_path):
    clock = task.Clock()
    runner = Runner()
    plugin = await started(tmp_path, runner)
    runner.answer = lambda: task.deferLater(clock, 1, lambda: (b"", b"", 0))
    first = Deferred.fromCoroutine(plugin.channel_started(hello(9000, "/a", "a")))
    second = Deferred.fromCoroutine(plugin.channel_started(hello(9001, "/b", "b")))
    assert len(runner.calls) == 2  # the start-up reload and the first channel's
    clock.advance(1)
    assert first.called and not second.called
    assert len(runner.calls) == 3
    clock.advance(1)
    assert second.called


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_the_reload_command_runs_as_a_child_process(tmp_path, events):
    script = 'echo "$@" > ' + str(tmp_path / "ran") + "; echo 'busy, try later' >&2; exit 3"
    plugin = NginxPlugin()
    await within(
        Deferred.fromCoroutine(
            plugin.start_plugin(
                plugin_config(tmp_path, reload_command=["sh", "-c", script, "sh", "one", "two"]),
                None,
            )
        )
    )
    assert (tmp_path / "ran").read_text() == "one two\n"
    assert logged_errors(events)[-1].endswith("exited with 3: busy, try later")

    plugin.settings = nginx_plugin.parse_settings(
        plugin_config(tmp_path, reload_command=["sh", "-c", "kill -KILL $$"])
    )
    assert "was killed by signal 9" in await within(plugin.reload())
    plugin.settings = nginx_plugin.parse_settings(plugin_config(tmp_path, reload_command="true"))
    assert await within(plugin.reload()) is None


# -- a real nginx ----------------------------------------------------------------------


def nginx_binary() -> str:
    found = nginx_plugin.find_executable("nginx")
    if found is None:
        pytest.fail("nginx is not installed: scripts/test.sh installs Debian's nginx package")
    return found


class PrivateNginx:
    """An nginx master of our own: prefix, config, logs and pid all under ``root``.

    Its main config answers 418 on ``port`` for unknown hosts and includes
    ``root/sites/*.conf``, where the plugin writes its vhost.
    """

    def __init__(self, root: Path) -> None:
        self.binary = nginx_binary()
        self.root = root
        self.port = free_port()
        self.sites = root / "sites"
        self.conf = root / "nginx.conf"
        self.process: subprocess.Popen | None = None
        self.sites.mkdir(parents=True)
        (root / "temp").mkdir()
        (root / "logs").mkdir()
        # As root, workers would run as "nobody" and could not read our temp directory.
        user = "user root;" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"""
{user}
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    server {{
        listen 127.0.0.1:{self.port} default_server;
        return 418;
    }}
    include {self.sites}/*.conf;
}}
"""
        )

    def command(self, *extra: str, directives: str = "") -> list[str]:
        pid_and_log = f"pid {self.root}/nginx.pid; error_log {self.root}/logs/error.log;"
        return [
            self.binary,
            *("-p", str(self.root), "-c", str(self.conf)),
            *("-e", str(self.root / "logs" / "error.log")),
            *("-g", directives + pid_and_log),
            *extra,
        ]

    @property
    def reload_command(self) -> list[str]:
        return self.command("-s", "reload")

    def vhost_template(self) -> Path:
        """The bundled vhost template, listening on our port instead of 80."""
        bundled = resources.files("junebug.plugins.nginx").joinpath("vhost.template")
        template = self.root / "vhost.template"
        text = bundled.read_text().replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        assert f"listen 127.0.0.1:{self.port};" in text
        template.write_text(text)
        return template

    def start(self) -> PrivateNginx:
        self.process = subprocess.Popen(
            self.command(directives="daemon off; master_process on; "),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return self

    def stop(self) -> str:
        if self.process is None:
            return ""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        output = self.process.stdout.read().decode("utf-8", "replace")
        self.process.stdout.close()
        return output

    def error_log(self) -> str:
        path = self.root / "logs" / "error.log"
        return path.read_text()[-3000:] if path.exists() else ""

    async def get(self, path: str, host: str = "junebug.test", method: str = "GET", body=None):
        response = await within(
            treq.request(
                method,
                f"http://127.0.0.1:{self.port}{path}",
                headers={"Host": [host]},
                data=body,
            )
        )
        return response.code, (await within(response.content())).decode("utf-8", "replace")

    async def until(self, path: str, expected_code: int, seconds: float = WAIT) -> str:
        """Poll ``path`` until nginx answers ``expected_code`` (reloads are asynchronous)."""
        last: Any = None
        for _ in range(int(seconds / 0.05)):
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited: {self.stop()}{self.error_log()}")
            try:
                code, body = await self.get(path)
            except (ConnectError, ResponseFailed, ResponseNeverReceived) as exc:
                last = exc
            else:
                if code == expected_code:
                    return body
                last = (code, body)
            await task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(
            f"nginx never answered {expected_code} for {path}; last: {last!r}\n{self.error_log()}"
        )


@pytest.fixture
def private_nginx(tmp_path):
    server = PrivateNginx(tmp_path / "nginx").start()
    yield server
    server.stop()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_the_bundled_templates_are_valid_nginx_config(tmp_path):
    """Render both bundled templates (port 80 and all) and have nginx check them."""
    server = PrivateNginx(tmp_path / "nginx")
    plugin = NginxPlugin(run=Runner())
    config = plugin_config(
        tmp_path,
        vhost_file=str(server.sites / "junebug.conf"),
        locations_dir=str(tmp_path / "locations"),
    )
    await plugin.start_plugin(config, None)
    await plugin.channel_started(hello(9000, "x/y"))
    command = server.command("-t")
    out, err, code = await within(
        getProcessOutputAndValue(command[0], command[1:], env=dict(os.environ))
    )
    assert code == 0, err
    assert b"test is successful" in err


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_nginx_exposes_an_http_channel_while_it_exists(tmp_path, private_nginx, receiver):
    nginx = private_nginx
    await nginx.until("/hello", 418)  # up, and no vhost for junebug.test yet
    locations = tmp_path / "locations"
    vhost = nginx.sites / "junebug.conf"
    plugin = {
        "type": "junebug.plugins.nginx.NginxPlugin",
        "server_name": "junebug.test",
        "vhost_file": str(vhost),
        "locations_dir": str(locations),
        "vhost_template": str(nginx.vhost_template()),
        "reload_command": nginx.reload_command,
    }
    api_port, channel_port = free_port(), free_port()
    jb = await JbProcess(
        *("-p", str(api_port), "--data-dir", str(tmp_path / "data")),
        *("-lp", str(tmp_path / "logs")),
        *("--plugin", json.dumps(plugin), "--channels", HELLO_TYPE),
        cwd=str(tmp_path),
        env={"PYTHONPATH": str(THIRD_PARTY)},
    ).start()
    try:
        assert vhost.exists()
        await nginx.until("/hello", 404)  # the vhost is live; no channel yet

        api = ApiClient(f"http://127.0.0.1:{api_port}")
        code, body = await api.post(
            "/channels/",
            {
                "type": "hello",
                "config": {
                    "web_path": "hello",
                    "web_port": channel_port,
                    "greeting": "hello through nginx",
                },
                "mo_url": receiver.url("/mo"),
            },
        )
        assert code == 201, body
        channel_id = body["result"]["id"]
        assert (locations / f"{channel_id}.conf").exists()
        assert await nginx.until("/hello", 200) == "hello through nginx"

        code, message_id = await nginx.get("/hello", method="POST", body=b"hi from a phone")
        assert code == 200
        inbound = (await receiver.next()).json
        assert (inbound["message_id"], inbound["content"]) == (message_id, "hi from a phone")

        code, body = await api.delete(f"/channels/{channel_id}")
        assert code == 200, body
        assert not (locations / f"{channel_id}.conf").exists()
        await nginx.until("/hello", 404)
    finally:
        assert await jb.stop() == 0, jb.output
    assert not vhost.exists()
    assert list(locations.glob("*.conf")) == []
    await nginx.until("/hello", 418)  # the vhost is gone from nginx too
    assert "nginx plugin: cannot" not in jb.output and "reload failed" not in jb.output


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_dmark_ussd_channel_works_behind_nginx(tmp_path, private_nginx, receiver):
    """The bundled HTTP-based channel type, exposed by the plugin: a USSD dial through
    nginx reaches the channel, and the application's reply comes back through nginx."""
    from urllib.parse import urlencode

    from twisted.internet.defer import Deferred

    nginx = private_nginx
    await nginx.until("/ussd", 418)
    plugin = {
        "type": "junebug.plugins.nginx.NginxPlugin",
        "server_name": "junebug.test",
        "vhost_file": str(nginx.sites / "junebug.conf"),
        "locations_dir": str(tmp_path / "locations"),
        "vhost_template": str(nginx.vhost_template()),
        "reload_command": nginx.reload_command,
    }
    api_port, ussd_port = free_port(), free_port()
    jb = await JbProcess(
        *("-p", str(api_port), "--data-dir", str(tmp_path / "data")),
        *("-lp", str(tmp_path / "logs"), "--plugin", json.dumps(plugin)),
        cwd=str(tmp_path),
    ).start()
    try:
        api = ApiClient(f"http://127.0.0.1:{api_port}")
        code, body = await api.post(
            "/channels/",
            {
                "type": "dmark",
                "config": {"web_path": "ussd", "web_port": ussd_port},
                "mo_url": receiver.url("/mo"),
            },
        )
        assert code == 201, body
        channel_id = body["result"]["id"]
        await nginx.until("/ussd", 400)  # the channel answers (a dial without parameters)

        dial = urlencode(
            {
                "transactionId": "tx-nginx-1",
                "msisdn": "+256772000001",
                "ussdServiceCode": "*384#",
                "transactionTime": "2024-05-01T10:00:00",
                "ussdRequestString": "*384#",
                "creationTime": "2024-05-01T10:00:00",
                "response": "false",
            }
        )
        answer = Deferred.fromCoroutine(nginx.get(f"/ussd?{dial}"))
        inbound = (await receiver.next()).json
        assert inbound["channel_data"]["session_event"] == "new"
        code, body = await api.post(
            f"/channels/{channel_id}/messages/",
            {
                "reply_to": inbound["message_id"],
                "content": "Welcome, through nginx",
                "channel_data": {"continue_session": False},
            },
        )
        assert code == 201, body
        code, text = await answer
        assert code == 200
        assert json.loads(text)["responseString"] == "Welcome, through nginx"
        assert json.loads(text)["action"] == "end"
    finally:
        assert await jb.stop() == 0, jb.output
