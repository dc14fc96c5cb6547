"""More real clients against the real gximap process: offlineimap (a full two-way sync),
fetchmail (polling, then IDLE), getmail (retrieve and delete) and mutt (driven through a
pseudo-terminal), plus raw-socket checks of pipelining and of streaming a 20 MB message.

Each client runs bounded in time, talks to 127.0.0.1 only, and is installed by ``make test``
(the Makefile's SYS_PKGS). The server's state is checked afterwards with Python's imaplib.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import imaplib
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from e2e import GximapProcess
from net_helpers import wait_until

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 60  # seconds any one client run may take


def _message(number: int, subject: str | None = None, body: str | None = None) -> bytes:
    return (f"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.org>\r\n"
            f"Subject: {subject or f'message {number}'}\r\nMessage-ID: <{number}.interop@example.org>\r\n"
            f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\n{body or f'body of message {number}'}\r\n").encode()


@pytest.fixture
def server(tmp_path: Path):
    directory = tmp_path / "server"
    directory.mkdir()
    proc = GximapProcess(directory).start()
    yield proc
    proc.stop()


def _tls_context(server: GximapProcess) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(server.cert))
    return context


def _imap(server: GximapProcess) -> imaplib.IMAP4_SSL:
    assert server.tls_port is not None
    client = imaplib.IMAP4_SSL("localhost", server.tls_port, ssl_context=_tls_context(server), timeout=15)
    client.login("alice", "secret")
    return client


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: `make test` installs it (Makefile SYS_PKGS)")
    return path


def _run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def _crlf(data: bytes) -> bytes:
    """Local mail files have LF line ends (the clients convert): compare in CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _client_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HOME"] = str(home)
    env.pop("MAIL", None)
    return env


def _server_messages(server: GximapProcess, mailbox: str) -> list[tuple[bytes, bytes]]:
    """(flags, message) of every message in the mailbox, by UID."""
    client = _imap(server)
    try:
        typ, data = client.select(f'"{mailbox}"', readonly=True)
        assert typ == "OK", data
        typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        assert typ == "OK", data
        out: list[tuple[bytes, bytes]] = []
        for item in data:
            if isinstance(item, tuple):
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                out.append((flags.group(1) if flags else b"", item[1]))
        return out
    finally:
        client.logout()


# -- offlineimap ---------------------------------------------------------------------------------


def _maildir_messages(path: Path) -> dict[str, bytes]:
    return {entry.name: _crlf(entry.read_bytes()) for sub in ("cur", "new") for entry in sorted((path / sub).glob("*"))}


def test_offlineimap_two_way_sync(server: GximapProcess, tmp_path: Path) -> None:
    _require("offlineimap")
    client = _imap(server)
    try:
        client.create('"Work/2026"')
        client.create('"My Folder"')
        for number in range(1, 4):
            client.append("INBOX", "(\\Seen)" if number == 1 else None, None, _message(number))
        client.append('"Work/2026"', None, None, _message(10))
        client.append('"My Folder"', "(\\Flagged)", None, _message(11))
    finally:
        client.logout()

    local = tmp_path / "Mail"
    config = tmp_path / "offlineimaprc"
    config.write_text(f"""
[general]
accounts = gx
metadata = {tmp_path / "offlineimap-meta"}
ui = quiet

[Account gx]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}
sep = .

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {server.tls_port}
remoteuser = alice
remotepass = secret
ssl = yes
sslcacertfile = {server.cert}
maxconnections = 1
""")

    def sync() -> None:
        out = _run(["offlineimap", "-c", str(config), "-o"], env=_client_env(tmp_path))
        assert out.returncode == 0 and "ERROR" not in out.stdout + out.stderr, out.stdout + out.stderr

    sync()
    inbox = _maildir_messages(local / "INBOX")
    assert sorted(inbox.values()) == sorted(_message(number) for number in range(1, 4))
    assert list(_maildir_messages(local / "Work.2026").values()) == [_message(10)]
    folder = _maildir_messages(local / "My Folder")
    assert list(folder.values()) == [_message(11)] and next(iter(folder)).endswith(",F")
    seen = [name for name, data in inbox.items() if data == _message(1)]
    assert seen[0].endswith(",S")

    # Local changes: flag one message, delete one, add a message and a folder.
    by_body = {data: name for name, data in inbox.items()}
    target = next(path for path in (local / "INBOX").glob("*/*") if path.name == by_body[_message(2)])
    target.rename(target.parent.parent / "cur" / (target.name.split(":2,")[0] + ":2,FS"))
    victim = next(path for path in (local / "INBOX").glob("*/*") if path.name == by_body[_message(3)])
    victim.unlink()
    (local / "INBOX" / "new" / "1700000000.P1Q1.localhost").write_bytes(_message(20))
    for sub in ("cur", "new", "tmp"):
        (local / "Projects" / sub).mkdir(parents=True)
    (local / "Projects" / "new" / "1700000001.P2Q2.localhost").write_bytes(_message(30))
    sync()

    messages = _server_messages(server, "INBOX")
    assert sorted(data for _flags, data in messages) == sorted([_message(1), _message(2), _message(20)])
    flags = {data: set(flag_bytes.split()) for flag_bytes, data in messages}
    assert flags[_message(2)] >= {b"\\Flagged", b"\\Seen"}
    assert [data for _flags, data in _server_messages(server, "Projects")] == [_message(30)]

    # Server-side changes reach the Maildir on the next run.
    client = _imap(server)
    try:
        client.select("INBOX")
        typ, data = client.search(None, "HEADER", "Message-ID", "<1.interop@example.org>")
        client.store(data[0].decode(), "+FLAGS", "(\\Deleted)")
        client.expunge()
        client.append("INBOX", None, None, _message(40))
    finally:
        client.logout()
    sync()
    assert sorted(_maildir_messages(local / "INBOX").values()) == sorted([_message(2), _message(20), _message(40)])


# -- fetchmail -----------------------------------------------------------------------------------


def _fetchmail_rc(home: Path, server: GximapProcess, outbox: Path, *options: str) -> Path:
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll localhost protocol IMAP port {server.tls_port}\n"
        '  user "alice" password "secret" is "alice" here\n'
        f"  ssl sslcertck sslcertfile {server.cert}\n"
        # Written under another name, then renamed: the test counts msg.* files as delivered
        # and read one half-written once (an empty message).
        f"  mda \"/bin/sh -c 'cat > {outbox}/part.$$ && mv {outbox}/part.$$ {outbox}/msg.$$'\"\n"
        + "".join(f"  {option}\n" for option in options)
    )
    rc.chmod(0o600)
    return rc


def _fetchmail_env(home: Path) -> dict[str, str]:
    env = _client_env(home)
    env["FETCHMAILHOME"] = str(home)
    return env


def _delivered(outbox: Path) -> list[bytes]:
    return sorted(_crlf(path.read_bytes()) for path in outbox.glob("msg.*"))


def test_fetchmail_poll_then_idle(server: GximapProcess, tmp_path: Path) -> None:
    _require("fetchmail")
    home = tmp_path / "fetchmail"
    outbox = tmp_path / "delivered"
    home.mkdir()
    outbox.mkdir()
    client = _imap(server)
    try:
        client.append("INBOX", "(\\Seen)", None, _message(1))
        client.append("INBOX", None, None, _message(2))
    finally:
        client.logout()

    # A poll that keeps the messages fetches only the unseen one and marks it \Seen.
    rc = _fetchmail_rc(home, server, outbox, "keep")
    out = _run(["fetchmail", "-f", str(rc), "--nodetach", "-v"], env=_fetchmail_env(home))
    assert out.returncode == 0, out.stdout + out.stderr
    assert [_without_fields(data, (b"received",)) for data in _delivered(outbox)] == [_message(2)]
    assert all(b"\\Seen" in flags for flags, _data in _server_messages(server, "INBOX"))

    # IDLE: fetch everything and delete it, then wait; a new message is delivered at once.
    for path in outbox.glob("msg.*"):
        path.unlink()
    rc = _fetchmail_rc(home, server, outbox, "fetchall", "idle")
    proc = subprocess.Popen(["fetchmail", "-f", str(rc), "--nodetach", "-v"], env=_fetchmail_env(home),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(_delivered(outbox)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_delivered(outbox)) == 2
        while _server_messages(server, "INBOX") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _server_messages(server, "INBOX") == []
        client = _imap(server)
        try:
            client.append("INBOX", None, None, _message(3))
        finally:
            client.logout()
        while len(_delivered(outbox)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        delivered = [_without_fields(data, (b"received",)) for data in _delivered(outbox)]
        assert sorted(delivered) == sorted(_message(number) for number in (1, 2, 3))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output = proc.communicate(timeout=10)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate(timeout=10)[0].decode(errors="replace")
    assert "IMAP> A0" in output and " IDLE" in output, output


# -- getmail -------------------------------------------------------------------------------------


def _without_fields(message: bytes, prefixes: tuple[bytes, ...]) -> bytes:
    """The message without the header fields whose (lower-case) names start with a prefix."""
    header, _sep, body = message.partition(b"\r\n\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.lower().startswith(prefixes)
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def test_getmail_retrieves_and_deletes(server: GximapProcess, tmp_path: Path) -> None:
    _require("getmail")
    client = _imap(server)
    try:
        client.create("Work")
        client.append("INBOX", None, None, _message(1))
        client.append("INBOX", "(\\Seen)", None, _message(2))
        client.append("Work", None, None, _message(3))
    finally:
        client.logout()
    home = tmp_path / "getmail"
    outbox = tmp_path / "delivered"
    home.mkdir()
    outbox.mkdir()
    rc = home / "getmailrc"
    rc.write_text(f"""
[retriever]
type = SimpleIMAPSSLRetriever
server = localhost
port = {server.tls_port}
username = alice
password = secret
ca_certs = {server.cert}
mailboxes = ("INBOX", "Work")

[destination]
type = MDA_external
path = /bin/sh
arguments = ("-c", "cat > {outbox}/msg.$$$$")
allow_root_commands = true

[options]
read_all = true
delete = true
verbose = 1
""")
    out = _run(["getmail", "--getmaildir", str(home), "--rcfile", str(rc)], env=_client_env(home))
    assert out.returncode == 0, out.stdout + out.stderr
    # getmail adds trace header fields; without them each message arrived unchanged.
    delivered = [_without_fields(data, (b"return-path", b"delivered-to", b"received", b"x-getmail-"))
                 for data in _delivered(outbox)]
    assert sorted(delivered) == sorted(_message(number) for number in (1, 2, 3))
    assert _server_messages(server, "INBOX") == [] and _server_messages(server, "Work") == []
    out = _run(["getmail", "--getmaildir", str(home), "--rcfile", str(rc)], env=_client_env(home))
    assert out.returncode == 0 and "0 messages" in out.stdout + out.stderr, out.stdout + out.stderr


# -- mutt ----------------------------------------------------------------------------------------


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, bytes]:
    """Run a full-screen program in a pseudo-terminal, draining its output; kill it at the
    deadline. Returns its exit status (None when it had to be killed) and the screen bytes."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the program closed the terminal
                    data = b""
                if not data:
                    break
                screen += data
            elif proc.poll() is not None:
                break
        # The terminal closes a moment before the program has exited: wait for it (bounded).
        try:
            status: int | None = proc.wait(max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            status = None
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        return status, bytes(screen)
    finally:
        os.close(master)


def test_mutt_reads_copies_and_deletes(server: GximapProcess, tmp_path: Path) -> None:
    _require("mutt")
    client = _imap(server)
    try:
        for number in range(1, 4):
            client.append("INBOX", None, None, _message(number, subject=f"mutt-{number}"))
    finally:
        client.logout()
    home = tmp_path / "mutt"
    home.mkdir()
    rc = home / "muttrc"
    # Plaintext with LOGIN (the test server allows it), so no certificate prompt can block.
    rc.write_text(f"""
set imap_user = alice
set imap_pass = secret
set folder = imap://127.0.0.1:{server.port}/
set spoolfile = +INBOX
set ssl_starttls = no
set ssl_force_tls = no
set header_cache = ""
set message_cachedir = ""
set record = ""
set mail_check = 60
set timeout = 60
set confirmappend = no
set confirmcreate = no
set delete = yes
set move = no
set quit = yes
set wait_key = no
set sort = subject
""")
    keys = ("<tag-pattern>~s mutt-2<enter><tag-prefix><copy-message>=Archive<enter>"
            "<delete-pattern>~s mutt-3<enter><sync-mailbox><quit>")
    env = _client_env(home)
    env["TERM"] = "vt100"
    status, screen = _run_in_pty(["mutt", "-n", "-F", str(rc), "-e", f'push "{keys}"'], env, CLIENT_TIMEOUT)
    shown = screen.decode(errors="replace")[-2000:]
    assert status == 0, shown
    inbox = [data for _flags, data in _server_messages(server, "INBOX")]
    assert sorted(inbox) == sorted([_message(1, subject="mutt-1"), _message(2, subject="mutt-2")]), shown
    archived = [data for _flags, data in _server_messages(server, "Archive")]
    assert archived == [_message(2, subject="mutt-2")], shown


# -- raw sockets: pipelining and a 20 MB message -----------------------------------------------


class _RawClient:
    """Just enough IMAP to read responses (literals included) from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        sock.settimeout(30)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def read_exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def read_line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        return self.read_exact(end + 2)

    def read_response(self) -> tuple[bytes, list[bytes]]:
        """One logical response: its line text (literal announcements kept) and its literals."""
        text = b""
        literals: list[bytes] = []
        while True:
            line = self.read_line()
            text += line[:-2]
            match = re.search(rb"\{(\d+)\}\Z", line[:-2])
            if match is None:
                return text, literals
            literals.append(self.read_exact(int(match.group(1))))

    def command(self, tag: bytes, text: bytes) -> list[tuple[bytes, list[bytes]]]:
        self.sock.sendall(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> list[tuple[bytes, list[bytes]]]:
        responses = []
        while True:
            response = self.read_response()
            responses.append(response)
            if response[0].startswith(tag + b" "):
                return responses


def _raw_connect(server: GximapProcess, use_tls: bool, user: str = "alice") -> _RawClient:
    sock = socket.create_connection(("127.0.0.1", server.tls_port if use_tls else server.port), timeout=30)
    if use_tls:
        sock = _tls_context(server).wrap_socket(sock, server_hostname="localhost")
    client = _RawClient(sock)
    assert client.read_line().startswith(b"* OK")
    assert client.command(b"L", b"LOGIN %s secret" % user.encode())[-1][0].startswith(b"L OK")
    return client


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_fifty_pipelined_commands_in_one_packet(server: GximapProcess, use_tls: bool) -> None:
    client = _raw_connect(server, use_tls)
    try:
        for number in range(1, 6):
            data = _message(number)
            assert client.command(b"A%d" % number, b"APPEND INBOX {%d+}\r\n" % len(data) + data)[-1][0] \
                .startswith(b"A%d OK [APPENDUID" % number)
        assert client.command(b"S", b"SELECT INBOX")[-1][0].startswith(b"S OK [READ-WRITE]")
        kinds = [b"NOOP", b"FETCH 1:5 (UID FLAGS)", b"STORE 2 +FLAGS (\\Flagged)", b"SEARCH FLAGGED",
                 b"UID FETCH 3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])", b"STORE 2 -FLAGS.SILENT (\\Flagged)",
                 b"UID SEARCH ALL", b"FETCH 4 RFC822.SIZE", b"CHECK", b"STATUS INBOX (MESSAGES)"]
        commands = [kinds[index % len(kinds)] for index in range(50)]
        packet = b"".join(b"p%02d %s\r\n" % (index, command) for index, command in enumerate(commands))
        client.sock.sendall(packet)
        tagged: list[bytes] = []
        untagged: dict[int, list[tuple[bytes, list[bytes]]]] = {}
        while len(tagged) < 50:
            text, literals = client.read_response()
            if text.startswith(b"* "):
                untagged.setdefault(len(tagged), []).append((text, literals))
            else:
                tagged.append(text)
        assert [line.split(b" ")[0] for line in tagged] == [b"p%02d" % index for index in range(50)]
        assert all(line.split(b" ")[1] == b"OK" for line in tagged), tagged
        for index, command in enumerate(commands):
            responses = untagged.get(index, [])
            if command == b"SEARCH FLAGGED":
                assert responses == [(b"* SEARCH 2", [])]
            elif command.startswith(b"UID FETCH 3"):
                assert responses[0][1] == [b"Subject: message 3\r\n\r\n"]
            elif command == b"FETCH 1:5 (UID FLAGS)":
                assert [text.split(b" (")[0] for text, _ in responses] == [b"* %d FETCH" % n for n in range(1, 6)]
            elif command == b"UID SEARCH ALL":
                assert responses == [(b"* SEARCH 1 2 3 4 5", [])]
    finally:
        client.sock.close()


def _open_spool_files(server: GximapProcess) -> list[str]:
    """The literal spool files open in any process (the serving one may be a child of
    ``server.proc``): unnamed files in midb_path, which /proc shows as "DIR/#INODE (deleted)"
    (O_TMPFILE) or "DIR/.spool-... (deleted)"."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for entry in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(entry)
                    directory, _, name = target.rpartition("/")
                    if directory == str(server.midb) and name.startswith(("#", ".spool-")):
                        found.append(target)
    return found


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_fetch_of_a_20_mb_message_streams_intact(server: GximapProcess, use_tls: bool) -> None:
    text = b"".join(bytes([33 + (index % 90)]) for index in range(76))
    body = b"".join(text[index % 76:] + text[:index % 76] + b"\r\n" for index in range(20 * 1024 * 1024 // 78))
    data = b"From: big@example.org\r\nSubject: twenty megabytes\r\n\r\n" + body
    client = _raw_connect(server, use_tls)
    try:
        client.sock.sendall(b"A APPEND INBOX {%d+}\r\n" % len(data))
        client.sock.sendall(data[: 10 << 20])
        # The literal waits in an unnamed temporary file in midb_path (gximap.session.literalspool).
        assert wait_until(lambda: bool(_open_spool_files(server)), timeout=10, interval=0.05), \
            "no spool file while the literal arrived"
        client.sock.sendall(data[10 << 20 :] + b"\r\n")
        assert client.until(b"A")[-1][0].startswith(b"A OK [APPENDUID")
        assert _open_spool_files(server) == [], "the temporary file outlived the command"
        assert client.command(b"S", b"EXAMINE INBOX")[-1][0].startswith(b"S OK")
        responses = client.command(b"F", b"FETCH 1 (RFC822.SIZE BODY.PEEK[])")
        assert responses[0][0].startswith(b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}" % (len(data), len(data)))
        assert hashlib.sha256(responses[0][1][0]).digest() == hashlib.sha256(data).digest()
        assert responses[0][0].endswith(b")") and responses[-1][0].startswith(b"F OK")
        # Partial fetches across the streaming chunk boundaries, and BINARY of the text.
        start, length = (1 << 20) - 5, 3 * (1 << 20) + 11
        responses = client.command(b"G", b"FETCH 1 (BODY.PEEK[]<%d.%d> BINARY.PEEK[1]<0.100>)" % (start, length))
        assert responses[0][1] == [data[start:start + length], body[:100]]
        responses = client.command(b"H", b"UID FETCH 1 (BODY.PEEK[TEXT])")
        assert responses[0][1][0] == body
    finally:
        client.sock.close()



MULTIPART = (
    b"From: Carol <carol@example.org>\r\nTo: alice@example.org\r\nSubject: report\r\n"
    b"Message-ID: <report@example.org>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=sep\r\n\r\n"
    b"--sep\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attachment\r\n"
    b"--sep\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"JVBERi0xLjQK\r\n--sep--\r\n"
)

# What widespread clients send on their first sync, as seen in their protocol logs: each must be
# answered with OK (a BAD here would make that client give up or loop).
CLIENT_TRAFFIC = {
    "thunderbird": [
        b'ID ("name" "Thunderbird" "version" "115.0")',
        b"NAMESPACE",
        b'LIST (SPECIAL-USE) "" "*"',
        b'LSUB "" "*"',
        b'LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)',
        b'SELECT "INBOX"',
        b"UID fetch 1:* (FLAGS)",
        b"UID fetch 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
        b"Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])",
        b"UID fetch 2 (UID RFC822.SIZE BODY.PEEK[]<0.10240>)",
        b"UID store 1 +FLAGS (\\Seen)",
        b'UID COPY 1 "Trash"',
        b'APPEND "Sent" (\\Seen) {%d+}\r\n' % len(MULTIPART) + MULTIPART,
        b'STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT)',
        b"NOOP",
    ],
    "apple-mail": [
        b'ID ("name" "Mac OS X Mail" "version" "16.0")',
        b'LIST "" ""',
        b'LIST "" "*"',
        b'EXAMINE "INBOX"',
        b"UID SEARCH 1:* NOT DELETED",
        b"UID FETCH 1:* (FLAGS)",
        b"UID FETCH 2 (BODYSTRUCTURE BODY.PEEK[HEADER])",
        b"UID FETCH 2 (BODY.PEEK[1.MIME] BODY.PEEK[1] BODY.PEEK[2]<0.5000>)",
        b"UNSELECT",
    ],
    "outlook": [
        b'XLIST "" "*"',
        b"SELECT INBOX",
        b"FETCH 1:* (UID FLAGS)",
        b"UID FETCH 1:2 (UID RFC822.SIZE FLAGS INTERNALDATE ENVELOPE BODYSTRUCTURE)",
        b"UID FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[TEXT])",
        b"UID STORE 2 +FLAGS.SILENT (\\Seen $Forwarded)",
        b'APPEND "Drafts" (\\Draft \\Seen) "05-Mar-2024 10:11:12 +0100" {%d+}\r\n' % len(MULTIPART)
        + MULTIPART,
        b"EXPUNGE",
        b"CHECK",
    ],
    "k9-fairemail": [
        b'LIST "" "*"',
        b"SELECT INBOX",
        b"UID SEARCH 1:* NOT DELETED",
        b"UID FETCH 1:2 (UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (date subject from "
        b"content-type to cc reply-to message-id references in-reply-to X-K9mail-Identity)])",
        b"UID FETCH 2 (UID BODYSTRUCTURE)",
        b"UID FETCH 2 (UID BODY.PEEK[2.MIME] BODY.PEEK[2])",
        b"UID STORE 1 +FLAGS.SILENT (\\Flagged)",
        b'UID MOVE 1 "Archive"',
        b"CLOSE",
    ],
}


@pytest.fixture(scope="module")
def traffic_server(tmp_path_factory: pytest.TempPathFactory):
    """One server for the client replays, with an account per client (they change mailboxes)."""
    directory = tmp_path_factory.mktemp("traffic")
    proc = GximapProcess(directory, accounts={name: "secret" for name in CLIENT_TRAFFIC},
                         extra={"enable_rfc2971_commands": "yes"}).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("client_name", sorted(CLIENT_TRAFFIC))
def test_typical_client_traffic_is_accepted(traffic_server: GximapProcess, client_name: str) -> None:
    client = _raw_connect(traffic_server, use_tls=True, user=client_name)
    try:
        for tag, data in ((b"m1", _message(1)), (b"m2", MULTIPART)):
            client.command(tag, b"APPEND INBOX {%d+}\r\n" % len(data) + data)
        for number, command in enumerate(CLIENT_TRAFFIC[client_name]):
            tag = b"c%d" % number
            responses = client.command(tag, command)
            assert responses[-1][0].startswith(tag + b" OK"), (command, responses)
        assert client.command(b"z", b"LOGOUT")[-1][0].startswith(b"z OK")
    finally:
        client.sock.close()
