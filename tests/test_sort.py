"""SORT / UID SORT conversations (RFC 5256), DISPLAYFROM/DISPLAYTO (RFC 5957), ESORT (RFC 5267),
plus the pure sort functions of gximap.session.sorting and RFC 5256 base-subject extraction."""

from __future__ import annotations

import calendar
import itertools
import random
import re
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation
from store_helpers import record_sort_reads

from gximap.session import sorting
from gximap.session.base import PAUSE, Await, Pause, TimeSlice, run_unsliced
from gximap.session.context import Settings
from midb.keys import blob_key, folder_key
from midb.mime import base_subject, is_reply_or_forward

FEB_1994 = calendar.timegm((1994, 2, 1, 12, 0, 0))
JAN_1993 = calendar.timegm((1993, 1, 1, 12, 0, 0))


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def message(*, subject: bytes | None = None, from_: bytes | None = None, to: bytes | None = None,
            cc: bytes | None = None, date: bytes | None = None, size: int | None = None) -> bytes:
    """A message with the given header fields (absent when None), padded to ``size`` octets."""
    lines = []
    for name, value in ((b"From", from_), (b"To", to), (b"Cc", cc), (b"Subject", subject), (b"Date", date)):
        if value is not None:
            lines.append(name + b": " + value + b"\r\n")
    head = b"".join(lines) + b"\r\n"
    body = b"text\r\n"
    if size is not None:
        assert size >= len(head) + 2
        body = b"x" * (size - len(head) - 2) + b"\r\n"
    return head + body


# -- RFC 5256 section 3 examples ------------------------------------------------------------------


def test_rfc5256_sort_examples(conv: Conversation) -> None:
    """882 messages; only 2, 84 and 882 arrived since 1-Feb-1994, and their subjects sort in
    that order (A282). A284: nothing matches, the SORT response is empty."""
    folder = conv.folder("INBOX")
    subjects = {2: b"Re: alpha", 84: b"[list] Beta", 882: b"gamma (fwd)"}
    items = []
    for number in range(1, 883):
        arrived = FEB_1994 if number in subjects else JAN_1993
        items.append((message(subject=subjects.get(number, b"zzz %d" % number), from_=b"x@example.org"),
                       (), arrived, 0))
    conv.store.append_many("alice", folder.id, items)
    conv.select()
    conv.script("""
        C: A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994
        S: * SORT 2 84 882
        S: A282 OK SORT completed
        C: A284 SORT (SUBJECT) US-ASCII TEXT "not in mailbox"
        S: * SORT
        S: A284 OK SORT completed
    """)


def test_rfc5256_subject_reverse_date_example(conv: Conversation) -> None:
    """A283 SORT (SUBJECT REVERSE DATE) gives 5 3 4 1 2: subject first, newest first within."""
    day = 86400
    base = calendar.timegm((2008, 6, 1, 0, 0, 0))
    stamps = {1: base + 4 * day, 2: base + 1 * day, 3: base + 3 * day, 4: base + 2 * day, 5: base}
    subjects = {1: b"Status", 2: b"Re: status", 3: b"Meeting", 4: b"Fwd: meeting", 5: b"Agenda"}
    for number in range(1, 6):
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(stamps[number])).encode()
        conv.add_message(data=message(subject=subjects[number], date=date))
    conv.select()
    conv.script("""
        C: A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL
        S: * SORT 5 3 4 1 2
        S: A283 OK SORT completed
    """)


# -- every sort key ---------------------------------------------------------------------------------


def five_messages(conv: Conversation) -> None:
    """Five messages covering missing fields, display names, encoded words and bad dates.

        #  arrival  size  Date           Subject        From                 To           Cc
        1  500      1000  3-Jan-2001     Re: banana     Zoe <zoe@>           bob@         -
        2  100      200   -              apple          adam@                Carl <carl@> xavier@
        3  200      600   (unparsable)   [list] Cherry  "Mike" <mike@>       -            alice@
        4  400      800   1-Jan-2001     -              -                    Al <al@>     Bea <BEA@>
        5  300      400   2-Jan-2001     Fwd: Apple     =?utf-8?q?=C3=89mile?= <emile@>  dave@  -
    """
    specs: list[tuple[int, dict[str, Any]]] = [
        (500, dict(subject=b"Re: banana", from_=b"Zoe <zoe@example.org>", to=b"bob@example.org",
                   date=b"Wed, 3 Jan 2001 10:00:00 +0000", size=1000)),
        (100, dict(subject=b"apple", from_=b"adam@example.org", to=b"Carl <carl@example.org>",
                   cc=b"xavier@example.org", size=200)),
        (200, dict(subject=b"[list] Cherry", from_=b'"Mike" <mike@example.org>', cc=b"alice@example.org",
                   date=b"the day after tomorrow", size=600)),
        (400, dict(to=b"Al <al@example.org>", cc=b"Bea <BEA@example.org>",
                   date=b"Mon, 1 Jan 2001 10:00:00 +0000", size=800)),
        (300, dict(subject=b"Fwd: Apple", from_=b"=?utf-8?q?=C3=89mile?= <emile@example.org>",
                   to=b"dave@example.org", date=b"Tue, 2 Jan 2001 10:00:00 +0000", size=400)),
    ]
    for arrival, fields in specs:
        conv.add_message(data=message(**fields), internaldate=arrival)


@pytest.mark.parametrize(("program", "expected"), [
    ("ARRIVAL", "2 3 5 4 1"),
    ("SIZE", "2 5 3 4 1"),
    # 2 has no Date: and 3 an unparsable one: their internal dates (1970) stand in.
    ("DATE", "2 3 4 5 1"),
    # Base subjects BANANA APPLE CHERRY "" APPLE: the missing subject first, the tie by number.
    ("SUBJECT", "4 2 5 1 3"),
    ("REVERSE SUBJECT", "3 1 2 5 4"),
    # addr-mailbox of the first address, case-insensitively; a missing field is "".
    ("FROM", "4 2 5 3 1"),
    ("TO", "3 4 1 2 5"),
    ("CC", "1 5 3 4 2"),
    ("REVERSE CC", "2 4 3 1 5"),
    # Display names (decoded), else mailbox@host; i;unicode-casemap: Émile sorts as E + accent.
    ("DISPLAYFROM", "4 2 5 3 1"),
    ("DISPLAYTO", "3 4 1 2 5"),
    ("SUBJECT REVERSE DATE", "4 5 2 1 3"),
    ("SUBJECT ARRIVAL", "4 2 5 1 3"),
    ("REVERSE SIZE", "1 4 3 5 2"),
    ("CC ARRIVAL", "5 1 3 4 2"),
    ("CC REVERSE ARRIVAL", "1 5 3 4 2"),
])
def test_sort_keys(conv: Conversation, program: str, expected: str) -> None:
    five_messages(conv)
    conv.select()
    assert conv.command(f"SORT ({program}) UTF-8 ALL")[0] == f"* SORT {expected}".encode()


def test_uid_sort_and_search_program(conv: Conversation) -> None:
    five_messages(conv)
    conv.command("SELECT INBOX")
    conv.command("UID STORE 1:2 +FLAGS (\\Deleted)")
    conv.command("EXPUNGE")
    for _ in range(2):
        five_messages(conv)  # UIDs 6-15
    conv.command("NOOP")
    conv.script("""
        C: s1 UID SORT (SUBJECT) UTF-8 UID 4:8 NOT DELETED
        S: * SORT 4 5 7 6 8
        S: s1 OK SORT completed
        C: s2 SORT (SUBJECT) UTF-8 1:6
        S: * SORT 2 3 5 4 1 6
        S: s2 OK SORT completed
        C: s3 UID SORT (REVERSE ARRIVAL) UTF-8 LARGER 700
        S: * SORT 6 11 4 9 14
        S: s3 OK SORT completed
    """)


def test_ties_go_by_sequence_number_whatever_the_direction(conv: Conversation) -> None:
    for _ in range(4):
        conv.add_message(data=message(subject=b"same", from_=b"a@example.org", size=300), internaldate=1000)
    conv.select()
    for program in ("SUBJECT", "REVERSE SUBJECT", "REVERSE ARRIVAL", "SIZE", "REVERSE FROM REVERSE DATE"):
        assert conv.command(f"SORT ({program}) UTF-8 ALL")[0] == b"* SORT 1 2 3 4"


def test_unicode_casemap_collation(conv: Conversation) -> None:
    """i;unicode-casemap (RFC 5051, required by RFC 5256 section 7): each character titlecased
    and decomposed, then the UTF-8 octets compare. Ärger and ärger are equal (A, COMBINING
    DIAERESIS, RGER), after APPLE (P is below the combining mark) and before ECLAIR; Éclair
    (E, COMBINING ACUTE) follows Eclair."""
    for subject, name in ((b"=?utf-8?q?=C3=84rger?=", b"=?utf-8?q?=C3=96la?="), (b"Zebra", b"Zed"),
                          (b"=?utf-8?q?=C3=A4rger?=", b"=?utf-8?q?=C3=B6la?="), (b"apple", b"Ola"),
                          (b"=?utf-8?q?=C3=89clair?=", b"Oma"), (b"Eclair", b"Abe")):
        conv.add_message(data=message(subject=subject, from_=name + b" <x@example.org>"))
    conv.select()
    assert conv.command("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 4 1 3 6 5 2"
    assert conv.command("SORT (DISPLAYFROM) UTF-8 ALL")[0] == b"* SORT 6 4 5 1 3 2"


def test_base_subject_extraction_cases(conv: Conversation) -> None:
    """Subjects that reduce to the same base subject sort as equal (ties by number)."""
    variants = [b"Re: topic", b"[list] topic", b"topic (fwd)", b"Fwd: [list] Re: topic", b"[Fwd: re: topic]",
                b"RE:   topic", b"Re[2]: topic", b"[a][b] Fw: TOPIC (FWD)  ", b"aardvark", b"[only a blob]"]
    for subject in variants:
        conv.add_message(data=message(subject=subject))
    conv.select()
    # "[only a blob]" keeps its blob: "[" (0x5B) sorts after letters casemapped to upper case.
    assert conv.command("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 9 1 2 3 4 5 6 7 8 10"


@pytest.mark.parametrize(("subject", "base", "reply"), [
    ("Re: x", "x", True),
    ("RE: Re: x", "x", True),
    ("Re[2]: x", "x", True),
    ("re : x", "x", True),
    ("Fw: x", "x", True),
    ("FWD: x", "x", True),
    ("x (fwd)", "x", True),
    ("x (fwd) (FWD) ", "x", True),
    ("[fwd: x]", "x", True),
    ("[Fwd: Re: x] (fwd)", "x", True),
    ("[tag] Re: x", "x", True),
    ("Re: [tag] x", "x", True),
    ("[tag] x", "x", False),
    ("[a] [b] x", "x", False),
    ("[only blob]", "[only blob]", False),
    ("[Fwd: [tag]]", "[tag]", True),
    ("  x \t  y  ", "x y", False),
    ("Reply: x", "Reply: x", False),
    ("Refwd: x", "Refwd: x", False),
    ("Re: Re:", "", True),
    ("", "", False),
    ("x [fwd]", "x [fwd]", False),
    ("Fwd x", "Fwd x", False),
])
def test_base_subject_and_reply_detection(subject: str, base: str, reply: bool) -> None:
    assert base_subject(subject) == base
    assert is_reply_or_forward(subject) is reply


def test_empty_mailbox_and_no_match(conv: Conversation) -> None:
    conv.select()
    conv.script("""
        C: e1 SORT (ARRIVAL) UTF-8 ALL
        S: * SORT
        S: e1 OK SORT completed
        C: e2 SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) UTF-8 ALL
        S: * ESEARCH (TAG "e2") COUNT 0
        S: e2 OK SORT completed
    """)


# -- ESORT (RFC 5267) and SEARCHRES -------------------------------------------------------------------


def test_esort_return_options(conv: Conversation) -> None:
    five_messages(conv)
    conv.select()
    conv.script("""
        C: r1 SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) UTF-8 ALL
        S: * ESEARCH (TAG "r1") MIN 4 MAX 3 COUNT 5 ALL 4,2,5,1,3
        S: r1 OK SORT completed
        C: r2 UID SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL
        S: * ESEARCH (TAG "r2") UID ALL 1,4:5,3,2
        S: r2 OK SORT completed
        C: r3 SORT RETURN (COUNT) (DATE) UTF-8 FROM "example"
        S: * ESEARCH (TAG "r3") COUNT 4
        S: r3 OK SORT completed
        C: r4 SORT RETURN (MAX) (SIZE) UTF-8 NOT ALL
        S: * ESEARCH (TAG "r4")
        S: r4 OK SORT completed
    """)


def test_esort_save_feeds_dollar(conv: Conversation) -> None:
    five_messages(conv)
    conv.select()
    conv.script("""
        C: v1 SORT RETURN (SAVE MIN) (REVERSE SIZE) UTF-8 ALL
        S: * ESEARCH (TAG "v1") MIN 1
        S: v1 OK SORT completed
        C: v2 UID SEARCH $
        S: * SEARCH 1
        S: v2 OK SEARCH completed
        C: v3 SORT RETURN (SAVE) (SUBJECT) UTF-8 NOT FROM "zoe"
        S: v3 OK SORT completed
        C: v4 UID SEARCH $
        S: * SEARCH 2 3 4 5
        S: v4 OK SEARCH completed
        C: v5 SORT (SUBJECT) UTF-8 $
        S: * SORT 4 2 5 3
        S: v5 OK SORT completed
    """)


def test_modseq_criterion_adds_the_highest_modseq(conv: Conversation) -> None:
    """RFC 7162 section 3.1.5: SORT with a MODSEQ search key reports the highest mod-sequence of
    the messages found; an empty result carries none."""
    five_messages(conv)
    conv.select()
    conv.command("STORE 3 +FLAGS.SILENT (\\Flagged)")
    top = max(meta.modseq for meta in conv.store.messages("alice", conv.folder("INBOX").id))
    conv.script(f"""
        C: q1 SORT (ARRIVAL) UTF-8 MODSEQ 1
        S: * OK [HIGHESTMODSEQ {top}] Highest modification sequence
        S: * SORT 2 3 5 4 1 (MODSEQ {top})
        S: q1 OK SORT completed
        C: q2 SORT RETURN (COUNT) (ARRIVAL) UTF-8 MODSEQ {top}
        S: * ESEARCH (TAG "q2") COUNT 1 MODSEQ {top}
        S: q2 OK SORT completed
        C: q3 SORT (ARRIVAL) UTF-8 MODSEQ {top + 1}
        S: * SORT
        S: q3 OK SORT completed
    """)


def test_esort_min_max_carry_the_modseq_of_what_they_return(conv: Conversation) -> None:
    """RFC 7162 section 3.1.10, as for SEARCH: with only MIN and/or MAX returned, the MODSEQ is
    the highest of those messages (first and last in sort order), not of every match."""
    five_messages(conv)
    conv.select()
    conv.command("STORE 3 +FLAGS.SILENT (\\Flagged)")   # the highest MODSEQ, in the middle
    modseq = {meta.uid: meta.modseq for meta in conv.store.messages("alice", conv.folder("INBOX").id)}
    assert max(modseq, key=modseq.__getitem__) == 3
    conv.script(f"""
        C: q1 SORT RETURN (MIN) (ARRIVAL) UTF-8 MODSEQ 1
        S: * OK [HIGHESTMODSEQ {modseq[3]}] Highest modification sequence
        S: * ESEARCH (TAG "q1") MIN 2 MODSEQ {modseq[2]}
        S: q1 OK SORT completed
        C: q2 SORT RETURN (MAX) (ARRIVAL) UTF-8 MODSEQ 1
        S: * ESEARCH (TAG "q2") MAX 1 MODSEQ {modseq[1]}
        S: q2 OK SORT completed
        C: q3 SORT RETURN (MIN MAX) (REVERSE ARRIVAL) UTF-8 MODSEQ 1
        S: * ESEARCH (TAG "q3") MIN 1 MAX 2 MODSEQ {max(modseq[1], modseq[2])}
        S: q3 OK SORT completed
        C: q4 SORT RETURN (MIN COUNT) (ARRIVAL) UTF-8 MODSEQ 1
        S: * ESEARCH (TAG "q4") MIN 2 COUNT 5 MODSEQ {modseq[3]}
        S: q4 OK SORT completed
    """)


# -- errors, states, UTF8=ACCEPT ------------------------------------------------------------------


def test_errors_and_states(conv: Conversation) -> None:
    conv.script("""
        C: n1 SORT (ARRIVAL) UTF-8 ALL
        S: n1 BAD {*}
    """)
    five_messages(conv)
    conv.select()
    conv.script("""
        C: n2 SORT (ARRIVAL) KOI8-R ALL
        S: n2 NO [BADCHARSET (UTF-8 US-ASCII)] {*}
        C: n3 SORT (COLOUR) UTF-8 ALL
        S: n3 BAD {*}
        C: n4 SORT () UTF-8 ALL
        S: n4 BAD {*}
        C: n5 SORT (REVERSE) UTF-8 ALL
        S: n5 BAD {*}
        C: n6 SORT (SUBJECT) UTF-8
        S: n6 BAD {*}
    """)


def test_charset_must_be_utf8_after_enable_utf8_accept(conv: Conversation) -> None:
    """RFC 6855 erratum 4029: with UTF8=ACCEPT enabled, SORT's charset other than UTF-8 is BAD."""
    conv.add_message(data=message(subject=b"x"))
    conv.command("ENABLE UTF8=ACCEPT")
    conv.select()
    conv.script("""
        C: u1 SORT (SUBJECT) US-ASCII ALL
        S: u1 BAD [BADCHARSET (UTF-8)] Only the UTF-8 charset is allowed after ENABLE UTF8=ACCEPT
        C: u2 SORT (SUBJECT) UTF-8 SUBJECT "x"
        S: * SORT 1
        S: u2 OK SORT completed
    """)


def test_messages_expunged_elsewhere_are_left_out_without_expunge(conv: Conversation) -> None:
    """Like SEARCH, SORT may not send EXPUNGE (the numbers it returns would shift); the message
    another session expunged meanwhile is no longer in the result."""
    five_messages(conv)
    conv.select()
    other = conv.second_session()
    other.login()
    other.select()
    other.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    lines = conv.command("SORT (SUBJECT) UTF-8 ALL")
    assert lines[0] == b"* SORT 4 5 1 3"
    assert not any(line.endswith(b"EXPUNGE") for line in lines)
    assert conv.command("NOOP")[0] == b"* 2 EXPUNGE"


# -- cost: digests read only when needed, once per message ------------------------------------------


def test_arrival_and_size_read_no_summary_other_keys_each_once(conv: Conversation,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    folder = conv.folder("INBOX")
    count = 300
    conv.store.append_many("alice", folder.id, [
        (message(subject=b"s%d" % (index % 17), from_=b"u%d@example.org" % (index % 5), size=200 + index % 50),
         (), 1000 + (index * 7919) % count, 0)
        for index in range(count)])
    conv.select()
    reads: list[int] = []
    derived: list[bytes] = []
    original_digest = conv.store.digest
    original_values = conv.store.sort_values
    original_summaries = conv.store.summary_fields_by_key

    def counting_digest(blob: str) -> Any:
        derived.append(blob_key(blob))
        return original_digest(blob)

    def counting_values(account: str, folder_id: int, uids: list[int], read: Any) -> Any:
        reads.extend(uids)
        return original_values(account, folder_id, uids, read)

    def counting_summaries(keys: list[bytes], *args: Any) -> Any:
        derived.extend(keys)
        return original_summaries(keys, *args)

    monkeypatch.setattr(conv.store, "digest", counting_digest)
    monkeypatch.setattr(conv.store, "sort_values", counting_values)
    monkeypatch.setattr(conv.store, "summary_fields_by_key", counting_summaries)
    conv.command("SORT (ARRIVAL) UTF-8 ALL")
    conv.command("SORT (REVERSE SIZE ARRIVAL) UTF-8 ALL")
    assert reads == []
    conv.command("SORT (SUBJECT FROM REVERSE DATE) UTF-8 ALL")   # a column each, read once
    assert len(reads) == 3 * count and len(set(reads)) == count
    assert derived == []   # from the sort index: no summary, no digest
    conv.command("SORT (SUBJECT FROM REVERSE DATE) UTF-8 ALL")   # the columns answer
    conv.command("SORT (REVERSE FROM) UTF-8 ALL")
    assert len(reads) == 3 * count


def test_a_repeated_sort_reads_no_message_and_follows_new_and_expunged_mail(conv: Conversation,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The process keeps each folder's sort values (sorting.SortColumns): a SORT or THREAD
    repeated, by this session or another one, reads no index record and no summary; after new
    mail only the new message is read, and an expunged one drops out. The answers are the ones
    computed afresh."""
    five_messages(conv)
    conv.select()
    commands = ["SORT (SUBJECT) UTF-8 ALL", "UID SORT (REVERSE DATE SUBJECT) UTF-8 ALL",
                "THREAD ORDEREDSUBJECT UTF-8 ALL", "UID THREAD REFERENCES UTF-8 ALL"]

    def afresh(session: Conversation) -> list[bytes]:
        session.ctx.sort_columns.clear()
        return [session.command(command)[0] for command in commands]

    first = afresh(conv)
    assert first[0] == b"* SORT 4 2 5 1 3"
    reads = record_sort_reads(monkeypatch, conv.store)
    other = conv.second_session()
    other.login()
    other.select()
    for session in (conv, other):
        assert [session.command(command)[0] for command in commands] == first
    assert reads == []
    conv.add_message(data=message(subject=b"Apricot", date=b"Thu, 4 Jan 2001 10:00:00 +0000"))
    conv.command("NOOP")
    after_new = [conv.command(command)[0] for command in commands]
    assert after_new[0] == b"* SORT 4 2 5 6 1 3"
    assert reads and all(uids == [6] for uids in reads)   # one read per column, of the new message
    other.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    after_expunge = [other.command(command)[0] for command in commands]
    assert after_expunge[0] == b"* SORT 3 4 5 1 2"
    assert all(uids == [6] for uids in reads)
    # The first session has not heard of the expunge: its message numbers still count message 2,
    # so the THREAD answer the other session left is not its answer.
    stale_view = conv.command("THREAD ORDEREDSUBJECT UTF-8 ALL")[0]
    assert stale_view != after_expunge[2]
    assert sorted(int(number) for number in re.findall(rb"\d+", stale_view)) == [1, 3, 4, 5, 6]
    monkeypatch.undo()
    conv.ctx.sort_columns.clear()   # computed afresh; not after a UID SORT, which announces the expunge
    assert conv.command("THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == stale_view
    assert afresh(other) == after_expunge
    conv.command("NOOP")
    assert afresh(conv) == after_expunge


def test_imap_sort_cache_size_bounds_the_columns_and_reloads(conv: Conversation) -> None:
    five_messages(conv)
    conv.select()
    assert conv.ctx.sort_columns.capacity == 64 << 20
    conv.command("SORT (SUBJECT) UTF-8 ALL")
    assert conv.ctx.sort_columns.held_bytes == 5 * sorting._TEXT_BYTES
    conv.ctx.reload(Settings(sort_cache_size=0))   # SIGHUP with imap_sort_cache_size = 0
    assert conv.ctx.sort_columns.held_bytes == 0
    assert conv.command("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 4 2 5 1 3"
    assert conv.ctx.sort_columns.held_bytes == 0


# -- the pure functions ---------------------------------------------------------------------------------


def test_sort_order_is_stable_lexicographic() -> None:
    arrival = [30, 10, 20, 10, 30]
    size = [5, 5, 9, 9, 1]
    subject = ["B", "A", "B", "A", "B"]

    def positions(*columns: tuple[list[Any], bool]) -> list[int]:
        return sorting.sort_order(list(columns), 5)

    assert positions((arrival, False)) == [1, 3, 2, 0, 4]
    assert positions((arrival, True)) == [0, 4, 2, 1, 3]  # ties keep their order when reversed too
    assert positions((size, True), (arrival, False)) == [3, 2, 1, 0, 4]
    assert positions((subject, False), (size, True)) == [3, 1, 2, 0, 4]
    # A message whose body is gone (None in a column) is left out.
    assert positions(([3, None, 1, 2, None], False)) == [2, 3, 0]
    assert positions((arrival, False), ([1, 1, None, 1, 1], False)) == [1, 3, 0, 4]


def test_sort_order_of_100000_is_a_permutation_in_key_order() -> None:
    rng = random.Random(5256)
    arrival = [rng.randrange(10**9) for _ in range(100_000)]
    size = [rng.randrange(10**3) for _ in range(100_000)]
    by_arrival = sorting.sort_order([(arrival, False)], 100_000)
    by_size = sorting.sort_order([(size, True), (arrival, False)], 100_000)
    assert sorted(by_arrival) == list(range(100_000)) == sorted(by_size)
    assert all(arrival[a] <= arrival[b] for a, b in itertools.pairwise(by_arrival))
    assert all((-size[a], arrival[a]) <= (-size[b], arrival[b]) for a, b in itertools.pairwise(by_size))


class _Loads:
    """A SortColumns loader that records what it was asked for; UIDs in ``gone`` have no value."""

    def __init__(self, gone: set[int] | None = None) -> None:
        self.asked: list[list[int]] = []
        self.gone = gone or set()

    def __call__(self, uids: list[int]) -> dict[int, Any]:
        self.asked.append(list(uids))
        return {uid: uid * 10 for uid in uids if uid not in self.gone}


def test_sort_columns_read_each_message_once_and_follow_the_folder() -> None:
    columns = sorting.SortColumns()
    folder = ("alice", 7, 1234)
    load = _Loads()
    assert columns.values(folder, "DATE", [1, 2, 3], load, whole_folder=True) == [10, 20, 30]
    assert columns.values(folder, "DATE", [1, 2, 3], load, whole_folder=True) == [10, 20, 30]
    assert columns.values(folder, "DATE", [2, 3], load) == [20, 30]   # a search's subset
    assert load.asked == [[1, 2, 3]]
    # New mail: only the new messages are read; expunged ones leave the column when the
    # request covers the whole folder.
    assert columns.values(folder, "DATE", [1, 3, 4, 5], load, whole_folder=True) == [10, 30, 40, 50]
    assert load.asked[-1] == [4, 5] and columns.held_bytes == 4 * sorting._NUMBER_BYTES
    # Another criterion, folder or UIDVALIDITY is another column.
    assert columns.values(folder, "SUBJECT", [1], load) == [10]
    assert columns.values(("alice", 7, 999), "DATE", [1], load) == [10]
    assert load.asked[-2:] == [[1], [1]]
    # A message whose body is gone has no value and is not kept.
    gone = _Loads(gone={9})
    assert columns.values(folder, "DATE", [1, 3, 4, 5, 9], gone, whole_folder=True) == [10, 30, 40, 50, None]
    assert gone.asked == [[9]]
    assert columns.values(folder, "DATE", [1, 3, 4, 5], gone, whole_folder=True) == [10, 30, 40, 50]
    assert gone.asked == [[9]]


def test_sort_columns_give_text_as_ranks_in_the_same_order() -> None:
    columns = sorting.SortColumns()
    subjects = {1: "PEAR", 2: "APPLE", 3: "PEAR", 4: "ÄPFEL", 5: ""}
    folder = ("alice", 1, 1)

    def load(uids: list[int]) -> dict[int, Any]:
        return {uid: subjects[uid] for uid in uids}

    uids = [1, 2, 3, 4, 5]
    assert columns.values(folder, "SUBJECT", uids, load, whole_folder=True, ranked=True) == list(subjects.values())
    ranks = columns.values(folder, "SUBJECT", uids, load, whole_folder=True, ranked=True)
    assert list(ranks) == [2, 1, 2, 3, 0]   # equal text, equal rank; code point order
    assert sorting.sort_order([(ranks, False)], 5) == sorting.sort_order([(list(subjects.values()), False)], 5)
    assert columns.values(folder, "SUBJECT", uids, load, whole_folder=True) == list(subjects.values())
    dates = columns.values(folder, "DATE", uids, lambda missing: {uid: 100 - uid for uid in missing}, ranked=True)
    assert list(columns.values(folder, "DATE", uids, load, ranked=True)) == dates == [99, 98, 97, 96, 95]


def test_sort_columns_keep_a_whole_folder_answer_while_its_messages_stay() -> None:
    columns = sorting.SortColumns()
    computed: list[int] = []

    def compute() -> Generator[Pause, Any, list[bytes]]:
        computed.append(1)
        yield PAUSE
        return [b"answer %d" % len(computed)]

    def answer(name: str, uids: list[int]) -> list[bytes]:
        return run_unsliced(columns.answer_sliced(folder, name, uids, compute))

    folder = ("alice", 1, 1)
    assert answer("UID THREAD REFERENCES", [1, 2, 3]) == [b"answer 1"]
    assert answer("UID THREAD REFERENCES", [1, 2, 3]) == [b"answer 1"]
    assert answer("UID THREAD ORDEREDSUBJECT", [1, 2, 3]) == [b"answer 2"]
    assert answer("UID THREAD REFERENCES", [1, 2, 3, 4]) == [b"answer 3"]
    assert answer("UID THREAD REFERENCES", [1, 2, 3, 4]) == [b"answer 3"]
    assert columns.held_bytes == (4 * 3 + 8) + (4 * 4 + 8)   # the UIDs and the answer's bytes


def _start(gen: Generator[Any, Any, Any]) -> Any:
    """The first item a sliced read yields."""
    return next(gen)


def _finish(gen: Generator[Any, Any, Any], sent: Any = None) -> Any:
    """Run a sliced read to its end (sending ``sent`` first, then None at each PAUSE): its value."""
    try:
        item = gen.send(sent)
        while True:
            assert item is PAUSE
            item = gen.send(None)
    except StopIteration as stop:
        return stop.value


def test_a_folder_read_at_once_by_several_sessions_is_read_by_one() -> None:
    """Sessions that sort a folder not yet read (at the same time, after a restart) wait for the
    first one's column, without a worker (Await), and read only what it lacks."""
    columns = sorting.SortColumns()
    folder = ("alice", 1, 1)
    first_load, second_load, third_load = _Loads(), _Loads(), _Loads()
    uids = list(range(1, 11))
    first = columns.values_sliced(folder, "DATE", uids, first_load, TimeSlice(0.0), whole_folder=True)
    assert _start(first) is PAUSE   # paused before its first read
    second = columns.values_sliced(folder, "DATE", uids, second_load, TimeSlice(0.0), whole_folder=True)
    waiting = _start(second)
    assert isinstance(waiting, Await) and not waiting.future.done()
    # One that arrived since, with a message more, waits for the same read.
    third = columns.values_sliced(folder, "DATE", [*uids, 11], third_load, TimeSlice(0.0), whole_folder=True)
    assert _start(third) == waiting
    assert _finish(first) == [uid * 10 for uid in uids]
    assert waiting.future.result() is True
    assert _finish(second, True) == [uid * 10 for uid in uids]
    assert _finish(third, True) == [uid * 10 for uid in [*uids, 11]]
    assert first_load.asked == [uids] and second_load.asked == [] and third_load.asked == [[11]]
    # A read not sliced (a tool, a test) never waits.
    fourth = _Loads()
    columns.clear()
    first = columns.values_sliced(folder, "DATE", uids, first_load, TimeSlice(0.0), whole_folder=True)
    assert _start(first) is PAUSE
    assert columns.values(folder, "DATE", uids, fourth, whole_folder=True) == [uid * 10 for uid in uids]
    assert fourth.asked == [uids]
    first.close()


@pytest.mark.parametrize("end", ["closed", "kept nothing"])
def test_a_first_read_that_keeps_nothing_lets_the_waiting_sessions_read(end: str) -> None:
    """The first read's client left (its read closed while paused), or its column was too
    large to keep: the sessions waiting for it read on their own, and nothing stays under way."""
    columns = sorting.SortColumns(capacity=0 if end == "kept nothing" else sorting.DEFAULT_COLUMN_BYTES)
    folder = ("alice", 1, 1)
    uids = [1, 2, 3]
    first = columns.values_sliced(folder, "DATE", uids, _Loads(), TimeSlice(0.0), whole_folder=True)
    assert _start(first) is PAUSE
    load = _Loads()
    second = columns.values_sliced(folder, "DATE", uids, load, TimeSlice(0.0), whole_folder=True)
    waiting = _start(second)
    assert isinstance(waiting, Await)
    if end == "closed":
        first.close()
    else:
        assert _finish(first) == [10, 20, 30]
    assert waiting.future.result() is False
    assert _finish(second, False) == [10, 20, 30]
    assert load.asked == [uids]
    assert not columns._first_reads


def test_sort_columns_are_bounded_least_recently_used_first() -> None:
    four = 4 * sorting._NUMBER_BYTES   # a column of four numbers
    columns = sorting.SortColumns(capacity=2 * four + 10)
    load = _Loads()
    for folder_id in (1, 2, 3):
        columns.values(("a", folder_id, 1), "DATE", [1, 2, 3, 4], load)
    columns.values(("a", 2, 1), "DATE", [1, 2, 3, 4], load)   # kept: answered without a load
    assert len(load.asked) == 3 and columns.held_bytes == 2 * four   # the third evicted the first
    columns.values(("a", 1, 1), "DATE", [1, 2, 3, 4], load)   # read again; evicts folder 3
    columns.values(("a", 2, 1), "DATE", [1, 2, 3, 4], load)
    assert len(load.asked) == 4 and columns.held_bytes == 2 * four
    # Text counts more than numbers.
    columns.values(("a", 5, 1), "SUBJECT", [1], lambda uids: {1: "x"})
    assert columns.held_bytes == four + sorting._TEXT_BYTES
    # A column larger than the whole capacity is answered and not kept.
    assert columns.values(("a", 9, 1), "DATE", list(range(1, 12)), load) == [uid * 10 for uid in range(1, 12)]
    assert columns.held_bytes == four + sorting._TEXT_BYTES
    columns.resize(sorting._TEXT_BYTES)   # what no longer fits goes at once, oldest first
    assert columns.held_bytes == sorting._TEXT_BYTES
    columns.resize(0)
    assert columns.held_bytes == 0
    columns.values(("a", 5, 1), "SUBJECT", [1], lambda uids: {1: "x"})
    assert columns.held_bytes == 0   # 0 keeps nothing


def test_answers_are_the_same_when_the_values_are_derived_from_the_summaries(conv: Conversation) -> None:
    """A message without a sort index entry (midb.sortindex: copied before its parse, or in a
    store older than schema 7) gets its values from its body's summary: every key sorts and
    threads as from the index."""
    five_messages(conv)
    conv.select()
    commands = ["SORT (SUBJECT) UTF-8 ALL", "SORT (REVERSE DATE) UTF-8 ALL", "SORT (FROM) UTF-8 ALL",
                "SORT (TO CC) UTF-8 ALL", "SORT (DISPLAYFROM DISPLAYTO) UTF-8 ALL", "SORT (ARRIVAL SIZE) UTF-8 ALL",
                "THREAD ORDEREDSUBJECT UTF-8 ALL", "THREAD REFERENCES UTF-8 ALL"]
    from_index = [conv.command(command)[0] for command in commands]
    store = conv.store
    folder = conv.folder("INBOX").id

    def drop_entries(txn: Any, dbs: Any, _effects: Any) -> None:
        prefix = folder_key(store._account_id(txn, dbs, "alice"), folder)
        for key in [bytes(key) for key, _value in txn.cursor(dbs.sort_records) if bytes(key).startswith(prefix)]:
            txn.delete(key, db=dbs.sort_records)

    store._write(drop_entries, store._home("alice"))
    conv.ctx.sort_columns.clear()
    assert [conv.command(command)[0] for command in commands] == from_index
