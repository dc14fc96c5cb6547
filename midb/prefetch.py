"""Reading the leaf pages of a key range into the page cache, all at once, before a cursor scans it.

Why: a folder's message records (what SELECT and SEARCH scan) lie on leaf pages scattered over
the whole data file, between the pages of the body records written in the same transactions.
On a cold cache each page fault on LMDB's map blocks the scan, and the kernel reads around the
faulting page as much as the disk's read-ahead setting says: on this project's test machine
(``read_ahead_kb`` = 8192) the 1,667 leaf pages of a 100,000-message folder cost 38 faults that
read the whole 168 MB file, 140-190 ms. With LMDB's read-ahead off (MDB_NORDAHEAD) it is 1,667
faults of 4 KiB one after the other, 145 ms. Knowing which pages will be read, they can be asked
for at once (posix_fadvise WILLNEED, which queues the reads and returns): the device works on
them in parallel and the scan then finds them in memory: 30 ms and 6.7 MB read.

How: LMDB does not say where a key lives, so this reads its B-tree's branch pages itself, in
LMDB's on-disk format (version 1, every LMDB 0.9): the named database's record in the main
database gives its root page and depth, and each branch page lists its children's page numbers
with the first key below each. The branch pages are read with pread() on a descriptor of our
own; within a read transaction the pages of its snapshot do not change, so no lock is needed.

A key's sorted duplicates (``flag_lists``: a folder's unseen UIDs) past what fits beside the key
on its leaf live in a tree of their own, whose MDB_db record is the key's data on the leaf:
:meth:`LeafPrefetcher.duplicates` finds that leaf the same way, reads the record from it and asks
for the duplicate tree's leaves (33,000 unseen UIDs: 33 leaves, which cold cost 15 ms and 16 MB
read one fault at a time).

It is only a hint, and only for read transactions (a write transaction's own pages are not on
disk yet). A page that does not look like what the format says it should (its own page number
in its header, the branch or leaf flag, the node offsets inside the page, the size of a
duplicate tree's record) switches the prefetcher off for the environment's lifetime, with one
warning, and scans go on as before.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("midb.prefetch")

# LMDB 0.9 on-disk layout (lmdb.h/mdb.c: MDB_page, MDB_node, MDB_db), little-endian machines.
_PAGE_HEADER = struct.Struct("<QHHHH")     # p_pgno, mp_pad, mp_flags, mp_lower, mp_upper
_PAGE_HEADER_SIZE = 16
_NODE_HEADER_SIZE = 8                      # mn_lo, mn_hi, mn_flags (child pgno in a branch), mn_ksize
_KEY_SIZE = struct.Struct("<H")            # mn_ksize, at offset 6 in a node
_P_BRANCH = 0x01
_P_LEAF = 0x02
_F_SUBDATA = 0x02                          # a leaf node's data is the MDB_db of its duplicates' tree
_F_DUPDATA = 0x04                          # the node's data holds duplicates (sub-page or tree)
_LEAF_NODE = struct.Struct("<HHHH")        # mn_lo, mn_hi (data size), mn_flags, mn_ksize
_DB_RECORD_SIZE = 48                       # MDB_db: pad, flags, depth, page counts, entries, root
_DB_DEPTH = struct.Struct("<H")            # at offset 6
_DB_ROOT = struct.Struct("<Q")             # at offset 40
_MAX_DEPTH = 16

# Two wanted pages this close are read as one span, the page between them included: one request
# instead of two, for a few KiB read in vain (on the test machine 2 is best; wider reads more).
_JOIN_GAP = 2


class _Keys:
    """The keys of a branch page's nodes, read on demand (for bisect: a few per page)."""

    __slots__ = ("offsets", "page")

    def __init__(self, page: bytes, offsets: tuple[int, ...]) -> None:
        self.page = page
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> bytes:
        offset = self.offsets[index]
        size = _KEY_SIZE.unpack_from(self.page, offset + 6)[0]
        start = offset + _NODE_HEADER_SIZE
        return self.page[start:start + size]


class FormatSurprise(Exception):
    """A page is not what LMDB's format says it should be."""


def branch_children(page: bytes, pgno: int, low: bytes, high: bytes | None) -> list[int]:
    """Page numbers of the children of branch page `page` (number `pgno`) that may hold keys in
    [low, high) (high None: no upper bound). Child i holds the keys from node i's key up to node
    i+1's; node 0's key is empty and stands for "anything below node 1's"."""
    offsets = _node_offsets(page, pgno, _P_BRANCH)
    count = len(offsets)
    keys = _Keys(page, offsets)
    first = max(bisect.bisect_right(keys, low, 1) - 1, 0)   # the child that holds `low`
    stop = count if high is None else bisect.bisect_left(keys, high, 1)   # children starting below it
    return [int.from_bytes(page[offset:offset + 6], "little") for offset in offsets[first:stop]]


def _node_offsets(page: bytes, pgno: int, kind: int) -> tuple[int, ...]:
    """The node offsets of page `pgno`, checked against its header (flags include `kind`)."""
    if len(page) < _PAGE_HEADER_SIZE:
        raise FormatSurprise(f"page {pgno} is short")
    own, _pad, flags, lower, upper = _PAGE_HEADER.unpack_from(page)
    count = (lower - _PAGE_HEADER_SIZE) >> 1
    if own != pgno or not flags & kind or count < 1 or not lower <= upper <= len(page):
        raise FormatSurprise(f"page {pgno}: number {own}, flags {flags:#x}, lower {lower}, upper {upper}")
    offsets = struct.unpack_from(f"<{count}H", page, _PAGE_HEADER_SIZE)
    if min(offsets) < upper or max(offsets) + _NODE_HEADER_SIZE > len(page):
        raise FormatSurprise(f"page {pgno}: a node lies outside the page's node area")
    return offsets


def duplicate_tree(page: bytes, pgno: int, key: bytes) -> bytes | None:
    """The MDB_db record of `key`'s duplicate tree, from leaf page `page` (number `pgno`); None
    when the key is not on the page or its duplicates fit on it (no tree of their own)."""
    keys = _Keys(page, _node_offsets(page, pgno, _P_LEAF))
    index = bisect.bisect_left(keys, key)
    if index == len(keys) or keys[index] != key:
        return None
    offset = keys.offsets[index]
    low, high, flags, size = _LEAF_NODE.unpack_from(page, offset)
    if flags & (_F_SUBDATA | _F_DUPDATA) != _F_SUBDATA | _F_DUPDATA:
        return None
    start = offset + _NODE_HEADER_SIZE + size
    if low | high << 16 != _DB_RECORD_SIZE or start + _DB_RECORD_SIZE > len(page):
        raise FormatSurprise(f"page {pgno}: the duplicate tree of a key has a record of {low | high << 16} bytes")
    return page[start:start + _DB_RECORD_SIZE]


def spans(pages: list[int], gap: int = _JOIN_GAP) -> list[tuple[int, int]]:
    """Sorted page numbers as (first page, page count) runs, pages at most `gap` apart joined."""
    out: list[tuple[int, int]] = []
    if not pages:
        return out
    ordered = sorted(pages)
    start = previous = ordered[0]
    for pgno in ordered[1:]:
        if pgno - previous > gap:
            out.append((start, previous - start + 1))
            start = pgno
        previous = pgno
    out.append((start, previous - start + 1))
    return out


class LeafPrefetcher:
    """The prefetcher of one LMDB environment (its data.mdb); see the module docstring."""

    def __init__(self, data_path: str, page_size: int) -> None:
        self.page_size = page_size
        self.enabled = hasattr(os, "posix_fadvise") and sys.byteorder == "little"
        self.fd = -1
        if self.enabled:
            try:
                self.fd = os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
                # The branch pages are read one at a time; the kernel's read-ahead for read()
                # would fetch their neighbours for nothing.
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
            except OSError as exc:
                log.warning("%s: no prefetching of scans: %s", data_path, exc)
                self.enabled = False
        self.data_path = data_path

    def close(self) -> None:
        self.enabled = False
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def key_range(self, txn: Any, db_name: bytes, low: bytes, high: bytes | None) -> int:
        """Ask for the leaf pages of database `db_name` that hold keys in [low, high) (high None:
        no upper bound), as of the read transaction `txn`; returns how many pages were asked for
        (0: a tree of one page, or prefetching is off).

        Pages in memory already are asked for too: for those the kernel only looks them up, and
        that is the cheapest way to find them. 1,667 leaves (100,000 messages): 0.8 ms, against
        1.9 ms for a one-byte read with RWF_NOWAIT per leaf and 2.8 ms for one mincore() over
        their span. Probing a sample instead is wrong: the kernel evicts pages one by one, and on
        the benchmark machine a scan whose 8 sampled leaves were in memory faulted in 38 MB
        around the few that were not."""
        return self._ask(lambda: self._leaves(txn, db_name, low, high))

    def duplicates(self, txn: Any, db_name: bytes, key: bytes) -> int:
        """Ask for the leaf pages of `key`'s duplicates in database `db_name` (MDB_DUPSORT), as
        :meth:`key_range` does; 0 when they fit on the key's own leaf."""
        return self._ask(lambda: self._duplicate_leaves(txn, db_name, key))

    def _ask(self, find: Callable[[], list[int]]) -> int:
        if not self.enabled:
            return 0
        try:
            leaves = find()
            size = self.page_size
            for first, count in spans(leaves):
                os.posix_fadvise(self.fd, first * size, count * size, os.POSIX_FADV_WILLNEED)
            return len(leaves)
        except (FormatSurprise, OSError) as exc:
            log.warning("%s: prefetching of scans switched off: %s", self.data_path, exc)
            self.enabled = False
        return 0

    def _tree(self, txn: Any, db_name: bytes) -> bytes:
        record = txn.get(db_name)   # the main database holds each named database's MDB_db
        if record is None or len(record) != _DB_RECORD_SIZE:
            raise FormatSurprise(f"database {db_name!r} has no record of {_DB_RECORD_SIZE} bytes")
        return record

    def _duplicate_leaves(self, txn: Any, db_name: bytes, key: bytes) -> list[int]:
        record = self._tree(txn, db_name)
        if _DB_DEPTH.unpack_from(record, 6)[0] < 1:
            return []   # empty
        holders = self._below(record, key, key + b"\0")
        if not holders:   # the root is the leaf
            holders = [_DB_ROOT.unpack_from(record, 40)[0]]
        if len(holders) != 1:
            raise FormatSurprise(f"database {db_name!r}: {len(holders)} leaves for one key")
        pgno = holders[0]
        tree = duplicate_tree(os.pread(self.fd, self.page_size, pgno * self.page_size), pgno, key)
        return [] if tree is None else self._below(tree, b"", None)

    def _leaves(self, txn: Any, db_name: bytes, low: bytes, high: bytes | None) -> list[int]:
        return self._below(self._tree(txn, db_name), low, high)

    def _below(self, record: bytes, low: bytes, high: bytes | None) -> list[int]:
        """The leaf pages below the tree of MDB_db `record` that hold keys in [low, high);
        none for a tree of one page."""
        depth = _DB_DEPTH.unpack_from(record, 6)[0]
        if depth > _MAX_DEPTH:
            raise FormatSurprise(f"a tree of depth {depth}")
        if depth < 2:
            return []   # empty, or one leaf that is the root
        level = [_DB_ROOT.unpack_from(record, 40)[0]]
        size = self.page_size
        for _ in range(depth - 1):
            if len(level) > 1:   # the level's branch pages in parallel too
                for first, count in spans(level):
                    os.posix_fadvise(self.fd, first * size, count * size, os.POSIX_FADV_WILLNEED)
            below: list[int] = []
            for pgno in level:
                below += branch_children(os.pread(self.fd, size, pgno * size), pgno, low, high)
            level = below
        return level
