"""Key encodings for the midb LMDB databases.

All integers are big-endian and fixed width so that LMDB's lexicographic key order is numeric order:
a cursor scan over (account, folder, uid) keys visits a folder's messages in UID order, and a scan
over (account, folder, modseq, uid) keys visits its changes in MODSEQ order.

Widths: account id, folder id and UID are 32-bit (IMAP UIDs are nz-number, < 2**32); MODSEQ is
64-bit (RFC 7162 mod-sequence values are 63-bit).
"""

from __future__ import annotations

import struct
from typing import Any

from midb.errors import InvalidArgument

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
ACCOUNT = U32                                  # account id
FOLDER = struct.Struct(">II")                  # (account, folder)
MESSAGE = struct.Struct(">III")                # (account, folder, uid)
CHANGE = struct.Struct(">IIQI")                # (account, folder, modseq, uid): modseq index, tombstones
OWNER = struct.Struct(">II")                   # (mailbox account, actor account)

MAX_U32 = 0xFFFFFFFF
MAX_MODSEQ = (1 << 63) - 1
BLOB_ID_BYTES = 16

# Offsets used to pick single fields out of packed keys without unpacking the rest.
UID_OFFSET = 8
MODSEQ_OFFSET = 8
UID_IN_MESSAGE_KEY = struct.Struct(">8xI")
UID_IN_CHANGE_KEY = struct.Struct(">16xI")
MODSEQ_IN_CHANGE_KEY = struct.Struct(">8xQ")
CHANGE_KEY_MODSEQ_UID = struct.Struct(">8xQI")


def pack_u32(value: int) -> bytes:
    return U32.pack(value)


def unpack_u32(data: bytes) -> int:
    return U32.unpack(data)[0]


def pack_u64(value: int) -> bytes:
    return U64.pack(value)


def unpack_u64(data: bytes) -> int:
    return U64.unpack(data)[0]


def account_key(account_id: int) -> bytes:
    return ACCOUNT.pack(account_id)


def folder_key(account_id: int, folder_id: int) -> bytes:
    """Key of a folder record; also the prefix of all its message, modseq and tombstone keys."""
    return FOLDER.pack(account_id, folder_id)


def unpack_folder_key(key: bytes) -> tuple[int, int]:
    return FOLDER.unpack(key)


def message_key(account_id: int, folder_id: int, uid: int) -> bytes:
    return MESSAGE.pack(account_id, folder_id, uid)


def unpack_message_key(key: bytes) -> tuple[int, int, int]:
    return MESSAGE.unpack(key)


def change_key(account_id: int, folder_id: int, modseq: int, uid: int) -> bytes:
    return CHANGE.pack(account_id, folder_id, modseq, uid)


def unpack_change_key(key: bytes) -> tuple[int, int, int, int]:
    return CHANGE.unpack(key)


def name_key(account_id: int, name: str) -> bytes:
    """(account, UTF-8 name): folder names and subscriptions; byte order = code point order."""
    return ACCOUNT.pack(account_id) + name.encode("utf-8")


def unpack_name_key(key: bytes) -> tuple[int, str]:
    return ACCOUNT.unpack_from(key)[0], bytes(key[4:]).decode("utf-8")


def owner_key(mailbox_id: int, actor_id: int) -> bytes:
    return OWNER.pack(mailbox_id, actor_id)


def unpack_owner_key(key: bytes) -> tuple[int, int]:
    return OWNER.unpack(key)


def prefix_end(prefix: bytes) -> bytes | None:
    """Smallest key greater than every key starting with `prefix` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def blob_key(blob: str) -> bytes:
    """Raw 16-byte key of a body id (32 lowercase hex digits); InvalidArgument otherwise."""
    if not isinstance(blob, str) or len(blob) != 2 * BLOB_ID_BYTES:
        raise InvalidArgument(f"invalid body id {blob!r}")
    try:
        raw = bytes.fromhex(blob)
    except ValueError:
        raise InvalidArgument(f"invalid body id {blob!r}") from None
    if raw.hex() != blob:
        raise InvalidArgument(f"invalid body id {blob!r}")
    return raw


def blob_id(key: bytes) -> str:
    return bytes(key).hex()


def prefix_items(txn: Any, db: Any, prefix: bytes, *, values: bool = True) -> list[Any]:
    """The (key, value) pairs of ``db`` whose key starts with ``prefix``, in key order; with
    ``values`` false the keys alone, each once (in a database with duplicates too)."""
    cursor = txn.cursor(db)
    out: list[Any] = []
    if not cursor.set_range(prefix):
        return out
    size = len(prefix)
    if values:
        for key, value in cursor.iternext():
            if key[:size] != prefix:
                break
            out.append((key, value))
    else:
        for key in cursor.iternext_nodup():
            if key[:size] != prefix:
                break
            out.append(key)
    return out
