"""APPEND (RFC 3501 / RFC 9051 section 6.3.12), MULTIAPPEND (RFC 3502), APPENDUID (RFC 4315).

Several messages in one APPEND are stored all or nothing, in one store transaction. The data is
kept exactly as received, also when sent as literal8 (RFC 3516) or UTF8 (RFC 6855). A message too
big for the configured limit never gets here: the session refuses its literal with NO [TOOBIG]
while framing. An APPEND to the selected mailbox is announced (EXISTS) by the update the session
sends before the tagged OK.
"""

from __future__ import annotations

import time
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.session.base import AUTHENTICATED, CommandFailed, Done, command


def _local_offset_minutes(moment: float) -> int:
    """The server's UTC offset at ``moment``, for messages appended without a date."""
    return (time.localtime(moment).tm_gmtoff or 0) // 60


@command(cmds.Append, states=AUTHENTICATED)
def append(session: Any, cmd: cmds.Append) -> Done:
    if "UTF8=ACCEPT" not in session.enabled and any(message.utf8 for message in cmd.messages):
        # RFC 6855 section 4: the UTF8 data item is a BAD command until ENABLE UTF8=ACCEPT.
        raise CommandFailed(Code.BAD_NOT_ENABLED, "UTF8=ACCEPT", status="BAD")
    store = session.store
    folder = store.get_folder(session.user, cmd.mailbox.name)
    if folder is None:
        raise CommandFailed(Code.NO_MAILBOX_NOT_FOUND, status="NO", code=b"TRYCREATE")
    now = time.time()
    items: list[tuple[bytes, tuple[str, ...], int, int]] = []
    for message in cmd.messages:
        if not message.data:
            raise CommandFailed(Code.NO_APPEND_INVALID, status="NO")  # nothing to store
        if message.date is None:
            internaldate, tzoffset = int(now), _local_offset_minutes(now)
        else:
            internaldate, tzoffset = message.date
        items.append((message.data, message.flags, internaldate, tzoffset))
    view = session.selected
    if view is not None and view.folder_id == folder.id and not view.readonly:
        # Into the selected folder: claim \Recent in the same transaction (one durable commit).
        uidvalidity, uids, floor = store.append_claiming(session.user, folder.id, items)
        view.note_claim(floor, uids[-1])
    elif len(items) == 1:
        data, flags, internaldate, tzoffset = items[0]
        uidvalidity, uid = store.append(session.user, folder.id, data, flags=flags,
                                        internaldate=internaldate, tzoffset=tzoffset)
        uids = [uid]
    else:
        uidvalidity, uids = store.append_many(session.user, folder.id, items)
    return Done(Code.OK_APPEND, code=b"APPENDUID %d %s" % (uidvalidity, encode.sequence_set(uids)))
