"""imapfilter (the Lua-scripted filter sysadmins run from cron or as a daemon) against the real
gximap process: a filter run that selects by subject, sender, body, size, age and flags, marks,
copies, moves (within an account, into a non-ASCII folder it creates, and to a second account),
deletes and reads STATUS; an ``enter_idle()`` loop woken by LMTP deliveries; and a script that
reads one message's structure, parts and flags, appends it elsewhere and keeps folders (create,
rename, subscribe, delete) under non-ASCII names.

imapfilter checks the test's self-signed certificate as its users' configurations do, against a
trust store (``-t``); one account uses implicit TLS, the other STARTTLS on the plain port, where
plaintext logins are refused. HOME points into tmp_path, each run is bounded in time, everything
talks to 127.0.0.1, and the server's state is checked afterwards with imaplib (exact UIDs, flags,
folders, bytes), and its command log for how imapfilter went about it.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from e2e import GximapProcess, free_port

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 30  # seconds any one imapfilter run may take
ACCOUNTS = {"alice": "secret", "bob": "hunter2"}
# The arrival (INTERNALDATE) of the test's messages, yesterday: kept when mail crosses accounts,
# and not older than is_older(365) (the one old message is given a date of its own).
QUOTED_ARRIVAL = imaplib.Time2Internaldate(time.time() - 86400)
ARRIVAL = QUOTED_ARRIVAL.strip('"')


@pytest.fixture
def lmtp_port() -> int:
    return free_port()


@pytest.fixture
def server(tmp_path: Path, lmtp_port: int):
    directory = tmp_path / "server"
    directory.mkdir()
    proc = GximapProcess(directory, accounts=ACCOUNTS, extra={
        # No password over plaintext: the STARTTLS account proves imapfilter upgraded first.
        "insecure_auth": "no",
        "lmtp_listen": f"127.0.0.1:{lmtp_port}",
        "delivery_map": "email_localpart",
    })
    proc.start()
    yield proc
    proc.stop()


def _require_imapfilter() -> None:
    if shutil.which("imapfilter") is None:
        pytest.fail("imapfilter is not installed: `make test` installs it (Makefile SYS_PKGS)")


def _imap(server: GximapProcess, user: str = "alice") -> imaplib.IMAP4_SSL:
    assert server.tls_port is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(server.cert))
    client = imaplib.IMAP4_SSL("localhost", server.tls_port, ssl_context=context, timeout=15)
    client.login(user, ACCOUNTS[user])
    return client


def _message(key: str, *, sender: str = "Bob <bob@example.org>", to: str = "Alice <alice@example.org>",
             subject: str | None = None, body: str | None = None) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject or key}\r\n"
            f"Message-ID: <{key}.imapfilter@example.org>\r\nDate: Tue, 4 Mar 2025 12:00:00 +0100\r\n"
            f"\r\n{body or f'body of {key}'}\r\n").encode()


def _accounts_lua(server: GximapProcess) -> str:
    return (
        "options.timeout = 20\n"
        "options.info = false\n"
        # alice: implicit TLS, as a user given port 993 writes it.
        f"alice = IMAP {{ server = 'localhost', port = {server.tls_port}, username = 'alice',"
        " password = 'secret', ssl = 'auto' }\n"
        # bob: the plain port, which imapfilter upgrades with STARTTLS (options.starttls, default).
        f"bob = IMAP {{ server = 'localhost', port = {server.port}, username = 'bob', password = 'hunter2' }}\n"
    )


def _imapfilter(server: GximapProcess, home: Path, script: str, debug: Path | None = None) -> list[str]:
    """imapfilter's command line: its own config, the test certificate as its only trust store."""
    home.mkdir(exist_ok=True)
    config = home / "config.lua"
    config.write_text(_accounts_lua(server) + script)
    config.chmod(0o600)
    args = ["imapfilter", "-c", str(config), "-t", str(server.cert)]
    if debug is not None:
        args += ["-d", str(debug)]
    return args


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HOME"] = str(home)
    env.pop("IMAPFILTER_HOME", None)
    return env


def _mailbox(server: GximapProcess, user: str, mailbox: str) -> dict[int, tuple[set[bytes], bytes, bytes]]:
    """UID -> (flags but \\Recent, INTERNALDATE, message) of every message in the mailbox."""
    client = _imap(server, user)
    try:
        typ, data = client.select(f'"{mailbox}"', readonly=True)
        assert typ == "OK", (mailbox, data)
        typ, data = client.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
        assert typ == "OK", data
        out: dict[int, tuple[set[bytes], bytes, bytes]] = {}
        for item in data:
            if isinstance(item, tuple):
                uid = re.search(rb"UID (\d+)", item[0])
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                date = re.search(rb'INTERNALDATE "([^"]+)"', item[0])
                assert uid and flags and date, item[0]
                # \Recent says which session saw the message first, not what imapfilter did.
                out[int(uid.group(1))] = (set(flags.group(1).split()) - {b"\\Recent"}, date.group(1), item[1])
        return out
    finally:
        client.logout()


def _imapfilter_commands(server: GximapProcess) -> list[tuple[str, str, str, str]]:
    """(connection, user, status, command) of every command imapfilter sent, from the log lines of
    imap_cmd_debug = 2. imapfilter's tags are four hex digits from 1000; imaplib's are letters."""
    found = []
    for line in server.log().splitlines():
        match = re.search(r" cmd conn=(\S+) rhost=\S+ user=(\S+) (\w+): ([0-9A-F]{4}) (.*)$", line)
        if match:
            found.append((match.group(1), match.group(2), match.group(3), match.group(5)))
    return found


def test_imapfilter_filters_marks_copies_moves_and_deletes(server: GximapProcess, tmp_path: Path) -> None:
    _require_imapfilter()
    big_body = "attachment line\r\n" * 4000  # 68 KB: over is_larger(50000)
    inbox = {
        1: ("old-list", _message("old-list", sender="News <news@lists.example.org>"), "02-Jan-2020 08:00:00 +0000",
            None),
        2: ("invoice", _message("invoice", sender="Billing <billing@shop.example>", subject="Invoice 42 for March"),
            ARRIVAL, None),
        3: ("big", _message("big", subject="scans", body=big_body), ARRIVAL, "(\\Seen)"),
        4: ("digest", _message("digest", sender="News <news@lists.example.org>",
                               body="weekly-digest-token-7f3a\r\nmore news"), ARRIVAL, None),
        5: ("for-bob", _message("for-bob", to="Bob <bob@example.org>", subject="forward to bob"), ARRIVAL,
            "(\\Flagged)"),
        6: ("koeln", _message("koeln", subject="=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="), ARRIVAL, None),
        7: ("report-unseen", _message("report-unseen", subject="monthly report"), ARRIVAL, None),
        8: ("report-seen", _message("report-seen", subject="annual report"), ARRIVAL, "(\\Seen)"),
    }
    client = _imap(server)
    try:
        client.create("Newsletters")
        client.create("Large")
        client.append("Newsletters", "(\\Seen)", QUOTED_ARRIVAL, _message("older-digest"))
        for uid, (_key, message, date, flags) in inbox.items():
            typ, answer = client.append("INBOX", flags, f'"{date}"', message)
            assert typ == "OK" and f" {uid}]".encode() in answer[0], answer
    finally:
        client.logout()
    client = _imap(server, "bob")
    try:
        client.append("INBOX", None, QUOTED_ARRIVAL, _message("bobs-own"))
    finally:
        client.logout()

    script = """
options.charset = 'UTF-8'
local inbox = alice.INBOX
-- Age and sender: list mail older than a year goes.
local stale = inbox:is_older(365) * inbox:contain_from('lists.example.org')
stale:delete_messages()
-- Subject: flag invoices and file them in a folder made now, with a non-ASCII name.
alice:create_mailbox('Archiv/Büro')
local invoices = inbox:contain_subject('invoice')
invoices:mark_flagged()
invoices:move_messages(alice['Archiv/Büro'])
-- Size: keep a copy of large mail, and tag the original.
local large = inbox:is_larger(50000)
large:copy_messages(alice.Large)
large:add_flags({ '$Big' })
-- Body: newsletters by their token.
inbox:contain_body('weekly-digest-token'):move_messages(alice.Newsletters)
-- Recipient and flag, to another account (downloaded, appended there, deleted here).
local for_bob = inbox:contain_to('bob@example.org') * inbox:is_flagged()
for_bob:move_messages(bob.INBOX)
-- A UTF-8 search.
inbox:contain_subject('Köln'):mark_seen()
-- Flags: unseen reports are to do.
local todo = inbox:is_unseen() * inbox:contain_subject('report')
todo:add_flags({ '$Todo' })
print('status', inbox:check_status())
print('archive', alice['Archiv/Büro']:check_status())
print('bob', bob.INBOX:check_status())
local mailboxes = alice:list_all('Archiv', '%')
print('listed', table.concat(mailboxes, ','))
"""
    home = tmp_path / "home"
    args = _imapfilter(server, home, script)
    out = subprocess.run(args, env=_env(home), capture_output=True, text=True, timeout=CLIENT_TIMEOUT,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    # check_status(): MESSAGES, RECENT, UNSEEN, UIDNEXT. INBOX keeps 3, 6, 7 and 8, of which 7 unseen;
    # bob has his own unseen message and the flagged one moved to him.
    printed = {line.split("\t")[0]: line.split("\t")[1:] for line in out.stdout.splitlines() if "\t" in line}
    assert [printed["status"][i] for i in (0, 2, 3)] == ["4", "1", "9"], out.stdout
    assert [printed["archive"][i] for i in (0, 2, 3)] == ["1", "1", "2"], out.stdout
    assert [printed["bob"][i] for i in (0, 2, 3)] == ["2", "2", "3"], out.stdout
    assert printed["listed"] == ["Archiv/Büro"], out.stdout
    # Nothing written outside tmp_path; imapfilter keeps its state under HOME.
    assert {path.name for path in home.iterdir()} <= {"config.lua", ".imapfilter"}

    original = {key: message for key, message, _date, _flags in inbox.values()}
    assert _mailbox(server, "alice", "INBOX") == {
        3: ({b"\\Seen", b"$Big"}, ARRIVAL.encode(), original["big"]),
        6: ({b"\\Seen"}, ARRIVAL.encode(), original["koeln"]),
        7: ({b"$Todo"}, ARRIVAL.encode(), original["report-unseen"]),
        8: ({b"\\Seen"}, ARRIVAL.encode(), original["report-seen"]),
    }
    # The folder imapfilter created is stored under its modified UTF-7 name (RFC 3501 5.1.3).
    assert _mailbox(server, "alice", "Archiv/B&APw-ro") == {1: ({b"\\Flagged"}, ARRIVAL.encode(), original["invoice"])}
    assert _mailbox(server, "alice", "Large") == {1: ({b"\\Seen"}, ARRIVAL.encode(), original["big"])}
    newsletters = _mailbox(server, "alice", "Newsletters")
    assert sorted(newsletters) == [1, 2] and newsletters[2] == (set(), ARRIVAL.encode(), original["digest"])
    # Across accounts imapfilter fetches flags, date and bytes, and appends them unchanged.
    bobs = _mailbox(server, "bob", "INBOX")
    assert sorted(bobs) == [1, 2] and bobs[2] == ({b"\\Flagged"}, ARRIVAL.encode(), original["for-bob"])

    # Nothing lost, nothing doubled: every message once, but the copied one twice and the deleted one gone.
    everywhere = Counter(re.search(rb"Message-ID: <([^.]+)\.", message).group(1).decode()  # type: ignore[union-attr]
                         for user, mailboxes in (("alice", ("INBOX", "Archiv/B&APw-ro", "Large", "Newsletters")),
                                                 ("bob", ("INBOX",)))
                         for name in mailboxes
                         for _flags, _date, message in _mailbox(server, user, name).values())
    expected = Counter(key for key, *_rest in inbox.values() if key != "old-list")
    expected.update(["big", "older-digest", "bobs-own"])
    assert everywhere == expected

    commands = _imapfilter_commands(server)
    assert commands and all(status == "OK" for _conn, _user, status, _command in commands), commands
    alice_commands = [command for _conn, user, _status, command in commands if user == "alice"]
    assert 'CREATE "Archiv/B&APw-ro"' in alice_commands
    # imapfilter 2.8 moves within an account as COPY, STORE \Deleted, EXPUNGE (it never sends MOVE,
    # though gximap offers it); a later imapfilter that uses MOVE must get it right just as well.
    if not any(command.startswith("UID MOVE ") for command in alice_commands):
        at = alice_commands.index('UID COPY 2 "Archiv/B&APw-ro"')
        assert alice_commands[at + 1:at + 3] == ["UID STORE 2 +FLAGS.SILENT (\\Deleted)", "EXPUNGE"], alice_commands
    assert 'UID SEARCH CHARSET "UTF-8" ALL SUBJECT "Köln"' in alice_commands
    # bob's connection: STARTTLS before LOGIN (plaintext logins are refused here), then the APPEND
    # that carries alice's message with its flags and date.
    bob_conn = next(conn for conn, user, _status, _command in commands if user == "bob")
    bob_commands = [command for conn, _user, _status, command in commands if conn == bob_conn]
    assert bob_commands.index("STARTTLS") < bob_commands.index('LOGIN "bob" ***'), bob_commands
    assert f'APPEND "INBOX" (\\Flagged) "{ARRIVAL}" {{{len(original["for-bob"])}}}' in bob_commands, bob_commands


def _wait_in_idle(debug: Path, times: int, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until imapfilter's debug output (-d, written as it goes) shows the server's IDLE
    continuation for the ``times``-th time: from then on, a new message must wake it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if len(re.findall(r"^\+ ", debug.read_text(errors="replace"), re.M)) >= times:
                return
        if proc.poll() is not None:
            raise AssertionError(f"imapfilter exited with {proc.returncode} before IDLE number {times}")
        time.sleep(0.05)
    raise AssertionError(f"imapfilter was not in IDLE number {times} within {timeout} s")


def _urgent(number: int) -> bytes:
    return _message(f"urgent-{number}", sender="Boss <boss@example.org>", subject=f"urgent {number}")


def test_imapfilter_idle_wakes_on_delivery(server: GximapProcess, lmtp_port: int, tmp_path: Path) -> None:
    _require_imapfilter()
    client = _imap(server)
    try:
        client.create("Urgent")
        client.append("INBOX", "(\\Seen)", QUOTED_ARRIVAL, _message("earlier"))
    finally:
        client.logout()
    # The loop an imapfilter daemon runs: wait in IDLE, file what came, wait again (twice here).
    script = """
for round = 1, 2 do
    local update, event = alice.INBOX:enter_idle()
    print('woke', round, tostring(update), tostring(event))
    alice.INBOX:contain_subject('urgent'):move_messages(alice.Urgent)
end
"""
    home = tmp_path / "home"
    debug = home / "debug.log"
    proc = subprocess.Popen(_imapfilter(server, home, script, debug), env=_env(home), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for round_number in (1, 2):
            # imapfilter sends no literal here, so every continuation is an IDLE's.
            _wait_in_idle(debug, round_number, proc, 15)
            with smtplib.LMTP("127.0.0.1", lmtp_port, timeout=15) as mta:
                mta.sendmail("boss@example.org", ["alice@example.org"], _urgent(round_number))
        output = proc.communicate(timeout=CLIENT_TIMEOUT)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
    assert proc.returncode == 0, output
    woke = [line.split("\t") for line in output.splitlines() if line.startswith("woke")]
    assert [fields[:3] for fields in woke] == [["woke", "1", "true"], ["woke", "2", "true"]], output
    assert all(fields[3] in ("EXISTS", "RECENT") for fields in woke), output

    inbox = _mailbox(server, "alice", "INBOX")
    assert [message for _flags, _date, message in inbox.values()] == [_message("earlier")]
    urgent = _mailbox(server, "alice", "Urgent")
    assert sorted(urgent) == [1, 2]
    # Each delivered message once, as sent below the trace fields LMTP adds, and still unseen.
    for uid, (flags, _date, message) in urgent.items():
        assert flags == set() and message.endswith(_urgent(uid)), urgent
    commands = [command for _conn, user, _status, command in _imapfilter_commands(server) if user == "alice"]
    assert commands.count("IDLE") == 2, commands


def test_imapfilter_reads_parts_appends_and_manages_folders(server: GximapProcess, tmp_path: Path) -> None:
    _require_imapfilter()
    multipart = (b"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.org>\r\nSubject: scan attached\r\n"
                 b"Message-ID: <multipart.imapfilter@example.org>\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
                 b"--XX\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nsee the scan\r\n"
                 b'--XX\r\nContent-Type: application/pdf; name="scan.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
                 b'Content-Disposition: attachment; filename="scan.pdf"\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n')
    client = _imap(server)
    try:
        client.append("INBOX", "(\\Seen $Label1)", QUOTED_ARRIVAL, multipart)
    finally:
        client.logout()
    # What scripts do with single messages (from fetch_structure() to pipe_to()-style processing),
    # and folder housekeeping under non-ASCII names.
    script = """
local message = alice.INBOX[1]
local parts = message:fetch_structure()
for _, id in ipairs({ '1', '2' }) do
    print('part', id, parts[id].type, parts[id].size, tostring(parts[id].name))
end
print('text', (message:fetch_part('1'):gsub('\\r\\n', '|')))
print('subject', (message:fetch_field('Subject'):gsub('\\r\\n', '')))
print('flags', table.concat(message:fetch_flags(), ' '))
print('date', message:fetch_date())
alice:create_mailbox('Projekte/Ärger')
alice:rename_mailbox('Projekte/Ärger', 'Projekte/Übersicht')
alice:subscribe_mailbox('Projekte/Übersicht')
alice['Projekte/Übersicht']:append_message(message:fetch_message(), { '\\\\Answered', '$Label2' }, message:fetch_date())
local subscribed = alice:list_subscribed('Projekte', '%')
print('subscribed', table.concat(subscribed, ','))
alice:create_mailbox('Projekte/Löschen')
alice:delete_mailbox('Projekte/Löschen')
print('listed', table.concat(alice:list_all('Projekte', '%'), ','))
"""
    home = tmp_path / "home"
    out = subprocess.run(_imapfilter(server, home, script), env=_env(home), capture_output=True, text=True,
                         timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line.split("\t") for line in out.stdout.splitlines() if "\t" in line]
    assert lines == [
        # RFC 2046 5.1.1: the CRLF before a boundary belongs to the boundary, not to the part.
        ["part", "1", "text/plain", "12", "nil"],
        ["part", "2", "application/pdf", "12", "scan.pdf"],
        ["text", "see the scan"],
        ["subject", "Subject: scan attached"],
        # imapfilter's session is the first to select INBOX (RFC 3501 2.3.2).
        ["flags", "\\Seen $Label1 \\Recent"],
        ["date", ARRIVAL],
        ["subscribed", "Projekte/Übersicht"],
        ["listed", "Projekte/Übersicht"],
    ], out.stdout

    # RFC 3501 5.1.3: the names are kept in modified UTF-7; the renamed-away and deleted ones are gone.
    client = _imap(server)
    try:
        for typ, listed in (client.list('""', "Projekte/*"), client.lsub('""', "Projekte/*")):
            names = [line.rsplit(b" ", 1)[1].strip(b'"') for line in listed if isinstance(line, bytes)]
            assert typ == "OK" and names == [b"Projekte/&ANw-bersicht"], listed
    finally:
        client.logout()
    assert _mailbox(server, "alice", "Projekte/&ANw-bersicht") == {1: ({b"\\Answered", b"$Label2"}, ARRIVAL.encode(),
                                                                       multipart)}
    assert _mailbox(server, "alice", "INBOX") == {1: ({b"\\Seen", b"$Label1"}, ARRIVAL.encode(), multipart)}
    commands = _imapfilter_commands(server)
    assert commands and all(status == "OK" for _conn, _user, status, _command in commands), commands
