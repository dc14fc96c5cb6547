"""EXPUNGE (RFC 3501 / RFC 9051 section 6.4.3) and UID EXPUNGE (RFC 4315 section 2.1).

The store removes the messages flagged \\Deleted (only those in the UID set for UID EXPUNGE)
and reports which it removed; they are announced as EXPUNGE responses, highest message number
first so every number stays valid (VANISHED with QRESYNC). Expunges by other sessions follow in
the update the session sends before the tagged OK. With QRESYNC, a tagged OK after messages were
expunged carries the new ``[HIGHESTMODSEQ n]`` (RFC 7162 sections 3.2.7 and 3.2.9).

The \\Deleted messages among those named are found in the flag index and removed in pieces, one
write transaction each (gximap.session.pieces), their responses sent after each piece's commit.
Every piece is durable before its bodies are unlinked, as a single EXPUNGE is.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.imap.commands import SequenceSet
from gximap.session.base import SELECTED, Await, CommandFailed, Done, command
from gximap.session.pieces import in_pieces
from gximap.session.searching import resolve_uids


@command(cmds.Expunge, states=SELECTED)
def expunge(session: Any, cmd: cmds.Expunge) -> Generator[bytes | Await, Any, Done]:
    view = session.selected
    if cmd.uid:
        wanted = resolve_uids(session, cmd.seqset or SequenceSet(), True)
    else:
        # Only messages the client knows of: one that arrived \Deleted and was never announced
        # must not vanish before this session has even reported it.
        wanted = list(view.uids)
    if view.readonly:
        raise CommandFailed(Code.NO_READ_ONLY, status="NO")
    if not wanted:
        return Done(Code.OK_EXPUNGE)
    expunged_any = False

    def write(piece: Sequence[int]) -> list[tuple[int, int]]:
        return store.expunge_tombstones(view.account, view.folder_id, piece)

    def report(_piece: Sequence[int], tombstones: list[tuple[int, int]]) -> list[bytes]:
        nonlocal expunged_any
        view.note_own_changes_of(tombstones)
        expunged = [uid for uid, _modseq in tombstones]
        expunged_any = expunged_any or bool(expunged)
        return view.expunge_responses(expunged)

    store = session.store
    yield from in_pieces(deleted_among(session, wanted), write, report, progress=session.progress)
    if expunged_any:
        view.force_highestmodseq = True
    return Done(Code.OK_EXPUNGE)


def deleted_among(session: Any, uids: list[int]) -> list[int]:
    """Those of ``uids`` (ascending) flagged \\Deleted, read from the flag index: the pieces of an
    EXPUNGE are then made of messages it removes, not of every message of the folder. (A message
    flagged meanwhile is left for the next EXPUNGE, as if this one had run a moment earlier.)"""
    view = session.selected
    deleted = session.store.deleted_uids(view.account, view.folder_id)
    if len(deleted) <= len(uids) // 8:
        named = set(uids)
        return [uid for uid in deleted if uid in named]
    flagged = set(deleted)
    return [uid for uid in uids if uid in flagged]
