"""Responses to bytes: the string primitives of RFC 3501/9051 section 4.

Every byte string that goes on the wire as an IMAP string passes through here, so the choice
between atom, quoted string and literal is made in exactly one place.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import math
import operator
import re
import time
from collections.abc import Iterable

from gximap.imap import mutf7

# ATOM-CHAR: any CHAR except atom-specials: ( ) { SP CTL % * " \ ]
_ATOM_RE = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+\Z")
# A quoted string may hold any TEXT-CHAR (no CR, LF, NUL); 8-bit only with UTF-8 enabled, and
# then only as valid UTF-8 (RFC 9051 and RFC 6855: QUOTED-CHAR =/ UTF8-2 / UTF8-3 / UTF8-4).
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
    """Whether ``value`` may go as a quoted string: no CR, LF or NUL, not too long, and 8-bit
    only when ``utf8`` (UTF8=ACCEPT or IMAP4rev2 in effect) and valid UTF-8. Anything else,
    a binary METADATA value or a raw latin-1 header among them, must go as a literal."""
    if len(value) > _QUOTED_MAX:
        return False
    if not utf8 or value.isascii():   # (isascii: one cheap scan, and the usual case)
        return bool(_QUOTABLE_7BIT.match(value))
    return bool(_QUOTABLE_8BIT.match(value)) and _is_utf8(value)


def _is_utf8(value: bytes) -> bool:
    """Valid UTF-8 as RFC 3629 defines it (Python's strict decoder: no overlong forms, no
    surrogates, nothing above U+10FFFF), which is what RFC 9051's UTF8-2/3/4 allow."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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


# -- response-side helpers (added for the protocol core; the primitives above are unchanged) ----

_MONTH_NAMES = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
                b"Nov", b"Dec")
_TEXT_UNSAFE = re.compile(rb"[\x00\r\n]")
_NEEDS_LITERAL = re.compile(rb"[\x00\r\n]")
CRLF = b"\r\n"


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Seen $Label)``: flags are atoms (system flags with their backslash)."""
    return b"(" + b" ".join(flag.encode("utf-8") for flag in flags) + b")"


def sequence_set(numbers: Iterable[int]) -> bytes:
    """Compress numbers into a sequence set, ``1:5,7,9:12``; b"" for no numbers.

    Sorted input (the usual case: UIDs from the index) is used as it is; anything else is
    sorted and de-duplicated first."""
    values = numbers if isinstance(numbers, list | tuple) else list(numbers)
    if not values:
        return b""
    if not all(map(operator.lt, values, itertools.islice(values, 1, None))):
        values = sorted(set(values))
    out: list[bytes] = []
    append = out.append
    start = previous = values[0]
    for value in itertools.islice(values, 1, None):
        if value != previous + 1:
            append(b"%d" % start if start == previous else b"%d:%d" % (start, previous))
            start = value
        previous = value
    append(b"%d" % start if start == previous else b"%d:%d" % (start, previous))
    return b",".join(out)


def sequence_set_from_ranges(ranges: Iterable[tuple[int, int]]) -> bytes:
    """A sequence set from sorted inclusive (low, high) ranges."""
    return b",".join(b"%d" % low if low == high else b"%d:%d" % (low, high) for low, high in ranges)


def local_offset(timestamp: int) -> int:
    """The server's UTC offset in minutes at ``timestamp`` (its TZ, daylight saving included):
    the zone a date the server set itself is shown in, such as a save date (RFC 8514)."""
    try:
        offset = datetime.datetime.fromtimestamp(timestamp).astimezone().utcoffset()
    except (OverflowError, OSError, ValueError):
        return 0
    return 0 if offset is None else int(offset.total_seconds()) // 60


def internaldate(timestamp: int | float, tz_minutes: int = 0) -> bytes:
    """``"17-Jul-1996 02:44:25 -0700"``: the date-time of RFC 3501 section 9, quotes included.
    Month names are English whatever the locale. A moment outside the years 1-9999 (or a zone
    beyond ±23:59) is shown as the epoch (in UTC). time.gmtime of the shifted moment rather than
    a datetime in a timezone object: FETCH renders one per message (1.4 µs instead of 2.1)."""
    if not -1439 <= tz_minutes <= 1439:
        tz_minutes = 0
    seconds = timestamp if type(timestamp) is int else math.floor(round(timestamp, 6))
    try:
        moment = time.gmtime(seconds + tz_minutes * 60)
    except (OverflowError, OSError, ValueError):
        moment = None
    if moment is None or not 1 <= moment.tm_year <= 9999:
        moment = time.gmtime(tz_minutes * 60)
    sign = b"-" if tz_minutes < 0 else b"+"
    offset = abs(tz_minutes)
    return b'"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        moment.tm_mday, _MONTH_NAMES[moment.tm_mon - 1], moment.tm_year, moment.tm_hour, moment.tm_min,
        moment.tm_sec, sign, offset // 60, offset % 60,
    )


@functools.lru_cache(maxsize=4096)  # a few names per account, in every STATUS, LIST and SELECT answer
def mailbox_name(name: str, utf8: bool = False) -> bytes:
    """A mailbox name as ``mailbox`` (astring): modified UTF-7 (or UTF-8 once UTF8=ACCEPT or
    IMAP4rev2 is in effect), then an atom when possible, else a quoted string of any length;
    a literal only for names holding CR, LF or NUL."""
    if utf8:
        data = name.encode("utf-8", "surrogatepass")
    else:
        try:
            data = mutf7.encode(name)
        except ValueError:  # a lone surrogate: never a valid stored name, but do not fail
            data = mutf7.encode(name.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
    if data and _ATOM_RE.match(data) and data.upper() != NIL:
        return data
    if _NEEDS_LITERAL.search(data):
        return literal(data)
    return quoted(data)


def response_text(text: str | bytes) -> bytes:
    """Human-readable text for a response line: UTF-8, CR/LF/NUL replaced, never empty."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    data = _TEXT_UNSAFE.sub(b" ", data)
    return data or b"Completed"


def response_code(name: str | bytes, argument: bytes | None = None) -> bytes:
    """``[NAME]`` or ``[NAME argument]``."""
    code = _as_bytes(name)
    if argument is None:
        return b"[" + code + b"]"
    return b"[" + code + b" " + argument + b"]"


def tagged(tag: bytes, status: str, text: str | bytes, code: bytes | None = None) -> bytes:
    """``tag OK [CODE] text CRLF`` (status is OK, NO or BAD)."""
    head = tag + b" " + status.encode("ascii") + b" "
    if code:
        head += code + b" "
    return head + response_text(text) + CRLF


def untagged_status(status: str, text: str | bytes, code: bytes | None = None) -> bytes:
    """``* OK|NO|BAD|BYE|PREAUTH [CODE] text CRLF``."""
    return tagged(b"*", status, text, code)


def untagged(*items: bytes) -> bytes:
    """``* item item ... CRLF`` for data responses (``* 3 EXISTS``, ``* CAPABILITY ...``)."""
    return b"* " + b" ".join(items) + CRLF


def continuation(text: str | bytes = b"") -> bytes:
    """``+ text CRLF`` (command continuation request); text may be base64 for SASL."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return b"+ " + _TEXT_UNSAFE.sub(b" ", data) + CRLF
