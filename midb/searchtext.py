"""Text for SEARCH: decoded header values and the readable text of a message's body.

SEARCH HEADER/SUBJECT/FROM... match against decoded header values; SEARCH BODY/TEXT against the
text of the text/* parts with transfer encoding and charset undone (and HTML reduced to its text),
as users expect from a mail reader rather than raw bytes.  Everything works from the stored bytes
plus the MIME digest, so no MIME parsing happens here; output is bounded.
"""

from __future__ import annotations

import html
import re

from midb.mime import (
    Digest,
    Part,
    UnknownTransferEncoding,
    charset_keeps_ascii,
    decode_charset,
    decode_header_value,
    decode_transfer_encoding,
    parse_header_block,
    unfold,
)

__all__ = ["MAX_BODY_TEXT", "MAX_PART_BYTES", "ascii_body", "body_text", "fold", "header_values", "matches"]

MAX_BODY_TEXT = 2 * 1024 * 1024  # characters of body text kept for one message
MAX_PART_BYTES = 8 * 1024 * 1024  # encoded bytes of one part looked at
_MAX_PARTS_VISITED = 1000


def header_values(data: bytes, digest: Digest | int, name: str) -> list[str]:
    """Every occurrence of header field ``name`` (case-insensitive) in the message's top-level
    header, unfolded and RFC 2047-decoded, in order.  An empty ``name`` matches no field.
    ``digest`` may also be the header's size (a summary's ``header_size``)."""
    wanted = name.strip().lower().encode("utf-8", "surrogateescape")
    if not wanted:
        return []
    if isinstance(digest, int):
        start, end = 0, digest
    else:
        start, end = digest.root.header_start, digest.root.body_start
    fields, _ = parse_header_block(data, start, end)
    return [
        decode_header_value(unfold(data[value_start:field_end]))
        for field_name, _field_start, value_start, field_end in fields
        if field_name == wanted
    ]


_MARKUP = (b"html", b"xhtml+xml")  # text subtypes whose searchable text is the markup's text
_SCRIPT_STYLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_BLOCK_TAG = re.compile(r"<(?:br|p|div|tr|li|h[1-6]|table|blockquote)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_BLANKS = re.compile(r"[ \t\r\f\v]+")


def _html_to_text(markup: str) -> str:
    """Crude but linear: drop script/style/comments and tags, keep line structure, unescape."""
    markup = _SCRIPT_STYLE.sub(" ", markup)
    markup = _COMMENT.sub(" ", markup)
    markup = _BLOCK_TAG.sub("\n", markup)
    markup = _TAG.sub(" ", markup)
    return _BLANKS.sub(" ", html.unescape(markup))


def _part_text(data: bytes, part: Part) -> str:
    raw = data[part.body_start : min(part.body_end, part.body_start + MAX_PART_BYTES)]
    try:
        decoded = decode_transfer_encoding(raw, part.encoding)
    except UnknownTransferEncoding:
        decoded = raw  # unknown encoding: the raw text is still better than nothing
    text = decode_charset(decoded, part.param(b"charset"))
    if part.subtype.lower() in _MARKUP:
        text = _html_to_text(text)
    return text


def _header_text(data: bytes, part: Part) -> str:
    """An embedded message's header as "Name: decoded value" lines (forwarded mail is found by
    its subject and senders as well)."""
    fields, _ = parse_header_block(data, part.header_start, part.body_start)
    lines = []
    for _name, field_start, value_start, field_end in fields:
        name = data[field_start : value_start - 1].decode("latin-1")
        lines.append(name + ": " + decode_header_value(unfold(data[value_start:field_end])))
    return "\n".join(lines)


def body_text(data: bytes, digest: Digest | Part) -> str:
    """The readable text of the message body: every text/* part decoded (transfer encoding,
    charset; HTML stripped of markup), plus the headers and text of embedded messages, joined by
    newlines and cut at MAX_BODY_TEXT characters.  Attachments that are not text are skipped.
    ``digest`` may also be the message's root entity alone (a single-part message's summary
    carries it: midb.summary)."""
    chunks: list[str] = []
    total = 0
    visited = 0
    root = digest if isinstance(digest, Part) else digest.root
    stack: list[tuple[Part, bool]] = [(root, False)]
    while stack and total < MAX_BODY_TEXT and visited < _MAX_PARTS_VISITED:
        part, with_header = stack.pop()
        visited += 1
        if with_header:
            text = _header_text(data, part)
            chunks.append(text)
            total += len(text) + 1
        if part.children is not None:
            stack.extend((child, False) for child in reversed(part.children))
        elif part.message is not None:
            stack.append((part.message[1], True))
        elif part.type.lower() == b"text" and part.body_end > part.body_start:
            if not _is_body_text(part):
                continue  # attached source files, calendars etc. are not the message's text
            text = _part_text(data, part)
            chunks.append(text)
            total += len(text) + 1
    return "\n".join(chunks)[:MAX_BODY_TEXT]


def _is_body_text(part: Part) -> bool:
    """body_text's test for a text entity (not a multipart, not an embedded message)."""
    if part.type.lower() != b"text" or part.body_end <= part.body_start:
        return False
    disposition = part.disposition[0].lower() if part.disposition else b""
    return disposition != b"attachment" or part.subtype.lower() in (b"plain", b"html")


def ascii_body(data: bytes, leaf: Part) -> bytes | None:
    """``body_text(data, leaf)`` as bytes, for a single-part message whose text needs no decoding:
    an identity transfer encoding, a charset that keeps ASCII, no markup, ASCII octets only. Then
    case-insensitive search is ``needle in ascii_body(...).lower()`` for an ASCII needle (and no
    match for any other: case folding maps ASCII text to ASCII). None when decoding is needed."""
    if leaf.children is not None or leaf.message is not None:
        return None
    if not _is_body_text(leaf):
        return b""
    if leaf.subtype.lower() in _MARKUP \
            or (leaf.encoding or b"7bit").strip().lower() not in (b"7bit", b"8bit", b"binary") \
            or not charset_keeps_ascii(leaf.param(b"charset")):
        return None
    raw = data[leaf.body_start : min(leaf.body_end, leaf.body_start + MAX_PART_BYTES)]
    return raw[:MAX_BODY_TEXT] if raw.isascii() else None


def fold(text: str) -> str:
    """The comparison form for SEARCH: full Unicode case folding."""
    return text.casefold()


def matches(haystack: str, needle: str) -> bool:
    """IMAP SEARCH string match: case-insensitive substring (RFC 3501 §6.4.4); the empty needle
    matches everything.  For many haystacks, fold the needle once and use ``in`` on ``fold``."""
    return needle.casefold() in haystack.casefold()
