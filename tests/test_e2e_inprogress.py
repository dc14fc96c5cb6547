"""INPROGRESS (RFC 9585) with the real gximap: a long command's progress lines reach the client
over the socket, each before the command's tagged answer.

The server is started through GximapProcess's ``wrap`` with the progress timing and the search's
slices shortened (a line at every pause, a pause at every look at the clock, batches of 8
messages), so that a search of a small folder is "long" without the test waiting for it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from e2e import DATA_DIR, GximapProcess, LineClient

from midb.store import Store

pytestmark = pytest.mark.e2e

MESSAGES = 40
PROGRESS_LINE = re.compile(rb'\* OK \[INPROGRESS \("s1" (NIL|\d+) (NIL|\d+)\)\] Still working\Z')

_SHORT_TIMINGS = (
    "import sys\n"
    "from gximap.session import base, progress, searching\n"
    "progress.FIRST_AFTER = progress.INTERVAL = 0.0\n"
    "base.SLICE_SECONDS = 0.0\n"
    "searching._BATCH_MESSAGES = 8\n"
    "from gximap.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _with_short_timings(command: list[str]) -> list[str]:
    """``python -m gximap -c FILE`` as ``python -c SCRIPT -c FILE``, the script patching first."""
    assert command[1:3] == ["-m", "gximap"], command
    return [sys.executable, "-c", _SHORT_TIMINGS, *command[3:]]


def _fill(midb: Path) -> None:
    with Store(midb, fsync=False, data_path=[str(DATA_DIR)]) as store:
        folder = store.get_folder("alice", "INBOX")
        assert folder is not None
        for number in range(1, MESSAGES + 1):
            marker = b"needle" if number % 4 == 0 else b"hay"
            store.append("alice", folder.id, b"From: bob@example.org\r\nSubject: m%d\r\n\r\n%b\r\n" % (number, marker))


def test_progress_lines_arrive_before_the_tagged_answer(tmp_path: Path) -> None:
    server = GximapProcess(tmp_path, tls=False)
    _fill(server.midb)
    server.start(wrap=_with_short_timings)
    client = LineClient(server.port)
    try:
        assert client.readline().startswith(b"* OK")
        assert client.command("a1", "LOGIN alice secret")[-1].startswith(b"a1 OK")
        capability = client.command("a2", "CAPABILITY")
        assert b"INPROGRESS" in capability[0].split()
        assert client.command("a3", "SELECT INBOX")[-1].startswith(b"a3 OK")
        lines = client.command("s1", "SEARCH BODY needle")
        assert lines[-1].startswith(b"s1 OK"), lines[-1]
        progress = [line for line in lines[:-1] if b"INPROGRESS" in line]
        assert len(progress) >= 2
        counts = []
        for line in progress:
            match = PROGRESS_LINE.match(line)
            assert match is not None, line
            if match.group(1) != b"NIL":
                assert match.group(2) == b"%d" % MESSAGES
                counts.append(int(match.group(1)))
        assert counts == sorted(counts) and len(set(counts)) >= 2 and max(counts) < MESSAGES
        others = [line for line in lines[:-1] if b"INPROGRESS" not in line]
        assert others == [b"* SEARCH " + b" ".join(b"%d" % n for n in range(4, MESSAGES + 1, 4))]
        # A quick command after it sends none.
        assert client.command("n1", "NOOP") == [b"n1 OK NOOP completed"]
        assert client.command("z1", "LOGOUT")[-1].startswith(b"z1 OK")
    finally:
        client.close()
        assert server.stop() == 0
