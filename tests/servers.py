"""Private Redis and RabbitMQ servers for tests that stop, crash or restart them.

The shared servers (Redis on 6379, RabbitMQ on 5672) must stay up for every other
test, so a test that breaks a server starts its own here: a child process bound to
127.0.0.1 on a free port, with its data in a temporary directory. Everything is
synchronous, so the helpers work from plain pytest fixtures::

    from tests.servers import private_rabbitmq_fixture
    rabbitmq = private_rabbitmq_fixture()          # in a conftest or test module

    def test_outage(rabbitmq):
        rabbitmq.kill()                            # a crash (SIGKILL)
        rabbitmq.start()                           # back on the same port

``start()`` returns once the port accepts connections; ``stop()`` shuts down
cleanly; ``kill()`` is a crash; ``restart()`` is ``stop()`` + ``start()`` on the same
port; ``cleanup()`` stops the server and removes its files.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
REDIS_SERVER = "/usr/bin/redis-server"
RABBITMQ_SERVER = "/usr/sbin/rabbitmq-server"
RABBITMQCTL = "/usr/sbin/rabbitmqctl"


class ServerError(RuntimeError):
    """A private server did not start or stop in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; raise ServerError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ServerError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ChildServer:
    """A server the tests run as a child process on a port of 127.0.0.1, in its own
    directory: a clean stop (SIGTERM), a crash (SIGKILL), a restart on the same port."""

    process: subprocess.Popen | None
    port: int
    directory: Path

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        """A clean shutdown: SIGTERM."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """A crash: SIGKILL."""
        self._end(signal.SIGKILL)

    def restart(self) -> Any:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _end(self, sig: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        wait_until(lambda: not port_open(self.port), 5, f"port {self.port} to close")


class PrivateRedis(ChildServer):
    """Debian's redis-server as a child process, without persistence."""

    start_timeout = 10.0

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = HOST
        self.directory = Path(tempfile.mkdtemp(prefix="jb-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> PrivateRedis:
        if self.running:
            return self
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - kept by the child
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"redis-server exited: {self._log_tail()}")
            return port_open(self.port)

        wait_until(ready, self.start_timeout, f"redis on port {self.port}")
        return self

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "redis.log").read_text()[-2000:]
        return ""


class PrivateRabbitMQ:
    """A RabbitMQ node of its own: its files in a temporary directory, its own ports.

    Debian's wrapper runs the broker as the ``rabbitmq`` user, so the directory is
    chowned to it; the node gets a unique name and its own config file (the
    system-wide one pins the shared node's listener), plus the management plugin
    on ``management_port`` when asked for.
    """

    start_timeout = 60.0

    def __init__(self, port: int | None = None, management: bool = False) -> None:
        self.host = HOST
        self.port = port or free_port()
        self.dist_port = free_port()
        self.management_port = free_port() if management else None
        self.node = f"jbtest{uuid.uuid4().hex[:10]}@localhost"
        self.directory = Path(tempfile.mkdtemp(prefix="jb-rabbitmq-"))
        self.process: subprocess.Popen | None = None
        self._prepare()

    def _prepare(self) -> None:
        d = self.directory
        (d / "mnesia").mkdir()
        (d / "log").mkdir()
        plugins = "[rabbitmq_management]." if self.management_port else "[]."
        (d / "enabled_plugins").write_text(plugins + "\n")
        config = [f"listeners.tcp.default = {HOST}:{self.port}", "loopback_users = none"]
        if self.management_port:
            config += [
                f"management.tcp.port = {self.management_port}",
                f"management.tcp.ip = {HOST}",
            ]
        (d / "rabbitmq.conf").write_text("\n".join(config) + "\n")
        (d / "rabbitmq-env.conf").write_text("")
        user = pwd.getpwnam("rabbitmq")
        os.chmod(d, 0o755)
        for path in [d, *d.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _env(self) -> dict[str, str]:
        d = self.directory
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_PID_FILE=str(d / "pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(d / "feature_flags"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            ERL_EPMD_ADDRESS=HOST,
        )
        return env

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    def start(self) -> PrivateRabbitMQ:
        if self.running:
            return self
        output = open(self.directory / "server.out", "ab")  # noqa: SIM115 - kept by the child
        self.process = subprocess.Popen(
            [RABBITMQ_SERVER],
            env=self._env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        output.close()

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"rabbitmq-server exited: {self.log_tail()}")
            ports = [self.port] + ([self.management_port] if self.management_port else [])
            return all(port_open(port) for port in ports)

        try:
            wait_until(ready, self.start_timeout, f"rabbitmq on port {self.port}", 0.1)
        except ServerError:
            self.kill()
            raise
        return self

    def broker_pid(self) -> int | None:
        """The OS pid of the node's Erlang VM (beam), from its pid file."""
        with contextlib.suppress(OSError, ValueError):
            return int((self.directory / "pid").read_text().strip())
        return None

    def stop(self) -> None:
        """A clean shutdown through rabbitmqctl; the node closes its connections first."""
        if not self.running:
            return
        result = subprocess.run(
            [RABBITMQCTL, "-n", self.node, "stop"],
            env=self._env(),
            capture_output=True,
            timeout=60,
        )
        if result.returncode != 0:
            self.kill()
            return
        self._reap()

    def kill(self) -> None:
        """A crash: SIGKILL to the Erlang VM (and the wrapper processes around it)."""
        pid = self.broker_pid()
        if pid is not None and _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self._reap()

    def restart(self) -> PrivateRabbitMQ:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Kill the node (its data is thrown away, so a clean stop buys nothing) and
        remove its files."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _reap(self) -> None:
        process, self.process = self.process, None
        pid = self.broker_pid()
        if process is not None:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if pid is not None:
            wait_until(lambda: not _pid_alive(pid), 10, f"beam {pid} to exit")
        with contextlib.suppress(OSError):
            (self.directory / "pid").unlink()
        wait_until(lambda: not port_open(self.port), 10, f"port {self.port} to close")

    def log_tail(self, size: int = 3000) -> str:
        texts = []
        for path in [self.directory / "server.out", *sorted((self.directory / "log").glob("*"))]:
            with contextlib.suppress(OSError):
                texts.append(f"--- {path.name}\n{path.read_text()[-size:]}")
        return "\n".join(texts)


@contextlib.contextmanager
def running(server: Any) -> Iterator[Any]:
    """Start ``server`` and clean it up afterwards, whatever happens."""
    try:
        yield server.start()
    finally:
        server.cleanup()


def private_redis_fixture(scope: str = "function") -> Any:
    """A pytest fixture yielding a started PrivateRedis; bind it to a name in a conftest."""

    @pytest.fixture(scope=scope)
    def private_redis() -> Iterator[PrivateRedis]:
        with running(PrivateRedis()) as server:
            yield server

    return private_redis


def private_rabbitmq_fixture(scope: str = "function", management: bool = False) -> Any:
    """A pytest fixture yielding a started PrivateRabbitMQ (about 7 s to start)."""

    @pytest.fixture(scope=scope)
    def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
        with running(PrivateRabbitMQ(management=management)) as server:
            yield server

    return private_rabbitmq
