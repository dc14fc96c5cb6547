"""COMPRESS=DEFLATE (RFC 4978) on the wire, against the real gximap process: a raw zlib client
(plain and under TLS, including an IDLE push through the compressed stream) and mutt, a real
client, with imap_deflate over implicit TLS."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import zlib

import pytest
from e2e import DATA_DIR, GximapProcess
from net_helpers import wait_until

from midb.store import Store

pytestmark = pytest.mark.e2e

# Compressible, like real mail: repeated header-ish text.
BODY = b"".join(b"Line %05d: the quick brown fox jumps over the lazy dog.\r\n" % n for n in range(4000))
MESSAGE = b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: big\r\n\r\n" + BODY


class DeflateClient:
    """A minimal IMAP client speaking raw DEFLATE (zlib wbits -15) once COMPRESS succeeded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""
        self.wire_bytes = 0  # octets received from the socket (compressed once active)
        self.plain_bytes = 0  # octets of IMAP data they carried
        self._deflate: zlib._Compress | None = None
        self._inflate: zlib._Decompress | None = None

    def start_compression(self) -> None:
        assert not self.pending, "the server sent data behind the COMPRESS response"
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)

    def send(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """Everything up to the end of the line holding ``marker``."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.pending.find(marker)
            if at >= 0:
                end = self.pending.find(b"\r\n", at)
                if end >= 0:
                    data, self.pending = self.pending[:end + 2], self.pending[end + 2:]
                    return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {marker!r} within {timeout}s; have {self.pending[-300:]!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed; have {self.pending[-300:]!r}")
            self.wire_bytes += len(chunk)
            if self._inflate is not None:
                chunk = self._inflate.decompress(chunk)
            self.plain_bytes += len(chunk)
            self.pending += chunk

    def command(self, tag: str, text: bytes, timeout: float = 10.0) -> bytes:
        self.send(tag.encode() + b" " + text + b"\r\n")
        reply = self.read_until(tag.encode() + b" ", timeout)
        assert reply.splitlines()[-1].startswith(tag.encode() + b" OK"), reply[-500:]
        return reply


def _tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("compress")
    proc = GximapProcess(directory).start()
    yield proc
    proc.stop()


def _connect(server: GximapProcess, *, tls: bool) -> DeflateClient:
    sock = socket.create_connection(("127.0.0.1", server.tls_port if tls else server.port), timeout=10)
    if tls:
        sock = _tls_context().wrap_socket(sock, server_hostname="localhost")
    client = DeflateClient(sock)
    client.read_until(b"* OK")
    return client


def _login_and_compress(client: DeflateClient, tag: str = "c1") -> None:
    caps = client.command("l1", b"LOGIN alice secret")
    assert b"COMPRESS=DEFLATE" in caps
    reply = client.command(tag, b"COMPRESS DEFLATE")
    assert reply == tag.encode() + b" OK DEFLATE active\r\n"
    client.start_compression()


def test_raw_zlib_client(server):
    client = _connect(server, tls=False)
    try:
        _login_and_compress(client)
        caps = client.command("a1", b"CAPABILITY")
        assert b"IMAP4rev1" in caps and b"COMPRESS=DEFLATE" not in caps
        client.send(b"a2 APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
        assert b"a2 OK [APPENDUID" in client.read_until(b"a2 ")
        client.command("a3", b"SELECT INBOX")
        plain_before, wire_before = client.plain_bytes, client.wire_bytes
        reply = client.command("a4", b"UID FETCH 1:* (BODY.PEEK[])")
        assert MESSAGE in reply
        # The body went through DEFLATE: far fewer octets on the wire than it holds.
        assert client.wire_bytes - wire_before < (client.plain_bytes - plain_before) / 4
        client.send(b"a5 LOGOUT\r\n")
        assert b"* BYE" in client.read_until(b"a5 OK")
    finally:
        client.sock.close()


@pytest.mark.parametrize("client_ends", ["never", "late", "garbage"])
def test_unauthenticate_ends_compression_on_the_wire(server, client_ends):
    """RFC 8437 section 4.1: the server's DEFLATE stream ends after the CRLF of UNAUTHENTICATE's
    OK (its final block), the client's after the command; the next login is in plain text, and
    COMPRESS may start again. A client that ends its stream (zlib's Z_FINISH) only once it has
    the answer sends that end in front of its first plain command, which is read as such;
    bytes that are no such end stay plain input."""
    client = _connect(server, tls=False)
    try:
        _login_and_compress(client)
        client.send(b"u1 UNAUTHENTICATE\r\n")
        assert client.read_until(b"u1 ") == b"u1 OK UNAUTHENTICATE completed\r\n"
        inflate, deflate = client._inflate, client._deflate
        assert inflate is not None and deflate is not None
        client.sock.settimeout(10)
        while not inflate.eof:  # the final block, if it came apart from the answer
            chunk = client.sock.recv(4096)
            assert chunk, "connection closed inside the DEFLATE stream"
            assert inflate.decompress(chunk) == b""
        assert inflate.unused_data == b"" and client.pending == b""
        client._deflate = client._inflate = None
        if client_ends == "late":
            client.sock.sendall(deflate.flush(zlib.Z_FINISH))
            caps = client.command("a1", b"CAPABILITY")
            assert b"IMAP4rev1" in caps and b"COMPRESS=DEFLATE" not in caps
        elif client_ends == "garbage":  # not the end of a DEFLATE stream: plain, and no command
            client.send(b"\xff\xfe garbage\r\n")
            assert client.read_until(b"BAD") == b"* BAD [CLIENTBUG] Missing or invalid tag\r\n"
        _login_and_compress(client, "c2")
        client.command("a1", b"NOOP")
    finally:
        client.sock.close()


def test_second_compress_is_refused_on_the_wire(server):
    client = _connect(server, tls=False)
    try:
        _login_and_compress(client)
        client.send(b"a1 COMPRESS DEFLATE\r\n")
        assert client.read_until(b"a1 ") == b"a1 NO [COMPRESSIONACTIVE] Compression already active\r\n"
        client.send(b"a2 COMPRESS ZSTD\r\n")
        assert client.read_until(b"a2 ") == b"a2 BAD [CLIENTBUG] Unknown compression algorithm\r\n"
        client.command("a3", b"NOOP")
    finally:
        client.sock.close()


def test_idle_push_arrives_promptly_through_tls_and_deflate(server):
    watcher = _connect(server, tls=True)
    writer = _connect(server, tls=False)
    try:
        _login_and_compress(watcher, "w1")
        watcher.command("w2", b"SELECT Drafts")
        watcher.send(b"w3 IDLE\r\n")
        watcher.read_until(b"+ ")
        writer.command("l1", b"LOGIN alice secret")
        writer.send(b"a1 APPEND Drafts {5+}\r\nhello\r\n")
        writer.read_until(b"a1 OK")
        appended = time.monotonic()
        pushed = watcher.read_until(b" EXISTS", timeout=5.0)
        latency = time.monotonic() - appended
        assert pushed.endswith(b"* 1 EXISTS\r\n")
        # The transport ends every output batch with a sync flush: nothing waits in the
        # compressor for more data (the midb notification itself takes a few milliseconds).
        assert latency < 1.0, f"EXISTS took {latency:.3f}s to arrive"
        watcher.send(b"DONE\r\n")
        assert watcher.read_until(b"w3 ").endswith(b"w3 OK IDLE terminated\r\n")
    finally:
        watcher.sock.close()
        writer.sock.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_broken_deflate_stream_gets_a_bye_and_drops_only_that_connection(server, tls):
    """Input that does not inflate: the client is told why in a BYE that comes through its
    DEFLATE stream (and TLS), then the connection closes; the server serves the next client."""
    client = _connect(server, tls=tls)
    try:
        _login_and_compress(client)
        client.sock.sendall(b"\xff\xfe not deflate data \x00" * 8)  # bypasses the compressor
        assert client.read_until(b"* BYE") == b"* BYE Invalid compressed data, closing connection\r\n"
        client.sock.settimeout(10)
        inflate = client._inflate
        assert inflate is not None
        try:
            # After the BYE only the end of the DEFLATE stream (its final block), then the close.
            rest = b""
            while chunk := client.sock.recv(4096):
                rest += chunk
        except TimeoutError:
            raise AssertionError("the server kept a connection with a broken DEFLATE stream") from None
        assert inflate.decompress(rest) == b"", "data after the BYE"
        assert inflate.eof and inflate.unused_data == b""
    finally:
        client.sock.close()
    other = _connect(server, tls=tls)
    try:
        other.command("l1", b"LOGIN alice secret")
    finally:
        other.sock.close()
    assert "Traceback" not in server.log()


def test_compression_is_logged(server):
    client = _connect(server, tls=True)
    try:
        _login_and_compress(client, "zz9")
        client.command("zz10", b"NOOP")
    finally:
        client.sock.close()
    logged = ("OK: zz9 COMPRESS DEFLATE", "DEFLATE compression active")
    assert wait_until(lambda: all(text in server.log() for text in logged), timeout=30), \
        f"no COMPRESS in the log:\n{server.log()[-3000:]}"


# -- mutt, a real client ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("mutt") is None, reason="mutt is not installed (Makefile SYS_PKGS)")
def test_mutt_with_imap_deflate_over_tls(tmp_path):
    """mutt in batch mode sends a message (to /bin/true) and saves the copy in Sent over IMAPS:
    log in, COMPRESS, then LIST / STATUS / APPEND / LOGOUT through the DEFLATE stream."""
    directory = tmp_path / "server"
    directory.mkdir()
    server = GximapProcess(directory).start()
    try:
        home = tmp_path / "home"
        home.mkdir()
        sent = f"imaps://alice@127.0.0.1:{server.tls_port}/Sent"
        muttrc = home / "muttrc"
        muttrc.write_text("\n".join([
            "set imap_user=alice",
            "set imap_pass=secret",
            f"set folder=imaps://alice@127.0.0.1:{server.tls_port}/",
            f"set record={sent}",
            "set copy=yes",
            "set imap_deflate=yes",
            "set ssl_force_tls=yes",
            "set ssl_verify_host=no",
            f"set certificate_file={server.cert}",  # mutt trusts the certificates stored here
            "set sendmail=/bin/true",
            "set from=alice@example.org",
            "set use_from=yes",
            "",
        ]))
        env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "TERM": "dumb"}
        result = subprocess.run(
            ["mutt", "-n", "-F", str(muttrc), "-s", "compressed copy", "bob@example.org"],
            input=b"Sent through COMPRESS=DEFLATE.\n", env=env, cwd=home, capture_output=True, timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        log = server.log()
        commands = [line.split(": ", 2)[-1] for line in log.splitlines() if " cmd conn=" in line]
        assert any(line.endswith("COMPRESS DEFLATE") for line in commands), log[-3000:]
        assert "DEFLATE compression active" in log
        after = commands[next(i for i, line in enumerate(commands) if line.endswith("COMPRESS DEFLATE")) + 1:]
        assert any(' APPEND "Sent"' in line or " APPEND Sent" in line for line in after), commands
    finally:
        server.stop()
    with Store(server.midb, fsync=False, data_path=[str(DATA_DIR)]) as store:
        folder = store.get_folder("alice", "Sent")
        assert folder is not None and folder.messages == 1
        meta = store.messages("alice", folder.id)[0]
        data = store.read_body(meta.blob)
        assert b"Subject: compressed copy" in data and b"Sent through COMPRESS=DEFLATE." in data
        assert "\\Seen" in meta.flags
