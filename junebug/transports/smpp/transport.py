"""Channel type ``smpp``: an ESME bound to an SMSC as a transceiver.

Outbound messages are encoded and split (``codecs``, ``multipart``), queued,
and sent by the ``EsmeProtocol`` of the current bind; their submit_sm_resp
become acks or nacks, and the SMSC's ids are remembered in Redis
(``ids.MessageIdStore``) so delivery receipts (``receipts``) can be reported
against our message ids. ``handle_outbound`` returns only once every part was
answered and the ack or nack published, so the bus message is acknowledged only
when the SMSC has taken responsibility for it: a message the process was holding
when it died is still on the bus and is sent again on restart. Inbound deliver_sm
become inbound messages (SMS, or USSD when they carry ``ussd_service_op``), long
ones once all parts arrived.

The connection is kept up by this class: it connects, lets the protocol bind,
and after any loss reconnects with exponential backoff and jitter (reset only
by a successful bind). The channel asks for ``window_size`` messages in hand on
top of the worker's buffer (``outbound_window``), so a full window can be in
flight; the bus is paused while the channel is not bound or is throttled. A
submit_sm unanswered when the connection drops is sent again after the rebind,
within the same ``handle_outbound`` call (at most ``window_size`` resends per
lost connection). On shutdown (``stopping``), messages with no submit_sm on the
wire are given back to the bus at once (``RetryLater``), those on the wire get
up to the protocol's drain time for their answer, and the rest are given back.

Config keys: ``junebug.transports.smpp.config`` (documented in
``docs/channels/smpp.md``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory

from junebug.messages import SESSION_CLOSE
from junebug.transports.base import RetryLater, Transport
from junebug.transports.smpp import codecs, multipart
from junebug.transports.smpp import pdu as smpp
from junebug.transports.smpp.config import (
    CONFIG_SCHEMA,
    DEFAULT_PROCESSORS,
    SmppConfig,
    problems,
    unknown_keys,
)
from junebug.transports.smpp.constants import CommandStatus
from junebug.transports.smpp.ids import FoundReceipt, MessageIdStore
from junebug.transports.smpp.protocol import (
    Backoff,
    BindSettings,
    EsmeHandler,
    EsmeProtocol,
    Submission,
    SubmitQueue,
)
from junebug.transports.smpp.receipts import (
    FINAL_STATUSES,
    Receipt,
    compile_regex,
    delivery_status,
    id_candidates,
    parse_receipt,
)

__all__ = ["COMPONENT", "SmppChannel"]

#: The component of every status event this channel publishes.
COMPONENT = "smpp"

#: Longest password SMPP 3.4 allows (9 octets with the NUL).
MAX_PASSWORD = 8

#: Receipts for unknown ids held at once; older ones are dropped beyond this.
MAX_HELD_RECEIPTS = 10_000


@attrs.define(eq=False)
class _Outgoing:
    """One outbound message on its way: its parts' answers and what waits for them."""

    message: dict[str, Any]
    total: int
    smsc_ids: dict[int, str] = attrs.Factory(dict)
    answered: int = 0
    failure: str | None = None
    done: bool = False
    expiry: IDelayedCall | None = None
    #: Receipts that arrived before the ack was published.
    receipts: list[tuple[Receipt, str, FoundReceipt]] = attrs.Factory(list)
    #: The handle_outbound calls waiting for the outcome (more than one when the bus
    #: delivered the message again while it was being sent).
    waiters: list[Deferred] = attrs.Factory(list)


@attrs.define(eq=False)
class _HeldReceipt:
    receipt: Receipt
    status: str
    candidates: frozenset[str]
    timer: IDelayedCall | None = None


class _EsmeFactory(Factory):
    noisy = False

    def __init__(self, channel: SmppChannel) -> None:
        self.channel = channel

    def buildProtocol(self, addr: Any) -> EsmeProtocol:
        channel = self.channel
        return EsmeProtocol(channel.settings, channel.clock, channel.queue, channel, channel.log)


class SmppChannel(Transport, EsmeHandler):
    """The ``smpp`` channel type (the original's ``SmppTransceiverTransport``)."""

    transport_type = "sms"
    CONFIG_SCHEMA = CONFIG_SCHEMA
    SECRET_KEYS = frozenset({"password"})
    START_PAUSED = True

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        return problems(config)

    def __init__(self, context: Any, config: dict[str, Any]) -> None:
        super().__init__(context, config)
        self.cfg = SmppConfig.from_config(config)
        self.redis = context.redis
        cfg = self.cfg
        password = cfg["password"]
        self._password_cut = len(password) > MAX_PASSWORD
        self.settings = BindSettings(
            system_id=cfg["system_id"],
            password=password[:MAX_PASSWORD],
            system_type=cfg["system_type"],
            interface_version=cfg.interface_version,
            address_range=cfg["address_range"],
            bind_timeout=cfg["smpp_bind_timeout"],
            enquire_link_interval=cfg["smpp_enquire_link_interval"],
            window_size=cfg["window_size"],
            response_timeout=cfg["submit_sm_resp_timeout"],
            throttle_delay=cfg["throttle_delay"],
            mt_tps=cfg["mt_tps"],
        )
        self.queue = SubmitQueue()
        self.backoff = Backoff(cfg["initial_reconnect_delay"], cfg["max_reconnect_delay"])
        sub = cfg["split_bind_prefix"] or f"{self.channel_id}:smpp"
        self.key_prefix = f"{context.redis_prefix}{sub}:"
        self.ids = MessageIdStore(self.redis, self.key_prefix)
        self.codec_map = codecs.build_data_coding_map(
            cfg.deliver_sm.get("data_coding_overrides") or {}
        )
        self.receipt_regex = compile_regex(cfg.delivery_report["delivery_report_regex"])
        self.status_mapping = cfg.delivery_report["delivery_report_status_mapping"]
        self.style = cfg.long_message_style
        # Read once here rather than for every message (the config does not change).
        submit = cfg.submit_sm
        self._submit_encoding = submit["submit_sm_encoding"]
        self._submit_data_coding = submit["submit_sm_data_coding"]
        #: The submit_sm params that come from the config alone.
        self._submit_params = {
            "service_type": cfg["service_type"],
            "source_addr_ton": cfg["source_addr_ton"],
            "source_addr_npi": cfg["source_addr_npi"],
            "dest_addr_ton": cfg["dest_addr_ton"],
            "dest_addr_npi": cfg["dest_addr_npi"],
            "registered_delivery": 1 if cfg["registered_delivery"] else 0,
        }
        self._ussd_op = bytes.fromhex(submit["ussd_service_op"])
        self._ussd_op_map = {k.lower(): v for k, v in cfg.deliver_sm["ussd_service_op_map"].items()}
        self._id_ttl = cfg["third_party_id_expiry"]
        self._final_id_ttl = cfg["final_dr_third_party_id_expiry"]
        self._final_parts_ttl = cfg["completed_multipart_info_expiry"]
        self.reassembler = multipart.Reassembler(
            self.clock, cfg["multipart_reassembly_timeout"], self._parts_expired
        )
        self.protocol: EsmeProtocol | None = None
        self.outgoing: dict[str, _Outgoing] = {}
        self.held: deque[_HeldReceipt] = deque()
        self._connecting: Deferred | None = None
        self._reconnect_call: IDelayedCall | None = None
        self._stopping = False
        self._outbound_paused = True
        self._connect_failed_reported = False

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        if self.redis is None:
            raise RuntimeError("the smpp channel type needs Redis (TransportContext.redis)")
        if hasattr(self.log, "secret_keys"):
            self.log.secret_keys |= set(self.SECRET_KEYS)
        if self.cfg["wire_logging"] and hasattr(self.log, "wire_logging"):
            self.log.wire_logging = True
        if self._password_cut:
            self.log.warning(f"password is longer than {MAX_PASSWORD} characters; it was cut")
        ignored = unknown_keys(self.config)
        if ignored:
            self.log.warning(f"Ignoring config keys this channel type does not know: {ignored}")
        for key, default in DEFAULT_PROCESSORS.items():
            if self.cfg[key] != default:
                self.log.warning(
                    f"{key} {self.cfg[key]!r} is not supported; the default behaviour is used"
                )
        self._connect()

    async def teardown(self) -> None:
        self._stopping = True
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self.protocol is not None:
            await self.protocol.unbind()
        for held in self.held:
            if held.timer is not None and held.timer.active():
                held.timer.cancel()
        self.held.clear()
        self.reassembler.clear()
        self._give_back(lambda outgoing: True, "the channel stopped")

    def outbound_window(self) -> int:
        return self.settings.window_size

    async def stopping(self) -> None:
        """Give back to the bus every message with no submit_sm awaiting an answer,
        let those on the wire have their answer (up to the protocol's drain time,
        while unbinding), then give back whatever is left."""
        self._stopping = True
        protocol = self.protocol
        closed = protocol.unbind() if protocol is not None else None  # sends nothing new
        on_wire = set()
        if protocol is not None:
            on_wire = {entry.submission.token[0] for entry in protocol.outstanding.values()}
        self._give_back(
            lambda outgoing: outgoing.message["message_id"] not in on_wire,
            "the channel is stopping",
        )
        if closed is not None:
            await closed
        self._give_back(lambda outgoing: True, "the channel stopped before the SMSC answered")

    def _give_back(self, which: Any, reason: str) -> None:
        """Fail the handle_outbound calls of unfinished messages matching ``which``
        with ``RetryLater``: their bus messages go back on the queue."""
        returned = [o for o in self.outgoing.values() if not o.done and which(o)]
        for outgoing in returned:
            self._finish(outgoing)
            self.outgoing.pop(outgoing.message["message_id"], None)
            self._settle(outgoing, RetryLater(f"not sent: {reason}"))
        if returned:
            self.log.info(f"Gave {len(returned)} unsent message(s) back to the outbound queue")

    # -- connecting ------------------------------------------------------------------------

    def _connect(self) -> None:
        self._reconnect_call = None
        if self._stopping:
            return
        endpoint = clientFromString(self.context.reactor, self.cfg.endpoint)
        self.log.info(f"Connecting to the SMSC at {self.cfg.endpoint}")
        connecting = endpoint.connect(_EsmeFactory(self))
        self._connecting = connecting

        def connected(protocol: EsmeProtocol) -> None:
            self._connecting = None

        def failed(failure: Any) -> None:
            self._connecting = None
            if self._stopping:
                return
            reason = str(failure.value) or type(failure.value).__name__
            self.log.warning(f"Could not connect to the SMSC: {reason}")
            if not self._connect_failed_reported:
                self._connect_failed_reported = True
                self._status("down", "connection_failed", f"Could not connect: {reason}")
            self._schedule_reconnect()

        connecting.addCallbacks(connected, failed)

    def _schedule_reconnect(self) -> None:
        if self._stopping or self._reconnect_call is not None:
            return
        delay = self.backoff.next()
        self.log.info(f"Reconnecting in {delay:.1f}s")
        self._reconnect_call = self.clock.callLater(delay, self._connect)

    # -- what the protocol reports -----------------------------------------------------------

    def smpp_connected(self, protocol: EsmeProtocol) -> None:
        self.protocol = protocol
        self._connect_failed_reported = False
        self.log.info(
            f"Connected; binding as transceiver with system_id {self.settings.system_id!r}"
        )

    def smpp_bound(self, protocol: EsmeProtocol) -> None:
        self.backoff.reset()
        self.log.info("Bound to the SMSC")
        self._status("ok", "bound", "Bound")
        self._update_outbound()

    def smpp_bind_failed(self, protocol: EsmeProtocol, command_status: int) -> None:
        name = smpp.status_name(command_status)
        hint = ""
        if command_status in (
            CommandStatus.ESME_RINVPASWD,
            CommandStatus.ESME_RINVSYSID,
            CommandStatus.ESME_RBINDFAIL,
        ):
            hint = " (check system_id, password and system_type)"
        self.log.warning(f"The SMSC refused the bind: {name}{hint}")
        self._status("down", "bind_failed", f"Bind refused: {name}{hint}", {"command_status": name})

    def smpp_bind_timeout(self, protocol: EsmeProtocol) -> None:
        self._status("down", "bind_timeout", "Timed out awaiting bind")

    def smpp_unbound(self, protocol: EsmeProtocol) -> None:
        self.log.info("The SMSC unbound")
        self._status("down", "unbound", "The SMSC unbound")
        self._update_outbound()

    def smpp_disconnected(
        self, protocol: EsmeProtocol, reason: str, requeued: int, was_bound: bool
    ) -> None:
        if self.protocol is protocol:
            self.protocol = None
        self._update_outbound()
        extra = f"; {requeued} unanswered submit_sm will be sent again" if requeued else ""
        self.log.info(f"Connection to the SMSC lost: {reason}{extra}")
        if not self._stopping:
            self._status("down", "connection_lost", reason)
            self._schedule_reconnect()

    def smpp_throttled(self, protocol: EsmeProtocol, command_status: int) -> None:
        name = smpp.status_name(command_status)
        self.log.warning(f"The SMSC is throttling us ({name}); holding submits")
        self._status("degraded", "throttled", "Throttled", {"command_status": name})
        self._update_outbound()

    def smpp_unthrottled(self, protocol: EsmeProtocol) -> None:
        self.log.info("No longer throttled")
        self._status("ok", "throttled_end", "No longer throttled")
        self._update_outbound()

    def smpp_submit_result(
        self, submission: Submission, command_status: int, message_id: str | None
    ) -> None:
        outgoing_id, index = submission.token
        outgoing = self.outgoing.get(outgoing_id)
        if outgoing is None or outgoing.done:
            self._update_outbound()
            return
        outgoing.answered += 1
        if command_status == CommandStatus.ESME_ROK:
            outgoing.smsc_ids[index] = message_id or ""
        elif outgoing.failure is None:
            outgoing.failure = smpp.status_name(command_status) or "Unspecified"
        if outgoing.failure is not None:
            self._finish(outgoing)
            self._spawn(self._conclude(outgoing, self._nack(outgoing, outgoing.failure)))
        elif outgoing.answered >= outgoing.total:
            self._finish(outgoing)
            self._spawn(self._conclude(outgoing, self._ack(outgoing)))
        self._update_outbound()

    def smpp_deliver(self, pdu: smpp.PDU) -> Deferred:
        return Deferred.fromCoroutine(self._deliver(pdu))

    # -- outbound -------------------------------------------------------------------------------

    async def handle_outbound(self, message: dict[str, Any]) -> None:
        """Send ``message`` as one or more submit_sm; return once every part was
        answered and the ack (or nack) published. Fails with ``RetryLater`` when
        the channel stops first."""
        if self._stopping:
            raise RetryLater("the channel is stopping")
        message_id = message["message_id"]
        sending = self.outgoing.get(message_id)
        if sending is not None:
            # The bus delivered it again while it is being sent: share the outcome.
            self.log.info(
                "Already sending this message; waiting for its answer", message_id=message_id
            )
            await self._outcome(sending)
            return
        to_addr = message.get("to_addr")
        from_addr = message.get("from_addr") or ""
        for name, value in (("to_addr", to_addr), ("from_addr", from_addr)):
            if not isinstance(value, str) or not value.isascii():
                await self.publish_nack(message_id, f"Invalid {name}: {value}")
                return
        content = message.get("content")
        try:
            encoded = codecs.encode_outbound(
                content, self._submit_encoding, self._submit_data_coding
            )
            parts = multipart.split_text(content or "", encoded.codec, self.style, 0)
            if len(parts) > 1 and self.style in ("sar", "udh"):
                # Only a message sent in parts needs a concatenation reference (how many
                # parts there are does not depend on it).
                bits = 8 if self.style == "udh" else 16
                counter = await self.redis.incr(f"{self.key_prefix}multipart_reference")
                rollover = self.cfg.submit_sm["multipart_sar_reference_rollover"]
                reference = multipart.reference_from_sequence(int(counter), rollover, bits)
                parts = multipart.split_text(content or "", encoded.codec, self.style, reference)
        except UnicodeEncodeError as exc:
            await self.publish_nack(
                message_id,
                f"Content cannot be encoded with {self._submit_encoding}: {exc.reason} "
                f"({exc.object[exc.start : exc.end]!r})",
            )
            return
        except multipart.MessageTooLong as exc:
            await self.publish_nack(message_id, str(exc))
            return
        tlvs_common = self._ussd_tlvs(message)
        submissions = []
        for index, part in enumerate(parts):
            tlvs: dict[str | int, Any] = dict(tlvs_common)
            if part.sar:
                tlvs.update(part.sar)
            if part.message_payload:
                tlvs["message_payload"] = part.payload
            params = {
                **self._submit_params,
                "source_addr": from_addr,
                "destination_addr": to_addr,
                "esm_class": part.esm_class_flags,
                "data_coding": encoded.data_coding,
                "short_message": part.short_message,
            }
            try:
                # Encoded once, here: the protocol writes these bytes with the sequence
                # number of each attempt (``Submission.data``).
                data = smpp.encode(smpp.make_pdu("submit_sm", 1, tlvs=tlvs, **params))
            except (ValueError, smpp.PDUEncodeError) as exc:
                reason = str(exc)
                if len(part.short_message) > 254:
                    reason = (
                        f"The text is {len(part.short_message)} octets, more than one "
                        "submit_sm carries; enable send_multipart_udh, send_multipart_sar "
                        "or send_long_messages"
                    )
                await self.publish_nack(message_id, reason)
                return
            submissions.append(Submission(params, tlvs, (message_id, index), data=data))
        outgoing = _Outgoing(message, len(submissions))
        expiry = self.cfg["submit_sm_expiry"]
        if expiry:
            outgoing.expiry = self.clock.callLater(expiry, self._expired, message_id)
        self.outgoing[message_id] = outgoing
        answered = self._outcome(outgoing)
        for submission in submissions:
            self.queue.put(submission)
        self._update_outbound()
        await answered

    def _outcome(self, outgoing: _Outgoing) -> Deferred:
        """Fires once the message's event is published; fails with ``RetryLater``
        when it is given back."""
        waiter: Deferred = Deferred()
        outgoing.waiters.append(waiter)
        return waiter

    def _settle(self, outgoing: _Outgoing, error: Exception | None = None) -> None:
        waiters, outgoing.waiters = outgoing.waiters, []
        for waiter in waiters:
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)

    async def _conclude(self, outgoing: _Outgoing, publishing: Any) -> None:
        """Publish the outcome, then let the waiting handle_outbound calls return.

        The SMSC has answered whatever happens here: a failure to publish the event
        is logged, not retried (a retry would send the message again)."""
        try:
            await publishing
        except Exception as exc:
            self.log.error(
                f"Could not publish the outcome of a message: {exc}",
                message_id=outgoing.message.get("message_id"),
            )
        finally:
            self._settle(outgoing)

    def _ussd_tlvs(self, message: dict[str, Any]) -> dict[str | int, Any]:
        if message.get("transport_type") != "ussd":
            return {}
        metadata = message.get("transport_metadata") or {}
        try:
            session_info = int(str(metadata.get("session_info") or "0000"), 16)
        except ValueError:
            session_info = 0
        if message.get("session_event") == SESSION_CLOSE:
            session_info += 1
        return {
            "ussd_service_op": self._ussd_op,
            "its_session_info": (session_info & 0xFFFF).to_bytes(2, "big"),
        }

    def _finish(self, outgoing: _Outgoing) -> None:
        outgoing.done = True
        if outgoing.expiry is not None and outgoing.expiry.active():
            outgoing.expiry.cancel()
        message_id = outgoing.message["message_id"]
        # Parts of a failed message that were not sent yet are not sent at all.
        self.queue.remove(lambda s: s.token[0] == message_id)

    def _expired(self, message_id: str) -> None:
        outgoing = self.outgoing.get(message_id)
        if outgoing is None or outgoing.done:
            return
        self._finish(outgoing)
        self._spawn(
            self._conclude(
                outgoing,
                self._nack(
                    outgoing, f"Not sent within submit_sm_expiry ({self.cfg['submit_sm_expiry']}s)"
                ),
            )
        )
        self._update_outbound()

    async def _nack(self, outgoing: _Outgoing, reason: str) -> None:
        message_id = outgoing.message["message_id"]
        self.outgoing.pop(message_id, None)
        self.log.info(f"The SMSC refused the message: {reason}", message_id=message_id)
        await self.publish_nack(message_id, reason)

    async def _ack(self, outgoing: _Outgoing) -> None:
        message_id = outgoing.message["message_id"]
        smsc_ids = [outgoing.smsc_ids[i] for i in sorted(outgoing.smsc_ids)]
        stored: list[str] = []
        try:
            stored = await self.ids.remember([i for i in smsc_ids if i], message_id, self._id_ttl)
        except Exception as exc:
            self.log.error(
                f"Could not store the SMSC message id (receipts will not match): {exc}",
                message_id=message_id,
            )
        sent_id = smsc_ids[0] if len(smsc_ids) == 1 else ",".join(sorted(smsc_ids))
        try:
            if not self.cfg["disable_ack"]:
                await self.publish_ack(message_id, sent_id)
        finally:
            self.outgoing.pop(message_id, None)
        for receipt, status, found in outgoing.receipts:
            await self._report(found, receipt, status)
        self._release_held(set(stored))

    def _update_outbound(self) -> None:
        # How many messages are in hand is bounded by the bus prefetch (the worker's
        # buffer plus ``window_size``): no backlog can build up here.
        protocol = self.protocol
        should_pause = protocol is None or not protocol.bound or protocol.throttled
        if should_pause != self._outbound_paused:
            self._outbound_paused = should_pause
            if should_pause:
                self.pause_outbound()
            else:
                self.resume_outbound()

    # -- inbound ---------------------------------------------------------------------------------

    async def _deliver(self, pdu: smpp.PDU) -> int:
        try:
            return await self._deliver_unsafe(pdu)
        except Exception as exc:
            self.log.error(f"Could not handle {pdu.command}: {exc}", failure=exc)
            return self.cfg.deliver_sm_decoding_error

    async def _deliver_unsafe(self, pdu: smpp.PDU) -> int:
        params, tlvs = pdu.params, pdu.tlvs
        esm_class = params.get("esm_class", 0)
        short_message = params.get("short_message", b"")
        dr = self.cfg.delivery_report
        use_esm_class = dr["delivery_report_use_esm_class"]
        receipt = parse_receipt(
            esm_class, tlvs, short_message, self.receipt_regex, use_esm_class=use_esm_class
        )
        if receipt is not None:
            await self._handle_receipt(receipt)
            return CommandStatus.ESME_ROK

        source = params.get("source_addr", "")
        destination = params.get("destination_addr", "")
        data_coding = params.get("data_coding", 0)
        payload = tlvs.get("message_payload")
        if payload is None:
            payload = short_message
        concat = multipart.ConcatInfo.from_sar(
            tlvs.get("sar_msg_ref_num"),
            tlvs.get("sar_total_segments"),
            tlvs.get("sar_segment_seqnum"),
        )
        if concat is None and "message_payload" not in tlvs:
            try:
                header, rest = multipart.split_user_data(short_message, esm_class, sniff=True)
            except multipart.MalformedUDH as exc:
                self.log.warning(f"Ignoring a malformed user data header: {exc}")
                header, rest = None, short_message
            if header is not None:
                payload = rest
                concat = header.concat
        if concat is not None:
            whole = self.reassembler.add((source, destination), concat, payload)
            if whole is None:
                return CommandStatus.ESME_ROK
            payload = whole

        ussd_op = tlvs.get("ussd_service_op")
        if not payload and ussd_op is None and not self.cfg.deliver_sm["allow_empty_messages"]:
            self.log.warning(f"Refusing an empty message from {source!r}")
            return self.cfg.deliver_sm_decoding_error
        decoded = codecs.decode_message(payload, data_coding, self.codec_map)
        if decoded.fallback:
            self.log.info(
                f"data_coding {data_coding} decoded as {decoded.codec} (not in the "
                "data_coding map; see data_coding_overrides)"
            )
        text = decoded.text

        if ussd_op is not None:
            session_event, session_info = self._ussd_session(ussd_op, tlvs.get("its_session_info"))
            await self.publish_inbound(
                to_addr=destination,
                from_addr=source,
                content=text,
                transport_type="ussd",
                session_event=session_event,
                transport_metadata={"session_info": session_info},
            )
            return CommandStatus.ESME_ROK
        await self.publish_inbound(to_addr=destination, from_addr=source, content=text)
        return CommandStatus.ESME_ROK

    def _ussd_session(self, op: Any, session_info: Any) -> tuple[str, str]:
        op_hex = bytes(op).hex() if isinstance(op, bytes | bytearray) else f"{int(op):02x}"
        session_event = self._ussd_op_map.get(op_hex.lower(), SESSION_CLOSE)
        value = 0
        if isinstance(session_info, bytes | bytearray) and session_info:
            value = int.from_bytes(session_info, "big")
        elif isinstance(session_info, int):
            value = session_info
        if value & 1:
            session_event = SESSION_CLOSE
        return session_event, f"{value & 0xFFFE:04x}"

    def _parts_expired(self, expired: multipart.ExpiredSet) -> None:
        source, destination = expired.source
        self.log.warning(
            f"Dropped an incomplete long message from {source!r} to {destination!r}: "
            f"reference {expired.reference}, parts {sorted(expired.received)} of "
            f"{expired.total} arrived, {expired.missing} missing ({expired.reason})"
        )

    # -- receipts ----------------------------------------------------------------------------------

    async def _handle_receipt(self, receipt: Receipt) -> None:
        if not receipt.smsc_id:
            self.log.warning("A delivery receipt without a message id was ignored")
            return
        status = delivery_status(receipt.state, self.status_mapping) if receipt.state else "pending"
        found = await self._find(receipt.smsc_id, status)
        if found is None:
            self._hold(receipt, status)
            return
        outgoing = self.outgoing.get(found.message_id)
        if outgoing is not None:
            # Its ack is being published: report after it.
            outgoing.receipts.append((receipt, status, found))
            return
        await self._report(found, receipt, status)

    def _find(self, smsc_id: str, status: str) -> Coroutine[Any, Any, FoundReceipt | None]:
        """The message a receipt is for (or None); for a message sent whole, its keys'
        TTLs are shortened in the same round trip when ``status`` is final."""
        return self.ids.find_receipt(
            smsc_id, status in FINAL_STATUSES, self._final_id_ttl, self._final_parts_ttl
        )

    async def _report(self, found: FoundReceipt, receipt: Receipt, status: str) -> None:
        message_id = found.message_id
        report: str | None = status
        if found.multipart:
            outcome = await self.ids.part_receipt(message_id, found.normalised, status)
            report = outcome.status
            if outcome.final:
                await self.ids.expire(
                    found.normalised, message_id, self._final_id_ttl, self._final_parts_ttl
                )
        # A message sent whole: ``_find`` already did what its receipt needs in Redis.
        if report is None or self.cfg["disable_delivery_report"]:
            return
        await self.publish_delivery_report(
            message_id,
            report,
            transport_metadata={"smpp_delivery_status": receipt.state},
        )

    def _hold(self, receipt: Receipt, status: str) -> None:
        hold_time = self.cfg["delivery_report_hold_time"]
        if hold_time <= 0 or self._stopping:
            self.log.info(f"Receipt for unknown SMSC id {receipt.smsc_id!r} dropped")
            return
        held = _HeldReceipt(receipt, status, frozenset(id_candidates(receipt.smsc_id)))
        held.timer = self.clock.callLater(hold_time, self._held_timeout, held)
        self.held.append(held)
        while len(self.held) > MAX_HELD_RECEIPTS:
            old = self.held.popleft()
            if old.timer is not None and old.timer.active():
                old.timer.cancel()
            self.log.info(f"Receipt for unknown SMSC id {old.receipt.smsc_id!r} dropped")

    def _release_held(self, stored: set[str]) -> None:
        if not stored or not self.held:
            return
        for held in list(self.held):
            if held.candidates & stored:
                self.held.remove(held)
                if held.timer is not None and held.timer.active():
                    held.timer.cancel()
                self._spawn(self._handle_receipt(held.receipt))

    def _held_timeout(self, held: _HeldReceipt) -> None:
        if held in self.held:
            self.held.remove(held)
        self._spawn(self._last_try(held))

    async def _last_try(self, held: _HeldReceipt) -> None:
        found = await self._find(held.receipt.smsc_id, held.status)
        if found is None:
            self.log.info(
                f"Receipt for unknown SMSC id {held.receipt.smsc_id!r} "
                f"({held.receipt.state}) dropped"
            )
            return
        await self._report(found, held.receipt, held.status)

    # -- helpers ---------------------------------------------------------------------------------

    def _status(
        self, level: str, type: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        self._spawn(self.publish_status(COMPONENT, level, type, message, details))

    def _spawn(self, coroutine: Any) -> Deferred:
        def failed(failure: Any) -> None:
            self.log.error(f"SMPP channel task failed: {failure.value}", failure=failure)

        return Deferred.fromCoroutine(coroutine).addErrback(failed)
