"""CATENATE conversations (RFC 4469): APPEND (and REPLACE) of a message put together from TEXT
literals and IMAP URLs (RFC 5092) naming the user's own messages and sections."""

from __future__ import annotations

import base64
import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import PASSWORD, Conversation

from gximap.auth.maps import NameMap

# A multipart message: part 1 text/plain, part 2 a message/rfc822 holding a plain message.
ORIGINAL = (
    b"From: bob@example.org\r\n"
    b"Subject: original\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n"
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"first part\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--XX--\r\n"
)
NEW_HEAD = b"From: alice@example.org\r\nSubject: forward\r\nContent-Type: multipart/mixed; boundary=YY\r\n\r\n--YY\r\n"
NEW_TAIL = b"\r\n--YY--\r\n"


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()  # Drafts is among the mailboxes a new account has
        yield conversation


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n%s" % (len(data), data)


def stored(conv: Conversation, mailbox: str, uid: int) -> bytes:
    (meta,) = conv.store.get_messages("alice", conv.folder(mailbox).id, [uid])
    return conv.store.read_body(meta.blob)


def appended(line: bytes, uidvalidity: int, uids: str) -> bool:
    return line.endswith(b"OK [APPENDUID %d %s] APPEND completed" % (uidvalidity, uids.encode()))


def test_text_parts_only(conv: Conversation) -> None:
    drafts = conv.folder("Drafts").uidvalidity
    lines = conv.send(b"a1 APPEND Drafts (\\Draft) CATENATE (TEXT " + literal(b"Subject: x\r\n\r\n")
                      + b" TEXT " + literal(b"hello\r\n") + b")\r\n")
    assert appended(lines[-1], drafts, "1"), lines
    assert stored(conv, "Drafts", 1) == b"Subject: x\r\n\r\nhello\r\n"
    (meta,) = conv.store.get_messages("alice", conv.folder("Drafts").id, [1])
    assert meta.flags == ("\\Draft",)


def test_synchronising_text_literals_are_asked_for(conv: Conversation) -> None:
    assert conv.send(b"a1 APPEND Drafts CATENATE (TEXT {14}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b"Subject: x\r\n\r\n TEXT {7}\r\n") == [b"+ Ready for literal data"]
    lines = conv.send(b"hello\r\n)\r\n")
    assert appended(lines[-1], conv.folder("Drafts").uidvalidity, "1"), lines
    assert stored(conv, "Drafts", 1) == b"Subject: x\r\n\r\nhello\r\n"


def test_url_whole_message_and_sections(conv: Conversation) -> None:
    uid = conv.add_message("INBOX", ORIGINAL)
    inbox = conv.folder("INBOX").uidvalidity
    lines = conv.send(
        b"a1 APPEND Drafts CATENATE (TEXT " + literal(NEW_HEAD)
        + b' URL "/INBOX;UIDVALIDITY=%d/;UID=%d/;SECTION=1.MIME"' % (inbox, uid)
        + b" URL /INBOX/;UID=%d/;SECTION=1" % uid
        + b" TEXT " + literal(NEW_TAIL) + b")\r\n")
    assert appended(lines[-1], conv.folder("Drafts").uidvalidity, "1"), lines
    assert stored(conv, "Drafts", 1) == (NEW_HEAD + b"Content-Type: text/plain\r\n\r\n" + b"first part"
                                         + NEW_TAIL)
    # The whole message, the header, a part's embedded message's header and text, header fields
    # (a %-escaped section-spec), and ;PARTIAL=.
    lines = conv.send(
        b"a2 APPEND Drafts (\\Seen) CATENATE (URL /INBOX/;UID=%d)" % uid
        + b" CATENATE (URL /INBOX/;UID=%d/;SECTION=HEADER)" % uid
        + b" CATENATE (URL /inbox/;UID=%d/;SECTION=2.HEADER URL /INBOX/;UID=%d/;SECTION=2.TEXT)" % (uid, uid)
        + b' CATENATE (URL "/INBOX/;UID=%d/;SECTION=HEADER.FIELDS%%20(Subject)")' % uid
        + b" CATENATE (URL /INBOX/;UID=%d/;SECTION=1/;PARTIAL=6.4)\r\n" % uid)
    assert appended(lines[-1], conv.folder("Drafts").uidvalidity, "2:6"), lines
    assert [stored(conv, "Drafts", number) for number in range(2, 7)] == [
        ORIGINAL,
        ORIGINAL[: ORIGINAL.index(b"\r\n\r\n") + 4],
        b"Subject: inner\r\n\r\ninner body",
        b"Subject: original\r\n\r\n",
        b"part",
    ]


def test_imap_url_of_this_user_and_server(conv: Conversation) -> None:
    uid = conv.add_message("INBOX", ORIGINAL)
    lines = conv.send(b'a1 APPEND Drafts CATENATE (URL "imap://alice;AUTH=*@LOCALHOST:143/INBOX/;UID=%d")\r\n' % uid)
    assert appended(lines[-1], conv.folder("Drafts").uidvalidity, "1"), lines
    assert stored(conv, "Drafts", 1) == ORIGINAL


def test_url_to_another_mailbox_with_an_international_name(conv: Conversation) -> None:
    conv.command('CREATE "&AMk-t&AOk-"')  # "Été" in modified UTF-7
    uid = conv.add_message("Été", ORIGINAL)
    # RFC 5092: the name in UTF-8, %-escaped (quoted: "%" is no ATOM-CHAR); RFC 2192's modified
    # UTF-7 is taken too.
    lines = conv.send(b'a1 APPEND Drafts CATENATE (URL "/%%C3%%89t%%C3%%A9/;UID=%d/;SECTION=1"'
                      b" URL /&AMk-t&AOk-/;UID=%d/;SECTION=1)\r\n" % (uid, uid))
    assert appended(lines[-1], conv.folder("Drafts").uidvalidity, "1"), lines
    assert stored(conv, "Drafts", 1) == b"first partfirst part"


def _catenated(conv: Conversation, url: bytes) -> bytes:
    """The tagged answer to an APPEND to Drafts of a TEXT part and ``url``."""
    return conv.send(b'a1 APPEND Drafts CATENATE (TEXT {2+}\r\nhi URL "%s")\r\n' % url)[-1]


def test_the_url_user_may_be_the_login_name_or_the_storage_name(tmp_path: Path) -> None:
    """With auth_map and storage_map dropping the domain, the session runs as the account
    "alice": the URLs a client makes of its own messages name the user it logged in as
    (RFC 5092 section 3.2), which got NO [BADURL] when only the storage name was taken. Either
    is taken, in any case; a name of another user is not."""
    with Conversation(tmp_path) as conv:
        maps = NameMap.from_directives("email_localpart_optional", "auto")
        conv.ctx.auth.auth_map = conv.ctx.auth.storage_map = maps
        conv.login("alice@example.org")
        assert conv.session.user == "alice"
        uid = conv.add_message("INBOX", ORIGINAL)
        for user in (b"alice%40example.org", b"ALICE%40Example.ORG", b"alice", b"Alice"):
            answer = _catenated(conv, b"imap://%s@localhost/INBOX/;UID=%d" % (user, uid))
            assert answer.startswith(b"a1 OK [APPENDUID "), (user, answer)
        for user in (b"bob%40example.org", b"alice%40other.example", b"bob"):
            url = b"imap://%s@localhost/INBOX/;UID=%d" % (user, uid)
            assert _catenated(conv, url) == b"a1 NO [BADURL %s] Cannot use the URL: URL names another user" % url


def test_impersonating_the_url_user_is_the_mailbox_not_the_actor(tmp_path: Path) -> None:
    """Logged in as bob!shared, the session shows shared's mailboxes: a URL's user may be
    "bob!shared" (what the client logged in as) or "shared" (whose mailboxes these are, as
    PLAIN's authorization identity would be); not "bob", whose URLs name bob's own mailboxes,
    another INBOX than the one this session would read."""
    with Conversation(tmp_path, users=("bob", "shared")) as conv:
        conv.store.grant_owner("shared", "bob")
        conv.login("bob!shared")
        assert (conv.session.user, conv.session.actor) == ("shared", "bob")
        uid = conv.add_message("INBOX", ORIGINAL, user="shared")
        for user in (b"bob!shared", b"bob%21shared", b"shared"):
            answer = _catenated(conv, b"imap://%s@localhost/INBOX/;UID=%d" % (user, uid))
            assert answer.startswith(b"a1 OK [APPENDUID "), (user, answer)
        url = b"imap://bob@localhost/INBOX/;UID=%d" % uid
        assert _catenated(conv, url) == b"a1 NO [BADURL %s] Cannot use the URL: URL names another user" % url


def test_the_url_user_after_sasl_plain_with_an_authorization_identity(tmp_path: Path) -> None:
    """AUTHENTICATE PLAIN with authzid "shared", authcid "bob": the authorization identity is
    the URL user (RFC 5092 section 6.1.2 matches "user+" against it), the authcid is not."""
    with Conversation(tmp_path, users=("bob", "shared")) as conv:
        conv.store.grant_owner("shared", "bob")
        conv.command("AUTHENTICATE PLAIN " + base64.b64encode(b"shared\x00bob\x00" + PASSWORD.encode()).decode())
        uid = conv.add_message("INBOX", ORIGINAL, user="shared")
        assert _catenated(conv, b"imap://shared@localhost/INBOX/;UID=%d" % uid).startswith(b"a1 OK [APPENDUID ")
        url = b"imap://bob@localhost/INBOX/;UID=%d" % uid
        assert _catenated(conv, url) == b"a1 NO [BADURL %s] Cannot use the URL: URL names another user" % url


def test_the_url_host_may_be_any_name_this_server_is_known_by(tmp_path: Path) -> None:
    """host_id, the machine's host name and the address the client connected to
    (Conversation's connection is to 192.0.2.254, an IPv4-mapped form of it too) are this
    server; another name or address, the loopback address included (which names the client's
    own machine when it is not this one), is another server (localhost: the next test)."""
    with Conversation(tmp_path, host_id="mail.example.org") as conv:
        conv.login()
        uid = conv.add_message("INBOX", ORIGINAL)
        for host in (b"mail.example.org", b"MAIL.Example.Org:143", socket.gethostname().encode(),
                     b"192.0.2.254", b"[::ffff:192.0.2.254]"):
            answer = _catenated(conv, b"imap://alice@%s/INBOX/;UID=%d" % (host, uid))
            assert answer.startswith(b"a1 OK [APPENDUID "), (host, answer)
        for host in (b"example.org", b"mail.example.org.evil.example", b"192.0.2.1", b"127.0.0.1", b"[::1]",
                     b"[192.0.2.254]"):
            url = b"imap://alice@%s/INBOX/;UID=%d" % (host, uid)
            echo = url.replace(b"]", b"%5D")  # url-resp-text has no "]" (RFC 4469 section 5)
            assert _catenated(conv, url) == b"a1 NO [BADURL %s] Cannot use the URL: URL names another server" % echo


@pytest.mark.parametrize("machine", ["mail", "localhost"])
def test_localhost_is_this_server_only_for_a_client_on_this_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine: str) -> None:
    """"localhost" names the client's own machine, as 127.0.0.1 does: this server only when the
    client reached it over loopback (or a UNIX socket). A remote client's imap://alice@localhost/
    URL names a message of the IMAP server on its own machine, which this one must not serve in
    its place (RFC 5092 section 3.2); so too on a machine (a container) whose host name is
    "localhost"."""
    monkeypatch.setattr(socket, "gethostname", lambda: machine)
    with Conversation(tmp_path, host_id="mail.example.org") as conv:
        conv.login()
        uid = conv.add_message("INBOX", ORIGINAL)
        url = b"imap://alice@localhost/INBOX/;UID=%d" % uid
        assert conv.session.conn.local_host == "192.0.2.254"  # a client elsewhere
        assert _catenated(conv, url) == b"a1 NO [BADURL %s] Cannot use the URL: URL names another server" % url
        for local in ("127.0.0.1", "::1", "/run/gximap/imap.sock"):
            conv.session.conn = dataclasses.replace(conv.session.conn, local_host=local)
            assert _catenated(conv, url).startswith(b"a1 OK [APPENDUID "), local


@pytest.mark.parametrize(("local_port", "listener_port", "taken", "refused"), [
    # 143 and 993 are one IMAP service (a URL cannot say implicit TLS: RFC 5092 has no imaps
    # scheme), and a URL without a port names 143 (RFC 5092 section 1): from a client on 993,
    # which often omits it, that is this server.
    (993, 993, (b"", b":", b":993", b":143", b":0993"), (b":1993", b":110", b":9930")),
    (143, 143, (b"", b":993", b":143"), (b":1143",)),
    # A port of its own names only itself: another IMAP server may listen on 143 of this host.
    (1993, 1993, (b":1993",), (b"", b":993", b":143", b":1143")),
    # Behind a proxy: the port the client reached (the PROXY header's), and the listener's own.
    (993, 10993, (b"", b":993", b":143", b":10993"), (b":10143",)),
    (2993, 10993, (b":2993", b":10993"), (b"", b":993")),
    # A UNIX socket has no port: the standard pair.
    (0, 0, (b"", b":143", b":993"), (b":1143",)),
])
def test_the_url_port_must_be_one_this_server_is_reached_by(
        tmp_path: Path, local_port: int, listener_port: int, taken: tuple[bytes, ...],
        refused: tuple[bytes, ...]) -> None:
    """An imap:// URL names a server by host and port: a port the client did not reach this
    server by names another server on the same host, whose message this one must not serve
    in its place (refused like a foreign host, NO [BADURL])."""
    with Conversation(tmp_path, host_id="mail.example.org") as conv:
        conv.login()
        conv.session.conn = dataclasses.replace(conv.session.conn, local_port=local_port,
                                                listener_port=listener_port)
        uid = conv.add_message("INBOX", ORIGINAL)
        for port in taken:
            answer = _catenated(conv, b"imap://alice@mail.example.org%s/INBOX/;UID=%d" % (port, uid))
            assert answer.startswith(b"a1 OK [APPENDUID "), (port, answer)
        for port in refused:
            url = b"imap://alice@mail.example.org%s/INBOX/;UID=%d" % (port, uid)
            assert _catenated(conv, url) == b"a1 NO [BADURL %s] Cannot use the URL: URL names another server" % url


@pytest.mark.parametrize(("url", "reason"), [
    (b"imap://alice@localhost:99999/INBOX/;UID={uid}", b"invalid port in URL"),
    (b"/INBOX;UIDVALIDITY=1/;UID={uid}", b"UIDVALIDITY does not match"),
    (b"/INBOX", b"URL names no message (;UID= missing)"),
    (b"/INBOX/;UID=999", b"no message with that UID"),
    (b"/Nowhere/;UID={uid}", b"no such mailbox"),
    (b"/No%20where/;UID={uid}", b"no such mailbox"),  # echoed as sent
    (b"/INBOX/;UID={uid}/;SECTION=7", b"no such section in the message"),
    (b"/INBOX/;UID={uid}/;SECTION=1.HEADER", b"no such section in the message"),
    (b"/INBOX/;UID={uid}/;SECTION=1.BOGUS", b"invalid ;SECTION= in URL: Invalid section text"),
    (b"imap://bob@localhost/INBOX/;UID={uid}", b"URL names another user"),
    (b"imap://localhost/INBOX/;UID={uid}", b"URL names another user"),
    (b"imap://alice@elsewhere.example/INBOX/;UID={uid}", b"URL names another server"),
    (b"/INBOX/;UID={uid};URLAUTH=anonymous:internal:0123", b"URLAUTH is not supported"),
    (b"INBOX/;UID={uid}", b"relative URL (give an absolute path: /mailbox;UIDVALIDITY=n/;UID=n)"),
])
def test_bad_urls(conv: Conversation, url: bytes, reason: bytes) -> None:
    uid = conv.add_message("INBOX", ORIGINAL)
    url = url.replace(b"{uid}", b"%d" % uid)
    lines = conv.send(b'a1 APPEND Drafts CATENATE (TEXT {2+}\r\nhi URL "%s")\r\n' % url)
    assert lines == [b"a1 NO [BADURL %s] Cannot use the URL: %s" % (url, reason)]
    assert conv.folder("Drafts").messages == 0


def test_badurl_echo_escapes_what_the_code_cannot_carry(conv: Conversation) -> None:
    lines = conv.send(b"a1 APPEND Drafts CATENATE (URL {12+}\r\n/x]\r\n/;UID=1)\r\n")
    assert lines == [b"a1 NO [BADURL /x%5D%0D%0A/;UID=1] Cannot use the URL: space or control character in URL"]


def test_expunged_uid_is_badurl(conv: Conversation) -> None:
    uid = conv.add_message("INBOX", ORIGINAL)
    conv.select("INBOX")
    other = conv.second_session()
    other.login()
    other.select("INBOX")
    other.command(f"UID STORE {uid} +FLAGS (\\Deleted)")
    other.command("EXPUNGE")
    # This session has not heard of the expunge yet; the URL still names a message that is gone.
    lines = conv.send(b"a1 APPEND Drafts CATENATE (URL /INBOX/;UID=%d)\r\n" % uid)
    assert lines[-1] == b"a1 NO [BADURL /INBOX/;UID=%d] Cannot use the URL: no message with that UID" % uid


def test_url_mailbox_deleted_meanwhile_is_badurl(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another session deletes the mailbox the URL names between its lookup and the read of the
    # message: the URL cannot be resolved (not NO [NONEXISTENT], which would be about Drafts).
    conv.command("CREATE Source")
    uid = conv.add_message("Source", ORIGINAL)
    conv.delete_folder_before(monkeypatch, "get_messages", "Source")
    lines = conv.send(b"a1 APPEND Drafts CATENATE (URL /Source/;UID=%d)\r\n" % uid)
    assert lines == [b"a1 NO [BADURL /Source/;UID=%d] Cannot use the URL: no such mailbox" % uid]
    assert conv.folder("Drafts").messages == 0


def test_multiappend_mixes_plain_and_catenate_all_or_nothing(conv: Conversation) -> None:
    uid = conv.add_message("INBOX", ORIGINAL)
    drafts = conv.folder("Drafts")
    lines = conv.send(b"a1 APPEND Drafts " + literal(b"Subject: plain\r\n\r\nx\r\n")
                      + b" CATENATE (URL /INBOX/;UID=%d/;SECTION=2)" % uid
                      + b" (\\Flagged) " + literal(b"Subject: plain 2\r\n\r\ny\r\n") + b"\r\n")
    assert appended(lines[-1], drafts.uidvalidity, "1:3"), lines
    assert stored(conv, "Drafts", 2) == b"Subject: inner\r\n\r\ninner body"
    # One URL that cannot be resolved: none of the messages is stored.
    lines = conv.send(b"a2 APPEND Drafts " + literal(b"Subject: plain\r\n\r\nx\r\n")
                      + b" CATENATE (URL /INBOX/;UID=%d/;SECTION=2 URL /INBOX/;UID=99)\r\n" % uid)
    assert lines == [b"a2 NO [BADURL /INBOX/;UID=99] Cannot use the URL: no message with that UID"]
    assert conv.folder("Drafts").messages == 3


def test_too_big(tmp_path: Path) -> None:
    with Conversation(tmp_path, max_literal=1000) as conv:
        conv.login()
        big = b"Subject: big\r\n\r\n" + b"x" * 600 + b"\r\n"
        uid = conv.add_message("INBOX", big)
        lines = conv.send(b"a1 APPEND INBOX CATENATE (URL /INBOX/;UID=%d URL /INBOX/;UID=%d)\r\n" % (uid, uid))
        assert lines == [b"a1 NO [TOOBIG] Message too big"]
        # Each message within the limit, together beyond it: as a MULTIAPPEND's literals.
        lines = conv.send(b"a2 APPEND INBOX CATENATE (URL /INBOX/;UID=%d) CATENATE (URL /INBOX/;UID=%d)\r\n"
                          % (uid, uid))
        assert lines == [b"a2 NO [LIMIT] The messages of one command together exceed 1000 octets;"
                         b" append them one at a time"]
        lines = conv.send(b"a3 APPEND INBOX CATENATE (URL /INBOX/;UID=%d TEXT {400+}\r\n%s)\r\n"
                          % (uid, b"y" * 400))
        assert lines == [b"a3 NO [TOOBIG] Message too big"]
        assert conv.folder("INBOX").messages == 1
        lines = conv.send(b"a4 APPEND INBOX CATENATE (URL /INBOX/;UID=%d/;PARTIAL=0.300 URL /INBOX/;UID=%d)\r\n"
                          % (uid, uid))
        assert appended(lines[-1], conv.folder("INBOX").uidvalidity, str(uid + 1)), lines
        assert stored(conv, "INBOX", uid + 1) == big[:300] + big


def test_limit_together_holds_whatever_the_order(tmp_path: Path) -> None:
    # A plain message and a CATENATE one within the limit each, beyond it together: refused
    # whether the plain one comes first or last.
    with Conversation(tmp_path, max_literal=1000) as conv:
        conv.login()
        uid = conv.add_message("INBOX", b"Subject: big\r\n\r\n" + b"x" * 600 + b"\r\n")
        plain = literal(b"Subject: plain\r\n\r\n" + b"y" * 500)
        refusal = b"NO [LIMIT] The messages of one command together exceed 1000 octets; append them one at a time"
        lines = conv.send(b"a1 APPEND INBOX %s CATENATE (URL /INBOX/;UID=%d)\r\n" % (plain, uid))
        assert lines == [b"a1 " + refusal]
        lines = conv.send(b"a2 APPEND INBOX CATENATE (URL /INBOX/;UID=%d) %s\r\n" % (uid, plain))
        assert lines == [b"a2 " + refusal]
        assert conv.folder("INBOX").messages == 1


def test_quota_checked_before_each_text_literal(conv: Conversation) -> None:
    conv.store.update_account("alice", quota_messages=2)
    conv.add_message()
    # Two TEXT parts are one message: the quota takes it.
    assert conv.send(b"a1 APPEND Drafts CATENATE (TEXT {14}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b"Subject: x\r\n\r\n TEXT {7}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b"hello\r\n)\r\n")[-1].startswith(b"a1 OK [APPENDUID ")
    # A third message is over it, refused before its text is sent.
    assert conv.send(b"a2 APPEND Drafts CATENATE (TEXT {14}\r\n") == [b"a2 NO [OVERQUOTA] Over quota"]
    conv.store.update_account("alice", quota_messages=0, quota_bytes=conv.store.usage("alice")[0] + 100)
    assert conv.send(b"a3 APPEND Drafts CATENATE (TEXT {50}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b"x" * 50 + b" TEXT {60}\r\n") == [b"a3 NO [OVERQUOTA] Over quota"]


def test_missing_target_is_trycreate_before_the_text(conv: Conversation) -> None:
    assert conv.send(b"a1 APPEND Outbox CATENATE (TEXT {5}\r\n") == [b"a1 NO [TRYCREATE] Mailbox does not exist"]
    assert conv.send(b"a2 APPEND Outbox CATENATE (URL /INBOX/;UID=1)\r\n") == [
        b"a2 NO [TRYCREATE] Mailbox does not exist"]


def test_utf8_parts_need_utf8_accept(conv: Conversation) -> None:
    part = "Subject: café\r\n\r\nx\r\n".encode()
    line = b"APPEND Drafts CATENATE (UTF8 (~{%d+}\r\n%s))\r\n" % (len(part), part)
    assert conv.send(b"a1 " + line) == [b"a1 BAD [CLIENTBUG] UTF8=ACCEPT must be enabled first"]
    conv.command("ENABLE UTF8=ACCEPT")
    lines = conv.send(b"a2 " + line)
    assert appended(lines[-1], conv.folder("Drafts").uidvalidity, "1"), lines
    assert stored(conv, "Drafts", 1) == part


def test_replace_with_catenate(conv: Conversation) -> None:
    old = conv.add_message("Drafts", b"Subject: v1\r\n\r\nold text\r\n")
    conv.select("Drafts")
    lines = conv.send(b"a1 UID REPLACE %d Drafts CATENATE (TEXT {15+}\r\nSubject: v2\r\n\r\n"
                      b" URL /Drafts/;UID=%d/;SECTION=TEXT)\r\n" % (old, old))
    assert lines[-1] == b"a1 OK REPLACE completed", lines
    assert stored(conv, "Drafts", old + 1) == b"Subject: v2\r\n\r\nold text\r\n"
    assert conv.folder("Drafts").messages == 1


def test_capability_is_advertised(conv: Conversation) -> None:
    assert "CATENATE" in conv.capabilities()
