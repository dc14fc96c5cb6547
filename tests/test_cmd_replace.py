"""REPLACE and UID REPLACE conversations (RFC 8508): the new message stored and the old one
expunged as one change, the responses' order, and each refusal (before the literal where the
command already tells)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

DRAFT = b"From: alice@example.org\r\nSubject: draft %d\r\n\r\nversion %d\r\n"


def draft(version: int) -> bytes:
    return DRAFT % (version, version)


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path, max_literal=4096) as conversation:
        conversation.login()
        for version in (1, 2, 3):
            conversation.add_message("Drafts", draft(version), flags=("\\Draft",))
        conversation.store.claim_recent_range("alice", conversation.folder("Drafts").id)
        yield conversation


def subjects(conv: Conversation, mailbox: str = "Drafts") -> list[tuple[int, bytes]]:
    folder = conv.folder(mailbox)
    metas = conv.store.messages("alice", folder.id)
    bodies = conv.store.read_bodies([meta.blob for meta in metas])
    assert None not in bodies
    return [(meta.uid, (body or b"").split(b"\r\n")[1]) for meta, body in zip(metas, bodies, strict=True)]


def test_replace_is_advertised(conv: Conversation) -> None:
    assert "REPLACE" in conv.capabilities()


def test_rfc8508_replace_in_the_selected_mailbox(conv: Conversation) -> None:
    uidvalidity = conv.folder("Drafts").uidvalidity
    conv.select("Drafts")
    message = draft(4)
    assert conv.send(b"a1 REPLACE 2 Drafts (\\Seen \\Draft) {%d}\r\n" % len(message)) == [b"+ Ready for literal data"]
    assert conv.send(message + b"\r\n") == [
        b"* OK [APPENDUID %d 4] Replacement message stored" % uidvalidity,
        b"* 2 EXPUNGE",
        b"* 3 EXISTS",
        b"* 1 RECENT",
        b"a1 OK REPLACE completed",
    ]
    conv.script(r"""
        C: a2 FETCH 1:* (UID FLAGS)
        S: * 1 FETCH (UID 1 FLAGS (\Draft))
        S: * 2 FETCH (UID 3 FLAGS (\Draft))
        S: * 3 FETCH (UID 4 FLAGS (\Draft \Seen \Recent))
        S: a2 OK FETCH completed
    """)
    assert subjects(conv) == [(1, b"Subject: draft 1"), (3, b"Subject: draft 3"), (4, b"Subject: draft 4")]


def test_uid_replace_into_another_mailbox_with_qresync(conv: Conversation) -> None:
    """VANISHED instead of EXPUNGE, and the tagged OK carries the new HIGHESTMODSEQ (as MOVE's)."""
    sent = conv.folder("Sent").uidvalidity
    conv.command("ENABLE QRESYNC")
    conv.select("Drafts")
    highest = conv.folder("Drafts").highestmodseq
    message = draft(9)
    lines = conv.send(b"a1 UID REPLACE 3 Sent {%d+}\r\n%s\r\n" % (len(message), message))
    assert lines == [b"* OK [APPENDUID %d 1] Replacement message stored" % sent,
                     b"* VANISHED 3",
                     b"a1 OK [HIGHESTMODSEQ %d] REPLACE completed" % (highest + 1)]
    assert subjects(conv) == [(1, b"Subject: draft 1"), (2, b"Subject: draft 2")]
    assert subjects(conv, "Sent") == [(1, b"Subject: draft 9")]
    # "*" is the last message; UID REPLACE * as well.
    lines = conv.send(b"a2 REPLACE * Drafts {%d+}\r\n%s\r\n" % (len(message), message))
    assert lines[1:3] == [b"* VANISHED 2", b"* 2 EXISTS"], lines
    assert [uid for uid, _subject in subjects(conv)] == [1, 4]


def test_another_session_sees_one_expunge_and_one_arrival(conv: Conversation) -> None:
    watcher = conv.second_session()
    watcher.login("alice")
    watcher.select("Drafts")
    conv.select("Drafts")
    message = draft(5)
    conv.send(b"a1 REPLACE 1 Drafts {%d+}\r\n%s\r\n" % (len(message), message))
    # The new message is \Recent for the session that stored it (it has the mailbox selected).
    assert watcher.send(b"w1 NOOP\r\n") == [b"* 1 EXPUNGE", b"* 3 EXISTS", b"* 0 RECENT", b"w1 OK NOOP completed"]


@pytest.mark.parametrize(("command", "answer"), [
    (b"UID REPLACE 7 Drafts", b"NO [NONEXISTENT] No message with that UID in the selected mailbox"),
    (b"REPLACE 4 Drafts", b"BAD [CLIENTBUG] Invalid message sequence number"),
    (b"REPLACE 1 Nonexistent", b"NO [TRYCREATE] Mailbox does not exist"),
])
def test_refusals_come_before_the_message_is_sent(conv: Conversation, command: bytes, answer: bytes) -> None:
    conv.select("Drafts")
    # No "+": the client learns at once and never sends the octets.
    assert conv.send(b"a1 " + command + b" {30}\r\n") == [b"a1 " + answer]
    assert conv.command("NOOP")[-1].endswith(b"OK NOOP completed")
    assert [uid for uid, _subject in subjects(conv)] == [1, 2, 3]


@pytest.mark.parametrize(("command", "answer"), [
    (b"UID REPLACE 7 Drafts", b"NO [NONEXISTENT] No message with that UID in the selected mailbox"),
    (b"REPLACE 4 Drafts", b"BAD [CLIENTBUG] Invalid message sequence number"),
    (b"REPLACE 1 Nonexistent", b"NO [TRYCREATE] Mailbox does not exist"),
    (b"REPLACE 1 {7+}\r\nNowhere", b"NO [TRYCREATE] Mailbox does not exist"),  # a name as a literal
])
def test_refusals_of_a_message_sent_ahead(conv: Conversation, command: bytes, answer: bytes) -> None:
    conv.select("Drafts")
    message = draft(6)
    assert conv.send(b"a1 " + command + b" {%d+}\r\n%s\r\n" % (len(message), message)) == [b"a1 " + answer]
    assert [uid for uid, _subject in subjects(conv)] == [1, 2, 3]


def test_examined_mailbox_and_no_mailbox_selected(conv: Conversation) -> None:
    conv.select("Drafts", examine=True)
    assert conv.send(b"a1 REPLACE 1 Drafts {30}\r\n") == [b"a1 NO [READ-ONLY] Mailbox is read-only"]
    conv.command("UNSELECT")
    message = draft(7)
    assert conv.send(b"a2 REPLACE 1 Drafts {%d+}\r\n%s\r\n" % (len(message), message)) == [
        b"a2 BAD [CLIENTBUG] No mailbox selected"]
    assert conv.send(b"a4 UID REPLACE 1 Drafts {30}\r\n") == [b"a4 BAD [CLIENTBUG] No mailbox selected"]   # no upload
    conv.select("Trash")   # empty: there is no last message either
    assert conv.send(b"a3 REPLACE * Drafts {30}\r\n") == [b"a3 BAD [CLIENTBUG] Invalid message sequence number"]
    assert [uid for uid, _subject in subjects(conv)] == [1, 2, 3]


def test_not_logged_in_is_refused_before_the_literal(tmp_path: Path) -> None:
    with Conversation(tmp_path) as unauthenticated:
        assert unauthenticated.send(b"a1 REPLACE 1 Drafts {30}\r\n") == [b"a1 BAD [CLIENTBUG] Log in first"]


def test_too_big_is_refused_before_the_literal(conv: Conversation) -> None:
    conv.select("Drafts")
    assert conv.send(b"a1 UID REPLACE 1 Drafts {4097}\r\n") == [b"a1 NO [TOOBIG] Message too big"]
    assert conv.send(b"a2 REPLACE 1 Drafts {0+}\r\n\r\n") == [b"a2 NO [CANNOT] Invalid message"]
    assert [uid for uid, _subject in subjects(conv)] == [1, 2, 3]


def test_message_expunged_by_another_session(conv: Conversation) -> None:
    """Expunged and not yet announced to this session: NO [EXPUNGEISSUED], before the upload
    when the session has heard of the expunge, else from the store; the expunge is announced
    with the NO either way. Nothing is stored."""
    conv.select("Drafts")
    folder = conv.folder("Drafts")
    conv.store.remove_messages("alice", folder.id, [2])
    conv.command("FETCH 1 UID")   # learns of it, but FETCH may not announce it: pending
    # The refusal before the literal brings the expunge with it, as a NO after one would.
    assert conv.send(b"a1 REPLACE 2 Drafts {30}\r\n") == [
        b"* 2 EXPUNGE", b"a1 NO [EXPUNGEISSUED] Some of the requested messages no longer exist"]
    conv.store.remove_messages("alice", folder.id, [3])   # now between the check and the write
    message = draft(8)
    lines = conv.send(b"a2 UID REPLACE 3 Drafts {%d+}\r\n%s\r\n" % (len(message), message))
    assert lines == [b"* 2 EXPUNGE", b"a2 NO [EXPUNGEISSUED] Some of the requested messages no longer exist"]
    assert subjects(conv) == [(1, b"Subject: draft 1")]
    assert conv.folder("Drafts").uidnext == 4


def test_quota_counts_what_the_replacement_adds(conv: Conversation) -> None:
    conv.select("Drafts")
    used_bytes, used_messages = conv.store.usage("alice")
    conv.store.update_account("alice", quota_bytes=used_bytes, quota_messages=used_messages)
    same_size = draft(8)
    assert conv.send(b"a1 APPEND Drafts {%d+}\r\n%s\r\n" % (len(same_size), same_size)) == [
        b"a1 NO [OVERQUOTA] Over quota"]
    lines = conv.send(b"a2 REPLACE 1 Drafts {%d+}\r\n%s\r\n" % (len(same_size), same_size))
    assert lines[-1] == b"a2 OK REPLACE completed"
    bigger = same_size + b"and more\r\n"
    lines = conv.send(b"a3 REPLACE 1 Drafts {%d}\r\n" % len(bigger))
    assert lines == [b"+ Ready for literal data"]   # the net change is known only to the store
    assert conv.send(bigger + b"\r\n") == [b"a3 NO [OVERQUOTA] Over quota"]
    assert [uid for uid, _subject in subjects(conv)] == [2, 3, 4]


def test_over_the_message_limit_a_draft_may_still_grow(conv: Conversation) -> None:
    """A replacement adds no message: an account already over its message limit (lowered by its
    administrator) still saves a bigger draft, where APPEND is refused."""
    conv.select("Drafts")
    conv.store.update_account("alice", quota_messages=1)
    bigger = draft(1) + b"with more text\r\n"
    assert conv.send(b"a1 APPEND Drafts {%d+}\r\n%s\r\n" % (len(bigger), bigger)) == [
        b"a1 NO [OVERQUOTA] Over quota"]
    lines = conv.send(b"a2 REPLACE 1 Drafts {%d+}\r\n%s\r\n" % (len(bigger), bigger))
    assert lines[-1] == b"a2 OK REPLACE completed"
    assert [uid for uid, _subject in subjects(conv)] == [2, 3, 4]


def test_target_deleted_meanwhile_is_trycreate(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target mailbox deleted by another session between its lookup and the write: NO
    [TRYCREATE], as if it had been missing from the start; nothing is stored or expunged."""
    conv.command("CREATE Versions")
    conv.select("Drafts")
    conv.delete_folder_before(monkeypatch, "replace", "Versions")
    message = draft(9)
    assert conv.send(b"a1 REPLACE 1 Versions {%d+}\r\n%s\r\n" % (len(message), message)) == [
        b"a1 NO [TRYCREATE] Mailbox does not exist"]
    assert [uid for uid, _subject in subjects(conv)] == [1, 2, 3]


def test_utf8_message_needs_utf8_accept(conv: Conversation) -> None:
    conv.select("Drafts")
    message = "Subject: Entwürfe\r\n\r\nx\r\n".encode()
    command = b"a1 REPLACE 1 Drafts UTF8 (~{%d+}\r\n%s)\r\n" % (len(message), message)
    assert conv.send(command) == [b"a1 BAD [CLIENTBUG] UTF8=ACCEPT must be enabled first"]
    conv.command("UNSELECT")
    conv.command("ENABLE UTF8=ACCEPT")
    conv.select("Drafts")
    assert conv.send(command.replace(b"a1", b"a2", 1))[-1] == b"a2 OK REPLACE completed"
    meta = conv.store.messages("alice", conv.folder("Drafts").id)[-1]
    assert meta.uid == 4 and conv.store.read_bodies([meta.blob]) == [message]


def test_selected_mailbox_deleted_before_an_early_refusal(conv: Conversation) -> None:
    """A refusal before the literal brings the updates, as any NO does: here that the selected
    mailbox is gone, which ends the connection after the NO (as after any command)."""
    conv.command("CREATE Scratch")
    conv.add_message("Scratch", draft(1))
    conv.select("Scratch")
    conv.store.delete_folder("alice", "Scratch")
    assert conv.send(b"a1 REPLACE 1 Nowhere {30}\r\n") == [
        b"a1 NO [TRYCREATE] Mailbox does not exist", b"* BYE Selected mailbox was deleted, closing connection"]
    assert conv.closed


TOO_MANY_FLAGS = b"NO [LIMIT] Too many flags or parts in one REPLACE (at most 20 arguments)"


def test_flags_beyond_max_args_are_refused_before_the_upload(tmp_path: Path) -> None:
    """A REPLACE's flags and CATENATE parts spend imap_max_args as APPEND's do (its message is one
    argument too): over the limit, the synchronising literal is refused NO [LIMIT] instead of
    "+", rather than the command after the upload; a message sent ahead gets the same answer once
    it is parsed. The old message stays, and the connection stays usable."""
    flags = b" ".join(b"k%d" % index for index in range(30))
    message = draft(2)
    with Conversation(tmp_path, max_args=20) as conv:
        conv.login()
        conv.add_message("Drafts", draft(1))
        conv.select("Drafts")
        assert conv.send(b"a1 REPLACE 1 Drafts (%b) {30}\r\n" % flags) == [b"a1 " + TOO_MANY_FLAGS]
        assert conv.send(b"a2 UID REPLACE 1 Drafts (%b) {30}\r\n" % flags) == [b"a2 " + TOO_MANY_FLAGS]
        ahead = b"a3 REPLACE 1 Drafts (%b) {%d+}\r\n%b\r\n" % (flags, len(message), message)
        assert conv.send(ahead) == [b"a3 " + TOO_MANY_FLAGS]
        # Ten flags, the message and eight TEXT parts are nineteen arguments; the ninth part,
        # the twentieth, is within; the tenth, the twenty-first, is refused before its octets.
        ten = b" ".join(b"k%d" % index for index in range(10))
        assert conv.send(b"a4 REPLACE 1 Drafts (%b) CATENATE (TEXT {1}\r\n" % ten) == [b"+ Ready for literal data"]
        for _ in range(8):
            assert conv.send(b"x TEXT {1}\r\n") == [b"+ Ready for literal data"]
        assert conv.send(b"x TEXT {1}\r\n") == [b"a4 " + TOO_MANY_FLAGS]
        assert [subject for _uid, subject in subjects(conv)] == [b"Subject: draft 1"]
        # Within the limit: stored.
        assert conv.send(b"a5 REPLACE 1 Drafts (%b) {%d}\r\n" % (ten, len(message))) == [b"+ Ready for literal data"]
        assert conv.send(message + b"\r\n")[-1] == b"a5 OK REPLACE completed"
        assert [subject for _uid, subject in subjects(conv)] == [b"Subject: draft 2"]
