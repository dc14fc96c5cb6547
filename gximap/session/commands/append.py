"""APPEND (RFC 3501 / RFC 9051 section 6.3.12), MULTIAPPEND (RFC 3502), APPENDUID (RFC 4315).

Several messages in one APPEND are stored all or nothing, in one store transaction. A message
is stored with its bare LF line ends made CRLF (``midb.mime.normalize_crlf``, as Dovecot serves
such a message); anything else is kept as received. Of data sent as literal8 (RFC 3516, also
inside UTF8 of RFC 6855) the binary parts are first stored base64-encoded
(``midb.mime.binary_parts_as_base64``), as Dovecot stores them: a BODY[] literal could not carry
their NUL octets, BINARY[] gives the octets back, and being base64 they keep every octet through
the line end change, which only meets line-oriented data. A message too big for the configured limit never gets here: the session refuses its literal
with NO [TOOBIG] while framing (the limit applies to the literal as sent). A synchronising literal
that the account's quota cannot take is refused the same way, with NO [OVERQUOTA] instead of "+",
and so is one for a mailbox, named before it, that does not exist: NO [TRYCREATE].
An APPEND to the selected mailbox is announced (EXISTS) by the update the session sends before the
tagged OK.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.session.base import AUTHENTICATED, CommandFailed, Done, command
from gximap.session.errors import trycreate_folder
from midb.errors import NoSuchFolder
from midb.mime import binary_parts_as_base64, normalize_crlf


def _local_offset_minutes(moment: float) -> int:
    """The server's UTC offset at ``moment``, for messages appended without a date."""
    return (time.localtime(moment).tm_gmtoff or 0) // 60


def refuse_utf8_unless_enabled(session: Any, messages: Iterable[cmds.AppendMessage]) -> None:
    """RFC 6855 section 4: the UTF8 data item is a BAD command until ENABLE UTF8=ACCEPT."""
    if "UTF8=ACCEPT" not in session.enabled and any(message.utf8 for message in messages):
        raise CommandFailed(Code.BAD_NOT_ENABLED, "UTF8=ACCEPT", status="BAD")


def store_item(message: cmds.AppendMessage, now: float) -> tuple[bytes, tuple[str, ...], int, int]:
    """(data, flags, internaldate, tzoffset) of an append-message, as the store takes it."""
    if not message.data:
        raise CommandFailed(Code.NO_APPEND_INVALID, status="NO")  # nothing to store
    if message.date is None:
        internaldate, tzoffset = int(now), _local_offset_minutes(now)
    else:
        internaldate, tzoffset = message.date
    # Binary parts first: base64 has CRLF line ends only, so normalize_crlf leaves their octets be.
    # Outside them an LF octet is a line end (RFC 2045 section 2: 7bit, 8bit and the encodings
    # hold CR and LF only as CRLF); a part beyond the MIME limits (midb.mime.MAX_PARTS) is no
    # part to IMAP, only text of the part that holds it.
    data = normalize_crlf(binary_parts_as_base64(message.data) if message.binary else message.data)
    return data, message.flags, internaldate, tzoffset


def raise_trycreate_if_gone(session: Any, mailbox: str) -> None:
    """After the store's NoSuchFolder: NO [TRYCREATE] when the target mailbox is the one gone
    (deleted by another session since it was looked up), so that the client may create it and
    try again, as when it was missing from the start."""
    trycreate_folder(session, mailbox)


@command(cmds.Append, states=AUTHENTICATED)
def append(session: Any, cmd: cmds.Append) -> Done:
    refuse_utf8_unless_enabled(session, cmd.messages)
    store = session.store
    folder = trycreate_folder(session, cmd.mailbox.name)
    now = time.time()
    items = [store_item(message, now) for message in cmd.messages]
    view = session.selected
    try:
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
    except NoSuchFolder:
        raise_trycreate_if_gone(session, cmd.mailbox.name)
        raise
    return Done(Code.OK_APPEND, code=b"APPENDUID %d %s" % (uidvalidity, encode.sequence_set(uids)))
