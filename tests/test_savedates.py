"""Save dates (midb.savedates, schema 9): kept with each message, each copy its own, expiry by them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from store_helpers import folder_id, store_with_alice

from midb import env as midb_env
from midb import savedates
from midb.keys import change_key
from midb.store import Store

MESSAGE = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n"


class Clock:
    """midb.savedates.now, set by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: int = 1_700_000_000) -> None:
        self.now = start
        monkeypatch.setattr(savedates, "now", lambda: self.now)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    with store_with_alice(tmp_path / "store") as opened:
        yield opened


def test_a_message_is_saved_now_whatever_its_internal_date(store: Store, clock: Clock) -> None:
    inbox = folder_id(store)
    _validity, uid = store.append("alice", inbox, MESSAGE, internaldate=1_000_000_000)
    assert store.save_dates("alice", inbox, [uid]) == {uid: clock.now}
    assert store.get_messages("alice", inbox, [uid])[0].internaldate == 1_000_000_000


def test_a_copy_and_a_move_get_their_own_save_date_and_the_original_keeps_its(store: Store, clock: Clock) -> None:
    inbox, trash = folder_id(store), folder_id(store, "Trash")
    saved = clock.now
    _validity, first = store.append("alice", inbox, MESSAGE)
    _validity, second = store.append("alice", inbox, MESSAGE)
    clock.now += 3600
    _validity, copied = store.copy("alice", inbox, [first], trash)
    clock.now += 3600
    _validity, moved = store.move("alice", inbox, [second], trash)
    assert store.save_dates("alice", inbox, [first, second]) == {first: saved}
    assert store.save_dates("alice", trash, [copied[0][1], moved[0][1]]) == {
        copied[0][1]: saved + 3600, moved[0][1]: saved + 7200}


def test_save_dates_go_with_their_messages_and_survive_flag_changes(store: Store, clock: Clock) -> None:
    inbox = folder_id(store)
    uids = [store.append("alice", inbox, MESSAGE, flags=["\\Deleted"])[1] for _ in range(3)]
    saved = clock.now
    clock.now += 60
    store.store_flags("alice", inbox, uids[1:], "add", ("\\Seen", "$Label1"))
    store.store_flags("alice", inbox, uids[2:], "remove", ("\\Deleted",))
    store.expunge("alice", inbox, uids[:1])
    assert store.save_dates("alice", inbox, uids) == {uid: saved for uid in uids[1:]}
    store.expunge("alice", inbox)
    assert store.save_dates("alice", inbox, uids) == {uids[2]: saved}
    assert store.verify() == []


def test_renaming_inbox_carries_the_save_dates(store: Store, clock: Clock) -> None:
    inbox = folder_id(store)
    uids = [store.append("alice", inbox, MESSAGE)[1] for _ in range(2)]
    saved = clock.now
    clock.now += 60
    store.rename_folder("alice", "INBOX", "Before")
    assert store.save_dates("alice", folder_id(store, "Before"), uids) == {uid: saved for uid in uids}
    assert store.save_dates("alice", inbox, uids) == {}


def test_many_save_dates_are_read_in_one_pass(store: Store, clock: Clock) -> None:
    inbox = folder_id(store)
    uids = []
    for _ in range(40):
        uids.append(store.append("alice", inbox, MESSAGE)[1])
        clock.now += 1
    wanted = uids[5:35:2]  # fewer than a pass would read: looked up one by one
    assert store.save_dates("alice", inbox, wanted) == {uid: 1_700_000_000 + uid - 1 for uid in wanted}
    assert store.save_dates("alice", inbox, reversed(uids)) == {uid: 1_700_000_000 + uid - 1 for uid in uids}
    assert store.save_dates("alice", inbox, [*uids, 999]) == {uid: 1_700_000_000 + uid - 1 for uid in uids}


def test_expire_removes_the_messages_saved_before_the_cutoff_oldest_first(store: Store, clock: Clock) -> None:
    trash = folder_id(store, "Trash")
    uids = []
    for _ in range(5):
        uids.append(store.append("alice", trash, MESSAGE, flags=["\\Flagged"])[1])
        clock.now += 86400
    cutoff = 1_700_000_000 + 2 * 86400  # the first two are older
    assert store.expire("alice", trash, cutoff, limit=1) == uids[:1]
    assert store.expire("alice", trash, cutoff) == uids[1:2]
    assert store.expire("alice", trash, cutoff) == []
    assert store.uids("alice", trash) == uids[2:]
    assert store.usage("alice")[1] == 3
    folder = store.folder_by_id("alice", trash)
    assert folder is not None and folder.messages == 3
    _modseq_now, vanished = store.changes_since("alice", trash, 0)
    assert vanished == uids[:2]
    assert store.verify() == []


def test_a_message_saved_while_the_clock_was_ahead_holds_back_no_other(store: Store, clock: Clock) -> None:
    """Save dates grow with UIDs only while the clock does: one saved with the clock years
    ahead, then the clock put right; the old messages after it still expire (review58)."""
    trash = folder_id(store, "Trash")
    first = store.append("alice", trash, MESSAGE)[1]
    clock.now += 5 * 365 * 86400  # ahead
    ahead = store.append("alice", trash, MESSAGE)[1]
    clock.now -= 5 * 365 * 86400  # put right
    after = store.append("alice", trash, MESSAGE)[1]
    clock.now += 40 * 86400
    assert store.expired_uids("alice", trash, clock.now - 30 * 86400) == [first, after]
    assert store.expire("alice", trash, clock.now - 30 * 86400) == [first, after]
    assert store.uids("alice", trash) == [ahead]


def test_a_modseq_entry_restored_by_repair_is_saved_at_the_repair(store: Store, clock: Clock) -> None:
    """Its save date is lost with it; an empty one would count as the store's creation and
    expire the message too early (review58): the repair's time instead."""
    trash = folder_id(store, "Trash")
    uid = store.append("alice", trash, MESSAGE)[1]
    (meta,) = store.get_messages("alice", trash, [uid])
    with store._shared.env.begin(write=True) as txn:
        txn.delete(change_key(store.account_id("alice"), trash, meta.modseq, uid), db=store._shared.dbs.modseqs)
    clock.now += 86400
    assert store.verify() != []
    store.verify(repair=True)
    assert store.verify() == []
    assert store.save_dates("alice", trash, [uid]) == {uid: clock.now}
    assert store.expire("alice", trash, clock.now - 3600) == []


def _downgrade_to_schema_8(path: Path) -> None:
    """Make the store look as written by schema 8: no save dates."""
    environment = lmdb.open(str(path / "index"), max_dbs=64)
    try:
        with environment.begin(write=True) as txn:
            modseqs = environment.open_db(b"modseqs", txn=txn)
            for key in list(txn.cursor(modseqs).iternext(values=False)):
                txn.put(key, b"", db=modseqs)
            meta = environment.open_db(b"meta", txn=txn)
            txn.delete(savedates.SINCE_KEY, db=meta)
            txn.put(b"schema", (8).to_bytes(4, "big"), db=meta)
    finally:
        environment.close()


def test_an_upgraded_store_knows_no_save_date_of_its_old_messages(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        trash = folder_id(store, "Trash")
        old = store.append("alice", trash, MESSAGE, internaldate=1_000_000_000)[1]
    _downgrade_to_schema_8(path)
    with Store(path, readonly=True) as readonly:
        assert readonly.save_dates("alice", trash, [old]) == {}  # older than schema 9, read as it is
    clock.now += 86400
    upgraded_at = clock.now
    with Store(path, fsync=False) as store:
        with store._shared.read() as txn:
            assert txn.get(b"schema", db=store._shared.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")
            assert savedates.since(txn, store._shared.dbs) == upgraded_at
        assert store.save_dates("alice", trash, [old]) == {}
        clock.now += 86400
        new = store.append("alice", trash, MESSAGE)[1]
        # Unknown counts as saved at the upgrade: not expired by its internal date (2001) ...
        assert store.expire("alice", trash, upgraded_at) == []
        # ... but once a period has passed since the upgrade.
        assert store.expire("alice", trash, upgraded_at + 1) == [old]
        assert store.uids("alice", trash) == [new]
        assert store.verify() == []


def test_expire_checks_its_candidates_again_under_the_write_lock(store: Store, clock: Clock,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidates are found in a read snapshot; one moved away before the write (a client
    restoring it from Trash) is not removed from where it went, nor counted."""
    trash, inbox = folder_id(store, "Trash"), folder_id(store, "INBOX")
    uids = [store.append("alice", trash, MESSAGE)[1] for _ in range(3)]
    clock.now += 40 * 86400
    write = store._write
    restored: list[int] = []

    def restoring_first(job, shared, **options):  # type: ignore[no-untyped-def]
        if not restored:
            restored.append(1)
            store.move("alice", trash, [uids[0]], inbox)
        return write(job, shared, **options)

    monkeypatch.setattr(store, "_write", restoring_first)
    assert store.expire("alice", trash, clock.now - 30 * 86400) == uids[1:]
    monkeypatch.undo()
    assert store.uids("alice", inbox) == [1] and store.uids("alice", trash) == []
    assert store.verify() == []
