"""Folder names, folder records and the FolderInfo data class.

Folder record (value of (account, folder) in the `folders` database):

    >IIIQBIIIQIB  parent id (0 = none), uidvalidity, uidnext, highestmodseq, special-use code,
                  messages, unseen, deleted, size, recent_floor, state bits
    ...           full folder name, UTF-8

The counters live in the record and are updated in the same transaction as the messages they count.
"""

from __future__ import annotations

import functools
import operator
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from midb.errors import InvalidArgument, InvalidName

SEPARATOR = "/"
INBOX = "INBOX"
# LMDB keys are limited to 511 bytes; folder-name keys carry a 4-byte account prefix.
MAX_NAME_BYTES = 480
MAX_DEPTH = 64

# RFC 6154 attributes (plus \All, \Flagged), canonical spelling; code 0 = none.
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
_SPECIAL_CODES = {name.lower(): index + 1 for index, name in enumerate(SPECIAL_USES)}

RECORD = struct.Struct(">IIIQBIIIQIB")
_HIGHESTMODSEQ = struct.Struct(">Q")
_HIGHESTMODSEQ_OFFSET = struct.calcsize(">III")   # after parent id, uidvalidity, uidnext (RECORD)
SPECIAL_OFFSET = struct.calcsize(">IIIQ")           # ... and highestmodseq
STATE_HELD_MESSAGES = 1   # the folder has held a message at some point (set_uidvalidity refuses then)


@dataclass(frozen=True, slots=True)
class FolderInfo:
    id: int
    name: str
    parent_id: int | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None
    subscribed: bool
    messages: int
    unseen: int
    deleted: int
    size: int
    recent_floor: int


class FolderRecord:
    """Mutable working copy of a folder record inside a write transaction."""

    __slots__ = ("id", "name", "parent_id", "uidvalidity", "uidnext", "highestmodseq", "special",
                 "messages", "unseen", "deleted", "size", "recent_floor", "state")

    def __init__(self, folder_id: int, name: str, parent_id: int, uidvalidity: int, uidnext: int = 1,
                 highestmodseq: int = 1, special: int = 0, messages: int = 0, unseen: int = 0,
                 deleted: int = 0, size: int = 0, recent_floor: int = 0, state: int = 0) -> None:
        self.id = folder_id
        self.name = name
        self.parent_id = parent_id
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.highestmodseq = highestmodseq
        self.special = special
        self.messages = messages
        self.unseen = unseen
        self.deleted = deleted
        self.size = size
        self.recent_floor = recent_floor
        self.state = state

    @classmethod
    def decode(cls, folder_id: int, raw: bytes) -> FolderRecord:
        return cls(folder_id, record_name(raw), *RECORD.unpack_from(raw))

    def encode(self) -> bytes:
        return RECORD.pack(self.parent_id, self.uidvalidity, self.uidnext, self.highestmodseq, self.special,
                           self.messages, self.unseen, self.deleted, self.size, self.recent_floor,
                           self.state) + self.name.encode("utf-8")

    def next_modseq(self) -> int:
        self.highestmodseq += 1
        return self.highestmodseq

    def info(self, subscribed: bool) -> FolderInfo:
        return FolderInfo(
            id=self.id, name=self.name, parent_id=self.parent_id or None, uidvalidity=self.uidvalidity,
            uidnext=self.uidnext, highestmodseq=self.highestmodseq,
            special_use=SPECIAL_USES[self.special - 1] if self.special else None, subscribed=subscribed,
            messages=self.messages, unseen=self.unseen, deleted=self.deleted, size=self.size,
            recent_floor=self.recent_floor,
        )


def record_highestmodseq(raw: bytes) -> int:
    """HIGHESTMODSEQ straight from an encoded folder record, without decoding the rest."""
    return _HIGHESTMODSEQ.unpack_from(raw, _HIGHESTMODSEQ_OFFSET)[0]


def record_name(raw: bytes) -> str:
    """The folder's name straight from an encoded folder record."""
    return str(raw[RECORD.size:], "utf-8")


# A record's special-use byte -> the attribute (None: none).
SPECIAL_USE_OF_CODE = (None, *SPECIAL_USES)


def folder_entries_of(records: Iterable[tuple[int, bytes]], *, decode: bool = False) -> list[FolderEntry]:
    """FolderEntries of (folder id, encoded record) pairs, in name order; ``decode``: with each
    whole record. The hot loop of a LIST (once per folder): names and special uses are taken
    straight from the records, each entry made by one C call."""
    name_at = RECORD.size
    special_at = SPECIAL_OFFSET
    special_use = SPECIAL_USE_OF_CODE
    make = tuple.__new__   # FolderEntry's own __new__ is a Python function
    entries = [make(FolderEntry, (str(raw[name_at:], "utf-8"), folder_id, special_use[raw[special_at]],
                                  FolderRecord.decode(folder_id, raw) if decode else None))
               for folder_id, raw in records]
    entries.sort(key=_entry_name)
    return entries


_entry_name = operator.itemgetter(0)


class FolderEntry(NamedTuple):
    """A folder as LIST shows it: its name, id and special use, read from the name index and one
    byte of the record (Store.folder_entries). ``record`` is the whole decoded record when the
    caller asked for the counters too (LIST-STATUS); a tuple, as listings build one per folder."""

    name: str
    id: int
    special_use: str | None
    record: FolderRecord | None = None


class NameFacts(NamedTuple):
    """What LIST would say of some names (Store.name_facts): the existing ones with their
    special use, those with a folder below them, and the subscribed ones (when asked)."""

    existing: dict[str, str | None]
    with_children: set[str]
    subscribed: set[str]


class FolderRename(NamedTuple):
    """One special-use folder of Store.localize_folders: renamed from ``old`` to ``new``, or left
    alone (``renamed`` False) for ``reason``."""

    old: str
    new: str
    special_use: str
    renamed: bool
    reason: str


def special_use_code(special_use: str | None) -> int:
    if special_use is None:
        return 0
    if not isinstance(special_use, str):
        raise InvalidArgument(f"invalid special-use attribute {special_use!r}")
    code = _SPECIAL_CODES.get(special_use.lower())
    if code is None:
        raise InvalidArgument(f"unknown special-use attribute {special_use!r}")
    return code


# One C-level search instead of a loop over the characters: every command naming a folder
# normalises its name (as accounts.normalize_account_name does).
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


def normalize_name(name: object) -> str:
    """Validate a folder name and normalise its INBOX component; InvalidName if unacceptable."""
    if not isinstance(name, str):
        raise InvalidName("folder name must be a str")
    return _normalized_name(name)


# Every store call by folder name normalises the name (STATUS, SELECT, APPEND, COPY ...), mostly
# a handful of names per account. Invalid names raise and are not kept.
@functools.lru_cache(maxsize=4096)
def _normalized_name(name: str) -> str:
    if not name:
        raise InvalidName("empty folder name")
    parts = name.split(SEPARATOR)
    if len(parts) > MAX_DEPTH:
        raise InvalidName("folder hierarchy too deep")
    for part in parts:
        if not part:
            raise InvalidName(f"empty component in folder name {name!r}")
        if part in (".", ".."):
            raise InvalidName(f"component {part!r} not allowed in folder name")
    if _CONTROL_CHARACTER.search(name) is not None:
        raise InvalidName("control character in folder name")
    if parts[0].lower() == "inbox":
        parts[0] = INBOX
        name = SEPARATOR.join(parts)
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName("folder name is not valid Unicode") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidName(f"folder name longer than {MAX_NAME_BYTES} bytes")
    return name


# RFC 6855 section 3 (for names a folder is given, not for those looked up: a store may hold a
# name from before this check): no C1 control, no line or paragraph separator.
_UNFIT_FOR_A_NEW_NAME = re.compile("[\x80-\x9f\u2028\u2029]")


def check_new_name(name: str) -> None:
    """A normalised name a folder is about to be given (create, rename): InvalidName if unfit."""
    if _UNFIT_FOR_A_NEW_NAME.search(name) is not None:
        raise InvalidName("control character or line separator in folder name")


def parent_names(name: str) -> list[str]:
    """Ancestors of a normalised name, outermost first: "a/b/c" -> ["a", "a/b"]."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:depth]) for depth in range(1, len(parts))]


def parent_name(name: str) -> str | None:
    head, sep, _ = name.rpartition(SEPARATOR)
    return head if sep else None
