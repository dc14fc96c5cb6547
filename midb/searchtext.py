"""Text for SEARCH: decoded header values and the readable text of a message's body.

SEARCH HEADER/SUBJECT/FROM... match against decoded header values; SEARCH BODY/TEXT against the
text of the text/* parts with transfer encoding and charset undone (and HTML reduced to its text
and the targets of its links and images), as users expect from a mail reader rather than raw
bytes.  Everything works from the stored bytes
plus the MIME digest, so no MIME parsing happens here; output is bounded.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

from midb.mime import (
    Digest,
    Part,
    UnknownTransferEncoding,
    charset_keeps_ascii,
    decode_charset,
    decode_header_value,
    decode_transfer_encoding,
    field_pattern,
    find_fields,
    parse_header_block,
    unfold,
    without_line_breaks,
)

__all__ = ["MAX_BODY_TEXT", "MAX_PART_BYTES", "HeaderValues", "ascii_body", "body_text", "ascii_needle", "fold",
           "has_ascii_folding", "header_values", "html_to_text", "leaf_plan", "matches", "part_headers_text",
           "planned_ascii_body", "raw_header_lacks", "scan_needle", "PLAN_DECODE", "PLAN_NO_TEXT", "PLAN_RAW",
           "PLAN_VERSION"]

MAX_BODY_TEXT = 2 * 1024 * 1024  # characters of body text kept for one message
MAX_PART_BYTES = 8 * 1024 * 1024  # encoded bytes of one part looked at
_MAX_PARTS_VISITED = 1000


def header_values(data: bytes, digest: Digest | int, name: str) -> list[str]:
    """Every occurrence of header field ``name`` (case-insensitive) in the message's top-level
    header, unfolded and RFC 2047-decoded, in order.  An empty ``name`` matches no field.
    ``digest`` may also be the header's size (a summary's ``header_size``)."""
    return HeaderValues(name)(data, digest)


class HeaderValues:
    """header_values for one field name, its pattern made once: a SEARCH of many HEADER keys
    calls it for each message, and more names than the pattern caches hold recompiled a pattern
    per call (a SEARCH of 1,300 HEADER keys over 5,000 messages took 489 s)."""

    __slots__ = ("wanted", "pattern")

    def __init__(self, name: str) -> None:
        self.wanted = name.strip().lower().encode("utf-8", "surrogateescape")
        self.pattern = field_pattern((self.wanted,)) if self.wanted else None

    def __call__(self, data: bytes, digest: Digest | int) -> list[str]:
        wanted = self.wanted
        if not wanted:
            return []
        if isinstance(digest, int):
            start, end = 0, digest
        else:
            start, end = digest.root.header_start, digest.root.body_start
        pattern = self.pattern
        found = None if pattern is None or start != 0 else find_fields(pattern, data[:end])
        if found is not None:
            return [decode_header_value(unfold(value)) for _field, value, _line_break in found]
        fields, _ = parse_header_block(data, start, end)
        return [
            decode_header_value(unfold(data[value_start:field_end]))
            for field_name, _field_start, value_start, field_end in fields
            if field_name == wanted
        ]

    def from_fields(self, fields: dict[bytes, list[bytes]]) -> list[str]:
        """Like a call, from a header already split by :func:`fields_by_name`."""
        return [decode_header_value(unfold(value)) for value in fields.get(self.wanted, ())] if self.wanted else []


def fields_by_name(data: bytes, end: int) -> dict[bytes, list[bytes]]:
    """The header ``data[:end]`` split into its fields' raw values, in order, by lowercase name:
    for a message tested against many names, where one pattern scan per name would read the
    whole header again each time."""
    fields, _ = parse_header_block(data, 0, end)
    by_name: dict[bytes, list[bytes]] = {}
    for field_name, _field_start, value_start, field_end in fields:
        by_name.setdefault(field_name, []).append(data[value_start:field_end])
    return by_name


_MARKUP = (b"html", b"xhtml+xml")  # text subtypes whose searchable text is the markup's text
# Every pattern below is linear over any input: a match attempt starts only at "<" and stops at
# the next "<" or ">". Patterns such as "<[^>]*>" or "<!--.*?-->" rescan the rest of the text
# from each "<" that is never closed: 80,000 of them took 97 s, in one C call holding the
# interpreter lock (every session of the process stopped).
_HIDDEN_OPENER = re.compile(r"<(?:(script|style)\b|!--)", re.IGNORECASE)
_HIDDEN_CLOSER = {"script": re.compile(r"</script\s*>", re.IGNORECASE),
                  "style": re.compile(r"</style\s*>", re.IGNORECASE)}
_COMMENT_CLOSER = re.compile(r"-->")
_EMPTY_COMMENT_END = re.compile(r"-?>")
_BLOCK_TAG = re.compile(r"<(?:br|p|div|tr|li|h[1-6]|table|blockquote)\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*>")
_LINK_TARGET = re.compile(r"""<[^<>]*?\b(?:href|src)\s*=\s*(?:"([^"<>]*)"|'([^'<>]*)'|([^\s"'<>]+))""",
                          re.IGNORECASE)
_BLANKS = re.compile(r"[ \t\r\f\v]+")


def _without_hidden(markup: str) -> str:
    """``markup`` without script and style elements and comments, in one pass from left to right:
    each opener's closer is searched for once, and an opener never closed hides the rest (as a
    browser shows nothing after it)."""
    kept: list[str] = []
    pos = 0
    while True:
        opener = _HIDDEN_OPENER.search(markup, pos)
        if opener is None:
            kept.append(markup[pos:])
            break
        kept.append(markup[pos : opener.start()])
        name = opener.group(1)
        if name is None and (empty := _EMPTY_COMMENT_END.match(markup, opener.end())) is not None:
            kept.append(" ")   # "<!-->" and "<!--->" are whole (empty) comments in HTML5
            pos = empty.end()
            continue
        closer = (_COMMENT_CLOSER if name is None else _HIDDEN_CLOSER[name.lower()]).search(markup, opener.end())
        if closer is None:
            break
        kept.append(" ")
        pos = closer.end()
    return "".join(kept)


def html_to_text(markup: str, *, with_links: bool = True) -> str:
    """Crude but linear: drop script/style/comments and tags, keep line structure, unescape. The
    targets of links and images follow the text, on a line of their own (``with_links``): a user
    searches for an order number in a link, or a domain, and the markup is the only place it is
    in."""
    markup = _without_hidden(markup)
    links: list[str] = []
    if with_links:
        links = [target for target in (quoted or apostrophed or bare
                                       for quoted, apostrophed, bare in _LINK_TARGET.findall(markup))
                 if not target[:5].lower() == "data:"]   # inline images: base64 any short needle matches
    markup = _BLOCK_TAG.sub("\n", markup)
    markup = _TAG.sub(" ", markup)
    if links:
        markup += "\n" + " ".join(links)
    return _BLANKS.sub(" ", html.unescape(markup))


def _part_text(data: bytes, part: Part) -> str:
    raw = data[part.body_start : min(part.body_end, part.body_start + MAX_PART_BYTES)]
    try:
        decoded = decode_transfer_encoding(raw, part.encoding)
    except UnknownTransferEncoding:
        decoded = raw  # unknown encoding: the raw text is still better than nothing
    text = decode_charset(decoded, part.param(b"charset"))
    if part.subtype.lower() in _MARKUP:
        text = html_to_text(text)
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


def _entities(root: Part, *, part_headers: bool) -> Iterator[tuple[Part, bool]]:
    """The entities under ``root``, depth first in order (at most _MAX_PARTS_VISITED), each with
    whether its header is wanted: body_text wants an embedded message's header, and
    part_headers_text (``part_headers``) the MIME header of each part of a multipart."""
    stack: list[tuple[Part, bool]] = [(root, False)]
    visited = 0
    while stack and visited < _MAX_PARTS_VISITED:
        part, wanted = stack.pop()
        visited += 1
        yield part, wanted
        if part.children is not None:
            stack.extend((child, part_headers) for child in reversed(part.children))
        elif part.message is not None:
            stack.append((part.message[1], not part_headers))


def body_text(data: bytes, digest: Digest | Part) -> str:
    """The readable text of the message body: every text/* part decoded (transfer encoding,
    charset; HTML stripped of markup), plus the headers and text of embedded messages, joined by
    newlines and cut at MAX_BODY_TEXT characters.  Attachments that are not text are skipped.
    ``digest`` may also be the message's root entity alone (a single-part message's summary
    carries it: midb.summary)."""
    chunks: list[str] = []
    total = 0
    root = digest if isinstance(digest, Part) else digest.root
    for part, with_header in _entities(root, part_headers=False):
        if total >= MAX_BODY_TEXT:
            break
        if with_header:
            text = _header_text(data, part)
            chunks.append(text)
            total += len(text) + 1
        if part.children is None and part.message is None and _is_body_text(part):
            # (attached source files, calendars etc. are not the message's text)
            text = _part_text(data, part)
            chunks.append(text)
            total += len(text) + 1
    return "\n".join(chunks)[:MAX_BODY_TEXT]


def part_headers_text(data: bytes, digest: Digest) -> str:
    """The MIME header fields of the message's body parts (RFC 9051 section 6.4.4: SEARCH TEXT
    looks at "the header (including MIME header fields)"), as "Name: decoded value" lines, each
    part's Content-Type and Content-Disposition parameters also as their decoded values (RFC 2231
    continuations and charsets undone: an attachment is found by its file name). The top-level
    header is not repeated, nor the header of an embedded message (body_text has it); the
    MIME fields of the parts inside that message are. Bounded as body_text is."""
    chunks: list[str] = []
    total = 0
    for part, listed in _entities(digest.root, part_headers=True):
        if total >= MAX_BODY_TEXT:
            break
        if listed:
            text = _header_text(data, part)
            values = [value for _name, value in part.params]
            if part.disposition:
                values += [value for _name, value in part.disposition[1]]
            if values:
                text += "\n" + " ".join(value.decode("utf-8", "replace") for value in values)
            chunks.append(text)
            total += len(text) + 1
    return "\n".join(chunks)[:MAX_BODY_TEXT]


def _is_body_text(part: Part) -> bool:
    """body_text's test for a text entity (not a multipart, not an embedded message)."""
    if part.type.lower() != b"text" or part.body_end <= part.body_start:
        return False
    return _is_text_disposition(part)


# How a single-part message's text is found (leaf_plan). Stored in message summaries
# (midb.summary): change PLAN_VERSION whenever leaf_plan would decide differently.
PLAN_VERSION = 1
PLAN_NO_TEXT = 0  # not a text part body_text reads: no text at all
PLAN_RAW = 1  # identity transfer encoding, a charset that keeps ASCII, no markup: ASCII octets are the text
PLAN_DECODE = 2  # anything else (multipart, message/*, encoded, other charsets): body_text decodes it
_MAX_PLANS = 4096
_plans: dict[tuple[bytes, bytes, bytes | None, tuple[tuple[bytes, bytes], ...], object], int] = {}


def leaf_plan(leaf: Part) -> int:
    """How body_text finds the text of a single-part message with this root entity: one of the
    PLAN_ constants. A folder holds few distinct combinations of the attributes it depends on, so
    it is computed once per combination (it costs a few microseconds: case, charset lookup)."""
    if leaf.children is not None or leaf.message is not None:
        return PLAN_DECODE
    signature = (leaf.type, leaf.subtype, leaf.encoding, leaf.params, leaf.disposition)
    plan = _plans.get(signature)
    if plan is None:
        if leaf.type.lower() != b"text" or not _is_text_disposition(leaf):
            plan = PLAN_NO_TEXT
        elif leaf.subtype.lower() in _MARKUP \
                or (leaf.encoding or b"7bit").strip().lower() not in (b"7bit", b"8bit", b"binary") \
                or not charset_keeps_ascii(leaf.param(b"charset")):
            plan = PLAN_DECODE
        else:
            plan = PLAN_RAW
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()  # a bound, not an eviction policy: the combinations come back cheaply
        _plans[signature] = plan
    return plan


def _is_text_disposition(part: Part) -> bool:
    disposition = part.disposition[0].lower() if part.disposition else b""
    return disposition != b"attachment" or part.subtype.lower() in (b"plain", b"html")


def ascii_body(data: bytes, leaf: Part) -> bytes | None:
    """``body_text(data, leaf)`` as bytes, for a single-part message whose text needs no decoding:
    an identity transfer encoding, a charset that keeps ASCII, no markup, ASCII octets only. Then
    case-insensitive search is ``needle in ascii_body(...).lower()`` for an ASCII needle (and no
    match for any other: case folding maps ASCII text to ASCII). None when decoding is needed."""
    return planned_ascii_body(data, leaf_plan(leaf), leaf.body_start, leaf.body_end)


def planned_ascii_body(data: bytes, plan: int, body_start: int, body_end: int) -> bytes | None:
    """ascii_body from the leaf's plan and body range (as a summary stores them)."""
    if plan == PLAN_DECODE:
        return None
    if plan == PLAN_NO_TEXT or body_end <= body_start:
        return b""
    raw = data[body_start : min(body_end, body_start + MAX_PART_BYTES)]
    return raw[:MAX_BODY_TEXT] if raw.isascii() else None


# The non-ASCII characters whose case folding holds ASCII characters (ß -> ss, K -> k, ﬁ -> fi...),
# per Python's Unicode tables (tests/test_perf_search_equivalence.py checks the list against them),
# in UTF-8: text without them folds to ASCII only where it is ASCII already.
ASCII_FOLDING_CHARACTERS = (
    "\u00df\u0130\u0149\u017f\u01f0\u1e96\u1e97\u1e98\u1e99\u1e9a\u1e9e\u212a"
    "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"
)
_ASCII_FOLDING = re.compile(b"|".join(re.escape(char.encode("utf-8")) for char in ASCII_FOLDING_CHARACTERS))


def has_ascii_folding(data: bytes) -> bool:
    """Whether UTF-8 ``data`` holds a character whose case folding yields ASCII from non-ASCII:
    without one, an ASCII needle is in the folded text only if it is in ``data.lower()``."""
    return _ASCII_FOLDING.search(data) is not None


def ascii_needle(needle: str) -> bytes | None:
    """A folded search string as ASCII bytes, None when it is not ASCII."""
    return needle.encode("ascii") if needle.isascii() else None


def scan_needle(needle: str) -> bytes | None:
    """The folded ``needle`` as the bytes raw_header_lacks looks for, or None when that byte scan
    cannot decide for it: not ASCII (non-ASCII text may fold to ASCII), or holding whitespace or
    NUL (which header decoding rewrites: unfolding, tabs, the ": " after a field name)."""
    if not needle.isascii() or needle.split() != [needle] or "\x00" in needle:
        return None
    return needle.encode("ascii")


def raw_header_lacks(data: bytes, header_size: int, needle: bytes) -> bool:
    """True when the decoded text of the header block ``data[:header_size]`` ("Name: value" lines,
    unfolded, RFC 2047-decoded: searching's TEXT) certainly does not contain ``needle`` (from
    scan_needle). Decided on the bytes, without decoding, when the header is ASCII and has no
    encoded words: decoding then only drops line breaks and rewrites blanks, so every occurrence
    of a blank-free needle in the text is one in the lowered bytes with the line breaks removed.
    False means "maybe": decode to know."""
    header = data[:header_size]
    if not header.isascii() or b"=?" in header:
        return False
    return needle not in without_line_breaks(header).lower()   # what unfold removes


def fold(text: str) -> str:
    """The comparison form for SEARCH: full Unicode case folding."""
    return text.casefold()


def matches(haystack: str, needle: str) -> bool:
    """IMAP SEARCH string match: case-insensitive substring (RFC 3501 §6.4.4); the empty needle
    matches everything.  For many haystacks, fold the needle once and use ``in`` on ``fold``."""
    return needle.casefold() in haystack.casefold()
