"""The selected-mailbox view of one session: message numbers, \\Recent, and pending updates.

Message sequence numbers are positions in ``uids`` (an ``array`` of ascending UIDs), so mapping
in either direction is O(1) or O(log n) without a Python object per message. The view catches
up with the store by asking "what changed since modseq N" (``Store.changes_since``), one
mechanism for NOOP, IDLE and the updates sent after every command. Expunges by other sessions
stay in the view (as numbers the client still knows) until a command that may send EXPUNGE
completes (RFC 3501 section 7.4.1).

For CONDSTORE/QRESYNC clients the view also tracks which HIGHESTMODSEQ the client may safely
resynchronise from (``full_modseq``, ``highestmodseq_report``; see gximap.session.condstore).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable
from typing import Any

from gximap.imap import encode
from gximap.imap.commands import SequenceSet
from midb.errors import NoSuchFolder

RECENT = "\\Recent"
# UIDs are 32-bit: 4 bytes per message in every session's view (sessions of a big INBOX add up).
UID_ARRAY = next(code for code in "IL" if array(code).itemsize == 4)
_REBUILD_FRACTION = 16  # expunging more than 1/16 of the view rebuilds it in one pass


def flag_atoms(flags: Iterable[str], recent: bool = False) -> bytes:
    items = [flag.encode("utf-8") for flag in flags]
    if recent:
        items.append(b"\\Recent")
    return b"(" + b" ".join(items) + b")"


class SelectedMailbox:
    def __init__(self, store: Any, account: str, folder: Any, *, readonly: bool, session: Any) -> None:
        self.store = store
        self.account = account
        self.folder_id: int = folder.id
        self.name: str = folder.name
        self.uidvalidity: int = folder.uidvalidity
        self.readonly = readonly
        self.session = session
        self.uids: array = array(UID_ARRAY)
        self.modseq = 0  # the store's HIGHESTMODSEQ this view has caught up with
        self.uid_max = 0  # highest UID announced
        self.recent: set[int] = set()
        self.pending_expunge: set[int] = set()
        self._own_changes: dict[int, int] = {}  # uid -> modseq of this session's own STORE
        # RFC 7162 (see gximap.session.condstore): the client has been told every change up to
        # full_modseq; its value at the last HIGHESTMODSEQ report; the highest MODSEQ FETCH
        # responses gave since that report; must the next report be made (EXPUNGE, MOVE)?
        self.full_modseq = 0
        self._reported_full = 0
        self._fetch_modseq = 0
        self.force_highestmodseq = False

    @property
    def condstore(self) -> bool:
        """The connection is CONDSTORE-aware: FETCH responses carry UID and MODSEQ. Awareness
        belongs to the connection (RFC 7162 section 3.1), so it lives in ``session.enabled``;
        handlers enable it with ``gximap.session.condstore.enable`` (which also announces the
        HIGHESTMODSEQ); setting True here is kept for callers that only need the flag."""
        enabled = self.session.enabled
        return "CONDSTORE" in enabled or "QRESYNC" in enabled

    # -- opening -------------------------------------------------------------------------------

    def open(self) -> Any:
        """Load the view; return the FolderInfo read at the same time."""
        store = self.store
        folder = store.folder_by_id(self.account, self.folder_id)
        self.modseq = self.full_modseq = self._reported_full = folder.highestmodseq
        uids = store.uids(self.account, self.folder_id)
        self.uids = array(UID_ARRAY, uids)
        self.uid_max = uids[-1] if uids else 0
        if self.readonly:
            floor = folder.recent_floor
        else:
            floor = store.claim_recent(self.account, self.folder_id)
        if floor < self.uid_max:
            start = bisect.bisect_right(self.uids, floor)
            self.recent = set(self.uids[start:])
        # Changes committed between reading the folder and the UID list are caught by the next
        # sync: modseq was read first, so nothing is missed, at worst reported twice.
        return folder

    # -- numbers -------------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def uid_at(self, msn: int) -> int:
        return self.uids[msn - 1]

    def msn_of(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def resolve(self, seqset: SequenceSet, uid: bool) -> list[int]:
        """The UIDs of the view named by a sequence set, ascending. ``$`` must be substituted."""
        uids = self.uids
        if not uids:
            return []
        out: list[int] = []
        if uid:
            for low, high in seqset.resolve(uids[-1], clip=False):
                if high > uids[-1]:
                    high = uids[-1]
                start = bisect.bisect_left(uids, low)
                stop = bisect.bisect_right(uids, high)
                out.extend(uids[start:stop])
            # RFC 3501 section 6.4.8: "n:*" names the highest UID even when n is above it.
            if not out and seqset.uses_star():
                out.append(uids[-1])
        else:
            for low, high in seqset.resolve(len(uids)):
                out.extend(uids[low - 1 : high])
        return sorted(set(out)) if len(seqset.ranges) > 1 else out

    def valid_msn_set(self, seqset: SequenceSet) -> bool:
        """RFC 9051 section 6.4.5: message numbers beyond the count are an error (BAD)."""
        return seqset.highest(len(self.uids)) <= len(self.uids) or not self.uids and seqset.uses_star()

    # -- updates -------------------------------------------------------------------------------

    def note_own_changes(self, metas: Iterable[Any]) -> None:
        """This session's STORE already reported these flag changes (or was .SILENT)."""
        for meta in metas:
            self._own_changes[meta.uid] = meta.modseq

    def note_fetch_modseq(self, modseq: int) -> None:
        """A FETCH response told the client this MODSEQ."""
        if modseq > self._fetch_modseq:
            self._fetch_modseq = modseq

    def highestmodseq_report(self) -> int | None:
        """The HIGHESTMODSEQ a QRESYNC client must be told after the latest sync, or None.

        With expunges still unreported, a MODSEQ above ``full_modseq`` given in a FETCH response
        would let the client skip them on its next resynchronisation: it is told the lower,
        safe value. Otherwise it is told a new HIGHESTMODSEQ no MODSEQ conveyed (after VANISHED,
        EXISTS or an own expunge), and always when ``force_highestmodseq`` asks for it."""
        report = None
        if self.pending_expunge:
            if self._fetch_modseq > self.full_modseq:
                report = self.full_modseq
        elif self.force_highestmodseq or (self.modseq > self._reported_full and self.modseq > self._fetch_modseq):
            report = self.modseq
        self._reported_full = self.full_modseq
        self._fetch_modseq = 0
        self.force_highestmodseq = False
        return report

    def remove_expunged(self, uids: Iterable[int]) -> list[int]:
        """Drop UIDs from the view; return their message numbers, highest first (safe to send
        in that order as EXPUNGE responses)."""
        gone = set(uids)
        if not gone:
            return []
        view = self.uids
        if len(gone) * _REBUILD_FRACTION < len(view):
            # A few messages out of many (another session's EXPUNGE reaching every IDLE session):
            # find each by bisection and delete it in place, highest first.
            positions = sorted((index for index in map(self._position, gone) if index is not None), reverse=True)
            for index in positions:
                del view[index]
            numbers = [index + 1 for index in positions]
        else:
            numbers = [i + 1 for i, uid in enumerate(view) if uid in gone]
            numbers.reverse()
            self.uids = array(UID_ARRAY, (uid for uid in view if uid not in gone))
        self.recent -= gone
        self.pending_expunge -= gone
        return numbers

    def _position(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        return index if index < len(self.uids) and self.uids[index] == uid else None

    def expunge_responses(self, uids: Iterable[int]) -> list[bytes]:
        if self.session.qresync_enabled:
            gone = [uid for uid in sorted(set(uids)) if self.msn_of(uid) is not None]
            self.remove_expunged(gone)
            return [b"* VANISHED " + encode.sequence_set(gone) + b"\r\n"] if gone else []
        return [b"* %d EXPUNGE\r\n" % number for number in self.remove_expunged(uids)]

    def sync(self, *, allow_expunge: bool) -> list[bytes]:
        """Untagged responses that bring the client up to date with the store."""
        store = self.store
        # HIGHESTMODSEQ is read before the changes: a change committed in between is reported
        # now and perhaps once more next time, never skipped.
        folder = store.folder_by_id(self.account, self.folder_id)
        if folder is None:
            raise NoSuchFolder(self.name)
        if folder.highestmodseq <= self.modseq and not (allow_expunge and self.pending_expunge):
            return []
        changed, vanished = store.changes_since(self.account, self.folder_id, self.modseq)
        out: list[bytes] = []
        for uid in vanished:
            if uid <= self.uid_max and self.msn_of(uid) is not None:
                self.pending_expunge.add(uid)
            self._own_changes.pop(uid, None)
        if allow_expunge and self.pending_expunge:
            out.extend(self.expunge_responses(sorted(self.pending_expunge)))
        new: list[int] = []
        updates: list[Any] = []
        top_modseq = self.modseq
        for meta in changed:
            if meta.modseq > top_modseq:
                top_modseq = meta.modseq
            if meta.uid > self.uid_max:
                new.append(meta.uid)
            elif self._own_changes.get(meta.uid) == meta.modseq:
                del self._own_changes[meta.uid]
            elif meta.uid not in self.pending_expunge and self.msn_of(meta.uid) is not None:
                updates.append(meta)
        if folder.highestmodseq > top_modseq:
            top_modseq = folder.highestmodseq
        if top_modseq > self.modseq:
            self.modseq = top_modseq
        if new:
            new.sort()
            self.uids.extend(new)
            self.uid_max = new[-1]
            if not self.readonly:
                floor = store.claim_recent(self.account, self.folder_id)
                self.recent.update(uid for uid in new if uid > floor)
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            if not self.session.rev2:
                out.append(b"* %d RECENT\r\n" % len(self.recent))
        condstore = self.condstore
        with_uid = condstore or self.session.rev2
        for meta in updates:
            msn = self.msn_of(meta.uid)
            if msn is None:
                continue
            items = b"FLAGS " + flag_atoms(meta.flags, meta.uid in self.recent and not self.session.rev2)
            if with_uid:
                items = b"UID %d " % meta.uid + items
            if condstore:
                items += b" MODSEQ (%d)" % meta.modseq
                self.note_fetch_modseq(meta.modseq)
            out.append(b"* %d FETCH (%s)\r\n" % (msn, items))
        if not self.pending_expunge:
            self.full_modseq = self.modseq
        return out
