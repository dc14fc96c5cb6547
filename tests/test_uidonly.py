"""UIDONLY conversations (RFC 9586): ENABLE UIDONLY, BAD [UIDREQUIRED] for every use of message
numbers, UIDFETCH instead of FETCH responses (solicited, another session's flag changes, IDLE),
VANISHED instead of EXPUNGE, and UIDONLY together with CONDSTORE/QRESYNC, ESEARCH and PARTIAL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation
from test_qresync import seed

from gximap.imap import commands as cmds
from gximap.session import selected, uidonly

REFUSED = "BAD [UIDREQUIRED] Message sequence numbers are not allowed after ENABLE UIDONLY; use the UID command"


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def enable(conv: Conversation, *also: str) -> None:
    conv.script(f"""
        C: e1 ENABLE UIDONLY {" ".join(also)}
        S: * ENABLED UIDONLY {" ".join(also)}
        S: e1 OK ENABLE completed
    """.replace(" \n", "\n"))


def in_another_session(conv: Conversation, *commands: str) -> None:
    """``commands`` from another session of the same user, with INBOX selected."""
    with conv.second_session() as other:
        other.login()
        other.select()
        for command in commands:
            other.command(command)


def flags_of(conv: Conversation, uid: int, mailbox: str = "INBOX") -> tuple[str, ...]:
    (meta,) = conv.store.get_messages("alice", conv.folder(mailbox).id, [uid])
    return tuple(meta.flags)


# -- enabling ---------------------------------------------------------------------------------


def test_advertised_and_enabled_once(conv: Conversation) -> None:
    assert "UIDONLY" in conv.capabilities()
    conv.script("""
        C: a1 ENABLE uidonly
        S: * ENABLED UIDONLY
        S: a1 OK ENABLE completed
        C: a2 ENABLE UIDONLY
        S: * ENABLED
        S: a2 OK ENABLE completed
    """)
    assert conv.session.uidonly


def test_enable_is_refused_with_a_mailbox_selected(conv: Conversation) -> None:
    """RFC 5161 section 3.1 (and RFC 9051 section 6.3.1): ENABLE only before SELECT."""
    conv.select()
    conv.script("""
        C: a1 ENABLE UIDONLY
        S: a1 BAD [CLIENTBUG] {*}
    """)
    assert not conv.session.uidonly


def test_unauthenticate_ends_it(conv: Conversation) -> None:
    enable(conv)
    conv.command("UNAUTHENTICATE")
    conv.login()
    assert not conv.session.uidonly


# -- message numbers are refused --------------------------------------------------------------


@pytest.mark.parametrize("command", [
    "FETCH 1 (FLAGS)",
    "FETCH 1:* UID",
    "STORE 1 +FLAGS (\\Deleted)",
    "COPY 1 Archive",
    "MOVE 1 Archive",
    "SEARCH ALL",
    "SEARCH RETURN (COUNT) ALL",
    "SORT (ARRIVAL) UTF-8 ALL",
    "THREAD REFERENCES UTF-8 ALL",
    "UID SEARCH 1:2",
    "UID SEARCH OR UID 1 NOT 2",
    "UID SEARCH (SEEN (1))",
    "UID SORT (ARRIVAL) UTF-8 1",
    "UID THREAD ORDEREDSUBJECT UTF-8 NOT 1:*",
])
def test_message_numbers_are_refused(conv: Conversation, command: str) -> None:
    """RFC 9586 section 3: a command with a message number is BAD [UIDREQUIRED], and does nothing."""
    uids = seed(conv, 2)
    enable(conv)
    conv.select()
    conv.script(f"""
        C: a1 {command}
        S: a1 {REFUSED}
    """)
    assert flags_of(conv, uids[0]) == ()
    assert conv.folder("INBOX").messages == 2
    assert conv.folder("Archive").messages == 0


def test_uid_forms_with_uids_and_saved_results_work(conv: Conversation) -> None:
    seed(conv, 3)
    enable(conv)
    conv.select()
    conv.script("""
        C: a1 UID SEARCH UID 1:2 NOT UID 2
        S: * SEARCH 1
        S: a1 OK SEARCH completed
        C: a2 UID SEARCH RETURN (SAVE) UID 2:*
        S: a2 OK SEARCH completed
        C: a3 UID SEARCH $
        S: * SEARCH 2 3
        S: a3 OK SEARCH completed
        C: a4 UID FETCH $ (FLAGS)
        S: * 2 UIDFETCH (FLAGS ())
        S: * 3 UIDFETCH (FLAGS ())
        S: a4 OK FETCH completed
        C: a5 UID SORT (ARRIVAL) UTF-8 UID 2:*
        S: * SORT 2 3
        S: a5 OK SORT completed
        C: a6 UID THREAD ORDEREDSUBJECT UTF-8 ALL
        S: * THREAD {*}
        S: a6 OK THREAD completed
    """)


def test_search_key_walk() -> None:
    numbers = cmds.SearchSequence(cmds.SequenceSet(((1, 2),)))
    by_uid = cmds.SearchSequence(cmds.SequenceSet(((1, 2),)), uid=True)
    assert uidonly.search_uses_numbers(cmds.SearchOr((by_uid, cmds.SearchNot(cmds.SearchAnd((numbers,))))))
    assert not uidonly.search_uses_numbers(cmds.SearchOr((by_uid, cmds.SearchNot(cmds.SearchAll()))))


def test_replace_is_refused_before_its_literal(conv: Conversation) -> None:
    """The refusal comes before the client uploads the message (a synchronising literal)."""
    seed(conv, 1)
    enable(conv)
    conv.select()
    conv.script(f"""
        C: a1 REPLACE 1 INBOX {{5}}
        S: a1 {REFUSED}
        C: a2 NOOP
        S: a2 OK NOOP completed
        C: a3 REPLACE 1 INBOX {{5+}}
        C: hello
        S: a3 {REFUSED}
    """)
    assert conv.folder("INBOX").messages == 1


def test_qresync_message_number_map_is_refused(conv: Conversation) -> None:
    """RFC 7162's seq-match-data names message numbers: BAD [UIDREQUIRED] (as mox answers)."""
    seed(conv, 2)
    enable(conv, "QRESYNC")
    conv.script("""
        C: a1 SELECT INBOX (QRESYNC (1 1 1:2 (1:2 1:2)))
        S: a1 BAD [UIDREQUIRED] {*}
    """)
    assert conv.session.selected is None


def test_expunge_is_allowed(conv: Conversation) -> None:
    seed(conv, 1)
    enable(conv)
    conv.select()
    conv.script("""
        C: a1 EXPUNGE
        S: a1 OK EXPUNGE completed
    """)


# -- UIDFETCH responses -----------------------------------------------------------------------


def test_select_leaves_out_unseen(conv: Conversation) -> None:
    """[UNSEEN n] is a message number; EXISTS still counts the messages."""
    seed(conv, 2)
    enable(conv)
    conv.script("""
        C: a1 SELECT INBOX
        S: * FLAGS ({*})
        S: * OK [PERMANENTFLAGS ({*})] Flags permitted
        S: * 2 EXISTS
        S: * 0 RECENT
        S: * OK [UIDVALIDITY {n}] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: * OK [HIGHESTMODSEQ {n}] Highest modification sequence
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: a1 OK [READ-WRITE] SELECT completed
    """)


def test_uid_fetch_answers_uidfetch(conv: Conversation) -> None:
    """RFC 9586 section 3.3: ``* uid UIDFETCH (...)``; UID FETCH's implicit UID item goes (the
    response leads with it), one asked for stays. Each FETCH path: record columns, the listing
    columns, the general one and a streamed body."""
    conv.add_message(flags=["\\Deleted"])
    seed(conv, 2)
    conv.store.expunge("alice", conv.folder("INBOX").id)   # UIDs 2 and 3 are messages 1 and 2
    enable(conv)
    conv.select()
    conv.script("""
        C: a1 UID FETCH 1:* (FLAGS)
        S: * 2 UIDFETCH (FLAGS ())
        S: * 3 UIDFETCH (FLAGS ())
        S: a1 OK FETCH completed
        C: a2 UID FETCH 3 (UID FLAGS)
        S: * 3 UIDFETCH (UID 3 FLAGS ())
        S: a2 OK FETCH completed
        C: a3 UID FETCH 2:3 (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])
        S: * 2 UIDFETCH (RFC822.SIZE {n} BODY[HEADER.FIELDS (SUBJECT)] {{n}}
        S: Subject: test
        S:
        S: )
        S: * 3 UIDFETCH (RFC822.SIZE {n} BODY[HEADER.FIELDS (SUBJECT)] {{n}}
        S: Subject: test
        S:
        S: )
        S: a3 OK FETCH completed
        C: a4 UID FETCH 3 (INTERNALDATE BODY.PEEK[TEXT])
        S: * 3 UIDFETCH (INTERNALDATE "{*}" BODY[TEXT] {{n}}
        S: {*}
        S: )
        S: a4 OK FETCH completed
    """)


def test_streamed_body_is_a_uidfetch_response(tmp_path: Path) -> None:
    """A body big enough to be streamed from its file (fetch._emit)."""
    with Conversation(tmp_path) as conv:
        conv.login()
        body = b"x" * 70 + b"\r\n"
        uid = conv.add_message(data=b"Subject: big\r\n\r\n" + body * 4000)
        enable(conv)
        conv.select()
        lines = conv.send(b"a1 UID FETCH %d (BODY.PEEK[TEXT])\r\n" % uid)
        assert lines[0].startswith(b"* %d UIDFETCH (BODY[TEXT] {%d}\r\n" % (uid, len(body) * 4000))
        assert lines[-1] == b"a1 OK FETCH completed"


def test_implicit_seen_and_store_answer_uidfetch(conv: Conversation) -> None:
    """The flags an implicit \\Seen changed, and UID STORE's answers, carry no UID item
    (IMAP4rev2 and CONDSTORE would add one to a FETCH response)."""
    seed(conv, 2)
    enable(conv, "CONDSTORE IMAP4rev2")
    conv.select()
    conv.script("""
        C: a1 UID FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])
        S: * 1 UIDFETCH (BODY[HEADER.FIELDS (SUBJECT)] {{n}}
        S: Subject: test
        S:
        S:  FLAGS (\\Seen) MODSEQ ({n:seen}))
        S: a1 OK FETCH completed
        C: a2 UID STORE 2 +FLAGS (\\Flagged)
        S: * 2 UIDFETCH (FLAGS (\\Flagged) MODSEQ ({n}))
        S: a2 OK STORE completed
        C: a3 UID STORE 1:2 -FLAGS.SILENT (\\Flagged)
        S: * 2 UIDFETCH (MODSEQ ({n}))
        S: a3 OK STORE completed
        C: a4 UID STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Answered)
        S: * 1 UIDFETCH (FLAGS (\\Seen) MODSEQ ({=seen}))
        S: a4 OK [MODIFIED 1] {*}
    """)


def test_another_sessions_flag_changes_are_uidfetch(conv: Conversation) -> None:
    uids = seed(conv, 3)
    enable(conv, "IMAP4rev2")
    conv.select()
    in_another_session(conv, f"UID STORE {uids[1]} +FLAGS (\\Flagged $Work)")
    conv.script(f"""
        C: a1 NOOP
        S: * FLAGS ({{*}}$Work)
        S: * OK [PERMANENTFLAGS ({{*}})] Flags permitted
        S: * {uids[1]} UIDFETCH (FLAGS (\\Flagged $Work))
        S: a1 OK NOOP completed
    """)


def test_many_flag_changes_are_uidfetch(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bulk change read a part at a time (LazyFlagUpdates), with CONDSTORE's MODSEQ."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    uids = seed(conv, 3)
    enable(conv, "CONDSTORE")
    conv.select()
    in_another_session(conv, "UID STORE 1:* +FLAGS (\\Seen)")
    conv.script(f"""
        C: a1 NOOP
        S: * {uids[0]} UIDFETCH (FLAGS (\\Seen) MODSEQ ({{n}}))
        S: * {uids[1]} UIDFETCH (FLAGS (\\Seen) MODSEQ ({{n}}))
        S: * {uids[2]} UIDFETCH (FLAGS (\\Seen) MODSEQ ({{n}}))
        S: a1 OK NOOP completed
    """)


def test_idle_pushes_uidfetch_and_vanished(conv: Conversation) -> None:
    uids = seed(conv, 3)
    enable(conv)
    conv.select()
    conv.script("""
        C: a1 IDLE
        S: + idling
    """)
    in_another_session(conv, f"UID STORE {uids[0]} +FLAGS (\\Answered)",
                       f"UID STORE {uids[2]} +FLAGS (\\Deleted)",
                       "UID EXPUNGE 1:*")
    conv.script(f"""
        W:
        S: * VANISHED {uids[2]}
        S: * {uids[0]} UIDFETCH (FLAGS (\\Answered))
        C: DONE
        S: a1 OK IDLE terminated
    """)


# -- VANISHED instead of EXPUNGE --------------------------------------------------------------


def test_expunges_are_vanished(conv: Conversation) -> None:
    """RFC 9586 section 3: no message numbers, so VANISHED (RFC 7162 section 3.2.10) reports
    expunges, without QRESYNC: EXPUNGE, UID EXPUNGE, UID MOVE, UID REPLACE and another session's."""
    seed(conv, 6)
    enable(conv)
    conv.select()
    conv.script("""
        C: a1 UID STORE 1,2,4 +FLAGS.SILENT (\\Deleted)
        S: a1 OK STORE completed
        C: a2 EXPUNGE
        S: * VANISHED 1:2,4
        S: a2 OK EXPUNGE completed
        C: a3 UID STORE 3 +FLAGS.SILENT (\\Deleted)
        S: a3 OK STORE completed
        C: a4 UID EXPUNGE 3
        S: * VANISHED 3
        S: a4 OK EXPUNGE completed
        C: a5 UID MOVE 5 Archive
        S: * OK [COPYUID {n} 5 1] Moved
        S: * VANISHED 5
        S: a5 OK MOVE completed
        C: a6 UID REPLACE 6 Drafts {10+}
        C: Subject: x
        S: * OK [APPENDUID {n} 1] Replacement message stored
        S: * VANISHED 6
        S: a6 OK REPLACE completed
    """)
    uid = conv.add_message()
    conv.script("""
        C: a7 NOOP
        S: * 1 EXISTS
        S: * 1 RECENT
        S: a7 OK NOOP completed
    """)
    in_another_session(conv, f"UID STORE {uid} +FLAGS (\\Deleted)", "EXPUNGE")
    conv.script(f"""
        C: a8 NOOP
        S: * VANISHED {uid}
        S: a8 OK NOOP completed
    """)


# -- with CONDSTORE / QRESYNC, ESEARCH, PARTIAL ---------------------------------------------


def test_changedsince_and_qresync_select(conv: Conversation) -> None:
    uids = seed(conv, 3)
    enable(conv, "QRESYNC")
    start = conv.folder("INBOX").highestmodseq
    uidvalidity = conv.folder("INBOX").uidvalidity
    conv.select()
    conv.command(f"UID STORE {uids[0]} +FLAGS (\\Flagged)")
    conv.command(f"UID STORE {uids[1]} +FLAGS (\\Deleted)")
    conv.command("EXPUNGE")
    conv.script(f"""
        C: a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {start} VANISHED)
        S: * VANISHED (EARLIER) {uids[1]}
        S: * {uids[0]} UIDFETCH (MODSEQ ({{n}}) FLAGS (\\Flagged))
        S: a1 OK FETCH completed
        C: a2 SELECT INBOX (QRESYNC ({uidvalidity} {start} 1:{uids[-1]}))
        S: * OK [CLOSED] {{*}}
        S: * FLAGS ({{*}})
        S: * OK [PERMANENTFLAGS ({{*}})] Flags permitted
        S: * 2 EXISTS
        S: * 0 RECENT
        S: * OK [UIDVALIDITY {uidvalidity}] UIDs valid
        S: * OK [UIDNEXT 4] Predicted next UID
        S: * OK [HIGHESTMODSEQ {{n}}] Highest modification sequence
        S: * OK [MAILBOXID ({{*}})] Mailbox ID
        S: * VANISHED (EARLIER) {uids[1]}
        S: * {uids[0]} UIDFETCH (FLAGS (\\Flagged) MODSEQ ({{n}}))
        S: a2 OK [READ-WRITE] SELECT completed
    """)


def test_esearch_and_partial(conv: Conversation) -> None:
    seed(conv, 5)
    enable(conv)
    conv.select()
    conv.script("""
        C: a1 UID SEARCH RETURN (MIN MAX COUNT ALL) UID 2:*
        S: * ESEARCH (TAG "a1") UID MIN 2 MAX 5 COUNT 4 ALL 2:5
        S: a1 OK SEARCH completed
        C: a2 UID SEARCH RETURN (PARTIAL -1:-2) ALL
        S: * ESEARCH (TAG "a2") UID PARTIAL (-1:-2 4:5)
        S: a2 OK SEARCH completed
        C: a3 UID SORT RETURN (PARTIAL 1:2) (ARRIVAL) UTF-8 NOT UID 1
        S: * ESEARCH (TAG "a3") UID PARTIAL (1:2 2:3)
        S: a3 OK SORT completed
        C: a4 UID FETCH 1:* (FLAGS) (PARTIAL -1:-2)
        S: * 4 UIDFETCH (FLAGS ())
        S: * 5 UIDFETCH (FLAGS ())
        S: a4 OK FETCH completed
    """)
