"""Audit: the IMAP login and the Dovecot-protocol auth socket of one running gximap share the name
mapping (auth_map / storage_map directives) and the throttling state (issue 5 / issue 6: "Uses the
same accounts, name mapping and throttling as IMAP login"). Real server, real sockets, loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from e2e import AuthSocketClient, GximapProcess, LineClient, free_port

TIMEOUT = 10.0

pytestmark = pytest.mark.e2e


class ImapClient(LineClient):
    def __init__(self, port: int) -> None:
        super().__init__(port, timeout=TIMEOUT)
        assert self.readline().startswith(b"* OK")


def _wait_for_log(server: GximapProcess, text: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{server.log()}")


@pytest.fixture
def server(tmp_path: Path):
    auth_port = free_port()
    process = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret", "bob": "secret"}, extra={
        "auth_listen": f"127.0.0.1:{auth_port}",
        "auth_map": "email_localpart",
        "storage_map": "email_localpart",
        "imap_auth_times": "2",
        "imap_auth_ip_times": "0",
    })
    process.auth_port = auth_port  # type: ignore[attr-defined]
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_name_mapping_directives_apply_to_imap_and_the_auth_socket(server: GximapProcess) -> None:
    imap = ImapClient(server.port)
    # email_localpart: a bare name has no mapping, an address maps to its local part (after PRECIS).
    assert imap.command("a1", "LOGIN alice secret")[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert imap.command("a2", "LOGIN Alice@Example.ORG secret")[-1].startswith(b"a2 OK")
    imap.close()
    _wait_for_log(server, "user=alice LOGIN ok")

    auth = AuthSocketClient(server.auth_port)  # type: ignore[attr-defined]
    try:
        assert auth.plain(1, "bob", "secret")[:2] == ["FAIL", "1"]
        answer = auth.plain(2, "Bob@Example.ORG", "secret")
        assert answer[:2] == ["OK", "2"] and "user=bob@example.org" in answer, answer
    finally:
        auth.close()
    log = _wait_for_log(server, "user=bob SMTP/PLAIN ok")
    assert "user=bob SMTP/PLAIN rejected: unknown user name" in log


def test_a_user_blocked_over_imap_is_refused_by_the_auth_socket_and_back(server: GximapProcess) -> None:
    # Two failures on one IMAP connection (imap_auth_times = 2): NO, then BYE, and alice is blocked.
    imap = ImapClient(server.port)
    assert imap.command("b1", "LOGIN alice@example.org guess1")[-1].startswith(b"b1 NO")
    assert imap.command("b2", "LOGIN alice@example.org guess2")[-1].startswith(b"b2 NO")
    assert imap.readline().startswith(b"* BYE")
    imap.close()

    auth = AuthSocketClient(server.auth_port)  # type: ignore[attr-defined]
    try:
        # The right password is refused on the auth socket: the block is shared.
        assert auth.plain(1, "alice@example.org", "secret")[:2] == ["FAIL", "1"]
        # The other way round: two failures for bob on the auth socket block bob for IMAP too.
        assert auth.plain(2, "bob@example.org", "guess1")[:2] == ["FAIL", "2"]
        assert auth.plain(3, "bob@example.org", "guess2")[:2] == ["FAIL", "3"]
    finally:
        auth.close()
    log = _wait_for_log(server, "user=alice@example.org SMTP/PLAIN refused: user blocked")
    assert "user=alice@example.org blocked for 60s: too many failed logins" in log

    imap = ImapClient(server.port)
    refused = imap.command("c1", "LOGIN bob@example.org secret")[-1]
    assert refused == b"c1 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"
    imap.close()
    _wait_for_log(server, "user=bob@example.org LOGIN refused: user blocked")


def test_a_stranger_cannot_lock_out_a_user_whose_password_the_cache_holds(server: GximapProcess) -> None:
    # alice's phone logs in: the default authentication cache (imap_auth_cache_ttl) holds her password.
    imap = ImapClient(server.port)
    assert imap.command("a1", "LOGIN alice@example.org secret")[-1].startswith(b"a1 OK")
    imap.close()
    # A stranger's two guesses block her name ...
    imap = ImapClient(server.port)
    assert imap.command("b1", "LOGIN alice@example.org guess1")[-1].startswith(b"b1 NO")
    assert imap.command("b2", "LOGIN alice@example.org guess2")[-1].startswith(b"b2 NO")
    assert imap.readline().startswith(b"* BYE")
    imap.close()
    _wait_for_log(server, "user=alice@example.org blocked for 60s: too many failed logins")
    # ... but her clients, with the password the cache holds, still get in, over IMAP and SMTP AUTH,
    imap = ImapClient(server.port)
    assert imap.command("c1", "LOGIN alice@example.org secret")[-1].startswith(b"c1 OK")
    imap.close()
    auth = AuthSocketClient(server.auth_port)  # type: ignore[attr-defined]
    try:
        assert auth.plain(1, "alice@example.org", "secret")[:2] == ["OK", "1"]
        # while another guess is refused as blocked, unchecked.
        assert auth.plain(2, "alice@example.org", "guess3")[:2] == ["FAIL", "2"]
    finally:
        auth.close()
    log = _wait_for_log(server, "user=alice@example.org SMTP/PLAIN refused: user blocked")
    assert log.count("rejected: bad password") == 2  # the guess during the block was not checked
