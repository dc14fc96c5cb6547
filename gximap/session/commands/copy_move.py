"""COPY, MOVE and their UID forms (RFC 3501 section 6.4.7, RFC 6851, COPYUID of RFC 4315).

COPY answers ``OK [COPYUID uidvalidity source-uids destination-uids]``. MOVE is one store
transaction (copy + expunge); it sends the COPYUID in an untagged OK first, then the EXPUNGE (or,
with QRESYNC, VANISHED) responses for the moved messages, then the tagged OK (RFC 6851 section
4.3), which with QRESYNC carries the source's new ``[HIGHESTMODSEQ n]`` as EXPUNGE's does (RFC 7162
section 3.2.7). A missing destination is ``NO [TRYCREATE]``.

If the set names messages another session expunged and this one has not been told about yet, the
command fails with ``NO [EXPUNGEISSUED]`` and copies nothing (RFC 2180 section 4.4.1, Dovecot's
choice): a partial copy would leave the client unsure what arrived.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.session.base import SELECTED, CommandFailed, Done, command
from gximap.session.searching import resolve_uids


def _copyuid(uidvalidity: int, pairs: list[tuple[int, int]]) -> bytes:
    """``COPYUID v src dst``: both sets in the same (ascending source) order, as RFC 4315 wants."""
    sources = encode.sequence_set([source for source, _ in pairs])
    targets = encode.sequence_set([target for _, target in pairs])
    return b"COPYUID %d %s %s" % (uidvalidity, sources, targets)


def _prepare(session: Any, cmd: cmds.Copy | cmds.Move) -> tuple[list[int], Any]:
    """The source UIDs and the destination folder; raises CommandFailed for the refusals."""
    view = session.selected
    uids = resolve_uids(session, cmd.seqset, cmd.uid)
    target = session.store.get_folder(session.user, cmd.mailbox.name)
    if target is None:
        raise CommandFailed(Code.NO_MAILBOX_NOT_FOUND, status="NO", code=b"TRYCREATE")
    if view.pending_expunge and not view.pending_expunge.isdisjoint(uids):
        raise CommandFailed(Code.NO_EXPUNGE_ISSUED, status="NO", code=b"EXPUNGEISSUED")
    return uids, target


@command(cmds.Copy, states=SELECTED)
def copy(session: Any, cmd: cmds.Copy) -> Done:
    view = session.selected
    uids, target = _prepare(session, cmd)
    if not uids:
        return Done(Code.OK_COPY_NOTHING)
    uidvalidity, pairs = session.store.copy(view.account, view.folder_id, uids, target.id)
    if not pairs:
        # Everything named was expunged between the last sync and the copy.
        return Done(Code.NO_EXPUNGE_ISSUED, status="NO", code=b"EXPUNGEISSUED")
    return Done(Code.OK_COPY, code=_copyuid(uidvalidity, pairs))


@command(cmds.Move, states=SELECTED)
def move(session: Any, cmd: cmds.Move) -> Generator[bytes, Any, Done]:
    view = session.selected
    uids, target = _prepare(session, cmd)
    if view.readonly:
        raise CommandFailed(Code.NO_READ_ONLY, status="NO")  # MOVE expunges from the source
    if not uids:
        return Done(Code.OK_MOVE_NOTHING)
    uidvalidity, pairs = session.store.move(view.account, view.folder_id, uids, target.id)
    if not pairs:
        return Done(Code.NO_EXPUNGE_ISSUED, status="NO", code=b"EXPUNGEISSUED")
    yield b"* OK [" + _copyuid(uidvalidity, pairs) + b"] " + session.text(Code.INFO_MOVED) + b"\r\n"
    yield from view.expunge_responses([source for source, _ in pairs])
    view.force_highestmodseq = True
    return Done(Code.OK_MOVE)
