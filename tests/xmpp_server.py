"""A private XMPP server and an independent XMPP user, for the xmpp channel's tests.

``PrivateProsody`` runs Debian's ``prosody`` as a child process with everything of
its own in a temporary directory: config file, data, pid file, log, and a
self-signed certificate for its domain (``localhost``). Its client port is a free
port on 127.0.0.1; server-to-server and HTTP are off. Accounts are registered with
``prosodyctl`` using that config, before or while the server runs::

    server = PrivateProsody().start()
    server.register("alice", "secret")
    server.restart()            # same port, same accounts
    server.cleanup()

``XmppUser`` is a person with an XMPP client that shares no code with the channel:
the ``slixmpp`` library (asyncio) running in its own thread with its own event
loop. Its methods are called from the Twisted reactor thread; what it receives is
handed back to the reactor with ``callFromThread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue

from tests.helpers import within
from tests.servers import (  # noqa: F401 - ServerError is raised to this module's users
    HOST,
    ChildServer,
    ServerError,
    free_port,
    port_open,
    wait_until,
)

PROSODY = "/usr/bin/prosody"
PROSODYCTL = "/usr/bin/prosodyctl"


def _lua(text: str) -> str:
    """A Lua string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_certificate(directory: Path, domain: str) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for ``domain``: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class PrivateProsody(ChildServer):
    """Debian's prosody as a child process on a free port of 127.0.0.1.

    ``tls=True`` (the default) offers and requires STARTTLS with a self-signed
    certificate (``ca_file`` is the certificate to trust); ``tls=False`` offers no
    TLS and allows PLAIN authentication in the clear.
    """

    start_timeout = 15.0

    def __init__(self, domain: str = "localhost", port: int | None = None, tls: bool = True):
        self.domain = domain
        self.host = HOST
        self.port = port or free_port()
        self.tls = tls
        self.directory = Path(tempfile.mkdtemp(prefix="jb-prosody-"))
        self.config_path = self.directory / "prosody.cfg.lua"
        self.ca_file: str | None = None
        self.process: subprocess.Popen | None = None
        self._accounts = 0
        self._prepare()

    def _prepare(self) -> None:
        d = self.directory
        (d / "data").mkdir()
        modules = ["roster", "saslauth", "disco", "ping", "offline", "posix"]
        lines = [
            f"pidfile = {_lua(str(d / 'prosody.pid'))}",
            f"data_path = {_lua(str(d / 'data'))}",
            "daemonize = false",
            "run_as_root = true",
            "plugin_paths = {}",
            f"c2s_ports = {{ {self.port} }}",
            f"c2s_interfaces = {{ {_lua(HOST)} }}",
            "c2s_direct_tls_ports = {}",
            "legacy_ssl_ports = {}",
            "s2s_ports = {}",
            "http_ports = {}",
            "https_ports = {}",
            'modules_disabled = { "s2s" }',
            f"log = {{ debug = {_lua(str(d / 'prosody.log'))} }}",
            'authentication = "internal_hashed"',
            'storage = "internal"',
            # Tests log in many times a second from one address.
            "limits = {}",
        ]
        if self.tls:
            cert, key = make_certificate(d, self.domain)
            self.ca_file = str(cert)
            modules.append("tls")
            lines += [
                "c2s_require_encryption = true",
                f"ssl = {{ certificate = {_lua(str(cert))}; key = {_lua(str(key))} }}",
            ]
        else:
            lines += ["c2s_require_encryption = false", "allow_unencrypted_plain_auth = true"]
        lines.insert(0, "modules_enabled = { " + "; ".join(_lua(m) for m in modules) + " }")
        lines.append(f"VirtualHost {_lua(self.domain)}")
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- accounts ---------------------------------------------------------------------

    def register(self, user: str, password: str) -> str:
        """Create (or reset) an account; returns its bare JID."""
        result = subprocess.run(
            [
                PROSODYCTL,
                "--config",
                str(self.config_path),
                "register",
                user,
                self.domain,
                password,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise ServerError(f"prosodyctl register {user} failed: {result.stdout}{result.stderr}")
        return f"{user}@{self.domain}"

    def new_account(self, prefix: str = "user") -> tuple[str, str]:
        """A fresh account with a random password: (bare JID, password)."""
        self._accounts += 1
        user = f"{prefix}{self._accounts}-{uuid.uuid4().hex[:6]}"
        password = uuid.uuid4().hex
        return self.register(user, password), password

    # -- the process ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> PrivateProsody:
        if self.running:
            return self
        output = open(self.directory / "prosody.out", "ab")  # noqa: SIM115 - kept by the child
        self.process = subprocess.Popen(
            [PROSODY, "--config", str(self.config_path), "-F"],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.directory,
        )
        output.close()

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"prosody exited: {self.log_tail()}")
            return port_open(self.port)

        try:
            wait_until(ready, self.start_timeout, f"prosody on port {self.port}")
        except ServerError:
            self.kill()
            raise
        return self

    def log_tail(self, size: int = 3000) -> str:
        texts = []
        for name in ("prosody.out", "prosody.log"):
            with contextlib.suppress(OSError):
                texts.append(f"--- {name}\n{(self.directory / name).read_text()[-size:]}")
        return "\n".join(texts)


@contextlib.contextmanager
def running_prosody(**options: Any) -> Iterator[PrivateProsody]:
    server = PrivateProsody(**options)
    try:
        yield server.start()
    finally:
        server.cleanup()


# -- the user on the other end ------------------------------------------------------------


class XmppUser:
    """A person with an XMPP client (slixmpp, in a thread of its own).

    ``messages`` receives ``(sender bare JID, body)`` for every chat or normal
    message with a body; ``presences`` ``(sender bare JID, "subscribed")`` when a
    subscription request is granted; ``sessions`` receives ``True`` each time the client has
    logged in (again: it reconnects by itself when the server goes away).
    """

    def __init__(self, account: str, password: str, server: PrivateProsody) -> None:
        self.jid = account
        self.password = password
        self.server = server
        self.messages: DeferredQueue = DeferredQueue()
        self.sessions: DeferredQueue = DeferredQueue()
        self.failures: DeferredQueue = DeferredQueue()
        self.presences: DeferredQueue = DeferredQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stopped: Deferred = Deferred()

    # -- called from the reactor thread -----------------------------------------------

    async def connect(self, seconds: float = 10) -> XmppUser:
        """Log in; fires once the session has started (initial presence sent)."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"xmpp-user-{self.jid}", daemon=True
        )
        self._thread.start()
        ready.wait(5)
        first = await within(Deferred.fromCoroutine(self._first_session()), seconds)
        return first

    async def _first_session(self) -> XmppUser:
        session = Deferred.fromCoroutine(self._next(self.sessions))
        failure = self.failures.get()
        outcome = await _first_of(session, failure)
        if outcome is not True:
            raise ServerError(f"{self.jid} could not log in: {outcome}")
        return self

    async def _next(self, queue: DeferredQueue) -> Any:
        return await queue.get()

    def send(self, to: str, body: str | None, **extra: Any) -> None:
        """Send a chat message (``body=None``: a message without a body)."""
        self._call(self._send, to, body, extra)

    def send_raw(self, xml: str) -> None:
        self._call(lambda: self._client.send_raw(xml))

    def next_message(self, seconds: float = 10) -> Deferred:
        return within(self.messages.get(), seconds)

    def next_session(self, seconds: float = 15) -> Deferred:
        return within(self.sessions.get(), seconds)

    async def disconnect(self, seconds: float = 10) -> None:
        if self._loop is None or self._stopped.called:
            return
        self._stopping = True
        self._call(self._shutdown)
        await within(self._stopped, seconds)
        if self._thread is not None:
            self._thread.join(5)

    # -- the client's own thread ------------------------------------------------------

    def _call(self, function: Callable, *args: Any) -> None:
        assert self._loop is not None, "connect() first"
        self._loop.call_soon_threadsafe(function, *args)

    def _run(self, ready: threading.Event) -> None:
        import slixmpp

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        tls = self.server.ca_file is not None
        plugin_config = {} if tls else {"feature_mechanisms": {"unencrypted_scram": True}}
        client = slixmpp.ClientXMPP(self.jid, self.password, plugin_config=plugin_config)
        client.loop = loop
        client.enable_direct_tls = False  # the server's port speaks STARTTLS
        if tls:
            client.ca_certs = Path(self.server.ca_file)
        else:
            client.enable_starttls = False
            client.enable_plaintext = True
        client.add_event_handler("session_start", self._session_started)
        client.add_event_handler("message", self._received)
        client.add_event_handler("failed_auth", self._auth_failed)
        client.add_event_handler("presence", self._presence)
        client.add_event_handler("disconnected", self._disconnected)
        client.add_event_handler("connection_failed", self._reconnect_soon)
        self._client = client
        ready.set()
        client.connect(self.server.host, self.server.port)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()
            reactor.callFromThread(_fire, self._stopped)

    async def _session_started(self, event: Any) -> None:
        # As a usual client does: fetch the roster (so the server sends us
        # subscription changes), then announce ourselves.
        await self._client.get_roster()
        self._client.send_presence()
        reactor.callFromThread(self.sessions.put, True)

    def _received(self, message: Any) -> None:
        if message["type"] in ("chat", "normal") and message["body"]:
            reactor.callFromThread(self.messages.put, (message["from"].bare, message["body"]))

    def _presence(self, presence: Any) -> None:
        if presence["type"] in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            reactor.callFromThread(self.presences.put, (presence["from"].bare, presence["type"]))

    def _auth_failed(self, event: Any) -> None:
        reactor.callFromThread(self.failures.put, "authentication failed")

    def _disconnected(self, reason: Any) -> None:
        if self._stopping:
            self._loop.stop()
            return
        self._reconnect_soon()

    def _reconnect_soon(self, *event: Any) -> None:
        # The server went away: log in again every 0.2 s (slixmpp's own back-off
        # waits 1, 3, 7... seconds, too slow for tests).
        if not self._stopping:
            self._loop.call_later(0.2, self._client.connect, self.server.host, self.server.port)

    def _send(self, to: str, body: str | None, extra: dict[str, Any]) -> None:
        message = self._client.make_message(mto=to, mbody=body, mtype="chat")
        for key, value in extra.items():
            message[key] = value
        message.send()

    def _shutdown(self) -> None:
        if self._client.transport is None:
            self._loop.stop()
            return
        self._client.disconnect(wait=2)


def _fire(d: Deferred) -> None:
    if not d.called:
        d.callback(None)


def _first_of(*deferreds: Deferred) -> Deferred:
    """Fires with the result of whichever of ``deferreds`` fires first."""
    result: Deferred = Deferred()

    def settle(value: Any) -> Any:
        if not result.called:
            result.callback(value)
        return value

    for d in deferreds:
        d.addBoth(settle)
    return result
