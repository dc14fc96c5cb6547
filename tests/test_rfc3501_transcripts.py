"""The examples of RFC 3501 (IMAP4rev1) sections 6, 7 and 8, replayed through the conversation
harness, plus the rules around them that real clients depend on.

Each test reproduces one example with the mailbox contents the example implies (message counts,
first unseen message, recent messages, UIDs), so the server has to produce the same numbers. The
transcripts are adapted only where the RFC leaves the server a choice or the example's values
cannot be reproduced, and each adaptation is commented:

* human-readable response texts are ``{*}`` (they are ours, from data/imap_code.txt);
* UIDVALIDITY is whatever the store chose (``{n}``);
* untagged responses come in our order where the RFC does not fix one (SELECT, EXPUNGE, FETCH
  items: UID first); flags come sorted, system flags before keywords, ``\\Recent`` last;
* PERMANENTFLAGS lists every flag (the examples show a server with a limited set);
* SELECT/EXAMINE also report ``[HIGHESTMODSEQ]``, after UIDNEXT: RFC 7162 3.1.2.1 requires it
  on every SELECT/EXAMINE from a server that keeps mod-sequences, as midb does for every mailbox;
* UIDPLUS adds APPENDUID / COPYUID codes to the tagged OKs;
* midb has no ``\\Noselect`` placeholders: a parent is a real mailbox, so DELETE of a parent
  is refused with ``NO [HASCHILDREN]`` (allowed by RFC 3501 6.3.4 / RFC 9051 6.3.4);
* "/" is the only hierarchy delimiter, so the "."-delimited examples use "/".
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable

import pytest
from conversation import Conversation

from gximap.imap.codes import ResponseCodes
from gximap.session.base import State

SEEN = "\\Seen"
FLAGGED = "\\Flagged"


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path) as conversation:
        yield conversation


def _epoch(text: str) -> int:
    """'17-Jul-1996 09:44:25' (UTC) -> seconds since the epoch."""
    return calendar.timegm(time.strptime(text, "%d-%b-%Y %H:%M:%S"))


def _message(number: int, sender: str = "Fred Foobar <foobar@Blurdybloop.COM>", body: str = "") -> bytes:
    return (f"From: {sender}\r\nSubject: message {number}\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\n"
            f"{body or f'text of message {number}'}\r\n").encode()


def _fill(conv: Conversation, mailbox: str, count: int, *, unseen: Iterable[int] = (),
          uids: dict[int, int] | None = None, user: str = "alice") -> None:
    """Append ``count`` messages, all \\Seen except the numbers in ``unseen``; ``uids`` forces
    the UID of some message numbers."""
    unseen_set = set(unseen)
    folder = conv.folder(mailbox, user)
    for number in range(1, count + 1):
        conv.store.append(user, folder.id, _message(number), flags=() if number in unseen_set else (SEEN,),
                          uid=(uids or {}).get(number))


def _claim_recent(conv: Conversation, mailbox: str, user: str = "alice") -> None:
    """As if another session had selected the mailbox: what is there now is no longer recent."""
    conv.store.claim_recent_range(user, conv.folder(mailbox, user).id)


# -- 6.1 any state ------------------------------------------------------------------------------


def test_6_1_1_capability_6_2_1_starttls(tmp_path):
    # The example's server: plaintext, STARTTLS offered, LOGIN disabled until TLS is up.
    with Conversation(tmp_path, tls=False, starttls=True, users={"joe": "password"}) as conv:
        conv.script("""
            C: abcd CAPABILITY
            S: * CAPABILITY IMAP4rev1 {*:before}
            S: abcd OK {*}
            C: a002 STARTTLS
            S: a002 OK {*}
            C: a003 CAPABILITY
            S: * CAPABILITY IMAP4rev1 {*:after}
            S: a003 OK {*}
            C: a004 LOGIN joe password
            S: a004 OK [CAPABILITY IMAP4rev1 {*}] {*}
        """)
        before, after = conv.captured["before"].split(), conv.captured["after"].split()
        assert "STARTTLS" in before and "LOGINDISABLED" in before and "AUTH=PLAIN" not in before
        assert "STARTTLS" not in after and "LOGINDISABLED" not in after and "AUTH=PLAIN" in after


def test_6_1_2_noop_reports_pending_updates(conv):
    # After the example: message 22 expunged by someone else, a new message arrived (still 23),
    # three recent messages, message 14 flagged \Seen \Deleted elsewhere.
    conv.login()
    _fill(conv, "INBOX", 20)
    _claim_recent(conv, "INBOX")
    recent_uids = [conv.add_message(flags=[SEEN]) for _ in range(3)]  # messages 21-23: recent
    conv.select()
    other = conv.second_session()
    other.login()
    other.select()
    other.command(f"UID STORE {recent_uids[1]} +FLAGS.SILENT (\\Deleted)")
    other.command(f"UID EXPUNGE {recent_uids[1]}")
    other.command("STORE 14 +FLAGS.SILENT (\\Seen \\Deleted)")
    conv.add_message()
    conv.script("""
        C: a002 NOOP
        # RFC: * 14 FETCH (FLAGS (\\Seen \\Deleted)) - the same flags, sorted
        S: * 22 EXPUNGE
        S: * 23 EXISTS
        S: * 3 RECENT
        S: * 14 FETCH (FLAGS (\\Deleted \\Seen))
        S: a002 OK {*}
        C: a047 NOOP
        S: a047 OK {*}
    """)


def test_6_1_3_logout(conv):
    conv.script("""
        C: A023 LOGOUT
        S: * BYE {*}
        S: A023 OK {*}
    """)
    assert conv.closed


# -- 6.2 not authenticated ----------------------------------------------------------------------


def test_6_2_2_authenticate_plain_with_continuation_and_cancel(conv):
    # The RFC shows GSSAPI; PLAIN follows the same exchange: an empty challenge "+ ", one
    # client response, the tagged result.
    conv.script("""
        C: A001 AUTHENTICATE PLAIN
        S: +{sp}
        C: *
        S: A001 BAD {*}
        C: A002 AUTHENTICATE PLAIN
        S: +{sp}
        C: AGFsaWNlAHNlY3JldA==
        S: A002 OK [CAPABILITY IMAP4rev1 {*}] {*}
    """)
    assert conv.session.state is State.AUTHENTICATED


def test_6_2_3_login(tmp_path):
    with Conversation(tmp_path, users={"smith": "SESAME"}) as conv:
        conv.script("""
            C: a000 LOGIN SMITH sesame
            S: a000 NO [AUTHENTICATIONFAILED] {*}
            C: a001 LOGIN SMITH SESAME
            S: a001 OK [CAPABILITY IMAP4rev1 {*}] {*}
        """)
        assert conv.session.user == "smith"


# -- 6.3 authenticated --------------------------------------------------------------------------


def test_6_3_1_select(conv):
    conv.login()
    # 172 messages, the 12th is the first unseen one, one is recent, UIDNEXT 4392.
    _fill(conv, "INBOX", 171, unseen=[12])
    _claim_recent(conv, "INBOX")
    conv.store.append("alice", conv.folder("INBOX").id, _message(172), uid=4391)
    conv.script("""
        C: A142 SELECT INBOX
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] {*}
        S: * 172 EXISTS
        S: * 1 RECENT
        S: * OK [UNSEEN 12] {*}
        S: * OK [UIDVALIDITY {n:uv}] {*}
        S: * OK [UIDNEXT 4392] {*}
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: A142 OK [READ-WRITE] {*}
    """)
    assert int(conv.captured["uv"]) == conv.folder("INBOX").uidvalidity


def test_6_3_2_examine(conv):
    conv.login()
    conv.command("CREATE blurdybloop")
    _fill(conv, "blurdybloop", 15, unseen=[8])
    _claim_recent(conv, "blurdybloop")
    folder = conv.folder("blurdybloop")
    conv.store.append("alice", folder.id, _message(16), uid=4390)
    conv.store.append("alice", folder.id, _message(17), uid=4391)
    conv.script("""
        C: A932 EXAMINE blurdybloop
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS ()] {*}
        S: * 17 EXISTS
        S: * 2 RECENT
        S: * OK [UNSEEN 8] {*}
        S: * OK [UIDVALIDITY {n}] {*}
        S: * OK [UIDNEXT 4392] {*}
        S: * OK [HIGHESTMODSEQ {n}] {*}
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: A932 OK [READ-ONLY] {*}
    """)
    # EXAMINE does not take \Recent away from the next session that selects the mailbox.
    other = conv.second_session()
    other.login()
    assert b"* 2 RECENT" in other.select("blurdybloop")


def test_6_3_3_create(conv):
    conv.login()
    conv.script("""
        C: A003 CREATE owatagusiam/
        S: A003 OK {*}
        C: A004 CREATE owatagusiam/blurdybloop
        S: A004 OK {*}
        C: A005 LIST "" owatagusiam*
        S: * LIST (\\HasChildren) "/" owatagusiam
        S: * LIST (\\HasNoChildren) "/" owatagusiam/blurdybloop
        S: A005 OK {*}
        C: A006 CREATE owatagusiam
        S: A006 NO [ALREADYEXISTS] {*}
        C: A007 CREATE inbox
        S: A007 NO [ALREADYEXISTS] {*}
    """)


def test_6_3_4_delete(conv):
    conv.login()
    conv.command("CREATE blurdybloop")
    conv.command("CREATE foo/bar")
    conv.script("""
        # RFC: foo is \\Noselect; here a parent is a real mailbox.
        C: A682 LIST "" *
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\Archive \\HasNoChildren) "/" Archive
        S: * LIST (\\Drafts \\HasNoChildren) "/" Drafts
        S: * LIST (\\Junk \\HasNoChildren) "/" Junk
        S: * LIST (\\Sent \\HasNoChildren) "/" Sent
        S: * LIST (\\Trash \\HasNoChildren) "/" Trash
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
        C: A686 LIST "" foo*
        S: * LIST (\\HasNoChildren) "/" foo
        S: A686 OK {*}
        C: A687 DELETE foo
        S: A687 OK {*}
        C: A688 DELETE foo
        S: A688 NO [NONEXISTENT] {*}
        C: A689 DELETE INBOX
        S: A689 NO [CANNOT] {*}
    """)


def test_6_3_4_delete_of_the_selected_mailbox_leaves_selected_state(conv):
    conv.login()
    conv.command("CREATE blurdybloop")
    conv.select("blurdybloop")
    lines = conv.command("DELETE blurdybloop")
    assert conv.session.state is State.AUTHENTICATED
    assert not any(b"EXPUNGE" in line for line in lines)


def test_6_3_5_rename(conv):
    conv.login()
    conv.command("CREATE blurdybloop")
    conv.command("CREATE foo/bar")
    uid = conv.add_message("foo/bar")
    conv.script("""
        C: A683 RENAME blurdybloop sarasoop
        S: A683 OK {*}
        C: A684 RENAME foo zowie
        S: A684 OK {*}
        C: A685 LIST "" *
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\Archive \\HasNoChildren) "/" Archive
        S: * LIST (\\Drafts \\HasNoChildren) "/" Drafts
        S: * LIST (\\Junk \\HasNoChildren) "/" Junk
        S: * LIST (\\Sent \\HasNoChildren) "/" Sent
        S: * LIST (\\Trash \\HasNoChildren) "/" Trash
        S: * LIST (\\HasNoChildren) "/" sarasoop
        S: * LIST (\\HasChildren) "/" zowie
        S: * LIST (\\HasNoChildren) "/" zowie/bar
        S: A685 OK {*}
        C: A686 RENAME nosuch other
        S: A686 NO [NONEXISTENT] {*}
        C: A687 RENAME sarasoop zowie
        S: A687 NO [ALREADYEXISTS] {*}
    """)
    # The inferior kept its messages and its UIDs.
    assert conv.store.uids("alice", conv.folder("zowie/bar").id) == [uid]


def test_6_3_5_rename_inbox_moves_messages_and_leaves_inferiors(conv):
    conv.login()
    conv.command("CREATE INBOX/bar")
    conv.add_message()
    conv.add_message()
    conv.script("""
        C: Z433 RENAME INBOX old-mail
        S: Z433 OK {*}
        C: Z434 LIST "" *
        S: * LIST (\\HasChildren) "/" INBOX
        S: * LIST (\\Archive \\HasNoChildren) "/" Archive
        S: * LIST (\\Drafts \\HasNoChildren) "/" Drafts
        S: * LIST (\\HasNoChildren) "/" INBOX/bar
        S: * LIST (\\Junk \\HasNoChildren) "/" Junk
        S: * LIST (\\Sent \\HasNoChildren) "/" Sent
        S: * LIST (\\Trash \\HasNoChildren) "/" Trash
        S: * LIST (\\HasNoChildren) "/" old-mail
        S: Z434 OK {*}
        C: Z435 STATUS INBOX (MESSAGES)
        S: * STATUS INBOX (MESSAGES 0)
        S: Z435 OK {*}
        C: Z436 STATUS old-mail (MESSAGES)
        S: * STATUS old-mail (MESSAGES 2)
        S: Z436 OK {*}
    """)


def test_6_3_6_subscribe_6_3_7_unsubscribe(conv):
    conv.login()
    conv.command("CREATE #news.comp.mail.mime")
    conv.script("""
        C: A002 SUBSCRIBE #news.comp.mail.mime
        S: A002 OK {*}
        C: A003 LSUB "" #news*
        S: * LSUB () "/" #news.comp.mail.mime
        S: A003 OK {*}
        C: A004 UNSUBSCRIBE #news.comp.mail.mime
        S: A004 OK {*}
        C: A005 LSUB "" #news*
        S: A005 OK {*}
        # gximap checks that a subscribed mailbox exists (RFC 3501 6.3.6 allows it).
        C: A006 SUBSCRIBE #news.comp.mail.misc
        S: A006 NO [NONEXISTENT] {*}
    """)


def test_6_3_8_list(conv):
    conv.login()
    conv.command("CREATE ~/Mail/foo/bar")
    conv.command("CREATE ~/Mail/meetings")
    conv.script("""
        C: A101 LIST "" ""
        S: * LIST (\\Noselect) "/" ""
        S: A101 OK {*}
        # RFC: "#news." for a "."-delimited news namespace; one flat namespace here, whose
        # root is empty (allowed for a non-rooted reference).
        C: A102 LIST #news.comp.mail.misc ""
        S: * LIST (\\Noselect) "/" ""
        S: A102 OK {*}
        # RFC: \\Noselect ~/Mail/foo; here it exists (and has a child).
        C: A202 LIST ~/Mail/ %
        S: * LIST (\\HasChildren) "/" ~/Mail/foo
        S: * LIST (\\HasNoChildren) "/" ~/Mail/meetings
        S: A202 OK {*}
        C: A203 LIST ~/Mail/ *
        S: * LIST (\\HasChildren) "/" ~/Mail/foo
        S: * LIST (\\HasNoChildren) "/" ~/Mail/foo/bar
        S: * LIST (\\HasNoChildren) "/" ~/Mail/meetings
        S: A203 OK {*}
        C: A204 LIST "" ~/Mail/%/%
        S: * LIST (\\HasNoChildren) "/" ~/Mail/foo/bar
        S: A204 OK {*}
        # INBOX is case-insensitive, other names are not.
        C: A205 LIST "" inbox
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: A205 OK {*}
        C: A206 LIST "" sent
        S: A206 OK {*}
    """)


def test_6_3_9_lsub(conv):
    # RFC: LSUB "#news." "comp.mail.*" in a "."-delimited namespace.
    conv.login()
    for name in ("news/comp/mail/mime", "news/comp/mail/misc"):
        conv.command(f"CREATE {name}")
        conv.command(f"SUBSCRIBE {name}")
    conv.script("""
        C: A002 LSUB news/ comp/mail/*
        S: * LSUB () "/" news/comp/mail/mime
        S: * LSUB () "/" news/comp/mail/misc
        S: A002 OK {*}
        C: A003 LSUB news/ comp/%
        S: * LSUB (\\Noselect) "/" news/comp/mail
        S: A003 OK {*}
    """)


def test_6_3_10_status(conv):
    conv.login()
    conv.command("CREATE blurdybloop")
    _fill(conv, "blurdybloop", 231, uids={231: 44291})
    conv.script("""
        # The items come in the order asked for (the RFC's server reorders them).
        C: A042 STATUS blurdybloop (UIDNEXT MESSAGES)
        S: * STATUS blurdybloop (UIDNEXT 44292 MESSAGES 231)
        S: A042 OK {*}
        C: A043 STATUS blurdybloop (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)
        S: * STATUS blurdybloop (MESSAGES 231 RECENT 231 UIDNEXT 44292 UIDVALIDITY {n} UNSEEN 0)
        S: A043 OK {*}
        C: A044 STATUS nosuch (MESSAGES)
        S: A044 NO [NONEXISTENT] {*}
    """)


APPEND_3501 = (
    "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
    "From: Fred Foobar <foobar@Blurdybloop.COM>\r\n"
    "Subject: afternoon meeting\r\n"
    "To: mooch@owatagu.siam.edu\r\n"
    "Message-Id: <B27397-0100000@Blurdybloop.COM>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    "\r\n"
    "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)


def test_6_3_11_append(conv):
    conv.login()
    conv.command("CREATE saved-messages")
    assert len(APPEND_3501) == 310
    conv.script("""
        C: A003 APPEND saved-messages (\\Seen) {310}
        S: + {*}
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
        S: A003 OK [APPENDUID {n:uv} 1] {*}
        C: A004 APPEND nosuch {1+}
        C: x
        S: A004 NO [TRYCREATE] {*}
    """)
    folder = conv.folder("saved-messages")
    assert int(conv.captured["uv"]) == folder.uidvalidity
    meta = conv.store.get_messages("alice", folder.id, [1])[0]
    assert meta.flags == (SEEN,) and meta.size == 310
    assert conv.store.read_body(meta.blob, 0, 310) == APPEND_3501.encode()


# -- 6.4 selected -------------------------------------------------------------------------------


def test_6_4_1_check_6_4_2_close(conv):
    conv.login()
    conv.add_message(flags=["\\Deleted"])
    conv.add_message()
    conv.select()
    conv.script("""
        C: FXXZ CHECK
        S: FXXZ OK {*}
        # CLOSE expunges silently: no EXPUNGE response.
        C: A341 CLOSE
        S: A341 OK {*}
        C: A342 CHECK
        S: A342 BAD {*}
    """)
    assert conv.folder("INBOX").messages == 1


def test_6_4_2_unselect_versus_close(conv):
    conv.login()
    conv.add_message(flags=["\\Deleted"])
    conv.select()
    conv.command("UNSELECT")
    assert conv.folder("INBOX").messages == 1
    conv.select(examine=True)
    conv.command("CLOSE")  # read-only: CLOSE does not expunge either
    assert conv.folder("INBOX").messages == 1
    conv.select()
    conv.command("CLOSE")
    assert conv.folder("INBOX").messages == 0


def test_6_4_3_expunge(conv):
    conv.login()
    _fill(conv, "INBOX", 12)
    conv.select()
    conv.command("STORE 3,4,7,11 +FLAGS.SILENT (\\Deleted)")
    conv.script("""
        # RFC: 3, 3, 5, 8 (ascending, each number valid after the previous EXPUNGE); the
        # server may as well go from the highest down, so that no number shifts.
        C: A202 EXPUNGE
        S: * 11 EXPUNGE
        S: * 7 EXPUNGE
        S: * 4 EXPUNGE
        S: * 3 EXPUNGE
        S: A202 OK {*}
        C: A203 FETCH 1:* UID
        S: * 1 FETCH (UID 1)
        S: * 2 FETCH (UID 2)
        S: * 3 FETCH (UID 5)
        S: * 4 FETCH (UID 6)
        S: * 5 FETCH (UID 8)
        S: * 6 FETCH (UID 9)
        S: * 7 FETCH (UID 10)
        S: * 8 FETCH (UID 12)
        S: A203 OK {*}
    """)


def test_6_4_4_search(conv):
    conv.login()
    before = _epoch("15-Jan-1994 10:00:00")
    after = _epoch("01-Mar-1994 10:00:00")
    items = []
    for number in range(1, 883):
        flagged = number in (2, 10, 20, 84, 882)
        sender = "John Smith <smith@example.org>" if number == 10 else "Fred Foobar <foobar@example.org>"
        body = "k\xe4se \xe4\xf6\xfc" if number == 43 else ""
        items.append((_message(number, sender, body), (FLAGGED,) if flagged else (),
                      before if number == 20 else after, 0))
    conv.store.append_many("alice", conv.folder("INBOX").id, items)
    conv.select()
    conv.script("""
        C: A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * SEARCH 2 84 882
        S: A282 OK {*}
        C: A283 SEARCH TEXT "string not in mailbox"
        S: * SEARCH
        S: A283 OK {*}
        C: A284 SEARCH CHARSET UTF-8 TEXT {6}
        S: + {*}
        C: äöü
        S: * SEARCH 43
        S: A284 OK {*}
        C: A285 SEARCH CHARSET KOI8-X TEXT x
        S: A285 NO [BADCHARSET {*}] {*}
        C: A286 UID SEARCH 880:* FLAGGED
        S: * SEARCH 882
        S: A286 OK {*}
    """)


def test_6_4_5_fetch(conv):
    conv.login()
    for number in range(1, 5):
        conv.add_message(data=f"Date: {number} Feb 1994 10:00:00 +0000\r\nFrom: u{number}@example.org\r\n"
                              f"Subject: s{number}\r\n\r\nbody {number}\r\n".encode(),
                         flags=[SEEN] if number == 3 else [])
    _claim_recent(conv, "INBOX")
    conv.select()
    conv.script("""
        C: A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])
        # FLAGS is evaluated after BODY[] has set \\Seen, so it needs no second FLAGS item.
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
        C: A655 FETCH 1 (BODY[HEADER.FIELDS (DATE FROM)] FLAGS)
        S: * 1 FETCH (BODY[HEADER.FIELDS (DATE FROM)] {57}
        S: Date: 1 Feb 1994 10:00:00 +0000
        S: From: u1@example.org
        S:
        S:  FLAGS (\\Seen))
        S: A655 OK {*}
    """)


def test_6_4_5_fetch_macros_and_peek(conv):
    conv.login()
    conv.add_message(data=b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
                     internaldate=_epoch("17-Jul-1996 09:44:25"))
    _claim_recent(conv, "INBOX")
    conv.select()
    conv.script("""
        C: a1 FETCH 1 FAST
        S: * 1 FETCH (FLAGS () INTERNALDATE "17-Jul-1996 09:44:25 +0000" RFC822.SIZE 42)
        S: a1 OK {*}
        C: a2 FETCH 1 (BODY.PEEK[TEXT] RFC822.HEADER)
        S: * 1 FETCH (BODY[TEXT] {6}
        S: body
        S:  RFC822.HEADER {36}
        S: From: a@example.org
        S: Subject: hi
        S:
        S: )
        S: a2 OK {*}
        C: a3 FETCH 1 (BODY[]<37.3> UID)
        S: * 1 FETCH (BODY[]<37> {3}
        S: ody UID 1 FLAGS (\\Seen))
        S: a3 OK {*}
        C: a4 FETCH 1 BODY[]<400.1>
        S: * 1 FETCH (BODY[]<400> "")
        S: a4 OK {*}
        C: a5 FETCH 1 RFC822.TEXT
        S: * 1 FETCH (RFC822.TEXT {6}
        S: body
        S: )
        S: a5 OK {*}
    """)


def test_6_4_6_store(conv):
    conv.login()
    for flags in ([], [SEEN], [], [FLAGGED, SEEN]):
        conv.add_message(flags=flags)
    _claim_recent(conv, "INBOX")
    conv.select()
    conv.command("STORE 2 +FLAGS.SILENT (\\Seen)")
    conv.script("""
        C: A003 STORE 2:4 +FLAGS (\\Deleted)
        S: * 2 FETCH (FLAGS (\\Deleted \\Seen))
        S: * 3 FETCH (FLAGS (\\Deleted))
        S: * 4 FETCH (FLAGS (\\Deleted \\Flagged \\Seen))
        S: A003 OK {*}
        C: A004 STORE 4 -FLAGS.SILENT (\\Flagged)
        S: A004 OK {*}
        C: A005 STORE 1:2 FLAGS ($Label1 \\Answered)
        S: * FLAGS ({*})
        S: * OK [PERMANENTFLAGS ({*})] {*}
        S: * 1 FETCH (FLAGS (\\Answered $Label1))
        S: * 2 FETCH (FLAGS (\\Answered $Label1))
        S: A005 OK {*}
        C: A006 UID STORE 3 -FLAGS (\\Deleted)
        S: * 3 FETCH (UID 3 FLAGS ())
        S: A006 OK {*}
    """)


def test_6_4_7_copy(conv):
    conv.login()
    conv.command("CREATE MEETING")
    for _ in range(4):
        conv.add_message()
    conv.select()
    conv.script("""
        C: A003 COPY 2:4 MEETING
        S: A003 OK [COPYUID {n:uv} 2:4 1:3] {*}
        C: A004 COPY 1 nosuch
        S: A004 NO [TRYCREATE] {*}
        # Copying nothing (UIDs that no longer exist) succeeds without COPYUID.
        C: A005 UID COPY 100:200 MEETING
        S: A005 OK {*}
    """)
    assert int(conv.captured["uv"]) == conv.folder("MEETING").uidvalidity
    assert conv.folder("MEETING").messages == 3


def test_6_4_8_uid_fetch(conv):
    conv.login()
    _fill(conv, "INBOX", 25, uids={23: 4827313, 24: 4827943, 25: 4828442})
    _claim_recent(conv, "INBOX")
    conv.select()
    conv.script("""
        # RFC: (FLAGS (\\Seen) UID 4827313); UID FETCH reports the UID, here always first.
        C: A999 UID FETCH 4827313:4828442 FLAGS
        S: * 23 FETCH (UID 4827313 FLAGS (\\Seen))
        S: * 24 FETCH (UID 4827943 FLAGS (\\Seen))
        S: * 25 FETCH (UID 4828442 FLAGS (\\Seen))
        S: A999 OK {*}
    """)


def test_6_4_8_uid_range_beyond_the_highest_uid(conv):
    # "n:*" names the highest UID even when n is larger (RFC 3501 6.4.8); "n:m" above it
    # names nothing and is no error.
    conv.login()
    for _ in range(3):
        conv.add_message(flags=[SEEN])
    _claim_recent(conv, "INBOX")
    conv.select()
    conv.script("""
        C: a1 UID FETCH 4:* UID
        S: * 3 FETCH (UID 3)
        S: a1 OK {*}
        C: a2 UID FETCH 4:* FLAGS
        S: * 3 FETCH (UID 3 FLAGS (\\Seen))
        S: a2 OK {*}
        C: a3 UID FETCH 4:10 FLAGS
        S: a3 OK {*}
        C: a4 UID SEARCH UID 4:*
        S: * SEARCH 3
        S: a4 OK {*}
        C: a5 UID STORE 9:* +FLAGS (\\Flagged)
        S: * 3 FETCH (UID 3 FLAGS (\\Flagged \\Seen))
        S: a5 OK {*}
        C: a6 FETCH 4 UID
        S: a6 BAD {*}
        C: a7 UID FETCH *:2 UID
        S: * 2 FETCH (UID 2)
        S: * 3 FETCH (UID 3)
        S: a7 OK {*}
    """)


def test_6_4_8_uid_commands_on_an_empty_mailbox(conv):
    conv.login()
    conv.select()
    conv.script("""
        C: a1 UID FETCH 1:* (UID FLAGS)
        S: a1 OK {*}
        C: a2 UID SEARCH 1:* NOT DELETED
        S: * SEARCH
        S: a2 OK {*}
        C: a3 FETCH 1:* FLAGS
        S: a3 OK {*}
        C: a4 UID STORE 1:* +FLAGS (\\Seen)
        S: a4 OK {*}
        C: a5 UID COPY 1:* Trash
        S: a5 OK {*}
        C: a6 FETCH 1 FLAGS
        S: a6 BAD {*}
    """)


def test_6_5_1_unknown_x_command(conv):
    conv.login()
    conv.script("""
        C: a441 CAPABILITY
        S: * CAPABILITY IMAP4rev1 {*}
        S: a441 OK {*}
        C: A442 XPIG-LATIN
        S: A442 BAD {*}
    """)


# -- 7 responses --------------------------------------------------------------------------------


def test_7_1_status_responses_and_state_rules(conv):
    # Every command outside its states is BAD (RFC 3501 6: "commands permitted in ...").
    conv.script("""
        S: * OK [CAPABILITY IMAP4rev1 {*}] {*}
        C: A440 SELECT INBOX
        S: A440 BAD {*}
        C: A441 LIST "" *
        S: A441 BAD {*}
        C: A442 APPEND INBOX {1+}
        C: x
        S: A442 BAD {*}
        C: A443 EXPUNGE
        S: A443 BAD {*}
        C: A444 LOGIN alice secret
        S: A444 OK [CAPABILITY {*}] {*}
        C: A445 LOGIN alice secret
        S: A445 BAD {*}
        C: A446 AUTHENTICATE PLAIN
        S: A446 BAD {*}
        C: A447 FETCH 1 FLAGS
        S: A447 BAD {*}
        C: A448 CLOSE
        S: A448 BAD {*}
        C: A449 NOOP
        S: A449 OK {*}
    """)


def test_7_1_3_bad_command_line_too_long(tmp_path):
    with Conversation(tmp_path, max_line=1024) as conv:
        conv.login()
        lines = conv.send(b"A1 NOOP " + b"x" * 2000 + b"\r\nA2 NOOP\r\n")
        assert lines[0].startswith(b"A1 BAD ")
        assert lines[1].startswith(b"A2 OK ")


def test_9_response_text_is_7bit_until_imap4rev2(conv, tmp_path):
    # RFC 3501 section 9: text = 1*TEXT-CHAR, a CHAR being 7-bit; RFC 9051 allows UTF-8 text
    # only after ENABLE IMAP4rev2. A translated imap_code.txt must not put 8-bit octets on an
    # IMAP4rev1 client's response lines: its letters go as their ASCII base letters, others as "?".
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "imap_code.txt").write_text("10001\t<host_id> Grüß Gott\n20200\tNOOP erledigt ✓\n"
                                         "40001\tSyntaxfehler: <>\n", encoding="utf-8")
    conv.ctx.codes = ResponseCodes.load(str(texts))
    client = conv.second_session()
    assert client.greeting()[0].endswith(b"] localhost Gru? Gott")
    client.login()
    client.script("""
        C: a1 NOOP
        S: a1 OK NOOP erledigt ?
        C: a2 FETCH
        S: a2 BAD [CLIENTBUG] Syntaxfehler: Missing argument
        C: a3 ENABLE UTF8=ACCEPT
        S: * ENABLED UTF8=ACCEPT
        S: a3 OK {*}
        C: a4 NOOP
        S: a4 OK NOOP erledigt ?
        C: a5 ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: a5 OK {*}
        C: a6 NOOP
        S: a6 OK NOOP erledigt ✓
    """)


def test_7_1_5_bye_autologout(conv):
    conv.login()
    conv.script("""
        T:
        S: * BYE {*}
    """)
    assert conv.closed


def test_7_3_exists_recent_7_4_expunge_fetch(conv):
    # Other sessions' changes reach the client as EXISTS/RECENT/EXPUNGE/FETCH, and EXPUNGE is
    # never sent while a FETCH, STORE or SEARCH is answered (RFC 3501 7.4.1).
    conv.login()
    for _ in range(3):
        conv.add_message()
    conv.select()
    other = conv.second_session()
    other.login()
    other.select()
    other.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    conv.add_message()
    conv.script("""
        C: a1 FETCH 1 UID
        S: * 1 FETCH (UID 1)
        S: * 4 EXISTS
        S: * 4 RECENT
        S: a1 OK {*}
        C: a2 STORE 1 +FLAGS.SILENT (\\Seen)
        S: a2 OK {*}
        C: a3 SEARCH ALL
        S: * SEARCH 1 3 4
        S: a3 OK {*}
        C: a4 NOOP
        S: * 2 EXPUNGE
        S: a4 OK {*}
        C: a5 UID SEARCH ALL
        S: * SEARCH 1 3 4
        S: a5 OK {*}
    """)


def test_7_5_command_continuation_requests(tmp_path):
    # RFC: the user name "FRED FOOBAR" (11 octets); account names here cannot hold a space.
    with Conversation(tmp_path, users={"fred": "fat man"}) as conv:
        conv.script("""
            C: A001 LOGIN {4}
            S: + {*}
            C: FRED {7}
            S: + {*}
            C: fat man
            S: A001 OK [CAPABILITY {*}] {*}
            # As in the RFC: the server refuses BLURDYBLOOP before the literal is sent.
            C: A044 BLURDYBLOOP {3}
            S: A044 BAD {*}
            # LITERAL+: no continuation request.
            C: A045 LOGOUT {0+}
            C:
            S: A045 BAD {*}
        """)


def test_pipelined_commands_are_answered_in_order(conv):
    conv.login()
    for _ in range(3):
        conv.add_message()
    batch = b"".join(b"p%d %s\r\n" % (number, command) for number, command in enumerate([
        b"SELECT INBOX", b"FETCH 1:* UID", b"STORE 2 +FLAGS (\\Flagged)", b"SEARCH FLAGGED", b"NOOP",
        b"BOGUS", b"UID FETCH 3 FLAGS", b"COPY 1 Trash", b"CLOSE", b"NOOP",
    ]))
    lines = conv.send(batch)
    tagged = [line.split(b" ")[:2] for line in lines if not line.startswith(b"*")]
    assert tagged == [[b"p%d" % number, b"BAD" if number == 5 else b"OK"] for number in range(10)]
    assert b"* SEARCH 2" in lines


def test_recent_is_announced_to_exactly_one_session(conv):
    conv.login()
    other = conv.second_session()
    other.login()
    conv.select()
    other.select()
    conv.add_message()
    first = conv.command("NOOP")
    second = other.command("NOOP")
    assert b"* 1 RECENT" in first and b"* 0 RECENT" in second
    assert conv.command("FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS (\\Recent))"
    assert other.command("FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS ())"
    # The next session that selects the mailbox does not see it as recent either.
    conv.command("UNSELECT")
    assert b"* 0 RECENT" in conv.select()


def test_status_on_the_selected_mailbox(conv):
    conv.login()
    conv.add_message(flags=[SEEN])
    conv.add_message()
    conv.select()
    conv.script("""
        C: a1 STATUS INBOX (MESSAGES UIDNEXT UNSEEN)
        S: * STATUS INBOX (MESSAGES 2 UIDNEXT 3 UNSEEN 1)
        S: a1 OK {*}
    """)


def test_8_sample_imap4rev1_connection(tmp_path):
    header = (
        "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
        "From: Terry Gray <gray@cac.washington.edu>\r\n"
        "Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
        "To: imap@cac.washington.edu\r\n"
        "cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n"
        "Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        "\r\n"
    )
    # 92 lines, 3028 octets: the body the example's BODY structure describes.
    body = "".join(("x" * (31 if index < 84 else 30)) + "\r\n" for index in range(92))
    assert len(header) == 342 and len(body) == 3028
    with Conversation(tmp_path, users={"mrc": "secret"}) as conv:
        inbox = conv.folder("INBOX", "mrc")
        for number in range(1, 17):
            data = (header + body).encode() if number == 12 else _message(number)
            internaldate = _epoch("17-Jul-1996 09:44:25") if number == 12 else None
            conv.store.append("mrc", inbox.id, data, flags=(SEEN,), internaldate=internaldate,
                              tzoffset=-420 if number == 12 else 0)
        conv.store.claim_recent_range("mrc", inbox.id)
        for number in (17, 18):
            conv.store.append("mrc", inbox.id, _message(number))
        conv.script("""
            S: * OK [CAPABILITY IMAP4rev1 {*}] {*}
            C: a001 login mrc secret
            S: a001 OK [CAPABILITY {*}] {*}
            # RFC 2060's example lacks PERMANENTFLAGS and UIDNEXT, which RFC 3501 requires.
            C: a002 select inbox
            S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
            S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] {*}
            S: * 18 EXISTS
            S: * 2 RECENT
            S: * OK [UNSEEN 17] {*}
            S: * OK [UIDVALIDITY {n}] {*}
            S: * OK [UIDNEXT 19] {*}
            S: * OK [HIGHESTMODSEQ {n}] {*}
            S: * OK [MAILBOXID ({*})] Mailbox ID
            S: a002 OK [READ-WRITE] {*}
            # RFC822.SIZE: the RFC says 4286, but its header and body add up to 3370 octets.
            C: a003 fetch 12 full
            S: * 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 3370 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) ((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL "<B27397-0100000@cac.washington.edu>") BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))
            S: a003 OK {*}
            C: a004 fetch 12 body[header]
            S: * 12 FETCH (BODY[HEADER] {342}
            S: Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
            S: From: Terry Gray <gray@cac.washington.edu>
            S: Subject: IMAP4rev1 WG mtg summary and minutes
            S: To: imap@cac.washington.edu
            S: cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>
            S: Message-Id: <B27397-0100000@cac.washington.edu>
            S: MIME-Version: 1.0
            S: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
            S:
            S: )
            S: a004 OK {*}
            C: a005 store 12 +flags \\deleted
            S: * 12 FETCH (FLAGS (\\Deleted \\Seen))
            S: a005 OK {*}
            C: a006 logout
            S: * BYE {*}
            S: a006 OK {*}
        """)
        assert conv.closed
