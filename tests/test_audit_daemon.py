"""Audit of issue 2 requirements that had no direct test: default config paths, SIGHUP reload of
imap_rfc9051 / imap_accept_haproxy / imap_log_level in the real daemon, imap_force_tls end to end,
and both idle timeouts through the real pool."""

from __future__ import annotations

import base64
import imaplib
import signal
import socket
import struct
import time
from pathlib import Path

import pytest
from e2e import GximapProcess, insecure_client_tls

from gximap import config as gxconfig


def _read_line(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n") and len(data) < 65536:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def _command(sock: socket.socket, tag: str, text: str) -> list[bytes]:
    """Send one command and return every line up to and including its tagged reply."""
    sock.sendall(f"{tag} {text}\r\n".encode())
    lines: list[bytes] = []
    for _ in range(100):
        line = _read_line(sock)
        lines.append(line)
        if not line or line.startswith(tag.encode() + b" "):
            break
    return lines


def _wait_for(predicate, timeout: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _v2_proxy_header(src: str, dst: str, sport: int, dport: int) -> bytes:
    address = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(address)) + address




def test_default_paths_are_gromox_cfg_then_imap_cfg_when_present(tmp_path: Path) -> None:
    assert gxconfig.default_paths(str(tmp_path)) == []
    (tmp_path / "imap.cfg").write_text("context_num = 7\n")
    assert gxconfig.default_paths(str(tmp_path)) == [str(tmp_path / "imap.cfg")]
    (tmp_path / "gromox.cfg").write_text("context_num = 3\n")
    paths = gxconfig.default_paths(str(tmp_path))
    assert paths == [str(tmp_path / "gromox.cfg"), str(tmp_path / "imap.cfg")]
    assert gxconfig.load_config(paths, required=False).context_num == 7  # imap.cfg wins


@pytest.mark.e2e
def test_sighup_reloads_rfc9051_haproxy_and_log_level(tmp_path: Path) -> None:
    proc = GximapProcess(tmp_path, tls=False, extra={"imap_rfc9051": "yes", "imap_accept_haproxy": "0"}).start()
    try:
        kept = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        assert _read_line(kept).startswith(b"* OK")
        assert b" IMAP4rev2" in _command(kept, "k1", "CAPABILITY")[0]
        proc.write_config(imap_rfc9051="no", imap_accept_haproxy="2", imap_log_level="4")
        proc.signal(signal.SIGHUP)
        assert _wait_for(lambda: "configuration reloaded" in proc.log())
        reloaded_at = len(proc.log())

        # Without a PROXY header a connection is now refused; with one, the header's address is used.
        bare = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        bare.sendall(b"a NOOP\r\n")
        assert not _read_line(bare).startswith(b"a OK")
        bare.close()
        proxied = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        proxied.sendall(_v2_proxy_header("198.51.100.7", "127.0.0.1", 40001, proc.port))
        assert _read_line(proxied).startswith(b"* OK")
        capability = _command(proxied, "p1", "CAPABILITY")[0]
        assert capability.startswith(b"* CAPABILITY") and b"IMAP4rev2" not in capability
        assert _command(proxied, "p2", "LOGIN alice secret")[-1].startswith(b"p2 OK")
        proxied.close()

        assert _command(kept, "k2", "NOOP")[-1].startswith(b"k2 OK")  # survived the reload
        kept.close()
        assert _wait_for(lambda: "rhost=[198.51.100.7]" in proc.log()[reloaded_at:])
        # imap_log_level 6 -> 4: the informational "accepted on" lines stop.
        assert "accepted on" not in proc.log()[reloaded_at:]
    finally:
        proc.stop()


@pytest.mark.e2e
def test_force_tls_advertises_logindisabled_and_refuses_authentication_before_tls(tmp_path: Path) -> None:
    proc = GximapProcess(tmp_path, tls=True, extra={"imap_force_tls": "yes", "insecure_auth": "yes"}).start()
    try:
        sock = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        try:
            assert _read_line(sock).startswith(b"* OK")
            capability = _command(sock, "c1", "CAPABILITY")[0]
            assert b"LOGINDISABLED" in capability and b"STARTTLS" in capability
            assert _command(sock, "c2", "LOGIN alice secret")[-1].startswith(b"c2 NO")
            plain = base64.b64encode(b"\0alice\0secret").decode()
            assert _command(sock, "c3", f"AUTHENTICATE PLAIN {plain}")[-1].startswith(b"c3 NO")
        finally:
            sock.close()
        with imaplib.IMAP4("127.0.0.1", proc.port, timeout=10) as client:
            client.starttls(ssl_context=insecure_client_tls())
            assert "LOGINDISABLED" not in client.capabilities
            assert client.login("alice", "secret")[0] == "OK"
            client.logout()
    finally:
        proc.stop()


@pytest.mark.e2e
def test_idle_keepalive_through_the_real_daemon(tmp_path: Path) -> None:
    """The pool keeps a connection whose handler answered the idle timer with a keepalive, and
    runs the timer again: two "* OK Still here" a second apart, then the autologout."""
    proc = GximapProcess(tmp_path, tls=False,
                         extra={"imap_idle_notify_interval": "1s", "imap_autologout_time": "4s"}).start()
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as client:
            assert _read_line(client).startswith(b"* OK")
            assert _command(client, "u1", "LOGIN alice secret")[-1].startswith(b"u1 OK")
            assert _command(client, "u2", "SELECT INBOX")[-1].startswith(b"u2 OK")
            client.sendall(b"u3 IDLE\r\n")
            assert _read_line(client).startswith(b"+ ")
            started = time.monotonic()
            assert _read_line(client) == b"* OK Still here\r\n"
            assert _read_line(client) == b"* OK Still here\r\n"
            assert 1.5 < time.monotonic() - started < 4.0
            client.sendall(b"DONE\r\n")
            assert _read_line(client).startswith(b"u3 OK")
            # Not in IDLE: no keepalive, the autologout 4 s after the last command.
            started = time.monotonic()
            assert _read_line(client, timeout=8).startswith(b"* BYE")
            assert 3.0 < time.monotonic() - started < 7.0
    finally:
        proc.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_conn_timeout_and_autologout_through_the_real_daemon(tmp_path: Path) -> None:
    proc = GximapProcess(tmp_path, tls=False,
                         extra={"imap_conn_timeout": "1s", "imap_autologout_time": "2s"}).start()
    try:
        anonymous = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        user = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        try:
            assert _read_line(anonymous).startswith(b"* OK")
            assert _read_line(user).startswith(b"* OK")
            assert _command(user, "u1", "LOGIN alice secret")[-1].startswith(b"u1 OK")
            started = time.monotonic()
            assert _read_line(anonymous, timeout=5).startswith(b"* BYE")
            assert _read_line(anonymous, timeout=5) == b""
            assert time.monotonic() - started < 3.0
            assert _read_line(user, timeout=6).startswith(b"* BYE")
            assert 1.0 < time.monotonic() - started < 5.0  # after the 2 s autologout, not the 1 s one
            assert _read_line(user, timeout=5) == b""
        finally:
            anonymous.close()
            user.close()
    finally:
        proc.stop()
