"""The Gromox-style connection pool: bounded session contexts served by a pre-threaded worker pool.

    server = Server(listeners, handler_factory, context_num=200, thread_init_num=5,
                    thread_charge_num=40, conn_timeout=180.0, ssl_context=ctx,
                    busy_response=b"* BYE Service not available\\r\\n")
    server.start(); ...; server.stop(grace=3.0)

Public API:
    Server(listeners, handler_factory, *, context_num, thread_init_num, thread_charge_num,
           conn_timeout, ssl_context, busy_response, proxy_mode=0, proxy_trust=(),
           proxy_ssl_context=None, io_errors=False, max_conn_per_ip=0, address_ledger=None,
           shared_listeners=False, worker_idle_timeout=60.0, slice_commands=8, slice_bytes=256 KiB,
           on_change=None, peer_allow=None, peer_allow_name="")
    .start()  .stop(grace=3.0)  .wait()  .stats() -> PoolStats
    .reconfigure(proxy_mode=None, proxy_trust=None, ssl_context=None, peer_allow=None)
                                                   None = unchanged; applies to connections
                                                   accepted (or STARTTLS begun) afterwards
    PoolStats(sessions, workers, busy_workers, ready, max_workers)

How it runs:
- Leader/follower. Connection sockets sit in their own epoll with EPOLLONESHOT. One idle worker,
  the leader, waits in it; an event disarms the socket, and the leader queues its connection on
  the FIFO ready queue and serves it itself: no other thread is woken for a command (see _lead).
  A lone ready connection with nothing else queued skips the queue: the leader serves it at once.
  The worker that served a connection re-arms it (for reading, or for writing when the kernel would
  not take all output). The other idle workers sleep until work is queued that no running worker
  will take.
- Between slices the running worker looks for client input itself (a non-blocking epoll_wait on
  the connections' epoll, see _glance); with a worker running, no leader waits.
- A worker that blocks declares it (blocking_section: midb's commit and lock waits): it stops
  counting as running, and a sleeping worker takes the queue or, with nothing queued, the lead.
- One poller thread owns accept() and the timers, in an epoll of its own (listeners and an
  eventfd), so that it never takes a connection's wake-up. While no leader waits it looks in the
  connections' epoll when no worker has for _STALL_AFTER (a worker blocked where it did not say).
- Exactly one worker owns a connection at a time (queued/running flags under a per-connection
  lock). Anything that wants a connection served while it runs (a waker, a timer, stop()) sets a
  flag and asks for a rerun: the connection goes back to the tail of the queue afterwards.
- A slice: flush leftover output; apply a transport action whose bytes are all out; deliver
  shutdown/timeout/wakeup events; read at most ``slice_bytes`` (only when the handler has caught
  up, so input backs up in the kernel instead of in memory); process(``slice_commands``); pull
  output items until ``slice_bytes`` were queued, the socket would block, or a transport action
  comes. More to do: back to the tail of the queue (fairness). Would block: park for writability.
  The handler's output is pulled one item at a time and only while the socket takes it, so a
  client that does not read costs at most one item plus a socket buffer of memory.
- Workers: ``thread_init_num`` stay; one more is started whenever work is queued and no worker is
  free, up to max(thread_init_num, ceil(context_num / thread_charge_num)); extra workers exit after
  ``worker_idle_timeout`` seconds without work.
- Timers (poller, at least once a second and at the earliest deadline): no bytes from the client
  (decoded or not yet: part of a TLS record counts) for handler.idle_timeout() seconds (0 = no
  limit), counted from handler.idle_since() when that is later (the end of the last command) ->
  handler.timed_out(), flush, close (unless the handler answered with a keepalive and keeps the
  connection: the timer then counts from the keepalive); output that made no progress for ``conn_timeout`` seconds -> closed at once; PROXY
  header (min(conn_timeout, 5 s)) and TLS handshakes (conn_timeout) have deadlines too. The time
  a client spends receiving output the socket could not take at once counts as activity.
- PROXY (see gximap.net.proxy): a trusted peer's header is read before anything else, even
  before the TLS handshake on implicit-TLS ports; an untrusted peer is served as itself and
  dropped if its first bytes are a PROXY header. With ``proxy_ssl_context`` a peer that must
  send a header first makes a TLS handshake with it (the proxy link, see
  gximap.net.transport), and the header and everything after it come inside that TLS.
- Admission: a connection arriving while all ``context_num`` contexts are taken waits up to
  0.25 s for one to be freed (the close of a previous client may trail the next connect).
  Meanwhile a connection that has not logged in is closed to make room for it, as Dovecot's
  login processes do: of the oldest 32, one with no command in progress, then one from the
  address holding most of them, then one that never spoke, else the one silent longest
  (_displacement_order). One host holding idle connections cannot lock everyone out
  (handler.displaceable(); a connection still in its PROXY header or TLS handshake counts as
  not logged in). Logged-in sessions are never displaced.
- Shared listeners (``shared_listeners``: sibling processes accept on the same sockets): a process
  with every context taken stops watching them, so that a sibling with room takes the next
  connection; one that no sibling took within _SIBLING_GRACE is accepted after all. A connection
  accepted with every context taken goes to the sibling with the most room (``handoff``, see
  gximap.net.siblings.ConnectionHandoff); only when none has room is it held, and a connection
  here that has not logged in makes room for it. When its wait ends without room, it is passed
  to a sibling all the same (full too, where one may make room), else refused. A process it
  is passed to that has nothing to displace passes it on at once to one it has not been in;
  so it visits each process once at most, and is refused only where it arrived last.
- Refusals: with ``context_num`` sessions open after that, or ``max_conn_per_ip`` from the client's address
  (the PROXY address when there is one; an IPv6 one by its /64, proxy.address_key), ``busy_response`` is written best-effort and the
  connection closed. On implicit-TLS listeners the connection is just closed (plaintext there
  would be garbage to the client).
- Peer allow list (``peer_allow``, networks; None lets in every peer): a TCP peer outside it is
  closed as it is accepted, before it takes a context or is held for one, with nothing sent,
  and logged as a refusal (``peer_allow_name`` names the list in that line: the directive).
  UNIX-socket peers are not checked: the socket file's mode says who may connect.
- ConnectionInfo.extra: "proxy_peer" ([addr]:port of the proxy) when the address came from a
  PROXY header; "client_tls_version" when a listed proxy's header says the client used TLS
  (ConnectionInfo.client_tls; the version as the proxy names it, or empty); "proxy_tls_version"
  over a proxy link; "tls_version" and "tls_cipher" on implicit-TLS listeners.
- UNIX-socket listeners (BoundListener.unix): the peer is ``UNIX_PEER_HOST`` port 0, local_host is
  the socket path, extra holds the peer's "peer_pid", "peer_uid", "peer_gid" (SO_PEERCRED); no
  PROXY header is ever expected there.
- Handler calls happen on workers, with one exception: a connection not logged in that is parked
  waiting for input is displaced by the poller itself (displaceable(), displaced(), next_output()
  for its goodbye, connection_lost()), the poller owning it meanwhile as a worker would; a busy
  one is left to a worker. An exception from a handler is logged with its traceback and closes
  that connection only.
- A connection lost to an I/O error (reset, broken pipe, a TLS or DEFLATE failure, EOF in the
  preamble) is logged at debug level, at notice with ``io_errors`` (maddy's io_errors). Invalid
  DEFLATE data from the client is logged alike, but the handler says goodbye first (its
  input_undecodable(): IMAP's ``* BYE``), through the DEFLATE stream the client still decodes.
- A client gone while the pool does not read it (a command computing between slices, awaiting
  with its input paused or after the client's EOF) is found by one poll(2) per slice, or at once
  by epoll while parked: a reset or a hang-up both ways closes the connection, and the handler's
  connection_lost() ends the command. An EOF alone is a half-close: the client may still read,
  and gets its answers (see _hang_up).
Logging: logging.getLogger("gximap.net"). Refused and displaced connections are logged one line
per kind per _REFUSAL_LOG_INTERVAL (_BurstLog): the first as it happens, then a count of the
rest, so that a connect flood against a full server does not become a log flood (13,842 lines
in 5 s, one per connect). Authentication lines (gximap.log) are never throttled: fail2ban counts
them one by one.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import heapq
import logging
import math
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gximap.log import NOTICE
from gximap.net.handler import ConnectionInfo, HandlerFactory, ProtocolHandler, TransportAction, Waker
from gximap.net.listener import BoundListener
from gximap.net.proxy import (
    HeaderExpectation,
    ProxyDecoder,
    ProxyError,
    ProxyPolicy,
    address_in,
    address_key,
    looks_like_proxy_header,
    normalize_host,
    parse_trust_list,
)
from gximap.net.siblings import AddressLedger, ConnectionHandoff
from gximap.net.transport import InvalidDeflateInput, Transport, TransportError

__all__ = ["UNIX_PEER_HOST", "PoolStats", "Server"]

log = logging.getLogger("gximap.net")

_PROXY_HEADER_TIMEOUT = 5.0
_HANDSHAKE_TIMEOUT_FALLBACK = 60.0  # when conn_timeout is 0 (disabled)
_TIMER_TICK = 1.0
_FLUSH_THRESHOLD = 64 * 1024  # queued output that triggers a send before pulling more items
# A slice also ends after this long pulling output, however few bytes it made: an item may cost a
# body read (FETCH 1:* of a header field: 256 KiB of output was 3,000 reads, 0.09-0.34 s of a
# worker while other sessions and the closes that make room waited; probe56). As long as the
# handlers' own computing slices (gximap.session.base.SLICE_SECONDS).
_OUTPUT_SLICE_SECONDS = 0.02
_ACCEPT_BATCH = 64
_GLANCE_EVENTS = 64  # readiness events a worker takes per look between slices
_ACCEPT_PAUSE = 0.5  # seconds to stop accepting after running out of file descriptors
_PROXY_READ = 4096
# Workers serving connections at once, not counting those inside a blocking_section(). Python
# runs one thread at a time (the GIL), so a second runnable worker adds no parallelism, only GIL
# hand-offs and thread wake-ups: 10 clients sending NOOPs got 9,500 replies/s from one worker and
# 3,900/s from eight. A worker that blocks (a durable commit, an fsync) declares it and steps
# aside, and a sleeping worker takes the queue meanwhile.
_RUNNING_TARGET = 1
# Work that waited this long with no worker taking it wakes one more worker whatever the target:
# a worker may be blocked somewhere it did not declare (the poller checks this often while
# anything is queued).
_STALL_AFTER = 0.01
# A connection arriving while every context is taken waits this long for one to be freed before
# it is refused: a context is released only once a worker has processed the close of the previous
# client, which may trail the next client's connect (health-check probes, quick reconnects).
_ADMISSION_WAIT = 0.25
_MAX_WAITING = 256  # arrivals held at once; beyond that, refused at once
# A connection closed to make room for an arrival (see _make_room) gets this long to take its
# goodbye before it is closed outright: well within _ADMISSION_WAIT, so the arrival gets the
# context even when the connection it displaces does not read.
_DISPLACE_GRACE = 0.1
_DISPLACED = "displaced by a new connection"  # the close's reason in the log
# _make_room chooses among this many of the oldest connections not logged in: those that never
# spoke, then those silent longest (_displacement_order). A client in the middle of its login
# has spoken; a connection held open to take a context has not (or keeps talking, and is then
# at worst among the oldest, as in Dovecot).
_DISPLACE_WINDOW = 32
# While a connection chosen to make room is busy, how often the poller looks for one that is not
# (Server._make_room).
_RECHOOSE_INTERVAL = 0.02
# Listeners shared with sibling processes (imap_process_num): a process whose contexts are all
# taken stops watching them, so that a sibling with room accepts the next connection instead of
# this one holding and then refusing it. Every so often it looks whether a connection is still
# waiting that no sibling took (all of them full, or stuck): that one it accepts after all, to be
# held and refused busy as usual.
_SIBLING_GRACE = 0.05
# Refusals (and displacements) of one kind are logged once per this many seconds, then counted:
# a flood of connects against a full server wrote one line per connect (Dovecot's master warns
# that process_limit is reached once per interval too).
_REFUSAL_LOG_INTERVAL = 10.0


# ConnectionInfo.peer_host of connections on UNIX-socket listeners (peer_port is 0); the peer's
# credentials are in ConnectionInfo.extra as "peer_pid", "peer_uid" and "peer_gid".
UNIX_PEER_HOST = "local"
_UCRED = struct.Struct("3i")


def _unix_peer_credentials(sock: socket.socket) -> dict[str, str]:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return {}
    pid, uid, gid = _UCRED.unpack(raw)
    return {"peer_pid": str(pid), "peer_uid": str(uid), "peer_gid": str(gid)}


@dataclass(frozen=True, slots=True)
class PoolStats:
    sessions: int
    workers: int
    busy_workers: int
    ready: int
    max_workers: int


class _Phase(enum.Enum):
    LINK_HANDSHAKE = "link-handshake"  # trusted peer: TLS with the proxy, before its PROXY header
    PROXY_HEADER = "proxy-header"  # trusted peer: reading the PROXY header
    SNIFF = "sniff"  # untrusted peer on an implicit-TLS port: checking for a PROXY header
    HANDSHAKE = "handshake"  # implicit TLS, before the handler exists
    START = "start"  # ready for the handler to be created
    ACTIVE = "active"
    STARTTLS = "starttls"  # handler exists; TLS handshake after STARTTLS
    CLOSED = "closed"


_DEADLINE_PHASES = frozenset({_Phase.LINK_HANDSHAKE, _Phase.PROXY_HEADER, _Phase.SNIFF, _Phase.HANDSHAKE,
                              _Phase.STARTTLS})


class _Outcome(enum.Enum):
    PARK_READ = "park-read"
    PARK_WRITE = "park-write"
    # Input paused (the handler holds enough unprocessed input), or ended while a command awaits
    # work (the client half-closed): read nothing, wait for the handler's waker, which fires when
    # that work is done. Only a hang-up is watched for meanwhile.
    PARK_WAKE = "park-wake"
    REQUEUE = "requeue"
    CLOSED = "closed"


class _Due(enum.Enum):
    NOTHING = 0
    IDLE = 1  # the handler's idle timeout expired
    KILL = 2  # a phase deadline passed or the writer stalled


class _PeerGone(Exception):
    """Socket, TLS or DEFLATE failure: the connection is over, nothing to report loudly."""


def _hang_up(sock: socket.socket) -> str | None:
    """Why the client can no longer read, or None: a reset or another socket error (POLLERR), or
    a hang-up both ways (POLLHUP). One poll(2); nothing is read, so input buffered in the kernel
    (pipelined commands, TLS or DEFLATE bytes) stays where it is.

    An EOF (POLLRDHUP) is not a hang-up: a client may shut down its sending side and still read
    the answers (``printf 'a SEARCH ...' | nc -N``), and TCP tells that apart from a full close
    only once we send and the client's kernel answers with a reset. A client that closes with a
    plain FIN during a silent command is therefore found when the answer is written."""
    look = select.poll()
    look.register(sock.fileno(), 0)  # POLLERR and POLLHUP are reported whatever the mask
    if not look.poll(0):
        return None
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return os.strerror(error) if error else "hung up"


def _displacement_order(conn: _Connection, share: str | None, holding: Mapping[str, int], unread: set[int],
                        gone: set[int]) -> tuple[bool, bool, int, bool, float]:
    """Which of the connections not logged in makes room first (Server._make_room):
    1. one not busy before one that is: a password check in flight (awaiting()), or being served
       or queued for a worker. A client in the middle of its login is kept, and what the poller
       can close at once (_displace_parked) goes before what needs a worker, which a big
       command or a commit may keep busy past the arrival's wait. But a busy one whose client
       has hung up goes first of all: it is leaving anyway, once its worker reads the end of
       its input, and choosing it costs no live client its connection (a client that connected
       and closed moments before the arrival, as a port probe or a monitor does);
    2. one whose client has hung up (``gone``; not yet seen by a worker);
    3. one from the address holding the most of them (``share``, counted in ``holding``; a
       connection whose PROXY header is not read yet has none: it is not the proxy's);
    4. one whose client never sent a byte (a client sends its first command within moments of
       the greeting; a connection held to take a context sends nothing). Input waiting unread
       in the kernel (``unread``) counts as sent: its command waits for a busy worker;
    5. the one silent longest.
    A flood comes from few addresses, real clients from many, and its connections may each send
    a command: with "never spoke" before the share, a probe's 14 clients from another address
    lost 72 of 1,248 sessions before their first command (a flood of 300 connects/s against 60
    contexts); with the share first, none. Behind a proxy that sends no PROXY header every
    address is the proxy's: the shares tie and the other rules decide. Those alone, in a soak
    with 300 connects/s against 30 contexts, cut 3.4 % of real clients' logins while "silent
    longest" was the only rule, most after their CAPABILITY (review56, probe56)."""
    hung_up = conn.fd in gone
    return (_busy(conn) and not hung_up, not hung_up, -holding[share] if share is not None else 0,
            conn.spoke or conn.fd in unread, _idle_base(conn))


def _idle_base(conn: _Connection) -> float:
    """When the client fell silent, as the idle timer counts it: its last bytes (or a keepalive,
    or the end of a write that blocked), or the handler's idle_since() when that is later (IMAP:
    the last command's answer)."""
    idle_since = conn.idle_since
    return conn.last_activity if idle_since is None else max(conn.last_activity, idle_since())


def _busy(conn: _Connection) -> bool:
    """A password check in flight, or being served or queued for a worker (read unlocked: a
    preference, not a promise)."""
    awaiting = conn.awaiting
    return bool((awaiting is not None and awaiting()) or conn.running or conn.queued)


def _share_of(conn: _Connection) -> str | None:
    """address_key of the client's address; None while a PROXY header (or the proxy link's
    handshake) is still to be read: until then the address is the proxy's, which every such
    connection shares, as if they were one flood."""
    if conn.phase is _Phase.PROXY_HEADER or conn.phase is _Phase.LINK_HANDSHAKE:
        return None
    return address_key(conn.peer_host)


_HUNG_UP = select.POLLRDHUP | select.POLLHUP | select.POLLERR


def _input_state(conns: list[_Connection]) -> tuple[set[int], set[int]]:
    """The descriptors of ``conns`` with input waiting in the kernel, and those whose client has
    hung up (one poll(2), no wait)."""
    look = select.poll()
    for conn in conns:
        look.register(conn.fd, select.POLLIN | select.POLLRDHUP)
    try:
        events = look.poll(0)
    except OSError:
        return set(), set()
    gone = {fd for fd, mask in events if mask & _HUNG_UP}
    return {fd for fd, mask in events if mask & select.POLLIN and fd not in gone}, gone


def _not_logged_in(conn: _Connection) -> bool:
    """May ``conn`` be closed to make room for an arrival (Server._make_room)? Yes while no
    session began (PROXY header, TLS handshake) and while its handler says it has not logged
    in. Read without the connection's lock by the poller; the worker checks again."""
    if conn.phase is _Phase.CLOSED:
        return False
    if conn.handler is None:
        return True
    displaceable = conn.displaceable
    return displaceable is not None and displaceable()


class _Refused(Exception):
    """The connection is refused (PROXY rules, per-address limit). ``kind``: the reason without
    its details, which the log throttles by (_BurstLog)."""

    def __init__(self, reason: str, *, busy: bool = False, kind: str | None = None) -> None:
        super().__init__(reason)
        self.busy = busy
        self.kind = reason if kind is None else kind


@dataclass(slots=True)
class _Burst:
    end: float  # when the next line of this kind may be logged
    level: int
    summary: str  # what the count of the lines not logged is a count of
    suppressed: int = 0


class _BurstLog:
    """At most one line per kind of event per ``interval`` seconds: the first of a burst is
    logged as it comes, the others are counted, and one line tells the count once the interval
    is over (flush(), which the poller calls; or before the next line of that kind). Thread-safe:
    workers and the poller both refuse and displace connections."""

    def __init__(self, logger: logging.Logger, interval: float = _REFUSAL_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self.interval = interval
        self.clock = clock  # tests pass a fake one
        self._lock = threading.Lock()
        self._bursts: dict[str, _Burst] = {}
        # The end of the first burst with lines to count; inf: none (read unlocked by the poller,
        # which calls flush() while it is not).
        self.next_due = math.inf

    def log(self, kind: str, level: int, summary: str, message: str, *args: object) -> None:
        now = self.clock()
        with self._lock:
            burst = self._bursts.get(kind)
            if burst is not None and now < burst.end:
                burst.suppressed += 1
                self.next_due = min(self.next_due, burst.end)
                return
            self._bursts[kind] = _Burst(now + self.interval, level, summary)
        if burst is not None:
            self._summarize(burst)
        self._logger.log(level, message, *args)

    def flush(self, *, everything: bool = False) -> None:
        """Log the counts of the bursts whose interval is over (``everything``: of all of them,
        as the server stops)."""
        now = self.clock()
        if not everything and now < self.next_due:
            return
        with self._lock:
            over = [kind for kind, burst in self._bursts.items() if everything or burst.end <= now]
            ended = [self._bursts.pop(kind) for kind in over]
            self.next_due = min((burst.end for burst in self._bursts.values() if burst.suppressed),
                                default=math.inf)
        for burst in ended:
            self._summarize(burst)

    def _summarize(self, burst: _Burst) -> None:
        if burst.suppressed:
            self._logger.log(burst.level, "%s: %d more in the last %ss, not logged one by one",
                             burst.summary, burst.suppressed, f"{self.interval:g}")


@dataclass(slots=True)
class _Arrival:
    """An accepted socket waiting for a free context."""

    sock: socket.socket
    peer: tuple[str, int]
    listener: BoundListener
    deadline: float
    # Passed in by a sibling: the processes it was in before (the sender among them), never
    # passed to again. Empty: accepted here.
    visited: frozenset[int] = frozenset()


class _Sleeper:
    """An idle worker's own wake-up: released once by the thread that hands it work, so that
    exactly the workers needed are woken (a shared Condition would wake them in any order)."""

    __slots__ = ("wake", "woken")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.woken = False


class _BlockingSection:
    """Only the outermost section of a thread counts (a worker steps aside once)."""

    __slots__ = ("server",)

    def __init__(self, server: Server) -> None:
        self.server = server

    def __enter__(self) -> None:
        depth = getattr(_current, "depth", 0)
        _current.depth = depth + 1
        if depth == 0:
            self.server._block_enter()

    def __exit__(self, *exc: object) -> None:
        _current.depth -= 1
        if _current.depth == 0:
            self.server._block_exit()


# The Server whose worker this thread is (None elsewhere), for blocking_section().
_current = threading.local()


def blocking_section() -> contextlib.AbstractContextManager[None]:
    """For code that may run on a pool worker (e.g. midb's commit waits; see midb.env): around a
    call that may block, so that the pool lets another worker serve meanwhile. A no-op on any
    other thread."""
    server = getattr(_current, "pool", None)
    if server is None:
        return contextlib.nullcontext()
    return server.blocking()


class _Connection:
    __slots__ = (
        "sock", "fd", "transport", "listener", "socket_peer", "peer_host", "peer_port",
        "local_host", "local_port", "listener_port", "proxied", "client_tls", "extra", "ip_key", "phase", "phase_deadline",
        "decoder", "sniff_buffer", "sniff_input", "handler", "lock", "queued", "running", "rerun",
        "closed", "registered", "wakeup_due", "shutdown_due", "kill_reason", "pending_action",
        "handler_behind", "eof", "closing", "idle_fired", "timeout_due", "waiting_input",
        "write_blocked", "last_activity", "last_progress", "idle_limit", "input_paused", "hard_deadline",
        "hard_deadline_fn", "idle_since", "awaiting", "hangup_check", "displaceable", "displace_due", "spoke",
    )  # fmt: skip

    def __init__(
        self, sock: socket.socket, listener: BoundListener, peer: tuple[str, int], now: float
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.transport = Transport(sock)
        self.listener = listener
        self.socket_peer = peer
        self.peer_host, self.peer_port = peer
        self.extra: dict[str, str] = {}
        if listener.unix:
            self.local_host: str = listener.path
            self.local_port: int = 0
            self.extra.update(_unix_peer_credentials(sock))
        else:
            local = sock.getsockname()
            self.local_host = normalize_host(str(local[0]))
            self.local_port = int(local[1])
        self.listener_port = self.local_port  # kept when a PROXY header replaces local_port
        self.proxied = False
        self.client_tls = False  # the PROXY header says the client's link to the proxy is TLS
        self.ip_key: str | None = None  # the address counted against max_conn_per_ip
        self.phase = _Phase.START
        self.phase_deadline = math.inf
        self.decoder: ProxyDecoder | None = None
        self.sniff_buffer = b""
        self.sniff_input = False  # untrusted peer on a plain port: check its first bytes
        self.handler: ProtocolHandler | None = None
        # The handler's input_paused(), if it has one (ProtocolHandler: optional).
        self.input_paused: Callable[[], bool] | None = None
        # The handler's awaiting(), if it has one: a command waits for work whose completion
        # fires the waker, its answer still to come (an EOF then does not close the connection).
        self.awaiting: Callable[[], bool] | None = None
        # The handler's hard_deadline(), if it has one, and its last answer: past it the
        # connection is closed whatever it is doing (writing, parked, reading).
        self.hard_deadline_fn: Callable[[], float] | None = None
        self.hard_deadline = math.inf
        # The handler's idle_since(), if it has one: the idle timer counts from it at the earliest.
        self.idle_since: Callable[[], float] | None = None
        # The handler's displaceable(), if it has one: True while the client has not logged in.
        self.displaceable: Callable[[], bool] | None = None
        self.displace_due = False  # chosen to make room for an arrival (Server._make_room)
        self.spoke = False  # the session has had input from the client (Server._make_room)
        self.lock = threading.Lock()
        self.queued = False
        self.running = False
        self.rerun = False
        self.closed = False
        self.registered = False
        self.wakeup_due = False
        self.shutdown_due = False
        self.kill_reason: str | None = None
        self.pending_action: TransportAction | None = None
        self.handler_behind = False
        # The last slice left the socket unread (a command paused between slices, or PARK_WAKE):
        # the next one starts with a look for a client gone meanwhile (_hang_up).
        self.hangup_check = False
        self.eof = False
        self.closing = False  # flush what the handler queued, then close
        self.idle_fired = False
        self.timeout_due = False
        self.waiting_input = False  # parked for reading: the idle timer applies
        self.write_blocked = False
        self.last_activity = now
        self.last_progress = now
        self.idle_limit = 0.0

    @property
    def rhost(self) -> str:
        return f"[{self.peer_host}]:{self.peer_port}"


def _attach_handler(conn: _Connection, handler: ProtocolHandler) -> None:
    """Give ``conn`` its handler and the handler's optional hooks (ProtocolHandler's comments)."""
    conn.input_paused = getattr(handler, "input_paused", None)
    conn.awaiting = getattr(handler, "awaiting", None)
    conn.hard_deadline_fn = getattr(handler, "hard_deadline", None)
    conn.idle_since = getattr(handler, "idle_since", None)
    # Before the handler: the poller, seeing a handler, asks displaceable (_not_logged_in).
    conn.displaceable = getattr(handler, "displaceable", None)
    conn.handler = handler


class Server:
    def __init__(
        self,
        listeners: Iterable[BoundListener],
        handler_factory: HandlerFactory,
        *,
        context_num: int,
        thread_init_num: int,
        thread_charge_num: int,
        conn_timeout: float,
        ssl_context: ssl.SSLContext | None,
        busy_response: bytes,
        proxy_mode: int = 0,
        proxy_trust: Iterable[str] = (),
        proxy_ssl_context: ssl.SSLContext | None = None,
        io_errors: bool = False,
        max_conn_per_ip: int = 0,
        address_ledger: AddressLedger | None = None,
        shared_listeners: bool = False,
        handoff: ConnectionHandoff | None = None,
        worker_idle_timeout: float = 60.0,
        slice_commands: int = 8,
        slice_bytes: int = 256 * 1024,
        on_change: Callable[[PoolStats], None] | None = None,
        peer_allow: Iterable[str] | None = None,
        peer_allow_name: str = "",
    ) -> None:
        self._listeners = list(listeners)
        if context_num < 1:
            raise ValueError("context_num must be at least 1")
        if thread_init_num < 1:
            raise ValueError("thread_init_num must be at least 1")
        if thread_charge_num < 1:
            raise ValueError("thread_charge_num must be at least 1")
        if slice_commands < 1 or slice_bytes < 1:
            raise ValueError("slice_commands and slice_bytes must be positive")
        if any(listener.tls for listener in self._listeners) and ssl_context is None:
            raise ValueError("an implicit-TLS listener needs an ssl_context")
        self._factory = handler_factory
        self._context_num = context_num
        self._thread_init_num = thread_init_num
        self._max_workers = max(thread_init_num, math.ceil(context_num / thread_charge_num))
        self._conn_timeout = max(conn_timeout, 0.0)
        self._header_timeout = (
            min(_PROXY_HEADER_TIMEOUT, conn_timeout) if conn_timeout > 0 else _PROXY_HEADER_TIMEOUT
        )
        self._handshake_timeout = conn_timeout if conn_timeout > 0 else _HANDSHAKE_TIMEOUT_FALLBACK
        self._ssl_context = ssl_context
        self._busy_response = bytes(busy_response)
        self._proxy_policy = ProxyPolicy.create(proxy_mode, proxy_trust)
        self._proxy_ssl_context = proxy_ssl_context
        # Empty lets in no TCP peer.
        self._peer_allow_name = peer_allow_name or "the allowed networks"
        self._peer_allow = None if peer_allow is None else parse_trust_list(peer_allow, self._peer_allow_name)
        self._peer_refusal = f"address not in {self._peer_allow_name}"
        self._io_error_level = NOTICE if io_errors else logging.DEBUG
        self._refusal_log = _BurstLog(log)
        self._max_conn_per_ip = max(max_conn_per_ip, 0)
        # Connections per address; shared with sibling processes under imap_process_num.
        self._ledger = address_ledger if address_ledger is not None else AddressLedger()
        self._shared_listeners = shared_listeners
        self._handoff = handoff
        if handoff is not None:
            handoff.adopt_with(self._adopt)
        self._worker_idle_timeout = worker_idle_timeout
        self._slice_commands = slice_commands
        self._slice_bytes = slice_bytes
        self._on_change = on_change

        self._lock = threading.Lock()  # connection registry, per-address counts, lifecycle flags
        self._conns: set[_Connection] = set()
        # Connections that may not have logged in yet, in admission order (_make_room drops those
        # that have: a session that logs out again with UNAUTHENTICATE is not displaced).
        self._prelogin: dict[_Connection, None] = {}
        self._displacing: set[_Connection] = set()  # chosen by _make_room, not closed yet
        # Being closed by a worker (_close), their contexts not yet released: room that is coming,
        # which _make_room counts rather than cut another client to make it.
        self._releasing: set[_Connection] = set()
        self._rechoose_at = math.inf  # poller: when _make_room looks again at a busy choice
        self._by_fd: dict[int, _Connection] = {}
        self._queue_lock = threading.Lock()  # ready queue and worker counters
        self._ready: deque[_Connection] = deque()
        self._ready_since = 0.0  # when the head of _ready was queued (monotonic)
        self._workers = 0
        self._running = 0  # workers serving (or woken to serve) outside a blocking_section
        self._sleepers: list[_Sleeper] = []  # idle workers, the most recent last (woken first)
        # The leader: the one idle worker waiting in the connections' epoll (see _lead). Not
        # counted in _running while it waits; whoever nudges it counts it.
        self._leader = False
        self._leader_nudged = False
        self._last_look = 0.0  # when a worker last looked for connection input (monotonic)
        self._worker_serial = 0
        self._worker_threads: set[threading.Thread] = set()
        self._workers_stop = False
        self._timer_lock = threading.Lock()
        self._change_lock = threading.Lock()  # serialises on_change reports (see _changed)
        self._next_scan = 0.0
        self._paused: dict[int, float] = {}  # listener fd -> when to accept again
        self._stepped_back: set[int] = set()  # shared listener fds left to siblings while full
        self._step_back_until = 0.0  # when to look for connections no sibling took
        self._waiting: deque[_Arrival] = deque()  # touched by the poller thread only
        self._listener_by_fd = {listener.fileno(): listener for listener in self._listeners}
        # Siblings name a listener by its place in the list they were all given (the handoff).
        self._listener_index = {listener.fileno(): index for index, listener in enumerate(self._listeners)}
        # from siblings, for the poller: (socket, listener index, tell the sibling it was taken)
        self._passed_in: deque[tuple[socket.socket, int, frozenset[int], Callable[[], None]]] = deque()
        self._epoll: select.epoll | None = None  # the poller's: listeners and _wake_fd
        self._wake_fd = -1
        self._conn_epoll: select.epoll | None = None  # connection sockets and _lead_fd
        self._lead_fd = -1
        self._poller: threading.Thread | None = None
        self._started = False
        self._stopping = False
        self._poller_exit = False
        self._listeners_closed = threading.Event()
        self._drained = threading.Event()
        self._stopped = threading.Event()

    # -- public --------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise RuntimeError("Server.start() called twice")
            self._started = True
        self._epoll = select.epoll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._conn_epoll = select.epoll()
        self._lead_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._conn_epoll.register(self._lead_fd, select.EPOLLIN)
        for fd in self._listener_by_fd:
            self._epoll.register(fd, select.EPOLLIN)
        with self._queue_lock:
            for _ in range(self._thread_init_num):
                self._spawn_worker_locked()
        self._poller = threading.Thread(target=self._poll_loop, name="gximap-poller", daemon=True)
        self._poller.start()
        log.debug(
            "pool started: %d listener(s), %d contexts, %d..%d workers",
            len(self._listeners),
            self._context_num,
            self._thread_init_num,
            self._max_workers,
        )
        self._changed()

    def stats(self) -> PoolStats:
        with self._lock:
            sessions = len(self._conns)
        with self._queue_lock:
            return PoolStats(
                sessions=sessions,
                workers=self._workers,
                busy_workers=self._workers - len(self._sleepers) - self._leader,
                ready=len(self._ready),
                max_workers=self._max_workers,
            )

    def reconfigure(
        self,
        *,
        proxy_mode: int | None = None,
        proxy_trust: Iterable[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        peer_allow: Iterable[str] | None = None,
    ) -> None:
        """Change run-time settings for connections accepted from now on. None = unchanged.
        Raises ValueError (nothing changed) on a bad mode, trust or allow entry."""
        current = self._proxy_policy
        policy = ProxyPolicy(
            current.mode if proxy_mode is None else proxy_mode,
            current.trust if proxy_trust is None else parse_trust_list(proxy_trust),
        )
        allow = self._peer_allow if peer_allow is None else parse_trust_list(peer_allow, self._peer_allow_name)
        self._proxy_policy = policy  # one reference swap: readers see the old or the new policy
        self._peer_allow = allow  # the poller reads it at accept: one reference swap too
        if ssl_context is not None:
            self._ssl_context = ssl_context
        log.debug("pool reconfigured: proxy mode %d, %d trusted network(s)", policy.mode, len(policy.trust))

    def stop(self, grace: float = 3.0) -> None:
        """Stop accepting, ask every handler to say goodbye, flush for up to ``grace`` seconds,
        close everything, stop the threads. Returns within about grace + 1 s."""
        deadline = time.monotonic() + max(grace, 0.0)
        with self._lock:
            already = self._stopping
            self._stopping = True
            started = self._started
            conns = list(self._conns)
        if already:
            self._stopped.wait(max(grace, 0.0) + 2.0)
            return
        if not started:
            for listener in self._listeners:
                listener.close()
            self._stopped.set()
            return
        self._wake()
        self._listeners_closed.wait(1.0)
        for conn in conns:
            conn.shutdown_due = True
            self._schedule(conn)
        with self._lock:
            if not self._conns:
                self._drained.set()
        self._drained.wait(max(deadline - time.monotonic(), 0.0))
        self._force_close_remaining()
        if self._stop_threads(deadline + 0.8):
            # Only now nothing can touch them any more: a stuck worker could otherwise write
            # to a recycled descriptor number.
            wake_fd, self._wake_fd = self._wake_fd, -1
            os.close(wake_fd)
            lead_fd, self._lead_fd = self._lead_fd, -1
            os.close(lead_fd)
            for epoll in (self._epoll, self._conn_epoll):
                if epoll is not None:
                    epoll.close()
        self._refusal_log.flush(everything=True)
        log.debug("pool stopped")
        self._stopped.set()

    def wait(self) -> None:
        """Block until stop() has finished (signal handlers keep running meanwhile)."""
        while not self._stopped.wait(1.0):
            pass

    # -- scheduling ----------------------------------------------------------------------

    def _glance(self, *, by_worker: bool = True) -> None:
        """A running worker, between slices: queue the connections whose input arrived meanwhile.
        (Also the poller's look, ``by_worker=False``, when no worker has looked for a while.)

        While a worker serves, nobody waits in the connections' epoll (the leader that took the
        input is this worker; see _lead), so input that arrives meanwhile waits for this look.
        Waking another thread for it would gain nothing: Python runs one thread at a time, and
        this one serves the queue next. A worker that blocks says so (blocking_section) and
        another one takes the lead; one that blocks without saying so is covered by the poller,
        which looks itself when no worker has for _STALL_AFTER (_poll_loop)."""
        epoll = self._conn_epoll
        if epoll is None:
            return
        try:
            events = epoll.poll(0, _GLANCE_EVENTS)
        except (OSError, ValueError):  # closed by stop()
            return
        self._last_look = time.monotonic()
        self._queue_events(events, by_worker=by_worker)

    def _queue_events(self, events: list[tuple[int, int]], *, by_worker: bool) -> None:
        """Queue the connections of readiness events (_lead_fd, not a connection, is skipped)."""
        by_fd = self._by_fd
        for fd, _mask in events:
            conn = by_fd.get(fd)
            if conn is not None:
                self._schedule(conn, by_worker=by_worker)

    def _lead(self) -> _Connection | None:
        """An idle worker with no leader in place: wait in the connections' epoll, queue what
        arrives, and serve it on this same thread. A lone ready connection, with nothing else
        queued, is not queued at all: it comes back claimed (running) for the caller to serve,
        which spares the queue's round trip (two locks and the hand-over) on every command of
        a client that waits for each answer.

        This is the leader/follower pattern. The poller used to wait there and hand each
        ready connection to a sleeping worker: per command a second thread woken, two
        context switches more and a GIL hand-off; 10 clients sending NOOPs measured 2.65 context
        switches and 2.1 futex calls per command (python -m bench.noop). Now the thread that
        sees the input serves it: 19,700 against 14,800 NOOP/s, 63 against 78 µs of CPU per
        NOOP (the mixed load, where workers are seldom idle, did not change). Other idle workers
        sleep (_Sleeper) until work is queued that the leader cannot take: it is serving, or a
        worker stepped aside (_block_enter)."""
        events: list[tuple[int, int]] = []
        epoll = self._conn_epoll
        try:
            if epoll is not None:
                events = epoll.poll(-1, _GLANCE_EVENTS)
        except InterruptedError:
            pass
        except (OSError, ValueError):  # closed: only after every worker has gone (stop())
            log.error("leader: cannot wait for input", exc_info=True)
            time.sleep(0.1)
        finally:
            self._last_look = time.monotonic()  # before the lead is vacant (the poller looks by then)
            with self._queue_lock:
                self._leader = False
                if self._leader_nudged:
                    self._leader_nudged = False  # counted as running by whoever nudged it
                else:
                    self._running += 1
        lead_fd = self._lead_fd
        for fd, _mask in events:
            if fd == lead_fd:
                with contextlib.suppress(OSError):
                    os.eventfd_read(lead_fd)
                break
        else:
            if len(events) == 1 and not self._ready:
                conn = self._by_fd.get(events[0][0])
                if conn is not None:
                    with conn.lock:
                        if conn.closed or conn.queued:
                            return None
                        if conn.running:  # a waker's worker has it: served again after that
                            conn.rerun = True
                            return None
                        conn.running = True
                        conn.rerun = False
                    return conn
        self._queue_events(events, by_worker=True)
        return None

    def _schedule(self, conn: _Connection, *, by_worker: bool = False) -> None:
        """Queue ``conn`` to be served. ``by_worker``: by the running worker, which serves the
        queue next (no thread to wake)."""
        with conn.lock:
            if conn.closed:
                return
            if conn.running:
                conn.rerun = True
                return
            if conn.queued:
                return
            conn.queued = True
        self._enqueue(conn, by_worker=by_worker)

    def _enqueue(self, conn: _Connection, *, by_worker: bool = False) -> None:
        with self._queue_lock:
            self._push_locked(conn)
            running = self._running
            grew = self._dispatch_locked(_RUNNING_TARGET)
            undispatched = self._running == running
        if grew:
            self._changed()
        elif undispatched and not by_worker and threading.current_thread() is not self._poller:
            # Left to a running worker by another thread (a mailbox notification, a finished
            # login check): the poller watches that it does not wait too long (_STALL_AFTER).
            self._wake()

    def _dispatch_locked(self, target: int) -> bool:
        """Wake sleeping workers (or start new ones) while work is queued and fewer than
        ``target`` workers are running. Caller holds self._queue_lock; True when a worker was started."""
        grew = False
        woken = 0
        while self._running < target and woken < len(self._ready):
            started = self._wake_worker_locked()
            if started is None:
                break
            grew = grew or started
            woken += 1
        return grew

    def _wake_worker_locked(self) -> bool | None:
        """Set one more worker running: a sleeper, else the leader (nudged out of its wait),
        else a new thread. It is counted as running now, so that the next enqueue does not
        wake another. Caller holds self._queue_lock. True: a thread was started; None: no
        worker to be had (the pool is at its maximum)."""
        if self._sleepers:
            self._wake_sleeper_locked(self._sleepers.pop())
            return False
        if self._nudge_leader_locked():
            return False
        return True if self._spawn_worker_locked() else None

    def _wake_sleeper_locked(self, sleeper: _Sleeper) -> None:
        """Wake a sleeper taken off self._sleepers, counted as running (it takes itself out
        again if it finds nothing to do). Caller holds self._queue_lock."""
        sleeper.woken = True
        self._running += 1
        sleeper.wake.release()

    def _nudge_leader_locked(self) -> bool:
        """Make the waiting leader (if any, and not nudged yet) come back from its wait,
        counted as running. Caller holds self._queue_lock."""
        if not self._leader or self._leader_nudged:
            return False
        self._leader_nudged = True
        self._running += 1
        with contextlib.suppress(OSError):
            os.eventfd_write(self._lead_fd, 1)
        return True

    def _check_stalled(self, now: float) -> None:
        """Poller: work queued longer than _STALL_AFTER gets one more worker, whatever the target."""
        grew = False
        with self._queue_lock:
            if self._ready and now - self._ready_since >= _STALL_AFTER:
                grew = self._dispatch_locked(self._running + 1)
                self._ready_since = now  # another one only if this one does not help either
        if grew:
            self._changed()

    def blocking(self) -> contextlib.AbstractContextManager[None]:
        """Around a call that may block a worker for a while (an fsync, a lock held by another
        process): the worker stops counting as running, so another one takes the queue."""
        return _BlockingSection(self)

    def _block_enter(self) -> None:
        with self._queue_lock:
            self._running -= 1
            grew = self._dispatch_locked(_RUNNING_TARGET)
            if self._running < _RUNNING_TARGET and not self._leader and not self._workers_stop:
                # Nobody would see input while this worker blocks: one idle worker takes the lead.
                grew = bool(self._wake_worker_locked()) or grew
        if grew:
            self._changed()

    def _block_exit(self) -> None:
        with self._queue_lock:
            self._running += 1

    def _spawn_worker_locked(self) -> bool:
        """Start one worker if allowed, counted as running (it looks for work at once). Caller
        holds self._queue_lock."""
        if self._workers_stop or self._workers >= self._max_workers:
            return False
        self._worker_serial += 1
        thread = threading.Thread(
            target=self._worker_main, name=f"gximap-worker-{self._worker_serial}", daemon=True
        )
        self._workers += 1
        self._running += 1
        self._worker_threads.add(thread)
        thread.start()
        if self._workers > self._thread_init_num:
            log.debug("worker pool grew to %d (max %d)", self._workers, self._max_workers)
        return True

    def _worker_main(self) -> None:
        """Serve queued connections while there are any; otherwise sleep until woken. A worker is
        counted as running by whoever wakes (or starts) it; see _dispatch_locked."""
        _current.pool = self
        sleeper = _Sleeper()
        running = True  # whether this worker is counted in self._running
        retiring = False  # leaving because of idleness (rather than stop() or a crash)
        try:
            while True:
                lead = False
                with self._queue_lock:
                    conn = self._next_locked()
                    if conn is None:
                        self._running -= 1
                        running = False
                        if self._workers_stop:
                            return
                        if not self._leader:
                            self._leader = lead = True
                        else:
                            sleeper.woken = False
                            self._sleepers.append(sleeper)
                if conn is not None:
                    self._run(conn)
                    if self._ready:
                        # Others are queued: queue what arrived meanwhile behind them, in turn.
                        # With none queued this worker takes the lead next, and the leader's
                        # wait returns the same events (a look here would be one more epoll_wait).
                        self._glance()
                    continue
                if lead:
                    conn = self._lead()
                    running = True
                    if conn is not None:
                        self._run_claimed(conn)
                        if self._ready:
                            self._glance()
                    continue
                surplus = self._workers > self._thread_init_num
                acquired = sleeper.wake.acquire(timeout=self._worker_idle_timeout if surplus else -1)
                with self._queue_lock:
                    if sleeper.woken:
                        running = True  # counted by the waker
                        if not acquired:  # woken just as the wait timed out: consume the release
                            sleeper.wake.acquire()
                        continue
                    self._sleepers.remove(sleeper)
                    if self._workers > self._thread_init_num:
                        retiring = True
                        return
                    self._running += 1  # no longer surplus: look for work, then sleep again
                    running = True
        finally:
            _current.pool = None
            with self._queue_lock:
                if running:
                    self._running -= 1
                self._retire_worker_locked()
            if retiring:
                log.debug("worker pool shrank to %d", self._workers)
                self._changed()

    def _push_locked(self, conn: _Connection) -> None:
        if not self._ready:
            self._ready_since = time.monotonic()
        self._ready.append(conn)

    def _next_locked(self) -> _Connection | None:
        if not self._ready:
            return None
        conn = self._ready.popleft()
        if self._ready:
            self._ready_since = time.monotonic()
        return conn

    def _retire_worker_locked(self) -> None:
        """Take the calling worker out of the counts. Caller holds self._queue_lock."""
        self._workers -= 1
        self._worker_threads.discard(threading.current_thread())

    def _run(self, conn: _Connection) -> None:
        with conn.lock:
            conn.queued = False
            if conn.closed:
                return
            if conn.running:  # taken by the poller while queued (_displace_parked): its to finish
                conn.rerun = True
                return
            conn.running = True
            conn.rerun = False
        self._run_claimed(conn)

    def _run_claimed(self, conn: _Connection) -> None:
        """Serve one slice of ``conn``, marked running by the caller, and park or requeue it."""
        try:
            outcome = self._serve(conn)
        except _PeerGone as exc:
            self._close(conn, str(exc), graceful=False, level=self._io_error_level)
            outcome = _Outcome.CLOSED
        except _Refused as exc:
            self._refuse(conn, str(exc), busy=exc.busy, kind=exc.kind)
            outcome = _Outcome.CLOSED
        except Exception:
            log.error("%s: connection failed in a handler", conn.rhost, exc_info=True)
            self._close(conn, "handler error", graceful=False)
            outcome = _Outcome.CLOSED
        requeue = False
        with conn.lock:
            conn.running = False
            if conn.closed:
                return
            if outcome is _Outcome.REQUEUE or conn.rerun:
                conn.queued = True
                requeue = True
                conn.waiting_input = False
            else:
                conn.waiting_input = outcome is _Outcome.PARK_READ
                try:
                    self._arm(conn, outcome)
                except (OSError, ValueError) as exc:
                    log.error("%s: cannot watch the socket: %s", conn.rhost, exc)
                    conn.kill_reason = "epoll failure"
                    conn.queued = True
                    requeue = True
        if requeue:
            # This worker looks for work next: queue at the tail without waking another thread
            # (it takes the head, which is this connection unless others were waiting first).
            with self._queue_lock:
                self._push_locked(conn)
        else:
            self._note_deadline(self._timer_state(conn, time.monotonic())[1])

    def _arm(self, conn: _Connection, outcome: _Outcome) -> None:
        epoll = self._conn_epoll
        assert epoll is not None
        # PARK_WAKE asks for no event: epoll reports EPOLLERR and EPOLLHUP whatever the mask,
        # once (EPOLLONESHOT), and the slice they start closes the connection (hangup_check).
        events = select.EPOLLONESHOT
        if outcome is _Outcome.PARK_READ:
            events |= select.EPOLLIN
        elif outcome is _Outcome.PARK_WRITE:
            events |= select.EPOLLOUT
        if conn.registered:
            epoll.modify(conn.fd, events)
        else:
            epoll.register(conn.fd, events)
            conn.registered = True

    # -- serving one slice ---------------------------------------------------------------

    def _serve(self, conn: _Connection) -> _Outcome:
        now = time.monotonic()
        if conn.phase is _Phase.CLOSED:
            return _Outcome.CLOSED
        if conn.kill_reason is not None:
            self._close(conn, conn.kill_reason, graceful=False)
            return _Outcome.CLOSED
        due = self._timer_state(conn, now)[0]
        if due is _Due.KILL:
            if conn.phase is not _Phase.ACTIVE:
                reason = f"{conn.phase.value} timeout"
            else:
                reason = "session deadline passed" if now >= conn.hard_deadline else "stalled writer"
            self._close(conn, reason, graceful=False, level=logging.INFO)
            return _Outcome.CLOSED
        if due is _Due.IDLE:
            conn.idle_fired = True
            conn.timeout_due = True
        if conn.shutdown_due and conn.phase is not _Phase.ACTIVE:
            self._close(conn, "server shutdown", graceful=False)
            return _Outcome.CLOSED
        if conn.displace_due and self._displace(conn, now):
            return _Outcome.CLOSED
        conn.waiting_input = False
        while True:
            phase = conn.phase
            if phase is _Phase.PROXY_HEADER:
                outcome = self._serve_proxy_header(conn)
            elif phase is _Phase.SNIFF:
                outcome = self._serve_sniff(conn)
            elif phase is _Phase.HANDSHAKE or phase is _Phase.STARTTLS or phase is _Phase.LINK_HANDSHAKE:
                outcome = self._serve_handshake(conn)
            elif phase is _Phase.START:
                outcome = self._start_handler(conn)
            elif phase is _Phase.ACTIVE:
                return self._serve_active(conn)
            else:
                return _Outcome.CLOSED
            if outcome is not None:
                return outcome

    def _serve_proxy_header(self, conn: _Connection) -> _Outcome | None:
        assert conn.decoder is not None
        while True:
            data = self._io(conn.transport.read_raw, _PROXY_READ)
            if not data:
                if conn.transport.at_eof:
                    raise _PeerGone("closed before sending the PROXY header")
                return _Outcome.PARK_READ
            try:
                result = conn.decoder.feed(data)
            except ProxyError as exc:
                raise _Refused(f"bad PROXY header: {exc}", kind="bad PROXY header") from None
            if result is not None:
                break
        conn.decoder = None
        if result.addresses is not None:
            conn.peer_host = normalize_host(result.addresses.source_host)
            conn.peer_port = result.addresses.source_port
            conn.local_host = normalize_host(result.addresses.dest_host)
            conn.local_port = result.addresses.dest_port
            conn.proxied = True
            conn.extra["proxy_peer"] = f"[{conn.socket_peer[0]}]:{conn.socket_peer[1]}"
        # Only a proxy named in the trust list may vouch for the client's TLS: with an empty list
        # every peer is "trusted", and any client could then switch imap_force_tls off for itself
        # (Dovecot's haproxy_trusted_networks trusts nobody when empty).
        if result.client_tls and self._proxy_policy.trust:
            conn.client_tls = True
            conn.extra["client_tls_version"] = result.client_tls_version
        conn.transport.prepend_raw(result.remainder)
        log.debug("%s: PROXY v%d %s header accepted%s", conn.rhost, result.version, result.command,
                  "" if not result.client_tls else f" (client on TLS {result.client_tls_version})"
                  if conn.client_tls else " (its client-TLS claim ignored: imap_haproxy_trust is empty)")
        if not self._count_address(conn):
            raise _Refused(f"more than {self._max_conn_per_ip} connections from this address", busy=True)
        self._after_preamble(conn)
        return None

    def _serve_sniff(self, conn: _Connection) -> _Outcome | None:
        data = self._io(conn.transport.read_raw, _PROXY_READ)
        if data:
            conn.sniff_buffer += data
            verdict = looks_like_proxy_header(conn.sniff_buffer)
            if verdict is True:
                raise _Refused("PROXY header from an untrusted peer")
            if verdict is False:
                conn.transport.prepend_raw(conn.sniff_buffer)
                conn.sniff_buffer = b""
                self._after_preamble(conn)
                return None
        if conn.transport.at_eof:
            raise _PeerGone("closed before the TLS handshake")
        return _Outcome.PARK_READ

    def _after_preamble(self, conn: _Connection) -> None:
        """PROXY header / sniffing done: TLS handshake next on implicit-TLS ports."""
        if conn.listener.tls:
            ssl_context = self._ssl_context
            assert ssl_context is not None
            conn.transport.start_tls(ssl_context)
            conn.phase = _Phase.HANDSHAKE
            conn.phase_deadline = time.monotonic() + self._handshake_timeout
        else:
            conn.phase = _Phase.START
            conn.phase_deadline = math.inf

    def _serve_handshake(self, conn: _Connection) -> _Outcome | None:
        transport = conn.transport
        link = conn.phase is _Phase.LINK_HANDSHAKE
        try:
            done = transport.link_handshake() if link else transport.handshake()
        except TransportError as exc:
            with contextlib.suppress(OSError):
                transport.flush()  # the alert
            raise _PeerGone(str(exc)) from None
        except OSError as exc:
            raise _PeerGone(f"{exc.strerror or exc}") from None
        if not self._flush(conn):
            return _Outcome.PARK_WRITE
        if not done:
            return _Outcome.PARK_READ
        if link:  # the header shares the handshake's deadline
            conn.extra["proxy_tls_version"] = transport.link_tls_version or ""
            conn.phase = _Phase.PROXY_HEADER
            return None
        conn.phase_deadline = math.inf
        if conn.phase is _Phase.HANDSHAKE:
            conn.extra["tls_version"] = transport.tls_version or ""
            conn.extra["tls_cipher"] = transport.tls_cipher or ""
            conn.phase = _Phase.START
            return None
        conn.phase = _Phase.ACTIVE
        log.debug("%s: STARTTLS done (%s)", conn.rhost, transport.tls_version)
        assert conn.handler is not None
        conn.handler.transport_changed(TransportAction.STARTTLS, True)
        return _Outcome.REQUEUE

    def _start_handler(self, conn: _Connection) -> _Outcome | None:
        tls = conn.transport.tls
        info = ConnectionInfo(
            peer_host=conn.peer_host,
            peer_port=conn.peer_port,
            local_host=conn.local_host,
            local_port=conn.local_port,
            listener_port=conn.listener_port,
            tls=tls,
            # A client on TLS to its proxy is not offered a second TLS inside the first.
            starttls_available=self._ssl_context is not None and not tls and not conn.client_tls,
            listener=conn.listener.kind,
            proxied=conn.proxied,
            client_tls=conn.client_tls,
            extra=dict(conn.extra),
            file_regions=not conn.transport.linked,  # sendfile(2) cannot go through the proxy link's TLS
        )
        handler = self._factory(info, self._make_waker(conn))
        _attach_handler(conn, handler)
        if conn.hard_deadline_fn is not None:
            conn.hard_deadline = conn.hard_deadline_fn()
        conn.phase = _Phase.ACTIVE
        conn.last_activity = time.monotonic()
        handler.start()
        log.debug("%s: session started on %s listener %s", conn.rhost, conn.listener.kind, conn.local_port)
        return None

    def _serve_active(self, conn: _Connection) -> _Outcome:
        handler = conn.handler
        transport = conn.transport
        assert handler is not None
        if conn.hangup_check:
            conn.hangup_check = False
            gone = _hang_up(conn.sock)
            if gone is not None:
                raise _PeerGone(f"closed by client during a command: {gone}")
        if conn.shutdown_due:
            # Delivered even to a connection whose output is stuck: the goodbye queues behind it.
            conn.shutdown_due = False
            if not conn.closing:
                conn.closing = True
                handler.shutdown()
        if transport.pending_output and not self._flush(conn):
            return _Outcome.PARK_WRITE
        if conn.pending_action is not None:
            outcome = self._apply_action(conn)
            if outcome is not None:
                return outcome
        if conn.timeout_due:
            conn.timeout_due = False
            if not conn.closing:
                if handler.timed_out():
                    conn.closing = True
                    log.info("%s: idle timeout, closing", conn.rhost)
                else:
                    # A keepalive: the timer runs again, by the handler's next idle_timeout(),
                    # counted from now. The handler cannot see this base move when a blocked
                    # write ends (_flush); a keepalive resets it to an instant both know.
                    conn.idle_fired = False
                    conn.last_activity = time.monotonic()
        if conn.wakeup_due and not conn.closing:
            conn.wakeup_due = False
            handler.wakeup()
        more = False
        paused = conn.input_paused is not None and conn.input_paused()
        if not conn.closing and not conn.handler_behind and not conn.eof and not paused:
            received = transport.bytes_received
            try:
                data = self._io(transport.read, self._slice_bytes)
            except InvalidDeflateInput as exc:
                data = b""
                self._goodbye_to_undecodable_input(conn, str(exc))
            if data or transport.bytes_received != received:
                # Bytes from the client are activity even when they decode to nothing yet (part
                # of a TLS record, a DEFLATE block's start): a long literal sent slowly is not idle.
                conn.last_activity = time.monotonic()
                conn.idle_fired = False
            if data:
                conn.spoke = True
                if conn.sniff_input:
                    data = self._sniff_input(conn, data)
                if data:
                    handler.data_received(data)
            if transport.at_eof:
                conn.eof = True
                if conn.sniff_buffer:
                    handler.data_received(conn.sniff_buffer)
                    conn.sniff_buffer = b""

        # Process, send what that produced, and process once more if the handler had more and
        # nothing else is queued. A session's command is run by next_output(), so process()
        # reports "more" until its response has been pulled; answered with a requeue, that cost
        # every command a second slice (its bookkeeping, locks and an epoll look) that found
        # nothing to do. The second round finds that, or starts a command pipelined behind.
        budget = self._slice_bytes
        slice_end = time.monotonic() + _OUTPUT_SLICE_SECONDS
        rounds = 2
        blocked = False
        while True:
            if not conn.closing:
                more = bool(handler.process(self._slice_commands))
                conn.handler_behind = more
            round_budget = budget
            exhausted = False
            while budget > 0:
                item = handler.next_output()
                if item is None:
                    exhausted = True
                    break
                if isinstance(item, TransportAction):
                    conn.pending_action = item
                    if item is TransportAction.END_COMPRESS:
                        # Now, before end_batch(): the stream's final block takes the place of
                        # its sync flush, so that the answer and the end of the stream come
                        # together (a client may stop inflating once it has the answer).
                        transport.end_compress()
                    break
                try:
                    transport.write(item)
                except TransportError as exc:
                    raise _PeerGone(str(exc)) from None
                budget -= item.nbytes if isinstance(item, memoryview) else len(item)
                if transport.pending_output >= _FLUSH_THRESHOLD and not self._flush(conn):
                    blocked = True
                    break
                if time.monotonic() >= slice_end:
                    break  # as when the budget is spent: the rest in the next slice
            rounds -= 1
            if (not (more and exhausted and rounds > 0 and budget > 0) or conn.closing or self._ready
                    or time.monotonic() >= slice_end):
                break
            if transport.pending_output and not self._flush(conn):
                # No command starts behind output the client has not taken: a SEARCH started
                # there would hold its search slot while the connection waits for the client.
                break
        if not conn.closing:
            conn.idle_limit = float(handler.idle_timeout())
            if conn.hard_deadline_fn is not None:
                conn.hard_deadline = conn.hard_deadline_fn()
        try:
            transport.end_batch()
        except TransportError as exc:
            raise _PeerGone(str(exc)) from None
        if blocked or (transport.pending_output and not self._flush(conn)):
            return _Outcome.PARK_WRITE
        if conn.pending_action is not None:
            outcome = self._apply_action(conn)
            return _Outcome.REQUEUE if outcome is None else outcome
        if exhausted and conn.closing:
            self._close(conn, "closed after goodbye", graceful=True)
            return _Outcome.CLOSED
        if exhausted and conn.eof and not more and (conn.awaiting is None or not conn.awaiting()):
            self._close(conn, "closed by client", graceful=True)
            return _Outcome.CLOSED
        if more or not exhausted or conn.closing:
            # More to do and nothing sent this round: a command computing between slices (PAUSE).
            # The socket stays unread until it ends, so the next slice looks whether the client
            # is gone (a command that sends learns it from the send's error).
            conn.hangup_check = more and exhausted and budget == round_budget and not conn.closing
            return _Outcome.REQUEUE
        if conn.wakeup_due or conn.shutdown_due or conn.timeout_due:
            return _Outcome.REQUEUE
        # EOF with a command awaiting (a half-closed client): its answer comes with the waker.
        if conn.eof or (conn.input_paused is not None and conn.input_paused()):
            conn.hangup_check = True
            return _Outcome.PARK_WAKE  # before input_backlog: that input waits too
        if transport.input_backlog:
            return _Outcome.REQUEUE
        return _Outcome.PARK_READ

    def _sniff_input(self, conn: _Connection, data: bytes) -> bytes:
        """First bytes from an untrusted peer on a plain port: refuse a PROXY header."""
        buffered = conn.sniff_buffer + data
        verdict = looks_like_proxy_header(buffered)
        if verdict is True:
            raise _Refused("PROXY header from an untrusted peer")
        if verdict is None:
            conn.sniff_buffer = buffered
            return b""
        conn.sniff_input = False
        conn.sniff_buffer = b""
        return buffered

    def _apply_action(self, conn: _Connection) -> _Outcome | None:
        """Apply the pending transport action (all bytes before it are out). None: carry on."""
        action = conn.pending_action
        conn.pending_action = None
        handler = conn.handler
        transport = conn.transport
        assert handler is not None
        if action is TransportAction.CLOSE:
            self._close(conn, "closed by server", graceful=True)
            return _Outcome.CLOSED
        if action is TransportAction.COMPRESS:
            if transport.compressed:
                raise RuntimeError("handler asked for COMPRESS twice")
            transport.start_compress()
            log.debug("%s: DEFLATE compression active", conn.rhost)
            handler.transport_changed(TransportAction.COMPRESS, transport.tls)
            return None
        if action is TransportAction.END_COMPRESS:
            # The transport ended DEFLATE as the action was taken (_serve_active), its answer out.
            log.debug("%s: DEFLATE compression ended", conn.rhost)
            handler.transport_changed(TransportAction.END_COMPRESS, transport.tls)
            return None
        if action is TransportAction.STARTTLS:
            ssl_context = self._ssl_context
            if ssl_context is None or transport.tls or transport.compressed:
                raise RuntimeError("handler asked for STARTTLS where it is not available")
            # Whatever the client sent after the STARTTLS command is still in the kernel (we have
            # not read since the action was queued), so it becomes TLS input: injected plaintext
            # commands can only break the handshake, never reach the handler.
            transport.start_tls(ssl_context)
            conn.phase = _Phase.STARTTLS
            conn.phase_deadline = time.monotonic() + self._handshake_timeout
            return self._serve_handshake(conn)
        raise RuntimeError(f"unknown transport action {action!r}")

    def _goodbye_to_undecodable_input(self, conn: _Connection, reason: str) -> None:
        """The client's input no longer decodes but our output does (its DEFLATE stream is
        broken, ours is not): the handler says why, and the connection closes once that is out,
        as after any goodbye. A handler that cannot say it is closed at once."""
        say_goodbye = getattr(conn.handler, "input_undecodable", None)
        if say_goodbye is None:
            raise _PeerGone(reason)
        # Logged like the TLS and DEFLATE failures that close a connection outright (io_errors).
        log.log(self._io_error_level, "%s: %s; closing with a goodbye", conn.rhost, reason)
        conn.closing = True  # reads nothing more: the rest of the stream cannot be decoded either
        say_goodbye()

    def _displace(self, conn: _Connection, now: float) -> bool:
        """The worker's half of _make_room: close ``conn`` if it still has not logged in (True
        if it was closed at once). A session that can say goodbye (handler.displaced()) is
        given _DISPLACE_GRACE to take it; one that logged in meanwhile stays, and the poller
        looks for another."""
        conn.displace_due = False
        if not _not_logged_in(conn) or not self._waiting:  # logged in, or the arrival got room
            with self._lock:
                self._displacing.discard(conn)
            self._wake()
            return False
        awaiting = conn.awaiting
        if awaiting is not None and awaiting():
            # Its password check is in flight (off the workers): a client in the middle of its
            # login is kept while it is. Looked at again when the check is done (its waker
            # brings it back here), unless _make_room has put one not busy in its place.
            conn.displace_due = True
            return False
        say_goodbye = getattr(conn.handler, "displaced", None)
        # No session to say goodbye (a PROXY header or TLS handshake unfinished), or none that
        # can, or a STARTTLS or COMPRESS to apply first (a handshake would outlast the grace):
        # closed at once.
        at_once = (conn.phase is not _Phase.ACTIVE or conn.closing or say_goodbye is None
                   or conn.pending_action is not None)
        with self._lock:
            if conn not in self._displacing:
                return False  # another was chosen instead while this one was busy (_make_room)
            conn.closing = True  # decided: _make_room no longer puts another in its place
        self._note_displaced(conn)
        if at_once:
            self._close(conn, _DISPLACED, graceful=False)
            return True
        assert say_goodbye is not None
        conn.hard_deadline = min(conn.hard_deadline, now + _DISPLACE_GRACE)  # kept while closing
        say_goodbye()
        return False

    def _io(self, function: Callable[[int], bytes], limit: int) -> bytes:
        try:
            return function(limit)
        except InvalidDeflateInput:
            raise  # the caller has the handler tell the client why (_goodbye_to_undecodable_input)
        except TransportError as exc:
            raise _PeerGone(str(exc)) from None
        except OSError as exc:
            raise _PeerGone(exc.strerror or str(exc)) from None

    def _flush(self, conn: _Connection) -> bool:
        """Send queued output; track progress for the stalled-writer timer."""
        transport = conn.transport
        before = transport.bytes_sent
        try:
            done = transport.flush()
        except TransportError as exc:
            raise _PeerGone(str(exc)) from None
        except OSError as exc:
            raise _PeerGone(exc.strerror or str(exc)) from None
        now = time.monotonic()
        if done:
            if conn.write_blocked:
                conn.write_blocked = False
                # The client was busy receiving what the socket could not take at once.
                conn.last_activity = max(conn.last_activity, now)
            return True
        if transport.bytes_sent != before or not conn.write_blocked:
            conn.last_progress = now
        conn.write_blocked = True
        return False

    def _make_waker(self, conn: _Connection) -> Waker:
        def wake() -> None:
            if conn.closed:
                return
            conn.wakeup_due = True
            self._schedule(conn)

        return wake

    # -- timers --------------------------------------------------------------------------

    def _timer_state(self, conn: _Connection, now: float) -> tuple[_Due, float]:
        """What is due for ``conn`` now, and its next deadline (inf if none)."""
        phase = conn.phase
        if phase is not _Phase.ACTIVE:  # tested first: a set lookup hashes the enum in Python
            if phase in _DEADLINE_PHASES:
                deadline = conn.phase_deadline
                return (_Due.KILL if now >= deadline else _Due.NOTHING), deadline
            return _Due.NOTHING, math.inf
        hard = conn.hard_deadline
        if now >= hard:
            return _Due.KILL, hard
        if conn.write_blocked:
            if self._conn_timeout <= 0:
                return _Due.NOTHING, hard
            deadline = conn.last_progress + self._conn_timeout
            return (_Due.KILL if now >= deadline else _Due.NOTHING), min(deadline, hard)
        if conn.waiting_input and conn.idle_limit > 0 and not conn.idle_fired and not conn.closing:
            deadline = conn.last_activity + conn.idle_limit
            if now >= deadline:
                # Asked only now: idle_since() can only put the deadline later, and asking after
                # every slice cost each command a call for the rare one that outlasts the timer.
                deadline = _idle_base(conn) + conn.idle_limit
            return (_Due.IDLE if now >= deadline else _Due.NOTHING), min(deadline, hard)
        return _Due.NOTHING, hard

    def _note_deadline(self, deadline: float) -> None:
        """Make the poller wake up by ``deadline`` (it otherwise ticks once a second)."""
        if deadline >= self._next_scan:  # read without the lock: the poller looks by then anyway
            return
        with self._timer_lock:
            if deadline >= self._next_scan:
                return
            self._next_scan = deadline
        self._wake()

    def _scan_timers(self, now: float) -> None:
        with self._lock:
            conns = list(self._conns)
        next_scan = now + _TIMER_TICK
        for conn in conns:
            due, deadline = self._timer_state(conn, now)
            if due is not _Due.NOTHING:
                self._schedule(conn)  # the worker re-checks with the connection in hand
            elif deadline < next_scan:
                next_scan = deadline
        if self._waiting:
            next_scan = min(next_scan, self._waiting[0].deadline)
        if self._paused:
            next_scan = min(next_scan, *self._paused.values())
        if self._stepped_back:
            next_scan = min(next_scan, self._step_back_until)
        with self._timer_lock:
            self._next_scan = next_scan

    # -- poller --------------------------------------------------------------------------

    def _wake(self) -> None:
        wake_fd = self._wake_fd
        if wake_fd >= 0:
            with contextlib.suppress(OSError):
                os.eventfd_write(wake_fd, 1)

    def _poll_loop(self) -> None:
        assert self._epoll is not None
        epoll = self._epoll
        while not self._poller_exit:
            try:
                now = time.monotonic()
                with self._timer_lock:
                    next_scan = self._next_scan
                timeout = min(max(next_scan - now, 0.0), _TIMER_TICK, max(self._rechoose_at - now, 0.0))
                if self._ready:
                    timeout = min(timeout, _STALL_AFTER)
                if not self._leader:
                    timeout = min(timeout, max(self._last_look + _STALL_AFTER - now, 0.0))
                elif now - self._last_look < _TIMER_TICK:
                    # Busy lately: the leader may leave its wait to serve at any moment, and
                    # then only this thread can notice a worker blocked where it did not say.
                    # Idle for a second, the poller goes back to its tick.
                    timeout = min(timeout, _STALL_AFTER)
                try:
                    events = epoll.poll(timeout)
                except InterruptedError:
                    continue
                if self._stopping and not self._listeners_closed.is_set():
                    self._close_listeners()
                for fd, _mask in events:
                    if fd == self._wake_fd:
                        with contextlib.suppress(BlockingIOError):
                            os.eventfd_read(self._wake_fd)
                        continue
                    listener = self._listener_by_fd.get(fd)
                    if listener is not None and not self._stopping:
                        self._accept(listener)
                now = time.monotonic()
                if not self._leader and now - self._last_look >= _STALL_AFTER:
                    # No worker waits for input and none has looked: all are serving, or blocked
                    # where they did not say. Queue what arrived, as they would have;
                    # _check_stalled sends one more worker if it is not taken.
                    self._glance(by_worker=False)
                if self._ready:
                    self._check_stalled(now)
                if now >= next_scan:
                    self._scan_timers(now)
                if self._paused:
                    self._resume_listeners(now)
                if self._passed_in:
                    self._admit_passed_in()
                if self._waiting:
                    self._serve_arrivals(now)
                if self._refusal_log.next_due < math.inf:
                    self._refusal_log.flush()
                if self._stepped_back:
                    self._review_step_back(now)
            except Exception:
                log.error("poller: unexpected error", exc_info=True)
                time.sleep(0.1)

    def _close_listeners(self) -> None:
        assert self._epoll is not None
        for fd, listener in self._listener_by_fd.items():
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
            listener.close()
        self._listener_by_fd = {}
        self._paused.clear()
        self._stepped_back.clear()
        while self._waiting:
            arrival = self._waiting.popleft()
            self._refuse_socket(arrival.sock, arrival.listener, arrival.peer, "server shutting down")
        self._admit_passed_in()  # refuses them: _stopping is set
        self._listeners_closed.set()

    def _accept(self, listener: BoundListener) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, address = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error(
                        "cannot accept on %s: %s; pausing this listener", listener.address, exc.strerror
                    )
                    self._pause_listener(listener)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                log.error("cannot accept on %s: %s", listener.address, exc.strerror or exc)
                return
            if listener.unix:
                peer = (UNIX_PEER_HOST, 0)  # the kernel names no address for a UNIX-socket client
            else:
                peer = (normalize_host(str(address[0])), int(address[1]))
                allow = self._peer_allow
                if allow is not None and not address_in(peer[0], allow):
                    # Before it takes a context, or is held for one: a stranger's connect loop
                    # must not keep the allowed peers out.
                    self._refuse_socket(sock, listener, peer, self._peer_refusal, busy=False)
                    continue
                # The transport already gathers a turn's output into few sends; Nagle would
                # hold back the last small segment of a large response until the client's
                # delayed ACK (up to 40 ms), e.g. after a FETCH 1:* or before a tagged OK.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._take(sock, peer, listener)
            # Still taking connections while some here have not logged in: each arrival
            # displaces one (_make_room), where stepping back would let them wait in the
            # kernel's queue for _SIBLING_GRACE each.
            if self._shared_listeners and self._full_for_good():
                self._step_back(time.monotonic())
                return

    def _take(self, sock: socket.socket, peer: tuple[str, int], listener: BoundListener) -> None:
        """Admit a connection, or pass it to a sibling with room, or hold it for a context."""
        full = self._contexts_full()
        if full and self._pass_to_sibling(sock, peer, listener):
            return
        if self._waiting or full:
            self._hold(_Arrival(sock, peer, listener, time.monotonic() + _ADMISSION_WAIT))
        else:
            self._admit_safely(sock, peer, listener)

    def _pass_to_sibling(self, sock: socket.socket, peer: tuple[str, int], listener: BoundListener, *,
                         full_too: bool = False, visited: frozenset[int] = frozenset()) -> bool:
        """Hand ``sock`` to the sibling process with the most room (closing it here); False
        when there is no such sibling. ``full_too``: to the least loaded one even when it is
        full, where it may displace a connection not logged in (_make_room). ``visited``: the
        processes it was passed through before, not to be passed to again."""
        handoff = self._handoff
        index = self._listener_index.get(listener.fileno())
        if handoff is None or index is None:
            return False
        sibling = handoff.offer(sock, index, sys.maxsize if full_too else self._context_num,
                                visited=visited)
        if sibling is None:
            return False
        log.debug("connection from [%s]:%d passed to process %d: all %d contexts here in use%s",
                  peer[0], peer[1], sibling + 1, self._context_num,
                  ", and logged in" if full_too else "")
        with contextlib.suppress(OSError):
            sock.close()
        return True

    def _adopt(self, sock: socket.socket, listener_index: int, visited: frozenset[int],
               taken: Callable[[], None]) -> None:
        """A connection a sibling passed here (called on the sibling channel's thread): the
        poller admits it (see _admit_passed_in), then calls ``taken``."""
        if self._stopping or not 0 <= listener_index < len(self._listeners):
            with contextlib.suppress(OSError):
                sock.close()
            taken()
            return
        self._passed_in.append((sock, listener_index, visited, taken))
        self._wake()

    def _admit_passed_in(self) -> None:
        """Poller: take the connections siblings passed here as if accepted here (held if this
        process filled up meanwhile, passed on only to processes it has not been in), and tell
        each sender it was taken (after the admission's own ledger message)."""
        while self._passed_in:
            sock, index, visited, taken = self._passed_in.popleft()
            try:
                self._admit_passed(sock, self._listeners[index], visited)
            finally:
                taken()

    def _admit_passed(self, sock: socket.socket, listener: BoundListener, visited: frozenset[int]) -> None:
        try:
            if self._stopping or listener.fileno() < 0:
                raise OSError("shutting down")
            if listener.unix:
                peer = (UNIX_PEER_HOST, 0)
            else:
                address = sock.getpeername()
                peer = (normalize_host(str(address[0])), int(address[1]))
        except OSError as exc:
            log.debug("connection passed by a sibling dropped: %s", exc)
            with contextlib.suppress(OSError):
                sock.close()
            return
        if not self._waiting and not self._contexts_full():
            self._admit_safely(sock, peer, listener)
        elif not (self._full_for_good()
                  and self._pass_to_sibling(sock, peer, listener, full_too=True, visited=visited)):
            self._hold(_Arrival(sock, peer, listener, time.monotonic() + _ADMISSION_WAIT, visited))

    def _step_back(self, now: float) -> None:
        """Stop watching the shared listeners while every context is taken (see _SIBLING_GRACE)."""
        for fd in self._listener_by_fd:
            if fd not in self._paused and fd not in self._stepped_back:
                self._unwatch(fd)
                self._stepped_back.add(fd)
        self._step_back_until = now + _SIBLING_GRACE
        self._note_deadline(self._step_back_until)

    def _review_step_back(self, now: float) -> None:
        """Watch the shared listeners again once a context is free, or once a connection has
        waited _SIBLING_GRACE without a sibling taking it. A connection here that has not logged
        in counts as room: one admitted just before the step back (its handler not started yet)
        may be displaced by the next arrival."""
        if self._full_for_good():
            if now < self._step_back_until:
                return
            if not self._unclaimed_connection():
                self._step_back_until = now + _SIBLING_GRACE
                self._note_deadline(self._step_back_until)
                return
        for fd in self._stepped_back:
            self._watch(fd)
        self._stepped_back.clear()

    def _unclaimed_connection(self) -> bool:
        """Is a connection waiting on a listener this process stepped back from?"""
        waiting = select.poll()
        for fd in self._stepped_back:
            waiting.register(fd, select.POLLIN)
        return bool(waiting.poll(0))

    def _contexts_full(self) -> bool:
        with self._lock:
            return len(self._conns) >= self._context_num

    def _hold(self, arrival: _Arrival) -> None:
        if len(self._waiting) >= _MAX_WAITING:
            self._refuse_busy(arrival)
            return
        self._waiting.append(arrival)
        self._note_deadline(arrival.deadline)
        self._make_room()

    def _make_room(self) -> None:
        """Poller, with arrivals waiting for a context: choose connections that have not logged
        in, one for each arrival not yet provided for, and have a worker close them (_displace);
        _serve_arrivals admits the arrival once a context is free. Without this, one host
        holding idle connections until imap_login_timeout locks everyone out. The choice: of
        the oldest _DISPLACE_WINDOW, by _displacement_order.

        A connection chosen while busy (every candidate was: a password check in flight, a
        command being served) may stay so past the arrival's wait, while another becomes free
        to close moments later (its command answered): while one such choice is pending, the
        poller looks again every _RECHOOSE_INTERVAL, and one not busy by then goes instead. Not
        in place of one whose client has hung up: that one leaves as soon as its worker reads
        the end of its input, and the arrival waits for that."""
        with self._lock:
            # Contexts freed but not yet taken (a close the poller has not seen) count as room,
            # and so do those whose close is under way (their handlers letting go).
            free = max(self._context_num - len(self._conns) + len(self._releasing), 0)
            # Not one already saying its goodbye (closing, set under this lock once a worker has
            # decided to close it: _displace): that one is on its way out.
            stuck = [conn for conn in self._displacing if not conn.closed and not conn.closing and _busy(conn)]
            if stuck:  # nor one whose client has hung up: its worker closes it at the end of its input
                _unread, hung_up = _input_state(stuck)
                stuck = [conn for conn in stuck if conn.fd not in hung_up]
            # One chosen whose close is under way is counted in ``free`` already (once: its
            # context is room for one arrival).
            provided = len(self._displacing - self._releasing)
            wanted = len(self._waiting) - provided - free
            if wanted <= 0 and not stuck:
                return
            window = self._displaceable_locked(max(wanted, _DISPLACE_WINDOW))
            shares = {conn: _share_of(conn) for conn in window}
            holding = Counter(share for share in shares.values() if share is not None)
            # Only those that never spoke or are busy need the look (one that spoke, is parked and
            # then hung up has its EOF read by a worker soon; one busy that hung up is leaving).
            unread, gone = _input_state([conn for conn in window if not conn.spoke or _busy(conn)])

            def order(conn: _Connection) -> tuple[bool, bool, int, bool, float]:
                return _displacement_order(conn, shares[conn], holding, unread, gone)

            chosen = heapq.nsmallest(max(wanted, 0), window, key=order)
            spare = [conn for conn in window if conn not in chosen and not _busy(conn)]
            replacements = heapq.nsmallest(min(len(stuck), len(spare)), spare, key=order)
            for replaced in stuck[:len(replacements)]:
                # Left to finish what it is doing; a worker that has it displace_due already
                # finds the arrival admitted (_displace).
                self._displacing.discard(replaced)
                replaced.displace_due = False
            chosen += replacements
            self._displacing.update(chosen)
            # A wake-up of its own, not _note_deadline's: that one scans every connection's timers.
            self._rechoose_at = time.monotonic() + _RECHOOSE_INTERVAL if len(stuck) > len(replacements) else math.inf
        for conn in chosen:
            if not self._displace_parked(conn):
                conn.displace_due = True
                self._schedule(conn)

    def _note_displaced(self, conn: _Connection) -> None:
        self._refusal_log.log(
            "displaced", NOTICE,
            f"connections closed to make room for new ones: all {self._context_num} contexts in use",
            "%s: closed to make room for a new connection: all %d contexts in use, "
            "and this one had not logged in", conn.rhost, self._context_num)

    def _displace_parked(self, conn: _Connection) -> bool:
        """The poller's own half of _make_room, for a connection parked waiting for input (no
        worker has it, and none will until the client sends): closed here at once rather than
        queued for a worker. A worker may be long in coming: a process may have only one, busy
        computing a slice of a big command or blocked on a commit (its shard's write lock, an
        fsync) for most of _ADMISSION_WAIT, and arrivals were refused meanwhile (probe56). True
        when ``conn`` is done with here (closed, or found logged in); False: a worker's turn
        (_displace), as before (the connection is being served, has output or a command in
        flight)."""
        with conn.lock:
            if conn.closed or conn.running:
                return False
            hung_up = conn.queued
            if hung_up:
                # Queued only for a worker to read the end of its input: its client hung up
                # having said nothing (a port probe, a health check). Closed here, as that
                # worker would close it, instead of waiting for a busy worker or cutting a live
                # client in its place (_displacement_order's rule 1).
                if not self._hung_up_in_silence(conn):
                    return False
            else:
                parked = conn.waiting_input if conn.phase is _Phase.ACTIVE else conn.phase in _DEADLINE_PHASES
                if not parked:
                    return False
            conn.running = True  # the poller's until released below: no worker serves it meanwhile
        done = False
        try:
            if hung_up:
                self._close(conn, "closed by client", graceful=True)
                done = True
            else:
                done = self._displace_owned(conn)
        finally:
            with conn.lock:
                conn.running = False
                rerun, conn.rerun = conn.rerun and not conn.closed, False
            if rerun and done:
                self._schedule(conn)  # what arrived for it meanwhile (a session that logged in)
        return done

    @staticmethod
    def _hung_up_in_silence(conn: _Connection) -> bool:
        """``conn`` (its lock held) has had no input, owes no output, and its client has closed
        its side: nothing a worker would do for it but close it."""
        awaiting = conn.awaiting
        return (not conn.spoke and not conn.closing and not conn.handler_behind
                and conn.pending_action is None and (awaiting is None or not awaiting())
                and not conn.transport.pending_output and conn.transport.ends_without_input())

    def _displace_owned(self, conn: _Connection) -> bool:
        """_displace_parked's work, with ``conn`` marked running by the poller."""
        if not _not_logged_in(conn):  # logged in since the choice: _serve_arrivals chooses again
            with self._lock:
                self._displacing.discard(conn)
            return True
        handler = conn.handler
        say_goodbye = getattr(handler, "displaced", None)
        if conn.phase is _Phase.ACTIVE:
            awaiting = conn.awaiting
            if (say_goodbye is None or conn.closing or conn.pending_action is not None or conn.handler_behind
                    or conn.eof or conn.transport.pending_output or (awaiting is not None and awaiting())):
                return False
        self._note_displaced(conn)
        if conn.phase is not _Phase.ACTIVE or say_goodbye is None:
            # No session to say goodbye (a PROXY header or TLS handshake unfinished), or a
            # STARTTLS handshake under way: closed at once, as _displace does.
            self._close(conn, _DISPLACED, graceful=False)
            return True
        try:
            say_goodbye()
            # An idle session's goodbye: its BYE line, then the CLOSE action.
            while (item := conn.handler.next_output() if conn.handler is not None else None) is not None:
                if isinstance(item, TransportAction):
                    break
                conn.transport.write(item)
        except TransportError:
            self._close(conn, _DISPLACED, graceful=False)
            return True
        except Exception:
            log.error("%s: connection failed in a handler", conn.rhost, exc_info=True)
            self._close(conn, "handler error", graceful=False)
            return True
        # The goodbye is flushed without blocking and the socket lingers while the client is
        # still sending, as after any goodbye (a few bytes into an idle socket's empty buffer).
        self._close(conn, _DISPLACED, graceful=True)
        return True

    def _displaceable_locked(self, limit: int) -> list[_Connection]:
        """Up to ``limit`` of the oldest connections not logged in and not chosen to make room
        yet. Caller holds self._lock. Sessions found logged in leave _prelogin for good, so a
        look costs the connections not logged in that it passes, not every session (10,000 in
        IDLE)."""
        found: list[_Connection] = []
        logged_in: list[_Connection] = []
        for conn in self._prelogin:
            if conn.phase is _Phase.START:
                continue  # its handler is about to start: whether it may be displaced is its to say
            if not _not_logged_in(conn):
                logged_in.append(conn)
            elif conn not in self._displacing:
                found.append(conn)
                if len(found) >= limit:
                    break
        for conn in logged_in:
            del self._prelogin[conn]
        return found

    def _full_for_good(self) -> bool:
        """Every context taken, and none that an arrival could displace (_make_room)."""
        with self._lock:
            return (len(self._conns) - len(self._releasing) >= self._context_num
                    and not self._displaceable_locked(1))

    def _serve_arrivals(self, now: float) -> None:
        """Admit waiting arrivals (FIFO) into freed contexts; refuse those that waited too long."""
        while self._waiting and not self._contexts_full():
            arrival = self._waiting.popleft()
            self._admit_safely(arrival.sock, arrival.peer, arrival.listener)
        while self._waiting and self._waiting[0].deadline <= now:
            arrival = self._waiting.popleft()
            # Its wait here is over: to a sibling with room, or else to one full too, which may
            # make room by displacing a connection not logged in (what the other processes hold
            # is not known here). It goes to each process at most once (_admit_passed).
            sock, peer, listener, visited = arrival.sock, arrival.peer, arrival.listener, arrival.visited
            if not ((not visited and self._pass_to_sibling(sock, peer, listener))
                    or self._pass_to_sibling(sock, peer, listener, full_too=True, visited=visited)):
                self._refuse_busy(arrival)
        if self._waiting:
            self._note_deadline(self._waiting[0].deadline)
            self._make_room()  # again: a connection chosen before may have logged in meanwhile

    def _refuse_busy(self, arrival: _Arrival) -> None:
        reason = f"all {self._context_num} contexts in use"
        self._refuse_socket(arrival.sock, arrival.listener, arrival.peer, reason)

    def _admit_safely(self, sock: socket.socket, peer: tuple[str, int], listener: BoundListener) -> None:
        try:
            self._admit(sock, peer, listener)
        except OSError as exc:
            log.debug("connection from [%s]:%d lost while being admitted: %s", peer[0], peer[1], exc)
            with contextlib.suppress(OSError):
                sock.close()

    def _pause_listener(self, listener: BoundListener) -> None:
        fd = listener.fileno()
        self._unwatch(fd)
        self._paused[fd] = time.monotonic() + _ACCEPT_PAUSE
        self._note_deadline(self._paused[fd])

    def _resume_listeners(self, now: float) -> None:
        for fd, when in list(self._paused.items()):
            if now >= when:
                del self._paused[fd]
                self._watch(fd)

    def _watch(self, listener_fd: int) -> None:
        assert self._epoll is not None
        with contextlib.suppress(OSError):
            self._epoll.register(listener_fd, select.EPOLLIN)

    def _unwatch(self, listener_fd: int) -> None:
        assert self._epoll is not None
        with contextlib.suppress(OSError):
            self._epoll.unregister(listener_fd)

    def _admit(self, sock: socket.socket, peer: tuple[str, int], listener: BoundListener) -> None:
        """Take a free context (the caller checked there is one; only the poller adds)."""
        now = time.monotonic()
        policy = self._proxy_policy  # one snapshot: reconfigure() may swap it meanwhile
        # A UNIX-socket client is a local process (an MTA), never behind a proxy.
        expectation = HeaderExpectation.NONE if listener.unix else policy.expectation(peer[0])
        conn = _Connection(sock, listener, peer, now)
        if expectation is not HeaderExpectation.REQUIRED and not self._count_address(conn):
            self._refuse_socket(
                sock, listener, peer, f"more than {self._max_conn_per_ip} connections from this address"
            )
            return
        with self._lock:
            self._conns.add(conn)
            self._prelogin[conn] = None
            self._by_fd[conn.fd] = conn
            self._drained.clear()
        if expectation is HeaderExpectation.REQUIRED:
            conn.decoder = ProxyDecoder(policy.mode)
            if self._proxy_ssl_context is not None:
                conn.transport.start_link_tls(self._proxy_ssl_context)
                conn.phase = _Phase.LINK_HANDSHAKE
                # One deadline for the handshake and the header after it (_serve_handshake keeps
                # it): a peer not yet counted against max_conn_per_ip holds a context meanwhile.
                conn.phase_deadline = now + 2 * self._header_timeout
            else:
                conn.phase = _Phase.PROXY_HEADER
                conn.phase_deadline = now + self._header_timeout
        elif listener.tls:
            if expectation is HeaderExpectation.REFUSED:
                conn.phase = _Phase.SNIFF
                conn.phase_deadline = now + self._handshake_timeout
            else:
                self._after_preamble(conn)
        else:
            conn.sniff_input = expectation is HeaderExpectation.REFUSED
        log.debug("%s: accepted on %s", conn.rhost, listener.address)
        if conn.phase is _Phase.START:
            self._schedule(conn)
        else:
            try:
                with conn.lock:
                    self._arm(conn, _Outcome.PARK_READ)
            except (OSError, ValueError) as exc:
                self._close(conn, f"cannot watch the socket: {exc}", graceful=False)
                return
            self._note_deadline(conn.phase_deadline)
        self._changed()

    def _count_address(self, conn: _Connection) -> bool:
        """Count the connection against max_conn_per_ip. False: the address is over the limit.
        An IPv6 client counts by its /64 (address_key), as the login limits do: one subscriber
        holds a whole /64, and could otherwise open a connection from each of its addresses."""
        key = address_key(conn.peer_host)
        if not self._ledger.acquire(key, self._max_conn_per_ip):
            return False
        conn.ip_key = key
        return True

    def _refuse_socket(
        self, sock: socket.socket, listener: BoundListener, peer: tuple[str, int], reason: str, *,
        busy: bool = True,
    ) -> None:
        """Log (throttled) and close; ``busy``: write ``busy_response`` first where it is understood."""
        self._refusal_log.log(reason, logging.WARNING, f"connections refused: {reason}",
                              "connection from [%s]:%d refused: %s", peer[0], peer[1], reason)
        with contextlib.suppress(OSError):
            if busy and not listener.tls and self._busy_response and not self._expects_link(listener, peer[0]):
                sock.setblocking(False)
                sock.send(self._busy_response)
        with contextlib.suppress(OSError):
            sock.close()

    def _expects_link(self, listener: BoundListener, host: str) -> bool:
        """Whether this peer would talk TLS first (the proxy link): plaintext is garbage to it."""
        return (self._proxy_ssl_context is not None and not listener.unix
                and self._proxy_policy.expectation(host) is HeaderExpectation.REQUIRED)

    def _refuse(self, conn: _Connection, reason: str, *, busy: bool, kind: str) -> None:
        """Refuse a connection already in the registry (during its preamble)."""
        self._refusal_log.log(kind, logging.WARNING, f"connections refused: {kind}",
                              "%s: connection refused: %s", conn.rhost, reason)
        if busy and not conn.listener.tls and self._busy_response and conn.handler is None:
            with contextlib.suppress(OSError, TransportError):
                conn.transport.write(self._busy_response)
                conn.transport.flush()
        self._close(conn, reason, graceful=busy)

    # -- closing -------------------------------------------------------------------------

    def _close(self, conn: _Connection, reason: str, *, graceful: bool, level: int = logging.DEBUG) -> None:
        if conn.phase is _Phase.CLOSED:
            return
        conn.phase = _Phase.CLOSED
        with conn.lock:
            conn.closed = True
        # Forget the descriptor before closing it: the number may be reused by the next accept.
        if conn.registered and self._conn_epoll is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn_epoll.unregister(conn.fd)
        with self._lock:
            if self._by_fd.get(conn.fd) is conn:
                del self._by_fd[conn.fd]
            if conn in self._conns:
                self._releasing.add(conn)
            ip_key, conn.ip_key = conn.ip_key, None  # released once, below
        try:
            conn.transport.close(graceful=graceful)
        except Exception:
            log.debug("%s: error while closing", conn.rhost, exc_info=True)
        log.log(level, "%s: connection closed: %s", conn.rhost, reason)
        if conn.handler is not None:
            try:
                conn.handler.connection_lost()
            except Exception:
                log.error("%s: handler failed in connection_lost", conn.rhost, exc_info=True)
            # The handler holds the waker, which holds the connection: without this the cycle
            # (and whatever input the handler still buffers) waits for a full garbage collection.
            conn.handler = None
            conn.input_paused = conn.awaiting = conn.hard_deadline_fn = conn.idle_since = None  # bound methods: they hold it too
            conn.displaceable = None
        # The address's count goes first, outside the pool's lock: the ledger tells the sibling
        # processes, and that send may wait for room in a slow sibling's queue.
        if ip_key is not None:
            self._ledger.release(ip_key)
        # The context is free only once the handler has let go of its resources.
        with self._lock:
            self._conns.discard(conn)
            self._releasing.discard(conn)
            self._prelogin.pop(conn, None)
            self._displacing.discard(conn)
            if not self._conns:
                self._drained.set()
        if self._waiting:
            self._wake()  # a context is free for an arrival
        self._changed()

    def _force_close_remaining(self) -> None:
        """After the grace period: close what is left. Connections a worker is running right now
        get their socket shut down, so the worker's next I/O fails and it closes them."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with conn.lock:
                if conn.closed:
                    continue
                if conn.running:
                    conn.kill_reason = "server shutdown"
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    continue
                conn.running = True  # take ownership: no worker will touch it now
            try:
                self._close(conn, "server shutdown (grace period over)", graceful=False)
            finally:
                with conn.lock:
                    conn.running = False

    def _stop_threads(self, deadline: float) -> bool:
        """Stop and join the poller and the workers. False if some thread is still running."""
        with self._queue_lock:
            self._workers_stop = True
            for sleeper in self._sleepers:  # each one takes itself out again on its way out
                self._wake_sleeper_locked(sleeper)
            self._sleepers.clear()
            self._nudge_leader_locked()  # so does the leader
            threads = list(self._worker_threads)
        self._poller_exit = True
        self._wake()
        all_joined = True
        for thread in [*threads, self._poller]:
            if thread is None or thread is threading.current_thread():
                continue
            thread.join(max(deadline - time.monotonic(), 0.05))
            if thread.is_alive():
                log.warning("%s did not finish in time; leaving it behind", thread.name)
                all_joined = False
        return all_joined

    def _changed(self) -> None:
        if self._on_change is None:
            return
        # One report at a time, each taken under the lock: two threads reporting at once (the
        # poller admitting a session, a worker starting another worker) could otherwise deliver
        # their figures out of order and leave the older one standing (the process title).
        with self._change_lock:
            try:
                self._on_change(self.stats())
            except Exception:
                log.error("on_change callback failed", exc_info=True)
