"""midb export / import against a running gximap: what a client saw in one account, it sees the
same in another after ``midb export maildir`` and ``midb import maildir`` (same UIDVALIDITY, UIDs,
flags, keywords, internal dates, bodies), and a session in the target INBOX is told of the new mail."""

from __future__ import annotations

import imaplib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import GximapProcess

pytestmark = pytest.mark.timeout(120)

FOLDERS = ("INBOX", "Projects", "Projects/2026", "a.b")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GximapProcess]:
    proc = GximapProcess(tmp_path, accounts={"alice": "secret-a", "bernd": "secret-b"}, tls=False)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def connect(server: GximapProcess, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
    client.login(user, password)
    return client


def quoted(name: str) -> str:
    return f'"{name}"'


def snapshot(client: imaplib.IMAP4) -> dict[str, tuple[bytes, bytes]]:
    """Per folder: STATUS (UIDVALIDITY UIDNEXT MESSAGES) and each message's UID, FLAGS,
    INTERNALDATE and body, as a client sees them."""
    seen: dict[str, tuple[bytes, bytes]] = {}
    for name in FOLDERS:
        typ, status = client.status(quoted(name), "(UIDVALIDITY UIDNEXT MESSAGES)")
        assert typ == "OK", (name, status)
        typ, _ = client.select(quoted(name), readonly=True)
        assert typ == "OK"
        typ, data = client.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
        assert typ == "OK"
        fetched = b"".join(part if isinstance(part, bytes) else b"".join(part) for part in data if part)
        raw = status[0]
        assert isinstance(raw, bytes)
        seen[name] = (re.sub(rb"^\S+ ", b"", raw), fetched)
    return seen


def midb(server: GximapProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "midb", "-c", str(server.config_path), *args],
                          text=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def test_export_import_while_serving_keeps_what_clients_saw(server: GximapProcess, tmp_path: Path) -> None:
    alice = connect(server, "alice", "secret-a")
    for name in FOLDERS[1:]:
        assert alice.create(quoted(name))[0] == "OK"
    alice.subscribe(quoted("a.b"))
    for number, name in enumerate(FOLDERS * 2):
        date = imaplib.Time2Internaldate(1_700_000_000 + number * 3600)
        body = f"From: x@example.org\r\nSubject: {name} {number}\r\n\r\nFrom the body\r\n".encode()
        assert alice.append(quoted(name), r"(\Seen $Forwarded Work)" if number % 2 else "()", date, body)[0] == "OK"
    alice.select("INBOX")
    alice.uid("STORE", "1", "+FLAGS", r"(\Deleted)")
    alice.expunge()
    alice.uid("STORE", "2", "+FLAGS", r"(\Flagged $Label1)")
    expected = snapshot(alice)

    bernd = connect(server, "bernd", "secret-b")
    bernd.select("INBOX")
    exported = midb(server, "export", "maildir", "alice", str(tmp_path / "alice"))
    assert exported.returncode == 0, exported.stderr
    assert "7 messages" in exported.stdout  # eight appended, one expunged
    imported = midb(server, "import", "maildir", "bernd", str(tmp_path / "alice"))
    assert imported.returncode == 0, imported.stdout + imported.stderr

    # The session already in bernd's INBOX learns of what arrived (the CLI announces its changes).
    deadline = time.monotonic() + 10
    while not bernd.untagged_responses.get("EXISTS") and time.monotonic() < deadline:
        bernd.noop()
        time.sleep(0.1)
    assert bernd.untagged_responses.get("EXISTS"), "no EXISTS for the imported mail"
    assert snapshot(bernd) == expected
    typ, listed = bernd.lsub('""', "a.b")
    assert typ == "OK" and listed and listed[0] is not None and b"a.b" in listed[0]
    bernd.logout()
    alice.logout()
    assert "Traceback" not in server.log()
