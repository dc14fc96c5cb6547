"""Dovecot imaptest's mailbox scripts ported to conversations: copy, move, expunge, expunge2,
list, listext, select, store, subscribe and pipeline-connections (repository dovecot/imaptest,
src/tests/). How a script reads and becomes steps is in tests/imaptest_steps.py; each test
here names its script, and its steps follow the script's in the same order with the same checks.

What else matters for these scripts (imaptest's test-exec.c and test-parser.c):
* A script without ``state:`` starts with the test mailbox made anew, the messages of its mbox
  appended and the mailbox selected by every connection, the first connection first (so that one
  has the messages \\Recent). imaptest's default.mbox holds four messages; the messages here are
  our own (:data:`MESSAGES`). ``state: created`` is the mailbox made anew and empty, not selected;
  ``state: auth`` is logged in only. ``N`` before a command is the connection that sends it.
* Untagged responses nobody expects are allowed. The ``FLAGS`` list of a ``* n FETCH`` must be
  exactly the expected flags, in any order, but for \\Recent which may be extra
  (:func:`assert_flags`); the attribute list of a ``* LIST``/``* LSUB`` must hold the expected
  attributes, extra ones allowed, unless the script bans one (:class:`Listing`).
* ``$1``, ``$2`` ... is the sequence number now of the message that had that number when the
  command was sent: after an EXPUNGE the later ones move down.
* A tagged reply of ``""`` accepts anything; ``ok [read-only]`` is OK with that code.

Which version of a script: the imaptest history has several of some; the one ported is named at
each test, the latest we could tell (the others hold a subset of its steps). ``list`` is ported
as of commit 003f2813, which makes ``test3/test4`` with CREATE; commit 0502a5c8 leaves it to the
CREATE of ``test3/test4/test5`` and expects it ``\\Noselect``: Dovecot's choice, where gximap
makes the superior names real mailboxes as RFC 3501 section 6.3.3 says a server SHOULD.

Left out, as gximap does not have the extension: ``urlauth`` and ``urlauth-binary`` (RFC 4467
URLAUTH: GENURLAUTH, RESETKEY, URLFETCH) and ``uidbatches``, ``uidbatches-empty`` (UIDBATCHES,
a draft Dovecot implements). gximap advertises neither, and imaptest skips a script whose
``capabilities:`` the server lacks.

Difference, kept on purpose (noted at the step too): in ``expunge`` imaptest expects a FETCH of
a message another connection expunged, not yet announced, to answer with its UID and OK, as
Dovecot keeps such messages readable (RFC 2180 section 4.1.1); gximap answers ``NO
[EXPUNGEISSUED]`` without the FETCH response (section 4.1.2, which RFC 2180 allows as well).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation
from imaptest_steps import (
    MAILBOX,
    append,
    as_text,
    bad,
    caseless,
    fetches,
    fill,
    ok,
    parse_response,
    run,
    uids,
)

SEP = "/"
# Our stand-ins for imaptest's default.mbox (four messages without header fields; copy appends a
# fifth): plain text messages, each with a different body and INTERNALDATE (COPY keeps the date).
MESSAGES = [
    (f"From: imaptest@example.com\nSubject: message {number}\n\nbody {number}\n",
     f"{20 + number:02d}-Feb-2008 17:06:23 +0000")
    for number in range(1, 6)
]
DEFAULT_MESSAGES = 4


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


# -- reading responses ---------------------------------------------------------------------------

Arg = str | None | list["Arg"]


def parse(line: bytes) -> list[Arg]:
    """A response as imaptest compares it: atoms and strings alike as text, NIL as None, lists
    as lists."""
    parsed: list[Arg] = as_text(parse_response(line))
    return parsed


def assert_flags(actual: Arg, *expected: str) -> None:
    """imaptest's rule for ``FETCH (FLAGS (...))``: every expected flag there, nothing else
    but \\Recent (and Dovecot's $HasAttachment/$HasNoAttachment, which gximap does not set)."""
    assert isinstance(actual, list), actual
    have = {str(flag).lower() for flag in actual}
    want = {flag.lower() for flag in expected}
    assert want <= have and have - want <= {"\\recent"}, (actual, expected)


def fetched_once(lines: Iterable[bytes], seq: int) -> dict[str, Any]:
    """The items of the one ``* seq FETCH`` among ``lines`` (imaptest: it must come)."""
    items = [found for number, found in fetches(lines) if number == seq]
    assert len(items) == 1, (seq, list(lines))
    return items[0]


def untagged(lines: Iterable[bytes], *words: str) -> list[list[Arg]]:
    """The untagged responses starting with ``words`` (case-insensitive)."""
    wanted = [word.upper() for word in words]
    found = []
    for line in lines:
        args = parse(line)
        if args[0] == "*" and [str(arg).upper() for arg in args[1:1 + len(wanted)]] == wanted:
            found.append(args)
    return found


def code_value(lines: Iterable[bytes], code: str) -> str:
    """The argument text of the untagged ``* OK [code ...]`` among ``lines``."""
    prefix = b"* OK [" + code.encode() + b" "
    values = [line[len(prefix):line.index(b"]")].decode() for line in lines if line.upper().startswith(prefix)]
    assert len(values) == 1, (code, list(lines))
    return values[0]


class Listing:
    """The ``* LIST``/``* LSUB`` responses of one command: name -> (attributes, separator,
    extended items)."""

    def __init__(self, lines: Iterable[bytes], verb: str = "LIST") -> None:
        self.boxes: dict[str, tuple[set[str], Arg, list[Arg]]] = {}
        for args in untagged(lines, verb):
            attributes, separator, name, *extended = args[2:]
            assert isinstance(attributes, list) and isinstance(name, str), args
            assert name not in self.boxes, f"{name!r} listed twice"
            self.boxes[name] = ({str(flag).lower() for flag in attributes}, separator, extended)

    def has(self, name: str, *attributes: str, banned: Iterable[str] = (), extended: Arg = None) -> None:
        """``* list (attributes) sep name [(extended)]``: listed with these attributes (extra ones
        allowed but the banned), and with exactly this list of extended items when given."""
        assert name in self.boxes, (name, self.boxes)
        have, _separator, items = self.boxes[name]
        assert {attribute.lower() for attribute in attributes} <= have, (name, have)
        assert not have & {attribute.lower() for attribute in banned}, (name, have)
        if extended is not None:
            assert caseless(items) == [caseless(extended)], (name, items)

    def lacks(self, name: str, *attributes: str, extended: Arg = None) -> None:
        """``! list (attributes) sep name [(extended)]``: no response for ``name`` that would match."""
        if name not in self.boxes:
            return
        have, _separator, items = self.boxes[name]
        matches = {attribute.lower() for attribute in attributes} <= have
        if extended is not None:
            matches = matches and caseless(items) == [caseless(extended)]
        assert not matches, (name, have, items)


# -- driving -------------------------------------------------------------------------------------


def any_reply(conv: Conversation, command: bytes) -> list[bytes]:
    """A command whose tagged reply the script accepts whatever it is (``""``)."""
    return run(conv, command)[0]


def ok_code(conv: Conversation, command: bytes, code: bytes) -> list[bytes]:
    """``ok [code]`` after the command: the tagged OK with that response code."""
    responses, reply = run(conv, command)
    assert reply.upper().startswith(b"OK [" + code.upper() + b"]"), (command, responses, reply)
    return responses


def connection(conv: Conversation) -> Conversation:
    """Another connection of the same user (imaptest's ``connections: n``)."""
    other = conv.second_session()
    other.login()
    return other


def selected(conv: Conversation, connections: int) -> list[Conversation]:
    """The default start: the test mailbox made, DEFAULT_MESSAGES appended, selected by every
    connection (the first one first: it has the messages \\Recent)."""
    fill(conv, MESSAGES[:DEFAULT_MESSAGES])
    others = [connection(conv) for _ in range(connections - 1)]
    for session in others:
        ok(session, b"select " + MAILBOX.encode())
    return [conv, *others]


def expunged(lines: Iterable[bytes]) -> list[int]:
    return [int(str(args[1])) for args in (parse(line) for line in lines)
            if len(args) == 3 and args[0] == "*" and str(args[2]).upper() == "EXPUNGE"]


class Relative:
    """imaptest's ``$1``, ``$2`` ...: a command's responses read in order, each EXPUNGE moving
    the later messages down, so that each response is known by the number its message had when
    the command was sent."""

    def __init__(self, lines: Iterable[bytes], count: int) -> None:
        current = list(range(1, count + 1))  # the first number of the message now at each place
        self.expunged: list[int] = []
        self.fetched: dict[int, dict[str, Any]] = {}
        for line in lines:
            for seq in expunged([line]):
                self.expunged.append(current.pop(seq - 1))
            for seq, items in fetches([line]):
                self.fetched[current[seq - 1]] = items


# -- copy ----------------------------------------------------------------------------------------


def test_copy(conv: Conversation) -> None:
    """imaptest src/tests/copy (commit cb1fc752; connections: 2, state: created)."""
    box, box2 = MAILBOX.encode(), (MAILBOX + "2").encode()
    ok(conv, b"create " + box)
    conn2 = connection(conv)
    ok(conv, b"select " + box)
    for index in range(5):
        append(conv, MESSAGES[index])
    ok(conv, b"check")

    any_reply(conn2, b"delete " + box2)
    ok(conn2, b"create " + box2)
    ok(conn2, b"select " + box2)

    ok(conv, b"store 1 flags (\\seen)")
    ok(conv, b"store 2 flags (\\draft \\flagged)")
    ok(conv, b"store 5 flags (\\flagged $keyword1 $keyword2)")

    lines = ok(conv, b"fetch 1:5 (internaldate)")
    date = {seq: fetched_once(lines, seq)["INTERNALDATE"] for seq in (1, 2, 4, 5)}
    ok(conv, b"copy 1:2,4 " + box2)

    lines = ok(conn2, b"noop")
    assert untagged(lines, "3", "EXISTS") and untagged(lines, "3", "RECENT"), lines

    lines = ok(conn2, b"fetch 1:3 (flags internaldate)")
    for seq, source, flags in ((1, 1, ("\\recent", "\\seen")), (2, 2, ("\\recent", "\\draft", "\\flagged")),
                               (3, 4, ("\\recent",))):
        items = fetched_once(lines, seq)
        assert_flags(items["FLAGS"], *flags)
        assert items["INTERNALDATE"] == date[source]

    # keywords aren't required to be created on COPY (the script helps the server here)
    ok(conn2, b"store 3 +flags ($keyword1 $keyword2)")

    ok(conv, b"copy 5 " + box2)
    lines = ok(conn2, b"noop")
    assert untagged(lines, "4", "EXISTS") and untagged(lines, "4", "RECENT"), lines

    items = fetched_once(ok(conn2, b"fetch 4 (flags internaldate)"), 4)
    assert_flags(items["FLAGS"], "\\recent", "\\flagged", "$keyword1", "$keyword2")
    assert items["INTERNALDATE"] == date[5]

    ok(conn2, b"close")
    any_reply(conn2, b"delete " + box2)


# -- move ----------------------------------------------------------------------------------------


def test_move(conv: Conversation) -> None:
    """imaptest src/tests/move (state: created; needs THREAD=REFERENCES, as the script says).
    The script assumes the COPYUID comes untagged before the EXPUNGEs (RFC 6851 section 4.3
    recommends it) and that a MOVE into the mailbox itself gives the message a new UID."""
    def moved(lines: list[bytes], copyuid: str) -> None:
        """``* ok [copyuid ...]`` and ``* 1 expunge``, the COPYUID first."""
        assert code_value(lines, "COPYUID") == copyuid
        codes = [index for index, line in enumerate(lines) if line.upper().startswith(b"* OK [COPYUID ")]
        assert expunged(lines) == [1] and codes[0] < lines.index(b"* 1 EXPUNGE"), lines

    assert "THREAD=REFERENCES" in conv.capabilities()
    box, box2 = MAILBOX.encode(), (MAILBOX + "2").encode()
    ok(conv, b"create " + box)
    for index in range(3):
        append(conv, MESSAGES[index])
    ok(conv, b"create " + box2)

    lines = ok(conv, b"select " + box2)
    assert untagged(lines, "0", "EXISTS"), lines
    uidvalidity_dest, uidnext_dest1 = code_value(lines, "UIDVALIDITY"), code_value(lines, "UIDNEXT")

    # MOVE:
    ok(conv, b"select " + box)
    uid = uids(ok(conv, b"fetch 1:* uid"))
    assert sorted(uid) == [1, 2, 3]

    moved(ok(conv, b"move 1 " + box2), f"{uidvalidity_dest} {uid[1]} {uidnext_dest1}")

    # UID MOVE:
    lines = ok(conv, b"select " + box2)
    assert untagged(lines, "1", "EXISTS"), lines
    assert code_value(lines, "UIDVALIDITY") == uidvalidity_dest
    uidnext_dest2 = code_value(lines, "UIDNEXT")

    lines = ok(conv, b"select " + box)
    uidvalidity, uidnext1 = code_value(lines, "UIDVALIDITY"), code_value(lines, "UIDNEXT")

    moved(ok(conv, b"uid move %d " % uid[2] + box2), f"{uidvalidity_dest} {uid[2]} {uidnext_dest2}")

    # MOVE to same mailbox: the message comes back with the next UID.
    lines = ok(conv, b"move 1 " + box)
    moved(lines, f"{uidvalidity} {uid[3]} {uidnext1}")
    assert untagged(lines, "1", "EXISTS"), lines


# -- expunge, expunge2 ---------------------------------------------------------------------------


def test_expunge(conv: Conversation) -> None:
    """imaptest src/tests/expunge (connections: 2; the test mailbox selected, four messages)."""
    conn1, conn2 = selected(conv, 2)
    ((seq, uid),) = uids(ok(conn1, b"fetch * uid")).items()  # $seq, $uid
    assert_flags(fetched_once(ok(conn1, b"store %d flags \\deleted" % seq), seq)["FLAGS"], "\\deleted", "\\recent")
    assert expunged(ok(conn1, b"expunge")) == [seq]

    # Difference: imaptest expects ``* $seq FETCH (UID $uid)`` and OK here, the other connection
    # not yet told of the EXPUNGE (RFC 3501 section 7.4.1 forbids sending it during FETCH):
    # Dovecot keeps the message readable until then (RFC 2180 section 4.1.1). RFC 2180 leaves
    # the choice open; gximap takes 4.1.2 on purpose (gximap/session/commands/fetch.py): no FETCH
    # response for the message gone, ``NO [EXPUNGEISSUED]``, and the NOOP after it explains.
    tag = conn2.next_tag().encode()
    assert conn2.send(tag + b" fetch %d uid\r\n" % seq) == [
        tag + b" NO [EXPUNGEISSUED] Some of the requested messages no longer exist"]
    assert expunged(ok(conn2, b"noop")) == [seq]
    assert uid == conv.folder(MAILBOX).uidnext - 1  # the last message was the one expunged


def test_expunge2(conv: Conversation) -> None:
    """imaptest src/tests/expunge2 (commit cb1fc752, with the CHECK step; connections: 2; the test
    mailbox selected, four messages). ``$1``, ``$3``: see :class:`Relative`."""
    conn1, conn2 = selected(conv, 2)
    uid = uids(ok(conn1, b"fetch 2,4 uid"))
    assert sorted(uid) == [2, 4]

    # 1) UID FETCH
    ok(conn1, b"store 1,3 +flags \\deleted")
    assert sorted(Relative(ok(conn1, b"expunge"), 4).expunged) == [1, 3]
    # conn2 was not told yet: the EXPUNGEs may come before the FETCHes (a UID command) or after.
    answer = Relative(ok(conn2, b"uid fetch %d,%d uid" % (uid[2], uid[4])), 4)
    assert {seq: items["UID"] for seq, items in answer.fetched.items()} == {2: str(uid[2]), 4: str(uid[4])}
    ok(conn2, b"noop")

    # 2) UID STORE
    ok(conn1, b"store 1 +flags \\deleted")
    assert expunged(ok(conn1, b"expunge")) == [1]
    answer = Relative(ok(conn2, b"uid store %d flags \\seen" % uid[4]), 2)
    items = answer.fetched[2]
    assert items["UID"] == str(uid[4])
    assert_flags(items["FLAGS"], "\\seen")
    ok(conn2, b"noop")

    # Make sure CHECK works just as well as NOOP
    ok(conn1, b"store 1 +flags \\deleted")
    assert expunged(ok(conn1, b"expunge")) == [1]
    assert expunged(ok(conn2, b"check")) == [1]


# -- list ----------------------------------------------------------------------------------------


def test_list(conv: Conversation) -> None:
    """imaptest src/tests/list (commit 003f2813; connections: 3, state: auth)."""
    conn1 = conv
    conn2, conn3 = connection(conv), connection(conv)
    box = MAILBOX + SEP

    def names(*suffixes: str) -> list[str]:
        return [box + suffix for suffix in suffixes]

    def listing(session: Conversation, reference: str, pattern: str) -> Listing:
        return Listing(ok(session, b'list "%s" %s' % (reference.encode(), pattern.encode())))

    # get the separator: the root with the hierarchy delimiter (and \Noselect, which the script
    # asks for in a second line, not to fail everything when a server does not send it)
    root = Listing(ok(conn1, b'list "" ""'))
    root.has("", "\\noselect")
    assert root.boxes[""][1] == SEP

    ok(conn1, b"create " + box.encode())
    ok(conn1, b"create " + box.encode() + b"test")
    listing(conn2, "", box + "%").has(box + "test")

    ok(conn2, b"create " + box.encode() + b"test2")
    found = listing(conn1, "", box + "%")
    for name in names("test", "test2"):
        found.has(name)

    ok(conn3, b"create " + box.encode() + b"test3" + SEP.encode())
    ok(conn2, b"create " + box.encode() + b"test3/test4/")
    ok(conn2, b"create " + box.encode() + b"test3/test4/test5")
    found = listing(conn2, "", box + "%")
    for name in names("test", "test2", "test3"):
        found.has(name)
    for name in names("test3/test4", "test3/test4/test5"):
        found.lacks(name)

    found = listing(conn3, "", box + "%")
    for name in names("test", "test2", "test3"):
        found.has(name)

    found = listing(conn2, "", box + "%/%")
    for name in names("test", "test2", "test3", "test3/test4/test5"):
        found.lacks(name)
    found.has(box + "test3/test4")

    found = listing(conn3, "", box + "*")
    for name in names("test", "test2", "test3", "test3/test4/test5"):
        found.has(name)

    found = listing(conn3, box, "*")
    for name in names("test", "test2", "test3", "test3/test4/test5"):
        found.has(name)

    found = listing(conn2, "", box + "*test4")
    for name in names("test", "test2", "test3", "test3/test4/test5"):
        found.lacks(name)
    found.has(box + "test3/test4")

    found = listing(conn2, "", box + "*test*")
    for name in names("test", "test2", "test3", "test3/test4/test5"):
        found.has(name)

    listing(conn2, "", box + "%3/%").has(box + "test3/test4")
    listing(conn2, "", box + "%3/%4").has(box + "test3/test4")
    listing(conn2, "", box + "%t*4").has(box + "test3/test4")

    ok(conn2, b"delete " + box.encode() + b"test2")
    listing(conn1, "", box + "*").lacks(box + "test2")

    # $inboxsep: whatever INBOX's delimiter is (captured, not compared)
    listing(conn1, "", "INBOX").has("INBOX")


# -- listext -------------------------------------------------------------------------------------


def test_listext(conv: Conversation) -> None:
    """imaptest src/tests/listext (state: created; LIST-EXTENDED, RFC 5258)."""
    assert "LIST-EXTENDED" in conv.capabilities()
    box = MAILBOX + SEP
    ok(conv, b"create " + MAILBOX.encode())

    def listing(arguments: str) -> Listing:
        return Listing(ok(conv, b"list " + arguments.encode()))

    # get the separator
    assert Listing(ok(conv, b'list "" ""')).boxes[""][1] == SEP

    for name in ("test1", "test2/", "test2/test1", "test3", "test4/test5", "test4/test52", "test6",
                 "test7/test7", "test8/test8", "test8/test9"):
        ok(conv, b"create " + (box + name).encode())
    for name in ("test1", "test2/test1", "test6", "test7/test7", "test8/test8", "test8/test9"):
        ok(conv, b"subscribe " + (box + name).encode())
    ok(conv, b"delete " + (box + "test6").encode())

    # "" isn't a special case with LIST-EXTENDED: commented out in the script too.

    # test multiple patterns
    found = listing(f'"" ({box}*2 {box}test3)')
    for name in ("test1", "test2/test1", "test4", "test4/test5", "test6"):
        found.lacks(box + name)
    for name in ("test2", "test3", "test4/test52"):
        found.has(box + name)

    # test errors: an unknown selection or return option, RECURSIVEMATCH alone or with REMOTE only
    # (RFC 5258 section 3: "MUST NOT occur as the only selection option (or only with REMOTE)")
    bad(conv, b'list (imaptest) "" ""')
    bad(conv, b'list (recursivematch) "" ""')
    bad(conv, b'list (recursivematch remote) "" ""')
    bad(conv, b'list "" "" return (imaptest)')

    ok(conv, b'list (remote) "" %')

    found = listing(f'(subscribed) "" {box}*')
    for name in ("test1", "test2/test1", "test7/test7", "test8/test9"):
        found.has(box + name, "\\subscribed")
    # deleted but still subscribed (RFC 5258 section 3.1)
    found.has(box + "test6", "\\subscribed", "\\nonexistent", banned=("\\noselect",))

    found = listing(f'(subscribed recursivematch) "" {box}test2% return (children)')
    found.has(box + "test2", "\\haschildren", extended=["childinfo", ["subscribed"]])
    found.lacks(box + "test2", "\\subscribed")
    found.lacks(box + "test2/test1", "\\subscribed")

    found = listing(f'"" {box}% return (children subscribed)')
    found.has(box + "test1", "\\subscribed", "\\hasnochildren")
    found.has(box + "test2", "\\haschildren", banned=("\\subscribed",))
    found.has(box + "test3", "\\hasnochildren", banned=("\\subscribed",))
    for name in ("test4", "test7", "test8"):
        found.has(box + name, "\\haschildren", banned=("\\subscribed",))

    # test7's one subscribed child matches the pattern itself: no CHILDINFO, test7 not listed
    found = listing('(subscribed recursivematch) "" *test7')
    found.lacks(box + "test7")
    found.has(box + "test7/test7", "\\subscribed")

    found = listing('(subscribed recursivematch) "" *test8')
    found.has(box + "test8", banned=("\\subscribed",), extended=["childinfo", ["subscribed"]])
    found.has(box + "test8/test8", "\\subscribed")

    found = listing(f'(subscribed recursivematch) "" ({box}test2)')
    found.has(box + "test2", extended=["childinfo", ["subscribed"]])
    found.lacks(box + "test2/test1")

    found = listing(f'(subscribed recursivematch) "" ({box}test2 {box}test2/test1)')
    found.lacks(box + "test2", extended=["childinfo", ["subscribed"]])
    found.has(box + "test2/test1", "\\subscribed")

    found = listing(f'"" ({box}test7 {box}test7/test7)')
    found.lacks(box + "test7", "\\nonexistent")
    found.has(box + "test7/test7")


# -- select --------------------------------------------------------------------------------------


def test_select(conv: Conversation) -> None:
    """imaptest src/tests/select (commit 83526221, EXAMINE first; state: auth)."""
    box = MAILBOX.encode()
    any_reply(conv, b"delete " + box)
    any_reply(conv, b"create " + box)
    append(conv, MESSAGES[0])
    append(conv, MESSAGES[1])

    def opened(lines: list[bytes]) -> tuple[str, str]:
        assert untagged(lines, "2", "EXISTS") and untagged(lines, "2", "RECENT"), lines
        assert code_value(lines, "UNSEEN") == "1"
        return code_value(lines, "UIDVALIDITY"), code_value(lines, "UIDNEXT")

    # first open read-only so recent flags don't get lost
    uidvalidity, uidnext = opened(ok_code(conv, b"examine " + box, b"READ-ONLY"))
    ok(conv, b"close")

    # check that STATUS replies with the same values
    for item, value in (("messages", "2"), ("recent", "2"), ("uidnext", uidnext), ("uidvalidity", uidvalidity),
                        ("unseen", "2")):
        (status,) = untagged(ok(conv, b"status %s (%s)" % (box, item.encode())), "STATUS")
        assert status[2] == MAILBOX and caseless(status[3]) == [item, value], status

    # then try read-write
    assert opened(ok_code(conv, b"select " + box, b"READ-WRITE")) == (uidvalidity, uidnext)
    ok(conv, b"close")

    (status,) = untagged(ok(conv, b"status %s (recent)" % box), "STATUS")
    assert caseless(status[3]) == ["recent", "0"], status


# -- store ---------------------------------------------------------------------------------------


def test_store(conv: Conversation) -> None:
    """imaptest src/tests/store (connections: 2; the test mailbox selected, four messages)."""
    conn1, conn2 = selected(conv, 2)

    # simple tests
    lines = ok(conn1, b"store 1:3 flags (\\seen)")
    for seq in (1, 2, 3):
        assert_flags(fetched_once(lines, seq)["FLAGS"], "\\seen")

    lines = ok(conn2, b"check")
    for seq in (1, 2, 3):
        assert_flags(fetched_once(lines, seq)["FLAGS"], "\\seen")

    ok(conn1, b"store 4 -flags \\seen")
    assert_flags(fetched_once(ok(conn1, b"store 3 flags (\\draft)"), 3)["FLAGS"], "\\draft")

    # keywords
    lines = ok(conn1, b"store 2,4 +flags ($hello $world)")
    assert_flags(fetched_once(lines, 2)["FLAGS"], "\\seen", "$hello", "$world")
    assert_flags(fetched_once(lines, 4)["FLAGS"], "$hello", "$world")

    # check that two sessions don't overwrite each others' changes
    ok(conn1, b"store 1 +flags (\\draft)")
    ok(conn2, b"store 1 -flags (\\seen)")
    ok(conn1, b"check")
    ok(conn2, b"check")

    assert_flags(fetched_once(ok(conn1, b"fetch 1 flags"), 1)["FLAGS"], "\\draft")
    assert_flags(fetched_once(ok(conn2, b"fetch 1 flags"), 1)["FLAGS"], "\\draft")


# -- subscribe -----------------------------------------------------------------------------------


def test_subscribe(conv: Conversation) -> None:
    """imaptest src/tests/subscribe (connections: 2, state: auth)."""
    conn1, conn2 = conv, connection(conv)
    box = MAILBOX + SEP

    def lsub(pattern: str) -> Listing:
        return Listing(ok(conn2, b'lsub "" ' + pattern.encode()), "LSUB")

    # get the separator
    assert Listing(ok(conn1, b'list "" ""')).boxes[""][1] == SEP

    for name in ("test", "test2", "test2/test", "test3/test3"):
        any_reply(conn1, b"unsubscribe " + (box + name).encode())

    for name in ("", "test", "test2/", "test3/", "test2/test", "test3/test3"):
        ok(conn1, b"create " + (box + name).encode())
    # create the test2 mailbox only if server supports inferior mailboxes
    any_reply(conn1, b"create " + (box + "test2").encode())

    for name in ("test", "test2/test", "test3/test3"):
        ok(conn1, b"subscribe " + (box + name).encode())

    # RFC 3501 section 6.3.9: "%" matching a mailbox that is not subscribed but has subscribed
    # children lists it with \Noselect.
    found = lsub(box + "%")
    found.has(box + "test")
    found.has(box + "test2", "\\noselect")
    found.has(box + "test3", "\\noselect")
    found.lacks(box + "test2/test", "\\noselect")
    found.lacks(box + "test3/test3", "\\noselect")

    found = lsub("*test")
    found.has(box + "test")
    found.has(box + "test2/test")
    found.lacks(box + "test3/test3")

    ok(conn1, b"unsubscribe " + (box + "test").encode())
    lsub(box + "%").lacks(box + "test")

    ok(conn1, b"unsubscribe " + (box + "test2/test").encode())
    found = lsub(box + "*")
    found.lacks(box + "test")
    found.has(box + "test3/test3")

    ok(conn1, b"unsubscribe " + (box + "test3/test3").encode())
    lsub(box + "%").lacks(box + "test3")


# -- pipeline-connections ------------------------------------------------------------------------


def test_pipeline_connections(conv: Conversation) -> None:
    """imaptest src/tests/pipeline-connections (connections: 2, state: auth): two commands sent
    at once on each connection, both answered."""
    conn1, conn2 = conv, connection(conv)
    box, box2 = MAILBOX.encode(), (MAILBOX + "2").encode()

    def tagged(lines: list[bytes]) -> list[list[bytes]]:
        # pipelined commands may complete in any order (RFC 9051 section 5.5)
        return sorted(line.split(b" ")[:2] for line in lines if line.startswith(b"tag"))

    lines = conn1.send(b"tag1 create " + box + b"\r\ntag2 create " + box2 + b"\r\n")
    assert tagged(lines) == [[b"tag1", b"OK"], [b"tag2", b"OK"]], lines

    lines = conn2.send(b"tag1 status " + box + b" (messages)\r\ntag2 status " + box2 + b" (messages)\r\n")
    statuses = [args[2:] for args in untagged(lines, "STATUS")]
    assert sorted(statuses, key=str) == [[MAILBOX, ["MESSAGES", "0"]], [MAILBOX + "2", ["MESSAGES", "0"]]], lines
    assert tagged(lines) == [[b"tag1", b"OK"], [b"tag2", b"OK"]], lines


# -- skipped: urlauth, urlauth-binary, uidbatches, uidbatches-empty -------------------------------


def test_skipped_scripts_need_what_gximap_lacks(conv: Conversation) -> None:
    """imaptest skips a script whose ``capabilities:`` the server does not advertise, and so do
    we: urlauth and urlauth-binary need URLAUTH (RFC 4467), uidbatches and uidbatches-empty
    UIDBATCHES. Should gximap gain either, these scripts are to be ported too."""
    offered = set(conv.capabilities())
    assert "URLAUTH" not in offered and "UIDBATCHES" not in offered
