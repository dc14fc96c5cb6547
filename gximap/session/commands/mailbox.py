"""Mailbox-level commands: CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB XLIST NAMESPACE STATUS.

Mailbox names arrive decoded (modified UTF-7, or UTF-8 once IMAP4rev2 is enabled) with INBOX
normalised, and leave through encode.mailbox_name. The store validates names (InvalidName for
empty components, "." / "..", control characters...), which the session maps to ``NO [CANNOT]``.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Generator
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.session import capabilities, condstore, listing
from gximap.session.base import AUTHENTICATED, CommandFailed, Done, coalesced, command
from midb import errors as midb_errors
from midb import objectids

DELIMITER = b'"/"'
CRLF = b"\r\n"
# RFC 5258 section 4: the only CHILDINFO selection criterion RECURSIVEMATCH can report here.
CHILDINFO_SUBSCRIBED = b' ("CHILDINFO" ("SUBSCRIBED"))'


def store_name(mailbox: cmds.MailboxName) -> str:
    """The name to hand to the store: one trailing hierarchy separator is dropped (RFC 3501
    6.3.3 lets CREATE declare a future parent that way; other commands accept it too)."""
    name = mailbox.name
    if len(name) > 1 and name.endswith(listing.SEPARATOR):
        name = name[:-1]
    return name


def new_mailbox_name(mailbox: cmds.MailboxName) -> str:
    """A name CREATE or RENAME is about to give a mailbox: LIST's wildcards are refused, since a
    mailbox called "a*" could never be listed on its own (Dovecot and Cyrus refuse them too).

    So is a name not in Unicode NFC: a mailbox name complies with Net-Unicode (RFC 6855
    section 3, RFC 5198 section 2), and a decomposed "café" would be a second mailbox that
    reads like the first. Refused rather than normalised: storing another name than the one
    asked for would leave the client looking for its own spelling. Only new names are held to
    it; lookups stay exact, so a folder stored under a non-NFC name earlier stays reachable,
    and can be renamed to its NFC form."""
    name = store_name(mailbox)
    if "%" in name or "*" in name:
        raise CommandFailed(Code.NO_INVALID_MAILBOX_NAME)
    if not name.isascii() and not unicodedata.is_normalized("NFC", name):
        raise CommandFailed(Code.NO_NAME_NOT_NFC)
    return name


def wire_name(session: Any, name: str) -> bytes:
    return encode.mailbox_name(name, session.utf8)


@functools.lru_cache(maxsize=256)
def attribute_list(attributes: tuple[str, ...]) -> bytes:
    """``(\\A \\B)``; a listing has a handful of distinct attribute sets, each built once."""
    return b"(" + b" ".join(attribute.encode("ascii") for attribute in attributes) + b")"


def existing_folder(session: Any, name: str, *, counters_only: bool = False) -> Any:
    """The folder's FolderInfo, or with ``counters_only`` its stored record (counters and
    identifiers, no subscription state); NO [NONEXISTENT] when there is no such folder."""
    store = session.store
    folder = (store.folder_counters if counters_only else store.get_folder)(session.user, name)
    if folder is None:
        raise CommandFailed(Code.NO_MAILBOX_NOT_FOUND)
    return folder


def mailbox_id_code(account_id: int, folder_id: int, uidvalidity: int) -> bytes:
    """``MAILBOXID (F...)``: the response code of SELECT and CREATE, and STATUS's item (RFC 8474)."""
    return b"MAILBOXID (%s)" % objectids.mailbox_id(account_id, folder_id, uidvalidity).encode("ascii")


# -- CREATE / DELETE / RENAME ------------------------------------------------------------------


@command(cmds.Create, states=AUTHENTICATED)
def create(session: Any, cmd: cmds.Create) -> Done:
    name = new_mailbox_name(cmd.mailbox)
    if name == listing.INBOX:
        raise CommandFailed(Code.NO_CREATE_INBOX)
    special_use = None
    if cmd.use:
        # RFC 6154 section 3: an attribute the server cannot honour fails with USEATTR. midb
        # keeps one special use per folder, and \All / \Flagged are virtual collections.
        if len(cmd.use) > 1 or cmd.use[0] not in listing.CREATABLE_SPECIAL_USE:
            raise CommandFailed(Code.NO_USEATTR)
        special_use = cmd.use[0]
    store = session.store
    created = store.create_folder(session.user, name, special_use=special_use,
                                  mailbox_quota_default=session.settings.default_mailbox_quota)
    # RFC 8474 section 4.1: the new mailbox's MAILBOXID in the tagged OK.
    return Done(Code.OK_CREATE, code=mailbox_id_code(store.account_id(session.user), created.id, created.uidvalidity))


@command(cmds.Delete, states=AUTHENTICATED)
def delete(session: Any, cmd: cmds.Delete) -> Generator[bytes, Any, Done]:
    name = store_name(cmd.mailbox)
    if name == listing.INBOX:
        raise CommandFailed(Code.NO_DELETE_INBOX)
    folder = existing_folder(session, name)
    try:
        session.store.delete_folder(session.user, name)
    except midb_errors.HasChildren:
        # midb has no \Noselect placeholders, so a parent cannot lose its messages and stay;
        # RFC 9051 section 7.1 names this case.
        raise CommandFailed(Code.NO_HAS_CHILDREN) from None
    selected = session.selected
    if selected is not None and selected.folder_id == folder.id:
        # The client deleted what it had selected: the session is back in the authenticated
        # state, and says so the way RFC 7162 / RFC 9051 announce a closed mailbox.
        yield session.close_announced()
    return Done(Code.OK_DELETE)


@command(cmds.Rename, states=AUTHENTICATED)
def rename(session: Any, cmd: cmds.Rename) -> Done:
    old = store_name(cmd.old)
    new = new_mailbox_name(cmd.new)
    if new == listing.INBOX:
        raise CommandFailed(Code.NO_RENAME_TO_INBOX)
    if old != listing.INBOX and new.startswith(old + listing.SEPARATOR):  # (INBOX's mail may go beneath it)
        raise CommandFailed(Code.NO_RENAME_INTO_SELF)
    settings = session.settings
    session.store.rename_folder(session.user, old, new, mailbox_quota_default=settings.default_mailbox_quota,
                                annotation_quota_default=settings.default_annotation_quota)
    if session.notify is not None:
        session.notify.own_rename(old, new)   # its events repeat modseqs others may have given (notify._may_be_taken_in)
    selected = session.selected
    # The selected folder keeps its id (and UIDVALIDITY); only its name follows. Renaming INBOX
    # moves the messages into a new folder and leaves INBOX in place (RFC 3501 6.3.5).
    if selected is not None and old != listing.INBOX:
        if selected.name == old:
            selected.name = new
        elif selected.name.startswith(old + listing.SEPARATOR):
            selected.name = new + selected.name[len(old):]
    return Done(Code.OK_RENAME)


# -- subscriptions ------------------------------------------------------------------------------


@command(cmds.Subscribe, states=AUTHENTICATED)
def subscribe(session: Any, cmd: cmds.Subscribe) -> Done:
    name = store_name(cmd.mailbox)
    # RFC 3501 6.3.6 allows checking that the mailbox exists; a subscription to a typo would
    # otherwise show up as \NonExistent forever. Deleting a mailbox keeps its subscription.
    existing_folder(session, name)
    try:
        generations = session.store.set_subscribed(session.user, name, True,
                                                   mailbox_quota_default=session.settings.default_mailbox_quota)
    except midb_errors.OverQuota:
        # Subscriptions outlive their mailboxes, so they are bounded apart (as many as mailboxes).
        raise CommandFailed(Code.NO_SUBSCRIPTION_LIMIT) from None
    if session.notify is not None:
        session.notify.own_subscription(name, True, generations)   # RFC 5465 section 5: not reported back
    return Done(Code.OK_SUBSCRIBE)


@command(cmds.Unsubscribe, states=AUTHENTICATED)
def unsubscribe(session: Any, cmd: cmds.Unsubscribe) -> Done:
    # Unsubscribing a name that is not subscribed changes nothing and is not an error.
    name = store_name(cmd.mailbox)
    generations = session.store.set_subscribed(session.user, name, False)
    if session.notify is not None:
        session.notify.own_subscription(name, False, generations)   # RFC 5465 section 5: not reported back
    return Done(Code.OK_UNSUBSCRIBE)


# -- LIST / LSUB / XLIST / NAMESPACE ------------------------------------------------------------


def _list_lines(session: Any, verb: bytes, entries: list[listing.ListEntry]) -> list[bytes]:
    """The ``* LIST`` (LSUB, XLIST) lines of a listing, made in one loop (it runs once per folder)."""
    utf8 = session.utf8
    mailbox_name = encode.mailbox_name
    return [b"* %b %b %b %b%b\r\n" % (verb, attribute_list(attributes), DELIMITER, mailbox_name(name, utf8),
                                      CHILDINFO_SUBSCRIBED if childinfo else b"")
            for name, attributes, _folder, childinfo, _meets_criteria in entries]


def _hierarchy_root(verb: bytes) -> bytes:
    """RFC 3501 6.3.8: an empty pattern asks for the delimiter and the reference's root, which
    is empty in gximap's single flat namespace."""
    return b"* " + verb + b" (\\Noselect) " + DELIMITER + b' ""' + CRLF


@command(cmds.List, states=AUTHENTICATED)
def list_command(session: Any, cmd: cmds.List) -> Generator[bytes, Any, Done]:
    selection = set(cmd.selection_opts)
    returns = set(cmd.return_opts)
    if "RECURSIVEMATCH" in selection and "SUBSCRIBED" not in selection:
        # RFC 5258 section 3 (and RFC 6154 section 3 for SPECIAL-USE): RECURSIVEMATCH needs a
        # selection option whose matches it can report through CHILDINFO (only SUBSCRIBED here).
        raise CommandFailed(Code.BAD_PARSE, "RECURSIVEMATCH needs the SUBSCRIBED selection option",
                            status="BAD")
    reference = cmd.reference.name
    if not selection and len(cmd.patterns) == 1 and cmd.patterns[0].name == "":
        yield _hierarchy_root(b"LIST")
        return Done(Code.OK_LIST)
    patterns = [listing.canonical_pattern(reference, pattern.name) for pattern in cmd.patterns if pattern.name]
    store = session.store
    status_items = cmd.status_items if "STATUS" in returns else None
    prefix = listing.literal_prefix(patterns)
    folders = store.folder_entries(session.user, prefix, records=bool(status_items))
    wants_subscriptions = "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
    subscriptions = store.subscriptions(session.user, prefix) if wants_subscriptions else ()
    entries = listing.list_mailboxes(
        folders, subscriptions, patterns,
        select_subscribed="SUBSCRIBED" in selection,
        select_special_use="SPECIAL-USE" in selection,
        recursive_match="RECURSIVEMATCH" in selection,
        return_subscribed="SUBSCRIBED" in returns,
    )
    if status_items and "HIGHESTMODSEQ" in status_items:
        yield from condstore.enable(session)  # a CONDSTORE enabling command (RFC 7162 section 3.1)
    lines = _list_lines(session, b"LIST", entries)
    if status_items:
        # RFC 5819 section 2: a STATUS response follows the LIST response of every listed mailbox
        # that can be selected and meets the selection criteria: none for \NonExistent names, nor
        # for a parent listed only for its CHILDINFO (the RFC's example A02).
        account_id = (status_account_id(session, status_items)
                      if any(entry.folder is not None for entry in entries) else None)
        lines = [response for entry, line in zip(entries, lines, strict=True)
                 for response in ((line,) if entry.folder is None or not entry.meets_criteria else
                                  (line, status_response(session, entry.folder.record, status_items, account_id)))]
    yield from coalesced(lines)
    return Done(Code.OK_LIST)


@command(cmds.Lsub, states=AUTHENTICATED)
def lsub(session: Any, cmd: cmds.Lsub) -> Generator[bytes, Any, Done]:
    pattern = cmd.pattern.name
    if pattern:
        store = session.store
        pattern = listing.canonical_pattern(cmd.reference.name, pattern)
        prefix = listing.literal_prefix([pattern])
        entries = listing.lsub_mailboxes(store.folder_names(session.user, prefix),
                                         store.subscriptions(session.user, prefix), pattern)
        yield from coalesced(_list_lines(session, b"LSUB", entries))
    return Done(Code.OK_LSUB)


@command(cmds.Xlist, states=AUTHENTICATED)
def xlist(session: Any, cmd: cmds.Xlist) -> Generator[bytes, Any, Done]:
    pattern = cmd.pattern.name
    if not pattern:
        yield _hierarchy_root(b"XLIST")
        return Done(Code.OK_XLIST)
    pattern = listing.canonical_pattern(cmd.reference.name, pattern)
    folders = session.store.folder_entries(session.user, listing.literal_prefix([pattern]))
    entries = listing.xlist_mailboxes(folders, pattern)
    yield from coalesced(_list_lines(session, b"XLIST", entries))
    return Done(Code.OK_XLIST)


@command(cmds.Namespace, states=AUTHENTICATED)
def namespace(session: Any, cmd: cmds.Namespace) -> Generator[bytes, Any, Done]:
    # One personal namespace, no other users' or shared namespaces (RFC 2342).
    yield b'* NAMESPACE (("" ' + DELIMITER + b")) NIL NIL" + CRLF
    return Done(Code.OK_NAMESPACE)


# -- STATUS -------------------------------------------------------------------------------------


def recent_count(session: Any, folder: Any) -> int:
    """Messages above the folder's \\Recent floor (no session has claimed them yet) and, in the
    selected mailbox, those this session sees as \\Recent (it claimed them, or was told of them
    first): the number its FETCH FLAGS shows, as SELECT's RECENT did. Only the keys above the
    floor are read; the session's own come from its view (read-only, some of them may lie above
    the floor too: counted once)."""
    floor = folder.recent_floor
    # Nothing above the floor (the usual case): no store read.
    unclaimed = (session.store.count_above(session.user, folder.id, floor)
                 if folder.messages and floor < folder.uidnext - 1 else 0)
    view = session.selected
    if view is None or view.folder_id != folder.id or not view.recent:
        return unclaimed
    return unclaimed + sum(1 for uid in view.recent if uid <= floor)


def kib(octets: int) -> int:
    """RFC 9208 storage units (1024 octets), rounded up: one stored octet is not "0 used"."""
    return -(-octets // 1024)


def deleted_storage(session: Any, folder: Any) -> int:
    """STATUS DELETED-STORAGE (RFC 9208): what EXPUNGE would free, in KiB. The
    folder counts its \\Deleted messages, so the common case (none) costs nothing."""
    if not folder.deleted:
        return 0
    metas = session.store.messages(session.user, folder.id)
    return kib(sum(meta.size for meta in metas if "\\Deleted" in meta.flags))


def status_account_id(session: Any, items: tuple[str, ...]) -> int | None:
    """The account id status_response needs for MAILBOXID, None without that item: read once
    per command, not once per folder of a LIST-STATUS."""
    return session.store.account_id(session.user) if "MAILBOXID" in items else None


def status_response(session: Any, folder: Any, items: tuple[str, ...], account_id: int | None) -> bytes:
    """``* STATUS name (item value ...)`` in the order the client asked; ``account_id`` from
    status_account_id."""
    values: list[bytes] = []
    for item in items:
        if item == "MAILBOXID":
            assert account_id is not None
            values.append(mailbox_id_code(account_id, folder.id, folder.uidvalidity))
            continue
        if item == "MESSAGES":
            value = folder.messages
        elif item == "RECENT":
            value = recent_count(session, folder)
        elif item == "UIDNEXT":
            value = folder.uidnext
        elif item == "UIDVALIDITY":
            value = folder.uidvalidity
        elif item == "UNSEEN":
            value = folder.unseen
        elif item == "DELETED":
            value = folder.deleted
        elif item == "SIZE":
            value = folder.size
        elif item == "HIGHESTMODSEQ":
            value = folder.highestmodseq
        elif item == "DELETED-STORAGE":
            value = deleted_storage(session, folder)
        elif item == "APPENDLIMIT":
            value = capabilities.append_limit(session)
        else:
            continue
        values.append(item.encode("ascii") + b" %d" % value)
    return b"* STATUS " + wire_name(session, folder.name) + b" (" + b" ".join(values) + b")" + CRLF


@command(cmds.Status, states=AUTHENTICATED)
def status(session: Any, cmd: cmds.Status) -> Generator[bytes, Any, Done]:
    # STATUS on the selected mailbox is allowed (RFC 9051 6.3.11); the counters are the store's,
    # read from the folder record alone (STATUS needs no subscription state).
    folder = existing_folder(session, store_name(cmd.mailbox), counters_only=True)
    if "HIGHESTMODSEQ" in cmd.items:
        yield from condstore.enable(session)  # a CONDSTORE enabling command (RFC 7162 section 3.1)
    yield status_response(session, folder, cmd.items, status_account_id(session, cmd.items))
    return Done(Code.OK_STATUS)
