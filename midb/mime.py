"""The MIME digest: one pass over a message's raw bytes when it enters the store.

The digest records, for the message and every MIME part, the exact byte offsets of its header and
body, its Content-* fields, and (for the message and every embedded message/rfc822) the ENVELOPE
fields as raw header bytes.  It also keeps the decoded header values SEARCH, SORT and THREAD need.
FETCH renders ENVELOPE, BODYSTRUCTURE and BODY[section] from the digest alone, reading only the byte
ranges it needs from the stored body, so a message is never parsed twice.

The parser is our own (the stdlib ``email`` package does not keep byte offsets).  It never raises:
malformed input (missing or unterminated boundaries, bare LF line endings, NUL bytes, 8-bit
headers, header-only messages, empty input) gives a best-effort digest, as Dovecot does.  Work and
memory are bounded: MIME nesting deeper than ``MAX_DEPTH`` and parts beyond ``MAX_PARTS`` are not
split further, the remainder stays inside the enclosing part's body as opaque bytes.

Serialisation (``encode_digest``/``decode_digest``) is a version byte followed by ``marshal`` of
plain tuples: compact, fast, and unlike pickle it cannot execute code.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import marshal
import re
from calendar import timegm
from collections.abc import Iterable
from email.utils import parsedate_tz
from typing import NamedTuple

__all__ = [
    "FORMAT_VERSION",
    "MAX_DEPTH",
    "MAX_HEADER_FIELDS",
    "MAX_PARTS",
    "Address",
    "Digest",
    "DigestFormatError",
    "Envelope",
    "Params",
    "Part",
    "UnknownTransferEncoding",
    "base_subject",
    "charset_keeps_ascii",
    "decode_charset",
    "decode_digest",
    "decode_header_value",
    "decode_transfer_encoding",
    "digest",
    "encode_digest",
    "parse_address_list",
    "field_pattern",
    "find_fields",
    "is_reply_or_forward",
    "normalize_crlf",
    "normalize_msg_id",
    "normalize_msg_ids",
    "parse_header_block",
    "unfold",
    "without_line_breaks",
]

FORMAT_VERSION = 1
MAX_DEPTH = 50  # MIME nesting (multipart children and message/rfc822 bodies) before parts go opaque
MAX_PARTS = 5000  # parts in one message before the remainder goes opaque
_MAX_DECODED_HEADER = 64 * 1024  # a decoded search/sort header value is cut here (SEARCH needs no more)
_MAX_REFERENCES = 1000
_REFERENCES_WINDOW = 1 << 20  # bytes of a References field searched for those, from its end
_FIRST_ID_MAX = 998  # octets of the first id kept before that window (a line's most, RFC 5322)
MAX_HEADER_FIELDS = 10000  # header fields recorded per header block (memory bound)

# (name, adl, mailbox, host) as RFC 3501 ENVELOPE addresses: raw bytes, None for NIL.
# Group start is (None, None, group-name, None); group end is (None, None, None, None).
Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
# Content-Type / Content-Disposition parameters: (name as written, decoded value as UTF-8 bytes).
Params = tuple[tuple[bytes, bytes], ...]


class DigestFormatError(ValueError):
    """``decode_digest`` was given bytes that are not an encoded digest of a known version.
    The store answers this by digesting the body again."""


class Envelope(NamedTuple):
    """ENVELOPE fields: raw header values (unfolded, not decoded) or None when the field is absent.
    Address lists are tuples of ``Address``; None when absent or empty.  ``sender`` and
    ``reply_to`` already default to ``from_`` (RFC 3501 §7.4.2)."""

    date: bytes | None
    subject: bytes | None
    from_: tuple[Address, ...] | None
    sender: tuple[Address, ...] | None
    reply_to: tuple[Address, ...] | None
    to: tuple[Address, ...] | None
    cc: tuple[Address, ...] | None
    bcc: tuple[Address, ...] | None
    in_reply_to: bytes | None
    message_id: bytes | None


class Part(NamedTuple):
    """One MIME entity.  Offsets index the stored message bytes: the header is
    ``[header_start, body_start)`` (blank separator line included), the body
    ``[body_start, body_end)``.  Type strings are as written in the message (compare them with
    ``.lower()``); an absent or unusable Content-Type gives text/plain without parameters (or
    message/rfc822 inside multipart/digest); the renderer adds the implied charset=us-ascii."""

    header_start: int
    body_start: int
    body_end: int
    type: bytes
    subtype: bytes
    params: Params
    id: bytes | None
    description: bytes | None
    encoding: bytes | None  # Content-Transfer-Encoding as written; None means 7BIT
    lines: int  # line feeds in the body, as Dovecot counts (for text/* and message/rfc822)
    md5: bytes | None
    disposition: tuple[bytes, Params] | None
    language: tuple[bytes, ...] | None
    location: bytes | None
    children: tuple[Part, ...] | None  # multipart only (possibly empty); None for every other type
    message: tuple[Envelope, Part] | None  # message/rfc822 (and message/global): embedded envelope, root

    @property
    def size(self) -> int:
        return self.body_end - self.body_start

    @property
    def is_multipart(self) -> bool:
        return self.children is not None

    @property
    def is_message(self) -> bool:
        return self.message is not None

    def param(self, name: bytes) -> bytes | None:
        """A Content-Type parameter by case-insensitive name."""
        name = name.lower()
        return next((value for key, value in self.params if key.lower() == name), None)


class Digest(NamedTuple):
    """Everything FETCH, SEARCH, SORT and THREAD need from a message, computed once."""

    size: int
    root: Part  # the message itself: header_start 0, body_end == size
    envelope: Envelope
    date: int | None  # Date: header as a UTC unix timestamp; None when absent or unparsable
    subject: str  # decoded (RFC 2047) Subject, "" when absent
    base_subject: str  # RFC 5256 §2.1 base subject (not case-folded)
    from_: str  # decoded From/To/Cc/Bcc header values, "" when absent (SEARCH FROM/TO/CC/BCC),
    # then the addr-specs the values do not show as the ENVELOPE has them (_address_search_text)
    to: str
    cc: str
    bcc: str
    sort_from: str  # addr-mailbox of the first From/To/Cc address, "" if none (RFC 5256 SORT)
    sort_to: str
    sort_cc: str
    display_from: str  # RFC 5957 DISPLAYFROM/DISPLAYTO: decoded display name, else mailbox@host
    display_to: str
    # msg-ids without angle brackets (and the blanks within them), quoting kept (normalize_msg_id)
    message_id: str | None  # of Message-ID
    in_reply_to: str | None  # the first of In-Reply-To
    references: tuple[str, ...]  # of References, in order
    # Whether the message holds a NUL byte, which a literal may not carry (FETCH then sends 0x80
    # in its place, and cannot hand the file's bytes to the kernel as they are). None in digests
    # stored before this field existed: look at the bytes.
    contains_nul: bool | None = None


# ---------------------------------------------------------------------------------------------
# Header blocks


_CONTINUATION_RUN_END = re.compile(rb"\n(?![ \t])")  # the line break after which no continuation follows


def normalize_crlf(data: bytes) -> bytes:
    """Turn bare LF line ends into CRLF; CRLF and lone CR are left as they are.

    Internet messages end lines with CRLF (RFC 5322 2.1) and IMAP serves them so: a message
    that arrives with bare LF (a script's APPEND, an MTA passing LF through LMTP, a Maildir
    file) is stored converted, as Dovecot serves it, so FETCH, RFC822.SIZE and the byte ranges
    of every part agree with what clients expect. Both passes are C loops: undoing every CRLF
    and then making every LF a CRLF leaves CRLF and lone CR (also CR CR LF) as they were."""
    lf = data.count(b"\n")
    if lf == 0 or lf == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def without_line_breaks(raw: bytes) -> bytes:
    """``raw`` without its line breaks (CRLF or LF; a lone CR stays). Two C passes that copy once
    each: a regex substitution over a value folded millions of times built a piece per line
    (3.7 s and 1.7 GB for a 30 MB field, holding the interpreter lock)."""
    return raw.replace(b"\r\n", b"").replace(b"\n", b"")


def unfold(raw: bytes) -> bytes:
    """An unfolded header value: line breaks removed, surrounding blanks stripped, NUL bytes
    replaced by 0x80 (as Dovecot does: a NUL cannot travel in an IMAP string)."""
    value = without_line_breaks(raw).strip(b" \t\r")
    if b"\x00" in value:
        value = value.replace(b"\x00", b"\x80")
    return value


def parse_header_block(
    data: bytes, start: int, end: int, max_fields: int = MAX_HEADER_FIELDS
) -> tuple[list[tuple[bytes, int, int, int]], int]:
    """Split the header starting at ``start`` into fields.

    Returns ``([(lowercased name, field start, value start, field end), ...], body_start)``.  A
    field spans from its name to the end of its last continuation line (line break included);
    its raw value is ``data[value start:field end]``.  The header ends after the first empty line;
    without one, everything up to ``end`` is header and the body is empty.  A line without a colon
    is kept inside the header but yields no field (RFC 5322 has no such line; mbox "From " lines).
    Fields after the first ``max_fields`` are skipped (memory bound), the header end is still found.
    """
    fields: list[tuple[bytes, int, int, int]] = []
    pos = start
    find = data.find
    extends_last = False  # whether a continuation line belongs to fields[-1]
    while pos < end:
        nl = find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        first = data[pos : pos + 1]
        if first == b"\n" or (first == b"\r" and data[pos + 1 : pos + 2] == b"\n" and pos + 1 < end):
            return fields, line_end
        if first in (b" ", b"\t"):
            # All the continuation lines in a row at once: a field folded over millions of
            # lines cost one Python iteration each.
            run_end = _CONTINUATION_RUN_END.search(data, pos, end)
            line_end = end if run_end is None else run_end.end()
            if extends_last:
                name, field_start, value_start, _ = fields[-1]
                fields[-1] = (name, field_start, value_start, line_end)
        else:
            colon = find(b":", pos, line_end)
            extends_last = colon > pos and len(fields) < max_fields
            if extends_last:
                name = data[pos:colon].rstrip(b" \t").lower()
                fields.append((name, pos, colon + 1, line_end))
        pos = line_end
    return fields, end


# A field name field_pattern can find: printable ASCII without colon or space (RFC 5322 ftext),
# so that bytes.lower() (parse_header_block's names) and the pattern's case folding agree.
_PLAIN_FIELD_NAME = re.compile(rb"[!-9;-~]+")


def field_pattern(names: tuple[bytes, ...]) -> re.Pattern[bytes] | None:
    """A pattern finding the fields named ``names`` (lowercase) in ``b"\\n" + header block``,
    each as parse_header_block delimits it: one regular-expression scan in C instead of a Python
    walk over the lines, for the few names a FETCH HEADER.FIELDS or a SEARCH HEADER asks for.
    Groups: 1 the field from its name to the end of its last continuation line, 2 its raw value
    (after the colon), both without the final line break, which is group 3 ("\\n", or "" at
    the end of the block; a lookahead, so that the next field's line start stays unconsumed).
    The leading newline stands for the start of a line and gives the scan a literal to look for
    (a ``^`` pattern is tried at every byte, two to three times slower). None when a name is not
    plain (see _PLAIN_FIELD_NAME). Run it with find_fields."""
    return _field_pattern(tuple(sorted(set(names))))


def find_fields(pattern: re.Pattern[bytes], block: bytes) -> list[tuple[bytes, bytes, bytes]] | None:
    """(field, raw value, final line break) of each field ``pattern`` (from field_pattern) finds
    in the header ``block``, in order; None for a block of MAX_HEADER_FIELDS lines or more, whose
    fields beyond those parse_header_block ignores (walk them with it instead)."""
    if block.count(b"\n") >= MAX_HEADER_FIELDS:
        return None
    return pattern.findall(b"\n" + block)


@functools.lru_cache(maxsize=256)
def _field_pattern(names: tuple[bytes, ...]) -> re.Pattern[bytes] | None:
    if not names or not all(_PLAIN_FIELD_NAME.fullmatch(name) for name in names):
        return None
    alternatives = b"|".join(re.escape(name) for name in names)
    # line start, name (any case), blanks, colon; the rest of the line and its continuation lines
    return re.compile(rb"\n((?:" + alternatives + rb")[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*))(?=(\n?))",
                      re.IGNORECASE)


def _header_values(data: bytes, fields: list[tuple[bytes, int, int, int]]) -> dict[bytes, bytes]:
    """First occurrence of each field name -> unfolded raw value."""
    values: dict[bytes, bytes] = {}
    for name, _fstart, vstart, fend in fields:
        if name not in values:
            values[name] = unfold(data[vstart:fend])
    return values


# ---------------------------------------------------------------------------------------------
# Charsets and RFC 2047


_charset_cache: dict[str, str | None] = {}
_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "x-sjis": "shift_jis",
    "gb2312": "gb18030",  # mailers label GBK/GB18030 text as gb2312; gb18030 is a superset
    "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
}


def _codec_name(charset: str) -> str | None:
    """A Python text codec for a MIME charset label, or None when unknown or not a text codec."""
    key = charset.strip().strip('"').lower()
    cached = _charset_cache.get(key)
    if cached is not None or key in _charset_cache:
        return cached
    name: str | None = _CHARSET_ALIASES.get(key, key)
    try:
        info = codecs.lookup(name or "")
        if not getattr(info, "_is_text_encoding", True):
            name = None
        else:
            name = info.name
    except (LookupError, ValueError, TypeError):
        name = None
    if len(_charset_cache) < 512:
        _charset_cache[key] = name
    return name


_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(text: str) -> str:
    """Some codecs (UTF-7, for one) can produce lone surrogates, which no UTF-8 encoder accepts;
    they become U+FFFD so every decoded string can be encoded again."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


# Labels under which real mail often carries UTF-8 (or windows-1252 mislabelled as latin-1):
# for these, valid UTF-8 is taken as UTF-8 and anything else as windows-1252.
_UTF8_FIRST = frozenset(("utf-8", "ascii", "iso8859-1", "cp1252"))


def charset_keeps_ascii(charset: str | bytes | None) -> bool:
    """True when :func:`decode_charset` turns ASCII-only bytes in ``charset`` into the same
    characters (no charset, an unknown one, or one of the UTF-8-first family), so a search can
    look at such bytes without decoding them."""
    if isinstance(charset, bytes):
        charset = charset.decode("latin-1")
    codec = _codec_name(charset) if charset else None
    return codec is None or codec in _UTF8_FIRST


def decode_charset(raw: bytes, charset: str | bytes | None) -> str:
    """Bytes in a MIME charset to str; invalid bytes are replaced.  An unknown or missing charset
    (or us-ascii/latin-1/windows-1252) means UTF-8 when the bytes are valid UTF-8, else
    windows-1252 (a superset of latin-1).  The result is always encodable as UTF-8."""
    if isinstance(charset, bytes):
        charset = charset.decode("latin-1")
    codec = _codec_name(charset) if charset else None
    if codec is not None and codec not in _UTF8_FIRST:
        try:
            return _no_surrogates(raw.decode(codec, "replace"))
        except Exception:  # noqa: BLE001 - some codecs (idna...) raise despite "replace"
            codec = None
    if raw.isascii():
        return raw.decode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec == "utf-8":
        return raw.decode("utf-8", "replace")
    return raw.decode("cp1252", "replace")


def _text_of_raw_header(raw: bytes) -> str:
    """Undecoded header bytes to str: UTF-8 (RFC 6532), else latin-1 (cp1252)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?]*?)\?=")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _decode_word_payload(encoding: bytes, payload: bytes) -> bytes:
    if encoding in (b"b", b"B"):
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", payload)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        try:
            return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
        except (binascii.Error, ValueError):
            return b""
    return _QP_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), payload.replace(b"_", b" "))


def decode_header_value(raw: bytes) -> str:
    """RFC 2047 decoding of an (unfolded) header value to str.  Encoded words in any charset;
    whitespace between adjacent encoded words dropped; consecutive words in the same charset are
    joined before decoding (a multi-byte character may straddle two words); text outside encoded
    words is UTF-8 or latin-1.  Tabs become spaces.  Never raises."""
    raw = raw[:_MAX_DECODED_HEADER]
    if b"=?" not in raw:
        text = _text_of_raw_header(raw)
        return text.replace("\t", " ") if "\t" in text else text
    out: list[str] = []
    pending_charset: bytes | None = None
    pending: list[bytes] = []
    pos = 0
    after_word = False

    def flush() -> None:
        nonlocal pending_charset
        if pending:
            charset = (pending_charset or b"").split(b"*", 1)[0]
            out.append(decode_charset(b"".join(pending), charset))
            pending.clear()
        pending_charset = None

    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos : match.start()]
        if between and not (after_word and not between.strip(b" \t")):
            flush()
            out.append(_text_of_raw_header(between))
        charset = match.group(1).lower()
        if pending and charset != pending_charset:
            flush()
        pending_charset = charset
        pending.append(_decode_word_payload(match.group(2), match.group(3)))
        pos = match.end()
        after_word = True
    flush()
    if pos < len(raw):
        out.append(_text_of_raw_header(raw[pos:]))
    return "".join(out).replace("\t", " ")


# ---------------------------------------------------------------------------------------------
# Content-* fields (RFC 2045, RFC 2183, RFC 2231)


_MIME_TOKEN = re.compile(rb"[^\x00-\x20\x7f()<>@,;:\\\"/\[\]?=]+")
_WSP = b" \t\r\n"


def _skip_cfws(value: bytes, pos: int) -> int:
    """Skip blanks and (nested) comments."""
    n = len(value)
    while pos < n:
        c = value[pos]
        if c in _WSP:
            pos += 1
        elif c == 0x28:  # "("
            pos = _comment_end(value, pos)
        else:
            break
    return pos


def _comment_end(value: bytes, pos: int) -> int:
    """``value[pos]`` opens a comment: the position after its closing parenthesis (nested ones
    and backslash-quoted bytes inside count), or the end for an unterminated comment."""
    depth = 0
    n = len(value)
    while pos < n:
        c = value[pos]
        if c == 0x5C:  # backslash quotes the next byte
            pos += 2
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return n


def _read_quoted(value: bytes, pos: int) -> tuple[bytes, int]:
    """``value[pos]`` is a DQUOTE: the unescaped content and the position after the closing quote
    (or the end, for an unterminated string)."""
    out = bytearray()
    pos += 1
    n = len(value)
    while pos < n:
        c = value[pos]
        if c == 0x5C and pos + 1 < n:
            out.append(value[pos + 1])
            pos += 2
        elif c == 0x22:
            return bytes(out), pos + 1
        else:
            out.append(c)
            pos += 1
    return bytes(out), pos


def _read_token(value: bytes, pos: int) -> tuple[bytes, int]:
    match = _MIME_TOKEN.match(value, pos)
    if match is None:
        return b"", pos
    return match.group(), match.end()


def _parse_raw_params(value: bytes, pos: int) -> list[tuple[bytes, bytes]]:
    """``; name=value`` pairs from ``pos``: names as written, quoted values unescaped.  Lenient:
    garbage up to the next semicolon is skipped; an unquoted value may contain blanks."""
    params: list[tuple[bytes, bytes]] = []
    n = len(value)
    eq = -1
    while pos < n and len(params) < 256:
        pos = _skip_cfws(value, pos)
        if pos >= n:
            break
        if value[pos] != 0x3B:  # ";"
            semi = value.find(b";", pos)
            if semi < 0:
                break
            pos = semi
        pos = _skip_cfws(value, pos + 1)
        if eq < pos:  # the next "=" is looked for again only once passed (";;;...;" stays linear)
            eq = value.find(b"=", pos)
            if eq < 0:
                break  # no "=" left: no parameter either
        semi = value.find(b";", pos)
        if 0 <= semi < eq:
            continue
        name = value[pos:eq].strip(b" \t")
        pos = _skip_cfws(value, eq + 1)
        if pos < n and value[pos] == 0x22:
            param_value, pos = _read_quoted(value, pos)
        else:
            token, after = _read_token(value, pos)
            after = _skip_cfws(value, after)
            if token and (after >= n or value[after] == 0x3B):
                param_value, pos = token, after  # a proper token, maybe followed by a comment
            else:  # not a token (blanks, "=", "/"...): take the raw text up to the semicolon
                semi = value.find(b";", pos)
                stop = n if semi < 0 else semi
                param_value = value[pos:stop].strip(b" \t")
                pos = stop
        if name and _MIME_TOKEN.fullmatch(name.rstrip(b"*")) is not None:
            params.append((name, param_value))
    return params


_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_RFC2231_NAME = re.compile(rb"(.+?)\*(?:(\d{1,3})(\*)?|)\Z")


def _to_utf8(raw: bytes, charset: bytes | None) -> bytes:
    if charset:
        return decode_charset(raw, charset).encode("utf-8")
    try:
        raw.decode("utf-8")
        return raw
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace").encode("utf-8")


def _decode_params(raw_params: list[tuple[bytes, bytes]]) -> Params:
    """Merge RFC 2231 continuations (``name*0*=``, ``name*1=``...) and decode extended values
    (``charset'lang'%XX``) to UTF-8.  Names keep the spelling of their first appearance (Dovecot
    does too) and are matched case-insensitively.  An extended parameter wins over a plain one of
    the same name; otherwise the first occurrence wins.  Order of first appearance is kept."""
    order: list[bytes] = []  # lowercased names in order of first appearance
    spelling: dict[bytes, bytes] = {}
    plain: dict[bytes, bytes] = {}
    extended: dict[bytes, dict[int, tuple[bytes, bool]]] = {}
    for name, value in raw_params:
        match = _RFC2231_NAME.match(name) if b"*" in name else None
        base = name if match is None else match.group(1)
        key = base.lower()
        if key not in spelling:
            spelling[key] = base
            order.append(key)
        if match is None:
            plain.setdefault(key, value)
            continue
        number, star = match.group(2), match.group(3)
        if number is None:  # "name*=" : one extended value
            index, encoded = 0, True
        else:
            index, encoded = int(number), star is not None
        extended.setdefault(key, {}).setdefault(index, (value, encoded))
    result: list[tuple[bytes, bytes]] = []
    for key in order:
        sections = extended.get(key)
        if not sections or 0 not in sections:
            if key in plain:
                result.append((spelling[key], _to_utf8(plain[key], None)))
            continue
        charset: bytes | None = None
        chunks: list[bytes] = []
        for index in range(len(sections)):  # continuations stop at the first missing number
            if index not in sections:
                break
            value, encoded = sections[index]
            if encoded:
                if index == 0:
                    pieces = value.split(b"'", 2)
                    if len(pieces) == 3:
                        charset = pieces[0] or None
                        value = pieces[2]
                value = _PERCENT.sub(lambda m: bytes((int(m.group(1), 16),)), value)
            chunks.append(value)
        result.append((spelling[key], _to_utf8(b"".join(chunks), charset)))
    return tuple(result)


def _parse_content_type(value: bytes | None) -> tuple[bytes, bytes, Params] | None:
    if value is None:
        return None
    pos = _skip_cfws(value, 0)
    ctype, pos = _read_token(value, pos)
    pos = _skip_cfws(value, pos)
    if not ctype or value[pos : pos + 1] != b"/":
        return None
    pos = _skip_cfws(value, pos + 1)
    subtype, pos = _read_token(value, pos)
    if not subtype:
        return None
    return ctype, subtype, _decode_params(_parse_raw_params(value, pos))


def _parse_disposition(value: bytes | None) -> tuple[bytes, Params] | None:
    if value is None:
        return None
    pos = _skip_cfws(value, 0)
    kind, pos = _read_token(value, pos)
    if not kind:
        return None
    return kind, _decode_params(_parse_raw_params(value, pos))


def _parse_language(value: bytes | None) -> tuple[bytes, ...] | None:
    if value is None:
        return None
    tags: list[bytes] = []
    for item in value.split(b","):
        tag, _ = _read_token(item, _skip_cfws(item, 0))
        if tag:
            tags.append(tag)
    return tuple(tags[:64]) or None


def _parse_encoding(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    token, _ = _read_token(value, _skip_cfws(value, 0))
    return token or None


def _location(value: bytes | None) -> bytes | None:
    # RFC 2557 §4.4.1: a folded URI is unfolded by removing the whitespace as well
    return None if value is None else re.sub(rb"[ \t]+", b"", value)


# ---------------------------------------------------------------------------------------------
# Addresses (RFC 5322 §3.4, with the obsolete forms real mail still carries)


_ADDR_SPECIALS = b"()<>[]:;@\\,\""


def _address_tokens(value: bytes) -> list[tuple[int, bytes]]:
    """Tokens of an address header: (kind, text) with kind 0 atom, 1 quoted string (unescaped),
    2 comment (outer parentheses removed), 3 domain literal (brackets kept), 4 special byte."""
    tokens: list[tuple[int, bytes]] = []
    pos, n = 0, len(value)
    while pos < n and len(tokens) < 10000:
        c = value[pos]
        if c in _WSP:
            pos += 1
        elif c == 0x22:
            text, pos = _read_quoted(value, pos)
            tokens.append((1, text))
        elif c == 0x28:
            end = _comment_end(value, pos)
            inner = value[pos + 1 : end - 1] if value[end - 1 : end] == b")" else value[pos + 1 : end]
            tokens.append((2, _QUOTED_PAIR.sub(rb"\1", inner).strip()))
            pos = end
        elif c == 0x5B:
            close = value.find(b"]", pos)
            end = n if close < 0 else close + 1
            tokens.append((3, value[pos:end]))
            pos = end
        elif c in b"<>:;@,":
            tokens.append((4, value[pos : pos + 1]))
            pos += 1
        else:
            start = pos
            while pos < n and value[pos] not in _WSP and value[pos] not in _ADDR_SPECIALS:
                pos += 1
            if pos == start:  # a stray backslash or bracket: keep it as an atom
                pos += 1
            tokens.append((0, value[start:pos]))
    return tokens


_QUOTED_PAIR = re.compile(rb"\\(.)", re.DOTALL)
_MISSING_MAILBOX = b"MISSING_MAILBOX"
_MISSING_DOMAIN = b"MISSING_DOMAIN"


def _join_words(words: list[tuple[int, bytes]]) -> bytes | None:
    """A phrase (display name or group name): words joined by one space, quoting removed. An
    unquoted "@" (invalid, but broken mailers write `From: a@b.test <a@b.test>`) stays, joined to
    the words beside it, so that the name reads as written, not as "a b.test"."""
    texts: list[bytes] = []
    glued = False  # the next word continues the last text (it follows an "@")
    for kind, text in words:
        if kind == 4 and text == b"@":
            if texts:
                texts[-1] += b"@"
            else:
                texts.append(b"@")
            glued = True
        elif kind in (0, 1, 3):
            if glued:
                texts[-1] += text
            else:
                texts.append(text)
            glued = False
    return b" ".join(texts) if texts else None


def _local_and_domain(tokens: list[tuple[int, bytes]]) -> tuple[bytes, bytes, bytes | None]:
    """An addr-spec's tokens -> (local part, domain, last comment); like Dovecot, the last
    comment stands in for the display name of a bare addr-spec."""
    comment = next((text for kind, text in reversed(tokens) if kind == 2), None)
    at = next((i for i, (kind, text) in enumerate(tokens) if kind == 4 and text == b"@"), None)
    local_tokens = tokens if at is None else tokens[:at]
    domain_tokens = [] if at is None else tokens[at + 1 :]
    local = _dotted_words(text for kind, text in local_tokens if kind in (0, 1, 3))
    domain = _dotted_words(text for kind, text in domain_tokens if kind in (0, 1, 3, 4) and text != b"@")
    return local, domain, comment


def _dotted_words(words: Iterable[bytes]) -> bytes:
    """A local part's or a domain's words put together. RFC 5322 section 4.4: obs-local-part =
    word *("." word) and obs-domain = atom *("." atom), with CFWS around each word, so the blanks
    and comments around a dot go ("a . b" is "a.b"). Two words with no dot between them make
    neither: they stay apart by a space as written (what the sender meant may be the quoted
    "a b"@x, or a typo), where running them together would make a mailbox "ab" or a host "xtest"
    that is nowhere in the message, and a reply would go there. A domain literal ("[192.0.2.1]",
    "[IPv6:2001:db8::1]", section 3.4.1) is one word, kept as written. (Dovecot stops at the
    second word and gives the domain as SYNTAX_ERROR, losing it.)"""
    joined = b""
    for word in words:
        if joined and not joined.endswith(b".") and not word.startswith(b"."):
            joined += b" "
        joined += word
    return joined


def _is_bare_phrase(tokens: list[tuple[int, bytes]]) -> bool:
    """Whether an address's tokens, with no angle brackets, are words with no "@": several words
    (a local part is one dot-atom or quoted string), or one quoted string holding a space."""
    if any(kind == 4 and text == b"@" for kind, text in tokens):
        return False
    words = [(kind, text) for kind, text in tokens if kind in (0, 1)]
    if len(words) > 1:
        return True
    return len(words) == 1 and words[0][0] == 1 and any(c in _WSP for c in words[0][1])


def parse_address_list(value: bytes | None) -> tuple[Address, ...] | None:
    """An address-list header value -> ENVELOPE addresses (None when there is no address).
    Display names keep RFC 2047 encoded words (IMAP wants them undecoded); a comment stands in
    for a missing display name; missing local part or domain become MISSING_MAILBOX /
    MISSING_DOMAIN (as Dovecot: a NIL host would read as group syntax)."""
    if not value:
        return None
    tokens = _address_tokens(value)
    result: list[Address] = []
    in_group = False
    i, n = 0, len(tokens)
    while i < n and len(result) < 5000:
        start = i
        while i < n and not (tokens[i][0] == 4 and tokens[i][1] in (b"<", b":", b",", b";")):
            i += 1
        stop = tokens[i][1] if i < n else b""
        phrase = tokens[start:i]
        if stop == b":" and not in_group:
            result.append((None, None, _join_words(phrase) or b"", None))
            in_group = True
            i += 1
            continue
        if stop == b"<":
            close = i + 1
            while close < n and not (tokens[close][0] == 4 and tokens[close][1] == b">"):
                close += 1
            inner = tokens[i + 1 : close]
            adl: bytes | None = None
            colon = next((k for k, (kind, text) in enumerate(inner) if kind == 4 and text == b":"), None)
            if colon is not None:  # obsolete source route: <@a,@b:user@host>
                adl = b"".join(text for kind, text in inner[:colon] if kind != 2) or None
                inner = inner[colon + 1 :]
            local, domain, _ = _local_and_domain(inner)
            name = _join_words(phrase)
            if name is None:
                after = tokens[close + 1 : close + 2]
                if after and after[0][0] == 2:
                    name = after[0][1] or None
            result.append((name, adl, local or _MISSING_MAILBOX, domain or _MISSING_DOMAIN))
            i = close + 1
            while i < n and not (tokens[i][0] == 4 and tokens[i][1] in (b",", b";")):
                i += 1
            continue
        if phrase and any(kind != 2 for kind, _ in phrase):
            if _is_bare_phrase(phrase):
                # "Cc: invalid address without at": a name without its address, as Dovecot reads
                # it, not the words run together into a mailbox name that is nowhere in the message.
                result.append((_join_words(phrase), None, _MISSING_MAILBOX, _MISSING_DOMAIN))
            else:
                local, domain, comment = _local_and_domain(phrase)
                result.append((comment or None, None, local or _MISSING_MAILBOX, domain or _MISSING_DOMAIN))
        if stop == b";" and in_group:
            result.append((None, None, None, None))
            in_group = False
        i += 1
    if in_group:
        result.append((None, None, None, None))
    return tuple(result) or None


# ---------------------------------------------------------------------------------------------
# Sort and thread keys (RFC 5256, RFC 5957)


_WSP_RUN = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[^\[\]]*\] ?"
# subj-leader (RFC 5256 §5): *subj-blob subj-refwd, or blanks; whitespace is already collapsed
# The blobs before "re"/"fwd" are bounded: unbounded, each failed attempt rescanned every blob
# of the rest ("[x] " * 200,000 took 12 s at delivery). More blobs than that are taken off one
# at a time by the loop in _base_subject, so the base subject is the same.
_LEADER = re.compile(r"(?:" + _BLOB + r"){0,16}(?:re|fwd?) ?(?:" + _BLOB + r")?:| +", re.IGNORECASE)
_LEADING_BLOB = re.compile(_BLOB)


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1 base subject of a decoded subject (not case-folded)."""
    return _base_subject(subject)[0]


def is_reply_or_forward(subject: str) -> bool:
    """Whether extracting the base subject (RFC 5256 section 2.1) removes a subj-refwd leader
    ("Re:", "Fwd:", "Fw:", with blobs), a "(fwd)" trailer or a "[fwd: ...]" wrapper: what the
    REFERENCES algorithm calls "a reply or forward". ``subject`` is the decoded Subject."""
    lowered = subject.lower()
    if "re" not in lowered and "fw" not in lowered:
        return False  # the common case, decided without the regular expressions
    return _base_subject(subject)[1]


def _base_subject(subject: str) -> tuple[str, bool]:
    """(base subject, whether a reply or forward marker was removed on the way). The text is
    narrowed by moving its two ends, and cut once at the end: cutting it at every step copied
    the rest each time ("(fwd)" * 400,000 took 9 s, nested "[fwd: ...]" 25 s)."""
    text = _WSP_RUN.sub(" ", subject)  # step 1 (decoding was done by the caller)
    marked = False
    start, end = 0, len(text)
    while True:
        while True:  # step 2: trailing "(fwd)" and blanks
            while end > start and text[end - 1] == " ":
                end -= 1
            if end - start < 5 or text[end - 5 : end].lower() != "(fwd)":
                break
            end -= 5
            marked = True
        pos = start
        while True:  # steps 3-5: leading subj-leaders, and a blob unless it is all there is
            before = pos
            match = _LEADER.match(text, pos, end)
            while match is not None and match.end() > pos:
                marked = marked or not match.group().isspace()  # a subj-refwd, not blanks alone
                pos = match.end()
                match = _LEADER.match(text, pos, end)
            blob = _LEADING_BLOB.match(text, pos, end)
            if blob is not None and blob.end() < end:
                pos = blob.end()
            if pos == before:
                break
        start = pos
        # step 6: a "[fwd: ... ]" wrapper goes, and everything starts again
        if end - start >= 6 and text[start : start + 5].lower() == "[fwd:" and text[end - 1] == "]":
            start += 5
            end -= 1
            marked = True
            continue
        return text[start:end], marked


# A msg-id: what stands between angle brackets, blanks around it left out (< a@b > is a@b). The
# id itself begins with a non-blank, so a long run of blanks is scanned once, not tried two ways.
# A quoted-string in it is taken whole, blanks and ">" included: the obsolete id-left is a
# local-part (RFC 5322 3.6.4), so <"a b"@x> is an id. Nothing in an id, quoted or not, may be a
# "<": an attempt from one "<" then stops at the next, and the field is scanned once (quoted
# strings running over "<" let every attempt run to the end: 20 KB of '"\"<' took 13 s).
_MSG_ID = re.compile(rb'<\s*((?:"(?:[^"\\<]|\\[^<])*"|[^<>\s"])+)\s*>')
_ID_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ID_QUOTED_PAIR = re.compile(r"\\(.)")


def _unquoted(match: re.Match[str]) -> str:
    return _ID_QUOTED_PAIR.sub(r"\1", match.group(1))


def normalize_msg_id(msg_id: str) -> str:
    """A msg-id as threading compares it: a quoted-string in it (the obsolete quoted id-left)
    unquoted, quotes and backslashes gone, so that "01KF8JCEOCBS0045PS"@xxx.yyy.com and
    01KF8JCEOCBS0045PS@xxx.yyy.com are one Message ID, as RFC 5256 requires. The digest keeps
    ids as written; their users (midb.sortindex, midb.objectids) normalise them, which serves
    bodies parsed before as well."""
    return _ID_QUOTED_STRING.sub(_unquoted, msg_id) if '"' in msg_id else msg_id


def normalize_msg_ids(msg_ids: tuple[str, ...]) -> tuple[str, ...]:
    """normalize_msg_id of each of ``msg_ids``; the tuple itself when none has a quote."""
    return tuple(map(normalize_msg_id, msg_ids)) if '"' in "".join(msg_ids) else msg_ids


def _first_msg_id(value: bytes | None) -> str | None:
    """The first msg-id of ``value``, without its angle brackets; None when it has none: free
    text ("Your message of Mon, 1 Jan 2008", an In-Reply-To some mailers write) names no
    message, and RFC 5256 gives such a message no Message ID or parent."""
    match = _MSG_ID.search(value) if value is not None else None
    return _text_of_raw_header(match.group(1)) if match is not None else None


def _msg_ids(value: bytes | None) -> tuple[str, ...]:
    """The msg-ids of ``value``, at most _MAX_REFERENCES: of a longer list the first (the
    thread's first message, which midb.objectids names a thread by) and the last ones, read from
    the last _REFERENCES_WINDOW bytes: a References field of millions of ids (a message can
    carry one within its size limit) would otherwise cost seconds and ten times its size in
    memory. A cut id at the window's start has lost its "<" and matches nothing."""
    if value is None:
        return ()
    window_start = max(0, len(value) - _REFERENCES_WINDOW)
    found = _MSG_ID.findall(value, window_start)
    if len(found) <= _MAX_REFERENCES and window_start == 0:
        return tuple(map(_text_of_raw_header, found))
    first = _MSG_ID.search(value)
    head = ([first.group(1)] if first is not None and len(first.group(1)) <= _FIRST_ID_MAX
            and first.start() < window_start else [])
    if not head and found:   # the first id is in the window: it is found[0]
        head, found = found[:1], found[1:]
    return tuple(map(_text_of_raw_header, head + found[-(_MAX_REFERENCES - len(head)):]))


def _first_mailbox(addresses: tuple[Address, ...] | None) -> Address | None:
    for address in addresses or ():
        if address[3] is not None:  # skip group markers
            return address
    return None


def _address_search_text(value: bytes | None, addresses: tuple[Address, ...] | None) -> str:
    """What SEARCH FROM/TO/CC/BCC look in: the decoded field, then each address's addr-spec as
    the ENVELOPE has it where the field does not show it so. RFC 3501 section 6.4.4 searches
    the envelope structure's field: ``<user (comment)@ domain.org>`` or ``"user"@domain.org``
    must be found by ``user@domain.org``. The field itself stays: display names are found
    decoded (the envelope keeps them encoded)."""
    text = decode_header_value(value or b"")
    missing = []
    for _name, _route, mailbox, host in addresses or ():
        if mailbox is None or host is None or mailbox == _MISSING_MAILBOX or host == _MISSING_DOMAIN:
            continue  # group syntax, or a part the field lacks
        spec = _text_of_raw_header(mailbox + b"@" + host)
        if spec not in text:
            missing.append(spec)
    # Each on a line of its own: a search string spans two of them only if it holds a line break.
    return "\n".join([text, *missing]) if missing else text


def _sort_mailbox(addresses: tuple[Address, ...] | None) -> str:
    address = _first_mailbox(addresses)
    return _text_of_raw_header(address[2] or b"") if address else ""


def _display(addresses: tuple[Address, ...] | None) -> str:
    address = _first_mailbox(addresses)
    if address is None:
        return ""
    if address[0]:
        name = decode_header_value(address[0]).strip()
        if name:
            return name
    return _text_of_raw_header((address[2] or b"") + b"@" + (address[3] or b""))


def _parse_date(value: bytes | None) -> int | None:
    if not value:
        return None
    try:
        parsed = parsedate_tz(value[:256].decode("latin-1"))
        if parsed is None:
            return None
        year, month, day, hour, minute, second = parsed[:6]
        if not (1 <= month <= 12 and 1 <= day <= 31 and 0 <= hour <= 24 and 0 <= minute <= 60):
            return None
        if not 1 <= year <= 9999:
            return None
        stamp = timegm((year, month, day, hour, minute, min(second, 60), 0, 1, 0))
        return stamp - (parsed[9] or 0)
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# The parser


_IDENTITY_ENCODINGS = (b"7bit", b"8bit", b"binary")


def _count_lines(data: bytes, start: int, end: int) -> int:
    """body-fld-lines: the line feeds in the body, as Dovecot counts them.  Inside a multipart the
    line break before a delimiter belongs to the delimiter, so it is not counted."""
    return data.count(b"\n", start, end)


class _Budget:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts = 0


def _envelope(values: dict[bytes, bytes]) -> Envelope:
    get = values.get
    from_ = parse_address_list(get(b"from"))
    sender = parse_address_list(get(b"sender")) or from_
    reply_to = parse_address_list(get(b"reply-to")) or from_
    return Envelope(
        get(b"date"),
        get(b"subject"),
        from_,
        sender,
        reply_to,
        parse_address_list(get(b"to")),
        parse_address_list(get(b"cc")),
        parse_address_list(get(b"bcc")),
        get(b"in-reply-to"),
        get(b"message-id"),
    )


def _find_delimiters(data: bytes, boundary: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
    """Boundary delimiter lines in ``[start, end)``: (line start, after the line, is closing).
    The line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1); after the
    closing delimiter the rest is epilogue.  A delimiter line starts with "--boundary"; what
    follows may be "--" (closing), blanks, or other junk after a blank (tolerated, as Dovecot
    does), but not another boundary character: "--abc-1" is not a delimiter of boundary "abc"."""
    marker = b"--" + boundary
    found: list[tuple[int, int, bool]] = []
    pos = start
    find = data.find
    limit = MAX_PARTS + 1
    while len(found) < limit:
        hit = find(marker, pos, end)
        if hit < 0:
            break
        pos = hit + len(marker)
        if hit != start and data[hit - 1] != 0x0A:
            continue
        nl = find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        follow = data[pos : pos + 2]
        if follow == b"--":
            found.append((hit, line_end, True))
            break
        if follow[:1] not in (b"", b"\r", b"\n", b" ", b"\t"):
            continue
        found.append((hit, line_end, False))
        pos = line_end
    return found


def _parse_part(
    data: bytes, start: int, end: int, depth: int, budget: _Budget, in_digest: bool
) -> tuple[Part, dict[bytes, bytes]]:
    """Parse the entity in ``[start, end)``: header, then body by type.  Returns the part and its
    header values (first occurrence of each field, unfolded)."""
    budget.parts += 1
    fields, body_start = parse_header_block(data, start, end)
    values = _header_values(data, fields)
    content_type = _parse_content_type(values.get(b"content-type"))
    if content_type is None:
        if in_digest:
            content_type = (b"message", b"rfc822", ())
        else:
            content_type = (b"text", b"plain", ())
    ctype, subtype, params = content_type
    ctype_l, subtype_l = ctype.lower(), subtype.lower()
    encoding = _parse_encoding(values.get(b"content-transfer-encoding"))
    children: tuple[Part, ...] | None = None
    message: tuple[Envelope, Part] | None = None
    lines = 0
    can_nest = depth < MAX_DEPTH and budget.parts < MAX_PARTS

    if ctype_l == b"multipart":
        children = ()
        boundary = next((v for k, v in params if k.lower() == b"boundary"), b"")
        if boundary and can_nest:
            children = _parse_multipart(data, boundary, body_start, end, depth + 1, budget,
                                        subtype_l == b"digest")
    elif (
        ctype_l == b"message"
        and subtype_l in (b"rfc822", b"global")
        and (encoding is None or encoding.lower() in _IDENTITY_ENCODINGS)
        and can_nest
    ):
        inner, inner_values = _parse_part(data, body_start, end, depth + 1, budget, False)
        message = (_envelope(inner_values), inner)
        lines = _count_lines(data, body_start, end)
    elif ctype_l == b"text":
        lines = _count_lines(data, body_start, end)

    part = Part(
        start,
        body_start,
        end,
        ctype,
        subtype,
        params,
        values.get(b"content-id"),
        values.get(b"content-description"),
        encoding,
        lines,
        values.get(b"content-md5"),
        _parse_disposition(values.get(b"content-disposition")),
        _parse_language(values.get(b"content-language")),
        _location(values.get(b"content-location")),
        children,
        message,
    )
    return part, values


def _parse_multipart(
    data: bytes, boundary: bytes, start: int, end: int, depth: int, budget: _Budget, is_digest: bool
) -> tuple[Part, ...]:
    delimiters = _find_delimiters(data, boundary, start, end)
    children: list[Part] = []
    for index, (_line_start, after_line, closing) in enumerate(delimiters):
        if closing:
            break
        if budget.parts >= MAX_PARTS:
            break  # the remaining parts stay opaque inside this multipart's body
        if index + 1 < len(delimiters):
            next_line = delimiters[index + 1][0]
            child_end = next_line - (2 if data[next_line - 2 : next_line] == b"\r\n" else 1)
            child_end = max(child_end, after_line)
        else:
            child_end = end  # no closing delimiter: the last part runs to the end
        child, _ = _parse_part(data, after_line, child_end, depth, budget, is_digest)
        children.append(child)
    return tuple(children)


def digest(data: bytes) -> Digest:
    """The MIME digest of a message.  Never raises for any input bytes."""
    data = bytes(data)
    root, values = _parse_part(data, 0, len(data), 0, _Budget(), False)
    envelope = _envelope(values)
    get = values.get
    subject = decode_header_value(get(b"subject") or b"")
    return Digest(
        len(data),
        root,
        envelope,
        _parse_date(get(b"date")),
        subject,
        base_subject(subject),
        _address_search_text(get(b"from"), envelope.from_),
        _address_search_text(get(b"to"), envelope.to),
        _address_search_text(get(b"cc"), envelope.cc),
        _address_search_text(get(b"bcc"), envelope.bcc),
        _sort_mailbox(envelope.from_),
        _sort_mailbox(envelope.to),
        _sort_mailbox(envelope.cc),
        _display(envelope.from_),
        _display(envelope.to),
        _first_msg_id(get(b"message-id")),
        _first_msg_id(get(b"in-reply-to")),
        _msg_ids(get(b"references")),
        b"\x00" in data,
    )


# ---------------------------------------------------------------------------------------------
# Content-Transfer-Encoding


class UnknownTransferEncoding(ValueError):
    """A Content-Transfer-Encoding that cannot be decoded (IMAP BINARY answers [UNKNOWN-CTE])."""


_BASE64_JUNK = bytes(c for c in range(256) if not (chr(c).isascii() and (chr(c).isalnum() or chr(c) in "+/=")))
# A run of blanks is tried from its first blank only (the lookbehind): tried from every blank of
# a long run not ending a line, the pattern was quadratic (60,000 blanks: 46 s).
_QP_TRAILING_BLANKS = re.compile(rb"(?<![ \t])[ \t]+(?=\r?\n|\Z)")


def decode_transfer_encoding(raw: bytes, encoding: bytes | None) -> bytes:
    """A body decoded from its Content-Transfer-Encoding, leniently (as mail readers do): base64
    ignores characters outside its alphabet and missing padding; quoted-printable leaves broken
    escapes as they are.  7bit/8bit/binary (or none) return ``raw``; anything else raises
    UnknownTransferEncoding."""
    name = (encoding or b"7bit").strip().lower()
    if name in _IDENTITY_ENCODINGS:
        return raw
    if name == b"base64":
        cleaned = raw.translate(None, _BASE64_JUNK).rstrip(b"=")
        if b"=" not in cleaned:
            return _decode_base64_run(cleaned)
        # Padding before the end: some encoders pad every line ("SGVsbG8=\nd29ybGQ="). Padding
        # ends a quantum (RFC 2045 6.8), so each run between paddings is decoded on its own,
        # instead of the bits of everything after it being shifted.
        return b"".join(_decode_base64_run(run) for run in cleaned.split(b"=") if run)
    if name == b"quoted-printable":
        # RFC 2045 6.7 (3): blanks at the end of an encoded line were added in transport and
        # are deleted when decoding (an encoded "=20" is kept).
        return binascii.a2b_qp(_QP_TRAILING_BLANKS.sub(b"", raw))
    raise UnknownTransferEncoding(name.decode("latin-1"))


def _decode_base64_run(run: bytes) -> bytes:
    if len(run) % 4 == 1:  # a stray last character cannot carry a byte
        run = run[:-1]
    try:
        return binascii.a2b_base64(run + b"=" * (-len(run) % 4))
    except binascii.Error:
        return b""


# The header field that marks a part as binary, as a first cheap test (see binary_parts_as_base64).
_BINARY_CTE_HINT = re.compile(rb"content-transfer-encoding[ \t]*:[^\n]*binary", re.IGNORECASE)


def binary_parts_as_base64(data: bytes) -> bytes:
    """``data`` with each leaf part whose Content-Transfer-Encoding is ``binary`` re-encoded as
    base64 (76-character CRLF lines) and its field rewritten to ``base64``; multipart and message
    parts keep theirs (RFC 2045 section 6.4 allows no other encoding for them) and their parts
    are looked into. For messages APPENDed as literal8 (RFC 3516 section 4.4), as Dovecot does:
    a binary part may hold NUL octets and lines of any length, which a BODY[] literal cannot
    carry; base64 brings them through BODY[] unchanged, and BINARY[] still gives the octets.
    Returns ``data`` itself when no part is binary."""
    if _BINARY_CTE_HINT.search(data) is None:
        return data
    data = bytes(data)
    root, _ = _parse_part(data, 0, len(data), 0, _Budget(), False)
    binary_parts: list[Part] = []
    pending = [root]
    while pending:
        part = pending.pop()
        if part.children is not None:
            pending.extend(part.children)
        elif part.message is not None:
            pending.append(part.message[1])
        elif part.encoding is not None and part.encoding.lower() == b"binary" and part.type.lower() != b"message":
            binary_parts.append(part)
    if not binary_parts:
        return data
    pieces: list[bytes] = []
    done = 0
    for part in sorted(binary_parts, key=lambda part: part.header_start):
        fields, _ = parse_header_block(data, part.header_start, part.body_start)
        # the first Content-Transfer-Encoding field, which Part.encoding was read from
        field = next((field for field in fields if field[0] == b"content-transfer-encoding"), None)
        if field is None:
            continue
        _name, field_start, _value_start, field_end = field
        line_break = b"\r\n" if data[field_end - 2 : field_end] == b"\r\n" else b"\n"
        # 76-character lines (RFC 2045 section 6.8), each ending with a line break
        encoded = base64.encodebytes(data[part.body_start : part.body_end]).replace(b"\n", b"\r\n")
        if part.body_end != len(data):
            encoded = encoded[:-2]   # the line break before the next delimiter is the delimiter's
        pieces += [data[done:field_start], b"Content-Transfer-Encoding: base64", line_break,
                   data[field_end : part.body_start], encoded]
        done = part.body_end
    pieces.append(data[done:])
    return b"".join(pieces)


# ---------------------------------------------------------------------------------------------
# Serialisation


def _part_to_tuple(part: Part) -> tuple:
    children = part.children
    message = part.message
    return (
        *part[:14],
        None if children is None else tuple(_part_to_tuple(child) for child in children),
        None if message is None else (tuple(message[0]), _part_to_tuple(message[1])),
    )


def _part_from_tuple(raw: tuple) -> Part:
    children = raw[14]
    message = raw[15]
    # One starred tuple (the same bytecode as *raw[:14] followed by two arguments): mypy cannot
    # count a variable-length star argument followed by more.
    return Part(*(
        *raw[:14],
        None if children is None else tuple(_part_from_tuple(child) for child in children),
        None if message is None else (Envelope(*message[0]), _part_from_tuple(message[1])),
    ))


def encode_digest(d: Digest) -> bytes:
    """Compact bytes for the index: a version byte, then marshal of plain tuples."""
    body = (d.size, _part_to_tuple(d.root), tuple(d.envelope), *d[3:])
    return bytes((FORMAT_VERSION,)) + marshal.dumps(body)


def decode_digest(b: bytes) -> Digest:
    """Inverse of ``encode_digest``; raises DigestFormatError for anything else."""
    if not b or b[0] != FORMAT_VERSION:
        raise DigestFormatError("unknown MIME digest format version")
    try:
        raw = marshal.loads(memoryview(b)[1:])
        return Digest(raw[0], _part_from_tuple(raw[1]), Envelope(*raw[2]), *raw[3:])
    except (EOFError, ValueError, TypeError, IndexError) as exc:
        raise DigestFormatError(f"corrupt MIME digest: {exc}") from exc
