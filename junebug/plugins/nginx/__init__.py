"""The nginx plugin: exposes HTTP-based channels through an nginx virtual host.

Enable it with ``--plugin '{"type": "junebug.plugins.nginx.NginxPlugin",
"server_name": "sms.example.org"}'`` (or in the config file's ``plugins`` list).

* ``start_plugin`` writes ``vhost_file``, a ``server`` block that includes every
  ``<locations_dir>/*.conf``, then reloads nginx.
* ``channel_started`` writes ``<locations_dir>/<channel id>.conf``, a ``location``
  block proxying the channel's public path to its local port, then reloads nginx.
* ``channel_stopped`` removes that file and reloads; ``stop_plugin`` removes the
  vhost and every location file this plugin wrote, and reloads.

A channel is exposed when it has a web path and a web port: its channel type's
``Transport.web_endpoint(config)`` (by default the config's ``web_path`` and
``web_port``), overridden key by key by ``public_http`` in the channel's config and
then by the channel's top-level ``public_http`` (which wins). ``public_http.enabled:
false`` keeps the channel out of nginx.

Templates are Python ``%``-format strings (``%(name)s``; a literal ``%`` is ``%%``):

* vhost: ``server_name``, ``locations_dir`` (absolute) and ``includes``
  (``<locations_dir>/*.conf``).
* location: ``channel_id``, ``external_path`` (the public path, with a leading
  slash), ``web_port`` and ``internal_url`` (``http://127.0.0.1:<web_port><path>``).

Writing a location file or reloading nginx can fail (permissions, no nginx): that is
logged in the channel's log and Junebug's log, and the channel keeps running. At
start-up an unwritable ``vhost_file`` or ``locations_dir`` stops Junebug with a
message, while a failed reload is only logged (nginx reads the files when it starts).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger

from junebug.plugin import JunebugPlugin, PluginConfigError
from junebug.transports.base import Transport

__all__ = [
    "DEFAULTS",
    "IncompleteEndpoint",
    "NginxPlugin",
    "NginxSettings",
    "NotExposable",
    "PublicHttp",
    "parse_settings",
    "public_http",
]

log = Logger(namespace="junebug.plugins.nginx")

#: Default values of the optional config keys (templates default to the bundled ones).
DEFAULTS: dict[str, Any] = {
    "vhost_file": "/etc/nginx/sites-enabled/junebug.conf",
    "locations_dir": "/etc/nginx/includes/junebug/",
    "vhost_template": None,
    "location_template": None,
    "reload_command": ["nginx", "-s", "reload"],
}
_KNOWN_KEYS = frozenset({"type", "server_name", *DEFAULTS})

#: Template variables, with the sample values templates are checked with at start-up.
VHOST_VARIABLES = {
    "server_name": "junebug.example.org",
    "locations_dir": "/etc/nginx/includes/junebug",
    "includes": "/etc/nginx/includes/junebug/*.conf",
}
LOCATION_VARIABLES = {
    "channel_id": "2d5d8bbb-1c6a-4c59-9d34-8c2f6a3a0e51",
    "external_path": "/sms/inbound",
    "web_port": 8080,
    "internal_url": "http://127.0.0.1:8080/sms/inbound",
}

#: First line of every location file; files starting with it are ours to clean up.
_MANAGED = "# Managed by Junebug's nginx plugin"
#: Public paths may only use these characters, so a path cannot change nginx's syntax.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._~!*+,:=@%/-]*")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_SERVER_NAME = re.compile(r"[^\s;{}'\"#$\\]+(?: [^\s;{}'\"#$\\]+)*")
#: Directories searched for the reload command after PATH (nginx lives in sbin).
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")

#: ``run(executable, args)`` -> Deferred firing with ``(stdout, stderr, exit code)``.
Runner = Callable[[str, list[str]], Deferred]


@attrs.frozen
class NginxSettings:
    """The plugin's validated config, with both templates already read."""

    server_name: str
    vhost_file: str
    locations_dir: str
    vhost_template: str
    location_template: str
    vhost_template_name: str
    location_template_name: str
    reload_command: list[str]


def _bundled(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _read_template(config: Mapping[str, Any], key: str, problems: list[str]) -> tuple[str, str]:
    """(text, name) of a template: the file the config names, or the bundled one."""
    path = config.get(key)
    if path is None:
        return _bundled(key.replace("_template", ".template")), f"bundled {key}"
    if not (isinstance(path, str) and path):
        problems.append(f"{key} must be a path to a file (a non-empty string), not {path!r}")
        return "", key
    try:
        with open(path, encoding="utf-8") as template:
            return template.read(), f"{key} {path}"
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"cannot read {key} {path}: {getattr(exc, 'strerror', None) or exc}")
        return "", key


def _check_template(
    text: str, name: str, variables: Mapping[str, Any], problems: list[str]
) -> None:
    try:
        text % variables
    except KeyError as exc:
        problems.append(
            f"{name} uses the unknown variable %({exc.args[0]})s "
            f"(available: {', '.join(variables)})"
        )
    except (ValueError, TypeError) as exc:
        problems.append(f"{name} is not a valid %-format template ({exc}); write % as %%")


def parse_settings(config: Mapping[str, Any]) -> NginxSettings:
    """Validate the plugin's config; raises PluginConfigError listing every problem."""
    problems: list[str] = []
    unknown = sorted(str(key) for key in config if key not in _KNOWN_KEYS)
    if unknown:
        problems.append(
            f"unknown config keys: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_KNOWN_KEYS - {'type'}))})"
        )
    server_name = config.get("server_name")
    if server_name is None:
        problems.append("server_name is required (the host name nginx serves Junebug on)")
    elif not (isinstance(server_name, str) and _SERVER_NAME.fullmatch(server_name)):
        problems.append(
            f"server_name must be one or more names separated by single spaces, without "
            f"; {{ }} quotes # $ or backslashes, not {server_name!r}"
        )
    paths = {}
    for key in ("vhost_file", "locations_dir"):
        value = config.get(key, DEFAULTS[key])
        if not (isinstance(value, str) and value.strip()):
            problems.append(f"{key} must be a path (a non-empty string), not {value!r}")
            value = "."
        paths[key] = os.path.abspath(value)
    command = config.get("reload_command", DEFAULTS["reload_command"])
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            problems.append(f"reload_command cannot be split into arguments: {exc}")
            command = []
    if not (
        isinstance(command, list) and command and all(isinstance(a, str) and a for a in command)
    ):
        problems.append(
            "reload_command must be a non-empty list of strings or a command line string, "
            f"not {config.get('reload_command')!r}"
        )
        command = []
    vhost, vhost_name = _read_template(config, "vhost_template", problems)
    location, location_name = _read_template(config, "location_template", problems)
    _check_template(vhost, vhost_name, VHOST_VARIABLES, problems)
    _check_template(location, location_name, LOCATION_VARIABLES, problems)
    if problems:
        raise PluginConfigError("nginx plugin: " + "; ".join(problems))
    return NginxSettings(
        server_name=server_name,
        vhost_file=paths["vhost_file"],
        locations_dir=paths["locations_dir"],
        vhost_template=vhost,
        location_template=location,
        vhost_template_name=vhost_name,
        location_template_name=location_name,
        reload_command=list(command),
    )


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (temp file + rename); makes its
    directory if needed. Raises OSError."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    # ".tmp", so nginx's "*.conf" include never sees a half-written file.
    handle, temp = tempfile.mkstemp(dir=directory, prefix=".junebug-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as temp_file:
            temp_file.write(text)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _remove(path: str) -> None:
    """Delete ``path``; one that is already gone is fine. Raises OSError."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _reason(exc: OSError) -> str:
    return f"{exc.strerror} ({exc.filename})" if exc.strerror and exc.filename else str(exc)


def find_executable(name: str) -> str | None:
    """``name`` resolved through PATH, then the sbin directories; None if not found."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
    return shutil.which(name, path=search)


def spawn(reactor: Any) -> Runner:
    """A Runner that runs the command as a child process of ``reactor``."""

    def run(executable: str, args: list[str]) -> Deferred:
        d = getProcessOutputAndValue(executable, args, env=dict(os.environ), reactor=reactor)

        def killed(failure: Any) -> Any:
            # getProcessOutputAndValue errbacks with (out, err, signal) on a signal.
            if isinstance(failure.value, tuple) and len(failure.value) == 3:
                out, err, signal = failure.value
                return out, err, -signal
            return failure

        return d.addErrback(killed)

    return run


@attrs.frozen
class PublicHttp:
    """Where nginx exposes one channel."""

    external_path: str
    web_port: int

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}{self.external_path}"


class NotExposable(ValueError):
    """The channel asks to be exposed but its public_http settings are unusable."""


class IncompleteEndpoint(NotExposable):
    """Only one of web_path and web_port is known (a warning, not an error)."""


def _web_endpoint(channel: Any, config: Mapping[str, Any]) -> tuple[Any, Any]:
    path, port = config.get("web_path"), config.get("web_port")
    try:
        transport = channel.transport_class
    except (AttributeError, KeyError):
        transport = Transport
    endpoint = transport.web_endpoint(config)
    if endpoint is not None:
        path, port = endpoint
    return path, port


def public_http(channel: Any) -> PublicHttp | None:
    """Where ``channel`` should be exposed, or None when it should not be.

    Raises NotExposable (with a message for the channel's log) for unusable settings.
    """
    properties = channel.properties or {}
    config = properties.get("config") or {}
    path, port = _web_endpoint(channel, config)
    settings: dict[str, Any] = {"enabled": True, "web_path": path, "web_port": port}
    for where, overrides in (
        ("config.public_http", config.get("public_http")),
        ("public_http", properties.get("public_http")),
    ):
        if overrides is None:
            continue
        if not isinstance(overrides, Mapping):
            raise NotExposable(f"{where} must be an object, not {overrides!r}")
        settings.update({k: v for k, v in overrides.items() if v is not None})
    enabled, path, port = settings["enabled"], settings["web_path"], settings["web_port"]
    if not isinstance(enabled, bool):
        raise NotExposable(f"public_http.enabled must be true or false, not {enabled!r}")
    if port == 0 and type(port) is int:
        port = None  # a port picked at random: nothing nginx can be told in advance
    if not enabled or (path is None and port is None):
        return None
    if path is None or port is None:
        missing = "web_path" if path is None else "web_port (a fixed port, not 0)"
        raise IncompleteEndpoint(
            f"{missing} is not set, so nginx cannot expose this channel (set it, or "
            "public_http.enabled to false)"
        )
    if not isinstance(path, str):
        raise NotExposable(f"web_path must be a string, not {path!r}")
    external_path = "/" + path.lstrip("/")
    if not _SAFE_PATH.fullmatch(external_path):
        raise NotExposable(
            f"web_path {path!r} is not allowed: use only letters, digits and . _ ~ ! * + , : "
            "= @ % / -"
        )
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535):
        raise NotExposable(f"web_port must be a port number (1-65535), not {port!r}")
    return PublicHttp(external_path=external_path, web_port=port)


class NginxPlugin(JunebugPlugin):
    """Keeps an nginx vhost with one location per HTTP-based channel, and reloads nginx."""

    def __init__(self, reactor: Any = None, run: Runner | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.run = run or spawn(reactor)
        self.settings: NginxSettings | None = None
        #: Location files written, by channel id.
        self.locations: dict[str, str] = {}
        #: Public path of each channel with a location file, by channel id.
        self.paths: dict[str, str] = {}
        self._reload_lock = DeferredLock()

    # -- hooks -----------------------------------------------------------------------

    async def start_plugin(self, config: dict[str, Any], junebug_config: Any) -> None:
        settings = self.settings = parse_settings(config)
        try:
            os.makedirs(settings.locations_dir, exist_ok=True)
            self._remove_stale_locations()
        except OSError as exc:
            raise PluginConfigError(
                f"nginx plugin: cannot use locations_dir {settings.locations_dir}: {_reason(exc)}"
            ) from exc
        try:
            write_atomically(settings.vhost_file, self.render_vhost())
        except OSError as exc:
            raise PluginConfigError(
                f"nginx plugin: cannot write vhost_file {settings.vhost_file}: {_reason(exc)}"
            ) from exc
        log.info("nginx plugin: wrote {path}", path=settings.vhost_file)
        error = await self.reload()
        if error is not None:
            log.error("nginx plugin: {error}", error=error)

    async def stop_plugin(self) -> None:
        settings = self.settings
        if settings is None:
            return
        for channel_id, path in sorted(self.locations.items()):
            try:
                _remove(path)
            except OSError as exc:
                log.error(
                    "nginx plugin: cannot remove {path} (channel {channel_id}): {error}",
                    path=path,
                    channel_id=channel_id,
                    error=_reason(exc),
                )
        self.locations.clear()
        self.paths.clear()
        try:
            _remove(settings.vhost_file)
        except OSError as exc:
            log.error("nginx plugin: cannot remove the vhost file: {error}", error=_reason(exc))
        error = await self.reload()
        if error is not None:
            log.error("nginx plugin: {error}", error=error)
        self.settings = None

    async def channel_started(self, channel: Any) -> None:
        settings = self.settings
        if settings is None:
            return
        exposed = self._exposure(channel)
        if exposed is None:
            if channel.id in self.locations:
                await self.channel_stopped(channel)
            return
        if not _SAFE_ID.fullmatch(channel.id):
            self._channel_error(channel, f"channel id {channel.id!r} cannot name a file")
            return
        path = os.path.join(settings.locations_dir, f"{channel.id}.conf")
        try:
            text = self.render_location(channel.id, exposed)
        except (KeyError, ValueError, TypeError) as exc:
            self._channel_error(channel, f"{settings.location_template_name}: {exc!r}")
            return
        try:
            write_atomically(path, text)
        except OSError as exc:
            self._channel_error(channel, f"cannot write {path}: {_reason(exc)}")
            return
        self.locations[channel.id] = path
        self.paths[channel.id] = exposed.external_path
        error = await self.reload()
        if error is not None:
            self._channel_error(channel, error)
            return
        message = (
            f"nginx plugin: exposed at {exposed.external_path} on {settings.server_name}, "
            f"proxied to {exposed.internal_url}"
        )
        channel.log.info(message)
        log.info("{message} (channel {channel_id})", message=message, channel_id=channel.id)

    async def channel_stopped(self, channel: Any) -> None:
        path = self.locations.pop(channel.id, None)
        self.paths.pop(channel.id, None)
        if path is None:
            return
        try:
            _remove(path)
        except OSError as exc:
            self._channel_error(channel, f"cannot remove {path}: {_reason(exc)}")
            return
        error = await self.reload()
        if error is not None:
            self._channel_error(channel, error)

    # -- the pieces ------------------------------------------------------------------

    def _exposure(self, channel: Any) -> PublicHttp | None:
        """Where to expose ``channel``; None (with the reason logged) when it is not."""
        try:
            exposed = public_http(channel)
        except IncompleteEndpoint as exc:
            channel.log.warning(f"nginx plugin: channel not exposed: {exc}")
            log.warn(
                "nginx plugin: channel not exposed: {reason} (channel {channel_id})",
                reason=str(exc),
                channel_id=channel.id,
            )
            return None
        except NotExposable as exc:
            self._channel_error(channel, f"channel not exposed: {exc}")
            return None
        if exposed is None:
            return None
        for other, path in self.paths.items():
            if other != channel.id and path == exposed.external_path:
                # Two locations with one path would make every later nginx reload fail.
                self._channel_error(
                    channel,
                    f"channel not exposed: {path} is already the public path of channel {other}",
                )
                return None
        return exposed

    def render_vhost(self) -> str:
        settings = self.settings
        return settings.vhost_template % {
            "server_name": settings.server_name,
            "locations_dir": settings.locations_dir,
            "includes": os.path.join(settings.locations_dir, "*.conf"),
        }

    def render_location(self, channel_id: str, exposed: PublicHttp) -> str:
        body = self.settings.location_template % {
            "channel_id": channel_id,
            "external_path": exposed.external_path,
            "web_port": exposed.web_port,
            "internal_url": exposed.internal_url,
        }
        return f"{_MANAGED} for channel {channel_id}; removed when it stops.\n{body}"

    def reload(self) -> Deferred:
        """Run the reload command (one at a time); fires with None on success, else
        with a description of what went wrong. Never fails."""
        return self._reload_lock.run(lambda: Deferred.fromCoroutine(self._reload()))

    async def _reload(self) -> str | None:
        command = self.settings.reload_command
        shown = shlex.join(command)
        executable = find_executable(command[0])
        if executable is None:
            return f"cannot reload nginx: {command[0]!r} not found in PATH (ran {shown!r})"
        try:
            out, err, code = await self.run(executable, command[1:])
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            return f"cannot reload nginx: {shown!r} could not run: {exc}"
        if code == 0:
            return None
        detail = (err or out or b"").decode("utf-8", "replace").strip()[-1000:]
        ended = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        return f"nginx reload failed: {shown!r} {ended}" + (f": {detail}" if detail else "")

    def _remove_stale_locations(self) -> None:
        """Delete location files a previous run left behind (after a crash)."""
        directory = self.settings.locations_dir
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not (name.endswith(".conf") and os.path.isfile(path)):
                continue
            with open(path, encoding="utf-8", errors="replace") as location:
                first_line = location.readline()
            if first_line.startswith(_MANAGED):
                _remove(path)
                log.info("nginx plugin: removed stale {path}", path=path)

    def _channel_error(self, channel: Any, message: str) -> None:
        channel.log.error(f"nginx plugin: {message}")
        log.error(
            "nginx plugin: {message} (channel {channel_id})",
            message=message,
            channel_id=channel.id,
        )
