"""What an idle session holds: the usually empty per-session and per-view sets are one shared
frozenset until a first member (gximap.session.base.with_uids), so that 10,000 sessions in IDLE
do not each carry half a dozen empty set() objects of 216 bytes."""

from __future__ import annotations

from pathlib import Path

from conversation import Conversation

from gximap.session.base import NO_UIDS, NOTHING_ENABLED, with_uids, without_uids


def _idling(tmp_path: Path) -> Conversation:
    conv = Conversation(tmp_path)
    conv.greeting()
    conv.login("alice")
    conv.select("INBOX")
    conv.send(b"i IDLE\r\n")
    return conv


def test_an_idle_selected_session_holds_no_empty_set_of_its_own(tmp_path: Path) -> None:
    conv = _idling(tmp_path)
    session = conv.session
    view = session.selected
    assert view is not None
    assert session.enabled is NOTHING_ENABLED
    assert view.recent is NO_UIDS and view.pending_expunge is NO_UIDS and view._unsent_flags is NO_UIDS
    assert view.contexts.arrived is NO_UIDS and view.contexts.changed is NO_UIDS
    other = _idling(tmp_path / "other")
    assert other.session.selected is not None
    assert view.announced_keywords == frozenset()
    assert view.announced_keywords is other.session.selected.announced_keywords


def test_the_first_member_gets_a_set_of_its_own_and_the_shared_one_stays_empty() -> None:
    held = with_uids(NO_UIDS, [3, 1])
    assert held == {1, 3} and isinstance(held, set) and not NO_UIDS
    assert with_uids(held, [5]) is held and held == {1, 3, 5}
    assert with_uids(NO_UIDS, []) is NO_UIDS
    assert without_uids(held, [1, 5]) is held and held == {3}
    assert without_uids(held, [3]) is NO_UIDS
    assert without_uids(NO_UIDS, [7]) is NO_UIDS


def test_enable_replaces_the_shared_empty_set(tmp_path: Path) -> None:
    conv = Conversation(tmp_path)
    conv.greeting()
    conv.login("alice")
    conv.command("ENABLE QRESYNC")
    assert conv.session.enabled == {"QRESYNC", "CONDSTORE"} and not NOTHING_ENABLED
    other = Conversation(context=conv.ctx)
    other.greeting()
    other.login("alice")
    assert other.session.enabled is NOTHING_ENABLED
