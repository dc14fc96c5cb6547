"""STORE / UID STORE conversations (RFC 3501 / RFC 9051 section 6.4.6)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

from midb import columns


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def seed(conv: Conversation, *flag_sets: tuple[str, ...], recent: bool = False) -> list[int]:
    """Messages with the given flags; unless ``recent``, another session already saw them
    (so no \\Recent appears and the lines read as in the RFC examples)."""
    uids = [conv.add_message(flags=flags) for flags in flag_sets]
    if not recent:
        conv.store.claim_recent_range("alice", conv.folder("INBOX").id)
    return uids


def test_rfc3501_example(conv: Conversation) -> None:
    seed(conv, (), ("\\Seen",), (), ("\\Flagged", "\\Seen"))
    conv.select()
    conv.script(r"""
        C: A003 STORE 2:4 +FLAGS (\Deleted)
        S: * 2 FETCH (FLAGS (\Deleted \Seen))
        S: * 3 FETCH (FLAGS (\Deleted))
        S: * 4 FETCH (FLAGS (\Deleted \Flagged \Seen))
        S: A003 OK STORE completed
        C: A004 NOOP
        S: A004 OK NOOP completed
    """)


def test_replace_remove_and_keywords(conv: Conversation) -> None:
    seed(conv, ("\\Answered",), ("\\Seen", "Old"))
    conv.select()
    conv.script(r"""
        C: a1 STORE 1:2 FLAGS (\Flagged $Forwarded MyLabel)
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Forwarded MyLabel)
        S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Forwarded MyLabel \*)] Flags permitted
        S: * 1 FETCH (FLAGS (\Flagged $Forwarded MyLabel))
        S: * 2 FETCH (FLAGS (\Flagged $Forwarded MyLabel))
        S: a1 OK STORE completed
        C: a2 STORE 2 -FLAGS (mylabel \Flagged)
        S: * 2 FETCH (FLAGS ($Forwarded))
        S: a2 OK STORE completed
        C: a3 STORE 1 +FLAGS \Seen \Draft
        S: * 1 FETCH (FLAGS (\Draft \Flagged \Seen $Forwarded MyLabel))
        S: a3 OK STORE completed
        C: a4 STORE 1 FLAGS ()
        S: * 1 FETCH (FLAGS ())
        S: a4 OK STORE completed
        C: a5 FETCH 1:2 FLAGS
        S: * 1 FETCH (FLAGS ())
        S: * 2 FETCH (FLAGS ($Forwarded))
        S: a5 OK FETCH completed
    """)


def test_one_keyword_in_any_spelling_is_one_flag(conv: Conversation) -> None:
    """Keywords are case-insensitive: however a client spells one, FLAGS names it once and
    every message shows the mailbox's spelling (Dovecot the same)."""
    assert conv.send(b"a1 APPEND INBOX ($Forwarded) {7+}\r\nHello\r\n\r\n")[-1].startswith(b"a1 OK")
    assert conv.send(b"a2 APPEND INBOX ($forwarded) {7+}\r\nHello\r\n\r\n")[-1].startswith(b"a2 OK")
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)" in conv.select()
    conv.script(r"""
        C: a3 STORE 1:2 +FLAGS ($FORWARDED NewOne)
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Forwarded NewOne)
        S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Forwarded NewOne \*)] Flags permitted
        S: * 1 FETCH (FLAGS ($Forwarded NewOne \Recent))
        S: * 2 FETCH (FLAGS ($Forwarded NewOne \Recent))
        S: a3 OK STORE completed
    """)


def test_unchanged_messages_are_reported_too(conv: Conversation) -> None:
    seed(conv, ("\\Seen",), ())
    conv.select()
    conv.script(r"""
        C: a1 STORE 1:2 +FLAGS (\Seen)
        S: * 1 FETCH (FLAGS (\Seen))
        S: * 2 FETCH (FLAGS (\Seen))
        S: a1 OK STORE completed
    """)


def test_silent_and_uid_store(conv: Conversation) -> None:
    uids = seed(conv, (), (), ())
    conv.select()
    conv.script(rf"""
        C: a1 STORE 1:3 +FLAGS.SILENT (\Deleted)
        S: a1 OK STORE completed
        C: a2 NOOP
        S: a2 OK NOOP completed
        C: a3 UID STORE {uids[1]}:{uids[2]} -FLAGS (\Deleted)
        S: * 2 FETCH (UID {uids[1]} FLAGS ())
        S: * 3 FETCH (UID {uids[2]} FLAGS ())
        S: a3 OK STORE completed
        C: a4 UID STORE 500:600 FLAGS (\Seen)
        S: a4 OK STORE completed
        C: a5 FETCH 1:3 FLAGS
        S: * 1 FETCH (FLAGS (\Deleted))
        S: * 2 FETCH (FLAGS ())
        S: * 3 FETCH (FLAGS ())
        S: a5 OK FETCH completed
    """)


def test_silent_store_reports_flags_another_session_changed_meanwhile(conv: Conversation) -> None:
    """RFC 3501 6.4.6: whatever .SILENT says, a change from elsewhere is reported. A .SILENT
    STORE on a message another session changed since this one last heard shows its FLAGS;
    a message this session already knew is still answered silently. Otherwise the other
    change, overwritten by this one's MODSEQ, would never be reported."""
    uids = seed(conv, (), ())
    conv.select()
    other = conv.second_session()
    other.login()
    other.select()
    other.command("STORE 1 +FLAGS (\\Flagged)")
    conv.script(r"""
        C: a1 STORE 1:2 +FLAGS.SILENT (\Seen)
        S: * 1 FETCH (FLAGS (\Flagged \Seen))
        S: a1 OK STORE completed
        C: a2 NOOP
        S: a2 OK NOOP completed
    """)
    other.command("STORE 2 +FLAGS (\\Answered)")
    conv.script(rf"""
        C: a3 UID STORE {uids[1]} -FLAGS.SILENT (\Seen)
        S: * 2 FETCH (UID {uids[1]} FLAGS (\Answered))
        S: a3 OK STORE completed
    """)


def test_silent_store_of_a_condstore_client_reports_flags_another_session_changed(tmp_path: Path) -> None:
    """The same for a QRESYNC client, with and without UNCHANGEDSINCE: its cache is marked up
    to date at the MODSEQ given, so a FETCH without FLAGS would leave it wrong for good (RFC
    7162 3.2: the client must not lose changes)."""
    with Conversation(tmp_path) as conv:
        conv.login()
        uids = seed(conv, (), (), ())
        conv.command("ENABLE QRESYNC")
        conv.select()
        other = conv.second_session()
        other.login()
        other.select()
        other.command("STORE 1:2 +FLAGS (\\Flagged)")
        lines = conv.send(b"a1 UID STORE %d +FLAGS.SILENT (\\Seen)\r\n" % uids[0])
        assert lines[0].startswith(b"* 1 FETCH (UID %d FLAGS (\\Flagged \\Seen) MODSEQ (" % uids[0])
        assert lines[1].startswith(b"* 2 FETCH (UID %d FLAGS (\\Flagged) MODSEQ (" % uids[1])  # the update
        assert lines[-1] == b"a1 OK STORE completed"
        # Message 2: left as it is by this STORE (already \Flagged), changed elsewhere meanwhile.
        other.command("STORE 2 +FLAGS (\\Answered)")
        lines = conv.send(b"a2 STORE 2:3 (UNCHANGEDSINCE 100) +FLAGS.SILENT (\\Flagged)\r\n")
        assert lines[0].startswith(b"* 2 FETCH (UID %d FLAGS (\\Answered \\Flagged) MODSEQ (" % uids[1])
        assert lines[1].startswith(b"* 3 FETCH (UID %d MODSEQ (" % uids[2])
        assert lines[-1] == b"a2 OK STORE completed"
        assert conv.send(b"a3 NOOP\r\n") == [b"a3 OK NOOP completed"]


def test_recent_in_rev1_not_in_rev2(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        conv.login()
        seed(conv, (), recent=True)
        conv.select()
        conv.script(r"""
            C: a1 STORE 1 +FLAGS (\Answered)
            S: * 1 FETCH (FLAGS (\Answered \Recent))
            S: a1 OK STORE completed
        """)
        rev2 = conv.second_session()
        rev2.login()
        rev2.command("ENABLE IMAP4rev2")
        rev2.select()
        # IMAP4rev2: no \Recent, and the UID is given as in every flag update.
        rev2.script(r"""
            C: b1 STORE 1 -FLAGS (\Answered)
            S: * 1 FETCH (UID 1 FLAGS ())
            S: b1 OK STORE completed
        """)


def test_errors(conv: Conversation) -> None:
    seed(conv, ())
    conv.select(examine=True)
    conv.script(r"""
        C: a1 STORE 1 +FLAGS (\Seen)
        S: a1 NO [READ-ONLY] Cannot modify flags in a read-only mailbox
        C: a2 STORE 2 +FLAGS (\Seen)
        S: a2 BAD [CLIENTBUG] Invalid message sequence number
        C: a3 STORE 1 +FLAGS (\Recent)
        S: a3 BAD {*}
        C: a4 STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\Seen)
        S: a4 NO [READ-ONLY] Cannot modify flags in a read-only mailbox
        C: a5 STORE 1 +FLAGS (\Bogus)
        S: a5 BAD {*}
    """)
    conv.select()
    conv.script(r"""
        C: a6 STORE 1 +FLAGS (\Seen)
        S: * 1 FETCH (FLAGS (\Seen))
        S: a6 OK STORE completed
        C: a7 STORE 1 FLAGS (bad"keyword)
        S: a7 BAD {*}
    """)


def test_store_dollar(conv: Conversation) -> None:
    seed(conv, ("\\Flagged",), (), ("\\Flagged",))
    conv.select()
    conv.script(r"""
        C: a1 SEARCH RETURN (SAVE) FLAGGED
        S: a1 OK SEARCH completed
        C: a2 STORE $ +FLAGS (\Deleted)
        S: * 1 FETCH (FLAGS (\Deleted \Flagged))
        S: * 3 FETCH (FLAGS (\Deleted \Flagged))
        S: a2 OK STORE completed
    """)


def test_keywords_beyond_the_bound_of_one_message_get_no_limit(conv: Conversation) -> None:
    seed(conv, (), ())
    conv.select()
    first = " ".join(f"$K{n}" for n in range(100))
    more = " ".join(f"$L{n}" for n in range(28))
    conv.command(f"STORE 1 +FLAGS.SILENT ({first})")
    conv.command(f"STORE 1 +FLAGS.SILENT ({more})")   # 128 keywords: the bound
    conv.script("""
        C: a1 STORE 1 +FLAGS ($One)
        S: a1 NO [LIMIT] Limit exceeded: 129 keywords on one message (at most 128)
        C: a2 STORE 1 -FLAGS ($L0)
        S: * 1 FETCH (FLAGS ({*}))
        S: a2 OK STORE completed
    """)


def test_an_account_out_of_keyword_combinations_gets_no_limit(conv: Conversation,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A server limit, not a client error: NO [LIMIT] (RFC 5530), and known combinations still work."""
    seed(conv, ("$Label1",), ())
    monkeypatch.setattr(columns, "MAX_KEYWORD_SET", 1)
    conv.select()
    conv.script(r"""
        C: a1 STORE 2 +FLAGS ($Label2)
        S: a1 NO [LIMIT] Limit exceeded: too many distinct keyword combinations in this account (at most 1)
        C: a2 STORE 2 +FLAGS ($Label1 \Seen)
        S: * 2 FETCH (FLAGS (\Seen $Label1))
        S: a2 OK STORE completed
        C: a3 FETCH 1:2 FLAGS
        S: * 1 FETCH (FLAGS ($Label1))
        S: * 2 FETCH (FLAGS (\Seen $Label1))
        S: a3 OK FETCH completed
    """)
    message = b"Subject: x\r\n\r\nbody\r\n"
    lines = conv.send(b"a4 APPEND INBOX ($Label3) {%d+}\r\n%s\r\n" % (len(message), message))
    assert lines[-1].startswith(b"a4 NO [LIMIT] ")
    lines = conv.send(b"a5 COPY 2 INBOX\r\n")   # {\Seen $Label1} is known: copies fine
    assert lines[-1].startswith(b"a5 OK [COPYUID ")


def test_an_account_out_of_keyword_set_octets_gets_no_limit(conv: Conversation,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The octets of an account's keyword combinations are bounded like their number."""
    seed(conv, ("$Label1",), ())
    monkeypatch.setattr(columns, "KEYWORD_SET_INDEX_COST", 10)
    monkeypatch.setattr(columns, "MAX_KEYWORD_SET_OCTETS", len("$Label1") + 3 + 2 * 10)
    conv.select()
    conv.script(r"""
        C: a1 STORE 2 +FLAGS ($Label2)
        S: a1 NO [LIMIT] Limit exceeded: the distinct keyword combinations of this account would take 34 octets of index (at most 30)
        C: a2 STORE 2 +FLAGS ($X)
        S: * FLAGS ({*})
        S: * OK [PERMANENTFLAGS ({*})] Flags permitted
        S: * 2 FETCH (FLAGS ($X))
        S: a2 OK STORE completed
    """)
