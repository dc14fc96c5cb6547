"""Group commit hand-offs: followers sleep on their own lock; a leader wakes the threads whose jobs
it committed and hands the leadership to the first thread that queued during its commit."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from net_helpers import wait_until

from midb import env as midb_env
from midb.env import SharedEnv
from midb.store import Store


def _waiting_are(shared: SharedEnv, count: int) -> bool:
    return len(shared._waiters) == count


def test_followers_queued_during_a_commit_run_as_the_next_batch_led_by_one_of_them(tmp_path: Path) -> None:
    with Store(tmp_path / "store", fsync=False) as store:
        shared = store._env
        inside = threading.Event()
        release = threading.Event()
        ran_on: dict[str, int] = {}

        def job(name: str, block: bool = False) -> Any:
            def run(txn: Any, dbs: Any, effects: Any) -> str:
                ran_on[name] = threading.get_ident()
                txn.put(name.encode(), b"v", db=dbs.meta)
                if block:
                    inside.set()
                    release.wait(10)
                return name
            return run

        threads: dict[str, threading.Thread] = {}
        results: dict[str, str] = {}

        def submit(name: str, block: bool = False) -> None:
            results[name] = shared.write(job(name, block), durable=False)[0]

        threads["leader"] = threading.Thread(target=submit, args=("leader", True))
        threads["leader"].start()
        assert inside.wait(10)
        for count, name in enumerate(("f1", "f2"), 1):
            threads[name] = threading.Thread(target=submit, args=(name,))
            threads[name].start()
            assert wait_until(functools.partial(_waiting_are, shared, count), timeout=10.0)  # f1 queues first
        release.set()
        for thread in threads.values():
            thread.join(10)
        assert results == {"leader": "leader", "f1": "f1", "f2": "f2"}
        # f1 queued first: it led the second batch, which carried f2's job too.
        assert ran_on["f1"] == ran_on["f2"] == threads["f1"].ident != ran_on["leader"]
        assert not shared._leader_active and shared._waiters == [] and shared._queue == []


def test_no_gather_wait_without_announced_writers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gathered: list[int] = []
    original = SharedEnv._gather

    def spy(self: SharedEnv) -> None:
        gathered.append(self._arriving)
        original(self)

    monkeypatch.setattr(SharedEnv, "_gather", spy)
    with Store(tmp_path / "store", fsync=True) as store:
        store.create_account("alice")
        info = store.get_folder("alice", "INBOX")
        assert info is not None
        store.append("alice", info.id, b"Subject: x\r\n\r\nbody\r\n")   # its own arrival: no wait
        store.store_flags("alice", info.id, [1], "add", ["\\Flagged"])
        assert gathered == []
        announced = threading.Event()
        done = threading.Event()

        def other_writer() -> None:
            with store._env.arrival():                                     # on its way, never comes
                announced.set()
                done.wait(10)

        thread = threading.Thread(target=other_writer)
        thread.start()
        assert announced.wait(10)
        store.store_flags("alice", info.id, [1], "remove", ["\\Flagged"])  # not durable: no wait
        assert gathered == []
        store.create_folder("alice", "Projects")                             # durable: waits
        done.set()
        thread.join(10)
        assert gathered == [1]


def test_interrupted_follower_withdraws_its_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower interrupted before a leader took its jobs leaves nothing behind in the queue."""
    with Store(tmp_path / "store", fsync=False) as store:
        shared = store._env
        inside = threading.Event()
        release = threading.Event()

        def blocking(txn: Any, dbs: Any, effects: Any) -> None:
            inside.set()
            release.wait(10)

        leader = threading.Thread(target=lambda: shared.write(blocking, durable=False))
        leader.start()
        assert inside.wait(10)

        class Interrupt(BaseException):
            pass

        class FailingLock:
            def acquire(self, *args: Any) -> bool:
                raise Interrupt

        def never(txn: Any, dbs: Any, effects: Any) -> None:
            raise AssertionError("a withdrawn job ran")

        original_init = midb_env._Waiter.__init__

        def init(self: Any, pendings: Any) -> None:
            original_init(self, pendings)
            self.wake = FailingLock()   # the wait is interrupted (e.g. KeyboardInterrupt)

        monkeypatch.setattr(midb_env._Waiter, "__init__", init)
        with pytest.raises(Interrupt):
            shared.write(never, durable=False)
        monkeypatch.undo()
        assert shared._queue == [] and shared._waiters == []
        release.set()
        leader.join(10)
        assert not shared._leader_active


def test_durable_writes_sync_after_the_commit_and_flag_changes_do_not(tmp_path: Path) -> None:
    """LMDB runs with metasync off: a commit syncs its data pages under the write lock, and the
    meta page of a durable write (APPEND, EXPUNGE) is synced right after, outside the lock. A flag
    change, not durable, rides on the next sync instead of paying one of its own."""
    with Store(tmp_path / "store", fsync=True) as store:
        shared = store._env
        flags = shared.env.flags()
        assert flags["sync"] is True and flags["metasync"] is False
        real = shared.env
        syncs: list[bool] = []

        class CountingEnv:
            def __getattr__(self, name: str) -> object:
                return getattr(real, name)

            def sync(self, force: bool = False) -> None:
                syncs.append(force)
                real.sync(force)

        shared.env = CountingEnv()  # type: ignore[assignment]  # a stand-in forwarding to the real one
        try:
            store.create_account("alice")
            info = store.get_folder("alice", "INBOX")
            assert info is not None
            syncs.clear()
            store.append("alice", info.id, b"Subject: x\r\n\r\nbody\r\n")
            assert syncs == [True]
            store.store_flags("alice", info.id, [1], "add", ["\\Deleted"])
            store.claim_recent_range("alice", info.id)
            store.set_subscribed("alice", "INBOX", True)
            assert syncs == [True]
            store.expunge("alice", info.id)
            assert syncs == [True, True]
        finally:
            shared.env = real


LOCK_HOLDER = """
import sys, lmdb
env = lmdb.open(sys.argv[1], subdir=True, max_dbs=32, lock=True)
txn = env.begin(write=True)
print("locked", flush=True)
sys.stdin.readline()
txn.abort()
env.close()
"""


def test_writers_queued_while_another_process_holds_the_write_lock_share_one_commit(
        tmp_path: Path, commits: list[int]) -> None:
    """The leader takes its batch once LMDB's write lock is its own: a writer that queued while
    the leader waited for another process's commit rides along instead of waiting a commit more."""
    with Store(tmp_path / "store", fsync=False) as store:
        shared = store._env
        holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, shared.index_dir],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline() == "locked\n"
            ran_on: dict[str, int] = {}

            def job(name: str) -> Any:
                def run(txn: Any, dbs: Any, effects: Any) -> str:
                    ran_on[name] = threading.get_ident()
                    txn.put(name.encode(), b"v", db=dbs.meta)
                    return name
                return run

            results: dict[str, str] = {}

            def submit(name: str) -> None:
                results[name] = shared.write(job(name), durable=False)[0]

            leader = threading.Thread(target=submit, args=("leader",))
            leader.start()
            assert wait_until(lambda: shared._leader_active, timeout=10.0)
            follower = threading.Thread(target=submit, args=("follower",))
            follower.start()
            assert wait_until(lambda: len(shared._waiters) == 1, timeout=10.0)
            assert commits == []   # the leader still waits for the lock
            holder.stdin.write("\n")
            holder.stdin.flush()
            leader.join(10)
            follower.join(10)
        finally:
            if holder.poll() is None:
                holder.kill()
            holder.wait(10)
        assert results == {"leader": "leader", "follower": "follower"}
        assert commits == [2]
        assert ran_on["follower"] == ran_on["leader"] == leader.ident
        with shared.read() as txn:
            assert txn.get(b"follower", db=shared.dbs.meta) == b"v"


def test_a_write_runs_its_jobs_commit_and_sync_in_one_blocking_section(tmp_path: Path) -> None:
    """While a write waits for the lock, and while its jobs run and its commit flushes, the
    serving pool may run another worker (midb.env.blocking)."""
    depth = [0]
    sections: list[str] = []
    seen: list[tuple[str, int]] = []

    class Recording:
        def __enter__(self) -> None:
            depth[0] += 1
            sections.append("enter")

        def __exit__(self, *exc: object) -> None:
            depth[0] -= 1
            sections.append("exit")

    class SyncSpy:
        def __init__(self, env: Any) -> None:
            self._env = env

        def __getattr__(self, name: str) -> Any:
            return getattr(self._env, name)

        def sync(self, force: bool = False) -> None:
            seen.append(("sync", depth[0]))
            self._env.sync(force)

    def job(txn: Any, dbs: Any, effects: Any) -> None:
        seen.append(("job", depth[0]))
        txn.put(b"probe", b"v", db=dbs.meta)

    with Store(tmp_path / "store", fsync=True) as store:
        store.create_account("alice")
        shared = store._env
        shared.env = SyncSpy(shared.env)  # type: ignore[assignment]  # a stand-in forwarding to the real one
        midb_env.set_blocking_hook(Recording)
        try:
            shared.write(job, durable=False)                        # a flag change: no sync
            not_durable, seen_not_durable = list(sections), list(seen)
            sections.clear()
            seen.clear()
            shared.write(job, durable=True)                         # commit, then sync
        finally:
            midb_env.set_blocking_hook(None)
            shared.env = shared.env._env  # type: ignore[attr-defined]  # the SyncSpy's
    # begin() waits for the write lock in a section of its own; the rest is one more.
    assert not_durable == ["enter", "exit"] * 2
    assert seen_not_durable == [("job", 1)]
    assert sections == ["enter", "exit"] * 2
    assert seen == [("job", 1), ("sync", 1)]
