"""What the index keeps per message body, side by side in one table (schema 4 onwards).

A body (a blob: 16 random bytes of id) has up to four records: its reference count and size
(REFS, always), its MIME digest (DIGEST) and search summary (SUMMARY) when it parsed, and the
body itself when it is small enough to be kept in the index (BODY, see Store inline_limit). Each
is stored under the body's id followed by one byte naming the kind, in the one table
``body_records``.

Why one table and not four: an APPEND writes all four records of its new body and an EXPUNGE
deletes them, in the same transaction. In four tables (schemas 1-3) that rewrote the path from
the root to a leaf in four B-trees, plus each tree's entry in LMDB's catalogue; side by side the
four records share one leaf and one path. On this project's disks a commit's flush costs about as
much per separately placed page as per fsync (bench/HISTORY.md, eighth pass), and LMDB's single
writer holds its lock for that flush: fewer trees per write is more writes per second.

A store opened read-only at an older schema cannot be upgraded; its four tables are read as they
are (``Databases.legacy_bodies``). A store opened for writing is upgraded first (migrate()).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, overload

import lmdb

from midb.keys import BLOB_ID_BYTES

REFS = 0      # (refcount, size): midb.messages.pack_blob_record
DIGEST = 1    # midb.mime.encode_digest(...)
SUMMARY = 2   # midb.summary record
BODY = 3      # the body itself (bodies of at most Store.inline_limit bytes)

KINDS = (REFS, DIGEST, SUMMARY, BODY)
# The tables of schemas 1-3, by kind (a schema-1 store lacks summaries and bodies).
LEGACY_NAMES = ("blobs", "digests", "summaries", "bodies")

_SUFFIX = tuple(bytes([kind]) for kind in KINDS)


def record_key(blob_raw: bytes, kind: int) -> bytes:
    return blob_raw + _SUFFIX[kind]


def split_key(key: bytes) -> tuple[bytes, int] | None:
    """(body id, kind) of a key of the table; None for a key that is no body record."""
    if len(key) != BLOB_ID_BYTES + 1 or key[BLOB_ID_BYTES] >= len(KINDS):
        return None
    return bytes(key[:BLOB_ID_BYTES]), key[BLOB_ID_BYTES]


def get(txn: Any, dbs: Any, kind: int, blob_raw: bytes) -> bytes | None:
    legacy = dbs.legacy_bodies
    if legacy is None:
        return txn.get(record_key(blob_raw, kind), db=dbs.body_records)
    db = legacy[kind]
    return None if db is None else txn.get(blob_raw, db=db)


def get_many(txn: Any, dbs: Any, kind: int, blob_raws: Iterable[bytes]) -> list[bytes | None]:
    """The records of one kind of several bodies, in order (None where there is none)."""
    legacy = dbs.legacy_bodies
    get_record = txn.get
    if legacy is None:
        db, suffix = dbs.body_records, _SUFFIX[kind]   # record_key, inlined: SEARCH reads 100,000s
        return [get_record(blob_raw + suffix, db=db) for blob_raw in blob_raws]
    db = legacy[kind]
    if db is None:
        return [None for _ in blob_raws]
    return [get_record(blob_raw, db=db) for blob_raw in blob_raws]


def put(txn: Any, dbs: Any, kind: int, blob_raw: bytes, value: bytes) -> None:
    txn.put(record_key(blob_raw, kind), value, db=dbs.body_records)


def delete(txn: Any, dbs: Any, kind: int, blob_raw: bytes) -> bool:
    return bool(txn.delete(record_key(blob_raw, kind), db=dbs.body_records))


def delete_all(txn: Any, dbs: Any, blob_raw: bytes) -> bool:
    """Remove every record of a body; True when the body itself was kept in the index (so there
    is no file to remove)."""
    db = dbs.body_records
    for kind in (REFS, DIGEST, SUMMARY):
        txn.delete(record_key(blob_raw, kind), db=db)
    return bool(txn.delete(record_key(blob_raw, BODY), db=db))


# The overloads tell the records (values=True) from the Nones (values=False).
@overload
def items(txn: Any, dbs: Any, kind: int, *,
          values: Literal[True] = True) -> Iterator[tuple[bytes, bytes]]: ...
@overload
def items(txn: Any, dbs: Any, kind: int, *, values: Literal[False]) -> Iterator[tuple[bytes, None]]: ...
@overload
def items(txn: Any, dbs: Any, kind: int, *, values: bool = True) -> Iterator[tuple[bytes, bytes | None]]: ...
def items(txn: Any, dbs: Any, kind: int, *, values: bool = True) -> Iterator[tuple[bytes, bytes | None]]:
    """(body id, record) for every record of one kind, in body-id order; the record is None when
    ``values`` is false (no copy of bodies that are not wanted)."""
    legacy = dbs.legacy_bodies
    if legacy is not None:
        db = legacy[kind]
        if db is None:
            return
        cursor = txn.cursor(db)
        if values:
            for key, value in cursor.iternext():
                yield bytes(key), value
        else:
            for key in cursor.iternext(values=False):
                yield bytes(key), None
        return
    cursor = txn.cursor(dbs.body_records)
    # split_key inlined: at 100,000 bodies this loop meets 300,000 keys (verify, the orphan sweep).
    size = BLOB_ID_BYTES + 1
    for key in cursor.iternext(values=False):
        if len(key) == size and key[BLOB_ID_BYTES] == kind:
            yield bytes(key[:BLOB_ID_BYTES]), (cursor.value() if values else None)


def strays(txn: Any, dbs: Any) -> list[bytes]:
    """Keys of the table that are no body record (a wrong length or an unknown kind)."""
    if dbs.legacy_bodies is not None:
        return []
    return [bytes(key) for key in txn.cursor(dbs.body_records).iternext(values=False) if split_key(key) is None]


def migrate(txn: Any, env: Any, merged: Any) -> int:
    """Move the records of a schema 1-3 store's four tables into ``merged`` and drop those tables
    (in the caller's write transaction). Returns the number of records moved."""
    moved = 0
    for kind, name in zip(KINDS, LEGACY_NAMES, strict=True):
        try:
            old = env.open_db(name.encode(), txn=txn, create=False)
        except lmdb.NotFoundError:
            continue
        suffix = _SUFFIX[kind]
        put_record = txn.put
        for key, value in txn.cursor(old).iternext():
            put_record(bytes(key) + suffix, value, db=merged)
            moved += 1
        txn.drop(old, delete=True)
    return moved
