"""Live search results: SEARCH and SORT RETURN (UPDATE ...), CONTEXT=SEARCH and CONTEXT=SORT
(RFC 5267 section 4).

A SEARCH or SORT with the UPDATE return option leaves a context behind, named by the command's
tag, that lives while the mailbox stays selected (it belongs to the SelectedMailbox, so SELECT,
EXAMINE, CLOSE, UNSELECT and UNAUTHENTICATE end it with the view) or until CANCELUPDATE names
it (section 4.3.5). Whenever the view catches up with the store (the sync after every command, in
IDLE, NOTIFY's pushes: SelectedMailbox.sync) the messages that arrived, and for a search program
that reads flags or MODSEQ those whose flags changed, are searched again, those alone: a message
that enters the result is sent as ``* ESEARCH (TAG "t") [UID] ADDTO (pos set)``, one that leaves
as ``REMOVEFROM (pos set)``. An expunged member is removed when the view removes it, in a
REMOVEFROM sent before the EXPUNGE or VANISHED (section 4.3.4: its message number is still
valid then); an ADDTO of arrived messages comes after EXISTS (section 4.3.3).

The search again runs in slices, as a SEARCH does (:meth:`SearchContexts.update_lines_sliced`: a
PAUSE once a slice is over, an Await for a search slot), so that a large delivery and a live
``BODY`` search do not hold a worker for the whole of it. The session runs it right after the
catch-up's other lines, as work of its own that nothing else overtakes: before the command's
tagged answer, or, in IDLE or a NOTIFY push, before IDLE reads the client's DONE
(gximap.session.session ``ImapSession._recheck_live_searches``). No other catch-up runs in the
meantime, so the view, and with it the message numbers the lines give, stays as the catch-up
left it. A new SORT context's keys are read and ordered in the slices of the SORT command that
makes it (:func:`start_sliced`), as the SORT's own values are.

Positions (section 4.3.2): a SEARCH context sends position 0 and its set in mailbox order
(section 4.3.3 allows 0 for SEARCH, and recommends mailbox order); a SORT context sends each
message's position in sort order, as section 4.3.3's examples do, a run of adjacent positions
as one pair. Additions are listed at their final positions, lowest first, so that a client
inserting them in turn ends with the server's order; removals at their positions before any
removal, highest first, so that each position is still right when the client applies it.

What the search program means is fixed when the command runs: message-number sets, ``$`` and
``*`` in UID sets are turned into the UIDs they named then (RFC 5267 section 4.3 evaluates the
program "as if it were reissued", which for a message-number set would make expunges move the
set; gximap keeps the messages the client named). OLDER/YOUNGER are evaluated when a message is
looked at again, not as time passes. UPDATE has no interaction with the other return options
(section 4.3): only ADDTO and REMOVEFROM are sent, never a new MIN, MAX, COUNT or PARTIAL.

Fetch attributes (RFC 5465 section 7, NOTIFY being advertised): ``RETURN (UPDATE (fetch-att
...))`` asks for them for each message that arrives into the result, a new message of the
mailbox; one that enters by a flag or MODSEQ change gets none ("No untagged FETCH response
SHOULD be returned if a message becomes a member of UPDATE SEARCH due to flag or annotation
changes"). The re-check hands them back with its lines (:class:`Updates`): the session fetches
them (their .PEEK forms: an unsolicited response never sets \\Seen), after the EXISTS and before
the ESEARCH, as section 7 orders ("the EXISTS response MUST precede any FETCH responses, and
together they MUST precede the ESEARCH response"), combined with NOTIFY's MessageNew attributes
for a message both ask for (ImapSession._fetch_entering).

Bounds: MAX_CONTEXTS live contexts per session and MAX_MEMBERS results among them, counted when a
context is made (the first context is always kept: section 4.3.1 asks for at least one); beyond
either the search is answered as usual and an untagged ``NO [NOUPDATE "t"]`` says that it will
not be updated. A SEARCH
context keeps its result as a UID array (4 bytes a message); a SORT context also keeps each
member's sort key (its values under the sort criteria, which never change for a message), so
that a position is one bisection.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Generator, Iterable, Sequence
from typing import Any, NamedTuple

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.session import searching, sorting
from gximap.session.base import (
    NO_UIDS,
    Await,
    CommandFailed,
    Pause,
    TimeSlice,
    UidSet,
    collector_paused_in,
    pause_if_over,
    run_unsliced,
    with_uids,
    without_uids,
)

# RFC 5267 section 4.3.1: at least one; a webmail with a few live views per connection fits.
MAX_CONTEXTS = 5
# Members of the results of a session's contexts together, checked when one is made: about
# 1 MB of UIDs for SEARCH contexts, some 20 MB of sort keys at most for SORT contexts.
MAX_MEMBERS = 200_000

_UID_ARRAY = next(code for code in "IL" if array(code).itemsize == 4)

# Up to this many members enter or leave a result one at a time (a bisection and a move of the
# members after it each); more at once (a large delivery, a bulk flag change) are merged in or
# filtered out in one pass.
_ONE_BY_ONE = 8


class _Descending:
    """A sort value compared the other way round (a REVERSE criterion)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)

    def __gt__(self, other: _Descending) -> bool:
        return bool(other.value > self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and bool(self.value == other.value)

    def __hash__(self) -> int:
        return hash(self.value)


def sort_key(values: Sequence[Any], criteria: Sequence[cmds.SortCriterion], uid: int) -> tuple[Any, ...]:
    """A message's place in a SORT: its values (REVERSE ones turned round), then its UID, so
    that equal messages keep message-number order whatever REVERSE says (RFC 5256)."""
    parts: list[Any] = [_Descending(value) if criterion.reverse else value
                        for value, criterion in zip(values, criteria, strict=True)]
    parts.append(uid)
    return tuple(parts)


def depends_on_changes(key: cmds.SearchKey) -> bool:
    """Whether a message's result can change after it arrived: flags (keywords too) and MODSEQ
    change; the headers, body, size, dates and object ids of a message never do."""
    return any(isinstance(node, cmds.SearchFlag | cmds.SearchModSeq) for node in cmds.search_nodes(key))


def uid_runs(uids: Iterable[int]) -> list[tuple[int, int]]:
    """The UIDs (ascending) as (first, last) runs."""
    ranges: list[tuple[int, int]] = []
    start = previous = -2
    for uid in uids:
        if uid != previous + 1:
            if previous >= 0:
                ranges.append((start, previous))
            start = uid
        previous = uid
    if previous >= 0:
        ranges.append((start, previous))
    return ranges


def uid_set(uids: Iterable[int]) -> cmds.SequenceSet:
    """The UIDs (ascending) as a UID sequence set of ranges."""
    return cmds.SequenceSet(tuple(uid_runs(uids)))


def fixed_criteria(session: Any, key: cmds.SearchKey) -> cmds.SearchKey:
    """``key`` with every set that would mean other messages later (message numbers, ``$``,
    ``*``) replaced by the UIDs it names now."""
    view = session.selected
    if isinstance(key, cmds.SearchSequence):
        seqset = key.seqset
        if seqset.saved or not key.uid:
            # (BAD for message numbers beyond the count, as the search itself answers)
            return cmds.SearchSequence(uid_set(searching.resolve_uids(session, seqset, key.uid)), uid=True)
        if seqset.uses_star():
            highest = view.uids[-1] if len(view.uids) else 0
            ranges = seqset.resolve(highest, clip=False) if highest else []
            return cmds.SearchSequence(cmds.SequenceSet(tuple(ranges)), uid=True)
        return key
    if isinstance(key, cmds.SearchAnd):
        return cmds.SearchAnd(tuple(fixed_criteria(session, child) for child in key.keys))
    if isinstance(key, cmds.SearchOr):
        return cmds.SearchOr(tuple(fixed_criteria(session, child) for child in key.keys))
    if isinstance(key, cmds.SearchNot):
        return cmds.SearchNot(fixed_criteria(session, key.key))
    return key


class LiveSearch:
    """One context: the tag that names it, its search program, and its result (ascending UIDs;
    for SORT also each member's sort key, and the keys in sort order); ``fetch_atts``: what
    UPDATE asked to fetch of the messages that arrive into it (.PEEK forms; RFC 5465 section 7)."""

    __slots__ = ("tag", "uid", "criteria", "sort", "fetch_atts", "flag_dependent", "members", "keys", "ordered")

    def __init__(self, tag: bytes, uid: bool, criteria: cmds.SearchKey, members: Sequence[int],
                 sort: tuple[cmds.SortCriterion, ...] | None = None,
                 keys: dict[int, tuple[Any, ...]] | None = None,
                 fetch_atts: tuple[cmds.FetchAtt, ...] = (), *,
                 ordered: list[tuple[Any, ...]] | None = None) -> None:
        self.tag = tag
        self.uid = uid
        self.criteria = criteria
        self.sort = sort
        self.fetch_atts = cmds.peek_forms(fetch_atts)
        self.flag_dependent = depends_on_changes(criteria)
        self.members = array(_UID_ARRAY, members)
        self.keys = keys   # SORT: UID -> sort_key
        # ``ordered``: the keys in sort order already (start_sliced sorts them in slices)
        self.ordered: list[tuple[Any, ...]] = ordered if ordered is not None \
            else sorted(keys.values()) if keys is not None else []

    def __len__(self) -> int:
        return len(self.members)

    def contains(self, uid: int) -> bool:
        members = self.members
        index = bisect.bisect_left(members, uid)
        return index < len(members) and members[index] == uid

    def remove(self, gone: Iterable[int]) -> list[tuple[int, int]]:
        """Drop the members ``gone``; (position, UID) of each, positions as they were before
        (0 for a SEARCH context), in the order REMOVEFROM lists them (module docstring)."""
        leaving = sorted(uid for uid in set(gone) if self.contains(uid))
        if not leaving:
            return []
        dropped = set(leaving)
        self.members = array(_UID_ARRAY, (uid for uid in self.members if uid not in dropped)) \
            if len(leaving) > _ONE_BY_ONE else self._without_each(leaving)
        if self.keys is None:
            return [(0, uid) for uid in leaving]
        positions = []
        for uid in leaving:
            key = self.keys.pop(uid)
            positions.append((bisect.bisect_left(self.ordered, key), uid))
        positions.sort(reverse=True)
        for index, _uid in positions:   # highest first: each index is still right
            del self.ordered[index]
        return [(index + 1, uid) for index, uid in positions]

    def _without_each(self, leaving: list[int]) -> array:
        members = self.members
        for uid in leaving:
            del members[bisect.bisect_left(members, uid)]
        return members

    def add(self, arriving: Iterable[int], keys: dict[int, tuple[Any, ...]] | None) -> list[tuple[int, int]]:
        """Add the messages ``arriving`` (not members); (position, UID) of each in the order
        ADDTO lists them: final positions, lowest first (0 for a SEARCH context)."""
        entering = sorted(uid for uid in set(arriving) if not self.contains(uid))
        if self.keys is not None:
            assert keys is not None
            entering = [uid for uid in entering if uid in keys]  # a message whose body is gone is left out
        if not entering:
            return []
        many = len(entering) > _ONE_BY_ONE
        if many:
            self.members = array(_UID_ARRAY, sorted((*self.members, *entering)))
        else:
            for uid in entering:
                bisect.insort(self.members, uid)
        if self.keys is None or keys is None:
            return [(0, uid) for uid in entering]
        for uid in entering:
            self.keys[uid] = keys[uid]
        if many:
            self.ordered = sorted((*self.ordered, *(keys[uid] for uid in entering)))
        else:
            for uid in entering:
                bisect.insort(self.ordered, keys[uid])
        placed = sorted((bisect.bisect_left(self.ordered, keys[uid]) + 1, uid) for uid in entering)
        return placed


def _pairs(placed: list[tuple[int, int]], number: Any, descending: bool) -> bytes:
    """``pos set pos set ...`` for (position, UID) items as LiveSearch.add or remove gives them.
    ``number`` turns a UID into what the context reports (itself, or its message number). All
    of a SEARCH context's go in one pair at position 0, in mailbox order; a SORT context's
    adjacent positions share one pair, in sort order: ascending additions extend a pair at its
    end, descending removals at its start."""
    from gximap.session.commands.sort import ordered_sequence_set  # (the commands import this module's users)

    if placed[0][0] == 0:
        return b"0 " + encode.sequence_set(sorted(number(uid) for _position, uid in placed))
    groups: list[tuple[int, list[int]]] = []
    for position, uid in placed:
        if groups and not descending and groups[-1][0] + len(groups[-1][1]) == position:
            groups[-1][1].append(number(uid))
        elif groups and descending and groups[-1][0] - 1 == position:
            groups[-1] = (position, [number(uid), *groups[-1][1]])
        else:
            groups.append((position, [number(uid)]))
    # Each set keeps the order given: only ascending runs become ranges (RFC 5267 section 3.2).
    return b" ".join(b"%d %s" % (position, run_unsliced(ordered_sequence_set(items, None)))
                     for position, items in groups)


class Updates(NamedTuple):
    """What a re-check of the live searches has to say: ``fetches``, the messages that arrived
    into results whose UPDATE asked for fetch attributes, as (attributes, ascending UIDs) groups,
    the group of the lowest UID first (a message in several such results: their attributes
    together); then ``lines``, the ADDTO and REMOVEFROM responses."""

    fetches: list[tuple[tuple[cmds.FetchAtt, ...], list[int]]]
    lines: list[bytes]


class SearchContexts:
    """The live contexts of one selected mailbox, and the messages to look at again at the next
    catch-up (``arrived``: new to the view; ``changed``: flags or MODSEQ changed)."""

    def __init__(self) -> None:
        self.live: dict[bytes, LiveSearch] = {}
        # (NO_UIDS until a live search notes a first UID: gximap.session.base.with_uids)
        self.arrived: UidSet = NO_UIDS
        self.changed: UidSet = NO_UIDS
        # The last re-check met a store error (logged then: not again until one succeeds).
        self.failing = False

    def __bool__(self) -> bool:
        return bool(self.live)

    def __contains__(self, tag: bytes) -> bool:
        return tag in self.live

    def room_for(self, members: int) -> bool:
        """May a context of ``members`` results be added (MAX_CONTEXTS, MAX_MEMBERS)? The first
        always may: RFC 5267 section 4.3.1 asks for at least one per client."""
        held = sum(len(context) for context in self.live.values())
        return not self.live or (len(self.live) < MAX_CONTEXTS and held + members <= MAX_MEMBERS)

    def add(self, context: LiveSearch) -> None:
        self.live[context.tag] = context

    def cancel(self, tags: Iterable[bytes]) -> None:
        for tag in tags:
            self.live.pop(tag, None)
        if not self.live:
            self.arrived = self.changed = NO_UIDS

    def note_changed(self, uids: Iterable[int]) -> None:
        if self.live:
            self.changed = with_uids(self.changed, uids)

    def note_arrived(self, uids: Iterable[int]) -> None:
        if self.live:
            self.arrived = with_uids(self.arrived, uids)

    def removal_lines(self, view: Any, gone: Sequence[int]) -> list[bytes]:
        """REMOVEFROM for members among ``gone``, expunged and still in the view (their message
        numbers are still valid: sent before the EXPUNGE, RFC 5267 section 4.3.4)."""
        if not self.live:
            return []
        self.arrived = without_uids(self.arrived, gone)
        self.changed = without_uids(self.changed, gone)
        lines = []
        for context in self.live.values():
            removed = context.remove(gone)
            if removed:
                lines.append(_response(context, view, b"REMOVEFROM", removed, descending=True))
        return lines

    def recheck_due(self) -> bool:
        """Whether messages were noted that live searches are to look at again."""
        return bool(self.live) and bool(self.arrived or self.changed)

    def update_lines_sliced(self, session: Any, view: Any,
                            slicer: TimeSlice | None) -> Generator[Pause | Await, Any, Updates]:
        """ADDTO and REMOVEFROM for the messages noted since the last catch-up, looked at again
        (only those), in slices (see the module docstring), and what is to be fetched of those
        that arrived into results (Updates). The view must not catch up again before this ends,
        nor until those fetches are made (their message numbers are the view's now). A store
        error (raised) keeps them noted for the next catch-up."""
        if not self.recheck_due():
            return Updates([], [])
        noted_arrived, noted_changed = set(self.arrived), set(self.changed)
        arrived = {uid for uid in noted_arrived if view.msn_of(uid) is not None and uid not in view.pending_expunge}
        changed = {uid for uid in noted_changed if view.msn_of(uid) is not None and uid not in view.pending_expunge}
        found = []
        for context in list(self.live.values()):
            found.append((context, (yield from self._looked_at(session, context, arrived, changed, slicer))))
        keys = yield from self._sort_keys(session, found, slicer)
        self.arrived = without_uids(self.arrived, noted_arrived)
        self.changed = without_uids(self.changed, noted_changed)
        lines = []
        # UID -> the contexts (their indexes) it arrived into that fetch attributes on entry.
        entered: dict[int, list[int]] = {}
        for index, (context, (looked_at, matching)) in enumerate(found):
            yield from pause_if_over(slicer)
            removed = context.remove(uid for uid in looked_at if uid not in matching)
            added = context.add(matching, keys.get(context.tag))
            if context.fetch_atts:
                for _position, uid in added:
                    if uid in arrived:   # not a flag change's entry (RFC 5465 section 7)
                        entered.setdefault(uid, []).append(index)
            items = []
            if removed:
                items.append(b"REMOVEFROM (" + _pairs(removed, _numbering(context, view), True) + b")")
            if added:
                items.append(b"ADDTO (" + _pairs(added, _numbering(context, view), False) + b")")
            if items:
                lines.append(_head(context) + b" ".join(items) + b"\r\n")
        return Updates(_fetch_groups(entered, [context for context, _found in found]), lines)

    @staticmethod
    def _looked_at(session: Any, context: LiveSearch, arrived: set[int], changed: set[int],
                   slicer: TimeSlice | None) -> Generator[Pause | Await, Any, tuple[list[int], set[int]]]:
        """(the messages the context looks at again, those of them its program matches)."""
        uids = sorted(arrived | changed if context.flag_dependent else arrived)
        if not uids:
            return [], set()
        program = cmds.SearchAnd((cmds.SearchSequence(uid_set(uids), uid=True), context.criteria))
        # Their records are read in pieces too, however many they are (search_sliced's read_named).
        return uids, set((yield from searching.search_sliced(session, program, slicer, read_named=True)))

    @staticmethod
    def _sort_keys(session: Any, found: list[tuple[LiveSearch, tuple[list[int], set[int]]]],
                   slicer: TimeSlice | None) -> Generator[Pause | Await, Any, dict[bytes, dict[int, tuple[Any, ...]]]]:
        """The sort keys of the messages entering SORT contexts, by context tag."""
        keys: dict[bytes, dict[int, tuple[Any, ...]]] = {}
        for context, (_looked_at, matching) in found:
            if context.sort is None:
                continue
            entering = sorted(uid for uid in matching if not context.contains(uid))
            keys[context.tag] = (yield from member_keys_sliced(session, context.sort, entering, slicer)) \
                if entering else {}
        return keys


def _fetch_groups(entered: dict[int, list[int]],
                  contexts: list[LiveSearch]) -> list[tuple[tuple[cmds.FetchAtt, ...], list[int]]]:
    """Updates.fetches from UID -> the indexes in ``contexts`` of the results it arrived into:
    one group per set of results, with their attributes together (the first of each label)."""
    by_contexts: dict[tuple[int, ...], list[int]] = {}
    for uid in sorted(entered):
        by_contexts.setdefault(tuple(entered[uid]), []).append(uid)
    groups = []
    for indexes, uids in by_contexts.items():   # (in the order of their lowest UIDs)
        atts = cmds.peek_forms(att for index in indexes for att in contexts[index].fetch_atts)
        groups.append((atts, uids))
    return groups


def member_keys_sliced(session: Any, criteria: tuple[cmds.SortCriterion, ...], uids: list[int],
                       slicer: TimeSlice | None) -> Generator[Pause | Await, Any, dict[int, tuple[Any, ...]]]:
    """UID -> sort_key of the selected folder's messages ``uids`` (ascending); a message whose
    body is gone is left out, as SORT leaves it out. The values are read with PAUSE between
    reads once ``slicer``'s time is up (gximap.session.commands.sort.folder_values)."""
    columns = []
    for criterion in criteria:
        columns.append((yield from _criterion_values(session, criterion.key, uids, slicer)))
    keys = {}
    for index, uid in enumerate(uids):
        values = [column[index] for column in columns]
        if None not in values:
            keys[uid] = sort_key(values, criteria, uid)
    return keys


def _criterion_values(session: Any, criterion: str, uids: list[int],
                      slicer: TimeSlice | None) -> Generator[Pause | Await, Any, Sequence[Any]]:
    """The values of the selected folder's messages ``uids`` under a sort criterion, read as
    SORT reads them (gximap.session.commands.sort.folder_values); None for one whose body is gone."""
    from gximap.session.commands.sort import folder_values  # (the commands import this module's users)

    return (yield from folder_values(session, criterion, uids, slicer, whole_folder=False))


def _numbering(context: LiveSearch, view: Any) -> Any:
    if context.uid:
        return lambda uid: uid
    return view.msn_of


def _head(context: LiveSearch) -> bytes:
    return b"* ESEARCH (TAG " + encode.string(context.tag) + b")" + (b" UID " if context.uid else b" ")


def _response(context: LiveSearch, view: Any, item: bytes, placed: list[tuple[int, int]], *, descending: bool) -> bytes:
    return _head(context) + item + b" (" + _pairs(placed, _numbering(context, view), descending) + b")\r\n"


def refuse_reused_tag(session: Any, tag: bytes, options: tuple[str, ...] | None) -> None:
    """RFC 5267 section 4.3: UPDATE with the tag of a live search is BAD."""
    if options is not None and "UPDATE" in options and tag in session.selected.contexts:
        raise CommandFailed(Code.BAD_UPDATE_TAG_IN_USE, status="BAD")


def start(session: Any, tag: bytes, uid: bool, criteria: cmds.SearchKey, members: Sequence[int],
          fetch_atts: tuple[cmds.FetchAtt, ...] = ()) -> bytes | None:
    """Keep the result ``members`` (ascending UIDs) of a SEARCH RETURN (UPDATE) live
    (``criteria`` made with fixed_criteria before the search ran; ``fetch_atts``: UPDATE's, RFC
    5465 section 7); or, beyond the bounds, return the untagged ``NO [NOUPDATE "tag"]`` that
    says it is not (RFC 5267 section 4.3.1). A SEARCH context has no keys to read: nothing to
    slice, unlike a SORT's (start_sliced)."""
    contexts = session.selected.contexts
    if not contexts.room_for(len(members)):
        return _no_update(session, tag)
    contexts.add(LiveSearch(tag, uid, criteria, members, fetch_atts=fetch_atts))
    return None


def start_sliced(session: Any, tag: bytes, uid: bool, criteria: cmds.SearchKey, members: Sequence[int],
                 slicer: TimeSlice | None, sort: tuple[cmds.SortCriterion, ...],
                 fetch_atts: tuple[cmds.FetchAtt, ...] = ()) -> Generator[Pause | Await, Any, list[bytes]]:
    """:func:`start` for a SORT RETURN (UPDATE) (``sort``: its criteria), whose context's keys
    are read and ordered in the command's slices (``slicer``), as its SORT read and ordered the
    values (_start_keys_sliced)."""
    contexts = session.selected.contexts
    if not contexts.room_for(len(members)):
        return [_no_update(session, tag)]
    keys, ordered = yield from _start_keys_sliced(session, sort, list(members), slicer)
    if len(keys) != len(members):
        members = [uid for uid in members if uid in keys]   # a message whose body is gone is left out
    contexts.add(LiveSearch(tag, uid, criteria, members, sort, keys, fetch_atts, ordered=ordered))
    return []


def _no_update(session: Any, tag: bytes) -> bytes:
    """``* NO [NOUPDATE "tag"]``: the result is not kept live (RFC 5267 section 4.3.1)."""
    return b"* " + session.status_line(b"NO", Code.INFO_NOUPDATE, code=b"NOUPDATE " + encode.string(tag)) + b"\r\n"


def _start_keys_sliced(session: Any, criteria: tuple[cmds.SortCriterion, ...], uids: list[int],
                       slicer: TimeSlice | None
                       ) -> Generator[Pause | Await, Any, tuple[dict[int, tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """A new SORT context's keys (member_keys_sliced) and the same keys in sort order. The
    values come as the SORT command's own (folder_values: from the process's columns, what they
    lack a few thousand messages per read, PAUSE between reads); they are ordered as SORT orders
    them (sorting.sort_order_sliced: a PAUSE between criteria), and the keys made a piece at a
    time, PAUSE between pieces. In one piece, for 100,000 members, making the key tuples took
    0.2 s and sorting them 0.1 s, 0.5 s with a REVERSE criterion (compared in Python). The
    stable sorts of sort_order_sliced, ties in UID order, give the order of the key tuples,
    whose last item is the UID."""
    columns = []
    for criterion in criteria:
        columns.append((yield from _criterion_values(session, criterion.key, uids, slicer)))
    order = yield from sorting.sort_order_sliced(
        [(column, criterion.reverse) for column, criterion in zip(columns, criteria, strict=True)], len(uids), slicer)
    keys: dict[int, tuple[Any, ...]] = {}
    ordered: list[tuple[Any, ...]] = []
    with collector_paused_in(slicer):   # a tuple or two per member (see collector_paused)
        for start in range(0, len(order), _KEYS_PER_LOOK):
            yield from pause_if_over(slicer)
            for index in order[start : start + _KEYS_PER_LOOK]:
                member = uids[index]
                key = keys[member] = sort_key([column[index] for column in columns], criteria, member)
                ordered.append(key)
    return keys, ordered


# Keys made between two looks at the slice's clock (start_sliced): a few milliseconds of work.
_KEYS_PER_LOOK = 4096
