"""Body files no message references any more are removed by threads, after the write that
released them has answered.

Why: removing a file costs a filesystem journal update. On the disk this project is measured on
that is 60-110 µs a file, so an EXPUNGE of 20,000 messages whose bodies are files spent 1.8 s of
its 2.0 s unlinking (before this module), while the client waited and the worker was held. What
the client is owed is the index change; the disk space can follow a moment later. Dovecot's
mdbox does the same in its purge step.

Crash safety: the transaction that drops a body's last reference also records the body's id in
the index (``meta``, key ``unlink:`` + id), and the id is handed to the :class:`BodyRemover`
after the commit. A remover thread removes the file first, then the record (a write that is
not synced of its own: lost in a power failure, the record comes back and the removal of a file
already gone is a no-op). A store opened for writing takes over the records it finds, so a crash
between the commit and the removal leaves neither an orphan file nor a reference to a missing
one. It commits and syncs the index before it acts on them (touch()): they may be another
process's commit whose meta page that process has not synced yet (metasync is off), or one whose
sync failed, and a power failure must not bring back a message whose file is gone. ``verify`` counts a file with a record as awaiting removal,
not as an orphan. (ext4 and XFS keep the order of an unlink and a later fsync of another file.
On a filesystem that does not, a power failure can leave the file of a forgotten record behind:
an orphan, which ``verify --repair`` removes.)

A body id is never used again once its last reference is gone (ids are random, 128 bits), so no
later write can meet a file the remover is about to take away.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from midb.keys import BLOB_ID_BYTES, prefix_items

log = logging.getLogger("midb")
Item = TypeVar("Item")

KEY_PREFIX = b"unlink:"
# In ``meta``: the id of the last commit made only so that the flush after it vouches for the
# records a store opened for writing takes over (see touch()).
TOUCH_KEY = b"removals-touched"
BATCH = 512          # files removed before their records are forgotten in one write
# Threads removing files, per store. Removals in one filesystem overlap in its journal: on the
# disk this project is measured on, two threads remove 3,000 files 1.7 times as fast as one. More
# threads free the disk sooner but slow a bulk write still committing its pieces: at 100,000
# files, three freed it in 8.5 s against two's 9.5 (Dovecot 8.9-9.3) and answered the EXPUNGE
# in 3.7 s against 3.4; four in 8.4 s, answering in 4.4 (bench/HISTORY.md, fifty-fourth pass).
UNLINKERS = 3
CLOSE_WAIT = 5.0     # what Store.close() waits at most for the files still queued


def record(txn: Any, dbs: Any, blob_raw: bytes) -> None:
    """In the transaction that removes a body's last reference: keep its id until its file is gone."""
    txn.put(KEY_PREFIX + blob_raw, b"", db=dbs.meta)


def recorded(txn: Any, dbs: Any) -> list[bytes]:
    """The ids of the bodies whose files await removal."""
    size = len(KEY_PREFIX)
    return [bytes(key[size:]) for key in prefix_items(txn, dbs.meta, KEY_PREFIX, values=False)]


def well_formed(blob_raw: bytes) -> bool:
    """Whether a record names a body id at all (a damaged one is dropped, never acted on)."""
    return len(blob_raw) == BLOB_ID_BYTES


def touch(txn: Any, dbs: Any, _effects: object = None) -> None:
    """A write job changing one key: a commit for the flush after it to write. A flush of no new
    commit writes only the pages still dirty, and after a failed one (in this process or one that
    has stopped since) the kernel may have marked the pages it could not write clean, still
    cached: such a flush vouches for nothing. A commit writes a newer meta page, over data
    pages that each commit synced, and its flush makes every commit before it durable."""
    txn.put(TOUCH_KEY, txn.id().to_bytes(8, "big"), db=dbs.meta)


def forget(txn: Any, dbs: Any, blob_raws: Iterable[bytes]) -> None:
    for blob_raw in blob_raws:
        txn.delete(KEY_PREFIX + blob_raw, db=dbs.meta)


class BodyRemover(Generic[Item]):
    """The files waiting for removal in this process, and the threads (UNLINKERS) that remove them.

    ``unlink(item)`` removes a body's file (a missing file is no error); ``forget(items)`` drops
    the records of those whose files are gone. An item is whatever the two need to find the file
    and its record (the store's: the shard the record is in, and the body id). A file whose
    removal fails keeps its record: the next store opened for writing tries again, and verify
    shows it meanwhile.
    """

    _instances: weakref.WeakSet[BodyRemover[Any]] = weakref.WeakSet()

    def __init__(self, unlink: Callable[[Item], None], forget: Callable[[list[Item]], None]) -> None:
        self._unlink = unlink
        self._forget = forget
        self._reset()
        BodyRemover._instances.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: collections.deque[Item] = collections.deque()
        self._in_flight = 0       # files taken by the threads and not yet done with
        self._busy = 0            # threads holding a batch
        self._threads: set[threading.Thread] = set()
        self._closing = False     # the threads leave once the queue is empty
        self._abandon = False     # the threads leave after the file in hand

    def remove(self, items: Iterable[Item]) -> None:
        """Bodies whose last reference a committed write removed (and recorded): remove their
        files. Never raises for want of a thread: the records keep what cannot be removed now."""
        with self._lock:
            if self._abandon:
                return   # closed: the records stay, for the next store opened for writing
            before = len(self._queue)
            self._queue.extend(items)
            if len(self._queue) == before:
                return
            while len(self._threads) < UNLINKERS:
                thread = threading.Thread(target=self._run, name="midb-unlink", daemon=True)
                try:
                    thread.start()
                except RuntimeError as error:   # at the process's thread limit
                    log.error("cannot start a thread to remove body files: %s", error)
                    break
                self._threads.add(thread)
            # Without a thread they wait here (a later call tries again) and in their records.
            if before == 0:
                self._changed.notify_all()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + self._in_flight

    def wait(self, timeout: float) -> bool:
        """Wait until every file handed over so far is removed; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0 or not self._threads:
                    return False
                self._changed.wait(left)
        return True

    def close(self, timeout: float = CLOSE_WAIT) -> None:
        """Remove what is queued, for ``timeout`` at most; the rest keep their records (the next
        store opened for writing removes them). Each thread finishes the file in hand and then
        leaves without touching the store. Called before the store's environments close."""
        deadline = time.monotonic() + timeout
        finished = self.wait(timeout)
        with self._lock:
            left = len(self._queue) + self._in_flight
            if not finished or left:
                log.info("%d body files left to remove at the next start", left)
            self._closing = self._abandon = True
            self._changed.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                # A file in hand is one system call; the threads are daemons if one hangs.
                thread.join(max(0.1, deadline - time.monotonic()))

    def _take(self) -> list[Item] | None:
        """The next batch for the calling thread: its share of the queue among the threads not
        holding one, at most BATCH, so that they finish together; None when it is to leave."""
        with self._lock:
            while not self._queue and not self._closing:
                self._changed.wait()
            if not self._queue or self._abandon:
                self._threads.discard(threading.current_thread())
                self._changed.notify_all()
                return None
            idle = max(1, len(self._threads) - self._busy)
            batch = [self._queue.popleft() for _ in range(min(BATCH, -(-len(self._queue) // idle)))]
            self._in_flight += len(batch)
            self._busy += 1
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._remove_batch(batch)
            finally:
                with self._lock:
                    self._in_flight -= len(batch)
                    self._busy -= 1
                    self._changed.notify_all()

    def _remove_batch(self, batch: list[Item]) -> None:
        removed: list[Item] = []
        for item in batch:
            if self._abandon:
                break
            try:
                self._unlink(item)
            except Exception as error:   # keeps its record: retried at the next open, shown by verify
                log.warning("cannot remove body %s: %s", item, error)
                continue
            removed.append(item)
        if removed and not self._abandon:   # once closed, the store is not to be touched: the records stay
            try:
                self._forget(removed)
            except Exception:   # the records stay; the next open removes (nothing) and forgets them
                log.exception("cannot forget %d removed bodies", len(removed))

    @classmethod
    def _forget_after_fork(cls) -> None:
        # The threads did not survive the fork, and the queue is the parent's to finish.
        for instance in list(cls._instances):
            instance._reset()


os.register_at_fork(after_in_child=BodyRemover._forget_after_fork)
