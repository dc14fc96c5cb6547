"""What the serving processes of one gximap (imap_process_num > 1) tell each other.

Some state must be shared for a limit to mean the same with several processes as with one:
which users are blocked after failed logins, the failures counted per client address, how
many connections each client address holds (imap_max_conn_per_ip) and how many sessions each
account holds from it (imap_max_conn_per_user_ip), and which passwords were
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
run on the channel's receiving thread. A message to one sibling may carry file descriptors
(SCM_RIGHTS): that is how a process whose contexts are all taken passes a connection it accepted
to a sibling with room (ConnectionHandoff). A process that starts (or restarts) sends "hello"; the
others then forget what they knew of its predecessor and send it their own state, so it does not
start blind. When a process dies, the parent says "gone" on its behalf (announce_gone): its
siblings stop counting on it (its connections, its room for a passed connection) at once instead
of when its successor says hello, 1-30 s later.

Lost messages are repaired by resending state (on_resync), from a thread of the channel's own:
to a sibling that says hello; after a message to a sibling was dropped (its queue was full), at
most once per _RESYNC_GAP until all of it got through; and, for the components that ask for
it, to every sibling each _RESYNC_EVERY, in case a loss went unnoticed. What is resent must be
safe to receive twice: the address ledger's counts are absolute and stamped, and a complete
snapshot replaces what the receiver held for the sender (AddressLedger); blocks are "blocked
until", and address failures are their times, merged as a set, so a failure resent is not
counted again (AuthService).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import secrets
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger("gximap.siblings")

Handler = Callable[[int, dict[str, Any]], None]
FdHandler = Callable[[int, dict[str, Any], list[int]], None]
Resync = Callable[[int], None]

_MAX_MESSAGE = 4096   # names and addresses are short; longer messages are never sent
_SEND_TIMEOUT = 0.05  # seconds a send may wait for room in a sibling's queue before it is dropped
_MAX_FDS = 4  # descriptors taken from one message; more are closed unread
# Bytes of the items a state message carries (chunks), leaving room for its other fields.
_STATE_BUDGET = _MAX_MESSAGE - 512
# Seconds at least between two resends of the state to a sibling after drops: one that keeps
# falling behind would otherwise be sent everything again at each message dropped.
_RESYNC_GAP = 1.0
# Seconds between the periodic snapshots (on_resync's ``periodic``): the repair of a loss that
# went unnoticed. An address ledger's snapshot is a datagram per hundred or so addresses.
_RESYNC_EVERY = 30.0


def share(total: int, count: int, index: int) -> int:
    """Process ``index``'s part of a total shared out among ``count`` processes (context_num,
    imap_thread_init_num, the MTA pools' context numbers): the parts add up to the total, the
    first ``total % count`` processes taking one more. A part may be 0 when the total is
    smaller than the count; the caller decides what that means (gximap.daemon.process_count
    has no more processes than context_num; a process with no share of an MTA pool leaves its
    listeners to the others)."""
    return total // count + (1 if index < total % count else 0)


class SiblingChannel:
    """Messages between the serving processes of one daemon (see the module docstring)."""

    def __init__(self, pairs: list[tuple[socket.socket, socket.socket]], secret: bytes | None = None) -> None:
        self._pairs = pairs  # per process: (sending end, receiving end)
        # Drawn once in the parent and inherited by every serving process: keys that must be
        # the same in all of them (the credential cache's HMAC key), unknown outside the daemon.
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.index = -1      # this process's index once attached; -1 in the parent
        self._handlers: dict[str, Handler] = {}
        self._fd_handlers: dict[str, FdHandler] = {}
        # Kinds every component may want ("hello": a sibling (re)started; "gone": it died).
        self._fanned: dict[str, list[Handler]] = {"hello": [], "gone": []}
        # Descriptors queued for this process's predecessor (connections a sibling passed to it
        # just before it died): taken up once this process is ready (say_hello), not dropped.
        self._inherited: list[tuple[bytes, list[int]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._dropped = 0
        # Siblings a send timed out on (stopped, hung, or dead and not yet restarted): sent to
        # without waiting until their queue has room again. Every connection opened and closed
        # sends a message, from the thread that accepts connections; waiting _SEND_TIMEOUT each
        # time held a process at 15-25 sessions a second while its sibling was stopped.
        self._stalled: set[int] = set()
        # Resending state (see the module docstring), on the thread _resync_loop runs in. The
        # condition guards _stalled's changes too: a drop and the end of a stall must not cross.
        self._resyncs: list[tuple[Resync, bool]] = []  # (handler, periodic too)
        self._sync = threading.Condition()
        self._resync_due: dict[int, float] = {}  # sibling -> when its state is to be sent again
        self._resynced_at: dict[int, float] = {}
        self._resync_thread: threading.Thread | None = None

    @classmethod
    def create(cls, count: int) -> SiblingChannel:
        pairs = []
        for _ in range(count):
            sending, receiving = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            # Non-blocking, not a socket timeout: with one, Python waits for room before every
            # send, MSG_DONTWAIT or not. The wait for room is _send_waiting's, where wanted.
            sending.setblocking(False)
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
        # Set before the receiving thread starts, so before any message is read. A "hello" is
        # fanned out by _on_hello, which then has this process's state sent to the newcomer.
        self._handlers["gone"] = functools.partial(_fan_out, self._fanned["gone"])
        self._handlers["hello"] = self._on_hello
        self._discard_queued()
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._receive_loop, name="gximap-siblings", daemon=True)
        self._thread.start()
        self._resync_thread = threading.Thread(target=self._resync_loop, name="gximap-siblings-sync",
                                               daemon=True)
        self._resync_thread.start()

    def _discard_queued(self) -> None:
        """Drop what was sent to this process's predecessor and never read (it died, or this is
        a restart): a count it would have taken back later (an address's "+1" whose "-1" was
        dropped, its queue being full) would otherwise stay for good. Siblings send their state
        again when this process says hello. Descriptors are kept for say_hello: a connection
        passed to the predecessor in the moment before its siblings learnt it was gone has a
        client waiting for its greeting, which this process can give."""
        receiving = self._pairs[self.index][1]
        receiving.setblocking(False)
        discarded = 0
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(receiving, _MAX_MESSAGE, _MAX_FDS)
            except OSError:   # BlockingIOError: nothing (more) queued
                break
            if fds:
                self._inherited.append((data, fds))
            else:
                discarded += 1
        if discarded:
            log.debug("process %d: %d messages to its predecessor discarded", self.index + 1, discarded)

    def say_hello(self) -> None:
        """Announce this process to its siblings, once every component has registered; then
        take up the descriptors passed to its predecessor (_discard_queued)."""
        self.send("hello")
        inherited, self._inherited = self._inherited, []
        for data, fds in inherited:
            self._dispatch(data, fds)

    def announce_gone(self, index: int) -> None:
        """In the parent: tell the other processes that process ``index`` died. Said in its
        name, as if it had said it itself; never waits (a full queue drops it, and the
        successor's hello still comes)."""
        data = self._encode_as(index, "gone", {})
        if data is None:
            return
        for other, (sending, _receiving) in enumerate(self._pairs):
            if other == index:
                continue
            try:
                sending.send(data, socket.MSG_DONTWAIT)
            except OSError as exc:
                log.debug("cannot tell process %d that process %d is gone: %s", other + 1, index + 1, exc)

    def on_gone(self, handler: Handler) -> None:
        """Call ``handler(sender_index, message)`` when a sibling dies (announce_gone)."""
        self._fanned["gone"].append(handler)

    def on_hello(self, handler: Handler) -> None:
        """Call ``handler(sender_index, message)`` when a sibling (re)starts."""
        self._fanned["hello"].append(handler)

    def on_resync(self, handler: Resync, *, periodic: bool = False) -> None:
        """Call ``handler(sibling_index)`` (on the channel's resync thread) when that sibling is
        to be sent this component's state again: it said hello, or messages to it were dropped;
        with ``periodic``, also every _RESYNC_EVERY seconds. The handler sends with
        send_state_to."""
        self._resyncs.append((handler, periodic))

    def on(self, kind: str, handler: Handler) -> None:
        """Call ``handler(sender_index, message)`` for every message of ``kind`` from a sibling."""
        self._handlers[kind] = handler

    def on_fds(self, kind: str, handler: FdHandler) -> None:
        """Call ``handler(sender_index, message, fds)`` for every message of ``kind`` from a
        sibling; the handler owns the descriptors (it must close those it does not keep)."""
        self._fd_handlers[kind] = handler

    def send_fds(self, index: int, kind: str, fds: list[int], **fields: Any) -> bool:
        """Pass ``fds`` (duplicates of them: the caller still closes its own) to sibling
        ``index`` alone. Never waits: False when its queue is full or it is not there."""
        return self._send_one(index, kind, fds, fields)

    def send_to(self, index: int, kind: str, **fields: Any) -> bool:
        """Tell sibling ``index`` alone. Never waits: False when its queue is full or it is not there."""
        return self._send_one(index, kind, [], fields)

    def _send_one(self, index: int, kind: str, fds: list[int], fields: dict[str, Any]) -> bool:
        if self.index < 0 or self._closed or index == self.index or not 0 <= index < len(self._pairs):
            return False
        data = self._encode(kind, fields)
        if data is None:
            return False
        try:
            if fds:
                socket.send_fds(self._pairs[index][0], [data], fds, socket.MSG_DONTWAIT)
            else:
                self._pairs[index][0].send(data, socket.MSG_DONTWAIT)
        except OSError as exc:
            log.debug("cannot send %s to process %d: %s", kind, index + 1, exc)
            return False
        return True

    def send(self, kind: str, **fields: Any) -> None:
        """Tell every sibling (never blocks for long; a full queue drops the message, and the
        sibling is sent the state again: on_resync)."""
        if self.index < 0 or self._closed:
            return
        data = self._encode(kind, fields)
        if data is None:
            return
        for index in range(len(self._pairs)):
            if index != self.index:
                self._deliver(index, data)

    def send_state_to(self, index: int, kind: str, **fields: Any) -> bool:
        """Tell sibling ``index`` alone, as send tells each (waiting a little for room unless it
        is stalled); for on_resync handlers. False when the message was dropped."""
        if self.index < 0 or self._closed or index == self.index or not 0 <= index < len(self._pairs):
            return False
        data = self._encode(kind, fields)
        return data is not None and self._deliver(index, data)

    def _deliver(self, index: int, data: bytes) -> bool:
        sending = self._pairs[index][0]
        try:
            if index in self._stalled:
                sending.send(data)   # no wait: its queue was full a moment ago
                with self._sync:
                    self._stalled.discard(index)   # it reads again
            else:
                _send_waiting(sending, data)   # a burst is kept, not dropped
        except OSError as exc:   # TimeoutError, BlockingIOError among them
            self._dropped_to(index)
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("process %d is not reading its messages (%s); %d dropped so far",
                            index + 1, exc, self._dropped)
            return False
        return True

    def _dropped_to(self, index: int) -> None:
        """A message to sibling ``index`` was dropped: it is stalled, and it is sent the state
        again _RESYNC_GAP after the last time at the earliest. That resync is also what finds
        out that it reads again (no other message may come); while it does not, it is tried
        again each _RESYNC_GAP, one send that fails at once."""
        with self._sync:
            self._stalled.add(index)
            if index not in self._resync_due:
                self._resync_due[index] = self._resynced_at.get(index, float("-inf")) + _RESYNC_GAP
                self._sync.notify()

    def _on_hello(self, sender: int, message: dict[str, Any]) -> None:
        """A sibling (re)started: its siblings forget its predecessor (the hello handlers), then
        send it their state at once."""
        _fan_out(self._fanned["hello"], sender, message)
        with self._sync:
            self._resync_due[sender] = time.monotonic()
            self._sync.notify()

    def _resync_loop(self) -> None:
        """Send the state again where due (see on_resync); on its own thread, so that receiving
        goes on meanwhile: two siblings sending each other their state from their receiving
        threads would each wait for the other to read."""
        next_round = time.monotonic() + _RESYNC_EVERY
        while True:
            with self._sync:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    due = [index for index, when in self._resync_due.items() if when <= now]
                    periodic = now >= next_round
                    if due or periodic:
                        break
                    self._sync.wait(min([next_round, *self._resync_due.values()]) - now)
                for index in due:
                    del self._resync_due[index]
                    self._resynced_at[index] = now
            if periodic:
                next_round = now + _RESYNC_EVERY
            for index in range(len(self._pairs)):
                if index != self.index and (index in due or periodic):
                    self._resync(index, everything=index in due)

    def _resync(self, index: int, *, everything: bool) -> None:
        for handler, periodic in self._resyncs:
            if everything or periodic:
                try:
                    handler(index)
                except Exception:
                    log.error("sending state to process %d failed", index + 1, exc_info=True)

    def _encode(self, kind: str, fields: dict[str, Any]) -> bytes | None:
        """The datagram of a message; None (logged) when it would be too long."""
        return self._encode_as(self.index, kind, fields)

    @staticmethod
    def _encode_as(sender: int, kind: str, fields: dict[str, Any]) -> bytes | None:
        data = json.dumps({"from": sender, "kind": kind, **fields}, separators=(",", ":")).encode()
        if len(data) > _MAX_MESSAGE:
            log.debug("sibling message too long, not sent: %s", kind)
            return None
        return data

    def close(self) -> None:
        """Stop receiving (the sockets stay open: the parent owns them)."""
        with self._sync:
            self._closed = True
            self._sync.notify()
        inherited, self._inherited = self._inherited, []
        for _data, fds in inherited:
            _close_fds(fds)
        if self._resync_thread is not None:
            self._resync_thread.join(5.0)
            self._resync_thread = None
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
        receiving = self._pairs[self.index][1]   # non-blocking since _discard_queued
        while not self._closed:
            try:
                watched: list[socket.socket | int] = [receiving, self._stop_read]
                readable, _, _ = select.select(watched, [], [])
                if self._stop_read in readable:
                    return
                data, fds, _flags, _address = socket.recv_fds(receiving, _MAX_MESSAGE, _MAX_FDS)
            except BlockingIOError:
                continue
            except OSError as exc:
                log.error("sibling channel closed: %s", exc)
                return
            self._dispatch(data, fds)

    def _dispatch(self, data: bytes, fds: list[int]) -> None:
        """Run the handler of one received message; descriptors no handler took are closed."""
        try:
            message = json.loads(data)
            sender = int(message["from"])
            kind = str(message["kind"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed sibling message ignored")
            _close_fds(fds)
            return
        if sender == self.index:
            _close_fds(fds)
            return
        fd_handler = self._fd_handlers.get(kind) if fds else None
        if fd_handler is None:
            _close_fds(fds)
        handler = self._handlers.get(kind)
        try:
            if fd_handler is not None:
                fd_handler(sender, message, fds)
            elif handler is not None:
                handler(sender, message)
        except Exception:
            log.error("sibling message %s failed", kind, exc_info=True)


def _fan_out(handlers: list[Handler], sender: int, message: dict[str, Any]) -> None:
    for handler in handlers:
        handler(sender, message)


def _send_waiting(sock: socket.socket, data: bytes) -> None:
    """Send on the non-blocking ``sock``, waiting up to _SEND_TIMEOUT for room in the peer's
    queue (TimeoutError past that)."""
    try:
        sock.send(data)
        return
    except BlockingIOError:
        pass
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    if not poller.poll(_SEND_TIMEOUT * 1000):
        raise TimeoutError("no room in the queue")
    sock.send(data)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def chunks(items: Iterable[Any], budget: int = _STATE_BUDGET) -> Iterator[list[Any]]:
    """State sent in messages small enough for the datagram limit: ``items`` (JSON values) in
    runs of at most ``budget`` bytes of JSON each. An item longer than that alone is left out
    (logged): it could not be sent at all. Lazy: a sender that stops at a dropped part (its
    sibling does not read, and is tried again each _RESYNC_GAP) has not sized the rest."""
    part: list[Any] = []
    used = 0
    for item in items:
        size = len(json.dumps(item, separators=(",", ":"))) + 1
        if size > budget:
            log.debug("sibling state item too long, not sent: %.60r", item)
            continue
        if used + size > budget:
            yield part
            part, used = [], 0
        part.append(item)
        used += size
    if part:
        yield part


@dataclasses.dataclass
class _Reported:
    """What one sibling process told an AddressLedger of its connections.

    Its messages carry absolute counts stamped with a serial number the sender draws under its
    lock (AddressLedger._serial), not changes: a count that arrives late (sent after the sender's
    lock was released, overtaken by a later one or by a snapshot that already holds it) is
    recognised as old by its stamp and ignored, and none is ever added twice. A snapshot's
    counts are stamped with the serial it was taken at; once all of its parts have arrived, the
    addresses it does not name and that no later message named are dropped: it replaces what
    was known of the sender up to its serial."""

    epoch: int  # the sender's incarnation: a restarted process starts its serials over
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    # The stamp of each address told of since the last complete snapshot (an address whose
    # count fell to 0 included, so that an older count of it that arrives late is refused).
    stamps: dict[str, int] = dataclasses.field(default_factory=dict)
    floor: int = 0  # the last complete snapshot's serial: the stamp of every address not in stamps
    snapshot: int = -1  # the snapshot whose parts are arriving
    parts: set[int] = dataclasses.field(default_factory=set)
    named: set[str] = dataclasses.field(default_factory=set)

    def stamp(self, key: str) -> int:
        return self.stamps.get(key, self.floor)

    def put(self, key: str, count: int, serial: int) -> None:
        self.stamps[key] = serial
        if count > 0:
            self.counts[key] = count
        else:
            self.counts.pop(key, None)

    def replace_up_to(self, serial: int) -> None:
        """The snapshot of ``serial`` arrived whole: it is all there was to know up to then."""
        for key in list(self.counts):
            if key not in self.named and self.stamp(key) <= serial:
                del self.counts[key]
        self.stamps = {key: stamp for key, stamp in self.stamps.items() if stamp > serial}
        self.floor = serial
        self.snapshot = -1
        self.parts.clear()
        self.named.clear()


class AddressLedger:
    """Connections per client address, for imap_max_conn_per_ip (or per other keys, in a ledger
    of another ``name``: gximap.session.userlimit's, for imap_max_conn_per_user_ip): this
    process's own and, with a sibling channel, those the sibling processes reported
    (_Reported). Each change is sent to
    the siblings as the address's new count; a snapshot of all counts replaces the receiver's
    view of this process when a sibling (re)starts, after messages to it were dropped, and every
    _RESYNC_EVERY seconds (SiblingChannel.on_resync).

    Across processes the limit is approximate: two processes admitting a connection from the same
    address at the same instant may both see room for it."""

    def __init__(self, channel: SiblingChannel | None = None, *, name: str = "imap") -> None:
        self._lock = threading.Lock()
        self._own: dict[str, int] = {}
        self._serial = 0  # changes to _own so far: the stamp of the counts sent
        self._snapshots = 0
        # Tells a restarted process's messages from its predecessor's (a lost hello or "gone"
        # would otherwise leave the predecessor's stamps refusing the successor's counts).
        self._epoch = secrets.randbits(52)
        self._siblings: dict[int, _Reported] = {}
        self._channel = channel
        self._kind = f"conn-{name}"
        if channel is not None:
            channel.on(self._kind, self._on_sibling_count)
            channel.on(f"{self._kind}-state", self._on_sibling_state)
            channel.on_hello(self._on_sibling_gone)   # what its predecessor held went with it
            channel.on_gone(self._on_sibling_gone)
            channel.on_resync(self._send_snapshot, periodic=True)

    def acquire(self, key: str, limit: int) -> bool:
        """Count a connection from ``key``; False (and nothing counted) when ``limit`` (> 0) is
        reached across all processes."""
        with self._lock:
            if limit > 0 and self._total_locked(key) >= limit:
                return False
            count = self._own[key] = self._own.get(key, 0) + 1
            self._serial += 1
            serial = self._serial
        self._tell(key, count, serial)
        return True

    def release(self, key: str) -> None:
        with self._lock:
            count = max(self._own.get(key, 0) - 1, 0)
            if count:
                self._own[key] = count
            else:
                self._own.pop(key, None)
            self._serial += 1
            serial = self._serial
        self._tell(key, count, serial)

    def _tell(self, key: str, count: int, serial: int) -> None:
        # Outside the lock: a send may wait _SEND_TIMEOUT for room. The stamp puts it in order.
        if self._channel is not None:
            self._channel.send(self._kind, epoch=self._epoch, key=key, count=count, serial=serial)

    def count(self, key: str) -> int:
        """Connections from ``key`` in every process (as far as this one knows)."""
        with self._lock:
            return self._total_locked(key)

    def sibling_loads(self) -> dict[int, int]:
        """Connections each sibling process holds, as far as this one knows (0 for one that
        reported none); empty without a channel."""
        channel = self._channel
        if channel is None:
            return {}
        with self._lock:
            loads = {index: sum(reported.counts.values()) for index, reported in self._siblings.items()}
        return {index: loads.get(index, 0) for index in range(channel.count) if index != channel.index}

    def _total_locked(self, key: str) -> int:
        return self._own.get(key, 0) + sum(reported.counts.get(key, 0) for reported in self._siblings.values())

    def _reported_locked(self, sender: int, message: dict[str, Any]) -> _Reported:
        epoch = int(message.get("epoch", 0))
        reported = self._siblings.get(sender)
        if reported is None or reported.epoch != epoch:
            # The first word of this sender, or of its successor (all of its predecessor's
            # messages came before, on the same queue).
            reported = self._siblings[sender] = _Reported(epoch)
        return reported

    def _on_sibling_count(self, sender: int, message: dict[str, Any]) -> None:
        key = str(message.get("key", ""))
        count, serial = int(message.get("count", 0)), int(message.get("serial", 0))
        with self._lock:
            reported = self._reported_locked(sender, message)
            if serial > reported.stamp(key):
                reported.put(key, count, serial)

    def _on_sibling_state(self, sender: int, message: dict[str, Any]) -> None:
        counts = message.get("counts", {})
        snapshot, serial = int(message.get("snapshot", 0)), int(message.get("serial", 0))
        with self._lock:
            reported = self._reported_locked(sender, message)
            if serial < reported.floor:
                return  # older than the last snapshot taken whole (never so in order)
            if reported.snapshot != snapshot:  # the previous one lost a part: it stays partial
                reported.snapshot = snapshot
                reported.parts.clear()
                reported.named.clear()
            for key, count in counts.items():
                key = str(key)
                reported.named.add(key)
                if serial >= reported.stamp(key):
                    reported.put(key, int(count), serial)
            reported.parts.add(int(message.get("part", 0)))
            if len(reported.parts) >= int(message.get("parts", 1)):
                reported.replace_up_to(serial)

    def _on_sibling_gone(self, sender: int, message: dict[str, Any]) -> None:
        with self._lock:
            self._siblings.pop(sender, None)  # its connections went with it

    def _send_snapshot(self, index: int) -> None:
        """Tell sibling ``index`` every count of this process (SiblingChannel.on_resync); it
        replaces what the sibling held for this process once all parts arrived."""
        assert self._channel is not None
        with self._lock:
            items = list(self._own.items())
            serial = self._serial
            self._snapshots += 1
            snapshot = self._snapshots
        parts = list(chunks(items)) or [[]]   # no connections: one empty part says so
        for number, part in enumerate(parts):
            if not self._channel.send_state_to(index, f"{self._kind}-state", epoch=self._epoch,
                                               snapshot=snapshot, serial=serial, part=number,
                                               parts=len(parts), counts=dict(part)):
                return  # the rest would not make it whole; the drop has it sent again later


Adopter = Callable[[socket.socket, int, frozenset[int], Callable[[], None]], None]

# Seconds after which a connection passed to a sibling stops counting against its room when the
# sibling's word that it took it never came (a message dropped from a full queue).
_TAKEN_WITHIN = 5.0


class ConnectionHandoff:
    """A connection accepted by a process whose contexts are all taken, passed to the sibling
    with the most room instead of being refused busy.

    A full process stops watching the shared listeners (gximap.net.pool, _SIBLING_GRACE), but a
    connection can still reach it: while it fills up, or when no sibling took one within the
    grace because they were busy (a 10,000-session ramp refused 1-2 that way with room in the
    siblings). The socket goes over the sibling channel (SCM_RIGHTS) with the index of the
    listener it came from; the receiving process admits it as if it had accepted it itself,
    or holds it if it filled up meanwhile. It may pass it on in turn, but only to a process it
    has not been in (``visited``, sent along): no ping-pong, and with three or more processes
    the one that can make room for it is found even when another was asked first.
    Which sibling has room comes from the AddressLedger's counts against each process's context
    share (share; they differ by one at most), plus the connections passed to it that it has not
    yet said it took: the ledger learns of a passed connection only once the sibling admitted it, so a
    burst passed on within that time would otherwise all go to the same sibling, past its room.
    The sibling says "taken" after admitting (its ledger message goes first, on the same queue),
    so the two counts never hold the same connection twice for long.
    Only a sibling known to be up is offered one: it said hello (and so has its handoff
    registered), or answered ours with "up", and no "gone" came since. A connection passed to
    a process still starting, or dead and not yet restarted, would wait seconds for it."""

    def __init__(self, channel: SiblingChannel, ledger: AddressLedger, *, name: str = "imap",
                 contexts: int | None = None) -> None:
        self._channel = channel
        self._ledger = ledger
        # The total of contexts shared out among the processes (share), whose parts differ by
        # one: a sibling's room is judged by its own part. None: every part taken as equal.
        self._contexts = contexts
        self._kind = f"handoff-{name}"
        self._adopter: Adopter | None = None
        self._lock = threading.Lock()
        self._untaken: dict[int, deque[float]] = {}  # sibling -> when each unconfirmed pass was sent
        self._turn = 0  # offers so far: siblings equally loaded take turns
        self._up: set[int] = set()  # siblings ready to take a connection (see the class docstring)
        channel.on_fds(self._kind, self._on_connection)
        channel.on(f"{self._kind}-taken", self._on_taken)
        channel.on(f"{self._kind}-up", self._on_sibling_up)
        channel.on_hello(self._on_sibling_hello)
        channel.on_gone(self._on_sibling_gone)

    def adopt_with(self, adopter: Adopter) -> None:
        """``adopter(sock, listener_index, visited, taken)`` takes each connection a sibling
        passes here (on the channel's thread: it must only queue it) and calls ``taken()`` once
        it admitted, held or dropped it. ``visited``: the processes it was in before, this one
        excluded (the sender among them)."""
        self._adopter = adopter

    def offer(self, sock: socket.socket, listener_index: int, capacity: int, *,
              visited: frozenset[int] = frozenset()) -> int | None:
        """Pass ``sock`` to the sibling with the most room, not one in ``visited`` (processes it
        was passed through); the sibling's index, or None (no sibling with room, or it could not
        be reached). ``capacity``: the connections this process takes (its share of contexts),
        a sibling's being more or less by as much as its share is. The caller closes its own
        ``sock`` either way once it is passed."""
        loads = self._ledger.sibling_loads()  # its own lock, not taken under this one
        now = time.monotonic()
        with self._lock:
            loads = {index: load for index, load in loads.items() if index not in visited and index in self._up}
            for index in loads:
                loads[index] += self._untaken_locked(index, now)
        # Among equal loads the turn rotates: every sibling full, a process passing connections
        # on (for one of them to make room) would otherwise always pick the same one.
        # The turn counts places in the siblings' order, not process indices (which skip this
        # process's own, so that two of them could always tie). It moves only when there is a
        # choice: an arrival first offered to a sibling with room (none) and then to a full one
        # moved it twice, so that with two siblings it always came back to the same one.
        rooms = {index: capacity + self._share_over_own(index) - load for index, load in loads.items()}
        candidates = [index for index, room in rooms.items() if room > 0]
        if not candidates:
            return None
        self._turn += 1
        place = {index: position for position, index in enumerate(sorted(loads))}
        turn, count = self._turn, max(len(place), 1)
        for index in sorted(candidates, key=lambda index: (-rooms[index], (place[index] - turn) % count)):
            with self._lock:  # counted before it is sent: the sibling's "taken" may come back at once
                self._untaken.setdefault(index, deque()).append(now)
            if self._channel.send_fds(index, self._kind, [sock.fileno()], listener=listener_index,
                                      visited=sorted(visited)):
                return index
            with self._lock:
                self._untaken[index].pop()
        return None

    def _share_over_own(self, index: int) -> int:
        """How many contexts more (or fewer) sibling ``index`` has than this process."""
        channel = self._channel
        if self._contexts is None or channel.index < 0:
            return 0
        return share(self._contexts, channel.count, index) - share(self._contexts, channel.count, channel.index)

    def untaken(self, index: int) -> int:
        """Connections passed to sibling ``index`` that it has not yet said it took."""
        with self._lock:
            return self._untaken_locked(index, time.monotonic())

    def _untaken_locked(self, index: int, now: float) -> int:
        sent = self._untaken.get(index)
        if not sent:
            return 0
        while sent and now - sent[0] > _TAKEN_WITHIN:
            sent.popleft()
        return len(sent)

    def _on_taken(self, sender: int, message: dict[str, Any]) -> None:
        with self._lock:
            sent = self._untaken.get(sender)
            if sent:
                sent.popleft()

    def _on_sibling_hello(self, sender: int, message: dict[str, Any]) -> None:
        with self._lock:
            self._untaken.pop(sender, None)  # its predecessor's connections went with it
            self._up.add(sender)
        self._channel.send_to(sender, f"{self._kind}-up")  # the newcomer learns that this one is up

    def _on_sibling_up(self, sender: int, message: dict[str, Any]) -> None:
        with self._lock:
            self._up.add(sender)

    def _on_sibling_gone(self, sender: int, message: dict[str, Any]) -> None:
        with self._lock:
            self._up.discard(sender)
            self._untaken.pop(sender, None)

    def siblings_up(self) -> set[int]:
        """The siblings that can be offered a connection now."""
        with self._lock:
            return set(self._up)

    def _on_connection(self, sender: int, message: dict[str, Any], fds: list[int]) -> None:
        def taken() -> None:
            self._channel.send_to(sender, f"{self._kind}-taken")

        adopter = self._adopter
        listener_index = message.get("listener")
        named = message.get("visited")
        visited = frozenset(index for index in named if isinstance(index, int)) if isinstance(named, list) else frozenset()
        visited |= {sender}
        sock = None
        if adopter is not None and len(fds) == 1 and isinstance(listener_index, int):
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=fds[0])
        if sock is None:
            _close_fds(fds)
            taken()
            return
        assert adopter is not None and isinstance(listener_index, int)  # a socket only then
        log.debug("connection passed on by process %d", sender + 1)
        adopter(sock, listener_index, visited, taken)
