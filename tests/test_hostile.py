"""Hostile clients against live sessions: every limit enforced end to end (line length, literal
size, nesting, argument count, sequence-set size, runs of BADs, connections per address), mailbox
names that try path tricks, plaintext logins where TLS is required, and STARTTLS command
injection. The session-level tests drive a live ImapSession (tests/conversation.py); the
connection-level ones run the real server over real sockets."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from conversation import PASSWORD, Conversation
from e2e import GximapProcess, LineClient

# -- line length, literals, nesting, arguments, sequence sets ----------------------------------------


def test_overlong_lines_are_refused_and_never_buffered(tmp_path: Path) -> None:
    with Conversation(tmp_path, max_line=1024) as conv:
        conv.login()
        assert conv.send(b"a1 NOOP " + b"x" * 3000 + b"\r\n") == [b"a1 BAD [TOOBIG] Line too long"]
        assert conv.send(b"a2 NOOP\r\n") == [b"a2 OK NOOP completed"]
        # A "line" that never ends: refused at once, and what follows is dropped, not stored.
        assert conv.send(b"a3 LOGIN " + b"y" * 5000) == [b"a3 BAD [TOOBIG] Line too long"]
        for _ in range(20):
            assert conv.send(b"z" * 50_000) == []
            assert conv.session.framer.buffered <= 1024
        assert conv.send(b"\r\na4 NOOP\r\n") == [b"a4 OK NOOP completed"]
        # Limits apply to handler-requested lines too (an AUTHENTICATE response).
        conv.send(b"a5 UNAUTHENTICATE\r\n")
        assert conv.send(b"a6 AUTHENTICATE PLAIN\r\n") == [b"+ "]
        assert conv.send(b"q" * 5000 + b"\r\n") == [b"a6 BAD [TOOBIG] Line too long"]
        assert conv.send(b"a7 NOOP\r\n") == [b"a7 OK NOOP completed"]


def test_literal_size_limit(tmp_path: Path) -> None:
    with Conversation(tmp_path, max_literal=2048) as conv:
        conv.login()
        # APPEND: NO [TOOBIG] instead of a continuation request (RFC 7889), nothing stored.
        assert conv.send(b"b1 APPEND INBOX {5000}\r\n") == [b"b1 NO [TOOBIG] Message too big"]
        assert conv.send(b"b2 NOOP\r\n") == [b"b2 OK NOOP completed"]
        # A non-synchronizing literal that is too big: refused, its octets skipped, not executed.
        refused = conv.send(b"b3 APPEND INBOX {5000+}\r\n" + b"From: x\r\n\r\n".ljust(5000, b"y")
                            + b"\r\nb4 NOOP\r\n")
        assert refused == [b"b3 NO [TOOBIG] Message too big", b"b4 OK NOOP completed"]
        inbox = conv.store.get_folder("alice", "INBOX")
        assert inbox is not None and inbox.messages == 0
        assert conv.session.framer.buffered == 0
        # Other commands: BAD.
        assert conv.send(b"b5 CREATE {3000}\r\n") == [b"b5 BAD [TOOBIG] Literal too big"]
        # Within the limit everything works, and APPENDLIMIT advertises the limit.
        lines = conv.send(b"b6 APPEND INBOX {13+}\r\nFrom: x\r\n\r\nhi\r\n")
        assert lines[-1].startswith(b"b6 OK [APPENDUID ")
        assert b"APPENDLIMIT=2048" in conv.command("CAPABILITY")[0]


def test_nesting_argument_count_and_sequence_set_limits(tmp_path: Path) -> None:
    with Conversation(tmp_path, max_nesting=4, max_args=20, max_line=256 * 1024) as conv:
        conv.login()
        conv.add_message()
        conv.select()
        assert conv.send(b"c1 SEARCH " + b"NOT (" * 10 + b"ALL" + b")" * 10 + b"\r\n") == [
            b"c1 BAD [CLIENTBUG] Parse error: Search criteria nested too deeply"]
        assert conv.send(b"c2 SEARCH " + b"NOT " * 50 + b"ALL\r\n")[-1].startswith(b"c2 BAD")
        assert conv.send(b"c3 SEARCH ((ALL))\r\n")[-1] == b"c3 OK SEARCH completed"
        assert conv.send(b"c4 SEARCH " + b"ALL " * 30 + b"\r\n") == [b"c4 BAD [CLIENTBUG] Parse error: Too many arguments"]
        flags = b" ".join(b"k%d" % index for index in range(30))
        assert conv.send(b"c5 STORE 1 +FLAGS (" + flags + b")\r\n") == [b"c5 BAD [CLIENTBUG] Parse error: Too many arguments"]
        # Sequence sets are kept as ranges, never expanded, and their element count is capped.
        huge = b",".join([b"1"] * 70_000)
        assert conv.send(b"c6 FETCH " + huge + b" FLAGS\r\n")[-1].startswith(b"c6 BAD")
        lines = conv.send(b"c7 UID FETCH 1:4294967295 (FLAGS)\r\n")
        assert lines[-1] == b"c7 OK FETCH completed" and len(lines) == 2
        assert conv.send(b"c8 FETCH 1:4294967296 FLAGS\r\n")[-1].startswith(b"c8 BAD")
        assert conv.send(b"c9 NOOP\r\n") == [b"c9 OK NOOP completed"]


def test_a_run_of_bad_commands_disconnects(tmp_path: Path) -> None:
    with Conversation(tmp_path, max_bad_commands=4) as conv:
        conv.script("""
            C: d1 FROB
            S: d1 BAD [CLIENTBUG] Parse error: Unknown command
            C: d2 SELECT INBOX
            S: d2 BAD [CLIENTBUG] Log in first
            # A command that works ends the run.
            C: d3 NOOP
            S: d3 OK NOOP completed
            C: garbage
            S: garbage BAD [CLIENTBUG] Parse error: {*}
            C: )
            S: * BAD [CLIENTBUG] Missing or invalid tag
            C: d4 LOGIN
            S: d4 BAD [CLIENTBUG] Parse error: {*}
            C: d5 FETCH 1 (
            S: d5 BAD [CLIENTBUG] Parse error: {*}
            S: * BYE Too many invalid commands
        """)
        assert conv.closed


# -- mailbox names that try path tricks --------------------------------------------------------------


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def test_mailbox_names_cannot_escape_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    outside = Path("/tmp") / f"gximap-hostile-{os.getpid()}"
    before = _tree(tmp_path)
    with Conversation(tmp_path / "server") as conv:
        conv.login()
        conv.command("CREATE Projects")
        escape_names = [
            b'"../escape"', b'"../../../../tmp/escape"', b'"' + str(outside).encode() + b'"', b'"/abs"',
            b'"a/../../b"', b'"Projects/../../x"', b'"./x"', b'"a//b"', b'".."', b'"x/.."',
            b'"' + b"n" * 5000 + b'"',  # overlong
            b'"&AC4ALgAv-x"',  # "../x" in base64: printable ASCII must not be encoded
            b'"&AAA-"',  # NUL in modified UTF-7
            b'"&Jjo"', b'"a&"', b'"\xc3\xa9t\xc3\xa9"',  # broken modified UTF-7, raw 8-bit
        ]
        refusals: list[bytes] = []
        for index, name in enumerate(escape_names):
            for verb in (b"CREATE %s", b"RENAME Projects %s", b"SELECT %s", b"APPEND %s {2+}\r\nhi",
                         b"DELETE %s", b"STATUS %s (MESSAGES)", b"SUBSCRIBE %s"):
                tag = b"p%d" % index
                lines = conv.send(tag + b" " + (verb % name) + b"\r\n")
                assert lines and lines[-1].startswith(tag + b" NO"), (verb % name, lines)
                refusals.append(lines[-1])
        # NUL cannot even be written in a mailbox name: a literal with NUL is a syntax error.
        assert conv.send(b"q1 CREATE {3+}\r\na\x00b\r\n")[-1].startswith(b"q1 BAD")
        assert conv.send(b"q2 CREATE ~{3+}\r\na\x00b\r\n")[-1].startswith(b"q2 BAD")
        assert not conv.closed  # NO answers do not count towards the BAD limit
        # Nothing was created, renamed or subscribed.
        names = sorted(folder.name for folder in conv.store.list_folders("alice"))
        assert names == ["Archive", "Drafts", "INBOX", "Junk", "Projects", "Sent", "Trash"]
        assert sorted(conv.store.subscriptions("alice")) == ["Archive", "Drafts", "INBOX", "Junk", "Sent",
                                                             "Trash"]
        assert any(b"[CANNOT]" in line for line in refusals)
        # With UTF-8 names enabled the same tricks fail the same way.
        conv.command("ENABLE UTF8=ACCEPT")
        for index, name in enumerate((b'"../utf8"', b'"/abs"', b'"a/./b"', b'"\xc3\xa9/../x"')):
            assert conv.send(b"u%d CREATE %s\r\n" % (index, name))[-1].startswith(b"u%d NO" % index)
    # The file system outside the store was not touched.
    after = _tree(tmp_path)
    assert {path for path in after - before if not path.startswith("server")} == set()
    assert list(cwd.iterdir()) == []
    assert not outside.exists() and not Path("/abs").exists()


# -- the real server over real sockets -----------------------------------------------------------------

TIMEOUT = 10.0


class Client(LineClient):
    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        super().__init__(port, source, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory):
    """Plaintext logins allowed (so an injected LOGIN would succeed), at most 2 connections per
    address, short lines."""
    server = GximapProcess(tmp_path_factory.mktemp("hostile"), tls=True, extra={
        "insecure_auth": "yes", "imap_max_conn_per_ip": "2", "imap_max_line_length": "4K"})
    server.start()
    yield server
    server.stop()


@pytest.mark.e2e
def test_starttls_injection_is_not_executed(open_server: GximapProcess) -> None:
    client = Client(open_server.port, "127.0.0.20")
    assert b"STARTTLS" in client.readline()
    # Commands pipelined behind STARTTLS in the same packet (CVE-2011-0411 style).
    client.send(b"a STARTTLS\r\nb LOGIN alice secret\r\nc SELECT INBOX\r\n")
    assert client.readline().startswith(b"a OK")
    client.starttls()
    capability = client.command("d", "CAPABILITY")
    assert capability[-1].startswith(b"d OK") and all(not line.startswith((b"b ", b"c ")) for line in capability)
    assert b"AUTH=PLAIN" in capability[0]  # still not authenticated
    assert client.command("e", "SELECT INBOX")[-1] == b"e BAD [CLIENTBUG] Log in first"
    assert client.command("f", f"LOGIN alice {PASSWORD}")[-1].startswith(b"f OK")
    client.close()
    time.sleep(0.2)
    log = open_server.log()
    assert "127.0.0.20" in log
    assert " b LOGIN" not in log and " c SELECT" not in log


@pytest.mark.e2e
def test_connections_per_address_are_limited(open_server: GximapProcess) -> None:
    first, second = Client(open_server.port, "127.0.0.21"), Client(open_server.port, "127.0.0.21")
    assert first.readline().startswith(b"* OK") and second.readline().startswith(b"* OK")
    third = Client(open_server.port, "127.0.0.21")
    assert third.readline().startswith(b"* BYE")
    assert third.readline() == b""
    third.close()
    elsewhere = Client(open_server.port, "127.0.0.22")
    assert elsewhere.readline().startswith(b"* OK")
    elsewhere.close()
    first.command("x", "LOGOUT")
    first.close()
    deadline = time.monotonic() + TIMEOUT
    while True:  # the slot frees once the server has seen the close
        again = Client(open_server.port, "127.0.0.21")
        greeting = again.readline()
        again.close()
        if greeting.startswith(b"* OK") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert greeting.startswith(b"* OK")
    second.close()


@pytest.mark.e2e
def test_overlong_line_over_a_real_socket(open_server: GximapProcess) -> None:
    client = Client(open_server.port, "127.0.0.23")
    client.readline()
    client.send(b"g1 NOOP ")
    for _ in range(64):  # 4 MiB without a line end, against imap_max_line_length = 4K
        client.send(b"x" * 65536)
    assert client.readline() == b"g1 BAD [TOOBIG] Line too long"
    client.send(b"\r\ng2 NOOP\r\n")
    assert client.until_tagged(b"g2")[-1] == b"g2 OK NOOP completed"
    client.close()


@pytest.mark.e2e
@pytest.mark.parametrize("settings", [
    {"imap_force_tls": "yes", "insecure_auth": "yes"},
    {"insecure_auth": "no"},
    {"insecure_auth": "auto"},  # TLS is configured, so auto means no
], ids=["force_tls", "insecure_auth_no", "insecure_auth_auto"])
def test_plaintext_login_is_refused_where_tls_is_required(tmp_path: Path, settings: dict[str, str]) -> None:
    server = GximapProcess(tmp_path, tls=True, extra=settings).start()
    try:
        client = Client(server.port)
        greeting = client.readline()
        assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
        assert client.command("a", "LOGIN alice secret")[-1].startswith(b"a NO [PRIVACYREQUIRED]")
        plain = base64.b64encode(b"\0alice\0secret").decode()
        assert client.command("b", f"AUTHENTICATE PLAIN {plain}")[-1].startswith(b"b NO [PRIVACYREQUIRED]")
        assert client.command("c", "SELECT INBOX")[-1].startswith(b"c BAD")
        # The same credentials work once the connection is encrypted.
        assert client.command("d", "STARTTLS")[-1].startswith(b"d OK")
        client.starttls()
        capability = client.command("e", "CAPABILITY")
        assert b"AUTH=PLAIN" in capability[0] and b"LOGINDISABLED" not in capability[0]
        assert client.command("f", "LOGIN alice secret")[-1].startswith(b"f OK")
        client.close()
        time.sleep(0.1)
        log = server.log()
        assert "user=alice LOGIN ok" in log
        assert "rejected: bad password" not in log  # refused before any password check
    finally:
        server.stop()
