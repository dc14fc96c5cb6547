"""The notifier's cached peer list: kept current by hellos and send errors, not by a directory
listing (or a stat) per commit."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from net_helpers import TIMEOUT, wait_until

from midb.events import HELLO, JOINED, MAGIC, Notifier


def bound_socket(notifier: Notifier, name: str) -> socket.socket:
    """A socket in the notify directory that never said hello (stands for a silent process)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(notifier.notify_dir, name))
    sock.setblocking(False)
    return sock


def test_peer_list_is_cached_while_a_receiver_runs(tmp_path: Path) -> None:
    publisher = Notifier(str(tmp_path))
    try:
        publisher.watch(1, "alice", lambda *event: None)   # binds a receiver: hellos reach us
        publisher.publish([(1, 1, 1)])                      # lists the directory once
        silent = bound_socket(publisher, "1-silent.sock")
        try:
            publisher.publish([(1, 1, 2)])
            try:
                silent.recv(100)
                raise AssertionError("the cached peer list was not used")
            except BlockingIOError:
                pass
            publisher._peer_cache = None                    # what a hello or PEER_REFRESH does
            publisher.publish([(1, 1, 3)])
            assert silent.recv(100).startswith(MAGIC)
        finally:
            silent.close()
    finally:
        publisher.close()


def test_hello_from_a_new_process_refreshes_the_peer_list(tmp_path: Path) -> None:
    publisher = Notifier(str(tmp_path))
    newcomer = Notifier(str(tmp_path))                     # stands for another process
    try:
        publisher.watch(1, "alice", lambda *event: None)
        publisher.publish([(1, 1, 1)])
        assert publisher._peer_cache is not None
        got: list[tuple[str, int, int]] = []
        newcomer.watch(7, "bob", lambda *event: got.append(event))   # binds and greets
        assert wait_until(lambda: publisher._peer_cache is None)
        publisher.publish([(7, 2, 9)])
        assert wait_until(lambda: got == [("bob", 2, 9)])
    finally:
        newcomer.close()
        publisher.close()


def test_hello_is_sent_to_existing_sockets(tmp_path: Path) -> None:
    probe = Notifier(str(tmp_path))
    try:
        os.makedirs(probe.notify_dir, exist_ok=True)
        listener = bound_socket(probe, "1-listener.sock")
        try:
            probe.watch(1, "alice", lambda *event: None)
            assert wait_until(lambda: _recv_or_none(listener) == HELLO)
        finally:
            listener.close()
    finally:
        probe.close()


def _recv_or_none(sock: socket.socket) -> bytes | None:
    try:
        return sock.recv(100)
    except BlockingIOError:
        return None


def test_gone_peer_is_dropped_from_the_cache_and_its_file_removed(tmp_path: Path) -> None:
    publisher = Notifier(str(tmp_path))
    try:
        publisher.watch(1, "alice", lambda *event: None)
        dead = bound_socket(publisher, "999999-dead.sock")
        dead.close()                                      # file stays, nobody listens: a crash
        publisher._peer_cache = None
        publisher.publish([(1, 1, 1)])                     # ECONNREFUSED
        cached = publisher._peer_cache
        assert cached is not None and "999999-dead.sock" not in cached[2]
        assert not os.path.exists(os.path.join(publisher.notify_dir, "999999-dead.sock"))
    finally:
        publisher.close()


def test_without_a_receiver_a_new_socket_is_seen_at_once(tmp_path: Path) -> None:
    """Nobody watches here, so no hello can reach us: the directory's mtime is checked per send."""
    publisher = Notifier(str(tmp_path))
    try:
        os.makedirs(publisher.notify_dir, exist_ok=True)
        publisher.publish([(1, 1, 1)])
        before = publisher._peer_cache
        assert before is not None and before[2] == []
        time.sleep(0.02)                                  # past a coarse timestamp tick
        newcomer = bound_socket(publisher, "2-new.sock")
        try:
            publisher.publish([(1, 1, 2)])
            assert newcomer.recv(100).startswith(MAGIC)
        finally:
            newcomer.close()
    finally:
        publisher.close()


def test_a_newcomer_hears_of_a_commit_made_before_its_hello_was_read(tmp_path: Path) -> None:
    """A process that starts watching (the first IDLE of a new or restarted serving process)
    then reads the store must be sent every change committed after that read, even by a peer
    that has not yet read its hello (its receiver thread busy, or the hello dropped from a full
    queue): otherwise the peer's cached list, trusted for PEER_REFRESH, leaves it out, and the
    session never hears of the change."""
    publisher = Notifier(str(tmp_path))
    poker = Notifier(str(tmp_path))                        # a third process, that only publishes
    newcomer = Notifier(str(tmp_path))
    busy, free = threading.Event(), threading.Event()

    def slow_callback(account: str, folder_id: int, modseq: int) -> None:
        if folder_id == 99:
            busy.set()
            free.wait(TIMEOUT)

    try:
        publisher.watch(1, "alice", slow_callback)
        publisher.publish([(5, 1, 1)])                     # lists the directory: its cache is set
        poker.publish([(1, 99, 1)])
        assert busy.wait(TIMEOUT)                          # the publisher's receiver is held up
        got: list[tuple[str, int, int]] = []
        newcomer.watch(7, "bob", lambda *event: got.append(event))   # binds and greets
        publisher.publish([(7, 2, 9)])                     # committed after the newcomer watched
        assert wait_until(lambda: got == [("bob", 2, 9)], timeout=2.0)
    finally:
        free.set()
        newcomer.close()
        poker.close()
        publisher.close()


def join_mark_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, every open() of a join mark, recorded."""
    real_open = os.open
    looks: list[str] = []

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.path.basename(os.fsdecode(path)) == JOINED:
            looks.append(os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    return looks


def test_a_missing_join_mark_is_not_looked_for_at_every_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until a process joins, there is no join mark to map: a publisher looks for it again only
    once the notify directory changed (making the mark changes it), not with an open() per
    commit; and a process that then joins is still sent the next commit's events."""
    publisher = Notifier(str(tmp_path))
    newcomer = Notifier(str(tmp_path))
    try:
        os.makedirs(publisher.notify_dir, exist_ok=True)
        settled = time.time() - 60                        # a directory nobody joined for a while
        os.utime(publisher.notify_dir, (settled, settled))
        looks = join_mark_opens(monkeypatch)
        for modseq in range(1, 101):
            publisher.publish([(1, 1, modseq)])
        assert len(looks) == 1
        got: list[tuple[str, int, int]] = []
        newcomer.watch(7, "bob", lambda *event: got.append(event))   # writes the mark
        publisher.publish([(7, 2, 9)])
        assert wait_until(lambda: got == [("bob", 2, 9)])
        assert publisher._join_mark() is not None          # mapped: read from memory from now on
        looked = len(looks)
        for modseq in range(10, 110):
            publisher.publish([(7, 2, modseq)])
        assert len(looks) == looked
    finally:
        newcomer.close()
        publisher.close()


def test_a_join_mark_missing_under_a_fresh_mtime_is_looked_for_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory changed within the last seconds may change again without its mtime moving (a
    coarse timestamp): a miss seen then is not trusted, the next commit looks again."""
    publisher = Notifier(str(tmp_path))
    try:
        os.makedirs(publisher.notify_dir, exist_ok=True)   # its mtime: now
        looks = join_mark_opens(monkeypatch)
        publisher.publish([(1, 1, 1)])
        publisher.publish([(1, 1, 2)])
        assert len(looks) == 2
    finally:
        publisher.close()
