"""APPEND conversations (RFC 3501 section 6.3.11, MULTIAPPEND RFC 3502, APPENDUID RFC 4315,
literal8 RFC 3516, LITERAL+)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

RFC3501_MESSAGE = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.COM>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.COM>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)
SECOND_MESSAGE = (
    b"Date: Mon, 7 Feb 1994 22:43:04 -0800 (PST)\r\n"
    b"From: Joe Mooch <mooch@OWaTaGu.siam.EDU>\r\n"
    b"Subject: Re: afternoon meeting\r\n"
    b"To: foobar@blurdybloop.com\r\n"
    b"\r\n"
    b"3:30 is fine with me.\r\n"
)


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        conversation.command("CREATE saved-messages")
        yield conversation


def test_rfc3501_example_with_appenduid(conv: Conversation) -> None:
    uidvalidity = conv.folder("saved-messages").uidvalidity
    conv.script(rf"""
        C: A003 APPEND saved-messages (\Seen) {{310}}
        S: + Ready for literal data
        C: Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
        C: From: Fred Foobar <foobar@Blurdybloop.COM>
        C: Subject: afternoon meeting
        C: To: mooch@owatagu.siam.edu
        C: Message-Id: <B27397-0100000@Blurdybloop.COM>
        C: MIME-Version: 1.0
        C: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
        C:
        C: Hello Joe, do you think we can meet at 3:30 tomorrow?
        C:
        S: A003 OK [APPENDUID {uidvalidity} 1] APPEND completed
    """)
    conv.select("saved-messages")
    conv.script(r"""
        C: a1 FETCH 1 (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)])
        S: * 1 FETCH (FLAGS (\Seen \Recent) RFC822.SIZE 310 BODY[HEADER.FIELDS (Subject)] {30}
        S: Subject: afternoon meeting
        S:
        S: )
        S: a1 OK FETCH completed
    """)


def test_rfc3502_multiappend(conv: Conversation) -> None:
    uidvalidity = conv.folder("saved-messages").uidvalidity
    lines = conv.send(b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(RFC3501_MESSAGE))
    assert lines == [b"+ Ready for literal data"]
    lines = conv.send(RFC3501_MESSAGE + b' (\\Seen) " 7-Feb-1994 22:43:04 -0800" {%d}\r\n' % len(SECOND_MESSAGE))
    assert lines == [b"+ Ready for literal data"]
    assert conv.send(SECOND_MESSAGE + b"\r\n") == [
        b"A003 OK [APPENDUID %d 1:2] APPEND completed" % uidvalidity]
    conv.select("saved-messages")
    conv.script(r"""
        C: a1 FETCH 1:2 (FLAGS INTERNALDATE RFC822.SIZE)
        S: * 1 FETCH (FLAGS (\Seen \Recent) INTERNALDATE "{*}" RFC822.SIZE 310)
        S: * 2 FETCH (FLAGS (\Seen \Recent) INTERNALDATE "07-Feb-1994 22:43:04 -0800" RFC822.SIZE 171)
        S: a1 OK FETCH completed
    """)


def test_multiappend_is_all_or_nothing(conv: Conversation) -> None:
    conv.store.update_account("alice", quota_messages=1)
    data = b"A1 APPEND saved-messages {%d+}\r\n%s {%d+}\r\n%s\r\n" % (
        len(RFC3501_MESSAGE), RFC3501_MESSAGE, len(SECOND_MESSAGE), SECOND_MESSAGE)
    assert conv.send(data) == [b"A1 NO [OVERQUOTA] Over quota"]
    assert conv.folder("saved-messages").messages == 0
    conv.store.update_account("alice", quota_messages=0)
    lines = conv.send(data)
    assert lines[-1].startswith(b"A1 OK [APPENDUID ") and lines[-1].endswith(b" 1:2] APPEND completed")
    assert conv.folder("saved-messages").messages == 2


TOO_MANY = b"NO [LIMIT] Too many messages or flags in one APPEND (at most 20 arguments); append them in several commands"


def test_a_multiappend_beyond_max_args_is_refused_with_limit(tmp_path: Path) -> None:
    """A MULTIAPPEND of more messages than imap_max_args is valid (RFC 3502 sets no bound): the
    parser's budget refuses it as an implementation limit, NO [LIMIT] (RFC 5530; RFC 3502 section
    6.3.11 answers with NO what the server does not append, BAD is for invalid arguments), not
    BAD [CLIENTBUG], and appends nothing; so do a message's flags over the budget (RFC 5530's
    example of LIMIT). Sent with synchronizing literals, the refusal comes before the literal
    beyond the limit is uploaded. No NO counts towards imap_max_bad_commands; other commands
    over the budget are still BAD (test_hostile)."""
    message = b"Subject: m\r\n\r\nx\r\n"
    with Conversation(tmp_path, max_args=20, max_bad_commands=2) as conv:
        conv.login()
        conv.command("CREATE box")
        many = b"".join(b" {%d+}\r\n%s" % (len(message), message) for _ in range(21))
        for tag in (b"m1", b"m2", b"m3"):
            assert conv.send(tag + b" APPEND box" + many + b"\r\n") == [tag + b" " + TOO_MANY]
        flags = b" ".join(b"k%d" % index for index in range(30))
        assert conv.send(b"m4 APPEND box (%b) {%d+}\r\n%b\r\n" % (flags, len(message), message)) == [
            b"m4 " + TOO_MANY]
        assert conv.folder("box").messages == 0
        # Synchronizing: 20 messages are asked for, the 21st refused before its upload.
        assert conv.send(b"s1 APPEND box {%d}\r\n" % len(message)) == [b"+ Ready for literal data"]
        for _ in range(19):
            assert conv.send(message + b" {%d}\r\n" % len(message)) == [b"+ Ready for literal data"]
        assert conv.send(message + b" {%d}\r\n" % len(message)) == [b"s1 " + TOO_MANY]
        assert conv.folder("box").messages == 0
        lines = conv.send(b"s2 APPEND box" + many[: -len(message) - 8] + b"\r\n")   # 20: taken
        assert lines[-1].startswith(b"s2 OK [APPENDUID ") and conv.folder("box").messages == 20
        assert conv.send(b"b1 SEARCH " + b"ALL " * 30 + b"\r\n") == [
            b"b1 BAD [CLIENTBUG] Parse error: Too many arguments"]


def test_flags_count_towards_max_args_before_the_upload(tmp_path: Path) -> None:
    """A message's flags spend imap_max_args as its literal does (the parser counts both), so a
    MULTIAPPEND over the limit by its flags is refused at the first synchronizing literal beyond
    it, before that message is uploaded, as one over the limit by its messages is; the
    connection stays usable. So is a single message with more flags than the limit."""
    message = b"Subject: m\r\n\r\nx\r\n"
    with Conversation(tmp_path, max_args=20) as conv:
        conv.login()
        conv.command("CREATE box")
        # (a b) {n}: three arguments a message; the seventh takes 21.
        assert conv.send(b"s1 APPEND box (a b) {%d}\r\n" % len(message)) == [b"+ Ready for literal data"]
        for _ in range(5):
            assert conv.send(message + b" (a b) {%d}\r\n" % len(message)) == [b"+ Ready for literal data"]
        assert conv.send(message + b" (a b) {%d}\r\n" % len(message)) == [b"s1 " + TOO_MANY]
        flags = b" ".join(b"k%d" % index for index in range(30))
        assert conv.send(b"s2 APPEND box (%b) {%d}\r\n" % (flags, len(message))) == [b"s2 " + TOO_MANY]
        assert conv.folder("box").messages == 0
        lines = conv.send(b"s3 APPEND box (a b) {%d+}\r\n%b\r\n" % (len(message), message))
        assert lines[-1].startswith(b"s3 OK [APPENDUID ") and conv.folder("box").messages == 1


def test_internal_date_flags_and_keywords(conv: Conversation) -> None:
    data = b"Subject: dated\r\n\r\nx\r\n"
    lines = conv.send(b'a1 APPEND saved-messages (\\Flagged $Label) "01-Jan-2020 23:59:59 +0530" {%d+}\r\n%s\r\n'
                      % (len(data), data))
    assert lines[-1].startswith(b"a1 OK [APPENDUID ")
    conv.select("saved-messages")
    conv.script(r"""
        C: a2 FETCH 1 (FLAGS INTERNALDATE)
        S: * 1 FETCH (FLAGS (\Flagged $Label \Recent) INTERNALDATE "01-Jan-2020 23:59:59 +0530")
        S: a2 OK FETCH completed
        C: a3 SEARCH ON 1-Jan-2020 KEYWORD $label
        S: * SEARCH 1
        S: a3 OK SEARCH completed
    """)


def test_append_to_selected_mailbox_announces_it(conv: Conversation) -> None:
    conv.add_message()
    conv.select()
    uidvalidity = conv.folder("INBOX").uidvalidity
    data = b"Subject: new\r\n\r\nnew\r\n"
    assert conv.send(b"a1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data)) == [
        b"* 2 EXISTS",
        b"* 2 RECENT",
        b"a1 OK [APPENDUID %d 2] APPEND completed" % uidvalidity,
    ]


def test_append_errors(conv: Conversation) -> None:
    conv.script(r"""
        C: a1 APPEND Nonexistent {5+}
        C: hello
        S: a1 NO [TRYCREATE] Mailbox does not exist
        C: a2 APPEND saved-messages {0+}
        C:
        S: a2 NO [CANNOT] Invalid message
        C: a3 APPEND saved-messages (\Recent) {5+}
        C: hello
        S: a3 BAD {*}
    """)
    assert conv.folder("saved-messages").messages == 0


def test_append_needs_authentication(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        conv.script(r"""
            C: a1 APPEND INBOX {5+}
            C: hello
            S: a1 BAD [CLIENTBUG] Log in first
        """)


def test_literal8_text_gets_crlf_line_ends(conv: Conversation) -> None:
    """literal8 data outside parts declared binary is line-oriented (RFC 2045 section 2: 7bit and
    8bit data hold CR and LF only as CRLF), so a bare LF there is a line end and is stored as
    CRLF, as for a plain literal: BODY[], BINARY[] and RFC822.SIZE agree, as Dovecot serves it."""
    sent = b"Subject: binary\nContent-Transfer-Encoding: 8bit\n\n\x00\x01\n\x02\xff\r\nlone\rcr\n"
    stored = b"Subject: binary\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\x00\x01\r\n\x02\xff\r\nlone\rcr\r\n"
    lines = conv.send(b"a1 APPEND saved-messages ~{%d+}\r\n%s\r\n" % (len(sent), sent))
    assert lines[-1].startswith(b"a1 OK [APPENDUID ")
    conv.select("saved-messages")
    text = stored[stored.index(b"\r\n\r\n") + 4:].replace(b"\x00", b"\x80")   # no NUL in a literal
    assert conv.send(b"a2 FETCH 1 (RFC822.SIZE BINARY.PEEK[] BODY.PEEK[TEXT])\r\n") == [
        b"* 1 FETCH (RFC822.SIZE %d BINARY[] ~{%d}\r\n%s BODY[TEXT] {%d}\r\n%s)"
        % (len(stored), len(stored), stored, len(text), text),
        b"a2 OK FETCH completed",
    ]


def test_literal8_binary_part_octets_are_kept_and_the_rest_gets_crlf(conv: Conversation) -> None:
    """A literal8 message with bare LF line ends and a binary part: the part's octets (LF, CR,
    NUL among them) come back exactly from BINARY[2], as its base64 in BODY[2]; the header, the
    text part and the delimiters get CRLF line ends; RFC822.SIZE is the size of BODY[]."""
    octets = b"\x00a\nb\rc\r\nd\n\n" + bytes(range(256))
    sent = (b"Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\n"
            b"--b\nContent-Type: text/plain\n\nline one\nline two\n"
            b"--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n"
            + octets + b"\n--b--\n")
    lines = conv.send(b"a1 APPEND saved-messages ~{%d+}\r\n%s\r\n" % (len(sent), sent))
    assert lines[-1].startswith(b"a1 OK [APPENDUID ")
    conv.select("saved-messages")
    encoded = base64.encodebytes(octets).replace(b"\n", b"\r\n")[:-2]
    stored = (b"Subject: lf\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
              b"--b\r\nContent-Type: text/plain\r\n\r\nline one\r\nline two\r\n"
              b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
              + encoded + b"\r\n--b--\r\n")
    assert conv.send(b"a2 FETCH 1 (RFC822.SIZE BODY.PEEK[] BODY.PEEK[1] BINARY.PEEK[2])\r\n") == [
        b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n%s BODY[1] {18}\r\nline one\r\nline two"
        b" BINARY[2] ~{%d}\r\n%s)" % (len(stored), len(stored), stored, len(octets), octets),
        b"a2 OK FETCH completed",
    ]


def test_literal8_binary_parts_are_stored_as_base64(conv: Conversation) -> None:
    """A part marked Content-Transfer-Encoding: binary in a literal8 APPEND is stored base64, as
    Dovecot stores it: BODY[] then carries its NUL octets and its long lines unchanged, BINARY[]
    gives the octets back. Multipart and message/rfc822 parts keep their encoding (RFC 2045
    section 6.4); binary parts inside them are converted."""
    octets = bytes(range(256)) * 3
    inner = (b"Subject: inner\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Transfer-Encoding: Binary\r\n\r\n\x00inner\x00")
    data = (b"Subject: binary parts\r\nContent-Type: multipart/mixed; boundary=b\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nplain text\r\n"
            b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            + octets + b"\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            + inner + b"\r\n--b--\r\n")
    lines = conv.send(b"a1 APPEND saved-messages ~{%d+}\r\n%s\r\n" % (len(data), data))
    assert lines[-1].startswith(b"a1 OK [APPENDUID ")
    conv.select("saved-messages")
    encoded = base64.encodebytes(octets).replace(b"\n", b"\r\n")[:-2]
    assert conv.command("FETCH 1 BODY.PEEK[2]")[0] == b"* 1 FETCH (BODY[2] {%d}\r\n%s)" % (len(encoded), encoded)
    assert conv.command("FETCH 1 BINARY.PEEK[2]")[0] == b"* 1 FETCH (BINARY[2] ~{%d}\r\n%s)" % (len(octets), octets)
    assert conv.command("FETCH 1 BODY.PEEK[3.1]")[0] == b"* 1 FETCH (BODY[3.1] {12}\r\nAGlubmVyAA==)"
    assert conv.command("FETCH 1 BINARY.PEEK[3.1]")[0] == b"* 1 FETCH (BINARY[3.1] ~{7}\r\n\x00inner\x00)"
    structure = conv.command("FETCH 1 BODYSTRUCTURE")[0]
    assert b'"application" "octet-stream" NIL NIL NIL "base64" %d' % len(encoded) in structure
    assert b'"message" "rfc822" NIL NIL NIL "binary"' in structure
    assert b"Content-Transfer-Encoding: binary\r\n" in conv.command("FETCH 1 BODY.PEEK[HEADER]")[0]   # multipart


def test_bare_lf_is_stored_as_crlf(conv: Conversation) -> None:
    """A plain literal with LF line ends is stored as CRLF (RFC 5322 2.1), as Dovecot serves it:
    FETCH, RFC822.SIZE and the part offsets then agree with what clients expect."""
    sent = b"Subject: from a script\nTo: a@example.org\n\nline one\nline two\r\nlone\rcr\n"
    stored = b"Subject: from a script\r\nTo: a@example.org\r\n\r\nline one\r\nline two\r\nlone\rcr\r\n"
    lines = conv.send(b"a1 APPEND saved-messages {%d+}\r\n%s\r\n" % (len(sent), sent))
    assert lines[-1].startswith(b"a1 OK [APPENDUID ")
    conv.select("saved-messages")
    text = stored[stored.index(b"\r\n\r\n") + 4:]
    assert conv.send(b"a2 FETCH 1 (RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT])\r\n") == [
        b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n%s BODY[TEXT] {%d}\r\n%s)"
        % (len(stored), len(stored), stored, len(text), text),
        b"a2 OK FETCH completed",
    ]



def test_append_to_a_missing_mailbox_is_refused_before_the_upload(conv: Conversation) -> None:
    # No "+": the client creates the mailbox when told TRYCREATE and sends the message again,
    # so the first upload would be wasted (Dovecot answers before the literal too).
    assert conv.send(b"a1 APPEND Outbox (\\Seen) {5}\r\n") == [b"a1 NO [TRYCREATE] Mailbox does not exist"]
    assert conv.send(b"a2 NOOP\r\n") == [b"a2 OK NOOP completed"]  # the literal was never taken
    # Quoted, modified UTF-7, and sent whole without waiting: the octets are discarded.
    lines = conv.send(b'a3 APPEND "Entw&APw-rfe" {5}\r\nhello\r\na4 NOOP\r\n')
    assert lines == [b"a3 NO [TRYCREATE] Mailbox does not exist", b"a4 OK NOOP completed"]
    (created,) = conv.send(b"a5 CREATE Entw&APw-rfe\r\n")
    assert created.startswith(b"a5 OK [MAILBOXID (F") and created.endswith(b")] CREATE completed")
    assert conv.send(b'a6 APPEND "Entw&APw-rfe" UTF8 (~{5}\r\n') == [b"+ Ready for literal data"]
    assert conv.send(b"hello)\r\n") == [b"a6 BAD [CLIENTBUG] UTF8=ACCEPT must be enabled first"]
    assert conv.send(b'a7 APPEND "Entw&APw-rfe" {5}\r\n') == [b"+ Ready for literal data"]
    assert conv.send(b"hello\r\n")[-1].startswith(b"a7 OK [APPENDUID ")
    # A name sent as the literal itself is looked up when the command is whole.
    assert conv.send(b"a8 APPEND {6}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b"Outbox {5}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b"hello\r\n") == [b"a8 NO [TRYCREATE] Mailbox does not exist"]
    assert conv.store.get_folder("alice", "Outbox") is None


def test_append_to_a_missing_mailbox_over_quota_says_trycreate(conv: Conversation) -> None:
    # As the command would: the mailbox first, so the client creates it and then meets the quota.
    conv.store.update_account("alice", quota_messages=1)
    conv.add_message()
    assert conv.send(b"a1 APPEND Outbox {5}\r\n") == [b"a1 NO [TRYCREATE] Mailbox does not exist"]
    assert conv.send(b"a2 APPEND INBOX {5}\r\n") == [b"a2 NO [OVERQUOTA] Over quota"]


def test_target_deleted_meanwhile_is_trycreate(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mailbox deleted by another session between its lookup and the write: NO [TRYCREATE],
    as if it had been missing from the start (the client may create it and append again)."""
    conv.command("CREATE Versions")
    conv.delete_folder_before(monkeypatch, "append", "Versions")
    assert conv.send(b"a1 APPEND Versions {5+}\r\nhello\r\n") == [b"a1 NO [TRYCREATE] Mailbox does not exist"]


def _large_message(size: int) -> bytes:
    head = b"From: bob@example.org\r\nSubject: large\r\n\r\n"
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head) - 2] + b"\r\n"
    return head + body


def test_a_large_literal_waits_in_a_temporary_file_not_in_memory(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    message = _large_message(3 << 20)
    with Conversation(tmp_path, literal_spool_dir=str(spool_dir)) as conv:
        conv.login()
        assert conv.send(b"a1 APPEND INBOX {%d}\r\n" % len(message)) == [b"+ Ready for literal data"]
        sent = 0
        for piece in range(0, 2 << 20, 256 << 10):  # two thirds of it, as a slow client sends it
            assert conv.send(message[piece : piece + (256 << 10)]) == []
            sent = piece + (256 << 10)
        # What arrived so far is in the file, not in the session's memory.
        assert conv.session.framer.held_bytes < 256 << 10
        lines = conv.send(message[sent:] + b"\r\n")
        assert lines[-1].startswith(b"a1 OK [APPENDUID ")
        conv.select("INBOX")
        stored = conv.send(b"a2 FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n")
        assert stored[0].startswith(b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n" % (len(message), len(message)))
        assert message in stored[0]
        # The temporary file had no name (or was removed): nothing is left behind.
        assert list(spool_dir.iterdir()) == []


def test_a_spool_that_fails_refuses_the_append_and_the_session_goes_on(tmp_path: Path) -> None:
    message = _large_message(2 << 20)
    with Conversation(tmp_path, literal_spool_dir=str(tmp_path / "no such directory")) as conv:
        conv.login()
        assert conv.send(b"a1 APPEND INBOX {%d}\r\n" % len(message)) == [b"+ Ready for literal data"]
        lines = conv.send(message + b"\r\n")
        assert len(lines) == 1 and lines[0].startswith(b"a1 NO [UNAVAILABLE] ")
        assert conv.folder("INBOX").messages == 0
        # Not the client's fault: no BAD, and the connection serves the next command.
        conv.command("NOOP")
        assert conv.session._flow.bad_streak == 0
