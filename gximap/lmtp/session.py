"""One LMTP connection: the ProtocolHandler between the pool and gximap.lmtp.protocol / .delivery.

The pool's worker threads run it like an IMAP session (gximap.net.handler). Recipient look-ups
happen when a RCPT is parsed (once per address and transaction). After the final dot the copies
are stored in parallel by the delivery threads (LmtpContext.executor): a durable store write
waits for the disk (fsync), and the file system commits concurrent writes together, so ten
recipients cost little more than one. Recipients with the same target (DeliveryAgent.target: a
repeated RCPT) share one copy, and each gets that copy's reply. Each finished copy fires the
connection's waker; replies go out strictly in recipient order, each as soon as it and those
before it are stored. A message with one copy to store, and no filter program configured, is
stored by the pool's worker itself: there is nothing to parallelise, and the pool lets another
worker serve while this one waits in midb's commit and fsync.

An EOF from the client while copies are being stored is a half-close (an MTA that sent QUIT
behind the message and shut down its side): the replies, and QUIT's, are sent before the
connection closes (``awaiting``, see gximap.net.handler).

Shutdown: copies already being stored are waited for (up to ``SHUTDOWN_WAIT``) and answered, then
``421``; a recipient left without a reply stays queued at the MTA, which retries it.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gximap.lmtp.delivery import DeliveryAgent, PreparedMessage
from gximap.lmtp.protocol import Envelope, LmtpProtocol, MessageComplete, Recipient, RecipientRequest, Reply
from gximap.net.handler import INPUT_HIGH_WATER, ConnectionInfo, OutputItem, TransportAction, Waker

__all__ = ["LmtpContext", "LmtpSession", "LmtpSettings"]

log = logging.getLogger("gximap.lmtp")

SHUTDOWN_WAIT = 10.0  # seconds a stopping server waits for copies already being stored
# From this size on a message's copies are stored one at a time (see _store_in_turn).
SERIAL_COPY_SIZE = 1024 * 1024
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, try again later")


@dataclass(frozen=True, slots=True)
class LmtpSettings:
    host_id: str = "localhost"
    max_message_size: int = 64 * 1024 * 1024
    max_line_length: int = 64 * 1024  # CRLF included; 0 = unlimited
    conn_timeout: float = 300.0
    max_recipients: int = 1000
    delivery_threads: int = 16  # copies stored at once, over all connections


@dataclass
class LmtpContext:
    """What every LMTP session of the process shares. ``settings`` and ``agent.settings`` are
    replaced as a whole on reload. close() stops the delivery threads (after their work)."""

    settings: LmtpSettings
    agent: DeliveryAgent
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _executor: concurrent.futures.ThreadPoolExecutor | None = None

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=max(1, self.settings.delivery_threads), thread_name_prefix="gximap-delivery")
            return self._executor

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


class _Delivery:
    """A complete message whose recipients' copies are being stored. ``pending`` holds each
    recipient still to answer, in order, with its copy's future and whether it is the first
    recipient of that copy (duplicates share the first one's future: see DeliveryAgent.target)."""

    __slots__ = ("event", "prepared", "pending", "delivery_id")

    def __init__(self, event: MessageComplete, prepared: PreparedMessage, delivery_id: str) -> None:
        self.event = event
        self.prepared = prepared
        self.pending: deque[tuple[Recipient, concurrent.futures.Future[Reply], bool]] = deque()
        self.delivery_id = delivery_id


def _stored_here(agent: DeliveryAgent, prepared: PreparedMessage, recipient: Recipient, delivery_id: str
                 ) -> concurrent.futures.Future[Reply]:
    """agent.deliver() run by the calling thread, its outcome in a finished future (as a delivery
    thread's would be: _collect_results answers both alike)."""
    future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
    _deliver_into(future, agent, prepared, recipient, delivery_id)
    return future


def _deliver_into(future: concurrent.futures.Future[Reply], agent: DeliveryAgent, prepared: PreparedMessage,
                  recipient: Recipient, delivery_id: str) -> None:
    """agent.deliver() with its outcome in ``future``, unless that was cancelled first (the
    connection lost, a shutdown), as the executor skips a cancelled job."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(agent.deliver(prepared, recipient, delivery_id=delivery_id))
    except Exception as error:  # noqa: BLE001 - answered 451 by _collect_results, as from a thread
        future.set_exception(error)


def _ip_address(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""


def _store_in_turn(agent: DeliveryAgent, prepared: PreparedMessage,
                   copies: list[tuple[concurrent.futures.Future[Reply], Recipient]], delivery_id: str) -> None:
    """_deliver_into for each recipient in turn."""
    for future, recipient in copies:
        _deliver_into(future, agent, prepared, recipient, delivery_id)


class LmtpSession:
    """Implements :class:`gximap.net.handler.ProtocolHandler` for LMTP."""

    def __init__(self, ctx: LmtpContext, conn: ConnectionInfo, waker: Waker) -> None:
        self.ctx = ctx
        self.conn = conn
        self.waker = waker
        self.id = f"L{ctx.next_id():x}"
        settings = ctx.settings
        self.settings = settings
        self.proto = LmtpProtocol(settings.host_id, max_message_size=settings.max_message_size,
                                  max_line_length=settings.max_line_length,
                                  max_recipients=settings.max_recipients)
        self._delivery: _Delivery | None = None
        # The transaction's accepted addresses and their accounts: a repeated RCPT is not looked
        # up again (at most max_recipients entries, dropped with the transaction's envelope).
        self._accepted: dict[str, tuple[str, ...]] = {}
        self._accepted_for: Envelope | None = None
        self._close_sent = False
        self._messages = 0
        # For the Received field: the MTA's IP address, none over a unix socket.
        self._peer_address = _ip_address(conn.peer_host)

    # -- ProtocolHandler ------------------------------------------------------------------------

    def start(self) -> None:
        log.debug("%s: LMTP connection from %s", self.id, self.conn.rhost)
        self.proto.greet()

    def data_received(self, data: bytes) -> None:
        self.proto.receive(data)

    def input_paused(self) -> bool:
        """Stop reading (the pool's PARK_WAKE) while copies are being stored with INPUT_HIGH_WATER
        bytes of the client's next commands waiting: a client pipelining behind a slow fsync or
        filter fills its socket buffers, not our memory. The waker fires as each copy is done."""
        delivery = self._delivery
        return (delivery is not None and self.proto.buffered >= INPUT_HIGH_WATER
                and any(not future.done() for _recipient, future, _first in delivery.pending))

    @property
    def delivering(self) -> bool:
        """Copies of a message are being stored (the waker fires as each one is done)."""
        return self._delivery is not None

    def awaiting(self) -> bool:
        """Replies are still to come for copies being stored: an MTA that half-closes after
        DATA (and QUIT) meanwhile is kept until they are sent, or it would retry the message
        without knowing that it was delivered (duplicates)."""
        return self.delivering

    def process(self, budget: int) -> bool:
        proto = self.proto
        while budget > 0:
            if self._delivery is not None:
                if not self._collect_results():
                    return False  # the rest is still being stored: the waker brings us back
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

    def timed_out(self) -> bool:
        if self._delivery is not None:
            # Not idle: waiting for copies being stored (a slow disk or filter). A 421 now would
            # make the MTA retry recipients whose copies are stored meanwhile: duplicates.
            return False
        self._abandon("idle time-out")
        self.proto.goodbye(Reply(421, "4.4.2", f"{self.settings.host_id} Error: timeout exceeded"))
        return True

    def wakeup(self) -> None:
        """A copy was stored: process() sends the replies that are due."""

    def shutdown(self) -> None:
        delivery = self._delivery
        if delivery is not None:
            # Copies not started yet are dropped (the MTA keeps them); started ones are finished
            # and answered, so no recipient is stored and then retried.
            futures = [future for _rcpt, future, _first in delivery.pending if not future.cancel()]
            concurrent.futures.wait(futures, timeout=SHUTDOWN_WAIT)
            self._collect_results()
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
        if event.envelope is not self._accepted_for or not event.envelope.recipients:  # a new transaction
            self._accepted, self._accepted_for = {}, event.envelope
        accounts = self._accepted.get(event.address)
        if accounts is None:
            accounts, refusal = self.ctx.agent.check_recipient(event.address)
            if refusal is not None:
                log.info("%s: RCPT <%s> refused: %s", self.id, event.address, refusal)
                self.proto.reply(refusal)
                return
            self._accepted[event.address] = accounts
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
        agent = self.ctx.agent
        try:
            prepared = agent.prepare(event.envelope, event.body, peer=self._peer_address)
        except Exception:  # noqa: BLE001 - a bug must cost a retry, not the connection or the mail
            log.exception("%s: delivery %s: the message could not be prepared", self.id, delivery_id)
            for _ in event.envelope.recipients:
                self.proto.reply(INTERNAL_ERROR)
            self.proto.message_done()
            return
        delivery = self._delivery = _Delivery(event, prepared, delivery_id)
        recipients = event.envelope.recipients
        # One copy per target, not per RCPT: a broken or hostile MTA repeating a recipient must
        # not multiply the mail (and the quota used). Each duplicate gets the first one's reply.
        targets = [agent.target(prepared, recipient) for recipient in recipients]
        firsts: dict[tuple[object, ...], Recipient] = {}
        for recipient, target in zip(recipients, targets, strict=True):
            firsts.setdefault(target, recipient)
        if len(firsts) < len(recipients):
            log.info("%s: delivery %s: %d recipient(s) share the copy of an earlier one with the same target",
                     self.id, delivery_id, len(recipients) - len(firsts))
        futures: dict[tuple[object, ...], concurrent.futures.Future[Reply]] = {}
        if len(firsts) == 1 and prepared.settings.filter is None:
            # One copy, and no filter program to wait for: stored on this worker. midb's waits
            # (the commit, the fsync) are blocking sections of the pool, which lets another
            # worker serve meanwhile; a delivery thread would add two thread wake-ups and two
            # GIL hand-offs per message (there and back) and parallelise nothing.
            ((target, first),) = firsts.items()
            futures[target] = _stored_here(agent, prepared, first, delivery_id)
        elif len(prepared.body) >= SERIAL_COPY_SIZE:
            # Each copy holds the whole message: a large one's recipients are stored one after
            # another by one delivery thread, so that it is in memory twice, not once per thread.
            for target in firsts:
                futures[target] = concurrent.futures.Future()
            self.ctx.executor.submit(_store_in_turn, agent, prepared,
                                     [(futures[target], first) for target, first in firsts.items()], delivery_id)
            for future in futures.values():
                future.add_done_callback(self._copy_done)
        else:
            executor = self.ctx.executor
            for target, first in firsts.items():
                future = futures[target] = executor.submit(agent.deliver, prepared, first, delivery_id=delivery_id)
                future.add_done_callback(self._copy_done)
        for recipient, target in zip(recipients, targets, strict=True):
            delivery.pending.append((recipient, futures[target], firsts[target] is recipient))

    def _copy_done(self, _future: concurrent.futures.Future[Reply]) -> None:
        self.waker()  # any thread: the pool serves the connection soon

    def _collect_results(self) -> bool:
        """Reply for every finished copy at the head of the queue; True once all are answered."""
        delivery = self._delivery
        assert delivery is not None
        while delivery.pending and delivery.pending[0][1].done():
            recipient, future, first = delivery.pending.popleft()
            if future.cancelled():
                return False  # shutting down: leave the rest unanswered
            try:
                reply = future.result()
            except Exception:  # noqa: BLE001 - a bug must cost a retry, not the connection or the mail
                if first:  # its duplicates get the same reply; one traceback is enough
                    log.exception("%s: delivery %s to <%s> failed", self.id, delivery.delivery_id,
                                  recipient.address)
                reply = INTERNAL_ERROR
            self.proto.reply(reply)
        if delivery.pending:
            return False
        self._delivery = None
        self.proto.message_done()
        return True

    def _abandon(self, why: str) -> None:
        delivery, self._delivery = self._delivery, None
        if delivery is not None:
            for _recipient, future, _first in delivery.pending:
                future.cancel()  # not started yet: nobody will hear of it, so do not store it
        if delivery is not None and delivery.pending:
            log.warning("%s: %s: delivery %s left %d recipient(s) unanswered; the MTA will retry them",
                        self.id, why, delivery.delivery_id, len(delivery.pending))
