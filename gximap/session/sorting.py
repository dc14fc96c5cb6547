"""SORT and THREAD (RFC 5256, RFC 5957): the values they sort by, kept per folder, and the algorithms.

Sort values come from the sort index (midb.sortindex, read through ``Store.sort_values``): per
message, under its folder and UID, the date (the sent date, else the internal date), the decoded
base subject, the first From/To/Cc mailbox, the display names and the Message-ID, In-Reply-To
and References ids, copied from its body's summary when it was stored; a folder's entries are
read in one cursor pass, and no body is ever parsed again. :class:`SortColumns` keeps each
criterion's values by folder and UID (a message's values never change), so a webmail client
re-sorting a large folder on every page view reads each entry once. ARRIVAL and SIZE need only
the index record.

Strings compare with the i;unicode-casemap collation (RFC 5051), as RFC 5256 section 7 requires:
each character is titlecased and decomposed (midb.sortindex.casemap, when the entry is written),
then the UTF-8 octets compare (the order of Python's code point comparison). THREAD's subjects
match by the same form. Ties, under every key, go by message sequence number (RFC 5256 section
3), which is the order records arrive in.

The threading algorithms follow RFC 5256 section 3 step by step; every traversal is iterative, so a
References chain of any length cannot exhaust the recursion limit. They build the threads as lists
of integers (:class:`ThreadForest`), not an object per message.

SORT and THREAD compute in slices (gximap.session.base.TimeSlice), as SEARCH does: what a column
lacks is read _UIDS_PER_READ messages per store read, and the column's ranks, each criterion's
sort and the threading algorithms' steps go in pieces, with PAUSE between two once the slice is
over. A SORT or THREAD of 100,000 messages computes for 0.1 to 0.4 s: in one piece it held one of
the pool's few workers, and the sessions queued behind it, for as long. A column is kept only once
all of its values are read, and a THREAD answer once it is made in full; a command closed while
paused (its client gone) leaves the columns as they were.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple

from gximap.session.base import Await, Pause, TimeSlice, pause_if_over, run_unsliced
from midb.sortindex import SORT_TEXT_FIELDS, THREAD_FIELDS, entry_date, sort_texts, thread_values

__all__ = [
    "THREAD_VALUES",
    "SortColumns",
    "ThreadForest",
    "ThreadItem",
    "column_values",
    "render_threads",
    "sort_order",
    "sort_order_sliced",
    "thread_orderedsubject",
    "thread_orderedsubject_sliced",
    "thread_references",
    "thread_references_sliced",
]


# -- per-message values --------------------------------------------------------------------------

def _text_value(field: str) -> Callable[[bytes], str]:
    """The text ``field`` (a midb.sortindex field name) of a sort entry: the base subject from
    the thread part, an address or display name from the sort part."""
    if field in THREAD_FIELDS:
        index = THREAD_FIELDS.index(field)
        return lambda entry: thread_values(entry)[index]
    index = SORT_TEXT_FIELDS.index(field)
    return lambda entry: sort_texts(entry)[index]


THREAD_VALUES = "THREAD"  # the SortColumns criterion holding ThreadItem values

# A criterion's value of a message, from its sort entry (midb.sortindex): texts are in their
# i;unicode-casemap form there already.
_ENTRY_VALUE: dict[str, Callable[[bytes], Any]] = {
    "DATE": entry_date,   # the internal date where Date: is missing or unusable (RFC 5256 section 2.2)
    "SUBJECT": _text_value("subject"),   # the base subject
    "FROM": _text_value("from"),   # addr-mailbox of the first address
    "TO": _text_value("to"),
    "CC": _text_value("cc"),
    "DISPLAYFROM": _text_value("display_from"),   # RFC 5957
    "DISPLAYTO": _text_value("display_to"),
    # what threading takes of a message (ThreadItem's layout), with its date and subject as above
    THREAD_VALUES: thread_values,
}


def column_values(criterion: str, uids: list[int],
                  rows: Callable[[list[int]], Sequence[tuple[int, bytes, int, int]]],
                  sort_values: Callable[[list[int], Callable[[bytes], Any]], dict[int, Any]]) -> dict[int, Any]:
    """UID -> value under ``criterion`` (a sort key, or THREAD_VALUES) of the messages ``uids``
    (ascending). ARRIVAL and SIZE come from the index records, ``rows(uids)`` (``Store.
    search_rows``: (UID, raw body key, size, internal date)); the others from the messages' sort
    entries, ``sort_values(uids, read)`` (``Store.sort_values``). A message that is gone
    (expunged by another session meanwhile) is left out, as SEARCH leaves it out."""
    if criterion == "ARRIVAL":
        return {uid: internaldate for uid, _key, _size, internaldate in rows(uids)}
    if criterion == "SIZE":
        return {uid: size for uid, _key, size, _internaldate in rows(uids)}
    return sort_values(uids, _ENTRY_VALUE[criterion])


# -- SORT ------------------------------------------------------------------------------------------


# What the columns of a process may take, estimated (_footprint): 64 MiB hold a 100,000-message
# folder's dates, subjects, senders and thread values together, with room for smaller folders.
DEFAULT_COLUMN_BYTES = 64 << 20
# Estimated bytes per value, measured on the bench's 100,000-message folder (tracemalloc): a date
# (an int in a list, a UID in an array) 50; a text (with its rank) 103; a thread value (a tuple
# of the date, the subject and the ids) 277.
_NUMBER_BYTES = 50
_TEXT_BYTES = 104
_THREAD_BYTES = 280


class _Column(NamedTuple):
    uids: array  # ascending
    values: list[Any]
    # Text values: each one's place among the column's distinct values. Sorting by these small
    # integers gives the order of the strings at the cost of sorting numbers (a SORT (SUBJECT)
    # of 100,000 messages: 35 ms rather than 85); made once per change of the column.
    ranks: array | None
    footprint: int  # estimated bytes (_footprint)


def _new_column(uids: array, values: list[Any], ranks: array | None = None) -> _Column:
    return _Column(uids, values, ranks, _footprint(uids, values))


def _footprint(uids: array, values: list[Any]) -> int:
    """The estimated bytes of a column (values of one kind) or of a kept answer (bytes pieces)."""
    if not values:
        return 0
    first = values[0]
    if isinstance(first, bytes):
        return 4 * len(uids) + sum(map(len, values))
    each = _TEXT_BYTES if isinstance(first, str) else _THREAD_BYTES if isinstance(first, tuple) else _NUMBER_BYTES
    return each * len(values)


def _ranks(values: list[Any], slicer: TimeSlice | None) -> Generator[Pause, Any, array | None]:
    """Each text value's place among the column's distinct values (None for other values), in
    steps of _VALUES_PER_LOOK values: with the sort of the distinct texts, about 30 ms for a
    100,000-message folder."""
    if not values or not isinstance(values[0], str):
        return None
    distinct: set[str] = set()
    for start in range(0, len(values), _VALUES_PER_LOOK):
        yield from pause_if_over(slicer)
        distinct.update(values[start : start + _VALUES_PER_LOOK])
    yield from pause_if_over(slicer)
    ordered = sorted(distinct)
    del distinct
    yield from pause_if_over(slicer)
    place = dict(zip(ordered, range(len(ordered)), strict=True))
    ranks = array(_RANK_CODE)
    for start in range(0, len(values), _VALUES_PER_LOOK):
        yield from pause_if_over(slicer)
        ranks.extend(map(place.__getitem__, values[start : start + _VALUES_PER_LOOK]))
    return ranks


class SortColumns:
    """Each folder's sort values under one criterion, by UID, for every session of the process:
    what makes a repeated SORT of a large folder (a webmail client sorts on every page view)
    cost a sort of cached values rather than a read of every index record and summary.

    A message's values never change under its UID (its body and internal date are fixed, and a
    UID is never reused within a UIDVALIDITY), so a column never goes stale: it lacks at most
    the messages that arrived since it was filled (read then, and added at its end, as UIDs
    ascend) and may still hold expunged ones (dropped when a request covers the whole folder).
    Columns are replaced, never changed in place, so readers need no lock. The least recently
    used go when all of them would take more than ``capacity`` bytes (estimated); a column larger
    than that on its own is used once and not kept."""

    def __init__(self, capacity: int = DEFAULT_COLUMN_BYTES) -> None:
        self.capacity = capacity
        self._columns: OrderedDict[tuple[Any, ...], _Column] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        # The first read of a column under way (values_sliced), by key: done (True if it kept a
        # column) when it ends, however it ends.
        self._first_reads: dict[tuple[Any, ...], Future[bool]] = {}

    def resize(self, capacity: int) -> None:
        """A new capacity (imap_sort_cache_size on SIGHUP); the least recently used go at once
        when what is kept no longer fits."""
        with self._lock:
            self.capacity = capacity
            while self._columns and self._held > capacity:
                _key, evicted = self._columns.popitem(last=False)
                self._held -= evicted.footprint

    @property
    def held_bytes(self) -> int:
        """The estimated bytes of the columns and answers kept."""
        return self._held

    def values(self, folder: tuple[Any, ...], criterion: str, uids: Sequence[int],
               load: Callable[[list[int]], dict[int, Any]], *, whole_folder: bool = False,
               ranked: bool = False) -> Sequence[Any]:
        """:meth:`values_sliced`, run to its end at once."""
        return run_unsliced(self.values_sliced(folder, criterion, uids, load, None, whole_folder=whole_folder,
                                               ranked=ranked))

    def values_sliced(self, folder: tuple[Any, ...], criterion: str, uids: Sequence[int],
                      load: Callable[[list[int]], dict[int, Any]], slicer: TimeSlice | None, *,
                      whole_folder: bool = False, ranked: bool = False
                      ) -> Generator[Pause | Await, Any, Sequence[Any]]:
        """The values of ``uids`` (ascending) under ``criterion`` in ``folder`` (any key naming
        a folder and its UIDVALIDITY), in the same order; None for a message ``load`` left out
        (its body is gone). ``load(missing UIDs)`` gives UID -> value for those the column lacks;
        it is asked for at most _UIDS_PER_READ at a time, with a PAUSE between two asks when
        ``slicer``'s time is up. ``whole_folder``: ``uids`` are all of the folder's messages (the
        column keeps only these). ``ranked``: only the order matters (SORT): text may come as
        its ranks.

        The column is replaced only once every value is read: one closed while paused (its
        client gone) leaves the columns as they were.

        Sessions that sort a folder not yet read under ``criterion`` at the same time (a client
        with several connections, or several clients of one account, after a restart) do not
        each read it all: one reads, the others wait for its column (Await, holding no worker)
        and read only what it lacks. One unsliced, or after a first read that kept nothing (a
        column too large to keep), reads on its own."""
        key = (folder, criterion)
        first_read: Future[bool] | None = None  # the first read of the column, when it is this one
        while True:
            with self._lock:
                column = self._columns.get(key)
                if column is not None:
                    self._columns.move_to_end(key)
                    break
                under_way = self._first_reads.get(key)
                if under_way is None:
                    first_read = self._first_reads[key] = Future()
                    break
            if slicer is None:
                break
            kept = yield from slicer.wait(under_way)
            if not kept:
                with self._lock:
                    column = self._columns.get(key)
                break
        try:
            found = yield from self._values_from(key, column, uids, load, slicer, whole_folder=whole_folder,
                                                 ranked=ranked)
        finally:
            if first_read is not None:
                with self._lock:
                    del self._first_reads[key]
                    kept = key in self._columns
                first_read.set_result(kept)  # (outside the lock: it wakes the sessions waiting)
        return found

    def _values_from(self, key: tuple[Any, ...], column: _Column | None, uids: Sequence[int],
                     load: Callable[[list[int]], dict[int, Any]], slicer: TimeSlice | None, *,
                     whole_folder: bool, ranked: bool) -> Generator[Pause, Any, Sequence[Any]]:
        """values_sliced's values, given the folder's ``column`` under the criterion (if kept)."""
        count = len(uids)
        if column is not None and count and len(column.uids) >= count and column.uids[count - 1] == uids[-1] \
                and column.uids[:count] == array(_UID_CODE, uids):
            # The usual repeat: nothing arrived, nothing left.
            return column.ranks[:count] if ranked and column.ranks is not None else column.values[:count]
        updated: dict[int, Any] | None = None  # the column's values and those read, by UID
        if column is None:  # the first read of the folder under this criterion
            found, complete = yield from self._read_all(uids, load, slicer)
        else:
            found, complete, updated = yield from self._read_missing(column, uids, load, slicer)
        if whole_folder and complete:  # the usual first read of a folder: the column is ``found``
            kept_uids, values = array(_UID_CODE, uids), found.copy()   # (the caller gets its own list)
        else:
            if whole_folder or column is None:  # (then what was read is what was found)
                kept = [(uid, value) for uid, value in zip(uids, found, strict=True) if value is not None]
            elif updated is not None:
                kept = sorted(updated.items())
            else:
                return found  # nothing new to keep
            yield from pause_if_over(slicer)
            kept_uids, values = array(_UID_CODE, [uid for uid, _value in kept]), [value for _uid, value in kept]
        ranks = yield from _ranks(values, slicer)
        yield from pause_if_over(slicer)
        self._store(key, _new_column(kept_uids, values, ranks))
        return found

    @staticmethod
    def _read_all(uids: Sequence[int], load: Callable[[list[int]], dict[int, Any]],
                  slicer: TimeSlice | None) -> Generator[Pause, Any, tuple[list[Any], bool]]:
        """The values of ``uids`` (None for a message left out), read _UIDS_PER_READ at a time,
        and whether none was left out."""
        found: list[Any] = []
        complete = True
        for start in range(0, len(uids), _UIDS_PER_READ):
            yield from pause_if_over(slicer)
            piece = list(uids[start : start + _UIDS_PER_READ])
            read = load(piece)
            complete = complete and len(read) == len(piece)  # (it holds only UIDs asked for)
            found += map(read.get, piece)
        return found, complete

    @staticmethod
    def _read_missing(column: _Column, uids: Sequence[int], load: Callable[[list[int]], dict[int, Any]],
                      slicer: TimeSlice | None
                      ) -> Generator[Pause, Any, tuple[list[Any], bool, dict[int, Any] | None]]:
        """The values of ``uids`` from ``column`` and, read _UIDS_PER_READ at a time, those it
        lacks (None for a message left out); whether none was left out; the column's values and
        those read by UID, or None when none was read."""
        known: dict[int, Any] = {}
        for start in range(0, len(column.uids), _VALUES_PER_LOOK):
            yield from pause_if_over(slicer)
            end = start + _VALUES_PER_LOOK
            known.update(zip(column.uids[start:end], column.values[start:end], strict=True))
        missing: list[int] = []
        for start in range(0, len(uids), _VALUES_PER_LOOK):
            yield from pause_if_over(slicer)
            missing += [uid for uid in uids[start : start + _VALUES_PER_LOOK] if uid not in known]
        loaded = False
        for start in range(0, len(missing), _UIDS_PER_READ):
            yield from pause_if_over(slicer)
            read = load(missing[start : start + _UIDS_PER_READ])
            if read:
                known.update(read)
                loaded = True
        found: list[Any] = []
        complete = True
        for start in range(0, len(uids), _VALUES_PER_LOOK):
            yield from pause_if_over(slicer)
            piece = list(map(known.get, uids[start : start + _VALUES_PER_LOOK]))  # None: the body is gone
            complete = complete and None not in piece
            found += piece
        return found, complete, known if loaded else None

    def answer_sliced(self, folder: tuple[Any, ...], name: str, uids: Sequence[int],
                      compute: Callable[[], Generator[Pause | Await, Any, list[bytes]]]
                      ) -> Generator[Pause | Await, Any, list[bytes]]:
        """What ``compute()`` returns (its steps yield PAUSE), kept as ``name`` of ``folder``
        while ``uids`` (ascending) are all of its messages: the answer of a command over the
        whole folder that depends on nothing else than its messages' fixed values (THREAD,
        whose algorithm costs far more than its values). The pieces of bytes count against the
        capacity. Kept only once computed in full: a computation closed while paused keeps
        nothing."""
        kept = self.kept_answer(folder, name, uids)
        if kept is not None:
            return kept
        value = yield from compute()
        self._store((folder, ("answer", name)), _new_column(array(_UID_CODE, uids), value))
        return value

    def kept_answer(self, folder: tuple[Any, ...], name: str, uids: Sequence[int]) -> list[bytes] | None:
        """The answer answer_sliced() keeps as ``name`` of ``folder`` for ``uids``, or None."""
        key = (folder, ("answer", name))
        with self._lock:
            kept = self._columns.get(key)
            if kept is not None:
                self._columns.move_to_end(key)
        if kept is None or kept.uids != array(_UID_CODE, uids):
            return None
        return kept.values

    def _store(self, key: tuple[Any, ...], column: _Column) -> None:
        size = column.footprint
        with self._lock:
            old = self._columns.pop(key, None)
            if old is not None:
                self._held -= old.footprint
            if size > self.capacity:
                return
            while self._columns and self._held + size > self.capacity:
                _key, evicted = self._columns.popitem(last=False)
                self._held -= evicted.footprint
            self._columns[key] = column
            self._held += size

    def clear(self) -> None:
        with self._lock:
            self._columns.clear()
            self._held = 0


_UID_CODE = "I"
_RANK_CODE = "I"

# A sliced SORT or THREAD (TimeSlice) looks at the clock between steps of this many messages:
# UIDs per read of the store (a read of 4,096 thread values takes about 5 ms); messages or
# nodes per piece of a threading algorithm's loops (about 2 ms); values per piece of a C-level
# pass such as the ranking of a column (1 ms or less).
_UIDS_PER_READ = 4096
_NODES_PER_LOOK = 1024
_VALUES_PER_LOOK = 16384


def sort_order(columns: Sequence[tuple[Sequence[Any], bool]], count: int) -> list[int]:
    """:func:`sort_order_sliced`, run to its end at once."""
    return run_unsliced(sort_order_sliced(columns, count, None))


def sort_order_sliced(columns: Sequence[tuple[Sequence[Any], bool]], count: int,
                      slicer: TimeSlice | None) -> Generator[Pause, Any, list[int]]:
    """The positions ``0 .. count - 1`` ordered by ``columns``: (values by position, reverse)
    pairs, most significant first. A position whose value is None in any column (a message
    whose body is gone) is left out. Equal values keep position order (message-number order)
    whatever REVERSE says (RFC 5256: ties go by sequence number). A PAUSE may come between two
    criteria: each one's sort is a single C call (about 20 ms for 100,000 messages)."""
    order = list(range(count))
    # Stable sorts from the least significant criterion up give the lexicographic order; a
    # reverse=True sort keeps equal items in their original (ascending position) order.
    for values, reverse in reversed(columns):
        yield from pause_if_over(slicer)
        if None in values:
            order = [index for index in order if values[index] is not None]
        order.sort(key=values.__getitem__, reverse=reverse)
    return order


# -- THREAD ----------------------------------------------------------------------------------------


class ThreadItem(NamedTuple):
    """What threading takes of one message (a THREAD_VALUES value): ``date`` is the sent date
    (the internal date when the Date: header is unusable). The algorithms index the fields, so
    a plain tuple of this layout does: the sort columns hold plain tuples (building a NamedTuple
    per message would cost a fifth of a first THREAD). The number a message shows (message
    number or UID) goes by its position: see render_threads."""

    date: int
    subject: str  # case-mapped base subject
    reply: bool
    message_id: str | None
    references: tuple[str, ...]  # the parent ids: References, else In-Reply-To


_DATE, _SUBJECT, _REPLY, _MESSAGE_ID, _REFERENCES = range(5)   # ThreadItem's fields
assert ThreadItem._fields == THREAD_FIELDS, "a sort entry's thread part is a ThreadItem"

_NONE = -1  # no node: no parent, child or sibling; the position of a dummy


class ThreadForest(NamedTuple):
    """Threads as the algorithms give them: nodes are numbers that index the lists. A node is
    a message, ``orders[node]`` its position among the items threaded (the number it shows goes
    by it, see render_threads), or a dummy (_NONE) standing for a message that is referenced but
    not present. Each node's children, in thread order, are its ``first_child`` and the
    ``next_sibling`` of each (_NONE: no more).

    Lists of integers rather than an object per node: a THREAD is computed in slices, and the
    cyclic collector runs between them; with an object per node (and a list of children for
    many), the collections going through them cost a sliced THREAD of 100,000 messages as much
    again as its threading."""

    roots: list[int]  # in thread order
    orders: list[int]
    first_child: list[int]
    next_sibling: list[int]


class _Tree:
    """The nodes of a threading in the making (ThreadForest's lists, and what the steps read):
    ``items`` (None for a dummy), ``keys`` (what sibling lists sort by, see _ORDER_SPAN; a
    dummy's is its first child's, once its children are in order) and ``parents`` (_NONE:
    none; read by REFERENCES steps 1-3, not kept up to date after that). A new child goes
    first among its siblings: sibling lists are put in key order at the end (steps 4 and 6),
    and none of the steps before depends on their order."""

    __slots__ = ("items", "orders", "keys", "parents", "first_child", "next_sibling")

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...] | None] = []
        self.orders: list[int] = []
        self.keys: list[int] = []
        self.parents: list[int] = []
        self.first_child: list[int] = []
        self.next_sibling: list[int] = []

    def add(self, item: tuple[Any, ...] | None, order: int) -> int:
        """A new node without parent or children: a message (``item`` at position ``order``)
        or a dummy (None, _NONE)."""
        node = len(self.items)
        self.items.append(item)
        self.orders.append(order)
        self.keys.append(0 if item is None else item[_DATE] * _ORDER_SPAN + order)
        self.parents.append(_NONE)
        self.first_child.append(_NONE)
        self.next_sibling.append(_NONE)
        return node

    def link(self, parent: int, child: int) -> None:
        self.parents[child] = parent
        self.next_sibling[child] = self.first_child[parent]
        self.first_child[parent] = child

    def unlink(self, child: int) -> None:
        parent = self.parents[child]
        if parent == _NONE:
            return
        self.parents[child] = _NONE
        next_sibling = self.next_sibling
        node = self.first_child[parent]
        if node == child:
            self.first_child[parent] = next_sibling[child]
            return
        while next_sibling[node] != child:
            node = next_sibling[node]
        next_sibling[node] = next_sibling[child]

    def children(self, node: int) -> list[int]:
        out = []
        next_sibling = self.next_sibling
        child = self.first_child[node]
        while child != _NONE:
            out.append(child)
            child = next_sibling[child]
        return out

    def set_children(self, node: int, children: list[int]) -> None:
        """``node``'s children are ``children``, in this order (their parent links are left as
        they are: see ``parents``). Each of them leaves the sibling list it was in: that list
        is replaced too, or is no longer in the tree."""
        next_sibling = self.next_sibling
        following = _NONE
        for child in reversed(children):
            next_sibling[child] = following
            following = child
        self.first_child[node] = following

    def sort_children(self, node: int) -> None:
        """``node``'s children in key order (a dummy's key: its first child's)."""
        children = self.children(node)
        if len(children) > 1:
            children.sort(key=self.keys.__getitem__)
            self.set_children(node, children)
        if self.items[node] is None:
            self.keys[node] = self.keys[children[0]]

    def forest(self, roots: list[int]) -> ThreadForest:
        return ThreadForest(roots, self.orders, self.first_child, self.next_sibling)


# A node's sort key is one integer: the sent date, then the position in message-number order
# (below _ORDER_SPAN, which is more messages than a folder holds). Integers compare several times
# faster than (date, position) pairs, and a folder's top level is a sort of 100,000 of them; a
# C-level key (the keys list's __getitem__) rather than a Python function per node: that
# function took most of the 70 ms the sorts of steps 4 and 6 used to cost on 100,000 messages
# in conversations.
_ORDER_SPAN = 1 << 32


def _thread_subject(tree: _Tree, node: int) -> str:
    items = tree.items
    while (item := items[node]) is None:
        node = tree.first_child[node]
    return item[_SUBJECT]  # type: ignore[no-any-return]


def thread_orderedsubject(items: Sequence[tuple[Any, ...]]) -> ThreadForest:
    """:func:`thread_orderedsubject_sliced`, run to its end at once."""
    return run_unsliced(thread_orderedsubject_sliced(items, None))


def thread_orderedsubject_sliced(items: Sequence[tuple[Any, ...]],
                                 slicer: TimeSlice | None) -> Generator[Pause, Any, ThreadForest]:
    """ORDEREDSUBJECT ("poor man's threading"): messages grouped by base subject; in each group
    the earliest message is the parent of all others; threads ordered by their first message's
    sent date. ``items`` come in message-number order; a node is a message's position. PAUSE
    may come between pieces of _NODES_PER_LOOK messages or groups when ``slicer``'s time is up."""
    count = len(items)
    keys: list[int] = []
    first_member: dict[str, int] = {}  # by subject, in the order the groups start
    last_member: dict[str, int] = {}
    next_member = [_NONE] * count  # a group's members in message-number order, as a chain
    for start in range(0, count, _NODES_PER_LOOK):
        yield from pause_if_over(slicer)
        for order, item in enumerate(items[start : start + _NODES_PER_LOOK], start):
            subject = item[_SUBJECT]
            last = last_member.get(subject)
            if last is None:
                first_member[subject] = order
            else:
                next_member[last] = order
            last_member[subject] = order
            keys.append(item[_DATE] * _ORDER_SPAN + order)
    del last_member
    firsts = list(first_member.values())
    del first_member
    first_child = [_NONE] * count
    next_sibling = [_NONE] * count
    roots: list[int] = []
    for start in range(0, len(firsts), _NODES_PER_LOOK):
        yield from pause_if_over(slicer)
        for member in firsts[start : start + _NODES_PER_LOOK]:
            if next_member[member] == _NONE:
                roots.append(member)  # a subject of its own: the most common thread
                continue
            members = []
            while member != _NONE:
                members.append(member)
                member = next_member[member]
            members.sort(key=keys.__getitem__)
            roots.append(members[0])
            first_child[members[0]] = members[1]
            for member, following in zip(members[1:], members[2:], strict=False):
                next_sibling[member] = following
    yield from pause_if_over(slicer)
    roots.sort(key=keys.__getitem__)
    return ThreadForest(roots, list(range(count)), first_child, next_sibling)


def _would_loop(parents: list[int], first_child: list[int], parent: int, child: int) -> bool:
    """Linking ``child`` under ``parent`` would close a loop: ``parent`` is ``child`` or one of
    its descendants."""
    if parent == child:
        return True
    if first_child[child] == _NONE:
        return False  # nothing below child: the common case of a message seen for the first time
    node = parent
    while node != _NONE:
        if node == child:
            return True
        node = parents[node]
    return False


def _prune_below_top(tree: _Tree, dummies: list[int], slicer: TimeSlice | None) -> Generator[Pause, Any, None]:
    """Step 3 below the top level: every message's sibling list that holds a dummy is pruned
    (_pruned). That resolves the whole chain of dummies below it (_promoted), so the lists of
    dummies need no pruning of their own, and the lists pruned are independent of each other:
    no order among them, no depths to find. The top level is _pruned's (at_root)."""
    items, parents = tree.items, tree.parents
    pruned = list(dict.fromkeys(parent for dummy in dummies
                                if (parent := parents[dummy]) != _NONE and items[parent] is not None))
    for start in range(0, len(pruned), _NODES_PER_LOOK):
        yield from pause_if_over(slicer)
        for parent in pruned[start : start + _NODES_PER_LOOK]:
            tree.set_children(parent, _pruned(tree, tree.children(parent), at_root=False))


def _pruned(tree: _Tree, children: list[int], at_root: bool) -> list[int]:
    """Step 3 for one sibling list: a dummy gives way to what its children become (_promoted),
    a childless one to nothing; at the root a dummy stays when that is several messages."""
    items = tree.items
    if all(items[child] is not None for child in children):
        return children  # no dummy among them (the top level of a folder without missing parents)
    out: list[int] = []
    for child in children:
        if items[child] is not None:
            out.append(child)
            continue
        promoted = _promoted(tree, child)
        if at_root and len(promoted) > 1:
            tree.set_children(child, promoted)
            out.append(child)
        else:
            out.extend(promoted)
    return out


def _promoted(tree: _Tree, dummy: int) -> list[int]:
    """The messages that take a dummy's place below the top level, in order: its children, a
    dummy among them replaced by its own (RFC 5256 step 3.B, applied down a chain of missing
    parents), a childless dummy by nothing (3.A). Iterative: such chains may be long."""
    items = tree.items
    out: list[int] = []
    pending = [iter(tree.children(dummy))]
    while pending:
        for child in pending[-1]:
            if items[child] is None:
                pending.append(iter(tree.children(child)))
                break
            out.append(child)
        else:
            pending.pop()
    return out


def _merge_by_subject(tree: _Tree, roots: list[int], slicer: TimeSlice | None) -> Generator[Pause, Any, list[int]]:
    """Step 5: gather top-level threads that share a base subject; PAUSE between pieces of
    _NODES_PER_LOOK threads when ``slicer``'s time is up."""
    items = tree.items
    subjects: list[str] = []
    table: dict[str, int] = {}
    shared = False
    for start in range(0, len(roots), _NODES_PER_LOOK):  # 5.B: which message each subject gathers under
        yield from pause_if_over(slicer)
        for node in roots[start : start + _NODES_PER_LOOK]:
            item = items[node]
            subject = item[_SUBJECT] if item is not None else _thread_subject(tree, node)
            subjects.append(subject)
            if not subject:
                continue
            held = table.get(subject)
            if held is None:
                table[subject] = node
                continue
            shared = True
            held_item = items[held]
            if held_item is not None and (item is None or (held_item[_REPLY] and not item[_REPLY])):
                table[subject] = node
    if not shared:
        return roots  # every subject is its thread's own: nothing to merge
    gone: set[int] = set()  # top-level nodes merged into others
    replaced: dict[int, int] = {}  # a top-level node -> the dummy now above it
    for start in range(0, len(roots), _NODES_PER_LOOK):  # 5.C: merge
        yield from pause_if_over(slicer)
        for node, subject in zip(roots[start : start + _NODES_PER_LOOK], subjects[start : start + _NODES_PER_LOOK],
                                 strict=True):
            if not subject:
                continue
            held = table[subject]
            if held == node or node in replaced:
                continue
            gone.add(node)
            held_item, item = items[held], items[node]
            if held_item is None and item is None:
                for child in tree.children(node):
                    tree.link(held, child)
                tree.first_child[node] = _NONE
            elif held_item is None or (item is not None and item[_REPLY] and not held_item[_REPLY]):
                tree.link(held, node)
            else:
                dummy = tree.add(None, _NONE)
                tree.link(dummy, held)
                tree.link(dummy, node)
                replaced[held] = dummy
                table[subject] = dummy
    yield from pause_if_over(slicer)
    return [replaced.get(node, node) for node in roots if node not in gone]


def thread_references(items: Sequence[tuple[Any, ...]]) -> ThreadForest:
    """:func:`thread_references_sliced`, run to its end at once."""
    return run_unsliced(thread_references_sliced(items, None))


def thread_references_sliced(items: Sequence[tuple[Any, ...]],
                             slicer: TimeSlice | None) -> Generator[Pause, Any, ThreadForest]:
    """REFERENCES threading (RFC 5256 section 3). ``items`` come in message-number order. PAUSE
    may come between its steps, and between pieces of _NODES_PER_LOOK messages or nodes of the
    steps that visit each one, when ``slicer``'s time is up."""
    tree = _Tree()
    # Step 1: containers for every message and every referenced id.
    by_id: dict[str, int] = {}
    dummies: list[int] = []  # as made: some get their message later
    # The loop runs per message: the lists' methods bound once, and a new node and a link
    # written out (as _Tree.add and _Tree.link do).
    known = by_id.get
    nodes_items, orders, keys, parents, first_child, next_sibling = (
        tree.items, tree.orders, tree.keys, tree.parents, tree.first_child, tree.next_sibling)
    add_item, add_order, add_key = nodes_items.append, orders.append, keys.append
    add_parent, add_first_child, add_next_sibling = parents.append, first_child.append, next_sibling.append
    for start in range(0, len(items), _NODES_PER_LOOK):
        yield from pause_if_over(slicer)
        for order, item in enumerate(items[start : start + _NODES_PER_LOOK], start):
            message_id = item[_MESSAGE_ID]
            node = known(message_id) if message_id else None
            if node is not None and nodes_items[node] is None:
                # a dummy created by an earlier reference: this is its message
                nodes_items[node] = item
                orders[node] = order
                keys[node] = item[_DATE] * _ORDER_SPAN + order
            else:
                # No Message-ID, or a duplicate one (only the first message keeps it): a unique id.
                fresh = node is None
                node = len(nodes_items)
                add_item(item)
                add_order(order)
                add_key(item[_DATE] * _ORDER_SPAN + order)
                add_parent(_NONE)
                add_first_child(_NONE)
                add_next_sibling(_NONE)
                if message_id and fresh:
                    by_id[message_id] = node
            # 1.A: chain the references, first as parent of the second and so on; existing parent
            # links are kept and no link may close a loop.
            previous = _NONE
            for reference in item[_REFERENCES]:
                referenced = known(reference)
                if referenced is None:
                    referenced = tree.add(None, _NONE)
                    dummies.append(referenced)
                    by_id[reference] = referenced
                if previous != _NONE and parents[referenced] == _NONE \
                        and not _would_loop(parents, first_child, previous, referenced):
                    parents[referenced] = previous
                    next_sibling[referenced] = first_child[previous]
                    first_child[previous] = referenced
                previous = referenced
            # 1.B: the last reference is the message's parent, replacing any parent guessed from
            # another message's (possibly truncated) References; no references means no parent.
            if parents[node] != _NONE:
                tree.unlink(node)
            if previous != _NONE and not _would_loop(parents, first_child, previous, node):
                parents[node] = previous
                next_sibling[node] = first_child[previous]
                first_child[previous] = node
    del by_id
    # Step 2: the parentless containers are the top level.
    yield from pause_if_over(slicer)
    roots = [node for node, parent in enumerate(parents) if parent == _NONE]
    # Step 3: prune dummies. Below the top level only the lists that hold dummies change: in a
    # folder of conversations most nodes have children, few of them dummies.
    yield from _prune_below_top(tree, [node for node in dummies if nodes_items[node] is None], slicer)
    yield from pause_if_over(slicer)
    roots = _pruned(tree, roots, at_root=True)
    # Step 4: top level by sent date (a dummy by its earliest child).
    yield from pause_if_over(slicer)
    for node in roots:
        if nodes_items[node] is None:
            tree.sort_children(node)
    roots.sort(key=keys.__getitem__)
    # Step 5: gather threads by subject.
    merged = yield from _merge_by_subject(tree, roots, slicer)
    # Step 6: every sibling list by sent date, the deepest first. After step 3 dummies are only
    # at the top level and, after step 5, below a top-level dummy; a message's key does not
    # depend on its children, so messages' children lists go in any order, and then each
    # dummy's, deepest first (a dummy sorts as its first child).
    for start in range(0, len(nodes_items), _NODES_PER_LOOK):
        yield from pause_if_over(slicer)
        for node in range(start, min(start + _NODES_PER_LOOK, len(nodes_items))):
            child = first_child[node]
            if child != _NONE and next_sibling[child] != _NONE and nodes_items[node] is not None:
                tree.sort_children(node)
    yield from pause_if_over(slicer)
    if merged is not roots:
        # Else the top level is as step 4 sorted it. Step 5 may have put a dummy below another.
        for node in merged:
            if nodes_items[node] is None:
                for child in tree.children(node):
                    if nodes_items[child] is None:
                        tree.sort_children(child)
                tree.sort_children(node)
        merged.sort(key=keys.__getitem__)
    return tree.forest(merged)


def _render_one(forest: ThreadForest, root: int, numbers: Sequence[int], out: list[bytes]) -> None:
    """One ``thread-list`` (RFC 5256 section 4): a chain of single children is written as
    "1 2 3", several children each in their own parentheses: "(1 (2)(3 4))"; a dummy contributes
    only its parentheses."""
    orders, first_child, next_sibling = forest.orders, forest.first_child, forest.next_sibling
    stack = [root]  # nodes, and _NONE for a closing parenthesis
    while stack:
        top = stack.pop()
        if top == _NONE:
            out.append(b")")
            continue
        out.append(b"(")
        node = top
        first = True
        while True:
            order = orders[node]
            if order != _NONE:
                out.append(b"%d" % numbers[order] if first else b" %d" % numbers[order])
                first = False
            child = first_child[node]
            if child != _NONE and next_sibling[child] == _NONE:
                node = child
                continue
            stack.append(_NONE)
            if child != _NONE:
                if not first:
                    out.append(b" ")
                children = []
                while child != _NONE:
                    children.append(child)
                    child = next_sibling[child]
                stack.extend(reversed(children))
            break


_PIECE_BYTES = 12  # the longest piece _render_one writes: " " and a 10-digit number, or "(%d)"


def render_threads(forest: ThreadForest, numbers: Sequence[int], chunk: int = 1 << 16) -> Iterator[bytes]:
    """The data of a THREAD response (after ``* THREAD``), in pieces of about ``chunk`` bytes
    (counted as pieces of at most _PIECE_BYTES: the exact size would cost a len() per piece).
    ``numbers``: what each message shows (message number or UID), by its position among the
    items the algorithm was given."""
    out: list[bytes] = []
    append = out.append
    most = max(1, chunk // _PIECE_BYTES)
    orders, first_child = forest.orders, forest.first_child
    for root in forest.roots:
        if first_child[root] != _NONE:
            _render_one(forest, root, numbers, out)
        else:  # a message alone (the most common thread); a childless dummy never reaches here
            append(b"(%d)" % numbers[orders[root]])
        if len(out) >= most:
            yield b"".join(out)
            out.clear()
    if out:
        yield b"".join(out)
