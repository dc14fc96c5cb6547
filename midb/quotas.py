"""The account quotas that are counted when asked: mailboxes and annotation octets (RFC 9208
resources MAILBOX and ANNOTATION-STORAGE).

STORAGE and MESSAGE usage is kept in transactional counters (the ``usage`` database), because
every APPEND and delivery changes it. Mailboxes and annotations change rarely, and what they
use is bounded by the limit being enforced, so they are counted in the writing transaction
instead: a cursor pass over the account's folder records, or over its annotations. No counter can
drift from what it counts, no schema change or migration was needed for accounts created before
these quotas existed, and the pass costs at most what the limit allows: with the server's
defaults, 10,000 folder keys (1-2 ms, on CREATE and RENAME only) or about 14,000 annotations
(about 5 ms per SETMETADATA, in the shard's write transaction; a STORE on a large folder holds it
longer). Transactional counters, kept by every folder and annotation write, would make both
constant; that is left for when the limits are raised far beyond the defaults.

Limits: each account may have its own (midb's Account.quota_mailboxes / quota_annotation_bytes,
0 = none of its own), else the server's default applies (gximap's imap_default_mailbox_quota /
imap_default_annotation_quota; 0 = unlimited). The store enforces them only when its caller
passes that default: the IMAP commands do, the operator's tools and the delivery of mail to a
Junk folder it creates do not.

A change that would leave more than the limit, and more than there was before, is refused with
OverQuota, so an account above a limit that was lowered can still delete, rename and shrink.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from midb.errors import OverQuota
from midb.keys import FOLDER, account_key

MAILBOX = "MAILBOX"
ANNOTATION_STORAGE = "ANNOTATION-STORAGE"


class QuotaUsage(NamedTuple):
    """What an account uses, in the store's units (octets and counts)."""

    bytes: int
    messages: int
    mailboxes: int
    annotation_bytes: int


def effective_limit(own: int, default: int) -> int:
    """The limit in force: the account's own, else the server's default (0: unlimited)."""
    return own or default


def count_prefix(txn: Any, db: Any, prefix: bytes, start: bytes | None = None) -> int:
    """How many keys of ``db`` start with ``prefix`` (one cursor pass, no list built); with
    ``start`` (a key of that prefix), only those from ``start`` on."""
    cursor = txn.cursor(db)
    count = 0
    if not cursor.set_range(prefix if start is None else start):
        return 0
    size = len(prefix)
    for key in cursor.iternext(values=False):
        if key[:size] != prefix:
            break
        count += 1
    return count


def count_folders(txn: Any, dbs: Any, account_id: int) -> int:
    return count_prefix(txn, dbs.folders, account_key(account_id))


# What an annotation costs the index beyond its name and value (LMDB node header, the key's
# account and folder ids, page slack), charged to ANNOTATION-STORAGE so that the limit bounds the
# index space, and the number of entries a count has to visit: 1 MiB of empty values is at most
# about 14,000 of them (a count of that many takes about 5 ms).
ANNOTATION_ENTRY_OVERHEAD = 64


def annotation_cost(name: str, value: bytes) -> int:
    return ANNOTATION_ENTRY_OVERHEAD + len(name) + len(value)


def annotation_octets(txn: Any, dbs: Any, account_id: int) -> int:
    """The octets of the account's annotations, mailbox and server ones: each entry's name and
    value plus ANNOTATION_ENTRY_OVERHEAD."""
    prefix = account_key(account_id)
    cursor = txn.cursor(dbs.metadata)
    if not cursor.set_range(prefix):
        return 0
    total = 0
    for key, value in cursor.iternext():
        if key[:4] != prefix:
            break
        total += ANNOTATION_ENTRY_OVERHEAD + len(key) - FOLDER.size + len(value)
    return total


def check_growth(resource: str, before: int, after: int, limit: int) -> None:
    """OverQuota(resource) when ``after`` passes ``limit`` (0: unlimited) and grew."""
    if limit and after > limit and after > before:
        raise OverQuota(resource, f"quota exceeded ({resource}: {after} > {limit})")
