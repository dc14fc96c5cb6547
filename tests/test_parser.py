"""The command parser: RFC examples per command, extensions, and the errors it must raise."""

from __future__ import annotations

import calendar
import datetime
from typing import Any, TypeVar

import pytest

from gximap.imap import commands as c
from gximap.imap.framing import CommandFrame, Framer, Literal, NeedContinuation
from gximap.imap.parser import (
    AppendTally,
    MetadataTally,
    ParseError,
    append_destination,
    is_command_name,
    parse_command,
    parse_section_spec,
    parse_sequence_set,
    replace_target,
)


def frame(data: bytes) -> CommandFrame:
    framer = Framer(1 << 18, 1 << 20)
    framer.feed(data + b"\r\n")
    while True:
        event = framer.next_event()
        if isinstance(event, NeedContinuation):
            continue
        assert isinstance(event, CommandFrame), event
        return event


CommandT = TypeVar("CommandT", bound=c.Command)


def parse(data: bytes, **options: Any) -> c.Command:
    return parse_command(frame(data), **options)


def parse_as(cls: type[CommandT], data: bytes, **options: Any) -> CommandT:
    """parse(), asserting that the command is a ``cls`` (which also tells the type checker)."""
    command = parse(data, **options)
    assert isinstance(command, cls), command
    return command


def bad(data: bytes, **options: Any) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(data, **options)
    assert not info.value.internal, info.value.__cause__
    return info.value


def mbox(name: str, raw: bytes | None = None) -> c.MailboxName:
    return c.MailboxName(name, name.encode() if raw is None else raw)


# -- generic ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "cls"),
    [
        (b"a CAPABILITY", c.Capability),
        (b"a noop", c.Noop),
        (b"a LogOut", c.Logout),
        (b"a STARTTLS", c.Starttls),
        (b"a CHECK", c.Check),
        (b"a CLOSE", c.Close),
        (b"a UNSELECT", c.Unselect),
        (b"a IDLE", c.Idle),
        (b"a NAMESPACE", c.Namespace),
        (b"a UNAUTHENTICATE", c.Unauthenticate),
        (b"a EXPUNGE", c.Expunge),
    ],
)
def test_commands_without_arguments(line: bytes, cls: type) -> None:
    command = parse(line)
    assert type(command) is cls
    assert command.tag == b"a"
    bad(line + b" extra")


def test_unknown_command() -> None:
    error = bad(b"x1 FROBNICATE now")
    assert (error.tag, error.text) == (b"x1", "Unknown command")
    assert bad(b"x2 UID NOOP").tag == b"x2"
    assert bad(b"x3 UID").tag == b"x3"
    assert bad(b"x4").tag == b"x4"
    assert bad(b"x5 ").tag == b"x5"
    assert bad(b"x6  NOOP").tag == b"x6"


def test_missing_tag() -> None:
    error = bad(b"+ NOOP")
    assert error.tag is None


def test_command_name_attribute() -> None:
    assert parse(b"a EXAMINE x").name == "EXAMINE"
    assert parse(b"a SELECT x").name == "SELECT"
    assert parse(b"a UID FETCH 1 UID").name == "FETCH"


# -- authentication ----------------------------------------------------------------------------


def test_login_forms() -> None:
    assert parse(b"a001 LOGIN SMITH SESAME") == c.Login(b"a001", b"SMITH", b"SESAME")
    assert parse(b'a LOGIN "fred" "pa ss\\"w\\\\d"') == c.Login(b"a", b"fred", b'pa ss"w\\d')
    assert parse(b"A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man") == c.Login(
        b"A001", b"FRED FOOBAR", b"fat man"
    )
    assert parse('a LOGIN "jürgen" "pässword"'.encode()) == c.Login(
        b"a", "jürgen".encode(), "pässword".encode()
    )
    assert parse(b"a LOGIN user]x pass") == c.Login(b"a", b"user]x", b"pass")


@pytest.mark.parametrize(
    "line",
    [
        b"a LOGIN",
        b"a LOGIN user",
        b"a LOGIN user ",
        b"a LOGIN user pass extra",
        b'a LOGIN "unterminated pass',
        b'a LOGIN "bad \\escape" x',
        b"a LOGIN (user) pass",
        b"a LOGIN user ~{3}\r\nabc",
        b"a LOGIN user {3}\r\na\x00b",
    ],
)
def test_login_errors(line: bytes) -> None:
    bad(line)


def test_authenticate() -> None:
    assert parse(b"a AUTHENTICATE gssapi") == c.Authenticate(b"a", "GSSAPI", None)
    assert parse(b"a AUTHENTICATE PLAIN =") == c.Authenticate(b"a", "PLAIN", b"")
    assert parse(b"a AUTHENTICATE PLAIN AHRlc3QAMTIzNA==") == c.Authenticate(
        b"a", "PLAIN", b"\x00test\x001234"
    )
    bad(b"a AUTHENTICATE PLAIN AHRlc3QAMTIzNA=")
    bad(b"a AUTHENTICATE PLAIN !!!!")
    bad(b"a AUTHENTICATE")
    bad(b"a AUTHENTICATE PLAIN == x")


def test_enable() -> None:
    assert parse_as(c.Enable, b"t2 ENABLE CONDSTORE X-GOOD-IDEA utf8=accept").capabilities == (
        "CONDSTORE", "X-GOOD-IDEA", "UTF8=ACCEPT"
    )
    assert parse_as(c.Enable, b"t ENABLE QRESYNC qresync").caps == ("QRESYNC",)
    bad(b"t ENABLE")
    bad(b"t ENABLE ")


def test_id() -> None:
    command = parse(b'a023 ID ("name" "sodr" "version" "19.34" "vendor" NIL)')
    assert command == c.Id(b"a023", {"name": "sodr", "version": "19.34", "vendor": None})
    assert parse(b"a ID NIL") == c.Id(b"a", None)
    assert parse(b"a ID ()") == c.Id(b"a", {})
    many = b" ".join(b'"k%d" "v"' % index for index in range(31))
    bad(b"a ID (" + many + b")")
    bad(b'a ID ("' + b"k" * 31 + b'" "v")')
    bad(b'a ID ("name")')
    bad(b"a ID")


# -- mailbox names ----------------------------------------------------------------------------


def test_mailbox_names_are_decoded_and_inbox_normalised() -> None:
    assert parse_as(c.Select, b"a SELECT inbox").mailbox == c.MailboxName("INBOX", b"inbox")
    assert parse_as(c.Select, b'a SELECT "InBoX"').mailbox.name == "INBOX"
    assert parse_as(c.Select, b"a SELECT inbox/Sub").mailbox.name == "INBOX/Sub"
    assert parse_as(c.Select, b"a SELECT INBOXES").mailbox.name == "INBOXES"
    assert parse_as(c.Select, b"a SELECT Other/inbox").mailbox.name == "Other/inbox"
    assert parse_as(c.Select, b"a SELECT ~peter/mail/&U,BTFw-/&ZeVnLIqe-").mailbox == c.MailboxName(
        "~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    )
    assert parse_as(c.Delete, b'a DELETE "a&-b"').mailbox.name == "a&b"
    assert parse_as(c.Delete, b"a DELETE {5}\r\nx y z").mailbox.name == "x y z"


def test_mailbox_name_errors() -> None:
    bad("a SELECT Entwürfe".encode())  # 8-bit is never an atom
    assert "modified UTF-7" in bad('a SELECT "Entwürfe"'.encode()).text
    bad(b"a SELECT &AGE-")
    bad(b"a SELECT &U,BTFw")
    bad(b"a SELECT")


def test_mailbox_names_in_utf8_mode() -> None:
    assert parse_as(c.Select, 'a SELECT "Entwürfe"'.encode(), utf8=True).mailbox.name == "Entwürfe"
    assert parse_as(c.Select, b'a SELECT "a&-b"', utf8=True).mailbox.name == "a&-b"  # "&" is just "&"
    bad(b'a SELECT "\xff"', utf8=True)


# -- mailbox commands -------------------------------------------------------------------------


def test_select_examine() -> None:
    assert parse(b"A142 SELECT INBOX") == c.Select(b"A142", mbox("INBOX"), False, False, None)
    assert parse_as(c.Select, b"A932 EXAMINE blurdybloop").examine is True
    assert parse_as(c.Select, b"a SELECT INBOX (CONDSTORE)").condstore is True


def test_select_qresync_rfc7162_examples() -> None:
    command = parse_as(
        c.Select,
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))"
    )
    assert command.qresync == c.QResyncParams(
        67890007, 20050715194045000, parse_sequence_set(b"41,43:211,214:541"), None
    )
    command = parse_as(
        c.Select,
        b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999"
        b" 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))"
    )
    assert command.qresync is not None and command.qresync.seq_match is not None
    assert command.qresync.known_uids == parse_sequence_set(b"1:29997")
    assert command.qresync.seq_match[0] == parse_sequence_set(b"5000,7500,9000,9990:9999")
    assert parse_as(c.Select, b"a SELECT x (QRESYNC (1 2))").qresync == c.QResyncParams(1, 2)
    # mod-sequence 0 (outside RFC 7162's grammar) means "from the start", as Dovecot takes it
    assert parse_as(c.Select, b"a SELECT x (QRESYNC (1 0))").qresync == c.QResyncParams(1, 0)
    qresync = parse_as(c.Select, b"a SELECT x (QRESYNC (1 2 (1:2 3:4)))").qresync
    assert qresync is not None and qresync.seq_match is not None


@pytest.mark.parametrize(
    "line",
    [
        b"a SELECT INBOX ()",
        b"a SELECT INBOX (FOO)",
        b"a SELECT INBOX (CONDSTORE CONDSTORE)",
        b"a SELECT INBOX (QRESYNC (0 5))",
        b"a SELECT INBOX (QRESYNC (1 5 1:*))",
        b"a SELECT INBOX (QRESYNC (1 5 1:3 (1:2)))",
        b"a SELECT INBOX (QRESYNC (1 99999999999999999999))",
        b"a SELECT INBOX (CONDSTORE",
        b"a SELECT INBOX CONDSTORE",
    ],
)
def test_select_errors(line: bytes) -> None:
    bad(line)


def test_create() -> None:
    assert parse(b"A003 CREATE owatagusiam/") == c.Create(b"A003", mbox("owatagusiam/"), None)
    command = parse_as(c.Create, b"t1 CREATE MySpecial (USE (\\drafts \\Sent \\X-Custom))")
    assert command.use == ("\\Drafts", "\\Sent", "\\X-Custom")
    assert parse_as(c.Create, b"t1 CREATE x (USE ())").use == ()
    bad(b"t1 CREATE x (FOO (a))")
    bad(b"t1 CREATE x (USE (Drafts))")
    bad(b"t1 CREATE x (USE (\\Drafts) USE (\\Sent))")


def test_delete_rename_subscribe() -> None:
    assert parse(b"A683 DELETE blurdybloop") == c.Delete(b"A683", mbox("blurdybloop"))
    assert parse(b"A683 RENAME blurdybloop sarasoop") == c.Rename(
        b"A683", mbox("blurdybloop"), mbox("sarasoop")
    )
    assert parse(b"A002 SUBSCRIBE #news.comp.mail.mime") == c.Subscribe(
        b"A002", mbox("#news.comp.mail.mime")
    )
    assert type(parse(b"A002 UNSUBSCRIBE x")) is c.Unsubscribe
    bad(b"a RENAME onlyone")


def test_list_basic() -> None:
    assert parse(b'A101 LIST "" ""') == c.List(b"A101", mbox(""), (mbox(""),))
    command = parse_as(c.List, b"A102 LIST #news.comp.mail.misc ''")
    assert command.reference.name == "#news.comp.mail.misc"
    assert command.patterns == (mbox("''"),)
    assert parse_as(c.List, b"A202 LIST ~/Mail/ %").patterns == (mbox("%"),)
    assert parse_as(c.List, b"a LIST \"\" *]x").patterns == (mbox("*]x"),)
    command = parse_as(c.List, b'a LIST "" INBOX/&AOk-*')
    assert command.patterns[0].name == "INBOX/é*"
    assert command.extended is False


def test_list_extended_rfc5258_examples() -> None:
    command = parse_as(c.List, b'A02 LIST (SUBSCRIBED) "" "*"')
    assert command.selection_opts == ("SUBSCRIBED",)
    assert command.extended is True
    command = parse_as(c.List, b'A03 LIST () "" "%" RETURN (CHILDREN)')
    assert (command.selection_opts, command.return_opts) == ((), ("CHILDREN",))
    command = parse_as(c.List, b'A04 LIST (REMOTE) "" "%" RETURN (CHILDREN)')
    assert command.selection_opts == ("REMOTE",)
    command = parse_as(c.List, b'A05 LIST (subscribed RECURSIVEMATCH) "" "%" RETURN (CHILDREN)')
    assert command.selection_opts == ("SUBSCRIBED", "RECURSIVEMATCH")
    command = parse_as(c.List, b'A06 LIST "" ("INBOX" "Drafts" "Sent/%")')
    assert [pattern.name for pattern in command.patterns] == ["INBOX", "Drafts", "Sent/%"]
    assert command.extended is True


def test_list_status_and_special_use() -> None:
    command = parse_as(c.List, b'A02 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))')
    assert command.return_opts == ("STATUS",)
    assert command.status_items == ("MESSAGES", "UNSEEN")
    command = parse_as(c.List, b't1 LIST "" "%" RETURN (SPECIAL-USE STATUS (MESSAGES) SUBSCRIBED)')
    assert command.return_opts == ("SPECIAL-USE", "STATUS", "SUBSCRIBED")
    assert parse_as(c.List, b't3 LIST (SPECIAL-USE) "" "*"').selection_opts == ("SPECIAL-USE",)
    assert parse_as(c.List, b'a LIST "" "*" RETURN ()').return_opts == ()


@pytest.mark.parametrize(
    "line",
    [
        b'a LIST (RECURSIVEMATCH) "" "*"',
        b'a LIST (RECURSIVEMATCH REMOTE) "" "*"',
        b'a LIST (FOO) "" "*"',
        b'a LIST "" "*" RETURN (FOO)',
        b'a LIST "" "*" RETURN (STATUS ())',
        b'a LIST "" "*" RETURN (STATUS (BOGUS))',
        b'a LIST "" "*" RETURN (STATUS (MESSAGES) STATUS (UNSEEN))',
        b'a LIST "" "*" BOGUS (CHILDREN)',
        b'a LIST "" ()',
        b'a LIST ""',
    ],
)
def test_list_errors(line: bytes) -> None:
    bad(line)


def test_lsub_xlist() -> None:
    assert parse(b'A002 LSUB "#news." "comp.mail.*"') == c.Lsub(
        b"A002", mbox("#news."), mbox("comp.mail.*")
    )
    assert parse(b'a XLIST "" *') == c.Xlist(b"a", mbox(""), mbox("*"))


def test_status() -> None:
    assert parse(b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)") == c.Status(
        b"A042", mbox("blurdybloop"), ("UIDNEXT", "MESSAGES")
    )
    command = parse_as(
        c.Status, b"a STATUS x (size deleted HIGHESTMODSEQ APPENDLIMIT MAILBOXID unseen unseen)"
    )
    assert command.items == ("SIZE", "DELETED", "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID", "UNSEEN")
    bad(b"a STATUS x ()")
    bad(b"a STATUS x (BOGUS)")
    bad(b"a STATUS x")


def test_word_lists_parsed_in_one_match_answer_like_the_item_by_item_parse() -> None:
    """STATUS items, LIST selection options and SEARCH return options are read by one regex
    when well formed (_Reader.word_list); anything else takes the item-by-item path, so the
    errors and the argument limit stay what they were."""
    assert parse_as(c.Status, b"a STATUS x (messages uidNext)").items == ("MESSAGES", "UIDNEXT")
    command = parse_as(c.List, b"a LIST (subscribed) \"\" * RETURN (STATUS (unseen))")
    assert command.selection_opts == ("SUBSCRIBED",)
    assert parse_as(c.List, b"a LIST \"\" * RETURN (STATUS (unseen size))").status_items == ("UNSEEN", "SIZE")
    assert parse_as(c.Search, b"a SEARCH RETURN (min max) ALL").return_opts == ("MIN", "MAX")
    assert parse_as(c.Search, b"a SEARCH RETURN () ALL").return_opts == ("ALL",)
    assert "Unknown status item BOGUS" in bad(b"a STATUS x (MESSAGES BOGUS)").text
    assert bad(b"a STATUS x (MESSAGES  UNSEEN)").text == "Expected status item"
    assert bad(b"a STATUS x (MESSAGES UNSEEN").text == "Missing argument"
    assert bad(b"a STATUS x (MESSAGES 1)").text == "Expected status item"
    assert bad(b"a STATUS x (MESSAGES UNSEEN)", max_args=1).text == "Too many arguments"
    assert parse_as(c.Status, b"a STATUS x (MESSAGES UNSEEN)", max_args=2).items == ("MESSAGES", "UNSEEN")


# -- APPEND -------------------------------------------------------------------------------------


def test_append_rfc3501_example() -> None:
    message = (
        b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.COM>\r\n"
        b"Subject: afternoon meeting\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    )
    command = parse_as(
        c.Append,
        b'A003 APPEND saved-messages (\\Seen) "07-Feb-1994 21:52:25 -0800" {%d}\r\n%s'
        % (len(message), message)
    )
    assert command.mailbox == mbox("saved-messages")
    expected_time = calendar.timegm((1994, 2, 8, 5, 52, 25))
    assert command.messages == (c.AppendMessage(("\\Seen",), (expected_time, -480), message),)


def test_append_variants() -> None:
    command = parse_as(c.Append, b"a APPEND INBOX {3+}\r\nabc")
    assert command.messages == (c.AppendMessage((), None, b"abc"),)
    command = parse_as(c.Append, b'a APPEND INBOX " 7-Jul-1996 02:44:25 +0130" {1+}\r\nx')
    assert command.messages[0].date == (calendar.timegm((1996, 7, 7, 1, 14, 25)), 90)
    command = parse_as(c.Append, b'a APPEND INBOX "7-Jul-1996 02:44:25 +0000" {1+}\r\nx')
    date = command.messages[0].date
    assert date is not None and date[1] == 0
    # A leap second is the second before it (datetime knows no :60); elsewhere :60 is no time.
    command = parse_as(c.Append, b'a APPEND INBOX "31-Dec-2016 23:59:60 +0000" {1+}\r\nx')
    assert command.messages[0].date == (calendar.timegm((2016, 12, 31, 23, 59, 59)), 0)
    bad(b'a APPEND INBOX "31-Dec-2016 23:58:60 +0000" {1+}\r\nx')
    # 23:59 UTC in another zone is a leap second too; 23:59 local time elsewhere is none
    command = parse_as(c.Append, b'a APPEND INBOX "01-Jan-2017 08:59:60 +0900" {1+}\r\nx')
    assert command.messages[0].date == (calendar.timegm((2016, 12, 31, 23, 59, 59)), 540)
    command = parse_as(c.Append, b'a APPEND INBOX "31-Dec-2016 18:59:60 -0500" {1+}\r\nx')
    assert command.messages[0].date == (calendar.timegm((2016, 12, 31, 23, 59, 59)), -300)
    bad(b'a APPEND INBOX "31-Dec-2016 23:59:60 +0100" {1+}\r\nx')
    command = parse_as(c.Append, b"a APPEND INBOX (\\seen \\FLAGGED $Forwarded seen) ~{3+}\r\n\x00\x01\x02")
    assert command.messages == (
        c.AppendMessage(("\\Seen", "\\Flagged", "$Forwarded", "seen"), None, b"\x00\x01\x02", True),
    )
    command = parse_as(c.Append, b"a APPEND INBOX UTF8 (~{4+}\r\nab\xc3\xa9)")
    assert command.messages == (c.AppendMessage((), None, b"ab\xc3\xa9", True, True),)
    command = parse_as(c.Append, b"a APPEND INBOX () {1+}\r\nx")
    assert command.messages[0].flags == ()


def test_multiappend_rfc3502_example() -> None:
    first = b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n\r\nHello Joe\r\n"
    second = b"Date: Mon, 7 Feb 1994 22:43:04 -0800 (PST)\r\n\r\nHello Fred\r\n"
    command = parse_as(
        c.Append,
        b'A003 APPEND saved-messages (\\Seen) {%d}\r\n%s (\\Seen) "07-Feb-1994 22:43:04 -0800" {%d}\r\n%s'
        % (len(first), first, len(second), second)
    )
    assert [message.data for message in command.messages] == [first, second]
    assert command.messages[1].date is not None


@pytest.mark.parametrize(
    "line",
    [
        b"a APPEND INBOX",
        b'a APPEND INBOX "message as quoted string"',
        b"a APPEND INBOX (\\Recent) {1+}\r\nx",
        b"a APPEND INBOX (\\Bogus) {1+}\r\nx",
        b"a APPEND INBOX (\\*) {1+}\r\nx",
        b'a APPEND INBOX "31-Feb-1994 21:52:25 -0800" {1+}\r\nx',
        b'a APPEND INBOX "07-Foo-1994 21:52:25 -0800" {1+}\r\nx',
        b'a APPEND INBOX "07-Feb-1994 21:52:25 -0890" {1+}\r\nx',
        b'a APPEND INBOX "07-Feb-1994 21:52:25" {1+}\r\nx',
        b"a APPEND INBOX {1+}\r\nx extra",
        b"a APPEND INBOX {1+}\r\n\x00",
        b"a APPEND INBOX UTF8 {1+}\r\nx",
    ],
)
def test_append_errors(line: bytes) -> None:
    bad(line)


# -- CATENATE (RFC 4469) ------------------------------------------------------------------------


def test_catenate_rfc4469_example() -> None:
    # RFC 4469 appendix A, first message (shortened TEXT parts)
    head = b"Subject: Re: xyz\r\n\r\n--abc\r\n"
    command = parse_as(c.Append, b'A003 APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (TEXT {%d+}\r\n%s'
                       b' URL "/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.5.9" TEXT {9}\r\n--abc--\r\n)'
                       % (len(head), head))
    (message,) = command.messages
    assert message.flags == ("\\Seen", "\\Draft", "$MDNSent") and message.data == b""
    assert message.catenate == (c.CatenateText(head),
                                c.CatenateUrl(b"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.5.9"),
                                c.CatenateText(b"--abc--\r\n"))


def test_catenate_forms() -> None:
    # A URL as an atom and as a literal (astring), a date, UTF8 (literal8) parts (RFC 6855
    # section 4), and MULTIAPPEND mixing plain and CATENATE messages.
    command = parse_as(c.Append, b'a APPEND INBOX "07-Feb-1994 21:52:25 -0800" catenate (url /INBOX/;UID=1'
                       b" URL {13+}\r\n/INBOX/;UID=2 UTF8 (~{3+}\r\n\x00\xc3\xa9)) {1+}\r\nx"
                       b" CATENATE (TEXT {2+}\r\nhi)")
    first, second, third = command.messages
    assert first.date is not None and first.utf8 and first.binary
    assert first.catenate == (c.CatenateUrl(b"/INBOX/;UID=1"), c.CatenateUrl(b"/INBOX/;UID=2"),
                              c.CatenateText(b"\x00\xc3\xa9", utf8=True, binary=True))
    assert second == c.AppendMessage((), None, b"x")
    assert third.catenate == (c.CatenateText(b"hi"),) and not third.utf8
    replace = parse_as(c.Replace, b"a UID REPLACE 1 Drafts CATENATE (TEXT {1+}\r\nx)")
    assert replace.message.catenate == (c.CatenateText(b"x"),)


@pytest.mark.parametrize(
    "line",
    [
        b"a APPEND INBOX CATENATE ()",  # cat-part *(SP cat-part): one at least
        b"a APPEND INBOX CATENATE",
        b"a APPEND INBOX CATENATE (TEXT {1+}\r\nx",  # unclosed
        b"a APPEND INBOX CATENATE TEXT {1+}\r\nx",
        b"a APPEND INBOX CATENATE (BODY {1+}\r\nx)",  # unknown part type
        b'a APPEND INBOX CATENATE (TEXT "quoted")',  # TEXT takes a literal only
        b"a APPEND INBOX CATENATE (TEXT ~{1+}\r\nx)",  # ... not a literal8 (RFC 4469 section 5)
        b"a APPEND INBOX CATENATE (TEXT {1+}\r\n\x00)",
        b"a APPEND INBOX CATENATE (URL)",
        b"a APPEND INBOX CATENATE (URL (x))",
        b"a APPEND INBOX CATENATE (CATENATE (TEXT {1+}\r\nx))",  # no nesting
        b"a APPEND INBOX CATENATE ((TEXT {1+}\r\nx))",
        b"a APPEND INBOX CATENATE (TEXT {1+}\r\nx  TEXT {1+}\r\ny)",
        b"a APPEND INBOX CATENATE (UTF8 {1+}\r\nx)",
        b"a APPEND INBOX CATENATE (TEXT {1+}\r\nx) extra",
        b"a APPEND INBOX CATENATE (URL /a/;UID=1) (\\Seen)",  # flags without a message
    ],
)
def test_catenate_errors(line: bytes) -> None:
    bad(line)


@pytest.mark.parametrize(("text", "section"), [
    (b"1.MIME", c.Section((1,), "MIME")),
    (b"HEADER", c.Section((), "HEADER")),
    (b"2.3.text", c.Section((2, 3), "TEXT")),
    (b"1.2", c.Section((1, 2))),
    (b"HEADER.FIELDS (To Subject)", c.Section((), "HEADER.FIELDS", ("To", "Subject"))),
])
def test_parse_section_spec(text: bytes, section: c.Section) -> None:
    assert parse_section_spec(text) == section


@pytest.mark.parametrize("text", [b"", b"MIME", b"1.FOO", b"0", b"1.", b"1]", b"HEADER.FIELDS ()", b"1 2"])
def test_parse_section_spec_errors(text: bytes) -> None:
    with pytest.raises(ParseError):
        parse_section_spec(text)


@pytest.mark.parametrize(("pieces", "octets", "messages"), [
    ((b"a APPEND INBOX ", 10), 10, 1),
    ((b"a APPEND ", 5, b" (\\Seen) ", 10), 10, 1),  # the name as a literal is no message text
    ((b"a APPEND INBOX ", 10, b" ", 20), 30, 2),  # MULTIAPPEND
    ((b"a APPEND INBOX UTF8 (", 7), 7, 1),
    ((b"a APPEND INBOX CATENATE (TEXT ", 10, b" URL ", 30, b" TEXT ", 5), 15, 1),
    ((b'a APPEND INBOX CATENATE (URL "/x/;UID=1" UTF8 (', 4, b") TEXT ", 6), 10, 1),
    ((b"a APPEND INBOX CATENATE (TEXT ", 10, b") CATENATE (TEXT ", 3, b") ", 8), 21, 3),
    ((b'a APPEND CATENATE (\\Seen) ', 9), 9, 1),  # a mailbox named CATENATE
    ((b'a APPEND INBOX "07-Feb-1994 21:52:25 -0800" CATENATE (TEXT ', 2), 2, 1),
])
def test_append_tally(pieces: tuple[bytes | int, ...], octets: int, messages: int) -> None:
    tally = AppendTally()
    for piece in pieces:
        tally.feed(piece)
    assert (tally.octets, tally.messages) == (octets, messages)


@pytest.mark.parametrize(("pieces", "arguments"), [
    ((b"a APPEND INBOX ", 10), 1),
    ((b"a APPEND INBOX (\\Seen $Label) ", 10), 3),
    ((b"a APPEND INBOX (\\Seen) ", 10, b" (a b c) ", 3, b" ", 4), 7),  # MULTIAPPEND: flags of each
    ((b"a APPEND INBOX () ", 10), 1),
    ((b'a APPEND INBOX (x) "07-Feb-1994 21:52:25 -0800" UTF8 (', 7), 2),
    ((b"a APPEND ", 5, b" (\\Seen) ", 10), 2),  # the name as a literal is no argument
    ((b'a APPEND INBOX (f) CATENATE (URL "/x/;UID=1" TEXT ', 4), 4),  # message, flag, two parts
    ((b"a APPEND INBOX CATENATE (URL ", 9, b" UTF8 (", 4, b") TEXT ", 6), 4),
    ((b"a APPEND INBOX CATENATE (URL TEXT TEXT ", 6), 3),  # a URL named TEXT is one part
])
def test_append_tally_arguments(pieces: tuple[bytes | int, ...], arguments: int) -> None:
    """The tally spends imap_max_args as the parser does once the command is whole: a message,
    each of its flags and each CATENATE part are one argument each."""
    tally = AppendTally()
    for piece in pieces:
        tally.feed(piece)
    assert tally.arguments == arguments
    command = b"".join(piece if isinstance(piece, bytes) else b"{%d+}\r\n%s" % (piece, b"x" * piece)
                       for piece in pieces)
    command += b")" * (command.count(b"(") - command.count(b")"))  # the rest of the command
    parse(command, max_args=arguments)
    assert bad(command, max_args=arguments - 1).code == "LIMIT"


@pytest.mark.parametrize(("pieces", "heading", "arguments"), [
    ((b"a REPLACE 1 Drafts ", 10), 4, 1),
    ((b"a REPLACE * Drafts (\\Seen $Label) ", 10), 4, 3),
    ((b'a UID REPLACE 7 "Old Drafts" (a b c) ', 10), 5, 4),
    ((b"a UID REPLACE 7 ", 6, b" (a b) ", 10), 5, 3),  # the mailbox as a literal is no argument
    ((b"a REPLACE 2 Drafts (f) CATENATE (TEXT ", 4, b" URL ", 5, b" TEXT ", 3), 4, 5),
])
def test_replace_tally_arguments(pieces: tuple[bytes | int, ...], heading: int, arguments: int) -> None:
    """A REPLACE spends imap_max_args as an APPEND of one message (its message, flags and
    CATENATE parts), and past it is refused NO [LIMIT] as an APPEND is, not BAD: the tally, told
    how many tokens come before the message, counts as the parser does."""
    tally = AppendTally(heading)
    for piece in pieces:
        tally.feed(piece)
    assert tally.arguments == arguments and tally.messages == 1
    command = b"".join(piece if isinstance(piece, bytes) else b"{%d+}\r\n%s" % (piece, b"x" * piece)
                       for piece in pieces)
    command += b")" * (command.count(b"(") - command.count(b")"))
    parse_as(c.Replace, command, max_args=arguments)
    assert bad(command, max_args=arguments - 1).code == "LIMIT"


@pytest.mark.parametrize(("pieces", "values"), [
    ((b"a SETMETADATA INBOX (/private/comment ", 4), [True]),
    ((b"a SETMETADATA INBOX (/private/comment ~", 4), [True]),   # literal8
    ((b"a SETMETADATA ", 5, b" (", 16, b" ", 3), [False, False, True]),  # name, entry, value
    ((b'a SETMETADATA "My box" (/private/a "x" /private/b NIL /private/c ', 2, b" ", 9, b" ", 1),
     [True, False, True]),
    ((b"a SETMETADATA INBOX (/private/a (", 1), [False]),   # not the grammar: no guess
])
def test_metadata_tally(pieces: tuple[bytes | int, ...], values: list[bool]) -> None:
    """MetadataTally tells which of a SETMETADATA's literals are values, before each is sent."""
    tally = MetadataTally()
    seen = []
    for piece in pieces:
        if isinstance(piece, int):
            seen.append(tally.value_next)
        tally.feed(piece)
    assert seen == values


# -- REPLACE (RFC 8508) -------------------------------------------------------------------------


def test_replace_rfc8508_forms() -> None:
    message = b"Subject: draft\r\n\r\nv2\r\n"
    command = parse_as(c.Replace, b"A003 REPLACE 4 Drafts (\\Seen \\Draft) {%d}\r\n%s" % (len(message), message))
    assert command == c.Replace(b"A003", False, 4, mbox("Drafts"),
                                c.AppendMessage(("\\Seen", "\\Draft"), None, message))
    command = parse_as(c.Replace, b'a UID REPLACE 2000 "Other Drafts" "07-Jul-1996 02:44:25 +0130" {1+}\r\nx')
    assert command.uid and command.number == 2000 and command.mailbox == mbox("Other Drafts")
    assert command.message.date == (calendar.timegm((1996, 7, 7, 1, 14, 25)), 90)
    command = parse_as(c.Replace, b"a replace * INBOX ~{3+}\r\n\x00\x01\x02")
    assert command.number is None and command.message == c.AppendMessage((), None, b"\x00\x01\x02", True)
    command = parse_as(c.Replace, b"a UID REPLACE * INBOX UTF8 (~{4+}\r\nab\xc3\xa9)")
    assert command.uid and command.number is None and command.message.utf8


@pytest.mark.parametrize(
    "line",
    [
        b"a REPLACE 1 Drafts",
        b"a REPLACE 0 Drafts {1+}\r\nx",
        b"a REPLACE 4294967296 Drafts {1+}\r\nx",
        b"a REPLACE 1:2 Drafts {1+}\r\nx",
        b"a REPLACE $ Drafts {1+}\r\nx",
        b"a REPLACE Drafts {1+}\r\nx",
        b"a REPLACE 1 Drafts {1+}\r\nx {1+}\r\ny",  # one message only, unlike MULTIAPPEND
        b"a REPLACE 1 Drafts (\\Recent) {1+}\r\nx",
        b'a REPLACE 1 Drafts "not a literal"',
        b"a UID REPLACE 1 Drafts CATENATE ()",
    ],
)
def test_replace_errors(line: bytes) -> None:
    bad(line)


@pytest.mark.parametrize(("head", "uid", "found"), [
    (b"a REPLACE 4 Drafts ", False, (4, "Drafts")),
    (b'a REPLACE * "Old Drafts" (\\Seen) ', False, (None, "Old Drafts")),
    (b"a UID REPLACE 77 Drafts ", True, (77, "Drafts")),
    (b"a uid replace 77 Drafts UTF8 (", True, (77, "Drafts")),
    (b"a UID REPLACE 77 Drafts ", False, None),
    (b"a REPLACE 4 Drafts ", True, None),
    (b"a REPLACE 4 ", False, None),  # the name is the literal
    (b"a REPLACE 0 Drafts ", False, None),
    (b"a APPEND Drafts ", False, None),
])
def test_replace_target_reads_what_comes_before_the_message(head: bytes, uid: bool,
                                                            found: tuple[int | None, str] | None) -> None:
    result = replace_target(head, uid=uid)
    assert (None if result is None else (result[0], result[1].name)) == found


def test_command_names_as_the_framer_reports_them() -> None:
    assert is_command_name(b"APPEND") and is_command_name(b"REPLACE") and is_command_name(b"UID")
    assert is_command_name(b"UID REPLACE") and is_command_name(b"UID FETCH")
    assert not is_command_name(b"UID APPEND") and not is_command_name(b"UID BOGUS")
    assert not is_command_name(b"BOGUS")


# -- selected state -----------------------------------------------------------------------------


def test_expunge_copy_move() -> None:
    assert parse(b"A202 EXPUNGE") == c.Expunge(b"A202", False, None)
    assert parse(b"A003 UID EXPUNGE 3000:3002") == c.Expunge(
        b"A003", True, parse_sequence_set(b"3000:3002")
    )
    bad(b"a UID EXPUNGE")
    assert parse(b"A003 COPY 2:4 MEETING") == c.Copy(
        b"A003", False, parse_sequence_set(b"2:4"), mbox("MEETING")
    )
    assert parse(b"a UID MOVE 42:69 foo") == c.Move(b"a", True, parse_sequence_set(b"42:69"), mbox("foo"))
    assert parse_as(c.Move, b"a MOVE $ Trash").seqset.saved is True
    bad(b"a COPY 2:4")
    bad(b"a COPY x MEETING")
    bad(b"a COPY 0 MEETING")


# -- FETCH --------------------------------------------------------------------------------------


def att(
    name: str, section: c.Section | None = None, partial: tuple[int, int] | None = None, peek: bool = False
) -> c.FetchAtt:
    return c.FetchAtt(name, section, partial, peek)


def test_fetch_rfc_examples() -> None:
    command = parse_as(c.Fetch, b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
    assert command.seqset == parse_sequence_set(b"2:4")
    assert command.items == (
        att("FLAGS"), att("BODY", c.Section((), "HEADER.FIELDS", ("DATE", "FROM")))
    )
    assert command.uid is False
    assert parse_as(c.Fetch, b"a FETCH 1 ALL").items == tuple(
        att(name) for name in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")
    )
    assert parse_as(c.Fetch, b"a FETCH 1 fast").items == tuple(
        att(name) for name in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")
    )
    assert parse_as(c.Fetch, b"a FETCH 1 FULL").items[-1] == att("BODY")
    assert parse_as(c.Fetch, b"a FETCH 1:* body[]").items == (att("BODY", c.Section()),)
    assert parse_as(c.Fetch, b"A999 UID FETCH 4827313:4828442 FLAGS").items == (att("FLAGS"),)


def test_fetch_all_items() -> None:
    command = parse_as(
        c.Fetch,
        b"a FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE RFC822 RFC822.HEADER RFC822.TEXT ENVELOPE BODY"
        b" BODYSTRUCTURE UID MODSEQ BODY.PEEK[1.2.3.HEADER]<0.2048> BODY[1.MIME] BODY[2.TEXT]"
        b" BODY[HEADER.FIELDS.NOT (Received)] BINARY[1.2]<10.20> BINARY.PEEK[] BINARY.SIZE[3])"
    )
    names = [item.name for item in command.items]
    assert names[:11] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "RFC822", "RFC822.HEADER",
                          "RFC822.TEXT", "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ"]
    assert command.items[11] == att("BODY", c.Section((1, 2, 3), "HEADER"), (0, 2048), True)
    assert command.items[12] == att("BODY", c.Section((1,), "MIME"))
    assert command.items[13] == att("BODY", c.Section((2,), "TEXT"))
    assert command.items[14] == att("BODY", c.Section((), "HEADER.FIELDS.NOT", ("Received",)))
    assert command.items[15] == att("BINARY", c.Section((1, 2)), (10, 20))
    assert command.items[16] == att("BINARY", c.Section(), None, True)
    assert command.items[17] == att("BINARY.SIZE", c.Section((3,)))


def test_fetch_response_labels() -> None:
    command = parse_as(
        c.Fetch,
        b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (From to {3}\r\nX-Y)]<0.100> BODY[1.2.MIME] BINARY.PEEK[1]<5.6>"
        b" BINARY.SIZE[2] RFC822.SIZE BODY[] BODY)"
    )
    labels = [item.response_label() for item in command.items]
    assert labels == [
        b"BODY[HEADER.FIELDS (From to X-Y)]<0>",
        b"BODY[1.2.MIME]",
        b"BINARY[1]<5>",
        b"BINARY.SIZE[2]",
        b"RFC822.SIZE",
        b"BODY[]",
        b"BODY",
    ]


def test_fetch_sets_seen() -> None:
    items = parse_as(
        c.Fetch, b"a FETCH 1 (BODY[] BODY.PEEK[1] RFC822 RFC822.TEXT RFC822.HEADER BINARY[1] FLAGS)"
    ).items
    assert [item.sets_seen for item in items] == [True, False, True, True, False, True, False]


def test_fetch_duplicates_merge_and_non_peek_wins() -> None:
    items = parse_as(c.Fetch, b"a FETCH 1 (BODY.PEEK[] FLAGS BODY[] flags)").items
    assert items == (att("BODY", c.Section()), att("FLAGS"))


def test_fetch_modifiers() -> None:
    command = parse_as(c.Fetch, b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert (command.uid, command.changedsince, command.vanished) == (True, 12345, True)
    command = parse_as(c.Fetch, b"s100 FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 12345)")
    assert (command.changedsince, command.vanished) == (12345, False)
    assert parse_as(c.Fetch, b"a FETCH 1 FAST (CHANGEDSINCE 1)").changedsince == 1


def test_fetch_preview_and_its_lazy_modifier() -> None:
    """RFC 8970: PREVIEW [SP "(" "LAZY" ")"], in a list or alone; a list after a single PREVIEW
    that is not its modifiers is the command's own (CHANGEDSINCE)."""
    assert parse_as(c.Fetch, b"a FETCH 1 PREVIEW").items == (att("PREVIEW"),)
    assert parse_as(c.Fetch, b"a FETCH 1 preview (lazy)").items == (att("PREVIEW"),)
    assert parse_as(c.Fetch, b"a FETCH 1 (FLAGS PREVIEW (LAZY) UID)").items == (att("FLAGS"), att("PREVIEW"), att("UID"))
    assert parse_as(c.Fetch, b"a FETCH 1 (PREVIEW PREVIEW (LAZY))").items == (att("PREVIEW"),)
    command = parse_as(c.Fetch, b"a UID FETCH 1 PREVIEW (CHANGEDSINCE 5)")
    assert (command.items, command.changedsince) == ((att("PREVIEW"),), 5)
    assert parse_as(c.Fetch, b"a UID FETCH 1 PREVIEW (LAZY) (CHANGEDSINCE 5)").changedsince == 5


@pytest.mark.parametrize(
    "line",
    [
        b"a FETCH 1",
        b"a FETCH 1 ()",
        b"a FETCH 1 (PREVIEW (FUZZY))",
        b"a FETCH 1 (PREVIEW ())",
        b"a FETCH 1 PREVIEW (LAZY",
        b"a FETCH 1 PREVIEW[]",
        b"a FETCH 1 (ALL)",
        b"a FETCH 1 BOGUS",
        b"a FETCH 1 BODY[MIME]",
        b"a FETCH 1 BODY[1.]",
        b"a FETCH 1 BODY[0]",
        b"a FETCH 1 BODY[HEADER.FIELDS]",
        b"a FETCH 1 BODY[HEADER.FIELDS ()]",
        b"a FETCH 1 BODY[HEADER.FIELDS (a:b)]",
        b"a FETCH 1 BODY[TEXT.FOO]",
        b"a FETCH 1 BODY[]<0.0>",
        b"a FETCH 1 BODY[]<0>",
        b"a FETCH 1 BODY[",
        b"a FETCH 1 BODY.PEEK",
        b"a FETCH 1 BINARY[HEADER]",
        b"a FETCH 1 BINARY.SIZE[1]<0.1>",
        b"a FETCH 1 FLAGS[]",
        b"a FETCH 1 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
        b"a UID FETCH 1 (FLAGS) (VANISHED)",
        b"a UID FETCH 1 (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)",
        b"a UID FETCH 1 (FLAGS) (BOGUS)",
        b"a FETCH 1:2:3 FLAGS",
        b"a FETCH 4294967296 FLAGS",
    ],
)
def test_fetch_errors(line: bytes) -> None:
    bad(line)


@pytest.mark.parametrize(("line", "text"), [
    (b"a FETCH 1 BINARY[HEADER]", "BINARY sections are part numbers only"),
    (b"a FETCH 1 BINARY.PEEK[1.TEXT]", "BINARY sections are part numbers only"),
    (b"a FETCH 1 BINARY.SIZE[2.MIME]", "BINARY sections are part numbers only"),
    (b"a FETCH 1 BINARY[0]", "Section part must not be zero"),
    (b"a FETCH 1 BINARY[1]<5>", "Expected '.' in partial"),
    (b"a FETCH 1 BINARY.SIZE[1]<0.1>", "BINARY.SIZE takes no partial"),
    (b"a FETCH 1 (BINARY.SIZE[]<0.10> FLAGS)", "BINARY.SIZE takes no partial"),
    (b"a FETCH 1 BINARY.SIZE.PEEK[1]", "Unexpected section after BINARY.SIZE.PEEK"),
])
def test_binary_grammar_errors_say_what_is_wrong(line: bytes, text: str) -> None:
    """RFC 3516 section 6: section-binary is "[" [section-part] "]", part numbers only, and
    BINARY.SIZE takes no partial; each invalid form is a BAD that names its fault."""
    assert bad(line).text == text


# -- STORE --------------------------------------------------------------------------------------


def test_store_forms() -> None:
    assert parse(b"A003 STORE 2:4 +FLAGS (\\Deleted)") == c.Store(
        b"A003", False, parse_sequence_set(b"2:4"), "+", False, ("\\Deleted",)
    )
    command = parse_as(c.Store, b"a UID STORE 1 flags.silent \\seen \\FLAGGED $Label1 $label1")
    assert (command.uid, command.mode, command.silent, command.flags) == (
        True, "", True, ("\\Seen", "\\Flagged", "$Label1")
    )
    assert parse_as(c.Store, b"a STORE 1 -FLAGS ()").flags == ()
    command = parse_as(c.Store, b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)")
    assert (command.unchangedsince, command.mode, command.silent) == (320162338, "+", True)
    assert parse_as(c.Store, b"a STORE 1 (UNCHANGEDSINCE 0) FLAGS (x)").unchangedsince == 0


@pytest.mark.parametrize(
    "line",
    [
        b"a STORE 1 +FLAGS (\\Recent)",
        b"a STORE 1 +FLAGS \\*",
        b"a STORE 1 +FLAGS (\\Unknown)",
        b"a STORE 1 +FLAGS (a]b)",
        b"a STORE 1 FLAG (x)",
        b"a STORE 1 *FLAGS (x)",
        b"a STORE 1 +FLAGS",
        b"a STORE 1 +FLAGS (x",
        b"a STORE 1 (CHANGEDSINCE 5) +FLAGS (x)",
        b"a STORE 1 (UNCHANGEDSINCE 5 +FLAGS (x)",
        b'a STORE 1 +FLAGS ("quoted")',
    ],
)
def test_store_errors(line: bytes) -> None:
    bad(line)


# -- SEARCH -------------------------------------------------------------------------------------


def test_search_rfc3501_examples() -> None:
    command = parse(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"')
    assert command == c.Search(
        b"A282", False, None,
        c.SearchAnd((
            c.SearchFlag("\\Flagged", True),
            c.SearchDate("INTERNAL", "SINCE", datetime.date(1994, 2, 1)),
            c.SearchNot(c.SearchHeader("From", "Smith")),
        )),
    )
    assert parse_as(c.Search, b'A283 SEARCH TEXT "string not in mailbox"').criteria == c.SearchText(
        "TEXT", "string not in mailbox"
    )
    command = parse_as(
        c.Search, b"A284 SEARCH CHARSET UTF-8 TEXT {12}\r\n\xd0\xb0\xd0\xb1\xd0\xb2\xd0\xb3\xd0\xb4\xd0\xb5"
    )
    assert command.charset == "UTF-8"
    assert command.criteria == c.SearchText("TEXT", "абвгде")


def test_search_every_key() -> None:
    command = parse_as(
        c.Search,
        b"a SEARCH ALL ANSWERED BCC b BEFORE 1-Jan-2000 BODY x CC c DELETED DRAFT FLAGGED FROM f"
        b' HEADER Message-ID <id@host> KEYWORD $Junk LARGER 1000 NEW NOT SEEN OLD ON "31-Dec-1999"'
        b" OR SEEN UNSEEN RECENT SEEN SENTBEFORE 1-Jan-2000 SENTON 1-Jan-2000 SENTSINCE 1-Jan-2000"
        b" SINCE 1-jan-2000 SMALLER 5 SUBJECT s TEXT t TO x UID 1:5 UNANSWERED UNDELETED UNDRAFT"
        b" UNFLAGGED UNKEYWORD $Junk UNSEEN 1,3:* (SEEN DELETED) MODSEQ 5 OLDER 60 YOUNGER 30"
        b" SAVEDBEFORE 1-Jan-2020 SAVEDON 1-Jan-2020 SAVEDSINCE 1-Jan-2020 $"
    )
    assert isinstance(command.criteria, c.SearchAnd)
    keys = command.criteria.keys
    day = datetime.date(2000, 1, 1)
    assert keys[:6] == (
        c.SearchAll(), c.SearchFlag("\\Answered", True), c.SearchHeader("Bcc", "b"),
        c.SearchDate("INTERNAL", "BEFORE", day), c.SearchText("BODY", "x"),
        c.SearchHeader("Cc", "c"),
    )
    assert c.SearchHeader("Message-ID", "<id@host>", every_occurrence=True) in keys
    assert c.SearchFlag("$Junk", True) in keys and c.SearchFlag("$Junk", False) in keys
    assert c.SearchSize(True, 1000) in keys and c.SearchSize(False, 5) in keys
    assert c.SearchAnd((c.SearchRecent(), c.SearchFlag("\\Seen", False))) in keys  # NEW
    assert c.SearchNot(c.SearchRecent()) in keys  # OLD
    assert c.SearchOr((c.SearchFlag("\\Seen", True), c.SearchFlag("\\Seen", False))) in keys
    assert c.SearchDate("INTERNAL", "ON", datetime.date(1999, 12, 31)) in keys
    assert c.SearchDate("SENT", "SINCE", day) in keys
    assert c.SearchDate("SAVED", "ON", datetime.date(2020, 1, 1)) in keys
    assert c.SearchSequence(parse_sequence_set(b"1:5"), uid=True) in keys
    assert c.SearchSequence(parse_sequence_set(b"1,3:*")) in keys
    assert c.SearchAnd((c.SearchFlag("\\Seen", True), c.SearchFlag("\\Deleted", True))) in keys
    assert c.SearchModSeq(5) in keys
    assert c.SearchAge(True, 60) in keys and c.SearchAge(False, 30) in keys
    assert keys[-1] == c.SearchSequence(c.SequenceSet((), saved=True))
    assert c.SearchRecent() in keys


def test_search_or_chains_flatten_and_not_not_cancels() -> None:
    criteria = parse_as(c.Search, b"a SEARCH OR OR FROM a TO b OR CC c SUBJECT d").criteria
    assert criteria == c.SearchOr((
        c.SearchHeader("From", "a"), c.SearchHeader("To", "b"),
        c.SearchHeader("Cc", "c"), c.SearchHeader("Subject", "d"),
    ))
    assert parse_as(c.Search, b"a SEARCH NOT NOT SEEN").criteria == c.SearchFlag("\\Seen", True)
    assert parse_as(c.Search, b"a SEARCH NOT NOT NOT SEEN").criteria == c.SearchNot(
        c.SearchFlag("\\Seen", True)
    )
    criteria = parse_as(c.Search, b"a SEARCH OR (SEEN DELETED) NOT (OR DRAFT FLAGGED)").criteria
    assert criteria == c.SearchOr((
        c.SearchAnd((c.SearchFlag("\\Seen", True), c.SearchFlag("\\Deleted", True))),
        c.SearchNot(c.SearchOr((c.SearchFlag("\\Draft", True), c.SearchFlag("\\Flagged", True)))),
    ))
    assert parse_as(c.Search, b"a SEARCH ((SEEN))").criteria == c.SearchFlag("\\Seen", True)


def test_long_or_chain_is_not_nesting() -> None:
    keys = b" ".join(b"UID %d" % number for number in range(1, 1002))
    criteria = parse_as(c.Search, b"a SEARCH " + b"OR " * 1000 + keys).criteria
    assert isinstance(criteria, c.SearchOr) and len(criteria.keys) == 1001
    right = b"".join(b"OR UID %d " % number for number in range(1, 1001)) + b"UID 1001"
    criteria = parse_as(c.Search, b"a SEARCH " + right).criteria
    assert isinstance(criteria, c.SearchOr) and len(criteria.keys) == 1001


def test_search_nesting_limit_is_a_parse_error() -> None:
    assert "nested" in bad(b"a SEARCH " + b"NOT (" * 20 + b"SEEN" + b")" * 20).text
    bad(b"a SEARCH " + b"(SEEN " * 20 + b"SEEN" + b")" * 20)  # groups of two keys nest for real
    bad(b"a SEARCH " + b"(" * 100_000 + b"SEEN" + b")" * 100_000)  # the parser's own stack is bounded
    parse(b"a SEARCH " + b"NOT (" * 10 + b"SEEN" + b")" * 10)
    parse(b"a SEARCH " + b"NOT (" * 20 + b"SEEN" + b")" * 20, max_nesting=32)


def test_thunderbirds_any_of_search_folds_into_one_or() -> None:
    """Thunderbird writes "match any of N" as (OR (OR (OR a b) c) d): N-1 levels as written,
    one OR once folded; as Dovecot, it is answered at any N (diff63: 9 terms got BAD)."""
    terms = [b'HEADER SUBJECT "t%d"' % number for number in range(40)]
    tree = terms[0]
    for term in terms[1:]:
        tree = b"(OR " + tree + b" " + term + b")"
    criteria = parse_as(c.Search, b"a UID SEARCH UNDELETED " + tree).criteria
    assert isinstance(criteria, c.SearchAnd) and len(criteria.keys) == 2
    folded = criteria.keys[1]
    assert isinstance(folded, c.SearchOr) and len(folded.keys) == 40
    assert all(not isinstance(key, c.SearchOr) for key in folded.keys)
    # And groups of one key, however many parentheses: one level.
    assert parse_as(c.Search, b"a SEARCH " + b"(" * 100 + b"SEEN" + b")" * 100).criteria == \
        parse_as(c.Search, b"a SEARCH SEEN").criteria


def test_search_return_options() -> None:
    assert parse_as(c.Search, b"A282 SEARCH RETURN (MIN COUNT) FLAGGED").return_opts == ("MIN", "COUNT")
    assert parse_as(c.Search, b"A283 SEARCH RETURN () FLAGGED").return_opts == ("ALL",)
    assert parse_as(c.Search, b"A284 SEARCH RETURN (SAVE) DELETED").return_opts == ("SAVE",)
    assert parse_as(c.Search, b"a UID SEARCH RETURN (all max) CHARSET US-ASCII UID $").return_opts == (
        "ALL", "MAX"
    )
    assert parse_as(c.Search, b"a SEARCH SEEN").return_opts is None
    bad(b"a SEARCH RETURN (PARTIAL) SEEN")
    bad(b"a SEARCH RETURN SEEN")


def test_partial_ranges() -> None:
    """RFC 9394 section 4: partial-range-first / partial-range-last, in SEARCH and SORT RETURN
    options and as a FETCH modifier; kept as sent (the ESEARCH answer repeats it)."""
    search = parse_as(c.Search, b"A01 UID SEARCH RETURN (PARTIAL 1:500) UNDELETED")
    assert search.return_opts == ("PARTIAL",) and search.partial == c.PartialRange(1, 500)
    search = parse_as(c.Search, b"A04 UID SEARCH RETURN (PARTIAL -1:-100) UNDELETED UNKEYWORD $Junk")
    assert search.partial == c.PartialRange(-1, -100) and bytes(search.partial) == b"-1:-100"
    search = parse_as(c.Search, b"a SEARCH RETURN (min partial 500:400 count save) ALL")
    assert search.return_opts == ("MIN", "PARTIAL", "COUNT", "SAVE")
    assert search.partial == c.PartialRange(500, 400)
    assert parse_as(c.Search, b"a SEARCH SEEN").partial is None
    assert parse_as(c.Search, b"a SEARCH RETURN (PARTIAL 1:4294967295) SEEN").partial == c.PartialRange(1, 4294967295)
    sort = parse_as(c.Sort, b"a UID SORT RETURN (PARTIAL -5:-1 COUNT) (DATE) UTF-8 ALL")
    assert sort.return_opts == ("PARTIAL", "COUNT") and sort.partial == c.PartialRange(-5, -1)
    fetch = parse_as(c.Fetch, b"10 UID FETCH 25900:26600 (UID FLAGS) (PARTIAL -1:-3)")
    assert fetch.partial == c.PartialRange(-1, -3) and fetch.changedsince is None
    fetch = parse_as(c.Fetch, b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5 PARTIAL 1:30 VANISHED)")
    assert (fetch.partial, fetch.changedsince, fetch.vanished) == (c.PartialRange(1, 30), 5, True)
    assert parse_as(c.Fetch, b"a FETCH 1:* FLAGS (PARTIAL 2:3)").partial == c.PartialRange(2, 3)
    assert parse_as(c.Fetch, b"a FETCH 1:* FLAGS").partial is None
    assert parse_as(c.Search, b"a SEARCH RETURN (MIN MIN) ALL").return_opts == ("MIN",)  # not ALL: kept
    for data, text in [
        (b"a SEARCH RETURN (PARTIAL 0:5) ALL", "must not be zero"),
        (b"a SEARCH RETURN (PARTIAL -0:-5) ALL", "must not be zero"),
        (b"a SEARCH RETURN (PARTIAL 1:*) ALL", "Expected PARTIAL range"),
        (b"a SEARCH RETURN (PARTIAL -1:5) ALL", "mixes positive and negative"),
        (b"a SEARCH RETURN (PARTIAL 1:-5) ALL", "mixes positive and negative"),
        (b"a SEARCH RETURN (PARTIAL 5) ALL", "Expected PARTIAL range"),
        (b'a SEARCH RETURN (PARTIAL "1:5") ALL', "Expected PARTIAL range"),
        (b"a SEARCH RETURN (PARTIAL 1:4294967296) ALL", "too large"),
        (b"a SEARCH RETURN (PARTIAL 1:99999999999999999999999) ALL", "too large"),
        (b"a SEARCH RETURN (PARTIAL 1:5 ALL) ALL", "PARTIAL and ALL"),
        (b"a SEARCH RETURN (ALL PARTIAL 1:5) ALL", "PARTIAL and ALL"),
        (b"a SEARCH RETURN (PARTIAL 1:5 PARTIAL 6:9) ALL", "twice"),
        (b"a SEARCH RETURN (PARTIAL 1:5,7) ALL", ""),
        (b"a SORT RETURN (PARTIAL 0:1) (DATE) UTF-8 ALL", "must not be zero"),
        (b"a UID FETCH 1:* FLAGS (PARTIAL)", "Expected PARTIAL range"),
        (b"a UID FETCH 1:* FLAGS (PARTIAL 1:5 PARTIAL 1:2)", "Duplicate PARTIAL"),
        (b"a UID FETCH 1:* FLAGS (PARTIAL -1:0)", "must not be zero"),
        # nz-number = digit-nz *DIGIT (RFC 9394 section 4), as in a sequence set
        (b"a SEARCH RETURN (PARTIAL 01:5) ALL", "must not start with 0"),
        (b"a UID FETCH 1:* FLAGS (PARTIAL -1:-007)", "must not start with 0"),
        # RFC 9394 section 3.1: one PARTIAL, one ALL, or neither
        (b"a SEARCH RETURN (ALL ALL) ALL", "ALL given twice"),
        (b"a SEARCH RETURN (ALL MIN ALL) ALL", "ALL given twice"),
        (b"a SORT RETURN (ALL ALL) (DATE) UTF-8 ALL", "ALL given twice"),
    ]:
        assert text in bad(data).text, data


def test_search_modseq_with_entry() -> None:
    criteria = parse_as(c.Search, b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338').criteria
    assert criteria == c.SearchModSeq(620162338, "/flags/\\draft", "all")
    bad(b'a SEARCH MODSEQ "/foo" all 5')
    bad(b'a SEARCH MODSEQ "/flags/\\\\draft" nobody 5')


def test_search_object_ids() -> None:
    """RFC 8474 section 6: EMAILID / THREADID objectid, kept as sent (ids are case-sensitive);
    a quoted id is taken too, one outside the objectid grammar is BAD."""
    criteria = parse_as(c.Search, b"a SEARCH emailid Mab_1-F threadid Tx").criteria
    assert criteria == c.SearchAnd((c.SearchObjectId("EMAILID", "Mab_1-F"), c.SearchObjectId("THREADID", "Tx")))
    assert parse_as(c.Search, b'a SEARCH EMAILID "M0"').criteria == c.SearchObjectId("EMAILID", "M0")
    assert parse_as(c.Search, b"a SEARCH EMAILID " + b"x" * 255).criteria == c.SearchObjectId("EMAILID", "x" * 255)
    for line in (b"a SEARCH EMAILID", b'a SEARCH EMAILID ""', b"a SEARCH THREADID T.1",
                 b"a SEARCH EMAILID " + b"x" * 256, b"a SEARCH THREADID {2}\r\n\xc3\xa9"):
        bad(line)


def test_fetch_object_ids() -> None:
    assert parse_as(c.Fetch, b"a FETCH 1 (emailid THREADID)").items == (att("EMAILID"), att("THREADID"))


def test_search_charset() -> None:
    error = bad(b"A285 SEARCH CHARSET WHATEVER TEXT x")
    assert error.code == "BADCHARSET"
    assert error.response_code == b"BADCHARSET (UTF-8 US-ASCII)"
    assert bad(b"a SORT (DATE) KOI8-R ALL").code == "BADCHARSET"
    assert bad(b"a NOOP x").response_code is None
    assert parse_as(c.Search, b'a SEARCH CHARSET "us-ascii" ALL').charset == "US-ASCII"
    bad(b"a SEARCH CHARSET UTF-8 TEXT {2}\r\n\xc3\x28")


@pytest.mark.parametrize(
    "line",
    [
        b"a SEARCH",
        b"a SEARCH ",
        b"a SEARCH BOGUS",
        b"a SEARCH FROM",
        b"a SEARCH OR SEEN",
        b"a SEARCH NOT",
        b"a SEARCH (SEEN",
        b"a SEARCH SEEN)",
        b"a SEARCH ()",
        b"a SEARCH SEEN  UNSEEN",
        b"a SEARCH SINCE 31-Feb-2020",
        b"a SEARCH SINCE 1-Foo-2020",
        b"a SEARCH SINCE 2020-01-01",
        b'a SEARCH SINCE "1-Jan-2020',
        b"a SEARCH LARGER x",
        b"a SEARCH LARGER 99999999999999999999",
        b"a SEARCH OLDER 0",
        b"a SEARCH UID x",
        b"a SEARCH 0",
        b"a SEARCH $,1",
        b"a SEARCH HEADER a:b x",
        b"a SEARCH KEYWORD \\Bogus",
        b"a SEARCH UNDELETED ~{1}\r\nx",
    ],
)
def test_search_errors(line: bytes) -> None:
    bad(line)


def test_search_keyword_recent_maps_to_recent_key() -> None:
    assert parse_as(c.Search, b"a SEARCH KEYWORD \\Recent").criteria == c.SearchRecent()
    assert parse_as(c.Search, b"a SEARCH KEYWORD \\seen").criteria == c.SearchFlag("\\Seen", True)


# -- SORT / THREAD ----------------------------------------------------------------------------


def test_sort() -> None:
    command = parse_as(c.Sort, b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994")
    assert command == c.Sort(
        b"A282", False, (c.SortCriterion("SUBJECT"),), "UTF-8",
        c.SearchDate("INTERNAL", "SINCE", datetime.date(1994, 2, 1)),
    )
    command = parse_as(c.Sort, b"A283 UID SORT (REVERSE DATE displayfrom ARRIVAL) us-ascii ALL")
    assert command.uid is True
    assert command.criteria == (
        c.SortCriterion("DATE", True), c.SortCriterion("DISPLAYFROM"), c.SortCriterion("ARRIVAL")
    )
    command = parse_as(c.Sort, b"a SORT RETURN (MIN MAX COUNT) (DATE) UTF-8 UNDELETED")
    assert command.return_opts == ("MIN", "MAX", "COUNT")
    for line in (
        b"a SORT () UTF-8 ALL",
        b"a SORT (BOGUS) UTF-8 ALL",
        b"a SORT (REVERSE) UTF-8 ALL",
        b"a SORT (DATE) ALL",
        b"a SORT (DATE) KOI8-R ALL",
        b"a SORT (DATE)",
    ):
        bad(line)


def test_thread() -> None:
    command = parse_as(c.Thread, b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000")
    assert (command.algorithm, command.charset) == ("ORDEREDSUBJECT", "UTF-8")
    assert parse_as(c.Thread, b"A284 UID THREAD references US-ASCII ALL").algorithm == "REFERENCES"
    bad(b"a THREAD REFS UTF-8 ALL")
    bad(b"a THREAD REFERENCES ALL")


# -- misc extensions ----------------------------------------------------------------------------


def test_compress_and_quota() -> None:
    assert parse(b"t COMPRESS deflate") == c.Compress(b"t", "DEFLATE")
    bad(b"t COMPRESS")
    assert parse(b'G0001 GETQUOTA "!partition/sda4"') == c.GetQuota(b"G0001", "!partition/sda4")
    assert parse(b"A003 GETQUOTAROOT INBOX") == c.GetQuotaRoot(b"A003", mbox("INBOX"))
    assert parse(b'S0000 SETQUOTA "#user/alice" (storage 510)') == c.SetQuota(
        b"S0000", "#user/alice", (("STORAGE", 510),)
    )
    assert parse_as(c.SetQuota, b'a SETQUOTA "" ()').limits == ()
    bad(b'a SETQUOTA "" (STORAGE)')
    bad(b'a SETQUOTA "" STORAGE 5')


def test_metadata_rfc5464_examples() -> None:
    assert parse(b'a GETMETADATA "" /shared/comment') == c.GetMetadata(b"a", mbox(""), ("/shared/comment",))
    metadata = parse_as(c.GetMetadata, b"a GETMETADATA INBOX (/shared/comment /private/comment)")
    assert metadata == c.GetMetadata(b"a", mbox("INBOX"), ("/shared/comment", "/private/comment"))
    metadata = parse_as(c.GetMetadata, b"a GETMETADATA (MAXSIZE 1024) INBOX /shared/comment")
    assert (metadata.maxsize, metadata.depth) == (1024, "0")
    metadata = parse_as(c.GetMetadata, b"a GETMETADATA (DEPTH 1) INBOX (/private/filters/values)")
    assert metadata.depth == "1"
    metadata = parse_as(c.GetMetadata, b'a GETMETADATA (DEPTH "infinity" MAXSIZE 5) "" /shared')
    assert metadata.depth == "infinity"
    comment = b"My new comment across\r\ntwo lines.\r\n"
    command = parse_as(
        c.SetMetadata, b"a SETMETADATA INBOX (/private/comment {%d}\r\n%s)" % (len(comment), comment)
    )
    assert command == c.SetMetadata(b"a", mbox("INBOX"), (("/private/comment", comment),))
    command = parse_as(c.SetMetadata, b"a SETMETADATA INBOX (/private/comment NIL /shared/x ~{1}\r\n\x00)")
    assert command.entries == (("/private/comment", None), ("/shared/x", b"\x00"))
    for line in (
        b"a GETMETADATA INBOX /comment",
        b"a GETMETADATA INBOX /private/*",
        b"a GETMETADATA INBOX /private//x",
        b"a GETMETADATA INBOX /private/x/",
        'a GETMETADATA INBOX "/private/\u212a"'.encode(),   # KELVIN SIGN, whose lower() is "k"
        'a SETMETADATA INBOX ("/private/\u212a" NIL)'.encode(),
        b"a GETMETADATA (DEPTH 2) INBOX /private/x",
        b"a GETMETADATA (MAXSIZE 1 MAXSIZE 2) INBOX /private/x",
        b"a GETMETADATA () INBOX /private/x",
        b"a SETMETADATA INBOX ()",
        b"a SETMETADATA INBOX (/private/x)",
    ):
        bad(line)


# -- limits -------------------------------------------------------------------------------------


def test_max_args() -> None:
    items = b" ".join([b"FLAGS"] * 50)
    parse(b"a FETCH 1 (" + items + b")", max_args=60)
    assert "Too many" in bad(b"a FETCH 1 (" + items + b")", max_args=10).text
    bad(b"a SEARCH " + b" ".join([b"SEEN"] * 50), max_args=10)
    tags = b" ".join(b'"t%d"' % number for number in range(50))
    assert len(parse_as(c.CancelUpdate, b"a CANCELUPDATE " + tags, max_args=60).tags) == 50
    assert "Too many" in bad(b"a CANCELUPDATE " + tags, max_args=10).text
    assert bad(b"a CANCELUPDATE " + tags, max_args=10).code is None   # BAD [CLIENTBUG]


def test_an_append_beyond_max_args_is_a_limit() -> None:
    """A MULTIAPPEND of more messages (or a message of more flags) than the argument budget is
    valid: its ParseError names LIMIT (the session answers NO [LIMIT]); the same budget in other
    commands names no code (BAD)."""
    messages = b"".join([b" {3+}\r\nabc"] * 12)
    assert len(parse_as(c.Append, b"a APPEND INBOX" + messages, max_args=13).messages) == 12
    error = bad(b"a APPEND INBOX" + messages, max_args=10)
    assert (error.text, error.code) == ("Too many arguments", "LIMIT")
    flags = b" ".join(b"k%d" % number for number in range(12))
    assert bad(b"a APPEND INBOX (" + flags + b") {3+}\r\nabc", max_args=10).code == "LIMIT"
    assert bad(b"a STORE 1 FLAGS (" + flags + b")", max_args=10).code is None


def test_max_ranges() -> None:
    parse(b"a FETCH " + b",".join(b"%d" % n for n in range(1, 101)) + b" FLAGS", max_ranges=100)
    bad(b"a FETCH " + b",".join(b"%d" % n for n in range(1, 102)) + b" FLAGS", max_ranges=100)


def test_frame_built_by_hand_with_trailing_literal_and_no_tag_match() -> None:
    frame_ = CommandFrame(b"a", (b"a LOGIN ", Literal(b"x"), b" y"))
    assert parse_command(frame_) == c.Login(b"a", b"x", b"y")
    with pytest.raises(ParseError):
        parse_command(CommandFrame(b"zz", (b"a NOOP",)))
    with pytest.raises(ParseError):
        parse_command(CommandFrame(None, (b"NOOP",)))


# -- sequence sets ------------------------------------------------------------------------------


def test_sequence_set_parsing() -> None:
    assert parse_sequence_set(b"1") == c.SequenceSet(((1, 1),))
    assert parse_sequence_set(b"2:4,*,7:*,9:3") == c.SequenceSet(
        ((2, 4), (None, None), (7, None), (9, 3))
    )
    assert parse_sequence_set(b"$") == c.SequenceSet((), saved=True)
    for text in (b"0", b"1:0", b"01", b"1::2", b"1:2:3", b"", b",", b"1,", b"$,1", b"4294967296",
                 b"x", b"*:*:*"):
        with pytest.raises(ValueError):
            parse_sequence_set(text)
    with pytest.raises(ValueError):
        parse_sequence_set(b"1:*", allow_star=False)
    with pytest.raises(ValueError):
        parse_sequence_set(b"1,2,3", max_ranges=2)


def test_sequence_set_resolve() -> None:
    seqset = parse_sequence_set(b"9:3,1,2,20:*,15")
    assert seqset.resolve(25) == [(1, 9), (15, 15), (20, 25)]
    assert seqset.resolve(12) == [(1, 9), (12, 12)]  # 20:* is 12:20, clipped to 12
    assert seqset.resolve(12, clip=False) == [(1, 9), (12, 20)]
    assert parse_sequence_set(b"559:*").resolve(500) == [(500, 500)]
    assert parse_sequence_set(b"*").resolve(0) == []
    assert parse_sequence_set(b"1:*").resolve(0) == []
    assert parse_sequence_set(b"5,6,7").resolve(10) == [(5, 7)]
    with pytest.raises(ValueError):
        c.SequenceSet((), saved=True).resolve(5)


def test_sequence_set_helpers() -> None:
    seqset = parse_sequence_set(b"9:3,20:*")
    assert seqset.contains(5, 30) and seqset.contains(25, 30) and not seqset.contains(15, 30)
    assert seqset.contains(20, 18)  # "20:*" with 18 messages is 18:20
    assert seqset.highest(30) == 30
    assert parse_sequence_set(b"1:5,8").highest(3) == 8
    assert seqset.uses_star() and not parse_sequence_set(b"1:5").uses_star()
    assert seqset.to_bytes() == b"9:3,20:*"
    assert c.SequenceSet((), saved=True).to_bytes() == b"$"
    resolved = c.ResolvedSet(parse_sequence_set(b"1:3,7,10:12").resolve(100))
    assert [n for n in range(15) if n in resolved] == [1, 2, 3, 7, 10, 11, 12]


def test_section_to_bytes() -> None:
    assert c.Section().to_bytes() == b""
    assert c.Section((1, 2)).to_bytes() == b"1.2"
    assert c.Section((1,), "MIME").to_bytes() == b"1.MIME"
    assert c.Section((), "HEADER.FIELDS", ("From", "X Y")).to_bytes() == b'HEADER.FIELDS (From "X Y")'


@pytest.mark.parametrize(("head", "utf8", "name"), [
    (b"a APPEND Sent ", False, "Sent"),
    (b'a APPEND "Sent Items" (\\Seen) "01-Jan-2020 00:00:00 +0000" ', False, "Sent Items"),
    (b"a append inbox UTF8 (", False, "INBOX"),
    (b"a APPEND Entw&APw-rfe ", False, "Entwürfe"),
    ('a APPEND "Entwürfe" '.encode(), True, "Entwürfe"),
    (b"a APPEND ", False, None),  # the name is the literal
    (b"a APPEND Sent", False, None),  # "Sent{5}": not well-formed
    (b"a APPEND &Jjo ", False, None),  # not modified UTF-7: the command answers NO [CANNOT]
    (b"a STORE Sent ", False, None),
    (b"* APPEND Sent ", False, None),
])
def test_append_destination_reads_the_mailbox_before_the_first_literal(head: bytes, utf8: bool,
                                                                       name: str | None) -> None:
    found = append_destination(head, utf8=utf8)
    assert (found.name if found else None) == name
