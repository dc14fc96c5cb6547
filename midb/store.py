"""midb Store: accounts, folders, messages, bodies and notifications (contract: specs/midb_api.md).

Layout under <path>: index/ (LMDB environment, see midb.env), eml/ (bodies, see midb.blobs),
run/notify/ (notification sockets, see midb.events). Design notes: docs/midb-store.md.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import hmac
import itertools
import logging
import operator
import os
import secrets
import struct
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import lmdb

from midb import (
    bodyrecords,
    columns,
    events,
    expiry,
    indexes,
    maintenance,
    mime,
    quotas,
    removal,
    savedates,
    sortindex,
)
from midb import shards as shards_of
from midb import tombstones as tombstones_of
from midb.accounts import (
    Account,
    decode_account,
    decode_usage,
    encode_account,
    encode_usage,
    normalize_account_name,
)
from midb.blobs import BlobFiles, pack_blob_record, unpack_blob_record
from midb.deferred import DeferredParser
from midb.env import (
    SHARD_COUNT_KEY,
    SITE_SECRET_KEY,
    Databases,
    SharedEnv,
    WriteEffects,
    acquire,
    lmdb_errors,
    release,
)
from midb.errors import (
    AccountExists,
    FolderExists,
    FolderNotEmpty,
    HasChildren,
    InvalidArgument,
    InvalidFlag,
    InvalidName,
    KeywordSetsExhausted,
    MessageGone,
    MidbError,
    NoSuchAccount,
    NoSuchBody,
    NoSuchFolder,
    NotDurable,
    OverQuota,
    ReadOnlyStore,
    StoreBusy,
    StoreFull,
    TooBig,
    TooManyKeywords,
)
from midb.events import WatchHandle
from midb.folderlang import SPECIAL_FOLDERS, FolderLanguages
from midb.folders import (
    INBOX,
    SEPARATOR,
    SPECIAL_OFFSET,
    SPECIAL_USE_OF_CODE,
    STATE_HELD_MESSAGES,
    FolderEntry,
    FolderInfo,
    FolderRecord,
    FolderRename,
    NameFacts,
    check_new_name,
    folder_entries_of,
    normalize_name,
    parent_names,
    record_highestmodseq,
    special_use_code,
)
from midb.keys import (
    CHANGE_KEY_MODSEQ_UID,
    FOLDER,
    MAX_U32,
    U32,
    U64,
    UID_IN_CHANGE_KEY,
    UID_IN_MESSAGE_KEY,
    account_key,
    blob_key,
    change_key,
    folder_key,
    message_key,
    name_key,
    owner_key,
    pack_u32,
    prefix_end,
    prefix_items,
    unpack_folder_key,
    unpack_owner_key,
    unpack_u32,
)
from midb.lru import BoundedCache
from midb.messages import (
    BLOB_SLICE,
    DELETED,
    FIXED_SIZE,
    FLAGS_OFFSET,
    MAX_KEYWORDS_PER_MESSAGE,
    MODSEQ_FIELD,
    U32_ARRAY_CODE,
    FlagColumns,
    FlagSet,
    MessageMeta,
    counter_deltas,
    flag_columns_from_pairs,
    flag_columns_of_records,
    flag_rows_from_pairs,
    meta_from_record,
    metas_from_pairs,
    pack_record,
    parse_flags,
    record_sizes,
    split_pairs,
    tail_keyword_count,
    uid_array_from_keys,
    uids_from_keys,
    unpack_record,
    with_modseq_and_flags,
)
from midb.metadata import MetadataMixin, copy_folder_entries
from midb.orphans import WriterMarker
from midb.summary import Summary, decode_summary, encode_summary, sort_record, summarize
from midb.tombstones import Vanished

__all__ = [
    "Account", "AccountExists", "FolderExists", "FolderInfo", "FolderNotEmpty", "HasChildren",
    "InvalidArgument", "InvalidFlag", "InvalidName", "KeywordSetsExhausted", "MessageMeta", "MidbError",
    "NoSuchAccount", "NoSuchBody", "NoSuchFolder", "OverQuota", "ReadOnlyStore", "Store", "StoreBusy",
    "TooBig", "WatchHandle",
]

T = TypeVar("T")
# A message to store: any bytes-like object (copied once, by _prepare_append).
MessageData = bytes | bytearray | memoryview
# (data, flags, internaldate or None for now, tzoffset): one message of an append.
AppendItem = tuple[MessageData, Iterable[str], int | None, int]
# An append item validated (Store._prepare_append): data, the record tail of its flags (keywords
# not yet in the folder's spelling), internaldate, tzoffset.
_Prepared = tuple[bytes, bytes, int, int]
log = logging.getLogger(__name__)

_UNSET: Any = object()
MAX_TZOFFSET = 24 * 60 - 1
MAX_LANG_LENGTH = 64
MAX_PASSWORD_HASH_LENGTH = 1024
STORE_MODES = ("set", "add", "remove")
# Bodies kept in the index are read whole (never streamed from a file): keep them small.
INLINE_MAX = 256 * 1024
# Small bodies stop going into the index once the LMDB map is this full: the map is sized for the
# index, and bodies must never be what fills it (they go on being stored as files then).
INLINE_MAP_SHARE = 0.5
_DENSE_FACTOR = 4   # a UID set at least 1/4 as large as its range is read with one cursor pass
_COLUMN_SHARE = 8   # a UID set at least 1/8 of its folder is read from the flag column (midb.columns)
# A folder scan of at least this many records first asks for its leaf pages all at once
# (midb.prefetch). Below it the scan reads about 16 leaf pages or fewer: a few faults on a cold
# cache, and on a warm one the walk over the branch pages would be a good part of the scan's cost.
# A flag list of this many UIDs (a leaf page's worth) is asked for the same way.
PREFETCH_FROM = 1024
# sort_values looks UIDs up one by one below one in this many of the entries a pass over their
# range would read, and makes that pass above (a lookup costs several entries of a scan).
_LOOKUPS_PER_SCAN = 8
# Derived entries (sort entries, restored save dates) written per non-durable transaction: a
# folder's worth must not hold the writer's lock for long.
_ENTRIES_PER_WRITE = 2_000
# Messages Store.expire removes in one transaction: a Trash of 100,000 expiring at once must not
# hold the writer's lock (every delivery of the shard waits on it) for seconds.
EXPIRE_BATCH = 2_000
# What summary_fields_by_key gives for a body that is gone (a value of any type may be None).
_GONE = object()
_first = operator.itemgetter(0)
_COUNTER_ACCOUNT = b"next-account"
_COUNTER_UIDVALIDITY = b"last-uidvalidity"
_COUNTER_FOLDER = b"next-folder:"
# + account key: how many times the account's subscriptions changed (a u64; absent: never), so
# that a reader that holds them (IMAP NOTIFY) learns from one key whether to read them again.
_COUNTER_SUBSCRIPTIONS = b"subscriptions-changed:"
# + account key + generation (u64) + name: the names each change of the subscriptions touched, for
# the last SUBSCRIPTION_LOG_KEPT changes, so that such a reader reads what changed, not all of them.
_SUBSCRIPTION_LOG = b"subscription-log:"
SUBSCRIPTION_LOG_KEPT = 256
# A deleted folder's last UIDNEXT and HIGHESTMODSEQ, under its account's name and its UIDVALIDITY:
# a restore of it from an older backup (midb import of an export) must not give again the UIDs
# and mod-sequences the mail that came after the backup had. Kept when the account goes too, so
# an account restored under its name is covered as well; 12 bytes a deleted folder.
_RETIRED = b"retired:"   # + account name (UTF-8) + NUL + u32 UIDVALIDITY -> >IQ uidnext, highestmodseq
_RETIRED_VALUE = struct.Struct(">IQ")


def _retired_key(account_name: str, uidvalidity: int) -> bytes:
    return _RETIRED + account_name.encode("utf-8") + b"\0" + pack_u32(uidvalidity)
# Decoded MIME digests kept per Store (see Store.digest): a few KiB each.
DIGEST_CACHE_ENTRIES = 1024


def _flags_tail(flags: Iterable[str]) -> bytes:
    """The record tail of flags given for a new message, checked (parse_flags, the keyword bound)."""
    flag_set = parse_flags(flags)
    _check_keyword_count(len(flag_set.keywords))
    return flag_set.encode()


class SubscriptionsRead(NamedTuple):
    """Store.subscriptions_since: the subscriptions' generation now, and all the subscribed names
    (``names``, code point order) or those changed since (``changed``: name -> subscribed now),
    or neither (no change)."""

    generation: int
    names: list[str] | None
    changed: dict[str, bool] | None


class ViewChanges(NamedTuple):
    """Store.view_changes_since: what changed in a folder after a modseq, for a view of it."""

    changed: list[MessageMeta]  # records of changed messages the view holds, ascending UID
    new: list[int]  # UIDs of changed messages beyond the view (arrived since), ascending
    vanished: Vanished  # UIDs expunged
    top_modseq: int  # the highest modseq among changed and new messages (0: none)
    # (UID, modseq) of the changed messages the view holds, ascending UID, instead of ``changed``
    # when there were more than the caller wanted read at once (``read_at_most``)
    unread: Sequence[tuple[int, int]] = ()


class Store(MetadataMixin):
    """The message store. Thread-safe; several processes may open the same path at once.

    fsync=True (the default) makes every returned write durable: bodies are fsynced before the index
    commit and LMDB syncs data and meta pages on commit. fsync=False is for tests and bulk tools: a
    system crash (not a process crash) may then lose or corrupt recent writes.

    parse_delay: None (the default) parses each body (MIME digest and search summary) inside the
    append that stores it; a number of seconds has a thread parse it that long after its commit
    instead, unless it is expunged first or a reader parses it before (midb.deferred).

    Body files no message references any more are removed by threads after the commit
    (midb.removal). ``take_over_removals``: also remove those a process left recorded when it
    stopped or died (False for an open that only checks the store and closes it again).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True, map_size: int = 8 << 30,
                 run_dir: str | None = None, data_path: list[str] | None = None,
                 default_lang: str = "en", readonly: bool = False, max_message_size: int = 0,
                 inline_limit: int = 0, shards: int = 1, parse_delay: float | None = None,
                 take_over_removals: bool = True) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.fsync = fsync
        # Bodies up to this size are kept in the index itself (see _store_bodies); 0: always files.
        self.inline_limit = max(0, min(int(inline_limit), INLINE_MAX))
        self.readonly = readonly
        self.default_lang = default_lang
        self.max_message_size = max_message_size
        self.index_dir = os.path.join(self.path, "index")
        self.run_dir = os.path.abspath(run_dir) if run_dir else os.path.join(self.path, "run")
        self._map_size = map_size
        if readonly:
            if not os.path.isfile(os.path.join(self.index_dir, "data.mdb")):
                raise MidbError(f"no midb store at {self.path}")
        else:
            try:
                os.makedirs(self.index_dir, mode=0o750, exist_ok=True)
                os.makedirs(os.path.join(self.run_dir, "notify"), mode=0o770, exist_ok=True)
            except OSError as error:
                raise MidbError(f"cannot create store directories under {self.path}: {error}") from error
        try:
            wanted_shards = shards_of.check_count(shards)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        self._shards: list[SharedEnv] = self._open_shards(wanted_shards)
        self._shared: SharedEnv = self._shards[0]
        try:
            self._blobs = BlobFiles(os.path.join(self.path, "eml"), fsync=fsync, create=not readonly)
            self._notifier = events.attach(self._shared, self.run_dir)
        except BaseException:
            for shared in self._shards:
                release(shared)
            raise
        self._langs = FolderLanguages.load(data_path)
        self._digests: BoundedCache[str, mime.Digest] = BoundedCache(DIGEST_CACHE_ENTRIES)
        self._parser: DeferredParser | None = None
        if parse_delay is not None and not readonly:
            self._parser = DeferredParser(self.store_parsed, parse_delay)
        self._remover: removal.BodyRemover[tuple[int, str]] | None = None
        self._marker: WriterMarker | None = None
        self._closed = False
        if not readonly:
            self._remover = removal.BodyRemover(self._unlink_removed, self._forget_removed)
            # Says whether this process stopped cleanly: if not, a sweep removes its orphans.
            self._marker = WriterMarker.create(self.path, fsync=self.fsync)
            if take_over_removals:
                try:
                    self._remove_recorded()
                except BaseException:
                    self.close()
                    raise

    # ---- life cycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        if self._parser is not None:
            self._parser.close()
        if self._remover is not None and not self._shared.stale:
            self._remover.close()
        if self._marker is not None:
            self._marker.release()   # a no-op in a forked child: the parent's
        self._closed = True
        if self._shared.stale:
            return
        events.detach(self._shared, self._notifier)
        for shared in self._shards:
            release(shared)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _env(self) -> SharedEnv:
        """Shard 0: the whole index of a store of one shard; in a store of several, the one that
        records their number and carries the notifier (account data: _home)."""
        if self._closed:
            raise MidbError("store is closed")
        if self._shared.stale:
            self._reopen_after_fork()
        return self._shared

    def _reopen_after_fork(self) -> None:
        # A forked child must not touch the parent's LMDB handles: open our own.
        self._shards = self._open_shards(len(self._shards))
        self._shared = self._shards[0]
        self._notifier = events.attach(self._shared, self.run_dir)
        if not self.readonly:
            self._marker = WriterMarker.create(self.path, fsync=self.fsync)

    def _open_shards(self, wanted: int) -> list[SharedEnv]:
        """Shard 0, then as many more as it records (recording `wanted` in a store just created)."""
        opened = [acquire(self.index_dir, readonly=self.readonly, sync=self.fsync, map_size=self._map_size)]
        try:
            count = self._shard_count(opened[0], wanted)
            if self.readonly:
                missing = shards_of.missing_dirs(self.index_dir, count)
                if missing:
                    raise MidbError(f"{self.path}: index shard missing: {missing[0]}")
            for shard in range(1, count):
                directory = shards_of.shard_dir(self.index_dir, shard)
                if not self.readonly:
                    try:
                        os.makedirs(directory, mode=0o750, exist_ok=True)
                    except OSError as error:
                        raise MidbError(f"cannot create {directory}: {error}") from error
                opened.append(acquire(directory, readonly=self.readonly, sync=self.fsync,
                                      map_size=self._map_size))
        except BaseException:
            for shared in opened:
                release(shared)
            raise
        return opened

    def _shard_count(self, first: SharedEnv, wanted: int) -> int:
        with lmdb_errors():
            with first.read() as txn:
                raw = txn.get(SHARD_COUNT_KEY, db=first.dbs.meta)
            if raw is None and not self.readonly:
                # A store just created: record the count it was created with (first one wins).
                with first.env.begin(write=True) as txn:
                    txn.put(SHARD_COUNT_KEY, pack_u32(wanted), db=first.dbs.meta, overwrite=False)
                    raw = txn.get(SHARD_COUNT_KEY, db=first.dbs.meta)
        count = shards_of.LEGACY_COUNT if raw is None else unpack_u32(raw)
        if not 1 <= count <= shards_of.MAX_COUNT:
            raise MidbError(f"{self.path}: unusable shard count {count}")
        return count

    def site_secret(self, purpose: bytes) -> bytes | None:
        """A secret for ``purpose`` that is the same in every process and after every restart
        of this store (an HMAC of ``purpose`` under 32 random bytes drawn the first time and
        kept in shard 0's meta table); None from a read-only store that has none yet."""
        first = self._shards[0]
        with lmdb_errors():
            with first.read() as txn:
                raw = txn.get(SITE_SECRET_KEY, db=first.dbs.meta)
        if raw is None:
            if self.readonly:
                return None

            def draw(txn: Any, dbs: Databases, effects: WriteEffects) -> bytes:
                txn.put(SITE_SECRET_KEY, secrets.token_bytes(32), db=dbs.meta, overwrite=False)  # first one wins
                return bytes(txn.get(SITE_SECRET_KEY, db=dbs.meta))

            raw = self._write(draw, first)
        return hmac.new(bytes(raw), purpose, hashlib.sha256).digest()

    @property
    def shard_count(self) -> int:
        """How many LMDB environments the index is split into (midb.shards)."""
        return len(self._shards)

    def _live_shards(self) -> list[SharedEnv]:
        if self._closed:
            raise MidbError("store is closed")
        if self._shared.stale:
            self._reopen_after_fork()
        return self._shards

    def _home(self, account: object) -> SharedEnv:
        """The shard of an account, by name (NoSuchAccount for a name no account can have)."""
        return self._live_shards()[self._home_index(account)]

    def _home_index(self, account: object) -> int:
        count = len(self._shards)
        if count == 1:
            return 0
        try:
            name = normalize_account_name(account)
        except InvalidName:
            raise NoSuchAccount(f"no such account {account!r}") from None
        return shards_of.of_name(name, count)

    def _home_of_id(self, account_id: int) -> SharedEnv:
        shards = self._live_shards()
        return shards[shards_of.of_account_id(account_id, len(shards))]

    def _home_of_blob(self, blob_raw: bytes) -> SharedEnv:
        shards = self._live_shards()
        return shards[shards_of.of_blob(blob_raw, len(shards))]

    def _write(self, job: Callable[[Any, Databases, WriteEffects], Any], shared: SharedEnv, *,
               durable: bool = True) -> Any:
        """Run a write job. ``durable=False`` for changes whose loss in a power failure loses no
        mail and misleads no client for long (flags, \\Recent claims, subscriptions): they
        become durable with the next sync of any write instead of paying one of their own."""
        if self.readonly:
            raise ReadOnlyStore("store opened read-only")
        try:
            result, effects = shared.write(job, durable=self.fsync and durable)
        except NotDurable as error:
            self._publish(error.changes)   # it stands meanwhile: sessions must see it
            raise
        self._after_commit(effects, shared)
        return result

    @staticmethod
    def _refuse_growth(shared: SharedEnv) -> None:
        """StoreFull for a write that adds data to a shard whose map is nearly full: the rest
        is kept for the writes that remove mail (midb.env.growth_limit)."""
        if not shared.room_to_grow():
            raise StoreFull("message store is full (the rest of the LMDB map is kept for deleting mail)")

    def _after_commit(self, effects: WriteEffects, shared: SharedEnv) -> None:
        if effects.unlink:
            self._hand_over(effects.unlink, self._shards.index(shared))
        self._publish(effects.changes)

    def _publish(self, changes: dict[tuple[int, int], int]) -> None:
        if changes:
            events.publish_all(self._shared, [(account_id, folder_id, modseq) for (account_id, folder_id),
                                              modseq in changes.items()])

    def _remove_recorded(self) -> None:
        """At open: take over the removals a process left recorded (it stopped or died first)."""
        assert self._remover is not None
        for shard, shared in enumerate(self._shards):
            with lmdb_errors(), shared.read() as txn:
                blob_raws = removal.recorded(txn, shared.dbs)
                # Never expected, but a file the index references is mail: its record is wrong.
                wrong = {blob_raw for blob_raw in blob_raws if not removal.well_formed(blob_raw)
                         or bodyrecords.get(txn, shared.dbs, bodyrecords.REFS, blob_raw) is not None}
            if not blob_raws:
                continue
            # The records may be another process's commit whose meta page it has not synced yet
            # (metasync is off), or one whose sync failed: made durable here first, by a commit
            # and its sync (removal.touch), so that a power failure cannot bring back a message
            # whose file this process removed. Unsynced, they wait for a later open.
            try:
                self._write(removal.touch, shared, durable=False)
            except MidbError as error:
                log.warning("%s: cannot commit before removing the bodies of expunged messages: %s",
                            shared.index_dir, error)
                continue
            if not shared.sync():
                continue
            if wrong:
                log.warning("%d records of bodies to remove are damaged or name a body still "
                            "referenced; dropped", len(wrong))
                self._write(_forget_removals(sorted(wrong)), shared)
            self._remover.remove((shard, blob_raw.hex()) for blob_raw in blob_raws if blob_raw not in wrong)

    def _hand_over(self, blobs: Iterable[str], shard: int) -> None:
        """Bodies released by a commit in ``shard``, their removal recorded there: to the remover."""
        if self._remover is not None:
            self._remover.remove((shard, blob) for blob in blobs)

    def _unlink_removed(self, item: tuple[int, str]) -> None:
        self._blobs.unlink(item[1])

    def _forget_removed(self, items: list[tuple[int, str]]) -> None:
        """A remover thread: these bodies' files are gone; drop their records, each in the shard
        it was written in. Not synced of its own (midb.removal)."""
        by_shard: dict[int, list[bytes]] = {}
        for shard, blob in items:
            by_shard.setdefault(shard, []).append(bytes.fromhex(blob))
        shards = self._live_shards()
        for shard, blob_raws in by_shard.items():
            self._write(_forget_removals(blob_raws), shards[shard], durable=False)

    def wait_for_removals(self, timeout: float = removal.CLOSE_WAIT) -> bool:
        """Wait until the body files released so far are removed (True), or ``timeout`` passed."""
        return self._remover is None or self._remover.wait(timeout)

    def removals_pending(self) -> int:
        """Body files released by this process and not removed yet."""
        return 0 if self._remover is None else self._remover.pending()

    # ---- shared transaction helpers ----------------------------------------------------------------

    @staticmethod
    def _account_id(txn: Any, dbs: Databases, name: object) -> int:
        try:
            key = normalize_account_name(name).encode("utf-8")
        except InvalidName:
            raise NoSuchAccount(f"no such account {name!r}") from None
        raw = txn.get(key, db=dbs.account_names)
        if raw is None:
            raise NoSuchAccount(f"no such account {name!r}")
        return unpack_u32(raw)

    @staticmethod
    def _account(txn: Any, dbs: Databases, account_id: int) -> Account:
        raw = txn.get(account_key(account_id), db=dbs.accounts)
        if raw is None:
            raise NoSuchAccount(f"no account with id {account_id}")
        return decode_account(account_id, raw)

    @staticmethod
    def _folder(txn: Any, dbs: Databases, account_id: int, folder_id: object) -> FolderRecord:
        if not isinstance(folder_id, int) or not 0 < folder_id <= MAX_U32:
            raise NoSuchFolder(f"no folder with id {folder_id!r}")
        raw = txn.get(folder_key(account_id, folder_id), db=dbs.folders)
        if raw is None:
            raise NoSuchFolder(f"no folder with id {folder_id}")
        return FolderRecord.decode(folder_id, raw)

    @staticmethod
    def _folder_id(txn: Any, dbs: Databases, account_id: int, name: str) -> int | None:
        raw = txn.get(name_key(account_id, name), db=dbs.folder_names)
        return None if raw is None else unpack_u32(raw)

    @staticmethod
    def _put_folder(txn: Any, dbs: Databases, account_id: int, record: FolderRecord) -> None:
        txn.put(folder_key(account_id, record.id), record.encode(), db=dbs.folders)

    @staticmethod
    def _subscribed(txn: Any, dbs: Databases, account_id: int, name: str) -> bool:
        return txn.get(name_key(account_id, name), db=dbs.subscriptions) is not None

    def _info(self, txn: Any, dbs: Databases, account_id: int, record: FolderRecord) -> FolderInfo:
        return record.info(self._subscribed(txn, dbs, account_id, record.name))

    @staticmethod
    def _next_counter(txn: Any, dbs: Databases, key: bytes) -> int:
        raw = txn.get(key, db=dbs.counters)
        value = 1 if raw is None else unpack_u32(raw)
        if value > MAX_U32 - 1:
            raise MidbError("identifier space exhausted")
        txn.put(key, pack_u32(value + 1), db=dbs.counters)
        return value

    @staticmethod
    def _new_uidvalidity(txn: Any, dbs: Databases) -> int:
        """Time-based, strictly increasing across the store: a re-created name gets a new value."""
        raw = txn.get(_COUNTER_UIDVALIDITY, db=dbs.counters)
        last = 0 if raw is None else unpack_u32(raw)
        value = max(int(time.time()), last + 1)
        if value > MAX_U32:
            value = 1   # 2106 or a pathological import: wrap rather than fail
        txn.put(_COUNTER_UIDVALIDITY, pack_u32(value), db=dbs.counters)
        return value

    @staticmethod
    def _note_uidvalidity(txn: Any, dbs: Databases, value: int) -> None:
        """An imported UIDVALIDITY: keep later time-based values above it (unless it is absurd)."""
        raw = txn.get(_COUNTER_UIDVALIDITY, db=dbs.counters)
        last = 0 if raw is None else unpack_u32(raw)
        if last < value <= int(time.time()) + 10 * 365 * 86400:
            txn.put(_COUNTER_UIDVALIDITY, pack_u32(value), db=dbs.counters)

    @staticmethod
    def _adjust_usage(txn: Any, dbs: Databases, account_id: int, size: int, messages: int) -> None:
        key = account_key(account_id)
        used_bytes, used_messages = decode_usage(txn.get(key, db=dbs.usage))
        txn.put(key, encode_usage(used_bytes + size, used_messages + messages), db=dbs.usage)

    def _check_quota(self, txn: Any, dbs: Databases, account_id: int, size: int, messages: int) -> None:
        resource = self._quota_exceeded(txn, dbs, account_id, size, messages)
        if resource is not None:
            raise OverQuota(resource)

    def _quota_exceeded(self, txn: Any, dbs: Databases, account_id: int, size: int, messages: int) -> str | None:
        """The resource ("MESSAGE" or "STORAGE") that ``messages`` more messages of ``size``
        octets would take past its limit, or None. Only a resource that grows is checked (RFC
        9208 refuses what would take usage past a limit): a REPLACE that adds octets but no
        message is not refused because an account is over its message limit already."""
        account = self._account(txn, dbs, account_id)
        if not account.quota_bytes and not account.quota_messages:
            return None
        used_bytes, used_messages = decode_usage(txn.get(account_key(account_id), db=dbs.usage))
        if account.quota_messages and messages > 0 and used_messages + messages > account.quota_messages:
            return "MESSAGE"
        if account.quota_bytes and size > 0 and used_bytes + size > account.quota_bytes:
            return "STORAGE"
        return None

    def quota_exceeded(self, account: str, size: int, messages: int) -> str | None:
        """As the check every store write makes, read ahead of the write: the resource that
        ``messages`` more messages of ``size`` octets would exceed, or None. The answer may be
        stale by the time of the write, which checks again; APPEND asks it before the client
        uploads a synchronising literal."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            return self._quota_exceeded(txn, dbs, self._account_id(txn, dbs, account), size, messages)

    def copy_quota_exceeded(self, account: str, folder_id: int, uids: Iterable[int]) -> str | None:
        """quota_exceeded for a copy of the messages ``uids`` of the folder into the same
        account: the resource that their count and octets, taken together, would exceed, or
        None. A COPY written in pieces asks it first, since each piece checks only itself: its
        first pieces would take the room a delivery meanwhile is then refused, only to be
        undone when a later piece meets the limit. Stale by the write, which checks each piece
        again. An account without a quota costs no read of the messages."""
        wanted = _uid_list(uids)
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            limits = self._account(txn, dbs, account_id)
            if not limits.quota_bytes and not limits.quota_messages:
                return None
            record = self._folder(txn, dbs, account_id, folder_id)
            records = [raw for _key, raw in self._records_of(txn, dbs, account_id, record.id, wanted)]
            return self._quota_exceeded(txn, dbs, account_id, sum(record_sizes(records)), len(records))

    @staticmethod
    def _blob_incref(txn: Any, dbs: Databases, blob_raw: bytes, count: int) -> None:
        raw = bodyrecords.get(txn, dbs, bodyrecords.REFS, blob_raw)
        if raw is None:
            raise MidbError(f"index inconsistency: body {blob_raw.hex()} has no record")
        refcount, size = unpack_blob_record(raw)
        bodyrecords.put(txn, dbs, bodyrecords.REFS, blob_raw, pack_blob_record(refcount + count, size))

    @staticmethod
    def _blob_decref(txn: Any, dbs: Databases, blob_raw: bytes, count: int, effects: WriteEffects) -> None:
        raw = bodyrecords.get(txn, dbs, bodyrecords.REFS, blob_raw)
        if raw is None:
            return
        refcount, size = unpack_blob_record(raw)
        if refcount <= count:
            if not bodyrecords.delete_all(txn, dbs, blob_raw):
                effects.unlink_blob(txn, dbs, blob_raw)   # a body file: removed after the commit
        else:
            bodyrecords.put(txn, dbs, bodyrecords.REFS, blob_raw, pack_blob_record(refcount - count, size))

    @classmethod
    def _delete_prefix(cls, txn: Any, db: Any, prefix: bytes) -> int:
        keys = prefix_items(txn, db, prefix, values=False)
        for key in keys:
            txn.delete(key, db=db)
        return len(keys)

    # ---- accounts -----------------------------------------------------------------------------------

    def create_account(self, name: str, *, password_hash: str | None = None,
                       lang: str | None = None, scram_sha256: str | None = None) -> Account:
        """Create an account with INBOX and the special-use folders named for its language.
        ``scram_sha256``: SCRAM keys of the same password (midb.passwords.password_credentials)."""
        account_name = normalize_account_name(name)
        _check_password_hash(password_hash)
        _check_scram(scram_sha256)
        _check_lang(lang)
        folder_names = self._langs.names(lang or self.default_lang)
        created = int(time.time())
        shard, count = self._home_index(account_name), len(self._shards)
        home = self._home(account_name)

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> Account:
            name_bytes = account_name.encode("utf-8")
            if txn.get(name_bytes, db=dbs.account_names) is not None:
                raise AccountExists(f"account {account_name} exists")
            try:
                account_id = shards_of.account_id(self._next_counter(txn, dbs, _COUNTER_ACCOUNT), shard, count)
            except ValueError:
                raise MidbError("identifier space exhausted") from None
            account = Account(id=account_id, name=account_name, password_hash=password_hash, lang=lang,
                              quota_bytes=0, quota_messages=0, disabled=False, created=created,
                              scram_sha256=scram_sha256)
            txn.put(account_key(account_id), encode_account(account), db=dbs.accounts)
            txn.put(name_bytes, pack_u32(account_id), db=dbs.account_names)
            txn.put(account_key(account_id), encode_usage(0, 0), db=dbs.usage)
            self._create_folder_tx(txn, dbs, effects, account_id, INBOX, 0, None)
            txn.put(name_key(account_id, INBOX), b"", db=dbs.subscriptions)
            subscribed = [INBOX]
            for special in SPECIAL_FOLDERS:
                folder_name = folder_names[special]
                if self._folder_id(txn, dbs, account_id, folder_name) is not None:
                    folder_name = special[1:]   # a translation collided with another folder name
                    if self._folder_id(txn, dbs, account_id, folder_name) is not None:
                        continue
                self._create_folder_tx(txn, dbs, effects, account_id, folder_name, special_use_code(special), None)
                txn.put(name_key(account_id, folder_name), b"", db=dbs.subscriptions)
                subscribed.append(folder_name)
            self._subscriptions_changed(txn, dbs, account_id, subscribed)
            return account

        self._refuse_growth(home)
        return self._write(job, home)

    def get_account(self, name: str) -> Account | None:
        try:
            shared = self._home(name)
        except NoSuchAccount:
            return None
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            try:
                account_id = self._account_id(txn, dbs, name)
            except NoSuchAccount:
                return None
            return self._account(txn, dbs, account_id)

    def keyword_sets_used(self, name: str) -> tuple[int, int]:
        """How many distinct keyword combinations the account has ever stored (ids of its
        MAX_KEYWORD_SET, never freed: midb.columns), and their keywords' octets (which, with a
        per-set cost, count against MAX_KEYWORD_SET_OCTETS: columns.keyword_set_charge)."""
        shared = self._home(name)
        with lmdb_errors(), shared.read() as txn:
            account_id = self._account_id(txn, shared.dbs, name)
            return (columns.keyword_sets_used(txn, shared.dbs, account_id),
                    columns.keyword_set_octets(txn, shared.dbs, account_id))

    def account_id(self, name: str) -> int:
        """The account's numeric id (NoSuchAccount if there is none). Ids are never reused, so a
        caller may keep it for as long as it works on that account: once the account is deleted,
        lookups by id find nothing."""
        shared = self._home(name)
        with lmdb_errors(), shared.read() as txn:
            return self._account_id(txn, shared.dbs, name)

    def account_by_id(self, account_id: int) -> Account | None:
        if not isinstance(account_id, int) or not 0 <= account_id <= MAX_U32:
            return None
        shared = self._home_of_id(account_id)
        with lmdb_errors(), shared.read() as txn:
            try:
                return self._account(txn, shared.dbs, account_id)
            except NoSuchAccount:
                return None

    def list_accounts(self) -> list[Account]:
        accounts: list[Account] = []
        for shared in self._live_shards():
            with lmdb_errors(), shared.read() as txn:
                cursor = txn.cursor(shared.dbs.accounts)
                accounts.extend(decode_account(unpack_u32(key), value) for key, value in cursor)
        return sorted(accounts, key=lambda account: account.name)

    def update_account(self, name: str, *, password_hash: Any = _UNSET, lang: Any = _UNSET,
                       quota_bytes: Any = _UNSET, quota_messages: Any = _UNSET,
                       quota_mailboxes: Any = _UNSET, quota_annotation_bytes: Any = _UNSET,
                       disabled: Any = _UNSET, autoexpunge: Any = _UNSET,
                       scram_sha256: Any = _UNSET, if_password_hash: Any = _UNSET) -> Account:
        """Change only the fields given. A new ``password_hash`` without ``scram_sha256`` drops
        the SCRAM keys: they were the old password's (midb.scram). Quota fields: 0 = none (the account's own, for
        quota_mailboxes and quota_annotation_bytes: the server's default then applies).
        ``autoexpunge``: the account's own expiry periods, {special use: seconds} (0 = never),
        replacing those it had; the uses it leaves out follow the server's (midb.expiry).
        ``if_password_hash``: change nothing (the account is returned as it is) unless the stored
        hash is still this one, checked in the write: a login's upgrade, derived from the password
        it checked, must not replace a password set meanwhile (midb.authdb.MidbAuth)."""
        changes: dict[str, Any] = {}
        if password_hash is not _UNSET:
            _check_password_hash(password_hash)
            changes["password_hash"] = password_hash
            changes["scram_sha256"] = None
        if scram_sha256 is not _UNSET:
            _check_scram(scram_sha256)
            changes["scram_sha256"] = scram_sha256
        if lang is not _UNSET:
            _check_lang(lang)
            changes["lang"] = lang
        for field, value in (("quota_bytes", quota_bytes), ("quota_messages", quota_messages),
                             ("quota_mailboxes", quota_mailboxes),
                             ("quota_annotation_bytes", quota_annotation_bytes)):
            if value is not _UNSET:
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
                    raise InvalidArgument(f"{field} must be a non-negative int")
                changes[field] = value
        if disabled is not _UNSET:
            if not isinstance(disabled, bool):
                raise InvalidArgument("disabled must be a bool")
            changes["disabled"] = disabled
        if autoexpunge is not _UNSET:
            changes["autoexpunge"] = _checked_expiry_periods(autoexpunge)

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> Account:
            account_id = self._account_id(txn, dbs, name)
            account = self._account(txn, dbs, account_id)
            if if_password_hash is not _UNSET and account.password_hash != if_password_hash:
                return account
            values = {field: getattr(account, field) for field in Account.__dataclass_fields__}
            values.update(changes)
            updated = Account(**values)
            txn.put(account_key(account_id), encode_account(updated), db=dbs.accounts)
            return updated

        return self._write(job, self._home(name))

    def delete_account(self, name: str) -> None:
        """Remove the account: folders, messages, body references, subscriptions, ownership."""

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> int:
            account_id = self._account_id(txn, dbs, name)
            account = self._account(txn, dbs, account_id)
            prefix = account_key(account_id)
            for key, raw in prefix_items(txn, dbs.folders, prefix):
                record = FolderRecord.decode(unpack_folder_key(key)[1], raw)
                effects.changed(account_id, record.id, record.highestmodseq + 1)
                self._retire(txn, dbs, account.name, record)
            self._drop_body_references(txn, dbs, effects,
                                       (raw for _key, raw in prefix_items(txn, dbs.messages, prefix)))
            for db in (dbs.messages, dbs.modseqs, dbs.tombstones, dbs.folders, dbs.folder_names,
                       dbs.subscriptions, dbs.owners, dbs.metadata, dbs.flag_lists, dbs.keyword_counts,
                       dbs.flag_columns, dbs.sort_records, dbs.keyword_sets):
                self._delete_prefix(txn, db, prefix)
            self._drop_ownership(txn, dbs, account_id)
            txn.delete(prefix, db=dbs.usage)
            txn.delete(prefix, db=dbs.accounts)
            txn.delete(account.name.encode("utf-8"), db=dbs.account_names)
            txn.delete(_COUNTER_FOLDER + prefix, db=dbs.counters)
            txn.delete(_COUNTER_SUBSCRIPTIONS + prefix, db=dbs.counters)
            self._delete_prefix(txn, dbs.counters, _SUBSCRIPTION_LOG + prefix)
            quotas.drop_counts(txn, dbs, account_id)
            return account_id

        home = self._home(name)
        account_id = self._write(job, home)
        # Ownership the account held over mailboxes of other shards. (Ids are never reused, so an
        # entry left behind by a crash here grants nothing; verify reports it, repair removes it.)
        for shared in self._live_shards():
            if shared is not home and self._holds_ownership(shared, account_id):
                self._write(lambda txn, dbs, _effects: self._drop_ownership(txn, dbs, account_id), shared)

    @staticmethod
    def _drop_ownership(txn: Any, dbs: Databases, actor_id: int) -> None:
        """Remove every ownership `actor_id` holds over mailboxes of this shard."""
        for key in list(txn.cursor(dbs.owners).iternext(values=False)):
            if unpack_owner_key(key)[1] == actor_id:
                txn.delete(key, db=dbs.owners)

    @staticmethod
    def _holds_ownership(shared: SharedEnv, actor_id: int) -> bool:
        with lmdb_errors(), shared.read() as txn:
            return any(unpack_owner_key(key)[1] == actor_id
                       for key in txn.cursor(shared.dbs.owners).iternext(values=False))

    def grant_owner(self, mailbox: str, actor: str) -> None:
        """Give `actor` store ownership of `mailbox` (login as actor!mailbox)."""

        # The actor may live in another shard; the entry lives with the mailbox.
        actor_id = self.account_id(actor)

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> None:
            mailbox_id = self._account_id(txn, dbs, mailbox)
            if mailbox_id != actor_id:
                txn.put(owner_key(mailbox_id, actor_id), b"", db=dbs.owners)

        self._write(job, self._home(mailbox))

    def revoke_owner(self, mailbox: str, actor: str) -> None:
        actor_id = self.account_id(actor)

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> None:
            mailbox_id = self._account_id(txn, dbs, mailbox)
            txn.delete(owner_key(mailbox_id, actor_id), db=dbs.owners)

        self._write(job, self._home(mailbox))

    def owners(self, mailbox: str) -> list[str]:
        shared = self._home(mailbox)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            mailbox_id = self._account_id(txn, dbs, mailbox)
            actor_ids = [unpack_owner_key(key)[1]
                         for key in prefix_items(txn, dbs.owners, account_key(mailbox_id), values=False)]
        actors = (self.account_by_id(actor_id) for actor_id in actor_ids)   # in their own shards
        return sorted(actor.name for actor in actors if actor is not None)

    def is_owner(self, mailbox: str, actor: str) -> bool:
        try:
            if normalize_account_name(mailbox) == normalize_account_name(actor):
                return True
        except InvalidName:
            return False
        try:
            actor_id = self.account_id(actor)
            shared = self._home(mailbox)
            with lmdb_errors(), shared.read() as txn:
                mailbox_id = self._account_id(txn, shared.dbs, mailbox)
                return txn.get(owner_key(mailbox_id, actor_id), db=shared.dbs.owners) is not None
        except NoSuchAccount:
            return False

    def usage(self, account: str) -> tuple[int, int]:
        """(bytes, messages) over all folders of the account, from transactional counters."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            return decode_usage(txn.get(account_key(account_id), db=dbs.usage))

    def quota_usage(self, account: str) -> quotas.QuotaUsage:
        """Everything the account's quotas count, in one snapshot: the usage counters, and the
        mailboxes and annotation octets counted (midb.quotas)."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            used_bytes, used_messages = decode_usage(txn.get(account_key(account_id), db=dbs.usage))
            return quotas.QuotaUsage(used_bytes, used_messages, quotas.folder_count(txn, dbs, account_id),
                                     quotas.annotation_octets(txn, dbs, account_id))

    def _mailbox_limit(self, txn: Any, dbs: Databases, account_id: int, quota_default: int | None) -> int:
        """The account's MAILBOX limit (0: none, or no check asked), as _annotation_limit."""
        if quota_default is None:
            return 0
        return quotas.effective_limit(self._account(txn, dbs, account_id).quota_mailboxes, quota_default)

    def _check_new_folders(self, txn: Any, dbs: Databases, account_id: int, names: list[str],
                           quota_default: int | None) -> None:
        """OverQuota(MAILBOX) when creating those of ``names`` that do not exist would pass the
        account's mailbox limit (``quota_default``: see midb.quotas; None: no check)."""
        limit = self._mailbox_limit(txn, dbs, account_id, quota_default)
        if not limit:
            return
        adding = sum(1 for name in names if self._folder_id(txn, dbs, account_id, name) is None)
        if adding:
            before = quotas.folder_count(txn, dbs, account_id, keep=True)
            quotas.check_growth(quotas.MAILBOX, before, before + adding, limit)

    # ---- folders ------------------------------------------------------------------------------------

    def list_folders(self, account: str) -> list[FolderInfo]:
        """Every folder of the account with its counters and subscription (the admin CLI, the
        importer); LIST reads folder_entries, which costs a fraction of this per folder."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            subscribed = {bytes(key[4:]) for key in
                          prefix_items(txn, dbs.subscriptions, account_key(account_id), values=False)}
            infos = []
            for key, folder_id, raw in self._named_records(txn, dbs, account_id, ""):
                record = FolderRecord.decode(folder_id, raw)
                infos.append(record.info(bytes(key[4:]) in subscribed))
        return infos

    def folder_entries(self, account: str, prefix: str = "", *, records: bool = False) -> list[FolderEntry]:
        """The folders whose names start with ``prefix``, in name (code point) order, as LIST
        shows them. One branch of a large tree (or one name) is read through that range of
        the name index, each record by its id; all of them (no prefix) by one cursor pass over
        the account's records, which hold the names too, and a sort. Either way only the name
        and the special-use byte of a record are decoded, unless ``records`` asks for the
        whole of each (its counters, for LIST-STATUS)."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            if prefix:
                pairs = [(folder_id, raw) for _key, folder_id, raw in
                         self._named_records(txn, dbs, account_id, prefix)]
            else:
                folder_id_of = FOLDER.unpack
                pairs = [(folder_id_of(key)[1], raw)
                         for key, raw in prefix_items(txn, dbs.folders, account_key(account_id))]
        return folder_entries_of(pairs, decode=records)

    def has_children(self, account: str, name: str) -> bool:
        """Whether any folder lies below ``name`` (LIST's \\HasChildren), from one cursor step."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            return self._has_children(txn, dbs, self._account_id(txn, dbs, account), name)

    def name_facts(self, account: str, names: Iterable[str], *, subscriptions: bool = False) -> NameFacts:
        """What LIST would say of each of ``names`` (normalised), read together: which exist,
        with their special use, which have children, and with ``subscriptions`` which are
        subscribed. A few lookups per name in the name index, so that a caller that lists a few
        names (IMAP NOTIFY's report) pays for those, not for every folder of the account."""
        shared = self._home(account)
        existing: dict[str, str | None] = {}
        with_children: set[str] = set()
        subscribed: set[str] = set()
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            special_use = SPECIAL_USE_OF_CODE
            for name in names:
                if subscriptions and self._subscribed(txn, dbs, account_id, name):
                    subscribed.add(name)
                folder_id = self._folder_id(txn, dbs, account_id, name)
                if folder_id is None:
                    continue
                raw = txn.get(folder_key(account_id, folder_id), db=dbs.folders)
                if raw is None:
                    continue
                existing[name] = special_use[raw[SPECIAL_OFFSET]]
                if self._has_children(txn, dbs, account_id, name):
                    with_children.add(name)
        return NameFacts(existing, with_children, subscribed)

    @staticmethod
    def _has_children(txn: Any, dbs: Databases, account_id: int, name: str) -> bool:
        prefix = name_key(account_id, name + SEPARATOR)
        cursor = txn.cursor(dbs.folder_names)
        return cursor.set_range(prefix) and cursor.key()[:len(prefix)] == prefix

    def _named_records(self, txn: Any, dbs: Databases, account_id: int,
                       prefix: str) -> list[tuple[bytes, int, bytes]]:
        """(name key, folder id, raw record) of the folders whose names start with ``prefix``,
        in name order (a loop of C calls: it runs once per folder of a listing)."""
        get = txn.get
        folders = dbs.folders
        unpack_id = U32.unpack
        record_key = FOLDER.pack
        out = []
        for key, raw_id in prefix_items(txn, dbs.folder_names, name_key(account_id, prefix)):
            folder_id = unpack_id(raw_id)[0]
            raw = get(record_key(account_id, folder_id), db=folders)
            if raw is not None:
                out.append((key, folder_id, raw))
        return out

    def get_folder(self, account: str, name: str) -> FolderInfo | None:
        return self._named_folder(account, name, with_info=True)

    def folder_counters(self, account: str, name: str) -> FolderRecord | None:
        """The folder's stored record: its counters, UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ (what
        STATUS reports), without the subscription lookup and the FolderInfo that get_folder adds."""
        return self._named_folder(account, name, with_info=False)

    def _named_folder(self, account: str, name: str, *, with_info: bool) -> Any:
        try:
            name = normalize_name(name)
        except InvalidName:
            return None
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            folder_id = self._folder_id(txn, dbs, account_id, name)
            if folder_id is None:
                return None
            record = self._folder(txn, dbs, account_id, folder_id)
            return self._info(txn, dbs, account_id, record) if with_info else record

    def folder_by_id(self, account: str, folder_id: int) -> FolderInfo | None:
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            try:
                record = self._folder(txn, dbs, account_id, folder_id)
            except NoSuchFolder:
                return None
            return self._info(txn, dbs, account_id, record)

    def highestmodseq(self, account_id: int, folder_id: int) -> int | None:
        """The folder's HIGHESTMODSEQ, None when the folder (or its account) is gone. One read of
        one record: every IMAP command ends by asking this for its selected mailbox."""
        shared = self._home_of_id(account_id)
        with lmdb_errors(), shared.read() as txn:
            raw = txn.get(folder_key(account_id, folder_id), db=shared.dbs.folders)
            return None if raw is None else record_highestmodseq(raw)

    def _create_folder_tx(self, txn: Any, dbs: Databases, effects: WriteEffects, account_id: int, name: str,
                          special: int, uidvalidity: int | None) -> FolderRecord:
        """Create `name` (normalised) and any missing parents (announced); FolderExists if it
        exists. The caller announces `name` itself, once its record is final (create_account
        need not: no one can watch an account before it exists, Store.watch)."""
        if self._folder_id(txn, dbs, account_id, name) is not None:
            raise FolderExists(f"folder {name} exists")
        parent_id = self._ensure_parents(txn, dbs, effects, account_id, name)
        return self._insert_folder(txn, dbs, account_id, name, parent_id, special, uidvalidity)

    def _ensure_parents(self, txn: Any, dbs: Databases, effects: WriteEffects, account_id: int, name: str) -> int:
        """Create the missing ancestors of ``name``; the id of its parent (0 at the top). Each one
        made is announced: a watcher (IMAP NOTIFY's MailboxName) learns of every new folder from
        the commit's events, whatever became of ``name`` by the time it looks."""
        parent_id = 0
        for ancestor in parent_names(name):
            existing = self._folder_id(txn, dbs, account_id, ancestor)
            if existing is None:
                made = self._insert_folder(txn, dbs, account_id, ancestor, parent_id, 0, None)
                effects.changed(account_id, made.id, made.highestmodseq)
                existing = made.id
            parent_id = existing
        return parent_id

    def _insert_folder(self, txn: Any, dbs: Databases, account_id: int, name: str, parent_id: int,
                       special: int, uidvalidity: int | None) -> FolderRecord:
        folder_id = self._next_counter(txn, dbs, _COUNTER_FOLDER + account_key(account_id))
        if uidvalidity is None:
            uidvalidity = self._new_uidvalidity(txn, dbs)
        else:
            self._note_uidvalidity(txn, dbs, uidvalidity)
        record = FolderRecord(folder_id, name, parent_id, uidvalidity, special=special)
        self._put_folder(txn, dbs, account_id, record)
        txn.put(name_key(account_id, name), pack_u32(folder_id), db=dbs.folder_names)
        quotas.adjust_count(txn, dbs, quotas.FOLDER_COUNT, account_id, 1)
        return record

    def create_folder(self, account: str, name: str, *, special_use: str | None = None,
                      uidvalidity: int | None = None, mailbox_quota_default: int | None = None) -> FolderInfo:
        """Create a folder and its missing parents; FolderExists / InvalidName. With
        ``mailbox_quota_default`` the account's mailbox quota is enforced (OverQuota, midb.quotas)."""
        name = normalize_name(name)
        check_new_name(name)
        special = special_use_code(special_use)
        if uidvalidity is not None:
            _check_uidvalidity(uidvalidity)

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> FolderInfo:
            account_id = self._account_id(txn, dbs, account)
            if self._folder_id(txn, dbs, account_id, name) is None:   # FolderExists comes first
                self._check_new_folders(txn, dbs, account_id, [*parent_names(name), name], mailbox_quota_default)
            record = self._create_folder_tx(txn, dbs, effects, account_id, name, special, uidvalidity)
            effects.changed(account_id, record.id, record.highestmodseq)
            return self._info(txn, dbs, account_id, record)

        home = self._home(account)
        self._refuse_growth(home)
        return self._write(job, home)

    def set_uidvalidity(self, account: str, folder_id: int, uidvalidity: int) -> None:
        """For importers: only while the folder has never held a message."""
        _check_uidvalidity(uidvalidity)

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> None:
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if record.state & STATE_HELD_MESSAGES or record.uidnext != 1:
                raise MidbError("UIDVALIDITY can only be set on a folder that never held a message")
            record.uidvalidity = uidvalidity
            self._note_uidvalidity(txn, dbs, uidvalidity)
            self._put_folder(txn, dbs, account_id, record)

        self._write(job, self._home(account))

    @staticmethod
    def _retire(txn: Any, dbs: Databases, account_name: str, record: FolderRecord) -> None:
        """Remember a folder being deleted (see _RETIRED); an earlier one of that UIDVALIDITY
        (deleted, restored, deleted again) keeps the higher values. A folder that never gave out
        a UID or a mod-sequence has nothing to protect and leaves no entry, so a client that
        creates and deletes empty folders without end does not grow the table."""
        if record.uidnext <= 1 and record.highestmodseq <= 1:
            return
        key = _retired_key(account_name, record.uidvalidity)
        uidnext, modseq = record.uidnext, record.highestmodseq
        known = txn.get(key, db=dbs.counters)
        if known is not None and len(known) == _RETIRED_VALUE.size:
            old_uidnext, old_modseq = _RETIRED_VALUE.unpack(known)
            uidnext, modseq = max(uidnext, old_uidnext), max(modseq, old_modseq)
        txn.put(key, _RETIRED_VALUE.pack(uidnext, modseq), db=dbs.counters)

    def retired_folder(self, account: str, uidvalidity: int) -> tuple[int, int] | None:
        """(UIDNEXT, HIGHESTMODSEQ) a deleted folder of ``account`` with ``uidvalidity`` last
        had, or None: for importers restoring it from an older backup."""
        shared = self._home(account)
        key = _retired_key(normalize_account_name(account), uidvalidity)
        with lmdb_errors(), shared.read() as txn:
            raw = txn.get(key, db=shared.dbs.counters)
        if raw is None or len(raw) != _RETIRED_VALUE.size:
            return None
        uidnext, modseq = _RETIRED_VALUE.unpack(raw)
        return int(uidnext), int(modseq)

    def forget_expunges_up_to(self, account: str, folder_id: int, modseq: int, uidnext: int) -> None:
        """For importers restoring a folder deleted here (retired_folder): a QRESYNC client that
        last synchronised at a mod-sequence up to ``modseq`` is told, of the UIDs below
        ``uidnext``, every one not in the folder as VANISHED (the superset RFC 7162 section
        3.2.5.1 allows): the mail that came after the older copy is gone, and which of it the
        client held is not known."""
        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> None:
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            # Floor above ``modseq``: a question about changes after ``modseq`` itself is
            # answered with the superset too (the deletion left no tombstones).
            tombstones_of.raise_floor(txn, dbs.tombstones, account_id, record.id, modseq + 1, uidnext)

        self._write(job, self._home(account))

    def raise_highestmodseq(self, account: str, folder_id: int, modseq: int) -> bool:
        """For importers: the folder's HIGHESTMODSEQ becomes at least ``modseq`` (the source's),
        so later changes get mod-sequences above those clients already hold; -> whether it rose."""
        if not isinstance(modseq, int) or isinstance(modseq, bool) or not 0 < modseq < 1 << 63:
            raise InvalidArgument("modseq must be a positive 63-bit integer")

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> bool:
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if record.highestmodseq >= modseq:
                return False
            record.highestmodseq = modseq
            self._put_folder(txn, dbs, account_id, record)
            effects.changed(account_id, record.id, record.highestmodseq)
            return True

        return bool(self._write(job, self._home(account)))

    def raise_uidnext(self, account: str, folder_id: int, uidnext: int) -> bool:
        """For importers, once the source's messages are stored under their UIDs: the folder's
        UIDNEXT becomes at least ``uidnext`` (the source's), so no new message reuses a UID a
        client of the source may have seen; -> whether it rose. As the source had it, every UID
        below ``uidnext`` not in the folder was used and is gone, but left no tombstone here: a
        QRESYNC client that synchronised at a mod-sequence below the folder's HIGHESTMODSEQ
        after this call is told of them as VANISHED (the superset of the tombstones' floor,
        midb.tombstones). A raised UIDNEXT also gets a tombstone for ``uidnext - 1`` at a new
        mod-sequence, so that a client at the HIGHESTMODSEQ before it is among those. One
        transaction: an interrupted import leaves the folder as it was or raised, nothing in
        between."""
        if not isinstance(uidnext, int) or isinstance(uidnext, bool) or not 1 < uidnext <= MAX_U32:
            raise InvalidArgument(f"uidnext must be an integer from 2 to {MAX_U32}")

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> bool:
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            rose = record.uidnext < uidnext   # checked here: a delivery may have got there first
            if rose:
                record.uidnext = uidnext
                txn.put(change_key(account_id, record.id, record.next_modseq(), uidnext - 1), b"",
                        db=dbs.tombstones)
                self._put_folder(txn, dbs, account_id, record)
                effects.changed(account_id, record.id, record.highestmodseq)
            # Also when UIDNEXT stayed: the source's last UID may be here, and its gaps not.
            tombstones_of.raise_floor(txn, dbs.tombstones, account_id, record.id, record.highestmodseq, uidnext)
            return rose

        return bool(self._write(job, self._home(account)))

    def delete_folder(self, account: str, name: str) -> None:
        """Delete a folder and its messages. INBOX: InvalidName; with children: HasChildren."""
        name = normalize_name(name)
        if name == INBOX:
            raise InvalidName("INBOX cannot be deleted")

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> None:
            account_id = self._account_id(txn, dbs, account)
            folder_id = self._folder_id(txn, dbs, account_id, name)
            if folder_id is None:
                raise NoSuchFolder(f"no folder {name}")
            if self._has_children(txn, dbs, account_id, name):
                raise HasChildren(f"folder {name} has inferior folders")
            record = self._folder(txn, dbs, account_id, folder_id)
            prefix = folder_key(account_id, folder_id)
            self._drop_body_references(txn, dbs, effects,
                                       (raw for _key, raw in prefix_items(txn, dbs.messages, prefix)))
            self._retire(txn, dbs, normalize_account_name(account), record)
            # Annotations go with the folder: a new folder of the same name starts without them.
            for db in (dbs.messages, dbs.modseqs, dbs.tombstones, dbs.metadata, dbs.flag_lists,
                       dbs.keyword_counts, dbs.flag_columns, dbs.sort_records):
                self._delete_prefix(txn, db, prefix)
            self._adjust_usage(txn, dbs, account_id, -record.size, -record.messages)
            txn.delete(prefix, db=dbs.folders)
            txn.delete(name_key(account_id, name), db=dbs.folder_names)
            quotas.adjust_count(txn, dbs, quotas.FOLDER_COUNT, account_id, -1)
            effects.changed(account_id, folder_id, record.highestmodseq + 1)

        self._write(job, self._home(account))

    def rename_folder(self, account: str, old: str, new: str, *, mailbox_quota_default: int | None = None,
                      annotation_quota_default: int | None = None) -> FolderInfo:
        """Rename a folder with its children (UIDVALIDITY kept). Renaming INBOX moves its messages
        into a new folder `new` and leaves INBOX empty (RFC 3501 6.3.5). Subscriptions follow.

        With the quota defaults, the account's quotas are enforced (OverQuota, midb.quotas): the
        missing parents of `new` are new mailboxes, and so is `new` when INBOX is renamed, which
        also copies INBOX's annotations."""
        old = normalize_name(old)
        new = normalize_name(new)
        check_new_name(new)
        if new == INBOX:
            raise FolderExists("INBOX exists")
        if old == new:
            raise FolderExists(f"folder {new} exists")
        # (INBOX stays where it is: its messages may move to a folder beneath it.)
        if old != INBOX and new.startswith(old + SEPARATOR):
            raise InvalidName("cannot rename a folder into its own subtree")
        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> FolderInfo:
            account_id = self._account_id(txn, dbs, account)
            if self._folder_id(txn, dbs, account_id, old) is not None and \
                    self._folder_id(txn, dbs, account_id, new) is None:   # NoSuchFolder, FolderExists first
                created = [*parent_names(new), new] if old == INBOX else list(parent_names(new))
                self._check_new_folders(txn, dbs, account_id, created, mailbox_quota_default)
            limit = self._annotation_limit(txn, dbs, account_id, annotation_quota_default) if old == INBOX else 0
            before = quotas.annotation_octets(txn, dbs, account_id) if limit else 0
            info = self._rename_folder_tx(txn, dbs, effects, account_id, old, new)
            if limit:   # the new mailbox got a copy of INBOX's annotations
                quotas.check_growth(quotas.ANNOTATION_STORAGE, before,
                                    quotas.annotation_octets(txn, dbs, account_id), limit)
            return info

        return self._write(job, self._home(account))

    def _rename_folder_tx(self, txn: Any, dbs: Databases, effects: WriteEffects, account_id: int,
                          old: str, new: str) -> FolderInfo:
        old_id = self._folder_id(txn, dbs, account_id, old)
        if old_id is None:
            raise NoSuchFolder(f"no folder {old}")
        if self._folder_id(txn, dbs, account_id, new) is not None:
            raise FolderExists(f"folder {new} exists")
        if old == INBOX:
            return self._rename_inbox(txn, dbs, effects, account_id, old_id, new)
        parent_id = self._ensure_parents(txn, dbs, effects, account_id, new)
        moves = [(old, new, old_id)]
        for key, raw_id in prefix_items(txn, dbs.folder_names, name_key(account_id, old + SEPARATOR)):
            child = bytes(key[4:]).decode("utf-8")
            moves.append((child, new + child[len(old):], unpack_u32(raw_id)))
        for _from, to, _folder in moves:
            if self._folder_id(txn, dbs, account_id, to) is not None:
                raise FolderExists(f"folder {to} exists")
        top: FolderRecord | None = None
        subscriptions_moved: list[str] = []
        for from_name, to_name, folder_id in moves:
            record = self._folder(txn, dbs, account_id, folder_id)
            record.name = to_name
            if folder_id == old_id:
                record.parent_id = parent_id
                top = record
            self._put_folder(txn, dbs, account_id, record)
            txn.delete(name_key(account_id, from_name), db=dbs.folder_names)
            txn.put(name_key(account_id, to_name), pack_u32(folder_id), db=dbs.folder_names)
            if txn.delete(name_key(account_id, from_name), db=dbs.subscriptions):
                if txn.replace(name_key(account_id, to_name), b"", db=dbs.subscriptions) is not None:
                    # (The new name was subscribed already: one subscription fewer.)
                    quotas.adjust_count(txn, dbs, quotas.SUBSCRIPTION_COUNT, account_id, -1)
                subscriptions_moved += (from_name, to_name)
            effects.changed(account_id, folder_id, record.highestmodseq)
        if subscriptions_moved:
            self._subscriptions_changed(txn, dbs, account_id, subscriptions_moved)
        assert top is not None
        return self._info(txn, dbs, account_id, top)

    def localize_folders(self, account: str, lang: str | None) -> list[FolderRename]:
        """Rename the account's special-use folders to their names in ``lang`` (None: the store's
        default_lang) from folder_lang.txt, as a language change would have created them; the
        renames happen in one transaction, children and subscriptions following. A folder keeps
        its name when that is none of the names folder_lang.txt gives its special use in any
        language (the user chose it), or when the new name is taken. Returns one FolderRename
        per special-use folder, ``renamed`` False for those left alone (``reason`` says why)."""
        _check_lang(lang)
        wanted = self._langs.names(lang or self.default_lang)
        known = self._langs.all_names()

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> list[FolderRename]:
            account_id = self._account_id(txn, dbs, account)
            entries = folder_entries_of((folder_id, raw) for _key, folder_id, raw in
                                        self._named_records(txn, dbs, account_id, ""))
            outcome = []
            for name, _folder_id, special, _record in entries:
                if special not in wanted:
                    continue
                target = wanted[special]
                if name == target:
                    outcome.append(FolderRename(name, target, special, False, "already named so"))
                elif name not in known[special]:
                    outcome.append(FolderRename(name, target, special, False, "a name of the user's own"))
                elif self._folder_id(txn, dbs, account_id, target) is not None:
                    outcome.append(FolderRename(name, target, special, False, f"{target} exists"))
                else:
                    self._rename_folder_tx(txn, dbs, effects, account_id, name, target)
                    outcome.append(FolderRename(name, target, special, True, ""))
            return outcome

        return self._write(job, self._home(account))

    def _rename_inbox(self, txn: Any, dbs: Databases, effects: WriteEffects, account_id: int,
                      inbox_id: int, new: str) -> FolderInfo:
        inbox = self._folder(txn, dbs, account_id, inbox_id)
        target = self._create_folder_tx(txn, dbs, effects, account_id, new, 0, None)
        # Before INBOX's and the new folder's events (a watcher that hears it first reads that folder).
        effects.changed(account_id, 0, events.inbox_renamed_notice(target.id))
        copy_folder_entries(txn, dbs, account_id, inbox_id, target.id)
        prefix = folder_key(account_id, inbox_id)
        items = prefix_items(txn, dbs.messages, prefix)
        delta = indexes.IndexDelta(txn, dbs)
        for key, raw in items:
            uid = UID_IN_MESSAGE_KEY.unpack_from(key)[0]
            modseq = unpack_record(raw)[0]
            tail = raw[FIXED_SIZE:]
            delta.removed(account_id, inbox_id, uid, tail)
            delta.added(account_id, target.id, uid, tail, modseq)
            txn.put(message_key(account_id, target.id, uid), raw, db=dbs.messages)
            saved = txn.pop(change_key(account_id, inbox_id, modseq, uid), db=dbs.modseqs)
            txn.put(change_key(account_id, target.id, modseq, uid), saved or b"", db=dbs.modseqs)  # its save date
            txn.delete(key, db=dbs.messages)
            sort_entry = txn.pop(key, db=dbs.sort_records)
            if sort_entry is not None:
                txn.put(message_key(account_id, target.id, uid), sort_entry, db=dbs.sort_records)
            txn.put(change_key(account_id, inbox_id, inbox.next_modseq(), uid), b"", db=dbs.tombstones)
        delta.apply()
        target.uidnext = inbox.uidnext
        target.highestmodseq = max(target.highestmodseq, inbox.highestmodseq)
        target.messages, target.unseen, target.deleted, target.size = (
            inbox.messages, inbox.unseen, inbox.deleted, inbox.size)
        target.recent_floor = inbox.uidnext - 1
        if items:
            target.state |= STATE_HELD_MESSAGES
        inbox.messages = inbox.unseen = inbox.deleted = inbox.size = 0
        self._put_folder(txn, dbs, account_id, inbox)
        self._put_folder(txn, dbs, account_id, target)
        effects.changed(account_id, inbox_id, inbox.highestmodseq)
        effects.changed(account_id, target.id, target.highestmodseq)
        return self._info(txn, dbs, account_id, target)

    def set_subscribed(self, account: str, name: str, subscribed: bool, *,
                       mailbox_quota_default: int | None = None) -> tuple[int, int]:
        """Subscriptions are a set of names; they may name folders that do not exist (a deleted
        mailbox keeps its subscription, RFC 3501 6.3.6). With ``mailbox_quota_default`` an account
        has at most as many as its mailbox limit (midb.quotas): OverQuota(MAILBOX) otherwise, since
        create, subscribe and delete could else add names without end. Returns the subscriptions'
        generation (subscriptions_since) before and after: one apart when this call alone
        changed them since the caller's last read."""
        name = normalize_name(name)

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> tuple[int, int]:
            account_id = self._account_id(txn, dbs, account)
            key = name_key(account_id, name)
            if subscribed and txn.get(key, db=dbs.subscriptions) is None:
                limit = self._mailbox_limit(txn, dbs, account_id, mailbox_quota_default)
                if limit:
                    before = quotas.subscription_count(txn, dbs, account_id, keep=True)
                    quotas.check_growth(quotas.MAILBOX, before, before + 1, limit)
            generation = self._subscriptions_generation(txn, dbs, account_id)
            if subscribed:
                changed = txn.replace(key, b"", db=dbs.subscriptions) is None
            else:
                changed = txn.delete(key, db=dbs.subscriptions)
            if not changed:
                return generation, generation
            quotas.adjust_count(txn, dbs, quotas.SUBSCRIPTION_COUNT, account_id, 1 if subscribed else -1)
            effects.changed(account_id, 0, events.NOTICE_SUBSCRIPTIONS)
            return generation, self._subscriptions_changed(txn, dbs, account_id, (name,))

        return cast(tuple[int, int], self._write(job, self._home(account), durable=False))

    @staticmethod
    def _subscriptions_generation(txn: Any, dbs: Databases, account_id: int) -> int:
        raw = txn.get(_COUNTER_SUBSCRIPTIONS + account_key(account_id), db=dbs.counters)
        return 0 if raw is None else int(U64.unpack(raw)[0])

    def _subscriptions_changed(self, txn: Any, dbs: Databases, account_id: int, names: Iterable[str]) -> int:
        """Every write that changes the account's subscriptions calls this with the names it
        subscribed or unsubscribed: their new generation, logged with those names (the log's
        oldest generation is dropped once there are more than SUBSCRIPTION_LOG_KEPT)."""
        generation = self._subscriptions_generation(txn, dbs, account_id) + 1
        txn.put(_COUNTER_SUBSCRIPTIONS + account_key(account_id), U64.pack(generation), db=dbs.counters)
        log = _SUBSCRIPTION_LOG + account_key(account_id)
        entry = log + U64.pack(generation)
        for name in names:
            txn.put(entry + name.encode("utf-8"), b"", db=dbs.counters)
        if generation > SUBSCRIPTION_LOG_KEPT:
            self._delete_prefix(txn, dbs.counters, log + U64.pack(generation - SUBSCRIPTION_LOG_KEPT))
        return generation

    def subscriptions_since(self, account: str, generation: int) -> SubscriptionsRead:
        """The account's subscriptions as they changed since ``generation`` (one a previous call
        returned; -1: none), read together with the generation they have now: nothing when
        they did not change, the names changed (in the last SUBSCRIPTION_LOG_KEPT changes: one
        lookup each), or else all of them. A change of them (SUBSCRIBE, UNSUBSCRIBE, a RENAME
        that moved one) makes a new generation."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            now = self._subscriptions_generation(txn, dbs, account_id)
            if now == generation:
                return SubscriptionsRead(now, None, None)
            if 0 <= generation < now:
                log = _SUBSCRIPTION_LOG + account_key(account_id)
                start = log + U64.pack(generation + 1)
                cursor = txn.cursor(dbs.counters)
                if cursor.set_range(start) and cursor.key()[:len(start)] == start:
                    # The log has the change after ``generation``, so all those after it too.
                    at, size = len(start), len(log)
                    names = set()
                    for key in cursor.iternext(values=False):
                        if key[:size] != log:
                            break
                        names.add(str(key[at:], "utf-8"))
                    return SubscriptionsRead(now, None, {name: self._subscribed(txn, dbs, account_id, name)
                                                         for name in names})
            keys = prefix_items(txn, dbs.subscriptions, account_key(account_id), values=False)
            return SubscriptionsRead(now, [str(key[4:], "utf-8") for key in keys], None)

    def subscriptions(self, account: str, prefix: str = "") -> list[str]:
        """The subscribed names that start with ``prefix``, in code point order."""
        return self._names(account, "subscriptions", prefix)

    def folder_names(self, account: str, prefix: str = "") -> list[str]:
        """The names of the folders that start with ``prefix``, in code point order, from the
        name index alone (what LSUB needs to know: which subscribed names exist)."""
        return self._names(account, "folder_names", prefix)

    def _names(self, account: str, table: str, prefix: str) -> list[str]:
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            keys = prefix_items(txn, getattr(dbs, table), name_key(account_id, prefix), values=False)
            return [str(key[4:], "utf-8") for key in keys]

    def recent_floor(self, account: str, folder_id: int) -> int:
        """The folder's recent_floor, read without claiming: the UIDs above it are \\Recent to
        whichever session learns of them first, a read-only one included (it does not claim)."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            return self._folder(txn, dbs, self._account_id(txn, dbs, account), folder_id).recent_floor

    def claim_recent_range(self, account: str, folder_id: int) -> tuple[int, int]:
        """Raise recent_floor to uidnext-1, atomically; -> (the old floor, the new one): the
        caller claimed \\Recent for the UIDs between, including any committed after its own
        read of the folder, which it then claims when it learns of them."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            record = self._folder(txn, dbs, self._account_id(txn, dbs, account), folder_id)
            if record.recent_floor >= record.uidnext - 1 or self.readonly:
                return record.recent_floor, record.recent_floor   # nothing new: spare a write per SELECT

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> tuple[int, int]:
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            previous = record.recent_floor
            if record.uidnext - 1 > previous:
                record.recent_floor = record.uidnext - 1
                self._put_folder(txn, dbs, account_id, record)
            return previous, record.recent_floor

        return self._write(job, self._home(account), durable=False)

    # ---- messages -----------------------------------------------------------------------------------

    def append(self, account: str, folder_id: int, data: MessageData, *, flags: Iterable[str] = (),
               internaldate: int | None = None, tzoffset: int = 0, uid: int | None = None) -> tuple[int, int]:
        """Store one message; -> (uidvalidity, uid). The body is durable before the index commit."""
        uidvalidity, uids, _floor = self._append(account, folder_id, [(data, flags, internaldate, tzoffset)], uid)
        return uidvalidity, uids[0]

    def append_many(self, account: str, folder_id: int,
                    items: Sequence[AppendItem]
                    ) -> tuple[int, list[int]]:
        """MULTIAPPEND: all messages or none, in one transaction; -> (uidvalidity, uids)."""
        uidvalidity, uids, _floor = self._append(account, folder_id, _some_items(items, "append_many"), None)
        return uidvalidity, uids

    def append_claiming(self, account: str, folder_id: int,
                        items: Sequence[AppendItem]
                        ) -> tuple[int, list[int], int]:
        """append_many by a session that has the folder selected read-write: the same transaction
        also does claim_recent_range, so that the session does not pay a second durable commit to claim
        \\Recent for the messages it just added. -> (uidvalidity, uids, previous recent_floor):
        the UIDs above that floor, up to the last new one, are recent for the caller."""
        uidvalidity, uids, floor = self._append(account, folder_id, _some_items(items, "append_claiming"), None,
                                                claim=True)
        assert floor is not None
        return uidvalidity, uids, floor

    def replace(self, account: str, folder_id: int, data: MessageData, *, replacing: tuple[int, int],
                flags: Iterable[str] = (), internaldate: int | None = None, tzoffset: int = 0,
                claim: bool = False) -> tuple[int, int, int | None, int]:
        """RFC 8508 REPLACE: store one message in ``folder_id`` and expunge the message
        ``replacing`` = (folder id, UID) of the same account in ONE transaction, so that either
        both happen or neither. The quota is checked for the net change (a draft saved again
        near the limit fits). With ``claim``, as append_claiming, for a session that has
        ``folder_id`` selected read-write. -> (uidvalidity, new UID, the previous recent_floor
        with ``claim`` else None, the expunged message's tombstone MODSEQ). Raises MessageGone,
        storing nothing, when that message is no longer there."""
        return self._replace(account, folder_id, (data, flags, internaldate, tzoffset), replacing, claim=claim)

    def append_batch(self, items: Iterable[tuple[str, int, bytes, Iterable[str]]]
                     ) -> list[tuple[int, int] | MidbError]:
        """Append one message to each of several folders, of one account or several, in ONE write
        transaction (one sync however many copies): LMTP delivery of a message to its recipients.

        `items` are (account, folder id, data, flags). Each copy stands or fails on its own: the
        result for an item is (uidvalidity, uid) once durable, or the MidbError it met (OverQuota,
        TooBig, NoSuchFolder, ...), exactly as append() would have raised it."""
        if self.readonly:
            raise ReadOnlyStore("store opened read-only")
        now = int(time.time())
        outcomes: list[Any] = []
        live: list[tuple[int, str, int, list[_Prepared], int]] = []
        for item in items:
            try:
                account, folder_id, data, flags = item
            except (TypeError, ValueError):
                raise InvalidArgument("append_batch item must be (account, folder id, data, flags)") from None
            outcomes.append(None)
            try:
                prepared, total = self._prepare_append([(data, flags, None, 0)], now)
                self._refuse_early(account, folder_id, total, len(prepared), None)
            except MidbError as refusal:   # not `error`: the name is the loop variable below
                outcomes[-1] = refusal
                continue
            live.append((len(outcomes) - 1, account, folder_id, prepared, total))
        if not live:
            return outcomes
        # One commit (one sync) per shard the recipients live in.
        by_shard: dict[int, list[int]] = {}
        for position, entry in enumerate(live):
            by_shard.setdefault(self._home_index(entry[1]), []).append(position)
        blobs: list[str] = [""] * len(live)
        finished: list[tuple[Any, BaseException | None, WriteEffects]] = [(None, None, WriteEffects())] * len(live)
        for shard, positions in by_shard.items():
            shared = self._live_shards()[shard]
            try:
                self._refuse_growth(shared)
            except StoreFull as full:   # this shard's copies only; no body written for them
                for position in positions:
                    finished[position] = (None, full, WriteEffects())
                continue
            with shared.arrival():
                group_blobs, digests, inline = self._store_bodies([live[position][3][0][0] for position in positions],
                                                                  shard, shared)
                jobs = [self._append_job(live[position][1], live[position][2], live[position][3], [blob], [digest],
                                         live[position][4], None, [kept])
                        for position, blob, digest, kept in zip(positions, group_blobs, digests, inline, strict=True)]
                try:
                    results = shared.write_all(jobs, durable=self.fsync)
                except BaseException:
                    self._discard_unreferenced(group_blobs)
                    raise
            for position, blob, result in zip(positions, group_blobs, results, strict=True):
                blobs[position] = blob
                finished[position] = result
        effects = WriteEffects()
        unexpected: BaseException | None = None
        failed_blobs: list[str] = []
        stored_blobs = []
        stored_places = []
        for (index, account, folder_id, *_rest), blob, (result, error, job_effects) in zip(live, blobs, finished,
                                                                                           strict=True):
            for (changed_account, changed_folder), modseq in job_effects.changes.items():
                effects.changed(changed_account, changed_folder, modseq)   # also a commit not durable
            if error is None or isinstance(error, NotDurable):
                # Committed. A NotDurable one (its flush failed) is answered as failed, but it
                # stands: its body is referenced, kept, and parsed ahead as any.
                uidvalidity, uids, _floor = result
                stored_blobs.append(blob)
                stored_places.append((account, folder_id, uids[0]))
                self._hand_over(job_effects.unlink, self._home_index(account))
                if error is None:
                    outcomes[index] = (uidvalidity, uids[0])
                    continue
            elif blob:   # empty for a copy refused before its body was written
                failed_blobs.append(blob)
            if isinstance(error, MidbError):
                outcomes[index] = error
            elif unexpected is None:
                unexpected = error
        if failed_blobs:
            self._discard_unreferenced(failed_blobs)
        self._after_commit(effects, self._shared)   # no unlinks: handed over per shard above
        self._parse_later(stored_blobs, stored_places)
        if unexpected is not None:
            raise unexpected
        return outcomes

    def _prepare_append(self, items: Sequence[AppendItem], now: int) -> tuple[list[_Prepared], int]:
        """Validated (data, flags' record tail, internaldate, tzoffset) items and their total
        size; a read-only store refuses here, before anything else is looked at. Flags given as
        a tuple (a copy across shards passes its messages' own) are parsed once per distinct set."""
        if self.readonly:
            raise ReadOnlyStore("store opened read-only")
        prepared: list[_Prepared] = []
        tails: dict[tuple[str, ...], bytes] = {}
        for item in items:
            try:
                data, flags, internaldate, tzoffset = item
            except (TypeError, ValueError):
                raise InvalidArgument("append item must be (data, flags, internaldate, tzoffset)") from None
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InvalidArgument("message data must be bytes")
            data = bytes(data)
            if self.max_message_size and len(data) > self.max_message_size:
                raise TooBig(f"message of {len(data)} bytes exceeds the limit of {self.max_message_size}")
            if internaldate is None:
                internaldate = now
            elif not isinstance(internaldate, int) or isinstance(internaldate, bool) \
                    or not -(1 << 62) < internaldate < 1 << 62:
                raise InvalidArgument(f"invalid internaldate {internaldate!r}")
            if not isinstance(tzoffset, int) or not -MAX_TZOFFSET <= tzoffset <= MAX_TZOFFSET:
                raise InvalidArgument(f"invalid tzoffset {tzoffset!r}")
            if isinstance(flags, tuple):
                tail = tails.get(flags)
                if tail is None:
                    tail = tails[flags] = _flags_tail(flags)
            else:
                tail = _flags_tail(flags)
            prepared.append((data, tail, internaldate, tzoffset))
        return prepared, sum(len(entry[0]) for entry in prepared)

    def _refuse_early(self, account: str, folder_id: int, total: int, count: int,
                      explicit_uid: int | None, replacing: tuple[int, int] | None = None) -> None:
        """Refuse before any body is written (the write transaction checks again). The message
        ``replacing`` names (REPLACE) must still be there; see _check_replace_quota."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if replacing is None:
                self._check_quota(txn, dbs, account_id, total, count)
            else:
                _old_folder, old = self._replaced_record(txn, dbs, account_id, replacing)
                self._check_replace_quota(txn, dbs, account_id, total, old)
            _check_uid_room(record, explicit_uid, count)

    def _check_replace_quota(self, txn: Any, dbs: Databases, account_id: int, size: int, old: bytes) -> None:
        """A REPLACE exchanges one message for another: only a growth is checked against the
        quota (RFC 9208 refuses what would take usage past a limit; an account already over it
        may still save a smaller draft)."""
        growth = size - unpack_record(old)[3]
        if growth > 0:
            self._check_quota(txn, dbs, account_id, growth, 0)

    def _replaced_record(self, txn: Any, dbs: Databases, account_id: int, replacing: tuple[int, int]
                         ) -> tuple[FolderRecord, bytes]:
        """(folder record, message record) of the message a REPLACE expunges; MessageGone if it is not there."""
        folder_id, uid = replacing
        record = self._folder(txn, dbs, account_id, folder_id)
        raw = txn.get(message_key(account_id, record.id, uid), db=dbs.messages)
        if raw is None:
            raise MessageGone(f"message {uid} is no longer in the folder")
        return record, raw

    def _append(self, account: str, folder_id: int,
                items: Sequence[AppendItem],
                explicit_uid: int | None, *, claim: bool = False) -> tuple[int, list[int], int | None]:
        if explicit_uid is not None and (not isinstance(explicit_uid, int) or not 0 < explicit_uid <= MAX_U32):
            raise InvalidArgument(f"invalid UID {explicit_uid!r}")
        prepared, total = self._prepare_append(items, int(time.time()))
        self._refuse_early(account, folder_id, total, len(prepared), explicit_uid)

        def make_job(blobs: list[str], digests: list[tuple[bytes, bytes] | None], inline: list[bool]
                     ) -> Callable[[Any, Databases, WriteEffects], tuple[int, list[int], int | None]]:
            return self._append_job(account, folder_id, prepared, blobs, digests, total, explicit_uid, inline,
                                    claim=claim)

        return self._commit_new_bodies(account, prepared, make_job,
                                       lambda result: [(account, folder_id, uid) for uid in result[1]])

    def _replace(self, account: str, folder_id: int, item: AppendItem, replacing: tuple[int, int], *,
                 claim: bool) -> tuple[int, int, int | None, int]:
        """See replace(): the append job, preceded in its transaction by the old message's removal."""
        prepared, total = self._prepare_append([item], int(time.time()))
        self._refuse_early(account, folder_id, total, 1, None, replacing)

        def make_job(blobs: list[str], digests: list[tuple[bytes, bytes] | None], inline: list[bool]
                     ) -> Callable[[Any, Databases, WriteEffects], tuple[int, int, int | None, int]]:
            append_job = self._append_job(account, folder_id, prepared, blobs, digests, total, None, inline,
                                          claim=claim, check_quota=False)

            def job(txn: Any, dbs: Databases, effects: WriteEffects) -> tuple[int, int, int | None, int]:
                account_id = self._account_id(txn, dbs, account)
                old_folder, old = self._replaced_record(txn, dbs, account_id, replacing)
                self._check_replace_quota(txn, dbs, account_id, total, old)
                tombstone = self._remove(txn, dbs, effects, account_id, old_folder, [(replacing[1], old)])[0]
                uidvalidity, uids, floor = append_job(txn, dbs, effects)   # reads the folder anew
                return uidvalidity, uids[0], floor, tombstone

            return job

        return self._commit_new_bodies(account, prepared, make_job, lambda result: [(account, folder_id, result[1])])

    def _commit_new_bodies(self, account: str, prepared: list[_Prepared],
                           make_job: Callable[[list[str], list[tuple[bytes, bytes] | None], list[bool]],
                                              Callable[[Any, Databases, WriteEffects], T]],
                           places: Callable[[T], Sequence[object]]) -> T:
        """Write and sync the bodies of ``prepared``, then commit the job ``make_job`` makes for
        them (durably); a failed commit removes the bodies again. The bodies committed go to the
        deferred parser, with ``places(the job's result)``: where each was stored. -> the job's result."""
        shard = self._home_index(account)
        shared = self._live_shards()[shard]
        self._refuse_growth(shared)   # before any body file is written
        # Announced while the bodies are written and synced: a concurrent commit waits for us.
        with shared.arrival():
            blobs, digests, inline = self._store_bodies([entry[0] for entry in prepared], shard, shared)
            job = make_job(blobs, digests, inline)
            try:
                result, effects = shared.write(job, durable=self.fsync)
            except NotDurable as error:
                self._publish(error.changes)   # committed: its bodies are referenced, and kept
                # The messages stand although the client is told NO: they are parsed ahead as any.
                self._parse_later(blobs, places(error.result))
                raise
            except BaseException:
                self._discard_unreferenced(blobs)
                raise
        self._after_commit(effects, shared)
        self._parse_later(blobs, places(result))
        return result

    def _parse_later(self, blobs: list[str], places: Sequence[object]) -> None:
        """Committed bodies stored without their digest: to the deferred parser (midb.deferred),
        which parses them after midb_parse_delay and writes each message's sort entry at its place."""
        if self._parser is not None:
            self._parser.stored(blobs, places)

    def _store_bodies(self, datas: list[bytes], shard: int, shared: SharedEnv
                      ) -> tuple[list[str], list[tuple[bytes, bytes] | None], list[bool]]:
        """(body ids, encoded digests and summaries, kept in the index?) for bodies about to be
        appended to an account of `shard` (environment `shared`; their ids place them there). Files are written and
        synced now; a body of at most inline_limit bytes instead goes into the index with the
        append's own transaction: no file to create, write, sync and rename, no directory to
        sync, and later no file to open for SEARCH BODY or FETCH."""
        count = len(self._shards)

        def new_id() -> str:
            return shards_of.new_blob_id(shard, count)

        inline = [0 < len(data) <= self.inline_limit for data in datas]
        if any(inline) and not self._room_for_inline(shared):
            inline = [False] * len(datas)
        to_files = [data for data, kept in zip(datas, inline, strict=True) if not kept]
        parse = _encoded_digest if self._parser is None else None   # else parsed after the commit
        # The ignore: mypy (2.4) solves write_many's T here as parse's result without its None,
        # then rejects parse.
        file_blobs, file_digests = (
            self._blobs.write_many(to_files, parse, new_id=new_id)  # type: ignore[arg-type]
            if to_files else ([], []))
        blobs: list[str] = []
        digests: list[tuple[bytes, bytes] | None] = []
        next_file = iter(zip(file_blobs, file_digests, strict=True))
        for data, kept in zip(datas, inline, strict=True):
            if kept:
                blobs.append(new_id())
                digests.append(None if parse is None else parse(data))
            else:
                blob, digest = next(next_file)
                blobs.append(blob)
                digests.append(digest)
        return blobs, digests, inline

    @staticmethod
    def _room_for_inline(shared: SharedEnv) -> bool:
        environment = shared.env
        info = environment.info()
        used = (info["last_pgno"] + 1) * environment.stat()["psize"]
        return used < info["map_size"] * INLINE_MAP_SHARE

    def _append_job(self, account: str, folder_id: int, prepared: list[_Prepared],
                    blobs: list[str], digests: list[tuple[bytes, bytes] | None], total: int,
                    explicit_uid: int | None, inline: list[bool], *, claim: bool = False, check_quota: bool = True
                    ) -> Callable[[Any, Databases, WriteEffects], tuple[int, list[int], int | None]]:
        """The write job indexing bodies already stored under `blobs` (or, where `inline` says so,
        storing them in the index). With `claim`, it also raises recent_floor to the last new UID
        and returns the floor it found (see append_claiming); otherwise None in its place. Without
        `check_quota` the caller has checked the quota (REPLACE's net change)."""
        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> tuple[int, list[int], int | None]:
            # The files must still be there: a sweep of orphans (midb.orphans) removes unreferenced
            # files old enough under this same write lock, so one that took ours is found here, and
            # the write fails unanswered rather than commit a message without its body. A stat per
            # file, in the dentry cache (just written).
            for blob, kept in zip(blobs, inline, strict=True):
                if not kept and not os.path.exists(self._blobs.path(blob)):
                    raise MidbError(f"body {blob} was removed before its commit")
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if check_quota:
                self._check_quota(txn, dbs, account_id, total, len(prepared))
            _check_uid_room(record, explicit_uid, len(prepared))
            if explicit_uid is not None:
                record.uidnext = explicit_uid
            delta = indexes.IndexDelta(txn, dbs)
            put_body_record = bodyrecords.put
            saved = savedates.pack(savedates.now())
            spellings = _KeywordSpellings(txn, dbs, account_id, record.id)
            uids = []
            for (data, given_tail, internaldate, tzoffset), blob, digest, kept in zip(prepared, blobs, digests,
                                                                                   inline, strict=True):
                uid = record.uidnext
                record.uidnext += 1
                modseq = record.next_modseq()
                blob_raw = bytes.fromhex(blob)
                size = len(data)
                tail = spellings.retail(given_tail)   # respelt once per distinct flag set
                key = message_key(account_id, record.id, uid)
                txn.put(key, pack_record(modseq, internaldate, tzoffset, size, blob_raw, tail), db=dbs.messages)
                delta.added(account_id, record.id, uid, tail, modseq)
                txn.put(change_key(account_id, record.id, modseq, uid), saved, db=dbs.modseqs)
                put_body_record(txn, dbs, bodyrecords.REFS, blob_raw, pack_blob_record(1, size))
                if kept:
                    put_body_record(txn, dbs, bodyrecords.BODY, blob_raw, data)
                if digest is not None:
                    put_body_record(txn, dbs, bodyrecords.DIGEST, blob_raw, digest[0])
                    put_body_record(txn, dbs, bodyrecords.SUMMARY, blob_raw, digest[1])
                    with contextlib.suppress(mime.DigestFormatError):   # then derived when first sorted
                        txn.put(key, sortindex.entry_of_summary(digest[1], internaldate), db=dbs.sort_records)
                unseen, deleted = counter_deltas(tail[0])
                record.messages += 1
                record.unseen += unseen
                record.deleted += deleted
                record.size += size
                uids.append(uid)
            delta.apply()
            record.state |= STATE_HELD_MESSAGES
            previous_floor = None
            if claim:
                previous_floor = record.recent_floor
                record.recent_floor = max(previous_floor, record.uidnext - 1)
            self._put_folder(txn, dbs, account_id, record)
            self._adjust_usage(txn, dbs, account_id, total, len(prepared))
            effects.changed(account_id, record.id, record.highestmodseq)
            return record.uidvalidity, uids, previous_floor

        return job

    def _discard_unreferenced(self, blobs: list[str]) -> None:
        """After a failed append: remove the bodies the index does not reference. (Normally none is
        referenced; the check covers an interrupt that arrived after the commit.)"""
        try:
            records = self._body_records(bodyrecords.REFS, [bytes.fromhex(blob) for blob in blobs])
            referenced = {blob for blob, record in zip(blobs, records, strict=True) if record is not None}
        except (lmdb.Error, MidbError):
            return   # cannot tell: leave orphans for verify rather than risk a referenced body
        for blob in blobs:
            if blob not in referenced:
                self._blobs.unlink(blob)

    def _body_records(self, kind: int, keys: list[bytes]) -> list[bytes | None]:
        """bodyrecords.get_many with each body read in its own shard: one read transaction per
        shard involved (a single one for the bodies of one folder)."""
        shards = self._live_shards()
        if len(shards) == 1:
            with lmdb_errors(), shards[0].read() as txn:
                return bodyrecords.get_many(txn, shards[0].dbs, kind, keys)
        by_shard: dict[int, list[int]] = {}
        for index, shard in enumerate(shards_of.of_blobs(keys, len(shards))):
            by_shard.setdefault(shard, []).append(index)
        found: list[bytes | None] = [None] * len(keys)
        for shard, positions in by_shard.items():
            shared = shards[shard]
            with lmdb_errors(), shared.read() as txn:
                values = bodyrecords.get_many(txn, shared.dbs, kind, [keys[index] for index in positions])
            for index, value in zip(positions, values, strict=True):
                found[index] = value
        return found

    def _message_range(self, txn: Any, dbs: Databases, account_id: int, record: FolderRecord,
                       *, values: bool) -> list[Any]:
        """All (key, record) pairs (or keys) of a folder in UID order, in one cursor pass.

        The folder's message counter says how many keys to take, which spares a prefix comparison per
        message; one look at the keys around the range confirms it (else: the checked scan).
        """
        prefix = folder_key(account_id, record.id)
        count = record.messages
        if count >= PREFETCH_FROM:
            dbs.pages.key_range(txn, b"messages", prefix, prefix_end(prefix))
        cursor = txn.cursor(dbs.messages)
        positioned = cursor.set_range(prefix)
        if positioned:
            items = list(itertools.islice(cursor.iternext(keys=True, values=values), count))
            if count:
                last_key = items[-1][0] if values and items else (items[-1] if items else b"")
                exact = len(items) == count and last_key[:8] == prefix
                overflow = cursor.next() and cursor.key()[:8] == prefix
            else:
                exact, overflow = True, cursor.key()[:8] == prefix
            if exact and not overflow:
                return items
        elif not count:
            return []
        log.warning("message counter of folder %d/%d is off; run midb verify --repair", account_id, record.id)
        return prefix_items(txn, dbs.messages, prefix, values=values)

    def messages(self, account: str, folder_id: int) -> list[MessageMeta]:
        """Every message of the folder in UID order."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            return metas_from_pairs(self._message_range(txn, dbs, account_id, record, values=True))

    def uids(self, account: str, folder_id: int) -> list[int]:
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            keys = self._message_range(txn, dbs, account_id, record, values=False)
        return uids_from_keys(keys)

    def count_above(self, account: str, folder_id: int, uid: int) -> int:
        """How many messages of the folder have a UID above ``uid``: one cursor pass over those
        keys only (STATUS RECENT counts the messages above the \\Recent floor, usually few)."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if uid >= record.uidnext - 1:
                return 0
            return quotas.count_prefix(txn, dbs.messages, folder_key(account_id, record.id),
                                       message_key(account_id, record.id, max(uid + 1, 1)))

    def get_messages(self, account: str, folder_id: int, uids: Iterable[int]) -> list[MessageMeta]:
        """The existing messages among `uids`, in UID order."""
        wanted = _uid_list(uids)
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            return metas_from_pairs(self._records_of(txn, dbs, account_id, record.id, wanted))

    def flag_rows(self, account: str, folder_id: int, uids: Iterable[int]) -> list[tuple[int, tuple[str, ...], int]]:
        """(uid, flags, modseq) of the existing messages among `uids`, in UID order: get_messages
        for callers that need no more than flags and MODSEQ (FETCH FLAGS on a whole folder), at a
        fraction of its cost per message. `flags` is spelled as in MessageMeta."""
        wanted = _uid_list(uids)
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            return flag_rows_from_pairs(self._records_of(txn, dbs, account_id, record.id, wanted))

    @staticmethod
    def _records_of(txn: Any, dbs: Databases, account_id: int, folder_id: int,
                    wanted: list[int]) -> list[tuple[bytes, bytes]]:
        """(key, record) of the existing messages among the sorted, distinct UIDs `wanted`.

        A dense set (say 1:*) is read with one cursor pass over its UID range, a sparse one
        key by key: either way a few cursor steps per wanted message at most."""
        if not wanted:
            return []
        first, last = wanted[0], wanted[-1]
        span = last - first + 1
        if len(wanted) * _DENSE_FACTOR < span:
            get = txn.get
            out = []
            for uid in wanted:
                key = message_key(account_id, folder_id, uid)
                raw = get(key, db=dbs.messages)
                if raw is not None:
                    out.append((key, raw))
            return out
        cursor = txn.cursor(dbs.messages)
        if not cursor.set_range(message_key(account_id, folder_id, first)):
            return []
        # At most `span` keys lie in the range; the ones read beyond its end are cut off.
        pairs = list(itertools.islice(cursor.iternext(), span))
        end = message_key(account_id, folder_id, last)
        if pairs and pairs[-1][0] > end:
            del pairs[bisect.bisect_right(pairs, end, key=_first):]
        if len(wanted) == span:
            return pairs
        members = set(wanted)
        uid_of = UID_IN_MESSAGE_KEY.unpack_from
        return [item for item in pairs if uid_of(item[0])[0] in members]

    def unseen_uids(self, account: str, folder_id: int, limit: int | None = None) -> list[int]:
        """UIDs of the folder's messages without \\Seen, ascending (the first `limit` of them):
        read from the flag index, so the cost follows the unseen messages, not the folder."""
        return self._flag_index_uids(account, folder_id, indexes.UNSEEN_KIND, limit)

    def deleted_uids(self, account: str, folder_id: int) -> list[int]:
        """UIDs of the folder's messages flagged \\Deleted, ascending (from the flag index)."""
        return self._flag_index_uids(account, folder_id, indexes.DELETED_KIND, None)

    def first_unseen(self, account: str, folder_id: int) -> int | None:
        """UID of the lowest-numbered message without \\Seen, or None."""
        found = self.unseen_uids(account, folder_id, limit=1)
        return found[0] if found else None

    def _flag_index_uids(self, account: str, folder_id: int, kind: int, limit: int | None) -> list[int]:
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise InvalidArgument(f"invalid limit {limit!r}")
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            listed = record.unseen if kind == indexes.UNSEEN_KIND else record.deleted
            if not listed:
                return []
            if shared.indexed:
                return indexes.uids_of_kind(txn, dbs, account_id, record.id, kind, limit,
                                            prefetch=listed >= PREFETCH_FROM)
            # A store of an older schema opened read-only has no flag index: scan the records.
            uid_of = UID_IN_MESSAGE_KEY.unpack_from
            out = []
            for key, raw in self._message_range(txn, dbs, account_id, record, values=True):
                if kind in indexes.flag_kinds(raw[FLAGS_OFFSET]):
                    out.append(uid_of(key)[0])
                    if limit is not None and len(out) >= limit:
                        break
            return out

    def keywords(self, account: str, folder_id: int) -> list[str]:
        """The keywords some message of the folder carries, sorted, each once: a keyword is
        stored in the folder's spelling (_KeywordSpellings), but messages stored before that
        rule may carry others, of which the first in sorted order stands for all."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if shared.indexed:
                names = indexes.folder_keywords(txn, dbs, account_id, record.id)
            else:
                spellings: set[bytes] = set()
                for tail in {bytes(raw[FIXED_SIZE:]) for _key, raw in
                             self._message_range(txn, dbs, account_id, record, values=True)}:
                    spellings.update(indexes.keywords_of(tail))
                names = [keyword.decode("ascii") for keyword in spellings]
        return list(indexes.keyword_spellings(names).values())

    def store_flags(self, account: str, folder_id: int, uids: Iterable[int], mode: str,
                    flags: Iterable[str], *, unchanged_since: int | None = None,
                    prior: dict[int, int] | None = None) -> tuple[list[MessageMeta], list[int]]:
        """mode "set" / "add" / "remove"; -> (changed messages with their new modseq,
        UIDs that failed UNCHANGEDSINCE). One modseq bump per changed message. ``prior``, when
        given, gets each changed message's MODSEQ before this change (uid -> modseq), read in the
        same transaction: whether the change overwrote one its caller has not seen."""
        if mode not in STORE_MODES:
            raise InvalidArgument(f"invalid STORE mode {mode!r}")
        given = parse_flags(flags)
        if unchanged_since is not None and (not isinstance(unchanged_since, int) or unchanged_since < 0):
            raise InvalidArgument(f"invalid UNCHANGEDSINCE {unchanged_since!r}")
        wanted = _uid_list(uids)
        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> tuple[list[MessageMeta], list[int]]:
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            changed: list[MessageMeta] = []
            failed: list[int] = []
            if prior is not None:
                prior.clear()  # (a job run again after a failed attempt starts afresh)
            delta = indexes.IndexDelta(txn, dbs)
            if mode != "remove":
                _KeywordSpellings(txn, dbs, account_id, record.id).respell(given)
            for uid in wanted:
                key = message_key(account_id, record.id, uid)
                raw = txn.get(key, db=dbs.messages)
                if raw is None:
                    continue
                old_modseq = unpack_record(raw)[0]
                if unchanged_since is not None and old_modseq > unchanged_since:
                    failed.append(uid)
                    continue
                old_tail = raw[FIXED_SIZE:]
                new_tail = _apply_flags(old_tail, mode, given)
                if new_tail == old_tail:
                    continue
                _check_keyword_count(tail_keyword_count(new_tail), before=tail_keyword_count(old_tail))
                modseq = record.next_modseq()
                new_raw = with_modseq_and_flags(raw, modseq, new_tail)
                txn.put(key, new_raw, db=dbs.messages)
                saved = txn.pop(change_key(account_id, record.id, old_modseq, uid), db=dbs.modseqs)
                txn.put(change_key(account_id, record.id, modseq, uid), saved or b"", db=dbs.modseqs)  # its save date
                delta.changed(account_id, record.id, uid, old_tail, new_tail, modseq)
                old_unseen, old_deleted = counter_deltas(old_tail[0])
                new_unseen, new_deleted = counter_deltas(new_tail[0])
                record.unseen += new_unseen - old_unseen
                record.deleted += new_deleted - old_deleted
                changed.append(meta_from_record(uid, new_raw))
                if prior is not None:
                    prior[uid] = old_modseq
            if changed:
                delta.apply()
                self._put_folder(txn, dbs, account_id, record)
                effects.changed(account_id, record.id, record.highestmodseq)
            return changed, failed

        return self._write(job, self._home(account), durable=False)

    def copy(self, account: str, src_folder_id: int, uids: Iterable[int], dst_folder_id: int, *,
             dst_account: str | None = None) -> tuple[int, list[tuple[int, int]]]:
        """-> (destination uidvalidity, [(src uid, dst uid), ...]); bodies are shared, not copied.
        A NotDurable carries that result too: the copies stand, for a caller to remove (COPY)."""
        return self._transfer(account, src_folder_id, uids, dst_folder_id, dst_account, move=False)

    def move(self, account: str, src_folder_id: int, uids: Iterable[int], dst_folder_id: int, *,
             dst_account: str | None = None) -> tuple[int, list[tuple[int, int]]]:
        """copy + expunge from the source in ONE transaction (into an account of another shard,
        two: see _transfer_across). A NotDurable carries the result when the move stands."""
        return self._transfer(account, src_folder_id, uids, dst_folder_id, dst_account, move=True)

    def _transfer(self, account: str, src_folder_id: int, uids: Iterable[int], dst_folder_id: int,
                  dst_account: str | None, *, move: bool) -> tuple[int, list[tuple[int, int]]]:
        wanted = _uid_list(uids)
        if dst_account is not None and self._home_index(dst_account) != self._home_index(account):
            return self._transfer_across(account, src_folder_id, wanted, dst_account, dst_folder_id, move=move)
        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> tuple[int, list[tuple[int, int]]]:
            src_account_id = self._account_id(txn, dbs, account)
            dst_account_id = src_account_id if dst_account is None else self._account_id(txn, dbs, dst_account)
            src = self._folder(txn, dbs, src_account_id, src_folder_id)
            same_folder = src_account_id == dst_account_id and src_folder_id == dst_folder_id
            dst = src if same_folder else self._folder(txn, dbs, dst_account_id, dst_folder_id)
            found: list[tuple[int, bytes]] = []
            for uid in wanted:
                raw = txn.get(message_key(src_account_id, src.id, uid), db=dbs.messages)
                if raw is not None:
                    found.append((uid, raw))
            if not found:
                return dst.uidvalidity, []
            total = sum(unpack_record(raw)[3] for _uid, raw in found)
            if not move or src_account_id != dst_account_id:
                self._check_quota(txn, dbs, dst_account_id, total, len(found))
            if not _uids_fit(dst.uidnext, len(found)):
                raise MidbError("destination folder UID space exhausted")
            delta = indexes.IndexDelta(txn, dbs)
            pairs = []
            blob_counts: dict[bytes, int] = {}
            saved = savedates.pack(savedates.now())  # each copy its own (RFC 8514 section 3)
            sort_entries = [txn.get(message_key(src_account_id, src.id, uid), db=dbs.sort_records)
                            for uid, _raw in found]
            if move:
                self._unlist(txn, dbs, delta, src_account_id, src, found)
            spellings = None if same_folder else _KeywordSpellings(txn, dbs, dst_account_id, dst.id)
            for (uid, raw), sort_entry in zip(found, sort_entries, strict=True):
                new_uid = dst.uidnext
                dst.uidnext += 1
                modseq = dst.next_modseq()
                _old, _date, _tz, size, blob_raw, tail = unpack_record(raw)
                if spellings is not None:
                    tail = spellings.retail(tail)
                new_key = message_key(dst_account_id, dst.id, new_uid)
                txn.put(new_key, with_modseq_and_flags(raw, modseq, tail), db=dbs.messages)
                if sort_entry is not None:
                    txn.put(new_key, sort_entry, db=dbs.sort_records)
                txn.put(change_key(dst_account_id, dst.id, modseq, new_uid), saved, db=dbs.modseqs)
                delta.added(dst_account_id, dst.id, new_uid, tail, modseq)
                unseen, deleted = counter_deltas(tail[0])
                dst.messages += 1
                dst.unseen += unseen
                dst.deleted += deleted
                dst.size += size
                blob_counts[blob_raw] = blob_counts.get(blob_raw, 0) + 1
                pairs.append((uid, new_uid))
            delta.apply()
            if not move:
                for blob_raw, count in blob_counts.items():
                    self._blob_incref(txn, dbs, blob_raw, count)
            dst.state |= STATE_HELD_MESSAGES
            if not same_folder and move:
                self._put_folder(txn, dbs, src_account_id, src)
            self._put_folder(txn, dbs, dst_account_id, dst)
            if not move:
                self._adjust_usage(txn, dbs, dst_account_id, total, len(found))
            elif src_account_id != dst_account_id:
                self._adjust_usage(txn, dbs, src_account_id, -total, -len(found))
                self._adjust_usage(txn, dbs, dst_account_id, total, len(found))
            if move:
                effects.changed(src_account_id, src.id, src.highestmodseq)
            effects.changed(dst_account_id, dst.id, dst.highestmodseq)
            return dst.uidvalidity, pairs

        home = self._home(account)
        if not move:
            # A MOVE adds about what it removes, and is how most clients delete (into Trash).
            self._refuse_growth(home)
        return self._write(job, home)

    def _transfer_across(self, account: str, src_folder_id: int, wanted: list[int], dst_account: str,
                         dst_folder_id: int, *, move: bool) -> tuple[int, list[tuple[int, int]]]:
        """COPY / MOVE into an account of another shard. The two shards commit separately: the
        copies are appended to the destination first (new bodies there, since a body belongs to
        one shard), then, for a move, the originals are removed. A crash in between leaves the
        messages in both places, never in neither; a move whose removal of the originals fails
        (or whose copies' flush fails) removes its copies again before it raises (RFC 6851
        section 3.3: a failed MOVE leaves no message in both mailboxes). As within a shard, each
        distinct flag set is parsed and respelt once, not once per message (messages copied
        together share a few)."""
        found = self.get_messages(account, src_folder_id, wanted)
        if found:
            # What the destination refuses from the records alone (its folder, quota and UIDs, its
            # shard's room), before the bodies, megabytes each, are read; _append checks again.
            self._refuse_early(dst_account, dst_folder_id, sum(meta.size for meta in found), len(found), None)
            self._refuse_growth(self._home(dst_account))
        datas = self.read_bodies([meta.blob for meta in found])
        metas = [meta for meta, data in zip(found, datas, strict=True) if data is not None]   # None: expunged meanwhile
        if not metas:
            info = self.folder_by_id(dst_account, dst_folder_id)
            if info is None:
                raise NoSuchFolder(f"no folder with id {dst_folder_id}")
            return info.uidvalidity, []
        items = [(data, meta.flags, meta.internaldate, meta.tzoffset)
                 for meta, data in zip(found, datas, strict=True) if data is not None]
        originals = [meta.uid for meta in metas]
        try:
            uidvalidity, new_uids, _floor = self._append(dst_account, dst_folder_id, items, None)
        except NotDurable as error:
            # The copies stand, unflushed: a COPY's result, for its caller to undo; a MOVE keeps
            # its originals (a power failure could undo the copies alone) and removes the copies
            # again, so it moved nothing.
            result = None
            if error.result is not None:
                uidvalidity, new_uids, _floor = error.result
                copied = list(zip(originals, new_uids, strict=True))
                if move:
                    self._undo_move_copies(account, src_folder_id, dst_account, dst_folder_id, copied)
                else:
                    result = (uidvalidity, copied)
            raise NotDurable(str(error), error.changes, result) from error
        pairs = list(zip(originals, new_uids, strict=True))
        if move:
            try:
                self.remove_messages(account, src_folder_id, originals)
            except NotDurable as error:
                # The originals' removal stands, unflushed: moved, as a MOVE within a shard whose
                # flush failed, and the result says so (a power failure may bring the originals
                # back: then the messages are in both mailboxes, never in neither).
                raise NotDurable(str(error), error.changes, (uidvalidity, pairs)) from error
            except BaseException:
                # The originals stay (the source shard's commit failed, the folder or account is
                # gone...): the copies go again, and the caller's failure means nothing moved.
                self._undo_move_copies(account, src_folder_id, dst_account, dst_folder_id, pairs)
                raise
        return uidvalidity, pairs

    def _undo_move_copies(self, account: str, src_folder_id: int, dst_account: str, dst_folder_id: int,
                          pairs: list[tuple[int, int]]) -> None:
        """Remove the copies (source UID, copy's UID) a MOVE across shards made, for its originals
        were not removed: a failed MOVE must not leave messages in both mailboxes (RFC 6851
        section 3.3). Only the copies whose original is still there: an original expunged
        meanwhile (or with its folder or account) leaves its copy as the message's only one.
        Nothing is removed when that cannot be read, and a copy that cannot be removed stays;
        either is logged: the message is then in both mailboxes, never in neither. A removal
        whose flush fails stands (NotDurable is not raised: the MOVE's own failure is the answer)."""
        try:
            try:
                standing = {meta.uid for meta in self.get_messages(account, src_folder_id,
                                                                   [old for old, _new in pairs])}
            except (NoSuchAccount, NoSuchFolder):
                standing = set()
            copies = [new for old, new in pairs if old in standing]
            if copies:
                with contextlib.suppress(NotDurable):
                    self.remove_messages(dst_account, dst_folder_id, copies)
        except MidbError as error:
            log.error("a failed move from %s folder %d left copies of its messages in %s folder %d: %s",
                      account, src_folder_id, dst_account, dst_folder_id, error)

    def remove_messages(self, account: str, folder_id: int, uids: Iterable[int]) -> list[int]:
        """Expunge the messages ``uids`` whatever their flags (a tombstone each, as EXPUNGE): the
        originals of a move across shards, the copies of a COPY that failed part-way. -> the
        UIDs removed (those that were still there), ascending."""
        wanted = _uid_list(uids)

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> list[int]:
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            found = [(uid, raw) for uid in wanted
                     if (raw := txn.get(message_key(account_id, record.id, uid), db=dbs.messages)) is not None]
            if found:
                self._remove(txn, dbs, effects, account_id, record, found)
            return [uid for uid, _raw in found]

        return self._write(job, self._home(account))

    def _remove(self, txn: Any, dbs: Databases, effects: WriteEffects, account_id: int, record: FolderRecord,
                found: list[tuple[int, bytes]]) -> list[int]:
        """Expunge the messages ``found`` (uid, record) from the folder: tombstones, indexes,
        body references, usage and the folder record, the change announced after the commit.
        -> the tombstones' MODSEQs, in the order of ``found``."""
        delta = indexes.IndexDelta(txn, dbs)
        tombstones = self._unlist(txn, dbs, delta, account_id, record, found)
        delta.apply()
        self._release_bodies(txn, dbs, effects, account_id, record, found)
        effects.changed(account_id, record.id, record.highestmodseq)
        return tombstones

    @staticmethod
    def _unlist(txn: Any, dbs: Databases, delta: indexes.IndexDelta, account_id: int, record: FolderRecord,
                found: list[tuple[int, bytes]]) -> list[int]:
        """Take messages (uid, record) out of a folder, leaving a tombstone for each; their bodies
        keep their references (see _release_bodies). The caller applies `delta` and stores `record`.
        -> the tombstones' MODSEQs, in the order of `found`."""
        tombstones: list[int] = []
        for uid, raw in found:
            modseq, _date, _tz, size, _blob, tail = unpack_record(raw)
            delta.removed(account_id, record.id, uid, tail)
            key = message_key(account_id, record.id, uid)
            txn.delete(key, db=dbs.messages)
            txn.delete(key, db=dbs.sort_records)
            txn.delete(change_key(account_id, record.id, modseq, uid), db=dbs.modseqs)
            tombstone = record.next_modseq()
            tombstones.append(tombstone)
            txn.put(change_key(account_id, record.id, tombstone, uid), b"", db=dbs.tombstones)
            unseen, deleted = counter_deltas(tail[0])
            record.messages -= 1
            record.unseen -= unseen
            record.deleted -= deleted
            record.size -= size
        if found:
            tombstones_of.prune(txn, dbs.tombstones, account_id, record.id, record.highestmodseq, record.uidnext)
        return tombstones

    def _release_bodies(self, txn: Any, dbs: Databases, effects: WriteEffects, account_id: int,
                        record: FolderRecord, found: list[tuple[int, bytes]]) -> None:
        """After _unlist: drop the messages' body references and their size from the account's
        usage, and store the folder record."""
        total = self._drop_body_references(txn, dbs, effects, (raw for _uid, raw in found))
        self._put_folder(txn, dbs, account_id, record)
        self._adjust_usage(txn, dbs, account_id, -total, -len(found))

    def _drop_body_references(self, txn: Any, dbs: Databases, effects: WriteEffects,
                              records: Iterable[bytes]) -> int:
        """Release the body reference of each message record (one decref per body); -> the
        messages' total size."""
        blob_counts: dict[bytes, int] = {}
        total = 0
        for raw in records:
            blob_raw = bytes(raw[BLOB_SLICE])
            blob_counts[blob_raw] = blob_counts.get(blob_raw, 0) + 1
            total += unpack_record(raw)[3]
        for blob_raw, count in blob_counts.items():
            self._blob_decref(txn, dbs, blob_raw, count, effects)
        return total

    def expunge(self, account: str, folder_id: int, uids: Iterable[int] | None = None) -> list[int]:
        """Remove the messages flagged \\Deleted (only among `uids` if given); -> expunged UIDs."""
        return [uid for uid, _modseq in self.expunge_tombstones(account, folder_id, uids)]

    def expunge_tombstones(self, account: str, folder_id: int, uids: Iterable[int] | None = None
                           ) -> list[tuple[int, int]]:
        """expunge(), telling the MODSEQ of each expunged UID's tombstone: [(uid, modseq), ...]. A
        session knows its own EXPUNGE's MODSEQs this way, and need not read them back."""
        wanted = None if uids is None else _uid_list(uids)
        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> list[tuple[int, int]]:
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if not record.deleted:
                return []
            victims: list[tuple[int, bytes]] = []
            if wanted is None:
                # The \\Deleted index lists the candidates: no scan of the whole folder.
                candidates = indexes.uids_of_kind(txn, dbs, account_id, record.id, indexes.DELETED_KIND)
            else:
                candidates = wanted
            for uid in candidates:
                raw = txn.get(message_key(account_id, record.id, uid), db=dbs.messages)
                if raw is not None and raw[FLAGS_OFFSET] & DELETED:
                    victims.append((uid, raw))
            if not victims:
                return []
            tombstones = self._remove(txn, dbs, effects, account_id, record, victims)
            return [(uid, modseq) for (uid, _raw), modseq in zip(victims, tombstones, strict=True)]

        return self._write(job, self._home(account))

    def expire(self, account: str, folder_id: int, saved_before: int, *, limit: int = EXPIRE_BATCH) -> list[int]:
        """Expunge the folder's messages saved into it before ``saved_before`` (Unix time),
        whatever their flags, oldest first and at most ``limit`` in one transaction: a folder's
        automatic expiry (Dovecot's autoexpunge; RFC 8514's use case). -> the UIDs removed,
        ascending; fewer than ``limit`` when none is left to expire (or some of the batch went
        meanwhile: the next expiry takes the rest, later, never earlier).

        The look goes through the whole folder, not only up to the first message saved since:
        save dates grow with UIDs only while the clock does, and one saved while the clock was
        years ahead must not keep every message after it (review58). About 0.15 s per 100,000
        messages, once an hour at most per account. A message whose save date is unknown (saved
        before the store kept them) counts as saved when the store began keeping them
        (midb.savedates). That look is made in a read snapshot, outside the shard's write lock
        (which deliveries wait for); the write checks only the candidates again."""
        if limit <= 0:
            return []
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            account_id = self._account_id(txn, shared.dbs, account)
            record = self._folder(txn, shared.dbs, account_id, folder_id)
            candidates = [uid for uid, _raw in self._saved_before(txn, shared.dbs, account_id, record,
                                                                  saved_before, limit)]
        if not candidates:
            return []

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> list[int]:
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            unknown = savedates.unknown_as(txn, dbs)
            victims = []
            for uid in candidates:  # still there, and still saved before (not moved out and back)
                raw = txn.get(message_key(account_id, record.id, uid), db=dbs.messages)
                if raw is not None and savedates.of_record(txn, dbs, account_id, record.id, uid, raw,
                                                           unknown) < saved_before:
                    victims.append((uid, bytes(raw)))
            if victims:
                self._remove(txn, dbs, effects, account_id, record, victims)
            return [uid for uid, _raw in victims]

        return self._write(job, shared)

    def expired_uids(self, account: str, folder_id: int, saved_before: int) -> list[int]:
        """The UIDs expire() would remove, all at once (``midb expire --dry-run``)."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            return [uid for uid, _raw in self._saved_before(txn, dbs, account_id, record, saved_before, MAX_U32)]

    @staticmethod
    def _saved_before(txn: Any, dbs: Databases, account_id: int, record: FolderRecord, saved_before: int,
                      limit: int) -> list[tuple[int, bytes]]:
        """(UID, record) of the folder's messages saved before ``saved_before``, lowest UIDs
        first, ``limit`` at most (see expire)."""
        if not record.messages:
            return []
        unknown = savedates.unknown_as(txn, dbs)
        found: list[tuple[int, bytes]] = []
        prefix = folder_key(account_id, record.id)
        cursor = txn.cursor(dbs.messages)
        if not cursor.set_range(prefix):
            return found
        for key, raw in cursor.iternext():
            if key[:len(prefix)] != prefix:
                break
            uid = UID_IN_MESSAGE_KEY.unpack_from(key)[0]
            if savedates.of_record(txn, dbs, account_id, record.id, uid, raw, unknown) >= saved_before:
                continue
            found.append((uid, bytes(raw)))
            if len(found) >= limit:
                break
        return found

    def restore_save_dates(self, account: str, folder_id: int, dates: Mapping[int, int]) -> int:
        """For importers: give the folder's messages ``dates`` (UID -> Unix time) as their save
        dates, those of the copy they were imported from; never a later one than they have
        (the import's). -> how many changed. A few thousand per transaction, not durable: lost
        in a crash, a message keeps the import's date, which only makes it expire later."""
        items = sorted(dates.items())
        changed = 0
        for start in range(0, len(items), _ENTRIES_PER_WRITE):
            chunk = items[start : start + _ENTRIES_PER_WRITE]

            def job(txn: Any, dbs: Databases, effects: WriteEffects, chunk: list[tuple[int, int]] = chunk) -> int:
                account_id = self._account_id(txn, dbs, account)
                record = self._folder(txn, dbs, account_id, folder_id)
                done = 0
                for uid, when in chunk:
                    raw = txn.get(message_key(account_id, record.id, uid), db=dbs.messages)
                    if raw is None:
                        continue
                    current = savedates.of_record(txn, dbs, account_id, record.id, uid, raw)
                    if current is None or when < current:
                        key = change_key(account_id, record.id, MODSEQ_FIELD.unpack_from(raw)[0], uid)
                        txn.put(key, savedates.pack(when), db=dbs.modseqs)
                        done += 1
                return done

            changed += self._write(job, self._home(account), durable=False)
        return changed

    def save_dates(self, account: str, folder_id: int, uids: Iterable[int]) -> dict[int, int]:
        """When each of the folder's messages ``uids`` was saved into it (Unix time), for those
        whose save date is known (midb.savedates): FETCH SAVEDATE, SEARCH SAVEDBEFORE etc."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            found: dict[int, int] = {}
            for key, raw in self._records_of(txn, dbs, account_id, record.id, _uid_list(uids)):
                uid = UID_IN_MESSAGE_KEY.unpack_from(key)[0]
                saved = savedates.of_record(txn, dbs, account_id, record.id, uid, raw)
                if saved is not None:
                    found[uid] = saved
            return found

    def changes_since(self, account: str, folder_id: int, modseq: int) -> tuple[list[MessageMeta], Vanished]:
        """(messages whose modseq > `modseq`, in UID order; UIDs expunged after `modseq`).

        Cost is proportional to the number of changes, not to the folder size.
        """
        def read(txn: Any, dbs: Databases, account_id: int, record: FolderRecord
                 ) -> tuple[list[MessageMeta], Vanished]:
            changed_uids = self._uids_after(txn, dbs.modseqs, account_id, record.id, modseq)
            changed_uids.sort()
            get = txn.get
            metas = []
            for uid in changed_uids:
                raw = get(message_key(account_id, record.id, uid), db=dbs.messages)
                if raw is not None:
                    metas.append(meta_from_record(uid, raw))
            return metas, self._vanished_after(txn, dbs, account_id, record, modseq)

        nothing: tuple[list[MessageMeta], Vanished] = ([], Vanished([]))   # typed: T is inferred from it
        return self._after_modseq(account, folder_id, modseq, nothing, read)

    def view_changes_since(self, account: str, folder_id: int, modseq: int, known_up_to: int, *,
                           read_at_most: int | None = None) -> ViewChanges:
        """changes_since for a session that holds the folder's messages up to UID ``known_up_to``
        (a selected mailbox catching up): the records of the changed messages it holds, only the
        UIDs of those it does not hold yet. A new message needs no record to be announced (an
        EXISTS); a COPY of 50,000 messages into a folder on which twenty sessions IDLE read a
        million records to send twenty EXISTS lines, for seconds in which other sessions waited.
        With more than ``read_at_most`` changed messages it holds, their records are not read
        either: ``unread`` lists them, for the caller to read a part at a time."""
        def read(txn: Any, dbs: Databases, account_id: int, record: FolderRecord) -> ViewChanges:
            known: list[tuple[int, int]] = []  # (uid, modseq)
            beyond: list[int] = []
            top_modseq = 0
            unpack = CHANGE_KEY_MODSEQ_UID.unpack_from
            for key in self._change_keys_after(txn, dbs.modseqs, account_id, record.id, modseq):
                top_modseq, uid = unpack(key)  # keys ascend by modseq
                if uid <= known_up_to:
                    known.append((uid, top_modseq))
                else:
                    beyond.append(uid)
            known.sort()
            beyond.sort()
            # Only those whose messages exist: a change entry without its message (damage `midb
            # verify` reports) is no new message.
            new = uids_from_keys([key for key, _raw in self._records_of(txn, dbs, account_id, record.id, beyond)])
            vanished = self._vanished_after(txn, dbs, account_id, record, modseq)
            if read_at_most is not None and len(known) > read_at_most:
                return ViewChanges([], new, vanished, top_modseq, known)
            records = self._records_of(txn, dbs, account_id, record.id, [uid for uid, _modseq in known])
            return ViewChanges(metas_from_pairs(records), new, vanished, top_modseq)

        return self._after_modseq(account, folder_id, modseq, ViewChanges([], [], Vanished([]), 0), read)

    def _after_modseq(self, account: str, folder_id: int, modseq: int, nothing: T,
                      read: Callable[[Any, Databases, int, FolderRecord], T]) -> T:
        """The shared start of changes_since, view_changes_since, changed_columns and
        vanished_since: check `modseq`, read the folder in a read transaction, and answer
        `nothing` when no change is above `modseq` (every tombstone's modseq is at most the
        folder's HIGHESTMODSEQ)."""
        if not isinstance(modseq, int) or modseq < 0:
            raise InvalidArgument(f"invalid modseq {modseq!r}")
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if modseq >= record.highestmodseq:
                return nothing
            return read(txn, dbs, account_id, record)

    def vanished_since(self, account: str, folder_id: int, modseq: int) -> Vanished:
        """UIDs expunged with a tombstone modseq > `modseq` (QRESYNC VANISHED (EARLIER))."""
        def read(txn: Any, dbs: Databases, account_id: int, record: FolderRecord) -> Vanished:
            return self._vanished_after(txn, dbs, account_id, record, modseq)

        return self._after_modseq(account, folder_id, modseq, Vanished([]), read)

    def _vanished_after(self, txn: Any, dbs: Databases, account_id: int, record: FolderRecord,
                        modseq: int) -> Vanished:
        """The UIDs of the folder's tombstones with a modseq > `modseq`; and, when some of those
        may have been pruned (midb.tombstones), the folder's UIDs, for the superset."""
        vanished = self._uids_after(txn, dbs.tombstones, account_id, record.id, modseq)
        vanished.sort()
        floor, ceiling = tombstones_of.read_floor(txn, dbs.tombstones, account_id, record.id)
        if modseq >= floor:
            return Vanished(vanished)
        keys = self._message_range(txn, dbs, account_id, record, values=False)
        return Vanished(vanished, ceiling, uid_array_from_keys(keys))

    @staticmethod
    def _uids_after(txn: Any, db: Any, account_id: int, folder_id: int, modseq: int) -> list[int]:
        uid_of = UID_IN_CHANGE_KEY.unpack_from
        return [uid_of(key)[0] for key in Store._change_keys_after(txn, db, account_id, folder_id, modseq)]

    @staticmethod
    def _change_keys_after(txn: Any, db: Any, account_id: int, folder_id: int, modseq: int) -> Iterator[bytes]:
        """The folder's keys in a (account, folder, modseq, uid) index (changes, tombstones) with
        a modseq above ``modseq``, ascending by modseq."""
        prefix = folder_key(account_id, folder_id)
        cursor = txn.cursor(db)
        if modseq >= (1 << 64) - 1 or not cursor.set_range(change_key(account_id, folder_id, modseq + 1, 0)):
            return
        for key in cursor.iternext(values=False):
            if key[:8] != prefix:
                break
            yield key

    # ---- bodies and digests -------------------------------------------------------------------------

    def body_path(self, blob: str) -> str:
        """The file of a body stored as a file. A body kept in the index (at most INLINE_MAX bytes,
        see inline_limit) has none: read it with read_body."""
        return self._blobs.path(blob)

    def read_body(self, blob: str, offset: int = 0, length: int | None = None) -> bytes:
        if not isinstance(offset, int) or (length is not None and not isinstance(length, int)):
            raise InvalidArgument("offset and length must be int")
        key = blob_key(blob)
        if offset < 0 or (length is not None and length < 0):
            raise MidbError("negative offset or length")
        shared = self._home_of_blob(key)
        with lmdb_errors(), shared.read() as txn:
            data = bodyrecords.get(txn, shared.dbs, bodyrecords.BODY, key)
        if data is not None:
            return data[offset:] if length is None else data[offset : offset + length]
        return self._blobs.read(blob, offset, length)

    def read_bodies(self, blobs: Iterable[str]) -> list[bytes | None]:
        """Several whole bodies, in order (None for one that is gone): those kept in the index in
        one transaction, the files a few threads at once, so SEARCH BODY over a large folder waits
        for the disk once per batch rather than once per message."""
        wanted = list(blobs)
        keys = [blob_key(blob) for blob in wanted]
        found = self._body_records(bodyrecords.BODY, keys)
        missing = [index for index, data in enumerate(found) if data is None]
        if missing:
            for index, data in zip(missing, self._blobs.read_many([wanted[index] for index in missing]),
                                   strict=True):
                found[index] = data
        return found

    def digest(self, blob: str) -> mime.Digest:
        """The MIME digest stored with the body at append time (recomputed if it is missing).

        Decoded digests of recently fetched bodies are kept (DIGEST_CACHE_ENTRIES): a body never
        changes under its id, and clients fetch the same new messages' ENVELOPE and BODYSTRUCTURE
        from every device and session, which otherwise costs a read and a decode each time. So a
        body removed a moment ago may still answer from the cache (as it would have a moment ago);
        NoSuchBody comes for bodies that are gone and not cached."""
        cached = self._digests.get(blob)
        if cached is None:
            cached = self._load_digest(blob)
            self._digests.put(blob, cached)
        return cached

    def known_digest(self, blob: str) -> mime.Digest | None:
        """The body's digest if one is cached or stored; None rather than digesting the body
        now (a body whose parse midb.deferred has not done yet, or one stored by an older
        version of the digest format)."""
        cached = self._digests.get(blob)
        if cached is None:
            _stored, cached = self._read_digest(blob)
            if cached is not None:
                self._digests.put(blob, cached)
        return cached

    def _read_digest(self, blob: str) -> tuple[bool, mime.Digest | None]:
        """Whether a digest of the body is stored, and that digest if it decodes."""
        key = blob_key(blob)
        shared = self._home_of_blob(key)
        with lmdb_errors(), shared.read() as txn:
            encoded = bodyrecords.get(txn, shared.dbs, bodyrecords.DIGEST, key)
        if encoded is None:
            return False, None
        try:
            return True, mime.decode_digest(encoded)
        except mime.DigestFormatError:   # a digest from an older mime version
            return True, None

    def _load_digest(self, blob: str) -> mime.Digest:
        stored, digest = self._read_digest(blob)
        if digest is not None:
            return digest
        if stored:
            log.warning("stored digest of body %s unreadable; recomputing", blob)
        digest = mime.digest(self.read_body(blob))
        if not stored and self._parser is not None:
            self._parser.parsed(blob, digest)   # not parsed yet (midb.deferred): store it once
        return digest

    def store_parsed(self, items: list[tuple[str, Any]]) -> None:
        """Write the digest and summary of bodies stored without them (midb.deferred): (body id,
        its digest if a reader computed it, else None to parse it here). Bodies that are gone or
        already have a digest are skipped; the rest go in one transaction per shard."""
        # Where each body was appended: its message gets its sort index entry in the same job.
        places = self._parser.take_places([blob for blob, _digest in items]) if self._parser is not None else {}
        keys = [blob_key(blob) for blob, _digest in items]
        # Gone bodies (expunged before their turn) are not parsed; the write job checks again.
        present = self._body_records(bodyrecords.REFS, keys)
        wanted = [(key, blob, digest if digest is not None else self._digests.get(blob))
                  for (blob, digest), key, ref in zip(items, keys, present, strict=True) if ref is not None]
        unparsed = [position for position, entry in enumerate(wanted) if entry[2] is None]
        bodies = self.read_bodies([wanted[position][1] for position in unparsed]) if unparsed else []
        for position, data in zip(unparsed, bodies, strict=True):
            if data is not None:
                wanted[position] = (wanted[position][0], wanted[position][1], _parse(data))
        shards = self._live_shards()
        by_shard: dict[int, list[tuple[bytes, tuple[bytes, bytes], Any]]] = {}
        for key, blob, digest in wanted:
            if digest is not None and (encoded := _encode_parse(digest)) is not None:
                by_shard.setdefault(shards_of.of_blob(key, len(shards)), []).append((key, encoded, places.get(blob)))
        for index, records in by_shard.items():
            self._write(_store_parsed_job(records), shards[index], durable=False)

    def summary(self, blob: str) -> Summary:
        """The summary of a body (midb.summary): what SEARCH, SORT and THREAD read per message."""
        found = self.summaries([blob])[0]
        if found is None:
            raise NoSuchBody(blob)
        return found

    def summaries(self, blobs: Iterable[str]) -> list[Summary | None]:
        """The summaries of several bodies, read in one transaction; None for a body that is gone.
        A body stored without one (before summaries existed) gets it from its digest."""
        return self.summaries_by_key([blob_key(blob) for blob in blobs])

    def summaries_by_key(self, keys: list[bytes]) -> list[Summary | None]:
        """:meth:`summaries` by raw body key (as search_rows gives them)."""
        return self.summary_fields_by_key(keys, decode_summary)

    def summary_fields_by_key(self, keys: list[bytes], read: Callable[[bytes], T], gone: Any = None) -> list[Any]:
        """``read(encoded summary)`` of bodies by raw key (as search_rows gives them), in order;
        ``gone`` for a body that is gone (a distinct object when ``read`` may give None).
        ``read`` takes what it needs of the record (decode_summary the whole; sort_record, what
        a sort index entry is made from, only the front) and raises DigestFormatError for a
        damaged one; a missing or damaged summary is derived from the digest (not cached: a body
        that is gone must show)."""
        encoded = self._body_records(bodyrecords.SUMMARY, keys)
        out: list[Any] = []
        append = out.append
        for key, raw in zip(keys, encoded, strict=True):
            if raw is not None:
                try:
                    append(read(raw))
                    continue
                except mime.DigestFormatError:
                    log.warning("stored summary of body %s unreadable; using its digest", key.hex())
            try:
                append(read(encode_summary(summarize(self._load_digest(key.hex())))))
            except NoSuchBody:
                append(gone)
        return out

    def sort_values(self, account: str, folder_id: int, uids: list[int],
                    read: Callable[[bytes], T]) -> dict[int, T]:
        """UID -> ``read(sort entry)`` (midb.sortindex: what SORT and THREAD compare) of the
        folder's messages among ``uids`` (ascending, as callers have them; any order works); a
        message that is gone is left out.

        The entries come from the sort index: one cursor pass over the range from the first UID
        to the last (a sliced SORT reads a large folder a few thousand UIDs at a time), or a
        lookup each for UIDs that are few among the entries that pass would read. A message
        without one (copied before its body was parsed, see midb.deferred; or in a read-only
        store older than schema 7) gets it from its body's summary, and the entries so derived
        go to the deferred parser's thread to be written: the next reader finds them. ``read``
        raises sortindex.EntryError for an entry it cannot read; that message is treated as one
        without an entry."""
        found: dict[int, T] = {}
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            db = dbs.sort_records
            if db is not None and uids:
                # The entries a pass from the lowest UID to the highest would read, at most
                # (callers give ascending UIDs; min and max keep any order right, at C speed).
                lowest, highest = min(uids), max(uids)
                passed = min(record.messages, highest - lowest + 1)
                if len(uids) * _LOOKUPS_PER_SCAN < passed:
                    get = txn.get
                    for uid in uids:
                        entry = get(message_key(account_id, record.id, uid), db=db)
                        if entry is not None:
                            with contextlib.suppress(sortindex.EntryError):
                                found[uid] = read(entry)
                else:
                    start = message_key(account_id, record.id, lowest)
                    end = prefix_end(message_key(account_id, record.id, highest))
                    if passed >= PREFETCH_FROM:
                        dbs.pages.key_range(txn, b"sort_records", start, end)
                    found = sortindex.folder_values(txn, db, start, end, uids, read, highest - lowest + 1)
        if len(found) < len(uids):
            self._derive_sort_values(account, folder_id, [uid for uid in uids if uid not in found], read, found,
                                     write=db is not None)
        return found

    def _derive_sort_values(self, account: str, folder_id: int, uids: list[int], read: Callable[[bytes], T],
                            found: dict[int, T], *, write: bool) -> None:
        """sort_values for messages without a (readable) sort entry: from their summaries, into
        ``found``; with ``write``, the entries are handed to the deferred parser to be stored."""
        rows = self.search_rows(account, folder_id, uids)
        records = self.summary_fields_by_key([row[1] for row in rows], sort_record, _GONE)
        derived: list[tuple[int, bytes, bytes]] = []
        for (uid, blob_raw, _size, internaldate), record in zip(rows, records, strict=True):
            if record is not _GONE:
                entry = sortindex.entry_of_record(record, internaldate)
                found[uid] = read(entry)
                derived.append((uid, blob_raw, entry))
        if derived and write and self._parser is not None and not self.readonly:
            self._parser.later(functools.partial(self.store_sort_entries, account, folder_id, derived), len(derived))

    def store_sort_entries(self, account: str, folder_id: int, entries: list[tuple[int, bytes, bytes]]) -> int:
        """Write sort entries a reader derived, (UID, raw body id, entry), for the messages still
        there with that body; returns how many. Not durable (they are derived again if lost),
        and a few thousand per transaction: a folder's worth must not hold the writer's lock
        for long."""
        written = 0
        for start in range(0, len(entries), _ENTRIES_PER_WRITE):
            chunk = entries[start : start + _ENTRIES_PER_WRITE]

            def job(txn: Any, dbs: Databases, effects: WriteEffects, chunk: list[tuple[int, bytes, bytes]] = chunk
                    ) -> int:
                account_id = self._account_id(txn, dbs, account)
                return sortindex.put_missing(txn, dbs, account_id, folder_id, chunk)

            written += self._write(job, self._home(account), durable=False)
        return written

    # ---- notifications ------------------------------------------------------------------------------

    def watch(self, account: str, callback: Callable[[str, int, int], None]) -> WatchHandle:
        """callback(account, folder_id, highestmodseq) after every committed change to the account,
        by this process (inline in the committing thread, after the commit) or another process (from
        the notifier thread). Callbacks may run concurrently from several threads: keep them short and
        thread-safe (typically: wake the session's poller). Exceptions are logged, never raised."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            account_id = self._account_id(txn, shared.dbs, account)
        return self._notifier.watch(account_id, normalize_account_name(account), callback)

    # ---- maintenance --------------------------------------------------------------------------------

    def verify(self, repair: bool = False) -> list[str]:
        """Problems found ([] = consistent). Lines starting with "orphan:" are harmless leftovers of
        interrupted writes (removed by repair once older than a minute); anything else is an error."""
        return maintenance.verify(self, repair=repair).problems()

    def backup(self, dest: str) -> None:
        """A consistent copy (index + referenced bodies) into the empty or new directory `dest`."""
        maintenance.backup(self, dest)

    def stats(self) -> dict[str, int]:
        return maintenance.stats(self)

    # ---- reads for a session's view and FETCH (gximap.session.selected, .commands.fetch) ----------

    def folder_uids(self, account: str, folder_id: int) -> tuple[FolderInfo, array]:
        """(the folder, its UIDs ascending as an array of u32) read in one transaction, so the
        UID list is exactly the one of that folder record's state (UIDNEXT, message count)."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            info = self._info(txn, dbs, account_id, record)
            if shared.columned:
                # The flag column lists them a page per LMDB call, where the message keys take a
                # cursor step each (100,000: about 3 against 25 ms); and it is what a FETCH 1:*
                # (UID FLAGS) after the SELECT reads next, warm by then.
                uids = columns.column_uids(txn, dbs, account_id, record.id,
                                           prefetch=record.messages >= PREFETCH_FROM)
                if len(uids) == record.messages:
                    return info, uids
                log.warning("flag column of folder %d/%d is off; run midb verify --repair",
                            account_id, record.id)
            keys = self._message_range(txn, dbs, account_id, record, values=False)
        return info, uid_array_from_keys(keys)

    def flag_columns(self, account: str, folder_id: int, uids: Iterable[int], *,
                     with_modseq: bool = False) -> Any:
        """midb.messages.FlagColumns (uids, raw flag tails, modseqs) of the existing messages among
        `uids`, in UID order, from one cursor pass (or key reads for a sparse set): flag_rows
        without a Python step per message."""
        return self._record_flag_columns(account, folder_id, _uid_list(uids), with_modseq)

    def _record_flag_columns(self, account: str, folder_id: int, wanted: list[int], with_modseq: bool) -> Any:
        """flag_columns of `wanted`, already sorted, distinct and in range, from their records."""
        found, records = self._existing_records(account, folder_id, wanted)
        return flag_columns_of_records(found, records, with_modseq=with_modseq)

    def record_batches(self, account: str, folder_id: int, uids: Iterable[int],
                       batch: int) -> Iterator[tuple[list[int], list[bytes]]]:
        """(UIDs, raw index records) of the existing messages among `uids`, `batch` of `uids` at a
        time, in UID order: for readers that take the fields they need column by column
        (midb.messages.record_sizes and the like) instead of a MessageMeta per message."""
        wanted = _uid_list(uids)
        for start in range(0, len(wanted), batch):
            yield self._existing_records(account, folder_id, wanted[start : start + batch])

    def _existing_records(self, account: str, folder_id: int, wanted: list[int]) -> tuple[list[int], list[bytes]]:
        """(UIDs, records) of the existing messages among `wanted` (sorted, distinct, in range),
        in one read transaction."""
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if wanted and wanted[-1] - wanted[0] + 1 == len(wanted):
                # A UID range (1:*): read the records alone, half the cost of (key, record)
                # pairs. If the cursor's last key is the range's last, every UID was there.
                cursor = txn.cursor(dbs.messages)
                end = message_key(account_id, record.id, wanted[-1])
                if cursor.set_range(message_key(account_id, record.id, wanted[0])):
                    records = list(itertools.islice(cursor.iternext(keys=False, values=True), len(wanted)))
                    if len(records) == len(wanted) and cursor.key() == end:
                        return wanted, records
            pairs = self._records_of(txn, dbs, account_id, record.id, wanted)
        return split_pairs(pairs)

    def flag_column_batches(self, account: str, folder_id: int, uids: Iterable[int], batch: int, *,
                            with_modseq: bool = False, every_existing: bool = False) -> Iterator[Any]:
        """flag_columns of the existing messages among `uids`, `batch` messages at a time, in
        UID order. `every_existing`: the caller wants every existing message whose UID lies in
        the range of `uids` (FETCH 1:* over a session's view, which lacks only messages newer
        than its last), so no membership test is needed.

        When `uids` are a good part of the folder, its flag column (midb.columns) is read once,
        in one transaction, and handed out a batch at a time; otherwise each batch is read from
        its message records (flag_columns)."""
        # A session's whole view comes sorted and distinct; the column path only needs its
        # ends and length, so its 100,000 UIDs are not checked one by one (2 ms) unless the
        # records are read after all.
        trusted = (every_existing and type(uids) is list
                   and (not uids or (type(uids[0]) is int and type(uids[-1]) is int)))
        wanted = cast("list[int]", uids) if trusted else _uid_list(uids)   # trusted: uids is a list
        if not wanted:
            return
        shared = self._home(account)
        column = None
        if shared.columned:
            with lmdb_errors(), shared.read() as txn:
                dbs = shared.dbs
                account_id = self._account_id(txn, dbs, account)
                record = self._folder(txn, dbs, account_id, folder_id)
                if len(wanted) * _COLUMN_SHARE >= record.messages:
                    column = columns.read_column(txn, dbs, account_id, record.id, wanted[0], wanted[-1],
                                                 with_modseq=with_modseq,
                                                 prefetch=record.messages >= PREFETCH_FROM)
        if column is None:
            if trusted:
                wanted = _uid_list(wanted)
            for start in range(0, len(wanted), batch):
                yield self._record_flag_columns(account, folder_id, wanted[start : start + batch], with_modseq)
            return
        if not every_existing and wanted[-1] - wanted[0] + 1 != len(wanted):
            column = column.among(wanted)
        tail_of = shared.dbs.word_tails.of(account_id)
        for found_uids, words, modseqs in column.batches(batch):
            yield FlagColumns(found_uids, words, modseqs, tail_of)

    def changed_columns(self, account: str, folder_id: int, modseq: int) -> tuple[Any, Vanished]:
        """changes_since as columns: (FlagColumns, MODSEQs included, of the messages whose modseq
        is above `modseq`, in UID order; UIDs expunged after `modseq`). Walks the
        modseq index from `modseq`: O(changes), whatever the folder's size."""
        def read(txn: Any, dbs: Databases, account_id: int, record: FolderRecord) -> tuple[Any, Vanished]:
            changed = self._uids_after(txn, dbs.modseqs, account_id, record.id, modseq)
            vanished = self._vanished_after(txn, dbs, account_id, record, modseq)
            if len(changed) * 4 > record.messages:
                # Most of the folder changed (an old modseq): one pass over it beats a key
                # lookup per change; the unchanged records are dropped by their MODSEQ.
                pairs = self._message_range(txn, dbs, account_id, record, values=True)
                everything = flag_columns_from_pairs(pairs, with_modseq=True)
                assert everything.modseqs is not None
                keep = [index for index, value in enumerate(everything.modseqs) if value > modseq]
                tails = everything.tail_list()   # list[bytes]: record tails (no tail_of), this very list
                return FlagColumns([everything.uids[i] for i in keep], [tails[i] for i in keep],
                                   [everything.modseqs[i] for i in keep]), vanished
            changed.sort()
            get = txn.get
            messages_db = dbs.messages
            uids: list[int] = []
            records: list[bytes] = []
            for uid in changed:
                raw = get(message_key(account_id, record.id, uid), db=messages_db)
                if raw is not None:
                    uids.append(uid)
                    records.append(raw)
            return flag_columns_of_records(uids, records, with_modseq=True), vanished

        nothing: tuple[Any, Vanished] = (flag_columns_of_records([], [], with_modseq=True), Vanished([]))
        return self._after_modseq(account, folder_id, modseq, nothing, read)

    # ---- reads for SEARCH (gximap.session.searching) ------------------------------------------------

    def search_rows(self, account: str, folder_id: int,
                    uids: Iterable[int] | None = None) -> list[tuple[int, bytes, int, int]]:
        """(uid, raw body key, size, internal date) of the folder's messages (of the existing ones
        among `uids`), in UID order, from one cursor pass: what a SEARCH that reads summaries or
        bodies, or a SORT, needs of a message's record, at a fraction of a MessageMeta's cost."""
        # The fixed part of a message record (midb.messages.RECORD): modseq, internaldate,
        # tzoffset, size, body id.
        fixed = struct.Struct(">QqhQ16s").unpack_from
        uid_of = UID_IN_MESSAGE_KEY.unpack_from
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            record = self._folder(txn, dbs, account_id, folder_id)
            if uids is None:
                pairs = self._message_range(txn, dbs, account_id, record, values=True)
            else:
                pairs = self._records_of(txn, dbs, account_id, record.id, _uid_list(uids))
        rows: list[tuple[int, bytes, int, int]] = []
        append = rows.append
        for key, raw in pairs:
            _modseq, internaldate, _tz, size, blob_raw = fixed(raw)
            append((uid_of(key)[0], blob_raw, size, internaldate))
        return rows

    def search_summaries(self, keys: Iterable[bytes]) -> list[bytes | None]:
        """The encoded summaries (midb.summary) of bodies by raw key (as search_rows gives them),
        in one transaction; None for a body that is gone. Left encoded: a search decodes only
        those it must (summary.body_plan and summary.may_contain read them as they are). A body
        stored without one (before summaries existed) gets it from its digest."""
        keys = list(keys)
        found = self._body_records(bodyrecords.SUMMARY, keys)
        for index, raw in enumerate(found):
            if raw is None:
                try:
                    found[index] = encode_summary(summarize(self.digest(keys[index].hex())))
                except NoSuchBody:
                    pass
        return found

    def search_headers(self, keys: Iterable[bytes], sizes: Iterable[int]) -> list[bytes | None]:
        """The first ``sizes[i]`` octets of each body by raw body key (its top-level header: the
        summary's header_size), in order; None for a body that is gone. Bodies kept in the index
        come from one read transaction per shard: SEARCH HEADER over a folder used to take one
        per message."""
        keys = list(keys)
        sizes = list(sizes)
        headers: list[bytes | None] = []
        for key, size, data in zip(keys, sizes, self._body_records(bodyrecords.BODY, keys), strict=True):
            if data is not None:
                headers.append(data[:size])
                continue
            try:
                headers.append(self._blobs.read(key.hex(), 0, size))
            except NoSuchBody:
                headers.append(None)
        return headers

    def search_bodies(self, keys: Iterable[bytes], sizes: Iterable[int]) -> list[bytes | None]:
        """Whole bodies by raw body key, in order (None for one that is gone), read in the calling
        thread: read_bodies for a caller that overlaps the reads with its own work (SEARCH reads
        the next batch in a worker thread while it searches this one). Files are opened relative
        to their fan-out directory, with the size known from the record: a path lookup of one
        component and no fstat per body, which halves the cost of a body file on a warm cache."""
        keys = list(keys)
        sizes = list(sizes)
        found = self._body_records(bodyrecords.BODY, keys)
        directories: dict[str, int] = {}
        flags = os.O_RDONLY | os.O_CLOEXEC
        try:
            for index, data in enumerate(found):
                if data is not None:
                    continue
                blob = keys[index].hex()
                path = self._blobs.path(blob)  # eml/<xx>/<id>: the id is the file's name
                directory = os.path.dirname(path)
                try:
                    dir_fd = directories.get(directory)
                    if dir_fd is None:
                        dir_fd = directories[directory] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    fd = os.open(os.path.basename(path), flags, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # expunged meanwhile: None
                except OSError as error:
                    raise MidbError(f"cannot read body {blob}: {error}") from error
                try:
                    size = sizes[index]
                    data = os.pread(fd, size + 1, 0)
                    if len(data) > size:  # not the recorded size after all: read it all
                        data = self._blobs.read(blob)
                except NoSuchBody:
                    continue
                except OSError as error:
                    raise MidbError(f"cannot read body {blob}: {error}") from error
                finally:
                    os.close(fd)
                found[index] = data
        finally:
            for dir_fd in directories.values():
                os.close(dir_fd)
        return found


# ---- helpers --------------------------------------------------------------------------------------

class _KeywordSpellings:
    """Keywords are case-insensitive (RFC 3501 section 9): one that a folder's messages carry
    already is stored in the folder's spelling, so that FLAGS and FETCH show one keyword once,
    whichever spelling a client sends ($Forwarded, $forwarded), as Dovecot does. The first
    spelling a folder is given stays; read in the write transaction when first needed, and
    kept up to date with the keywords the same job adds."""

    __slots__ = ("_txn", "_dbs", "_account_id", "_folder_id", "_known", "_retailed")

    def __init__(self, txn: Any, dbs: Databases, account_id: int, folder_id: int) -> None:
        self._txn = txn
        self._dbs = dbs
        self._account_id = account_id
        self._folder_id = folder_id
        self._known: dict[str, str] | None = None
        self._retailed: dict[bytes, bytes] = {}   # retail's answers

    def respell(self, flags: FlagSet) -> None:
        if not flags.keywords:
            return
        known = self._known
        if known is None:
            known = self._known = indexes.keyword_spellings(
                indexes.folder_keywords(self._txn, self._dbs, self._account_id, self._folder_id))
        keywords = flags.keywords
        for lowered, keyword in keywords.items():
            keywords[lowered] = known.setdefault(lowered, keyword)

    def tail(self, flags: FlagSet) -> bytes:
        """The record tail of ``flags``, its keywords in the folder's spelling."""
        self.respell(flags)
        return flags.encode()

    def retail(self, tail: bytes) -> bytes:
        """A record tail (of a message copied, moved or appended) in this folder's spelling. The
        messages of one job share a few flag sets, so each distinct tail is decoded and respelt
        once per job, not once per message; the answer cannot go stale, since a spelling once
        chosen (respell's setdefault) stays for the job."""
        if len(tail) <= 1:
            return tail   # no keywords
        done = self._retailed.get(tail)
        if done is None:
            done = self._retailed[tail] = self.tail(FlagSet.decode(tail))
        return done


def _apply_flags(old_tail: bytes, mode: str, given: FlagSet) -> bytes:
    if mode == "set":
        return given.encode()
    current = FlagSet.decode(old_tail)
    if mode == "add":
        current.bits |= given.bits
        for lowered, keyword in given.keywords.items():
            current.keywords.setdefault(lowered, keyword)
    else:
        current.bits &= ~given.bits
        for lowered in given.keywords:
            current.keywords.pop(lowered, None)
    return current.encode()


def _uid_list(uids: Iterable[int]) -> list[int]:
    """Sorted distinct UIDs; values outside 1..2**32-1 cannot exist and are dropped."""
    if type(uids) is list:
        contiguous = _as_uid_range(uids)
        if contiguous is not None:
            return contiguous
        if _is_uid_sequence(uids):
            return uids   # already sorted, distinct and in range (what sessions pass): as is
    if isinstance(uids, (str, bytes)):
        raise InvalidArgument("uids must be an iterable of int")
    try:
        values = set(uids)
    except TypeError:
        raise InvalidArgument("uids must be an iterable of int") from None
    for value in values:
        if not isinstance(value, int):
            raise InvalidArgument(f"invalid UID {value!r}")
    return sorted(value for value in values if 0 < value <= MAX_U32)


def _as_uid_range(uids: list[Any]) -> list[int] | None:
    """`uids` as a new list of ints when it equals a stretch of consecutive UIDs (a batch of a
    FETCH 1:*), else None. One list comparison: a third of _is_uid_sequence's cost. The list
    returned is built from the range, so an equal float or bool in `uids` comes out as an int."""
    if not uids:
        return None
    first, last = uids[0], uids[-1]
    if type(first) is not int or type(last) is not int or last - first + 1 != len(uids):
        return None
    if first < 1 or last > MAX_U32:
        return None
    contiguous = list(range(first, last + 1))
    return contiguous if contiguous == uids else None


def _is_uid_sequence(uids: list[Any]) -> bool:
    """True when `uids` holds strictly ascending ints in 1..2**32-1 (checked in C loops)."""
    if not uids:
        return True
    try:
        words = array(U32_ARRAY_CODE, uids)   # TypeError: not an int; OverflowError: out of range
    except (TypeError, OverflowError):
        return False
    return words[0] > 0 and all(map(operator.lt, words, itertools.islice(words, 1, None)))


def _some_items(items: Iterable[Any], caller: str) -> list[Any]:
    """The append items as a list; a MULTIAPPEND of nothing is a caller's mistake."""
    listed = list(items)
    if not listed:
        raise InvalidArgument(f"{caller} needs at least one message")
    return listed


def _check_uid_room(record: FolderRecord, explicit_uid: int | None, count: int) -> None:
    if explicit_uid is not None and explicit_uid < record.uidnext:
        raise MidbError(f"UID {explicit_uid} is below UIDNEXT {record.uidnext}")
    first = record.uidnext if explicit_uid is None else explicit_uid
    if not _uids_fit(first, count):
        raise MidbError("folder UID space exhausted")


def _uids_fit(first: int, count: int) -> bool:
    """UIDs ``first`` .. ``first + count - 1`` fit, and so does the UIDNEXT after them (a 32-bit
    nz-number, RFC 3501): the last UID a folder can hold is 2^32 - 2."""
    return first + count <= MAX_U32


def _check_uidvalidity(value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_U32:
        raise InvalidArgument(f"invalid UIDVALIDITY {value!r}")


def _check_password_hash(value: object) -> None:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_PASSWORD_HASH_LENGTH):
        raise InvalidArgument("password_hash must be a str (or None)")


def _check_scram(value: object) -> None:
    from midb.scram import parse_credential

    if value is not None and (not isinstance(value, str) or parse_credential(value) is None):
        raise InvalidArgument("scram_sha256 must be SCRAM-SHA-256 keys in Dovecot's form (or None)")


def _check_keyword_count(count: int, before: int = 0) -> None:
    """TooManyKeywords when a message would carry ``count`` keywords, more than the bound and
    more than the ``before`` it had (a message stored with more may shed them)."""
    if count > MAX_KEYWORDS_PER_MESSAGE and count > before:
        raise TooManyKeywords(f"{count} keywords on one message (at most {MAX_KEYWORDS_PER_MESSAGE})")


def _checked_expiry_periods(periods: object) -> tuple[tuple[str, int], ...]:
    """An account's own expiry periods as its record keeps them (midb.accounts.Account.autoexpunge)."""
    if not isinstance(periods, Mapping):
        raise InvalidArgument("autoexpunge must be a mapping of special use to seconds")
    for use, seconds in periods.items():
        if use not in expiry.SPECIAL_USES.values():
            raise InvalidArgument(f"no expiry period for the special use {use!r}")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 <= seconds < 1 << 63:
            raise InvalidArgument("an expiry period must be a non-negative int of seconds")
    return tuple(sorted(periods.items()))


def _check_lang(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) > MAX_LANG_LENGTH or any(ord(c) < 0x20 for c in value):
        raise InvalidArgument(f"invalid language {value!r}")


def _encoded_digest(data: bytes) -> tuple[bytes, bytes] | None:
    """(encoded MIME digest, encoded summary) of a body about to be stored."""
    digest = _parse(data)
    return None if digest is None else _encode_parse(digest)


def _parse(data: bytes) -> mime.Digest | None:
    try:
        return mime.digest(data)
    except Exception:   # a cache; the message must still be stored
        log.exception("MIME digest failed; it will be recomputed on demand")
        return None


def _encode_parse(digest: mime.Digest) -> tuple[bytes, bytes] | None:
    """(encoded MIME digest, encoded summary): the two records a parse leaves in the index."""
    try:
        return mime.encode_digest(digest), encode_summary(summarize(digest))
    except Exception:
        log.exception("MIME digest could not be encoded; it will be recomputed on demand")
        return None


def _forget_removals(blob_raws: list[bytes]) -> Callable[[Any, Databases, WriteEffects], None]:
    """A write job dropping the removal records of these bodies (midb.removal)."""
    def job(txn: Any, dbs: Databases, _effects: WriteEffects) -> None:
        removal.forget(txn, dbs, blob_raws)
    return job


def _store_parsed_job(records: list[tuple[bytes, tuple[bytes, bytes], Any]]
                      ) -> Callable[[Any, Databases, WriteEffects], None]:
    """The write job of Store.store_parsed: (body key, (digest, summary), where it was appended:
    (account, folder id, UID) or None). Checks again, inside the transaction, that each body is
    still there and still without a digest (an expunge or another process may have been first),
    and writes the sort index entry of the message it was appended as, if that is still there."""
    def job(txn: Any, dbs: Databases, effects: WriteEffects) -> None:
        get, put = bodyrecords.get, bodyrecords.put
        for key, (digest, summary), place in records:
            if get(txn, dbs, bodyrecords.REFS, key) is None or get(txn, dbs, bodyrecords.DIGEST, key) is not None:
                continue
            put(txn, dbs, bodyrecords.DIGEST, key, digest)
            put(txn, dbs, bodyrecords.SUMMARY, key, summary)
            if place is not None:
                _put_sort_entry(txn, dbs, place, key, summary)

    return job


def _put_sort_entry(txn: Any, dbs: Databases, place: tuple[str, int, int], blob_raw: bytes, summary: bytes) -> None:
    """The sort index entry of the message (account, folder id, UID) a parsed body was appended
    as (sortindex.put_parsed); nothing if the account is gone."""
    account, folder_id, uid = place
    try:
        key = message_key(Store._account_id(txn, dbs, account), folder_id, uid)
    except NoSuchAccount:
        return
    sortindex.put_parsed(txn, dbs, key, blob_raw, summary)
