"""AUTHENTICATE SCRAM-SHA-256 against the real gximap process, with Python's imaplib as the client
(its authenticate() drives any SASL mechanism; the SCRAM side is tests/scram_client.py, written
from RFC 5802). curl here has no SASL library that speaks SCRAM (curl -V lists no gsasl), and no
other client on this machine does. The failures' log lines are read by the shipped fail2ban filter.
The auth socket (auth_listen) offers SCRAM too: spoken here over its UNIX socket as Postfix's
xsasl_dovecot_server.c speaks it, with the same client."""

from __future__ import annotations

import base64
import imaplib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e import AuthSocketClient, GximapProcess, insecure_client_tls
from net_helpers import wait_until
from scram_client import ScramClient, b64

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
FILTER = REPO / "etc" / "fail2ban" / "filter.d" / "gromox-imap.conf"


def _connect(server: GximapProcess) -> imaplib.IMAP4_SSL:
    assert server.tls_port is not None
    return imaplib.IMAP4_SSL("127.0.0.1", server.tls_port, ssl_context=insecure_client_tls(), timeout=15)


def test_imaplib_logs_in_with_scram_once_a_login_derived_the_keys(tmp_path: Path) -> None:
    server = GximapProcess(tmp_path, accounts={"alice": "secret"},
                           extra={"imap_sasl_scram": "yes", "imap_auth_times": "2", "imap_auth_ip_times": "0"})
    server.start()
    try:
        client = _connect(server)
        assert "AUTH=SCRAM-SHA-256" in client.capabilities
        # The account was made with a password hash only: no keys yet, so SCRAM fails as a wrong
        # password would ...
        with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
            client.authenticate("SCRAM-SHA-256", ScramClient("alice", "secret").respond)
        # ... until a LOGIN with the password derives them.
        assert client.login("alice", "secret")[0] == "OK"
        client.logout()

        client = _connect(server)
        typ, _ = client.authenticate("SCRAM-SHA-256", ScramClient("alice", "secret").respond)
        assert typ == "OK" and client.state == "AUTH"
        assert client.select("INBOX")[0] == "OK"
        client.logout()

        client = _connect(server)
        with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
            client.authenticate("SCRAM-SHA-256", ScramClient("alice", "guess").respond)
        client.logout()
    finally:
        server.stop()
    log = server.log()
    outcomes = re.findall(r"user=alice (LOGIN|SCRAM-SHA-256) (ok|rejected: [^\n]*)", log)
    assert outcomes == [("SCRAM-SHA-256", "rejected: no SCRAM keys (log in once with LOGIN or PLAIN, "
                                          "or set the password again)"),
                        ("LOGIN", "ok"), ("SCRAM-SHA-256", "ok"), ("SCRAM-SHA-256", "rejected: bad password")]
    if shutil.which("fail2ban-regex") is not None:
        # A wrong proof is a failure fail2ban counts, as a wrong password is.
        result = subprocess.run(["fail2ban-regex", "-o", "<ip> <F-USER>", str(server.log_path), str(FILTER)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert [line for line in result.stdout.split("\n") if line] == ["127.0.0.1 alice"] * 2


def test_scram_is_not_offered_unless_configured(tmp_path: Path) -> None:
    server = GximapProcess(tmp_path, accounts={"alice": "secret"})
    server.start()
    try:
        client = _connect(server)
        assert "AUTH=SCRAM-SHA-256" not in client.capabilities and "AUTH=PLAIN" in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match=r"CANNOT"):
            client.authenticate("SCRAM-SHA-256", ScramClient("alice", "secret").respond)
        client.logout()
    finally:
        server.stop()


def _scram_over_auth_socket(auth: AuthSocketClient, request_id: int, client: ScramClient) -> list[str]:
    """The whole SCRAM exchange as Postfix's smtpd relays it (xsasl_dovecot_server.c: AUTH with
    nologin, lip=, rip=, no final-resp-ok; CONT for each SMTP client response); the last reply (OK,
    FAIL)."""
    reply = auth.send(f"AUTH\t{request_id}\tSCRAM-SHA-256\tservice=smtp\tnologin\tlip=127.0.0.1\t"
                      f"rip=127.0.0.1\tresp={b64(client.first())}")
    assert reply[:2] == ["CONT", str(request_id)], reply
    reply = auth.send(f"CONT\t{request_id}\t{b64(client.final(base64.b64decode(reply[2])))}")
    if reply[0] != "CONT":
        return reply
    assert client.check_server_final(base64.b64decode(reply[2])), reply  # the server proved it holds the keys
    return auth.send(f"CONT\t{request_id}\t")


def test_auth_socket_serves_scram_over_its_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "auth-client")
    server = GximapProcess(tmp_path, accounts={"alice": "secret"}, tls=False, extra={
        "imap_sasl_scram": "yes", "auth_listen": f"unix:{path}", "imap_auth_times": "5", "imap_auth_ip_times": "0"})
    server.start()
    try:
        assert wait_until(lambda: Path(path).exists())
        auth = AuthSocketClient(path)
        try:
            assert b"MECH\tSCRAM-SHA-256\tmutual-auth" in auth.handshake
            # No keys yet (the account has a password hash only): a failure like a wrong password ...
            assert _scram_over_auth_socket(auth, 1, ScramClient("alice", "secret"))[:2] == ["FAIL", "1"]
            # ... until a password login derives them (a PLAIN one here, through the same socket).
            assert auth.plain(2, "alice", "secret") == ["OK", "2", "user=alice"]
            assert _scram_over_auth_socket(auth, 3, ScramClient("alice", "secret")) == ["OK", "3", "user=alice"]
            assert _scram_over_auth_socket(auth, 4, ScramClient("alice", "guess"))[:2] == ["FAIL", "4"]
            assert _scram_over_auth_socket(auth, 5, ScramClient("nobody", "secret"))[:2] == ["FAIL", "5"]
        finally:
            auth.close()
    finally:
        server.stop()
    outcomes = re.findall(r"user=(\w+) SMTP/(PLAIN|SCRAM-SHA-256) (ok|rejected: [^\n]*)", server.log())
    assert [(user, mech, outcome.split(" (")[0]) for user, mech, outcome in outcomes] == [
        ("alice", "SCRAM-SHA-256", "rejected: no SCRAM keys"), ("alice", "PLAIN", "ok"),
        ("alice", "SCRAM-SHA-256", "ok"), ("alice", "SCRAM-SHA-256", "rejected: bad password"),
        ("nobody", "SCRAM-SHA-256", "rejected: unknown user")]
