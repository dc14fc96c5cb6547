"""Expunge tombstones: what QRESYNC's VANISHED (EARLIER) is answered from, and their pruning.

Each expunge leaves a tombstone, (account, folder, modseq, uid) in the ``tombstones`` database,
so that a client resynchronising from a MODSEQ (RFC 7162) is told exactly which of its messages
went away since. Kept for ever they would grow the index by 25-60 bytes per expunged message, for
as long as the folder lives. So a folder keeps those of its last WINDOW mod-sequences only: an
expunge prunes the older ones, at most STRIDE at a time past the window, and records how far it
went in the folder's floor entry, the key with modseq 0 and uid 0 (no tombstone has modseq 0), so
that it goes with the folder's other keys when the folder is deleted:

    (account, folder, 0, 0) -> >QI  the floor (every tombstone at or below it is gone),
                                    the folder's UIDNEXT when it was raised

A question about changes after a modseq below the floor can no longer be answered exactly. It is
answered with a superset instead (:class:`Vanished`): every UID below that UIDNEXT that is not in
the folder now, which RFC 7162 section 3.2.5.1 allows. Such a client is told of UIDs it already
knew were gone, or never knew, and ignores them. Dovecot does the same once its transaction log
has been rotated away.

A window of 50,000 mod-sequences is weeks of mail for a busy INBOX (each delivery, flag change
and expunge takes one), and bounds a folder's tombstones at about 2-3 MB of index.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from midb.keys import CHANGE, change_key

WINDOW = 50_000   # mod-sequences whose tombstones a folder keeps
STRIDE = 1_024    # pruned at once, at least: one floor write per that many tombstones at most
PRUNE_AT_MOST = 16 * STRIDE   # tombstones dropped by one expunge

_FLOOR = struct.Struct(">QI")


def floor_key(account_id: int, folder_id: int) -> bytes:
    return change_key(account_id, folder_id, 0, 0)


def is_floor_key(key: bytes) -> bool:
    """Is this key of the tombstones database a folder's floor entry rather than a tombstone?"""
    return CHANGE.unpack(key)[2] == 0


def read_floor(txn: Any, db: Any, account_id: int, folder_id: int) -> tuple[int, int]:
    """(floor modseq, UIDNEXT when it was raised) of a folder; (0, 0) when nothing was pruned."""
    raw = txn.get(floor_key(account_id, folder_id), db=db)
    return (0, 0) if raw is None else unpack_floor(raw)


def unpack_floor(raw: bytes) -> tuple[int, int]:
    floor, ceiling = _FLOOR.unpack(raw)
    return floor, ceiling


def raise_floor(txn: Any, db: Any, account_id: int, folder_id: int, floor: int, uidnext: int) -> None:
    """Answer questions about changes after a modseq below ``floor`` with the superset: a folder
    imported with its UIDs, or restored from an older copy (midb.importer), cannot tell which of
    the UIDs below ``uidnext`` its clients saw went away, only that those not in it now did."""
    old_floor, old_ceiling = read_floor(txn, db, account_id, folder_id)
    if floor > old_floor or uidnext > old_ceiling:
        txn.put(floor_key(account_id, folder_id), _FLOOR.pack(max(floor, old_floor), max(uidnext, old_ceiling)), db=db)


def prune(txn: Any, db: Any, account_id: int, folder_id: int, highestmodseq: int, uidnext: int) -> int:
    """Drop the folder's tombstones older than its last WINDOW mod-sequences, once at least
    STRIDE of them are due, and raise its floor; -> how many were dropped. Part of the write
    transaction of an expunge: the floor and the tombstones change together."""
    floor, _ceiling = read_floor(txn, db, account_id, folder_id)
    target = highestmodseq - WINDOW
    if target < floor + STRIDE:
        return 0
    dropped = 0
    cursor = txn.cursor(db)
    if cursor.set_range(change_key(account_id, folder_id, floor + 1, 0)):
        last = change_key(account_id, folder_id, target, 0xFFFFFFFF)
        while True:
            key = cursor.key()   # b"" once the cursor ran off the end
            if not key or key > last:
                break
            if dropped == PRUNE_AT_MOST:
                # A folder with a long history (an index from before pruning) is taken down a
                # part per expunge, not in one transaction that holds up every writer.
                target = CHANGE.unpack(key)[2] - 1
                break
            cursor.delete()   # the cursor now stands on the next key
            dropped += 1
    txn.put(floor_key(account_id, folder_id), _FLOOR.pack(target, uidnext), db=db)
    return dropped


class Vanished:
    """The UIDs expunged from a folder after a modseq, as the tombstones tell.

    ``uids``: the tombstones' UIDs, ascending. When the modseq is below the folder's floor
    (``exact`` is false), those are not all: any UID below ``pruned_below`` that is not among
    ``present`` (the folder's UIDs when this was read, ascending) may have gone too. Callers
    test their own candidates (``among``, ``in``) rather than list that superset, which may
    span millions of UIDs that never reached a client."""

    __slots__ = ("uids", "pruned_below", "_present", "_exact_set")

    def __init__(self, uids: list[int], pruned_below: int = 0, present: Sequence[int] = ()) -> None:
        self.uids = uids
        self.pruned_below = pruned_below
        self._present = present
        self._exact_set: frozenset[int] | None = None

    @property
    def exact(self) -> bool:
        return not self.pruned_below

    def __eq__(self, other: object) -> bool:
        """Equal to an equal answer, and, when exact, to the list of its UIDs."""
        if isinstance(other, list):
            return self.exact and self.uids == other
        if isinstance(other, Vanished):
            return (self.uids, self.pruned_below, list(self._present)) == (
                other.uids, other.pruned_below, list(other._present))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside

    def __repr__(self) -> str:
        if self.exact:
            return f"Vanished({self.uids!r})"
        return f"Vanished({self.uids!r}, pruned_below={self.pruned_below}, present={len(self._present)} UIDs)"

    def __contains__(self, uid: object) -> bool:
        if not isinstance(uid, int):
            return False
        if uid < self.pruned_below:
            present = self._present
            index = bisect.bisect_left(present, uid)
            return uid > 0 and not (index < len(present) and present[index] == uid)
        if self._exact_set is None:
            self._exact_set = frozenset(self.uids)
        return uid in self._exact_set

    def held_gone(self, held: Iterable[int]) -> Iterable[int]:
        """The UIDs to look for among those a view ``held`` (ascending): the tombstones' when
        exact (a few, usually), else every held UID that may have vanished (one pass over them)."""
        return self.uids if self.exact else self.among(held)

    def among(self, candidates: Iterable[int]) -> Iterator[int]:
        """The candidates that may have vanished, in their order: the tombstones' when exact."""
        if self.exact and not self.uids:
            return iter(())
        return (uid for uid in candidates if uid in self)

    def absent_ranges(self, held: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """For an inexact answer: the ranges of UIDs below ``pruned_below`` outside ``held``
        (ascending inclusive ranges, a view's UIDs): the superset part, as ranges."""
        out: list[tuple[int, int]] = []
        below = self.pruned_below
        start = 1
        for first, last in held:
            if first >= below:
                break
            if first > start:
                out.append((start, first - 1))
            start = max(start, last + 1)
        if start < below:
            out.append((start, below - 1))
        return out
