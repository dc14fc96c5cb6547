"""PREVIEW (RFC 8970) conversations: FETCH PREVIEW and PREVIEW (LAZY), from midb.preview."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

PLAIN = (b"From: bob@example.org\r\nSubject: plans\r\n\r\nHi Alice,\r\n> your question\r\n"
         b"Tomorrow at \"three\" works.\r\n-- \r\nBob\r\n")
LATIN = (b"From: bob@example.org\r\nSubject: hello\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe aus K=F6ln\r\n")
ATTACHMENT = (b"From: bob@example.org\r\nSubject: scan\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
              b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
              b"JVBERi0x\r\n--b--\r\n")


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        for data in (PLAIN, LATIN, ATTACHMENT):
            conversation.add_message(data=data)
        conversation.select()
        yield conversation


def test_preview_is_advertised(conv: Conversation) -> None:
    assert "PREVIEW" in conv.capabilities()


def test_fetch_preview_quotes_ascii_sends_8bit_as_a_literal_and_gives_the_empty_string(conv: Conversation) -> None:
    conv.script("""
        C: a1 FETCH 1:3 PREVIEW
        S: * 1 FETCH (PREVIEW "Hi Alice, Tomorrow at \\"three\\" works.")
        S: * 2 FETCH (PREVIEW {17}
        S: Grüße aus Köln)
        S: * 3 FETCH (PREVIEW "")
        S: a1 OK FETCH completed
    """)


def test_lazy_is_answered_as_without_it_and_in_every_position(conv: Conversation) -> None:
    conv.script("""
        C: a1 FETCH 1 (FLAGS PREVIEW (LAZY) RFC822.SIZE)
        S: * 1 FETCH (FLAGS (\\Recent) PREVIEW "Hi Alice, Tomorrow at \\"three\\" works." RFC822.SIZE {n})
        S: a1 OK FETCH completed
        C: a2 UID FETCH 3 preview (lazy)
        S: * 3 FETCH (UID 3 PREVIEW "")
        S: a2 OK FETCH completed
        C: a3 UID FETCH 3 PREVIEW (CHANGEDSINCE 1)
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * 3 FETCH (UID 3 MODSEQ ({n}) PREVIEW "")
        S: a3 OK FETCH completed
        C: a4 FETCH 1 (PREVIEW (LAZY FUZZY))
        S: a4 BAD {*}
        C: a5 FETCH 1 PREVIEW ()
        S: a5 BAD {*}
    """)


def test_utf8_accept_sends_the_text_quoted(conv: Conversation) -> None:
    conv.command("UNSELECT")   # ENABLE is for the authenticated state
    conv.command("ENABLE UTF8=ACCEPT")
    conv.select()
    conv.script("""
        C: a2 FETCH 2 PREVIEW
        S: * 2 FETCH (PREVIEW "Grüße aus Köln")
        S: a2 OK FETCH completed
    """)


def test_a_preview_does_not_set_seen(conv: Conversation) -> None:
    conv.script("""
        C: a1 FETCH 1 PREVIEW
        S: * 1 FETCH (PREVIEW {*})
        S: a1 OK FETCH completed
        C: a2 FETCH 1 FLAGS
        S: * 1 FETCH (FLAGS (\\Recent))
        S: a2 OK FETCH completed
    """)


def _previews(lines: list[bytes]) -> list[bytes]:
    return [line[line.index(b"PREVIEW "):].split(b" BODY[", 1)[0].rstrip(b")") for line in lines[:-1]]


def test_the_listing_path_and_the_general_path_give_the_same_previews(conv: Conversation) -> None:
    conv.add_message(data=b"Subject: html\r\nContent-Type: text/html\r\n\r\n<p>Caf&eacute;</p>\r\n")
    conv.command("NOOP")
    listed = conv.command("FETCH 1:* (UID FLAGS PREVIEW)")   # the listing path, made and kept
    again = conv.command("FETCH 1:* (UID FLAGS PREVIEW)")    # from what it kept
    general = conv.command("FETCH 1:* (PREVIEW BODY.PEEK[1]<0.1>)")
    assert _previews(listed) == _previews(again) == _previews(general)
    assert _previews(listed)[3] == b'PREVIEW {5}\r\nCaf\xc3\xa9'
