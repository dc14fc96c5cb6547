"""THREAD and UID THREAD (RFC 5256): ORDEREDSUBJECT and REFERENCES.

The search program selects the messages; their sent dates, base subjects and Message-ID /
References ids come from the stored summaries, kept per folder in the process's sort columns
(gximap.session.sorting, which also holds the algorithms). The answer is one ``* THREAD`` line,
streamed in pieces. The search, the reads, the threading and the making of the answer run in
slices of one TimeSlice (gximap.session.base), pausing between pieces of their work.
"""

from __future__ import annotations

from array import array
from collections.abc import Generator, Sequence
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.session import sorting
from gximap.session.base import (
    RESPONSE_CLOSES,
    RESPONSE_OPENS,
    SELECTED,
    Await,
    Done,
    Pause,
    ResponseMark,
    TimeSlice,
    command,
    pause_if_over,
)
from gximap.session.commands.sort import check_charset, folder_values, matching_uids, sort_folder
from gximap.session.searching import command_slot
from gximap.session.selected import UID_ARRAY

_ALGORITHMS = {
    "ORDEREDSUBJECT": sorting.thread_orderedsubject_sliced,
    "REFERENCES": sorting.thread_references_sliced,
}


def thread_items(session: Any, uids: list[int], uid: bool, slicer: TimeSlice | None, *, whole_folder: bool
                 ) -> Generator[Pause | Await, Any, tuple[Sequence[tuple[Any, ...]], Sequence[int]]]:
    """What the threading algorithms need of each message (``uids`` ascending; sorting.ThreadItem
    values) in message-number order, from the process's sort columns, and the number each one
    shows (its UID or message number); a message whose body is gone is left out. PAUSE between
    reads when ``slicer``'s time is up."""
    values = yield from folder_values(session, sorting.THREAD_VALUES, uids, slicer, whole_folder=whole_folder)
    numbers: Sequence[int] = uids
    if None in values:
        kept = [(uid_, value) for uid_, value in zip(uids, values, strict=True) if value is not None]
        numbers = [uid_ for uid_, _value in kept]
        values = [value for _uid, value in kept]
    if not uid:
        numbers = yield from session.selected.message_numbers_sliced(numbers, slicer)
    return values, numbers


@command(cmds.Thread, states=SELECTED, expunge_ok=False)
def thread(session: Any, cmd: cmds.Thread) -> Generator[bytes | Pause | Await | ResponseMark, Any, Done]:
    check_charset(session, cmd.charset)
    # One clock for the search, the values' reads, the threading and the rendering.
    slicer = TimeSlice(progress=session.progress)
    uids = None
    kept_as = None
    if isinstance(cmd.search, cmds.SearchAll):
        # ALL reads the view or the message keys and tests no message (searching._index_answer):
        # no slot for it, nor for an answer kept from before, which a webmail client asks for on
        # every page view and which should not wait behind the account's long searches.
        uids = yield from matching_uids(session, cmd.search, slicer)
        kept_as = _kept_as(session, cmd, uids)
    lines = session.ctx.sort_columns.kept_answer(*kept_as) if kept_as is not None else None
    if lines is None:
        with command_slot(session, slicer) as slot:
            yield from slot.wait()
            if uids is None:
                uids = yield from matching_uids(session, cmd.search, slicer)
            lines = yield from _thread_lines(session, cmd, uids, slicer, kept_as)
    yield RESPONSE_OPENS  # one response line in several items
    yield from lines
    yield RESPONSE_CLOSES
    return Done(Code.OK_THREAD)


def _kept_as(session: Any, cmd: cmds.Thread, uids: list[int]) -> tuple[tuple[Any, ...], str, list[int]] | None:
    """Where the process's sort columns keep the answer of a THREAD over the whole folder
    (``uids``, all of it): a webmail client threads the same folder on every page view, so the
    answer is kept until the folder's messages change. In message numbers it depends on the
    session's view too: kept only for a view that holds exactly the folder's messages (no expunge
    not yet announced). None: not kept."""
    view = session.selected
    if not cmd.uid and view.uids != array(UID_ARRAY, uids):
        return None
    return sort_folder(view), f"{'UID ' if cmd.uid else ''}THREAD {cmd.algorithm}", uids


def _thread_lines(session: Any, cmd: cmds.Thread, uids: list[int], slicer: TimeSlice,
                  kept_as: tuple[tuple[Any, ...], str, list[int]] | None) -> Generator[Pause | Await, Any, list[bytes]]:
    def answer() -> Generator[Pause | Await, Any, list[bytes]]:
        items, numbers = yield from thread_items(session, uids, cmd.uid, slicer,
                                                 whole_folder=isinstance(cmd.search, cmds.SearchAll))
        # (No collector pause: the threads are lists of integers, see sorting.ThreadForest.)
        threads = yield from _ALGORITHMS[cmd.algorithm](items, slicer)
        lines = [b"* THREAD" + (b" " if threads.roots else b"")]
        for piece in sorting.render_threads(threads, numbers):  # 64 KiB of the answer: about 4 ms
            lines.append(piece)
            yield from pause_if_over(slicer)
        lines.append(b"\r\n")
        return lines

    if kept_as is None:
        return (yield from answer())
    return (yield from session.ctx.sort_columns.answer_sliced(*kept_as, answer))
