"""A long computation must not hold a pool worker for its whole run: a SEARCH gives its worker
back between messages once its time slice is over, and the pool serves other sessions meanwhile.

The pool here has exactly one worker, and each message's test takes a while (standing in for a
costly search program), so that the SEARCH runs for seconds. A second client's NOOP, sent while
the SEARCH runs, is answered before the SEARCH has tested more than a few messages.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import response_codes

from gximap.auth.service import AuthService
from gximap.net.listener import ListenerSpec, bind_listeners
from gximap.net.pool import Server
from gximap.session import searching
from gximap.session.context import ServerContext, Settings
from gximap.session.session import ImapSession
from midb.store import Store

TIMEOUT = 20.0
MESSAGES = 60
TEST_SECONDS = 0.02  # per message: the SEARCH takes MESSAGES * TEST_SECONDS at least


class Backend:
    def authenticate(self, user: str, password: str) -> str | None:
        return user if password == "secret" and user in ("alice", "bob") else None

    def exists(self, user: str) -> bool:
        return user in ("alice", "bob")


def _until(sock: socket.socket, tag: bytes) -> list[bytes]:
    lines: list[bytes] = []
    data = b""
    while True:
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError(f"connection closed before {tag!r}: {lines!r}")
        data += chunk
        if data.endswith(b"\r\n"):
            lines.append(data)
            if data.startswith(tag + b" "):
                return lines
            data = b""


@pytest.fixture
def one_worker_port(tmp_path: Path) -> Iterator[int]:
    store = Store(tmp_path / "midb", fsync=False)
    for user in ("alice", "bob"):
        store.create_account(user)
    folder = store.get_folder("alice", "INBOX")
    assert folder is not None
    store.append_many("alice", folder.id, [
        (b"Subject: m%d\r\n\r\n%s\r\n" % (number, b"needle" if number % 10 == 0 else b"hay"), (), None, 0)
        for number in range(MESSAGES)])
    auth = AuthService(store, Backend(), hash_concurrency=1)
    context = ServerContext(Settings(insecure_auth=True), store, auth, response_codes())
    listeners = bind_listeners([ListenerSpec("127.0.0.1", 0, tls=False)])
    server = Server(listeners, lambda conn, waker: ImapSession(context, conn, waker), context_num=4,
                    thread_init_num=1, thread_charge_num=4, conn_timeout=30.0, ssl_context=None,
                    busy_response=b"* BYE busy\r\n")
    assert server.stats().max_workers == 1
    server.start()
    try:
        yield listeners[0].port
    finally:
        server.stop(grace=2.0)
        auth.close()
        store.close()


def test_a_long_search_lets_the_only_worker_serve_another_session(
        one_worker_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    tested = 0
    searching_started = threading.Event()
    passes = searching._passes

    def slow_passes(msg: Any, tests: Any) -> bool:
        nonlocal tested
        tested += 1
        searching_started.set()
        time.sleep(TEST_SECONDS)  # holds the worker, as a costly test would
        return passes(msg, tests)

    monkeypatch.setattr(searching, "_passes", slow_passes)
    with socket.create_connection(("127.0.0.1", one_worker_port), timeout=TIMEOUT) as searcher, \
            socket.create_connection(("127.0.0.1", one_worker_port), timeout=TIMEOUT) as other:
        for sock, user in ((searcher, b"alice"), (other, b"bob")):
            _until(sock, b"*")
            sock.sendall(b"l LOGIN " + user + b" secret\r\n")
            assert _until(sock, b"l")[-1].startswith(b"l OK")
        searcher.sendall(b"s SELECT INBOX\r\n")
        assert _until(searcher, b"s")[-1].startswith(b"s OK")
        searcher.sendall(b"q SEARCH BODY needle\r\n")
        assert searching_started.wait(TIMEOUT)
        other.sendall(b"n NOOP\r\n")
        assert _until(other, b"n")[-1].startswith(b"n OK")
        # Answered in the SEARCH's next pause, not after it: most messages are still untested.
        assert tested < MESSAGES // 2
        lines = _until(searcher, b"q")
        assert lines == [b"* SEARCH 1 11 21 31 41 51\r\n", b"q OK SEARCH completed\r\n"]
        assert tested == MESSAGES
