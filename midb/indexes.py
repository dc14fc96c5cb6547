"""Secondary indexes over message flags, kept in the same write transaction as the messages.

Two databases answer questions that would otherwise need a scan of every record of a folder:

* ``flag_lists``: (account, folder, kind) -> the UIDs (big-endian u32, sorted duplicates of the
  key, MDB_DUPSORT | MDB_DUPFIXED) of the messages that are unseen (kind 0) or carry \\Deleted
  (kind 1). The first unseen message (SELECT's ``[UNSEEN n]``), SEARCH UNSEEN and EXPUNGE cost
  O(matching messages), not O(folder), and the list is read a page (about a thousand UIDs) per
  LMDB call into one buffer: 33,000 unseen UIDs take about 2 ms, where one key per message
  (schema 2) took a Python object per UID and 13 ms.
* ``keyword_counts``: (account, folder) + keyword as spelled (UTF-8) -> u32 number of messages of
  the folder carrying that spelling. The keywords in use (SELECT's FLAGS list) are read from a
  few keys instead of every record.

The flag column (midb.columns), every message's UID, flags and MODSEQ under its folder's key,
is kept by the same calls.

Both keys start with the 8-byte folder key, so deleting a folder's or an account's key prefix
removes its entries too. Write jobs collect keyword count changes in an :class:`IndexDelta` (a
folder's records change many times in one job; its counters are written once) and call
:meth:`IndexDelta.apply` before they return.

:func:`rebuild` recomputes both from the messages table: it upgrades a store written before these
indexes existed (schema 1, see midb.env) and is what ``midb verify --repair`` restores.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from midb import columns
from midb.keys import FOLDER, U32, folder_key, unpack_message_key
from midb.messages import DELETED, FIXED_SIZE, FLAGS_OFFSET, SEEN

__all__ = [
    "DELETED_KIND",
    "UNSEEN_KIND",
    "IndexDelta",
    "expected_entries",
    "flag_kinds",
    "folder_keywords",
    "keyword_key",
    "keyword_spellings",
    "keywords_of",
    "rebuild",
    "stored_entries",
    "uids_of_kind",
]

UNSEEN_KIND = 0
DELETED_KIND = 1
FLAG_KEY = struct.Struct(">IIBI")            # an entry as (account, folder, kind) + uid
_KIND_KEY = struct.Struct(">IIB")             # the key of a list: (account, folder, kind)
_UID = struct.Struct(">I")                    # a value: the UID
_ENTRY_SIZE = FLAG_KEY.size
assert array("I").itemsize == _UID.size, "uids_of_kind converts through array('I')"


def keyword_key(account_id: int, folder_id: int, keyword: bytes) -> bytes:
    return FOLDER.pack(account_id, folder_id) + keyword


def flag_kinds(bits: int) -> tuple[int, ...]:
    """The flag-index kinds a message with these system flag bits is listed under."""
    if bits & SEEN:
        return (DELETED_KIND,) if bits & DELETED else ()
    return (UNSEEN_KIND, DELETED_KIND) if bits & DELETED else (UNSEEN_KIND,)


def keywords_of(tail: bytes) -> list[bytes]:
    """The keyword spellings of a record's flags tail (bitmask byte + space-separated keywords)."""
    return bytes(tail[1:]).split(b" ") if len(tail) > 1 else []


class IndexDelta:
    """Index maintenance for one write job: flag-index entries are written at once, keyword
    count changes are summed per folder and written by :meth:`apply`."""

    __slots__ = ("txn", "dbs", "_counts", "_column")

    def __init__(self, txn: Any, dbs: Any) -> None:
        self.txn = txn
        self.dbs = dbs
        self._counts: dict[bytes, int] = {}
        self._column = columns.ColumnWriter(txn, dbs)

    def added(self, account_id: int, folder_id: int, uid: int, tail: bytes, modseq: int) -> None:
        """A message record with flags ``tail`` and ``modseq`` now exists under (account, folder, uid)."""
        self._column.put(account_id, folder_id, uid, tail, modseq)
        value = _UID.pack(uid)
        for kind in flag_kinds(tail[0]):
            self.txn.put(_KIND_KEY.pack(account_id, folder_id, kind), value, db=self.dbs.flag_lists)
        if len(tail) > 1:
            self._count(account_id, folder_id, tail, 1)

    def removed(self, account_id: int, folder_id: int, uid: int, tail: bytes) -> None:
        """The message record (account, folder, uid) with flags ``tail`` is gone."""
        self._column.drop(account_id, folder_id, uid)
        value = _UID.pack(uid)
        for kind in flag_kinds(tail[0]):
            self.txn.delete(_KIND_KEY.pack(account_id, folder_id, kind), value, db=self.dbs.flag_lists)
        if len(tail) > 1:
            self._count(account_id, folder_id, tail, -1)

    def changed(self, account_id: int, folder_id: int, uid: int, old_tail: bytes, new_tail: bytes,
                modseq: int) -> None:
        """The flags of a message changed from ``old_tail`` to ``new_tail``, its MODSEQ to ``modseq``."""
        self._column.drop(account_id, folder_id, uid)
        self._column.put(account_id, folder_id, uid, new_tail, modseq)
        old_bits, new_bits = old_tail[0], new_tail[0]
        if old_bits != new_bits:
            old_kinds, new_kinds = flag_kinds(old_bits), flag_kinds(new_bits)
            put, delete, db = self.txn.put, self.txn.delete, self.dbs.flag_lists
            value = _UID.pack(uid)
            for kind in old_kinds:
                if kind not in new_kinds:
                    delete(_KIND_KEY.pack(account_id, folder_id, kind), value, db=db)
            for kind in new_kinds:
                if kind not in old_kinds:
                    put(_KIND_KEY.pack(account_id, folder_id, kind), value, db=db)
        if old_tail[1:] != new_tail[1:]:
            if len(old_tail) > 1:
                self._count(account_id, folder_id, old_tail, -1)
            if len(new_tail) > 1:
                self._count(account_id, folder_id, new_tail, 1)

    def _count(self, account_id: int, folder_id: int, tail: bytes, step: int) -> None:
        prefix = FOLDER.pack(account_id, folder_id)
        counts = self._counts
        for keyword in keywords_of(tail):
            key = prefix + keyword
            counts[key] = counts.get(key, 0) + step

    def apply(self) -> None:
        """Write the summed keyword count changes (call once, at the end of the job)."""
        txn, db = self.txn, self.dbs.keyword_counts
        for key, step in self._counts.items():
            if not step:
                continue
            raw = txn.get(key, db=db)
            count = (U32.unpack(raw)[0] if raw is not None else 0) + step
            if count > 0:
                txn.put(key, U32.pack(count), db=db)
            else:
                txn.delete(key, db=db)
        self._counts.clear()


def uids_of_kind(txn: Any, dbs: Any, account_id: int, folder_id: int, kind: int,
                 limit: int | None = None, *, prefetch: bool = False) -> list[int]:
    """UIDs listed under ``kind`` for the folder, ascending (at most ``limit`` of them).
    ``prefetch`` (read transactions only): the list is long; all its pages are asked for before
    it is read (midb.prefetch)."""
    key = _KIND_KEY.pack(account_id, folder_id, kind)
    if prefetch and limit is None:
        dbs.pages.duplicates(txn, b"flag_lists", key)
    cursor = txn.cursor(dbs.flag_lists)
    if limit is not None:
        if not cursor.set_key(key):
            return []
        uids: list[int] = []
        for value in cursor.iternext_dup():
            uids.append(_UID.unpack(value)[0])
            if len(uids) >= limit:
                break
        return uids
    # One buffer of (key + value) entries, a page of duplicates per LMDB call; the UIDs are the
    # last four bytes of each entry, gathered by strided slices and converted in C.
    packed = cursor.getmulti([key], dupdata=True, dupfixed_bytes=_UID.size, keyfixed=True)
    count = len(packed) // _ENTRY_SIZE
    if not count:
        return []
    gathered = bytearray(4 * count)
    offset = _KIND_KEY.size
    for byte in range(4):
        gathered[byte::4] = packed[offset + byte :: _ENTRY_SIZE]
    numbers = array("I", gathered)
    if sys.byteorder == "little":
        numbers.byteswap()
    return numbers.tolist()


def folder_keywords(txn: Any, dbs: Any, account_id: int, folder_id: int) -> list[str]:
    """Keyword spellings with a non-zero count in the folder, sorted."""
    prefix = folder_key(account_id, folder_id)
    cursor = txn.cursor(dbs.keyword_counts)
    names: list[str] = []
    if not cursor.set_range(prefix):
        return names
    for key in cursor.iternext(values=False):
        if key[:8] != prefix:
            break
        names.append(bytes(key[8:]).decode("ascii"))
    return sorted(names)


def keyword_spellings(names: Iterable[str]) -> dict[str, str]:
    """Lower-cased keyword -> the spelling that stands for it, given the spellings a folder's
    messages carry: the first in sorted order. New writes keep to one spelling per folder
    (Store's _KeywordSpellings), but messages stored before that rule may carry several; the
    same one must win wherever the rule is applied (FLAGS lists, respelling on write)."""
    chosen: dict[str, str] = {}
    for name in sorted(names):
        chosen.setdefault(name.lower(), name)
    return chosen


def expected_entries(message_items: Iterator[tuple[bytes, bytes]]) -> tuple[set[bytes], dict[bytes, int]]:
    """(flag-index keys, keyword counts) that the given (message key, record) pairs call for."""
    flags: set[bytes] = set()
    counts: dict[bytes, int] = {}
    for key, raw in message_items:
        account_id, folder_id, uid = unpack_message_key(key)
        for kind in flag_kinds(raw[FLAGS_OFFSET]):
            flags.add(FLAG_KEY.pack(account_id, folder_id, kind, uid))
        tail = raw[FIXED_SIZE:]
        if len(tail) > 1:
            prefix = FOLDER.pack(account_id, folder_id)
            for keyword in keywords_of(tail):
                counts[prefix + keyword] = counts.get(prefix + keyword, 0) + 1
    return flags, counts


def stored_entries(txn: Any, dbs: Any) -> set[bytes]:
    """The flag index as it is, one key + value per entry (comparable with expected_entries)."""
    return {bytes(key) + bytes(value) for key, value in txn.cursor(dbs.flag_lists).iternext()}


def rebuild(txn: Any, dbs: Any) -> None:
    """Recompute the indexes from the messages table (inside a write transaction): these two and
    the flag column (midb.columns)."""
    columns.rebuild_columns(txn, dbs)
    txn.drop(dbs.flag_lists, delete=False)
    txn.drop(dbs.keyword_counts, delete=False)
    flags, counts = expected_entries(txn.cursor(dbs.messages).iternext())
    for entry in sorted(flags):
        txn.put(entry[:_KIND_KEY.size], entry[_KIND_KEY.size:], db=dbs.flag_lists)
    for key in sorted(counts):
        txn.put(key, U32.pack(counts[key]), db=dbs.keyword_counts, append=True)
