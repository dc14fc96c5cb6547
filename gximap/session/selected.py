"""The selected-mailbox view of one session: message numbers, \\Recent, and pending updates.

Message sequence numbers are positions in ``uids``, a :class:`UidRuns`: the view's ascending
UIDs kept as runs of consecutive UIDs, immutable, so that every session viewing the same UIDs
shares one object (:class:`SharedViews`) and a view that changes gets a new one (copy on write).
Mapping in either direction is O(log runs). The view catches up with the store by asking "what
changed since modseq N" (``Store.view_changes_since``), one mechanism for NOOP, IDLE and the updates
sent after every command. Expunges by other sessions stay in the view (as numbers the client
still knows) until a command that may send EXPUNGE completes (RFC 3501 section 7.4.1).

For CONDSTORE/QRESYNC clients the view also tracks which HIGHESTMODSEQ the client may safely
resynchronise from (``full_modseq``, ``highestmodseq_report``; see gximap.session.condstore).
"""

from __future__ import annotations

import bisect
import collections
import functools
import threading
import weakref
from array import array
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from typing import Any

from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.imap.commands import SYSTEM_FLAGS, PartialRange, SequenceSet
from gximap.session.base import (
    NO_UIDS,
    LazyLines,
    Pause,
    TimeSlice,
    UidSet,
    pause_if_over,
    run_unsliced,
    with_uids,
    without_uids,
)
from gximap.session.searchcontext import SearchContexts
from midb.errors import MidbError, NoSuchAccount, NoSuchFolder

RECENT = "\\Recent"
# UIDs are 32-bit: the run arrays hold 4 bytes per entry.
UID_ARRAY = next(code for code in "IL" if array(code).itemsize == 4)


def flag_atoms(flags: Iterable[str], recent: bool = False) -> bytes:
    items = [flag.encode("utf-8") for flag in flags]
    if recent:
        items.append(b"\\Recent")
    return b"(" + b" ".join(items) + b")"


# -- the UID list of a view ---------------------------------------------------------------------


class UidRuns(Sequence[int]):
    """An immutable, ascending list of UIDs stored as runs of consecutive UIDs.

    A folder's UIDs are mostly contiguous (they only get holes where messages were expunged), so
    a view of 100,000 messages is usually a handful of runs: a few dozen bytes instead of 4 bytes
    per message in every session. Run ``i`` starts with UID ``_firsts[i]`` at position
    ``_offsets[i]`` (0-based) and ends where run ``i+1`` starts. Position <-> UID is two
    bisections over the runs: O(log runs). Being immutable, one object is shared by every session
    viewing the same UIDs (:class:`SharedViews`); a view that changes builds a new one."""

    __slots__ = ("_firsts", "_offsets", "_count", "_hash", "_flat", "__weakref__")

    def __init__(self, firsts: array, offsets: array, count: int) -> None:
        self._firsts = firsts
        self._offsets = offsets
        self._count = count
        self._hash: int | None = None
        self._flat: array | None = None

    def as_array(self) -> array:
        """Every UID in a flat array, built once (C-speed indexing and bisection for callers
        doing many lookups); it lives as long as this object. Do not modify it."""
        flat = self._flat
        if flat is None:
            flat = array(UID_ARRAY)
            for first, last in self.ranges():
                flat.extend(range(first, last + 1))
            self._flat = flat  # a concurrent build is harmless: both are equal
        return flat

    @classmethod
    def from_sorted(cls, uids: Sequence[int]) -> UidRuns:
        """From ascending, distinct UIDs (a list or array)."""
        count = len(uids)
        starts = [0] if count else []
        if count:
            _run_starts(uids, 0, count, starts)
        return cls(array(UID_ARRAY, [uids[start] for start in starts]), array(UID_ARRAY, starts), count)

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int]]) -> UidRuns:
        """From ascending, disjoint inclusive (first, last) ranges; adjacent ones are merged."""
        firsts = array(UID_ARRAY)
        offsets = array(UID_ARRAY)
        count = 0
        last_uid = -1
        for first, last in ranges:
            if first != last_uid + 1 or not firsts:
                firsts.append(first)
                offsets.append(count)
            count += last - first + 1
            last_uid = last
        return cls(firsts, offsets, count)

    # -- the Sequence protocol (bisect.bisect_left works on it too) ------------------------------

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step != 1:
                return list(self)[index]
            return self.slice_list(start, stop)
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("UID position out of range")
        offsets = self._offsets
        run = bisect.bisect_right(offsets, index) - 1
        return self._firsts[run] + index - offsets[run]

    def __iter__(self) -> Iterator[int]:
        for first, last in self.ranges():
            yield from range(first, last + 1)

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.position(uid) is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UidRuns):
            return NotImplemented
        return (self._count == other._count and self._firsts == other._firsts
                and self._offsets == other._offsets)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self._count, self._firsts.tobytes(), self._offsets.tobytes()))
        return self._hash

    def __repr__(self) -> str:
        return f"UidRuns({encode.sequence_set_from_ranges(self.ranges()).decode()!r})"

    # -- lookups -------------------------------------------------------------------------------

    @property
    def run_count(self) -> int:
        return len(self._firsts)

    def _run_end(self, run: int) -> int:
        """The position after run ``run``."""
        offsets = self._offsets
        return offsets[run + 1] if run + 1 < len(offsets) else self._count

    def ranges(self) -> list[tuple[int, int]]:
        """The runs as inclusive (first UID, last UID) pairs, ascending."""
        firsts = self._firsts
        offsets = self._offsets
        if not firsts:
            return []
        ends = [*offsets[1:], self._count]
        return [(first, first + end - offset - 1) for first, offset, end in zip(firsts, offsets, ends, strict=True)]

    def bisect_left(self, uid: int) -> int:
        """The position of ``uid``, or where it would be inserted."""
        run = bisect.bisect_right(self._firsts, uid) - 1
        if run < 0:
            return 0
        offset = self._offsets[run]
        return min(offset + uid - self._firsts[run], self._run_end(run))

    def position(self, uid: int) -> int | None:
        """The 0-based position of ``uid``, None if absent."""
        run = bisect.bisect_right(self._firsts, uid) - 1
        if run < 0:
            return None
        position = self._offsets[run] + uid - self._firsts[run]
        return position if position < self._run_end(run) else None

    def span(self, low: int, high: int) -> tuple[int, int]:
        """Positions [start, stop) of the UIDs between ``low`` and ``high`` inclusive."""
        start = self.bisect_left(low)
        stop = self.bisect_left(high)
        if stop < self._count and self[stop] == high:
            stop += 1
        return start, stop

    def slice_list(self, start: int, stop: int) -> list[int]:
        """The UIDs at positions [start, stop) as a list, built run by run."""
        out: list[int] = []
        if start >= stop:
            return out
        firsts = self._firsts
        offsets = self._offsets
        run = bisect.bisect_right(offsets, start) - 1
        while start < stop:
            run_stop = min(self._run_end(run), stop)
            base = firsts[run] - offsets[run]
            out.extend(range(base + start, base + run_stop))
            start = run_stop
            run += 1
        return out

    def stretch(self, uids: Sequence[int], base: int = 0) -> range | None:
        """The positions (counted from ``base``) of ascending UIDs that are a contiguous stretch
        of the list (FETCH 1:*, SEARCH ALL), as a range; None when they are not."""
        if not uids:
            return range(0)
        first = self.position(uids[0])
        last = self.position(uids[-1])
        if first is not None and last is not None and last - first + 1 == len(uids):
            return range(first + base, last + 1 + base)
        return None

    def positions_of(self, uids: Sequence[int], base: int = 0) -> Sequence[int]:
        """Positions (counted from ``base``) of ascending UIDs that are all in the list: a range
        when they are a contiguous stretch of it, else a list."""
        stretch = self.stretch(uids, base)
        if stretch is not None:
            return stretch
        positions = []
        for uid in uids:
            position = self.position(uid)
            if position is None:
                raise ValueError(f"UID {uid} is not in the list")
            positions.append(position + base)
        return positions

    # -- derived views (the object itself never changes) -----------------------------------------

    def appended(self, uids: Sequence[int]) -> UidRuns:
        """This list followed by ``uids`` (ascending, all above the last UID)."""
        if not uids:
            return self
        tail = UidRuns.from_sorted(uids)
        firsts = array(UID_ARRAY, self._firsts)
        offsets = array(UID_ARRAY, self._offsets)
        last = self[-1] if self._count else -1
        tail_firsts = tail._firsts
        tail_offsets = tail._offsets
        skip = 0
        if firsts and tail_firsts[0] == last + 1:
            skip = 1  # the first new UID continues the last run
        firsts.extend(tail_firsts[skip:])
        offsets.extend(offset + self._count for offset in tail_offsets[skip:])
        return UidRuns(firsts, offsets, self._count + tail._count)

    def without(self, gone: Iterable[int]) -> tuple[UidRuns, list[int]]:
        """(this list without the UIDs ``gone``, the 0-based positions they had, ascending).
        UIDs not in the list are ignored. Costs O(runs + removed), whatever the list's length."""
        positions = sorted({position for uid in gone if (position := self.position(uid)) is not None})
        if not positions:
            return self, []
        ranges: list[tuple[int, int]] = []
        removed = 0  # index into positions
        for run, (first, last) in enumerate(self.ranges()):
            run_start = self._offsets[run]
            run_stop = run_start + last - first + 1
            kept_from = first  # the next UID of this run not yet placed in a range
            while removed < len(positions) and positions[removed] < run_stop:
                uid = first + positions[removed] - run_start
                if uid > kept_from:
                    ranges.append((kept_from, uid - 1))
                kept_from = uid + 1
                removed += 1
            if kept_from <= last:
                ranges.append((kept_from, last))
        return UidRuns.from_ranges(ranges), positions


def set_positions(runs: UidRuns, seqset: SequenceSet, uid: bool) -> list[tuple[int, int]]:
    """The positions [start, stop) in ``runs`` of the UIDs a sequence set (``$`` substituted)
    names, ascending and disjoint, none empty: O(ranges x log runs), whatever the set's size.
    Message numbers beyond the count are left out (the caller has answered BAD for them)."""
    count = len(runs)
    if not count:
        return []
    spans: list[tuple[int, int]] = []
    if uid:
        highest = runs[-1]
        # SequenceSet.resolve gives sorted, merged ranges, so the spans are disjoint: no UID twice.
        # "n:*" with n above the highest UID is (highest, n) there, so it names the highest, as
        # RFC 3501 section 6.4.8 wants.
        for low, high in seqset.resolve(highest, clip=False):
            if low <= highest:
                start, stop = runs.span(low, min(high, highest))
                if start < stop:
                    spans.append((start, stop))
    else:
        spans.extend((low - 1, high) for low, high in seqset.resolve(count))
    return spans


def page_of_set(runs: UidRuns, seqset: SequenceSet, uid: bool, partial: PartialRange) -> list[int]:
    """The UIDs at ``partial``'s positions (RFC 9394 section 3.3) among those ``seqset`` names,
    ascending. The set's size is the sum of its spans' lengths, and only the page's UIDs are
    listed: UID FETCH 1:* (PARTIAL -1:-50) of 100,000 messages builds 50, not 100,000."""
    spans = set_positions(runs, seqset, uid)
    first, stop = partial.bounds(sum(end - start for start, end in spans))
    page: list[int] = []
    before = 0  # positions in the set before the current span
    for start, end in spans:
        if before >= stop:
            break
        length = end - start
        low = max(first - before, 0)
        high = min(stop - before, length)
        if low < high:
            page.extend(runs.slice_list(start + low, start + high))
        before += length
    return page


_LINEAR_RUN_SCAN = 64  # below this many UIDs, run boundaries are found by a plain scan


def _run_starts(uids: Sequence[int], low: int, high: int, out: list[int]) -> None:
    """Append the positions in (low, high) where a new run starts (``low`` itself is already in
    ``out``). A stretch whose ends differ by its length is one run: checked in O(1), so a
    mostly-contiguous folder costs O(runs x log n), not O(n) Python steps."""
    if uids[high - 1] - uids[low] == high - 1 - low:
        return
    if high - low <= _LINEAR_RUN_SCAN:
        out.extend(index for index in range(low + 1, high) if uids[index] != uids[index - 1] + 1)
        return
    middle = (low + high) // 2
    _run_starts(uids, low, middle, out)
    if uids[middle] != uids[middle - 1] + 1:
        out.append(middle)
    _run_starts(uids, middle, high, out)


class SharedViews:
    """The UID lists of the views in this process, shared between sessions.

    * By content: :meth:`intern` returns the one live UidRuns equal to the given one, so 10,000
      IDLE sessions of one mailbox hold one list, and still do after they all apply the same
      new message or expunge.
    * By folder state: a folder's UID set is fixed by (UIDVALIDITY, UIDNEXT, message count) —
      UIDs are only ever added at UIDNEXT, so with UIDNEXT unchanged the set can only shrink, and
      then the count drops. SELECT of a folder some session already views (or viewed in this
      state) reuses that list without reading the folder's keys (:meth:`for_state`).

    Entries are weak: a list lives as long as some view uses it, and a state whose list died is
    unfiled at the next SELECT that files one (a callback queues it: the list may die in any
    thread, this one's included while it holds the lock). The states filed are the
    latest ``max_states`` (a state is filed once, at the SELECT that read it): a list that
    outlives its state (the one empty list of every empty folder, a folder back to UIDs some
    view still holds) would otherwise keep the key of each state it was filed under, one per
    SELECT of a folder in a new state, for as long as the process runs. A state found again
    counts as the latest."""

    def __init__(self, max_states: int = 16384) -> None:
        self._lock = threading.Lock()
        self._by_content: weakref.WeakValueDictionary[tuple[int, int], UidRuns] = weakref.WeakValueDictionary()
        # per Store object, so a store closed and re-created on the same path shares nothing;
        # oldest first, at most max_states each
        self.max_states = max_states
        self._by_state: weakref.WeakKeyDictionary[Any, collections.OrderedDict[tuple[Any, ...], weakref.ref[UidRuns]]] = (
            weakref.WeakKeyDictionary())
        # The last few lists filed by state stay alive even when no session views them, so a
        # re-SELECT (a client resynchronising) does not read the folder again.
        self._recent_states: collections.deque[UidRuns] = collections.deque(maxlen=_KEPT_STATES)
        # (states, key, reference) of states whose list died, to unfile; deque appends are atomic
        self._dead_states: collections.deque[tuple[Any, tuple[Any, ...], weakref.ref[UidRuns]]] = (
            collections.deque())

    @staticmethod
    def state_key(account: str, folder: Any) -> tuple[Any, ...]:
        return (account, folder.id, folder.uidvalidity, folder.uidnext, folder.messages)

    def intern(self, runs: UidRuns) -> UidRuns:
        key = (len(runs), hash(runs))
        with self._lock:
            known = self._by_content.get(key)
            if known is not None:
                return known if known == runs else runs  # a hash collision is simply not shared
            self._by_content[key] = runs
            return runs

    def for_state(self, store: Any, account: str, folder: Any) -> UidRuns | None:
        key = self.state_key(account, folder)
        with self._lock:
            states = self._by_state.get(store)
            if states is None:
                return None
            filed = states.get(key)
            if filed is None:
                return None
            runs = filed()
            if runs is None:
                del states[key]
            else:
                states.move_to_end(key)   # in use: kept over states not asked for
            return runs

    def states_filed(self, store: Any) -> int:
        with self._lock:
            states = self._by_state.get(store)
            return 0 if states is None else len(states)

    def remember_state(self, store: Any, account: str, folder: Any, runs: UidRuns) -> UidRuns:
        """Intern ``runs``, read in the same transaction as ``folder``, and file it under that state."""
        runs = self.intern(runs)
        with self._lock:
            states = self._by_state.get(store)
            if states is None:
                states = self._by_state[store] = collections.OrderedDict()
            dead = self._dead_states
            while dead:
                filed_in, key, reference = dead.popleft()
                if filed_in.get(key) is reference:
                    del filed_in[key]
            key = self.state_key(account, folder)

            def died(reference: weakref.ref[UidRuns]) -> None:
                dead.append((states, key, reference))

            states[key] = weakref.ref(runs, died)
            while len(states) > self.max_states:
                states.popitem(last=False)
            self._recent_states.append(runs)
        return runs


_KEPT_STATES = 8
SHARED_VIEWS = SharedViews()
_EMPTY = UidRuns(array(UID_ARRAY), array(UID_ARRAY), 0)
_NO_KEYWORDS: frozenset[str] = frozenset()


# Flag changes of more messages than this are reported by a LazyFlagUpdates.
# UIDs turned into message numbers between looks at the clock (a few ms: one bisection each).
_NUMBERS_PER_LOOK = 8192
LAZY_UPDATES_FROM = 1000


def uid_ranges_without(low: int, high: int, gone: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The UIDs ``low``..``high`` as ascending ranges, less the inclusive ranges ``gone`` (in
    any order, overlapping or not: NOTIFY's MessageNew leaves out two lists of them)."""
    out = []
    for start, end in sorted(gone):
        if end < low or start > high:
            continue
        if start > low:
            out.append((low, start - 1))
        low = max(low, end + 1)
    if low <= high:
        out.append((low, high))
    return out


def fetch_line(msn: int, uid: int, items: bytes, uidonly: bool) -> bytes:
    """``* msn FETCH (items)``; after ENABLE UIDONLY ``* uid UIDFETCH (items)`` (RFC 9586
    section 3.3), whose items need not repeat the UID."""
    if uidonly:
        return b"* %d UIDFETCH (%s)\r\n" % (uid, items)
    return b"* %d FETCH (%s)\r\n" % (msn, items)


def flag_update(msn: int, uid: int, flags: Iterable[str], modseq: int, recent: bool, with_uid: bool,
                condstore: bool, uidonly: bool = False) -> bytes:
    """``* msn FETCH ([UID u ]FLAGS (...)[ MODSEQ (m)])``: another session changed the flags."""
    items = b"FLAGS " + flag_atoms(flags, recent)
    if with_uid and not uidonly:
        items = b"UID %d " % uid + items
    if condstore:
        items += b" MODSEQ (%d)" % modseq
    return fetch_line(msn, uid, items, uidonly)


class LazyFlagUpdates(LazyLines):
    """The FETCH responses of many flag changes (a STORE on a whole folder that sessions in IDLE
    watch), made a part at a time as the session's output is sent, so within the pool's slices:
    reading 50,000 records and formatting their lines in one piece took a quarter of a second per
    session, for each of twenty IDLE sessions in turn, while every other session waited.

    The message numbers are fixed when the changes are read, so that EXPUNGE responses queued
    behind stay consistent with them. The flags are read when a line is made: a message changed
    again since (a MODSEQ above the view's at the catch-up) gets no line here, as one expunged
    meanwhile does not, and the next catch-up reports it. A line must not carry a MODSEQ above an
    expunge the client has not been told of (RFC 7162 section 3.2.10.1).

    A store error while a part is read (StoreBusy, an LMDB error) leaves next_chunk() after
    ``unsent`` was given the UIDs of that part and the rest: the view has caught up past these
    changes, so it is told to send them at its next catch-up (SelectedMailbox.flags_unsent)."""

    __slots__ = ("_store", "_account", "_folder_id", "_numbered", "_recent", "_with_uid", "_condstore",
                 "_uidonly", "_up_to", "_next", "_unsent")

    PART = 512  # messages read and formatted per part (about 20 KiB of output)

    def __init__(self, store: Any, account: str, folder_id: int, numbered: list[tuple[int, int]],
                 recent: frozenset[int], with_uid: bool, condstore: bool, up_to: int,
                 unsent: Callable[[list[int]], None], uidonly: bool = False) -> None:
        self._unsent = unsent
        self._store = store
        self._account = account
        self._folder_id = folder_id
        self._numbered = numbered  # (uid, message number), ascending
        self._recent = recent
        self._with_uid = with_uid
        self._condstore = condstore
        self._uidonly = uidonly
        self._up_to = up_to  # the view's MODSEQ after the catch-up that read these changes
        self._next = 0

    def next_chunk(self) -> bytes | None:
        numbered = self._numbered
        while self._next < len(numbered):
            start = self._next
            part = numbered[start : start + self.PART]
            self._next += self.PART
            try:
                rows = self._store.flag_rows(self._account, self._folder_id, [uid for uid, _msn in part])
            except (NoSuchFolder, NoSuchAccount):
                self._next = len(numbered)  # gone: the next sync says so
                return None
            except MidbError:
                self._next = len(numbered)
                self._unsent([uid for uid, _msn in numbered[start:]])
                raise
            up_to = self._up_to
            found = {uid: (flags, modseq) for uid, flags, modseq in rows if modseq <= up_to}
            lines = []
            for uid, msn in part:
                state = found.get(uid)
                if state is not None:
                    lines.append(flag_update(msn, uid, state[0], state[1], uid in self._recent, self._with_uid,
                                             self._condstore, self._uidonly))
            if lines:
                return b"".join(lines)
        return None


class FlagsShown:
    """The messages whose flags a FETCH showed: those ``contains`` accepts (a test by UID), as
    they were after ``snapshot``, the folder's HIGHESTMODSEQ read before the FETCH read them;
    with CHANGEDSINCE, only those changed after ``changedsince``."""

    __slots__ = ("changedsince", "contains", "snapshot")

    def __init__(self, contains: Callable[[int], bool], snapshot: int, changedsince: int | None) -> None:
        self.contains = contains
        self.snapshot = snapshot
        self.changedsince = changedsince

    def showed(self, uid: int, modseq: int) -> bool:
        """Whether the FETCH showed the state of ``uid`` whose latest change is ``modseq``: a
        change committed before the snapshot was in what it read."""
        if modseq > self.snapshot or (self.changedsince is not None and modseq <= self.changedsince):
            return False
        return self.contains(uid)


class SelectedMailbox:
    def __init__(self, store: Any, account: str, folder: Any, *, readonly: bool, session: Any) -> None:
        self.store = store
        self.account = account
        self.account_id = 0  # the account's id, read by open()
        self.folder_id: int = folder.id
        self.name: str = folder.name
        self.uidvalidity: int = folder.uidvalidity
        self.readonly = readonly
        self.session = session
        self.runs: UidRuns = _EMPTY  # shared with the other sessions viewing the same UIDs
        self.modseq = 0  # the store's HIGHESTMODSEQ this view has caught up with
        self.uid_max = 0  # highest UID announced
        # (NO_UIDS until a first UID: gximap.session.base.with_uids)
        self.recent: UidSet = NO_UIDS
        self.pending_expunge: UidSet = NO_UIDS
        # uid -> MODSEQ of a change the client already knows: this session's own STORE or EXPUNGE,
        # or another's change a STORE response showed (see _only_known_changes)
        self._own_changes: dict[int, int] = {}
        # (floor, last) pairs: this session's APPENDs claimed \Recent for UIDs floor+1..last in
        # their own transaction (Store.append_claiming), so sync need not claim them again.
        self._claims: list[tuple[int, int]] = []
        # RFC 7162 (see gximap.session.condstore): the client has been told every change up to
        # full_modseq; its value at the last HIGHESTMODSEQ report; the highest MODSEQ FETCH
        # responses gave since that report; must the next report be made (EXPUNGE, MOVE)?
        self.full_modseq = 0
        self._reported_full = 0
        self._fetch_modseq = 0
        self.force_highestmodseq = False
        # The keywords the last FLAGS told the client of: those in use then (SELECT, updates).
        self.announced_keywords: frozenset[str] = _NO_KEYWORDS
        # The flags a FETCH just showed (note_flags_shown), for the sync after it.
        self._flags_shown: FlagsShown | None = None
        # UIDs whose flag changes a LazyFlagUpdates did not send (a store error): the next
        # catch-up sends their flags, as it had read those changes (flags_unsent); each of those
        # changes has a MODSEQ above _unsent_since.
        self._unsent_flags: UidSet = NO_UIDS
        self._unsent_since = 0
        # SEARCH/SORT RETURN (UPDATE) results kept live while this view lasts (RFC 5267 section 4).
        self.contexts = SearchContexts()
        # UID ranges this session's own APPEND, COPY, MOVE and REPLACE put here, while NOTIFY asks
        # for MessageNew's FETCH (note_own_arrivals): they get none.
        self._own_arrivals: list[tuple[int, int]] = []
        # UID ranges whose MessageNew attributes went out with a live search's UPDATE (...)
        # FETCH (note_fetched_on_entry): MessageNew's own FETCH leaves them out.
        self._fetched_on_entry: list[tuple[int, int]] = []

    @property
    def condstore(self) -> bool:
        """The connection is CONDSTORE-aware: FETCH responses carry UID and MODSEQ. Awareness
        belongs to the connection (RFC 7162 section 3.1), so it lives in ``session.enabled``;
        handlers enable it with ``gximap.session.condstore.enable`` (which also announces the
        HIGHESTMODSEQ); setting True here is kept for callers that only need the flag."""
        enabled = self.session.enabled
        return "CONDSTORE" in enabled or "QRESYNC" in enabled

    # -- FLAGS ---------------------------------------------------------------------------------

    def flags_lines(self, keywords: Iterable[str]) -> list[bytes]:
        """``* FLAGS`` and ``* OK [PERMANENTFLAGS]`` for the system flags and ``keywords``, which
        become the announced ones. A read-only view has no PERMANENTFLAGS to add to after SELECT."""
        # (the one empty frozenset when there are none: frozenset(()) makes a new one)
        self.announced_keywords = frozenset(keywords) or _NO_KEYWORDS
        flags = [*SYSTEM_FLAGS, *sorted(self.announced_keywords)]
        session = self.session
        if self.readonly:
            permanent, text = b"()", Code.INFO_NO_PERMANENTFLAGS
        else:
            permanent, text = encode.flag_list([*flags, "\\*"]), Code.INFO_PERMANENTFLAGS
        return [b"* FLAGS " + encode.flag_list(flags) + b"\r\n",
                b"* OK [PERMANENTFLAGS " + permanent + b"] " + session.text(text) + b"\r\n"]

    def keywords_update(self) -> list[bytes]:
        """New ``* FLAGS`` (RFC 3501 7.2.6) when the folder's messages carry keywords the client
        was not told of, by the store's keyword index (a few keys). The list is the keywords in
        use then, as at SELECT: one no longer used leaves it with the next update. (Dovecot keeps
        them; a client cycling through new keywords would then have every session of the folder
        sent an ever longer list with each, the square of their number in all: 58 MB for 3,000
        to one IDLE session.)"""
        return self._keywords_update_for(self.store.keywords(self.account, self.folder_id))

    def _all_announced(self, flags: Iterable[str]) -> bool:
        """Are ``flags`` all system flags or keywords the last FLAGS told the client of?"""
        announced = self.announced_keywords
        return all(flag in announced or flag.startswith("\\") for flag in flags)

    def _keywords_update_for(self, in_use: Collection[str]) -> list[bytes]:
        """keywords_update with the keywords in use (Store.keywords) read already."""
        if self.announced_keywords.issuperset(in_use):
            return []
        lines = self.flags_lines(in_use)
        return lines[:1] if self.readonly else lines

    # -- opening -------------------------------------------------------------------------------

    def open(self) -> Any:
        """Load the view; return the FolderInfo read at the same time."""
        store = self.store
        self.account_id = store.account_id(self.account)
        folder = store.folder_by_id(self.account, self.folder_id)
        if folder is None:
            raise NoSuchFolder(self.name)
        uids = SHARED_VIEWS.for_state(store, self.account, folder)
        if uids is None:
            # Folder record and keys from one transaction: the list is exactly that state's.
            folder, listed = store.folder_uids(self.account, self.folder_id)
            uids = SHARED_VIEWS.remember_state(store, self.account, folder, UidRuns.from_sorted(listed))
        self.runs = uids
        self.modseq = self.full_modseq = self._reported_full = folder.highestmodseq
        self.uid_max = uids[-1] if uids else 0
        if self.readonly:
            floor = folder.recent_floor
        else:
            floor, claimed = store.claim_recent_range(self.account, self.folder_id)
            # A message committed since the folder was read is claimed too: \Recent here once
            # the next sync brings it, not to no session at all (RFC 3501 2.3.2).
            self.note_claim(max(floor, self.uid_max), claimed)
        if floor < self.uid_max:
            self.recent = set(uids.slice_list(uids.bisect_left(floor + 1), len(uids)))
        # Changes committed after the folder was read are caught by the next sync.
        return folder

    # -- numbers -------------------------------------------------------------------------------

    @property
    def uids(self) -> array:
        """The view's UIDs as a flat array, for callers that index or bisect it (SEARCH, SORT,
        EXPUNGE). Built on first use from the shared runs and kept with them, so it is shared
        too; sessions that never ask (IDLE) never pay 4 bytes per message for it."""
        return self.runs.as_array()

    @property
    def exists(self) -> int:
        return len(self.runs)

    def uid_at(self, msn: int) -> int:
        return self.runs[msn - 1]

    def msn_of(self, uid: int) -> int | None:
        position = self.runs.position(uid)
        return None if position is None else position + 1

    def message_numbers(self, uids: Sequence[int]) -> Sequence[int]:
        """Message numbers of ascending UIDs that are all in the view: a range when they are a
        contiguous stretch of it (SEARCH ALL), else one bisection of the flat array each."""
        return run_unsliced(self.message_numbers_sliced(uids, None))

    def message_numbers_sliced(self, uids: Sequence[int],
                               slicer: TimeSlice | None) -> Generator[Pause, Any, Sequence[int]]:
        """message_numbers, with PAUSE between pieces when ``slicer``'s time is up: the
        bisections of 100,000 UIDs (SEARCH UNSEEN) take about 70 ms."""
        stretch = self.runs.stretch(uids, base=1)
        if stretch is not None:
            return stretch
        flat = self.uids
        left = bisect.bisect_left
        numbers: list[int] = []
        for start in range(0, len(uids), _NUMBERS_PER_LOOK):
            yield from pause_if_over(slicer)
            numbers.extend([left(flat, uid) + 1 for uid in uids[start:start + _NUMBERS_PER_LOOK]])
        return numbers

    def resolve(self, seqset: SequenceSet, uid: bool) -> list[int]:
        """The UIDs of the view named by a sequence set, ascending. ``$`` must be substituted."""
        runs = self.runs
        out: list[int] = []
        for start, stop in set_positions(runs, seqset, uid):
            out.extend(runs.slice_list(start, stop))
        return out

    def resolve_page(self, seqset: SequenceSet, uid: bool, partial: PartialRange) -> list[int]:
        """``partial.select(self.resolve(seqset, uid))`` without listing the set: see page_of_set."""
        return page_of_set(self.runs, seqset, uid, partial)

    def valid_msn_set(self, seqset: SequenceSet) -> bool:
        """RFC 9051 section 6.4.5: message numbers beyond the count are an error (BAD)."""
        return seqset.highest(len(self.runs)) <= len(self.runs) or not self.runs and seqset.uses_star()

    # -- updates -------------------------------------------------------------------------------

    def note_own_changes(self, metas: Iterable[Any]) -> None:
        """This session's STORE already reported these flag changes (or was .SILENT). Live
        searches look at the messages again all the same (gximap.session.searchcontext)."""
        own = self._own_changes
        contexts = self.contexts
        if contexts.live:
            metas = list(metas)
            contexts.note_changed(meta.uid for meta in metas)
        for meta in metas:
            own[meta.uid] = meta.modseq

    def knows_change(self, uid: int, modseq: int) -> bool:
        """Has the client been told of the change that gave message ``uid`` this MODSEQ (or made
        it itself)? Not when it is newer than this view's last sync and not this session's."""
        return modseq <= self.modseq or self._own_changes.get(uid) == modseq

    def note_own_changes_of(self, changes: Iterable[tuple[int, int]]) -> None:
        """(uid, MODSEQ) pairs of changes this session reports itself: its EXPUNGE's tombstones."""
        self._own_changes.update(changes)

    def _only_known_changes(self, highestmodseq: int) -> bool:
        """True, having caught up, when every MODSEQ after ours up to ``highestmodseq`` is a change
        the client was told of already (_own_changes): the usual case after this session's own
        STORE, which then costs no read of the changes. Each MODSEQ belongs to one change of one
        message, so a foreign change, an APPEND or an EXPUNGE in the range leaves a number that no
        known change holds, and the changes are read as usual."""
        own = self._own_changes
        gap = highestmodseq - self.modseq
        if len(own) < gap:
            return False
        newer = {uid: modseq for uid, modseq in own.items() if modseq > self.modseq}
        if len(set(newer.values())) != gap or max(newer.values()) != highestmodseq:
            return False
        for uid in newer:
            del own[uid]
        self.modseq = highestmodseq
        return True

    def flags_unsent(self, uids: Iterable[int], since: int) -> None:
        """A LazyFlagUpdates of this view met a store error: the flag changes of ``uids`` (each
        with a MODSEQ above ``since``) were not sent, though the view's MODSEQ is past them. The
        next catch-up sends them; until then the client has been told every change up to
        ``since`` at most (full_modseq: what a CLOSE may give, highestmodseq_at_close)."""
        self._unsent_since = min(self._unsent_since, since) if self._unsent_flags else since
        self._unsent_flags = with_uids(self._unsent_flags, uids)
        if since < self.full_modseq:
            self.full_modseq = since

    def note_flags_shown(self, shown: FlagsShown) -> None:
        """A FETCH showed the flags of messages, as read after ``shown.snapshot``: the sync after
        it leaves out the changes it showed, which the client would otherwise get twice (a
        resynchronising ``UID FETCH 1:* (FLAGS)`` after another session changed every message
        was answered with each message twice)."""
        self._flags_shown = shown

    def note_fetch_modseq(self, modseq: int) -> None:
        """A FETCH response told the client this MODSEQ."""
        if modseq > self._fetch_modseq:
            self._fetch_modseq = modseq

    def highestmodseq_report(self) -> int | None:
        """The HIGHESTMODSEQ a QRESYNC client must be told after the latest sync, or None.

        A MODSEQ above ``full_modseq`` given in a FETCH response would let the client skip, on
        its next resynchronisation, the changes below it not reported yet: expunges held back
        (RFC 3501 section 7.4.1), or changes committed after the catch-up when no catch-up
        followed the FETCH (NOTIFY's MessageNew FETCH): it is told the lower, safe value (RFC
        7162 section 3.2.10 with erratum 1810). Otherwise, while no expunge is held back, it is
        told a new HIGHESTMODSEQ no MODSEQ conveyed (after VANISHED, EXISTS or an own expunge),
        and always when ``force_highestmodseq`` asks for it."""
        report = None
        if self._fetch_modseq > self.full_modseq:
            report = self.full_modseq
        elif not self.pending_expunge and (
                self.force_highestmodseq or (self.modseq > self._reported_full and self.modseq > self._fetch_modseq)):
            report = self.modseq
        self._reported_full = self.full_modseq
        self._fetch_modseq = 0
        self.force_highestmodseq = False
        return report

    def highestmodseq_at_close(self) -> int:
        """The HIGHESTMODSEQ for the tagged OK of a CLOSE that expunged (its tombstones noted
        with note_own_changes_of; RFC 7162 section 3.2.8). CLOSE sends no untagged responses, so
        the store's HIGHESTMODSEQ is given only when every change up to it is one the client
        knows (its own, the CLOSE's expunges among them) and no flag change a store error kept
        back is owed (flags_unsent); else the last value it was told everything up to
        (``full_modseq``): lower, but a QRESYNC from it misses nothing."""
        if not self.pending_expunge and not self._unsent_flags:
            highestmodseq = self.store.highestmodseq(self.account_id, self.folder_id)
            if highestmodseq is not None and self._only_known_changes(highestmodseq):
                return self.modseq
        return self.full_modseq

    def remove_expunged(self, uids: Iterable[int]) -> list[int]:
        """Drop UIDs from the view; return their message numbers, highest first (safe to send
        in that order as EXPUNGE responses)."""
        gone = set(uids)
        if not gone:
            return []
        remaining, positions = self.runs.without(gone)
        if positions:
            self.runs = SHARED_VIEWS.intern(remaining)
        self.recent = without_uids(self.recent, gone)
        self.pending_expunge = without_uids(self.pending_expunge, gone)
        return [position + 1 for position in reversed(positions)]

    def expunge_responses(self, uids: Iterable[int]) -> list[bytes]:
        """EXPUNGE responses for ``uids`` leaving the view; VANISHED with QRESYNC (RFC 7162
        section 3.2.10) and with UIDONLY (RFC 9586 section 3), which sends no message number."""
        vanished = self.session.qresync_enabled or self.session.uidonly
        if not vanished and not self.contexts.live:
            return [b"* %d EXPUNGE\r\n" % number for number in self.remove_expunged(uids)]
        gone = [uid for uid in sorted(set(uids)) if self.msn_of(uid) is not None]
        # Live searches' REMOVEFROM first, while the message numbers are still valid (RFC 5267
        # section 4.3.4).
        removals = self.contexts.removal_lines(self, gone)
        if vanished:
            self.remove_expunged(gone)
            return [*removals, b"* VANISHED " + encode.sequence_set(gone) + b"\r\n"] if gone else removals
        return [*removals, *(b"* %d EXPUNGE\r\n" % number for number in self.remove_expunged(gone))]

    def note_own_arrivals(self, uids: Iterable[int]) -> None:
        """This session's command put messages with ``uids`` into this mailbox: NOTIFY's
        MessageNew sends no FETCH for them (RFC 5465 section 5.2). Kept only while that FETCH is
        asked for, and until take_own_arrivals(), after the update that announces them."""
        state = self.session.notify
        if state is None or not state.message_new_items:
            return
        arrivals = self._own_arrivals
        for uid in sorted(uids):
            if arrivals and arrivals[-1][1] + 1 == uid:
                arrivals[-1] = (arrivals[-1][0], uid)
            else:
                arrivals.append((uid, uid))

    def take_own_arrivals(self) -> list[tuple[int, int]]:
        """The ranges note_own_arrivals() kept that the view has announced (those above
        ``uid_max``, not announced yet, stay: a catch-up that failed)."""
        arrivals = self._own_arrivals
        if not arrivals:
            return arrivals
        top = self.uid_max
        self._own_arrivals = [(max(low, top + 1), high) for low, high in arrivals if high > top]
        return [(low, min(high, top)) for low, high in arrivals if low <= top]

    def is_own_arrival(self, uid: int) -> bool:
        """Whether note_own_arrivals() keeps ``uid`` (one this session put here), not taken yet."""
        return any(low <= uid <= high for low, high in self._own_arrivals)

    def note_fetched_on_entry(self, ranges: Iterable[tuple[int, int]]) -> None:
        """The FETCH of the messages that arrived into live searches had NOTIFY MessageNew's
        attributes too for these UID ranges (RFC 5465 section 5.2: combined into one FETCH):
        take_fetched_on_entry() hands them to MessageNew's FETCH, which leaves them out."""
        self._fetched_on_entry.extend(ranges)

    def take_fetched_on_entry(self) -> list[tuple[int, int]]:
        fetched, self._fetched_on_entry = self._fetched_on_entry, []
        return fetched

    def note_claim(self, floor: int, last: int) -> None:
        """This session's APPEND claimed \\Recent for the UIDs floor+1..last (Store.append_claiming)."""
        if last > floor:
            self._claims.append((floor, last))

    def _recent_of_new(self, new: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """(the newly seen UIDs, sorted, that are \\Recent in this view; the claims of
        note_claim to keep after them). A read-only view has those above the folder's recent
        floor. A read-write one claims them: in the ranges its own APPENDs claimed, and, for any
        beyond those, with a claim_recent_range transaction. The view itself is left as it is
        (sync applies the answer), so that a store error here changes nothing."""
        if self.readonly:
            # RFC 3501 2.3.2: the first session told of a message sees \\Recent, read-only or not;
            # only a read-write one takes it from the sessions after it.
            floor = self.store.recent_floor(self.account, self.folder_id)
            return new[bisect.bisect_right(new, floor):], self._claims
        claims = self._claims
        recent: list[int] = []
        kept: list[tuple[int, int]] = []
        claimed_up_to = max((last for _floor, last in claims), default=0)
        if new[-1] > claimed_up_to:
            floor, claimed = self.store.claim_recent_range(self.account, self.folder_id)
            above = max(floor, claimed_up_to)
            recent.extend(new[bisect.bisect_right(new, above):])
            if claimed > max(above, new[-1]):   # committed since ``new`` was read (note_claim)
                kept.append((max(above, new[-1]), claimed))
        for floor, last in claims:
            recent.extend(uid for uid in new if floor < uid <= last)
        return recent, kept

    def _numbers_if_present(self, changes: list[tuple[int, int]]) -> list[int | None]:
        """The message numbers of the UIDs of ``changes``, None for one not in the view (by the
        runs: the flat UID array is not built for a session in IDLE)."""
        uids = [uid for uid, _modseq in changes]
        stretch = self.runs.stretch(uids)  # a contiguous stretch of the view (STORE 1:*)?
        if stretch is not None and self.runs.slice_list(stretch.start, stretch.stop) == uids:
            return list(range(stretch.start + 1, stretch.stop + 1))
        position_of = self.runs.position
        return [None if (position := position_of(uid)) is None else position + 1 for uid in uids]

    def sync(self, *, allow_expunge: bool) -> list[bytes | LazyLines]:
        """Untagged responses that bring the client up to date with the store; the FETCH
        responses of many flag changes come as one LazyFlagUpdates, made as they are sent.

        A store error (midb.errors.MidbError) leaves the view as it was, so that the next sync
        reports all of this: every read of the store, and its one write (a \\Recent claim),
        comes before the view changes.

        Live searches (``contexts``) only note here what they are to look at again: the session
        has them do so after these lines, in slices (``contexts.update_lines_sliced``)."""
        shown = self._flags_shown   # the FETCH's, for this sync only (_catch_up)
        out = self._catch_up(shown, allow_expunge=allow_expunge)
        self._flags_shown = None
        return out

    def _catch_up(self, shown: FlagsShown | None, *, allow_expunge: bool) -> list[bytes | LazyLines]:
        store = self.store
        # HIGHESTMODSEQ is read before the changes: a change committed in between is reported
        # now and perhaps once more next time, never skipped. Every command ends here, so the
        # check reads one record by the ids kept since SELECT (no name lookups, no FolderInfo).
        highestmodseq = store.highestmodseq(self.account_id, self.folder_id)
        if highestmodseq is None:
            raise NoSuchFolder(self.name)
        if not (allow_expunge and self.pending_expunge) and not self._unsent_flags:  # maybe nothing to do
            if highestmodseq <= self.modseq:
                return []
            if self._only_known_changes(highestmodseq):
                if not self.pending_expunge:
                    self.full_modseq = self.modseq
                return []
        changed, new, vanished, top_modseq, unread = store.view_changes_since(
            self.account, self.folder_id, self.modseq, self.uid_max, read_at_most=LAZY_UPDATES_FROM)
        # The rest of the store's part comes before the view changes: the keywords in use when a
        # FLAGS may be due (below: new messages, many changes, a keyword not announced; read for
        # nothing when the changes that called for it are left out), the new messages' \\Recent.
        in_use: list[str] | None = None
        if new or unread or not all(self._all_announced(meta.flags) for meta in changed):
            in_use = store.keywords(self.account, self.folder_id)
        recent_new, claims = self._recent_of_new(new) if new else ([], self._claims)
        if self.contexts.live:   # what live searches look at again (gximap.session.searchcontext)
            self.contexts.note_changed(meta.uid for meta in changed)
            self.contexts.note_changed(uid for uid, _modseq in unread)
            self.contexts.note_arrived(new)
        out: list[bytes | LazyLines] = []
        # Tombstones pruned past self.modseq (a session that slept through a bulk change):
        # every message the view holds is looked for instead (midb.tombstones).
        held_gone: list[int] = []
        for uid in vanished.held_gone(self.runs):
            if uid <= self.uid_max and self.msn_of(uid) is not None:
                held_gone.append(uid)
            self._own_changes.pop(uid, None)
        if held_gone:
            self.pending_expunge = with_uids(self.pending_expunge, held_gone)
        if allow_expunge and self.pending_expunge:
            out.extend(self.expunge_responses(sorted(self.pending_expunge)))
        updates: list[Any] = []
        since = self.modseq   # (the changes read are above it)
        top_modseq = max(top_modseq, since)
        own_changes = self._own_changes
        for meta in changed:
            if own_changes.get(meta.uid) == meta.modseq:
                del own_changes[meta.uid]
            elif shown is not None and shown.showed(meta.uid, meta.modseq):
                continue
            elif meta.uid not in self.pending_expunge and self.msn_of(meta.uid) is not None:
                updates.append(meta)
        unread_updates: list[tuple[int, int]] = []  # (uid, modseq), when ``unread`` replaces ``changed``
        for uid, modseq in unread:
            if own_changes.get(uid) == modseq:
                del own_changes[uid]
            elif shown is not None and shown.showed(uid, modseq):
                continue
            elif uid not in self.pending_expunge:
                unread_updates.append((uid, modseq))
        if highestmodseq > top_modseq:
            top_modseq = highestmodseq
        if top_modseq > self.modseq:
            self.modseq = top_modseq
        if self._unsent_flags:
            # Changes read by an earlier catch-up whose lines a store error kept back: sent with
            # those read now, once each. Their MODSEQ is read with their flags; the view's, their
            # bound, is what note_fetch_modseq hears (at worst, a HIGHESTMODSEQ left untold).
            sending = {uid for uid, _modseq in unread_updates}
            sending.update(meta.uid for meta in updates)
            unread_updates.extend((uid, self.modseq) for uid in self._unsent_flags
                                  if uid not in sending and uid not in self.pending_expunge)
            unread_updates.sort()
            self._unsent_flags = NO_UIDS
            since = min(since, self._unsent_since)
        if self._own_changes:
            # Every change up to self.modseq has now been read. A known change at or below it that
            # the read did not consume was overtaken by a later change of the same message (another
            # session's, between this session's write and its sync): it can never match again.
            self._own_changes = {uid: modseq for uid, modseq in self._own_changes.items()
                                 if modseq > self.modseq}
        if in_use is not None and (new or unread_updates or (
                updates and not self._all_announced(flag for meta in updates for flag in meta.flags))):
            out.extend(self._keywords_update_for(in_use))
        if new:
            self.runs = SHARED_VIEWS.intern(self.runs.appended(new))
            self.uid_max = new[-1]
            self.recent = with_uids(self.recent, recent_new)
            self._claims = claims
            out.append(b"* %d EXISTS\r\n" % len(self.runs))
            if not self.session.rev2:
                out.append(b"* %d RECENT\r\n" % len(self.recent))
        condstore = self.condstore
        notify = self.session.notify   # (RFC 5465 section 5.1: FlagChange's FETCH has the UID)
        with_uid = condstore or self.session.rev2 or (notify is not None and notify.flags_with_uid)
        uidonly = self.session.uidonly
        recent = self.recent if not self.session.rev2 else frozenset()
        for meta in updates:
            msn = self.msn_of(meta.uid)
            if msn is None:
                continue
            if condstore:
                self.note_fetch_modseq(meta.modseq)
            out.append(flag_update(msn, meta.uid, meta.flags, meta.modseq, meta.uid in recent, with_uid, condstore,
                                   uidonly))
        if unread_updates:
            numbered = []
            highest = 0
            for (uid, modseq), msn in zip(unread_updates, self._numbers_if_present(unread_updates), strict=True):
                if msn is not None:
                    numbered.append((uid, msn))
                    highest = max(highest, modseq)
            if condstore and numbered:
                self.note_fetch_modseq(highest)
            recent_updated = frozenset(uid for uid, _msn in numbered if uid in recent) if recent else frozenset()
            out.append(LazyFlagUpdates(self.store, self.account, self.folder_id, numbered, recent_updated, with_uid,
                                       condstore, self.modseq, functools.partial(self.flags_unsent, since=since),
                                       uidonly))
        if not self.pending_expunge:
            self.full_modseq = self.modseq
        return out
