"""Message summaries: the few facts SEARCH, SORT and THREAD read per message, stored apart.

The MIME digest (midb.mime) describes a message's whole MIME tree; decoding it costs about ten
microseconds, a second per 100,000 messages, of which a SEARCH SUBJECT or a SORT needs only a
dozen header values. The summary holds just those, in a flat record a few hundred bytes long,
written next to the digest when the body is stored (``Store.append``) and read in batches
(``Store.summaries``). Bodies stored before summaries existed get theirs derived from the digest
on demand, so nothing has to be migrated.

Field names are the digest's, so code written against a Digest's header values (e.g.
gximap.session.sorting.message_keys) accepts a Summary as well. ``leaf`` is the message's own
MIME entity when the message is a single part (neither multipart nor message/*): SEARCH BODY
then finds the body text with it and needs no digest at all.
"""

from __future__ import annotations

import marshal
from typing import Any, NamedTuple

from midb.mime import Digest, DigestFormatError, Part, decode_digest

__all__ = ["FORMAT_VERSION", "Summary", "decode_summary", "encode_summary", "fill", "summarize"]

FORMAT_VERSION = 1


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


def summarize(digest: Digest) -> Summary:
    root = digest.root
    leaf = root if root.children is None and root.message is None else None
    return Summary(digest.size, root.body_start, digest.envelope.date, *digest[3:], leaf)


def encode_summary(summary: Summary) -> bytes:
    """A version byte, then marshal of a plain tuple (marshal cannot run code, unlike pickle)."""
    leaf = summary.leaf
    return bytes((FORMAT_VERSION,)) + marshal.dumps((*summary[:-1], None if leaf is None else tuple(leaf)))


def decode_summary(data: bytes) -> Summary:
    """Inverse of :func:`encode_summary`; DigestFormatError for anything else."""
    if not data or data[0] != FORMAT_VERSION:
        raise DigestFormatError("unknown summary format version")
    try:
        raw = marshal.loads(memoryview(data)[1:])
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
    for key, raw in txn.cursor(dbs.digests):
        if txn.get(key, db=dbs.summaries) is not None:
            continue
        try:
            encoded = encode_summary(summarize(decode_digest(raw)))
        except DigestFormatError:
            continue
        txn.put(key, encoded, db=dbs.summaries)
        written += 1
    return written
