"""Opening and closing mailboxes: SELECT EXAMINE CHECK CLOSE UNSELECT, and IDLE (RFC 2177).

SELECT/EXAMINE always report ``[HIGHESTMODSEQ]`` (midb keeps mod-sequences for every mailbox) and
take RFC 7162's CONDSTORE and QRESYNC parameters: QRESYNC (after ENABLE QRESYNC, else BAD)
resynchronises the client's cache with VANISHED (EARLIER) and FETCH responses
(gximap.session.condstore).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.session import condstore, listing
from gximap.session.base import AUTHENTICATED, SELECTED, Await, CommandFailed, Done, NeedLine, command
from gximap.session.commands.mailbox import attribute_list, mailbox_id_code, store_name, wire_name
from gximap.session.pieces import in_pieces
from gximap.session.selected import SelectedMailbox

CRLF = b"\r\n"
SEEN = "\\Seen"


def mailbox_keywords(session: Any, view: SelectedMailbox) -> tuple[list[str], int | None]:
    """(keywords in use, UID of the first unseen message or None).

    Both come from midb's flag indexes (a few keys, whatever the folder's size). The first-unseen
    UID is only looked for when the client speaks IMAP4rev1 (rev2 dropped [UNSEEN]) and has not
    enabled UIDONLY ([UNSEEN n] is a message number, which RFC 9586 section 3 rules out)."""
    store = session.store
    keywords = store.keywords(view.account, view.folder_id)
    wanted = not session.rev2 and not session.uidonly
    first_unseen = store.first_unseen(view.account, view.folder_id) if wanted else None
    return keywords, first_unseen


def _info(session: Any, code: bytes, text: Code) -> bytes:
    return b"* OK [" + code + b"] " + session.text(text) + CRLF


@command(cmds.Select, states=AUTHENTICATED)
def select(session: Any, cmd: cmds.Select) -> Generator[bytes, Any, Done]:
    if cmd.qresync is not None:
        # RFC 7162 section 3.2.5: the QRESYNC parameter needs ENABLE QRESYNC first.
        if not session.qresync_enabled:
            raise CommandFailed(Code.BAD_NOT_ENABLED, "QRESYNC", status="BAD")
        condstore.check_qresync(cmd.qresync)
    # RFC 3501 6.3.1: the selected mailbox is closed first (without expunging), even if the new
    # SELECT fails. A server supporting QRESYNC says so with [CLOSED] (RFC 7162 3.2.11), whether
    # or not the client enabled it (an IMAP4rev1 client ignores a code it does not know), as
    # Dovecot does.
    if session.selected is not None:
        yield session.close_announced()
    if cmd.condstore:
        condstore.enable(session)  # no mailbox is selected now: nothing to announce
    store = session.store
    name = store_name(cmd.mailbox)
    found = store.get_folder(session.user, name)
    if found is None:
        raise CommandFailed(Code.NO_MAILBOX_NOT_FOUND)
    view = SelectedMailbox(store, session.user, found, readonly=cmd.examine, session=session)
    folder = view.open()
    keywords, first_unseen_uid = mailbox_keywords(session, view)
    yield from view.flags_lines(keywords)
    yield b"* %d EXISTS\r\n" % view.exists
    if not session.rev2:
        yield b"* %d RECENT\r\n" % len(view.recent)
        first_unseen = view.msn_of(first_unseen_uid) if first_unseen_uid is not None else None
        if first_unseen is not None:
            yield _info(session, b"UNSEEN %d" % first_unseen, Code.INFO_UNSEEN)
    yield _info(session, b"UIDVALIDITY %d" % view.uidvalidity, Code.INFO_UIDVALIDITY)
    yield _info(session, b"UIDNEXT %d" % folder.uidnext, Code.INFO_UIDNEXT)
    # RFC 7162 section 3.1.2.1: a server keeping mod-sequences for the mailbox MUST send
    # HIGHESTMODSEQ on every successful SELECT/EXAMINE, CONDSTORE-aware client or not. Every midb
    # mailbox keeps them, so never NOMODSEQ. Placed after UIDNEXT, as in the RFC's and Dovecot's.
    yield _info(session, b"HIGHESTMODSEQ %d" % view.modseq, Code.INFO_HIGHESTMODSEQ)
    yield _info(session, mailbox_id_code(view.account_id, view.folder_id, view.uidvalidity),
                Code.INFO_MAILBOXID)   # RFC 8474 section 4.2
    if session.rev2:
        # RFC 9051 6.3.2: a LIST response with the mailbox's name and accurate attributes.
        attributes = listing.folder_attributes(folder, store.has_children(session.user, folder.name))
        yield b"* LIST " + attribute_list(attributes) + b' "/" ' + wire_name(session, folder.name) + CRLF
    if cmd.qresync is not None:
        yield from condstore.qresync_responses(session, view, cmd.qresync)
    session.select(view)
    if cmd.examine:
        return Done(Code.OK_EXAMINE, code=b"READ-ONLY")
    return Done(Code.OK_SELECT, code=b"READ-WRITE")


@command(cmds.Check, states=SELECTED)
def check(session: Any, cmd: cmds.Check) -> Done:
    # midb commits every change durably as it happens: nothing to checkpoint.
    return Done(Code.OK_CHECK)


@command(cmds.Close, states=SELECTED)
def close(session: Any, cmd: cmds.Close) -> Generator[bytes | Await, Any, Done]:
    """Expunge \\Deleted messages silently (unless read-only), in pieces as EXPUNGE does
    (gximap.session.pieces), then leave the mailbox. With QRESYNC, a CLOSE that removed messages
    gives the new HIGHESTMODSEQ in its tagged OK (RFC 7162 section 3.2.8, RFC 5162 section 3.4),
    as EXPUNGE does: the highest the client may resynchronise from without missing a change
    (SelectedMailbox.highestmodseq_at_close)."""
    view = session.selected
    highestmodseq = None
    if not view.readonly:
        store = session.store
        expunged_any = False

        def write(piece: Sequence[int]) -> list[tuple[int, int]]:
            return store.expunge_tombstones(view.account, view.folder_id, piece)

        def report(_piece: Sequence[int], tombstones: list[tuple[int, int]]) -> tuple[()]:
            nonlocal expunged_any
            view.note_own_changes_of(tombstones)
            expunged_any = expunged_any or bool(tombstones)
            return ()   # CLOSE expunges silently

        deleted = store.deleted_uids(view.account, view.folder_id)
        yield from in_pieces(deleted, write, report, progress=session.progress)
        if expunged_any and session.qresync_enabled:
            highestmodseq = view.highestmodseq_at_close()
    session.select(None)
    return Done(Code.OK_CLOSE, sync=False,
                code=None if highestmodseq is None else b"HIGHESTMODSEQ %d" % highestmodseq)


@command(cmds.Unselect, states=SELECTED)
def unselect(session: Any, cmd: cmds.Unselect) -> Done:
    session.select(None)
    return Done(Code.OK_UNSELECT, sync=False)


@command(cmds.Idle, states=AUTHENTICATED)
def idle(session: Any, cmd: cmds.Idle) -> Generator[NeedLine, bytes, Done]:
    """RFC 2177. While the session waits for DONE it pushes mailbox changes as they happen."""
    line = yield NeedLine(b"+ " + session.text(Code.CONT_IDLING) + CRLF, idle=True)
    if line.strip(b" \t").upper() != b"DONE":
        raise CommandFailed(Code.BAD_EXPECTED_DONE, status="BAD")
    return Done(Code.OK_IDLE)
