"""CONDSTORE and QRESYNC (RFC 7162): the logic the command handlers share.

Every midb message carries a MODSEQ and every folder a HIGHESTMODSEQ; expunges leave tombstones
(UID, modseq) that midb keeps for good. So every mailbox supports persistent mod-sequences and the
NOMODSEQ response code (RFC 7162 section 3.1.2.2) is never sent.

CONDSTORE-awareness (section 3.1) is a property of the connection: it starts with the first
"CONDSTORE enabling command" (ENABLE CONDSTORE or QRESYNC, SELECT/EXAMINE (CONDSTORE), STATUS
HIGHESTMODSEQ, FETCH MODSEQ or CHANGEDSINCE, STORE UNCHANGEDSINCE, SEARCH MODSEQ; and what names
the MODSEQ fetch-att for later: NOTIFY SET's MessageNew (MODSEQ), SEARCH/SORT RETURN (UPDATE
(MODSEQ)), RFC 5465 sections 5.2 and 7) and lasts
until the connection ends (or UNAUTHENTICATE, which forgets everything ENABLEd). It is recorded
as "CONDSTORE" in ``session.enabled``; QRESYNC implies it. From then on unsolicited FETCH
responses carry UID and MODSEQ. SELECT/EXAMINE report ``[HIGHESTMODSEQ]`` to every client, aware
or not (section 3.1.2.1: required of a server that keeps mod-sequences for the mailbox).

HIGHESTMODSEQ a QRESYNC client may trust: after a command, the client has been told every change
up to the view's ``full_modseq`` (the store's HIGHESTMODSEQ at the last sync that left no expunge
unreported). When FETCH/STORE/SEARCH may not report another session's expunge (RFC 3501 section
7.4.1) but did send a MODSEQ above that value, the client is given ``[HIGHESTMODSEQ full]``
so it does not resynchronise from the higher MODSEQ and miss the expunge; when the mailbox moved
on without a MODSEQ telling the client (VANISHED, EXISTS), the new value is announced. This is
Dovecot's scheme; EXPUNGE, UID EXPUNGE and MOVE always carry it in their tagged OK (section 3.2.7).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.imap.commands import ResolvedSet, SearchKey, SequenceSet
from gximap.session.base import CommandFailed, Done
from gximap.session.selected import fetch_line, flag_atoms
from midb.tombstones import Vanished

CONDSTORE = "CONDSTORE"
QRESYNC = "QRESYNC"
MAX_UID = 0xFFFFFFFF
CRLF = b"\r\n"

__all__ = [
    "announce_highestmodseq",
    "check_qresync",
    "enable",
    "enabled",
    "highest_modseq",
    "highestmodseq_line",
    "names_modseq",
    "qresync_responses",
    "returned_uids",
    "search_modseq",
    "uses_modseq",
    "vanished_earlier",
]


# -- CONDSTORE-awareness ------------------------------------------------------------------------


def enabled(session: Any) -> bool:
    """Has this connection issued a CONDSTORE enabling command (QRESYNC included)?"""
    return CONDSTORE in session.enabled or QRESYNC in session.enabled


def names_modseq(atts: Iterable[cmds.FetchAtt]) -> bool:
    """Do these fetch attributes name MODSEQ? A command that does is a CONDSTORE enabling one
    (section 3.1), whether it fetches now (FETCH) or later: RFC 5465's MessageNew (NOTIFY SET)
    and RETURN (UPDATE (...)) (SEARCH, SORT), whose FETCH would else enable it in the middle
    of an unsolicited update."""
    return any(att.name == "MODSEQ" for att in atts)


def highestmodseq_line(session: Any, modseq: int) -> bytes:
    return b"* OK [HIGHESTMODSEQ %d] " % modseq + session.text(Code.INFO_HIGHESTMODSEQ) + CRLF


def enable(session: Any) -> list[bytes]:
    """Make the connection CONDSTORE-aware. If that happens while a mailbox is selected, the
    client has no HIGHESTMODSEQ for it yet: the returned untagged OK gives it (as Dovecot does)."""
    if enabled(session):
        return []
    session.enabled = session.enabled | {CONDSTORE}
    view = session.selected
    if view is None:
        return []
    return [highestmodseq_line(session, view.full_modseq)]


def announce_highestmodseq(session: Any, done: Done | None) -> list[bytes]:
    """After the updates that end a command (``done``) or an IDLE push (``None``): the
    HIGHESTMODSEQ a QRESYNC client should resynchronise from, when it needs telling. It goes into
    the tagged OK when that has no other response code, else into an untagged OK (returned)."""
    view = session.selected
    if view is None or not session.qresync_enabled:
        return []
    modseq = view.highestmodseq_report()
    if modseq is None:
        return []
    if done is not None and done.status == "OK" and done.code is None:
        done.code = b"HIGHESTMODSEQ %d" % modseq
        return []
    return [highestmodseq_line(session, modseq)]


# -- SEARCH MODSEQ ------------------------------------------------------------------------------


def uses_modseq(key: SearchKey) -> bool:
    """Does a search program contain the MODSEQ criterion anywhere (RFC 7162 section 3.1.5)?"""
    return any(isinstance(node, cmds.SearchModSeq) for node in cmds.search_nodes(key))


def highest_modseq(session: Any, uids: list[int]) -> int:
    """The highest MODSEQ among the selected mailbox's messages ``uids`` (ascending); 0 if none
    exists any more. A few UIDs are read one by one, many in one pass over the folder."""
    if not uids:
        return 0
    view = session.selected
    store = session.store
    if len(uids) * 4 < len(view.runs):
        metas = store.get_messages(view.account, view.folder_id, uids)
        return max((meta.modseq for meta in metas), default=0)
    wanted = set(uids)
    return max((meta.modseq for meta in store.messages(view.account, view.folder_id) if meta.uid in wanted),
               default=0)


def search_modseq(session: Any, matched: list[int], options: tuple[str, ...] | None,
                  partial: cmds.PartialRange | None = None) -> int | None:
    """The MODSEQ for a SEARCH result that used the MODSEQ criterion (RFC 7162 sections 3.1.6 and
    3.1.10): the highest of the messages returned (see returned_uids). None when nothing is
    returned, an empty PARTIAL page alone too (highest_modseq of none is 0): no MODSEQ then."""
    if not matched:
        return None
    chosen = returned_uids(options, partial, matched)
    return highest_modseq(session, matched if chosen is None else chosen) or None


def returned_uids(options: tuple[str, ...] | None, partial: cmds.PartialRange | None,
                  ordered: list[int]) -> list[int] | None:
    """The messages of a non-empty result ``ordered`` (UIDs in the answer's order: ascending for
    SEARCH, sort order for ESORT) that the ESEARCH answer returns, ascending; None when that is
    all of them. The MODSEQ is theirs (RFC 7162 section 3.1.10), and SAVE saves them:

    * with only MIN and/or MAX, the first and/or last (RFC 5182 section 2.4);
    * with PARTIAL, the messages at its positions, and the MIN and/or MAX ones if asked for; but
      all with COUNT (RFC 9394 section 3.2, its table 1).
    """
    # UPDATE returns nothing now (RFC 5267 section 4.3: no interaction with the other options).
    returned = {option for option in options or () if option not in ("SAVE", "UPDATE")}
    if partial is None:
        if not returned or not returned <= {"MIN", "MAX"}:
            return None
        chosen: set[int] = set()
    elif "COUNT" in returned:
        return None
    else:
        chosen = set(partial.select(ordered))
    if "MIN" in returned:
        chosen.add(ordered[0])
    if "MAX" in returned:
        chosen.add(ordered[-1])
    return sorted(chosen)


# -- QRESYNC ------------------------------------------------------------------------------------


def _spans(seqset: SequenceSet) -> list[tuple[int, int]]:
    """The ranges as written (order kept, each low..high); ``*`` is not allowed here."""
    spans = []
    for start, end in seqset.ranges:
        low = MAX_UID if start is None else start
        high = MAX_UID if end is None else end
        spans.append((low, high) if low <= high else (high, low))
    return spans


def _seq_match_floor(view: Any, numbers: SequenceSet, uids: SequenceSet) -> int:
    """The highest UID the client's message-number map (seq-match-data, RFC 7162 section 3.2.5.2)
    shows correctly, 0 if none.

    If the client's message number for UID ``u`` is the server's, both have the same count of
    messages below ``u``; messages only ever leave a mailbox below a known UID, so the client
    already knows every expunge below ``u`` and VANISHED (EARLIER) can leave those out. Within a
    run of consecutive pairs the difference server-UID-at(number) - client-UID never decreases
    (UIDs ascend), so the last match of a run is found by bisection, not by walking the run."""
    number_spans = _spans(numbers)
    uid_spans = _spans(uids)
    positions = view.runs  # a few lookups (bisection): no flat array needed
    exists = len(positions)
    best = 0
    i = j = 0
    number_offset = uid_offset = 0
    while i < len(number_spans) and j < len(uid_spans):
        first_number = number_spans[i][0] + number_offset
        first_uid = uid_spans[j][0] + uid_offset
        run = min(number_spans[i][1] - first_number, uid_spans[j][1] - first_uid) + 1
        usable = min(run, exists - first_number + 1)  # numbers beyond EXISTS match nothing
        if usable > 0 and first_number >= 1:
            # the largest k < usable with positions[first_number-1+k] - (first_uid+k) <= 0
            low, high = 0, usable
            while low < high:
                middle = (low + high) // 2
                if positions[first_number - 1 + middle] - (first_uid + middle) <= 0:
                    low = middle + 1
                else:
                    high = middle
            k = low - 1
            if k >= 0 and positions[first_number - 1 + k] == first_uid + k:
                best = max(best, first_uid + k)
        number_offset += run
        uid_offset += run
        if number_spans[i][0] + number_offset > number_spans[i][1]:
            i += 1
            number_offset = 0
        if uid_spans[j][0] + uid_offset > uid_spans[j][1]:
            j += 1
            uid_offset = 0
    return best


def check_qresync(params: cmds.QResyncParams) -> None:
    """BAD for seq-match-data whose two sets do not have the same number of members (RFC 7162
    section 3.2.5.2); checked before the SELECT does anything."""
    if params.seq_match is None:
        return
    numbers, uids = params.seq_match
    if _count(numbers) != _count(uids):
        raise CommandFailed(Code.BAD_QRESYNC_SEQ_MATCH, status="BAD")


def _count(seqset: SequenceSet) -> int:
    return sum(high - low + 1 for low, high in _spans(seqset))


def _not_in_view(view: Any, uids: Iterable[int]) -> list[int]:
    """UIDs the view no longer shows. An expunge the view still holds (not yet announced, or
    after the view was loaded) is announced by the regular update as VANISHED; reporting it as
    VANISHED (EARLIER) as well would make the client count it out twice."""
    position = view.runs.position
    return [uid for uid in uids if position(uid) is None]


def qresync_responses(session: Any, view: Any, params: cmds.QResyncParams) -> Iterator[bytes]:
    """SELECT/EXAMINE (QRESYNC ...) (RFC 7162 section 3.2.5), after the usual responses:
    ``* VANISHED (EARLIER)`` for the known UIDs expunged since the client's modseq (from the
    tombstones), then ``* n FETCH (UID FLAGS MODSEQ)`` for the known messages changed since (with
    UIDONLY ``* uid UIDFETCH (FLAGS MODSEQ)``). A different UIDVALIDITY means the client's cache
    is useless: nothing is reported."""
    numbers_floor = 0
    if params.seq_match is not None:
        numbers_floor = _seq_match_floor(view, *params.seq_match)
    if params.uidvalidity != view.uidvalidity:
        return
    known = None
    known_ranges = None
    if params.known_uids is not None:
        known_ranges = params.known_uids.resolve(MAX_UID, clip=False)
        known = ResolvedSet(known_ranges)
    changed, vanished = session.store.changes_since(view.account, view.folder_id, params.modseq)
    gone = _vanished_earlier_set(view, vanished, known_ranges, above=numbers_floor)
    if gone:
        yield b"* VANISHED (EARLIER) " + gone + CRLF
    show_recent = not session.rev2
    uidonly = session.uidonly
    recent = view.recent
    newer = []
    top = 0
    for meta in changed:
        uid = meta.uid
        if known is not None and uid not in known:
            continue
        msn = view.msn_of(uid)
        if msn is None:
            continue  # arrived after the view was loaded: announced by the update with EXISTS
        if meta.modseq > view.modseq:
            newer.append(meta)  # the update would report it again
        top = max(top, meta.modseq)
        flags = flag_atoms(meta.flags, show_recent and uid in recent)
        items = b"FLAGS %s MODSEQ (%d)" % (flags, meta.modseq)
        yield fetch_line(msn, uid, items if uidonly else b"UID %d " % uid + items, uidonly)
    view.note_own_changes(newer)
    view.note_fetch_modseq(top)


def vanished_earlier(session: Any, seqset: SequenceSet, since: int) -> bytes | None:
    """``* VANISHED (EARLIER) uids`` for UID FETCH ... (CHANGEDSINCE since VANISHED) (RFC 7162
    section 3.2.6): the UIDs of the set expunged after ``since``, or None."""
    view = session.selected
    if seqset.saved:
        candidates = [(uid, uid) for uid in sorted(set(session.saved_search or ()))]
    else:
        # "*" reaches past the last message the view shows: the UIDs expunged above it (all
        # below UIDNEXT) are in ``1:*`` too, and in an empty mailbox "*" is no UID at all.
        candidates = seqset.resolve(MAX_UID, clip=False)
    vanished = session.store.vanished_since(view.account, view.folder_id, since)
    gone = _vanished_earlier_set(view, vanished, candidates)
    if not gone:
        return None
    return b"* VANISHED (EARLIER) " + gone + CRLF


def _vanished_earlier_set(view: Any, vanished: Vanished, candidates: list[tuple[int, int]] | None,
                          above: int = 0) -> bytes:
    """The UIDs for ``* VANISHED (EARLIER)``, as a sequence set (b"": none): those of
    ``vanished`` the view no longer shows, within ``candidates`` (ascending ranges; None: any)
    and above ``above``. When the tombstones were pruned past the modseq asked about, every UID
    below the prune's UIDNEXT that the view does not show is among them (RFC 7162 allows a
    superset): computed as ranges, since it may span millions of UIDs no client ever saw."""
    if vanished.exact:
        allowed = ResolvedSet(candidates) if candidates is not None else None
        return encode.sequence_set([uid for uid in _not_in_view(view, vanished.uids)
                                    if uid > above and (allowed is None or uid in allowed)])
    below = vanished.pruned_below
    ranges = vanished.absent_ranges(view.runs.ranges())
    ranges += [(uid, uid) for uid in _not_in_view(view, vanished.uids) if uid >= below]
    ranges = intersect_ranges(ranges, [(above + 1, MAX_UID)])
    if candidates is not None:
        ranges = intersect_ranges(ranges, candidates)
    return encode.sequence_set_from_ranges(ranges)


def intersect_ranges(first: list[tuple[int, int]], second: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The intersection of two lists of ascending, disjoint inclusive ranges, adjacent ranges
    joined."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(first) and j < len(second):
        low = max(first[i][0], second[j][0])
        high = min(first[i][1], second[j][1])
        if low <= high:
            if out and out[-1][1] + 1 >= low:
                out[-1] = (out[-1][0], max(out[-1][1], high))
            else:
                out.append((low, high))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return out
