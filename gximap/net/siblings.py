"""What the serving processes of one gximap (imap_process_num > 1) tell each other.

Some state must be shared for a limit to mean the same with several processes as with one:
which users are blocked after failed logins, the failures counted per client address, how
many connections each client address holds (imap_max_conn_per_ip), and which passwords were
verified lately (the credential cache, so that a client's next connection does not pay for the
password hash again because it reached another process). Each process keeps that state in
memory as before and tells its siblings every change it makes; they apply it to their own copy.
Why messages and not shared memory: the state stays in plain dicts under the existing locks, a
process that dies takes no lock with it, and the messages are few (one per failed login, per
connection, or per password verified in full).

The transport: before forking, the parent creates one connected UNIX datagram socket pair per
process. Process *i* reads from the receiving end of pair *i*, and sends to every other process
through the sending end of that process's pair. The parent keeps every socket, so a process that
is restarted finds the messages sent to it while it was down still queued (the kernel's queue is
bounded; when it is full, sends are dropped rather than waited for: the state is advisory).

A message is JSON: ``{"from": index, "kind": ..., ...}``. Handlers are registered per kind and
run on the channel's receiving thread. A process that starts (or restarts) sends "hello"; the
others then forget what they knew of its predecessor and send it their own state, so it does not
start blind. State messages are idempotent ("this is my count", "blocked until"), so siblings
that receive them too are not misled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gximap.siblings")

Handler = Callable[[int, dict[str, Any]], None]

_MAX_MESSAGE = 4096   # names and addresses are short; longer messages are never sent
_SEND_TIMEOUT = 0.05  # seconds a send may wait for room in a sibling's queue before it is dropped


class SiblingChannel:
    """Messages between the serving processes of one daemon (see the module docstring)."""

    def __init__(self, pairs: list[tuple[socket.socket, socket.socket]], secret: bytes | None = None) -> None:
        self._pairs = pairs  # per process: (sending end, receiving end)
        # Drawn once in the parent and inherited by every serving process: keys that must be
        # the same in all of them (the credential cache's HMAC key), unknown outside the daemon.
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.index = -1      # this process's index once attached; -1 in the parent
        self._handlers: dict[str, Handler] = {}
        self._hello_handlers: list[Handler] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._dropped = 0

    @classmethod
    def create(cls, count: int) -> SiblingChannel:
        pairs = []
        for _ in range(count):
            sending, receiving = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            sending.settimeout(_SEND_TIMEOUT)
            pairs.append((sending, receiving))
        return cls(pairs, secrets.token_bytes(32))

    @property
    def count(self) -> int:
        return len(self._pairs)

    def attach(self, index: int) -> None:
        """In serving process ``index`` (after fork): start receiving. Sockets this process does
        not use are left open; they belong to the parent's copy of the channel."""
        if not 0 <= index < len(self._pairs):
            raise ValueError(f"no process {index} in a channel of {len(self._pairs)}")
        self.index = index
        self._handlers["hello"] = self._on_hello
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._receive_loop, name="gximap-siblings", daemon=True)
        self._thread.start()

    def say_hello(self) -> None:
        """Announce this process to its siblings, once every component has registered."""
        self.send("hello")

    def on_hello(self, handler: Handler) -> None:
        """Call ``handler(sender_index, message)`` when a sibling (re)starts."""
        self._hello_handlers.append(handler)

    def _on_hello(self, sender: int, message: dict[str, Any]) -> None:
        for handler in self._hello_handlers:
            handler(sender, message)

    def on(self, kind: str, handler: Handler) -> None:
        """Call ``handler(sender_index, message)`` for every message of ``kind`` from a sibling."""
        self._handlers[kind] = handler

    def send(self, kind: str, **fields: Any) -> None:
        """Tell every sibling (never blocks for long; a full queue drops the message)."""
        if self.index < 0 or self._closed:
            return
        data = json.dumps({"from": self.index, "kind": kind, **fields}, separators=(",", ":")).encode()
        if len(data) > _MAX_MESSAGE:
            log.debug("sibling message too long, not sent: %s", kind)
            return
        for index, (sending, _receiving) in enumerate(self._pairs):
            if index == self.index:
                continue
            try:
                sending.send(data)
            except (TimeoutError, BlockingIOError, OSError) as exc:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning("process %d is not reading its messages (%s); %d dropped so far",
                                index + 1, exc, self._dropped)

    def close(self) -> None:
        """Stop receiving (the sockets stay open: the parent owns them)."""
        self._closed = True
        if self._thread is not None:
            os.write(self._stop_write, b"x")
            self._thread.join(5.0)
            self._thread = None
            os.close(self._stop_read)
            os.close(self._stop_write)

    def close_sockets(self) -> None:
        """In the parent, at the very end."""
        self._closed = True
        for sending, receiving in self._pairs:
            with contextlib.suppress(OSError):
                sending.close()
            with contextlib.suppress(OSError):
                receiving.close()

    def _receive_loop(self) -> None:
        receiving = self._pairs[self.index][1]
        receiving.setblocking(False)
        while not self._closed:
            try:
                readable, _, _ = select.select([receiving, self._stop_read], [], [])
                if self._stop_read in readable:
                    return
                data = receiving.recv(_MAX_MESSAGE)
            except BlockingIOError:
                continue
            except OSError as exc:
                log.error("sibling channel closed: %s", exc)
                return
            try:
                message = json.loads(data)
                sender = int(message["from"])
                handler = self._handlers.get(str(message["kind"]))
            except (ValueError, KeyError, TypeError):
                log.warning("malformed sibling message ignored")
                continue
            if handler is None or sender == self.index:
                continue
            try:
                handler(sender, message)
            except Exception:
                log.error("sibling message %s failed", message.get("kind"), exc_info=True)


def chunks(items: list[Any], size: int = 40) -> list[list[Any]]:
    """State sent in messages small enough for the datagram limit."""
    return [items[start:start + size] for start in range(0, len(items), size)]


class AddressLedger:
    """Connections per client address, for imap_max_conn_per_ip: this process's own and, with a
    sibling channel, those the sibling processes reported. When a sibling (re)starts, the others
    forget what its predecessor held and send it their counts.

    Across processes the limit is approximate: two processes admitting a connection from the same
    address at the same instant may both see room for it."""

    def __init__(self, channel: SiblingChannel | None = None, *, name: str = "imap") -> None:
        self._lock = threading.Lock()
        self._own: dict[str, int] = {}
        self._siblings: dict[int, dict[str, int]] = {}
        self._channel = channel
        self._kind = f"conn-{name}"
        if channel is not None:
            channel.on(self._kind, self._on_sibling_change)
            channel.on(f"{self._kind}-state", self._on_sibling_state)
            channel.on_hello(self._on_sibling_hello)

    def acquire(self, key: str, limit: int) -> bool:
        """Count a connection from ``key``; False (and nothing counted) when ``limit`` (> 0) is
        reached across all processes."""
        with self._lock:
            if limit > 0 and self._total_locked(key) >= limit:
                return False
            self._own[key] = self._own.get(key, 0) + 1
        if self._channel is not None:
            self._channel.send(self._kind, key=key, delta=1)
        return True

    def release(self, key: str) -> None:
        with self._lock:
            remaining = self._own.get(key, 0) - 1
            if remaining > 0:
                self._own[key] = remaining
            else:
                self._own.pop(key, None)
        if self._channel is not None:
            self._channel.send(self._kind, key=key, delta=-1)

    def count(self, key: str) -> int:
        """Connections from ``key`` in every process (as far as this one knows)."""
        with self._lock:
            return self._total_locked(key)

    def _total_locked(self, key: str) -> int:
        return self._own.get(key, 0) + sum(counts.get(key, 0) for counts in self._siblings.values())

    def _on_sibling_change(self, sender: int, message: dict[str, Any]) -> None:
        key = str(message.get("key", ""))
        delta = int(message.get("delta", 0))
        with self._lock:
            counts = self._siblings.setdefault(sender, {})
            value = counts.get(key, 0) + delta
            if value > 0:
                counts[key] = value
            else:
                counts.pop(key, None)

    def _on_sibling_state(self, sender: int, message: dict[str, Any]) -> None:
        counts = message.get("counts", {})
        with self._lock:
            mine = self._siblings.setdefault(sender, {})
            for key, value in counts.items():
                if int(value) > 0:
                    mine[str(key)] = int(value)
                else:
                    mine.pop(str(key), None)

    def _on_sibling_hello(self, sender: int, message: dict[str, Any]) -> None:
        assert self._channel is not None
        with self._lock:
            self._siblings.pop(sender, None)
            snapshot = list(self._own.items())
        for part in chunks(snapshot):
            self._channel.send(f"{self._kind}-state", counts=dict(part))
