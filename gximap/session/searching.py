"""SEARCH evaluation: the parser's SearchKey tree against the selected mailbox's messages.

The tree is compiled once into predicates, each with a cost class: what a test needs besides the
message's index record. Evaluation runs the record-only predicates of the top-level AND as
vectorised filters over all candidates first, then the remaining ones per surviving message, cheapest
first with short-circuit, loading the MIME digest, the header bytes or the whole body only when a
predicate asks for it (and at most once per message). A flag or UID search over 100,000 messages
therefore never touches a digest or a body file.

Also here: resolving a command's sequence set (message numbers, UIDs or the SEARCHRES ``$``) to
UIDs, shared by FETCH, STORE, COPY, MOVE and UID EXPUNGE.

A command runs a search in slices (:func:`search_sliced`): the records of the messages a set or the
flag index narrows it to are read a few thousand per read, the record-only filters pause between
chunks of records, and the tests per message between messages, once a slice's time is up
(gximap.session.base.TimeSlice), so that a SEARCH of many keys over a large folder does not hold
one of the pool's few workers for its whole run. Both count towards the command's INPROGRESS.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from email.utils import parsedate_tz
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.imap.commands import ResolvedSet, SearchKey, SequenceSet
from gximap.session.base import (
    Await,
    CommandFailed,
    Pause,
    TimeSlice,
    collector_paused_in,
    pause_if_over,
    run_unsliced,
)
from midb import objectids, searchtext
from midb.blobs import ProcessPool
from midb.errors import NoSuchBody
from midb.mime import Digest, DigestFormatError, decode_header_value, parse_header_block, unfold
from midb.summary import SortRecord, Summary, body_plan, decode_summary, may_contain, sort_record

__all__ = [
    "SearchUnsupported",
    "refuse_numbers_beyond_count",
    "resolve_page",
    "resolve_uids",
    "saved_uids",
    "search",
    "search_records",
    "search_records_sliced",
    "search_sliced",
]

# Cost classes: what a predicate reads besides the index record.
COST_RECORD = 0
COST_DIGEST = 1
COST_HEADER = 2
COST_BODY = 3

# Fewer candidate UIDs than this fraction of the folder: read just their records, not all.
_NARROW_FRACTION = 4

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_DIGEST_FIELDS = {"from": "from_", "to": "to", "cc": "cc", "bcc": "bcc", "subject": "subject"}


class SearchUnsupported(Exception):
    """A search key this server does not implement (answered with BAD)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


# -- sequence sets ------------------------------------------------------------------------------


def saved_uids(session: Any) -> list[int]:
    """The SEARCHRES result (RFC 5182 ``$``): saved UIDs still in the view, ascending."""
    view = session.selected
    saved = session.saved_search
    if not saved or view is None:
        return []
    uids = view.uids
    return [uid for uid in saved if in_ascending(uids, uid)]


def in_ascending(values: Sequence[int], value: int) -> bool:
    """Whether ``value`` is in ``values``, ascending (a bisection)."""
    index = bisect.bisect_left(values, value)
    return index < len(values) and values[index] == value


def resolve_uids(session: Any, seqset: SequenceSet, uid: bool) -> list[int]:
    """The view's UIDs named by a command's sequence set, ascending.

    ``$`` stands for the saved search result whatever the command's UID-ness (RFC 5182 section
    2.1). Message numbers beyond the message count are an error (RFC 9051 section 6.4.5 and
    following): BAD. UIDs that name nothing are simply no messages."""
    if seqset.saved:
        return saved_uids(session)
    refuse_numbers_beyond_count(session, seqset, uid)
    return session.selected.resolve(seqset, uid)


def resolve_page(session: Any, seqset: SequenceSet, uid: bool, partial: cmds.PartialRange) -> list[int]:
    """``partial.select(resolve_uids(session, seqset, uid))``, the same BAD included, without
    listing a large set: only the page's UIDs are built (SelectedMailbox.resolve_page)."""
    if seqset.saved:
        return partial.select(saved_uids(session))  # a list already: the saved result
    refuse_numbers_beyond_count(session, seqset, uid)
    return session.selected.resolve_page(seqset, uid, partial)


def refuse_numbers_beyond_count(session: Any, seqset: SequenceSet, uid: bool) -> None:
    """BAD for a message-number set naming numbers beyond the message count (resolve_uids);
    a UID set and ``$`` pass."""
    if not uid and not seqset.saved and not session.selected.valid_msn_set(seqset):
        raise CommandFailed(Code.BAD_SEQUENCE_NUMBER, status="BAD")


def _msn_ranges_as_uid_ranges(view: Any, seqset: SequenceSet) -> list[tuple[int, int]]:
    """Message-number ranges as the equivalent UID ranges of the view (positions are contiguous)."""
    uids = view.uids
    if not uids:
        return []
    return [(uids[low - 1], uids[high - 1]) for low, high in seqset.resolve(len(uids))]


# -- the per-message context for predicates beyond the index record ---------------------------------


class _Message:
    """One message during evaluation: its record, with its summary (midb.summary: the header
    values SEARCH reads), the MIME digest, the header bytes and the body text loaded on first use.
    The summary may come encoded: it is decoded only when a test needs more than its body plan
    or than ``may_contain`` tells."""

    __slots__ = ("meta", "_store", "_summary", "_encoded", "_sort_record", "_digest", "_header", "_data", "_folded",
                 "_fields", "_field_lookups")

    def __init__(self, store: Any, meta: Any, summary: Summary | None = None, encoded: bytes | None = None) -> None:
        self.meta = meta
        self._store = store
        self._summary = summary
        self._encoded = encoded
        self._sort_record: SortRecord | None = None
        self._digest: Digest | None = None
        self._header: bytes | None = None
        self._data: bytes | None = None
        self._folded: dict[str, str] = {}
        self._fields: dict[bytes, list[bytes]] | None = None  # the header split by field name
        self._field_lookups = 0

    @property
    def summary(self) -> Summary:
        if self._summary is None:
            if self._encoded is not None:
                try:
                    self._summary = decode_summary(self._encoded)
                except DigestFormatError:
                    self._summary = self._store.summary(self.meta.blob)  # rebuilt from the digest
            else:
                self._summary = self._store.summary(self.meta.blob)
        return self._summary

    @property
    def message_ids(self) -> objectids.MessageIds:
        """What THREADID is made of: the summary when decoded already, else its front alone
        (midb.summary.sort_record), a fraction of the cost of decoding the whole."""
        if self._summary is not None:
            return self._summary
        if self._sort_record is None and self._encoded is not None:
            with contextlib.suppress(DigestFormatError):
                self._sort_record = sort_record(self._encoded)
        if self._sort_record is None:
            return self.summary   # none read, or damaged: the summary (rebuilt from the digest)
        return self._sort_record

    def summary_may_contain(self, needle: bytes) -> bool:
        """False when no header value of the summary can contain the folded ASCII ``needle``,
        decided on the encoded summary (midb.summary.may_contain)."""
        encoded = self._encoded
        return encoded is None or self._summary is not None or may_contain(encoded, needle)

    def body_plan(self) -> tuple[int, int, int] | None:
        """(searchtext plan, body start, body end) of the message (PLAN_DECODE for one that is not
        a single part), from the encoded summary when it carries one; None when unknown."""
        if self._summary is None and self._encoded is not None:
            plan = body_plan(self._encoded)
            if plan is not None:
                return plan
        leaf = self.summary.leaf
        if leaf is None:
            return None
        return searchtext.leaf_plan(leaf), leaf.body_start, leaf.body_end

    @property
    def digest(self) -> Digest:
        if self._digest is None:
            self._digest = self._store.digest(self.meta.blob)
        return self._digest

    @property
    def header(self) -> bytes:
        """The top-level header block (the whole message once it has been read anyway)."""
        if self._data is not None:
            return self._data
        if self._header is None:
            self._header = self._store.read_body(self.meta.blob, 0, self.summary.header_size)
        return self._header

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self._store.read_body(self.meta.blob)
        return self._data

    def preload(self, data: bytes) -> None:
        """The whole message, read already (with other messages' bodies, in one batch)."""
        self._data = data

    def preload_header(self, header: bytes) -> None:
        """The top-level header block, read already (with other messages' headers, in one batch)."""
        self._header = header

    def header_values(self, values_of: searchtext.HeaderValues) -> list[str]:
        """The decoded values of the top-level header's fields that ``values_of`` names. The first
        names are found by their patterns, one scan in C each; a message tested for more has its
        header split by name once, so that a SEARCH of 1,300 HEADER keys reads each header a few
        times instead of 1,300."""
        fields = self._fields
        if fields is None:
            if self._field_lookups < _SPLIT_AFTER_LOOKUPS:
                self._field_lookups += 1
                return values_of(self.header, self.summary.header_size)
            fields = self._fields = searchtext.fields_by_name(self.header, self.summary.header_size)
        return values_of.from_fields(fields)

    def body_contains(self, needle: str, ascii_needle: bytes | None) -> bool:
        """Whether the case-folded readable body text contains ``needle`` (already folded;
        ``ascii_needle`` is its ASCII encoding, None when it is not ASCII)."""
        text = self._folded.get("body")
        if text is None:
            plan = self.body_plan()
            if plan is not None:
                # Often no decoding at all: an ASCII body that is its own text (a single part,
                # identity encoding, a charset that keeps ASCII) is searched as lowered bytes.
                raw = searchtext.planned_ascii_body(self.data, *plan)
                if raw is not None:
                    return ascii_needle is not None and ascii_needle in raw.lower()
            # A single part needs its summary's entity only; others the whole digest.
            leaf = self.summary.leaf
            text = searchtext.fold(searchtext.body_text(self.data, self.digest if leaf is None else leaf))
            self._folded["body"] = text
        return needle in text

    def part_headers_contain(self, needle: str) -> bool:
        """Whether the folded MIME header fields of the body parts (searchtext.part_headers_text)
        contain ``needle``: TEXT's third half. A single-part message has none but its header's."""
        if self.summary.leaf is not None:
            return False
        text = self._folded.get("parts")
        if text is None:
            text = searchtext.fold(searchtext.part_headers_text(self.data, self.digest))
            self._folded["parts"] = text
        return needle in text

    def folded_header(self) -> str:
        text = self._folded.get("header")
        if text is None:
            text = searchtext.fold(_header_text(self.header, self.summary.header_size))
            self._folded["header"] = text
        return text

    def header_contains(self, needle: str, scan_needle: bytes | None) -> bool:
        """Whether the folded header text (TEXT's header half) contains ``needle`` (folded);
        ``scan_needle`` (searchtext.scan_needle) lets a plain ASCII header be ruled out from its
        bytes, without decoding each field."""
        if scan_needle is not None and "header" not in self._folded \
                and searchtext.raw_header_lacks(self.header, self.summary.header_size, scan_needle):
            return False
        return needle in self.folded_header()


# Field lookups of one message by pattern before its header is split by name instead: a split (a
# Python walk over the lines) costs about as much as eight pattern scans of a 30-field header.
_SPLIT_AFTER_LOOKUPS = 8


def _header_text(data: bytes, header_size: int) -> str:
    """The top-level header as "Name: decoded value" lines (TEXT searches header and body)."""
    fields, _ = parse_header_block(data, 0, header_size)
    lines = []
    for _name, field_start, value_start, field_end in fields:
        name = data[field_start : value_start - 1].decode("latin-1")
        lines.append(name + ": " + decode_header_value(unfold(data[value_start:field_end])))
    return "\n".join(lines)


# -- compilation --------------------------------------------------------------------------------

RecordTest = Callable[[Any], bool]
MessageTest = Callable[[_Message], bool]


class _Node:
    """A compiled search key: ``record`` tests a MessageMeta (cost 0 only), ``message`` tests
    a _Message (any cost)."""

    __slots__ = ("cost", "record", "message", "always")

    def __init__(self, cost: int, record: RecordTest | None, message: MessageTest,
                 always: bool = False) -> None:
        self.cost = cost
        self.record = record
        self.message = message
        self.always = always  # ALL: true for every message


def _record_node(test: RecordTest, always: bool = False) -> _Node:
    return _Node(COST_RECORD, test, lambda msg: test(msg.meta), always)


def _day_number(date: datetime.date) -> int:
    return date.toordinal() - _EPOCH_ORDINAL


def _date_test(relation: str, day: int, day_of: Callable[[Any], int]) -> Callable[[Any], bool]:
    if relation == "BEFORE":
        return lambda item: day_of(item) < day
    if relation == "ON":
        return lambda item: day_of(item) == day
    return lambda item: day_of(item) >= day


def _internal_day(meta: Any) -> int:
    """The day of the internal date in the zone it was given in (RFC 3501: "disregarding time
    and timezone" means the date as the INTERNALDATE string shows it)."""
    return (meta.internaldate + meta.tzoffset * 60) // 86400


def _sent_day(msg: _Message) -> int:
    """The day of the Date: header in its own zone; the internal date when there is none
    (as RFC 5256 SORT does for a missing sent date)."""
    summary = msg.summary
    raw = summary.sent_date
    if raw:
        parsed = parsedate_tz(raw.decode("latin-1"))
        if parsed is not None:
            try:
                return _day_number(datetime.date(parsed[0], parsed[1], parsed[2]))
            except (ValueError, OverflowError):
                pass
    if summary.date is not None:
        return summary.date // 86400
    return _internal_day(msg.meta)


class _Compiler:
    def __init__(self, session: Any, now: float) -> None:
        self.session = session
        self.view = session.selected
        self.now = now
        # Whether a compiled test reads a record field beyond the UID and size (flags, dates,
        # MODSEQ): without one, the search runs on search_rows' light rows (_Row).
        self.reads_meta = False
        self.save_days: dict[int, int] | None = None  # UID -> day of its save date (_saved_day)

    def compile(self, key: SearchKey) -> _Node:
        handler = getattr(self, "_" + type(key).__name__, None)
        if handler is None:
            raise SearchUnsupported(type(key).__name__)
        return handler(key)

    # record-only keys

    def _SearchAll(self, key: cmds.SearchAll) -> _Node:
        return _record_node(lambda meta: True, always=True)

    def _SearchFlag(self, key: cmds.SearchFlag) -> _Node:
        self.reads_meta = True
        wanted = key.flag.lower()
        present = key.present
        # Folders hold few distinct flag tuples: decide once per tuple.
        cache: dict[tuple[str, ...], bool] = {}

        def test(meta: Any) -> bool:
            flags = meta.flags
            result = cache.get(flags)
            if result is None:
                result = any(flag.lower() == wanted for flag in flags) == present
                cache[flags] = result
            return result

        return _record_node(test)

    def _SearchRecent(self, key: cmds.SearchRecent) -> _Node:
        recent = self.view.recent
        return _record_node(lambda meta: meta.uid in recent)

    def _SearchSize(self, key: cmds.SearchSize) -> _Node:
        size = key.size
        if key.larger:
            return _record_node(lambda meta: meta.size > size)
        return _record_node(lambda meta: meta.size < size)

    def _SearchDate(self, key: cmds.SearchDate) -> _Node:
        self.reads_meta = True  # the internal date (SENT* falls back on it)
        day = _day_number(key.date)
        if key.kind == "INTERNAL":
            return _record_node(_date_test(key.relation, day, _internal_day))
        if key.kind == "SENT":
            test = _date_test(key.relation, day, _sent_day)
            return _Node(COST_DIGEST, None, test)
        if key.kind == "SAVED":
            return _record_node(_date_test(key.relation, day, self._saved_day()))
        raise SearchUnsupported(key.kind + key.relation)

    def _saved_day(self) -> Callable[[Any], int]:
        """The day of a message's save date in the server's zone, as FETCH SAVEDATE shows it;
        of its internal date when the save date is unknown (a message saved before its store
        kept them: RFC 8514 section 4.3's rule for storage without save dates). The view's save
        dates are read in one pass, when the first message is tested (a search that reads
        records compiles its keys twice: see search_sliced), shared by every key asking."""

        def day_of(meta: Any) -> int:
            days = self.save_days
            if days is None:
                view = self.view
                saved = self.session.store.save_dates(view.account, view.folder_id, view.uids)
                days = self.save_days = {uid: (when + encode.local_offset(when) * 60) // 86400
                                         for uid, when in saved.items()}
            day = days.get(meta.uid)
            return _internal_day(meta) if day is None else day

        return day_of

    def _SearchAge(self, key: cmds.SearchAge) -> _Node:
        self.reads_meta = True
        limit = int(self.now) - key.seconds
        # RFC 5032 section 2: the target time itself is both "less recent than or equal to"
        # (OLDER) and "more recent than or equal to" (YOUNGER).
        if key.older:
            return _record_node(lambda meta: meta.internaldate <= limit)
        return _record_node(lambda meta: meta.internaldate >= limit)

    def _SearchModSeq(self, key: cmds.SearchModSeq) -> _Node:
        # The per-message MODSEQ stands for every metadata entry (RFC 7162 section 3.1.5 allows it).
        self.reads_meta = True
        modseq = key.modseq
        return _record_node(lambda meta: meta.modseq >= modseq)

    def _SearchObjectId(self, key: cmds.SearchObjectId) -> _Node:
        """RFC 8474 section 6. EMAILID is the body id the record names; THREADID is computed
        from the front of the message's summary (its Message-ID, In-Reply-To and References),
        as FETCH THREADID does."""
        wanted = key.objectid
        if key.kind == "EMAILID":
            blob = objectids.blob_of_email_id(wanted)   # None: no message has that id
            return _record_node(lambda meta: meta.blob == blob)

        if not objectids.is_thread_id(wanted):
            return _record_node(lambda meta: False)   # no message has it: no summary read

        return _Node(COST_DIGEST, None, lambda msg: objectids.thread_id_of(msg.meta.blob, msg.message_ids) == wanted)

    def _SearchSequence(self, key: cmds.SearchSequence) -> _Node:
        seqset = key.seqset
        if seqset.saved:
            members = frozenset(saved_uids(self.session))
            return _record_node(lambda meta: meta.uid in members)
        uids = self.view.uids
        if key.uid:
            ranges = seqset.resolve(uids[-1], clip=False) if uids else []
        else:
            ranges = _msn_ranges_as_uid_ranges(self.view, seqset)
        resolved = ResolvedSet(ranges)
        return _record_node(lambda meta: meta.uid in resolved)

    # keys that read the message

    def _SearchHeader(self, key: cmds.SearchHeader) -> _Node:
        name = key.field.lower()
        needle = searchtext.fold(key.value)
        attribute = _DIGEST_FIELDS.get(name)

        values_of = searchtext.HeaderValues(name)

        def header_test(msg: _Message) -> bool:
            values = msg.header_values(values_of)
            if not needle:
                return bool(values)  # an empty string matches every message having the field
            return any(needle in searchtext.fold(value) for value in values)

        if attribute is None or not needle:
            return _Node(COST_HEADER, None, header_test)
        raw_needle = searchtext.ascii_needle(needle)

        def digest_test(msg: _Message) -> bool:
            if raw_needle is not None and not msg.summary_may_contain(raw_needle):
                return False  # ruled out without decoding the summary
            return needle in searchtext.fold(getattr(msg.summary, attribute))

        if not key.every_occurrence:
            return _Node(COST_DIGEST, None, digest_test)

        def field_test(msg: _Message) -> bool:
            # HEADER looks in the field's text alone: an address field's summary goes on, after
            # a line break, with addr-specs as the ENVELOPE has them (midb.mime
            # _address_search_text). A decoded field holding a line break of its own is cut
            # there too, and then found by header_test.
            if raw_needle is not None and not msg.summary_may_contain(raw_needle):
                return False
            return needle in searchtext.fold(getattr(msg.summary, attribute).partition("\n")[0])

        # HEADER Subject "x": the summary holds the first field; a repeated one is in the header.
        return _Node(COST_HEADER, None, lambda msg: field_test(msg) or header_test(msg))

    def _SearchText(self, key: cmds.SearchText) -> _Node:
        needle = searchtext.fold(key.value)
        if not needle:
            return _record_node(lambda meta: True, always=True)
        ascii_needle = searchtext.ascii_needle(needle)
        if key.where == "BODY":
            return _Node(COST_BODY, None, lambda msg: msg.body_contains(needle, ascii_needle))

        scan_needle = searchtext.scan_needle(needle)

        def text_test(msg: _Message) -> bool:
            # RFC 9051 section 6.4.4: "the header (including MIME header fields) or body".
            return (msg.header_contains(needle, scan_needle) or msg.body_contains(needle, ascii_needle)
                    or msg.part_headers_contain(needle))

        return _Node(COST_BODY, None, text_test)

    # combinations

    def _SearchAnd(self, key: cmds.SearchAnd) -> _Node:
        nodes = sorted((self.compile(child) for child in key.keys), key=lambda node: node.cost)
        nodes = [node for node in nodes if not node.always] or nodes[:1]
        if len(nodes) == 1:
            return nodes[0]
        cost = nodes[-1].cost
        message_tests = [node.message for node in nodes]

        def message(msg: _Message) -> bool:
            return all(test(msg) for test in message_tests)

        if cost == COST_RECORD:
            record_tests = [node.record for node in nodes]

            def record(meta: Any) -> bool:
                return all(test(meta) for test in record_tests)  # type: ignore[misc]

            return _Node(cost, record, message)
        return _Node(cost, None, message)

    def _SearchOr(self, key: cmds.SearchOr) -> _Node:
        nodes = sorted((self.compile(child) for child in key.keys), key=lambda node: node.cost)
        if any(node.always for node in nodes):
            return _record_node(lambda meta: True, always=True)
        cost = nodes[-1].cost
        message_tests = [node.message for node in nodes]

        def message(msg: _Message) -> bool:
            return any(test(msg) for test in message_tests)

        if cost == COST_RECORD:
            record_tests = [node.record for node in nodes]

            def record(meta: Any) -> bool:
                return any(test(meta) for test in record_tests)  # type: ignore[misc]

            return _Node(cost, record, message)
        return _Node(cost, None, message)

    def _SearchNot(self, key: cmds.SearchNot) -> _Node:
        node = self.compile(key.key)
        inner_message = node.message
        if node.cost == COST_RECORD:
            inner_record = node.record
            assert inner_record is not None
            return _Node(COST_RECORD, lambda meta: not inner_record(meta), lambda msg: not inner_message(msg))
        return _Node(node.cost, None, lambda msg: not inner_message(msg))


# -- evaluation ---------------------------------------------------------------------------------


def _top_level(key: SearchKey) -> Sequence[SearchKey]:
    return key.keys if isinstance(key, cmds.SearchAnd) else (key,)


def _candidate_uids(session: Any, keys: Iterable[SearchKey]) -> list[int] | None:
    """The UIDs a top-level sequence-set key restricts the search to, or None (no restriction)."""
    view = session.selected
    narrowed: set[int] | None = None
    for key in keys:
        if not isinstance(key, cmds.SearchSequence):
            continue
        seqset = key.seqset
        if seqset.saved:
            uids = saved_uids(session)
        elif key.uid:
            uids = view.resolve(seqset, True)
        else:
            ranges = seqset.resolve(len(view.uids))
            uids = [uid for low, high in ranges for uid in view.uids[low - 1 : high]]
        narrowed = set(uids) if narrowed is None else narrowed.intersection(uids)
    return None if narrowed is None else sorted(narrowed)


def _indexed_flag(key: SearchKey) -> str | None:
    """"unseen" / "deleted" for the keys midb's flag index answers (UNSEEN, DELETED), else None."""
    if isinstance(key, cmds.SearchFlag):
        flag = key.flag.lower()
        if flag == "\\seen" and not key.present:
            return "unseen"
        if flag == "\\deleted" and key.present:
            return "deleted"
    return None


def _flag_index_uids(session: Any, keys: Iterable[SearchKey]) -> list[int] | None:
    """The UIDs midb's flag index gives for top-level UNSEEN / DELETED keys (intersected), cut to
    the messages announced to the client, or None when no such key is there."""
    view = session.selected
    store = session.store
    found: list[list[int]] = []
    for key in keys:
        kind = _indexed_flag(key)
        if kind == "unseen":
            found.append(store.unseen_uids(view.account, view.folder_id))
        elif kind == "deleted":
            found.append(store.deleted_uids(view.account, view.folder_id))
    if not found:
        return None
    # The index lists UIDs ascending: one list (UNSEEN alone) is cut at uid_max, not re-sorted.
    uids = found[0] if len(found) == 1 else sorted(set(found[0]).intersection(*found[1:]))
    uid_max = view.uid_max
    if uids and uids[-1] > uid_max:
        del uids[bisect.bisect_right(uids, uid_max):]
    return uids


def _flattened(keys: Sequence[SearchKey]) -> list[SearchKey]:
    """Top-level keys with nested AND groups (NEW, parenthesised lists) opened up."""
    out: list[SearchKey] = []
    for key in keys:
        if isinstance(key, cmds.SearchAnd):
            out.extend(_flattened(key.keys))
        else:
            out.append(key)
    return out


def _load_records(session: Any, keys: Sequence[SearchKey], slicer: TimeSlice | None,
                  read_named: bool) -> Generator[Pause, Any, list[Any]]:
    """Index records of the view's messages (those the store still has), in UID order. Those of
    the candidates alone when they are few, or with ``read_named``, in pieces (_in_pieces);
    else every message's, in one cursor pass over the folder (midb prefetches its pages for a
    large one: a cold scan reads them in parallel), which a slice does not cut: like the
    folder's scan in a SEARCH of its own, about 250 ms for 100,000 messages."""
    view = session.selected
    store = session.store
    flat = _flattened(keys)
    candidates = _candidate_uids(session, flat)
    indexed = _flag_index_uids(session, flat)
    if indexed is not None:
        # Every message matching the search is among these (the key is still evaluated below).
        candidates = sorted(indexed if candidates is None else set(candidates).intersection(indexed))
    if candidates is not None and (read_named or len(candidates) * _NARROW_FRACTION < len(view.uids)):
        return (yield from _in_pieces(lambda uids: store.get_messages(view.account, view.folder_id, uids),
                                      candidates, slicer))
    uid_max = view.uid_max
    records = store.messages(view.account, view.folder_id)
    if records and records[-1].uid > uid_max:
        # Messages that arrived after the last announcement are not in the client's view yet.
        cut = bisect.bisect_right([meta.uid for meta in records], uid_max)
        records = records[:cut]
    return records


# Candidates whose records a sliced search reads per store call (_in_pieces): about 10 ms of
# MessageMeta records, 4 ms of search_rows' rows.
_RECORDS_PER_READ = 4096


def _in_pieces(read: Callable[[list[int]], list[Any]], candidates: list[int],
               slicer: TimeSlice | None) -> Generator[Pause, Any, list[Any]]:
    """``read(candidates)`` (ascending UIDs; what the store has of them, in UID order), asked
    for _RECORDS_PER_READ at a time, with a PAUSE before each ask once ``slicer``'s time is up
    (None: all at once): the records of a live search's re-check after a bulk flag change or a
    large delivery, or of a search of the flag index's UNSEEN in a large folder."""
    if not candidates:
        return []
    if slicer is None or len(candidates) <= _RECORDS_PER_READ:
        yield from pause_if_over(slicer)
        return read(candidates)
    records: list[Any] = []
    for start in range(0, len(candidates), _RECORDS_PER_READ):
        yield from pause_if_over(slicer)
        records += read(candidates[start : start + _RECORDS_PER_READ])
    return records


def search(session: Any, key: SearchKey, *, now: float | None = None) -> list[int]:
    """:func:`search_sliced`, run to its end at once."""
    return run_unsliced(search_sliced(session, key, None, now=now))


def search_sliced(session: Any, key: SearchKey, slicer: TimeSlice | None, *,
                  now: float | None = None, read_named: bool = False) -> Generator[Pause | Await, Any, list[int]]:
    """UIDs (ascending) of the selected mailbox's messages that match ``key``; yields PAUSE
    between messages when ``slicer``'s time is up (None: never). ``read_named``: the messages a
    top-level set of ``key`` names are read (their records, in pieces), never the whole folder's
    even where they are most of it (a live search's re-check: the pages of what it looks at
    again were just written, so the prefetch of a whole folder's scan gains it nothing).

    Messages expunged by another session but still in the view do not match (RFC 2180 section
    4.1.4 leaves the choice; they cannot be read any more). Raises SearchUnsupported for keys the
    server does not implement and lets store errors propagate."""
    keys = _flattened(_top_level(key))
    answer = _index_answer(session, keys)
    if answer is not None:
        return answer
    compiler = _Compiler(session, time.time() if now is None else now)
    # Top-level UNSEEN and DELETED need no test: _load_rows takes its candidates from the flag
    # index, which lists exactly the messages they match.
    nodes = [compiler.compile(child) for child in keys if _indexed_flag(child) is None]
    if compiler.reads_meta:
        records = yield from search_records_sliced(session, key, slicer, now=now, read_named=read_named)
        return [meta.uid for meta in records]
    matched = yield from _evaluate_in_turn(session, nodes, lambda: _load_rows(session, keys, slicer), slicer)
    return [row.uid for row in matched]


# Messages in the view from which a search reads and tests its messages with the collector
# paused (gximap.session.collector). The rows or records read (an object or two per message) and
# what the tests build per message started 430 collections in a SEARCH SUBJECT of 100,000
# messages (30 ms of its 650) and 630 in a SEARCH BODY (90 ms of 1.1 s, four of those
# collections over all of the process's objects).
_PAUSE_FROM = 4096


def _collector_paused_for(session: Any, slicer: TimeSlice | None) -> contextlib.AbstractContextManager[None]:
    """Paused while the search runs, not while other sessions run between its slices."""
    if len(session.selected.uids) < _PAUSE_FROM:
        return contextlib.nullcontext()
    return collector_paused_in(slicer)


class _Row:
    """A message as Store.search_rows gives it: what tests that read neither flags nor dates
    need of its record (UID, size), and its body id. Stands in for a MessageMeta."""

    __slots__ = ("uid", "key", "size")

    def __init__(self, uid: int, key: bytes, size: int) -> None:
        self.uid = uid
        self.key = key  # the body id, raw
        self.size = size

    @property
    def blob(self) -> str:
        return self.key.hex()


def _load_rows(session: Any, keys: Sequence[SearchKey], slicer: TimeSlice | None) -> Generator[Pause, Any, list[_Row]]:
    """_load_records as light rows (no MessageMeta: a fraction of the cost per message): the
    candidates' in pieces (_in_pieces), or the whole folder's in one cursor pass."""
    view = session.selected
    store = session.store
    candidates = _candidate_uids(session, keys)
    indexed = _flag_index_uids(session, keys)
    if indexed is not None:
        candidates = sorted(indexed if candidates is None else set(candidates).intersection(indexed))
    if candidates is None:
        found = store.search_rows(view.account, view.folder_id, None)
    else:
        found = yield from _in_pieces(lambda uids: store.search_rows(view.account, view.folder_id, uids),
                                      candidates, slicer)
    rows = [_Row(uid, key, size) for uid, key, size, _internaldate in found]
    uid_max = view.uid_max
    if rows and rows[-1].uid > uid_max:
        # Messages that arrived after the last announcement are not in the client's view yet.
        del rows[bisect.bisect_right(rows, uid_max, key=lambda row: row.uid):]
    return rows


def _index_answer(session: Any, keys: list[SearchKey]) -> list[int] | None:
    """The result, without reading any message record, of a search made only of flag-index keys
    (UNSEEN, DELETED), sequence sets and ALL, e.g. ``UID SEARCH UNSEEN`` or the ``ALL`` of a
    SORT; None for any other search. The flag index, and the message keys ALL reads, list
    existing messages only, so expunged ones drop out as they should."""
    if not all(_indexed_flag(key) is not None or isinstance(key, (cmds.SearchSequence, cmds.SearchAll))
               for key in keys):
        return None
    indexed = _flag_index_uids(session, keys)
    if indexed is None:
        if any(isinstance(key, cmds.SearchSequence) for key in keys):
            return None  # a sequence set narrows the search: its records are read (_load_rows)
        view = session.selected
        indexed = _view_if_current(session.store, view)
        if indexed is None:
            indexed = session.store.uids(view.account, view.folder_id)
            if indexed and indexed[-1] > view.uid_max:
                # Messages that arrived after the last announcement are not in the client's view yet.
                del indexed[bisect.bisect_right(indexed, view.uid_max):]
    candidates = _candidate_uids(session, keys)
    return indexed if candidates is None else sorted(set(candidates).intersection(indexed))


def _view_if_current(store: Any, view: Any) -> list[int] | None:
    """The view's UIDs when they are exactly the folder's messages, from its record alone (no
    read of 100,000 message keys for the ALL of a SORT, a THREAD or a SEARCH); None when that
    cannot be told. A message is never given a UID below the folder's UIDNEXT, so when UIDNEXT
    has not passed the highest UID the view announced, every stored message was there when the
    view last caught up and is in it; then equal counts mean that none has been expunged since."""
    folder = store.folder_by_id(view.account, view.folder_id)
    if folder is None or folder.uidnext - 1 > view.uid_max or folder.messages != view.exists:
        return None
    return view.uids.tolist()


def search_records(session: Any, key: SearchKey, *, now: float | None = None) -> list[Any]:
    """:func:`search_records_sliced`, run to its end at once."""
    return run_unsliced(search_records_sliced(session, key, None, now=now))


def search_records_sliced(session: Any, key: SearchKey, slicer: TimeSlice | None, *,
                          now: float | None = None, read_named: bool = False
                          ) -> Generator[Pause | Await, Any, list[Any]]:
    """Like :func:`search_sliced`, but the matching index records (MessageMeta, ascending UID):
    SORT and THREAD order them without reading the records a second time."""
    compiler = _Compiler(session, time.time() if now is None else now)
    keys = _top_level(key)
    nodes = [compiler.compile(child) for child in keys]
    return (yield from _evaluate_in_turn(session, nodes, lambda: _load_records(session, keys, slicer, read_named),
                                         slicer))


def _evaluate_in_turn(session: Any, nodes: list[_Node], load: Callable[[], Generator[Pause, Any, list[Any]]],
                      slicer: TimeSlice | None) -> Generator[Pause | Await, Any, list[Any]]:
    """_evaluate over the records ``load`` reads (in slices), once the search has its turn
    (_SearchSlot)."""
    with _SearchSlot(session, nodes, slicer) as slot:
        yield from slot.wait()
        with _collector_paused_for(session, slicer):
            records = yield from load()
            return (yield from _evaluate(session.store, nodes, records, slicer))


# Messages whose summaries are read per store call, and at most this many bytes of them per body
# batch (bounds the memory of a search: two batches are in flight).
_BATCH_MESSAGES = 1024
_BATCH_BYTES = 16 << 20
_READER_THREADS = 4  # body batches read ahead at once, over all sessions of the process

_READ_AHEAD = ProcessPool(_READER_THREADS, "search-read")


class _SearchSlots:
    """How many sliced searches may read and test messages at once, in the process and per
    account.

    A search paused between slices holds the records it loaded and up to two batches of bodies
    (32 MiB) while other sessions run. When a command kept its worker to the end, the few workers
    bounded how many were in progress; now every connection could have one. Beyond the bounds a
    search waits for its turn before it loads anything, holding no worker (an Await). The bound
    per account keeps one user's searches from making everyone else's wait."""

    def __init__(self, total: int, per_account: int) -> None:
        self.total = total
        self.per_account = per_account
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._in_use = 0
        self._waiting: deque[tuple[str, Future[None]]] = deque()

    def claim(self, account: str) -> Future[None]:
        """A future done once ``account`` holds a slot: give it back with release(), unless it
        is still waiting and forget() cancels it (it is then never granted)."""
        future: Future[None] = Future()
        with self._lock:
            granted = self._can_run(account) and self._take(account, future)
            if not granted:
                self._waiting.append((account, future))
        if granted:
            future.set_result(None)
        return future

    def forget(self, future: Future[None]) -> bool:
        """Cancel a claim still waiting (its search ended first); False if it was granted."""
        with self._lock:
            if not future.cancel():
                return False
            for waiter in self._waiting:
                if waiter[1] is future:
                    self._waiting.remove(waiter)
                    break
            return True

    def release(self, account: str) -> None:
        granted = []
        with self._lock:
            self._in_use -= 1
            left = self._running[account] - 1
            if left:
                self._running[account] = left
            else:
                del self._running[account]
            kept: deque[tuple[str, Future[None]]] = deque()
            for waiter in self._waiting:
                if self._can_run(waiter[0]) and self._take(*waiter):
                    granted.append(waiter[1])
                elif not waiter[1].cancelled():
                    kept.append(waiter)
            self._waiting = kept
        # Outside the lock: resolving a future runs its callbacks (the session's waker, which
        # schedules the connection in the pool, under the pool's locks).
        for future in granted:
            future.set_result(None)

    def _can_run(self, account: str) -> bool:
        return self._in_use < self.total and self._running.get(account, 0) < self.per_account

    def _take(self, account: str, future: Future[None]) -> bool:
        """Count a slot for ``future`` unless it was cancelled; set_result() follows, unlocked."""
        if not future.set_running_or_notify_cancel():
            return False
        self._in_use += 1
        self._running[account] = self._running.get(account, 0) + 1
        return True


_SLOTS = _SearchSlots(total=8, per_account=2)


class _SearchSlot:
    """The slot a sliced search that tests messages holds, from before it loads its records to
    its end; nothing for one made of record tests only, or run unsliced (tests, tools), or run
    within a command that holds one already (command_slot)."""

    __slots__ = ("slots", "account", "future", "slicer")

    def __init__(self, session: Any, nodes: list[_Node] | None, slicer: TimeSlice | None) -> None:
        self.slicer = slicer
        self.slots = _SLOTS  # the one claimed from is the one given back to
        self.account = session.selected.account
        if slicer is None or slicer.holds_slot:
            needed = False
        elif nodes is None:  # a whole command (command_slot)
            needed = len(session.selected.uids) >= _PAUSE_FROM
        else:
            needed = any(node.cost != COST_RECORD for node in nodes)
        self.future = self.slots.claim(self.account) if needed else None
        if self.future is not None and slicer is not None:
            slicer.holds_slot = True

    def wait(self) -> Generator[Await, Any, None]:
        """Wait (holding no worker) until the slot is granted."""
        if self.future is not None and not self.future.done():
            assert self.slicer is not None
            yield from self.slicer.wait(self.future)

    def __enter__(self) -> _SearchSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        future, self.future = self.future, None
        if future is None:
            return
        if self.slicer is not None:
            self.slicer.holds_slot = False
        if not self.slots.forget(future):  # granted: ours to give back
            self.slots.release(self.account)


def command_slot(session: Any, slicer: TimeSlice) -> _SearchSlot:
    """A search slot for the whole of a SORT or THREAD, ``with`` it and ``yield from`` its
    wait() before the search: paused between slices, such a command holds its search's result,
    the values it read and what it builds of them (about 50 MB for a first THREAD of 100,000
    messages), as a search holds its records. Claimed for a view of _PAUSE_FROM messages or more
    (a smaller one takes a few slices at most), whatever the search program: SORT ALL tests no
    message but reads every message's values."""
    return _SearchSlot(session, None, slicer)


def _batches(records: Sequence[Any]) -> Iterator[tuple[int, int]]:
    """(start, end) slices of ``records``: at most _BATCH_MESSAGES messages and, beyond the first
    message, _BATCH_BYTES of bodies each."""
    start = 0
    count = len(records)
    while start < count:
        end = start + 1
        total = records[start].size
        limit = min(count, start + _BATCH_MESSAGES)
        while end < limit and total + records[end].size <= _BATCH_BYTES:
            total += records[end].size
            end += 1
        yield start, end
        start = end


# Records the record-only tests run on between two looks at the slice's clock (_prefiltered):
# a flag test takes about 0.1 µs a record, so a chunk is well within a slice.
_FILTER_CHUNK = 4096


def _prefiltered(records: list[Any], tests: list[RecordTest],
                 slicer: TimeSlice | None) -> Generator[Pause, Any, list[Any]]:
    """The records that pass every one of ``tests``, in their order, a chunk at a time: between
    chunks a PAUSE once ``slicer``'s time is up, and the records looked at so far, of them all,
    as the command's progress (INPROGRESS)."""
    if not tests or not records:
        return records
    total = len(records)
    passed: list[Any] = []
    for start in range(0, total, _FILTER_CHUNK):
        if slicer is not None:
            slicer.note_progress(start, total)
            if slicer.over():
                yield from slicer.pause()
        chunk = records[start:start + _FILTER_CHUNK]
        for test in tests:
            chunk = list(filter(test, chunk))
        passed.extend(chunk)
    return passed


def _evaluate(store: Any, nodes: list[_Node], records: list[Any],
              slicer: TimeSlice | None) -> Generator[Pause, Any, list[Any]]:
    """The records (MessageMeta or _Row, ascending UID) that pass every node: the record-only
    nodes as filters over them all, then the others per message, cheapest first."""
    nodes = sorted(nodes, key=lambda node: node.cost)
    record_tests = [node.record for node in nodes
                    if node.cost == COST_RECORD and not node.always and node.record is not None]
    try:
        records = yield from _prefiltered(records, record_tests, slicer)
    finally:
        if slicer is not None:  # the messages tested next (if any) are counted of their own total
            slicer.forget_progress()
    if all(node.cost == COST_RECORD for node in nodes) or not records:
        return records
    if isinstance(records[0], _Row):
        keys = [record.key for record in records]
    else:
        keys = [bytes.fromhex(record.blob) for record in records]
    # Tests that read the body run last, on the messages the others let through, whose bodies are
    # read a batch ahead by a worker thread: the reads overlap this thread's searching.
    on_summary = [node.message for node in nodes if node.cost == COST_DIGEST]
    on_header = [node.message for node in nodes if node.cost == COST_HEADER]
    on_body = [node.message for node in nodes if node.cost == COST_BODY]
    matched: list[Any] = []
    pending: tuple[list[_Message], Future[list[bytes | None]]] | None = None
    # INPROGRESS (gximap.session.progress): the messages every test has run on, of those to test.
    total = len(records)
    if slicer is not None:
        slicer.note_progress(0, total)
    try:
        for start, end in _batches(records):
            survivors = yield from _pass_before_body(store, records[start:end], keys[start:end], on_summary,
                                                     on_header, slicer)
            if not on_body:
                matched.extend(msg.meta for _, msg in survivors)
                if slicer is not None:
                    slicer.note_progress(end, total)
                continue
            future = _READ_AHEAD.get().submit(store.search_bodies, [keys[start + index] for index, _ in survivors],
                                              [msg.meta.size for _, msg in survivors]) if survivors else None
            previous, pending = pending, ([msg for _, msg in survivors], future) if future is not None else None
            if previous is not None:  # closed in there, ``pending`` names the read to cancel
                matched.extend((yield from _pass_on_body(*previous, on_body, slicer)))
            if slicer is not None:  # the bodies of this batch are still to be tested
                slicer.note_progress(start, total)
        if pending is not None:
            matched.extend((yield from _pass_on_body(*pending, on_body, slicer)))
            pending = None
    finally:
        if pending is not None:
            pending[1].cancel()  # the search ended early (the client left): no read for nothing
        if slicer is not None:  # what the command does next is not counted in these messages
            slicer.forget_progress()
    return matched


def _passing(messages: Iterable[tuple[Any, _Message]], tests: list[MessageTest],
             slicer: TimeSlice | None) -> Generator[Pause, Any, list[tuple[Any, _Message]]]:
    """The (anything, message) pairs whose message passes ``tests``, pausing between messages
    when ``slicer``'s time is up."""
    passed = []
    for item in messages:
        if slicer is not None and slicer.over():
            yield from slicer.pause()
        if _passes(item[1], tests):
            passed.append(item)
    return passed


def _pass_before_body(store: Any, records: list[Any], keys: list[bytes], on_summary: list[MessageTest],
                      on_header: list[MessageTest],
                      slicer: TimeSlice | None) -> Generator[Pause, Any, list[tuple[int, _Message]]]:
    """(position in the batch, _Message) of the batch's messages that pass the tests that read
    the summary or digest (``on_summary``), then those that read the header (``on_header``): the
    summaries read in one call, then the headers of the messages still in, in one call too."""
    loaded = [(index, _Message(store, record, None, encoded))
              for index, (record, encoded) in enumerate(zip(records, store.search_summaries(keys), strict=True))
              if encoded is not None]  # None: expunged (and its body removed) while we searched
    survivors = (yield from _passing(loaded, on_summary, slicer)) if on_summary else loaded
    if not on_header or not survivors:
        return survivors
    try:
        sizes = [msg.summary.header_size for _, msg in survivors]
    except NoSuchBody:  # a summary rebuilt from a body that is gone: each header read on its own
        return (yield from _passing(survivors, on_header, slicer))
    headers = store.search_headers([keys[index] for index, _ in survivors], sizes)
    with_header = []
    for (index, msg), header in zip(survivors, headers, strict=True):
        if header is not None:  # None: expunged meanwhile
            msg.preload_header(header)
            with_header.append((index, msg))
    return (yield from _passing(with_header, on_header, slicer))


def _passes(msg: _Message, tests: list[MessageTest]) -> bool:
    """Whether ``msg`` passes every test; False for a message whose body went meanwhile."""
    try:
        return all(test(msg) for test in tests)
    except NoSuchBody:
        return False


def _pass_on_body(messages: list[_Message], bodies: Future[list[bytes | None]], tests: list[MessageTest],
                  slicer: TimeSlice | None) -> Generator[Pause, Any, list[Any]]:
    """The records of ``messages`` whose bodies (being read) pass ``tests``."""
    loaded = []
    for msg, data in zip(messages, bodies.result(), strict=True):
        if data is not None:
            msg.preload(data)
            loaded.append((msg.meta, msg))
    return [meta for meta, _msg in (yield from _passing(loaded, tests, slicer))]
