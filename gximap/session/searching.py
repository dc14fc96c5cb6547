"""SEARCH evaluation: the parser's SearchKey tree against the selected mailbox's messages.

The tree is compiled once into predicates, each with a cost class: what a test needs besides the
message's index record. Evaluation runs the record-only predicates of the top-level AND as
vectorised filters over all candidates first, then the remaining ones per surviving message, cheapest
first with short-circuit, loading the MIME digest, the header bytes or the whole body only when a
predicate asks for it (and at most once per message). A flag or UID search over 100,000 messages
therefore never touches a digest or a body file.

Also here: resolving a command's sequence set (message numbers, UIDs or the SEARCHRES ``$``) to
UIDs, shared by FETCH, STORE, COPY, MOVE and UID EXPUNGE.
"""

from __future__ import annotations

import bisect
import datetime
import time
from collections.abc import Callable, Iterable, Sequence
from email.utils import parsedate_tz
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.imap.commands import ResolvedSet, SearchKey, SequenceSet
from gximap.session.base import CommandFailed
from midb import searchtext
from midb.errors import NoSuchBody
from midb.mime import Digest, decode_header_value, parse_header_block, unfold
from midb.summary import Summary

__all__ = [
    "SearchUnsupported",
    "resolve_uids",
    "saved_uids",
    "search",
    "search_records",
]

# Cost classes: what a predicate reads besides the index record.
COST_RECORD = 0
COST_DIGEST = 1
COST_HEADER = 2
COST_BODY = 3

# Fewer candidate UIDs than this fraction of the folder: read just their records, not all.
_NARROW_FRACTION = 4
_SUMMARY_BATCH = 512  # message summaries read per store call

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
    count = len(uids)
    out = []
    for uid in saved:
        index = bisect.bisect_left(uids, uid)
        if index < count and uids[index] == uid:
            out.append(uid)
    return out


def resolve_uids(session: Any, seqset: SequenceSet, uid: bool) -> list[int]:
    """The view's UIDs named by a command's sequence set, ascending.

    ``$`` stands for the saved search result whatever the command's UID-ness (RFC 5182 section
    2.1). Message numbers beyond the message count are an error (RFC 9051 section 6.4.5 and
    following): BAD. UIDs that name nothing are simply no messages."""
    view = session.selected
    if seqset.saved:
        return saved_uids(session)
    if not uid and not view.valid_msn_set(seqset):
        raise CommandFailed(Code.BAD_SEQUENCE_NUMBER, status="BAD")
    return view.resolve(seqset, uid)


def _msn_ranges_as_uid_ranges(view: Any, seqset: SequenceSet) -> list[tuple[int, int]]:
    """Message-number ranges as the equivalent UID ranges of the view (positions are contiguous)."""
    uids = view.uids
    if not uids:
        return []
    return [(uids[low - 1], uids[high - 1]) for low, high in seqset.resolve(len(uids))]


# -- the per-message context for predicates beyond the index record ---------------------------------


class _Message:
    """One message during evaluation: its record, with its summary (midb.summary: the header
    values SEARCH reads), the MIME digest, the header bytes and the body text loaded on first use."""

    __slots__ = ("meta", "_store", "_summary", "_digest", "_header", "_data", "_folded")

    def __init__(self, store: Any, meta: Any, summary: Summary | None = None) -> None:
        self.meta = meta
        self._store = store
        self._summary = summary
        self._digest: Digest | None = None
        self._header: bytes | None = None
        self._data: bytes | None = None
        self._folded: dict[str, str] = {}

    @property
    def summary(self) -> Summary:
        if self._summary is None:
            self._summary = self._store.summary(self.meta.blob)
        return self._summary

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

    def body_contains(self, needle: str, ascii_needle: bytes | None) -> bool:
        """Whether the case-folded readable body text contains ``needle`` (already folded;
        ``ascii_needle`` is its ASCII encoding, None when it is not ASCII)."""
        text = self._folded.get("body")
        if text is None:
            leaf = self.summary.leaf
            if leaf is not None:
                # A single-part message: its text needs the summary only, and often no decoding.
                raw = searchtext.ascii_body(self.data, leaf)
                if raw is not None:
                    return ascii_needle is not None and ascii_needle in raw.lower()
                text = searchtext.fold(searchtext.body_text(self.data, leaf))
            else:
                text = searchtext.fold(searchtext.body_text(self.data, self.digest))
            self._folded["body"] = text
        return needle in text

    def folded_header(self) -> str:
        text = self._folded.get("header")
        if text is None:
            text = searchtext.fold(_header_text(self.header, self.summary.header_size))
            self._folded["header"] = text
        return text


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

    def compile(self, key: SearchKey) -> _Node:
        handler = getattr(self, "_" + type(key).__name__, None)
        if handler is None:
            raise SearchUnsupported(type(key).__name__)
        return handler(key)

    # record-only keys

    def _SearchAll(self, key: cmds.SearchAll) -> _Node:
        return _record_node(lambda meta: True, always=True)

    def _SearchFlag(self, key: cmds.SearchFlag) -> _Node:
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
        day = _day_number(key.date)
        if key.kind == "INTERNAL":
            return _record_node(_date_test(key.relation, day, _internal_day))
        if key.kind == "SENT":
            test = _date_test(key.relation, day, _sent_day)
            return _Node(COST_DIGEST, None, test)
        raise SearchUnsupported(key.kind + key.relation)  # SAVEDATE (RFC 8514) is not offered

    def _SearchAge(self, key: cmds.SearchAge) -> _Node:
        limit = int(self.now) - key.seconds
        if key.older:
            return _record_node(lambda meta: meta.internaldate <= limit)
        return _record_node(lambda meta: meta.internaldate > limit)

    def _SearchModSeq(self, key: cmds.SearchModSeq) -> _Node:
        # The per-message MODSEQ stands for every metadata entry (RFC 7162 section 3.1.5 allows it).
        modseq = key.modseq
        return _record_node(lambda meta: meta.modseq >= modseq)

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
        if attribute is not None and needle:
            def digest_test(msg: _Message) -> bool:
                return needle in searchtext.fold(getattr(msg.summary, attribute))

            return _Node(COST_DIGEST, None, digest_test)

        def header_test(msg: _Message) -> bool:
            values = searchtext.header_values(msg.header, msg.summary.header_size, name)
            if not needle:
                return bool(values)  # an empty string matches every message having the field
            return any(needle in searchtext.fold(value) for value in values)

        return _Node(COST_HEADER, None, header_test)

    def _SearchText(self, key: cmds.SearchText) -> _Node:
        needle = searchtext.fold(key.value)
        if not needle:
            return _record_node(lambda meta: True, always=True)
        ascii_needle = needle.encode("ascii") if needle.isascii() else None
        if key.where == "BODY":
            return _Node(COST_BODY, None, lambda msg: msg.body_contains(needle, ascii_needle))

        def text_test(msg: _Message) -> bool:
            return needle in msg.folded_header() or msg.body_contains(needle, ascii_needle)

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
    narrowed: set[int] | None = None
    for key in keys:
        kind = _indexed_flag(key)
        if kind == "unseen":
            uids = store.unseen_uids(view.account, view.folder_id)
        elif kind == "deleted":
            uids = store.deleted_uids(view.account, view.folder_id)
        else:
            continue
        narrowed = set(uids) if narrowed is None else narrowed.intersection(uids)
    if narrowed is None:
        return None
    uid_max = view.uid_max
    return [uid for uid in narrowed if uid <= uid_max]


def _flattened(keys: Sequence[SearchKey]) -> list[SearchKey]:
    """Top-level keys with nested AND groups (NEW, parenthesised lists) opened up."""
    out: list[SearchKey] = []
    for key in keys:
        if isinstance(key, cmds.SearchAnd):
            out.extend(_flattened(key.keys))
        else:
            out.append(key)
    return out


def _load_records(session: Any, keys: Sequence[SearchKey]) -> list[Any]:
    """Index records of the view's messages (those the store still has), in UID order."""
    view = session.selected
    store = session.store
    flat = _flattened(keys)
    candidates = _candidate_uids(session, flat)
    indexed = _flag_index_uids(session, flat)
    if indexed is not None:
        # Every message matching the search is among these (the key is still evaluated below).
        candidates = sorted(indexed if candidates is None else set(candidates).intersection(indexed))
    if candidates is not None and len(candidates) * _NARROW_FRACTION < len(view.uids):
        return store.get_messages(view.account, view.folder_id, candidates) if candidates else []
    uid_max = view.uid_max
    records = store.messages(view.account, view.folder_id)
    if records and records[-1].uid > uid_max:
        # Messages that arrived after the last announcement are not in the client's view yet.
        cut = bisect.bisect_right([meta.uid for meta in records], uid_max)
        records = records[:cut]
    return records


def search(session: Any, key: SearchKey, *, now: float | None = None) -> list[int]:
    """UIDs (ascending) of the selected mailbox's messages that match ``key``.

    Messages expunged by another session but still in the view do not match (RFC 2180 section
    4.1.4 leaves the choice; they cannot be read any more). Raises SearchUnsupported for keys the
    server does not implement and lets store errors propagate."""
    answer = _index_answer(session, _flattened(_top_level(key)))
    if answer is not None:
        return answer
    return [meta.uid for meta in search_records(session, key, now=now)]


def _index_answer(session: Any, keys: list[SearchKey]) -> list[int] | None:
    """The result, without reading any message record, of a search made only of flag-index keys
    (UNSEEN, DELETED) and sequence sets, e.g. ``UID SEARCH UNSEEN``; None for any other search.
    The flag index lists existing messages only, so expunged ones drop out as they should."""
    if not all(_indexed_flag(key) is not None or isinstance(key, (cmds.SearchSequence, cmds.SearchAll))
               for key in keys):
        return None
    indexed = _flag_index_uids(session, keys)
    if indexed is None:
        return None
    candidates = _candidate_uids(session, keys)
    return sorted(indexed if candidates is None else set(candidates).intersection(indexed))


def search_records(session: Any, key: SearchKey, *, now: float | None = None) -> list[Any]:
    """Like :func:`search`, but the matching index records (MessageMeta, ascending UID): SORT
    and THREAD order them without reading the records a second time."""
    compiler = _Compiler(session, time.time() if now is None else now)
    keys = _top_level(key)
    nodes = sorted((compiler.compile(child) for child in keys), key=lambda node: node.cost)
    records = _load_records(session, keys)
    for node in nodes:
        if node.cost != COST_RECORD or node.always or not records:
            continue
        records = list(filter(node.record, records))
    costly = [node.message for node in nodes if node.cost != COST_RECORD]
    if not costly:
        return records
    # Tests that read the body run last, on the messages the others let through, whose bodies are
    # then read in one batch (in parallel: the waits for the disk overlap).
    before_body = [node.message for node in nodes if COST_RECORD < node.cost < COST_BODY]
    on_body = [node.message for node in nodes if node.cost == COST_BODY]
    store = session.store
    matched = []
    for start in range(0, len(records), _SUMMARY_BATCH):
        chunk = records[start : start + _SUMMARY_BATCH]
        survivors = []
        for meta, summary in zip(chunk, store.summaries([meta.blob for meta in chunk]), strict=True):
            if summary is None:
                continue  # expunged (and its body removed) while we searched
            msg = _Message(store, meta, summary)
            try:
                if all(test(msg) for test in before_body):
                    survivors.append(msg)
            except NoSuchBody:
                continue
        if not on_body:
            matched.extend(msg.meta for msg in survivors)
            continue
        bodies = store.read_bodies([msg.meta.blob for msg in survivors])
        for msg, data in zip(survivors, bodies, strict=True):
            if data is None:
                continue
            msg.preload(data)
            try:
                if all(test(msg) for test in on_body):
                    matched.append(msg.meta)
            except NoSuchBody:
                continue
    return matched
