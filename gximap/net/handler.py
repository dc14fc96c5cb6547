"""The contract between the connection pool (gximap.net.pool) and a protocol session.

The pool owns sockets, TLS, compression, threads and timers; a handler owns one protocol
conversation (IMAP, and later LMTP and the Dovecot auth protocol) and never touches a socket.
All handler methods are called by one worker thread at a time for a given connection (the pool
guarantees mutual exclusion per connection), so a handler needs no locking of its own, except for
whatever it shares with other connections.

Output is a FIFO of items: ``bytes`` to send, a ``FileRegion`` (bytes of a file, sent by the
kernel with sendfile(2) when the connection is plain), or a ``TransportAction`` that the pool
applies once every item queued before it has been written to the socket. While a transport
action is pending the pool reads nothing from the socket, so bytes a client pipelines behind
STARTTLS are never handed to the handler in plaintext (the handler also discards what it had
buffered).
"""

from __future__ import annotations

import enum
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, final


class TransportAction(enum.Enum):
    STARTTLS = "starttls"  # server-side TLS handshake on the plain socket, then continue
    COMPRESS = "compress"  # RFC 4978 DEFLATE both ways from here on
    END_COMPRESS = "end-compress"  # DEFLATE ends both ways after what came before (RFC 8437 4.1)
    CLOSE = "close"  # flush, then close the connection


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What the pool knows about a connection when it hands it to a handler."""

    peer_host: str  # client address; the PROXY-protocol source address when one was accepted
    peer_port: int
    local_host: str
    local_port: int  # the PROXY-protocol destination port when one was accepted
    tls: bool  # the connection is already encrypted (implicit-TLS listener, or after STARTTLS)
    starttls_available: bool  # a TLS context exists for this listener, so STARTTLS can be offered
    listener: str = "imap"  # the listener kind / name from the configuration
    proxied: bool = False  # the peer address came from a PROXY header
    # The trusted PROXY header says the client reached the proxy over TLS (haproxy's
    # send-proxy-v2-ssl): the client's link is encrypted although this connection may not be.
    client_tls: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    # The port the listening socket is bound to (0 for a UNIX socket): local_port unless a PROXY
    # header named the port the client reached the proxy on.
    listener_port: int = 0
    # The pool takes FileRegion output items (a handler may also always send bytes instead).
    file_regions: bool = False

    @property
    def rhost(self) -> str:
        """The address in the format used by log lines that fail2ban reads: [addr]:port."""
        return f"[{self.peer_host}]:{self.peer_port}"


@final  # the transport tests `type(item) is FileRegion`: a subclass would pass as bytes
class FileRegion:
    """An output item: ``length`` bytes of an open file from ``offset``. On a plain connection the
    pool has the kernel send them (sendfile(2)): no copy through Python, no Python work per chunk.
    Under TLS or DEFLATE they are read and encoded like any bytes.

    The region owns ``file`` from the moment it is queued: the transport closes it once sent, or
    when the connection goes. A producer hands over only ranges that can travel as they are (the
    IMAP session: no NUL, which a literal may not carry) of files that never change under their
    name; one that turns out shorter than ``length`` is padded with spaces, so the client, told
    the length in advance, stays in step (as the session's read path does)."""

    __slots__ = ("file", "offset", "length")

    def __init__(self, file: io.RawIOBase, offset: int, length: int) -> None:
        self.file = file
        self.offset = offset
        self.length = length

    def __len__(self) -> int:
        return self.length

    def fileno(self) -> int:
        return self.file.fileno()

    def advance(self, sent: int) -> None:
        self.offset += sent
        self.length -= sent

    def chunks(self, size: int) -> Iterator[bytes]:
        """The remaining bytes, read ``size`` at a time (for a layer that must encode them)."""
        while self.length > 0:
            data = os.pread(self.fileno(), min(size, self.length), self.offset) or b" " * min(size, self.length)
            self.advance(len(data))
            yield data

    def close(self) -> None:
        self.file.close()

    def __repr__(self) -> str:
        return f"<FileRegion {self.length} bytes at {self.offset}>"


# Input held unprocessed by a handler beyond which it asks the pool to stop reading while it
# awaits work off the workers (a password check, a commit, a filter): a client pipelining behind
# it, or a stranger streaming while its wrong password is hashed, fills its socket buffers, not
# our memory. Input is read again when the work is done (ProtocolHandler, input_paused).
INPUT_HIGH_WATER = 1 << 20

Waker = Callable[[], None]
"""Thread-safe callable a handler keeps to ask the pool to run ``wakeup()`` soon (store events)."""

OutputItem = bytes | memoryview | FileRegion | TransportAction


class ProtocolHandler(Protocol):
    def start(self) -> None:
        """Called once, on a worker, when the connection is ready (after an implicit TLS
        handshake and PROXY header). Queue the greeting here."""

    def data_received(self, data: bytes) -> None:
        """Bytes from the client (already decrypted/decompressed). Buffer; do not do long work."""

    def process(self, budget: int) -> bool:
        """Do at most ``budget`` units of work (about one command each). Return True if more work
        is ready without further input, so the pool requeues the connection at the tail."""

    def next_output(self) -> OutputItem | None:
        """The next chunk to send, or None when nothing is queued. Large responses are produced
        lazily, chunk by chunk, so they are never assembled whole in memory. A long computation
        may also give up its slice: None while process() still reports more (the connection is
        queued again behind the others)."""

    def idle_timeout(self) -> float:
        """Seconds of client inactivity allowed in the current state (e.g. imap_conn_timeout
        before login, imap_autologout_time after), counted from the latest of: the last bytes
        from the client (decoded or not yet: part of a TLS record or DEFLATE block), the end of
        output the client was slow to take (a write that blocked), the last timed_out() that
        returned False, and idle_since() if the handler has it."""

    def timed_out(self) -> bool:
        """The idle timeout expired: queue a goodbye (e.g. ``* BYE``) and TransportAction.CLOSE,
        and return True; or answer the silence otherwise (IMAP IDLE's keepalive) and return
        False: the connection stays, and the pool asks idle_timeout() again, counting from now."""

    def wakeup(self) -> None:
        """A waker fired (store change): queue whatever untagged responses are now due."""

    def shutdown(self) -> None:
        """The server is stopping: queue a goodbye and TransportAction.CLOSE."""

    def transport_changed(self, action: TransportAction, tls: bool) -> None:
        """A transport action was applied (``tls`` is the connection's TLS state now)."""

    def connection_lost(self) -> None:
        """The connection is gone (closed by either side, or failed). Release resources."""

    # Optional, looked up once per connection by the pool (see INPUT_HIGH_WATER):
    #   def input_paused(self) -> bool
    # True to stop reading the client for now (the handler holds enough unprocessed input). The
    # pool then reads nothing (it only watches for a hang-up) until the handler's waker fires, so
    # a handler may say True only while work it awaits will fire the waker.
    #   def awaiting(self) -> bool
    # True while a command waits for work that will fire the waker and its answer is still to
    # come: an EOF from the client (a half-close) then does not close the connection; the pool
    # reads nothing more and sends the answer first. Without it, an EOF closes a connection whose
    # handler has nothing to send and reports no more work.
    #   def input_undecodable(self) -> None
    # The client's bytes can no longer be decoded (invalid DEFLATE data) while ours still can:
    # queue a goodbye that says why (IMAP: ``* BYE``) and TransportAction.CLOSE. Nothing more is
    # read, and the connection closes once the goodbye is out. Without it, such a connection is
    # closed at once, unanswered.
    #   def hard_deadline(self) -> float
    # A time.monotonic() instant past which the pool closes the connection outright, whatever it
    # is doing: writing to a client that reads slowly, parked, or reading (math.inf: none). Read
    # after every slice. The handler's own goodbye (idle_timeout) should come first.
    #   def idle_since(self) -> float
    # A time.monotonic() instant the idle timer counts from at the earliest: the end of the
    # handler's last piece of work (IMAP: its last command's answer), so that a command running
    # longer than idle_timeout() is not idle time of the client's. Asked (from the poller thread
    # too: a plain read of the handler's state) only once the timer counted from the client's
    # last bytes has run out, and when choosing a connection to displace.
    #   def displaceable(self) -> bool
    # True while the client has not logged in. With every context taken, the pool closes the
    # longest silent of the oldest such connections to make room for a new one; it asks from the poller thread (a
    # plain read of the handler's state), and again on a worker before closing. Without it, a
    # connection is never displaced once its handler has started.
    #   def displaced(self) -> None
    # This connection is closed to make room: queue a goodbye that says why and
    # TransportAction.CLOSE. It gets a moment to go out; without it, the connection is closed
    # at once, unanswered. For a connection parked waiting for input it is called on the poller
    # thread (which owns the connection meanwhile), followed there by next_output() for the
    # goodbye and connection_lost(): all three must be quick and must not block.


HandlerFactory = Callable[[ConnectionInfo, Waker], ProtocolHandler]
