"""Message records and flags.

A message record (value of (account, folder, uid) in the `messages` database) is

    >QqhQ16s   modseq, internaldate, tzoffset, size, raw blob id      (42 bytes)
    B          system flags bitmask (SYSTEM_FLAGS order)
    ...        keywords: UTF-8, separated by one space, sorted

The flags part (bitmask + keywords) is the record's tail. Folders hold few distinct flag combinations,
so decoding maps the raw tail to a tuple of str through a dict cache: listing 100,000 messages costs
one struct unpack and one dict lookup per message.
"""

from __future__ import annotations

import operator
import struct
import sys
import threading
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from midb.errors import InvalidFlag

# Canonical spelling, sorted: the bit of each flag is 1 << its index.
SYSTEM_FLAGS = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")
SYSTEM_BITS = {name.lower(): 1 << index for index, name in enumerate(SYSTEM_FLAGS)}
ANSWERED, DELETED, DRAFT, FLAGGED, SEEN = (1 << index for index in range(5))

RECORD = struct.Struct(">QqhQ16sB")
FIXED_SIZE = 42                      # bytes before the flags tail
FLAGS_OFFSET = FIXED_SIZE            # offset of the system flag byte
BLOB_SLICE = slice(26, 42)           # raw blob id inside a record
MODSEQ_FIELD = struct.Struct(">Q")   # modseq is the first field
MAX_KEYWORD_LENGTH = 255
# Keywords one message may carry: mail clients tag with a handful (Thunderbird's and Apple Mail's
# own are a dozen). Store writes that would give a message more, and more than it had, fail with
# TooManyKeywords (see midb.columns for why sets must stay small).
MAX_KEYWORDS_PER_MESSAGE = 128
# IMAP atom-specials (RFC 9051 "atom-specials" minus CTL/SP checked separately) and "\" (flag-extension).
_ATOM_SPECIALS = frozenset('(){%*"\\]')


@dataclass(frozen=True, slots=True)
class MessageMeta:
    uid: int
    flags: tuple[str, ...]   # sorted, system flags first; no \Recent
    internaldate: int        # unix seconds
    tzoffset: int            # minutes east of UTC
    size: int                # exact byte length of the stored body
    modseq: int
    blob: str                # body id


# Building frozen dataclasses through __init__ goes through object.__setattr__ per field; setting the
# slots through their descriptors is about twice as fast, which matters for 100,000-message listings.
_new = object.__new__
_set_uid, _set_flags, _set_internaldate, _set_tzoffset, _set_size, _set_modseq, _set_blob = (
    MessageMeta.__dict__[name].__set__
    for name in ("uid", "flags", "internaldate", "tzoffset", "size", "modseq", "blob")
)


def make_meta(uid: int, flags: tuple[str, ...], internaldate: int, tzoffset: int, size: int,
              modseq: int, blob: str) -> MessageMeta:
    meta = _new(MessageMeta)
    _set_uid(meta, uid)
    _set_flags(meta, flags)
    _set_internaldate(meta, internaldate)
    _set_tzoffset(meta, tzoffset)
    _set_size(meta, size)
    _set_modseq(meta, modseq)
    _set_blob(meta, blob)
    return meta


# ---- flags -------------------------------------------------------------------------------------

class FlagSet:
    """Mutable working form of a message's flags: system bitmask + keywords (case preserved)."""

    __slots__ = ("bits", "keywords")

    def __init__(self, bits: int = 0, keywords: Iterable[str] = ()) -> None:
        self.bits = bits
        # lowercase -> spelling; case-insensitive dedup, first spelling wins
        self.keywords: dict[str, str] = {}
        for keyword in keywords:
            self.keywords.setdefault(keyword.lower(), keyword)

    def encode(self) -> bytes:
        if not self.keywords:
            return bytes((self.bits,))
        ordered = sorted(self.keywords.values(), key=_keyword_order)
        return bytes((self.bits,)) + " ".join(ordered).encode("ascii")

    @classmethod
    def decode(cls, tail: bytes) -> FlagSet:
        keywords = bytes(tail[1:]).decode("ascii").split(" ") if len(tail) > 1 else ()
        return cls(tail[0], keywords)

    def copy(self) -> FlagSet:
        clone = FlagSet(self.bits)
        clone.keywords = dict(self.keywords)
        return clone


def _keyword_order(keyword: str) -> tuple[str, str]:
    return keyword.lower(), keyword


def parse_flags(flags: Iterable[str]) -> FlagSet:
    """Validate and normalise flags given by a client; \\Recent is silently dropped."""
    if isinstance(flags, str):
        raise InvalidFlag("flags must be an iterable of str, not a str")
    result = FlagSet()
    try:
        items = list(flags)
    except TypeError:
        raise InvalidFlag("flags must be an iterable of str") from None
    for flag in items:
        if not isinstance(flag, str) or not flag:
            raise InvalidFlag(f"invalid flag {flag!r}")
        if flag[0] == "\\":
            lowered = flag.lower()
            bit = SYSTEM_BITS.get(lowered)
            if bit is not None:
                result.bits |= bit
            elif lowered != "\\recent":
                raise InvalidFlag(f"unknown system flag {flag!r}")
            continue
        if len(flag) > MAX_KEYWORD_LENGTH or not _is_atom(flag):
            raise InvalidFlag(f"invalid keyword {flag!r}")
        result.keywords.setdefault(flag.lower(), flag)
    return result


def tail_keyword_count(tail: bytes) -> int:
    """How many keywords a record tail (system flag byte + space-separated keywords) holds."""
    return tail.count(b" ", 1) + 1 if len(tail) > 1 else 0


def _is_atom(text: str) -> bool:
    for char in text:
        code = ord(char)
        if code <= 0x20 or code >= 0x7F or char in _ATOM_SPECIALS:
            return False
    return True


_flag_cache: dict[bytes, tuple[str, ...]] = {}
_flag_cache_lock = threading.Lock()
_FLAG_CACHE_LIMIT = 65536


def flags_of(tail: bytes) -> tuple[str, ...]:
    """Flags tuple for a record tail (system bitmask byte + keyword bytes), cached."""
    flags = _flag_cache.get(tail)
    if flags is None:
        flags = _decode_flags(tail)
        with _flag_cache_lock:
            if len(_flag_cache) >= _FLAG_CACHE_LIMIT:
                _flag_cache.clear()
            _flag_cache[bytes(tail)] = flags
    return flags


def _decode_flags(tail: bytes) -> tuple[str, ...]:
    bits = tail[0]
    names = [name for index, name in enumerate(SYSTEM_FLAGS) if bits & (1 << index)]
    if len(tail) > 1:
        names.extend(bytes(tail[1:]).decode("ascii").split(" "))
    return tuple(names)


# ---- records -----------------------------------------------------------------------------------

def pack_record(modseq: int, internaldate: int, tzoffset: int, size: int, blob_raw: bytes,
                flags_tail: bytes) -> bytes:
    return RECORD.pack(modseq, internaldate, tzoffset, size, blob_raw, 0)[:FIXED_SIZE] + flags_tail


_unpack_fixed = struct.Struct(">QqhQ16s").unpack_from


def unpack_record(raw: bytes) -> tuple[int, int, int, int, bytes, bytes]:
    """(modseq, internaldate, tzoffset, size, raw blob id, flags tail)."""
    modseq, internaldate, tzoffset, size, blob_raw = _unpack_fixed(raw)
    return modseq, internaldate, tzoffset, size, blob_raw, raw[FIXED_SIZE:]


def meta_from_record(uid: int, raw: bytes) -> MessageMeta:
    modseq, internaldate, tzoffset, size, blob_raw = _unpack_fixed(raw)
    return make_meta(uid, flags_of(raw[FIXED_SIZE:]), internaldate, tzoffset, size, modseq, blob_raw.hex())


def with_modseq_and_flags(raw: bytes, modseq: int, flags_tail: bytes) -> bytes:
    return MODSEQ_FIELD.pack(modseq) + raw[8:FIXED_SIZE] + flags_tail


def counter_deltas(bits: int) -> tuple[int, int]:
    """(unseen, deleted) contribution of a message with these system flag bits."""
    return (0 if bits & SEEN else 1), (1 if bits & DELETED else 0)


def metas_from_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> list[MessageMeta]:
    """Decode (message key, record) pairs; the hot loop of Store.messages()."""
    uid_of = struct.Struct(">8xI").unpack_from
    unpack = _unpack_fixed
    cache = _flag_cache
    out: list[MessageMeta] = []
    append = out.append
    for key, raw in pairs:
        modseq, internaldate, tzoffset, size, blob_raw = unpack(raw)
        tail = raw[FIXED_SIZE:]
        flags = cache.get(tail)
        if flags is None:
            flags = flags_of(tail)
        meta = _new(MessageMeta)
        _set_uid(meta, uid_of(key)[0])
        _set_flags(meta, flags)
        _set_internaldate(meta, internaldate)
        _set_tzoffset(meta, tzoffset)
        _set_size(meta, size)
        _set_modseq(meta, modseq)
        _set_blob(meta, blob_raw.hex())
        append(meta)
    return out


def flag_rows_from_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> list[tuple[int, tuple[str, ...], int]]:
    """(uid, flags, modseq) of (message key, record) pairs: what FETCH FLAGS / MODSEQ and the
    flag updates of a resync need, without building a MessageMeta per message."""
    uid_of = struct.Struct(">8xI").unpack_from
    modseq_of = MODSEQ_FIELD.unpack_from
    cache = _flag_cache
    out: list[tuple[int, tuple[str, ...], int]] = []
    append = out.append
    for key, raw in pairs:
        tail = raw[FIXED_SIZE:]
        flags = cache.get(tail)
        if flags is None:
            flags = flags_of(tail)
        append((uid_of(key)[0], flags, modseq_of(raw)[0]))
    return out


U32_ARRAY_CODE = next(code for code in "IL" if array(code).itemsize == 4)


def uids_from_keys(keys: list[bytes]) -> list[int]:
    """The UIDs of message keys (account, folder, uid: three big-endian u32 each), in one pass of
    C code rather than one struct call per key."""
    return uid_array_from_keys(keys).tolist()


def uid_array_from_keys(keys: list[bytes]) -> array:
    """Like :func:`uids_from_keys`, as an array of 32-bit UIDs (4 bytes each instead of a list of
    int objects): what a view of a whole folder is built from."""
    return _big_endian_array(b"".join(keys), U32_ARRAY_CODE)[2::3]


def _big_endian_array(data: bytes, code: str) -> array:
    """``data`` (big-endian numbers of the item size of ``code``) as an array, in C."""
    numbers = array(code)
    numbers.frombytes(data)
    if sys.byteorder == "little":
        numbers.byteswap()
    return numbers


class FlagColumns(NamedTuple):
    """The UID, flags and MODSEQ of a run of message records, column by column.

    ``tails`` are the raw flag parts of the records (system bitmask byte + keywords): a folder
    has few distinct ones, so a reader renders each distinct tail once (:func:`flags_of` gives
    the MessageMeta spelling) and reuses the result for every message carrying it."""

    uids: list[int]
    tails: list[bytes] | list[int]
    modseqs: list[int] | None  # None unless asked for
    # Set when ``tails`` are the flag words of the flag column (midb.columns), which it maps to
    # tails: a reader keys its renderings by word and resolves each distinct one once.
    tail_of: Mapping[int, bytes] | None = None

    def tail_list(self) -> list[bytes]:
        """``tails`` as record tails, whatever form they came in."""
        tail_of = self.tail_of
        return list(map(tail_of.__getitem__, self.tails)) if tail_of is not None else self.tails  # type: ignore[arg-type,return-value]


_record_tail = operator.itemgetter(slice(FIXED_SIZE, None))
_record_modseq = operator.itemgetter(slice(0, 8))
_pair_key = operator.itemgetter(0)
_pair_record = operator.itemgetter(1)
_U64_ARRAY_CODE = next(code for code in "QL" if array(code).itemsize == 8)


def flag_columns_of_records(uids: list[int], records: list[bytes], *, with_modseq: bool) -> FlagColumns:
    """Columns from the records of ``uids``, with C-level passes (map, join, array): no Python
    bytecode per message (FETCH 1:* (UID FLAGS) on a big folder reads this)."""
    tails = list(map(_record_tail, records))
    modseqs = None
    if with_modseq:
        modseqs = _field_column(records, _record_modseq, _U64_ARRAY_CODE)
    return FlagColumns(uids, tails, modseqs)


def flag_columns_from_pairs(pairs: list[tuple[bytes, bytes]], *, with_modseq: bool) -> FlagColumns:
    """Columns of (message key, record) pairs."""
    uids, records = split_pairs(pairs)
    return flag_columns_of_records(uids, records, with_modseq=with_modseq)


def split_pairs(pairs: list[tuple[bytes, bytes]]) -> tuple[list[int], list[bytes]]:
    """(UIDs, records) of (message key, record) pairs."""
    return uid_array_from_keys(list(map(_pair_key, pairs))).tolist(), list(map(_pair_record, pairs))


# The fixed fields of records as columns: each field's bytes joined and read as one big-endian
# array, C-level passes with no Python step per message (a folder listing reads them).
_record_internaldate = operator.itemgetter(slice(8, 16))
_record_tzoffset = operator.itemgetter(slice(16, 18))
_record_size = operator.itemgetter(slice(18, 26))
_record_blob = operator.itemgetter(BLOB_SLICE)
_I64_ARRAY_CODE = next(code for code in "ql" if array(code).itemsize == 8)


def _field_column(records: list[bytes], field: operator.itemgetter, code: str) -> list[int]:
    return _big_endian_array(b"".join(map(field, records)), code).tolist()


def record_sizes(records: list[bytes]) -> list[int]:
    """MessageMeta.size of each record."""
    return _field_column(records, _record_size, _U64_ARRAY_CODE)


def record_internaldates(records: list[bytes]) -> tuple[list[int], list[int]]:
    """(MessageMeta.internaldate, MessageMeta.tzoffset) of each record, as two columns."""
    return _field_column(records, _record_internaldate, _I64_ARRAY_CODE), _field_column(records, _record_tzoffset, "h")


def record_blobs(records: list[bytes]) -> list[str]:
    """MessageMeta.blob (the body id) of each record."""
    return list(map(bytes.hex, map(_record_blob, records)))
