"""Fuzzing the framer and the parser together: whatever a client sends, the only exception is
ParseError, memory stays bounded and framing resynchronises.

GXIMAP_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_parser_fuzz.py   (the `make fuzz` mode)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gximap.imap import imapurl
from gximap.imap.commands import Command, Fetch, Noop, PartialRange, Search, Sort
from gximap.imap.framing import (
    CommandFrame,
    CommandParts,
    FrameError,
    FrameEvent,
    Framer,
    Literal,
    NeedContinuation,
)
from gximap.imap.parser import AppendTally, ParseError, parse_command

EXAMPLES = int(os.environ.get("GXIMAP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MAX_LINE = 300
MAX_LITERAL = 600

SEED_COMMANDS = [
    b"a1 LOGIN {5+}\r\nalice \"pass\\\"word\"\r\n",
    b"a2 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n",
    b"a3 SELECT INBOX (CONDSTORE QRESYNC (67890007 2005 41,43:211 (1:5 1:5)))\r\n",
    b"a4 UID FETCH 1:*,5 (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100> BINARY[1.2]) (CHANGEDSINCE 5 VANISHED)\r\n",
    b"a5 SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR OR FROM x TO {2+}\r\nyy NOT (SEEN UNDELETED) 1:5 UID $\r\n",
    b"a6 APPEND INBOX (\\Seen $x) \" 7-Jul-1996 02:44:25 -0700\" {3+}\r\nabc ~{2+}\r\n\x00b UTF8 (~{1+}\r\nz)\r\n",
    b"a7 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"%\" \"INBOX/&AOk-\") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n",
    b"a8 UID STORE 1:3 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Deleted foo)\r\n",
    b"a9 UID SORT RETURN (COUNT) (REVERSE DATE SUBJECT) UTF-8 SINCE 1-Feb-1994 MODSEQ \"/flags/\\\\seen\" all 5\r\n",
    b"b1 THREAD REFERENCES US-ASCII HEADER X-Foo {3+}\r\nbar\r\n",
    b"b2 GETMETADATA (MAXSIZE 1024 DEPTH infinity) INBOX (/private/comment /shared/x)\r\n",
    b"b3 SETMETADATA INBOX (/private/comment {4+}\r\nab\r\n /shared/x NIL)\r\n",
    b"b4 ID (\"name\" \"x\" \"version\" NIL)\r\n",
    b"b5 CREATE foo (USE (\\Sent))\r\n",
    b"b6 UID REPLACE * Drafts (\\Draft) \" 7-Jul-1996 02:44:25 -0700\" {3+}\r\nabc\r\n",
    b"d1 APPEND Drafts (\\Seen) CATENATE (TEXT {3+}\r\nabc URL \"/INBOX;UIDVALIDITY=1/;UID=5/;SECTION=1.MIME\""
    b" URL {13+}\r\n/INBOX/;UID=5 UTF8 (~{1+}\r\n\x00)) {2+}\r\nxy\r\n",
    b"b6 STATUS \"a b\" (MESSAGES UIDNEXT SIZE)\r\n",
    b"b7 SETQUOTA \"\" (STORAGE 512)\r\n",
    b"b8 ENABLE QRESYNC UTF8=ACCEPT\r\n",
    b"b9 UID EXPUNGE 3000:3002\r\n",
    b"c1 RENAME {3+}\r\nold new\r\n",
    b"c2 COPY 2:4 MEETING\r\n",
    b"c3 IDLE\r\n",
    b"c4 UID SEARCH RETURN (MIN PARTIAL -1:-100 COUNT SAVE) UNDELETED UNKEYWORD $Junk\r\n",
    b"c5 SORT RETURN (PARTIAL 500:401) (REVERSE ARRIVAL) UTF-8 ALL\r\n",
    b"c6 UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 7 PARTIAL 1:4294967295 VANISHED)\r\n",
    b"c7 NOTIFY SET STATUS (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge))"
    b" (subtree (Lists {3+}\r\na b) (MessageNew MessageExpunge FlagChange)) (personal NONE)\r\n",
    b"c8 NOTIFY NONE\r\n",
    b"c9 UID SEARCH RETURN (UPDATE CONTEXT COUNT PARTIAL 1:10) OR SEEN SUBJECT {3+}\r\nabc\r\n",
    b"d2 SORT RETURN (CONTEXT UPDATE ALL) (REVERSE SUBJECT) UTF-8 UNSEEN\r\n",
    b"d3 CANCELUPDATE \"c9\" \"d2\"\r\n",
    b"d4 SEARCH RETURN (COUNT UPDATE (UID BODY[HEADER.FIELDS (TO FROM SUBJECT)])) FROM \"boss\"\r\n",
    b"d5 UID SORT RETURN (UPDATE (FLAGS BINARY.PEEK[1]<0.10>) ALL) (DATE) UTF-8 ALL\r\n",
]

TOKENS = [
    b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b"\"", b"\\", b"{3+}\r\nabc", b"~{2+}\r\n\x00x",
    b"{0+}\r\n", b"*", b"$", b"%", b":", b",", b"0", b"1", b"4294967296", b"99999999999999999999",
    b"NIL", b"NOT", b"OR", b"ALL", b"UID", b"FLAGS", b"BODY", b"BODY.PEEK", b"BINARY", b"HEADER",
    b"HEADER.FIELDS", b"MIME", b"TEXT", b"RETURN", b"CHARSET", b"UTF-8", b"UTF8", b"MODSEQ",
    b"CHANGEDSINCE", b"VANISHED", b"QRESYNC", b"CONDSTORE", b"STATUS", b"USE", b"\\Seen", b"\\Recent",
    b"\\*", b"&AOk-", b"&", b"1-Feb-1994", b"\"17-Jul-1996 02:44:25 -0700\"", b"INBOX", b"\xc3\xa9",
    b"\x00", b"\r", b"=", b"AGFsaWNlAHB3", b"MAXSIZE", b"DEPTH", b"/private/x", b"+", b"-",
    b"PARTIAL", b"PARTIAL ", b"-1:-5", b"5:1", b"-0", b"01", b"4294967295", b"COUNT", b"SAVE", b"MIN",
    b"SET", b"NONE", b"selected-delayed", b"inboxes", b"subtree", b"mailboxes", b"MessageNew",
    b"UPDATE", b"CONTEXT", b"MessageExpunge", b"FlagChange", b"MailboxName", b"SubscriptionChange", b"AnnotationChange",
]
COMMAND_NAMES = [
    b"CAPABILITY", b"NOOP", b"LOGOUT", b"STARTTLS", b"LOGIN", b"AUTHENTICATE", b"ID", b"ENABLE",
    b"SELECT", b"EXAMINE", b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE", b"LIST",
    b"XLIST", b"LSUB", b"NAMESPACE", b"STATUS", b"APPEND", b"REPLACE", b"IDLE", b"CHECK", b"CLOSE", b"UNSELECT",
    b"EXPUNGE", b"COPY", b"MOVE", b"FETCH", b"STORE", b"SEARCH", b"SORT", b"THREAD", b"COMPRESS",
    b"GETQUOTA", b"GETQUOTAROOT", b"SETQUOTA", b"GETMETADATA", b"SETMETADATA", b"UNAUTHENTICATE",
    b"NOTIFY", b"CANCELUPDATE", b"UID FETCH", b"UID SEARCH", b"UID STORE", b"UID SORT", b"UID THREAD", b"UID EXPUNGE",
]


def fed_events(stream: bytes, chunks: list[int], framer: Framer) -> Iterator[tuple[FrameEvent, int]]:
    """Feed ``stream`` in chunks of the given sizes; yield each event with the size of the chunk
    fed last."""
    position = 0
    sizes = iter(chunks)
    while position < len(stream):
        size = max(1, next(sizes, 64))
        framer.feed(stream[position : position + size])
        position += size
        while (event := framer.next_event()) is not None:
            yield event, size


def run_stream(stream: bytes, chunks: list[int], utf8: bool, literal_minus: bool) -> list[object]:
    """Feed ``stream`` in chunks of the given sizes; parse every frame.  Returns the outcomes."""
    framer = Framer(MAX_LINE, MAX_LITERAL, literal_minus=literal_minus)
    outcomes: list[object] = []
    for event, size in fed_events(stream, chunks, framer):
        if isinstance(event, CommandFrame):
            try:
                outcomes.append(parse_command(event, utf8=utf8, max_nesting=8, max_args=64))
            except ParseError as error:
                assert not error.internal, f"parser bug: {error.__cause__!r}"
                outcomes.append(error)
        elif isinstance(event, FrameError):
            outcomes.append(event)
        else:
            assert isinstance(event, NeedContinuation)
        # Bounded memory: a partial line or literal, plus the pieces already framed.
        assert framer.held_bytes <= MAX_LINE + MAX_LITERAL + size
    return outcomes


chunkings = st.lists(st.integers(1, 97), max_size=40)


@FUZZ
@given(st.binary(max_size=2000), chunkings, st.booleans(), st.booleans())
def test_random_bytes(stream: bytes, chunks: list[int], utf8: bool, literal_minus: bool) -> None:
    run_stream(stream, chunks, utf8, literal_minus)


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, where, token in edits:
        if not out:
            out += token
            continue
        index = where % len(out)
        if kind == 0:
            out[index : index + 1] = b""
        elif kind == 1:
            out[index:index] = token
        elif kind == 2:
            out[index : index + len(token)] = token
        else:
            out[index] = (out[index] + where) % 256
    return bytes(out)


edit_lists = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.sampled_from(TOKENS)), max_size=6
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SEED_COMMANDS), edit_lists), min_size=1, max_size=6),
       chunkings, st.booleans())
def test_mutated_commands(commands: list[tuple[bytes, list]], chunks: list[int], utf8: bool) -> None:
    stream = b"".join(mutate(command, edits) for command, edits in commands)
    run_stream(stream, chunks, utf8, literal_minus=False)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(COMMAND_NAMES),
                          st.lists(st.sampled_from(TOKENS), max_size=25)), min_size=1, max_size=5),
       chunkings)
def test_token_soup(commands: list[tuple[bytes, list[bytes]]], chunks: list[int]) -> None:
    stream = b"".join(
        b"t%d " % index + name + b" " + b"".join(tokens) + b"\r\n"
        for index, (name, tokens) in enumerate(commands)
    )
    run_stream(stream, chunks, utf8=False, literal_minus=True)


@FUZZ
@given(st.binary(max_size=1500).map(lambda data: data.replace(b"{", b"")), chunkings)
def test_framing_resyncs_after_garbage(garbage: bytes, chunks: list[int]) -> None:
    """Garbage without literal announcements, however long, never swallows the next line."""
    outcomes = run_stream(garbage + b"\r\nZZZ NOOP\r\n", chunks, utf8=False, literal_minus=False)
    assert isinstance(outcomes[-1], Noop) and outcomes[-1].tag == b"ZZZ"


frame_parts = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.binary(max_size=12)), max_size=20
).map(b"".join)
literals = st.builds(Literal, st.binary(max_size=20), st.booleans(), st.booleans())


@FUZZ
@given(st.sampled_from(COMMAND_NAMES), st.lists(st.tuples(frame_parts, literals), max_size=4),
       frame_parts, st.booleans())
def test_hand_built_frames(name: bytes, pairs: list[tuple[bytes, Literal]], tail: bytes, utf8: bool) -> None:
    """Frames the framer could never produce (literals anywhere) still only raise ParseError."""
    parts: list[bytes | Literal] = []
    first = b"x " + name + b" "
    for piece, literal in pairs:
        parts.extend((first + piece, literal))
        first = b""
    parts.append(first + tail)
    try:
        result = parse_command(CommandFrame(b"x", cast(CommandParts, tuple(parts))), utf8=utf8, max_nesting=6, max_args=32)
    except ParseError as error:
        assert not error.internal, f"parser bug: {error.__cause__!r}"
    else:
        assert isinstance(result, Command)


# -- PARTIAL (RFC 9394) ranges, valid and broken, where the grammar takes one -------------------

_PARTIAL_GRAMMAR = re.compile(rb"(-?)([1-9][0-9]*):(-?)([1-9][0-9]*)")
PARTIAL_PLACES = [  # each valid with a valid range in place of %b
    b"t SEARCH RETURN (PARTIAL %b) ALL",
    b"t UID SEARCH RETURN (COUNT PARTIAL %b MIN SAVE) UNDELETED",
    b"t UID SORT RETURN (PARTIAL %b) (DATE) UTF-8 ALL",
    b"t SORT RETURN (MAX PARTIAL %b) (SUBJECT) US-ASCII SEEN",
    b"t UID FETCH 1:* (FLAGS) (PARTIAL %b)",
    b"t UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 PARTIAL %b VANISHED)",
    b"t FETCH 2:* UID (PARTIAL %b CHANGEDSINCE 5)",
]
partial_numbers = st.one_of(
    st.integers(0, 12).map(str), st.integers(2**32 - 3, 2**32 + 2).map(str),
    st.sampled_from(["00", "01", "007", "*", "", "$", "99999999999999999999", "1.5", "1e3"]),
)
partial_texts = st.one_of(
    st.builds(lambda sign, a, b: f"{sign}{a}:{sign}{b}", st.sampled_from(["", "-"]),  # valid ones
              st.integers(1, 0xFFFFFFFF), st.integers(1, 0xFFFFFFFF)),
    st.builds(lambda s1, n1, s2, n2: f"{s1}{n1}:{s2}{n2}", st.sampled_from(["", "-", "+", "--"]), partial_numbers,
              st.sampled_from(["", "-", "+"]), partial_numbers),
    partial_numbers,  # a single number
    st.builds(lambda a, b, tail: f"{a}:{b}{tail}", st.integers(1, 9), st.integers(1, 9),
              st.sampled_from([",7", ":3", " 4", "", ")", "(", '"'])),
    st.builds(lambda a, b: f'"{a}:{b}"', st.integers(1, 9), st.integers(1, 9)),  # quoted
).map(str.encode)


def partial_oracle(text: bytes) -> PartialRange | None:
    """The range RFC 9394 section 4 reads from ``text`` (partial-range-first / -last, nz-numbers
    of 32 bits, one sign for both), or None when the grammar does not take it."""
    found = _PARTIAL_GRAMMAR.fullmatch(text)
    if found is None or found[1] != found[3]:
        return None
    first, second = int(found[2]), int(found[4])
    if max(first, second) > 0xFFFFFFFF:
        return None
    sign = -1 if found[1] else 1
    return PartialRange(sign * first, sign * second)


@FUZZ
@given(st.sampled_from(PARTIAL_PLACES), partial_texts, st.booleans())
def test_partial_ranges_parse_exactly_as_the_grammar(place: bytes, text: bytes, lower: bool) -> None:
    """A PARTIAL range in each place the grammar takes one: the command parses, with that range,
    exactly when RFC 9394's ABNF takes it; else a ParseError (a tagged BAD), never another error."""
    line = place % text
    if lower:
        line = line.replace(b"PARTIAL", b"partial")  # keywords are case-insensitive
    expected = partial_oracle(text)
    (outcome,) = run_stream(line + b"\r\n", [4096], utf8=False, literal_minus=False)
    if expected is None:
        assert isinstance(outcome, ParseError), (line, outcome)
        return
    assert isinstance(outcome, (Search, Sort, Fetch)), (line, outcome)
    assert outcome.partial == expected and bytes(outcome.partial) == text, (line, outcome)


def plain_page(partial: PartialRange, items: list[int]) -> list[int]:
    """The items at ``partial``'s positions by a plain reading of RFC 9394 section 3.1: positions
    1..count in order (or -1 the last, -2 the one before), either end first, those that exist."""
    low, high = sorted((abs(partial.start), abs(partial.end)))
    count = len(items)
    return [item for at, item in enumerate(items, 1) if low <= (at if partial.start > 0 else count - at + 1) <= high]


@FUZZ
@given(st.integers(0, 40), st.integers(1, 60), st.integers(1, 60), st.booleans())
def test_partial_range_selects_the_positions(count: int, first: int, second: int, from_last: bool) -> None:
    """PartialRange.select against plain_page."""
    items = list(range(100, 100 + count))
    sign = -1 if from_last else 1
    partial = PartialRange(sign * first, sign * second)
    assert partial.select(items) == plain_page(partial, items)


def test_seed_commands_are_valid() -> None:
    """The mutation seeds parse cleanly, so mutations start from deep inside the grammar."""
    outcomes = run_stream(b"".join(SEED_COMMANDS), [4096], utf8=False, literal_minus=False)
    assert all(isinstance(outcome, Command) for outcome in outcomes), outcomes
    assert len(outcomes) == len(SEED_COMMANDS)


class _MemorySpool:
    def __init__(self, closed: list[bool]) -> None:
        self.data = bytearray()
        self.closed = closed
        closed.append(False)
        self.index = len(closed) - 1

    def write(self, data: memoryview) -> None:
        self.data += data

    def read_all(self) -> bytes:
        return bytes(self.data)

    def close(self) -> None:
        assert not self.closed[self.index], "a spool closed twice"
        self.closed[self.index] = True


def _events(stream: bytes, chunks: list[int], framer: Framer) -> list[object]:
    events: list[object] = []
    for event, _size in fed_events(stream, chunks, framer):
        events.append(event)
        if isinstance(event, NeedContinuation) and event.size % 3 == 0:
            framer.reject_literal()  # as the session does for some (over quota, no mailbox)
    return events


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SEED_COMMANDS), edit_lists), min_size=1, max_size=6),
       chunkings, st.integers(1, 8))
def test_spooling_literals_frames_exactly_as_holding_them(commands: list[tuple[bytes, list]], chunks: list[int],
                                                          threshold: int) -> None:
    """Spooling changes where a literal waits, never what is framed, and closes every spool."""
    stream = b"".join(mutate(command, edits) for command, edits in commands)
    closed: list[bool] = []
    spooling = Framer(MAX_LINE, MAX_LITERAL, spool=lambda _size: _MemorySpool(closed), spool_threshold=threshold)
    assert _events(stream, chunks, spooling) == _events(stream, chunks, Framer(MAX_LINE, MAX_LITERAL))
    spooling.discard_buffer()  # the connection ends
    assert all(closed)


url_texts = st.one_of(
    st.binary(max_size=120),
    st.lists(st.sampled_from([b"imap://", b"alice", b";AUTH=*", b"@", b"host", b":143", b"/", b"INBOX",
                              b"&AOk-", b"%C3%A9", b"%", b"%2", b";UIDVALIDITY=", b";UID=", b"/;UID=",
                              b"/;SECTION=", b"/;PARTIAL=", b";URLAUTH=", b"1", b"0", b".", b"MIME",
                              b"HEADER.FIELDS%20(To)", b"]", b"?"]), max_size=14).map(b"".join),
)


@FUZZ
@given(url_texts)
def test_imap_urls_parse_or_refuse(url: bytes) -> None:
    """Any URL a client sends either names a message part or is refused with UrlError."""
    try:
        found = imapurl.parse(url)
    except imapurl.UrlError as error:
        assert str(error)
        return
    assert found.uid >= 1 and found.mailbox


# APPEND line text the tally reads: random octets, or its words and parentheses in any order.
append_texts = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from([b" ", b"(", b")", b"CATENATE", b"catenate", b"URL", b"TEXT", b"UTF8", b'"',
                              b'"a b"', b"\\Seen"]), max_size=10).map(b"".join),
)


@FUZZ
@given(st.lists(st.one_of(append_texts, st.integers(0, 1000)), max_size=12))
def test_append_tally_is_a_lower_bound(pieces: list[bytes | int]) -> None:
    """Whatever an APPEND's pieces are, the tally counts no more octets than its literals hold,
    and no more messages than literals and CATENATE lists (a word and its "(" are in one piece:
    a literal ends a piece)."""
    tally = AppendTally()
    for piece in [b"a APPEND INBOX ", *pieces]:
        tally.feed(piece)
    assert 0 <= tally.octets <= sum(piece for piece in pieces if isinstance(piece, int))
    lists = sum(piece.upper().count(b"CATENATE") for piece in pieces if isinstance(piece, bytes))
    assert 0 <= tally.messages <= sum(1 for piece in pieces if isinstance(piece, int)) + lists
    assert tally.messages <= tally.arguments   # each message is one of the command's arguments
