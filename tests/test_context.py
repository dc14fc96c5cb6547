"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 section 4): SEARCH/SORT RETURN (UPDATE ...) keep
their result live with ``* ESEARCH (TAG "t") [UID] ADDTO/REMOVEFROM (pos set)``, CANCELUPDATE
ends that, ``* NO [NOUPDATE "t"]`` refuses it beyond the session's bound, and leaving the mailbox
ends every context. gximap.session.searchcontext has the design.

The first three tests are Dovecot imaptest's search-context-update, -update2 and -update3 scripts
(src/tests/ in dovecot/imaptest), ported line for line. Where gximap's answer differs in form:

* imaptest's ``$pos`` takes any position; gximap sends 0 for SEARCH contexts (RFC 5267 section
  4.3.3 allows it), so the ports say 0.
* search-context-update3 lists ``* 3 expunge`` before the UID REMOVEFROM; imaptest does not hold
  untagged responses to an order there, and gximap sends every REMOVEFROM of an expunged
  message before the EXPUNGE (section 4.3.4's MUST for message numbers, kept for UIDs too).
* imaptest's mailbox is its own test mbox; here six messages whose bodies say "body" and
  whose subjects are s1, s22, s33, s4, s5, s6: the message the scripts expect to stay in a
  result by its subject is the second one (-update2) and the second after message 1 is
  expunged (-update3).
* -update3 reuses captured UIDs in commands, which transcripts cannot: that script is run in
  two parts, the second written with the UIDs the first captured.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation
from test_parser import bad, parse_as

from gximap.imap import commands as cmds
from gximap.imap.framing import CommandFrame, Framer
from gximap.imap.parser import ParseError, parse_command
from gximap.session import condstore, searchcontext
from midb.errors import StoreBusy


def parse(line: bytes) -> cmds.Command:
    framer = Framer(1 << 18, 1 << 20)
    framer.feed(line + b"\r\n")
    frame = framer.next_event()
    assert isinstance(frame, CommandFrame)
    return parse_command(frame)


@pytest.fixture
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as first:
        for number, subject in enumerate([b"s1", b"s22", b"s33", b"s4", b"s5", b"s6"], 1):
            first.add_message(data=b"From: a@example.org\r\nSubject: %s\r\n\r\nbody %d\r\n" % (subject, number))
        first.login()
        first.select()
        yield first


@pytest.fixture
def pair(conv: Conversation) -> tuple[Conversation, Conversation]:
    second = conv.second_session()
    second.login()
    second.select()
    return conv, second


# -- the parser ---------------------------------------------------------------------------------


def test_return_update_and_context_parse() -> None:
    search = parse(b"a SEARCH RETURN (UPDATE COUNT) SEEN")
    assert isinstance(search, cmds.Search) and search.return_opts == ("UPDATE", "COUNT")
    # CONTEXT is a hint (section 4.2): dropped, so RETURN (CONTEXT) is RETURN (), that is ALL.
    assert parse(b"a SEARCH RETURN (CONTEXT) ALL").return_opts == ("ALL",)  # type: ignore[attr-defined]
    assert parse(b"a SEARCH RETURN (CONTEXT MIN) ALL").return_opts == ("MIN",)  # type: ignore[attr-defined]
    # UPDATE alone asks for no result items (as at Dovecot): not ALL.
    assert parse(b"a UID SEARCH RETURN (UPDATE) ALL").return_opts == ("UPDATE",)  # type: ignore[attr-defined]
    sort = parse(b"a UID SORT RETURN (UPDATE PARTIAL 1:10) (SUBJECT) UTF-8 ALL")
    assert isinstance(sort, cmds.Sort) and sort.return_opts == ("UPDATE", "PARTIAL")
    assert sort.partial == cmds.PartialRange(1, 10)


@pytest.mark.parametrize("line", [
    b"a SEARCH RETURN (UPDATE UPDATE) ALL",
    b"a SEARCH RETURN (UPDATES) ALL",
    b"a CANCELUPDATE",
    b"a CANCELUPDATE a1",
    b'a CANCELUPDATE "a1" b2',
    b'a CANCELUPDATE "a1"  "b2"',
    b'a CANCELUPDATE "a1" ',
])
def test_bad_forms_are_refused(line: bytes) -> None:
    with pytest.raises(ParseError):
        parse(line)


def test_update_fetch_attributes_parse() -> None:
    """RFC 5465 section 8: ``modifier-update = "UPDATE" [ "(" fetch-att *(SP fetch-att) ")" ]``,
    kept as sent (the context fetches their .PEEK forms)."""
    search = parse_as(cmds.Search, b'a00 SEARCH RETURN (COUNT UPDATE (UID BODY[HEADER.FIELDS (TO FROM SUBJECT)]))'
                                   b' FROM "boss"')
    assert search.return_opts == ("COUNT", "UPDATE")
    headers = cmds.Section((), "HEADER.FIELDS", ("TO", "FROM", "SUBJECT"))
    assert search.update_atts == (cmds.FetchAtt("UID"), cmds.FetchAtt("BODY", headers))
    sort = parse_as(cmds.Sort, b"a uid sort return (update (flags binary.peek[1]<0.10>) all) (DATE) UTF-8 ALL")
    assert sort.return_opts == ("UPDATE", "ALL")
    assert sort.update_atts == (cmds.FetchAtt("FLAGS"), cmds.FetchAtt("BINARY", cmds.Section((1,)), (0, 10), True))
    assert parse_as(cmds.Search, b"a SEARCH RETURN (UPDATE) ALL").update_atts == ()
    # The ABNF's spelling, without the space its examples have: taken too.
    tight = parse_as(cmds.Search, b"a SEARCH RETURN (COUNT UPDATE(UID FLAGS)) ALL")
    assert tight.return_opts == ("COUNT", "UPDATE")
    assert tight.update_atts == (cmds.FetchAtt("UID"), cmds.FetchAtt("FLAGS"))
    tight_sort = parse_as(cmds.Sort, b"a SORT RETURN (UPDATE(UID) ALL) (DATE) UTF-8 ALL")
    assert tight_sort.return_opts == ("UPDATE", "ALL") and tight_sort.update_atts == (cmds.FetchAtt("UID"),)
    assert parse_as(cmds.Search, b"a SEARCH ALL").update_atts == ()
    # As many as the command's argument budget allows, as in FETCH.
    many = b" ".join([b"UID"] * 50)
    assert len(parse_as(cmds.Search, b"a SEARCH RETURN (UPDATE (" + many + b")) ALL", max_args=60).update_atts) == 50
    assert "Too many" in bad(b"a SEARCH RETURN (UPDATE (" + many + b")) ALL", max_args=40).text


@pytest.mark.parametrize("line", [
    b"a SEARCH RETURN (UPDATE ()) ALL",             # fetch-att *(SP fetch-att): one at least
    b"a SEARCH RETURN (UPDATE (ALL)) ALL",          # a fetch-att, not FETCH's macros
    b"a SEARCH RETURN (UPDATE (FAST)) ALL",
    b"a SEARCH RETURN (UPDATE (BOGUS)) ALL",
    b"a SEARCH RETURN (UPDATE (BODY[1.FOO])) ALL",
    b"a SEARCH RETURN (UPDATE (UID) (FLAGS)) ALL",
    b"a SEARCH RETURN (UPDATE(UID)(FLAGS)) ALL",
    b"a SEARCH RETURN (UPDATE() ALL) ALL",
    b"a SEARCH RETURN (UPDATE (UID) UPDATE) ALL",
    b"a SEARCH RETURN (UPDATE (UID FLAGS) ALL",
    b"a SEARCH RETURN (UPDATE  (UID)) ALL",
    b"a SEARCH RETURN (MIN (UID)) ALL",             # only UPDATE takes a list
    b"a SORT RETURN (UPDATE (UID) (DATE) UTF-8 ALL",
])
def test_update_fetch_attributes_bad_forms(line: bytes) -> None:
    bad(line)


def test_cancelupdate_parses_its_tags() -> None:
    cmd = parse(b'a CANCELUPDATE "b1" "c2" "b1"')
    assert cmd == cmds.CancelUpdate(b"a", (b"b1", b"c2"))


# -- imaptest's scripts -----------------------------------------------------------------------


def test_imaptest_search_context_update(conv: Conversation) -> None:
    conv.script(r"""
        C: t1 SEARCH RETURN (UPDATE) BODY body SEEN
        S: * ESEARCH (TAG "t1")
        S: t1 OK {*}
        C: t2 STORE 1,2,5 +FLAGS \Seen
        S: * 1 FETCH (FLAGS (\Seen \Recent))
        S: * 2 FETCH (FLAGS (\Seen \Recent))
        S: * 5 FETCH (FLAGS (\Seen \Recent))
        S: * ESEARCH (TAG "t1") ADDTO (0 1:2,5)
        S: t2 OK {*}
        C: t3 STORE 1,2 -FLAGS \Seen
        S: * 1 FETCH (FLAGS (\Recent))
        S: * 2 FETCH (FLAGS (\Recent))
        S: * ESEARCH (TAG "t1") REMOVEFROM (0 1:2)
        S: t3 OK {*}
        C: t4 STORE 3:6 +FLAGS \Deleted
        S: * 3 FETCH (FLAGS (\Deleted \Recent))
        S: * 4 FETCH (FLAGS (\Deleted \Recent))
        S: * 5 FETCH (FLAGS (\Deleted \Seen \Recent))
        S: * 6 FETCH (FLAGS (\Deleted \Recent))
        S: t4 OK {*}
        C: t5 EXPUNGE
        S: * ESEARCH (TAG "t1") REMOVEFROM (0 5)
        S: * 6 EXPUNGE
        S: * 5 EXPUNGE
        S: * 4 EXPUNGE
        S: * 3 EXPUNGE
        S: t5 OK {*}
        C: t6 CANCELUPDATE "t1"
        S: t6 OK CANCELUPDATE completed
        C: t7 STORE 1 +FLAGS \Seen
        S: * 1 FETCH (FLAGS (\Seen \Recent))
        S: t7 OK {*}
    """)


def test_imaptest_search_context_update2(conv: Conversation) -> None:
    conv.script(r"""
        C: t1 STORE 1,2 +FLAGS \Seen
        S: * 1 FETCH (FLAGS (\Seen \Recent))
        S: * 2 FETCH (FLAGS (\Seen \Recent))
        S: t1 OK {*}
        C: t2 SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT s22
        S: * ESEARCH (TAG "t2") ALL 1:2
        S: t2 OK {*}
        C: t3 STORE 3:5 +FLAGS \Seen
        S: * 3 FETCH (FLAGS (\Seen \Recent))
        S: * 4 FETCH (FLAGS (\Seen \Recent))
        S: * 5 FETCH (FLAGS (\Seen \Recent))
        S: * ESEARCH (TAG "t2") ADDTO (0 3:5)
        S: t3 OK {*}
        C: t4 STORE 1:5 -FLAGS \Seen
        S: * 1 FETCH (FLAGS (\Recent))
        S: * 2 FETCH (FLAGS (\Recent))
        S: * 3 FETCH (FLAGS (\Recent))
        S: * 4 FETCH (FLAGS (\Recent))
        S: * 5 FETCH (FLAGS (\Recent))
        S: * ESEARCH (TAG "t2") REMOVEFROM (0 1,3:5)
        S: t4 OK {*}
    """)


def test_imaptest_search_context_update3(conv: Conversation) -> None:
    conv.script(r"""
        C: t1 STORE 1 +FLAGS \Deleted
        S: * 1 FETCH (FLAGS (\Deleted \Recent))
        S: t1 OK {*}
        C: t2 EXPUNGE
        S: * 1 EXPUNGE
        S: t2 OK {*}
        C: t3 FETCH 1:5 UID
        S: * 1 FETCH (UID {n:uid1})
        S: * 2 FETCH (UID {n:uid2})
        S: * 3 FETCH (UID {n:uid3})
        S: * 4 FETCH (UID {n:uid4})
        S: * 5 FETCH (UID {n:uid5})
        S: t3 OK {*}
        C: t4 STORE 1,2 +FLAGS.SILENT \Seen
        S: t4 OK {*}
        C: t5 UID SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT s33
        S: * ESEARCH (TAG "t5") UID ALL {=uid1}:{=uid2}
        S: t5 OK {*}
        C: t6 STORE 3:5 +FLAGS.SILENT \Seen
        S: * ESEARCH (TAG "t5") UID ADDTO (0 {=uid3}:{=uid5})
        S: t6 OK {*}
        C: t7 STORE 1:5 -FLAGS.SILENT \Seen
        S: * ESEARCH (TAG "t5") UID REMOVEFROM (0 {=uid1},{=uid3}:{=uid5})
        S: t7 OK {*}
    """)
    uid3, uid4 = conv.captured["uid3"], conv.captured["uid4"]
    conv.script(rf"""
        C: t8 UID STORE {uid3},{uid4} +FLAGS.SILENT \Seen
        S: * ESEARCH (TAG "t5") UID ADDTO (0 {{=uid3}}:{{=uid4}})
        S: t8 OK {{*}}
        C: t9 STORE 3 +FLAGS.SILENT \Deleted
        S: t9 OK {{*}}
        C: t10 EXPUNGE
        S: * ESEARCH (TAG "t5") UID REMOVEFROM (0 {{=uid3}})
        S: * 3 EXPUNGE
        S: t10 OK {{*}}
    """)


# -- two sessions, IDLE ----------------------------------------------------------------------


def test_other_sessions_changes_reach_the_context_at_the_next_command(
        pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.script(r"""
        C: a1 UID SEARCH RETURN (UPDATE COUNT) FLAGGED
        S: * ESEARCH (TAG "a1") UID COUNT 0
        S: a1 OK {*}
    """)
    b.command("STORE 2,4 +FLAGS (\\Flagged)")
    a.script(r"""
        C: a2 NOOP
        S: * 2 FETCH (FLAGS (\Flagged \Recent))
        S: * 4 FETCH (FLAGS (\Flagged \Recent))
        S: * ESEARCH (TAG "a1") UID ADDTO (0 2,4)
        S: a2 OK {*}
    """)
    b.command("STORE 2 +FLAGS (\\Deleted)")
    b.command("EXPUNGE")
    b.command("STORE 4 -FLAGS (\\Flagged)")  # (message 4 was 5 before the expunge: UID 5)
    b.command("STORE 3 -FLAGS (\\Flagged)")  # UID 4
    a.script(r"""
        C: a3 NOOP
        S: * ESEARCH (TAG "a1") UID REMOVEFROM (0 2)
        S: * 2 EXPUNGE
        S: * 3 FETCH (FLAGS (\Recent))
        S: * ESEARCH (TAG "a1") UID REMOVEFROM (0 4)
        S: a3 OK {*}
    """)


def test_new_messages_are_added_after_exists(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.script("""
        C: a1 SEARCH RETURN (UPDATE) SUBJECT news
        S: * ESEARCH (TAG "a1")
        S: a1 OK {*}
    """)
    a.add_message(data=b"Subject: news\r\n\r\nfirst\r\n")
    a.add_message(data=b"Subject: other\r\n\r\nsecond\r\n")
    a.add_message(data=b"Subject: news again\r\n\r\nthird\r\n")
    a.script("""
        C: a2 NOOP
        S: * 9 EXISTS
        S: * {n} RECENT
        S: * ESEARCH (TAG "a1") ADDTO (0 7,9)
        S: a2 OK {*}
    """)


def test_idle_delivers_updates(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.script("""
        C: a1 SEARCH RETURN (UPDATE MIN) UNSEEN
        S: * ESEARCH (TAG "a1") MIN 1
        S: a1 OK {*}
        C: a2 IDLE
        S: + idling
    """)
    b.command("STORE 1:2 +FLAGS (\\Seen)")
    a.script(r"""
        W:
        S: * 1 FETCH (FLAGS (\Seen \Recent))
        S: * 2 FETCH (FLAGS (\Seen \Recent))
        S: * ESEARCH (TAG "a1") REMOVEFROM (0 1:2)
    """)
    a.add_message(data=b"Subject: late\r\n\r\nunseen\r\n")
    a.script("""
        W:
        S: * 7 EXISTS
        S: * {n} RECENT
        S: * ESEARCH (TAG "a1") ADDTO (0 7)
        C: DONE
        S: a2 OK {*}
    """)


# -- SORT -------------------------------------------------------------------------------------


def test_sort_context_reports_positions_in_sort_order(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    b.command("STORE 1:6 +FLAGS (\\Seen)")
    a.command("NOOP")
    # Subjects s1..s6 in REVERSE order: 6 5 4 3 2 1.
    a.script(r"""
        C: a1 SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) UTF-8 SEEN
        S: * ESEARCH (TAG "a1") ALL 6,5,4,3,2,1
        S: a1 OK {*}
    """)
    b.command("STORE 2,5 -FLAGS (\\Seen)")
    a.script(r"""
        C: a2 NOOP
        S: * 2 FETCH (FLAGS (\Recent))
        S: * 5 FETCH (FLAGS (\Recent))
        S: * ESEARCH (TAG "a1") REMOVEFROM (5 2 2 5)
        S: a2 OK {*}
    """)
    # Result now 6 4 3 1; s5 (5) goes back at position 2, a new s35 (7) between 4 and 3.
    a.add_message(data=b"Subject: s35\r\n\r\nnew\r\n", flags=("\\Seen",))
    b.command("STORE 5 +FLAGS (\\Seen)")
    a.script(r"""
        C: a3 NOOP
        S: * 7 EXISTS
        S: * {n} RECENT
        S: * 5 FETCH (FLAGS (\Seen \Recent))
        S: * ESEARCH (TAG "a1") ADDTO (2 5 4 7)
        S: a3 OK {*}
        C: a4 SORT RETURN (ALL) (REVERSE SUBJECT) UTF-8 SEEN
        S: * ESEARCH (TAG "a4") ALL 6,5,4,7,3,1
        S: a4 OK {*}
    """)
    a.command("STORE 5:6 +FLAGS.SILENT (\\Deleted)")
    # 6,5 and not 6:5, which would mean 5 before 6 (RFC 5267 section 3.2).
    a.script(r"""
        C: a5 EXPUNGE
        S: * ESEARCH (TAG "a1") REMOVEFROM (1 6,5)
        S: * 6 EXPUNGE
        S: * 5 EXPUNGE
        S: a5 OK {*}
    """)


def test_sort_pairs_group_adjacent_positions() -> None:
    context = searchcontext.LiveSearch(b"t", True, cmds.SearchAll(), [1, 2],
                                       (cmds.SortCriterion("SIZE"),), {1: (10, 1), 2: (20, 2)})
    added = context.add([3, 4, 5], {3: (11, 3), 4: (12, 4), 5: (30, 5)})
    assert added == [(2, 3), (3, 4), (5, 5)]
    assert searchcontext._pairs(added, lambda uid: uid, False) == b"2 3:4 5 5"
    removed = context.remove([1, 3, 4])
    assert removed == [(3, 4), (2, 3), (1, 1)]
    assert searchcontext._pairs(removed, lambda uid: uid, True) == b"1 1,3:4"
    assert [key[-1] for key in context.ordered] == [2, 5]


# -- bounds, tags, cancelling, leaving the mailbox --------------------------------------------


def test_beyond_the_bound_the_search_is_answered_but_not_updated(conv: Conversation) -> None:
    for number in range(searchcontext.MAX_CONTEXTS):
        conv.command(f"SEARCH RETURN (UPDATE) {number + 1}")
    conv.script(r"""
        C: n1 SEARCH RETURN (UPDATE COUNT) SEEN
        S: * NO [NOUPDATE "n1"] {*}
        S: * ESEARCH (TAG "n1") COUNT 0
        S: n1 OK {*}
        C: n2 STORE 1 +FLAGS.SILENT \Seen
        S: n2 OK {*}
        C: n3 CANCELUPDATE "n1"
        S: n3 BAD [CLIENTBUG] {*}
        C: n4 CANCELUPDATE "x3" "x4"
        S: n4 OK {*}
        C: n5 SEARCH RETURN (UPDATE COUNT) SEEN
        S: * ESEARCH (TAG "n5") COUNT 1
        S: n5 OK {*}
        C: n6 STORE 2 +FLAGS.SILENT \Seen
        S: * ESEARCH (TAG "n5") ADDTO (0 2)
        S: n6 OK {*}
    """)


def test_too_many_members_is_noupdate(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(searchcontext, "MAX_MEMBERS", 5)
    conv.script(r"""
        C: a1 UID SEARCH RETURN (UPDATE) 1:3
        S: * ESEARCH (TAG "a1") UID
        S: a1 OK {*}
        C: a2 UID SEARCH RETURN (UPDATE) 4:6
        S: * NO [NOUPDATE "a2"] {*}
        S: * ESEARCH (TAG "a2") UID
        S: a2 OK {*}
        C: a3 UID SEARCH RETURN (UPDATE) 4:5
        S: * ESEARCH (TAG "a3") UID
        S: a3 OK {*}
        C: a4 CANCELUPDATE "a1" "a3"
        S: a4 OK {*}
        C: a5 UID SEARCH RETURN (UPDATE) ALL
        S: * ESEARCH (TAG "a5") UID
        S: a5 OK {*}
    """)


def test_a_live_tag_cannot_be_used_again_for_update(conv: Conversation) -> None:
    conv.script("""
        C: a1 SEARCH RETURN (UPDATE) ALL
        S: * ESEARCH (TAG "a1")
        S: a1 OK {*}
        C: a1 SORT RETURN (UPDATE) (DATE) UTF-8 ALL
        S: a1 BAD [CLIENTBUG] {*}
        C: a1 SEARCH RETURN (COUNT) ALL
        S: * ESEARCH (TAG "a1") COUNT 6
        S: a1 OK {*}
        C: a2 CANCELUPDATE "a1" "zz"
        S: a2 BAD [CLIENTBUG] {*}
        C: a3 CANCELUPDATE "a1"
        S: a3 OK {*}
        C: a1 SEARCH RETURN (UPDATE) ALL
        S: * ESEARCH (TAG "a1")
        S: a1 OK {*}
    """)


@pytest.mark.parametrize("leave", ["UNSELECT", "CLOSE", 'SELECT "INBOX"', 'EXAMINE "INBOX"'])
def test_leaving_the_mailbox_ends_the_contexts(pair: tuple[Conversation, Conversation], leave: str) -> None:
    a, b = pair
    a.command("SEARCH RETURN (UPDATE) FLAGGED")
    a.command(leave)
    if leave in ("UNSELECT", "CLOSE"):
        a.select()
    b.command("STORE 1 +FLAGS (\\Flagged)")
    lines = a.command("NOOP")
    assert not any(b"ESEARCH" in line for line in lines), lines
    assert a.send(b'c1 CANCELUPDATE "x1"\r\n')[-1].startswith(b"c1 BAD")


def test_unauthenticate_ends_the_contexts(conv: Conversation) -> None:
    conv.command("SEARCH RETURN (UPDATE) FLAGGED")
    view = conv.session.selected
    assert view is not None and view.contexts
    conv.command("UNAUTHENTICATE")
    assert conv.session.selected is None
    conv.login()
    conv.select()
    view = conv.session.selected
    assert view is not None and not view.contexts


def test_message_numbers_mean_the_messages_named_then(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("SEARCH RETURN (UPDATE) 2:3 FLAGGED")
    b.command("STORE 1 +FLAGS (\\Deleted)")
    b.command("EXPUNGE")
    a.command("NOOP")   # message 2 is now 1, 3 is 2, 4 is 3
    b.command("STORE 1:3 +FLAGS (\\Flagged)")
    a.script(r"""
        C: a1 NOOP
        S: * 1 FETCH (FLAGS (\Flagged \Recent))
        S: * 2 FETCH (FLAGS (\Flagged \Recent))
        S: * 3 FETCH (FLAGS (\Flagged \Recent))
        S: * ESEARCH (TAG "x3") ADDTO (0 1:2)
        S: a1 OK {*}
    """)


def test_saved_result_is_taken_before_this_search_saves(conv: Conversation) -> None:
    conv.command("SEARCH RETURN (SAVE) 1:2")
    conv.script(r"""
        C: a1 UID SEARCH RETURN (SAVE UPDATE) $ FLAGGED
        S: * ESEARCH (TAG "a1") UID
        S: a1 OK {*}
        C: a2 STORE 1:4 +FLAGS.SILENT \Flagged
        S: * ESEARCH (TAG "a1") UID ADDTO (0 1:2)
        S: a2 OK {*}
    """)


def test_flag_changes_are_not_searched_again_when_the_program_reads_no_flags(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    conv.command("SEARCH RETURN (UPDATE) BODY body")
    searched: list[cmds.SearchKey] = []
    original = searchcontext.searching.search_sliced   # what the live searches run, in slices

    def counting(session: object, key: cmds.SearchKey, slicer: object, **kwargs: object) -> Any:
        searched.append(key)
        return original(session, key, slicer, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(searchcontext.searching, "search_sliced", counting)
    conv.command("STORE 1:6 +FLAGS.SILENT (\\Seen)")
    assert searched == []
    conv.add_message(data=b"Subject: more\r\n\r\nbody again\r\n")
    lines = conv.command("NOOP")
    assert b'* ESEARCH (TAG "x3") ADDTO (0 7)' in lines
    # Only the arrived message is looked at: a UID set of it, and the program.
    assert len(searched) == 1 and isinstance(searched[0], cmds.SearchAnd)
    assert searched[0].keys[0] == cmds.SearchSequence(cmds.SequenceSet(((7, 7),)), uid=True)


def test_partial_and_min_with_update_answer_as_without_and_update_all(conv: Conversation) -> None:
    """RFC 5267 sections 4.3 and 4.4: UPDATE has no interaction with the other options. The
    page and MIN are answered (and saved) as without it; the updates cover the whole result."""
    conv.script(r"""
        C: a1 UID SEARCH RETURN (UPDATE PARTIAL 1:1) NOT SEEN
        S: * ESEARCH (TAG "a1") UID PARTIAL (1:1 1)
        S: a1 OK {*}
        C: a2 UID SEARCH RETURN (SAVE MIN UPDATE) NOT FLAGGED
        S: * ESEARCH (TAG "a2") UID MIN 1
        S: a2 OK {*}
        C: a3 UID SEARCH $
        S: * SEARCH 1
        S: a3 OK {*}
        C: a4 STORE 4:5 +FLAGS.SILENT (\Seen \Flagged)
        S: * ESEARCH (TAG "a1") UID REMOVEFROM (0 4:5)
        S: * ESEARCH (TAG "a2") UID REMOVEFROM (0 4:5)
        S: a4 OK {*}
    """)


# -- UIDONLY ----------------------------------------------------------------------------------


def _uidonly_watcher(other: Conversation) -> Conversation:
    """A second session of ``other``'s account with UIDONLY enabled and INBOX selected."""
    session = other.second_session()
    session.login()
    session.command("ENABLE UIDONLY")
    session.select()
    return session


def test_uidonly_takes_uid_search_update(pair: tuple[Conversation, Conversation]) -> None:
    b, _ = pair
    a = _uidonly_watcher(b)
    a.script(r"""
        C: a1 SEARCH RETURN (UPDATE) SEEN
        S: a1 BAD [UIDREQUIRED] {*}
        C: a2 UID SEARCH RETURN (UPDATE) SEEN
        S: * ESEARCH (TAG "a2") UID
        S: a2 OK {*}
    """)
    b.command("STORE 3 +FLAGS (\\Seen)")
    b.command("STORE 4 +FLAGS (\\Deleted)")
    b.command("STORE 4 +FLAGS (\\Seen)")
    b.command("EXPUNGE")
    a.script(r"""
        C: a3 NOOP
        S: * VANISHED 4
        S: * 3 UIDFETCH (FLAGS (\Seen))
        S: * ESEARCH (TAG "a2") UID ADDTO (0 3)
        S: a3 OK {*}
    """)


# -- RFC 5465 section 7: RETURN (UPDATE (fetch-att ...)) ---------------------------------------


def test_section_7_example_fetches_a_new_member_between_exists_and_addto(conv: Conversation) -> None:
    """Section 7's example: the FETCH of what UPDATE asked for comes after the EXISTS and before
    the ADDTO ("the EXISTS response MUST precede any FETCH responses, and together they MUST
    precede the ESEARCH response"); a new message that does not match gets none. BODY[...] is
    fetched as BODY.PEEK[...]: the unsolicited response leaves \\Seen alone."""
    conv.script("""
        C: a00 SEARCH RETURN (COUNT UPDATE (UID BODY[HEADER.FIELDS (TO FROM SUBJECT)])) FROM "boss"
        S: * ESEARCH (TAG "a00") COUNT 0
        S: a00 OK {*}
    """)
    conv.add_message(data=b"Subject: Re: good morning\r\nFrom: myboss@example.org\r\nTo: bob@example.org\r\n\r\nhi\r\n")
    conv.add_message(data=b"From: other@example.org\r\nSubject: x\r\n\r\nnot the boss\r\n")
    lines = conv.command("NOOP")
    assert lines[:-1] == [
        b"* 8 EXISTS", b"* 8 RECENT",
        b"* 7 FETCH (UID 7 BODY[HEADER.FIELDS (TO FROM SUBJECT)] {76}\r\n"
        b"Subject: Re: good morning\r\nFrom: myboss@example.org\r\nTo: bob@example.org\r\n\r\n)",
        b'* ESEARCH (TAG "a00") ADDTO (0 7)']
    conv.script(r"""
        C: f1 FETCH 7 FLAGS
        S: * 7 FETCH (FLAGS (\Recent))
        S: f1 OK {*}
    """)


def test_section_7_fetch_carries_modseq_once_condstore_is_on(conv: Conversation) -> None:
    """RFC 7162 section 3.1: once CONDSTORE is enabled, every unsolicited FETCH carries UID and
    MODSEQ, the one section 7 sends for a new member too."""
    conv.command("UNSELECT")
    conv.script("""
        C: e1 ENABLE CONDSTORE
        S: * ENABLED CONDSTORE
        S: e1 OK {*}
    """)
    conv.select()
    conv.script("""
        C: a1 UID SEARCH RETURN (UPDATE (FLAGS)) SUBJECT wanted
        S: * ESEARCH (TAG "a1") UID
        S: a1 OK {*}
    """)
    conv.add_message(data=b"Subject: wanted\r\n\r\nhi\r\n")
    lines = conv.command("NOOP")
    assert lines[:-1] == [b"* 7 EXISTS", b"* 1 RECENT", b"* 7 FETCH (UID 7 FLAGS (\\Recent) MODSEQ (8))",
                          b'* ESEARCH (TAG "a1") UID ADDTO (0 7)'], lines


def test_update_naming_modseq_enables_condstore_with_the_search(conv: Conversation) -> None:
    """RFC 7162 section 3.1: a command that names the MODSEQ fetch-att enables CONDSTORE, as FETCH
    MODSEQ does; RETURN (UPDATE (MODSEQ)) names it, so the SEARCH tells the HIGHESTMODSEQ then,
    not at the first unsolicited FETCH (between its EXISTS and the FETCH)."""
    highest = conv.folder("INBOX").highestmodseq
    conv.script(f"""
        C: a1 UID SEARCH RETURN (UPDATE (UID MODSEQ)) SUBJECT wanted
        S: * OK [HIGHESTMODSEQ {highest}] {{*}}
        S: * ESEARCH (TAG "a1") UID
        S: a1 OK {{*}}
    """)
    assert condstore.enabled(conv.session)
    conv.add_message(data=b"Subject: wanted\r\n\r\nhi\r\n")
    lines = conv.command("NOOP")
    assert lines[:-1] == [b"* 7 EXISTS", b"* 7 RECENT", b"* 7 FETCH (UID 7 MODSEQ (%d))" % (highest + 1),
                          b'* ESEARCH (TAG "a1") UID ADDTO (0 7)'], lines


def test_sort_update_naming_modseq_enables_condstore_with_the_sort(conv: Conversation) -> None:
    highest = conv.folder("INBOX").highestmodseq
    conv.script(f"""
        C: s1 UID SORT RETURN (UPDATE(MODSEQ)) (ARRIVAL) UTF-8 SUBJECT wanted
        S: * OK [HIGHESTMODSEQ {highest}] {{*}}
        S: * ESEARCH (TAG "s1") UID
        S: s1 OK {{*}}
    """)
    assert condstore.enabled(conv.session)


def test_members_by_a_flag_change_get_no_fetch(pair: tuple[Conversation, Conversation]) -> None:
    """Section 7: "No untagged FETCH response SHOULD be returned if a message becomes a member of
    UPDATE SEARCH due to flag or annotation changes": only the flag update and the ADDTO. A new
    message that arrives flagged is fetched; one that arrives unflagged and is flagged later
    (an entry by a flag change) is not."""
    a, b = pair
    a.script("""
        C: a1 UID SEARCH RETURN (UPDATE (UID FLAGS)) FLAGGED
        S: * ESEARCH (TAG "a1") UID
        S: a1 OK {*}
    """)
    b.command("STORE 2 +FLAGS (\\Flagged)")
    a.add_message(data=b"Subject: flagged\r\n\r\nnew\r\n", flags=("\\Flagged",))
    a.add_message(data=b"Subject: plain\r\n\r\nnew\r\n")
    a.script(r"""
        C: a2 NOOP
        S: * 8 EXISTS
        S: * 8 RECENT
        S: * 2 FETCH (FLAGS (\Flagged \Recent))
        S: * 7 FETCH (UID 7 FLAGS (\Flagged \Recent))
        S: * ESEARCH (TAG "a1") UID ADDTO (0 2,7)
        S: a2 OK {*}
    """)
    b.command("NOOP")
    b.command("UID STORE 8 +FLAGS (\\Flagged)")
    a.script(r"""
        C: a3 NOOP
        S: * 8 FETCH (FLAGS (\Flagged \Recent))
        S: * ESEARCH (TAG "a1") UID ADDTO (0 8)
        S: a3 OK {*}
    """)


def test_sort_context_fetches_its_new_members_before_the_addto(pair: tuple[Conversation, Conversation]) -> None:
    """CONTEXT=SORT as CONTEXT=SEARCH: FETCH responses in UID order, then the ADDTO in sort
    order; a message that arrives into two contexts gets one FETCH with both lists (the first
    of each label), one that arrives into one of them that one's."""
    a, b = pair
    a.script("""
        C: a1 SORT RETURN (UPDATE (UID RFC822.SIZE)) (REVERSE SUBJECT) UTF-8 SUBJECT news
        S: * ESEARCH (TAG "a1")
        S: a1 OK {*}
        C: a2 SEARCH RETURN (UPDATE (UID BODY.PEEK[TEXT])) BODY wanted
        S: * ESEARCH (TAG "a2")
        S: a2 OK {*}
    """)
    a.add_message(data=b"Subject: news a\r\n\r\nwanted\r\n")
    a.add_message(data=b"Subject: news b\r\n\r\nother\r\n")
    a.add_message(data=b"Subject: plain c\r\n\r\nwanted\r\n")
    lines = a.command("NOOP")
    assert lines[:-1] == [
        b"* 9 EXISTS", b"* 9 RECENT",
        b"* 7 FETCH (UID 7 RFC822.SIZE 27 BODY[TEXT] {8}\r\nwanted\r\n)",
        b"* 8 FETCH (UID 8 RFC822.SIZE 26)",
        b"* 9 FETCH (UID 9 BODY[TEXT] {8}\r\nwanted\r\n)",
        b'* ESEARCH (TAG "a1") ADDTO (1 8,7)',   # REVERSE SUBJECT: "news b", then "news a"
        b'* ESEARCH (TAG "a2") ADDTO (0 7,9)']


def test_uidonly_gets_uidfetch_before_the_addto(pair: tuple[Conversation, Conversation]) -> None:
    b, _ = pair
    a = _uidonly_watcher(b)
    a.script(r"""
        C: a1 UID SEARCH RETURN (UPDATE (UID FLAGS)) UNSEEN
        S: * ESEARCH (TAG "a1") UID
        S: a1 OK {*}
    """)
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    a.script(r"""
        C: a2 NOOP
        S: * 7 EXISTS
        S: * 0 RECENT
        S: * 7 UIDFETCH (UID 7 FLAGS ())
        S: * ESEARCH (TAG "a1") UID ADDTO (0 7)
        S: a2 OK {*}
    """)


def test_combined_with_notify_message_new(conv: Conversation) -> None:
    """RFC 5465 section 5.2: with NOTIFY's MessageNew attributes too, a message both ask for gets
    one FETCH with both lists and no duplicate data, in section 7's place (before the ADDTO:
    searchcontext and ImapSession._fetch_entering say why); a new message only MessageNew asks
    for keeps section 5.2's (after the ADDTO). Pushed, and at a command's end, where MessageNew's
    FETCH follows the tagged answer."""
    a = conv
    a.command("NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge))")
    a.script("""
        C: a1 SEARCH RETURN (UPDATE (FLAGS UID)) SUBJECT news
        S: * ESEARCH (TAG "a1")
        S: a1 OK {*}
    """)
    a.add_message(data=b"Subject: news\r\n\r\n")
    a.add_message(data=b"Subject: other\r\n\r\n")
    assert a.wake() == [
        b"* 8 EXISTS", b"* 8 RECENT",
        b"* 7 FETCH (UID 7 FLAGS (\\Recent) BODY[HEADER.FIELDS (SUBJECT)] {17}\r\nSubject: news\r\n\r\n)",
        b'* ESEARCH (TAG "a1") ADDTO (0 7)',
        b"* 8 FETCH (UID 8 BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: other\r\n\r\n)"]
    # At a command's end the catch-up comes before the tagged answer, MessageNew's own FETCH after it.
    a.add_message(data=b"Subject: other\r\n\r\n")
    a.add_message(data=b"Subject: news\r\n\r\n")
    lines = a.send(b"n2 NOOP\r\n")
    assert lines == [
        b"* 10 EXISTS", b"* 10 RECENT",
        b"* 10 FETCH (UID 10 FLAGS (\\Recent) BODY[HEADER.FIELDS (SUBJECT)] {17}\r\nSubject: news\r\n\r\n)",
        b'* ESEARCH (TAG "a1") ADDTO (0 10)',
        b"n2 OK NOOP completed",
        b"* 9 FETCH (UID 9 BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: other\r\n\r\n)"]
    assert a.wake(require=False) == []


def test_idle_fetches_new_members_before_the_addto(conv: Conversation) -> None:
    """IDLE without NOTIFY: the update it pushes has the FETCH in the same place."""
    conv.script("""
        C: a1 SEARCH RETURN (UPDATE (UID ENVELOPE)) SUBJECT late
        S: * ESEARCH (TAG "a1")
        S: a1 OK {*}
        C: a2 IDLE
        S: + idling
    """)
    conv.add_message(data=b"Subject: late\r\n\r\nunseen\r\n")
    conv.script("""
        W:
        S: * 7 EXISTS
        S: * {n} RECENT
        S: * 7 FETCH (UID 7 ENVELOPE (NIL "late" NIL NIL NIL NIL NIL NIL NIL NIL))
        S: * ESEARCH (TAG "a1") ADDTO (0 7)
        C: DONE
        S: a2 OK {*}
    """)


def test_own_new_member_is_fetched_without_message_new_attributes(conv: Conversation) -> None:
    """The client's own APPEND into a live result: its ADDTO, and the FETCH the UPDATE asked for
    (section 7 excepts no message), but not MessageNew's attributes (section 5.2: none for what
    the client made itself)."""
    conv.command("NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge))")
    conv.script("""
        C: a1 SEARCH RETURN (UPDATE (FLAGS)) SUBJECT news
        S: * ESEARCH (TAG "a1")
        S: a1 OK {*}
    """)
    lines = conv.send(b"p1 APPEND INBOX {18+}\r\nSubject: news\r\n\r\n\r\n")
    assert lines[:4] == [b"* 7 EXISTS", b"* 7 RECENT", b"* 7 FETCH (UID 7 FLAGS (\\Recent))",
                         b'* ESEARCH (TAG "a1") ADDTO (0 7)'], lines
    assert len(lines) == 5 and lines[4].startswith(b"p1 OK"), lines


def test_a_fetch_that_meets_a_store_error_leaves_the_addto(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """The FETCH of a new member fails (the store busy): the result holds the message all the
    same, so its ADDTO still goes out."""
    conv.script("""
        C: a1 SEARCH RETURN (UPDATE (UID BODY.PEEK[TEXT])) SUBJECT news
        S: * ESEARCH (TAG "a1")
        S: a1 OK {*}
    """)
    conv.add_message(data=b"Subject: news\r\n\r\nhi\r\n")

    def busy(*args: Any, **kwargs: Any) -> Any:
        raise StoreBusy("too many concurrent readers")

    monkeypatch.setattr(conv.store, "get_messages", busy)
    conv.script("""
        C: a2 NOOP
        S: * 7 EXISTS
        S: * 7 RECENT
        S: * ESEARCH (TAG "a1") ADDTO (0 7)
        S: a2 OK {*}
    """)
