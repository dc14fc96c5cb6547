"""QRESYNC conversations (RFC 7162 section 3.2): ENABLE QRESYNC, SELECT/EXAMINE (QRESYNC ...),
VANISHED (EARLIER) from midb's expunge tombstones, UID FETCH ... (CHANGEDSINCE n VANISHED), VANISHED
instead of EXPUNGE, [CLOSED], and the HIGHESTMODSEQ a resynchronising client may trust.

The RFC's examples are replayed with the numbers of a fresh midb folder, their structure kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation

from gximap.session import condstore, selected
from midb.errors import StoreBusy
from midb.store import Store


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def seed(conv: Conversation, count: int, mailbox: str = "INBOX") -> list[int]:
    """``count`` messages, already seen by another session (no \\Recent)."""
    uids = [conv.add_message(mailbox) for _ in range(count)]
    conv.store.claim_recent_range("alice", conv.folder(mailbox).id)
    return uids


def highest(conv: Conversation, mailbox: str = "INBOX") -> int:
    return conv.folder(mailbox).highestmodseq


def uidvalidity(conv: Conversation, mailbox: str = "INBOX") -> int:
    return conv.folder(mailbox).uidvalidity


def modseq_of(conv: Conversation, uid: int) -> int:
    return conv.store.get_messages("alice", conv.folder("INBOX").id, [uid])[0].modseq


def flag(conv: Conversation, uids: list[int], *flags: str) -> None:
    """Another session (here: the store directly) adds flags."""
    conv.store.store_flags("alice", conv.folder("INBOX").id, uids, "add", flags)


def expunge(conv: Conversation, uids: list[int]) -> None:
    """Another session deletes and expunges the messages."""
    flag(conv, uids, "\\Deleted")
    assert conv.store.expunge("alice", conv.folder("INBOX").id, uids) == sorted(uids)


def select_lines(conv: Conversation, exists: int, uidnext: int, *, first_unseen: int | None = 1) -> str:
    """The usual SELECT responses of a CONDSTORE-aware IMAP4rev1 session (script lines)."""
    unseen = f"S: * OK [UNSEEN {first_unseen}] First unseen\n" if first_unseen else ""
    return (f"S: * FLAGS ({{*}})\nS: * OK [PERMANENTFLAGS ({{*}})] Flags permitted\nS: * {exists} EXISTS\n"
            f"S: * 0 RECENT\n{unseen}S: * OK [UIDVALIDITY {uidvalidity(conv)}] UIDs valid\n"
            f"S: * OK [UIDNEXT {uidnext}] Predicted next UID\n"
            f"S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence\n"
            "S: * OK [MAILBOXID ({*})] Mailbox ID\n")


# -- enabling -----------------------------------------------------------------------------------


def test_enable_qresync_implies_condstore(conv: Conversation) -> None:
    conv.script("""
        C: A01 ENABLE QRESYNC
        S: * ENABLED QRESYNC
        S: A01 OK ENABLE completed
        C: A02 ENABLE CONDSTORE QRESYNC
        S: * ENABLED
        S: A02 OK ENABLE completed
    """)
    assert conv.session.qresync_enabled and condstore.enabled(conv.session)


def test_enable_lists_the_condstore_its_qresync_enabled(conv: Conversation) -> None:
    """ENABLE QRESYNC CONDSTORE enables both, and says so: CONDSTORE was not on before this
    command (a client reading the ENABLED list must not conclude it is unavailable)."""
    conv.script("""
        C: A01 ENABLE QRESYNC CONDSTORE qresync
        S: * ENABLED QRESYNC CONDSTORE
        S: A01 OK ENABLE completed
    """)


def test_qresync_parameters_need_enable(conv: Conversation) -> None:
    seed(conv, 2)
    conv.select()
    conv.script(f"""
        C: a1 SELECT INBOX (QRESYNC ({uidvalidity(conv)} 1))
        S: a1 BAD [CLIENTBUG] QRESYNC must be enabled first
        C: a2 UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)
        S: a2 BAD [CLIENTBUG] QRESYNC must be enabled first
    """)
    assert conv.session.selected is not None  # a BAD SELECT changes nothing


def test_vanished_modifier_syntax_errors(conv: Conversation) -> None:
    seed(conv, 1)
    conv.command("ENABLE QRESYNC")
    conv.select()
    conv.script("""
        C: a1 FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)
        S: a1 BAD {*}
        C: a2 UID FETCH 1:* FLAGS (VANISHED)
        S: a2 BAD {*}
        C: a3 SELECT INBOX (QRESYNC (0 1))
        S: a3 BAD {*}
        C: a4 SELECT INBOX (QRESYNC (1 1 1:*))
        S: a4 BAD {*}
        C: a5 SELECT INBOX (QRESYNC (1 1 1:5 (1:3 1:2)))
        S: a5 BAD [CLIENTBUG] QRESYNC message sequence match data does not pair up
    """)
    assert conv.session.selected is not None


# -- SELECT (QRESYNC ...) -----------------------------------------------------------------------


def test_select_qresync_rfc_example(conv: Conversation) -> None:
    """RFC 7162 section 3.2.5.1 example (A02 SELECT INBOX (QRESYNC (67890007 20050715194045000
    41,43:211,214:541)))): CLOSED for the mailbox left, the usual responses with HIGHESTMODSEQ,
    VANISHED (EARLIER) for the known UIDs expunged since (2 is not known: left out), then FETCH
    (UID FLAGS MODSEQ) for the known messages changed since."""
    uids = seed(conv, 10)
    conv.command("ENABLE QRESYNC")
    conv.select("Drafts")
    mark = highest(conv)
    expunge(conv, [uids[1], uids[3], uids[4], uids[8]])  # 2, 4, 5, 9
    flag(conv, [uids[2]], "\\Seen", "\\Answered")
    flag(conv, [uids[6]], "\\Draft", "$MDNSent")
    flag(conv, [uids[9]], "\\Seen", "$Forwarded")
    conv.script(f"""
        C: A02 SELECT INBOX (QRESYNC ({uidvalidity(conv)} {mark} 1,3:9,10))
        S: * OK [CLOSED] Previous mailbox closed
        {select_lines(conv, 6, 11, first_unseen=1)}
        S: * VANISHED (EARLIER) 4:5,9
        S: * 2 FETCH (UID 3 FLAGS (\\Answered \\Seen) MODSEQ ({modseq_of(conv, 3)}))
        S: * 4 FETCH (UID 7 FLAGS (\\Draft $MDNSent) MODSEQ ({modseq_of(conv, 7)}))
        S: * 6 FETCH (UID 10 FLAGS (\\Seen $Forwarded) MODSEQ ({modseq_of(conv, 10)}))
        S: A02 OK [READ-WRITE] SELECT completed
    """)


def test_known_uids_restrict_vanished_and_fetch(conv: Conversation) -> None:
    uids = seed(conv, 6)
    conv.command("ENABLE QRESYNC")
    mark = highest(conv)
    expunge(conv, [uids[0], uids[4]])
    flag(conv, [uids[1], uids[5]], "\\Flagged")
    conv.script(f"""
        C: a1 EXAMINE INBOX (QRESYNC ({uidvalidity(conv)} {mark} 2:5))
        S: * FLAGS ({{*}})
        S: * OK [PERMANENTFLAGS ()] No permanent flags permitted
        S: * 4 EXISTS
        S: * 0 RECENT
        S: * OK [UNSEEN 1] First unseen
        S: * OK [UIDVALIDITY {uidvalidity(conv)}] UIDs valid
        S: * OK [UIDNEXT 7] Predicted next UID
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * OK [MAILBOXID ({{*}})] Mailbox ID
        S: * VANISHED (EARLIER) 5
        S: * 1 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ ({modseq_of(conv, 2)}))
        S: a1 OK [READ-ONLY] EXAMINE completed
    """)


def test_uidvalidity_mismatch_or_current_modseq_reports_nothing(conv: Conversation) -> None:
    uids = seed(conv, 3)
    conv.command("ENABLE QRESYNC")
    mark = highest(conv)
    expunge(conv, [uids[0]])
    flag(conv, [uids[1]], "\\Seen")
    conv.script(f"""
        C: a1 SELECT INBOX (QRESYNC ({uidvalidity(conv) ^ 1} {mark}))
        {select_lines(conv, 2, 4, first_unseen=2)}
        S: a1 OK [READ-WRITE] SELECT completed
        C: a2 SELECT INBOX (QRESYNC ({uidvalidity(conv)} {highest(conv)}))
        S: * OK [CLOSED] Previous mailbox closed
        {select_lines(conv, 2, 4, first_unseen=2)}
        S: a2 OK [READ-WRITE] SELECT completed
    """)


def test_seq_match_data_narrows_vanished(conv: Conversation) -> None:
    """RFC 7162 section 3.2.5.2: with a modseq older than what the client knows of, the client's
    message-number map shows which expunges it already knows. Messages 1..10; 3 was expunged
    while the client watched, 7 later. The client's map 1->1, 3->4, 9->10 still matches up to
    UID 4 (the server has 8 messages now), so only 7 is reported."""
    uids = seed(conv, 10)
    conv.command("ENABLE QRESYNC")
    expunge(conv, [uids[2]])
    expunge(conv, [uids[6]])
    flag(conv, [uids[3]], "$Label")
    conv.script(f"""
        C: a1 SELECT INBOX (QRESYNC ({uidvalidity(conv)} 1 (1,3,9 1,4,10)))
        {select_lines(conv, 8, 11)}
        S: * VANISHED (EARLIER) 7
        S: * 1 FETCH (UID 1 FLAGS () MODSEQ ({{n}}))
        S: * 2 FETCH (UID 2 FLAGS () MODSEQ ({{n}}))
        S: * 3 FETCH (UID 4 FLAGS ($Label) MODSEQ ({modseq_of(conv, 4)}))
        S: * 4 FETCH (UID 5 FLAGS () MODSEQ ({{n}}))
        S: * 5 FETCH (UID 6 FLAGS () MODSEQ ({{n}}))
        S: * 6 FETCH (UID 8 FLAGS () MODSEQ ({{n}}))
        S: * 7 FETCH (UID 9 FLAGS () MODSEQ ({{n}}))
        S: * 8 FETCH (UID 10 FLAGS () MODSEQ ({{n}}))
        S: a1 OK [READ-WRITE] SELECT completed
    """)
    # Ranges pair up member by member; a map that matches nowhere narrows nothing.
    conv.script(f"""
        C: a3 SELECT INBOX (QRESYNC ({uidvalidity(conv)} 1 1:10 (1:2,3 1:2,4)))
        S: * OK [CLOSED] Previous mailbox closed
        {select_lines(conv, 8, 11)}
        S: * VANISHED (EARLIER) 7
        S: * 1 FETCH (UID 1 {{*}}
        S: * 2 FETCH (UID 2 {{*}}
        S: * 3 FETCH (UID 4 {{*}}
        S: * 4 FETCH (UID 5 {{*}}
        S: * 5 FETCH (UID 6 {{*}}
        S: * 6 FETCH (UID 8 {{*}}
        S: * 7 FETCH (UID 9 {{*}}
        S: * 8 FETCH (UID 10 {{*}}
        S: a3 OK [READ-WRITE] SELECT completed
        C: a4 SELECT INBOX (QRESYNC ({uidvalidity(conv)} 1 1:10 (9 1)))
        S: * OK [CLOSED] Previous mailbox closed
        {select_lines(conv, 8, 11)}
        S: * VANISHED (EARLIER) 3,7
        S: * 1 FETCH (UID 1 {{*}}
        S: * 2 FETCH (UID 2 {{*}}
        S: * 3 FETCH (UID 4 {{*}}
        S: * 4 FETCH (UID 5 {{*}}
        S: * 5 FETCH (UID 6 {{*}}
        S: * 6 FETCH (UID 8 {{*}}
        S: * 7 FETCH (UID 9 {{*}}
        S: * 8 FETCH (UID 10 {{*}}
        S: a4 OK [READ-WRITE] SELECT completed
    """)


def test_seq_match_floor_bisects_long_runs(conv: Conversation) -> None:
    """One run of 5000 pairs: the last matching pair is found, not just the first."""
    uids = seed(conv, 40)
    conv.command("ENABLE QRESYNC")
    expunge(conv, [uids[29]])  # UID 30: positions 30.. now hold UIDs 31..
    conv.select()
    from gximap.imap.commands import SequenceSet

    view = conv.session.selected
    floor = condstore._seq_match_floor(view, SequenceSet(((1, 5000),)), SequenceSet(((1, 5000),)))
    assert floor == 29
    assert condstore._seq_match_floor(view, SequenceSet(((2, 3),)), SequenceSet(((2, 3),))) == 3
    assert condstore._seq_match_floor(view, SequenceSet(((35, 36),)), SequenceSet(((36, 37),))) == 37
    assert condstore._seq_match_floor(view, SequenceSet(((50, 60),)), SequenceSet(((50, 60),))) == 0


def test_vanished_earlier_leaves_out_expunges_the_view_still_shows(conv: Conversation) -> None:
    """An expunge not yet announced to this session is reported by the regular update as
    VANISHED; it must not also appear in VANISHED (EARLIER), or the client counts it out twice."""
    uids = seed(conv, 4)
    conv.command("ENABLE QRESYNC")
    conv.select()
    mark = highest(conv)
    expunge(conv, [uids[1]])
    conv.script(f"""
        C: a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark} VANISHED)
        S: * VANISHED 2
        S: a1 OK [HIGHESTMODSEQ {highest(conv)}] FETCH completed
        C: a2 NOOP
        S: a2 OK NOOP completed
        C: a3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark} VANISHED)
        S: * VANISHED (EARLIER) 2
        S: a3 OK FETCH completed
    """)


# -- UID FETCH ... (CHANGEDSINCE n VANISHED) -----------------------------------------------------


def test_uid_fetch_vanished_rfc_example(conv: Conversation) -> None:
    """RFC 7162 section 3.2.6 example (A04 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345
    VANISHED)): VANISHED (EARLIER) for the UIDs of the set expunged since, first."""
    uids = seed(conv, 12)
    conv.command("ENABLE QRESYNC")
    conv.select()
    mark = highest(conv)
    flag(conv, [uids[0], uids[3]], "\\Seen")  # outside the set, and inside it
    flag(conv, [uids[index - 1] for index in (1, 2, 5, 7, 8, 11)], "\\Deleted")
    conv.command("NOOP")
    conv.command("UID EXPUNGE 1:2,5,7:8,11")
    conv.script(f"""
        C: A04 UID FETCH 3:10 (FLAGS) (CHANGEDSINCE {mark} VANISHED)
        S: * VANISHED (EARLIER) 5,7:8
        S: * 2 FETCH (UID 4 MODSEQ ({modseq_of(conv, 4)}) FLAGS (\\Seen))
        S: A04 OK FETCH completed
        C: A05 UID FETCH 3:* (FLAGS) (CHANGEDSINCE {mark} VANISHED)
        S: * VANISHED (EARLIER) 5,7:8,11
        S: * 2 FETCH (UID 4 MODSEQ ({modseq_of(conv, 4)}) FLAGS (\\Seen))
        S: A05 OK FETCH completed
        C: A06 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest(conv)} VANISHED)
        S: A06 OK FETCH completed
    """)


def test_uid_fetch_vanished_star_reaches_past_the_last_message(tmp_path: Path) -> None:
    """``UID FETCH n:* ... (CHANGEDSINCE m VANISHED)`` in a new session: the UIDs expunged above
    the last message it sees are in the set too (a client resynchronising after "delete all"
    elsewhere), and in a mailbox left empty ``1:*`` is every UID, not 1."""
    with Conversation(tmp_path) as conv:
        conv.login()
        uids = seed(conv, 4)
        conv.select()
        mark = highest(conv)
        fresh = conv.second_session()
        fresh.login()
        fresh.command("ENABLE QRESYNC")
        for expunged, vanished in ((uids[2:], f"{uids[2]}:{uids[3]}"), (uids[:2], f"{uids[0]}:{uids[3]}")):
            flag(conv, expunged, "\\Deleted")
            conv.command("EXPUNGE")
            fresh.select()   # a view that never held the expunged messages
            fresh.script(f"""
                C: A1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark} VANISHED)
                S: * VANISHED (EARLIER) {vanished}
                S: A1 OK FETCH completed
            """)


# -- VANISHED instead of EXPUNGE, HIGHESTMODSEQ after changes ------------------------------------


def test_expunge_sends_vanished_and_highestmodseq(conv: Conversation) -> None:
    """RFC 7162 sections 3.2.7 and 3.2.9: VANISHED for the expunged UIDs and the new
    HIGHESTMODSEQ in the tagged OK."""
    uids = seed(conv, 6)
    conv.command("ENABLE QRESYNC")
    conv.select()
    conv.command("STORE 2,4:5 +FLAGS.SILENT (\\Deleted)")
    conv.script(f"""
        C: A202 EXPUNGE
        S: * VANISHED 2,4:5
        S: A202 OK [HIGHESTMODSEQ {highest(conv) + 3}] EXPUNGE completed
        C: A203 EXPUNGE
        S: A203 OK EXPUNGE completed
        C: A204 UID STORE {uids[5]} +FLAGS.SILENT (\\Deleted)
        S: * 3 FETCH (UID {uids[5]} MODSEQ ({highest(conv) + 4}))
        S: A204 OK STORE completed
        C: A205 UID EXPUNGE 1:5
        S: A205 OK EXPUNGE completed
        C: A206 UID EXPUNGE 6
        S: * VANISHED 6
        S: A206 OK [HIGHESTMODSEQ {highest(conv) + 5}] EXPUNGE completed
    """)


def test_move_sends_vanished_and_highestmodseq(conv: Conversation) -> None:
    seed(conv, 3)
    conv.command("ENABLE QRESYNC")
    conv.select()
    conv.script(f"""
        C: a1 UID MOVE 1:2 Trash
        S: * OK [COPYUID {uidvalidity(conv, "Trash")} 1:2 1:2] Moved
        S: * VANISHED 1:2
        S: a1 OK [HIGHESTMODSEQ {highest(conv) + 2}] MOVE completed
    """)


def test_other_sessions_changes_arrive_with_uid_modseq_and_vanished(conv: Conversation) -> None:
    uids = seed(conv, 3)
    conv.command("ENABLE QRESYNC")
    conv.select()
    flag(conv, [uids[0]], "\\Flagged")
    expunge(conv, [uids[1]])
    conv.script(f"""
        C: a1 NOOP
        S: * VANISHED 2
        S: * 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ ({modseq_of(conv, 1)}))
        S: a1 OK [HIGHESTMODSEQ {highest(conv)}] NOOP completed
        C: a2 NOOP
        S: a2 OK NOOP completed
    """)


def test_delayed_expunge_lowers_highestmodseq(conv: Conversation) -> None:
    """FETCH/STORE/SEARCH may not announce another session's expunge. When such a command gives
    a MODSEQ above the last fully reported state, the client is told the lower HIGHESTMODSEQ,
    so a resynchronisation from it cannot skip the expunge; the next NOOP reports both."""
    uids = seed(conv, 3)
    conv.command("ENABLE QRESYNC")
    conv.select()
    safe = highest(conv)
    expunge(conv, [uids[0]])
    conv.script(f"""
        C: a1 STORE 2 +FLAGS ($Keyword)
        S: * FLAGS ({{*}})
        S: * OK [PERMANENTFLAGS ({{*}})] Flags permitted
        S: * 2 FETCH (UID 2 FLAGS ($Keyword) MODSEQ ({highest(conv) + 1}))
        S: a1 OK [HIGHESTMODSEQ {safe}] STORE completed
        C: a2 FETCH 2:3 (MODSEQ)
        S: * 2 FETCH (MODSEQ ({highest(conv) + 1}))
        S: * 3 FETCH (MODSEQ ({modseq_of(conv, 3)}))
        S: a2 OK [HIGHESTMODSEQ {safe}] FETCH completed
        C: a3 NOOP
        S: * VANISHED 1
        S: a3 OK [HIGHESTMODSEQ {highest(conv) + 1}] NOOP completed
    """)


def test_idle_pushes_vanished_and_highestmodseq(conv: Conversation) -> None:
    uids = seed(conv, 2)
    conv.command("ENABLE QRESYNC")
    conv.select()
    conv.script("""
        C: a1 IDLE
        S: + idling
    """)
    expunge(conv, [uids[1]])
    conv.script(f"""
        W:
        S: * VANISHED 2
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        C: DONE
        S: a1 OK IDLE terminated
    """)


def test_new_messages_announce_highestmodseq(conv: Conversation) -> None:
    seed(conv, 1)
    conv.command("ENABLE QRESYNC")
    conv.select()
    conv.add_message()
    conv.script(f"""
        C: a1 NOOP
        S: * 2 EXISTS
        S: * 1 RECENT
        S: a1 OK [HIGHESTMODSEQ {highest(conv)}] NOOP completed
    """)


def test_closed_only_when_a_mailbox_was_selected(conv: Conversation) -> None:
    seed(conv, 1)
    conv.command("ENABLE QRESYNC")
    lines = conv.select()
    assert not any(b"[CLOSED]" in line for line in lines)
    lines = conv.select("Drafts")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    conv.command("UNSELECT")
    lines = conv.select()
    assert not any(b"[CLOSED]" in line for line in lines)
    conv.script("""
        C: a1 SELECT Nowhere
        S: * OK [CLOSED] Previous mailbox closed
        S: a1 NO [NONEXISTENT] Mailbox does not exist
    """)


def test_resync_after_reconnect_with_another_session(conv: Conversation) -> None:
    """Session A caches the mailbox and disconnects; session B changes flags and expunges; A
    reconnects and resynchronises: exactly the expunged known UIDs and the changed messages."""
    uids = seed(conv, 8)
    conv.command("ENABLE QRESYNC")
    conv.select()
    cached_modseq, cached_validity = highest(conv), uidvalidity(conv)
    conv.command("LOGOUT")

    other = Conversation(context=conv.ctx, users=())
    try:
        other.login()
        other.select()
        other.command("STORE 2 +FLAGS (\\Seen)")
        other.command("STORE 3,6 +FLAGS (\\Deleted)")
        other.command("EXPUNGE")
        other.command("STORE 5 +FLAGS ($Important)")  # UID 7 after the expunges
        other.add_message()  # UID 9, new
        other.command("LOGOUT")
    finally:
        other.close()

    again = Conversation(context=conv.ctx, users=())
    try:
        again.login()
        again.command("ENABLE QRESYNC")
        again.script(f"""
            C: r1 SELECT INBOX (QRESYNC ({cached_validity} {cached_modseq} 1:8))
            S: * FLAGS ({{*}})
            S: * OK [PERMANENTFLAGS ({{*}})] Flags permitted
            S: * 7 EXISTS
            S: * 1 RECENT
            S: * OK [UNSEEN 1] First unseen
            S: * OK [UIDVALIDITY {cached_validity}] UIDs valid
            S: * OK [UIDNEXT 10] Predicted next UID
            S: * OK [HIGHESTMODSEQ {highest(again)}] Highest modification sequence
            S: * OK [MAILBOXID ({{*}})] Mailbox ID
            S: * VANISHED (EARLIER) 3,6
            S: * 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ ({modseq_of(again, 2)}))
            S: * 5 FETCH (UID 7 FLAGS ($Important) MODSEQ ({modseq_of(again, 7)}))
            S: r1 OK [READ-WRITE] SELECT completed
        """)
        assert uids == list(range(1, 9))
    finally:
        again.close()


class _ChangeDuringSync:
    """A store whose highestmodseq lets another writer commit a flag change first: the change
    lands between the two reads of a sync, the race a sync must not lose."""

    def __init__(self, store: Store, account: str, folder_id: int, uid: int) -> None:
        self._store = store
        self._change = (account, folder_id, uid)
        self.armed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def highestmodseq(self, account_id: int, folder_id: int) -> object:
        if self.armed:
            self.armed = False
            owner, folder, uid = self._change
            self._store.store_flags(owner, folder, [uid], "add", ["$Raced"])
        return self._store.highestmodseq(account_id, folder_id)


def test_sync_never_skips_a_change_committed_during_it(conv: Conversation) -> None:
    uids = seed(conv, 2)
    conv.command("ENABLE QRESYNC")
    conv.select()
    view = conv.session.selected
    assert view is not None
    racing = _ChangeDuringSync(conv.store, "alice", view.folder_id, uids[1])
    view.store = racing
    flag(conv, [uids[0]], "\\Seen")
    racing.armed = True
    conv.script(f"""
        C: a1 NOOP
        S: * FLAGS ({{*}})
        S: * OK [PERMANENTFLAGS ({{*}})] Flags permitted
        S: * 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ ({modseq_of(conv, 1)}))
        S: * 2 FETCH (UID 2 FLAGS ($Raced) MODSEQ ({{n}}))
        S: a1 OK NOOP completed
    """)


def test_modseq_zero_resyncs_everything(conv: Conversation) -> None:
    """A client starting from nothing sends mod-sequence 0 (outside RFC 7162's grammar, taken as
    Dovecot takes it): every expunge and every message is reported."""
    uids = seed(conv, 3)
    conv.command("ENABLE QRESYNC")
    expunge(conv, [uids[0]])
    conv.script(f"""
        C: a1 SELECT INBOX (QRESYNC ({uidvalidity(conv)} 0))
        {select_lines(conv, 2, 4)}
        S: * VANISHED (EARLIER) 1
        S: * 1 FETCH (UID 2 FLAGS () MODSEQ ({modseq_of(conv, 2)}))
        S: * 2 FETCH (UID 3 FLAGS () MODSEQ ({modseq_of(conv, 3)}))
        S: a1 OK [READ-WRITE] SELECT completed
        C: a2 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 0 VANISHED)
        S: * VANISHED (EARLIER) 1
        S: * 1 FETCH (UID 2 MODSEQ ({modseq_of(conv, 2)}) FLAGS ())
        S: * 2 FETCH (UID 3 MODSEQ ({modseq_of(conv, 3)}) FLAGS ())
        S: a2 OK FETCH completed
    """)


def test_partial_with_changedsince_and_vanished(conv: Conversation) -> None:
    """RFC 9394 sections 3.3 and 3.4 with RFC 7162: PARTIAL takes the messages at its positions
    among those the set names, and CHANGEDSINCE answers the changed ones of them, in either order
    of the modifiers (the flag changes of the newest n messages, not a page of the changes);
    VANISHED (EARLIER) still reports the set's expunged UIDs (no FETCH results). The flags of
    changed messages outside the page are still reported by the update that ends the command."""
    uids = seed(conv, 8)
    conv.command("ENABLE QRESYNC")
    conv.select()
    mark = highest(conv)
    expunge(conv, [uids[1]])
    conv.command("NOOP")  # the expunge is known
    # Messages now: 1:uids[0] 2:uids[2] 3:uids[3] 4:uids[4] 5:uids[5] 6:uids[6] 7:uids[7].
    flag(conv, [uids[2], uids[4], uids[6], uids[7]], "$Page")
    conv.command("NOOP")
    conv.script(f"""
        C: p1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark} VANISHED PARTIAL 1:3)
        S: * VANISHED (EARLIER) {uids[1]}
        S: * 2 FETCH (UID {uids[2]} MODSEQ ({modseq_of(conv, uids[2])}) FLAGS ($Page))
        S: p1 OK FETCH completed
        C: p2 UID FETCH 1:* (FLAGS) (PARTIAL -1:-3 CHANGEDSINCE {mark})
        S: * 6 FETCH (UID {uids[6]} MODSEQ ({modseq_of(conv, uids[6])}) FLAGS ($Page))
        S: * 7 FETCH (UID {uids[7]} MODSEQ ({modseq_of(conv, uids[7])}) FLAGS ($Page))
        S: p2 OK FETCH completed
        C: p3 FETCH 1:6 (FLAGS) (CHANGEDSINCE {mark} PARTIAL -1:-2)
        S: * 6 FETCH (MODSEQ ({modseq_of(conv, uids[6])}) FLAGS ($Page))
        S: p3 OK FETCH completed
        C: p4 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark} PARTIAL 5:5)
        S: p4 OK FETCH completed
        C: p5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest(conv)} PARTIAL 1:10)
        S: p5 OK FETCH completed
    """)
    # Not only FLAGS: the responses built message by message take the same messages.
    lines = conv.send(f"p5b UID FETCH 1:* (FLAGS RFC822.SIZE) (PARTIAL -1:-3 CHANGEDSINCE {mark})\r\n".encode())
    assert lines[-1] == b"p5b OK FETCH completed"
    assert [line.split(b" ")[1] for line in lines[:-1]] == [b"6", b"7"], lines
    # Another session changes three messages; a page of two holding one of them shows it, and
    # the update that ends the command still tells of the other two.
    flag(conv, [uids[0], uids[3], uids[5]], "$Later")
    since = modseq_of(conv, uids[7])
    lines = conv.send(f"p6 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} PARTIAL 2:3)\r\n".encode())
    assert lines[-1] == b"p6 OK FETCH completed"
    shown = sorted(line for line in lines[:-1] if b"FETCH" in line)
    assert len(shown) == 3, lines
    assert [line.split(b" ")[1] for line in shown] == [b"1", b"3", b"5"]
    assert sum(f"UID {uids[3]} ".encode() in line for line in shown) == 1


def test_close_that_expunges_sends_highestmodseq(conv: Conversation) -> None:
    """RFC 7162 section 3.2.8 (RFC 5162 section 3.4): a CLOSE that removed messages gives the
    updated HIGHESTMODSEQ in its tagged OK (no VANISHED); one that removed none, none."""
    seed(conv, 4)
    conv.command("ENABLE QRESYNC")
    conv.select()
    conv.command("STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    conv.script(f"""
        C: a1 CLOSE
        S: a1 OK [HIGHESTMODSEQ {highest(conv) + 2}] CLOSE completed
    """)
    assert conv.folder("INBOX").messages == 2
    conv.select()
    conv.script("""
        C: a2 CLOSE
        S: a2 OK CLOSE completed
    """)


def _own_delete_then_others_flag(conv: Conversation, messages: int, flag_from: int) -> tuple[list[int], int]:
    """``messages`` seeded, QRESYNC enabled, INBOX selected, the client's own STORE of \\Deleted on
    message 1, then another session's \\Flagged on the UIDs from index ``flag_from`` on: the UIDs,
    and the HIGHESTMODSEQ the client's STORE left (the last change it knows of)."""
    uids = seed(conv, messages)
    conv.command("ENABLE QRESYNC")
    conv.select()
    conv.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    safe = highest(conv)
    flag(conv, uids[flag_from:], "\\Flagged")
    return uids, safe


def test_close_highestmodseq_skips_no_change_the_client_was_not_told(conv: Conversation) -> None:
    """A change by another session that the CLOSE's client never saw (CLOSE sends no untagged
    responses) is not jumped over: the tagged OK gives the HIGHESTMODSEQ the client was last
    told everything up to, and a QRESYNC from it reports the change."""
    _uids, safe = _own_delete_then_others_flag(conv, 3, 2)
    conv.script(f"""
        C: a1 CLOSE
        S: a1 OK [HIGHESTMODSEQ {safe}] CLOSE completed
    """)
    conv.script(f"""
        C: a2 SELECT INBOX (QRESYNC ({uidvalidity(conv)} {safe}))
        {select_lines(conv, 2, 4)}
        S: * VANISHED (EARLIER) 1
        S: * 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ ({modseq_of(conv, 3)}))
        S: a2 OK [READ-WRITE] SELECT completed
    """)


def test_close_without_qresync_sends_no_highestmodseq(conv: Conversation) -> None:
    seed(conv, 2)
    conv.select()
    conv.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    conv.script("""
        C: a1 CLOSE
        S: a1 OK CLOSE completed
    """)


def test_no_vanished_during_a_uid_search_by_message_numbers(conv: Conversation) -> None:
    """RFC 7162 section 3.2.10 (RFC 5162 section 3.6): VANISHED MUST NOT be sent during a UID
    SEARCH whose criteria hold message numbers (nor a UID SORT or UID THREAD: the same search
    program); by UIDs alone it may be, as during any other UID command."""
    uids = seed(conv, 5)
    conv.command("ENABLE QRESYNC")
    conv.select()
    expunge(conv, [uids[0]])
    conv.script("""
        C: a1 UID SEARCH 2:3
        S: * SEARCH 2 3
        S: a1 OK SEARCH completed
        C: a2 UID SORT (ARRIVAL) UTF-8 OR 4 DELETED
        S: * SORT 4
        S: a2 OK SORT completed
        C: a3 UID THREAD ORDEREDSUBJECT UTF-8 NOT 1:3
        S: * THREAD (4 5)
        S: a3 OK THREAD completed
        C: a4 UID SEARCH UID 2:3
        S: * SEARCH 2 3
        S: * VANISHED 1
        S: a4 OK [HIGHESTMODSEQ {*}] SEARCH completed
    """)


def test_no_expunge_during_a_uid_search_by_message_numbers(conv: Conversation) -> None:
    """The same for EXPUNGE responses without QRESYNC: the client maps the numbers of its search
    to UIDs, and an expunge held back until the next command can confuse nobody."""
    uids = seed(conv, 3)
    conv.select()
    expunge(conv, [uids[0]])
    conv.script("""
        C: a1 UID SEARCH 2
        S: * SEARCH 2
        S: a1 OK SEARCH completed
        C: a2 UID SEARCH ALL
        S: * SEARCH 2 3
        S: * 1 EXPUNGE
        S: a2 OK SEARCH completed
    """)


def test_a_live_search_fetch_above_a_held_back_expunge_is_followed_by_a_safe_highestmodseq(
        conv: Conversation) -> None:
    """A FETCH by message number holds another session's expunge back (RFC 3501 section 7.4.1);
    the live search's RETURN (UPDATE (UID MODSEQ)) fetches a message that arrived meanwhile,
    with a MODSEQ above that expunge. A QRESYNC client resynchronising from that MODSEQ would
    never learn of the expunge: it is told the HIGHESTMODSEQ it may trust after the FETCH (RFC
    7162 section 3.2.10 with erratum 1810), as after NOTIFY's MessageNew FETCH."""
    uids = seed(conv, 2)
    conv.command("ENABLE QRESYNC")
    conv.select()
    before = highest(conv)
    conv.command("UID SEARCH RETURN (UPDATE (UID MODSEQ) ALL) FLAGGED")
    expunge(conv, [uids[0]])
    new = conv.add_message(flags=("\\Flagged",))
    lines = conv.command("FETCH 2 (FLAGS)")
    fetched = b"* 3 FETCH (UID %d MODSEQ (%d))" % (new, modseq_of(conv, new))
    assert fetched in lines and not any(b"VANISHED" in line for line in lines), lines
    assert lines[lines.index(fetched) + 1:] == [
        b'* ESEARCH (TAG "x4") UID ADDTO (0 %d)' % new,
        b"* OK [HIGHESTMODSEQ %d] Highest modification sequence" % before, b"x5 OK FETCH completed"], lines


def _flag_rows_busy(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the store's flag_rows (read as a LazyFlagUpdates makes its lines) fail as a busy
    LMDB does; returns the real one, to put back."""
    flag_rows = conv.store.flag_rows

    def busy(*args: Any, **kwargs: Any) -> Any:
        raise StoreBusy("too many concurrent readers")

    monkeypatch.setattr(conv.store, "flag_rows", busy)
    return flag_rows


def test_close_highestmodseq_skips_no_flag_change_a_store_error_kept_back(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flag changes whose lines a store error kept back (LazyFlagUpdates: the view's MODSEQ is
    past them, the next catch-up was to send them) are changes the client was not told of: a
    CLOSE, which sends no untagged responses, gives a HIGHESTMODSEQ below them, and a QRESYNC from
    it reports them. It gave the store's, past them: the client never learnt of those flags."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    _uids, safe = _own_delete_then_others_flag(conv, 4, 1)
    flag_rows = _flag_rows_busy(conv, monkeypatch)
    lines = conv.command("NOOP")
    assert not any(b"FETCH" in line for line in lines) and lines[0].startswith(b"* NO [UNAVAILABLE]"), lines
    monkeypatch.setattr(conv.store, "flag_rows", flag_rows)
    (answer,) = conv.command("CLOSE")
    told = int(answer.split(b"[HIGHESTMODSEQ ", 1)[1].split(b"]")[0])
    assert told <= safe, (answer, safe)
    lines = conv.command(f"SELECT INBOX (QRESYNC ({uidvalidity(conv)} {told}))")
    assert sum(b"FETCH" in line and b"\\Flagged" in line for line in lines) == 3, lines


def _told_highestmodseqs(lines: list[bytes]) -> list[int]:
    """Every HIGHESTMODSEQ the lines give (untagged OK or the tagged answer's code)."""
    return [int(line.split(b"[HIGHESTMODSEQ ", 1)[1].split(b"]", 1)[0]) for line in lines
            if b"[HIGHESTMODSEQ " in line]


@pytest.mark.parametrize("command", ["NOOP", "EXPUNGE"])
def test_a_commands_highestmodseq_skips_no_flag_change_its_own_lines_kept_back(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """The HIGHESTMODSEQ a command's updates end with (the tagged OK's code, RFC 7162 sections
    3.2.7 and 3.2.10) is worked out once the lines of its flag changes, made as they are sent
    (LazyFlagUpdates), are out: a store error there keeps some back, and a value past them would
    let a QRESYNC from it skip them. It was worked out before, and gave the store's."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    _uids, safe = _own_delete_then_others_flag(conv, 4, 1)
    conv.add_message()   # (an EXISTS: the updates tell a HIGHESTMODSEQ past the flag changes)
    flag_rows = _flag_rows_busy(conv, monkeypatch)
    lines = conv.command(command)
    monkeypatch.setattr(conv.store, "flag_rows", flag_rows)
    assert any(line.startswith(b"* NO [UNAVAILABLE]") for line in lines), lines
    assert not any(b"FETCH" in line for line in lines), lines
    told = _told_highestmodseqs(lines)
    if command == "EXPUNGE":   # RFC 5162 section 3.3: it MUST, having expunged
        assert b"[HIGHESTMODSEQ " in lines[-1], lines
    assert told and max(told) <= safe, (lines, safe)
    lines = conv.command(f"SELECT INBOX (QRESYNC ({uidvalidity(conv)} {max(told)}))")
    assert sum(b"FETCH" in line and b"\\Flagged" in line for line in lines) == 3, lines


def test_an_idle_pushs_highestmodseq_skips_no_flag_change_its_own_lines_kept_back(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """As for a command's answer, the untagged HIGHESTMODSEQ after an IDLE push is worked out
    once the push's flag change lines are out, not past those a store error kept back."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    uids = seed(conv, 4)
    conv.command("ENABLE QRESYNC")
    conv.select()
    safe = highest(conv)
    conv.script("""
        C: a1 IDLE
        S: + idling
    """)
    flag_rows = _flag_rows_busy(conv, monkeypatch)
    flag(conv, uids[1:], "\\Flagged")
    conv.add_message()
    lines = conv.wake()
    monkeypatch.setattr(conv.store, "flag_rows", flag_rows)
    assert any(line.startswith(b"* NO [UNAVAILABLE]") for line in lines), lines
    told = _told_highestmodseqs(lines)
    assert told and max(told) <= safe, (lines, safe)


def test_in_idle_a_delivery_while_the_highestmodseq_waits_is_pushed_after_it(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """IDLE without NOTIFY: while a push's flag change lines are made, the HIGHESTMODSEQ after
    them waits as the session's own work, in front of IDLE; a message delivered meanwhile wakes
    nothing (the session is at work, not idling). Once that work is done the session looks
    again, as after live searches' work: the client does not wait for DONE or another change."""
    monkeypatch.setattr(selected, "LAZY_UPDATES_FROM", 1)
    uids = seed(conv, 4)
    conv.command("ENABLE QRESYNC")
    conv.select()
    conv.script("""
        C: a1 IDLE
        S: + idling
    """)
    flag(conv, uids[1:], "\\Flagged")
    flag_rows = conv.store.flag_rows
    delivered: list[int] = []

    def deliver_first(*args: Any, **kwargs: Any) -> Any:
        if not delivered:
            delivered.append(conv.add_message())
        return flag_rows(*args, **kwargs)

    monkeypatch.setattr(conv.store, "flag_rows", deliver_first)
    lines = conv.wake()
    assert delivered and conv.wakes == 0
    flagged = [b"* %d FETCH (UID %d FLAGS (\\Flagged) MODSEQ (%d))" % (uid, uid, modseq_of(conv, uid))
               for uid in uids[1:]]
    assert lines == [*flagged, b"* 5 EXISTS", b"* 1 RECENT",
                     b"* OK [HIGHESTMODSEQ %d] Highest modification sequence" % highest(conv)], lines
