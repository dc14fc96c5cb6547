"""Responses to bytes: the string primitives of RFC 3501/9051 section 4.

Every byte string that goes on the wire as an IMAP string passes through here, so the choice
between atom, quoted string and literal is made in exactly one place.
"""

from __future__ import annotations

import re

# ATOM-CHAR: any CHAR except atom-specials: ( ) { SP CTL % * " \ ]
_ATOM_RE = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+\Z")
# A quoted string may hold any TEXT-CHAR (no CR, LF, NUL); 8-bit only with UTF-8 enabled.
_QUOTABLE_7BIT = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")
_QUOTABLE_8BIT = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\xff]*\Z")
_QUOTED_MAX = 1024  # longer values go as literals: easier on clients' line buffers

NIL = b"NIL"


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def quoted(value: bytes) -> bytes:
    """A quoted string; the caller has checked that ``value`` may be quoted."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: bytes, *, binary: bool = False) -> bytes:
    """A synchronising-literal form as servers send it: {n}CRLF followed by the bytes.
    ``binary`` gives RFC 3516's literal8 ``~{n}``."""
    prefix = b"~{" if binary else b"{"
    return prefix + str(len(value)).encode() + b"}\r\n" + value


def can_quote(value: bytes, utf8: bool = False) -> bool:
    if len(value) > _QUOTED_MAX:
        return False
    return bool((_QUOTABLE_8BIT if utf8 else _QUOTABLE_7BIT).match(value))


def string(value: bytes | str, utf8: bool = False) -> bytes:
    """IMAP ``string``: quoted when possible, else a literal (CR/LF/NUL/8-bit/long)."""
    data = _as_bytes(value)
    if can_quote(data, utf8):
        return quoted(data)
    return literal(data)


def nstring(value: bytes | str | None, utf8: bool = False) -> bytes:
    """IMAP ``nstring``: NIL for None, else ``string``."""
    if value is None:
        return NIL
    return string(value, utf8)


def astring(value: bytes | str, utf8: bool = False) -> bytes:
    """IMAP ``astring``: a bare atom when the value is one (and not NIL), else ``string``."""
    data = _as_bytes(value)
    if data and _ATOM_RE.match(data) and data.upper() != NIL:
        return data
    return string(data, utf8)


def is_atom(value: bytes) -> bool:
    return bool(value) and bool(_ATOM_RE.match(value))


def number(value: int) -> bytes:
    return str(value).encode("ascii")


def paren_list(items: list[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"
