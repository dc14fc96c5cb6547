"""One LMTP connection: the ProtocolHandler between the pool and gximap.lmtp.protocol / .delivery.

The pool's worker threads run it like an IMAP session (gximap.net.handler). Recipient look-ups
happen when a RCPT is parsed; after the final dot each accepted recipient's copy is stored as one
unit of the work budget, and its reply is queued as soon as the store has it durably, so the
pool flushes replies between recipients and requeues the connection behind others in between
(one big multi-recipient message does not hold a worker for the whole of its delivery).

Shutdown or an idle time-out while recipients are still pending: ``421`` and close; the MTA got no
reply for those recipients, so it keeps the message queued for them (never lost, never stored
twice for a recipient that already got its 250).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gximap.lmtp.delivery import DeliveryAgent, PreparedMessage
from gximap.lmtp.protocol import LmtpProtocol, MessageComplete, Recipient, RecipientRequest, Reply
from gximap.net.handler import ConnectionInfo, OutputItem, TransportAction, Waker

__all__ = ["LmtpContext", "LmtpSession", "LmtpSettings"]

log = logging.getLogger("gximap.lmtp")


@dataclass(frozen=True, slots=True)
class LmtpSettings:
    host_id: str = "localhost"
    max_message_size: int = 64 * 1024 * 1024
    max_line_length: int = 64 * 1024  # CRLF included; 0 = unlimited
    conn_timeout: float = 300.0
    max_recipients: int = 1000


@dataclass
class LmtpContext:
    """What every LMTP session of the process shares. ``settings`` and ``agent.settings`` are
    replaced as a whole on reload."""

    settings: LmtpSettings
    agent: DeliveryAgent
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)


class _Delivery:
    """A complete message whose recipients are being stored one by one."""

    __slots__ = ("event", "prepared", "pending", "delivery_id")

    def __init__(self, event: MessageComplete, prepared: PreparedMessage, delivery_id: str) -> None:
        self.event = event
        self.prepared = prepared
        self.pending: deque[Recipient] = deque(event.envelope.recipients)
        self.delivery_id = delivery_id


class LmtpSession:
    """Implements :class:`gximap.net.handler.ProtocolHandler` for LMTP."""

    def __init__(self, ctx: LmtpContext, conn: ConnectionInfo, waker: Waker) -> None:
        self.ctx = ctx
        self.conn = conn
        self.id = f"L{ctx.next_id():x}"
        settings = ctx.settings
        self.settings = settings
        self.proto = LmtpProtocol(settings.host_id, max_message_size=settings.max_message_size,
                                  max_line_length=settings.max_line_length,
                                  max_recipients=settings.max_recipients)
        self._delivery: _Delivery | None = None
        self._close_sent = False
        self._messages = 0

    # -- ProtocolHandler ------------------------------------------------------------------------

    def start(self) -> None:
        log.debug("%s: LMTP connection from %s", self.id, self.conn.rhost)
        self.proto.greet()

    def data_received(self, data: bytes) -> None:
        self.proto.receive(data)

    def process(self, budget: int) -> bool:
        proto = self.proto
        while budget > 0:
            if self._delivery is not None:
                self._deliver_next()
                budget -= 1
                continue
            if proto.closing:
                return False
            event = proto.next_event()
            if event is None:
                return False
            budget -= 1
            if isinstance(event, RecipientRequest):
                self._recipient(event)
            else:
                self._message(event)
        return not proto.closing

    def next_output(self) -> OutputItem | None:
        if self.proto.has_output():
            return self.proto.data_to_send()
        if self.proto.closing and not self._close_sent:
            self._close_sent = True
            return TransportAction.CLOSE
        return None

    def idle_timeout(self) -> float:
        return self.settings.conn_timeout

    def timed_out(self) -> None:
        self._abandon("idle time-out")
        self.proto.goodbye(Reply(421, "4.4.2", f"{self.settings.host_id} Error: timeout exceeded"))

    def wakeup(self) -> None:
        """LMTP sessions watch nothing in the store."""

    def shutdown(self) -> None:
        self._abandon("server shutdown")
        self.proto.goodbye(Reply(421, "4.3.2", f"{self.settings.host_id} Service shutting down"))

    def transport_changed(self, action: TransportAction, tls: bool) -> None:
        """LMTP here offers no STARTTLS: the transport never changes."""

    def connection_lost(self) -> None:
        self._abandon("connection lost")
        log.debug("%s: LMTP connection from %s closed after %d message(s)", self.id, self.conn.rhost,
                  self._messages)

    # -- internals ------------------------------------------------------------------------------

    def _recipient(self, event: RecipientRequest) -> None:
        accounts, refusal = self.ctx.agent.check_recipient(event.address)
        if refusal is not None:
            log.info("%s: RCPT <%s> refused: %s", self.id, event.address, refusal)
            self.proto.reply(refusal)
            return
        self.proto.accept_recipient(Recipient(event.address, event.orcpt, accounts))

    def _message(self, event: MessageComplete) -> None:
        self._messages += 1
        if event.failure is not None:
            log.info("%s: message from <%s> refused: %s", self.id, event.envelope.sender, event.failure)
            for _ in event.envelope.recipients:
                self.proto.reply(event.failure)
            self.proto.message_done()
            return
        delivery_id = f"{self.id}.{self._messages}"
        prepared = self.ctx.agent.prepare(event.envelope, event.body)
        self._delivery = _Delivery(event, prepared, delivery_id)

    def _deliver_next(self) -> None:
        delivery = self._delivery
        assert delivery is not None
        recipient = delivery.pending.popleft()
        try:
            reply = self.ctx.agent.deliver(delivery.prepared, recipient, delivery_id=delivery.delivery_id)
        except Exception:  # noqa: BLE001 - a bug must cost a retry, not the connection or the mail
            log.exception("%s: delivery %s to <%s> failed", self.id, delivery.delivery_id, recipient.address)
            reply = Reply(451, "4.3.0", "Internal error, try again later")
        self.proto.reply(reply)
        if not delivery.pending:
            self._delivery = None
            self.proto.message_done()

    def _abandon(self, why: str) -> None:
        delivery, self._delivery = self._delivery, None
        if delivery is not None and delivery.pending:
            log.warning("%s: %s: delivery %s left %d recipient(s) unanswered; the MTA will retry them",
                        self.id, why, delivery.delivery_id, len(delivery.pending))
