"""Channel type ``xmpp``: the channel is one XMPP (Jabber) account.

The transport logs in to an XMPP server as a client with the configured JID and
password (STARTTLS, then SASL), announces itself with "available" presence and
turns chat messages into vumi messages and back:

* a ``<message>`` with a ``<body>`` sent to the channel's JID becomes an inbound
  message from the sender's bare JID (``user@domain``, resource dropped) to the
  channel's bare JID; messages without a body (chat states, receipts) are ignored;
* an outbound message becomes a ``type="chat"`` message to the bare JID of its
  ``to_addr``, with the vumi ``message_id`` as stanza id, acked once it is written.

Outbound sending starts paused and is paused whenever the connection is down, so
messages wait on the channel's queue while the transport reconnects (exponential
back-off with jitter). XEP-0199 pings every ``ping_interval`` seconds find dead
connections: a ping still unanswered when the next one is due drops the connection
and reconnects. Connection changes are published as statuses of component ``xmpp``.
"""

from __future__ import annotations

import itertools
import random
import re
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import client, error, jid, sasl, xmlstream
from twisted.words.xish import domish
from twisted.words.xish.xmlstream import STREAM_END_EVENT, STREAM_ERROR_EVENT

from junebug.transports.base import RetryLater, Transport
from junebug.transports.common import VUMI_BASE_CONFIG

NS_CLIENT = "jabber:client"
NS_PING = "urn:xmpp:ping"
NS_ROSTER = "jabber:iq:roster"

#: Seconds teardown waits for the server to close the stream before cutting it.
CLOSE_TIMEOUT = 5

#: Status component name of every status this transport publishes.
COMPONENT = "xmpp"

_MESSAGE_ID = re.compile(r"^[0-9a-f]{32}$")
# SASL exchanges carry the password (PLAIN: base64 of it): masked in wire logs.
_SASL_SECRET = re.compile(r"(<(auth|response)\b[^>]*>)[^<]+(</\2>)")


def parse_jid(text: Any) -> jid.JID | None:
    """``text`` as a JID, or None when it is not one."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return jid.JID(text.strip())
    except (jid.InvalidFormat, RuntimeError, UnicodeError):
        return None


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt number ``attempt`` (0 for the first).

    The ceiling doubles each attempt from ``initial`` up to ``maximum``; the delay is
    drawn uniformly from the upper half of it ("equal jitter"), so many channels
    dropped at once do not reconnect in lockstep.
    """
    ceiling = min(maximum, initial * 2 ** min(attempt, 64))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _read_certificates(path: str) -> list[ssl.Certificate]:
    with open(path, "rb") as pem:
        data = pem.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + block for block in data.split(marker)[1:]]
    if not blocks:
        raise ValueError("no PEM certificate in the file")
    return [ssl.Certificate.loadPEM(block) for block in blocks]


class XmppChannel(Transport):
    transport_type = "xmpp"
    START_PAUSED = True
    CONFIG_SCHEMA = {
        "type": "object",
        "properties": {
            **VUMI_BASE_CONFIG,
            "username": {
                "type": "string",
                "minLength": 1,
                "description": "The channel's JID (user@domain, optionally /resource) "
                "it logs in as; inbound messages are addressed to its bare JID",
            },
            "password": {
                "type": "string",
                "description": "Password of the account (a secret: never logged)",
            },
            "host": {
                "type": ["string", "null"],
                "minLength": 1,
                "default": None,
                "description": "XMPP server to connect to (default: the JID's domain)",
            },
            "port": {
                "type": "integer",
                "minimum": 1,
                "maximum": 65535,
                "default": 5222,
                "description": "Client-to-server port of the XMPP server",
            },
            "status": {
                "type": "string",
                "default": "",
                "description": "Status text sent with the channel's 'available' presence",
            },
            "status_message": {
                "type": "string",
                "default": "",
                "description": "Accepted for compatibility with vumi's XMPP transport; unused",
            },
            "presence_interval": {
                "type": "number",
                "minimum": 0,
                "default": 60,
                "description": "Seconds between presence broadcasts (0: only when connecting)",
            },
            "ping_interval": {
                "type": "number",
                "minimum": 0,
                "default": 60,
                "description": "Seconds between XEP-0199 pings to the server; a ping "
                "unanswered when the next is due drops the connection (0: no pings)",
            },
            "debug": {
                "type": "boolean",
                "default": False,
                "description": "Log the raw XMPP traffic in the channel's log "
                "(SASL credentials are masked)",
            },
            "tls_required": {
                "type": "boolean",
                "default": True,
                "description": "Refuse to log in when the server does not offer STARTTLS "
                "(false: log in unencrypted on such servers; TLS is still used when offered)",
            },
            "tls_verify_certificate": {
                "type": "boolean",
                "default": True,
                "description": "Verify the server's TLS certificate against the trusted "
                "CAs and the JID's domain (false: accept any certificate, e.g. self-signed)",
            },
            "tls_ca_certificates": {
                "type": ["string", "null"],
                "minLength": 1,
                "default": None,
                "description": "PEM file of the CA certificates to trust instead of the "
                "system's (e.g. a private server's self-signed certificate)",
            },
            "connect_timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 30,
                "description": "Seconds to wait for the TCP connection to the server",
            },
            "reconnect_delay": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 1,
                "description": "Seconds before the first reconnect attempt; doubles with "
                "each failed attempt (with jitter) up to reconnect_max_delay",
            },
            "reconnect_max_delay": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 60,
                "description": "Upper bound in seconds of the delay between reconnect attempts",
            },
        },
        "required": ["username", "password"],
        "additionalProperties": False,
    }

    @classmethod
    def setting(cls, config: dict[str, Any], name: str) -> Any:
        """``config[name]``, or its default from ``CONFIG_SCHEMA``."""
        value = config.get(name)
        if value is None:
            return cls.CONFIG_SCHEMA["properties"][name].get("default")
        return value

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        problems = []
        account = parse_jid(config["username"])
        if account is None or not account.user:
            problems.append(f"username {config['username']!r} is not a JID of the form user@domain")
        if cls.setting(config, "reconnect_max_delay") < cls.setting(config, "reconnect_delay"):
            problems.append("reconnect_max_delay must not be less than reconnect_delay")
        ca_file = config.get("tls_ca_certificates")
        if ca_file:
            try:
                _read_certificates(ca_file)
            except (OSError, ValueError, SSL.Error) as exc:
                problems.append(f"tls_ca_certificates: cannot read {ca_file!r}: {exc}")
        return problems

    def __init__(self, context: Any, config: dict[str, Any]) -> None:
        super().__init__(context, config)
        if hasattr(self.log, "secret_keys"):
            self.log.secret_keys |= self.SECRET_KEYS
        setting = lambda name: self.setting(config, name)  # noqa: E731
        self.jid = jid.JID(config["username"].strip())
        self.password: str = config["password"]
        self.host: str = setting("host") or self.jid.host
        self.port: int = setting("port")
        self.presence_status: str = setting("status")
        self.presence_interval: float = setting("presence_interval")
        self.ping_interval: float = setting("ping_interval")
        self.debug: bool = setting("debug")
        self.tls_required: bool = setting("tls_required")
        self.tls_verify: bool = setting("tls_verify_certificate")
        self.tls_ca_file: str | None = setting("tls_ca_certificates")
        self.connect_timeout: float = setting("connect_timeout")
        self.reconnect_delay: float = setting("reconnect_delay")
        self.reconnect_max_delay: float = setting("reconnect_max_delay")
        self._wire_logging_before = getattr(self.log, "wire_logging", False)

        self.random = random.Random()
        #: The authenticated stream, None while disconnected.
        self.stream: xmlstream.XmlStream | None = None
        #: The channel's bare JID as bound by the server (inbound ``to_addr``).
        self.address: str = self.jid.userhost()
        #: Pings answered since setup (tests and diagnostics read it).
        self.pongs = 0
        self._running = False
        self._attempts = 0
        self._current: xmlstream.XmlStream | None = None  # connecting or connected
        self._closed: Deferred | None = None  # fires when _current's connection is lost
        self._connecting: Deferred | None = None
        self._retry: Any = None
        self._drop_reason: tuple[str, str] | None = None
        self._last_status: tuple[str, str] | None = None
        self._loops: list[LoopingCall] = []
        self._ping_pending: str | None = None
        self._ping_ids = itertools.count(1)
        #: handle_outbound calls waiting for a connection: (message, the call's Deferred).
        #: Sent on reconnection; given back to the bus (RetryLater) when stopping.
        self._backlog: list[tuple[dict[str, Any], Deferred]] = []

    # -- lifecycle ------------------------------------------------------------------

    async def setup(self) -> None:
        self._running = True
        if self.debug and hasattr(self.log, "wire_logging"):
            self.log.wire_logging = True
        self.log.info(f"Connecting to XMPP server {self.host}:{self.port} as {self.jid.full()}")
        self._connect()

    async def teardown(self) -> None:
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()  # fires _tcp_failed at once
        self._stop_loops()
        stream, closed = self._current, self._closed
        if stream is not None and closed is not None and not closed.called:
            if stream is self.stream:
                unavailable = domish.Element((NS_CLIENT, "presence"))
                unavailable["type"] = "unavailable"
                stream.send(unavailable)
            stream.sendFooter()
            stream.transport.loseConnection()
            # A server that never closes its side must not hold up the shutdown.
            killer = self.clock.callLater(CLOSE_TIMEOUT, stream.transport.abortConnection)
            await closed
            if killer.active():
                killer.cancel()
        self.stream = None
        if self.debug and hasattr(self.log, "wire_logging"):
            self.log.wire_logging = self._wire_logging_before
        self._give_back("the channel stopped before it could reconnect to XMPP")

    async def stopping(self) -> None:
        """Give every message waiting for a connection back to the bus."""
        self._running = False
        self._give_back("the channel is stopping")

    def _give_back(self, reason: str) -> None:
        backlog, self._backlog = self._backlog, []
        for _message, waiting in backlog:
            waiting.errback(RetryLater(f"not sent: {reason}"))

    # -- connecting ---------------------------------------------------------------------

    def _tls_options(self) -> Any:
        if not self.tls_verify:
            return ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        if self.tls_ca_file:
            trust = ssl.trustRootFromCertificates(_read_certificates(self.tls_ca_file))
        else:
            trust = ssl.platformTrust()
        return ssl.optionsForClientTLS(self.jid.host, trustRoot=trust)

    def _connect(self) -> None:
        self._retry = None
        if not self._running:
            return
        authenticator = client.XMPPAuthenticator(
            jid.JID(self.jid.full()), self.password, configurationForTLS=self._tls_options()
        )
        stream = xmlstream.XmlStream(authenticator)
        for initializer in stream.initializers:
            if isinstance(initializer, xmlstream.TLSInitiatingInitializer):
                initializer.required = self.tls_required
        stream.addObserver(xmlstream.STREAM_AUTHD_EVENT, self._authenticated)
        stream.addObserver(xmlstream.INIT_FAILED_EVENT, self._init_failed)
        stream.addObserver(STREAM_ERROR_EVENT, self._stream_error)
        stream.addObserver(STREAM_END_EVENT, lambda reason: self._stream_ended(stream, reason))
        if self.debug:
            stream.rawDataInFn = lambda data: self._wire("in", data)
            stream.rawDataOutFn = lambda data: self._wire("out", data)
        self._current = stream
        self._closed = Deferred()
        self._drop_reason = None
        endpoint = HostnameEndpoint(
            self.context.reactor, self.host, self.port, timeout=self.connect_timeout
        )
        self._connecting = connectProtocol(endpoint, stream)
        self._connecting.addCallbacks(self._tcp_connected, self._tcp_failed)

    def _tcp_connected(self, stream: xmlstream.XmlStream) -> None:
        self._connecting = None

    def _tcp_failed(self, failure: Failure) -> None:
        self._connecting = None
        self._current = None
        closed, self._closed = self._closed, None
        if closed is not None and not closed.called:
            closed.callback(None)
        if not self._running:
            return
        delay = self._schedule_reconnect()
        self._status(
            "down",
            "connection_failed",
            f"Could not connect to {self.host}:{self.port}: {failure.getErrorMessage()}",
            {"host": self.host, "port": self.port, "reconnect_in": round(delay, 3)},
        )

    def _schedule_reconnect(self) -> float:
        delay = backoff_delay(
            self._attempts, self.reconnect_delay, self.reconnect_max_delay, self.random
        )
        self._attempts += 1
        self._retry = self.clock.callLater(delay, self._connect)
        return delay

    def _authenticated(self, stream: xmlstream.XmlStream) -> None:
        if stream is not self._current:
            return
        self.stream = stream
        self._attempts = 0
        bound = stream.authenticator.jid
        self.address = bound.userhost()
        stream.addObserver("/message", self._on_message)
        stream.addObserver("/presence", self._on_presence)
        stream.addObserver("/iq", self._on_iq)
        self._ping_pending = None
        if self.presence_interval > 0:
            self._start_loop(self._send_presence, self.presence_interval, now=True)
        else:
            self._send_presence()
        if self.ping_interval > 0:
            self._start_loop(self._ping, self.ping_interval, now=False)
        self.log.info(f"Logged in to {self.host}:{self.port} as {bound.full()}")
        self._status(
            "ok",
            "connected",
            f"Connected to {self.host}:{self.port} as {self.address}",
            {"host": self.host, "port": self.port, "jid": bound.full()},
        )
        backlog, self._backlog = self._backlog, []
        for message, waiting in backlog:
            self._send(message).chainDeferred(waiting)
        self.resume_outbound()

    def _init_failed(self, failure: Failure) -> None:
        stream = self._current
        step = stream.initializers[0] if stream is not None and stream.initializers else None
        if failure.check(sasl.SASLAuthError):
            condition = failure.value.condition or "not-authorized"
            reason = (
                "auth_failure",
                f"The XMPP server refused the login of {self.jid.userhost()} ({condition}): "
                "check the channel's username and password",
            )
        elif failure.check(sasl.SASLNoAcceptableMechanism):
            reason = (
                "auth_failure",
                "The XMPP server offers no login method this channel supports (PLAIN or "
                "DIGEST-MD5); PLAIN is usually only offered over TLS",
            )
        elif failure.check(xmlstream.FeatureNotAdvertized) and isinstance(
            step, xmlstream.TLSInitiatingInitializer
        ):
            reason = (
                "tls_unavailable",
                f"The XMPP server {self.host}:{self.port} does not offer STARTTLS and the "
                "channel requires TLS (tls_required)",
            )
        else:
            reason = ("login_failed", f"Logging in to XMPP failed: {failure.getErrorMessage()}")
        self._drop_reason = reason
        if stream is not None and stream.transport is not None:
            stream.transport.loseConnection()

    def _stream_error(self, failure: Failure) -> None:
        if isinstance(failure, Failure) and failure.check(error.StreamError):
            condition = failure.value.condition
            self._drop_reason = (
                "disconnected",
                f"The XMPP server closed the stream ({condition})",
            )

    def _stream_ended(self, stream: xmlstream.XmlStream, reason: Failure) -> None:
        if stream is not self._current:
            return
        was_up = stream is self.stream
        if was_up:
            self.stream = None
            self.pause_outbound()
            self._stop_loops()
        self._current = None
        closed, self._closed = self._closed, None
        if closed is not None and not closed.called:
            closed.callback(None)
        if not self._running:
            return
        if self._drop_reason is not None:
            kind, text = self._drop_reason
        elif reason.check(SSL.Error):
            kind = "tls_failed"
            text = (
                f"TLS with {self.host}:{self.port} failed (is the server's certificate "
                f"valid for {self.jid.host}?): {reason.getErrorMessage()}"
            )
        elif was_up:
            kind, text = "disconnected", f"Connection to {self.host}:{self.port} lost"
        else:
            kind = "disconnected"
            text = f"The XMPP server {self.host}:{self.port} closed the connection during login"
        delay = self._schedule_reconnect()
        self.log.warning(f"{text}; reconnecting in {delay:.1f} s")
        self._status(
            "down",
            kind,
            text,
            {"host": self.host, "port": self.port, "reconnect_in": round(delay, 3)},
        )

    # -- stanzas ----------------------------------------------------------------------

    def _send_presence(self) -> None:
        if self.stream is None:
            return
        presence = domish.Element((NS_CLIENT, "presence"))
        if self.presence_status:
            presence.addElement("status", content=self.presence_status)
        self.stream.send(presence)

    def _ping(self) -> None:
        stream = self.stream
        if stream is None:
            return
        if self._ping_pending is not None:
            self._drop_reason = (
                "ping_timeout",
                f"No answer to an XMPP ping within {self.ping_interval} s: connection dropped",
            )
            stream.transport.abortConnection()
            return
        iq = domish.Element((NS_CLIENT, "iq"))
        iq["type"] = "get"
        iq["id"] = self._ping_pending = f"jb-ping-{next(self._ping_ids)}"
        iq["to"] = stream.authenticator.jid.host
        iq.addElement((NS_PING, "ping"))
        stream.send(iq)

    def _on_iq(self, iq: domish.Element) -> None:
        kind = iq.getAttribute("type")
        if kind in ("result", "error"):
            if iq.getAttribute("id") == self._ping_pending and self._ping_pending is not None:
                # Any answer, even an error, shows the connection is alive.
                self._ping_pending = None
                self.pongs += 1
            return
        if kind not in ("get", "set") or self.stream is None:
            return
        child = iq.firstChildElement()
        uri = child.uri if child is not None else None
        if (kind, uri) in (("get", NS_PING), ("set", NS_ROSTER)):
            self.stream.send(xmlstream.toResponse(iq, "result"))
        else:
            self.stream.send(error.StanzaError("service-unavailable").toResponse(iq))

    def _on_presence(self, presence: domish.Element) -> None:
        sender = parse_jid(presence.getAttribute("from"))
        kind = presence.getAttribute("type")
        if sender is None or self.stream is None:
            return
        # Anyone may add the channel to their roster; unsubscribing is reciprocated.
        if kind == "subscribe":
            replies = ("subscribed", "subscribe")
        elif kind == "unsubscribe":
            replies = ("unsubscribed", "unsubscribe")
        else:
            return
        for reply_type in replies:
            reply = domish.Element((NS_CLIENT, "presence"))
            reply["to"] = sender.userhost()
            reply["type"] = reply_type
            self.stream.send(reply)

    def _on_message(self, stanza: domish.Element) -> None:
        kind = stanza.getAttribute("type", "normal")
        stanza_id = stanza.getAttribute("id")
        if kind == "error":
            self._bounced(stanza, stanza_id)
            return
        if kind == "groupchat":
            return
        body = next(stanza.elements(NS_CLIENT, "body"), None)
        if body is None:
            return  # chat states, receipts, typing notifications...
        sender = parse_jid(stanza.getAttribute("from"))
        if sender is None:
            self.log.warning("Ignoring a message without a valid sender", xmpp_id=stanza_id)
            return
        d = Deferred.fromCoroutine(
            self.publish_inbound(
                to_addr=self.address,
                from_addr=sender.userhost(),
                content=str(body).strip(),
                transport_metadata={"xmpp_id": stanza_id},
            )
        )
        d.addErrback(lambda f: self.log.error("Could not publish an inbound message", failure=f))

    def _bounced(self, stanza: domish.Element, stanza_id: str | None) -> None:
        """A message we sent came back as an error: report its delivery as failed."""
        problem = next(stanza.elements(NS_CLIENT, "error"), None)
        condition = None
        if problem is not None:
            condition = next(
                (child.name for child in problem.elements() if child.name != "text"), None
            )
        self.log.warning(
            f"The XMPP server bounced message {stanza_id!r} to "
            f"{stanza.getAttribute('from')!r}: {condition}",
            message_id=stanza_id,
        )
        if stanza_id and _MESSAGE_ID.match(stanza_id):
            d = Deferred.fromCoroutine(
                self.publish_delivery_report(
                    stanza_id, "failed", transport_metadata={"xmpp_error": condition}
                )
            )
            d.addErrback(lambda f: self.log.error("Could not publish a report", failure=f))

    # -- outbound ----------------------------------------------------------------------

    async def handle_outbound(self, message: dict[str, Any]) -> None:
        """Write the message to the connected stream and publish its ack; return
        then. While disconnected the call waits for the connection (the bus
        message stays unacknowledged); it fails with ``RetryLater`` if the channel
        stops first."""
        message_id = message["message_id"]
        recipient = parse_jid(message.get("to_addr"))
        if recipient is None:
            self.log.warning(f"Not a JID: {message.get('to_addr')!r}", message_id=message_id)
            await self.publish_nack(message_id, f"Invalid JID {message.get('to_addr')!r}")
            return
        if not self._running:
            raise RetryLater("the channel is stopping")
        if self.stream is None:
            # Outbound is paused while disconnected; this one was already on its way.
            self.log.info("Not connected: message held until reconnected", message_id=message_id)
            waiting: Deferred = Deferred()
            self._backlog.append((message, waiting))
            await waiting
            return
        await self._send(message)

    def _send(self, message: dict[str, Any]) -> Deferred:
        stanza = domish.Element((NS_CLIENT, "message"))
        stanza["to"] = parse_jid(message["to_addr"]).userhost()
        stanza["type"] = "chat"
        stanza["id"] = message["message_id"]
        stanza.addElement("body", content=message.get("content") or "")
        self.stream.send(stanza)
        return Deferred.fromCoroutine(
            self.publish_ack(message["message_id"], message["message_id"])
        )

    # -- helpers -----------------------------------------------------------------------

    def _start_loop(self, function: Any, interval: float, now: bool) -> None:
        loop = LoopingCall(function)
        loop.clock = self.clock
        self._loops.append(loop)
        loop.start(interval, now=now).addErrback(
            lambda f: self.log.error("XMPP keep-alive loop failed", failure=f)
        )

    def _stop_loops(self) -> None:
        loops, self._loops = self._loops, []
        for loop in loops:
            if loop.running:
                loop.stop()

    def _status(self, level: str, kind: str, text: str, details: dict[str, Any]) -> Deferred:
        # Repeated identical states (a server down for a while) are reported once.
        if self._last_status == (level, kind):
            return succeed(None)
        self._last_status = (level, kind)
        d = Deferred.fromCoroutine(self.publish_status(COMPONENT, level, kind, text, details))
        return d.addErrback(lambda f: self.log.error("Could not publish a status", failure=f))

    def _wire(self, direction: str, data: Any) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        self.log.wire(direction, _SASL_SECRET.sub(r"\1***\3", text))
