"""Audit of issue 3: ``midb user add`` and ``user passwd`` read the password from a terminal prompt
(getpass, asked twice) when no --password-stdin is given."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

from midb.passwords import verify_password
from midb.store import Store

REPO = str(Path(__file__).resolve().parent.parent)


def _run_on_terminal(argv: list[str], answers: list[bytes], timeout: float = 60.0) -> tuple[int, bytes]:
    """Run argv with a pseudo-terminal as its controlling terminal; send each answer after a prompt."""
    pid, master = pty.fork()
    if pid == 0:  # the child: exec at once, whatever happens
        try:
            os.chdir(REPO)
            os.execv(sys.executable, [sys.executable, *argv])
        finally:
            os._exit(127)
    output = b""
    pending = list(answers)
    sent = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if pending and output.count(b"password:") > sent:  # a new prompt: answer it once
                os.write(master, pending.pop(0) + b"\n")
                sent += 1
    finally:
        os.close(master)
    for _ in range(100):
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return os.waitstatus_to_exitcode(status), output
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"midb did not finish: {output!r}")


def test_user_add_and_passwd_prompt_on_the_terminal(tmp_path: Path) -> None:
    store_dir = str(tmp_path / "store")
    code, output = _run_on_terminal(["-m", "midb", "--store", store_dir, "user", "add", "erin"],
                                    [b"first-Secret", b"first-Secret"])
    assert code == 0, output
    assert output.count(b"password:") == 2 and b"first-Secret" not in output  # not echoed
    code, output = _run_on_terminal(["-m", "midb", "--store", store_dir, "user", "passwd", "erin"],
                                    [b"second-Secret", b"typo"])
    assert code != 0 and b"do not match" in output
    code, output = _run_on_terminal(["-m", "midb", "--store", store_dir, "user", "passwd", "erin"],
                                    [b"second-Secret", b"second-Secret"])
    assert code == 0, output
    with Store(store_dir, fsync=False) as store:
        account = store.get_account("erin")
        assert account is not None and account.password_hash
        assert verify_password("second-Secret", account.password_hash)
        assert not verify_password("first-Secret", account.password_hash)
