"""EXPUNGE and UID EXPUNGE conversations (RFC 3501 section 6.4.3, RFC 4315 section 2.1)."""

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


def seed(conv: Conversation, count: int, deleted: set[int]) -> None:
    for number in range(1, count + 1):
        conv.add_message(flags=("\\Deleted",) if number in deleted else ())
    conv.store.claim_recent_range("alice", conv.folder("INBOX").id)


def test_rfc3501_example(conv: Conversation) -> None:
    seed(conv, 11, {3, 4, 7, 11})
    conv.select()
    # The RFC sends "3 3 5 8" (each number after the previous removals); sending the highest
    # number first is equivalent and keeps every number valid as it is sent.
    conv.script("""
        C: A202 EXPUNGE
        S: * 11 EXPUNGE
        S: * 7 EXPUNGE
        S: * 4 EXPUNGE
        S: * 3 EXPUNGE
        S: A202 OK EXPUNGE completed
        C: A203 FETCH 1:* UID
        S: * 1 FETCH (UID 1)
        S: * 2 FETCH (UID 2)
        S: * 3 FETCH (UID 5)
        S: * 4 FETCH (UID 6)
        S: * 5 FETCH (UID 8)
        S: * 6 FETCH (UID 9)
        S: * 7 FETCH (UID 10)
        S: A203 OK FETCH completed
        C: A204 EXPUNGE
        S: A204 OK EXPUNGE completed
    """)


def test_rfc4315_uid_expunge(conv: Conversation) -> None:
    seed(conv, 6, {1, 3, 4, 5})
    conv.select()
    conv.script("""
        C: A003 UID EXPUNGE 3:5
        S: * 5 EXPUNGE
        S: * 4 EXPUNGE
        S: * 3 EXPUNGE
        S: A003 OK EXPUNGE completed
        C: A004 UID SEARCH DELETED
        S: * SEARCH 1
        S: A004 OK SEARCH completed
        C: A005 UID EXPUNGE 100:200
        S: A005 OK EXPUNGE completed
        C: A006 UID EXPUNGE 2
        S: A006 OK EXPUNGE completed
        C: A007 UID EXPUNGE 1:*
        S: * 1 EXPUNGE
        S: A007 OK EXPUNGE completed
    """)


def test_expunge_saved_result(conv: Conversation) -> None:
    seed(conv, 4, {2, 3, 4})
    conv.select()
    conv.script("""
        C: a1 UID SEARCH RETURN (SAVE) 1:2
        S: a1 OK SEARCH completed
        C: a2 UID EXPUNGE $
        S: * 2 EXPUNGE
        S: a2 OK EXPUNGE completed
    """)


def test_read_only_mailbox(conv: Conversation) -> None:
    seed(conv, 2, {1})
    conv.select(examine=True)
    conv.script("""
        C: a1 EXPUNGE
        S: a1 NO [READ-ONLY] Mailbox is read-only
        C: a2 UID EXPUNGE 1
        S: a2 NO [READ-ONLY] Mailbox is read-only
    """)
    assert conv.folder("INBOX").messages == 2


def test_unannounced_deleted_message_is_kept(conv: Conversation) -> None:
    seed(conv, 2, {2})
    conv.select()
    conv.add_message(flags=("\\Deleted",))  # arrives after SELECT, not yet announced
    conv.script("""
        C: a1 EXPUNGE
        S: * 2 EXPUNGE
        S: * 2 EXISTS
        S: * 1 RECENT
        S: a1 OK EXPUNGE completed
        C: a2 EXPUNGE
        S: * 2 EXPUNGE
        S: a2 OK EXPUNGE completed
    """)


def test_expunge_requires_selected_state(conv: Conversation) -> None:
    conv.script("""
        C: a1 EXPUNGE
        S: a1 BAD [CLIENTBUG] No mailbox selected
        C: a2 UID EXPUNGE 1
        S: a2 BAD [CLIENTBUG] No mailbox selected
    """)
