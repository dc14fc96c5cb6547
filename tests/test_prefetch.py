"""midb.prefetch: the leaf pages of a key range, found from LMDB's branch pages and read ahead."""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
from net_helpers import wait_until

import midb.store as store_module
from midb.keys import folder_key, prefix_end
from midb.prefetch import FormatSurprise, LeafPrefetcher, branch_children, duplicate_tree, spans
from midb.store import Store

_P_LEAF = 0x02
_P_LEAF2 = 0x20


def _leaf_keys(page: bytes) -> list[bytes]:
    """The keys on an LMDB leaf page (flags checked), parsed independently of midb.prefetch."""
    _pgno, _pad, flags, lower, _upper = struct.unpack_from("<QHHHH", page)
    assert flags & _P_LEAF, f"not a leaf page: flags {flags:#x}"
    count = (lower - 16) // 2
    keys = []
    for offset in struct.unpack_from(f"<{count}H", page, 16):
        size = struct.unpack_from("<H", page, offset + 6)[0]
        keys.append(bytes(page[offset + 8:offset + 8 + size]))
    return keys


def _fixed_values(page: bytes, size: int) -> list[bytes]:
    """The values on an LMDB LEAF2 page (the leaves of a MDB_DUPFIXED duplicate tree), parsed
    independently of midb.prefetch: fixed-size entries packed after the header."""
    _pgno, _pad, flags, lower, _upper = struct.unpack_from("<QHHHH", page)
    assert flags & _P_LEAF2, f"not a LEAF2 page: flags {flags:#x}"
    count = (lower - 16) // 2
    return [bytes(page[16 + index * size:16 + (index + 1) * size]) for index in range(count)]


def _absent(fd: int, pages: list[int]) -> list[int]:
    """The pages not in the page cache (a read with RWF_NOWAIT fails rather than wait)."""
    buffer = bytearray(1)
    absent = []
    for pgno in pages:
        try:
            os.preadv(fd, [buffer], pgno * 4096, os.RWF_NOWAIT)
        except BlockingIOError:
            absent.append(pgno)
    return absent


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def env(tmp_path: Path):  # noqa: ANN201
    """A named database deep enough for two branch levels: 40,000 keys of 12 bytes, 40 of value."""
    environment = lmdb.open(str(tmp_path / "env"), map_size=1 << 28, max_dbs=4)
    table = environment.open_db(b"table")
    with environment.begin(write=True) as txn:
        for group in range(4):
            for number in range(10_000):
                txn.put(struct.pack(">III", 1, group, number), b"v" * 40, db=table)
    yield environment, table
    environment.close()


@pytest.fixture
def lists(tmp_path: Path):  # noqa: ANN201
    """A MDB_DUPSORT | MDB_DUPFIXED database like midb's flag_lists: 200 keys, one of which has
    50,000 duplicates of 4 bytes (a tree of their own), the others 3 each (beside the key)."""
    environment = lmdb.open(str(tmp_path / "lists"), map_size=1 << 28, max_dbs=4)
    table = environment.open_db(b"lists", dupsort=True, dupfixed=True)
    with environment.begin(write=True) as txn:
        for number in range(200):
            key = struct.pack(">IIB", 1, number, 0)
            count = 50_000 if number == 120 else 3
            for uid in range(1, count + 1):
                txn.put(key, struct.pack(">I", uid * 2), db=table)
    yield environment, table
    environment.close()


def test_spans_join_pages_close_together() -> None:
    assert spans([]) == []
    assert spans([7]) == [(7, 1)]
    assert spans([10, 3, 4, 6, 20, 21, 30]) == [(3, 4), (10, 1), (20, 2), (30, 1)]
    assert spans([1, 5, 9], gap=4) == [(1, 9)]


def test_the_leaves_found_hold_exactly_the_range(env) -> None:  # noqa: ANN001
    environment, _table = env
    assert environment.stat()["psize"] == 4096
    prefetcher = LeafPrefetcher(str(Path(environment.path()) / "data.mdb"), 4096)
    try:
        low, high = folder_key(1, 1), folder_key(1, 2)
        with environment.begin() as txn:
            depth = struct.unpack_from("<H", txn.get(b"table"), 6)[0]
            assert depth >= 3, "the fixture must have two branch levels"
            leaves = prefetcher._leaves(txn, b"table", low, high)
            per_leaf = [_leaf_keys(os.pread(prefetcher.fd, 4096, pgno * 4096)) for pgno in leaves]
        keys = [key for leaf_keys in per_leaf for key in leaf_keys]
        assert keys == sorted(keys)
        assert [key for key in keys if low <= key < high] == [struct.pack(">III", 1, 1, n) for n in range(10_000)]
        # Only the first and the last leaf may hold keys outside the range.
        assert all(low <= key < high for leaf_keys in per_leaf[1:-1] for key in leaf_keys)
        assert per_leaf[0][-1] >= low and per_leaf[-1][0] < high
        with environment.begin() as txn:   # unbounded above: to the last key of the table
            tail = prefetcher._leaves(txn, b"table", struct.pack(">III", 1, 3, 0), None)
        assert _leaf_keys(os.pread(prefetcher.fd, 4096, tail[-1] * 4096))[-1] == struct.pack(">III", 1, 3, 9999)
    finally:
        prefetcher.close()


def _cold_pages_come_in(environment: lmdb.Environment, find: Any, ask: Any, minimum: int) -> None:
    """Evict the file, then ask for the leaves `find` gives: they come into memory by themselves."""
    data = Path(environment.path()) / "data.mdb"
    prefetcher = LeafPrefetcher(str(data), 4096)
    try:
        with environment.begin() as txn:
            leaves = find(prefetcher, txn)
            # Make them cold. On a loaded machine the kernel may keep (or read back) some of the
            # pages for a moment: evict again a few times, and go on with those that are cold.
            for _attempt in range(5):
                _evict(data)
                cold = _absent(prefetcher.fd, leaves)
                if len(cold) > len(leaves) // 2:
                    break
                time.sleep(0.2)
            assert cold, "no leaf page could be evicted: nothing for the prefetch to prove"
            assert ask(prefetcher, txn) == len(leaves) > minimum
        # WILLNEED queued the reads: they all come into memory without anybody reading them.
        # (Pages LMDB's own map holds mapped could not be evicted; they were there anyway.)
        assert wait_until(lambda: not _absent(prefetcher.fd, cold), timeout=10.0)
        assert prefetcher.enabled
    finally:
        prefetcher.close()


def test_the_leaves_of_a_cold_range_are_read_in(env) -> None:  # noqa: ANN001
    low, high = folder_key(1, 2), folder_key(1, 3)
    _cold_pages_come_in(env[0], lambda prefetcher, txn: prefetcher._leaves(txn, b"table", low, high),
                        lambda prefetcher, txn: prefetcher.key_range(txn, b"table", low, high), 50)


def test_the_leaves_of_a_keys_duplicates_hold_exactly_them(lists) -> None:  # noqa: ANN001
    environment, _table = lists
    prefetcher = LeafPrefetcher(str(Path(environment.path()) / "data.mdb"), 4096)
    try:
        with environment.begin() as txn:
            assert struct.unpack_from("<H", txn.get(b"lists"), 6)[0] >= 2, "the keys need a branch level"
            leaves = prefetcher._duplicate_leaves(txn, b"lists", struct.pack(">IIB", 1, 120, 0))
            assert prefetcher._duplicate_leaves(txn, b"lists", struct.pack(">IIB", 1, 7, 0)) == []
            assert prefetcher._duplicate_leaves(txn, b"lists", struct.pack(">IIB", 1, 999, 0)) == []
            assert prefetcher.duplicates(txn, b"lists", struct.pack(">IIB", 1, 7, 0)) == 0
        values = [value for pgno in leaves
                  for value in _fixed_values(os.pread(prefetcher.fd, 4096, pgno * 4096), 4)]
        assert values == [struct.pack(">I", uid * 2) for uid in range(1, 50_001)]
        assert prefetcher.enabled
    finally:
        prefetcher.close()


def test_the_leaves_of_cold_duplicates_are_read_in(lists) -> None:  # noqa: ANN001
    key = struct.pack(">IIB", 1, 120, 0)
    _cold_pages_come_in(lists[0], lambda prefetcher, txn: prefetcher._duplicate_leaves(txn, b"lists", key),
                        lambda prefetcher, txn: prefetcher.duplicates(txn, b"lists", key), 40)


def test_a_duplicate_tree_record_of_the_wrong_size_is_refused() -> None:
    page = bytearray(4096)
    key = b"key!"
    node = 4000
    struct.pack_into("<QHHHH", page, 0, 5, 0, _P_LEAF, 18, node)
    struct.pack_into("<H", page, 16, node)
    struct.pack_into("<HHHH", page, node, 40, 0, 0x06, len(key))   # F_SUBDATA | F_DUPDATA, 40 bytes
    page[node + 8:node + 12] = key
    with pytest.raises(FormatSurprise):
        duplicate_tree(bytes(page), 5, key)
    struct.pack_into("<HHHH", page, node, 48, 0, 0x04, len(key))   # duplicates on a sub-page
    assert duplicate_tree(bytes(page), 5, key) is None
    struct.pack_into("<HHHH", page, node, 48, 0, 0x06, len(key))
    assert duplicate_tree(bytes(page), 5, key) == bytes(page[node + 12:node + 60])
    assert duplicate_tree(bytes(page), 5, b"other") is None


def test_a_branch_page_that_is_not_one_is_refused() -> None:
    page = bytearray(4096)
    struct.pack_into("<QHHHH", page, 0, 9, 0, _P_LEAF, 18, 4000)
    with pytest.raises(FormatSurprise):
        branch_children(bytes(page), 9, b"a", b"b")
    struct.pack_into("<QHHHH", page, 0, 8, 0, 0x01, 18, 4000)   # its header names another page
    with pytest.raises(FormatSurprise):
        branch_children(bytes(page), 9, b"a", b"b")


class _FakeTxn:
    def __init__(self, record: bytes) -> None:
        self.record = record

    def get(self, _key: bytes) -> bytes:
        return self.record


def test_a_surprise_switches_prefetching_off_with_one_warning(env, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    environment, _table = env
    prefetcher = LeafPrefetcher(str(Path(environment.path()) / "data.mdb"), 4096)
    try:
        # depth 3 with page 0 (a meta page, not a branch page) as the root
        record = struct.pack("<IHHQQQQQ", 0, 0, 3, 1, 1, 0, 1, 0)
        with caplog.at_level(logging.WARNING, logger="midb.prefetch"):
            assert prefetcher.key_range(_FakeTxn(record), b"table", b"a", b"b") == 0
            assert prefetcher.key_range(_FakeTxn(record), b"table", b"a", b"b") == 0
        assert not prefetcher.enabled
        assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
        assert "switched off" in caplog.records[0].message
    finally:
        prefetcher.close()


@pytest.fixture
def two_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A store whose "Big" folder (3,000 unseen messages) is above PREFETCH_FROM and whose
    "Small" one (99) is below it."""
    monkeypatch.setattr(store_module, "PREFETCH_FROM", 100)
    store = Store(str(tmp_path / "midb"), fsync=False)
    try:
        store.create_account("alice")
        big = store.create_folder("alice", "Big")
        small = store.create_folder("alice", "Small")
        body = b"Subject: x\r\n\r\n" + b"body line\r\n" * 40
        store.append_many("alice", big.id, [(body, (), 1_700_000_000, 0)] * 3000)
        store.append_many("alice", small.id, [(body, (), 1_700_000_000, 0)] * 99)
        yield store, big, small
    finally:
        store.close()


def _recorded(monkeypatch: pytest.MonkeyPatch, pages: LeafPrefetcher, method: str) -> list[tuple[Any, int]]:
    """Calls of the prefetcher's `method` from now on, as (arguments after txn, pages asked for)."""
    calls: list[tuple[Any, int]] = []
    real = getattr(pages, method)

    def recording(*args: Any) -> int:
        asked = real(*args)
        calls.append((args[1:], asked))
        return asked

    monkeypatch.setattr(pages, method, recording)
    return calls


def test_a_store_scan_of_a_big_folder_asks_for_its_range(two_folders, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Whether the pages are then read is the prefetcher's decision (tested above): a store this
    small is read whole by the kernel's read-around at its first page fault."""
    store, big, small = two_folders
    shared = store._home("alice")
    calls = _recorded(monkeypatch, shared.dbs.pages, "key_range")
    assert [meta.uid for meta in store.messages("alice", big.id)] == list(range(1, 3001))
    assert [meta.uid for meta in store.messages("alice", small.id)] == list(range(1, 100))
    prefix = folder_key(store.account_id("alice"), big.id)
    assert [args for args, _asked in calls] == [(b"messages", prefix, prefix_end(prefix))]   # not for the small folder
    with shared.read() as txn:
        leaves = shared.dbs.pages._leaves(txn, b"messages", prefix, prefix_end(prefix))
    assert len(leaves) > 10


def test_a_big_folders_flag_column_is_asked_for_before_it_is_read(two_folders,  # noqa: ANN001
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SELECT's UID list and FETCH 1:* (UID FLAGS) read the flag column (midb.columns)."""
    store, big, small = two_folders
    calls = _recorded(monkeypatch, store._home("alice").dbs.pages, "duplicates")
    info, uids = store.folder_uids("alice", big.id)
    assert list(uids) == list(range(1, 3001)) and info.messages == 3000
    assert list(store.folder_uids("alice", small.id)[1]) == list(range(1, 100))
    rows = list(store.flag_column_batches("alice", big.id, range(1, 3001), 4096))
    assert rows[0].uids == list(range(1, 3001))
    key = folder_key(store.account_id("alice"), big.id)
    assert [args for args, _asked in calls] == [(b"flag_columns", key)] * 2   # not for the small folder
    assert calls[0][1] >= 2   # 48,000 bytes of entries: several leaves


def test_a_long_flag_list_is_asked_for_before_it_is_read(two_folders, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    store, big, small = two_folders
    calls = _recorded(monkeypatch, store._home("alice").dbs.pages, "duplicates")
    assert store.unseen_uids("alice", big.id) == list(range(1, 3001))
    assert store.unseen_uids("alice", small.id) == list(range(1, 100))
    assert store.unseen_uids("alice", big.id, limit=1) == [1]   # the first leaf only
    key = struct.pack(">IIB", store.account_id("alice"), big.id, 0)
    assert len(calls) == 1 and calls[0][0] == (b"flag_lists", key)
    assert calls[0][1] >= 2   # 12,000 bytes of UIDs: several leaves
