"""What an idle session holds: the usually empty per-session and per-view sets are one shared
frozenset until a first member (gximap.session.base.with_uids), so that 10,000 sessions in IDLE
do not each carry half a dozen empty set() objects of 216 bytes."""

from __future__ import annotations

import os
import subprocess
import sys
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


# Run in a fresh interpreter: the names a class's instances share their key table for are the
# first ones any instance was given, and tests elsewhere monkeypatch sessions' methods.
_SESSION_DICT_SIZE = r'''
import sys, tempfile
sys.path.insert(0, "tests")
from conversation import Conversation
with tempfile.TemporaryDirectory() as d:
    busy = Conversation(d)
    busy.greeting(); busy.login("alice"); busy.command("ENABLE QRESYNC"); busy.select("INBOX")
    busy.add_message("INBOX"); busy.add_message("INBOX")
    busy.command("NOTIFY SET (SELECTED (MessageNew MessageExpunge FlagChange))")
    busy.command("SEARCH RETURN (UPDATE) ALL")
    busy.command("STORE 1 +FLAGS (\\Deleted $Seen)"); busy.command("EXPUNGE")
    busy.send(b"b FROB\r\n"); busy.command("NOTIFY NONE")
    busy.send(b"i IDLE\r\n"); busy.add_message("INBOX"); busy.send(b"DONE\r\n")
    busy.command("UNAUTHENTICATE")
    idle = Conversation(context=busy.ctx)
    idle.greeting(); idle.login("alice"); idle.select("INBOX"); idle.send(b"i IDLE\r\n")
    print(sys.getsizeof(busy.session.__dict__), sys.getsizeof(idle.session.__dict__))
'''


def test_session_attributes_stay_in_the_shared_key_table() -> None:
    """An ImapSession's attribute names fit CPython's shared key table (at most 29 names in
    3.11), else every session gets a dict of its own of about 1.6 KiB: new state goes into
    the slotted groups (_Flow, _Owed, _IdleClock, _UserSlot) or per-feature objects."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", _SESSION_DICT_SIZE], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    busy, idle = (int(size) for size in done.stdout.split())
    assert busy < 800 and idle < 800, done.stdout
