"""Change notifications: in-process callbacks and unix datagrams between processes.

Every committed change yields (account id, folder id, highest modseq) events. They are delivered
 * in this process: inline, by the committing thread, right after the commit (no midb lock held);
 * to other processes: as one small datagram per commit to every socket in <run_dir>/notify/.
A process binds its socket (<pid>-<random>.sock) only once something watches, and runs one daemon
thread blocked in recv() -- no polling.

Datagrams are sent non-blocking and dropped when a receiver's queue is full (EAGAIN). That is safe
because a notification carries no state of its own: it only says "look again". A watcher re-reads the
store with changes_since(last modseq it saw), so the next notification (or the session's next
command) brings it fully up to date, however many notifications were lost before.

Only processes that watch an account hear about it. Beside its socket <name>.sock, a process keeps
an interest map <name>.want: one bit per account slot (account id modulo INTEREST_SLOTS), set while
it has a watcher on an account of that slot. A publisher reads its peers' maps (shared, read-only
mmaps) and sends a peer only the events of accounts it watches; a peer without a map (it could not
make one) gets everything. Two accounts sharing a slot only cost a spurious wake-up. Without this,
every commit woke every other process's receiver thread, which then fought the committing
process's workers for the GIL for nothing (10-client mixed load, one session per account: 7 % more
commands per second without the datagrams). No change is lost to the filter: a watcher's bit is
set before watch() returns, so before its session next reads the store; a publisher reads the
bit after its commit. A publisher that saw the bit clear therefore committed before the watcher
read the store, and that read sees the change. The same goes for a process that has just joined:
it rewrites the join mark (JOINED) once its socket is bound, before watch() returns, and a
publisher lists the directory again when the mark changed (Notifier._peers).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import mmap
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

from midb.env import SharedEnv

log = logging.getLogger(__name__)

Callback = Callable[[str, int, int], None]

MAGIC = b"MDBN"
STOP = b"MDBX"
HELLO = b"MDBH"                        # "I have just bound my socket": receivers refresh their peer list
EVENT = struct.Struct(">IIQ")          # account id, folder id, highest modseq
MAX_EVENTS_PER_DATAGRAM = 256
# An event whose modseq field has this bit set is a notice, not a message change: it names what
# else changed in the account (the low bits), for IMAP NOTIFY (RFC 5465). Folder ids start at 1,
# so folder id 0 stands for the account as a whole. Watchers that only follow messages skip them.
NOTICE = 1 << 63
NOTICE_SUBSCRIPTIONS = NOTICE | 1   # folder id 0: the account's subscriptions changed
NOTICE_METADATA = NOTICE | 2        # the folder's annotations changed (folder id 0: the server's)
# Folder id 0: RENAME INBOX moved INBOX's messages into a new folder (RFC 3501 section 6.3.5), whose
# id is the low 32 bits. That folder is new to the store but INBOX renamed to the client, which
# NOTIFY says with OLDNAME (RFC 5465 section 5.4). (Account-wide like NOTICE_SUBSCRIPTIONS, whose
# place it would take in a commit that had both: no RENAME INBOX changes a subscription.)
NOTICE_INBOX_RENAMED = NOTICE | (1 << 32)
_FOLDER_ID_BITS = (1 << 32) - 1

SOCKET_SUFFIX = ".sock"
INTEREST_SUFFIX = ".want"
INTEREST_SLOTS = 1 << 16   # bits of an interest map (8 KiB): account ids below this never share a slot
# sun_path holds 108 bytes; longer paths are reached through /proc/self/fd/<dirfd>/<name>.
MAX_SUN_PATH = 100
RECV_BUFFER = 1 << 20
PEER_REFRESH = 1.0   # seconds a listing of the notify directory is trusted (see Notifier._peers)
# The join mark: 8 bytes that a process rewrites (at random) each time it binds its socket, so that
# a publisher knows, without a system call, whether its listing of the peers still holds.
JOINED = "joined"
JOINED_SIZE = 8
# Seconds after which a directory's mtime cannot be given again to a later change in it, whatever
# the filesystem's timestamp granularity (1 or 2 s on some) and the lag of the kernel's coarse
# clock: a miss of the join mark seen under an older mtime holds while the mtime stays.
MTIME_SETTLED = 3.0


def is_notice(modseq: int) -> bool:
    """Whether an event's modseq field is a notice (NOTICE), not a folder's highest modseq."""
    return bool(modseq & NOTICE)


def inbox_renamed_notice(folder_id: int) -> int:
    """The notice that INBOX's messages moved into folder ``folder_id`` (NOTICE_INBOX_RENAMED)."""
    return NOTICE_INBOX_RENAMED | folder_id


def inbox_renamed_to(modseq: int) -> int | None:
    """The folder a NOTICE_INBOX_RENAMED names; None for any other event."""
    if modseq & ~_FOLDER_ID_BITS == NOTICE_INBOX_RENAMED:
        return modseq & _FOLDER_ID_BITS
    return None


class WatchHandle:
    """Returned by Store.watch(); cancel() stops the callbacks (idempotent)."""

    def __init__(self, notifier: Notifier, account_id: int, token: int) -> None:
        self._notifier = notifier
        self._account_id = account_id
        self._token = token
        self._cancelled = False

    @property
    def active(self) -> bool:
        return not self._cancelled

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._notifier._unwatch(self._account_id, self._token)

    def __enter__(self) -> WatchHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Notifier:
    """Watchers and the notification socket of one run directory in this process."""

    def __init__(self, run_dir: str) -> None:
        self.notify_dir = os.path.join(run_dir, "notify")
        self.refs = 0
        self._lock = threading.Lock()
        self._watchers: dict[int, dict[int, tuple[str, Callback]]] = {}
        self._tokens = itertools.count(1)
        self._receiver: socket.socket | None = None
        self._receiver_name: str | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._sender: socket.socket | None = None
        self._dir_fd: int | None = None
        # (dir mtime, listed at, names, the join mark read before the listing, or None)
        self._peer_cache: tuple[int, float, list[str], bytes | None] | None = None
        self._joined: mmap.mmap | None = None   # the join mark, mapped read-only (_join_mark)
        self._joined_missing: int | None = None   # the notify dir's mtime when the mark was not there
        self._interest: _OwnInterest | None = None   # our interest map (see the module doc)
        self._slot_accounts: dict[int, int] = {}    # slot -> watched accounts in it
        # Peers' interest maps by socket name; None: the peer has none, so it gets every event.
        self._peer_interest: dict[str, mmap.mmap | None] = {}
        self._peer_interest_lock = threading.Lock()

    # ---- watching -------------------------------------------------------------------------------

    def watch(self, account_id: int, account_name: str, callback: Callback) -> WatchHandle:
        if not callable(callback):
            raise TypeError("callback must be callable")
        with self._lock:
            if self._closing:
                raise RuntimeError("notifier closed")
            token = next(self._tokens)
            callbacks = self._watchers.setdefault(account_id, {})
            callbacks[token] = (account_name, callback)
            if len(callbacks) == 1:
                self._mark_interest(account_id, True)
            if self._receiver is None:
                try:
                    self._start_receiver()
                except OSError as error:
                    # In-process callbacks still work; other processes' changes are then seen at the
                    # session's next command only.
                    log.warning("cannot bind notification socket in %s: %s", self.notify_dir, error)
        return WatchHandle(self, account_id, token)

    def _unwatch(self, account_id: int, token: int) -> None:
        with self._lock:
            callbacks = self._watchers.get(account_id)
            if callbacks is not None:
                callbacks.pop(token, None)
                if not callbacks:
                    del self._watchers[account_id]
                    self._mark_interest(account_id, False)

    def _mark_interest(self, account_id: int, watched: bool) -> None:
        """Count a watched account in its slot and keep the slot's bit in our interest map current
        (caller holds self._lock). Before the receiver exists there is no map yet: it is made
        from the counts (_start_receiver)."""
        slot = account_id % INTEREST_SLOTS
        count = self._slot_accounts.get(slot, 0) + (1 if watched else -1)
        if count > 0:
            self._slot_accounts[slot] = count
        else:
            self._slot_accounts.pop(slot, None)
        interest = self._interest
        if interest is not None and count == (1 if watched else 0):
            index, mask = _slot_bit(slot)
            value = interest.bits[index]
            try:
                interest.put(index, value | mask if watched else value & ~mask & 0xFF)
            except OSError as error:
                # Only where a rewrite needs a new block (a copy-on-write filesystem that is
                # full): other processes may then skip this account's changes, which its
                # sessions see at their next command instead.
                log.error("cannot update the interest map in %s: %s", self.notify_dir, error)

    def watching(self) -> int:
        with self._lock:
            return sum(len(callbacks) for callbacks in self._watchers.values())

    # ---- publishing -----------------------------------------------------------------------------

    def publish(self, events: Iterable[tuple[int, int, int]], *, remote: bool = True) -> None:
        """Deliver committed changes: one datagram to each peer first (a few syscalls, keeps the
        cross-process latency independent of our callbacks), then the local callbacks."""
        events = list(events)
        if not events:
            return
        if remote:
            self._broadcast(events)
        self.dispatch(events)

    def dispatch(self, events: Iterable[tuple[int, int, int]]) -> None:
        """Call the local callbacks for these events (never while holding the notifier lock)."""
        calls: list[tuple[Callback, str, int, int]] = []
        with self._lock:
            for account_id, folder_id, modseq in events:
                for name, callback in (self._watchers.get(account_id) or {}).values():
                    calls.append((callback, name, folder_id, modseq))
        for callback, name, folder_id, modseq in calls:
            try:
                callback(name, folder_id, modseq)
            except Exception:
                log.exception("midb watch callback %r failed", callback)

    def _broadcast(self, events: list[tuple[int, int, int]]) -> None:
        peers = self._peers()
        if peers is None:
            return
        own = self._receiver_name
        peers = [name for name in peers if name != own]
        if not peers:
            return
        sender: socket.socket | None = None
        everything: list[bytes] | None = None
        for name in peers:
            interest = self._peer_interest_map(name)
            if interest is None:
                if everything is None:
                    everything = _datagrams(events)
                datagrams = everything
            else:
                wanted = [event for event in events if _interested(interest, event[0])]
                if not wanted:
                    continue
                datagrams = _datagrams(wanted)
            if sender is None:
                sender = self._sender_socket()
                if sender is None:
                    return
            address = self._address(name)
            for datagram in datagrams:
                try:
                    sender.sendto(datagram, address)
                except BlockingIOError:
                    break   # receiver behind: it catches up on its next notification (see module doc)
                except (ConnectionRefusedError, FileNotFoundError):
                    self._remove_stale(name)
                    break
                except OSError as error:
                    if error.errno in (errno.ENOBUFS, errno.EAGAIN):
                        break
                    log.debug("notify %s: %s", name, error)
                    break

    def _peers(self) -> list[str] | None:
        """The socket names in the notify directory, from a cache: every commit broadcasts, and a
        stat (let alone a listing) per commit is a system call that gives up the GIL on the
        commit's path. The cache is kept current by

        * the join mark (JOINED): a process that binds its socket rewrites it before its first
          watch() returns, so before its session reads the store; a publisher reads it (through
          a shared mapping: no system call) after its commit and lists the directory again when
          it changed. A process that joined and read the store before a commit is therefore
          always sent that commit's events. A hello alone did not ensure it: a peer whose
          receiver thread had not yet read it (busy, or the hello dropped from its full queue)
          trusted its old list for up to PEER_REFRESH, and a session of the newcomer in IDLE
          never heard of the change;
        * hellos: a process that binds its socket sends HELLO to the sockets it finds, and each
          receiver drops its cache (sooner than PEER_REFRESH where the join mark is missing);
        * send errors: ECONNREFUSED/ENOENT drop that peer (_remove_stale);
        * without a join mark (no process has joined yet, or none could write one): a stat per
          call, which also tells when the mark may have been made since it was found missing
          (_join_mark); then while we have a receiver, hellos alone; without one, a new listing
          when the directory's mtime moved or PEER_REFRESH passed (a change within the same
          coarse timestamp tick leaves the mtime as it was).
        """
        now = time.monotonic()
        mark = self._join_mark()   # before the listing: a join after it changes the mark
        cached = self._peer_cache
        fresh = cached is not None and now - cached[1] < PEER_REFRESH
        if cached is not None and fresh and mark is not None and cached[3] == mark:
            return cached[2]
        try:
            stamp = os.stat(self.notify_dir).st_mtime_ns
        except OSError:
            return None
        if mark is None:
            mark = self._join_mark(stamp)   # a mark just found is newer than the cache: list again
        if cached is not None and fresh and mark is None and (self._receiver is not None or cached[0] == stamp):
            return cached[2]
        try:
            names = [name for name in os.listdir(self.notify_dir) if name.endswith(SOCKET_SUFFIX)]
        except OSError:
            return None
        self._peer_cache = (stamp, now, names, mark)
        if self._peer_interest:
            listed = set(names)
            with self._peer_interest_lock:
                for gone in [name for name in self._peer_interest if name not in listed]:
                    del self._peer_interest[gone]   # unmapped once no sender holds it any more
        return names

    def _peer_interest_map(self, name: str) -> mmap.mmap | None:
        """The interest map of the peer bound as `name`, mapped read-only on first use; None when
        it has none (it then gets every event)."""
        try:
            return self._peer_interest[name]
        except KeyError:
            pass
        with self._peer_interest_lock:
            if name in self._peer_interest:
                return self._peer_interest[name]
            interest: mmap.mmap | None = None
            try:
                fd = os.open(os.path.join(self.notify_dir, _interest_name(name)), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
            else:
                try:
                    if os.fstat(fd).st_size >= INTEREST_SLOTS // 8:
                        interest = mmap.mmap(fd, INTEREST_SLOTS // 8, mmap.MAP_SHARED, mmap.PROT_READ)
                except (OSError, ValueError) as error:
                    log.debug("interest map of %s: %s", name, error)
                finally:
                    os.close(fd)
            self._peer_interest[name] = interest
            return interest

    def _join_mark(self, stamp: int | None = None) -> bytes | None:
        """The join mark's current value; None when there is none to read (no process has
        written one yet, or it cannot be mapped). Once mapped, read from memory. Mapping is
        tried only with ``stamp``, the notify directory's mtime just read (_peers stats it
        anyway while there is no mark): a mark found missing is not looked for again, an open
        per commit, until the directory changed, as making the mark changes it. Trusted only
        for an mtime MTIME_SETTLED old, which no later change can share."""
        joined = self._joined
        if joined is None:
            if stamp is None:
                return None
            with self._peer_interest_lock:
                if self._joined is None and stamp != self._joined_missing:
                    self._joined_missing = None
                    try:
                        self._joined = _map_join_mark(self.notify_dir)
                    except FileNotFoundError:
                        if time.time_ns() - stamp > MTIME_SETTLED * 1e9:
                            self._joined_missing = stamp
                joined = self._joined
            if joined is None:
                return None
        return joined[:JOINED_SIZE]

    def _mark_join(self) -> None:
        """Rewrite the join mark: we just bound our socket (see _peers). Caller holds self._lock."""
        try:
            fd = os.open(os.path.join(self.notify_dir, JOINED), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
            try:
                if os.pwrite(fd, secrets.token_bytes(JOINED_SIZE), 0) != JOINED_SIZE:
                    raise OSError(errno.ENOSPC, "short write")
            finally:
                os.close(fd)
        except OSError as error:
            # Peers then learn of us by our hello only: a change committed before one of them
            # read it may be missed here until the next notification or the session's next command.
            log.warning("cannot write the join mark in %s: %s", self.notify_dir, error)

    def _forget_peers(self) -> None:
        """A process joined (its HELLO arrived): list the directory again before the next send."""
        self._peer_cache = None

    def _remove_stale(self, name: str) -> None:
        # ECONNREFUSED: the socket file exists but nobody is bound to it -- its process is gone.
        # ENOENT: it closed and removed its socket. Either way, no more sends to it.
        cached = self._peer_cache
        if cached is not None and name in cached[2]:
            self._peer_cache = (cached[0], cached[1], [peer for peer in cached[2] if peer != name], cached[3])
        with self._peer_interest_lock:
            self._peer_interest.pop(name, None)
        _remove_files(self.notify_dir, name)

    def _sender_socket(self) -> socket.socket | None:
        if self._sender is None:
            with self._lock:
                if self._sender is None:
                    try:
                        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    except OSError as error:
                        log.warning("cannot create notification sender socket: %s", error)
                        return None
                    sender.setblocking(False)
                    self._sender = sender
        return self._sender

    def _address(self, name: str) -> str:
        full = os.path.join(self.notify_dir, name)
        if len(os.fsencode(full)) <= MAX_SUN_PATH:
            return full
        if self._dir_fd is None:
            with self._lock:
                return self._address_locked(name)
        return f"/proc/self/fd/{self._dir_fd}/{name}"

    def _address_locked(self, name: str) -> str:
        """_address for a caller holding self._lock."""
        full = os.path.join(self.notify_dir, name)
        if len(os.fsencode(full)) <= MAX_SUN_PATH:
            return full
        if self._dir_fd is None:
            self._dir_fd = os.open(self.notify_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self._dir_fd}/{name}"

    # ---- receiving ------------------------------------------------------------------------------

    def _start_receiver(self) -> None:
        """Bind our socket and start the receiver thread (caller holds self._lock)."""
        os.makedirs(self.notify_dir, mode=0o770, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}{SOCKET_SUFFIX}"
        # The map exists, complete, before the socket: a peer that sees the socket finds the map.
        try:
            self._interest = self._create_interest_map(name)
        except OSError as error:
            log.warning("no interest map in %s (every change will be sent here): %s", self.notify_dir, error)
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(OSError):
                receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            receiver.bind(self._address_locked(name))
        except BaseException:
            receiver.close()
            self._unmap_interest()
            _remove_files(self.notify_dir, name)
            raise
        self._receiver = receiver
        self._receiver_name = name
        self._peer_cache = None
        self._mark_join()   # bound, so a peer that lists the directory after reading the mark finds us
        self._greet_peers(receiver, name)
        self._thread = threading.Thread(target=self._receive_loop, args=(receiver,),
                                        name="midb-notify", daemon=True)
        self._thread.start()

    def _greet_peers(self, receiver: socket.socket, own: str) -> None:
        """Tell every process already here that we joined, so that their cached peer lists
        (Notifier._peers) include us from their next commit on. Best effort: a peer that misses
        it lists the directory again within PEER_REFRESH seconds. Caller holds self._lock."""
        try:
            names = [name for name in os.listdir(self.notify_dir) if name.endswith(SOCKET_SUFFIX)]
        except OSError:
            return
        for name in names:
            if name == own:
                continue
            try:
                receiver.sendto(HELLO, socket.MSG_DONTWAIT, self._address_locked(name))
            except (ConnectionRefusedError, FileNotFoundError):
                # Nobody bound there: a process that died without cleaning up. Its map may say it
                # watches nothing, and then no commit would ever send to it and find out.
                _remove_files(self.notify_dir, name)
            except OSError:
                pass   # queue full

    def _create_interest_map(self, name: str) -> _OwnInterest:
        """Our interest map, with the bits of the accounts already watched (caller holds self._lock).
        Written whole at once, so its blocks are allocated now: a full disk fails here, with
        an OSError, rather than at a later write."""
        path = os.path.join(self.notify_dir, _interest_name(name))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        bits = bytearray(INTEREST_SLOTS // 8)
        for slot in self._slot_accounts:
            index, mask = _slot_bit(slot)
            bits[index] |= mask
        try:
            if os.pwrite(fd, bits, 0) != len(bits):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return _OwnInterest(fd, bits)

    def _unmap_interest(self) -> None:
        """Close our interest map (caller holds self._lock); its file goes with _remove_files."""
        interest, self._interest = self._interest, None
        if interest is not None:
            interest.close()

    def _receive_loop(self, receiver: socket.socket) -> None:
        while True:
            try:
                data = receiver.recv(65536)
            except InterruptedError:
                continue
            except OSError:
                return
            if self._closing or data == STOP:
                return
            if data == HELLO:
                self._forget_peers()
                continue
            if not data.startswith(MAGIC) or (len(data) - len(MAGIC)) % EVENT.size:
                continue
            events = [event for event in EVENT.iter_unpack(data[len(MAGIC):])]
            try:
                self.dispatch(events)
            except Exception:   # never let the receiver thread die
                log.exception("midb notification dispatch failed")

    def close(self) -> None:
        with self._lock:
            self._closing = True
            receiver, self._receiver = self._receiver, None
            name, self._receiver_name = self._receiver_name, None
            thread, self._thread = self._thread, None
            self._watchers.clear()
            self._slot_accounts.clear()
        if receiver is not None and name is not None:
            try:
                waker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                try:
                    # Never blocking: the receiver may have left on seeing _closing with its queue
                    # full (peers kept sending), and a blocking send would then wait forever.
                    waker.sendto(STOP, socket.MSG_DONTWAIT, self._address(name))
                finally:
                    waker.close()
            except OSError:
                with contextlib.suppress(OSError):
                    receiver.shutdown(socket.SHUT_RDWR)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=2.0)
            receiver.close()
            with self._lock:
                self._unmap_interest()
            _remove_files(self.notify_dir, name)
        with self._peer_interest_lock:
            self._peer_interest.clear()
            joined, self._joined = self._joined, None
        if joined is not None:
            joined.close()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._dir_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._dir_fd)
            self._dir_fd = None


class _OwnInterest:
    """This process's interest map: a copy of its bits, and the file, written with pwrite. Never
    through a writable shared mapping: a write there that needs a block the filesystem cannot
    give (a full disk) kills the process with SIGBUS, every session with it; pwrite fails with
    an OSError instead. Peers read the file through read-only mappings, which stay coherent."""

    __slots__ = ("bits", "fd")

    def __init__(self, fd: int, bits: bytearray) -> None:
        self.fd = fd
        self.bits = bits

    def put(self, index: int, value: int) -> None:
        os.pwrite(self.fd, bytes((value,)), index)
        self.bits[index] = value

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _map_join_mark(notify_dir: str) -> mmap.mmap | None:
    """The join mark of ``notify_dir`` mapped read-only, or None (not yet written whole, not
    readable); FileNotFoundError: there is none."""
    try:
        fd = os.open(os.path.join(notify_dir, JOINED), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size < JOINED_SIZE:
            return None   # just created: tried again at the next call
        return mmap.mmap(fd, JOINED_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError) as error:
        log.debug("join mark in %s: %s", notify_dir, error)
        return None
    finally:
        os.close(fd)


def _interest_name(socket_name: str) -> str:
    return socket_name[:-len(SOCKET_SUFFIX)] + INTEREST_SUFFIX


def _slot_bit(account_id: int) -> tuple[int, int]:
    """Where an account's slot is in an interest map: byte index, bit mask."""
    slot = account_id % INTEREST_SLOTS
    return slot >> 3, 1 << (slot & 7)


def _interested(interest: mmap.mmap, account_id: int) -> bool:
    index, mask = _slot_bit(account_id)
    return bool(interest[index] & mask)


def _datagrams(events: list[tuple[int, int, int]]) -> list[bytes]:
    return [MAGIC + b"".join(EVENT.pack(*event) for event in events[start:start + MAX_EVENTS_PER_DATAGRAM])
            for start in range(0, len(events), MAX_EVENTS_PER_DATAGRAM)]


def _remove_files(notify_dir: str, socket_name: str) -> None:
    """Remove a process's socket file and its interest map (ours on close, or a gone peer's)."""
    for name in (socket_name, _interest_name(socket_name)):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(notify_dir, name))


def attach(shared: SharedEnv, run_dir: str) -> Notifier:
    """The process-wide Notifier for run_dir on this SharedEnv (reference counted)."""
    key = os.path.realpath(run_dir)
    lock = shared.notifiers_lock
    notifiers: dict[str, Notifier] = shared.notifiers
    with lock:
        notifier = notifiers.get(key)
        if notifier is None:
            notifier = Notifier(key)
            notifiers[key] = notifier
        notifier.refs += 1
        return notifier


def detach(shared: SharedEnv, notifier: Notifier) -> None:
    lock = shared.notifiers_lock
    notifiers: dict[str, Notifier] = shared.notifiers
    with lock:
        notifier.refs -= 1
        if notifier.refs > 0:
            return
        for key, value in list(notifiers.items()):
            if value is notifier:
                del notifiers[key]
    notifier.close()


def publish_all(shared: SharedEnv, events: list[tuple[int, int, int]]) -> None:
    """Publish committed changes through every notifier of this process on the environment."""
    with shared.notifiers_lock:
        notifiers: list[Notifier] = list(shared.notifiers.values())
    sent_dirs: set[str] = set()
    for notifier in notifiers:
        remote = notifier.notify_dir not in sent_dirs
        sent_dirs.add(notifier.notify_dir)
        notifier.publish(events, remote=remote)
