"""Lingering close: after the server's last response, read and discard what the peer still sends
until it closes its side too, for a short while, before the socket is closed.

Closing a TCP socket with unread input, or with input arriving after the close, makes the kernel
answer with a reset (RFC 1122 4.2.2.13), and a reset throws away what the peer has not yet read:
the ``* BYE`` or the tagged answer just sent, and anything still in our send queue. A client that
pipelines commands behind a LOGOUT, or keeps writing into a session the server ends (too many bad
commands, a literal refused), then sees "connection reset" instead of the answer - Windows clients
always, Linux ones when the reset comes before the data. Apache and nginx linger the same way.

The transport hands a socket over only when its close caught the peer sending (its drain read
data) and something was sent on it: a peer that waits for the answer, as after LOGOUT, sends
nothing more and is closed at once, without the hand-off, and a connection refused without a
word (a busy TLS listener's) has no answer to protect. (A peer that writes now and then, and
had nothing in flight at the close, is not caught: the rare case left.) A :class:`Lingerer`
keeps such sockets (their write side already shut down, so the peer has its end-of-file) on one
epoll set, served by one thread that exists only while some socket lingers. Each one is closed at the peer's end-of-file, at
an error, after ``seconds``, or after ``max_bytes`` discarded, whichever comes first; beyond
``limit`` sockets at once a socket is not taken, and its caller closes it at once, as before.
The descriptors so held count against the process's limit, which is why the count is bounded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time

__all__ = ["LINGER", "Lingerer"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_MAX_WAIT = 0.5  # seconds the thread sleeps at most between deadline checks


class Lingerer:
    def __init__(self, *, limit: int = 256, seconds: float = 2.0, max_bytes: int = 1 << 20) -> None:
        self.limit = limit
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._epoll: select.epoll | None = None
        self._socks: dict[int, tuple[socket.socket, float, int]] = {}  # fd -> (socket, deadline, budget)
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._socks)

    def adopt(self, sock: socket.socket) -> bool:
        """Take ``sock`` (write side shut down) to close once the peer has finished; False when
        it is not taken (too many lingering already, or it cannot be watched): close it now."""
        with self._lock:
            if len(self._socks) >= self.limit:
                return False
            try:
                if self._epoll is None:
                    self._epoll = select.epoll()
                fd = sock.fileno()
                self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
            except (OSError, ValueError):
                return False
            self._socks[fd] = (sock, time.monotonic() + self.seconds, self.max_bytes)
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="linger", daemon=True)
                try:
                    thread.start()
                except RuntimeError:
                    # No thread to serve it (the process is out of threads or memory): not
                    # taken, and the next adoption tries again.
                    del self._socks[fd]
                    with contextlib.suppress(OSError, ValueError):
                        self._epoll.unregister(fd)
                    return False
                self._thread = thread
        return True

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:
            log.exception("lingering close: the thread failed; closing the sockets it held")
        finally:
            # Left by an error (never expected): what it held is closed now, not stranded
            # without a thread, and the next adoption starts a new one.
            with self._lock:
                stranded = list(self._socks) if self._thread is threading.current_thread() else []
                if stranded:
                    self._thread = None
            for fd in stranded:
                self._finish(fd)

    def _serve(self) -> None:
        while True:
            with self._lock:
                if not self._socks:
                    self._thread = None
                    return
                epoll = self._epoll
                nearest = min(deadline for _sock, deadline, _budget in self._socks.values())
            assert epoll is not None
            timeout = min(max(nearest - time.monotonic(), 0.0), _MAX_WAIT)
            try:
                events = epoll.poll(timeout)
            except InterruptedError:
                events = []
            for fd, _mask in events:
                self._drain(fd)
            now = time.monotonic()
            with self._lock:
                expired = [fd for fd, (_sock, deadline, _budget) in self._socks.items() if deadline <= now]
            for fd in expired:
                self._finish(fd)

    def _drain(self, fd: int) -> None:
        with self._lock:
            entry = self._socks.get(fd)
        if entry is None:
            return
        sock, deadline, budget = entry
        while budget > 0:
            try:
                data = sock.recv(min(_CHUNK, budget))
            except (BlockingIOError, InterruptedError):
                with self._lock:
                    if fd in self._socks:
                        self._socks[fd] = (sock, deadline, budget)
                return
            except OSError:
                break
            if not data:
                break  # the peer's end-of-file: a clean close now
            budget -= len(data)
        self._finish(fd)

    def _finish(self, fd: int) -> None:
        with self._lock:
            entry = self._socks.pop(fd, None)
            epoll = self._epoll
        if entry is None:
            return
        if epoll is not None:
            with contextlib.suppress(OSError, ValueError):
                epoll.unregister(fd)
        with contextlib.suppress(OSError):
            entry[0].close()

    def _forget_after_fork(self) -> None:
        # The parent's thread is not in the child, and its sockets are the parent's to close:
        # the child lets go of its copies of their descriptors.
        self._lock = threading.Lock()
        self._thread = None
        for sock, _deadline, _budget in self._socks.values():
            with contextlib.suppress(OSError):
                sock.close()
        self._socks = {}
        if self._epoll is not None:
            with contextlib.suppress(OSError):
                self._epoll.close()
            self._epoll = None


LINGER = Lingerer()
os.register_at_fork(after_in_child=LINGER._forget_after_fork)
