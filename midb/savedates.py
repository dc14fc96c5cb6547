"""Save dates (schema 9): when each message was saved into the folder it is in (RFC 8514).

The internal date says when a message was received, or whatever an APPEND set; the save date says
when it came into its current folder: by delivery, APPEND, COPY or MOVE, each copy getting its
own (RFC 8514 section 3). It is what expiring a Trash or Junk folder must go by: a message
received two years ago and deleted today must stay for the folder's whole period, not go at once.

``save_dates`` holds one entry per message, under the message's own key (account, folder, UID):
a signed 64-bit Unix time, written with the message (midb.store's _append_job and _transfer),
carried by the INBOX rename (RFC 3501: the messages move, their save dates stay) and removed
with it (EXPUNGE, MOVE, folder and account deletion), in the same transaction.

A message saved before its store had the table (an upgrade from schema 8 or older) has no entry:
its save date is unknown. FETCH SAVEDATE gives NIL for it, SAVEDBEFORE/SAVEDON/SAVEDSINCE
compare its internal date instead (the RFC's rule for storage without save dates), and expiry
takes it as saved when the store got the table (``since``, in the meta table): it goes one full
period after the upgrade at the earliest, never earlier than it would have had its date been
known.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from typing import Any

from midb.keys import UID_IN_MESSAGE_KEY, message_key, prefix_end

__all__ = ["SINCE_KEY", "orphans", "pack", "read", "record_since", "since", "now", "unpack"]

_ENTRY = struct.Struct(">q")
pack = _ENTRY.pack


def now() -> int:
    """The save date of a message saved now (a function of its own: tests set the clock)."""
    return int(time.time())


def unpack(raw: bytes) -> int:
    return int(_ENTRY.unpack(raw)[0])

# In the meta table: when this store began keeping save dates (>q Unix time), written when the
# store is created or upgraded to schema 9.
SINCE_KEY = b"save_dates_since"


def record_since(txn: Any, dbs: Any, when: int) -> None:
    """Note that save dates are kept from ``when`` on; an earlier note stays."""
    txn.put(SINCE_KEY, pack(when), db=dbs.meta, overwrite=False)


def since(txn: Any, dbs: Any) -> int | None:
    """When this store began keeping save dates; None for a read-only store older than schema 9."""
    raw = txn.get(SINCE_KEY, db=dbs.meta)
    return None if raw is None else _ENTRY.unpack(raw)[0]


def read(txn: Any, dbs: Any, account_id: int, folder_id: int, uids: Iterable[int]) -> dict[int, int]:
    """The save dates known of a folder's messages ``uids`` (ascending or not): a lookup each
    for a few, one cursor pass over the range from the lowest to the highest for many."""
    db = dbs.save_dates
    wanted = sorted(set(uids))
    if db is None or not wanted:
        return {}
    found: dict[int, int] = {}
    unpack = _ENTRY.unpack
    if len(wanted) <= 16:
        get = txn.get
        for uid in wanted:
            raw = get(message_key(account_id, folder_id, uid), db=db)
            if raw is not None:
                found[uid] = unpack(raw)[0]
        return found
    keep = set(wanted)
    end = prefix_end(message_key(account_id, folder_id, wanted[-1]))
    cursor = txn.cursor(db)
    if not cursor.set_range(message_key(account_id, folder_id, wanted[0])):
        return found
    uid_of = UID_IN_MESSAGE_KEY.unpack_from
    for key, raw in cursor.iternext():
        if end is not None and key >= end:
            break
        uid = uid_of(key)[0]
        if uid in keep:
            found[uid] = unpack(raw)[0]
    return found


def orphans(txn: Any, dbs: Any) -> list[bytes]:
    """Keys of entries whose message is not there (an error: they go with their message)."""
    messages = dbs.messages
    return [bytes(key) for key in txn.cursor(dbs.save_dates).iternext(values=False)
            if txn.get(key, db=messages) is None]
