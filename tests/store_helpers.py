"""Helpers shared by the midb store tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from midb import bodyrecords
from midb.store import Store


@contextlib.contextmanager
def store_with_alice(path: Path, **options: Any) -> Iterator[Store]:
    """A store at ``path`` (fsync off unless ``options`` say otherwise) with the account alice."""
    with Store(path, **{"fsync": False, **options}) as opened:
        opened.create_account("alice")
        yield opened


def body_files(store: Store) -> list[str]:
    """The names of the store's body files, once the files its writes released are removed
    (midb.removal removes them in a thread, after the write answers)."""
    assert store.wait_for_removals()
    root = Path(store.path) / "eml"
    return sorted(path.name for path in root.rglob("*") if path.is_file()) if root.exists() else []


def folder_id(store: Store, name: str = "INBOX", account: str = "alice") -> int:
    info = store.get_folder(account, name)
    assert info is not None
    return info.id


def record_sort_reads(monkeypatch: pytest.MonkeyPatch, store: Store) -> list[list[int]]:
    """The UIDs of each Store.sort_values call made on ``store`` from now on."""
    reads: list[list[int]] = []
    original = store.sort_values

    def recorded(account: str, folder: int, uids: list[int], read: Any) -> Any:
        reads.append(list(uids))
        return original(account, folder, uids, read)

    monkeypatch.setattr(store, "sort_values", recorded)
    return reads


def downgrade_to_schema_3(path: Path) -> None:
    """Make the store look as written by schema 3: a body's records in four tables."""
    environment = lmdb.open(str(path / "index"), max_dbs=32)
    try:
        with environment.begin(write=True) as txn:
            merged = environment.open_db(b"body_records", txn=txn)
            tables = [environment.open_db(name.encode(), txn=txn) for name in bodyrecords.LEGACY_NAMES]
            for key, value in txn.cursor(merged).iternext():
                txn.put(bytes(key[:16]), value, db=tables[key[16]])
            txn.drop(merged, delete=True)
            for name in (b"flag_columns", b"keyword_sets", b"sort_records"):   # added by schemas 6 and 7
                txn.drop(environment.open_db(name, txn=txn), delete=True)
            txn.put(b"schema", (3).to_bytes(4, "big"), db=environment.open_db(b"meta", txn=txn))
    finally:
        environment.close()


def folder_state(store: Store, account: str, name: str) -> dict[int, tuple[set[str], int, bytes]]:
    """A folder as a round trip must keep it: each UID's flags, internal date and bytes."""
    folder = store.get_folder(account, name)
    assert folder is not None, name
    return {m.uid: (set(m.flags), m.internaldate, store.read_body(m.blob))
            for m in store.messages(account, folder.id)}


class FailingSync:
    """An LMDB environment whose flush fails, as fdatasync() does on an I/O error; the rest is the
    environment's (put in place of a SharedEnv's ``env``)."""

    def __init__(self, env: Any) -> None:
        self._env = env

    def sync(self, force: bool = False) -> None:
        raise lmdb.Error("mdb_env_sync: Input/output error")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)
