"""The LMDB environment behind a Store: named databases, read transactions and group-committed writes.

py-lmdb refuses to open one environment twice in a process, so environments live in a process-wide
registry keyed by the index directory's real path and are reference counted: several Store objects on
the same path share one SharedEnv.

Writes go through SharedEnv.write(job). Concurrent writers in one process are batched: the first
thread to arrive becomes the leader, runs every queued job in one LMDB write transaction (each job
in a nested transaction, so a job that raises is rolled back alone) and commits once. With sync on,
one commit costs one fsync under LMDB's write lock, plus one after it when any job of the batch
asked for durability, however many appends it carries. LMDB itself serialises writers across
processes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import lmdb

from midb import bodyrecords, columns, indexes, removal, savedates, sortindex, summary
from midb.errors import MidbError, NotDurable, StoreBusy, StoreFull
from midb.prefetch import LeafPrefetcher

log = logging.getLogger(__name__)

SCHEMA_VERSION = 10
# Schema 1 lacked the flag indexes (midb.indexes), the summaries (midb.summary) and bodies kept in the
# index; schema 2 kept the flag index as one key per message (flag_uids) where schema 3 keeps one
# sorted list of fixed-size UIDs per folder and kind (flag_lists), read a page at a time; schemas
# 1-3 kept a body's records in four tables (blobs, digests, summaries, bodies) where schema 4
# keeps them side by side in one (midb.bodyrecords); schema 5 may split the index into shards
# (midb.shards) and records their number in shard 0's meta table, under SHARD_COUNT_KEY (an older
# store has one shard); schema 6 adds the flag column and the keyword sets it interns
# (midb.columns); schema 7 the sort index (midb.sortindex); schema 8 interns keyword sets per
# account instead of per shard (midb.columns); schema 9 keeps each message's save date as the
# value of its modseqs entry (midb.savedates); schema 10 holds the sort index's texts in their
# i;unicode-casemap form, not i;ascii-casemap (midb.sortindex.ENTRY_VERSION 2). Opening an older
# store for writing builds what it lacks, in one transaction (a few seconds per 100,000 messages).
OLDEST_SCHEMA = 1
# In the meta table of shard 0: the number of shards (u32). Absent in a store just created: the
# Store that created it records its choice (Store.__init__).
SHARD_COUNT_KEY = b"shards"
# In the meta table of shard 0: 32 random bytes drawn once (Store.site_secret), the root of
# secrets that must stay the same across restarts and processes.
SITE_SECRET_KEY = b"site-secret"
# In the meta table of every shard: the id of the last transaction that only freed pages for a
# write that found the map full (SharedEnv._make_room).
_TURNOVER_KEY = b"turnover"

DB_NAMES = (
    "meta",            # b"schema" -> u32 version
    "counters",        # global sequences: next account id, last uidvalidity, per-account next folder id
    "accounts",        # account id -> account record
    "account_names",   # lowercased name -> account id
    "usage",           # account id -> (bytes, messages)
    "owners",          # (mailbox id, actor id) -> b""
    "folders",         # (account, folder) -> folder record
    "folder_names",    # (account, name) -> folder id
    "subscriptions",   # (account, name) -> b""
    "messages",        # (account, folder, uid) -> message record
    "modseqs",         # (account, folder, modseq, uid) -> save date (midb.savedates): changes_since in O(changes)
    "tombstones",      # (account, folder, modseq, uid) -> b"": expunged UIDs for QRESYNC
    "metadata",        # (account, folder or 0 for the server, entry) -> value: RFC 5464 annotations
    "flag_lists",      # (account, folder, kind) -> u32 UIDs (sorted duplicates): unseen / \\Deleted (midb.indexes)
    "keyword_counts",  # (account, folder) + keyword -> u32 messages carrying it (midb.indexes)
    "body_records",    # blob id (16 bytes) + kind -> refcount and size / digest / summary / the
                       # body itself if small (midb.bodyrecords)
    "flag_columns",    # (account, folder) -> uid, flag word, modseq (sorted duplicates) (midb.columns)
    "keyword_sets",    # account + kind + ...: the interned keyword sets of the flag words (midb.columns)
    "sort_records",    # (account, folder, uid) -> what SORT and THREAD compare (midb.sortindex)
)
# Databases a store written by an older schema may lack (a read-only open then does without them).
_ADDED_AFTER_SCHEMA_1 = ("flag_lists", "keyword_counts")
# Added by schema 4; a read-only open of an older store reads its predecessors instead.
_ADDED_BY_SCHEMA_4 = ("body_records",)
# Added by schema 6; a read-only open of an older store reads the message records instead.
_ADDED_BY_SCHEMA_6 = ("flag_columns", "keyword_sets")
# Added by schema 7; a read-only open of an older store reads the summaries instead.
_ADDED_BY_SCHEMA_7 = ("sort_records",)
# Databases with sorted fixed-size duplicates (MDB_DUPSORT | MDB_DUPFIXED): a key's values are
# read a page at a time (Cursor.getmulti) instead of one Python object per entry.
_FIXED_DUPLICATES = frozenset({"flag_lists", "flag_columns"})
# Databases of older schemas that an upgrade removes.
_RETIRED = ("flag_uids",)
# Room for the current databases and those of older schemas (read, or moved by an upgrade).
MAX_DBS = len(DB_NAMES) + len(bodyrecords.LEGACY_NAMES) + len(_RETIRED) + 2

T = TypeVar("T")

# Wraps the waits of a write that may block for a while (for a group commit's leader, for an
# fsync). A server that runs midb on a bounded worker pool sets it (gximap.net.pool
# .blocking_section), so that the pool lets another worker serve meanwhile.
_blocking: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext


def set_blocking_hook(hook: Callable[[], contextlib.AbstractContextManager[None]] | None) -> None:
    global _blocking
    _blocking = hook if hook is not None else contextlib.nullcontext


def blocking() -> contextlib.AbstractContextManager[None]:
    return _blocking()

# Writes that add data (an append or delivery, a COPY, a new folder or account, an annotation)
# are refused with StoreFull once a shard's LMDB map has less than a reserve left, so that the
# writes that remove mail always find pages: LMDB copies every page a write changes, a removal's
# too, and frees the old pages only once a later commit has superseded it. At a full map not even
# a STORE \Deleted could be written, and no mail deleted to make room. Measured on a folder of
# 100,000 messages (96 MiB of index), the first piece of a bulk command (2,000 messages,
# gximap.session.pieces) dirtied 5.7 MiB for a STORE and 12 MiB for an EXPUNGE with the messages
# scattered over the folder (each touches a leaf of every table: its record, its body record,
# its flag column entry...), far less for a range of neighbours; a larger store spreads them
# further, up to about 6 pages a message. Hence 10 % of the map (820 MiB of the default 8 GiB,
# room for the later, larger pieces too), at least 64 MiB, and at most half of a small map
# (a map of a few MiB holds too few messages for a piece to need more). Writes derived from
# mail already admitted (its parsed structure, its sort entry) are not refused: their size
# follows what came in.
GROWTH_RESERVE_SHARE = 0.1
GROWTH_RESERVE_MIN = 64 << 20


def growth_limit(map_size: int, page_size: int) -> int:
    """Pages a map of ``map_size`` bytes may have in use before writes adding data are refused."""
    reserve = min(map_size // 2, max(int(map_size * GROWTH_RESERVE_SHARE), GROWTH_RESERVE_MIN))
    return (map_size - reserve) // page_size

# Seconds between two looks, by a process's next write, for LMDB reader slots of processes that
# died inside a read transaction (SharedEnv.clear_dead_readers). Until one is freed, no page freed
# after its snapshot is used again: each commit grows the data file by all it wrote (1,000 APPEND
# and EXPUNGE cycles: 137 MB). Only commits grow it, so the look is made by every process that
# writes (a serving process, a ``midb import``), and by none that only reads: such a process is
# hurt only by a full reader table, and every open of the index by any process empties that of
# dead slots. A look scans the reader table and tests a lock per process in it.
READER_CHECK = 10.0

# A leader about to commit durably waits this long at most for writers that announced themselves
# (arrival()) and are still writing their bodies, so that they share its sync instead of each
# paying for their own. Bodies are small and written in parallel: they arrive within a sync's time.
GATHER_WAIT = 0.005


def other_processes_holding(lock_path: str) -> list[int]:
    """The other processes that have the LMDB environment of ``lock_path`` (its lock.mdb) open:
    each holds a POSIX record lock on the file while it does (LMDB's own liveness lock), which
    /proc/locks lists with its pid. Empty where that cannot be told: /proc/locks unreadable (not
    Linux), /proc of another pid namespace, or a file system whose device numbers there differ
    from stat()'s (btrfs): a safety net, not a guarantee."""
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return []  # /proc of another pid namespace: its pids are not ours to compare
        status = os.stat(lock_path)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            table = fh.read()
    except OSError:
        return []
    wanted = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    me = os.getpid()
    holders: set[int] = set()
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter ("1: -> POSIX ..."): only holders count
            continue
        if len(fields) >= 6 and fields[1] == "POSIX" and fields[5] == wanted:
            try:
                pid = int(fields[4])
            except ValueError:
                continue
            if pid != me:
                holders.add(pid)
    return sorted(holders)

class Databases:
    """Handles of the named databases (valid for the environment's lifetime)."""

    __slots__ = (*DB_NAMES, "legacy_bodies", "pages", "word_tails")

    meta: Any
    counters: Any
    accounts: Any
    account_names: Any
    usage: Any
    owners: Any
    folders: Any
    folder_names: Any
    subscriptions: Any
    messages: Any
    modseqs: Any
    tombstones: Any
    metadata: Any
    flag_lists: Any
    keyword_counts: Any
    body_records: Any
    flag_columns: Any     # None: a read-only store older than schema 6 (see SharedEnv.columned)
    keyword_sets: Any
    sort_records: Any     # None: a read-only store older than schema 7 (see Store.sort_values)
    # A read-only store of schema 1-3: its four body tables by midb.bodyrecords kind (None for one
    # it lacks); None for a current store.
    legacy_bodies: tuple[Any, ...] | None
    # Reads a key range's leaf pages ahead of a scan (midb.prefetch); not a database handle, but
    # it goes where the handles go: into every read of the environment.
    pages: LeafPrefetcher
    # Flag words of the column to record tails, cached for the environment's lifetime (midb.columns).
    word_tails: columns.WordTails


_NOTICE_BIT = 1 << 63   # midb.events.NOTICE (that module imports this one)


def _announce_rank(modseq: int) -> tuple[bool, int]:
    return (not modseq & _NOTICE_BIT, modseq)


class WriteEffects:
    """What a write job wants done after its transaction commits (never before)."""

    __slots__ = ("changes", "unlink")

    def __init__(self) -> None:
        self.changes: dict[tuple[int, int], int] = {}   # (account id, folder id) -> highest modseq written
        self.unlink: list[str] = []                      # body ids whose refcount reached 0

    def changed(self, account_id: int, folder_id: int, modseq: int) -> None:
        """Announce a folder's new highest modseq, or a notice (midb.events.NOTICE, for NOTIFY).
        One value per folder goes out: a message change outranks a notice, since the sessions
        that follow messages skip notices and must not miss a change."""
        key = (account_id, folder_id)
        old = self.changes.get(key)
        if old is None or _announce_rank(modseq) > _announce_rank(old):
            self.changes[key] = modseq

    def unlink_blob(self, txn: Any, dbs: Databases, blob_raw: bytes) -> None:
        """A body file whose last reference this transaction removes: recorded in it, and
        removed after the commit (midb.removal)."""
        removal.record(txn, dbs, blob_raw)
        self.unlink.append(blob_raw.hex())


WriteJob = Callable[[Any, Databases, WriteEffects], T]


class Arrival:
    """A write announced to come (SharedEnv.arrival); withdrawn on exit if it never came."""

    __slots__ = ("shared", "pending")

    def __init__(self, shared: SharedEnv) -> None:
        self.shared = shared
        self.pending = False

    def __enter__(self) -> Arrival:
        with self.shared._queue_cv:
            self.shared._arriving += 1
            self.pending = True
        self.shared._announced.arrival = self
        return self

    def __exit__(self, *exc: object) -> None:
        if getattr(self.shared._announced, "arrival", None) is self:
            self.shared._announced.arrival = None
        self.withdraw()

    def withdraw(self) -> None:
        if self.pending:
            with self.shared._queue_cv:
                if self.pending:
                    self.pending = False
                    self.shared._arriving -= 1
                    if self.shared._gathering:
                        self.shared._queue_cv.notify_all()


class _Waiter:
    """A thread whose jobs wait for a leader: it sleeps in ``wake.acquire()`` until the jobs are
    done, or until ``lead`` is set and it must run the next batch itself."""

    __slots__ = ("pendings", "wake", "lead")

    def __init__(self, pendings: list[_Pending]) -> None:
        self.pendings = pendings
        self.wake = threading.Lock()
        self.wake.acquire()
        self.lead = False


class _Pending:
    __slots__ = ("job", "durable", "effects", "result", "error", "done", "map_full")

    effects: WriteEffects
    result: Any
    error: BaseException | None
    done: bool
    map_full: bool   # failed for want of pages in the map: tried once more (_run_batch)

    def __init__(self, job: WriteJob[Any], durable: bool) -> None:
        self.job = job
        self.durable = durable
        self.again()

    def again(self) -> None:
        """The state of a job not run yet: at the start, and to run it once more after a failure."""
        self.effects = WriteEffects()
        self.result = None
        self.error = None
        self.done = False
        self.map_full = False


def translate_lmdb_error(error: lmdb.Error, index_dir: str | None = None) -> MidbError:
    """midb's error for LMDB's; with ``index_dir``, an I/O error is told apart from a full file
    system (see _SHORT_WRITE_ROOM)."""
    if isinstance(error, lmdb.MapFullError):
        return StoreFull("message store is full (LMDB map size reached)")
    if isinstance(error, lmdb.ReadersFullError):
        return StoreBusy("too many concurrent readers")
    if isinstance(error, lmdb.MapResizedError):
        return StoreBusy("store map was resized by another process")
    if isinstance(error, (lmdb.LockError, lmdb.TlsFullError)):
        return StoreBusy(str(error))
    if any(text in str(error) for text in _NO_ROOM_TEXTS):
        return StoreFull(f"no room left for the index: {error}")
    if index_dir is not None and _IO_ERROR_TEXT in str(error):
        free = _free_bytes(index_dir)
        if free is not None and free < _SHORT_WRITE_ROOM:
            return StoreFull(f"no room left for the index: {error} (its file system has {free} bytes free)")
        if free is not None:
            return MidbError(f"LMDB error: {error} (its file system has {free} bytes free)")
    return MidbError(f"LMDB error: {error}")


# py-lmdb reports an errno from LMDB (a commit's write) as plain lmdb.Error, with its strerror()
# text: that of the C library this process uses, so it is looked for as that library says it.
_NO_ROOM_TEXTS = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT))
# LMDB reports a write the file system cut short as EIO, not ENOSPC (mdb_page_flush: "Use which
# error code?"): a commit that fills the file system fails with ENOSPC if no byte of a write
# fitted, with EIO if some did, and a store filling up shows both (tmpfs: ENOSPC for one APPEND,
# EIO for the next). LMDB writes a commit's pages at most 64 at a time (MDB_COMMIT_PAGES, 256 KiB
# of 4 KiB pages), so a write cut short for want of room leaves less than that free: an EIO with
# less than this free for the index's owner is taken for a full file system. One with more is an
# I/O error (or room freed since, which the same NO [UNAVAILABLE] answers alike); the message
# says how much was free either way.
_IO_ERROR_TEXT = os.strerror(errno.EIO)
_SHORT_WRITE_ROOM = 1 << 20


def _free_bytes(path: str) -> int | None:
    """Bytes the file system holding ``path`` has free for an unprivileged writer (None: unknown)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


class _LmdbErrors:
    """``with lmdb_errors():`` turns LMDB's exceptions into midb's. A class rather than a
    generator context manager: it wraps nearly every store call, several per IMAP command."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any) -> None:
        # Returns None: never swallows an exception (type checkers then see a with-block's
        # return as the function's last statement).
        if error is not None and isinstance(error, lmdb.Error):
            raise translate_lmdb_error(error) from error


_LMDB_ERRORS = _LmdbErrors()


def lmdb_errors() -> _LmdbErrors:
    return _LMDB_ERRORS


class SharedEnv:
    """One open LMDB environment plus the state every Store on it shares in this process."""

    def __init__(self, index_dir: str, *, readonly: bool, sync: bool, map_size: int) -> None:
        self.index_dir = index_dir
        self.readonly = readonly
        self.synced = sync
        self.refs = 0
        self.stale = False          # set in a forked child: this env must not be used there
        self.indexed = True         # flag_lists / keyword_counts are maintained (False: old read-only store)
        self.columned = True        # flag_columns is maintained (False: read-only store older than schema 6)
        self.notifiers: dict[str, Any] = {}   # run dir -> events.Notifier (managed by midb.events)
        self.notifiers_lock = threading.Lock()
        with lmdb_errors():
            # metasync off (MDB_NOMETASYNC): a commit syncs its data pages but not the meta page
            # that makes them current, so LMDB's write lock is held for one fsync, not two. The
            # meta page is made durable by the next commit's sync, or, for a durable write, by the
            # env.sync() after the commit (_run_batch), outside the lock. LMDB keeps its integrity
            # this way; only a write nobody asked to be durable (a flag change) may be undone by
            # a power failure, never a delivery or an APPEND.
            self.env = lmdb.open(
                index_dir, map_size=map_size, subdir=True, readonly=readonly, create=not readonly,
                metasync=False, sync=sync, max_dbs=MAX_DBS, max_readers=1024, lock=True,
                mode=0o750,
            )
        try:
            self.clear_dead_readers()
            self.dbs = Databases()
            self.dbs.legacy_bodies = None
            self.dbs.pages = LeafPrefetcher(os.path.join(index_dir, "data.mdb"), self.env.stat()["psize"])
            if readonly:
                for name in DB_NAMES:
                    try:
                        setattr(self.dbs, name, self.env.open_db(name.encode(), create=False))
                    except lmdb.NotFoundError:
                        if name not in (*_ADDED_AFTER_SCHEMA_1, *_ADDED_BY_SCHEMA_4, *_ADDED_BY_SCHEMA_6,
                                        *_ADDED_BY_SCHEMA_7):
                            raise MidbError(f"{index_dir}: not a midb store (database {name} missing)") from None
                        setattr(self.dbs, name, None)
                        if name in _ADDED_AFTER_SCHEMA_1:
                            self.indexed = False
                        if name in _ADDED_BY_SCHEMA_6:
                            self.columned = False
                if self.dbs.body_records is None:
                    self.dbs.legacy_bodies = self._legacy_bodies(index_dir)
            else:
                with self.env.begin(write=True) as txn:
                    for name in DB_NAMES:
                        fixed = name in _FIXED_DUPLICATES
                        setattr(self.dbs, name, self.env.open_db(name.encode(), txn=txn, create=True,
                                                                 dupsort=fixed, dupfixed=fixed))
            self.dbs.word_tails = columns.WordTails(self.env, self.dbs)
            self._check_schema()
        except BaseException:
            self.close()
            raise
        self._queue: list[_Pending] = []
        self._queue_cv = threading.Condition(threading.Lock())
        self._leader_active = False
        self._waiters: list[_Waiter] = []   # threads whose jobs are queued for the next batch
        self._gathering = False   # a leader waits on _queue_cv for announced arrivals
        self._arriving = 0   # writers that announced a durable write (see arrival())
        self._announced = threading.local()   # .arrival: this thread's pending announcement
        self._page_size: int = self.env.stat()["psize"]
        # (last_txnid, pages in use) of the last count (room_to_grow): reused until a commit.
        self._pages_counted: tuple[int, int] = (-1, 0)
        self._growth_refused = False   # logged once each time growth starts or stops being refused
        self._readers_checked = time.monotonic()   # clear_dead_readers() just ran; then by a leader
        # Body files released by commits whose flush failed (_not_durable), kept until a later
        # commit of this process is flushed: only the leader touches it.
        self._withheld: list[str] = []

    def close(self) -> None:
        pages = getattr(getattr(self, "dbs", None), "pages", None)
        if pages is not None:
            pages.close()
        self.env.close()

    def _legacy_bodies(self, index_dir: str) -> tuple[Any, ...]:
        handles: list[Any] = []
        for name in bodyrecords.LEGACY_NAMES:
            try:
                handles.append(self.env.open_db(name.encode(), create=False))
            except lmdb.NotFoundError:
                if name in ("blobs", "digests"):
                    raise MidbError(f"{index_dir}: not a midb store (database {name} missing)") from None
                handles.append(None)
        return tuple(handles)

    def _check_schema(self) -> None:
        with self.env.begin(write=not self.readonly) as txn:
            raw = txn.get(b"schema", db=self.dbs.meta)
            if raw is None:
                if self.readonly:
                    raise MidbError(f"{self.index_dir}: not an initialised midb store")
                txn.put(b"schema", SCHEMA_VERSION.to_bytes(4, "big"), db=self.dbs.meta)
                savedates.record_since(txn, self.dbs, savedates.now())
                return
            version = int.from_bytes(raw, "big")
            if not OLDEST_SCHEMA <= version <= SCHEMA_VERSION:
                raise MidbError(f"{self.index_dir}: unsupported schema version {version}")
            if version < SCHEMA_VERSION:
                if self.readonly:
                    self.indexed = False
                    self.columned = False
                    return
                holders = other_processes_holding(os.path.join(self.index_dir, "lock.mdb"))
                if holders:
                    # An older gximap still running writes by the old schema into the upgraded
                    # index (keywords it numbers its own way, tables the upgrade dropped): stop
                    # it first (upgrade57). gximap itself upgrades in one process, before forking.
                    raise MidbError(
                        f"{self.index_dir}: the index is at schema {version} and needs upgrading to "
                        f"{SCHEMA_VERSION}, but other processes have it open (pid "
                        f"{', '.join(str(pid) for pid in holders)}): stop every gximap and midb using "
                        f"this store, then start again")
                log.info("%s: upgrading the index from schema %d to %d", self.index_dir, version,
                         SCHEMA_VERSION)
                for name in _RETIRED:
                    with contextlib.suppress(lmdb.NotFoundError):
                        txn.drop(self.env.open_db(name.encode(), txn=txn, create=False), delete=True)
                if version < 4:
                    moved = bodyrecords.migrate(txn, self.env, self.dbs.body_records)
                    log.info("%s: %d body records moved into one table", self.index_dir, moved)
                if version < 8:
                    # Schemas 6 and 7 numbered keyword sets per shard: the rebuild below interns
                    # every set afresh, per account (no process has cached an id yet).
                    txn.drop(self.dbs.keyword_sets, delete=False)
                    # The flag index, keyword counts and flag column, as this version keeps them
                    # (schemas 9 and 10 changed none of them).
                    indexes.rebuild(txn, self.dbs)
                if version < 2:
                    summary.fill(txn, self.dbs)
                if version < 10:
                    # Schema 7 added the sort index, schema 10 changed its collation.
                    written = sortindex.rebuild(txn, self.dbs)
                    log.info("%s: %d sort index entries written", self.index_dir, written)
                if version < 9:
                    # The messages already there keep no save date: unknown (midb.savedates).
                    savedates.record_since(txn, self.dbs, savedates.now())
                # A store older than schema 5 has one shard.
                txn.put(SHARD_COUNT_KEY, (1).to_bytes(4, "big"), db=self.dbs.meta, overwrite=False)
                txn.put(b"schema", SCHEMA_VERSION.to_bytes(4, "big"), db=self.dbs.meta)

    # ---- room in the map -----------------------------------------------------------------------

    def clear_dead_readers(self) -> int:
        """Free the reader slots of processes that died inside a read transaction (SIGKILL, the
        OOM killer; a ``midb export`` or ``backup`` walking a big folder): LMDB keeps the
        snapshot of such a slot readable, so no page freed after it is used again, and every
        commit grows the data file by the pages it wrote, up to a full map. LMDB looks at its
        slots only when asked: at each open, before a write every READER_CHECK seconds
        (_look_for_dead_readers) and when a write finds the map full. -> slots freed."""
        cleared = self.env.reader_check()
        if cleared:
            log.warning("%s: freed %d LMDB reader slots of processes that died while reading",
                        self.index_dir, cleared)
        return cleared

    def room_to_grow(self) -> bool:
        """Whether a write that adds data may go ahead: the map has more than its reserve left
        (growth_limit). Cheap while the data file's high-water mark is below the limit (one
        env.info(), about a microsecond). Above it, the pages of every database are counted
        (about 30 µs), since pages freed by removals are used again before the file grows; the
        count stands until the next commit of any process."""
        info = self.env.info()
        limit = growth_limit(info["map_size"], self._page_size)
        if info["last_pgno"] + 1 < limit:
            room = True
        else:
            counted_at, pages = self._pages_counted
            if counted_at != info["last_txnid"]:
                pages = self._pages_in_use()
                self._pages_counted = (info["last_txnid"], pages)
            room = pages < limit
        if room == self._growth_refused:
            self._growth_refused = not room
            if room:
                log.warning("%s: the LMDB map has room again: mail is accepted", self.index_dir)
            else:
                log.error("%s: the LMDB map is nearly full: mail is refused, the rest of the map is kept "
                          "for deleting mail; raise midb_map_size", self.index_dir)
        return room

    def _pages_in_use(self) -> int:
        """Pages of the map holding data: those of every database, their directory (the main
        database) and the two meta pages; not those in LMDB's list of free pages."""
        pages = 2
        with self.read() as txn:
            for name in DB_NAMES:
                db = getattr(self.dbs, name)
                if db is not None:
                    stat = txn.stat(db)
                    pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        stat = self.env.stat()
        return pages + stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]

    # ---- transactions -------------------------------------------------------------------------

    def read(self) -> lmdb.Transaction[bytes]:
        """A read-only snapshot; use as a context manager (`with shared.read() as txn:`)."""
        try:
            return self.env.begin()
        except lmdb.Error as error:
            raise translate_lmdb_error(error) from error

    def arrival(self) -> Arrival:
        """Announce that this thread will submit a write soon (``with shared.arrival():`` around
        writing and syncing the bodies and the write() that indexes them). A leader about to commit
        durably waits briefly for announced writers, so that concurrent appends (LMTP recipients,
        clients' APPENDs) share one commit and its sync. The thread's next write() consumes it."""
        return Arrival(self)

    def write(self, job: WriteJob[T], *, durable: bool) -> tuple[T, WriteEffects]:
        """Run job(txn, dbs, effects) in a committed write transaction; returns (result, effects).

        The job may run in a batch with other threads' jobs; it must do all its reads and writes
        through the transaction it is given and must not block on anything else.
        """
        pending = _Pending(job, durable)
        self._submit([pending])
        if pending.error is not None:
            raise pending.error
        return pending.result, pending.effects

    def write_all(self, jobs: list[WriteJob[Any]], *, durable: bool
                  ) -> list[tuple[Any, BaseException | None, WriteEffects]]:
        """Run several jobs in ONE committed write transaction (one sync), each in its own nested
        transaction, so a job that raises is rolled back alone. Returns (result, error, effects)
        per job, in order; error is None for a job that committed."""
        pendings = [_Pending(job, durable) for job in jobs]
        if pendings:
            self._submit(pendings)
        return [(pending.result, pending.error, pending.effects) for pending in pendings]

    def _submit(self, pendings: list[_Pending]) -> None:
        """Queue the jobs and return once they are all done: run by a leader that took them into its
        batch, or by this thread becoming the leader of everything queued.

        Followers sleep on their own lock (_Waiter) rather than on the shared condition: a leader
        wakes exactly the threads whose jobs it committed, plus the one it hands the leadership
        to, instead of every waiting thread re-taking the lock and the GIL to find its jobs not
        done yet."""
        waiter: _Waiter | None = None
        with self._queue_cv:
            self._queue.extend(pendings)
            arrival = getattr(self._announced, "arrival", None)
            if arrival is not None:
                self._announced.arrival = None
                if arrival.pending:
                    arrival.pending = False
                    self._arriving -= 1
                    if self._gathering:
                        self._queue_cv.notify_all()   # the leader waits for us
            if self._leader_active:
                waiter = _Waiter(pendings)
                self._waiters.append(waiter)
            else:
                self._leader_active = True
        if waiter is not None and not self._follow(waiter):
            return
        self._lead(pendings)

    def _follow(self, waiter: _Waiter) -> bool:
        """Wait until a leader committed our jobs (False) or handed us the leadership (True)."""
        try:
            with _blocking():
                waiter.wake.acquire()
        except BaseException:
            # Interrupted while waiting: withdraw the jobs if no leader took them yet; otherwise
            # their outcome must be settled before we leave (the caller may clean up after a
            # failure), and leadership handed to us must be exercised (others rely on it).
            with self._queue_cv:
                withdrawn = waiter in self._waiters
                if withdrawn:
                    self._waiters.remove(waiter)
                    for pending in waiter.pendings:
                        self._queue.remove(pending)
            if not withdrawn:
                waiter.wake.acquire()
                if waiter.lead:
                    self._lead(waiter.pendings)
            raise
        return waiter.lead

    def _lead(self, pendings: list[_Pending]) -> None:
        """Run everything queued as one batch (we hold the leadership), then pass the leadership to
        the first thread that queued meanwhile, or give it up.

        The batch is taken once LMDB's write lock is ours, not before: while another process
        commits (begin() waits for it, often as long as a commit), this process's writers keep
        queueing, and they ride this commit instead of waiting for a whole commit more. (Measured,
        10-client mixed load, two processes: 1.82 jobs per commit instead of 1.47, 22 % fewer
        commits and fsyncs for the same work. Throughput did not move beyond this machine's noise:
        on its virtual disk a commit's flush costs about as much per page as per fsync.)"""
        riders: list[_Waiter] = []
        successor: _Waiter | None = None
        try:
            with self._queue_cv:
                # Announced appenders still writing their bodies share this commit: wait for
                # them briefly. With none announced (no other writer on its way), no wait at all.
                if self._arriving and any(pending.durable for pending in pendings):
                    try:
                        self._gather()
                    except BaseException:
                        for pending in pendings:   # interrupted: our jobs were never started
                            self._queue.remove(pending)
                        raise
            self._look_for_dead_readers()
            txn = self._begin()
            with self._queue_cv:
                batch, self._queue = self._queue, []
                riders, self._waiters = self._waiters, []
            if isinstance(txn, BaseException):
                self._fail(batch, txn)
            else:
                self._run_batch(txn, batch)
        finally:
            with self._queue_cv:
                if self._waiters:
                    successor = self._waiters.pop(0)
                    successor.lead = True     # _leader_active stays set: handed over
                else:
                    self._leader_active = False
                    self._queue_cv.notify_all()   # release() may wait for the leader to finish
            if successor is not None:
                successor.wake.release()
            for rider in riders:
                rider.wake.release()

    def _look_for_dead_readers(self) -> None:
        """Every READER_CHECK seconds, before a write: free the reader slots of dead processes, so
        that a process that writes for long (the server, a ``midb import``) keeps reusing pages
        whichever process died. Only a leader calls it, one at a time."""
        now = time.monotonic()
        if now - self._readers_checked < READER_CHECK:
            return
        self._readers_checked = now
        try:
            self.clear_dead_readers()
        except lmdb.Error as error:   # the write goes on; the next look, or a full map, tries again
            log.warning("%s: cannot look for LMDB readers of processes that died: %s", self.index_dir, error)

    def _begin(self) -> lmdb.Transaction[bytes] | BaseException:
        """The write transaction, or why there is none."""
        try:
            # begin() waits for LMDB's write lock while another process commits, which can take
            # a while: the worker pool lets another worker serve meanwhile. (Measured: 10-client
            # mixed load 1,490-1,670 ops/s with this, 1,250-1,360 without.)
            with _blocking():
                return self.env.begin(write=True)
        except BaseException as error:
            return error

    def _gather(self) -> None:
        """Wait up to GATHER_WAIT for announced arrivals (caller holds _queue_cv)."""
        deadline = time.monotonic() + GATHER_WAIT
        self._gathering = True
        try:
            while self._arriving:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._queue_cv.wait(remaining)
        finally:
            self._gathering = False

    def _run_batch(self, txn: lmdb.Transaction[bytes], batch: list[_Pending]) -> None:
        """Run and commit a batch; every job leaves it done, with a result or an error.

        The jobs, the commit and the sync are one blocking section: the serving pool lets another
        worker serve this process's other sessions (reads, or commits to other shards:
        midb.shards) meanwhile. (Measured, 10-client mixed load, alternating rounds: with the
        commit and the sync as two sections, 2,808 ops/s against 2,930 with them, and against
        that, one section from the jobs on 3,049 against 2,967 and 3,112 against 2,997, APPEND
        and EXPUNGE p50 0.15-0.25 ms faster. With one environment, commits queued for its lock
        anyway, and the sections measured slower: 1,290-1,460 against 1,535 ops/s.)"""
        committed = False
        try:
            with _blocking():
                committed = self._commit_batch(txn, batch)
                squeezed = [pending for pending in batch if pending.map_full]
                if squeezed and self._make_room():
                    for pending in squeezed:
                        pending.again()
                    retry = self._begin()
                    if isinstance(retry, BaseException):
                        self._fail(squeezed, retry)
                    elif self._commit_batch(retry, squeezed):
                        committed = True
                if committed and any(p.durable for p in batch):
                    if self.sync():
                        self._release_withheld(batch)
                    else:
                        self._not_durable(batch)
        finally:
            for pending in batch:
                if not pending.done:
                    if not committed and pending.error is None:
                        pending.error = MidbError("write interrupted before commit")
                    pending.done = True

    def sync(self) -> bool:
        """Make every commit so far durable: the meta page of the commit just made (metasync is
        off), or everything when a Store that wants durability shares an env another Store
        opened with sync off. False (logged) if the flush failed: the commit stands in this
        process's view, but a power failure may undo it (_not_durable)."""
        try:
            self.env.sync(True)
        except lmdb.Error as error:
            log.error("flushing %s failed: %s", self.index_dir, error)
            return False
        return True

    def _not_durable(self, batch: list[_Pending]) -> None:
        """The sync after a batch's commit failed. Its durable writers are told so (NotDurable),
        not acknowledged: their commit may be undone by a power failure, and syncing again proves
        nothing (the kernel may have dropped the pages it failed to write). No body file the batch
        released goes to the remover either, durable writer's or not: after such an undo the index
        would name it again. They are withheld until a later commit's sync succeeds
        (_release_withheld); their removal records, in the same commit, keep them for the next
        open of the store (Store._remove_recorded) if this process stops first. A commit undone
        takes its records with it, and the bodies are referenced again."""
        refused = 0
        for pending in batch:
            if pending.error is not None:
                continue   # failed alone: nothing of it was committed
            if self.synced:   # else commits sync no data pages: no later flush vouches for this one
                self._withheld.extend(pending.effects.unlink)
            pending.effects.unlink.clear()
            if pending.durable:
                pending.error = NotDurable(
                    "the index could not be flushed to disk: the change may be lost", dict(pending.effects.changes),
                    pending.result)
                refused += 1
        log.critical("%s: flushing the index after a commit failed: %d writes answered as failed, as a power "
                     "failure may undo them (they stand until then); bodies they released are kept until a "
                     "later commit is flushed", self.index_dir, refused)

    def _release_withheld(self, batch: list[_Pending]) -> None:
        """A commit made after a failed flush is durable now, and with it every commit before it
        (LMDB's data pages are synced by each commit; what a failed flush may lose is the meta
        page that makes a commit current, and this commit wrote and flushed a newer one): the
        bodies withheld (_not_durable) are no longer referenced on disk. They ride the effects of
        a writer of this batch, whose Store hands them to its remover with its own."""
        if not self._withheld:
            return
        carrier = next((pending for pending in batch if pending.error is None), None)
        if carrier is not None:
            carrier.effects.unlink.extend(self._withheld)
            self._withheld = []

    def _commit_batch(self, txn: lmdb.Transaction[bytes], batch: list[_Pending]) -> bool:
        try:
            if len(batch) == 1:
                only = batch[0]
                try:
                    only.result = only.job(txn, self.dbs, only.effects)
                except BaseException as error:
                    txn.abort()
                    self._fail(batch, error)
                    return False
            else:
                for pending in batch:
                    child = self.env.begin(write=True, parent=txn)
                    try:
                        pending.result = pending.job(child, self.dbs, pending.effects)
                        child.commit()
                    except BaseException as error:
                        child.abort()
                        self._fail([pending], error)
            txn.commit()
        except BaseException as error:
            with contextlib.suppress(lmdb.Error):
                txn.abort()
            self._fail([p for p in batch if not p.done], error)
            return False
        return True

    def _make_room(self) -> bool:
        """After a write found the map full: make what room there is usable, and say whether the
        write should be tried again (False: not even this fitted). LMDB reuses the pages a commit
        frees only from the commit after the next one on (the commit before the last stays
        readable, for a crash), so the pages a big removal freed are not there yet for a removal
        right after it, and a retry that commits nothing in between never gets them: a change of
        one key lets them go. A dead process's reader slot keeps pages too (clear_dead_readers)."""
        try:
            self.clear_dead_readers()
            with self.env.begin(write=True) as txn:
                txn.put(_TURNOVER_KEY, txn.id().to_bytes(8, "big"), db=self.dbs.meta)
        except lmdb.Error:
            return False
        return True

    def _fail(self, batch: list[_Pending], error: BaseException) -> None:
        map_full = isinstance(error, lmdb.MapFullError) or isinstance(error.__cause__, lmdb.MapFullError)
        if isinstance(error, lmdb.Error):
            error = translate_lmdb_error(error, self.index_dir)
        for pending in batch:
            pending.error = error
            pending.effects = WriteEffects()
            pending.done = True
            pending.map_full = map_full


# ---- process-wide registry ---------------------------------------------------------------------

_registry: dict[str, SharedEnv] = {}
_registry_lock = threading.Lock()
# Environments inherited across fork(). LMDB handles must not be used in a child, and py-lmdb refuses
# to open the same files again while they are registered as open, so the child closes the inherited
# handle (which only drops its own copies: fcntl locks and the parent's reader slots belong to the
# parent) right before it opens its own.
_inherited: dict[str, SharedEnv] = {}


def acquire(index_dir: str, *, readonly: bool, sync: bool, map_size: int) -> SharedEnv:
    key = os.path.realpath(index_dir)
    with _registry_lock:
        shared = _registry.get(key)
        if shared is None:
            inherited = _inherited.pop(key, None)
            if inherited is not None:
                with contextlib.suppress(lmdb.Error):
                    inherited.close()
            shared = SharedEnv(key, readonly=readonly, sync=sync, map_size=map_size)
            _registry[key] = shared
        elif shared.readonly and not readonly:
            raise MidbError(f"{key} is already open read-only in this process")
        shared.refs += 1
        return shared


def release(shared: SharedEnv) -> None:
    with _registry_lock:
        if shared.stale:
            return
        shared.refs -= 1
        if shared.refs > 0:
            return
        if _registry.get(shared.index_dir) is shared:
            del _registry[shared.index_dir]
    # Let a leader finish its batch before the environment goes away.
    with shared._queue_cv:
        while shared._leader_active:
            shared._queue_cv.wait()
    shared.close()


def _forget_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for key, shared in _registry.items():
        shared.stale = True
        _inherited[key] = shared
    _registry.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
