"""The account quotas that are counted when asked: mailboxes and annotation octets (RFC 9208
resources MAILBOX and ANNOTATION-STORAGE).

STORAGE and MESSAGE usage is kept in transactional counters (the ``usage`` database), because
every APPEND and delivery changes it. Mailboxes and annotations change rarely, and what they
use is bounded by the limit being enforced, so annotations are counted in the writing transaction
instead: a cursor pass over the account's annotations, which costs at most what the limit allows
(about 14,000 with the server's default: about 5 ms per SETMETADATA, in the shard's write
transaction; a STORE on a large folder holds it longer). Mailboxes and subscriptions are counted
once, by the first write that checks the limit, and the count is kept in the ``counters``
database from then on (folder_count, subscription_count; every write that adds or removes a
folder record or a subscription adjusts a kept count, adjust_count): a pass over 10,000 folder
keys took 1-2 ms, on every CREATE, RENAME and SUBSCRIBE, so that n of them cost O(n^2). An
account whose count was never kept has none (it is counted when first needed), so accounts from
before the counts need no migration, and midb verify --repair drops a count that differs from
what it counts (midb.maintenance).

Limits: each account may have its own (midb's Account.quota_mailboxes / quota_annotation_bytes,
0 = none of its own), else the server's default applies (gximap's imap_default_mailbox_quota /
imap_default_annotation_quota; 0 = unlimited). The store enforces them only when its caller
passes that default: the IMAP commands do, the operator's tools and the delivery of mail to a
Junk folder it creates do not.

A change that would leave more than the limit, and more than there was before, is refused with
OverQuota, so an account above a limit that was lowered can still delete, rename and shrink.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
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


def count_subscriptions(txn: Any, dbs: Any, account_id: int) -> int:
    return count_prefix(txn, dbs.subscriptions, account_key(account_id))


# + account key, in the counters database: the kept counts (a u64 each).
FOLDER_COUNT = b"folder-count:"
SUBSCRIPTION_COUNT = b"subscription-count:"
_COUNT = struct.Struct(">Q")


def folder_count(txn: Any, dbs: Any, account_id: int, *, keep: bool = False) -> int:
    """The account's folders, from the kept count; counted when there is none (and kept from then
    on when ``keep``: in a write transaction)."""
    return _kept_count(txn, dbs, FOLDER_COUNT + account_key(account_id), keep,
                       lambda: count_folders(txn, dbs, account_id))


def subscription_count(txn: Any, dbs: Any, account_id: int, *, keep: bool = False) -> int:
    """The account's subscriptions, as folder_count."""
    return _kept_count(txn, dbs, SUBSCRIPTION_COUNT + account_key(account_id), keep,
                       lambda: count_subscriptions(txn, dbs, account_id))


def _kept_count(txn: Any, dbs: Any, key: bytes, keep: bool, count: Callable[[], int]) -> int:
    raw = txn.get(key, db=dbs.counters)
    if raw is not None:
        return int(_COUNT.unpack(raw)[0])
    value = count()
    if keep:
        txn.put(key, _COUNT.pack(value), db=dbs.counters)
    return value


def adjust_count(txn: Any, dbs: Any, kind: bytes, account_id: int, delta: int) -> None:
    """A write added (or removed: negative) ``delta`` folders (``kind`` FOLDER_COUNT) or
    subscriptions (SUBSCRIPTION_COUNT) of the account: its kept count follows, if it has one."""
    key = kind + account_key(account_id)
    raw = txn.get(key, db=dbs.counters)
    if raw is not None:
        txn.put(key, _COUNT.pack(max(0, int(_COUNT.unpack(raw)[0]) + delta)), db=dbs.counters)


def drop_counts(txn: Any, dbs: Any, account_id: int) -> None:
    """Forget the account's kept counts (it is deleted, or they are to be counted again)."""
    for kind in (FOLDER_COUNT, SUBSCRIPTION_COUNT):
        txn.delete(kind + account_key(account_id), db=dbs.counters)


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
