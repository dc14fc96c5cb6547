"""THREAD and UID THREAD (RFC 5256): ORDEREDSUBJECT and REFERENCES.

The search program selects the messages; their sent dates, base subjects and Message-ID /
References ids come from the stored digests (through the shared key cache of
gximap.session.sorting, which also holds the algorithms). The answer is one ``* THREAD`` line,
streamed in pieces.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.session import sorting
from gximap.session.base import SELECTED, Done, command
from gximap.session.commands.sort import check_charset, matching_records, message_numbers

_ALGORITHMS = {
    "ORDEREDSUBJECT": sorting.thread_orderedsubject,
    "REFERENCES": sorting.thread_references,
}


def thread_items(session: Any, records: list[Any], uid: bool) -> list[sorting.ThreadItem]:
    """What the threading algorithms need of each record, in message-number order."""
    records, keys = sorting.collect_summary_keys(records, session.store.summaries)
    uids = [meta.uid for meta in records]
    numbers = uids if uid else message_numbers(session.selected, uids)
    items = []
    for number, meta, key in zip(numbers, records, keys, strict=True):
        # RFC 5256 section 2.2: the internal date stands in for a missing or unusable Date:.
        date = key.date if key.date is not None else meta.internaldate
        items.append(sorting.ThreadItem(number, date, key.subject, key.reply, key.message_id,
                                        tuple(key.references.split())))
    return items


@command(cmds.Thread, states=SELECTED, expunge_ok=False)
def thread(session: Any, cmd: cmds.Thread) -> Generator[bytes, Any, Done]:
    check_charset(session, cmd.charset)
    records = matching_records(session, cmd.search)
    threads = _ALGORITHMS[cmd.algorithm](thread_items(session, records, cmd.uid))
    yield b"* THREAD" + (b" " if threads else b"")
    yield from sorting.render_threads(threads)
    yield b"\r\n"
    return Done(Code.OK_THREAD)
