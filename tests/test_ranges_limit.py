"""imap_max_ranges: the number of elements (numbers and ranges) one sequence set may have.

A longer set gets a tagged BAD and the session carries on; the directive reaches the session
through gximap.daemon.settings_from_config."""

from __future__ import annotations

from pathlib import Path

import pytest
from conversation import Conversation

from gximap.config import ConfigError, config_from_text
from gximap.daemon import settings_from_config
from gximap.imap.parser import DEFAULT_MAX_RANGES
from gximap.session.base import State


def sequence_set(count: int) -> bytes:
    """``count`` elements, alternating single numbers and ranges."""
    return b",".join(b"1" if index % 2 else b"1:*" for index in range(count))


def test_a_sequence_set_over_the_limit_gets_bad_and_the_session_continues(tmp_path: Path) -> None:
    with Conversation(tmp_path, max_ranges=16) as conv:
        conv.login()
        conv.add_message(flags=["\\Seen"])
        conv.select()
        at_limit, over_limit = sequence_set(16).decode(), sequence_set(17).decode()
        conv.script(f"""
            C: r1 FETCH {at_limit} (FLAGS)
            S: * 1 FETCH (FLAGS (\\Seen \\Recent))
            S: r1 OK FETCH completed
            C: r2 FETCH {over_limit} (FLAGS)
            S: r2 BAD [CLIENTBUG] Parse error: Too many sequence set elements
            C: r3 UID STORE {over_limit} +FLAGS (\\Flagged)
            S: r3 BAD [CLIENTBUG] Parse error: Too many sequence set elements
            C: r4 SEARCH {over_limit}
            S: r4 BAD [CLIENTBUG] Parse error: Too many sequence set elements
            C: r5 NOOP
            S: r5 OK NOOP completed
            C: r6 UID SEARCH {at_limit}
            S: * SEARCH 1
            S: r6 OK SEARCH completed
        """)
        assert conv.session.state is State.SELECTED
        # The refused STORE changed nothing.
        assert conv.store.messages("alice", conv.folder("INBOX").id)[0].flags == ("\\Seen",)


def test_the_limit_can_be_raised_above_the_default(tmp_path: Path) -> None:
    count = DEFAULT_MAX_RANGES + 10
    with Conversation(tmp_path, max_ranges=count, max_line=256 * 1024) as conv:
        conv.login()
        conv.add_message()
        conv.select()
        assert conv.send(b"r1 FETCH " + sequence_set(count) + b" (UID)\r\n") == [
            b"* 1 FETCH (UID 1)", b"r1 OK FETCH completed"]
        assert conv.send(b"r2 FETCH " + sequence_set(count + 1) + b" (UID)\r\n") == [
            b"r2 BAD [CLIENTBUG] Parse error: Too many sequence set elements"]


def test_directive_default_minimum_and_settings() -> None:
    assert settings_from_config(config_from_text("")).max_ranges == DEFAULT_MAX_RANGES
    assert settings_from_config(config_from_text("imap_max_ranges = 100\n")).max_ranges == 100
    with pytest.raises(ConfigError):
        config_from_text("imap_max_ranges = 15\n")
