"""Bulk writes in pieces (gximap.session.pieces): STORE, COPY, MOVE, EXPUNGE and CLOSE over many
messages commit a piece per write transaction, written off the session's worker (an Await); the
answers are those of one transaction, and a failure part-way leaves what each command promises."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, cast

import pytest
from conversation import Conversation, drive
from store_helpers import FailingSync

from gximap.imap.codes import Code
from gximap.session import pieces
from gximap.session.base import Await
from midb import errors as midb_errors
from midb.blobs import PoolClosed, ProcessPool
from midb.store import Store

MESSAGES = 40


class StepWriters:
    """Stands in for pieces.BULK_WRITERS: work submitted waits in ``queue`` until ``run_next``
    (or, with ``at_once``, runs in submit(), its future done when returned)."""

    def __init__(self, *, at_once: bool) -> None:
        self.at_once = at_once
        self.queue: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def get(self) -> StepWriters:
        return self

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.queue.append((future, function, args))
        if self.at_once:
            self.run_next()
        return future

    def run_next(self) -> None:
        future, function, args = self.queue.pop(0)
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function(*args))
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting session
            future.set_exception(error)


@pytest.fixture()
def writers(monkeypatch: pytest.MonkeyPatch) -> StepWriters:
    stand_in = StepWriters(at_once=True)
    monkeypatch.setattr(pieces, "BULK_WRITERS", stand_in)
    return stand_in


@pytest.fixture()
def small_pieces(monkeypatch: pytest.MonkeyPatch, writers: StepWriters) -> None:
    """Pieces of 3 to 7 messages, so that a few dozen messages make several."""
    monkeypatch.setattr(pieces, "FIRST_PIECE", 5)
    monkeypatch.setattr(pieces, "MIN_PIECE", 3)
    monkeypatch.setattr(pieces, "MAX_PIECE", 7)


@pytest.fixture()
def conv(tmp_path: Path, small_pieces: None) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        for number in range(1, MESSAGES + 1):
            conversation.add_message(flags=("\\Deleted",) if number % 3 == 0 else ())
        conversation.command("CREATE Other")
        conversation.select()
        yield conversation


@pytest.fixture()
def write_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[int]]]:
    """The UIDs each store write of the commands was given, per store method."""
    calls: dict[str, list[list[int]]] = {}
    for name in ("store_flags", "copy", "move", "expunge_tombstones", "remove_messages"):
        original = getattr(Store, name)

        def recording(self: Store, account: str, folder_id: int, uids: Sequence[int], *args: Any,
                      _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            calls.setdefault(_name, []).append(list(uids))
            return _original(self, account, folder_id, uids, *args, **kwargs)

        monkeypatch.setattr(Store, name, recording)
    return calls


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, name: str, number: int, error: Exception) -> None:
    """Store.<name> raises ``error`` on its ``number``-th call (1-based), else works."""
    original = getattr(Store, name)
    count = 0

    def failing(self: Store, *args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if count == number:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, name, failing)


def _uids(conv: Conversation, mailbox: str) -> list[int]:
    return conv.store.uids("alice", conv.folder(mailbox).id)


def _sequence(text: bytes) -> list[int]:
    out: list[int] = []
    for part in text.split(b","):
        first, _, last = part.partition(b":")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def _applied(view: list[int], expunges: list[bytes]) -> list[int]:
    """The UIDs a client holds after applying ``* n EXPUNGE`` responses in order."""
    view = list(view)
    for line in expunges:
        assert line.endswith(b" EXPUNGE"), line
        del view[int(line.split()[1]) - 1]
    return view


def _run(steps: Generator[Any, Any, None]) -> list[Any]:
    """What a piece loop yields, each Await answered with its (done) future's result."""
    out: list[Any] = []
    reply = None
    while True:
        try:
            item = steps.send(reply)
        except StopIteration:
            return out
        out.append(item)
        reply = item.future.result() if isinstance(item, Await) else None


# ---- the piece loop --------------------------------------------------------------------------------


def test_pieces_cover_the_items_in_order_written_off_the_worker(
        monkeypatch: pytest.MonkeyPatch, writers: StepWriters) -> None:
    seen: list[list[int]] = []
    clock = iter(range(0, 10_000))
    # Every piece takes 10 ms by this clock: the next is sized to take PIECE_SECONDS (20 ms
    # here), twice as many items, within the bounds.
    monkeypatch.setattr(pieces.time, "monotonic", lambda: next(clock) * 0.01)
    monkeypatch.setattr(pieces, "PIECE_SECONDS", 0.02)
    monkeypatch.setattr(pieces, "FIRST_PIECE", 4)
    monkeypatch.setattr(pieces, "MIN_PIECE", 2)
    monkeypatch.setattr(pieces, "MAX_PIECE", 16)
    on_worker = threading.get_ident()

    def write(piece: Sequence[int]) -> int:
        seen.append(list(piece))
        return len(piece)

    def report(piece: Sequence[int], written: int) -> list[bytes]:
        assert threading.get_ident() == on_worker and written == len(piece)
        return [b"piece %d\r\n" % written]

    items = list(range(100))
    out = _run(pieces.in_pieces(items, write, report))
    sizes = [len(piece) for piece in seen]
    assert sizes == [4, 8, 16, 16, 16, 16, 16, 8]
    assert [item for piece in seen for item in piece] == items
    # Each piece is awaited (written by BULK_WRITERS), then its lines are sent.
    assert [item if isinstance(item, bytes) else "await" for item in out] == \
        [value for size in sizes for value in ("await", b"piece %d\r\n" % size)]
    assert not writers.queue


def test_a_set_of_one_piece_is_written_on_the_worker(writers: StepWriters) -> None:
    seen: list[list[int]] = []

    def write(piece: Sequence[int]) -> None:
        seen.append(list(piece))

    def report(piece: Sequence[int], _result: None) -> list[bytes]:
        return [b"done\r\n"]

    assert _run(pieces.in_pieces(list(range(pieces.FIRST_PIECE)), write, report)) == [b"done\r\n"]
    assert seen == [list(range(pieces.FIRST_PIECE))]
    assert _run(pieces.in_pieces([], write, report)) == [] and len(seen) == 1   # nothing: no write
    assert not writers.queue   # no thread involved


def test_a_slow_piece_makes_the_next_one_smaller_but_not_below_the_minimum(
        monkeypatch: pytest.MonkeyPatch, writers: StepWriters) -> None:
    ticks = iter([0.0, 100.0, 100.0, 100.000001, 200.0, 200.000001, 300.0, 300.0])   # 100 s, then 1 µs
    monkeypatch.setattr(pieces.time, "monotonic", lambda: next(ticks))
    seen: list[int] = []

    def write(piece: Sequence[int]) -> None:
        seen.append(len(piece))

    items = list(range(pieces.FIRST_PIECE + pieces.MIN_PIECE + pieces.MAX_PIECE + 1))
    _run(pieces.in_pieces(items, write, lambda _p, _r: ()))
    assert seen[:3] == [pieces.FIRST_PIECE, pieces.MIN_PIECE, pieces.MAX_PIECE]


def test_a_loop_closed_while_a_piece_runs_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Closed (the client left) while BULK_WRITERS writes a piece: close() returns once that
    piece is done, so the caller's clean-up knows everything written."""
    monkeypatch.setattr(pieces, "FIRST_PIECE", 2)
    release = threading.Event()
    written: list[list[int]] = []

    def write(piece: Sequence[int]) -> None:
        release.wait(10)
        written.append(list(piece))

    steps = pieces.in_pieces(list(range(10)), write, lambda _p, _r: ())
    first = steps.send(None)
    assert isinstance(first, Await)
    while not first.future.running():
        threading.Event().wait(0.001)
    threading.Timer(0.2, release.set).start()
    steps.close()
    assert written == [[0, 1]] and first.future.done()


def test_a_piece_not_started_when_the_loop_is_closed_never_runs(writers: StepWriters) -> None:
    writers.at_once = False
    written: list[list[int]] = []
    steps = pieces.in_pieces(list(range(pieces.FIRST_PIECE + 1)), lambda piece: written.append(list(piece)),
                             lambda _p, _r: ())
    assert isinstance(steps.send(None), Await)
    steps.close()
    writers.run_next()   # the executor gets to it after all: cancelled
    assert written == []


# ---- the commands ----------------------------------------------------------------------------------


def test_store_in_pieces_answers_as_one_transaction_without_holding_the_worker(
        conv: Conversation, writers: StepWriters, write_calls: dict[str, list[list[int]]]) -> None:
    writers.at_once = False
    session = conv.session
    session.data_received(b"s1 STORE 1:* +FLAGS (\\Flagged)\r\nn1 NOOP\r\n")
    assert session.process(16)
    assert session.next_output() is None
    assert not session.process(16)   # parked on the first piece: no worker held
    wakes = conv.wakes
    writers.run_next()
    assert conv.wakes == wakes + 1 and write_calls["store_flags"] == [[1, 2, 3, 4, 5]]
    assert session.process(16)
    first = []
    while (item := session.next_output()) is not None:
        first.append(bytes(item))  # type: ignore[arg-type]
    assert len(first) == pieces.FIRST_PIECE   # its FETCH responses, then the next piece's wait
    writers.at_once = True
    writers.run_next()
    rest, _pauses = drive(session)
    lines = (b"".join(first) + rest).decode().split("\r\n")
    assert len(write_calls["store_flags"]) >= 6
    assert [uid for call in write_calls["store_flags"] for uid in call] == list(range(1, MESSAGES + 1))
    fetches = [line for line in lines if " FETCH " in line]
    assert len(fetches) == MESSAGES
    assert fetches[0] == "* 1 FETCH (FLAGS (\\Flagged \\Recent))"
    assert fetches[2] == "* 3 FETCH (FLAGS (\\Deleted \\Flagged \\Recent))"
    assert [int(line.split()[1]) for line in fetches] == list(range(1, MESSAGES + 1))
    assert lines[-3:] == ["s1 OK STORE completed", "n1 OK NOOP completed", ""]
    flagged = [meta for meta in conv.store.messages("alice", conv.folder("INBOX").id)
               if "\\Flagged" in meta.flags]
    assert len(flagged) == MESSAGES


def test_store_unchangedsince_across_pieces_lists_every_modified_message(conv: Conversation) -> None:
    folder = conv.folder("INBOX").id
    top = max(meta.modseq for meta in conv.store.messages("alice", folder))
    for uid in (2, 17, 33):   # changed after the client's UNCHANGEDSINCE
        conv.store.store_flags("alice", folder, [uid], "add", ["$Later"])
    answer = conv.send(b"u1 STORE 1:* (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Seen)\r\n" % top)
    assert answer[-1].startswith(b"u1 OK [MODIFIED 2,17,33] ")
    seen = [meta.uid for meta in conv.store.messages("alice", folder) if "\\Seen" in meta.flags]
    assert seen == [uid for uid in range(1, MESSAGES + 1) if uid not in (2, 17, 33)]


def test_store_of_messages_expunged_meanwhile_ends_in_expungeissued(conv: Conversation) -> None:
    folder = conv.folder("INBOX").id
    conv.store.expunge("alice", folder, [30])   # \Deleted, gone, not announced to the session
    answer = conv.send(b"s1 STORE 1:* +FLAGS (\\Answered)\r\n")
    assert answer[-1].startswith(b"s1 NO [EXPUNGEISSUED]")
    assert sum(1 for line in answer if b" FETCH " in line) == MESSAGES - 1


def test_copy_in_pieces_copies_everything_with_one_copyuid(
        conv: Conversation, write_calls: dict[str, list[list[int]]]) -> None:
    answer = conv.command("COPY 1:* Other")
    assert len(write_calls["copy"]) >= 6
    found = re.search(rb"\[COPYUID \d+ (\S+) (\S+)\]", answer[-1])
    assert found is not None
    assert _sequence(found.group(1)) == list(range(1, MESSAGES + 1))
    assert _sequence(found.group(2)) == list(range(1, MESSAGES + 1))
    assert _uids(conv, "Other") == list(range(1, MESSAGES + 1))


def test_a_conversation_writes_pieces_inline_without_a_stand_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pieces, "FIRST_PIECE", 5)
    assert isinstance(pieces.BULK_WRITERS, ProcessPool)   # the real threads, no stand-in
    with Conversation(tmp_path) as conversation:
        conversation.login()
        for _number in range(12):
            conversation.add_message()
        conversation.command("CREATE Other")
        conversation.select()
        answer = conversation.command("COPY 1:* Other")
        assert re.search(rb"\[COPYUID \d+ 1:12 1:12\]", answer[-1])
    assert isinstance(pieces.BULK_WRITERS, ProcessPool)   # put back


def test_a_copy_failing_part_way_leaves_the_destination_as_it_was(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, write_calls: dict[str, list[list[int]]]) -> None:
    used_before = conv.store.usage("alice")
    other = conv.folder("Other")
    _fail_on_call(monkeypatch, "copy", 3, midb_errors.OverQuota("STORAGE"))
    answer = conv.send(b"c1 COPY 1:* Other\r\n")
    assert answer[-1].startswith(b"c1 NO [OVERQUOTA]")
    assert _uids(conv, "Other") == []
    # The copies of the two pieces made are removed in pieces too.
    removed = write_calls["remove_messages"]
    copies = sum(len(part) for part in write_calls["copy"][:2])
    assert len(removed) > 1 and all(len(part) <= pieces.FIRST_PIECE for part in removed)
    assert sorted(uid for part in removed for uid in part) == list(range(1, copies + 1))
    assert conv.store.usage("alice") == used_before
    assert _uids(conv, "INBOX") == list(range(1, MESSAGES + 1))
    # The copies were removed as expunged: a later COPY gets new UIDs.
    answer = conv.command("COPY 1 Other")
    assert re.search(rb"\[COPYUID \d+ 1 (\d+)\]", answer[-1]).group(1) != b"1"   # type: ignore[union-attr]
    assert conv.folder("Other").uidvalidity == other.uidvalidity


def _deliver_after_each_piece(monkeypatch: pytest.MonkeyPatch, conv: Conversation) -> list[str]:
    """Store.copy, after each piece it writes, delivers a message to the INBOX (as LMTP would
    between two pieces of a COPY); the outcome of each delivery is listed."""
    original = Store.copy
    outcomes: list[str] = []

    def copy_then_deliver(self: Store, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        try:
            conv.add_message()
            outcomes.append("delivered")
        except midb_errors.OverQuota:
            outcomes.append("refused")
        return result

    monkeypatch.setattr(Store, "copy", copy_then_deliver)
    return outcomes


@pytest.mark.parametrize("resource", ["MESSAGE", "STORAGE"])
def test_a_copy_the_quota_cannot_take_as_a_whole_is_refused_before_any_piece(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, resource: str) -> None:
    # Room for all but one of the copies: each piece alone fits, the set does not. Written
    # piece by piece, the copies took the room of deliveries until a later piece was refused
    # and all was undone; now nothing is written, and the account's room stays for mail.
    used_bytes, used_messages = conv.store.usage("alice")
    if resource == "MESSAGE":
        conv.store.update_account("alice", quota_messages=2 * used_messages - 1)
    else:
        conv.store.update_account("alice", quota_bytes=2 * used_bytes - 1)
    deliveries = _deliver_after_each_piece(monkeypatch, conv)
    answer = conv.send(b"c1 COPY 1:* Other\r\n")
    assert answer[-1].startswith(b"c1 NO [OVERQUOTA]")
    assert deliveries == []   # no piece was written
    assert _uids(conv, "Other") == []
    assert conv.store.usage("alice") == (used_bytes, used_messages)
    conv.add_message()   # the room the COPY could not use is there for mail


def test_a_copy_the_quota_takes_exactly_is_written_and_each_piece_still_checks_itself(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    used_bytes, used_messages = conv.store.usage("alice")
    conv.store.update_account("alice", quota_messages=2 * used_messages)
    conv.command("COPY 1:* Other")   # (asserts the OK) the check ahead lets the exact fit pass
    assert _uids(conv, "Other") == list(range(1, MESSAGES + 1))
    # Room for exactly the set again: the check ahead passes, but a delivery after the first
    # piece takes a place; the piece that then meets the limit is refused, the COPY undone.
    conv.store.update_account("alice", quota_messages=3 * used_messages)
    deliveries = _deliver_after_each_piece(monkeypatch, conv)
    answer = conv.send(b"c1 COPY 1:* Other\r\n")
    assert answer[-1].startswith(b"c1 NO [OVERQUOTA]")
    assert deliveries[0] == "delivered"
    assert _uids(conv, "Other") == list(range(1, MESSAGES + 1))   # the copies of the first COPY alone


def test_a_copy_whose_client_leaves_part_way_is_undone(conv: Conversation, writers: StepWriters) -> None:
    writers.at_once = False
    session = conv.session
    session.data_received(b"c1 COPY 1:* Other\r\n")
    session.process(16)
    assert session.next_output() is None
    writers.run_next()           # the first piece is written
    session.process(16)
    assert session.next_output() is None   # waiting for the second
    assert len(_uids(conv, "Other")) == pieces.FIRST_PIECE
    session.connection_lost()    # returns at once: the removal is the writers' work
    assert len(_uids(conv, "Other")) == pieces.FIRST_PIECE
    writers.run_next()           # the second piece was cancelled: it copies nothing
    assert len(_uids(conv, "Other")) == pieces.FIRST_PIECE
    writers.run_next()           # the removal of the first piece's copies
    assert _uids(conv, "Other") == [] and not writers.queue


@pytest.mark.parametrize("mailboxes", [b"1:*", b"1:3"], ids=["in pieces", "one piece"])
def test_a_copy_whose_flush_fails_part_way_leaves_the_destination_as_it_was(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, mailboxes: bytes) -> None:
    """A piece whose commit stands but whose flush failed raises NotDurable (a power failure may
    undo it): the COPY is answered NO, so its copies, that piece's too, are removed (RFC 3501
    section 6.4.7), not left for the client to find after it was told nothing was copied."""
    calls = _flush_fails_at(conv, monkeypatch, "copy", 2 if mailboxes == b"1:*" else 1)
    answer = conv.send(b"c1 COPY " + mailboxes + b" Other\r\n")
    assert answer[-1].startswith(b"c1 NO [UNAVAILABLE]")
    assert len(calls) == (2 if mailboxes == b"1:*" else 1)
    assert _uids(conv, "Other") == []
    assert _uids(conv, "INBOX") == list(range(1, MESSAGES + 1))


def test_the_removal_of_a_failed_copy_goes_on_past_a_piece_whose_flush_failed(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, write_calls: dict[str, list[list[int]]]) -> None:
    """That removal stands (NotDurable: committed, not flushed), as the copies did: the next
    pieces are removed too, rather than left for the client to find."""
    _fail_on_call(monkeypatch, "copy", 3, midb_errors.OverQuota("STORAGE"))
    original = Store.remove_messages

    def removed_unflushed(self: Store, *args: Any, **kwargs: Any) -> Any:
        original(self, *args, **kwargs)
        raise midb_errors.NotDurable("the index could not be flushed to disk: the change may be lost")

    monkeypatch.setattr(Store, "remove_messages", removed_unflushed)
    answer = conv.send(b"c1 COPY 1:* Other\r\n")
    assert answer[-1].startswith(b"c1 NO [OVERQUOTA]")
    assert _uids(conv, "Other") == []
    assert len(write_calls["remove_messages"]) > 1


def _copy_failing_at_the_second_piece(conv: Conversation, monkeypatch: pytest.MonkeyPatch,
                                      writers: StepWriters) -> Any:
    """``c1 COPY 1:* Other`` with writers run step by step: the first piece is written, the
    second fails (OVERQUOTA). Returns the session, its failure not yet handled."""
    writers.at_once = False
    _fail_on_call(monkeypatch, "copy", 2, midb_errors.OverQuota("STORAGE"))
    session = conv.session
    session.data_received(b"c1 COPY 1:* Other\r\n")
    for _piece in range(2):
        session.process(16)
        assert session.next_output() is None
        writers.run_next()
    return session


def test_a_failed_copy_answers_once_its_copies_are_removed_off_the_worker(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, writers: StepWriters) -> None:
    session = _copy_failing_at_the_second_piece(conv, monkeypatch, writers)
    session.process(16)
    assert session.next_output() is None   # the removal is queued for the writers, and awaited
    assert len(_uids(conv, "Other")) == pieces.FIRST_PIECE
    writers.run_next()
    answer = conv.send(b"")
    assert answer[-1].startswith(b"c1 NO [OVERQUOTA]")
    assert _uids(conv, "Other") == []


@pytest.mark.parametrize("error", [midb_errors.NoSuchFolder("gone meanwhile"), OSError(5, "gone meanwhile")],
                         ids=["store", "other"])
def test_copies_that_cannot_be_removed_are_logged_and_the_copy_answers_its_own_error(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        error: Exception) -> None:
    _fail_on_call(monkeypatch, "copy", 3, midb_errors.OverQuota("STORAGE"))
    _fail_on_call(monkeypatch, "remove_messages", 1, error)
    answer = conv.send(b"c1 COPY 1:* Other\r\n")
    assert answer[-1].startswith(b"c1 NO [OVERQUOTA]")
    assert "copies of a failed COPY were not all removed" in caplog.text and "gone meanwhile" in caplog.text
    assert 0 < len(_uids(conv, "Other")) < MESSAGES   # left, and logged
    assert conv.command("NOOP")[-1].endswith(b"NOOP completed")   # the session goes on


def test_a_copy_cut_short_after_the_daemon_stopped_the_writers_leaves_its_copies_logged(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, writers: StepWriters,
        caplog: pytest.LogCaptureFixture) -> None:
    # A worker that outlived the stop's grace period: the bulk writers are closed for good (the
    # store closes next), so the removal is not handed over; the copies stay, and the log says so.
    _copy_failing_at_the_second_piece(conv, monkeypatch, writers)

    def closed() -> StepWriters:
        raise PoolClosed("the bulk-write threads are stopped")

    monkeypatch.setattr(writers, "get", closed)
    answer = conv.send(b"")
    assert answer[-1].startswith(b"c1 NO [OVERQUOTA]")   # answered at once, nothing awaited
    assert not writers.queue
    assert len(_uids(conv, "Other")) == pieces.FIRST_PIECE
    assert f"the {pieces.FIRST_PIECE} copies of an interrupted COPY were left in place" in caplog.text


def test_move_in_pieces_reports_one_copyuid_and_every_expunge(
        conv: Conversation, write_calls: dict[str, list[list[int]]]) -> None:
    answer = conv.command("MOVE 2:* Other")
    assert len(write_calls["move"]) >= 6
    found = re.search(rb"^\* OK \[COPYUID \d+ (\S+) (\S+)\]", answer[0])
    assert found is not None and _sequence(found.group(1)) == list(range(2, MESSAGES + 1))
    assert _applied(list(range(1, MESSAGES + 1)), answer[1:-1]) == [1]
    assert _uids(conv, "INBOX") == [1]
    assert _uids(conv, "Other") == list(range(1, MESSAGES))


def test_a_move_failing_part_way_reports_what_it_moved_then_no(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on_call(monkeypatch, "move", 3, midb_errors.StoreBusy("busy"))
    answer = conv.send(b"m1 UID MOVE 1:* Other\r\n")
    moved = _uids(conv, "Other")
    assert 0 < len(moved) < MESSAGES
    found = re.search(rb"^\* OK \[COPYUID \d+ (\S+) (\S+)\]", answer[0])
    assert found is not None and _sequence(found.group(2)) == moved
    sources = _sequence(found.group(1))
    assert answer[-1].startswith(b"m1 NO [UNAVAILABLE]")
    left = [uid for uid in range(1, MESSAGES + 1) if uid not in sources]
    assert _applied(list(range(1, MESSAGES + 1)), answer[1:-1]) == left
    assert _uids(conv, "INBOX") == left
    # Every message is in exactly one of the two mailboxes.
    assert len(_uids(conv, "INBOX")) + len(moved) == MESSAGES


def _flush_fails_at(conv: Conversation, monkeypatch: pytest.MonkeyPatch, method: str,
                    number: int) -> list[int]:
    """Store.``method``'s ``number``-th call (1-based) commits but its flush fails (NotDurable);
    the calls made are counted in the list returned (its length)."""
    monkeypatch.setattr(conv.store, "fsync", True)   # durable writes: each is flushed after its commit
    shared = conv.store._shared
    original = getattr(Store, method)
    calls: list[int] = []

    def with_a_failing_flush(self: Store, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) != number:
            return original(self, *args, **kwargs)
        environment = shared.env
        shared.env = cast(Any, FailingSync(environment))
        try:
            return original(self, *args, **kwargs)
        finally:
            shared.env = environment

    monkeypatch.setattr(Store, method, with_a_failing_flush)
    return calls


@pytest.mark.parametrize(("mailboxes", "failing"), [(b"1:*", 2), (b"1:3", 1)], ids=["in pieces", "one piece"])
def test_a_move_whose_flush_fails_reports_the_messages_it_moved_then_no(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, mailboxes: bytes, failing: int) -> None:
    """A piece whose commit stands but whose flush failed (NotDurable) has moved its messages: a
    power failure may undo that, but until then they are in the target only. The client is told
    so (COPYUID and EXPUNGE for them, as for the pieces before), then NO [UNAVAILABLE] (RFC 6851
    section 3.3: a NO does not say nothing moved), so that its picture is the store's."""
    calls = _flush_fails_at(conv, monkeypatch, "move", failing)
    answer = conv.send(b"m1 UID MOVE " + mailboxes + b" Other\r\n")
    assert len(calls) == failing   # no piece after the one that failed
    # Not "try again later": the messages reported moved are moved, but not safely on disk.
    assert answer[-1] == b"m1 NO [UNAVAILABLE] " + conv.session.text(Code.NO_MOVE_NOT_DURABLE)
    moved = _uids(conv, "Other")
    # That piece stands: all three, or the first piece and more (the second's size varies).
    assert len(moved) == 3 if failing == 1 else len(moved) > pieces.FIRST_PIECE
    found = re.search(rb"^\* OK \[COPYUID \d+ (\S+) (\S+)\]", answer[0])
    assert found is not None and _sequence(found.group(2)) == moved
    sources = _sequence(found.group(1))
    left = [uid for uid in range(1, MESSAGES + 1) if uid not in sources]
    assert _applied(list(range(1, MESSAGES + 1)), answer[1:-1]) == left
    assert _uids(conv, "INBOX") == left
    assert len(left) + len(moved) == MESSAGES   # each message in exactly one of the two mailboxes
    # Nothing is announced again: the session's picture already is the store's.
    assert not any(b"EXPUNGE" in line for line in conv.command("NOOP"))


def test_expunge_in_pieces_keeps_every_number_valid(
        conv: Conversation, write_calls: dict[str, list[list[int]]]) -> None:
    deleted = [uid for uid in range(1, MESSAGES + 1) if uid % 3 == 0]
    answer = conv.command("EXPUNGE")
    # The pieces hold only \Deleted messages (from the flag index), not every message named.
    assert [uid for call in write_calls["expunge_tombstones"] for uid in call] == deleted
    assert len(write_calls["expunge_tombstones"]) >= 2
    view = _applied(list(range(1, MESSAGES + 1)), answer[:-1])
    assert view == [uid for uid in range(1, MESSAGES + 1) if uid % 3]
    assert _uids(conv, "INBOX") == view


def test_uid_expunge_in_pieces_with_qresync_sends_vanished(conv: Conversation) -> None:
    conv.command("UNSELECT")
    conv.command("ENABLE QRESYNC")
    conv.select()
    answer = conv.command("UID EXPUNGE 1:30")
    gone = [uid for line in answer[:-1] for uid in _sequence(line.split()[2])]
    assert all(line.startswith(b"* VANISHED ") for line in answer[:-1])
    assert gone == [uid for uid in range(1, 31) if uid % 3 == 0]
    assert b" OK [HIGHESTMODSEQ " in answer[-1]


def test_close_expunges_in_pieces(conv: Conversation, write_calls: dict[str, list[list[int]]]) -> None:
    conv.command("CLOSE")
    assert len(write_calls["expunge_tombstones"]) >= 2
    assert _uids(conv, "INBOX") == [uid for uid in range(1, MESSAGES + 1) if uid % 3]
