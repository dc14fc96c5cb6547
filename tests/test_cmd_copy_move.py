"""COPY / MOVE conversations (RFC 3501 section 6.4.7, RFC 4315 COPYUID, RFC 6851 MOVE)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def seed_with_gap(conv: Conversation) -> None:
    """INBOX holds UIDs 1, 2, 4, 5 (3 was expunged), already seen by another session."""
    folder = conv.folder("INBOX")
    for number in range(1, 6):
        conv.add_message(data=b"Subject: message %d\r\n\r\nbody\r\n" % number,
                         flags=("\\Seen",) if number % 2 else ())
    conv.store.store_flags("alice", folder.id, [3], "add", ["\\Deleted"])
    conv.store.expunge("alice", folder.id, [3])
    conv.store.claim_recent_range("alice", folder.id)


def test_rfc4315_copyuid(conv: Conversation) -> None:
    seed_with_gap(conv)
    trash = conv.folder("Trash").uidvalidity
    conv.select()
    conv.script(rf"""
        C: A003 COPY 2:4 Trash
        S: A003 OK [COPYUID {trash} 2,4:5 1:3] COPY completed
        C: A004 UID COPY 1,5 Trash
        S: A004 OK [COPYUID {trash} 1,5 4:5] COPY completed
        C: A005 UID COPY 100:200 Trash
        S: A005 OK No messages copied
        C: A006 STATUS Trash (MESSAGES UNSEEN)
        S: * STATUS Trash (MESSAGES 5 UNSEEN 2)
        S: A006 OK STATUS completed
    """)
    # Flags travel with the copy; the copies are \Recent for the next session selecting Trash.
    conv.select("Trash")
    conv.script(r"""
        C: a1 FETCH 1:5 (FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])
        S: * 1 FETCH (FLAGS (\Recent) BODY[HEADER.FIELDS (Subject)] {22}
        S: Subject: message 2
        S:
        S: )
        S: * 2 FETCH (FLAGS (\Recent) BODY[HEADER.FIELDS (Subject)] {22}
        S: Subject: message 4
        S:
        S: )
        S: * 3 FETCH (FLAGS (\Seen \Recent) BODY[HEADER.FIELDS (Subject)] {22}
        S: Subject: message 5
        S:
        S: )
        S: * 4 FETCH (FLAGS (\Seen \Recent) BODY[HEADER.FIELDS (Subject)] {22}
        S: Subject: message 1
        S:
        S: )
        S: * 5 FETCH (FLAGS (\Seen \Recent) BODY[HEADER.FIELDS (Subject)] {22}
        S: Subject: message 5
        S:
        S: )
        S: a1 OK FETCH completed
    """)


def test_copy_errors(conv: Conversation) -> None:
    seed_with_gap(conv)
    conv.select(examine=True)
    trash = conv.folder("Trash").uidvalidity
    conv.script(rf"""
        C: a1 COPY 1 Nonexistent
        S: a1 NO [TRYCREATE] Mailbox does not exist
        C: a2 COPY 5 Trash
        S: a2 BAD [CLIENTBUG] Invalid message sequence number
        C: a3 COPY 1 Trash
        S: a3 OK [COPYUID {trash} 1 1] COPY completed
    """)
    conv.store.update_account("alice", quota_messages=5)
    conv.script("""
        C: a4 COPY 1:4 Trash
        S: a4 NO [OVERQUOTA] Over quota
    """)


def test_copy_into_the_selected_mailbox_announces_it(conv: Conversation) -> None:
    seed_with_gap(conv)
    uidvalidity = conv.folder("INBOX").uidvalidity
    conv.select()
    conv.script(rf"""
        C: a1 COPY 1 INBOX
        S: * 5 EXISTS
        S: * 1 RECENT
        S: a1 OK [COPYUID {uidvalidity} 1 6] COPY completed
    """)


def test_rfc6851_move(conv: Conversation) -> None:
    seed_with_gap(conv)
    trash = conv.folder("Trash").uidvalidity
    conv.select()
    conv.script(rf"""
        C: a UID MOVE 2:5 Trash
        S: * OK [COPYUID {trash} 2,4:5 1:3] Moved
        S: * 4 EXPUNGE
        S: * 3 EXPUNGE
        S: * 2 EXPUNGE
        S: a OK MOVE completed
        C: b FETCH 1:* (UID)
        S: * 1 FETCH (UID 1)
        S: b OK FETCH completed
        C: c MOVE 1 Nonexistent
        S: c NO [TRYCREATE] Mailbox does not exist
        C: d UID MOVE 7:9 Trash
        S: d OK No messages moved
        C: e STATUS Trash (MESSAGES)
        S: * STATUS Trash (MESSAGES 3)
        S: e OK STATUS completed
    """)


def test_move_within_the_same_mailbox(conv: Conversation) -> None:
    seed_with_gap(conv)
    uidvalidity = conv.folder("INBOX").uidvalidity
    conv.select()
    conv.script(rf"""
        C: a1 MOVE 1 INBOX
        S: * OK [COPYUID {uidvalidity} 1 6] Moved
        S: * 1 EXPUNGE
        S: * 4 EXISTS
        S: * 1 RECENT
        S: a1 OK MOVE completed
        C: a2 FETCH 1:* (UID)
        S: * 1 FETCH (UID 2)
        S: * 2 FETCH (UID 4)
        S: * 3 FETCH (UID 5)
        S: * 4 FETCH (UID 6)
        S: a2 OK FETCH completed
    """)


def test_move_needs_a_writable_mailbox(conv: Conversation) -> None:
    seed_with_gap(conv)
    conv.select(examine=True)
    conv.script("""
        C: a1 MOVE 1 Trash
        S: a1 NO [READ-ONLY] Mailbox is read-only
    """)


def test_move_saved_result(conv: Conversation) -> None:
    seed_with_gap(conv)
    trash = conv.folder("Trash").uidvalidity
    conv.select()
    conv.script(rf"""
        C: a1 UID SEARCH RETURN (SAVE) SEEN
        S: a1 OK SEARCH completed
        C: a2 MOVE $ Trash
        S: * OK [COPYUID {trash} 1,5 1:2] Moved
        S: * 4 EXPUNGE
        S: * 1 EXPUNGE
        S: a2 OK MOVE completed
        C: a3 FETCH $ UID
        S: a3 OK FETCH completed
    """)
