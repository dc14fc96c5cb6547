"""Orphan body files left by a process that died while storing a message are swept at the next
start (midb.orphans): markers say which processes did not stop cleanly, the sweep removes what
verify --repair would (midb.maintenance.sweep_orphans), and a write in flight is never robbed of
a body it then commits."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import pytest
from store_helpers import folder_id, store_with_alice

from midb import env as midb_env
from midb import maintenance, orphans, removal
from midb.errors import MidbError
from midb.messages import parse_flags
from midb.orphans import OrphanSweeper, claim_stale, markers_dir
from midb.store import Store

REPO = str(Path(__file__).resolve().parent.parent)
MSG = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"
OLD = time.time() - 3600


def markers(path: Path) -> list[str]:
    directory = markers_dir(str(path))
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def dead_marker(path: Path, name: str = "999999-dead") -> str:
    """A marker whose process is gone: nobody holds its lock."""
    os.makedirs(markers_dir(str(path)), exist_ok=True)
    marker = os.path.join(markers_dir(str(path)), name)
    open(marker, "wb").close()
    return marker


def orphan(store: Store, data: bytes = b"x" * 100, *, mtime: float | None = OLD) -> str:
    """A body file written and never committed (a write that died); its path."""
    path = store.body_path(store._blobs.write(data))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def temporary(store: Store, *, mtime: float = OLD) -> str:
    path = os.path.join(store.path, "eml", "cd", ".tmp-cd" + "1" * 30)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(b"half a body")
    os.utime(path, (mtime, mtime))
    return path


def sweep(store: Store) -> OrphanSweeper:
    """A start that has a sweep to do, the sweep, and the stop."""
    sweeper = OrphanSweeper(store)
    assert sweeper.start()
    try:
        assert sweeper.wait()
    finally:
        sweeper.stop()
    assert sweeper.result is not None
    return sweeper


# ---- markers -------------------------------------------------------------------------------------

def test_a_clean_close_leaves_no_marker_and_the_next_start_does_not_sweep(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        assert len(markers(path)) == 1 and markers(path)[0].startswith(f"{os.getpid()}-")
        left = orphan(store)
    assert markers(path) == []
    with Store(path, fsync=False) as store:
        sweeper = OrphanSweeper(store)
        assert not sweeper.start()   # no unclean stop: no walk at all
        sweeper.stop()
        assert sweeper.attempts == 0 and os.path.exists(left)   # verify --repair's to remove


def test_a_process_that_dies_while_the_server_runs_is_swept_at_the_next_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A midb command killed (say, an import) while the server runs: no restart tells it."""
    monkeypatch.setattr(orphans, "RECHECK", 0.05)
    with store_with_alice(tmp_path / "store") as store:
        sweeper = OrphanSweeper(store)
        try:
            assert not sweeper.start()
            left = orphan(store)
            dead_marker(tmp_path / "store")
            assert sweeper.wait()
            assert sweeper.result is not None and sweeper.result.removed == 1 and not os.path.exists(left)
        finally:
            sweeper.stop()
        assert len(markers(tmp_path / "store")) == 1


HOLDS_A_READ = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from midb.store import Store

    store = Store(sys.argv[1], fsync=False)
    snapshot = store._shards[0].read()   # a long read, as of an export walking a big folder
    print("READY", flush=True)
    time.sleep(600)
""")


def reader_pids(store: Store) -> set[int]:
    """The processes holding a reader slot of shard 0 (LMDB's table: pid, thread, txnid)."""
    lines = store._shards[0].env.readers().splitlines()[1:]
    return {int(line.split()[0]) for line in lines if line.split() and line.split()[0].isdigit()}


def dead_reader(path: Path) -> int:
    """The pid of a process killed while it held a read transaction of the store at ``path``."""
    reader = subprocess.Popen([sys.executable, "-c", HOLDS_A_READ, str(path), REPO], stdout=subprocess.PIPE)
    try:
        assert reader.stdout is not None and reader.stdout.readline() == b"READY\n"
    finally:
        reader.kill()
        reader.wait(30)
    return reader.pid


def churn(store: Store, rounds: int) -> int:
    """Pages the data file grows by over ``rounds`` appends and expunges of a small message."""
    shared = store._shards[0]
    before = shared.env.info()["last_pgno"]
    inbox = folder_id(store)
    for _ in range(rounds):
        _, uid = store.append("alice", inbox, MSG + b"z" * 3000, flags=["\\Deleted"])
        store.expunge("alice", inbox, [uid])
    return int(shared.env.info()["last_pgno"] - before)


OPENS_TO_READ = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from midb.store import Store

    Store(sys.argv[1], fsync=False, readonly=True).close()   # as a midb export or verify begins
""")


def test_an_open_by_a_process_that_only_reads_lets_go_of_dead_readers(tmp_path: Path) -> None:
    """Whoever opens the index frees the reader slots of dead processes, a process that only
    reads too: dead slots cannot pile up in the reader table while no process writes, which is
    why no thread of a serving process looks for them (only writes, before they commit)."""
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        reader = dead_reader(path)
        assert reader in reader_pids(store)
        subprocess.run([sys.executable, "-c", OPENS_TO_READ, str(path), REPO], check=True, timeout=60)
        assert reader not in reader_pids(store)


def test_a_process_that_writes_lets_go_of_dead_readers_before_its_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process that writes (a serving process, a ``midb import`` that may write for hours)
    looks for dead readers before its writes, every READER_CHECK seconds, so that its index does
    not grow with every commit after a reader died."""
    path = tmp_path / "store"
    with store_with_alice(path, inline_limit=16384) as store:
        shared = store._shards[0]
        looks: list[int] = []
        real_clear = shared.clear_dead_readers

        def clear() -> int:
            looks.append(1)
            return real_clear()

        monkeypatch.setattr(shared, "clear_dead_readers", clear)
        alone = churn(store, 200)
        assert looks == []   # not once per write: once per READER_CHECK seconds
        reader = dead_reader(path)
        assert reader in reader_pids(store)
        monkeypatch.setattr(midb_env, "READER_CHECK", 0.0, raising=False)   # the interval has passed
        assert churn(store, 200) <= max(10, 2 * alone)
        assert reader not in reader_pids(store) and looks


def test_a_write_that_finds_the_map_full_lets_go_of_dead_readers(tmp_path: Path) -> None:
    """Before a write is refused for a full map, the pages a dead reader held are freed, and the
    write is tried once more (SharedEnv._make_room)."""
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        reader = dead_reader(path)
        assert reader in reader_pids(store)
        tries: list[bool] = []

        def job(txn: object, dbs: object, effects: object) -> str:
            tries.append(reader in reader_pids(store))
            if len(tries) == 1:
                raise lmdb.MapFullError("mdb_page_alloc: MDB_MAP_FULL")
            return "written"

        assert store._shards[0].write(job, durable=False)[0] == "written"
        assert tries == [True, False]


def test_a_durable_store_syncs_its_marker_into_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With fsync on, a power failure just after the start cannot lose the marker (and with it
    the sweep of what this process leaves if it dies)."""
    synced: list[str] = []
    monkeypatch.setattr(orphans, "fsync_dir", synced.append)
    path = tmp_path / "store"
    durable = orphans.WriterMarker.create(str(path), fsync=True)
    quick = orphans.WriterMarker.create(str(path))
    assert durable is not None and quick is not None
    assert synced == [markers_dir(str(path))]
    durable.release()
    quick.release()
    synced.clear()
    store = Store(str(tmp_path / "durable"), fsync=True)
    store.close()
    assert synced == [markers_dir(str(tmp_path / "durable"))]


def test_a_read_only_open_makes_no_marker(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with store_with_alice(path):
        pass
    with Store(path, readonly=True):
        assert markers(path) == []


DIES_WRITING = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from midb.store import Store

    store = Store(sys.argv[1], fsync=True)
    inbox = store.get_folder("alice", "INBOX").id
    store.append("alice", inbox, b"Subject: kept\\r\\n\\r\\n" + b"k" * 100)
    print(store._blobs.write(b"o" * 1000), flush=True)   # a body whose commit never comes
    sys.stdin.readline()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_writer_is_swept_after_at_the_next_start_and_only_then(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "store"
    with store_with_alice(path):
        pass
    script = tmp_path / "writer.py"
    script.write_text(DIES_WRITING, encoding="utf-8")
    writer = subprocess.Popen([sys.executable, str(script), str(path), REPO],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdin is not None
        blob = writer.stdout.readline().decode().strip()
        with Store(path, fsync=False) as store:
            body = store.body_path(blob)
            kept = store.body_path(store.messages("alice", folder_id(store))[0].blob)
            for file in (body, kept):
                os.utime(file, (OLD, OLD))
            assert len(markers(path)) == 2 and not claim_stale(str(path))   # the writer is alive
            writer.stdin.write(b"die\n")
            writer.stdin.flush()
            assert writer.wait(30) == -signal.SIGKILL
            caplog.set_level(logging.INFO, logger="midb")
            sweeper = sweep(store)
            assert sweeper.result is not None and (sweeper.result.removed, sweeper.result.bytes) == (1, 1000)
            assert not os.path.exists(body) and os.path.exists(kept)
            assert len(markers(path)) == 1   # the dead writer's went with the sweep; ours stays
            assert store.verify() == []
        notices = [record.getMessage() for record in caplog.records if record.levelno == orphans.NOTICE]
        assert notices == ["removed 1 orphan body files (1000 bytes) left by processes that stopped uncleanly"]
    finally:
        writer.kill()
        writer.wait(30)


def test_a_forked_child_marks_itself_and_leaves_the_parents_marker(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        ours = markers(path)
        pid = os.fork()
        if pid == 0:   # pragma: no cover - the child
            status = 1
            try:
                store.list_accounts()   # reopens the store in the child: a marker of its own
                mine = [name for name in markers(path) if name.startswith(f"{os.getpid()}-")]
                store.close()
                status = 0 if len(mine) == 1 and markers(path) == ours else 2
            finally:
                os._exit(status)
        assert os.waitpid(pid, 0)[1] == 0
        assert markers(path) == ours and not claim_stale(str(path))   # ours is still locked


def test_one_claimer_takes_a_dead_marker(tmp_path: Path) -> None:
    path = tmp_path / "store"
    marker = dead_marker(path)
    first = claim_stale(str(path))
    assert [held for held, _fd in first.held] == [marker]
    assert not claim_stale(str(path))   # another process starting at the same time
    first.release()                     # stopped before the end: the marker stays
    again = claim_stale(str(path))
    assert len(again) == 1
    again.finish()
    assert markers(path) == []


def test_a_marker_left_half_made_is_dropped_without_a_sweep(tmp_path: Path) -> None:
    path = tmp_path / "store"
    half = dead_marker(path, ".4242-0badf00d")   # died between creating and naming it: before any write
    os.utime(half, (OLD, OLD))
    assert not claim_stale(str(path)) and markers(path) == []


def test_a_marker_being_made_is_left_to_its_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim listing the directory between a marker's creation and its lock does not take it
    (review55 L4: the live process was left without a marker)."""
    store = str(tmp_path / "store")
    os.makedirs(markers_dir(store))
    real_flock = orphans.fcntl.flock
    claims: list[int] = []

    def flock_after_a_claim(fd: int, operation: int) -> None:
        if not claims:
            claim = claim_stale(store)
            claims.append(len(claim))
            claim.release()
        real_flock(fd, operation)

    monkeypatch.setattr(orphans.fcntl, "flock", flock_after_a_claim)
    marker = orphans.WriterMarker.create(store)
    assert claims == [0] and marker is not None and os.path.exists(marker.path)
    marker.release()


def test_what_is_no_marker_is_never_claimed(tmp_path: Path) -> None:
    path = tmp_path / "store"
    os.makedirs(os.path.join(markers_dir(str(path)), "lost+found"))
    assert not claim_stale(str(path)) and markers(path) == ["lost+found"]


@contextlib.contextmanager
def undeletable_markers(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The markers directory not writable by this process. Tests may run as root, which a mode
    does not stop: then the removal of a file there is made to fail as it would (EACCES)."""
    directory = markers_dir(str(path))
    if os.geteuid() != 0:
        os.chmod(directory, 0o555)
        try:
            yield
        finally:
            os.chmod(directory, 0o750)
        return
    real_unlink = os.unlink

    def unlink(file: str, *args: object, **kwargs: object) -> None:
        if os.path.dirname(os.fspath(file)) == directory:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), file)
        real_unlink(file, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(os, "unlink", unlink)
        yield


def test_a_marker_that_cannot_be_removed_is_swept_once_and_said_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A dead process's marker in a directory the server may not write to (a ``midb`` command
    run as root made it): its orphans are swept, the marker stays, and neither the next looks
    nor a sibling's sweep for it again, nor warn again (it was swept at every look, for ever)."""
    monkeypatch.setattr(orphans, "RECHECK", 0.02)
    path = tmp_path / "store"
    caplog.set_level(logging.INFO, logger="midb")
    with store_with_alice(path) as store:
        left = orphan(store)
        marker = dead_marker(path)
        sweeper = OrphanSweeper(store)
        with undeletable_markers(path, monkeypatch):
            try:
                assert sweeper.start()
                assert sweeper.wait()
                assert sweeper.result is not None and sweeper.result.removed == 1 and not os.path.exists(left)
                time.sleep(0.5)   # some 25 looks
                assert sweeper.attempts == 1 and os.path.exists(marker)
                assert not claim_stale(str(path))   # a sibling's look: still locked, by us
            finally:
                sweeper.stop()
        warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
        assert len(warnings) == 1 and marker in warnings[0] and "Permission denied" in warnings[0]
        assert "remove it by hand" in warnings[0]
        sweeps = [record for record in caplog.records if "sweeping orphan body files" in record.getMessage()]
        assert len(sweeps) == 1
        # This process gone, the next start takes it again (and sweeps once, and says so once).
        again = claim_stale(str(path))
        assert [held for held, _fd in again.held] == [marker]
        again.finish()
        assert markers(path) == [name for name in markers(path) if name.startswith(f"{os.getpid()}-")]


def test_a_marker_kept_as_the_sweeper_stops_is_let_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep ending just after stop() stopped waiting for it: what it keeps locked is closed
    there and then, not held on by a process that is closing the store."""
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        marker = dead_marker(path)
        sweeper = OrphanSweeper(store)
        sweeper.stop()
        claim = claim_stale(str(path))
        with undeletable_markers(path, monkeypatch):
            kept = claim.finish()
        assert [held for held, _fd in kept] == [marker]
        sweeper._keep(kept)
        again = claim_stale(str(path))
        assert len(again) == 1
        again.finish()


# ---- what the sweep removes ----------------------------------------------------------------------

def test_the_sweep_removes_old_orphans_only(tmp_path: Path) -> None:
    with store_with_alice(tmp_path / "store", inline_limit=0) as store:
        inbox = folder_id(store)
        store.append("alice", inbox, MSG)
        store.append("alice", inbox, MSG + b"2", flags=["\\Deleted"])
        referenced = [store.body_path(meta.blob) for meta in store.messages("alice", inbox)]
        for file in referenced:
            os.utime(file, (OLD, OLD))
        # A body released by an expunge, its removal recorded and not done yet (midb.removal).
        store._remover.remove = lambda items: None   # type: ignore[method-assign, union-attr]
        assert store.expunge("alice", inbox) == [2]
        released = referenced.pop()
        old, old_temp = orphan(store), temporary(store)
        young = orphan(store, mtime=None)
        unexpected = os.path.join(store.path, "eml", "zz", "notes.txt")
        os.makedirs(os.path.dirname(unexpected))
        open(unexpected, "wb").close()
        os.utime(unexpected, (OLD, OLD))

        result = maintenance.sweep_orphans(store)
        assert (result.removed, result.bytes, result.finished) == (2, 100 + len(b"half a body"), True)
        assert not os.path.exists(old) and not os.path.exists(old_temp)
        assert all(os.path.exists(file) for file in (*referenced, released, young, unexpected))
        assert result.youngest == pytest.approx(os.stat(young).st_mtime)


def test_an_entry_that_cannot_be_removed_is_skipped_and_the_rest_goes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A directory named like a body (or one a midb command left to root) does not stop the
    sweep: it is logged and stays, the orphans beside it go (review55 L5)."""
    with store_with_alice(tmp_path / "store", inline_limit=0) as store:
        good = orphan(store)
        bad = os.path.join(store.path, "eml", "ab", "ab" + "0" * 30)
        os.makedirs(bad)
        os.utime(bad, (OLD, OLD))
        with caplog.at_level(logging.WARNING, logger="midb"):
            result = maintenance.sweep_orphans(store, before=time.time())
        assert result.finished and result.removed == 1
        assert not os.path.exists(good) and os.path.isdir(bad)
        assert f"cannot remove orphan {bad}" in caplog.text


def test_files_written_after_the_claim_are_not_judged(tmp_path: Path) -> None:
    with store_with_alice(tmp_path / "store") as store:
        later = orphan(store)
        os.utime(later, (OLD + 10, OLD + 10))
        result = maintenance.sweep_orphans(store, before=OLD)
        assert (result.removed, result.youngest) == (0, None) and os.path.exists(later)


def test_a_clock_stepping_forward_after_the_claim_does_not_age_a_write_in_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ages are reckoned from the claim by the monotonic clock (review55 L7): an NTP step of an
    hour just after a reboot leaves a body written seconds before the claim young."""
    with store_with_alice(tmp_path / "store", inline_limit=0) as store:
        written = time.time() - 5
        in_flight = orphan(store, mtime=written)
        claim = orphans.Claim([], time.time())
        stepped = claim.at + 3600
        monkeypatch.setattr(time, "time", lambda: stepped)
        assert claim.now() < claim.at + 60
        result = maintenance.sweep_orphans(store, before=claim.at, now=claim.now)
        assert result.removed == 0 and os.path.exists(in_flight)
        assert result.youngest == pytest.approx(written, abs=1)
        # Reckoned by the stepped wall clock instead, the same body would have gone.
        assert maintenance.sweep_orphans(store, before=claim.at).removed == 1


def test_a_body_that_messages_refer_to_without_a_record_is_kept(tmp_path: Path) -> None:
    """Damage verify reports (a record missing): the file is still mail."""
    with store_with_alice(tmp_path / "store", inline_limit=0) as store:
        store.append("alice", folder_id(store), MSG)
        blob = store.messages("alice", folder_id(store))[0].blob
        os.utime(store.body_path(blob), (OLD, OLD))
        from midb import bodyrecords

        def drop(txn: object, dbs: object, _effects: object) -> None:
            bodyrecords.delete(txn, dbs, bodyrecords.REFS, bytes.fromhex(blob))

        store._write(drop, store._env)
        assert maintenance.sweep_orphans(store).removed == 0
        assert os.path.exists(store.body_path(blob))


def test_young_orphans_of_the_dead_are_swept_once_old_enough(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quick restart: the dead process's last orphans are younger than the age limit at the
    first walk; the sweep waits for them and walks again."""
    monkeypatch.setattr(maintenance, "ORPHAN_MIN_AGE", 0.5)
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        young = orphan(store, mtime=None)
        dead_marker(path)
        started = time.monotonic()
        sweeper = sweep(store)
        assert sweeper.result is not None and sweeper.result.removed == 1
        assert not os.path.exists(young) and 0.3 <= time.monotonic() - started < 10
        assert len(markers(path)) == 1


def test_a_stop_ends_the_sweep_promptly_and_the_next_start_sweeps_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "ORPHAN_MIN_AGE", 30.0)
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        young = orphan(store, mtime=time.time() - 1)   # the sweep waits 29 s for it
        dead_marker(path)
        sweeper = OrphanSweeper(store)
        assert sweeper.start()
        time.sleep(0.2)
        started = time.monotonic()
        sweeper.stop()
        assert time.monotonic() - started < 2 and sweeper.result is None and sweeper.attempts == 1
        assert os.path.exists(young) and len(markers(path)) == 2   # the dead one's stays
        monkeypatch.setattr(maintenance, "ORPHAN_MIN_AGE", 0.0)
        assert sweep(store).result is not None and not os.path.exists(young)


def test_a_walk_asked_to_stop_removes_nothing_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "STOP_EVERY", 1)
    with store_with_alice(tmp_path / "store") as store:
        left = orphan(store)
        result = maintenance.sweep_orphans(store, stop=lambda: True)
        assert not result.finished and result.removed == 0 and os.path.exists(left)


# ---- a write in flight -----------------------------------------------------------------------------

def in_flight(store: Store, data: bytes = MSG) -> tuple[str, object]:
    """A delivery stopped between its body file and its commit: (body id, its write job)."""
    inbox = folder_id(store)
    blobs, digests, inline = store._store_bodies([data], 0, store._env)
    prepared = [(data, parse_flags(()).encode(), int(time.time()), 0)]
    return blobs[0], store._append_job("alice", inbox, prepared, blobs, digests, len(data), None, inline)


def test_a_write_whose_body_was_swept_fails_instead_of_committing_a_message_without_it(tmp_path: Path) -> None:
    """A write stalled past the age limit: the sweep may take its file, never its message."""
    with store_with_alice(tmp_path / "store", inline_limit=0) as store:
        blob, job = in_flight(store)
        os.utime(store.body_path(blob), (OLD, OLD))
        assert maintenance.sweep_orphans(store).removed == 1
        with pytest.raises(MidbError, match="removed before its commit"):
            store._write(job, store._env)   # type: ignore[arg-type]
        assert store.messages("alice", folder_id(store)) == [] and store.verify() == []


def test_a_young_write_in_flight_is_left_alone_and_commits(tmp_path: Path) -> None:
    with store_with_alice(tmp_path / "store", inline_limit=0) as store:
        blob, job = in_flight(store)
        result = maintenance.sweep_orphans(store)
        assert result.removed == 0 and result.youngest is not None
        store._write(job, store._env)   # type: ignore[arg-type]
        assert store.read_body(blob) == MSG and store.verify() == []


def test_a_commit_between_the_snapshot_and_the_removal_keeps_its_body(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep judges from a snapshot, then removes under the write lock, looking again."""
    with store_with_alice(tmp_path / "store", inline_limit=0) as store:
        blob, job = in_flight(store)
        os.utime(store.body_path(blob), (OLD, OLD))
        judged = maintenance._held_by_messages

        def commit_meanwhile(shared: object, blob_raws: set[bytes], stop: Callable[[], bool]) -> set[bytes] | None:
            held = judged(shared, blob_raws, stop)
            store._write(job, store._env)   # type: ignore[arg-type]
            return held

        monkeypatch.setattr(maintenance, "_held_by_messages", commit_meanwhile)
        assert maintenance.sweep_orphans(store).removed == 0
        assert store.read_body(blob) == MSG and store.verify() == []


def test_recorded_removals_are_not_the_sweeps(tmp_path: Path) -> None:
    """Files awaiting their remover (midb.removal) are left to it."""
    with store_with_alice(tmp_path / "store", inline_limit=0) as store:
        inbox = folder_id(store)
        store.append("alice", inbox, MSG, flags=["\\Deleted"])
        blob = store.messages("alice", inbox)[0].blob
        store._remover.remove = lambda items: None   # type: ignore[method-assign, union-attr]
        store.expunge("alice", inbox)
        os.utime(store.body_path(blob), (OLD, OLD))
        assert maintenance.sweep_orphans(store).removed == 0
        with store._env.read() as txn:
            assert removal.recorded(txn, store._shared.dbs) == [bytes.fromhex(blob)]
