"""Body files: layout, durability ordering, failure clean-up, refcount-driven deletion."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from midb import blobs as blobs_module
from midb.blobs import TEMP_PREFIX, BlobFiles
from midb.env import SharedEnv
from midb.errors import InvalidArgument, MidbError, NoSuchBody, StoreBusy
from midb.store import Store


@pytest.fixture
def files(tmp_path: Path) -> BlobFiles:
    return BlobFiles(str(tmp_path / "eml"), fsync=True, create=True)


def all_files(root: str) -> list[str]:
    return sorted(name for _dir, _subdirs, names in os.walk(root) for name in names)


def test_write_read_unlink(files: BlobFiles) -> None:
    data = b"\x00\r\n" * 1000 + b"tail"
    blob = files.write(data)
    assert len(blob) == 32 and all(c in "0123456789abcdef" for c in blob)
    path = files.path(blob)
    assert path == os.path.join(files.root, blob[:2], blob)
    assert open(path, "rb").read() == data
    assert files.read(blob) == data
    assert files.read(blob, 3, 3) == b"\x00\r\n"
    assert files.read(blob, len(data) - 4, 100) == b"tail"
    assert files.read(blob, len(data) + 10) == b""
    assert files.size(blob) == len(data)
    assert all_files(files.root) == [blob]            # no temporary left behind
    files.unlink(blob)
    files.unlink(blob)                                # idempotent
    assert files.size(blob) is None
    with pytest.raises(NoSuchBody):
        files.read(blob)


def test_ids_are_random_and_distinct(files: BlobFiles) -> None:
    ids, _ = files.write_many([b"same"] * 50)
    assert len(set(ids)) == 50
    assert len({blob[:2] for blob in ids}) > 10       # spread over the fan-out directories


def test_write_many_parallel_and_compute(files: BlobFiles) -> None:
    bodies = [bytes([n]) * (n + 1) for n in range(30)]
    ids, sizes = files.write_many(bodies, len)
    assert sizes == [n + 1 for n in range(30)]
    assert [files.read(blob) for blob in ids] == bodies
    small_ids, nothing = files.write_many([b"a", memoryview(b"b")])
    assert nothing == [None, None] and [files.read(blob) for blob in small_ids] == [b"a", b"b"]


def test_invalid_ids_never_escape_the_tree(files: BlobFiles) -> None:
    for bad in ["../" * 10 + "etc/passwd", "/etc/passwd", "ab", "AB" * 16, "zz" * 16]:
        with pytest.raises(InvalidArgument):
            files.path(bad)
        with pytest.raises(InvalidArgument):
            files.read(bad)
    with pytest.raises(MidbError):
        files.read("0" * 32, -5)


@pytest.mark.parametrize(("code", "expected"), [(errno.ENOSPC, StoreBusy), (errno.EIO, MidbError)])
def test_write_failure_leaves_nothing(files: BlobFiles, monkeypatch: pytest.MonkeyPatch, code: int,
                                      expected: type[Exception]) -> None:
    real_write = os.write
    calls = []

    def failing_write(fd: int, data: object) -> int:
        calls.append(fd)
        if len(calls) == 5:
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)  # type: ignore[arg-type]

    monkeypatch.setattr(blobs_module.os, "write", failing_write)
    with pytest.raises(expected):
        files.write_many([b"x" * 10] * 12)           # parallel path
    with pytest.raises(expected):
        calls.clear()
        calls.extend([0, 0, 0])
        files.write_many([b"y"] * 3)                 # sequential path
    assert all_files(files.root) == []


def test_scan_sees_bodies_and_temporaries(files: BlobFiles) -> None:
    blob = files.write(b"body")
    temp = os.path.join(files.root, blob[:2], TEMP_PREFIX + "f" * 32)
    open(temp, "wb").close()
    names = sorted(name for _sub, name, _path in files.scan())
    assert names == sorted([blob, TEMP_PREFIX + "f" * 32])


# ---- ordering against the index --------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", fsync=True) as opened:
        opened.create_account("alice")
        yield opened


def test_body_is_on_disk_before_the_index_commit(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    seen_before_commit: list[list[str]] = []
    real_write = SharedEnv.write

    def spying_write(self: SharedEnv, job: object, *, durable: bool) -> object:
        seen_before_commit.append(all_files(os.path.join(store.path, "eml")))
        return real_write(self, job, durable=durable)  # type: ignore[arg-type]

    monkeypatch.setattr(SharedEnv, "write", spying_write)
    info = store.get_folder("alice", "INBOX")
    assert info is not None
    store.append("alice", info.id, b"durable first")
    blob = store.messages("alice", info.id)[0].blob
    assert seen_before_commit == [[blob]]


def test_body_removed_only_after_commit(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The expunge answers before the file goes (midb.removal); the file goes once the index no
    longer references it, and its removal record goes after the file."""
    info = store.get_folder("alice", "INBOX")
    assert info is not None
    store.append("alice", info.id, b"to be expunged", flags=["\\Deleted"])
    blob = store.messages("alice", info.id)[0].blob
    state_at_unlink: list[tuple[int, int]] = []
    gate = threading.Event()

    def spying_unlink(victim: tuple[int, str]) -> None:
        gate.wait(10)
        state_at_unlink.append((len(store.uids("alice", info.id)), store.stats()["bodies_awaiting_removal"]))
        real_unlink(victim)

    assert store._remover is not None
    real_unlink = store._remover._unlink
    monkeypatch.setattr(store._remover, "_unlink", spying_unlink)
    assert store.expunge("alice", info.id) == [1]
    assert os.path.exists(store.body_path(blob)) and store.stats()["bodies_awaiting_removal"] == 1
    gate.set()
    assert store.wait_for_removals()
    assert state_at_unlink == [(0, 1)]   # the expunge was committed, and recorded, when the file went
    assert not os.path.exists(store.body_path(blob))
    assert store.stats()["bodies_awaiting_removal"] == 0


def test_a_process_pool_shutdown_waits_for_queued_work_and_a_later_get_starts_anew() -> None:
    pool = blobs_module.ProcessPool(1, "test-pool")
    gate = threading.Event()
    done: list[int] = []

    def work(number: int) -> None:
        gate.wait(10)
        done.append(number)

    for number in range(3):   # one running, two queued behind it
        pool.get().submit(work, number)
    threading.Timer(0.05, gate.set).start()
    pool.shutdown()
    assert done == [0, 1, 2]
    assert pool.get().submit(lambda: 7).result(10) == 7
    pool.shutdown()
    pool.shutdown()   # nothing started: nothing to do


def test_a_process_pool_shut_down_for_good_refuses_later_work_after_finishing_what_it_had() -> None:
    pool = blobs_module.ProcessPool(1, "test-final")
    gate = threading.Event()
    done: list[int] = []

    def work() -> None:
        gate.wait(10)
        done.append(1)

    pool.get().submit(work)
    threading.Timer(0.05, gate.set).start()
    pool.shutdown(final=True)
    assert done == [1]
    with pytest.raises(blobs_module.PoolClosed, match="test-final"):
        pool.get()
    pool.shutdown()   # still closed, nothing to do
    with pytest.raises(blobs_module.PoolClosed):
        pool.get()
