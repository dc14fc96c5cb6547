"""FETCH items rendered from the MIME digest: ENVELOPE, BODY/BODYSTRUCTURE, BODY[section], BINARY.

Everything here works from ``midb.mime.Digest`` (computed once when the message was stored) and a
``data_reader(offset, length) -> bytes`` over the stored message, so only the byte range an answer
needs is read.  Output follows RFC 3501 §7.4.2 / RFC 9051 §7.5.2 and matches what Dovecot sends
for ordinary messages (lowercase strings as written in the message, "us-ascii" charset implied for
text parts, an empty text/plain part standing in for a multipart without parts).

Section resolution (RFC 3501 §6.4.5):
  * part numbers walk multipart children; "1" of a message (the top level, or one embedded in
    message/rfc822) whose body is not multipart is that message's single part, and a leaf part
    has no numbers below it (1.1 of a plain message is nothing); after a message/rfc822 part,
    further numbers continue inside the embedded message. Stricter than Dovecot, which answers
    "N.1" of a leaf inside a multipart with the leaf itself (while 1.1 of a plain message is
    nothing there too): the RFC gives a part 1 only to a message, and clients number parts from
    BODYSTRUCTURE;
  * ``N`` alone is the body of part N (for message/rfc822: the whole embedded message);
    ``N.MIME`` its MIME header; ``N.HEADER``/``N.TEXT``/``N.HEADER.FIELDS`` need a message/rfc822
    part N and address the embedded message;
  * a part or spec that does not exist yields an empty string (not an error), as in Dovecot.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote_from_bytes

from gximap.imap.encode import NIL, number, string
from midb.mime import (
    Address,
    Digest,
    Envelope,
    Params,
    Part,
    UnknownTransferEncoding,
    decode_transfer_encoding,
    field_pattern,
    find_fields,
    parse_header_block,
)

__all__ = [
    "DataReader",
    "UnknownCTE",
    "binary_section",
    "binary_size",
    "bodystructure",
    "envelope",
    "locate",
    "section",
    "section_exists",
    "section_range",
]

DataReader = Callable[[int, int], bytes]

_SPECS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")
# RFC822.HEADER / RFC822.TEXT are the same as BODY.PEEK[HEADER] / BODY[TEXT] (RFC 3501 §6.4.5)
_SPEC_ALIASES = {"RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}


class UnknownCTE(Exception):
    """BINARY of a part whose Content-Transfer-Encoding we cannot decode: the server answers
    ``NO [UNKNOWN-CTE]`` (RFC 3516 §4.3).  ``encoding`` is the offending name."""

    def __init__(self, encoding: str) -> None:
        super().__init__(f"unknown Content-Transfer-Encoding {encoding!r}")
        self.encoding = encoding


# ---------------------------------------------------------------------------------------------
# ENVELOPE


def _utf8_text(value: bytes) -> bytes:
    """With UTF8=ACCEPT every string must be UTF-8 (RFC 9051): raw 8-bit header bytes from
    mailers that sent latin-1 are converted, as a mail reader would display them."""
    try:
        value.decode("utf-8")
        return value
    except UnicodeDecodeError:
        return value.decode("cp1252", "replace").encode("utf-8")


# Printable ASCII without '"' and '\\' (and without CR, LF, NUL): what string() quotes unchanged.
_PLAIN_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]*").fullmatch
_PLAIN_MAX = 256  # well within encode.string's limit for quoted strings


def _ns(value: bytes | None, utf8: bool) -> bytes:
    """nstring of a header-derived value."""
    if value is None:
        return NIL
    if len(value) <= _PLAIN_MAX and _PLAIN_QUOTABLE(value):
        return b'"' + value + b'"'  # the common case, as string() renders it, without its steps
    if utf8 and not value.isascii():
        value = _utf8_text(value)
    return string(value, utf8)


# Rendered address lists by (addresses, utf8). Correspondents repeat across a mailbox (and From,
# Sender and Reply-To are usually one list), so FETCH ENVELOPE over a folder renders each once.
_ADDRESS_CACHE: dict[tuple[tuple[Address, ...], bool], bytes] = {}
_ADDRESS_CACHE_LIMIT = 16384


def _address_list(addresses: tuple[Address, ...] | None, utf8: bool) -> bytes:
    if not addresses:
        return NIL
    key = (addresses, utf8)
    rendered = _ADDRESS_CACHE.get(key)
    if rendered is not None:
        return rendered
    out = [b"("]
    for name, adl, mailbox, host in addresses:
        out.append(b"(" + _ns(name, utf8) + b" " + _ns(adl, utf8) + b" "
                   + _ns(mailbox, utf8) + b" " + _ns(host, utf8) + b")")
    out.append(b")")
    rendered = b"".join(out)
    if len(_ADDRESS_CACHE) >= _ADDRESS_CACHE_LIMIT:
        _ADDRESS_CACHE.clear()  # crude but O(1) per entry; sessions on other threads may race: harmless
    _ADDRESS_CACHE[key] = rendered
    return rendered


def envelope(d: Digest | Envelope, utf8: bool = False) -> bytes:
    """The ENVELOPE list, parentheses included.  Strings are the raw header values (RFC 2047
    words undecoded, as IMAP requires); NIL for absent fields and empty address lists; Sender and
    Reply-To already default to From in the digest.  ``utf8`` (UTF8=ACCEPT enabled) allows 8-bit
    bytes in quoted strings; otherwise they travel as literals."""
    env = d.envelope if isinstance(d, Digest) else d
    return b"".join((
        b"(",
        _ns(env.date, utf8), b" ",
        _ns(env.subject, utf8), b" ",
        _address_list(env.from_, utf8), b" ",
        _address_list(env.sender, utf8), b" ",
        _address_list(env.reply_to, utf8), b" ",
        _address_list(env.to, utf8), b" ",
        _address_list(env.cc, utf8), b" ",
        _address_list(env.bcc, utf8), b" ",
        _ns(env.in_reply_to, utf8), b" ",
        _ns(env.message_id, utf8),
        b")",
    ))


# ---------------------------------------------------------------------------------------------
# BODY / BODYSTRUCTURE


def _param_pair(name: bytes, value: bytes, utf8: bool) -> bytes:
    if not utf8 and not value.isascii():
        # The digest holds decoded UTF-8; a client without UTF8=ACCEPT gets it back in the
        # RFC 2231 extended form, as Dovecot passes such parameters through.
        name = name + b"*"
        value = b"utf-8''" + quote_from_bytes(value, safe="!#$&+-.^_`|~").encode("ascii")
    return string(name, utf8) + b" " + string(value, utf8)


def _params(params: Params, utf8: bool, default_charset: bool = False) -> bytes:
    pairs = [_param_pair(name, value, utf8) for name, value in params]
    if default_charset and not any(name.lower() == b"charset" for name, _ in params):
        pairs.append(b'"charset" "us-ascii"')
    if not pairs:
        return NIL
    return b"(" + b" ".join(pairs) + b")"


def _disposition(disposition: tuple[bytes, Params] | None, utf8: bool) -> bytes:
    if disposition is None:
        return NIL
    kind, params = disposition
    return b"(" + _ns(kind, utf8) + b" " + _params(params, utf8) + b")"


def _language(language: tuple[bytes, ...] | None, utf8: bool) -> bytes:
    if not language:
        return NIL
    return b"(" + b" ".join(_ns(tag, utf8) for tag in language) + b")"


_EMPTY_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 0 0)'
_EMPTY_BODYSTRUCTURE = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)'


def _write_part(part: Part, extensible: bool, utf8: bool, message_global: bool, out: list[bytes]) -> None:
    if part.children is not None:
        out.append(b"(")
        if part.children:
            for child in part.children:
                _write_part(child, extensible, utf8, message_global, out)
        else:  # a multipart without parts is not allowed by the grammar: one empty text part
            out.append(_EMPTY_BODYSTRUCTURE if extensible else _EMPTY_BODY)
        out.append(b" " + _ns(part.subtype, utf8))
        if extensible:
            out.append(b" " + _params(part.params, utf8) + b" " + _disposition(part.disposition, utf8)
                       + b" " + _language(part.language, utf8) + b" " + _ns(part.location, utf8))
        out.append(b")")
        return

    ctype, subtype = part.type, part.subtype
    ctype_l = ctype.lower()
    is_text = ctype_l == b"text"
    message = part.message
    if message is not None and not message_global and subtype.lower() == b"global":
        # RFC 3501's body-type-msg is message/rfc822 only; the IMAP4rev2 grammar adds
        # message/global. Before the client enables IMAP4rev2 it is a basic body (RFC 9051 7.2.2:
        # responses conform to RFC 3501 until then), as Dovecot describes it.
        message = None
    elif message is None and ctype_l == b"message" and subtype.lower() in (b"rfc822", b"global"):
        # An unparsed message/rfc822 (encoded, or past the nesting limit) cannot be described
        # as one (body-type-msg needs its envelope and structure): describe it as opaque data.
        ctype, subtype = b"application", b"octet-stream"
    out.append(b"(" + _ns(ctype, utf8) + b" " + _ns(subtype, utf8) + b" "
               + _params(part.params, utf8, default_charset=is_text) + b" "
               + _ns(part.id, utf8) + b" " + _ns(part.description, utf8) + b" "
               + _ns(part.encoding or b"7BIT", utf8) + b" " + number(part.size))
    if message is not None:
        inner_envelope, inner_root = message
        out.append(b" " + envelope(inner_envelope, utf8) + b" ")
        _write_part(inner_root, extensible, utf8, message_global, out)
        out.append(b" " + number(part.lines))
    elif is_text:
        out.append(b" " + number(part.lines))
    if extensible:
        out.append(b" " + _ns(part.md5, utf8) + b" " + _disposition(part.disposition, utf8)
                   + b" " + _language(part.language, utf8) + b" " + _ns(part.location, utf8))
    out.append(b")")


def bodystructure(d: Digest | Part, extensible: bool, utf8: bool = False, *, message_global: bool = True) -> bytes:
    """BODY (``extensible=False``) or BODYSTRUCTURE (``extensible=True``) of the message, as the
    parenthesised body of RFC 3501 §7.4.2. ``message_global`` False (an IMAP4rev1 session):
    message/global parts are described as basic bodies, not with their envelope."""
    root = d.root if isinstance(d, Digest) else d
    out: list[bytes] = []
    _write_part(root, extensible, utf8, message_global, out)
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# BODY[section]


def locate(d: Digest, part: Iterable[int]) -> Part | None:
    """The entity a section-part number names (see the module docstring), or None."""
    numbers = tuple(part)
    current = d.root
    message_root = True   # current is a message (the top level, or one inside message/rfc822)
    for index, num in enumerate(numbers):
        children = current.children
        if children is None:
            # "1" of a message whose body is a single part is that part; below a part that is
            # neither a multipart nor a message there is nothing (1.1 of a plain message).
            if num != 1 or not message_root:
                return None
        else:
            if not 1 <= num <= len(children):
                return None
            current = children[num - 1]
        message_root = False
        if current.message is not None and index + 1 < len(numbers):
            current = current.message[1]
            message_root = True
    return current


def _normalise_spec(spec: str | None) -> str | None:
    if spec is None or spec == "":
        return None
    upper = spec.upper()
    return _SPEC_ALIASES.get(upper, upper)


def _target(d: Digest, part: tuple[int, ...], spec: str | None) -> tuple[Part | None, str | None]:
    """(entity whose header/body the spec addresses, normalised spec); entity None = nothing."""
    spec = _normalise_spec(spec)
    if spec is not None and spec not in _SPECS:
        return None, spec
    if not part:
        return (None, spec) if spec == "MIME" else (d.root, spec)
    entity = locate(d, part)
    if entity is None or spec is None or spec == "MIME":
        return entity, spec
    if entity.message is None:
        return None, spec  # HEADER/TEXT of something that is not a message/rfc822 part
    return entity.message[1], spec


def section_exists(d: Digest, part: tuple[int, ...], spec: str | None) -> bool:
    """Whether BODY[section] names something in the message: where FETCH answers a section that
    does not exist with an empty string, a CATENATE URL naming one cannot be resolved."""
    return _target(d, tuple(part), spec)[0] is not None


def _clip(start: int, length: int, partial: tuple[int, int] | None) -> tuple[int, int]:
    if partial is None:
        return start, length
    offset, count = partial
    offset = max(0, offset)
    if offset >= length:
        return start + length, 0
    return start + offset, max(0, min(count, length - offset))


def _raw_range(d: Digest, part: tuple[int, ...], spec: str | None) -> tuple[int, int] | None:
    """(offset, length) of a plain byte-range answer before <partial>, (0, 0) for nothing, None
    when the answer has to be built (HEADER.FIELDS)."""
    entity, spec = _target(d, part, spec)
    if entity is None:
        return 0, 0
    if spec is None:
        if not part:
            return 0, d.size
        return entity.body_start, entity.body_end - entity.body_start
    if spec in ("HEADER", "MIME"):
        return entity.header_start, entity.body_start - entity.header_start
    if spec == "TEXT":
        return entity.body_start, entity.body_end - entity.body_start
    return None


def section_range(
    d: Digest,
    part: tuple[int, ...],
    spec: str | None,
    partial: tuple[int, int] | None = None,
) -> tuple[int, int] | None:
    """Where the answer to BODY[section]<partial> lies in the stored message, as (offset, length),
    so the server can send it straight from the file; None when it must be built by ``section``
    (HEADER.FIELDS / HEADER.FIELDS.NOT).  A non-existent part gives (0, 0)."""
    raw = _raw_range(d, tuple(part), spec)
    if raw is None:
        return None
    return _clip(raw[0], raw[1], partial)


class _FieldPicker:
    """The fields of a header block that HEADER.FIELDS names (or, with ``exclude``, those
    HEADER.FIELDS.NOT leaves). Built once per field list (see picker): clients ask for the same
    list for every message of a folder. Names of plain ASCII are found by one regular expression
    over the block, in C; other lists, and .NOT, walk the parsed fields."""

    __slots__ = ("wanted", "exclude", "pattern")

    def __init__(self, names: Iterable[str], exclude: bool) -> None:
        self.wanted = frozenset(name.lower().encode("utf-8", "surrogateescape") for name in names)
        self.exclude = exclude
        self.pattern = None if exclude else field_pattern(tuple(self.wanted))

    def pick(self, block: bytes) -> bytes:
        """The chosen fields in their order, each ending in a line break, then the blank line."""
        chunks: list[bytes] = []
        found = None if self.pattern is None else find_fields(self.pattern, block)
        if found is not None:
            chunks = [field + (line_break or b"\r\n") for field, _value, line_break in found]
        else:
            fields, _body_start = parse_header_block(block, 0, len(block))
            wanted, exclude = self.wanted, self.exclude
            for name, field_start, _value_start, field_end in fields:
                if (name in wanted) != exclude:
                    chunk = block[field_start:field_end]
                    chunks.append(chunk if chunk.endswith(b"\n") else chunk + b"\r\n")
        # The blank line that ends a header is part of every HEADER* answer, except for a message
        # with no body and no blank line (RFC 3501 6.4.5), as BODY[HEADER] is the block itself;
        # the message's own line ending is kept for it.
        last_line = block[block.rfind(b"\n", 0, len(block) - 1) + 1 :]
        if last_line in (b"\r\n", b"\n"):
            chunks.append(last_line)
        return b"".join(chunks)


@functools.lru_cache(maxsize=256)
def picker(names: tuple[str, ...], exclude: bool) -> _FieldPicker:
    """The (shared) picker of a HEADER.FIELDS(.NOT) field list."""
    return _FieldPicker(names, exclude)


def section(
    data_reader: DataReader,
    d: Digest,
    part: tuple[int, ...],
    spec: str | None,
    fields: Iterable[str] | None,
    partial: tuple[int, int] | None,
) -> bytes:
    """The content of BODY[section]<partial>.  ``part`` is the section-part numbers (empty for the
    message itself); ``spec`` one of None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT",
    "MIME" (case-insensitive; "RFC822.HEADER"/"RFC822.TEXT" accepted); ``fields`` the field names
    of HEADER.FIELDS(.NOT); ``partial`` (offset, count).  Non-existent parts give b""."""
    part = tuple(part)
    span = section_range(d, part, spec, partial)
    if span is not None:
        offset, length = span
        return data_reader(offset, length) if length > 0 else b""
    return header_fields_section(data_reader, d, part, spec, tuple(fields or ()), partial)


def header_fields_section(
    data_reader: DataReader,
    d: Digest,
    part: tuple[int, ...],
    spec: str | None,
    fields: tuple[str, ...],
    partial: tuple[int, int] | None,
) -> bytes:
    """The content of a BODY[section]<partial> for which section_range gave None
    (HEADER.FIELDS / HEADER.FIELDS.NOT)."""
    entity, normalised = _target(d, part, spec)
    if entity is None:
        return b""
    block = data_reader(entity.header_start, entity.body_start - entity.header_start)
    content = picker(fields, normalised == "HEADER.FIELDS.NOT").pick(block)
    offset, length = _clip(0, len(content), partial)
    return content[offset : offset + length]


# ---------------------------------------------------------------------------------------------
# BINARY (RFC 3516)


def _binary_entity(d: Digest, part: tuple[int, ...]) -> Part | None:
    return d.root if not part else locate(d, part)


def decoded_part(data_reader: DataReader, d: Digest, part: tuple[int, ...]) -> bytes:
    """BINARY[part]'s whole content (see binary_section)."""
    part = tuple(part)
    if not part:
        return data_reader(0, d.size) if d.size else b""
    entity = _binary_entity(d, part)
    if entity is None or entity.body_end <= entity.body_start:
        return b""
    raw = data_reader(entity.body_start, entity.body_end - entity.body_start)
    if entity.children is not None or entity.message is not None:
        return raw  # composite types carry no transfer encoding of their own to undo
    try:
        return decode_transfer_encoding(raw, entity.encoding)
    except UnknownTransferEncoding as exc:
        raise UnknownCTE(str(exc)) from None


def binary_section(
    data_reader: DataReader,
    d: Digest,
    part: tuple[int, ...],
    partial: tuple[int, int] | None,
    decode: Callable[[tuple[int, ...]], bytes] | None = None,
) -> bytes:
    """BINARY[part]<partial>: the part's body with its Content-Transfer-Encoding undone.  The empty
    part is the whole message as stored.  Raises UnknownCTE when the encoding is unknown;
    a non-existent part gives b"". ``decode`` (part -> content) may stand in for decoded_part,
    e.g. to keep what it decoded for the next item."""
    part = tuple(part)
    content = decode(part) if decode is not None else decoded_part(data_reader, d, part)
    offset, length = _clip(0, len(content), partial)
    return content[offset : offset + length]


def binary_size(data_reader: DataReader, d: Digest, part: tuple[int, ...],
                decode: Callable[[tuple[int, ...]], bytes] | None = None) -> int:
    """BINARY.SIZE[part]: the decoded size (no data read for 7bit/8bit/binary parts).  Raises
    UnknownCTE like ``binary_section``; ``decode`` as there."""
    part = tuple(part)
    if not part:
        return d.size
    entity = _binary_entity(d, part)
    if entity is None:
        return 0
    identity = (entity.encoding or b"7bit").strip().lower() in (b"7bit", b"8bit", b"binary")
    if identity or entity.children is not None or entity.message is not None:
        return entity.body_end - entity.body_start
    return len(decode(part) if decode is not None else decoded_part(data_reader, d, part))
