"""gximap behind a real Postfix: LMTP delivery, SMTP AUTH through the auth socket, IMAP filters.

A private Postfix instance (its own config directory, queue and data directory under a temporary
directory, services on free loopback ports only, nothing relayed) delivers the test domain to
gximap's LMTP socket and asks gximap's Dovecot-protocol auth socket about SMTP AUTH on its
submission service. Mail is sent with smtplib and read back over IMAP. Postfix's master needs
root, so these tests do too. The instance is stopped in a finally clause, whatever happens.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e import DATA_DIR, GximapProcess, free_port
from scram_client import ScramClient

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,  # about 10 s, most of it starting gximap and Postfix once for the module
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="Postfix's master process needs root"),
    pytest.mark.skipif(not os.path.exists(POSTFIX), reason="Postfix is not installed (make sysdeps)"),
]

DEADLINE = 20.0
DOMAIN = "test.example"

FILTER_SCRIPT = """#!/bin/sh
# Test filter: record the arguments, move "[list]" mail to Lists with a keyword.
printf '%s\\n' "$@" > "{args_file}"
cat > /dev/null
case "$3" in
  *"[list]"*) printf 'Lists\\n$FromFilter\\n';;
esac
"""

MASTER_CF = """\
127.0.0.1:{smtp_port} inet n - n - - smtpd
127.0.0.1:{submission_port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
lmtp      unix  - - n -  - lmtp
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
showq     unix  n - n -  - showq
"""


def _main_cf(root: Path) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = $mydomain
mydestination = {DOMAIN}
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# Nothing leaves this instance: only the test domain is delivered, to gximap over LMTP.
default_transport = error:no outside delivery in this test
relay_transport = error:no relaying in this test
local_transport = lmtp:unix:{root}/lmtp.sock
local_recipient_maps =
alias_maps =
alias_database =
lmtp_send_xforward_command = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {root}/auth.sock
smtpd_tls_security_level = none
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
"""


class PostfixInstance:
    """A private Postfix in ``root``/etc, with its queue and data directories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etc = root / "etc"
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.etc.mkdir()
        (root / "queue").mkdir()
        (root / "data").mkdir()
        shutil.chown(root / "data", "postfix")
        (self.etc / "main.cf").write_text(_main_cf(root))
        (self.etc / "master.cf").write_text(MASTER_CF.format(smtp_port=self.smtp_port,
                                                             submission_port=self.submission_port))
        self.master_pid: int | None = None

    def _postfix(self, *args: str) -> None:
        result = subprocess.run([POSTFIX, "-c", str(self.etc), *args], capture_output=True, text=True,
                                timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed: {result.stderr}\n{self.log()}")

    def start(self) -> None:
        self._postfix("check")  # creates the queue's subdirectories with Postfix's ownership
        self._postfix("start")
        pid_file = self.root / "queue" / "pid" / "master.pid"
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip().isdigit(), "master.pid")
        self.master_pid = int(pid_file.read_text().strip())
        for port in (self.smtp_port, self.submission_port):
            wait_for(functools.partial(_accepts, port), f"postfix on port {port}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._postfix("stop")
        pid = self.master_pid
        if pid is None:
            return
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.05)
        if _running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        try:
            return (self.root / "maillog").read_text(errors="replace")
        except OSError:
            return ""


def _running(pid: int) -> bool:
    """Alive and not a zombie (nobody may reap the daemonized master inside a container)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Stack:
    def __init__(self, root: Path, gximap: GximapProcess, postfix: PostfixInstance) -> None:
        self.root = root
        self.gximap = gximap
        self.postfix = postfix

    def logs(self) -> str:
        return f"--- gximap log ---\n{self.gximap.log()[-6000:]}\n--- maillog ---\n{self.postfix.log()[-6000:]}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Not tmp_path: Postfix's unprivileged processes must reach the sockets and the queue, and
    # pytest's base directory is private to root.
    root = Path(tempfile.mkdtemp(prefix="gximap-postfix-", dir="/tmp"))
    gximap: GximapProcess | None = None
    postfix: PostfixInstance | None = None
    try:
        os.chmod(root, 0o755)
        (root / "gximap").mkdir(mode=0o755)
        filter_script = root / "filter.sh"
        filter_script.write_text(FILTER_SCRIPT.format(args_file=root / "filter-args"))
        filter_script.chmod(0o755)
        gximap = GximapProcess(root / "gximap", tls=False, accounts={"alice": "secret", "bob": "hunter2"}, extra={
            "lmtp_listen": f"unix:{root}/lmtp.sock",
            "auth_listen": f"unix:{root}/auth.sock",
            "unix_socket_owner": "postfix",
            "delivery_map": "email_localpart",
            "midb_fsync": "yes",
            "lmtp_spam_header": "X-Spam: Yes",
            "imap_filter_command": f"{filter_script} {{account_name}} {{sender}} {{subject}} {{source_ip}}",
            "imap_sasl_scram": "yes",
        })
        _create_folder(gximap, "bob", "Lists")
        gximap.start()
        postfix = PostfixInstance(root)
        postfix.start()
        yield Stack(root, gximap, postfix)
    finally:
        try:
            if postfix is not None:
                postfix.stop()
        finally:
            if gximap is not None:
                gximap.stop()
            shutil.rmtree(root, ignore_errors=True)


def _create_folder(gximap: GximapProcess, account: str, name: str) -> None:
    from midb.store import Store

    with Store(str(gximap.midb), fsync=False, data_path=[str(DATA_DIR)]) as store:
        store.create_folder(account, name)


def _imap(stack: Stack, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", stack.gximap.port, timeout=15)
    client.login(user, password)
    return client


def _fetch_all(stack: Stack, user: str, password: str, folder: str = "INBOX") -> list[tuple[bytes, bytes]]:
    """[(flags line, full message)] of ``folder``."""
    client = _imap(stack, user, password)
    try:
        status, _ = client.select(folder, readonly=True)
        assert status == "OK"
        status, data = client.fetch("1:*", "(FLAGS BODY.PEEK[])")
        if status != "OK" or data == [None]:
            return []
        return [(item[0], item[1]) for item in data if isinstance(item, tuple)]
    finally:
        client.logout()


def _wait_for_message(stack: Stack, user: str, password: str, needle: bytes,
                      folder: str = "INBOX") -> tuple[bytes, bytes]:
    def find() -> tuple[bytes, bytes] | None:
        return next((item for item in _fetch_all(stack, user, password, folder) if needle in item[1]), None)

    try:
        return wait_for(find, f"{needle!r} in {user}'s {folder}")
    except AssertionError:
        raise AssertionError(f"no {needle!r} in {user}/{folder}\n{stack.logs()}") from None


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

    flags, delivered = _wait_for_message(stack, "bob", "hunter2", b"Message-ID: <lunch-1@test.example>")
    added = _split_added_headers(delivered, original)
    assert added[0] == b"Return-Path: <alice@test.example>\r\n"
    assert added[1] == b"Delivered-To: bob@test.example\r\n"
    assert all(header.startswith(b"Received: ") for header in added[2:]) and len(added) >= 3, added
    assert b"\\Seen" not in flags

    # nobody@ does not exist: gximap said 550 5.1.1 at RCPT, Postfix bounced to Alice.
    _flags, bounce = _wait_for_message(stack, "alice", "secret", b"nobody@test.example")
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
    _wait_for_message(stack, "bob", "hunter2", b"Message-ID: <scram-1@test.example>")
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

    flags, delivered = _wait_for_message(stack, "bob", "hunter2", b"<list-1@lists.example>", folder="Lists")
    assert b"$FromFilter" in flags
    assert delivered.endswith(listed)
    args = (stack.root / "filter-args").read_text().splitlines()
    # {account_name} {sender} {subject} {source_ip} (from Postfix's XFORWARD)
    assert args[:3] == ["bob", "list@lists.example", "[list] news"]
    assert args[3] == "127.0.0.1"

    # Quarantined: in Junk, unfiltered (no keyword although the subject matches the filter).
    flags, junk = _wait_for_message(stack, "bob", "hunter2", b"<spam-1@spam.example>", folder="Junk")
    assert b"$FromFilter" not in flags and junk.endswith(spam)
    assert not any(b"<spam-1@" in message for _f, message in _fetch_all(stack, "bob", "hunter2", "INBOX"))


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
