"""Expunge tombstones are pruned past a window of mod-sequences (midb.tombstones), and what is
asked from before the window is answered with a superset: VANISHED (EARLIER) for QRESYNC, the
expunges of a session that slept through the window, EXPUNGEISSUED for a FETCH CHANGEDSINCE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

from gximap.session.condstore import intersect_ranges
from midb import tombstones
from midb.keys import folder_key
from midb.store import Store
from midb.tombstones import Vanished

MSG = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"


@pytest.fixture(autouse=True)
def small_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tombstones, "WINDOW", 12)
    monkeypatch.setattr(tombstones, "STRIDE", 4)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", fsync=False) as opened:
        opened.create_account("alice")
        yield opened


def expunge_one_by_one(store: Store, folder_id: int, uids: list[int], account: str = "alice") -> None:
    for uid in uids:
        store.store_flags(account, folder_id, [uid], "add", ["\\Deleted"])
        assert store.expunge(account, folder_id, [uid]) == [uid]


def inbox_with(store: Store, count: int) -> tuple[int, list[int]]:
    """alice's INBOX id, after ``count`` messages appended to it, and their UIDs."""
    inbox = store.get_folder("alice", "INBOX")
    assert inbox is not None
    return inbox.id, [store.append("alice", inbox.id, MSG)[1] for _ in range(count)]


def account_id(store: Store, name: str = "alice") -> int:
    account = store.get_account(name)
    assert account is not None
    return account.id


def highest(store: Store, folder_id: int) -> int:
    info = store.folder_by_id("alice", folder_id)
    assert info is not None
    return info.highestmodseq


def tombstone_count(store: Store, folder_id: int) -> int:
    """Tombstones of INBOX of alice (the floor entry not counted)."""
    shared = store._shared
    prefix = folder_key(account_id(store), folder_id)
    with shared.env.begin() as txn:
        cursor = txn.cursor(shared.dbs.tombstones)
        count = 0
        if cursor.set_range(prefix):
            for key in cursor.iternext(values=False):
                if key[:8] != prefix:
                    break
                count += not tombstones.is_floor_key(key)
    return count


def test_a_folder_keeps_the_tombstones_of_its_window_only(store: Store) -> None:
    inbox_id, uids = inbox_with(store, 40)
    start = highest(store, inbox_id)
    expunge_one_by_one(store, inbox_id, uids[:5])
    middle = highest(store, inbox_id)
    assert store.vanished_since("alice", inbox_id, start) == uids[:5]   # exact: nothing pruned yet
    expunge_one_by_one(store, inbox_id, uids[5:30])
    top = highest(store, inbox_id)
    # Two modseqs per message here (\Deleted, then the tombstone): the window holds six
    # tombstones, a stride more at most before the next prune.
    assert 6 <= tombstone_count(store, inbox_id) <= 6 + 2
    assert store.stats()["tombstones"] == tombstone_count(store, inbox_id)
    # From within the window: exact.
    recent = store.vanished_since("alice", inbox_id, top - 4)
    assert recent.exact and recent == uids[28:30]
    # From before it: a superset, every UID below the prune's UIDNEXT that is not in the folder.
    old = store.vanished_since("alice", inbox_id, middle)
    assert not old.exact and old.pruned_below == 41
    assert [uid for uid in range(1, 45) if uid in old] == uids[:30]
    assert list(old.among(uids)) == uids[:30]
    assert old.absent_ranges([(31, 40)]) == [(1, 30)]
    changed, vanished = store.changes_since("alice", inbox_id, start)
    assert changed == [] and not vanished.exact and 7 in vanished and 31 not in vanished
    # The same answer for a view, and for the column read of FETCH CHANGEDSINCE.
    assert store.view_changes_since("alice", inbox_id, middle, 40).vanished == old
    assert store.changed_columns("alice", inbox_id, middle)[1] == old
    assert store.verify() == []


def test_a_uid_past_the_prune_is_exact(store: Store) -> None:
    inbox_id, uids = inbox_with(store, 20)
    expunge_one_by_one(store, inbox_id, uids[:15])
    later = store.append("alice", inbox_id, MSG)[1]   # above the UIDNEXT of the last prune
    vanished = store.vanished_since("alice", inbox_id, 1)
    assert not vanished.exact and vanished.pruned_below <= later
    assert later not in vanished and 16 not in vanished and 3 in vanished
    expunge_one_by_one(store, inbox_id, [later])
    vanished = store.vanished_since("alice", inbox_id, 1)
    assert later in vanished


def test_a_long_history_is_pruned_a_part_per_expunge(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tombstones, "WINDOW", 10_000)   # as an index from before pruning
    inbox_id, uids = inbox_with(store, 40)
    expunge_one_by_one(store, inbox_id, uids[:30])
    assert tombstone_count(store, inbox_id) == 30
    monkeypatch.setattr(tombstones, "WINDOW", 4)
    monkeypatch.setattr(tombstones, "PRUNE_AT_MOST", 8)
    expunge_one_by_one(store, inbox_id, [uids[30]])
    assert tombstone_count(store, inbox_id) == 31 - 8
    old = store.vanished_since("alice", inbox_id, 1)
    assert not old.exact and [uid for uid in uids if uid in old] == uids[:31]
    # Exact above the floor: the tombstones the part left.
    shared = store._shared
    with shared.env.begin() as txn:
        floor, _ceiling = tombstones.read_floor(txn, shared.dbs.tombstones, account_id(store), inbox_id)
    assert store.vanished_since("alice", inbox_id, floor) == uids[8:31]
    expunge_one_by_one(store, inbox_id, [uids[31]])
    expunge_one_by_one(store, inbox_id, [uids[32]])
    assert tombstone_count(store, inbox_id) == 33 - 24
    assert store.verify() == []


def test_verify_checks_and_repairs_the_floor(store: Store) -> None:
    inbox_id, uids = inbox_with(store, 20)
    expunge_one_by_one(store, inbox_id, uids[:15])
    assert store.verify() == []
    shared = store._shared
    alice = account_id(store)
    with shared.env.begin() as txn:
        floor, ceiling = tombstones.read_floor(txn, shared.dbs.tombstones, alice, inbox_id)
    assert floor > 0 and ceiling == 21
    # A floor beyond the folder's counters (damage): reported, and repair raises the counters,
    # which never go back below what a client may have been told.
    with shared.env.begin(write=True) as txn:
        txn.put(tombstones.floor_key(alice, inbox_id), tombstones._FLOOR.pack(10_000, 500),
                db=shared.dbs.tombstones)
    problems = store.verify()
    assert len(problems) == 1 and "pruned up to modseq 10000" in problems[0]
    store.verify(repair=True)
    after = store.folder_by_id("alice", inbox_id)
    assert after is not None and after.highestmodseq == 10_000 and after.uidnext == 500
    assert store.verify() == []


def test_vanished_answers() -> None:
    exact = Vanished([3, 7])
    assert exact.exact and 3 in exact and 4 not in exact and exact == [3, 7]
    assert list(exact.among([1, 3, 5, 7])) == [3, 7] and list(Vanished([]).among([1, 2])) == []
    superset = Vanished([12], pruned_below=10, present=[2, 5, 6])
    assert not superset.exact and superset != [12]
    assert [uid for uid in range(0, 14) if uid in superset] == [1, 3, 4, 7, 8, 9, 12]
    assert superset.absent_ranges([(2, 2), (5, 6), (11, 11)]) == [(1, 1), (3, 4), (7, 9)]
    assert superset.absent_ranges([]) == [(1, 9)]
    assert superset.absent_ranges([(1, 20)]) == []


def test_intersect_ranges() -> None:
    assert intersect_ranges([(1, 5), (8, 20)], [(3, 9), (10, 12), (19, 30)]) == [(3, 5), (8, 12), (19, 20)]
    assert intersect_ranges([(1, 4), (5, 9)], [(1, 100)]) == [(1, 9)]   # adjacent: joined
    assert intersect_ranges([], [(1, 2)]) == [] and intersect_ranges([(1, 2)], [(3, 4)]) == []


# -- what clients are told ------------------------------------------------------------------------


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        for _ in range(30):
            conversation.add_message()
        conversation.store.claim_recent_range("alice", conversation.folder("INBOX").id)
        yield conversation


def test_qresync_from_before_the_window_gets_a_superset(conv: Conversation) -> None:
    inbox = conv.folder("INBOX")
    expunge_one_by_one(conv.store, inbox.id, list(range(1, 6)))
    known = conv.folder("INBOX").highestmodseq   # the client saw 1:5 go
    expunge_one_by_one(conv.store, inbox.id, list(range(6, 21)))
    assert not conv.store.vanished_since("alice", inbox.id, known).exact
    uidvalidity = inbox.uidvalidity
    conv.command("ENABLE QRESYNC")

    def vanished_lines(command: str) -> list[bytes]:
        lines = conv.send(b"a " + command.encode() + b"\r\n")
        assert lines[-1].startswith(b"a OK ")
        return [line for line in lines if line.startswith(b"* VANISHED")]

    # Exact would be 6:20; the client is told of 1:5 again, which it ignores.
    assert vanished_lines(f"SELECT INBOX (QRESYNC ({uidvalidity} {known}))") == [b"* VANISHED (EARLIER) 1:20"]
    assert vanished_lines(f"UID FETCH 1:* FLAGS (CHANGEDSINCE {known} VANISHED)") == [
        b"* VANISHED (EARLIER) 1:20"]
    assert vanished_lines(f"UID FETCH 4:8,25 FLAGS (CHANGEDSINCE {known} VANISHED)") == [
        b"* VANISHED (EARLIER) 4:8"]
    # The client's known UIDs narrow the superset; UIDs it holds are never in it.
    assert vanished_lines(f"SELECT INBOX (QRESYNC ({uidvalidity} {known} 6:30))") == [
        b"* VANISHED (EARLIER) 6:20"]
    # From within the window, exact.
    top = conv.folder("INBOX").highestmodseq
    assert vanished_lines(f"SELECT INBOX (QRESYNC ({uidvalidity} {top - 3}))") == [b"* VANISHED (EARLIER) 19:20"]


def test_a_session_that_slept_through_the_window_is_told_every_expunge(conv: Conversation) -> None:
    conv.select()
    inbox = conv.folder("INBOX")
    expunge_one_by_one(conv.store, inbox.id, [2, 4, *range(10, 25)])
    view = conv.session.selected
    assert view is not None
    assert not conv.store.vanished_since("alice", inbox.id, view.modseq).exact
    lines = conv.send(b"a1 NOOP\r\n")
    assert lines[-1] == b"a1 OK NOOP completed"
    expunges = [int(line.split()[1]) for line in lines if line.endswith(b" EXPUNGE")]
    # Highest first, so that each message number is still the one the client holds.
    assert expunges == [*range(24, 9, -1), 4, 2]
    assert conv.send(b"a2 UID SEARCH ALL\r\n")[0] == b"* SEARCH 1 3 5 6 7 8 9 25 26 27 28 29 30"


def test_fetch_changedsince_by_number_from_before_the_window(conv: Conversation) -> None:
    conv.command("ENABLE CONDSTORE")
    conv.select()
    inbox = conv.folder("INBOX")
    since = conv.folder("INBOX").highestmodseq
    expunge_one_by_one(conv.store, inbox.id, list(range(10, 16)))
    for _ in range(10):   # flag changes, then an expunge outside the set: 10:15's tombstones go
        conv.store.store_flags("alice", inbox.id, [1], "add", ["\\Flagged"])
        conv.store.store_flags("alice", inbox.id, [1], "remove", ["\\Flagged"])
    conv.store.store_flags("alice", inbox.id, [1], "add", ["\\Flagged"])
    expunge_one_by_one(conv.store, inbox.id, [30])
    assert conv.store.vanished_since("alice", inbox.id, since) != [30]
    lines = conv.send(b"a1 FETCH 1:15 (FLAGS) (CHANGEDSINCE %d)\r\n" % since)
    assert lines[0].startswith(b"* 1 FETCH (MODSEQ (") and lines[0].endswith(b"FLAGS (\\Flagged))")
    assert lines[-1] == b"a1 NO [EXPUNGEISSUED] Some of the requested messages no longer exist"


def test_a_folder_restored_from_an_older_export_tells_qresync_clients_what_went(conv: Conversation,
                                                                                  tmp_path: Path) -> None:
    """A client synchronised with Project holding UIDs 1-5; the folder is deleted, and restored
    from an export made when it held 1-3 (midb import). Its UIDVALIDITY comes back, so the
    client resynchronises with QRESYNC: it must be told that 4 and 5 are gone (the deletion left
    no tombstones: the superset from the floor the import raised), and new mail gets UID 6."""
    from midb.exporter import export_maildir_tree
    from midb.importer import import_maildir_tree

    conv.store.create_folder("alice", "Project")
    for _ in range(3):
        conv.add_message("Project")
    export_maildir_tree(conv.store, "alice", tmp_path / "backup")
    for _ in range(2):
        conv.add_message("Project")
    held = conv.folder("Project")
    conv.store.delete_folder("alice", "Project")
    import_maildir_tree(conv.store, "alice", tmp_path / "backup")
    conv.command("ENABLE QRESYNC")
    lines = conv.send(f"a SELECT Project (QRESYNC ({held.uidvalidity} {held.highestmodseq} 1:5))\r\n".encode())
    assert lines[-1].startswith(b"a OK ")
    assert [line for line in lines if line.startswith(b"* VANISHED")] == [b"* VANISHED (EARLIER) 4:5"]
    assert b"* OK [UIDNEXT 6] Predicted next UID" in lines
