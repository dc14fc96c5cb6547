"""Two sessions on one store: changes made by one reach the other at the right points.

RFC 3501 section 7.4.1 (no EXPUNGE during FETCH, STORE or SEARCH), RFC 2180 (multi-accessed
mailboxes), \\Recent given to exactly one session (RFC 3501 section 2.3.2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conversation import Conversation

from gximap.session import selected


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[tuple[Conversation, Conversation]]:
    with Conversation(tmp_path) as first:
        for number in range(1, 4):
            first.add_message(data=b"Subject: message %d\r\n\r\nbody %d\r\n" % (number, number))
        first.store.claim_recent_range("alice", first.folder("INBOX").id)
        second = first.second_session()
        for conv in (first, second):
            conv.login()
            conv.select()
        yield first, second


def test_store_reaches_the_other_session_at_its_next_command(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    b.script(r"""
        C: b1 STORE 2 +FLAGS (\Flagged)
        S: * 2 FETCH (FLAGS (\Flagged))
        S: b1 OK STORE completed
    """)
    a.script(r"""
        C: a1 NOOP
        S: * 2 FETCH (FLAGS (\Flagged))
        S: a1 OK NOOP completed
        C: a2 STORE 1 +FLAGS (\Seen)
        S: * 1 FETCH (FLAGS (\Seen))
        S: a2 OK STORE completed
        C: a3 NOOP
        S: a3 OK NOOP completed
    """)
    # The FETCH itself reads the current flags: A's change, shown, is not sent again.
    b.script(r"""
        C: b2 UID FETCH 1:* FLAGS
        S: * 1 FETCH (UID 1 FLAGS (\Seen))
        S: * 2 FETCH (UID 2 FLAGS (\Flagged))
        S: * 3 FETCH (UID 3 FLAGS ())
        S: b2 OK FETCH completed
        C: b3 NOOP
        S: b3 OK NOOP completed
    """)


def test_expunge_waits_for_a_command_that_may_announce_it(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    b.script(r"""
        C: b1 STORE 2 +FLAGS.SILENT (\Deleted)
        S: b1 OK STORE completed
        C: b2 EXPUNGE
        S: * 2 EXPUNGE
        S: b2 OK EXPUNGE completed
    """)
    # A still numbers the messages 1..3. FETCH answers what it can and says NO for the
    # expunged one (RFC 2180 4.1.2). Neither FETCH, STORE nor SEARCH sends the EXPUNGE.
    a.script(r"""
        C: a1 FETCH 1:3 (UID BODY.PEEK[TEXT])
        S: * 1 FETCH (UID 1 BODY[TEXT] {8}
        S: body 1
        S: )
        S: * 3 FETCH (UID 3 BODY[TEXT] {8}
        S: body 3
        S: )
        S: a1 NO [EXPUNGEISSUED] Some of the requested messages no longer exist
        C: a3 STORE 1:3 +FLAGS (\Answered)
        S: * 1 FETCH (FLAGS (\Answered))
        S: * 3 FETCH (FLAGS (\Answered))
        S: a3 NO [EXPUNGEISSUED] Some of the requested messages no longer exist
        C: a4 STORE 1:3 -FLAGS.SILENT (\Answered)
        S: a4 OK STORE completed
        C: a5 SEARCH ALL
        S: * SEARCH 1 3
        S: a5 OK SEARCH completed
        C: a6 COPY 2:3 Trash
        S: * 2 EXPUNGE
        S: a6 NO [EXPUNGEISSUED] Some of the requested messages no longer exist
        C: a7 FETCH 2 UID
        S: * 2 FETCH (UID 3)
        S: a7 OK FETCH completed
    """)


@pytest.mark.parametrize("command, answer", [
    ("UID FETCH 1:3 UID", [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)"]),
    ("UID STORE 2 +FLAGS (\\Seen)", []),
    ("UID SEARCH ALL", [b"* SEARCH 1 3"]),
    ("UID SORT (ARRIVAL) UTF-8 ALL", [b"* SORT 1 3"]),
    ("UID THREAD REFERENCES UTF-8 ALL", [b"* THREAD (1)(3)"]),
])
def test_uid_commands_send_the_expunge_after_their_answer(pair: tuple[Conversation, Conversation],
                                                          command: str, answer: list[bytes]) -> None:
    """A UID command names messages by UID, so it may send EXPUNGE (RFC 3501 section 7.4.1), as
    Dovecot does: a client polling with UID FETCH learns of expunges without a NOOP. The answer
    itself still uses the numbers the client knew."""
    a, b = pair
    b.command("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.command("EXPUNGE")
    lines = a.command(command)
    assert lines[:-1] == [*answer, b"* 2 EXPUNGE"]
    assert lines[-1].split(b" ")[1] == b"OK"
    assert a.command("FETCH 2 UID")[0] == b"* 2 FETCH (UID 3)"


def test_expunge_delivered_at_noop(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    b.command("UID STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    b.command("EXPUNGE")
    a.script("""
        C: a1 SEARCH ALL
        S: * SEARCH 2
        S: a1 OK SEARCH completed
        C: a2 NOOP
        S: * 3 EXPUNGE
        S: * 1 EXPUNGE
        S: a2 OK NOOP completed
        C: a3 FETCH 1 UID
        S: * 1 FETCH (UID 2)
        S: a3 OK FETCH completed
    """)


def test_new_messages_and_recent_go_to_exactly_one_session(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.add_message(data=b"Subject: delivered\r\n\r\nnew\r\n")  # LMTP delivery, say
    # EXISTS may be sent after FETCH (only EXPUNGE may not): the new message is not fetched.
    a.script(r"""
        C: a1 FETCH 1:* UID
        S: * 1 FETCH (UID 1)
        S: * 2 FETCH (UID 2)
        S: * 3 FETCH (UID 3)
        S: * 4 EXISTS
        S: * 1 RECENT
        S: a1 OK FETCH completed
        C: a2 FETCH 4 FLAGS
        S: * 4 FETCH (FLAGS (\Recent))
        S: a2 OK FETCH completed
    """)
    b.script(r"""
        C: b1 NOOP
        S: * 4 EXISTS
        S: * 0 RECENT
        S: b1 OK NOOP completed
        C: b2 FETCH 4 FLAGS
        S: * 4 FETCH (FLAGS ())
        S: b2 OK FETCH completed
        C: b3 SEARCH RECENT
        S: * SEARCH
        S: b3 OK SEARCH completed
    """)
    a.script("""
        C: a3 SEARCH RECENT
        S: * SEARCH 4
        S: a3 OK SEARCH completed
    """)


def test_a_read_only_session_told_first_sees_recent_and_leaves_it(pair: tuple[Conversation, Conversation]) -> None:
    """RFC 3501 2.3.2: the first session told of a message sees \\Recent even when it is
    read-only (EXAMINE); it does not claim it, so a read-write session after it sees it too."""
    a, b = pair
    b.command("EXAMINE INBOX")
    a.add_message(data=b"Subject: delivered\r\n\r\nnew\r\n")
    b.script(r"""
        C: b1 NOOP
        S: * 4 EXISTS
        S: * 1 RECENT
        S: b1 OK NOOP completed
        C: b2 FETCH 4 FLAGS
        S: * 4 FETCH (FLAGS (\Recent))
        S: b2 OK FETCH completed
    """)
    a.script(r"""
        C: a1 NOOP
        S: * 4 EXISTS
        S: * 1 RECENT
        S: a1 OK NOOP completed
    """)
    # Claimed now: a read-only session learning of it later does not see it.
    a.add_message(data=b"Subject: second\r\n\r\nnew\r\n")
    a.command("NOOP")
    b.script(r"""
        C: b3 NOOP
        S: * 5 EXISTS
        S: * 1 RECENT
        S: b3 OK NOOP completed
    """)


@pytest.mark.parametrize("when", ["select", "sync"])
def test_a_delivery_just_before_the_claim_is_recent_to_the_claiming_session(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """A message committed between a session's read of the folder (SELECT's, or a sync's) and
    its claim of \\Recent is claimed with the others: it is \\Recent to that session when the
    next sync brings it, not to no session at all (RFC 3501 section 2.3.2)."""
    a, b = pair
    store = a.store
    claim = store.claim_recent_range
    raced: list[int] = []

    def delivery_first(account: str, folder_id: int) -> tuple[int, int]:
        if not raced:
            raced.append(1)
            a.add_message(data=b"Subject: just now\r\n\r\nx\r\n")
        return claim(account, folder_id)

    if when == "sync":
        a.add_message(data=b"Subject: fourth\r\n\r\nx\r\n")
        monkeypatch.setattr(store, "claim_recent_range", delivery_first)
        b.script(r"""
            C: b1 NOOP
            S: * 4 EXISTS
            S: * 1 RECENT
            S: b1 OK NOOP completed
        """)
        lines = b.command("NOOP")   # the message committed meanwhile
        last = 5
    else:
        monkeypatch.setattr(store, "claim_recent_range", delivery_first)
        lines = b.command("SELECT INBOX")   # the sync that ends SELECT brings it
        assert b"* 3 EXISTS" in lines and b"* 0 RECENT" in lines
        last = 4
    assert raced
    assert lines[-3:-1] == [b"* %d EXISTS" % last, b"* %d RECENT" % (last - 3)]
    assert b.command(f"FETCH {last} FLAGS")[0] == b"* %d FETCH (FLAGS (\\Recent))" % last
    third = a.second_session()
    third.login()
    assert b"* 0 RECENT" in third.command("SELECT INBOX")


def test_a_keyword_new_to_the_mailbox_is_announced_with_flags(pair: tuple[Conversation, Conversation]) -> None:
    """RFC 3501 7.2.6: a new keyword in use comes with a new FLAGS (and PERMANENTFLAGS) before
    the FETCH that shows it, to the session that set it and to the others; once only."""
    a, b = pair
    b.command("EXAMINE INBOX")
    a.script(r"""
        C: a1 STORE 1 +FLAGS.SILENT ($Todo)
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Todo)
        S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Todo \*)] Flags permitted
        S: a1 OK STORE completed
        C: a2 STORE 2 +FLAGS ($Todo)
        S: * 2 FETCH (FLAGS ($Todo))
        S: a2 OK STORE completed
    """)
    b.script(r"""
        C: b1 NOOP
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Todo)
        S: * 1 FETCH (FLAGS ($Todo))
        S: * 2 FETCH (FLAGS ($Todo))
        S: b1 OK NOOP completed
    """)
    # A new message carrying an unknown keyword (a delivery filter's, an APPEND's).
    a.add_message(data=b"Subject: tagged\r\n\r\nx\r\n", flags=("$Invoice",))
    a.script(r"""
        C: a3 NOOP
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Invoice $Todo)
        S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Invoice $Todo \*)] Flags permitted
        S: * 4 EXISTS
        S: * 1 RECENT
        S: a3 OK NOOP completed
    """)
    b.script(r"""
        C: b2 NOOP
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Invoice $Todo)
        S: * 4 EXISTS
        S: * 0 RECENT
        S: b2 OK NOOP completed
    """)


def test_the_keywords_announced_are_those_in_use(pair: tuple[Conversation, Conversation]) -> None:
    """A client cycling through new keywords: each update lists the keywords in use then, not
    every keyword ever used (whose list, sent again with each, grew as the square)."""
    a, b = pair
    for number in range(1, 4):
        a.command(f"STORE 1 +FLAGS.SILENT (kw{number})")
        a.command(f"STORE 1 -FLAGS.SILENT (kw{number})")
        a.command(f"STORE 2 +FLAGS.SILENT (kw{number})")
        flags = [line for line in b.command("NOOP") if line.startswith(b"* FLAGS")]
        assert flags == [b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft kw%d)" % number]
        a.command(f"STORE 2 -FLAGS.SILENT (kw{number})")


def test_a_fetch_of_flags_announces_a_keyword_before_showing_it(pair: tuple[Conversation, Conversation]) -> None:
    """The client's own FETCH of FLAGS (its usual resync) may be the first to show a keyword
    another session set: the FLAGS update comes before it, as the sync's does."""
    a, b = pair
    a.command("STORE 1 +FLAGS.SILENT ($Todo)")
    b.script(r"""
        C: b1 UID FETCH 1 (UID FLAGS)
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Todo)
        S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Todo \*)] Flags permitted
        S: * 1 FETCH (UID 1 FLAGS ($Todo))
        S: b1 OK FETCH completed
        C: b2 FETCH 1:2 (FLAGS ENVELOPE)
        S: * 1 FETCH (FLAGS ($Todo) ENVELOPE {*})
        S: * 2 FETCH (FLAGS () ENVELOPE {*})
        S: b2 OK FETCH completed
    """)


def test_flags_a_fetch_showed_are_not_sent_again_by_the_update_after_it(
        pair: tuple[Conversation, Conversation]) -> None:
    """A resynchronising FETCH after another session's changes: each message once, not once in
    the FETCH and again in the update that ends the command. Those it did not show still come."""
    a, b = pair
    a.command("STORE 1:3 +FLAGS.SILENT (\\Flagged)")
    b.script(r"""
        C: b1 FETCH 1:2 (FLAGS)
        S: * 1 FETCH (FLAGS (\Flagged))
        S: * 2 FETCH (FLAGS (\Flagged))
        S: * 3 FETCH (FLAGS (\Flagged))
        S: b1 OK FETCH completed
        C: b2 NOOP
        S: b2 OK NOOP completed
    """)
    b.command("UNSELECT")
    b.command("ENABLE CONDSTORE")
    b.select()
    a.command("STORE 1:3 -FLAGS.SILENT (\\Flagged)")
    b.script(r"""
        C: b3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 4)
        S: * 1 FETCH (UID 1 MODSEQ (8) FLAGS ())
        S: * 2 FETCH (UID 2 MODSEQ (9) FLAGS ())
        S: * 3 FETCH (UID 3 MODSEQ (10) FLAGS ())
        S: b3 OK FETCH completed
    """)


def test_a_change_made_while_a_fetch_reads_still_comes_after_it(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    store = b.store
    read = store.get_messages
    raced: list[int] = []

    def change_after_the_read(*args: Any, **kwargs: Any) -> Any:
        records = read(*args, **kwargs)
        if not raced:
            raced.append(1)
            a.command("STORE 2 +FLAGS.SILENT (\\Seen)")
        return records

    monkeypatch.setattr(store, "get_messages", change_after_the_read)
    lines = b.command("FETCH 1:3 (FLAGS BODY.PEEK[TEXT])")
    assert raced
    assert [line.split(b" BODY")[0] for line in lines[:-1]] == [
        b"* 1 FETCH (FLAGS ()", b"* 2 FETCH (FLAGS ()", b"* 3 FETCH (FLAGS ()", b"* 2 FETCH (FLAGS (\\Seen))"]


def test_append_and_move_by_the_other_session(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    data = b"Subject: appended\r\n\r\nhi\r\n"
    lines = b.send(b"b1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data))
    assert lines[:2] == [b"* 4 EXISTS", b"* 1 RECENT"]
    trash = a.folder("Trash").uidvalidity
    b.script(rf"""
        C: b2 MOVE 1 Trash
        S: * OK [COPYUID {trash} 1 1] Moved
        S: * 1 EXPUNGE
        S: b2 OK MOVE completed
    """)
    a.script(r"""
        C: a1 STORE 1 +FLAGS (\Seen)
        S: * 4 EXISTS
        S: * 0 RECENT
        S: a1 NO [EXPUNGEISSUED] Some of the requested messages no longer exist
        C: a2 NOOP
        S: * 1 EXPUNGE
        S: a2 OK NOOP completed
        C: a3 FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])
        S: * 1 FETCH (UID 2 BODY[HEADER.FIELDS (Subject)] {22}
        S: Subject: message 2
        S:
        S: )
        S: * 2 FETCH (UID 3 BODY[HEADER.FIELDS (Subject)] {22}
        S: Subject: message 3
        S:
        S: )
        S: * 3 FETCH (UID 4 BODY[HEADER.FIELDS (Subject)] {21}
        S: Subject: appended
        S:
        S: )
        S: a3 OK FETCH completed
    """)


def test_idle_session_is_woken_by_the_other(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.script("""
        C: a1 IDLE
        S: + idling
    """)
    b.command("STORE 3 +FLAGS (\\Flagged)")
    a.script(r"""
        W:
        S: * 3 FETCH (FLAGS (\Flagged))
        C: DONE
        S: a1 OK IDLE terminated
    """)


def test_append_to_the_selected_folder_claims_recent_in_its_own_commit(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """The appending session gets \\Recent for its message (and for one delivered just before it
    that nobody saw yet) from the APPEND's own transaction: no second durable write to claim it."""
    a, b = pair
    a.add_message(data=b"Subject: delivered\r\n\r\nnew\r\n")  # UID 4, not seen by anybody yet
    writes: list[str] = []
    shared = type(b.store._env)
    original = shared.write

    def counting(self, job, *, durable):  # noqa: ANN001, ANN202
        writes.append(job.__qualname__)
        return original(self, job, durable=durable)

    monkeypatch.setattr(shared, "write", counting)
    data = b"Subject: appended\r\n\r\nhi\r\n"
    lines = b.send(b"b1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data))
    assert lines[:2] == [b"* 5 EXISTS", b"* 2 RECENT"]
    assert lines[-1].startswith(b"b1 OK [APPENDUID ")
    assert len(writes) == 1, writes
    b.script("""
        C: b2 SEARCH RECENT
        S: * SEARCH 4 5
        S: b2 OK SEARCH completed
    """)
    a.script("""
        C: a1 NOOP
        S: * 5 EXISTS
        S: * 0 RECENT
        S: a1 OK NOOP completed
    """)


def test_append_claim_leaves_later_deliveries_to_the_next_claim(pair: tuple[Conversation, Conversation]) -> None:
    """Messages delivered after the APPEND's claim are claimed as usual by whoever syncs first."""
    a, b = pair
    data = b"Subject: appended\r\n\r\nhi\r\n"
    lines = b.send(b"b1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data))  # UID 4, claimed by b
    assert lines[:2] == [b"* 4 EXISTS", b"* 1 RECENT"]
    a.add_message(data=b"Subject: delivered\r\n\r\nnew\r\n")  # UID 5
    a.script("""
        C: a1 NOOP
        S: * 5 EXISTS
        S: * 1 RECENT
        S: a1 OK NOOP completed
        C: a2 SEARCH RECENT
        S: * SEARCH 5
        S: a2 OK SEARCH completed
    """)
    b.script("""
        C: b2 NOOP
        S: * 5 EXISTS
        S: * 1 RECENT
        S: b2 OK NOOP completed
        C: b3 SEARCH RECENT
        S: * SEARCH 4
        S: b3 OK SEARCH completed
    """)


def test_a_known_change_overtaken_by_a_foreign_one_is_forgotten(pair: tuple[Conversation, Conversation]) -> None:
    """A change this session made itself, then changed again by another session before this one
    synced (a race between the write and the sync, set up here by noting it directly): the read
    reports the other session's change, and the overtaken one is dropped rather than kept for
    the session's lifetime."""
    a, b = pair
    view = a.session.selected
    assert view is not None
    before = view.modseq
    view.note_own_changes([SimpleNamespace(uid=1, modseq=before + 1)])
    b.send(b"b1 STORE 2 +FLAGS.SILENT (\\Answered)\r\n")   # MODSEQ before + 1
    b.send(b"b2 STORE 1 +FLAGS.SILENT (\\Flagged)\r\n")    # MODSEQ before + 2
    a.script(r"""
        C: a1 NOOP
        S: * 1 FETCH (FLAGS (\Flagged))
        S: * 2 FETCH (FLAGS (\Answered))
        S: a1 OK NOOP completed
    """)
    assert view.modseq == before + 2
    assert view._own_changes == {}  # before + 1 (message 2's) was read, so uid 1's entry is stale


def test_own_store_skips_reading_the_changes_but_a_foreign_one_between_is_reported(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """After a session's own STORE the MODSEQs since its last sync are all its own: it catches up
    without reading the changes (SelectedMailbox._only_known_changes). A change of another session
    in between leaves a MODSEQ it does not know, and that change is read and reported."""
    a, b = pair
    reads: list[int] = []  # both sessions share the store: cleared before each of A's scripts
    view_changes_since = a.store.view_changes_since

    def counted(account: str, folder_id: int, modseq: int, known_up_to: int, **options: Any) -> Any:
        reads.append(modseq)
        return view_changes_since(account, folder_id, modseq, known_up_to, **options)

    monkeypatch.setattr(a.store, "view_changes_since", counted)
    reads.clear()
    a.script(r"""
        C: a1 STORE 1:2 +FLAGS (\Seen)
        S: * 1 FETCH (FLAGS (\Seen))
        S: * 2 FETCH (FLAGS (\Seen))
        S: a1 OK STORE completed
        C: a2 NOOP
        S: a2 OK NOOP completed
    """)
    assert reads == []
    # B changes message 3, then A stores again before it has heard of that: A's own MODSEQ is not
    # the only new one, so the changes are read and B's is reported after A's own response.
    b.script(r"""
        C: b1 STORE 3 +FLAGS.SILENT (\Flagged)
        S: * 1 FETCH (FLAGS (\Seen))
        S: * 2 FETCH (FLAGS (\Seen))
        S: b1 OK STORE completed
    """)
    reads.clear()
    a.script(r"""
        C: a3 STORE 1 -FLAGS (\Seen)
        S: * 1 FETCH (FLAGS ())
        S: * 3 FETCH (FLAGS (\Flagged))
        S: a3 OK STORE completed
        C: a4 NOOP
        S: a4 OK NOOP completed
    """)
    assert len(reads) == 1  # a3's own sync; a4 had nothing new
    # A non-silent STORE that changes nothing shows the message's state, here B's change: the
    # client has seen it, so it is not reported again, and no read is needed for it.
    b.script(r"""
        C: b2 STORE 2 +FLAGS.SILENT (\Answered)
        S: * 1 FETCH (FLAGS ())
        S: b2 OK STORE completed
    """)
    reads.clear()
    a.script(r"""
        C: a5 STORE 2 +FLAGS (\Answered)
        S: * 2 FETCH (FLAGS (\Answered \Seen))
        S: a5 OK STORE completed
        C: a6 NOOP
        S: a6 OK NOOP completed
    """)
    assert reads == []
    # An EXPUNGE of B's takes a MODSEQ too: after A's next own STORE it is read and reported.
    b.script(r"""
        C: b3 STORE 3 +FLAGS.SILENT (\Deleted)
        S: b3 OK STORE completed
        C: b4 EXPUNGE
        S: * 3 EXPUNGE
        S: b4 OK EXPUNGE completed
    """)
    reads.clear()
    a.script(r"""
        C: a7 STORE 1 +FLAGS.SILENT (\Seen)
        S: a7 OK STORE completed
        C: a8 NOOP
        S: * 3 EXPUNGE
        S: a8 OK NOOP completed
    """)
    assert len(reads) == 2  # a7 learns of the EXPUNGE, a8 may send it (and looks once more)
    # A's own EXPUNGE: its tombstones' MODSEQs are known (Store.expunge_tombstones), no read.
    reads.clear()
    a.script(r"""
        C: a9 STORE 2 +FLAGS.SILENT (\Deleted)
        S: a9 OK STORE completed
        C: a10 UID EXPUNGE 2
        S: * 2 EXPUNGE
        S: a10 OK EXPUNGE completed
        C: a11 NOOP
        S: a11 OK NOOP completed
    """)
    assert reads == []
    b.script(r"""
        C: b5 NOOP
        S: * 2 EXPUNGE
        S: * 1 FETCH (FLAGS (\Seen))
        S: b5 OK NOOP completed
    """)



@pytest.mark.parametrize("lazy_from", [1000, 1])
def test_many_flag_changes_are_reported_as_made(pair: tuple[Conversation, Conversation],
                                                monkeypatch: pytest.MonkeyPatch, lazy_from: int) -> None:
    """More flag changes than LAZY_UPDATES_FROM reach the other session as a LazyFlagUpdates,
    made as its output is sent: the same responses as the eager path, CONDSTORE ones included."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", lazy_from)
    monkeypatch.setattr(selected.LazyFlagUpdates, "PART", 2)
    a, b = pair
    a.command("SELECT INBOX (CONDSTORE)")
    b.command("STORE 1:3 +FLAGS.SILENT (\\Flagged)")
    b.command("STORE 2 +FLAGS.SILENT (\\Seen)")
    modseqs = {meta.uid: meta.modseq for meta in a.store.messages("alice", a.folder("INBOX").id)}
    lines = a.command("NOOP")
    assert lines[:-1] == [b"* 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ (%d))" % modseqs[1],
                          b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Seen) MODSEQ (%d))" % modseqs[2],
                          b"* 3 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (%d))" % modseqs[3]]
    assert b"[HIGHESTMODSEQ" not in lines[-1]  # told by the MODSEQs (a CONDSTORE client, not QRESYNC)


def test_lazy_flag_updates_keep_their_numbers_before_a_later_expunge(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """The message numbers of a LazyFlagUpdates are fixed when the changes are read: an EXPUNGE
    reported by a later catch-up, queued behind it, comes after its lines, and a message gone by
    the time its line is made gets none."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    a, b = pair
    a.script("""
        C: a1 IDLE
        S: + idling
    """)
    b.command("STORE 1:3 +FLAGS.SILENT (\\Seen)")
    a.session.wakeup()  # the changes are read; their lines are not made yet
    b.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.command("EXPUNGE")
    a.session.wakeup()  # EXPUNGE 2, queued behind the lazy lines
    a.script(r"""
        S: * 1 FETCH (FLAGS (\Seen))
        S: * 3 FETCH (FLAGS (\Seen))
        S: * 2 EXPUNGE
        C: DONE
        S: a1 OK IDLE terminated
    """)


def test_numbers_of_changed_messages_leave_out_those_not_in_the_view() -> None:
    numbers_of = selected.SelectedMailbox._numbers_if_present
    view: Any = SimpleNamespace(runs=selected.UidRuns.from_sorted([1, 2, 4, 5]))  # what the method reads
    assert numbers_of(view, [(1, 9), (2, 9), (4, 9), (5, 9)]) == [1, 2, 3, 4]  # the whole view
    assert numbers_of(view, [(1, 9), (3, 9), (4, 9)]) == [1, None, 3]  # as long as a stretch of it
    assert numbers_of(view, [(4, 9), (6, 9)]) == [3, None]
