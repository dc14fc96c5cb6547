"""SORT and UID SORT (RFC 5256), DISPLAYFROM/DISPLAYTO (RFC 5957) and ESORT (RFC 5267).

The search program selects the messages (gximap.session.searching), gximap.session.sorting orders
them by the values the process keeps per folder and criterion (sorting.SortColumns): a repeated
SORT of a large folder sorts values it already has, reading only messages that arrived since.
Without RETURN options the answer is ``* SORT n...``; with them (ESORT) it is an ESEARCH
response whose MIN and MAX are the first and last message in sort order and whose ALL lists the
messages in sort order (RFC 5267 section 3.1). SAVE (RFC 5182) stores the sorted messages as ``$``.
When the search program uses MODSEQ, the highest mod-sequence of the result is added (RFC 7162
section 3.1.5). RETURN (PARTIAL m:n) takes the positions in sort order (RFC 9394 section 3.1):
the whole result is sorted, but only the page becomes message numbers and a set.

The search, the reads of the values, the sorts and an ESORT's ALL set run in slices of one
TimeSlice (gximap.session.base), pausing between messages or pieces of a few thousand of them.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.session import condstore, searchcontext, searching, sorting
from gximap.session.base import (
    RESPONSE_CLOSES,
    RESPONSE_OPENS,
    SELECTED,
    Await,
    CommandFailed,
    Done,
    Pause,
    ResponseMark,
    TimeSlice,
    collector_paused_in,
    command,
    pause_if_over,
)
from gximap.session.commands.search import esearch_response, result_ends, saved_result


def check_charset(session: Any, charset: str) -> None:
    """RFC 6855 section 3 and erratum 4029: once UTF8=ACCEPT is enabled, SORT and THREAD must name
    UTF-8 (the parser has already refused charsets other than UTF-8 and US-ASCII)."""
    if "UTF8=ACCEPT" in session.enabled and charset != "UTF-8":
        raise CommandFailed(Code.BAD_CHARSET_NOT_UTF8, status="BAD")


def matching_records(session: Any, criteria: cmds.SearchKey,
                     slicer: TimeSlice) -> Generator[Pause | Await, Any, list[Any]]:
    """The index records the search program selects, in message-number order, the search run in
    slices; BAD for search keys the server does not implement."""
    try:
        return (yield from searching.search_records_sliced(session, criteria, slicer))
    except searching.SearchUnsupported:
        raise CommandFailed(Code.NO_NOT_SUPPORTED, status="BAD") from None


def matching_uids(session: Any, criteria: cmds.SearchKey,
                  slicer: TimeSlice) -> Generator[Pause | Await, Any, list[int]]:
    """The UIDs the search program selects, ascending; as matching_records."""
    try:
        return (yield from searching.search_sliced(session, criteria, slicer))
    except searching.SearchUnsupported:
        raise CommandFailed(Code.NO_NOT_SUPPORTED, status="BAD") from None


def sort_folder(view: Any) -> tuple[Any, ...]:
    """What names the selected folder in the process's sort columns: its messages' values stay
    right for as long as its UIDVALIDITY does."""
    return (view.account, view.folder_id, view.uidvalidity)


def folder_values(session: Any, criterion: str, uids: Sequence[int], slicer: TimeSlice | None, *,
                  whole_folder: bool, ranked: bool = False) -> Generator[Pause | Await, Any, Sequence[Any]]:
    """The values of the selected folder's messages ``uids`` (ascending) under a sort criterion
    (or sorting.THREAD_VALUES), from the process's sort columns; None for a message whose body
    is gone. What the columns lack is read from the sort index (midb.sortindex), ARRIVAL and
    SIZE from the index records, a few thousand messages per read with PAUSE between reads
    when ``slicer``'s time is up, or one Await for another session's first read of the column
    (sorting.SortColumns.values_sliced). ``ranked``: for sorting
    (text may come as ranks, see sorting.SortColumns)."""
    view = session.selected
    store = session.store

    def load(missing: list[int]) -> dict[int, Any]:
        return sorting.column_values(
            criterion, missing, lambda uids: store.search_rows(view.account, view.folder_id, uids),
            lambda uids, read: store.sort_values(view.account, view.folder_id, uids, read))

    with collector_paused_in(slicer):  # a value or more per message: see collector_paused
        return (yield from session.ctx.sort_columns.values_sliced(
            sort_folder(view), criterion, uids, load, slicer, whole_folder=whole_folder, ranked=ranked))


def sort_order(session: Any, uids: list[int], criteria: tuple[cmds.SortCriterion, ...], slicer: TimeSlice | None,
               *, whole_folder: bool) -> Generator[Pause | Await, Any, list[int]]:
    """The positions in ``uids`` (ascending) in the order of the sort program; a message whose
    body is gone is left out. Equal messages keep message-number order whatever REVERSE says
    (RFC 5256). PAUSE between pieces of the work when ``slicer``'s time is up (see folder_values
    for its one Await)."""
    columns = []
    for criterion in criteria:
        values = yield from folder_values(session, criterion.key, uids, slicer, whole_folder=whole_folder,
                                          ranked=True)
        columns.append((values, criterion.reverse))
    return (yield from sorting.sort_order_sliced(columns, len(uids), slicer))


# Numbers an ESORT's ALL set takes between two looks at the clock (about 4 ms).
_NUMBERS_PER_LOOK = 4096


def ordered_sequence_set(numbers: Sequence[int], slicer: TimeSlice | None) -> Generator[Pause, Any, bytes]:
    """A sequence set that keeps the given order: runs of consecutive ascending numbers become
    ``a:b``; nothing else is merged (RFC 5267: ESORT's ALL is a sort-ordered set). Made in
    pieces, with PAUSE between them when ``slicer``'s time is up: one number at a time, the set
    of 100,000 messages took about 40 ms."""
    if not numbers:
        return b""
    out: list[bytes] = []
    start = previous = numbers[0]
    for first in range(1, len(numbers), _NUMBERS_PER_LOOK):
        yield from pause_if_over(slicer)
        for number in numbers[first : first + _NUMBERS_PER_LOOK]:
            if number != previous + 1:
                out.append(b"%d" % start if start == previous else b"%d:%d" % (start, previous))
                start = number
            previous = number
    out.append(b"%d" % start if start == previous else b"%d:%d" % (start, previous))
    return b",".join(out)


def sort_response(numbers: Sequence[int], modseq: int | None, chunk: int = 4096) -> Iterator[bytes]:
    """``* SORT n n ...``, streamed in pieces (a 100,000-message answer is one long line)."""
    yield b"* SORT"
    for start in range(0, len(numbers), chunk):
        part = numbers[start : start + chunk]
        yield (b" %d" * len(part)) % tuple(part)  # one formatting call per piece (as SEARCH does)
    yield (b" (MODSEQ %d)" % modseq if modseq is not None else b"") + b"\r\n"


def _message_numbers_in_order(view: Any, uids: list[int], slicer: TimeSlice | None) -> Generator[Pause, Any, list[int]]:
    """The message numbers of ``uids`` (the view's, in any order), in that order; PAUSE between
    pieces when ``slicer``'s time is up."""
    numbers: list[int] = []
    position = view.runs.position
    for start in range(0, len(uids), _NUMBERS_PER_LOOK):
        yield from pause_if_over(slicer)
        for uid in uids[start : start + _NUMBERS_PER_LOOK]:
            index = position(uid)
            assert index is not None  # the search's messages are the view's
            numbers.append(index + 1)
    return numbers


@command(cmds.Sort, states=SELECTED, expunge_ok=False)
def sort(session: Any, cmd: cmds.Sort) -> Generator[bytes | Pause | Await | ResponseMark, Any, Done]:
    check_charset(session, cmd.charset)
    slicer = TimeSlice(progress=session.progress)  # one clock for the search, the values' reads and the sorts
    with searching.command_slot(session, slicer) as slot:
        yield from slot.wait()
        lines = yield from _sorted_lines(session, cmd, slicer)
    # With the slot given back: a client slow to read holds none. One response line in
    # several items (600 KB for 100,000 messages, more than a slice sends): bracketed.
    yield RESPONSE_OPENS
    yield from lines
    yield RESPONSE_CLOSES
    return Done(Code.OK_SORT)


def _sorted_lines(session: Any, cmd: cmds.Sort, slicer: TimeSlice) -> Generator[Pause | Await, Any, list[bytes]]:
    """The SORT's (or ESORT's) untagged responses."""
    view = session.selected
    options = cmd.return_opts
    save = options is not None and "SAVE" in options
    searchcontext.refuse_reused_tag(session, cmd.tag, options)
    # RETURN (UPDATE): the program as it reads now ("$" before this SAVE), kept live below.
    live = searchcontext.fixed_criteria(session, cmd.search) if options and "UPDATE" in options else None
    uses_modseq = condstore.uses_modseq(cmd.search)
    modseq = None
    try:
        if uses_modseq:
            # The answer carries the highest MODSEQ of the messages the search saw: their records
            # are read once, for both.
            records = yield from matching_records(session, cmd.search, slicer)
            matched = [meta.uid for meta in records]
            modseq = max((meta.modseq for meta in records), default=None)
        else:
            matched = yield from matching_uids(session, cmd.search, slicer)
        order = yield from sort_order(session, matched, cmd.criteria, slicer,
                                      whole_folder=isinstance(cmd.search, cmds.SearchAll))
        yield from pause_if_over(slicer)
        uids = [matched[index] for index in order]
        if uses_modseq and uids and (chosen := condstore.returned_uids(options, cmd.partial, uids)) is not None:
            # ESORT MIN/MAX only, or PARTIAL: the MODSEQ of the messages returned.
            wanted = set(chosen)
            modseq = max((meta.modseq for meta in records if meta.uid in wanted), default=None)
    except CommandFailed as failed:
        if save and failed.done.status == "NO":
            session.saved_search = []
        raise
    except Exception:
        if save:
            session.saved_search = []  # a SAVE that fails with NO empties "$" (RFC 5182 section 2.1)
        raise
    if save:
        assert options is not None
        session.saved_search = saved_result(options, cmd.partial, uids)
    lines = []
    if live is not None:   # (the values read for the sort are in the process's columns now)
        lines.extend((yield from searchcontext.start_sliced(session, cmd.tag, cmd.uid, live, matched, slicer,
                                                            cmd.criteria, cmd.update_atts)))
    if uses_modseq or (cmd.update_atts and condstore.names_modseq(cmd.update_atts)):
        # A MODSEQ search, or UPDATE (MODSEQ), enables CONDSTORE (RFC 7162 section 3.1).
        lines.extend(condstore.enable(session))
    if options is not None and cmd.partial is not None:
        # Only the page (and the first and last, for MIN and MAX) become message numbers.
        page = cmd.partial.select(uids)
        ends = result_ends(uids)
        if not cmd.uid:
            page = yield from _message_numbers_in_order(view, page, slicer)
            if ends is not None:
                first, last = yield from _message_numbers_in_order(view, list(ends), None)
                ends = (first, last)
        partial_set = yield from ordered_sequence_set(page, slicer)
        lines.append(esearch_response(cmd.tag, cmd.uid, options, len(uids), ends, modseq,
                                      partial=(cmd.partial, partial_set)))
        return lines
    if cmd.uid:
        numbers: Sequence[int] = uids
    else:
        positions = yield from view.message_numbers_sliced(matched, slicer)
        numbers = [positions[index] for index in order]
    if options is None:
        lines.extend(sort_response(numbers, modseq))
    elif set(options) != {"SAVE"}:
        ordered = (yield from ordered_sequence_set(numbers, slicer)) if "ALL" in options else b""
        ends = result_ends(numbers)
        lines.append(esearch_response(cmd.tag, cmd.uid, options, len(numbers), ends, modseq, all_set=ordered))
    return lines
