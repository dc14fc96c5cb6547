"""Save dates (schema 9): when each message was saved into the folder it is in (RFC 8514).

The internal date says when a message was received, or whatever an APPEND set; the save date says
when it came into its current folder: by delivery, APPEND, COPY or MOVE, each copy getting its
own (RFC 8514 section 3). It is what expiring a Trash or Junk folder must go by: a message
received two years ago and deleted today must stay for the folder's whole period, not go at once.

It is kept as the value of the message's entry in ``modseqs`` (account, folder, modseq, UID),
a signed 64-bit Unix time where that value was empty before. That entry is written with every
message (midb.store's _append_job and _transfer) and moved by every flag change (store_flags and
the INBOX rename carry the value over) and removed with it: no other table to write. A table of
its own (tried first) cost LMTP 12-15 % of its deliveries per second, fsync on: one more B-tree
whose path from the root every commit writes and syncs (bench/lmtp.py, both side by side).

A message saved before its store kept save dates (an upgrade from schema 8 or older) has an
empty value: its save date is unknown. FETCH SAVEDATE gives NIL for it, SAVEDBEFORE/SAVEDON/
SAVEDSINCE compare its internal date instead (the RFC's rule for storage without save dates),
and expiry takes it as saved when the store began keeping them (``since``, in the meta table):
it goes one full period after the upgrade at the earliest, never earlier than it would have had
its date been known.
"""

from __future__ import annotations

import struct
import time
from typing import Any, overload

from midb.keys import change_key
from midb.messages import MODSEQ_FIELD

__all__ = ["SINCE_KEY", "now", "of_record", "pack", "record_since", "since", "unknown_as"]

_ENTRY = struct.Struct(">q")
pack = _ENTRY.pack
# In the meta table: when this store began keeping save dates (>q Unix time), written when the
# store is created or upgraded to schema 9.
SINCE_KEY = b"save_dates_since"


def now() -> int:
    """The save date of a message saved now (a function of its own: tests set the clock)."""
    return int(time.time())


def record_since(txn: Any, dbs: Any, when: int) -> None:
    """Note that save dates are kept from ``when`` on; an earlier note stays."""
    txn.put(SINCE_KEY, pack(when), db=dbs.meta, overwrite=False)


def since(txn: Any, dbs: Any) -> int | None:
    """When this store began keeping save dates; None for a read-only store older than schema 9."""
    raw = txn.get(SINCE_KEY, db=dbs.meta)
    return None if raw is None else int(_ENTRY.unpack(raw)[0])


def unknown_as(txn: Any, dbs: Any) -> int:
    """When a message without a save date counts as saved, for expiry: when the store began
    keeping them (never earlier than the truth), else now (an older store read as it is)."""
    known_since = since(txn, dbs)
    return now() if known_since is None else known_since


@overload
def of_record(txn: Any, dbs: Any, account_id: int, folder_id: int, uid: int, record: bytes) -> int | None: ...
@overload
def of_record(txn: Any, dbs: Any, account_id: int, folder_id: int, uid: int, record: bytes, unknown: int) -> int: ...
def of_record(txn: Any, dbs: Any, account_id: int, folder_id: int, uid: int, record: bytes,
              unknown: int | None = None) -> int | None:
    """The save date of the message ``uid`` whose record is ``record``; ``unknown`` when it has
    none (saved before the store kept them)."""
    raw = txn.get(change_key(account_id, folder_id, MODSEQ_FIELD.unpack_from(record)[0], uid), db=dbs.modseqs)
    return unknown if raw is None or len(raw) != _ENTRY.size else int(_ENTRY.unpack(raw)[0])
