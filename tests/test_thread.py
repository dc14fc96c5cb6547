"""THREAD / UID THREAD conversations (RFC 5256 ORDEREDSUBJECT and REFERENCES) and the threading
functions of gximap.session.sorting."""

from __future__ import annotations

import calendar
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

from gximap.session import sorting

DAY = 86400
BASE = calendar.timegm((2008, 6, 1, 12, 0, 0))


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def rfc822_date(stamp: int) -> bytes:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(stamp)).encode()


def message(subject: str | None, *, day: int | None = None, message_id: str | None = None,
            references: str | None = None, in_reply_to: str | None = None) -> bytes:
    """A message; ``day`` (days after BASE) gives the Date: header, None leaves it out."""
    head = [b"From: someone@example.org"]
    if subject is not None:
        head.append(b"Subject: " + subject.encode())
    if day is not None:
        head.append(b"Date: " + rfc822_date(BASE + day * DAY))
    if message_id is not None:
        head.append(b"Message-ID: <" + message_id.encode() + b">")
    if references is not None:
        head.append(b"References: " + references.encode())
    if in_reply_to is not None:
        head.append(b"In-Reply-To: " + in_reply_to.encode())
    return b"\r\n".join(head) + b"\r\n\r\nbody\r\n"


def add(conv: Conversation, *messages: bytes) -> None:
    for data in messages:
        conv.add_message(data=data, internaldate=BASE)


def thread(conv: Conversation, arguments: str = "REFERENCES UTF-8 ALL") -> bytes:
    lines = conv.command("THREAD " + arguments)
    assert len(lines) == 2, lines
    return lines[0]


# -- RFC 5256 examples ---------------------------------------------------------------------------------


def rfc5256_mailbox(conv: Conversation) -> None:
    """96 messages; 2 stands alone, 3 starts a thread: 6 replies to 3, 4 and 44 reply to 6, 23
    to 4, 7 to 44 and 96 to 7 (the formal-syntax example of RFC 5256 section 4)."""
    threaded = {
        2: ("other matter", 1, "m2@x", None),
        3: ("topic", 2, "m3@x", None),
        6: ("Re: topic", 3, "m6@x", "<m3@x>"),
        4: ("Re: topic", 4, "m4@x", "<m3@x> <m6@x>"),
        23: ("Re: topic", 5, "m23@x", "<m3@x> <m6@x> <m4@x>"),
        44: ("Re: topic", 6, "m44@x", "<m3@x> <m6@x>"),
        7: ("Re: topic", 7, "m7@x", "<m3@x> <m6@x> <m44@x>"),
        96: ("Re: topic", 8, "m96@x", "<m3@x> <m6@x> <m44@x> <m7@x>"),
    }
    items = []
    for number in range(1, 97):
        if number in threaded:
            subject, day, message_id, references = threaded[number]
            data = message(subject, day=day, message_id=message_id, references=references)
        else:
            data = message(f"unrelated {number}", day=100 + number, message_id=f"u{number}@x")
        items.append((data, (), BASE, 0))
    conv.store.append_many("alice", conv.folder("INBOX").id, items)


def test_rfc5256_references_example(conv: Conversation) -> None:
    rfc5256_mailbox(conv)
    conv.select()
    conv.script("""
        C: A285 THREAD REFERENCES UTF-8 2,3,4,6,7,23,44,96
        S: * THREAD (2)(3 6 (4 23)(44 7 96))
        S: A285 OK THREAD completed
        C: A284 THREAD REFERENCES US-ASCII TEXT "gewp"
        S: * THREAD
        S: A284 OK THREAD completed
    """)


def test_rfc5256_orderedsubject_on_the_same_messages(conv: Conversation) -> None:
    """ORDEREDSUBJECT ignores the references: one parent per subject, all others its children
    in sent-date order."""
    rfc5256_mailbox(conv)
    conv.select()
    assert thread(conv, "ORDEREDSUBJECT UTF-8 2,3,4,6,7,23,44,96") == b"* THREAD (2)(3 (6)(4)(23)(44)(7)(96))"


def test_orderedsubject_shapes(conv: Conversation) -> None:
    """Like the RFC's "(174 (175)(176)...)" and "(194 195)": one child is written as a chain;
    threads are ordered by their first message's date, children by date then number."""
    add(conv,
        message("Meeting", day=5),          # 1
        message("Re: meeting", day=6),      # 2
        message("Lunch", day=1),            # 3
        message("RE: MEETING", day=5),      # 4: same date as 1, later number
        message("[team] Lunch", day=2),     # 5
        message("solo", day=3),             # 6
        message("Fwd: meeting", day=4))     # 7: the earliest of its subject: the parent
    conv.select()
    assert thread(conv, "ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (3 5)(6)(7 (1)(4)(2))"


def test_orderedsubject_groups_subjects_by_unicode_casemap(conv: Conversation) -> None:
    """RFC 5256 section 7: subjects match by i;unicode-casemap, so Ärger and ärger are one
    subject (and Éclair and éclair another), apart from Arger and Eclair."""
    add(conv,
        message("Ärger", day=1),       # 1
        message("Zebra", day=2),       # 2
        message("Re: ärger", day=3),   # 3
        message("Arger", day=4),       # 4
        message("Éclair", day=5),      # 5
        message("éclair", day=6),      # 6
        message("Eclair", day=7))      # 7
    conv.select()
    assert thread(conv, "ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (1 3)(2)(4)(5 6)(7)"


# -- REFERENCES: missing parents, loops, duplicates ---------------------------------------------------------


def test_missing_parent_of_several_keeps_a_dummy_at_the_top(conv: Conversation) -> None:
    add(conv,
        message("Re: lost", day=2, message_id="a@x", references="<gone@x>"),
        message("Re: lost", day=1, message_id="b@x", references="<gone@x>"))
    conv.select()
    assert thread(conv) == b"* THREAD ((2)(1))"


def test_missing_parent_of_one_is_dropped(conv: Conversation) -> None:
    add(conv,
        message("Re: lost", day=1, message_id="a@x", references="<gone@x>"),
        message("Re: lost too", day=2, message_id="b@x", references="<gone2@x> <a@x>"))
    conv.select()
    assert thread(conv) == b"* THREAD (1 2)"


def test_missing_parent_in_the_middle_is_pruned(conv: Conversation) -> None:
    add(conv,
        message("start", day=1, message_id="a@x"),
        message("Re: start", day=2, message_id="c@x", references="<a@x> <b-missing@x>"))
    conv.select()
    assert thread(conv) == b"* THREAD (1 2)"


def test_reference_loops_are_not_linked(conv: Conversation) -> None:
    add(conv,
        message("one", day=1, message_id="a@x", references="<b@x>"),
        message("two", day=2, message_id="b@x", references="<a@x>"),
        message("three", day=3, message_id="self@x", references="<self@x>"),
        message("four", day=4, message_id="d@x", references="<p@x> <q@x> <p@x>"))
    conv.select()
    # 1 was linked under 2's (then dummy) container first; 2's own reference to 1 would close
    # a loop and is ignored. A self-reference links nothing, nor does a References loop.
    assert thread(conv) == b"* THREAD (2 1)(3)(4)"


def test_duplicate_message_ids_only_the_first_keeps_it(conv: Conversation) -> None:
    add(conv,
        message("first", day=1, message_id="dup@x"),
        message("second", day=2, message_id="dup@x"),
        message("Re: first", day=3, message_id="r@x", references="<dup@x>"))
    conv.select()
    assert thread(conv) == b"* THREAD (1 3)(2)"


def test_in_reply_to_is_used_without_references(conv: Conversation) -> None:
    add(conv,
        message("a", day=1, message_id="1@x"),
        message("b", day=2, message_id="2@x"),
        message("Re: b", day=3, message_id="3@x", in_reply_to="<1@x>"),
        message("Re: b", day=4, message_id="4@x", references="<1@x>", in_reply_to="<2@x>"),
        message("c", day=5, message_id="5@x", in_reply_to="garbage without brackets <2@x> <1@x>"))
    conv.select()
    assert thread(conv) == b"* THREAD (1 (3)(4))(2 5)"


@pytest.mark.parametrize(("messages", "expected"), [
    # An In-Reply-To without a valid Message ID gives no references (step 1): its first word
    # is no id, so these three do not share a parent "Your".
    ([message("alpha", day=1, message_id="a1@x", in_reply_to="Your message of Mon, 1 Jan 2008"),
      message("beta", day=2, message_id="b1@x", in_reply_to="Your note of Tue"),
      message("gamma", day=3, message_id="c1@x", in_reply_to="Your")], b"(1)(2)(3)"),
    # <"01KF8JCEOCBS0045PS"@xxx.yyy.com> and <01KF8JCEOCBS0045PS@xxx.yyy.com> are one Message
    # ID, either way round; blanks just inside the angle brackets do not count.
    ([message("one", day=1, message_id='"01KF8JCEOCBS0045PS"@xxx.yyy.com'),
      message("two", day=2, message_id="r1@x", references="<01KF8JCEOCBS0045PS@xxx.yyy.com>"),
      message("three", day=3, message_id="plain@x"),
      message("four", day=4, message_id="r2@x", in_reply_to='<"pl\\ain"@x>'),
      message("five", day=5, message_id=" spaced@x "),
      message("six", day=6, message_id="r3@x", references="<\tspaced@x>")], b"(1 2)(3 4)(5 6)"),
    # A quoted id-left may hold blanks (RFC 5322 obs-id-left): <"a b"@x> is a Message ID.
    ([message("one", day=1, message_id='"a b"@x'),
      message("two", day=2, message_id="r1@x", in_reply_to='<"a b"@x>'),
      message("three", day=3, message_id="r2@x", references='<"a b"@x> <r1@x>'),
      message("four", day=4, message_id="r3@x", references='<"a\\ b"@x>')], b"(1 (2 3)(4))"),
], ids=["free-text-in-reply-to", "quoted-and-spaced-ids", "quoted-id-with-blanks"])
def test_message_ids_as_rfc5256_reads_them(conv: Conversation, messages: list[bytes], expected: bytes) -> None:
    add(conv, *messages)
    conv.select()
    assert thread(conv) == b"* THREAD " + expected


def test_own_references_replace_a_parent_guessed_from_others(conv: Conversation) -> None:
    """Step 1.B: message 3's container got a parent from message 2's References; its own
    References (a missing message) override that link."""
    add(conv,
        message("one", day=1, message_id="a@x"),
        message("Re: three", day=2, message_id="c@x", references="<a@x> <b@x>"),
        message("three", day=3, message_id="b@x", references="<x-missing@x>"))
    conv.select()
    assert thread(conv) == b"* THREAD (1)(3 2)"


def test_message_without_references_loses_a_guessed_parent(conv: Conversation) -> None:
    add(conv,
        message("Re: origin", day=1, message_id="c@x", references="<a@x> <b@x>"),
        message("origin", day=2, message_id="b@x"))
    conv.select()
    # 2 fills the dummy <b@x> (a child of the dummy <a@x>) and, having no References itself,
    # loses that parent; 1 stays its child, and the childless dummy <a@x> is pruned.
    assert thread(conv) == b"* THREAD (2 1)"


# -- REFERENCES: subject merging (step 5) -------------------------------------------------------------------


@pytest.mark.parametrize(("subjects", "expected"), [
    (["hello", "hello"], b"((1)(2))"),                    # neither is a reply: a new dummy
    (["hello", "Re: hello"], b"(1 2)"),                   # the reply goes under the original
    (["Re: hello", "HELLO"], b"(2 1)"),                   # even when the original is later
    (["Re: hello", "Fwd: hello", "hello (fwd)"], b"((1)(2)(3))"),  # all replies: a dummy
    (["", ""], b"(1)(2)"),                                # empty subjects never merge
    (["[list] news", "Re: [list] News", "other"], b"(1 2)(3)"),
    (["Ärger", "Re: ärger", "Arger"], b"(1 2)(3)"),       # i;unicode-casemap: Ä and ä match, not A
])
def test_subject_merging(conv: Conversation, subjects: list[str], expected: bytes) -> None:
    for index, subject in enumerate(subjects):
        add(conv, message(subject, day=index + 1, message_id=f"s{index}@x"))
    conv.select()
    assert thread(conv) == b"* THREAD " + expected


def test_subject_merging_with_dummies(conv: Conversation) -> None:
    add(conv,
        message("Re: s", day=1, message_id="a@x", references="<x1@x>"),
        message("Re: s", day=3, message_id="b@x", references="<x1@x>"),
        message("s", day=2, message_id="c@x"),
        message("Re: s", day=5, message_id="d@x", references="<x2@x>"),
        message("Re: s", day=4, message_id="e@x", references="<x2@x>"),
        message("Re: t", day=6, message_id="f@x", references="<x3@x>"),
        message("Re: t", day=7, message_id="g@x", references="<x3@x>"))
    conv.select()
    # Two dummy-topped threads and a message share "s": one dummy gathers them all, by date.
    assert thread(conv) == b"* THREAD ((1)(3)(2)(5)(4))((6)(7))"


# -- dates, UIDs, errors ----------------------------------------------------------------------------------


def test_sent_date_orders_threads_and_internal_date_stands_in(conv: Conversation) -> None:
    conv.add_message(data=message("late", day=30, message_id="a@x"), internaldate=BASE)
    conv.add_message(data=message("undated", message_id="b@x"), internaldate=BASE + 10 * DAY)
    conv.add_message(data=message("early", day=2, message_id="c@x"), internaldate=BASE + 90 * DAY)
    conv.add_message(data=message("Re: late", day=1, message_id="d@x", references="<a@x>"), internaldate=BASE)
    conv.select()
    assert thread(conv) == b"* THREAD (3)(2)(1 4)"
    assert thread(conv, "ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (4 1)(3)(2)"


def test_uid_thread_and_search_program(conv: Conversation) -> None:
    add(conv,
        message("a", day=1, message_id="1@x"),
        message("gone", day=2, message_id="2@x"),
        message("Re: a", day=3, message_id="3@x", references="<1@x>"),
        message("Re: a", day=4, message_id="4@x", references="<1@x> <3@x>"))
    conv.select()
    conv.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    conv.command("EXPUNGE")
    conv.script("""
        C: t1 UID THREAD REFERENCES UTF-8 ALL
        S: * THREAD (1 3 4)
        S: t1 OK THREAD completed
        C: t2 THREAD REFERENCES UTF-8 ALL
        S: * THREAD (1 2 3)
        S: t2 OK THREAD completed
        C: t3 UID THREAD ORDEREDSUBJECT UTF-8 NOT UID 1
        S: * THREAD (3 4)
        S: t3 OK THREAD completed
    """)


def test_errors(conv: Conversation) -> None:
    conv.script("""
        C: e1 THREAD REFERENCES UTF-8 ALL
        S: e1 BAD {*}
    """)
    conv.select()
    conv.script("""
        C: e2 THREAD SUBJECTIVE UTF-8 ALL
        S: e2 BAD {*}
        C: e3 THREAD REFERENCES ISO-2022-JP ALL
        S: e3 NO [BADCHARSET (UTF-8 US-ASCII)] {*}
        C: e4 THREAD REFERENCES UTF-8 ALL
        S: * THREAD
        S: e4 OK THREAD completed
    """)
    conv.command("UNSELECT")
    conv.command("ENABLE UTF8=ACCEPT")
    conv.select()
    conv.script("""
        C: e5 THREAD REFERENCES US-ASCII ALL
        S: e5 BAD [BADCHARSET (UTF-8)] Only the UTF-8 charset is allowed after ENABLE UTF8=ACCEPT
    """)


# -- the pure functions ---------------------------------------------------------------------------------


def item(date: int, subject: str = "", message_id: str | None = None,
         references: tuple[str, ...] = (), reply: bool = False) -> sorting.ThreadItem:
    return sorting.ThreadItem(date, subject, reply, message_id, references)


# The tests number their messages from 1, in the order they are given: a message shows its
# position plus one (render_threads takes the numbers by position).
NUMBERS = range(1, 100_001)


def render(forest: sorting.ThreadForest, chunk: int = 1 << 16) -> bytes:
    return b"".join(sorting.render_threads(forest, NUMBERS, chunk))


Shape = tuple[int | None, tuple["Shape", ...]]  # a message's number (None: a dummy), its children


def node(number: int | None, *children: Shape) -> Shape:
    return (number, children)


def forest_of(*roots: Shape) -> sorting.ThreadForest:
    """A ThreadForest of these trees: a message shows its number (its position is number - 1)."""
    orders: list[int] = []
    first_child: list[int] = []
    next_sibling: list[int] = []

    def add(shape: Shape) -> int:
        number, children = shape
        made = len(orders)
        orders.append(-1 if number is None else number - 1)
        first_child.append(-1)
        next_sibling.append(-1)
        made_children = [add(child) for child in children]
        for child, following in zip(made_children, made_children[1:], strict=False):
            next_sibling[child] = following
        if made_children:
            first_child[made] = made_children[0]
        return made

    return sorting.ThreadForest([add(root) for root in roots], orders, first_child, next_sibling)


def test_render_shapes() -> None:
    tree = node(3, node(6, node(4, node(23)), node(44, node(7, node(96)))))
    assert render(forest_of(node(2), tree)) == b"(2)(3 6 (4 23)(44 7 96))"
    assert render(forest_of(node(None, node(1), node(2, node(5))))) == b"((1)(2 5))"
    assert render(forest_of()) == b""


def test_long_reference_chains_do_not_recurse() -> None:
    count = 5000
    items = [item(number, "s", f"m{number}",
                  tuple(f"m{ref}" for ref in range(max(1, number - 20), number)), reply=number > 1)
             for number in range(1, count + 1)]
    roots = sorting.thread_references(items)
    assert render(roots) == b"(" + b" ".join(b"%d" % number for number in range(1, count + 1)) + b")"
    # Reversed arrival: every message references the next one's id; the chain builds bottom-up.
    backwards = [item(number, "", f"m{number}", (f"m{number + 1}",) if number < count else ())
                 for number in range(1, count + 1)]
    assert render(sorting.thread_references(backwards)) == (
        b"(" + b" ".join(b"%d" % number for number in range(count, 0, -1)) + b")")


def test_render_chunks_large_answers() -> None:
    roots = sorting.thread_orderedsubject([item(number, f"s{number}") for number in range(1, 20001)])
    chunks = list(sorting.render_threads(roots, NUMBERS, chunk=1024))
    assert len(chunks) > 10
    assert b"".join(chunks) == b"".join(b"(%d)" % number for number in range(1, 20001))


def test_random_message_sets_thread_every_message_once() -> None:
    """Whatever the ids, references (loops, duplicates, missing parents) and subjects, both
    algorithms show every message exactly once, in balanced parentheses, and rendering in small
    chunks gives the same bytes."""
    rng = random.Random(5256)
    for _ in range(300):
        count = rng.randrange(0, 60)
        ids = [f"m{index}" for index in range(count + 5)]
        items = [item(rng.randrange(4), rng.choice(["a", "b", ""]), rng.choice([ids[number], None, rng.choice(ids)]),
                      tuple(rng.choice(ids) for _ in range(rng.choice([0, 0, 1, 3]))), reply=rng.random() < 0.4)
                 for number in range(1, count + 1)]
        for algorithm in (sorting.thread_references, sorting.thread_orderedsubject):
            roots = algorithm(items)
            whole = render(roots)
            assert render(roots, chunk=1) == whole
            assert sorted(int(number) for number in re.findall(rb"\d+", whole)) == list(range(1, count + 1))
            depth = 0
            for char in whole:
                depth += {ord("("): 1, ord(")"): -1}.get(char, 0)
                assert depth >= 0
            assert depth == 0


def test_dummies_below_the_top_are_pruned_deepest_first() -> None:
    # m1 -> x -> y -> 2: two dummies in a row give way to the message below them.
    chain = [item(1, "a", "m1"), item(2, "b", "m2", ("m1", "x", "y"))]
    assert render(sorting.thread_references(chain)) == b"(1 2)"
    # A dummy with several children below a message: they take its place, in date order.
    fan = [item(1, "a", "m1"), item(3, "b", "m2", ("m1", "x")), item(2, "c", "m3", ("m1", "x"))]
    assert render(sorting.thread_references(fan)) == b"(1 (3)(2))"
    # z and w lose their only child (message 2 names another parent for itself): z, below the
    # top, goes; then w, at the top, childless; r's lone child takes its place at the top.
    orphaned = [item(1, "e", "e", ("w", "z", "m")), item(2, "m", "m", ("r",))]
    assert render(sorting.thread_references(orphaned)) == b"(2 1)"
    # At the top: x -> y -> (1, 2): the chain of dummies gives way to the two messages, which
    # keep one dummy above them (several children at the root); one message alone takes its place.
    nested = [item(1, "a", "m1", ("x", "y")), item(2, "b", "m2", ("x", "y"))]
    assert render(sorting.thread_references(nested)) == b"((1)(2))"
    assert render(sorting.thread_references(nested[:1])) == b"(1)"
    # Long chains of missing parents, and many dummies among one message's children.
    missing = tuple(f"gone{index}" for index in range(20_000))
    assert render(sorting.thread_references([item(1, "a", "m1", missing)])) == b"(1)"
    wide = [item(0, "a", "top")] + [item(number, "b", f"m{number}", ("top", f"gone{number}"))
                                    for number in range(1, 3001)]
    assert render(sorting.thread_references(wide)) == (
        b"(1 " + b"".join(b"(%d)" % number for number in range(2, 3002)) + b")")


def test_threads_are_lists_of_integers_each_message_once() -> None:
    """The algorithms give lists of integers, no object per node: the cyclic collector, which
    runs between a THREAD's slices, has nothing of them to go through. Every message is
    reached once from the roots, every node below one parent."""
    items = [item(number % 7, f"s{number % 5}", f"m{number}", (f"m{number // 2}", f"gone{number}"),
                  reply=number % 3 == 0) for number in range(1, 400)]
    for algorithm in (sorting.thread_references, sorting.thread_orderedsubject):
        forest = algorithm(items)
        assert all(type(value) is int for values in forest for value in values)
        seen: list[int] = []
        reached: set[int] = set()
        stack = list(forest.roots)
        while stack:
            node_ = stack.pop()
            assert node_ not in reached
            reached.add(node_)
            if forest.orders[node_] != -1:
                seen.append(forest.orders[node_])
            child = forest.first_child[node_]
            while child != -1:
                stack.append(child)
                child = forest.next_sibling[child]
        assert sorted(seen) == list(range(len(items)))
