"""RFC 5465 NOTIFY: which changes of the account a session reports unasked, and the NOTIFY command.

The session watches its account (midb.events: every commit names the folders it changed, and
midb's notices name subscription and annotation changes). A watch callback only records which
folders changed (any thread; a set bounded by the account's folders); the session turns them into
responses on its own worker, between commands, during IDLE, or before a command's tagged answer
(ImapSession._push_notifications). For the other mailboxes it compares each changed folder with
what it last reported (a snapshot of the account's folders taken at NOTIFY SET):

* MessageNew / MessageExpunge / FlagChange: ``* STATUS name (MESSAGES UIDNEXT UIDVALIDITY UNSEEN
  [HIGHESTMODSEQ])`` when its counters moved (HIGHESTMODSEQ once CONDSTORE is enabled; in NOTIFY
  SET STATUS's first report also for a mailbox whose events include FlagChange);
* MailboxName: ``* LIST`` of a new mailbox, ``(\\NonExistent)`` for a deleted one, and the new name
  with RFC 5258's ``("OLDNAME" (old))`` for a renamed one (RFC 5465 section 5.4);
* SubscriptionChange: ``* LIST (\\Subscribed)`` or ``()`` for the name (section 5.5), with
  ``\\NonExistent`` when no mailbox has that name (RFC 5258 section 3);
* MailboxMetadataChange / ServerMetadataChange: ``* METADATA name entry ...`` naming the entries
  whose values changed (RFC 5464 section 4.4.2), found by comparing digests of the values.

The selected mailbox's message events are its usual updates (gximap.session.selected), pushed as
the SELECTED or SELECTED-DELAYED filter asks, with MessageNew's fetch attributes in the forms
that leave \\Seen alone (message_new_items); its folder counters are not read for them.
AnnotationChange (RFC 5257 message annotations, which gximap does not have) and unknown events
are declined with NO [BADEVENT] (section 5).

Bound: at most MAX_PENDING folders (and notices) may wait to be reported. A burst beyond it, or a
client that does not read its notifications while they pile up, ends in ``* OK
[NOTIFICATIONOVERFLOW]`` and NOTIFY NONE (section 5.8): the client then re-reads what it needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Generator, Iterable
from typing import Any, NamedTuple

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.session import condstore, listing
from gximap.session.base import AUTHENTICATED, CommandFailed, Done, coalesced, command
from gximap.session.commands.mailbox import DELIMITER, status_response, wire_name
from midb import events
from midb.metadata import SERVER

# Folders (and notices) whose changes may wait to be reported; one more is an overflow.
MAX_PENDING = 1000
# Output items already queued for the client beyond which no more notifications are made: a client
# that does not read lets its changes pile up in the pending set instead, towards MAX_PENDING.
OUTPUT_BACKLOG = 256

SELECTED_FILTERS = ("selected", "selected-delayed")
MESSAGE_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange")
SUPPORTED_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange",
                    "MailboxMetadataChange", "ServerMetadataChange")
BADEVENT_CODE = b"BADEVENT (" + " ".join(SUPPORTED_EVENTS).encode("ascii") + b")"
STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
METADATA_ROOTS = ("/private", "/shared")
# The events whose responses depend on the names of the account's mailboxes as they are now (a
# LIST's name and \\HasChildren, \\NonExistent; the mailbox a METADATA names): with one of them
# set, every changed folder is read, the selected one too (it may have been renamed or deleted).
NAME_EVENTS = frozenset({"MailboxName", "SubscriptionChange", "MailboxMetadataChange"})


class Pending(NamedTuple):
    """The changes heard since the last report: folder ids, and (folder id, notice) pairs."""

    folders: set[int]
    notices: set[tuple[int, int]]


def message_new_items(fetch_atts: Iterable[cmds.FetchAtt]) -> tuple[cmds.FetchAtt, ...]:
    """MessageNew's fetch attributes as they are fetched: the forms that set \\Seen as their
    .PEEK forms, and one item per response label (BODY[] with BODY.PEEK[] is one, as in FETCH).

    RFC 5465 section 5.2: "The client SHOULD NOT use FETCH attributes that implicitly set the
    \\seen flag, or that presuppose the existence of a given bodypart." What a server does with
    one it is sent anyway is left open; here a notification, which the client did not ask for at
    that moment, never changes the mailbox (nor what other sessions see as unread)."""
    by_label: dict[bytes, cmds.FetchAtt] = {}
    for att in fetch_atts:
        if att.sets_seen:
            att = dataclasses.replace(att, peek=True)
        by_label.setdefault(att.response_label(), att)
    return tuple(by_label.values())


class _Seen(NamedTuple):
    """What was last reported (or known at NOTIFY SET) of a folder."""

    name: str
    messages: int
    uidnext: int
    uidvalidity: int
    unseen: int
    highestmodseq: int


def _seen(folder: Any) -> _Seen:
    return _Seen(folder.name, folder.messages, folder.uidnext, folder.uidvalidity, folder.unseen,
                 folder.highestmodseq)


class NotifyState:
    """One session's NOTIFY SET (or NONE: no groups)."""

    def __init__(self, groups: tuple[cmds.NotifyGroup, ...]) -> None:
        self.groups = groups
        self.selected_group = next((group for group in groups if group.kind in SELECTED_FILTERS), None)
        self.message_new_items = message_new_items(self.selected_group.fetch_atts if self.selected_group else ())
        self._others = [group for group in groups if group.kind not in SELECTED_FILTERS]
        wanted = self.events_wanted()
        self._names_matter = bool(NAME_EVENTS & wanted)
        self._lists_mailboxes = "MailboxName" in wanted
        self._lists_subscriptions = "SubscriptionChange" in wanted
        self._lock = threading.Lock()
        self._dirty: set[int] = set()      # folder ids changed since the last report
        self._notices: set[tuple[int, int]] = set()   # (folder id, notice) likewise
        self._overflow = False
        self.folders: dict[int, _Seen] = {}
        self.subscriptions: set[str] = set()
        self.metadata: dict[int, dict[str, bytes]] = {}   # folder id (0: server) -> entry -> digest
        self._names_now: set[str] = set()   # the account's folder names, during a report that lists names
        self.watch: Any = None

    @property
    def active(self) -> bool:
        return bool(self.groups)

    def events_wanted(self) -> set[str]:
        return {event for group in self.groups for event in group.events}

    def cancel(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None

    # -- which mailboxes and events ------------------------------------------------------------

    def _filter_matches(self, group: cmds.NotifyGroup, name: str) -> bool:
        kind = group.kind
        if kind == "personal":
            return True   # the one personal namespace holds every mailbox of the account
        if kind == "inboxes":
            # RFC 5465 section 6: the mailboxes mail is delivered to. gximap delivers to INBOX
            # only (filters that file mail elsewhere are the MDA's, unknown here).
            return name == listing.INBOX
        if kind == "subscribed":
            return name in self.subscriptions
        if kind == "subtree":
            return any(name == mailbox.name or name.startswith(mailbox.name + listing.SEPARATOR)
                       for mailbox in group.mailboxes)
        if kind == "mailboxes":
            return any(name == mailbox.name for mailbox in group.mailboxes)
        return False

    def wants(self, name: str, event: str) -> bool:
        """Whether ``event`` of mailbox ``name``, not the selected one's message events (those
        are the SELECTED filter's: ImapSession._push_notifications), is to be reported: the first
        group whose filter names the mailbox and that lists the event (or NONE) decides (RFC 5465
        section 6)."""
        for group in self._others:
            if not self._filter_matches(group, name):
                continue
            if not group.events:
                return False   # NONE: nothing of these mailboxes
            if event in group.events:
                return True
        return False

    # -- hearing of changes (any thread) -------------------------------------------------------

    def heard(self, folder_id: int, modseq: int) -> bool:
        """A commit changed ``folder_id``: note it; False when nothing is to be reported."""
        if not self.groups:
            return False
        with self._lock:
            if self._overflow:
                return False
            if events.is_notice(modseq):
                self._notices.add((folder_id, modseq))
            else:
                self._dirty.add(folder_id)
            if len(self._dirty) + len(self._notices) > MAX_PENDING:
                self._overflow = True
        return True

    # -- snapshot ------------------------------------------------------------------------------

    def take_snapshot(self, session: Any) -> None:
        """What the account holds now: the base later changes are compared with."""
        store = session.store
        user = session.user
        entries = store.folder_entries(user, records=True)
        self.folders = {entry.id: _seen(entry.record) for entry in entries if entry.record is not None}
        self.subscriptions = set(store.subscriptions(user))
        wanted = self.events_wanted()
        if "MailboxMetadataChange" in wanted:
            for folder_id, seen in self.folders.items():
                if self.wants(seen.name, "MailboxMetadataChange"):
                    self.metadata[folder_id] = _metadata_digests(store, user, folder_id)
        if "ServerMetadataChange" in wanted:
            self.metadata[SERVER] = _metadata_digests(store, user, SERVER)

    # -- reporting (the session's worker) ------------------------------------------------------

    def take_pending(self) -> Pending | None:
        """The changes heard since the last report, now the caller's to report; None on overflow
        (the caller turns NOTIFY off and says so)."""
        with self._lock:
            if self._overflow:
                self._dirty.clear()
                self._notices.clear()
                return None
            pending = Pending(self._dirty, self._notices)
            self._dirty, self._notices = set(), set()
        return pending

    def report(self, session: Any, pending: Pending) -> list[bytes]:
        """The responses for ``pending`` (take_pending's), but the selected mailbox's message
        events (its view's updates). Every read comes before anything is reported or noted as
        reported: a store error leaves the changes pending, for the next try."""
        dirty, notices = pending
        selected = session.selected
        if selected is not None and not self._names_matter:
            # Its counters are for a STATUS, which the selected mailbox never gets: not read. (Its
            # snapshot stays: once the mailbox is left, its next change is compared with that, and
            # its STATUS may repeat what the client saw while the mailbox was selected.)
            dirty = dirty - {selected.folder_id}
        if not dirty and not notices:
            return []   # (every command's end with NOTIFY set comes here)
        store, user = session.store, session.user
        try:
            found = {folder_id: store.folder_by_id(user, folder_id) if folder_id else None for folder_id in dirty}
            subscriptions = (set(store.subscriptions(user))
                             if any(notice == events.NOTICE_SUBSCRIPTIONS for _folder, notice in notices) else None)
            # The names a LIST of a new or renamed mailbox (\HasChildren) or of a subscription
            # (\NonExistent) is told from: the store's, as the folders heard of may be fewer (a
            # child the same commit made: each folder has an event of its own, and the pool may
            # serve the session between two).
            lists_names = (subscriptions is not None and self._lists_subscriptions) or self._new_names(found)
            names_now = set(store.folder_names(user)) if lists_names else None
            annotated = [(folder_id, name, _metadata_digests(store, user, folder_id))
                         for folder_id, name in self._annotated(notices, found)]
        except Exception:
            with self._lock:
                self._dirty |= pending.folders
                self._notices |= notices
            raise
        self._names_now = names_now or set()
        out: list[bytes] = []
        if subscriptions is not None:
            out.extend(self._subscription_changes(session, subscriptions))
        # In name order: parents a CREATE or RENAME made come before the folder beneath them.
        for folder_id, folder in sorted(found.items(), key=lambda item: self._report_order(*item)):
            out.extend(self._folder_changes(session, folder_id, folder))
        for folder_id, name, digests in annotated:
            out.extend(self._metadata_changes(session, folder_id, name, digests))
        return out

    def _new_names(self, found: dict[int, Any]) -> bool:
        """Whether ``found`` holds a mailbox MailboxName may list: one not known before, or renamed."""
        if not self._lists_mailboxes:
            return False
        for folder_id, folder in found.items():
            if folder is not None:
                old = self.folders.get(folder_id)
                if old is None or old.name != folder.name:
                    return True
        return False

    def _annotated(self, notices: set[tuple[int, int]], found: dict[int, Any]) -> list[tuple[int, str]]:
        """The folders (SERVER: the account) whose annotation changes in ``notices`` are to be
        reported, in folder id order, each with its name after the changes ``found`` holds."""
        out = []
        for folder_id in sorted(folder for folder, notice in notices if notice == events.NOTICE_METADATA):
            if folder_id == SERVER:
                if self.wants_server_metadata():
                    out.append((SERVER, ""))
                continue
            folder = found[folder_id] if folder_id in found else self.folders.get(folder_id)
            if folder is not None and self.wants(folder.name, "MailboxMetadataChange"):
                out.append((folder_id, folder.name))
        return out

    def _report_order(self, folder_id: int, folder: Any) -> tuple[str, int]:
        if folder is not None:
            return folder.name, folder_id
        old = self.folders.get(folder_id)
        return (old.name if old is not None else ""), folder_id

    def _subscription_changes(self, session: Any, now: set[str]) -> list[bytes]:
        """``now``: the subscriptions as read for this report."""
        before, self.subscriptions = self.subscriptions, now
        out = []
        for name in sorted(now ^ before):
            if self.wants(name, "SubscriptionChange"):
                # RFC 5258 section 3: a subscribed name without a mailbox is \NonExistent, in the
                # attributes LIST (SUBSCRIBED) gives it (gximap.session.listing).
                attributes = [listing.SUBSCRIBED] if name in now else []
                if name not in self._names_now:
                    attributes.append(listing.NONEXISTENT)
                out.append(b"* LIST (%b) %b %b\r\n" % (" ".join(attributes).encode("ascii"), DELIMITER,
                                                        wire_name(session, name)))
        return out

    def _children_attribute(self, name: str) -> bytes:
        prefix = name + listing.SEPARATOR
        has = any(known.startswith(prefix) for known in self._names_now)
        return (listing.HAS_CHILDREN if has else listing.HAS_NO_CHILDREN).encode("ascii")

    def _folder_changes(self, session: Any, folder_id: int, folder: Any) -> list[bytes]:
        """The responses for one changed folder (``folder``: as it is now, None when gone)."""
        old = self.folders.get(folder_id)
        out: list[bytes] = []
        if folder is None:
            if old is not None:
                del self.folders[folder_id]
                self.metadata.pop(folder_id, None)
                if self.wants(old.name, "MailboxName"):
                    out.append(b"* LIST (\\NonExistent) %b %b\r\n" % (DELIMITER, wire_name(session, old.name)))
            return out
        seen = self.folders[folder_id] = _seen(folder)
        if old is None or old.name != folder.name:
            # (Parents a CREATE or RENAME made on the way have events of their own: midb
            # announces every folder a commit makes. report's name order puts them first.)
            if self.wants(folder.name, "MailboxName") or (old is not None and self.wants(old.name, "MailboxName")):
                # RFC 5465 section 5.4, RFC 5258 section 3.5: a rename says the old name.
                oldname = b"" if old is None else b' ("OLDNAME" (%b))' % wire_name(session, old.name)
                out.append(self._list_line(session, folder.name, oldname))
            if old is None:
                return out
        selected = session.selected
        if selected is not None and selected.folder_id == folder_id:
            return out   # its message events are the selected mailbox's updates (read for NAME_EVENTS)
        counts_moved = (old.messages, old.uidnext, old.uidvalidity) != (seen.messages, seen.uidnext, seen.uidvalidity)
        # A flag change shows in UNSEEN, and in HIGHESTMODSEQ only when that is sent (CONDSTORE
        # enabled): a STATUS for a modseq alone would say nothing new (Dovecot sends none either).
        flags_moved = old.unseen != seen.unseen or (
            old.highestmodseq != seen.highestmodseq and condstore.enabled(session))
        if ((counts_moved and (self.wants(folder.name, "MessageNew") or self.wants(folder.name, "MessageExpunge")))
                or (flags_moved and self.wants(folder.name, "FlagChange"))):
            out.append(status_line(session, folder))
        return out

    def _list_line(self, session: Any, name: str, extra: bytes = b"") -> bytes:
        return b"* LIST (%b) %b %b%b\r\n" % (self._children_attribute(name), DELIMITER, wire_name(session, name), extra)

    def _metadata_changes(self, session: Any, folder_id: int, name: str, now: dict[str, bytes]) -> list[bytes]:
        """``now``: the digests of the annotations of folder ``name`` (SERVER: the account's, "")
        as read for this report."""
        before = self.metadata.get(folder_id, {})
        self.metadata[folder_id] = now
        changed = sorted(entry for entry in before.keys() | now.keys() if before.get(entry) != now.get(entry))
        if not changed:
            return []
        mailbox = wire_name(session, name) if name else b'""'
        return [b"* METADATA %b %b\r\n" % (mailbox, b" ".join(entry.encode("ascii") for entry in changed))]

    def wants_server_metadata(self) -> bool:
        # RFC 5465 section 5.7: an event of the server, not of a mailbox: any group may ask.
        return any("ServerMetadataChange" in group.events for group in self._others)


def status_line(session: Any, folder: Any, *, highestmodseq: bool = False) -> bytes:
    """``* STATUS``, with HIGHESTMODSEQ once CONDSTORE is enabled (RFC 5465 sections 5.1-5.3) or
    when ``highestmodseq`` asks for it."""
    with_modseq = highestmodseq or condstore.enabled(session)
    items = STATUS_ITEMS + (("HIGHESTMODSEQ",) if with_modseq else ())
    return status_response(session, folder, items, None)


def _metadata_digests(store: Any, user: str, folder_id: int) -> dict[str, bytes]:
    """The folder's (or with SERVER the account's) annotations as entry -> digest of the value:
    what a change is found by, without holding the values (up to the annotation quota)."""
    found = store.get_metadata(user, folder_id, METADATA_ROOTS, depth="infinity")
    return {entry: hashlib.blake2b(value, digest_size=16).digest() for entry, value in found.items()}


def _unsupported(groups: Iterable[cmds.NotifyGroup]) -> list[str]:
    return sorted({event for group in groups for event in group.events if event not in SUPPORTED_EVENTS})


@command(cmds.Notify, states=AUTHENTICATED)
def notify(session: Any, cmd: cmds.Notify) -> Generator[bytes, Any, Done]:
    """RFC 5465 section 3. NOTIFY NONE: no notifications at all, IDLE's included (section 4);
    NOTIFY SET replaces what was set before, and with STATUS first reports every mailbox its
    message events cover (but the selected one)."""
    if cmd.groups is None:
        session.set_notify(NotifyState(()))
        return Done(Code.OK_NOTIFY)
    if _unsupported(cmd.groups):
        # Section 5: NO [BADEVENT (the events this server supports)]; what was set stays.
        raise CommandFailed(Code.NO_NOTIFY_BAD_EVENT, status="NO", code=BADEVENT_CODE)
    state = NotifyState(cmd.groups)
    session.set_notify(state)
    if cmd.status:
        selected = session.selected
        lines = []
        for folder_id, seen in sorted(state.folders.items(), key=lambda item: item[1].name):
            if selected is not None and selected.folder_id == folder_id:
                continue
            if any(state.wants(seen.name, event) for event in MESSAGE_EVENTS):
                # The counters of the snapshot just taken (a _Seen holds what STATUS says): a
                # change since is pending, and reported against them. Section 3.1: with
                # FlagChange the STATUS has UIDVALIDITY and HIGHESTMODSEQ, CONDSTORE enabled or
                # not (as Dovecot and imaptest's notify script have it).
                lines.append(status_line(session, seen, highestmodseq=state.wants(seen.name, "FlagChange")))
        yield from coalesced(lines)
    return Done(Code.OK_NOTIFY)
