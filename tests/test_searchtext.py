"""midb.searchtext: decoded header values and body text for SEARCH."""

from __future__ import annotations

import base64
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from midb.mime import digest
from midb.searchtext import MAX_BODY_TEXT, body_text, fold, header_values, matches, part_headers_text

DATA = Path(__file__).parent / "data" / "mime"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_header_values_all_occurrences_decoded_in_order():
    data = (
        b"Received: from a\r\n\tby b\r\nX-Tag: =?iso-8859-1?q?caf=E9?=\r\nreceived: from c\r\n"
        b"Subject: s\r\n\r\nReceived: not a header\r\n"
    )
    d = digest(data)
    assert header_values(data, d, "RECEIVED") == ["from a by b", "from c"]
    assert header_values(data, d, "x-tag") == ["caf\u00e9"]
    assert header_values(data, d, "absent") == []
    assert header_values(data, d, "") == []


def test_header_values_only_look_at_the_top_level_header():
    data = load("nested_rfc822.eml")
    d = digest(data)
    assert header_values(data, d, "Subject") == ["Fwd: Forwarded"]
    assert header_values(data, d, "content-type") == ['multipart/mixed; boundary="outer"']


def test_body_text_decodes_transfer_encoding_charset_and_html():
    data = load("alternative.eml")
    text = body_text(data, digest(data))
    assert "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, soft line break here." in text
    assert "Fish & Chips" in text  # entity unescaped
    assert "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e" in text.split("\n", 1)[1]  # from the HTML part
    assert "<b>" not in text and "hidden" not in text  # tags and scripts are gone
    assert "multi-part message" not in text  # the preamble is no text part


def html_message(markup: str) -> bytes:
    return b"Content-Type: text/html; charset=utf-8\r\n\r\n" + markup.encode("utf-8")


def test_html_text_keeps_link_targets_and_drops_hidden_sections():
    markup = ('<p>Dear customer<a href="https://shop.example/invoice/12345?a=1&amp;b=2">your invoice</a>'
              "&nbsp;<IMG SRC='cid:logo' alt=x><a HREF=bare.html>z</a><script>var hidden=1</script "
              "><STYLE>.also{hidden}</style>after<!-- a comment -->end<!-- never closed <a href=gone>")
    data = html_message(markup)
    text = body_text(data, digest(data))
    assert "Dear customer" in text and "your invoice" in text and "after" in text and "end" in text
    assert text.splitlines()[-1] == "https://shop.example/invoice/12345?a=1&b=2 cid:logo bare.html"
    assert "hidden" not in text and "comment" not in text and "gone" not in text and "<" not in text
    assert matches(text, "INVOICE/12345") and not matches(text, "href")
    # inline images are no link to search for; "<!-->" is a whole (empty) comment, as in HTML5
    data = html_message('<!-->shown<!--->too<img src="data:image/png;base64,QUFBQQ=="><a href=x.html>y</a>')
    text = body_text(data, digest(data))
    assert "shown" in text and "too" in text and "QUFB" not in text and text.endswith("\nx.html")


def test_html_text_is_linear_in_unclosed_markup():
    """Each of these took minutes with patterns that rescan the rest from every "<" (holding the
    interpreter lock, so every session of the process waited); now a fraction of a second."""
    for markup in ("<" * 200_000, "<a href" * 50_000, "<script" * 50_000, "<!--" * 50_000,
                   "<p" * 100_000, '<a href="' * 50_000, "<script>" + "</script " * 50_000):
        data = html_message(markup + " tail")
        text = body_text(data, digest(data))
        assert len(text) <= len(markup) + 5


def test_body_text_includes_embedded_messages_and_skips_attachments():
    data = load("nested_rfc822.eml")
    text = body_text(data, digest(data))
    assert "see below" in text
    assert "Subject: Forwarded \u2713" in text  # the embedded header, decoded
    assert "inner plain text" in text and "inner html" in text
    data = load("mixed_attach.eml")
    text = body_text(data, digest(data))
    assert "Please find the report attached." in text
    assert "JVBERi0" not in text and "Reporting-MTA" not in text


MIME_FIELDS = (
    b"From: a@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
    b"--outer\r\nContent-Type: text/plain\r\n\r\nsee the files\r\n"
    b"--outer\r\nContent-Type: application/x-stuff; name=\"=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?=\"\r\n"
    b"Content-Description: described here\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''na%C3%AFve%20plan.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    b"--inner\r\nContent-Type: text/plain; x-inner-param=deep\r\n\r\ninner text\r\n--inner--\r\n"
    b"--outer--\r\n"
)


def test_part_headers_text_has_the_mime_fields_of_every_part_decoded():
    """RFC 9051 section 6.4.4: TEXT looks at the MIME header fields too (not the top-level header
    again, nor the embedded message's header, which body_text has)."""
    text = part_headers_text(MIME_FIELDS, digest(MIME_FIELDS))
    assert "Content-Description: described here" in text
    assert "application/x-stuff" in text
    assert "r\u00e9sum\u00e9.pdf" in text   # an encoded word, decoded
    assert "na\u00efve plan.pdf" in text   # an RFC 2231 value, decoded
    assert "x-inner-param: deep" not in text and "deep" in text   # the parts inside an embedded message
    assert "Subject:" not in text and "MIME-Version" not in text
    single = b"Subject: one part\r\nContent-Type: text/plain; name=x.txt\r\n\r\nbody\r\n"
    assert part_headers_text(single, digest(single)) == ""


def test_body_text_of_odd_messages():
    data = load("bare_lf.eml")
    assert body_text(data, digest(data)) == "line one\nline two\nsoftbreak"
    data = load("encoded_words.eml")
    assert body_text(data, digest(data)) == "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440\r\n"
    data = load("missing_headers.eml")
    assert body_text(data, digest(data)) == ""
    data = b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nna\xefve"
    assert body_text(data, digest(data)) == "na\u00efve"  # unknown charset: UTF-8, else latin-1
    data = b"Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    data += base64.b64encode("\u041c\u0438\u0440".encode("koi8-r"))
    assert body_text(data, digest(data)) == "\u041c\u0438\u0440"
    data = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-unknown\r\n\r\nraw text"
    assert body_text(data, digest(data)) == "raw text"


def test_body_text_is_bounded():
    data = b"Content-Type: text/plain\r\n\r\n" + b"0123456789" * (MAX_BODY_TEXT // 5)
    text = body_text(data, digest(data))
    assert len(text) == MAX_BODY_TEXT


def test_matches_is_case_insensitive_substring():
    assert matches("Hello World", "o wor")
    assert matches("Stra\u00dfe", "STRASSE")  # full case folding
    assert matches("\u0418\u0432\u0430\u043d", "\u0438\u0432\u0410")
    assert matches("anything", "")
    assert not matches("Hello", "help")
    assert fold("\u00dfA") == "ssa"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=1500), st.text(max_size=10))
def test_fuzz_search_text_never_raises(data: bytes, needle: str):
    d = digest(data)
    assert isinstance(body_text(data, d), str)
    assert isinstance(part_headers_text(data, d), str)
    for value in header_values(data, d, "subject"):
        matches(value, needle)
