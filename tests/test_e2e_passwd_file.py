"""The real gximap with auth_backend = passwd-file, the file unreadable to the running identity
(the permission mistake after a privilege drop) or larger than its bound (a log named by
mistake): imaplib's logins get NO [UNAVAILABLE], none is counted or logged as a failure fail2ban
would count, and they succeed once the file is readable."""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import GximapProcess

from midb.authdb import MAX_PASSWD_FILE_BYTES
from midb.scram import derive

pytestmark = pytest.mark.e2e

FILTER = Path(__file__).resolve().parent.parent / "etc" / "fail2ban" / "filter.d" / "gromox-imap.conf"


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the unprivileged running identity can reach (pytest's tmp_path parents are
    root-only)."""
    path = Path(tempfile.mkdtemp(prefix="gximap-passwd-", dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def _login(port: int, user: str, password: str) -> str:
    """The tagged answer's text to LOGIN ("OK ..." or the NO's text)."""
    with imaplib.IMAP4("127.0.0.1", port, timeout=10) as client:
        try:
            status, data = client.login(user, password)
        except imaplib.IMAP4.error as exc:
            text = exc.args[0]  # the NO's text, as bytes
            return "NO " + (text.decode() if isinstance(text, bytes) else str(text))
        client.logout()
        return f"{status} {data[0].decode()}"


def test_a_passwd_file_the_running_identity_cannot_read_is_a_temporary_failure(base: Path) -> None:
    passwd = base / "users"
    passwd.write_text("alice:{SCRAM-SHA-256}" + derive("secret", iterations=4096).text() + "\n")
    passwd.chmod(0o600)
    extra = {"auth_backend": "passwd-file", "auth_passwd_file": str(passwd), "imap_auth_times": "2",
             "imap_auth_ip_times": "3"}
    if os.getuid() == 0:
        # root reads any file whatever its mode: the file stays root's, the server runs as nobody,
        # which gets EACCES as a real deployment would after the privilege drop.
        nobody = pwd.getpwnam("nobody")
        proc = GximapProcess(base, tls=False, accounts={}, extra={**extra, "running_identity": "nobody"})
        proc.log_path.touch()
        for path in [proc.midb, *proc.midb.rglob("*"), proc.log_path]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        make_readable = lambda: passwd.chmod(0o644)  # noqa: E731
    else:
        proc = GximapProcess(base, tls=False, accounts={}, extra=extra)
        passwd.chmod(0o000)
        make_readable = lambda: passwd.chmod(0o600)  # noqa: E731
    proc.start()
    try:
        # Past imap_auth_times on one connection and imap_auth_ip_times from the address, a known
        # name and an unknown one: all the same temporary failure, nothing blocked.
        for user, password in (("alice", "secret"), ("alice", "wrong"), ("alice", "secret"), ("nobody", "x")):
            assert _login(proc.port, user, password) == \
                "NO [UNAVAILABLE] Authentication service temporarily unavailable"
        with imaplib.IMAP4("127.0.0.1", proc.port, timeout=10) as client:
            for _ in range(3):
                with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
                    client.login("alice", "secret")
            client.noop()  # still connected: no "too many failed logins" BYE
        make_readable()  # a chmod changes the file's ctime: the next login reads it again
        assert _login(proc.port, "alice", "secret").startswith("OK ")
    finally:
        proc.stop()
    log = proc.log()
    assert " rejected: " not in log and "blocked" not in log
    assert len(re.findall(r"user=\S+ LOGIN unavailable: passwd-file \S+ cannot be read", log)) == 7
    assert len(re.findall(rf"passwd-file {re.escape(str(passwd))} cannot be read: Permission denied \(EACCES\)",
                          log)) == 1
    assert f"passwd-file {passwd} can be read again" in log
    if shutil.which("fail2ban-regex") is not None:
        # The shipped filter finds nothing to ban in this log.
        result = subprocess.run(["fail2ban-regex", str(proc.log_path), str(FILTER)], capture_output=True,
                                text=True, timeout=60, check=False)
        assert re.search(r"^Failregex: 0 total", result.stdout, re.M), result.stdout


def test_a_passwd_file_over_its_size_bound_is_a_temporary_failure(base: Path) -> None:
    """A passwd-file over MAX_PASSWD_FILE_BYTES (sparse here: no disk spent) is not read: every
    login is NO [UNAVAILABLE], counted toward no block, the error logged once; once the file is
    cut to size (a change, so it is looked at again) the login succeeds."""
    passwd = base / "users"
    line = "alice:{SCRAM-SHA-256}" + derive("secret", iterations=4096).text() + "\n"
    passwd.write_text(line)
    os.truncate(passwd, MAX_PASSWD_FILE_BYTES + 1)
    proc = GximapProcess(base, tls=False, accounts={},
                         extra={"auth_backend": "passwd-file", "auth_passwd_file": str(passwd),
                                "imap_auth_times": "2", "imap_auth_ip_times": "3"})
    proc.start()
    try:
        for user, password in (("alice", "secret"), ("alice", "wrong"), ("alice", "secret"), ("nobody", "x")):
            assert _login(proc.port, user, password) == \
                "NO [UNAVAILABLE] Authentication service temporarily unavailable"
        os.truncate(passwd, len(line))
        assert _login(proc.port, "alice", "secret").startswith("OK ")
    finally:
        proc.stop()
    log = proc.log()
    assert " rejected: " not in log and "blocked" not in log
    assert len(re.findall(r"user=\S+ LOGIN unavailable: passwd-file \S+ cannot be read", log)) == 4
    assert len(re.findall(rf"passwd-file {re.escape(str(passwd))} cannot be read: larger than "
                          rf"{MAX_PASSWD_FILE_BYTES} bytes", log)) == 1
    assert f"passwd-file {passwd} can be read again" in log
