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
     ImapUrl("fred@example.org", "mail.example", "Sent", None, 3, 4, None, None)),
    (b"/Entw%C3%BCrfe/;UID=2", ImapUrl(None, None, "Entwürfe", None, None, 2, None, None)),
    # RFC 2192's modified UTF-7 is offered as a second reading
    (b"/Entw&APw-rfe/;UID=2", ImapUrl(None, None, "Entw&APw-rfe", "Entwürfe", None, 2, None, None)),
    (b"/A%26B/;UID=2", ImapUrl(None, None, "A&B", None, None, 2, None, None)),
    (b"/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(To%20Cc)",
     ImapUrl(None, None, "INBOX", None, None, 1, Section((), "HEADER.FIELDS", ("To", "Cc")), None)),
])
def test_parse(url: bytes, parsed: ImapUrl) -> None:
    assert parse(url) == parsed


@pytest.mark.parametrize("url", [
    b"", b"INBOX/;UID=1", b";UID=1", b"//host/INBOX/;UID=1", b"imap://host", b"imap://host/INBOX",
    b"http://host/INBOX/;UID=1", b"/INBOX", b"/;UID=1", b"/INBOX/;UID=0", b"/INBOX/;UID=x",
    b"/INBOX/;UID=4294967296", b"/INBOX;UIDVALIDITY=0/;UID=1", b"/INBOX/;UIDVALIDITY=1/;UID=1",
    b"/INBOX;UID=1", b"/INBOX/;UID=1/;UID=2", b"/INBOX/;UID=1/;SECTION=", b"/INBOX/;UID=1/;SECTION=MIME",
    b"/INBOX/;UID=1/;PARTIAL=1.0", b"/INBOX/;UID=1/;PARTIAL=-1", b"/INBOX/;UID=1/;PARTIAL=1/;SECTION=1",
    b"/INBOX/;UID=1;URLAUTH=anonymous:internal:00", b"/INBOX;EXPIRE=2024-01-01T00:00:00Z/;UID=1",
    b"/INBOX/;UID=1/;FOO=1", b"/INBOX?SUBJECT%20x", b"/INBOX/;UID=1#x", b"/IN BOX/;UID=1",
    b"/IN\xc3\xa9/;UID=1", b"/a%2g/;UID=1", b"/%00/;UID=1", b"/%FF/;UID=1", b"/" + b"a" * 9000 + b"/;UID=1",
])
def test_refused(url: bytes) -> None:
    with pytest.raises(UrlError):
        parse(url)
