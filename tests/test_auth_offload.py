"""A password check in progress must not hold a pool worker: other sessions keep being served.

The pool here has exactly one worker. A backend that blocks until released stands in for a slow
KDF; while one client's LOGIN waits in it, a second client is greeted and its NOOP answered.
"""

from __future__ import annotations

import gc
import socket
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from conversation import response_codes
from net_helpers import wait_until

from gximap.auth.service import AuthService
from gximap.net.handler import INPUT_HIGH_WATER
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
        self.checked: list[tuple[str, str]] = []  # every check that ran

    def authenticate(self, user: str, password: str) -> str | None:
        self.checked.append((user, password))
        self.entered.set()
        self.release.wait(TIMEOUT)
        return "alice" if (user, password) == ("alice", "secret") else None

    def exists(self, user: str) -> bool:
        return user == "alice"

    def failure_reason(self, user: str) -> str:
        return "bad password" if self.exists(user) else "unknown user"


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
    sessions: list[weakref.ref[ImapSession]] = []  # weak: a test sees when one is released

    def new_session(conn, waker):  # noqa: ANN001, ANN202
        session = ImapSession(context, conn, waker)
        sessions.append(weakref.ref(session))
        return session

    server = Server(listeners, new_session, context_num=4,
                    thread_init_num=1, thread_charge_num=4, conn_timeout=30.0, ssl_context=None,
                    busy_response=b"* BYE busy\r\n")
    assert server.stats().max_workers == 1
    server.start()
    try:
        backend.sessions = sessions  # type: ignore[attr-defined]
        backend.auth = auth  # type: ignore[attr-defined]
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


def test_the_check_of_a_client_that_left_is_never_run(one_worker_server: tuple[int, GatedBackend],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that sends LOGIN and resets the connection while its check waits in the queue:
    the check is cancelled, never hashed. (It used to run after the client had gone; 200 such
    connections, made in under a second, delayed a real client's login by 7 s.)"""
    port, backend = one_worker_server
    auth: AuthService = backend.auth  # type: ignore[attr-defined]
    checks: list[Future[Any]] = []
    submit = auth.submit

    def recorded(*args: Any, **kwargs: Any) -> Future[Any]:
        checks.append(submit(*args, **kwargs))
        return checks[-1]

    monkeypatch.setattr(auth, "submit", recorded)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as first:
        assert _line(first).startswith(b"* OK")
        first.sendall(b"a LOGIN alice secret\r\n")
        assert backend.entered.wait(TIMEOUT)  # the only hashing thread is busy
        gone = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        assert _line(gone).startswith(b"* OK")
        gone.sendall(b"b LOGIN alice guess\r\n")
        assert wait_until(lambda: len(checks) == 2, TIMEOUT)
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()  # a reset: the pool ends the session at once
        assert wait_until(checks[1].cancelled, TIMEOUT)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as third:
            assert _line(third).startswith(b"* OK")
            third.sendall(b"c LOGIN alice secret\r\n")
            assert wait_until(lambda: len(checks) == 3, TIMEOUT)
            backend.release.set()
            assert _line(first).startswith(b"a OK [CAPABILITY")
            # The single hashing thread takes the queue in order: the abandoned check came first.
            assert _line(third).startswith(b"c OK [CAPABILITY")
    assert backend.checked == [("alice", "secret"), ("alice", "secret")]


def test_input_behind_a_pending_check_is_not_buffered_without_end(
        one_worker_server: tuple[int, GatedBackend]) -> None:
    """While a LOGIN waits for its password check, a client streaming commands behind it fills
    its own socket buffers: the session stops being read at INPUT_HIGH_WATER unprocessed bytes
    (the pool's PARK_WAKE), and reading resumes when the check is done; every command is then
    answered, in order."""
    port, backend = one_worker_server
    body = b"Subject: x\r\n\r\n" + b"y" * (INPUT_HIGH_WATER - 14)
    append = b"n APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n"
    count = 16  # well beyond the high-water mark and the kernel's socket buffers
    stream = append * count
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
        assert _line(client).startswith(b"* OK")
        client.sendall(b"a LOGIN alice secret\r\n")
        assert backend.entered.wait(TIMEOUT)
        session = backend.sessions[-1]()  # type: ignore[attr-defined]
        assert session is not None
        client.setblocking(False)
        sent = 0
        deadline = time.monotonic() + TIMEOUT
        stalled_since: float | None = None
        while sent < len(stream) and time.monotonic() < deadline:
            try:
                sent += client.send(stream[sent:sent + 65536])
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 0.5:
                    break  # the server stopped reading
                time.sleep(0.01)
        assert sent < len(stream)
        assert session.framer.buffered <= INPUT_HIGH_WATER + (1 << 20)  # the mark plus one read slice
        backend.release.set()
        client.setblocking(True)
        client.sendall(stream[sent:])
        assert _line(client).startswith(b"a OK [CAPABILITY")
        for _ in range(count):
            assert _line(client).startswith(b"n OK [APPENDUID ")
        del session


def test_a_closed_session_is_freed_without_the_garbage_collector(
        one_worker_server: tuple[int, GatedBackend]) -> None:
    """The pool lets go of a closed connection's session at once, with what it buffered (a
    literal's worth of input could otherwise wait for a full collection, which a long-lived
    process may seldom make)."""
    port, backend = one_worker_server
    backend.release.set()
    gc.disable()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            assert _line(client).startswith(b"* OK")
            client.sendall(b"a LOGIN alice secret\r\n")
            assert _line(client).startswith(b"a OK")
            client.sendall(b"b APPEND INBOX {4000000}\r\n")
            assert _line(client).startswith(b"+ ")
            client.sendall(b"z" * 1_000_000)
            session = backend.sessions[-1]  # type: ignore[attr-defined]
        deadline = time.monotonic() + TIMEOUT
        while session() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert session() is None
    finally:
        gc.enable()
