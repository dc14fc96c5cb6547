"""A private Postfix in front of the real gximap, for the end-to-end tests of mail submission.

The instance has its own config directory, queue and data directory under a temporary directory,
services on free loopback ports only, and relays nothing: it delivers the test domain to gximap's
LMTP socket and asks gximap's Dovecot-protocol auth socket about SMTP AUTH on its submission
service. Postfix's master needs root, hence NEEDS_POSTFIX for the modules that use it.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e import DATA_DIR, GximapProcess, free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

NEEDS_POSTFIX = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="Postfix's master process needs root"),
    pytest.mark.skipif(not os.path.exists(POSTFIX), reason="Postfix is not installed (make sysdeps)"),
]

DEADLINE = 20.0
DOMAIN = "test.example"

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
    """A started gximap and the Postfix in front of it, in ``root``."""

    def __init__(self, root: Path, gximap: GximapProcess, postfix: PostfixInstance) -> None:
        self.root = root
        self.gximap = gximap
        self.postfix = postfix

    def logs(self) -> str:
        return f"--- gximap log ---\n{self.gximap.log()[-6000:]}\n--- maillog ---\n{self.postfix.log()[-6000:]}"


@contextlib.contextmanager
def postfix_stack(prefix: str, accounts: dict[str, str], *, tls: bool = False,
                  settings: Callable[[Path], dict[str, str]] | None = None,
                  before_start: Callable[[GximapProcess], None] | None = None) -> Iterator[Stack]:
    """gximap with ``accounts`` ({name: password}) behind a private Postfix, in a new directory of
    /tmp: Postfix delivers DOMAIN to gximap's LMTP socket (an address's local part is the account)
    and asks its auth socket about SMTP AUTH. ``settings(root)`` gives more gximap directives,
    ``before_start(gximap)`` prepares its store. Both are stopped and the directory removed at the
    end, whatever happens."""
    # Not tmp_path: Postfix's unprivileged processes must reach the sockets and the queue, and
    # pytest's base directory is private to root.
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    gximap: GximapProcess | None = None
    postfix: PostfixInstance | None = None
    try:
        os.chmod(root, 0o755)
        (root / "gximap").mkdir(mode=0o755)
        gximap = GximapProcess(root / "gximap", tls=tls, accounts=accounts, extra={
            "lmtp_listen": f"unix:{root}/lmtp.sock",
            "auth_listen": f"unix:{root}/auth.sock",
            "unix_socket_owner": "postfix",
            "delivery_map": "email_localpart",
            **(settings(root) if settings is not None else {}),
        })
        if before_start is not None:
            before_start(gximap)
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


def create_folder(gximap: GximapProcess, account: str, name: str) -> None:
    from midb.store import Store

    with Store(str(gximap.midb), fsync=False, data_path=[str(DATA_DIR)]) as store:
        store.create_folder(account, name)


def imap_login(stack: Stack, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", stack.gximap.port, timeout=15)
    client.login(user, password)
    return client


def fetch_all(stack: Stack, user: str, password: str, folder: str = "INBOX") -> list[tuple[bytes, bytes]]:
    """[(flags line, full message)] of ``folder``."""
    client = imap_login(stack, user, password)
    try:
        status, _ = client.select(folder, readonly=True)
        assert status == "OK"
        status, data = client.fetch("1:*", "(FLAGS BODY.PEEK[])")
        if status != "OK" or data == [None]:
            return []
        return [(item[0], item[1]) for item in data if isinstance(item, tuple)]
    finally:
        client.logout()


def wait_for_message(stack: Stack, user: str, password: str, needle: bytes,
                     folder: str = "INBOX") -> tuple[bytes, bytes]:
    def find() -> tuple[bytes, bytes] | None:
        return next((item for item in fetch_all(stack, user, password, folder) if needle in item[1]), None)

    try:
        return wait_for(find, f"{needle!r} in {user}'s {folder}")
    except AssertionError:
        raise AssertionError(f"no {needle!r} in {user}/{folder}\n{stack.logs()}") from None
