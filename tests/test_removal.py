"""Body files released by a write are removed by threads after it answers (midb.removal); their
ids are recorded in the same transaction, so a process that dies first leaves records, which the
next store opened for writing takes over, and verify counts such files as awaiting removal."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
from store_helpers import FailingSync, body_files, folder_id, store_with_alice

from midb import removal
from midb import shards as shards_of
from midb.env import SharedEnv
from midb.errors import NotDurable
from midb.removal import BodyRemover
from midb.store import Store

REPO = str(Path(__file__).resolve().parent.parent)
MSG = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"


def recorded(store: Store) -> list[str]:
    with store._env.read() as txn:
        return sorted(blob_raw.hex() for blob_raw in removal.recorded(txn, store._shared.dbs))


class Recorder:
    """An unlink and a forget that log what they are asked, with an unlink that can fail or wait."""

    def __init__(self) -> None:
        self.unlinked: list[str] = []
        self.unlinkers: set[str] = set()
        self.forgotten: list[list[str]] = []
        self.failing: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)   # released by each unlink as it starts

    def unlink(self, blob: str) -> None:
        self.entered.release()
        self.gate.wait(10)
        if blob in self.failing:
            raise PermissionError(13, "Permission denied")
        self.unlinked.append(blob)
        self.unlinkers.add(threading.current_thread().name + str(threading.get_ident()))

    def forget(self, blobs: list[str]) -> None:
        self.forgotten.append(list(blobs))


def test_the_remover_forgets_only_what_it_removed() -> None:
    recorder = Recorder()
    remover = BodyRemover(recorder.unlink, recorder.forget)
    recorder.failing.add("b")
    remover.remove(["a", "b", "c"])
    assert remover.wait(10)
    assert sorted(recorder.unlinked) == ["a", "c"]
    # "b" keeps its record: the next open tries again
    assert sorted(blob for batch in recorder.forgotten for blob in batch) == ["a", "c"]
    assert remover.pending() == 0
    remover.close()


def test_the_remover_shares_the_queue_between_its_threads_in_batches() -> None:
    recorder = Recorder()
    remover = BodyRemover(recorder.unlink, recorder.forget)
    names = [f"{number:04d}" for number in range(removal.UNLINKERS * removal.BATCH + 10)]
    recorder.gate.clear()   # the first thread holds its batch: the others must take the next ones
    remover.remove(names)
    threading.Timer(0.2, recorder.gate.set).start()
    assert remover.wait(10)
    assert sorted(recorder.unlinked) == names and len(recorder.unlinkers) == removal.UNLINKERS > 1
    batches = [len(batch) for batch in recorder.forgotten]
    assert sum(batches) == len(names) and max(batches) == removal.BATCH
    assert sorted(blob for batch in recorder.forgotten for blob in batch) == names
    # each thread takes its share of what the others do not hold, at most BATCH
    assert sorted(batches) == [10] + [removal.BATCH] * removal.UNLINKERS
    remover.close()


def test_close_waits_for_the_queue_then_gives_up_leaving_the_rest() -> None:
    recorder = Recorder()
    remover = BodyRemover(recorder.unlink, recorder.forget)
    recorder.gate.clear()
    remover.remove(["a", "b"])
    assert not remover.wait(0.05) and remover.pending() == 2
    threading.Timer(0.1, recorder.gate.set).start()
    remover.close(timeout=10)
    assert sorted(recorder.unlinked) == ["a", "b"]   # the queue was finished within the wait

    stuck = Recorder()
    remover = BodyRemover(stuck.unlink, stuck.forget)
    stuck.gate.clear()
    names = [f"{number:02d}" for number in range(2 * removal.UNLINKERS)]
    remover.remove(names)   # each thread takes two files: the first 00 and 01, the next 02 and 03...
    for _ in range(removal.UNLINKERS):   # every thread holds a file
        assert stuck.entered.acquire(timeout=10)
    threading.Timer(2.0, stuck.gate.set).start()
    remover.close(timeout=0.05)   # gives up: each thread finishes the file in hand, the rest left recorded
    assert stuck.unlinked == []   # close was not held up by the files in hand
    deadline = time.monotonic() + 10
    while remover.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    # ... and leave the store alone: the records of the files in hand stay, for the next open to forget
    in_hand = names[::2]
    assert sorted(stuck.unlinked) == in_hand and stuck.forgotten == []
    remover.remove(["later"])     # after close: left to the records
    assert remover.pending() == 0 and sorted(stuck.unlinked) == in_hand


def test_an_expunge_records_its_files_and_the_records_go_with_them(tmp_path: Path) -> None:
    with store_with_alice(tmp_path / "store") as store:
        inbox = folder_id(store)
        uids = [store.append("alice", inbox, MSG + bytes([65 + n]))[1] for n in range(3)]
        blobs = sorted(meta.blob for meta in store.messages("alice", inbox))
        assert store._remover is not None
        real_unlink, gate = store._remover._unlink, threading.Event()

        def unlink_when_let(item: tuple[int, str]) -> None:
            gate.wait(10)
            real_unlink(item)

        store._remover._unlink = unlink_when_let
        store.store_flags("alice", inbox, uids[:2], "add", ["\\Deleted"])
        assert store.expunge("alice", inbox) == uids[:2]
        gone = sorted(set(blobs) - {meta.blob for meta in store.messages("alice", inbox)})
        assert recorded(store) == gone and store.stats()["bodies_awaiting_removal"] == 2
        assert store.verify() == []   # awaiting removal: no orphans
        gate.set()
        assert body_files(store) == sorted(set(blobs) - set(gone))
        assert recorded(store) == [] and store.removals_pending() == 0


def test_inline_bodies_leave_no_record(tmp_path: Path) -> None:
    with store_with_alice(tmp_path / "store", inline_limit=4096) as store:
        inbox = folder_id(store)
        store.append("alice", inbox, MSG, flags=["\\Deleted"])
        assert store.expunge("alice", inbox) == [1]
        assert recorded(store) == [] and store.removals_pending() == 0


DIES_AFTER_EXPUNGE = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[2])
    from midb.store import Store

    store = Store(sys.argv[1], fsync=True)
    store._remover.remove = lambda blobs: None   # dies before its thread removes anything
    inbox = store.get_folder("alice", "INBOX").id
    store.store_flags("alice", inbox, store.uids("alice", inbox), "add", ["\\\\Deleted"])
    print(len(store.expunge("alice", inbox)), flush=True)
    os._exit(0)
""")


def test_a_process_that_dies_before_removing_leaves_records_the_next_open_takes_over(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with store_with_alice(path, fsync=True) as store:
        inbox = folder_id(store)
        for n in range(4):
            store.append("alice", inbox, MSG + bytes([65 + n]))
        blobs = sorted(meta.blob for meta in store.messages("alice", inbox))
    script = tmp_path / "writer.py"
    script.write_text(DIES_AFTER_EXPUNGE, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(path), REPO], capture_output=True, timeout=60, check=True)
    assert done.stdout == b"4\n"

    with Store(path, fsync=False, take_over_removals=False) as store:   # looks, does not take over
        assert recorded(store) == blobs
        assert sorted(name for _d, _s, names in os.walk(path / "eml") for name in names) == blobs
        assert store.verify() == []          # recorded files are no orphans
        assert store.removals_pending() == 0
    with Store(path, fsync=False) as store:  # takes over
        assert body_files(store) == [] and recorded(store) == []
        assert store.verify() == []


def test_a_record_of_a_body_still_referenced_is_never_acted_on(tmp_path: Path) -> None:
    """Defence in depth: a wrong record (never written by midb) must not cost a message."""
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        inbox = folder_id(store)
        store.append("alice", inbox, MSG)
        blob = store.messages("alice", inbox)[0].blob

        def wrong(txn: object, dbs: object, _effects: object) -> None:
            removal.record(txn, dbs, bytes.fromhex(blob))

        store._write(wrong, store._env)
        problems = store.verify()
        assert problems == [f"error: body {blob}: recorded for removal but still has a record"]
    with Store(path, fsync=False) as store:   # the open keeps the file and drops the record
        assert body_files(store) == [blob] and recorded(store) == []
        assert store.read_body(blob) == MSG
        store._write(wrong, store._env)
        store.verify(repair=True)
        assert recorded(store) == [] and store.verify() == [] and body_files(store) == [blob]


@pytest.mark.parametrize("shards", [1, 3])
def test_a_folder_deletion_removes_its_files_in_every_shard(tmp_path: Path, shards: int) -> None:
    with Store(tmp_path / "store", fsync=False, shards=shards) as store:
        for name in ("alice", "bob", "carol"):
            store.create_account(name)
            store.create_folder(name, "Old")
            old = store.get_folder(name, "Old")
            assert old is not None
            for n in range(3):
                store.append(name, old.id, MSG + bytes([65 + n]))
        assert len(body_files(store)) == 9
        for name in ("alice", "bob", "carol"):
            store.delete_folder(name, "Old")
        assert body_files(store) == []
        for shared in store._shards:
            with shared.read() as txn:
                assert removal.recorded(txn, shared.dbs) == []
        assert store.verify() == []


def _expunged_without_removal(path: Path, count: int = 2) -> list[str]:
    """A store at ``path`` whose ``count`` expunged bodies are recorded and still on disk, as a
    process leaves them that stops before its remover gets to them; returns their ids."""
    with store_with_alice(path) as store:
        inbox = folder_id(store)
        for n in range(count):
            store.append("alice", inbox, MSG + bytes([65 + n]), flags=["\\Deleted"])
        blobs = sorted(meta.blob for meta in store.messages("alice", inbox))
        store._remover.remove = lambda items: None   # type: ignore[union-attr, method-assign]
        assert len(store.expunge("alice", inbox)) == count
    return blobs


def test_a_taken_over_record_is_made_durable_before_its_file_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's commit may not be synced yet (metasync off): acting on its records
    first would let a power failure bring back a message without its file."""
    path = tmp_path / "store"
    blobs = _expunged_without_removal(path)
    real_sync, real_remove = SharedEnv.sync, BodyRemover.remove
    monkeypatch.setattr(SharedEnv, "sync", lambda self: False)   # the sync fails: hands off
    with Store(path, fsync=False) as store:
        assert store.removals_pending() == 0 and recorded(store) == blobs
        assert sorted(name for _d, _s, names in os.walk(path / "eml") for name in names) == blobs
    order: list[str] = []

    def sync(self: SharedEnv) -> bool:
        order.append("sync")
        return real_sync(self)

    def remove(self: BodyRemover[Any], items: Any) -> None:
        order.append("remove")
        real_remove(self, items)

    monkeypatch.setattr(SharedEnv, "sync", sync)
    monkeypatch.setattr(BodyRemover, "remove", remove)
    with Store(path, fsync=False) as store:
        assert body_files(store) == [] and recorded(store) == []
    assert order[:2] == ["sync", "remove"]


def test_a_taken_over_record_is_flushed_after_a_commit_of_the_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a flush failed (in a process that then stopped), the kernel may have marked the pages
    it could not write clean: a flush of no new commit writes nothing and vouches for nothing. The
    open first commits, so that its flush writes a meta page newer than the records' commit."""
    path = tmp_path / "store"
    _expunged_without_removal(path)
    with contextlib.closing(lmdb.open(str(path / "index"), readonly=True, max_dbs=64)) as index:
        recorded_at = index.info()["last_txnid"]
    flushed_at: list[int] = []
    real_sync = SharedEnv.sync

    def sync(self: SharedEnv) -> bool:
        flushed_at.append(self.env.info()["last_txnid"])
        return real_sync(self)

    monkeypatch.setattr(SharedEnv, "sync", sync)
    with Store(path, fsync=False) as store:
        assert body_files(store) == [] and recorded(store) == [] and store.verify() == []
    assert flushed_at and flushed_at[0] > recorded_at


def _expunged_unflushed(store: Store, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """A message of alice's INBOX expunged by a commit whose flush failed; flushes keep failing
    until ``monkeypatch.undo()``. -> (the folder's id, the id of the message's body)."""
    inbox = folder_id(store)
    uid = store.append("alice", inbox, MSG)[1]
    (blob,) = body_files(store)
    store.store_flags("alice", inbox, [uid], "add", ["\\Deleted"])
    monkeypatch.setattr(store._shared, "env", FailingSync(store._shared.env))
    with pytest.raises(NotDurable):
        store.expunge("alice", inbox)
    return inbox, blob


def test_an_expunge_whose_sync_failed_keeps_its_files_for_the_next_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its commit may be undone by a power failure (the meta page that makes it current is not on
    disk), and the index would then name the body files again: they are not handed to the
    remover. Their records stay, and the next open removes the files once its sync succeeds."""
    path = tmp_path / "store"
    with store_with_alice(path, fsync=True) as store:
        inbox, blob = _expunged_unflushed(store, monkeypatch)
        monkeypatch.undo()
        assert store.uids("alice", inbox) == []   # it stands meanwhile
        assert body_files(store) == [blob] and recorded(store) == [blob]
    with Store(path, fsync=True) as store:
        assert body_files(store) == [] and recorded(store) == []


def test_a_damaged_record_is_reported_and_dropped_never_acted_on(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        inbox = folder_id(store)
        store.append("alice", inbox, MSG)

        def damaged(txn: Any, dbs: Any, _effects: object) -> None:
            txn.put(removal.KEY_PREFIX + b"\x01\x02\x03", b"", db=dbs.meta)

        store._write(damaged, store._env)
        assert store.verify() == ["error: damaged record of a body to remove 010203"]
        store.verify(repair=True)
        assert store.verify() == []
        store._write(damaged, store._env)
    began = time.monotonic()
    with Store(path, fsync=False) as store:   # dropped at the open, with a warning
        assert store.verify() == [] and store.wait_for_removals(5) and store.removals_pending() == 0
        assert len(body_files(store)) == 1
    assert time.monotonic() - began < 4   # the close did not wait for a removal that never ends


def test_the_remover_survives_any_error_of_an_unlink() -> None:
    recorder = Recorder()

    def unlink(blob: str) -> None:
        if blob == "bad":
            raise ValueError("not a body id")
        recorder.unlink(blob)

    remover = BodyRemover(unlink, recorder.forget)
    remover.remove(["a", "bad", "c"])
    assert remover.wait(10) and remover.pending() == 0
    remover.remove(["d"])
    assert remover.wait(10) and sorted(recorder.unlinked) == ["a", "c", "d"]
    remover.close()


def test_a_remover_thread_that_cannot_start_fails_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the process's thread limit the expunge still answers: its files wait in their records."""
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        inbox = folder_id(store)
        for n in range(2):
            store.append("alice", inbox, MSG + bytes([65 + n]), flags=["\\Deleted"])
        blobs = sorted(meta.blob for meta in store.messages("alice", inbox))

        def refuse(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        with monkeypatch.context() as patched:
            patched.setattr(threading.Thread, "start", refuse)
            assert store.expunge("alice", inbox) == [1, 2]
            assert store.removals_pending() == 2 and not store.wait_for_removals(0.1)
            assert recorded(store) == blobs
        store.close()   # logs what is left; does not raise
    with Store(path, fsync=False) as store:   # the next open removes them
        assert body_files(store) == [] and recorded(store) == []


def test_records_are_forgotten_in_the_shard_they_were_written_in(tmp_path: Path) -> None:
    """A body recorded outside its home shard (a damaged index that verify repaired) must not
    leave its record behind for ever."""
    with Store(tmp_path / "store", fsync=False, shards=3) as store:
        blob_raw = bytes(range(16))
        home = shards_of.of_blob(blob_raw, 3)
        other = store._shards[(home + 1) % 3]

        def record(txn: Any, dbs: Any, _effects: object) -> None:
            removal.record(txn, dbs, blob_raw)

        store._write(record, other)
    with Store(tmp_path / "store", fsync=False, shards=3) as store:
        assert store.wait_for_removals(5)
        for shared in store._shards:
            with shared.read() as txn:
                assert removal.recorded(txn, shared.dbs) == []
        assert store.stats()["bodies_awaiting_removal"] == 0


def test_bodies_kept_after_a_failed_sync_are_removed_after_a_later_commit_is_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-running process must not keep them until it restarts. A sync alone after the failure
    vouches for nothing (the kernel may have dropped the pages it failed to write), but one that
    follows a later commit makes that commit durable, and with it the release of the bodies:
    then they go to the remover."""
    path = tmp_path / "store"
    with store_with_alice(path, fsync=True) as store:
        inbox, blob = _expunged_unflushed(store, monkeypatch)
        # The next durable commit's flush fails too: the body is still kept.
        with pytest.raises(NotDurable):
            store.append("alice", inbox, MSG + b"2")
        monkeypatch.undo()
        assert blob in body_files(store) and blob in recorded(store)
        store.append("alice", inbox, MSG + b"3")   # committed and flushed
        files = body_files(store)
        assert blob not in files and len(files) == 2
        assert recorded(store) == []
