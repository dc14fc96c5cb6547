"""Helpers shared by the midb store tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
