"""Framing: lines, literals, limits and resynchronisation."""

from __future__ import annotations

import time

import pytest

from gximap.imap.framing import (
    LITERAL_MINUS_MAX,
    CommandFrame,
    FrameError,
    FrameErrorKind,
    Framer,
    Literal,
    NeedContinuation,
    extract_tag,
)


def drain(framer: Framer) -> list:
    events = []
    while (event := framer.next_event()) is not None:
        events.append(event)
    return events


def frames_of(data: bytes, chunk: int | None = None, **limits: int) -> list:
    framer = Framer(limits.get("max_line", 8192), limits.get("max_literal", 1 << 20))
    events: list = []
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        framer.feed(data[start : start + step])
        events.extend(drain(framer))
    return events


def test_simple_lines_crlf_and_lf() -> None:
    events = frames_of(b"a1 NOOP\r\na2 CAPABILITY\nA3 LOGOUT\r\n")
    assert events == [
        CommandFrame(b"a1", (b"a1 NOOP",)),
        CommandFrame(b"a2", (b"a2 CAPABILITY",)),
        CommandFrame(b"A3", (b"A3 LOGOUT",)),
    ]


def test_incomplete_line_waits() -> None:
    framer = Framer(8192, 1024)
    framer.feed(b"a1 NO")
    assert framer.next_event() is None
    assert framer.in_command is False
    framer.feed(b"OP\r")
    assert framer.next_event() is None
    framer.feed(b"\n")
    assert framer.next_event() == CommandFrame(b"a1", (b"a1 NOOP",))


def test_empty_lines_between_commands_are_ignored() -> None:
    assert frames_of(b"\r\n\r\na NOOP\r\n\n") == [CommandFrame(b"a", (b"a NOOP",))]


def test_synchronizing_literal_needs_continuation() -> None:
    framer = Framer(8192, 1024)
    framer.feed(b"A001 LOGIN {11}\r\n")
    assert framer.next_event() == NeedContinuation(b"A001", 11, b"LOGIN", False, 11, 1, 11, b"A001 LOGIN ",
                                                   (b"A001 LOGIN ",), True)
    assert framer.next_event() is None
    assert framer.in_command
    framer.feed(b"FRED FOOBAR {7}\r\n")
    assert framer.next_event() == NeedContinuation(b"A001", 7, b"LOGIN", False, 18, 2, 11, b"A001 LOGIN ",
                                                   (b" ",), False)
    framer.feed(b"fat man\r\n")
    frame = framer.next_event()
    assert frame == CommandFrame(
        b"A001", (b"A001 LOGIN ", Literal(b"FRED FOOBAR"), b" ", Literal(b"fat man"), b"")
    )
    assert framer.next_event() is None


def test_non_synchronizing_literals_rfc7888_example() -> None:
    events = frames_of(b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n")
    assert events == [
        CommandFrame(
            b"A001",
            (b"A001 LOGIN ", Literal(b"FRED FOOBAR", synchronizing=False), b" ",
             Literal(b"fat man", synchronizing=False), b""),
        )
    ]


def test_literal_may_hold_crlf_and_braces() -> None:
    payload = b"line1\r\nA2 NOOP {3}\r\n"
    events = frames_of(b"a APPEND INBOX {%d+}\r\n%s\r\nb NOOP\r\n" % (len(payload), payload))
    assert events[0].parts[1] == Literal(payload, synchronizing=False)
    assert events[1] == CommandFrame(b"b", (b"b NOOP",))


def test_literal8() -> None:
    framer = Framer(8192, 1024)
    framer.feed(b"a APPEND INBOX ~{3}\r\n")
    assert framer.next_event() == NeedContinuation(b"a", 3, b"APPEND", True, 3, 1, 3, b"a APPEND INBOX ",
                                                   (b"a APPEND INBOX ",), True)
    framer.feed(b"\x00\x01\x02\r\n")
    assert framer.next_event() == CommandFrame(
        b"a", (b"a APPEND INBOX ", Literal(b"\x00\x01\x02", binary=True), b"")
    )


def test_zero_length_literal() -> None:
    events = frames_of(b"a LOGIN {0+}\r\n {0+}\r\n\r\n")
    assert events == [
        CommandFrame(b"a", (b"a LOGIN ", Literal(b"", synchronizing=False), b" ",
                            Literal(b"", synchronizing=False), b""))
    ]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_chunking_does_not_change_events(chunk: int) -> None:
    stream = (
        b"a1 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n"
        b"a2 SELECT INBOX\r\n\r\n"
        b"a3 APPEND INBOX (\\Seen) ~{4+}\r\n\x00abc\r\n"
        b"a4 SEARCH {3+}\r\nfoo\n"
    )
    assert frames_of(stream, chunk=chunk) == frames_of(stream)


def test_line_too_long_reported_early_and_resyncs() -> None:
    framer = Framer(64, 1024)
    framer.feed(b"tag1 FETCH " + b"1," * 40)
    error = framer.next_event()
    assert isinstance(error, FrameError)
    assert error.kind is FrameErrorKind.LINE_TOO_LONG
    assert error.tag == b"tag1"
    assert error.command == b"FETCH"
    # The rest of the long line is dropped as it arrives, without buffering it.
    framer.feed(b"2," * 10_000)
    assert framer.buffered == 0
    assert framer.next_event() is None
    framer.feed(b"3\r\ntag2 NOOP\r\n")
    assert framer.next_event() == CommandFrame(b"tag2", (b"tag2 NOOP",))


def test_complete_line_too_long() -> None:
    events = frames_of(b"t1 " + b"x" * 100 + b"\r\nt2 NOOP\r\n", max_line=64)
    assert isinstance(events[0], FrameError) and events[0].tag == b"t1"
    assert events[1] == CommandFrame(b"t2", (b"t2 NOOP",))


def test_line_limit_counts_all_pieces_of_a_command() -> None:
    framer = Framer(40, 1024)
    framer.feed(b"t1 LOGIN {1+}\r\nx " + b"y" * 30 + b"\r\nt2 NOOP\r\n")
    events = drain(framer)
    assert isinstance(events[0], FrameError) and events[0].kind is FrameErrorKind.LINE_TOO_LONG
    assert events[0].tag == b"t1"
    assert events[1] == CommandFrame(b"t2", (b"t2 NOOP",))


def test_overlong_line_ending_in_non_sync_literal_skips_the_literal() -> None:
    framer = Framer(32, 1024)
    framer.feed(b"t1 LOGIN " + b"a" * 40 + b" {10+}\r\n0123456789 rest\r\nt2 NOOP\r\n")
    events = drain(framer)
    assert [type(event) for event in events] == [FrameError, CommandFrame]
    assert events[1].tag == b"t2"


def test_sync_literal_too_big_is_refused_before_any_byte() -> None:
    framer = Framer(8192, 100)
    framer.feed(b"A3 APPEND INBOX {101}\r\n")
    error = framer.next_event()
    assert error == FrameError(
        b"A3", FrameErrorKind.LITERAL_TOO_BIG, "Literal too big", b"APPEND", 101, True, limit=100
    )
    assert not error.too_big_together
    # The client waits for "+", gets the tagged NO [TOOBIG] instead and moves on.
    framer.feed(b"A4 NOOP\r\n")
    assert framer.next_event() == CommandFrame(b"A4", (b"A4 NOOP",))


def test_non_sync_literal_too_big_is_skipped_streaming() -> None:
    framer = Framer(8192, 1000)
    framer.feed(b"A3 APPEND INBOX (\\Seen) {5000000+}\r\n")
    error = framer.next_event()
    assert isinstance(error, FrameError)
    assert (error.kind, error.tag, error.command, error.size, error.synchronizing) == (
        FrameErrorKind.LITERAL_TOO_BIG, b"A3", b"APPEND", 5_000_000, False
    )
    chunk = b"x" * 65536
    sent = 0
    while sent + len(chunk) <= 5_000_000:
        framer.feed(chunk)
        sent += len(chunk)
        assert framer.buffered == 0  # never buffered
        assert framer.next_event() is None
    framer.feed(b"y" * (5_000_000 - sent) + b" {3+}\r\nabc\r\nA4 NOOP\r\n")
    assert framer.next_event() == CommandFrame(b"A4", (b"A4 NOOP",))


def test_huge_announced_size_is_too_big_not_a_crash() -> None:
    framer = Framer(8192, 1 << 20)
    framer.feed(b"a LOGIN {" + b"9" * 5000 + b"}\r\n")
    error = framer.next_event()
    assert isinstance(error, FrameError) and error.kind is FrameErrorKind.LITERAL_TOO_BIG
    assert error.size is not None and error.size > 1 << 60 and not error.unwaited
    framer.feed(b"b NOOP\r\n")   # the client waited, got the refusal, went on
    assert drain(framer) == [CommandFrame(b"b", (b"b NOOP",))]


def test_a_too_big_literal_sent_without_waiting_is_discarded_not_framed() -> None:
    literal = b"x1 DELETE INBOX\r\nx2 LOGOUT\r\n"
    data = b"a APPEND INBOX {%d}\r\n%s {3}\r\nabc\r\nb NOOP\r\n" % (len(literal), literal)
    for chunk in (None, 7):   # whole, or trickling in behind the line that announced it
        framer = Framer(8192, 16)
        framer.feed(data[:data.index(b"\n") + 2] if chunk else data)
        error = framer.next_event()
        assert isinstance(error, FrameError) and error.kind is FrameErrorKind.LITERAL_TOO_BIG
        assert error.unwaited and error.synchronizing and error.size == len(literal)
        rest = data[data.index(b"\n") + 2:] if chunk else b""
        events = drain(framer)
        for start in range(0, len(rest), 7):
            framer.feed(rest[start:start + 7])
            events.extend(drain(framer))
        assert events == [CommandFrame(b"b", (b"b NOOP",))]


def test_garbage_announcing_a_literal_is_framed_on() -> None:
    # No tag: not a command, so what follows is not taken for its literal.
    assert frames_of(b"{99999999}\r\nb NOOP\r\n", max_literal=16)[1] == CommandFrame(b"b", (b"b NOOP",))


def test_reject_literal_discards_octets_sent_without_waiting() -> None:
    framer = Framer(8192, 1 << 20)
    framer.feed(b"a APPEND INBOX {10}\r\n")
    assert isinstance(framer.next_event(), NeedContinuation)
    assert framer.reject_literal() is False   # nothing sent ahead: the client waits
    framer.feed(b"b NOOP\r\n")
    assert drain(framer) == [CommandFrame(b"b", (b"b NOOP",))]
    framer.feed(b"c APPEND INBOX {10}\r\nc1 DE")   # part of the literal already here
    assert isinstance(framer.next_event(), NeedContinuation)
    assert framer.reject_literal() is True
    assert framer.next_event() is None
    framer.feed(b"LETE X\r\nd NOOP\r\n")
    assert drain(framer) == [CommandFrame(b"d", (b"d NOOP",))]
    framer.feed(b"e APPEND INBOX {10}\r\n0123456789\r\n")
    assert isinstance(framer.next_event(), NeedContinuation)
    assert framer.reject_literal(discard_sent=False) is False   # garbage: framed on
    assert drain(framer) == [CommandFrame(b"0123456789", (b"0123456789",))]


def test_literal_budget_is_per_command() -> None:
    framer = Framer(8192, 10)
    framer.feed(b"a LOGIN {6+}\r\nabcdef {6+}\r\n")
    error = framer.next_event()
    assert isinstance(error, FrameError) and error.kind is FrameErrorKind.LITERAL_TOO_BIG
    # Each literal fits, the two together do not: the session can tell (a MULTIAPPEND's
    # messages get NO [LIMIT], not NO [TOOBIG]).
    assert error.too_big_together and (error.size, error.limit) == (6, 10)
    framer.feed(b"ghijkl\r\nb LOGIN {6+}\r\nabcdef {4+}\r\nghij\r\n")
    frame = framer.next_event()
    assert isinstance(frame, CommandFrame) and frame.tag == b"b"


def test_literal_minus() -> None:
    framer = Framer(8192, 1 << 20, literal_minus=True)
    framer.feed(b"a LOGIN {%d+}\r\n" % (LITERAL_MINUS_MAX + 1))
    error = framer.next_event()
    assert isinstance(error, FrameError) and error.kind is FrameErrorKind.LITERAL_MINUS
    framer.feed(b"z" * (LITERAL_MINUS_MAX + 1) + b" x\r\n")
    assert framer.next_event() is None
    framer.feed(b"b LOGIN {%d+}\r\n%s x\r\n" % (LITERAL_MINUS_MAX, b"u" * LITERAL_MINUS_MAX))
    frame = framer.next_event()
    assert isinstance(frame, CommandFrame) and len(frame.parts) > 1 and len(frame.parts[1]) == LITERAL_MINUS_MAX
    # Synchronising literals are not limited by LITERAL-.
    framer.feed(b"c LOGIN {%d}\r\n" % (LITERAL_MINUS_MAX * 2))
    assert isinstance(framer.next_event(), NeedContinuation)


def test_reject_literal() -> None:
    framer = Framer(8192, 1024)
    framer.feed(b"x LOGIN {5}\r\n")
    assert isinstance(framer.next_event(), NeedContinuation)
    framer.reject_literal()
    framer.feed(b"y NOOP\r\n")
    assert framer.next_event() == CommandFrame(b"y", (b"y NOOP",))


def test_garbage_lines_keep_tags_when_present() -> None:
    events = frames_of(b"a1 \x01\x02 garbage\r\n\"bad\" NOOP\r\n+ NOOP\r\n* NOOP\r\n")
    assert [event.tag for event in events] == [b"a1", None, None, None]


@pytest.mark.parametrize(
    ("line", "tag"),
    [
        (b"A001 NOOP", b"A001"),
        (b"a]b NOOP", b"a]b"),
        (b"abc", b"abc"),
        (b"a+b NOOP", None),
        (b"a{b NOOP", None),
        (b" NOOP", None),
        (b"", None),
        (b"t\xc3\xa9 NOOP", None),
        (b"x" * 500, None),
    ],
)
def test_extract_tag(line: bytes, tag: bytes | None) -> None:
    assert extract_tag(line) == tag


def test_raw_lines_for_authenticate_and_idle() -> None:
    framer = Framer(64, 1024)
    framer.feed(b"AGFsaWNlAHB3\r\nDO")
    assert framer.next_raw_line() == b"AGFsaWNlAHB3"
    assert framer.next_raw_line() is None
    framer.feed(b"NE\r\n")
    assert framer.next_raw_line() == b"DONE"
    # Raw lines never interpret literal announcements.
    framer.feed(b"{5}\r\n")
    assert framer.next_raw_line() == b"{5}"


def test_raw_line_too_long_then_resync() -> None:
    framer = Framer(32, 1024)
    framer.feed(b"A" * 40)
    error = framer.next_raw_line()
    assert isinstance(error, FrameError) and error.kind is FrameErrorKind.LINE_TOO_LONG
    framer.feed(b"B" * 100 + b"\r\nDONE\r\n")
    assert framer.next_raw_line() == b"DONE"


def test_raw_line_in_the_middle_of_a_command_is_a_programming_error() -> None:
    framer = Framer(64, 1024)
    framer.feed(b"a LOGIN {3}\r\n")
    framer.next_event()
    with pytest.raises(RuntimeError):
        framer.next_raw_line()


def test_discard_buffer_for_starttls() -> None:
    framer = Framer(8192, 1024)
    framer.feed(b"a STARTTLS\r\nb LOGIN injected password\r\nc partial")
    assert framer.next_event() == CommandFrame(b"a", (b"a STARTTLS",))
    framer.discard_buffer()
    assert framer.buffered == 0
    assert framer.next_event() is None
    framer.feed(b"d NOOP\r\n")
    assert framer.next_event() == CommandFrame(b"d", (b"d NOOP",))


def test_preview_hides_literal_contents() -> None:
    frame = frames_of(b"a LOGIN {5+}\r\nalice ~{6+}\r\nsecret\r\n")[0]
    assert frame.preview() == b"a LOGIN {5} ~{6}"
    assert frame.command_name == b"LOGIN"


def test_slowly_dripped_long_line_is_linear() -> None:
    """One byte at a time for a 200 kB line: a quadratic rescan would take minutes."""
    framer = Framer(300_000, 1024)
    line = b"a SEARCH " + b"1," * 100_000 + b"1\r\n"
    started = time.monotonic()
    for index in range(len(line)):
        framer.feed(line[index : index + 1])
        if framer.next_event() is not None:
            break
    else:
        raise AssertionError("no frame")
    assert time.monotonic() - started < 10


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        Framer(0, 10)
    with pytest.raises(ValueError):
        Framer(100, -1)


@pytest.mark.parametrize(("line", "name"), [
    (b"a REPLACE 4 Drafts {2000}\r\n", b"REPLACE"),
    (b"a uid replace 4 Drafts {2000}\r\n", b"UID REPLACE"),
    (b"a APPEND Drafts {2000}\r\n", b"APPEND"),
])
def test_a_message_literal_is_bounded_by_the_literal_limit_not_the_command_one(line: bytes, name: bytes) -> None:
    """APPEND's and REPLACE's (also UID REPLACE's) message may be as large as max_literal; the
    literal of any other command only max_command_literal. The command is named in both words."""
    framer = Framer(8192, 4096, max_command_literal=1000)
    framer.feed(line)
    event = framer.next_event()
    assert isinstance(event, NeedContinuation) and event.command == name and event.size == 2000
    framer = Framer(8192, 4096, max_command_literal=1000)
    framer.feed(b"a UID SEARCH TEXT {2000}\r\n")
    error = framer.next_event()
    assert isinstance(error, FrameError) and error.kind is FrameErrorKind.LITERAL_TOO_BIG
    assert error.command == b"UID SEARCH"


def test_uid_alone_or_with_an_overlong_word_is_named_uid() -> None:
    framer = Framer(8192, 4096)
    framer.feed(b"a UID {5}\r\n")
    event = framer.next_event()
    assert isinstance(event, NeedContinuation) and event.command == b"UID"
    framer = Framer(8192, 4096)
    framer.feed(b"a UID " + b"X" * 40 + b" {5}\r\n")
    event = framer.next_event()
    assert isinstance(event, NeedContinuation) and event.command == b"UID"


class RecordingSpool:
    """An in-memory LiteralSpool that records what the framer does with it."""

    def __init__(self, fail_write_after: int | None = None, fail_read: bool = False) -> None:
        self.data = bytearray()
        self.writes = 0
        self.reads = 0
        self.closed = False
        self.fail_write_after = fail_write_after
        self.fail_read = fail_read

    def write(self, data: memoryview) -> None:
        if self.fail_write_after is not None and len(self.data) + len(data) > self.fail_write_after:
            raise OSError(28, "No space left on device")
        self.data += data
        self.writes += 1

    def read_all(self) -> bytes:
        self.reads += 1
        if self.fail_read:
            raise OSError(5, "Input/output error")
        return bytes(self.data)

    def close(self) -> None:
        assert not self.closed
        self.closed = True


def spooling_framer(threshold: int = 100, fail_write_after: int | None = None,
                    fail_read: bool = False) -> tuple[Framer, list[RecordingSpool]]:
    made: list[RecordingSpool] = []

    def factory(_size: int) -> RecordingSpool:
        made.append(RecordingSpool(fail_write_after, fail_read))
        return made[-1]

    return Framer(8192, 1 << 20, spool=factory, spool_threshold=threshold), made


def test_a_large_literal_goes_to_the_spool_as_it_arrives() -> None:
    framer, made = spooling_framer()
    framer.feed(b"a APPEND INBOX {1000}\r\n")
    assert isinstance(framer.next_event(), NeedContinuation)
    message = bytes(range(256)) * 3 + b"x" * 232
    for start in range(0, 1000, 300):
        framer.feed(message[start : start + 300])
        if start + 300 < 1000:
            assert framer.next_event() is None
            # The octets so far are in the spool, not in the framer.
            assert framer.buffered == 0 and framer.held_bytes < 100
            assert bytes(made[0].data) == message[: start + 300]
    framer.feed(b" extra\r\na NOOP\r\n")
    events = drain(framer)
    assert events == [CommandFrame(b"a", (b"a APPEND INBOX ", Literal(message), b" extra")),
                      CommandFrame(b"a", (b"a NOOP",))]
    assert len(made) == 1 and made[0].closed and made[0].writes == 4


def test_a_literal_below_the_threshold_stays_in_memory() -> None:
    framer, made = spooling_framer(threshold=100)
    framer.feed(b"a APPEND INBOX {99+}\r\n" + b"m" * 99 + b"\r\n")
    assert drain(framer) == [CommandFrame(b"a", (b"a APPEND INBOX ", Literal(b"m" * 99, synchronizing=False), b""))]
    assert made == []


@pytest.mark.parametrize("fail", ["write", "read"])
def test_a_failing_spool_refuses_the_command_and_framing_goes_on(fail: str) -> None:
    framer, made = spooling_framer(fail_write_after=500 if fail == "write" else None, fail_read=fail == "read")
    framer.feed(b"t1 APPEND INBOX {1000+}\r\n" + b"y" * 400)
    assert framer.next_event() is None
    framer.feed(b"y" * 400)
    events = drain(framer)
    if fail == "write":
        [error], events = events, []
        framer.feed(b"y" * 200 + b" {5+}\r\nzzzzz\r\nt2 NOOP\r\n")
    else:
        assert events == []
        framer.feed(b"y" * 200 + b" {5+}\r\nzzzzz\r\nt2 NOOP\r\n")
        error, *events = drain(framer)
    assert isinstance(error, FrameError)
    assert (error.kind, error.tag, error.command, error.size) == (
        FrameErrorKind.LITERAL_UNSPOOLED, b"t1", b"APPEND", 1000)
    assert "No space left" in error.text if fail == "write" else "Input/output" in error.text
    # The rest of the literal and of the command (a further {5+} literal too) are discarded.
    assert events + drain(framer) == [CommandFrame(b"t2", (b"t2 NOOP",))]
    assert made[0].closed


def test_an_abandoned_literal_closes_its_spool() -> None:
    framer, made = spooling_framer()
    framer.feed(b"a APPEND INBOX {1000}\r\n")
    assert isinstance(framer.next_event(), NeedContinuation)
    framer.feed(b"q" * 500)
    assert framer.next_event() is None
    framer.discard_buffer()  # the connection is lost (ImapSession.connection_lost)
    assert made[0].closed
    framer.feed(b"b NOOP\r\n")
    assert drain(framer) == [CommandFrame(b"b", (b"b NOOP",))]


def test_a_refused_synchronising_literal_never_opens_a_spool() -> None:
    framer, made = spooling_framer()
    framer.feed(b"a APPEND INBOX {1000}\r\n")
    assert isinstance(framer.next_event(), NeedContinuation)
    framer.reject_literal()
    framer.feed(b"b NOOP\r\n")
    assert drain(framer) == [CommandFrame(b"b", (b"b NOOP",))]
    assert made == []


def test_a_multiappend_holds_its_spooled_messages_on_disk_until_the_command_is_complete() -> None:
    framer, made = spooling_framer()
    first, second = b"1" * 500, b"2" * 700
    framer.feed(b"a APPEND INBOX {500+}\r\n" + first + b" (\\Seen) {700}\r\n")
    assert isinstance(framer.next_event(), NeedContinuation)
    framer.feed(second[:300])
    assert framer.next_event() is None
    # The first message is complete, but neither is read back while the second arrives.
    assert [spool.reads for spool in made] == [0, 0] and framer.held_bytes < 100
    framer.feed(second[300:] + b"\r\n")
    [frame] = drain(framer)
    assert frame == CommandFrame(b"a", (b"a APPEND INBOX ", Literal(first, synchronizing=False), b" (\\Seen) ",
                                        Literal(second), b""))
    assert [(spool.reads, spool.closed) for spool in made] == [(1, True), (1, True)]


def test_smaller_literals_are_spooled_once_the_command_holds_the_threshold_in_memory() -> None:
    framer, made = spooling_framer(threshold=100)
    framer.feed(b"a APPEND INBOX {60+}\r\n" + b"a" * 60 + b" {30+}\r\n" + b"b" * 30 + b" {20+}\r\n" + b"c" * 20
                + b" {5+}\r\n" + b"d" * 5 + b"\r\n")
    [frame] = drain(framer)
    assert [len(part) for part in frame.parts if isinstance(part, Literal)] == [60, 30, 20, 5]
    # 60 + 30 stay in memory; 20 more would make 110: that one goes to a spool; 5 more make 95.
    assert [bytes(spool.data) for spool in made] == [b"c" * 20]


def test_continuations_carry_the_pieces_since_the_last_one() -> None:
    """NeedContinuation.pieces: the line text and literal sizes since the command's previous
    continuation (a spooled literal's too), ending with the text announcing the literal asked
    for; ``fresh`` on the command's first."""
    framer, made = spooling_framer(threshold=100)
    framer.feed(b"a APPEND INBOX {3+}\r\nabc {150+}\r\n" + b"x" * 150 + b" CATENATE (TEXT {4}\r\n")
    assert framer.next_event() == NeedContinuation(b"a", 4, b"APPEND", False, 157, 3, 3, b"a APPEND INBOX ",
                                                   (b"a APPEND INBOX ", 3, b" ", 150, b" CATENATE (TEXT "), True)
    assert [bytes(spool.data) for spool in made] == [b"x" * 150]
    framer.feed(b"abcd URL {5+}\r\n/x/;1 TEXT {1}\r\n")
    assert framer.next_event() == NeedContinuation(b"a", 1, b"APPEND", False, 163, 5, 3, b"a APPEND INBOX ",
                                                   (b" URL ", 5, b" TEXT "), False)
    framer.feed(b"z)\r\n")
    assert isinstance(framer.next_event(), CommandFrame)
    framer.feed(b"b APPEND INBOX {1}\r\n")  # the next command starts afresh
    assert framer.next_event() == NeedContinuation(b"b", 1, b"APPEND", False, 1, 1, 1, b"b APPEND INBOX ",
                                                   (b"b APPEND INBOX ",), True)
