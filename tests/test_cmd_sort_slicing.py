"""SORT, ESORT and THREAD computed in slices (gximap.session.base.TimeSlice): the values are read
a stretch of UIDs at a time and ordered or threaded in pieces, with PAUSE between them once a
slice is over. Sliced (every look at the clock pauses, every piece a few dozen messages) or in
one piece, the answers are the same; a command closed while paused leaves the process's sort
columns as they were, and the collector on."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from conversation import Conversation
from store_helpers import record_sort_reads

from gximap.net.handler import TransportAction
from gximap.session import base, searching, selected, sorting
from gximap.session.base import PAUSE, TimeSlice
from gximap.session.commands import sort as sort_command
from gximap.session.commands import thread as thread_command

MESSAGES = 1500
SUBJECTS = ["Budget", "Re: budget", "Fwd: Budget", "[team] Lunch", "lunch", "Re: [team] lunch", "Offsite",
            "", "Zebra crossing", "Äpfel"]
SENDERS = ["Zoe <zoe@example.org>", "adam@example.org", '"Mike" <mike@example.org>',
           "=?utf-8?q?=C3=89mile?= <emile@example.org>", "bob@example.org"]
SORTS = [
    "SORT (SUBJECT) UTF-8 ALL",
    "SORT (REVERSE DATE) UTF-8 ALL",
    "UID SORT (FROM REVERSE SUBJECT) UTF-8 ALL",
    "SORT (ARRIVAL) UTF-8 ALL",
    "SORT (REVERSE SIZE CC) UTF-8 ALL",
    "SORT (DISPLAYFROM TO) UTF-8 ALL",
    "SORT RETURN (MIN MAX COUNT ALL) (SUBJECT DATE) UTF-8 ALL",
    "UID SORT (SUBJECT) UTF-8 UNSEEN",
    "SORT (REVERSE DATE) UTF-8 1:700",
    "SORT RETURN (MIN PARTIAL -1200:-100 COUNT) (SUBJECT DATE) UTF-8 ALL",  # RFC 9394
    "UID SORT RETURN (SAVE PARTIAL 1:300) (REVERSE DATE) UTF-8 UNSEEN",
]
THREADS = [
    "THREAD REFERENCES UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 ALL",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "THREAD REFERENCES UTF-8 SEEN",
]


def _message(rng: random.Random, number: int) -> bytes:
    """A message of a folder of conversations: shared and reply subjects, a few senders, dates
    out of arrival order (some missing), Message-IDs (some missing or duplicated) and
    References / In-Reply-To naming earlier, later and missing messages."""
    lines = [f"From: {rng.choice(SENDERS)}", f"To: user{rng.randrange(40)}@example.org"]
    if rng.random() < 0.5:
        lines.append(f"Cc: Person {rng.randrange(30)} <p{rng.randrange(30)}@example.org>")
    lines.append(f"Subject: {rng.choice(SUBJECTS)} {rng.randrange(25) if rng.random() < 0.6 else ''}".rstrip())
    if rng.random() < 0.9:
        sent = datetime.fromtimestamp(1_600_000_000 + rng.randrange(10**7), UTC)
        lines.append(f"Date: {format_datetime(sent)}")
    if rng.random() < 0.95:
        lines.append(f"Message-ID: <m{number if rng.random() < 0.97 else number - 1}@example.org>")
    parents = [f"<m{rng.randrange(max(1, number - 50), number + 20)}@example.org>"
               for _ in range(rng.choice([0, 0, 1, 2, 4]))]
    if rng.random() < 0.1:
        parents.insert(0, f"<gone{rng.randrange(100)}@example.org>")
    if parents:
        lines.append(("References: " if rng.random() < 0.8 else "In-Reply-To: ") + " ".join(parents))
    return ("\r\n".join(lines) + "\r\n\r\n" + "x" * rng.randrange(200) + "\r\n").encode()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conversation]:
    """A folder of MESSAGES messages, selected; its sort columns are cleared by each test."""
    rng = random.Random(5256)
    with Conversation(tmp_path_factory.mktemp("sort-slicing")) as conversation:
        conversation.login()
        info = conversation.folder("INBOX")
        conversation.store.append_many("alice", info.id, [
            (_message(rng, number), ("\\Seen",) if rng.random() < 0.5 else (), 1_500_000_000 + rng.randrange(10**6), 0)
            for number in range(1, MESSAGES + 1)])
        conversation.select()
        yield conversation


@pytest.fixture
def conv(folder: Conversation) -> Iterator[Conversation]:
    folder.ctx.sort_columns.clear()
    yield folder
    folder.ctx.sort_columns.clear()


def _small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many pieces of a few dozen messages: reads, ranks, the threading loops, ESORT's ALL."""
    monkeypatch.setattr(sorting, "_UIDS_PER_READ", 97)
    monkeypatch.setattr(sorting, "_NODES_PER_LOOK", 31)
    monkeypatch.setattr(sorting, "_VALUES_PER_LOOK", 61)
    monkeypatch.setattr(sort_command, "_NUMBERS_PER_LOOK", 53)
    monkeypatch.setattr(selected, "_NUMBERS_PER_LOOK", 53)


def _one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_UIDS_PER_READ", "_NODES_PER_LOOK", "_VALUES_PER_LOOK"):
        monkeypatch.setattr(sorting, name, 10**9)
    monkeypatch.setattr(sort_command, "_NUMBERS_PER_LOOK", 10**9)
    monkeypatch.setattr(selected, "_NUMBERS_PER_LOOK", 10**9)


def _another_session(conv: Conversation) -> Any:
    """A second session of alice's with INBOX selected (the one a test leaves mid-command)."""
    other = conv.second_session()
    other.login()
    other.select()
    return other.session


def _drive(session: Any, command: bytes) -> tuple[bytes, int]:
    """Play the pool until the command is answered: (output, times it paused with nothing to
    send). The collector must be on whenever the command has given its worker back."""
    session.data_received(command)
    out: list[bytes] = []
    pauses = 0
    for _ in range(1_000_000):
        more = session.process(16)
        produced = False
        while (item := session.next_output()) is not None:
            out.append(bytes(item))
            produced = True
        assert gc.isenabled()
        if not more:
            return b"".join(out), pauses
        if not produced:
            pauses += 1
    raise AssertionError("the command did not end")


def _answers(conv: Conversation, commands: list[str]) -> list[tuple[bytes, int]]:
    """Each command's output and pauses, from cold sort columns, then from warm ones."""
    answers = []
    for command in commands:
        conv.ctx.sort_columns.clear()
        answers.append(_drive(conv.session, b"c " + command.encode() + b"\r\n"))
        answers.append(_drive(conv.session, b"c " + command.encode() + b"\r\n"))
    return answers


@pytest.mark.parametrize("commands", [SORTS, THREADS], ids=["sort", "thread"])
def test_sliced_answers_are_the_unsliced_ones(conv: Conversation, monkeypatch: pytest.MonkeyPatch,
                                              commands: list[str]) -> None:
    """Every piece a few dozen messages and every look at the clock a pause, or all of it in
    one piece that never pauses: the same answers, cold and from the columns."""
    _one_piece(monkeypatch)
    monkeypatch.setattr(base, "SLICE_SECONDS", 3600.0)
    whole = _answers(conv, commands)
    assert all(pauses == 0 and out.endswith(b" completed\r\n") and b"\r\nc OK " in out for out, pauses in whole)
    _small_pieces(monkeypatch)
    monkeypatch.setattr(base, "SLICE_SECONDS", 0.0)
    sliced = _answers(conv, commands)
    assert [out for out, _pauses in sliced] == [out for out, _pauses in whole]
    # Cold, a command reads its values in many pieces, each after a pause.
    assert all(pauses > 8 for _out, pauses in sliced[::2])
    assert min(pauses for (_out, pauses), command in zip(sliced[::2], commands, strict=True)
               if command.endswith(" ALL")) > MESSAGES // 97


def test_new_and_expunged_mail_merge_into_columns_as_unsliced(conv: Conversation,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Columns filled, then messages arrive and one leaves: the sliced reads of what the
    columns lack give the answers a fresh unsliced computation gives."""
    commands = ["SORT (SUBJECT DATE) UTF-8 ALL", "UID SORT (REVERSE FROM) UTF-8 ALL", "THREAD REFERENCES UTF-8 ALL"]
    # A folder of its own: the module's INBOX stays as the other tests expect it.
    session = conv.second_session()
    session.login()
    session.command("CREATE Incoming")
    folder_id = session.folder("Incoming").id
    rng = random.Random(2)
    session.store.append_many("alice", folder_id, [(_message(rng, number), (), 1_500_000_000, 0)
                                                  for number in range(1, 500)])
    session.select("Incoming")
    _small_pieces(monkeypatch)
    monkeypatch.setattr(base, "SLICE_SECONDS", 0.0)
    _answers(session, commands)
    new = [session.add_message("Incoming", _message(rng, number)) for number in range(500, 700)]
    session.store.store_flags("alice", folder_id, [new[0], 7], "add", ["\\Deleted"])
    session.store.expunge("alice", folder_id)
    session.command("NOOP")
    merged = [_drive(session.session, b"m " + command.encode() + b"\r\n") for command in commands]
    assert all(pauses > 0 for _out, pauses in merged)
    _one_piece(monkeypatch)
    monkeypatch.setattr(base, "SLICE_SECONDS", 3600.0)
    session.ctx.sort_columns.clear()
    assert [_drive(session.session, b"m " + command.encode() + b"\r\n")[0] for command in commands] == \
        [out for out, _pauses in merged]


def test_sliced_algorithms_and_sort_order_match_their_unsliced_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(9051)
    count = 3000
    items = [(rng.randrange(50), rng.choice(["a", "b", "c", ""]), rng.random() < 0.4,
              rng.choice([f"m{number}", None, f"m{rng.randrange(count)}"]),
              tuple(f"m{rng.randrange(count + 40)}" for _ in range(rng.choice([0, 0, 1, 2, 5]))))
             for number in range(count)]
    numbers = range(1, count + 1)
    columns: list[tuple[list[Any], bool]] = [([rng.randrange(7) for _ in range(count)], True),
                                             ([rng.random() for _ in range(count)], False)]
    _one_piece(monkeypatch)
    whole = [b"".join(sorting.render_threads(sorting.thread_references(items), numbers)),
             b"".join(sorting.render_threads(sorting.thread_orderedsubject(items), numbers)),
             sorting.sort_order(columns, count)]
    _small_pieces(monkeypatch)
    pauses = 0

    def sliced(steps: Any) -> Any:
        nonlocal pauses
        while True:
            try:
                item = next(steps)
            except StopIteration as stop:
                return stop.value
            assert item is PAUSE
            pauses += 1

    slicer = TimeSlice(0.0)
    assert [b"".join(sorting.render_threads(sliced(sorting.thread_references_sliced(items, slicer)), numbers)),
            b"".join(sorting.render_threads(sliced(sorting.thread_orderedsubject_sliced(items, slicer)), numbers)),
            sliced(sorting.sort_order_sliced(columns, count, slicer))] == whole
    assert pauses > 2 * count // 31


def _sort_paused_after_three_reads(conv: Conversation, monkeypatch: pytest.MonkeyPatch
                                   ) -> tuple[bytes, list[list[int]], Any]:
    """A SORT (SUBJECT) of the cold folder in another session, paused after its third read of
    values: the answer it will give, the reads (record_sort_reads) and that session."""
    _small_pieces(monkeypatch)
    expected = conv.command("SORT (SUBJECT) UTF-8 ALL")[0]
    conv.ctx.sort_columns.clear()
    monkeypatch.setattr(base, "SLICE_SECONDS", 0.0)
    reads = record_sort_reads(monkeypatch, conv.store)
    session = _another_session(conv)
    session.data_received(b"s SORT (SUBJECT) UTF-8 ALL\r\n")
    while len(reads) < 3:
        assert session.process(16)
        assert session.next_output() is None  # paused between reads
        assert gc.isenabled()
    return expected, reads, session


def test_a_sort_closed_while_paused_leaves_the_columns_usable(conv: Conversation,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The client leaves while its SORT has read part of the folder's values: no column is
    kept half-filled, the collector is on, and the next SORT reads every value and answers as
    a SORT that was never interrupted."""
    expected, reads, session = _sort_paused_after_three_reads(conv, monkeypatch)
    session.connection_lost()
    assert gc.isenabled()
    assert conv.ctx.sort_columns.held_bytes == 0  # nothing kept of the reads made
    monkeypatch.setattr(base, "SLICE_SECONDS", 3600.0)
    assert conv.command("SORT (SUBJECT) UTF-8 ALL")[0] == expected
    assert sum(map(len, reads[3:])) == MESSAGES  # all of them read again, once
    assert conv.ctx.sort_columns.held_bytes > 0
    conv.command("SORT (SUBJECT) UTF-8 ALL")
    assert sum(map(len, reads[3:])) == MESSAGES  # kept: answered from the column


def test_two_sessions_sorting_a_cold_folder_at_once_read_it_once(conv: Conversation,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A second SORT of a folder whose first read is under way waits for it without a worker,
    then answers from its column: the folder's values are read once."""
    expected, reads, first = _sort_paused_after_three_reads(conv, monkeypatch)
    second = _another_session(conv)
    second.data_received(b"t SORT (SUBJECT) UTF-8 ALL\r\n")
    for _ in range(100):
        if not second.process(16):
            break   # parked on the first read
        assert second.next_output() is None
    else:
        raise AssertionError("the second SORT did not wait")
    assert len(reads) == 3
    first_out, _pauses = _drive(first, b"")
    second_out, _pauses = _drive(second, b"")
    assert sum(map(len, reads)) == MESSAGES
    assert first_out.startswith(expected) and second_out.startswith(expected)
    assert second_out.endswith(b"t OK SORT completed\r\n")


def test_a_thread_closed_while_threading_keeps_no_answer(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    _small_pieces(monkeypatch)
    expected = conv.command("THREAD REFERENCES UTF-8 ALL")[0]
    conv.ctx.sort_columns.clear()
    conv.command("SORT (DATE) UTF-8 ALL")   # a column of another criterion, kept throughout
    kept = conv.ctx.sort_columns.held_bytes
    monkeypatch.setattr(base, "SLICE_SECONDS", 0.0)
    threading_started: list[int] = []
    algorithm = sorting.thread_references_sliced

    def watched(items: Any, slicer: Any) -> Any:
        threading_started.append(len(items))
        return (yield from algorithm(items, slicer))

    monkeypatch.setitem(thread_command._ALGORITHMS, "REFERENCES", watched)
    session = _another_session(conv)
    session.data_received(b"t THREAD REFERENCES UTF-8 ALL\r\n")
    while not threading_started:
        assert session.process(16)
        assert session.next_output() is None
    for _ in range(5):  # a few pieces into the threading
        assert session.process(16)
        assert session.next_output() is None
    session.connection_lost()
    assert gc.isenabled()
    # The THREAD values were read in full and kept; the answer, never finished, was not.
    columns = conv.ctx.sort_columns._columns
    assert [key[1] for key in columns] == ["DATE", sorting.THREAD_VALUES]
    assert conv.ctx.sort_columns.held_bytes > kept
    assert conv.command("THREAD REFERENCES UTF-8 ALL")[0] == expected


# -- a search slot for the whole command --------------------------------------------------------

def _own_slots(monkeypatch: pytest.MonkeyPatch, total: int, per_account: int) -> searching._SearchSlots:
    slots = searching._SearchSlots(total=total, per_account=per_account)
    monkeypatch.setattr(searching, "_SLOTS", slots)
    return slots


@pytest.mark.parametrize("command", ["SORT (SUBJECT) UTF-8 BODY xx", "THREAD REFERENCES UTF-8 BODY xx",
                                     "SORT (DATE) UTF-8 ALL", "UID THREAD ORDEREDSUBJECT UTF-8 ALL"])
def test_a_sort_or_thread_holds_one_slot_through_its_pauses_and_gives_it_back_before_its_answer(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """Paused, a SORT or THREAD holds the values it read and what it builds of them: it holds a
    search slot from its search to its answer, even for ALL (no message tested), and its search
    claims no second one (with one slot per account that would wait for ever)."""
    slots = _own_slots(monkeypatch, total=8, per_account=1)
    monkeypatch.setattr(searching, "_PAUSE_FROM", 100)   # the folder counts as large
    _small_pieces(monkeypatch)
    monkeypatch.setattr(base, "SLICE_SECONDS", 0.0)
    session = conv.session
    session.data_received(b"c " + command.encode() + b"\r\n")
    held_while_paused: set[int] = set()
    out: list[bytes] = []
    for _ in range(100_000):
        more = session.process(16)
        item = session.next_output()
        if item is not None:
            assert slots._in_use == 0   # given back before the first line of the answer
            while item is not None:
                assert isinstance(item, bytes | memoryview)
                out.append(bytes(item))
                item = session.next_output()
        elif more:
            held_while_paused.add(slots._in_use)
        if not more:
            break
    assert held_while_paused == {1}
    assert out[-1].startswith(b"c OK ")
    assert slots._in_use == 0 and not slots._running


def test_a_sort_waits_for_its_slot_holding_no_worker(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    slots = _own_slots(monkeypatch, total=1, per_account=1)
    monkeypatch.setattr(searching, "_PAUSE_FROM", 100)
    assert slots.claim("someone else").done()
    session = conv.session
    session.data_received(b"c SORT (ARRIVAL) UTF-8 ALL\r\n")
    assert session.process(16)
    assert session.next_output() is None
    assert not session.process(16)   # parked on the slot: nothing to run
    slots.release("someone else")
    out, _pauses = _drive(session, b"")
    assert out.startswith(b"* SORT ") and out.endswith(b"c OK SORT completed\r\n")
    assert slots._in_use == 0


@pytest.mark.parametrize("command", ["THREAD REFERENCES UTF-8 ALL", "UID THREAD ORDEREDSUBJECT UTF-8 ALL"])
def test_a_kept_thread_answer_does_not_wait_for_a_slot(conv: Conversation, monkeypatch: pytest.MonkeyPatch,
                                                       command: str) -> None:
    """A webmail client threads the folder on every page view: once the answer is kept, it is
    given at once, even while the slots are all taken by long searches. A THREAD that must
    compute still waits."""
    slots = _own_slots(monkeypatch, total=1, per_account=1)
    monkeypatch.setattr(searching, "_PAUSE_FROM", 100)
    first, _pauses = _drive(conv.session, b"c " + command.encode() + b"\r\n")
    assert first.endswith(b"c OK THREAD completed\r\n")
    assert slots.claim("someone else").done()   # the one slot, taken by another search
    session = conv.session
    kept, _pauses = _drive(session, b"d " + command.encode() + b"\r\n")   # ends when it parks, if it does
    assert kept == first.replace(b"c OK", b"d OK")
    # Another algorithm's answer is not kept: it parks until the slot is given back.
    other = "THREAD ORDEREDSUBJECT UTF-8 ALL" if "REFERENCES" in command else "UID THREAD REFERENCES UTF-8 ALL"
    session.data_received(b"e " + other.encode() + b"\r\n")
    for _ in range(100):
        if not session.process(16):
            break
        assert session.next_output() is None
    else:
        raise AssertionError("the THREAD did not park")
    slots.release("someone else")
    out_after, _pauses = _drive(session, b"")
    assert out_after.startswith(b"* THREAD ") and out_after.endswith(b"e OK THREAD completed\r\n")
    assert slots._in_use == 0


def test_a_sort_of_a_small_folder_takes_no_slot(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer than _PAUSE_FROM messages: a few slices at most, and little to hold."""
    slots = _own_slots(monkeypatch, total=1, per_account=1)
    assert conv.session.selected is not None
    assert len(conv.session.selected.uids) < searching._PAUSE_FROM
    assert slots.claim("someone else").done()
    out, _pauses = _drive(conv.session, b"c THREAD REFERENCES UTF-8 ALL\r\n")
    assert out.endswith(b"c OK THREAD completed\r\n")


@pytest.mark.parametrize("command", ["SORT (SUBJECT) UTF-8 ALL", "THREAD REFERENCES UTF-8 ALL"])
def test_a_goodbye_waits_for_the_end_of_a_sort_or_thread_line(conv: Conversation, command: str) -> None:
    """A long SORT or THREAD line goes out in several items (a slice may end between them): a
    shutdown coming then says its BYE after the line, not inside it."""
    expected = conv.command(command)[0]
    session = _another_session(conv)   # the module's session stays open for the other tests
    session.data_received(b"c " + command.encode() + b"\r\n")
    out: list[bytes] = []
    for _ in range(100_000):
        more = session.process(16)
        item = session.next_output()
        if item is not None:
            out.append(bytes(item))   # the first piece of the line
            break
        assert more
    assert not out[0].endswith(b"\r\n")
    session.shutdown()
    while (item := session.next_output()) is not None and not isinstance(item, TransportAction):
        out.append(bytes(item))
    assert item is TransportAction.CLOSE
    line, bye = b"".join(out).split(b"\r\n", 1)
    assert line == expected
    assert bye.startswith(b"* BYE ") and bye.endswith(b"\r\n")
