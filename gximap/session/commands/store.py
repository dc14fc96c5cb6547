"""STORE and UID STORE (RFC 3501 / RFC 9051 section 6.4.6): FLAGS, +FLAGS, -FLAGS [.SILENT].

The new flags of every message named are reported in untagged FETCH responses (with the UID for
UID STORE, and for IMAP4rev2 clients always, as the sync does) unless .SILENT was given. Either
way the view records the changes as its own, so the update sent after the command does not repeat
them. Messages expunged by another session and not yet announced are left out; STORE without .SILENT then
completes with ``NO [EXPUNGEISSUED]`` as FETCH does (RFC 2180 section 4.2), UID STORE with OK (a
UID that no longer exists is no error).

UNCHANGEDSINCE (CONDSTORE, RFC 7162) is not offered: answered with BAD.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.session.base import SELECTED, CommandFailed, Done, command
from gximap.session.searching import resolve_uids
from gximap.session.selected import flag_atoms

_MODES = {"": "set", "+": "add", "-": "remove"}


@command(cmds.Store, states=SELECTED, expunge_ok=False)
def store(session: Any, cmd: cmds.Store) -> Generator[bytes, Any, Done]:
    if cmd.unchangedsince is not None:
        raise CommandFailed(Code.NO_NOT_SUPPORTED, status="BAD")
    view = session.selected
    uids = resolve_uids(session, cmd.seqset, cmd.uid)
    if view.readonly:
        raise CommandFailed(Code.NO_STORE_READ_ONLY, status="NO")
    if not uids:
        return Done(Code.OK_STORE)
    backend = session.store
    changed, _failed = backend.store_flags(view.account, view.folder_id, uids, _MODES[cmd.mode], cmd.flags)
    view.note_own_changes(changed)
    if cmd.silent:
        return Done(Code.OK_STORE)
    current = {meta.uid: meta for meta in changed}
    unchanged = [uid for uid in uids if uid not in current]
    if unchanged:
        for meta in backend.get_messages(view.account, view.folder_id, unchanged):
            current[meta.uid] = meta
    with_uid = cmd.uid or session.rev2
    show_recent = not session.rev2
    recent = view.recent
    for uid in uids:
        meta = current.get(uid)
        msn = view.msn_of(uid)
        if meta is None or msn is None:
            continue
        items = b"FLAGS " + flag_atoms(meta.flags, show_recent and uid in recent)
        if with_uid:
            items = b"UID %d " % uid + items
        yield b"* %d FETCH (%s)\r\n" % (msn, items)
    if len(current) < len(uids) and not cmd.uid:
        return Done(Code.NO_EXPUNGE_ISSUED, status="NO", code=b"EXPUNGEISSUED")
    return Done(Code.OK_STORE)
