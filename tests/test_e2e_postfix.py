"""gximap behind a real Postfix: LMTP delivery, SMTP AUTH through the auth socket, IMAP filters.

The private Postfix of tests/postfix_helpers.py delivers the test domain to gximap's LMTP socket
and asks gximap's Dovecot-protocol auth socket about SMTP AUTH on its submission service. Mail is
sent with smtplib and read back over IMAP. Postfix's master needs root, so these tests do too.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import smtplib
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postfix_helpers import (
    DEADLINE,
    MASTER_CF,
    NEEDS_POSTFIX,
    Stack,
    create_folder,
    fetch_all,
    postfix_stack,
    wait_for_message,
)
from scram_client import ScramClient

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,  # about 10 s, most of it starting gximap and Postfix once for the module
    *NEEDS_POSTFIX,
]

FILTER_SCRIPT = """#!/bin/sh
# Test filter: record the arguments, move "[list]" mail to Lists with a keyword.
printf '%s\\n' "$@" > "{args_file}"
cat > /dev/null
case "$3" in
  *"[list]"*) printf 'Lists\\n$FromFilter\\n';;
esac
"""


def _gximap_settings(root: Path) -> dict[str, str]:
    filter_script = root / "filter.sh"
    filter_script.write_text(FILTER_SCRIPT.format(args_file=root / "filter-args"))
    filter_script.chmod(0o755)
    return {
        "midb_fsync": "yes",
        "lmtp_spam_header": "X-Spam: Yes",
        "imap_filter_command": f"{filter_script} {{account_name}} {{sender}} {{subject}} {{source_ip}}",
        "imap_sasl_scram": "yes",
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with postfix_stack("gximap-postfix-", {"alice": "secret", "bob": "hunter2"}, settings=_gximap_settings,
                       before_start=lambda gximap: create_folder(gximap, "bob", "Lists")) as running:
        yield running


def _split_added_headers(delivered: bytes, original: bytes) -> list[bytes]:
    """The header fields gximap and Postfix put before the message as it was sent."""
    assert delivered.endswith(original), "the message as sent is not intact at the end"
    prefix = delivered[:-len(original)]
    return re.findall(rb"[^\r\n]+\r\n(?:[ \t][^\r\n]*\r\n)*", prefix)


class IdleClient:
    """A raw IMAP connection sitting in IDLE on INBOX, for the EXISTS push."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.buffer = b""
        self._line()
        for tag, command in ((b"a", b"LOGIN %s %s" % (user.encode(), password.encode())), (b"b", b"SELECT INBOX")):
            self.sock.sendall(tag + b" " + command + b"\r\n")
            while not (line := self._line()).startswith(tag + b" "):
                pass
            assert line.startswith(tag + b" OK"), line
        self.sock.sendall(b"c IDLE\r\n")
        assert self._line().startswith(b"+")

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("IMAP connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def wait_exists(self) -> bytes:
        while True:
            line = self._line()
            if line.endswith(b" EXISTS"):
                return line

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"DONE\r\nd LOGOUT\r\n")
        self.sock.close()


def test_submission_auth_delivery_bounce_and_idle(stack: Stack) -> None:
    postfix, gximap = stack.postfix, stack.gximap
    original = (
        b"From: Alice <alice@test.example>\r\n"
        b"To: Bob <bob@test.example>, nobody@test.example\r\n"
        b"Subject: lunch\r\n"
        b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
        b"Message-ID: <lunch-1@test.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Gr\xc3\xbc\xc3\x9fe, Bob!\r\n"
        b".a line that starts with a dot\r\n"
        b"..and one with two\r\n"
        b".\tdot and tab\r\n"
        b"\r\n"
        b"-- \r\nAlice\r\n"
    )
    idle = IdleClient(gximap.port, "bob", "hunter2")
    try:
        with smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=DEADLINE) as smtp:
            smtp.ehlo("client.test.example")
            mechanisms = smtp.esmtp_features.get("auth", "").upper().split()
            assert {"PLAIN", "LOGIN"} <= set(mechanisms), stack.logs()
            # Not authenticated: the submission service refuses to take mail.
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                smtp.sendmail("alice@test.example", ["bob@test.example"], b"Subject: x\r\n\r\nx\r\n")
            smtp.rset()
            with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
                smtp.login("alice", "wrong password")
            assert failure.value.smtp_code == 535
        with smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=DEADLINE) as smtp:
            smtp.ehlo("client.test.example")
            smtp.login("alice", "secret")  # PLAIN with an initial response
            refused = smtp.sendmail("alice@test.example", ["bob@test.example", "nobody@test.example"],
                                    original, mail_options=["BODY=8BITMIME"])
            assert refused == {}  # Postfix takes both; gximap refuses nobody over LMTP, Postfix bounces
        with smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=DEADLINE) as smtp:
            smtp.ehlo("client.test.example")
            smtp.user, smtp.password = "bob", "hunter2"
            code, _ = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)  # two CONT rounds
            assert code == 235

        # The IDLE client hears about the delivery by itself.
        assert idle.wait_exists().startswith(b"* 1 ")
    finally:
        idle.close()

    flags, delivered = wait_for_message(stack, "bob", "hunter2", b"Message-ID: <lunch-1@test.example>")
    added = _split_added_headers(delivered, original)
    assert added[0] == b"Return-Path: <alice@test.example>\r\n"
    assert added[1] == b"Delivered-To: bob@test.example\r\n"
    assert all(header.startswith(b"Received: ") for header in added[2:]) and len(added) >= 3, added
    assert b"\\Seen" not in flags

    # nobody@ does not exist: gximap said 550 5.1.1 at RCPT, Postfix bounced to Alice.
    _flags, bounce = wait_for_message(stack, "alice", "secret", b"nobody@test.example")
    assert bounce.startswith(b"Return-Path: <>\r\nDelivered-To: alice@test.example\r\n")
    assert b"5.1.1" in bounce and b"550" in bounce

    log = gximap.log()
    assert "rhost=[127.0.0.1]:0 user=alice SMTP/PLAIN rejected: bad password" in log
    assert "user=alice SMTP/PLAIN ok" in log and "user=bob SMTP/LOGIN ok" in log
    assert re.search(r"lmtp: id=\S+ from=<alice@test\.example> to=<bob@test\.example> account=bob "
                     r"folder=INBOX uid=1 ", log), stack.logs()


def _scram_authobject(client: ScramClient) -> Callable[..., str]:
    """smtplib's authobject for SMTP.auth(): called with None for the initial response, then with
    each decoded 334 challenge; returns the response as text, which smtplib encodes."""
    def answer(challenge: bytes | None = None) -> str:
        response = client.respond(challenge or b"")
        return "*" if response is None else response.decode()   # "*": the server's proof is wrong
    return answer


def test_submission_auth_with_scram_through_the_auth_socket(stack: Stack) -> None:
    """SMTP AUTH SCRAM-SHA-256 from smtplib, Postfix relaying it to the auth socket: the
    server-final message comes back as a 334 (a CONT to Postfix), its empty answer gets the 235."""
    postfix, gximap = stack.postfix, stack.gximap
    with smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=DEADLINE) as smtp:
        smtp.ehlo("client.test.example")
        assert "SCRAM-SHA-256" in smtp.esmtp_features.get("auth", "").upper().split(), stack.logs()
        smtp.login("bob", "hunter2")  # PLAIN: derives bob's SCRAM keys (the account has a hash only)
    with smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=DEADLINE) as smtp:
        smtp.ehlo("client.test.example")
        client = ScramClient("bob", "hunter2")
        code, _ = smtp.auth("SCRAM-SHA-256", _scram_authobject(client))
        assert code == 235 and client.server_signature, stack.logs()
        assert smtp.sendmail("bob@test.example", ["bob@test.example"],
                             b"Subject: scram\r\nMessage-ID: <scram-1@test.example>\r\n\r\nsent after SCRAM\r\n") == {}
    with smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=DEADLINE) as smtp:
        smtp.ehlo("client.test.example")
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            smtp.auth("SCRAM-SHA-256", _scram_authobject(ScramClient("bob", "wrong")))
        assert failure.value.smtp_code == 535
    wait_for_message(stack, "bob", "hunter2", b"Message-ID: <scram-1@test.example>")
    log = gximap.log()
    assert "user=bob SMTP/SCRAM-SHA-256 ok" in log
    assert "user=bob SMTP/SCRAM-SHA-256 rejected: bad password" in log


def test_filter_and_quarantine_through_postfix(stack: Stack) -> None:
    postfix = stack.postfix
    listed = (b"From: List <list@lists.example>\r\nTo: bob@test.example\r\nSubject: [list] news\r\n"
              b"Message-ID: <list-1@lists.example>\r\nDate: Tue, 8 Feb 1994 10:00:00 +0000\r\n\r\n"
              b"list traffic\r\n")
    spam = (b"From: Spammer <win@spam.example>\r\nTo: bob@test.example\r\nSubject: [list] you won\r\n"
            b"X-Spam: yes\r\nMessage-ID: <spam-1@spam.example>\r\nDate: Tue, 8 Feb 1994 10:00:01 +0000\r\n"
            b"\r\nclaim now\r\n")
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=DEADLINE) as smtp:
        smtp.ehlo("mx.lists.example")
        assert smtp.sendmail("list@lists.example", ["bob@test.example"], listed) == {}
        assert smtp.sendmail("win@spam.example", ["bob@test.example"], spam) == {}

    flags, delivered = wait_for_message(stack, "bob", "hunter2", b"<list-1@lists.example>", folder="Lists")
    assert b"$FromFilter" in flags
    assert delivered.endswith(listed)
    args = (stack.root / "filter-args").read_text().splitlines()
    # {account_name} {sender} {subject} {source_ip} (from Postfix's XFORWARD)
    assert args[:3] == ["bob", "list@lists.example", "[list] news"]
    assert args[3] == "127.0.0.1"

    # Quarantined: in Junk, unfiltered (no keyword although the subject matches the filter).
    flags, junk = wait_for_message(stack, "bob", "hunter2", b"<spam-1@spam.example>", folder="Junk")
    assert b"$FromFilter" not in flags and junk.endswith(spam)
    assert not any(b"<spam-1@" in message for _f, message in fetch_all(stack, "bob", "hunter2", "INBOX"))


def test_shipped_postfix_snippets_are_valid(tmp_path: Path) -> None:
    """etc/postfix/*.gximap: postconf reads them without a warning (no unknown parameter)."""
    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "main.cf").write_text((repo / "etc" / "postfix" / "main.cf.gximap").read_text())
    (tmp_path / "master.cf").write_text(MASTER_CF.format(smtp_port=25, submission_port=2525)
                                        + (repo / "etc" / "postfix" / "master.cf.gximap").read_text())
    postconf = shutil.which("postconf") or "/usr/sbin/postconf"
    for option in ("-n", "-M"):
        result = subprocess.run([postconf, "-c", str(tmp_path), option], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    settings = subprocess.run([postconf, "-c", str(tmp_path), "-h", "virtual_transport", "smtpd_sasl_type"],
                              capture_output=True, text=True, timeout=30).stdout.split()
    assert settings == ["lmtp:unix:private/gximap-lmtp", "dovecot"]
