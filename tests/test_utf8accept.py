"""UTF8=ACCEPT (RFC 6855): ENABLE, UTF-8 mailbox names, APPEND's UTF8 data item, UTF-8 in quoted
strings (ENVELOPE), and the CHARSET rules of SEARCH, SORT and THREAD once it is enabled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

UTF8_MESSAGE = "From: Jörg <jörg@bücher.example>\r\nSubject: Grüße aus Köln\r\n\r\nhallo\r\n".encode()


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def utf8_append(conv: Conversation, tag: str, mailbox: bytes = b"INBOX", data: bytes = UTF8_MESSAGE) -> list[bytes]:
    """APPEND with RFC 6855's ``UTF8 (~{n+}...)`` data item (a non-synchronising literal8)."""
    return conv.send(tag.encode() + b" APPEND " + mailbox + b" UTF8 (~{%d+}\r\n" % len(data) + data + b")\r\n")


def test_capability_is_offered_after_authentication_only(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        greeting = conv.greeting()[0]
        assert b"UTF8=ACCEPT" not in greeting
        conv.script("""
            C: c1 ENABLE UTF8=ACCEPT
            S: c1 BAD {*}
        """)
        conv.login()
        capabilities = conv.command("CAPABILITY")[0].split()
        assert b"UTF8=ACCEPT" in capabilities
        assert not any(name.startswith(b"UTF8=ONLY") for name in capabilities)


def test_enable(conv: Conversation) -> None:
    conv.script("""
        C: e1 ENABLE utf8=accept
        S: * ENABLED UTF8=ACCEPT
        S: e1 OK ENABLE completed
        C: e2 ENABLE UTF8=ACCEPT
        S: * ENABLED
        S: e2 OK ENABLE completed
    """)
    conv.select()
    conv.script("""
        C: e3 ENABLE UTF8=ACCEPT
        S: e3 BAD {*}
    """)


def test_utf8_mailbox_names_round_trip(conv: Conversation) -> None:
    conv.command("ENABLE UTF8=ACCEPT")
    conv.script("""
        C: m1 CREATE "Entwürfe/Ärger"
        S: m1 OK [MAILBOXID ({*})] CREATE completed
        C: m2 CREATE "R&D"
        S: m2 OK [MAILBOXID ({*})] CREATE completed
        C: m3 LIST "" "Entw*"
        S: * LIST (\\HasChildren) "/" "Entwürfe"
        S: * LIST (\\HasNoChildren) "/" "Entwürfe/Ärger"
        S: m3 OK LIST completed
        C: m4 LIST "" "R&D"
        S: * LIST (\\HasNoChildren) "/" R&D
        S: m4 OK LIST completed
        C: m5 STATUS "Entwürfe/Ärger" (MESSAGES)
        S: * STATUS "Entwürfe/Ärger" (MESSAGES 0)
        S: m5 OK STATUS completed
        C: m6 RENAME "Entwürfe/Ärger" "Entwürfe/Freude"
        S: m6 OK RENAME completed
        C: m7 SELECT "Entwürfe/Freude"
        S: * FLAGS ({*})
        S: * OK [PERMANENTFLAGS ({*})] {*}
        S: * 0 EXISTS
        S: * 0 RECENT
        S: * OK [UIDVALIDITY {n}] {*}
        S: * OK [UIDNEXT 1] {*}
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: m7 OK [READ-WRITE] SELECT completed
    """)
    # A client without UTF8=ACCEPT sees (and names) the same mailboxes in modified UTF-7.
    other = conv.second_session()
    other.login()
    other.script("""
        C: o1 LIST "" "*"
        S: * LIST {*} INBOX
        S: * LIST {*} Archive
        S: * LIST {*} Drafts
        S: * LIST (\\HasChildren) "/" Entw&APw-rfe
        S: * LIST (\\HasNoChildren) "/" Entw&APw-rfe/Freude
        S: * LIST {*} Junk
        S: * LIST (\\HasNoChildren) "/" R&-D
        S: * LIST {*} Sent
        S: * LIST {*} Trash
        S: o1 OK LIST completed
        C: o2 CREATE Caf&AOk-
        S: o2 OK [MAILBOXID ({*})] CREATE completed
    """)
    conv.script("""
        C: m8 LIST "" "Caf*"
        S: * LIST (\\HasNoChildren) "/" "Café"
        S: m8 OK LIST completed
        C: m9 LIST "" "Caf&AOk-"
        S: m9 OK LIST completed
    """)


def test_imap4rev2_also_means_utf8_mailbox_names(conv: Conversation) -> None:
    conv.command('CREATE "Entw&APw-rfe"')
    conv.command("ENABLE IMAP4rev2")
    conv.script("""
        C: r1 LIST "" "Entw*"
        S: * LIST (\\HasNoChildren) "/" "Entwürfe"
        S: r1 OK LIST completed
    """)


def test_append_utf8_data_item_needs_enable(conv: Conversation) -> None:
    assert utf8_append(conv, "a1") == [b"a1 BAD [CLIENTBUG] UTF8=ACCEPT must be enabled first"]
    # MULTIAPPEND: one UTF8 item makes the whole command BAD; nothing is stored.
    plain = b"Subject: plain\r\n\r\nx\r\n"
    lines = conv.send(b"a2 APPEND INBOX {%d+}\r\n" % len(plain) + plain
                      + b" UTF8 (~{%d+}\r\n" % len(UTF8_MESSAGE) + UTF8_MESSAGE + b")\r\n")
    assert lines == [b"a2 BAD [CLIENTBUG] UTF8=ACCEPT must be enabled first"]
    assert conv.store.messages("alice", conv.folder("INBOX").id) == []
    conv.command("ENABLE UTF8=ACCEPT")
    lines = utf8_append(conv, "a3", "\"Entwürfe\"".encode())
    assert lines[-1].startswith(b"a3 NO [TRYCREATE]")
    conv.command('CREATE "Entwürfe"')
    lines = utf8_append(conv, "a4", "\"Entwürfe\"".encode())
    assert lines[-1].startswith(b"a4 OK [APPENDUID ")
    conv.select("Entwürfe")
    lines = conv.command("FETCH 1 (BODY.PEEK[] RFC822.SIZE)")
    assert lines[0] == (b"* 1 FETCH (BODY[] {%d}\r\n" % len(UTF8_MESSAGE) + UTF8_MESSAGE
                        + b" RFC822.SIZE %d)" % len(UTF8_MESSAGE))


def test_envelope_carries_utf8_in_quoted_strings(conv: Conversation) -> None:
    latin1 = b"From: caf\xe9@example.org\r\nSubject: Caf\xe9 cr\xe8me\r\n\r\nx\r\n"
    conv.add_message(data=UTF8_MESSAGE)
    conv.add_message(data=latin1)
    other = conv.second_session()
    other.login()
    conv.command("ENABLE UTF8=ACCEPT")
    conv.select()
    conv.script("""
        C: f1 FETCH 1:2 ENVELOPE
        S: * 1 FETCH (ENVELOPE (NIL "Grüße aus Köln" (("Jörg" NIL "jörg" "bücher.example")) (("Jörg" NIL "jörg" "bücher.example")) (("Jörg" NIL "jörg" "bücher.example")) NIL NIL NIL NIL NIL))
        S: * 2 FETCH (ENVELOPE (NIL "Café crème" ((NIL NIL "café" "example.org")) ((NIL NIL "café" "example.org")) ((NIL NIL "café" "example.org")) NIL NIL NIL NIL NIL))
        S: f1 OK FETCH completed
    """)
    # Without UTF8=ACCEPT, 8-bit strings go out as literals, byte for byte.
    other.select()
    lines = other.command("FETCH 1 ENVELOPE")
    subject = "Grüße aus Köln".encode()
    assert b"ENVELOPE (NIL {%d}\r\n" % len(subject) + subject + b" ((" in lines[0]


def test_search_charset_rules(conv: Conversation) -> None:
    conv.add_message(data=UTF8_MESSAGE)
    conv.select()
    conv.script("""
        C: s1 SEARCH CHARSET UTF-8 SUBJECT "Grüße"
        S: * SEARCH 1
        S: s1 OK SEARCH completed
    """)
    conv.command("UNSELECT")
    conv.command("ENABLE UTF8=ACCEPT")
    conv.select()
    conv.script("""
        C: s2 SEARCH CHARSET UTF-8 SUBJECT "Grüße"
        S: s2 BAD [CLIENTBUG] CHARSET is not allowed after ENABLE UTF8=ACCEPT
        C: s3 SEARCH CHARSET US-ASCII ALL
        S: s3 BAD [CLIENTBUG] CHARSET is not allowed after ENABLE UTF8=ACCEPT
        C: s4 SEARCH SUBJECT "grüße"
        S: * SEARCH 1
        S: s4 OK SEARCH completed
        C: s5 SORT (SUBJECT) UTF-8 FROM "jörg"
        S: * SORT 1
        S: s5 OK SORT completed
        C: s6 THREAD ORDEREDSUBJECT US-ASCII ALL
        S: s6 BAD [BADCHARSET (UTF-8)] Only the UTF-8 charset is allowed after ENABLE UTF8=ACCEPT
    """)
