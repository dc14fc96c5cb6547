"""A password check in progress must not hold a pool worker: other sessions keep being served.

The pool here has exactly one worker. A backend that blocks until released stands in for a slow
KDF; while one client's LOGIN waits in it, a second client is greeted and its NOOP answered.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import response_codes

from gximap.auth.service import AuthService
from gximap.net.listener import ListenerSpec, bind_listeners
from gximap.net.pool import Server
from gximap.session.context import ServerContext, Settings
from gximap.session.session import ImapSession
from midb.store import Store

TIMEOUT = 10.0


class GatedBackend:
    """Checks "alice"/"secret", but only once released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def authenticate(self, user: str, password: str) -> str | None:
        self.entered.set()
        self.release.wait(TIMEOUT)
        return "alice" if (user, password) == ("alice", "secret") else None

    def exists(self, user: str) -> bool:
        return user == "alice"


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def one_worker_server(tmp_path: Path) -> Iterator[tuple[int, GatedBackend]]:
    store = Store(tmp_path / "midb", fsync=False)
    store.create_account("alice")
    backend = GatedBackend()
    auth = AuthService(store, backend, hash_concurrency=1)
    context = ServerContext(Settings(insecure_auth=True), store, auth, response_codes())
    listeners = bind_listeners([ListenerSpec("127.0.0.1", 0, tls=False)])
    server = Server(listeners, lambda conn, waker: ImapSession(context, conn, waker), context_num=4,
                    thread_init_num=1, thread_charge_num=4, conn_timeout=30.0, ssl_context=None,
                    busy_response=b"* BYE busy\r\n")
    assert server.stats().max_workers == 1
    server.start()
    try:
        yield listeners[0].port, backend
    finally:
        backend.release.set()
        server.stop(grace=2.0)
        auth.close()
        store.close()


def test_pending_password_check_does_not_hold_the_worker(one_worker_server: tuple[int, GatedBackend]) -> None:
    port, backend = one_worker_server
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as first, \
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as second:
        assert _line(first).startswith(b"* OK")
        first.sendall(b"a LOGIN alice secret\r\n")
        assert backend.entered.wait(TIMEOUT)
        # The only worker is free while the check waits: the second client is served long
        # before the backend would give up waiting (TIMEOUT).
        second.settimeout(TIMEOUT / 4)
        assert _line(second).startswith(b"* OK")
        second.sendall(b"b NOOP\r\n")
        assert _line(second).startswith(b"b OK")
        backend.release.set()
        assert _line(first).startswith(b"a OK [CAPABILITY")
        first.sendall(b"c LOGOUT\r\n")
        assert _line(first).startswith(b"* BYE")
