"""Dovecot imaptest's FETCH and APPEND scripts, ported to conversations: fetch, fetch-body,
fetch-body-mime, fetch-body-message-rfc822, fetch-body-message-rfc822-mime,
fetch-body-message-rfc822-x2, fetch-bodystructure, fetch-envelope, fetch-binary-mime,
fetch-binary-mime-base64, fetch-binary-mime-qp, append, append-binary and nil (repository
dovecot/imaptest, src/tests/). How the scripts read is in tests/imaptest_steps.py.

The messages are our own, written to the structure of each script's .mbox (the same kinds of
parts, headers and boundaries, different words), and every expected value is worked out from
them; a test names the script it follows, and the steps keep the script's order.

How a step's expectations are matched, as imaptest matches them (test-parser.c): the items of
an expected ``* n FETCH (...)`` may come in any order and among others, in any FETCH response
for that message (so a ``\\Seen`` the server sends along with BODY[] counts as the script's
separate ``* n FETCH (FLAGS (\\Seen))``); a FLAGS list is compared as a set that ignores
``\\Recent``. :func:`imaptest_steps.fetched` parses the responses to do that.

Differences, each kept on purpose (noted at the step too):
* fetch-bodystructure: imaptest compares BODY's strings without regard to case (its script
  expects "TEXT" "MIXED" where Dovecot, like gximap, sends the case of the message); the port
  does too.
* fetch-binary-mime-base64's last step asks for ``BINARY.PEEK[5]<15>``, a partial without a
  length, which Dovecot takes as "to the end"; RFC 3501 / RFC 9051's grammar (section-partial,
  ``"<" number "." nz-number ">"``) has no such form, and gximap answers it BAD [CLIENTBUG]. The
  port checks that, and the same range with an explicit length (fetch-binary-mime-qp's ``<40>``
  likewise).
* fetch-binary-mime asks BINARY for sections that are not part numbers (TEXT, MIME, HEADER...);
  RFC 3516 gives BINARY part numbers only, and gximap answers those BAD (checked instead).
* append-binary: the script is stored as binary data (it holds NUL octets) that could not be
  read here; its port follows the script's name and RFC 3516 (an APPEND of a literal8 whose
  binary part holds NULs, then BINARY, BINARY.SIZE and BODY of it), not its exact steps.
* fetch-binary-mime-base64 and -qp: their .mbox files were not stored where this was written;
  the parts are inferred from the scripts' answers (sizes, decoded text, partial ranges).
* Stricter than imaptest: where it only says a response must not come (fetch-body's
  HEADER.FIELDS.NOT, fetch's UID FETCH of an expunged UID) the exact answer is checked.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation
from imaptest_steps import MAILBOX, bad, caseless, fetched, fill, lit, ok, text, uids

# -- reading responses ---------------------------------------------------------------------------


def flags(value: list[str]) -> set[str]:
    """A FLAGS list as imaptest compares it: any order, case-insensitive, ``\\Recent`` ignored."""
    return {flag.lower() for flag in value} - {"\\recent"}


def fetch(conv: Conversation, command: bytes, seq: int = 1) -> dict[str, Any]:
    """``ok fetch ...`` and the items sent for message ``seq``."""
    return fetched(ok(conv, command), seq)


def check_sections(conv: Conversation, sections: list[tuple[str, bytes]]) -> None:
    """For each (section, octets) in order: ``ok fetch 1 (body.peek[section])`` and
    ``* 1 fetch (body[section] {{{octets}}})``, nothing else."""
    for name, octets in sections:
        assert fetch(conv, b"fetch 1 (body.peek[%s])" % name.lower().encode()) == {f"BODY[{name}]": octets}, name


# -- setup ---------------------------------------------------------------------------------------


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


# Our default mailbox (imaptest's default.mbox has four short messages, each with From, Date
# and Subject, bodies of growing length).
DEFAULT_MESSAGES = (
    "From: Anna Test <anna@example.net>\nDate: Mon, 02 Jan 2006 10:20:30 +0100\nSubject: s1\n\ntext1\n\n",
    "From: bert@example.net\nDate: Tue, 03 Jan 2006 10:20:30 +0100\nSubject: s2\n\ntext22\n\n",
    "From: carl@example.net\nDate: Wed, 04 Jan 2006 10:20:30 +0100\nSubject: s3\n\ntext33\n\n",
    "From: dora@example.net\nDate: Thu, 05 Jan 2006 10:20:30 +0100\nSubject: s4\n\ntext4444\n\n",
)


# -- fetch ---------------------------------------------------------------------------------------


def test_fetch(conv: Conversation) -> None:
    """imaptest src/tests/fetch (messages: 3)."""
    fill(conv, DEFAULT_MESSAGES[:3])
    everything = uids(ok(conv, b"fetch 1:3 uid"))
    assert sorted(everything) == [1, 2, 3]
    uid1, uid2, uid3 = everything[1], everything[2], everything[3]
    assert uids(ok(conv, b"fetch 3:1 uid")) == everything
    assert uids(ok(conv, b"fetch 1,* uid")) == {1: uid1, 3: uid3}
    assert uids(ok(conv, b"fetch * uid")) == {3: uid3}
    assert uids(ok(conv, b"fetch *:1 uid")) == everything
    # imaptest counts on a fresh mailbox's UIDs being 1, 2, 3: 4:* is 3:4, the last message.
    assert (uid1, uid2, uid3) == (1, 2, 3)
    assert uids(ok(conv, b"uid fetch 4:* uid")) == {3: uid3}

    # Break the seq = UID map.
    ok(conv, b"store 2 flags \\deleted")
    assert b"* 2 EXPUNGE" in ok(conv, b"expunge")
    assert uids(ok(conv, b"uid fetch 4:* uid")) == {2: uid3}
    assert uids(ok(conv, b"uid fetch 1:* uid")) == {1: uid1, 2: uid3}
    assert uids(ok(conv, b"uid fetch 2 uid")) == {}  # "! 1 fetch (uid $uid1)", "! 2 fetch (uid $uid3)"
    assert uids(ok(conv, b"uid fetch 1,* uid")) == {1: uid1, 2: uid3}

    # The macros.
    full = fetch(conv, b"fetch 1 full")
    assert set(full) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"}
    assert flags(full["FLAGS"]) == set()
    intdate1, size1 = full["INTERNALDATE"], full["RFC822.SIZE"]
    assert isinstance(intdate1, bytes) and int(size1) == len(text(DEFAULT_MESSAGES[0]))
    assert isinstance(full["ENVELOPE"], list) and isinstance(full["BODY"], list)
    all_ = fetch(conv, b"fetch 1 all")
    assert set(all_) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"}
    assert (flags(all_["FLAGS"]), all_["INTERNALDATE"], all_["RFC822.SIZE"]) == (set(), intdate1, size1)
    fast = fetch(conv, b"fetch 1 fast")
    assert set(fast) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE"}
    assert (flags(fast["FLAGS"]), fast["INTERNALDATE"], fast["RFC822.SIZE"]) == (set(), intdate1, size1)


# -- fetch-body ----------------------------------------------------------------------------------


def test_fetch_body(conv: Conversation) -> None:
    """imaptest src/tests/fetch-body (the default mailbox: four messages)."""
    fill(conv, DEFAULT_MESSAGES)
    one, two, three, four = (text(message) for message in DEFAULT_MESSAGES)

    # Header and body fetches.
    hdr1 = fetch(conv, b"fetch 1 rfc822.header")["RFC822.HEADER"]
    assert hdr1 == one[:one.index(b"\r\n\r\n") + 4]
    assert fetch(conv, b"fetch 1 body.peek[header]") == {"BODY[HEADER]": hdr1}

    items = fetch(conv, b"fetch 1 (flags body.peek[text])")
    assert flags(items["FLAGS"]) == set() and items["BODY[TEXT]"] == b"text1\r\n\r\n"
    items = fetch(conv, b"fetch 1 rfc822.text")
    assert items["RFC822.TEXT"] == b"text1\r\n\r\n" and flags(items["FLAGS"]) == {"\\seen"}

    items = fetch(conv, b"fetch 2 (flags body.peek[])", 2)
    assert flags(items["FLAGS"]) == set()
    full2 = items["BODY[]"]
    assert full2 == two
    items = fetch(conv, b"fetch 2 rfc822", 2)
    assert items["RFC822"] == full2 and flags(items["FLAGS"]) == {"\\seen"}

    items = fetch(conv, b"fetch 3 (body[])", 3)
    assert items["BODY[]"] == three and flags(items["FLAGS"]) == {"\\seen"}
    items = fetch(conv, b"fetch 4 (body[header])", 4)
    assert items["BODY[HEADER]"] == four[:four.index(b"\r\n\r\n") + 4] and flags(items["FLAGS"]) == {"\\seen"}

    # Partial fetches: message 2's text is "text22" CRLF CRLF, message 3's "text33" CRLF CRLF;
    # the ranges that end or start inside a CRLF get the half they cover.
    assert fetch(conv, b"fetch 2 body.peek[text]<0.3>", 2) == {"BODY[TEXT]<0>": b"tex"}
    assert fetch(conv, b"fetch 2 body.peek[text]<3.3>", 2) == {"BODY[TEXT]<3>": b"t22"}
    assert fetch(conv, b"fetch 3 body.peek[text]<0.1>", 3) == {"BODY[TEXT]<0>": b"t"}
    assert fetch(conv, b"fetch 3 body.peek[text]<5.1>", 3) == {"BODY[TEXT]<5>": b"3"}
    assert fetch(conv, b"fetch 3 body.peek[text]<5.2>", 3) == {"BODY[TEXT]<5>": b"3\r"}
    assert fetch(conv, b"fetch 3 body.peek[text]<5.3>", 3) == {"BODY[TEXT]<5>": b"3\r\n"}
    assert fetch(conv, b"fetch 3 body.peek[text]<6.1>", 3) == {"BODY[TEXT]<6>": b"\r"}
    assert fetch(conv, b"fetch 3 body.peek[text]<6.2>", 3) == {"BODY[TEXT]<6>": b"\r\n"}
    assert fetch(conv, b"fetch 3 body.peek[text]<7.1>", 3) == {"BODY[TEXT]<7>": b"\n"}

    # Header fields.
    from_field = b"From: Anna Test <anna@example.net>\r\n\r\n"
    assert fetch(conv, b"fetch 1 body.peek[header.fields (from)]") == {"BODY[HEADER.FIELDS (FROM)]": from_field}
    assert fetch(conv, b"fetch 1 (body.peek[header.fields (from)])") == {"BODY[HEADER.FIELDS (FROM)]": from_field}
    assert fetch(conv, b"fetch 1 body.peek[header.fields (from subject)]") == {
        "BODY[HEADER.FIELDS (FROM SUBJECT)]": b"From: Anna Test <anna@example.net>\r\nSubject: s1\r\n\r\n"}
    # imaptest: the answer must not be the whole header (Date included); here exactly the rest.
    assert fetch(conv, b"fetch 1 body.peek[header.fields.not (date)]") == {
        "BODY[HEADER.FIELDS.NOT (DATE)]": b"From: Anna Test <anna@example.net>\r\nSubject: s1\r\n\r\n"}
    assert fetch(conv, b"fetch 1 body.peek[header.fields (xyz)]") == {"BODY[HEADER.FIELDS (XYZ)]": b"\r\n"}


# -- fetch-body-mime -----------------------------------------------------------------------------

# As imaptest's fetch-body-mime.mbox: multipart/mixed whose boundary parameter is a quoted string
# folded onto a second line, a prologue, a text part of a private subtype with a charset, and a
# message/rfc822 whose message is multipart/alternative (a prologue ending right at the first
# delimiter, HTML and plain text parts, an epilogue), then the outer epilogue.
MIME_MESSAGE = """From: root@example.org
Date: Fri, 06 Jan 2006 11:12:13 +0100
Mime-Version: 1.0
Content-Type: multipart/mixed; boundary="abc
 def"

Outer prologue text

--abc def
Content-Type: text/x-custom; charset=us-ascii

howdy

--abc def
Content-Type: message/rfc822

From: inner@example.org
Date: Sat, 07 Jan 2006 12:13:14 +0100
Subject: inner
Content-Type: multipart/alternative; boundary="in1"

Inner prologue
--in1
Content-Type: text/html

<b>Greetings</b>

--in1
Content-Type: text/plain

More greetings

--in1--
Inner epilogue

--abc def--
Outer epilogue

"""


def between(data: bytes, start: bytes, end: bytes) -> bytes:
    """``data`` from the first ``start`` up to and including the ``end`` that follows it."""
    first = data.index(start)
    return data[first:data.index(end, first) + len(end)]


def mime_sections() -> list[tuple[str, bytes]]:
    """(section, expected octets) of MIME_MESSAGE, in fetch-body-mime's order."""
    whole = text(MIME_MESSAGE)
    inner = between(whole, b"From: inner", b"Inner epilogue\r\n")
    inner_header = between(whole, b"From: inner", b"\r\n\r\n")
    return [
        ("", whole),
        ("TEXT", between(whole, b"Outer prologue", b"Outer epilogue\r\n\r\n")),
        ("1", b"howdy\r\n"),
        ("1.MIME", b"Content-Type: text/x-custom; charset=us-ascii\r\n\r\n"),
        ("2", inner),
        ("2.MIME", b"Content-Type: message/rfc822\r\n\r\n"),
        ("2.HEADER", inner_header),
        ("2.HEADER.FIELDS (FROM SUBJECT X-FOO)", b"From: inner@example.org\r\nSubject: inner\r\n\r\n"),
        ("2.HEADER.FIELDS.NOT (FROM SUBJECT X-FOO)",
         b"Date: Sat, 07 Jan 2006 12:13:14 +0100\r\nContent-Type: multipart/alternative; boundary=\"in1\"\r\n\r\n"),
        ("2.TEXT", inner[len(inner_header):]),
        ("2.1.MIME", b"Content-Type: text/html\r\n\r\n"),
        ("2.1", b"<b>Greetings</b>\r\n"),
        ("2.2.MIME", b"Content-Type: text/plain\r\n\r\n"),
        ("2.2", b"More greetings\r\n"),
    ]


def test_fetch_body_mime(conv: Conversation) -> None:
    """imaptest src/tests/fetch-body-mime (its own mbox: one MIME message)."""
    fill(conv, [MIME_MESSAGE])
    check_sections(conv, mime_sections())


# -- fetch-body-message-rfc822, -mime, -x2 -------------------------------------------------------

# As fetch-body-message-rfc822.mbox: a message whose whole body is a message/rfc822.
RFC822_MESSAGE = """From: outer@example.org
Date: Sun, 08 Jan 2006 13:14:15 +0100
Mime-Version: 1.0
Content-Type: message/rfc822

From: inner@example.org
Date: Mon, 09 Jan 2006 14:15:16 +0100
Subject: inner

Greetings
"""


def test_fetch_body_message_rfc822(conv: Conversation) -> None:
    """imaptest src/tests/fetch-body-message-rfc822 (its own mbox)."""
    fill(conv, [RFC822_MESSAGE])
    whole = text(RFC822_MESSAGE)
    inner = between(whole, b"From: inner", b"Greetings\r\n")
    check_sections(conv, [
        ("", whole),
        ("TEXT", inner),
        ("1", inner),  # part 1 of a message that is not multipart: its body, the whole message
        ("1.HEADER", between(whole, b"From: inner", b"\r\n\r\n")),
        ("1.HEADER.FIELDS (FROM SUBJECT X-FOO)", b"From: inner@example.org\r\nSubject: inner\r\n\r\n"),
        ("1.HEADER.FIELDS.NOT (FROM SUBJECT X-FOO)", b"Date: Mon, 09 Jan 2006 14:15:16 +0100\r\n\r\n"),
        ("1.TEXT", b"Greetings\r\n"),
    ])


# As fetch-body-message-rfc822-mime.mbox: message/rfc822 holding a multipart/digest whose
# delimiter lines carry trailing white space, whose first part has no MIME header at all (so it
# is message/rfc822 by the digest's default) and whose second has one field of its own.
RFC822_DIGEST_MESSAGE = """From: outer@example.org
Date: Sun, 08 Jan 2006 13:14:15 +0100
Mime-Version: 1.0
Content-Type: message/rfc822

From: inner@example.org
Date: Mon, 09 Jan 2006 14:15:16 +0100
Subject: inner
Content-Type: multipart/digest; boundary="dig"

before the parts

--dig\x20

From: d1@example.com
Subject: d1

d1 text

--dig\x20
X-Part: second

From: d2@example.com
Subject: d2

d2 text

--dig--

after the parts
"""


def test_fetch_body_message_rfc822_mime(conv: Conversation) -> None:
    """imaptest src/tests/fetch-body-message-rfc822-mime (its own mbox)."""
    fill(conv, [RFC822_DIGEST_MESSAGE])
    whole = text(RFC822_DIGEST_MESSAGE)
    inner = between(whole, b"From: inner", b"after the parts\r\n")
    inner_header = between(whole, b"From: inner", b"\r\n\r\n")
    check_sections(conv, [
        ("", whole),
        ("TEXT", inner),
        ("1", inner),
        ("1.HEADER", inner_header),
        ("1.TEXT", inner[len(inner_header):]),
        ("1.1", b"From: d1@example.com\r\nSubject: d1\r\n\r\nd1 text\r\n"),
        ("1.1.MIME", b"\r\n"),
        ("1.1.HEADER", b"From: d1@example.com\r\nSubject: d1\r\n\r\n"),
        ("1.1.TEXT", b"d1 text\r\n"),
        ("1.2", b"From: d2@example.com\r\nSubject: d2\r\n\r\nd2 text\r\n"),
        ("1.2.MIME", b"X-Part: second\r\n\r\n"),
        ("1.2.HEADER", b"From: d2@example.com\r\nSubject: d2\r\n\r\n"),
        ("1.2.TEXT", b"d2 text\r\n"),
    ])


# As fetch-body-message-rfc822-x2.mbox: a message/rfc822 whose message is a message/rfc822 too.
RFC822_TWICE_MESSAGE = """From: outer@example.org
Date: Sun, 08 Jan 2006 13:14:15 +0100
Mime-Version: 1.0
Content-Type: message/rfc822

From: middle@example.org
Date: Mon, 09 Jan 2006 14:15:16 +0100
Mime-Version: 1.0
Content-Type: message/rfc822

From: inner@example.org
Date: Tue, 10 Jan 2006 15:16:17 +0100
Subject: inner

Greetings
"""


def test_fetch_body_message_rfc822_x2(conv: Conversation) -> None:
    """imaptest src/tests/fetch-body-message-rfc822-x2 (its own mbox)."""
    fill(conv, [RFC822_TWICE_MESSAGE])
    whole = text(RFC822_TWICE_MESSAGE)
    middle = between(whole, b"From: middle", b"Greetings\r\n")
    inner = between(whole, b"From: inner", b"Greetings\r\n")
    check_sections(conv, [
        ("", whole),
        ("TEXT", middle),
        ("1", middle),
        ("1.1", inner),
        ("1.HEADER", between(whole, b"From: middle", b"\r\n\r\n")),
        ("1.TEXT", inner),
        ("1.1.1", b"Greetings\r\n"),
        ("1.1.HEADER", between(whole, b"From: inner", b"\r\n\r\n")),
        ("1.1.TEXT", b"Greetings\r\n"),
    ])


# -- fetch-bodystructure -------------------------------------------------------------------------

# As fetch-bodystructure.mbox: multipart/mixed with a folded quoted boundary and one text part of
# a private subtype written in mixed case, with a charset.
BODYSTRUCTURE_MESSAGE = """From: root@example.org
Date: Fri, 06 Jan 2006 11:12:13 +0100
Mime-Version: 1.0
Content-Type: multipart/mixed; boundary="abc
 def"

--abc def
Content-Type: text/x-CUSTOM; charset=us-ascii

howdy

--abc def--
"""


def test_fetch_bodystructure(conv: Conversation) -> None:
    """imaptest src/tests/fetch-bodystructure (its own mbox). imaptest compares the strings
    without regard to case (see the module docstring), so does this."""
    fill(conv, [BODYSTRUCTURE_MESSAGE])
    lines = ok(conv, b"FETCH 1:* BODY")
    assert len(lines) == 1, lines
    assert caseless(fetched(lines, 1)["BODY"]) == caseless(
        [[b"TEXT", b"X-CUSTOM", [b"CHARSET", b"us-ascii"], None, None, b"7BIT", "7", "1"], b"MIXED"])


# -- fetch-envelope ------------------------------------------------------------------------------

ENVELOPE_DATE = "Wed, 11 Jan 2006 16:17:18 +0100"

# As fetch-envelope.mbox: every envelope field; two minimal messages (Date and a bare From);
# From with the name in a comment and To of two groups; empty Sender and Reply-To; a source route.
ENVELOPE_MESSAGES = (
    f"""Message-ID: <m1@example.org>
In-Reply-To: <parent@example.org>
Date: {ENVELOPE_DATE}
Subject: all the fields
From: Frieda From <frieda@from.example>
To: Toni To <toni@to.example>
Cc: Cilla Cc <cilla@cc.example>
Bcc: Bodo Bcc <bodo@bcc.example>
Sender: Sina Sender <sina@sender.example>
Reply-To: Rene Reply <rene@reply.example>

text
""",
    f"Date: {ENVELOPE_DATE}\nFrom: someone@host\n\ntext\n",
    f"Date: {ENVELOPE_DATE}\nFrom: someone@host\n\ntext\n",
    f"""Date: {ENVELOPE_DATE}
From: someone@host (Some One)
To: team: t1@one.example, t2@two.example;, crew: c1@three.example;

text
""",
    f"Date: {ENVELOPE_DATE}\nFrom: someone@host (Some One)\nSender: \nReply-To: \n\ntext\n",
    f"Date: {ENVELOPE_DATE}\nFrom: <@relay:someone@host>\n\ntext\n",
)


def test_fetch_envelope(conv: Conversation) -> None:
    """imaptest src/tests/fetch-envelope (its own mbox): date, subject, from, sender, reply-to,
    to, cc, bcc, in-reply-to, message-id."""
    fill(conv, ENVELOPE_MESSAGES)
    lines = ok(conv, b"FETCH 1:* ENVELOPE")
    date = ENVELOPE_DATE.encode()

    def address(name: bytes | None, route: bytes | None, mailbox: bytes | None, host: bytes | None) -> list[Any]:
        return [name, route, mailbox, host]

    bare = [address(None, None, b"someone", b"host")]
    named = [address(b"Some One", None, b"someone", b"host")]
    expected = {
        1: [date, b"all the fields", [address(b"Frieda From", None, b"frieda", b"from.example")],
            [address(b"Sina Sender", None, b"sina", b"sender.example")],
            [address(b"Rene Reply", None, b"rene", b"reply.example")],
            [address(b"Toni To", None, b"toni", b"to.example")],
            [address(b"Cilla Cc", None, b"cilla", b"cc.example")],
            [address(b"Bodo Bcc", None, b"bodo", b"bcc.example")],
            b"<parent@example.org>", b"<m1@example.org>"],
        # Sender and Reply-To absent: the From address (RFC 3501 section 7.4.2).
        2: [date, None, bare, bare, bare, None, None, None, None, None],
        3: [date, None, bare, bare, bare, None, None, None, None, None],
        # A group is its start (host NIL, mailbox the name), its members, its end (all NIL).
        4: [date, None, named, named, named,
            [address(None, None, b"team", None), address(None, None, b"t1", b"one.example"),
             address(None, None, b"t2", b"two.example"), address(None, None, None, None),
             address(None, None, b"crew", None), address(None, None, b"c1", b"three.example"),
             address(None, None, None, None)],
            None, None, None, None],
        # Sender and Reply-To present but empty: the From address too.
        5: [date, None, named, named, named, None, None, None, None, None],
        6: [date, None] + [[address(None, b"@relay", b"someone", b"host")]] * 3 + [None] * 5,
    }
    assert {seq: fetched(lines, seq)["ENVELOPE"] for seq in range(1, 7)} == expected


# -- fetch-binary-mime ---------------------------------------------------------------------------


def test_fetch_binary_mime(conv: Conversation) -> None:
    """imaptest src/tests/fetch-binary-mime (capabilities: BINARY; fetch-body-mime's message):
    BINARY[] where nothing needs decoding is BODY[]'s octets, and BINARY.SIZE their count.

    The script also asks for BINARY[TEXT], [1.MIME], [2.HEADER], [2.HEADER.FIELDS ...],
    [2.TEXT], [2.1.MIME] and [2.2.MIME], which Dovecot answers like BODY[]. RFC 3516 section 6
    (and RFC 9051 section 9) give BINARY only part numbers (``section-binary = "[" [section-part]
    "]"``), and gximap answers them BAD: those steps check that. Each section's BINARY.PEEK comes
    before its BINARY.SIZE here, where the script takes some of the pairs the other way round."""
    assert "BINARY" in conv.capabilities()
    fill(conv, [MIME_MESSAGE])
    for name, expected in mime_sections():
        command = b"fetch 1 (binary.peek[%s])" % name.lower().encode()
        size_command = b"fetch 1 (binary.size[%s])" % name.lower().encode()
        if name and not name.replace(".", "").isdigit():
            bad(conv, command)
            bad(conv, size_command)
            continue
        assert fetch(conv, command) == {f"BINARY[{name}]": expected}, name
        assert fetch(conv, size_command) == {f"BINARY.SIZE[{name}]": str(len(expected))}, name


# -- fetch-binary-mime-base64 --------------------------------------------------------------------

# As fetch-binary-mime-base64.mbox (not stored where this port was written, so its parts are
# inferred from the script's answers): five base64 parts, the first two of the same text encoded
# differently, the last holding CRLFs in its data.
BASE64_TEXTS = (b"salut monde", b"salut monde", b"greetings to all", b"greetings everyone",
                b"ABCDEFGHIJKL\r\nMNO\r\nPQRSTUVWXYZ")


def base64_message() -> str:
    one, two, three, four, five = (base64.b64encode(data).decode() for data in BASE64_TEXTS)
    encodings = (
        one,
        "\n".join(two[index:index + 4] for index in range(0, len(two), 4)),  # one quantum a line
        three[:8] + " " + three[8:16] + "\t" + three[16:],  # white space inside (RFC 2045 6.8: ignored)
        four + "   ",  # trailing white space
        five,
    )
    parts = "".join(f"--b64\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
                    f"{encoded}\n" for encoded in encodings)
    return ("From: root@example.org\nDate: Fri, 06 Jan 2006 11:12:13 +0100\nMime-Version: 1.0\n"
            f"Content-Type: multipart/mixed; boundary=\"b64\"\n\n{parts}--b64--\n")


def test_fetch_binary_mime_base64(conv: Conversation) -> None:
    """imaptest src/tests/fetch-binary-mime-base64 (capabilities: BINARY; its own mbox)."""
    fill(conv, [base64_message()])
    one, two, three, four, five = BASE64_TEXTS
    assert fetch(conv, b"FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[5])") == {"BINARY.SIZE[1]": "11", "BINARY.SIZE[5]": "30"}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.PEEK[3] BINARY.PEEK[4] BINARY.PEEK[5])") == {
        "BINARY[1]": one, "BINARY[2]": two, "BINARY[3]": three, "BINARY[4]": four, "BINARY[5]": five}
    assert fetch(conv, b"FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])") == {"BINARY.SIZE[1]": "11", "BINARY[1]": one}
    assert fetch(conv, b"FETCH 1 (BINARY.SIZE[3] BINARY.PEEK[2])") == {"BINARY.SIZE[3]": "16", "BINARY[2]": two}
    assert fetch(conv, b"FETCH 1 (BINARY.SIZE[2] BINARY.SIZE[3] BINARY.SIZE[4])") == {
        "BINARY.SIZE[2]": "11", "BINARY.SIZE[3]": "16", "BINARY.SIZE[4]": "18"}
    # Partials count octets of the decoded data.
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[5]<0.7>)") == {"BINARY[5]<0>": b"ABCDEFG"}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[5]<0.8>)") == {"BINARY[5]<0>": b"ABCDEFGH"}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[5]<0.10>)") == {"BINARY[5]<0>": b"ABCDEFGHIJ"}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[5]<10.10>)") == {"BINARY[5]<10>": b"KL\r\nMNO\r\nP"}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[5]<5.10>)") == {"BINARY[5]<5>": b"FGHIJKL\r\nM"}
    # "<15>" without a length is not in the grammar (see the module docstring): BAD; to the end
    # spelled with a length.
    bad(conv, b"FETCH 1 (BINARY.PEEK[5]<15>)")
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[5]<15.100>)") == {"BINARY[5]<15>": b"NO\r\nPQRSTUVWXYZ"}


# -- fetch-binary-mime-qp ------------------------------------------------------------------------

# As fetch-binary-mime-qp's part (inferred the same way): a soft line break, a literal TAB,
# encoded TABs and spaces, trailing white space (RFC 2045 6.7 rule 3: deleted when decoding), an
# encoded CRLF and an underscore (only Q of RFC 2047 makes that a space).
QP_MESSAGE = """From: root@example.org
Date: Fri, 06 Jan 2006 11:12:13 +0100
Mime-Version: 1.0
Content-Type: multipart/mixed; boundary="qp"

--qp
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: quoted-printable

mor=
ning
sun
sea\tsky
sea=09 =09x
sea=20sky
sea s \t\x20
sea=0D=0Asky
sea_sky

--qp--
"""
QP_DECODED = b"morning\r\nsun\r\nsea\tsky\r\nsea\t \tx\r\nsea sky\r\nsea s\r\nsea\r\nsky\r\nsea_sky\r\n"


def test_fetch_binary_mime_qp(conv: Conversation) -> None:
    """imaptest src/tests/fetch-binary-mime-qp (capabilities: BINARY; its own mbox)."""
    fill(conv, [QP_MESSAGE])
    assert fetch(conv, b"FETCH 1 (BINARY.SIZE[1])") == {"BINARY.SIZE[1]": str(len(QP_DECODED))}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[1])") == {"BINARY[1]": QP_DECODED}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[1]<0.10>)") == {"BINARY[1]<0>": b"morning\r\ns"}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[1]<10.10>)") == {"BINARY[1]<10>": b"un\r\nsea\tsk"}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[1]<20.10>)") == {"BINARY[1]<20>": b"y\r\nsea\t \tx"}
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[1]<15.10>)") == {"BINARY[1]<15>": b"ea\tsky\r\nse"}
    bad(conv, b"FETCH 1 (BINARY.PEEK[1]<40>)")  # no length: see the module docstring
    assert fetch(conv, b"FETCH 1 (BINARY.PEEK[1]<40.100>)") == {"BINARY[1]<40>": QP_DECODED[40:]}


# -- append --------------------------------------------------------------------------------------


def recent_count(*views: dict[str, Any]) -> int:
    return sum("\\recent" in {flag.lower() for flag in view["FLAGS"]} for view in views)


def test_append(conv: Conversation) -> None:
    """imaptest src/tests/append (connections: 3; state: created). Two connections have the
    mailbox selected, the third does not: \\Recent goes to one of the two, never to both (imaptest
    catches a duplicate with its model of the mailbox, here it is counted), and STATUS from the
    third counts none."""
    first = conv
    second, third = first.second_session(), first.second_session()
    second.login()
    third.login()
    box = MAILBOX.encode()
    ok(first, b"CREATE " + box)
    ok(first, b"SELECT " + box)
    ok(second, b"SELECT " + box)

    assert b"* 1 EXISTS" in ok(first, b"APPEND " + box + b" (\\Seen \\Flagged) " + lit("From: a@example.org\n\none\n"))
    assert b"* 1 EXISTS" in ok(second, b"NOOP")
    assert ok(third, b"STATUS " + box + b" (MESSAGES UNSEEN RECENT)") == [
        b"* STATUS " + box + b" (MESSAGES 1 UNSEEN 0 RECENT 0)"]
    in_first, in_second = fetch(first, b"FETCH 1 (UID FLAGS)"), fetch(second, b"FETCH 1 (UID FLAGS)")
    uid1 = in_first["UID"]
    assert in_second["UID"] == uid1
    assert flags(in_first["FLAGS"]) == flags(in_second["FLAGS"]) == {"\\seen", "\\flagged"}
    assert recent_count(in_first, in_second) == 1

    # imaptest's bare "append" appends its next message to the test mailbox, without flags.
    assert b"* 2 EXISTS" in ok(second, b"APPEND " + box + b" " + lit("From: b@example.org\n\ntwo\n"))
    assert b"* 2 EXISTS" in ok(first, b"NOOP")
    assert ok(third, b"STATUS " + box + b" (MESSAGES UNSEEN RECENT)") == [
        b"* STATUS " + box + b" (MESSAGES 2 UNSEEN 1 RECENT 0)"]
    in_first, in_second = fetch(first, b"FETCH 2 (UID FLAGS)", 2), fetch(second, b"FETCH 2 (UID FLAGS)", 2)
    assert in_first["UID"] == in_second["UID"] != uid1
    assert flags(in_first["FLAGS"]) == flags(in_second["FLAGS"]) == set()
    assert recent_count(in_first, in_second) == 1

    ok(third, b"APPEND " + box + b" " + lit("From: c@example.org\n\nthree\n"))
    assert ok(third, b"STATUS " + box + b" (MESSAGES UNSEEN)") == [b"* STATUS " + box + b" (MESSAGES 3 UNSEEN 2)"]
    assert b"* 3 EXISTS" in ok(second, b"NOOP")
    assert b"* 3 EXISTS" in ok(first, b"NOOP")
    in_first, in_second = fetch(first, b"FETCH 3 (UID FLAGS)", 3), fetch(second, b"FETCH 3 (UID FLAGS)", 3)
    assert in_first["UID"] == in_second["UID"]
    assert recent_count(in_first, in_second) == 1


# -- nil -----------------------------------------------------------------------------------------


def test_nil(conv: Conversation) -> None:
    """imaptest src/tests/nil (the default mailbox): NIL where a string is expected is the
    string "NIL" (an atom is an astring), so it searches for that text, and LIST "" NIL is fine
    (the pattern "NIL": no such mailbox, nothing listed)."""
    fill(conv, ["From: nil@example.org\nSubject: about NIL\n\nthe word nil in the body\n",
                "From: other@example.org\nSubject: other\n\nnothing here\n"])
    assert ok(conv, b"SEARCH SUBJECT NIL") == [b"* SEARCH 1"]
    assert ok(conv, b"SEARCH BODY nil") == [b"* SEARCH 1"]
    assert ok(conv, b'LIST "" NIL') == []


# -- append-binary -------------------------------------------------------------------------------


def test_append_binary(conv: Conversation) -> None:
    """imaptest src/tests/append-binary (capabilities: BINARY; state: created). The script could
    not be read (see the module docstring); this follows RFC 3516 section 4.4: an APPEND of a
    literal8 (LITERAL+ and synchronising) whose part declared binary holds NUL, CR and LF octets,
    then BINARY and BINARY.SIZE give the octets back, and BODY does so without a NUL (a literal may
    not carry one, RFC 3501 section 4.3)."""
    assert "BINARY" in conv.capabilities()
    box = MAILBOX.encode()
    ok(conv, b"CREATE " + box)
    octets = b"\x00zero\x00\r\nline\nend\r\x00"
    header = text("From: bin@example.org\nMime-Version: 1.0\nContent-Type: application/octet-stream\n"
                  "Content-Transfer-Encoding: binary\n\n")
    single = header + octets
    ok(conv, b"APPEND %s ~{%d+}\r\n%s" % (box, len(single), single))
    multipart = text("From: bin@example.org\nMime-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"x\"\n\n"
                     "--x\nContent-Type: text/plain\n\nsome text\n--x\nContent-Type: application/octet-stream\n"
                     "Content-Transfer-Encoding: binary\n\n") + octets + text("\n--x--\n")
    tag = conv.next_tag().encode()
    assert conv.send(tag + b" APPEND %s ~{%d}\r\n" % (box, len(multipart))) == [b"+ Ready for literal data"]
    assert conv.send(multipart + b"\r\n")[-1].startswith(tag + b" OK ")
    ok(conv, b"SELECT " + box)

    assert fetch(conv, b"FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])") == {"BINARY.SIZE[1]": str(len(octets)), "BINARY[1]": octets}
    assert fetch(conv, b"FETCH 2 (BINARY.SIZE[2] BINARY.PEEK[2] BINARY.PEEK[1])", 2) == {
        "BINARY.SIZE[2]": str(len(octets)), "BINARY[2]": octets, "BINARY[1]": b"some text"}
    for seq, part in ((1, b"1"), (2, b"2")):
        lines = ok(conv, b"FETCH %d (BODY.PEEK[%s])" % (seq, part))
        assert b"\x00" not in b"".join(lines)
        # gximap keeps a binary part base64-encoded (see gximap/session/commands/append.py).
        assert base64.b64decode(fetched(lines, seq)[f"BODY[{part.decode()}]"]) == octets
