"""midb.preview: the preview text of a message (RFC 8970), from its bytes and MIME digest."""

from __future__ import annotations

import base64

import pytest

from midb import mime, preview
from midb.preview import PREVIEW_CHARACTERS, READ_FIRST


def _preview_of(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return data[offset : offset + length]

    return preview.preview(read, mime.digest(data))


def test_plain_text_without_quotes_or_signature_on_one_line() -> None:
    assert _preview_of(
        "Subject: re\n\nHello Joe,\n\n> what you wrote\n  > and more\nThis is my   reply.\n"
        "Second\tline.\n\n-- \nAlice, Example Ltd\n"
    ) == "Hello Joe, This is my reply. Second line."


def test_a_signature_line_first_is_text_not_a_cut() -> None:
    assert _preview_of("Subject: x\n\n-- \nonly a signature\n") == "-- only a signature"


def test_html_is_its_text_without_head_scripts_styles_or_links() -> None:
    assert _preview_of(
        "Subject: h\nContent-Type: text/html; charset=utf-8\n\n"
        "<html><head><title>Newsletter</title><style>p {color: red}</style></head>"
        "<body><script>var x = 1;</script><p>Caf&eacute; &amp; bar</p>"
        "<a href=\"https://example.org/track\">Read more</a><!-- hidden --></body></html>\n"
    ) == "Café & bar Read more"


def test_the_plain_alternative_goes_before_the_html() -> None:
    assert _preview_of(
        "Subject: a\nContent-Type: multipart/alternative; boundary=b\n\n"
        "--b\nContent-Type: text/html\n\n<p>the HTML</p>\n"
        "--b\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
        "Gr=FC=DFe aus K=F6ln\n--b--\n"
    ) == "Grüße aus Köln"


def test_html_alone_and_the_text_inside_related_parts() -> None:
    assert _preview_of(
        "Subject: r\nContent-Type: multipart/mixed; boundary=m\n\n"
        "--m\nContent-Type: multipart/related; boundary=r\n\n"
        "--r\nContent-Type: text/html\n\n<div>Inline <b>picture</b> below</div>\n"
        "--r\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\niVBORw0K\n--r--\n"
        "--m\nContent-Type: text/plain\nContent-Disposition: attachment; filename=notes.txt\n\nattached notes\n"
        "--m--\n"
    ) == "Inline picture below"


def test_base64_utf8_text_and_control_characters() -> None:
    body = base64.b64encode("Grüße\x07 — “quoted”\x00 日本語\ufffd".encode()).decode()
    assert _preview_of(
        f"Subject: u\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n{body}\n"
    ) == "Grüße — “quoted” 日本語"


@pytest.mark.parametrize("message", [
    "Subject: empty\n\n",
    "Subject: blank\n\n  \n\t\n",
    "Subject: only an attachment\nContent-Type: multipart/mixed; boundary=b\n\n"
    "--b\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0x\n--b--\n",
    "Subject: encrypted\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n"
    "--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n"
    "--b\nContent-Type: application/octet-stream\n\n-----BEGIN PGP MESSAGE-----\n--b--\n",
    "Subject: a text attachment alone\nContent-Type: text/plain\nContent-Disposition: attachment\n\nfile\n",
    "Subject: calendar\nContent-Type: text/calendar\n\nBEGIN:VCALENDAR\n",
])
def test_no_text_to_show_is_the_empty_preview(message: str) -> None:
    assert _preview_of(message) == ""


def test_a_forwarded_message_alone_shows_its_text() -> None:
    assert _preview_of(
        "Subject: Fwd\nContent-Type: message/rfc822\n\nSubject: inner\nFrom: a@example.org\n\nInner text\n"
    ) == "Inner text"


def test_the_preview_is_cut_at_its_length() -> None:
    shown = _preview_of("Subject: long\n\n" + "abcdefghi " * 100 + "\n")
    assert len(shown) == PREVIEW_CHARACTERS - 1   # the cut falls on a space, which is not kept
    assert shown.startswith("abcdefghi abcdefghi") and shown.endswith("abcdefghi")


def test_a_long_quotation_first_is_read_past() -> None:
    quoted = "> " + "q" * 70 + "\n"
    body = quoted * (2 * READ_FIRST // len(quoted)) + "The answer comes after the quotation.\n"
    assert _preview_of("Subject: q\n\n" + body) == "The answer comes after the quotation."


def test_only_the_start_of_a_large_part_is_read() -> None:
    data = ("Subject: big\r\n\r\n" + "word " * 200_000).encode()
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return data[offset : offset + length]

    assert preview.preview(read, mime.digest(data)).startswith("word word")
    assert [length for _offset, length in reads] == [READ_FIRST]


def test_a_character_split_by_the_read_is_dropped() -> None:
    part = mime.digest(b"Content-Type: text/plain; charset=utf-8\r\n\r\n\xc3\xa9t\xc3\xa9").root
    assert preview.text_preview(b"\xc3\xa9t\xc3", part, whole=False) == "ét"


def test_a_blank_plain_alternative_gives_way_to_the_html() -> None:
    assert _preview_of(
        "Subject: a\nContent-Type: multipart/alternative; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\n   \n> only quoted\n"
        "--b\nContent-Type: text/html\n\n<p>the HTML text</p>\n--b--\n"
    ) == "the HTML text"


@pytest.mark.parametrize("charset", ["", "; charset=us-ascii", "; charset=iso-8859-1"])
def test_a_utf8_character_split_by_the_first_read_leaves_the_text_utf8(charset: str) -> None:
    """An unlabelled part (or one labelled ASCII or Latin-1) that is UTF-8 is read as UTF-8 when
    it is valid UTF-8: the first read's cut must not make it invalid (review59)."""
    for pad in range(4):
        text = "x" * pad + "Schöne Grüße aus München " * 1000
        shown = _preview_of(f"Subject: u\nContent-Type: text/html{charset}\n\n<p>{text}</p>\n")
        assert shown.startswith("x" * pad + "Schöne Grüße aus München"), (pad, shown[:40])


def test_a_preheader_padded_with_invisible_joiners_shows_only_its_text() -> None:
    assert _preview_of(
        "Subject: n\nContent-Type: text/html; charset=utf-8\n\n"
        "<div style=\"display:none\">Our sale starts today" + "&zwnj;&nbsp;" * 100 + "</div><p>Dear reader,</p>\n"
    ) == "Our sale starts today Dear reader,"


def test_invisible_format_characters_are_left_out() -> None:
    assert _preview_of(
        "Subject: f\nContent-Type: text/plain; charset=utf-8\n\n"
        "\ufeffPay\u200b now \u202eevil\u202c soft\u00adhyphen \U0001F468\u200d\U0001F469\n"
    ) == "Pay now evil softhyphen \U0001F468\u200d\U0001F469"   # the joiner of an emoji sequence stays
