"""Flag updates made as they are sent (selected.LazyFlagUpdates) and the search slots
(searching._SearchSlots): what a client is told, and what a search gives back when it ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation, split_responses

from gximap.imap import commands as cmds
from gximap.net.handler import FileRegion, TransportAction
from gximap.session import searching, selected
from gximap.session.base import TimeSlice
from midb.errors import StoreBusy


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def _inbox(conv: Conversation) -> int:
    return conv.folder("INBOX").id


def _seed(conv: Conversation, count: int) -> list[int]:
    uids = [conv.add_message() for _ in range(count)]
    conv.store.claim_recent_range("alice", _inbox(conv))
    return uids


def _pull_one(conv: Conversation) -> bytes:
    """One output item, as the pool takes it (the first chunk of a LazyFlagUpdates)."""
    item = conv.session.next_output()
    assert isinstance(item, (bytes, bytearray, memoryview)), item
    return bytes(item)


def _pull_rest(conv: Conversation) -> list[bytes]:
    out = b""
    while True:
        item = conv.session.next_output()
        if item is None:
            break
        assert not isinstance(item, (TransportAction, FileRegion))
        out += bytes(item)
    return split_responses(out)


def test_a_lazy_line_carries_no_modseq_above_an_expunge_not_yet_reported(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7162 (RFC 5162 erratum 1810): a FETCH MODSEQ must not pass an expunge the client has not
    been told of unless a lower HIGHESTMODSEQ follows. A lazy line reads the flags after the
    catch-up that decided what to report: a message changed again since gets no line there (the
    next catch-up reports it), so that a client resynchronising from the highest MODSEQ it was
    given still learns of the expunge."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    monkeypatch.setattr(selected.LazyFlagUpdates, "PART", 2)
    uids = _seed(conv, 5)
    folder_id = _inbox(conv)
    conv.command("ENABLE QRESYNC")
    conv.select()
    conv.store.store_flags("alice", folder_id, uids[:4], "add", ("\\Seen",))  # another session
    session = conv.session
    session.data_received(b"a1 NOOP\r\n")
    assert session.process(16)
    first = _pull_one(conv)  # the sync ran; lines of messages 1 and 2 are made
    assert first.count(b" FETCH ") == 2
    # Meanwhile another session expunges message 5, then flags message 3.
    conv.store.store_flags("alice", folder_id, [uids[4]], "add", ("\\Deleted",))
    conv.store.expunge("alice", folder_id, [uids[4]])
    conv.store.store_flags("alice", folder_id, [uids[2]], "add", ("\\Flagged",))
    rest = _pull_rest(conv)
    modseqs = [int(line.rsplit(b"MODSEQ (", 1)[1].rstrip(b"))")) for line in split_responses(first) + rest
               if b"MODSEQ" in line]
    told = max(modseqs)
    assert rest[-1].startswith(b"a1 OK")
    # What a QRESYNC client does next time: resynchronise from the highest MODSEQ it was given.
    other = conv.second_session()
    other.login()
    other.command("ENABLE QRESYNC")
    validity = conv.folder("INBOX").uidvalidity
    lines = other.command(f"SELECT INBOX (QRESYNC ({validity} {told} 1:5))")
    assert any(line.startswith(b"* VANISHED (EARLIER) 5") for line in lines), (rest, lines)


_BUSY = "too many concurrent readers"
_DELAYED = b"* NO [UNAVAILABLE] Changes to the mailbox will be reported later: " + _BUSY.encode()


def _flag_rows_busy_at(conv: Conversation, monkeypatch: pytest.MonkeyPatch, call: int) -> list[int]:
    """Make the store's flag_rows raise StoreBusy (reader table full) at its ``call``-th call
    (counting from 1), once; the list returned holds the number of calls so far."""
    flag_rows = conv.store.flag_rows
    calls = [0]

    def busy_once(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise StoreBusy(_BUSY)
        return flag_rows(*args, **kwargs)

    monkeypatch.setattr(conv.store, "flag_rows", busy_once)
    return calls


def test_a_store_error_in_lazy_lines_delays_the_rest_and_loses_nothing(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The catch-up has moved the view's MODSEQ past the changes a LazyFlagUpdates reports. A
    store error while its lines are made (StoreBusy: reader table full, map resized) is met as
    one of the catch-up itself: the client is warned with NO [UNAVAILABLE], the command keeps
    its answer, and the next catch-up sends the lines not sent, numbered as the view is then.
    The error left next_output() and the pool dropped the connection."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    monkeypatch.setattr(selected.LazyFlagUpdates, "PART", 2)
    uids = _seed(conv, 5)
    folder_id = _inbox(conv)
    conv.select()
    conv.store.store_flags("alice", folder_id, uids, "add", ("\\Seen",))  # another session
    calls = _flag_rows_busy_at(conv, monkeypatch, 2)
    caplog.set_level(logging.WARNING, logger="gximap")
    assert conv.send(b"n1 NOOP\r\n") == [b"* 1 FETCH (FLAGS (\\Seen))", b"* 2 FETCH (FLAGS (\\Seen))", _DELAYED,
                                         b"n1 OK NOOP completed"]
    assert calls[0] == 2
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith(f"user=alice catching up with the selected mailbox failed: {_BUSY}")
    # Meanwhile another session expunges message 1 and message 4 (one not reported yet).
    for uid in (uids[0], uids[3]):
        conv.store.store_flags("alice", folder_id, [uid], "add", ("\\Deleted",))
        conv.store.expunge("alice", folder_id, [uid])
    assert conv.send(b"n2 NOOP\r\n") == [b"* 4 EXPUNGE", b"* 1 EXPUNGE", b"* 2 FETCH (FLAGS (\\Seen))",
                                         b"* 3 FETCH (FLAGS (\\Seen))", b"n2 OK NOOP completed"]
    assert conv.send(b"n3 NOOP\r\n") == [b"n3 OK NOOP completed"]


def test_lazy_lines_sent_again_carry_their_modseq(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """CONDSTORE: the lines sent after the error are those the client would have had, MODSEQ
    included; one changed again meanwhile gets its latest state once."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    monkeypatch.setattr(selected.LazyFlagUpdates, "PART", 2)
    uids = _seed(conv, 4)
    folder_id = _inbox(conv)
    conv.command("SELECT INBOX (CONDSTORE)")
    conv.store.store_flags("alice", folder_id, uids, "add", ("\\Seen",))
    _flag_rows_busy_at(conv, monkeypatch, 1)
    assert conv.send(b"n1 NOOP\r\n") == [_DELAYED, b"n1 OK NOOP completed"]
    conv.store.store_flags("alice", folder_id, [uids[2]], "add", ("\\Flagged",))
    modseqs = {meta.uid: meta.modseq for meta in conv.store.messages("alice", folder_id)}
    lines = conv.send(b"n2 NOOP\r\n")
    assert lines == [b"* 3 FETCH (UID 3 FLAGS (\\Flagged \\Seen) MODSEQ (%d))" % modseqs[3],
                     *(b"* %d FETCH (UID %d FLAGS (\\Seen) MODSEQ (%d))" % (n, n, modseqs[n]) for n in (1, 2, 4)),
                     b"n2 OK NOOP completed"], lines


def test_an_idle_push_whose_lazy_lines_meet_a_store_error_is_made_again_by_the_keepalive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IDLE: the lines a store error kept back go out with the next keepalive, as a failed push
    is made again, not at DONE or with the next change only."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    monkeypatch.setattr(selected.LazyFlagUpdates, "PART", 2)
    with Conversation(tmp_path, idle_notify_interval=120.0) as conv:
        conv.login()
        uids = _seed(conv, 3)
        conv.select()
        assert conv.send(b"i1 IDLE\r\n") == [b"+ idling"]
        conv.store.store_flags("alice", _inbox(conv), uids, "add", ("\\Seen",))
        _flag_rows_busy_at(conv, monkeypatch, 2)
        assert conv.wake() == [b"* 1 FETCH (FLAGS (\\Seen))", b"* 2 FETCH (FLAGS (\\Seen))", _DELAYED]
        assert conv.timeout() == [b"* OK Still here", b"* 3 FETCH (FLAGS (\\Seen))"]
        assert conv.timeout() == [b"* OK Still here"]
        assert conv.send(b"DONE\r\n") == [b"i1 OK IDLE terminated"]


# -- search slots ---------------------------------------------------------------------------------



def _msg(subject: bytes) -> bytes:
    return b"From: a@example.org\r\nSubject: %s\r\n\r\nbody\r\n" % subject


def _parked_search(conv: Conversation, tag: bytes = b"s1") -> None:
    session = conv.session
    session.data_received(tag + b" SEARCH SUBJECT 1\r\n")
    assert session.process(16)
    assert session.next_output() is None
    assert not session.process(16)  # parked on the slot


def _search_parked_on_a_slot(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> searching._SearchSlots:
    """A SEARCH of alice's parked on the only slot, which "someone else" holds."""
    slots = searching._SearchSlots(total=1, per_account=1)
    monkeypatch.setattr(searching, "_SLOTS", slots)
    for number in range(3):
        conv.add_message(data=_msg(b"subject %d" % number))
    conv.select()
    assert slots.claim("someone else").done()
    _parked_search(conv)
    return slots


def test_a_client_leaving_while_waiting_for_a_slot_leaks_nothing(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    slots = _search_parked_on_a_slot(conv, monkeypatch)
    conv.session.connection_lost()
    slots.release("someone else")
    assert slots._in_use == 0 and not slots._running and not slots._waiting
    assert slots.claim("x").done()


def test_a_slot_granted_to_a_search_closed_before_it_resumed_is_given_back(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    slots = _search_parked_on_a_slot(conv, monkeypatch)
    slots.release("someone else")  # granted to the parked search, which has not resumed yet
    assert slots._in_use == 1
    conv.session.connection_lost()
    assert slots._in_use == 0 and not slots._running
    assert slots.claim("x").done()


def test_a_slot_goes_back_to_the_slots_it_was_claimed_from(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not to the module's _SLOTS as it is when the search ends (a test swapping it back)."""
    slots = _search_parked_on_a_slot(conv, monkeypatch)
    slots.release("someone else")
    real = searching._SearchSlots(total=8, per_account=2)
    monkeypatch.setattr(searching, "_SLOTS", real)
    conv.session.connection_lost()
    assert slots._in_use == 0 and real._in_use == 0


# -- the lazy path answers as the eager one ---------------------------------------------------------

@pytest.mark.parametrize("lazy_from", [1000, 1])
def test_recent_in_lazy_lines_as_in_eager_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                lazy_from: int) -> None:
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", lazy_from)
    with Conversation(tmp_path) as a:
        uids = [a.add_message() for _ in range(3)]
        a.login()
        a.select()  # A holds \\Recent for all three
        a.store.store_flags("alice", _inbox(a), uids[1:], "add", ("\\Seen",))
        assert a.command("NOOP")[:-1] == [b"* 2 FETCH (FLAGS (\\Seen \\Recent))",
                                          b"* 3 FETCH (FLAGS (\\Seen \\Recent))"]


@contextlib.contextmanager
def _four_selected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   lazy_from: int) -> Iterator[tuple[Conversation, list[int]]]:
    """A session with four messages selected (none \\Recent), updates lazy from ``lazy_from``."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", lazy_from)
    with Conversation(tmp_path) as a:
        uids = _seed(a, 4)
        a.login()
        a.select()
        yield a, uids


@pytest.mark.parametrize("lazy_from", [1000, 1])
def test_own_changes_left_out_of_lazy_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            lazy_from: int) -> None:
    with _four_selected(tmp_path, monkeypatch, lazy_from) as (a, uids):
        a.command("STORE 1:2 +FLAGS.SILENT (\\Flagged)")  # own: not told again
        a.store.store_flags("alice", _inbox(a), [uids[3]], "add", ("\\Seen",))  # foreign
        a.store.store_flags("alice", _inbox(a), [uids[2]], "add", ("\\Seen",))  # foreign
        assert a.command("NOOP")[:-1] == [b"* 3 FETCH (FLAGS (\\Seen))", b"* 4 FETCH (FLAGS (\\Seen))"]


@pytest.mark.parametrize("lazy_from", [1000, 1])
def test_pending_expunge_left_out_of_lazy_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                lazy_from: int) -> None:
    with _four_selected(tmp_path, monkeypatch, lazy_from) as (a, uids):
        folder_id = _inbox(a)
        a.store.store_flags("alice", folder_id, uids, "add", ("\\Seen",))
        a.store.expunge("alice", folder_id, [])  # nothing
        a.store.store_flags("alice", folder_id, [uids[1]], "add", ("\\Deleted",))
        a.store.expunge("alice", folder_id, [uids[1]])
        lines = a.command("FETCH 1 (UID)")  # no EXPUNGE during FETCH
        assert lines[:-1] == [b"* 1 FETCH (UID 1)", b"* 1 FETCH (FLAGS (\\Seen))", b"* 3 FETCH (FLAGS (\\Seen))",
                              b"* 4 FETCH (FLAGS (\\Seen))"], lines
        assert a.command("NOOP")[:-1] == [b"* 2 EXPUNGE"]


def test_folder_deleted_while_lazy_lines_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    with Conversation(tmp_path) as a:
        a.login()
        a.command("CREATE Box")
        folder_id = a.folder("Box").id
        uids = [a.add_message("Box") for _ in range(3)]
        a.store.claim_recent_range("alice", folder_id)
        a.select("Box")
        a.send(b"i IDLE\r\n")
        a.store.store_flags("alice", folder_id, uids, "add", ("\\Seen",))
        a.session.wakeup()  # lazy lines queued, not made
        a.store.delete_folder("alice", "Box")
        lines = a.wake(require=False)
        assert not any(b"FETCH" in line for line in lines), lines


def test_a_search_closed_while_testing_bodies_cancels_the_next_batch_read(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """_evaluate submits batch k+1's read, then tests batch k's bodies (where a BODY search
    spends its time and pauses): closed there, it cancels the read of batch k+1."""
    class Held(Future):  # type: ignore[type-arg]
        """Done only when its result is asked for; records cancel()."""

        def __init__(self, fn: Any, args: Any) -> None:
            super().__init__()
            self.fn, self.args, self.cancelled_by_search = fn, args, False

        def cancel(self) -> bool:
            self.cancelled_by_search = True
            return super().cancel()

        def result(self, timeout: Any = None) -> Any:
            if not self.done():
                self.set_result(self.fn(*self.args))
            return super().result(timeout)

    submitted: list[Held] = []

    class Executor:
        def submit(self, fn: Any, *args: Any) -> Held:
            submitted.append(Held(fn, args))
            return submitted[-1]

    monkeypatch.setattr(searching, "_READ_AHEAD", type("P", (), {"get": staticmethod(lambda: Executor())})())
    monkeypatch.setattr(searching, "_BATCH_MESSAGES", 2)
    for number in range(6):
        conv.add_message(data=_msg(b"s %d" % number))
    conv.select()
    slicer = TimeSlice(seconds=-1.0)  # over at once: a pause before every message
    steps = searching.search_sliced(conv.session, cmds.SearchText("BODY", "body"), slicer)
    next(steps)  # paused in batch 1's body tests, batch 2's read submitted
    assert len(submitted) == 2 and submitted[0].done() and not submitted[1].done()
    steps.close()
    assert submitted[1].cancelled_by_search, "the read of the next batch goes on for nothing"
