"""CONDSTORE conversations (RFC 7162 section 3.1): MODSEQ, HIGHESTMODSEQ, CHANGEDSINCE,
UNCHANGEDSINCE with [MODIFIED], SEARCH MODSEQ, CONDSTORE enabling.

The RFC's examples are replayed with the numbers of a fresh midb folder (a new folder has
HIGHESTMODSEQ 1 and every append or flag change takes the next value), their structure kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

from gximap.imap.commands import SearchAnd, SearchModSeq, SearchNot, SearchOr, SearchSize
from gximap.session import condstore


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def seed(conv: Conversation, *flag_sets: tuple[str, ...]) -> list[int]:
    """Messages with the given flags, already seen by another session (no \\Recent)."""
    uids = [conv.add_message(flags=flags) for flags in flag_sets]
    conv.store.claim_recent_range("alice", conv.folder("INBOX").id)
    return uids


def highest(conv: Conversation, mailbox: str = "INBOX") -> int:
    return conv.folder(mailbox).highestmodseq


def modseqs(conv: Conversation) -> dict[int, int]:
    return {meta.uid: meta.modseq for meta in conv.store.messages("alice", conv.folder("INBOX").id)}


# -- advertising and enabling -----------------------------------------------------------------


def test_capabilities_advertised_after_login(conv: Conversation) -> None:
    line = conv.command("CAPABILITY")[0]
    assert b" CONDSTORE" in line and b" QRESYNC" in line


def test_select_reports_highestmodseq_whether_condstore_aware_or_not(conv: Conversation) -> None:
    """RFC 7162 section 3.1.2.1: "A server supporting the persistent storage of mod-sequences for
    the mailbox MUST send the OK untagged response including HIGHESTMODSEQ response code with
    every successful SELECT or EXAMINE command". midb keeps them for every mailbox."""
    seed(conv, ())
    conv.script(f"""
        C: a0 SELECT INBOX
        S: * FLAGS ({{*}})
        S: * OK [PERMANENTFLAGS ({{*}})] Flags permitted
        S: * 1 EXISTS
        S: * 0 RECENT
        S: * OK [UNSEEN 1] First unseen
        S: * OK [UIDVALIDITY {{n}}] UIDs valid
        S: * OK [UIDNEXT 2] Predicted next UID
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * OK [MAILBOXID ({{*}})] Mailbox ID
        S: a0 OK [READ-WRITE] SELECT completed
    """)
    assert not condstore.enabled(conv.session)  # reporting HIGHESTMODSEQ does not enable CONDSTORE
    conv.command("UNSELECT")
    conv.script(f"""
        C: a1 ENABLE CONDSTORE
        S: * ENABLED CONDSTORE
        S: a1 OK ENABLE completed
        C: a2 EXAMINE INBOX
        S: * FLAGS ({{*}})
        S: * OK [PERMANENTFLAGS ()] No permanent flags permitted
        S: * 1 EXISTS
        S: * 0 RECENT
        S: * OK [UNSEEN 1] First unseen
        S: * OK [UIDVALIDITY {{n}}] UIDs valid
        S: * OK [UIDNEXT 2] Predicted next UID
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * OK [MAILBOXID ({{*}})] Mailbox ID
        S: a2 OK [READ-ONLY] EXAMINE completed
    """)


def test_select_condstore_parameter_enables(conv: Conversation) -> None:
    """RFC 7162 section 3.1.8 example (A142 SELECT INBOX (CONDSTORE)), adapted."""
    seed(conv, ("\\Seen",), ())
    conv.script(f"""
        C: A142 SELECT INBOX (CONDSTORE)
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted
        S: * 2 EXISTS
        S: * 0 RECENT
        S: * OK [UNSEEN 2] First unseen
        S: * OK [UIDVALIDITY {{n}}] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * OK [MAILBOXID ({{*}})] Mailbox ID
        S: A142 OK [READ-WRITE] SELECT completed
    """)
    assert "CONDSTORE" in conv.session.enabled
    # Once aware, the connection stays so: a plain SELECT reports HIGHESTMODSEQ too.
    lines = conv.select()
    assert f"* OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence".encode() in lines


def test_status_highestmodseq_and_enabling_while_selected(conv: Conversation) -> None:
    seed(conv, ())
    conv.add_message("Sent")
    conv.select()
    inbox, sent = highest(conv), highest(conv, "Sent")
    # Enabling while a mailbox is selected announces that mailbox's HIGHESTMODSEQ first.
    conv.script(f"""
        C: a1 STATUS Sent (MESSAGES HIGHESTMODSEQ)
        S: * OK [HIGHESTMODSEQ {inbox}] Highest modification sequence
        S: * STATUS Sent (MESSAGES 1 HIGHESTMODSEQ {sent})
        S: a1 OK STATUS completed
        C: a2 STATUS INBOX (HIGHESTMODSEQ)
        S: * STATUS INBOX (HIGHESTMODSEQ {inbox})
        S: a2 OK STATUS completed
    """)


def test_list_status_highestmodseq_enables(conv: Conversation) -> None:
    conv.script(f"""
        C: a1 LIST "" Sent RETURN (STATUS (HIGHESTMODSEQ))
        S: * LIST ({{*}}) "/" Sent
        S: * STATUS Sent (HIGHESTMODSEQ {highest(conv, "Sent")})
        S: a1 OK LIST completed
    """)
    assert condstore.enabled(conv.session)


def test_unauthenticate_forgets_condstore(conv: Conversation) -> None:
    conv.command("ENABLE CONDSTORE")
    conv.command("UNAUTHENTICATE")
    conv.login()
    assert not condstore.enabled(conv.session)
    seed(conv, ())
    conv.select()
    # A CONDSTORE-unaware session's FETCH responses carry no MODSEQ.
    conv.script("""
        C: a1 STORE 1 +FLAGS (\\Flagged)
        S: * 1 FETCH (FLAGS (\\Flagged))
        S: a1 OK STORE completed
    """)


# -- FETCH --------------------------------------------------------------------------------------


def test_fetch_modseq_item(conv: Conversation) -> None:
    """RFC 7162 section 3.1.4.2 example: FETCH with the MODSEQ item."""
    uids = seed(conv, ("\\Seen",), ())
    conv.select()
    seqs = modseqs(conv)
    conv.script(f"""
        C: a FETCH 1:2 (MODSEQ)
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * 1 FETCH (MODSEQ ({seqs[uids[0]]}))
        S: * 2 FETCH (MODSEQ ({seqs[uids[1]]}))
        S: a OK FETCH completed
    """)


def test_fetch_changedsince_rfc_example(conv: Conversation) -> None:
    """RFC 7162 section 3.1.4.1: s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345); only messages
    changed after the given modseq are returned, each with its MODSEQ after the UID."""
    uids = seed(conv, (), (), (), (), ())
    conv.select()
    mark = highest(conv)
    conv.store.store_flags("alice", conv.folder("INBOX").id, [uids[0]], "add", ["\\Seen"])
    conv.store.store_flags("alice", conv.folder("INBOX").id, [uids[1]], "add", ["\\Deleted"])
    conv.store.store_flags("alice", conv.folder("INBOX").id, [uids[3]], "add", ["$NoJunk", "$MDNSent"])
    conv.command("NOOP")  # the other session's changes are known now
    seqs = modseqs(conv)
    conv.script(f"""
        C: s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark})
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * 1 FETCH (UID {uids[0]} MODSEQ ({seqs[uids[0]]}) FLAGS (\\Seen))
        S: * 2 FETCH (UID {uids[1]} MODSEQ ({seqs[uids[1]]}) FLAGS (\\Deleted))
        S: * 4 FETCH (UID {uids[3]} MODSEQ ({seqs[uids[3]]}) FLAGS ($MDNSent $NoJunk))
        S: s100 OK FETCH completed
        C: s101 FETCH 2:4 (FLAGS) (CHANGEDSINCE {seqs[uids[1]]})
        S: * 4 FETCH (MODSEQ ({seqs[uids[3]]}) FLAGS ($MDNSent $NoJunk))
        S: s101 OK FETCH completed
        C: s102 UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {highest(conv)})
        S: s102 OK FETCH completed
    """)


def test_fetch_changedsince_sets_seen_only_on_returned_messages(conv: Conversation) -> None:
    uids = seed(conv, (), ())
    conv.select()
    mark = highest(conv)
    conv.store.store_flags("alice", conv.folder("INBOX").id, [uids[1]], "add", ["$Label"])
    conv.command("NOOP")
    before = modseqs(conv)
    lines = conv.send(f"a1 FETCH 1:2 (BODY[TEXT]) (CHANGEDSINCE {mark})\r\n".encode())
    after = modseqs(conv)
    assert after[uids[0]] == before[uids[0]]  # unchanged, not returned, so not marked \Seen
    assert lines[1] == (f"* 2 FETCH (MODSEQ ({after[uids[1]]}) BODY[TEXT] {{7}}\r\nhello\r\n "
                        f"UID {uids[1]} FLAGS (\\Seen $Label))").encode()
    assert lines[-1] == b"a1 OK FETCH completed"


def test_fetch_changedsince_with_a_message_expunged_elsewhere(conv: Conversation) -> None:
    """FETCH (not UID FETCH) naming a message another session expunged answers the others and
    completes with NO [EXPUNGEISSUED] (RFC 2180 section 4.1.2), with CHANGEDSINCE as without."""
    uids = seed(conv, (), ("\\Deleted",), ())
    conv.select()
    mark = highest(conv)
    flag_uid = uids[2]
    conv.store.store_flags("alice", conv.folder("INBOX").id, [flag_uid], "add", ["\\Flagged"])
    conv.store.expunge("alice", conv.folder("INBOX").id)
    conv.script(f"""
        C: a1 FETCH 1:3 (FLAGS) (CHANGEDSINCE {mark})
        S: * OK [HIGHESTMODSEQ {mark}] Highest modification sequence
        S: * 3 FETCH (MODSEQ ({highest(conv) - 1}) FLAGS (\\Flagged))
        # the other session's change follows as an update, as after any FETCH
        S: * 3 FETCH (UID {flag_uid} FLAGS (\\Flagged) MODSEQ ({highest(conv) - 1}))
        S: a1 NO [EXPUNGEISSUED] Some of the requested messages no longer exist
        C: a2 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark})
        # UID FETCH may announce the expunge, after its answer in the numbers the client knew
        S: * 3 FETCH (UID {flag_uid} MODSEQ ({highest(conv) - 1}) FLAGS (\\Flagged))
        S: * 2 EXPUNGE
        S: a2 OK FETCH completed
        C: a3 NOOP
        S: a3 OK NOOP completed
    """)


def test_implicit_seen_reports_uid_flags_and_new_modseq(conv: Conversation) -> None:
    """RFC 7162 section 3.1: once CONDSTORE-aware, FETCH responses caused by an implicit \\Seen
    carry UID and MODSEQ."""
    uids = seed(conv, ())
    conv.command("SELECT INBOX (CONDSTORE)")
    lines = conv.send(b"a1 FETCH 1 (BODY[TEXT])\r\n")
    seq = modseqs(conv)[uids[0]]
    assert lines == [f"* 1 FETCH (BODY[TEXT] {{7}}\r\nhello\r\n UID {uids[0]} FLAGS (\\Seen) MODSEQ ({seq}))".encode(),
                     b"a1 OK FETCH completed"]


def test_unsolicited_fetch_carries_uid_and_modseq_once_aware(conv: Conversation) -> None:
    uids = seed(conv, (), ())
    conv.select()
    folder = conv.folder("INBOX").id
    conv.store.store_flags("alice", folder, [uids[1]], "add", ["\\Flagged"])
    conv.script("""
        C: a1 NOOP
        S: * 2 FETCH (FLAGS (\\Flagged))
        S: a1 OK NOOP completed
    """)
    conv.command(f"UID FETCH {uids[0]} (MODSEQ)")
    conv.store.store_flags("alice", folder, [uids[1]], "add", ["\\Answered"])
    conv.script(f"""
        C: a2 NOOP
        S: * 2 FETCH (UID {uids[1]} FLAGS (\\Answered \\Flagged) MODSEQ ({highest(conv)}))
        S: a2 OK NOOP completed
    """)


# -- STORE UNCHANGEDSINCE -----------------------------------------------------------------------


def test_store_all_pass_rfc_example(conv: Conversation) -> None:
    """RFC 7162 section 3.1.3, example 3 (a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045)
    +FLAGS.SILENT (\\Deleted)): every message passes; each gets FETCH (UID MODSEQ)."""
    uids = seed(conv, (), (), (), ())
    conv.select()
    mark = highest(conv)
    conv.send(f"a103 UID STORE {uids[3]},{uids[1]},{uids[2]} (UNCHANGEDSINCE {mark}) +FLAGS.SILENT (\\Deleted)"
              .encode() + b"\r\n")
    seqs = modseqs(conv)
    # In UID order; the changes took the next three modseqs.
    assert sorted(seqs[uid] for uid in uids[1:]) == [mark + 1, mark + 2, mark + 3]
    conv.store.store_flags("alice", conv.folder("INBOX").id, [uids[0]], "add", ["$Ignored"])
    conv.command("NOOP")
    conv.script(f"""
        C: a104 STORE 2:4 (UNCHANGEDSINCE {highest(conv)}) -FLAGS.SILENT (\\Deleted)
        S: * 2 FETCH (UID {uids[1]} MODSEQ ({highest(conv) + 1}))
        S: * 3 FETCH (UID {uids[2]} MODSEQ ({highest(conv) + 2}))
        S: * 4 FETCH (UID {uids[3]} MODSEQ ({highest(conv) + 3}))
        S: a104 OK STORE completed
    """)


def test_store_some_fail_rfc_example(conv: Conversation) -> None:
    """RFC 7162 section 3.1.3 (d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT
    (\\Deleted)): 7 and 9 changed after the given modseq, so they are left alone and listed in
    [MODIFIED 7,9] (with their current FLAGS and MODSEQ); 5 is changed."""
    uids = seed(conv, *[()] * 9)
    conv.select()
    mark = highest(conv)
    folder = conv.folder("INBOX").id
    conv.store.store_flags("alice", folder, [uids[6]], "add", ["\\Seen"])
    conv.store.store_flags("alice", folder, [uids[8]], "add", ["\\Answered"])
    seven, nine = modseqs(conv)[uids[6]], modseqs(conv)[uids[8]]
    conv.script(f"""
        C: d105 STORE 7,5,9 (UNCHANGEDSINCE {mark}) +FLAGS.SILENT (\\Deleted)
        S: * OK [HIGHESTMODSEQ {mark}] Highest modification sequence
        S: * 5 FETCH (UID {uids[4]} MODSEQ ({highest(conv) + 1}))
        S: * 7 FETCH (UID {uids[6]} FLAGS (\\Seen) MODSEQ ({seven}))
        S: * 9 FETCH (UID {uids[8]} FLAGS (\\Answered) MODSEQ ({nine}))
        S: d105 OK [MODIFIED 7,9] Conditional STORE failed for some messages
        C: d106 FETCH 5:9 (FLAGS)
        S: * 5 FETCH (FLAGS (\\Deleted))
        S: * 6 FETCH (FLAGS ())
        S: * 7 FETCH (FLAGS (\\Seen))
        S: * 8 FETCH (FLAGS ())
        S: * 9 FETCH (FLAGS (\\Answered))
        S: d106 OK FETCH completed
    """)


def test_store_unchangedsince_zero_always_fails(conv: Conversation) -> None:
    """RFC 7162 section 3.1.3: 'Use of UNCHANGEDSINCE with a modification sequence of 0 always
    fails if the metadata item exists' (a102 STORE 12 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent))."""
    uids = seed(conv, (), ("$MDNSent",))
    conv.select()
    seqs = modseqs(conv)
    conv.script(f"""
        C: a102 UID STORE {uids[1]} (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent)
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * 2 FETCH (UID {uids[1]} FLAGS ($MDNSent) MODSEQ ({seqs[uids[1]]}))
        S: a102 OK [MODIFIED {uids[1]}] Conditional STORE failed for some messages
        C: a103 UID STORE 1:* (UNCHANGEDSINCE 0) FLAGS (\\Seen)
        S: * 1 FETCH (UID {uids[0]} FLAGS () MODSEQ ({seqs[uids[0]]}))
        S: * 2 FETCH (UID {uids[1]} FLAGS ($MDNSent) MODSEQ ({seqs[uids[1]]}))
        S: a103 OK [MODIFIED {uids[0]}:{uids[1]}] Conditional STORE failed for some messages
    """)
    assert modseqs(conv) == seqs


def test_store_non_silent_and_retry_with_the_new_modseq(conv: Conversation) -> None:
    uids = seed(conv, ("\\Seen",), ())
    conv.select()
    mark = highest(conv)
    conv.script(f"""
        C: a1 STORE 1:2 (UNCHANGEDSINCE {mark}) +FLAGS ($Processed)
        S: * OK [HIGHESTMODSEQ {mark}] Highest modification sequence
        S: * FLAGS ({{*}})
        S: * OK [PERMANENTFLAGS ({{*}})] Flags permitted
        S: * 1 FETCH (UID {uids[0]} FLAGS (\\Seen $Processed) MODSEQ ({mark + 1}))
        S: * 2 FETCH (UID {uids[1]} FLAGS ($Processed) MODSEQ ({mark + 2}))
        S: a1 OK STORE completed
        C: a2 STORE 1 (UNCHANGEDSINCE {mark}) -FLAGS ($Processed)
        S: * 1 FETCH (UID {uids[0]} FLAGS (\\Seen $Processed) MODSEQ ({mark + 1}))
        S: a2 OK [MODIFIED 1] Conditional STORE failed for some messages
        C: a3 STORE 1 (UNCHANGEDSINCE {mark + 1}) -FLAGS ($Processed)
        S: * 1 FETCH (UID {uids[0]} FLAGS (\\Seen) MODSEQ ({mark + 3}))
        S: a3 OK STORE completed
    """)


def test_store_noop_change_passes_without_new_modseq(conv: Conversation) -> None:
    """A message that passes the test but already has the flag keeps its MODSEQ; the client
    still gets the FETCH with it, as .SILENT requires."""
    uids = seed(conv, ("\\Seen",))
    conv.select()
    seq = modseqs(conv)[uids[0]]
    conv.script(f"""
        C: a1 STORE 1 (UNCHANGEDSINCE {seq}) +FLAGS.SILENT (\\Seen)
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * 1 FETCH (UID {uids[0]} MODSEQ ({seq}))
        S: a1 OK STORE completed
    """)


def test_silent_store_reports_new_modseq_once_aware(conv: Conversation) -> None:
    uids = seed(conv, (), ())
    conv.command("ENABLE CONDSTORE")
    conv.select()
    mark = highest(conv)
    conv.script(f"""
        C: a1 STORE 1:2 +FLAGS.SILENT (\\Flagged)
        S: * 1 FETCH (UID {uids[0]} MODSEQ ({mark + 1}))
        S: * 2 FETCH (UID {uids[1]} MODSEQ ({mark + 2}))
        S: a1 OK STORE completed
        C: a2 STORE 1:2 +FLAGS.SILENT (\\Flagged)
        S: a2 OK STORE completed
        C: a3 STORE 2 -FLAGS (\\Flagged)
        S: * 2 FETCH (UID {uids[1]} FLAGS () MODSEQ ({mark + 3}))
        S: a3 OK STORE completed
    """)


def test_store_unchangedsince_on_message_expunged_elsewhere(conv: Conversation) -> None:
    """A message the client still sees but another session expunged changed (it is gone): it
    is listed in [MODIFIED] rather than failing the whole STORE."""
    uids = seed(conv, (), ("\\Deleted",), ())
    conv.select()
    mark = highest(conv)
    conv.store.expunge("alice", conv.folder("INBOX").id)
    conv.script(f"""
        C: a1 STORE 1:3 (UNCHANGEDSINCE {mark}) +FLAGS.SILENT (\\Answered)
        S: * OK [HIGHESTMODSEQ {mark}] Highest modification sequence
        S: * 1 FETCH (UID {uids[0]} MODSEQ ({mark + 2}))
        S: * 3 FETCH (UID {uids[2]} MODSEQ ({mark + 3}))
        S: a1 OK [MODIFIED 2] Conditional STORE failed for some messages
        C: a2 NOOP
        S: * 2 EXPUNGE
        S: a2 OK NOOP completed
    """)


def test_store_unchangedsince_errors(conv: Conversation) -> None:
    seed(conv, ())
    conv.select(examine=True)
    conv.script("""
        C: a1 STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)
        S: a1 NO [READ-ONLY] Cannot modify flags in a read-only mailbox
        C: a2 STORE 1 (UNCHANGEDSINCE -1) +FLAGS (\\Seen)
        S: a2 BAD {*}
        C: a3 STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)
        S: a3 BAD {*}
        C: a4 STORE 1 (CHANGEDSINCE 5) +FLAGS (\\Seen)
        S: a4 BAD {*}
    """)


# -- SEARCH MODSEQ -----------------------------------------------------------------------------


def test_search_modseq_rfc_example(conv: Conversation) -> None:
    """RFC 7162 section 3.1.5 (a SEARCH MODSEQ "/flags/\\\\draft" all 620162338): the result ends
    with (MODSEQ n), the highest MODSEQ of the messages found. midb keeps one MODSEQ per message,
    which stands for every metadata item: the entry name does not narrow the search."""
    uids = seed(conv, (), ("\\Draft",), (), ("\\Draft",))
    conv.select()
    mark = highest(conv)
    conv.store.store_flags("alice", conv.folder("INBOX").id, [uids[1]], "add", ["\\Seen"])
    conv.command("NOOP")
    seqs = modseqs(conv)
    conv.script(f"""
        C: a SEARCH MODSEQ "/flags/\\\\draft" all {mark - 1}
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * SEARCH 2 3 4 (MODSEQ {seqs[uids[1]]})
        S: a OK SEARCH completed
        C: b SEARCH OR NOT MODSEQ 1 DRAFT
        S: * SEARCH 2 4 (MODSEQ {seqs[uids[1]]})
        S: b OK SEARCH completed
        C: c UID SEARCH MODSEQ {highest(conv) + 1}
        S: * SEARCH
        S: c OK SEARCH completed
        C: d SEARCH UNDRAFT
        S: * SEARCH 1 3
        S: d OK SEARCH completed
    """)


def test_esearch_modseq(conv: Conversation) -> None:
    """RFC 7162 section 3.1.10: MODSEQ at the end of ESEARCH; with only MIN and/or MAX it is the
    highest MODSEQ of those messages."""
    uids = seed(conv, (), (), ())
    conv.select()
    folder = conv.folder("INBOX").id
    conv.store.store_flags("alice", folder, [uids[0]], "add", ["\\Flagged"])  # 1 is the newest now
    conv.command("NOOP")
    seqs = modseqs(conv)
    conv.script(f"""
        C: t1 SEARCH RETURN (ALL) MODSEQ 1
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * ESEARCH (TAG "t1") ALL 1:3 MODSEQ {seqs[uids[0]]}
        S: t1 OK SEARCH completed
        C: t2 UID SEARCH RETURN (MAX) MODSEQ 1
        S: * ESEARCH (TAG "t2") UID MAX {uids[2]} MODSEQ {seqs[uids[2]]}
        S: t2 OK SEARCH completed
        C: t3 SEARCH RETURN (MIN MAX) MODSEQ 1
        S: * ESEARCH (TAG "t3") MIN 1 MAX 3 MODSEQ {seqs[uids[0]]}
        S: t3 OK SEARCH completed
        C: t4 SEARCH RETURN (COUNT) MODSEQ {highest(conv) + 5}
        S: * ESEARCH (TAG "t4") COUNT 0
        S: t4 OK SEARCH completed
        C: t5 SEARCH RETURN (SAVE) MODSEQ 1
        S: t5 OK SEARCH completed
    """)


def test_imap4rev2_search_modseq_uses_esearch(conv: Conversation) -> None:
    uids = seed(conv, ())
    conv.command("ENABLE IMAP4rev2")
    conv.select()
    seq = modseqs(conv)[uids[0]]
    conv.script(f"""
        C: s1 SEARCH MODSEQ 1
        S: * OK [HIGHESTMODSEQ {highest(conv)}] Highest modification sequence
        S: * ESEARCH (TAG "s1") ALL 1 MODSEQ {seq}
        S: s1 OK SEARCH completed
    """)


def test_uses_modseq_finds_nested_criteria() -> None:
    modseq = SearchModSeq(5)
    assert condstore.uses_modseq(modseq)
    assert condstore.uses_modseq(SearchAnd((SearchSize(True, 3), SearchOr((SearchSize(False, 9),
                                                                            SearchNot(modseq))))))
    assert not condstore.uses_modseq(SearchAnd((SearchSize(True, 3), SearchNot(SearchSize(False, 1)))))


def test_highest_modseq_reads_few_or_all(conv: Conversation) -> None:
    uids = seed(conv, *[()] * 12)
    conv.select()
    seqs = modseqs(conv)
    assert condstore.highest_modseq(conv.session, uids[:2]) == seqs[uids[1]]  # one by one
    assert condstore.highest_modseq(conv.session, uids) == max(seqs.values())  # one pass
    assert condstore.highest_modseq(conv.session, []) == 0
