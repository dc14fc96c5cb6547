"""Wakeups only where they do something: a session is woken for store changes only in IDLE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        yield conversation


def test_own_writes_and_others_changes_do_not_wake_a_session_outside_idle(conv: Conversation) -> None:
    conv.login()
    conv.select()
    uid = conv.add_message()
    assert conv.wakes == 0  # another writer's change: reported by the next command's sync
    conv.command(f"UID STORE {uid} +FLAGS (\\Flagged)")
    conv.command("APPEND INBOX {5+}\r\nhello")
    assert conv.wakes == 0  # the session's own writes: nothing for wakeup() to do
    assert conv.send(b"a1 IDLE\r\n")[0] == b"+ idling"
    conv.add_message()
    assert conv.wakes == 1  # in IDLE, a change to the selected mailbox wakes it
    assert any(line.endswith(b" EXISTS") for line in conv.wake())
