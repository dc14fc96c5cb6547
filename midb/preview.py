"""A message's preview text (RFC 8970 PREVIEW): the start of what a mail reader shows of it, on
one line, for a client's message list.

The text is that of the part a reader shows first: the first text/plain or text/html part that
is not an attachment, a multipart/alternative's plain text before its HTML, an embedded message's
text when nothing comes before it; when that part gives no text (blanks, quotes alone), the
next. Its transfer encoding and charset are undone, HTML is reduced to its text (the head,
scripts and styles left out), quoted lines (``>``) and the signature (after a ``-- `` line) are
dropped, so are control and invisible format characters, and every run of white space becomes
one space. At most PREVIEW_CHARACTERS characters (RFC 8970 allows 256; Dovecot gives 200). A
message with no such part (only attachments, encrypted, empty) has the empty preview, as the
RFC asks.

The work is bounded: the part's first READ_FIRST encoded bytes are read, and only when they hold
too little text (a long quotation first, a large HTML head) up to READ_MOST. Everything works
from the stored bytes and the MIME digest: no MIME parsing happens here.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

from midb.mime import Digest, Part, UnknownTransferEncoding, decode_charset, decode_transfer_encoding
from midb.searchtext import html_to_text

__all__ = ["PREVIEW_CHARACTERS", "READ_FIRST", "READ_MOST", "preview", "preview_parts", "text_preview"]

PREVIEW_CHARACTERS = 200
READ_FIRST = 16 * 1024
READ_MOST = 256 * 1024
_MAX_PARTS_VISITED = 1000
_MAX_PARTS_TRIED = 4   # text parts read for a preview, when those before them give no text
_MARKUP = (b"html", b"xhtml+xml")
_HEAD_END = re.compile(r"</head\s*>", re.IGNORECASE)
# Control characters other than white space (which the line split and the join handle): a
# client shows them as boxes, and NUL may not travel in an IMAP string at all. Also the
# invisible format characters (soft hyphen, zero-width space, direction marks and overrides,
# byte order mark...): a preview is shown out of its text's context, where an override would
# turn the rest of a client's line around. The zero-width (non-)joiners stay inside words, as
# emoji sequences and several scripts need them; at a word's edge they go (_JOINERS): marketing
# mail pads its hidden preheader with runs of "&zwnj;&nbsp;".
_CONTROLS = dict.fromkeys([*range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F, *range(0x80, 0x85),
                           *range(0x86, 0xA0), 0xAD, 0x061C, 0x180E, 0x200B, 0x200E, 0x200F,
                           *range(0x202A, 0x202F), *range(0x2060, 0x2065), *range(0x2066, 0x2070),
                           0xFEFF, *range(0xFFF9, 0xFFFC), 0xFFFD])
_JOINERS = "\u200c\u200d"


def preview(read: Callable[[int, int], bytes], digest: Digest) -> str:
    """The preview text of a stored message: ``read(offset, length)`` gives its bytes,
    ``digest`` is its MIME digest. The first of its text parts (preview_parts) that gives any
    text gives it: a plain alternative of blanks alone goes to the HTML one."""
    for part in itertools.islice(preview_parts(digest.root), _MAX_PARTS_TRIED):
        text = ""
        for limit in (READ_FIRST, READ_MOST):
            length = min(part.size, limit)
            text, full = _preview_and_fullness(read(part.body_start, length), part, whole=length == part.size)
            if full or length == part.size:
                break
        if text:
            return text
    return ""


def preview_parts(root: Part) -> Iterator[Part]:
    """The parts whose text may be the preview, in the order a reader shows them (see the
    module's docstring)."""
    stack = [root]
    visited = 0
    while stack and visited < _MAX_PARTS_VISITED:
        part = stack.pop()
        visited += 1
        if _is_attachment(part):
            continue
        if part.children is not None:
            children = list(part.children)
            if part.subtype.lower() == b"alternative":
                # Alternatives come simplest first (RFC 2046 5.1.4); the plain one is the text.
                plain = next((child for child in children if _is_text(child, (b"plain",))), None)
                if plain is not None:
                    children.remove(plain)
                    children.insert(0, plain)
            stack.extend(reversed(children))
        elif part.message is not None:
            stack.append(part.message[1])
        elif _is_text(part, (b"plain", *_MARKUP)):
            yield part


def _without_cut_utf8(data: bytes) -> bytes:
    """``data`` without a UTF-8 sequence begun at its end and not completed there."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data   # ASCII: nothing begun
        if byte >= 0xC0:  # a lead byte: how long its sequence is
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data[:-back] if needed > back else data
    return data   # continuation bytes only: not UTF-8 there, nothing to cut


def _is_attachment(part: Part) -> bool:
    return part.disposition is not None and part.disposition[0].lower() == b"attachment"


def _is_text(part: Part, subtypes: tuple[bytes, ...]) -> bool:
    return (part.children is None and part.message is None and part.type.lower() == b"text"
            and part.subtype.lower() in subtypes and part.body_end > part.body_start
            and not _is_attachment(part))


def text_preview(raw: bytes, part: Part, *, whole: bool = True) -> str:
    """The preview of ``part`` from its encoded body ``raw`` (all of it when ``whole``, else
    its start: a character the cut split is dropped)."""
    return _preview_and_fullness(raw, part, whole=whole)[0]


def _preview_and_fullness(raw: bytes, part: Part, *, whole: bool) -> tuple[str, bool]:
    """text_preview, and whether the text reached PREVIEW_CHARACTERS (reading more of the part
    would not change it)."""
    try:
        decoded = decode_transfer_encoding(raw, part.encoding)
    except UnknownTransferEncoding:
        decoded = raw   # the raw text is still better than nothing
    if not whole:
        # A UTF-8 character the cut split would make the text invalid UTF-8, which an unlabelled
        # (or us-ascii, latin-1) part is then decoded as windows-1252: mojibake throughout.
        decoded = _without_cut_utf8(decoded)
    # What a cut left of another charset's character is U+FFFD, which _CONTROLS drops.
    text = decode_charset(decoded, part.param(b"charset"))
    if part.subtype.lower() in _MARKUP:
        head_end = _HEAD_END.search(text)
        if head_end is not None:
            text = text[head_end.end():]   # the title and the head's other content are not shown
        text = html_to_text(text, with_links=False)
    kept: list[str] = []
    length = -1   # of the kept words joined by spaces
    for line in text.splitlines():
        # A joiner joins nothing at a word's edge.
        words = [bare for word in line.translate(_CONTROLS).split() if (bare := word.strip(_JOINERS))]
        if not words:
            continue
        if words[0].startswith(">"):
            continue   # quoted from the message it answers
        if words == ["--"] and kept and line.startswith("--"):
            break   # the signature follows
        kept.extend(words)
        length += sum(map(len, words)) + len(words)
        if length >= PREVIEW_CHARACTERS:
            break
    return " ".join(kept)[:PREVIEW_CHARACTERS].rstrip(), length >= PREVIEW_CHARACTERS
