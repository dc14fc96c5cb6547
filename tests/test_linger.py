"""Lingering close (gximap.net.linger): a socket the server is done with is kept, reading and
discarding, until the peer closes too, so that what the peer still sends does not make the kernel
reset the connection and destroy the server's last answer."""

from __future__ import annotations

import socket
import threading
import time

from net_helpers import Client, Recorder, running_server, wait_until

from gximap.net.linger import Lingerer


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


def test_a_client_still_sending_behind_its_quit_reads_the_goodbye_and_a_clean_end() -> None:
    """The server closes while the client keeps writing (a pipelined burst behind LOGOUT, say).
    Without the lingering close the data arriving after the close is answered with a reset: the
    client's next write fails and its read ends in ECONNRESET instead of end-of-file."""
    recorder = Recorder()
    with running_server(recorder) as (_server, ports):
        client = Client("127.0.0.1", ports["plain"])
        assert client.readline() == b"* OK test server ready\r\n"
        client.send(b"QUIT\r\n")
        errors: list[BaseException] = []

        def keep_sending() -> None:
            # 0.6 s of writes, well inside the server's allowance in time and octets
            deadline = time.monotonic() + 0.6
            try:
                while time.monotonic() < deadline:
                    client.sock.sendall(b"X" * 4096)
                    time.sleep(0.01)
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        assert client.readline() == b"* BYE bye\r\n"
        sender.join(5.0)
        assert not errors, errors
        assert client.sock.recv(100) == b""  # end-of-file, not a reset
        client.close()
        assert wait_until(lambda: recorder.count("connection_lost") == 1, timeout=5.0)
