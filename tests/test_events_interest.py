"""Interest maps: a process hears only about the accounts it watches (midb.events module doc)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from net_helpers import wait_until

from midb.events import INTEREST_SLOTS, JOINED, Notifier

Event = tuple[int, int, int]


class RecordingPeer:
    """A Notifier standing for another process, recording every event its receiver thread gets
    (whatever it watches), so that what was sent shows, not only what its callbacks accepted."""

    def __init__(self, run_dir: Path) -> None:
        self.notifier = Notifier(str(run_dir))
        self.received: list[Event] = []
        self._arrived = threading.Condition()
        deliver = self.notifier.dispatch

        def recording(events: list[Event]) -> None:
            with self._arrived:
                self.received.extend(events)
                self._arrived.notify_all()
            deliver(events)

        # (assignment: it takes a list, not any Iterable; its receiver thread and publish() pass lists)
        self.notifier.dispatch = recording  # type: ignore[method-assign, assignment]

    def watch(self, account_id: int) -> object:
        return self.notifier.watch(account_id, f"user{account_id}", lambda *event: None)

    def close(self) -> None:
        self.notifier.close()


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[Notifier]:
    notifier = Notifier(str(tmp_path))
    notifier.watch(1000, "publisher", lambda *event: None)   # has a receiver, as a serving process does
    yield notifier
    notifier.close()


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[RecordingPeer]:
    recording = RecordingPeer(tmp_path)
    yield recording
    recording.close()


def publish_then_mark(publisher: Notifier, peer: RecordingPeer, events: list[Event]) -> list[Event]:
    """Publish `events`, then a marker event the peer watches (account 999), and return what the
    peer received before the marker: datagrams of one sender arrive in order."""
    publisher._peer_cache = None        # as after the peer's hello
    publisher.publish(events)
    publisher.publish([(999, 1, 1)])
    assert wait_until(lambda: (999, 1, 1) in peer.received)
    return peer.received[:peer.received.index((999, 1, 1))]


def test_a_peer_gets_only_the_accounts_it_watches(publisher: Notifier, peer: RecordingPeer) -> None:
    peer.watch(999)
    peer.watch(7)
    received = publish_then_mark(publisher, peer, [(5, 1, 10), (7, 2, 11), (8, 1, 12)])
    assert received == [(7, 2, 11)]
    assert publish_then_mark(publisher, peer, [(5, 1, 13)]) == [(7, 2, 11)]   # nothing new


def test_unwatching_the_last_watcher_stops_the_events(publisher: Notifier, peer: RecordingPeer) -> None:
    peer.watch(999)
    first = peer.watch(7)
    second = peer.watch(7)
    first.cancel()                                      # type: ignore[attr-defined]
    assert publish_then_mark(publisher, peer, [(7, 1, 1)]) == [(7, 1, 1)]
    second.cancel()                                     # type: ignore[attr-defined]
    peer.received.clear()
    assert publish_then_mark(publisher, peer, [(7, 1, 2)]) == []


def test_accounts_sharing_a_slot_keep_it_while_one_is_watched(publisher: Notifier, peer: RecordingPeer) -> None:
    peer.watch(999)
    low = peer.watch(3)
    peer.watch(3 + INTEREST_SLOTS)
    low.cancel()                                        # type: ignore[attr-defined]
    # The other account of the slot is still watched: its events come, and those of account 3
    # too (a spurious wake-up, never a lost one).
    received = publish_then_mark(publisher, peer, [(3 + INTEREST_SLOTS, 1, 1), (3, 1, 2)])
    assert received == [(3 + INTEREST_SLOTS, 1, 1), (3, 1, 2)]


def test_accounts_watched_before_the_receiver_starts_are_in_its_map(tmp_path: Path) -> None:
    """The first watch creates the map and binds the socket; the map is complete before the
    socket exists, so no sender can see the socket without the map."""
    peer = RecordingPeer(tmp_path)
    publisher = Notifier(str(tmp_path))
    try:
        peer.watch(999)                                 # map made here, with this account's bit
        received = publish_then_mark(publisher, peer, [(4, 1, 1), (999, 2, 2)])
        assert received == [(999, 2, 2)]               # account 4 not sent
    finally:
        publisher.close()
        peer.close()


def test_the_map_goes_with_the_socket(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path))
    notifier.watch(1, "alice", lambda *event: None)
    names = sorted(name for name in os.listdir(notifier.notify_dir) if name != JOINED)
    assert [name.rsplit(".", 1)[1] for name in names] == ["sock", "want"]
    assert os.path.getsize(os.path.join(notifier.notify_dir, names[1])) == INTEREST_SLOTS // 8
    notifier.close()
    assert os.listdir(notifier.notify_dir) == [JOINED]   # the directory's, no process's


def test_a_dead_peer_is_cleaned_up_when_a_process_joins(tmp_path: Path) -> None:
    """A crashed process leaves its socket and map. A map saying it watched nothing means no
    commit would ever send to it and find it gone, so the hello of the next process removes both."""
    notify_dir = tmp_path / "notify"
    notify_dir.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(notify_dir / "999999-dead.sock"))
    dead.close()
    (notify_dir / "999999-dead.want").write_bytes(bytes(INTEREST_SLOTS // 8))
    joining = Notifier(str(tmp_path))
    try:
        joining.watch(1, "alice", lambda *event: None)
        assert not (notify_dir / "999999-dead.sock").exists()
        assert not (notify_dir / "999999-dead.want").exists()
    finally:
        joining.close()


def test_a_peer_without_a_map_gets_everything(publisher: Notifier, tmp_path: Path) -> None:
    """A socket with no map beside it (its process could not make one): every event is sent."""
    plain = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    plain.bind(os.path.join(publisher.notify_dir, "424242-plain.sock"))
    plain.settimeout(5.0)
    try:
        publisher._peer_cache = None
        publisher.publish([(5, 1, 1)])
        assert plain.recv(100).endswith((5).to_bytes(4, "big") + (1).to_bytes(4, "big") + (1).to_bytes(8, "big"))
    finally:
        plain.close()


def test_a_gone_peers_map_is_forgotten(publisher: Notifier, tmp_path: Path) -> None:
    peer = RecordingPeer(tmp_path)
    peer.watch(999)
    publish_then_mark(publisher, peer, [])
    name = peer.notifier._receiver_name
    assert name is not None and name in publisher._peer_interest
    peer.close()
    publisher._peer_cache = None
    publisher.publish([(999, 1, 2)])                    # lists the directory again: the peer is gone
    assert name not in publisher._peer_interest
