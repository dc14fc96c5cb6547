"""Fuzzing live IMAP sessions: random, mutated and hostile command streams, split at random points,
thrown at ImapSession over a real midb store (the pool's side played by tests/conversation.py).

Invariants: no exception escapes the session; every server line is a well-formed response
(``* ...``, ``+ ...`` or ``tag OK|NO|BAD ...``); the session always settles; after the stream, a
client that gets out of whatever state it left (literal, AUTHENTICATE, IDLE) gets its next command
answered, unless the server said ``* BYE`` and closed; buffered input stays within the configured
limits, and the memory a session allocates stays bounded.

GXIMAP_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_session_fuzz.py   (the `make fuzz` mode)
"""

from __future__ import annotations

import os
import re
import tracemalloc
from pathlib import Path

import pytest
from conversation import PASSWORD, Conversation, InlineExecutor, split_responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_parser_fuzz import PARTIAL_PLACES, partial_oracle, partial_texts, plain_page

from gximap.auth.service import AuthService
from gximap.session.context import ServerContext, Settings
from midb.store import Store

EXAMPLES = int(os.environ.get("GXIMAP_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

MAX_LINE = 2048
MAX_LITERAL = 4096
FIXTURE_MESSAGES = 3   # in alice's INBOX
MEMORY_BOUND = 8 * 1024 * 1024  # bytes a session may allocate while handling one fuzzed stream
REPO = Path(__file__).resolve().parent.parent

_RESPONSE = re.compile(rb"(\* |\+( |$)|[^\s()*+{%\"\\]+ (OK|NO|BAD)( |$))")

SEEDS = [
    b"a1 CAPABILITY\r\n",
    b"a2 LOGIN alice secret\r\n",
    b"a3 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n",
    b"a4 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    b"a5 AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n",
    b"a6 SELECT INBOX (CONDSTORE)\r\n",
    b"a7 EXAMINE \"INBOX\"\r\n",
    b"a8 FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER])\r\n",
    b"a9 UID FETCH 1:* (BODY.PEEK[1]<0.10> BINARY.PEEK[1] BINARY.SIZE[1] MODSEQ) (CHANGEDSINCE 1)\r\n",
    b"a0 UID FETCH 1:* (UID PREVIEW (LAZY) SAVEDATE)\r\n",
    b"a0 UID FETCH 1:* (EMAILID THREADID)\r\n",
    b"a0 UID SEARCH OR EMAILID M0 THREADID T0\r\n",
    b"a0 STATUS INBOX (MAILBOXID)\r\n",
    b"b1 STORE 1:2 +FLAGS.SILENT (\\Seen $Fuzz)\r\n",
    b"b2 UID STORE 1:* -FLAGS (\\Deleted)\r\n",
    b"b3 SEARCH RETURN (MIN MAX COUNT ALL) OR FROM bob NOT SUBJECT x\r\n",
    b"b4 UID SEARCH CHARSET UTF-8 TEXT {2+}\r\nhi\r\n",
    b"b5 APPEND INBOX (\\Flagged) {24+}\r\nSubject: fuzz\r\n\r\nbody\r\n\r\n",
    b"b6 APPEND INBOX {24}\r\nSubject: sync\r\n\r\nbody\r\n\r\n",
    b"b7 CREATE Fuzz/Child\r\n",
    b"n1 NOTIFY SET STATUS (selected (MessageNew (UID FLAGS BODY.PEEK[HEADER]) MessageExpunge FlagChange))"
    b" (personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange MailboxMetadataChange))\r\n",
    b"n2 NOTIFY SET (selected-delayed (MessageNew MessageExpunge)) (subtree Fuzz (MessageNew MessageExpunge))\r\n",
    b"n3 NOTIFY NONE\r\n",
    b"n4 NOTIFY SET (inboxes (AnnotationChange MessageNew MessageExpunge))\r\n",
    b"b8 RENAME Fuzz Fuzzed\r\n",
    b"b9 DELETE Fuzzed/Child\r\n",
    b"c1 LIST \"\" \"*\" RETURN (SPECIAL-USE CHILDREN STATUS (MESSAGES UNSEEN))\r\n",
    b"c2 LSUB \"\" \"%\"\r\n",
    b"c3 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE HIGHESTMODSEQ)\r\n",
    b"c4 COPY 1 Archive\r\n",
    b"c5 UID MOVE 1 Trash\r\n",
    b"c6 EXPUNGE\r\n",
    b"c7 UID EXPUNGE 1:5\r\n",
    b"c8 IDLE\r\nDONE\r\n",
    b"c9 NOOP\r\n",
    b"d1 CHECK\r\n",
    b"d2 CLOSE\r\n",
    b"d3 UNSELECT\r\n",
    b"d4 ENABLE UTF8=ACCEPT CONDSTORE QRESYNC IMAP4rev2\r\n",
    b"d5 NAMESPACE\r\n",
    b"d6 ID (\"name\" \"fuzz\")\r\n",
    b"d7 UNAUTHENTICATE\r\n",
    b"d8 STARTTLS\r\n",
    b"d9 COMPRESS DEFLATE\r\n",
    b"e1 LOGOUT\r\n",
    b"e2 SELECT Trash\r\n",
    b"e3 SEARCH $\r\n",
    b"e4 FETCH $ FLAGS\r\n",
    b"e5 SUBSCRIBE \"&AOk-t&AOk-\"\r\n",
    b"e6 AUTHENTICATE LOGIN\r\n",
    b"e7 APPEND INBOX ~{5+}\r\nab\x00cd\r\n",
    b"e8 REPLACE 1 INBOX (\\Draft) {24+}\r\nSubject: again\r\n\r\nbody\r\n\r\n",
    b"e9 UID REPLACE * Drafts {24}\r\nSubject: synch\r\n\r\nbody\r\n\r\n",
    b"f1 UID SEARCH RETURN (MIN PARTIAL -1:-2 COUNT SAVE) UNDELETED\r\n",
    b"f2 SORT RETURN (PARTIAL 3:1) (REVERSE ARRIVAL) UTF-8 ALL\r\n",
    b"f3 UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 1 PARTIAL -1:-1 VANISHED)\r\n",
    b"f4 FETCH 1:* (BODY.PEEK[HEADER] PREVIEW) (PARTIAL 2:9)\r\n",
    b"f5 ENABLE UIDONLY CONDSTORE\r\n",
    b"f6 UID SEARCH OR 1:2 UID $\r\n",
    b"g1 SEARCH RETURN (UPDATE COUNT) OR SEEN FLAGGED\r\n",
    b"g2 UID SORT RETURN (UPDATE CONTEXT PARTIAL 1:3) (REVERSE SUBJECT) UTF-8 1:4 UNDELETED\r\n",
    b"g3 UID SEARCH RETURN (SAVE UPDATE) $ BODY body\r\n",
    b"g4 CANCELUPDATE \"g1\" \"g2\"\r\n",
    b"g5 CANCELUPDATE \"g3\"\r\n",
    b"g6 UID SEARCH RETURN (UPDATE (UID FLAGS BODY.PEEK[TEXT]<0.5>)) BODY body\r\n",
    b"g7 SORT RETURN (UPDATE (ENVELOPE RFC822) MIN) (SUBJECT) UTF-8 ALL\r\n",
    b"g8 APPEND INBOX {24+}\r\nSubject: again\r\n\r\nbody\r\n\r\n",
]

TOKENS = [
    b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b"\"", b"\\", b"{3+}\r\nabc", b"{4000}\r\n", b"{99999}\r\n",
    b"~{2+}\r\n\x00x", b"{0+}\r\n", b"*", b"$", b"%", b":", b",", b"0", b"1", b"4294967296", b"NIL",
    b"NOT", b"OR", b"ALL", b"UID", b"FLAGS", b"BODY[", b"BODY.PEEK[", b"HEADER.FIELDS (", b"RETURN",
    b"\\Seen", b"&AOk-", b"&", b"INBOX", b"\xc3\xa9", b"\x00", b"\r", b"\n", b"\r\n", b"DONE\r\n",
    b"*\r\n", b"+", b"-", b"=", b"AGFsaWNlAHNlY3JldA==", b"../", b"/", b"x" * 300,
    b"UPDATE", b"UPDATE (UID", b"CANCELUPDATE \"g1\"", b"PARTIAL ", b"-1:-5", b"5:1", b"-0", b"4294967295", b"(PARTIAL 1:2)",
]

# Escapes from any state a stream may leave the session in: the rest of an announced literal
# (filled up), an AUTHENTICATE exchange ("*" cancels), IDLE ("DONE"), a half-sent line.
RECOVERY = b"\r\n" + b"x" * (MAX_LITERAL + 8) + b"\r\n*\r\nDONE\r\n"
PROBE_TAG = b"zz99"


class PlainBackend:
    """The password check without scrypt: the fuzz targets the session, not the hash."""

    def authenticate(self, user: str, password: str) -> str | None:
        return user if user in ("alice", "bob") and password == PASSWORD else None

    def exists(self, user: str) -> bool:
        return user in ("alice", "bob")

    def failure_reason(self, user: str) -> str:
        return "bad password" if self.exists(user) else "unknown user"


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory):
    store = Store(tmp_path_factory.mktemp("fuzz") / "midb", fsync=False, data_path=[str(REPO / "data")])
    for name in ("alice", "bob"):
        store.create_account(name)
    inbox = store.get_folder("alice", "INBOX")
    assert inbox is not None
    for index in range(FIXTURE_MESSAGES):
        store.append("alice", inbox.id, b"From: bob@example.org\r\nSubject: m%d\r\n\r\nhello\r\n" % index)
    store.grant_owner("alice", "bob")
    from gximap.imap.codes import ResponseCodes

    auth = AuthService(store, PlainBackend(), auth_times=1_000_000, ip_times=0, executor=InlineExecutor())
    ctx = ServerContext(Settings(max_line=MAX_LINE, max_literal=MAX_LITERAL, max_nesting=8, max_args=64,
                                 max_bad_commands=40, insecure_auth=True, enable_id=True),
                        store, auth, ResponseCodes.load(str(REPO / "data")))
    yield ctx
    store.close()


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, where, token in edits:
        if not out:
            out += token
            continue
        index = where % len(out)
        if kind == 0:
            del out[index:index + 1 + where % 7]
        elif kind == 1:
            out[index:index] = token
        elif kind == 2:
            out[index:index + len(token)] = token
        else:
            out[index] = (out[index] + where) % 256
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.sampled_from(TOKENS)), max_size=5)
pieces = st.one_of(
    st.sampled_from(SEEDS),
    st.builds(mutate, st.sampled_from(SEEDS), edits),
    st.binary(max_size=120),
    st.builds(lambda tag, tokens: tag + b" " + b"".join(tokens) + b"\r\n",
              st.sampled_from([b"t1", b"t2", b"*", b"+", b""]), st.lists(st.sampled_from(TOKENS), max_size=20)),
)
streams = st.lists(pieces, min_size=1, max_size=14)
cuts = st.lists(st.integers(1, 400), max_size=30)


def check_lines(output: bytes) -> list[bytes]:
    lines = split_responses(output)
    for line in lines:
        assert _RESPONSE.match(line), f"malformed server line {line[:200]!r}"
        # A handler that raised is caught by the session and answered NO [SERVERBUG]: still a bug.
        assert b"[SERVERBUG]" not in line, f"a command handler failed: {line[:200]!r}"
    return lines


def _discarding(framer: object) -> int:
    """Octets of an oversized non-synchronizing literal the framer still drops (its private
    state: the fuzz harness needs to know, a real client just sends them)."""
    state = getattr(framer, "_state", None)
    return int(getattr(framer, "_literal_need", 0)) if getattr(state, "name", "") == "SKIP_BYTES" else 0


def drive(ctx: ServerContext, stream: bytes, chunks: list[int], tls: bool) -> list[bytes]:
    """Feed ``stream`` in chunks to a new connection; check every invariant on the way. Returns
    the server's responses."""
    conv = Conversation(users=(), context=ctx, tls=tls, starttls=not tls)
    session = conv.session
    lines = check_lines(b"".join(data for who, data in conv.transcript if who == "S"))
    try:
        position = 0
        sizes = iter(chunks)
        while position < len(stream) and not conv.closed:
            size = next(sizes, 97)
            chunk = stream[position:position + size]
            position += size
            lines += check_lines(conv._feed(chunk))
            # Pending input the session has not consumed stays within the limits.
            assert session.framer.buffered <= MAX_LINE + MAX_LITERAL + size
        if not conv.closed:
            # An oversized {n+} literal is read and discarded (RFC 7888 section 4): a client has
            # to send all of it before its next command counts. Send it when that is reasonable.
            discarding = _discarding(session.framer)
            if discarding > 4 * 1024 * 1024:
                return lines
            while discarding > 0 and not conv.closed:
                lines += check_lines(conv._feed(b"d" * min(discarding, 1 << 20)))
                discarding = _discarding(session.framer)
        if not conv.closed:
            lines += check_lines(conv._feed(RECOVERY))
        if not conv.closed:
            answer = check_lines(conv._feed(PROBE_TAG + b" NOOP\r\n"))
            lines += answer
            assert conv.closed or any(line.startswith(PROBE_TAG + b" ") for line in answer), \
                f"the session stopped answering: {conv.transcript[-4:]!r}"
        if conv.closed:  # a clean disconnect: the server said goodbye
            assert any(line.startswith(b"* BYE ") for line in lines[-3:]), lines[-3:]
    finally:
        conv.close()
    return lines


def _numbers(sequence_set: bytes) -> list[int]:
    """The numbers of an answered sequence set (``NIL``: none), in the order written."""
    if sequence_set == b"NIL":
        return []
    numbers: list[int] = []
    for piece in sequence_set.split(b","):
        low, _, high = piece.partition(b":")
        first, last = int(low), int(high or low)
        step = 1 if last >= first else -1
        numbers.extend(range(first, last + step, step))
    return numbers


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PARTIAL_PLACES), partial_texts), min_size=1, max_size=6), cuts)
def test_partial_commands(context: ServerContext, commands: list[tuple[bytes, bytes]], chunks: list[int]) -> None:
    """PARTIAL (RFC 9394) in SEARCH, SORT and FETCH with ranges valid and broken: a broken one is
    answered BAD, a valid one OK, and a UID SEARCH's page is the one at the range's positions."""
    conv = Conversation(users=(), context=context, tls=True)
    try:
        check_lines(conv._feed(b"p1 LOGIN alice " + PASSWORD.encode() + b"\r\np2 ENABLE QRESYNC\r\np3 SELECT INBOX\r\n"))
        matched = _numbers(b",".join(check_lines(conv._feed(b"p4 UID SEARCH ALL\r\n"))[0].split(b" ")[2:]) or b"NIL")
        for index, (place, text) in enumerate(commands):
            tag = b"q%d" % index
            stream = tag + (place % text)[1:] + b"\r\n"
            cut = chunks[index] if index < len(chunks) else len(stream)
            lines = check_lines(conv._feed(stream[:cut]) + conv._feed(stream[cut:]))
            expected = partial_oracle(text)
            status = lines[-1].split(b" ")[:2]
            assert status == [tag, b"BAD" if expected is None else b"OK"], (stream, lines)
            if expected is None or not place.startswith(b"t UID SEARCH"):
                continue
            (answer,) = [line for line in lines if line.startswith(b"* ESEARCH")]
            page = re.search(rb" PARTIAL \(([-0-9:]+) ([0-9:,]+|NIL)\)", answer)
            assert page is not None and page[1] == text, answer
            assert _numbers(page[2]) == plain_page(expected, matched), (answer, matched)
    finally:
        conv.close()


# Start some streams in the authenticated or selected state, so the fuzzing reaches deeper.
PREFIXES = [b"", b"p1 LOGIN alice secret\r\n", b"p1 LOGIN alice secret\r\np2 SELECT INBOX\r\n",
            b"p1 LOGIN bob!alice secret\r\np2 EXAMINE INBOX\r\n"]


@FUZZ
@given(st.sampled_from(PREFIXES), streams, cuts, st.booleans())
def test_fuzzed_command_streams(context: ServerContext, prefix: bytes, stream: list[bytes], chunks: list[int],
                                tls: bool) -> None:
    drive(context, prefix + b"".join(stream), chunks, tls)


UIDONLY_PREFIX = b"p1 LOGIN alice secret\r\np2 ENABLE UIDONLY\r\np3 SELECT INBOX\r\n"
_NUMBERED_RESPONSE = re.compile(rb"\* [0-9]+ (FETCH|EXPUNGE)\b")


@FUZZ
@given(streams, cuts)
def test_uidonly_streams_send_no_message_numbers(context: ServerContext, stream: list[bytes],
                                                 chunks: list[int]) -> None:
    """After ENABLE UIDONLY (RFC 9586) no FETCH or EXPUNGE response names a message number,
    whatever the stream does, unless it ends the session's ENABLEs (UNAUTHENTICATE)."""
    joined = b"".join(stream)
    lines = drive(context, UIDONLY_PREFIX + joined, chunks, True)
    # The prefix's answers come first: UIDONLY is on and INBOX selected, or the check says nothing.
    for tag in (b"p2 ", b"p3 "):
        assert next(line for line in lines if line.startswith(tag)).startswith(tag + b"OK "), lines[:8]
    if b"UNAUTH" not in joined.upper():
        numbered = [line[:120] for line in lines if _NUMBERED_RESPONSE.match(line)]
        assert not numbered, numbered


@FUZZ
@given(st.binary(max_size=3000), cuts)
def test_random_bytes(context: ServerContext, stream: bytes, chunks: list[int]) -> None:
    drive(context, stream, chunks, True)


HOSTILE = {  # built on demand: hypothesis would print them in full when a test fails
    "pipeline": lambda: b"h1 LOGIN alice secret\r\nh2 SELECT INBOX\r\n",
    "long line": lambda: b"h1 NOOP " + b"x" * 200_000 + b"\r\n",
    "two literals": lambda: b"h1 APPEND INBOX {4000+}\r\n" + b"y" * 4000 + b" {4000+}\r\n" + b"z" * 4000 + b"\r\n",
    "huge literal": lambda: b"h1 APPEND INBOX {99999999+}\r\n" + b"q" * 100_000,
    "big literal": lambda: b"h1 APPEND INBOX {300000+}\r\n" + b"q" * 300_000 + b"\r\n",
    "deep nesting": lambda: b"h1 SEARCH " + b"(" * 5000 + b"\r\n",
    "long sequence set": lambda: b"h1 FETCH " + b"1," * 1000 + b"1 FLAGS\r\n",
    "repeated fetch": lambda: b"h1 LOGIN alice secret\r\nh2 SELECT INBOX\r\nh3 FETCH 1:* (BODY[])\r\n" * 20,
}


def _trim_to_fixture(store: Store) -> None:
    """The module's store as the fixture made it, as far as messages go: the streams of the
    examples before (thousands in a long run) APPEND, COPY and MOVE into it, and "repeated
    fetch" (FETCH 1:* BODY[] twenty times) then answers with megabytes, which the harness keeps
    (the transcript, its lines) and tracemalloc counts as the session's."""
    for account in ("alice", "bob"):
        for entry in store.folder_entries(account):
            folder = store.get_folder(account, entry.name)
            if folder is None:
                continue
            keep = FIXTURE_MESSAGES if (account, entry.name) == ("alice", "INBOX") else 0
            extra = store.uids(account, folder.id)[keep:]
            if extra:
                store.remove_messages(account, folder.id, extra)


@settings(max_examples=max(10, EXAMPLES // 10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(streams, st.sampled_from(sorted(HOSTILE)))
def test_memory_stays_bounded(context: ServerContext, stream: list[bytes], hostile: str) -> None:
    _trim_to_fixture(context.store)
    data = HOSTILE[hostile]() + b"".join(stream)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        drive(context, data, [65536] * 64, True)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The stream itself is in memory once (up to ~300 KB here); the session adds little to it.
    assert peak < MEMORY_BOUND, f"peak {peak} bytes"


def test_memory_bound_holds_however_the_examples_before_grew_the_store(context: ServerContext) -> None:
    """A long run's earlier examples leave the module's store with thousands of messages; the
    memory check trims it to the fixture's first (_trim_to_fixture), or "repeated fetch" held
    megabytes of output in the harness and failed (peak 11 MB at 20,000 examples)."""
    inbox = context.store.get_folder("alice", "INBOX")
    assert inbox is not None
    for index in range(1500):
        context.store.append("alice", inbox.id, b"From: bob@example.org\r\nSubject: grown %d\r\n\r\nhello\r\n" % index)
    test_memory_stays_bounded.hypothesis.inner_test(context, [b"a1 CAPABILITY\r\n"], "repeated fetch")  # type: ignore[attr-defined]
    assert len(context.store.uids("alice", inbox.id)) == FIXTURE_MESSAGES
