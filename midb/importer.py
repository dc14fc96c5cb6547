"""Import mail from mbox files and Maildirs (plain, or Dovecot's) into a midb account.

What clients already synced is kept where the source says it: UIDVALIDITY and UIDs from
``dovecot-uidlist`` (or ``courierimapuiddb``) and from mbox ``X-IMAPbase``/``X-UID`` headers,
flags, keywords (``dovecot-keywords``, ``X-Keywords``) and internal dates (Maildir file mtime,
mbox ``From_`` line). A client holding a cache for that UIDVALIDITY then sees the same mailbox and
downloads nothing again.

Re-running an import is safe: with UIDs kept, a message whose UID holds the same message here (or
is below the folder's UIDNEXT) is skipped, and one whose UID another message took meanwhile (a
delivery into a folder whose import was interrupted) is stored under a new UID; without UIDs, a
message whose exact bytes are already in the folder is skipped.

Bodies are stored with CRLF line endings by default (``normalize_crlf``): Maildir and mbox files
usually hold bare LF, but IMAP serves messages with CRLF, and the size clients saw (Dovecot's
``W=`` virtual size) is the CRLF one. Messages that already use CRLF are stored byte for byte.
"""

from __future__ import annotations

import calendar
import email.utils
import hashlib
import json
import logging
import mmap
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from midb.errors import InvalidName, MidbError, NoSuchAccount, OverQuota, TooBig
from midb.folders import SEPARATOR, normalize_name
from midb.mailfiles import (
    EXPORT_INFO_FILE,
    MAILDIR_LETTERS,
    MBOX_HIDDEN_HEADERS,
    MBOX_X_STATUS_LETTERS,
    SAVE_DATES_FILE,
    SYSTEM_FLAGS,
    cut_spans,
    decode_mutf7,
    field_spans,
    header_block_end,
    header_fields,
    tab_unescape,
    unlistescape,
)
from midb.messages import MAX_KEYWORDS_PER_MESSAGE
from midb.mime import normalize_crlf

if TYPE_CHECKING:
    from midb.store import FolderInfo, Store

log = logging.getLogger(__name__)

_EXPORT_INFO_LIMIT = 16 << 20

# Batches handed to Store.append_many: one transaction each, bounded in count and bytes.
_BATCH_MESSAGES = 500
_BATCH_BYTES = 32 << 20

_MAX_UID = 0xFFFFFFFF

# The HIGHESTMODSEQ a folder whose UIDs are kept starts from when its source does not record its
# own: Dovecot keeps it in its index, not in dovecot-uidlist or in mbox headers. A client that
# synchronised there with CONDSTORE or QRESYNC holds one of Dovecot's mod-sequences, which count
# the changes made to that one mailbox (about one per delivery or flag change): no mailbox
# reaches 2**32 of them. Above it, every message stored and every UID reported expunged is a
# change since what such a client holds, so its resync fetches all flags once instead of being
# told of nothing because its mod-sequence is past the folder's (RFC 7162 section 3.1.6 has a
# mod-sequence never go back within a UIDVALIDITY).
UNKNOWN_SOURCE_MODSEQ_FLOOR = 1 << 32
# The largest HIGHESTMODSEQ a caller may give: the folder's later changes still have 2**62
# mod-sequences before RFC 7162's limit of 2**63 - 1.
MAX_GIVEN_MODSEQ = 1 << 62


class ImportFailed(MidbError):
    """The source cannot be imported (unreadable, not an mbox/Maildir, quota exhausted, ...)."""


# ---------------------------------------------------------------------------------------------
# source model


@dataclass(slots=True)
class SourceMessage:
    """One message found in a source, with its body loaded only when needed."""

    origin: str                      # file name or "mbox message #n", for reports
    load: Callable[[], bytes]
    flags: tuple[str, ...] = ()
    internaldate: int | None = None
    tzoffset: int = 0
    uid: int | None = None


@dataclass(slots=True)
class SourceFolder:
    """The messages of one source folder plus the UID state it carried (None when unknown)."""

    origin: str
    messages: list[SourceMessage]
    uidvalidity: int | None = None
    nextuid: int | None = None
    highestmodseq: int | None = None   # a mod-sequence clients may hold for these UIDs (midb exports)
    notes: list[str] = field(default_factory=list)
    save_dates: dict[int, int] = field(default_factory=dict)   # by UID (midb exports: SAVE_DATES_FILE)


_ATOM_SPECIALS = frozenset('(){ %*"\\]')


def valid_keyword(keyword: str) -> bool:
    """An IMAP flag-keyword: a non-empty atom (RFC 3501 ATOM-CHAR), not a system flag."""
    return (0 < len(keyword) <= 250 and not keyword.startswith("\\")
            and all(" " < ch <= "~" and ch not in _ATOM_SPECIALS for ch in keyword))


def _keywords(names: Iterable[str], origin: str, notes: list[str] | None) -> list[str]:
    kept: list[str] = []
    seen: set[str] = set()
    for name in names:
        if not valid_keyword(name):
            if notes is not None:
                notes.append(f"{origin}: keyword {name!r} is not a valid IMAP keyword, dropped")
        elif name.lower() not in seen:
            seen.add(name.lower())
            kept.append(name)
    if len(kept) > MAX_KEYWORDS_PER_MESSAGE:
        # The store refuses a message with more (midb.messages); the mail matters more.
        if notes is not None:
            notes.append(f"{origin}: {len(kept)} keywords, more than the {MAX_KEYWORDS_PER_MESSAGE} a message "
                         f"may carry; the first {MAX_KEYWORDS_PER_MESSAGE} kept")
        kept = kept[:MAX_KEYWORDS_PER_MESSAGE]
    return kept


# ---------------------------------------------------------------------------------------------
# headers


def _date_header(fields: list[tuple[str, bytes, int, int]]) -> tuple[int, int] | None:
    for name, value, _, _ in fields:
        if name == "date":
            parsed = email.utils.parsedate_tz(value.decode("latin-1"))
            if parsed is None:
                return None
            try:
                when = email.utils.mktime_tz(parsed)
            except (OverflowError, ValueError):
                return None
            offset = parsed[9] or 0
            return int(when), offset // 60
    return None


# ---------------------------------------------------------------------------------------------
# mbox


_MONTHS = {m: i for i, m in enumerate(
    (b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"), 1)}
_FROM_DATE = re.compile(
    rb"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+"
    rb"(\d{1,2})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s+(?:([a-z]{1,5}|[+-]\d{4})\s+)?(\d{4})(?:\s+([+-]\d{4}))?",
    re.IGNORECASE)


# A From_ line that separates messages: "From ", the sender (as Dovecot's mbox_from_parse reads
# it: a quoted part with escapes, then no spaces), spaces, and the date right after them.
_FROM_SEPARATOR = re.compile(rb'From (?:"(?:[^"\\\r\n]|\\.)*")?[^ \r\n]* +' + _FROM_DATE.pattern, re.IGNORECASE)


def parse_from_line_date(line: bytes, *, strict: bool = False) -> tuple[int, int] | None:
    """(unix time, tz offset in minutes) of an mbox ``From_`` line's asctime date, if any.

    The date is UTC unless a numeric zone follows the time or the year. ``strict``: only in the
    form a separator between messages has (what Dovecot's mbox_from_parse accepts), "From ", a
    sender, spaces, then the date; a body line such as "From the desk of Bob, Tue Jan  2 10:00
    2024" is not one.
    """
    match = _FROM_SEPARATOR.match(line) if strict else _FROM_DATE.search(line)
    if match is None:
        return None
    month = _MONTHS[match[1][:3].lower()]
    day, hour, minute, second = int(match[2]), int(match[3]), int(match[4]), int(match[5] or 0)
    year = int(match[7])
    zone = match[8] or (match[6] if match[6] and match[6][:1] in b"+-" else None)
    offset = 0
    if zone:
        sign = -1 if zone[:1] == b"-" else 1
        offset = sign * (int(zone[1:3]) * 60 + int(zone[3:5]))
    if not (1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60 and 1970 <= year <= 9999):
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset * 60, offset


_MBOXRD_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)
_MBOXO_QUOTED = re.compile(rb"^>(From )", re.MULTILINE)


def _unquoted(data: bytes, quoted: re.Pattern[bytes]) -> bytes:
    """``data`` with the From_ lines ``quoted`` finds (mboxrd or mboxo) unquoted."""
    return quoted.sub(rb"\1", data) if b"From " in data else data


def _mbox_message(buf: bytes | mmap.mmap, from_line: bytes, start: int, end: int, number: int,
                  variant: str, crlf: bool, folder: SourceFolder) -> SourceMessage | None:
    """The SourceMessage of the mbox message at ``buf[start:end]`` (None: UW-IMAP pseudo message).

    Its header block is parsed now, once: flags, UID and date are needed to plan the import, and
    the bookkeeping fields to drop are noted by their place. ``load`` cuts the message out of the
    mapping again when the store asks for it (a large mbox is never held in memory), and only
    unquotes, drops those fields and converts line ends: what it would parse is parsed already."""
    blank = _BLANK_LINE.search(buf, start, end)   # the first empty line, LF or CRLF
    quoted = _MBOXRD_QUOTED if variant == "mboxrd" else _MBOXO_QUOTED
    raw_head = bytes(buf[start:blank.end() if blank else end])
    head = _unquoted(raw_head, quoted)
    # The head ends at the first empty line (or is the whole message), and unquoting works line
    # by line: these fields and their offsets are those of the whole unquoted message.
    fields = header_fields(head, header_block_end(head))
    values: dict[str, bytes] = {}
    for name, value, _, _ in fields:
        values.setdefault(name, value)
    origin = f"{folder.origin}: message #{number}"
    if number == 1 and ("x-imapbase" in values or "x-imap" in values):
        base = (values.get("x-imapbase") or values.get("x-imap") or b"").split()
        if len(base) >= 2 and (base[0].isascii() and base[0].isdigit()) and (base[1].isascii() and base[1].isdigit()):
            uidvalidity, last_uid = int(base[0]), int(base[1])
            if 0 < uidvalidity <= _MAX_UID:
                folder.uidvalidity, folder.nextuid = uidvalidity, min(last_uid + 1, _MAX_UID)
        if "x-imap" in values and b"FOLDER INTERNAL DATA" in values.get("subject", b""):
            return None  # UW-IMAP's placeholder holding only the folder's UID state
    flags: list[str] = []
    status = values.get("status", b"").upper()
    x_status = values.get("x-status", b"").upper()
    if b"R" in status:
        flags.append("\\Seen")
    for letter, flag in MBOX_X_STATUS_LETTERS.items():
        if letter.encode() in x_status:
            flags.append(flag)
    keywords = [k.decode("utf-8", "replace") for k in values.get("x-keywords", b"").replace(b",", b" ").split()]
    flags += _keywords(keywords, origin, folder.notes)
    uid = None
    x_uid = values.get("x-uid", b"")
    if (x_uid.isascii() and x_uid.isdigit()) and 0 < int(x_uid) <= _MAX_UID:
        uid = int(x_uid)
    dated = parse_from_line_date(from_line) or _date_header(fields)
    hidden = field_spans(fields, MBOX_HIDDEN_HEADERS)   # offsets only: kept for every message

    def load() -> bytes:
        data = cut_spans(_unquoted(bytes(buf[start:end]), quoted), hidden)
        return normalize_crlf(data) if crlf else data

    return SourceMessage(origin, load, tuple(flags), dated[0] if dated else None,
                         dated[1] if dated else 0, uid)


# Bounds on what is read to find a message's separator: a From_ line (Dovecot reads what fits
# its buffer) and a header block holding Content-Length. Beyond them the separator is found by
# scanning, as for a message without Content-Length.
_FROM_LINE_MAX = 1024
_HEADER_MAX = 1 << 20
_BLANK_LINE = re.compile(rb"\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\d{1,18})[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


def _from_line_at(buf: bytes | mmap.mmap, offset: int) -> bool:
    """Does a From_ line that separates messages (sender and date) start at ``offset``?"""
    end = buf.find(b"\n", offset, offset + _FROM_LINE_MAX)
    line = bytes(buf[offset:end if end >= 0 else offset + _FROM_LINE_MAX])
    return parse_from_line_date(line, strict=True) is not None


def _end_by_content_length(buf: bytes | mmap.mmap, start: int) -> tuple[int, int] | None:
    """(message end, next From_ line) as the message's Content-Length header has them, when it
    lands exactly on a From_ line (after the line end that belongs to the separator) or on the
    end of the file (but for that line end); None without one that does. As in Dovecot
    (istream-raw-mbox.c), this is how a body holding a line that looks like a From_ line is
    read whole: mboxcl2 files do not quote those lines."""
    blank = _BLANK_LINE.search(buf, start - 1, start + _HEADER_MAX)   # one pass, LF or CRLF
    if blank is None:
        return None
    header = bytes(buf[start:blank.start() + 1])
    if header.startswith(b"From ") or b"\nFrom " in header:   # no header line starts so: past the message
        return None
    length = _CONTENT_LENGTH.search(header)
    if length is None:
        return None
    end = blank.end() + int(length[1])
    size = len(buf)
    if end == size:
        return end, end
    for line_end in (b"\n", b"\r\n"):
        if buf[end:end + len(line_end)] != line_end:
            continue
        after = end + len(line_end)
        if after == size:
            return end, size
        if buf[after:after + 5] == b"From " and _from_line_at(buf, after):
            return end, after
    return None


def _end_by_scanning(buf: bytes | mmap.mmap, start: int) -> tuple[int, int]:
    """(message end, next From_ line or the end of the file) for a message whose separator is
    the first From_ line after an empty line that parses as one: a body line "From the desk of
    Bob" after an empty line is body (Dovecot ends a message only at a From_ line with a sender
    and a date). The empty line belongs to the separator, as a last empty line of the file does."""
    size = len(buf)
    hit = buf.find(b"\nFrom ", start - 1)
    while hit >= 0:
        if buf[hit - 1:hit] == b"\n":
            end = hit
        elif buf[hit - 2:hit] == b"\n\r":
            end = hit - 1
        else:
            end = -1
        if end >= 0 and _from_line_at(buf, hit + 1):
            return end, hit + 1
        hit = buf.find(b"\nFrom ", hit + 1)
    end = size
    if buf[end - 2:end] == b"\n\n":
        end -= 1
    elif buf[end - 4:end] == b"\r\n\r\n":
        end -= 2
    return end, size


def _mbox_spans(buf: bytes | mmap.mmap) -> Iterator[tuple[int, int, int]]:
    """(From_ line start, message start, message end) for each message of an mbox buffer.

    A message ends where its Content-Length says, if that is right (_end_by_content_length), or
    else at the next From_ line after an empty line (_end_by_scanning); the empty line before it
    belongs to the mbox format, not to the message. The first line need only start with "From ".
    """
    size = len(buf)
    if size == 0:
        return
    if buf[:5] != b"From ":
        raise ImportFailed("not an mbox file (it does not start with a 'From ' line)")
    sep = 0
    while sep < size:
        line_end = buf.find(b"\n", sep)
        start = size if line_end < 0 else line_end + 1
        end, following = _end_by_content_length(buf, start) or _end_by_scanning(buf, start)
        yield sep, start, max(start, end)
        sep = following


@contextmanager
def open_mbox(path: str | os.PathLike[str], *, variant: str = "mboxrd",
              crlf: bool = True) -> Iterator[SourceFolder]:
    """Parse an mbox file (mboxrd by default; "mboxo" unquotes only a single '>').

    Status/X-Status become flags, X-Keywords keywords, X-IMAPbase/X-UID the UID state; those
    headers are removed from the stored message. The file is mapped, not read into memory; the
    returned folder's messages may be loaded only inside the ``with`` block.
    """
    if variant not in ("mboxrd", "mboxo"):
        raise ValueError(f"unknown mbox variant {variant!r}")
    path = os.fspath(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ImportFailed(f"cannot open {path}: {exc.strerror or exc}") from exc
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            buf: bytes | mmap.mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except (OSError, ValueError) as exc:
            raise ImportFailed(f"cannot read {path}: {exc}") from exc
        try:
            folder = SourceFolder(path, [])
            for number, (sep, start, end) in enumerate(_mbox_spans(buf), 1):
                from_line = bytes(buf[sep:start])
                message = _mbox_message(buf, from_line, start, end, number, variant, crlf, folder)
                if message is not None:
                    folder.messages.append(message)
            yield folder
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()


# ---------------------------------------------------------------------------------------------
# Maildir


_INFO = re.compile(r"^(.*?)[:;!]2,([^:;!]*)$")


def split_maildir_name(name: str) -> tuple[str, str]:
    """(base name, flag letters) of a Maildir file name ``base:2,FLAGS``."""
    match = _INFO.match(name)
    if match is None:
        base, _, _ = name.partition(":")
        return base, ""
    return match[1], match[2]


def maildir_flags(letters: str, keywords: dict[int, str]) -> tuple[list[str], list[str]]:
    """(flags, unknown letters) for a Maildir info suffix; a-z index ``dovecot-keywords``."""
    flags: list[str] = []
    unknown: list[str] = []
    for letter in letters:
        if letter in MAILDIR_LETTERS:
            flag = MAILDIR_LETTERS[letter]
        elif "a" <= letter <= "z" and ord(letter) - ord("a") in keywords:
            flag = keywords[ord(letter) - ord("a")]
        else:
            unknown.append(letter)
            continue
        if flag not in flags:
            flags.append(flag)
    return flags, unknown


def read_dovecot_keywords(path: str) -> dict[int, str]:
    """``dovecot-keywords``: lines ``<index> <keyword>``; a missing file means no keywords."""
    keywords: dict[int, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                index, _, name = line.strip().partition(" ")
                if (index.isascii() and index.isdigit()) and name and int(index) < 26:
                    keywords[int(index)] = name.strip()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.strerror or exc}") from exc
    return keywords


@dataclass(slots=True)
class UidList:
    uidvalidity: int
    nextuid: int
    uids: dict[str, int]     # base file name -> UID


def read_save_dates(path: str, notes: list[str]) -> dict[int, int]:
    """A midb export's save dates of one folder (SAVE_DATES_FILE: "UID SAVEDATE" lines); {}
    without the file. A line that does not read is noted and left out: that message is saved
    at the import, as from anywhere else."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            lines = fh.read(_EXPORT_INFO_LIMIT).splitlines()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        notes.append(f"{path}: not read, save dates not kept: {exc.strerror or exc}")
        return {}
    dates: dict[int, int] = {}
    bad = 0
    for line in lines:
        uid, _, when = line.partition(" ")
        if uid.isdigit() and 0 < int(uid) <= 0xFFFFFFFF and when.lstrip("-").isdigit() and abs(int(when)) < 1 << 40:
            dates[int(uid)] = int(when)
        elif line.strip():
            bad += 1
    if bad:
        notes.append(f"{path}: {bad} lines not understood, those messages are saved at the import")
    return dates


def parse_uidlist(text: str) -> UidList | None:
    """Parse ``dovecot-uidlist`` (versions 1 and 3) or Courier's ``courierimapuiddb`` (version 1).

    v3 header: ``3 V<uidvalidity> N<nextuid> G<guid> ...``; records ``<uid> [ext ...] :<file>``.
    v1 header: ``1 <uidvalidity> <nextuid>``; records ``<uid> <file>``. None when unusable.
    """
    lines = text.splitlines()
    if not lines:
        return None
    header = lines[0].split()
    uidvalidity = nextuid = 0
    if header[:1] == ["3"]:
        for token in header[1:]:
            if token[:1] == "V" and (token[1:].isascii() and token[1:].isdigit()):
                uidvalidity = int(token[1:])
            elif token[:1] == "N" and (token[1:].isascii() and token[1:].isdigit()):
                nextuid = int(token[1:])
    elif header[:1] == ["1"] and len(header) >= 3 and (header[1].isascii() and header[1].isdigit()) and (header[2].isascii() and header[2].isdigit()):
        uidvalidity, nextuid = int(header[1]), int(header[2])
    else:
        return None
    if not 0 < uidvalidity <= _MAX_UID:
        return None
    version3 = header[0] == "3"
    uids: dict[str, int] = {}
    for line in lines[1:]:
        uid_text, _, rest = line.partition(" ")
        if not (uid_text.isascii() and uid_text.isdigit()) or not rest:
            continue
        if version3:
            colon = rest.find(":") if rest.startswith(":") else rest.find(" :")
            if colon < 0:
                continue
            filename = rest[colon + (1 if rest.startswith(":") else 2):]
        else:
            filename = rest.strip()
        uid = int(uid_text)
        if filename and 0 < uid <= _MAX_UID:
            uids.setdefault(split_maildir_name(filename)[0], uid)
    top = max(uids.values(), default=0)
    return UidList(uidvalidity, max(nextuid, top + 1, 1), uids)


def _leading_number(name: str) -> int:
    digits = re.match(r"\d+", name)
    return int(digits[0]) if digits else 0


def _read_file(path: str) -> Callable[[], bytes]:
    def load() -> bytes:
        with open(path, "rb") as fh:
            return fh.read()
    return load


def scan_maildir(path: str | os.PathLike[str], *, crlf: bool = True) -> SourceFolder:
    """Read one Maildir (cur/ and new/; tmp/ holds unfinished deliveries and is ignored).

    UID state comes from ``dovecot-uidlist`` (or ``courierimapuiddb``); files the list does not
    name get UIDs after it in delivery order, as Dovecot would give them at its next sync, so a
    repeated import assigns the same ones.
    """
    path = os.fspath(path)
    if not os.path.isdir(os.path.join(path, "cur")) and not os.path.isdir(os.path.join(path, "new")):
        raise ImportFailed(f"{path} is not a Maildir (no cur/ or new/)")
    folder = SourceFolder(path, [])
    folder.save_dates = read_save_dates(os.path.join(path, SAVE_DATES_FILE), folder.notes)
    keywords = read_dovecot_keywords(os.path.join(path, "dovecot-keywords"))
    for name in ("dovecot-uidlist", "courierimapuiddb"):
        try:
            with open(os.path.join(path, name), encoding="utf-8", errors="surrogateescape") as fh:
                uidlist = parse_uidlist(fh.read())
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ImportFailed(f"cannot read {os.path.join(path, name)}: {exc.strerror or exc}") from exc
        if uidlist is None:
            folder.notes.append(f"{path}/{name}: unrecognised format, UIDs not kept")
            continue
        break
    else:
        uidlist = None

    found: list[tuple[str, str, int, str]] = []  # (base name, file path, mtime, flag letters)
    for sub in ("new", "cur"):
        directory = os.path.join(path, sub)
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ImportFailed(f"cannot list {directory}: {exc.strerror or exc}") from exc
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                mtime = int(entry.stat(follow_symlinks=False).st_mtime)
            except OSError:
                continue
            base, letters = split_maildir_name(entry.name)
            found.append((base, entry.path, mtime, letters if sub == "cur" else ""))

    listed: dict[int, tuple[str, str, int, str]] = {}
    unlisted: list[tuple[str, str, int, str]] = []
    for base, file_path, mtime, letters in found:
        uid = uidlist.uids.get(base) if uidlist else None
        if uid is not None and uid not in listed:
            listed[uid] = (base, file_path, mtime, letters)
        else:
            unlisted.append((base, file_path, mtime, letters))
    unlisted.sort(key=lambda item: (_leading_number(item[0]), item[0]))

    ordered: list[tuple[int | None, str, str, int, str]]   # (UID or None: unlisted, *found entry)
    if uidlist is not None:
        folder.uidvalidity = uidlist.uidvalidity
        next_uid = max(uidlist.nextuid, max(listed, default=0) + 1)
        for item in unlisted:
            listed[next_uid] = item
            next_uid += 1
        folder.nextuid = next_uid
        ordered = [(uid, *listed[uid]) for uid in sorted(listed)]
    else:
        ordered = [(None, *item) for item in unlisted]

    for uid, _base, file_path, mtime, letters in ordered:
        flags, unknown = maildir_flags(letters, keywords)
        if unknown:
            folder.notes.append(f"{file_path}: flag letters {''.join(unknown)!r} not understood, ignored")
        flags = [f for f in flags if f in SYSTEM_FLAGS] + _keywords(
            [f for f in flags if f not in SYSTEM_FLAGS], file_path, folder.notes)
        load = _read_file(file_path)
        if crlf:
            load = _crlf_loader(load)
        folder.messages.append(SourceMessage(file_path, load, tuple(flags), mtime, 0, uid))
    return folder


def _crlf_loader(load: Callable[[], bytes]) -> Callable[[], bytes]:
    return lambda: normalize_crlf(load())


# ---------------------------------------------------------------------------------------------
# writing into the store


@dataclass(slots=True)
class FolderReport:
    source: str
    folder: str
    created: bool = False
    uidvalidity: int = 0
    uids_kept: bool = False
    imported: int = 0
    relocated: int = 0       # of those imported: under a new UID, another message held theirs here
    skipped: int = 0
    failed: int = 0
    complete: bool = True    # False when the import of this folder was stopped (quota)
    notes: list[str] = field(default_factory=list)
    # What the folder's HIGHESTMODSEQ was raised to for a source that does not record its own
    # (UNKNOWN_SOURCE_MODSEQ_FLOOR, or the caller's value); 0 when it was not.
    modseq_floor: int = 0
    modseq_given: bool = False

    def summary(self) -> str:
        mode = f"UIDVALIDITY {self.uidvalidity} and UIDs kept" if self.uids_kept else "new UIDs"
        if self.modseq_floor:
            why = "as given" if self.modseq_given else "the source's is not known"
            mode += f", HIGHESTMODSEQ raised to {self.modseq_floor} ({why})"
        moved = f" ({self.relocated} under new UIDs: other mail held theirs)" if self.relocated else ""
        text = (f"{self.folder}: {self.imported} imported{moved}, {self.skipped} skipped (already present)"
                f"{f', {self.failed} failed' if self.failed else ''}; {mode}"
                f"{' (folder created)' if self.created else ''}{'' if self.complete else '; STOPPED'}")
        return text


@dataclass(slots=True)
class ImportReport:
    folders: list[FolderReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return sum(f.imported for f in self.folders)

    @property
    def skipped(self) -> int:
        return sum(f.skipped for f in self.folders)

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.folders)


def _get_or_create(store: Store, account: str, name: str, uidvalidity: int | None,
                   report: FolderReport) -> FolderInfo:
    folder = store.get_folder(account, name)
    if folder is not None:
        return folder
    report.created = True
    return store.create_folder(account, name, uidvalidity=uidvalidity)


def _claim_uidvalidity(store: Store, account: str, folder: FolderInfo, source: SourceFolder,
                       report: FolderReport) -> FolderInfo:
    """Decide whether the source's UIDs can be kept in ``folder``; adopt its UIDVALIDITY if possible."""
    if source.uidvalidity is None:
        return folder
    if folder.uidvalidity == source.uidvalidity:
        report.uids_kept = True
        return folder
    if folder.messages == 0 and folder.uidnext <= 1:
        try:
            store.set_uidvalidity(account, folder.id, source.uidvalidity)
        except MidbError as exc:
            report.notes.append(f"cannot take over UIDVALIDITY {source.uidvalidity}: {exc}")
        else:
            report.uids_kept = True
            refreshed = store.folder_by_id(account, folder.id)
            return refreshed if refreshed is not None else folder
    else:
        report.notes.append(f"folder already holds mail under UIDVALIDITY {folder.uidvalidity}; "
                            f"messages get new UIDs (clients will download them again)")
    return folder


def _existing_content(store: Store, account: str, folder_id: int,
                      accounted: frozenset[int] = frozenset()) -> Callable[[bytes], bool]:
    """A checker consuming one already-stored copy of identical bytes (multiset semantics).
    The messages of UIDs ``accounted`` are left out: other source messages are those copies.

    Bodies are hashed lazily, only for stored messages whose size equals an incoming one.
    """
    by_size: dict[int, list[str]] = {}
    for meta in store.messages(account, folder_id):
        if meta.uid not in accounted:
            by_size.setdefault(meta.size, []).append(meta.blob)
    hashed: dict[int, Counter[bytes]] = {}

    def already_present(data: bytes) -> bool:
        size = len(data)
        if size not in by_size:
            return False
        counts = hashed.get(size)
        if counts is None:
            counts = hashed[size] = Counter()
            for blob in by_size[size]:
                try:
                    counts[hashlib.sha256(store.read_body(blob)).digest()] += 1
                except (MidbError, OSError):  # a lost body is verify's business; it matches nothing
                    continue
        digest = hashlib.sha256(data).digest()
        if counts[digest] > 0:
            counts[digest] -= 1
            return True
        return False

    return already_present


def _check_modseq(highestmodseq: int | None) -> None:
    if highestmodseq is not None and not (isinstance(highestmodseq, int) and not isinstance(highestmodseq, bool)
                                          and 0 < highestmodseq <= MAX_GIVEN_MODSEQ):
        raise ValueError(f"highestmodseq must be from 1 to {MAX_GIVEN_MODSEQ}")


def _import_into(store: Store, account: str, name: str, source: SourceFolder,
                 given_modseq: int | None = None) -> FolderReport:
    """Import ``source`` into folder ``name``. ``given_modseq``: a HIGHESTMODSEQ the source had
    (read by the admin), the floor of the folder's when its UIDs are kept, in place of
    UNKNOWN_SOURCE_MODSEQ_FLOOR for a source that does not record its own."""
    report = FolderReport(source.origin, name, notes=list(source.notes))
    folder = _get_or_create(store, account, name, source.uidvalidity, report)
    folder = _claim_uidvalidity(store, account, folder, source, report)
    report.folder, report.uidvalidity = folder.name, folder.uidvalidity
    nextuid, highestmodseq = source.nextuid, source.highestmodseq
    floor = 0
    if report.uids_kept and (highestmodseq is None or given_modseq is not None):
        # Clients may hold a mod-sequence of the source's for these UIDs that is not known here.
        floor = given_modseq if given_modseq is not None else UNKNOWN_SOURCE_MODSEQ_FLOOR
        highestmodseq = max(highestmodseq or 0, floor)
    retired = store.retired_folder(account, folder.uidvalidity) if report.uids_kept else None
    if retired is not None and (retired[0] > (nextuid or 0) or retired[1] > (highestmodseq or 0)):
        # The folder was deleted here after this copy of it was made (a restore from an older
        # backup): the mail that came after the copy had UIDs and mod-sequences clients may have
        # seen. New mail starts above them, and what they hold is reported as expunged.
        nextuid, highestmodseq = max(nextuid or 0, retired[0]), max(highestmodseq or 0, retired[1])
        report.notes.append(f"this folder had UIDs up to {retired[0] - 1} before it was deleted here: "
                            f"UIDNEXT {nextuid}, HIGHESTMODSEQ {highestmodseq}")
        try:
            store.forget_expunges_up_to(account, folder.id, retired[1], retired[0])
        except MidbError as exc:
            report.notes.append(f"QRESYNC clients may not be told what went since the copy: {exc}")
    if report.uids_kept and highestmodseq:
        # Before the messages: they then get mod-sequences above it, so a client that synced
        # with the source up to any point before it asks for changes since then and is told
        # of every message it may have missed (RFC 7162 section 3.1.6: a mod-sequence never
        # goes back within a UIDVALIDITY).
        try:
            rose = store.raise_highestmodseq(account, folder.id, highestmodseq)
        except MidbError as exc:
            report.notes.append(f"HIGHESTMODSEQ {highestmodseq} not kept: {exc}")
        else:
            if rose and highestmodseq == floor:
                report.modseq_floor, report.modseq_given = floor, given_modseq is not None

    planned: list[tuple[SourceMessage, int | None]] = []
    relocated: list[tuple[SourceMessage, int | None]] = []   # their UIDs hold other mail here
    if report.uids_kept:
        present = set(store.uids(account, folder.id))
        held: list[tuple[int, SourceMessage]] = []
        for message in source.messages:
            if message.uid is not None and message.uid in present:
                held.append((message.uid, message))
            elif message.uid is None or message.uid < folder.uidnext:
                report.skipped += 1
            else:
                present.add(message.uid)
                planned.append((message, message.uid))
        planned.sort(key=lambda item: item[1] or 0)
        relocated = [(message, None) for message in _relocations(store, account, folder.id, held, report)]
        already_present = None
    else:
        planned = [(message, None) for message in source.messages]
        already_present = _existing_content(store, account, folder.id) if folder.messages else None

    try:
        _append_planned(store, account, folder, planned, already_present, report)
    except OverQuota as exc:
        report.complete = False
        report.notes.append(f"over quota, import stopped: {exc}")
    if report.uids_kept and source.save_dates:
        # Each message's save date as the export had it (earlier than the import's): a Trash
        # restored from a backup expires on its old schedule.
        kept = {message.uid: source.save_dates[message.uid] for message, uid in planned
                if uid is not None and message.uid in source.save_dates}
        try:
            store.restore_save_dates(account, folder.id, kept)
        except MidbError as exc:
            report.notes.append(f"save dates not kept: {exc}")
    if report.uids_kept and nextuid and report.complete:
        _advance_uidnext(store, account, folder.id, nextuid, report)
    if relocated and report.complete:
        # Last, above every UID of the source (and its UIDNEXT): a new UID must not be one a
        # source message after it keeps, nor one a client of the source saw expunged.
        imported = report.imported
        try:
            _append_planned(store, account, folder, relocated, None, report)
        except OverQuota as exc:
            report.complete = False
            report.notes.append(f"over quota, import stopped: {exc}")
        report.relocated = report.imported - imported
    return report


def _held_by_others(store: Store, account: str, folder_id: int, held: list[tuple[int, SourceMessage]],
                    report: FolderReport) -> tuple[list[tuple[int, SourceMessage]], list[int]]:
    """Of source messages (UID, message) whose UIDs the folder holds: (those whose UID holds
    another message, the UIDs taken as holding their source message). A delivery into a folder whose import was interrupted
    takes the UID the import was to give next, so a UID present is no proof of the message.

    Same means the same size and SHA-256 of the bytes the import would store; the stored body is
    read only when the sizes agree. A source message that cannot be read, or a stored body that
    is lost, counts as the same: no copy is made of what cannot be compared (verify reports a lost
    body)."""
    others: list[tuple[int, SourceMessage]] = []
    same: list[int] = []
    pending: list[tuple[int, SourceMessage, bytes, str]] = []   # (UID, message, its digest, stored body)
    pending_bytes = 0

    def compare_pending() -> None:
        nonlocal pending_bytes
        bodies = store.read_bodies([blob for _, _, _, blob in pending])
        for (uid, message, digest, _), body in zip(pending, bodies, strict=True):
            if body is None or hashlib.sha256(body).digest() == digest:
                same.append(uid)
            else:
                others.append((uid, message))
        pending.clear()
        pending_bytes = 0

    for start in range(0, len(held), _BATCH_MESSAGES):
        chunk = held[start:start + _BATCH_MESSAGES]
        stored = {meta.uid: meta for meta in store.get_messages(account, folder_id, [uid for uid, _ in chunk])}
        for uid, message in chunk:
            meta = stored.get(uid)
            if meta is None:   # expunged since store.uids(): gone like any UID below UIDNEXT
                same.append(uid)
                continue
            try:
                data = message.load()
            except OSError as exc:
                report.notes.append(f"{message.origin}: cannot read to compare with UID {uid} here, "
                                    f"taken as already present: {exc.strerror or exc}")
                same.append(uid)
                continue
            if len(data) != meta.size:
                others.append((uid, message))
                continue
            pending.append((uid, message, hashlib.sha256(data).digest(), meta.blob))
            pending_bytes += meta.size
            if pending_bytes > _BATCH_BYTES:
                compare_pending()
        compare_pending()
    return others, same


def _load(message: SourceMessage, report: FolderReport) -> bytes | None:
    """The message's bytes; None, counted as failed with a note, when they cannot be read."""
    try:
        return message.load()
    except OSError as exc:
        report.failed += 1
        report.notes.append(f"{message.origin}: cannot read: {exc.strerror or exc}")
        return None


def _relocations(store: Store, account: str, folder_id: int, held: list[tuple[int, SourceMessage]],
                 report: FolderReport) -> list[SourceMessage]:
    """The source messages (of ``held``, whose UIDs the folder holds) to store under new UIDs:
    those whose UID holds another message, but for one whose bytes an earlier run already
    stored so. Counts the others as skipped."""
    others, same = _held_by_others(store, account, folder_id, held, report)
    report.skipped += len(same)
    if not others:
        return []
    # The messages that hold a source message under its UID are no copy of another one.
    already_present = _existing_content(store, account, folder_id, frozenset(same))
    relocated: list[SourceMessage] = []
    for uid, message in others:   # few: read again rather than held in memory since the comparison
        data = _load(message, report)
        if data is None:
            continue
        if already_present(data):
            report.skipped += 1
            continue
        report.notes.append(f"{message.origin}: UID {uid} holds another message here; "
                            f"it gets a new UID")
        relocated.append(message)
    return relocated


# What earlier releases stored to raise UIDNEXT: this message under the source's last UID,
# expunged again in a second transaction. An import interrupted between the two left it in the
# folder; a re-run removes it (_advance_uidnext).
_OLD_PLACEHOLDER = (b"Subject: midb import placeholder\r\n\r\n"
                    b"This UID was used and expunged before the mailbox was imported.\r\n")


def _advance_uidnext(store: Store, account: str, folder_id: int, nextuid: int, report: FolderReport) -> None:
    """Raise the folder's UIDNEXT to the source's, so no new message reuses a UID a client may
    have seen (messages expunged at the end of the source folder); the UIDs below it that are not
    here (expunged at the source, or not imported) are reported to QRESYNC clients that
    synchronised before as expunged, as they were there (Store.raise_uidnext)."""
    if nextuid <= 1:   # where every folder's UIDNEXT starts
        return
    _remove_old_placeholder(store, account, folder_id, nextuid - 1, report)
    try:
        store.raise_uidnext(account, folder_id, nextuid)
    except MidbError as exc:
        report.notes.append(f"UIDNEXT not raised to the source's {nextuid}: {exc}")


def _remove_old_placeholder(store: Store, account: str, folder_id: int, uid: int, report: FolderReport) -> None:
    """Expunge the placeholder an interrupted import by an older midb left under ``uid`` (the
    source's last UID, where it put it): known by that UID and its exact bytes, so no message of
    the source or from elsewhere is taken for it."""
    try:
        found = store.get_messages(account, folder_id, [uid])
        if found and found[0].size == len(_OLD_PLACEHOLDER) and store.read_body(found[0].blob) == _OLD_PLACEHOLDER:
            store.remove_messages(account, folder_id, [uid])
            report.notes.append(f"UID {uid}: the placeholder an interrupted import left is removed")
    except MidbError as exc:
        report.notes.append(f"UID {uid}: the placeholder an interrupted import left is not removed: {exc}")


def _append_planned(store: Store, account: str, folder: FolderInfo,
                    planned: list[tuple[SourceMessage, int | None]],
                    already_present: Callable[[bytes], bool] | None, report: FolderReport) -> None:
    """Append in batches: runs of consecutive wanted UIDs go through append_many in one
    transaction each (its UIDs follow UIDNEXT); the first of a run is placed with an explicit UID."""
    uidnext = folder.uidnext
    batch: list[tuple[SourceMessage, bytes, int | None]] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal uidnext, batch_bytes
        if batch:
            uidnext = _write_batch(store, account, folder.id, batch, uidnext, report)
            batch.clear()
            batch_bytes = 0

    for message, uid in planned:
        data = _load(message, report)
        if data is None:
            continue
        if already_present is not None and already_present(data):
            report.skipped += 1
            continue
        if batch and (uid is not None and uid != (batch[-1][2] or 0) + 1
                      or len(batch) >= _BATCH_MESSAGES or batch_bytes + len(data) > _BATCH_BYTES):
            flush()
        batch.append((message, data, uid))
        batch_bytes += len(data)
    flush()


def _write_batch(store: Store, account: str, folder_id: int,
                 batch: list[tuple[SourceMessage, bytes, int | None]], uidnext: int,
                 report: FolderReport) -> int:
    """Store one batch; returns the folder's UIDNEXT afterwards. OverQuota propagates."""
    first_uid = batch[0][2]
    rest = batch
    if first_uid is not None and first_uid != uidnext:
        message, data, _ = batch[0]
        try:
            _, uid = store.append(account, folder_id, data, flags=message.flags,
                                  internaldate=message.internaldate, tzoffset=message.tzoffset, uid=first_uid)
        except TooBig as exc:
            report.failed += 1
            report.notes.append(f"{message.origin}: too big: {exc}")
        else:
            report.imported += 1
            uidnext = uid + 1
        rest = batch[1:]
        if uidnext != first_uid + 1:
            # The first message was refused: place the rest one by one with explicit UIDs.
            return _write_singly(store, account, folder_id, rest, uidnext, report)
    if not rest:
        return uidnext
    items = [(data, message.flags, message.internaldate, message.tzoffset) for message, data, _ in rest]
    try:
        _, uids = store.append_many(account, folder_id, items)
    except TooBig:
        return _write_singly(store, account, folder_id, rest, uidnext, report)
    expected = [uid for _, _, uid in rest]
    if expected[0] is not None and list(uids) != expected:
        raise ImportFailed(f"store assigned UIDs {uids[0]}..{uids[-1]} instead of "
                           f"{expected[0]}..{expected[-1]}; import stopped")
    report.imported += len(uids)
    return (max(uids) + 1) if uids else uidnext


def _write_singly(store: Store, account: str, folder_id: int,
                  batch: list[tuple[SourceMessage, bytes, int | None]], uidnext: int,
                  report: FolderReport) -> int:
    for message, data, wanted in batch:
        try:
            _, uid = store.append(account, folder_id, data, flags=message.flags,
                                  internaldate=message.internaldate, tzoffset=message.tzoffset,
                                  uid=wanted if wanted is not None and wanted >= uidnext else None)
        except TooBig as exc:
            report.failed += 1
            report.notes.append(f"{message.origin}: too big: {exc}")
            continue
        report.imported += 1
        uidnext = uid + 1
    return uidnext


def require_account(store: Store, account: str) -> str:
    found = store.get_account(account)
    if found is None:
        raise NoSuchAccount(f"no such account: {account}")
    return found.name


def _increasing_uids(source: SourceFolder) -> bool:
    """Every message has an X-UID, strictly increasing and below the folder's next UID."""
    previous = 0
    for message in source.messages:
        if message.uid is None or message.uid <= previous:
            return False
        previous = message.uid
    return source.nextuid is None or previous < source.nextuid


def import_mbox(store: Store, account: str, folder: str, path: str | os.PathLike[str], *,
                variant: str = "mboxrd", crlf: bool = True, highestmodseq: int | None = None) -> FolderReport:
    """Import one mbox file into ``folder`` (created if missing) of ``account``. ``highestmodseq``:
    the HIGHESTMODSEQ the source mailbox had (Dovecot's, which the file does not hold), a floor of
    the folder's when its UIDs are kept; without it, UNKNOWN_SOURCE_MODSEQ_FLOOR."""
    _check_modseq(highestmodseq)
    account = require_account(store, account)
    with open_mbox(path, variant=variant, crlf=crlf) as source:
        if source.uidvalidity is not None and not _increasing_uids(source):
            source.notes.append("X-IMAPbase present but X-UID headers missing or out of order; UIDs not kept")
            source.uidvalidity = source.nextuid = None
        if source.uidvalidity is None:
            for message in source.messages:
                message.uid = None
        return _import_into(store, account, folder, source, highestmodseq)


def import_maildir(store: Store, account: str, folder: str, path: str | os.PathLike[str], *,
                   crlf: bool = True, highestmodseq: int | None = None) -> FolderReport:
    """Import a single Maildir (no subfolders) into ``folder`` of ``account``. A folder of a
    midb export (the tree's root, or a ``.Name`` directory in it) is taken as import_maildir_tree
    takes it: refused when the export did not finish, bodies byte for byte, its HIGHESTMODSEQ
    kept with its UIDs. ``highestmodseq`` as for import_mbox."""
    _check_modseq(highestmodseq)
    account = require_account(store, account)
    path = os.fspath(path)
    exported, name = _export_of(path)
    source = scan_maildir(path, crlf=crlf and exported is None)
    if exported is not None and name is not None:
        _adopt_export_info(source, exported.get(name))
    return _import_into(store, account, folder, source, highestmodseq)


def _export_of(path: str) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """(the export info, the folder's name in it) when ``path`` is a folder of a midb export."""
    path = os.path.abspath(path)
    exported = read_export_info(path)
    if exported is not None:
        return exported, "INBOX"
    parent, entry = os.path.split(path)
    if entry.startswith(".") and entry not in (".", ".."):
        exported = read_export_info(parent)
        if exported is not None:
            return exported, SEPARATOR.join(_component_name(part) for part in entry[1:].split("."))
    return None, None


# Dovecot-era folder names for the special-use folders, best match first.
_SPECIAL_NAMES: dict[str, tuple[str, ...]] = {
    "\\Sent": ("sent", "sent messages", "sent items", "sent mail"),
    "\\Drafts": ("drafts", "draft"),
    "\\Trash": ("trash", "deleted messages", "deleted items"),
    "\\Junk": ("junk", "spam", "junk e-mail", "junk email"),
    "\\Archive": ("archive", "archives"),
}


def find_maildir_folders(root: str | os.PathLike[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Maildir++ folders under ``root``: ([(directory, name components)], problems).

    The root itself is INBOX (components ["INBOX"]); ``.Sub.Folder`` becomes ["Sub", "Folder"],
    each component decoded from modified UTF-7.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ImportFailed(f"{root} is not a directory")
    folders: list[tuple[str, list[str]]] = []
    problems: list[str] = []
    if os.path.isdir(os.path.join(root, "cur")) or os.path.isdir(os.path.join(root, "new")):
        folders.append((root, ["INBOX"]))
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        raise ImportFailed(f"cannot list {root}: {exc.strerror or exc}") from exc
    for entry in names:
        directory = os.path.join(root, entry)
        if not entry.startswith(".") or entry in (".", "..") or not os.path.isdir(directory):
            continue
        if not (os.path.isdir(os.path.join(directory, "cur")) or os.path.isdir(os.path.join(directory, "new"))):
            continue
        components = entry[1:].split(".")
        if not all(components):
            problems.append(f"{directory}: empty name component, skipped")
            continue
        folders.append((directory, [_component_name(part) for part in components]))
    if not folders:
        raise ImportFailed(f"{root} holds no Maildir folders")
    return folders, problems


def _component_name(part: str) -> str:
    """A folder name component from a directory name: modified UTF-7 (kept as it is when it is
    not valid mUTF-7, as Dovecot's UTF-8 layout option writes names), with listescape's codes
    undone (a '.' in a name, as midb.exporter and Dovecot's listescape plugin write it)."""
    try:
        return decode_mutf7(unlistescape(part))
    except ValueError:
        return unlistescape(part)


def read_dovecot_subscriptions(root: str) -> list[list[str]]:
    """Subscribed names from Dovecot's ``subscriptions`` file, as name components.

    Version 2 files (first line ``V\\t2``) separate components with TAB; older ones hold one
    storage name per line (modified UTF-7, '.' separated in Maildir++). Both readings are
    returned for old files: callers match them against folders that exist.
    """
    try:
        with open(os.path.join(root, "subscriptions"), encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    result: list[list[str]] = []
    if lines[:1] == ["V\t2"]:
        return [[unlistescape(tab_unescape(part)) for part in line.split("\t")] for line in lines[1:] if line]
    for line in lines:
        if not line:
            continue
        for separator in (".", "/"):
            try:
                result.append([decode_mutf7(c) for c in line.split(separator)])
            except ValueError:
                result.append(line.split(separator))
    return result


def import_maildir_tree(store: Store, account: str, root: str | os.PathLike[str], *,
                        crlf: bool = True, highestmodseq: int | None = None) -> ImportReport:
    """Import a whole (Dovecot) Maildir++ tree: root = INBOX, ``.A.B`` = ``A/B``.

    Dovecot's usual special folders (Sent, Drafts, Trash, Junk/Spam, Archive and common
    variants) land in the account's existing special-use folders, whatever those are called;
    their subfolders follow. Dovecot subscriptions are carried over for imported folders.
    OverQuota stops the import (recorded in ``problems``); other per-folder errors are recorded
    and the next folder is tried.

    A tree written by midb.exporter (EXPORT_INFO_FILE) says which folder had which special use
    (no names are guessed then) and its HIGHESTMODSEQ; its bodies are what a store held, and
    are stored byte for byte whatever ``crlf`` says. One whose export did not finish is refused.

    ``highestmodseq`` as for import_mbox, for every folder: Dovecot gives one per folder, and the
    largest of them is the one safe for all.
    """
    _check_modseq(highestmodseq)
    account = require_account(store, account)
    root = os.fspath(root)
    report = ImportReport()
    sources, report.problems = find_maildir_folders(root)
    exported = read_export_info(root)
    if exported is not None:
        crlf = False
    targets = _map_special_folders(store, account, sources, exported, report)
    subscribed = {tuple(s) for s in read_dovecot_subscriptions(root)}
    for (directory, components), target in zip(sources, targets, strict=True):
        try:
            source = scan_maildir(directory, crlf=crlf)
            if exported is not None:
                _adopt_export_info(source, exported.get(SEPARATOR.join(components)))
            folder_report = _import_into(store, account, target, source, highestmodseq)
        except (ImportFailed, MidbError, OSError) as exc:
            report.problems.append(f"{directory}: {exc}")
            continue
        report.folders.append(folder_report)
        if not folder_report.complete:
            report.problems.append(f"{directory}: over quota; import stopped")
            break
        if tuple(components) in subscribed:
            try:
                store.set_subscribed(account, folder_report.folder, True)
            except MidbError as exc:
                folder_report.notes.append(f"subscription not set: {exc}")
    if exported is not None:
        # An export's subscriptions to folders that do not exist come back too, under their own
        # names (a deleted mailbox keeps its subscription: RFC 3501 section 6.3.6).
        for parts in sorted(subscribed - {tuple(components) for _, components in sources}):
            try:
                store.set_subscribed(account, SEPARATOR.join(parts), True)
            except MidbError as exc:
                report.problems.append(f"subscription to {SEPARATOR.join(parts)} not set: {exc}")
    return report


def read_export_info(root: str) -> dict[str, dict[str, Any]] | None:
    """What midb.exporter wrote beside a Maildir++ tree (EXPORT_INFO_FILE), by folder name: its
    ``uidvalidity``, ``highestmodseq`` and ``special_use``. None for a tree from elsewhere;
    ImportFailed for an export that did not finish (interrupted, a full disk) or whose file is
    damaged: what it holds is not the account."""
    path = os.path.join(root, EXPORT_INFO_FILE)
    try:
        with open(path, "rb") as fh:
            info = json.loads(fh.read(_EXPORT_INFO_LIMIT))
        complete = info.get("complete")
        folders = info["folders"]
        if not isinstance(folders, dict) or not all(isinstance(v, dict) for v in folders.values()):
            raise ValueError("no folder table")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # Only midb writes this file: a damaged one is an export cut short at a bad moment (a
        # power failure), not a tree from elsewhere.
        raise ImportFailed(f"{path} is damaged ({exc}): export again") from None
    if complete is not True:
        raise ImportFailed(f"{root} is an export that did not finish ({EXPORT_INFO_FILE} says so): "
                           f"export again")
    return folders


def _adopt_export_info(source: SourceFolder, exported: dict[str, Any] | None) -> None:
    """The exported HIGHESTMODSEQ, for a folder whose UIDs it belongs to (_import_into)."""
    modseq = (exported or {}).get("highestmodseq")
    if (source.uidvalidity is not None and (exported or {}).get("uidvalidity") == source.uidvalidity
            and isinstance(modseq, int) and not isinstance(modseq, bool) and modseq > 0):
        source.highestmodseq = modseq


def _map_special_folders(store: Store, account: str, sources: list[tuple[str, list[str]]],
                         exported: dict[str, dict[str, Any]] | None, report: ImportReport) -> list[str]:
    """Target folder name for each source folder. Each special-use folder of the account is
    claimed once: by the source an export says had that use, or else (a tree from elsewhere)
    by the best-ranked source name. A claimed folder's subfolders follow it. No two sources
    share a target; where two would, a claimed source keeps it and the other gets a name of
    its own."""
    special_target = {f.special_use: f.name for f in store.list_folders(account) if f.special_use}
    claims: dict[tuple[str, ...], str] = {}  # source name (its components) -> target name
    folded = False  # whether claims are by lower-case names (guessed) rather than exact ones
    if exported is not None:
        for _, components in sources:
            use = exported.get(SEPARATOR.join(components), {}).get("special_use")
            if not isinstance(use, str):
                continue
            if components != ["INBOX"] and use in special_target and special_target[use] not in claims.values():
                claims[tuple(components)] = special_target[use]
    else:
        folded = True
        tops = {components[0].lower() for _, components in sources if components != ["INBOX"]}
        for use, names in _SPECIAL_NAMES.items():
            candidate = next((name for name in names if name in tops), None)
            if use in special_target and candidate is not None:
                claims[(candidate,)] = special_target[use]

    wanted: list[tuple[str, bool]] = []  # (target name, claimed)
    for _, components in sources:
        key = [part.lower() for part in components] if folded else components
        depth = next((depth for depth in range(len(key), 0, -1) if tuple(key[:depth]) in claims), 0)
        if components == ["INBOX"] or not depth:
            wanted.append((SEPARATOR.join(components), components == ["INBOX"]))
        else:
            wanted.append((SEPARATOR.join([claims[tuple(key[:depth])], *components[depth:]]), True))
    targets = [name for name, _ in wanted]
    used: set[str] = set()
    for index in sorted(range(len(wanted)), key=lambda index: not wanted[index][1]):  # claimed first
        name = targets[index]
        if _folder_key(name) in used:
            renamed = f"{name} (imported)"
            report.problems.append(f"{sources[index][0]}: {name} is already the target of another folder; "
                                   f"importing into {renamed}")
            targets[index] = name = renamed
        used.add(_folder_key(name))
    return targets


def _folder_key(name: str) -> str:
    """Folder names are case-sensitive but for INBOX (normalize_name); an invalid name stays as
    it is (its folder's import then fails and is reported)."""
    try:
        return normalize_name(name)
    except InvalidName:
        return name
