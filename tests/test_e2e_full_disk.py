"""The real gximap with its store on a full filesystem (a small tmpfs in a mount namespace of its
own): it must keep serving, refuse what it cannot store with a temporary error and say so in the
log. A process used to die of SIGBUS at the first SELECT, every session with it: its interest map
(midb.events) was written through a shared mapping, whose first write needed a block the
filesystem no longer had."""

from __future__ import annotations

import imaplib
import re
import shlex
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest
from e2e import GximapProcess, free_port

pytestmark = pytest.mark.e2e


def _can_mount_in_a_namespace(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    point = tmp_path / "probe"
    point.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(point))}"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def test_a_full_store_filesystem_keeps_the_server_up(tmp_path: Path) -> None:
    if not _can_mount_in_a_namespace(tmp_path):
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (needs root)")
    lmtp_port = free_port()
    server = GximapProcess(tmp_path, tls=False, extra={"lmtp_listen": f"127.0.0.1:{lmtp_port}", "delivery_map": "email_localpart",
                                                     "imap_log_level": "4"})
    full = tmp_path / "full"
    full.mkdir()
    store = full / "midb"
    server.write_config(midb_path=str(store))

    def on_a_full_tmpfs(command: list[str]) -> list[str]:
        # The store made by GximapProcess is copied onto the tmpfs, which is then filled up.
        script = (f"mount -t tmpfs -o size=16m tmpfs {shlex.quote(str(full))} && "
                  f"cp -a {shlex.quote(str(server.midb))} {shlex.quote(str(store))} && "
                  f"{{ dd if=/dev/zero of={shlex.quote(str(full / 'filler'))} bs=4k 2>/dev/null; true; }} && "
                  f"exec {shlex.join(command)}")
        return ["unshare", "-m", "sh", "-c", script]

    server.start(wrap=on_a_full_tmpfs)
    try:
        first = imaplib.IMAP4("127.0.0.1", server.port, timeout=15)
        second = imaplib.IMAP4("127.0.0.1", server.port, timeout=15)
        first.login("alice", "secret")
        second.login("alice", "secret")
        assert first.select("INBOX")[0] == "OK"   # was: SIGBUS, both connections gone
        second.select("INBOX")
        status, answer = first.append("INBOX", None, None, b"Subject: too much\r\n\r\nno room\r\n")
        assert status == "NO" and b"[UNAVAILABLE]" in answer[0] and b"No space left on device" in answer[0]
        assert first.noop()[0] == "OK" and second.noop()[0] == "OK"
        assert first.status("INBOX", "(MESSAGES)")[1] == [b'INBOX (MESSAGES 0)']
        with smtplib.LMTP("127.0.0.1", lmtp_port, timeout=15) as mta, \
                pytest.raises(smtplib.SMTPDataError) as refused:
            # Larger than what the index keeps inline: its body file is what finds no room.
            mta.sendmail("carol@example.org", ["alice@example.org"],
                         b"Subject: deferred\r\n\r\n" + b"later\r\n" * 60_000)
        assert refused.value.smtp_code == 451  # temporary: the MTA keeps the mail and retries
        first.logout()
        second.logout()
        assert server.proc is not None and server.proc.poll() is None
    finally:
        assert server.stop() == 0, server.output()
    # At the default level, the administrator reads why mail is refused: the disk is full.
    log = server.log()
    assert "no interest map" in log
    assert re.search(r"<2> session \S+: user=alice APPEND failed: no room left for the index: .*No space left", log), log
    assert re.search(r"<2> lmtp: id=\S+ account=alice: store full, mail deferred: cannot store message body: No space",
                     log), log
