"""Real clients against the real gximap process: Python's imaplib, curl and mbsync (isync)."""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from e2e import GximapProcess, insecure_client_tls

pytestmark = pytest.mark.e2e

MESSAGE = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: Alice <alice@example.org>\r\n"
    b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Bob\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Alice,\r\nthis is the body.\r\n"
)


def _message(number: int) -> bytes:
    return MESSAGE.replace(b"<1@", b"<%d@" % number).replace(b"from Bob", b"from Bob #%d" % number)




@pytest.fixture
def server(tmp_path: Path):
    directory = tmp_path / "server"
    directory.mkdir()
    proc = GximapProcess(directory).start()
    yield proc
    proc.stop()


def _login(server: GximapProcess) -> imaplib.IMAP4_SSL:
    assert server.tls_port is not None
    client = imaplib.IMAP4_SSL("127.0.0.1", server.tls_port, ssl_context=insecure_client_tls(), timeout=15)
    assert client.login("alice", "secret")[0] == "OK"
    return client


def test_imaplib_full_session(server: GximapProcess) -> None:
    client = _login(server)
    data: list[Any]   # the data of one command's response after another
    try:
        typ, listing = client.list()
        assert typ == "OK"
        names = [line.decode() for line in cast(list[bytes], listing)]   # no literals in this listing
        assert any(line.endswith('"/" INBOX') or line.endswith(' INBOX') for line in names)
        assert any("\\Sent" in line for line in names) and any("\\Trash" in line for line in names)
        assert client.create("Work/2026")[0] == "OK"
        typ, data = client.append("INBOX", "(\\Flagged)", imaplib.Time2Internaldate(time.time()), MESSAGE)
        assert typ == "OK" and b"APPENDUID" in data[0]
        client.append("INBOX", None, None, _message(2))
        typ, data = client.select("INBOX")
        assert typ == "OK" and data == [b"2"]
        typ, data = client.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE ENVELOPE)")
        assert typ == "OK" and len([d for d in data if isinstance(d, bytes) and b"ENVELOPE" in d]) == 2
        typ, data = client.fetch("1", "(BODY.PEEK[])")
        assert isinstance(data[0], tuple) and data[0][1] == MESSAGE
        typ, data = client.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
        assert isinstance(data[0], tuple) and data[0][1].startswith(b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=")
        typ, data = client.fetch("1:2", "(PREVIEW (LAZY))")
        assert typ == "OK" and data == [b'%d (PREVIEW "Hello Alice, this is the body.")' % n for n in (1, 2)]
        typ, data = client.fetch("1", "(EMAILID THREADID)")   # RFC 8474
        assert typ == "OK" and isinstance(data[0], bytes)
        email_id = re.search(rb"EMAILID \((M[0-9a-f]{32})\)", data[0])
        assert email_id is not None and re.search(rb"THREADID \(T[0-9a-f]{16}\)", data[0])
        typ, data = client.search(None, "EMAILID", email_id.group(1).decode())
        assert data == [b"1"]
        typ, data = client.search(None, "SUBJECT", '"#2"')
        assert data == [b"2"]
        client.literal = "GRÜSSE".encode()  # type: ignore[assignment]  # 8-bit search text goes as a literal (imaplib sends bytes; typeshed says str)
        typ, data = client.search("UTF-8", "SUBJECT")
        assert typ == "OK" and data == [b"1 2"]
        typ, data = client.search(None, "FLAGGED")
        assert data == [b"1"]
        assert client.store("2", "+FLAGS", "(\\Deleted $Important)")[0] == "OK"
        typ, data = client.fetch("2", "(FLAGS)")
        assert isinstance(data[0], bytes) and b"$Important" in data[0] and b"\\Deleted" in data[0]
        typ, data = client.copy("1", "Work/2026")
        assert typ == "OK"
        typ, data = client.expunge()
        assert data == [b"2"]
        typ, data = client._simple_command("MOVE", "1", "Work")  # noqa: SLF001 - imaplib has no move()
        assert typ == "OK"
        typ, data = client.status("Work/2026", "(MESSAGES UIDNEXT UNSEEN MAILBOXID)")
        assert b"MESSAGES 1" in data[0] and re.search(rb"MAILBOXID \(F[0-9a-f]+-[0-9a-f]+-[0-9a-f]+\)", data[0])
        client.close()
        assert client.delete("Work/2026")[0] == "OK"
    finally:
        client.logout()


def test_imaplib_replace_saves_a_draft_again(server: GximapProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 8508 REPLACE as a mail client saving a draft: the new version in, the old one out."""
    monkeypatch.setitem(imaplib.Commands, "REPLACE", ("SELECTED",))   # imaplib knows no REPLACE
    client = _login(server)
    try:
        typ, data = client.capability()
        assert typ == "OK" and b"REPLACE" in cast(bytes, data[0]).split()
        client.append("Drafts", "(\\Draft)", None, _message(1))
        assert client.select("Drafts") == ("OK", [b"1"])
        client.literal = _message(2)  # type: ignore[assignment]  # imaplib sends bytes; typeshed says str
        typ, data = client._simple_command("REPLACE", "1", "Drafts", "(\\Draft \\Seen)")  # noqa: SLF001
        assert typ == "OK", data
        typ, appenduid = client.response("APPENDUID")
        assert appenduid and re.fullmatch(rb"\d+ 2", cast(bytes, appenduid[0])), appenduid
        typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and isinstance(data[0], tuple)
        assert data[0][0].startswith(b"1 (UID 2 FLAGS (\\Draft \\Seen") and b"from Bob #2" in data[0][1]
        assert len([item for item in data if isinstance(item, tuple)]) == 1
    finally:
        client.logout()


def _line_in_idle(client: imaplib.IMAP4, cause: Callable[[], tuple[str, Any]]) -> bytes:
    """The first line ``client`` is sent in IDLE after ``cause`` (another session's command, which
    must succeed); then IDLE ended with DONE and its tagged OK."""
    tag = client._new_tag()  # noqa: SLF001 - imaplib lacks IDLE before 3.14
    client.send(tag + b" IDLE\r\n")
    assert client.readline().startswith(b"+")
    typ, data = cause()
    assert typ == "OK", data
    client.sock.settimeout(30)
    line = client.readline()
    client.send(b"DONE\r\n")
    assert client._get_tagged_response(tag)[0] == "OK"  # noqa: SLF001 - the tag _new_tag registered
    return cast(bytes, line)


def test_imaplib_idle_sees_other_session_append(server: GximapProcess) -> None:
    watcher = _login(server)
    writer = _login(server)
    try:
        watcher.select("INBOX")
        line = _line_in_idle(watcher, lambda: writer.append("INBOX", None, None, MESSAGE))
        assert re.match(rb"\* 1 EXISTS", line), line
    finally:
        writer.logout()
        watcher.logout()


def test_imaplib_uidonly(server: GximapProcess) -> None:
    """RFC 9586 with a real client: after ENABLE UIDONLY, message numbers are BAD [UIDREQUIRED],
    UID FETCH answers UIDFETCH responses (literals included), expunges come as VANISHED, and
    another session's flag change reaches an IDLE client as UIDFETCH."""
    client = _login(server)
    other = _login(server)
    try:
        assert b"UIDONLY" in cast(bytes, client.capability()[1][0]).split()
        for number in (1, 2, 3):
            client.append("INBOX", None, None, _message(number))
        typ, data = client.enable("UIDONLY")
        assert typ == "OK" and client.response("ENABLED")[1] == [b"UIDONLY"]
        assert client.select("INBOX") == ("OK", [b"3"])
        with pytest.raises(imaplib.IMAP4.error, match="UIDREQUIRED"):
            client.fetch("1", "(FLAGS)")
        with pytest.raises(imaplib.IMAP4.error, match="UIDREQUIRED"):
            client.search(None, "ALL")
        typ, data = client.uid("FETCH", "2:3", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        typ, answers = client.response("UIDFETCH")
        bodies = [item for item in answers if isinstance(item, tuple)]
        assert [item[0].split(b" ")[0] for item in bodies] == [b"2", b"3"], answers
        assert b"from Bob #3" in bodies[1][1]
        assert client.uid("STORE", "1", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert client.response("UIDFETCH")[1] == [b"1 (FLAGS (\\Deleted \\Recent))"]   # the STORE's answer
        typ, data = client.expunge()
        assert typ == "OK" and client.response("VANISHED")[1] == [b"1"]
        assert client.response("EXPUNGE")[1] == [None]

        other.select("INBOX")
        line = _line_in_idle(client, lambda: other.uid("STORE", "2", "+FLAGS", "(\\Flagged)"))
        assert line == b"* 2 UIDFETCH (FLAGS (\\Flagged \\Recent))\r\n", line   # IMAP4rev1 shows \\Recent
    finally:
        other.logout()
        client.logout()


def _curl(server: GximapProcess, *args: str) -> subprocess.CompletedProcess:
    if not shutil.which("curl"):
        pytest.fail("curl is not installed: `make test` installs it")
    return subprocess.run(["curl", "-s", "-S", "--max-time", "20", "-k", "-u", "alice:secret", *args],
                          capture_output=True, timeout=60)


def test_curl_list_fetch_append(server: GximapProcess, tmp_path: Path) -> None:
    base = f"imaps://127.0.0.1:{server.tls_port}"
    eml = tmp_path / "msg.eml"
    eml.write_bytes(MESSAGE)
    out = _curl(server, "-T", str(eml), f"{base}/INBOX")
    assert out.returncode == 0, out.stderr
    out = _curl(server, f"{base}/")
    assert out.returncode == 0, out.stderr
    assert b"INBOX" in out.stdout and b"\\Sent" in out.stdout
    out = _curl(server, f"{base}/INBOX;UID=1")
    assert out.returncode == 0, out.stderr
    assert out.stdout == MESSAGE
    # STARTTLS on the plain port
    out = _curl(server, "--ssl-reqd", f"imap://127.0.0.1:{server.port}/INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"Subject:")


def _mbsync(config: Path) -> subprocess.CompletedProcess:
    if not shutil.which("mbsync"):
        pytest.fail("mbsync is not installed: `make test` installs isync")
    return subprocess.run(["mbsync", "-c", str(config), "-a"], capture_output=True, text=True, timeout=120)


def _maildir_files(path: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (path / sub).glob("*") if p.is_file())


def test_mbsync_two_way_sync_of_several_folders(server: GximapProcess, tmp_path: Path) -> None:
    client = _login(server)
    client.create("Work")
    for number in range(1, 4):
        client.append("INBOX", "(\\Seen)" if number == 1 else None, None, _message(number))
    client.append("Work", None, None, _message(10))
    client.logout()

    local = tmp_path / "local"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(f"""
IMAPAccount gx
Host 127.0.0.1
Port {server.tls_port}
User alice
Pass secret
SSLType IMAPS
CertificateFile {server.cert}

IMAPStore gx-remote
Account gx

MaildirStore gx-local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel gx
Far :gx-remote:
Near :gx-local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    out = _mbsync(config)
    assert out.returncode == 0, out.stdout + out.stderr
    inbox = _maildir_files(local / "INBOX")
    assert len(inbox) == 3
    assert len(_maildir_files(local / "Work")) == 1
    assert any(path.name.endswith(",S") or ":2,S" in path.name for path in inbox)

    # Local changes: a new message in Work, INBOX message flagged+seen, one deleted; a new folder.
    (local / "Work" / "new" / "1700000000.local.host").write_bytes(_message(20))
    target = next(path for path in inbox if ":2," in path.name and "S" not in path.name.split(":2,")[1])
    target.rename(target.with_name(target.name.split(":2,")[0] + ":2,FS"))
    victim = next(path for path in _maildir_files(local / "INBOX") if path != target)
    victim.unlink()
    for sub in ("cur", "new", "tmp"):
        (local / "Projects" / sub).mkdir(parents=True)
    (local / "Projects" / "new" / "1700000001.local.host").write_bytes(_message(30))
    out = _mbsync(config)
    assert out.returncode == 0, out.stdout + out.stderr

    client = _login(server)
    data: list[Any]   # the data of one command's response after another
    try:
        assert client.select("Work")[1] == [b"2"]
        typ, data = client.select("INBOX")
        assert data == [b"2"]
        typ, data = client.search(None, "FLAGGED SEEN")
        assert len(data[0].split()) == 1
        assert client.select("Projects")[1] == [b"1"]
    finally:
        client.logout()
    assert os.path.isdir(local / "Projects")


def test_imaplib_catenate_forwards_a_part(server: GximapProcess) -> None:
    """RFC 4469 CATENATE over a real connection: a new message made of the client's text and a
    part of a message already on the server (imaplib has no CATENATE: the command is sent raw,
    its literals non-synchronising, and the answer read with imaplib's own response reader)."""
    client = _login(server)
    try:
        typ, data = client.capability()
        assert typ == "OK" and b"CATENATE" in cast(bytes, data[0]).split()
        typ, data = client.append("INBOX", None, None, _message(1))
        assert typ == "OK", data
        typ, data = client.status("INBOX", "(UIDVALIDITY)")
        uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", cast(bytes, data[0])).group(1))  # type: ignore[union-attr]
        head = b"From: alice@example.org\r\nSubject: Fwd\r\n\r\n"

        def catenate(url: bytes) -> tuple[str, list[Any]]:
            tag = client._new_tag()  # noqa: SLF001 - registers the tag for _get_tagged_response
            client.send(tag + b' APPEND Drafts CATENATE (TEXT {%d+}\r\n%s URL "%s" TEXT {2+}\r\n\r\n)\r\n'
                        % (len(head), head, url))
            return client._get_tagged_response(tag)  # type: ignore[no-any-return]  # noqa: SLF001

        typ, data = catenate(b"/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=TEXT" % uidvalidity)
        assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1\]", cast(bytes, data[0])), data
        typ, data = catenate(b"/INBOX;UIDVALIDITY=%d/;UID=1" % (uidvalidity + 1))
        assert typ == "NO" and cast(bytes, data[0]).startswith(b"[BADURL /INBOX;UIDVALIDITY="), data
        assert client.select("Drafts") == ("OK", [b"1"])
        typ, data = client.fetch("1", "(BODY.PEEK[])")
        body = _message(1)
        assert typ == "OK" and data[0][1] == head + body[body.index(b"\r\n\r\n") + 4:] + b"\r\n"  # type: ignore[index]
    finally:
        client.logout()
