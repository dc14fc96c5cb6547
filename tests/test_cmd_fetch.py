"""FETCH / UID FETCH conversations (RFC 3501 / 9051 section 6.4.5, RFC 3516 BINARY)."""

from __future__ import annotations

import calendar
import random
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from conversation import Conversation
from test_parser_fuzz import plain_page
from test_perf_view_runs import plain_set

from gximap.imap.commands import PartialRange
from gximap.net.handler import FileRegion, TransportAction
from gximap.session.commands import fetch
from gximap.session.commands.fetch import COALESCE_BYTES

MIME_DATA = Path(__file__).resolve().parent / "data" / "mime"
JUL_17_1996 = calendar.timegm((1996, 7, 17, 9, 44, 25))

SIMPLE = b"From: bob@example.org\r\nSubject: test\r\n\r\nhello\r\n"

NESTED = (
    b"From: Outer <outer@example.com>\r\n"
    b"Subject: nested\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"o\"\r\n"
    b"\r\n"
    b"--o\r\n"
    b"Content-Type: multipart/mixed; boundary=\"i\"\r\n"
    b"\r\n"
    b"--i\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"first inner part\r\n"
    b"--i\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: Attached <att@example.com>\r\n"
    b"Subject: attached mail\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"attached body\r\n"
    b"--i--\r\n"
    b"--o\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"second outer part\r\n"
    b"--o--\r\n"
)

ENCODED_PARTS = (
    b"From: a@example.com\r\n"
    b"Subject: encoded parts\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n"
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwBoZWxsbw==\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 =3D ok=\r\n"
    b"soft\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"aGVsbG8gd29ybGQ=\r\n"
    b"--b--\r\n"
)


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def rfc3501_messages(conv: Conversation) -> None:
    for number in range(1, 5):
        conv.add_message(data=(
            b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
            b"From: Terry Gray <gray@cac.washington.edu>\r\n"
            b"Subject: IMAP4rev1 WG mtg summary and minutes %d\r\n"
            b"To: imap@cac.washington.edu\r\n"
            b"\r\n"
            b"body %d\r\n" % (number, number)), flags=("\\Seen",) if number == 3 else (),
            internaldate=JUL_17_1996)


def test_rfc3501_example_header_fields_sets_seen(conv: Conversation) -> None:
    rfc3501_messages(conv)
    conv.select()
    # RFC 3501 section 6.4.5 example; BODY[...] without .PEEK sets \Seen and FLAGS shows it.
    conv.script(r"""
        C: A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])
        S: * 2 FETCH (FLAGS (\Seen \Recent) BODY[HEADER.FIELDS (DATE FROM)] {91}
        S: Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
        S: From: Terry Gray <gray@cac.washington.edu>
        S:
        S: )
        S: * 3 FETCH (FLAGS (\Seen \Recent) BODY[HEADER.FIELDS (DATE FROM)] {91}
        S: Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
        S: From: Terry Gray <gray@cac.washington.edu>
        S:
        S: )
        S: * 4 FETCH (FLAGS (\Seen \Recent) BODY[HEADER.FIELDS (DATE FROM)] {91}
        S: Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
        S: From: Terry Gray <gray@cac.washington.edu>
        S:
        S: )
        S: A654 OK FETCH completed
        C: A655 FETCH 1:4 FLAGS
        S: * 1 FETCH (FLAGS (\Recent))
        S: * 2 FETCH (FLAGS (\Seen \Recent))
        S: * 3 FETCH (FLAGS (\Seen \Recent))
        S: * 4 FETCH (FLAGS (\Seen \Recent))
        S: A655 OK FETCH completed
    """)


def test_peek_and_header_fields_not(conv: Conversation) -> None:
    rfc3501_messages(conv)
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (Date From To)])
        S: * 1 FETCH (BODY[HEADER.FIELDS.NOT (Date From To)] {51}
        S: Subject: IMAP4rev1 WG mtg summary and minutes 1
        S:
        S: )
        S: a1 OK FETCH completed
        C: a2 FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (X-Nothing)])
        S: * 1 FETCH (FLAGS (\Recent) BODY[HEADER.FIELDS (X-Nothing)] {2}
        S:
        S: )
        S: a2 OK FETCH completed
    """)


def test_header_fields_answers_are_kept_and_told_apart(conv: Conversation) -> None:
    """A body's HEADER.FIELDS answer is kept (bodies never change) under its label and partial:
    the same fields asked again come from the cache, other fields, partials or parts do not,
    and an answer too big to keep is built every time."""
    big_references = b"References: " + b" ".join(b"<%d@example.org>" % n for n in range(200)) + b"\r\n"
    conv.add_message(data=SIMPLE)
    conv.add_message(data=big_references + SIMPLE)
    conv.select()
    fetch._HEADER_FIELDS._entries.clear()
    first = conv.send(b"a1 FETCH 1:2 (BODY.PEEK[HEADER.FIELDS (Subject)])\r\n")
    assert first[0] == b"* 1 FETCH (BODY[HEADER.FIELDS (Subject)] {17}\r\nSubject: test\r\n\r\n)"
    assert len(fetch._HEADER_FIELDS) == 2
    assert conv.send(b"a2 FETCH 1:2 (BODY.PEEK[HEADER.FIELDS (Subject)])\r\n")[:2] == first[:2]
    conv.script(r"""
        C: a3 FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)]<0.7>)
        S: * 1 FETCH (BODY[HEADER.FIELDS (Subject)]<0> {7}
        S: Subject)
        S: a3 OK FETCH completed
        C: a3b FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)]<0.10>)
        S: * 1 FETCH (BODY[HEADER.FIELDS (Subject)]<0> {10}
        S: Subject: t)
        S: a3b OK FETCH completed
        C: a4 FETCH 1 (BODY.PEEK[HEADER.FIELDS (From)])
        S: * 1 FETCH (BODY[HEADER.FIELDS (From)] {25}
        S: From: bob@example.org
        S:
        S: )
        S: a4 OK FETCH completed
        C: a5 FETCH 1 (BODY.PEEK[1.HEADER.FIELDS (Subject)])
        S: * 1 FETCH (BODY[1.HEADER.FIELDS (Subject)] "")
        S: a5 OK FETCH completed
    """)
    assert len(fetch._HEADER_FIELDS) == 6
    references = conv.send(b"a6 FETCH 2 (BODY.PEEK[HEADER.FIELDS (References)])\r\n")
    assert references[0].endswith(big_references + b"\r\n)")
    assert len(fetch._HEADER_FIELDS) == 6  # above HEADER_FIELDS_CACHED: not kept
    assert conv.send(b"a7 FETCH 2 (BODY.PEEK[HEADER.FIELDS (References)])\r\n")[0] == references[0]


def test_fast_items_and_uid_fetch(conv: Conversation) -> None:
    uid = conv.add_message(data=SIMPLE, internaldate=JUL_17_1996, flags=("\\Flagged", "$Label"))
    conv.select()
    conv.script(rf"""
        C: a1 FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)
        S: * 1 FETCH (FLAGS (\Flagged $Label \Recent) INTERNALDATE "17-Jul-1996 09:44:25 +0000" RFC822.SIZE {len(SIMPLE)})
        S: a1 OK FETCH completed
        C: a2 UID FETCH 1:* (RFC822.SIZE)
        S: * 1 FETCH (UID {uid} RFC822.SIZE {len(SIMPLE)})
        S: a2 OK FETCH completed
        C: a3 UID FETCH {uid} (FLAGS UID)
        S: * 1 FETCH (UID {uid} FLAGS (\Flagged $Label \Recent))
        S: a3 OK FETCH completed
        C: a4 FETCH 1 (UID MODSEQ)
        S: * OK [HIGHESTMODSEQ {{n}}] Highest modification sequence
        S: * 1 FETCH (UID {uid} MODSEQ ({{n}}))
        S: a4 OK FETCH completed
    """)


def test_envelope_body_bodystructure(conv: Conversation) -> None:
    conv.add_message(data=SIMPLE)
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1 (ENVELOPE BODY BODYSTRUCTURE)
        S: * 1 FETCH (ENVELOPE (NIL "test" ((NIL NIL "bob" "example.org")) ((NIL NIL "bob" "example.org")) ((NIL NIL "bob" "example.org")) NIL NIL NIL NIL NIL) BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 7 1) BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 7 1 NIL NIL NIL NIL))
        S: a1 OK FETCH completed
        C: a2 FETCH 1 ALL
        S: * 1 FETCH (FLAGS (\Recent) INTERNALDATE "{*}" RFC822.SIZE 47 ENVELOPE (NIL "test" ((NIL NIL "bob" "example.org")) ((NIL NIL "bob" "example.org")) ((NIL NIL "bob" "example.org")) NIL NIL NIL NIL NIL))
        S: a2 OK FETCH completed
    """)


def test_rfc822_items(conv: Conversation) -> None:
    conv.add_message(data=SIMPLE)
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1 (RFC822.HEADER)
        S: * 1 FETCH (RFC822.HEADER {40}
        S: From: bob@example.org
        S: Subject: test
        S:
        S: )
        S: a1 OK FETCH completed
        C: a2 FETCH 1 FLAGS
        S: * 1 FETCH (FLAGS (\Recent))
        S: a2 OK FETCH completed
        C: a3 FETCH 1 RFC822.TEXT
        S: * 1 FETCH (RFC822.TEXT {7}
        S: hello
        S:  FLAGS (\Seen \Recent))
        S: a3 OK FETCH completed
        C: a4 FETCH 1 RFC822
        S: * 1 FETCH (RFC822 {47}
        S: From: bob@example.org
        S: Subject: test
        S:
        S: hello
        S: )
        S: a4 OK FETCH completed
    """)


def test_partial_fetches(conv: Conversation) -> None:
    conv.add_message(data=SIMPLE)
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1 (BODY.PEEK[]<0.4> BODY.PEEK[HEADER]<6.3> BODY.PEEK[TEXT]<2.100>)
        S: * 1 FETCH (BODY[]<0> {4}
        S: From BODY[HEADER]<6> {3}
        S: bob BODY[TEXT]<2> {5}
        S: llo
        S: )
        S: a1 OK FETCH completed
        C: a2 FETCH 1 (BODY.PEEK[]<47.10> BODY.PEEK[TEXT]<500.1>)
        S: * 1 FETCH (BODY[]<47> "" BODY[TEXT]<500> "")
        S: a2 OK FETCH completed
        C: a3 FETCH 1 (BODY[]<40.3>)
        S: * 1 FETCH (BODY[]<40> {3}
        S: hel FLAGS (\Seen \Recent))
        S: a3 OK FETCH completed
        C: a4 FETCH 1 (BODY.PEEK[]<0.9223372036854775807> BINARY.PEEK[1]<4294967296.1>)
        S: * 1 FETCH (BODY[]<0> {47}
        S: From: bob@example.org
        S: Subject: test
        S:
        S: hello
        S:  BINARY[1]<4294967296> "")
        S: a4 OK FETCH completed
    """)


def test_nested_sections_with_attached_message(conv: Conversation) -> None:
    conv.add_message(data=NESTED)
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1 (BODY.PEEK[1.2.HEADER])
        S: * 1 FETCH (BODY[1.2.HEADER] {86}
        S: From: Attached <att@example.com>
        S: Subject: attached mail
        S: Content-Type: text/plain
        S:
        S: )
        S: a1 OK FETCH completed
        C: a2 FETCH 1 (BODY.PEEK[1.2.TEXT] BODY.PEEK[1.2.1] BODY.PEEK[1.1] BODY.PEEK[2])
        S: * 1 FETCH (BODY[1.2.TEXT] {13}
        S: attached body BODY[1.2.1] {13}
        S: attached body BODY[1.1] {16}
        S: first inner part BODY[2] {17}
        S: second outer part)
        S: a2 OK FETCH completed
        C: a3 FETCH 1 (BODY.PEEK[1.2.MIME] BODY.PEEK[1.2.HEADER.FIELDS (SUBJECT)])
        S: * 1 FETCH (BODY[1.2.MIME] {32}
        S: Content-Type: message/rfc822
        S:
        S:  BODY[1.2.HEADER.FIELDS (SUBJECT)] {26}
        S: Subject: attached mail
        S:
        S: )
        S: a3 OK FETCH completed
        C: a4 FETCH 1 (BODY.PEEK[1.2])
        S: * 1 FETCH (BODY[1.2] {99}
        S: From: Attached <att@example.com>
        S: Subject: attached mail
        S: Content-Type: text/plain
        S:
        S: attached body)
        S: a4 OK FETCH completed
        C: a5 FETCH 1 (BODY.PEEK[3] BODY.PEEK[1.5.HEADER] BODY.PEEK[2.HEADER])
        S: * 1 FETCH (BODY[3] "" BODY[1.5.HEADER] "" BODY[2.HEADER] "")
        S: a5 OK FETCH completed
    """)


def test_rfc3501_section_numbering(conv: Conversation) -> None:
    """The part numbers of RFC 3501 section 6.4.5's example message."""
    conv.add_message(data=(MIME_DATA / "rfc3501_sections.eml").read_bytes())
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1 (BODY.PEEK[1] BODY.PEEK[3.1] BODY.PEEK[3.2] BODY.PEEK[4.1] BODY.PEEK[4.2.1])
        S: * 1 FETCH (BODY[1] {11}
        S: part 1 text BODY[3.1] {13}
        S: part 3.1 text BODY[3.2] {13}
        S: part 3.2 data BODY[4.1] {20}
        S: R0lGODlhAQABAAAAACw= BODY[4.2.1] {15}
        S: part 4.2.1 text)
        S: a1 OK FETCH completed
        C: a2 FETCH 1 (BODY.PEEK[4.2.2.1] BODY.PEEK[4.2.2.2] BODY.PEEK[4.2.HEADER.FIELDS (Subject)])
        S: * 1 FETCH (BODY[4.2.2.1] {17}
        S: part 4.2.2.1 text BODY[4.2.2.2] {30}
        S: part 4.2.2.2 <bold>rich</bold> BODY[4.2.HEADER.FIELDS (Subject)] {21}
        S: Subject: part 4.2
        S:
        S: )
        S: a2 OK FETCH completed
    """)


def test_binary_of_encoded_parts(conv: Conversation) -> None:
    conv.add_message(data=ENCODED_PARTS)
    conv.select()
    assert conv.send(b"a1 FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])\r\n") == [
        b"* 1 FETCH (BINARY[1] ~{10}\r\n\x00\x01\x02\x03\x00hello BINARY.SIZE[1] 10)",
        b"a1 OK FETCH completed",
    ]
    assert conv.send(b"a2 FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[3]<6.5>)\r\n") == [
        "* 1 FETCH (BINARY[2] {14}\r\ncafé = oksoft BINARY.SIZE[2] 14 BINARY[3]<6> {5}\r\nworld)".encode(),
        b"a2 OK FETCH completed",
    ]
    # BINARY without .PEEK sets \Seen like BODY[] (RFC 3516 section 4.2)
    assert conv.send(b"a3 FETCH 1 (BINARY[3])\r\n") == [
        b"* 1 FETCH (BINARY[3] {11}\r\nhello world FLAGS (\\Seen \\Recent))",
        b"a3 OK FETCH completed",
    ]


def test_binary_unknown_transfer_encoding(conv: Conversation) -> None:
    conv.add_message(data=(MIME_DATA / "unknown_cte.eml").read_bytes())
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1 (BINARY.PEEK[1])
        S: a1 NO [UNKNOWN-CTE] Unknown content transfer encoding
        C: a2 FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[2])
        S: * 1 FETCH (BINARY.SIZE[2] 3 BINARY[2] {3}
        S: a=b)
        S: a2 OK FETCH completed
    """)


def test_examine_does_not_set_seen(conv: Conversation) -> None:
    conv.add_message(data=SIMPLE)
    conv.select(examine=True)
    conv.script(r"""
        C: a1 FETCH 1 (BODY[TEXT])
        S: * 1 FETCH (BODY[TEXT] {7}
        S: hello
        S: )
        S: a1 OK FETCH completed
        C: a2 FETCH 1 FLAGS
        S: * 1 FETCH (FLAGS (\Recent))
        S: a2 OK FETCH completed
    """)


def test_imap4rev2_has_no_recent(conv: Conversation) -> None:
    conv.add_message(data=SIMPLE)
    conv.command("ENABLE IMAP4rev2")
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1 (FLAGS BODY[TEXT])
        S: * 1 FETCH (FLAGS (\Seen) BODY[TEXT] {7}
        S: hello
        S: )
        S: a1 OK FETCH completed
    """)


def test_sequence_errors_and_empty_uid_ranges(conv: Conversation) -> None:
    conv.add_message(data=SIMPLE)
    conv.add_message(data=SIMPLE)
    conv.select()
    conv.script(r"""
        C: a1 FETCH 3 FLAGS
        S: a1 BAD [CLIENTBUG] Invalid message sequence number
        C: a2 FETCH 1:5 FLAGS
        S: a2 BAD [CLIENTBUG] Invalid message sequence number
        C: a3 UID FETCH 100:200 FLAGS
        S: a3 OK FETCH completed
        C: a4 UID FETCH 100:* FLAGS
        S: * 2 FETCH (UID 2 FLAGS (\Recent))
        S: a4 OK FETCH completed
        C: a5 FETCH 2:* (UID)
        S: * 2 FETCH (UID 2)
        S: a5 OK FETCH completed
        C: a6 FETCH 1 (UID) (CHANGEDSINCE 1)
        S: * OK [HIGHESTMODSEQ {n}] Highest modification sequence
        S: * 1 FETCH (UID 1 MODSEQ ({n}))
        S: a6 OK FETCH completed
        C: a7 FETCH 1:5 (UID) (CHANGEDSINCE 1)
        S: a7 BAD [CLIENTBUG] Invalid message sequence number
        C: a8 FETCH 1:5 (UID) (PARTIAL 1:2)
        S: a8 BAD [CLIENTBUG] Invalid message sequence number
        C: a9 UID FETCH 1:5 (UID) (PARTIAL 1:2)
        S: * 1 FETCH (UID 1)
        S: * 2 FETCH (UID 2)
        S: a9 OK FETCH completed
    """)


def test_fetch_in_empty_mailbox(conv: Conversation) -> None:
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1:* FLAGS
        S: a1 OK FETCH completed
        C: a2 FETCH 1 FLAGS
        S: a2 BAD [CLIENTBUG] Invalid message sequence number
        C: a3 UID FETCH 1:* FLAGS
        S: a3 OK FETCH completed
    """)


def test_fetch_requires_selected_state(conv: Conversation) -> None:
    conv.script(r"""
        C: a1 FETCH 1 FLAGS
        S: a1 BAD [CLIENTBUG] No mailbox selected
    """)


def test_large_body_is_streamed_in_chunks(conv: Conversation) -> None:
    line = b"0123456789abcdef" * 4 + b"\r\n"
    data = b"Subject: big\r\n\r\n" + line * (3 * 1024 * 1024 // len(line))
    conv.add_message(data=data)
    conv.select()
    session = conv.session
    session.data_received(b"a1 FETCH 1 (BODY.PEEK[TEXT] RFC822.SIZE)\r\n")
    session.process(16)
    items: list[bytes] = []
    for _ in range(1000):
        item = session.next_output()
        if item is None:
            break
        assert not isinstance(item, TransportAction)
        assert isinstance(item, bytes | memoryview)   # no FileRegion here
        items.append(bytes(item))
    text = data[16:]
    assert b"".join(items) == (b"* 1 FETCH (BODY[TEXT] {%d}\r\n" % len(text) + text
                               + b" RFC822.SIZE %d)\r\n" % len(data) + b"a1 OK FETCH completed\r\n")
    assert len(items) > 4  # the literal went out as several chunks, not one 3 MB item
    assert max(len(item) for item in items) <= 1024 * 1024


class _CountingStore:
    """The real store, counting body and digest reads."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.body_reads = 0
        self.digest_reads = 0
        self.record_reads = 0

    def read_body(self, *args: Any, **kwargs: Any) -> bytes:
        self.body_reads += 1
        return self._store.read_body(*args, **kwargs)

    def digest(self, *args: Any, **kwargs: Any) -> Any:
        self.digest_reads += 1
        return self._store.digest(*args, **kwargs)

    def get_messages(self, *args: Any, **kwargs: Any) -> Any:
        self.record_reads += 1
        return self._store.get_messages(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_fetch_all_streams_incrementally(conv: Conversation) -> None:
    folder = conv.folder("INBOX")
    count = 5000
    batch = [(b"Subject: m\r\n\r\nbody\r\n", (), None, 0)] * 500
    for _ in range(count // len(batch)):
        conv.store.append_many("alice", folder.id, batch)
    conv.select()
    counting = _CountingStore(conv.store)
    conv.ctx.store = counting
    session = conv.session
    session.data_received(b"a1 FETCH 1:* (UID BODY.PEEK[TEXT] ENVELOPE)\r\n")
    session.process(16)
    first_item = session.next_output()
    assert isinstance(first_item, bytes | memoryview)
    first = bytes(first_item)
    # Responses go out gathered in chunks of bounded size (fetch.COALESCE_BYTES), in order.
    assert first.startswith(b"* 1 FETCH (UID 1 BODY[TEXT] ") and b"\r\n* 2 FETCH (UID 2 " in first
    assert len(first) < 2 * COALESCE_BYTES
    # Only the first messages were rendered: the generator was not drained.
    assert counting.body_reads < 500
    assert counting.digest_reads < 500
    items = [first]
    for _ in range(count * 3):
        item = session.next_output()
        if item is None:
            break
        assert isinstance(item, bytes | memoryview)
        items.append(bytes(item))
    out = b"".join(items)
    assert out.count(b" FETCH (UID ") == count  # one response per message
    assert out.endswith(b"\r\na1 OK FETCH completed\r\n")
    assert len(items) < count // 50
    assert counting.body_reads == count
    assert counting.record_reads < count // 100  # records are read in batches


def _output_items(conv: Conversation, line: bytes) -> list[bytes]:
    """Feed one command line and return the session's output items one by one, as the pool
    takes them (each item is one trip through the command's generator and the transport)."""
    session = conv.session
    session.data_received(line)
    items: list[bytes] = []
    for _ in range(100):
        more = session.process(16)
        produced = False
        while (item := session.next_output()) is not None:
            produced = True
            if not isinstance(item, TransportAction):
                assert not isinstance(item, FileRegion)
                items.append(bytes(item))
        if not more and not produced:
            break
    return items


def test_small_responses_of_many_messages_go_out_as_few_items(conv: Conversation) -> None:
    for number in range(40):
        conv.add_message(data=b"From: bob@example.org\r\nSubject: m%d\r\n\r\nhello\r\n" % number)
    conv.select()
    items = _output_items(conv, b"a1 FETCH 1:40 (UID ENVELOPE RFC822.SIZE)\r\n")
    assert len(items) <= 3  # the 40 responses together, then the tagged OK
    lines = b"".join(items).split(b"\r\n")
    assert [line.split(b" ")[1] for line in lines[:40]] == [b"%d" % msn for msn in range(1, 41)]
    assert all(b'"m%d"' % (msn - 1) in lines[msn - 1] for msn in range(1, 41))
    assert lines[40] == b"a1 OK FETCH completed"


def test_a_streamed_body_keeps_its_place_between_gathered_responses(conv: Conversation) -> None:
    large_body = b"x" * 1_100_000 + b"\r\n"  # beyond the inline limit: streamed from its file
    conv.add_message(data=SIMPLE)
    conv.add_message(data=b"Subject: large\r\n\r\n" + large_body)
    conv.add_message(data=SIMPLE)
    conv.select()
    items = _output_items(conv, b"a1 FETCH 1:3 (RFC822.SIZE BODY.PEEK[TEXT])\r\n")
    out = b"".join(items)
    first = out.index(b"* 1 FETCH (RFC822.SIZE %d BODY[TEXT] {7}\r\nhello\r\n)\r\n" % len(SIMPLE))
    second = out.index(b"* 2 FETCH (")
    third = out.index(b"* 3 FETCH (")
    assert first < second < third
    assert out[second:third].endswith(large_body + b")\r\n")
    assert out.endswith(b"a1 OK FETCH completed\r\n")


def test_responses_gathered_before_a_failing_message_are_still_sent(conv: Conversation) -> None:
    conv.add_message(data=SIMPLE)
    conv.add_message(data=(MIME_DATA / "unknown_cte.eml").read_bytes())
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1:2 (BINARY.PEEK[1])
        S: * 1 FETCH (BINARY[1] {7}
        S: hello
        S: )
        S: a1 NO [UNKNOWN-CTE] Unknown content transfer encoding
    """)


def test_a_fetch_failing_part_way_leaves_what_it_did_not_answer_unread(conv: Conversation) -> None:
    """FETCH BINARY[] sets \\Seen for a batch before rendering it. When a message of the batch
    fails (NO [UNKNOWN-CTE]), it and those after it were never answered: they stay unread, as
    the client believes; those answered before keep \\Seen and said so."""
    conv.add_message(data=SIMPLE)
    conv.add_message(data=(MIME_DATA / "unknown_cte.eml").read_bytes())
    conv.add_message(data=SIMPLE)
    conv.store.claim_recent_range("alice", conv.folder("INBOX").id)
    conv.select()
    conv.script(r"""
        C: a1 FETCH 1:3 (BINARY[1])
        S: * 1 FETCH (BINARY[1] {7}
        S: hello
        S:  FLAGS (\Seen))
        S: a1 NO [UNKNOWN-CTE] Unknown content transfer encoding
        C: a2 NOOP
        S: a2 OK NOOP completed
        C: a3 FETCH 1:3 (FLAGS)
        S: * 1 FETCH (FLAGS (\Seen))
        S: * 2 FETCH (FLAGS ())
        S: * 3 FETCH (FLAGS ())
        S: a3 OK FETCH completed
    """)


def test_message_numbers_of_a_batch(conv: Conversation) -> None:
    """A batch's message numbers: a range for a contiguous stretch of the view (FETCH 1:*),
    looked up one by one around a hole, and None for a record the view does not hold (the
    session has not announced it yet: the message is left out)."""
    for _ in range(6):
        conv.add_message(data=SIMPLE)
    conv.select()
    conv.send(b"e1 STORE 3 +FLAGS.SILENT (\\Deleted)\r\n")
    conv.send(b"e2 EXPUNGE\r\n")   # view: UIDs 1 2 4 5 6
    view = conv.session.selected

    def records(*uids: int) -> list[Any]:
        return [SimpleNamespace(uid=uid) for uid in uids]

    assert fetch._message_numbers(view, records(4, 5, 6)) == range(3, 6)
    assert list(fetch._message_numbers(view, records(1, 2, 4, 5, 6))) == [1, 2, 3, 4, 5]
    assert list(fetch._message_numbers(view, records(2, 3, 4))) == [2, None, 3]
    assert list(fetch._message_numbers(view, records(5, 6, 7))) == [4, 5, None]


def test_message_global_is_a_basic_body_until_imap4rev2_is_enabled(conv: Conversation) -> None:
    """RFC 3501's body-type-msg is message/rfc822 only: an IMAP4rev1 session gets message/global
    as a basic body (a strict parser would fail on the envelope); IMAP4rev2 (RFC 9051) as a
    message."""
    conv.add_message(data=b"Subject: global\r\nContent-Type: multipart/mixed; boundary=g\r\n\r\n--g\r\n"
                          b"Content-Type: text/plain\r\n\r\nx\r\n--g\r\nContent-Type: message/global\r\n\r\n"
                          b"Subject: inner\r\n\r\ninner\r\n--g--\r\n")
    conv.select()
    basic = b'("message" "global" NIL NIL NIL "7BIT" 23 NIL NIL NIL NIL)'
    (line, _ok) = conv.send(b"a1 FETCH 1 BODYSTRUCTURE\r\n")
    assert basic in line
    (line, _ok) = conv.send(b"a2 FETCH 1 BODY\r\n")
    assert b'("message" "global" NIL NIL NIL "7BIT" 23) "mixed"' in line
    conv.command("UNSELECT")
    conv.command("ENABLE IMAP4rev2")
    conv.select()
    (line, _ok) = conv.send(b"a3 FETCH 1 BODYSTRUCTURE\r\n")
    assert basic not in line
    assert b'("message" "global" NIL NIL NIL "7BIT" 23 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL) (' in line


def test_binary_items_of_one_part_share_its_decoding(conv: Conversation) -> None:
    """Several BINARY items of one part (partials, BINARY.SIZE) in one FETCH: each answers its own
    range of the one decoding (kept for the next item instead of decoded again)."""
    conv.add_message(data=b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
                          b"first\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n--b--\r\n")
    conv.select()
    conv.script("""
        C: a1 FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[2]<0.5> BINARY.PEEK[2]<6.5> BINARY.PEEK[1] BINARY.PEEK[2]<10.9>)
        S: * 1 FETCH (BINARY.SIZE[2] 11 BINARY[2]<0> {5}
        S: hello BINARY[2]<6> {5}
        S: world BINARY[1] {5}
        S: first BINARY[2]<10> {1}
        S: d)
        S: a1 OK FETCH completed
    """)


def _big_message(conv: Conversation) -> bytes:
    line = b"0123456789abcdef" * 4 + b"\r\n"
    data = b"Subject: big\r\n\r\n" + line * (3 * 1024 * 1024 // len(line))
    conv.add_message(data=data)
    conv.select()
    return data


def _start_streaming(session: Any, request: bytes) -> list[bytes]:
    """Send ``request`` and take output up to the literal's header (the pool stopped there, its
    socket full)."""
    session.data_received(request)
    session.process(16)
    taken: list[bytes] = []
    while not (taken and taken[-1].endswith(b"}\r\n")):
        item = session.next_output()
        assert isinstance(item, bytes | memoryview)
        taken.append(bytes(item))
    return taken


def _drain(session: Any) -> tuple[bytes, list[TransportAction]]:
    out: list[bytes] = []
    actions: list[TransportAction] = []
    for _ in range(1000):
        item = session.next_output()
        if item is None:
            break
        if isinstance(item, TransportAction):
            actions.append(item)
            break  # the pool stops at CLOSE
        out.append(bytes(item))
    return b"".join(out), actions


@pytest.mark.parametrize("goodbye", ["shutdown", "timed_out", "input_undecodable"])
def test_a_goodbye_waits_for_the_streamed_response_to_end(conv: Conversation, goodbye: str) -> None:
    data = _big_message(conv)
    session = conv.session
    taken = _start_streaming(session, b"a1 FETCH 1 (BODY.PEEK[] RFC822.SIZE)\r\na2 NOOP\r\n")
    getattr(session, goodbye)()  # with the literal's header out: the body must follow first
    rest, actions = _drain(session)
    head = b"* 1 FETCH (BODY[] {%d}\r\n" % len(data)
    response = head + data + b" RFC822.SIZE %d)\r\n" % len(data)
    sent = b"".join(taken) + rest
    assert sent.startswith(response)
    bye = sent[len(response):]
    assert bye.startswith(b"* BYE ") and bye.endswith(b"\r\n") and bye.count(b"\r\n") == 1
    assert actions == [TransportAction.CLOSE]
    assert not session.process(16)  # a2 is never started


def test_a_goodbye_outside_a_streamed_response_goes_out_at_once(conv: Conversation) -> None:
    conv.add_message(data=b"Subject: small\r\n\r\nhello\r\n")
    conv.select()
    session = conv.session
    session.shutdown()
    rest, actions = _drain(session)
    assert rest.startswith(b"* BYE ") and actions == [TransportAction.CLOSE]


def test_a_body_read_failing_inside_its_literal_closes_the_connection(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _big_message(conv)
    real_chunks = fetch._BodyStream.chunks

    def failing_chunks(self: Any) -> Iterator[bytes]:
        chunks = cast(Generator[bytes, None, None], real_chunks(self))
        try:
            yield next(chunks)
            raise OSError(5, "Input/output error")
        finally:
            chunks.close()

    monkeypatch.setattr(fetch._BodyStream, "chunks", failing_chunks)
    session = conv.session
    taken = _start_streaming(session, b"a1 FETCH 1 BODY.PEEK[]\r\n")
    with caplog.at_level("WARNING"):
        rest, actions = _drain(session)
    # One chunk of the literal, then nothing: a tagged NO here would be read as body data.
    assert len(rest) == fetch._CHUNK
    assert b"a1 " not in rest
    assert actions == [TransportAction.CLOSE]
    assert "part of a response sent" in caplog.text
    assert b"".join(taken).startswith(b"* 1 FETCH (BODY[] {")


def test_a_body_lost_from_the_store_is_a_serverbug_and_logged(conv: Conversation,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A message still in the folder whose body file is gone (a disk fault, a file deleted by
    hand) is not an expunge a NOOP would explain: FETCH answers the others, then NO [SERVERBUG],
    and the log names the message and its body, by the listing path as by the general one."""
    lost = conv.add_message(data=b"Subject: lost\r\n\r\nlost body\r\n")
    conv.add_message(data=b"Subject: kept\r\n\r\nkept body\r\n")
    (meta,) = conv.store.get_messages("alice", conv.folder("INBOX").id, [lost])
    Path(conv.store.body_path(meta.blob)).unlink()
    conv.select("INBOX")
    caplog.set_level("ERROR", logger="gximap")
    for tag, items in ((b"a1", b"(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])"), (b"a2", b"(UID BODY.PEEK[])")):
        for command in (b"FETCH 1:2", b"UID FETCH 1:*"):
            lines = conv.send(b"%s %s %s\r\n" % (tag, command, items))
            assert len(lines) == 2 and lines[0].startswith(b"* 2 FETCH (UID 2 BODY["), lines
            assert lines[1] == tag + b" NO [SERVERBUG] Message cannot be read"
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 4
    assert all(f"user=alice folder=INBOX uid={lost}: message body {meta.blob} is missing" in text for text in errors)


def test_partial_fetch_modifier(conv: Conversation) -> None:
    """RFC 9394 section 3.3: FETCH (PARTIAL m:n) answers the messages at those positions among
    the ones the set names (UID order, negative positions from the last), whatever the items
    (the column, listing and general paths); a page past the end answers nothing."""
    uids = [conv.add_message(flags=("\\Seen",) if number % 2 else ()) for number in range(1, 11)]
    conv.store.claim_recent_range("alice", conv.folder("INBOX").id)
    conv.select()
    conv.command("UID STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    conv.command("UID EXPUNGE 1:2")  # UIDs 3..10 are messages 1..8
    assert uids == list(range(1, 11))
    conv.script("""
        C: 10 UID FETCH 4:9 (UID FLAGS) (PARTIAL -1:-3)
        S: * 5 FETCH (UID 7 FLAGS (\\Seen))
        S: * 6 FETCH (UID 8 FLAGS ())
        S: * 7 FETCH (UID 9 FLAGS (\\Seen))
        S: 10 OK FETCH completed
        C: 11 UID FETCH 1:* (FLAGS) (PARTIAL 1:2)
        S: * 1 FETCH (UID 3 FLAGS (\\Seen))
        S: * 2 FETCH (UID 4 FLAGS ())
        S: 11 OK FETCH completed
        C: 12 FETCH 2:* (RFC822.SIZE) (PARTIAL 3:2)
        S: * 3 FETCH (RFC822.SIZE 47)
        S: * 4 FETCH (RFC822.SIZE 47)
        S: 12 OK FETCH completed
        C: 13 UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE) (PARTIAL -2:-1)
        S: * 7 FETCH (UID 9 FLAGS (\\Seen) INTERNALDATE "{*}" RFC822.SIZE 47)
        S: * 8 FETCH (UID 10 FLAGS () INTERNALDATE "{*}" RFC822.SIZE 47)
        S: 13 OK FETCH completed
        C: 14 UID FETCH 1:* (FLAGS) (PARTIAL 9:20)
        S: 14 OK FETCH completed
        C: 15 FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)]) (PARTIAL -1:-1)
        S: * 8 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {17}
        S: Subject: test
        S:
        S: )
        S: 15 OK FETCH completed
    """)


def _random_set(rng: random.Random, top: int) -> list[tuple[int | None, int | None]]:
    """A few ranges up to ``top``: "*" at either end, reversed (4:2), overlapping, single."""
    ranges: list[tuple[int | None, int | None]] = []
    for _ in range(rng.randint(1, 4)):
        start = rng.randint(1, top)
        end = start if rng.random() < 0.2 else rng.randint(1, top)
        shape = rng.random()
        ranges.append((start, None) if shape < 0.15 else (None, start) if shape < 0.2 else (start, end))
    return ranges


def _set_text(ranges: list[tuple[int | None, int | None]]) -> str:
    return ",".join(f"{'*' if start is None else start}:{'*' if end is None else end}" for start, end in ranges)


def test_partial_fetch_pages_match_a_plain_reading(conv: Conversation) -> None:
    """RFC 9394 sections 3.3 and 3.4 on random sets (by UID and by message number, "*", reversed
    and overlapping ranges, UIDs not in the mailbox or above its highest) and pages (from either
    end, past the end), alone and with CHANGEDSINCE, on each FETCH path: the messages answered
    are the plain page of the plainly listed set, then those of them changed since, in order."""
    for number in range(1, 41):
        conv.add_message(flags=("\\Seen",) if number % 3 else ())
    folder = conv.folder("INBOX").id
    gone = [3, 4, 10, 17, 18, 19, 29, 40]
    conv.store.store_flags("alice", folder, gone, "add", ["\\Deleted"])
    conv.store.expunge("alice", folder, gone)
    for uids in ([5, 6, 7], [12, 30, 31, 32, 33], [1, 38], [21]):  # a few MODSEQs apart
        conv.store.store_flags("alice", folder, uids, "add", ["\\Flagged"])
    conv.select()
    listing = b"\n".join(conv.command("UID FETCH 1:* (MODSEQ)"))
    modseqs = {int(uid): int(modseq)
               for uid, modseq in re.findall(rb"^\* \d+ FETCH \(UID (\d+) MODSEQ \((\d+)\)\)$", listing, re.MULTILINE)}
    uids = sorted(modseqs)
    assert len(uids) == 32 and max(uids) == 39
    since_choices = [None, 0, *sorted(set(modseqs.values()))]
    items = ("(UID FLAGS)", "(UID RFC822.SIZE INTERNALDATE)", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    rng = random.Random(9394)
    for _ in range(150):
        by_uid = rng.random() < 0.6
        ranges = _random_set(rng, 45 if by_uid else len(uids))
        first, second = rng.randint(1, 36), rng.randint(1, 36)
        partial = PartialRange(first, second) if rng.random() < 0.5 else PartialRange(-first, -second)
        since = rng.choice(since_choices)
        modifiers = f"PARTIAL {bytes(partial).decode()}" + ("" if since is None else f" CHANGEDSINCE {since}")
        command = f"{'UID ' if by_uid else ''}FETCH {_set_text(ranges)} {rng.choice(items)} ({modifiers})"
        expected = plain_page(partial, plain_set(uids, ranges, by_uid))
        if since is not None:  # RFC 9394 section 3.4: the page of the set, then the changed ones
            expected = [uid for uid in expected if modseqs[uid] > since]
        lines = conv.command(command)
        assert lines[-1].split(b" ")[1] == b"OK", (command, lines[-1])
        answered = [(int(msn), int(uid)) for msn, uid in re.findall(rb"^\* (\d+) FETCH \(UID (\d+)", b"\n".join(lines),
                                                                     re.MULTILINE)]
        assert answered == [(uids.index(uid) + 1, uid) for uid in expected], command
