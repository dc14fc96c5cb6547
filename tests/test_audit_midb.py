"""Audit of issue 3 requirements that had no direct test: FETCH is served from the digest stored at
append time (never a re-parse), and ``midb backup`` takes a consistent copy while another process
writes to the store."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conversation import Conversation

import midb.mime
from midb.store import Store

REPO = str(Path(__file__).resolve().parent.parent)

MULTIPART = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: digest check\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"xx\"\r\n"
    b"\r\n"
    b"--xx\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"first part\r\n"
    b"--xx\r\n"
    b"Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAEC\r\n"
    b"--xx--\r\n"
)


def test_fetch_is_served_from_the_stored_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Conversation(tmp_path) as conv:
        conv.add_message(data=MULTIPART)

        def no_parsing(data: bytes) -> object:
            raise AssertionError("FETCH re-parsed a stored message")

        monkeypatch.setattr(midb.mime, "digest", no_parsing)
        conv.login()
        conv.select()
        lines = conv.command("FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2.MIME] RFC822.SIZE)")
        fetched = b"\n".join(lines)
        assert b'"digest check"' in fetched
        assert b'("text" "plain" ("charset" "utf-8")' in fetched
        assert b'"application" "octet-stream" ("name" "a.bin") NIL NIL "base64" 4' in fetched
        assert b"first part" in fetched
        assert b"RFC822.SIZE %d" % len(MULTIPART) in fetched


WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from midb.store import Store

    store = Store(sys.argv[1], fsync=False)
    inbox = store.get_folder("alice", "INBOX").id
    archive = store.get_folder("alice", "Archive").id
    deadline = time.monotonic() + float(sys.argv[3])
    number = 0
    while time.monotonic() < deadline:
        number += 1
        _, uid = store.append("alice", inbox, b"Subject: %d\\r\\n\\r\\n" % number + b"x" * (number % 5000))
        if number % 3 == 0:
            store.copy("alice", inbox, [uid], archive)
        if number % 4 == 0:
            victims = store.uids("alice", inbox)[:2]
            store.store_flags("alice", inbox, victims, "add", ["\\\\Deleted"])
            store.expunge("alice", inbox, victims)
    store.close()
    print(number, flush=True)
""")


@pytest.mark.slow
def test_midb_backup_is_consistent_while_another_process_writes(tmp_path: Path) -> None:
    source = tmp_path / "store"
    with Store(str(source), fsync=False) as store:
        store.create_account("alice")
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    writer = subprocess.Popen([sys.executable, str(script), str(source), REPO, "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        backups = []
        for number in range(3):
            dest = tmp_path / f"backup{number}"
            result = subprocess.run([sys.executable, "-m", "midb", "--store", str(source), "backup", str(dest)],
                                    capture_output=True, text=True, timeout=60, cwd=REPO)
            assert result.returncode == 0, result.stderr
            backups.append(dest)
            time.sleep(0.3)
        output, errors = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate(timeout=10)
    assert writer.returncode == 0, errors
    assert int(output) > 50  # the writer really ran alongside the backups
    for dest in backups:
        verify = subprocess.run([sys.executable, "-m", "midb", "--store", str(dest), "verify"],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        with Store(str(dest), fsync=False) as copy:
            for name in ("INBOX", "Archive"):
                folder = copy.get_folder("alice", name)
                assert folder is not None
                for meta in copy.messages("alice", folder.id):
                    body = copy.read_body(meta.blob)
                    assert len(body) == meta.size and body.startswith(b"Subject: ")


APPENDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from midb.store import Store

    store = Store(sys.argv[1], fsync=False)
    inbox = store.get_folder("alice", "INBOX").id
    store.append("alice", inbox, b"Subject: from another process\\r\\n\\r\\nhi\\r\\n")
    print(time.time(), flush=True)
    store.close()
""")


@pytest.mark.e2e
def test_append_by_another_process_reaches_an_idle_imap_session_within_a_second(tmp_path: Path) -> None:
    from e2e import GximapProcess

    server = GximapProcess(tmp_path, tls=False).start()
    script = tmp_path / "appender.py"
    script.write_text(APPENDER, encoding="utf-8")
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        reader = sock.makefile("rb")
        try:
            assert reader.readline().startswith(b"* OK")
            for tag, command in (("a", "LOGIN alice secret"), ("b", "SELECT INBOX")):
                sock.sendall(f"{tag} {command}\r\n".encode())
                for _ in range(50):
                    line = reader.readline()
                    if line.startswith(tag.encode() + b" "):
                        break
                assert line.startswith(tag.encode() + b" OK"), line
            sock.sendall(b"i IDLE\r\n")
            assert reader.readline().startswith(b"+")
            result = subprocess.run([sys.executable, str(script), str(server.midb), REPO],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            committed = float(result.stdout)
            line = reader.readline()
            arrived = time.time()
            assert line == b"* 1 EXISTS\r\n", line
            print(f"cross-process latency {arrived - committed:.3f} s")
            assert arrived - committed < 1.0
            sock.sendall(b"DONE\r\n")
            for _ in range(10):
                line = reader.readline()
                if not line.startswith(b"* "):
                    break
            assert line.startswith(b"i OK"), line
        finally:
            reader.close()
            sock.close()
    finally:
        server.stop()
