"""Store maintenance: verify (and repair), backup, stats.

verify() recomputes everything derivable from the messages table -- folder counters, account usage,
the modseq index, body refcounts -- and compares it with what is stored. Problems come in two kinds:
  * "orphan: ..."  leftovers of interrupted writes (a body file no index entry references, a temporary
                   file). Expected after a crash; harmless; repair removes them once older than a
                   minute (younger ones may belong to a write in flight).
  * "error: ..."   real inconsistencies. Repair fixes what can be derived (counters, refcounts, index
                   entries); a body file that is referenced but missing cannot be repaired.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lmdb

from midb import bodyrecords, columns, indexes, quotas, removal, savedates, sortindex, tombstones
from midb import shards as shards_of
from midb.accounts import decode_account, decode_usage, encode_usage
from midb.blobs import TEMP_PREFIX, pack_blob_record, unpack_blob_record
from midb.env import MAX_DBS, Databases, lmdb_errors
from midb.errors import MidbError, StoreBusy
from midb.folders import FolderRecord, parent_name
from midb.keys import (
    account_key,
    change_key,
    folder_key,
    name_key,
    pack_u32,
    unpack_change_key,
    unpack_folder_key,
    unpack_message_key,
    unpack_name_key,
    unpack_u32,
)
from midb.messages import BLOB_SLICE, FLAGS_OFFSET, counter_deltas, unpack_record

if TYPE_CHECKING:
    from midb.store import Store

log = logging.getLogger("midb")

ORPHAN_MIN_AGE = 60.0          # seconds: younger unreferenced files may belong to a write in flight
STOP_EVERY = 1024              # files walked between two looks at a sweep's stop request
BACKUP_ATTEMPTS = 8
_HEX = frozenset("0123456789abcdef")


@dataclass
class VerifyReport:
    errors: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [f"error: {text}" for text in self.errors] + [f"orphan: {text}" for text in self.orphans]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _FolderTally:
    messages: int = 0
    unseen: int = 0
    deleted: int = 0
    size: int = 0
    max_uid: int = 0
    max_modseq: int = 0


@dataclass
class _Scan:
    """Everything recomputed from one snapshot."""

    accounts: dict[int, str] = field(default_factory=dict)
    folders: dict[tuple[int, int], FolderRecord] = field(default_factory=dict)
    tallies: dict[tuple[int, int], _FolderTally] = field(default_factory=dict)
    blob_refs: dict[bytes, int] = field(default_factory=dict)
    blob_sizes: dict[bytes, int] = field(default_factory=dict)       # size per referencing message
    blob_records: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    expected_changes: set[bytes] = field(default_factory=set)
    indexes_stale: bool = False                                       # flag index / keyword counts differ
    inline: set[bytes] = field(default_factory=set)                   # bodies kept in the index
    awaiting_removal: set[bytes] = field(default_factory=set)         # files a remover will take (midb.removal)
    problems: list[tuple[str, Any]] = field(default_factory=list)    # (kind, detail) for repair


def _scan(txn: Any, dbs: Databases, shard: int, count: int) -> tuple[_Scan, list[str]]:
    """Recompute shard `shard` (of `count`) from one snapshot of it."""
    scan = _Scan()
    errors: list[str] = []

    for key, raw in txn.cursor(dbs.accounts):
        account_id = unpack_u32(key)
        try:
            name = decode_account(account_id, raw).name
        except (ValueError, EOFError, TypeError):
            errors.append(f"account {account_id}: unreadable record")
            continue
        scan.accounts[account_id] = name
        homes = {shards_of.of_account_id(account_id, count), shards_of.of_name(name, count)}
        if homes != {shard}:
            # Not where routing looks for it: its mail is unreachable. Not derivable: reported.
            errors.append(f"account {name}: stored in shard {shard}, belongs in {sorted(homes)}")
        if txn.get(name.encode("utf-8"), db=dbs.account_names) != key:
            errors.append(f"account {name}: name index does not point to id {account_id}")
            scan.problems.append(("account_name_missing", (account_id, name)))
    for key, raw in txn.cursor(dbs.account_names):
        account_id = unpack_u32(raw)
        if account_id not in scan.accounts:
            errors.append(f"account name {bytes(key).decode('utf-8', 'replace')}: points to missing account")
            scan.problems.append(("account_name_dangling", bytes(key)))

    for key, raw in txn.cursor(dbs.folders):
        account_id, folder_id = unpack_folder_key(key)
        record = FolderRecord.decode(folder_id, raw)
        scan.folders[(account_id, folder_id)] = record
        scan.tallies[(account_id, folder_id)] = _FolderTally()
        where = f"folder {account_id}/{folder_id} ({record.name})"
        if account_id not in scan.accounts:
            errors.append(f"{where}: belongs to a missing account")
            scan.problems.append(("folder_without_account", (account_id, folder_id)))
        if txn.get(name_key(account_id, record.name), db=dbs.folder_names) != pack_u32(folder_id):
            errors.append(f"{where}: name index does not point to it")
            scan.problems.append(("folder_name_missing", (account_id, folder_id)))
        parent = parent_name(record.name)
        if parent is not None and txn.get(name_key(account_id, parent), db=dbs.folder_names) is None:
            errors.append(f"{where}: parent folder {parent} missing")
    for key, raw in txn.cursor(dbs.folder_names):
        account_id, name = unpack_name_key(key)
        folder_id = unpack_u32(raw)
        folder_record = scan.folders.get((account_id, folder_id))
        if folder_record is None or folder_record.name != name:
            errors.append(f"folder name {account_id}/{name}: points to a missing or renamed folder")
            scan.problems.append(("folder_name_dangling", bytes(key)))
    for account_id, name in scan.accounts.items():
        # The kept counts of the mailbox quota (midb.quotas): repair drops one that is wrong, and
        # the next check counts again.
        for what, kept_count, actual in (
                ("folders", quotas.folder_count(txn, dbs, account_id), quotas.count_folders(txn, dbs, account_id)),
                ("subscriptions", quotas.subscription_count(txn, dbs, account_id),
                 quotas.count_subscriptions(txn, dbs, account_id))):
            if kept_count != actual:
                errors.append(f"account {name}: kept count of {what} is {kept_count}, there are {actual}")
                if ("kept_counts", account_id) not in scan.problems[-1:]:   # (repair drops both)
                    scan.problems.append(("kept_counts", account_id))

    lost: set[tuple[int, int]] = set()
    for key, raw in txn.cursor(dbs.messages):
        account_id, folder_id, uid = unpack_message_key(key)
        modseq, _date, _tz, size, blob_raw, tail = unpack_record(raw)
        tally = scan.tallies.get((account_id, folder_id))
        if tally is None:
            if (account_id, folder_id) not in lost:
                lost.add((account_id, folder_id))
                errors.append(f"messages of missing folder {account_id}/{folder_id}")
            tally = scan.tallies[(account_id, folder_id)] = _FolderTally()
        unseen, deleted = counter_deltas(raw[FLAGS_OFFSET])
        tally.messages += 1
        tally.unseen += unseen
        tally.deleted += deleted
        tally.size += size
        tally.max_uid = max(tally.max_uid, uid)
        tally.max_modseq = max(tally.max_modseq, modseq)
        scan.blob_refs[blob_raw] = scan.blob_refs.get(blob_raw, 0) + 1
        if scan.blob_sizes.setdefault(blob_raw, size) != size:
            errors.append(f"message {account_id}/{folder_id}/{uid}: size differs from other copies")
        scan.expected_changes.add(change_key(account_id, folder_id, modseq, uid))
    for folder in lost:
        scan.problems.append(("lost_folder", folder))
    if dbs.flag_lists is not None:
        _check_indexes(txn, dbs, scan, errors)

    for (account_id, folder_id), record in scan.folders.items():
        tally = scan.tallies[(account_id, folder_id)]
        where = f"folder {account_id}/{folder_id} ({record.name})"
        counted = (tally.messages, tally.unseen, tally.deleted, tally.size)
        stored = (record.messages, record.unseen, record.deleted, record.size)
        if counted != stored:
            errors.append(f"{where}: counters (messages, unseen, deleted, size) are {stored}, "
                          f"messages say {counted}")
            scan.problems.append(("folder_counters", (account_id, folder_id)))
        if tally.max_uid >= record.uidnext:
            errors.append(f"{where}: uidnext {record.uidnext} <= highest uid {tally.max_uid}")
            scan.problems.append(("folder_counters", (account_id, folder_id)))
        if tally.max_modseq > record.highestmodseq:
            errors.append(f"{where}: highestmodseq {record.highestmodseq} < message modseq {tally.max_modseq}")
            scan.problems.append(("folder_counters", (account_id, folder_id)))

    usage: dict[int, list[int]] = {}
    for (account_id, _folder_id), tally in scan.tallies.items():
        total = usage.setdefault(account_id, [0, 0])
        total[0] += tally.size
        total[1] += tally.messages
    for account_id, name in scan.accounts.items():
        stored_usage = decode_usage(txn.get(account_key(account_id), db=dbs.usage))
        counted_usage = tuple(usage.get(account_id, [0, 0]))
        if stored_usage != counted_usage:
            errors.append(f"account {name}: usage is {stored_usage}, messages say {counted_usage}")
            scan.problems.append(("usage", account_id))

    for key in txn.cursor(dbs.modseqs).iternext(values=False):
        if bytes(key) not in scan.expected_changes:
            errors.append(f"modseq index entry {unpack_change_key(key)} has no matching message")
            scan.problems.append(("modseq_extra", bytes(key)))
    missing_changes = [k for k in scan.expected_changes if txn.get(k, db=dbs.modseqs) is None]
    for key in missing_changes:
        errors.append(f"message {unpack_change_key(key)} missing from the modseq index")
        scan.problems.append(("modseq_missing", key))

    for key, value in txn.cursor(dbs.tombstones):
        account_id, folder_id, modseq, uid = unpack_change_key(key)
        folder_record = scan.folders.get((account_id, folder_id))
        if folder_record is None:
            errors.append(f"tombstone {account_id}/{folder_id}/{uid} of a missing folder")
            scan.problems.append(("tombstone_dangling", bytes(key)))
        elif modseq == 0:   # the folder's floor entry (midb.tombstones)
            floor, ceiling = tombstones.unpack_floor(value)
            if floor > folder_record.highestmodseq or ceiling > folder_record.uidnext:
                errors.append(f"folder {account_id}/{folder_id}: tombstones pruned up to modseq {floor}, "
                              f"UID {ceiling}, beyond its highestmodseq or uidnext")
                scan.problems.append(("folder_counters", (account_id, folder_id)))
        elif modseq > folder_record.highestmodseq:
            errors.append(f"tombstone {account_id}/{folder_id}/{uid}: modseq {modseq} > highestmodseq")
            scan.problems.append(("folder_counters", (account_id, folder_id)))

    for blob_raw, raw in bodyrecords.items(txn, dbs, bodyrecords.REFS):
        refcount, size = unpack_blob_record(raw)
        scan.blob_records[blob_raw] = (refcount, size)
        refs = scan.blob_refs.get(blob_raw, 0)
        if refs == 0:
            errors.append(f"body {blob_raw.hex()}: record without any message")
            scan.problems.append(("blob_unreferenced", blob_raw))
        elif refs != refcount:
            errors.append(f"body {blob_raw.hex()}: refcount {refcount}, referenced {refs} times")
            scan.problems.append(("blob_refcount", blob_raw))
        elif scan.blob_sizes.get(blob_raw, size) != size:
            errors.append(f"body {blob_raw.hex()}: size {size} differs from its messages'")
            scan.problems.append(("blob_refcount", blob_raw))
    for blob_raw in scan.blob_refs:
        if blob_raw not in scan.blob_records:
            errors.append(f"body {blob_raw.hex()}: referenced by messages but has no record")
            scan.problems.append(("blob_record_missing", blob_raw))
    for blob_raw, _ in bodyrecords.items(txn, dbs, bodyrecords.DIGEST, values=False):
        if blob_raw not in scan.blob_records:
            errors.append(f"digest of unknown body {blob_raw.hex()}")
            scan.problems.append(("digest_dangling", blob_raw))
    for blob_raw, data in bodyrecords.items(txn, dbs, bodyrecords.BODY):
        blob_record = scan.blob_records.get(blob_raw)
        if blob_record is None:
            errors.append(f"body {blob_raw.hex()} kept in the index has no record")
            scan.problems.append(("inline_dangling", blob_raw))
            continue
        scan.inline.add(blob_raw)
        kept_size = len(data or b"")
        if kept_size != blob_record[1]:
            errors.append(f"body {blob_raw.hex()} kept in the index has {kept_size} bytes, "
                          f"its record says {blob_record[1]}")
    for blob_raw, _ in bodyrecords.items(txn, dbs, bodyrecords.SUMMARY, values=False):
        if blob_raw not in scan.blob_records:
            errors.append(f"summary of unknown body {blob_raw.hex()}")
            scan.problems.append(("summary_dangling", blob_raw))
    for blob_raw in removal.recorded(txn, dbs):
        if not removal.well_formed(blob_raw):
            errors.append(f"damaged record of a body to remove {blob_raw.hex()}")
            scan.problems.append(("removal_wrong", blob_raw))
        elif blob_raw in scan.blob_records:
            errors.append(f"body {blob_raw.hex()}: recorded for removal but still has a record")
            scan.problems.append(("removal_wrong", blob_raw))
        else:
            scan.awaiting_removal.add(blob_raw)
    for key in bodyrecords.strays(txn, dbs):
        errors.append(f"body record of unknown kind {key.hex()}")
        scan.problems.append(("body_record_stray", key))
    for key in txn.cursor(dbs.metadata).iternext(values=False):
        # (account, folder, entry): folder 0 holds the account's server annotations.
        account_id, folder_id = unpack_folder_key(bytes(key[:8])) if len(key) > 8 else (0, 0)
        if folder_id:
            dangling = (account_id, folder_id) not in scan.folders
        else:
            dangling = txn.get(account_key(account_id), db=dbs.accounts) is None
        if dangling:
            errors.append(f"annotation {bytes(key[8:])!r} of missing folder {account_id}/{folder_id}")
            scan.problems.append(("metadata_dangling", bytes(key)))
    return scan, errors


def _check_indexes(txn: Any, dbs: Databases, scan: _Scan, errors: list[str]) -> None:
    """The flag index, the keyword counts (midb.indexes) and the flag column (midb.columns)
    against the messages table."""
    expected_flags, expected_counts = indexes.expected_entries(txn.cursor(dbs.messages).iternext())
    stored_flags = indexes.stored_entries(txn, dbs)
    stored_counts = {bytes(key): unpack_u32(raw) for key, raw in txn.cursor(dbs.keyword_counts)}
    extra, missing = stored_flags - expected_flags, expected_flags - stored_flags
    if extra or missing:
        errors.append(f"flag index: {len(extra)} entries without a matching message, "
                      f"{len(missing)} messages missing")
        scan.indexes_stale = True
    if stored_counts != expected_counts:
        wrong = {key for key in stored_counts.keys() | expected_counts.keys()
                 if stored_counts.get(key) != expected_counts.get(key)}
        errors.append(f"keyword counts: {len(wrong)} wrong")
        scan.indexes_stale = True
    if dbs.flag_columns is not None:
        expected_column = columns.expected_column_entries(txn, dbs, txn.cursor(dbs.messages).iternext())
        stored_column = columns.stored_column_entries(txn, dbs)
        if expected_column != stored_column:
            errors.append(f"flag column: {len(stored_column - expected_column)} entries without a matching "
                          f"message, {len(expected_column - stored_column)} messages missing or different")
            scan.indexes_stale = True
        sets = columns.check_keyword_sets(txn, dbs)
        errors.extend(sets.problems)
        scan.problems.extend(("keyword_set_dangling", key) for key in sets.orphaned)
        scan.problems.extend(("keyword_set_next_id", item) for item in sets.next_ids.items())
        scan.problems.extend(("keyword_set_octets", item) for item in sets.octets.items())
    if dbs.sort_records is not None:
        # A message without an entry is fine (derived when first sorted); an entry without one is not.
        orphaned = sortindex.orphans(txn, dbs)
        if orphaned:
            errors.append(f"sort index: {len(orphaned)} entries without a message")
            scan.problems.extend(("sort_entry_dangling", key) for key in orphaned)


@dataclass
class _Files:
    """What one walk of the body files found (_scan_files)."""

    orphans: list[str] = field(default_factory=list)               # descriptions, for verify
    removable: list[list[str]] = field(default_factory=list)       # old enough, per shard
    youngest: float | None = None                                  # mtime of the youngest kept for its age
    stopped: bool = False                                          # the walk ended early (stop)
    missing: list[list[str]] = field(default_factory=list)         # referenced, file not seen, per shard


def _scan_files(store: Store, scans: list[_Scan], now: float, *, before: float | None = None,
                stop: Callable[[], bool] | None = None) -> _Files:
    """One walk of the body files, each judged against the scan of the shard its id names
    (midb.shards); temporary files count as shard 0's. Only a file the scans do not account for
    is looked at further (its age): the rule for what may go is ORPHAN_MIN_AGE, here only.
    ``before``: judge only files last written before then (the sweep after a crash: later ones
    belong to writers alive after it). ``stop`` is asked every STOP_EVERY files."""
    count = len(scans)
    found = _Files(removable=[[] for _ in scans])
    seen: set[str] = set()
    for walked, (sub, name, path) in enumerate(store._blobs.scan()):
        if stop is not None and walked % STOP_EVERY == 0 and stop():
            found.stopped = True
            return found
        if name.startswith(TEMP_PREFIX):
            what, shard = f"temporary file {path}", 0
        elif len(name) != 32 or not _HEX.issuperset(name) or name[:2] != sub:
            found.orphans.append(f"unexpected file {path}")
            continue
        else:
            if before is None:  # verify's list of missing files; a sweep has no use for it
                seen.add(name)
            blob_raw = bytes.fromhex(name)
            shard = shards_of.of_blob(blob_raw, count)
            known = scans[shard]
            if blob_raw in known.awaiting_removal or blob_raw in known.blob_refs or blob_raw in known.blob_records:
                continue   # referenced, or released by an expunge and a remover's (midb.removal)
            what = f"body file {path} not referenced by the index"
        mtime = store._blobs.mtime(path)
        if mtime is None or (before is not None and mtime >= before):
            continue
        found.orphans.append(what)
        if now - mtime >= ORPHAN_MIN_AGE:
            found.removable[shard].append(path)
        elif found.youngest is None or mtime > found.youngest:
            found.youngest = mtime
    found.missing = [[blob_raw.hex() for blob_raw in scan.blob_refs
                      if blob_raw not in scan.inline and blob_raw.hex() not in seen] for scan in scans]
    return found


def verify(store: Store, *, repair: bool = False) -> VerifyReport:
    """Check every shard of the index (each from its own snapshot), then the body files once."""
    report = VerifyReport()
    shards = store._live_shards()
    count = len(shards)
    scans = []
    for shard, shared in enumerate(shards):
        with lmdb_errors(), shared.read() as txn:
            scan, errors = _scan(txn, shared.dbs, shard, count)
        report.errors.extend(_where(shard, count) + error for error in errors)
        scans.append(scan)
    files = _scan_files(store, scans, time.time())
    report.orphans.extend(files.orphans)
    for shard, shared in enumerate(shards):
        _check_bodies(store, shared, shard, count, scans[shard], files.missing[shard], report)
    if repair and (report.errors or report.orphans):
        if store.readonly:
            raise MidbError("cannot repair a store opened read-only")
        for shard, shared in enumerate(shards):
            report.repaired.extend(_repair(store, shared, shard, count, files.removable[shard]))
    return report


def _where(shard: int, count: int) -> str:
    return f"shard {shard}: " if count > 1 else ""


def _check_bodies(store: Store, shared: Any, shard: int, count: int, scan: _Scan, missing: list[str],
                  report: VerifyReport) -> None:
    """A shard's body records against the files: missing files, sizes, placement."""
    dbs = shared.dbs
    where = _where(shard, count)
    # A body deleted after our snapshot (expunged meanwhile) is not missing: re-check with a fresh one.
    if missing:
        with lmdb_errors(), shared.read() as txn:
            raw = {blob: bytes.fromhex(blob) for blob in missing}
            lost = [blob for blob in missing
                    if bodyrecords.get(txn, dbs, bodyrecords.REFS, raw[blob]) is not None
                    and store._blobs.size(blob) is None
                    and bodyrecords.get(txn, dbs, bodyrecords.BODY, raw[blob]) is None]
            holders = _messages_of_bodies(txn, dbs, scan, {raw[blob] for blob in lost}) if lost else {}
        for blob in lost:
            found = holders.get(raw[blob], [])
            named = ", ".join(found[:_NAMED_HOLDERS]) + (f" and {len(found) - _NAMED_HOLDERS} more"
                                                         if len(found) > _NAMED_HOLDERS else "")
            report.errors.append(f"{where}body {blob}: file missing (referenced by the index"
                                 f"{': ' + named if named else ''}); restore {store.body_path(blob)} from a "
                                 f"backup, or expunge the message")
    for blob_raw, (_refcount, size) in scan.blob_records.items():
        on_disk = store._blobs.size(blob_raw.hex())
        if on_disk is not None and on_disk != size:
            report.errors.append(f"{where}body {blob_raw.hex()}: file has {on_disk} bytes, index says {size}")
        if shards_of.of_blob(blob_raw, count) != shard:
            report.errors.append(f"{where}body {blob_raw.hex()}: recorded in the wrong shard")


_NAMED_HOLDERS = 3  # messages named per missing body file


def _messages_of_bodies(txn: Any, dbs: Databases, scan: _Scan, blobs: set[bytes]) -> dict[bytes, list[str]]:
    """The messages (account/folder UID n) that hold each of ``blobs``: one pass over the shard's
    message records, made only when some body file is missing, so the admin knows what to
    restore or expunge. A body is referenced from its own shard only."""
    holders: dict[bytes, list[str]] = {}
    for key, raw in txn.cursor(dbs.messages):
        blob_raw = bytes(unpack_record(raw)[4])
        if blob_raw in blobs:
            account_id, folder_id, uid = unpack_message_key(key)
            folder = scan.folders.get((account_id, folder_id))
            holders.setdefault(blob_raw, []).append(
                f"{scan.accounts.get(account_id, account_id)}/{folder.name if folder else folder_id} UID {uid}")
    return holders


def _repair(store: Store, shared: Any, shard: int, count: int, orphans: list[str]) -> list[str]:
    """Recompute shard `shard` in one write transaction and fix what is derivable. The orphan
    files verify found old enough (`orphans`) are removed inside it if the index still does not
    refer to them: the write lock keeps writers from committing a reference to a file we are
    about to remove, and a body file is only ever referenced from its own shard."""

    def job(txn: Any, dbs: Databases, effects: Any) -> list[str]:
        scan, _errors = _scan(txn, dbs, shard, count)
        done: list[str] = []
        fixed_folders: set[tuple[int, int]] = set()
        dropped_sets = 0
        for kind, detail in scan.problems:
            if kind == "account_name_missing":
                account_id, name = detail
                if txn.get(name.encode("utf-8"), db=dbs.account_names) is None:
                    txn.put(name.encode("utf-8"), pack_u32(account_id), db=dbs.account_names)
                    done.append(f"restored name index of account {name}")
            elif kind == "account_name_dangling":
                txn.delete(detail, db=dbs.account_names)
                done.append("removed dangling account name")
            elif kind == "folder_name_missing":
                account_id, folder_id = detail
                record = scan.folders[detail]
                if txn.get(name_key(account_id, record.name), db=dbs.folder_names) is None:
                    txn.put(name_key(account_id, record.name), pack_u32(folder_id), db=dbs.folder_names)
                    done.append(f"restored name index of folder {record.name}")
            elif kind == "folder_name_dangling":
                txn.delete(detail, db=dbs.folder_names)
                done.append("removed dangling folder name")
            elif kind == "lost_folder":
                account_id, folder_id = detail
                name = f"lost+found-{folder_id}"
                record = FolderRecord(folder_id, name, 0, store._new_uidvalidity(txn, dbs))
                txn.put(folder_key(account_id, folder_id), record.encode(), db=dbs.folders)
                txn.put(name_key(account_id, name), pack_u32(folder_id), db=dbs.folder_names)
                quotas.adjust_count(txn, dbs, quotas.FOLDER_COUNT, account_id, 1)
                scan.folders[detail] = record
                fixed_folders.add(detail)
                done.append(f"re-attached messages of missing folder {folder_id} as {name}")
            elif kind == "folder_counters":
                fixed_folders.add(detail)
            elif kind == "kept_counts":
                quotas.drop_counts(txn, dbs, detail)
                done.append(f"dropped the kept folder and subscription counts of account {detail}")
            elif kind == "modseq_extra":
                txn.delete(detail, db=dbs.modseqs)
                done.append(f"removed modseq index entry {unpack_change_key(detail)}")
            elif kind == "modseq_missing":
                # Its save date is lost with it: the repair's time, never earlier than the real
                # one (an empty value would count as the store's upgrade, and expire too early).
                txn.put(detail, savedates.pack(savedates.now()), db=dbs.modseqs)
                done.append(f"restored modseq index entry {unpack_change_key(detail)}")
            elif kind == "tombstone_dangling":
                txn.delete(detail, db=dbs.tombstones)
            elif kind == "blob_unreferenced":
                if not bodyrecords.delete_all(txn, dbs, detail):
                    effects.unlink_blob(txn, dbs, detail)
                done.append(f"removed unreferenced body {detail.hex()}")
            elif kind == "removal_wrong":
                removal.forget(txn, dbs, [detail])
                done.append(f"kept body {detail.hex()}, wrongly recorded for removal" if removal.well_formed(detail)
                            else f"dropped damaged record of a body to remove {detail.hex()}")
            elif kind == "blob_refcount":
                bodyrecords.put(txn, dbs, bodyrecords.REFS, detail,
                                pack_blob_record(scan.blob_refs[detail], scan.blob_sizes[detail]))
                done.append(f"fixed refcount of body {detail.hex()}")
            elif kind == "blob_record_missing":
                kept = bodyrecords.get(txn, dbs, bodyrecords.BODY, detail)
                on_disk = len(kept) if kept is not None else store._blobs.size(detail.hex())
                if on_disk is not None:
                    bodyrecords.put(txn, dbs, bodyrecords.REFS, detail,
                                    pack_blob_record(scan.blob_refs[detail], on_disk))
                    done.append(f"restored record of body {detail.hex()}")
            elif kind == "digest_dangling":
                bodyrecords.delete(txn, dbs, bodyrecords.DIGEST, detail)
            elif kind == "summary_dangling":
                bodyrecords.delete(txn, dbs, bodyrecords.SUMMARY, detail)
            elif kind == "body_record_stray":
                txn.delete(detail, db=dbs.body_records)
                done.append(f"removed body record of unknown kind {detail.hex()}")
            elif kind == "inline_dangling":
                bodyrecords.delete(txn, dbs, bodyrecords.BODY, detail)
                done.append(f"removed body {detail.hex()} kept in the index without a record")
            elif kind == "metadata_dangling":
                txn.delete(detail, db=dbs.metadata)
                done.append("removed annotation of a missing folder")
            elif kind == "keyword_set_dangling":
                txn.delete(detail, db=dbs.keyword_sets)
                dropped_sets += 1
            elif kind == "keyword_set_next_id":
                account_id, next_id = detail
                columns.set_next_keyword_set_id(txn, dbs, account_id, next_id)
                done.append(f"set the next keyword set id of account {account_id} to {next_id}")
            elif kind == "keyword_set_octets":
                account_id, octets = detail
                columns.set_keyword_set_octets(txn, dbs, account_id, octets)
                done.append(f"set the keyword set octets of account {account_id} to {octets}")
            elif kind == "sort_entry_dangling":
                txn.delete(detail, db=dbs.sort_records)
                done.append(f"removed sort index entry of missing message {unpack_message_key(detail)}")
        if dropped_sets:
            done.append(f"removed {dropped_sets} keyword set entries of accounts that no longer exist")
        if scan.indexes_stale:
            indexes.rebuild(txn, dbs)
            done.append("rebuilt the flag index, keyword counts and flag column")
        for folder in fixed_folders:
            record = scan.folders[folder]
            tally = scan.tallies.get(folder) or _FolderTally()
            record.messages, record.unseen, record.deleted, record.size = (
                tally.messages, tally.unseen, tally.deleted, tally.size)
            top_tombstone, (floor, ceiling) = _tombstone_bounds(txn, dbs, *folder)
            record.uidnext = max(record.uidnext, tally.max_uid + 1, ceiling)
            record.highestmodseq = max(record.highestmodseq, tally.max_modseq, top_tombstone, floor)
            txn.put(folder_key(*folder), record.encode(), db=dbs.folders)
            done.append(f"recomputed counters of folder {folder[0]}/{folder[1]} ({record.name})")
        usage: dict[int, list[int]] = {}
        for (account_id, _folder_id), tally in scan.tallies.items():
            total = usage.setdefault(account_id, [0, 0])
            total[0] += tally.size
            total[1] += tally.messages
        for account_id, name in scan.accounts.items():
            counted = usage.get(account_id, [0, 0])
            if decode_usage(txn.get(account_key(account_id), db=dbs.usage)) != tuple(counted):
                txn.put(account_key(account_id), encode_usage(*counted), db=dbs.usage)
                done.append(f"recomputed usage of account {name}")
        for path, _size in _remove_orphans(
                store, orphans, shard, count,
                lambda blob_raw: blob_raw in scan.blob_refs or blob_raw in scan.blob_records):
            done.append(f"removed orphan {path}")
        return done

    repaired: list[str] = store._write(job, shared)
    return repaired


def _remove_orphans(store: Store, paths: list[str], shard: int, count: int,
                    referenced: Callable[[bytes], bool]) -> list[tuple[str, int]]:
    """In a write transaction of shard `shard`: remove those of `paths` (old enough orphans of
    that shard, _scan_files) that the index still does not refer to; -> (path, bytes) of each
    removed. The write lock keeps writers from committing a reference to a file we are about to
    remove, and a writer checks in its own transaction that its files are still there
    (midb.store), so a file taken from a write still in flight fails that write, unanswered,
    instead of leaving a message without its body."""
    removed: list[tuple[str, int]] = []
    for path in paths:
        name = os.path.basename(path)
        if not name.startswith(TEMP_PREFIX):
            blob_raw = bytes.fromhex(name)
            if referenced(blob_raw):
                continue   # referenced by now
            if count > 1 and _referenced_elsewhere(store, blob_raw, shard):
                continue   # recorded in the wrong shard (reported): not an orphan
        try:
            size = os.lstat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            # A directory named like a body, a fan-out directory left to root by a midb command:
            # that entry stays (verify reports it), the others go.
            log.warning("cannot remove orphan %s: %s", path, error.strerror or error)
            continue
        removed.append((path, size))
    return removed


def _referenced_elsewhere(store: Store, blob_raw: bytes, shard: int) -> bool:
    for other, shared in enumerate(store._live_shards()):
        if other != shard:
            with lmdb_errors(), shared.read() as txn:
                if bodyrecords.get(txn, shared.dbs, bodyrecords.REFS, blob_raw) is not None:
                    return True
    return False


def _tombstone_bounds(txn: Any, dbs: Databases, account_id: int, folder_id: int) -> tuple[int, tuple[int, int]]:
    """(the highest modseq of a folder's tombstones, its floor entry's (modseq, UID)): a
    folder's HIGHESTMODSEQ and UIDNEXT never go below them."""
    cursor = txn.cursor(dbs.tombstones)
    prefix = folder_key(account_id, folder_id)
    highest = 0
    if cursor.set_range(prefix):
        for key in cursor.iternext(values=False):
            if key[:8] != prefix:
                break
            highest = max(highest, unpack_change_key(key)[2])
    return highest, tombstones.read_floor(txn, dbs.tombstones, account_id, folder_id)


# ---- the sweep after a crash (midb.orphans) -------------------------------------------------------

SWEEP_BATCH = 64   # orphans removed per write transaction: their unlinks hold the write lock


@dataclass
class SweepResult:
    removed: int = 0
    bytes: int = 0
    youngest: float | None = None   # mtime of the youngest orphan kept for its age
    finished: bool = True           # False: stopped before the end


def sweep_orphans(store: Store, *, before: float | None = None, now: Callable[[], float] | None = None,
                  stop: Callable[[], bool] = lambda: False) -> SweepResult:
    """Remove the orphan files verify --repair would remove (_scan_files, _remove_orphans), and
    nothing else: no index repair, no full scan of the index under the write lock. ``before``:
    only files last written before then; ``now``: the time their ages are reckoned to (the
    sweeper's runs on from its claim, so that a clock step does not age a file in flight);
    ``stop``: asked between steps, to end early."""
    shards = store._live_shards()
    count = len(shards)
    scans = []
    for shared in shards:
        if stop():
            return SweepResult(finished=False)
        with lmdb_errors(), shared.read() as txn:
            scans.append(_body_references(txn, shared.dbs))
    files = _scan_files(store, scans, time.time() if now is None else now(), before=before, stop=stop)
    result = SweepResult(youngest=files.youngest, finished=not files.stopped)
    for shard, paths in enumerate(files.removable):
        if not paths or not result.finished:
            continue
        shared = shards[shard]
        # A message whose body has no record is damage verify reports; its file is still mail.
        held = _held_by_messages(shared, {bytes.fromhex(os.path.basename(path)) for path in paths
                                          if not os.path.basename(path).startswith(TEMP_PREFIX)}, stop)
        if held is None:
            result.finished = False
            break
        for start in range(0, len(paths), SWEEP_BATCH):
            if stop():
                result.finished = False
                break
            removed: list[tuple[str, int]] = store._write(
                _sweep_job(store, paths[start:start + SWEEP_BATCH], shard, count, held), shared, durable=False)
            result.removed += len(removed)
            result.bytes += sum(size for _path, size in removed)
    return result


def _sweep_job(store: Store, paths: list[str], shard: int, count: int, held: set[bytes]
               ) -> Callable[[Any, Databases, Any], list[tuple[str, int]]]:
    def job(txn: Any, dbs: Databases, _effects: Any) -> list[tuple[str, int]]:
        # A reference committed since the snapshot comes with a body record.
        return _remove_orphans(store, paths, shard, count, lambda blob_raw: blob_raw in held or
                               bodyrecords.get(txn, dbs, bodyrecords.REFS, blob_raw) is not None)

    return job


def _body_references(txn: Any, dbs: Databases) -> _Scan:
    """The part of _scan that _scan_files needs: the bodies with a record (their ids: the
    records' values are not read), and those awaiting removal (one pass over the body records,
    none over the messages)."""
    scan = _Scan()
    scan.blob_records = dict.fromkeys((blob_raw for blob_raw, _ in bodyrecords.items(txn, dbs, bodyrecords.REFS,
                                                                                     values=False)), (0, 0))
    scan.awaiting_removal.update(removal.recorded(txn, dbs))
    return scan


def _held_by_messages(shared: Any, blob_raws: set[bytes], stop: Callable[[], bool]) -> set[bytes] | None:
    """Those of ``blob_raws`` that some message of the shard refers to; None when ``stop`` said
    so (asked every STOP_EVERY messages: a shard may hold millions)."""
    held: set[bytes] = set()
    if not blob_raws:
        return held
    with lmdb_errors(), shared.read() as txn:
        for count, raw in enumerate(txn.cursor(shared.dbs.messages).iternext(keys=False)):
            if count % STOP_EVERY == 0 and stop():
                return None
            blob_raw = bytes(raw[BLOB_SLICE])
            if blob_raw in blob_raws:
                held.add(blob_raw)
    return held


# ---- backup ---------------------------------------------------------------------------------------

def backup(store: Store, dest: str) -> None:
    """Copy the index (one LMDB snapshot) and hard-link the bodies that copy references.

    Bodies expunged between the snapshot and the linking vanish from the source; then we take a newer
    snapshot and link what is still missing (a few rounds at most), so the copy is always consistent.

    The copy is not compacted: LMDB's compacting copy crashes on a database with fixed-size
    duplicates (the flag lists, schema 3), so the plain copy is taken, free pages included.
    """
    dest = os.path.abspath(os.fspath(dest))
    try:
        if os.listdir(dest):
            raise MidbError(f"backup destination {dest} is not empty")
    except FileNotFoundError:
        pass
    except OSError as error:
        raise MidbError(f"unusable backup destination {dest}: {error}") from error
    index_dir = os.path.join(dest, "index")
    shard_dirs = [shards_of.shard_dir(index_dir, shard) for shard in range(store.shard_count)]
    eml_dir = os.path.join(dest, "eml")
    try:
        os.makedirs(eml_dir, mode=0o750, exist_ok=True)
    except OSError as error:
        raise MidbError(f"cannot create backup directories in {dest}: {error}") from error
    linked: set[str] = set()
    missing_before: set[str] = set()
    for _attempt in range(BACKUP_ATTEMPTS):
        # Each shard's snapshot is consistent in itself, and a body belongs to one shard: the
        # copies need not be taken at the same instant.
        referenced: set[str] = set()
        for directory, shared in zip(shard_dirs, store._live_shards(), strict=True):
            shutil.rmtree(directory, ignore_errors=True)
            try:
                os.makedirs(directory, mode=0o750)
                shared.env.copy(directory)
            except Exception as error:
                raise MidbError(f"cannot copy the index to {directory}: {error}") from error
            referenced |= _files_referenced(directory)
        missing = {blob for blob in referenced - linked if not _link_body(store, blob, eml_dir)}
        linked |= referenced - missing
        if not missing:
            for blob in linked - referenced:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(eml_dir, blob[:2], blob))
            _sync_tree(dest)
            return
        broken = missing & missing_before
        if broken:
            raise MidbError(f"bodies missing from the store (run midb verify): {sorted(broken)[:5]}")
        missing_before = missing
    raise StoreBusy("backup: the store changed too fast to take a consistent snapshot; retry")


def _files_referenced(index_dir: str) -> set[str]:
    """The bodies kept as files (not in the index) that the copied index at ``index_dir`` references."""
    with lmdb_errors():
        copied = lmdb.open(index_dir, readonly=True, lock=False, max_dbs=MAX_DBS, subdir=True)
    try:
        with lmdb_errors(), copied.begin() as txn:
            try:
                merged = copied.open_db(b"body_records", txn=txn, create=False)
            except lmdb.NotFoundError:   # schema 1-3: four tables
                return _legacy_files_referenced(copied, txn)
            kept: set[bytes] = set()
            recorded: list[bytes] = []
            for key in txn.cursor(merged).iternext(values=False):
                split = bodyrecords.split_key(key)
                if split is not None and split[1] == bodyrecords.BODY:
                    kept.add(split[0])
                elif split is not None and split[1] == bodyrecords.REFS:
                    recorded.append(split[0])
            return {blob_raw.hex() for blob_raw in recorded if blob_raw not in kept}
    finally:
        copied.close()


def _legacy_files_referenced(copied: Any, txn: Any) -> set[str]:
    blobs = copied.open_db(b"blobs", txn=txn, create=False)
    try:
        bodies = copied.open_db(b"bodies", txn=txn, create=False)
        inline = set(txn.cursor(bodies).iternext(values=False))
    except lmdb.NotFoundError:   # schema 1: every body is a file
        inline = set()
    return {bytes(key).hex() for key in txn.cursor(blobs).iternext(values=False) if key not in inline}


def _link_body(store: Store, blob: str, eml_dir: str) -> bool:
    source = store._blobs.path(blob)
    target = os.path.join(eml_dir, blob[:2], blob)
    os.makedirs(os.path.dirname(target), mode=0o750, exist_ok=True)
    try:
        os.link(source, target)
        return True
    except FileNotFoundError:
        return False
    except FileExistsError:
        return True
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise MidbError(f"cannot link body {blob}: {error}") from error
    try:
        shutil.copyfile(source, target)   # other filesystem: copy instead
    except FileNotFoundError:
        return False
    return True


def _sync_tree(dest: str) -> None:
    """Make the backup durable: its files (copies) and directories."""
    for root, _dirs, files in os.walk(dest):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        with contextlib.suppress(OSError):
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


# ---- stats ----------------------------------------------------------------------------------------

def stats(store: Store) -> dict[str, int]:
    """Totals over every shard; map_size is each shard's map."""
    result = dict.fromkeys(("accounts", "folders", "messages", "bytes", "bodies", "body_bytes", "tombstones",
                            "index_bytes", "keyword_sets", "bodies_awaiting_removal"), 0)
    shards = store._live_shards()
    for shared in shards:
        dbs = shared.dbs
        with lmdb_errors(), shared.read() as txn:
            result["bytes"] += sum(decode_usage(raw)[0] for _key, raw in txn.cursor(dbs.usage))
            for _blob_raw, raw in bodyrecords.items(txn, dbs, bodyrecords.REFS):
                result["body_bytes"] += _BLOB_SIZE(raw)[0]
                result["bodies"] += 1
            for name in ("accounts", "folders", "messages", "tombstones"):
                result[name] += txn.stat(getattr(dbs, name))["entries"]
            result["tombstones"] -= sum(  # the folders' floor entries are no tombstones
                txn.get(tombstones.floor_key(*unpack_folder_key(key)), db=dbs.tombstones) is not None
                for key in txn.cursor(dbs.folders).iternext(values=False))
            # Not a total: the account nearest to running out of ids (they are per account, never freed).
            result["keyword_sets"] = max(result["keyword_sets"], columns.fullest_keyword_sets(txn, dbs))
            result["bodies_awaiting_removal"] += len(removal.recorded(txn, dbs))
        info = shared.env.info()
        result["index_bytes"] += (info["last_pgno"] + 1) * shared.env.stat()["psize"]
    result["map_size"] = shards[0].env.info()["map_size"]
    result["shards"] = len(shards)
    result["keyword_sets_limit"] = columns.MAX_KEYWORD_SET
    return result


_BLOB_SIZE = struct.Struct(">4xQ").unpack_from
