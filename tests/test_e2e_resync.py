"""CONDSTORE / QRESYNC resynchronisation against the real gximap process (RFC 7162).

Client A caches a mailbox (UIDVALIDITY, HIGHESTMODSEQ, UIDs) and disconnects; client B (Python's
imaplib, as another program would) changes flags and expunges; A reconnects and must learn
exactly what changed: SELECT (QRESYNC ...) gives VANISHED (EARLIER) for the expunged known UIDs
and FETCH (UID FLAGS MODSEQ) for the changed messages; CONDSTORE-only resynchronisation with
UID FETCH (CHANGEDSINCE) and UID SEARCH, and UID FETCH (CHANGEDSINCE VANISHED) give the same
picture. A is a small line-based client, so every response line can be checked exactly.
"""

from __future__ import annotations

import imaplib
import re
import socket
from pathlib import Path

import pytest
from e2e import GximapProcess

pytestmark = pytest.mark.e2e

MESSAGE = b"From: Bob <bob@example.org>\r\nSubject: note %d\r\n\r\nbody %d\r\n"
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class LineClient:
    """Sends tagged commands, collects the untagged lines up to the tagged completion."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.tags = 0
        greeting = self.file.readline()
        assert greeting.startswith(b"* OK"), greeting

    def command(self, text: str) -> tuple[list[bytes], bytes]:
        """(untagged responses without CRLF, literals inline; the tagged line)."""
        self.tags += 1
        tag = b"c%d" % self.tags
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        untagged: list[bytes] = []
        for _ in range(10_000):
            line = self.file.readline()
            assert line, "the server closed the connection"
            while (match := _LITERAL.search(line)) is not None:
                line += self.file.read(int(match.group(1)))
                line += self.file.readline()
            if line.startswith(tag + b" "):
                return untagged, line.rstrip(b"\r\n")
            untagged.append(line.rstrip(b"\r\n"))
        raise AssertionError("no tagged response")

    def ok(self, text: str) -> list[bytes]:
        untagged, tagged = self.command(text)
        assert b" OK" in tagged[:12], (text, tagged)
        return untagged

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        except (OSError, AssertionError):
            pass
        self.file.close()
        self.sock.close()


@pytest.fixture
def server(tmp_path: Path):
    directory = tmp_path / "server"
    directory.mkdir()
    proc = GximapProcess(directory, tls=False).start()
    yield proc
    proc.stop()


def _login_a(server: GximapProcess) -> LineClient:
    client = LineClient(server.port)
    client.ok("LOGIN alice secret")
    return client


def _imaplib_b(server: GximapProcess) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    assert client.login("alice", "secret")[0] == "OK"
    return client


def _code(lines: list[bytes], name: bytes) -> int:
    for line in lines:
        match = re.match(rb"\* OK \[" + name + rb" (\d+)\]", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no {name!r} in {lines!r}")


def _modseqs(lines: list[bytes]) -> dict[int, tuple[bytes, int]]:
    """UID -> (flags, MODSEQ) from FETCH responses."""
    out = {}
    for line in lines:
        match = re.match(rb"\* \d+ FETCH \(UID (\d+) FLAGS \((.*?)\) MODSEQ \((\d+)\)\)$", line)
        if match:
            out[int(match.group(1))] = (match.group(2), int(match.group(3)))
    return out


def test_qresync_after_another_client_changed_and_expunged(server: GximapProcess) -> None:
    b = _imaplib_b(server)
    try:
        for number in range(1, 9):
            assert b.append("INBOX", None, None, MESSAGE % (number, number))[0] == "OK"
    finally:
        b.logout()

    # A: a QRESYNC client caches the mailbox state.
    a = _login_a(server)
    assert a.ok("ENABLE QRESYNC") == [b"* ENABLED QRESYNC"]
    lines = a.ok("SELECT INBOX")
    validity, cached = _code(lines, b"UIDVALIDITY"), _code(lines, b"HIGHESTMODSEQ")
    a.ok("UID FETCH 1:* (FLAGS)")  # the client's cache: UIDs 1..8, no flags
    a.close()

    # B changes flags, expunges and appends while A is away.
    b = _imaplib_b(server)
    try:
        assert b.select("INBOX")[0] == "OK"
        assert b.uid("STORE", "2", "+FLAGS", "(\\Seen)")[0] == "OK"
        assert b.uid("STORE", "3,6", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert b.expunge()[0] == "OK"
        assert b.uid("STORE", "7", "+FLAGS", "($Important)")[0] == "OK"
        assert b.append("INBOX", None, None, MESSAGE % (9, 9))[0] == "OK"
    finally:
        b.logout()

    # A reconnects and resynchronises in one round trip.
    a = _login_a(server)
    try:
        a.ok("ENABLE QRESYNC")
        untagged, tagged = a.command(f"SELECT INBOX (QRESYNC ({validity} {cached} 1:8))")
        assert tagged.endswith(b"OK [READ-WRITE] SELECT completed")
        assert b"* 7 EXISTS" in untagged
        highest = _code(untagged, b"HIGHESTMODSEQ")
        assert highest > cached
        resync = [line for line in untagged if line.startswith(b"* VANISHED") or b" FETCH (" in line]
        assert resync[0] == b"* VANISHED (EARLIER) 3,6"
        changed = _modseqs(resync[1:])
        assert sorted(changed) == [2, 7]
        assert changed[2][0] == b"\\Seen" and changed[7][0] == b"$Important"
        assert all(cached < modseq <= highest for _flags, modseq in changed.values())
        assert resync[1].startswith(b"* 2 FETCH (UID 2 ") and resync[2].startswith(b"* 5 FETCH (UID 7 ")

        # Nothing changed since: resynchronising from the new HIGHESTMODSEQ reports nothing.
        untagged = a.ok(f"SELECT INBOX (QRESYNC ({validity} {highest} 1:9))")
        assert untagged[0] == b"* OK [CLOSED] Previous mailbox closed"
        assert not [line for line in untagged if b"VANISHED" in line or b"FETCH" in line]

        # The same answers, the CONDSTORE / UID FETCH way.
        untagged = a.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {cached} VANISHED)")
        assert untagged[0] == b"* VANISHED (EARLIER) 3,6"
        fetched = {int(m.group(1)) for line in untagged[1:]
                   if (m := re.match(rb"\* \d+ FETCH \(UID (\d+) MODSEQ", line))}
        assert fetched == {2, 7, 9}  # 9 is new since the cached state
        untagged = a.ok(f"UID SEARCH MODSEQ {cached + 1}")
        assert untagged == [b"* SEARCH 2 7 9 (MODSEQ %d)" % highest]
    finally:
        a.close()


def test_conditional_store_between_two_clients(server: GximapProcess) -> None:
    b = _imaplib_b(server)
    try:
        for number in range(1, 4):
            b.append("INBOX", None, None, MESSAGE % (number, number))
        assert b.select("INBOX")[0] == "OK"
    except Exception:
        b.logout()
        raise
    a = _login_a(server)
    try:
        lines = a.ok("SELECT INBOX (CONDSTORE)")
        mark = _code(lines, b"HIGHESTMODSEQ")
        # B changes message 2 behind A's back.
        assert b.uid("STORE", "2", "+FLAGS", "(\\Flagged)")[0] == "OK"
        untagged, tagged = a.command(f"UID STORE 1:3 (UNCHANGEDSINCE {mark}) +FLAGS.SILENT ($Done)")
        assert tagged.endswith(b"OK [MODIFIED 2] Conditional STORE failed for some messages")
        reported = {int(m.group(1)): line for line in untagged
                    if (m := re.match(rb"\* \d+ FETCH \(UID (\d+) ", line))}
        assert re.match(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)$", reported[2])
        assert re.match(rb"\* 1 FETCH \(UID 1 MODSEQ \(\d+\)\)$", reported[1])
        # Retrying with the MODSEQ just learnt succeeds.
        found = re.search(rb"MODSEQ \((\d+)\)", reported[2])
        assert found is not None
        current = int(found.group(1))
        untagged, tagged = a.command(f"UID STORE 2 (UNCHANGEDSINCE {current}) +FLAGS.SILENT ($Done)")
        assert tagged.endswith(b"OK STORE completed"), tagged
        # B sees A's changes as ordinary flag updates.
        typ, data = b.uid("FETCH", "1:3", "(FLAGS)")
        assert typ == "OK" and all(b"$Done" in item for item in data if isinstance(item, bytes))
    finally:
        a.close()
        b.logout()
