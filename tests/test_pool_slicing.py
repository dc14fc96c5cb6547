"""A long computation must not hold a pool worker for its whole run: a SEARCH gives its worker
back between messages once its time slice is over, and the pool serves other sessions meanwhile.
A client gone while its SEARCH runs or waits for a search slot is noticed then, not when the
SEARCH ends; one that only half-closed, or pipelined more commands, is answered in full.

The pool here has exactly one worker, and each message's test takes a while (standing in for a
costly search program), so that the SEARCH runs for seconds. A second client's NOOP, sent while
the SEARCH runs, is answered before the SEARCH has tested more than a few messages.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conversation import response_codes
from net_helpers import Client, client_tls_context, close_clients, make_certificate, wait_until

from gximap.auth.service import AuthService
from gximap.net import pool as pool_module
from gximap.net.listener import ListenerSpec, bind_listeners
from gximap.net.pool import Server
from gximap.net.tls import make_server_context
from gximap.session import pieces, searching, sorting
from gximap.session.context import ServerContext, Settings
from gximap.session.session import ImapSession
from midb.store import Store

TIMEOUT = 20.0
MESSAGES = 60
TEST_SECONDS = 0.02  # per message: the SEARCH takes MESSAGES * TEST_SECONDS at least
SEARCH = b"q SEARCH BODY needle\r\n"
SEARCH_ANSWER = [b"* SEARCH 1 11 21 31 41 51\r\n", b"q OK SEARCH completed\r\n"]
TRANSPORTS = ["plain", "compress", "tls"]


class Backend:
    def authenticate(self, user: str, password: str) -> str | None:
        return user if password == "secret" and user in ("alice", "bob") else None

    def exists(self, user: str) -> bool:
        return user in ("alice", "bob")

    def failure_reason(self, user: str) -> str:
        return "bad password" if self.exists(user) else "unknown user"


class Pool(NamedTuple):
    server: Server
    ports: dict[str, int]  # "plain", "tls" (implicit TLS)
    client_ssl: ssl.SSLContext


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_certificate(str(tmp_path_factory.mktemp("slicing-tls")))


@pytest.fixture
def one_worker(tmp_path: Path, certificate: tuple[str, str]) -> Iterator[Pool]:
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
    listeners = bind_listeners([ListenerSpec("127.0.0.1", 0, tls=False), ListenerSpec("127.0.0.1", 0, tls=True)])
    server = Server(listeners, lambda conn, waker: ImapSession(context, conn, waker), context_num=4,
                    thread_init_num=1, thread_charge_num=4, conn_timeout=30.0,
                    ssl_context=make_server_context(*certificate), busy_response=b"* BYE busy\r\n")
    assert server.stats().max_workers == 1
    server.start()
    try:
        yield Pool(server, {("tls" if listener.tls else "plain"): listener.port for listener in listeners},
                   client_tls_context(certificate[0]))
    finally:
        close_clients()
        server.stop(grace=2.0)
        auth.close()
        store.close()


class SlowSearch:
    """Each message's test holds the worker TEST_SECONDS, as a costly test would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tested = 0
        self.started = threading.Event()
        passes = searching._passes

        def slow_passes(msg: Any, tests: Any) -> bool:
            self.tested += 1
            self.started.set()
            time.sleep(TEST_SECONDS)
            return passes(msg, tests)

        monkeypatch.setattr(searching, "_passes", slow_passes)


def _own_slots(monkeypatch: pytest.MonkeyPatch, total: int = 8, per_account: int = 2) -> searching._SearchSlots:
    slots = searching._SearchSlots(total=total, per_account=per_account)
    monkeypatch.setattr(searching, "_SLOTS", slots)
    return slots


def _spy_on_hang_up_looks(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """What each of the pool's looks for a client gone found (None: still there)."""
    found: list[str | None] = []
    look = pool_module._hang_up

    def spy(sock: socket.socket) -> str | None:
        found.append(look(sock))
        return found[-1]

    monkeypatch.setattr(pool_module, "_hang_up", spy)
    return found


def _answer(client: Client, tag: bytes) -> list[bytes]:
    lines = []
    while True:
        lines.append(client.readline())
        if lines[-1].startswith(tag + b" "):
            return lines


def _connect(pool: Pool, transport: str = "plain", user: bytes = b"alice") -> Client:
    """A client logged in as ``user`` (with COMPRESS=DEFLATE on after login, or on the TLS port)."""
    client = Client("127.0.0.1", pool.ports["tls" if transport == "tls" else "plain"], timeout=TIMEOUT)
    if transport == "tls":
        client.starttls(pool.client_ssl)
    assert client.readline().startswith(b"* OK")
    client.send(b"l LOGIN " + user + b" secret\r\n")
    assert _answer(client, b"l")[-1].startswith(b"l OK")
    if transport == "compress":
        client.send(b"c COMPRESS DEFLATE\r\n")
        assert _answer(client, b"c")[-1].startswith(b"c OK")
        client.start_compress()
    return client


def _selected(pool: Pool, transport: str = "plain") -> Client:
    client = _connect(pool, transport)
    client.send(b"s SELECT INBOX\r\n")
    assert _answer(client, b"s")[-1].startswith(b"s OK")
    return client


def _reset(client: Client) -> None:
    """Close with a reset (as a killed client with unread data does), not a FIN."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def _eof_read(server: Server) -> bool:
    """The pool has read the client's EOF (its connection waits on the waker now)."""
    with server._lock:
        return any(conn.eof for conn in server._conns)


def _noop_answered_while(pool: Pool, command: bytes, started: threading.Event) -> Client:
    """alice sends ``command``; once it has ``started``, bob's NOOP is answered. Returns
    alice's client, its answer unread."""
    busy = _selected(pool)
    other = _connect(pool, user=b"bob")
    busy.send(command)
    assert started.wait(TIMEOUT)
    other.send(b"n NOOP\r\n")
    assert _answer(other, b"n")[-1].startswith(b"n OK")
    return busy


def test_a_long_search_lets_the_only_worker_serve_another_session(
        one_worker: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    search = SlowSearch(monkeypatch)
    searcher = _noop_answered_while(one_worker, SEARCH, search.started)
    # Answered in the SEARCH's next pause, not after it: most messages are still untested.
    assert search.tested < MESSAGES // 2
    assert _answer(searcher, b"q") == SEARCH_ANSWER
    assert search.tested == MESSAGES


def test_a_bulk_copy_lets_the_only_worker_serve_another_session(
        one_worker: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A COPY of many messages is written in pieces by gximap.session.pieces' threads; the
    session holds no worker meanwhile, so the pool's only worker answers another client."""
    monkeypatch.setattr(pieces, "FIRST_PIECE", 10)
    monkeypatch.setattr(pieces, "MIN_PIECE", 10)
    monkeypatch.setattr(pieces, "MAX_PIECE", 10)
    copy = Store.copy
    pieces_written: list[str] = []

    def slow_copy(self: Store, *args: Any, **kwargs: Any) -> Any:
        pieces_written.append(threading.current_thread().name)
        time.sleep(0.2)   # a piece of a large folder takes a while
        return copy(self, *args, **kwargs)

    monkeypatch.setattr(Store, "copy", slow_copy)
    copier = _selected(one_worker)
    copier.send(b"m CREATE Other\r\n")
    assert _answer(copier, b"m")[-1].startswith(b"m OK")
    other = _connect(one_worker, user=b"bob")
    copier.send(b"c COPY 1:* Other\r\n")
    assert wait_until(lambda: len(pieces_written) >= 1, TIMEOUT)
    other.send(b"n NOOP\r\n")
    assert _answer(other, b"n")[-1].startswith(b"n OK")
    assert len(pieces_written) < MESSAGES // 10   # answered while the COPY goes on
    answer = _answer(copier, b"c")
    assert answer[-1].startswith(b"c OK [COPYUID ") and b" 1:60 1:60]" in answer[-1]
    assert len(pieces_written) == MESSAGES // 10
    assert all(name.startswith("bulk-write") for name in pieces_written)


class SlowSortReads:
    """Each read of sort values (two messages at a time) holds the worker TEST_SECONDS, as the
    read of a stretch of a large folder's would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.started = threading.Event()
        read = Store.sort_values

        def slow_read(store: Store, *args: Any) -> Any:
            self.reads += 1
            self.started.set()
            time.sleep(TEST_SECONDS)
            return read(store, *args)

        monkeypatch.setattr(Store, "sort_values", slow_read)
        monkeypatch.setattr(sorting, "_UIDS_PER_READ", 2)


@pytest.mark.parametrize(("command", "answer"), [
    (b"r SORT (SUBJECT) UTF-8 ALL\r\n",
     b"* SORT" + b"".join(b" %d" % (number + 1) for number in sorted(range(MESSAGES), key=lambda n: f"M{n}"))),
    (b"r THREAD REFERENCES UTF-8 ALL\r\n", b"* THREAD " + b"".join(b"(%d)" % n for n in range(1, MESSAGES + 1))),
], ids=["sort", "thread"])
def test_a_long_sort_or_thread_lets_the_only_worker_serve_another_session(
        one_worker: Pool, monkeypatch: pytest.MonkeyPatch, command: bytes, answer: bytes) -> None:
    """SORT and THREAD read their values a few messages at a time, and give the worker back
    between reads once their slice is over: another client's NOOP is answered before most of
    the values are read."""
    reads = SlowSortReads(monkeypatch)
    sorter = _noop_answered_while(one_worker, command, reads.started)
    assert reads.reads < MESSAGES // 2 // 2
    assert _answer(sorter, b"r") == [answer + b"\r\n", b"r OK " + command.split()[1] + b" completed\r\n"]
    assert reads.reads == MESSAGES // 2


# -- clients gone, or not, while a command computes or waits ------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_client_that_resets_during_a_sliced_search_is_dropped_and_its_slot_released(
        one_worker: Pool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        transport: str) -> None:
    slots = _own_slots(monkeypatch)
    search = SlowSearch(monkeypatch)
    client = _selected(one_worker, transport)
    with caplog.at_level(logging.DEBUG, logger="gximap.net"):
        client.send(SEARCH)
        assert search.started.wait(TIMEOUT)
        assert slots._in_use == 1
        _reset(client)
        assert wait_until(lambda: one_worker.server.stats().sessions == 0, TIMEOUT)
    # connection_lost() closed the search (the session's close path): its slot is free again.
    assert slots._in_use == 0 and not slots._running
    assert search.tested < MESSAGES, "the search ran to its end for a client gone"
    assert any("closed by client during a command" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("half_closed_first", [False, True], ids=["reset", "half-closed-then-reset"])
def test_a_client_that_goes_while_waiting_for_a_slot_is_dropped_and_its_claim_forgotten(
        one_worker: Pool, monkeypatch: pytest.MonkeyPatch, half_closed_first: bool) -> None:
    slots = _own_slots(monkeypatch, total=1, per_account=1)
    search = SlowSearch(monkeypatch)
    assert slots.claim("someone else").done()
    client = _selected(one_worker)
    client.send(SEARCH)
    assert wait_until(lambda: len(slots._waiting) == 1, TIMEOUT)
    if half_closed_first:
        # The pool reads the EOF and parks the connection for the waker, reading no more: a
        # reset must still be noticed there (epoll's EPOLLHUP/EPOLLERR), not when the slot comes.
        client.sock.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: _eof_read(one_worker.server), TIMEOUT)
    _reset(client)
    assert wait_until(lambda: one_worker.server.stats().sessions == 0, TIMEOUT)
    assert not slots._waiting
    slots.release("someone else")
    assert slots._in_use == 0 and not slots._running and search.tested == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_commands_pipelined_behind_a_long_search_are_all_answered(
        one_worker: Pool, monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    """The looks between slices take neither input the session holds nor input still in the
    kernel (or in TLS or DEFLATE) for a client gone."""
    _own_slots(monkeypatch)
    search = SlowSearch(monkeypatch)
    looks = _spy_on_hang_up_looks(monkeypatch)
    client = _selected(one_worker, transport)
    client.send(SEARCH + b"n NOOP\r\n")  # read with the SEARCH: the session holds the NOOP
    assert search.started.wait(TIMEOUT)
    client.send(b"f UID FETCH 11 (UID)\r\n")  # sent while the SEARCH runs: left unread meanwhile
    assert _answer(client, b"q") == SEARCH_ANSWER
    assert _answer(client, b"n")[-1].startswith(b"n OK")
    assert _answer(client, b"f") == [b"* 11 FETCH (UID 11)\r\n", b"f OK FETCH completed\r\n"]
    assert search.tested == MESSAGES
    assert looks and not any(looks)


def test_a_client_that_half_closes_behind_a_long_search_gets_every_answer(
        one_worker: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """An EOF is not a client gone: ``printf 'q SEARCH ...' | nc -N`` stops sending and still
    reads. The SEARCH and the command behind it are answered, then the connection is closed."""
    _own_slots(monkeypatch)
    search = SlowSearch(monkeypatch)
    looks = _spy_on_hang_up_looks(monkeypatch)
    client = _selected(one_worker)
    client.send(SEARCH + b"n NOOP\r\n")
    assert search.started.wait(TIMEOUT)
    client.sock.shutdown(socket.SHUT_WR)
    looks_before = len(looks)
    rest = client.read_until_eof()
    assert rest == b"".join(SEARCH_ANSWER) + b"n OK NOOP completed\r\n"
    assert search.tested == MESSAGES
    assert len(looks) > looks_before and not any(looks)  # looked after the EOF, kept the client
    assert wait_until(lambda: one_worker.server.stats().sessions == 0, TIMEOUT)


def test_a_client_that_half_closes_while_its_search_waits_for_a_slot_gets_the_answer(
        one_worker: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    slots = _own_slots(monkeypatch, total=1, per_account=1)
    SlowSearch(monkeypatch)
    assert slots.claim("someone else").done()
    client = _selected(one_worker)
    client.send(SEARCH)
    assert wait_until(lambda: len(slots._waiting) == 1, TIMEOUT)
    client.sock.shutdown(socket.SHUT_WR)
    assert wait_until(lambda: _eof_read(one_worker.server), TIMEOUT)
    assert one_worker.server.stats().sessions == 1 and len(slots._waiting) == 1
    slots.release("someone else")
    assert client.read_until_eof() == b"".join(SEARCH_ANSWER)
    assert wait_until(lambda: one_worker.server.stats().sessions == 0, TIMEOUT)
    assert slots._in_use == 0


def test_a_login_sent_with_a_half_close_is_answered(one_worker: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The password check is awaited off the workers: an EOF read meanwhile used to close the
    connection before the answer."""
    checked = threading.Event()
    authenticate = Backend.authenticate

    def held_until_checked(self: Backend, user: str, password: str) -> str | None:
        checked.wait(TIMEOUT)
        return authenticate(self, user, password)

    monkeypatch.setattr(Backend, "authenticate", held_until_checked)
    client = Client("127.0.0.1", one_worker.ports["plain"], timeout=TIMEOUT)
    assert client.readline().startswith(b"* OK")
    client.send(b"l LOGIN alice secret\r\nn NOOP\r\n")
    client.sock.shutdown(socket.SHUT_WR)
    assert wait_until(lambda: _eof_read(one_worker.server), TIMEOUT)  # before the check is done
    checked.set()
    lines = client.read_until_eof().split(b"\r\n")
    assert lines[0].startswith(b"l OK ") and lines[1:] == [b"n OK NOOP completed", b""]


# -- a goodbye while a response streams ---------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_shutdown_while_a_body_streams_says_goodbye_after_the_body(one_worker: Pool, transport: str) -> None:
    """The server stops while a FETCH is sending a body larger than the socket buffers hold: the
    BYE follows the whole response (it went out inside the literal, as message data), and the
    tagged reply when the FETCH was done by then."""
    body = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * (16 * 1024 * 1024 // 80)
    client = _selected(one_worker, transport)
    client.send(b"a APPEND INBOX {%d}\r\n" % len(body))
    assert client.readline().startswith(b"+ ")
    client.send(body + b"\r\n")
    assert _answer(client, b"a")[-1].startswith(b"a OK")
    client.send(b"f FETCH %d BODY.PEEK[]\r\n" % (MESSAGES + 1))
    lines = [client.readline()]
    while not lines[-1].startswith(b"* %d FETCH (BODY[] {" % (MESSAGES + 1)):
        lines.append(client.readline())   # the APPEND's EXISTS
    assert lines[-1].endswith(b"{%d}\r\n" % len(body))
    stopper = threading.Thread(target=one_worker.server.stop, kwargs={"grace": 15.0})
    stopper.start()   # while the server waits for the client to take the body
    try:
        assert client.read_exactly(len(body)) == body
        assert client.readline() == b")\r\n"
        goodbye = client.readline()
        if goodbye.startswith(b"f OK "):   # the FETCH was done as the stop came: its reply first
            goodbye = client.readline()
        assert goodbye.startswith(b"* BYE ")
        assert client.read_until_eof() == b""
    finally:
        stopper.join(TIMEOUT)
