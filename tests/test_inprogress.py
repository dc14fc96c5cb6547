"""INPROGRESS (RFC 9585, gximap.session.progress): a command that runs long sends untagged
``* OK [INPROGRESS ("tag" count total)] text`` lines between whole responses, before its tagged
answer; a quick one sends none.

The clock the lines are timed by is replaced: SteppingClock moves on a second each time it is
read, so the lines come at a pace set by the code's own reads (no sleeping, no load dependence),
and a clock that stands still shows a command that is never long."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation, split_responses

from gximap.session import base, pieces, progress, searching, sorting
from gximap.session.commands import fetch as fetch_command
from gximap.session.progress import Progress, Timer, line

MESSAGES = 60
PROGRESS_LINE = re.compile(rb'\* OK \[INPROGRESS \("([^"]*)" (NIL|\d+) (NIL|\d+)\)\] Still working\Z')


class SteppingClock:
    def __init__(self, step: float = 1.0) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _message(number: int) -> bytes:
    marker = b"needle" if number % 3 == 0 else b"hay"
    return (b"From: bob@example.org\r\nSubject: message %d\r\n\r\nbody of message %d with %b in it\r\n"
            % (number, number, marker))


@pytest.fixture
def conv(tmp_path: Path) -> Iterator[Conversation]:
    conversation = Conversation(tmp_path)
    for number in range(1, MESSAGES + 1):
        conversation.add_message(data=_message(number))
    conversation.login()
    conversation.select()
    yield conversation
    conversation.close()


@pytest.fixture
def progress_lines_off() -> None:
    """Overrides conftest's: here the lines are what is tested (their clock is replaced)."""


@pytest.fixture
def stepping(monkeypatch: pytest.MonkeyPatch) -> SteppingClock:
    clock = SteppingClock()
    monkeypatch.setattr(progress, "clock", clock)
    return clock


@pytest.fixture
def sliced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every look at a slice's clock pauses; a search tests its messages in batches of 8."""
    monkeypatch.setattr(base, "SLICE_SECONDS", 0.0)
    monkeypatch.setattr(searching, "_BATCH_MESSAGES", 8)


def _progress(lines: list[bytes], tag: str) -> list[tuple[int | None, int | None]]:
    """The (count, total) of the INPROGRESS lines among ``lines``, checking each one's form, its
    tag, and that it comes before the tagged answer (the last line)."""
    assert lines[-1].startswith(tag.encode() + b" OK"), lines[-1]
    found = []
    for response in lines[:-1]:
        if b"INPROGRESS" not in response:
            continue
        match = PROGRESS_LINE.match(response)
        assert match is not None, response
        assert match.group(1) == tag.encode()
        count, total = (None if value == b"NIL" else int(value) for value in match.group(2, 3))
        if count is not None and total is not None:
            assert 0 <= count < total
        found.append((count, total))
    return found


def _counted(found: list[tuple[int | None, int | None]], total: int) -> list[int]:
    """The counts of ``found`` that came with ``total``; they never go back."""
    counts = [count for count, of in found if of == total and count is not None]
    assert counts == sorted(counts)
    return counts


def test_the_line_says_what_is_known() -> None:
    done = Progress()
    assert line(b"a1", done, b"Still working") == b'* OK [INPROGRESS ("a1" NIL NIL)] Still working\r\n'
    done.note(25, 100)
    assert line(b"a1", done, b"x") == b'* OK [INPROGRESS ("a1" 25 100)] x\r\n'
    done.note(7, None)  # counted, the total not known
    assert line(b"a1", done, b"x") == b'* OK [INPROGRESS ("a1" 7 NIL)] x\r\n'
    done.note(100, 100)  # all counted yet still working: no count that reads as finished
    assert line(b"a1", done, b"x") == b'* OK [INPROGRESS ("a1" NIL NIL)] x\r\n'
    done.note(0, 0)
    assert line(b"a1", done, b"x") == b'* OK [INPROGRESS ("a1" NIL NIL)] x\r\n'
    done.note(3, 10)
    done.forget()
    # RFC 9585 section 4: a tag holding "]" (valid in a tag, resp-specials) is sent as NIL.
    assert line(b"a]1", done, b"x") == b'* OK [INPROGRESS (NIL NIL NIL)] x\r\n'
    assert line(b"a[1", done, b"x") == b'* OK [INPROGRESS ("a[1" NIL NIL)] x\r\n'


def test_the_first_line_waits_then_one_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [500.0]
    monkeypatch.setattr(progress, "clock", lambda: now[0])
    timer = Timer()
    now[0] += progress.FIRST_AFTER - 0.01
    assert not timer.due()
    now[0] += 0.01
    assert timer.due()
    assert not timer.due()
    now[0] += progress.INTERVAL - 0.01
    assert not timer.due()
    now[0] += 0.01
    assert timer.due()


def test_advertised_once_logged_in(tmp_path: Path) -> None:
    conversation = Conversation(tmp_path)
    try:
        assert "INPROGRESS" not in conversation.capabilities()
        conversation.login()
        assert "INPROGRESS" in conversation.capabilities()
    finally:
        conversation.close()


@pytest.mark.usefixtures("stepping", "sliced")
def test_search_body_over_several_slices_counts_the_messages_searched(conv: Conversation) -> None:
    lines = conv.send(b"s1 SEARCH BODY needle\r\n")
    found = _progress(lines, "s1")
    assert len(found) >= 3
    counts = _counted(found, MESSAGES)
    assert len(set(counts)) >= 2   # the count moves on as batches are searched
    answer = b"* SEARCH " + b" ".join(b"%d" % n for n in range(3, MESSAGES + 1, 3))
    assert [response for response in lines[:-1] if not PROGRESS_LINE.match(response)] == [answer]


@pytest.mark.usefixtures("stepping", "sliced")
def test_sort_counts_its_search_then_goes_on_without_a_count(conv: Conversation) -> None:
    lines = conv.send(b"o1 SORT (SUBJECT) UTF-8 BODY needle\r\n")
    found = _progress(lines, "o1")
    assert _counted(found, MESSAGES)
    assert (None, None) in found   # the sort after the search is not counted
    assert [response for response in lines[:-1] if not PROGRESS_LINE.match(response)][0].startswith(b"* SORT ")


@pytest.mark.usefixtures("stepping", "sliced")
def test_record_filters_count_the_records_looked_at(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search of keys the index record answers (no message read) counts the records its
    filters have looked at, of all the folder's, as it goes from chunk to chunk."""
    monkeypatch.setattr(searching, "_FILTER_CHUNK", 2)   # a look at the clock every two records
    lines = conv.send(b"r1 SEARCH UNFLAGGED LARGER 10\r\n")
    found = _progress(lines, "r1")
    counts = _counted(found, MESSAGES)
    assert len(set(counts)) >= 2
    answer = b"* SEARCH " + b" ".join(b"%d" % n for n in range(1, MESSAGES + 1))
    assert [response for response in lines[:-1] if not PROGRESS_LINE.match(response)] == [answer]


@pytest.mark.usefixtures("stepping", "sliced")
def test_live_searches_at_a_command_end_count_under_its_tag(conv: Conversation) -> None:
    """CONTEXT=SEARCH: the messages a command's catch-up brought are searched again before its
    tagged answer, as part of it: the lines go on under its tag, counting those messages."""
    conv.command("SEARCH RETURN (UPDATE) BODY needle")
    for number in range(MESSAGES + 1, 2 * MESSAGES + 1):
        conv.add_message(data=_message(number))
    lines = conv.send(b"n1 NOOP\r\n")
    found = _progress(lines, "n1")
    assert len(set(_counted(found, MESSAGES))) >= 2
    added = b",".join(b"%d" % n for n in range(MESSAGES + 3, 2 * MESSAGES + 1, 3))
    assert [response for response in lines[:-1] if not PROGRESS_LINE.match(response)] == [
        b"* %d EXISTS" % (2 * MESSAGES), b"* %d RECENT" % (2 * MESSAGES),
        b'* ESEARCH (TAG "x3") ADDTO (0 ' + added + b")"]


def test_fetch_of_every_body_sends_lines_between_whole_responses(conv: Conversation,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch's responses go out together, a read of the clock each: five seconds a read.
    monkeypatch.setattr(progress, "clock", SteppingClock(5.0))
    monkeypatch.setattr(fetch_command, "_BATCH", 8)
    lines = conv.send(b"f1 FETCH 1:* (BODY.PEEK[])\r\n")
    found = _progress(lines, "f1")
    assert len(found) >= 3
    assert len(set(_counted(found, MESSAGES))) >= 2
    fetches = [response for response in lines if response.startswith(b"* ") and b" FETCH " in response]
    assert len(fetches) == MESSAGES   # every message answered, none cut by a progress line
    for number, response in enumerate(fetches, start=1):
        assert response.startswith(b"* %d FETCH (BODY[] {" % number)
        assert response.endswith(b"in it\r\n)")
        assert b"INPROGRESS" not in response
    assert all(response in fetches or PROGRESS_LINE.match(response) for response in lines[:-1])


def test_notify_fetch_of_new_messages_sends_no_line(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY's FETCH of MessageNew's attributes is no command of the client's: no INPROGRESS
    line, whatever it takes (it has no tag to name), where the same FETCH as a command sends them
    (test_fetch_of_every_body_sends_lines_between_whole_responses)."""
    monkeypatch.setattr(progress, "clock", SteppingClock(5.0))
    monkeypatch.setattr(fetch_command, "_BATCH", 8)
    conv.command("NOTIFY SET (selected (MessageNew (BODY.PEEK[]) MessageExpunge))")
    with conv.second_session() as other:
        other.login()
        for number in range(MESSAGES + 1, 2 * MESSAGES + 1):
            data = _message(number).decode()
            other.command(f"APPEND INBOX {{{len(data)}+}}\r\n{data}")
    lines = conv.wake()
    assert lines[:2] == [b"* %d EXISTS" % (2 * MESSAGES), b"* %d RECENT" % (2 * MESSAGES)]
    fetches = lines[2:]
    assert len(fetches) == MESSAGES
    for number, response in enumerate(fetches, start=MESSAGES + 1):
        assert response.startswith(b"* %d FETCH (UID %d BODY[] {" % (number, number))
        assert response.endswith(b"in it\r\n)")


@pytest.mark.usefixtures("stepping")
def test_fetch_of_streamed_bodies_puts_lines_only_between_responses(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Bodies above the inline limit go out as a literal's header, chunks and a closing
    # parenthesis (RESPONSE_OPENS ... RESPONSE_CLOSES): the lines come after a CLOSES only.
    monkeypatch.setattr(fetch_command, "_BATCH", 4)
    monkeypatch.setattr(fetch_command, "_INLINE_LIMIT", 1024)
    streamed: list[int] = []
    original = fetch_command._BodyStream.chunks

    def chunks(stream: fetch_command._BodyStream) -> Iterator[bytes]:
        streamed.append(1)
        return original(stream)

    monkeypatch.setattr(fetch_command._BodyStream, "chunks", chunks)
    conversation = Conversation(tmp_path)
    try:
        big = b"From: bob@example.org\r\nSubject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"
        for _ in range(12):
            conversation.add_message(data=big)
        conversation.login()
        conversation.select()
        output = conversation._feed(b"f2 FETCH 1:* (BODY.PEEK[])\r\n")
        lines = split_responses(output)
        found = _progress(lines, "f2")
        assert found
        fetches = [response for response in lines if b" FETCH (" in response]
        assert len(fetches) == 12
        assert all(response.endswith(b"x" * 100 + b"\r\n)") for response in fetches)
        assert output.count(b"INPROGRESS") == len(found)
        assert len(streamed) == 12   # every body went out in pieces
    finally:
        conversation.close()


@pytest.mark.usefixtures("stepping")
def test_store_over_many_pieces_counts_the_messages_written(conv: Conversation,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pieces, "FIRST_PIECE", 10)
    monkeypatch.setattr(pieces, "MIN_PIECE", 10)
    monkeypatch.setattr(pieces, "MAX_PIECE", 10)
    lines = conv.send(b"w1 STORE 1:* +FLAGS (\\Flagged)\r\n")
    found = _progress(lines, "w1")
    counts = _counted(found, MESSAGES)
    assert len(set(counts)) >= 2 and all(count % 10 == 0 for count in counts)   # pieces of ten written
    fetches = [response for response in lines if b" FETCH (" in response]
    assert len(fetches) == MESSAGES and all(b"\\Flagged" in response for response in fetches)


@pytest.mark.parametrize("command", ["COPY 1:* Archive", "MOVE 1:* Archive", "EXPUNGE"])
@pytest.mark.usefixtures("stepping")
def test_copy_move_and_expunge_in_pieces_count_too(conv: Conversation, monkeypatch: pytest.MonkeyPatch,
                                                   command: str) -> None:
    conv.command("STORE 1:* +FLAGS.SILENT (\\Deleted)")   # one piece: no pieces patched yet
    monkeypatch.setattr(pieces, "FIRST_PIECE", 10)
    monkeypatch.setattr(pieces, "MIN_PIECE", 10)
    monkeypatch.setattr(pieces, "MAX_PIECE", 10)
    lines = conv.send(b"m1 " + command.encode() + b"\r\n")
    counts = _counted(_progress(lines, "m1"), MESSAGES)
    assert counts and all(count % 10 == 0 for count in counts)
    if command != "COPY 1:* Archive":
        assert sum(response.endswith(b" EXPUNGE") for response in lines) == MESSAGES
    assert conv.command("STATUS INBOX (MESSAGES)")[0].endswith(b"(MESSAGES %d)" % (MESSAGES if command.startswith("COPY") else 0))


@pytest.mark.usefixtures("stepping")
def test_a_quick_command_sends_none(conv: Conversation) -> None:
    for tag, text in (("q1", "NOOP"), ("q2", "FETCH 1 (FLAGS)"), ("q3", "SEARCH SUBJECT message")):
        lines = conv.send(f"{tag} {text}\r\n".encode())
        assert lines[-1].startswith(tag.encode() + b" OK")
        assert not any(b"INPROGRESS" in response for response in lines)


@pytest.mark.usefixtures("sliced")
def test_a_command_that_is_never_long_sends_none(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "clock", lambda: 1000.0)   # sliced, but no time passes
    lines = conv.send(b"s2 SEARCH BODY needle\r\n")
    assert lines[-1].startswith(b"s2 OK")
    assert not any(b"INPROGRESS" in response for response in lines)


@pytest.mark.usefixtures("stepping", "sliced")
def test_the_line_is_handed_out_and_the_pause_kept_before_the_command_goes_on(conv: Conversation) -> None:
    # As the pool drives the session: the line comes from next_output() while the command still
    # runs, then next_output() says nothing more for now (the PAUSE: the pool writes and flushes
    # what it has, serves others and comes back); the answer follows later.
    session = conv.session
    session.data_received(b"s3 SEARCH BODY needle\r\n")
    assert session.process(16)
    sent: list[bytes] = []
    while True:
        item = session.next_output()
        if item is None:
            assert session.process(16), "the command ended without an INPROGRESS line"
            continue
        assert isinstance(item, bytes), item
        sent.append(item)
        if b"INPROGRESS" in item:
            break
    assert not any(chunk.startswith(b"s3 ") for chunk in sent)
    assert session.next_output() is None   # the pause that came with the line
    assert session.process(16)              # the command is still running
    rest = conv.send(b"")
    assert rest[-1].startswith(b"s3 OK")


@pytest.mark.usefixtures("stepping", "sliced")
def test_a_sort_context_reads_its_keys_under_the_sorts_tag(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """SORT RETURN (UPDATE): the new context's keys are read (again here: the sort columns keep
    nothing) in the SORT's slices, a few messages per read, and its lines go on meanwhile: as
    many again as the SORT alone sends, all before its answer."""
    conv.ctx.sort_columns.resize(0)
    monkeypatch.setattr(sorting, "_UIDS_PER_READ", 2)
    alone = _progress(conv.send(b"o1 SORT RETURN (COUNT) (SUBJECT) UTF-8 ALL\r\n"), "o1")
    live = _progress(conv.send(b"o2 SORT RETURN (COUNT UPDATE) (SUBJECT) UTF-8 ALL\r\n"), "o2")
    assert len(alone) >= 2
    assert len(live) >= 2 * len(alone) - 1
