"""REPLACE and UID REPLACE (RFC 8508): save a new version of a message (a draft, a note) in one
step instead of APPEND, STORE \\Deleted and UID EXPUNGE.

The new message is stored in the named mailbox and the old one expunged from the selected
mailbox in ONE store transaction (``midb.store.Store.replace``): the old message is never gone
without its replacement durable, and a refused replacement (quota, a mailbox missing, the old
message expunged meanwhile) leaves the old one in place. The quota is checked for the net
change, so an account at its limit can still save a draft again.

Responses, in this order: ``* OK [APPENDUID v uid]`` (UIDPLUS: in an untagged OK, since the
tagged line may carry QRESYNC's ``[HIGHESTMODSEQ n]``), the old message's ``EXPUNGE``
(``VANISHED`` with QRESYNC), then, when the target is the selected mailbox, the new message's
``EXISTS`` in the update before the tagged OK.

Refusals: a message number beyond the count is BAD, as for any command; a UID not in the
selected mailbox is ``NO [NONEXISTENT]`` (there is nothing to replace); one another session
expunged and this one was not told of yet is ``NO [EXPUNGEISSUED]``; a mailbox opened by EXAMINE
is NO, since the old message cannot be expunged; a missing target is ``NO [TRYCREATE]`` (also
when another session deletes it meanwhile). These are also checked when the client announces its
message as a synchronising literal (``refusal``, as far as the text before the literal names
them), so that it is not sent for nothing; there an EXPUNGEISSUED comes only for an expunge this
session has heard of, with the pending updates before it, and a REPLACE with no mailbox selected
and a message too big (``NO [TOOBIG]``, as APPEND's) are refused too.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.session.base import SELECTED, CommandFailed, Done, command
from gximap.session.commands.append import (
    catenated,
    raise_trycreate_if_gone,
    refuse_utf8_unless_enabled,
    store_item,
)
from gximap.session.errors import trycreate_folder
from midb.errors import NoSuchFolder


def _replaced_uid(session: Any, uid: bool, number: int | None) -> int:
    """The UID of the message a REPLACE names (``*``: the last); raises CommandFailed."""
    view = session.selected
    exists = view.exists
    if number is None:
        if not exists:
            raise CommandFailed(Code.BAD_SEQUENCE_NUMBER, status="BAD")
        old_uid = view.uid_at(exists)
    elif uid:
        if view.msn_of(number) is None:
            raise CommandFailed(Code.NO_REPLACE_NO_SUCH_UID, status="NO")
        old_uid = number
    else:
        if number > exists:
            raise CommandFailed(Code.BAD_SEQUENCE_NUMBER, status="BAD")
        old_uid = view.uid_at(number)
    if old_uid in view.pending_expunge:
        raise CommandFailed(Code.NO_EXPUNGE_ISSUED, status="NO")
    return old_uid


def _prepare(session: Any, uid: bool, number: int | None, mailbox: str) -> tuple[int, Any]:
    """(the UID to replace, the target folder), or CommandFailed with the refusal."""
    if session.selected.readonly:
        raise CommandFailed(Code.NO_READ_ONLY, status="NO")   # the old message cannot be expunged
    old_uid = _replaced_uid(session, uid, number)
    return old_uid, trycreate_folder(session, mailbox)


def refusal(session: Any, uid: bool, number: int | None, mailbox: str) -> Done | None:
    """How a REPLACE named this way before its message literal will be refused, or None."""
    try:
        _prepare(session, uid, number, mailbox)
    except CommandFailed as failed:
        return failed.done
    return None


@command(cmds.Replace, states=SELECTED)
def replace(session: Any, cmd: cmds.Replace) -> Generator[bytes, Any, Done]:
    refuse_utf8_unless_enabled(session, (cmd.message,))
    view = session.selected
    old_uid, target = _prepare(session, cmd.uid, cmd.number, cmd.mailbox.name)
    (message,) = catenated(session, (cmd.message,))   # RFC 8508 section 3: CATENATE too
    data, flags, internaldate, tzoffset = store_item(message, time.time())
    into_view = target.id == view.folder_id
    try:
        uidvalidity, new_uid, floor, tombstone = session.store.replace(
            session.user, target.id, data, replacing=(view.folder_id, old_uid), flags=flags,
            internaldate=internaldate, tzoffset=tzoffset, claim=into_view)
    except NoSuchFolder:  # (MessageGone, the old one expunged elsewhere: NO [EXPUNGEISSUED] by errors.py)
        raise_trycreate_if_gone(session, cmd.mailbox.name)
        raise
    if into_view:
        if floor is not None:
            view.note_claim(floor, new_uid)
        view.note_own_arrivals((new_uid,))
    view.note_own_changes_of([(old_uid, tombstone)])
    appenduid = b"* OK [APPENDUID %d %d] " % (uidvalidity, new_uid)
    yield appenduid + session.text(Code.INFO_REPLACEMENT_STORED) + b"\r\n"
    yield from view.expunge_responses([old_uid])
    view.force_highestmodseq = True
    return Done(Code.OK_REPLACE)
