"""What mbox files and Maildir++ trees look like: the formats midb.importer reads and
midb.exporter writes, in one place so that the two agree.

- Folder names on disk: modified UTF-7 (RFC 3501 section 5.1.3), and Dovecot's listescape
  ``\\NN`` codes for the characters Maildir++ cannot hold in a name ('.', its own separator; '/';
  a leading '~'; the escape character '\\' itself).
- Maildir file name info letters (the ``:2,`` suffix) and IMAP system flags.
- Header fields: where the header block ends, its fields, and removing some of them (the mbox
  bookkeeping headers Dovecot hides from clients).
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["EXPORT_INFO_FILE", "MAILDIR_LETTERS", "SAVE_DATES_FILE", "MBOX_HIDDEN_HEADERS", "MBOX_X_STATUS_LETTERS", "SYSTEM_FLAGS", "cut_spans",
           "decode_mutf7", "encode_mutf7", "field_spans", "header_block_end", "header_fields", "listescape",
           "strip_fields", "tab_escape", "tab_unescape", "unlistescape"]

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")

# Maildir info letters; P ("passed": resent, forwarded or bounced) is IMAP's $Forwarded.
MAILDIR_LETTERS = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "T": "\\Deleted", "D": "\\Draft",
                   "P": "$Forwarded"}

# An mbox's X-Status letters (mutt's, Dovecot's); \Seen is Status: R.
MBOX_X_STATUS_LETTERS = {"A": "\\Answered", "F": "\\Flagged", "D": "\\Deleted", "T": "\\Draft"}

# Dovecot hides these mbox bookkeeping headers from IMAP clients; so do we.
MBOX_HIDDEN_HEADERS = frozenset({"content-length", "status", "x-status", "x-imap", "x-imapbase",
                                 "x-keywords", "x-uid"})

# Written beside a Maildir++ tree by midb.exporter: what Maildir cannot hold (midb.importer
# read_export_info).
EXPORT_INFO_FILE = "midb-export"
# In each folder's directory of such a tree: "UID SAVEDATE" lines (Unix time), the save dates
# (midb.savedates) Maildir has no place for, so a Trash restored from it expires on its old
# schedule. Dovecot ignores the file.
SAVE_DATES_FILE = "midb-savedates"


# ---------------------------------------------------------------------------------------------
# folder names


def encode_mutf7(name: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 section 5.1.3), as Maildir++ folder names are stored."""
    out: list[str] = []
    run: list[str] = []

    def shift_out() -> None:
        if run:
            encoded = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if " " <= ch <= "~":
            shift_out()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    shift_out()
    return "".join(out)


def decode_mutf7(name: str) -> str:
    """Decode an IMAP modified-UTF-7 mailbox name; ValueError when it is not valid mUTF-7."""
    out: list[str] = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            if not " " <= ch <= "~":
                raise ValueError(f"character {ch!r} not allowed in modified UTF-7")
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated modified UTF-7 shift sequence")
        if end == i + 1:
            out.append("&")
        else:
            chunk = name[i + 1:end].replace(",", "/")
            try:
                raw = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True)
                if len(raw) % 2:
                    raise ValueError("odd number of UTF-16 bytes")
                out.append(raw.decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"bad modified UTF-7 sequence {name[i:end + 1]!r}") from exc
        i = end + 1
    return "".join(out)


_NEEDS_ESCAPE = re.compile(r"[./\\]|^~")
# Only the codes listescape writes for those characters are read back: a name from a tree
# written without listescape that holds another backslash and two hex digits stays as it is.
_ESCAPED = re.compile(r"\\(2[eEfF]|5[cC]|7[eE])")


def listescape(component: str) -> str:
    """A name component with '.', '/', '\\' and a leading '~' as ``\\NN`` hex codes."""
    return _NEEDS_ESCAPE.sub(lambda match: f"\\{ord(match[0]):02x}", component)


def unlistescape(component: str) -> str:
    return _ESCAPED.sub(lambda match: chr(int(match[1], 16)), component)


# Dovecot's escaping of TAB, CR, LF and \x01 in the components of a subscriptions file (version 2).
_TAB_ESCAPES = str.maketrans({"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"})
_TAB_ESCAPED = re.compile("\x01(.)", re.DOTALL)
_TAB_UNESCAPES = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


def tab_escape(component: str) -> str:
    return component.translate(_TAB_ESCAPES)


def tab_unescape(component: str) -> str:
    return _TAB_ESCAPED.sub(lambda match: _TAB_UNESCAPES.get(match[1], match[1]), component)


# ---------------------------------------------------------------------------------------------
# header fields


_HEADER_END = re.compile(rb"\r?\n\r?\n")


def header_block_end(data: bytes) -> int:
    """Offset just past the header block's terminating line (len(data) when there is no body)."""
    if data.startswith((b"\n", b"\r\n")):
        return 0
    match = _HEADER_END.search(data)
    return match.start() + (2 if data[match.start()] == 0x0D else 1) if match else len(data)


def header_fields(data: bytes, end: int) -> list[tuple[str, bytes, int, int]]:
    """(lower-case name, unfolded value, start, stop) for each field of data[:end]."""
    fields: list[tuple[str, bytes, int, int]] = []
    pos = 0
    while pos < end:
        stop = data.find(b"\n", pos, end)
        stop = end if stop < 0 else stop + 1
        line = data[pos:stop]
        if line[:1] in (b" ", b"\t") and fields:
            name, value, start, _ = fields[-1]
            fields[-1] = (name, value + b" " + line.strip(), start, stop)
        else:
            colon = line.find(b":")
            if colon > 0:
                fields.append((line[:colon].strip().decode("latin-1").lower(), line[colon + 1:].strip(), pos, stop))
        pos = stop
    return fields


def strip_fields(data: bytes, fields: list[tuple[str, bytes, int, int]], names: frozenset[str]) -> bytes:
    """``data`` without the ``fields`` (as header_fields gives them) named in ``names``."""
    return cut_spans(data, field_spans(fields, names))


def field_spans(fields: list[tuple[str, bytes, int, int]], names: frozenset[str]) -> list[tuple[int, int]]:
    """(start, stop) of each of the ``fields`` named in ``names``, for cut_spans."""
    return [(start, stop) for name, _, start, stop in fields if name in names]


def cut_spans(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """``data`` without the ascending, disjoint ``spans`` (start, stop)."""
    if not spans:
        return data
    parts, pos = [], 0
    for start, stop in spans:
        parts.append(data[pos:start])
        pos = stop
    parts.append(data[pos:])
    return b"".join(parts)
