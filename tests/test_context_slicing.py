"""Live searches (CONTEXT=SEARCH/SORT, gximap.session.searchcontext) look at the messages a
catch-up noted in slices, as a SEARCH does: the session's own work, run before the command's
tagged answer or before IDLE goes on, giving the worker back (PAUSE) once a slice is over and
waiting for a search slot without one (Await). Sliced (every look at the clock pauses, the
record filters a chunk of two records) or in one piece, the lines are the same, in the same
place."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conversation import Conversation, drive

from gximap.imap import encode
from gximap.session import base, searchcontext, searching, sorting
from gximap.session import session as session_module
from midb.errors import StoreBusy

FIRST = 12       # messages in the folder when the live searches start
ARRIVING = 40    # delivered at once while they are live
DATE = 1_700_000_000


def _message(number: int) -> bytes:
    body = b"a marker here" if number % 3 == 0 else b"plain text"
    return b"From: bob@example.org\r\nSubject: s%03d\r\n\r\n%s %d\r\n" % (number, body, number)


def _pieces(monkeypatch: pytest.MonkeyPatch, *, sliced: bool) -> None:
    monkeypatch.setattr(base, "SLICE_SECONDS", 0.0 if sliced else 3600.0)
    monkeypatch.setattr(searching, "_FILTER_CHUNK", 2 if sliced else 10**9)


@contextlib.contextmanager
def _opened(path: Path, **settings: Any) -> Iterator[Conversation]:
    """A session with the INBOX of FIRST messages selected (``settings``: Conversation's)."""
    with Conversation(path, **settings) as conversation:
        for number in range(1, FIRST + 1):
            conversation.add_message(data=_message(number))
        conversation.login()
        conversation.select()
        yield conversation


@pytest.fixture
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with _opened(tmp_path) as conversation:
        yield conversation


def _start_live_searches(conv: Conversation) -> None:
    """x3: a SEARCH that reads bodies; x4: a SORT of one, positions in REVERSE SUBJECT order;
    x5: a SEARCH of flags (the record filters alone)."""
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    conv.command("UID SORT RETURN (UPDATE) (REVERSE SUBJECT) UTF-8 BODY marker")
    conv.command("SEARCH RETURN (UPDATE) FLAGGED")


def _deliver(conv: Conversation) -> None:
    """ARRIVING new messages, every fourth flagged, and two old ones flagged: another client's."""
    folder = conv.folder("INBOX").id
    conv.store.append_many("alice", folder, [
        (_message(number), ("\\Flagged",) if number % 4 == 0 else (), DATE, 0)
        for number in range(FIRST + 1, FIRST + ARRIVING + 1)])
    conv.store.store_flags("alice", folder, [2, 4], "add", ["\\Flagged"])


def _expected_updates() -> list[bytes]:
    last = FIRST + ARRIVING
    markers = [number for number in range(FIRST + 1, last + 1) if number % 3 == 0]
    flagged = [2, 4, *(number for number in range(FIRST + 1, last + 1) if number % 4 == 0)]
    return [
        b'* ESEARCH (TAG "x3") ADDTO (0 ' + b",".join(b"%d" % n for n in markers) + b")",
        # s051 ... s015 all come before s012 in REVERSE SUBJECT order: positions 1 on, highest first.
        b'* ESEARCH (TAG "x4") UID ADDTO (1 ' + b",".join(b"%d" % n for n in reversed(markers)) + b")",
        b'* ESEARCH (TAG "x5") ADDTO (0 ' + b",".join(b"%d" % n for n in flagged) + b")",
    ]


def _catch_up_lines() -> list[bytes]:
    total = FIRST + ARRIVING
    return [b"* %d EXISTS" % total, b"* %d RECENT" % total,
            b"* 2 FETCH (FLAGS (\\Flagged \\Recent))", b"* 4 FETCH (FLAGS (\\Flagged \\Recent))"]


def _idle(conv: Conversation) -> None:
    conv.session.data_received(b"i1 IDLE\r\n")
    out, _pauses = drive(conv.session)
    assert out == b"+ idling\r\n"


def _run_rounds(session: Any, rounds: int) -> list[bytes]:
    """What the pool would send over ``rounds`` slices of the session."""
    out = []
    for _ in range(rounds):
        session.process(16)
        while (item := session.next_output()) is not None:
            out.append(bytes(item))
    return out


def _after_delivery(path: Path, monkeypatch: pytest.MonkeyPatch, *, sliced: bool, idle: bool) -> tuple[bytes, int]:
    """(output, pauses) once ARRIVING messages came to the live searches: in IDLE, from the wake
    the delivery brings; else from two NOOPs."""
    with _opened(path) as conv:
        _start_live_searches(conv)
        if idle:
            _idle(conv)
        _deliver(conv)
        _pieces(monkeypatch, sliced=sliced)
        if idle:
            assert conv.wakes
            conv.session.wakeup()
        else:
            conv.session.data_received(b"n1 NOOP\r\nn2 NOOP\r\n")
        return drive(conv.session)


@pytest.mark.parametrize(("idle", "answers"), [
    (False, [b"n1 OK NOOP completed", b"n2 OK NOOP completed"]),   # the lines before the first answer
    (True, []),
])
def test_the_work_is_split_and_the_lines_are_those_of_one_piece(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, idle: bool, answers: list[bytes]) -> None:
    whole, whole_pauses = _after_delivery(tmp_path / "whole", monkeypatch, sliced=False, idle=idle)
    sliced, sliced_pauses = _after_delivery(tmp_path / "sliced", monkeypatch, sliced=True, idle=idle)
    assert sliced == whole
    assert whole_pauses == 0
    # Two of the searches test the body of each arrived message, pausing before each.
    assert sliced_pauses >= 2 * ARRIVING
    assert whole.split(b"\r\n") == [*_catch_up_lines(), *_expected_updates(), *answers, b""]


def test_in_idle_a_delivery_and_done_wait_for_the_searches(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """In IDLE the searches work before IDLE goes on. A delivery while they work wakes nothing
    (the session does not idle then): it is looked for once they are done, and reported then,
    without a wake. A DONE sent while they work is read after them."""
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    _idle(conv)
    _deliver(conv)
    assert conv.wakes
    conv.wakes = 0
    _pieces(monkeypatch, sliced=True)
    session = conv.session
    session.wakeup()
    first = b"".join(_run_rounds(session, 3))
    assert first.split(b"\r\n") == [*_catch_up_lines(), b""]   # the searches are still at work
    late_number = FIRST + ARRIVING + 2
    assert late_number % 3 == 0   # a message with the marker
    late = conv.add_message(data=_message(late_number))
    assert conv.wakes == 0
    rest, pauses = drive(session)
    assert pauses >= ARRIVING
    total = FIRST + ARRIVING + 1
    assert rest.split(b"\r\n") == [_expected_updates()[0],
                                    b"* %d EXISTS" % total, b"* %d RECENT" % total,
                                    b'* ESEARCH (TAG "x3") ADDTO (0 %d)' % late, b""]
    # Idling again: the next delivery wakes the session; DONE comes while its searches work.
    later = [conv.add_message(data=_message(number)) for number in range(late_number + 1, late_number + 10)]
    assert conv.wakes
    session.wakeup()
    first = b"".join(_run_rounds(session, 3))
    assert first == b"* %d EXISTS\r\n* %d RECENT\r\n" % (total + 9, total + 9)
    session.data_received(b"DONE\r\n")
    rest, _pauses = drive(session)
    markers = [uid for uid, number in zip(later, range(late_number + 1, late_number + 10), strict=True)
               if number % 3 == 0]
    assert rest.split(b"\r\n") == [b'* ESEARCH (TAG "x3") ADDTO (0 ' + b",".join(b"%d" % n for n in markers) + b")",
                                    b"i1 OK IDLE terminated", b""]


def test_in_a_paused_search_no_catch_up_moves_the_view(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NOTIFY-less wake, a keepalive or the next command cannot catch up while the searches
    are at work: the message numbers their lines give are those of the view they looked at.
    Here an expunge by another client comes while the ADDTO of a message-number context is
    being made: the EXPUNGE is sent after it, by the next command."""
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    _deliver(conv)
    _pieces(monkeypatch, sliced=True)
    session = conv.session
    session.data_received(b"n1 NOOP\r\nn2 NOOP\r\n")
    first = _run_rounds(session, 3)
    assert not any(b"n1 OK" in chunk for chunk in first)
    folder = conv.folder("INBOX").id
    conv.store.store_flags("alice", folder, [3], "add", ["\\Deleted"])
    conv.store.expunge("alice", folder)
    session.wakeup()   # as the pool would, were the session woken: nothing while searching
    rest, _pauses = drive(session)
    lines = (b"".join(first) + rest).split(b"\r\n")
    markers_update = _expected_updates()[0]
    at = lines.index(markers_update)
    assert lines[at + 1:] == [b"n1 OK NOOP completed",
                              b'* ESEARCH (TAG "x3") REMOVEFROM (0 3)', b"* 3 EXPUNGE",
                              b"n2 OK NOOP completed", b""]


def test_the_searches_wait_for_a_search_slot_without_a_worker_and_give_it_back(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    slots = searching._SearchSlots(total=1, per_account=1)
    monkeypatch.setattr(searching, "_SLOTS", slots)
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    _deliver(conv)
    assert slots.claim("someone else").done()
    _pieces(monkeypatch, sliced=True)
    session = conv.session
    session.data_received(b"n1 NOOP\r\n")
    out = _run_rounds(session, 1)
    assert b"".join(out).endswith(b"* 4 FETCH (FLAGS (\\Flagged \\Recent))\r\n")   # the catch-up's lines
    assert not session.process(16)   # parked on the slot: nothing to do until it comes
    wakes = conv.wakes
    slots.release("someone else")
    assert conv.wakes == wakes + 1
    rest, pauses = drive(session)
    assert pauses >= ARRIVING
    assert rest == _expected_updates()[0] + b"\r\nn1 OK NOOP completed\r\n"
    assert slots.claim("alice").done()   # given back


def test_a_client_leaving_while_the_searches_pause_leaves_no_slot_taken(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    slots = searching._SearchSlots(total=1, per_account=1)
    monkeypatch.setattr(searching, "_SLOTS", slots)
    monkeypatch.setattr(searching, "_PAUSE_FROM", 0)   # the collector is paused for any folder
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    _idle(conv)
    _deliver(conv)
    _pieces(monkeypatch, sliced=True)
    session = conv.session
    session.wakeup()
    _run_rounds(session, 3)
    waiting = slots.claim("bob")
    assert not waiting.done()   # the searches of the IDLE session hold the one slot
    assert gc.isenabled()       # between slices the collector runs with the other sessions
    session.connection_lost()
    conv.closed = True
    assert waiting.done()
    assert gc.isenabled()


def test_a_store_error_keeps_the_messages_noted_for_the_next_catch_up(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    _deliver(conv)
    store = conv.store
    original = store.search_summaries
    failures: list[int] = []

    def busy_once(keys: Any) -> Any:
        if not failures:
            failures.append(1)
            raise StoreBusy("busy")
        return original(keys)

    monkeypatch.setattr(store, "search_summaries", busy_once)
    assert conv.command("NOOP") == [*_catch_up_lines(), b"x4 OK NOOP completed"]   # no ESEARCH, no warning
    assert failures
    assert conv.command("NOOP") == [_expected_updates()[0], b"x5 OK NOOP completed"]


def _busy_while_searching(monkeypatch: pytest.MonkeyPatch, conv: Conversation, failures: int,
                          deliver_first: int | None = None) -> list[int]:
    """Make the store's search_summaries (a live search of bodies reads them) raise StoreBusy
    the next ``failures`` times it is called; at the first, message ``deliver_first`` is
    delivered first, as if it came while the searches worked. The UIDs delivered so."""
    store = conv.store
    original = store.search_summaries
    left = [failures]
    delivered: list[int] = []

    def busy(keys: Any) -> Any:
        if not left[0]:
            return original(keys)
        left[0] -= 1
        if deliver_first is not None and not delivered:
            delivered.append(conv.add_message(data=_message(deliver_first)))
        raise StoreBusy("too many concurrent readers")

    monkeypatch.setattr(store, "search_summaries", busy)
    return delivered


@pytest.mark.parametrize("interval", [0.0, 120.0])
def test_in_idle_a_recheck_that_meets_a_store_error_is_made_again_soon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: float) -> None:
    """IDLE without NOTIFY: a delivery's live-search re-check meets a store error (StoreBusy)
    while another message arrives (which wakes nothing: the session is at work, not idling).
    The session's idle timer comes back a second later, and that retry reports both: the
    client does not wait for another change, for the next keepalive (none at all with
    imap_idle_notify_interval 0) or for DONE."""
    with _opened(tmp_path, idle_notify_interval=interval) as conv:
        conv.command("SEARCH RETURN (UPDATE) BODY marker")
        _idle(conv)
        first = conv.add_message(data=_message(FIRST + 3))
        delivered = _busy_while_searching(monkeypatch, conv, 1, deliver_first=FIRST + 6)
        assert conv.wake() == [b"* 13 EXISTS", b"* 13 RECENT"]   # and no ESEARCH: the search failed
        (late,) = delivered
        assert conv.wakes == 0
        assert 0 < conv.session.idle_timeout() <= session_module.IDLE_RETRY_FIRST + 0.5
        keepalive = [b"* OK Still here"] if interval else []
        assert conv.timeout() == [*keepalive, b"* 14 EXISTS", b"* 14 RECENT",
                                  b'* ESEARCH (TAG "x3") ADDTO (0 %d:%d)' % (first, late)]
        # Nothing owed any more: the timer is the keepalive's (or the autologout's) again.
        assert conv.session.idle_timeout() == pytest.approx(interval or conv.session.settings.autologout, abs=1)
        assert conv.send(b"DONE\r\n") == [b"i1 OK IDLE terminated"]


@pytest.mark.parametrize("interval", [0.0, 120.0])
def test_in_idle_an_owed_retry_waits_for_the_sessions_own_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: float) -> None:
    """IDLE: a push met a store error (a retry is owed a second later); before the retry a
    delivery has the live searches look at the new messages as the session's own work, which
    waits for a search slot. The retry waits for that work to end (no catch-up may move the
    view under it), and so does its timer: meanwhile the idle timer is the keepalive's (or the
    autologout's). Were it the retry's, it would fire at once again and again while the work
    waits, a keepalive line each time. Once the work ends, the retry comes a moment later."""
    slots = searching._SearchSlots(total=1, per_account=1)
    monkeypatch.setattr(searching, "_SLOTS", slots)
    with _opened(tmp_path, idle_notify_interval=interval) as conv:
        conv.command("SEARCH RETURN (UPDATE) BODY marker")
        _idle(conv)
        store = conv.store
        catch_up = store.view_changes_since

        def busy(*args: Any, **kwargs: Any) -> Any:
            monkeypatch.setattr(store, "view_changes_since", catch_up)
            raise StoreBusy("too many concurrent readers")

        monkeypatch.setattr(store, "view_changes_since", busy)
        first = conv.add_message(data=_message(FIRST + 3))
        (warning,) = conv.wake()
        assert warning.startswith(b"* NO [UNAVAILABLE]")
        assert conv.session.idle_timeout() <= session_module.IDLE_RETRY_FIRST + 0.5
        assert slots.claim("someone else").done()
        second = conv.add_message(data=_message(FIRST + 6))
        assert conv.wake() == [b"* 14 EXISTS", b"* 14 RECENT"]   # the re-check waits for the slot
        waiting = conv.session.idle_timeout()
        assert waiting == pytest.approx(interval or conv.session.settings.autologout, abs=1)
        if interval:
            assert conv.timeout() == [b"* OK Still here"]
            assert conv.session.idle_timeout() == pytest.approx(interval, abs=1)
        slots.release("someone else")
        assert conv.wake() == [b'* ESEARCH (TAG "x3") ADDTO (0 %d:%d)' % (first, second)]
        assert 0 < conv.session.idle_timeout() <= session_module.IDLE_RETRY_FIRST + 0.5
        assert conv.timeout() == ([b"* OK Still here"] if interval else [])   # the retry: nothing new
        assert conv.session.idle_timeout() == pytest.approx(interval or conv.session.settings.autologout, abs=1)
        assert conv.send(b"DONE\r\n") == [b"i1 OK IDLE terminated"]


def test_a_recheck_that_makes_up_for_a_failure_leaves_no_retry_owed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IDLE without NOTIFY: a delivery's re-check fails (a retry is owed a second later), and
    before the retry another delivery's catch-up and re-check succeed: they made up for the
    failure, so no retry is owed any more and the idle timer is the keepalive's again. The
    success moved the owed retry to the past instead: it came at once, a keepalive line right
    after the ADDTO, to find nothing."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(session_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    with _opened(tmp_path, idle_notify_interval=120.0) as conv:
        conv.command("SEARCH RETURN (UPDATE) BODY marker")
        _idle(conv)
        first = conv.add_message(data=_message(FIRST + 3))
        _busy_while_searching(monkeypatch, conv, 1)
        assert conv.wake() == [b"* 13 EXISTS", b"* 13 RECENT"]   # the re-check failed
        assert conv.session.idle_timeout() == pytest.approx(session_module.IDLE_RETRY_FIRST)
        clock.now += 0.5
        second = conv.add_message(data=_message(FIRST + 6))
        assert conv.wake() == [b"* 14 EXISTS", b"* 14 RECENT", b'* ESEARCH (TAG "x3") ADDTO (0 %d:%d)' % (first, second)]
        assert conv.session.idle_timeout() == pytest.approx(120.0)
        assert conv.timeout() == [b"* OK Still here"]
        assert conv.send(b"DONE\r\n") == [b"i1 OK IDLE terminated"]


def test_a_recheck_failing_again_is_retried_later_and_logged_once(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The store stays busy: each retry that fails waits twice as long for the next, and the
    log has one line for the run of failures (a session's store errors' shape), not one per
    retry; once a re-check succeeds, the next failure is logged again."""
    caplog.set_level(logging.WARNING, logger="gximap")
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    _idle(conv)
    arrived = [conv.add_message(data=_message(FIRST + 3))]
    _busy_while_searching(monkeypatch, conv, 3)
    assert conv.wake() == [b"* 13 EXISTS", b"* 13 RECENT"]
    waits = [conv.session.idle_timeout()]
    for _ in range(2):
        assert conv.timeout() == [b"* OK Still here"]   # retried: the search fails again
        waits.append(conv.session.idle_timeout())
    assert [round(wait) for wait in waits] == [1, 2, 4]
    line = f"session {conv.session.id}: user=alice live search update failed: too many concurrent readers"
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [(logging.WARNING, line)]
    assert conv.timeout() == [b"* OK Still here", b'* ESEARCH (TAG "x3") ADDTO (0 13)']
    arrived.append(conv.add_message(data=_message(FIRST + 6)))
    _busy_while_searching(monkeypatch, conv, 1)
    assert conv.wake() == [b"* 14 EXISTS", b"* 14 RECENT"]
    assert [record.getMessage() for record in caplog.records] == [line, line]
    assert conv.session.idle_timeout() <= session_module.IDLE_RETRY_FIRST + 0.5   # a first failure again: 1 s
    assert conv.timeout() == [b"* OK Still here", b'* ESEARCH (TAG "x3") ADDTO (0 14)']


def test_recheck_store_errors_are_logged_once_and_made_up_by_a_later_command(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A live search's re-check that meets a store error is logged as a session's other store
    errors are (a StoreBusy at warning level), once for a run of failures: the next command's
    re-check failing again adds no line; once one succeeds, the next failure is logged again."""
    caplog.set_level(logging.WARNING, logger="gximap")
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    conv.add_message(data=_message(FIRST + 3))
    _busy_while_searching(monkeypatch, conv, 2)
    assert conv.command("NOOP") == [b"* 13 EXISTS", b"* 13 RECENT", b"x4 OK NOOP completed"]
    line = f"session {conv.session.id}: user=alice live search update failed: too many concurrent readers"
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [(logging.WARNING, line)]
    assert conv.command("NOOP") == [b"x5 OK NOOP completed"]   # failed again: noted still, not logged
    assert len(caplog.records) == 1
    assert conv.command("NOOP") == [b'* ESEARCH (TAG "x3") ADDTO (0 13)', b"x6 OK NOOP completed"]
    conv.add_message(data=_message(FIRST + 6))
    _busy_while_searching(monkeypatch, conv, 1)
    assert conv.command("NOOP") == [b"* 14 EXISTS", b"* 14 RECENT", b"x7 OK NOOP completed"]
    assert [record.getMessage() for record in caplog.records] == [line, line]
    assert conv.command("NOOP") == [b'* ESEARCH (TAG "x3") ADDTO (0 14)', b"x8 OK NOOP completed"]


@pytest.mark.parametrize("sliced", [False, True])
def test_with_notify_the_updates_come_before_messagenew_fetches(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, sliced: bool) -> None:
    """A NOTIFY push: the catch-up, what the live searches have to say about it, then the FETCH
    of MessageNew's attributes for the new messages (all of it the session's own work, in the
    order it was queued), sliced or not. A change heard meanwhile is pushed once that is done."""
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    conv.command("NOTIFY SET (selected (MessageNew (UID) MessageExpunge))")
    _pieces(monkeypatch, sliced=sliced)
    arrived = [conv.add_message(data=_message(number)) for number in range(FIRST + 1, FIRST + 7)]
    assert conv.wakes
    conv.wakes = 0
    session = conv.session
    session.wakeup()
    first = b"".join(_run_rounds(session, 2))
    total = FIRST + len(arrived)
    if sliced:   # the searches are at work: what is heard now is pushed after them
        assert first == b"* %d EXISTS\r\n* %d RECENT\r\n" % (total, total)
    late = conv.add_message(data=_message(FIRST + 9))
    assert conv.wakes
    session.wakeup()
    rest, pauses = drive(session)
    assert (pauses > 0) == sliced
    lines = (first + rest).split(b"\r\n")
    assert lines[:2 + 1 + len(arrived)] == [
        b"* %d EXISTS" % total, b"* %d RECENT" % total,
        b'* ESEARCH (TAG "x3") ADDTO (0 %d,%d)' % (arrived[2], arrived[5]),
        *(b"* %d FETCH (UID %d)" % (uid, uid) for uid in arrived)]
    assert lines[2 + 1 + len(arrived):] == [
        b"* %d EXISTS" % (total + 1), b"* %d RECENT" % (total + 1),
        b'* ESEARCH (TAG "x3") ADDTO (0 %d)' % late, b"* %d FETCH (UID %d)" % (late, late), b""]


@pytest.mark.parametrize("sliced", [False, True])
def test_a_refusal_before_the_literal_comes_after_the_searches(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, sliced: bool) -> None:
    """An APPEND refused before its literal (no such mailbox) is a tagged NO as any other: the
    catch-up, what the live searches say of it (their work sliced or not), then the refusal."""
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    _deliver(conv)
    _pieces(monkeypatch, sliced=sliced)
    conv.session.data_received(b"a1 APPEND Nowhere {5}\r\n")
    out, pauses = drive(conv.session)
    assert (pauses > 0) == sliced
    assert out.split(b"\r\n") == [*_catch_up_lines(), _expected_updates()[0],
                                  b"a1 NO [TRYCREATE] Mailbox does not exist", b""]
    assert conv.command("NOOP") == [b"x4 OK NOOP completed"]   # nothing left noted


def test_with_notify_a_delivery_while_a_commands_searches_work_is_pushed_after_its_answer(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY: a message delivered while the live searches look at a command's catch-up (before
    its answer) came after that catch-up: it is pushed after the answer, as one delivered then
    would be (the report at a command's end leaves the selected mailbox to its catch-up)."""
    conv.command("SEARCH RETURN (UPDATE) BODY marker")
    conv.command("NOTIFY SET (selected (MessageNew (UID) MessageExpunge))")
    arrived = [conv.add_message(data=_message(number)) for number in range(FIRST + 1, FIRST + 7)]
    _pieces(monkeypatch, sliced=True)
    session = conv.session
    session.data_received(b"n1 NOOP\r\n")   # before the pool ran the wake of that delivery
    first = b"".join(_run_rounds(session, 2))
    total = FIRST + len(arrived)
    assert first == b"* %d EXISTS\r\n* %d RECENT\r\n" % (total, total)   # the searches are at work
    late = conv.add_message(data=_message(FIRST + 9))
    session.wakeup()
    rest, _pauses = drive(session)
    assert (first + rest).split(b"\r\n")[2:] == [
        b'* ESEARCH (TAG "x3") ADDTO (0 %d,%d)' % (arrived[2], arrived[5]),
        b"n1 OK NOOP completed",
        *(b"* %d FETCH (UID %d)" % (uid, uid) for uid in arrived),
        b"* %d EXISTS" % (total + 1), b"* %d RECENT" % (total + 1),
        b'* ESEARCH (TAG "x3") ADDTO (0 %d)' % late, b"* %d FETCH (UID %d)" % (late, late), b""]


def _calls_after_pauses(monkeypatch: pytest.MonkeyPatch, store: Any, method: str,
                        pauses: list[int]) -> list[tuple[int, list[int]]]:
    """For each call of the store's ``method`` from now on: how many pauses came before it (as
    _played counts them in ``pauses``), and the UIDs it was given (its third argument)."""
    calls: list[tuple[int, list[int]]] = []
    original = getattr(store, method)

    def counted(*args: Any) -> Any:
        calls.append((pauses[0], list(args[2]) if len(args) > 2 and args[2] is not None else []))
        return original(*args)

    monkeypatch.setattr(store, method, counted)
    return calls


def _played(session: Any, data: bytes, pauses: list[int]) -> bytes:
    """What the pool would send once ``data`` came, until the session has nothing more to do;
    each round that sends nothing while it has more counts in ``pauses[0]``."""
    session.data_received(data)
    out: list[bytes] = []
    for _ in range(10_000):
        more = session.process(16)
        produced = False
        while (item := session.next_output()) is not None:
            out.append(bytes(item))
            produced = True
        if not more:
            return b"".join(out)
        pauses[0] += not produced
    raise AssertionError("the session did not settle")


# -- a new SORT context's keys ------------------------------------------------------------------

_SORT_CONTEXTS = [
    "UID SORT RETURN (UPDATE) (REVERSE SUBJECT) UTF-8 ALL",
    "SORT RETURN (UPDATE ALL) (FROM REVERSE ARRIVAL SIZE) UTF-8 BODY marker",
    "UID SORT RETURN (UPDATE COUNT) (DATE REVERSE SUBJECT) UTF-8 NOT BODY marker",
]


def _sort_contexts_then_delivery(path: Path, monkeypatch: pytest.MonkeyPatch, *,
                                 sliced: bool) -> tuple[bytes, list[int]]:
    """The output of _SORT_CONTEXTS started, then of a NOOP after a delivery into them, their
    work sliced or in one piece (the sort columns keep nothing: each context reads its keys
    anew); and for each read of sort values, how many pauses came before it."""
    with _opened(path) as conv:
        conv.ctx.sort_columns.resize(0)
        monkeypatch.setattr(base, "SLICE_SECONDS", 0.0 if sliced else 3600.0)
        for module, name, size in ((sorting, "_UIDS_PER_READ", 3), (searchcontext, "_KEYS_PER_LOOK", 2),
                                   (sorting, "_VALUES_PER_LOOK", 5)):
            monkeypatch.setattr(module, name, size if sliced else 10**9)
        pauses = [0]
        reads = _calls_after_pauses(monkeypatch, conv.store, "sort_values", pauses)
        out: list[bytes] = []
        for tag, command in zip((b"s1", b"s2", b"s3", b"n1"), [*_SORT_CONTEXTS, "NOOP"], strict=True):
            if command == "NOOP":
                # Each context's keys in sort order, as sorting them one by one orders them.
                assert conv.session.selected is not None
                contexts = list(conv.session.selected.contexts.live.values())
                assert len(contexts) == len(_SORT_CONTEXTS)
                assert all(context.keys is not None and context.ordered == sorted(context.keys.values())
                           for context in contexts)
                _deliver(conv)
            out.append(_played(conv.session, tag + b" " + command.encode() + b"\r\n", pauses))
        return b"".join(out), [paused for paused, _uids in reads]


def test_a_sort_context_reads_its_keys_in_slices_and_keeps_the_one_piece_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SORT RETURN (UPDATE) reads its context's keys (again: the columns keep nothing) as it
    read its values, a few messages per read with a PAUSE before each, and orders them in the
    same slices; every answer, and the positions of the ADDTO after a delivery, are those of
    the run in one piece."""
    whole, whole_reads = _sort_contexts_then_delivery(tmp_path / "whole", monkeypatch, sliced=False)
    sliced, sliced_reads = _sort_contexts_then_delivery(tmp_path / "sliced", monkeypatch, sliced=True)
    assert sliced == whole
    assert set(whole_reads) == {0}
    # SORT's reads, then its context's: each after a pause of its own.
    assert len(sliced_reads) > 2 * len(_SORT_CONTEXTS) * (FIRST // 3)
    assert len(set(sliced_reads)) == len(sliced_reads)
    lines = whole.split(b"\r\n")
    assert lines[:6] == [b'* ESEARCH (TAG "s1") UID', b"s1 OK SORT completed",
                         b'* ESEARCH (TAG "s2") ALL 3,6,9,12', b"s2 OK SORT completed",
                         b'* ESEARCH (TAG "s3") UID COUNT 8', b"s3 OK SORT completed"]
    # s013 ... s052 all come before s012 in REVERSE SUBJECT order: positions 1 on, highest first.
    assert b'* ESEARCH (TAG "s1") UID ADDTO (1 ' + b",".join(
        b"%d" % n for n in range(FIRST + ARRIVING, FIRST, -1)) + b")" in lines
    assert lines[-2:] == [b"n1 OK NOOP completed", b""]


# -- the records a re-check reads ---------------------------------------------------------------

def _after_bulk_change(path: Path, monkeypatch: pytest.MonkeyPatch, *,
                       sliced: bool) -> tuple[bytes, dict[str, list[tuple[int, list[int]]]]]:
    """The NOOP after ARRIVING deliveries and a flag change of most of the folder, with a live
    search of flags (its re-check reads records) and one of bodies (light rows), its work
    sliced (three records per read) or in one piece; and each store read of records or rows,
    with the pauses before it."""
    with _opened(path) as conv:
        conv.command("SEARCH RETURN (UPDATE) FLAGGED NOT BODY marker")
        conv.command("UID SEARCH RETURN (UPDATE) BODY marker")
        _deliver(conv)
        folder = conv.folder("INBOX").id
        conv.store.store_flags("alice", folder, list(range(1, FIRST + ARRIVING + 1, 2)), "add", ["\\Flagged"])
        _pieces(monkeypatch, sliced=sliced)
        monkeypatch.setattr(searching, "_RECORDS_PER_READ", 3 if sliced else 10**9)
        pauses = [0]
        reads = {method: _calls_after_pauses(monkeypatch, conv.store, method, pauses)
                 for method in ("messages", "get_messages", "search_rows")}
        return _played(conv.session, b"n1 NOOP\r\n", pauses), reads


def test_a_recheck_reads_the_records_of_what_it_looks_at_in_pieces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flag change of most of the folder has a live search of flags look at most of it again:
    it reads their records in pieces, a PAUSE before each (not the whole folder's in one read),
    as it reads the rows of the many messages that arrived; the lines are those of one piece."""
    whole, _reads = _after_bulk_change(tmp_path / "whole", monkeypatch, sliced=False)
    sliced, reads = _after_bulk_change(tmp_path / "sliced", monkeypatch, sliced=True)
    assert sliced == whole
    assert not reads["messages"]
    total = FIRST + ARRIVING
    changed = {2, 4, *range(1, FIRST + 1, 2)}   # the old messages whose flags changed, and every new one
    for method, looked_at in (("get_messages", sorted(changed.union(range(FIRST + 1, total + 1)))),
                              ("search_rows", range(FIRST + 1, total + 1))):
        calls = reads[method]
        assert [uid for _paused, uids in calls for uid in uids] == list(looked_at), method
        assert all(len(uids) <= 3 for _paused, uids in calls), method
        assert len({paused for paused, _uids in calls}) == len(calls), method   # each after a pause of its own
    flagged = sorted({2, 4, *range(1, total + 1, 2), *range(FIRST + 4, total + 1, 4)})
    assert whole.split(b"\r\n")[-4:] == [
        b'* ESEARCH (TAG "x3") ADDTO (0 ' + encode.sequence_set([n for n in flagged if n % 3]) + b")",
        b'* ESEARCH (TAG "x4") UID ADDTO (0 ' + encode.sequence_set(
            [n for n in range(FIRST + 1, total + 1) if n % 3 == 0]) + b")",
        b"n1 OK NOOP completed", b""]
