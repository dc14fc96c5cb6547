"""Lingering close (gximap.net.linger): a socket the server is done with is kept, reading and
discarding, until the peer closes too, so that what the peer still sends does not make the kernel
reset the connection and destroy the server's last answer."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest
from net_helpers import Client, Recorder, running_server, wait_until

from gximap.net.linger import LINGER, Lingerer
from gximap.net.transport import Transport


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    ours.shutdown(socket.SHUT_WR)  # as the transport does before handing it over
    return ours, peer


def _is_closed(sock: socket.socket) -> bool:
    return sock.fileno() == -1


def test_a_socket_lingers_until_the_peer_closes() -> None:
    lingerer = Lingerer(seconds=10.0)
    ours, peer = _pair()
    assert lingerer.adopt(ours)
    peer.sendall(b"x" * 100_000)  # read and discarded while the peer is not done
    time.sleep(0.1)
    assert not _is_closed(ours) and len(lingerer) == 1
    assert peer.recv(10) == b""  # the peer has our end-of-file at once
    peer.close()
    assert wait_until(lambda: _is_closed(ours), timeout=5.0)
    assert len(lingerer) == 0


def test_a_peer_that_never_closes_is_given_up_after_the_time_allowed() -> None:
    lingerer = Lingerer(seconds=0.3)
    ours, peer = _pair()
    started = time.monotonic()
    assert lingerer.adopt(ours)
    assert wait_until(lambda: _is_closed(ours), timeout=5.0)
    assert 0.25 <= time.monotonic() - started < 3.0
    peer.close()


def test_a_peer_that_keeps_sending_is_given_up_after_the_octets_allowed() -> None:
    lingerer = Lingerer(seconds=30.0, max_bytes=200_000)
    ours, peer = _pair()
    assert lingerer.adopt(ours)
    peer.settimeout(5.0)
    sent = 0
    try:
        while sent < 10_000_000 and not _is_closed(ours):
            sent += peer.send(b"y" * 65536)
    except OSError:
        pass  # the close under our data resets the pair: what a flood earns
    assert wait_until(lambda: _is_closed(ours), timeout=5.0)
    peer.close()


def test_beyond_the_limit_a_socket_is_not_taken() -> None:
    lingerer = Lingerer(limit=2, seconds=10.0)
    pairs = [_pair() for _ in range(3)]
    try:
        assert lingerer.adopt(pairs[0][0]) and lingerer.adopt(pairs[1][0])
        assert not lingerer.adopt(pairs[2][0])  # the caller closes this one itself
        assert len(lingerer) == 2
    finally:
        for _ours, peer in pairs:
            peer.close()
        pairs[2][0].close()
    assert wait_until(lambda: len(lingerer) == 0, timeout=5.0)


def test_a_socket_is_not_taken_when_no_thread_can_serve_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Out of threads (the pressure a flood brings): the caller closes the socket itself, and the
    # next adoption starts the thread, so no socket is left waiting for one that never ran.
    lingerer = Lingerer(seconds=0.2)
    real_start = threading.Thread.start
    failures = [RuntimeError("can't start new thread")]

    def start(thread: threading.Thread) -> None:
        if thread.name == "linger" and failures:
            raise failures.pop()
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    (first, first_peer), (second, second_peer) = _pair(), _pair()
    try:
        assert not lingerer.adopt(first)
        assert len(lingerer) == 0
        assert lingerer.adopt(second)
        assert wait_until(lambda: _is_closed(second), timeout=5.0)   # given up after 0.2 s
    finally:
        first.close()
        first_peer.close()
        second_peer.close()


def test_a_thread_ended_by_an_error_closes_what_it_held(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    lingerer = Lingerer(seconds=10.0)
    ours, peer = _pair()

    class BrokenPoll:
        def __init__(self) -> None:
            self.real = real_epoll()

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

        def poll(self, timeout: float) -> list[tuple[int, int]]:
            raise ValueError("I/O operation on closed epoll object")

    real_epoll = select.epoll
    monkeypatch.setattr(select, "epoll", BrokenPoll)
    try:
        assert lingerer.adopt(ours)
        assert wait_until(lambda: _is_closed(ours), timeout=5.0)   # not kept for 10 s, nor for good
        assert len(lingerer) == 0
        assert "the thread failed" in caplog.text and "closed epoll" in caplog.text
    finally:
        peer.close()


def test_a_peer_still_sending_when_the_server_closes_reads_the_last_answer_and_a_clean_end() -> None:
    """The server closes while the peer is still writing (a burst pipelined behind LOGOUT, or
    garbage, more than the close's own drain reads). Without the lingering close, what is still
    unread or arrives after the close is answered with a reset: the peer's write fails, and
    its read may end in ECONNRESET instead of the answer and end-of-file."""
    ours, peer = socket.socketpair()  # a few hundred KiB of buffer: the burst cannot fit
    transport = Transport(ours)
    errors: list[BaseException] = []

    def send_burst() -> None:
        try:
            peer.sendall(b"X" * (768 * 1024))
        except OSError as exc:
            errors.append(exc)

    sender = threading.Thread(target=send_burst)
    sender.start()
    time.sleep(0.05)  # the peer is blocked in its write now
    transport.write(b"* BYE bye\r\n")
    transport.close(graceful=True)
    sender.join(5.0)
    assert not sender.is_alive()
    assert not errors, errors
    peer.settimeout(5.0)
    assert peer.recv(100) == b"* BYE bye\r\n"
    assert peer.recv(100) == b""  # end-of-file, not a reset
    peer.close()
    assert wait_until(lambda: len(LINGER) == 0, timeout=5.0)


def test_a_client_waiting_for_the_goodbye_is_not_lingered_for() -> None:
    """A LOGOUT's client sends nothing more: its socket is closed at once, without the
    lingering thread (which would cost every LOGOUT a hand-off)."""
    recorder = Recorder()
    with running_server(recorder) as (_server, ports):
        client = Client("127.0.0.1", ports["plain"])
        assert client.readline() == b"* OK test server ready\r\n"
        assert client.command("QUIT") == b"* BYE bye\r\n"
        assert client.sock.recv(100) == b""
        assert wait_until(lambda: recorder.count("connection_lost") == 1, timeout=5.0)
        assert len(LINGER) == 0
        client.close()


def test_a_connection_sent_nothing_is_not_lingered_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal that wrote nothing (a busy TLS listener's) has no answer to protect: the
    client's ClientHello, unread, does not earn its socket a lingering slot."""
    adopted: list[socket.socket] = []

    def adopt(sock: socket.socket) -> bool:
        adopted.append(sock)
        return False   # the caller closes it

    monkeypatch.setattr(LINGER, "adopt", adopt)
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.sendall(b"\x16\x03\x01" + b"H" * 300)   # what a TLS client sends first
    Transport(ours).close(graceful=True)
    assert not adopted and _is_closed(ours)
    answered, peer2 = socket.socketpair()
    answered.setblocking(False)
    peer2.sendall(b"a1 NOOP\r\n")
    transport = Transport(answered)
    transport.write(b"* BYE busy\r\n")
    transport.close(graceful=True)
    assert adopted == [answered]   # the same close with an answer sent: lingered for
    for sock in (answered, peer, peer2):
        sock.close()
