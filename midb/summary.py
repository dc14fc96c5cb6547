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
"""

from __future__ import annotations

import marshal
import struct
from typing import Any, NamedTuple

from midb import bodyrecords, searchtext
from midb.mime import Digest, DigestFormatError, Part, decode_digest

__all__ = ["FORMAT_VERSION", "Summary", "body_plan", "decode_summary", "encode_summary", "fill", "may_contain",
           "summarize"]

FORMAT_VERSION = 2
_FORMAT_1 = 1
# Format 2's prefix: searchtext.PLAN_VERSION, the plan, the leaf's body start and end.
_PLAN = struct.Struct(">BBQQ")
_PLAN_END = 1 + _PLAN.size


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


_new = tuple.__new__
_FIELDS = len(Summary._fields)
_PART_FIELDS = len(Part._fields)
# The digest's fields a summary copies: date .. references (not those after, e.g. contains_nul).
_DIGEST_FIELDS_END = Digest._fields.index("references") + 1


def summarize(digest: Digest) -> Summary:
    root = digest.root
    leaf = root if root.children is None and root.message is None else None
    return Summary(digest.size, root.body_start, digest.envelope.date, *digest[3:_DIGEST_FIELDS_END], leaf)


def encode_summary(summary: Summary) -> bytes:
    """A version byte, the body plan (see body_plan), then marshal of a plain tuple (marshal
    cannot run code, unlike pickle)."""
    leaf = summary.leaf
    if leaf is None:
        plan = _PLAN.pack(searchtext.PLAN_VERSION, searchtext.PLAN_DECODE, 0, 0)
    else:
        plan = _PLAN.pack(searchtext.PLAN_VERSION, searchtext.leaf_plan(leaf), leaf.body_start, leaf.body_end)
    fields = marshal.dumps((*summary[:-1], None if leaf is None else tuple(leaf)))
    return bytes((FORMAT_VERSION,)) + plan + fields


def body_plan(data: bytes) -> tuple[int, int, int] | None:
    """(searchtext plan, body start, body end) from an encoded summary, without decoding it; None
    when the record does not carry a plan of the current searchtext.PLAN_VERSION (then decode the
    summary and ask searchtext about its leaf)."""
    if len(data) < _PLAN_END or data[0] != FORMAT_VERSION:
        return None
    version, plan, start, end = _PLAN.unpack_from(data, 1)
    return (plan, start, end) if version == searchtext.PLAN_VERSION else None


def may_contain(data: bytes, needle: bytes) -> bool:
    """False when no text field of the encoded summary ``data`` can contain ``needle`` after case
    folding: ``needle`` is a folded, ASCII search string (searchtext.ascii_needle). marshal stores
    each str as its UTF-8 bytes, so a field whose folded text holds the needle holds it in the
    lowered record, unless the field has one of the few non-ASCII characters whose case folding
    yields ASCII (searchtext.has_ascii_folding). True means "maybe": decode and compare."""
    if not data or data[0] not in (FORMAT_VERSION, _FORMAT_1):
        return True  # not a summary this code writes: decoding tells (and falls back on the digest)
    return needle in data.lower() or searchtext.has_ascii_folding(data)


def decode_summary(data: bytes) -> Summary:
    """Inverse of :func:`encode_summary` (of either format); DigestFormatError for anything else."""
    if not data:
        raise DigestFormatError("empty summary")
    if data[0] == FORMAT_VERSION:
        if len(data) < _PLAN_END:
            raise DigestFormatError("truncated summary")
        start = _PLAN_END
    elif data[0] == _FORMAT_1:
        start = 1
    else:
        raise DigestFormatError("unknown summary format version")
    try:
        raw = marshal.loads(memoryview(data)[start:])
        leaf = raw[-1]
        if len(raw) != _FIELDS or (leaf is not None and len(leaf) != _PART_FIELDS):
            raise ValueError("wrong number of fields")
        # tuple.__new__ skips the NamedTuple constructors' Python-level argument handling.
        return _new(Summary, (*raw[:-1], None if leaf is None else _new(Part, leaf)))
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
