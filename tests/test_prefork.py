"""gximap.net.prefork (the parent of several serving processes), gximap.net.siblings (what they
tell each other) and the shared listener sets."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator

import pytest
from net_helpers import TIMEOUT, sibling_channels, sibling_processes, wait_until

from gximap.auth.service import AuthService
from gximap.net import prefork, siblings
from gximap.net.listener import ListenerSpec, bind_listener_sets, close_listener_sets
from gximap.net.prefork import StartFailed, Supervisor, describe_status
from gximap.net.siblings import AddressLedger, ConnectionHandoff, SiblingChannel

# -- sibling channel -------------------------------------------------------------------------------

def test_messages_reach_the_other_processes_not_the_sender() -> None:
    parent, first, second = sibling_processes()
    heard: list[tuple[str, int, str]] = []
    first.on("note", lambda sender, message: heard.append(("first", sender, message["text"])))
    second.on("note", lambda sender, message: heard.append(("second", sender, message["text"])))
    try:
        first.send("note", text="from one")
        second.send("note", text="from two")
        assert wait_until(lambda: len(heard) == 2)
        assert sorted(heard) == [("first", 1, "from two"), ("second", 0, "from one")]
    finally:
        first.close()
        second.close()
        parent.close_sockets()


def test_a_sibling_that_does_not_read_costs_one_wait_and_its_successor_starts_clean(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped (or dead, not yet restarted) sibling's queue fills up: one send waits for room
    and fails, the next ones do not wait at all. Its successor does not apply what was queued
    for its predecessor (a "+1" whose "-1" was dropped would count for good)."""
    monkeypatch.setattr(siblings, "_SEND_TIMEOUT", 1.0)
    parent = SiblingChannel.create(2)
    first = SiblingChannel(parent._pairs, parent.secret)
    first.attach(0)   # process 2 is not there: nobody reads its queue
    try:
        started = time.monotonic()
        for number in range(300):   # far more than a datagram queue holds (tens)
            first.send("note", text=f"old {number}")
        # One wait of _SEND_TIMEOUT, not one per message past the queue's room (minutes).
        assert time.monotonic() - started < 10.0
        assert first._stalled == {1}
        second = SiblingChannel(parent._pairs, parent.secret)
        heard: list[str] = []
        second.on("note", lambda sender, message: heard.append(message["text"]))
        second.attach(1)
        try:
            first.send("note", text="new")
            assert wait_until(lambda: heard == ["new"])
            assert first._stalled == set()   # it reads again: sends may wait for room again
        finally:
            second.close()
    finally:
        first.close()
        parent.close_sockets()


def test_the_parent_end_sends_nothing() -> None:
    parent = SiblingChannel.create(2)
    try:
        parent.send("note", text="ignored")  # not attached: a no-op, no error
    finally:
        parent.close_sockets()


def test_address_ledger_limits_across_processes_and_forgets_a_restarted_sibling() -> None:
    parent, first, second = sibling_processes()
    try:
        one = AddressLedger(first)
        two = AddressLedger(second)
        assert one.acquire("192.0.2.1", 3)
        assert one.acquire("192.0.2.1", 3)
        assert wait_until(lambda: two.count("192.0.2.1") == 2)
        assert two.acquire("192.0.2.1", 3)
        assert wait_until(lambda: one.count("192.0.2.1") == 3)
        assert not one.acquire("192.0.2.1", 3)
        assert not two.acquire("192.0.2.1", 3)
        assert two.acquire("192.0.2.2", 3)  # other addresses have their own count
        one.release("192.0.2.1")
        assert wait_until(lambda: two.count("192.0.2.1") == 2)
        assert two.acquire("192.0.2.1", 3)
        # Process 1 restarts: its successor says hello; process 2 forgets what the old one held
        # and sends its own counts to the newcomer.
        first.close()
        reborn_channel = SiblingChannel(parent._pairs)
        reborn_channel.attach(0)
        reborn = AddressLedger(reborn_channel)
        reborn_channel.say_hello()
        assert wait_until(lambda: two.count("192.0.2.1") == 2)   # only its own two remain
        assert wait_until(lambda: reborn.count("192.0.2.1") == 2)
        assert reborn.count("192.0.2.2") == 1
        reborn_channel.close()
    finally:
        second.close()
        parent.close_sockets()


def test_descriptors_pass_to_one_sibling_and_unclaimed_ones_are_closed() -> None:
    parent, first, second = sibling_processes()
    received: list[tuple[int, str, bytes]] = []

    def keep(sender: int, message: dict[str, object], fds: list[int]) -> None:
        with socket.socket(fileno=fds[0]) as passed:
            received.append((sender, str(message["label"]), passed.recv(16)))

    second.on_fds("pass", keep)
    ours, theirs = socket.socketpair()
    try:
        assert first.send_fds(1, "pass", [theirs.fileno()], label="a pair")
        assert not first.send_fds(0, "pass", [theirs.fileno()])    # not to itself
        assert not first.send_fds(7, "pass", [theirs.fileno()])    # no such process
        theirs.close()  # the sibling holds its own copy of the socket now
        ours.sendall(b"hello")
        assert wait_until(lambda: received == [(0, "a pair", b"hello")])
        # A descriptor sent with a message nobody takes descriptors for is closed by the
        # receiver: the peer sees the end of the stream once the sender's copy is closed too.
        ours2, theirs2 = socket.socketpair()
        with ours2:
            assert first.send_fds(1, "unclaimed", [theirs2.fileno()])
            theirs2.close()
            ours2.settimeout(5.0)
            assert ours2.recv(1) == b""
    finally:
        ours.close()
        first.close()
        second.close()
        parent.close_sockets()


def _keep_unannounced(waiting: list[tuple[int, socket.socket, Callable[[], None]]], index: int,
                      sock: socket.socket, _listener: int, _visited: frozenset[int],
                      taken: Callable[[], None]) -> None:
    """A sibling's adopt callback that keeps the connection without telling anyone."""
    waiting.append((index, sock, taken))


def _three_processes_handing_off() -> tuple[SiblingChannel, list[SiblingChannel], list[AddressLedger],
                                           list[ConnectionHandoff]]:
    """The parent's channel, and per process its attached channel, ledger and handoff."""
    parent = SiblingChannel.create(3)
    channels = [SiblingChannel(parent._pairs, parent.secret) for _ in range(3)]
    for index, channel in enumerate(channels):
        channel.attach(index)
    ledgers = [AddressLedger(channel) for channel in channels]
    handoffs = [ConnectionHandoff(channel, ledger) for channel, ledger in zip(channels, ledgers, strict=True)]
    for channel in channels:
        channel.say_hello()
    assert wait_until(lambda: all(len(handoff.siblings_up()) == 2 for handoff in handoffs))
    return parent, channels, ledgers, handoffs


def test_handoff_goes_to_the_sibling_with_most_room() -> None:
    parent, channels, ledgers, handoffs = _three_processes_handing_off()
    try:
        adopted: list[tuple[int, int, bytes]] = []
        visits: list[frozenset[int]] = []
        for index, handoff in enumerate(handoffs):
            def adopt(sock: socket.socket, listener: int, visited: frozenset[int], taken: Callable[[], None],
                      index: int = index) -> None:
                adopted.append((index, listener, sock.recv(8)))
                visits.append(visited)
                taken()

            handoff.adopt_with(adopt)
        for _ in range(2):
            assert ledgers[1].acquire("192.0.2.1", 0)
        assert ledgers[2].acquire("192.0.2.2", 0)
        assert wait_until(lambda: ledgers[0].sibling_loads() == {1: 2, 2: 1})
        ours, theirs = socket.socketpair()
        with ours, theirs:
            assert handoffs[0].offer(theirs, 3, capacity=2) == 2  # process 2 holds one of two
            ours.sendall(b"greet")
            assert wait_until(lambda: adopted == [(2, 3, b"greet")])
            assert visits == [frozenset({0})]  # it was in process 0 before
            assert wait_until(lambda: handoffs[0].untaken(2) == 0)  # process 2 said it took it
            assert handoffs[0].offer(theirs, 3, capacity=1) is None  # nobody has room
            # Passed on by process 2 to one it has not been in: process 1, though fuller.
            assert handoffs[2].offer(theirs, 3, capacity=3, visited=frozenset({0})) == 1
            ours.sendall(b"again")
            assert wait_until(lambda: adopted[1:] == [(1, 3, b"again")])
            assert visits[1:] == [frozenset({0, 2})]
            assert handoffs[2].offer(theirs, 3, capacity=3, visited=frozenset({0, 1})) is None
    finally:
        for channel in channels:
            channel.close()
        parent.close_sockets()


Kept = list[tuple[int, socket.socket, Callable[[], None]]]


@dataclasses.dataclass
class _KeepingSiblings:
    """Three processes whose siblings keep each connection passed to them without saying so
    (their pollers busy), and ``pairs`` of sockets to pass."""
    channels: list[SiblingChannel]
    ledgers: list[AddressLedger]
    handoffs: list[ConnectionHandoff]
    waiting: Kept
    pairs: list[tuple[socket.socket, socket.socket]]


@contextlib.contextmanager
def _keeping_siblings(connections: int) -> Iterator[_KeepingSiblings]:
    parent, channels, ledgers, handoffs = _three_processes_handing_off()
    waiting: Kept = []
    for index, handoff in enumerate(handoffs):
        handoff.adopt_with(functools.partial(_keep_unannounced, waiting, index))
    pairs = [socket.socketpair() for _ in range(connections)]
    try:
        yield _KeepingSiblings(channels, ledgers, handoffs, waiting, pairs)
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
        for channel in channels:
            channel.close()
        parent.close_sockets()


def test_equally_loaded_siblings_take_turns_even_after_an_offer_with_no_candidate() -> None:
    """An arrival is first offered to a sibling with room and, finding none, to a full one: the
    failed offer must not move the turn, or with two siblings the same one always comes up
    (review56)."""
    with _keeping_siblings(4) as siblings:
        handoff = siblings.handoffs[0]
        places: list[int] = []
        for _ours, theirs in siblings.pairs:
            assert handoff.offer(theirs, 0, capacity=0) is None  # nobody has room
            place = handoff.offer(theirs, 0, capacity=sys.maxsize)
            assert place is not None
            places.append(place)
            for index in (1, 2):  # each "took" it at once: loads stay equal
                while handoff.untaken(index):
                    handoff._on_taken(index, {})
        assert sorted(places) == [1, 1, 2, 2] and places[0] != places[1]


def test_handoffs_count_against_a_siblings_room_until_it_says_it_took_them() -> None:
    """A burst passed on before the sibling's ledger shows them is spread by the untaken count;
    the sibling's "taken" (or its restart) clears it."""
    with _keeping_siblings(5) as siblings:
        ledgers, handoffs, waiting = siblings.ledgers, siblings.handoffs, siblings.waiting
        places = [handoffs[0].offer(theirs, 0, capacity=2) for _ours, theirs in siblings.pairs]
        # Two each for processes 1 and 2, alternating by room; then nobody has room.
        assert sorted(place for place in places if place is not None) == [1, 1, 2, 2]
        assert places[-1] is None
        assert (handoffs[0].untaken(1), handoffs[0].untaken(2)) == (2, 2)
        assert wait_until(lambda: len(waiting) == 4)
        for index, sock, taken in waiting:
            if index == 1:
                assert ledgers[1].acquire("192.0.2.9", 0)  # admitted: counted, then confirmed
                taken()
            sock.close()
        assert wait_until(lambda: handoffs[0].untaken(1) == 0)
        assert ledgers[0].sibling_loads()[1] == 2  # the ledger message came first
        assert handoffs[0].untaken(2) == 2
        siblings.channels[2].say_hello()  # process 2 restarted: what it was sent went with it
        assert wait_until(lambda: handoffs[0].untaken(2) == 0)


def test_a_connection_is_passed_only_to_a_sibling_that_is_up() -> None:
    """A process still starting (no hello yet) or dead (the parent said "gone") is not offered
    a connection: its client would wait for the restart, or, before, lost it without a word
    (a clean-clone failure of test_every_context_is_used_before_a_connection_is_refused)."""
    parent = SiblingChannel.create(2)
    first = SiblingChannel(parent._pairs, parent.secret)
    first.attach(0)
    handoff = ConnectionHandoff(first, AddressLedger(first))
    first.say_hello()  # nobody hears it: process 2 is not attached yet
    second: SiblingChannel | None = None
    ours, theirs = socket.socketpair()
    try:
        assert handoff.offer(theirs, 0, capacity=5) is None  # process 2 has not said hello
        second = SiblingChannel(parent._pairs, parent.secret)
        second.attach(1)
        adopted: list[bytes] = []

        def adopt(sock: socket.socket, _listener: int, _visited: frozenset[int], taken: Callable[[], None]) -> None:
            adopted.append(sock.recv(8))
            taken()

        second_handoff = ConnectionHandoff(second, AddressLedger(second))
        second_handoff.adopt_with(adopt)
        second.say_hello()
        assert wait_until(lambda: handoff.siblings_up() == {1})
        assert wait_until(lambda: second_handoff.siblings_up() == {0})  # process 1 answered "up"
        assert handoff.offer(theirs, 0, capacity=5) == 1
        ours.sendall(b"hi")
        assert wait_until(lambda: adopted == [b"hi"])
        parent.announce_gone(1)  # process 2 died: the parent says so
        assert wait_until(lambda: handoff.siblings_up() == set())
        assert handoff.offer(theirs, 0, capacity=5) is None
    finally:
        ours.close()
        theirs.close()
        first.close()
        if second is not None:
            second.close()
        parent.close_sockets()


def test_a_connection_passed_to_a_process_that_died_is_taken_up_by_its_successor() -> None:
    """Passed in the moment before the parent's "gone" arrived: the successor greets it once
    it is up, instead of closing it with the rest of its predecessor's queue."""
    parent, channels, _ledgers, handoffs = _three_processes_handing_off()
    reborn: SiblingChannel | None = None
    ours, theirs = socket.socketpair()
    try:
        channels[2].close()  # process 3 dies; its siblings do not know yet
        assert handoffs[0].offer(theirs, 4, capacity=5, visited=frozenset({1})) == 2
        theirs.close()
        reborn = SiblingChannel(parent._pairs, parent.secret)
        reborn.attach(2)
        adopted: list[tuple[int, frozenset[int], bytes]] = []

        def adopt(sock: socket.socket, listener: int, visited: frozenset[int], taken: Callable[[], None]) -> None:
            with sock:
                adopted.append((listener, visited, sock.recv(8)))
            taken()

        ConnectionHandoff(reborn, AddressLedger(reborn)).adopt_with(adopt)
        ours.sendall(b"late")
        time.sleep(0.1)
        assert adopted == []  # not before the successor is ready
        reborn.say_hello()
        assert wait_until(lambda: adopted == [(4, frozenset({0, 1}), b"late")])
    finally:
        ours.close()
        theirs.close()
        for channel in channels[:2]:
            channel.close()
        if reborn is not None:
            reborn.close()
        parent.close_sockets()


def test_a_dead_siblings_connections_stop_counting_when_the_parent_says_it_is_gone() -> None:
    parent, first, second = sibling_processes()
    try:
        one = AddressLedger(first)
        two = AddressLedger(second)
        assert one.acquire("192.0.2.1", 0)
        assert wait_until(lambda: two.count("192.0.2.1") == 1)
        first.close()
        parent.announce_gone(0)
        assert wait_until(lambda: two.count("192.0.2.1") == 0)
    finally:
        second.close()
        parent.close_sockets()


def _stop_reading(sender: SiblingChannel, receiver: SiblingChannel) -> threading.Event:
    """Hold ``receiver``'s receiving thread (as a process stopped, or starved of CPU, is held)
    until the returned event is set; returns once it is held."""
    held, resume = threading.Event(), threading.Event()

    def hold(_sender: int, _message: dict[str, object]) -> None:
        held.set()
        resume.wait(4 * TIMEOUT)

    receiver.on("hold", hold)
    sender.send("hold")
    assert held.wait(TIMEOUT)
    return resume


def test_counts_dropped_while_a_sibling_stalled_are_replaced_once_it_reads_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sibling that does not read for a moment loses the messages sent meanwhile (its queue
    is full). Counts applied as changes would then be wrong for good: here it would keep the
    "+1"s that fitted in its queue and never see the "-1"s. After a drop it is sent a snapshot
    that replaces what it held for the sender, tried again until it gets through."""
    monkeypatch.setattr(siblings, "_SEND_TIMEOUT", 0.01)
    monkeypatch.setattr(siblings, "_RESYNC_EVERY", 3600.0, raising=False)  # not the periodic one
    parent, first, second = sibling_processes()
    resume: threading.Event | None = None
    try:
        one, two = AddressLedger(first), AddressLedger(second)
        resume = _stop_reading(first, second)
        held = 0
        while 1 not in first._stalled and held < 5000:  # a datagram queue holds a few hundred
            assert one.acquire("192.0.2.1", 0)
            held += 1
        assert first._stalled == {1}
        for _ in range(held):
            one.release("192.0.2.1")  # dropped, all of them: the queue is full
        assert one.acquire("192.0.2.2", 0)  # dropped too
        resume.set()

        # No other message need come: the snapshot is tried again until it gets through.
        assert wait_until(lambda: two.count("192.0.2.1") == 0 and two.count("192.0.2.2") == 1)
        assert two.sibling_loads() == {0: 1}
        assert first._stalled == set()
    finally:
        if resume is not None:
            resume.set()
        first.close()
        second.close()
        parent.close_sockets()


def test_a_count_lost_without_a_stall_is_replaced_by_the_periodic_snapshot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(siblings, "_RESYNC_EVERY", 0.2, raising=False)
    parent, first, second = sibling_processes()
    try:
        one, two = AddressLedger(first), AddressLedger(second)
        for key in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
            assert one.acquire(key, 0)
        assert wait_until(lambda: two.count("192.0.2.1") == 2 and two.count("192.0.2.2") == 1)
        # What two knows of them comes from a snapshot now, and one drops out of the next
        # without a word on it: that must clear it as well.
        assert wait_until(lambda: two._siblings[0].floor == 3 and not two._siblings[0].stamps)
        first.send = lambda kind, **fields: None  # type: ignore[method-assign]  # the changes are lost
        one.release("192.0.2.1")
        one.release("192.0.2.2")
        del first.send
        assert wait_until(lambda: two.count("192.0.2.1") == 1 and two.count("192.0.2.2") == 0)
        assert two.sibling_loads() == {0: 1}
    finally:
        first.close()
        second.close()
        parent.close_sockets()


def test_a_count_sent_after_a_snapshot_that_holds_it_is_not_counted_twice() -> None:
    """acquire counts a connection under the ledger's lock and tells the siblings after
    releasing it: a snapshot taken in between (a sibling said hello) already holds the
    connection, and the message that follows must not add it again."""
    parent, first, second = sibling_processes()
    try:
        one, two = AddressLedger(first), AddressLedger(second)
        noted = threading.Event()
        second.on("mark", lambda _sender, _message: noted.set())
        send = first.send
        raced: list[str] = []

        def snapshot_in_between(kind: str, **fields: object) -> None:
            if kind == "conn-imap" and not raced:
                raced.append(kind)
                second.say_hello()
                assert wait_until(lambda: two.count("192.0.2.1") == 1)  # from the snapshot
            send(kind, **fields)

        first.send = snapshot_in_between  # type: ignore[method-assign]
        assert one.acquire("192.0.2.1", 0)
        del first.send
        first.send("mark")  # after the count's message on the same queue
        assert noted.wait(TIMEOUT)
        assert two.count("192.0.2.1") == 1
    finally:
        first.close()
        second.close()
        parent.close_sockets()


def test_a_restarted_sibling_whose_hello_was_lost_replaces_its_predecessors_counts() -> None:
    parent, first, second = sibling_processes()
    reborn_channel: SiblingChannel | None = None
    try:
        one, two = AddressLedger(first), AddressLedger(second)
        for _ in range(3):
            assert one.acquire("192.0.2.1", 0)
        assert wait_until(lambda: two.count("192.0.2.1") == 3)
        first.close()  # process 1 dies; neither "gone" nor the successor's hello arrives
        reborn_channel = SiblingChannel(parent._pairs, parent.secret)
        reborn_channel.attach(0)
        reborn = AddressLedger(reborn_channel)
        assert reborn.acquire("192.0.2.1", 0)
        assert wait_until(lambda: two.count("192.0.2.1") == 1)
    finally:
        if reborn_channel is not None:
            reborn_channel.close()
        second.close()
        parent.close_sockets()


def test_unlimited_ledger_still_counts() -> None:
    ledger = AddressLedger()
    for _ in range(5):
        assert ledger.acquire("198.51.100.7", 0)
    assert ledger.count("198.51.100.7") == 5
    for _ in range(5):
        ledger.release("198.51.100.7")
    assert ledger.count("198.51.100.7") == 0


class _NoBackend:
    """Knows no one: these tests share blocks and failures, which need no password check."""

    def authenticate(self, user: str, password: str) -> str | None:
        return None

    def exists(self, user: str) -> bool:
        return False

    def failure_reason(self, user: str) -> str:
        return "unknown user"


def test_auth_blocks_and_address_failures_are_shared() -> None:
    parent, first, second = sibling_processes()
    try:
        one = AuthService(None, _NoBackend(), ip_times=3, ip_window=60.0, block_interval=60.0)
        two = AuthService(None, _NoBackend(), ip_times=3, ip_window=60.0, block_interval=60.0)
        one.share_with(first)
        two.share_with(second)
        one.block_user("Alice", "192.0.2.9")
        assert wait_until(lambda: two.user_block_remaining("alice") > 50)
        one._note_address_failure("192.0.2.9", "192.0.2.9")
        two._note_address_failure("192.0.2.9", "192.0.2.9")
        assert not one._address_blocked("192.0.2.9")
        two._note_address_failure("192.0.2.9", "192.0.2.9")
        assert wait_until(lambda: one._address_blocked("192.0.2.9"))  # 3 failures in all
        # two counts one's failure once its message arrives (the channel is asynchronous)
        assert wait_until(lambda: two._address_blocked("192.0.2.9"))
        # A restarted sibling learns the blocks from the others.
        first.close()
        reborn_channel = SiblingChannel(parent._pairs)
        reborn_channel.attach(0)
        reborn = AuthService(None, _NoBackend(), ip_times=3, ip_window=60.0, block_interval=60.0)
        reborn.share_with(reborn_channel)
        reborn_channel.say_hello()
        assert wait_until(lambda: reborn.user_block_remaining("alice") > 50)
        assert wait_until(lambda: reborn._address_blocked("192.0.2.9"))
        for service in (one, two, reborn):
            service.close()
        reborn_channel.close()
    finally:
        second.close()
        parent.close_sockets()


def test_auth_state_lost_while_a_sibling_stalled_is_sent_again_and_no_failure_counts_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(siblings, "_SEND_TIMEOUT", 0.01)
    parent, first, second = sibling_processes()
    resume: threading.Event | None = None
    services: list[AuthService] = []
    try:
        one = AuthService(None, _NoBackend(), ip_times=3, ip_window=600.0, block_interval=600.0)
        two = AuthService(None, _NoBackend(), ip_times=3, ip_window=600.0, block_interval=600.0)
        services += [one, two]
        one.share_with(first)
        two.share_with(second)
        one._note_address_failure("192.0.2.9", "192.0.2.9")
        assert wait_until(lambda: len(two._ip_failures.get("192.0.2.9", ())) == 1)
        resume = _stop_reading(first, second)
        for _ in range(5000):  # fill its queue
            if 1 in first._stalled:
                break
            first.send("filler")
        assert first._stalled == {1}
        one.block_user("Alice", "192.0.2.9")  # both dropped
        one._note_address_failure("192.0.2.9", "192.0.2.9")
        resume.set()

        assert wait_until(lambda: two.user_block_remaining("alice") > 500
                          and len(two._ip_failures.get("192.0.2.9", ())) == 2)
        # The whole state again, twice: the failures already told are not counted again, so
        # two remain two, short of the three that block.
        marked = threading.Event()
        second.on("mark", lambda _sender, _message: marked.set())
        for _ in range(2):
            one._send_state(1)
        first.send("mark")  # after the state, on the same queue
        assert marked.wait(TIMEOUT)
        assert len(two._ip_failures["192.0.2.9"]) == 2
        assert not two._address_blocked("192.0.2.9")
    finally:
        if resume is not None:
            resume.set()
        for service in services:
            service.close()
        first.close()
        second.close()
        parent.close_sockets()


# -- listener sets ---------------------------------------------------------------------------------

def test_listener_sets_share_the_sockets() -> None:
    """Every process accepts on the same sockets: whichever is free first takes a connection."""
    sets = bind_listener_sets([ListenerSpec("127.0.0.1", 0, tls=False)], 3)
    try:
        assert all(listeners[0] is sets[0][0] for listeners in sets)
        assert sets[0] is not sets[1]  # separate lists, the same listeners
        port = sets[0][0].port
        assert port != 0
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.1)
        accepted = 0
        for listeners in sets:  # each "process" takes one from the shared queue
            conn, _ = listeners[0].sock.accept()
            conn.close()
            accepted += 1
        assert accepted == 3
        with pytest.raises(BlockingIOError):
            sets[1][0].sock.accept()
        for client in clients:
            client.close()
    finally:
        close_listener_sets(sets)


def test_unix_listeners_are_shared_between_sets(tmp_path) -> None:  # noqa: ANN001
    path = str(tmp_path / "lmtp.sock")
    sets = bind_listener_sets([ListenerSpec("", 0, tls=False, path=path)], 2)
    try:
        assert sets[0][0] is sets[1][0]
    finally:
        close_listener_sets(sets)
    assert not os.path.exists(path)


# -- the supervisor (forks real processes) ---------------------------------------------------------

@pytest.fixture(autouse=True)
def _restore_sigchld():
    previous = signal.getsignal(signal.SIGCHLD)
    yield
    signal.signal(signal.SIGCHLD, previous)


def _serve_ready_then_wait(index: int, ready: Callable[[], None]) -> int:
    signal.signal(signal.SIGTERM, lambda *args: os._exit(0))
    ready()
    while True:
        time.sleep(1)


def test_supervisor_starts_restarts_and_stops_processes() -> None:
    exits: list[int] = []
    supervisor = Supervisor(2, _serve_ready_then_wait, stop_grace=5.0, on_exit=exits.append)
    supervisor.start()
    try:
        first = supervisor.pids
        assert len(first) == 2 and all(pid > 0 for pid in first)
        os.kill(first[0], signal.SIGKILL)
        rounds = iter(range(100))
        supervisor.supervise(lambda: next(rounds) > 40 or (len(supervisor.pids) == 2
                                                          and supervisor.pids[0] != first[0]),
                             lambda: False, lambda timeout: time.sleep(0.05))
        assert len(supervisor.pids) == 2
        assert supervisor.pids[0] != first[0] and supervisor.pids[1] == first[1]
        assert exits == [0]  # its siblings are told (SiblingChannel.announce_gone)
    finally:
        supervisor.stop()
    assert supervisor.pids == []
    assert exits == [0]  # a stop is no death


def test_a_process_that_cannot_be_forked_again_is_tried_again_later(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A fork that fails while a process that died is restarted (EAGAIN: the process or memory
    limit reached) is logged and tried again after the restart delay, as a process that dies at
    once is; it must not end the parent, which would take the healthy processes with it."""
    supervisor = Supervisor(2, _serve_ready_then_wait, stop_grace=5.0)
    supervisor.start()
    try:
        first = supervisor.pids
        for child in supervisor.children:
            child.delay = 0.05   # restarts without the default second's wait
        fork = os.fork
        failed: list[bool] = []

        def fork_fails_once() -> int:
            if not failed:
                failed.append(True)
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            return fork()

        monkeypatch.setattr(prefork.os, "fork", fork_fails_once)
        os.kill(first[0], signal.SIGKILL)
        rounds = iter(range(200))
        with caplog.at_level(logging.ERROR, logger="gximap"):
            supervisor.supervise(lambda: next(rounds) > 150 or (len(supervisor.pids) == 2
                                                               and supervisor.pids[0] != first[0]),
                                 lambda: False, lambda timeout: time.sleep(0.02))
        assert failed
        assert len(supervisor.pids) == 2 and supervisor.pids[0] != first[0] and supervisor.pids[1] == first[1]
        assert any(record.getMessage().startswith("process 1/2 cannot be started: ")
                   and "trying again in" in record.getMessage() for record in caplog.records)
    finally:
        supervisor.stop()


def test_a_fork_that_fails_at_start_up_fails_the_start_and_stops_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    fork = os.fork
    forks: list[bool] = []

    def second_fork_fails() -> int:
        forks.append(True)
        if len(forks) == 2:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return fork()

    monkeypatch.setattr(prefork.os, "fork", second_fork_fails)
    supervisor = Supervisor(2, _serve_ready_then_wait, stop_grace=5.0)
    with pytest.raises(StartFailed, match="cannot start process 2: .Errno 11. Resource temporarily unavailable"):
        supervisor.start()
    assert supervisor.pids == []   # the first one was stopped


def test_a_process_that_fails_at_start_up_fails_the_start() -> None:
    def serve(index: int, ready: Callable[[], None]) -> int:
        if index == 1:
            return 3
        return _serve_ready_then_wait(index, ready)

    supervisor = Supervisor(2, serve, stop_grace=5.0)
    with pytest.raises(StartFailed, match="process 2 exited during start-up .exit status 3"):
        supervisor.start()
    assert supervisor.pids == []


def test_a_sighup_before_a_new_process_has_a_handler_reaches_the_one_on_fork_installs() -> None:
    """A reload forwarded to a process being (re)started must neither end it (SIGHUP's default
    action) nor be lost: SIGHUP is blocked from before the fork until on_fork has installed the
    process's handler. Here on_fork itself is sent one before it installs the handler; the
    process must then see it, and later ones too, before serve sets anything."""
    def on_fork() -> None:
        os.kill(os.getpid(), signal.SIGHUP)   # in the window between the fork and the handler
        signal.signal(signal.SIGHUP, lambda signum, frame: caught.append(signum))

    def serve(index: int, ready: Callable[[], None]) -> int:
        deadline = time.monotonic() + 5
        while len(caught) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGHUP)
        while len(caught) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return 4 if len(caught) < 2 else _serve_ready_then_wait(index, ready)

    caught: list[int] = []
    supervisor = Supervisor(1, serve, stop_grace=5.0, on_fork=on_fork)
    supervisor.start()   # StartFailed if the process died of the SIGHUP or did not see both
    try:
        assert len(supervisor.pids) == 1
        assert signal.SIGHUP not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # the parent's mask is back
    finally:
        supervisor.stop()


def test_describe_status() -> None:
    assert describe_status(3 << 8) == "exit status 3"
    assert describe_status(signal.SIGKILL) == "killed by SIGKILL"


# -- how many processes ---------------------------------------------------------------------------

def test_imap_process_num_zero_means_two_per_usable_cpu_at_most_32(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from gximap import daemon

    def count(wanted: int, cpus: int, contexts: int = 200) -> int:
        monkeypatch.setattr(daemon.os, "sched_getaffinity", lambda _pid: set(range(cpus)))
        config = SimpleNamespace(imap_process_num=wanted, context_num=contexts)
        return daemon.process_count(config)  # type: ignore[arg-type]

    assert count(0, 1) == 2 and count(0, 2) == 4 and count(0, 16) == 32 and count(0, 64) == 32
    assert count(3, 64) == 3 and count(1, 8) == 1   # a number given is taken as it is
    # ... up to context_num, the sessions they share: a process with none would serve no one.
    assert count(8, 2, contexts=4) == 4 and count(0, 64, contexts=10) == 10 and count(1, 1, contexts=1) == 1


def test_totals_are_shared_out_exactly() -> None:
    """context_num, imap_thread_init_num and the MTA pools' context numbers are totals: the
    shares add up to them (rounded up, 4 among 3 processes admitted 6, and 32 processes 32)."""
    assert [siblings.share(4, 3, index) for index in range(3)] == [2, 1, 1]
    assert [siblings.share(2, 4, index) for index in range(4)] == [1, 1, 0, 0]
    for total in (1, 2, 5, 50, 200, 1024):
        for count in (1, 2, 3, 7, 32):
            parts = [siblings.share(total, count, index) for index in range(count)]
            assert sum(parts) == total and max(parts) - min(parts) <= 1


def test_a_sibling_with_a_larger_share_is_offered_a_connection_by_its_own_room() -> None:
    """context_num = 4 among 3 processes: 2, 1 and 1. Process 2, full with its one session, has
    a connection to pass on; process 1 holds one of its one (full), process 0 one of its two."""
    parent, channels = sibling_channels(3)
    try:
        ledgers = [AddressLedger(channel) for channel in channels]
        handoffs = [ConnectionHandoff(channel, ledger, contexts=4) for channel, ledger in zip(channels, ledgers, strict=True)]
        for channel in channels:
            channel.say_hello()
        assert wait_until(lambda: all(len(handoff.siblings_up()) == 2 for handoff in handoffs))
        adopted: list[int] = []
        for index, handoff in enumerate(handoffs):
            def adopt(sock: socket.socket, _listener: int, _visited: frozenset[int], taken: Callable[[], None],
                      index: int = index) -> None:
                adopted.append(index)
                sock.close()
                taken()

            handoff.adopt_with(adopt)
        for index in range(3):
            assert ledgers[index].acquire(f"192.0.2.{index}", 0)
        assert wait_until(lambda: ledgers[2].sibling_loads() == {0: 1, 1: 1})
        ours, theirs = socket.socketpair()
        with ours, theirs:
            assert handoffs[2].offer(theirs, 0, capacity=siblings.share(4, 3, 2)) == 0
            assert wait_until(lambda: adopted == [0])
            assert wait_until(lambda: handoffs[2].untaken(0) == 0 and ledgers[2].sibling_loads()[0] == 1)
            assert ledgers[0].acquire("192.0.2.9", 0)   # process 0 took it: now all are full
            assert wait_until(lambda: ledgers[2].sibling_loads()[0] == 2)
            assert handoffs[2].offer(theirs, 0, capacity=siblings.share(4, 3, 2)) is None
    finally:
        for channel in channels:
            channel.close()
        parent.close_sockets()


def test_own_code_pages_touches_module_and_class_level_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("fakepkg.mod")
    exec(  # noqa: S102 - a module's source, as an import would run it
        "def function(): pass\n"
        "class Thing:\n"
        "    def method(self): pass\n"
        "    @staticmethod\n"
        "    def static(): pass\n"
        "    @classmethod\n"
        "    def klass(cls): pass\n"
        "    @property\n"
        "    def prop(self): return 1\n"
        "    constant = 3\n"
        "import os\n"  # another package's module: not ours
        "from os import path\n",
        vars(module))
    vars(module)["Thing"].__module__ = "fakepkg.mod"
    monkeypatch.setitem(sys.modules, "fakepkg.mod", module)
    monkeypatch.setitem(sys.modules, "fakepkg_not.mod", module)  # a prefix of the name is not the package
    assert prefork.own_code_pages(("fakepkg",)) == 5
    assert prefork.own_code_pages() > 300  # gximap's and midb's own (those this test process imported)
