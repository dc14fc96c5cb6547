"""EXPUNGE (RFC 3501 / RFC 9051 section 6.4.3) and UID EXPUNGE (RFC 4315 section 2.1).

The store removes the messages flagged \\Deleted (only those in the UID set for UID EXPUNGE)
and reports which it removed; they are announced as EXPUNGE responses, highest message number
first so every number stays valid (VANISHED with QRESYNC). Expunges by other sessions follow in
the update the session sends before the tagged OK. With QRESYNC, a tagged OK after messages were
expunged carries the new ``[HIGHESTMODSEQ n]`` (RFC 7162 sections 3.2.7 and 3.2.9).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.imap.commands import SequenceSet
from gximap.session.base import SELECTED, CommandFailed, Done, command
from gximap.session.searching import resolve_uids


@command(cmds.Expunge, states=SELECTED)
def expunge(session: Any, cmd: cmds.Expunge) -> Generator[bytes, Any, Done]:
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
    tombstones = session.store.expunge_tombstones(view.account, view.folder_id, wanted)
    view.note_own_changes_of(tombstones)
    expunged = [uid for uid, _modseq in tombstones]
    yield from view.expunge_responses(expunged)
    if expunged:
        view.force_highestmodseq = True
    return Done(Code.OK_EXPUNGE)
