"""IMAP URLs (RFC 5092) as CATENATE takes them: gximap.imap.imapurl."""

from __future__ import annotations

import pytest

from gximap.imap.commands import Section
from gximap.imap.imapurl import ImapUrl, UrlError, parse


@pytest.mark.parametrize(("url", "parsed"), [
    (b"/INBOX;UIDVALIDITY=785799047/;UID=113330/;SECTION=1.5.9",
     ImapUrl(None, None, "INBOX", None, 785799047, 113330, Section((1, 5, 9)), None)),
    (b"/inbox/;UID=5", ImapUrl(None, None, "INBOX", None, None, 5, None, None)),
    (b"/Drafts;uidvalidity=385759045/;uid=20/;section=HEADER",
     ImapUrl(None, None, "Drafts", None, 385759045, 20, Section((), "HEADER"), None)),
    (b"/a/b%20c/;UID=1/;SECTION=2.MIME/;PARTIAL=10.20",
     ImapUrl(None, None, "a/b c", None, None, 1, Section((2,), "MIME"), (10, 20))),
    (b"/x/;UID=1/;PARTIAL=7", ImapUrl(None, None, "x", None, None, 1, None, (7, None))),
    (b"imap://fred%40example.org;AUTH=*@Mail.Example:993/Sent;UIDVALIDITY=3/;UID=4",
     ImapUrl("fred@example.org", "mail.example", "Sent", None, 3, 4, None, None, 993)),
    # RFC 5092 section 1: an omitted port is 143, and so is an empty one (RFC 3986 section 3.2.3)
    (b"imap://fred@host:/x/;UID=4", ImapUrl("fred", "host", "x", None, None, 4, None, None, 143)),
    (b"imap://fred@host:000993/x/;UID=4", ImapUrl("fred", "host", "x", None, None, 4, None, None, 993)),
    (b"imap://fred@[2001:db8::1]:65535/x/;UID=4", ImapUrl("fred", "[2001:db8::1]", "x", None, None, 4, None, None, 65535)),
    (b"/Entw%C3%BCrfe/;UID=2", ImapUrl(None, None, "Entwürfe", None, None, 2, None, None)),
    # RFC 2192's modified UTF-7 is offered as a second reading
    (b"/Entw&APw-rfe/;UID=2", ImapUrl(None, None, "Entw&APw-rfe", "Entwürfe", None, 2, None, None)),
    (b"/A%26B/;UID=2", ImapUrl(None, None, "A&B", None, None, 2, None, None)),
    (b"/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(To%20Cc)",
     ImapUrl(None, None, "INBOX", None, None, 1, Section((), "HEADER.FIELDS", ("To", "Cc")), None)),
    # RFC 5092 section 7 (RFC 3986 section 5.2.4): dot-segments are removed; %2E is no dot
    (b"/Trash/../INBOX/;UID=1", ImapUrl(None, None, "INBOX", None, None, 1, None, None)),
    (b"/./a/./b/;UID=1/./;SECTION=1", ImapUrl(None, None, "a/b", None, None, 1, Section((1,)), None)),
    (b"/../INBOX/;UID=1", ImapUrl(None, None, "INBOX", None, None, 1, None, None)),
    (b"imap://fred@host/x/y/../../Sent/;UID=4", ImapUrl("fred", "host", "Sent", None, None, 4, None, None, 143)),
    (b"/a/%2E%2E/;UID=1", ImapUrl(None, None, "a/..", None, None, 1, None, None)),
    (b"/..;UIDVALIDITY=385759045/;UID=20", ImapUrl(None, None, "..", None, 385759045, 20, None, None)),
])
def test_parse(url: bytes, parsed: ImapUrl) -> None:
    assert parse(url) == parsed


@pytest.mark.parametrize(("url", "reason"), [
    (b"", "empty URL"),
    (b"INBOX/;UID=1", "relative URL"),
    (b";UID=1", "relative URL"),
    (b"//host/INBOX/;UID=1", "network-path URL without the imap scheme"),
    (b"imap://host", "URL names a server, not a message"),
    (b"imap://fred@host:65536/x/;UID=4", "invalid port in URL"),
    (b"imap://fred@host:1000000000000000000000143/x/;UID=4", "invalid port in URL"),
    (b"imap://fred@host:x/x/;UID=4", "invalid server in URL"),
    (b"imap://host/INBOX", "URL names no message (;UID= missing)"),
    (b"http://host/INBOX/;UID=1", "relative URL"),
    (b"/INBOX", "URL names no message (;UID= missing)"),
    (b"/;UID=1", "URL names no mailbox"),
    (b"/INBOX/;UID=0", "invalid ;UID= in URL"),
    (b"/INBOX/;UID=x", "invalid ;UID= in URL"),
    (b"/INBOX/;UID=4294967296", "invalid ;UID= in URL"),
    (b"/INBOX;UIDVALIDITY=0/;UID=1", "invalid ;UIDVALIDITY= in URL"),
    (b"/INBOX/;UIDVALIDITY=1/;UID=1", "unexpected ;UIDVALIDITY= in URL"),
    (b"/INBOX;UID=1", "unexpected ;UID= in URL"),
    (b"/INBOX/;UID=1/;UID=2", ";UID= given twice"),
    (b"/foo/;UID=20/..", "URL names no message (;UID= missing)"),  # RFC 5092 section 9.1: </foo>
    (b"/INBOX/;UID=1/;SECTION=", "invalid ;SECTION= in URL: Empty section"),
    (b"/INBOX/;UID=1/;SECTION=MIME", "invalid ;SECTION= in URL: MIME requires a part number"),
    (b"/INBOX/;UID=1/;PARTIAL=1.0", "invalid ;PARTIAL= in URL"),
    (b"/INBOX/;UID=1/;PARTIAL=-1", "invalid ;PARTIAL= in URL"),
    (b"/INBOX/;UID=1/;PARTIAL=1/;SECTION=1", "URL parameters out of order"),
    (b"/INBOX/;UID=1;URLAUTH=anonymous:internal:00", "URLAUTH is not supported"),
    (b"/INBOX;EXPIRE=2024-01-01T00:00:00Z/;UID=1", "URLAUTH is not supported"),
    (b"/INBOX/;UID=1/;FOO=1", "unexpected ;FOO= in URL"),
    (b"/INBOX?SUBJECT%20x", "URL names a search or fragment, not a message part"),
    (b"/INBOX/;UID=1#x", "URL names a search or fragment, not a message part"),
    (b"/IN BOX/;UID=1", "space or control character in URL"),
    (b"/IN\xc3\xa9/;UID=1", "8-bit octets in URL"),
    (b"/a%2g/;UID=1", "incomplete %-escape"),
    (b"/%00/;UID=1", "NUL in mailbox name"),
    (b"/%FF/;UID=1", "mailbox name in URL is neither UTF-8 nor modified UTF-7"),
    (b"/" + b"a" * 9000 + b"/;UID=1", "URL too long"),
])
def test_refused(url: bytes, reason: str) -> None:
    with pytest.raises(UrlError) as refused:
        parse(url)
    assert str(refused.value).startswith(reason)
