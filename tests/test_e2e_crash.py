"""Never lose mail, on the wire: SIGKILL the real gximap while clients deliver over LMTP and
APPEND over IMAP, then check that every message the server acknowledged (an LMTP 250, a tagged
OK with its APPENDUID) is in the store, byte for byte, and that the store verifies clean.

tests/test_crash.py kills a store writer; this kills the daemon, whose LMTP and APPEND paths
batch their commits (the bulk writers): what it adds is that no acknowledgement goes out before
its commit. The kill is SIGKILL, not a power cut: midb_fsync stays off, as in the other e2e tests.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import imaplib
import os
import random
import re
import signal
import smtplib
import socket
import threading
import time
from pathlib import Path

import pytest
from e2e import DATA_DIR, GximapProcess, child_pids, free_port
from net_helpers import wait_until

from midb.store import Store

pytestmark = pytest.mark.e2e

ROUNDS = 3
KILL_WAIT = 120.0   # seconds for a round's wanted acknowledgements: only a bound, never the cause
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")


class _Acknowledged:
    """What the server acknowledged, by token (each message carries a unique one)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.digests: dict[str, tuple[str, int]] = {}      # token -> sha256 and length as sent
        self.appended_uids: dict[str, int] = {}
        self.faults: list[str] = []   # what a client thread saw that is not the kill
        self.counts: collections.Counter[tuple[str, int]] = collections.Counter()   # (kind, round)

    def add(self, token: str, message: bytes, uid: int | None = None) -> None:
        with self.lock:
            self.digests[token] = hashlib.sha256(message).hexdigest(), len(message)
            if uid is not None:
                self.appended_uids[token] = uid
            kind, round_number = token.split("-")[:2]
            self.counts[kind.rstrip("0123456789"), int(round_number)] += 1

    def _reached(self, round_number: int, wanted: dict[str, int]) -> bool:
        with self.lock:
            return all(self.counts[kind, round_number] >= count for kind, count in wanted.items())

    def wait_for(self, round_number: int, wanted: dict[str, int], clients: list[threading.Thread],
                 timeout: float) -> bool:
        """Wait until this round has ``wanted[kind]`` acknowledgements of each kind. False when a
        client saw a fault or all ``clients`` ended first, or ``timeout`` passed."""
        wait_until(lambda: bool(self.faults) or not any(client.is_alive() for client in clients)
                   or self._reached(round_number, wanted), timeout=timeout)
        return not self.faults and self._reached(round_number, wanted)


def _message(kind: str, round_number: int, serial: int, rng: random.Random) -> tuple[str, bytes]:
    token = f"{kind}-{round_number}-{serial}"
    body = b"".join(b"line %d of %s\r\n" % (n, token.encode()) for n in range(rng.choice((3, 400, 9000))))
    return token, (f"From: carol@example.org\r\nTo: alice@example.org\r\nSubject: {token}\r\n"
                   f"Message-ID: <{token}@crash.example>\r\n\r\n").encode() + body


def _deliver(port: int, round_number: int, worker: int, stop: threading.Event, acked: _Acknowledged) -> None:
    rng = random.Random(f"lmtp-{round_number}-{worker}")
    serial = 0
    try:
        with smtplib.LMTP("127.0.0.1", port, timeout=60) as mta:
            while not stop.is_set():
                serial += 1
                token, message = _message(f"lmtp{worker}", round_number, serial, rng)
                refused = mta.sendmail("carol@example.org", ["alice@example.org"], message)
                if not refused:   # sendmail returns once the 250 for the one recipient came
                    acked.add(token, message)
    except (OSError, smtplib.SMTPException):
        pass   # the server was killed under it: what was not acknowledged may be lost


def _append(port: int, round_number: int, worker: int, stop: threading.Event, acked: _Acknowledged) -> None:
    rng = random.Random(f"imap-{round_number}-{worker}")
    serial = 0
    try:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=60)
        client.login("alice", "secret")
        while not stop.is_set():
            serial += 1
            token, message = _message(f"imap{worker}", round_number, serial, rng)
            status, answer = client.append("INBOX", None, None, message)
            if status == "OK":
                found = _APPENDUID.search(answer[0])
                if found is None:
                    acked.faults.append(f"APPEND OK without APPENDUID: {answer!r}")
                    return
                acked.add(token, message, int(found.group(1)))
            else:
                acked.faults.append(f"APPEND refused: {status} {answer!r}")
                return
    except (OSError, imaplib.IMAP4.abort, imaplib.IMAP4.error, EOFError):
        pass


def _stored_by_token(path: Path) -> tuple[dict[str, list[tuple[int, bytes]]], list[str]]:
    """token -> [(uid, body)] of INBOX, and verify()'s problems other than orphan files."""
    with Store(str(path), fsync=False, data_path=[str(DATA_DIR)]) as store:
        inbox = store.get_folder("alice", "INBOX")
        assert inbox is not None
        stored: dict[str, list[tuple[int, bytes]]] = {}
        for meta in store.messages("alice", inbox.id):
            body = store.read_body(meta.blob)
            found = re.search(rb"^Subject: (\S+)\r$", body, re.MULTILINE)
            assert found is not None, body[:200]
            stored.setdefault(found.group(1).decode(), []).append((meta.uid, body))
        problems = [problem for problem in store.verify() if not problem.startswith("orphan:")]
    return stored, problems


def _wait_for_lmtp(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            if sock.recv(4) == b"220 ":
                return
        time.sleep(0.05)
    raise TimeoutError(f"no LMTP greeting on 127.0.0.1:{port}")


def _kill_all(server: GximapProcess) -> None:
    """SIGKILL the serving processes and the master at once; wait until every one is gone
    (a child the master forked meanwhile ends on its parent's death)."""
    assert server.proc is not None
    children = child_pids(server.proc.pid)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.signal(signal.SIGKILL)
    assert server.proc.wait(10) == -signal.SIGKILL
    wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children), timeout=15, interval=0.02)


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_loses_no_acknowledged_delivery_or_append(tmp_path: Path, processes: int) -> None:
    lmtp_port = free_port()
    server = GximapProcess(tmp_path, tls=False, extra={"lmtp_listen": f"127.0.0.1:{lmtp_port}",
                                                     "delivery_map": "email_localpart",
                                                     "imap_process_num": str(processes)})
    acked = _Acknowledged()
    rng = random.Random(20261126)
    for round_number in range(ROUNDS):
        server.start()
        _wait_for_lmtp(lmtp_port)   # bound after the IMAP port
        stop = threading.Event()
        workers = [threading.Thread(target=_deliver, args=(lmtp_port, round_number, n, stop, acked))
                   for n in range(2)]
        workers += [threading.Thread(target=_append, args=(server.port, round_number, n, stop, acked))
                    for n in range(2)]
        # The kill comes after a number of acknowledgements of each kind, not after a time: on a
        # loaded machine a client may need seconds for its login (scrypt) and first APPEND.
        wanted = {"lmtp": rng.randint(3, 60), "imap": rng.randint(3, 30)}
        for worker in workers:
            worker.start()
        try:
            reached = acked.wait_for(round_number, wanted, workers, KILL_WAIT)
            _kill_all(server)
        finally:
            stop.set()
            for worker in workers:
                worker.join(15)
            server.stop()
        assert acked.faults == []
        # Both kinds of client were at work, as far as wanted, before the kill.
        came = {kind: acked.counts[kind, round_number] for kind in wanted}
        assert reached, f"round {round_number}: {wanted} acknowledgements wanted, {came} came\n{server.log()[-5000:]}"
        stored, problems = _stored_by_token(server.midb)
        assert problems == [], f"round {round_number}: {problems}"
        for token, (digest, length) in acked.digests.items():
            assert token in stored, f"round {round_number}: acknowledged {token} lost"
            assert len(stored[token]) == 1, f"{token} stored {len(stored[token])} times"
            uid, body = stored[token][0]
            # A delivery is stored behind the trace fields it gets (Return-Path, Received).
            assert hashlib.sha256(body[-length:]).hexdigest() == digest, f"{token} corrupted"
            if token in acked.appended_uids:
                assert len(body) == length and uid == acked.appended_uids[token], f"{token}: uid {uid}"
        print(f"round {round_number}: {len(acked.digests)} acknowledged, {len(stored)} stored")
        # Each message is stored at most once: an unacknowledged one may be there or not.
        assert all(len(copies) == 1 for copies in stored.values())
