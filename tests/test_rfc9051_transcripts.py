"""The examples of RFC 9051 (IMAP4rev2) replayed through the conversation harness, after
``ENABLE IMAP4rev2``, plus the rev2 differences from IMAP4rev1 that clients rely on.

The same adaptations as in test_rfc3501_transcripts.py apply (our texts are ``{*}``, our
UIDVALIDITY, our order of untagged responses and flags, UIDPLUS codes, ``[HIGHESTMODSEQ]`` on
every SELECT/EXAMINE (RFC 7162 3.1.2.1), real parent mailboxes instead of ``\\Noselect`` ones,
atoms where the examples quote names that need no quoting).
Specific to IMAP4rev2 here:

* the rev2 sample connections do not ENABLE IMAP4rev2 (their server speaks only rev2); ours
  speaks both, so the client enables it first;
* FETCH responses caused by STORE carry the UID as well (like the updates after other
  sessions' changes), which RFC 9051 allows.
"""

from __future__ import annotations

import calendar
import time

import pytest
from conversation import Conversation

from gximap.session.base import State

SEEN = "\\Seen"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DEFAULT_FOLDERS = ("Archive", "Drafts", "Junk", "Sent", "Trash")


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path) as conversation:
        conversation.login()
        conversation.command("ENABLE IMAP4rev2")
        yield conversation


def _epoch(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%d-%b-%Y %H:%M:%S"))


def _message(number: int, sender: str = "Fred Foobar <foobar@example.com>", body: str = "") -> bytes:
    return (f"From: {sender}\r\nSubject: message {number}\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\n"
            f"{body or f'text of message {number}'}\r\n").encode()


def _append(conv: Conversation, mailbox: str, number: int, *, flags: tuple[str, ...] = (SEEN,),
            uid: int | None = None, data: bytes | None = None, internaldate: int | None = None) -> int:
    _uidvalidity, new_uid = conv.store.append("alice", conv.folder(mailbox).id, data or _message(number),
                                              flags=flags, uid=uid, internaldate=internaldate)
    return new_uid


def _only_inbox(conv: Conversation) -> None:
    """Remove the default special-use folders, so LIST answers look like the RFC's examples."""
    for name in DEFAULT_FOLDERS:
        conv.store.set_subscribed("alice", name, False)
        conv.store.delete_folder("alice", name)


# -- 6.1 / 6.3.1 capabilities and ENABLE --------------------------------------------------------


def test_6_3_1_enable(tmp_path):
    with Conversation(tmp_path) as conv:
        conv.login()
        conv.script("""
            C: t1 CAPABILITY
            S: * CAPABILITY IMAP4rev1 IMAP4rev2 {*:caps}
            S: t1 OK {*}
            # RFC: ENABLE CONDSTORE X-GOOD-IDEA; unknown names are ignored.
            C: t2 ENABLE IMAP4rev2 X-GOOD-IDEA
            S: * ENABLED IMAP4rev2
            S: t2 OK {*}
            C: t3 ENABLE IMAP4rev2
            S: * ENABLED
            S: t3 OK {*}
            C: t4 SELECT INBOX
            S: * FLAGS {*}
            S: * OK [PERMANENTFLAGS {*}] {*}
            S: * 0 EXISTS
            S: * OK [UIDVALIDITY {n}] {*}
            S: * OK [UIDNEXT 1] {*}
            S: * OK [HIGHESTMODSEQ {n}] {*}
            S: * OK [MAILBOXID ({*})] Mailbox ID
            S: * LIST (\\HasNoChildren) "/" INBOX
            S: t4 OK [READ-WRITE] {*}
            # ENABLE is valid in the authenticated state only.
            C: t5 ENABLE IMAP4rev2
            S: t5 BAD {*}
        """)
        # What IMAP4rev2 incorporates (RFC 9051 section 1) is all advertised.
        caps = set(conv.captured["caps"].split())
        for name in ("NAMESPACE", "UNSELECT", "UIDPLUS", "ESEARCH", "SEARCHRES", "ENABLE", "IDLE",
                     "LIST-EXTENDED", "LIST-STATUS", "MOVE", "BINARY", "SPECIAL-USE", "STATUS=SIZE",
                     "CHILDREN", "LITERAL+"):
            assert name in caps, name


def test_rev2_is_not_enabled_before_authentication(tmp_path):
    with Conversation(tmp_path) as conv:
        conv.script("""
            C: a1 ENABLE IMAP4rev2
            S: a1 BAD {*}
        """)


# -- 6.3 authenticated state --------------------------------------------------------------------


def test_6_3_2_select(conv):
    for number in range(1, 172):
        _append(conv, "INBOX", number, flags=() if number == 12 else (SEEN,))
    _append(conv, "INBOX", 172, uid=4391)
    conv.script("""
        # RFC order: EXISTS UIDVALIDITY UIDNEXT FLAGS PERMANENTFLAGS LIST. No RECENT, no UNSEEN.
        C: A142 SELECT INBOX
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] {*}
        S: * 172 EXISTS
        S: * OK [UIDVALIDITY {n}] {*}
        S: * OK [UIDNEXT 4392] {*}
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: A142 OK [READ-WRITE] {*}
        C: A143 FETCH 171:172 FLAGS
        S: * 171 FETCH (FLAGS (\\Seen))
        S: * 172 FETCH (FLAGS (\\Seen))
        S: A143 OK {*}
    """)


def test_6_3_3_examine_and_closed(conv):
    conv.command("CREATE blurdybloop")
    for number in range(1, 17):
        _append(conv, "blurdybloop", number)
    _append(conv, "blurdybloop", 17, uid=4391)
    conv.select()
    conv.script("""
        C: A932 EXAMINE blurdybloop
        S: * OK [CLOSED] {*}
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS ()] {*}
        S: * 17 EXISTS
        S: * OK [UIDVALIDITY {n}] {*}
        S: * OK [UIDNEXT 4392] {*}
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: * LIST (\\HasNoChildren) "/" blurdybloop
        S: A932 OK [READ-ONLY] {*}
        # A failed SELECT closes the previous mailbox too.
        C: A933 SELECT nosuch
        S: * OK [CLOSED] {*}
        S: A933 NO [NONEXISTENT] {*}
        C: A934 FETCH 1 FLAGS
        S: A934 BAD {*}
    """)
    assert conv.session.state is State.AUTHENTICATED


def test_6_3_4_create(conv):
    conv.script("""
        C: A003 CREATE owatagusiam/
        S: A003 OK {*}
        C: A004 CREATE owatagusiam/blurdybloop
        S: A004 OK {*}
        # Superior names are created as needed.
        C: A005 CREATE foo/bar/zap
        S: A005 OK {*}
        C: A006 LIST "" foo*
        S: * LIST (\\HasChildren) "/" foo
        S: * LIST (\\HasChildren) "/" foo/bar
        S: * LIST (\\HasNoChildren) "/" foo/bar/zap
        S: A006 OK {*}
        C: A007 CREATE INBOX
        S: A007 NO [ALREADYEXISTS] {*}
    """)


def test_6_3_5_delete(conv):
    _only_inbox(conv)
    conv.command("CREATE blurdybloop")
    conv.command("CREATE foo/bar")
    conv.command("SUBSCRIBE foo/bar")
    conv.script("""
        C: A682 LIST "" *
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\HasNoChildren) "/" blurdybloop
        S: * LIST (\\HasChildren) "/" foo
        S: * LIST (\\HasNoChildren) "/" foo/bar
        S: A682 OK {*}
        C: A683 DELETE blurdybloop
        S: A683 OK {*}
        C: A684 DELETE foo
        S: A684 NO [HASCHILDREN] {*}
        C: A685 DELETE foo/bar
        S: A685 OK {*}
        C: A686 LIST "" *
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\HasNoChildren) "/" foo
        S: A686 OK {*}
        C: A687 DELETE foo
        S: A687 OK {*}
        # A deleted mailbox stays subscribed, and LIST says it does not exist.
        C: A688 LIST (SUBSCRIBED) "" *
        S: * LIST (\\Subscribed \\HasNoChildren) "/" INBOX
        S: * LIST (\\Subscribed \\NonExistent) "/" foo/bar
        S: A688 OK {*}
    """)


def test_6_3_6_rename(conv):
    _only_inbox(conv)
    conv.command("CREATE INBOX/bar")
    conv.add_message()
    conv.script("""
        C: Z432 LIST "" *
        S: * LIST (\\HasChildren) "/" INBOX
        S: * LIST (\\HasNoChildren) "/" INBOX/bar
        S: Z432 OK {*}
        C: Z433 RENAME INBOX old-mail
        S: Z433 OK {*}
        C: Z434 LIST "" *
        S: * LIST (\\HasChildren) "/" INBOX
        S: * LIST (\\HasNoChildren) "/" INBOX/bar
        S: * LIST (\\HasNoChildren) "/" old-mail
        S: Z434 OK {*}
        C: Z435 RENAME old-mail INBOX
        S: Z435 NO [ALREADYEXISTS] {*}
    """)
    assert conv.folder("old-mail").messages == 1 and conv.folder("INBOX").messages == 0


def test_6_3_9_list_basic(conv):
    conv.command("CREATE ~/Mail/foo/bar")
    conv.command("CREATE ~/Mail/meetings")
    conv.script("""
        C: A101 LIST "" ""
        S: * LIST (\\Noselect) "/" ""
        S: A101 OK {*}
        C: A202 LIST ~/Mail/ %
        S: * LIST (\\HasChildren) "/" ~/Mail/foo
        S: * LIST (\\HasNoChildren) "/" ~/Mail/meetings
        S: A202 OK {*}
    """)


def _fruit_and_vegetables(conv: Conversation) -> None:
    _only_inbox(conv)
    for name in ("Fruit/Apple", "Fruit/Banana", "Fruit/Peach", "Tofu", "Vegetable/Broccoli", "Vegetable/Corn"):
        conv.command(f"CREATE {name}")
    for name in ("Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli"):
        conv.command(f"SUBSCRIBE {name}")
    conv.command("DELETE Fruit/Peach")  # deleted while still subscribed


def test_6_3_9_list_extended_examples(conv):
    _fruit_and_vegetables(conv)
    conv.script("""
        # RFC: (\\Marked \\NoInferiors) "inbox"; names the RFC quotes are atoms here.
        C: A01 LIST "" "*"
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\HasChildren) "/" Fruit
        S: * LIST (\\HasNoChildren) "/" Fruit/Apple
        S: * LIST (\\HasNoChildren) "/" Fruit/Banana
        S: * LIST (\\HasNoChildren) "/" Tofu
        S: * LIST (\\HasChildren) "/" Vegetable
        S: * LIST (\\HasNoChildren) "/" Vegetable/Broccoli
        S: * LIST (\\HasNoChildren) "/" Vegetable/Corn
        S: A01 OK {*}
        C: A02 LIST (SUBSCRIBED) "" "*"
        S: * LIST (\\Subscribed \\HasNoChildren) "/" INBOX
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Fruit/Banana
        S: * LIST (\\Subscribed \\NonExistent) "/" Fruit/Peach
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Vegetable/Broccoli
        S: A02 OK {*}
        C: A03 LIST () "" "%" RETURN (CHILDREN)
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\HasChildren) "/" Fruit
        S: * LIST (\\HasNoChildren) "/" Tofu
        S: * LIST (\\HasChildren) "/" Vegetable
        S: A03 OK {*}
        C: A04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)
        S: * LIST (\\Subscribed \\HasNoChildren) "/" INBOX
        S: * LIST (\\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable ("CHILDINFO" ("SUBSCRIBED"))
        S: A04 OK {*}
        C: A05 LIST "" "%" RETURN (SUBSCRIBED)
        S: * LIST (\\Subscribed \\HasNoChildren) "/" INBOX
        S: * LIST (\\HasChildren) "/" Fruit
        S: * LIST (\\HasNoChildren) "/" Tofu
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable
        S: A05 OK {*}
        C: A06 LIST (RECURSIVEMATCH) "" "%"
        S: A06 BAD {*}
    """)


def test_6_3_9_list_childinfo_cases(conv):
    # RFC 9051 6.3.9.8 example 7 (from RFC 5258): Foo/Bar, Foo/Baz, Moo.
    _only_inbox(conv)
    conv.command("UNSUBSCRIBE INBOX")
    conv.command("CREATE Foo/Bar")
    conv.command("CREATE Foo/Baz")
    conv.command("CREATE Moo")
    conv.command("SUBSCRIBE Foo/Baz")
    conv.script("""
        C: CA3 LIST "" "%" RETURN (CHILDREN)
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\HasChildren) "/" Foo
        S: * LIST (\\HasNoChildren) "/" Moo
        S: CA3 OK {*}
        C: C02 LIST (SUBSCRIBED) "" "*"
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Foo/Baz
        S: C02 OK {*}
        C: C03 LIST (SUBSCRIBED) "" "%"
        S: C03 OK {*}
        # A) "Foo" is not subscribed but has a subscribed child.
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: * LIST (\\HasChildren) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))
        S: C04 OK {*}
    """)
    # A1) "Foo" subscribed as well.
    conv.command("SUBSCRIBE Foo")
    conv.script("""
        C: C05 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: * LIST (\\Subscribed \\HasChildren) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))
        S: C05 OK {*}
    """)
    # A2) "Foo" does not exist and is not subscribed.
    conv.command("UNSUBSCRIBE Foo")
    for name in ("Foo/Baz", "Foo/Bar", "Foo"):
        conv.command(f"DELETE {name}")
    conv.script("""
        C: C06 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: * LIST (\\NonExistent) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))
        S: C06 OK {*}
    """)
    # B) nothing subscribed: no responses. C) only "Foo" and "Moo" subscribed, no children.
    conv.command("UNSUBSCRIBE Foo/Baz")
    conv.command("CREATE Foo/Bar")
    conv.script("""
        C: C07 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: C07 OK {*}
        C: C08 SUBSCRIBE Foo
        S: C08 OK {*}
        C: C09 SUBSCRIBE Moo
        S: C09 OK {*}
        C: C10 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)
        S: * LIST (\\Subscribed \\HasChildren) "/" Foo
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Moo
        S: C10 OK {*}
    """)


def test_6_3_9_list_multiple_patterns_and_special_use(conv):
    for name in ("Sent/March2004", "Sent/December2003", "Sent/August2004"):
        conv.command(f"CREATE {name}")
    conv.script("""
        C: BBB LIST "" ("INBOX" "Drafts" "Sent/%")
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\Drafts \\HasNoChildren) "/" Drafts
        S: * LIST (\\HasNoChildren) "/" Sent/August2004
        S: * LIST (\\HasNoChildren) "/" Sent/December2003
        S: * LIST (\\HasNoChildren) "/" Sent/March2004
        S: BBB OK {*}
        # RFC 6154: the special-use attributes, and the SPECIAL-USE selection option.
        C: t1 LIST "" "%" RETURN (SPECIAL-USE)
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\Archive \\HasNoChildren) "/" Archive
        S: * LIST (\\Drafts \\HasNoChildren) "/" Drafts
        S: * LIST (\\Junk \\HasNoChildren) "/" Junk
        S: * LIST (\\Sent \\HasChildren) "/" Sent
        S: * LIST (\\Trash \\HasNoChildren) "/" Trash
        S: t1 OK {*}
        C: t3 LIST (SPECIAL-USE) "" "*"
        S: * LIST (\\Archive \\HasNoChildren) "/" Archive
        S: * LIST (\\Drafts \\HasNoChildren) "/" Drafts
        S: * LIST (\\Junk \\HasNoChildren) "/" Junk
        S: * LIST (\\Sent \\HasChildren) "/" Sent
        S: * LIST (\\Trash \\HasNoChildren) "/" Trash
        S: t3 OK {*}
        C: t4 CREATE MySpecial (USE (\\Drafts \\Sent))
        S: t4 NO [USEATTR] {*}
        C: t5 CREATE MyDrafts (USE (\\Drafts))
        S: t5 OK {*}
        C: t6 LIST "" MyDrafts
        S: * LIST (\\Drafts \\HasNoChildren) "/" MyDrafts
        S: t6 OK {*}
    """)


def test_6_3_9_list_status(conv):
    _only_inbox(conv)
    conv.command("CREATE foo")
    for number in range(1, 18):
        _append(conv, "INBOX", number, flags=(SEEN,) if number == 1 else ())
    for number in range(1, 31):
        _append(conv, "foo", number, flags=(SEEN,) if number == 1 else ())
    conv.script("""
        C: A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * STATUS INBOX (MESSAGES 17 UNSEEN 16)
        S: * LIST (\\HasNoChildren) "/" foo
        S: * STATUS foo (MESSAGES 30 UNSEEN 29)
        S: A01 OK {*}
    """)


def test_6_3_9_utf8_mailbox_names(conv):
    conv.script("""
        C: a1 CREATE "Grüße/отпуск"
        S: a1 OK {*}
        C: a2 LIST "" "Gr*"
        S: * LIST (\\HasChildren) "/" "Grüße"
        S: * LIST (\\HasNoChildren) "/" "Grüße/отпуск"
        S: a2 OK {*}
        C: a3 SELECT "Grüße/отпуск"
        S: * FLAGS {*}
        S: * OK [PERMANENTFLAGS {*}] {*}
        S: * 0 EXISTS
        S: * OK [UIDVALIDITY {n}] {*}
        S: * OK [UIDNEXT 1] {*}
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: * LIST (\\HasNoChildren) "/" "Grüße/отпуск"
        S: a3 OK [READ-WRITE] {*}
        C: a4 STATUS "Grüße" (MESSAGES)
        S: * STATUS "Grüße" (MESSAGES 0)
        S: a4 OK {*}
        # Modified UTF-7 is not interpreted once IMAP4rev2 is enabled.
        C: a5 STATUS "Gr&APwA3w-e" (MESSAGES)
        S: a5 NO [NONEXISTENT] {*}
    """)
    assert conv.store.get_folder("alice", "Grüße/отпуск") is not None


def test_6_3_10_namespace(conv):
    conv.script("""
        C: A001 NAMESPACE
        S: * NAMESPACE (("" "/")) NIL NIL
        S: A001 OK {*}
    """)


def test_6_3_11_status(conv):
    conv.command("CREATE blurdybloop")
    for number in range(1, 232):
        _append(conv, "blurdybloop", number, flags=(DELETED,) if number <= 3 else (SEEN,),
                uid=44291 if number == 231 else None)
    size = conv.folder("blurdybloop").size
    conv.script(f"""
        C: A042 STATUS blurdybloop (UIDNEXT MESSAGES)
        S: * STATUS blurdybloop (UIDNEXT 44292 MESSAGES 231)
        S: A042 OK {{*}}
        C: A043 STATUS blurdybloop (MESSAGES UNSEEN DELETED SIZE UIDVALIDITY)
        S: * STATUS blurdybloop (MESSAGES 231 UNSEEN 3 DELETED 3 SIZE {size} UIDVALIDITY {{n}})
        S: A043 OK {{*}}
    """)


APPEND_9051 = (
    "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
    "From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    "Subject: afternoon meeting\r\n"
    "To: mooch@owatagu.siam.edu.example\r\n"
    "Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    "\r\n"
    "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)


def test_6_3_12_append(conv):
    conv.command("CREATE saved-messages")
    assert len(APPEND_9051) == 326
    conv.script("""
        C: A003 APPEND saved-messages (\\Seen) {326}
        S: + {*}
        C: Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
        C: From: Fred Foobar <foobar@Blurdybloop.example>
        C: Subject: afternoon meeting
        C: To: mooch@owatagu.siam.edu.example
        C: Message-Id: <B27397-0100000@Blurdybloop.example>
        C: MIME-Version: 1.0
        C: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
        C:
        C: Hello Joe, do you think we can meet at 3:30 tomorrow?
        C:
        S: A003 OK [APPENDUID {n:uv} 1] {*}
        C: A004 APPEND saved-messages (\\Seen) {297+}
        C: Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
        C: From: Fred Foobar <foobar@example.com>
        C: Subject: afternoon meeting
        C: To: mooch@example.com
        C: Message-Id: <B27397-0100000@example.com>
        C: MIME-Version: 1.0
        C: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
        C:
        C: Hello Joe, do you think we can meet at 3:30 tomorrow?
        C:
        S: A004 OK [APPENDUID {=uv} 2] {*}
        # MULTIAPPEND (RFC 3502): several messages, all or nothing, one APPENDUID.
        C: A005 APPEND saved-messages {3+}
        C: a
        C:  (\\Flagged) {3+}
        C: b
        C:
        S: A005 OK [APPENDUID {=uv} 3:4] {*}
        C: A006 APPEND nosuch {3+}
        C: a
        C:
        S: A006 NO [TRYCREATE] {*}
    """)
    folder = conv.folder("saved-messages")
    meta = conv.store.get_messages("alice", folder.id, [1])[0]
    assert conv.store.read_body(meta.blob, 0, meta.size) == APPEND_9051.encode()
    assert folder.messages == 4


def test_6_3_13_idle(conv):
    for _ in range(3):
        conv.add_message(flags=[SEEN])
    other = conv.second_session()
    other.login()
    other.select()
    conv.script("""
        C: A001 SELECT INBOX
        S: * FLAGS {*}
        S: * OK [PERMANENTFLAGS {*}] {*}
        S: * 3 EXISTS
        S: * OK [UIDVALIDITY {n}] {*}
        S: * OK [UIDNEXT 4] {*}
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: A001 OK [READ-WRITE] {*}
        C: A002 IDLE
        S: + {*}
    """)
    conv.add_message()  # new mail arrives
    conv.script("""
        W:
        S: * 4 EXISTS
        C: DONE
        S: A002 OK {*}
    """)
    other.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")  # another client expunges message 2
    conv.script("""
        C: A003 FETCH 4 ALL
        S: * 4 FETCH (FLAGS () INTERNALDATE {*})
        S: A003 OK {*}
        # RFC: the updates before "+ idling"; any time after the command started is fine.
        C: A004 IDLE
        S: + {*}
        S: * 2 EXPUNGE
    """)
    other.command("NOOP")
    other.command("STORE 3 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")  # another client expunges message 3
    conv.script("""
        W:
        S: * 3 EXPUNGE
    """)
    conv.add_message()
    conv.script("""
        W:
        S: * 3 EXISTS
        C: DONE
        S: A004 OK {*}
    """)


# -- 6.4 selected state -------------------------------------------------------------------------


def test_6_4_1_close_6_4_2_unselect(conv):
    conv.add_message(flags=[DELETED])
    conv.add_message()
    conv.select()
    conv.script("""
        C: A342 UNSELECT
        S: A342 OK {*}
        C: A343 SELECT INBOX
        S: * FLAGS {*}
        S: * OK [PERMANENTFLAGS {*}] {*}
        S: * 2 EXISTS
        S: * OK [UIDVALIDITY {n}] {*}
        S: * OK [UIDNEXT 3] {*}
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: A343 OK [READ-WRITE] {*}
        C: A341 CLOSE
        S: A341 OK {*}
    """)
    assert conv.folder("INBOX").messages == 1


def test_6_4_3_expunge_and_6_4_9_uid_expunge(conv):
    for number in range(1, 12):
        _append(conv, "INBOX", number, flags=(DELETED,) if number in (3, 4, 7, 11) else ())
    conv.select()
    conv.script("""
        C: A202 EXPUNGE
        S: * 11 EXPUNGE
        S: * 7 EXPUNGE
        S: * 4 EXPUNGE
        S: * 3 EXPUNGE
        S: A202 OK {*}
    """)
    conv.command("UNSELECT")
    conv.command("CREATE uidx")
    for number in range(1, 7):
        _append(conv, "uidx", number, flags=(DELETED,) if number >= 3 else (), uid=2997 + number)
    conv.select("uidx")
    conv.script("""
        # Messages 3-6 have UIDs 3000-3003 and are \\Deleted; only 3000:3002 go.
        C: A003 UID EXPUNGE 3000:3002
        S: * 5 EXPUNGE
        S: * 4 EXPUNGE
        S: * 3 EXPUNGE
        S: A003 OK {*}
        C: A004 UID FETCH 1:* FLAGS
        S: * 1 FETCH (UID 2998 FLAGS ())
        S: * 2 FETCH (UID 2999 FLAGS ())
        S: * 3 FETCH (UID 3003 FLAGS (\\Deleted))
        S: A004 OK {*}
    """)


def _search_mailbox(conv: Conversation) -> None:
    """Messages 2, 10 and 11 are flagged, since 1-Feb-1994 and not from Smith; 43 holds "отпуск"."""
    before, after = _epoch("15-Jan-1994 10:00:00"), _epoch("01-Mar-1994 10:00:00")
    for number in range(1, 51):
        flagged = number in (2, 5, 7, 10, 11)
        sender = "John Smith <smith@example.org>" if number == 5 else "Fred Foobar <foobar@example.org>"
        body = "в отпуске" if number == 43 else ""
        _append(conv, "INBOX", number, flags=(FLAGGED,) if flagged else (),
                data=_message(number, sender, body), internaldate=before if number == 7 else after)


def test_6_4_4_search(conv):
    _search_mailbox(conv)
    conv.select()
    conv.script("""
        C: A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * ESEARCH (TAG "A282") MIN 2 COUNT 3
        S: A282 OK {*}
        C: A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * ESEARCH (TAG "A283") ALL 2,10:11
        S: A283 OK {*}
        C: A284 SEARCH TEXT "string not in mailbox"
        S: * ESEARCH (TAG "A284")
        S: A284 OK {*}
        C: A285 SEARCH CHARSET UTF-8 TEXT {12}
        S: + {*}
        C: отпуск
        S: * ESEARCH (TAG "A285") ALL 43
        S: A285 OK {*}
        C: A286 SEARCH TEXT "отпуск"
        S: * ESEARCH (TAG "A286") ALL 43
        S: A286 OK {*}
        C: A287 SEARCH CHARSET WHATEVER TEXT "xyz"
        S: A287 NO [BADCHARSET {*}] {*}
        # Without RETURN, IMAP4rev2's SEARCH answers ESEARCH with ALL; UID SEARCH adds UID.
        C: A288 SEARCH FLAGGED
        S: * ESEARCH (TAG "A288") ALL 2,5,7,10:11
        S: A288 OK {*}
        C: A289 UID SEARCH FLAGGED SINCE 1-Feb-1994
        S: * ESEARCH (TAG "A289") UID ALL 2,5,10:11
        S: A289 OK {*}
        C: A290 UID SEARCH RETURN (COUNT MAX) NOT ALL
        S: * ESEARCH (TAG "A290") UID COUNT 0
        S: A290 OK {*}
    """)


def test_6_4_4_searchres(conv):
    # RFC 9051 6.4.4.4 (RFC 5182); the RFC's result is 2, 84, 882 - here 2, 10, 11.
    _search_mailbox(conv)
    conv.select()
    conv.script("""
        C: A282 SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
        S: A282 OK {*}
        C: A283 FETCH $ (UID FLAGS)
        S: * 2 FETCH (UID 2 FLAGS (\\Flagged))
        S: * 10 FETCH (UID 10 FLAGS (\\Flagged))
        S: * 11 FETCH (UID 11 FLAGS (\\Flagged))
        S: A283 OK {*}
        C: A284 STORE $ +FLAGS.SILENT (\\Answered)
        S: A284 OK {*}
        C: A285 SEARCH RETURN (SAVE MIN) ANSWERED
        S: * ESEARCH (TAG "A285") MIN 2
        S: A285 OK {*}
        C: A286 UID FETCH $ UID
        S: * 2 FETCH (UID 2)
        S: A286 OK {*}
        C: A287 SEARCH NOT $
        S: * ESEARCH (TAG "A287") ALL 1,3:50
        S: A287 OK {*}
    """)


def test_6_4_5_fetch(conv):
    for number in range(1, 5):
        conv.add_message(data=f"Date: {number} Feb 1994 10:00:00 +0000\r\nFrom: u{number}@example.org\r\n"
                              f"\r\nbody {number}\r\n".encode(), flags=[SEEN] if number == 3 else [])
    conv.select()
    conv.script("""
        C: A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])
        S: * 2 FETCH (FLAGS (\\Seen) BODY[HEADER.FIELDS (DATE FROM)] {57}
        S: Date: 2 Feb 1994 10:00:00 +0000
        S: From: u2@example.org
        S:
        S: )
        S: * 3 FETCH (FLAGS (\\Seen) BODY[HEADER.FIELDS (DATE FROM)] {57}
        S: Date: 3 Feb 1994 10:00:00 +0000
        S: From: u3@example.org
        S:
        S: )
        S: * 4 FETCH (FLAGS (\\Seen) BODY[HEADER.FIELDS (DATE FROM)] {57}
        S: Date: 4 Feb 1994 10:00:00 +0000
        S: From: u4@example.org
        S:
        S: )
        S: A654 OK {*}
        # No \\Recent in IMAP4rev2.
        C: A655 FETCH 1 (FLAGS BINARY.PEEK[1] BINARY.SIZE[1])
        S: * 1 FETCH (FLAGS () BINARY[1] {8}
        S: body 1
        S:  BINARY.SIZE[1] 8)
        S: A655 OK {*}
    """)


def test_6_4_6_store(conv):
    for flags in ([], [SEEN], [], [FLAGGED, SEEN]):
        conv.add_message(flags=flags)
    conv.select()
    conv.script("""
        C: A003 STORE 2:4 +FLAGS (\\Deleted)
        S: * 2 FETCH (UID 2 FLAGS (\\Deleted \\Seen))
        S: * 3 FETCH (UID 3 FLAGS (\\Deleted))
        S: * 4 FETCH (UID 4 FLAGS (\\Deleted \\Flagged \\Seen))
        S: A003 OK {*}
        C: A004 STORE 2:4 -FLAGS.SILENT (\\Deleted)
        S: A004 OK {*}
    """)


def test_6_4_7_copy(conv):
    conv.command("CREATE MEETING")
    for number, uid in enumerate((300, 304, 319, 320), start=1):
        _append(conv, "INBOX", number, uid=uid)
    _append(conv, "MEETING", 1, uid=3955)
    conv.select()
    conv.script("""
        C: A003 COPY 2:4 MEETING
        S: A003 OK [COPYUID {n:uv} 304,319:320 3956:3958] {*}
    """)
    assert int(conv.captured["uv"]) == conv.folder("MEETING").uidvalidity


def test_6_4_8_move(conv):
    conv.command("CREATE foo")
    for number in range(1, 22):
        _append(conv, "INBOX", number)
    for uid in range(42, 73):
        _append(conv, "INBOX", uid, uid=uid)
    _append(conv, "foo", 1, uid=1201)
    conv.select()
    expunges = "\n".join(f"        S: * {number} EXPUNGE" for number in range(49, 21, -1))
    conv.script(f"""
        C: a UID MOVE 42:69 foo
        S: * OK [COPYUID {{n}} 42:69 1202:1229] {{*}}
{expunges}
        S: a OK {{*}}
        C: b FETCH 22:* UID
        S: * 22 FETCH (UID 70)
        S: * 23 FETCH (UID 71)
        S: * 24 FETCH (UID 72)
        S: b OK {{*}}
    """)
    assert conv.folder("foo").messages == 29


def test_6_4_9_uid_fetch(conv):
    for number in range(1, 26):
        _append(conv, "INBOX", number, uid={23: 4827313, 24: 4827943, 25: 4828442}.get(number))
    conv.select()
    conv.script("""
        C: A999 UID FETCH 4827313:4828442 FLAGS
        S: * 23 FETCH (UID 4827313 FLAGS (\\Seen))
        S: * 24 FETCH (UID 4827943 FLAGS (\\Seen))
        S: * 25 FETCH (UID 4828442 FLAGS (\\Seen))
        S: A999 OK {*}
        C: A1000 UID FETCH 4828443:* UID
        S: * 25 FETCH (UID 4828442)
        S: A1000 OK {*}
    """)


# -- 7 responses --------------------------------------------------------------------------------


def test_7_1_response_codes(conv):
    conv.command("CREATE this")
    conv.command("CREATE that")
    conv.command("CREATE Foo/Bar")
    conv.add_message(data=b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-unknown\r\n\r\nx\r\n")
    conv.script("""
        C: o356 RENAME this that
        S: o356 NO [ALREADYEXISTS] {*}
        C: l CREATE "///////"
        S: l NO [CANNOT] {*}
        C: D1 DELETE Foo
        S: D1 NO [HASCHILDREN] {*}
        C: A373 SELECT nosuch
        S: A373 NO [NONEXISTENT] {*}
        C: A374 COPY 1 INBOX
        S: A374 BAD {*}
        C: A375 APPEND nosuch {1+}
        C: x
        S: A375 NO [TRYCREATE] {*}
        C: A376 EXAMINE INBOX
        S: * FLAGS {*}
        S: * OK [PERMANENTFLAGS ()] {*}
        S: * 1 EXISTS
        S: * OK [UIDVALIDITY {n}] {*}
        S: * OK [UIDNEXT 2] {*}
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: A376 OK [READ-ONLY] {*}
        C: A377 FETCH 1 BINARY[1]
        S: A377 NO [UNKNOWN-CTE] {*}
    """)


def test_7_1_expungeissued(conv):
    for _ in range(3):
        conv.add_message()
    conv.select()
    other = conv.second_session()
    other.login()
    other.select()
    other.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    conv.script("""
        C: A1 FETCH 1:3 UID
        S: * 1 FETCH (UID 1)
        S: * 3 FETCH (UID 3)
        S: A1 NO [EXPUNGEISSUED] {*}
        C: A2 NOOP
        S: * 2 EXPUNGE
        S: A2 OK {*}
    """)


def test_7_1_authenticationfailed_and_privacyrequired(tmp_path):
    with Conversation(tmp_path, users={"fred": "secret"}) as conv:
        conv.script("""
            C: b LOGIN "fred" "foo"
            S: b NO [AUTHENTICATIONFAILED] {*}
        """)
    with Conversation(tmp_path / "plain", tls=False, starttls=True, users={"fred": "secret"}) as conv:
        conv.script("""
            C: c LOGIN "fred" "secret"
            S: c NO [PRIVACYREQUIRED] {*}
        """)


def test_7_3_4_esearch_response(conv):
    flagged = set(range(4, 19)) | {21, 28}
    for uid in range(1, 31):
        _append(conv, "INBOX", uid, flags=(FLAGGED,) if uid in flagged else ())
    conv.select()
    conv.script("""
        C: a567 UID SEARCH RETURN (COUNT ALL) FLAGGED
        S: * ESEARCH (TAG "a567") UID COUNT 17 ALL 4:18,21,28
        S: a567 OK {*}
    """)


def test_7_5_2_fetch_response(conv):
    for number in range(1, 23):
        _append(conv, "INBOX", number, flags=())
    head = b"From: a@example.org\r\nSubject: big\r\n\r\n"
    _append(conv, "INBOX", 23, data=head + b"x" * (44827 - len(head)))
    conv.select()
    conv.script("""
        C: a FETCH 23 (FLAGS RFC822.SIZE)
        S: * 23 FETCH (FLAGS (\\Seen) RFC822.SIZE 44827)
        S: a OK {*}
    """)


def test_7_6_command_continuation_request(tmp_path):
    with Conversation(tmp_path, users={"fred": "fat man"}) as conv:
        conv.script("""
            C: A001 LOGIN {4}
            S: + {*}
            C: FRED {7}
            S: + {*}
            C: fat man
            S: A001 OK [CAPABILITY {*}] {*}
            C: A002 ENABLE IMAP4rev2
            S: * ENABLED IMAP4rev2
            S: A002 OK {*}
            # As in the RFC: the server refuses BLURDYBLOOP before the literal is sent.
            C: A044 BLURDYBLOOP {3}
            S: A044 BAD {*}
        """)


def test_literals_before_authentication_are_small(tmp_path):
    # Before LOGIN a client needs literals only for the user name and password: a literal the
    # size of a message is refused up front instead of being buffered.
    with Conversation(tmp_path) as conv:
        conv.script("""
            C: a1 APPEND INBOX {60000000}
            S: a1 BAD {*}
            C: a2 LOGIN {5+}
            C: alice {6}
            S: + {*}
            C: secret
            S: a2 OK [CAPABILITY {*}] {*}
            C: a3 APPEND INBOX {60000}
            S: + {*}
        """)
        conv.send(b"x" * 60000 + b"\r\n")
        assert conv.folder("INBOX").messages == 1


def test_8_sample_imap4rev2_connection(tmp_path):
    header = (
        "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
        "From: Terry Gray <gray@cac.washington.example>\r\n"
        "Subject: IMAP4rev2 WG mtg summary and minutes\r\n"
        "To: imap@cac.washington.example\r\n"
        "cc: minutes@CNRI.Reston.VA.example, John Klensin <KLENSIN@MIT.EDU.example>\r\n"
        "Message-Id: <B27397-0100000@cac.washington.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        "\r\n"
    )
    body = "".join(("x" * (31 if index < 84 else 30)) + "\r\n" for index in range(92))
    # The RFC keeps RFC 3501's {342} and 4286, but this header is 367 octets long.
    assert len(header) == 367 and len(body) == 3028
    with Conversation(tmp_path, users={"mrc": "secret"}) as conv:
        inbox = conv.folder("INBOX", "mrc")
        for number in range(1, 19):
            data = (header + body).encode() if number == 12 else _message(number)
            conv.store.append("mrc", inbox.id, data, flags=(SEEN,),
                              internaldate=_epoch("17-Jul-1996 09:44:25") if number == 12 else None,
                              tzoffset=-420 if number == 12 else 0)
        conv.script("""
            S: * OK [CAPABILITY IMAP4rev1 IMAP4rev2 {*}] {*}
            C: a001 login mrc secret
            S: a001 OK [CAPABILITY {*}] {*}
            C: a001b enable IMAP4rev2
            S: * ENABLED IMAP4rev2
            S: a001b OK {*}
            C: a002 select inbox
            S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
            S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] {*}
            S: * 18 EXISTS
            S: * OK [UIDVALIDITY {n}] {*}
            S: * OK [UIDNEXT 19] {*}
            S: * OK [HIGHESTMODSEQ {n}] {*}
            S: * OK [MAILBOXID ({*})] Mailbox ID
            S: * LIST (\\HasNoChildren) "/" INBOX
            S: a002 OK [READ-WRITE] {*}
            C: a003 fetch 12 full
            S: * 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 3395 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev2 WG mtg summary and minutes" (("Terry Gray" NIL "gray" "cac.washington.example")) (("Terry Gray" NIL "gray" "cac.washington.example")) (("Terry Gray" NIL "gray" "cac.washington.example")) ((NIL NIL "imap" "cac.washington.example")) ((NIL NIL "minutes" "CNRI.Reston.VA.example")("John Klensin" NIL "KLENSIN" "MIT.EDU.example")) NIL NIL "<B27397-0100000@cac.washington.example>") BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))
            S: a003 OK {*}
            C: a004 fetch 12 body[header]
            S: * 12 FETCH (BODY[HEADER] {367}
            S: Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
            S: From: Terry Gray <gray@cac.washington.example>
            S: Subject: IMAP4rev2 WG mtg summary and minutes
            S: To: imap@cac.washington.example
            S: cc: minutes@CNRI.Reston.VA.example, John Klensin <KLENSIN@MIT.EDU.example>
            S: Message-Id: <B27397-0100000@cac.washington.example>
            S: MIME-Version: 1.0
            S: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
            S:
            S: )
            S: a004 OK {*}
            C: a005 store 12 +flags \\deleted
            S: * 12 FETCH (UID 12 FLAGS (\\Deleted \\Seen))
            S: a005 OK {*}
            C: a006 logout
            S: * BYE {*}
            S: a006 OK {*}
        """)
        assert conv.closed
