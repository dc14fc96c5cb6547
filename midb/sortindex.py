"""The sort index: what SORT and THREAD compare of each message, in UID order per folder (schema 7).

The values SORT and THREAD sort and thread by (RFC 5256) are the sent date, the base subject, the
first From/To/Cc mailboxes, the display names and the message ids. Every body's summary carries
them (midb.summary, format 3's sort section), but summaries are kept by body id beside the bodies
(midb.bodyrecords): a folder's are scattered over the whole table, so reading them for a
100,000-message folder's first SORT or THREAD costs one B-tree descent per message (about 1.7
µs each on the bench store, 0.2 s in all, plus 0.08 s for the message records that name the bodies).

``sort_records`` keeps a copy per message instead, under the message's own key (account, folder,
UID): a folder's entries are one key range, read in UID order by one cursor pass (about 0.5 µs a
message) with no message record needed. An entry is written with its message (APPEND with the
body parsed, COPY and MOVE from the source's entry, the INBOX rename) and removed with it (EXPUNGE,
MOVE, folder and account deletion), in the same transaction; a body parsed after its APPEND
(midb.deferred) gets its message's entry in the deferred parse's batch. A message still without
one (a copy made before the parse) gets it from the first reader: ``Store.sort_values`` derives
it from the summary and hands it back for writing (``Store.store_sort_entries``). A message
without an entry is never wrong, only slower; an entry without a message is an error ``midb
verify`` reports and ``--repair`` removes.

An entry is ``>BqI`` (ENTRY_VERSION, the date, the length of the thread part) followed by two
marshalled tuples of the values SORT and THREAD compare, ready to use. The thread part (what a
THREAD algorithm takes of a message, thread_values): the date (the sent date, else the internal
date: RFC 5256 section 2.2), the base subject, whether the message is a reply or forward, its
Message-ID and its parent ids (References, else In-Reply-To: RFC 5256 step 1), their quoting
undone (midb.mime.normalize_msg_id: "a"@b is a@b, as RFC 5256 requires). The sort part
(sort_texts): the first From/To/Cc mailboxes and the display names (RFC 5957). Texts compared as
strings are in their i;unicode-casemap form (RFC 5051, which RFC 5256 section 7 requires: each
character titlecased, then decomposed), so that comparing them compares the collation's UTF-8
octets. A THREAD decodes the first part alone, a SORT (DATE) nothing (the date stands in the
fixed head too).

ENTRY_VERSION 1 held the texts in their i;ascii-casemap form and the ids as written: such an
entry reads as missing (derived again from the summary), and the upgrade to schema 10 rewrites
them all (midb.env).

A folder's first THREAD or SORT reads every entry: ``folder_values`` takes the folder's range
and ``read_all`` decodes it with no Python code run per entry for the thread part and the date.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import marshal
import struct
import unicodedata
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any, TypeVar

from midb import bodyrecords
from midb.keys import message_key
from midb.messages import BLOB_SLICE, split_pairs, unpack_record
from midb.mime import DigestFormatError, normalize_msg_id, normalize_msg_ids
from midb.summary import SortRecord, sort_record

__all__ = [
    "ENTRY_VERSION",
    "SORT_TEXT_FIELDS",
    "THREAD_FIELDS",
    "EntryError",
    "casemap",
    "entry_date",
    "entry_of_record",
    "entry_of_summary",
    "folder_values",
    "orphans",
    "put_missing",
    "put_parsed",
    "read_all",
    "rebuild",
    "sort_texts",
    "thread_values",
]

ENTRY_VERSION = 2
_HEAD = struct.Struct(">BqI")
_head = _HEAD.unpack_from
_THREAD_START = _HEAD.size
THREAD_FIELDS = ("date", "subject", "reply", "message_id", "references")
SORT_TEXT_FIELDS = ("from", "to", "cc", "display_from", "display_to")
_THREAD_COUNT = len(THREAD_FIELDS)
_TEXT_COUNT = len(SORT_TEXT_FIELDS)
_loads = marshal.loads
_VERSION_BYTE = bytes((ENTRY_VERSION,))
T = TypeVar("T")


class EntryError(ValueError):
    """A sort entry this code cannot read (damaged, or of a later version)."""


def casemap(text: str) -> str:
    """The titlecased canonicalized form of ``text`` by i;unicode-casemap (RFC 5051): each
    character replaced by its (simple) titlecase mapping, then by its full decomposition (the
    compatibility ones included: NFKD). ASCII text is upper-cased, which is the same."""
    if text.isascii():
        return text.upper()
    # Each character titlecased by C code: str.title() titlecases a character that follows an
    # uncased one (NUL). A character whose full titlecase is several (ß, ﬁ: SpecialCasing.txt)
    # has no simple one in UnicodeData.txt, which RFC 5051 takes: it stays as it is.
    spaced = "\x00".join(text).title()
    if len(spaced) == 2 * len(text) - 1:
        titled = spaced[::2]
    else:
        titled = "".join(char if len(title := char.title()) != 1 else title for char in text)
    return unicodedata.normalize("NFKD", titled)


def entry_of_record(record: SortRecord, internaldate: int) -> bytes:
    """The entry of a message from its body's sort record (midb.summary) and its internal date."""
    date = record.date if record.date is not None else internaldate
    references = record.references
    if not references and record.in_reply_to:
        # one msg-id, kept whole: a quoted id-left may hold blanks (<"a b"@x>)
        references = (record.in_reply_to,)
    message_id = normalize_msg_id(record.message_id) if record.message_id else None
    thread = marshal.dumps((date, casemap(record.base_subject), record.reply, message_id,
                            normalize_msg_ids(references)))
    texts = marshal.dumps((casemap(record.sort_from), casemap(record.sort_to), casemap(record.sort_cc),
                           casemap(record.display_from), casemap(record.display_to)))
    return _HEAD.pack(ENTRY_VERSION, date, len(thread)) + thread + texts


def entry_of_summary(summary: bytes, internaldate: int) -> bytes:
    """The entry of a message from its body's encoded summary (any format) and its internal
    date; DigestFormatError for a damaged summary."""
    return entry_of_record(sort_record(summary), internaldate)


def thread_values(entry: bytes) -> tuple[Any, ...]:
    """The thread part of an entry: a plain tuple of THREAD_FIELDS (a NamedTuple built per
    message would cost as much as the decoding); EntryError for an entry this code cannot read."""
    if entry[:1] != _VERSION_BYTE:
        raise EntryError("damaged sort entry, or of an unknown version")
    return _part(entry[_THREAD_START:], _THREAD_COUNT)   # marshal reads one object: the sort part stays


def sort_texts(entry: bytes) -> tuple[str, ...]:
    """The sort part of an entry: a plain tuple of SORT_TEXT_FIELDS; EntryError for an entry
    this code cannot read."""
    if entry[:1] != _VERSION_BYTE or len(entry) < _THREAD_START:
        raise EntryError("damaged sort entry, or of an unknown version")
    return _part(entry[_THREAD_START + _head(entry)[2]:], _TEXT_COUNT)


def _part(data: bytes, count: int) -> tuple[Any, ...]:
    """One marshalled part of an entry: a tuple of ``count`` values, else EntryError."""
    try:
        values = _loads(data)
    except (EOFError, ValueError, TypeError) as exc:
        raise EntryError(f"damaged sort entry: {exc}") from exc
    if type(values) is not tuple or len(values) != count:
        raise EntryError("damaged sort entry")
    return values


def entry_date(entry: bytes) -> int:
    """The date of an entry, from its fixed head alone; EntryError for one this code cannot read."""
    if entry[:1] != _VERSION_BYTE or len(entry) < _THREAD_START:
        raise EntryError("damaged sort entry, or of an unknown version")
    return _head(entry)[1]  # type: ignore[no-any-return]


# -- a folder's entries at once -------------------------------------------------------------------

_KEY_OF_ROW = itemgetter(0)
_VERSION_OF = itemgetter(slice(0, 1))
_THREAD_PART = itemgetter(slice(_THREAD_START, None))
_DATE_OF_HEAD = itemgetter(1)
_ROWS_PER_CHUNK = 512   # rows of a folder's range decoded together (folder_values)


def folder_values(txn: Any, db: Any, start: bytes, end: bytes | None, uids: Iterable[int],
                  read: Callable[[bytes], T], most: int | None = None) -> dict[int, T]:
    """UID -> ``read(entry)`` of the messages ``uids`` of one folder whose entries' keys lie in
    [``start``, ``end``) (the folder's prefix and its prefix_end, or the message keys of a
    stretch of its UIDs); an unreadable entry is left out. ``most``: no more entries than this
    lie in the range (a stretch's count of UIDs), so that none is read beyond it (a SORT reading
    a folder 4,096 UIDs at a time read a chunk past each stretch: an eighth more).

    The range is taken in chunks by C code (itertools.islice over the cursor), each decoded by
    read_all when all of its messages are wanted (the usual case: a folder's first SORT or
    THREAD), else one by one. Chunks keep what is being decoded in the CPU caches, and they
    put the result dict in the collector's youngest generation after only one chunk's values:
    a collection walking 100,000 fresh values then finds each one reachable as it comes to it
    (built after all of them, the dict made that collection move every value twice: 60 ms
    rather than 30)."""
    found: dict[int, T] = {}
    cursor = txn.cursor(db)
    if not cursor.set_range(start):
        return found
    rows = cursor.iternext()
    wanted = set(uids)
    left = most
    while True:
        if left is None:
            chunk = list(itertools.islice(rows, _ROWS_PER_CHUNK))
        else:
            chunk = list(itertools.islice(rows, min(_ROWS_PER_CHUNK, left)))
            left -= len(chunk)
        if not chunk:
            return found
        last = end is not None and chunk[-1][0] >= end
        if last:
            del chunk[bisect.bisect_left(chunk, end, key=_KEY_OF_ROW):]
        _read_chunk(*split_pairs(chunk), wanted, read, found)
        if last:
            return found


def _read_chunk(uids: list[int], entries: list[bytes], wanted: set[int], read: Callable[[bytes], T],
                found: dict[int, T]) -> None:
    """folder_values of one chunk (its UIDs and entries), into ``found``."""
    if wanted.issuperset(uids):
        try:
            found.update(zip(uids, read_all(read, entries), strict=True))
            return
        except EntryError:
            pass  # read one by one, to keep the readable ones
    for uid, entry in zip(uids, entries, strict=True):
        if uid in wanted:
            try:
                found[uid] = read(entry)
            except EntryError:
                pass


def _all_thread_values(entries: list[bytes]) -> list[tuple[Any, ...]]:
    values = list(map(_loads, map(_THREAD_PART, entries)))
    if set(map(type, values)) != {tuple} or set(map(len, values)) != {_THREAD_COUNT}:
        raise EntryError("damaged sort entry")
    return values


def _all_dates(entries: list[bytes]) -> list[int]:
    return list(map(_DATE_OF_HEAD, map(_head, entries)))


# The readers read_all runs without a Python call per entry, and their bulk forms.
_BULK_READERS: dict[Callable[[bytes], Any], Callable[[list[bytes]], list[Any]]] = {
    thread_values: _all_thread_values,
    entry_date: _all_dates,
}


def read_all(read: Callable[[bytes], T], entries: list[bytes]) -> list[T]:
    """``[read(entry) for entry in entries]``; for thread_values and entry_date, in C code alone
    (map over marshal.loads and struct unpacking, checked in bulk). EntryError if any entry is
    unreadable: the caller then reads them one by one to keep the others."""
    bulk = _BULK_READERS.get(read)
    if bulk is None:
        return list(map(read, entries))
    if not entries:
        return []
    if set(map(_VERSION_OF, entries)) != {_VERSION_BYTE}:
        raise EntryError("damaged sort entry, or of an unknown version")
    try:
        return bulk(entries)  # type: ignore[return-value]
    except (EOFError, ValueError, TypeError, struct.error) as exc:
        raise EntryError(f"damaged sort entry: {exc}") from exc


# -- maintenance -----------------------------------------------------------------------------------

def rebuild(txn: Any, dbs: Any) -> int:
    """Write the entry of every message whose body has a readable summary (inside a write
    transaction: the schema upgrade of midb.env), dropping what was there; returns how many were
    written. A message without one gets it when first sorted."""
    txn.drop(dbs.sort_records, delete=False)
    written = 0
    summary_of = bodyrecords.get
    for key, raw in txn.cursor(dbs.messages).iternext():
        summary = summary_of(txn, dbs, bodyrecords.SUMMARY, bytes(raw[BLOB_SLICE]))
        if summary is None:
            continue
        try:
            entry = entry_of_summary(summary, unpack_record(raw)[1])
        except DigestFormatError:
            continue
        txn.put(bytes(key), entry, db=dbs.sort_records)
        written += 1
    return written


def orphans(txn: Any, dbs: Any) -> list[bytes]:
    """Keys of entries whose message is not there (an error: they go with their message)."""
    messages = dbs.messages
    return [bytes(key) for key in txn.cursor(dbs.sort_records).iternext(values=False)
            if txn.get(key, db=messages) is None]


def _holding(txn: Any, dbs: Any, key: bytes, blob_raw: bytes) -> bytes | None:
    """The record of the message ``key`` if it is still there and holds the body ``blob_raw``."""
    record = txn.get(key, db=dbs.messages)
    return None if record is None or record[BLOB_SLICE] != blob_raw else record


def put_missing(txn: Any, dbs: Any, account_id: int, folder_id: int,
                entries: Iterable[tuple[int, bytes, bytes]]) -> int:
    """Store entries derived by a reader, (UID, raw body id, entry), where the message is still
    there with that body and its entry is missing or differs; returns how many were written."""
    written = 0
    for uid, blob_raw, entry in entries:
        key = message_key(account_id, folder_id, uid)
        if _holding(txn, dbs, key, blob_raw) is not None and txn.get(key, db=dbs.sort_records) != entry:
            txn.put(key, entry, db=dbs.sort_records)
            written += 1
    return written


def put_parsed(txn: Any, dbs: Any, key: bytes, blob_raw: bytes, summary: bytes) -> None:
    """The entry of the message ``key`` from the summary its body just got (the deferred parse),
    unless the message is gone, holds another body or has an entry."""
    record = _holding(txn, dbs, key, blob_raw)
    if record is None or txn.get(key, db=dbs.sort_records) is not None:
        return
    with contextlib.suppress(DigestFormatError):
        txn.put(key, entry_of_summary(summary, unpack_record(record)[1]), db=dbs.sort_records)
