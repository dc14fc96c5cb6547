"""Dovecot imaptest's scripts for this session's extensions, ported to conversations: catenate,
catenate-multiappend (RFC 4469) and notify (RFC 5465), in repository dovecot/imaptest,
src/tests/. Each step of a script is a step here, in the same order, with the same data.

How the scripts read is in tests/imaptest_steps.py.

Differences, each kept on purpose (noted at the step too): imaptest does not check the untagged
EXISTS an APPEND into the selected mailbox causes (it keeps them for its own model), so those are
left out of the comparison here, and the checks are stricter where imaptest only says ``no``:
the response code (BADURL, TRYCREATE) is checked and that nothing of a refused command was stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation
from imaptest_steps import MAILBOX, lit, no, ok, text


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def fetch_body(seq: int, body: str, uid: int | None = None) -> bytes:
    """``* seq FETCH ([UID uid ]BODY[] {n}CRLF body)`` as a logical line."""
    data = text(body)
    uid_item = b"" if uid is None else b"UID %d " % uid
    return b"* %d FETCH (%sBODY[] {%d}\r\n%s)" % (seq, uid_item, len(data), data)


def without_exists(lines: list[bytes]) -> list[bytes]:
    # imaptest tracks EXISTS for its model of the mailbox and does not compare it with the script.
    return [line for line in lines if not line.endswith(b" EXISTS") and not line.endswith(b" RECENT")]


# -- catenate ------------------------------------------------------------------------------------


def test_catenate(conv: Conversation) -> None:
    """imaptest src/tests/catenate (state: created)."""
    box, box2 = MAILBOX, MAILBOX + "2"
    ok(conv, b"CREATE " + box.encode())
    flags = b"(\\Seen \\Flagged) "
    ok(conv, b"APPEND " + box.encode() + b" " + flags + b"CATENATE (TEXT " + lit("From: foo@example.com\n\nHello world body") + b")")
    ok(conv, b"APPEND " + box.encode() + b" " + flags + b"CATENATE (TEXT "
       + lit("From: foo2@example.com\n\nLookslike: header\n\nAnother body") + b")")
    untagged = ok(conv, b"SELECT " + box.encode())
    uidv = conv.folder(box).uidvalidity
    assert any(line.startswith(b"* OK [UIDVALIDITY %d]" % uidv) for line in untagged), untagged
    first, second = ok(conv, b"FETCH 1:2 (UID BODY.PEEK[])")
    assert first.startswith(b"* 1 FETCH (UID ") and second.startswith(b"* 2 FETCH (UID ")
    uid, uid2 = int(first.split()[4]), int(second.split()[4])  # $uid, $uid2
    assert first == fetch_body(1, "From: foo@example.com\n\nHello world body", uid)
    assert second == fetch_body(2, "From: foo2@example.com\n\nLookslike: header\n\nAnother body", uid2)

    ok(conv, b"CREATE " + box2.encode())
    to2 = b"APPEND " + box2.encode() + b" " + flags + b"CATENATE "

    def url(spec: str) -> bytes:
        return b'URL "/' + spec.format(box=box, uidv=uidv, uid=uid, uid2=uid2).encode() + b'"'

    ok(conv, to2 + b"(" + url("{box}/;uid={uid}/;section=header") + b" TEXT " + lit("body1") + b")")
    ok(conv, to2 + b"(" + url("{box};uidvalidity={uidv}/;uid={uid}/;section=header") + b" TEXT " + lit("body2") + b")")
    ok(conv, to2 + b"(" + url("{box}/;uid={uid2}/;section=text") + b" TEXT " + lit("body3") + b")")
    ok(conv, to2 + b"(" + url("{box}/;uid={uid2}/;section=1") + b" TEXT " + lit("body4") + b")")
    ok(conv, to2 + b"(TEXT " + lit("From: new@example.com\nSubject: test header\n\n") + b" "
       + url("{box}/;uid={uid}/;section=1") + b" TEXT " + lit("\nsuffix") + b")")
    ok(conv, to2 + b"(TEXT " + lit("From: hdr1@example.com\n") + b" TEXT " + lit("Subject: hdr2\n")
       + b" TEXT " + lit("\nbody6") + b")")
    # ;partial= beyond the end of the message: no octets (RFC 5092's partial-range is an offset).
    ok(conv, to2 + b"(" + url("{box}/;uid={uid2}/;partial=100000.1") + b" TEXT " + lit("Hdr: foo\n\nbody7") + b")")

    # Invalid URLs (a UIDVALIDITY that is not the mailbox's) anywhere among the parts: NO, and
    # here also [BADURL] and nothing stored (imaptest checks the NO only).
    wrong = url("{box};uidvalidity=12345/;uid={uid}/;section=header")
    right = url("{box}/;uid={uid}/;section=header")
    refused = [
        b"(" + wrong + b" TEXT " + lit("body\n") + b")",
        b"(TEXT " + lit("hdr: 1\n") + b" " + wrong + b")",
        b"(TEXT " + lit("hdr: 1\n") + b" " + wrong + b" TEXT " + lit("hdr: 2\n") + b")",
        b"(TEXT " + lit("hdr: 1\n") + b" " + wrong + b" TEXT " + lit("hdr: 2\n") + b" " + wrong + b" TEXT "
        + lit("hdr: 3\n") + b")",
        b"(TEXT " + lit("hdr: 1\n") + b" " + right + b" TEXT " + lit("hdr: 2\n") + b" " + wrong + b" TEXT "
        + lit("hdr: 3\n") + b")",
        b"(TEXT " + lit("hdr: 1\n") + b" " + wrong + b" TEXT " + lit("hdr: 2\n") + b" " + right + b" TEXT "
        + lit("hdr: 3\n") + b")",
        b"(" + wrong + b" " + right + b")",
        b"(" + right + b" " + wrong + b")",
    ]
    for parts in refused:
        line = no(conv, to2 + parts, b"BADURL ")
        assert b";UIDVALIDITY=12345/" in line.upper(), line
    assert conv.folder(box2).messages == 7

    ok(conv, b"SELECT " + box2.encode())
    assert ok(conv, b"FETCH 1:* BODY.PEEK[]") == [
        fetch_body(1, "From: foo@example.com\n\nbody1"),
        fetch_body(2, "From: foo@example.com\n\nbody2"),
        fetch_body(3, "Lookslike: header\n\nAnother bodybody3"),
        fetch_body(4, "Lookslike: header\n\nAnother bodybody4"),
        fetch_body(5, "From: new@example.com\nSubject: test header\n\nHello world body\nsuffix"),
        fetch_body(6, "From: hdr1@example.com\nSubject: hdr2\n\nbody6"),
        fetch_body(7, "Hdr: foo\n\nbody7"),
    ]

    # Appending to a mailbox that does not exist: NO [TRYCREATE], before any URL is looked at
    # (the last one also has an invalid URL: TRYCREATE still wins).
    missing = b"APPEND " + MAILBOX.encode() + b"nonexistent "
    section1 = url("{box}/;uid={uid}/;section=1")
    no(conv, missing + b"CATENATE (" + section1 + b")", b"TRYCREATE]")
    no(conv, missing + b"CATENATE (" + section1 + b" TEXT " + lit("hello") + b")", b"TRYCREATE]")
    no(conv, missing + b"CATENATE (TEXT " + lit("hello") + b" " + section1 + b")", b"TRYCREATE]")
    no(conv, missing + flags + b"CATENATE (TEXT " + lit("hdr1: 1\n") + b" " + wrong + b" TEXT " + lit("hdr2: 2\n")
       + b" " + right + b" TEXT " + lit("hdr3: 3\n") + b")", b"TRYCREATE]")
    # The same with a synchronising literal first: refused before its octets are asked for.
    tag = conv.next_tag().encode()
    assert conv.send(tag + b" " + missing + b"CATENATE (TEXT {5}\r\n") == [tag + b" NO [TRYCREATE] Mailbox does not exist"]
    assert conv.folder(box2).messages == 7
    ok(conv, b"NOOP")


# -- catenate-multiappend ------------------------------------------------------------------------


def test_catenate_multiappend(conv: Conversation) -> None:
    """imaptest src/tests/catenate-multiappend (state: created; CATENATE and MULTIAPPEND)."""
    box = MAILBOX
    ok(conv, b"CREATE " + box.encode())
    append = b"APPEND " + box.encode() + b" "
    ok(conv, append + b"CATENATE (TEXT " + lit("From: foo@example.com\n\nHello world body") + b")"
       + b" CATENATE (TEXT " + lit("From: bar@example.com\n\nSecond body") + b")")
    ok(conv, b"SELECT " + box.encode())
    first, second = ok(conv, b"FETCH 1:2 (UID BODY.PEEK[])")
    uid, uid2 = int(first.split()[4]), int(second.split()[4])
    assert first == fetch_body(1, "From: foo@example.com\n\nHello world body", uid)
    assert second == fetch_body(2, "From: bar@example.com\n\nSecond body", uid2)

    def url(spec: str) -> bytes:
        return b'URL "/' + spec.format(box=box, uid=uid, uid2=uid2).encode() + b'"'

    def append_selected(messages: bytes) -> None:
        # Into the selected mailbox: the EXISTS it causes is not compared (see the module
        # docstring), and nothing else may come.
        assert without_exists(ok(conv, append + messages)) == []

    append_selected(b"CATENATE (" + url("{box}/;uid={uid}/;section=header") + b" TEXT " + lit("body1")
                    + b") CATENATE (" + url("{box}/;uid={uid2}/;section=header") + b" TEXT " + lit("body2") + b")")
    append_selected(b"CATENATE (" + url("{box}/;uid={uid}") + b") CATENATE ("
                    + url("{box}/;uid={uid2}/;section=header") + b" TEXT " + lit("body3") + b")")
    # A CATENATE message and a plain one in the same APPEND, the plain one with flags.
    append_selected(b"CATENATE (" + url("{box}/;uid={uid}/;section=header") + b") " + lit("New: Message\n\nbody4"))
    append_selected(b"CATENATE (" + url("{box}/;uid={uid}/;section=header") + b") (\\Answered) "
                    + lit("New: Message\n\nbody5"))
    assert without_exists(ok(conv, b"NOOP")) == []
    assert without_exists(ok(conv, b"FETCH 3:* BODY.PEEK[]")) == [
        fetch_body(3, "From: foo@example.com\n\nbody1"),
        fetch_body(4, "From: bar@example.com\n\nbody2"),
        fetch_body(5, "From: foo@example.com\n\nHello world body"),
        fetch_body(6, "From: bar@example.com\n\nbody3"),
        fetch_body(7, "From: foo@example.com\n\n"),
        fetch_body(8, "New: Message\n\nbody4"),
        fetch_body(9, "From: foo@example.com\n\n"),
        fetch_body(10, "New: Message\n\nbody5"),
    ]
    (answered,) = conv.store.get_messages("alice", conv.folder(box).id, [uid + 9])
    assert answered.flags == ("\\Answered",)

    # An invalid URL in the first message: the whole APPEND is refused, the valid messages after
    # it included (all or nothing, RFC 3502 section 6.3.11 as RFC 4469 keeps it).
    wrong = url("{box};uidvalidity=12345/;uid={uid}/;section=header")
    flags = b"(\\Seen \\Flagged) "
    no(conv, append + flags + b"CATENATE (" + wrong + b") CATENATE (" + url("{box}/;uid={uid}") + b")", b"BADURL ")
    no(conv, append + flags + b"CATENATE (" + wrong + b") CATENATE (" + url("{box}/;uid={uid}") + b" TEXT "
       + lit("hello") + b")", b"BADURL ")
    no(conv, append + flags + b"CATENATE (" + wrong + b") CATENATE (TEXT " + lit("hello") + b")", b"BADURL ")
    no(conv, append + flags + b"CATENATE (" + wrong + b") " + lit("hello"), b"BADURL ")
    assert conv.folder(box).messages == 10
    assert ok(conv, b"NOOP") == []


# -- notify --------------------------------------------------------------------------------------


def test_notify(conv: Conversation) -> None:
    """imaptest src/tests/notify (NOTIFY and QRESYNC advertised; the test mailbox selected).
    imaptest enables neither CONDSTORE nor QRESYNC here, yet expects HIGHESTMODSEQ in the STATUS
    of a mailbox whose events include FlagChange: RFC 5465 section 3.1 asks for it with FlagChange,
    as Dovecot and lbbs send it."""
    assert {"NOTIFY", "QRESYNC"} <= set(conv.capabilities())
    box2 = MAILBOX + "2"
    ok(conv, b"CREATE " + MAILBOX.encode())
    ok(conv, b"SELECT " + MAILBOX.encode())
    ok(conv, b"CREATE " + box2.encode())
    ok(conv, b"APPEND " + box2.encode() + b" " + lit("From: a@example.com\nSubject: one\n\nbody"))
    folder = conv.folder(box2)
    uidnext, uidvalidity = folder.uidnext, folder.uidvalidity

    # Initial STATUS notifications are sent when needed.
    assert ok(conv, b"NOTIFY SET STATUS (MAILBOXES %s (MessageNew MessageExpunge))" % box2.encode()) == [
        b"* STATUS %s (MESSAGES 1 UIDNEXT %d UIDVALIDITY %d UNSEEN 1)" % (box2.encode(), uidnext, uidvalidity)]
    assert ok(conv, b"NOTIFY SET STATUS (MAILBOXES %s (MessageNew MessageExpunge FlagChange))" % box2.encode()) == [
        b"* STATUS %s (MESSAGES 1 UIDNEXT %d UIDVALIDITY %d UNSEEN 1 HIGHESTMODSEQ %d)"
        % (box2.encode(), uidnext, uidvalidity, conv.folder(box2).highestmodseq)]
    # Without the STATUS indicator: no STATUS at all.
    assert ok(conv, b"NOTIFY SET (MAILBOXES %s (MessageNew MessageExpunge FlagChange))" % box2.encode()) == []
