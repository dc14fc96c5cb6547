"""SORT and THREAD (RFC 5256, RFC 5957): the values they sort by, kept per folder, and the algorithms.

Sort values come from the sort index (midb.sortindex, read through ``Store.sort_values``): per
message, under its folder and UID, the date (the sent date, else the internal date), the decoded
base subject, the first From/To/Cc mailbox, the display names and the Message-ID, In-Reply-To
and References ids, copied from its body's summary when it was stored; a folder's entries are
read in one cursor pass, and no body is ever parsed again. :class:`SortColumns` keeps each
criterion's values by folder and UID (a message's values never change), so a webmail client
re-sorting a large folder on every page view reads each entry once. ARRIVAL and SIZE need only
the index record.

Strings compare with the i;ascii-casemap collation (RFC 4790): ASCII letters are upper-cased, then
the UTF-8 octets compare (the order of Python's code point comparison). Ties, under every key, go
by message sequence number (RFC 5256 section 3), which is the order records arrive in.

The threading algorithms follow RFC 5256 section 3 step by step; every traversal is iterative, so a
References chain of any length cannot exhaust the recursion limit.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import Any, NamedTuple

from midb.sortindex import SORT_TEXT_FIELDS, THREAD_FIELDS, entry_date, sort_texts, thread_values

__all__ = [
    "THREAD_VALUES",
    "SortColumns",
    "ThreadItem",
    "ThreadNode",
    "column_values",
    "render_threads",
    "sort_order",
    "thread_orderedsubject",
    "thread_references",
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
# i;ascii-casemap form there already.
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


def _ranks(values: list[Any]) -> array | None:
    if not values or not isinstance(values[0], str):
        return None
    place = {value: index for index, value in enumerate(sorted(set(values)))}
    return array(_RANK_CODE, map(place.__getitem__, values))


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
        """The values of ``uids`` (ascending) under ``criterion`` in ``folder`` (any key naming
        a folder and its UIDVALIDITY), in the same order; None for a message ``load`` left out
        (its body is gone). ``load(missing UIDs)`` gives UID -> value for those the column lacks.
        ``whole_folder``: ``uids`` are all of the folder's messages (the column keeps only these).
        ``ranked``: only the order matters (SORT): text may come as its ranks."""
        key = (folder, criterion)
        with self._lock:
            column = self._columns.get(key)
            if column is not None:
                self._columns.move_to_end(key)
        count = len(uids)
        if column is not None and count and len(column.uids) >= count and column.uids[count - 1] == uids[-1] \
                and column.uids[:count] == array(_UID_CODE, uids):
            # The usual repeat: nothing arrived, nothing left.
            return column.ranks[:count] if ranked and column.ranks is not None else column.values[:count]
        if column is None:
            known = loaded = load(list(uids)) if count else {}
        else:
            known = dict(zip(column.uids, column.values, strict=True))
            missing = [uid for uid in uids if uid not in known]
            loaded = load(missing) if missing else {}
            if loaded:
                known.update(loaded)
        found = list(map(known.get, uids))  # None: the body is gone
        if whole_folder and None not in found:  # the usual first read of a folder
            kept_uids, values = array(_UID_CODE, uids), found.copy()   # (the caller gets its own list)
        else:
            if whole_folder:
                kept = [(uid, value) for uid, value in zip(uids, found, strict=True) if value is not None]
            elif loaded or column is None:
                kept = sorted(known.items())
            else:
                return found  # nothing new to keep
            kept_uids, values = array(_UID_CODE, [uid for uid, _value in kept]), [value for _uid, value in kept]
        self._store(key, _new_column(kept_uids, values, _ranks(values)))
        return found

    def answer(self, folder: tuple[Any, ...], name: str, uids: Sequence[int], compute: Callable[[], Any]) -> Any:
        """``compute()``, kept as ``name`` of ``folder`` while ``uids`` (ascending) are all of its
        messages: the answer of a command over the whole folder that depends on nothing else
        than its messages' fixed values (THREAD, whose algorithm costs far more than its
        values). ``compute`` gives a list of bytes; they count against the capacity."""
        key = (folder, ("answer", name))
        wanted = array(_UID_CODE, uids)
        with self._lock:
            kept = self._columns.get(key)
            if kept is not None:
                self._columns.move_to_end(key)
        if kept is not None and kept.uids == wanted:
            return kept.values
        value = compute()
        self._store(key, _new_column(wanted, value))
        return value

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


def sort_order(columns: Sequence[tuple[Sequence[Any], bool]], count: int) -> list[int]:
    """The positions ``0 .. count - 1`` ordered by ``columns``: (values by position, reverse)
    pairs, most significant first. A position whose value is None in any column (a message
    whose body is gone) is left out. Equal values keep position order (message-number order)
    whatever REVERSE says (RFC 5256: ties go by sequence number)."""
    order = list(range(count))
    # Stable sorts from the least significant criterion up give the lexicographic order; a
    # reverse=True sort keeps equal items in their original (ascending position) order.
    for values, reverse in reversed(columns):
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


class ThreadNode:
    """A node of a thread tree: a message, or a dummy (``item`` None) standing for a message that
    is referenced but not present."""

    __slots__ = ("item", "order", "key", "parent", "children")

    def __init__(self, item: tuple[Any, ...] | None = None, order: int = -1) -> None:
        self.item = item  # a ThreadItem (or a plain tuple of its layout)
        self.order = order  # position in message-number order: the date tie-breaker, the number shown
        # What sibling lists sort by (_KEY): a message's is its sent date, then its position; a
        # dummy's is its first child's, set once its children are in order (_sort_dummy).
        self.key = 0 if item is None else item[_DATE] * _ORDER_SPAN + order
        # Read by steps 1-3 (loops, re-parenting, the top level, the dummies' lists), not kept
        # up to date after that; None in the trees returned (no parent-child reference cycles: a dropped
        # tree is freed by reference counting, see gximap.session.collector).
        self.parent: ThreadNode | None = None
        # Most messages have no children: they share an empty tuple; a list once they have one.
        self.children: Sequence[ThreadNode] = ()

    def __repr__(self) -> str:
        return f"ThreadNode({self.order if self.item is not None else None}, {len(self.children)} children)"


# A node's sort key is one integer: the sent date, then the position in message-number order
# (below _ORDER_SPAN, which is more messages than a folder holds). Integers compare several times
# faster than (date, position) pairs, and a folder's top level is a sort of 100,000 of them. It is
# kept on the node (ThreadNode.key) and read by a C-level attrgetter: with a Python key function
# per node, the sorts of steps 4 and 6 took about 70 ms for a folder of 100,000 messages in
# conversations, most of it calling that function.
_ORDER_SPAN = 1 << 32
_KEY = attrgetter("key")


def _sort_dummy(dummy: ThreadNode) -> None:
    """A dummy's children in date order, and its key: its first child's (RFC 5256 step 4: a
    dummy sorts as its earliest child). Dummies among the children have their keys already."""
    children = dummy.children
    if len(children) > 1:
        children.sort(key=_KEY)  # type: ignore[attr-defined]
    dummy.key = children[0].key


def _thread_subject(node: ThreadNode) -> str:
    while node.item is None:
        node = node.children[0]
    return node.item[_SUBJECT]  # type: ignore[no-any-return]


def thread_orderedsubject(items: Sequence[tuple[Any, ...]]) -> list[ThreadNode]:
    """ORDEREDSUBJECT ("poor man's threading"): messages grouped by base subject; in each group
    the earliest message is the parent of all others; threads ordered by their first message's
    sent date. ``items`` come in message-number order."""
    groups: dict[str, list[tuple[int, int, tuple[Any, ...]]]] = {}
    for order, item in enumerate(items):
        groups.setdefault(item[_SUBJECT], []).append((item[_DATE], order, item))
    threads: list[ThreadNode] = []
    for members in groups.values():
        members.sort(key=lambda member: (member[0], member[1]))
        _date, order, first = members[0]
        root = ThreadNode(first, order)
        if len(members) > 1:  # (no parent links: see ThreadNode.parent)
            root.children = [ThreadNode(item, order) for _date, order, item in members[1:]]
        threads.append(root)
    threads.sort(key=_KEY)
    return threads


def _would_loop(parent: ThreadNode, child: ThreadNode) -> bool:
    """Linking ``child`` under ``parent`` would close a loop: ``parent`` is ``child`` or one of
    its descendants."""
    if parent is child:
        return True
    if not child.children:
        return False  # nothing below child: the common case of a message seen for the first time
    node: ThreadNode | None = parent
    while node is not None:
        if node is child:
            return True
        node = node.parent
    return False


def _link(parent: ThreadNode, child: ThreadNode) -> None:
    child.parent = parent
    if parent.children:
        parent.children.append(child)  # type: ignore[attr-defined]
    else:
        parent.children = [child]


def _unlink(child: ThreadNode) -> None:
    parent = child.parent
    if parent is not None:
        parent.children.remove(child)  # type: ignore[attr-defined]
        child.parent = None


def _prune_below_top(dummies: Sequence[ThreadNode]) -> None:
    """Step 3 below the top level: every message's sibling list that holds a dummy is pruned
    (_pruned). That resolves the whole chain of dummies below it (_promoted), so the lists of
    dummies need no pruning of their own, and the lists pruned are independent of each other:
    no order among them, no depths to find. The top level is _pruned's (at_root)."""
    parents = {id(parent): parent for dummy in dummies
               if (parent := dummy.parent) is not None and parent.item is not None}
    for parent in parents.values():
        parent.children = _pruned(parent.children, at_root=False)  # type: ignore[arg-type]


def _pruned(children: list[ThreadNode], at_root: bool) -> list[ThreadNode]:
    """Step 3 for one sibling list: a dummy gives way to what its children become (_promoted),
    a childless one to nothing; at the root a dummy stays when that is several messages."""
    out = [child for child in children if child.item is not None]
    if len(out) == len(children):
        return out  # no dummy among them (the top level of a folder without missing parents)
    out = []
    for child in children:
        if child.item is not None:
            out.append(child)
            continue
        promoted = _promoted(child)
        if at_root and len(promoted) > 1:
            child.children = promoted
            out.append(child)
        else:
            out.extend(promoted)
    return out


def _promoted(dummy: ThreadNode) -> list[ThreadNode]:
    """The messages that take a dummy's place below the top level, in order: its children, a
    dummy among them replaced by its own (RFC 5256 step 3.B, applied down a chain of missing
    parents), a childless dummy by nothing (3.A). Iterative: such chains may be long."""
    out: list[ThreadNode] = []
    pending = [iter(dummy.children)]
    while pending:
        for child in pending[-1]:
            if child.item is None:
                pending.append(iter(child.children))
                break
            out.append(child)
        else:
            pending.pop()
    return out


def _merge_by_subject(roots: list[ThreadNode]) -> list[ThreadNode]:
    """Step 5: gather top-level threads that share a base subject."""
    subjects = [node.item[_SUBJECT] if node.item is not None else _thread_subject(node) for node in roots]
    table: dict[str, ThreadNode] = {}
    shared = False
    for node, subject in zip(roots, subjects, strict=True):  # 5.B: which message each subject gathers under
        if not subject:
            continue
        held = table.get(subject)
        if held is None:
            table[subject] = node
            continue
        shared = True
        if held.item is not None and (node.item is None or (held.item[_REPLY] and not node.item[_REPLY])):
            table[subject] = node
    if not shared:
        return roots  # every subject is its thread's own: nothing to merge
    gone: set[int] = set()  # id() of top-level nodes merged into others
    replaced: dict[int, ThreadNode] = {}  # id() of a top-level node -> the dummy now above it
    for node, subject in zip(roots, subjects, strict=True):  # 5.C: merge
        if not subject:
            continue
        held = table[subject]
        if held is node or id(node) in replaced:
            continue
        gone.add(id(node))
        if held.item is None and node.item is None:
            for child in node.children:
                _link(held, child)
            node.children = ()
        elif held.item is None or (node.item is not None and node.item[_REPLY] and not held.item[_REPLY]):
            _link(held, node)
        else:
            dummy = ThreadNode()
            _link(dummy, held)
            _link(dummy, node)
            replaced[id(held)] = dummy
            table[subject] = dummy
    out = []
    for node in roots:
        if id(node) in gone:
            continue
        out.append(replaced.get(id(node), node))
    return out


def thread_references(items: Sequence[tuple[Any, ...]]) -> list[ThreadNode]:
    """REFERENCES threading (RFC 5256 section 3). ``items`` come in message-number order."""
    # Step 1: containers for every message and every referenced id.
    by_id: dict[str, ThreadNode] = {}
    nodes: list[ThreadNode] = []
    dummies: list[ThreadNode] = []  # as made: some get their message later
    known, new_node, add_node = by_id.get, ThreadNode, nodes.append   # the loop runs per message
    for order, item in enumerate(items):
        message_id = item[_MESSAGE_ID]
        node = known(message_id) if message_id else None
        if node is not None and node.item is None:
            node.item = item  # a dummy created by an earlier reference: this is its message
            node.order = order
            node.key = item[_DATE] * _ORDER_SPAN + order   # (as ThreadNode sets a message's)
        else:
            # No Message-ID, or a duplicate one (only the first message keeps it): a unique id.
            fresh = node is None
            node = new_node(item, order)
            add_node(node)
            if message_id and fresh:
                by_id[message_id] = node
        # 1.A: chain the references, first as parent of the second and so on; existing parent
        # links are kept and no link may close a loop.
        previous: ThreadNode | None = None
        for reference in item[_REFERENCES]:
            referenced = known(reference)
            if referenced is None:
                referenced = ThreadNode()
                nodes.append(referenced)
                dummies.append(referenced)
                by_id[reference] = referenced
            if previous is not None and referenced.parent is None and not _would_loop(previous, referenced):
                _link(previous, referenced)
            previous = referenced
        # 1.B: the last reference is the message's parent, replacing any parent guessed from
        # another message's (possibly truncated) References; no references means no parent.
        if node.parent is not None:
            _unlink(node)
        if previous is not None and not _would_loop(previous, node):
            _link(previous, node)
    # Step 2: the parentless containers are the top level.
    roots = [node for node in nodes if node.parent is None]
    # Step 3: prune dummies. Below the top level only the lists that hold dummies change: in a
    # folder of conversations most nodes have children, few of them dummies.
    _prune_below_top([node for node in dummies if node.item is None])
    roots = _pruned(roots, at_root=True)
    # Step 4: top level by sent date (a dummy by its earliest child).
    for node in roots:
        if node.item is None:
            _sort_dummy(node)
    roots.sort(key=_KEY)
    # Step 5: gather threads by subject.
    merged = _merge_by_subject(roots)
    # Step 6: every sibling list by sent date, the deepest first. After step 3 dummies are only
    # at the top level and, after step 5, below a top-level dummy; a message's key does not
    # depend on its children, so messages' children lists go in any order, and then each
    # dummy's, deepest first (a dummy sorts as its first child). The same pass drops the parent
    # links: none in the tree returned (see ThreadNode.parent); the dummies step 5 made are at
    # the top level, without one already.
    for node in nodes:
        node.parent = None
        if node.item is not None and len(node.children) > 1:
            node.children.sort(key=_KEY)  # type: ignore[attr-defined]
    if merged is not roots:
        # Else the top level is as step 4 sorted it. Step 5 may have put a dummy below another.
        for node in merged:
            if node.item is None:
                for child in node.children:
                    if child.item is None:
                        _sort_dummy(child)
                _sort_dummy(node)
        merged.sort(key=_KEY)
    return merged


def _render_one(root: ThreadNode, numbers: Sequence[int], out: list[bytes]) -> None:
    """One ``thread-list`` (RFC 5256 section 4): a chain of single children is written as
    "1 2 3", several children each in their own parentheses: "(1 (2)(3 4))"; a dummy contributes
    only its parentheses."""
    stack: list[ThreadNode | bytes] = [root]
    while stack:
        top = stack.pop()
        if isinstance(top, bytes):
            out.append(top)
            continue
        out.append(b"(")
        node = top
        first = True
        while True:
            if node.item is not None:
                out.append(b"%d" % numbers[node.order] if first else b" %d" % numbers[node.order])
                first = False
            children = node.children
            if len(children) == 1:
                node = children[0]
                continue
            stack.append(b")")
            if children:
                if not first:
                    out.append(b" ")
                stack.extend(reversed(children))
            break


_PIECE_BYTES = 12  # the longest piece _render_one writes: " " and a 10-digit number, or "(%d)"


def render_threads(roots: Sequence[ThreadNode], numbers: Sequence[int], chunk: int = 1 << 16) -> Iterator[bytes]:
    """The data of a THREAD response (after ``* THREAD``), in pieces of about ``chunk`` bytes
    (counted as pieces of at most _PIECE_BYTES: the exact size would cost a len() per piece).
    ``numbers``: what each message shows (message number or UID), by its position among the
    items the algorithm was given."""
    out: list[bytes] = []
    append = out.append
    most = max(1, chunk // _PIECE_BYTES)
    for root in roots:
        if root.children:
            _render_one(root, numbers, out)
        else:  # a message alone (the most common thread); a childless dummy never reaches here
            append(b"(%d)" % numbers[root.order])
        if len(out) >= most:
            yield b"".join(out)
            out.clear()
    if out:
        yield b"".join(out)
