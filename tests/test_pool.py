"""The connection pool over real sockets on 127.0.0.1: admission, worker growth, fairness,
backpressure, timers, STARTTLS / COMPRESS / implicit TLS, wakeups, shutdown, failures.
Also the listener helpers and the transport's bounded inflation."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypedDict

import pytest
from conversation import Conversation
from net_helpers import (
    TIMEOUT,
    AsyncLoginLineHandler,
    CheckingLoginLineHandler,
    Client,
    LineHandler,
    LoginLineHandler,
    Recorder,
    client_tls_context,
    close_clients,
    make_certificate,
    running_server,
    sibling_channels,
    wait_until,
)

from gximap.log import NOTICE
from gximap.net import pool as pool_module
from gximap.net import siblings as siblings_module
from gximap.net.listener import (
    BoundListener,
    ListenerError,
    ListenerSpec,
    adopt_listener,
    bind_listeners,
    systemd_listen_fds,
)
from gximap.net.pool import Server
from gximap.net.proxy import address_key
from gximap.net.siblings import AddressLedger, ConnectionHandoff
from gximap.net.tls import make_server_context
from gximap.net.transport import InvalidDeflateInput, Transport
from gximap.session import searching
from gximap.session import session as session_module
from midb.errors import StoreBusy

GREETING = b"* OK test server ready\r\n"
BUSY = b"* BYE Service not available\r\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_certificate(str(tmp_path_factory.mktemp("pool-tls")))


@pytest.fixture(scope="module")
def server_ssl(certificate: tuple[str, str]) -> ssl.SSLContext:
    return make_server_context(*certificate)


@pytest.fixture(scope="module")
def client_ssl(certificate: tuple[str, str]) -> ssl.SSLContext:
    return client_tls_context(certificate[0])


def connect(port: int, **kwargs: object) -> Client:
    client = Client("127.0.0.1", port, **kwargs)  # type: ignore[arg-type]
    assert client.readline() == GREETING
    return client


def test_session_basics_and_connection_info(server_ssl: ssl.SSLContext) -> None:
    recorder = Recorder()
    with running_server(recorder, ssl_context=server_ssl) as (server, ports):
        client = connect(ports["plain"])
        assert client.command("NOOP") == b"OK NOOP\r\n"
        fields = client.command("PEER").decode().split()
        assert fields[1] == "127.0.0.1"
        assert int(fields[2]) == client.sock.getsockname()[1]
        assert fields[3:5] == ["127.0.0.1", str(ports["plain"])]
        assert fields[5:] == ["tls=False", "starttls=True", "proxied=False", "kind=imap"]
        assert server.stats().sessions == 1
        assert client.command("QUIT") == b"* BYE bye\r\n"
        assert client.read_until_eof() == b""
        assert wait_until(lambda: server.stats().sessions == 0)
        assert recorder.count("connection_lost") == 1


def test_ipv6_listener() -> None:
    recorder = Recorder()
    with running_server(recorder, host="::1") as (_server, ports):
        client = Client("::1", ports["plain"])
        assert client.readline() == GREETING
        fields = client.command("PEER").decode().split()
        assert fields[1] == "::1" and fields[3:5] == ["::1", str(ports["plain"])]


def test_admission_refuses_beyond_context_num() -> None:
    recorder = Recorder()
    with running_server(recorder, context_num=2, thread_init_num=1, thread_charge_num=1) as (server, ports):
        first = connect(ports["plain"])
        second = connect(ports["plain"])
        third = Client("127.0.0.1", ports["plain"])
        assert third.read_until_eof() == BUSY
        assert first.command("ECHO still here") == b"OK still here\r\n"
        assert second.command("NOOP") == b"OK NOOP\r\n"
        assert recorder.count("start") == 2
        first.command("QUIT")
        first.read_until_eof()
        assert wait_until(lambda: server.stats().sessions == 1)
        fourth = connect(ports["plain"])
        assert fourth.command("NOOP") == b"OK NOOP\r\n"


class _Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_of_one_kind_are_logged_once_per_interval_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    """_BurstLog: the first line of a kind as it comes; the rest counted, told in one line once
    the interval is over (or before the next line of that kind); kinds apart."""
    clock = _Clock()
    throttle = pool_module._BurstLog(logging.getLogger("gximap.net"), interval=10.0, clock=clock)

    def refuse(kind: str, peer: int) -> None:
        throttle.log(kind, logging.WARNING, f"connections refused: {kind}", "[192.0.2.%d] refused: %s", peer, kind)

    def lines() -> list[str]:
        logged = [record.getMessage() for record in caplog.records]
        caplog.clear()
        return logged

    with caplog.at_level(logging.DEBUG, logger="gximap.net"):
        for peer in range(1, 101):
            refuse("full", peer)
            clock.now += 0.05  # 100 refusals within 5 s
        refuse("per address", 7)
        assert lines() == ["[192.0.2.1] refused: full", "[192.0.2.7] refused: per address"]
        throttle.flush()
        assert lines() == []  # the interval is not over
        clock.now = 5010.0
        throttle.flush()
        assert lines() == ["connections refused: full: 99 more in the last 10s, not logged one by one"]
        assert throttle.next_due == float("inf")  # "per address" had nothing to count
        refuse("full", 200)
        refuse("full", 201)
        clock.now = 5015.0
        refuse("full", 202)  # within the new interval: counted
        clock.now = 5020.5
        refuse("full", 203)  # its interval over but not flushed: the count comes first
        assert lines() == ["[192.0.2.200] refused: full",
                           "connections refused: full: 2 more in the last 10s, not logged one by one",
                           "[192.0.2.203] refused: full"]
        refuse("full", 204)
        throttle.flush(everything=True)  # the server stops
        assert lines() == ["connections refused: full: 1 more in the last 10s, not logged one by one"]


def test_a_connect_flood_against_a_full_server_writes_one_line_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    """Each refused connection wrote its own warning: 13,842 connects in 5 s, 13,842 lines."""
    recorder = Recorder()
    clock = _Clock()
    with caplog.at_level(logging.INFO, logger="gximap.net"), \
            running_server(recorder, context_num=1, thread_init_num=1, thread_charge_num=1) as (server, ports):
        server._refusal_log.clock = clock
        held = connect(ports["plain"])
        refused = [Client("127.0.0.1", ports["plain"]) for _ in range(20)]
        for client in refused:
            assert client.read_until_eof() == BUSY
        assert held.command("NOOP") == b"OK NOOP\r\n"

        def warnings() -> list[str]:
            return [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]

        assert len(warnings()) == 1 and warnings()[0].endswith("refused: all 1 contexts in use")
        clock.now += 10.0  # the poller, which ticks at least once a second, tells the count
        assert wait_until(lambda: len(warnings()) == 2)
        assert warnings()[1] == ("connections refused: all 1 contexts in use: 19 more in the last 10s, "
                                 "not logged one by one")


class _SharedSettings(TypedDict):
    """Keyword arguments of Server common to the servers on a shared listener."""
    thread_init_num: int
    thread_charge_num: int
    conn_timeout: float
    ssl_context: ssl.SSLContext | None
    busy_response: bytes
    shared_listeners: bool


def _shared_listener() -> tuple[list[BoundListener], socket.socket, _SharedSettings]:
    """A listening socket and a second descriptor of it (as sibling processes share theirs),
    with the settings of two small servers on it."""
    listeners = bind_listeners([ListenerSpec("127.0.0.1", 0, False)])
    twin = socket.socket(fileno=os.dup(listeners[0].sock.fileno()))
    twin.setblocking(False)
    settings: _SharedSettings = {
        "thread_init_num": 1, "thread_charge_num": 1, "conn_timeout": 5.0, "ssl_context": None,
        "busy_response": BUSY, "shared_listeners": True,
    }
    return listeners, twin, settings


def test_a_full_server_leaves_shared_listeners_to_a_sibling_with_room() -> None:
    """Two servers on one listening socket, as sibling processes share theirs: once one is full,
    the other takes every new connection until it is full too; only then is one refused."""
    listeners, twin, settings = _shared_listener()
    port = listeners[0].port
    small = Server(listeners, Recorder().factory, context_num=1, **settings)
    large = Server([BoundListener(twin, False)], Recorder().factory, context_num=6, **settings)
    small.start()
    large.start()
    try:
        clients = [connect(port) for _ in range(7)]
        assert (small.stats().sessions, large.stats().sessions) == (1, 6)
        refused = Client("127.0.0.1", port)
        assert refused.read_until_eof() == BUSY
        for client in clients:
            client.close()
    finally:
        close_clients()
        small.stop(grace=0.0)
        large.stop(grace=0.0)


@dataclass
class _Siblings:
    """Servers on a shared listener, with the sibling channel between them, as serving
    processes have it: the first on ``listener``, each other on its own descriptor of it
    (``twins``)."""
    port: int
    listener: BoundListener
    twins: list[socket.socket]
    servers: list[Server]
    ledgers: list[AddressLedger]

    @property
    def one(self) -> Server:
        return self.servers[0]

    @property
    def other(self) -> Server:
        return self.servers[1]

    @property
    def twin(self) -> socket.socket:
        return self.twins[0]

    @property
    def one_ledger(self) -> AddressLedger:
        return self.ledgers[0]


class _AcceptGate:
    """Makes "this server takes no more connections from that listener" true at once.

    Unwatching a listener (Server._unwatch) only keeps the poller's next epoll wait from
    reporting it: a poller in the middle of an accept batch (Server._accept loops until the
    queue is empty) still takes the next connection queued on the shared socket. Under load
    (a poller descheduled between two accept calls) that was the connection the test meant for
    another process. The gate waits for a batch under way to end, and keeps later calls from
    accepting on a listener the test shut."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._shut: set[int] = set()
        accept = server._accept

        def gated_accept(listener: BoundListener) -> None:
            with self._lock:
                if listener.fileno() not in self._shut:
                    accept(listener)

        server._accept = gated_accept  # type: ignore[method-assign]

    def shut(self, listener_fd: int) -> None:
        """No more connections from ``listener_fd`` here, from the moment this returns; and the
        server's own look again after a step back (Server._review_step_back) is kept off too."""
        self._server._watch = lambda listener_fd: None  # type: ignore[method-assign]
        self._server._unwatch(listener_fd)
        with self._lock:  # an accept batch under way ends first
            self._shut.add(listener_fd)

    def open(self, listener_fd: int) -> None:
        """Connections from ``listener_fd`` taken here again, the server's step back as usual."""
        with self._lock:
            self._shut.discard(listener_fd)
        vars(self._server).pop("_watch", None)
        self._server._watch(listener_fd)


@contextlib.contextmanager
def _sibling_servers(*recorders: Recorder, context_nums: Sequence[int] = ()) -> Iterator[_Siblings]:
    """A server for each of ``recorders``, of one context each unless ``context_nums`` says."""
    parent, channels = sibling_channels(len(recorders))
    listeners, twin, settings = _shared_listener()
    twins = [twin] + [socket.socket(fileno=os.dup(twin.fileno())) for _ in recorders[2:]]
    for extra in twins[1:]:
        extra.setblocking(False)
    ledgers = [AddressLedger(channel) for channel in channels]
    servers = [
        Server(listeners if index == 0 else [BoundListener(twins[index - 1], False)], recorder.factory,
               context_num=context_nums[index] if context_nums else 1, address_ledger=ledgers[index],
               handoff=ConnectionHandoff(channels[index], ledgers[index]), **settings)
        for index, recorder in enumerate(recorders)
    ]
    for channel in channels:  # as gximap.daemon does: every component registered, then hello
        channel.say_hello()
    others = len(servers) - 1
    assert wait_until(lambda: all(server._handoff is not None and len(server._handoff.siblings_up()) == others
                                  for server in servers))
    for server in servers:
        server.start()
    try:
        yield _Siblings(listeners[0].port, listeners[0], twins, servers, ledgers)
    finally:
        close_clients()
        for server in servers:
            server.stop(grace=0.0)
        for channel in channels:
            channel.close()
        parent.close_sockets()


def test_a_full_server_passes_a_connection_it_accepted_to_a_sibling_with_room() -> None:
    """A full server that accepts a connection anyway (no sibling took it within the grace)
    passes it over the sibling channel to one with room instead of refusing it busy."""
    with _sibling_servers(Recorder(), Recorder()) as siblings:
        port, full, roomy, full_ledger = siblings.port, siblings.one, siblings.other, siblings.one_ledger
        # The sibling with room does not see the listener (as if busy elsewhere all along):
        # every connection reaches the full server first.
        _AcceptGate(roomy).shut(siblings.twin.fileno())
        kept = connect(port)
        assert (full.stats().sessions, roomy.stats().sessions) == (1, 0)
        passed = connect(port)
        assert passed.command("ECHO passed on") == b"OK passed on\r\n"
        assert (full.stats().sessions, roomy.stats().sessions) == (1, 1)
        # Both full now (as the ledger tells): the next one is held, then refused.
        assert wait_until(lambda: full_ledger.sibling_loads() == {1: 1})
        refused = Client("127.0.0.1", port)
        assert refused.read_until_eof() == BUSY
        assert kept.command("NOOP") == b"OK NOOP\r\n"


def test_a_server_full_of_logged_in_sessions_passes_an_arrival_to_a_sibling_that_can_make_room() -> None:
    """Both processes full: the one that accepted has only logged-in sessions, the other holds
    a connection that never logged in. The arrival is passed on, and displaces that one."""
    squatted_recorder = Recorder(handler_class=LoginLineHandler)
    with _sibling_servers(Recorder(handler_class=LoginLineHandler), squatted_recorder) as siblings:
        port, members, squatted, member_ledger = siblings.port, siblings.one, siblings.other, siblings.one_ledger
        listener_fd = siblings.listener.fileno()
        members_gate = _AcceptGate(members)
        members_gate.shut(listener_fd)
        squatter = connect(port)  # taken by the squatted server, the only one watching
        # From now on only the other one accepts (a full server would look again after a while).
        _AcceptGate(squatted).shut(siblings.twin.fileno())
        members_gate.open(listener_fd)
        member = connect(port)
        assert member.command("LOGIN") == b"OK logged in\r\n"
        assert wait_until(lambda: member_ledger.sibling_loads() == {1: 1})
        newcomer = connect(port)  # accepted by the server of logged-in sessions, passed on
        assert squatter.read_until_eof() == b"* BYE displaced\r\n"
        assert newcomer.command("ECHO passed on") == b"OK passed on\r\n"
        assert squatted_recorder.count("start") == 2
        assert member.command("NOOP") == b"OK NOOP\r\n"


def test_an_arrival_passed_to_a_sibling_with_nothing_to_displace_goes_on_to_one_that_has() -> None:
    """Three processes, every one full: the one that accepts and the least loaded sibling hold
    logged-in sessions only; the third holds connections not logged in. The arrival is passed
    on once more, to the process it has not been in, where one makes room for it."""
    recorders = [Recorder(handler_class=LoginLineHandler) for _ in range(3)]
    with _sibling_servers(*recorders, context_nums=(1, 1, 2)) as siblings:
        first, second, third = [_AcceptGate(server) for server in siblings.servers]
        fds = [siblings.listener.fileno()] + [twin.fileno() for twin in siblings.twins]
        first.shut(fds[0])
        second.shut(fds[1])
        squatters = [connect(siblings.port) for _ in range(2)]  # the third process takes both
        third.shut(fds[2])
        second.open(fds[1])
        member = connect(siblings.port)
        assert member.command("LOGIN") == b"OK logged in\r\n"
        second.shut(fds[1])
        first.open(fds[0])
        local = connect(siblings.port)
        assert local.command("LOGIN") == b"OK logged in\r\n"
        # The second process is the least loaded: the arrival goes there first.
        assert wait_until(lambda: siblings.one_ledger.sibling_loads() == {1: 1, 2: 2})
        newcomer = Client("127.0.0.1", siblings.port)
        assert newcomer.readline() == GREETING
        assert squatters[0].read_until_eof() == b"* BYE displaced\r\n"
        assert newcomer.command("ECHO passed on twice") == b"OK passed on twice\r\n"
        assert recorders[2].count("start") == 3
        for client in (member, local, squatters[1]):
            assert client.command("NOOP") == b"OK NOOP\r\n"


def test_an_arrival_waits_here_before_it_is_passed_to_a_full_sibling() -> None:
    """Every process full of logged-in sessions: an arrival is passed to a sibling that may make
    room only once its own wait is over, so a context freed here meanwhile takes it (review55)."""
    with _sibling_servers(Recorder(handler_class=LoginLineHandler),
                          Recorder(handler_class=LoginLineHandler)) as siblings:
        port, here, there, ledger = siblings.port, siblings.one, siblings.other, siblings.one_ledger
        listener_fd = siblings.listener.fileno()
        here_gate = _AcceptGate(here)
        here_gate.shut(listener_fd)
        remote = connect(port)  # taken by the other one
        assert remote.command("LOGIN") == b"OK logged in\r\n"
        _AcceptGate(there).shut(siblings.twin.fileno())
        here._step_back = lambda now: None  # type: ignore[method-assign]  # it keeps accepting
        here_gate.open(listener_fd)
        local = connect(port)
        assert local.command("LOGIN") == b"OK logged in\r\n"
        assert wait_until(lambda: ledger.sibling_loads() == {1: 1})
        newcomer = Client("127.0.0.1", port)
        time.sleep(0.03)
        local.close()  # a context here is free well within the admission wait
        assert newcomer.readline() == GREETING
        assert (here.stats().sessions, there.stats().sessions) == (1, 1)


def test_a_response_slow_to_make_shares_the_worker_with_other_sessions() -> None:
    """A slice ends after a while of output however few bytes it made: with one worker, a
    session's NOOP is answered in the middle of another's long trickle of small responses
    (a FETCH reading a body for each), not after it."""
    recorder = Recorder()
    with running_server(recorder, context_num=2, thread_init_num=1, thread_charge_num=40) as (server, ports):
        streaming = connect(ports["plain"])
        other = connect(ports["plain"])
        streaming.send(b"TRICKLE 400 0.005\r\n")  # two seconds in all, 7 KB
        assert streaming.readline() == b"* 1 TRICKLE\r\n"
        assert other.command("NOOP") == b"OK NOOP\r\n"
        assert recorder.count("trickled") == 0
        lines = [streaming.readline() for _ in range(400)]
        assert lines[-1] == b"OK trickled\r\n"


def test_arrival_waits_briefly_for_a_context_being_freed() -> None:
    recorder = Recorder()
    with running_server(recorder, context_num=1, thread_init_num=1, thread_charge_num=1) as (server, ports):
        for _ in range(5):  # each newcomer connects before the previous close is processed
            leaving = connect(ports["plain"])
            newcomer = Client("127.0.0.1", ports["plain"])
            leaving.close()
            assert newcomer.readline() == GREETING
            newcomer.close()
            assert wait_until(lambda: server.stats().sessions == 0)


def test_a_full_server_displaces_the_oldest_connection_not_logged_in() -> None:
    """One host holding idle connections cannot lock everyone out (Dovecot's rule): an arrival
    finding every context taken displaces the oldest connection that has not logged in."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=3, thread_init_num=1, thread_charge_num=1) as (server, ports):
        oldest = connect(ports["plain"])
        member = connect(ports["plain"])
        assert member.command("LOGIN") == b"OK logged in\r\n"
        younger = connect(ports["plain"])
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        assert oldest.read_until_eof() == b"* BYE displaced\r\n"
        assert recorder.details("displaced") == [str(oldest.sock.getsockname()[1])]
        for client in (member, younger, newcomer):
            assert client.command("NOOP") == b"OK NOOP\r\n"
        assert server.stats().sessions == 3


def test_a_client_that_has_just_spoken_is_passed_over_for_one_that_stays_silent() -> None:
    """Of the oldest connections not logged in, the one silent longest makes room: a client in
    the middle of its login (its CAPABILITY answered, its LOGIN coming) is not cut."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=1, thread_charge_num=1) as (server, ports):
        talking = connect(ports["plain"])
        silent = connect(ports["plain"])
        assert talking.command("NOOP") == b"OK NOOP\r\n"
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        assert silent.read_until_eof() == b"* BYE displaced\r\n"
        assert talking.command("LOGIN") == b"OK logged in\r\n"


def test_a_client_that_has_just_hung_up_makes_the_room_and_a_silent_one_stays() -> None:
    """A connection closed by its client moments before the arrival (a port probe, a monitor)
    still holds its context until a worker reads its end of input; the only worker is busy
    here. The arrival waits for that rather than cut a live client that has not logged in
    yet (CI, session 57: the e2e tests' own readiness probe cost a client its connection)."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=3, thread_init_num=1, thread_charge_num=3) as (server, ports):
        member = connect(ports["plain"])
        assert member.command("LOGIN") == b"OK logged in\r\n"
        leaving = connect(ports["plain"])
        silent = connect(ports["plain"])
        member.send(b"SLOW 0.5\r\n")  # the only worker is busy
        assert wait_until(lambda: recorder.count("line", "SLOW 0.5") == 1)
        leaving.close()
        time.sleep(0.1)  # the poller sees it hang up and queues it for the busy worker
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        assert member.readline() == b"OK slow\r\n"
        assert silent.command("NOOP") == b"OK NOOP\r\n"
        assert newcomer.command("NOOP") == b"OK NOOP\r\n"


class _SlowToLetGoHandler(LoginLineHandler):
    """A LoginLineHandler whose connection_lost takes a while after LINGER: the time between a
    worker's decision to close a connection and the release of its context."""

    linger = False

    def _execute(self, line: str) -> None:
        if line == "LINGER":
            self.linger = True
            self.output.append(b"OK linger\r\n")
            return
        super()._execute(line)

    def connection_lost(self) -> None:
        super().connection_lost()
        if self.linger:
            time.sleep(0.15)   # within the arrival's wait (_ADMISSION_WAIT)


def test_a_context_whose_close_is_under_way_is_room_for_an_arrival() -> None:
    """A connection a worker is closing (its client reset it: the e2e tests' readiness probe)
    holds its context until its handler lets go. An arrival meanwhile waits for that context
    rather than cut a live client that has not logged in yet (CI, session 59: the probe's
    close was under way, so it was no candidate, and the client went instead)."""
    recorder = Recorder(handler_class=_SlowToLetGoHandler)
    with running_server(recorder, context_num=2, thread_init_num=2, thread_charge_num=2) as (server, ports):
        leaving = connect(ports["plain"])
        assert leaving.command("LINGER") == b"OK linger\r\n"
        silent = connect(ports["plain"])
        leaving.send(b"QUIT\r\n")
        assert wait_until(lambda: recorder.count("connection_lost") == 1)  # its close is under way
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        assert silent.command("NOOP") == b"OK NOOP\r\n"
        assert newcomer.command("NOOP") == b"OK NOOP\r\n"
        assert recorder.count("displaced") == 0


def test_a_connection_that_never_spoke_goes_before_one_that_did() -> None:
    """Real clients send a command within moments of the greeting; a connection held to take a
    context sends nothing. It makes room first, even when it is the newer and the other has
    been silent longer since (a client between its CAPABILITY and its LOGIN)."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=1, thread_charge_num=1) as (server, ports):
        client = connect(ports["plain"])
        assert client.command("NOOP") == b"OK NOOP\r\n"
        time.sleep(0.05)
        squatter = connect(ports["plain"])
        # Both parked: one still in its worker's slice would be busy, which makes room last.
        assert wait_until(lambda: not any(pool_module._busy(conn) for conn in list(server._conns)))
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        assert squatter.read_until_eof() == b"* BYE displaced\r\n"
        assert client.command("LOGIN") == b"OK logged in\r\n"


def test_the_address_holding_most_connections_not_logged_in_makes_room_first() -> None:
    """A flood whose connections each send a command defeats the never-spoke rule; it comes
    from few addresses, real clients from many. A client from its own address is passed over
    although it has been silent longest."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=4, thread_init_num=1, thread_charge_num=1) as (server, ports):
        client = connect(ports["plain"], source="127.0.0.3")
        assert client.command("NOOP") == b"OK NOOP\r\n"
        time.sleep(0.05)
        flood = [connect(ports["plain"], source="127.0.0.2") for _ in range(3)]
        for squatter in flood:
            assert squatter.command("NOOP") == b"OK NOOP\r\n"
        newcomer = Client("127.0.0.1", ports["plain"], source="127.0.0.4")
        assert newcomer.readline() == GREETING
        assert flood[0].read_until_eof() == b"* BYE displaced\r\n"  # the flood's silent longest
        assert client.command("LOGIN") == b"OK logged in\r\n"
        for squatter in flood[1:]:
            assert squatter.command("NOOP") == b"OK NOOP\r\n"


def test_logins_in_flight_behind_one_address_go_after_a_silent_squatter() -> None:
    """Two users behind one address (a NAT) in the middle of their LOGIN hold the most
    connections not logged in; a squatter from its own address that never spoke still makes
    room first: a password check in flight is kept whatever the share (review56)."""
    recorder = Recorder(handler_class=CheckingLoginLineHandler)
    with running_server(recorder, context_num=3, thread_init_num=2, thread_charge_num=1) as (server, ports):
        squatter = connect(ports["plain"], source="127.0.0.3")
        office = [connect(ports["plain"], source="127.0.0.2") for _ in range(2)]
        for user in office:
            user.send(b"LOGIN slow\r\n")
        assert wait_until(lambda: recorder.count("line", "LOGIN slow") == 2)
        newcomer = Client("127.0.0.1", ports["plain"], source="127.0.0.4")
        assert squatter.read_until_eof() == b"* BYE displaced\r\n"
        assert newcomer.readline() == GREETING
        recorder.go.set()
        for user in office:
            assert user.readline() == b"OK logged in\r\n"


def _proxied(port: int, source: str, *, greet: bool = True) -> Client:
    client = Client("127.0.0.1", port)
    client.send(f"PROXY TCP4 {source} 192.0.2.1 40000 143\r\n".encode())
    if greet:
        assert client.readline() == GREETING
    return client


def test_connections_whose_proxy_header_waits_are_not_counted_as_the_proxys_flood() -> None:
    """Until a worker reads its PROXY header, a connection's address is the proxy's, which all
    such connections share: they must not count as the biggest flood. With the one worker busy,
    a parked flood connection is closed at once instead, and the arrival is not refused
    (review56)."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, proxy_mode=1, context_num=6, thread_init_num=1,
                        thread_charge_num=6) as (server, ports):  # one worker at most
        port = ports["plain"]
        member = _proxied(port, "198.51.100.9")
        assert member.command("LOGIN") == b"OK logged in\r\n"
        flood = [_proxied(port, "203.0.113.5") for _ in range(2)]
        for squatter in flood:
            assert squatter.command("NOOP") == b"OK NOOP\r\n"
        member.send(b"SLOW 1.5\r\n")  # the only worker is busy (a big command's slice, a commit)
        assert wait_until(lambda: recorder.count("line", "SLOW 1.5") == 1)
        fresh = [_proxied(port, f"198.51.100.{number}", greet=False) for number in (1, 2, 3)]
        newcomer = _proxied(port, "198.51.100.50", greet=False)
        assert flood[0].read_until_eof() == b"* BYE displaced\r\n"
        assert member.readline() == b"OK slow\r\n"
        assert newcomer.readline() == GREETING
        for client in fresh:
            assert client.readline() == GREETING


def test_the_displacement_order_rule_by_rule() -> None:
    """_displacement_order's rules, each deciding only where those before it tie: not busy (no
    password check in flight, not being served or queued) unless hung up, hung up, the address's share, never
    spoke (unread input counts as spoken), silent longest."""
    def conn(fd: int, *, awaiting: bool = False, running: bool = False, queued: bool = False,
             spoke: bool = False, last_activity: float = 0.0, answered: float | None = None) -> Any:
        return SimpleNamespace(fd=fd, awaiting=lambda: awaiting, running=running, queued=queued,
                               spoke=spoke, last_activity=last_activity,
                               idle_since=None if answered is None else lambda: answered)

    holding = {"flood": 5, "office": 2, "home": 1}

    def first(*candidates: tuple[Any, str | None], unread: frozenset[int] = frozenset(),
              gone: frozenset[int] = frozenset()) -> int:
        best = min(candidates, key=lambda pair: pool_module._displacement_order(
            pair[0], pair[1], holding, set(unread), set(gone)))
        return int(best[0].fd)

    assert first((conn(1, awaiting=True), "flood"), (conn(2), "home")) == 2
    assert first((conn(1, running=True), "flood"), (conn(2, spoke=True), "home")) == 2
    assert first((conn(1, queued=True), "flood"), (conn(2, spoke=True), "home")) == 2
    assert first((conn(1), "flood"), (conn(2, spoke=True), "home"), gone=frozenset({2})) == 2
    assert first((conn(1), "flood"), (conn(2, queued=True), "home"), gone=frozenset({2})) == 2  # leaving
    assert first((conn(1, awaiting=True), "flood"), (conn(2, running=True), "home"), gone=frozenset({2})) == 2
    assert first((conn(1, spoke=True), "flood"), (conn(2), "home")) == 1
    assert first((conn(1, spoke=True), "office"), (conn(2), None)) == 1  # a PROXY header unread: no share
    assert first((conn(1), "home"), (conn(2), "home"), unread=frozenset({1})) == 2
    assert first((conn(1, spoke=True, last_activity=5.0), "home"),
                 (conn(2, spoke=True, last_activity=3.0), "home")) == 2
    # Silent since its last command's answer (the handler's idle_since), as the idle timer counts.
    assert first((conn(1, spoke=True, last_activity=1.0, answered=5.0), "home"),
                 (conn(2, spoke=True, last_activity=3.0), "home")) == 2


def test_a_flood_is_counted_by_its_ipv6_prefix() -> None:
    """An IPv6 subscriber holds a /64: a flood from it must not pass for many sources."""
    assert address_key("2001:db8:1:2::7") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("2001:db8:1:2::7") != address_key("2001:db8:1:3::7")
    assert address_key("fe80::1%eth0") == address_key("fe80::2")
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") != address_key("192.0.2.8")


def _login_in_flight(recorder: Recorder, port: int) -> Client:
    """A client whose LOGIN's password check is in flight until recorder.go is set."""
    checking = connect(port)
    checking.send(b"LOGIN slow\r\n")
    assert wait_until(lambda: recorder.count("line", "LOGIN slow") == 1)
    return checking


def test_a_connection_whose_login_is_being_checked_is_passed_over() -> None:
    """A password check in flight (awaiting) puts a connection after those with nothing in
    flight, however long it has been silent since."""
    recorder = Recorder(handler_class=CheckingLoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=1, thread_charge_num=1) as (server, ports):
        checking = _login_in_flight(recorder, ports["plain"])
        idle = connect(ports["plain"])
        assert idle.command("NOOP") == b"OK NOOP\r\n"  # it spoke too, and more recently
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        assert idle.read_until_eof() == b"* BYE displaced\r\n"
        recorder.go.set()
        assert checking.readline() == b"OK logged in\r\n"


def test_a_connection_chosen_while_busy_gives_way_to_one_that_has_become_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every candidate busy at the arrival: the one chosen (its password check in flight, silent
    longest) may stay busy past the arrival's wait, while another's command ends moments later.
    The poller looks again, and that one makes room instead; the login in flight is kept."""
    monkeypatch.setattr(pool_module, "_ADMISSION_WAIT", 5.0)  # what is checked is who goes, not when
    recorder = Recorder(handler_class=CheckingLoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=1, thread_charge_num=1) as (server, ports):
        checking = _login_in_flight(recorder, ports["plain"])
        working = connect(ports["plain"])
        working.send(b"SLOW 0.3\r\n")
        assert wait_until(lambda: recorder.count("line", "SLOW 0.3") == 1)
        began = time.monotonic()
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        assert time.monotonic() - began < 3  # not left to wait out the 5 s on the login in flight
        assert working.read_until_eof() == b"OK slow\r\n* BYE displaced\r\n"
        recorder.go.set()
        assert checking.readline() == b"OK logged in\r\n"


def test_a_login_checked_off_the_workers_is_kept_and_another_makes_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """As gximap checks passwords (off the workers, the connection parked, awaiting()): the one
    chosen while every candidate was busy is not closed by its worker in the middle of its
    login; one whose command ends moments later makes room instead (review57b M1)."""
    monkeypatch.setattr(pool_module, "_ADMISSION_WAIT", 5.0)  # what is checked is who goes, not when
    recorder = Recorder(handler_class=AsyncLoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=2, thread_charge_num=2) as (server, ports):
        checking = connect(ports["plain"])
        checking.send(b"LOGIN async\r\n")
        assert wait_until(lambda: recorder.count("line", "LOGIN async") == 1)
        working = connect(ports["plain"])
        working.send(b"SLOW 0.3\r\n")
        assert wait_until(lambda: recorder.count("line", "SLOW 0.3") == 1)
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        assert working.read_until_eof() == b"OK slow\r\n* BYE displaced\r\n"
        recorder.go.set()
        assert checking.readline() == b"* WOKE\r\n"  # the check's waker (LineHandler.wakeup)
        assert checking.readline() == b"OK logged in\r\n"
        assert recorder.count("displaced") == 1


def test_one_arrival_closes_one_connection_while_a_worker_is_deciding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker deciding to close its chosen connection (slowed here in its log line) is not
    second-guessed by the poller's re-choice: one arrival, one connection closed (review57b M2)."""
    monkeypatch.setattr(pool_module, "_ADMISSION_WAIT", 5.0)
    noted = Server._note_displaced

    def slow_note(self: Server, conn: Any) -> None:
        if threading.current_thread() is not self._poller:
            time.sleep(0.15)  # a slow log sink, or a GIL switch
        noted(self, conn)

    monkeypatch.setattr(Server, "_note_displaced", slow_note)
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=2, thread_charge_num=2) as (server, ports):
        first = connect(ports["plain"])
        time.sleep(0.02)
        second = connect(ports["plain"])
        first.send(b"SLOW 0.2\r\n")
        second.send(b"SLOW 0.25\r\n")
        assert wait_until(lambda: recorder.count("line", "SLOW 0.25") == 1)
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        time.sleep(0.5)
        assert len(recorder.details("displaced")) == 1


def test_the_poller_does_not_scan_every_timer_while_a_choice_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its looks again at a busy choice (every 20 ms) wake it without a scan of every
    connection's timers, which costs milliseconds at 10,000 connections (review57b L1)."""
    monkeypatch.setattr(pool_module, "_ADMISSION_WAIT", 5.0)
    scans: list[float] = []
    scan = Server._scan_timers

    def counting(self: Server, now: float) -> None:
        scans.append(now)
        scan(self, now)

    monkeypatch.setattr(Server, "_scan_timers", counting)
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=2, thread_charge_num=2) as (server, ports):
        busy = [connect(ports["plain"]) for _ in range(2)]
        for client in busy:
            client.send(b"SLOW 1.0\r\n")
        assert wait_until(lambda: recorder.count("line", "SLOW 1.0") == 2)
        before = len(scans)
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING  # after a second of looks every 20 ms
        assert len(scans) - before <= 3  # the once-a-second tick, not fifty


def test_logged_in_sessions_are_never_displaced() -> None:
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=1, thread_charge_num=1) as (server, ports):
        members = [connect(ports["plain"]) for _ in range(2)]
        for member in members:
            assert member.command("LOGIN") == b"OK logged in\r\n"
        for _ in range(2):
            assert Client("127.0.0.1", ports["plain"]).read_until_eof() == BUSY
        for member in members:
            assert member.command("NOOP") == b"OK NOOP\r\n"
        assert recorder.count("displaced") == 0


def test_a_displaced_connection_that_does_not_read_still_makes_room_in_time() -> None:
    """Its goodbye queues behind output it does not take: it is closed outright after a moment,
    well before the arrival's wait for a context ends (the stalled-writer timer is 5 s here)."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=1, thread_init_num=1, thread_charge_num=1) as (server, ports):
        stuck = Client("127.0.0.1", ports["plain"], rcvbuf=4096)
        assert stuck.readline() == GREETING
        stuck.send(b"BIG 50000000\r\n")  # never read
        assert wait_until(lambda: recorder.handlers[0].generated > 0)
        newcomer = Client("127.0.0.1", ports["plain"])
        assert newcomer.readline() == GREETING
        assert recorder.count("displaced") == 1
        assert newcomer.command("NOOP") == b"OK NOOP\r\n"


def test_an_idle_connection_makes_room_while_the_only_worker_is_blocked() -> None:
    """The poller closes a connection parked waiting for input itself: an arrival is not refused
    because the one worker is blocked (a commit waiting for its shard's write lock, say) for
    longer than the arrival's wait. Its greeting comes once the worker is free."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=1, thread_charge_num=40) as (server, ports):
        member = connect(ports["plain"])
        assert member.command("LOGIN") == b"OK logged in\r\n"
        idle = connect(ports["plain"])
        member.send(b"BLOCKED 10\r\n")
        assert wait_until(lambda: server.stats().busy_workers == 1 and server.stats().ready == 0)
        time.sleep(0.05)  # the worker is inside its blocking section
        began = time.monotonic()
        newcomer = Client("127.0.0.1", ports["plain"])
        assert idle.read_until_eof() == b"* BYE displaced\r\n"
        assert time.monotonic() - began < pool_module._ADMISSION_WAIT
        time.sleep(pool_module._ADMISSION_WAIT + 0.1)  # past the wait: admitted, not refused
        recorder.go.set()
        assert member.readline() == b"OK unblocked\r\n"
        assert newcomer.readline() == GREETING
        assert newcomer.command("NOOP") == b"OK NOOP\r\n"
        assert recorder.count("displaced") == 1


def test_a_client_whose_command_no_worker_has_read_yet_is_passed_over_for_a_silent_one() -> None:
    """A command waiting for a busy worker counts as the client having spoken: the older
    connection, whose NOOP no worker has read yet, stays, and the silent younger one makes room."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=3, thread_init_num=1, thread_charge_num=40) as (server, ports):
        member = connect(ports["plain"])
        assert member.command("LOGIN") == b"OK logged in\r\n"
        talking = connect(ports["plain"])
        silent = connect(ports["plain"])
        member.send(b"BLOCKED 10\r\n")
        assert wait_until(lambda: server.stats().busy_workers == 1 and server.stats().ready == 0)
        time.sleep(0.05)  # the worker is inside its blocking section
        talking.send(b"NOOP\r\n")
        time.sleep(0.05)
        newcomer = Client("127.0.0.1", ports["plain"])
        assert silent.read_until_eof() == b"* BYE displaced\r\n"
        recorder.go.set()
        assert member.readline() == b"OK unblocked\r\n"
        assert talking.readline() == b"OK NOOP\r\n"
        assert newcomer.readline() == GREETING
        assert recorder.count("displaced") == 1


def test_a_connection_that_never_starts_its_tls_handshake_is_displaced(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, tls_ports=True, plain_port=False, context_num=1, thread_init_num=1,
                        thread_charge_num=1, ssl_context=server_ssl, conn_timeout=30.0) as (server, ports):
        silent = Client("127.0.0.1", ports["tls"])
        assert wait_until(lambda: server.stats().sessions == 1)
        newcomer = Client("127.0.0.1", ports["tls"])
        newcomer.starttls(client_ssl)
        assert newcomer.readline() == GREETING
        assert silent.read_until_eof() == b""
        assert recorder.count("displaced") == 0  # no session had begun: nothing to say goodbye


def test_a_connection_that_logs_in_after_being_chosen_stays_and_another_makes_room() -> None:
    """The poller chooses without the connection in hand; the worker checks again, and a
    connection whose login completed meanwhile is kept while the next one makes room. Both are
    busy on a worker when chosen (so neither is closed by the poller at once), and the one in
    its login has been silent longer."""
    recorder = Recorder(handler_class=LoginLineHandler)
    with running_server(recorder, context_num=2, thread_init_num=1, thread_charge_num=1) as (server, ports):
        logging_in = connect(ports["plain"])
        logging_in.send(b"LOGIN slow\r\n")  # its password check holds it on a worker
        assert wait_until(lambda: recorder.count("line", "LOGIN slow") == 1)
        other = connect(ports["plain"])
        other.send(b"BLOCKED 10\r\n")  # on the second worker, waiting for the same go-ahead
        assert wait_until(lambda: recorder.count("line", "BLOCKED 10") == 1)
        newcomer = Client("127.0.0.1", ports["plain"])
        assert wait_until(lambda: bool(server._displacing), timeout=0.2)
        recorder.go.set()  # the login completes before the worker acts on the choice
        assert logging_in.readline() == b"OK logged in\r\n"
        assert other.readline() == b"OK unblocked\r\n"
        assert newcomer.readline() == GREETING
        assert other.read_until_eof() == b"* BYE displaced\r\n"
        assert logging_in.command("NOOP") == b"OK NOOP\r\n"
        assert recorder.count("displaced") == 1


def test_max_connections_per_address() -> None:
    recorder = Recorder()
    with running_server(recorder, max_conn_per_ip=1) as (server, ports):
        first = connect(ports["plain"])
        second = Client("127.0.0.1", ports["plain"])
        assert second.read_until_eof() == BUSY
        assert first.command("NOOP") == b"OK NOOP\r\n"
        first.close()
        assert wait_until(lambda: server.stats().sessions == 0)
        third = connect(ports["plain"])
        assert third.command("NOOP") == b"OK NOOP\r\n"


def test_a_sibling_slow_to_take_a_count_does_not_hold_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection's close tells the siblings its address's new count (AddressLedger), and that
    send may wait for room in a sibling's queue (siblings._SEND_TIMEOUT). It must not wait
    holding the pool's lock, which every admission, close and stats() takes."""
    parent, channels = sibling_channels(2)
    armed, sending, room = threading.Event(), threading.Event(), threading.Event()
    send_waiting = siblings_module._send_waiting

    def queue_full_once(sock: socket.socket, data: bytes) -> None:
        if armed.is_set() and not sending.is_set():
            sending.set()
            room.wait(TIMEOUT)  # the sibling's queue is full until the test makes room
        send_waiting(sock, data)

    monkeypatch.setattr(siblings_module, "_send_waiting", queue_full_once)
    try:
        with running_server(Recorder(), address_ledger=AddressLedger(channels[0])) as (server, ports):
            client = connect(ports["plain"])
            armed.set()
            client.close()
            assert sending.wait(TIMEOUT)  # the close's "-1" waits for room
            answered = threading.Event()

            def ask() -> None:
                server.stats()
                answered.set()

            threading.Thread(target=ask, daemon=True).start()
            try:
                assert answered.wait(2.0), "the pool's lock is held while a sibling's queue is full"
            finally:
                room.set()
            assert wait_until(lambda: server.stats().sessions == 0)
    finally:
        room.set()
        for channel in channels:
            channel.close()
        parent.close_sockets()


def test_max_connections_per_address_counts_an_ipv6_client_by_its_64() -> None:
    """One IPv6 subscriber is given a /64: its connections count together whichever of its
    addresses they come from (proxy.address_key), as the login limits count them. The
    addresses come in PROXY headers, so the host needs no IPv6 addresses."""
    recorder = Recorder()
    with running_server(recorder, proxy_mode=1, max_conn_per_ip=2) as (server, ports):
        def proxied(source: str) -> Client:
            client = Client("127.0.0.1", ports["plain"])
            client.send(f"PROXY TCP6 {source} 2001:db8:ffff::1 40000 143\r\n".encode())
            return client

        first, second = proxied("2001:db8:1:2::1"), proxied("2001:db8:1:2:ffff::2")
        assert first.readline() == GREETING and second.readline() == GREETING
        assert proxied("2001:db8:1:2::3").read_until_eof() == BUSY
        assert proxied("2001:db8:1:3::1").readline() == GREETING  # the next /64: someone else


def test_workers_grow_to_maximum_and_shrink_back() -> None:
    recorder = Recorder()
    changes: list[int] = []
    options = {
        "context_num": 8,
        "thread_init_num": 1,
        "thread_charge_num": 2,
        "worker_idle_timeout": 0.3,
        "on_change": lambda stats: changes.append(stats.workers),
    }
    with running_server(recorder, **options) as (server, ports):  # type: ignore[arg-type]
        stats = server.stats()
        assert (stats.workers, stats.max_workers) == (1, 4)
        clients = [connect(ports["plain"]) for _ in range(6)]
        peak = {"workers": 0, "busy": 0}
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                current = server.stats()
                peak["workers"] = max(peak["workers"], current.workers)
                peak["busy"] = max(peak["busy"], current.busy_workers)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for client in clients:
                client.send(b"SLOW 0.4\r\n")
            for client in clients:
                assert client.readline() == b"OK slow\r\n"
        finally:
            sampling.set()
            sampler.join(5)
        assert peak["workers"] == 4  # grew, but never past ceil(8 / 2)
        assert peak["busy"] == 4
        assert wait_until(lambda: server.stats().workers == 1, timeout=3.0)
        assert max(changes) == 4 and changes[-1] == 1
        # The remaining worker still serves everybody.
        assert all(client.command("NOOP") == b"OK NOOP\r\n" for client in clients)


@pytest.mark.parametrize(("stall_after", "command", "limit", "reply"), [
    # Declared (as midb's commit waits are): steps aside at once; the stall check is made too
    # slow to help. BLOCKED nests two sections: only the outermost may count.
    (60.0, b"BLOCKED 10", 5.0, b"OK unblocked\r\n"),
    # Not declared: the stall check sends another worker.
    (0.05, b"SLOW 3", 2.5, b"OK slow\r\n"),
])
def test_work_queued_behind_a_blocked_worker_is_served(monkeypatch: pytest.MonkeyPatch, stall_after: float,
                                                       command: bytes, limit: float, reply: bytes) -> None:
    """One worker runs at a time (the GIL allows no more), yet a blocked worker holds nobody up."""
    monkeypatch.setattr(pool_module, "_STALL_AFTER", stall_after)
    recorder = Recorder()
    with running_server(recorder, context_num=8, thread_init_num=2, thread_charge_num=1) as (server, ports):
        busy, other = connect(ports["plain"]), connect(ports["plain"])
        busy.send(command + b"\r\n")
        assert wait_until(lambda: server.stats().busy_workers == 1)
        started = time.monotonic()
        assert other.command("NOOP") == b"OK NOOP\r\n"
        assert time.monotonic() - started < limit  # long before the blocked command ends
        recorder.go.set()
        assert busy.readline() == reply
        assert wait_until(lambda: server._running == 0)  # every worker counted back out
        assert other.command("NOOP") == b"OK NOOP\r\n"


def test_the_worker_that_sees_input_serves_it() -> None:
    """Leader/follower: the idle worker waiting in epoll serves the input it sees, on its own
    thread, with no hand-off to another one; the other idle workers stay asleep."""
    recorder = Recorder()
    with running_server(recorder, context_num=8, thread_init_num=3, thread_charge_num=1) as (server, ports):
        client = connect(ports["plain"])
        assert wait_until(lambda: server.stats().busy_workers == 0)
        threads = {client.command("THREAD") for _ in range(30)}
        assert len(threads) == 1
        assert threads.pop().startswith(b"OK gximap-worker-")
        assert server.stats().workers == 3
        assert wait_until(lambda: server._leader and server._running == 0)  # back to waiting


def test_a_busy_worker_serves_input_that_arrived_during_its_slice() -> None:
    """The only worker is serving (no leader waits in epoll): what arrives meanwhile is found by
    its look between slices (Server._glance) and served next, by the same worker."""
    recorder = Recorder()
    with running_server(recorder, context_num=4, thread_init_num=1, thread_charge_num=4) as (server, ports):
        slow, other = connect(ports["plain"]), connect(ports["plain"])
        slow.send(b"SLOW 0.3\r\n")
        assert wait_until(lambda: server.stats().busy_workers == 1)
        other.send(b"THREAD\r\n")
        assert slow.readline() == b"OK slow\r\n"
        assert other.readline() == b"OK gximap-worker-1\r\n"
        assert server.stats().workers == 1



def _count_calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[int]:
    """Count the calls of a Server method (the count is the list's one item)."""
    calls = [0]
    original = getattr(Server, method)

    def counting(self: Server, *args: object) -> object:
        calls[0] += 1
        return original(self, *args)

    monkeypatch.setattr(Server, method, counting)
    return calls

def test_a_command_answered_by_next_output_takes_one_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that answers from next_output() (as the IMAP session does) reports more work
    until its response has been pulled. The slice that pulled it asks again and parks the
    connection: one slice per command, not a second one that finds nothing to do. Pipelined
    commands still all get answered."""
    slices = _count_calls(monkeypatch, "_serve_active")
    recorder = Recorder()
    with running_server(recorder, context_num=4, thread_init_num=1, thread_charge_num=4) as (server, ports):
        client = connect(ports["plain"])
        before = slices[0]
        for _ in range(20):
            assert client.command("LAZY") == b"OK lazy\r\n"
        assert slices[0] - before == 20
        client.send(b"LAZY\r\nNOOP\r\nLAZY\r\nLAZY\r\n")
        answers = [client.readline() for _ in range(4)]
        assert answers == [b"OK lazy\r\n", b"OK NOOP\r\n", b"OK lazy\r\n", b"OK lazy\r\n"]


def test_the_leader_serves_a_lone_ready_connection_without_queueing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client waiting for each answer: the worker that sees its command serves it at once,
    without the ready queue's round trip (the old path queued every command)."""
    queued = _count_calls(monkeypatch, "_push_locked")
    recorder = Recorder()
    with running_server(recorder, context_num=4, thread_init_num=1, thread_charge_num=4) as (_server, ports):
        client = connect(ports["plain"])
        before = queued[0]
        for index in range(20):
            assert client.command(f"ECHO {index}") == f"OK {index}\r\n".encode()
        # Only a poller look during a slice stalled for 10 ms (a loaded machine) queues one.
        assert queued[0] - before < 5
        other = connect(ports["plain"])
        client.send(b"NOOP\r\n")
        other.send(b"NOOP\r\n")  # two ready at once may be queued: both are answered
        assert (client.readline(), other.readline()) == (b"OK NOOP\r\n", b"OK NOOP\r\n")


def test_glance_leaves_listener_and_wakeup_events_to_the_poller() -> None:
    recorder = Recorder()
    with running_server(recorder) as (server, ports):
        server._wake()
        server._glance()  # the poller's events are not in the connections' epoll
        client = connect(ports["plain"])  # accepting stays the poller's
        assert client.command("NOOP") == b"OK NOOP\r\n"
        assert server.stats().sessions == 1


def test_blocking_section_is_a_no_op_off_the_pool() -> None:
    with pool_module.blocking_section():
        pass  # no pool on this thread: nothing to step aside from


def test_fairness_heavy_stream_does_not_starve_short_command() -> None:
    recorder = Recorder()
    # A single worker: only time slicing can let the second client in.
    with running_server(recorder, context_num=4, thread_init_num=1, thread_charge_num=4) as (server, ports):
        assert server.stats().max_workers == 1
        heavy = connect(ports["plain"])
        light = connect(ports["plain"])
        total = 400_000_000
        heavy.send(f"BIG {total}\r\n".encode())
        received = [0]

        def drain() -> None:
            while received[0] < total:
                try:
                    data = heavy.sock.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    return
                received[0] += len(data)

        drainer = threading.Thread(target=drain)
        drainer.start()
        try:
            assert wait_until(lambda: received[0] > 2_000_000)
            started = time.monotonic()
            reply = light.command("ECHO quick")
            elapsed = time.monotonic() - started
            streamed_so_far = received[0]
        finally:
            heavy.sock.shutdown(socket.SHUT_RDWR)
            drainer.join(5)
        assert reply == b"OK quick\r\n"
        assert elapsed < 1.0
        assert streamed_so_far < total


def test_backpressure_client_that_never_reads() -> None:
    recorder = Recorder()
    with running_server(recorder, context_num=4, thread_init_num=1, thread_charge_num=4) as (server, ports):
        lazy = connect(ports["plain"], rcvbuf=64 * 1024)
        lazy.send(b"BIG 200000000\r\n")
        handler = recorder.handlers[0]
        assert wait_until(lambda: handler.generated > 0)

        def settled() -> bool:
            before = handler.generated
            time.sleep(0.15)
            return handler.generated == before

        assert wait_until(settled, timeout=4.0)
        other = connect(ports["plain"])  # served by the one and only worker
        for number in range(20):
            assert other.command(f"ECHO {number}") == f"OK {number}\r\n".encode()
        # The stream was pulled only as far as the socket took it: kernel buffers plus a slice.
        assert handler.generated < 16 * 1024 * 1024
        assert wait_until(lambda: server.stats().busy_workers == 0)
        assert server.stats().sessions == 2


def test_idle_timeout_says_goodbye_and_input_postpones_it() -> None:
    recorder = Recorder(idle_timeout=0.3)
    with running_server(recorder) as (_server, ports):
        active = connect(ports["plain"])
        idle = connect(ports["plain"])
        started = time.monotonic()
        for _ in range(6):  # 0.6 s of activity, twice the idle timeout
            assert active.command("NOOP") == b"OK NOOP\r\n"
            time.sleep(0.1)
        assert idle.readline() == b"* BYE idle timeout\r\n"
        assert idle.read_until_eof() == b""
        assert time.monotonic() - started < 2.0
        assert recorder.count("timed_out") == 1
        assert active.readline() == b"* BYE idle timeout\r\n"
        assert recorder.count("timed_out") == 2


class _KeepingHandler(LineHandler):
    """Answers every expiry of its idle timer with a keepalive (timed_out() False), as an
    IMAP session in IDLE does, or an LMTP one while copies are being stored."""

    def timed_out(self) -> bool:
        self.recorder.record("timed_out")
        return False


def test_a_kept_connection_is_timed_again_an_idle_timeout_later() -> None:
    """After a keepalive the timer counts from it. It counted from the last input, already an
    idle timeout ago: the timer fired again at once, 13,000 times a second, a worker and the
    poller spinning until the client spoke."""
    recorder = Recorder(idle_timeout=0.1, handler_class=_KeepingHandler)
    with running_server(recorder) as (_server, ports):
        connect(ports["plain"])
        time.sleep(0.6)
        assert 2 <= recorder.count("timed_out") <= 8


@contextlib.contextmanager
def _served_session(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, clock: SimpleNamespace,
                    **settings: Any) -> Iterator[tuple[Server, pool_module._Connection, socket.socket, Conversation]]:
    """A logged-in IMAP session (imap_autologout_time 60 s unless ``settings``, Conversation's,
    say otherwise) with INBOX selected, served by the pool's own slices over a socket pair, on
    the test's clock (``clock.now``)."""
    settings.setdefault("autologout", 60.0)
    fake_time = SimpleNamespace(monotonic=lambda: clock.now)
    monkeypatch.setattr(pool_module, "time", fake_time)
    monkeypatch.setattr(session_module, "time", fake_time)
    server = Server([], Recorder().factory, context_num=2, thread_init_num=1, thread_charge_num=1,
                    conn_timeout=600.0, ssl_context=None, busy_response=b"")
    ours, client = socket.socketpair()
    listener = socket.socket(socket.AF_UNIX)
    with Conversation(tmp_path, **settings) as conv, ours, client, listener:
        ours.setblocking(False)
        client.settimeout(5.0)
        conv.login()
        conv.select()
        conn = pool_module._Connection(ours, BoundListener(listener, tls=False), ("peer", 0), clock.now)
        pool_module._attach_handler(conn, conv.session)  # and its optional hooks, as at its start
        conn.phase = pool_module._Phase.ACTIVE
        conn.idle_limit = conv.session.idle_timeout()
        yield server, conn, client, conv


def test_idle_keepalives_keep_their_interval_after_a_push_the_client_was_slow_to_take(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An IMAP session in IDLE served by the pool's own slices on a clock of the test's: after a
    push whose write blocked and ended 50 s after the client's last input (which the pool
    counts as activity), the keepalives still come every imap_idle_notify_interval, and the
    autologout still 30 minutes after that input. The session reckoned the keepalive from its
    own clock (the last input) while the pool added that to its own (the end of the write): every
    keepalive came an interval and 50 s after the one before, too late for the NAT gateways the
    keepalive is for."""
    clock = SimpleNamespace(now=1000.0)
    with _served_session(tmp_path, monkeypatch, clock, autologout=1800.0,
                         idle_notify_interval=120.0) as (server, conn, client, conv):
        assert conv.send(b"i1 IDLE\r\n") == [b"+ idling"]  # the client's last input, at 1000
        conn.idle_limit = conv.session.idle_timeout()
        # A push the socket could not take at once, taken by the client 50 s later.
        conn.transport.write(b"* 1 EXISTS\r\n")
        conn.write_blocked = True
        clock.now += 50.0
        assert server._serve(conn) is pool_module._Outcome.PARK_READ
        assert conn.last_activity == 1050.0
        assert client.recv(4096) == b"* 1 EXISTS\r\n"
        stamps = _keepalive_times(server, conn, client, clock, 20)  # the autologout ends it after 14
        assert stamps == [1050.0 + 120.0 * n for n in range(1, 15)]
        assert clock.now == pytest.approx(2800.0)  # 30 minutes after the last input


def _keepalive_times(server: Server, conn: pool_module._Connection, client: socket.socket,
                     clock: SimpleNamespace, rounds: int) -> list[float]:
    """Let the idle timer expire up to ``rounds`` times (bounded): the times of the keepalives it
    sent, until the autologout's BYE closes the connection."""
    stamps: list[float] = []
    for _ in range(rounds):
        conn.waiting_input = True  # parked for reading, as after every PARK_READ
        due, deadline = server._timer_state(conn, clock.now)
        assert due is pool_module._Due.NOTHING
        clock.now = deadline
        outcome = server._serve(conn)
        line = client.recv(4096)
        if outcome is pool_module._Outcome.CLOSED:
            assert line == b"* BYE Autologout; idle for too long\r\n"
            break
        assert outcome is pool_module._Outcome.PARK_READ and line == b"* OK Still here\r\n"
        stamps.append(clock.now)
    return stamps


@pytest.mark.parametrize("slot_comes", [True, False])
def test_idle_keepalives_go_on_while_the_sessions_own_work_waits_in_idle(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, slot_comes: bool) -> None:
    """In IDLE, a delivery has the live searches look at the new message as the session's own
    work, which waits for a search slot (another session holds the only one). The client is in
    IDLE all the while: it gets its keepalives every imap_idle_notify_interval, and the
    autologout 30 minutes after its last input, as in any IDLE. While that work waited the
    session did not count as idling: the pool timed it by imap_autologout_time, no keepalive
    came, and the timer's expiry logged it out (after 30 minutes of waiting, as such work ends
    long before). Once the slot comes, the work ends and IDLE reads the client's DONE."""
    slots = searching._SearchSlots(total=1, per_account=1)
    monkeypatch.setattr(searching, "_SLOTS", slots)
    clock = SimpleNamespace(now=1000.0)
    with _served_session(tmp_path, monkeypatch, clock, autologout=1800.0,
                         idle_notify_interval=120.0) as (server, conn, client, conv):
        assert conv.send(b"s1 SEARCH RETURN (UPDATE) BODY marker\r\n") == [
            b'* ESEARCH (TAG "s1")', b"s1 OK SEARCH completed"]
        assert conv.send(b"i1 IDLE\r\n") == [b"+ idling"]  # the client's last input, at 1000
        assert slots.claim("someone else").done()
        conv.add_message(data=b"Subject: a\r\n\r\nmarker\r\n")
        assert conv.wakes
        conn.wakeup_due = True  # what the waker does in the pool
        assert server._serve(conn) is pool_module._Outcome.PARK_READ
        assert client.recv(4096) == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
        assert conv.session.awaiting()  # the live search waits for the slot
        stamps = _keepalive_times(server, conn, client, clock, 2 if slot_comes else 20)
        if not slot_comes:
            assert stamps == [1000.0 + 120.0 * n for n in range(1, 15)]
            assert clock.now == pytest.approx(2800.0)  # 30 minutes after the last input
            return
        assert stamps == [1120.0, 1240.0]
        slots.release("someone else")  # granted: the waker schedules the connection
        assert server._serve(conn) is pool_module._Outcome.PARK_READ
        assert client.recv(4096) == b'* ESEARCH (TAG "s1") ADDTO (0 1)\r\n'
        client.sendall(b"DONE\r\n")
        assert server._serve(conn) is pool_module._Outcome.PARK_READ
        assert client.recv(4096) == b"i1 OK IDLE terminated\r\n"
    assert slots.claim("alice").done()  # the search gave its slot back


def _delivery_retried_through_store_errors(server: Server, conn: pool_module._Connection, client: socket.socket,
                                           conv: Conversation, clock: SimpleNamespace,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery at 1010 whose push meets a store error three times: the pool's timer retries it
    1, 2 and 4 s after each failure, and the autologout stays 30 minutes after the input at 1000."""
    conv.add_message()
    failures = [3]
    catch_up = conv.store.view_changes_since

    def busy(*args: Any, **kwargs: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise StoreBusy("too many concurrent readers")
        return catch_up(*args, **kwargs)

    monkeypatch.setattr(conv.store, "view_changes_since", busy)
    delayed = b"* NO [UNAVAILABLE] Changes to the mailbox will be reported later: too many concurrent readers\r\n"
    clock.now = 1010.0
    conn.wakeup_due = True   # the delivery's wake
    assert server._serve(conn) is pool_module._Outcome.PARK_READ
    assert client.recv(4096) == delayed
    retries = []
    for _ in range(10):  # bounded: the message goes out at the third retry
        conn.waiting_input = True  # parked for reading, as after every PARK_READ
        due, deadline = server._timer_state(conn, clock.now)
        assert due is pool_module._Due.NOTHING
        clock.now = deadline
        assert server._serve(conn) is pool_module._Outcome.PARK_READ
        retries.append(clock.now)
        sent = client.recv(4096)
        if sent != delayed:
            assert sent == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
            break
    assert retries == [1011.0, 1013.0, 1017.0]
    conn.waiting_input = True
    assert server._timer_state(conn, clock.now)[1] == pytest.approx(2800.0)  # the autologout's


def test_in_idle_a_push_that_met_a_store_error_is_made_again_by_the_pools_timer(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """IDLE without keepalives (imap_idle_notify_interval 0), served by the pool's own slices:
    a push that meets a store error is made again by the pool's timer, 1 s after it, then 2
    and 4 s after each retry that fails again, and the message goes out at the first retry
    that succeeds; the autologout still comes 30 minutes after the client's last input. The
    timer was the autologout's alone: the message waited for another change or for DONE."""
    clock = SimpleNamespace(now=1000.0)
    with _served_session(tmp_path, monkeypatch, clock, autologout=1800.0,
                         idle_notify_interval=0.0) as (server, conn, client, conv):
        assert conv.send(b"i1 IDLE\r\n") == [b"+ idling"]  # the client's last input, at 1000
        _delivery_retried_through_store_errors(server, conn, client, conv, clock, monkeypatch)


def test_with_notify_between_commands_a_push_that_met_a_store_error_is_made_again_by_the_pools_timer(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY (SELECTED) and no command running, served by the pool's own slices: a push that
    meets a store error is made again by the pool's timer as in IDLE, 1 s after it, then 2 and 4
    s after each retry that fails again, with no keepalive line; the autologout still comes 30
    minutes after the client's last command. The push waited for another change or command."""
    clock = SimpleNamespace(now=1000.0)
    with _served_session(tmp_path, monkeypatch, clock, autologout=1800.0,
                         idle_notify_interval=120.0) as (server, conn, client, conv):
        assert conv.send(b"n1 NOTIFY SET (selected (MessageNew MessageExpunge))\r\n") == [
            b"n1 OK NOTIFY completed"]   # answered at 1000
        conn.idle_limit = conv.session.idle_timeout()
        _delivery_retried_through_store_errors(server, conn, client, conv, clock, monkeypatch)


def _parked(server: Server, conn: pool_module._Connection, at: float) -> pool_module._Due:
    """What the idle timer says at ``at`` of the connection parked for reading, as after every
    PARK_READ."""
    conn.waiting_input = True
    return server._timer_state(conn, at)[0]


def test_input_still_being_decoded_postpones_the_autologout(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes from the client are activity even before they decode to anything: here the start
    of a DEFLATE block (as a TLS record's first segments, or a long literal sent slowly), which
    the inflater holds. The timer counted from the last decoded input only, and logged the client
    out while its bytes were still arriving; a client that then says nothing more still is."""
    clock = SimpleNamespace(now=1000.0)
    with _served_session(tmp_path, monkeypatch, clock) as (server, conn, client, _conv):
        conn.transport.start_compress()
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        line = compressor.compress(b"a1 NOOP\r\n" + b"x" * 5000) + compressor.flush(zlib.Z_SYNC_FLUSH)
        client.sendall(line[:2])  # a dynamic block's header, cut short: it inflates to nothing yet
        clock.now = 1050.0
        assert server._serve(conn) is pool_module._Outcome.PARK_READ
        assert _parked(server, conn, 1100.0) is pool_module._Due.NOTHING  # 60 s after the bytes, not the login
        assert _parked(server, conn, 1110.0) is pool_module._Due.IDLE
        clock.now = 1110.0
        conn.timeout_due = True
        assert server._serve(conn) is pool_module._Outcome.CLOSED
        assert zlib.decompressobj(-15).decompress(client.recv(4096)) == b"* BYE Autologout; idle for too long\r\n"


def test_a_long_command_is_not_counted_as_idle_time(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The timer counts from the end of the last command as well as from the client's input: a
    command that ran longer than the autologout (a SEARCH of a huge folder) was answered and then
    the client, which had had no chance to speak, was logged out at once."""
    clock = SimpleNamespace(now=1000.0)
    with _served_session(tmp_path, monkeypatch, clock) as (server, conn, client, conv):
        highestmodseq = conv.store.highestmodseq

        def slow_highestmodseq(*args: Any) -> Any:
            clock.now = 1100.0  # the command's store reads take 100 s
            return highestmodseq(*args)

        monkeypatch.setattr(conv.store, "highestmodseq", slow_highestmodseq)
        client.sendall(b"a1 NOOP\r\n")
        outcomes = [server._serve(conn)]
        while outcomes[-1] is pool_module._Outcome.REQUEUE and len(outcomes) < 4:  # a slice out of time
            outcomes.append(server._serve(conn))
        assert outcomes[-1] is pool_module._Outcome.PARK_READ
        assert client.recv(4096).endswith(b"a1 OK NOOP completed\r\n")
        finished = clock.now
        assert finished == 1100.0
        assert _parked(server, conn, finished + 59.0) is pool_module._Due.NOTHING
        assert _parked(server, conn, finished + 60.0) is pool_module._Due.IDLE


def test_stalled_writer_is_closed() -> None:
    recorder = Recorder()
    with running_server(recorder, conn_timeout=0.4) as (server, ports):
        stalled = connect(ports["plain"], rcvbuf=64 * 1024)
        stalled.send(b"BIG 200000000\r\n")
        started = time.monotonic()
        assert wait_until(lambda: recorder.count("connection_lost") == 1, timeout=4.0)
        assert time.monotonic() - started < 3.0
        assert server.stats().sessions == 0
        assert recorder.count("timed_out") == 0
        stalled.close()


def test_starttls_discards_pipelined_plaintext(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    recorder = Recorder()
    with running_server(recorder, ssl_context=server_ssl) as (_server, ports):
        client = connect(ports["plain"])
        client.send(b"STARTTLS\r\nECHO injected\r\n")
        assert client.readline() == b"OK begin TLS\r\n"
        client.starttls(client_ssl)
        assert client.command("ECHO secret") == b"OK secret\r\n"
        assert "tls=True" in client.command("PEER").decode()
        assert "ECHO injected" not in recorder.details("line")
        assert recorder.details("transport_changed") == ["starttls tls=True"]


def test_starttls_plaintext_sent_before_handshake_never_reaches_handler(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    recorder = Recorder()
    with running_server(recorder, ssl_context=server_ssl) as (server, ports):
        client = connect(ports["plain"])
        assert client.command("STARTTLS") == b"OK begin TLS\r\n"
        client.send(b"ECHO injected\r\n")  # arrives where the ClientHello should be
        with pytest.raises((ssl.SSLError, OSError)):
            client.starttls(client_ssl)
            client.command("NOOP")
        assert wait_until(lambda: server.stats().sessions == 0)
        assert "ECHO injected" not in recorder.details("line")
        assert recorder.details("transport_changed") == []


def test_tls_close_notify_ends_the_session(server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    recorder = Recorder()
    with running_server(recorder, tls_ports=True, ssl_context=server_ssl) as (server, ports):
        client = Client("127.0.0.1", ports["tls"])
        client.starttls(client_ssl)
        assert client.readline() == GREETING
        client.send(b"ECHO last words\r\n")
        assert client.readline() == b"OK last words\r\n"
        assert isinstance(client.sock, ssl.SSLSocket)
        client.sock = client.sock.unwrap()  # sends close_notify, waits for the server's
        assert client.read_until_eof() == b""
        assert wait_until(lambda: server.stats().sessions == 0)
        assert recorder.count("connection_lost") == 1


def test_compress_both_ways() -> None:
    recorder = Recorder()
    with running_server(recorder) as (_server, ports):
        client = connect(ports["plain"])
        assert client.command("COMPRESS") == b"OK DEFLATE active\r\n"
        client.start_compress()
        before = client.raw_received
        assert client.command("ECHO hello") == b"OK hello\r\n"
        client.send(b"BIG 2000000\r\n")
        assert client.read_exactly(2_000_000) == b"x" * 2_000_000
        assert client.readline() == b"\r\n"
        assert client.readline() == b"OK big\r\n"
        assert client.raw_received - before < 100_000  # it really was compressed on the wire
        assert recorder.details("transport_changed") == ["compress tls=False"]
        assert recorder.details("line")[-2:] == ["ECHO hello", "BIG 2000000"]


def test_a_goodbye_ends_the_deflate_stream_before_the_connection(
        server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    """The final DEFLATE block goes out after the goodbye, plain and under TLS: the client's
    inflater sees the stream end, not an EOF inside it (Delta Chat logged the latter as a
    failed IDLE at every server stop, probe55)."""
    recorder = Recorder()
    with running_server(recorder, ssl_context=server_ssl) as (server, ports):
        for tls in (False, True):
            client = _compressing_client(ports, client_ssl, tls)
            assert client.command("QUIT") == b"* BYE bye\r\n"
            assert client.read_until_eof() == b""
            assert client.inflate.eof and client.inflate.unused_data == b""
        stopping = _compressing_client(ports, client_ssl, False)
        server.stop(grace=1.0)
        assert stopping.read_until_eof() == b"* BYE server shutting down\r\n"
        assert stopping.inflate.eof


def test_compress_over_tls(server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    recorder = Recorder()
    with running_server(recorder, ssl_context=server_ssl) as (_server, ports):
        client = connect(ports["plain"])
        assert client.command("STARTTLS") == b"OK begin TLS\r\n"
        client.starttls(client_ssl)
        assert client.command("COMPRESS") == b"OK DEFLATE active\r\n"
        client.start_compress()
        assert client.command("ECHO over both") == b"OK over both\r\n"
        client.send(b"BIG 500000\r\n")
        assert client.read_exactly(500_000) == b"x" * 500_000
        assert client.readline() == b"\r\n"
        assert client.readline() == b"OK big\r\n"
        assert recorder.details("transport_changed") == ["starttls tls=True", "compress tls=True"]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("client_ends", ["flushed", "finished", "late"])
def test_deflate_ends_both_ways_after_the_answer_that_asks_it(
        server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext, tls: bool, client_ends: str) -> None:
    """TransportAction.END_COMPRESS (RFC 8437 section 4.1, UNAUTHENTICATE): the server's DEFLATE
    stream ends right after the answer, in the same flush (its final block, no sync flush
    before it), and what follows is plain. The client's input after the command is plain: it
    may only have flushed its stream and wait for the answer, or end it (Z_FINISH) with plain
    commands pipelined behind, which are then read from where its stream ended, or end it once
    it has the answer, in front of its next plain command."""
    recorder = Recorder()
    with running_server(recorder, ssl_context=server_ssl) as (_server, ports):
        client = _compressing_client(ports, client_ssl, tls)
        deflate, inflate = client.deflate, client.inflate
        client.deflate = client.inflate = None
        if client_ends == "finished":
            client.sock.sendall(deflate.compress(b"UNCOMPRESS\r\n") + deflate.flush(zlib.Z_FINISH)
                                + b"ECHO plain\r\n")
        else:
            client.sock.sendall(deflate.compress(b"UNCOMPRESS\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
        wire = answer = b""
        while not inflate.eof:
            chunk = client.sock.recv(65536)
            assert chunk, "connection closed inside the DEFLATE stream"
            wire += chunk
            answer += inflate.decompress(chunk)
        assert answer == b"OK uncompressed\r\n"
        assert b"\x00\x00\xff\xff" not in wire  # no sync flush: the answer and the end in one
        client.buffer += inflate.unused_data
        if client_ends == "late":
            client.sock.sendall(deflate.flush(zlib.Z_FINISH))
        if client_ends != "finished":
            client.send(b"ECHO plain\r\n")
        assert client.readline() == b"OK plain\r\n"
        assert client.command("ECHO still plain") == b"OK still plain\r\n"
        assert client.command("COMPRESS") == b"OK DEFLATE active\r\n"  # and may start again
        client.start_compress()
        assert client.command("ECHO compressed again") == b"OK compressed again\r\n"
        assert recorder.details("transport_changed")[-2:] == [f"end-compress tls={tls}", f"compress tls={tls}"]


def test_implicit_tls_listener(server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    recorder = Recorder()
    with running_server(recorder, tls_ports=True, ssl_context=server_ssl) as (_server, ports):
        garbage = Client("127.0.0.1", ports["tls"])
        garbage.send(b"a LOGIN plaintext on the TLS port\r\n")
        assert garbage.read_until_eof()[:1] != b"*"  # no greeting, at most a TLS alert
        client = Client("127.0.0.1", ports["tls"])
        client.starttls(client_ssl)
        assert client.readline() == GREETING
        reply = client.command("PEER").decode()
        assert "tls=True starttls=False" in reply and "kind=imaps" in reply
        assert recorder.count("start") == 1
        assert recorder.handlers[0].info.extra["tls_version"].startswith("TLSv1.")


def test_wakeups_from_other_threads_are_delivered_and_coalesced() -> None:
    recorder = Recorder()
    with running_server(recorder) as (server, ports):
        client = connect(ports["plain"])
        assert client.command("WAIT") == b"OK waiting\r\n"
        waker = recorder.wakers[0]
        threads = [threading.Thread(target=lambda: [waker() for _ in range(50)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert client.readline() == b"* WOKE\r\n"
        lines = [b"* WOKE\r\n"]
        client.send(b"NOOP\r\n")
        while (line := client.readline()) != b"OK NOOP\r\n":
            lines.append(line)
        assert set(lines) == {b"* WOKE\r\n"}
        assert 1 <= len(lines) == recorder.count("wakeup") <= 200
        client.close()
        assert wait_until(lambda: server.stats().sessions == 0)
        waker()  # a waker outliving its connection is harmless
        assert recorder.count("wakeup") == len(lines)


def test_stop_says_goodbye_and_returns_promptly() -> None:
    recorder = Recorder()
    with running_server(recorder) as (server, ports):
        first = connect(ports["plain"])
        second = connect(ports["plain"])
        stuck = connect(ports["plain"], rcvbuf=64 * 1024)
        stuck.send(b"BIG 200000000\r\n")
        assert wait_until(lambda: recorder.handlers[2].generated > 0)
        started = time.monotonic()
        server.stop(grace=1.0)
        assert time.monotonic() - started < 2.0
        assert first.read_until_eof() == b"* BYE server shutting down\r\n"
        assert second.read_until_eof() == b"* BYE server shutting down\r\n"
        assert recorder.count("shutdown") == 3
        assert recorder.count("connection_lost") == 3
        with pytest.raises(OSError):
            Client("127.0.0.1", ports["plain"], timeout=1.0)
        stuck.close()


def test_stop_ends_the_waiting_leader_and_the_sleepers() -> None:
    recorder = Recorder()
    with running_server(recorder, context_num=8, thread_init_num=3, thread_charge_num=1) as (server, ports):
        client = connect(ports["plain"])
        assert client.command("NOOP") == b"OK NOOP\r\n"
        assert wait_until(lambda: server._leader and server.stats().busy_workers == 0)
        threads = list(server._worker_threads)
        started = time.monotonic()
        server.stop(grace=0.5)
        assert time.monotonic() - started < 1.5
        assert not any(thread.is_alive() for thread in threads)
        assert server.stats().workers == 0


def test_handler_exception_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="gximap.net"):
        with running_server(recorder) as (server, ports):
            victim = connect(ports["plain"])
            bystander = connect(ports["plain"])
            victim.send(b"BOOM\r\n")
            assert victim.read_until_eof() == b""
            assert bystander.command("NOOP") == b"OK NOOP\r\n"
            assert wait_until(lambda: server.stats().sessions == 1)
            assert server.stats().workers >= 2  # no worker died
    failures = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert failures and failures[0].exc_info is not None
    assert "BOOM requested" in str(failures[0].exc_info[1])


def test_client_half_close_still_gets_answers() -> None:
    recorder = Recorder()
    with running_server(recorder) as (server, ports):
        client = connect(ports["plain"])
        client.send(b"ECHO one\r\nECHO two\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        assert client.read_until_eof() == b"OK one\r\nOK two\r\n"
        assert wait_until(lambda: server.stats().sessions == 0)


def test_server_rejects_inconsistent_settings() -> None:
    listeners = bind_listeners([ListenerSpec("127.0.0.1", 0, True)])
    try:
        with pytest.raises(ValueError, match="ssl_context"):
            Server(listeners, Recorder().factory, context_num=1, thread_init_num=1, thread_charge_num=1,
                   conn_timeout=1.0, ssl_context=None, busy_response=BUSY)  # fmt: skip
        with pytest.raises(ValueError, match="PROXY"):
            Server([], Recorder().factory, context_num=1, thread_init_num=1, thread_charge_num=1,
                   conn_timeout=1.0, ssl_context=None, busy_response=BUSY, proxy_mode=3)  # fmt: skip
    finally:
        for listener in listeners:
            listener.close()


# -- listeners ----------------------------------------------------------------------------


def test_bind_listeners_ipv4_and_ipv6_side_by_side() -> None:
    for _ in range(20):  # the port the kernel picks for ::1 may be in use on 127.0.0.1 (parallel tests)
        (v6,) = bind_listeners([ListenerSpec("[::1]", 0, False)])
        try:
            (v4,) = bind_listeners([ListenerSpec("127.0.0.1", v6.port, True, "imaps")])
            break
        except ListenerError:
            v6.close()
    else:
        pytest.fail("no port free on both ::1 and 127.0.0.1")
    try:
        try:
            assert v6.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            assert v4.port == v6.port and v4.tls and v4.kind == "imaps"
            assert v6.address == f"[::1]:{v6.port}"
            assert v4.address == f"127.0.0.1:{v6.port}"
        finally:
            v4.close()
    finally:
        v6.close()


def _port_free_on_both_families() -> int:
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("0.0.0.0", 0))
            port = probe.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe6:
                probe6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe6.bind(("::", port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free on both IPv4 and IPv6")


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
@pytest.mark.parametrize("host", ["::", "[::]", "*"])
def test_the_ipv6_wildcard_serves_ipv4_clients_too(host: str) -> None:
    """Gromox's default imap_listen_addr is "::", and IPv4 clients must reach it (it was an
    IPv6-only socket once)."""
    port = _port_free_on_both_families()
    listeners = bind_listeners([ListenerSpec(host, port, False)])
    try:
        assert sorted(listener.host for listener in listeners) == ["0.0.0.0", "::"]
        for address in ("127.0.0.1", "::1"):
            with socket.create_connection((address, port), timeout=5):
                pass
    finally:
        for listener in listeners:
            listener.close()
    # The wildcard's IPv4 half listed on its own as well is bound once ...
    both = bind_listeners([ListenerSpec(host, port, False), ListenerSpec("0.0.0.0", port, False)])
    try:
        assert len(both) == 2
    finally:
        for listener in both:
            listener.close()
    # ... and is an error when the two disagree on implicit TLS.
    with pytest.raises(ListenerError, match=rf"0\.0\.0\.0:{port}: listed both with and without implicit TLS"):
        bind_listeners([ListenerSpec(host, port, False), ListenerSpec("0.0.0.0", port, True)])


def test_bind_failure_names_the_address_and_releases_the_rest() -> None:
    (taken,) = bind_listeners([ListenerSpec("127.0.0.1", 0, False)])
    try:
        with pytest.raises(ListenerError, match=rf"127\.0\.0\.1:{taken.port}: Address already in use"):
            bind_listeners([ListenerSpec("::1", 0, False), ListenerSpec("127.0.0.1", taken.port, False)])
        with pytest.raises(ListenerError, match="port out of range"):
            bind_listeners([ListenerSpec("127.0.0.1", 70000, False)])
    finally:
        taken.close()


def test_adopt_listener_and_systemd_fds(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    adopted = adopt_listener(sock.detach(), tls=False, kind="lmtp")
    try:
        assert adopted.kind == "lmtp" and adopted.host == "127.0.0.1"
        assert adopted.sock.getblocking() is False
    finally:
        adopted.close()
    idle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(ListenerError, match="not listening"):
            adopt_listener(idle.fileno(), tls=False)
    finally:
        idle.close()
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_FDNAMES", "imap:imaps")
    assert systemd_listen_fds() == [(3, "imap"), (4, "imaps")]
    assert "LISTEN_FDS" not in os.environ
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "2")
    assert systemd_listen_fds() == []


# -- transport ----------------------------------------------------------------------------


def test_inflation_is_bounded_per_read() -> None:
    server_side, client_side = socket.socketpair()
    try:
        transport = Transport(server_side)
        transport.start_compress()
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        total = 50 * 1024 * 1024
        bomb = compressor.compress(b"\0" * total) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert len(bomb) < 100_000
        client_side.sendall(bomb)
        received = 0
        reads = 0
        while received < total and reads < 2000:
            data = transport.read(64 * 1024)
            assert len(data) <= 64 * 1024
            received += len(data)
            reads += 1
            if received < total:
                assert transport.input_backlog
        assert received == total
    finally:
        server_side.close()
        client_side.close()


def _finished_deflate_stream(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)


@pytest.mark.parametrize("wire", [b"\xff\xff\xff\xff not deflate", _finished_deflate_stream(b"a NOOP\r\n") + b"more"],
                         ids=["not-deflate", "data-after-the-stream"])
def test_corrupt_deflate_input_is_invalid_deflate_input(wire: bytes) -> None:
    """A TransportError of its own: the client's stream is broken, what we send is not."""
    server_side, client_side = socket.socketpair()
    try:
        transport = Transport(server_side)
        transport.start_compress()
        client_side.sendall(wire)
        if not wire.startswith(b"\xff"):
            # What came before the stream's end is read first: UNAUTHENTICATE, say, after which
            # the pool would end DEFLATE (end_compress) and read on plain. Not ended, the rest
            # is not DEFLATE data.
            assert transport.read(4096) == b"a NOOP\r\n"
        with pytest.raises(InvalidDeflateInput, match="DEFLATE"):
            transport.read(4096)
        transport.write(b"* BYE still readable\r\n")
        transport.end_batch()
        assert transport.flush()
        assert zlib.decompressobj(-15).decompress(client_side.recv(4096)) == b"* BYE still readable\r\n"
    finally:
        server_side.close()
        client_side.close()


_ZLIB_FINISH = b"\x03\x00"  # zlib's Z_FINISH behind a sync flush: an empty fixed-Huffman final block
_STORED_FINISH = b"\x01\x00\x00\xff\xff"  # an empty stored final block, as other deflaters end
# Plain text that could be the start of a dynamic-Huffman block: it neither fails nor ends the stream.
_UNDECIDED = b"LQ_xgSp0 Rj.0YjUawo.68P1cr[HVFb N4s_.Vtw9382dffx1kVZQ2tqMnMcLRkBOzZU3G"


@pytest.mark.parametrize("steps", [
    [(b"a1 CAPABILITY\r\n", b"a1 CAPABILITY\r\n")],
    [(_ZLIB_FINISH, b""), (b"a1 CAPABILITY\r\n", b"a1 CAPABILITY\r\n")],
    [(_ZLIB_FINISH + b"a1 CAPABILITY\r\n", b"a1 CAPABILITY\r\n")],
    [(_ZLIB_FINISH[:1], b""), (_ZLIB_FINISH[1:] + b"a1 CAPABILITY\r\n", b"a1 CAPABILITY\r\n")],
    [(_STORED_FINISH[:2], b""), (_STORED_FINISH[2:], b""), (b"a1 CAPABILITY\r\n", b"a1 CAPABILITY\r\n")],
    [(b"\xff\xfe garbage\r\n", b"\xff\xfe garbage\r\n"), (b"a1 CAPABILITY\r\n", b"a1 CAPABILITY\r\n")],
    [(_UNDECIDED[:40], b""), (_UNDECIDED[40:50] + b"\r\n", _UNDECIDED[:50] + b"\r\n")],
    [(_UNDECIDED[:40], b""), (_UNDECIDED[40:], _UNDECIDED), (b"\r\n", b"\r\n")],
], ids=["no-final-block", "late-final-block", "final-block-with-the-command", "final-block-split",
        "stored-final-block-split", "garbage", "plain-line-held-to-its-end", "held-at-most-64-bytes"])
def test_client_stream_ended_after_end_compress(steps: list[tuple[bytes, bytes]]) -> None:
    """After end_compress() (UNAUTHENTICATE) a client may end its DEFLATE stream only once it
    has the answer, in front of its next plain command: bytes that end the stream cleanly are
    taken as that end, and what follows them is plain. Anything else is plain as it came, held
    back only while it could still be such an end, and never past a line's end or 64 bytes."""
    server_side, client_side = socket.socketpair()
    try:
        transport = Transport(server_side)
        transport.start_compress()
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        client_side.sendall(deflate.compress(b"u1 UNAUTHENTICATE\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
        assert transport.read(4096) == b"u1 UNAUTHENTICATE\r\n"
        assert deflate.flush(zlib.Z_FINISH) == _ZLIB_FINISH  # what this client would end with
        transport.end_compress()
        for sent, plain in steps:
            client_side.sendall(sent)
            assert transport.read(4096) == plain
            assert not transport.input_backlog
        client_side.shutdown(socket.SHUT_WR)
        assert transport.read(4096) == b"" and transport.at_eof
    finally:
        server_side.close()
        client_side.close()


GARBAGE = b"\xff\xfe not deflate data \x00" * 8


def _compressing_client(ports: dict[str, int], client_ssl: ssl.SSLContext, tls: bool) -> Client:
    client = connect(ports["plain"])
    if tls:
        assert client.command("STARTTLS") == b"OK begin TLS\r\n"
        client.starttls(client_ssl)
    assert client.command("COMPRESS") == b"OK DEFLATE active\r\n"
    client.start_compress()
    assert client.command("ECHO compressed") == b"OK compressed\r\n"
    return client


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize(("io_errors", "level"), [(False, logging.DEBUG), (True, NOTICE)], ids=["debug", "notice"])
def test_invalid_deflate_input_gets_the_handlers_goodbye_through_deflate(
        server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext, caplog: pytest.LogCaptureFixture,
        tls: bool, io_errors: bool, level: int) -> None:
    """Bytes that do not inflate end the connection with the handler's goodbye, compressed (and
    encrypted) like everything before it, then a close; logged like the TLS and DEFLATE failures
    (io_errors). The server goes on serving the others."""
    caplog.set_level(logging.DEBUG, logger="gximap.net")
    recorder = Recorder()
    with running_server(recorder, ssl_context=server_ssl, io_errors=io_errors) as (server, ports):
        bystander = connect(ports["plain"])
        client = _compressing_client(ports, client_ssl, tls)
        client.sock.sendall(GARBAGE)  # past the client's compressor (through its TLS)
        assert client.read_until_eof() == b"* BYE undecodable input\r\n"  # inflated by the client
        assert wait_until(lambda: server.stats().sessions == 1)
        assert bystander.command("ECHO still served") == b"OK still served\r\n"
        assert _compressing_client(ports, client_ssl, tls).command("NOOP") == b"OK NOOP\r\n"
    assert recorder.count("input_undecodable") == 1
    # Nothing of the garbage reached the handler as input.
    assert set(recorder.details("line")) <= {"STARTTLS", "COMPRESS", "ECHO compressed", "ECHO still served", "NOOP"}
    logged = [record for record in caplog.records if "invalid DEFLATE data from the client" in record.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == level
    assert "closing with a goodbye" in logged[0].getMessage()


def test_invalid_deflate_input_closes_a_handler_without_a_goodbye_at_once(
        monkeypatch: pytest.MonkeyPatch, client_ssl: ssl.SSLContext) -> None:
    monkeypatch.delattr(LineHandler, "input_undecodable")
    recorder = Recorder()
    with running_server(recorder) as (server, ports):
        client = _compressing_client(ports, client_ssl, tls=False)
        client.sock.sendall(GARBAGE)
        assert client.read_until_eof() == b""
        assert wait_until(lambda: server.stats().sessions == 0)
    assert recorder.count("connection_lost") == 1



def test_accepted_tcp_sockets_do_not_wait_for_delayed_acks(server_ssl: ssl.SSLContext) -> None:
    """TCP_NODELAY: the last small segment of a response must not wait for the client's ACK."""
    recorder = Recorder()
    with running_server(recorder, ssl_context=server_ssl) as (server, ports):
        client = connect(ports["plain"])
        conns = list(server._conns)
        assert len(conns) == 1
        assert conns[0].sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.close()


@pytest.mark.parametrize(("io_errors", "level"), [(True, 25), (False, logging.DEBUG)])
def test_io_errors_raises_lost_connections_to_notice(server_ssl: ssl.SSLContext, caplog: pytest.LogCaptureFixture,
                                                     io_errors: bool, level: int) -> None:
    """maddy's io_errors: a connection lost to an I/O error (here a broken TLS handshake) is
    logged where an operator at the default log level sees it."""
    caplog.set_level(logging.DEBUG, logger="gximap.net")
    recorder = Recorder()
    with running_server(recorder, tls_ports=True, ssl_context=server_ssl, io_errors=io_errors) as (_server, ports):
        garbage = Client("127.0.0.1", ports["tls"])
        garbage.send(b"\x16\x03\x01\x00\x05hello, not TLS\r\n")
        assert b"OK" not in garbage.read_until_eof()
        assert wait_until(lambda: any("TLS handshake failed" in record.getMessage() for record in caplog.records))
    lost = [record for record in caplog.records if "TLS handshake failed" in record.getMessage()]
    assert lost and all(record.levelno == level for record in lost)


class _ChoosableConnection:
    """What Server._make_room reads of a connection that has not logged in (no handler yet),
    on a real descriptor for its poll(2) look."""

    def __init__(self, sock: socket.socket, last_activity: float) -> None:
        self.fd = sock.fileno()
        self.phase = pool_module._Phase.ACTIVE
        self.handler = None
        self.awaiting = self.idle_since = None
        self.running = self.queued = self.closed = self.closing = False
        self.spoke = True
        self.peer_host = "127.0.0.1"
        self.last_activity = last_activity


def test_a_displaced_connection_whose_close_is_under_way_is_counted_once() -> None:
    """A connection chosen to make room, its close under way, is in both _displacing and
    _releasing: its context is the room for one arrival, not for two. A second arrival gets
    another connection chosen at once, not only once the first close is done."""
    server = Server([], Recorder().factory, context_num=2, thread_init_num=1, thread_charge_num=1,
                    conn_timeout=5.0, ssl_context=None, busy_response=b"")
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        closing, waiting = (_ChoosableConnection(pair[0], float(n)) for n, pair in enumerate(pairs))
        chosen: list[Any] = []

        def displace_parked(conn: Any) -> bool:
            chosen.append(conn)
            return True

        server._displace_parked = displace_parked  # type: ignore[method-assign]
        server._conns = {closing, waiting}  # type: ignore[arg-type]
        server._prelogin = {waiting: None}  # type: ignore[dict-item]
        server._displacing = {closing}  # type: ignore[arg-type]
        server._releasing = {closing}  # type: ignore[arg-type]
        server._waiting.extend([object(), object()])  # type: ignore[list-item]
        server._make_room()
        assert chosen == [waiting]
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()
