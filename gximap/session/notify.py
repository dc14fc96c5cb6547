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
  A mailbox new to them (made, or renamed into them) gets its STATUS too: a name whose mailbox was
  made anew has a new UIDVALIDITY, which section 5.1 wants told;
* MailboxName: ``* LIST`` of a new mailbox and of its direct parent, ``(\\NonExistent)`` for a
  deleted one and its parent's LIST, and the new name with RFC 5258's ``("OLDNAME" (old))`` for a
  renamed one, none for the children a rename moved with it (RFC 5465 section 5.4), but a LIST of
  the old parent that lost its last child and of the new one that got its first (their
  \\HasChildren: _rename_affects_parents). Names swapped (a cycle of renames heard together)
  are told as one mailbox gone and made again around the other's rename (_report_sequence).
  RENAME INBOX moves INBOX's messages into a new mailbox (RFC 3501 section 6.3.5), which midb
  names in a notice: that mailbox gets
  ``("OLDNAME" (INBOX))`` and INBOX no LIST ("a new INBOX is assumed to be created"), but its
  STATUS;
* SubscriptionChange: ``* LIST (\\Subscribed ...)`` or ``(...)`` for the name (section 5.5), with
  ``\\NonExistent`` when no mailbox has that name (RFC 5258 section 3), after the folders' LISTs
  (a rename's tells the subscription it moved; that of a mailbox renamed and deleted since, or
  made and renamed, is found by comparing the subscriptions);
* MailboxMetadataChange / ServerMetadataChange: ``* METADATA name entry ...`` naming the entries
  whose values changed (RFC 5464 section 4.4.2), found by comparing digests of the values.

A LIST has the attributes LIST would give the name (section 5.5): ``\\Subscribed`` when it is
subscribed (RENAME moves a subscription: section 5.4), ``\\NonExistent`` or the special use, and
``\\HasChildren`` or ``\\HasNoChildren``.

The selected mailbox's message events are its usual updates (gximap.session.selected), pushed as
the SELECTED or SELECTED-DELAYED filter asks, with MessageNew's fetch attributes in the forms
that leave \\Seen alone (cmds.peek_forms); its folder counters are not read for them. A flag
change's FETCH then says the UID (section 5.1); the messages the client put there itself get no
MessageNew FETCH (section 5.2: SelectedMailbox.note_own_arrivals). A new message that a live
search's ``RETURN (UPDATE (fetch-att ...))`` fetches too gets both lists in that one FETCH
(section 7; ImapSession._fetch_entering).

What the client did itself is not reported to it (section 5: "The server SHOULD omit notifying
the client if the event is caused by this client"). A commit made while the session's command
runs (AUTHOR: set by ImapSession._step, carried to the threads that write a command's pieces)
is heard as its own: the folder's snapshot takes in its state unreported (``_absorb``). That
state may hold another session's change committed meanwhile whose event comes later (a datagram
from another process): the folder is then "quiet" at the HIGHESTMODSEQ it was read at, and
another's event at or below that modseq reports the folder as it is (its STATUS, its LIST), since
its change may be among what was taken in (a new name the client's RENAMEs do not explain is
another's: its LIST has the name the client knew as OLDNAME, and the children it moved none;
without such a LIST, no MailboxName or the mailbox gone, the subscriptions that rename moved go
back to the names the client knows, whose comparison then tells the move: _unlisted_rename; a
change of another's below such a rename, heard before its late event, tells the rename first,
being in the state read: _quiet_renames_above, and a child told before it, by name order, is
told by the name the client knows: _untake_quiet_move);
but for one at that very modseq when the client's own commit gave it (no other commit has it:
that event is a RENAME's, after the read, which repeats the modseq and changes no counter).
Subscriptions and annotations have no modseq: the client's own SUBSCRIBE, UNSUBSCRIBE and
SETMETADATA say what they changed (own_subscription, own_metadata), which the base a report
compares with takes in; a report after them then finds nothing of theirs, and anything else that
changed.
AnnotationChange (RFC 5257 message annotations, which gximap does not have) and unknown events
are declined with NO [BADEVENT] (section 5).

Bound: at most MAX_PENDING folders (and notices) others changed may wait to be reported. A burst
beyond it (another session's RENAME of a tree that big: an event per mailbox), or a client that
does not read its notifications while they pile up, ends in ``* OK [NOTIFICATIONOVERFLOW]`` and
NOTIFY NONE (section 5.8): the client then re-reads what it needs. The folders the client's own
commands changed do not count: nothing of theirs is reported, however many.
"""

from __future__ import annotations

import bisect
import contextvars
import hashlib
import heapq
import threading
from collections.abc import Container, Generator, Iterable, Iterator
from typing import Any, NamedTuple

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.session import condstore, listing
from gximap.session.base import AUTHENTICATED, CommandFailed, Done, coalesced, command
from gximap.session.commands.mailbox import DELIMITER, status_response, wire_name
from midb import events
from midb.errors import MidbError
from midb.folders import normalize_name
from midb.metadata import SERVER, normalize_entry

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


# The session whose command commits now (ImapSession._step; gximap.session.pieces carries it to the
# threads that write a command's pieces): the commits it makes are that client's own (section 5).
AUTHOR: contextvars.ContextVar[Any] = contextvars.ContextVar("gximap_notify_author", default=None)


class Pending(NamedTuple):
    """The changes heard since the last report: the folders others changed (folder id -> the
    lowest modseq their events gave), (folder id, notice) pairs, and the folders the client's own
    commits changed (folder id -> the highest modseq their events gave)."""

    folders: dict[int, int]
    notices: set[tuple[int, int]]
    own: dict[int, int]


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


class _Snapshot(dict[int, _Seen]):
    """The folders as the client knows them (folder id -> _Seen), with their names kept in order
    too: a rename finds the folders below a name by a bisection and the range that follows, not
    by a pass over the account's folders."""

    def __init__(self, folders: Iterable[tuple[int, _Seen]] = ()) -> None:
        super().__init__(folders)
        self._by_name = sorted((seen.name, folder_id) for folder_id, seen in self.items())

    def __setitem__(self, folder_id: int, seen: _Seen) -> None:
        old = self.get(folder_id)
        super().__setitem__(folder_id, seen)
        if old is not None:
            if old.name == seen.name:
                return
            self._unindex(old.name, folder_id)
        bisect.insort(self._by_name, (seen.name, folder_id))

    def __delitem__(self, folder_id: int) -> None:
        old = self[folder_id]
        super().__delitem__(folder_id)
        self._unindex(old.name, folder_id)

    def _unindex(self, name: str, folder_id: int) -> None:
        index = bisect.bisect_left(self._by_name, (name, folder_id))
        del self._by_name[index]

    def named(self, name: str) -> bool:
        """Whether a folder of the snapshot has ``name``."""
        return self.id_named(name) is not None

    def id_named(self, name: str) -> int | None:
        """The id of a folder of the snapshot named ``name`` (the lowest), None without one."""
        index = bisect.bisect_left(self._by_name, (name,))
        if index < len(self._by_name) and self._by_name[index][0] == name:
            return self._by_name[index][1]
        return None

    def below(self, name: str) -> Iterator[tuple[str, int]]:
        """(name, folder id) of the folders whose names lie below ``name``, in name order (not
        to be changed while this runs)."""
        prefix = name + listing.SEPARATOR
        by_name = self._by_name
        # (The names below one another are contiguous in code point order.)
        for index in range(bisect.bisect_left(by_name, (prefix,)), len(by_name)):
            entry = by_name[index]
            if not entry[0].startswith(prefix):
                break
            yield entry

    def at_or_below(self, name: str) -> list[tuple[str, int]]:
        """(name, folder id) of the folders named ``name`` or below it, in name order."""
        by_name = self._by_name
        at = []
        index = bisect.bisect_left(by_name, (name,))
        while index < len(by_name) and by_name[index][0] == name:
            at.append(by_name[index])
            index += 1
        return [*at, *self.below(name)]


class NotifyState:
    """One session's NOTIFY SET (or NONE: no groups)."""

    def __init__(self, groups: tuple[cmds.NotifyGroup, ...], *, inboxes_are_personal: bool = False) -> None:
        self.groups = groups
        self._inboxes_are_personal = inboxes_are_personal
        self.selected_group = next((group for group in groups if group.kind in SELECTED_FILTERS), None)
        # MessageNew's fetch attributes as they are fetched: their .PEEK forms, one item per
        # response label. Section 5.2: "The client SHOULD NOT use FETCH attributes that
        # implicitly set the \seen flag"; a notification never changes the mailbox.
        self.message_new_items = cmds.peek_forms(self.selected_group.fetch_atts if self.selected_group else ())
        self._others = [group for group in groups if group.kind not in SELECTED_FILTERS]
        wanted = self.events_wanted()
        self._names_matter = bool(NAME_EVENTS & wanted)
        self._lists_mailboxes = "MailboxName" in wanted
        self._lists_subscriptions = "SubscriptionChange" in wanted
        # Section 5.1: the FETCH of a flag change of the selected mailbox says the UID.
        self.flags_with_uid = self.selected_group is not None and "FlagChange" in self.selected_group.events
        self._lock = threading.Lock()
        self._dirty: dict[int, int] = {}   # folder id -> lowest modseq of others' changes since the last report
        self._own: dict[int, int] = {}     # folder id -> highest modseq of the client's own changes likewise
        self._own_renamed = False          # the client's RENAME is among them (own_rename)
        self._own_renames: list[tuple[str, str]] = []   # its (old, new) names, likewise
        self._notices: set[tuple[int, int]] = set()   # (folder id, notice) likewise
        self._overflow = False
        self.folders = _Snapshot()
        # Folder id -> the HIGHESTMODSEQ at which the client's own change was taken in unreported
        # (_absorb): another's event at or below it may be of a change taken in with it.
        self._quiet: dict[int, int] = {}
        # The quiet folders whose HIGHESTMODSEQ taken in the client's own commit gave: no commit of
        # another session has that modseq (see _may_be_taken_in).
        self._quiet_own: set[int] = set()
        # Quiet folders whose new name, another session's RENAME, was taken in with the client's own
        # change: folder id -> the name the client knew, the OLDNAME of their next LIST; and those
        # that RENAME moved with their parent (they get none: section 5.4).
        self._quiet_renamed: dict[int, str] = {}
        self._quiet_moved: set[int] = set()
        # The subscriptions such a RENAME moved when taken in, folder id -> (name now in
        # ``subscriptions`` -> (the name the client knows, its own changes applied; whether the
        # client had the name now subscribed already)): a late event that cannot list the rename
        # with OLDNAME moves them back, and the subscription changes tell the move
        # (_unlisted_rename).
        self._quiet_subscriptions: dict[int, dict[str, tuple[str, bool]]] = {}
        self.subscriptions: set[str] = set()   # as the client knows them (reported, or its own doing)
        self.subscribed: set[str] = set()      # as last read: the subscribed filter, \Subscribed
        # The store's generation of the subscriptions last read in full (Store.subscriptions_since):
        # while it stays, they need not be read again.
        self._subscriptions_generation = -1
        # The names whose subscription the client may know otherwise than ``subscribed`` says (a
        # rename's move, a read that found a change): what a report compares, not all of them.
        self._subscriptions_unsure: set[str] = set()
        self.metadata: dict[int, dict[str, bytes]] = {}   # folder id (0: server) -> entry -> digest
        # During a report that lists names: the account's folders (name -> special use) and the
        # names with children.
        self._names_now: dict[str, str | None] = {}
        self._parents_now: set[str] = set()
        # During a report: the new folders INBOX's messages moved into (RENAME INBOX).
        self._from_inbox_now: set[int] = set()
        # During a report: the renames of others no LIST told, old name -> new.
        self._renames_now: dict[str, str] = {}
        # The attributes each name was last listed with: a parent whose LIST would say the same is
        # not listed again (a folder's own LIST has just told its \HasChildren, say).
        self._listed: dict[str, bytes] = {}
        # During a report: the names listed in it, and the parents its creations and deletions affect.
        self._listed_now: set[str] = set()
        self._parents_affected: set[str] = set()
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

    def _filter_matches(self, group: cmds.NotifyGroup, name: str, subscribed: Container[str]) -> bool:
        kind = group.kind
        if kind == "personal":
            return True   # the one personal namespace holds every mailbox of the account
        if kind == "inboxes":
            # RFC 5465 section 6.3: the mailboxes mail is delivered to. gximap's LMTP delivers to
            # INBOX, unless a delivery filter (imap_filter_command) files it elsewhere: then any
            # folder may be one, and a server that cannot tell "MUST treat inboxes as personal".
            return self._inboxes_are_personal or name == listing.INBOX
        if kind == "subscribed":
            return name in subscribed
        if kind == "subtree":
            return any(name == mailbox.name or name.startswith(mailbox.name + listing.SEPARATOR)
                       for mailbox in group.mailboxes)
        if kind == "mailboxes":
            return any(name == mailbox.name for mailbox in group.mailboxes)
        return False

    def wants(self, name: str, event: str, subscribed: Container[str] | None = None) -> bool:
        """Whether ``event`` of mailbox ``name``, not the selected one's message events (those
        are the SELECTED filter's: ImapSession._push_notifications), is to be reported: the first
        group whose filter names the mailbox and that lists the event (or NONE) decides (RFC 5465
        section 6). ``subscribed``: the subscriptions the subscribed filter goes by, if not
        those read last."""
        if subscribed is None:
            subscribed = self.subscribed
        for group in self._others:
            if not self._filter_matches(group, name, subscribed):
                continue
            if not group.events:
                return False   # NONE: nothing of these mailboxes
            if event in group.events:
                return True
        return False

    # -- hearing of changes (any thread) -------------------------------------------------------

    def heard(self, folder_id: int, modseq: int, own: bool = False) -> bool:
        """A commit changed ``folder_id``; ``own``: the client's own command made it. Note it;
        False when there is nothing to push now (an own change is taken in at its command's
        end). A notice is noted whoever made it: a report compares what it names with what the
        client knows, its own changes included (own_subscription, own_metadata); but the
        client's own RENAME INBOX's, whose new mailbox is taken in as any it made."""
        if not self.groups:
            return False
        notice = events.is_notice(modseq)
        if notice and own and events.inbox_renamed_to(modseq) is not None:
            return False
        with self._lock:
            if self._overflow:
                return False
            if notice:
                self._notices.add((folder_id, modseq))
            elif own:
                if modseq > self._own.get(folder_id, 0):
                    self._own[folder_id] = modseq
            else:
                lowest = self._dirty.get(folder_id)
                if lowest is None or modseq < lowest:
                    self._dirty[folder_id] = modseq
            # The client's own changes are not reported (section 5), so they never overflow it
            # (section 5.8 is for notifications it would get): a RENAME of a tree of more than
            # MAX_PENDING mailboxes has an event for each. Their set needs no bound of its own:
            # it names the account's folders at most, and is taken in at the command's end.
            if len(self._dirty) + len(self._notices) > MAX_PENDING:
                self._overflow = True
        return notice or not own

    # -- the client's own changes (its command's handler, on the session's worker) -------------

    def own_subscription(self, name: str, subscribed: bool, generations: tuple[int, int] | None = None) -> None:
        """The client's SUBSCRIBE or UNSUBSCRIBE of ``name`` succeeded: it knows. ``generations``:
        the subscriptions' before and after it (Store.set_subscribed); when the one before is
        that of the subscriptions last read, the one after is that of them with this change."""
        try:
            name = normalize_name(name)   # as the store keeps it
        except MidbError:
            return
        for names in (self.subscriptions, self.subscribed):
            if subscribed:
                names.add(name)
            else:
                names.discard(name)
        if generations is not None and generations[0] == self._subscriptions_generation:
            self._subscriptions_generation = generations[1]

    def own_rename(self, old: str, new: str) -> None:
        """The client's RENAME of ``old`` to ``new`` succeeded. Its events repeat each folder's
        HIGHESTMODSEQ (a rename changes no message), which another session's commit may have
        given: they say nothing of who made that modseq (_may_be_taken_in). Its names tell its
        renames from another session's taken in with it (_absorb)."""
        self._own_renamed = True
        if old == listing.INBOX:
            return   # (its mailbox is new to the snapshot, and INBOX's children stay)
        try:
            self._own_renames.append((normalize_name(old), normalize_name(new)))   # as the store keeps them
        except MidbError:
            pass

    def own_metadata(self, folder_id: int, changes: Iterable[tuple[str, bytes | None]]) -> None:
        """The client's SETMETADATA of ``folder_id`` (SERVER: the server's) succeeded: it knows
        the values it set (and that those it set to NIL are gone)."""
        if folder_id == SERVER:
            if not self.wants_server_metadata():
                return
        else:
            seen = self.folders.get(folder_id)
            if seen is None or not self.wants(seen.name, "MailboxMetadataChange"):
                return
        digests = self.metadata.setdefault(folder_id, {})
        for entry, value in changes:
            try:
                name = normalize_entry(entry, settable=True)   # as the store keeps it
            except MidbError:
                continue
            if value is None:
                digests.pop(name, None)
            else:
                digests[name] = _digest(bytes(value))

    # -- snapshot ------------------------------------------------------------------------------

    def take_snapshot(self, session: Any) -> None:
        """What the account holds now: the base later changes are compared with."""
        store = session.store
        user = session.user
        entries = store.folder_entries(user, records=True)
        self.folders = _Snapshot((entry.id, _seen(entry.record)) for entry in entries if entry.record is not None)
        read = store.subscriptions_since(user, -1)   # (all of them)
        self._subscriptions_generation = read.generation
        self.subscriptions = set(read.names or ())
        self.subscribed = set(self.subscriptions)
        self._subscriptions_unsure = set()
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
                self._own.clear()
                self._notices.clear()
                return None
            pending = Pending(self._dirty, self._notices, self._own)
            self._dirty, self._notices, self._own = {}, set(), {}
        return pending

    def _restore(self, pending: Pending) -> None:
        """A report met a store error: its changes wait for the next one."""
        with self._lock:
            for folder_id, modseq in pending.folders.items():
                lowest = self._dirty.get(folder_id)
                if lowest is None or modseq < lowest:
                    self._dirty[folder_id] = modseq
            for folder_id, modseq in pending.own.items():
                if modseq > self._own.get(folder_id, 0):
                    self._own[folder_id] = modseq
            self._notices |= pending.notices

    def report(self, session: Any, pending: Pending) -> list[bytes]:
        """The responses for ``pending`` (take_pending's), but the selected mailbox's message
        events (its view's updates). Every read comes before anything is reported or noted as
        reported: a store error leaves the changes pending, for the next try."""
        dirty, notices, own = pending
        if not dirty and not notices and not own:
            return []   # (every command's end with NOTIFY set comes here)
        from_inbox = {folder_id for _folder, notice in notices
                      if (folder_id := events.inbox_renamed_to(notice)) is not None}
        if from_inbox:
            # The folders INBOX's messages moved into are read for the notice, their own events
            # heard or not (the pool may serve the session between the two).
            dirty = {**dict.fromkeys(from_inbox, 0), **dirty}
        looked = dirty.keys() | own.keys()
        selected = session.selected
        if selected is not None and not self._names_matter:
            # Its counters are for a STATUS, which the selected mailbox never gets: not read. (Its
            # snapshot stays: once the mailbox is left, its next change is compared with that, and
            # its STATUS may repeat what the client saw while the mailbox was selected.)
            looked.discard(selected.folder_id)
            if not looked and not notices:
                return []
        store, user = session.store, session.user
        try:
            found = {folder_id: store.folder_by_id(user, folder_id) if folder_id else None for folder_id in looked}
            if self._quiet_renamed:
                # A name told below a mailbox another's RENAME took in unreported is one the
                # client does not know until that rename is told: it is told now, as it is (its
                # late event then finds nothing new), and first, in name order.
                above = self._quiet_renames_above(found, dirty)
                if above:
                    dirty = {**dict.fromkeys(above, 0), **dirty}
                    found.update((folder_id, store.folder_by_id(user, folder_id)) for folder_id in above)
            subscription_notice = any(notice == events.NOTICE_SUBSCRIPTIONS for _folder, notice in notices)
            # A RENAME moves the subscription with no notice: its LIST's \Subscribed tells the
            # new name's (_renamed). A folder another session renamed and then deleted is seen
            # gone, one it made and then renamed new (or not at all, deleted too), and the name
            # the subscription went to, or came from, unseen: the subscriptions are compared.
            # So too after another's RENAME that no LIST with OLDNAME may tell (no MailboxName
            # for its names): the subscriptions it moved are changes of their own (section 5.5).
            # And at the late event of another's RENAME taken in unreported with the client's own
            # change, which moved subscriptions no LIST may tell (_unlisted_rename).
            subscriptions_changed = subscription_notice or (self._lists_subscriptions and any(
                folder is None or (old := self.folders.get(folder_id)) is None or old.name != folder.name
                or (folder_id in self._quiet_subscriptions and self._may_be_taken_in(folder_id, dirty[folder_id]))
                for folder_id, folder in found.items() if folder_id in dirty))
            # The names a LIST is told from: the store's, as the folders heard of may be fewer (a
            # child the same commit made: each folder has an event of its own, and the pool may
            # serve the session between two). Subscriptions are read for a LIST's \Subscribed,
            # and after a RENAME (which moves them) for the subscribed filter.
            lists_names = (subscriptions_changed and self._lists_subscriptions) or self._lists_folders(found, dirty)
            renamed = any(folder is not None and (old := self.folders.get(folder_id)) is not None
                          and old.name != folder.name for folder_id, folder in found.items())
            # The subscriptions, when they are compared with what the client knows: what changed
            # since last read (Store.subscriptions_since); for a LIST's \Subscribed alone, those
            # of the names the report may list (read with them).
            read = (store.subscriptions_since(user, self._subscriptions_generation)
                    if subscriptions_changed or renamed else None)
            replaced: set[str] | None = None   # all of them, read anew
            flips: set[str] = set()            # the names whose subscription changed since last read
            if read is not None and read.names is not None:
                replaced = set(read.names)
                flips = replaced ^ self.subscribed
            elif read is not None and read.changed:
                flips = {name for name, now in read.changed.items() if now != (name in self.subscribed)}
            # The names whose subscription the comparison may find changed, before this report's
            # own moves of them.
            unsure = self._subscriptions_unsure | flips
            # What LIST says of the names this report may list, read for those alone: a report
            # costs what it tells, not a pass over every folder of the account.
            told = (self._names_told(found, from_inbox, unsure if subscriptions_changed else None)
                    if lists_names else set())
            facts = store.name_facts(user, told, subscriptions=read is None) if lists_names else None
            annotated = [(folder_id, name, _metadata_digests(store, user, folder_id))
                         for folder_id, name in self._annotated(notices, found)]
        except Exception:
            self._restore(pending)
            raise
        # The folders whose HIGHESTMODSEQ as read the client's own commit gave: its highest own
        # event has it (a message change's event has the modseq its commit gave, and no two
        # commits give the same), and no rename may have repeated it (own_rename; another
        # session's, committed before the read, shows as a new name).
        own_last = set() if self._own_renamed else {
            folder_id for folder_id, modseq in own.items()
            if (folder := found.get(folder_id)) is not None and folder.highestmodseq == modseq
            and (old := self.folders.get(folder_id)) is not None and old.name == folder.name}
        self._own_renamed = False
        own_renames, self._own_renames = self._own_renames, []
        if read is not None:
            self._subscriptions_generation = read.generation
        elif facts is not None:
            # The subscriptions of the names read, over those last read.
            differ = {name for name in told if (name in facts.subscribed) != (name in self.subscribed)}
            flips |= differ
            unsure |= differ
        # The subscriptions the client's filter went by (section 6.4), kept apart from those now.
        subscribed_before: Container[str] = self.subscribed
        if replaced is not None:
            self.subscribed = replaced
        elif flips:
            self.subscribed ^= flips
            subscribed_before = _Flipped(self.subscribed, flips)
        self._subscriptions_unsure = unsure
        self._names_now = facts.existing if facts is not None else {}
        self._from_inbox_now = from_inbox
        self._parents_now = facts.with_children if facts is not None else set()
        self._listed_now, self._parents_affected = set(), set()
        folder_lines: list[bytes] = []
        for folder_id, folder, gone_first in self._report_sequence(found, dirty.keys()):
            if gone_first:
                folder_lines.extend(self._told_gone_first(session, folder_id))
            elif folder_id in dirty:
                folder_lines.extend(self._folder_changes(session, folder_id, folder, dirty[folder_id],
                                                         subscribed_before, found))
            else:
                self._absorb(folder_id, folder, folder_id in own_last, own_renames)
        for parent in sorted(self._parents_affected - self._listed_now):
            # Section 5.4: "the mailbox itself and its direct parent (whether it is an existing
            # mailbox or not) are considered to be affected".
            if self.wants(parent, "MailboxName"):
                attributes = self._attributes(parent)
                if self._listed.get(parent) != attributes:
                    folder_lines.append(self._list_line(session, parent, attributes))
        out = folder_lines
        if subscriptions_changed:
            # Compared with the subscriptions as the folder LISTs leave them (a RENAME's move of
            # a subscription is its LIST's \Subscribed, not a change), and told after them: the
            # client's rename would else move a child's subscription it had just been told of.
            out.extend(self._subscription_changes(session))
        for folder_id, name, digests in annotated:
            out.extend(self._metadata_changes(session, folder_id, name, digests))
        self._names_now, self._parents_now = {}, set()   # (the next report reads them again)
        self._from_inbox_now, self._renames_now = set(), {}
        return out

    def _names_told(self, found: dict[int, Any], from_inbox: set[int], unsure: set[str] | None) -> set[str]:
        """Every name a report of ``found`` may list or ask LIST's attributes of (a superset):
        the folders' names, as they are and as the client knew them (or as another's RENAME
        taken in unreported had them), INBOX after RENAME INBOX, the direct parents of all
        these (section 5.4: affected), and when the subscriptions are compared, the names whose
        subscription the client may be told of: ``unsure`` and those a rename of ``found``
        moves with the client's names of the children (_renamed, _told_gone_first)."""
        names: set[str] = {listing.INBOX} if from_inbox else set()
        renames: dict[str, str] = {}   # old name -> new
        for folder_id, folder in found.items():
            old = self.folders.get(folder_id)
            if folder is not None:
                names.add(folder.name)
            if old is not None:
                names.add(old.name)
                if folder is not None and folder.name != old.name:
                    renames[old.name] = folder.name
            unreported = self._quiet_renamed.get(folder_id)
            if unreported is not None:
                names.add(unreported)
            if old is not None and self._quiet_renamed:
                # Below a mailbox another's RENAME took in unreported: the names the client knows
                # it and its children by (_untake_quiet_move).
                names.update(self._client_name(name)[1] for name, _id in self.folders.at_or_below(old.name))
            if unsure is not None:
                # The subscriptions a RENAME taken in moved, by both names (_unlisted_rename).
                for moved, (known, _kept) in self._quiet_subscriptions.get(folder_id, {}).items():
                    names.update((moved, known))
        if unsure is not None:
            names |= unsure
            if renames:
                names |= self._names_moved(renames)
        names |= {parent for name in names if (parent := name.rpartition(listing.SEPARATOR)[0])}
        return names

    def _names_moved(self, renames: dict[str, str]) -> set[str]:
        """The names the subscriptions of the client's children of renamed mailboxes may have,
        before and after the renames of this report move them (_renamed) or a cycle's drops
        them (_told_gone_first): those of the snapshot's folders below the old names, moved."""
        below = {name for old in renames for name, _folder_id in self.folders.below(old)}
        return _names_moved(below, renames)

    def _lists_folders(self, found: dict[int, Any], dirty: dict[int, int]) -> bool:
        """Whether MailboxName may list a mailbox of ``found`` that another session changed: one
        new, renamed or gone (or its parent), or one whose quiet state its change may be in."""
        if not self._lists_mailboxes:
            return False
        for folder_id, folder in found.items():
            lowest = dirty.get(folder_id)
            if lowest is None:
                continue
            old = self.folders.get(folder_id)
            if folder is None or old is None:
                if folder is not None or old is not None:
                    return True
            elif old.name != folder.name:
                return True
            if self._may_be_taken_in(folder_id, lowest):
                return True
        return False

    def _may_be_taken_in(self, folder_id: int, lowest: int) -> bool:
        """Whether the changes of another session heard of a quiet folder, ``lowest`` the lowest
        modseq their events gave, may be in the state the client's own change took in
        unreported (committed before that read, heard after): then the folder is reported as it
        is. One at the modseq taken in may be, unless the client's own commit gave that modseq
        (``_quiet_own``): an event of another's with it is then no message change (one that
        repeats the HIGHESTMODSEQ: a RENAME, committed after the read since the name taken in
        was the one known), and the counters taken in are still what the client knows."""
        quiet = self._quiet.get(folder_id)
        if quiet is None:
            return False
        return lowest < quiet or (lowest == quiet and folder_id not in self._quiet_own)

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

    def _report_sequence(self, found: dict[int, Any], others: Iterable[int]) -> list[tuple[int, Any, bool]]:
        """The folders of a report in the order their changes are told. A client applies the
        LISTs one after another, a rename moving the children it knows of with it (section 5.4),
        so by name (parents a CREATE or RENAME made before the folders beneath them), but:

        * a name a RENAME or DELETE freed is told freed before a folder made or renamed into it
          (for a RENAME, into its name or beneath it): else the client renames (or deletes) the
          new mailbox away;
        * a child deleted, or renamed elsewhere than where its parent's rename took it, is told
          before that rename, while the client still has it where it was: else the client moves
          it with its parent and keeps it there.

        A child that moved with its parent comes after it (the parent's LIST says its move). Names
        swapped (a cycle: A to T, B to A, T to B heard together) cannot all be told as renames,
        each OLDNAME told before its name is taken: the first in name order of another's renames
        in the cycle is told first as gone (``True``: _told_gone_first), which frees its name,
        then as made anew, once the name it took is free."""
        items = [(folder_id, folder, False)
                 for folder_id, folder in sorted(found.items(), key=lambda item: self._report_order(*item))]
        renames = {old.name: folder.name for folder_id, folder, _gone in items
                   if folder is not None and (old := self.folders.get(folder_id)) is not None
                   and old.name != folder.name}
        if not renames and not any(folder is None for _folder_id, folder, _gone in items):
            return items   # (nearly always: nothing to order but by name)
        freed: dict[str, list[tuple[int, bool]]] = {}   # old name -> (folder, a rename?)
        taken: dict[int, str] = {}                      # folder -> the name it now has anew
        carried: list[tuple[int, str]] = []             # (child, the old name of the parent it moved with)
        for folder_id, folder, _gone in items:
            old = self.folders.get(folder_id)
            if old is not None and folder is not None:
                moved_with = next((ancestor for ancestor in listing.ancestors(old.name)
                                   if renames.get(ancestor) is not None
                                   and folder.name == renames[ancestor] + old.name[len(ancestor):]), None)
                if moved_with is not None:
                    # A child that moved with its parent: the parent's rename says it (told
                    # first, it takes the child along: no LIST of the child's, section 5.4).
                    carried.append((folder_id, moved_with))
                    continue
            if old is not None and (folder is None or old.name != folder.name):
                freed.setdefault(old.name, []).append((folder_id, folder is not None))
            if folder is not None and (old is None or old.name != folder.name):
                taken[folder_id] = folder.name
        before: dict[int, set[int]] = {}   # folder -> those to be told before it
        for taker, name in taken.items():
            freers = {freer for freer, _rename in freed.get(name, ())}
            freers.update(freer for ancestor in listing.ancestors(name)
                          for freer, rename in freed.get(ancestor, ()) if rename)
            before.setdefault(taker, set()).update(freers - {taker})
        for name, children in freed.items():
            for ancestor in listing.ancestors(name):
                for parent, rename in freed.get(ancestor, ()):
                    if rename:
                        before.setdefault(parent, set()).update(child for child, _rename in children)
        if not before:
            return items
        for child, parent_name in carried:
            before.setdefault(child, set()).update(
                parent for parent, rename in freed.get(parent_name, ()) if rename)
        waits = {folder_id: len(earlier) for folder_id, earlier in before.items() if earlier}
        if not waits:
            return items
        freeing: dict[int, list[int]] = {}    # folder -> those waiting for it
        for folder_id, earlier in before.items():
            for freer in earlier:
                freeing.setdefault(freer, []).append(folder_id)
        position = {folder_id: index for index, (folder_id, _folder, _gone) in enumerate(items)}
        ready = [index for index, (folder_id, _folder, _gone) in enumerate(items) if folder_id not in waits]
        heapq.heapify(ready)
        ordered: list[tuple[int, Any, bool]] = []
        told: set[int] = set()
        gone_first: set[int] = set()
        breakable = {folder_id for folder_id in others if folder_id in taken and folder_id in waits
                     and folder_id in self.folders}
        carried_ids = {child for child, _parent_name in carried}

        def release(freer: int, *, carried: bool | None = None) -> None:
            """``freer`` is told: those waiting for it wait one fewer; with ``carried``, only the
            children that moved with it (True) or only the others (False)."""
            for taker in freeing.get(freer, ()):
                if carried is not None and (taker in carried_ids) != carried:
                    continue
                waits[taker] -= 1
                if waits[taker] == 0 and taker not in told:
                    heapq.heappush(ready, position[taker])

        while len(told) < len(items):
            if ready:
                index = heapq.heappop(ready)
            else:   # a cycle
                index = next((index for index, (folder_id, _folder, _gone) in enumerate(items)
                              if folder_id in breakable and folder_id not in told and folder_id not in gone_first), -1)
                if index >= 0:
                    # Told gone first: its name is free for those waiting for it; the children
                    # that moved with it still wait for it to be told made.
                    folder_id, folder, _gone = items[index]
                    gone_first.add(folder_id)
                    ordered.append((folder_id, folder, True))
                    release(folder_id, carried=False)
                    continue
                # (Only the client's own renames left in it, told none: name order.)
                index = next(index for index, (folder_id, _folder, _gone) in enumerate(items) if folder_id not in told)
            folder_id = items[index][0]
            if folder_id in told:
                continue
            told.add(folder_id)
            ordered.append(items[index])
            # (Told gone first, it released the others then.)
            release(folder_id, carried=True if folder_id in gone_first else None)
        return ordered

    def _told_gone_first(self, session: Any, folder_id: int) -> list[bytes]:
        """A rename in a cycle of renames told as a DELETE of the old name, and of the names
        beneath it that the client has (section 5.4: ``\\NonExistent``), children first; the
        snapshot forgets them, so that their LISTs then tell them made (no OLDNAME: the name it
        would say is taken again)."""
        old = self.folders[folder_id]
        gone = self.folders.at_or_below(old.name)
        out = []
        for name, known_id in reversed(gone):
            del self.folders[known_id]
            self.metadata.pop(known_id, None)
            self._unquiet(known_id)
            self._listed.pop(name, None)
            if self.wants(name, "MailboxName"):
                # Its subscription is told with the name that has it now (the LIST that makes it).
                self.subscriptions.discard(name)
                self._subscriptions_unsure.add(name)
                out.append(b"* LIST (%b) %b %b\r\n" % (listing.NONEXISTENT.encode("ascii"), DELIMITER,
                                                        wire_name(session, name)))
        self._affects_parent(old.name)
        return out

    def _report_order(self, folder_id: int, folder: Any) -> tuple[str, int]:
        if folder is not None:
            return folder.name, folder_id
        old = self.folders.get(folder_id)
        return (old.name if old is not None else ""), folder_id

    def _subscription_changes(self, session: Any) -> list[bytes]:
        """The subscriptions as read for this report (``subscribed``) against those the client
        knows."""
        # Only the names that may differ (_subscriptions_unsure): elsewhere the client knows them.
        changed = {name for name in self._subscriptions_unsure
                   if (name in self.subscribed) != (name in self.subscriptions)}
        before = {name for name in changed if name in self.subscriptions}   # (of those, as the client knew them)
        self.subscriptions ^= changed
        self._subscriptions_unsure = set()
        out = []
        for name in sorted(changed):
            # An unsubscribed name leaves the subscribed filter (section 6.4) by the very change
            # to report: the filter as the client knew it decides too (a MailboxUnSubscribe is a
            # SubscriptionChange, section 8), else that filter could only ever tell subscribing.
            if (self.wants(name, "SubscriptionChange")
                    or (name in before and self.wants(name, "SubscriptionChange", before))
                    or self._moved_into_view(name, before)):
                # RFC 5258 section 3: a subscribed name without a mailbox is \NonExistent, in the
                # attributes LIST (SUBSCRIBED) gives it (gximap.session.listing).
                out.append(self._list_line(session, name, self._attributes(name)))
        return out

    def _moved_into_view(self, name: str, before: set[str]) -> bool:
        """Whether the subscription of ``name`` (``before``: the subscriptions the client knew)
        went with a RENAME no LIST told to a name whose SubscriptionChange is reported: the
        client's filter covers the new name but not the old (a subtree or mailboxes filter of
        the new name; the subscribed filter's is decided by ``before``), yet the client is told
        the old one unsubscribed, else it keeps it beside the new one (as MailboxName lists a
        rename when either name is in its filter)."""
        if name not in before:
            return False
        for old in (name, *reversed(listing.ancestors(name))):
            new = self._renames_now.get(old)
            if new is not None:
                moved = new + name[len(old):]
                return moved in self.subscriptions and self.wants(moved, "SubscriptionChange")
        return False

    def _attributes(self, name: str) -> bytes:
        """The attributes LIST (RETURN (SUBSCRIBED)) gives ``name`` now (section 5.5: "all mailbox
        attributes MUST be accurately computed"), from what this report read."""
        attributes = [listing.SUBSCRIBED] if name in self.subscribed else []
        if name not in self._names_now:
            attributes.append(listing.NONEXISTENT)
        else:
            special = self._names_now[name]
            if special is not None:
                attributes.append(special)
            attributes.append(listing.HAS_CHILDREN if name in self._parents_now else listing.HAS_NO_CHILDREN)
        return " ".join(attributes).encode("ascii")

    def _list_line(self, session: Any, name: str, attributes: bytes, extra: bytes = b"") -> bytes:
        self._listed_now.add(name)
        # Its \\Subscribed (or none) tells the client the name's subscription (section 5.5): the
        # base the next SubscriptionChange is compared with has it so, whatever a rename's
        # move of subscriptions (_move_subscription) found there.
        if name in self.subscribed:
            self.subscriptions.add(name)
        else:
            self.subscriptions.discard(name)
        if name in self._names_now:
            self._listed[name] = attributes
        else:
            self._listed.pop(name, None)   # (so that the names kept are the account's, at most)
        return b"* LIST (%b) %b %b%b\r\n" % (attributes, DELIMITER, wire_name(session, name), extra)

    def _affects_parent(self, name: str) -> None:
        parent = name.rpartition(listing.SEPARATOR)[0]
        if parent:
            self._parents_affected.add(parent)

    def _rename_affects_parents(self, folder_id: int, old: str, new: str, *, children_moved: bool) -> None:
        """Section 5.4 makes the direct parent of a created or deleted mailbox affected (its
        \\HasChildren), and asks for \\HasChildren or \\HasNoChildren "as appropriate"; section
        5.5 for "all mailbox attributes ... accurately computed". A RENAME is not named there, but
        it takes a child from one parent and gives it to another: a parent whose attribute it
        changed is affected too, the old one when it lost its last child, the new one when it got
        its first. Only a mailbox that was there before and is still there: a parent the rename
        made, or that moved itself (a child heard before its parent's rename), has a LIST of its
        own. ``children_moved``: the children of ``old`` moved with it (not so for RENAME INBOX,
        whose children stay; INBOX gets no LIST then: section 5.4). Reads the snapshot as it was
        before the rename but for ``folder_id``, the renamed mailbox, and the names as they are
        now (``_names_now``)."""
        old_parent = old.rpartition(listing.SEPARATOR)[0]
        new_parent = new.rpartition(listing.SEPARATOR)[0]
        if old_parent == new_parent:
            return
        if old_parent and old_parent in self._names_now and old_parent not in self._parents_now:
            self._parents_affected.add(old_parent)
        if not new_parent or new_parent not in self._names_now or (new_parent == listing.INBOX and not children_moved):
            return
        # The renamed mailbox's children are no children of the parent's, by either name (a
        # child's own event may have been reported before the rename's).
        moved = (old + listing.SEPARATOR, new + listing.SEPARATOR)
        for name, known_id in self.folders.below(new_parent):
            if known_id != folder_id and not (children_moved and name.startswith(moved)):
                return   # it had a child before
        if self.folders.named(new_parent):
            self._parents_affected.add(new_parent)

    def _renamed(self, old: str, new: str, children: dict[int, Any] | None) -> list[int]:
        """A mailbox was renamed from ``old`` to ``new``: its subscription moved with it (midb
        moves it). With ``children`` (the folders this report read) the snapshot's names of the
        mailboxes below it move too, so that they get no LIST of their own (section 5.4), but
        those ``children`` holds under another name (moved elsewhere since: their LIST tells).
        Returns the ids of the children moved."""
        self._move_subscription(old, new)
        self._listed.pop(old, None)
        moved_ids: list[int] = []
        if children is None:
            return moved_ids
        for name, folder_id in list(self.folders.below(old)):
            moved = new + name[len(old):]
            now = children.get(folder_id)
            if now is not None and now.name != moved:
                continue
            self.folders[folder_id] = self.folders[folder_id]._replace(name=moved)
            self._move_subscription(name, moved)
            self._listed.pop(name, None)
            moved_ids.append(folder_id)
        return moved_ids

    def _move_subscription(self, old: str, new: str) -> None:
        if old in self.subscriptions:
            self.subscriptions.discard(old)
            self.subscriptions.add(new)
            self._subscriptions_unsure.update((old, new))

    def _unquiet(self, folder_id: int) -> None:
        """``folder_id`` is no longer quiet: gone, or reported as it is."""
        self._quiet.pop(folder_id, None)
        self._quiet_own.discard(folder_id)
        self._quiet_renamed.pop(folder_id, None)
        self._quiet_moved.discard(folder_id)
        self._quiet_subscriptions.pop(folder_id, None)

    def _absorb(self, folder_id: int, folder: Any, own_last: bool, own_renames: list[tuple[str, str]]) -> None:
        """Take in a folder only the client's own commits changed, unreported: it knows (section
        5). The folder is quiet at the HIGHESTMODSEQ read (see the module docstring); ``own_last``:
        the client's own commit gave that modseq; ``own_renames``: the client's RENAMEs since the
        last report, (old, new)."""
        old = self.folders.get(folder_id)
        if folder is None:
            self._unquiet(folder_id)
            if old is not None:
                del self.folders[folder_id]
                self.metadata.pop(folder_id, None)
                self._forget_listed(old.name)
            return
        self.folders[folder_id] = _seen(folder)
        self._quiet[folder_id] = folder.highestmodseq
        if own_last:
            self._quiet_own.add(folder_id)
        else:
            self._quiet_own.discard(folder_id)
        if old is None:
            self._forget_listed(folder.name)
        elif old.name != folder.name:
            # A name the client's RENAMEs do not give is another session's, taken in unreported:
            # its late event's LIST (forced: _folder_changes) says the name the client knows.
            known = _renamed_by(old.name, own_renames)
            others = known != folder.name
            if others:
                self._quiet_renamed.setdefault(folder_id, known)
                self._quiet_moved.discard(folder_id)
            # (Copied for another's rename alone: the client's own moves nothing to note.)
            subscribed_before = set(self.subscriptions) if others else set()
            for child in self._renamed(old.name, folder.name, {}):
                if others and child not in self._quiet_renamed:
                    # Section 5.4: its parent's LIST tells its move; none of its own.
                    self._quiet_moved.add(child)
            if others:
                self._note_quiet_subscriptions(folder_id, old.name, folder.name, subscribed_before, own_renames)
            self._forget_listed(old.name)
            self._forget_listed(folder.name)

    def _note_quiet_subscriptions(self, folder_id: int, old: str, new: str, before: set[str],
                                  own_renames: list[tuple[str, str]]) -> None:
        """Another session's RENAME of ``folder_id`` (``old`` to ``new`` in the snapshot, the
        client's own renames among it) was taken in, unreported, and moved the subscriptions
        ``before`` held: note the names the client knows them by, for its late event."""
        moves = self._quiet_subscriptions.setdefault(folder_id, {})
        for name in sorted(before - self.subscriptions):
            moved = new + name[len(old):]
            if name in moves:
                # Taken in again since: the name the client knows is the one noted first. One
                # subscribed already (below) the client knows so too: this rename moved its
                # subscription on, whose unsubscribing is still to tell.
                known, kept = moves.pop(name)
                if kept:
                    moves[name] = (name, True)
            else:
                known = _renamed_by(name, own_renames)
            # A name subscribed already (without a mailbox: DELETE keeps it, RFC 3501 section
            # 6.3.4) stays so: the old name's unsubscribing is still to tell.
            moves[moved] = (known, moved in before)

    def _unlisted_rename(self, known: str | None, moves: dict[str, tuple[str, bool]], new: str | None) -> None:
        """The late event of another session's RENAME taken in unreported (``known``: the name the
        client knows; ``moves``: the subscriptions it moved, as _quiet_subscriptions notes them;
        ``new``: the mailbox's name now, None when gone) is told by no LIST with OLDNAME (no
        MailboxName for its names, or the mailbox is gone): the subscriptions go back to the
        names the client knows, and the report's comparison of the subscriptions
        (_subscription_changes) tells their move (section 5.5), as for a rename heard in time."""
        if known is not None and new is not None:
            self._renames_now[known] = new   # (_moved_into_view)
        self._subscriptions_back(moves)

    def _subscriptions_back(self, moves: dict[str, tuple[str, bool]]) -> None:
        """The subscriptions another's RENAME taken in unreported moved (``moves``, as
        _quiet_subscriptions notes them) go back to the names the client knows."""
        for moved, (name, kept) in moves.items():
            # Whatever a report since told of the new name (its unsubscribing, say), the client
            # still has the old one subscribed; at worst a name is told again as it is. A name
            # subscribed already (``kept``) stays so.
            if not kept:
                self.subscriptions.discard(moved)
            self.subscriptions.add(name)
            # (A report since the rename was taken in may have compared them already.)
            self._subscriptions_unsure.update((moved, name))

    def _kept_subscriptions(self, moves: dict[str, tuple[str, bool]]) -> None:
        """The late event of another's RENAMEs taken in unreported is told by a LIST with OLDNAME,
        which moves the client's subscriptions of the names below the old one (section 5.4); but
        of a name between (A to B to C, B subscribed already: _note_quiet_subscriptions) the
        client still has its own, which the subscriptions' comparison then tells gone."""
        for moved, (name, kept) in moves.items():
            if kept and moved == name:
                self.subscriptions.add(name)
                self._subscriptions_unsure.add(name)

    def _client_name(self, name: str) -> tuple[int | None, str]:
        """``name``, a snapshot's, as the client knows it: below a mailbox whose RENAME by another
        session was taken in unreported and is not told yet (``_quiet_renamed``), the client has
        it below the name that mailbox had. With the id of that mailbox (None: ``name`` as is)."""
        for ancestor in reversed(listing.ancestors(name)):
            ancestor_id = self.folders.id_named(ancestor)
            known = self._quiet_renamed.get(ancestor_id) if ancestor_id is not None else None
            if known is not None:
                return ancestor_id, known + name[len(ancestor):]
        return None, name

    def _quiet_renames_above(self, found: dict[int, Any], dirty: dict[int, int]) -> set[int]:
        """The mailboxes not in ``found`` whose RENAME by another was taken in unreported, not
        told yet, above the name (before or after) of a folder of ``found`` another changed."""
        above: set[int] = set()
        for folder_id, folder in found.items():
            if folder_id not in dirty:
                continue
            old = self.folders.get(folder_id)
            for name in {old.name if old is not None else "", folder.name if folder is not None else ""}:
                for ancestor in listing.ancestors(name):
                    ancestor_id = self.folders.id_named(ancestor)
                    if ancestor_id in self._quiet_renamed and ancestor_id not in found:
                        above.add(ancestor_id)
        return above

    def _untake_quiet_move(self, folder_id: int, old: _Seen) -> _Seen:
        """``folder_id`` (``old`` in the snapshot) is gone or renamed on its own, and told before
        its parent's RENAME by another taken in unreported (a name before the parent's in name
        order: _quiet_renames_above), which moved it (and its children) in the snapshot: the
        client still has them by the parent's old name. Told by the snapshot's, it would be a
        name the client does not know (section 5.4: OLDNAME, \\NonExistent), and the parent's
        LIST with OLDNAME would then move the client's copy along. So the snapshot, and the
        subscriptions that rename moved, go back to the names the client knows, for this
        folder's report; the parent's rename moves them no more. Returns the folder's snapshot
        entry as it is then."""
        parent_id, known = self._client_name(old.name)
        if parent_id is None:
            return old
        moved_from = old.name
        moves = self._quiet_subscriptions.get(parent_id, {})
        for name, known_id in self.folders.at_or_below(moved_from):
            self.folders[known_id] = self.folders[known_id]._replace(name=known + name[len(moved_from):])
            self._listed.pop(name, None)
        self._subscriptions_back({moved: moves.pop(moved) for moved in list(moves)
                                  if moved == moved_from or moved.startswith(moved_from + listing.SEPARATOR)})
        return self.folders[folder_id]

    def _forget_listed(self, name: str) -> None:
        """What was listed of ``name`` and its parent may no longer hold (the client's own
        change): their next LIST is sent whatever it says."""
        self._listed.pop(name, None)
        self._listed.pop(name.rpartition(listing.SEPARATOR)[0], None)

    def _folder_changes(self, session: Any, folder_id: int, folder: Any, lowest: int,
                        subscribed_before: Container[str], found: dict[int, Any]) -> list[bytes]:
        """The responses for one folder another session changed (``folder``: as it is now, None
        when gone; ``lowest``: the lowest modseq its events gave; ``found``: the folders this
        report read)."""
        old = self.folders.get(folder_id)
        if (old is not None and self._quiet_renamed and (folder is None or folder.name != old.name)
                and folder_id not in self._quiet_renamed):   # (else that says the client's name)
            old = self._untake_quiet_move(folder_id, old)
        # Its state after the client's own change was taken in unreported: this change may be in
        # it (committed before that read, heard after), so the folder is reported as it is.
        forced = self._may_be_taken_in(folder_id, lowest)
        # The name the client knew, when the state taken in had another's new name; or that name
        # came with its parent's.
        renamed_unreported = self._quiet_renamed.get(folder_id) if forced else None
        moved_unreported = forced and folder_id in self._quiet_moved
        # The subscriptions another's RENAME moved when taken in, for a late event that tells
        # that rename by no LIST with OLDNAME (_unlisted_rename).
        subscriptions_moved = self._quiet_subscriptions.get(folder_id, {}) if forced or folder is None else {}
        if forced or folder is None:
            self._unquiet(folder_id)
        out: list[bytes] = []
        if folder is None:
            self._unlisted_rename(None, subscriptions_moved, None)
            if old is not None:
                del self.folders[folder_id]
                self.metadata.pop(folder_id, None)
                # Renamed by another, unreported, before it went: the client knows the old name.
                name = renamed_unreported or old.name
                if self.wants(name, "MailboxName"):
                    out.append(self._list_line(session, name, self._attributes(name)))
                self._affects_parent(name)
            return out
        seen = self.folders[folder_id] = _seen(folder)
        # RENAME INBOX: the new mailbox INBOX's messages moved into. Section 5.4: "When INBOX is
        # renamed, a new INBOX is assumed to be created. No MailboxName event is sent for INBOX
        # in this case": the new mailbox is told as INBOX renamed, with OLDNAME; INBOX keeps its
        # children and subscription (RFC 3501 section 6.3.5), and its STATUS tells it is empty.
        from_inbox = listing.INBOX if old is None and folder_id in self._from_inbox_now else None
        if old is None or old.name != folder.name:
            # (Parents a CREATE or RENAME made on the way have events of their own: midb
            # announces every folder a commit makes. report's name order puts them first.)
            listed = False
            old_name = old.name if old is not None else from_inbox
            if renamed_unreported is not None:
                # Renamed by another before, taken in unreported: the client knows the name it
                # had then (renamed back to it: no OLDNAME to tell).
                old_name = renamed_unreported if renamed_unreported != folder.name else None
            if self.wants(folder.name, "MailboxName") or (old_name is not None and self.wants(old_name, "MailboxName")):
                out.append(self._list_line(session, folder.name, self._attributes(folder.name),
                                           _oldname(session, old_name)))
                listed = True
            if old_name is not None:
                # (Before _renamed: the snapshot still has the names the rename changed.)
                self._rename_affects_parents(folder_id, old_name, folder.name, children_moved=old is not None)
            if old is not None and listed:
                self._renamed(old.name, folder.name, found)
                self._kept_subscriptions(subscriptions_moved)
            elif old is not None:
                # Not told: the client has the subscriptions where they were, and the
                # comparison tells where they went (_subscription_changes).
                self._listed.pop(old.name, None)
                self._renames_now[old.name] = folder.name
                self._unlisted_rename(renamed_unreported, subscriptions_moved, folder.name)
            elif from_inbox is None:
                self._affects_parent(folder.name)
        elif renamed_unreported is not None and renamed_unreported != folder.name:
            # Another session's RENAME taken in with the client's own change: told now, as any
            # rename (section 5.4), with the name the client knew.
            if self.wants(folder.name, "MailboxName") or self.wants(renamed_unreported, "MailboxName"):
                out.append(self._list_line(session, folder.name, self._attributes(folder.name),
                                           _oldname(session, renamed_unreported)))
                self._kept_subscriptions(subscriptions_moved)
            else:
                self._unlisted_rename(renamed_unreported, subscriptions_moved, folder.name)
            self._rename_affects_parents(folder_id, renamed_unreported, folder.name, children_moved=True)
        elif forced and not moved_unreported and self.wants(folder.name, "MailboxName"):
            out.append(self._list_line(session, folder.name, self._attributes(folder.name)))
        selected = session.selected
        if selected is not None and selected.folder_id == folder_id:
            return out   # its message events are the selected mailbox's updates (read for NAME_EVENTS)
        if not self.wants(folder.name, "MessageNew"):   # (MessageExpunge and FlagChange come with it)
            return out
        if old is None or not self.wants(old.name, "MessageNew", subscribed_before):
            # New to the message events (made, or renamed into them): its STATUS, whose
            # UIDVALIDITY is new for a name made anew (section 5.1).
            out.append(status_line(session, folder))
            return out
        counts_moved = (old.messages, old.uidnext, old.uidvalidity) != (seen.messages, seen.uidnext, seen.uidvalidity)
        # A flag change shows in UNSEEN, and in HIGHESTMODSEQ only when that is sent (CONDSTORE
        # enabled): a STATUS for a modseq alone would say nothing new (Dovecot sends none either).
        flags_moved = old.unseen != seen.unseen or (
            old.highestmodseq != seen.highestmodseq and condstore.enabled(session))
        if forced or counts_moved or (flags_moved and self.wants(folder.name, "FlagChange")):
            out.append(status_line(session, folder))
        return out

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


def _oldname(session: Any, name: str | None) -> bytes:
    """A renamed mailbox's LIST extended data naming ``name``, its old name (RFC 5465 section
    5.4, RFC 5258 section 3.5); none without one."""
    return b"" if name is None else b' ("OLDNAME" (%b))' % wire_name(session, name)


class _Flipped:
    """A set seen with the membership of some names flipped: the subscriptions as they were
    before a report changed ``flips`` of them in place (no copy of them all)."""

    __slots__ = ("_now", "_flips")

    def __init__(self, now: set[str], flips: set[str]) -> None:
        self._now = now
        self._flips = flips

    def __contains__(self, name: object) -> bool:
        return (name in self._now) != (name in self._flips)


def _names_moved(below: set[str], moves: dict[str, str]) -> set[str]:
    """``below`` (names below those ``moves`` renames, old -> new) and each name a rename or a
    chain of them may move one to: a lookup per ancestor of each name moved."""
    reached = set(below)
    pending = reached
    for _round in range(len(moves)):   # (a chain of renames is at most as long as they are many)
        mapped = set()
        for name in pending:
            for ancestor in listing.ancestors(name):
                new = moves.get(ancestor)
                if new is not None:
                    mapped.add(new + name[len(ancestor):])
        pending = mapped - reached
        if not pending:
            break
        reached |= pending
    return reached


def _renamed_by(name: str, renames: list[tuple[str, str]]) -> str:
    """``name`` after ``renames`` (old, new), in order: a rename moves its children too."""
    for old, new in renames:
        if name == old:
            name = new
        elif name.startswith(old + listing.SEPARATOR):
            name = new + name[len(old):]
    return name


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
    return {entry: _digest(value) for entry, value in found.items()}


def _digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


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
    state = NotifyState(cmd.groups, inboxes_are_personal=session.settings.delivery_filters)
    session.set_notify(state)
    if condstore.names_modseq(state.message_new_items):
        # RFC 7162 section 3.1: naming the MODSEQ fetch-att enables CONDSTORE, now (the
        # HIGHESTMODSEQ of the selected mailbox comes with this command, and the STATUS below
        # have theirs), not at the first MessageNew FETCH, between its EXISTS and itself.
        yield from condstore.enable(session)
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
