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
                 ) -> Generator[Pause, Any, tuple[Sequence[tuple[Any, ...]], Sequence[int]]]:
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
    slicer = TimeSlice()  # one clock for the search, the values' reads, the threading and the rendering
    with command_slot(session, slicer) as slot:
        yield from slot.wait()
        lines = yield from _thread_lines(session, cmd, slicer)
    yield RESPONSE_OPENS  # one response line in several items
    yield from lines
    yield RESPONSE_CLOSES
    return Done(Code.OK_THREAD)


def _thread_lines(session: Any, cmd: cmds.Thread, slicer: TimeSlice) -> Generator[Pause | Await, Any, list[bytes]]:
    uids = yield from matching_uids(session, cmd.search, slicer)
    whole_folder = isinstance(cmd.search, cmds.SearchAll)

    def answer() -> Generator[Pause, Any, list[bytes]]:
        items, numbers = yield from thread_items(session, uids, cmd.uid, slicer, whole_folder=whole_folder)
        # (No collector pause: the threads are lists of integers, see sorting.ThreadForest.)
        threads = yield from _ALGORITHMS[cmd.algorithm](items, slicer)
        lines = [b"* THREAD" + (b" " if threads.roots else b"")]
        for piece in sorting.render_threads(threads, numbers):  # 64 KiB of the answer: about 4 ms
            lines.append(piece)
            yield from pause_if_over(slicer)
        lines.append(b"\r\n")
        return lines

    view = session.selected
    # A webmail client threads the same folder on every page view: the answer is kept until the
    # folder's messages change. In message numbers it depends on the session's view too: kept
    # only for a view that holds exactly the folder's messages (no expunge not yet announced).
    if whole_folder and (cmd.uid or view.uids == array(UID_ARRAY, uids)):
        name = f"{'UID ' if cmd.uid else ''}THREAD {cmd.algorithm}"
        lines = yield from session.ctx.sort_columns.answer_sliced(sort_folder(view), name, uids, answer)
    else:
        lines = yield from answer()
    return lines
