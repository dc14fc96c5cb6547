"""FETCH of UID / FLAGS / MODSEQ only (the column path of gximap.session.commands.fetch): the same
bytes as the general path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

from gximap.session.commands import fetch as fetch_command

MSG = b"From: bob@example.org\r\nSubject: test\r\n\r\nhello\r\n"

COMMANDS = [
    "FETCH 1:* FLAGS",
    "FETCH 1:* (FLAGS UID)",
    "UID FETCH 1:* (FLAGS)",
    "UID FETCH 1:* (UID FLAGS)",
    "UID FETCH 2:* UID",
    "FETCH 2,4:6 (MODSEQ FLAGS)",
    "UID FETCH 3:5,9 (FLAGS MODSEQ UID)",
    "FETCH 1:* (UID)",
    "UID FETCH 100:200 FLAGS",
    "UID FETCH 7:* FLAGS",
]


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        flags = [(), ("\\Seen",), ("\\Seen", "$Work"), ("\\Flagged", "\\Answered"), ("later",), ("\\Draft",)]
        for number in range(12):
            conversation.add_message(data=MSG, flags=flags[number % len(flags)])
        yield conversation


def both_paths(conv: Conversation, monkeypatch: pytest.MonkeyPatch, command: str) -> tuple[list[bytes], list[bytes]]:
    """(responses of the row path, responses of the general path) to the same command."""
    fast = conv.command(command)
    with monkeypatch.context() as patch:
        patch.setattr(fetch_command, "RECORD_ITEMS", frozenset())   # every FETCH takes the general path
        slow = conv.command(command)
    return fast, slow


@pytest.mark.parametrize("rev2", [False, True])
def test_row_path_renders_exactly_like_the_general_path(conv: Conversation, monkeypatch: pytest.MonkeyPatch,
                                                        rev2: bool) -> None:
    if rev2:
        conv.command("ENABLE IMAP4rev2")
    conv.command("ENABLE CONDSTORE")   # else the first MODSEQ item would announce HIGHESTMODSEQ
    conv.select()
    conv.add_message(data=MSG, flags=("\\Seen",))   # \Recent for this session after the NOOP
    conv.command("NOOP")
    conv.store.store_flags("alice", conv.folder("INBOX").id, [2, 4], "add", ["$Later"])  # other session
    conv.command("NOOP")
    for command in COMMANDS:
        fast, slow = both_paths(conv, monkeypatch, command)
        assert fast[-1].split(b" ", 1)[1] == slow[-1].split(b" ", 1)[1]
        assert fast[:-1] == slow[:-1], command
    assert any(b"\\Recent" in line for line in both_paths(conv, monkeypatch, "FETCH 13 FLAGS")[0]) != rev2


def test_modseq_is_reported_and_tracked_for_qresync(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    conv.command("ENABLE QRESYNC")
    conv.select()
    fast, slow = both_paths(conv, monkeypatch, "UID FETCH 1:* (FLAGS MODSEQ)")
    assert fast[:-1] == slow[:-1]
    assert all(b"MODSEQ (" in line for line in fast[:-1]) and len(fast) == 13


def test_messages_expunged_by_another_session(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    conv.select()
    store = conv.store
    folder = conv.folder("INBOX").id
    store.store_flags("alice", folder, [3, 5], "add", ["\\Deleted"])
    twin = conv.twin()    # UID FETCH announces the expunges after its answer: one run each
    store.expunge("alice", folder)   # not announced to either session yet
    fast = twin.command("UID FETCH 1:* FLAGS")
    with monkeypatch.context() as patch:
        patch.setattr(fetch_command, "RECORD_ITEMS", frozenset())   # the general path
        slow = conv.command("UID FETCH 1:* FLAGS")
    assert fast[:-1] == slow[:-1] and len(fast) == 13
    assert fast[-3:-1] == [b"* 5 EXPUNGE", b"* 3 EXPUNGE"]
    assert fast[-1].split(b" ", 1)[1] == slow[-1].split(b" ", 1)[1] == b"OK FETCH completed"
    store.store_flags("alice", folder, [6, 9], "add", ["\\Deleted"])
    store.expunge("alice", folder)
    tag = conv.next_tag()
    lines = conv.send(f"{tag} FETCH 1:* FLAGS\r\n".encode())
    assert lines[-1].startswith(f"{tag} NO [EXPUNGEISSUED]".encode())
    assert [line.split(b" ")[1] for line in lines[:-1]] == [b"%d" % n for n in (1, 2, 3, 5, 6, 8, 9, 10)]


def test_large_folder_goes_out_in_few_chunks(conv: Conversation) -> None:
    folder = conv.folder("INBOX").id
    conv.store.append_many("alice", folder, [(MSG, ("\\Seen",), None, 0)] * (fetch_command.COLUMN_BATCH + 100))
    conv.select()
    conv.command("UNSELECT")
    conv.select()   # nothing \\Recent any more
    session = conv.session
    session.data_received(b"a1 UID FETCH 1:* (UID FLAGS)\r\n")
    session.process(16)
    chunks = []
    for _ in range(100):
        item = session.next_output()
        if item is None:
            break
        assert isinstance(item, bytes | memoryview)
        chunks.append(bytes(item))
    assert len(chunks) == 3 and chunks[-1] == b"a1 OK FETCH completed\r\n"
    lines = b"".join(chunks[:-1]).split(b"\r\n")[:-1]
    assert len(lines) == fetch_command.COLUMN_BATCH + 112
    assert lines[-1] == b"* %d FETCH (UID %d FLAGS (\\Seen))" % (len(lines), len(lines))
