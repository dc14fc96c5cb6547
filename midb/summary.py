"""Message summaries: the few facts SEARCH, SORT and THREAD read per message, stored apart.

The MIME digest (midb.mime) describes a message's whole MIME tree; decoding it costs about ten
microseconds, a second per 100,000 messages, of which a SEARCH SUBJECT or a SORT needs only a
dozen header values. The summary holds just those, in a flat record a few hundred bytes long,
written next to the digest when the body is stored (``Store.append``) and read in batches
(``Store.summaries``). Bodies stored before summaries existed get theirs derived from the digest
on demand, so nothing has to be migrated.

Field names are the digest's, so code written against a Digest's header values accepts a Summary
as well (gximap.session.sorting reads SORT and THREAD values from summaries). ``leaf`` is the message's own
MIME entity when the message is a single part (neither multipart nor message/*): SEARCH BODY
then finds the body text with it and needs no digest at all.

Format 2 puts a small fixed prefix before the marshalled fields: how SEARCH BODY finds the body's
text (midb.searchtext.leaf_plan) and where it lies. Decoding the fields costs several microseconds
per message (marshal builds some forty objects); a body search over a folder reads the prefix
alone, and ``may_contain`` lets a header-field search skip the decoding of nearly every summary.
Format 1 records (stored before) are still read.

Format 3 splits the fields in two: after the plan come the sent date and whether the message is
a reply or forward (RFC 5256 section 3 step 5), fixed, then the text a SORT or THREAD sorts and
threads by (base subject, first addresses, display names, message ids) marshalled on their own,
then the rest. ``sort_record`` reads that front part alone: what a message's sort index entry
is made from (midb.sortindex, which SORT and THREAD read), and what they read of a message
without one. Format 2 records are still read (their sort record comes from the whole summary);
a gximap older than format 3 finds format 3 records unreadable (and refuses a store of schema 7).
"""

from __future__ import annotations

import marshal
import operator
import struct
from typing import Any, NamedTuple

from midb import bodyrecords, searchtext
from midb.mime import Digest, DigestFormatError, Part, decode_digest, is_reply_or_forward

__all__ = ["FORMAT_VERSION", "SortRecord", "Summary", "body_plan", "decode_summary", "encode_summary", "fill",
           "may_contain", "sort_record", "sort_record_of", "summarize"]

FORMAT_VERSION = 3
_FORMAT_2 = 2
_FORMAT_1 = 1
_READ_FORMATS = (FORMAT_VERSION, _FORMAT_2, _FORMAT_1)
# Formats 2 and 3 start with: searchtext.PLAN_VERSION, the plan, the leaf's body start and end.
_PLAN = struct.Struct(">BBQQ")
_PLAN_END = 1 + _PLAN.size
# Format 3 then has: flags (_HAS_DATE, _REPLY), the sent date, the sort section's length.
_SORT_HEAD = struct.Struct(">BqI")
_sort_head = _SORT_HEAD.unpack_from
_SORT_START = _PLAN_END + _SORT_HEAD.size
_HAS_DATE = 1
_REPLY = 2


class Summary(NamedTuple):
    size: int
    header_size: int  # octets of the top-level header, blank line included (the root's body_start)
    sent_date: bytes | None  # the Date: field as written (the ENVELOPE date)
    date: int | None  # Date: as a UTC unix timestamp; None when absent or unparsable
    subject: str  # decoded Subject, "" when absent
    base_subject: str  # RFC 5256 base subject
    from_: str  # decoded From/To/Cc/Bcc values, "" when absent
    to: str
    cc: str
    bcc: str
    sort_from: str  # addr-mailbox of the first From/To/Cc address (RFC 5256 SORT)
    sort_to: str
    sort_cc: str
    display_from: str  # RFC 5957 display names
    display_to: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    leaf: Part | None  # the root entity of a single-part message (children and message None)


class SortRecord(NamedTuple):
    """What SORT and THREAD read of a message (RFC 5256, RFC 5957): the front of a format 3
    summary. Field names are the summary's; ``reply`` is is_reply_or_forward of the subject."""

    date: int | None
    reply: bool
    base_subject: str
    sort_from: str
    sort_to: str
    sort_cc: str
    display_from: str
    display_to: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]


_new = tuple.__new__
_FIELDS = len(Summary._fields)
_PART_FIELDS = len(Part._fields)
# Format 3's two sections, as positions in a Summary: the sort fields (SortRecord's text fields,
# in its order) and the rest (the leaf last).
_SORT_FIELDS = tuple(Summary._fields.index(name) for name in SortRecord._fields[2:])
_SORT_TEXTS = len(_SORT_FIELDS)
_SORT_TEXTS_OF = operator.itemgetter(*_SORT_FIELDS)
_REST_FIELDS = tuple(index for index in range(_FIELDS) if index not in _SORT_FIELDS)
_REST_BUT_LEAF_OF = operator.itemgetter(*_REST_FIELDS[:-1])
# The Summary's fields but the leaf, picked from (*sort section, *rest section).
_SUMMARY_FIELDS_OF = operator.itemgetter(*((*_SORT_FIELDS, *_REST_FIELDS).index(index) for index in range(_FIELDS - 1)))
# The digest's fields a summary copies: date .. references (not those after, e.g. contains_nul).
_DIGEST_FIELDS_END = Digest._fields.index("references") + 1


def summarize(digest: Digest) -> Summary:
    root = digest.root
    leaf = root if root.children is None and root.message is None else None
    # Typed as Any: mypy can type neither a slice with a computed end nor a variable-length star
    # argument followed by more (hence the one starred tuple, the same bytecode).
    header_values: tuple[Any, ...] = digest[3:_DIGEST_FIELDS_END]
    return Summary(*(digest.size, root.body_start, digest.envelope.date, *header_values, leaf))


def encode_summary(summary: Summary) -> bytes:
    """Format 3: a version byte, the body plan (see body_plan), the sort head, then marshal of two
    plain tuples, the sort fields and the rest (marshal cannot run code, unlike pickle)."""
    leaf = summary.leaf
    if leaf is None:
        plan = _PLAN.pack(searchtext.PLAN_VERSION, searchtext.PLAN_DECODE, 0, 0)
    else:
        plan = _PLAN.pack(searchtext.PLAN_VERSION, searchtext.leaf_plan(leaf), leaf.body_start, leaf.body_end)
    sort_section = marshal.dumps(_SORT_TEXTS_OF(summary))
    rest = (*_REST_BUT_LEAF_OF(summary), None if leaf is None else tuple(leaf))
    flags = (_HAS_DATE if summary.date is not None else 0) | (_REPLY if is_reply_or_forward(summary.subject) else 0)
    head = _SORT_HEAD.pack(flags, summary.date or 0, len(sort_section))
    return bytes((FORMAT_VERSION,)) + plan + head + sort_section + marshal.dumps(rest)


def body_plan(data: bytes) -> tuple[int, int, int] | None:
    """(searchtext plan, body start, body end) from an encoded summary, without decoding it; None
    when the record does not carry a plan of the current searchtext.PLAN_VERSION (then decode the
    summary and ask searchtext about its leaf)."""
    if len(data) < _PLAN_END or data[0] not in (FORMAT_VERSION, _FORMAT_2):
        return None
    version, plan, start, end = _PLAN.unpack_from(data, 1)
    return (plan, start, end) if version == searchtext.PLAN_VERSION else None


def may_contain(data: bytes, needle: bytes) -> bool:
    """False when no text field of the encoded summary ``data`` can contain ``needle`` after case
    folding: ``needle`` is a folded, ASCII search string (searchtext.ascii_needle). marshal stores
    each str as its UTF-8 bytes, so a field whose folded text holds the needle holds it in the
    lowered record, unless the field has one of the few non-ASCII characters whose case folding
    yields ASCII (searchtext.has_ascii_folding). True means "maybe": decode and compare."""
    if not data or data[0] not in _READ_FORMATS:
        return True  # not a summary this code writes: decoding tells (and falls back on the digest)
    return needle in data.lower() or searchtext.has_ascii_folding(data)


def _sort_section(data: bytes) -> tuple[int, int, int]:
    """(flags, date, end of the sort section) of a format 3 record."""
    if len(data) < _SORT_START:
        raise DigestFormatError("truncated summary")
    flags, date, length = _sort_head(data, _PLAN_END)
    end = _SORT_START + length
    if end > len(data):
        raise DigestFormatError("truncated summary")
    return flags, date, end


def sort_record(data: bytes) -> SortRecord:
    """The sort record of an encoded summary of any format: of format 3 from its front alone (its
    sort section), of an older one by decoding it whole; DigestFormatError for a damaged one."""
    if not data or data[0] != FORMAT_VERSION:
        return sort_record_of(decode_summary(data))
    flags, date, end = _sort_section(data)
    try:
        texts = marshal.loads(data[_SORT_START:end])  # a short section: the copy is cheap
        if type(texts) is not tuple or len(texts) != _SORT_TEXTS:
            raise ValueError("wrong number of fields")
    except (EOFError, ValueError, TypeError) as exc:
        raise DigestFormatError(f"corrupt summary: {exc}") from exc
    return _new(SortRecord, (date if flags & _HAS_DATE else None, flags & _REPLY == _REPLY, *texts))


def sort_record_of(summary: Summary) -> SortRecord:
    """The sort record of a decoded summary."""
    return _new(SortRecord, (summary.date, is_reply_or_forward(summary.subject), *_SORT_TEXTS_OF(summary)))


def decode_summary(data: bytes) -> Summary:
    """Inverse of :func:`encode_summary` (of any format); DigestFormatError for anything else."""
    if not data:
        raise DigestFormatError("empty summary")
    version = data[0]
    if version not in _READ_FORMATS:
        raise DigestFormatError("unknown summary format version")
    if version == _FORMAT_2 and len(data) < _PLAN_END:
        raise DigestFormatError("truncated summary")
    try:
        if version == FORMAT_VERSION:
            _flags, _date, end = _sort_section(data)  # the date is in the rest too
            view = memoryview(data)
            texts = marshal.loads(view[_SORT_START:end])
            rest = marshal.loads(view[end:])
            if type(texts) is not tuple or type(rest) is not tuple:
                raise ValueError("not a tuple")
            joined = (*texts, *rest)
            if len(joined) != _FIELDS:
                raise ValueError("wrong number of fields")
            fields = _SUMMARY_FIELDS_OF(joined)
        else:
            joined = marshal.loads(memoryview(data)[_PLAN_END if version == _FORMAT_2 else 1:])
            if type(joined) is not tuple or len(joined) != _FIELDS:
                raise ValueError("wrong number of fields")
            fields = joined[:-1]
        leaf = joined[-1]
        if leaf is not None and (type(leaf) is not tuple or len(leaf) != _PART_FIELDS):
            raise ValueError("wrong number of leaf fields")
        # tuple.__new__ skips the NamedTuple constructors' Python-level argument handling.
        return _new(Summary, (*fields, None if leaf is None else _new(Part, leaf)))
    except (EOFError, ValueError, TypeError, IndexError) as exc:
        raise DigestFormatError(f"corrupt summary: {exc}") from exc


def fill(txn: Any, dbs: Any) -> int:
    """Write the summary of every stored digest that has none (inside a write transaction: the
    schema upgrade of midb.env); returns how many were written. Unreadable digests are skipped
    (their summaries are then derived on demand, as for any body without one)."""
    written = 0
    # Listed first: the summaries are written into the table being walked.
    for blob_raw, raw in list(bodyrecords.items(txn, dbs, bodyrecords.DIGEST)):
        if bodyrecords.get(txn, dbs, bodyrecords.SUMMARY, blob_raw) is not None:
            continue
        try:
            encoded = encode_summary(summarize(decode_digest(raw)))
        except DigestFormatError:
            continue
        bodyrecords.put(txn, dbs, bodyrecords.SUMMARY, blob_raw, encoded)
        written += 1
    return written
