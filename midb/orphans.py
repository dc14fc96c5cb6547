"""Orphan body files after a crash: which processes may have left some, and the sweep that
removes them.

A process killed while it stores a message (between the body file's write and the index commit,
midb.blobs) leaves a temporary file or a body file nothing references: an orphan. Never mail
anyone was told is stored, but disk space: 11 kills during 4 MB MULTIAPPENDs left 52 MB.

Who died: every Store opened for writing (the server's processes, every ``midb`` command) holds
a marker, ``<store>/writers/<pid>-<random>``, with an flock on it; a clean close removes it. The
kernel drops the lock when the process dies, however it dies, so a marker whose lock can be
taken is one its process left behind: the last stop of that process was unclean. Markers live in
the store directory, not in ``midb_run_dir`` (a tmpfs that a reboot after a power failure would
empty). Several processes share a store, each with its marker, so one's clean stop says nothing
of another's crash, and a process forked with a store open (the prefork server) makes its own.

The sweep: each gximap serving process, once it serves, takes the markers it can lock and, if it
took any, walks the body files in a thread (OrphanSweeper) and removes what ``midb verify
--repair`` would remove (midb.maintenance.sweep_orphans: files the index does not reference,
older than ORPHAN_MIN_AGE, removed under the write lock; a writer checks its files under that
lock too). Only files last written before the markers were taken are judged: later ones are
live writers'. A dead process's youngest orphans may be too young when a restart is quick: the
sweep waits until they are old enough and walks again, once. The markers are removed once the
sweep is done; a sweep stopped halfway leaves them, and the next start sweeps again. Taking a
marker's lock is also the claim: of several processes starting together, one sweeps. A marker
that cannot be removed (its directory not writable by the server's user: a ``midb`` command run
as root left it) stays locked by the process that swept for it until that process ends, which
says so once in a warning (Claim.finish).

Without a stale marker there is no sweep: a start after a clean stop costs a directory listing,
and so does the look every RECHECK seconds, for a ``midb`` command killed while the server runs
(a process of the server killed is replaced, and its replacement claims at its start).

The LMDB reader slots of processes that died inside a read transaction (a ``midb export``
killed) are not this thread's: every process frees them as it opens the index, and every process
that writes does so before its writes (midb.env.READER_CHECK), which is where a kept snapshot
costs (each commit growing the index). A process that only reads is not hurt by them until the reader table
(1,024 slots per shard) is full, and any open by another process empties it of the dead again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import stat
import threading
import time
import weakref
from typing import TYPE_CHECKING

from midb import maintenance
from midb.blobs import fsync_dir

if TYPE_CHECKING:
    from midb.store import Store

log = logging.getLogger("midb")

MARKERS_DIR = "writers"
NOTICE = 25          # gximap's notice level (midb does not import gximap): shown by default
SWEEP_PASSES = 2     # a second walk for orphans too young at the first one
STOP_WAIT = 5.0      # what stop() waits at most for the thread
RECHECK = 600.0      # seconds between two looks for markers of processes that died meanwhile


def markers_dir(store_path: str) -> str:
    return os.path.join(store_path, MARKERS_DIR)


class WriterMarker:
    """This process's marker of a store opened for writing; None from create() when it cannot be
    made (the store then works, but a crash of this process goes unswept until verify --repair)."""

    _instances: weakref.WeakSet[WriterMarker] = weakref.WeakSet()

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd
        WriterMarker._instances.add(self)

    @classmethod
    def create(cls, store_path: str, *, fsync: bool = False) -> WriterMarker | None:
        """``fsync``: the directory is synced once the marker is named, so a power failure soon
        after the start cannot lose it (and with it the sweep of this process's orphans)."""
        directory = markers_dir(store_path)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        # Locked under a dot name, then renamed: a sweep never sees a marker not locked yet, and
        # leaves a dot name alone until it is a minute old (claim_stale).
        temp = os.path.join(directory, "." + name)
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            fd = os.open(temp, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(temp, os.path.join(directory, name))
                if fsync:
                    fsync_dir(directory)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as error:
            log.warning("cannot mark the store as in use in %s (%s): orphan files this process may "
                        "leave if it dies will not be swept at the next start", directory, error)
            return None
        return cls(os.path.join(directory, name), fd)

    def release(self) -> None:
        """At a clean close: removed first, then unlocked, so that a sweep which locks it after us
        finds it gone (Claim)."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)

    @classmethod
    def _forget_after_fork(cls) -> None:
        # The parent's markers: ours to close (the lock stays the parent's), not to remove.
        for instance in list(cls._instances):
            fd, instance._fd = instance._fd, -1
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


os.register_at_fork(after_in_child=WriterMarker._forget_after_fork)


class Claim:
    """The markers of dead processes this process locked; ``at``: when (the wall clock, which
    file times compare with), and ``now()``: that time run on by the monotonic clock since. A
    file's age is reckoned with ``now()``: the wall clock stepping forward (NTP after a reboot,
    just when a sweep runs) would otherwise make a write in flight look a minute old."""

    def __init__(self, held: list[tuple[str, int]], at: float) -> None:
        self.held = held
        self.at = at
        self._since = time.monotonic()

    def now(self) -> float:
        return self.at + (time.monotonic() - self._since)

    def __len__(self) -> int:
        return len(self.held)

    def finish(self) -> list[tuple[str, int]]:
        """The sweep is done: the markers go. Returns those that could not be removed, still
        locked: the caller holds them so until it ends, then closes them.

        Unlocked, such a marker would be claimed again at every look (RECHECK), by this process
        or a sibling, and swept for, for ever. A rename is refused as the removal is (it needs
        the directory), and its inode and mtime remembered in memory would spare this process
        only; the lock held on tells the siblings too, and if the holder dies uncleanly the
        next sweep covers it as well. A process started after the holder ended (a restart, a
        replaced process) claims it again: one more walk in the background and one more
        warning per start, left so, as the warning is what the admin acts on.
        """
        kept: list[tuple[str, int]] = []
        for path, fd in self.held:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("cannot remove %s, the marker of a process that stopped uncleanly, after "
                            "sweeping its orphan files: %s; remove it by hand, or make %s writable by "
                            "uid %d (until then each start of gximap sweeps once more for it)",
                            path, error.strerror or error, os.path.dirname(path), os.geteuid())
                kept.append((path, fd))
                continue
            with contextlib.suppress(OSError):
                os.close(fd)
        self.held = []
        return kept

    def release(self) -> None:
        """The sweep did not finish: the markers stay for the next start."""
        held, self.held = self.held, []
        _close(held)


def _close(held: list[tuple[str, int]]) -> None:
    for _path, fd in held:
        with contextlib.suppress(OSError):
            os.close(fd)


def claim_stale(store_path: str) -> Claim:
    """Lock the markers whose processes are gone (their lock is free)."""
    at = time.time()
    directory = markers_dir(store_path)
    try:
        names = os.listdir(directory)
    except OSError:   # none yet, or not ours to read: nothing to claim
        return Claim([], at)
    held: list[tuple[str, int]] = []
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") and not _older_than(path, at - maintenance.ORPHAN_MIN_AGE):
            continue  # a marker being made (not locked yet for a moment): never a claim's to take
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Unlinked meanwhile: its process closed the store cleanly as we waited for the lock.
            # Not a file: not a marker (it could never be removed, and would be swept for ever).
            status = os.fstat(fd)
            stale = status.st_nlink > 0 and stat.S_ISREG(status.st_mode)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                log.warning("cannot lock %s: %s", path, error)
            stale = False   # its process is alive (or another sweeper has it)
        if stale and name.startswith("."):
            # A process that died as it created its marker, before any write: no orphans.
            with contextlib.suppress(OSError):
                os.unlink(path)
            stale = False
        if stale:
            held.append((path, fd))
        else:
            os.close(fd)
    return Claim(held, at)


def _older_than(path: str, when: float) -> bool:
    try:
        return os.lstat(path).st_mtime < when
    except OSError:
        return False


class OrphanSweeper:
    """The sweeps of one process: start() once it serves, stop() before the store closes. At the
    start, and every RECHECK seconds after (a ``midb`` command killed while the server runs), it
    claims the markers of dead processes and sweeps if it took any."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: maintenance.SweepResult | None = None   # of the last sweep that finished
        self.attempts = 0                                    # sweeps begun and ended, for tests
        self._ended = threading.Condition()
        self._kept: list[tuple[str, int]] = []   # markers swept for and not removable: locked

    def start(self) -> bool:
        """Claim now (a directory listing), sweep in a thread; True if there is a sweep to do."""
        claim = self._claim()
        found = bool(claim)   # now: the thread may be done with the claim before we return
        self._thread = threading.Thread(target=self._run, args=(claim,), name="midb-sweep", daemon=True)
        try:
            self._thread.start()
        except RuntimeError as error:   # at the thread limit: the markers stay for the next start
            claim.release()
            self._thread = None
            log.error("cannot start the sweep of orphan body files: %s", error)
            return False
        return found

    def stop(self, timeout: float = STOP_WAIT) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._ended:
            kept, self._kept = self._kept, []
        _close(kept)   # unlocked: the next start claims them again (Claim.finish)

    def _keep(self, kept: list[tuple[str, int]]) -> None:
        with self._ended:
            if not self._stop.is_set():
                self._kept.extend(kept)
                return
        _close(kept)   # stop() has closed the others already

    def wait(self, attempts: int = 1, timeout: float = 30.0) -> bool:
        """For tests: until ``attempts`` sweeps have ended (done or stopped)."""
        with self._ended:
            return self._ended.wait_for(lambda: self.attempts >= attempts, timeout)

    def _claim(self) -> Claim:
        claim = claim_stale(self.store.path)
        if claim:
            log.info("%d processes using the store stopped uncleanly: sweeping orphan body files", len(claim))
        return claim

    def _run(self, claim: Claim) -> None:
        while True:
            if claim:
                try:
                    self._sweep(claim)
                finally:
                    with self._ended:
                        self.attempts += 1
                        self._ended.notify_all()
            if self._stop.wait(RECHECK):
                return
            try:
                claim = self._claim()
            except Exception:
                log.exception("cannot look for processes that stopped uncleanly")
                claim = Claim([], time.time())

    def _sweep(self, claim: Claim) -> None:
        done = False
        try:
            total = maintenance.SweepResult()
            for sweep in range(SWEEP_PASSES):
                result = maintenance.sweep_orphans(self.store, before=claim.at, now=claim.now,
                                                   stop=self._stop.is_set)
                total.removed += result.removed
                total.bytes += result.bytes
                total.youngest = result.youngest
                if not result.finished:
                    log.info("sweep of orphan body files stopped after removing %d (%d bytes); the next "
                             "start sweeps again", total.removed, total.bytes)
                    return
                if result.youngest is None or sweep == SWEEP_PASSES - 1:
                    break
                # Kept for their age at the first walk: wait until they may go (the clock may
                # have been set back: at most the age limit).
                wait = min(result.youngest + maintenance.ORPHAN_MIN_AGE - claim.now(), maintenance.ORPHAN_MIN_AGE)
                if self._stop.wait(max(0.0, wait)):
                    return
            self.result = total
            done = True
            if total.removed:
                log.log(NOTICE, "removed %d orphan body files (%d bytes) left by processes that stopped "
                        "uncleanly", total.removed, total.bytes)
            else:
                log.info("no orphan body files to remove")
        except Exception:
            log.exception("sweep of orphan body files failed; it is tried again later")
        finally:
            if done:
                self._keep(claim.finish())
            else:
                claim.release()
