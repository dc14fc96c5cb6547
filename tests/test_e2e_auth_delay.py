"""imap_auth_failure_delay in the real process: a failed LOGIN is answered no sooner than the delay,
and fifty connections waiting out theirs hold no thread: a good login is answered meanwhile.

Timing is bounded from below only where the delay promises it; the one upper bound (the good login)
is the delay itself, an order of magnitude above what such a login takes."""

from __future__ import annotations

import os
import selectors
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import GximapProcess, LineClient
from net_helpers import wait_until

pytestmark = pytest.mark.e2e

DELAY = 2.0  # the default, Dovecot's auth_failure_delay
FAILING = 50


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GximapProcess]:
    # No address limit: fifty failures from 127.0.0.1 would block the good login's address too.
    proc = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret", "bob": "secret"}, extra={
        "imap_auth_failure_delay": f"{DELAY:g}s", "imap_auth_ip_times": "0", "context_num": str(FAILING + 20)})
    proc.start()
    yield proc
    proc.stop()


def _connect(server: GximapProcess) -> LineClient:
    client = LineClient(server.port, timeout=60.0)
    assert client.readline().startswith(b"* OK"), "no greeting"
    return client


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_a_failed_login_is_answered_after_the_delay(server: GximapProcess) -> None:
    client = _connect(server)
    try:
        started = time.monotonic()
        answer = client.command("a1", "LOGIN alice wrong")
        assert time.monotonic() - started >= DELAY
        assert answer[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]"), answer
        assert "user=alice LOGIN rejected: bad password" in server.log()
        assert client.command("a2", "LOGIN alice secret")[-1].startswith(b"a2 OK")
    finally:
        client.close()


def _watch(clients: list[LineClient], arrived: dict[int, float]) -> None:
    """Note when each client's answer arrives (its socket turns readable), until all have or a
    minute passed."""
    with selectors.DefaultSelector() as selector:
        for number, client in enumerate(clients):
            selector.register(client.sock, selectors.EVENT_READ, number)
        deadline = time.monotonic() + 60
        while len(arrived) < len(clients) and time.monotonic() < deadline:
            for key, _events in selector.select(timeout=0.5):
                arrived[key.data] = time.monotonic()
                selector.unregister(key.fileobj)


def test_fifty_failing_connections_do_not_hold_up_a_good_login(server: GximapProcess) -> None:
    assert server.proc is not None
    warm = _connect(server)  # the password in the credential cache: alice's good login below needs no hash
    assert warm.command("w1", "LOGIN alice secret")[-1].startswith(b"w1 OK")
    warm.close()
    failing = [_connect(server) for _ in range(FAILING)]
    try:
        arrived: dict[int, float] = {}
        watcher = threading.Thread(target=_watch, args=(failing, arrived))
        sent: list[float] = []
        for number, client in enumerate(failing):
            client.send(f"f{number} LOGIN alice wrong{number}\r\n".encode())
            sent.append(time.monotonic())
        watcher.start()
        # Every failure decided (its line is logged then, not after the delay): the fifty wait out
        # their delays now, but for any whose hashing, queued behind the others', outlasted it.
        assert wait_until(lambda: server.log().count("LOGIN rejected: bad password") >= FAILING, timeout=60)
        threads = _threads(server.proc.pid)
        # alice's password the cache holds: answered on a worker. bob's is hashed: by a hashing
        # thread, none of which may be asleep in a delay either.
        for tag, user in (("g1", "alice"), ("g2", "bob")):
            started = time.monotonic()  # the greeting too: it needs a worker as much as the login
            good = _connect(server)
            try:
                answer = good.command(tag, f"LOGIN {user} secret")
                elapsed = time.monotonic() - started
                assert answer[-1].startswith(f"{tag} OK".encode()), answer
            finally:
                good.close()
            assert elapsed < DELAY, f"{user}'s login took {elapsed:.2f} s beside {FAILING} failing ones"
        watcher.join(90)
        assert threads < FAILING, f"{threads} threads for {FAILING} connections waiting out a delay"
        assert len(arrived) == FAILING
        early = {number: round(arrived[number] - sent[number], 3) for number in arrived
                 if arrived[number] - sent[number] < DELAY}
        assert not early, f"answered before the delay: {early}"
        for number, client in enumerate(failing):
            answer = client.until_tagged(f"f{number}".encode())
            assert answer[-1].startswith(f"f{number} NO [AUTHENTICATIONFAILED]".encode()), answer
    finally:
        for client in failing:
            client.close()
