"""gximap.imap.fetchmime: ENVELOPE, BODY/BODYSTRUCTURE, BODY[section] and BINARY from the digest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gximap.imap import fetchmime
from gximap.imap.fetchmime import (
    UnknownCTE,
    binary_section,
    binary_size,
    bodystructure,
    envelope,
    locate,
    section,
    section_range,
)
from midb.mime import Digest, Part, digest

DATA = Path(__file__).parent / "data" / "mime"
SAMPLES = sorted(DATA.glob("*.eml"))


def load(name: str) -> tuple[bytes, Digest]:
    data = (DATA / name).read_bytes()
    return data, digest(data)


class Reader:
    """A data_reader over bytes that records what was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        assert 0 <= offset and 0 <= length and offset + length <= len(self.data)
        self.calls.append((offset, length))
        return self.data[offset : offset + length]


# --- a checker for the RFC 3501 §9 response grammar of body / envelope ----------------------


class Node(list):
    """A parenthesised list; ``seps[i]`` is what separated item i from item i-1."""

    def __init__(self) -> None:
        super().__init__()
        self.seps: list[bytes] = []


_TOKEN = re.compile(rb'\(|\)|NIL|\d+|"(?:[^"\\\r\n]|\\["\\])*"|\{(\d+)\}\r\n| ')


def read_sexp(text: bytes) -> Node:
    stack: list[Node] = []
    pos, sep, result = 0, b"", None
    item: Node | int | bytes | None
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        assert match is not None, f"bad token at {pos}: {text[pos:pos + 30]!r}"
        token, pos = match.group(), match.end()
        if token == b" ":
            assert sep == b"", "double space"
            sep = b" "
            continue
        if token == b")":
            assert sep == b"", "space before )"
            done = stack.pop()
            if not stack:
                result = done
                assert pos == len(text), "trailing bytes"
            item = None
        elif token == b"(":
            item = Node()
        elif token == b"NIL":
            item = None
        elif token.isdigit():
            item = int(token)
        elif token.startswith(b'"'):
            item = re.sub(rb'\\(["\\])', rb"\1", token[1:-1])
        else:
            size = int(match.group(1))
            item, pos = text[pos : pos + size], pos + size
        if token != b")":
            if stack:
                stack[-1].append(item)
                stack[-1].seps.append(sep)
            if isinstance(item, Node):
                stack.append(item)
        sep = b""
    assert result is not None and not stack
    return result


def is_string(value) -> bool:
    return isinstance(value, bytes)


def is_nstring(value) -> bool:
    return value is None or is_string(value)


def spaced(node: Node, start: int = 1) -> bool:
    return all(sep == b" " for sep in node.seps[start:])


def check_params(value) -> None:
    if value is None:
        return
    assert isinstance(value, Node) and value and len(value) % 2 == 0 and spaced(value)
    assert all(is_string(item) for item in value)


def check_dsp(value) -> None:
    if value is None:
        return
    assert isinstance(value, Node) and len(value) == 2 and spaced(value) and is_string(value[0])
    check_params(value[1])


def check_lang(value) -> None:
    if isinstance(value, Node):
        assert value and all(is_string(item) for item in value) and spaced(value)
    else:
        assert is_nstring(value)


def check_addresses(value) -> None:
    if value is None:
        return
    assert isinstance(value, Node) and value and all(sep == b"" for sep in value.seps)
    for address in value:
        assert isinstance(address, Node) and len(address) == 4 and spaced(address)
        assert all(is_nstring(item) for item in address)


def check_envelope(node) -> None:
    assert isinstance(node, Node) and len(node) == 10 and spaced(node)
    assert is_nstring(node[0]) and is_nstring(node[1]) and is_nstring(node[8]) and is_nstring(node[9])
    for addresses in node[2:8]:
        check_addresses(addresses)


def check_body(node, extensible: bool) -> None:
    assert isinstance(node, Node) and node
    if isinstance(node[0], Node):  # body-type-mpart: 1*body SP media-subtype [SP body-ext-mpart]
        count = 0
        while count < len(node) and isinstance(node[count], Node):
            assert count == 0 or node.seps[count] == b"", "bodies are not separated"
            check_body(node[count], extensible)
            count += 1
        rest = node[count:]
        assert node.seps[count] == b" " and spaced(node, count)
        assert is_string(rest[0])
        if extensible:
            assert len(rest) == 5
            check_params(rest[1])
            check_dsp(rest[2])
            check_lang(rest[3])
            assert is_nstring(rest[4])
        else:
            assert len(rest) == 1
        return
    assert spaced(node)
    ctype, subtype, params, body_id, description, encoding, octets = node[:7]
    assert is_string(ctype) and is_string(subtype) and is_string(encoding)
    check_params(params)
    assert is_nstring(body_id) and is_nstring(description)
    assert isinstance(octets, int)
    rest = node[7:]
    if ctype.upper() == b"MESSAGE" and subtype.upper() in (b"RFC822", b"GLOBAL"):
        check_envelope(rest[0])
        check_body(rest[1], extensible)
        assert isinstance(rest[2], int)
        rest = rest[3:]
    elif ctype.upper() == b"TEXT":
        assert isinstance(rest[0], int)
        rest = rest[1:]
    if extensible:
        assert len(rest) == 4
        assert is_nstring(rest[0])
        check_dsp(rest[1])
        check_lang(rest[2])
        assert is_nstring(rest[3])
    else:
        assert rest == []


def check_rendering(d: Digest) -> None:
    for utf8 in (False, True):
        check_envelope(read_sexp(envelope(d, utf8)))
        check_body(read_sexp(bodystructure(d, extensible=False, utf8=utf8)), extensible=False)
        check_body(read_sexp(bodystructure(d, extensible=True, utf8=utf8)), extensible=True)


# --- RFC 3501 examples, byte for byte --------------------------------------------------------


def text_body(size: int, line_feeds: int, final_newline: bool = True) -> bytes:
    """``size`` bytes of text holding exactly ``line_feeds`` CRLF line ends."""
    lines = line_feeds if final_newline else line_feeds + 1
    payload = size - 2 * line_feeds
    widths = [payload // lines + (1 if i < payload % lines else 0) for i in range(lines)]
    out = b"".join(b"x" * width + b"\r\n" for width in widths)
    return out if final_newline else out[:-2]


RFC3501_ENVELOPE = (
    b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) '
    b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
    b'"<B27397-0100000@cac.washington.edu>")'
)


def test_rfc3501_sample_fetch_envelope_and_body():
    head = (
        b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
        b"From: Terry Gray <gray@cac.washington.edu>\r\n"
        b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
        b"To: imap@cac.washington.edu\r\n"
        b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n"
        b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        b"Content-Transfer-Encoding: 7BIT\r\n\r\n"
    )
    d = digest(head + text_body(3028, 92))
    assert envelope(d) == RFC3501_ENVELOPE
    assert bodystructure(d, extensible=False) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
    assert bodystructure(d, extensible=True) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)'
    )


def test_rfc3501_multipart_bodystructure_example():
    data = (
        b"Content-Type: MULTIPART/MIXED; BOUNDARY=\"x\"\r\n\r\n"
        b"--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\nContent-Transfer-Encoding: 7BIT\r\n\r\n"
        + text_body(1152, 23, final_newline=False)
        + b"\r\n--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n"
        b"Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
        b"Content-Description: Compiler diff\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
        + text_body(4554, 73, final_newline=False)
        + b"\r\n--x--\r\n"
    )
    d = digest(data)
    assert bodystructure(d, extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") "<960723163407.20117h@cac.washington.edu>" '
        b'"Compiler diff" "BASE64" 4554 73) "MIXED")'
    )
    assert bodystructure(d, extensible=True) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") "<960723163407.20117h@cac.washington.edu>" '
        b'"Compiler diff" "BASE64" 4554 73 NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "x") NIL NIL NIL)'
    )


# --- Dovecot-style rendering of real-world shapes ---------------------------------------------


def test_attachments_with_rfc2231_parameters_and_extension_data():
    data, d = load("mixed_attach.eml")
    text_size = len(b"Please find the report attached.")
    pdf_size = len(b"JVBERi0xLjQKJcfsj6IK")
    status_size = len(b"Reporting-MTA: dns; mx.example.com")
    expected = (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d 0 NIL NIL ("en" "de-AT") NIL)'
        b'("application" "pdf" ("name*" "utf-8\'\'%%E2%%82%%AC%%20report%%202024.pdf") "<part2.abc@example.com>" '
        b'"Quarterly report" "base64" %d "Q2hlY2sgSW50ZWdyaXR5IQ==" '
        b'("attachment" ("filename*" "utf-8\'\'Gr%%C3%%BC%%C3%%9Fe.pdf" "size" "12")) NIL '
        b'"http://example.com/reports/q1.pdf")'
        b'("message" "delivery-status" NIL NIL NIL "7BIT" %d NIL ("inline" ("title" "This is ***fun***")) NIL NIL)'
        b' "mixed" ("boundary" "----=_Part_12_345.678") NIL ("en") NIL)'
    ) % (text_size, pdf_size, status_size)
    assert bodystructure(d, extensible=True) == expected
    assert bodystructure(d, extensible=False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d 0)'
        b'("application" "pdf" ("name*" "utf-8\'\'%%E2%%82%%AC%%20report%%202024.pdf") "<part2.abc@example.com>" '
        b'"Quarterly report" "base64" %d)'
        b'("message" "delivery-status" NIL NIL NIL "7BIT" %d) "mixed")'
    ) % (text_size, pdf_size, status_size)
    # UTF8=ACCEPT clients get the decoded UTF-8 value as it is
    utf8 = bodystructure(d, extensible=True, utf8=True)
    assert '("name" "\u20ac report 2024.pdf")'.encode() in utf8
    assert '("filename" "Gr\u00fc\u00dfe.pdf" "size" "12")'.encode() in utf8


def test_nested_message_rfc822():
    data, d = load("nested_rfc822.eml")
    forwarded = d.root.children[1]
    inner_root = forwarded.message[1]
    plain, html = inner_root.children
    expected = (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 9 0)'
        b'("message" "rfc822" NIL NIL "forwarded message" "7BIT" %d '
        b'("1 Jan 2001 00:00:00 +0000" "=?UTF-8?Q?Forwarded_=E2=9C=93?=" '
        b'(("Mary Smith" NIL "mary" "example.net")) (("Mary Smith" NIL "mary" "example.net")) '
        b'(("Mary Smith" NIL "mary" "example.net")) (("John Doe" NIL "jdoe" "machine.example")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL "<inner-1@example.net>") '
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "7BIT" %d 0)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7BIT" %d 0) "alternative") %d) "mixed")'
    ) % (forwarded.size, len(b"inner plain text"), len(b"<p>inner <i>html</i></p>"),
         data[forwarded.body_start : forwarded.body_end].count(b"\n"))
    assert (plain.size, html.size) == (16, 24)
    assert bodystructure(d, extensible=False) == expected


def test_envelope_group_syntax_routes_and_nil_rules():
    _, d = load("groups.eml")
    assert envelope(d) == (
        b'("Thu, 13 Feb 1969 23:32:54 -0330" "Group syntax" '
        b'(("Joe Q. Public" NIL "john.q.public" "example.com")) '
        b'(("Michael Jones" NIL "mjones" "machine.example")) '
        b'(("Joe Q. Public" NIL "john.q.public" "example.com")) '
        b'((NIL NIL "A Group" NIL)("Ed Jones" NIL "c" "a.test")(NIL NIL "joe" "where.test")'
        b'("John" NIL "jdoe" "one.test")(NIL NIL NIL NIL)) '
        b'((NIL NIL "Undisclosed recipients" NIL)(NIL NIL NIL NIL)) '
        b'((NIL "@route1.test,@route2.test" "joe" "where.test")("Pete" NIL "pete" "silly.test")) '
        b'"<1234@local.machine.example> <3456@example.net>" "<5678.21-Nov-1997@example.com>")'
    )
    _, d = load("missing_headers.eml")
    assert envelope(d) == b'(NIL "no from, no date" NIL NIL NIL NIL NIL NIL NIL NIL)'
    assert envelope(digest(b"")) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert envelope(digest(b"Subject:\r\n\r\n")) == b'(NIL "" NIL NIL NIL NIL NIL NIL NIL NIL)'


def test_envelope_eight_bit_and_quoting():
    _, d = load("eightbit_headers.eml")
    subject = "Gr\u00fc\u00dfe aus K\u00f6ln \u2713".encode()
    plain = envelope(d)
    assert b"{%d}\r\n" % len(subject) + subject in plain  # 8-bit goes as a literal
    assert b'"' + subject + b'"' in envelope(d, utf8=True)
    # UTF8=ACCEPT: raw latin-1 bytes from old mailers become UTF-8, never invalid UTF-8
    name = "J\u00f6rg M\u00fcller".encode()
    assert b'(("' + name + b'" NIL "joerg" "example.de"))' in envelope(d, utf8=True)
    d = digest(b'Subject: say "hi" \\o/\r\n\r\n')
    assert envelope(d).startswith(b'(NIL "say \\"hi\\" \\\\o/" ')


def test_special_shapes():
    # a multipart without any part still needs one body: an empty text/plain stands in (Dovecot)
    _, d = load("no_boundary.eml")
    assert bodystructure(d, extensible=False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 0 0) "mixed")'
    )
    assert bodystructure(d, extensible=True) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL) "mixed" NIL NIL NIL NIL)'
    )
    # an encoded message/rfc822 cannot be described as a message
    _, d = load("base64_rfc822.eml")
    assert bodystructure(d, extensible=False) == (
        b'(("application" "octet-stream" NIL NIL NIL "base64" 60) "mixed")'
    )
    # text without a charset gets the implied us-ascii appended after its parameters
    d = digest(b"Content-Type: text/html; format=flowed\r\n\r\n<p>")
    assert bodystructure(d, extensible=False) == (
        b'("text" "html" ("format" "flowed" "charset" "us-ascii") NIL NIL "7BIT" 3 0)'
    )
    # a non-text type without parameters has NIL, and no line count
    d = digest(b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBO\r\n")
    assert bodystructure(d, extensible=False) == b'("image" "png" NIL NIL NIL "base64" 6)'


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_renders_valid_grammar(path: Path):
    check_rendering(digest(path.read_bytes()))


def test_bombs_render():
    wide = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n" + b"".join(
        b"--z\r\n\r\n%d\r\n" % i for i in range(1000)) + b"--z--\r\n"
    d = digest(wide)
    check_rendering(d)
    assert bodystructure(d, False).count(b'("text" "plain"') == 1000
    deep = b"Content-Type: message/rfc822\r\n\r\n" * 300 + b"Subject: core\r\n\r\ncore\r\n"
    check_rendering(digest(deep))


# --- BODY[section] ----------------------------------------------------------------------------


def between(data: bytes, start: bytes, end: bytes) -> bytes:
    """data from the first ``start`` up to (excluding) the next ``end``."""
    first = data.index(start)
    return data[first : data.index(end, first)]


RFC3501_SECTIONS = [
    ((), "HEADER", None, lambda m: m[: m.index(b"\r\n\r\n") + 4]),
    ((), "TEXT", None, lambda m: m[m.index(b"\r\n\r\n") + 4 :]),
    ((1,), None, None, lambda m: b"part 1 text"),
    ((1, 1), None, None, lambda m: b""),  # a leaf part has nothing below it (Dovecot alike)
    ((2,), None, None, lambda m: b"cGFydCAy"),
    ((3,), None, None, lambda m: between(m, b"From: Inner Three", b"--B--") + b"--B--\r\n"),
    ((3,), "HEADER", None, lambda m: between(m, b"From: Inner Three", b"--B\r\n")),
    ((3,), "TEXT", None, lambda m: between(m, b"--B\r\n", b"--B--") + b"--B--\r\n"),
    ((3,), "MIME", None, lambda m: b"Content-Type: MESSAGE/RFC822\r\n\r\n"),
    ((3, 1), None, None, lambda m: b"part 3.1 text"),
    ((3, 1), "MIME", None, lambda m: b"Content-Type: TEXT/PLAIN\r\n\r\n"),
    ((3, 2), None, None, lambda m: b"part 3.2 data"),
    ((4,), None, None, lambda m: between(m, b"--C\r\n", b"--C--") + b"--C--"),
    ((4, 1), None, None, lambda m: b"R0lGODlhAQABAAAAACw="),
    ((4, 1), "MIME", None, lambda m: b"Content-Type: IMAGE/GIF\r\nContent-Transfer-Encoding: base64\r\n\r\n"),
    ((4, 2), "HEADER", None, lambda m: between(m, b"From: Inner Four", b"--D\r\n")),
    ((4, 2), "TEXT", None, lambda m: between(m, b"--D\r\n", b"--D--") + b"--D--\r\n"),
    ((4, 2, 1), None, None, lambda m: b"part 4.2.1 text"),
    ((4, 2, 2), None, None, lambda m: between(m, b"--E\r\n", b"--E--") + b"--E--"),
    ((4, 2, 2, 1), None, None, lambda m: b"part 4.2.2.1 text"),
    ((4, 2, 2, 2), None, None, lambda m: b"part 4.2.2.2 <bold>rich</bold>"),
    ((4, 2, 2, 2), "mime", None, lambda m: b"Content-Type: TEXT/RICHTEXT\r\n\r\n"),
    ((3,), "HEADER.FIELDS", ["subject"], lambda m: b"Subject: part 3\r\n\r\n"),
    ((4, 2), "HEADER.FIELDS.NOT", ["FROM", "subject"],
     lambda m: b"Content-Type: MULTIPART/MIXED; boundary=D\r\n\r\n"),
    # nothing there: empty (as Dovecot)
    ((5,), None, None, lambda m: b""),
    ((0,), None, None, lambda m: b""),
    ((1, 2), None, None, lambda m: b""),
    ((3, 3), None, None, lambda m: b""),
    ((4, 2, 2, 3), None, None, lambda m: b""),
    ((1,), "HEADER", None, lambda m: b""),  # not a message/rfc822 part
    ((1,), "TEXT", None, lambda m: b""),
    ((), "MIME", None, lambda m: b""),
    ((), "BOGUS", None, lambda m: b""),
]


@pytest.mark.parametrize(("part", "spec", "fields", "expected"), RFC3501_SECTIONS)
def test_rfc3501_section_table(part, spec, fields, expected):
    data, d = load("rfc3501_sections.eml")
    reader = Reader(data)
    want = expected(data)
    assert section(reader, d, part, spec, fields, None) == want
    span = section_range(d, part, spec)
    if spec is not None and spec.upper().startswith("HEADER.FIELDS"):
        assert span is None
    else:
        assert span is not None and data[span[0] : span[0] + span[1]] == want
        assert reader.calls == ([(span[0], span[1])] if span[1] else [])  # only what is needed


def test_whole_message_and_rfc822_aliases():
    data, d = load("simple.eml")
    reader = Reader(data)
    assert section(reader, d, (), None, None, None) == data
    assert section_range(d, (), None) == (0, len(data))
    assert section(reader, d, (), "RFC822.HEADER", None, None) == section(reader, d, (), "HEADER", None, None)
    assert section(reader, d, (), "RFC822.TEXT", None, None) == section(reader, d, (), "TEXT", None, None)
    # part 1 of a non-multipart message is its body
    assert section(reader, d, (1,), None, None, None) == section(reader, d, (), "TEXT", None, None)
    assert section(reader, d, (2,), None, None, None) == b""
    assert locate(d, (1,)) is d.root and locate(d, (2,)) is None
    # ... and nothing lies below that part: 1.1, 1.1.1.1, 1.1.MIME are empty (they gave part 1)
    for numbers in ((1, 1), (1, 1, 1, 1)):
        assert locate(d, numbers) is None
        assert section(reader, d, numbers, None, None, None) == b""
    assert section(reader, d, (1, 1), "MIME", None, None) == b""
    # inside message/rfc822 the embedded message's "1" is its single part again
    nested = digest(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nfirst\r\n--b\r\n"
                    b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ninner\r\n--b--\r\n")
    inner = nested.root.children[1].message[1]
    assert locate(nested, (2, 1)) is inner and locate(nested, (2, 1, 1)) is None
    assert locate(nested, (1, 1)) is None


def test_header_fields_selection_keeps_folding_and_order():
    data, d = load("simple.eml")
    reader = Reader(data)
    got = section(reader, d, (), "HEADER.FIELDS", ["date", "RECEIVED", "x-absent"], None)
    received = between(data, b"Received:", b"Date:")
    date = between(data, b"Date:", b"From:")
    assert got == received + date + b"\r\n"
    not_got = section(reader, d, (), "HEADER.FIELDS.NOT", ["Received", "return-path", "date", "from",
                                                            "subject", "to", "message-id", "mime-version"], None)
    assert not_got == b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
    assert section(reader, d, (), "HEADER.FIELDS", ["nothing"], None) == b"\r\n"
    assert section(reader, d, (), "HEADER.FIELDS", ["subject"], (3, 5)) == b"ject:"
    # bare LF messages keep their line ends; a header without final newline is completed, and a
    # message with no body and no blank line gets no blank line (RFC 3501 6.4.5), as in BODY[HEADER]
    data, d = load("bare_lf.eml")
    assert section(Reader(data), d, (), "HEADER.FIELDS", ["subject"], None) == b"Subject: bare LF line endings\n\n"
    for message in (b"Subject: cut", b"Subject: cut\r\n"):
        d = digest(message)
        for spec, names in (("HEADER.FIELDS", ["Subject"]), ("HEADER.FIELDS.NOT", ["From"])):
            assert section(Reader(message), d, (), spec, names, None) == b"Subject: cut\r\n"
    d = digest(b"Subject: cut\r\n\r\n")
    assert section(Reader(b"Subject: cut\r\n\r\n"), d, (), "HEADER.FIELDS", ["Subject"], None) == (
        b"Subject: cut\r\n\r\n")
    d = digest(b"\r\nbody only\r\n")
    assert section(Reader(b"\r\nbody only\r\n"), d, (), "HEADER.FIELDS", ["Subject"], None) == b"\r\n"
    d = digest(b"\nbody only\n")   # an empty bare-LF header keeps its line end, as BODY[HEADER] does
    assert section(Reader(b"\nbody only\n"), d, (), "HEADER.FIELDS", ["Subject"], None) == b"\n"


def test_partial_semantics():
    data, d = load("simple.eml")
    reader = Reader(data)
    assert section(reader, d, (), None, None, (0, 10)) == data[:10]
    assert section(reader, d, (), None, None, (10, 5)) == data[10:15]
    assert section(reader, d, (), None, None, (len(data) - 3, 100)) == data[-3:]
    assert section(reader, d, (), None, None, (len(data), 10)) == b""
    assert section(reader, d, (), None, None, (len(data) + 50, 10)) == b""
    assert section(reader, d, (), None, None, (5, 0)) == b""
    assert section_range(d, (), None, (10, 5)) == (10, 5)
    assert section_range(d, (), "TEXT", (3, 4)) == (d.root.body_start + 3, 4)
    assert section_range(d, (), None, (len(data) + 1, 5))[1] == 0


def test_bare_lf_sections_are_exact_bytes():
    data, d = load("bare_lf.eml")
    reader = Reader(data)
    assert section(reader, d, (1,), None, None, None) == b"line one\nline two"
    assert section(reader, d, (2,), "MIME", None, None) == (
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n")
    assert binary_section(reader, d, (2,), None) == b"softbreak"


# --- BINARY -------------------------------------------------------------------------------------


def test_binary_decodes_transfer_encodings():
    data, d = load("alternative.eml")
    reader = Reader(data)
    plain = b"Caf\xe9 cr\xe8me br\xfbl\xe9e, soft line break here."
    assert binary_section(reader, d, (1,), None) == plain
    assert binary_size(reader, d, (1,)) == len(plain)
    html = binary_section(reader, d, (2,), None)
    assert html.startswith(b"<html><body><p>Caf\xc3\xa9") and html.endswith(b"</html>")
    assert binary_section(reader, d, (2,), (6, 6)) == b"<body>"
    assert binary_section(reader, d, (2,), (10_000, 6)) == b""
    assert binary_section(reader, d, (), None) == data
    assert binary_size(reader, d, ()) == len(data)
    assert binary_section(reader, d, (9,), None) == b"" and binary_size(reader, d, (9,)) == 0


def test_binary_size_of_identity_encodings_reads_nothing():
    data, d = load("mixed_attach.eml")
    reader = Reader(data)
    assert binary_size(reader, d, (1,)) == len(b"Please find the report attached.")
    assert reader.calls == []
    assert binary_section(reader, d, (2,), None) == b"%PDF-1.4\n%\xc7\xec\x8f\xa2\n"


def test_binary_unknown_cte():
    data, d = load("unknown_cte.eml")
    reader = Reader(data)
    with pytest.raises(UnknownCTE) as info:
        binary_section(reader, d, (1,), None)
    assert info.value.encoding == "x-uuencode"
    with pytest.raises(UnknownCTE):
        binary_size(reader, d, (1,))
    assert binary_section(reader, d, (2,), None) == b"a=b"  # CTE names are case-insensitive


def test_binary_of_composite_parts_is_raw() -> None:
    data, d = load("nested_rfc822.eml")
    reader = Reader(data)
    assert d.root.children is not None
    forwarded: Part = d.root.children[1]
    assert binary_section(reader, d, (2,), None) == data[forwarded.body_start : forwarded.body_end]
    assert binary_section(reader, d, (2, 1), None) == b"inner plain text"


# --- fuzzing: whatever the digest, rendering stays grammatical and sections stay in bounds -------

_SEEDS = [path.read_bytes() for path in SAMPLES]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data)))
        chunk = draw(st.sampled_from([b"\r\n", b"\n", b"--", b":", b";", b"\x00", b"\"", b"(", b"<", b"\xff",
                                      b"=?utf-8?q?=C3=A9?=", b"Content-Type: message/rfc822\r\n", b""]))
        data[pos : pos + draw(st.integers(0, 30))] = chunk
    return bytes(data)


def all_paths(part: Part, prefix: tuple[int, ...] = ()):
    children = part.children
    if part.message is not None:
        inner = part.message[1]
        children = inner.children if inner.children is not None else (inner,)
    for number, child in enumerate(children or (), start=1):
        path = prefix + (number,)
        yield path
        if child is not part and len(path) < 8:
            yield from all_paths(child, path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.tuples(st.integers(0, 300), st.integers(0, 300)))
def test_fuzz_rendering_and_sections(data: bytes, partial: tuple[int, int]):
    d = digest(data)
    check_rendering(d)
    reader = Reader(data)
    paths = [(), *list(all_paths(d.root))[:50]]
    for path in paths:
        for spec in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS"):
            got = section(reader, d, path, spec, ["subject", "from"], partial)
            whole = section(reader, d, path, spec, ["subject", "from"], None)
            assert got == whole[partial[0] : partial[0] + partial[1]]
        try:
            assert len(binary_section(reader, d, path, None)) == binary_size(reader, d, path)
        except UnknownCTE:
            pass



def test_header_fields_of_unusual_names_and_the_not_form_walk_the_fields() -> None:
    assert fetchmime._FieldPicker(["x y"], exclude=False).pattern is None       # a space in the name
    assert fetchmime._FieldPicker(["sübject"], exclude=False).pattern is None   # not ASCII
    assert fetchmime._FieldPicker(["subject"], exclude=True).pattern is None
    block = b"X Y: 1\r\nSubject: s\r\n\r\n"
    assert fetchmime._FieldPicker(["x y"], exclude=False).pick(block) == b"X Y: 1\r\n\r\n"
    assert fetchmime._FieldPicker(["x y"], exclude=True).pick(block) == b"Subject: s\r\n\r\n"
    assert fetchmime.picker(("To", "Cc"), False) is fetchmime.picker(("To", "Cc"), False)
